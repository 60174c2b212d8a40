"""`tessera corpus build`: a spoken-word corpus made with espeak-ng, stored in the SHD layout.

No download: words are synthesized by the espeak-ng library bundled in ``espeakng-loader``,
passed through the runtime's cochlea front-end (:mod:`tessera.runtime.frontend`) and written to
an HDF5 file that the SHD readers in :mod:`tessera.trainer.data.readers` read, like the official files.

Speakers. A speaker is an espeak-ng voice variant (about 100) crossed with an English accent
(en-us, en, en-gb-scotland, en-029, ...); German words are spoken by the same variant with the
``de`` voice. Each speaker has its own base rate, pitch and pitch range; each utterance jitters
them and adds a gain, background noise (white or pink, random SNR) and a random onset. Speakers
are split into disjoint train / val / test groups, recorded in the file.

Other voices and channels. ``engine="kokoro"`` or ``"piper"`` reads the same words from espeak-ng's
IPA with a neural synthesizer (:mod:`tessera.trainer.data.tts`; a speaker is a Kokoro style blend, or
the Piper voice with its own vocal-tract length and tempo). ``augment`` names a chain of
:mod:`tessera.trainer.data.augment` (microphone, room, band, noise, speed, vocal tract) applied to each
utterance with its own random draws, so a corpus without augmentation is unchanged bit for bit.

Determinism. Every utterance draws its randomness from ``default_rng([seed, index])``. espeak-ng
keeps internal state between syntheses, so utterances are synthesized in fixed chunks of
:data:`CHUNK`, each chunk in a fresh process: the result does not depend on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ...runtime.audio import resample, to_int16
from ...runtime.constants import SAMPLE_RATE
from ...runtime.errors import InputError
from ...runtime.frontend import Cochlea, FrontendSpec
from .augment import pink_noise

__all__ = ["SHD_WORDS", "CorpusConfig", "PRESETS", "build_corpus", "parse_words", "write_corpus_h5"]

#: SHD's 20 classes in SHD's label order: English 0-9, then German 0-9.
SHD_WORDS: tuple[tuple[str, str], ...] = tuple(
    [("en", w) for w in "zero one two three four five six seven eight nine".split()]
    + [("de", w) for w in "null eins zwei drei vier fünf sechs sieben acht neun".split()])

#: Words for meta-training only (``--preset vocab``): common English and German words, none of them
#: a digit of SHD's 20 classes nor a homophone of one (no "for", "to", "won", "ate", "ein", ...).
META_VOCAB: tuple[tuple[str, str], ...] = tuple(
    [("en", w) for w in (
        "yes no stop go left right up down on off lights music play pause next back open close "
        "start finish hello goodbye please thanks water coffee house car door window table chair "
        "apple banana orange green blue red yellow black white brown happy sad fast slow hot cold "
        "morning evening night today tomorrow yesterday mother father sister brother friend "
        "teacher doctor garden kitchen bottle paper pencil bird fish horse cat dog mouse tiger "
        "lion monkey rabbit turtle river mountain ocean forest island bridge street market "
        "station airport hotel school city village summer winter spring autumn rain snow wind "
        "cloud sunshine thunder light dark small big little giant yellow purple silver golden "
        "music radio camera phone computer keyboard garden flower tomato potato carrot onion "
        "butter cheese bread dinner lunch breakfast sugar pepper salt cookie sandwich marvel "
        "robot rocket planet galaxy engine battery signal message volume channel"
    ).split()]
    + [("de", w) for w in (
        "ja nein halt los links rechts oben unten an aus licht musik spielen weiter zurück "
        "offen zu hallo tschüss bitte danke wasser kaffee haus auto tür fenster tisch stuhl "
        "apfel blau rot gelb schwarz weiß grün schnell langsam heiß kalt morgen abend nacht "
        "heute gestern mutter vater schwester bruder freund lehrer garten küche flasche papier "
        "vogel fisch pferd katze hund maus löwe affe hase fluss berg meer wald insel brücke "
        "straße markt bahnhof schule stadt dorf sommer winter frühling regen schnee wind wolke"
    ).split()])
META_VOCAB = tuple(dict.fromkeys(META_VOCAB))            # drop repeated words, keep the order

#: Ten new command words (``--preset novel``) for class-incremental enrollment tests: in neither
#: SHD's classes nor the meta-training vocabulary, spoken by the test voices only.
NOVEL_WORDS: tuple[tuple[str, str], ...] = tuple(("en", w) for w in (
    "lamp heater curtain shower television alarm kettle fan oven printer").split())

#: Words in four languages that meta-training never had (``--preset lang``), spoken by test voices
#: only: the "new language" few-shot test.
LANG_WORDS: tuple[tuple[str, str], ...] = tuple(
    [("fr", w) for w in "maison chat chien pomme rouge soleil fleur livre fromage bonjour".split()]
    + [("es", w) for w in "perro gato manzana rojo verde luna flor libro playa ventana".split()]
    + [("it", w) for w in "cane cavallo mela giallo finestra sedia fiore acqua strada bicchiere".split()]
    + [("nl", w) for w in "huis hond kat appel groen maan bloem boek fiets kaas".split()])

ENGLISH_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan",
                   "en-gb-x-gbcwmd", "en-us-nyc")
LANGUAGE_VOICE = {"en": None, "de": "de", "fr": "fr", "es": "es", "it": "it", "nl": "nl"}
SPLITS = ("train", "val", "test")
CHUNK = 40           # utterances per fresh synthesis process (part of the determinism contract)


@dataclass(frozen=True)
class CorpusConfig:
    speakers: int = 100
    repeats: int = 4                 # utterances per (speaker, word)
    words: tuple[tuple[str, str], ...] = SHD_WORDS
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0
    rate: tuple[int, int] = (135, 200)         # speaker base words per minute
    pitch: tuple[int, int] = (25, 75)          # speaker base pitch (espeak 0..100)
    gain_db: tuple[float, float] = (-18.0, -1.0)
    snr_db: tuple[float, float] = (15.0, 45.0)
    onset_s: tuple[float, float] = (0.02, 0.25)
    tail_s: float = 0.1
    keep_audio: bool = False
    engine: str = "espeak"           # espeak | kokoro | piper (trainer/data/tts.py)
    augment: str = "none"            # a name of trainer/data/augment.py AUGMENT_PRESETS
    speaker_splits: tuple[str, ...] = SPLITS    # synthesize only the speakers of these splits
    frontend: FrontendSpec = field(default_factory=FrontendSpec)

    def __post_init__(self) -> None:
        if self.speakers < 3:
            raise InputError("corpus: need at least 3 speakers (one per split)")
        if self.speakers > len(ENGLISH_ACCENTS) * 104:
            raise InputError(f"corpus: at most {len(ENGLISH_ACCENTS) * 104} speakers")
        if self.repeats < 1:
            raise InputError("corpus: repeats must be >= 1")
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise InputError("corpus: split fractions must be >= 0 and sum to 1")
        if not set(self.speaker_splits) <= set(SPLITS) or not self.speaker_splits:
            raise InputError(f"corpus: speaker_splits must be a non-empty subset of {SPLITS}")
        from .augment import AUGMENT_PRESETS
        from .tts import ENGINES
        if self.engine not in ENGINES:
            raise InputError(f"corpus: unknown engine {self.engine!r} (one of {', '.join(ENGINES)})")
        if self.augment not in AUGMENT_PRESETS:
            raise InputError(f"corpus: unknown augment {self.augment!r} "
                             f"(one of {', '.join(AUGMENT_PRESETS)})")
        for lang, _ in self.words:
            if lang not in LANGUAGE_VOICE:
                raise InputError(f"corpus: unsupported language {lang!r} "
                                 f"(one of {sorted(LANGUAGE_VOICE)})")


PRESETS = {
    # tests and demo: 20 words x 16 speakers x 1 = 320 utterances, well under a minute
    "small": dict(speakers=16, repeats=1, split=(0.5, 0.125, 0.375)),
    # the default: 20 words x 100 speakers x 4 = 8,000 utterances
    "default": dict(speakers=100, repeats=4),
    # meta-training vocabulary: other words by the default corpus's train-split speakers (same
    # seed and speaker count, so the same voices and splits); combine with data.extra_corpora
    "vocab": dict(speakers=100, repeats=1, words=META_VOCAB, speaker_splits=("train",)),
    # ten new words by the default corpus's test voices (class-incremental enrollment)
    "novel": dict(speakers=100, repeats=3, words=NOVEL_WORDS, speaker_splits=("test",)),
    # forty words in French, Spanish, Italian and Dutch by its test voices (new languages)
    "lang": dict(speakers=100, repeats=2, words=LANG_WORDS, speaker_splits=("test",)),
}


def parse_words(spec: str) -> tuple[tuple[str, str], ...]:
    """``"en:lights,music;de:licht"`` -> (("en", "lights"), ("en", "music"), ("de", "licht"))."""
    out = []
    for group in filter(None, (g.strip() for g in spec.split(";"))):
        lang, sep, words = group.partition(":")
        if not sep:
            raise InputError(f"word list {group!r}: expected LANG:word,word,...")
        lang = lang.strip()
        if lang not in LANGUAGE_VOICE:
            raise InputError(f"word list: unsupported language {lang!r} (one of "
                             f"{sorted(LANGUAGE_VOICE)})")
        out += [(lang, w.strip()) for w in words.split(",") if w.strip()]
    if not out:
        raise InputError(f"word list {spec!r} is empty")
    return tuple(out)


def _speakers(cfg: CorpusConfig, variants: list[str]) -> list[dict]:
    if cfg.engine != "espeak":
        return _neural_speakers(cfg)
    rng = np.random.default_rng([cfg.seed, 0xC0])
    combos = [(v, a) for a in ENGLISH_ACCENTS for v in variants]
    pick = rng.choice(len(combos), size=cfg.speakers, replace=False)
    split_of = _split_of(rng, cfg)
    out = []
    for i, c in enumerate(pick):
        variant, accent = combos[c]
        out.append(dict(id=i, name=f"{accent}+{variant}", variant=variant, accent=accent,
                        split=int(split_of[i]),
                        rate=int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)),
                        pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                        pitch_range=int(rng.integers(30, 91))))
    return out


def _split_of(rng: np.random.Generator, cfg: CorpusConfig) -> np.ndarray:
    order = rng.permutation(cfg.speakers)
    n_train = int(round(cfg.split[0] * cfg.speakers))
    n_val = int(round(cfg.split[1] * cfg.speakers))
    n_train = min(max(n_train, 1), cfg.speakers - 2)
    n_val = min(max(n_val, 1 if cfg.split[1] > 0 else 0), cfg.speakers - n_train - 1)
    split_of = np.empty(cfg.speakers, np.int64)
    split_of[order[:n_train]] = 0
    split_of[order[n_train:n_train + n_val]] = 1
    split_of[order[n_train + n_val:]] = 2
    return split_of


def _neural_speakers(cfg: CorpusConfig) -> list[dict]:
    """Kokoro: a speaker is a random blend of the five styles with its own tempo. Piper (one
    voice): a speaker is its own vocal-tract length, tempo and variability. Both read English
    in one of :data:`ENGLISH_ACCENTS`' phonemizations."""
    rng = np.random.default_rng([cfg.seed, 0xC1, 1 if cfg.engine == "kokoro" else 2])
    split_of = _split_of(rng, cfg)
    out = []
    for i in range(cfg.speakers):
        accent = ENGLISH_ACCENTS[int(rng.integers(len(ENGLISH_ACCENTS)))]
        spk = dict(id=i, accent=accent, split=int(split_of[i]), variant=cfg.engine)
        if cfg.engine == "kokoro":
            spk["weights"] = [round(float(w), 4) for w in rng.dirichlet(np.full(5, 0.6))]
            spk["speed"] = round(float(rng.uniform(0.85, 1.15)), 3)
            spk["vtlp"] = 1.0
        else:
            spk["length_scale"] = round(float(rng.uniform(0.85, 1.25)), 3)
            spk["noise_scale"] = round(float(rng.uniform(0.4, 0.9)), 3)
            spk["noise_w"] = round(float(rng.uniform(0.5, 1.0)), 3)
            spk["vtlp"] = round(float(rng.uniform(0.84, 1.18)), 3)
        spk["name"] = f"{cfg.engine}{i:03d}+{accent}"
        out.append(spk)
    return out


