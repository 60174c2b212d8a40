"""Real people as the chip hears them (a hear set): the binned recordings and the named splits.

The data of issue 34's one evaluation path (:mod:`tessera.trainer.evaluation.hear` scores on it,
:mod:`tessera.trainer.learning.pretrain` trains on it, ``tessera corpus hear`` builds it): every recording goes through the runtime's own front-end (:class:`~tessera.runtime.frontend.Cochlea`,
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

"""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import re
import time

import numpy as np

from ...runtime.constants import SAMPLE_RATE
from ...runtime.errors import InputError
from ...runtime.frontend import FrontendSpec

__all__ = ["MAX_BINS", "DSP_REPORT", "ASC_CHOOSE", "ASC_REPORT", "UNSEEN_WORDS", "HearSet",
           "build_hear_set", "load_hear_set", "tts_hear_set", "merge_hear_sets", "split_of",
           "recordings", "build_people_corpus"]

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
                 split: np.ndarray, path: np.ndarray | None = None):
        self.x, self.corpus, self.word, self.speaker, self.split = x, corpus, word, speaker, split
        self.path = path if path is not None else np.full(len(x), "")   # the recording ("": none)

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


def split_of(corpus: str, speaker: str) -> str:
    from .real import HOLDOUT
    if corpus == "fsdd":
        return "fsdd"
    choose, report = (HOLDOUT, DSP_REPORT) if corpus == "dsp" else (ASC_CHOOSE, ASC_REPORT)
    return "choose" if speaker in choose else "report" if speaker in report else "train"


def recordings(dsp: str | None, asc: str | None, fsdd: str | None) -> list[tuple]:
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


