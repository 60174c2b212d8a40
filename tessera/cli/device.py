"""`tessera sim|device|protocol-test`: the simulated board and any device behind the protocol."""


from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from tessera.protocol.messages import ENVELOPE
from tessera.runtime.errors import InputError

from .common import NO_PROGRESS, emit, positive_int, probability, progress_bar


def _label_list(labels: list[str]) -> str:
    """Labels for a line of text, each quoted (a label may hold commas and spaces)."""
    return ", ".join(json.dumps(lab, ensure_ascii=False) for lab in labels) or "(none)"


def open_session(args):
    """The host session (:class:`tessera.host.Session`: one hello) at ``--port``."""
    from tessera.host import Session

    return Session.open(getattr(args, "port", None) or args.url,
                        baudrate=getattr(args, "baud", 921600), timeout=args.timeout)


def cmd_device(args: argparse.Namespace) -> int:
    action = args.device_command
    if action == "stream":
        return _stream(args)
    if action == "infer" and os.path.isdir(args.wav):
        return _infer_folder(args)
    with open_session(args) as s:
        r, human = _ACTIONS[action](s, args)
    emit(args, {k: v for k, v in r.items() if k not in ENVELOPE}, human)
    return 0


def _info(s, args) -> tuple[dict, str]:
    r, m = s.info, s.info.get("model")
    return r, (f"{r['firmware']}, protocol {r['version']}, up to {r['max_rows']}x"
               f"{r['max_cols']} tiles of {r['max_tile']}, models of up to "
               f"{r['max_classes']} classes"
               + (f"; model {m['bytes']} bytes, room for "
                  f"{m.get('max_classes', r['max_classes'])} words, {len(m['classes'])} enrolled"
                  + (": " + _label_list(m["classes"]) if m["classes"] else "")
                  if m else "; no model"))


def _load(s, args) -> tuple[dict, str]:
    r = s.dev.load(args.model)
    return r, f"loaded {args.model} ({r['bytes']} bytes)"


def _enroll(s, args) -> tuple[dict, str]:
    r = s.teach(args.label, *args.wavs)
    for w in r.get("warnings", []):
        print(f"tessera: warning: {w}", file=sys.stderr)
    if args.save:
        s.dev.save()
    return r, (f"enrolled {args.label!r} from {len(args.wavs)} recording(s) in {r['ms']} ms on "
               f"the device ({r.get('shots', '?')} shots of it so far); words "
               f"{_label_list(r['classes'])}")


def _infer(s, args) -> tuple[dict, str]:
    from tessera.host.session import load_recording
    from tessera.runtime.constants import SAMPLE_RATE

    pcm = load_recording(args.wav)
    if pcm.size > 2 * SAMPLE_RATE:
        print(f"tessera: warning: {args.wav} is {pcm.size / SAMPLE_RATE:.1f} s long; infer "
              f"answers for its first second only (the model's window): for the words of a "
              f"long recording use tessera device stream", file=sys.stderr)
    with _gates(s.dev, args):
        r = {k: v for k, v in s.ask(pcm).items() if k != "answer"}
        return r, "" if args.json else f"{args.wav}: " + answer_text(r, s.dev.params())


def _threshold(s, args) -> tuple[dict, str]:
    if args.value is not None:
        s.dev.set_param("threshold", _cosine(args.value))
        if args.save:
            s.dev.save()
    r = s.dev.params()
    mode = {None: "the model file's", "person": "fitted to this person"}.get(r["threshold"],
                                                                             "set by hand")
    return r, (f"'none of these' below cosine {r['threshold_in_use']:.3f}, {mode} (the model's: "
               f"{r['model_threshold']:.3f}"
               + (f"; {r.get('negatives', 0)} untaught recording(s) known"
                  if r["threshold"] == "person" else "")
               + f"); answers also need a probability of at least "
                 f"{100 * r.get('min_confidence', 0):.0f} %"
               + (_person_trade(r["person"]) if r.get("person") else ""))


def _person_trade(fit: dict) -> str:
    """What threshold "person" traded against the model's, as the board says."""
    return (f"\nperson: {fit['limited_by']}; refuses {fit['untaught_refused']} of "
            f"{fit['untaught']} untaught scores (the model's threshold: "
            f"{fit['untaught_refused_by_model']}); keeps {fit['own_kept']} of {fit['own']} "
            f"held-out shots of taught words (the model's: {fit['own_kept_by_model']})")


def _untaught(s, args) -> tuple[dict, str]:
    r = s.clear_untaught() if args.clear else s.untaught(*_wav_list(args.wavs))
    return r, (f"{r['negatives']} untaught recording(s) known to the device; 'none of these' "
               f"below cosine {r['threshold']:.3f}"
               + ("" if s.dev.params()["threshold"] == "person" else
                  " (the device's threshold is not 'person': set it with tessera device "
                  "threshold person to use them)"))


