"""Sizes and rates as people write them: `64K`, `1M`, `64kb` (bytes), `100mbit`, `1gbit` (bit/s).

One parser for every place that takes them: UCCL_* settings, the benchmarks' flags and the
fabric emulator's link specifications.
"""

from __future__ import annotations

from typing import Union

_SIZE_SCALE = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_RATE_UNITS = (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0))


def parse_size(text: Union[str, int]) -> int:
    """Bytes from `4096`, `64K`, `64kb`, `1M`, `1.5G` (binary multiples); ValueError otherwise."""
    if isinstance(text, int):
        return text
    t = str(text).strip().lower()
    t = t[:-1] if t.endswith("b") else t
    scale = _SIZE_SCALE.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if scale > 1 else t) * scale)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (try 4096, 64K, 1M)") from None


def parse_rate(text: Union[str, float]) -> float:
    """Bits per second from tc-style rates: `100mbit`, `1gbit`, `500kbit`, `12000`; ValueError otherwise."""
    if isinstance(text, (int, float)):
        return float(text)
    t = str(text).strip().lower()
    scale = 1.0
    for unit, unit_scale in _RATE_UNITS:
        if t.endswith(unit):
            t, scale = t[: -len(unit)], unit_scale
            break
    try:
        return float(t) * scale
    except ValueError:
        raise ValueError(f"{text!r} is not a rate (try 100mbit, 1gbit)") from None

