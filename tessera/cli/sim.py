"""`tessera sim` (the firmware simulator as a serial device) and `tessera protocol-test` (the
conformance suite against a device)."""

from __future__ import annotations

import argparse
import sys

from tessera.runtime.errors import InputError

from .common import default_tsr, emit, fraction, positive_float, positive_int
from .device import open_session


def cmd_sim(args: argparse.Namespace) -> int:
    from tessera.firmware_sim.sim import main_loop

    if not args.pty and not args.listen:
        raise InputError("tessera sim needs --listen socket://127.0.0.1:PORT or --pty")
    if not args.idle_timeout >= 0:
        raise InputError(f"--idle-timeout must be 0 (never) or more seconds, got "
                         f"{args.idle_timeout:g}")
    if args.model is None and not args.no_model:
        args.model = default_tsr()
    try:
        return main_loop(listen=args.listen, pty=args.pty, bind_any=args.bind_any,
                         model=args.model, flash=args.flash, ram=args.ram, seed=args.seed,
                         drop=args.drop, corrupt=args.corrupt, baud=args.baud,
                         crash_during_save=args.crash_during_save,
                         reboot_after=args.reboot_after, json_out=args.json,
                         idle_s=args.idle_timeout)
    except InputError as exc:            # the library names its parameter, we our option
        if exc.param is None:
            raise
        raise InputError(f"{exc} (--{exc.param.replace('_', '-')})") from None


def cmd_protocol_test(args: argparse.Namespace) -> int:
    from tessera.protocol.conformance import run_conformance

    if not args.yes:
        with open_session(args) as s:
            held = s.words() if "model" in s.info else []
        if held:
            raise InputError(f"the device holds {len(held)} enrolled word(s) ({', '.join(held)})"
                             f" that protocol-test would erase: pass --yes to go on")
    print(f"protocol-test loads {args.model} into the device at {args.url} and erases its "
          f"enrolled words", file=sys.stderr)
    r = run_conformance(args.url, args.model, timeout=args.timeout)
    lines = [f"{r['url']}: {r['passed']} passed, {r['failed']} failed"]
    for c in r["checks"]:
        lines.append(f"  {'PASS' if c['ok'] else 'FAIL'}  {c['check']}"
                     + ("" if c["ok"] else f"  ({c['error']})"))
    emit(args, r, "\n".join(lines))
    return 0 if r["ok"] else 1


def _add_sim(sub, add) -> None:
    sm = add(sub, "sim", cmd_sim, "the firmware simulator as a serial device")
    sm.add_argument("--listen", metavar="URL", help="socket://127.0.0.1:PORT")
    sm.add_argument("--idle-timeout", type=float, default=30.0, metavar="S",
                    help="with --listen: let a host go when no whole valid frame has come "
                         "from it for S seconds (idle, trickling bytes or bad frames), so the "
                         "next one is served (default 30; 0: never)")
    sm.add_argument("--pty", action="store_true", help="open a pseudo-terminal, print its path")
    sm.add_argument("--bind-any", action="store_true", help="allow a non-loopback address")
    sm.add_argument("--flash", default="tessera-flash.img", help="persistent flash image file")
    sm.add_argument("--ram", type=int, default=512 * 1024, help="RAM budget in bytes")
    sm.add_argument("--baud", type=positive_int, default=None,
                    help="limit the link to this many bits per second (default: no limit)")
    sm.add_argument("--drop", type=fraction, default=0.0,
                    help="fraction of the bytes dropped in each direction, in [0, 1)")
    sm.add_argument("--corrupt", type=fraction, default=0.0,
                    help="fraction of the bytes corrupted in each direction, in [0, 1)")
    sm.add_argument("--crash-during-save", action="store_true",
                    help="die between writing the new flash image and renaming it")
    sm.add_argument("--reboot-after", type=int, default=0, metavar="N",
                    help="power-cycle after every N-th request (RAM lost, flash kept)")
    sm.add_argument("--seed", type=int, default=0, help="seed of the simulated RRAM's noise")
    sm.add_argument("--model", help="model to boot with when the flash holds none (default: the "
                                    "committed default model at 4 bits)")
    sm.add_argument("--no-model", action="store_true", help="boot without a model")


def _add_protocol_test(sub, add) -> None:
    pt = add(sub, "protocol-test", cmd_protocol_test, "conformance suite against a device")
    pt.add_argument("url", help="pyserial URL of the device")
    pt.add_argument("--model", required=True, help="a .tsr model the suite loads")
    pt.add_argument("--timeout", type=positive_float, default=3.0,
                    help="seconds to wait for each answer")
    pt.add_argument("--yes", action="store_true",
                    help="go on even though the device holds enrolled words (they are erased)")


def register(sub, add) -> None:
    """Add this group's subcommands to the parser."""
    _add_sim(sub, add)
    _add_protocol_test(sub, add)
