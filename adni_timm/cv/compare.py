"""Comparing two cross-validation runs made on the same folds: per-fold differences and a paired
bootstrap CI of the out-of-fold scan AUC and accuracy (``adni-cv compare RUN_A RUN_B``).

Two runs are comparable only when made on the same folds (same scans, same k, same seed):
otherwise the per-fold differences mix model differences with split differences, and
:func:`compare` refuses unless told ``allow_different_folds=True`` (and then marks the result
INVALID). Differences are B - A. The command line: ``adni_timm.cli.cv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .summary import CVError, read_oof_csv
from ..data import positive_index
from ..utils.display import is_number
from ..metrics import CI_KEYS, scan_level, resample_scan_counts, weighted_metrics
from ..models import LABEL_NAMES
from ..run import Run
from ..data.splits import SplitError, check_folds
from ..utils.legacy import upgrade

__all__ = [
    'paired_bootstrap_difference',
    'read_cv_run',
    'compare',
    'format_comparison',
]

_CV_JSON_KEYS = ('k', 'seed', 'folds', 'threshold', 'per_fold')
_LEVELS = ('scan', 'slice')
_PAIRED_KEYS = ('auc', 'accuracy')


def paired_bootstrap_difference(
    scans: Sequence,
    y,
    p_a,
    p_b,
    threshold_a: float,
    threshold_b: float,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 250,
) -> dict:
    """Scan-level AUC and accuracy of run B minus run A with a paired percentile bootstrap CI.

    ``scans``, ``y`` (1 = AD) and the slice probabilities ``p_a``, ``p_b`` are aligned per
    slice (the same out-of-fold slices); scan probability = mean over its slices. Each
    resample draws scans with replacement within class, and BOTH runs are scored on that
    same resample, so the CI reflects the difference, not each run's own noise. Accuracy uses
    each run's own threshold. Returns ``{'n_scans', 'n_boot', 'seed', 'level',
    'threshold_a', 'threshold_b', 'auc': {'a', 'b', 'difference', 'ci': [lo, hi]},
    'accuracy': {...}}``; the CI contains 0 when the data cannot tell the runs apart.
    """
    if n_boot < 1:
        raise CVError(f'paired_bootstrap_difference: n_boot must be >= 1, got {n_boot}.')
    if not 0 < level < 1:
        raise CVError(f'paired_bootstrap_difference: level must be in (0, 1), got {level}.')
    _, y_pat, pat_a = scan_level(scans, y, p_a)
    _, _, pat_b = scan_level(scans, y, p_b)
    if len(np.unique(y_pat)) != 2:
        raise CVError('paired_bootstrap_difference: AUC needs both AD and non-AD scans.')
    point_a = weighted_metrics(y_pat, pat_a, threshold_a, np.ones((1, len(y_pat))))
    point_b = weighted_metrics(y_pat, pat_b, threshold_b, np.ones((1, len(y_pat))))
    # All draws at once (one generator call per class, reproducible from the seed alone);
    # the metrics in chunks of rows to bound memory.
    counts = resample_scan_counts(np.random.default_rng(seed), y_pat, n_boot)
    differences: dict[str, list[np.ndarray]] = {key: [] for key in _PAIRED_KEYS}
    for start in range(0, n_boot, chunk):
        rows = counts[start : start + chunk]
        boot_a = weighted_metrics(y_pat, pat_a, threshold_a, rows)
        boot_b = weighted_metrics(y_pat, pat_b, threshold_b, rows)
        for key in _PAIRED_KEYS:
            differences[key].append(boot_b[key] - boot_a[key])
    result = {
        'n_scans': int(len(y_pat)),
        'n_boot': int(n_boot),
        'seed': seed,
        'level': level,
        'threshold_a': float(threshold_a),
        'threshold_b': float(threshold_b),
    }
    for key in _PAIRED_KEYS:
        lo, hi = np.percentile(
            np.concatenate(differences[key]), [50 * (1 - level), 50 * (1 + level)]
        )
        a, b = float(point_a[key][0]), float(point_b[key][0])
        result[key] = {'a': a, 'b': b, 'difference': b - a, 'ci': [float(lo), float(hi)]}
    return result


def _folds_of(cv: Mapping, where: Path) -> list[list[str]]:
    folds = cv['folds']
    if (
        not isinstance(folds, list)
        or len(folds) != cv['k']
        or not all(isinstance(f, list) and all(isinstance(p, str) for p in f) for f in folds)
    ):
        raise CVError(f'{where}: "folds" must be k={cv["k"]} lists of scan ids (strings).')
    try:
        check_folds(folds)
    except SplitError as e:
        raise CVError(str(e)) from None
    return folds


def read_cv_run(run: str | os.PathLike) -> tuple[dict, list[dict]]:
    """``(cv.json contents, oof rows)`` of a CV run folder, checked against the schema above."""
    run = Run(run)
    if not run.path.is_dir():
        raise CVError(
            f'{run}: not a folder; give a cross-validation run folder (train.py --folds K).'
        )
    cv_path = run.cv_file
    if not cv_path.is_file():
        raise CVError(
            f'{run} is not a cross-validation run: it has no {Run.CV} '
            f'(train.py --folds K writes one).'
        )
    try:
        cv = upgrade(json.loads(cv_path.read_text()))
    except json.JSONDecodeError as e:
        raise CVError(f'{cv_path}: not valid JSON ({e.msg}, line {e.lineno}).') from e
    except (OSError, UnicodeDecodeError) as e:
        raise CVError(f'{cv_path}: cannot read ({e}).') from e
    if not isinstance(cv, dict) or any(key not in cv for key in _CV_JSON_KEYS):
        present = sorted(cv) if isinstance(cv, dict) else type(cv).__name__
        raise CVError(
            f'{cv_path}: a cv.json needs the keys {list(_CV_JSON_KEYS)}; found {present}.'
        )
    if not isinstance(cv['k'], int) or isinstance(cv['k'], bool) or cv['k'] < 2:
        raise CVError(f'{cv_path}: "k" must be an integer >= 2, got {cv["k"]!r}.')
    if not is_number(cv['threshold']) or not 0 <= cv['threshold'] <= 1:
        raise CVError(
            f'{cv_path}: "threshold" must be a probability in [0, 1], got {cv["threshold"]!r}.'
        )
    per_fold = cv['per_fold']
    if (
        not isinstance(per_fold, list)
        or len(per_fold) != cv['k']
        or not all(
            isinstance(f, dict) and all(isinstance(f.get(lv), dict) for lv in _LEVELS)
            for f in per_fold
        )
    ):
        raise CVError(
            f'{cv_path}: "per_fold" must be k={cv["k"]} objects with "scan" and "slice" metrics.'
        )
    folds = _folds_of(cv, cv_path)
    if not run.oof_file.is_file():
        raise CVError(f'{run}: no {Run.OOF}; the run did not finish its folds.')
    rows = read_oof_csv(run.oof_file)
    fold_of_scan = {p: i for i, fold in enumerate(folds) for p in fold}
    wrong = [r['path'] for r in rows if fold_of_scan.get(r['scan']) != r['fold']]
    if wrong:
        raise CVError(
            f'{run}: {len(wrong)} rows of {Run.OOF} name a fold that does not hold '
            f'their scan in {Run.CV} (e.g. {wrong[0]}); the two files are from '
            f'different runs.'
        )
    return cv, rows


def _same_folds(folds_a: Sequence[Sequence[str]], folds_b: Sequence[Sequence[str]]) -> bool:
    return len(folds_a) == len(folds_b) and all(set(a) == set(b) for a, b in zip(folds_a, folds_b))


def _per_fold_differences(
    per_fold_a: Sequence[Mapping], per_fold_b: Sequence[Mapping]
) -> list[dict]:
    out = []
    for fold, (fa, fb) in enumerate(zip(per_fold_a, per_fold_b)):
        entry: dict = {'fold': fold}
        for level in _LEVELS:
            entry[level] = {}
            for key in CI_KEYS:
                a, b = fa[level].get(key), fb[level].get(key)
                a, b = (float(a) if is_number(a) else None), (float(b) if is_number(b) else None)
                entry[level][key] = {
                    'a': a,
                    'b': b,
                    'difference': None if a is None or b is None else b - a,
                }
        out.append(entry)
    return out


def compare(
    run_a: str | os.PathLike,
    run_b: str | os.PathLike,
    allow_different_folds: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Compare CV run B against run A (differences are B - A), paired on the same folds.

    Reads ``RUN/cv.json`` and ``RUN/oof_predictions.csv`` of each. Returns ``{'run_a', 'run_b',
    'k', 'same_folds', 'valid', 'problems': [...], 'per_fold': [{'fold', 'scan': {key: {'a',
    'b', 'difference'}}, 'slice': {...}}], 'paired': paired_bootstrap_difference(...)}`` where
    ``paired`` is on the out-of-fold scan probabilities at each run's own threshold.

    Raises ``CVError`` when the folds differ (the comparison would be INVALID: the difference
    would mix recipe and split), unless ``allow_different_folds``; then ``valid`` is False.
    Also when the two runs predicted different slices (nothing to pair).
    """
    cv_a, rows_a = read_cv_run(run_a)
    cv_b, rows_b = read_cv_run(run_b)
    problems = []
    same_folds = _same_folds(cv_a['folds'], cv_b['folds'])
    if not same_folds:
        problems.append(
            f'the runs used different folds (k={cv_a["k"]}, seed={cv_a["seed"]} vs '
            f'k={cv_b["k"]}, seed={cv_b["seed"]}): differences mix the recipes with '
            f'the splits'
        )
        if not allow_different_folds:
            raise CVError(
                f'INVALID comparison: {problems[0]}. Train both with the same --folds '
                f'and --seed on the same data (or pass --allow-different-folds to see '
                f'it anyway).'
            )
    by_path_b = {r['path']: r for r in rows_b}
    paths_a = [r['path'] for r in rows_a]
    if (
        len(by_path_b) != len(rows_b)
        or len(set(paths_a)) != len(paths_a)
        or set(paths_a) != set(by_path_b)
    ):
        raise CVError(
            f'{run_a} and {run_b} predicted different slices ({len(rows_a)} vs '
            f'{len(rows_b)} out-of-fold rows); they were not trained on the same data.'
        )
    mismatched = [
        r['path']
        for r in rows_a
        if (r['scan'], r['label']) != (by_path_b[r['path']]['scan'], by_path_b[r['path']]['label'])
    ]
    if mismatched:
        raise CVError(
            f'{run_a} and {run_b} disagree on the scan or label of {len(mismatched)} '
            f'slices (e.g. {mismatched[0]}); check --classes and the data folder.'
        )
    classes_a = cv_a.get('classes', list(LABEL_NAMES))
    if list(cv_b.get('classes', list(LABEL_NAMES))) != list(classes_a):
        raise CVError(f'{run_a} and {run_b} have different classes.')
    positive = positive_index(classes_a)
    scans = [r['scan'] for r in rows_a]
    y = np.array([int(r['label'] == positive) for r in rows_a])
    p_a = np.array([r['p_AD'] for r in rows_a])
    p_b = np.array([by_path_b[path]['p_AD'] for path in paths_a])
    paired = paired_bootstrap_difference(
        scans, y, p_a, p_b, cv_a['threshold'], cv_b['threshold'], n_boot=n_boot, seed=seed
    )
    per_fold = _per_fold_differences(cv_a['per_fold'], cv_b['per_fold']) if same_folds else []
    return {
        'run_a': str(run_a),
        'run_b': str(run_b),
        'k': cv_a['k'],
        'same_folds': same_folds,
        'valid': same_folds,
        'problems': problems,
        'per_fold': per_fold,
        'paired': paired,
    }


