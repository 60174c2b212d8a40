"""`tessera bundle|level-eq|calibrate`: a model file made from another, never rewritten in place
(the model bundle: trainer/learning/bundle.py, MODEL_FORMAT.md)."""

from __future__ import annotations

import argparse
import json
import os

from tessera.runtime.errors import InputError

from .common import NO_PROGRESS, emit, fraction, positive_int, show_progress


def cmd_level_eq(args: argparse.Namespace) -> int:
    from tessera.trainer.learning.storage import set_level_eq

    r = set_level_eq(args.model, args.out, args.reference, shift=args.shift, gate=args.gate,
                     prior=args.prior, remove=args.remove)
    if args.remove:
        text = f"{args.out}: {args.model} without level equalization"
    else:
        text = (f"{args.out}: {args.model} whose front-end moves each channel by (running level - "
                f"{r['reference']}'s long-term level, {min(r['ref'])}..{max(r['ref'])}); "
                f"speech steps: mean level >= {r['gate']} above the floor; each moves the running "
                f"level 2^-{r['shift']} of the way (tessera export writes it in the chip's file)")
    emit(args, {k: v for k, v in r.items() if k != "ref"}, text)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import tempfile

    from tessera.trainer.exchange.export import DEFAULT_CALIBRATION, ExportConfig, export_model
    from tessera.trainer.evaluation.openset import calibrate
    from tessera.trainer.learning.storage import load_model

    if not args.dry_run and not args.out:
        raise InputError("calibrate writes the calibrated model as a new file: --out MODEL.tsb "
                         "(or --dry-run to report only)")
    with tempfile.TemporaryDirectory() as tmp:
        tsr = os.path.join(tmp, "m.tsr")
        export_model(load_model(args.model), tsr, ExportConfig(weight_bits=args.bits),
                     calibration=dict(DEFAULT_CALIBRATION, source=None))   # not the old fit
        r = calibrate(args.model, tsr, args.data, target_fa=args.target_fa,
                      episodes=args.episodes, fsdd=args.fsdd,
                      out=None if args.dry_run else args.out, progress=show_progress(args),
                      fit_people=args.fit_people)
    curves, points = r.pop("curves"), r.pop("points")
    if args.plot:
        from tessera.tools.plots import hits_png

        r["plot"] = hits_png(args.plot, curves, points, title=f"{args.model}: 5 words enrolled, "
                             f"one shot each; threshold {r['none_threshold']:.3f}")
    if args.json:
        r["curves"] = curves
    t = r["test"]
    lines = [f"'none of these' below cosine {r['none_threshold']:.3f}, fewer than "
             f"{r['min_inputs']} input events (silence); confidence = "
             f"sigmoid({r['calib'][0]:.2f} c1 + "
             f"{r['calib'][1]:.2f} (c1 - c2) {r['calib'][2]:+.2f})"
             + (f"; written to {r['path']}" if "path" in r else " (dry run: not written)"),
             f"  the corpus's test voices ({os.path.basename(args.data)}): hits {100 * t['hits']:.1f} %, false accepts: words "
             f"{100 * t['false_accepts_words']:.1f} %, noise {100 * t['false_accepts_noise']:.1f}"
             f" %; calibration error {r['test_calibration_error']:.3f}"
             + (" (each person stated by a calibration fitted on the others)"
                if "heldout_reliability" in r else "")]
    if "fsdd" in r:
        f = r["fsdd"]
        lines.append(f"  FSDD (validation): hits {100 * f['hits']:.1f} %, false accepts: words "
                     f"{100 * f['false_accepts_words']:.1f} %, noise "
                     f"{100 * f['false_accepts_noise']:.1f} %; best hits at <= 5 % false "
                     f"accepts {100 * r['fsdd_hits_at_5pct_fa']:.1f} %")
    emit(args, r, "\n".join(lines))
    return 0


