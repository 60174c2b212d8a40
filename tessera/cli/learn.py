"""`tessera train|eval|diagnose`: meta-training and measuring a model."""


from __future__ import annotations

import argparse
import json
import os

from tessera.runtime.errors import InputError

from .common import NO_PROGRESS, emit, positive_int, show_progress


def cmd_train(args: argparse.Namespace) -> int:
    from tessera.runtime.threads import set_blas_threads
    from tessera.trainer.learning.config import QUICK, load_config
    from tessera.trainer.learning.train import train

    overrides = (QUICK if args.quick else []) + list(args.set or [])
    if args.data:
        overrides.append(f"data.corpus={json.dumps(args.data)}")
    if args.extra_data:
        overrides.append(f"data.extra_corpora={json.dumps(args.extra_data)}")
    cfg = load_config(args.config, overrides)
    init = None
    if args.init:
        import dataclasses

        from tessera.trainer.learning.storage import load_model

        init = load_model(args.init)                 # its core replaces the config's [core]
        cfg = dataclasses.replace(cfg, core=init.core.cfg)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        set_blas_threads(args.threads)
    try:
        s = train(cfg, args.out, resume=args.resume, progress=show_progress(args), init=init)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            # every rank waits here until the first has finished (its validation, its files):
            # a rank that tore its process group down while another still held the link made
            # gloo's threads abort that one now and then (SIGABRT, "terminate called without
            # an active exception"); together, the teardown below finds no peer at work
            dist.barrier()
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if s.get("rank"):                                # torchrun: the first process reports
        return 0
    from tessera.tools.plots import learning_curve_png

    s["learning_curve_png"] = learning_curve_png(
        os.path.join(args.out, "learning-curve.png"),
        _metrics_records(os.path.join(args.out, "model.tsb")), title=args.out)
    lines = [f"trained {s['iterations']} iterations in {s['seconds']} s -> {args.out}/model.tsb"
             + (" (stopped at the time limit)" if s["stopped_early"] else ""),
             f"  inner learning rate {s['inner_lr']}, mean firing rate {s['rate']:.4f} per step"]
    for r in s["results"]:
        lines.append(f"  {r['ways']}-way {r['shots']}-shot {r['split']}: {100 * r['accuracy']:.1f} "
                     f"± {100 * r['ci95']:.1f} % ({r['episodes']} episodes)")
    emit(args, s, "\n".join(lines))
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


def _eval_pictures(args, model, head: dict, lines: list[str]) -> None:
    """``tessera eval``'s --heatmap, --learning-curve and --report."""
    from tessera.trainer.evaluation.evaluate import topology_report

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


def _eval_curves(args, model, setup, head: dict, lines: list[str]) -> None:
    """``tessera eval``'s --incremental and --curves."""
    from tessera.tools import plots
    from tessera.trainer.evaluation.evaluate import curves, incremental_eval

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


def cmd_eval(args: argparse.Namespace) -> int:
    from tessera.trainer.evaluation.evaluate import eval_setup, evaluate_model
    from tessera.trainer.learning.storage import load_model

    model = load_model(args.model)
    if args.weight_bits or args.write_noise or args.drift:
        from tessera.trainer.evaluation.evaluate import program_device

        program_device(model, args.weight_bits, args.write_noise, args.drift)
    setup = eval_setup(model, args.data, show_progress(args))   # data and features, once
    results = evaluate_model(model, args.data, splits=args.split, shots=args.shots, ways=args.ways,
                             episodes=args.episodes, inner_steps=args.inner_steps,
                             same_speaker=args.same_speaker, baselines=tuple(args.baselines),
                             cross_speaker=args.cross_speaker, setup=setup,
                             compare=tuple(load_model(m) for m in args.compare),
                             transfer_steps=args.transfer_steps, voice_norm=args.voice_norm,
                             voice_prior=args.voice_prior)
    head = dict(results[0])
    head["results"] = results
    lines = [f"{model.path} (iteration {model.iteration}):"]
    _eval_pictures(args, model, head, lines)
    _eval_curves(args, model, setup, head, lines)
    for r in results:
        extra = ""
        if "accuracy_unseen_queries" in r:
            extra = (f" [unseen queries {100 * r['accuracy_unseen_queries']:.1f} %, seen "
                     f"{100 * r['accuracy_seen_queries']:.1f} %]")
        if "voice-normalized" in str(r.get("rule", "")):
            extra += f" [{r['rule']}]"
        lines.append(f"  {r['method']:10s} {r['ways']}-way {r['shots']}-shot {r['split']}: "
                     f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f} % ({r['episodes']} "
                     f"episodes){extra}")
    emit(args, head, "\n".join(lines))
    return 0


def _voice_rows(rows: list[dict], width: int) -> list[str]:
    """Diagnosis rows on real voices: cross-speaker | same-speaker, 1-shot / 5-shot %."""
    out = []
    for r in rows:
        a, b = r["cross_speaker"], r["same_speaker"]
        out.append(f"    {r['audio']:{width}s} {a['1-shot']:5.1f} / {a['5-shot']:5.1f}   | "
                   f"{b['1-shot']:5.1f} / {b['5-shot']:5.1f}")
    return out


