"""What the board keeps in flash (:mod:`tessera.firmware_sim.flash` writes it atomically): the
model, the readout's columns and registers, the parameters, the untaught recordings, the
held-out scores of taught words, the front-end's running level and the answers to the last
requests that changed them. A restored image goes through the same checks as the wire."""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict

import numpy as np

from ..protocol.framing import MAX_WIRE, encode_frame
from ..protocol.messages import ProtocolError, encode
from ..runtime.errors import InputError
from ..runtime.model_format import pack_ints, unpack_ints
from . import flash
from .params import MAX_NEGATIVES, MAX_POSITIVES, apply_threshold, check_param

__all__ = ["restore_image", "write_image", "persist", "snapshot", "rollback", "body_digest",
           "PERSISTED_ANSWERS"]

PERSISTED_ANSWERS = 32
#: bytes of the digest a stored answer is matched on
DIGEST_BYTES = 16
#: flash generations count up to below this (a restored image's count is checked against it)
MAX_GENERATION = 1 << 32


def body_digest(body: bytes) -> bytes:
    """What a stored answer is matched on besides its id: BLAKE2b (128 bits) of the whole request
    body, so a retry is answered from the store only when it is the same request byte for byte
    (a CRC-32 can be forged by four bytes in a field)."""
    return hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest()


def restore_image(fw, image: dict) -> None:
    """Power-on: ``fw`` (just booted, empty) takes the image's state; an image it cannot use
    raises (the caller boots empty and says why)."""
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
        fw.params[name] = value
    fw.install(image["model"])
    chip = fw.chip
    # every packed array's declared shape is checked against the model before it is inflated
    levels = unpack_ints(image["levels"], "levels", (chip.tab.features, chip.tab.max_classes))
    chip.readout.restore(dict(levels=levels, classes=list(image["classes"]),
                              shots=image["shots"], exps=image["exps"]))
    raw = image.get("negatives", [])
    d = chip.tab.features
    if not isinstance(raw, list) or not all(isinstance(b, bytes) and len(b) == 4 * d
                                            for b in raw):
        raise InputError("flash image: negatives are not feature vectors of this model")
    fw.negatives = [np.frombuffer(b, "<i4").astype(np.int64) for b in raw][-MAX_NEGATIVES:]
    fw.positives = _positives(image.get("positives", []), chip)
    apply_threshold(fw)
    if image.get("voice_level") is not None:    # the front-end's running level (its person)
        eq = chip.frontend.tables.eq if chip.frontend is not None else None
        if eq is None:
            raise InputError("flash image: a running level (voice_level) for a model "
                             "without level equalization")
        chip.cochlea.restore_level_state(unpack_ints(image["voice_level"], "voice_level",
                                                     (eq.ref.size,)),
                                         image.get("voice_heard", 0))
    generation = image.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) \
            or not 0 <= generation < MAX_GENERATION:
        raise InputError(f"flash image: generation {str(generation)[:24]} is not a count in "
                         f"0..{MAX_GENERATION - 1}")
    fw.flash_generation = generation
    entries = image.get("answers", [])
    for entry in entries[-PERSISTED_ANSWERS:] if isinstance(entries, list) else ():
        # [id, digest, answer frame]; images before the digest (a CRC-32 or none) keep no
        # answers: a retry of theirs runs again rather than match a body it cannot check
        if (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)
                and not isinstance(entry[0], bool) and 0 < entry[0] < 2**32
                and isinstance(entry[1], bytes) and len(entry[1]) == DIGEST_BYTES
                and isinstance(entry[2], bytes) and 0 < len(entry[2]) <= MAX_WIRE):
            fw.persisted[entry[0]] = (entry[1], entry[2])
    fw.answers.update(fw.persisted)


def _positives(raw, chip) -> list[tuple[str, int]]:
    """The held-out scores of taught words an image keeps, as the board records them: at most
    ``MAX_POSITIVES`` [label, cosine] pairs, each label a word the image taught and each cosine
    within [-1, 1] in the model's units (an image written before them has none)."""
    one = 1 << chip.tab.cos_frac
    taught = set(chip.classes())
    if not isinstance(raw, list) or len(raw) > MAX_POSITIVES or not all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and e[0] in taught
            and isinstance(e[1], int) and not isinstance(e[1], bool) and -one <= e[1] <= one
            for e in raw):
        raise InputError(f"flash image: held-out scores (positives) are not at most "
                         f"{MAX_POSITIVES} [taught word, cosine] pairs of this model")
    return [(w, s) for w, s in raw]