def _plan(cfg: CorpusConfig, speakers: list[dict]) -> list[dict]:
    jobs = []
    wanted = {SPLITS.index(s) for s in cfg.speaker_splits}
    for spk in speakers:
        if spk["split"] not in wanted:
            continue
        for label, (lang, word) in enumerate(cfg.words):
            for rep in range(cfg.repeats):
                jobs.append(dict(index=len(jobs), label=label, speaker=spk["id"], rep=rep,
                                 word=word, language=lang))
    return jobs


def _synth(job: dict, spk: dict, cfg: CorpusConfig, tts, rng: np.random.Generator
           ) -> tuple[np.ndarray, int, dict]:
    """One word by one speaker through the corpus's engine -> (float audio, its rate, prosody)."""
    from .tts import Voice

    voice_lang = LANGUAGE_VOICE[job["language"]] or spk["accent"]
    if cfg.engine == "espeak":
        rate = int(np.clip(spk["rate"] * rng.uniform(0.88, 1.12), 80, 400))
        pitch = int(np.clip(spk["pitch"] + rng.integers(-8, 9), 0, 100))
        voice = Voice(voice_lang, spk["variant"], rate, pitch, spk["pitch_range"])
        raw = tts.synth(job["word"], voice, seed=int(rng.integers(2**31))).astype(np.float32) / 32768.0
        return raw, tts.sample_rate, dict(rate=rate, pitch=pitch)
    tempo = float(rng.uniform(0.9, 1.1))
    if cfg.engine == "kokoro":
        raw = tts.synth(job["word"], voice_lang, spk["weights"], spk["speed"] * tempo)
        prosody = dict(rate=round(160 * spk["speed"] * tempo), pitch=-1)
    else:
        raw = tts.synth(job["word"], voice_lang, spk["length_scale"] / tempo,
                        spk["noise_scale"], spk["noise_w"])
        prosody = dict(rate=round(160 * tempo / spk["length_scale"]), pitch=-1)
    return _trim(raw, tts.sample_rate), tts.sample_rate, prosody


