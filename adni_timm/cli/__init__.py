"""Command-line front ends: every command's argument parsing, and one exit-code policy.

The work is in the library modules; these modules only parse, call and report. Each command is
reachable as a console script installed with the package (``adni-train``), and most also as a
top-level script (``python train.py``, ``accelerate launch train.py``) or a module
(``python -m adni_timm.synthetic``); the usage line names the way it was started.

Exit codes, the same for every command (README, "Exit codes"):

====  ==========================================================================================
0     done
1     a problem found in the data or by a check: ``adni-check-data`` listed problems; a slice that
      cannot be decoded, train and test sharing a scan, recorded scans missing from the
      data (``adni_timm.data.DataError`` and its subclasses)
2     a usage error or a refused input: an unknown flag or bad value, a path, model, run or
      config that does not exist or cannot be used, a run folder that already exists, a damaged
      file, a full disk, an upload that failed; one ``PROG: error: ...`` line on stderr says what
      and how to fix it
3     ``adni-train`` only: the GPU ran out of memory (continue with ``--resume``)
130   interrupted (Ctrl-C), at any moment: ``command`` and ``adni_timm.utils.interrupt``
====  ==========================================================================================
"""

from __future__ import annotations

import argparse
import errno
import functools
import sys
from pathlib import Path

__all__ = [
    'ArgumentParser',
    'package_version',
    'EXIT_OK',
    'EXIT_PROBLEM',
    'EXIT_REFUSED',
    'EXIT_OUT_OF_MEMORY',
    'EXIT_INTERRUPTED',
    'HelpFormatter',
    'command',
    'exit_code',
    'describe_os_error',
    'fail',
    'examples',
    'class_list',
    'existing_dir',
    'data_source',
    'resolve_data_source',
    'existing_path',
]

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_REFUSED = 2  # also what argparse exits with on a usage error
EXIT_OUT_OF_MEMORY = 3
EXIT_INTERRUPTED = 130


def exit_code(error: BaseException) -> int:
    """The policy's code for an error a command stopped on: 1 for a problem in the data, else 2."""
    from adni_timm.data import DataError  # lazy: --help must not import torch

    return EXIT_PROBLEM if isinstance(error, DataError) else EXIT_REFUSED


def command(main):
    """A command's ``main(argv=None, prog=PROG)``: Ctrl-C at any moment is one line and exit 130.

    The import of torch before ``main`` runs is covered by ``adni_timm.utils.interrupt`` (set up
    when ``adni_timm`` is imported by a command); from here on Python's own handler raises
    ``KeyboardInterrupt``, so ``with`` blocks and ``finally`` clean up as the stack unwinds.
    """

    @functools.wraps(main)
    def wrapper(argv=None, prog: str | None = None, **kwargs) -> int:
        from adni_timm.utils.interrupt import restore_default

        restore_default()
        prog = prog or main.__globals__.get('PROG', 'adni-timm')
        try:
            return main(argv, prog=prog, **kwargs)
        except KeyboardInterrupt:
            print(f'{prog}: interrupted', file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def describe_os_error(error: OSError, writing: str | Path) -> str:
    """A full (or read-only) disk named with the folder being written; other errors as they are."""
    if error.errno in _DISK_ERRORS:
        return f'writing {writing} failed: {error.strerror or error}; nothing was written there'
    return str(error)


def fail(prog: str, error: BaseException | str, code: int | None = None) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr (no traceback) and return the exit code.

    ``code`` defaults to ``exit_code(error)`` (2 for a plain message). Multi-line messages (a list
    of undecodable files) are printed as they are.
    """
    message = str(error).strip() or type(error).__name__
    print(f'{prog}: error: {message}', file=sys.stderr)
    if code is not None:
        return code
    return exit_code(error) if isinstance(error, BaseException) else EXIT_REFUSED


def package_version() -> str:
    """The installed adni-timm's version, from its package metadata (pyproject's ``version``)."""
    from adni_timm import __version__

    return __version__


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with ``--version`` (``PROG X.Y.Z``, the installed package's version): every
    command builds its parser from this one class, so every command has the flag."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if '--version' not in self._option_string_actions:
            self.add_argument(
                '--version',
                action='version',
                version=f'%(prog)s {package_version()}',
                help="print the installed adni-timm's version and exit",
            )


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose, keeps example blocks as written, and shows each option's default.

    A paragraph (of a description or epilog) whose lines after the first are indented, like
    ``examples()``, is kept line for line; other paragraphs are wrapped to the terminal.
    ``(default: X)`` is added where the help does not mention a default already and the default
    says something (not None or False).
    """

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in text.split('\n\n'):
            lines = paragraph.splitlines()
            if len(lines) > 1 and all(line.startswith(' ') for line in lines[1:]):
                paragraphs.append('\n'.join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return '\n\n'.join(paragraphs)

    def _get_help_string(self, action):
        text = action.help or ''
        if (
            'default' in text
            or not action.option_strings
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
        ):
            return text
        return f'{text} (default: %(default)s)'


def examples(*lines: str) -> str:
    """An ``examples:`` epilog; ``%(prog)s`` in a line becomes the command's name."""
    return 'examples:\n' + '\n'.join(f'  {line}' for line in lines)


def class_list(text: str) -> tuple[str, ...]:
    """An argparse type for ``--classes NC,AD``: a bad value is a usage error (exit 2)."""
    from adni_timm.data import DataError, parse_classes

    try:
        return parse_classes(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def existing_dir(text: str) -> str:
    """argparse ``type``: a folder that exists (else a usage error, exit 2); the text unchanged."""
    path = Path(text)
    if not path.is_dir():
        what = 'is a file, not a folder' if path.exists() else 'does not exist'
        raise argparse.ArgumentTypeError(f'{text} {what}')
    return text


def data_source(text: str) -> str:
    """argparse ``type`` of ``--data-dir``: a folder that exists, or ``hf:ORG/NAME[:CONFIG]`` /
    ``hf:PATH`` (a Hugging Face dataset, ``adni_timm.data.hub_datasets``); the text unchanged."""
    if text.startswith('hf:'):
        if not text[3:].strip():
            raise argparse.ArgumentTypeError(f'{text}: name the dataset, e.g. hf:ORG/NAME')
        return text
    return existing_dir(text)


def resolve_data_source(text: str, classes) -> str:
    """The data folder ``--data-dir text`` means (a dataset written once into the slice layout;
    see docs/DATA.md, "Hugging Face datasets"); a plain folder as it is. Every process of a launch
    calls it (one writes, under a lock; the others wait and reuse); only the first logs."""
    import os

    from adni_timm.data.hub_datasets import resolve_data_dir

    first = int(os.environ.get('RANK', os.environ.get('LOCAL_RANK', '0')) or 0) == 0
    return str(resolve_data_dir(text, classes, log=first))


def existing_path(text: str) -> str:
    """argparse ``type``: a file or folder that exists (else a usage error, exit 2)."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f'{text} does not exist')
    return text
