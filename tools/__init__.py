"""tessera.tools: benchmarks and plots."""


def json_default(x):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as plain numbers and
    lists (the CLI's ``--json`` output and the demo's summary.json)."""
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
