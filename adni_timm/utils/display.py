"""Numbers formatted for people: every value the
toolkit prints or writes into a card goes through here.

Three decimals, confidence intervals in brackets, '-' for a missing value; never a raw float repr
such as ``0.6699999999999999``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ['is_number', 'fmt', 'fmt_ci', 'fmt_duration']


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int = 3, missing: str = '-') -> str:
    """``0.6699999999999999`` -> ``'0.670'``; ints stay ints; None -> ``missing``."""
    if value is None:
        return missing
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if is_number(value):
        return f'{value:.{digits}f}'
    return str(value)


def fmt_ci(
    value: Any, ci: Sequence[float] | None = None, digits: int = 3, missing: str = '-'
) -> str:
    """``'0.900 [0.833, 0.967]'``: the value and, when known, its 95% CI in brackets."""
    text = fmt(value, digits, missing)
    if ci and len(ci) == 2 and all(is_number(c) for c in ci):
        text += f' [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]'
    return text


def fmt_duration(seconds: float) -> str:
    """``75`` -> ``'1m15s'``, ``3725`` -> ``'1h02m'``: short enough for a log line."""
    if not is_number(seconds) or seconds < 0:
        return '-'
    seconds = round(seconds)
    if seconds < 60:
        return f'{seconds}s'
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def preview(items: Sequence, n: int = 10) -> str:
    """The first ``n`` items, comma-separated, then "... and N more": an error names a few."""
    items = [str(i) for i in items]
    more = f' ... and {len(items) - n} more' if len(items) > n else ''
    return ', '.join(items[:n]) + more
