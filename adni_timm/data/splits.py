"""Who trains, who selects, who is reported: every split of scans, and the checks that keep
them apart.

The honesty of every number rests here. Slices of one scan are near-duplicates, so every
split is *by scan*, stratified by class, and a pure function of (scans, labels, seed):

- ``split_scans``: train / validation carved from ``DATA_DIR/train`` (``split_slices`` is the
  reference project's leaky slice split, for reproducing it only);
- ``make_folds`` / ``fold_split``: K folds for cross-validation; inside each fold the scans
  that select the epoch, the live/EMA weights and the temperature (``val``) are drawn from the
  fold's *training* scans, never from the held-out fold it reports (``held_out``);
- ``check_data`` / ``load_splits``: the data checked before any training (layout, leakage between
  train and test, unreadable files), then split (or the recorded split applied on resume).

A split is plain JSON (``RUN/split.json``)::

    {"level": "scan", "seed": 0, "val_fraction": 0.2, "train": [...], "val": [...],
     "test": [...]}                                        (+ "fold", "folds", "held_out")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from .images import resolve_bad_images
from .slices import DataError, Slice, scan_split, slice_key
from ..utils.display import preview
from .note import subjects_of


_logger = logging.getLogger(__name__)

# how a cross-validation fold chooses its weights: 'inner' = on a validation split carved from the
# fold's training scans; 'last' = no choice at all (fixed epochs, last weights)
CV_SELECT = ('inner', 'last')


class SplitError(DataError):
    """A split that cannot be made or used; the message says what to change."""


@dataclass
class Splits:
    """The slices of each part and the JSON-able split (scan ids) that ``split.json`` records."""

    train: list[Slice]
    val: list[Slice]
    test: list[Slice]
    split: dict[str, Any]


def _check_fraction(fraction: float, key: str = 'val_fraction') -> None:
    if not 0 <= fraction < 1:
        raise SplitError(f'{key}={fraction}: must be in [0, 1) (e.g. 0.2 = 20% of scans)')


def scan_labels(slices: Iterable[Slice]) -> dict[str, int]:
    """``{scan: label}``; a scan with two labels is an error (a scan is one diagnosis)."""
    labels: dict[str, int] = {}
    for s in slices:
        if labels.setdefault(s.scan, s.label) != s.label:
            raise SplitError(
                f'scan {s.scan} carries two labels ({labels[s.scan]} and {s.label}, '
                f'e.g. {s.path}): move its slices into one class folder'
            )
    return labels


def _assert_disjoint(*parts: Sequence) -> None:
    seen: set = set()
    for part in parts:
        shared = seen & set(part)
        if shared:  # an invariant of the code, not of the data: must never happen
            raise AssertionError(f'split bug: entries in two parts: {preview(sorted(shared))}')
        seen |= set(part)


def _by_subject(labels: Mapping[str, int], subjects: Mapping[str, str]) -> dict[str, list[str]]:
    """The scans of each subject (a scan is its own subject when none is recorded)."""
    grouped: dict[str, list[str]] = {}
    for scan in sorted(labels):
        grouped.setdefault(subjects.get(scan, scan), []).append(scan)
    return grouped


def _split_ids(
    labels: Mapping[str, int],
    fraction: float,
    seed: int,
    subjects: Mapping[str, str] | None = None,
) -> tuple[list, list]:
    """(kept, carved) scan ids, stratified by label, deterministic for a seed; all scans of
    one subject (``subjects``: the visits of a subject, from adni-prepare) on the same side."""
    if subjects:
        grouped = _by_subject(labels, subjects)
        if any(len(v) > 1 for v in grouped.values()):
            # a subject's class for stratifying: its most frequent (converters are rare)
            subject_labels = {
                g: max(set(labels[p] for p in ps), key=[labels[p] for p in ps].count)
                for g, ps in grouped.items()
            }
            kept, carved = _split_ids(subject_labels, fraction, seed)
            return (
                sorted(p for g in kept for p in grouped[g]),
                sorted(p for g in carved for p in grouped[g]),
            )
    scans = sorted(labels)
    if fraction == 0:
        return scans, []
    try:
        kept, carved = train_test_split(
            scans, test_size=fraction, random_state=seed, stratify=[labels[p] for p in scans]
        )
    except ValueError as e:  # too few scans of a class for a stratified split
        raise SplitError(
            f'cannot split {len(scans)} scans by class with fraction {fraction} ({e}): add '
            f'scans or change the fraction'
        ) from e
    return sorted(kept), sorted(carved)


def split_scans(
    slices: Sequence[Slice],
    val_fraction: float = 0.2,
    seed: int = 0,
    subjects: Mapping[str, str] | None = None,
) -> dict:
    """Scan-level train / val split, stratified by class, deterministic for a seed; with
    ``subjects`` (``data_note.subjects_of``) every visit of a subject on one side."""
    _check_fraction(val_fraction)
    train, val = _split_ids(scan_labels(slices), val_fraction, seed, subjects)
    _assert_disjoint(train, val)
    split = {
        'level': 'scan',
        'seed': seed,
        'val_fraction': val_fraction,
        'train': train,
        'val': val,
    }
    if subjects:
        split['grouped_by'] = 'subject (manifest.csv)'
    return split


def split_slices(slices: Sequence[Slice], val_fraction: float = 0.2, seed: int = 0) -> dict:
    """The reference project's LEAKY random split by slice (a scan lands on both sides).

    Only for reproducing the reference recipe (configs/seed.yaml); its validation scores are
    inflated. Keys are ``split/class/file`` (``data.slice_key``), so the split still applies when
    DATA_DIR moves.
    """
    _check_fraction(val_fraction)
    paths = sorted(slice_key(s.path) for s in slices)
    train, val = (
        (paths, [])
        if val_fraction == 0
        else train_test_split(paths, test_size=val_fraction, random_state=seed)
    )
    train, val = sorted(train), sorted(val)
    _assert_disjoint(train, val)
    return {
        'level': 'slice',
        'seed': seed,
        'val_fraction': val_fraction,
        'train': train,
        'val': val,
    }


def select(slices: Sequence[Slice], split: dict, part: str) -> list[Slice]:
    """The slices of ``split[part]`` (scan ids or slice keys, by level), in ``slices`` order."""
    level = split.get('level')
    if level not in ('scan', 'slice') or part not in split:
        raise SplitError(
            f'not a split with a {part!r} part: expected level "scan" or "slice" '
            f'and lists under train / val (as split_scans returns)'
        )
    key = (lambda s: s.scan) if level == 'scan' else (lambda s: slice_key(s.path))
    wanted = set(split[part]) if level == 'scan' else {slice_key(p) for p in split[part]}
    chosen = [s for s in slices if key(s) in wanted]
    missing = wanted - {key(s) for s in chosen}
    if missing:
        raise SplitError(
            f'{len(missing)} {level} entries recorded in split[{part!r}] are not in the data: '
            f'{preview(sorted(missing))}. Restore their files, or point --data-dir at the data '
            f'the split was made for (see README.md, "Resume").'
        )
    return chosen


def check_no_leakage(
    first: Sequence[Slice], second: Sequence[Slice], names=('train', 'test')
) -> None:
    """Raise if any scan has slices in both sets (leakage inflates every score)."""
    shared = sorted({s.scan for s in first} & {s.scan for s in second})
    if shared:
        raise SplitError(
            f'{len(shared)} scan(s) appear in both {names[0]} and {names[1]}: '
            f'{preview(shared)}. A scan must sit in one split only: move or remove their '
            f'slices from one of them.'
        )


def warn_new_scans(slices: Sequence[Slice], known: Iterable[str]) -> list[Slice]:
    """The slices of ``known`` scans; one warning naming the scans left out (new on disk)."""
    known = set(known)
    new = sorted({s.scan for s in slices} - known)
    if new:
        _logger.warning(
            '%d scan(s) in the data are not in the recorded split and are not used: %s',
            len(new),
            preview(new, 5),
        )
    return [s for s in slices if s.scan in known]


# ------------------------------------------------------------------------------ the checked data


def check_data(cfg, data_dir, check_test: bool = False) -> tuple[list[Slice], list[Slice]]:
    """(train, test) slices, checked before any training: layout, leakage between the splits,
    unreadable files (of test too when it will be evaluated; ``skip_bad_images`` drops them with a
    count)."""
    scan = dict(classes=tuple(cfg.classes), file_is_scan=cfg.file_is_scan)
    train_all = scan_split(data_dir, 'train', **scan)
    test = scan_split(data_dir, 'test', **scan) if (Path(data_dir) / 'test').is_dir() else []
    if test:
        check_no_leakage(train_all, test, names=('train', 'test'))
    train_all = resolve_bad_images(
        train_all, skip_bad=cfg.skip_bad_images, num_workers=cfg.num_workers, what='train'
    )
    if check_test:
        if not test:
            raise SplitError(
                f'--eval-test: {data_dir} has no test split to evaluate on; drop --eval-test or '
                f'add {Path(data_dir) / "test"}'
            )
        test = resolve_bad_images(
            test, skip_bad=cfg.skip_bad_images, num_workers=cfg.num_workers, what='test'
        )
    return train_all, test


def load_splits(
    cfg, data_dir, recorded: dict[str, Any] | None = None, check_test: bool = False
) -> Splits:
    """The checked data split into train and validation: by scan (or ``recorded``: on resume,
    a cross-validation fold, a refit)."""
    train_all, test = check_data(cfg, data_dir, check_test)
    if recorded is not None:
        split = dict(recorded)
        if split.get('level') == 'scan':
            train_all = warn_new_scans(
                train_all, [*split['train'], *split['val'], *split.get('held_out', [])]
            )
    elif cfg.split_level == 'slice':
        _logger.warning(
            'split_level=slice: slices of one scan land in both train and val. This LEAKS '
            'scans and inflates validation scores; it exists only to reproduce the reference.'
        )
        split = split_slices(train_all, cfg.val_fraction, cfg.seed)
    else:
        split = split_scans(train_all, cfg.val_fraction, cfg.seed, subjects_of(data_dir))
    if test:
        split['test'] = sorted({s.scan for s in test})
    return Splits(
        train=select(train_all, split, 'train'),
        val=select(train_all, split, 'val'),
        test=test,
        split=split,
    )


# -------------------------------------------------------------------------- cross-validation


def make_folds(labels: Mapping[str, int], k: int, seed: int) -> list[list[str]]:
    """K disjoint lists of scan ids (each sorted) covering all scans, stratified by class.

    ``StratifiedKFold(shuffle=True, random_state=seed)`` over the SORTED scan ids, so the folds
    depend only on (scans, labels, k, seed), not on file-system or dict order; the per-class
    counts of any two folds differ by at most one.
    """
    if int(k) != k or k < 2:
        raise SplitError(f'folds: k must be an integer >= 2 (each fold held out once), got {k}.')
    k = int(k)
    scans = sorted(labels)
    if not scans:
        raise SplitError('make_folds: no scans.')
    y = np.array([labels[p] for p in scans])
    classes, counts = np.unique(y, return_counts=True)
    too_small = {int(c): int(n) for c, n in zip(classes, counts) if n < k}
    if too_small:
        raise SplitError(
            f'{k} folds need at least {k} scans of every class, but class (label: scans) '
            f'{too_small} has fewer; use --folds {min(counts)} or fewer, or add scans.'
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [sorted(scans[i] for i in held) for _, held in splitter.split(np.zeros(len(y)), y)]


def make_subject_folds(
    labels: Mapping[str, int], k: int, seed: int, subjects: Mapping[str, str] | None = None
) -> list[list[str]]:
    """``make_folds`` with every scan of one subject (its visits) in the same fold."""
    grouped = _by_subject(labels, subjects or {})
    if all(len(v) == 1 for v in grouped.values()):
        return make_folds(labels, k, seed)
    subject_labels = {
        g: max(set(labels[p] for p in ps), key=[labels[p] for p in ps].count)
        for g, ps in grouped.items()
    }
    return [
        sorted(p for g in fold for p in grouped[g]) for fold in make_folds(subject_labels, k, seed)
    ]


def check_folds(folds: Sequence[Sequence[str]]) -> None:
    """Raise when a scan sits in two folds."""
    seen: dict[str, int] = {}
    for i, fold in enumerate(folds):
        for scan in fold:
            if scan in seen:
                raise SplitError(
                    f'scan {scan!r} is in fold {seen[scan]} and fold {i}: folds must be '
                    f'disjoint (make them with make_folds).'
                )
            seen[scan] = i


def fold_split(
    folds: Sequence[Sequence[str]],
    k: int,
    labels: Mapping[str, int],
    *,
    seed: int,
    select_by: str = 'inner',
    val_fraction: float = 0.2,
    subjects: Mapping[str, str] | None = None,
) -> dict:
    """Fold ``k`` as a run's split: ``held_out`` = fold k (only ever predicted); the fold's training
    scans (every other fold) split into ``train`` and ``val`` (``select_by='inner'``: by scan,
    stratified, ``val_fraction`` of them select the epoch, the weights and the temperature) or all
    in ``train`` (``'last'``: no selection)."""
    if not 0 <= k < len(folds):
        raise SplitError(f'fold index {k} is out of range for {len(folds)} folds')
    if select_by not in CV_SELECT:
        raise SplitError(f'cv_select={select_by!r}: choose one of {list(CV_SELECT)}')
    check_folds(folds)
    held_out = sorted(folds[k])
    rest = {p: labels[p] for i, fold in enumerate(folds) if i != k for p in fold}
    if select_by == 'inner':
        _check_fraction(val_fraction)
        if val_fraction == 0:
            raise SplitError(
                'cv_select=inner needs a validation fraction > 0 to carve the inner validation '
                'split from each fold; set --val-fraction 0.2, or use --cv-select last'
            )
        train, val = _split_ids(rest, val_fraction, seed + k, subjects)
    else:
        train, val = sorted(rest), []
    _assert_disjoint(train, val, held_out)
    return {
        'level': 'scan',
        'seed': seed,
        'val_fraction': len(val) / max(1, len(val) + len(train)),
        'train': train,
        'val': val,
        'held_out': held_out,
        'fold': k,
        'folds': len(folds),
        'select': select_by,
    }


def recorded_folds(folds: list[list[str]], slices: Sequence[Slice]) -> list[Slice]:
    """The slices of the recorded folds' scans (all must be there); new scans left out."""
    wanted = {p for fold in folds for p in fold}
    missing = sorted(wanted - {s.scan for s in slices})
    if missing:
        raise SplitError(
            f'{len(missing)} scan(s) of the recorded folds are not in the data: '
            f'{preview(missing, 5)}. Restore their files, or point --data-dir at the data the '
            f'run was made on.'
        )
    return warn_new_scans(slices, wanted)
