"""The board's requests, one handler each, from a table (:data:`HANDLERS`), as
:mod:`tessera.protocol.messages` declares them: ``handler(fw, msg) -> answer`` on a
:class:`~tessera.firmware_sim.device.Firmware` whose fields were checked already."""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np

from ..protocol.framing import MAX_BODY
from ..protocol.messages import MAX_LABEL, SUPPORTED, VERSION, ProtocolError, encode
from ..protocol.spikes import SpikeDecodeError, decode_spikes
from ..runtime.constants import SAMPLE_RATE
from . import persist
from .detect import detect_flush
from .params import MAX_NEGATIVES, MAX_POSITIVES, apply_threshold, check_param, \
    held_out_scores, person_fit

__all__ = ["HANDLERS", "Capabilities", "FIRMWARE_VERSION", "CHUNK", "MAX_PING", "MAX_STEPS",
           "AUDIO_PIECE", "hello_info", "answers_fit", "label_capacity"]

FIRMWARE_VERSION = "tessera-sim 0.5.0"
CHUNK = 2048
MAX_PING = MAX_BODY - 64   # a ping's payload, so that its pong fits a frame
MAX_STEPS = 1000           # 1 ms steps in one stream_spikes message: bounds its memory
AUDIO_PIECE = 2048         # samples through the front-end at a time: bounds its temporaries


class Heard(NamedTuple):
    """An utterance the board closed (the last 16 are kept for an ``enroll`` or ``untaught``):
    its features and what its speech would teach the running level (the front-end's
    ``heard_speech``; None without a level equalization), taken in only when it is taught."""

    phi: np.ndarray
    speech: tuple | None


class Capabilities:
    max_rows = 4
    max_cols = 4
    max_tile = 16
    max_inputs = 256
    max_classes = 64
    max_window_ms = 10_000          # a model's window (steps x bin_ms) at most: 10 s
    weight_bits = [2, 3, 4, 5, 6, 7, 8]
    encodings = ["events", "bitmap", "pcm16"]
    sample_rates = [SAMPLE_RATE]


def hello_info(fw, version: int, classes: list[str] | None = None) -> dict:
    cap = Capabilities
    info = dict(t="hello", version=version, firmware=FIRMWARE_VERSION,
                max_rows=cap.max_rows, max_cols=cap.max_cols, max_tile=cap.max_tile,
                max_inputs=cap.max_inputs, weight_bits=cap.weight_bits,
                max_classes=cap.max_classes, encodings=cap.encodings,
                sample_rates=cap.sample_rates, max_frame=MAX_BODY, chunk=CHUNK,
                ram_budget=fw.ram_budget, boots=fw.boots)
    if fw.chip is not None:
        t = fw.chip.tab
        info["model"] = dict(rows=t.rows, cols=t.cols, tile=t.tile, inputs=t.inputs,
                             channels=t.channels_total, weight_bits=t.weight_bits,
                             bytes=len(fw.model_bytes),
                             classes=fw.chip.classes() if classes is None else classes,
                             max_classes=t.max_classes, label_bytes=fw.label_bytes)
    return info


def answers_fit(fw, labels: list[str]) -> bool:
    """Every answer that lists the enrolled words (hello, classes, a result or an event with a
    score per word) fits a frame with these ``labels``: the device refuses to store what it
    could not report."""
    worst = max(labels, key=lambda x: len(x.encode()), default="")
    scores = {lab: -0.123456789 for lab in labels}
    big = 2 ** 32 - 1
    answers = [
        {"t": "result", "id": big, "label": worst, "best": worst, "scores": scores,
         "confidence": 0.123456789, "spikes": big, "inputs": big, "latency_us": 1e9},
        {"t": "event", "id": 0, "kind": "keyword", "label": worst, "confidence": 0.1234567,
         "start_ms": big, "end_ms": big, "window_ms": big, "scores": scores},
        dict(hello_info(fw, VERSION, labels), id=big)]
    try:
        for a in answers:
            encode(a, VERSION)
    except ValueError:
        return False
    return True


