"""tessera.trainer: the offline side: speech corpus, data loading, few-shot episodes, training."""
