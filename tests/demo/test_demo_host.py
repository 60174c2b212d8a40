"""The demo and `tessera device` are callers of one host session (issue 36 item 1): the same
answers on the same recordings, the same reboot-safe teaching, one hello per session."""

import json
import shutil

import pytest
from helpers import PowerCutPort, tessera

from tessera.firmware_sim.device import Firmware
from tessera.host import Session


def _words(fsdd, dest):
    for w in ("0", "1"):
        for i in (0, 1, 2):
            (dest / w).mkdir(parents=True, exist_ok=True)
            shutil.copy(fsdd / f"{w}_george_{i}.wav", dest / w / f"{i}.wav")
    (dest / "_other").mkdir()
    shutil.copy(fsdd / "2_george_1.wav", dest / "_other" / "a.wav")
    return dest


@pytest.mark.slow
def test_demo_and_device_give_the_same_answers_on_the_same_recordings(fsdd, tmp_path):
    from tessera.demo import folder_set
    from tessera.demo.run import _ask, _teach

    words = _words(fsdd, tmp_path / "words")
    ds = folder_set(str(words))
    with Session.open(f"sim://?flash={tmp_path / 'demo.img'}") as s:
        _teach(s, ds, sorted(ds.shots), lambda line: None)
        demo, _ = _ask(s, ds, False, lambda line: None)
    url = f"sim://?flash={tmp_path / 'cli.img'}"
    for w in ("0", "1"):
        r = tessera("device", "enroll", "--port", url, "--label", w, words / w / "0.wav",
                    "--save")
        assert r.returncode == 0, r.stderr
    r = tessera("device", "infer", "--port", url, words, "--json")
    assert r.returncode == 0, r.stderr
    cli = {x["path"]: x["answer"] for x in json.loads(r.stdout)["results"]}
    assert len(demo) == 5 and len(cli) == 7                  # the CLI asks the shots too
    assert {d["source"]: d["answer"] for d in demo} == {d["source"]: cli[d["source"]]
                                                         for d in demo}
    for d in demo:            # and each answer is the one `tessera device infer FILE` gives
        one = json.loads(tessera("device", "infer", "--port", url, d["source"], "--json").stdout)
        assert (one["label"] or "none") == d["answer"]


@pytest.mark.parametrize("applied", [False, True])
def test_the_demo_teaches_once_across_a_reboot_mid_enrollment(model4, tmp_path, applied):
    from tessera.demo import DemoSet, Utterance
    from tessera.demo.run import _teach
    from tessera.protocol.client import Device
    from tessera.tools.bench import speechlike_signal

    fw = Firmware(flash_path=str(tmp_path / "flash.img"))
    fw.install(open(model4, "rb").read())
    fw.do("save", {})                                          # a deployed board
    ds = DemoSet({w: Utterance(w, speechlike_signal(0.6, k), "v") for k, w in
                  enumerate(("lamp", "fan"))}, tests=[])
    s = Session(Device(PowerCutPort(fw, applied), timeout=0.2))
    _teach(s, ds, ["fan", "lamp"], lambda line: None)
    assert fw.boots == 2 and s.dev.retried >= 1               # the power cut happened
    fw.boot()
    assert fw.chip.classes() == ["fan", "lamp"]
    assert [fw.chip.readout.shots_of(w) for w in ("fan", "lamp")] == [1, 1]


class _Counting:
    """A port that counts the requests a host sends, by type."""

    def __init__(self, fw):
        from tessera.protocol.framing import FrameDecoder

        self.fw, self.buf, self.dec, self.sent = fw, bytearray(), FrameDecoder(), []

    def write(self, data):
        from tessera.protocol.messages import decode

        self.sent += [decode(b)["t"] for b in self.dec.feed(data)]
        self.buf += self.fw.receive(data)
        return len(data)

    @property
    def in_waiting(self):
        return len(self.buf)

    def read(self, n=1):
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def close(self):
        pass


def test_one_hello_per_session_and_none_to_teach(model4):
    from tessera.protocol.client import Device
    from tessera.tools.bench import speechlike_signal

    fw = Firmware()
    fw.install(open(model4, "rb").read())
    port = _Counting(fw)
    dev = Device(port)
    dev.info()                                       # what Device.open does
    s = Session(dev)
    s.teach("lamp", speechlike_signal(1.0, 1))       # a 1 s recording
    s.ask(speechlike_signal(1.0, 2))
    assert port.sent.count("hello") == 1
    teach = port.sent[1:port.sent.index("enroll") + 1]
    assert teach[0] == "reset_state" and teach[-2:] == ["end_of_utterance", "enroll"]
    assert len(teach) <= 13                          # 10 chunks of 100 ms + 3 (was 15)
