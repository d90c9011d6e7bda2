"""Cross-validation by patient: folds, out-of-fold predictions, ensembles, comparing two CV runs.

With ~1,000 training patients, one validation split of ~200 patients gives a noisy score, and
choosing a model, a threshold or a temperature on it overfits that one split. K-fold CV by
patient validates on every training patient exactly once; the out-of-fold (OOF) predictions
are then an honest basis for thresholds, calibration and for comparing two recipes.

This module holds the pure parts, over plain data (dicts, lists, numpy arrays); training
(``train.py --folds K``) and evaluation call them:

- folds: :func:`make_folds` (K lists of patient ids, stratified by class) and
  :func:`fold_split` (fold k as a ``split.json``-shaped dict);
- OOF predictions: :func:`assemble_oof`, :func:`write_oof_csv`, :func:`read_oof_csv`;
- summaries: :func:`cv_summary`, :func:`format_cv_table`;
- ensembles of the K fold models: :func:`ensemble_probs`;
- comparing two CV runs made on the same folds: :func:`paired_bootstrap_difference`,
  :func:`compare`, :func:`format_comparison`; the CLI ``python -m adni_timm.cv compare RUN_A
  RUN_B`` (also ``summary RUN``) lives in ``adni_timm.cli.cv``.

A CV run folder holds, besides ``fold{k}/`` run folders:

``RUN/oof_predictions.csv``: one row per training slice, predicted by the fold model that did
not see its patient; columns ``path,patient,label,fold,p_AD`` (``label`` = class index,
0 = NC, 1 = AD by default; ``fold`` = 0-based index of the fold that validated it; ``p_AD``
calibrated with cv.json's ``temperature``: the probability its ``threshold`` applies to).

``RUN/cv.json``::

    {
      "k": 5,                          number of folds
      "seed": 0,                       the make_folds seed
      "folds": [["002_S_0295", ...],   validation patient ids of fold 0 .. k-1 (make_folds output)
                ...],
      "threshold": 0.43,               operating threshold on P(AD), chosen on the OOF patients
      "per_fold": [                    validation metrics of fold model 0 .. k-1
        {"patient": {...}, "slice": {...}},   keys as adni_timm.metrics.binary_metrics returns
        ...],
      optional:
      "classes": ["NC", "AD"],         label order (default NC, AD); AD is the positive class
      "threshold_source": "out-of-fold",
      "temperature": 1.0,              fitted on the OOF slices, when calibrated
      "summary": {...}                 cv_summary(per_fold)
    }

Two runs are comparable only when made on the same folds (same patients, same k, same seed):
otherwise the per-fold differences mix model differences with split differences, and
:func:`compare` refuses unless told ``allow_different_folds=True`` (and then marks the result
INVALID).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from .data import positive_index
from .metrics import CI_KEYS, patient_level, resample_patient_counts, weighted_metrics
from .models import LABEL_NAMES

__all__ = [
    'CV_JSON',
    'OOF_CSV',
    'OOF_COLUMNS',
    'CVError',
    'make_folds',
    'fold_split',
    'assemble_oof',
    'write_oof_csv',
    'read_oof_csv',
    'cv_summary',
    'format_cv_table',
    'ensemble_probs',
    'paired_bootstrap_difference',
    'read_cv_run',
    'compare',
    'format_comparison',
]

CV_JSON = 'cv.json'
OOF_CSV = 'oof_predictions.csv'
OOF_COLUMNS = ('path', 'patient', 'label', 'fold', 'p_AD')
_CV_JSON_KEYS = ('k', 'seed', 'folds', 'threshold', 'per_fold')
_LEVELS = ('patient', 'slice')
_PAIRED_KEYS = ('auc', 'accuracy')


class CVError(ValueError):
    """Cross-validation input that cannot be used; the message says what to change."""


# ---- folds ----------------------------------------------------------------------------------


def make_folds(patient_labels: Mapping[str, int], k: int, seed: int) -> list[list[str]]:
    """K disjoint lists of patient ids (each sorted) covering all patients, stratified by class.

    ``StratifiedKFold(shuffle=True, random_state=seed)`` over the SORTED patient ids, so the
    folds depend only on (patients, labels, k, seed), not on file-system or dict order. Fold i
    is the validation part of the i-th split: the per-class counts of any two folds differ by
    at most one.
    """
    if int(k) != k or k < 2:
        raise CVError(
            f'make_folds: k must be an integer >= 2 (k folds, each validated once), got {k}.'
        )
    k = int(k)
    patients = sorted(patient_labels)
    if not patients:
        raise CVError('make_folds: no patients.')
    labels = np.array([patient_labels[p] for p in patients])
    classes, counts = np.unique(labels, return_counts=True)
    too_small = {int(c): int(n) for c, n in zip(classes, counts) if n < k}
    if too_small:
        raise CVError(
            f'make_folds: k={k} folds need at least {k} patients of every class, but '
            f'class (label: patients) {too_small} has fewer; use --folds {min(counts)} '
            f'or fewer, or add patients.'
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        sorted(patients[i] for i in val_index)
        for _, val_index in splitter.split(np.zeros(len(patients)), labels)
    ]


def fold_split(folds: Sequence[Sequence[str]], k_index: int, seed: int | None = None) -> dict:
    """Fold ``k_index`` as a split, in the JSON shape of ``adni_timm.data.split_patients``.

    ``{'level': 'patient', 'seed', 'val_fraction', 'train': [...], 'val': [...], 'fold', 'folds'}``:
    validation = fold ``k_index``, train = every other fold; ``val_fraction`` is the actual
    fraction of patients in validation; ``seed`` is the make_folds seed, if given.
    """
    if not 0 <= k_index < len(folds):
        raise CVError(
            f'fold_split: fold index {k_index} is out of range for {len(folds)} folds '
            f'(0 .. {len(folds) - 1}).'
        )
    _check_disjoint(folds)
    val = sorted(folds[k_index])
    train = sorted(p for i, fold in enumerate(folds) if i != k_index for p in fold)
    return {
        'level': 'patient',
        'seed': seed,
        'val_fraction': len(val) / (len(val) + len(train)),
        'train': train,
        'val': val,
        'fold': k_index,
        'folds': len(folds),
    }


def _check_disjoint(folds: Sequence[Sequence[str]]) -> None:
    seen: dict[str, int] = {}
    for i, fold in enumerate(folds):
        for patient in fold:
            if patient in seen:
                raise CVError(
                    f'patient {patient!r} is in fold {seen[patient]} and fold {i}: '
                    f'folds must be disjoint (make them with make_folds).'
                )
            seen[patient] = i


# ---- out-of-fold predictions ------------------------------------------------------------------


def assemble_oof(
    per_fold: Sequence[Mapping[str, Sequence]], expected_paths: Sequence[str] | None = None
) -> list[dict]:
    """Out-of-fold rows ``{'path', 'patient', 'label', 'fold', 'p_AD'}``, sorted by path.

    ``per_fold[i]`` holds fold i's VALIDATION slices as equal-length columns
    ``{'path': [...], 'patient': [...], 'label': [...], 'p_AD': [...]}``. Raises ``CVError``
    when a slice appears twice or a patient in two folds (the fold models would have trained on
    it); with ``expected_paths`` (all training slices), also when the folds miss or add slices.
    """
    rows: list[dict] = []
    patient_fold: dict[str, int] = {}
    fold_of_path: dict[str, int] = {}
    for fold, columns in enumerate(per_fold):
        missing = [c for c in ('path', 'patient', 'label', 'p_AD') if c not in columns]
        if missing:
            raise CVError(f'assemble_oof: fold {fold} lacks the columns {missing}.')
        lengths = {c: len(columns[c]) for c in ('path', 'patient', 'label', 'p_AD')}
        if len(set(lengths.values())) != 1:
            raise CVError(f'assemble_oof: fold {fold} has columns of different lengths {lengths}.')
        for path, patient, label, p_ad in zip(
            columns['path'], columns['patient'], columns['label'], columns['p_AD']
        ):
            path, patient, p_ad = str(path), str(patient), float(p_ad)
            if path in fold_of_path:
                raise CVError(
                    f'assemble_oof: slice {path} is predicted twice (folds '
                    f'{fold_of_path[path]} and {fold}); each slice must be validated '
                    f'once.'
                )
            if patient_fold.setdefault(patient, fold) != fold:
                raise CVError(
                    f'assemble_oof: patient {patient!r} is in folds '
                    f'{patient_fold[patient]} and {fold}; folds must split by patient.'
                )
            if not 0 <= p_ad <= 1:
                raise CVError(f'assemble_oof: p_AD of {path} is {p_ad}, not a probability.')
            fold_of_path[path] = fold
            rows.append(
                {'path': path, 'patient': patient, 'label': int(label), 'fold': fold, 'p_AD': p_ad}
            )
    if expected_paths is not None:
        expected = {str(p) for p in expected_paths}
        absent = sorted(expected - fold_of_path.keys())
        extra = sorted(fold_of_path.keys() - expected)
        if absent or extra:
            raise CVError(
                f'assemble_oof: the folds do not cover the training slices exactly once: '
                f'{len(absent)} not predicted (e.g. {absent[:3]}), {len(extra)} not in '
                f'training (e.g. {extra[:3]}).'
            )
    return sorted(rows, key=lambda row: row['path'])


def write_oof_csv(path: str | os.PathLike, rows: Sequence[Mapping]) -> Path:
    """Write ``rows`` (as :func:`assemble_oof` returns) to ``path`` with columns ``OOF_COLUMNS``.

    Probabilities are written with ``repr`` so that they read back bit-identical.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(OOF_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row['path'],
                    row['patient'],
                    int(row['label']),
                    int(row['fold']),
                    repr(float(row['p_AD'])),
                ]
            )
    return path