def label_capacity(fw) -> int:
    """The longest label (UTF-8 bytes, up to 4 x MAX_LABEL) that every word of a full readout
    may have with every answer still fitting a frame: what ``hello`` promises."""
    n = fw.chip.tab.max_classes
    fw.label_bytes = 4 * MAX_LABEL                    # (hello's own field at its widest)

    def fits(size: int) -> bool:
        return answers_fit(fw, [f"{k:x}".rjust(size, "w")[-size:] if size >= 2 else
                                chr(0x21 + k % 90) for k in range(n)])

    lo, hi = 0, 4 * MAX_LABEL
    while lo < hi:                                    # answers grow with the labels
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def threshold_in_use(fw) -> float:
    return fw.chip.tab.cos_from_q(fw.chip.readout.none_threshold)


# ---------------------------------------------------------------------- session and model
def hello(fw, msg: dict) -> dict:
    versions = [v for v in msg["versions"] if isinstance(v, int) and not isinstance(v, bool)]
    common = sorted(set(versions) & set(SUPPORTED))
    if not common:
        raise ProtocolError("UNSUPPORTED_VERSION", f"host offers {versions}, device speaks "
                                                   f"{list(SUPPORTED)}")
    fw.host_version = common[-1]
    return hello_info(fw, common[-1])


def ping(fw, msg: dict) -> dict:
    payload = msg.get("payload", b"")
    if len(payload) > MAX_PING:
        raise ProtocolError("BAD_FIELD", f"ping: payload of {len(payload)} bytes (at most "
                                         f"{MAX_PING}: its pong must fit a frame)")
    return {"t": "pong", "payload": payload}


def load_begin(fw, msg: dict) -> dict:
    size = msg["size"]
    if not 16 <= size <= fw.ram_budget:
        raise ProtocolError("RAM" if size > fw.ram_budget else "BAD_FIELD",
                            f"model of {size} bytes (budget {fw.ram_budget})")
    fw.load = {"size": size, "crc": msg["crc"] & 0xFFFFFFFF, "buf": bytearray()}
    return {"t": "ack", "chunk": CHUNK}


def load_chunk(fw, msg: dict) -> dict:
    if fw.load is None:
        raise ProtocolError("LOAD_SEQUENCE", "load_chunk without load_begin")
    buf = fw.load["buf"]
    if msg["offset"] != len(buf):
        raise ProtocolError("LOAD_SEQUENCE", f"chunk at offset {msg['offset']}, expected "
                                             f"{len(buf)}")
    if zlib.crc32(msg["data"]) != msg["crc"] & 0xFFFFFFFF:
        raise ProtocolError("CHUNK_CRC", f"chunk at offset {msg['offset']} failed its CRC")
    if len(buf) + len(msg["data"]) > fw.load["size"]:
        raise ProtocolError("LOAD_SEQUENCE", "chunks exceed the announced size")
    buf += msg["data"]
    return {"t": "ack", "received": len(buf)}


def load_commit(fw, msg: dict) -> dict:
    if fw.load is None:
        raise ProtocolError("LOAD_SEQUENCE", "load_commit without load_begin")
    blob = bytes(fw.load["buf"])
    ok = len(blob) == fw.load["size"] and zlib.crc32(blob) == fw.load["crc"]
    fw.load = None
    if not ok:
        raise ProtocolError("LOAD_SEQUENCE", "model incomplete or whole-file CRC mismatch")
    fw.install(blob)                     # atomic: the old model stays unless this succeeds
    return {"t": "ack", "bytes": len(blob)}


