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
from pathlib import Path
from typing import Any

import yaml

__all__ = [
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
