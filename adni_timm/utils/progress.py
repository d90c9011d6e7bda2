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
    """Progress over ``total`` items (an epoch's images, an evaluation's slices, a cache decode);
    ``enabled=False`` on every process but the main one.

    ``summary=True`` also logs one closing line in ``lines`` mode (what was done, how fast), so a
    log shows every long step even when it took less than ``interval_s``.
    """

    def __init__(
        self,
        mode: str,
        total: int,
        desc: str,
        *,
        enabled: bool = True,
        interval_s: float | None = None,
        unit: str = 'img',
        summary: bool = False,
        logger: logging.Logger | None = None,
    ):
        self.mode = resolve_mode(mode) if enabled else 'none'
        self.total, self.desc, self.unit, self.summary = total, desc, unit, summary
        self.logger = logger or _logger
        self.interval_s = DEFAULT_INTERVAL_S if interval_s is None else interval_s
        self.done = 0
        self.start = self.last_line = time.perf_counter()
        self.postfix: dict[str, str] = {}
        self.bar = None
        if self.mode == 'bar':
            self.bar = tqdm(
                total=total, unit=unit, unit_scale=True, desc=desc, leave=False, dynamic_ncols=True
            )

    def update(self, images: int) -> None:
        self.done += images
        if self.bar is not None:
            self.bar.update(images)
        elif self.mode == 'lines':
            now = time.perf_counter()
            if now - self.last_line >= self.interval_s:
                self.last_line = now
                self.logger.info(self.line(now))

    def set_postfix(self, **values: str) -> None:
        self.postfix.update(values)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float('nan')
        extra = ''.join(f' {k} {v}' for k, v in self.postfix.items())
        u = self.unit
        return (
            f'  {self.desc} {100 * self.done / max(self.total, 1):3.0f}% '
            f'{self.done:,}/{self.total:,} {u} {rate:.0f} {u}/s eta {fmt_duration(eta)}{extra}'
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == 'lines' and self.summary:
            elapsed = time.perf_counter() - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            self.logger.info(
                f'  {self.desc}: {self.done:,} {self.unit} in {fmt_duration(elapsed)} '
                f'({rate:.0f} {self.unit}/s)'
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
