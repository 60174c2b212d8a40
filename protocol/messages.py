"""Messages: msgpack maps with a protocol version, a type and a request id (PROTOCOL.md).

Every message is a map ``{"v": VERSION, "t": TYPE, "id": ID, ...fields}``. Requests go host ->
device; the device answers each with exactly one message carrying the same ``id`` (``ack``,
``hello``, ``result``, ``classes``, ``stats``, ``params``, ``pong`` or ``error``).
Device-initiated ``event`` messages carry ``id = 0``.

Decoding is bounded by the frame size (msgpack's limits derived from it), and every way a message
can be bad maps to one error code of :data:`ERRORS`.

    >>> body = encode({"t": "ping", "id": 7})
    >>> decode(body)["t"]
    'ping'
"""

from __future__ import annotations

import msgpack

from ..runtime.errors import TesseraError
from ..runtime.labels import MAX_LABEL, label_problem  # noqa: F401 (MAX_LABEL: re-exported)
from .framing import MAX_BODY, FrameError

__all__ = ["VERSION", "SUPPORTED", "REQUESTS", "ANSWERS", "ERRORS", "CODES", "ProtocolError",
           "DeviceError", "LinkError", "encode", "decode", "check_fields", "error_message"]

VERSION = 4
#: versions a device speaks (a version-2 host is answered in version 2: it never sends
#: ``offset``; a version-3 host never sends the compact chunks ``s`` and ``p``)
SUPPORTED = (2, 3, 4)

#: request type -> {field: (python type, required)}
REQUESTS: dict[str, dict[str, tuple[type | tuple, bool]]] = {
    "hello": {"versions": (list, True)},
    "ping": {"payload": (bytes, False)},
    "load_begin": {"size": (int, True), "crc": (int, True), "chunk": (int, False)},
    "load_chunk": {"offset": (int, True), "data": (bytes, True), "crc": (int, True)},
    "load_commit": {},
    "stream_spikes": {"encoding": (str, True), "steps": (int, True), "data": (bytes, True),
                      "offset": (int, False)},
    "stream_audio": {"rate": (int, True), "pcm": (bytes, True), "offset": (int, False)},
    # version 4: compact stream chunks (one-letter keys; answered with ``a``)
    "s": {"o": (int, True), "n": (int, True), "d": (bytes, True), "e": (int, False)},
    "p": {"o": (int, True), "d": (bytes, True)},
    "end_of_utterance": {"shot": (bool, False)},
    "enroll": {"label": (str, True), "shots": (int, False)},
    "forget": {"label": (str, True)},
    "rename": {"label": (str, True), "to": (str, True)},
    "untaught": {"shots": (int, False), "clear": (bool, False)},
    "list_classes": {},
    "reset_state": {"voice": (bool, False)},
    "get_stats": {},
    "set_param": {"name": (str, True), "value": ((int, float, bool, str), True)},
    "get_param": {},
    "save": {},
    "reboot": {},
}

#: the fields every request may carry besides its own: type, id, protocol version
ENVELOPE = ("t", "id", "v")

#: the message types a device sends
ANSWERS = ("ack", "a", "hello", "result", "classes", "stats", "params", "pong", "error", "event")

#: error code -> (name, meaning)
ERRORS: dict[int, tuple[str, str]] = {
    1: ("BAD_FRAME", "a frame failed its CRC or COBS decoding, or was too short"),
    2: ("FRAME_TOO_LARGE", "a frame exceeded the maximum size"),
    3: ("BAD_MESSAGE", "the body is not a msgpack map of the protocol"),
    4: ("UNSUPPORTED_VERSION", "the message's protocol version is not supported"),
    5: ("UNKNOWN_TYPE", "the message type is not known"),
    6: ("BAD_FIELD", "a field is missing, of the wrong type or out of range"),
    7: ("NO_MODEL", "the request needs a loaded model"),
    8: ("MODEL_REJECTED", "the model file is corrupt or does not fit this device"),
    9: ("LOAD_SEQUENCE", "load_chunk/load_commit without load_begin, or at a wrong offset"),
    10: ("CHUNK_CRC", "a model chunk failed its CRC"),
    11: ("BAD_AUDIO", "audio at an unsupported sample rate or with a bad length"),
    12: ("BAD_SPIKES", "spike data that does not decode for the model's channels"),
    13: ("NO_UTTERANCE", "enroll or end_of_utterance with nothing streamed"),
    14: ("CAPACITY", "the readout holds its maximum number of classes"),
    15: ("UNKNOWN_CLASS", "forget of a label that is not enrolled"),
    16: ("NO_CLASSES", "end_of_utterance with no class enrolled"),
    17: ("RAM", "the request would exceed the device's RAM budget"),
    18: ("STORAGE", "the flash image could not be written"),
    19: ("BUSY", "a request id still being executed, or 64 version-3 stream chunks already "
                 "wait for an earlier one"),
    20: ("UNKNOWN_PARAM", "set_param of a parameter the device does not have"),
    21: ("INTERNAL", "an unexpected device error (a bug)"),
    22: ("LINK_BUSY", "another host holds the device's link: one host at a time"),
}
CODES = {name: code for code, (name, _) in ERRORS.items()}


