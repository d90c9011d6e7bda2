"""The ADNI AD_NC layout: slice files, their names, the classes, and scanning a split folder.

Layout (what ADNI users have, and what ``adni_timm.synthetic`` writes)::

    DATA_DIR/{train,test}/{NC,AD}/<scan>_<slice>.jpeg     (.jpg and .png too)

Labels follow the class list, never the alphabet: NC = 0, AD = 1 (the positive
class); more classes come from an explicit list such as ``('NC', 'MCI', 'AD')``.
Reading and checking the files is ``images``; datasets and loaders ``loader``; the
``adni-check-data`` report ``check``.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..models import LABEL_NAMES
from ..utils.display import preview

_logger = logging.getLogger(__name__)

SPLITS = ('train', 'test')
IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')
FILE_NAME_PATTERN = '<scan>_<slice>.jpeg'
# stem; the slice is the last '_<digits>', the scan all before it (ids may hold underscores)
_FILE_NAME = re.compile(r'^(?P<scan>.+)_(?P<slice>\d+)$')
# an ADNI subject id (site_S_number, e.g. 002_S_0295) is a whole scan id, not <scan>_<slice>
_ADNI_SUBJECT = re.compile(r'^\d{3}_S_\d{4}$')


class DataError(ValueError):
    """The data on disk does not fit the expected layout;
    the message names the file or folder and the fix.
    """


@dataclass(frozen=True)
class Slice:
    """One image file: an axial slice of one scan."""

    path: str
    scan: str
    label: int
    slice_index: int | None


def positive_index(classes: Sequence[str]) -> int:
    """Index of the positive class: ``AD`` (index 1 for the default NC, AD), else the last class."""
    return list(classes).index('AD') if 'AD' in classes else len(classes) - 1


def binary_labels(slices: Iterable[Slice], classes: Sequence[str]) -> np.ndarray:
    """1 where a slice is of the positive class (AD),
    else 0: the AD-vs-rest labels every metric uses.
    """
    positive = positive_index(classes)
    return np.array([int(s.label == positive) for s in slices], dtype=np.int64)


def slice_key(path: str | os.PathLike) -> str:
    """``split/class/file`` of a slice path: names a slice independently of where DATA_DIR lives."""
    return '/'.join(Path(path).parts[-3:])


def parse_classes(text: str | Sequence[str]) -> tuple[str, ...]:
    """'NC,AD' -> ('NC', 'AD'): the class folders in label order (index = label)."""
    classes = tuple(
        c.strip() for c in (text.split(',') if isinstance(text, str) else text) if c.strip()
    )
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(
            f'classes {text!r}: give at least two distinct class folder names in label order, '
            f'e.g. NC,AD (NC = 0, AD = 1) or NC,MCI,AD'
        )
    return classes


# ----------------------------------------------------------------------------------------- scanning


def _require_data_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise DataError(
            f'DATA_DIR {data_dir} does not exist or is not a folder: pass the folder that holds '
            f'train/ and test/ (the ADNI AD_NC folder)'
        )


def _split_dir(data_dir: Path, split: str, classes: Sequence[str]) -> Path:
    _require_data_dir(data_dir)
    split_dir = data_dir / split
    if split_dir.is_dir():
        return split_dir
    hint = ''
    subdirs = [p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith('.')]
    if len(subdirs) == 1:
        hint = (
            f' {data_dir} holds a single folder {subdirs[0].name!r}: '
            f'did you mean --data-dir {subdirs[0]}?'
        )
    raise DataError(
        f'no {split!r} folder in {data_dir}: expected {data_dir / split}/{{{",".join(classes)}}}/'
        f'{FILE_NAME_PATTERN}.{hint}'
    )


def parse_file_name(path: Path, file_is_scan: bool = False) -> tuple[str, int | None] | None:
    """(scan, slice index) from ``<scan>_<slice>.jpeg``;
    None when the name has no scan id.
    """
    if file_is_scan:
        return path.stem, None
    if _ADNI_SUBJECT.match(path.stem):  # 002_S_0295.jpeg: a subject, no slice number
        return None
    m = _FILE_NAME.match(path.stem)
    return (m['scan'], int(m['slice'])) if m else None


def _scan(split_dir: Path, classes: Sequence[str], file_is_scan: bool):
    """(slices, problems, ignored files) of one split
    folder; problems are messages, not exceptions.
    """
    problems, ignored, slices, unnamed = [], [], [], []
    folders = sorted(p for p in split_dir.iterdir() if not p.name.startswith('.'))
    for p in folders:
        if not p.is_dir():
            ignored.append(p)
        elif p.name not in classes:
            case = next((c for c in classes if c.lower() == p.name.lower()), None)
            hint = f' (folder names are case-sensitive: rename it to {case})' if case else ''
            problems.append(
                f'unknown class folder {p}{hint}: the classes are '
                f'{",".join(classes)} (label = position). Pass --classes with every '
                f'class in label order (e.g. NC,MCI,AD), or move the folder out.'
            )
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            problems.append(
                f'missing class folder {folder}: create it with the {name} slices, '
                f'or leave {name} out of --classes'
            )
            continue
        images = []
        for f in sorted(folder.iterdir()):
            if f.name.startswith('.'):
                continue
            (images if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS else ignored).append(f)
        if not images:
            problems.append(
                f'empty class folder {folder}: it holds no {"/".join(IMAGE_EXTENSIONS)} files; '
                f'put the {name} slices there, or leave {name} out of --classes'
            )
        for f in images:
            parsed = parse_file_name(f, file_is_scan)
            if parsed is None:
                unnamed.append(f)
            else:
                slices.append(Slice(str(f), parsed[0], label, parsed[1]))
    if unnamed:
        problems.append(
            f'{len(unnamed)} file name(s) without a scan id in {split_dir}: '
            f'{preview(unnamed)}. Rename them to {FILE_NAME_PATTERN}, or make each file its own '
            f'scan with --file-is-scan (file_is_scan=True; see docs/DATA.md).'
        )
    problems += _scans_in_two_classes(slices)
    problems += _duplicate_slices(slices)
    return sorted(slices, key=_slice_order), problems, ignored


def _duplicate_slices(slices: Iterable[Slice]) -> list[str]:
    """Two files of one (scan, slice) (``123_5.png`` and ``123_05.png``) would count twice."""
    files = defaultdict(list)
    for s in slices:
        if s.slice_index is not None:
            files[(s.scan, s.slice_index)].append(s.path)
    return [
        f'scan {scan} slice {index} is in {len(paths)} files ({", ".join(sorted(paths))}): '
        f'the same slice would count {len(paths)} times; keep one file'
        for (scan, index), paths in sorted(files.items())
        if len(paths) > 1
    ]


def slice_count_outliers(slices: Sequence[Slice]) -> str | None:
    """A note naming the scans whose slice count is far (< half or > twice) from the median."""
    counts = Counter(s.scan for s in slices)
    if len(counts) < 2:
        return None
    median = statistics.median(counts.values())
    odd = sorted(p for p, n in counts.items() if n < median / 2 or n > median * 2)
    if not odd:
        return None
    return (
        f'{len(odd)} scan(s) have a slice count far from the median {median:g}: '
        f'{preview([f"{p} ({counts[p]})" for p in odd])}; check for missing or extra files'
    )


def _slice_order(s: Slice):
    return s.label, s.scan, -1 if s.slice_index is None else s.slice_index, s.path


def _scans_in_two_classes(slices: Iterable[Slice]) -> list[str]:
    where = defaultdict(dict)
    for s in slices:
        where[s.scan].setdefault(s.label, s.path)
    mixed = sorted(p for p, labels in where.items() if len(labels) > 1)
    return [
        f'scan {p} has slices in several class folders ({", ".join(where[p].values())}): a '
        f'scan has one diagnosis; move its slices into one class folder'
        for p in mixed
    ]


def scan_split(
    data_dir,
    split: str = 'train',
    classes: Sequence[str] = LABEL_NAMES,
    file_is_scan: bool = False,
) -> list[Slice]:
    """Every image of ``DATA_DIR/split/<class>/``, in a deterministic order (class, scan, slice).

    Raises DataError naming every layout problem found (missing folder, unknown or empty
    class folder, file names without a scan id, a scan in two class folders).
    Non-image files are ignored with a warning.
    """
    classes = parse_classes(classes)
    slices, problems, ignored = _scan(
        _split_dir(Path(data_dir), split, classes), classes, file_is_scan
    )
    if problems:
        raise DataError('\n'.join(problems))
    odd = slice_count_outliers(slices)
    if odd:
        _logger.warning('%s/%s: %s', Path(data_dir).name, split, odd)
    if ignored:
        _logger.warning(
            'ignored %d entries that are not %s files: %s',
            len(ignored),
            '/'.join(IMAGE_EXTENSIONS),
            preview(ignored),
        )
    return slices


def summarize(slices: Sequence[Slice], classes: Sequence[str] = LABEL_NAMES) -> list[dict]:
    """Per class: scans, slices and slices per scan (min / median / max)."""
    rows = []
    for label, name in enumerate(classes):
        per_scan = Counter(s.scan for s in slices if s.label == label)
        counts = sorted(per_scan.values()) or [0]
        rows.append(
            dict(
                name=name,
                label=label,
                scans=len(per_scan),
                slices=sum(per_scan.values()),
                per_scan=(counts[0], statistics.median(counts), counts[-1]),
            )
        )
    return rows
