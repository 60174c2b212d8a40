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
    kw["engine"] = args.engine
    kw["augment"] = args.augment
    if args.splits:
        kw["speaker_splits"] = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    return CorpusConfig(**kw)


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from tessera.trainer.corpus import build_corpus

    cfg = _corpus_config(args)
    out = args.out or f"corpus-{args.preset}.h5"
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    summary = build_corpus(out, cfg, workers=args.workers, progress=_show_progress(args),
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

    info = read_any(args.path, progress=_show_progress(args)).summary()
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
    s = train(cfg, args.out, resume=args.resume, progress=_show_progress(args))
    from tessera.tools.plots import learning_curve_png

    s["learning_curve_png"] = learning_curve_png(
        os.path.join(args.out, "learning-curve.png"),
        _metrics_records(os.path.join(args.out, "model.pt")), title=args.out)
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
    from tessera.tools import plots
    from tessera.trainer.storage import load_model
    from tessera.trainer.train import (curves, eval_setup, evaluate_model, incremental_eval,
                                       topology_report)

    model = load_model(args.model)
    if args.weight_bits or args.write_noise or args.drift:
        from tessera.trainer.train import program_device

        program_device(model, args.weight_bits, args.write_noise, args.drift)
    setup = eval_setup(model, args.data, _show_progress(args))   # data and features, once
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
        stem = os.path.splitext(args.curves)[0] + "-incremental" if args.curves else "incremental"
        for spk in args.incremental_speaker or [None]:
            inc = incremental_eval(model, args.incremental, shots=args.shots[0], speaker=spk)
            if spk:
                head.setdefault("incremental_by_speaker", []).append(inc)
            else:
                head["incremental"] = inc
            png = f"{stem}-{spk}.png" if spk else f"{stem}.png"
            inc["png"] = plots.incremental_png(png, inc)
            lines.append(f"  class-incremental{' by ' + spk if spk else ''}, {inc['shots']}-shot, "
                         f"{len(inc['enrolled'])} words: "
                         + " ".join(f"{100 * a:.0f}" for a in inc["accuracy"]) + f" % ({png})")
    if args.curves:
        c = curves(model, args.data, episodes=max(50, args.episodes // 3), setup=setup)
        head["curves"] = c
        head["curves_png"] = plots.curves_png(args.curves, c)
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


def cmd_bench_lauscher(args: argparse.Namespace) -> int:
    from tessera.tools.lauscher_compare import compare

    rows = compare(args.wavs, args.png)
    human = "\n".join(f"{r['file']}: tessera {r['tessera']['spikes']} spikes, "
                      f"{r['tessera']['active_channel_fraction']:.0%} of channels active; lauscher "
                      f"{r['lauscher']['spikes']} spikes, "
                      f"{r['lauscher']['active_channel_fraction']:.0%}" for r in rows)
    _emit(args, dict(files=rows, png=args.png), human + (f"\nrasters: {args.png}" if args.png
                                                         else ""))
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


def cmd_bench_device(args: argparse.Namespace) -> int:
    from tessera.tools.device_bench import enroll_path, false_detections

    url = args.port or f"sim://?model={args.model or _default_tsr()}"
    r = {"enroll": enroll_path(args.fsdd, url, speakers=tuple(args.speakers),
                               sizes=tuple(args.words))}
    if not args.no_stream:
        r["stream"] = false_detections(args.fsdd, url, minutes=args.minutes,
                                       noise_minutes=args.noise_minutes)
    lines = [f"words taught one at a time over {url}, one recording each, then every other "
             f"recording of those words:"]
    for row in r["enroll"]["rows"]:
        lines.append(f"  {row['speaker']:>8}, {row['words']:2d} words ({row['order']}): "
                     f"{100 * row['accuracy']:.1f} % of {row['queries']} right "
                     f"({row['answered_none']} answered none; the nearest word right: "
                     f"{100 * row['nearest_accuracy']:.1f} %); silence -> {row['silence']}")
    if "stream" in r:
        st = r["stream"]
        lines.append(f"  continuous detection, {st['speaker']} with {len(st['enrolled'])} words "
                     f"enrolled: {st['speech_of_other_words']['per_minute']} false detections "
                     f"per minute of other words, {st['noise']['per_minute']} per minute of "
                     f"noise; {st['enrolled_words_stream']['detected']} of "
                     f"{st['enrolled_words_stream']['words']} enrolled words detected in a stream")
    _emit(args, r, "\n".join(lines))
    return 0


def _default_tsr() -> str:
    """The committed default model at 4 bits, as the package ships it (the simulated board's
    factory model: no torch needed). ``tests/test_openset.py`` checks that it is what
    ``tessera export models/default/model.pt --bits 4`` writes."""
    from tessera.firmware_sim import factory_model

    return factory_model()


# ---------------------------------------------------------------- export / parity / chip-eval
def cmd_export(args: argparse.Namespace) -> int:
    from tessera.trainer.export import ExportConfig, export_model
    from tessera.trainer.storage import load_model

    model = load_model(args.model)
    cfg = ExportConfig(weight_bits=args.bits, readout_bits=args.readout_bits,
                       max_classes=args.max_classes, none_threshold=args.threshold)
    r = export_model(model, args.out, cfg, source=args.model)
    _emit(args, r, f"wrote {r['out']}: {r['bytes']} bytes, {r['weight_bits']}-bit weights, "
                   f"{r['routes']} tile routes, {r['connections']} recurrent connections, "
                   f"'none' below cosine {r['none_threshold']:.3f} ("
                   + (f"calibrated: {r['calibrated']})" if r["calibrated"] else "uncalibrated "
                      "default: run tessera calibrate)"))
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from tessera.trainer.chipeval import parity

    r = parity(args.model, args.data, limit=args.limit, progress=_show_progress(args))
    _emit(args, r, f"{r['model']} on {r['utterances']} test utterances of {r['data']}: "
                   f"bit-exact fraction {r['bit_exact_fraction']} (trainer integer mode vs chip: "
                   f"{', '.join(r['checked'])})")
    return 0 if r["bit_exact_fraction"] == 1.0 else 1


def cmd_chip_eval(args: argparse.Namespace) -> int:
    from tessera.trainer.chipeval import chip_accuracy
    from tessera.trainer.storage import load_model

    model = load_model(args.model)
    r = chip_accuracy(model, args.model, args.data, shots=tuple(args.shots),
                      episodes=args.episodes, weight_bits=tuple(args.bits),
                      drift=tuple(args.drift), write_noise=args.write_noise,
                      progress=_show_progress(args))
    lines = [f"{args.model} through the chip, {r['ways']}-way {r['split']}, {r['episodes']} "
             f"episodes (same episodes for float and chip):",
             "  float: " + ", ".join(f"{k} {100 * v['accuracy']:.1f} ± {100 * v['ci95']:.1f} %"
                                      for k, v in r["float"].items())]
    for row in r["rows"]:
        accs = ", ".join(f"{k}-shot {100 * row[f'acc_{k}shot']:.1f} % (gap "
                         f"{100 * row[f'gap_{k}shot']:+.1f})" for k in args.shots)
        comp = {True: " (compensated)", False: " (uncompensated)", None: ""}[
            row["drift_compensation"]]
        differ = ", ".join(f"{100 * row[f'order_differ_{k}shot']:.2f} %" for k in args.shots)
        lines.append(f"  weights {row['weight_bits']} bits, drift {row['drift_s']:g} s{comp}: "
                     f"{accs}; answers that differ from one joint enrollment: {differ}")
    _emit(args, r, "\n".join(lines))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from tessera.trainer import diagnose as D
    from tessera.trainer.storage import load_model

    model = load_model(args.model)
    progress = _show_progress(args)
    result: dict = dict(model=args.model, episodes=args.episodes)
    lines = [f"{args.model}: 5-way, one column per word (cosine), {args.episodes} episodes"]
    if not args.no_tts:
        rows = D.tts_conditions(model, episodes=args.episodes, progress=progress)
        result["tts"] = rows
        lines.append("  TTS unseen words, test voices: enrolled clean -> asked in the condition | "
                     "both in the condition (1-shot / 5-shot %)")
        for r in rows:
            a, b = r["mismatch"], r["matched"]
            lines.append(f"    {r['condition']:26s} {a['1-shot']:5.1f} / {a['5-shot']:5.1f}   | "
                         f"{b['1-shot']:5.1f} / {b['5-shot']:5.1f}")
    if args.fsdd:
        rows = D.real_voices(model, args.fsdd, episodes=args.episodes)
        result["real"] = rows
        lines.append(f"  {args.fsdd}: cross-speaker | same-speaker (1-shot / 5-shot %)")
        for r in rows:
            a, b = r["cross_speaker"], r["same_speaker"]
            lines.append(f"    {r['audio']:38s} {a['1-shot']:5.1f} / {a['5-shot']:5.1f}   | "
                         f"{b['1-shot']:5.1f} / {b['5-shot']:5.1f}")
    _emit(args, result, "\n".join(lines))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import tempfile

    from tessera.trainer.export import DEFAULT_CALIBRATION, ExportConfig, export_model
    from tessera.trainer.openset import calibrate
    from tessera.trainer.storage import load_model

    with tempfile.TemporaryDirectory() as tmp:
        tsr = os.path.join(tmp, "m.tsr")
        export_model(load_model(args.model), tsr, ExportConfig(weight_bits=args.bits),
                     calibration=dict(DEFAULT_CALIBRATION, source=None))   # not the old fit
        r = calibrate(args.model, tsr, args.data, target_fa=args.target_fa,
                      episodes=args.episodes, fsdd=args.fsdd, write=not args.dry_run,
                      progress=_show_progress(args))
    curves, points = r.pop("curves"), r.pop("points")
    if args.plot:
        from tessera.tools.plots import hits_png

        r["plot"] = hits_png(args.plot, curves, points, title=f"{args.model}: 5 words enrolled, "
                             f"one shot each; threshold {r['none_threshold']:.3f}")
    if args.json:
        r["curves"] = curves
    t = r["test"]
    lines = [f"'none of these' below cosine {r['none_threshold']:.3f}, fewer than "
             f"{r['min_inputs']} input events (silence); confidence = "
             f"sigmoid({r['calib'][0]:.2f} c1 + "
             f"{r['calib'][1]:.2f} (c1 - c2) {r['calib'][2]:+.2f})"
             + (f"; written to {r['path']}" if "path" in r else " (dry run: not written)"),
             f"  TTS unseen voices: hits {100 * t['hits']:.1f} %, false accepts: words "
             f"{100 * t['false_accepts_words']:.1f} %, noise {100 * t['false_accepts_noise']:.1f}"
             f" %; calibration error {r['test_calibration_error']:.3f}"]
    if "fsdd" in r:
        f = r["fsdd"]
        lines.append(f"  FSDD (validation): hits {100 * f['hits']:.1f} %, false accepts: words "
                     f"{100 * f['false_accepts_words']:.1f} %, noise "
                     f"{100 * f['false_accepts_noise']:.1f} %; best hits at <= 5 % false "
                     f"accepts {100 * r['fsdd_hits_at_5pct_fa']:.1f} %")
    _emit(args, r, "\n".join(lines))
    return 0


# ---------------------------------------------------------------- sim / device / protocol-test
def cmd_sim(args: argparse.Namespace) -> int:
    from tessera.firmware_sim.sim import main_loop

    if not args.pty and not args.listen:
        raise InputError("tessera sim needs --listen socket://127.0.0.1:PORT or --pty")
    if args.model is None and not args.no_model:
        args.model = _default_tsr()
    return main_loop(listen=args.listen, pty=args.pty, bind_any=args.bind_any, model=args.model,
                     flash=args.flash, ram=args.ram, seed=args.seed, drop=args.drop,
                     corrupt=args.corrupt, baud=args.baud, crash_during_save=args.crash_during_save,
                     reboot_after=args.reboot_after, json_out=args.json)


def _device(args):
    import tessera.firmware_sim  # noqa: F401  (registers the simulator's sim:// URLs)
    from tessera.protocol.client import Device

    return Device.open(getattr(args, "port", None) or args.url,
                       baudrate=getattr(args, "baud", 921600), timeout=args.timeout)


def cmd_device(args: argparse.Namespace) -> int:
    action = args.device_command
    if action == "stream":
        return _stream(args)
    if action == "infer" and os.path.isdir(args.wav):
        return _infer_folder(args)
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
                     f"on the device ({r.get('shots', '?')} shots of it so far); classes "
                     f"{r['classes']}")
        elif action == "infer":
            r = dev.infer(args.wav)
            human = (f"{args.wav}: {r['label'] or 'none'} (confidence {r['confidence']:.2f}; "
                     f"nearest {r['best']} at cosine {r['scores'][r['best']]:.3f}; device "
                     f"latency {r['latency_us']:.0f} us)")
        elif action == "threshold":
            if args.value is not None:
                dev.set_param("threshold", "model" if args.value == "model" else
                              _cosine(args.value))
                if args.save:
                    dev.save()
            r = dev.params()
            human = (f"'none of these' below cosine {r['threshold_in_use']:.3f} "
                     f"(the model's: {r['model_threshold']:.3f})")
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
            human = _stats_text(r)
    _emit(args, {k: v for k, v in r.items() if k not in PROTOCOL_FIELDS}, human)
    return 0


PROTOCOL_FIELDS = ("v", "t", "id")      # the message envelope, not the answer


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


def _cosine(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"threshold must be a cosine in [-1, 1] or 'model', got {text!r}") \
            from None
    if not -1.0 <= v <= 1.0:
        raise InputError(f"threshold must be a cosine in [-1, 1], got {v:g}")
    return v


def _event_line(e: dict) -> str:
    return (f"{e['start_ms'] / 1000:7.2f}-{e['end_ms'] / 1000:.2f} s  {e['label']}  "
            f"(confidence {e['confidence']:.2f})")


def _stream(args) -> int:
    """Continuous detection on the device: a WAV, an SHD-style spike file, or the microphone."""
    from tessera.runtime.audio import load_audio

    if not args.mic and not args.wav:
        raise InputError("tessera device stream needs a WAV or h5 file (or --mic)")
    source = None
    if args.wav:
        if args.wav.endswith((".h5", ".hdf5")):
            source = ("spikes", _spike_sample(args.wav, args.index))
        else:
            source = ("pcm", load_audio(args.wav))
    events = []

    def show(e):
        events.append({k: v for k, v in e.items() if k not in PROTOCOL_FIELDS})
        if not args.json:
            print(_event_line(e), flush=True)

    with _device(args) as dev:
        old = dev.params()["threshold"]
        if args.threshold is not None:
            dev.set_param("threshold", _cosine(args.threshold))
        dev.set_param("hop_ms", args.hop_ms)
        dev.set_param("trigger", args.trigger)
        dev.set_param("detect", True)
        try:
            if source is None:
                _stream_mic(dev, show)
            elif source[0] == "spikes":
                dev.stream_spikes(source[1], realtime=not args.fast, on_event=show)
            else:
                dev.stream_pcm(source[1], realtime=not args.fast, on_event=show)
            end = dev.end_utterance()                    # closes the open (partial) windows
            dev.drain(show)
        finally:
            dev.set_param("detect", False)
            if args.threshold is not None:
                dev.set_param("threshold", "model" if old is None else old)
    r = dict(events=events, stream_ms=end["stream_ms"], source=args.wav or "mic")
    if args.json:
        print(json.dumps(r))
    elif not events:
        print("(no word detected)")
    return 0


def _spike_sample(path: str, index: int):
    """One sample of an SHD-layout h5 file as 1 ms frames (700 channels)."""
    from tessera.runtime.chip import events_to_frames
    from tessera.trainer.data import read_spike_h5

    data = read_spike_h5(path)
    if not 0 <= index < len(data):
        raise InputError(f"--index {index} is outside the file's {len(data)} samples", source=path)
    times, units = data.sample(index)
    ms = int(times.max(initial=0) * 1000) + 2
    return events_to_frames(times, units, data.channels, ms)


def _infer_folder(args) -> int:
    """Every WAV of a folder (FSDD names or one sub-folder per word): accuracy per word, false
    accepts of words that are not enrolled, confusion matrix."""
    from tessera.trainer.data import _wav_items

    items = _wav_items(args.wav)
    if not items:
        raise InputError("no WAV files found", source=args.wav)
    rows = []
    with _device(args) as dev:
        enrolled = dev.classes()
        if not enrolled:
            raise InputError("the device has no enrolled words: enroll some first")
        bar = _progress(len(items), args)
        for path, word, _ in items:
            r = dev.infer(path)
            rows.append((path, args.prefix + word, r["label"], r["confidence"]))
            bar.update(1)
        bar.close()
    r = infer_report(rows, enrolled)
    if args.plot:
        from tessera.tools.plots import confusion_png

        r["plot"] = confusion_png(args.plot, r["confusion"], r["true_labels"], r["answers"],
                                  title=f"{args.wav}: {100 * r['accuracy']:.1f} % on enrolled "
                                        f"words")
    lines = [f"{args.wav}: {r['tested']} recordings of enrolled words, accuracy "
             f"{100 * r['accuracy']:.1f} %; {r['others']} of other words, "
             f"{100 * r['false_accepts']:.1f} % accepted as a word"]
    for w, v in r["per_word"].items():
        lines.append(f"  {w:>12}: {v['correct']}/{v['total']}")
    lines.append("  confusion (rows: truth, columns: answer): " + " ".join(r["answers"]))
    for t, row in zip(r["true_labels"], r["confusion"]):
        lines.append(f"  {t:>12}: " + " ".join(f"{x:3d}" for x in row))
    _emit(args, r, "\n".join(lines))
    return 0


def infer_report(rows: list, enrolled: list[str]) -> dict:
    """Accuracy per enrolled word, false accepts of the others, and a confusion matrix from
    (path, truth, answer or None, confidence) rows."""
    answers = sorted(enrolled) + ["none"]
    truths = sorted({t for _, t, _, _ in rows if t in enrolled}) + (
        ["(other words)"] if any(t not in enrolled for _, t, _, _ in rows) else [])
    conf = [[0] * len(answers) for _ in truths]
    per = {}
    for _, t, a, _ in rows:
        ti = truths.index(t if t in enrolled else "(other words)")
        conf[ti][answers.index(a if a is not None else "none")] += 1
        if t in enrolled:
            d = per.setdefault(t, {"correct": 0, "total": 0})
            d["total"] += 1
            d["correct"] += a == t
    tested = sum(v["total"] for v in per.values())
    others = [a for _, t, a, _ in rows if t not in enrolled]
    return dict(accuracy=round(sum(v["correct"] for v in per.values()) / max(tested, 1), 4),
                tested=tested, per_word=dict(sorted(per.items())), others=len(others),
                false_accepts=round(sum(a is not None for a in others) / max(len(others), 1), 4),
                confusion=conf, true_labels=truths, answers=answers,
                results=[dict(path=p, truth=t, answer=a, confidence=c) for p, t, a, c in rows])


def _show_progress(args) -> bool:
    """Progress bars: only on a terminal, and never with --no-progress or --json."""
    return (not getattr(args, "no_progress", False) and not getattr(args, "json", False)
            and sys.stderr.isatty())


def _progress(total: int, args):
    from tqdm import tqdm

    return tqdm(total=total, disable=not _show_progress(args), leave=False)


def _stream_mic(dev, show) -> None:
    """Live microphone -> device in real time until Ctrl-C."""
    try:
        import sounddevice as sd
    except ImportError:
        raise InputError("--mic needs the mic extra: pip install -e '.[mic]'") from None
    import numpy as np

    try:
        from tessera.runtime.constants import SAMPLE_RATE

        stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=1600)
    except Exception as exc:                              # noqa: BLE001 (PortAudio errors)
        raise InputError(f"no microphone to record from ({exc})") from None
    print("listening (Ctrl-C to stop)", file=sys.stderr)
    try:
        with stream as s:
            while True:
                block, _ = s.read(1600)                   # 100 ms, as it arrives
                dev.stream_pcm(np.asarray(block[:, 0]), on_event=show)
    except KeyboardInterrupt:
        pass


def cmd_protocol_test(args: argparse.Namespace) -> int:
    from tessera.protocol.conformance import run_conformance

    if not args.yes:
        with _device(args) as dev:
            held = dev.classes() if "model" in dev.info() else []
        if held:
            raise InputError(f"the device holds {len(held)} enrolled word(s) ({', '.join(held)})"
                             f" that protocol-test would erase: pass --yes to go on")
    print(f"protocol-test loads {args.model} into the device at {args.url} and erases its "
          f"enrolled words", file=sys.stderr)
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

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError("--out must be a folder; this is a file", source=args.out)
    os.makedirs(args.out, exist_ok=True)
    corpus = os.path.join(args.out, "corpus-small.h5")
    cfg = CorpusConfig(**PRESETS["small"], seed=args.seed, keep_audio=True)
    built = build_corpus(corpus, cfg, progress=_show_progress(args), preset="small")
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
                     f"{chip_demo['tested']} other utterances by unseen voices nearest to the "
                     f"right word ({100 * chip_demo['accuracy']:.0f} %, chance "
                     f"{100 / len(chip_demo['words']):.0f} %); {chip_demo['answered_none']} "
                     f"answered 'none of these' (other voices than the shot's)")
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
    from tessera.trainer.storage import load_model

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
    correct = tested = rejected = 0
    for i in test:
        if int(i) in shots or data.labels[i] not in words:
            continue
        chip.reset()
        chip.run(events_to_frames(*data.sample(int(i)), data.channels))
        p = chip.predict()
        correct += p["best"] == data.label_names[data.labels[i]]
        rejected += p["label"] is None
        tested += 1
    return dict(model=path, model_bytes=size, words=[data.label_names[c] for c in words],
                enroll_ms=round(float(np.median(enroll_ms)), 2), tested=tested, correct=correct,
                accuracy=round(correct / max(tested, 1), 4), answered_none=rejected)