def cmd_diagnose(args: argparse.Namespace) -> int:
    from tessera.trainer.data.levels import corpus_level_mean
    from tessera.trainer.evaluation import diagnose as D
    from tessera.trainer.learning.storage import load_model

    model = load_model(args.model)
    progress = show_progress(args)
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
        lines += _voice_rows(rows, 38)
    if args.level_eq:
        if not args.fsdd:
            raise InputError("diagnose: --level-eq needs --fsdd DIR")
        from tessera.runtime.frontend import FrontendSpec, design
        tab = design(FrontendSpec())
        refs = {f"{os.path.basename(p)}'s mean": corpus_level_mean(p, tab) for p in args.level_eq}
        rows = D.level_equalization(model, args.fsdd, refs, episodes=args.episodes)
        result["level_eq"] = rows
        lines.append("  the long-term spectrum equalized in the front-end's levels: "
                     "cross-speaker | same-speaker (1-shot / 5-shot %)")
        lines += _voice_rows(rows, 70)
    emit(args, result, "\n".join(lines))
    return 0


def _add_train(sub, add) -> None:
    t = add(sub, "train", cmd_train, "meta-train the spiking core (ANIL device rule by default; "
            "across processes when started by torchrun)")
    t.add_argument("--config", help="TOML config file")
    t.add_argument("--data", help="corpus (sets data.corpus)")
    t.add_argument("--extra-data", action="append", metavar="CORPUS",
                   help="more words for meta-training only, e.g. a 'vocab' corpus (sets "
                        "data.extra_corpora)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a key")
    t.add_argument("--out", default="runs/default", help="run folder (checkpoints, logs)")
    t.add_argument("--quick", action="store_true", help="a short run (a few minutes)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--init", metavar="MODEL",
                   help="start from this model's core (a model bundle, e.g. from tessera "
                        "import-nir); its core config replaces the config's [core]")
    t.add_argument("--threads", type=int, default=0, help="torch/BLAS threads (default: all)")
    t.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def _add_eval(sub, add) -> None:
    e = add(sub, "eval", cmd_eval, "few-shot accuracy of a trained model (mean ± 95 %% CI)")
    e.add_argument("model", help="a model bundle (model.tsb) or checkpoint.pt")
    e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    e.add_argument("--data", help="evaluate on other data (a WAV folder such as FSDD: all of it "
                                  "is test data, all its classes unseen)")
    e.add_argument("--split", nargs="+", default=["unseen"],
                   choices=["unseen", "seen", "all", "val", "train"],
                   help="unseen: new words by new voices; seen: training words by new voices; "
                        "all: both; val, train: the voices of training")
    e.add_argument("--shots", nargs="+", type=positive_int, default=[1, 5],
                   help="enrollment utterances per word")
    e.add_argument("--ways", type=positive_int, default=None,
                   help="words per episode (default: the model's, 5)")
    e.add_argument("--episodes", type=positive_int, default=600, help="episodes per row")
    e.add_argument("--inner-steps", type=positive_int, default=1,
                   help="readout updates (1: the device rule)")
    e.add_argument("--same-speaker", action="store_true",
                   help="shots and queries of a class from one speaker")
    e.add_argument("--cross-speaker", action="store_true",
                   help="shots of a class from one speaker, its queries from the others")
    e.add_argument("--voice-norm", type=int, default=0, metavar="N",
                   help="also score the prototype rule with voice normalization: every feature "
                        "minus the mean of the last N utterances of its speaker (a measured "
                        "option, not yet on the chip; 0: off)")
    e.add_argument("--voice-prior", metavar="CORPUS",
                   help="with --voice-norm: the corpus whose train-split mean feature is the "
                        "population prior (default: the model's training corpus)")
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


def _add_diagnose(sub, add) -> None:
    dg = add(sub, "diagnose", cmd_diagnose, "where accuracy goes: TTS words under one channel "
             "condition at a time (band, loudness, microphone, room, noise, voice), and real "
             "voices with loudness and spectrum matched")
    dg.add_argument("model", help="a model bundle (model.tsb)")
    dg.add_argument("--fsdd", metavar="DIR", help="a folder of {label}_{speaker}_{i}.wav "
                                                  "(validation data: nothing is fitted on it)")
    dg.add_argument("--no-tts", action="store_true", help="skip the TTS conditions")
    dg.add_argument("--level-eq", metavar="CORPUS", action="append", default=[],
                    help="with --fsdd: also equalize each speaker's long-term spectrum inside the "
                         "front-end (its levels), to this --keep-audio corpus's mean (repeatable)")
    dg.add_argument("--episodes", type=positive_int, default=300, help="5-way episodes per row")
    dg.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    _add_train(sub, add)
    _add_eval(sub, add)
    _add_diagnose(sub, add)
