"""What every subcommand shares: output (--json), progress bars, argument types, the parser."""


from __future__ import annotations

import argparse
import json
import sys



def json_default(x):
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as plain numbers and
    lists (every command's ``--json`` output and the demo's summary.json)."""
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def emit(args: argparse.Namespace, result: dict, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result, default=json_default))
    else:
        print(human)


def show_progress(args) -> bool:
    """Progress bars: only on a terminal, and never with --no-progress or --json."""
    return (not getattr(args, "no_progress", False) and not getattr(args, "json", False)
            and sys.stderr.isatty())


def stage(args, line: str) -> None:
    """A long command says what it is doing (stderr; not with --no-progress)."""
    import sys

    if not getattr(args, "no_progress", False):
        print(line, file=sys.stderr, flush=True)


class _NoBar:
    """What :func:`progress_bar` gives when none shows: the same calls, doing nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, args):
    """A tqdm bar on a terminal; otherwise (or where tqdm, an extra, is not installed: the
    device side's ``pip install .``) one that does nothing."""
    if show_progress(args):
        try:
            from tqdm import tqdm
        except ImportError:
            return _NoBar()
        return tqdm(total=total, leave=False)
    return _NoBar()


def default_tsr() -> str:
    """The committed default model at 4 bits, as the package ships it (the simulated board's
    factory model: no torch needed). ``tests/test_openset.py`` checks that it is what
    ``tessera export models/default/model.tsb --bits 4`` writes."""
    from tessera.firmware_sim import factory_model

    return factory_model()


def default_model_path() -> str:
    """The committed default model (``models/default/model.tsb``, shipped as package data)."""
    from tessera.models import default_model

    return default_model()


def _checked(kind, ok, what: str):
    """An argparse type: ``kind(text)`` that must satisfy ``ok``, else "expected WHAT"."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v:g}")
        return v
    return parse


positive_int = _checked(int, lambda v: v > 0, "a positive integer")


positive_float = _checked(float, lambda v: v > 0, "a positive number")


fraction = _checked(float, lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")


probability = _checked(float, lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]")


NO_PROGRESS = "no progress bar (one shows only while stderr is a terminal)"


class _Formatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it names one itself or has none."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if ("default" in h or d is None or d is False or d == [] or d is argparse.SUPPRESS
                or not action.option_strings):
            return h
        if isinstance(d, (list, tuple)):
            return h + " (default: " + " ".join(map(str, d)).replace("%", "%%") + ")"
        return h + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error format (``--help`` shows the usage) and
    defaults shown in every option's help."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"tessera: error: {self.prog}: {message} (see {self.prog} --help)\n")