def _classes(s, args) -> tuple[dict, str]:
    r = {"classes": s.words()}
    return r, "\n".join(r["classes"]) or "(none enrolled)"   # one per line: a label may hold
    #                                                          commas and spaces


def _forget(s, args) -> tuple[dict, str]:
    r = s.forget(args.label)
    if args.save:
        s.dev.save()
    return r, f"forgot {args.label!r}; words {_label_list(r['classes'])}"


def _rename(s, args) -> tuple[dict, str]:
    r = s.rename(args.label, args.to)
    if args.save:
        s.dev.save()
    return r, f"{args.label!r} is now {args.to!r}; words {_label_list(r['classes'])}"


def _stats(s, args) -> tuple[dict, str]:
    r = s.dev.stats()
    return r, _stats_text(r)


_ACTIONS = {"info": _info, "load": _load, "enroll": _enroll, "infer": _infer,
            "threshold": _threshold, "untaught": _untaught, "classes": _classes,
            "forget": _forget, "rename": _rename, "stats": _stats}




def _stats_text(r: dict) -> str:
    d, c = r.get("device", {}), r.get("chip", {})
    dec = d.get("decoder", {})
    bad = ", ".join(f"{k} {v}" for k, v in dec.items() if v) or "none"
    hops = c.get("routing_events_per_hop") or {}
    lines = [f"device: {d.get('requests', 0)} requests in {d.get('frames', 0)} frames "
             f"({d.get('bad_frames', 0)} bad; decoder errors: {bad}), "
             f"{d.get('duplicates', 0)} duplicates, {d.get('errors', 0)} errors, "
             f"{d.get('boots', 0)} boot(s), flash generation {d.get('flash_generation', 0)}"
             + (f"; boot error: {d['boot_error']}" if d.get("boot_error") else "")]
    if c:
        lines.append(f"chip: {c.get('steps', 0)} steps, {c.get('spikes', 0)} spikes, "
                     f"{c.get('synops', 0)} synaptic operations, routing events per hop "
                     + (", ".join(f"{h}: {n}" for h, n in hops.items()) or "none"))
    return "\n".join(lines)


def _cosine(text: str) -> float | str:
    """A threshold argument: a cosine, 'model' (the model file's) or 'person' (fitted to the
    person at every enroll, forget and untaught)."""
    if text in ("model", "person"):
        return text
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"threshold must be a cosine in [-1, 1], 'model' or 'person', got "
                         f"{text!r}") from None
    if not -1.0 <= v <= 1.0:
        raise InputError(f"threshold must be a cosine in [-1, 1], got {v:g}")
    return v


@contextlib.contextmanager
def _gates(dev, args):
    """The decision rule's gates (``--threshold``, ``--min-confidence``) for one command, the
    device's own restored afterwards."""
    if args.threshold is None and args.min_confidence is None:
        yield                                   # no round trip when nothing is changed
        return
    before = dev.params()
    if args.threshold is not None:
        dev.set_param("threshold", _cosine(args.threshold))
    if args.min_confidence is not None:
        dev.set_param("min_confidence", args.min_confidence)
    try:
        yield
    finally:
        if args.threshold is not None:
            old = before["threshold"]
            dev.set_param("threshold", "model" if old is None else old)
        if args.min_confidence is not None:
            dev.set_param("min_confidence", before["min_confidence"])


def _event_line(e: dict) -> str:
    return (f"{e['start_ms'] / 1000:7.2f}-{e['end_ms'] / 1000:.2f} s  {e['label']}  "
            f"(probability {100 * e['confidence']:.0f} % that it is right)")


def _stream(args) -> int:
    """Continuous detection on the device (the host session's stream): a recording, an
    SHD-style spike file, or the microphone."""
    if not args.mic and not args.wav:
        raise InputError("tessera device stream needs a WAV or h5 file (or --mic)")
    feed = None
    if args.wav and args.wav.endswith((".h5", ".hdf5")):
        frames = _spike_sample(args.wav, args.index)

        def feed(dev, got):
            dev.stream_spikes(frames, realtime=not args.fast, on_event=got)
    elif not args.wav:
        feed = _stream_mic

    def show(e):
        if not args.json:
            print(_event_line(e), flush=True)

    with open_session(args) as s, _gates(s.dev, args):
        out = s.stream(args.wav if feed is None else None, on_event=show,
                       realtime=not args.fast, feed=feed,
                       params={"hop_ms": args.hop_ms, "trigger": args.trigger})
    events = out["events"]
    r = dict(events=events, stream_ms=out["stream_ms"], source=args.wav or "mic")
    if args.json:
        print(json.dumps(r))
    else:
        words = sorted({e["label"] for e in events})
        print(f"{len(events)} word(s) detected in {out['stream_ms'] / 1000:.1f} s of "
              f"{r['source']}" + (": " + ", ".join(words) if words else ""))
    return 0


