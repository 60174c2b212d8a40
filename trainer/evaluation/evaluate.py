"""`tessera eval` and the evaluations around it: the model (and baselines, compared models) on
the same few-shot episodes (:func:`~tessera.trainer.learning.episodes.evaluation_tasks`),
accuracy against inner steps and shots, words enrolled one at a time, the topology, and a model
as one RRAM programming would hold it."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from ...runtime.errors import InputError
from ..data.dense import DenseSet, load_dense
from ..learning.episodes import evaluation_tasks
from ..learning.adapt import evaluate, features_of
from ..learning.storage import Model
from ..learning.train import binned_data

__all__ = ["evaluate_model", "eval_setup", "curves", "incremental_eval", "program_device",
           "topology_report", "compare_features"]


def topology_report(model: Model) -> dict:
    """Connection sparsity, connections per hop distance and small-world measures of W_rec."""
    from ..learning.graph import small_world

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
    by_steps = [evaluate(model.core, model.lrs, data, tasks, phase="unseen", ways=cfg.data.ways,
                         shots=k_steps, queries=cfg.data.queries, episodes=episodes, inner_steps=s,
                         seed=seed, feats=feats) for s in steps_axis]
    by_shots = []
    for k in shots_axis:
        try:
            by_shots.append(evaluate(model.core, model.lrs, data, tasks, phase="unseen",
                                     ways=cfg.data.ways, shots=k, queries=cfg.data.queries,
                                     episodes=episodes, inner_steps=1, seed=seed, feats=feats))
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
    """Enroll every class of ``corpus`` one at a time (see :func:`~tessera.trainer.learning.adapt.incremental`) with
    the model's rule.

    With the softmax-step rule, features are centred by the mean feature of the training
    utterances: from a zero readout, one CE step for a single new class pushes the older rows
    along the new (non-negative) feature, which without centring makes the newest word win every
    query. The prototype rule needs no centring (each word writes only its own column).
    ``speaker``: shots and queries all by this speaker (a person growing their own vocabulary).
    """
    from ..learning.adapt import incremental

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

    from ..learning.rram import RRAMTrainConfig, device_weight

    cfg = RRAMTrainConfig(enabled=True, weight_bits=weight_bits, drift_seconds=drift_seconds)
    span = cfg.g_max - cfg.g_min                    # the conductance range w_max maps to
    cfg = dataclasses.replace(cfg, write_noise=(0.0, write_noise * span / math.sqrt(2)))
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
    data = binned_data(cfg, progress=progress, level_eq=model.level_eq)   # WAVs heard as the device
    feats = _model_features(model, data, cfg.data.corpus)
    tasks = evaluation_tasks(data, cfg.data.unseen, cfg.train.seed)
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
    from ..data.levels import audio_of
    from .baselines import evaluate_dtw, evaluate_dtw_envelope, log_envelopes

    cfg, data, tasks, feats = setup or eval_setup(model, data_path)
    others = [(m, compare_features(m, cfg, data, model.level_eq)) for m in compare]
    prior = None
    if voice_norm:
        from ..learning.adapt import evaluate_voice_norm

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
            r = evaluate(model.core, model.lrs, data, tasks, phase=split, ways=w, shots=k,
                         queries=q, episodes=episodes, inner_steps=inner_steps, seed=seed,
                         feats=feats, same_speaker=same_speaker, cross_speaker=cross_speaker,
                         rule=model.config.meta.rule)
            out.append(dict(method=model.method, **r))
            if prior is not None:
                out.append(dict(method=model.method, **evaluate_voice_norm(
                    feats, data.speakers, tasks, prior, split, w, k, q, episodes, seed,
                    recent=voice_norm, same_speaker=same_speaker, cross_speaker=cross_speaker)))
            for m, f in others:
                steps = transfer_steps if (transfer_steps and m.method == "transfer") \
                    else m.config.meta.inner_steps
                r = evaluate(m.core, m.lrs, data, tasks, phase=split, ways=w, shots=k, queries=q,
                             episodes=episodes, inner_steps=steps, seed=seed, feats=f,
                             same_speaker=same_speaker, cross_speaker=cross_speaker,
                             rule=m.config.meta.rule)
                out.append(dict(method=m.method, model=m.path, **r))
            if "dtw" in baselines:
                out.append(evaluate_dtw(data, tasks, split, w, k, q, episodes, seed, same_speaker,
                                        cross_speaker))
            if envelopes is not None:
                out.append(evaluate_dtw_envelope(envelopes, tasks, split, w, k, q, episodes, seed,
                                                 same_speaker, cross_speaker))
    return out
