"""What a data folder holds, for people: the note a card, the demo and the plots show.

Read from the folder itself: ``dataset.json`` is left by the synthetic generator, ``prepare.json``
(the preprocessing recipe) by adni-prepare; a folder with neither is taken for the ADNI AD_NC set.
No heavy imports: the synthetic generator uses it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


DATASET_NOTE = 'dataset.json'  # what the folder holds (written by the synthetic generator)
PREPARE_NOTE = 'prepare.json'  # the preprocessing recipe (written by adni-prepare)
MANIFEST = 'manifest.csv'  # adni-prepare's scans: file-name scan id -> subject, visit, ...


@dataclass(frozen=True)
class DataNote:
    note: str = 'ADNI AD_NC'
    synthetic: bool = False
    preprocessing: dict[str, Any] | None = None  # adni-prepare's recipe, when slices came from it
    # the synthetic generator's arguments (it can redraw where it put the atrophy: the evidence
    # maps are scored against those regions)
    generator: dict[str, Any] | None = None


def describe(data_dir: str | os.PathLike) -> DataNote:
    """What ``data_dir`` holds, from the notes its writers left in it."""
    data_dir = Path(data_dir)
    marker, recipe = data_dir / DATASET_NOTE, data_dir / PREPARE_NOTE
    preprocessing = json.loads(recipe.read_text(encoding='utf-8')) if recipe.is_file() else None
    if marker.is_file():
        found = json.loads(marker.read_text(encoding='utf-8'))
        synthetic = bool(found.get('synthetic'))
        note = str(found.get('note') or ('synthetic' if synthetic else DataNote.note))
        return DataNote(note, synthetic, preprocessing, found.get('generator'))
    if preprocessing is not None:
        return DataNote(str(preprocessing.get('note') or 'prepared T1 scans'), False, preprocessing)
    return DataNote()


def write_data_note(data_dir: str | os.PathLike, note: DataNote) -> Path:
    """Leave ``dataset.json`` in a data folder this toolkit wrote."""
    path = Path(data_dir) / DATASET_NOTE
    found = {'synthetic': note.synthetic, 'note': note.note}
    if note.generator:
        found['generator'] = note.generator
    path.write_text(json.dumps(found, indent=2) + '\n')
    return path


def subjects_of(data_dir: str | os.PathLike) -> dict[str, str]:
    """``{file-name scan id: subject}`` from adni-prepare's manifest (``--visits all`` writes one
    scan id per visit, ``002_S_0295_m12``); empty when the folder has no manifest. A split
    keeps all scans of one subject together."""
    import csv

    from ..utils.legacy import upgrade

    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return {}
    with path.open(encoding='utf-8', newline='') as f:
        rows = list(csv.DictReader(f))
    rows = [upgrade(r) for r in rows]  # manifests written before name the column 'patient'
    return {r['scan']: r['subject'] for r in rows if r.get('scan') and r.get('subject')}
