"""tessera.trainer.evaluation: few-shot evaluation through the chip, open set, diagnosis, baselines, peers."""
