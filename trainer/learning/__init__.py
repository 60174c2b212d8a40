"""tessera.trainer.learning: the model, meta-learning, episodes, RRAM,
integer mode, the training loop."""
