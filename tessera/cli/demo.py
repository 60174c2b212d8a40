"""`tessera demo`: the main job, end to end."""


from __future__ import annotations

import argparse
import os

from tessera.runtime.errors import InputError

from .common import NO_PROGRESS, _default_model, _emit, _show_progress
from .data import _info_lines


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from tessera.tools.plots import raster_png
    from tessera.trainer.corpus import PRESETS, CorpusConfig, build_corpus
    from tessera.trainer.data import read_spike_h5

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError("--out must be a folder; this is a file", source=args.out)
    os.makedirs(args.out, exist_ok=True)
    corpus = os.path.join(args.out, "corpus-small.h5")
    cfg = CorpusConfig(**PRESETS["small"], seed=args.seed, keep_audio=True)
    built = build_corpus(corpus, cfg, progress=_show_progress(args), preset="small")
    data = read_spike_h5(corpus)
    info = data.summary()
    i = int(np.nonzero(data.labels == 7)[0][0])                        # an English "seven"
    times, units = data.sample(i)
    import h5py

    with h5py.File(corpus, "r") as h5:
        audio = h5["audio/pcm"][i].astype(np.float32) / 32768.0
    png = raster_png(os.path.join(args.out, "raster.png"), times, units, data.channels,
                     title=f"'{data.label_names[data.labels[i]]}' by "
                           f"{data.speaker_names[data.speakers[i]]}: {times.size} spikes",
                     audio=audio)
    result = dict(corpus=built, info=info, raster_png=png)
    lines = [f"tessera demo: built {corpus} in {built['seconds']} s"] + _info_lines(info)
    lines.append(f"  spike raster of one utterance: {png}")
    try:
        chip_demo = _demo_chip(data, args.out)
    except ImportError as exc:                  # the chip part needs the trained model (torch)
        chip_demo = None
        lines.append(f"  (chip demo skipped: {exc})")
    if chip_demo:
        result["chip"] = chip_demo
        lines.append(f"  chip ({chip_demo['model_bytes']} byte model, 4-bit weights): enrolled "
                     f"{len(chip_demo['words'])} words from one utterance each (one readout step, "
                     f"{chip_demo['enroll_ms']} ms each); {chip_demo['correct']} of "
                     f"{chip_demo['tested']} other utterances by unseen voices nearest to the "
                     f"right word ({100 * chip_demo['accuracy']:.0f} %, chance "
                     f"{100 / len(chip_demo['words']):.0f} %); {chip_demo['answered_none']} "
                     f"answered 'none of these' (other voices than the shot's)")
    _emit(args, result, "\n".join(lines))
    return 0


def _demo_chip(data, out: str) -> dict:
    """Export the committed model, enroll five words on the chip from one utterance each (test
    voices), then recognise the other test utterances of those words."""
    import numpy as np

    from tessera.runtime.chip import Chip, events_to_frames
    from tessera.trainer.export import ExportConfig, export_model
    from tessera.trainer.storage import load_model

    path = os.path.join(out, "model-4bit.tsr")
    size = export_model(load_model(_default_model()), path, ExportConfig(weight_bits=4))["bytes"]
    chip = Chip.load(path)
    test = np.nonzero(data.split == 2)[0]
    words = [c for c in (0, 3, 4, 11, 12) if np.any(data.labels[test] == c)]    # unseen classes
    shots, enroll_ms = {}, []
    for c in words:
        i = int(test[data.labels[test] == c][0])
        chip.reset()
        chip.run(events_to_frames(*data.sample(i), data.channels))
        enroll_ms.append(chip.enroll(data.label_names[c])["ms"])
        shots[i] = c
    correct = tested = rejected = 0
    for i in test:
        if int(i) in shots or data.labels[i] not in words:
            continue
        chip.reset()
        chip.run(events_to_frames(*data.sample(int(i)), data.channels))
        p = chip.predict()
        correct += p["best"] == data.label_names[data.labels[i]]
        rejected += p["label"] is None
        tested += 1
    return dict(model=path, model_bytes=size, words=[data.label_names[c] for c in words],
                enroll_ms=round(float(np.median(enroll_ms)), 2), tested=tested, correct=correct,
                accuracy=round(correct / max(tested, 1), 4), answered_none=rejected)


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    d = add(sub, "demo", cmd_demo, "the main job: build the small corpus, summary, raster plot")
    d.add_argument("--out", default="tessera-demo", help="output folder")
    d.add_argument("--seed", type=int, default=0, help="seed of the demo's voices")
    d.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
