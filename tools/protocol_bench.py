"""Reliability and link benchmarks of the protocol (``tessera bench protocol``).

- ``fuzz``: valid, mutated and random frames fed to the firmware; counts crashes (exceptions out
  of ``receive`` or INTERNAL errors), hangs (a frame slower than ``hang_s``) and frames neither
  answered nor dropped-and-counted.
- ``lossy_enroll``: the simulator behind a socket whose link drops and corrupts a fraction of the
  bytes in both directions; words are enrolled through the retrying client; every enrollment
  must land exactly once (the device's enrollment counter).
- ``kill_during_save``: a child process saves the flash image in a loop and is SIGKILLed at random
  moments; after every kill the image must load and be the old or the new state.
- ``link_budget``: bytes per second of real-time spike streams per encoding and of audio, against
  a 921,600 baud link.
- ``pty_enroll``: the enroll round trip through ``tessera sim --pty`` (a pseudo-terminal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time

import numpy as np

from ..firmware_sim.boot import boot_firmware, child_python, pty_sim
from ..firmware_sim.device import Firmware
from ..firmware_sim.sim import LinkFaults, serve_socket
from ..protocol.framing import FrameDecoder, encode_frame
from ..protocol.messages import CODES, decode, encode
from ..protocol.spikes import encode_bitmap, encode_events
from ..runtime.constants import SAMPLE_RATE

__all__ = ["fuzz", "lossy_enroll", "kill_during_save", "link_budget", "pty_enroll",
           "synthetic_frames", "start_socket_sim", "rss_mb", "lossy_stream"]


def synthetic_frames(channels: int, ms: int, rate_hz: float, seed: int) -> np.ndarray:
    """Poisson-like spike frames: ``rate_hz`` spikes per second per channel on average."""
    rng = np.random.default_rng(seed)
    return (rng.random((ms, channels)) < rate_hz / 1000.0).astype(np.uint8)


def loaded_firmware(model_path: str, flash_path: str | None = None) -> Firmware:
    """A board with ``model_path`` installed (from the one boot path)."""
    return boot_firmware(model_path, flash_path)[0]


def _valid_messages(rng, channels: int) -> list[dict]:
    f = synthetic_frames(channels, 20, 20, int(rng.integers(1 << 30)))
    pcm = (rng.standard_normal(800) * 3000).astype("<i2").tobytes()
    return [
        {"t": "ping", "payload": bytes(rng.integers(0, 256, 20, dtype=np.uint8))},
        {"t": "hello", "versions": [1]},
        {"t": "stream_spikes", "encoding": "events", "steps": 20, "data": encode_events(f)},
        {"t": "stream_spikes", "encoding": "bitmap", "steps": 20, "data": encode_bitmap(f)},
        {"t": "stream_audio", "rate": SAMPLE_RATE, "pcm": pcm},
        {"t": "list_classes"}, {"t": "get_stats"}, {"t": "reset_state"},
        {"t": "enroll", "label": "w%d" % rng.integers(3)}, {"t": "end_of_utterance"},
        {"t": "forget", "label": "w%d" % rng.integers(3)},
        {"t": "set_param", "name": "detect_confidence", "value": 0.5},
        {"t": "load_chunk", "offset": 0, "data": b"xx", "crc": 0},
    ]


def _mutate(frame: bytes, rng) -> bytes:
    a = bytearray(frame)
    kind = int(rng.integers(6))
    if kind == 0 and len(a) > 2:                       # flip bits
        for _ in range(int(rng.integers(1, 4))):
            a[int(rng.integers(len(a) - 1))] ^= 1 << int(rng.integers(8))
    elif kind == 1 and len(a) > 3:                     # truncate
        a = a[: int(rng.integers(1, len(a) - 1))] + b"\x00"
    elif kind == 2:                                    # insert random bytes
        i = int(rng.integers(len(a)))
        a[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8))
    elif kind == 3 and len(a) > 3:                     # delete bytes
        i = int(rng.integers(len(a) - 2))
        del a[i:i + int(rng.integers(1, 4))]
    elif kind == 4:                                    # pure garbage
        a = bytearray(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8))
    else:                                              # a valid body with a mutated msgpack
        return a
    return bytes(a)


def fuzz(model_path: str, frames: int = 100_000, seed: int = 0, hang_s: float = 1.0) -> dict:
    """Send ``frames`` valid and mutated frames to one firmware instance; never resets it."""
    import msgpack

    rng = np.random.default_rng(seed)
    fw = loaded_firmware(model_path)
    channels = fw.chip.tab.channels_total
    dec = FrameDecoder()
    crashes, hangs, internal, answers, worst, unanswered = 0, 0, 0, 0, 0.0, 0
    sent_valid = sent_mutated = 0
    t_start = time.perf_counter()
    pool = _valid_messages(rng, channels)
    for i in range(frames):
        if i % 500 == 0:
            pool = _valid_messages(rng, channels)
        msg = dict(pool[int(rng.integers(len(pool)))], id=int(rng.integers(1, 2**32)))
        if rng.random() < 0.1:                          # a map of the wrong shape
            msg = {k: (v if rng.random() < 0.7 else rng.integers(-5, 5).item())
                   for k, v in msg.items()}
            body = msgpack.packb(msg, use_bin_type=True)
        else:
            body = encode(msg)
        frame = encode_frame(body)
        if rng.random() < 0.6:
            frame = _mutate(frame, rng)
            sent_mutated += 1
        else:
            sent_valid += 1
        before = fw.stats["frames"] + fw.stats["bad_frames"] - fw.stats["bad_frames_unanswered"]
        t0 = time.perf_counter()
        try:
            out = fw.receive(frame)
        except Exception:                               # noqa: BLE001 - that is a crash
            crashes += 1
            continue
        dt = time.perf_counter() - t0
        worst = max(worst, dt)
        hangs += dt > hang_s
        got = dec.feed(out)
        for b in got:
            r = decode(b)
            answers += r.get("t") != "event"
            internal += r.get("code") == CODES["INTERNAL"]
        # every frame the device saw gets exactly one answer, but for bad frames beyond the
        # device's error-answer rate (counted in bad_frames_unanswered)
        unanswered += (fw.stats["frames"] + fw.stats["bad_frames"]
                       - fw.stats["bad_frames_unanswered"] - before) \
            - sum(decode(b).get("t") != "event" for b in got)
    st = fw.stats
    return dict(bench="fuzz", frames=frames, valid=sent_valid, mutated=sent_mutated,
                crashes=crashes, internal_errors=internal, hangs=hangs,
                worst_frame_ms=round(worst * 1e3, 2), answers=answers,
                decoded_frames=st["frames"], bad_frames=st["bad_frames"],
                bad_frames_unanswered=st["bad_frames_unanswered"],
                unanswered=int(unanswered), seconds=round(time.perf_counter() - t_start, 1))


def start_socket_sim(fw: Firmware, faults: LinkFaults | None = None) -> tuple[str, threading.Thread]:
    """The firmware behind a loopback socket in a thread; returns its URL."""
    port = []
    ready = threading.Event()

    def on_ready(p):
        port.append(p)
        ready.set()

    th = threading.Thread(target=serve_socket, args=(fw, "127.0.0.1", 0, faults or LinkFaults()),
                          kwargs=dict(ready=on_ready), daemon=True)
    th.start()
    ready.wait(10)
    return f"socket://127.0.0.1:{port[0]}", th


def lossy_enroll(model_path: str, words: int = 10, drop: float = 0.005, corrupt: float = 0.005,
                 seed: int = 0) -> dict:
    """Enroll ``words`` words over a link losing ``drop`` and corrupting ``corrupt`` of the bytes
    in both directions (the utterances streamed over the same link, in 5 ms chunks)."""
    from ..protocol.client import Device

    fw = loaded_firmware(model_path)
    faults = LinkFaults(drop=drop, corrupt=corrupt, seed=seed)
    url, _ = start_socket_sim(fw, faults)
    dev = Device.open(url, timeout=0.05, retries=200)
    rng = np.random.default_rng(seed)
    ms = fw.chip.tab.steps * fw.chip.tab.bin_ms
    t0 = time.perf_counter()
    for k in range(words):
        dev.request({"t": "reset_state"})
        dev.stream_spikes(synthetic_frames(fw.chip.tab.channels_total, ms, 8, int(rng.integers(1 << 30))),
                          chunk_ms=5)
        dev.request({"t": "enroll", "label": f"word{k}"})
    landed = fw.chip.counters.enrollments
    classes = fw.chip.classes()
    return dict(bench="lossy_enroll", words=words, drop=drop, corrupt=corrupt,
                enrollments_on_device=landed, classes=len(classes),
                exactly_once=landed == words and len(classes) == words,
                retries=dev.retried, requests=fw.stats["requests"],
                duplicates_answered_from_cache=fw.stats["duplicates"],
                bad_frames=fw.stats["bad_frames"], seconds=round(time.perf_counter() - t0, 1))


def lossy_stream(model_path: str, errors: float = 0.01, baud: int = 921600, seed: int = 0,
                 piece_s: float = 0.25, timeout: float = 0.05) -> dict:
    """Utterances over a link that damages ``errors`` of the bytes in both directions (half
    dropped, half corrupted) at ``baud``, client ``timeout``: the seconds a 1 s utterance takes
    as spikes (the host's front-end; version 4: compact numbered chunks sized to the link,
    pipelined, only the lost ones sent again), and, per second of sound, pieces of ``piece_s``
    as audio (version 4), and as spikes and audio with version 3 (the same scheme with longer
    messages, a chunk whose answer was lost sent again) and version 2 (stop and wait, small
    chunks). The
    device's answer after the lossy stream must equal its answer after a clean one."""
    from ..protocol.client import Device
    from ..runtime.chip import Chip
    from .bench import speechlike_signal

    chip = Chip.load(model_path)
    tab = chip.tab

    def spikes(pcm):
        chip.reset()
        f = chip.cochlea.encode(pcm)
        out = np.zeros((f.shape[0], tab.channels_total), np.uint8)
        out[:, tab.channels] = f
        return out

    shot, query = spikes(speechlike_signal(1.0, seed + 1)), spikes(speechlike_signal(1.0, seed + 2))
    piece = speechlike_signal(piece_s, seed + 3)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    out = dict(bench="lossy_stream", byte_errors=errors, baud=baud, timeout_s=timeout)
    scores = {}
    for name, faults in (("clean", LinkFaults(baud=baud)),
                         ("lossy", LinkFaults(drop=errors / 2, corrupt=errors / 2, baud=baud,
                                              seed=seed))):
        fw = loaded_firmware(model_path)
        url, _ = start_socket_sim(fw, faults)
        dev = Device.open(url, timeout=timeout, retries=1000)
        dev.request({"t": "reset_state"})
        t_shot = timed(lambda: dev.stream_spikes(shot))
        dev.request({"t": "end_of_utterance", "shot": True})
        dev.request({"t": "enroll", "label": "shot"})
        dev.request({"t": "reset_state"})
        t_query = timed(lambda: dev.stream_spikes(query))
        scores[name] = dev.request({"t": "end_of_utterance"}).get("scores")
        row = dict(spikes_1s_seconds=[round(t_shot, 2), round(t_query, 2)],
                   spike_bytes_per_s=len(encode_events(shot)), retries=dev.retried,
                   byte_error_estimate=round(dev.link.byte_error_rate(), 4))
        if name == "lossy":
            dev.request({"t": "reset_state"})
            row["audio_seconds_per_s"] = round(timed(lambda: dev.stream_pcm(piece)) / piece_s, 1)
            n = int(piece_s * 1000)
            dev.version = 3                    # the same link with a version-3 host
            dev.request({"t": "reset_state"})
            row["v3_spikes_seconds_per_s"] = round(timed(
                lambda: dev.stream_spikes(query[:n])) / piece_s, 1)
            dev.request({"t": "reset_state"})
            row["v3_audio_seconds_per_s"] = round(timed(lambda: dev.stream_pcm(piece))
                                                  / piece_s, 1)
            dev.version = 2                    # and with a version-2 host
            dev.request({"t": "reset_state"})
            row["v2_spikes_seconds_per_s"] = round(timed(
                lambda: dev.stream_spikes(query[:n], chunk_ms=5)) / piece_s, 1)
            dev.request({"t": "reset_state"})
            row["v2_audio_seconds_per_s"] = round(timed(
                lambda: dev.stream_pcm(piece, chunk=32)) / piece_s, 1)
        out[name] = row
        dev.close()
    out["lossy_answer_equals_clean"] = scores["lossy"] == scores["clean"]
    return out


