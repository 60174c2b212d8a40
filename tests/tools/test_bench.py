"""The benchmarks (tools/bench.py)."""

import json

from helpers import tessera



def test_bench_frontend_json():
    r = tessera("bench", "frontend", "--seconds", "1", "--repeats", "1", "--channels", "64",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["channels"] == 64 and out["realtime_factor"] > 0 and "us_per_step" in out
    from tessera.runtime.compiled import available, backend

    assert sorted(out["by_backend"]) == sorted(available()) and out["backend"] == backend()
    assert out["realtime_factor"] == out["by_backend"][backend()]["realtime_factor"]
    assert out["same_spikes"] is True


def test_bench_runtime_times_every_backend(model4):
    """`bench runtime` times each backend this machine has (numpy always, numba where it
    imports), steady and cold, and names the one in use."""
    from tessera.runtime.compiled import available, backend

    r = tessera("bench", "runtime", model4, "--repeats", "2", "--batch", "4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert sorted(out["by_backend"]) == sorted(available())
    assert out["backend"] == backend()
    for b in out["by_backend"].values():
        assert b["us_per_network_step"] > 0 and b["us_per_network_step_cold"] > 0
    assert out["us_per_network_step"] == out["by_backend"][out["backend"]]["us_per_network_step"]
    assert 0 < out["batch_peak_mib_per_utterance"] < 1


def test_use_switches_the_backend_and_restores_it(monkeypatch):
    from tessera.runtime import compiled

    before = compiled.backend()
    with compiled.use("numpy"):
        assert compiled.backend() == "numpy" and compiled.steps() is None
    assert compiled.backend() == before
    monkeypatch.setenv("TESSERA_BACKEND", "numpy")
    with compiled.use("numba"):
        assert compiled.backend() == ("numba" if "numba" in compiled.available() else "numpy")
    assert compiled.backend() == before and compiled.os.environ["TESSERA_BACKEND"] == "numpy"
