"""tessera.protocol: host-device messages over a serial byte stream (numpy, msgpack, pyserial only).

The message set and framing are specified in PROTOCOL.md once they exist (see the issue tracker).
"""
