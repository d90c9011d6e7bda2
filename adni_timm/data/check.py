"""``adni-check-data``: scans and slices per split and class, image sizes, every problem found.

The parsing lives in ``adni_timm.cli.check``; ``python -m adni_timm.data check DATA_DIR`` works too.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..models import LABEL_NAMES
from ..utils.display import preview
from .images import format_counts, inspect_all, notes_on, size_text
from .slices import (
    SPLITS,
    DataError,
    _require_data_dir,
    _scan,
    _split_dir,
    slice_count_outliers,
    summarize,
)
from .splits import check_no_leakage


@dataclass(frozen=True)
class CheckReport:
    """What ``check_data_dir`` found: the table (lines), notes (fixed on the fly) and problems."""

    lines: list[str]
    notes: list[str]
    problems: list[str]


def check_data_dir(
    data_dir: str | os.PathLike,
    classes: Sequence[str] = LABEL_NAMES,
    file_is_scan: bool = False,
    num_workers: int = 0,
) -> CheckReport:
    """Scans and slices per split and class, image sizes and modes, and every problem found.

    Problems: a missing split or class folder, unknown class folders, bad file names, scans in
    two classes or in both train and test, files that do not decode. ``num_workers`` threads
    decode the images.
    """
    data_dir = Path(data_dir)
    lines = [
        f'DATA_DIR {data_dir}   classes: ' + ', '.join(f'{c}={i}' for i, c in enumerate(classes)),
        f'{"split":<6} {"class":<6} {"scans":>8} {"slices":>7}   slices/scan min/median/max',
    ]
    problems, notes, found = [], [], {}
    try:
        _require_data_dir(data_dir)
    except DataError as e:  # one problem, not one per split
        return CheckReport(lines[:1], notes, [str(e)])
    for split in SPLITS:
        try:
            slices, split_problems, ignored = _scan(
                _split_dir(data_dir, split, classes), classes, file_is_scan
            )
        except DataError as e:
            problems.append(str(e))
            continue
        found[split] = slices
        problems += split_problems
        odd = slice_count_outliers(slices)
        if odd:
            notes.append(f'{split}: {odd}')
        if ignored:
            notes.append(
                f'{split}: ignored {len(ignored)} entries that are not images: {preview(ignored)}'
            )
        for row in summarize(slices, classes):
            lo, mid, hi = row['per_scan']
            lines.append(
                f'{split:<6} {row["name"]:<6} {row["scans"]:>8} '
                f'{row["slices"]:>7}   {lo}/{mid:g}/{hi}'
            )
    if len(found) == 2:
        try:
            check_no_leakage(found['train'], found['test'])
        except DataError as e:
            problems.append(str(e))
    infos = inspect_all([s for split in found.values() for s in split], num_workers)
    lines.append(
        'image sizes (WxH): '
        + (format_counts(Counter(i.size for i in infos if i.size), size_text) or 'none')
    )
    lines.append(
        'image modes: ' + (format_counts(Counter(i.mode for i in infos if i.mode)) or 'none')
    )
    notes += notes_on(infos)
    problems += [f'{i.path}: {i.problem}' for i in infos if i.problem]
    return CheckReport(lines, notes, problems)