def write_image(fw, answers: OrderedDict[int, tuple[bytes, bytes]]) -> int:
    """The model, readout, parameters and the persisted ``answers`` to flash (atomic); returns
    its size."""
    chip = fw.need_chip()
    if not fw.flash_path:
        raise ProtocolError("STORAGE", "this device has no flash image")
    ro = chip.readout.state()
    voice = chip.frontend.level_state() if chip.frontend else None
    image = {"model": fw.model_bytes,
             "levels": pack_ints(ro["levels"], chip.tab.readout_bits),
             "classes": ro["classes"], "shots": ro["shots"], "exps": ro["exps"],
             "params": dict(fw.params),
             "negatives": [np.asarray(n, "<i4").tobytes() for n in fw.negatives],
             "positives": [[w, int(s)] for w, s in fw.positives],
             "generation": fw.flash_generation + 1,
             "voice_level": None if voice is None else pack_ints(voice[0], 32),
             "voice_heard": None if voice is None else voice[1],
             "answers": [[k, c, v] for k, (c, v) in answers.items()]}
    if image["generation"] >= MAX_GENERATION:       # a count that cannot overflow: it stops
        image["generation"] = MAX_GENERATION - 1      # at its largest (a restore checks it)
    try:
        size = flash.save(fw.flash_path, image, crash_after_temp=fw.crash_during_save)
    except OSError as exc:
        raise ProtocolError("STORAGE", f"flash write failed: {exc.strerror}") from None
    except (ValueError, TypeError, OverflowError) as exc:   # never past the handler: refused
        raise ProtocolError("STORAGE", f"flash image not written ({type(exc).__name__})") \
            from None
    fw.flash_generation = image["generation"]
    return size


def snapshot(fw) -> dict:
    """What an ``enroll``, ``forget``, ``untaught`` or ``load_commit`` may change in RAM (the
    model, the readout's columns, conductances and registers, the parameters, the untaught and
    recent recordings, the running level), to put back with :func:`rollback` when its flash
    write fails."""
    chip = fw.chip
    snap = dict(chip=chip, model_bytes=fw.model_bytes, label_bytes=fw.label_bytes,
                params=dict(fw.params),
                negatives=list(fw.negatives), positives=list(fw.positives),
                recent=list(fw.recent))
    if chip is not None:       # the model's tables and the random source are shared, not copied
        snap["readout"] = copy.deepcopy(chip.readout, {id(chip.tab): chip.tab,
                                                       id(chip.rng): chip.rng})
        snap["level"] = chip.frontend.level_state() if chip.frontend is not None else None
    return snap


def rollback(fw, snap: dict) -> None:
    """RAM as :func:`snapshot` saw it: a request whose flash write failed is refused as a
    whole (what flash holds and what the board answers from never differ)."""
    if fw.chip is not snap["chip"]:             # a load_commit: the old model back, whole
        fw.chip, fw.model_bytes = snap["chip"], snap["model_bytes"]
        fw.label_bytes = snap["label_bytes"]
    fw.params.clear()
    fw.params.update(snap["params"])
    fw.negatives, fw.recent = snap["negatives"], snap["recent"]
    fw.positives = snap["positives"]
    if fw.chip is not None:
        fw.chip.readout = snap["readout"]
        if snap["level"] is not None:
            fw.chip.cochlea.restore_level_state(*snap["level"])


def persist(fw, rid: int, digest: bytes, reply: dict) -> bytes:
    """Write the state an enroll/forget/untaught/load_commit left, with its answer, before
    answering; returns the answer's frame. A failed write raises ``STORAGE`` (the caller puts
    RAM back with :func:`rollback` and refuses the request)."""
    answers = OrderedDict(fw.persisted)
    answers[rid] = (digest, encode_frame(encode(dict(reply, saved=True), fw.host_version)))
    answers.move_to_end(rid)
    while len(answers) > PERSISTED_ANSWERS:
        answers.popitem(last=False)
    write_image(fw, answers)
    fw.persisted = answers
    return answers[rid][1]
