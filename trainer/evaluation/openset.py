""""None of these": open-set episodes through the chip, the calibration of its confidence and
its threshold (``tessera calibrate``), and the device-path measurements of issue 10.

Everything here scores with the chip's own integer rule (:meth:`Chip.enroll`,
:meth:`Chip.scores_q`, :func:`tessera.runtime.readout.decide`) on the chip's integer features, so what is measured
is what the device answers.

Open-set episode (one speaker): ``ways`` words enrolled with ``shots`` utterances each, one word at
a time; positives are that speaker's other utterances of those words, negatives are his
utterances of words that were not enrolled, plus silence and noise clips. A positive is a *hit*
when it is accepted with the right label; a negative is a *false accept* when it is accepted at
all.

Calibration (fitted on the corpus's validation speakers, never on FSDD): a logistic regression of
"the answer is right" on the best cosine c1 and the margin c1 - c2 gives ``calib = [a, m, b]``;
the threshold is the smallest cosine whose false-accept rate of non-enrolled words on the
validation episodes is at most ``target_fa``; ``min_inputs`` (silence) is a quarter of the 1st
percentile of the input events (front-end spikes the chip reads) per word: the core fires
spontaneously in silence, the front-end does not.
"""

from __future__ import annotations

import numpy as np

from ...runtime.chip import Chip
from ...runtime.spikes import events_to_frames
from ...runtime.constants import SAMPLE_RATE
from ...runtime.errors import InputError
from ...runtime.tables import cos_from_q

__all__ = ["chip_features", "noise_clips", "open_set_episodes", "fit_calibration", "calibrate",
           "reliability", "hits_curve"]