def _spike_sample(path: str, index: int):
    """One sample of an SHD-layout h5 file as 1 ms frames (700 channels)."""
    from tessera.runtime.spikes import events_to_frames
    from tessera.trainer.data.readers import read_spike_h5

    data = read_spike_h5(path)
    if not 0 <= index < len(data):
        raise InputError(f"--index {index} is outside the file's {len(data)} samples", source=path)
    times, units = data.sample(index)
    ms = int(times.max(initial=0) * 1000) + 2
    return events_to_frames(times, units, data.channels, ms)


def answer_text(r: dict, params: dict) -> str:
    """A device's answer as a person reads it: the word and the probability that it is right,
    or "none" with what was nearest and why it was not taken."""
    best = r.get("best")
    cos = r["scores"].get(best) if best is not None else None
    thr = params.get("threshold_in_use")
    p = f"{100 * r['confidence']:.0f} %"
    if r["label"] is not None:
        return (f"{r['label']} (probability {p} that this is right; cosine {cos:.3f} with its "
                f"shots, accepted at {thr:.3f} or more)")
    floor = params.get("min_inputs", 0)
    if r.get("inputs", floor) < floor:
        why = (f"too quiet: {r['inputs']} input events, under the silence floor of {floor}")
    elif cos is not None:
        why = f"the nearest word, {best!r}, is at cosine {cos:.3f}, under the threshold {thr:.3f}"
    else:
        why = "no word is enrolled"
    return f"none ({why}; probability {p} that 'none' is right)"


