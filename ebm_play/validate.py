"""Checks for numbers that arrive from people: sliders, API callers, the CLI, files. Each names the
field it checks, so a message says which value is wrong, and none of them can overflow or crash on
NaN, infinities, huge integers, booleans or strings."""

from __future__ import annotations

import math

from .errors import EBMError, shown


def _is_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


def whole(name: str, v, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] (a float with no fraction counts), or an EBMError naming ``name``."""
    if not _is_number(v) or (isinstance(v, float) and not (math.isfinite(v) and v.is_integer())):
        raise EBMError(f"{name} must be a whole number, got {shown(v)}")
    if not lo <= v <= hi:
        n = int(v)
        got = str(n) if abs(n) < 10**15 else f"about {'-' if n < 0 else ''}10^{n.bit_length() * 30103 // 100000}"
        raise EBMError(f"{name} must be between {lo} and {hi}, got {got}")
    return int(v)


def number(name: str, v, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in [lo, hi], or an EBMError naming ``name``."""
    if not _is_number(v):
        raise EBMError(f"{name} must be a number, got {shown(v)}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise EBMError(f"{name} must be a finite number, got {shown(v)}")
    if not lo <= f <= hi:
        raise EBMError(f"{name} must be between {lo:g} and {hi:g}, got {f:g}")
    return f
