"""The ``tessera`` command: one entry point, one subcommand per job.

Every subcommand prints a human summary, or with ``--json`` exactly one JSON object on stdout
(progress bars go to stderr). Bad input ends with a one-line ``tessera: error: ...`` and exit
code 2; set ``TESSERA_DEBUG=1`` for the traceback.

The parser core lives here; each command group is one module whose ``register(sub, add)`` adds
its subcommands, and each command is a thin layer over a library function:
:mod:`.data` (corpus), :mod:`.learn` (train, eval, diagnose), :mod:`.modelfile` (bundle,
level-eq, calibrate), :mod:`.pretrain`,
:mod:`.chip` (export, parity, chip-eval), :mod:`.device` (sim, device, protocol-test), :mod:`.bench`, :mod:`.demo`.
"""

from __future__ import annotations

import argparse
import os
import sys

from tessera.runtime.errors import TesseraError

from . import bench, chip, data, demo, device, learn, modelfile, pretrain, sim
from .common import Parser

__all__ = ["main", "build_parser"]

GROUPS = (data, learn, modelfile, pretrain, chip, sim, device, bench, demo)     # the order of the command list in --help


def build_parser() -> argparse.ArgumentParser:
    from tessera import __version__

    p = Parser(prog="tessera", description="tessera: few-shot spoken-word learning on a simulated "
                "Mosaic chip. Every command prints a summary, or one JSON object with --json.")
    p.add_argument("--version", action="version", version=f"tessera {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parser_group, name, func, help_):
        sp = parser_group.add_parser(name, help=help_, description=help_.replace("%%", "%"))
        sp.set_defaults(_prog=sp.prog)
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sp.set_defaults(func=func)
        return sp

    for group in GROUPS:
        group.register(sub, add)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                         # name the subcommand whose options these are not
        prog = getattr(args, "_prog", parser.prog)
        parser.exit(2, f"tessera: error: {prog}: unrecognized arguments: {' '.join(extra)} "
                       f"(see {prog} --help)\n")
    try:
        return int(args.func(args) or 0)
    except TesseraError as exc:
        if os.environ.get("TESSERA_DEBUG"):
            raise
        print(f"tessera: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tessera: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                      # e.g. tessera ... --json | head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())    # no second error when Python flushes stdout
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
