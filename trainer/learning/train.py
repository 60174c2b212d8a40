"""`tessera train` and `tessera eval`: the loop around :class:`~tessera.trainer.learning.fewshot.MetaTrainer`.

A run directory holds ``config.toml``-equivalent JSON (``config.json``), ``metrics.jsonl`` (one
JSON object per iteration and per evaluation), ``checkpoint.pt`` (resumable: parameters, masks,
meta-learned learning rates, Adam state, iteration, random state) and ``model.pt`` (the final
model); their format and :class:`Model`, the trained model, live in :mod:`.storage`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import torch

from ...runtime.errors import InputError
from .config import Config, config_to_dict
from ..data.dense import DenseSet, load_dense, with_training_extras
from .episodes import FewShotTasks
from .fewshot import MetaTrainer, evaluate, features_of
from .storage import (Model, checkpoint_state, load_checkpoint, load_model, restore_trainer,
                      save_checkpoint)

__all__ = ["train", "load_model", "evaluate_model", "Model"]


def _data(cfg: Config, extras: bool = False, progress: bool | None = None,
          level_eq=None) -> DenseSet:
    """The binned corpus; with ``extras`` also data.extra_corpora (for meta-training)."""
    if not cfg.data.corpus:
        raise InputError("config: data.corpus is empty (pass --data PATH or set data.corpus)")
    paths = [cfg.data.corpus] + (list(cfg.data.extra_corpora) if extras else [])
    for path in paths:
        if not os.path.exists(path):
            raise InputError("no such corpus", source=path)
    sets = [load_dense(p, cfg.data.steps, cfg.data.duration, cfg.data.channel_subsets,
                       progress=progress, level_eq=level_eq) for p in paths]
    if extras and cfg.meta.teacher_weight:
        _attach_teacher(cfg, paths, sets, progress)
    try:
        return with_training_extras(sets[0], sets[1:])
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _attach_teacher(cfg: Config, paths: list[str], sets: list[DenseSet],
                    progress: bool | None) -> None:
    """The teacher's segment-aligned embeddings of every set that holds audio (computed once per
    corpus and cached); a set without audio trains without them (NaN rows)."""
    from .teacher import Teacher, teacher_frames

    teacher = Teacher()
    found = 0
    for path, d in zip(paths, sets):
        t = teacher_frames(path, cfg.core.segments, cfg.data.duration, teacher,
                           progress=bool(progress))
        if t is not None:
            if len(t) != len(d):
                raise InputError(f"teacher cache holds {len(t)} utterances, the corpus "
                                 f"{len(d)}", source=path)
            d.teacher = t
            found += 1
    if not found:
        raise InputError("meta.teacher_weight > 0, but no training corpus holds audio (build "
                         "them with --keep-audio, or use tessera corpus real)")


def _tasks(cfg: Config, data: DenseSet, foreign: bool = False) -> FewShotTasks:
    """Episodes over ``data``; ``foreign`` data (no split recorded, its own classes, such as a
    folder of real recordings) is all test data and all its classes count as unseen."""
    if foreign:
        return FewShotTasks(data.labels, data.speakers, data.split,
                            unseen=tuple(np.unique(data.labels).tolist()), seed=cfg.train.seed,
                            all_test=True)
    return FewShotTasks(data.labels, data.speakers, data.split, unseen=tuple(cfg.data.unseen),
                        seed=cfg.train.seed)


def _trainer(cfg: Config, data: DenseSet, tasks: FewShotTasks) -> MetaTrainer:
    core_cfg = dataclasses.replace(cfg.core, inputs=int(data.x.shape[-1]), classes=cfg.data.ways)
    return MetaTrainer(core_cfg, cfg.meta, cfg.reg, data, tasks, seed=cfg.train.seed, rram=cfg.rram)


def _distributed() -> tuple[int, int]:
    """(rank, world) of this process: torchrun's RANK / WORLD_SIZE, the process group set up
    (gloo on CPU, the trainer's device; TESSERA_DIST_BACKEND overrides); (0, 1) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = os.environ.get("TESSERA_DIST_BACKEND", "gloo")
        if backend == "nccl":
            raise InputError("TESSERA_DIST_BACKEND=nccl: the trainer runs on the CPU, where "
                             "NCCL cannot reduce; use gloo (the default), one process per "
                             "core or socket (README: Training on more than one process)")
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _init_from(tr: MetaTrainer, init: Model) -> None:
    """Start from ``init``'s core (a trained or NIR-imported model.pt) instead of a random one."""
    mine = dataclasses.replace(init.core.cfg, inputs=tr.cfg.inputs, classes=tr.cfg.classes)
    if mine != tr.cfg:
        diff = {f.name: (getattr(init.core.cfg, f.name), getattr(tr.cfg, f.name))
                for f in dataclasses.fields(tr.cfg)
                if getattr(mine, f.name) != getattr(tr.cfg, f.name)}
        raise InputError(f"--init: the model's core differs from the run's (init, run): {diff}",
                         source=init.path)
    if init.core.cfg.inputs != tr.cfg.inputs:
        raise InputError(f"--init: the model reads {init.core.cfg.inputs} inputs, the data has "
                         f"{tr.cfg.inputs}", source=init.path)
    with torch.no_grad():
        for k, v in init.core.params.items():
            if k in tr.core.params and tr.core.params[k].shape == v.shape:
                tr.core.params[k].copy_(v)
        for k, v in init.core.masks.items():
            tr.core.masks[k].copy_(v)
        for k, v in init.lrs.items():
            if k in tr.log_lr:
                tr.log_lr[k].copy_(v.log())
    tr.refresh_cost()


def train(cfg: Config, out: str, *, resume: bool = False, progress: bool = True,
          init: Model | None = None) -> dict:
    """Meta-train; returns a summary with the final validation and test accuracies. ``init``:
    start from this model's core. Started by torchrun with several processes, each runs its
    share of every meta-batch's tasks (:meth:`MetaTrainer.step`); the first writes the run
    folder, logs and evaluates."""
    from tqdm import tqdm

    rank, world = _distributed()
    lead = rank == 0                                  # the process that writes and evaluates
    data = _data(cfg, extras=True, progress=progress and lead)   # bad data: no empty run folder
    if lead:
        os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, "checkpoint.pt")
    tasks = _tasks(cfg, data)
    tr = _trainer(cfg, data, tasks)
    tr.rank, tr.world = rank, world
    if init is not None:
        _init_from(tr, init)
    if resume and os.path.exists(ckpt):
        state = load_checkpoint(ckpt)
        if json.loads(state["config"]) != config_to_dict(cfg):
            raise InputError("--resume with a different config than the checkpoint's", source=ckpt)
        restore_trainer(tr, state)
    level_eq = None
    if cfg.data.level_eq and lead:                  # the front-end's reference, before the hours
        from ..evaluation.diagnose import reference_eq
        level_eq = reference_eq(cfg.data.level_eq)
    if lead:
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(config_to_dict(cfg), fh, indent=1)
    samplers = {k: tasks.sampler("train", cfg.data.ways + cfg.meta.open_ways, k,
                                 cfg.data.queries) for k in cfg.data.shots}
    cross = {}
    for k in cfg.data.shots if cfg.data.cross_speaker_train else ():
        try:                                 # too few voices per word for k shots: within only
            cross[k] = tasks.sampler("train", cfg.data.ways + cfg.meta.open_ways, k,
                                     cfg.data.queries, cross_speaker=True)
        except InputError:
            pass
    t0 = time.time()
    log = open(os.path.join(out, "metrics.jsonl"), "a") if lead else None
    bar = tqdm(total=cfg.train.iterations, initial=tr.iteration, desc="meta-train", unit="it",
               disable=not progress or not lead, leave=False)
    stopped_early = False
    val_ok = True
    try:
        while tr.iteration < cfg.train.iterations:
            shots = int(tr.rng.choice(cfg.data.shots))
            across = bool(cross) and tr.rng.random() < cfg.data.cross_speaker_train \
                and shots in cross
            info = tr.step((cross if across else samplers)[shots])
            info.update(shots=shots, seconds=round(time.time() - t0, 2))
            bar.update(1)
            bar.set_postfix(acc=f"{info['acc']:.2f}", rate=f"{info['rate']:.3f}")
            if lead:
                log.write(json.dumps(dict(info, processes=world) if world > 1 else info) + "\n")
            if lead and val_ok and (tr.iteration % cfg.train.eval_every == 0
                                    or tr.iteration == cfg.train.iterations):
                try:
                    val = evaluate(tr.core, tr.lrs(), data, tasks, "val", cfg.data.ways, 1,
                                   cfg.data.queries, cfg.train.eval_episodes,
                                   cfg.meta.inner_steps, rule=cfg.meta.rule)
                    log.write(json.dumps(dict(eval="val", iteration=tr.iteration, **val)) + "\n")
                except InputError as exc:            # too few validation utterances
                    val_ok = False
                    log.write(json.dumps(dict(eval="val", skipped=str(exc))) + "\n")
                log.flush()
            if lead and tr.iteration % cfg.train.checkpoint_every == 0:
                save_checkpoint(ckpt, checkpoint_state(tr, cfg))
            stop = bool(cfg.train.time_limit_s and time.time() - t0 > cfg.train.time_limit_s)
            if world > 1:                            # every process stops at the same step
                import torch.distributed as dist

                flag = torch.tensor([float(stop)])
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if stop:
                stopped_early = True
                break
    finally:
        bar.close()
        if log:
            log.close()
    seconds = time.time() - t0
    if not lead:
        return dict(out=out, iterations=tr.iteration, seconds=round(seconds, 1), rank=rank,
                    processes=world, results=[])
    save_checkpoint(ckpt, checkpoint_state(tr, cfg))
    results, skipped = [], []
    for k in (1, 5):
        try:
            results.append(evaluate(tr.core, tr.lrs(), data, tasks, "unseen", cfg.data.ways, k,
                                    cfg.data.queries, cfg.train.eval_episodes,
                                    cfg.meta.inner_steps, rule=cfg.meta.rule))
        except InputError as exc:                    # too few test utterances for k shots
            skipped.append(str(exc))
    summary = dict(out=out, iterations=tr.iteration, seconds=round(seconds, 1),
                   stopped_early=stopped_early, rate=float(tr.last_rate),
                   inner_lr=round(float(tr.lrs()["w_out"].detach()), 3), results=results,
                   skipped=skipped, processes=world)
    if init is not None:
        summary["init"] = init.path
    if level_eq is not None:
        summary["level_eq"] = level_eq
    final = checkpoint_state(tr, cfg, summary)
    final.pop("opt")                                 # the model file needs no optimizer state
    if cfg.meta.algorithm != "transfer":             # nor the training-only word classifier
        final["head"] = {}
    save_checkpoint(os.path.join(out, "model.pt"), final)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def topology_report(model: Model) -> dict:
    """Connection sparsity, connections per hop distance and small-world measures of W_rec."""
    from .graph import small_world

    w = (model.core.params["w_rec"] * model.core.masks["w_rec"]).detach().numpy()
    n = w.shape[0]
    nonzero = int((w != 0).sum())
    lay = model.core.cfg.layout
    return dict(neurons=n, connections=nonzero,
                connection_sparsity=round(1 - nonzero / (n * (n - 1)), 4),
                connections_per_hop={str(k): v for k, v in lay.connections_per_hop(w).items()},
                small_world=small_world(w))


