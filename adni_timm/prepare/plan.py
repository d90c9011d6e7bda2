"""The plan of an adni-prepare run: which scans, with which label and visit, in which split.

Made before any image is read, from the scans found (``volumes.discover_scans``) and a labels file
(``labels``), and the same for every shard of a run: the split is drawn over all subjects, by
subject (stratified, seeded), never by visit or image. See docs/PREPARE.md ("Labels").
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from ..utils.files import safe_name
from .labels import Labels, LabelsError, class_of_group, normalise_visit
from .similarity import DEFAULT_MIN_SIMILARITY
from .volumes import Discovery, Scan

__all__ = [
    'PrepareError',
    'PrepareOptions',
    'Problem',
    'PlannedScan',
    'Plan',
    'build_plan',
    'split_subjects',
    'parse_shard',
    'shard_subjects',
    'safe_name',
]

_BASELINE_CODES = ('bl', 'sc', 'scmri', 'init', 'baseline')


class PrepareError(ValueError):
    """A run that cannot start (bad options, an output folder of another plan)."""


class PrepareWriteError(PrepareError):
    """OUT could not be written (a full disk, a read-only folder); the message names the path."""


@dataclass(frozen=True)
class PrepareOptions:
    """The run's choices besides the per-scan recipe (all recorded in prepare.json)."""

    classes: tuple[str, ...] = ('NC', 'AD')
    group_map: tuple[tuple[str, str], ...] = ()  # overrides of labels.DEFAULT_GROUP_MAP
    visits: str = 'baseline'  # or 'all'
    test_fraction: float = 0.2
    seed: int = 0
    keep_flagged: bool = False
    min_similarity: float = DEFAULT_MIN_SIMILARITY  # below: a failed registration, flagged
    outlier_z: float = 3.5  # robust z (median / MAD) below which a scan is an outlier
    outlier_min_gap: float = 0.1  # ... and at least this far below the run's median
    # also keep each scan in template space and its affine transform, as BIDS derivative files
    save_registered: bool = False

    def __post_init__(self):
        object.__setattr__(self, 'classes', tuple(self.classes))
        object.__setattr__(self, 'group_map', tuple(tuple(p) for p in self.group_map))
        if self.visits not in ('baseline', 'all'):
            raise PrepareError(f'--visits {self.visits!r}: choose baseline or all')
        if not 0 <= self.test_fraction < 1:
            raise PrepareError(f'--test-fraction {self.test_fraction}: give a value in [0, 1)')
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise PrepareError(
                f'--classes {",".join(self.classes)}: give two or more distinct '
                f'classes, NC first (e.g. NC,AD or NC,MCI,AD)'
            )


@dataclass(frozen=True)
class Problem:
    """One bad input: ``kind`` for the summary, ``message`` one line naming the fix."""

    kind: str
    message: str


@dataclass(frozen=True)
class PlannedScan:
    """A scan the run will prepare, with its label and split."""

    scan_id: str  # the file-name id of its slices, <scan_id>_<slice>.png
    subject: str
    visit: str
    image_id: str
    source: str
    group: str
    label: str
    split: str
    date: str | None = None


@dataclass
class Plan:
    layout: str
    scans: list[PlannedScan]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (scan, why): not problems
    problems: list[Problem] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)  # group value -> class or 'skipped'

    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self.scans})

    def by_subject(self) -> dict[str, list[PlannedScan]]:
        groups: dict[str, list[PlannedScan]] = defaultdict(list)
        for s in self.scans:
            groups[s.subject].append(s)
        return dict(groups)

    def to_dict(self) -> dict:
        return {'layout': self.layout, 'scans': [asdict(s) for s in self.scans]}


# ------------------------------------------------------------------------------------ the plan


def _visit_order(scan: Scan, visit: str | None, date: str | None):
    """Earliest acquisition first; without dates, baseline codes first, then months."""
    code = normalise_visit(visit) or ''
    month = (
        int(code[1:]) if re.fullmatch(r'm\d+', code) else (0 if code in _BASELINE_CODES else 10_000)
    )
    return (date or '9999-99-99', month, code, scan.image_id, scan.path)


def split_subjects(
    subject_class: dict[str, str], test_fraction: float, seed: int, classes
) -> dict[str, str]:
    """Subject -> 'train' | 'test': per class, the sorted subjects in a seeded random order, the
    first ``round(test_fraction * n)`` (at least one when ``n >= 2`` and the fraction > 0) to
    test. Depends only on the subjects, their classes, the fraction and the seed."""
    split = {}
    for i, name in enumerate(classes):
        members = sorted(s for s, c in subject_class.items() if c == name)
        order = np.random.default_rng([seed, i]).permutation(len(members))
        n_test = int(round(test_fraction * len(members)))
        if test_fraction > 0 and len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        for rank, j in enumerate(order):
            split[members[j]] = 'test' if rank < n_test else 'train'
    return split


