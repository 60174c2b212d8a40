"""The ``tessera`` command: one entry point, one subcommand per job.

Every subcommand prints a human summary, or with ``--json`` exactly one JSON object on stdout
(progress bars go to stderr). Bad input ends with a one-line ``tessera: error: ...`` and exit
code 2; set ``TESSERA_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tessera.runtime.errors import InputError, TesseraError

__all__ = ["main"]


def _emit(args: argparse.Namespace, result: dict, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result, default=_jsonable))
    else:
        print(human)


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# ---------------------------------------------------------------- corpus
def _corpus_config(args: argparse.Namespace):
    from tessera.trainer.corpus import PRESETS, SHD_WORDS, CorpusConfig, parse_words

    kw = dict(PRESETS[args.preset])
    kw["seed"] = args.seed
    words = kw.pop("words", SHD_WORDS)
    if args.no_digits:
        words = tuple(w for w in words if w not in SHD_WORDS)
    if args.words:
        words = tuple(words) + parse_words(args.words)
    if not words:
        raise TesseraError("no words: --no-digits needs --words")
    kw["words"] = words
    for key in ("speakers", "repeats"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    kw["keep_audio"] = args.keep_audio
    return CorpusConfig(**kw)


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from tessera.trainer.corpus import build_corpus

    cfg = _corpus_config(args)
    out = args.out or f"corpus-{args.preset}.h5"
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    summary = build_corpus(out, cfg, workers=args.workers, progress=not args.no_progress,
                           preset=args.preset)
    human = (f"wrote {summary['path']}: {summary['utterances']} utterances, {summary['classes']} "
             f"classes, {summary['speakers']} speakers (train/val/test "
             f"{'/'.join(str(v) for v in summary['split_speakers'].values())}), "
             f"{summary['audio_seconds']} s of audio, {summary['spikes_per_utterance']} spikes per "
             f"utterance, in {summary['seconds']} s on {summary['workers']} workers")
    _emit(args, summary, human)
    return 0


def _info_lines(info: dict) -> list[str]:
    lines = [f"{info['source']}: {info['utterances']} utterances, {info['classes']} classes, "
             f"{info['speakers']} speakers, {info['channels']} channels"]
    if "spikes_per_utterance" in info:
        lo, hi = info["spikes_per_utterance_p5_p95"]
        lines.append(f"  spikes per utterance {info['spikes_per_utterance']} (5-95 %: {lo}-{hi}), "
                     f"per-channel rate {info['rate_hz_per_channel_mean']} Hz mean, "
                     f"{info['rate_hz_per_channel_p99']} Hz 99th percentile")
    for name, s in info["splits"].items():
        lines.append(f"  {name:10s} {s['utterances']:6d} utterances  {s['speakers']:4d} speakers  "
                     f"{s['classes']:3d} classes")
    return lines


def cmd_corpus_info(args: argparse.Namespace) -> int:
    from tessera.trainer.data import read_any

    info = read_any(args.path, progress=not args.json).summary()
    lines = _info_lines(info) + ["  classes: " + ", ".join(info["label_names"])]
    _emit(args, info, "\n".join(lines))
    return 0


# ---------------------------------------------------------------- train / eval
def cmd_train(args: argparse.Namespace) -> int:
    from tessera.runtime.threads import set_blas_threads
    from tessera.trainer.config import QUICK, load_config
    from tessera.trainer.train import train

    overrides = (QUICK if args.quick else []) + list(args.set or [])
    if args.data:
        overrides.append(f"data.corpus={json.dumps(args.data)}")
    if args.extra_data:
        overrides.append(f"data.extra_corpora={json.dumps(args.extra_data)}")
    cfg = load_config(args.config, overrides)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        set_blas_threads(args.threads)
    s = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    lines = [f"trained {s['iterations']} iterations in {s['seconds']} s -> {args.out}/model.pt"
             + (" (stopped at the time limit)" if s["stopped_early"] else ""),
             f"  inner learning rate {s['inner_lr']}, mean firing rate {s['rate']:.4f} per step"]
    for r in s["results"]:
        lines.append(f"  {r['ways']}-way {r['shots']}-shot {r['split']}: {100 * r['accuracy']:.1f} "
                     f"± {100 * r['ci95']:.1f} % ({r['episodes']} episodes)")
    _emit(args, s, "\n".join(lines))
    return 0


def _metrics_records(model_path: str) -> list[dict]:
    """The JSONL metric log next to a model (a run's metrics.jsonl, or a committed excerpt)."""
    folder = os.path.dirname(os.path.abspath(model_path))
    for name in ("metrics.jsonl", "metrics-excerpt.jsonl"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path) as fh:
                try:
                    return [json.loads(line) for line in fh if line.strip()]
                except json.JSONDecodeError as exc:
                    raise InputError(f"bad JSON line ({exc.msg})", source=path) from None
    raise InputError("no metrics.jsonl or metrics-excerpt.jsonl next to the model",
                     source=model_path)


def cmd_eval(args: argparse.Namespace) -> int:
    from tessera.trainer.train import (
        curves, curves_png, eval_setup, evaluate_model, incremental_eval, incremental_png,
        load_model, topology_report)

    model = load_model(args.model)
    if args.weight_bits or args.write_noise or args.drift:
        from tessera.trainer.train import program_device

        program_device(model, args.weight_bits, args.write_noise, args.drift)
    setup = eval_setup(model, args.data)                 # data and features, computed once
    results = evaluate_model(model, args.data, splits=args.split, shots=args.shots, ways=args.ways,
                             episodes=args.episodes, inner_steps=args.inner_steps,
                             same_speaker=args.same_speaker, baselines=tuple(args.baselines),
                             cross_speaker=args.cross_speaker, setup=setup,
                             compare=tuple(load_model(m) for m in args.compare),
                             transfer_steps=args.transfer_steps)
    head = dict(results[0])
    head["results"] = results
    lines = [f"{model.path} (iteration {model.iteration}):"]
    if args.heatmap:
        from tessera.tools.plots import layout_heatmap_png

        c = model.core.cfg
        if c.kind != "lif":
            raise InputError(f"--heatmap: a {c.kind} core has no tile layout", source=args.model)
        w = (model.core.params["w_rec"] * model.core.masks["w_rec"]).detach().numpy()
        head["heatmap_png"] = layout_heatmap_png(
            args.heatmap, w, c.rows, c.cols, c.tile,
            title=f"{args.model}: {c.rows}x{c.cols} tiles of {c.tile} neurons")
        lines.append(f"  layout weight heatmap by tile: {args.heatmap}")
    if args.learning_curve:
        from tessera.tools.plots import learning_curve_png

        records = _metrics_records(args.model)
        head["learning_curve_png"] = learning_curve_png(args.learning_curve, records,
                                                        title=args.model)
        lines.append(f"  learning curve ({len(records)} logged records): {args.learning_curve}")
    if args.report:
        if model.core.cfg.kind != "lif":
            raise InputError(f"--report: a {model.core.cfg.kind} core has no spiking tile graph",
                             source=args.model)
        head["topology"] = topology_report(model)
        t = head["topology"]
        sw = t["small_world"]
        lines.append(f"  W_rec: {t['connections']} connections, sparsity {t['connection_sparsity']}, "
                     f"per hop {t['connections_per_hop']}; clustering {sw['clustering']} "
                     f"(random {sw['clustering_random']}), path length {sw['path_length']} "
                     f"(random {sw['path_length_random']}), small-world propensity "
                     f"{sw['small_world_propensity']}")
    if args.incremental:
        inc = incremental_eval(model, args.incremental, shots=args.shots[0])
        head["incremental"] = inc
        png = (os.path.splitext(args.curves)[0] + "-incremental.png") if args.curves \
            else "incremental.png"
        head["incremental_png"] = incremental_png(png, inc)
        lines.append(f"  class-incremental, {inc['shots']}-shot, {len(inc['enrolled'])} words: "
                     + " ".join(f"{100 * a:.0f}" for a in inc["accuracy"]) + f" % ({png})")
    if args.curves:
        c = curves(model, args.data, episodes=max(50, args.episodes // 3), setup=setup)
        head["curves"] = c
        head["curves_png"] = curves_png(args.curves, c)
        lines.append(f"  accuracy against inner steps and shots: {args.curves}")
    for r in results:
        extra = ""
        if "accuracy_unseen_queries" in r:
            extra = (f" [unseen queries {100 * r['accuracy_unseen_queries']:.1f} %, seen "
                     f"{100 * r['accuracy_seen_queries']:.1f} %]")
        lines.append(f"  {r['method']:10s} {r['ways']}-way {r['shots']}-shot {r['split']}: "
                     f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f} % ({r['episodes']} "
                     f"episodes){extra}")
    _emit(args, head, "\n".join(lines))
    return 0


# ---------------------------------------------------------------- bench
def cmd_bench_frontend(args: argparse.Namespace) -> int:
    from tessera.tools.bench import bench_frontend

    r = bench_frontend(channels=args.channels, seconds=args.seconds, repeats=args.repeats)
    human = (f"front-end, {r['channels']} channels, one core: {r['realtime_factor']}x real time "
             f"(best {r['realtime_factor_best']}x; streaming {r['stream_chunk_ms']:g} ms chunks "
             f"{r['realtime_factor_stream']}x), {r['us_per_step']} us per 1 ms step "
             f"[{r['cpu']}, {r['date']}]")
    _emit(args, r, human)
    return 0


def cmd_bench_runtime(args: argparse.Namespace) -> int:
    from tessera.tools.bench import bench_runtime

    r = bench_runtime(args.model, bits=args.bits, repeats=args.repeats, batch=args.batch)
    lines = [f"chip emulator, {r['neurons']} neurons, {r['weight_bits']}-bit weights, one core "
             f"[{r['cpu']}, {r['date']}]:",
             f"  streaming: {r['us_per_step']} us per 1 ms of input ({r['us_per_network_step']} us "
             f"per {r['bin_ms']} ms network step), {r['realtime_factor']}x real time; with the "
             f"front-end on audio {r['feed_audio_realtime_factor']}x",
             f"  dense integer matmul floor: {r['dense_int_floor_us_per_step']} us per 1 ms"]
    if "torch_us_per_step" in r:
        lines.append(f"  trainer's float torch step loop: {r['torch_us_per_step']} us per 1 ms "
                     f"(chip {r['speedup_vs_torch']}x faster)")
    lines += [f"  batched ({r['batch']} streams): {r['batch_utterances_per_s']} utterances/s",
              f"  enroll (one shot, one step): {r['enroll_ms']} ms",
              f"  model file: {r['model_bytes']} bytes at 4-bit weights "
              f"({r['model_bytes_by_bits']})"]
    _emit(args, r, "\n".join(lines))
    return 0


def cmd_bench_protocol(args: argparse.Namespace) -> int:
    from tessera.tools import protocol_bench as pb

    model = args.model or _default_tsr()
    parts = args.parts
    r = {"model": model}
    lines = []
    if "fuzz" in parts:
        f = r["fuzz"] = pb.fuzz(model, frames=args.frames)
        lines.append(f"fuzz: {f['frames']} frames ({f['mutated']} mutated): {f['crashes']} crashes, "
                     f"{f['internal_errors']} internal errors, {f['hangs']} hangs, "
                     f"{f['unanswered']} unanswered; worst {f['worst_frame_ms']} ms")
    if "lossy" in parts:
        x = r["lossy_enroll"] = pb.lossy_enroll(model, words=args.words)
        lines.append(f"lossy link ({100 * x['drop']:.1f} % dropped + {100 * x['corrupt']:.1f} % "
                     f"corrupted bytes): {x['enrollments_on_device']} of {x['words']} enrollments "
                     f"landed, exactly once: {x['exactly_once']} ({x['retries']} retries)")
    if "kill" in parts:
        k = r["kill_during_save"] = pb.kill_during_save(model, kills=args.kills)
        lines.append(f"SIGKILL during save x{k['kills']}: {k['images_loaded']} images loaded, "
                     f"{k['corrupt']} corrupt")
    if "link" in parts:
        b = r["link_budget"] = pb.link_budget(model)
        lines.append(f"link budget at {b['baud']} baud: spikes (700 ch, events) "
                     f"{b['spikes_700ch_events_bytes_per_s']} B/s ({b['spikes_700ch_events_headroom']}x"
                     f" headroom), bitmap {b['spikes_700ch_bitmap_bytes_per_s']} B/s; audio "
                     f"{b['audio_bytes_per_s']} B/s ({b['audio_headroom']}x)")
    if "pty" in parts:
        p = r["pty_enroll"] = pb.pty_enroll(model)
        lines.append(f"pty: enroll round trip {p['enroll_round_trip_ms']} ms, ping "
                     f"{p['ping_round_trip_ms']} ms, 1 s utterance streamed in "
                     f"{p['stream_1s_utterance_ms']} ms")
    from tessera.tools.bench import machine_info

    r.update(machine_info())
    _emit(args, r, "\n".join(lines))
    ok = all(r.get(k, {}).get(f, v) == v for k, f, v in (
        ("fuzz", "crashes", 0), ("fuzz", "hangs", 0), ("fuzz", "unanswered", 0),
        ("lossy_enroll", "exactly_once", True), ("kill_during_save", "corrupt", 0)))
    return 0 if ok else 1


def _default_tsr() -> str:
    """The committed default model, exported at 4 bits into the user's cache."""
    from tessera.trainer.data import default_cache_dir
    from tessera.trainer.export import ExportConfig, export_model
    from tessera.trainer.train import load_model

    path = os.path.join(default_cache_dir(), "default-4bit.tsr")
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(_default_model()):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        export_model(load_model(_default_model()), path, ExportConfig(weight_bits=4))
    return path


# ---------------------------------------------------------------- export / parity / chip-eval
def cmd_export(args: argparse.Namespace) -> int:
    from tessera.trainer.export import ExportConfig, export_model
    from tessera.trainer.train import load_model

    model = load_model(args.model)
    cfg = ExportConfig(weight_bits=args.bits, readout_bits=args.readout_bits,
                       update_bits=args.update_bits, stochastic_rounding=args.stochastic,
                       max_classes=args.max_classes)
    r = export_model(model, args.out, cfg, source=args.model)
    _emit(args, r, f"wrote {r['out']}: {r['bytes']} bytes, {r['weight_bits']}-bit weights, "
                   f"{r['routes']} tile routes, {r['connections']} recurrent connections, "
                   f"learning rate 2^{r['lr_shift']}")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from tessera.trainer.chipeval import parity

    r = parity(args.model, args.data, limit=args.limit, progress=not args.no_progress)
    _emit(args, r, f"{r['model']} on {r['utterances']} test utterances of {r['data']}: "
                   f"bit-exact fraction {r['bit_exact_fraction']} (trainer integer mode vs chip: "
                   f"{', '.join(r['checked'])})")
    return 0 if r["bit_exact_fraction"] == 1.0 else 1


def cmd_chip_eval(args: argparse.Namespace) -> int:
    from tessera.trainer.chipeval import chip_accuracy
    from tessera.trainer.train import load_model

    model = load_model(args.model)
    r = chip_accuracy(model, args.model, args.data, shots=tuple(args.shots),
                      episodes=args.episodes, weight_bits=tuple(args.bits),
                      update_bits=tuple(args.update_bits), drift=tuple(args.drift),
                      stochastic=args.stochastic, write_noise=args.write_noise,
                      progress=not args.no_progress)
    lines = [f"{args.model} through the chip, {r['ways']}-way {r['split']}, {r['episodes']} "
             f"episodes (same episodes for float and chip):",
             "  float: " + ", ".join(f"{k} {100 * v['accuracy']:.1f} ± {100 * v['ci95']:.1f} %"
                                      for k, v in r["float"].items())]
    for row in r["rows"]:
        accs = ", ".join(f"{k}-shot {100 * row[f'acc_{k}shot']:.1f} % (gap "
                         f"{100 * row[f'gap_{k}shot']:+.1f})" for k in args.shots)
        comp = {True: " (compensated)", False: " (uncompensated)", None: ""}[
            row["drift_compensation"]]
        lines.append(f"  weights {row['weight_bits']} bits, updates "
                     f"{row['update_bits'] or 'full'}, drift {row['drift_s']:g} s{comp}: {accs}")
    _emit(args, r, "\n".join(lines))
    return 0


# ---------------------------------------------------------------- sim / device / protocol-test
def cmd_sim(args: argparse.Namespace) -> int:
    from tessera.firmware_sim.sim import main_loop

    if not args.pty and not args.listen:
        raise InputError("tessera sim needs --listen socket://127.0.0.1:PORT or --pty")
    if args.model is None and not args.no_model:
        args.model = _default_tsr()
    return main_loop(args)


def _device(args):
    from tessera.protocol.client import Device

    return Device.open(args.port, baudrate=args.baud, timeout=args.timeout)


def cmd_device(args: argparse.Namespace) -> int:
    action = args.device_command
    if action == "stream" and args.mic:
        return _stream_mic(args)
    with _device(args) as dev:
        if action == "info":
            r = dev.info()
            human = (f"{r['firmware']}, protocol {r['version']}, up to {r['max_rows']}x"
                     f"{r['max_cols']} tiles of {r['max_tile']}, {r['max_classes']} classes"
                     + (f"; model {r['model']['bytes']} bytes, classes {r['model']['classes']}"
                        if "model" in r else "; no model"))
        elif action == "load":
            r = dev.load(args.model)
            human = f"loaded {args.model} ({r['bytes']} bytes)"
        elif action == "enroll":
            r = dev.enroll(args.label, *args.wavs)
            if args.save:
                dev.save()
            human = (f"enrolled {args.label!r} from {len(args.wavs)} recording(s) in {r['ms']} ms "
                     f"on the device; classes {r['classes']}")
        elif action == "stream":
            if not args.wav:
                raise InputError("tessera device stream needs a WAV (or --mic)")
            from tessera.runtime.audio import load_audio

            dev.set_param("detect", True)
            dev.request({"t": "reset_state"})
            dev.stream_pcm(load_audio(args.wav), realtime=True)
            dev.set_param("detect", False)
            r = {"events": list(dev.events)}
            human = "\n".join(f"{e['label']} ({e['confidence']:.2f})" for e in dev.events) \
                or "(no keyword detected)"
        elif action == "infer":
            r = dev.infer(args.wav)
            human = (f"{args.wav}: {r['label']} (confidence {r['confidence']:.2f}, device "
                     f"latency {r['latency_us']:.0f} us)")
        elif action == "classes":
            r = {"classes": dev.classes()}
            human = ", ".join(r["classes"]) or "(none enrolled)"
        elif action == "forget":
            r = dev.forget(args.label)
            if args.save:
                dev.save()
            human = f"forgot {args.label!r}; classes {r['classes']}"
        else:                                            # stats
            r = dev.stats()
            c = r.get("chip", {})
            human = (f"device {r['device']}; chip: {c.get('steps', 0)} steps, {c.get('spikes', 0)}"
                     f" spikes, {c.get('synops', 0)} synops, routing {c.get('routing_events_per_hop')}")
    _emit(args, r, human)
    return 0


def _stream_mic(args) -> int:
    """Live microphone -> device, in real time, until Ctrl-C; prints each keyword event."""
    try:
        import sounddevice as sd
    except ImportError:
        raise InputError("--mic needs the mic extra: pip install -e '.[mic]'") from None
    import numpy as np

    with _device(args) as dev:
        dev.set_param("detect", True)
        print("listening (Ctrl-C to stop)", file=sys.stderr)
        try:
            with sd.InputStream(samplerate=16000, channels=1, dtype="int16", blocksize=1600) as s:
                while True:
                    block, _ = s.read(1600)                  # 100 ms, as it arrives
                    dev.stream_pcm(np.asarray(block[:, 0]))
                    for e in dev.events:
                        print(json.dumps(e) if args.json else
                              f"{e['label']} ({e['confidence']:.2f})", flush=True)
                    dev.events.clear()
        except KeyboardInterrupt:
            dev.set_param("detect", False)
    return 0


def cmd_protocol_test(args: argparse.Namespace) -> int:
    from tessera.protocol.conformance import run_conformance

    r = run_conformance(args.url, args.model, timeout=args.timeout)
    lines = [f"{r['url']}: {r['passed']} passed, {r['failed']} failed"]
    for c in r["checks"]:
        lines.append(f"  {'PASS' if c['ok'] else 'FAIL'}  {c['check']}"
                     + ("" if c["ok"] else f"  ({c['error']})"))
    _emit(args, r, "\n".join(lines))
    return 0 if r["ok"] else 1


# ---------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from tessera.tools.plots import raster_png
    from tessera.trainer.corpus import PRESETS, CorpusConfig, build_corpus
    from tessera.trainer.data import read_spike_h5

    os.makedirs(args.out, exist_ok=True)
    corpus = os.path.join(args.out, "corpus-small.h5")
    cfg = CorpusConfig(**PRESETS["small"], seed=args.seed, keep_audio=True)
    built = build_corpus(corpus, cfg, progress=not args.no_progress, preset="small")
    data = read_spike_h5(corpus)
    info = data.summary()
    i = int(np.nonzero(data.labels == 7)[0][0])                        # an English "seven"
    times, units = data.sample(i)
    import h5py

    with h5py.File(corpus, "r") as h5:
        audio = h5["audio/pcm"][i].astype(np.float32) / 32768.0
    png = raster_png(os.path.join(args.out, "raster.png"), times, units, data.channels,
                     title=f"'{data.label_names[data.labels[i]]}' by "
                           f"{data.speaker_names[data.speakers[i]]}: {times.size} spikes",
                     audio=audio)
    result = dict(corpus=built, info=info, raster_png=png)
    lines = [f"tessera demo: built {corpus} in {built['seconds']} s"] + _info_lines(info)
    lines.append(f"  spike raster of one utterance: {png}")
    try:
        chip_demo = _demo_chip(data, args.out)
    except ImportError as exc:                  # the chip part needs the trained model (torch)
        chip_demo = None
        lines.append(f"  (chip demo skipped: {exc})")
    if chip_demo:
        result["chip"] = chip_demo
        lines.append(f"  chip ({chip_demo['model_bytes']} byte model, 4-bit weights): enrolled "
                     f"{len(chip_demo['words'])} words from one utterance each (one readout step, "
                     f"{chip_demo['enroll_ms']} ms each); {chip_demo['correct']} of "
                     f"{chip_demo['tested']} other utterances by unseen voices recognised "
                     f"({100 * chip_demo['accuracy']:.0f} %, chance "
                     f"{100 / len(chip_demo['words']):.0f} %)")
    _emit(args, result, "\n".join(lines))
    return 0


def _default_model() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                        "default", "model.pt")


def _demo_chip(data, out: str) -> dict:
    """Export the committed model, enroll five words on the chip from one utterance each (test
    voices), then recognise the other test utterances of those words."""
    import numpy as np

    from tessera.runtime.chip import Chip, events_to_frames
    from tessera.trainer.export import ExportConfig, export_model
    from tessera.trainer.train import load_model

    path = os.path.join(out, "model-4bit.tsr")
    size = export_model(load_model(_default_model()), path, ExportConfig(weight_bits=4))["bytes"]
    chip = Chip.load(path)
    test = np.nonzero(data.split == 2)[0]
    words = [c for c in (0, 3, 4, 11, 12) if np.any(data.labels[test] == c)]    # unseen classes
    shots, enroll_ms = {}, []
    for c in words:
        i = int(test[data.labels[test] == c][0])
        chip.reset()
        chip.run(events_to_frames(*data.sample(i), data.channels))
        enroll_ms.append(chip.enroll(data.label_names[c])["ms"])
        shots[i] = c
    correct = tested = 0
    for i in test:
        if int(i) in shots or data.labels[i] not in words:
            continue
        chip.reset()
        chip.run(events_to_frames(*data.sample(int(i)), data.channels))
        correct += chip.predict()["label"] == data.label_names[data.labels[i]]
        tested += 1
    return dict(model=path, model_bytes=size, words=[data.label_names[c] for c in words],
                enroll_ms=round(float(np.median(enroll_ms)), 2), tested=tested, correct=correct,
                accuracy=round(correct / max(tested, 1), 4))


# ---------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error format (``--help`` shows the usage)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"tessera: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from tessera import __version__

    p = _Parser(prog="tessera", description="tessera: few-shot spoken-word learning on a simulated "
                "Mosaic chip. Every command prints a summary, or one JSON object with --json.")
    p.add_argument("--version", action="version", version=f"tessera {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parser_group, name, func, help_):
        sp = parser_group.add_parser(name, help=help_, description=help_)
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sp.set_defaults(func=func)
        return sp

    corpus = sub.add_parser("corpus", help="build or inspect a speech corpus")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    b = add(csub, "build", cmd_corpus_build, "synthesize a spoken-word corpus (SHD layout h5)")
    b.add_argument("--preset", choices=["small", "default", "vocab", "novel"], default="default",
                   help="small: tests/demo; default: SHD's 20 words, 8,000 utterances; vocab: "
                        "225 other words by the default's train voices, for meta-training; "
                        "novel: 10 new words by its test voices, for enrollment tests")
    b.add_argument("--out", help="output .h5 (default corpus-PRESET.h5)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    b.add_argument("--words", help="extra words, e.g. 'en:lights,music;de:licht'")
    b.add_argument("--no-digits", action="store_true", help="leave out SHD's 20 digit classes")
    b.add_argument("--speakers", type=int, help="override the preset's speaker count")
    b.add_argument("--repeats", type=int, help="override utterances per speaker and word")
    b.add_argument("--keep-audio", action="store_true", help="store the 16 kHz audio too")
    b.add_argument("--no-progress", action="store_true")
    i = add(csub, "info", cmd_corpus_info, "classes, utterances and speakers per split")
    i.add_argument("path", help="corpus .h5, SHD/SSC .h5, a folder of official files, or WAVs")

    bench = sub.add_parser("bench", help="speed benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="TARGET")
    f = add(bsub, "frontend", cmd_bench_frontend, "cochlea front-end speed, one core")
    f.add_argument("--channels", type=int, default=700)
    f.add_argument("--seconds", type=float, default=10.0)
    f.add_argument("--repeats", type=int, default=5)

    br = add(bsub, "runtime", cmd_bench_runtime, "chip emulator speed, one core (vs torch)")
    br.add_argument("model", nargs="?", default=_default_model(),
                    help="model.pt (exported here) or a .tsr file")
    br.add_argument("--bits", type=int, default=8, help="weight bits of the timed export")
    br.add_argument("--repeats", type=int, default=20)
    br.add_argument("--batch", type=int, default=64)

    bp = add(bsub, "protocol", cmd_bench_protocol, "protocol reliability and link budget")
    bp.add_argument("--model", help="a .tsr model (default: the committed model at 4 bits)")
    bp.add_argument("--parts", nargs="+", default=["fuzz", "lossy", "kill", "link", "pty"],
                    choices=["fuzz", "lossy", "kill", "link", "pty"])
    bp.add_argument("--frames", type=int, default=100_000, help="fuzzed frames")
    bp.add_argument("--words", type=int, default=10, help="enrollments over the lossy link")
    bp.add_argument("--kills", type=int, default=100)

    x = add(sub, "export", cmd_export, "write a trained model as the chip's fixed-point file")
    x.add_argument("model", help="model.pt or checkpoint.pt")
    x.add_argument("--out", required=True, help="output .tsr file")
    x.add_argument("--bits", type=int, default=8, help="core weight bits (2..8)")
    x.add_argument("--readout-bits", type=int, default=8)
    x.add_argument("--update-bits", type=int, default=0,
                   help="enroll update resolution in bits (0: the readout's)")
    x.add_argument("--stochastic", action="store_true", help="stochastic rounding of updates")
    x.add_argument("--max-classes", type=int, default=32)

    pa = add(sub, "parity", cmd_parity, "bit-exactness of the chip against the trainer's "
             "integer mode on every test utterance (exit 1 unless 1.0)")
    pa.add_argument("model", help="a .tsr file")
    pa.add_argument("--data", required=True, help="corpus (its test split is used)")
    pa.add_argument("--limit", type=int, default=0, help="only the first N test utterances")
    pa.add_argument("--no-progress", action="store_true")

    ce = add(sub, "chip-eval", cmd_chip_eval, "few-shot accuracy through the chip's own "
             "enrollment vs the float model, over bit widths and drift")
    ce.add_argument("model", help="model.pt (exported at each bit width)")
    ce.add_argument("--data", required=True, help="corpus")
    ce.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    ce.add_argument("--episodes", type=int, default=600)
    ce.add_argument("--bits", nargs="+", type=int, default=[8], help="core weight bit widths")
    ce.add_argument("--update-bits", nargs="+", type=int, default=[0],
                    help="enroll update bit widths (rows at the last weight width; 0: full)")
    ce.add_argument("--drift", nargs="*", type=float, default=[], metavar="SECONDS",
                    help="also after these ages (last weight width, full updates), with and "
                         "without the chip's drift compensation")
    ce.add_argument("--stochastic", action="store_true")
    ce.add_argument("--write-noise", type=float, default=0.0)
    ce.add_argument("--no-progress", action="store_true")

    sm = add(sub, "sim", cmd_sim, "the firmware simulator as a serial device")
    sm.add_argument("--listen", metavar="URL", help="socket://127.0.0.1:PORT")
    sm.add_argument("--pty", action="store_true", help="open a pseudo-terminal, print its path")
    sm.add_argument("--bind-any", action="store_true", help="allow a non-loopback address")
    sm.add_argument("--flash", default="tessera-flash.img", help="persistent flash image file")
    sm.add_argument("--ram", type=int, default=512 * 1024, help="RAM budget in bytes")
    sm.add_argument("--baud", type=int, default=0, help="limit the link to this baud rate")
    sm.add_argument("--drop", type=float, default=0.0, help="fraction of received bytes dropped")
    sm.add_argument("--corrupt", type=float, default=0.0, help="fraction of bytes corrupted")
    sm.add_argument("--crash-during-save", action="store_true",
                    help="die between writing the new flash image and renaming it")
    sm.add_argument("--reboot-after", type=int, default=0, metavar="N",
                    help="power-cycle after every N-th request (RAM lost, flash kept)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--model", help="model to boot with when the flash holds none (default: the "
                                    "committed default model at 4 bits)")
    sm.add_argument("--no-model", action="store_true", help="boot without a model")

    dv = sub.add_parser("device", help="talk to a device (the simulator or a board)")
    dsub = dv.add_subparsers(dest="device_command", required=True, metavar="ACTION")

    def dev_cmd(name, help_):
        sp = add(dsub, name, cmd_device, help_)
        sp.add_argument("--port", required=True, help="pyserial URL: /dev/ttyUSB0, socket://"
                                                      "127.0.0.1:7700, loop://, a pty path")
        sp.add_argument("--baud", type=int, default=921600)
        sp.add_argument("--timeout", type=float, default=2.0)
        return sp

    dev_cmd("info", "firmware, capabilities and the loaded model")
    dev_cmd("load", "send a .tsr model (chunks with CRC, atomic commit)").add_argument("model")
    de = dev_cmd("enroll", "teach a word from one (or more) recordings: one readout update")
    de.add_argument("--label", required=True)
    de.add_argument("wavs", nargs="+", metavar="WAV")
    de.add_argument("--save", action="store_true", help="also write the device's flash")
    dev_cmd("infer", "recognise one recording").add_argument("wav")
    ds = dev_cmd("stream", "stream a recording (or the microphone with --mic) in real time")
    ds.add_argument("wav", nargs="?")
    ds.add_argument("--mic", action="store_true", help="live microphone (the mic extra)")
    dev_cmd("classes", "list the enrolled words")
    df = dev_cmd("forget", "remove an enrolled word")
    df.add_argument("--label", required=True)
    df.add_argument("--save", action="store_true")
    dev_cmd("stats", "device and chip counters")

    pt = add(sub, "protocol-test", cmd_protocol_test, "conformance suite against a device")
    pt.add_argument("url", help="pyserial URL of the device")
    pt.add_argument("--model", required=True, help="a .tsr model the suite loads")
    pt.add_argument("--timeout", type=float, default=3.0)

    t = add(sub, "train", cmd_train, "meta-train the spiking core (ANIL device rule by default)")
    t.add_argument("--config", help="TOML config file")
    t.add_argument("--data", help="corpus (sets data.corpus)")
    t.add_argument("--extra-data", action="append", metavar="CORPUS",
                   help="more words for meta-training only, e.g. a 'vocab' corpus (sets "
                        "data.extra_corpora)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a key")
    t.add_argument("--out", default="runs/default", help="run folder (checkpoints, logs)")
    t.add_argument("--quick", action="store_true", help="a short run (a few minutes)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--threads", type=int, default=0, help="torch/BLAS threads (default: all)")
    t.add_argument("--no-progress", action="store_true")
    e = add(sub, "eval", cmd_eval, "few-shot accuracy of a trained model (mean ± 95 %% CI)")
    e.add_argument("model", help="model.pt or checkpoint.pt")
    e.add_argument("--data", help="evaluate on other data (a WAV folder such as FSDD: all of it "
                                  "is test data, all its classes unseen)")
    e.add_argument("--split", nargs="+", default=["unseen"],
                   choices=["unseen", "seen", "all", "val", "train"])
    e.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    e.add_argument("--ways", type=int, default=None)
    e.add_argument("--episodes", type=int, default=600)
    e.add_argument("--inner-steps", type=int, default=1)
    e.add_argument("--same-speaker", action="store_true",
                   help="shots and queries of a class from one speaker")
    e.add_argument("--cross-speaker", action="store_true",
                   help="shots of a class from one speaker, its queries from the others")
    e.add_argument("--baselines", nargs="*", default=[], choices=["dtw"],
                   help="also score these baselines on the same episodes")
    e.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                   help="also score these trained models (e.g. the dense-SRNN, GRU and transfer "
                        "baselines in models/baselines/) on the same episodes, each with its own "
                        "adaptation rule")
    e.add_argument("--transfer-steps", type=int, default=0, metavar="N",
                   help="fine-tuning steps of compared transfer baselines (default: their config)")
    e.add_argument("--report", action="store_true",
                   help="topology: sparsity, connections per hop, small-world measures")
    e.add_argument("--curves", metavar="PNG", help="plot accuracy against inner steps and shots")
    e.add_argument("--learning-curve", metavar="PNG",
                   help="plot the meta-training curve from the metrics log next to the model")
    e.add_argument("--heatmap", metavar="PNG", help="plot |W_rec| by tile (the learned layout)")
    e.add_argument("--weight-bits", type=int, default=0,
                   help="program W_in/W_rec as RRAM with this many bits (post-training)")
    e.add_argument("--write-noise", type=float, default=0.0,
                   help="RRAM write noise, std as a fraction of the weight range, e.g. 0.05")
    e.add_argument("--drift", type=float, default=0.0, metavar="SECONDS",
                   help="conductance drift after this many seconds")
    e.add_argument("--incremental", metavar="CORPUS",
                   help="enroll the words of CORPUS one at a time (e.g. a 'novel' corpus)")

    d = add(sub, "demo", cmd_demo, "the main job: build the small corpus, summary, raster plot")
    d.add_argument("--out", default="tessera-demo", help="output folder")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TesseraError as exc:
        if os.environ.get("TESSERA_DEBUG"):
            raise
        print(f"tessera: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tessera: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