def curves(model: Model, data_path: str | None = None, episodes: int = 200,
           seed: int = 1234, setup: tuple | None = None) -> dict:
    """Unseen-class accuracy against inner steps (5-shot) and against shots (one step).

    ``setup`` reuses the data and features of an earlier :func:`eval_setup` call."""
    cfg, data, tasks, feats = setup or eval_setup(model, data_path)
    steps_axis, shots_axis = [1, 2, 3, 5, 10], [1, 2, 3, 5, 10]
    k_steps = 5
    try:
        tasks.sampler("unseen", cfg.data.ways, 5, cfg.data.queries)
    except InputError:                               # too little test data for 5 shots
        k_steps = 1
    by_steps = [evaluate(model.core, model.lrs, data, tasks, "unseen", cfg.data.ways, k_steps,
                         cfg.data.queries, episodes, s, seed, feats=feats) for s in steps_axis]
    by_shots = []
    for k in shots_axis:
        try:
            by_shots.append(evaluate(model.core, model.lrs, data, tasks, "unseen", cfg.data.ways,
                                     k, cfg.data.queries, episodes, 1, seed, feats=feats))
        except InputError:
            break
    return dict(inner_steps=by_steps, shots=by_shots)


def _model_features(model: Model, data: DenseSet, source: str) -> torch.Tensor:
    """Readout features of every utterance (channel subset 0), after checking the input width."""
    if data.x.shape[-1] != model.core.cfg.inputs:
        raise InputError(f"data has {data.x.shape[-1]} input channels after reduction, the model "
                         f"expects {model.core.cfg.inputs}", source=source)
    return features_of(model.core, data.x[:, 0])


