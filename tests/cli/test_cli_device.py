"""`tessera sim --pty` and `tessera device` end to end: enroll over a pseudo-terminal and a sim://
URL, a clear error for a missing microphone."""

import json
import subprocess
import sys


def test_cli_sim_pty_and_device_enroll(model4, tmp_path, fsdd):
    """`tessera device enroll --port PTY --label lights a.wav` is all a user needs."""
    from helpers import tessera

    p = subprocess.Popen([sys.executable, "-m", "tessera.cli", "sim", "--pty", "--flash",
                          str(tmp_path / "flash.img"), "--model", model4],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = p.stdout.readline().strip()
        assert port.startswith("/dev/"), p.stderr.read() if p.poll() is not None else port
        wavs = sorted(fsdd.glob("*.wav"))
        one = [w for w in wavs if w.name.startswith("1_jackson")][:2]
        two = [w for w in wavs if w.name.startswith("2_jackson")][:2]
        r = tessera("device", "enroll", "--port", port, "--label", "one", one[0], "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["classes"] == ["one"]
        r = tessera("device", "enroll", "--port", port, "--label", "two", two[0], "--save")
        assert r.returncode == 0, r.stderr
        r = tessera("device", "infer", "--port", port, one[1], "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["label"] in ("one", "two")
        r = tessera("device", "classes", "--port", port, "--json")
        assert json.loads(r.stdout)["classes"] == ["one", "two"]
        r = tessera("device", "forget", "--port", port, "--label", "three")
        assert r.returncode == 2 and "UNKNOWN_CLASS" in r.stderr
    finally:
        p.kill()
        p.wait()
    r = tessera("device", "info", "--port", "socket://127.0.0.1:1", "--timeout", "0.2")
    assert r.returncode == 2 and "cannot open the device link" in r.stderr


def test_device_cli_over_sim_url_and_mic_error(model4, fsdd):
    from helpers import assert_clean_error, tessera

    wav = sorted(fsdd.glob("3_*.wav"))[0]
    url = f"sim://?model={model4}"
    r = tessera("device", "stream", "--port", url, wav, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["events"] == []           # nothing enrolled: no keyword
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        assert_clean_error(tessera("device", "stream", "--port", url, "--mic"), "mic extra")