def read_oof_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of an ``oof_predictions.csv``, typed: label and fold int, p_AD float."""
    path = Path(path)
    try:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            missing = [c for c in OOF_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CVError(
                    f'{path}: not an out-of-fold prediction file; columns {missing} are '
                    f'missing (expected {",".join(OOF_COLUMNS)}).'
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append(
                        {
                            'path': row['path'],
                            'patient': row['patient'],
                            'label': int(row['label']),
                            'fold': int(row['fold']),
                            'p_AD': float(row['p_AD']),
                        }
                    )
                except (TypeError, ValueError) as e:
                    raise CVError(
                        f'{path}, line {line}: cannot read label / fold / p_AD ({e}).'
                    ) from e
    except OSError as e:
        raise CVError(f'{path}: cannot read ({e.strerror or e}).') from e
    return rows


# ---- summaries and ensembles ----------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and math.isfinite(x)


def cv_summary(fold_metrics: Sequence[Mapping]) -> dict:
    """Per-fold values, mean and sample sd (ddof=1) of each validation metric, per level.

    ``fold_metrics[i]`` is ``{'patient': {...}, 'slice': {...}}`` (``binary_metrics`` keys). Returns
    ``{'k': K, 'patient': {key: {'per_fold': [...], 'mean', 'sd', 'n'}}, 'slice': {...}}`` for every
    scalar metric except the sample count ``n``. ``None`` values (undefined in a fold) are kept in
    ``per_fold`` but skipped in ``mean`` / ``sd``; ``n`` = folds with a value; ``sd`` is ``None``
    below two values, ``mean`` below one.
    """
    if not fold_metrics:
        raise CVError('cv_summary: no folds.')
    summary: dict = {'k': len(fold_metrics)}
    for level in _LEVELS:
        seen = [
            key
            for fold in fold_metrics
            for key, v in (fold.get(level) or {}).items()
            if key != 'n' and (v is None or _is_number(v))
        ]
        keys = [k for k in CI_KEYS if k in seen]
        keys += [k for k in dict.fromkeys(seen) if k not in CI_KEYS]
        summary[level] = {}
        for key in keys:
            per_fold = [(fold.get(level) or {}).get(key) for fold in fold_metrics]
            per_fold = [float(v) if _is_number(v) else None for v in per_fold]
            values = np.array([v for v in per_fold if v is not None])
            summary[level][key] = {
                'per_fold': per_fold,
                'mean': float(values.mean()) if len(values) else None,
                'sd': float(values.std(ddof=1)) if len(values) > 1 else None,
                'n': int(len(values)),
            }
    return summary


def _mean_sd(entry: Mapping | None, k: int) -> str:
    if not entry or entry['mean'] is None:
        return 'n/a'
    text = f'{entry["mean"]:.3f}' + (f' ± {entry["sd"]:.3f}' if entry['sd'] is not None else '')
    return text + (f' ({entry["n"]}/{k})' if entry['n'] < k else '')


def format_cv_table(summary: Mapping) -> str:
    """A console table: one row per metric, ``mean ± sd`` over folds for patients and slices."""
    k = summary['k']
    keys = list(dict.fromkeys([*summary.get('patient', {}), *summary.get('slice', {})]))
    width = max([len('metric'), *map(len, keys)]) + 2
    lines = [f'{"metric":<{width}}{"patient":<22}slice']
    for key in keys:
        lines.append(
            f'{key:<{width}}{_mean_sd(summary["patient"].get(key), k):<22}'
            f'{_mean_sd(summary["slice"].get(key), k)}'
        )
    lines.append(f'{k} folds; validation metrics, mean ± sample sd (ddof=1) over folds')
    return '\n'.join(lines)


def ensemble_probs(member_probs: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of the members' probabilities (e.g. the K fold models on the test slices).

    Every member must have the same shape (same slices in the same order); any shape works,
    ``[N]`` P(AD) or ``[N, C]`` softmax rows.
    """
    if len(member_probs) == 0:
        raise CVError('ensemble_probs: no members.')
    arrays = [np.asarray(p, dtype=np.float64) for p in member_probs]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise CVError(
            f'ensemble_probs: members have different shapes {sorted(shapes)}; each must '
            f'predict the same slices in the same order.'
        )
    return np.mean(arrays, axis=0)


