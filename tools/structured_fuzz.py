"""A fuzzer that knows the protocol's structure, built on Hypothesis.

Messages are drawn per request type of :data:`protocol.messages.REQUESTS`: every field valid,
of another type, out of range or missing, extra fields, other versions and ids, and msgpack
values of every type, depth and size in any field (maps, arrays, bins, strings, integers at the
edges of 64 bits, floats including NaN and infinities). Bodies a host could never encode (nested
far deeper than any request) are drawn too. The invariant, checked on every body:

* the device answers with exactly one frame that decodes to a message of the protocol and fits
  the frame limit;
* it keeps serving: a ``ping`` afterwards is answered ``pong``.

:func:`fuzz_structured` runs it against a firmware with a model loaded (Hypothesis's shrinking
names the smallest failing body); the tests run a bounded number, ``tessera bench protocol
--parts structured`` a long one.
"""

from __future__ import annotations

import time
from functools import lru_cache

import msgpack

__all__ = ["messages", "bodies", "check_answer", "fuzz_structured", "fuzz_structured_process",
           "fuzz_flash_images"]


def _need_hypothesis() -> None:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        from ..runtime.errors import InputError
        raise InputError("the structure-aware fuzzer needs Hypothesis: pip install -e '.[dev]'")


@lru_cache(maxsize=None)        # strategies are built once and drawn from many times: Hypothesis
def _values():                  # validates a new strategy on its first draw, which cost ~4/5 of a body
    from hypothesis import strategies as st

    leaf = st.one_of(
        st.none(), st.booleans(),
        st.integers(-(2 ** 63), 2 ** 64 - 1),
        st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1, -(2 ** 63)]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=80), st.binary(max_size=300))
    return st.recursive(leaf, lambda kids: st.one_of(
        st.lists(kids, max_size=6), st.dictionaries(st.text(max_size=8), kids, max_size=6)),
        max_leaves=40)


@lru_cache(maxsize=None)
def _valid(kind, name: str):
    """A value of the field's own type, often at or past its range."""
    from hypothesis import strategies as st

    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.one_of(st.integers(-5, 70_000), st.integers(-(2 ** 63), 2 ** 64 - 1))
    if kind is bytes:
        return st.one_of(st.binary(max_size=64), st.binary(min_size=1000, max_size=16_400))
    if kind is str:
        if name == "encoding":
            return st.sampled_from(["events", "bitmap", "pcm16", "", "x"])
        return st.one_of(st.sampled_from(["d1", "none", "NONE", " ", "threshold", "person",
                                          "model", "hop_ms", "detect", "trigger", "onset"]),
                         st.text(max_size=70))
    if kind is list:
        return st.lists(st.one_of(st.integers(-3, 6), _values()), max_size=6)
    return _values()                                   # a union of types (set_param's value)


def _mostly(usual, other, tenths: int = 8):
    """``usual`` about ``tenths`` times in ten, else ``other``."""
    from hypothesis import strategies as st

    return st.integers(0, 9).flatmap(lambda k: usual if k < tenths else other)


def messages():
    """One request map: a known type with drawn fields, or an unknown one."""
    from hypothesis import strategies as st

    from ..protocol.messages import REQUESTS

    @lru_cache(maxsize=None)
    def of_type(t: str):
        spec = REQUESTS[t]
        fields = {}
        for name, (kind, _required) in spec.items():
            fields[name] = _mostly(_valid(kind, name), st.one_of(_values(), st.just(_MISSING)))
        return st.fixed_dictionaries(
            {"t": st.just(t),                     # mostly well-enveloped, to reach the handlers
             "v": _mostly(st.sampled_from([4, 4, 3, 2]), _values(), 9),
             "id": _mostly(st.integers(0, 2 ** 32 - 1), _values(), 9), **fields},
            optional={"extra": _values()})

    known = st.sampled_from(sorted(REQUESTS)).flatmap(of_type)
    unknown = st.fixed_dictionaries({"t": st.text(max_size=12), "v": st.just(4),
                                     "id": st.integers(0, 9)})
    return _mostly(known, unknown, 9).map(lambda m: {k: v for k, v in m.items()
                                                    if v is not _MISSING})


_MISSING = object()


def _deep(depth: int, kind: int) -> bytes:
    """A ping whose ``v`` nests ``depth`` arrays (or maps) deep: only a hostile host sends it."""
    head = b"\x83\xa1t\xa4ping\xa2id\x01\xa1v"
    return head + (b"\x91" if kind else b"\x81\xa1k") * depth + b"\x01"


def bodies():
    """Frame bodies: drawn messages packed, deep nests, and any bytes."""
    from hypothesis import strategies as st

    from ..protocol.framing import MAX_BODY

    packed = messages().map(lambda m: msgpack.packb(m, use_bin_type=True)).filter(
        lambda b: len(b) <= MAX_BODY)
    deep = st.builds(_deep, st.integers(1, 5000), st.integers(0, 1))
    return _mostly(packed, st.one_of(deep, st.binary(max_size=200)), 8)


