"""tessera.firmware_sim: the simulated board behind the protocol (numpy, msgpack, pyserial only)."""