def _feature_mean(model: Model) -> torch.Tensor:
    """Mean readout feature over the training corpus's train-split utterances."""
    main = load_dense(model.config.data.corpus, model.config.data.steps,
                      model.config.data.duration, model.config.data.channel_subsets)
    return features_of(model.core, main.x[main.split == 0, 0]).mean(0)


def incremental_eval(model: Model, corpus: str, shots: int = 1, runs: int = 50,
                     speaker: str | None = None) -> dict:
    """Enroll every class of ``corpus`` one at a time (see :func:`fewshot.incremental`) with
    the model's rule.

    With the softmax-step rule, features are centred by the mean feature of the training
    utterances: from a zero readout, one CE step for a single new class pushes the older rows
    along the new (non-negative) feature, which without centring makes the newest word win every
    query. The prototype rule needs no centring (each word writes only its own column).
    ``speaker``: shots and queries all by this speaker (a person growing their own vocabulary).
    """
    from .fewshot import incremental

    cfg = model.config
    data = load_dense(corpus, cfg.data.steps, cfg.data.duration, cfg.data.channel_subsets)
    feats = _model_features(model, data, corpus)
    if cfg.meta.rule != "prototype":
        feats = feats - _feature_mean(model)
    if speaker is not None:
        if speaker not in data.speaker_names:
            raise InputError(f"no speaker {speaker!r} (speakers: "
                             f"{', '.join(map(str, data.speaker_names[:10]))}...)", source=corpus)
        keep = np.nonzero(data.speakers == data.speaker_names.index(speaker))[0]
        data = data.subset(keep)
        feats = feats[keep]
    classes = sorted(np.unique(data.labels).tolist())
    counts = np.bincount(data.labels)
    queries = int(min(counts[classes]) - shots)
    if queries < 1:
        raise InputError(f"need more than {shots} utterances per class", source=corpus)
    out = incremental(model.lrs, feats, data.labels, classes, shots, min(queries, 5), runs,
                      rule=cfg.meta.rule)
    out["corpus"] = corpus
    out["speaker"] = speaker
    out["label_names"] = [data.label_names[c] for c in classes]
    return out