# ---- comparing two CV runs ------------------------------------------------------------------


def paired_bootstrap_difference(
    patients: Sequence,
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
    """Patient-level AUC and accuracy of run B minus run A with a paired percentile bootstrap CI.

    ``patients``, ``y`` (1 = AD) and the slice probabilities ``p_a``, ``p_b`` are aligned per
    slice (the same out-of-fold slices); patient probability = mean over its slices. Each
    resample draws patients with replacement within class, and BOTH runs are scored on that
    same resample, so the CI reflects the difference, not each run's own noise. Accuracy uses
    each run's own threshold. Returns ``{'n_patients', 'n_boot', 'seed', 'level',
    'threshold_a', 'threshold_b', 'auc': {'a', 'b', 'difference', 'ci': [lo, hi]},
    'accuracy': {...}}``; the CI contains 0 when the data cannot tell the runs apart.
    """
    if n_boot < 1:
        raise CVError(f'paired_bootstrap_difference: n_boot must be >= 1, got {n_boot}.')
    if not 0 < level < 1:
        raise CVError(f'paired_bootstrap_difference: level must be in (0, 1), got {level}.')
    _, y_pat, pat_a = patient_level(patients, y, p_a)
    _, _, pat_b = patient_level(patients, y, p_b)
    if len(np.unique(y_pat)) != 2:
        raise CVError('paired_bootstrap_difference: AUC needs both AD and non-AD patients.')
    point_a = weighted_metrics(y_pat, pat_a, threshold_a, np.ones((1, len(y_pat))))
    point_b = weighted_metrics(y_pat, pat_b, threshold_b, np.ones((1, len(y_pat))))
    # All draws at once (one generator call per class, reproducible from the seed alone);
    # the metrics in chunks of rows to bound memory.
    counts = resample_patient_counts(np.random.default_rng(seed), y_pat, n_boot)
    differences: dict[str, list[np.ndarray]] = {key: [] for key in _PAIRED_KEYS}
    for start in range(0, n_boot, chunk):
        rows = counts[start : start + chunk]
        boot_a = weighted_metrics(y_pat, pat_a, threshold_a, rows)
        boot_b = weighted_metrics(y_pat, pat_b, threshold_b, rows)
        for key in _PAIRED_KEYS:
            differences[key].append(boot_b[key] - boot_a[key])
    result = {
        'n_patients': int(len(y_pat)),
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
        raise CVError(f'{where}: "folds" must be k={cv["k"]} lists of patient ids (strings).')
    _check_disjoint(folds)
    return folds


def read_cv_run(run: str | os.PathLike) -> tuple[dict, list[dict]]:
    """``(cv.json contents, oof rows)`` of a CV run folder, checked against the schema above."""
    run = Path(run)
    if not run.is_dir():
        raise CVError(
            f'{run}: not a folder; give a cross-validation run folder (train.py --folds K).'
        )
    cv_path = run / CV_JSON
    if not cv_path.is_file():
        raise CVError(
            f'{run} is not a cross-validation run: it has no {CV_JSON} '
            f'(train.py --folds K writes one).'
        )
    try:
        cv = json.loads(cv_path.read_text())
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
    if not _is_number(cv['threshold']) or not 0 <= cv['threshold'] <= 1:
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
            f'{cv_path}: "per_fold" must be k={cv["k"]} objects with "patient" and "slice" metrics.'
        )
    folds = _folds_of(cv, cv_path)
    if not (run / OOF_CSV).is_file():
        raise CVError(f'{run}: no {OOF_CSV}; the run did not finish its folds.')
    rows = read_oof_csv(run / OOF_CSV)
    fold_of_patient = {p: i for i, fold in enumerate(folds) for p in fold}
    wrong = [r['path'] for r in rows if fold_of_patient.get(r['patient']) != r['fold']]
    if wrong:
        raise CVError(
            f'{run}: {len(wrong)} rows of {OOF_CSV} name a fold that does not hold '
            f'their patient in {CV_JSON} (e.g. {wrong[0]}); the two files are from '
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
                a, b = (float(a) if _is_number(a) else None), (float(b) if _is_number(b) else None)
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
    'k', 'same_folds', 'valid', 'problems': [...], 'per_fold': [{'fold', 'patient': {key: {'a',
    'b', 'difference'}}, 'slice': {...}}], 'paired': paired_bootstrap_difference(...)}`` where
    ``paired`` is on the out-of-fold patient probabilities at each run's own threshold.

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
        if (r['patient'], r['label'])
        != (by_path_b[r['path']]['patient'], by_path_b[r['path']]['label'])
    ]
    if mismatched:
        raise CVError(
            f'{run_a} and {run_b} disagree on the patient or label of {len(mismatched)} '
            f'slices (e.g. {mismatched[0]}); check --classes and the data folder.'
        )
    classes_a = cv_a.get('classes', list(LABEL_NAMES))
    if list(cv_b.get('classes', list(LABEL_NAMES))) != list(classes_a):
        raise CVError(f'{run_a} and {run_b} have different classes.')
    positive = positive_index(classes_a)
    patients = [r['patient'] for r in rows_a]
    y = np.array([int(r['label'] == positive) for r in rows_a])
    p_a = np.array([r['p_AD'] for r in rows_a])
    p_b = np.array([by_path_b[path]['p_AD'] for path in paths_a])
    paired = paired_bootstrap_difference(
        patients, y, p_a, p_b, cv_a['threshold'], cv_b['threshold'], n_boot=n_boot, seed=seed
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
        lines.append(f'per fold, validation patients (B - A), {result["k"]} folds:')
        lines.append(
            f'{"fold":<6}{"AUC A":>8}{"AUC B":>8}{"B-A":>8}   {"acc A":>8}{"acc B":>8}{"B-A":>8}'
        )
        for entry in result['per_fold']:
            auc, acc = entry['patient']['auc'], entry['patient']['accuracy']
            lines.append(
                f'{entry["fold"]:<6}{_plain(auc["a"]):>8}{_plain(auc["b"]):>8}'
                f'{_signed(auc["difference"]):>8}   {_plain(acc["a"]):>8}'
                f'{_plain(acc["b"]):>8}{_signed(acc["difference"]):>8}'
            )
    paired = result['paired']
    percent = f'{100 * paired["level"]:g}%'
    lines.append(
        f'out-of-fold, {paired["n_patients"]} patients, paired bootstrap '
        f'({paired["n_boot"]} resamples within class, seed {paired["seed"]}); '
        f'thresholds A {paired["threshold_a"]:.3g}, B {paired["threshold_b"]:.3g}:'
    )
    for key, name in (('auc', 'patient AUC'), ('accuracy', 'patient accuracy')):
        entry = paired[key]
        lo, hi = entry['ci']
        verdict = 'no clear difference' if lo <= 0 <= hi else ('B better' if lo > 0 else 'A better')
        lines.append(
            f'  {name:<17} A {entry["a"]:.3f}  B {entry["b"]:.3f}  '
            f'B-A {entry["difference"]:+.3f}  {percent} CI [{lo:+.3f}, {hi:+.3f}]  '
            f'({verdict})'
        )
    return '\n'.join(lines)


if __name__ == '__main__':  # python -m adni_timm.cv compare RUN_A RUN_B (adni_timm.cli.cv)
    from .cli.cv import main

    sys.exit(main())
