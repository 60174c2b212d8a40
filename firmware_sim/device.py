"""The simulated board's firmware: bytes in, bytes out, over the chip emulator (PROTOCOL.md).

:class:`Firmware` is transport-free: :meth:`Firmware.receive` takes any bytes from the link and
returns the bytes to send back (frames). Every request id is executed at most once: the answers
to the last ``IDEMPOTENCY`` ids are kept and re-sent when an id comes again, so a retried
``enroll`` never enrolls twice. With a flash image and ``autosave`` (the default), a
``load_commit``, ``enroll`` or ``forget`` is written to flash before it is answered, together
with the answers to the last ``PERSISTED_ANSWERS`` such requests: a retry that comes after a
reboot is answered from there, so an enrollment stays exactly-once across a power cut. A frame
that fails its CRC, COBS or size check is answered with
an ``error`` (id 0) and the decoder resynchronises at the next delimiter.
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict

import numpy as np

from ..protocol.framing import MAX_BODY, FrameDecoder, FrameError, encode_frame
from ..protocol.messages import (
    MAX_LABEL,
    SUPPORTED,
    VERSION,
    ProtocolError,
    check_fields,
    decode,
    encode,
    error_message,
)
from ..protocol.spikes import SpikeDecodeError, decode_spikes
from ..runtime.chip import Chip, tables_of
from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from ..runtime.model_format import decode_model, pack_ints, unpack_ints
from ..runtime.rram import RRAMConfig
from . import flash
from .detect import Detector

ERROR_BURST = 8          # bad-frame answers at once, then ...
ERROR_RATE = 4.0         # ... at most this many per second (the rest are only counted)

__all__ = ["Firmware", "Capabilities", "FIRMWARE_VERSION"]

FIRMWARE_VERSION = "tessera-sim 0.5.0"
IDEMPOTENCY = 256
PERSISTED_ANSWERS = 32
SEQ_WINDOW = 512        # version-3 stream chunks that may wait ahead of the stream ...
SEQ_BYTES = 1 << 18     # ... holding at most this many payload bytes together (256 KiB)
#: in flash before they are answered
PERSISTED_REQUESTS = ("enroll", "forget", "untaught", "load_commit")
CHUNK = 2048
MAX_PING = MAX_BODY - 64   # a ping's payload, so that its pong fits a frame
MAX_STEPS = 1000           # 1 ms steps in one stream_spikes message: bounds its memory
AUDIO_PIECE = 2048         # samples through the front-end at a time: bounds its temporaries

#: ``set_param`` names and defaults. threshold: the "none of these" cosine (None: the model's;
#: "person": fitted to this person at every enroll, forget and untaught, see
#: :meth:`Firmware._person_threshold`);
#: min_confidence: the calibrated probability an answer needs (0: the threshold alone). Both are
#: the chip's one decision rule, for ``infer`` and detection alike. Detection (firmware_sim/
#: detect.py) opens a window of the model's length at each sound onset (``trigger`` "onset": at
#: least ``onset_events`` input events in a ms after 100 ms of quiet) or every ``hop_ms``
#: (``trigger`` "hop"), drops windows whose sound lasts longer than ``max_word_ms`` (noise that
#: fills the window), keeps the best of the accepted windows within ``nms_ms`` of each other,
#: and does not report a word again within ``refractory_ms``. autosave: a loaded model, an
#: enroll, a forget and an untaught are written to flash (if any) before they are answered.
DEFAULT_PARAMS = {"detect": False, "min_confidence": 0.0, "write_noise": 0.0,
                  "threshold": None, "hop_ms": 250, "refractory_ms": 1000, "trigger": "onset",
                  "onset_events": 2, "nms_ms": 500, "max_word_ms": 800, "autosave": True}
ALIASES = {"detect_confidence": "min_confidence"}     # the name before one rule served both
PERSON_MARGIN = 0.02    # threshold "person": this much (a cosine) above every untaught score,
PERSON_CAP = 0.95       # and never above this
MAX_NEGATIVES = 16      # untaught recordings kept (``untaught``), the oldest dropped


#: ``set_param`` rules, one per parameter: ("bool",), ("number", low, high), ("choice", values);
#: "threshold" is a cosine in [-1, 1], "model" (stored as None) or "person"
PARAM_RULES = {
    "detect": ("bool",), "autosave": ("bool",),
    "min_confidence": ("number", 0.0, 1.0), "write_noise": ("number", 0.0, 1.0),
    "threshold": ("number", -1.0, 1.0),
    "hop_ms": ("number", 0, 60_000), "refractory_ms": ("number", 0, 60_000),
    "nms_ms": ("number", 0, 10_000), "max_word_ms": ("number", 0, 10_000),
    "onset_events": ("number", 1, 10_000),
    "trigger": ("choice", ("onset", "hop")),
}


def check_param(name, value) -> tuple[str, object]:
    """(the parameter's name, its value) if ``value`` is valid for it, else ProtocolError
    (UNKNOWN_PARAM, BAD_FIELD): the one check of a ``set_param`` and of parameters restored from
    flash."""
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in PARAM_RULES:
        raise ProtocolError("UNKNOWN_PARAM", f"no parameter {name!r} (have "
                                             f"{sorted(PARAM_RULES)})")
    rule = PARAM_RULES[name]
    if name == "threshold" and value in ("model", None):        # the model file's threshold
        return name, None
    if name == "threshold" and value == "person":                # fitted at every enroll
        return name, value
    if rule[0] == "bool":
        if not isinstance(value, bool):
            raise ProtocolError("BAD_FIELD", f"{name} takes true or false")
    elif rule[0] == "choice":
        if value not in rule[1]:
            raise ProtocolError("BAD_FIELD", f"{name} is one of {', '.join(map(repr, rule[1]))}")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not rule[1] <= value <= rule[2]:
            what = "a cosine in [-1, 1], 'model' or 'person'" if name == "threshold" \
                else f"a number in [{rule[1]}, {rule[2]}]"
            raise ProtocolError("BAD_FIELD", f"{name} takes {what}")
    return name, value


class Capabilities:
    max_rows = 4
    max_cols = 4
    max_tile = 16
    max_inputs = 256
    max_classes = 64
    weight_bits = [2, 3, 4, 5, 6, 7, 8]
    encodings = ["events", "bitmap", "pcm16"]
    sample_rates = [SAMPLE_RATE]


class Firmware:
    """One simulated device. ``flash_path``: its persistent image (None: no flash).
    ``ram_budget``: bytes for the model file plus the chip's state and readout."""

    def __init__(self, flash_path: str | None = None, ram_budget: int = 512 * 1024,
                 seed: int = 0, clock=time.perf_counter):
        self.flash_path = flash_path
        self.ram_budget = ram_budget
        self.seed = seed
        self.clock = clock
        self.boots = 0
        self.crash_during_save = False
        self.reboot_after = 0                 # fault injection: reboot after every N requests
        self.boot()

    # ------------------------------------------------------------------ state
    def boot(self) -> None:
        """Power-on: RAM state lost, model and readout restored from flash."""
        self.boots += 1
        self.decoder = FrameDecoder(on_error=self._frame_error)
        self.pending_errors: list[bytes] = []
        self.error_tokens, self.error_clock, self.errors_unanswered = ERROR_BURST, 0.0, 0
        # id -> (CRC-32 of the request's body, answer frame): a retry is the same id with the
        # same body; another host's request that happens to reuse an id is a new request
        self.answers: OrderedDict[int, tuple[int | None, bytes]] = OrderedDict()
        self.persisted: OrderedDict[int, tuple[int | None, bytes]] = OrderedDict()   # in flash
        self.host_version = VERSION               # answers go out in the host's version
        # version 3: the stream's offset, the chunks ahead and their payload bytes
        self.seq_next, self.seq_buffer, self.seq_bytes = 0, {}, 0
        self.chip: Chip | None = None
        self.model_bytes = b""
        self.load = None
        self.streamed = False
        self.recent: list[np.ndarray] = []
        self.negatives: list[np.ndarray] = []     # untaught recordings' features (``untaught``)
        self.params = dict(DEFAULT_PARAMS)
        self.stats = {"frames": 0, "bad_frames": 0, "bad_frames_unanswered": 0, "requests": 0,
                      "duplicates": 0, "errors": 0, "events": 0}
        self.flash_generation = 0
        self.events_out: list[dict] = []
        self.reboot_requested = False
        self.boot_error = None
        try:
            image = flash.load(self.flash_path) if self.flash_path else None
        except InputError as exc:                     # damaged: boot empty, say why
            image, self.boot_error = None, f"flash image not restored: {exc}"
        if image is not None:
            try:
                self._restore_image(image)
            except (ProtocolError, InputError, KeyError, TypeError, ValueError,
                    OverflowError) as exc:
                # an image this firmware cannot use (an older model format): boot empty
                self.chip, self.model_bytes = None, b""
                self.negatives = []
                self.params = dict(DEFAULT_PARAMS)
                self.boot_error = f"flash image not restored: {exc}"

    def _restore_image(self, image: dict) -> None:
        params = image.get("params", {})
        if not isinstance(params, dict):
            raise InputError("flash image: parameters are not a map")
        for k, v in params.items():                 # the same check as set_param
            try:
                name, value = check_param(k, v)
            except ProtocolError as exc:
                if exc.name == "UNKNOWN_PARAM":       # an older firmware's: not ours
                    continue
                raise InputError(f"flash image: parameter {k!r}: {exc}") from None
            self.params[name] = value
        self.install(image["model"])
        levels = unpack_ints(image["levels"], "levels")
        self.chip.restore_readout(dict(levels=levels, classes=list(image["classes"]),
                                       shots=image["shots"], exps=image["exps"]))
        raw = image.get("negatives", [])
        d = self.chip.tab.features
        if not isinstance(raw, list) or not all(isinstance(b, bytes) and len(b) == 4 * d
                                                for b in raw):
            raise InputError("flash image: negatives are not feature vectors of this model")
        self.negatives = [np.frombuffer(b, "<i4").astype(np.int64) for b in raw][-MAX_NEGATIVES:]
        self._apply_threshold()
        if image.get("voice_level") is not None:    # the front-end's running level (its person)
            self.chip.restore_level_state(unpack_ints(image["voice_level"], "voice_level"),
                                          image.get("voice_heard", 0))
        self.flash_generation = int(image.get("generation", 0))
        for entry in image.get("answers", []):
            if isinstance(entry, list) and len(entry) == 2:      # images before the body CRC
                entry = [entry[0], None, entry[1]]
            if (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)
                    and (entry[1] is None or isinstance(entry[1], int))
                    and isinstance(entry[2], bytes)):
                self.persisted[entry[0]] = (entry[1], entry[2])
        self.answers.update(self.persisted)

    def install(self, blob: bytes) -> None:
        try:
            model = decode_model(blob, "<model>")
            t = tables_of(model)                  # checked before anything is allocated
        except InputError as exc:
            raise ProtocolError("MODEL_REJECTED", str(exc)) from None
        cap = Capabilities
        if (t.rows > cap.max_rows or t.cols > cap.max_cols or t.tile > cap.max_tile
                or t.inputs > cap.max_inputs or t.max_classes > cap.max_classes):
            raise ProtocolError("MODEL_REJECTED", f"model geometry {t.rows}x{t.cols} tiles of "
                                f"{t.tile}, {t.inputs} inputs, {t.max_classes} classes exceeds "
                                f"this device ({cap.max_rows}x{cap.max_cols} of {cap.max_tile}, "
                                f"{cap.max_inputs} inputs, {cap.max_classes} classes)")
        try:
            chip = Chip(model, RRAMConfig(write_noise=float(self.params["write_noise"]),
                                          seed=self.seed))
        except InputError as exc:
            raise ProtocolError("MODEL_REJECTED", str(exc)) from None
        self._probe(model)
        need = len(blob) + chip.stats()["memory_bytes"]["total"]
        if need > self.ram_budget:
            raise ProtocolError("RAM", f"model needs {need} bytes of RAM, budget {self.ram_budget}")
        self.chip, self.model_bytes = chip, blob
        self.label_bytes = self._label_capacity()
        self.seq_next, self.seq_buffer, self.seq_bytes = 0, {}, 0   # a new model: a new stream
        self.streamed = False
        self.recent = []
        self.negatives = []                           # features of another model mean nothing
        self._apply_threshold()
        self._detect_reset()

    def _probe(self, model) -> None:
        """A model is committed only after it runs, on a chip of its own (the device's is not
        touched): audio through its front-end, a silent and a loud utterance through the core,
        an enroll and an answer."""
        try:
            probe = Chip(model, RRAMConfig(write_noise=0.0, seed=self.seed))
            tab = probe.tab
            ms = tab.steps * tab.bin_ms
            loud = np.zeros((ms, tab.channels_total), np.uint8)
            loud[::3, tab.channels] = 1
            for frames in (np.zeros_like(loud), loud):
                probe.reset()
                probe.run(frames)
                phi = probe.features()
                probe.enroll("probe", [phi])
                probe.reset()
                probe.run(frames)
                probe.predict()
            probe.reset()
            probe.cochlea.process(np.zeros(tab.bin_ms * SAMPLE_RATE // 1000, np.int16))
        except ProtocolError:
            raise
        except (Exception, RecursionError) as exc:                # noqa: BLE001 - any failure
            raise ProtocolError("MODEL_REJECTED", f"the model does not run: "
                                                  f"{type(exc).__name__}: {exc}"[:180]) from None

    def _apply_threshold(self) -> None:
        """The chip's decision registers from the parameters: the cosine threshold (the model
        file's, a fixed one, or this person's) and the confidence gate."""
        if self.chip is not None:
            t = self.params["threshold"]
            tab = self.chip.tab
            self.chip.none_threshold = tab.none_threshold if t is None \
                else self._person_threshold() if t == "person" \
                else int(round(float(t) * (1 << tab.cos_frac)))
            self.chip.min_confidence = int(round(float(self.params["min_confidence"])
                                                 * (1 << tab.softmax_frac)))

    def _untaught_scores(self) -> list[int]:
        """What this person's untaught words score against the taught ones: each enrolled word
        against the others (leave-one-out), and the untaught recordings the host gave."""
        chip = self.chip
        out: list[int] = []
        if len(chip.classes()) > 1:
            c = chip.column_cosines()
            np.fill_diagonal(c, np.iinfo(np.int64).min)
            out += c.max(axis=1).tolist()
        if self.negatives and chip.classes():
            out += chip.scores_q(np.stack(self.negatives)).max(axis=1).tolist()
        return out

    def _person_threshold(self) -> int:
        """``threshold`` "person": the highest of what this person's untaught words score
        (:meth:`_untaught_scores`) plus ``PERSON_MARGIN``, never below the model file's
        threshold nor above ``PERSON_CAP`` (a threshold no taught word could pass)."""
        tab = self.chip.tab
        one = 1 << tab.cos_frac
        scores = self._untaught_scores()
        if not scores:
            return tab.none_threshold
        t = max(scores) + round(PERSON_MARGIN * one)
        return int(min(max(tab.none_threshold, t), round(PERSON_CAP * one)))

    def _new_stream(self) -> None:
        """A stream starts clean: the chip's state, the stream offsets (version 3+) and the
        detection state, so its answers never depend on what was streamed before."""
        self.chip.reset()
        self.seq_next, self.seq_buffer, self.seq_bytes = 0, {}, 0
        self.streamed = False
        self._detect_reset()

    def _detect_reset(self) -> None:
        """A new detection stream (firmware_sim/detect.py)."""
        self.detector = Detector(self.chip, self.params) if self.chip is not None else None

    # ------------------------------------------------------------------ bytes
    def _frame_error(self, err: FrameError) -> None:
        """Answer a bad frame, at most ERROR_BURST at once and ERROR_RATE per second after that
        (a token bucket): a flood of garbage must not turn into a flood of answers that delays
        the host's next request. Every bad frame is counted; the next answer says how many went
        unanswered."""
        self.stats["bad_frames"] += 1
        now = time.monotonic()
        self.error_tokens = min(ERROR_BURST, self.error_tokens
                                + (now - self.error_clock) * ERROR_RATE)
        self.error_clock = now
        if self.error_tokens < 1.0:
            self.errors_unanswered += 1
            self.stats["bad_frames_unanswered"] += 1
            return
        self.error_tokens -= 1.0
        name = "FRAME_TOO_LARGE" if err.kind == "oversize" else "BAD_FRAME"
        text = str(err)
        if self.errors_unanswered:
            text += f" (and {self.errors_unanswered} earlier bad frames not answered)"
            self.errors_unanswered = 0
        self.pending_errors.append(encode_frame(encode(error_message(0, name, text),
                                                       self.host_version)))

    def receive(self, data: bytes) -> bytes:
        """Feed link bytes; returns the bytes to send (answers, errors and events)."""
        out = []
        for body in self.decoder.feed(data):
            out.extend(self.pending_errors)
            self.pending_errors.clear()
            self.stats["frames"] += 1
            answer = self.handle_body(body)
            out.extend(self._events())                 # events first: the host has them when
            out.append(answer)                         # its answer arrives
            if self.reboot_requested:                 # the rest of this input is lost
                self.boot()
                return b"".join(out)
        out.extend(self.pending_errors)
        self.pending_errors.clear()
        return b"".join(out)

    def handle_body(self, body: bytes) -> bytes:
        """One frame's body -> the answer frame (cached per request id). Nothing a host sends
        ends the device: whatever escapes a handler (a bug, a value nested too deep for a
        recursive step, memory) is answered INTERNAL and the device keeps serving."""
        try:
            return self._handle(body)
        except (Exception, RecursionError, MemoryError) as exc:      # noqa: BLE001 - never exit
            self.stats["errors"] += 1
            return self._frame(error_message(0, "INTERNAL", f"{type(exc).__name__}: "
                                                            f"{str(exc)[:120]}"))

    def _frame(self, reply: dict) -> bytes:
        """An answer's frame; one that would exceed the frame limit is answered INTERNAL
        instead (it cannot happen by construction: :meth:`_answers_fit`)."""
        try:
            return encode_frame(encode(reply, self.host_version))
        except ValueError as exc:
            return encode_frame(encode(error_message(reply.get("id", 0), "INTERNAL",
                                                     str(exc)), self.host_version))

    def _handle(self, body: bytes) -> bytes:
        try:
            msg = decode(body)
        except ProtocolError as exc:
            self.stats["errors"] += 1
            return self._frame(error_message(exc.rid, exc.name, str(exc)))
        rid = msg["id"]
        if msg.get("v") in SUPPORTED:
            self.host_version = msg["v"]
        crc = zlib.crc32(body)
        if rid and rid in self.answers and self.answers[rid][0] in (None, crc):
            self.stats["duplicates"] += 1                     # a retry: answer, do not redo
            self.answers.move_to_end(rid)
            return self.answers[rid][1]
        self.stats["requests"] += 1
        if self.reboot_after and self.stats["requests"] % self.reboot_after == 0:
            self.reboot_requested = True              # a power cut after this answer
        t0 = self.clock()
        try:
            check_fields(msg)
            reply = getattr(self, "do_" + msg["t"])(msg)
        except ProtocolError as exc:
            self.stats["errors"] += 1
            reply = error_message(rid, exc.name, str(exc))
        except InputError as exc:
            self.stats["errors"] += 1
            reply = error_message(rid, "BAD_FIELD", str(exc))
        except Exception as exc:                              # noqa: BLE001 - never crash
            self.stats["errors"] += 1
            reply = error_message(rid, "INTERNAL", f"{type(exc).__name__}: {exc}")
        reply.setdefault("id", rid)
        if reply.get("t") == "result":
            reply["latency_us"] = round((self.clock() - t0) * 1e6, 1)
        if (rid and msg["t"] in PERSISTED_REQUESTS and reply["t"] != "error"
                and self.flash_path and self.params["autosave"]):
            frame = self._persist(rid, crc, reply)
        else:
            frame = self._frame(reply)
        if rid and reply.get("name") != "NO_UTTERANCE":   # that one may succeed once the
            # shots are streamed again (after a reboot), under the same id
            self.answers[rid] = (crc, frame)
            self.answers.move_to_end(rid)
            while len(self.answers) > IDEMPOTENCY:
                self.answers.popitem(last=False)
        return frame

    # ------------------------------------------------------------------ requests
    def _need_chip(self) -> Chip:
        if self.chip is None:
            raise ProtocolError("NO_MODEL", "no model loaded (send load_begin/chunk/commit)")
        return self.chip

    def do_hello(self, msg: dict) -> dict:
        versions = [v for v in msg["versions"] if isinstance(v, int) and not isinstance(v, bool)]
        common = sorted(set(versions) & set(SUPPORTED))
        if not common:
            raise ProtocolError("UNSUPPORTED_VERSION", f"host offers {versions}, device speaks "
                                                       f"{list(SUPPORTED)}")
        self.host_version = common[-1]
        return self._hello_info(common[-1])

    def _hello_info(self, version: int, classes: list[str] | None = None) -> dict:
        cap = Capabilities
        info = dict(t="hello", version=version, firmware=FIRMWARE_VERSION,
                    max_rows=cap.max_rows, max_cols=cap.max_cols, max_tile=cap.max_tile,
                    max_inputs=cap.max_inputs, weight_bits=cap.weight_bits,
                    max_classes=cap.max_classes, encodings=cap.encodings,
                    sample_rates=cap.sample_rates, max_frame=MAX_BODY, chunk=CHUNK,
                    ram_budget=self.ram_budget, boots=self.boots)
        if self.chip is not None:
            t = self.chip.tab
            info["model"] = dict(rows=t.rows, cols=t.cols, tile=t.tile, inputs=t.inputs,
                                 channels=t.channels_total, weight_bits=t.weight_bits,
                                 bytes=len(self.model_bytes),
                                 classes=self.chip.classes() if classes is None else classes,
                                 max_classes=t.max_classes, label_bytes=self.label_bytes)
        return info

    def do_ping(self, msg: dict) -> dict:
        payload = msg.get("payload", b"")
        if len(payload) > MAX_PING:
            raise ProtocolError("BAD_FIELD", f"ping: payload of {len(payload)} bytes (at most "
                                             f"{MAX_PING}: its pong must fit a frame)")
        return {"t": "pong", "payload": payload}

    def do_load_begin(self, msg: dict) -> dict:
        size = msg["size"]
        if not 16 <= size <= self.ram_budget:
            raise ProtocolError("RAM" if size > self.ram_budget else "BAD_FIELD",
                                f"model of {size} bytes (budget {self.ram_budget})")
        self.load = {"size": size, "crc": msg["crc"] & 0xFFFFFFFF, "buf": bytearray()}
        return {"t": "ack", "chunk": CHUNK}

    def do_load_chunk(self, msg: dict) -> dict:
        if self.load is None:
            raise ProtocolError("LOAD_SEQUENCE", "load_chunk without load_begin")
        buf = self.load["buf"]
        if msg["offset"] != len(buf):
            raise ProtocolError("LOAD_SEQUENCE", f"chunk at offset {msg['offset']}, expected "
                                                 f"{len(buf)}")
        if zlib.crc32(msg["data"]) != msg["crc"] & 0xFFFFFFFF:
            raise ProtocolError("CHUNK_CRC", f"chunk at offset {msg['offset']} failed its CRC")
        if len(buf) + len(msg["data"]) > self.load["size"]:
            raise ProtocolError("LOAD_SEQUENCE", "chunks exceed the announced size")
        buf += msg["data"]
        return {"t": "ack", "received": len(buf)}

    def do_load_commit(self, msg: dict) -> dict:
        if self.load is None:
            raise ProtocolError("LOAD_SEQUENCE", "load_commit without load_begin")
        blob = bytes(self.load["buf"])
        ok = len(blob) == self.load["size"] and zlib.crc32(blob) == self.load["crc"]
        self.load = None
        if not ok:
            raise ProtocolError("LOAD_SEQUENCE", "model incomplete or whole-file CRC mismatch")
        self.install(blob)                   # atomic: the old model stays unless this succeeds
        return {"t": "ack", "bytes": len(blob)}

    def _stream_frames(self, frames: np.ndarray) -> None:
        chip = self._need_chip()
        if self.params["detect"]:
            self._detect_frames(frames)
            return
        if chip.ended:
            chip.reset(frontend=False)
        chip.run(frames)                                 # bins past the window are dropped
        self.streamed = True

    def _detect_frames(self, frames: np.ndarray) -> None:
        events = self.detector.feed(frames)
        self.stats["events"] += len(events)
        self.events_out += events

    def _events(self) -> list[bytes]:
        out = [encode_frame(encode(e, self.host_version)) for e in self.events_out]
        self.events_out.clear()
        return out

    def do_stream_spikes(self, msg: dict) -> dict:
        chip = self._need_chip()
        channels = chip.tab.channels_total
        if not 0 <= msg["steps"] <= MAX_STEPS:
            raise ProtocolError("BAD_FIELD", f"stream_spikes: {msg['steps']} steps in one message "
                                             f"(at most {MAX_STEPS}: send long streams in parts)")
        try:
            frames = decode_spikes(msg["encoding"], msg["data"], msg["steps"], channels)
        except SpikeDecodeError as exc:
            raise ProtocolError("BAD_SPIKES", str(exc)) from None
        return self._in_order(msg, int(frames.shape[0]),
                              lambda skip: self._stream_frames(frames[skip:]),
                              {"t": "ack", "steps": int(frames.shape[0])})

    def do_stream_audio(self, msg: dict) -> dict:
        chip = self._need_chip()
        if msg["rate"] != SAMPLE_RATE:
            raise ProtocolError("BAD_AUDIO", f"sample rate {msg['rate']} Hz; the device's front-end "
                                             f"runs at {SAMPLE_RATE} Hz (resample on the host)")
        if len(msg["pcm"]) % 2:
            raise ProtocolError("BAD_AUDIO", "pcm16 data of an odd number of bytes")
        pcm = np.frombuffer(msg["pcm"], "<i2")

        def run(skip: int) -> None:              # in pieces: bounded front-end temporaries
            for i in range(skip, pcm.size, AUDIO_PIECE):
                self._stream_frames(chip.cochlea.process(pcm[i:i + AUDIO_PIECE]))

        return self._in_order(msg, int(pcm.size), run, {"t": "ack", "samples": int(pcm.size)})

    def do_s(self, msg: dict) -> dict:
        """Version 4's compact ``stream_spikes``: ``o`` offset, ``n`` steps, ``e`` encoding
        (0 events, the default; 1 bitmap), ``d`` data; answered ``a`` {``n``: next}."""
        enc = {0: "events", 1: "bitmap"}.get(msg.get("e", 0))
        if enc is None:
            raise ProtocolError("BAD_FIELD", f"s: encoding e={msg['e']} (0 events, 1 bitmap)")
        return self._compact(msg, {"t": "stream_spikes", "encoding": enc, "steps": msg["n"],
                                   "data": msg["d"], "offset": msg["o"]})

    def do_p(self, msg: dict) -> dict:
        """Version 4's compact ``stream_audio`` at 16 kHz: ``o`` offset, ``d`` pcm16."""
        return self._compact(msg, {"t": "stream_audio", "rate": SAMPLE_RATE, "pcm": msg["d"],
                                   "offset": msg["o"]})

    def _compact(self, msg: dict, long: dict) -> dict:
        if msg["v"] < 4:
            raise ProtocolError("UNKNOWN_TYPE", f"message type {msg['t']!r} is version 4's")
        reply = getattr(self, "do_" + long["t"])(long)
        return {"t": "a", "n": reply["next"]}

    def _in_order(self, msg: dict, units: int, run, ack: dict) -> dict:
        """Version 3: a stream chunk may carry ``offset``, the position of its first unit
        (sample of audio, ms of spikes) since reset_state; chunks are run in stream order
        whatever order they arrive in. One that starts ahead of the stream waits (at most
        SEQ_WINDOW of them, SEQ_BYTES of payload together), one already run is acknowledged
        again, and one that overlaps what was run adds only its new part, so a host may resend
        a lost chunk cut differently.
        ``run(skip)`` runs the chunk from its unit ``skip`` on. Without ``offset`` (version 2) a
        chunk runs at once. The answer's ``next`` is the offset the stream has reached."""
        off = msg.get("offset")
        if off is None:
            run(0)
            return ack
        if off < 0:
            raise ProtocolError("BAD_FIELD", f"stream chunk offset {off} is negative")
        if off + units <= self.seq_next:
            return dict(ack, offset=off, next=self.seq_next, duplicate=True)
        if off > self.seq_next:
            size = len(msg.get("pcm") or msg.get("data") or b"")
            held = self.seq_bytes - self.seq_buffer.get(off, (0, None, 0))[2]
            if (len(self.seq_buffer) >= SEQ_WINDOW and off not in self.seq_buffer) \
                    or held + size > SEQ_BYTES:
                raise ProtocolError("BUSY", f"{len(self.seq_buffer)} stream chunks ({held} "
                                            f"bytes) already wait for the one at offset "
                                            f"{self.seq_next} (at most {SEQ_WINDOW}, "
                                            f"{SEQ_BYTES} bytes)")
            if units > self.seq_buffer.get(off, (0, None, 0))[0]:   # keep the longer one
                self.seq_buffer[off] = (units, run, size)
                self.seq_bytes = held + size
            return dict(ack, offset=off, next=self.seq_next, buffered=True)
        run(self.seq_next - off)
        self.seq_next = off + units
        while self.seq_buffer:                        # what waited and now fits, in order
            start = min(self.seq_buffer)
            if start > self.seq_next:
                break
            n, waiting, size = self.seq_buffer.pop(start)
            self.seq_bytes -= size
            if start + n > self.seq_next:
                waiting(self.seq_next - start)
                self.seq_next = start + n
        return dict(ack, offset=off, next=self.seq_next)

    def _close_utterance(self) -> np.ndarray:
        chip = self._need_chip()
        if not self.streamed:
            raise ProtocolError("NO_UTTERANCE", "nothing streamed since the last utterance")
        phi = chip.features()
        self.recent = (self.recent + [phi])[-16:]
        self.streamed = False
        return phi

    def do_end_of_utterance(self, msg: dict) -> dict:
        chip = self._need_chip()
        if self.params["detect"]:                    # end of a stream: close the open windows
            if chip.cochlea_pending():
                self._detect_frames(chip.cochlea.flush())
            events, closed = self.detector.flush()
            self.stats["events"] += len(events)
            self.events_out += events
            stream_ms = self.detector.stream_ms
            self._new_stream()                       # the next stream starts at offset 0
            return {"t": "ack", "windows": closed, "stream_ms": stream_ms}
        self._close_utterance()
        if msg.get("shot"):                          # kept for the next enroll, no result
            chip.reset()
            return {"t": "ack", "shots": len(self.recent)}
        if not chip.classes():
            chip.reset()
            raise ProtocolError("NO_CLASSES", "no class enrolled")
        p = chip.predict()
        chip.reset()
        return {"t": "result", "label": p["label"], "best": p["best"], "scores": p["scores"],
                "confidence": p["confidence"], "spikes": p["spikes"],
                "inputs": p["inputs"]}

    def _shots(self, msg: dict, what: str) -> int:
        """The ``shots`` of an ``enroll`` or ``untaught`` (1..16, default 1), once a streamed
        utterance is closed as one of them and there are that many."""
        shots = msg.get("shots", 1)
        if not 1 <= shots <= 16:
            raise ProtocolError("BAD_FIELD", f"{what}: shots must be 1..16")
        if self.streamed:
            self._close_utterance()
        if len(self.recent) < shots:
            raise ProtocolError("NO_UTTERANCE", f"{what} needs {shots} streamed "
                                                f"utterance(s), has {len(self.recent)}")
        return shots

    def do_enroll(self, msg: dict) -> dict:
        chip = self._need_chip()
        shots = self._shots(msg, "enroll")
        label = msg["label"]
        if label not in chip.classes() and len(chip.classes()) >= chip.tab.max_classes:
            raise ProtocolError("CAPACITY", f"{chip.tab.max_classes} classes enrolled")
        if label not in chip.classes() and not self._answers_fit(chip.classes() + [label]):
            raise ProtocolError("CAPACITY", "with this label the enrolled words would no longer "
                                            "fit in one answer (shorter labels, or forget one)")
        r = chip.enroll(label, self.recent[-shots:])
        self.recent = []
        chip.reset()
        self._apply_threshold()                          # "person": refitted with this word
        return {"t": "ack", "classes": r["classes"], "written": r["written"], "ms": r["ms"],
                "shots": chip.shots_of(label), "threshold": self._threshold_in_use()}

    def do_untaught(self, msg: dict) -> dict:
        """The last ``shots`` utterances are words this person did not teach: kept (at most
        ``MAX_NEGATIVES``) so that threshold "person" sits above what they score; ``clear``
        drops them all."""
        chip = self._need_chip()
        if msg.get("clear"):
            self.negatives = []
        else:
            shots = self._shots(msg, "untaught")
            self.negatives = (self.negatives + self.recent[-shots:])[-MAX_NEGATIVES:]
            self.recent = []
            chip.reset()
        self._apply_threshold()
        return {"t": "ack", "negatives": len(self.negatives),
                "threshold": self._threshold_in_use()}

    def _label_capacity(self) -> int:
        """The longest label (UTF-8 bytes, up to 4 x MAX_LABEL) that every word of a full
        readout may have with every answer still fitting a frame: what ``hello`` promises."""
        n = self.chip.tab.max_classes
        self.label_bytes = 4 * MAX_LABEL              # (hello's own field at its widest)

        def fits(size: int) -> bool:
            return self._answers_fit([f"{k:x}".rjust(size, "w")[-size:] if size >= 2 else
                                      chr(0x21 + k % 90) for k in range(n)])

        lo, hi = 0, 4 * MAX_LABEL
        while lo < hi:                                # answers grow with the labels
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    def _answers_fit(self, labels: list[str]) -> bool:
        """Every answer that lists the enrolled words (hello, classes, a result or an event
        with a score per word) fits a frame with these ``labels``: the device refuses to store
        what it could not report."""
        worst = max(labels, key=lambda x: len(x.encode()), default="")
        scores = {lab: -0.123456789 for lab in labels}
        big = 2 ** 32 - 1
        answers = [
            {"t": "result", "id": big, "label": worst, "best": worst, "scores": scores,
             "confidence": 0.123456789, "spikes": big, "inputs": big, "latency_us": 1e9},
            {"t": "event", "id": 0, "kind": "keyword", "label": worst, "confidence": 0.1234567,
             "start_ms": big, "end_ms": big, "window_ms": big, "scores": scores},
            dict(self._hello_info(VERSION, labels), id=big)]
        try:
            for a in answers:
                encode(a, VERSION)
        except ValueError:
            return False
        return True

    def _threshold_in_use(self) -> float:
        return self.chip.none_threshold / (1 << self.chip.tab.cos_frac)

    def do_forget(self, msg: dict) -> dict:
        chip = self._need_chip()
        if msg["label"] not in chip.classes():
            raise ProtocolError("UNKNOWN_CLASS", f"{msg['label']!r} is not enrolled")
        chip.forget(msg["label"])
        self._apply_threshold()
        return {"t": "ack", "classes": chip.classes()}

    def do_list_classes(self, msg: dict) -> dict:
        return {"t": "classes", "classes": self._need_chip().classes()}

    def do_reset_state(self, msg: dict) -> dict:
        chip = self._need_chip()
        self._new_stream()
        self.recent = []
        if msg.get("voice"):                   # a new person: the running level from the start
            chip.reset_levels()
        return {"t": "ack"}

    def do_get_stats(self, msg: dict) -> dict:
        out = {"t": "stats", "device": dict(self.stats, boots=self.boots,
                                            flash_generation=self.flash_generation,
                                            decoder=dict(self.decoder.errors),
                                            boot_error=self.boot_error)}
        if self.chip is not None:
            out["chip"] = self.chip.stats()
            off = self.chip.level_offset()
            if off is not None:                # the level equalization's move, level units
                out["chip"]["voice_level_offset"] = dict(
                    mean=round(float(off.mean()), 2), min=int(off.min()), max=int(off.max()))
        return out

    def do_set_param(self, msg: dict) -> dict:
        name, value = check_param(msg["name"], msg["value"])
        self.params[name] = value
        if name in ("threshold", "min_confidence"):
            self._apply_threshold()
        if name == "detect" and self.chip is not None:
            self._new_stream()
        return {"t": "ack", "name": name, "value": value}

    def do_get_param(self, msg: dict) -> dict:
        out = dict(self.params)
        if self.chip is not None:
            out["threshold_in_use"] = self._threshold_in_use()
            out["negatives"] = len(self.negatives)
            out["model_threshold"] = self.chip.tab.none_threshold / (1 << self.chip.tab.cos_frac)
            out["min_inputs"] = int(self.chip.tab.min_inputs)
        return {"t": "params", "params": out}

    def _write_image(self, answers: OrderedDict[int, tuple[int | None, bytes]]) -> int:
        """The model, readout, parameters and the persisted answers to flash (atomic)."""
        chip = self._need_chip()
        if not self.flash_path:
            raise ProtocolError("STORAGE", "this device has no flash image")
        ro = chip.readout_state()
        voice = chip.level_state()
        image = {"model": self.model_bytes,
                 "levels": pack_ints(ro["levels"], chip.tab.readout_bits),
                 "classes": ro["classes"], "shots": ro["shots"], "exps": ro["exps"],
                 "params": dict(self.params),
                 "negatives": [np.asarray(n, "<i4").tobytes() for n in self.negatives],
                 "generation": self.flash_generation + 1,
                 "voice_level": None if voice is None else pack_ints(voice[0], 32),
                 "voice_heard": None if voice is None else voice[1],
                 "answers": [[k, c, v] for k, (c, v) in answers.items()]}
        try:
            size = flash.save(self.flash_path, image, crash_after_temp=self.crash_during_save)
        except OSError as exc:
            raise ProtocolError("STORAGE", f"flash write failed: {exc.strerror}") from None
        self.flash_generation += 1
        return size

    def _persist(self, rid: int, crc: int, reply: dict) -> bytes:
        """Write the state an enroll/forget left, with its answer, before answering; if the
        flash fails the change stays in RAM and the answer says ``saved`` false. Returns the
        answer's frame."""
        answers = OrderedDict(self.persisted)
        answers[rid] = (crc, encode_frame(encode(dict(reply, saved=True), self.host_version)))
        answers.move_to_end(rid)
        while len(answers) > PERSISTED_ANSWERS:
            answers.popitem(last=False)
        try:
            self._write_image(answers)
        except ProtocolError:
            return encode_frame(encode(dict(reply, saved=False), self.host_version))
        self.persisted = answers
        return answers[rid][1]

    def do_save(self, msg: dict) -> dict:
        size = self._write_image(self.persisted)
        return {"t": "ack", "bytes": size, "generation": self.flash_generation}

    def do_reboot(self, msg: dict) -> dict:
        self.reboot_requested = True                  # after this answer is sent
        return {"t": "ack"}
