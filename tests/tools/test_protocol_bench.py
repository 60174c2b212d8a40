"""test_protocol_bench"""

from pathlib import Path


from tessera.tools import protocol_bench as pb

ROOT = Path(__file__).resolve().parents[2]


def test_fuzzed_frames_never_crash_or_go_unanswered(model4):
    r = pb.fuzz(model4, frames=3000, seed=1)
    assert r["crashes"] == 0 and r["internal_errors"] == 0 and r["hangs"] == 0
    assert r["unanswered"] == 0 and r["mutated"] > 1000 and r["bad_frames"] > 500
