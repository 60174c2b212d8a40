"""Few-shot adaptation with the core frozen: features of every utterance computed once, then each
episode adapts a zero readout on its support set by the device rule and scores its queries
(:func:`evaluate`); words enrolled one at a time (:func:`incremental`); the voice-normalized
prototype rule (:func:`evaluate_voice_norm`)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dense import DenseSet
from .episodes import FewShotTasks
from .meta import inner_adapt, prototype_logits, readout_loss
from .model import Core, readout_logits

__all__ = ["evaluate", "features_of", "ci95", "evaluate_voice_norm", "incremental"]


def ci95(acc: np.ndarray) -> float:
    return float(1.96 * acc.std(ddof=1) / math.sqrt(acc.size)) if acc.size > 1 else 0.0


@torch.no_grad()
def features_of(core: Core, x: np.ndarray, batch: int = 512) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        phi, _ = core.features(torch.from_numpy(x[i:i + batch].astype(np.float32)))
        out.append(phi)
    return torch.cat(out) if out else torch.zeros(0, core.cfg.neurons * core.cfg.segments)


def evaluate(core: Core, lrs: dict, data: DenseSet, tasks: FewShotTasks, *, phase: str = "unseen",
             ways: int = 5, shots: int = 1, queries: int = 5, episodes: int = 600,
             inner_steps: int = 1, seed: int = 1234, subset: int = 0,
             feats: torch.Tensor | None = None, same_speaker: bool = False,
             cross_speaker: bool = False, rule: str = "prototype",
             query_feats: torch.Tensor | None = None) -> dict:
    """Few-shot accuracy of the frozen core with the device rule: ``prototype`` (one column per
    word, cosine scores; with ``inner_steps == 1``) or SGD steps from a zero readout.
    ``query_feats``: the queries' features from other audio of the same utterances (a channel
    mismatch between enrollment and use); by default ``feats``."""
    sampler = tasks.sampler(phase, ways, shots, queries, same_speaker=same_speaker, seed=seed,
                            cross_speaker=cross_speaker)
    pool, _ = tasks.pool(phase)
    if feats is None:
        feats = torch.zeros(len(data), core.cfg.neurons * core.cfg.segments)
        feats[pool] = features_of(core, data.x[pool, subset])
    accs, unseen_correct, unseen_total, seen_correct, seen_total = [], 0, 0, 0, 0
    init = {"w_out": torch.zeros(feats.shape[1], ways), "b_out": torch.zeros(ways)}
    step_lrs = {k: lrs[k].detach() for k in init}
    for i in range(episodes):
        ep = sampler.episode(i)
        phi_s = feats[ep.support]
        phi_q = (feats if query_feats is None else query_feats)[ep.query]
        ys, yq = torch.from_numpy(ep.support_y), torch.from_numpy(ep.query_y)
        if rule == "prototype" and inner_steps == 1:
            pred = prototype_logits(phi_s, ys, phi_q, ways, torch.tensor(1.0)).argmax(1)
        else:
            fast = inner_adapt(init, lambda f, p=phi_s, y=ys: readout_loss(f, p, y), step_lrs,
                               inner_steps)
            pred = readout_logits(phi_q, fast["w_out"], fast["b_out"]).argmax(1)
        ok = (pred == yq).numpy()
        accs.append(ok.mean())
        unseen_correct += int(ok[ep.query_unseen].sum())
        unseen_total += int(ep.query_unseen.sum())
        seen_correct += int(ok[~ep.query_unseen].sum())
        seen_total += int((~ep.query_unseen).sum())
    acc = np.array(accs)
    out = dict(accuracy=round(float(acc.mean()), 4), ci95=round(ci95(acc), 4), ways=ways,
               shots=shots, queries=queries, split=phase, episodes=episodes,
               inner_steps=inner_steps, same_speaker=same_speaker, cross_speaker=cross_speaker,
               rule=rule if inner_steps == 1 else "sgd")
    if phase == "all":
        out["accuracy_unseen_queries"] = round(unseen_correct / max(unseen_total, 1), 4)
        out["accuracy_seen_queries"] = round(seen_correct / max(seen_total, 1), 4)
    return out


def evaluate_voice_norm(feats: torch.Tensor, speakers: np.ndarray, tasks: FewShotTasks,
                        prior: torch.Tensor, phase: str = "unseen", ways: int = 5,
                        shots: int = 1, queries: int = 5, episodes: int = 600, seed: int = 1234,
                        recent: int = 16, n0: float = 2.0, same_speaker: bool = False,
                        cross_speaker: bool = False) -> dict:
    """The prototype rule with voice normalization (a measured option, not yet on the chip): a
    device that keeps the mean readout feature of the last ``recent`` utterances it heard,
    shrunk towards the population mean ``prior`` with the weight of ``n0`` utterances, and
    subtracts it from every feature before enrolling or scoring. Simulated per episode: the
    shots are centred by the mean of ``recent`` other utterances of their speaker plus the
    shots themselves, each query by the mean of ``recent`` other utterances of its speaker (none
    of them in the episode)."""
    f = F.normalize(feats.double(), dim=1, eps=1e-8)
    mu = F.normalize(prior.double(), dim=0, eps=1e-8)
    sampler = tasks.sampler(phase, ways, shots, queries, same_speaker=same_speaker, seed=seed,
                            cross_speaker=cross_speaker)
    pool, _ = tasks.pool(phase)
    by_spk = {int(s): pool[speakers[pool] == s] for s in np.unique(speakers[pool])}
    accs = []
    for i in range(episodes):
        ep = sampler.episode(i)
        rng = np.random.default_rng([seed, i, 0x7E])
        used = np.concatenate([ep.support, ep.query])
        cache: dict[int, torch.Tensor] = {}

        def voice_mean(spk: int, extra: np.ndarray = np.zeros(0, np.int64)) -> torch.Tensor:
            if spk not in cache:
                others = np.setdiff1d(by_spk[spk], used)
                cache[spk] = torch.from_numpy(rng.choice(others, min(recent, others.size),
                                                         replace=False))
            hist = torch.cat([cache[spk], torch.from_numpy(extra)])
            return (f[hist].sum(0) + n0 * mu) / (hist.numel() + n0)

        s_spk = speakers[ep.support]
        cols = []
        for c in range(ways):
            idx = ep.support[ep.support_y == c]
            spk = int(speakers[idx[0]])             # the word's enroller, with all its shots
            m = voice_mean(spk, ep.support[s_spk == spk])
            cols.append((f[idx] - m).mean(0))
        q = torch.stack([f[j] - voice_mean(int(speakers[j])) for j in ep.query])
        pred = (F.normalize(q, dim=1) @ F.normalize(torch.stack(cols), dim=1).T).argmax(1)
        accs.append(float((pred.numpy() == ep.query_y).mean()))
    acc = np.array(accs)
    return dict(accuracy=round(float(acc.mean()), 4), ci95=round(ci95(acc), 4), ways=ways,
                shots=shots, queries=queries, split=phase, episodes=episodes, inner_steps=1,
                same_speaker=same_speaker, cross_speaker=cross_speaker,
                rule=f"prototype, voice-normalized (recent {recent}, prior weight {n0:g})")


def _enroll_loss(fast: dict, phi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the enrolled words plus a fixed zero "none of these" logit.

    Without it, enrolling the first word is a softmax over one logit: zero gradient, and the
    first word's row is never written.
    """
    logits = readout_logits(phi, fast["w_out"], fast["b_out"])
    return F.cross_entropy(torch.cat([logits, logits.new_zeros(len(logits), 1)], 1), y)