def program_device(model: Model, weight_bits: int = 0, write_noise: float = 0.0,
                   drift_seconds: float = 0.0, seed: int = 0) -> None:
    """Replace the model's W_in and W_rec by what one programming of RRAM arrays would hold:
    ``weight_bits`` levels, Gaussian write noise of std ``write_noise`` x w_max per weight
    (w_max = the clipping range), then drift (see :mod:`tessera.trainer.learning.rram`)."""
    import math

    from .rram import RRAMTrainConfig, device_weight

    span = 12.0 - 0.1
    cfg = RRAMTrainConfig(enabled=True, weight_bits=weight_bits,
                     write_noise=(0.0, write_noise * span / math.sqrt(2)),
                     drift_seconds=drift_seconds)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k in ("w_in", "w_rec"):
            w = model.core.params[k] * model.core.masks[k]
            model.core.params[k].copy_(device_weight(w, cfg, gen))


def eval_setup(model: Model, data_path: str | None, progress: bool | None = None) -> tuple:
    """(config, binned data, episode tasks, features of every utterance) for evaluations."""
    cfg = model.config
    if data_path:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, corpus=data_path))
    data = _data(cfg, progress=progress, level_eq=model.level_eq)   # WAVs heard as the device
    feats = _model_features(model, data, cfg.data.corpus)
    # data that records no split (a WAV folder such as FSDD), or only test voices speaking other
    # words than SHD's 20 (a 'lang' or 'novel' corpus), never met the model: all test, all
    # classes unseen. Test voices speaking SHD's words (--splits test) keep the unseen classes.
    from ..data.corpus import SHD_WORDS
    shd = list(data.label_names[:len(SHD_WORDS)]) == [f"{lang}:{w}" for lang, w in SHD_WORDS]
    tasks = _tasks(cfg, data, foreign=bool((data.split < 0).all()
                                           or ((data.split == 2).all() and not shd)))
    return cfg, data, tasks, feats


