"""The host's in-flight window and link estimate, without a port (protocol/window.py)."""

import numpy as np

from tessera.protocol.window import InFlight, LinkQuality, _lost


def _filled(n=4):
    fl = InFlight()
    for k in range(n):
        fl.add(100 + k, 10 * k, 10 * k + 10, bytes(20 + k), tries=1, now=float(k))
    return fl


def test_answers_deliver_their_chunk_or_the_pieces_of_a_range_cut_smaller():
    fl = _filled()
    assert [c.start for c in fl.answered(101)] == [10] and len(fl) == 3
    first = fl.chunks.pop(100)                       # lost: sent again in two pieces
    fl.add(200, 0, 5, b"x", tries=2, now=9.0)
    fl.add(201, 5, 10, b"y", tries=2, now=9.0)
    assert first.order == 0
    got = fl.answered(100)                           # the first try's answer came after all
    assert sorted(c.start for c in got) == [0, 5] and 200 not in fl.chunks


def test_a_later_answer_names_the_earlier_unanswered_chunks_lost():
    fl = _filled()
    late = fl.answered(102)[0]
    assert sorted(fl.sent_before(late.order)) == [100, 101]
    lost, when = _lost(fl, [late.order], now=5.0, last_answer=1.0, quiet=2.0, probe=0.5)
    assert sorted(lost) == [100, 101] and when == 5.0


def test_silence_sends_the_oldest_then_everything():
    fl = _filled(3)
    assert _lost(fl, [], now=1.2, last_answer=1.0, quiet=2.0, probe=0.5) == ([], 1.0)
    assert _lost(fl, [], now=1.6, last_answer=1.0, quiet=2.0, probe=0.5) == ([100], 1.6)
    lost, _ = _lost(fl, [], now=3.5, last_answer=1.0, quiet=2.0, probe=0.5)
    assert sorted(lost) == [100, 101, 102]


def test_chunks_the_device_ran_and_the_starts_it_keeps():
    fl = _filled()
    assert [c.start for c in fl.run_by_device(20)] == [0, 10]
    assert fl.oldest_start(default=99) == 20 and fl.ahead == [20, 30]
    assert fl.wire_bytes(answer_bytes=10) == (22 + 10) + (23 + 10)


def test_link_quality_estimates_the_byte_error_rate_and_sizes_chunks():
    q = LinkQuality()
    for _ in range(50):
        q.attempt(100, True, rtt=0.01)
    assert q.byte_error_rate() == 0.0 and q.chunk_bytes(1600, 4) == 1600
    assert abs(q.srtt - 0.01) < 1e-12
    rng = np.random.default_rng(0)
    q = LinkQuality()
    for n in rng.integers(40, 400, 400):             # 1 % of bytes damaged
        q.attempt(int(n), bool(rng.random() < 0.99 ** n))
    e = q.byte_error_rate()
    assert 0.005 < e < 0.02
    assert q.chunk_bytes(1600, 4) < q.chunk_bytes(1600, 3) <= 128   # v4 answers cost less