def incremental(lrs: dict, feats: torch.Tensor, labels: np.ndarray, classes: list[int],
                shots: int = 1, queries: int = 5, runs: int = 50, seed: int = 7,
                rule: str = "prototype") -> dict:
    """Class-incremental enrollment: enroll ``classes`` one at a time and score queries of all
    enrolled classes after each enrollment. ``prototype`` (the device's rule): each word its own
    column, the mean of its shots, queries by cosine. ``softmax-step``: ONE readout step per word
    with its own shots, the new row starting at zero, over the logits of every enrolled class
    and a fixed zero "none" logit (see :func:`_enroll_loss`; the bias is not updated: one word at
    a time its gradient only ever favours the newest word). Mean over ``runs`` random class
    orders and shot/query draws."""
    n_cls = len(classes)
    acc = np.zeros((runs, n_cls))
    lr_w = float(lrs["w_out"])
    for run in range(runs):
        rng = np.random.default_rng([seed, run])
        order = rng.permutation(classes)
        w = torch.zeros(feats.shape[1], 0)
        b = torch.zeros(0)
        query_idx, query_y = [], []
        for k, c in enumerate(order):
            pool = np.nonzero(labels == c)[0]
            pick = rng.choice(pool, size=shots + queries, replace=False)
            phi = feats[pick[:shots]]
            if rule == "prototype":
                w = torch.cat([w, F.normalize(phi.mean(0), dim=0, eps=1e-8)[:, None]], 1)
                b = torch.cat([b, torch.zeros(1)])
            else:
                w = torch.cat([w, torch.zeros(feats.shape[1], 1)], 1)
                b = torch.cat([b, torch.zeros(1)])
                y = torch.full((shots,), k)
                fast = inner_adapt({"w_out": w, "b_out": b},
                                   lambda f, p=phi, t=y: _enroll_loss(f, p, t),
                                   {"w_out": lr_w, "b_out": 0.0}, 1)
                w, b = fast["w_out"].detach(), fast["b_out"].detach()
            query_idx += list(pick[shots:])
            query_y += [k] * queries
            pred = readout_logits(feats[query_idx], w, b).argmax(1).numpy()
            acc[run, k] = float((pred == np.array(query_y)).mean())
    mean = acc.mean(0)
    return dict(enrolled=list(range(1, n_cls + 1)), accuracy=[round(float(a), 4) for a in mean],
                ci95=[round(ci95(acc[:, k]), 4) for k in range(n_cls)], shots=shots,
                queries=queries, runs=runs)
