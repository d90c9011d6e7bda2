"""Ctrl-C in a command's first seconds: exit 130 with one line, not a traceback out of ``import
torch``.

A command's ``main()`` turns ``KeyboardInterrupt`` into exit code 130 (``adni_timm.cli.command``).
Before it runs, a console script is still importing adni_timm, torch and timm (seconds), where
Python would print a traceback. ``quiet_until_main`` covers that window with a SIGINT handler that
exits 130, only in a process started as one of our commands (never in a notebook or a test that
imports the library); ``main()`` hands SIGINT back to Python's own handler as it starts, so that
everything after that unwinds normally (an ``--overwrite`` puts the old run back, temporary
folders are removed).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ['EXIT_INTERRUPTED', 'quiet_until_main', 'restore_default']

EXIT_INTERRUPTED = 130
# the top-level scripts of a checkout (console scripts are named adni-*)
SCRIPTS = ('train.py', 'evaluate.py', 'push_to_hub.py', 'app.py')


def _command_name() -> str | None:
    """The command this process runs, or None when it is not one of ours."""
    argv0 = sys.argv[0] if sys.argv else ''
    if argv0 == '-m':  # python -m adni_timm.X: the package imports before argv[0] is the module
        return 'adni-timm'
    name = os.path.basename(argv0)
    return name if name.startswith('adni-') or name in SCRIPTS else None


def _exit_quietly(signum, frame):
    print(f'{_command_name() or "adni-timm"}: interrupted', file=sys.stderr)
    raise SystemExit(EXIT_INTERRUPTED)


def quiet_until_main() -> None:
    """Exit 130 without a traceback on Ctrl-C until a command's ``main()`` takes over."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        and _command_name() is not None
    ):
        signal.signal(signal.SIGINT, _exit_quietly)


def restore_default() -> None:
    """Python's own SIGINT handler (KeyboardInterrupt) again, when ``quiet_until_main`` set ours."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is _exit_quietly
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)
