"""`tessera demo`: the main job, end to end (the library is :mod:`tessera.demo`)."""


from __future__ import annotations

import argparse
import json
import os
import sys

from tessera.runtime.errors import InputError

from .common import (NO_PROGRESS, default_model_path, default_tsr, emit, fraction, json_default,
                     positive_int)


def _model_file(args, say) -> str:
    """The model as a 4-bit ``.tsr``: exported from ``--model`` (a model bundle, torch) or the
    ``.tsr`` given; without torch, the package's factory export of the default model."""
    if args.model.endswith(".tsr"):
        return args.model
    try:
        from tessera.trainer.exchange.export import ExportConfig, export_model
        from tessera.trainer.learning.storage import load_model
    except ImportError:
        say("torch is not installed: using the package's 4-bit export of the default model")
        return default_tsr()
    path = os.path.join(args.out, "model-4bit.tsr")
    r = export_model(load_model(args.model), path, ExportConfig(weight_bits=4))
    say(f"exported {args.model} to {path}: {r['bytes']} bytes at 4-bit weights")
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    from tessera import demo
    from tessera.demo.report import write_report

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError("--out must be a folder; this is a file", source=args.out)
    if args.mic and args.words:
        raise InputError("give --words DIR or --mic, not both")
    os.makedirs(args.out, exist_ok=True)
    quiet = args.no_progress and args.json
    stream = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        if not quiet:
            print(line, file=stream, flush=True)

    model = _model_file(args, say)
    if args.words:
        ds = demo.folder_set(args.words)
    elif args.mic:
        ds = demo.mic_set([w.strip() for w in args.mic_words.split(",") if w.strip()],
                          prompt=lambda m: print(m, file=sys.stderr, flush=True))
    else:
        say("synthesizing Spanish words in voices the model never heard ...")
        ds = demo.synthesized_set(args.out, seed=args.seed, other_voices=args.other_voices,
                                  progress=not args.no_progress and sys.stderr.isatty())
    say(ds.description)
    s = demo.run_demo(ds, model, args.out, realtime=not args.no_realtime, on_line=say,
                      seed=args.seed, min_confidence=args.min_confidence)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=1, default=json_default)
    s["report"] = write_report(args.out, s, json_default)
    emit(args, s, "\n".join(_summary_lines(s)))
    return 0


def _summary_lines(s: dict) -> list[str]:
    t = s["table"]
    lines = ["", f"{'word':<14}{'asked':>6}{'right':>7}{'wrong':>7}{'none':>6}{'accuracy':>10}"]
    for r in t["per_word"]:
        lines.append(f"{r['word']:<14}{r['asked']:>6}{r['right']:>7}{r['wrong']:>7}"
                     f"{r['none']:>6}{100 * r['accuracy']:>9.0f}%")
    c = t["confusion"]
    width = max(len(x) for x in c["cols"] + c["rows"]) + 1
    lines += ["", "confusion (rows: said, columns: answer)",
              " " * width + "".join(f"{x:>{width}}" for x in c["cols"])]
    for name, row in zip(c["rows"], c["matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    a, link = s["activity"], s["link"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.0f} %"

    lines += ["",
              f"enrolled words: {t['right']} of {t['asked']} right ({pct(t['accuracy'])}; "
              f"the shot's voice {pct(t['accuracy_same_voice'])}, other voices "
              f"{pct(t['accuracy_other_voices'])})",
              f"words not taught: {t['not_taught_rejected']} of {t['not_taught_asked']} "
              f"answered 'none of these'",
              f"answer latency after the last sample: median {t['latency_ms']['median']:.0f} ms, "
              f"max {t['latency_ms']['max']:.0f} ms",
              f"link: {link['bytes_sent']} bytes to the board, {link['bytes_received']} back "
              f"(model load {s['load']['bytes_sent']}, {link['retries']} retries)",
              f"chip: {a['synops_per_s']} synaptic operations and {a['spikes_per_s']} spikes "
              f"per second of audio",
              f"report: {s['report']}"]
    if s.get("shots_curve"):
        lines.insert(-1, "accuracy against shots (local chip, the board's rule, shots drawn "
                         "at random; the nearest word alone in brackets): " + ", ".join(
                             f"{c['shots']}: {100 * c['accuracy']:.0f} % "
                             f"({100 * c['accuracy_nearest']:.0f} %)"
                             for c in s["shots_curve"]))
    return lines


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    d = add(sub, "demo", cmd_demo,
            "the main job: teach the simulated board new words over its serial port, one "
            "utterance each, ask it held-out ones, write an HTML report")
    d.add_argument("--out", default="tessera-demo", help="report folder")
    d.add_argument("--model", default=default_model_path(),
                   help="a model bundle (exported here at 4 bits) or a .tsr; default: the committed "
                        "default model")
    d.add_argument("--words", metavar="DIR",
                   help="your recordings: one sub-folder per word (or files named by their "
                        "word: lamp1.wav, 3_george_0.wav), the first of each word is the one "
                        "shot; a sub-folder _other holds words not to teach")
    d.add_argument("--mic", action="store_true",
                   help="record the shots and the questions from the microphone (mic extra)")
    d.add_argument("--mic-words", default="yes,no,lights,music,stop",
                   help="the words --mic asks you to say, comma-separated")
    d.add_argument("--other-voices", type=positive_int, default=1,
                   help="synthesized words: how many more unheard voices ask each taught word")
    d.add_argument("--seed", type=int, default=0, help="which unheard voice is the user's")
    d.add_argument("--min-confidence", type=fraction, default=None, metavar="P",
                   help="answers and detections need at least this calibrated probability of "
                        "being right (the device parameter min_confidence; default: the "
                        "device's, 0)")
    d.add_argument("--no-realtime", action="store_true",
                   help="stream as fast as the link goes instead of at the speed of speech")
    d.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
