"""The filter bank's fixed-point poles and residues derived exactly, so a model file need not carry
them (format version 4).

:func:`tessera.runtime.filterdesign.filter_poles` designs the bank in float64 with the machine's
exp/cos/log10; :func:`~tessera.runtime.filterdesign.fixed_poles` rounds the result to Q1.31. Here
the same formulas run in 60-digit decimal arithmetic (Python's :mod:`decimal`: software, the
same on every machine; its ``exp``, ``ln`` and ``log10`` are correctly rounded, cos and sin are
Taylor sums in a fixed order), then round to Q1.31. Float64's errors (about 1e-16) are far below
half a Q1.31 step (2.3e-10), so the two agree except where a value falls within float64's error
of a rounding boundary: on the default 700-channel bank every one of the 11,200 values agrees
(the tests check it). The exporter still compares them and writes the poles into the file when
any differ, so a reader that derives them always gets what the model was trained with.

Example
    >>> from tessera.runtime.filterdesign import FrontendSpec
    >>> fc_mhz, fixed = exact_poles(FrontendSpec(), [0, 699])
    >>> fc_mhz, fixed.shape
    ([50000, 7600000], (2, 4, 4))
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from functools import lru_cache

import numpy as np

from .errors import InputError

__all__ = ["exact_poles", "carried"]

POLE_BITS = 31          # as filterdesign.POLE_BITS (a test keeps them equal)
_PREC = 60
_PI = Decimal("3.141592653589793238462643383279502884197169399375105820974944592307816406286")
_EPS = Decimal(10) ** -(_PREC + 5)


def _cos_sin(x: Decimal) -> tuple[Decimal, Decimal]:
    """cos and sin of ``x``, reduced to [-pi, pi], by their Taylor sums."""
    two_pi = 2 * _PI
    x -= two_pi * (x / two_pi).to_integral_value()
    c, s, term, n = Decimal(1), Decimal(0), Decimal(1), 0
    while True:
        n += 1
        term = term * x / n
        if n % 4 == 1:
            s += term
        elif n % 4 == 2:
            c -= term
        elif n % 4 == 3:
            s -= term
        else:
            c += term
        if abs(term) < _EPS:
            return c, s


def _mul(a, b):
    return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]


def _div(a, b):
    d = b[0] * b[0] + b[1] * b[1]
    return (a[0] * b[0] + a[1] * b[1]) / d, (a[1] * b[0] - a[0] * b[1]) / d


def _exp(a):
    m = a[0].exp()
    c, s = _cos_sin(a[1])
    return m * c, m * s


def _num(v: float) -> Decimal:
    return Decimal(repr(float(v)))


@lru_cache(maxsize=8192)
def _channel(c: int, channels: int, f_lo: float, f_hi: float, order: int, bw_scale: float,
             rate: int) -> tuple[int, tuple]:
    """Centre frequency (mHz) and the (order, 4) Q1.31 values of channel ``c`` of the bank: the
    formulas of filterdesign.erb_space and filter_poles, term for term."""
    with localcontext(Context(prec=_PREC)):
        k_erb, c_erb = Decimal("21.4"), Decimal("4.37e-3")
        erb = lambda f: k_erb * (c_erb * f + 1).log10()  # noqa: E731
        lo, hi = erb(_num(f_lo)), erb(_num(f_hi))
        e = lo + (hi - lo) * c / (channels - 1) if channels > 1 else lo
        fc = (Decimal(10) ** (e / k_erb) - 1) / c_erb
        half_bw = Decimal("0.5") * _num(bw_scale) * Decimal("24.7") * (c_erb * fc + 1)
        fs, K = Decimal(rate), order
        proto = [_cos_sin(_PI * (2 * k + K + 1) / (2 * K)) for k in range(K)]
        lp = [(2 * _PI * half_bw * p[0], 2 * _PI * half_bw * p[1]) for p in proto]
        num = (Decimal(1), Decimal(0))
        for v in lp:
            num = _mul(num, (-v[0], -v[1]))
        resid = []
        for k in range(K):
            den = (Decimal(1), Decimal(0))
            for j in range(K):
                if j != k:
                    den = _mul(den, (lp[k][0] - lp[j][0], lp[k][1] - lp[j][1]))
            resid.append(_div(num, den))
        w = 2 * _PI * fc
        pole = [_exp((v[0] / fs, (v[1] + w) / fs)) for v in lp]
        r = [(v[0] / fs, v[1] / fs) for v in resid]
        z = _exp((Decimal(0), w / fs))
        h = (Decimal(0), Decimal(0))
        for k in range(K):
            q = _div(pole[k], z)
            t = _div(r[k], (1 - q[0], -q[1]))
            h = (h[0] + t[0], h[1] + t[1])
        gain = (h[0] * h[0] + h[1] * h[1]).sqrt()
        scale = Decimal(2) ** POLE_BITS
        one = Decimal(1)
        rows = tuple(tuple(int((v * scale).quantize(one, rounding=ROUND_HALF_EVEN))
                           for v in (pole[k][0], pole[k][1], r[k][0] / gain, r[k][1] / gain))
                     for k in range(K))
        return int((fc * 1000).quantize(one, rounding=ROUND_HALF_EVEN)), rows


def exact_poles(spec, channels) -> tuple[list[int], np.ndarray]:
    """Centre frequencies in mHz and the Q1.31 poles and residues (len(channels), order, 4) int32
    of the given channels of ``spec``'s bank (what :func:`~tessera.runtime.filterdesign.
    fixed_poles` gives from float64, derived the same way on every machine)."""
    chans = [int(c) for c in np.asarray(channels).reshape(-1)]
    if any(not 0 <= c < spec.channels for c in chans):
        raise InputError(f"a channel index outside the front-end's {spec.channels} channels")
    try:
        rows = [_channel(c, spec.channels, spec.f_lo, spec.f_hi, spec.order, spec.bw_scale,
                         spec.sample_rate) for c in chans]
    except ArithmeticError as exc:                      # decimal's InvalidOperation, Overflow
        raise InputError(f"the front-end spec gives no filter bank ({type(exc).__name__})"
                         ) from None
    fixed = np.array([r for _, r in rows], np.int64).reshape(len(chans), spec.order, 4)
    if fixed.size and np.abs(fixed).max() >= 1 << POLE_BITS:
        raise InputError("a pole or residue has magnitude >= 1: cannot hold it in Q1.31")
    return [f for f, _ in rows], fixed.astype(np.int32)


def carried(frontend: dict, channels) -> dict:
    """A model file's ``frontend`` section with the poles and centre frequencies of the
    ``channels`` read written in (what format 3 always held): for tests, fuzzing, and readers
    that cannot derive them."""
    from .filterdesign import FrontendSpec
    from .model_format import pack_ints

    fc_mhz, fixed = exact_poles(FrontendSpec.from_dict(frontend["spec"]), channels)
    return dict(frontend, fc_mhz=fc_mhz, poles=pack_ints(fixed, 32))
