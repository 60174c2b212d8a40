"""tessera.trainer.evaluation: few-shot evaluation, through the chip
too, open set, diagnosis, baselines, peers."""
