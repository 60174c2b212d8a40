"""Hostile-but-valid models and flash images (issue 35 item 6; ``tessera bench protocol --parts
hostile-models hostile-images``).

Unlike :mod:`tessera.tools.model_fuzz` (bytes and fields mutated), every file here is written by
the project's own valid writers (:func:`~tessera.runtime.model_format.encode_model`,
:func:`~tessera.runtime.model_format.pack_ints`, :func:`tessera.firmware_sim.flash.save`):
right types, right CRC, arrays consistent with their own headers, and hostile only in what they
say: a geometry at the format's limits, a 10 s window of 1 ms steps, registers at their widest,
readout constants at their extremes, deflate bombs as large as the format allows, labels by the
ten thousand, stored answers and counters at their bounds. Each one goes to a board the way a
host or a power-on would send it, and the board must answer (``load_commit`` within
``hang_s``), never exit, never raise past a handler (INTERNAL), stay under a memory bound, and
afterwards teach and answer a word (with the model it had, or the new one).
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import tempfile
import time
import tracemalloc

import numpy as np

from ..firmware_sim import flash
from ..firmware_sim.device import Firmware
from ..protocol.messages import CODES
from ..runtime.model_format import ModelFile, decode_model, encode_model, pack_ints
from ..runtime.readout import exp2_table
from .model_fuzz import LoopbackBoard

__all__ = ["MODEL_ATTACKS", "hostile_model", "run_hostile_models", "run_hostile_images"]

_BIG = (0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 2 ** 62, -(2 ** 62), 2 ** 63 - 1)
_LABELS = (lambda r: [f"w{i}" for i in range(int(r.integers(1000, 20000)))],
           lambda r: ["x" * int(r.integers(100, 100_000))],
           lambda r: ["a", "a"], lambda r: ["none"], lambda r: [""], lambda r: [7, None],
           lambda r: ["tab\there", "\u202eevil"], lambda r: ["é" * 64])


def _zeros(shape, bits, signed=True) -> dict:
    """A packed array of zeros as the writer stores it (deflated: a few bytes for millions)."""
    return dict(_packed_zeros(tuple(int(x) for x in shape), int(bits), bool(signed)))


@functools.lru_cache(maxsize=64)
def _packed_zeros(shape: tuple, bits: int, signed: bool) -> dict:
    # the writer packs 2^24 zeros in about 0.3 s, and the attacks ask for the same few shapes
    # thousands of times: the harness's own time, not the board's
    return pack_ints(np.zeros(shape, np.int64), bits, signed, sparse=False, deflate=True)


def _geometry(d: dict, r) -> str:
    rows, cols, tile = [(16, 16, 16), (64, 64, 1), (1, 1, 4096), (8, 8, 64)][int(r.integers(4))]
    c, n, tiles = d["core"], rows * cols * tile, rows * cols
    c.update(rows=rows, cols=cols, tile=tile, w_in=_zeros((c["inputs"], n), c["weight_bits"]),
             shift_in=pack_ints(np.full(tiles, 8), 8, False), bias=_zeros((n,), 32),
             routes=pack_ints(np.zeros((0, 3), np.int64), 8, False),
             w_rec=_zeros((0, tile, tile), c["weight_bits"]),
             shift_rec=pack_ints(np.zeros(0, np.int64), 8, False), leak_mult=50000,
             trace_mult=60000)
    return f"geometry {rows}x{cols} tiles of {tile} ({n} neurons, zeros deflated)"


def _inputs(d: dict, r) -> str:
    c = d["core"]
    inputs = int(r.choice([256, 700, 4096]))
    c.update(inputs=inputs, channels_total=max(inputs, 700),
             channels=pack_ints(np.arange(inputs) % max(inputs, 700), 16, False),
             w_in=_zeros((inputs, c["rows"] * c["cols"] * c["tile"]), c["weight_bits"]))
    return f"{inputs} inputs"


def _window(d: dict, r) -> str:
    c = d["core"]
    steps, bin_ms = [(10_000, 1), (1000, 10), (10_000, 1000), (1, 1), (5000, 2)][int(r.integers(5))]
    segments = int(r.choice([1, 8, steps]))
    c.update(steps=steps, bin_ms=bin_ms, segments=min(segments, steps))
    if r.random() < 0.5:
        c["segment_mode"] = "own"
    return f"window {steps} steps of {bin_ms} ms, {c['segments']} segments, " \
           f"{c.get('segment_mode', 'window')}"


def _registers(d: dict, r) -> str:
    c, n = d["core"], d["core"]["rows"] * d["core"]["cols"] * d["core"]["tile"]
    mb, tb = int(r.choice([2, 24, 48])), int(r.choice([2, 16, 48]))
    c.update(membrane_bits=mb, trace_bits=tb, trace_frac=int(r.integers(0, tb - 1)),
             acc_bits=int(r.choice([2, 32, 62])), threshold=int(r.choice([1, (1 << (mb - 1)) - 1])))
    if r.random() < 0.5:
        c["leak_mult"] = pack_ints(np.full(n, int(r.choice([0, 65535]))), 16, False)
        c["trace_mult"] = pack_ints(np.full(n, 65535), 16, False)
    if r.random() < 0.5:
        c["bias"] = pack_ints(np.full(n, int(r.choice([2 ** 31 - 1, -(2 ** 31)]))), 32)
    if r.random() < 0.5:
        c["shift_in"] = pack_ints(np.full(c["rows"] * c["cols"], int(r.choice([4, 63, 255]))), 8,
                                  False)
    return f"registers: membrane {mb} bits, trace {tb}, acc {c['acc_bits']}, threshold " \
           f"{c['threshold']}"


def _readout(d: dict, r) -> str:
    ro = d["readout"]
    key = str(r.choice(["feature_bits", "readout_bits", "max_classes", "cos_frac",
                        "none_threshold", "min_inputs", "logit_frac", "softmax_frac", "log2e",
                        "calib", "normalize"]))
    if key == "calib":
        ro["calib"] = [int(r.choice(_BIG)) for _ in range(3)]
    elif key == "normalize":
        ro["normalize"] = str(r.choice(["none", "l1", "l2"]))
    elif key == "logit_frac":
        ro["logit_frac"] = int(r.choice([0, 1, 16]))
        ro["exp2"] = pack_ints(exp2_table(ro["logit_frac"]), 32, signed=False)
    else:
        ro[key] = int(r.choice([0, 1, 16, 30, 62, 1024, 4096, 2 ** 40, -(2 ** 40)]))
    return f"readout.{key} = {str(ro[key])[:40]}"


def _labels(d: dict, r) -> str:
    d["labels"] = _LABELS[int(r.integers(len(_LABELS)))](r)
    return f"{len(d['labels'])} labels, e.g. {str(d['labels'][0])[:20]!r}"


def _frontend(d: dict, r) -> str:
    spec = d["frontend"].get("spec")
    if not isinstance(spec, dict) or not spec:
        return "no front-end to attack"
    key = sorted(spec)[int(r.integers(len(spec)))]
    v = spec[key]
    spec[key] = float(r.choice([0.0, -1.0, 1e9, 1e-9])) if isinstance(v, float) \
        else int(r.choice(_BIG)) if isinstance(v, int) else v
    return f"frontend.spec.{key} = {spec[key]}"


def _meta(d: dict, r) -> str:
    if r.random() < 0.5:
        d["meta"] = {f"k{i}": i for i in range(int(r.integers(1000, 50_000)))}
        return f"meta with {len(d['meta'])} keys"
    deep: dict = {}
    for _ in range(int(r.integers(50, 500))):
        deep = {"x": deep}
    d["meta"] = {"deep": deep}
    return "meta nested hundreds deep"


MODEL_ATTACKS = {"geometry": _geometry, "inputs": _inputs, "window": _window,
                 "registers": _registers, "readout": _readout, "labels": _labels,
                 "frontend": _frontend, "meta": _meta}


def hostile_model(m: ModelFile, rng) -> tuple[bytes, str]:
    """One hostile-but-valid model built from ``m``: one or two attacks, then the valid writer."""
    d = {k: copy.deepcopy(getattr(m, k)) for k in ("meta", "frontend", "core", "readout", "labels")}
    names = list(MODEL_ATTACKS)
    what = [f"{x}: {MODEL_ATTACKS[str(x)](d, rng)}"
            for x in rng.choice(names, int(rng.integers(1, 3)), replace=False)]
    return encode_model(ModelFile(**d)), "; ".join(what)


def _measured(fn):
    """(result, seconds, peak traced bytes) of ``fn()``: the peak above what was already
    allocated when it began (the harness's own models and images are not the board's)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, tracemalloc.get_traced_memory()[1] - before