# ---------------------------------------------------------------------- streams
def stream_spikes(fw, msg: dict) -> dict:
    chip = fw.need_chip()
    if not 0 <= msg["steps"] <= MAX_STEPS:
        raise ProtocolError("BAD_FIELD", f"stream_spikes: {msg['steps']} steps in one message "
                                         f"(at most {MAX_STEPS}: send long streams in parts)")
    try:
        frames = decode_spikes(msg["encoding"], msg["data"], msg["steps"],
                               chip.tab.channels_total)
    except SpikeDecodeError as exc:
        raise ProtocolError("BAD_SPIKES", str(exc)) from None
    return fw.order.take(msg, int(frames.shape[0]),
                         lambda skip: fw.stream_frames(frames[skip:]),
                         {"t": "ack", "steps": int(frames.shape[0])})


def stream_audio(fw, msg: dict) -> dict:
    chip = fw.need_chip()
    if msg["rate"] != SAMPLE_RATE:
        raise ProtocolError("BAD_AUDIO", f"sample rate {msg['rate']} Hz; the device's front-end "
                                         f"runs at {SAMPLE_RATE} Hz (resample on the host)")
    if len(msg["pcm"]) % 2:
        raise ProtocolError("BAD_AUDIO", "pcm16 data of an odd number of bytes")
    pcm = np.frombuffer(msg["pcm"], "<i2")

    def run(skip: int) -> None:                  # in pieces: bounded front-end temporaries
        for i in range(skip, pcm.size, AUDIO_PIECE):
            fw.stream_frames(chip.cochlea.process(pcm[i:i + AUDIO_PIECE]))

    return fw.order.take(msg, int(pcm.size), run, {"t": "ack", "samples": int(pcm.size)})


def _compact(fw, msg: dict, long: dict) -> dict:
    if msg["v"] < 4:
        raise ProtocolError("UNKNOWN_TYPE", f"message type {msg['t']!r} is version 4's")
    return {"t": "a", "n": HANDLERS[long["t"]](fw, long)["next"]}


def s(fw, msg: dict) -> dict:
    """Version 4's compact ``stream_spikes``: ``o`` offset, ``n`` steps, ``e`` encoding (0
    events, the default; 1 bitmap), ``d`` data; answered ``a`` {``n``: next}."""
    enc = {0: "events", 1: "bitmap"}.get(msg.get("e", 0))
    if enc is None:
        raise ProtocolError("BAD_FIELD", f"s: encoding e={msg['e']} (0 events, 1 bitmap)")
    return _compact(fw, msg, {"t": "stream_spikes", "encoding": enc, "steps": msg["n"],
                              "data": msg["d"], "offset": msg["o"]})


def p(fw, msg: dict) -> dict:
    """Version 4's compact ``stream_audio`` at 16 kHz: ``o`` offset, ``d`` pcm16."""
    return _compact(fw, msg, {"t": "stream_audio", "rate": SAMPLE_RATE, "pcm": msg["d"],
                              "offset": msg["o"]})


def _close_utterance(fw) -> np.ndarray:
    chip = fw.need_chip()
    if not fw.streamed:
        raise ProtocolError("NO_UTTERANCE", "nothing streamed since the last utterance")
    phi = chip.features()
    speech = chip.frontend.heard_speech() if chip.frontend is not None else None
    fw.recent = (fw.recent + [Heard(phi, speech)])[-16:]
    fw.streamed = False
    return phi


def end_of_utterance(fw, msg: dict) -> dict:
    chip = fw.need_chip()
    if fw.params["detect"]:                      # end of a stream: close the open windows
        if chip.frontend is not None and chip.frontend.pending():
            fw.stream_frames(chip.cochlea.flush())
        events, closed, fw.detection = detect_flush(fw.detection, chip, fw.params)
        fw.stats["events"] += len(events)
        fw.events_out += events
        stream_ms = fw.detection.stream_ms
        fw.new_stream()                          # the next stream starts at offset 0
        return {"t": "ack", "windows": closed, "stream_ms": stream_ms}
    _close_utterance(fw)
    if msg.get("shot"):                          # kept for the next enroll, no result
        out = {"t": "ack", "shots": len(fw.recent)}
        if chip.classes():                       # what the board knows it as already
            r = chip.predict()
            out.update(best=r["best"], cosine=r["scores"][r["best"]])
        chip.reset()
        return out
    if not chip.classes():
        chip.reset()
        raise ProtocolError("NO_CLASSES", "no class enrolled")
    r = chip.predict()
    chip.reset()
    return {"t": "result", "label": r["label"], "best": r["best"], "scores": r["scores"],
            "confidence": r["confidence"], "spikes": r["spikes"], "inputs": r["inputs"]}


