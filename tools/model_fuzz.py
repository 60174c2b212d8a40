"""Mutated model files against the chip and the simulated board (``tessera bench protocol
--parts models``).

Every mutant of a valid ``.tsr`` is (1) loaded by :class:`~tessera.runtime.chip.Chip` and, if it
loads, run on audio and spikes, enrolled and asked; (2) sent to one firmware instance over the
protocol (``load_begin`` / ``load_chunk`` / ``load_commit``), after which the board must still
answer with a working model: the new one if it accepted it, else the one it had. A crash is any
exception that is not a named :class:`~tessera.runtime.errors.TesseraError` (or, on the board, an
``INTERNAL`` error); a hang is a mutant that takes longer than ``hang_s``.

Mutations: bytes (flips, truncation, insertion, header fields; mostly stopped by the CRC) and
structure (a field of the decoded document replaced, removed, added, or an array's shape, bit
width or values changed, then re-encoded with a correct CRC: these reach the checks behind it).
"""

from __future__ import annotations

import copy
import time
import zlib

import numpy as np

from ..firmware_sim.device import Firmware
from ..protocol.framing import FrameDecoder, encode_frame
from ..protocol.messages import CODES, decode, encode
from ..runtime.chip import Chip
from ..runtime.errors import TesseraError
from ..runtime.model_format import (HEADER, ModelFile, decode_model, encode_model, pack_ints,
                                    unpack_ints)
from ..runtime.poles import carried

__all__ = ["mutate_model", "fuzz_models", "LoopbackBoard"]

_JUNK = (None, True, -1, 0, 1, 2 ** 40, -(2 ** 40), 3.5, float("nan"), "x", "", b"\x00" * 3, [],
         [1, "a"], {}, {"shape": [2], "bits": 4, "signed": True, "data": b"\x01"})


def _paths(doc: dict):
    """(section, key) and (section, key, array-field) paths of the document."""
    for sec in ("meta", "frontend", "core", "readout"):
        for k, v in doc[sec].items():
            yield (sec, k)
            if isinstance(v, dict):
                for kk in v:
                    yield (sec, k, kk)


def _array_mutant(v: dict, rng) -> dict:
    """A packed array with a wrong shape, bit width or extreme values, encoded consistently."""
    a = unpack_ints(v, "x")
    kind = int(rng.integers(4))
    if kind == 0 and a.ndim:                         # another shape of the same values
        return pack_ints(a.reshape(-1)[: max(0, a.size - int(rng.integers(1, 4)))], v["bits"],
                         v["signed"])
    if kind == 1:                                    # extreme values at the widest width
        b = a.copy().reshape(-1)
        if b.size:
            b[rng.integers(b.size, size=min(b.size, 5))] = (2 ** 31 - 1) if v["signed"] \
                else 2 ** 32 - 1
        return pack_ints(b.reshape(a.shape), 32, v["signed"])
    if kind == 2 and a.ndim:                         # one more row
        return pack_ints(np.concatenate([a, a[:1]]) if a.shape[0] else a, v["bits"], v["signed"])
    b = a.copy()                                     # random values in range
    if b.size:
        lo, hi = (-(1 << (v["bits"] - 1)), (1 << (v["bits"] - 1))) if v["signed"] \
            else (0, 1 << v["bits"])
        idx = rng.integers(b.size, size=min(b.size, int(rng.integers(1, 50))))
        b.reshape(-1)[idx] = rng.integers(lo, hi, size=idx.size)
    return pack_ints(b, v["bits"], v["signed"])