def _tally(out: dict, what: str, secs: float, peak: int, hang_s: float, failure: str | None):
    if secs * 1e3 > out["worst_ms"]:
        out["worst_ms"], out["slowest"] = round(secs * 1e3, 1), what[:200]
    if peak / 2 ** 20 > out["peak_mb"]:
        out["peak_mb"], out["largest"] = round(peak / 2 ** 20, 1), what[:200]
    out["slow"] += secs > hang_s
    if secs > hang_s:
        failure = failure or f"took {secs:.1f} s"
    if failure:
        out["failures"] += 1
        if len(out["examples"]) < 10:
            out["examples"].append(f"{what}: {failure}"[:300])


def run_hostile_models(tsr: str, count: int = 10_000, seed: int = 0, hang_s: float = 2.0,
                       progress=None) -> dict:
    """``count`` hostile-but-valid models sent to one board over the protocol; after each the
    board must still teach and answer a word."""
    from .bench import speechlike_signal

    with open(tsr, "rb") as f:
        blob = f.read()
    m, rng = decode_model(blob, tsr), np.random.default_rng(seed)
    pcm = speechlike_signal(0.3, seed).astype("<i2").tobytes()
    board = LoopbackBoard(blob)
    out = dict(models=count, accepted=0, rejected=0, internal=0, lost_model=0, slow=0,
               failures=0, worst_ms=0.0, peak_mb=0.0, rejections={}, examples=[], kinds={})
    tracemalloc.start()
    try:
        for i in range(count):
            mutant, what = hostile_model(m, rng)
            for k in what.split("; "):
                key = k.split(":")[0]
                out["kinds"][key] = out["kinds"].get(key, 0) + 1
            r, secs, peak = _measured(lambda: board.load(mutant))
            failure = None
            if r["t"] == "error":
                out["rejected"] += 1
                msg = str(r.get("message", ""))[:50]
                out["rejections"][msg] = out["rejections"].get(msg, 0) + 1
                if r.get("code") == CODES["INTERNAL"]:
                    out["internal"] += 1
                    failure = f"INTERNAL {r.get('message')}"
            else:
                out["accepted"] += 1
            a = board.serves(pcm)
            if a["t"] == "error":
                out["lost_model"] += 1
                failure = failure or f"no longer serves: {a.get('message')}"
            _tally(out, what, secs, peak, hang_s, failure)
            if r["t"] != "error" or a["t"] == "error":
                board.load(blob)
            if progress:
                progress(i + 1)
    finally:
        tracemalloc.stop()
    out["rejections"] = dict(sorted(out["rejections"].items(), key=lambda x: -x[1])[:12])
    return out


