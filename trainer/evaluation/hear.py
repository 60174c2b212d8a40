"""Hearing people never heard: the real-voice features, the named speaker splits and the episodes.

One evaluation path for the ladder of issue 34 (``tools/hear_ladder.py``) and ``tessera bench
hear``: every recording goes through the runtime's own front-end (:class:`~tessera.runtime.frontend.Cochlea`,
default spec, a fresh state per utterance), its spikes are counted per 10 ms bin on the channels the
default model reads (every third: 0, 3, ..., 696), at most :data:`MAX_BINS` bins, and kept as
uint8 (the chip's own bins, ``x[t, c] = min(255, count)``).

Speakers are split by name, never by chance, so every run holds out the same people:

- ``train``: everyone else of DSPSpeech-20 (26 people) and Arabic Speech Commands (18 people);
- ``choose``: the people every constant, recipe and checkpoint is chosen on: DSPSpeech-20's
  :data:`~tessera.trainer.data.real.HOLDOUT` (4) and the Arabic set's own validation people (6);
- ``report``: people never chosen on, reported once per candidate: 4 more DSPSpeech-20 students
  (:data:`DSP_REPORT`) and the Arabic set's own test people (6);
- FSDD (george, jackson, lucas): validation only, never trained on, never used to choose.

Episodes are 5-way within one corpus (its own words): ``within`` (shots and queries by one
person) and ``across`` (shots by one person, queries by another), scored with the device's rule:
the cosine to each word's mean shot (a prototype).
"""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import re

import numpy as np

from ...runtime.errors import InputError

__all__ = ["MAX_BINS", "DSP_REPORT", "ASC_CHOOSE", "ASC_REPORT", "HearSet", "build_hear_set",
           "load_hear_set", "episode_accuracy", "score_embeddings", "model_embeddings",
           "score_model"]

#: bins kept per utterance (1.5 s of 10 ms bins)
MAX_BINS = 150
#: the front-end channels read: every third of 700 (the default model's subset 0)
CHANNEL_STEP = 3
#: four more DSPSpeech-20 students, reported and never chosen on (sorted names, every eighth of
#: the 30 left after HOLDOUT)
DSP_REPORT = ("15307110189", "15307130232", "16307130192", "16307130307")
#: Arabic Speech Commands' own validation and test people (its README)
ASC_CHOOSE = ("00000002", "00000007", "00000008", "00000012", "00000021", "00000025")
ASC_REPORT = ("00000003", "00000004", "00000010", "00000014", "00000026", "00000028")

#: words no recipe may train on when it is chosen on unseen words (``Recipe.unseen``): five of
#: DSPSpeech-20's (the SHD split's indices) and the Arabic set's ten digits; the ``unseen`` rows
#: of :func:`score_embeddings` ask the ``choose`` people these words only
UNSEEN_WORDS = {"dsp": ("00", "03", "04", "11", "12"),
                "asc": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                        "nine")}

_FSDD = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


class HearSet:
    """Binned utterances with their corpus, word, speaker and split (arrays of equal length)."""

    def __init__(self, x: list, corpus: np.ndarray, word: np.ndarray, speaker: np.ndarray,
                 split: np.ndarray):
        self.x, self.corpus, self.word, self.speaker, self.split = x, corpus, word, speaker, split

    def __len__(self) -> int:
        return len(self.x)

    def unseen(self) -> np.ndarray:
        """True where the word is one of :data:`UNSEEN_WORDS`."""
        return np.array([w in UNSEEN_WORDS.get(c, ()) for c, w in zip(self.corpus, self.word)])

    def where(self, **kw) -> np.ndarray:
        m = np.ones(len(self), bool)
        for k, v in kw.items():
            m &= np.isin(getattr(self, k), np.atleast_1d(v))
        return np.flatnonzero(m)


def _split_of(corpus: str, speaker: str) -> str:
    from ..data.real import HOLDOUT
    if corpus == "fsdd":
        return "fsdd"
    choose, report = (HOLDOUT, DSP_REPORT) if corpus == "dsp" else (ASC_CHOOSE, ASC_REPORT)
    return "choose" if speaker in choose else "report" if speaker in report else "train"