def chip_features(chip: Chip, data, idx: np.ndarray, batch: int = 64
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(phi (n, D), input events per window (n,): the front-end spikes the chip reads, as it
    counts them) of utterances ``idx`` of a spike set."""
    tab = chip.tab
    ms = tab.steps * tab.bin_ms
    phis, spikes = [], []
    for a in range(0, idx.size, batch):
        part = idx[a:a + batch]
        frames = np.zeros((part.size, ms, data.channels), np.uint8)
        for j, i in enumerate(part):
            frames[j] = events_to_frames(*data.sample(int(i)), data.channels, ms)
        phis.append(chip.run_batch(frames))
        x = frames[:, :, tab.channels].astype(np.int64).reshape(
            part.size, tab.steps, tab.bin_ms, tab.inputs).sum(2)
        spikes.append(np.minimum(x, 255).sum((1, 2)))
    D = tab.features
    return (np.concatenate(phis) if phis else np.zeros((0, D), np.int64),
            np.concatenate(spikes) if spikes else np.zeros(0, np.int64))


def noise_clips(seconds: float = 1.0, count: int = 12, seed: int = 0, rate: int = SAMPLE_RATE):
    """Silence and noise (white, pink, brown, hum) at several levels, int16 PCM clips."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = [("silence", np.zeros(n, np.int16))]
    kinds = ["white", "pink", "brown", "hum"]
    for i in range(count - 1):
        kind = kinds[i % len(kinds)]
        level = 10 ** rng.uniform(-3, -0.7)              # -60 .. -14 dBFS rms
        w = rng.standard_normal(n)
        if kind == "pink":
            spec = np.fft.rfft(w)
            spec /= np.sqrt(np.arange(1, spec.size + 1))
            w = np.fft.irfft(spec, n)
        elif kind == "brown":
            w = np.cumsum(w)
            w -= np.linspace(w[0], w[-1], n)
        elif kind == "hum":
            t = np.arange(n) / rate
            w = sum(np.sin(2 * np.pi * 50 * h * t) / h for h in range(1, 8)) \
                + 0.1 * w
        w = w / max(np.sqrt((w ** 2).mean()), 1e-12) * level
        out.append((f"{kind} {20 * np.log10(level):.0f} dBFS",
                    np.round(np.clip(w, -1, 1) * 32767).astype(np.int16)))
    return out


def pcm_features(chip: Chip, clips) -> tuple[np.ndarray, np.ndarray]:
    phis, spikes = [], []
    for _, pcm in clips:
        chip.reset()
        chip.feed_audio(pcm, SAMPLE_RATE)
        phis.append(chip.features())
        spikes.append(chip.state.inputs)
    chip.reset()
    return np.array(phis, np.int64), np.array(spikes, np.int64)


def open_set_episodes(chip: Chip, phi: np.ndarray, spikes: np.ndarray, labels: np.ndarray,
                      speakers: np.ndarray, noise_phi: np.ndarray, noise_inputs: np.ndarray,
                      ways: int = 5, shots: int = 1, episodes: int = 200,
                      seed: int = 0) -> dict:
    """Scores of open-set episodes: per query (c1, c2, input events, is_positive,
    best_is_right, is_noise)."""
    rng = np.random.default_rng(seed)
    spk_ids = np.unique(speakers)
    rows = []
    for ep in range(episodes):
        s = spk_ids[rng.integers(spk_ids.size)]
        mine = speakers == s
        classes = np.unique(labels[mine])
        counts = np.array([(mine & (labels == c)).sum() for c in classes])
        usable = classes[counts > shots]
        if usable.size < ways + 1:
            continue
        enrolled = rng.choice(usable, ways, replace=False)
        for c in chip.classes():
            chip.forget(c)
        queries = []
        for c in rng.permutation(enrolled):                       # one word at a time
            idx = rng.permutation(np.nonzero(mine & (labels == c))[0])
            chip.enroll(f"w{int(c)}", list(phi[idx[:shots]]))
            queries += [(i, f"w{int(c)}") for i in idx[shots:]]
        others = np.nonzero(mine & ~np.isin(labels, enrolled))[0]
        queries += [(i, None) for i in others]
        act = chip.enrolled()
        names = [chip.readout.names[i] for i in act]
        q_idx = np.array([i for i, _ in queries])
        cq = np.vstack([chip.scores_q(phi[q_idx], act), chip.scores_q(noise_phi, act)])
        sp = np.concatenate([spikes[q_idx], noise_inputs])
        truth = [t for _, t in queries] + [None] * len(noise_phi)
        srt = -np.sort(-cq, axis=1)
        best = cq.argmax(1)
        for j in range(cq.shape[0]):
            rows.append((int(srt[j, 0]), int(srt[j, 1]) if srt.shape[1] > 1 else 0, int(sp[j]),
                         truth[j] is not None, names[best[j]] == truth[j],
                         j >= len(queries)))
    if not rows:
        raise InputError(f"no open-set episode possible: a speaker needs {ways + 1} words with "
                         f"more than {shots} utterance(s) each")
    a = np.array(rows, np.int64).reshape(-1, 6)
    return dict(c1=a[:, 0], c2=a[:, 1], inputs=a[:, 2], positive=a[:, 3].astype(bool),
                right=a[:, 4].astype(bool), noise=a[:, 5].astype(bool),
                cos_frac=chip.tab.cos_frac)


def _accepts(sc: dict, thr_q: int, min_inputs: int) -> np.ndarray:
    return (sc["c1"] >= thr_q) & (sc["inputs"] >= min_inputs)


def hits_curve(sc: dict, min_inputs: int = 0) -> dict:
    """Correct hits against false accepts over every threshold (cosine units 2^-cos_frac)."""
    pos, neg = sc["positive"], ~sc["positive"]
    thr = np.unique(np.concatenate([sc["c1"], [sc["c1"].max(initial=0) + 1]]))
    hits, fas = [], []
    for t in thr:
        acc = _accepts(sc, t, min_inputs)
        hits.append(float((acc & pos & sc["right"]).sum() / max(pos.sum(), 1)))
        fas.append(float((acc & neg).sum() / max(neg.sum(), 1)))
    return dict(threshold=cos_from_q(thr, sc["cos_frac"]).tolist(), hits=hits,
                false_accepts=fas)


def operating_point(sc: dict, thr_q: int, min_inputs: int) -> dict:
    pos, neg = sc["positive"], ~sc["positive"]
    acc = _accepts(sc, thr_q, min_inputs)
    noise = sc["noise"]
    return dict(hits=round(float((acc & pos & sc["right"]).sum() / max(pos.sum(), 1)), 4),
                false_accepts=round(float((acc & neg).sum() / max(neg.sum(), 1)), 4),
                false_accepts_words=round(float((acc & neg & ~noise).sum()
                                                / max((neg & ~noise).sum(), 1)), 4),
                false_accepts_noise=round(float((acc & noise).sum() / max(noise.sum(), 1)), 4),
                closed_set_accuracy=round(float(sc["right"][pos].mean()), 4) if pos.any()
                else 0.0,
                positives=int(pos.sum()), negatives=int(neg.sum()))


def hit_at_fa(curve: dict, fa: float) -> float:
    ok = [h for h, f in zip(curve["hits"], curve["false_accepts"]) if f <= fa]
    return round(max(ok, default=0.0), 4)


def fit_calibration(sc: dict, iters: int = 500) -> list[float]:
    """Logistic regression of "answer right" on (c1, c1 - c2): [a, m, b] (natural-log units)."""
    c1, gap = cos_from_q(sc["c1"], sc["cos_frac"]), cos_from_q(sc["c1"] - sc["c2"], sc["cos_frac"])
    x = np.stack([c1, gap, np.ones(sc["c1"].size)], 1)
    y = (sc["positive"] & sc["right"]).astype(np.float64)
    w = np.zeros(3)
    for _ in range(iters):                                # Newton's method, lightly ridged
        p = 1 / (1 + np.exp(-(x @ w)))
        g = x.T @ (p - y) + 1e-3 * w
        h = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(3)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return [float(v) for v in w]


def stated(sc: dict, calib: list[float]) -> np.ndarray:
    """The probability that each query's answer is right, as ``calib`` states it."""
    z = calib[0] * cos_from_q(sc["c1"], sc["cos_frac"]) + \
        calib[1] * cos_from_q(sc["c1"] - sc["c2"], sc["cos_frac"]) + calib[2]
    return 1 / (1 + np.exp(-z))


def reliability(sc: dict, calib: list[float] | None, bins: int = 10,
                p: np.ndarray | None = None) -> list[dict]:
    """The stated probability that an answer is right against how often it is (every query of
    the episodes, accepted or not), per tenth of the stated range: ``stated`` (its mean),
    ``observed`` and ``n``; empty bins left out. ``p``: the stated probabilities, when they
    do not come from one ``calib`` (:func:`held_out_stated`)."""
    p = stated(sc, calib) if p is None else p
    y = (sc["positive"] & sc["right"]).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (p >= a) & (p < b if b < 1 else p <= b)
        if m.any():
            out.append(dict(bin=f"{a:.1f}-{b:.1f}", stated=round(float(p[m].mean()), 4),
                            observed=round(float(y[m].mean()), 4), n=int(m.sum())))
    return out


def calibration_error(sc: dict, calib: list[float] | None, bins: int = 10,
                      p: np.ndarray | None = None) -> float:
    """Expected calibration error of the confidence of accepted-or-not answers (the
    :func:`reliability` table's gaps weighted by their counts)."""
    rows = reliability(sc, calib, bins, p)
    total = sum(r["n"] for r in rows)
    return round(sum(r["n"] * abs(r["stated"] - r["observed"]) for r in rows) / max(total, 1), 4)


def _rows(sc: dict, m: np.ndarray) -> dict:
    return {k: v[m] if isinstance(v, np.ndarray) else v for k, v in sc.items()}


def _joined(parts: list[dict]) -> dict:
    """Episode scores of several runs as one (their arrays end to end)."""
    return {k: np.concatenate([x[k] for x in parts]) if isinstance(v, np.ndarray) else v
            for k, v in parts[0].items()}


def person_episodes(chip: Chip, s: dict, n_phi, n_sp, episodes: int, seed: int) -> dict:
    """:func:`open_set_episodes` of each person of ``s`` alone (``episodes`` shared out among
    them), the rows tagged with their ``person``; a person with too few words is left out."""
    people = np.unique(s["speakers"])
    parts = []
    for p in people:
        m = s["speakers"] == p
        try:
            sc = open_set_episodes(chip, s["phi"][m], s["inputs"][m], s["labels"][m],
                                   s["speakers"][m], n_phi, n_sp,
                                   episodes=max(1, episodes // people.size), seed=seed + int(p))
        except InputError:
            continue
        parts.append(dict(sc, person=np.full(sc["c1"].size, int(p), np.int64)))
    if not parts:
        raise InputError("no open-set episode possible: no person has 6 words with more than "
                         "one utterance each")
    return _joined(parts)


def held_out_stated(sc: dict) -> np.ndarray:
    """Each query's stated probability from a calibration fitted on every other person's
    queries (leave one person out): what a calibration fitted on others states for a new
    person."""
    p = np.empty(sc["c1"].size)
    for q in np.unique(sc["person"]):
        mine = sc["person"] == q
        p[mine] = stated(_rows(sc, mine), fit_calibration(_rows(sc, ~mine)))
    return p


def _fit_on_everyone(chip: Chip, sets: dict, n_phi, n_sp, episodes: int, cal: dict) -> list:
    """``calibrate --fit-people all``: the confidence fitted on the validation and test people's
    own episodes together, its reliability stated leave one person out (into ``cal``); returns
    the fit."""
    both = [person_episodes(chip, sets[k], n_phi, n_sp, episodes, seed)
            for k, seed in (("val", 100), ("test", 200))]
    pooled = _joined(both)
    calib = fit_calibration(pooled)
    p = held_out_stated(pooled)
    is_test = np.arange(p.size) >= both[0]["c1"].size
    cal.update(calib=[round(x, 4) for x in calib],
               fitted_on=cal["fitted_on"] + f"; the confidence's calibration on the "
               f"validation and test speakers together ({episodes} episodes each, shared "
               f"out among their {np.unique(pooled['person']).size} people)",
               heldout_people=int(np.unique(pooled["person"]).size),
               heldout_reliability=reliability(pooled, None, p=p),
               heldout_calibration_error=calibration_error(pooled, None, p=p),
               val_calibration_error=calibration_error(_rows(pooled, ~is_test), None,
                                                       p=p[~is_test]),
               test_reliability=reliability(_rows(pooled, is_test), None, p=p[is_test]),
               test_calibration_error=calibration_error(_rows(pooled, is_test), None,
                                                        p=p[is_test]))
    return calib


def calibrate(model_path: str, tsr: str, data_path: str, target_fa: float = 0.25,
              episodes: int = 300, fsdd: str | None = None, out: str | None = None,
              progress: bool = False, fit_people: str = "choose") -> dict:
    """Fit the open-set rule on the corpus's validation speakers, write the model with it as a
    new bundle at ``out`` (the model file itself is never rewritten; None: report only), and
    report the operating point on its test speakers and, for validation only, on the
    FSDD-style WAV folder ``fsdd``. ``fit_people`` "all": the confidence's calibration is
    fitted on the validation and test speakers together (the threshold still on the
    validation speakers alone), and its reliability stated leave one person out."""
    if fit_people not in ("choose", "all"):
        raise InputError(f"fit_people must be 'choose' or 'all', got {fit_people!r}")
    from ..data.readers import read_any
    from ..data.chipdata import chip_and_data
    from ..learning.storage import model_state, refuse_in_place, save_bundle

    if out:                                       # before minutes of fitting, not after
        refuse_in_place(model_path, out)
    chip, data = chip_and_data(tsr, data_path, progress)
    noise = noise_clips(count=24, seed=1)
    n_phi, n_sp = pcm_features(chip, noise)
    sets = {}
    for split_name, split_id in (("val", 1), ("test", 2)):
        idx = np.nonzero(data.split == split_id)[0]
        if not idx.size:
            raise InputError(f"the corpus has no {split_name} speakers", source=data_path)
        phi, sp = chip_features(chip, data, idx)
        sets[split_name] = dict(phi=phi, inputs=sp, labels=data.labels[idx],
                               speakers=data.speakers[idx])
    val = sets["val"]
    min_inputs = int(np.percentile(val["inputs"], 1) // 4)
    sc = open_set_episodes(chip, val["phi"], val["inputs"], val["labels"], val["speakers"],
                           n_phi, n_sp, episodes=episodes, seed=11)
    calib = fit_calibration(sc)
    words = ~sc["positive"] & ~sc["noise"]          # the threshold holds for words alone
    cands = np.sort(sc["c1"][words & (sc["inputs"] >= min_inputs)])
    k = int(np.floor(target_fa * words.sum()))
    thr_q = int(cands[-k - 1] + 1) if 0 <= k < cands.size else 0
    cal = dict(none_threshold=round(cos_from_q(thr_q, sc["cos_frac"]), 5), min_inputs=min_inputs,
               calib=[round(x, 4) for x in calib], target_false_accepts=target_fa,
               fitted_on=f"{data_path} validation speakers, {episodes} 5-way 1-shot open-set "
                         f"episodes + {len(noise)} silence/noise clips",
               val=operating_point(sc, thr_q, min_inputs),
               val_calibration_error=calibration_error(sc, calib))
    test = sets["test"]
    st = open_set_episodes(chip, test["phi"], test["inputs"], test["labels"], test["speakers"],
                           n_phi, n_sp, episodes=episodes, seed=12)
    cal["test"] = operating_point(st, thr_q, min_inputs)
    cal["test_hits_at_5pct_fa"] = hit_at_fa(hits_curve(st, min_inputs), 0.05)
    if fit_people == "all":          # the calibration from every person; stated left-one-out
        calib = _fit_on_everyone(chip, sets, n_phi, n_sp, episodes, cal)
    else:
        cal["test_calibration_error"] = calibration_error(st, calib)
        cal["test_reliability"] = reliability(st, calib)
    if out:
        save_bundle(out, model_state(model_path), calibration=cal)
        cal["path"] = out
    cal["curves"] = {"TTS, unseen voices": hits_curve(st, min_inputs)}
    cal["points"] = {"TTS": (cal["test"]["false_accepts_words"], cal["test"]["hits"])}
    if fsdd:
        from ..learning.storage import load_model
        f = read_any(fsdd, level_eq=load_model(model_path).level_eq, progress=progress)
        phi, sp = chip_features(chip, f, np.arange(len(f)))
        sf = open_set_episodes(chip, phi, sp, f.labels, f.speakers, n_phi, n_sp,
                               episodes=episodes, seed=13)
        cal["fsdd"] = operating_point(sf, thr_q, min_inputs)
        curve = hits_curve(sf, min_inputs)
        cal["fsdd_hits_at_5pct_fa"] = hit_at_fa(curve, 0.05)
        cal["fsdd_calibration_error"] = calibration_error(sf, calib)
        cal["curves"]["FSDD speakers (same speaker)"] = curve
        cal["points"]["FSDD"] = (cal["fsdd"]["false_accepts_words"], cal["fsdd"]["hits"])
    return cal
