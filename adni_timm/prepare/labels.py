"""Diagnoses for scans: the label files ADNI, ADNIMERGE, BIDS and everyone else ship, and the
explicit mapping of their group values to our classes.

Formats (detected from the header, or given with ``--labels-format``):

``adni``       the IDA collection CSV: ``Image Data ID, Subject, Group, Sex, Age, Visit, Modality,
               Description, Type, Acq Date, Format``; a scan matches its row by image id (the
               ``I12345`` folder of the ADNI download), else by subject and acquisition date
``adnimerge``  ADNIMERGE: ``PTID, VISCODE, DX_bl, DX`` (+ ``EXAMDATE``); a scan matches by visit
               code (BIDS ``ses-M012`` = ``m12``) or by the nearest EXAMDATE within 180 days; the
               group is ``DX`` at that visit, ``DX_bl`` at baseline when DX is empty
``bids``       ``participants.tsv``: ``participant_id`` + the group column (``--labels-column``,
               default the first of diagnosis / diagnosis_bl / group / dx); one group per subject
``plain``      ``subject,label[,visit]``

Group values become classes through :data:`DEFAULT_GROUP_MAP` (case-insensitive), overridden by
``--group-map``: CN -> NC, AD -> AD, Dementia -> AD, MCI/EMCI/LMCI -> MCI, SMC -> SMC. A class
not in ``--classes`` is skipped, never silently renamed: ``--classes NC,MCI,AD`` keeps MCI.
"""

from __future__ import annotations

import csv
import datetime
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .volumes import Scan

__all__ = [
    'LABEL_FORMATS',
    'DEFAULT_GROUP_MAP',
    'LabelsError',
    'LabelRow',
    'LabelMatch',
    'Labels',
    'read_labels',
    'detect_format',
    'parse_group_map',
    'class_of_group',
    'normalise_visit',
]

LABEL_FORMATS = ('adni', 'adnimerge', 'bids', 'plain')
DEFAULT_GROUP_MAP = {
    'CN': 'NC',
    'NC': 'NC',
    'NL': 'NC',
    'CONTROL': 'NC',
    'AD': 'AD',
    'DEMENTIA': 'AD',
    'MCI': 'MCI',
    'EMCI': 'MCI',
    'LMCI': 'MCI',
    'SMC': 'SMC',  # significant memory concern: its own group; --group-map SMC=NC to merge
}
BIDS_COLUMNS = ('diagnosis', 'diagnosis_bl', 'group', 'dx', 'dx_bl')
DATE_WINDOW_DAYS = 180  # ADNIMERGE visits are ~6-12 months apart; a scan belongs to the nearest


class LabelsError(ValueError):
    """A labels file that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels file, in our terms (dates ISO ``YYYY-MM-DD``)."""

    subject: str
    group: str
    visit: str | None = None
    image_id: str | None = None
    date: str | None = None
    group_bl: str | None = None  # ADNIMERGE's DX_bl


@dataclass(frozen=True)
class LabelMatch:
    """What the labels say about one scan."""

    group: str
    visit: str | None
    date: str | None


def _norm_image_id(text: str | None) -> str | None:
    if not text:
        return None
    m = re.fullmatch(r'[Ii]?(\d+)', text.strip())
    return m[1] if m else text.strip()


def normalise_visit(visit: str | None) -> str | None:
    """Visit codes compared across formats: ``ses-M012``/``M12``/``m12`` -> ``m12``, ``M000``/
    ``ses-bl`` -> ``bl``; anything else lower-cased."""
    if not visit:
        return None
    v = visit.strip()
    v = v[4:] if v.lower().startswith('ses-') else v
    m = re.fullmatch(r'[Mm](\d+)', v)
    if m:
        months = int(m[1])
        return 'bl' if months == 0 else f'm{months:02d}'
    return v.lower()


def _parse_date(text: str | None) -> str | None:
    """ISO date from ``YYYY-MM-DD[...]`` or ADNI's ``M/D/YYYY``; None when absent or unknown."""
    if not text or not text.strip():
        return None
    text = text.strip()
    m = re.match(r'(\d{4})-(\d{1,2})-(\d{1,2})', text)
    if m:
        return datetime.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    m = re.match(r'(\d{1,2})/(\d{1,2})/(\d{4})', text)
    if m:
        return datetime.date(int(m[3]), int(m[1]), int(m[2])).isoformat()
    return None