def reset_state(fw, msg: dict) -> dict:
    chip = fw.need_chip()
    fw.new_stream()
    fw.recent = []
    if msg.get("voice") and chip.frontend is not None:   # a new person: the running level
        chip.frontend.reset_levels()                      # from the start
    return {"t": "ack"}


# ---------------------------------------------------------------------- words
def _shots(fw, msg: dict, what: str) -> int:
    """The ``shots`` of an ``enroll`` or ``untaught`` (1..16, default 1), once a streamed
    utterance is closed as one of them and there are that many."""
    shots = msg.get("shots", 1)
    if not 1 <= shots <= 16:
        raise ProtocolError("BAD_FIELD", f"{what}: shots must be 1..16")
    if fw.streamed:
        _close_utterance(fw)
    if len(fw.recent) < shots:
        raise ProtocolError("NO_UTTERANCE", f"{what} needs {shots} streamed "
                                            f"utterance(s), has {len(fw.recent)}")
    return shots


def enroll(fw, msg: dict) -> dict:
    chip = fw.need_chip()
    shots = _shots(fw, msg, "enroll")
    label = msg["label"]
    if label not in chip.classes() and len(chip.classes()) >= chip.tab.max_classes:
        raise ProtocolError("CAPACITY", f"{chip.tab.max_classes} classes enrolled")
    if label not in chip.classes() and not answers_fit(fw, chip.classes() + [label]):
        raise ProtocolError("CAPACITY", "with this label the enrolled words would no longer "
                                        "fit in one answer (shorter labels, or forget one)")
    heard = fw.recent[-shots:]
    taught = [h.phi for h in heard]
    held_out = held_out_scores(chip, label, taught)     # before the column learns them
    r = chip.enroll(label, taught)
    for h in heard:               # the running level learns the person's voice from what they
        if h.speech is not None:  # teach, never from what a stream or a question only heard
            chip.frontend.learn_speech(*h.speech)
    fw.positives = (fw.positives + [(label, s) for s in held_out])[-MAX_POSITIVES:]
    fw.recent = []
    chip.reset()
    apply_threshold(fw)   # "person": refitted with this word
    return {"t": "ack", "classes": r["classes"], "written": r["written"], "ms": r["ms"],
            "shots": chip.readout.shots_of(label), "threshold": threshold_in_use(fw)}


def untaught(fw, msg: dict) -> dict:
    """The last ``shots`` utterances are words this person did not teach: kept (at most
    ``MAX_NEGATIVES``) so that threshold "person" sits above what they score; ``clear`` drops
    them all."""
    chip = fw.need_chip()
    if msg.get("clear"):
        fw.negatives = []
    else:
        shots = _shots(fw, msg, "untaught")
        fw.negatives = (fw.negatives + [h.phi for h in fw.recent[-shots:]])[-MAX_NEGATIVES:]
        fw.recent = []
        chip.reset()
    apply_threshold(fw)
    return {"t": "ack", "negatives": len(fw.negatives), "threshold": threshold_in_use(fw)}


def forget(fw, msg: dict) -> dict:
    chip = fw.need_chip()
    if msg["label"] not in chip.classes():
        raise ProtocolError("UNKNOWN_CLASS", f"{msg['label']!r} is not enrolled")
    chip.forget(msg["label"])
    fw.positives = [(w, s) for w, s in fw.positives if w != msg["label"]]
    apply_threshold(fw)
    return {"t": "ack", "classes": chip.classes()}