def build_plan(discovery: Discovery, labels: Labels, options: PrepareOptions) -> Plan:
    """Every scan to prepare with its label, visit and split; what is skipped and why; and the
    problems (one line each): subjects missing from the labels, unknown group values, scans the
    labels cannot place."""
    overrides = dict(options.group_map)
    problems: list[Problem] = []
    skipped: list[tuple[str, str]] = []
    missing: list[str] = []
    unknown: dict[str, list[str]] = defaultdict(list)
    mapping: dict[str, str] = {}
    candidates: dict[str, list[tuple]] = defaultdict(list)
    for scan in discovery.scans:
        try:
            match = labels.match(scan)
        except LabelsError as e:
            problems.append(Problem('ambiguous-label', str(e)))
            continue
        if match is None:
            missing.append(scan.subject)
            continue
        candidates[scan.subject].append((scan, match))
    plan_rows = []
    for subject in sorted(candidates):
        entries = sorted(
            candidates[subject], key=lambda e: _visit_order(e[0], e[1].visit, e[1].date)
        )
        by_visit: dict[str, list] = defaultdict(list)
        for scan, match in entries:
            visit = match.visit or scan.visit or (match.date or scan.date or scan.image_id)
            by_visit[visit].append((scan, match))
        visits = list(by_visit)  # insertion order = visit order
        if options.visits == 'baseline':
            for v in visits[1:]:
                skipped.append((f'{subject} {v}', 'not the baseline visit (--visits all keeps it)'))
            visits = visits[:1]
        for visit in visits:
            (scan, match), *others = by_visit[visit]
            for other, _ in others:
                skipped.append(
                    (other.path, f'another scan of {subject} {visit} was kept ({scan.image_id})')
                )
            group = match.group.strip()
            if not group:
                skipped.append((scan.path, f'no diagnosis for {subject} at {visit} in the labels'))
                continue
            cls = class_of_group(group, overrides)
            if cls is None:
                unknown[group].append(subject)
                continue
            if cls not in options.classes:
                mapping[group] = f'{cls} (not in --classes: skipped)'
                skipped.append(
                    (scan.path, f'{group} -> {cls} is not in --classes {",".join(options.classes)}')
                )
                continue
            mapping[group] = cls
            plan_rows.append((scan, visit, match, group, cls))
    if missing:
        names = sorted(set(missing))
        problems.append(
            Problem(
                'missing-label',
                f'{len(names)} subject(s) have scans but no row in {labels.path}: '
                f'{", ".join(names[:20])}{" ..." if len(names) > 20 else ""}: add them to the '
                f'labels file, or remove their scans from the source folder',
            )
        )
    for group, subjects in sorted(unknown.items()):
        problems.append(
            Problem(
                'unknown-group',
                f'unknown group value {group!r} in {labels.path} ({len(subjects)} scan(s), e.g. '
                f"{subjects[0]}): map it with --group-map '{group}=NC' (or another class)",
            )
        )
    # split by subject, stratified by the class of the subject's first kept visit
    first_class: dict[str, str] = {}
    for scan, _, _, _, cls in plan_rows:
        first_class.setdefault(scan.subject, cls)
    split = split_subjects(first_class, options.test_fraction, options.seed, options.classes)
    scans = []
    for scan, visit, match, group, cls in plan_rows:
        scan_id = (
            safe_name(scan.subject)
            if options.visits == 'baseline'
            else (f'{safe_name(scan.subject)}_{safe_name(visit)}')
        )
        scans.append(
            PlannedScan(
                scan_id,
                scan.subject,
                visit,
                scan.image_id,
                scan.path,
                group,
                cls,
                split[scan.subject],
                match.date or scan.date,
            )
        )
    ids = Counter(s.scan_id for s in scans)
    clashes = [p for p, n in ids.items() if n > 1]
    if clashes:
        raise PrepareError(
            f'two scans would share the file-name id {clashes[0]}: rename the '
            f'subject or visit folders so ids are unique'
        )
    return Plan(discovery.layout, scans, skipped, problems, mapping)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``'3/8'`` -> (3, 8); None -> (1, 1)."""
    if not text:
        return 1, 1
    m = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', text)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise PrepareError(
            f'--shard {text!r}: write K/N with 1 <= K <= N, e.g. '
            f'--shard $SLURM_ARRAY_TASK_ID/8 with --array=1-8'
        )
    return int(m[1]), int(m[2])


def shard_subjects(subjects: list[str], shard: tuple[int, int]) -> list[str]:
    k, n = shard
    return [s for i, s in enumerate(sorted(subjects)) if i % n == k - 1]


@dataclass
class ScanRecord:
    """What happened to one planned scan (a row of manifest.csv, plus timings)."""

    scan_id: str  # the file-name scan id: <scan_id>_<slice>.png
    subject: str
    visit: str
    image_id: str
    date: str | None
    source: str
    group: str
    label: str
    split: str
    status: str
    similarity: float | None = None
    files: list[str] = field(default_factory=list)  # relative to OUT, as if not flagged
    slice_numbers: list[int] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str = ''
    problem_kind: str = ''
    seconds: dict[str, float] = field(default_factory=dict)  # wall, per step (+ write)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # --save-registered: the BIDS files of the scan in template space (relative to OUT)
    registered: list[str] = field(default_factory=list)
