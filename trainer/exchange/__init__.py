"""tessera.trainer.exchange: fixed-point export, ONNX, NIR, NeuroBench, tonic."""
