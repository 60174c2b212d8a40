"""`tessera export|parity|chip-eval`: the trained model on the integer chip."""


from __future__ import annotations

import argparse
import os

from tessera.runtime.errors import InputError

from .common import NO_PROGRESS, emit, positive_int, show_progress


def _nir_samples(model, count: int):
    """A few inputs for the NIR check: random spike rasters at the data's shape (steps of the
    model's window, its inputs, about 5 % of them active a step)."""
    import numpy as np

    rng = np.random.default_rng(0)
    cfg = model.core.cfg
    steps = max(20, model.config.data.steps)
    return (rng.random((count, steps, cfg.inputs)) < 0.05).astype(np.float64)


def cmd_import_nir(args: argparse.Namespace) -> int:
    from tessera.trainer.exchange.nir_io import import_nir

    layout = None
    if args.layout:
        try:
            layout = tuple(int(v) for v in args.layout.lower().split("x"))
            assert len(layout) == 3 and min(layout) > 0
        except (ValueError, AssertionError):
            raise InputError(f"--layout takes ROWSxCOLSxTILE, e.g. 4x4x16, got {args.layout!r}") \
                from None
    r = import_nir(args.nir, args.like, args.out, layout)
    emit(args, r, f"imported {args.nir} -> {r['out']}: {r['neurons']} neurons as "
                   f"{r['layout']} tiles, {r['inputs']} inputs, {r['recurrent_connections']} "
                   f"recurrent connections ({r['dropped_by_hop_budget']} dropped by the hop "
                   f"budget), reset: {r['reset']}; config from {r['like']}. Next: tessera eval, "
                   f"tessera train --init {r['out']}, or tessera export")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tessera.trainer.exchange.export import ExportConfig, export_model
    from tessera.trainer.learning.storage import load_model

    model = load_model(args.model)
    if args.format == "onnx":
        from tessera.trainer.exchange.onnx_export import export_onnx

        r = export_onnx(model, args.out)
        emit(args, r, f"wrote {r['out']}: {r['bytes']} bytes, ONNX opset {r['opset']}, "
                       f"{r['graph']} ({r['inputs']} inputs, {r['neurons']} neurons; checked "
                       f"with onnx.checker)")
        return 0
    if args.format == "nir":
        from tessera.trainer.exchange.nir_io import check_roundtrip, write_nir

        r = write_nir(model, args.out)
        r.update(out=args.out, bytes=os.path.getsize(args.out))
        r["check"] = check_roundtrip(model, args.out, _nir_samples(model, 3))
        c = r["check"]
        emit(args, r, f"wrote {r['out']}: {r['bytes']} bytes, NIR graph input -> w_in -> lif "
                       f"<-> w_rec, lif -> trace -> output ({r['neurons']} LIF neurons, "
                       f"{r['recurrent_connections']} recurrent connections); read back with "
                       f"nir.read and run on {c['samples']} random spike inputs: "
                       f"{c['spikes_differing']} of {c['spike_decisions']} spike decisions differ "
                       f"from the trainer's core, traces within {c['max_trace_difference']:.1g} "
                       f"(tessera's reset, in the graph's metadata); with NIR's reset to v_reset "
                       f"instead, {100 * c['nir_reset_agreement']:.1f} % agree. Not in "
                       f"NIR: integer tables, tile layout, readout features (see trainer/exchange/nir_io.py)")
        return 0
    cfg = ExportConfig(weight_bits=args.bits, readout_bits=args.readout_bits,
                       max_classes=args.max_classes, none_threshold=args.threshold)
    r = export_model(model, args.out, cfg, source=args.model)
    emit(args, r, f"wrote {r['out']}: {r['bytes']} bytes, {r['weight_bits']}-bit weights, "
                   f"{r['routes']} tile routes, {r['connections']} recurrent connections, "
                   f"'none' below cosine {r['none_threshold']:.3f} ("
                   + (f"calibrated: {r['calibrated']})" if r["calibrated"] else "uncalibrated "
                      "default: run tessera calibrate)")
                   + f"; read back by the chip's loader, {r['parity']['windows']} parity windows "
                     f"bit-exact with the trainer's integer mode")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from tessera.trainer.evaluation.chipeval import parity

    r = parity(args.model, args.data, limit=args.limit, progress=show_progress(args))
    emit(args, r, f"{r['model']} on {r['utterances']} test utterances of {r['data']}: "
                   f"bit-exact fraction {r['bit_exact_fraction']} (trainer integer mode vs chip: "
                   f"{', '.join(r['checked'])})")
    return 0 if r["bit_exact_fraction"] == 1.0 else 1