def check_answer(frame: bytes) -> dict:
    """The one answer of a body: a frame that decodes to a message of the protocol within the
    frame limit (AssertionError otherwise)."""
    from ..protocol.framing import MAX_BODY, FrameDecoder
    from ..protocol.messages import ANSWERS, decode

    got = FrameDecoder().feed(frame)
    assert len(got) >= 1, f"no answer frame ({frame[:40]!r})"
    for body in got:
        assert len(body) <= MAX_BODY
        msg = decode(body)
        assert msg["t"] in ANSWERS, msg
    return decode(got[-1])


def _run(test, counts: dict) -> dict:
    """Run a Hypothesis test; its failure (the smallest example Hypothesis found) goes into
    ``counts["failures"]`` instead of raising, and the seconds it took into ``counts``."""
    t0 = time.perf_counter()
    try:
        test()
    except Exception as exc:                         # noqa: BLE001 - reported, not raised
        counts["failures"].append(f"{type(exc).__name__}: {str(exc)[:400]}")
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    return counts


def fuzz_structured(tsr: str, examples: int = 2000, seed: int = 0) -> dict:
    """Run ``examples`` drawn bodies through a firmware with ``tsr`` loaded; returns counts
    (``failures`` holds Hypothesis's smallest failing body, if any)."""
    _need_hypothesis()
    from hypothesis import HealthCheck, given, seed as hseed, settings

    from ..protocol.framing import encode_frame
    from ..protocol.messages import encode
    from .protocol_bench import loaded_firmware

    fw = loaded_firmware(tsr)
    with open(tsr, "rb") as fh:
        blob = fh.read()
    from .protocol_bench import rss_mb

    counts = {"examples": 0, "answers": {}, "failures": [], "reloads": 0,
              "rss_mb": [rss_mb()]}                  # memory at the start and every tenth
    ping = encode({"t": "ping", "id": 4_000_000_000})
    tenth = max(1, examples // 10)

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies())
    def one(body):
        answer = check_answer(fw.handle_body(body))
        counts["examples"] += 1
        key = answer.get("name", answer["t"])
        counts["answers"][key] = counts["answers"].get(key, 0) + 1
        assert check_answer(fw.receive(encode_frame(ping)))["t"] == "pong"
        if fw.chip is None:                          # a drawn reboot (no flash) or load: the
            fw.install(blob)                         # next bodies reach the handlers again
            counts["reloads"] += 1
        if counts["examples"] % tenth == 0:
            counts["rss_mb"].append(rss_mb())

    return _run(one, counts)


def fuzz_flash_images(tsr: str, examples: int = 200, seed: int = 0, folder: str | None = None
                      ) -> dict:
    """Flash images mutated field by field (each top-level field replaced by a drawn msgpack
    value, removed, or its bytes flipped), written with a valid CRC: the board must boot (empty
    and saying why, or with what it could check), answer, and, when it kept a model, run it
    (an utterance answered without INTERNAL)."""
    _need_hypothesis()
    import os
    import tempfile

    import numpy as np
    from hypothesis import HealthCheck, given, seed as hseed, settings
    from hypothesis import strategies as st

    from ..firmware_sim import flash
    from ..firmware_sim.device import Firmware
    from ..protocol.framing import encode_frame
    from ..protocol.messages import encode

    tmp = tempfile.mkdtemp(prefix="tessera-flash-fuzz-", dir=folder)
    path = os.path.join(tmp, "f.img")
    fw = Firmware(path)
    with open(tsr, "rb") as fh:
        fw.install(fh.read())
    pcm = (np.random.default_rng(0).standard_normal(4000) * 3000).astype("<i2").tobytes()
    for i, label in enumerate(("d0", "d1")):
        fw.receive(encode_frame(encode({"t": "stream_audio", "id": 10 + i, "rate": 16000,
                                        "pcm": pcm})))
        fw.do("enroll", {"label": label})
    fw.do("set_param", {"name": "threshold", "value": "person"})
    fw.do("save", {})
    base = flash.load(path)
    keys = sorted(base)
    counts = {"examples": 0, "booted_with_model": 0, "booted_empty": 0, "failures": []}

    def mutate(draw_key, how, value, flip):
        image = dict(base)
        k = keys[draw_key % len(keys)]
        if how == 0:
            image[k] = value
        elif how == 1:
            image.pop(k)
        elif isinstance(image[k], bytes) and image[k]:
            b = bytearray(image[k])
            b[flip % len(b)] ^= 1 << (flip % 8)
            image[k] = bytes(b)
        else:
            image[k] = value
        return image

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 99), st.integers(0, 2), _values(), st.integers(0, 2 ** 20))
    def one(draw_key, how, value, flip):
        flash.save(path, mutate(draw_key, how, value, flip))
        board = Firmware(path)                       # must not raise
        assert check_answer(board.receive(encode_frame(encode(
            {"t": "hello", "id": 1, "versions": [4]}))))["t"] == "hello"
        counts["examples"] += 1
        if board.chip is None:
            assert board.boot_error, "booted empty without saying why"
            counts["booted_empty"] += 1
            return
        counts["booted_with_model"] += 1
        board.receive(encode_frame(encode({"t": "stream_audio", "id": 2, "rate": 16000,
                                           "pcm": pcm})))
        answer = check_answer(board.receive(encode_frame(encode(
            {"t": "end_of_utterance", "id": 3}))))
        assert answer.get("name") != "INTERNAL", answer

    try:
        return _run(one, counts)
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