class ProtocolError(TesseraError):
    """A request the device answers with an ``error`` message (``rid``: the request's id when
    it could be read, else 0)."""

    def __init__(self, name: str, message: str, rid: int = 0):
        super().__init__(message)
        self.code = CODES[name]
        self.name = name
        self.rid = rid


class DeviceError(TesseraError):
    """The host's side: the device answered with an ``error`` message."""

    def __init__(self, msg: dict):
        super().__init__(f"device error {msg.get('code')} {msg.get('name')}: {msg.get('message')}")
        self.code, self.name, self.reply = msg.get("code"), msg.get("name"), msg


class LinkError(TesseraError):
    """The host's side: no answer from the device after all retries."""


def encode(msg: dict, version: int = VERSION) -> bytes:
    msg = {"v": version, **msg}
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > MAX_BODY:
        raise FrameError("oversize", f"message of {len(body)} bytes exceeds the {MAX_BODY}-byte "
                                     f"frame limit")
    return body


def decode(body: bytes) -> dict:
    """A received body -> message map; raises :class:`ProtocolError` (BAD_MESSAGE,
    UNSUPPORTED_VERSION) when it is not one."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=MAX_BODY,
                              max_str_len=MAX_BODY, max_array_len=4096, max_map_len=64,
                              max_ext_len=0)
    except Exception as exc:                                   # noqa: BLE001 (msgpack raises many)
        raise ProtocolError("BAD_MESSAGE", f"body is not valid msgpack ({type(exc).__name__})") \
            from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("BAD_MESSAGE", "message is not a map with a string type 't'")
    if _depth(msg) > MAX_DEPTH:
        raise ProtocolError("BAD_MESSAGE", f"values nested more than {MAX_DEPTH} deep")
    rid = msg.get("id")
    if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 2**32:
        raise ProtocolError("BAD_MESSAGE", "message id 'id' must be an integer in [0, 2^32)")
    if msg.get("v") not in SUPPORTED and msg["t"] != "hello":
        raise ProtocolError("UNSUPPORTED_VERSION",
                            f"protocol version {msg.get('v')!r} (device speaks "
                            f"{', '.join(map(str, SUPPORTED))})", rid)
    return msg


#: how deep a message's values may nest (no request needs more than 3)
MAX_DEPTH = 16


def _depth(value) -> int:
    """Nesting depth of lists and maps, without recursion (a hostile value may nest as deep as
    the frame allows)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, tuple, dict)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
            if isinstance(v, dict):
                stack.extend((k, d + 1) for k in v)
    return deepest


def check_fields(msg: dict) -> None:
    """Raise UNKNOWN_TYPE or BAD_FIELD unless ``msg`` is a well-formed request."""
    spec = REQUESTS.get(msg["t"])
    if spec is None:
        raise ProtocolError("UNKNOWN_TYPE", f"unknown message type {msg['t']!r}")
    extra = sorted(str(k) for k in msg if k not in spec and k not in ENVELOPE)
    if extra:                              # refused, never ignored: a field no handler reads
        raise ProtocolError("BAD_FIELD", f"{msg['t']}: unknown field(s) "  # cannot hide in a
                                         f"{', '.join(repr(k[:32]) for k in extra[:4])}")  # retry
    for name, (kind, required) in spec.items():
        if name not in msg:
            if required:
                raise ProtocolError("BAD_FIELD", f"{msg['t']}: field {name!r} is missing")
            continue
        v = msg[name]
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ProtocolError("BAD_FIELD", f"{msg['t']}: field {name!r} has type "
                                             f"{type(v).__name__}")
        if name == "label" or (name == "to" and msg["t"] == "rename"):
            check_label(v, msg["t"])


def check_label(label: str, where: str = "enroll") -> None:
    """A word's label, by the one rule (:func:`tessera.runtime.labels.label_problem`)."""
    problem = label_problem(label)
    if problem:
        raise ProtocolError("BAD_FIELD", f"{where}: {problem}")


def error_message(rid: int, name: str, text: str) -> dict:
    return {"t": "error", "id": rid, "code": CODES[name], "name": name, "message": text[:200]}
