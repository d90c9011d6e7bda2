"""Which person each scan is of: subject maps, and the splits that keep a person on one side.

A *scan* is the group of slices that share a file-name prefix (AD_NC: ``218391_78.jpeg`` is
slice 78 of scan 218391, an ADNI image id); a *subject* is a person, who may have several scans
(visits). Only a subject map says which scans belong together:

``course JSON``  the course's ``meta_data_with_label.json``: an object keyed by scan id, each
                 value with ``label`` (0 NC, 1 MCI, 2 AD) and file paths (``raw``, ``masked``,
                 ``c1``..``c5``, any of them) whose text holds the ADNI subject id
                 ``<site>_S_<rid>`` (``.../ADNI_002_S_0295_MR_..._I118671.nii``)
``ADNI CSV``     an IDA collection CSV (``Image Data ID``, ``Subject``, ``Group``), read by
                 ``adni_timm.prepare.labels``; scan ``218391`` matches image id ``I218391`` and back
``plain CSV``    ``scan,subject`` (optionally ``label``: a class name); adni-prepare's
                 ``manifest.csv`` is one (its older column name ``patient`` is read too)

A map is checked against the data before it is used: every scan of the data must be in it, and
where the map gives a class it must be the scan's class folder (one error lists the first few).
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .note import MANIFEST
from .slices import DataError, Slice

__all__ = [
    'COURSE_LABELS',
    'SubjectMapError',
    'SubjectMap',
    'SubjectOverlap',
    'read_subject_map',
    'find_subject_map',
    'subject_overlap',
    'subjects_of_slices',
    'subject_report',
]

# the course metadata's label codes
COURSE_LABELS = {0: 'NC', 1: 'MCI', 2: 'AD'}
# ADNI subject id: site (3 digits) _S_ roster id (4 digits); not part of a longer number
_SUBJECT_ID = re.compile(r'(?<!\d)(\d{3}_S_\d{4})(?!\d)')
_PREVIEW = 5


class SubjectMapError(DataError):
    """A subject map that cannot be read or does not fit the data; the message names the fix."""


def _norm(scan: Any) -> str:
    """A scan id as maps and file names both spell it: ``I218391`` and ``218391`` -> ``218391``."""
    text = str(scan).strip()
    m = re.fullmatch(r'[Ii]?(\d+)', text)
    return m[1] if m else text


def _preview(items: Sequence, n: int = _PREVIEW) -> str:
    items = [str(i) for i in items]
    return ', '.join(items[:n]) + (f' ... and {len(items) - n} more' if len(items) > n else '')


@dataclass(frozen=True)
class SubjectMap:
    """Scan id -> subject (and, where the source says, the scan's class name)."""

    source: str  # the file it came from
    kind: str  # 'course-json' | 'adni-csv' | 'csv'
    subjects: Mapping[str, str]  # normalised scan id -> subject id
    classes: Mapping[str, str] = field(default_factory=dict)  # normalised scan id -> class name

    def __len__(self) -> int:
        return len(self.subjects)

    def subject(self, scan: str) -> str | None:
        return self.subjects.get(_norm(scan))

    def class_of(self, scan: str) -> str | None:
        return self.classes.get(_norm(scan))

    def for_slices(self, slices: Iterable[Slice], class_names: Sequence[str]) -> dict[str, str]:
        """``{scan: subject}`` for the scans of ``slices``, checked: every scan must be in the map
        and sit in the class folder the map gives it; else one SubjectMapError listing the first
        few of each."""
        scans: dict[str, str] = {}
        for s in slices:
            scans.setdefault(
                s.scan, class_names[s.label] if 0 <= s.label < len(class_names) else ''
            )
        missing = sorted(p for p in scans if self.subject(p) is None)
        wrong = sorted(
            f'{p} ({folder} folder, {self.class_of(p)} in the map)'
            for p, folder in scans.items()
            if self.class_of(p) is not None and folder and self.class_of(p) != folder
        )
        if missing or wrong:
            parts = []
            if missing:
                parts.append(
                    f'{len(missing)} of {len(scans)} scans are not in {self.source} '
                    f'({_preview(missing)})'
                )
            if wrong:
                parts.append(
                    f"{len(wrong)} scan(s) sit in a class folder other than the map's label "
                    f'({_preview(wrong)})'
                )
            raise SubjectMapError(
                f'subject map: {"; ".join(parts)}. Give the map made for this data (the course '
                f'meta_data_with_label.json next to AD_NC), or fix the data folders.'
            )
        return {p: self.subject(p) for p in scans}


@dataclass(frozen=True)
class SubjectOverlap:
    """Subjects of a held-out set (test) who also have scans in a training set."""

    shared: tuple[str, ...]  # subject ids, sorted
    n_test_subjects: int
    n_train_subjects: int

    @property
    def n(self) -> int:
        return len(self.shared)

    def sentence(self) -> str:
        return f'{self.n} of {self.n_test_subjects} test subjects also in train'

    def to_dict(self) -> dict[str, Any]:
        return {
            'n': self.n,
            'of': self.n_test_subjects,
            'train_subjects': self.n_train_subjects,
            'subjects': list(self.shared),
        }


def subjects_of_slices(slices: Iterable[Slice], subjects: Mapping[str, str]) -> set[str]:
    """The subjects of ``slices`` (a scan missing from ``subjects`` is its own subject)."""
    return {subjects.get(s.scan, s.scan) for s in slices}


def subject_overlap(
    train: Iterable[Slice], test: Iterable[Slice], subjects: Mapping[str, str]
) -> SubjectOverlap:
    """Which test subjects also have scans in ``train``."""
    tr, te = subjects_of_slices(train, subjects), subjects_of_slices(test, subjects)
    return SubjectOverlap(tuple(sorted(tr & te)), len(te), len(tr))


# ------------------------------------------------------------------------------------- reading


def _course_json(path: Path) -> SubjectMap:
    try:
        found = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SubjectMapError(f'--subjects {path}: cannot read it as JSON ({e})') from e
    if not isinstance(found, dict) or not found:
        raise SubjectMapError(
            f'--subjects {path}: expected a JSON object keyed by scan id (the course '
            f'meta_data_with_label.json), found {type(found).__name__}'
        )
    subjects, classes = {}, {}
    no_subject, several, bad_label = [], [], []
    for scan, record in found.items():
        if not isinstance(record, dict):
            bad_label.append(str(scan))
            continue
        texts = [v for v in record.values() if isinstance(v, str)]
        ids = sorted({m for t in texts for m in _SUBJECT_ID.findall(t)})
        if not ids:
            no_subject.append(str(scan))
        elif len(ids) > 1:
            several.append(f'{scan} ({", ".join(ids)})')
        else:
            subjects[_norm(scan)] = ids[0]
        label = record.get('label')
        if label is not None:
            try:
                classes[_norm(scan)] = COURSE_LABELS[int(label)]
            except (KeyError, TypeError, ValueError):
                bad_label.append(f'{scan} (label {label!r})')
    problems = []
    if several:
        problems.append(f'paths naming several subjects: {_preview(several)}')
    if no_subject:
        problems.append(f'no <site>_S_<rid> subject id in any path: {_preview(no_subject)}')
    if bad_label:
        problems.append(f'labels other than 0 NC / 1 MCI / 2 AD: {_preview(bad_label)}')
    if problems:
        raise SubjectMapError(
            f'--subjects {path}: {"; ".join(problems)}. Each record needs the paths of one '
            f'subject (e.g. .../ADNI_002_S_0295_MR_..._I118671.nii) and a label 0, 1 or 2.'
        )
    return SubjectMap(str(path), 'course-json', subjects, classes)


def _adni_csv(path: Path) -> SubjectMap:
    from ..prepare.labels import LabelsError, class_of_group, read_labels  # one IDA CSV reader

    try:
        labels = read_labels(path, 'adni')
    except LabelsError as e:
        raise SubjectMapError(f'--subjects {path}: {e}') from e
    subjects, classes = {}, {}
    for row in labels.rows:
        if not row.image_id:
            continue
        subjects[_norm(row.image_id)] = row.subject
        cls = class_of_group(row.group)
        if cls:
            classes[_norm(row.image_id)] = cls
    return SubjectMap(str(path), 'adni-csv', subjects, classes)


def _plain_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> SubjectMap:
    lower = {h.lower(): h for h in header}
    scan_col = lower.get('scan') or lower.get('patient')  # 'patient': manifests written before
    subject_col, label_col = lower.get('subject'), lower.get('label')
    subjects, classes, clash = {}, {}, []
    for row in rows:
        scan, subject = (row.get(scan_col) or '').strip(), (row.get(subject_col) or '').strip()
        if not scan or not subject:
            continue
        if subjects.setdefault(_norm(scan), subject) != subject:
            clash.append(scan)
        if label_col and (row.get(label_col) or '').strip():
            classes[_norm(scan)] = row[label_col].strip()
    if clash:
        raise SubjectMapError(
            f'--subjects {path}: scans with two subjects ({_preview(sorted(set(clash)))}): one '
            f'row per scan'
        )
    if not subjects:
        raise SubjectMapError(f'--subjects {path}: no scan,subject rows: fill it in')
    return SubjectMap(str(path), 'csv', subjects, classes)


def read_subject_map(path: str | os.PathLike) -> SubjectMap:
    """A subject map from a course JSON, an ADNI collection CSV or a ``scan,subject`` CSV (the
    kind is told by the content, not the name)."""
    path = Path(path)
    if not path.is_file():
        raise SubjectMapError(
            f'--subjects {path} does not exist: give the course meta_data_with_label.json, an '
            f'ADNI collection CSV or a scan,subject CSV'
        )
    try:
        text = path.read_text(encoding='utf-8-sig')
    except (OSError, UnicodeDecodeError) as e:
        raise SubjectMapError(f'--subjects {path}: cannot read it ({e})') from e
    if text.lstrip().startswith(('{', '[')):
        return _course_json(path)
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    names = {h.lower() for h in header}
    if {'image data id', 'subject'} <= names:
        return _adni_csv(path)
    if 'subject' in names and names & {'scan', 'patient'}:
        rows = [{(k or '').strip(): v for k, v in row.items()} for row in reader]
        return _plain_csv(path, header, rows)
    raise SubjectMapError(
        f'--subjects {path}: unknown format (columns {", ".join(header) or "none"}): give the '
        f'course meta_data_with_label.json, an ADNI collection CSV (Image Data ID, Subject, '
        f'Group) or a CSV with scan,subject columns'
    )


def find_subject_map(
    data_dir: str | os.PathLike | None, path: str | os.PathLike | None = None
) -> SubjectMap | None:
    """The map to use: ``path`` (``--subjects``) when given, else adni-prepare's ``manifest.csv``
    in ``data_dir``, else None (subjects unknown: splits group scans only)."""
    if path:
        return read_subject_map(path)
    manifest = Path(data_dir) / MANIFEST if data_dir else None
    if manifest is not None and manifest.is_file():
        found = read_subject_map(manifest)
        return SubjectMap(found.source, 'manifest', found.subjects, found.classes)
    return None


def subject_report(
    found: Mapping[str, Sequence[Slice]], smap: SubjectMap, class_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(table lines, problems) of ``adni-check-data --subjects``: subjects and scans per subject
    for each split and class, and the test subjects who also have scans in train (a problem)."""
    all_slices = [s for slices in found.values() for s in slices]
    try:
        subjects = smap.for_slices(all_slices, class_names)
    except SubjectMapError as e:
        return [f'subjects: map {smap.source} ({smap.kind})'], [str(e)]
    lines = [
        f'subjects: map {smap.source} ({smap.kind}, {len(smap)} scans)',
        f'{"split":<6} {"class":<6} {"subjects":>8} {"scans":>7}   scans/subject min/median/max',
    ]
    for split, slices in found.items():
        for label, name in enumerate(class_names):
            per_subject = Counter(subjects[p] for p in {s.scan for s in slices if s.label == label})
            counts = sorted(per_subject.values()) or [0]
            median = statistics.median(counts)
            lines.append(
                f'{split:<6} {name:<6} {len(per_subject):>8} {sum(per_subject.values()):>7}   '
                f'{counts[0]}/{median:g}/{counts[-1]}'
            )
    problems = []
    if 'train' in found and 'test' in found:
        overlap = subject_overlap(found['train'], found['test'], subjects)
        lines.append(f'train/test: {overlap.sentence()}')
        if overlap.n:
            problems.append(
                f'{overlap.sentence()} (e.g. {_preview(overlap.shared)}): the test split is not '
                f'by subject. Train with --resplit-test 0.2 (hold out a fifth of the subjects as '
                f'the test set) or --allow-subject-overlap (official split, overlap stated); see '
                f'docs/DATA.md, "Subjects"'
            )
    return lines, problems