def _encode(jobs: list) -> list[np.ndarray]:
    """Bins of each (path, copy, seed) job: copy 0 as recorded, others through a new voice."""
    from ...runtime.core import bins_of
    from ...runtime.frontend import Cochlea
    from ...runtime.threads import set_blas_threads
    from .real import read_flac, voice_copy

    set_blas_threads(1)
    fe = Cochlea()
    out = []
    for p, copy, seed in jobs:
        x = read_flac(p)
        if copy:
            pcm = voice_copy(x / 32768.0, np.random.default_rng(seed))[0]
        else:
            pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16)
        frames = fe.encode(pcm)[:MAX_BINS * 10, :700 // CHANNEL_STEP * CHANNEL_STEP:CHANNEL_STEP]
        bins, _, _ = bins_of(frames, np.zeros(frames.shape[1], np.int64), 0, 10)  # the chip's
        out.append(np.minimum(bins, 255).astype(np.uint8))
    return out


def build_hear_set(out: str, dsp: str | None, asc: str | None, fsdd: str | None,
                   workers: int = 2, progress: bool = True, copies: int = 0,
                   seed: int = 0) -> dict:
    """Encode the folders given into ``out`` (.npz); ``copies`` more renderings of every
    ``train`` recording through a random new voice and channel (split ``train``, the same
    person's name). Returns a summary."""
    from tqdm import tqdm

    items = recordings(dsp, asc, fsdd)
    if not items:
        raise InputError("hear set: no folder given")
    jobs = [(it[0], 0, 0) for it in items]
    train = [(k, it) for k, it in enumerate(items) if split_of(it[1], it[3]) == "train"]
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
    split = np.array([split_of(it[1], it[3]) for it in items])
    speaker = np.array([it[3] for it in items])
    tmp = out + ".tmp.npz"
    np.savez(tmp, x=np.concatenate(xs), lens=lens, corpus=np.array([it[1] for it in items]),
             word=np.array([it[2] for it in items]), speaker=speaker, split=split,
             path=np.array([os.path.abspath(it[0]) for it in items]))
    os.replace(tmp, out)
    return dict(path=out, utterances=len(items), mean_bins=round(float(lens.mean()), 1),
                splits={s: dict(utterances=int((split == s).sum()),
                                people=int(np.unique(speaker[split == s]).size))
                        for s in np.unique(split)})


#: a corpus .h5's splits as hear-set splits: its train voices train; its validation voices are
#: scored as ``tts-val`` (chosen on, like the choose people) and its test voices as ``tts-test``
TTS_SPLITS = {0: "train", 1: "tts-val", 2: "tts-test"}


def tts_hear_set(path: str, held_out: bool = False) -> HearSet:
    """The voices of a corpus .h5 (``tessera corpus build``) binned as a hear set's utterances
    (corpus ``tts``): its train-split voices as ``train`` utterances, or with ``held_out`` its
    validation and test voices only, as ``tts-val`` and ``tts-test`` (:data:`TTS_SPLITS`)."""
    from .readers import read_spike_h5
    from .transforms import bin_spikes, channel_subset
    data = read_spike_h5(path)
    xs, words, spk, split = [], [], [], []
    for i in np.flatnonzero((data.split != 0) if held_out else (data.split == 0)):
        t, u = channel_subset(*data.sample(i), CHANNEL_STEP, 0)      # the channels read
        b = bin_spikes(t, u, MAX_BINS, MAX_BINS / 100.0, 700 // CHANNEL_STEP)
        last = int(np.max(np.flatnonzero(b.any(axis=1)), initial=-1)) + 1
        xs.append(np.asarray(b[:max(last, 1)], np.uint8))
        words.append(data.label_names[int(data.labels[i])])
        spk.append(f"tts:{data.speaker_names[int(data.speakers[i])]}")
        split.append(TTS_SPLITS.get(int(data.split[i]), "tts-test"))
    n = len(xs)
    if not n:
        raise InputError(f"the corpus has no {'held-out' if held_out else 'train-split'} voices",
                         source=path)
    return HearSet(xs, np.array(["tts"] * n), np.array(words), np.array(spk), np.array(split))


def merge_hear_sets(a: HearSet, b: HearSet) -> HearSet:
    return HearSet(list(a.x) + list(b.x), *(np.concatenate([getattr(a, k), getattr(b, k)])
                                            for k in ("corpus", "word", "speaker", "split",
                                                      "path")))


def load_hear_set(path: str, tts: tuple[str, ...] = (), tts_scored: tuple[str, ...] = ()
                  ) -> HearSet:
    """The hear set at ``path``, plus the train voices of the TTS corpora ``tts`` and the
    held-out voices of ``tts_scored`` (``tts-val``, ``tts-test``: scored, never trained on)."""
    hs = _load_hear_set(path)
    for t in tts:
        hs = merge_hear_sets(hs, tts_hear_set(t))
    for t in tts_scored:
        hs = merge_hear_sets(hs, tts_hear_set(t, held_out=True))
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
    return HearSet(x, d["corpus"], d["word"], d["speaker"], d["split"],
                   d["path"] if "path" in d.files else None)


def build_people_corpus(out: str, dsp: str | None, asc: str | None, *, workers: int = 2,
                        progress: bool = True, spec: FrontendSpec | None = None) -> dict:
    """The held-out people of the hear set (:mod:`tessera.trainer.data.hearset`) as a corpus
    in the SHD layout: its ``choose`` people as the validation split (what ``tessera
    calibrate`` fits on) and its ``report`` people as the test split (what it reports); every
    corpus's words are classes of their own (``dsp:NN``, ``asc:word``). Nobody here is trained on."""
    from tqdm import tqdm

    from .corpus import write_corpus_h5
    from .real import encode_jobs

    spec = spec or FrontendSpec()
    t0 = time.time()
    items = [it for it in recordings(dsp, asc, None) if split_of(it[1], it[3]) != "train"]
    if not items:
        raise InputError("corpus people: no held-out people in the folders given")
    jobs = [(i, it[0], 0) for i, it in enumerate(items)]
    parts = [(jobs[i:i + 32], spec, 0, "voice") for i in range(0, len(jobs), 32)]
    results: list = [None] * len(jobs)
    bar = tqdm(total=len(jobs), unit="utt", desc="corpus people", disable=not progress,
               leave=False)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(max(1, min(workers, len(parts)))) as pool:
        for res in pool.imap_unordered(encode_jobs, parts):
            for r in res:
                results[r[0]] = r
            bar.update(len(res))
    bar.close()
    keys = sorted({f"{c}:{w}" for _, c, w, _ in items})
    people = sorted({(c, s) for _, c, _, s in items})
    pidx = {p: i for i, p in enumerate(people)}
    psplit = [1 if split_of(c, s) == "choose" else 2 for c, s in people]
    write_corpus_h5(
        out, [(r[1], r[2]) for r in results], spec,
        labels=[keys.index(f"{c}:{w}") for _, c, w, _ in items],
        speakers=[pidx[(c, s)] for _, c, _, s in items], keys=keys,
        split=[psplit[pidx[(c, s)]] for _, c, _, s in items],
        speaker_names=[f"{c}:{s}" for c, s in people], speaker_split=psplit,
        strings=dict(text=[w for _, _, w, _ in items], language=[c for _, c, _, _ in items],
                     augment=["none"] * len(items),
                     file=[os.path.basename(p) for p, _, _, _ in items]),
        floats=dict(duration_s=[r[3].size / SAMPLE_RATE for r in results]),
        attrs=dict(preset="people", source="DSPSpeech-20 (MIT), Arabic Speech Commands "
                   "(CC BY 4.0): held-out people only", augment="none", seed=0, repeats=1,
                   holdout="choose=val,report=test"),
        audio=[r[3] for r in results])
    return dict(path=out, utterances=len(items), classes=len(keys), people=len(people),
                val_people=psplit.count(1), test_people=psplit.count(2),
                seconds=round(time.time() - t0, 1))
