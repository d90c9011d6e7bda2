"""Progress that fits where it goes: a live bar on a terminal, plain lines in a log file.

Under SLURM, ``nohup`` or any redirect, a tqdm bar writes carriage-return updates into the log
(thousands of fragments per run); there we print one plain line every ``interval_s`` seconds
instead, with img/s and the epoch's ETA, which ``less`` and ``tail -f`` read well.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from tqdm.auto import tqdm

from .display import fmt_duration

__all__ = ['PROGRESS_MODES', 'resolve_mode', 'Progress']

PROGRESS_MODES = ('auto', 'bar', 'lines', 'none')
DEFAULT_INTERVAL_S = 30.0  # one plain line per half minute: a 100-epoch ADNI run logs a few hundred
_logger = logging.getLogger('adni_timm.train.loop')


def resolve_mode(mode: str, stream: TextIO | None = None) -> str:
    """'auto' -> 'bar' on a terminal, else 'lines'."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f'progress {mode!r}: choose one of {list(PROGRESS_MODES)}')
    if mode != 'auto':
        return mode
    stream = stream or sys.stderr
    return 'bar' if getattr(stream, 'isatty', lambda: False)() else 'lines'


class Progress:
    """One epoch's progress over ``total`` images;
    ``enabled=False`` on every process but the main one.
    """

    def __init__(
        self,
        mode: str,
        total: int,
        desc: str,
        *,
        enabled: bool = True,
        interval_s: float | None = None,
    ):
        self.mode = resolve_mode(mode) if enabled else 'none'
        self.total, self.desc = total, desc
        self.interval_s = DEFAULT_INTERVAL_S if interval_s is None else interval_s
        self.done = 0
        self.start = self.last_line = time.perf_counter()
        self.postfix: dict[str, str] = {}
        self.bar = None
        if self.mode == 'bar':
            self.bar = tqdm(
                total=total, unit='img', unit_scale=True, desc=desc, leave=False, dynamic_ncols=True
            )

    def update(self, images: int) -> None:
        self.done += images
        if self.bar is not None:
            self.bar.update(images)
        elif self.mode == 'lines':
            now = time.perf_counter()
            if now - self.last_line >= self.interval_s:
                self.last_line = now
                _logger.info(self.line(now))

    def set_postfix(self, **values: str) -> None:
        self.postfix.update(values)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float('nan')
        extra = ''.join(f' {k} {v}' for k, v in self.postfix.items())
        return (
            f'  {self.desc} {100 * self.done / max(self.total, 1):3.0f}% '
            f'{self.done:,}/{self.total:,} img {rate:.0f} img/s eta {fmt_duration(eta)}{extra}'
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