def _wav_list(paths: list[str]) -> list[str]:
    """WAV files named, and the WAVs of folders named (sorted)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(".wav"))
            if not found:
                raise InputError("no .wav file in this folder", source=p)
            out += found
        else:
            out.append(p)
    if not out:
        raise InputError("untaught needs WAV files or a folder of them (or --clear)")
    return out


def _infer_folder(args) -> int:
    """Every recording of a folder (the host's folder rule, :mod:`tessera.host.recordings`):
    accuracy per word, untaught words accepted, the confusion matrix (the host's one scoring
    rule, :func:`tessera.host.confusion`)."""
    from tessera.host import confusion, folder_recordings

    items = folder_recordings(args.wav)
    rows = []
    with open_session(args) as s, _gates(s.dev, args):
        enrolled = s.words()
        if not enrolled:
            raise InputError("the device has no enrolled words: enroll some first")
        bar = progress_bar(len(items), args)
        for path, word in items:
            r = s.ask(path)
            rows.append((path, None if word is None else args.prefix + word, r["answer"],
                         r["confidence"]))
            bar.update(1)
        bar.close()
    r = confusion([(t, a) for _, t, a, _ in rows], enrolled)
    r["results"] = [dict(path=p, truth=t, answer=a, confidence=c) for p, t, a, c in rows]
    extra = sum(t is None for _, t, _, _ in rows)
    if args.plot:
        from tessera.tools.plots import confusion_png

        r["plot"] = confusion_png(args.plot, r["matrix"], r["rows"], r["cols"],
                                  title=f"{args.wav}: {100 * (r['accuracy'] or 0):.1f} % on "
                                        f"enrolled words")
    acc = "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f} %"
    fa = "" if r["false_accepts"] is None else f", {100 * r['false_accepts']:.1f} % accepted as a word"
    lines = [f"{args.wav}: {r['asked']} recordings of enrolled words, accuracy {acc}; "
             f"{r['not_taught_asked']} of other words{fa}"
             + (f" ({extra} of them from _other/)" if extra else "")]
    for w, v in r["per_word"].items():
        lines.append(f"  {w:>12}: {v['right']}/{v['asked']}")
    lines.append("  confusion (rows: truth, columns: answer): " + " ".join(r["cols"]))
    for t, row in zip(r["rows"], r["matrix"]):
        lines.append(f"  {t:>12}: " + " ".join(f"{x:3d}" for x in row))
    emit(args, r, "\n".join(lines))
    return 0


def _stream_mic(dev, show) -> None:
    """Live microphone -> device in real time until Ctrl-C."""
    from tessera.host.microphone import blocks

    mic = blocks()
    block = next(mic)                                      # the microphone opened
    print("listening (Ctrl-C to stop)", file=sys.stderr)
    try:
        while True:
            dev.stream_pcm(block, on_event=show)
            block = next(mic)
    except KeyboardInterrupt:
        pass


def _add_device(sub, add) -> None:
    dv = sub.add_parser("device", help="talk to a device (the simulator or a board)")
    dsub = dv.add_subparsers(dest="device_command", required=True, metavar="ACTION")

    def dev_cmd(name, help_):
        sp = add(dsub, name, cmd_device, help_)
        sp.add_argument("--port", required=True,
                        help="pyserial URL: /dev/ttyUSB0, socket://127.0.0.1:7700, a pty path, "
                             "or sim://?model=M.tsr&flash=F.img (the simulator in this process: "
                             "without flash its words live only as long as this one command)")
        sp.add_argument("--baud", type=positive_int, default=921600, help="bits per second")
        sp.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for each answer before a retry (default 2)")
        return sp

    dev_cmd("info", "firmware, capabilities and the loaded model")
    dev_cmd("load", "send a .tsr model (chunks with CRC, atomic commit)").add_argument(
        "model", help="a .tsr file (tessera export)")
    de = dev_cmd("enroll", "teach a word from one (or more) recordings: one readout update")
    de.add_argument("--label", required=True, help="the word's name on the device")
    de.add_argument("wavs", nargs="+", metavar="WAV", help="its recordings: one is one shot")
    de.add_argument("--save", action="store_true",
                    help="write the whole flash image now (parameters too); the word itself "
                         "is already in flash when the device's autosave is on, its default")
    di = dev_cmd("infer", "recognise one recording, or every WAV of a folder (FSDD names or one "
                          "sub-folder per word): accuracy per word and a confusion matrix")
    di.add_argument("wav", metavar="WAV|DIR", help="a recording, or a folder of them")
    di.add_argument("--prefix", default="", help="folder mode: prepend this to each file's word "
                                                 "to get its label (e.g. d for d0..d9)")
    di.add_argument("--plot", metavar="PNG", help="folder mode: confusion matrix plot")
    di.add_argument("--threshold", metavar="COS|model|person",
                    help="'none of these' below this cosine for this command (default: the "
                         "device's)")
    di.add_argument("--min-confidence", type=probability, metavar="P",
                    help="answer only when at least this likely right, for this command "
                         "(default: the device's min_confidence, 0 unless set)")
    di.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    ds = dev_cmd("stream", "continuous detection: slide windows over a recording, an SHD-style "
                           "spike file or the microphone; print each word as it is detected")
    ds.add_argument("wav", nargs="?", metavar="WAV|H5", help="a WAV, or an h5 file in the SHD "
                                                             "layout (with --index)")
    ds.add_argument("--index", type=int, default=0, help="which sample of the h5 file (default 0)")
    ds.add_argument("--mic", action="store_true", help="live microphone (the mic extra)")
    ds.add_argument("--threshold", metavar="COS|model|person",
                    help="'none of these' below this cosine for this stream (default: the "
                         "device's)")
    ds.add_argument("--min-confidence", type=probability, metavar="P",
                    help="report only words at least this likely right, for this stream "
                         "(default: the device's min_confidence, 0 unless set; the same gate "
                         "answers infer)")
    ds.add_argument("--trigger", choices=["onset", "hop"], default="onset",
                    help="open a window at each sound onset (default) or every --hop-ms")
    ds.add_argument("--hop-ms", type=positive_int, default=250,
                    help="with --trigger hop: a new window every this many ms (default 250; "
                         "windows last the model's 1 s)")
    ds.add_argument("--fast", action="store_true", help="send the file as fast as the link "
                                                        "allows instead of in real time")
    dt = dev_cmd("threshold", "show or set the device's 'none of these' threshold (a cosine)")
    dt.add_argument("value", nargs="?", metavar="COS|model|person",
                    help="new threshold; 'model' for the model file's; 'person' to let the "
                         "device fit it to this person at every enroll (above what the taught "
                         "words score against each other and what untaught recordings score)")
    du = dev_cmd("untaught", "tell the device which recordings are words the person did NOT "
                             "teach (e.g. an _other folder): threshold 'person' sits above them")
    du.add_argument("wavs", nargs="*", metavar="WAV|DIR", help="recordings, or folders of them")
    du.add_argument("--clear", action="store_true", help="forget every untaught recording")
    dt.add_argument("--save", action="store_true", help="also write the device's flash")
    dev_cmd("classes", "list the enrolled words")
    df = dev_cmd("forget", "remove an enrolled word")
    df.add_argument("--label", required=True, help="the word to forget")
    df.add_argument("--save", action="store_true",
                    help="write the whole flash image now (parameters too); the removal itself "
                         "is already in flash when the device's autosave is on, its default")
    dr = dev_cmd("rename", "call a taught word by another label (its shots are kept)")
    dr.add_argument("--label", required=True, help="the word as it is taught")
    dr.add_argument("--to", required=True, help="its new label")
    dr.add_argument("--save", action="store_true",
                    help="write the whole flash image now (the new label itself is already in "
                         "flash when the device's autosave is on, its default)")
    dev_cmd("stats", "device and chip counters")


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    _add_device(sub, add)
