"""The benchmarks (tools/bench.py)."""

import json

from helpers import tessera



def test_bench_frontend_json():
    r = tessera("bench", "frontend", "--seconds", "1", "--repeats", "1", "--channels", "64",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["channels"] == 64 and out["realtime_factor"] > 0 and "us_per_step" in out