def _trim(x: np.ndarray, rate: int, rel: float = 0.02, pad_s: float = 0.03) -> np.ndarray:
    """Cut the neural engines' leading and trailing near-silence (below ``rel`` of the peak)."""
    idx = np.nonzero(np.abs(x) > rel * (np.max(np.abs(x)) if x.size else 0.0))[0]
    if idx.size == 0:
        return x
    pad = int(pad_s * rate)
    return x[max(0, idx[0] - pad): idx[-1] + pad]


def _render(job: dict, spk: dict, cfg: CorpusConfig, tts) -> tuple[np.ndarray, dict]:
    from .augment import AUGMENT_PRESETS, add_noise, vtlp

    rng = np.random.default_rng([cfg.seed, job["index"]])
    raw, rate_in, prosody = _synth(job, spk, cfg, tts, rng)
    speech = resample(raw, rate_in, SAMPLE_RATE)
    peak = float(np.max(np.abs(speech))) if speech.size else 0.0
    if peak <= 0:
        raise RuntimeError(f"{cfg.engine} produced silence for {job['word']!r} by {spk['name']}")
    aug = AUGMENT_PRESETS[cfg.augment]
    arng = np.random.default_rng([cfg.seed, job["index"], 0xA6])   # espeak corpora unchanged
    if spk.get("vtlp", 1.0) != 1.0:
        speech = vtlp(speech, spk["vtlp"])
    speech, aug_meta = aug.voice(speech, arng)
    peak = float(np.max(np.abs(speech))) or 1.0
    gain_db = float(rng.uniform(*cfg.gain_db))
    speech = speech / peak * 10 ** (gain_db / 20)
    onset = float(rng.uniform(*cfg.onset_s))
    n_on, n_tail = int(onset * SAMPLE_RATE), int(cfg.tail_s * SAMPLE_RATE)
    x = np.concatenate([np.zeros(n_on, np.float32), speech, np.zeros(n_tail, np.float32)])
    snr_db = float(rng.uniform(*cfg.snr_db))
    pink = bool(rng.integers(2))
    kind = "pink" if pink else "white"
    if cfg.augment != "none":
        snr_db = float(arng.uniform(*aug.snr_db))
        kind = str(aug.noise_kinds[int(arng.integers(len(aug.noise_kinds)))])
    rms = float(np.sqrt(np.mean(speech ** 2)))
    if kind == "white" and cfg.augment == "none":                  # the original draw order
        x = x + rng.standard_normal(x.size) * rms * 10 ** (-snr_db / 20)
    elif kind == "pink" and cfg.augment == "none":
        x = x + pink_noise(rng, x.size) * rms * 10 ** (-snr_db / 20)
    else:
        x = add_noise(x, arng, snr_db, rms, kind)
    x, band = aug.band(x, arng)
    meta = dict(**prosody, gain_db=gain_db, snr_db=snr_db, onset_s=onset, noise=kind,
                duration_s=x.size / SAMPLE_RATE, augment=aug.describe(aug_meta, band))
    return to_int16(x), meta


