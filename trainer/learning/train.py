"""`tessera train`: the loop around :class:`~tessera.trainer.learning.fewshot.MetaTrainer`.

A run directory holds ``config.toml``-equivalent JSON (``config.json``), ``metrics.jsonl`` (one
JSON object per iteration and per evaluation), ``checkpoint.pt`` (resumable: parameters, masks,
meta-learned learning rates, Adam state, iteration, random state) and ``model.tsb`` (the final
model, a bundle: :mod:`.bundle`); their format and :class:`Model`, the trained model, live in :mod:`.storage`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import torch

from ...runtime.errors import InputError
from .config import Config, config_to_dict
from ..data.dense import DenseSet, load_dense, with_training_extras
from .episodes import FewShotTasks
from .algorithms import trainer_class
from .fewshot import MetaTrainer
from .adapt import evaluate
from .storage import (Model, checkpoint_state, copy_params, load_checkpoint, load_model,
                      restore_trainer, save_bundle, save_checkpoint)

__all__ = ["train", "binned_data", "training_tasks", "meta_trainer", "load_model", "Model"]


def binned_data(cfg: Config, extras: bool = False, progress: bool | None = None,
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


def training_tasks(cfg: Config, data: DenseSet) -> FewShotTasks:
    """Meta-training's episodes: the corpus's splits, its ``data.unseen`` classes held out."""
    return FewShotTasks(data.labels, data.speakers, data.split, unseen=tuple(cfg.data.unseen),
                        seed=cfg.train.seed)


def meta_trainer(cfg: Config, data: DenseSet, tasks: FewShotTasks) -> MetaTrainer:
    core_cfg = dataclasses.replace(cfg.core, inputs=int(data.x.shape[-1]), classes=cfg.data.ways)
    cls = trainer_class(cfg.meta.algorithm)           # one class per algorithm
    return cls(core_cfg, cfg.meta, cfg.reg, data, tasks, seed=cfg.train.seed, rram=cfg.rram)


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
    """Start from ``init``'s core (a trained or NIR-imported model) instead of a random one."""
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
    copy_params(tr.core, {"params": init.core.params, "masks": init.core.masks}, partial=True)
    with torch.no_grad():
        for k, v in init.lrs.items():
            if k in tr.log_lr:
                tr.log_lr[k].copy_(v.log())
    tr.refresh_cost()


def _samplers(cfg: Config, tasks: FewShotTasks) -> tuple[dict, dict]:
    """Meta-training's episode samplers per shot count: within speakers, and across speakers
    where the words have voices enough (``data.cross_speaker_train``)."""
    samplers = {k: tasks.sampler("train", cfg.data.ways + cfg.meta.open_ways, k,
                                 cfg.data.queries) for k in cfg.data.shots}
    cross = {}
    for k in cfg.data.shots if cfg.data.cross_speaker_train else ():
        try:                                 # too few voices per word for k shots: within only
            cross[k] = tasks.sampler("train", cfg.data.ways + cfg.meta.open_ways, k,
                                     cfg.data.queries, cross_speaker=True)
        except InputError:
            pass
    return samplers, cross


def _validate(tr: MetaTrainer, cfg: Config, data: DenseSet, tasks: FewShotTasks, log) -> bool:
    """One validation evaluation into the log; False when the corpus has too few validation
    utterances (no more are tried)."""
    try:
        val = evaluate(tr.core, tr.lrs(), data, tasks, phase="val", ways=cfg.data.ways, shots=1,
                       queries=cfg.data.queries, episodes=cfg.train.eval_episodes,
                       inner_steps=cfg.meta.inner_steps, rule=cfg.meta.rule)
        log.write(json.dumps(dict(eval="val", iteration=tr.iteration, **val)) + "\n")
        return True
    except InputError as exc:                        # too few validation utterances
        log.write(json.dumps(dict(eval="val", skipped=str(exc))) + "\n")
        return False
    finally:
        log.flush()


def _finish(tr: MetaTrainer, cfg: Config, data: DenseSet, tasks: FewShotTasks, out: str,
            head: dict, init: Model | None, level_eq, world: int) -> dict:
    """The lead process's end of a run: the last checkpoint, the test evaluation, ``model.tsb``
    and ``summary.json``; returns the summary."""
    save_checkpoint(os.path.join(out, "checkpoint.pt"), checkpoint_state(tr, cfg))
    results, skipped = [], []
    for k in (1, 5):
        try:
            results.append(evaluate(tr.core, tr.lrs(), data, tasks, phase="unseen",
                                    ways=cfg.data.ways, shots=k, queries=cfg.data.queries,
                                    episodes=cfg.train.eval_episodes,
                                    inner_steps=cfg.meta.inner_steps, rule=cfg.meta.rule))
        except InputError as exc:                    # too few test utterances for k shots
            skipped.append(str(exc))
    summary = dict(head, rate=float(tr.last_rate),
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
    save_bundle(os.path.join(out, "model.tsb"), final)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def train(cfg: Config, out: str, *, resume: bool = False, progress: bool = True,
          init: Model | None = None) -> dict:
    """Meta-train; returns a summary with the final validation and test accuracies. ``init``:
    start from this model's core. Started by torchrun with several processes, each runs its
    share of every meta-batch's tasks (:meth:`MetaTrainer.step`); the first writes the run
    folder, logs and evaluates."""
    from tqdm import tqdm

    rank, world = _distributed()
    lead = rank == 0                                  # the process that writes and evaluates
    data = binned_data(cfg, extras=True, progress=progress and lead)   # bad data: no empty run folder
    if lead:
        os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, "checkpoint.pt")
    tasks = training_tasks(cfg, data)
    tr = meta_trainer(cfg, data, tasks)
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
        from ..data.levels import reference_eq
        level_eq = reference_eq(cfg.data.level_eq)
    if lead:
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(config_to_dict(cfg), fh, indent=1)
    samplers, cross = _samplers(cfg, tasks)
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
                val_ok = _validate(tr, cfg, data, tasks, log)
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
    return _finish(tr, cfg, data, tasks, out, dict(
        out=out, iterations=tr.iteration, seconds=round(seconds, 1),
        stopped_early=stopped_early), init, level_eq, world)
