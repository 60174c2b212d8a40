"""The protocol benchmark's parts: fuzzed frames, lossy links, kills during saves and during
enrollments, the link budget."""

from tessera.tools import protocol_bench as pb


def test_fuzzed_frames_never_crash_or_go_unanswered(model4):
    r = pb.fuzz(model4, frames=3000, seed=1)
    assert r["crashes"] == 0 and r["internal_errors"] == 0 and r["hangs"] == 0
    assert r["unanswered"] == 0 and r["mutated"] > 1000 and r["bad_frames"] > 500


def test_kills_during_enrollments_with_failing_flash_neither_lose_nor_double_a_word(model4):
    """Issue 35: a board killed at random points of enroll requests, a fifth of its flash
    writes failing, a host retrying by the client's rules: the flash holds exactly the shots
    the host was answered for after every answer."""
    from tessera.tools.enroll_kills import enroll_kills

    r = enroll_kills(model4, kills=4, fail=0.3, seed=3)
    assert r["kills"] == 4 and r["enrollments"] >= 4 and r["shots_stored"] == r["enrollments"]
    assert r["doubled"] == 0 and r["lost"] == 0
