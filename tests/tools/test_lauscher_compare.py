"""The front-end beside lauscher (tools/lauscher_compare.py)."""

import json

import numpy as np
from helpers import assert_clean_error, tessera, wav_bytes



def test_bench_lauscher_compares_and_names_a_missing_output(tmp_path):
    from helpers import tone

    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes(tone(500, 0.5).tobytes()))
    r = tessera("bench", "lauscher", wav, "--json")
    assert_clean_error(r, "a.npz", "no readable lauscher output beside a.wav")
    np.savez(tmp_path / "a.npz", np.array([[0.01, 0.02, 0.30], [5, 600, 5]]))
    r = tessera("bench", "lauscher", wav, "--json", "--png", tmp_path / "c.png")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["files"][0]
    assert row["lauscher"]["spikes"] == 3 and row["tessera"]["spikes"] > 10
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