# ---------------------------------------------------------------- parser
def _checked(kind, ok, what: str):
    """An argparse type: ``kind(text)`` that must satisfy ``ok``, else "expected WHAT"."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v:g}")
        return v
    return parse


_positive_int = _checked(int, lambda v: v > 0, "a positive integer")
_positive_float = _checked(float, lambda v: v > 0, "a positive number")
_fraction = _checked(float, lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")


NO_PROGRESS = "no progress bar (one shows only while stderr is a terminal)"


class _Formatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it names one itself or has none."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if ("default" in h or d is None or d is False or d == [] or d is argparse.SUPPRESS
                or not action.option_strings):
            return h
        if isinstance(d, (list, tuple)):
            return h + " (default: " + " ".join(map(str, d)).replace("%", "%%") + ")"
        return h + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error format (``--help`` shows the usage) and
    defaults shown in every option's help."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"tessera: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from tessera import __version__

    p = _Parser(prog="tessera", description="tessera: few-shot spoken-word learning on a simulated "
                "Mosaic chip. Every command prints a summary, or one JSON object with --json.")
    p.add_argument("--version", action="version", version=f"tessera {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parser_group, name, func, help_):
        sp = parser_group.add_parser(name, help=help_, description=help_.replace("%%", "%"))
        sp.set_defaults(_prog=sp.prog)
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sp.set_defaults(func=func)
        return sp

    corpus = sub.add_parser("corpus", help="build or inspect a speech corpus")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    b = add(csub, "build", cmd_corpus_build, "synthesize a spoken-word corpus (SHD layout h5)")
    b.add_argument("--preset", choices=["small", "default", "vocab", "novel", "lang"],
                   default="default",
                   help="small: tests/demo; default: SHD's 20 words, 8,000 utterances; vocab: "
                        "225 other words by the default's train voices, for meta-training; "
                        "novel: 10 new words by its test voices, for enrollment tests; lang: 40 "
                        "French, Spanish, Italian and Dutch words by its test voices")
    b.add_argument("--engine", choices=["espeak", "kokoro", "piper"], default="espeak",
                   help="synthesizer: espeak-ng (about 100 variants x 8 accents), kokoro (blends "
                        "of Kokoro-82M's five styles) or piper (one voice, warped); the last two "
                        "need the 'voices' extra")
    b.add_argument("--augment", choices=["none", "channel", "8k"], default="none",
                   help="channel: random microphones, rooms, 8 kHz/telephone bands, babble "
                        "noise, speed and vocal-tract length; 8k: every utterance band-limited "
                        "as an 8 kHz recording (trainer/augment.py)")
    b.add_argument("--splits", metavar="LIST",
                   help="synthesize only these voice splits, e.g. 'test' (default: the preset's)")
    b.add_argument("--out", help="output .h5 (default corpus-PRESET.h5)")
    b.add_argument("--seed", type=int, default=0, help="seed of voices, words and augmentation")
    b.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    b.add_argument("--words", help="extra words, e.g. 'en:lights,music;de:licht'")
    b.add_argument("--no-digits", action="store_true", help="leave out SHD's 20 digit classes")
    b.add_argument("--speakers", type=int, help="override the preset's speaker count")
    b.add_argument("--repeats", type=int, help="override utterances per speaker and word")
    b.add_argument("--keep-audio", action="store_true", help="store the 16 kHz audio too")
    b.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    i = add(csub, "info", cmd_corpus_info, "classes, utterances and speakers per split")
    i.add_argument("path", help="corpus .h5, SHD/SSC .h5, a folder of official files, or WAVs")
    i.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    bench = sub.add_parser("bench", help="speed benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="TARGET")
    f = add(bsub, "frontend", cmd_bench_frontend, "cochlea front-end speed, one core")
    f.add_argument("--channels", type=_positive_int, default=700, help="filterbank channels")
    f.add_argument("--seconds", type=_positive_float, default=10.0,
                   help="seconds of speech-like audio (default 10)")
    f.add_argument("--repeats", type=_positive_int, default=5,
                   help="timed runs (the median is reported)")

    bl = add(bsub, "lauscher", cmd_bench_lauscher, "the front-end against lauscher (SHD's "
             "cochlea model) on the same WAVs: run lauscher yourself, its WORD.npz beside each "
             "WORD.wav")
    bl.add_argument("wavs", nargs="+", metavar="WAV", help="recordings with lauscher's .npz")
    bl.add_argument("--png", help="rasters of both, side by side")

    br = add(bsub, "runtime", cmd_bench_runtime, "chip emulator speed, one core (vs torch)")
    br.add_argument("model", nargs="?", default=_default_model(),
                    help="model.pt (exported here) or a .tsr file")
    br.add_argument("--bits", type=int, default=8, help="weight bits of the timed export")
    br.add_argument("--repeats", type=_positive_int, default=20,
                    help="timed utterances (the median is reported)")
    br.add_argument("--batch", type=_positive_int, default=64,
                    help="utterances per batch of the batched throughput run")

    bd = add(bsub, "device", cmd_bench_device, "the user's path through the protocol: words "
             "taught one at a time, asked about other recordings, silence and streams")
    bd.add_argument("--fsdd", required=True, metavar="DIR", help="FSDD-style folder "
                    "({digit}_{speaker}_{i}.wav)")
    bd.add_argument("--speakers", nargs="+", default=["george", "jackson", "lucas"],
                    help="the folder's speakers to teach and ask, one at a time")
    bd.add_argument("--words", nargs="+", type=_positive_int, default=[5, 10],
                    help="vocabulary sizes (digits 0..N-1)")
    bd.add_argument("--port", help="device URL (default: sim:// with --model)")
    bd.add_argument("--model", help="a .tsr for sim:// (default: the factory model)")
    bd.add_argument("--minutes", type=_positive_float, default=2.0,
                    help="minutes of other words streamed for false detections")
    bd.add_argument("--noise-minutes", type=_positive_float, default=1.0,
                    help="minutes of streamed noise and silence for the false-alarm rate")
    bd.add_argument("--no-stream", action="store_true", help="skip the streaming part")

    bp = add(bsub, "protocol", cmd_bench_protocol, "protocol reliability and link budget")
    bp.add_argument("--model", help="a .tsr model (default: the committed model at 4 bits)")
    bp.add_argument("--parts", nargs="+", default=["fuzz", "lossy", "kill", "link", "pty"],
                    choices=["fuzz", "lossy", "kill", "link", "pty"],
                    help="which tests: fuzzed frames, a lossy link, device kills, the link "
                         "budget, a real pseudo-terminal")
    bp.add_argument("--frames", type=int, default=100_000, help="fuzzed frames")
    bp.add_argument("--words", type=int, default=10, help="enrollments over the lossy link")
    bp.add_argument("--kills", type=_positive_int, default=100,
                    help="device kills at random points of an enrollment")

    x = add(sub, "export", cmd_export, "write a trained model as the chip's fixed-point file")
    x.add_argument("model", help="model.pt or checkpoint.pt")
    x.add_argument("--out", required=True, help="output .tsr file")
    x.add_argument("--bits", type=int, default=8, help="core weight bits (2..8)")
    x.add_argument("--readout-bits", type=int, default=8,
                   help="bits of a readout weight level (2..16)")
    x.add_argument("--max-classes", type=int, default=32,
                   help="readout columns: how many words a device can enroll (1..1024)")
    x.add_argument("--threshold", type=float, default=None, metavar="COS",
                   help="'none of these' below this cosine (default: the model's calibration."
                        "json, written by tessera calibrate)")

    pa = add(sub, "parity", cmd_parity, "bit-exactness of the chip against the trainer's "
             "integer mode on every test utterance (exit 1 unless 1.0)")
    pa.add_argument("model", help="a .tsr file")
    pa.add_argument("--data", required=True, help="corpus (its test split is used)")
    pa.add_argument("--limit", type=int, default=0, help="only the first N test utterances")
    pa.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    ce = add(sub, "chip-eval", cmd_chip_eval, "few-shot accuracy through the chip's own "
             "enrollment vs the float model, over bit widths and drift")
    ce.add_argument("model", help="model.pt (exported at each bit width)")
    ce.add_argument("--data", required=True, help="corpus")
    ce.add_argument("--shots", nargs="+", type=_positive_int, default=[1, 5],
                    help="enrollment utterances per word")
    ce.add_argument("--episodes", type=_positive_int, default=600,
                    help="5-way episodes per row")
    ce.add_argument("--bits", nargs="+", type=int, default=[8], help="core weight bit widths")
    ce.add_argument("--drift", nargs="*", type=float, default=[], metavar="SECONDS",
                    help="also after these ages (last weight width), with and "
                         "without the chip's drift compensation")
    ce.add_argument("--write-noise", type=float, default=0.0,
                    help="RRAM write noise, a fraction of the level range (0.05: 5 %%)")
    ce.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    dg = add(sub, "diagnose", cmd_diagnose, "where accuracy goes: TTS words under one channel "
             "condition at a time (band, loudness, microphone, room, noise, voice), and real "
             "voices with loudness and spectrum matched")
    dg.add_argument("model", help="model.pt")
    dg.add_argument("--fsdd", metavar="DIR", help="a folder of {label}_{speaker}_{i}.wav "
                                                  "(validation data: nothing is fitted on it)")
    dg.add_argument("--no-tts", action="store_true", help="skip the TTS conditions")
    dg.add_argument("--episodes", type=_positive_int, default=300, help="5-way episodes per row")
    dg.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    cb = add(sub, "calibrate", cmd_calibrate, "fit the 'none of these' rule (threshold, spike "
             "floor, confidence calibration) on a corpus's validation voices; writes "
             "calibration.json next to the model, which tessera export puts in the model file")
    cb.add_argument("model", help="model.pt")
    cb.add_argument("--data", required=True, help="corpus (validation speakers fit, test "
                                                  "speakers report)")
    cb.add_argument("--fsdd", metavar="DIR", help="also report on this FSDD-style WAV folder "
                                                  "(validation only: nothing is fitted on it)")
    cb.add_argument("--target-fa", type=_fraction, default=0.25,
                    help="false accepts of words not enrolled allowed on the validation "
                         "episodes (default 0.25: see BENCHMARKS.md for why not 0.05)")
    cb.add_argument("--episodes", type=_positive_int, default=300,
                    help="episodes whose answers fit the calibration")
    cb.add_argument("--bits", type=int, default=4, help="core weight bits of the chip")
    cb.add_argument("--plot", metavar="PNG", help="hits against false accepts")
    cb.add_argument("--dry-run", action="store_true", help="report, do not write")
    cb.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    sm = add(sub, "sim", cmd_sim, "the firmware simulator as a serial device")
    sm.add_argument("--listen", metavar="URL", help="socket://127.0.0.1:PORT")
    sm.add_argument("--pty", action="store_true", help="open a pseudo-terminal, print its path")
    sm.add_argument("--bind-any", action="store_true", help="allow a non-loopback address")
    sm.add_argument("--flash", default="tessera-flash.img", help="persistent flash image file")
    sm.add_argument("--ram", type=int, default=512 * 1024, help="RAM budget in bytes")
    sm.add_argument("--baud", type=_positive_int, default=None,
                    help="limit the link to this many bits per second (default: no limit)")
    sm.add_argument("--drop", type=_fraction, default=0.0,
                    help="fraction of the bytes dropped in each direction, in [0, 1)")
    sm.add_argument("--corrupt", type=_fraction, default=0.0,
                    help="fraction of the bytes corrupted in each direction, in [0, 1)")
    sm.add_argument("--crash-during-save", action="store_true",
                    help="die between writing the new flash image and renaming it")
    sm.add_argument("--reboot-after", type=int, default=0, metavar="N",
                    help="power-cycle after every N-th request (RAM lost, flash kept)")
    sm.add_argument("--seed", type=int, default=0, help="seed of the simulated RRAM's noise")
    sm.add_argument("--model", help="model to boot with when the flash holds none (default: the "
                                    "committed default model at 4 bits)")
    sm.add_argument("--no-model", action="store_true", help="boot without a model")

    dv = sub.add_parser("device", help="talk to a device (the simulator or a board)")
    dsub = dv.add_subparsers(dest="device_command", required=True, metavar="ACTION")

    def dev_cmd(name, help_):
        sp = add(dsub, name, cmd_device, help_)
        sp.add_argument("--port", required=True,
                        help="pyserial URL: /dev/ttyUSB0, socket://127.0.0.1:7700, a pty path, "
                             "or sim://?model=M.tsr&flash=F.img (the simulator in this process: "
                             "without flash its words live only as long as this one command)")
        sp.add_argument("--baud", type=_positive_int, default=921600, help="bits per second")
        sp.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for each answer before a retry (default 2)")
        return sp

    dev_cmd("info", "firmware, capabilities and the loaded model")
    dev_cmd("load", "send a .tsr model (chunks with CRC, atomic commit)").add_argument(
        "model", help="a .tsr file (tessera export)")
    de = dev_cmd("enroll", "teach a word from one (or more) recordings: one readout update")
    de.add_argument("--label", required=True, help="the word's name on the device")
    de.add_argument("wavs", nargs="+", metavar="WAV", help="its recordings: one is one shot")
    de.add_argument("--save", action="store_true", help="also write the device's flash")
    di = dev_cmd("infer", "recognise one recording, or every WAV of a folder (FSDD names or one "
                          "sub-folder per word): accuracy per word and a confusion matrix")
    di.add_argument("wav", metavar="WAV|DIR", help="a recording, or a folder of them")
    di.add_argument("--prefix", default="", help="folder mode: prepend this to each file's word "
                                                 "to get its label (e.g. d for d0..d9)")
    di.add_argument("--plot", metavar="PNG", help="folder mode: confusion matrix plot")
    di.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    ds = dev_cmd("stream", "continuous detection: slide windows over a recording, an SHD-style "
                           "spike file or the microphone; print each word as it is detected")
    ds.add_argument("wav", nargs="?", metavar="WAV|H5", help="a WAV, or an h5 file in the SHD "
                                                             "layout (with --index)")
    ds.add_argument("--index", type=int, default=0, help="which sample of the h5 file (default 0)")
    ds.add_argument("--mic", action="store_true", help="live microphone (the mic extra)")
    ds.add_argument("--threshold", metavar="COS", help="'none of these' below this cosine for "
                                                       "this stream (default: the device's)")
    ds.add_argument("--trigger", choices=["onset", "hop"], default="onset",
                    help="open a window at each sound onset (default) or every --hop-ms")
    ds.add_argument("--hop-ms", type=_positive_int, default=250,
                    help="with --trigger hop: a new window every this many ms (default 250; "
                         "windows last the model's 1 s)")
    ds.add_argument("--fast", action="store_true", help="send the file as fast as the link "
                                                        "allows instead of in real time")
    dt = dev_cmd("threshold", "show or set the device's 'none of these' threshold (a cosine)")
    dt.add_argument("value", nargs="?", metavar="COS|model",
                    help="new threshold, or 'model' for the model file's")
    dt.add_argument("--save", action="store_true", help="also write the device's flash")
    dev_cmd("classes", "list the enrolled words")
    df = dev_cmd("forget", "remove an enrolled word")
    df.add_argument("--label", required=True, help="the word to forget")
    df.add_argument("--save", action="store_true", help="also write the device's flash")
    dev_cmd("stats", "device and chip counters")

    pt = add(sub, "protocol-test", cmd_protocol_test, "conformance suite against a device")
    pt.add_argument("url", help="pyserial URL of the device")
    pt.add_argument("--model", required=True, help="a .tsr model the suite loads")
    pt.add_argument("--timeout", type=_positive_float, default=3.0,
                    help="seconds to wait for each answer")
    pt.add_argument("--yes", action="store_true",
                    help="go on even though the device holds enrolled words (they are erased)")

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
    t.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    e = add(sub, "eval", cmd_eval, "few-shot accuracy of a trained model (mean ± 95 %% CI)")
    e.add_argument("model", help="model.pt or checkpoint.pt")
    e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    e.add_argument("--data", help="evaluate on other data (a WAV folder such as FSDD: all of it "
                                  "is test data, all its classes unseen)")
    e.add_argument("--split", nargs="+", default=["unseen"],
                   choices=["unseen", "seen", "all", "val", "train"],
                   help="unseen: new words by new voices; seen: training words by new voices; "
                        "all: both; val, train: the voices of training")
    e.add_argument("--shots", nargs="+", type=_positive_int, default=[1, 5],
                   help="enrollment utterances per word")
    e.add_argument("--ways", type=_positive_int, default=None,
                   help="words per episode (default: the model's, 5)")
    e.add_argument("--episodes", type=_positive_int, default=600, help="episodes per row")
    e.add_argument("--inner-steps", type=_positive_int, default=1,
                   help="readout updates (1: the device rule)")
    e.add_argument("--same-speaker", action="store_true",
                   help="shots and queries of a class from one speaker")
    e.add_argument("--cross-speaker", action="store_true",
                   help="shots of a class from one speaker, its queries from the others")
    e.add_argument("--baselines", nargs="*", action="extend", default=[],
                   choices=["dtw", "dtw-envelope"],
                   help="also score these baselines on the same episodes: dtw on the binned "
                        "spikes, dtw-envelope on a 128-channel gammatone log-envelope of the audio "
                        "(WAV folders and --keep-audio corpora)")
    e.add_argument("--compare", nargs="+", action="extend", default=[], metavar="MODEL",
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
    e.add_argument("--incremental-speaker", action="append", metavar="NAME",
                   help="with --incremental: shots and queries by this speaker only (a person "
                        "growing their own vocabulary, e.g. george in FSDD); repeatable")

    d = add(sub, "demo", cmd_demo, "the main job: build the small corpus, summary, raster plot")
    d.add_argument("--out", default="tessera-demo", help="output folder")
    d.add_argument("--seed", type=int, default=0, help="seed of the demo's voices")
    d.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                         # name the subcommand whose options these are not
        prog = getattr(args, "_prog", parser.prog)
        parser.exit(2, f"tessera: error: {prog}: unrecognized arguments: {' '.join(extra)} "
                       f"(see {prog} --help)\n")
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
    except BrokenPipeError:                      # e.g. tessera ... --json | head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())    # no second error when Python flushes stdout
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