def _days(a: str, b: str) -> int:
    return abs((datetime.date.fromisoformat(a) - datetime.date.fromisoformat(b)).days)


def _read_table(path: Path) -> tuple[list[str], list[dict]]:
    try:
        text = path.read_text(encoding='utf-8-sig')
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f'cannot read the labels file {path} ({e}): give a CSV or TSV') from e
    first = text.splitlines()[0] if text.strip() else ''
    delimiter = (
        '\t' if path.suffix.lower() == '.tsv' or first.count('\t') > first.count(',') else ','
    )
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = [{(k or '').strip(): (v or '').strip() for k, v in row.items()} for row in reader]
    return header, rows


def detect_format(header, path: Path | None = None) -> str:
    """The format a header belongs to (see the module docstring)."""
    names = {h.lower() for h in header}
    if {'image data id', 'subject', 'group'} <= names:
        return 'adni'
    if 'ptid' in names and names & {'dx', 'dx_bl'}:
        return 'adnimerge'
    if 'participant_id' in names or (path is not None and path.name == 'participants.tsv'):
        return 'bids'
    if {'subject', 'label'} <= names:
        return 'plain'
    raise LabelsError(
        f'unknown labels format (columns {", ".join(header) or "none"}): give an ADNI collection '
        f'CSV (Image Data ID, Subject, Group, ...), ADNIMERGE (PTID, VISCODE, DX_bl, DX), a BIDS '
        f'participants.tsv, or a CSV with subject,label[,visit] columns; or set --labels-format'
    )


def _column(header, *names) -> str | None:
    lower = {h.lower(): h for h in header}
    return next((lower[n] for n in names if n in lower), None)


class Labels:
    """The rows of a labels file and how a scan finds its own."""

    def __init__(self, fmt: str, path: str, rows: list[LabelRow], column: str):
        self.format, self.path, self.rows, self.column = fmt, path, rows, column
        self._by_image = {_norm_image_id(r.image_id): r for r in rows if r.image_id}
        self._by_subject: dict[str, list[LabelRow]] = defaultdict(list)
        for r in rows:
            self._by_subject[r.subject].append(r)

    @property
    def subjects(self) -> set[str]:
        return set(self._by_subject)

    def match(self, scan: Scan) -> LabelMatch | None:
        """The group, visit and date the labels give ``scan``; None when they do not know it.
        Raises LabelsError when several rows could be the scan's."""
        if self.format == 'adni':
            row = self._by_image.get(_norm_image_id(scan.image_id))
            if row is None:
                row = self._by_date_or_only(scan)
            return None if row is None else LabelMatch(row.group, row.visit, row.date)
        if self.format == 'adnimerge':
            return self._match_adnimerge(scan)
        rows = self._by_subject.get(scan.subject, [])
        if not rows:
            return None
        if self.format == 'plain' and any(r.visit for r in rows):
            want = normalise_visit(scan.visit)
            hits = [r for r in rows if normalise_visit(r.visit) == want] if want else []
            if not hits and len(rows) > 1:
                raise LabelsError(
                    f'{scan.path}: {self.path} has {len(rows)} visits for subject {scan.subject} '
                    f'but the scan has no matching visit ({scan.visit}): put scans in '
                    f'SRC/<subject>/<visit>/ folders, or give one row per subject'
                )
            row = (hits or rows)[0]
            return LabelMatch(row.group, row.visit or scan.visit, scan.date)
        return LabelMatch(rows[0].group, scan.visit, scan.date)

    def _by_date_or_only(self, scan: Scan) -> LabelRow | None:
        rows = self._by_subject.get(scan.subject, [])
        if scan.date:
            dated = [r for r in rows if r.date == scan.date]
            if dated:
                return dated[0]
        if len(rows) == 1:
            return rows[0]
        if rows:
            raise LabelsError(
                f'{scan.path}: {len(rows)} rows of {self.path} belong to subject {scan.subject} '
                f"and none has this scan's image id or date: keep the ADNI download layout "
                f'(.../<date>/<I image id>/) so each scan finds its row'
            )
        return None

    def _match_adnimerge(self, scan: Scan) -> LabelMatch | None:
        rows = self._by_subject.get(scan.subject, [])
        if not rows:
            return None
        row = None
        want = normalise_visit(scan.visit)
        if want:
            row = next((r for r in rows if normalise_visit(r.visit) == want), None)
        if row is None and scan.date:
            dated = [r for r in rows if r.date and _days(r.date, scan.date) <= DATE_WINDOW_DAYS]
            row = min(dated, key=lambda r: _days(r.date, scan.date), default=None)
        if row is None and not want and not scan.date:
            row = next((r for r in rows if normalise_visit(r.visit) == 'bl'), None)
        if row is None:
            return LabelMatch('', scan.visit, scan.date)  # the subject is known, this visit is not
        group = row.group or (row.group_bl if normalise_visit(row.visit) == 'bl' else '') or ''
        return LabelMatch(group, row.visit, scan.date or row.date)