def compare_features(other: Model, cfg, data: DenseSet, level_eq=None) -> torch.Tensor:
    """Features of ``other`` on the evaluation corpus, binned as ``other`` was trained and heard
    through its own level equalization (``level_eq``: the one ``data`` was heard through)."""
    o = other.config.data
    eq = other.level_eq
    same = (o.steps, o.duration, o.channel_subsets) == (cfg.data.steps, cfg.data.duration,
                                                        cfg.data.channel_subsets) \
        and (eq and eq.key()) == (level_eq and level_eq.key())
    mine = data if same else load_dense(cfg.data.corpus, o.steps, o.duration, o.channel_subsets,
                                        level_eq=eq)
    return _model_features(other, mine, other.path)


def evaluate_model(model: Model, data_path: str | None = None, *, splits=("unseen",),
                   shots=(1, 5), ways: int | None = None, queries: int | None = None,
                   episodes: int = 600, inner_steps: int = 1, seed: int = 1234,
                   same_speaker: bool = False, baselines: tuple[str, ...] = (),
                   cross_speaker: bool = False, setup: tuple | None = None,
                   compare: tuple[Model, ...] = (), transfer_steps: int = 0,
                   voice_norm: int = 0, voice_prior: str | None = None) -> list[dict]:
    """The model, the named baselines and the ``compare`` models on the same episodes of every
    split and shot count. A compared model adapts with its own rule (its config's inner steps);
    the main model with ``inner_steps``; ``transfer_steps`` overrides the fine-tuning steps of
    compared transfer baselines (chosen on the validation split)."""
    from ..evaluation.baselines import audio_of, evaluate_dtw, evaluate_dtw_envelope, log_envelopes

    cfg, data, tasks, feats = setup or eval_setup(model, data_path)
    others = [(m, compare_features(m, cfg, data, model.level_eq)) for m in compare]
    prior = None
    if voice_norm:
        from .fewshot import evaluate_voice_norm

        src = voice_prior or model.config.data.corpus
        if not src or not os.path.exists(src):
            raise InputError("--voice-norm needs the population mean feature: pass "
                             "--voice-prior CORPUS (the model's training corpus is not here)",
                             source=src or None)
        prior_data = load_dense(src, cfg.data.steps, cfg.data.duration, cfg.data.channel_subsets)
        train_idx = np.nonzero(prior_data.split == 0)[0][::4]
        prior = torch.nn.functional.normalize(features_of(model.core, prior_data.x[train_idx, 0]),
                                              dim=1, eps=1e-8).mean(0)
    envelopes = None
    if "dtw-envelope" in baselines:
        audio = audio_of(cfg.data.corpus)
        if audio is None or len(audio) != len(data):
            raise InputError("the dtw-envelope baseline needs audio: a WAV folder or a corpus "
                             "built with --keep-audio", source=cfg.data.corpus)
        envelopes = np.stack([log_envelopes(a, duration=cfg.data.duration) for a in audio])
    out = []
    for split in splits:
        for k in shots:
            w, q = ways or cfg.data.ways, queries or cfg.data.queries
            r = evaluate(model.core, model.lrs, data, tasks, split, w, k, q, episodes,
                         inner_steps, seed, feats=feats, same_speaker=same_speaker,
                         cross_speaker=cross_speaker, rule=model.config.meta.rule)
            out.append(dict(method=model.method, **r))
            if prior is not None:
                out.append(dict(method=model.method, **evaluate_voice_norm(
                    feats, data.speakers, tasks, prior, split, w, k, q, episodes, seed,
                    recent=voice_norm, same_speaker=same_speaker, cross_speaker=cross_speaker)))
            for m, f in others:
                steps = transfer_steps if (transfer_steps and m.method == "transfer") \
                    else m.config.meta.inner_steps
                r = evaluate(m.core, m.lrs, data, tasks, split, w, k, q, episodes, steps, seed,
                             feats=f, same_speaker=same_speaker, cross_speaker=cross_speaker,
                             rule=m.config.meta.rule)
                out.append(dict(method=m.method, model=m.path, **r))
            if "dtw" in baselines:
                out.append(evaluate_dtw(data, tasks, split, w, k, q, episodes, seed, same_speaker,
                                        cross_speaker))
            if envelopes is not None:
                out.append(evaluate_dtw_envelope(envelopes, tasks, split, w, k, q, episodes, seed,
                                                 same_speaker, cross_speaker))
    return out
