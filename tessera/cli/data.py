"""`tessera corpus build|info`: speech corpora (over tessera.trainer.data.corpus and .data)."""


from __future__ import annotations

import argparse
import os

from tessera.runtime.errors import InputError, TesseraError

from .common import NO_PROGRESS, emit, show_progress


def _corpus_config(args: argparse.Namespace):
    from tessera.trainer.data.corpus import PRESETS, SHD_WORDS, CorpusConfig, parse_words

    kw = dict(PRESETS[args.preset])
    kw["seed"] = args.seed
    words = kw.pop("words", SHD_WORDS)
    if args.no_digits:
        words = tuple(w for w in words if w not in SHD_WORDS)
    if args.words:
        words = tuple(words) + parse_words(args.words)
    if not words:
        raise TesseraError("no words: --no-digits needs --words")
    kw["words"] = words
    for key in ("speakers", "repeats"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    kw["keep_audio"] = args.keep_audio
    kw["engine"] = args.engine
    kw["augment"] = args.augment
    if args.splits:
        kw["speaker_splits"] = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    return CorpusConfig(**kw)


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from tessera.trainer.data.corpus import build_corpus

    cfg = _corpus_config(args)
    out = args.out or f"corpus-{args.preset}.h5"
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    summary = build_corpus(out, cfg, workers=args.workers, progress=show_progress(args),
                           preset=args.preset)
    human = (f"wrote {summary['path']}: {summary['utterances']} utterances, {summary['classes']} "
             f"classes, {summary['speakers']} speakers (train/val/test "
             f"{'/'.join(str(v) for v in summary['split_speakers'].values())}), "
             f"{summary['audio_seconds']} s of audio, {summary['spikes_per_utterance']} spikes per "
             f"utterance, in {summary['seconds']} s on {summary['workers']} workers")
    emit(args, summary, human)
    return 0


def cmd_corpus_real(args: argparse.Namespace) -> int:
    from tessera.trainer.data.real import HOLDOUT, build_real_corpus

    holdout = tuple(s.strip() for s in args.holdout.split(",") if s.strip()) \
        if args.holdout is not None else HOLDOUT
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    summary = build_real_corpus(args.folder, args.out, holdout=holdout, repeats=args.repeats,
                                augment=args.augment, seed=args.seed, workers=args.workers,
                                progress=show_progress(args))
    human = (f"wrote {summary['path']}: {summary['utterances']} utterances ({summary['recordings']} "
             f"recordings x {summary['repeats']}), {summary['classes']} words, "
             f"{summary['speakers']} speakers (validation, never trained on: "
             f"{', '.join(summary['holdout']) or 'none'}), in {summary['seconds']} s")
    emit(args, summary, human)
    return 0


def cmd_corpus_hear(args: argparse.Namespace) -> int:
    from tessera.trainer.data.hearset import build_hear_set

    if not (args.dsp or args.asc or args.fsdd):
        raise InputError("corpus hear: give at least one of --dsp, --asc, --fsdd")
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if args.people:
        from tessera.trainer.data.hearset import build_people_corpus
        s = build_people_corpus(args.out, args.dsp, args.asc, workers=args.workers,
                                progress=show_progress(args))
        emit(args, s, f"wrote {s['path']}: {s['utterances']} utterances of {s['classes']} words "
                      f"by {s['people']} held-out people ({s['val_people']} choose as its "
                      f"validation split, {s['test_people']} report as its test split)")
        return 0
    s = build_hear_set(args.out, args.dsp, args.asc, args.fsdd, workers=args.workers,
                       progress=show_progress(args), copies=args.copies, seed=args.seed)
    emit(args, s, f"wrote {s['path']}: {s['utterances']} utterances ({s['mean_bins']:.0f} "
                  f"bins on average), split by name: {s['splits']}")
    return 0


def cmd_corpus_level_eq(args: argparse.Namespace) -> int:
    import time

    from tessera.runtime.frontend import FrontendSpec, design
    from tessera.trainer.data.levels import corpus_level_mean, equalize_corpus

    t0 = time.perf_counter()
    ref = corpus_level_mean(args.reference, design(FrontendSpec()))
    r = equalize_corpus(args.path, args.out, ref, workers=args.workers or os.cpu_count() or 1)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    emit(args, r, f"wrote {r['path']}: {r['utterances']} utterances of {r['speakers']} "
                   f"speakers re-encoded with their long-term level spectrum moved to "
                   f"{args.reference}'s (mean offset {r['mean_abs_offset']} level units), in "
                   f"{r['seconds']} s")
    return 0


def _info_lines(info: dict) -> list[str]:
    lines = [f"{info['source']}: {info['utterances']} utterances, {info['classes']} classes, "
             f"{info['speakers']} speakers, {info['channels']} channels"]
    if "spikes_per_utterance" in info:
        lo, hi = info["spikes_per_utterance_p5_p95"]
        lines.append(f"  spikes per utterance {info['spikes_per_utterance']} (5-95 %: {lo}-{hi}), "
                     f"per-channel rate {info['rate_hz_per_channel_mean']} Hz mean, "
                     f"{info['rate_hz_per_channel_p99']} Hz 99th percentile")
    for name, s in info["splits"].items():
        lines.append(f"  {name:10s} {s['utterances']:6d} utterances  {s['speakers']:4d} speakers  "
                     f"{s['classes']:3d} classes")
    return lines


def cmd_corpus_info(args: argparse.Namespace) -> int:
    from tessera.trainer.data.readers import read_any

    info = read_any(args.path, progress=show_progress(args)).summary()
    lines = _info_lines(info) + ["  classes: " + ", ".join(info["label_names"])]
    emit(args, info, "\n".join(lines))
    return 0


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    corpus = sub.add_parser("corpus", help="build or inspect a speech corpus")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    b = add(csub, "build", cmd_corpus_build, "synthesize a spoken-word corpus (SHD layout h5)")
    b.add_argument("--preset", choices=["small", "default", "vocab", "novel", "lang"],
                   default="default",
                   help="small: tests/demo; default: SHD's 20 words, 8,000 utterances; vocab: "
                        "225 other words by the default's train voices, for meta-training; "
                        "novel: 10 new words by its test voices, for enrollment tests; lang: 40 "
                        "French, Spanish, Italian and Dutch words by its test voices")
    b.add_argument("--engine", choices=["espeak", "kokoro", "piper"], default="espeak",
                   help="synthesizer: espeak-ng (about 100 variants x 8 accents), kokoro (blends "
                        "of Kokoro-82M's five styles) or piper (one voice, warped); the last two "
                        "need the 'voices' extra")
    b.add_argument("--augment", choices=["none", "channel", "8k"], default="none",
                   help="channel: random microphones, rooms, 8 kHz/telephone bands, babble "
                        "noise, speed and vocal-tract length; 8k: every utterance band-limited "
                        "as an 8 kHz recording (trainer/data/augment.py)")
    b.add_argument("--splits", metavar="LIST",
                   help="synthesize only these voice splits, e.g. 'test' (default: the preset's)")
    b.add_argument("--out", help="output .h5 (default corpus-PRESET.h5)")
    b.add_argument("--seed", type=int, default=0, help="seed of voices, words and augmentation")
    b.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    b.add_argument("--words", help="extra words, e.g. 'en:lights,music;de:licht'")
    b.add_argument("--no-digits", action="store_true", help="leave out SHD's 20 digit classes")
    b.add_argument("--speakers", type=int, help="override the preset's speaker count")
    b.add_argument("--repeats", type=int, help="override utterances per speaker and word")
    b.add_argument("--keep-audio", action="store_true", help="store the 16 kHz audio too")
    b.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    r = add(csub, "real", cmd_corpus_real,
            "encode real recordings (DSPSpeech-20 FLAC folders) into a training corpus")
    r.add_argument("folder", help="the DSPSpeech-20 folder (<speaker>/<speaker>-<word>-<take>.flac)")
    r.add_argument("--out", default="real.h5", help="output .h5 (default real.h5)")
    r.add_argument("--holdout", metavar="LIST",
                   help="comma-separated speakers kept for validation, never trained on "
                        "(default: four named in tessera.trainer.data.real.HOLDOUT; '' for none)")
    r.add_argument("--repeats", type=int, default=1,
                   help="copies of each recording: the first as recorded, the others through a "
                        "random new voice and channel (default 1)")
    r.add_argument("--augment", choices=["voice", "channel"], default="voice",
                   help="the copies' augmentation (trainer/data/augment.py; default voice: speed, "
                        "vocal-tract length, pitch, microphone, room, band, noise)")
    r.add_argument("--seed", type=int, default=0, help="seed of the augmentation")
    r.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    r.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    h = add(csub, "hear", cmd_corpus_hear,
            "bin real recordings as the chip hears them (DSPSpeech-20, Arabic Speech Commands, "
            "FSDD) with the people split by name into train, choose and report (issue 34): "
            "what tessera pretrain trains on and tessera bench hear scores")
    h.add_argument("--dsp", metavar="DIR", help="DSPSpeech-20 (<speaker>/<speaker>-<word>-<take>.flac)")
    h.add_argument("--asc", metavar="DIR", help="Arabic Speech Commands (the same layout)")
    h.add_argument("--fsdd", metavar="DIR", help="FSDD WAVs (validation only: never trained on)")
    h.add_argument("--copies", type=int, default=0,
                   help="more renderings of each training recording through a random new voice "
                        "and channel (speed, vocal tract, pitch, microphone, room, band, noise)")
    h.add_argument("--seed", type=int, default=0, help="seed of the copies' augmentation")
    h.add_argument("--people", action="store_true",
                   help="instead: the held-out people only, as a corpus .h5 (SHD layout, audio "
                        "kept; choose = its validation split, report = its test split) for "
                        "tessera calibrate")
    h.add_argument("--out", default="hear.npz", help="output .npz (default hear.npz)")
    h.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    h.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    le = add(csub, "level-eq", cmd_corpus_level_eq,
             "a copy of a --keep-audio corpus with each speaker's long-term spectrum equalized "
             "in the front-end's levels: the training side of the chip's level equalization "
             "(tessera level-eq; issue 22)")
    le.add_argument("path", help="corpus .h5 built with --keep-audio")
    le.add_argument("--out", required=True, help="output .h5")
    le.add_argument("--reference", required=True, metavar="CORPUS",
                    help="a --keep-audio corpus whose mean long-term spectrum is the target")
    le.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    le.add_argument("--no-progress", action="store_true", help=NO_PROGRESS + " (it shows none)")
    i = add(csub, "info", cmd_corpus_info, "classes, utterances and speakers per split")
    i.add_argument("path", help="corpus .h5, SHD/SSC .h5, a folder of official files, or WAVs")
    i.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