def _work_chunk(args: tuple) -> list[tuple]:
    """One chunk of utterances in a fresh process: synthesize, encode, return spikes."""
    jobs, speakers, cfg = args
    from ...runtime.threads import set_blas_threads
    from .tts import Espeak, Kokoro, Piper

    set_blas_threads(1)                 # the workers already use every core
    tts = {"espeak": Espeak, "kokoro": Kokoro, "piper": Piper}[cfg.engine]()
    fe = Cochlea(cfg.frontend)
    out = []
    for job in jobs:
        pcm, meta = _render(job, speakers[job["speaker"]], cfg, tts)
        spikes = fe.encode(pcm)
        steps, units = np.nonzero(spikes)
        out.append((job["index"], steps.astype(np.int32), units.astype(np.uint16), meta,
                    pcm if cfg.keep_audio else None))
    return out


def build_corpus(path: str | os.PathLike, cfg: CorpusConfig, *, workers: int | None = None,
                 progress: bool = True, preset: str = "") -> dict:
    """Synthesize, encode and write the corpus to ``path`` (HDF5, SHD layout). Returns a summary."""
    from tqdm import tqdm

    from .tts import list_variants

    t0 = time.time()
    speakers = _speakers(cfg, list_variants())
    jobs = _plan(cfg, speakers)
    chunks = [(jobs[i: i + CHUNK], speakers, cfg) for i in range(0, len(jobs), CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
    results: list = [None] * len(jobs)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    bar = tqdm(total=len(jobs), unit="utt", desc="corpus", disable=not progress, leave=False)
    with ctx.Pool(workers, maxtasksperchild=1) as pool:     # a fresh process for every chunk
        for chunk in pool.imap_unordered(_work_chunk, chunks):
            for item in chunk:
                results[item[0]] = item
            bar.update(len(chunk))
    bar.close()

    write_corpus_h5(
        path, [(r[1], r[2]) for r in results], cfg.frontend,
        labels=[j["label"] for j in jobs], speakers=[j["speaker"] for j in jobs],
        keys=[f"{lang}:{w}" for lang, w in cfg.words],
        split=[speakers[j["speaker"]]["split"] for j in jobs],
        speaker_names=[s["name"] for s in speakers],
        speaker_split=[s["split"] for s in speakers],
        strings=dict(text=[j["word"] for j in jobs], language=[j["language"] for j in jobs],
                     noise=[r[3]["noise"] for r in results],
                     augment=[r[3]["augment"] for r in results]),
        floats={key: [r[3][key] for r in results]
                for key in ("rate", "pitch", "gain_db", "snr_db", "onset_s", "duration_s")},
        attrs=dict(config=json.dumps(_config_json(cfg)), preset=preset, chunk=CHUNK),
        audio=[r[4] for r in results] if cfg.keep_audio else None)
    n_spikes = np.array([r[1].size for r in results])
    dur = np.array([r[3]["duration_s"] for r in results])
    return dict(path=os.fspath(path), utterances=len(jobs),
                speakers=len({j["speaker"] for j in jobs}),
                classes=len(cfg.words), seconds=round(time.time() - t0, 2), workers=workers,
                audio_seconds=round(float(dur.sum()), 1),
                spikes_per_utterance=round(float(n_spikes.mean()), 1),
                split_speakers={s: int(sum(1 for p in speakers if p["split"] == i))
                                for i, s in enumerate(SPLITS)})


def write_corpus_h5(path: str | os.PathLike, events: list[tuple[np.ndarray, np.ndarray]],
                    frontend: FrontendSpec, *, labels, speakers, keys, split, speaker_names,
                    speaker_split, strings: dict, floats: dict, attrs: dict,
                    audio: list[np.ndarray] | None = None) -> None:
    """Write a corpus in the SHD layout plus tessera's ``extra/tessera`` group (splits, speaker
    names, per-utterance text and metadata) and, with ``audio``, the 16 kHz PCM. ``events``: each
    utterance's (time step, channel) spike indices. Written to a ``.part`` file and renamed, so a
    crash never leaves a half-written corpus under the final name."""
    import h5py

    step_s = frontend.step_seconds
    tmp = os.fspath(path) + ".part"
    n = len(events)
    with h5py.File(tmp, "w") as h5:
        f32, u16 = h5py.vlen_dtype(np.float32), h5py.vlen_dtype(np.uint16)
        times = h5.create_dataset("spikes/times", (n,), dtype=f32)
        units = h5.create_dataset("spikes/units", (n,), dtype=u16)
        for i, (steps, u) in enumerate(events):
            times[i] = steps.astype(np.float32) * np.float32(step_s)
            units[i] = u
        h5["labels"] = np.array(labels, np.uint16)
        h5["extra/speaker"] = np.array(speakers, np.uint16)
        h5["extra/keys"] = np.array(keys, dtype=h5py.string_dtype())
        g = h5.create_group("extra/tessera")
        g["split"] = np.array(split, np.uint8)
        g["split"].attrs["names"] = json.dumps(SPLITS)
        g["speaker_names"] = np.array(speaker_names, dtype=h5py.string_dtype())
        g["speaker_split"] = np.array(speaker_split, np.uint8)
        for key, values in strings.items():
            g[key] = np.array(values, dtype=h5py.string_dtype())
        for key, values in floats.items():
            g[key] = np.array(values, np.float32)
        for key, value in attrs.items():
            g.attrs[key] = value
        g.attrs["frontend"] = json.dumps(frontend.to_dict())
        g.attrs["channels"] = frontend.channels
        g.attrs["step_seconds"] = step_s
        g.attrs["format"] = "tessera-corpus/1"
        if audio is not None:
            pcm = h5.create_dataset("audio/pcm", (n,), dtype=h5py.vlen_dtype(np.int16))
            for i, a in enumerate(audio):
                pcm[i] = a
            pcm.attrs["sample_rate"] = SAMPLE_RATE
    os.replace(tmp, path)                                    # never leave a half-written file


def _config_json(cfg: CorpusConfig) -> dict:
    d = asdict(cfg)
    d["frontend"] = cfg.frontend.to_dict()
    return d
