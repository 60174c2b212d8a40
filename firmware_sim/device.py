"""The simulated board's firmware: bytes in, bytes out, over the chip emulator (PROTOCOL.md).

:class:`Firmware` is transport-free: :meth:`Firmware.receive` takes any bytes from the link and
returns the bytes to send back (frames). Every request id is executed at most once: the answers
to the last ``IDEMPOTENCY`` ids are kept and re-sent when an id comes again, so a retried
``enroll`` never enrolls twice. With a flash image and ``autosave`` (the default), a
``load_commit``, ``enroll`` or ``forget`` is written to flash before it is answered, together
with the answers to the last ``PERSISTED_ANSWERS`` such requests: a retry that comes after a
reboot is answered from there, so an enrollment stays exactly-once across a power cut. A frame
that fails its CRC, COBS or size check is answered with an ``error`` (id 0) and the decoder
resynchronises at the next delimiter.

The requests' handlers are a table (:mod:`tessera.firmware_sim.handlers`); the parameters are
checked from one (:mod:`~tessera.firmware_sim.params`); detection is a step function
(:mod:`~tessera.firmware_sim.detect`); what flash keeps is :mod:`~tessera.firmware_sim.persist`;
stream chunks are put in order by :mod:`~tessera.firmware_sim.ordering`.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np

from ..protocol.messages import SUPPORTED, VERSION, ProtocolError, check_fields, decode, encode, \
    error_message
from ..protocol.framing import FrameDecoder, FrameError, encode_frame
from ..runtime.activity import memory_bytes
from ..runtime.chip import Chip, tables_of
from ..runtime.constants import SAMPLE_RATE
from ..runtime.errors import InputError
from ..runtime.model_format import decode_model
from ..runtime.rram import RRAMConfig
from . import flash, persist
from .detect import detect_start, detect_step
from .handlers import FIRMWARE_VERSION, HANDLERS, Capabilities, label_capacity
from .ordering import StreamOrder
from .params import DEFAULT_PARAMS, apply_threshold

__all__ = ["Firmware", "Capabilities", "FIRMWARE_VERSION"]

ERROR_BURST = 8          # bad-frame answers at once, then ...
ERROR_RATE = 4.0         # ... at most this many per second (the rest are only counted)
IDEMPOTENCY = 256
#: in flash before they are answered
PERSISTED_REQUESTS = ("enroll", "forget", "rename", "untaught", "load_commit")


def _within_device(core, readout) -> None:
    """A model's geometry and window against this device's capabilities, read from the file's
    scalars before any array is inflated (a 4096 x 4096 input table of zeros is a few KiB
    deflated and 128 MiB unpacked); a scalar of the wrong kind is left to :func:`tables_of`,
    which refuses it, so a model past both is within every limit here (the one check of them)."""
    cap = Capabilities
    limits = (("rows", cap.max_rows), ("cols", cap.max_cols), ("tile", cap.max_tile),
              ("inputs", cap.max_inputs))
    get = (lambda d, k: d.get(k) if isinstance(d, dict) and type(d.get(k)) is int else None)
    for key, most in limits:
        v = get(core, key)
        if v is not None and v > most:
            raise InputError(f"model core.{key} {v} exceeds this device ({most} at most)")
    classes = get(readout, "max_classes")
    if classes is not None and classes > cap.max_classes:
        raise InputError(f"model readout.max_classes {classes} exceeds this device "
                         f"({cap.max_classes} at most)")
    steps, bin_ms = get(core, "steps"), get(core, "bin_ms")
    if steps is not None and bin_ms is not None and steps * bin_ms > cap.max_window_ms:
        raise InputError(f"model window {steps} steps of {bin_ms} ms exceeds this device "
                         f"({cap.max_window_ms} ms at most)")


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
        self.decoder = FrameDecoder(on_error=self.frame_error)
        self.pending_errors: list[bytes] = []
        self.error_tokens, self.error_clock, self.errors_unanswered = ERROR_BURST, 0.0, 0
        # id -> (CRC-32 of the request's body, answer frame): a retry is the same id with the
        # same body; another host's request that happens to reuse an id is a new request
        self.answers: OrderedDict[int, tuple[int | None, bytes]] = OrderedDict()
        self.persisted: OrderedDict[int, tuple[int | None, bytes]] = OrderedDict()   # in flash
        self.host_version = VERSION               # answers go out in the host's version
        self.order = StreamOrder()                # version 3+: the stream's offset
        self.chip: Chip | None = None
        self.model_bytes = b""
        self.label_bytes = 0
        self.load = None
        self.streamed = False
        self.recent: list = []                    # closed utterances (handlers.Heard)
        self.negatives: list[np.ndarray] = []     # untaught recordings' features (``untaught``)
        self.positives: list[tuple[str, int]] = []   # held-out scores of taught words (enroll)
        self.params = dict(DEFAULT_PARAMS)
        self.stats = {"frames": 0, "bad_frames": 0, "bad_frames_unanswered": 0, "requests": 0,
                      "duplicates": 0, "errors": 0, "events": 0}
        self.flash_generation = 0
        self.events_out: list[dict] = []
        self.detection = detect_start()
        self.reboot_requested = False
        self.boot_error = None
        try:
            image = flash.load(self.flash_path) if self.flash_path else None
        except InputError as exc:                     # damaged: boot empty, say why
            image, self.boot_error = None, f"flash image not restored: {exc}"
        if image is not None:
            try:
                persist.restore_image(self, image)
            except (ProtocolError, InputError, KeyError, TypeError, ValueError,
                    OverflowError) as exc:
                # an image this firmware cannot use (an older model format): boot empty
                self.chip, self.model_bytes = None, b""
                self.negatives, self.positives = [], []
                self.params = dict(DEFAULT_PARAMS)
                self.boot_error = f"flash image not restored: {exc}"

    def install(self, blob: bytes) -> None:
        """Run a model file: checked, within this device's geometry and RAM, and run once on a
        chip of its own (:meth:`probe`) before it replaces the current one."""
        try:
            model = decode_model(blob, "<model>")
            _within_device(model.core, model.readout)  # the geometry first: nothing inflated
            t = tables_of(model)                  # refuses what _within_device skipped
        except InputError as exc:
            raise ProtocolError("MODEL_REJECTED", str(exc)) from None
        need = len(blob) + memory_bytes(t)["total"]     # from the tables: nothing allocated yet
        if need > self.ram_budget:
            raise ProtocolError("RAM", f"model needs {need} bytes of RAM, budget {self.ram_budget}")
        try:
            chip = Chip(model, RRAMConfig(write_noise=float(self.params["write_noise"]),
                                          seed=self.seed))
        except InputError as exc:
            raise ProtocolError("MODEL_REJECTED", str(exc)) from None
        self.probe(model)
        self.chip, self.model_bytes = chip, blob
        self.label_bytes = label_capacity(self)
        self.order.reset()                            # a new model: a new stream
        self.streamed = False
        self.recent = []
        self.negatives = []                           # features of another model mean nothing
        self.positives = []                           # nor scores
        apply_threshold(self)
        self.detection = detect_start()

    def probe(self, model) -> None:
        """A model is committed only after it runs, on a chip of its own (the device's is not
        touched): audio through its front-end, a silent and a loud utterance through the core,
        an enroll and an answer."""
        try:
            chip = Chip(model, RRAMConfig(write_noise=0.0, seed=self.seed))
            tab = chip.tab
            ms = tab.steps * tab.bin_ms
            part = min(ms, 1000)                   # the window streamed 1 s at a time
            loud = np.zeros((part, tab.channels_total), np.uint8)
            loud[::3, tab.channels] = 1
            for frames in (np.zeros_like(loud), loud):
                for step in ("enroll", "predict"):
                    chip.reset()
                    for start in range(0, ms, part):
                        chip.run(frames[:min(part, ms - start)])
                    if step == "enroll":
                        chip.enroll("probe", [chip.features()])
                    else:
                        chip.predict()
            chip.reset()
            chip.cochlea.process(np.zeros(tab.bin_ms * SAMPLE_RATE // 1000, np.int16))
        except ProtocolError:
            raise
        except (Exception, RecursionError) as exc:                # noqa: BLE001 - any failure
            raise ProtocolError("MODEL_REJECTED", f"the model does not run: "
                                                  f"{type(exc).__name__}: {exc}"[:180]) from None

    def need_chip(self) -> Chip:
        if self.chip is None:
            raise ProtocolError("NO_MODEL", "no model loaded (send load_begin/chunk/commit)")
        return self.chip

    def new_stream(self) -> None:
        """A stream starts clean: the chip's state, the stream offsets (version 3+) and the
        detection state, so its answers never depend on what was streamed before."""
        self.chip.reset()
        self.order.reset()
        self.streamed = False
        self.detection = detect_start()

    def stream_frames(self, frames: np.ndarray) -> None:
        """Spike frames of the stream: into the open utterance, or through detection."""
        chip = self.need_chip()
        if self.params["detect"]:
            events, self.detection = detect_step(frames, self.detection, chip, self.params)
            self.stats["events"] += len(events)
            self.events_out += events
            return
        if chip.state.phi is not None:
            chip.reset(frontend=False)
        chip.run(frames)                                 # bins past the window are dropped
        self.streamed = True

    def do(self, t: str, msg: dict) -> dict:
        """Run request type ``t``'s handler on the fields ``msg`` (no frame, no id cache): what a
        test or a bench does to set a board up."""
        return HANDLERS[t](self, msg)

    # ------------------------------------------------------------------ bytes
    def frame_error(self, err: FrameError) -> None:
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
            out.extend(encode_frame(encode(e, self.host_version)) for e in self.events_out)
            self.events_out.clear()                    # events first: the host has them when
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
            return self.dispatch(body)
        except (Exception, RecursionError, MemoryError) as exc:      # noqa: BLE001 - never exit
            self.stats["errors"] += 1
            return self.frame(error_message(0, "INTERNAL", f"{type(exc).__name__}: "
                                                           f"{str(exc)[:120]}"))

    def frame(self, reply: dict) -> bytes:
        """An answer's frame; one that would exceed the frame limit is answered INTERNAL
        instead (it cannot happen by construction: :func:`~.handlers.answers_fit`)."""
        try:
            return encode_frame(encode(reply, self.host_version))
        except ValueError as exc:
            return encode_frame(encode(error_message(reply.get("id", 0), "INTERNAL",
                                                     str(exc)), self.host_version))

    def dispatch(self, body: bytes) -> bytes:
        """A body: decoded, a retry answered from the cache, else its handler run (errors
        become error answers) and its answer kept (and written to flash first for the requests
        that change what flash holds)."""
        try:
            msg = decode(body)
        except ProtocolError as exc:
            self.stats["errors"] += 1
            return self.frame(error_message(exc.rid, exc.name, str(exc)))
        rid = msg["id"]
        if msg.get("v") in SUPPORTED:
            self.host_version = msg["v"]
        digest = persist.body_digest(body)           # a retry is the same body, byte for byte
        if rid and rid in self.answers and self.answers[rid][0] == digest:
            self.stats["duplicates"] += 1                     # a retry: answer, do not redo
            self.answers.move_to_end(rid)
            return self.answers[rid][1]
        self.stats["requests"] += 1
        if self.reboot_after and self.stats["requests"] % self.reboot_after == 0:
            self.reboot_requested = True              # a power cut after this answer
        t0 = self.clock()
        persisting = bool(rid and msg["t"] in PERSISTED_REQUESTS and self.flash_path
                          and self.params["autosave"])
        snap = persist.snapshot(self) if persisting else None
        try:
            check_fields(msg)
            reply = HANDLERS[msg["t"]](self, msg)
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
        frame = None
        if persisting and reply["t"] != "error":
            try:
                frame = persist.persist(self, rid, digest, reply)
            except ProtocolError as exc:        # not written: refused as a whole, RAM put back
                persist.rollback(self, snap)
                self.stats["errors"] += 1
                reply = error_message(rid, exc.name, str(exc))
        frame = frame or self.frame(reply)
        if rid and reply.get("name") not in ("NO_UTTERANCE", "STORAGE"):   # those may succeed
            # later under the same id (shots streamed again after a reboot, flash writable)
            self.answers[rid] = (digest, frame)
            self.answers.move_to_end(rid)
            while len(self.answers) > IDEMPOTENCY:
                self.answers.popitem(last=False)
        return frame