def _image_attack(image: dict, r, models: list[bytes]) -> str:
    """One hostile-but-valid change to a flash image (as the firmware's writer stores it)."""
    kind = int(r.integers(10))
    if kind == 0:
        image["model"] = models[int(r.integers(len(models)))]
        return "a hostile-but-valid model"
    if kind == 1:
        n = len(image["classes"])
        labels = _LABELS[int(r.integers(len(_LABELS)))](r)
        image["classes"] = (labels + [None] * n)[:n] if r.random() < 0.5 else labels
        return f"classes: {len(image['classes'])}, e.g. {str(labels[0])[:20]!r}"
    if kind == 2:
        key = str(r.choice(["shots", "exps"]))
        image[key] = [int(r.choice(_BIG))] * (len(image[key]) if r.random() < 0.7
                                              else int(r.integers(0, 10_000)))
        return f"{key} = {image[key][:1]} x {len(image[key])}"
    if kind == 3:
        shape = [int(x) for x in r.choice([[2048, 32], [4096, 4096], [1, 1 << 24], [0, 0]])]
        bits = int(r.choice([1, 8, 16, 32]))
        image["levels"] = _zeros(shape, bits) if np.prod(shape) <= 1 << 24 else image["levels"]
        return f"levels {shape} at {bits} bits"
    if kind == 4:
        name = str(r.choice(sorted(image["params"])))
        v = image["params"][name]
        image["params"][name] = (not v) if isinstance(v, bool) else \
            float(r.choice([0.0, 1.0, -1.0, 1e9])) if isinstance(v, float) else \
            int(r.choice([0, 1, 60_000, 2 ** 40])) if isinstance(v, int) else v
        return f"params.{name} = {image['params'][name]}"
    if kind == 5:
        count, size = int(r.integers(0, 5000)), int(r.choice([4 * 2048, 4, 0]))
        image["negatives"] = [bytes(size)] * count
        return f"{count} negatives of {size} bytes"
    if kind == 6:
        image["generation"] = int(r.choice([0, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1]))
        return f"generation {image['generation']}"
    if kind == 7:
        count = int(r.integers(1, 20_000))
        frame = bytes(int(r.choice([1, 1000, 70_000])))
        image["answers"] = [[int(r.choice([1, 2 ** 32 - 1, 2 ** 40])) + i, bytes(16), frame]
                            for i in range(count)]
        return f"{count} stored answers of {len(frame)} bytes"
    if kind == 8:
        count = int(r.choice([1, 64, 65, 20_000]))
        taught = [c for c in image["classes"] if c is not None] or ["w"]
        label = str(r.choice(taught)) if r.random() < 0.7 else \
            _LABELS[int(r.integers(len(_LABELS)))](r)[0]
        image["positives"] = [[label, int(r.choice(_BIG))]] * count
        return f"{count} held-out scores of {str(label)[:20]!r}"
    image["voice_level"] = _zeros([int(r.choice([233, 700, 1 << 20]))], 32)
    image["voice_heard"] = int(r.choice(_BIG))
    return "a running level"


