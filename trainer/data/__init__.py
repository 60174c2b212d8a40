"""tessera.trainer.data.readers: readers, corpus, voices (tts), augmentation, real recordings, transforms, dense caches."""
