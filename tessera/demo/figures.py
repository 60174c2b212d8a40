"""The demo's figures, drawn on a local chip running the same model as the board: the pipeline
of one word, the learned layout, the board's confusion, the readout scores while the sentence
streams, accuracy against shots."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .sets import DemoSet

__all__ = ["local_figures"]


def local_figures(ds: DemoSet, chip, folder: str, out: dict, shots_curve, draws: int,
                   seed: int) -> dict:
    """The report's figures on a local chip running the same model."""
    from ..tools import plots

    tab = chip.tab
    pngs = {}
    # audio -> front-end spikes -> core spikes, for the first word's shot
    w0 = sorted(ds.shots)[0]
    pcm = ds.shots[w0].pcm
    chip.reset()
    fe = chip.cochlea.encode(pcm)[: tab.steps * tab.bin_ms]
    chip.reset()
    core = chip.run(fe)
    chip.end_utterance()
    core = np.vstack([core, chip.tail])
    pngs["pipeline"] = plots.pipeline_png(
        os.path.join(folder, "pipeline.png"), pcm, fe, core, tab.tile, tab.bin_ms,
        title=f"'{w0}' ({ds.shots[w0].voice}): audio, the front-end's {fe.shape[1]} channels "
              f"the model reads, the core's {tab.neurons} neurons on {tab.rows * tab.cols} tiles")
    # the learned layout by tile, with the routing table's hop distances
    hops = np.full((tab.rows * tab.cols,) * 2, -1)
    for a, b, h in tab.routes:
        hops[a, b] = h
    pngs["layout"] = plots.layout_heatmap_png(
        os.path.join(folder, "layout.png"), chip.W_rec, tab.rows, tab.cols, tab.tile,
        hops=hops, title=f"the learned recurrent core on a {tab.rows}x{tab.cols} grid of "
                         f"{tab.tile}-neuron tiles (numbers: routing hops between tiles)")
    # confusion of the answers the board gave
    c = out["table"]["confusion"]
    pngs["confusion"] = plots.confusion_png(os.path.join(folder, "confusion.png"), c["matrix"],
                                            c["rows"], c["cols"],
                                            title="the board's answers (rows: what was said)")
    # readout scores over time of the streamed sentence (local chip, same model and shots)
    for w in sorted(ds.shots):
        chip.reset()
        chip.run(chip.cochlea.encode(ds.shots[w].pcm))
        chip.enroll(w)
    sent = out.get("sentence") or {}
    if sent:
        pcm = sent.pop("pcm")
        t_ms, scores = _scores_over_time(chip, pcm)
        pngs["scores"] = plots.scores_png(
            os.path.join(folder, "scores.png"), pcm, t_ms, scores, sent["words"],
            sent["events"], tab.cos_from_q(chip.readout.none_threshold),
            window_ms=tab.steps * tab.bin_ms,
            title="readout scores while the sentence streams (cosine with each enrolled word, "
                  "window ending at t); " + ("shaded: the windows of the board's detections"
                                             if sent["events"] else "the board detected no word"))
    # accuracy against the number of shots (local chip, shots drawn from the pool)
    curve = _shots_curve(chip, ds, shots_curve, draws, seed)
    if curve:
        out["shots_curve"] = curve
        pngs["shots"] = plots.shots_png(os.path.join(folder, "shots.png"), curve,
                                        title="accuracy against shots per word (local chip, "
                                              "the board's rule: a 'none' is wrong; shots "
                                              "drawn at random)")
    return pngs


def _scores_over_time(chip, pcm: np.ndarray, hop_ms: int = 50):
    """Cosine of each enrolled word with the window that ends at t, every ``hop_ms``."""
    tab = chip.tab
    length = tab.steps * tab.bin_ms
    chip.reset()
    frames = chip.cochlea.encode(pcm)
    ends = np.arange(hop_ms, frames.shape[0] + 1, hop_ms)
    wins = np.zeros((ends.size, length, frames.shape[1]), frames.dtype)
    for i, e in enumerate(ends):
        seg = frames[max(0, e - length):e]
        wins[i, length - seg.shape[0]:] = seg
    phi = chip.run_batch(wins)
    cq = chip.scores_q(phi)
    names = [chip.readout.names[i] for i in chip.enrolled()]
    return ends, {w: tab.cos_from_q(cq[:, j]) for j, w in enumerate(names)}


def _shots_curve(chip, ds: DemoSet, shots_curve, draws: int, seed: int) -> list[dict]:
    """Accuracy against the shots per word, by the board's own rule (an answer under the
    threshold in use is "none", and wrong), and of the nearest word alone
    (``accuracy_nearest``): ``draws`` random draws of the shots from each word's pool, the
    rest asked."""
    pool = {w: u for w, u in ds.pool.items() if len(u) >= 2}
    if len(pool) < 2:
        return []
    words = sorted(pool)
    feats, who = [], []
    for w in words:
        for u in pool[w]:
            chip.reset()
            chip.run(chip.cochlea.encode(u.pcm))
            feats.append(chip.features())
            who.append(w)
    feats, who = np.stack(feats), np.array(who)
    rng = np.random.default_rng(seed)
    curve = []
    for k in shots_curve:
        if min(len(pool[w]) for w in words) <= k:
            break
        accs, near = [], []
        for _ in range(draws):
            for w in chip.classes():
                chip.forget(w)
            test = np.ones(len(who), bool)
            for w in words:
                idx = rng.choice(np.flatnonzero(who == w), size=k, replace=False)
                chip.enroll(w, list(feats[idx]))
                test[idx] = False
            cq = chip.scores_q(feats[test])
            names = np.array([chip.readout.names[i] for i in chip.enrolled()])
            nearest = names[cq.argmax(axis=1)] == who[test]
            # the board's rule: below the threshold in use the answer is "none", and wrong
            taken = cq.max(axis=1) >= chip.readout.none_threshold
            accs.append(float(np.mean(nearest & taken)))
            near.append(float(np.mean(nearest)))
        curve.append(dict(shots=k, accuracy=round(float(np.mean(accs)), 4),
                          low=round(float(np.min(accs)), 4), high=round(float(np.max(accs)), 4),
                          accuracy_nearest=round(float(np.mean(near)), 4),
                          draws=draws, words=len(words)))
    return curve