def read_labels(path: str | Path, fmt: str | None = None, column: str | None = None) -> Labels:
    """Read a labels file; ``fmt`` None detects it, ``column`` picks the group column (BIDS and
    plain; for ADNIMERGE, DX or DX_bl)."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f'labels file {path} does not exist: give --labels FILE')
    header, table = _read_table(path)
    if fmt in (None, 'auto'):
        fmt = detect_format(header, path)
    if fmt not in LABEL_FORMATS:
        raise LabelsError(
            f'--labels-format {fmt!r}: choose auto or one of {", ".join(LABEL_FORMATS)}'
        )

    def need(*names, what=''):
        col = _column(header, *names)
        if col is None:
            raise LabelsError(
                f'{path} ({fmt}) has no {what or names[0]} column (columns: '
                f'{", ".join(header)}): fix the header or set --labels-format'
            )
        return col

    rows: list[LabelRow] = []
    if fmt == 'adni':
        image, subject = need('image data id'), need('subject')
        group = need(column.lower()) if column else need('group')
        visit, date = _column(header, 'visit'), _column(header, 'acq date')
        for r in table:
            rows.append(
                LabelRow(
                    r[subject],
                    r[group],
                    r.get(visit) or None,
                    r[image] or None,
                    _parse_date(r.get(date)) if date else None,
                )
            )
    elif fmt == 'adnimerge':
        subject, visit = need('ptid'), need('viscode')
        dx = need(column.lower()) if column else _column(header, 'dx')
        dx_bl, date = _column(header, 'dx_bl'), _column(header, 'examdate')
        if dx is None and dx_bl is None:
            need('dx', what='DX or DX_bl')
        for r in table:
            rows.append(
                LabelRow(
                    r[subject],
                    r.get(dx, '') if dx else '',
                    r[visit] or None,
                    date=_parse_date(r.get(date)) if date else None,
                    group_bl=r.get(dx_bl) if dx_bl else None,
                )
            )
        column = dx or dx_bl
    elif fmt == 'bids':
        subject = need('participant_id')
        group = (
            need(column.lower())
            if column
            else need(
                *BIDS_COLUMNS, what=f'group (--labels-column; tried {", ".join(BIDS_COLUMNS)})'
            )
        )
        for r in table:
            sid = r[subject] if r[subject].startswith('sub-') else f'sub-{r[subject]}'
            rows.append(LabelRow(sid, r[group]))
        column = group
    else:
        subject = need('subject')
        group = need(column.lower()) if column else need('label')
        visit = _column(header, 'visit')
        for r in table:
            rows.append(LabelRow(r[subject], r[group], (r.get(visit) or None) if visit else None))
        column = group
    rows = [r for r in rows if r.subject]
    if not rows:
        raise LabelsError(f'{path} holds no rows: fill it in')
    return Labels(fmt, str(path), rows, column if isinstance(column, str) else 'group')


def parse_group_map(text: str | None) -> dict[str, str]:
    """``'SMC=NC,Patient=AD'`` -> {'SMC': 'NC', 'PATIENT': 'AD'} (keys upper-cased)."""
    mapping = {}
    for item in (text or '').split(','):
        if not item.strip():
            continue
        if '=' not in item:
            raise LabelsError(f'--group-map {item!r}: write GROUP=CLASS, e.g. SMC=NC')
        group, cls = (s.strip() for s in item.split('=', 1))
        mapping[group.upper()] = cls
    return mapping


def class_of_group(group: str, overrides: dict[str, str] | None = None) -> str | None:
    """Our class for a group value (case-insensitive), None when unknown."""
    key = group.strip().upper()
    merged = {**DEFAULT_GROUP_MAP, **(overrides or {})}
    return merged.get(key)