def _signed(x: float | None) -> str:
    return 'n/a' if x is None else f'{x:+.3f}'


def _plain(x: float | None) -> str:
    return 'n/a' if x is None else f'{x:.3f}'


def format_comparison(result: Mapping) -> str:
    """The console report of :func:`compare`: per-fold differences, then the paired OOF CI."""
    lines = []
    if not result['valid']:
        lines += [f'INVALID COMPARISON: {problem}.' for problem in result['problems']]
        lines.append('The numbers below do not measure the difference between the recipes.')
    lines.append(f'A = {result["run_a"]}')
    lines.append(f'B = {result["run_b"]}')
    if result['per_fold']:
        lines.append(f'per fold, validation scans (B - A), {result["k"]} folds:')
        lines.append(
            f'{"fold":<6}{"AUC A":>8}{"AUC B":>8}{"B-A":>8}   {"acc A":>8}{"acc B":>8}{"B-A":>8}'
        )
        for entry in result['per_fold']:
            auc, acc = entry['scan']['auc'], entry['scan']['accuracy']
            lines.append(
                f'{entry["fold"]:<6}{_plain(auc["a"]):>8}{_plain(auc["b"]):>8}'
                f'{_signed(auc["difference"]):>8}   {_plain(acc["a"]):>8}'
                f'{_plain(acc["b"]):>8}{_signed(acc["difference"]):>8}'
            )
    paired = result['paired']
    percent = f'{100 * paired["level"]:g}%'
    lines.append(
        f'out-of-fold, {paired["n_scans"]} scans, paired bootstrap '
        f'({paired["n_boot"]} resamples within class, seed {paired["seed"]}); '
        f'thresholds A {paired["threshold_a"]:.3g}, B {paired["threshold_b"]:.3g}:'
    )
    for key, name in (('auc', 'scan AUC'), ('accuracy', 'scan accuracy')):
        entry = paired[key]
        lo, hi = entry['ci']
        verdict = 'no clear difference' if lo <= 0 <= hi else ('B better' if lo > 0 else 'A better')
        lines.append(
            f'  {name:<17} A {entry["a"]:.3f}  B {entry["b"]:.3f}  '
            f'B-A {entry["difference"]:+.3f}  {percent} CI [{lo:+.3f}, {hi:+.3f}]  '
            f'({verdict})'
        )
    return '\n'.join(lines)
