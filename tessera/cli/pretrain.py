"""`tessera pretrain`: the core as a word classifier on real voices (issue 34's first stage)."""


from __future__ import annotations

import argparse
import json
import os

from .common import NO_PROGRESS, emit, positive_int, show_progress


def cmd_pretrain(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from tessera.runtime.threads import set_blas_threads
    from tessera.trainer.data.hearset import load_hear_set
    from tessera.trainer.learning.pretrain import recipe_from_factors, save_model, train_classifier

    recipe = recipe_from_factors(list(args.set or []))
    if args.quick:
        recipe = dataclasses.replace(recipe, epochs=1, time_limit_s=150.0)
    if args.epochs:
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    torch.set_num_threads(args.threads)
    set_blas_threads(args.threads)
    hs = load_hear_set(args.data, tuple(args.tts or ()))
    os.makedirs(args.out, exist_ok=True)
    net, s = train_classifier(hs, recipe, args.out, resume=args.resume,
                              progress=show_progress(args), init=args.init)
    s["recipe"] = dataclasses.asdict(recipe)
    with open(os.path.join(args.out, "metrics.jsonl"), "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in s["log"])
    lines = [f"pretrained {s['epochs']} epochs on {s['train_utterances']} utterances of "
             f"{s['classes']} words in {s['minutes']} min"
             + (" (stopped at the time limit)" if s["stopped_early"] else "")]
    if recipe.chip_ready:
        s["model"] = os.path.join(args.out, "model.tsb")
        save_model(net, s["model"], s)
        lines.append(f"  -> {s['model']} (tessera export, eval, calibrate, train --init read it)")
    else:
        lines.append("  not chip-ready (the LIF core on counts is): no model.tsb")
    if s["log"]:
        lines.append(f"  last epoch: training accuracy {100 * s['log'][-1]['train_acc']:.1f} %")
    emit(args, s, "\n".join(lines))
    return 0


def _add_pretrain(sub, add) -> None:
    pt = add(sub, "pretrain", cmd_pretrain, "train the core as a word classifier on the real "
             "voices of a hear set (tessera corpus hear), the chip's own arithmetic, segments of each "
             "word's own length (the shipped default's recipe); "
             "writes model.tsb for export, calibrate and train --init (issue 34)")
    pt.add_argument("--data", required=True, help="hear set .npz (tessera corpus hear)")
    pt.add_argument("--out", required=True, help="output folder (model.tsb, checkpoint.pt, "
                                                 "metrics.jsonl)")
    pt.add_argument("--set", action="append", metavar="FACTOR=VALUE",
                    help="a recipe factor (trainer/learning/pretrain.py, Recipe), e.g. epochs=24")
    pt.add_argument("--tts", action="append", metavar="CORPUS",
                    help="also train on this corpus's train voices (tessera corpus build); "
                         "repeatable")
    pt.add_argument("--epochs", type=positive_int, help="epochs (default: the recipe's, 6)")
    pt.add_argument("--quick", action="store_true", help="one epoch, at most 150 s")
    pt.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    pt.add_argument("--init", metavar="CHECKPOINT",
                    help="start from another pretrain run's checkpoint.pt (a second stage, "
                         "e.g. --set objective=proto after the classifier)")
    pt.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    pt.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    _add_pretrain(sub, add)