def mutate_model(blob: bytes, doc: dict, rng) -> tuple[bytes, str]:
    """One mutant of the model ``blob`` (decoded: ``doc``) and what was done to it."""
    if rng.random() < 0.25:                          # bytes
        a = bytearray(blob)
        kind = int(rng.integers(5))
        if kind == 0:
            for _ in range(int(rng.integers(1, 6))):
                a[int(rng.integers(len(a)))] ^= 1 << int(rng.integers(8))
            return bytes(a), "bytes: bit flips"
        if kind == 1:
            return bytes(a[: int(rng.integers(0, len(a)))]), "bytes: truncated"
        if kind == 2:
            i = int(rng.integers(len(a)))
            a[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
            return bytes(a), "bytes: inserted"
        if kind == 3:                                # header fields, the CRC kept right
            payload = bytes(a[HEADER.size:])
            version = int(rng.choice([0, 1, 3, 65535]))
            return HEADER.pack(b"TSRM", version, int(rng.integers(0, 3)), len(payload),
                               zlib.crc32(payload)) + payload, "bytes: header version"
        payload = bytes(a[HEADER.size:])             # a flipped payload with a matching CRC
        p = bytearray(payload)
        for _ in range(int(rng.integers(1, 4))):
            p[int(rng.integers(len(p)))] ^= 1 << int(rng.integers(8))
        return HEADER.pack(b"TSRM", 2, 0, len(p), zlib.crc32(bytes(p))) + bytes(p), \
            "bytes: payload flips, CRC fixed"
    d = copy.deepcopy(doc)
    paths = list(_paths(d))
    path = paths[int(rng.integers(len(paths)))]
    sec, key = path[0], path[1]
    kind = int(rng.integers(6))
    where = ".".join(map(str, path))
    if len(path) == 3:                               # inside a packed array's map
        d[sec][key][path[2]] = _JUNK[int(rng.integers(len(_JUNK)))]
        what = f"array field {where} replaced"
    elif kind == 0:
        del d[sec][key]
        what = f"{where} removed"
    elif kind == 1:
        d[sec]["unknown_" + key] = d[sec][key]
        what = f"unknown field beside {where}"
    elif kind == 2 and isinstance(d[sec][key], dict) and "bits" in d[sec][key]:
        d[sec][key] = _array_mutant(d[sec][key], rng)
        what = f"array {where} reshaped or rewritten"
    elif kind == 3 and isinstance(d[sec][key], int) and not isinstance(d[sec][key], bool):
        v = d[sec][key]
        d[sec][key] = int(rng.choice([v + 1, v - 1, 0, -v, v * 2, v + 64, 2 ** 31]))
        what = f"{where} = {d[sec][key]}"
    elif kind == 4:
        other = paths[int(rng.integers(len(paths)))]
        d[sec][key] = copy.deepcopy(d[other[0]][other[1]])
        what = f"{where} given the value of {'.'.join(other[:2])}"
    else:
        d[sec][key] = copy.deepcopy(_JUNK[int(rng.integers(len(_JUNK)))])
        what = f"{where} replaced by junk"
    if rng.random() < 0.05:
        d["labels"] = [1, 2] if rng.random() < 0.5 else ["a"] * 5
        what += "; labels changed"
    return encode_model(ModelFile(**d)), "structure: " + what


def _exercise(chip: Chip, pcm: np.ndarray, frames: np.ndarray) -> None:
    """What a user does with a loaded model: audio, spikes, enroll, ask, batch."""
    chip.reset()
    chip.feed_audio(pcm)
    chip.enroll("a")
    chip.reset()
    chip.run(frames)
    chip.enroll("b")
    chip.reset()
    chip.feed_audio(pcm)
    chip.predict()
    chip.run_batch(frames[None])


class LoopbackBoard:
    """One firmware instance driven by protocol frames in-process."""

    def __init__(self, blob: bytes | None, fw: Firmware | None = None):
        self.fw = fw if fw is not None else Firmware(flash_path=None)
        self.dec = FrameDecoder()
        self.ids = 1
        r = self.load(blob) if blob is not None else {"t": "ack"}
        if r["t"] == "error":
            raise RuntimeError(f"the board refused the original model: {r.get('message')}")

    @classmethod
    def around(cls, fw: Firmware) -> LoopbackBoard:
        """A loopback link to a board that is already running (booted from its flash)."""
        return cls(None, fw)

    def request(self, msg: dict) -> dict:
        self.ids += 1
        out = self.fw.receive(encode_frame(encode(dict(msg, id=self.ids))))
        for body in self.dec.feed(out):
            r = decode(body)
            if r.get("id") == self.ids:
                return r
        raise RuntimeError(f"no answer to {msg['t']}")

    def load(self, blob: bytes) -> dict:
        r = self.request({"t": "load_begin", "size": len(blob), "crc": zlib.crc32(blob)})
        if r["t"] == "error":
            return r
        for off in range(0, len(blob), 2048):
            part = blob[off:off + 2048]
            r = self.request({"t": "load_chunk", "offset": off, "data": part,
                              "crc": zlib.crc32(part)})
            if r["t"] == "error":
                return r
        return self.request({"t": "load_commit"})

    def serves(self, pcm: bytes) -> dict:
        """Enroll one word from ``pcm`` and ask it back: the board's model works."""
        for m in ({"t": "reset_state"}, {"t": "stream_audio", "rate": 16000, "pcm": pcm},
                  {"t": "end_of_utterance", "shot": True}, {"t": "enroll", "label": "probe"},
                  {"t": "reset_state"}, {"t": "stream_audio", "rate": 16000, "pcm": pcm},
                  {"t": "end_of_utterance"}):
            r = self.request(m)
            if r["t"] == "error":
                return r
        answer = r
        self.request({"t": "forget", "label": "probe"})
        return answer


def fuzz_models(tsr: str, count: int = 10_000, seed: int = 0, hang_s: float = 2.0,
                board: bool = True, progress=None) -> dict:
    """``count`` mutants of ``tsr`` through the chip and (``board``) the simulated board."""
    from .bench import speechlike_signal

    with open(tsr, "rb") as f:
        blob = f.read()
    m = decode_model(blob, tsr)
    doc = {k: getattr(m, k) for k in ("meta", "frontend", "core", "readout", "labels")}
    docs = [doc]
    if m.frontend and "poles" not in m.frontend:      # mutate a file that carries them too
        docs.append(dict(doc, frontend=carried(m.frontend, unpack_ints(m.core["channels"],
                                                                       "core.channels"))))
    rng = np.random.default_rng(seed)
    pcm = speechlike_signal(0.3, seed)
    ref = Chip(m)
    frames = ref.cochlea.encode(pcm)
    brd = LoopbackBoard(blob) if board else None
    pcm_bytes = pcm.astype("<i2").tobytes()
    baseline = brd.serves(pcm_bytes) if brd else None
    out = dict(mutants=count, chip_loaded=0, chip_rejected=0, chip_crashes=0, chip_hangs=0,
               board_accepted=0, board_rejected=0, board_crashes=0, board_hangs=0,
               board_lost_model=0, kinds={}, crash_examples=[], rejections={})
    worst = 0.0
    t_start = time.perf_counter()
    for i in range(count):
        mutant, what = mutate_model(blob, docs[i % len(docs)], rng)
        kind = what.split(":")[0]
        out["kinds"][kind] = out["kinds"].get(kind, 0) + 1
        t0 = time.perf_counter()
        try:
            chip = Chip(decode_model(mutant, "<mutant>"))
            _exercise(chip, pcm, frames)
            out["chip_loaded"] += 1
        except TesseraError as exc:
            out["chip_rejected"] += 1
            msg = str(exc).split(":")[0][:60]
            out["rejections"][msg] = out["rejections"].get(msg, 0) + 1
        except Exception as exc:                          # noqa: BLE001 - that is a crash
            out["chip_crashes"] += 1
            if len(out["crash_examples"]) < 10:
                out["crash_examples"].append(f"chip: {what}: {type(exc).__name__}: {exc}"[:300])
        dt = time.perf_counter() - t0
        out["chip_hangs"] += dt > hang_s
        if dt > hang_s and len(out["crash_examples"]) < 10:
            out["crash_examples"].append(f"chip slow ({dt:.1f} s): {what}"[:300])
        worst = max(worst, dt)
        if brd is not None:
            t0 = time.perf_counter()
            try:
                r = brd.load(mutant)
                if r["t"] == "error":
                    out["board_rejected"] += 1
                    out["board_crashes"] += r.get("code") == CODES["INTERNAL"]
                    if r.get("code") == CODES["INTERNAL"] and len(out["crash_examples"]) < 10:
                        out["crash_examples"].append(f"board: {what}: {r.get('message')}"[:300])
                else:
                    out["board_accepted"] += 1
                a = brd.serves(pcm_bytes)
                if a["t"] == "error":
                    out["board_lost_model"] += 1
                    if len(out["crash_examples"]) < 10:
                        out["crash_examples"].append(f"board no longer serves after {what}: "
                                                     f"{a.get('message')}"[:300])
                if r["t"] != "error" or a["t"] == "error":
                    brd.load(blob)                    # back to the good model for the next one
            except Exception as exc:                      # noqa: BLE001 - that is a crash
                out["board_crashes"] += 1
                if len(out["crash_examples"]) < 10:
                    out["crash_examples"].append(f"board: {what}: {type(exc).__name__}: {exc}"[:300])
                brd = LoopbackBoard(blob)
            dt = time.perf_counter() - t0
            out["board_hangs"] += dt > hang_s
            worst = max(worst, dt)
        if progress:
            progress(i + 1)
    out.update(worst_mutant_ms=round(worst * 1e3, 1), seconds=round(time.perf_counter() - t_start, 1),
               baseline_answer=None if baseline is None else baseline.get("label"))
    out["rejections"] = dict(sorted(out["rejections"].items(), key=lambda x: -x[1])[:15])
    return out
