"""tessera.protocol: host-device messages over a serial byte stream (numpy, msgpack, pyserial only).

PROTOCOL.md specifies the framing (COBS frames with a CRC, :mod:`.framing`), the messages
(:mod:`.messages`) and the spike encodings (:mod:`.spikes`); :class:`.client.Device` is the host's
side and :mod:`.conformance` checks a device against the specification.
"""