def cmd_chip_eval(args: argparse.Namespace) -> int:
    from tessera.trainer.evaluation.chipeval import chip_accuracy
    from tessera.trainer.learning.storage import load_model

    model = load_model(args.model)
    r = chip_accuracy(model, args.model, args.data, shots=tuple(args.shots),
                      episodes=args.episodes, weight_bits=tuple(args.bits),
                      drift=tuple(args.drift), write_noise=args.write_noise,
                      progress=show_progress(args), people=args.people)
    lines = [f"{args.model} through the chip, {r['ways']}-way {r['split']}, {r['episodes']} "
             f"episodes (same episodes for float and chip):",
             "  float: " + ", ".join(f"{k} {100 * v['accuracy']:.1f} ± {100 * v['ci95']:.1f} %"
                                      for k, v in r["float"].items())]
    for row in r["rows"]:
        accs = ", ".join(f"{k}-shot {100 * row[f'acc_{k}shot']:.1f} % (gap "
                         f"{100 * row[f'gap_{k}shot']:+.1f})" for k in args.shots)
        comp = {True: " (compensated)", False: " (uncompensated)", None: ""}[
            row["drift_compensation"]]
        differ = ", ".join(f"{100 * row[f'order_differ_{k}shot']:.2f} %" for k in args.shots)
        lines.append(f"  weights {row['weight_bits']} bits, drift {row['drift_s']:g} s{comp}: "
                     f"{accs}; answers that differ from one joint enrollment: {differ}")
    emit(args, r, "\n".join(lines))
    return 0


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    x = add(sub, "export", cmd_export, "write a trained model as the chip's fixed-point file "
            "(or as an ONNX graph of one time step)")
    x.add_argument("model", help="a model bundle (model.tsb) or checkpoint.pt")
    x.add_argument("--out", required=True, help="output .tsr (or .onnx, .nir) file")
    x.add_argument("--format", choices=["tsr", "onnx", "nir"], default="tsr",
                   help="tsr: the chip's file (MODEL_FORMAT.md); onnx: the float model as one "
                        "time step, state in and out; nir: the float core as a NIR graph, read "
                        "back and checked against the trainer (both: the interop extra)")
    x.add_argument("--bits", type=int, default=8, help="core weight bits (2..8)")
    x.add_argument("--readout-bits", type=int, default=8,
                   help="bits of a readout weight level (2..16)")
    x.add_argument("--max-classes", type=int, default=32,
                   help="readout columns: how many words a device can enroll (1..1024)")
    x.add_argument("--threshold", type=float, default=None, metavar="COS",
                   help="'none of these' below this cosine (default: the calibration in the "
                        "model's bundle, written by tessera calibrate)")

    im = add(sub, "import-nir", cmd_import_nir, "a NIR graph of a recurrent LIF layer (from "
             "tessera or another NIR tool) as a trainer checkpoint, to fine-tune with tessera "
             "train --init and export to the chip")
    im.add_argument("nir", help="the .nir file")
    im.add_argument("--like", default="models/default/model.tsb",
                    help="a trained model whose config (data pipeline, readout, rates) the "
                         "imported core takes (its inputs must match)")
    im.add_argument("--out", required=True, help="the model bundle to write (model.tsb)")
    im.add_argument("--layout", help="ROWSxCOLSxTILE (default: 16-neuron tiles in the squarest "
                                     "grid)")
    pa = add(sub, "parity", cmd_parity, "bit-exactness of the chip against the trainer's "
             "integer mode on every test utterance (exit 1 unless 1.0)")
    pa.add_argument("model", help="a .tsr file")
    pa.add_argument("--data", required=True, help="corpus (its test split is used)")
    pa.add_argument("--limit", type=int, default=0, help="only the first N test utterances")
    pa.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    ce = add(sub, "chip-eval", cmd_chip_eval, "few-shot accuracy through the chip's own "
             "enrollment vs the float model, over bit widths and drift")
    ce.add_argument("model", help="a model bundle (exported at each bit width)")
    ce.add_argument("--data", required=True, help="corpus")
    ce.add_argument("--shots", nargs="+", type=positive_int, default=[1, 5],
                    help="enrollment utterances per word")
    ce.add_argument("--episodes", type=positive_int, default=600,
                    help="5-way episodes per row")
    ce.add_argument("--bits", nargs="+", type=int, default=[8], help="core weight bit widths")
    ce.add_argument("--drift", nargs="*", type=float, default=[], metavar="SECONDS",
                    help="also after these ages (last weight width), with and "
                         "without the chip's drift compensation")
    ce.add_argument("--write-noise", type=float, default=0.0,
                    help="RRAM write noise, a fraction of the level range (0.05: 5 %%)")
    ce.add_argument("--people", choices=("test", "val"), default="test",
                    help="whose recordings: the corpus's test voices, or its validation voices "
                         "(a `corpus hear --people` set: the choose people, what a recipe may "
                         "be chosen on)")
    ce.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