def _items(dsp: str | None, asc: str | None, fsdd: str | None) -> list[tuple]:
    items = []
    for corpus, root in (("dsp", dsp), ("asc", asc)):
        if not root:
            continue
        paths = sorted(glob.glob(os.path.join(root, "[0-9]*", "*.flac")))
        if not paths:
            raise InputError("no <speaker>/<speaker>-<word>-<take>.flac files", source=root)
        for p in paths:
            spk, word, _ = os.path.basename(p)[:-5].split("-")
            items.append((p, corpus, word, spk))
    if fsdd:
        for p in sorted(glob.glob(os.path.join(fsdd, "*.wav"))):
            m = _FSDD.match(os.path.basename(p))
            if m:
                items.append((p, "fsdd", m[1], m[2]))
    return items


def _voice_copy(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new voice and channel for one recording (float, -1..1): the ``voice`` preset of
    :mod:`~tessera.trainer.data.augment` (speed, vocal tract, pitch, microphone, room, band,
    noise) at a random level, as ``tessera corpus real`` renders its copies."""
    from ...runtime.audio import to_int16
    from ..data.augment import AUGMENT_PRESETS, add_noise
    aug = AUGMENT_PRESETS["voice"]
    speech, _ = aug.voice(x, rng)
    peak = float(np.max(np.abs(speech))) or 1.0
    speech = speech / peak * 10 ** (rng.uniform(-18.0, -1.0) / 20)
    rms = float(np.sqrt(np.mean(speech ** 2)))
    kind = str(aug.noise_kinds[int(rng.integers(len(aug.noise_kinds)))])
    speech = add_noise(speech, rng, float(rng.uniform(*aug.snr_db)), rms, kind)
    speech, _ = aug.band(speech, rng)
    return to_int16(speech)


def _encode(jobs: list) -> list[np.ndarray]:
    """Bins of each (path, copy, seed) job: copy 0 as recorded, others through a new voice."""
    from ...runtime.frontend import Cochlea
    from ...runtime.threads import set_blas_threads
    from ..data.real import read_flac

    set_blas_threads(1)
    fe = Cochlea()
    out = []
    for p, copy, seed in jobs:
        x = read_flac(p)
        if copy:
            pcm = _voice_copy(x / 32768.0, np.random.default_rng(seed))
        else:
            pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16)
        s = fe.encode(pcm)[:, ::CHANNEL_STEP][:, :700 // CHANNEL_STEP]
        t = min(len(s) // 10, MAX_BINS)
        out.append(np.minimum(s[: t * 10].reshape(t, 10, -1).sum(1), 255).astype(np.uint8))
    return out


def build_hear_set(out: str, dsp: str | None, asc: str | None, fsdd: str | None,
                   workers: int = 2, progress: bool = True, copies: int = 0,
                   seed: int = 0) -> dict:
    """Encode the folders given into ``out`` (.npz); ``copies`` more renderings of every
    ``train`` recording through a random new voice and channel (split ``train``, the same
    person's name). Returns a summary."""
    from tqdm import tqdm

    items = _items(dsp, asc, fsdd)
    if not items:
        raise InputError("hear set: no folder given")
    jobs = [(it[0], 0, 0) for it in items]
    train = [(k, it) for k, it in enumerate(items) if _split_of(it[1], it[3]) == "train"]
    for c in range(1, copies + 1):
        jobs += [(it[0], c, seed * 1_000_003 + c * 100_003 + k) for k, it in train]
        items = items + [it for _, it in train]
    chunks = [jobs[i:i + 64] for i in range(0, len(jobs), 64)]
    xs: list = []
    bar = tqdm(total=len(items), unit="utt", desc="hear set", disable=not progress, leave=False)
    ctx = mp.get_context("fork")
    with ctx.Pool(max(1, workers)) as pool:
        for res in pool.imap(_encode, chunks):
            xs.extend(res)
            bar.update(len(res))
    bar.close()
    lens = np.array([len(a) for a in xs])
    split = np.array([_split_of(it[1], it[3]) for it in items])
    speaker = np.array([it[3] for it in items])
    tmp = out + ".tmp.npz"
    np.savez(tmp, x=np.concatenate(xs), lens=lens, corpus=np.array([it[1] for it in items]),
             word=np.array([it[2] for it in items]), speaker=speaker, split=split)
    os.replace(tmp, out)
    return dict(path=out, utterances=len(items), mean_bins=round(float(lens.mean()), 1),
                splits={s: dict(utterances=int((split == s).sum()),
                                people=int(np.unique(speaker[split == s]).size))
                        for s in np.unique(split)})


def tts_hear_set(path: str) -> HearSet:
    """The train-split voices of a corpus .h5 (``tessera corpus build``) binned as a hear set's
    ``train`` utterances (corpus ``tts``; its voices are not people, and its val and test voices
    stay out)."""
    from ...runtime.spikes import bin_events
    from ..data.readers import read_spike_h5
    data = read_spike_h5(path)
    xs, words, spk = [], [], []
    for i in np.flatnonzero(data.split == 0):
        t, u = data.sample(i)
        keep = (u % CHANNEL_STEP == 0) & (u < 700 // CHANNEL_STEP * CHANNEL_STEP)
        b = bin_events(t[keep], u[keep] // CHANNEL_STEP, 700 // CHANNEL_STEP, MAX_BINS, 100.0)
        last = int(np.max(np.flatnonzero(b.any(axis=1)), initial=-1)) + 1
        xs.append(np.asarray(b[:max(last, 1)], np.uint8))
        words.append(data.label_names[int(data.labels[i])])
        spk.append(f"tts:{data.speaker_names[int(data.speakers[i])]}")
    n = len(xs)
    if not n:
        raise InputError("the corpus has no train-split voices", source=path)
    return HearSet(xs, np.array(["tts"] * n), np.array(words), np.array(spk),
                   np.array(["train"] * n))


def merge_hear_sets(a: HearSet, b: HearSet) -> HearSet:
    return HearSet(list(a.x) + list(b.x), *(np.concatenate([getattr(a, k), getattr(b, k)])
                                            for k in ("corpus", "word", "speaker", "split")))


def load_hear_set(path: str, tts: tuple[str, ...] = ()) -> HearSet:
    """The hear set at ``path``, plus the train voices of the TTS corpora ``tts``."""
    hs = _load_hear_set(path)
    for t in tts:
        hs = merge_hear_sets(hs, tts_hear_set(t))
    return hs


def _load_hear_set(path: str) -> HearSet:
    """A hear set written by :func:`build_hear_set` (an error naming the file otherwise)."""
    if not os.path.exists(path):
        raise InputError("no such hear set (tessera corpus hear writes one)", source=path)
    try:
        d = np.load(path)
        need = {"x", "lens", "corpus", "word", "speaker", "split"}
        if not need <= set(d.files):
            raise ValueError(f"missing {sorted(need - set(d.files))}")
        if int(d["lens"].sum()) != len(d["x"]) or len({len(d[k]) for k in need - {"x"}}) != 1:
            raise ValueError("lengths do not match")
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a hear set ({exc})", source=path) from None
    ends = np.cumsum(d["lens"])
    x = np.split(d["x"], ends[:-1])
    return HearSet(x, d["corpus"], d["word"], d["speaker"], d["split"])


def episode_accuracy(E: np.ndarray, word: np.ndarray, speaker: np.ndarray, mode: str,
                     shots: int, episodes: int = 300, seed: int = 0, ways: int = 5,
                     queries: int = 5) -> float:
    """Mean accuracy of 5-way ``shots``-shot episodes on unit-normalized embeddings ``E``:
    ``within`` (shots and queries by one person) or ``across`` (shots by one, queries by
    another); the prototype is the mean shot, the answer the largest cosine."""
    E = E / (np.linalg.norm(E, axis=1, keepdims=True) + 1e-9)
    rng = np.random.default_rng(seed)
    people = np.unique(speaker)
    if mode == "across" and people.size < 2:
        raise InputError("hear: across-people episodes need two people")
    cell = {}
    for i, (w, s) in enumerate(zip(word, speaker)):
        cell.setdefault((w, s), []).append(i)
    acc = []
    for _ in range(episodes):
        if mode == "within":
            for _ in range(100):
                a = b = rng.choice(people)
                ws = [w for w in np.unique(word) if len(cell.get((w, a), [])) > shots]
                if len(ws) >= ways:
                    break
        else:
            for _ in range(100):
                a, b = rng.choice(people, 2, replace=False)
                ws = [w for w in np.unique(word) if len(cell.get((w, a), [])) >= shots
                      and len(cell.get((w, b), [])) >= queries]
                if len(ws) >= ways:
                    break
        if len(ws) < ways:
            raise InputError(f"hear: no {ways} words with enough recordings for {mode} episodes")
        cs = rng.choice(ws, ways, replace=False)
        protos, qi, qy = [], [], []
        for k, c in enumerate(cs):
            if mode == "within":
                p = rng.permutation(cell[(c, a)])         # every recording left, at most
                s_, q_ = p[:shots], p[shots:shots + queries]   # ``queries``, is asked
            else:
                s_ = rng.choice(cell[(c, a)], shots, replace=False)
                q_ = rng.choice(cell[(c, b)], queries, replace=False)
            protos.append(E[s_].mean(0))
            qi += list(q_)
            qy += [k] * len(q_)
        P = np.stack(protos)
        P = P / (np.linalg.norm(P, axis=1, keepdims=True) + 1e-9)
        acc.append(float(np.mean(np.argmax(E[qi] @ P.T, axis=1) == np.array(qy))))
    return float(np.mean(acc))


def score_embeddings(E: np.ndarray, hs: HearSet, episodes: int = 300,
                     splits: tuple = ("choose", "report", "fsdd", "unseen")) -> dict:
    """Within and across, 1 and 5 shots, per split; a split's corpora pooled as the mean of
    each corpus's figure (5-way within one corpus: its own words). ``unseen``: the ``choose``
    people asked only :data:`UNSEEN_WORDS` (what a recipe trained without them is chosen on)."""
    out = {}
    unseen = hs.unseen()
    for split in splits:
        for mode in ("within", "across"):
            for shots in (1, 5):
                vals = []
                for corpus in np.unique(hs.corpus[hs.split == split]) if split != "unseen" \
                        else np.unique(hs.corpus[unseen & (hs.split == "choose")]):
                    idx = hs.where(split=split, corpus=corpus) if split != "unseen" else \
                        np.flatnonzero(unseen & (hs.split == "choose") & (hs.corpus == corpus))
                    try:
                        vals.append(episode_accuracy(E[idx], hs.word[idx], hs.speaker[idx],
                                                     mode, shots, episodes, seed=shots))
                    except InputError:      # 5 shots within one person of the Arabic set:
                        continue            # 5 takes a word, none left to ask
                if vals:
                    out[f"{split}_{mode}_{shots}"] = round(100 * float(np.mean(vals)), 1)
    return out


def model_embeddings(model, hs: HearSet, idx: np.ndarray) -> np.ndarray:
    """A trained model's readout features (its window, segments and traces) of utterances
    ``idx`` of the hear set: the trainer's float core on the chip's bins."""
    import torch
    steps = model.config.data.steps
    out = None
    with torch.no_grad():
        for b0 in range(0, len(idx), 200):
            j = idx[b0:b0 + 200]
            X = np.zeros((len(j), steps, hs.x[0].shape[1]), np.float32)
            for k, i in enumerate(j):
                a = hs.x[i][:steps]
                X[k, :len(a)] = a
            phi = model.core.features(torch.from_numpy(X))[0].numpy()
            if out is None:
                out = np.zeros((len(idx), phi.shape[1]), np.float32)
            out[b0:b0 + len(j)] = phi
    return out


def score_model(hs_path: str, model_path: str, episodes: int = 300) -> dict:
    """A ``model.pt`` on a hear set's choose, report and FSDD people (the front-end heard from
    rest per utterance: a model's running level equalization is not applied)."""
    from ..learning.storage import load_model
    hs = load_hear_set(hs_path)
    ev = hs.where(split=["choose", "report", "fsdd"])
    phi = model_embeddings(load_model(model_path), hs, ev)
    E = np.zeros((len(hs), phi.shape[1]), np.float32)
    E[ev] = phi
    return score_embeddings(E, hs, episodes)