def _add_level_eq(sub, add) -> None:
    le = add(sub, "level-eq", cmd_level_eq, "give a model the front-end's long-term level "
             "equalization (a reference corpus's long-term level, how fast the device follows "
             "a voice); written with the model as a new bundle, used by eval for WAV folders and "
             "by export")
    le.add_argument("model", help="a model bundle (model.tsb) or checkpoint (read, not rewritten)")
    le.add_argument("--out", required=True, help="the new model bundle to write (model.tsb)")
    le.add_argument("--reference", metavar="CORPUS",
                    help="the --keep-audio corpus the training corpora were equalized to "
                         "(default: the model's, or its config's data.level_eq)")
    le.add_argument("--shift", type=int, default=None,
                    help="each speech step moves the running level 2^-SHIFT of the way (default "
                         "15: about 110 utterances; faster follows the last words' spectrum, "
                         "see BENCHMARKS.md)")
    le.add_argument("--gate", type=int, default=None,
                    help="a step is speech when its mean level is this far above the floor "
                         "(level units, default 40)")
    le.add_argument("--prior", type=int, default=None,
                    help="until 2^SHIFT speech steps are heard, the running level is the mean of "
                         "all heard, the reference weighing PRIOR steps (0, the default: 2^-SHIFT "
                         "from the start; the default model has 2048, about 7 words)")
    le.add_argument("--remove", action="store_true", help="take the equalization away")


def _add_calibrate(sub, add) -> None:
    cb = add(sub, "calibrate", cmd_calibrate, "fit the 'none of these' rule (threshold, spike "
             "floor, confidence calibration) on a corpus's validation voices; writes the model "
             "with it as a new bundle (--out), which tessera export puts in the chip's file")
    cb.add_argument("model", help="a model bundle (model.tsb) or checkpoint (read, not rewritten)")
    cb.add_argument("--out", help="the calibrated model bundle to write (required unless "
                                  "--dry-run)")
    cb.add_argument("--data", required=True, help="corpus (validation speakers fit, test "
                                                  "speakers report)")
    cb.add_argument("--fsdd", metavar="DIR", help="also report on this FSDD-style WAV folder "
                                                  "(validation only: nothing is fitted on it)")
    cb.add_argument("--target-fa", type=fraction, default=0.25,
                    help="false accepts of words not enrolled allowed on the validation "
                         "episodes (default 0.25: see BENCHMARKS.md for why not 0.05)")
    cb.add_argument("--episodes", type=positive_int, default=300,
                    help="episodes whose answers fit the calibration")
    cb.add_argument("--fit-people", choices=["choose", "all"], default="choose",
                    help="the confidence's calibration fitted on the validation speakers "
                         "(choose, the default) or on the validation and test speakers "
                         "together (all: its reliability is then stated leave one person out; "
                         "the threshold is fitted on the validation speakers either way)")
    cb.add_argument("--bits", type=int, default=4, help="core weight bits of the chip")
    cb.add_argument("--plot", metavar="PNG", help="hits against false accepts")
    cb.add_argument("--dry-run", action="store_true", help="report, do not write")
    cb.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)


def cmd_bundle(args: argparse.Namespace) -> int:
    from tessera.trainer.learning.storage import model_state, refuse_in_place, save_bundle

    refuse_in_place(args.model, args.out)
    state = model_state(args.model)
    cal = state["calibration"]
    if args.calibration:
        try:
            with open(args.calibration) as fh:
                cal = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable calibration ({exc})", source=args.calibration) from None
        if not isinstance(cal, dict):
            raise InputError("a calibration is a JSON map", source=args.calibration)
    size = save_bundle(args.out, state, calibration=cal)
    r = dict(out=args.out, bytes=size, calibrated=cal is not None,
             level_eq=state["level_eq"] is not None)
    emit(args, r, f"wrote {args.out}: {size} bytes, one bundle of the weights, config, "
                  f"{'calibration' if cal else 'no calibration'} and "
                  f"{'level equalization' if r['level_eq'] else 'no level equalization'}")
    return 0


def _add_bundle(sub, add) -> None:
    b = add(sub, "bundle", cmd_bundle, "write a model (an earlier tessera's model.pt, a "
            "checkpoint.pt or a bundle) as one model bundle, with a calibration.json folded in")
    b.add_argument("model", help="model.pt, checkpoint.pt or model.tsb (read, not rewritten)")
    b.add_argument("--calibration", metavar="JSON", help="an earlier tessera calibrate's "
                   "calibration.json to carry in the bundle")
    b.add_argument("--out", required=True, help="the model bundle to write (model.tsb)")


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    _add_bundle(sub, add)
    _add_level_eq(sub, add)
    _add_calibrate(sub, add)