def _host_serves(lb: LoopbackBoard, pcm: bytes) -> dict:
    """What a host does to teach a word to a board that booted from an image: detection off,
    one word forgotten when every column is taken; then enroll and ask (LoopbackBoard.serves)."""
    lb.request({"t": "set_param", "name": "detect", "value": False})
    info = lb.request({"t": "list_classes"})
    labels = info.get("classes", []) if info.get("t") != "error" else []
    if labels and len(labels) >= lb.fw.chip.tab.max_classes:
        lb.request({"t": "forget", "label": labels[0]})
    return lb.serves(pcm)


def run_hostile_images(tsr: str, count: int = 10_000, seed: int = 0, hang_s: float = 2.0,
                       folder: str | None = None, progress=None) -> dict:
    """``count`` hostile-but-valid flash images, each booted by a fresh board (power-on): it must
    boot (with the image, or without it and saying why), then teach and answer a word (with the
    image's model, or the factory model it boots instead, as ``tessera sim`` does)."""
    from .bench import speechlike_signal

    with open(tsr, "rb") as f:
        blob = f.read()
    m, rng = decode_model(blob, tsr), np.random.default_rng(seed)
    models = [hostile_model(m, rng)[0] for _ in range(20)]
    pcm = speechlike_signal(0.3, seed).astype("<i2").tobytes()
    tmp = tempfile.mkdtemp(prefix="tessera-hostile-", dir=folder)
    path = os.path.join(tmp, "f.img")
    fw = Firmware(path)
    fw.install(blob)
    fw.do("save", {})
    base = flash.load(path)
    out = dict(images=count, booted_with_image=0, booted_without=0, silent_empty=0, internal=0,
               lost_model=0, slow=0, failures=0, worst_ms=0.0, peak_mb=0.0, boot_errors={},
               examples=[])
    tracemalloc.start()
    try:
        for i in range(count):
            image = copy.deepcopy(base)
            what = "; ".join(_image_attack(image, rng, models) for _ in range(int(rng.integers(1, 3))))
            flash.save(path, image)
            board, secs, peak = _measured(lambda: Firmware(path))
            failure = None
            if board.chip is None:
                out["booted_without"] += 1
                if not board.boot_error:
                    out["silent_empty"] += 1
                    failure = "booted empty without saying why"
                key = str(board.boot_error)[:50]
                out["boot_errors"][key] = out["boot_errors"].get(key, 0) + 1
                board.install(blob)                         # the factory model, as the sim does
            else:
                out["booted_with_image"] += 1
            lb = LoopbackBoard.around(board)
            a = _host_serves(lb, pcm)
            if a["t"] == "error":
                out["lost_model"] += 1
                out["internal"] += a.get("code") == CODES["INTERNAL"]
                failure = failure or f"does not serve: {a.get('message')}"
            _tally(out, what, secs, peak, hang_s, failure)
            if progress:
                progress(i + 1)
    finally:
        tracemalloc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out["boot_errors"] = dict(sorted(out["boot_errors"].items(), key=lambda x: -x[1])[:12])
    return out