def rename(fw, msg: dict) -> dict:
    """A taught word under another label: the same column, shots and registers."""
    chip = fw.need_chip()
    label, to = msg["label"], msg["to"]
    if label not in chip.classes():
        raise ProtocolError("UNKNOWN_CLASS", f"{label!r} is not enrolled")
    if to != label and to in chip.classes():
        raise ProtocolError("BAD_FIELD", f"rename: {to!r} is enrolled already")
    names = [to if c == label else c for c in chip.classes()]
    if not answers_fit(fw, names):
        raise ProtocolError("CAPACITY", "with this label the enrolled words would no longer "
                                        "fit in one answer (a shorter label)")
    if to != label:
        chip.readout.rename(label, to)
        fw.positives = [(to if w == label else w, s) for w, s in fw.positives]
    return {"t": "ack", "classes": chip.classes()}


def list_classes(fw, msg: dict) -> dict:
    return {"t": "classes", "classes": fw.need_chip().classes()}


# ---------------------------------------------------------------------- device
def get_stats(fw, msg: dict) -> dict:
    out = {"t": "stats", "device": dict(fw.stats, boots=fw.boots,
                                        flash_generation=fw.flash_generation,
                                        decoder=dict(fw.decoder.errors),
                                        boot_error=fw.boot_error)}
    if fw.chip is not None:
        out["chip"] = fw.chip.stats()
        off = fw.chip.frontend.level_offset() if fw.chip.frontend else None
        if off is not None:                    # the level equalization's move, level units
            out["chip"]["voice_level_offset"] = dict(
                mean=round(float(off.mean()), 2), min=int(off.min()), max=int(off.max()))
    return out


def set_param(fw, msg: dict) -> dict:
    name, value = check_param(msg["name"], msg["value"])
    fw.params[name] = value
    if name in ("threshold", "min_confidence"):
        apply_threshold(fw)
    if name == "detect" and fw.chip is not None:
        fw.new_stream()
    return {"t": "ack", "name": name, "value": value}


def get_param(fw, msg: dict) -> dict:
    out = dict(fw.params)
    if fw.chip is not None:
        tab = fw.chip.tab
        out["threshold_in_use"] = threshold_in_use(fw)
        out["negatives"] = len(fw.negatives)
        out["held_out_shots"] = len(fw.positives)
        if fw.params["threshold"] == "person":          # what the fit traded, and why
            fit = person_fit(fw.chip, fw.negatives, fw.positives)
            fit["threshold"] = tab.cos_from_q(fit["threshold"])
            out["person"] = fit
        out["model_threshold"] = tab.cos_from_q(tab.none_threshold)
        out["min_inputs"] = int(tab.min_inputs)
    return {"t": "params", "params": out}


def save(fw, msg: dict) -> dict:
    size = persist.write_image(fw, fw.persisted)
    return {"t": "ack", "bytes": size, "generation": fw.flash_generation}


def reboot(fw, msg: dict) -> dict:
    fw.reboot_requested = True                    # after this answer is sent
    return {"t": "ack"}


#: request type -> handler (every type of :data:`tessera.protocol.messages.REQUESTS`)
HANDLERS = {
    "hello": hello, "ping": ping, "load_begin": load_begin, "load_chunk": load_chunk,
    "load_commit": load_commit, "stream_spikes": stream_spikes, "stream_audio": stream_audio,
    "s": s, "p": p, "end_of_utterance": end_of_utterance, "reset_state": reset_state,
    "enroll": enroll, "untaught": untaught, "forget": forget, "rename": rename,
    "list_classes": list_classes, "get_stats": get_stats, "set_param": set_param, "get_param": get_param, "save": save,
    "reboot": reboot,
}