class _PtyBoard:
    """``tessera sim --pty`` in its own process with the model ``blob`` loaded: a frame in, its
    answer checked (:func:`check_answer`) out. A simulator that exits counts in
    ``counts["process_exits"]``, silence past ``hang_s`` in ``counts["hangs"]``."""

    def __init__(self, blob: bytes, counts: dict, hang_s: float):
        import contextlib

        self.blob, self.counts, self.hang_s = blob, counts, hang_s
        self.stack = contextlib.ExitStack()
        self.start()

    def start(self) -> None:
        import serial

        from ..firmware_sim.boot import pty_sim
        from ..protocol.framing import FrameDecoder

        self.stack.close()
        path, self.proc = self.stack.enter_context(pty_sim("", process=True))
        self.port = serial.serial_for_url(path, timeout=0.05)
        self.stack.callback(self.port.close)
        self.decoder = FrameDecoder()
        self.load()

    def load(self) -> None:
        from ..protocol.client import Device

        Device(self.port, timeout=5.0).load(self.blob)

    def answer(self, frame: bytes) -> dict:
        """Send one frame; the last of the answer frames that come back."""
        from ..protocol.framing import encode_frame

        self.port.write(frame)
        t0 = time.perf_counter()
        while True:                                  # a byte, then all that waits: no timeout
            got = self.decoder.feed(self.port.read(max(1, self.port.in_waiting)))
            if got:
                self.counts["worst_answer_ms"] = max(self.counts["worst_answer_ms"], round(
                    (time.perf_counter() - t0) * 1e3, 1))
                return check_answer(encode_frame(got[-1]))
            if self.proc.poll() is not None:
                self.counts["process_exits"] += 1
                raise AssertionError(f"the simulator exited ({self.proc.returncode})")
            if time.perf_counter() - t0 > self.hang_s:
                self.counts["hangs"] += 1
                raise AssertionError(f"no answer in {self.hang_s} s")

    def close(self) -> None:
        self.stack.close()


def fuzz_structured_process(tsr: str, examples: int = 1_000_000, seed: int = 0,
                            chunk: int = 5_000, hang_s: float = 10.0, on_chunk=None) -> dict:
    """:func:`fuzz_structured` against ``tessera sim --pty`` in its own process: each body goes
    over the pseudo-terminal as a frame, its answer is checked, then a ``ping`` must be answered.
    A body unanswered for ``hang_s`` is a hang; a simulator that exits is a process exit (it is
    started again, with the model, and the run goes on). Hypothesis runs in chunks of ``chunk``
    bodies with seeds ``seed * 100_000 + k`` (its example tree grows with a run; chunks keep the
    fuzzer's memory bounded, the board's is what is measured). ``on_chunk(counts)`` is called
    after each chunk."""
    _need_hypothesis()
    from hypothesis import HealthCheck, given, seed as hseed, settings

    from ..protocol.framing import encode_frame
    from ..protocol.messages import encode
    from .protocol_bench import rss_mb

    with open(tsr, "rb") as fh:
        blob = fh.read()
    counts = {"examples": 0, "answers": {}, "failures": [], "process_exits": 0, "hangs": 0,
              "reloads": 0, "chunks": 0, "board_rss_mb": [], "fuzzer_rss_mb": [],
              "worst_answer_ms": 0.0}
    ping = encode_frame(encode({"t": "ping", "id": 4_000_000_000}))
    board = _PtyBoard(blob, counts, hang_s)

    def one(body: bytes) -> None:
        msg = board.answer(encode_frame(body))
        counts["examples"] += 1
        key = msg.get("name", msg["t"])
        counts["answers"][key] = counts["answers"].get(key, 0) + 1
        assert board.answer(ping)["t"] == "pong"
        if key == "NO_MODEL":                        # a drawn reboot (no flash) or a load
            board.load()
            counts["reloads"] += 1

    t0 = time.perf_counter()
    try:
        for k in range(max(1, -(-examples // chunk))):
            @hseed(seed * 100_000 + k)
            @settings(max_examples=min(chunk, examples - k * chunk), deadline=None,
                      database=None, suppress_health_check=list(HealthCheck))
            @given(bodies())
            def test(body):
                one(body)

            before = len(counts["failures"])
            _run(test, counts)
            counts["chunks"] += 1
            if len(counts["failures"]) > before and board.proc.poll() is not None:
                board.start()                        # keep going: the count says it happened
            counts["board_rss_mb"].append(rss_mb(board.proc.pid))
            counts["fuzzer_rss_mb"].append(rss_mb())
            counts["seconds"] = round(time.perf_counter() - t0, 1)
            if on_chunk:
                on_chunk(counts)
    finally:
        board.close()
    return counts
