"""Small file helpers shared by the run folder, exports
and reports: JSON and YAML, written atomically.

Atomic = written to a temporary file beside the target and renamed into place, so a kill mid-write
never leaves a half-written record that a later ``--resume`` or ``evaluate.py`` would misread.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ['write_json', 'read_json', 'write_yaml', 'read_yaml', 'write_text', 'sha256_file']


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


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file (identifies the exact weights an evaluation belongs to)."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
