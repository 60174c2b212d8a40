"""`tessera protocol-test URL`: the conformance suite any device (simulator or board) must pass.

Each check sends real frames over the link and judges the answers; the result is pass/fail per
check. The suite loads the given model (and variants of it: one with room for two classes, one
asking for more classes than any device offers), so it leaves the device with that model loaded
and its flash image rewritten when the device has one.
"""

from __future__ import annotations

import time
import traceback
import zlib

import numpy as np

from ..runtime.chip import Chip
from ..runtime.constants import SAMPLE_RATE
from ..runtime.model_format import encode_model, read_model
from .client import Device, DeviceError
from .framing import MAX_WIRE, encode_frame
from .messages import CODES, VERSION, encode
from .spikes import encode_bitmap, encode_events

__all__ = ["run_conformance"]


class _Check:
    def __init__(self):
        self.results = []

    def __call__(self, name):
        def wrap(fn):
            t0 = time.perf_counter()
            try:
                fn()
                self.results.append(dict(check=name, ok=True))
            except Exception as exc:                          # noqa: BLE001 - a failed check
                self.results.append(dict(check=name, ok=False, error=f"{type(exc).__name__}: "
                                         f"{exc}", where=traceback.format_exc(limit=2)[-300:]))
            self.results[-1]["ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            return fn
        return wrap


def _expect_error(fn, name: str) -> None:
    try:
        fn()
    except DeviceError as e:
        if e.name != name:
            raise AssertionError(f"expected {name}, got {e.name}") from None
        return
    raise AssertionError(f"expected error {name}, got success")


def _raw(dev: Device, data: bytes, want: int = 1, timeout: float = 2.0) -> list[dict]:
    """Send raw bytes, collect up to ``want`` decoded answers."""
    from .messages import decode

    dev.port.write(data)
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        chunk = dev.port.read(max(1, dev.port.in_waiting or 1))
        for body in dev.decoder.feed(chunk):
            try:
                got.append(decode(body))
            except Exception:                                 # noqa: BLE001
                got.append({"t": "undecodable"})
    return got


def run_conformance(url: str, model_path: str, timeout: float = 3.0) -> dict:
    dev = Device.open(url, timeout=timeout, retries=2)
    check = _Check()
    blob = open(model_path, "rb").read()
    chip = Chip.load(model_path)
    ms = chip.tab.steps * chip.tab.bin_ms
    rng = np.random.default_rng(0)
    frames = [(rng.random((ms, chip.tab.channels_total)) < p).astype(np.uint8)
              for p in (0.01, 0.03, 0.06)]

    @check("hello: version negotiation and capabilities")
    def _():
        info = dev.info()
        for k in ("firmware", "max_rows", "max_cols", "max_tile", "weight_bits", "max_classes",
                  "encodings", "max_frame"):
            assert k in info, f"hello lacks {k}"
        assert info["version"] == VERSION

    @check("hello: no common version -> UNSUPPORTED_VERSION")
    def _():
        _expect_error(lambda: dev.request({"t": "hello", "versions": [99]}),
                      "UNSUPPORTED_VERSION")

    @check("message with a wrong protocol version -> UNSUPPORTED_VERSION")
    def _():
        import msgpack
        body = msgpack.packb({"v": 99, "t": "ping", "id": 4242}, use_bin_type=True)
        r = _raw(dev, encode_frame(body))
        assert r and r[0].get("code") == CODES["UNSUPPORTED_VERSION"], r

    @check("ping echoes its payload")
    def _():
        r = dev.request({"t": "ping", "payload": b"\x00\x01tessera\xff"})
        assert r["payload"] == b"\x00\x01tessera\xff"

    @check("unknown message type -> UNKNOWN_TYPE")
    def _():
        _expect_error(lambda: dev.request({"t": "make_coffee"}), "UNKNOWN_TYPE")

    @check("missing or mistyped field -> BAD_FIELD")
    def _():
        _expect_error(lambda: dev.request({"t": "forget"}), "BAD_FIELD")
        _expect_error(lambda: dev.request({"t": "forget", "label": 3}), "BAD_FIELD")

    @check("not msgpack -> BAD_MESSAGE")
    def _():
        r = _raw(dev, encode_frame(b"\xc1\xc1\xc1"))
        assert r and r[0].get("code") == CODES["BAD_MESSAGE"], r

    @check("bad CRC -> BAD_FRAME, then the link works")
    def _():
        f = bytearray(encode_frame(encode({"t": "ping", "id": 777})))
        f[2] ^= 0x40 if f[2] ^ 0x40 else 0x41
        r = _raw(dev, bytes(f))
        assert r and r[0].get("code") == CODES["BAD_FRAME"], r
        dev.request({"t": "ping"})

    @check("garbage then a frame: resynchronised")
    def _():
        r = _raw(dev, bytes(rng.integers(1, 256, 300, dtype=np.uint8)) + b"\x00"
                 + encode_frame(encode({"t": "ping", "id": 778})), want=2)
        assert any(x.get("id") == 778 and x.get("t") == "pong" for x in r), r

    @check("truncated frame -> BAD_FRAME")
    def _():
        f = encode_frame(encode({"t": "ping", "id": 779, "payload": b"x" * 50}))
        r = _raw(dev, f[:20] + b"\x00")
        assert r and r[0].get("code") == CODES["BAD_FRAME"], r

    @check("oversize frame -> FRAME_TOO_LARGE, then the link works")
    def _():
        r = _raw(dev, b"\x01" * (MAX_WIRE + 100) + b"\x00")
        assert r and r[0].get("code") == CODES["FRAME_TOO_LARGE"], r
        dev.request({"t": "ping"})

    @check("request before a model / stream without model -> NO_MODEL or works")
    def _():
        info = dev.info()
        if "model" not in info:
            _expect_error(lambda: dev.request({"t": "list_classes"}), "NO_MODEL")

    @check("load: chunk CRC, offset and commit errors")
    def _():
        dev.request({"t": "load_begin", "size": len(blob), "crc": zlib.crc32(blob)})
        _expect_error(lambda: dev.request({"t": "load_chunk", "offset": 0, "data": blob[:100],
                                           "crc": 1}), "CHUNK_CRC")
        _expect_error(lambda: dev.request({"t": "load_chunk", "offset": 5, "data": blob[:100],
                                           "crc": zlib.crc32(blob[:100])}), "LOAD_SEQUENCE")
        _expect_error(lambda: dev.request({"t": "load_commit"}), "LOAD_SEQUENCE")
        _expect_error(lambda: dev.request({"t": "load_commit"}), "LOAD_SEQUENCE")

    @check("load: a model for another geometry -> MODEL_REJECTED, old model kept")
    def _():
        m = read_model(model_path)
        m.readout["max_classes"] = 100000
        _expect_error(lambda: dev.load(encode_model(m)), "MODEL_REJECTED")
        _expect_error(lambda: dev.load(blob[:-10] + b"0123456789"), "MODEL_REJECTED")

    @check("load: chunks with CRC and an atomic commit")
    def _():
        dev.load(blob)
        assert dev.info()["model"]["bytes"] == len(blob)
        assert dev.classes() == []

    @check("stream_spikes (events and bitmap) and end_of_utterance -> NO_CLASSES")
    def _():
        dev.request({"t": "reset_state"})
        f = frames[1]
        dev.request({"t": "stream_spikes", "encoding": "events", "steps": 150,
                     "data": encode_events(f[:150])})
        dev.request({"t": "stream_spikes", "encoding": "bitmap", "steps": 150,
                     "data": encode_bitmap(f[150:300])})
        dev.stream_spikes(f[300:])
        _expect_error(dev.end_utterance, "NO_CLASSES")

    @check("bad spike data -> BAD_SPIKES")
    def _():
        _expect_error(lambda: dev.request({"t": "stream_spikes", "encoding": "bitmap",
                                           "steps": 3, "data": b"\x01"}), "BAD_SPIKES")
        _expect_error(lambda: dev.request({"t": "stream_spikes", "encoding": "morse",
                                           "steps": 1, "data": b""}), "BAD_SPIKES")

    @check("audio at a wrong rate or odd length -> BAD_AUDIO")
    def _():
        _expect_error(lambda: dev.request({"t": "stream_audio", "rate": 44100,
                                           "pcm": b"\0\0" * 10}), "BAD_AUDIO")
        _expect_error(lambda: dev.request({"t": "stream_audio", "rate": SAMPLE_RATE,
                                           "pcm": b"\0" * 7}), "BAD_AUDIO")

    @check("enroll without an utterance -> NO_UTTERANCE")
    def _():
        dev.request({"t": "reset_state"})
        _expect_error(lambda: dev.request({"t": "enroll", "label": "a"}), "NO_UTTERANCE")

    @check("enroll, then end_of_utterance -> RESULT with label, scores, confidence, latency")
    def _():
        for k, f in enumerate(frames[:2]):
            dev.request({"t": "reset_state"})
            dev.stream_spikes(f)
            dev.request({"t": "enroll", "label": f"w{k}"})
        dev.stream_spikes(frames[0])
        r = dev.end_utterance()
        assert r["t"] == "result" and r["label"] in ("w0", "w1")
        assert set(r["scores"]) == {"w0", "w1"} and 0 <= r["confidence"] <= 1
        assert r["latency_us"] >= 0

    @check("enroll writes one word: forget and re-enroll leave the others' scores unchanged")
    def _():
        def scores():
            dev.request({"t": "reset_state"})
            dev.stream_spikes(frames[0])
            return dev.end_utterance()["scores"]
        before = scores()
        dev.forget("w1")
        dev.request({"t": "reset_state"})
        dev.stream_spikes(frames[1])
        r = dev.request({"t": "enroll", "label": "w1"})
        assert r["shots"] == 1 and scores() == before, (before, scores())
        dev.request({"t": "reset_state"})
        dev.stream_spikes(frames[1])
        assert dev.request({"t": "enroll", "label": "w1"})["shots"] == 2   # a second shot
        assert scores()["w0"] == before["w0"]

    @check("none of these: threshold per device, get_param, BAD_FIELD out of range")
    def _():
        model_threshold = dev.params()["model_threshold"]
        dev.set_param("threshold", 1.0)
        dev.request({"t": "reset_state"})
        dev.stream_spikes(frames[2])
        r = dev.end_utterance()
        assert r["label"] is None and r["best"] in ("w0", "w1"), r
        p = dev.params()
        assert p["threshold_in_use"] == 1.0 and -1 <= p["model_threshold"] <= 1
        _expect_error(lambda: dev.set_param("threshold", 1.5), "BAD_FIELD")
        dev.set_param("threshold", -1.0)
        dev.request({"t": "reset_state"})
        dev.stream_spikes(frames[0])
        assert dev.end_utterance()["label"] == "w0"
        dev.set_param("threshold", model_threshold)

    @check("a retried request id is executed once (enroll)")
    def _():
        before = dev.stats()["chip"]["enrollments"]
        dev.stream_spikes(frames[2])
        frame = encode_frame(encode({"t": "enroll", "label": "w2", "id": 991991}))
        r = _raw(dev, frame + frame, want=2)
        assert len(r) == 2 and r[0] == r[1], r
        assert dev.stats()["chip"]["enrollments"] == before + 1

    @check("list_classes, forget, UNKNOWN_CLASS")
    def _():
        assert sorted(dev.classes()) == ["w0", "w1", "w2"]
        dev.forget("w2")
        _expect_error(lambda: dev.forget("w2"), "UNKNOWN_CLASS")
        assert sorted(dev.classes()) == ["w0", "w1"]

    @check("get_stats: runtime counters")
    def _():
        s = dev.stats()["chip"]
        for k in ("synops", "spikes_per_tile", "routing_events_per_hop", "activation_sparsity",
                  "memory_bytes"):
            assert k in s

    @check("set_param: known and unknown")
    def _():
        dev.set_param("min_confidence", 0.0)
        _expect_error(lambda: dev.set_param("warp_drive", 1), "UNKNOWN_PARAM")

    @check("untaught recordings and threshold person")
    def _():
        model_thr = dev.params()["model_threshold"]
        dev.set_param("threshold", "person")
        dev.request({"t": "reset_state"})
        dev.stream_spikes(frames[1])
        dev.request({"t": "end_of_utterance", "shot": True})
        r = dev.request({"t": "untaught", "shots": 1})
        assert r["negatives"] >= 1 and r["threshold"] >= model_thr - 1e-6, r
        _expect_error(lambda: dev.request({"t": "untaught", "shots": 1}), "NO_UTTERANCE")
        assert dev.request({"t": "untaught", "clear": True})["negatives"] == 0
        dev.set_param("threshold", "model")

    @check("continuous detection: an event per spoken word, with its time")
    def _():
        before = dev.params()["max_word_ms"]
        dev.set_param("max_word_ms", 10_000)        # the test frames sound for the whole window
        dev.set_param("detect", True)
        dev.request({"t": "reset_state"})
        dev.events.clear()
        n = frames[0].shape[0]                    # one window of the model
        quiet = np.zeros((n + n // 2, frames[0].shape[1]), frames[0].dtype)
        dev.stream_spikes(np.vstack([frames[0], quiet, frames[0]]))
        end = dev.end_utterance()                 # closes the last window
        dev.set_param("detect", False)
        dev.set_param("max_word_ms", before)
        ev = dev.events
        assert len(ev) == 2 and ev[0]["label"] in ("w0", "w1"), ev
        assert ev[0]["start_ms"] < n <= n + len(quiet) <= ev[1]["start_ms"] < end["stream_ms"], ev

    @check("save and reboot keep the model and the enrolled words (or STORAGE)")
    def _():
        try:
            dev.save()
        except DeviceError as e:
            assert e.name == "STORAGE", e
            return
        dev.request({"t": "reboot"})             # the client retries while it boots
        assert sorted(dev.classes()) == ["w0", "w1"]

    @check("capacity: a full readout -> CAPACITY")
    def _():
        m = read_model(model_path)
        m.readout["max_classes"] = 2
        dev.load(encode_model(m))
        for k in range(3):
            dev.request({"t": "reset_state"})
            dev.stream_spikes(frames[k])
            if k < 2:
                dev.request({"t": "enroll", "label": f"c{k}"})
            else:
                _expect_error(lambda: dev.request({"t": "enroll", "label": "c2"}), "CAPACITY")
        dev.load(blob)

    dev.close()
    ok = all(r["ok"] for r in check.results)
    return dict(url=url, model=model_path, passed=sum(r["ok"] for r in check.results),
                failed=sum(not r["ok"] for r in check.results), ok=ok, checks=check.results)

