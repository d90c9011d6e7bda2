"""Errors that all processes agree on: a failure on one process stops every process, promptly.

Under DDP, a process that raises while the others wait at the next collective leaves them hanging
until the collective times out (30 minutes by default). Work that can fail on one process (the main
process writing a checkpoint to a full disk) reports its error to all of them instead, and every
process raises the same message.
"""

from __future__ import annotations

from typing import Callable

__all__ = ['first_error', 'run_on_main', 'raise_agreed']


def first_error(accelerator, error: str | None) -> str | None:
    """The first process's error message (or None when all succeeded), known to every process.

    Every process must call it (it is a collective when there is more than one).
    """
    if accelerator.num_processes == 1:
        return error
    from accelerate.utils import gather_object

    return next((e for e in gather_object([error]) if e), None)


def run_on_main(accelerator, fn: Callable[[], object], what: str) -> str | None:
    """Run ``fn`` on the main process only; every process gets its error message (or None)."""
    error = None
    if accelerator.is_main_process:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported to every process, which raise it together
            error = f'{what} failed on the main process: {type(e).__name__}: {e}'
    return first_error(accelerator, error)


def raise_agreed(error: str | None, exception: type[Exception], hint: str) -> None:
    """Raise ``exception(error + hint)`` when every process agreed on an error (from
    ``first_error`` or ``run_on_main``); nothing when there is none."""
    if error:
        raise exception(f'{error}{hint}')
