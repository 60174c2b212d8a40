"""tessera.trainer.data: readers, corpus, voices (tts),
augmentation, real recordings, transforms, dense caches."""
