"""A long stream through the chip and the board: memory stays flat and the answers do not drift."""


def test_long_stream_keeps_memory_and_answers(model4):
    """Two minutes of repeated blocks through the chip and tessera sim --pty (the hour-long
    run is `tessera bench protocol --parts stream`)."""
    from tessera.tools.long_stream import long_stream

    r = long_stream(model4, minutes=2.0, block_s=30.0)
    c, b = r["chip"], r["board"]
    assert r["blocks"] == 4 and c["answers_identical_every_block"] and c["right_per_block"] > 0
    assert b["no_drift"] and b["right_per_block_first_quarter"] > 0 and b["errors"] == 0
    assert c["rss_end_mb"] < c["rss_start_mb"] + 50 and b["rss_end_mb"] < b["rss_start_mb"] + 50
