"""Small file helpers shared by the run folder, exports
and reports: JSON and YAML, written atomically.

Atomic = written to a temporary file beside the target and renamed into place, so a kill mid-write
never leaves a half-written record that a later ``--resume`` or ``evaluate.py`` would misread.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

__all__ = [
    'staged_dir',
    'write_json',
    'read_json',
    'write_yaml',
    'read_yaml',
    'write_text',
    'write_csv',
    'format_float',
    'sha256_file',
]


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(text, encoding='utf-8')
    tmp.replace(path)
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + '\n')


def read_json(path: str | os.PathLike) -> Any:
    with Path(path).open(encoding='utf-8') as f:
        return json.load(f)


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_yaml(path: str | os.PathLike) -> Any:
    with Path(path).open(encoding='utf-8') as f:
        return yaml.safe_load(f)


def format_float(value: float) -> str:
    """Every probability a CSV holds: 8 significant digits (ranks survive, rows stay readable)."""
    return f'{value:.8g}'


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Rows (dicts with the same keys) as CSV with LF line endings; floats by ``format_float``."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator='\n')
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: format_float(v) if isinstance(v, float) else v for k, v in row.items()}
            )
    return write_text(path, buffer.getvalue())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file (identifies the exact weights an evaluation belongs to)."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def safe_name(text: str, fallback: str = 'x') -> str:
    """``text`` as a file-name part: letters, digits, '-', '.', '_' kept; other runs -> '-'."""
    return re.sub(r'[^A-Za-z0-9._-]+', '-', str(text).strip()).strip('-') or fallback


@contextmanager
def staged_dir(path: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """A folder's new files written whole or not at all: the block writes into a hidden sibling,
    whose files move into ``path`` when the block ends without an error, and which is removed
    when it fails. A full disk or Ctrl-C leaves no half-written file in ``path``.

    A new or empty ``path`` is one rename. An existing folder keeps whatever else it holds (it
    may be the user's own folder): each new file replaces its namesake, ``marker`` (the file that
    says the folder is complete, e.g. ``metrics.json``) is removed first and moved last, so a kill
    while moving never leaves an old marker beside new files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.partial-', dir=path.parent))
    try:
        yield tmp
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            tmp.rename(path)
            return
        if marker is not None:
            (path / marker).unlink(missing_ok=True)
        entries = sorted(tmp.iterdir(), key=lambda p: p.name == marker)  # the marker last
        for entry in entries:
            target = path / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            entry.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