_CHILD = r"""
import sys
from tessera.firmware_sim.device import Firmware
from tessera.protocol.framing import encode_frame
from tessera.protocol.messages import encode
fw = Firmware(flash_path=sys.argv[1])
if fw.chip is None:
    fw.install(open(sys.argv[2], "rb").read())
i = [1]
def req(m):
    i[0] += 1
    fw.receive(encode_frame(encode(dict(m, id=i[0]))))
req({"t": "save"})          # an image exists before the first kill: a later failure is damage
print("ready", flush=True)
n = 0
while True:
    n += 1
    label = "gen%d" % n
    if fw.chip.classes():
        fw.chip.forget(fw.chip.classes()[0])
    fw.chip.readout.names[0] = label
    req({"t": "save"})
"""


def kill_during_save(model_path: str, kills: int = 100, seed: int = 0) -> dict:
    """SIGKILL a process that saves its flash image in a loop, ``kills`` times."""
    from ..firmware_sim import flash

    rng = np.random.default_rng(seed)
    tmp = tempfile.mkdtemp(prefix="tessera-flash-")
    path = os.path.join(tmp, "flash.img")
    ok = bad = 0
    generations = []
    t0 = time.perf_counter()
    for k in range(kills):
        cmd, cwd = child_python("-c", _CHILD, path, model_path)
        p = subprocess.Popen(cmd, cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        p.stdout.readline()                                  # loaded; saving from now on
        time.sleep(float(rng.uniform(0.0, 0.15)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        try:
            image = flash.load(path)
            fw = Firmware(flash_path=path)
            assert image is not None and fw.chip is not None
            generations.append(int(image.get("generation", 0)))
            ok += 1
        except Exception:                                    # noqa: BLE001 - a corrupt image
            bad += 1
    return dict(bench="kill_during_save", kills=kills, images_loaded=ok, corrupt=bad,
                generations_seen=len(set(generations)), seconds=round(time.perf_counter() - t0, 1))


def link_budget(model_path: str, seconds: float = 5.0, baud: int = 921600) -> dict:
    """Bytes per second on the wire (framing and message headers included) of real-time
    streams in 100 ms messages."""
    from ..runtime.chip import Chip
    from .bench import speechlike_signal

    chip = Chip.load(model_path)
    ms = int(seconds * 1000)
    pcm = speechlike_signal(seconds, 1)
    full = chip.cochlea  # the model's channels only; the full 700 come from a 700-channel bank
    from ..runtime.frontend import Cochlea, FrontendSpec

    frames700 = Cochlea(FrontendSpec()).encode(pcm)
    frames_model = full.encode(pcm)
    link = baud / 10.0
    out = dict(bench="link_budget", baud=baud, link_bytes_per_s=link, seconds=seconds,
               spikes_per_s_700=round(float(frames700.sum()) / seconds),
               spikes_per_s_model=round(float(frames_model.sum()) / seconds))
    for name, frames in (("700ch", frames700), ("model_ch", frames_model)):
        for enc in ("events", "bitmap"):
            total = 0
            for i in range(0, ms, 100):
                part = frames[i:i + 100]
                data = encode_events(part) if enc == "events" else encode_bitmap(part)
                total += len(encode_frame(encode({"t": "stream_spikes", "id": 4000000000,
                                                  "encoding": enc, "steps": 100, "data": data})))
            bps = total / seconds
            out[f"spikes_{name}_{enc}_bytes_per_s"] = round(bps)
            out[f"spikes_{name}_{enc}_headroom"] = round(link / bps, 2)
    total = 0
    for i in range(0, pcm.size, 1600):
        total += len(encode_frame(encode({"t": "stream_audio", "id": 4000000000, "rate": SAMPLE_RATE,
                                          "pcm": pcm[i:i + 1600].tobytes()})))
    out["audio_bytes_per_s"] = round(total / seconds)
    out["audio_headroom"] = round(link / (total / seconds), 2)
    return out


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (default: this one) in MB, from /proc."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def garbage_flood(megabytes: float = 5.0, seed: int = 0, wait_s: float = 30.0) -> dict:
    """Random bytes written to ``tessera sim --pty`` in 64 KB chunks (its answers read as they
    come), then one ``ping``: how long after the flood the ``pong`` arrives, and how many bytes
    of answers the flood cost the link."""
    import serial

    from ..protocol.framing import FrameDecoder

    with pty_sim() as path:
        port = serial.serial_for_url(path, timeout=0.01)
        junk = np.random.default_rng(seed).integers(0, 256, int(megabytes * 1e6),
                                                    dtype=np.uint8).tobytes()
        t0 = time.perf_counter()
        answered = 0
        for i in range(0, len(junk), 65536):
            port.write(junk[i:i + 65536])
            answered += len(port.read(65536))
        t_end = time.perf_counter()
        port.write(b"\x00" + encode_frame(encode({"t": "ping", "id": 4242})))
        dec, after = FrameDecoder(), None
        while after is None and time.perf_counter() - t_end < wait_s:
            data = port.read(65536)
            answered += len(data)
            if any(decode(b).get("id") == 4242 for b in dec.feed(data)):
                after = time.perf_counter() - t_end
        port.close()
    return dict(bench="garbage_flood", megabytes=megabytes, flood_s=round(t_end - t0, 2),
                answer_after_flood_s=None if after is None else round(after, 3),
                answer_bytes=answered, resynchronised=after is not None and after <= 1.0)


def pty_enroll(model_path: str, wav: str | None = None, repeats: int = 10) -> dict:
    """Enroll round trip through ``tessera sim --pty`` with the client over the pty."""
    from ..protocol.client import Device

    tmp = tempfile.mkdtemp(prefix="tessera-pty-")
    with pty_sim(os.path.join(tmp, "flash.img")) as path:
        dev = Device.open(path)
        dev.load(model_path)
        ms = dev.info_cache["model"]
        frames = synthetic_frames(ms["channels"], 1000, 8, 0)
        times, stream_times = [], []
        for k in range(repeats):
            dev.request({"t": "reset_state"})
            t0 = time.perf_counter()
            dev.stream_spikes(frames)
            t1 = time.perf_counter()
            dev.request({"t": "enroll", "label": f"w{k % 4}"})
            times.append(time.perf_counter() - t1)
            stream_times.append(t1 - t0)
        ping = []
        for _ in range(20):
            t2 = time.perf_counter()
            dev.request({"t": "ping"})
            ping.append(time.perf_counter() - t2)
        dev.close()
        return dict(bench="pty_enroll", device=path, repeats=repeats,
                    enroll_round_trip_ms=round(float(np.median(times)) * 1e3, 2),
                    stream_1s_utterance_ms=round(float(np.median(stream_times)) * 1e3, 1),
                    ping_round_trip_ms=round(float(np.median(ping)) * 1e3, 3))
