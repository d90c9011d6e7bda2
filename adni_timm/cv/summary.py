"""Cross-validation by scan, the pure parts: out-of-fold predictions, cross-fitted metrics,
summaries. (The folds are ``adni_timm.data.splits``; the runs ``adni_timm.train.cv``; comparing
two CV runs ``adni_timm.cv.compare``.)

``RUN/oof_predictions.csv``: one row per training slice, predicted by the fold model that never saw
its scan; columns ``path,scan,label,fold,p_AD`` (``label`` = class index, 0 = NC, 1 = AD by
default; ``fold`` = the fold that held it out; ``p_AD`` calibrated by that fold model's own
temperature: the probability cv.json's ``threshold`` applies to).

``RUN/cv.json`` (written by ``cv_run``)::

    {
      "k": 5, "seed": 0, "folds": [["002_S_0295", ...], ...],   held-out scans of each fold
      "classes": ["NC", "AD"], "select": "inner" | "last",
      "threshold": 0.43,                  the ensemble's, chosen on all OOF scans
      "threshold_source": "out-of-fold", "threshold_rule": "youden",
      "ensemble": {"threshold", "threshold_rule", "temperatures": [...], "calibration"},
      "refit": {"threshold", "threshold_rule", "temperature", "calibration"},
      "per_fold": [{"scan": {...}, "slice": {...}, "threshold": t_k}, ...],   on the held-out
                                          fold, at t_k chosen on the OTHER folds' OOF predictions
      "summary": cv_summary(per_fold),
      "out_of_fold": {"scan": {... with *_ci}, "slice": {...}},   pooled, at the same t_k
      "best_epochs": [...], "best_weights": [...]
    }
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..utils.display import fmt_ci, is_number
from ..utils.files import format_float, write_text
from ..metrics import CI_KEYS, binary_metrics_quiet, bootstrap_ci, scan_level
from ..utils.legacy import scan_column, upgrade_key

__all__ = [
    'OOF_COLUMNS',
    'CVError',
    'assemble_oof',
    'write_oof_csv',
    'read_oof_csv',
    'cross_fitted',
    'cv_summary',
    'format_cv_table',
    'format_out_of_fold',
]

OOF_COLUMNS = ('path', 'scan', 'label', 'fold', 'p_AD')
_LEVELS = ('scan', 'slice')


class CVError(ValueError):
    """Cross-validation input that cannot be used; the message says what to change."""


# ---- out-of-fold predictions ------------------------------------------------------------------


def assemble_oof(
    per_fold: Sequence[Mapping[str, Sequence]], expected_paths: Sequence[str] | None = None
) -> list[dict]:
    """Out-of-fold rows ``{'path', 'scan', 'label', 'fold', 'p_AD'}``, sorted by path.

    ``per_fold[i]`` holds fold i's VALIDATION slices as equal-length columns
    ``{'path': [...], 'scan': [...], 'label': [...], 'p_AD': [...]}``. Raises ``CVError``
    when a slice appears twice or a scan in two folds (the fold models would have trained on
    it); with ``expected_paths`` (all training slices), also when the folds miss or add slices.
    """
    rows: list[dict] = []
    scan_fold: dict[str, int] = {}
    fold_of_path: dict[str, int] = {}
    for fold, columns in enumerate(per_fold):
        missing = [c for c in ('path', 'scan', 'label', 'p_AD') if c not in columns]
        if missing:
            raise CVError(f'assemble_oof: fold {fold} lacks the columns {missing}.')
        lengths = {c: len(columns[c]) for c in ('path', 'scan', 'label', 'p_AD')}
        if len(set(lengths.values())) != 1:
            raise CVError(f'assemble_oof: fold {fold} has columns of different lengths {lengths}.')
        for path, scan, label, p_ad in zip(
            columns['path'], columns['scan'], columns['label'], columns['p_AD']
        ):
            path, scan, p_ad = str(path), str(scan), float(p_ad)
            if path in fold_of_path:
                raise CVError(
                    f'assemble_oof: slice {path} is predicted twice (folds '
                    f'{fold_of_path[path]} and {fold}); each slice must be validated '
                    f'once.'
                )
            if scan_fold.setdefault(scan, fold) != fold:
                raise CVError(
                    f'assemble_oof: scan {scan!r} is in folds '
                    f'{scan_fold[scan]} and {fold}; folds must split by scan.'
                )
            if not 0 <= p_ad <= 1:
                raise CVError(f'assemble_oof: p_AD of {path} is {p_ad}, not a probability.')
            fold_of_path[path] = fold
            rows.append(
                {'path': path, 'scan': scan, 'label': int(label), 'fold': fold, 'p_AD': p_ad}
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
    """Write ``rows`` (as :func:`assemble_oof` returns) with columns ``OOF_COLUMNS`` (LF endings,
    probabilities as every CSV of the toolkit writes them: ``files.format_float``)."""
    lines = [','.join(OOF_COLUMNS)]
    for row in rows:
        path_text = str(row['path'])
        if any(c in path_text for c in ',"\n'):
            path_text = '"' + path_text.replace('"', '""') + '"'
        lines.append(
            f'{path_text},{row["scan"]},{int(row["label"])},{int(row["fold"])},'
            f'{format_float(float(row["p_AD"]))}'
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, '\n'.join(lines) + '\n')


def read_oof_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of an ``oof_predictions.csv``, typed: label and fold int, p_AD float."""
    path = Path(path)
    try:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            columns = [upgrade_key(c) for c in reader.fieldnames or []]  # 'patient' before
            missing = [c for c in OOF_COLUMNS if c not in columns]
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
                            'scan': scan_column(row),
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


# ---- metrics that never grade themselves -------------------------------------------------------


def cross_fitted(
    scans: Sequence, y, p_pos, fold_of, choose: Callable[[np.ndarray], dict], n_boot: int = 1000
) -> dict:
    """Per-fold and pooled out-of-fold metrics, each fold at a threshold chosen on the others.

    ``choose(mask)`` returns ``{'threshold': ...}`` chosen on the slices of ``mask`` (the rule:
    Youden or a target sensitivity). Fold k is scored at ``choose(fold_of != k)``: no reported
    number sits at a threshold tuned on the predictions it scores. The pooled metrics decide each
    slice at its own fold's threshold (AUC is threshold-free), with bootstrap CIs over scans.
    """
    scans, y = np.asarray(scans), np.asarray(y)
    p_pos, fold_of = np.asarray(p_pos, dtype=np.float64), np.asarray(fold_of)
    k = int(fold_of.max()) + 1
    thresholds = np.array([choose(fold_of != i)['threshold'] for i in range(k)])
    per_fold = []
    for i, t in enumerate(thresholds):
        mask = fold_of == i
        _, y_pat, p_pat = scan_level(scans[mask], y[mask], p_pos[mask])
        per_fold.append(
            {
                'slice': binary_metrics_quiet(y[mask], p_pos[mask], t),
                'scan': binary_metrics_quiet(y_pat, p_pat, t),
                'threshold': float(t),
            }
        )
    # each slice decided at its fold's threshold: an affine map that keeps p >= t_k as q >= 0.5 and
    # scan means as means, so the ordinary metrics at 0.5 apply
    shifted = (p_pos - thresholds[fold_of]) / 2 + 0.5
    _, y_pat, p_pat = scan_level(scans, y, p_pos)
    _, _, q_pat = scan_level(scans, y, shifted)
    pooled = {
        'slice': binary_metrics_quiet(y, shifted, 0.5),
        'scan': binary_metrics_quiet(y_pat, q_pat, 0.5),
    }
    for level, values in (('slice', (y, p_pos)), ('scan', (y_pat, p_pat))):
        pooled[level]['auc'] = binary_metrics_quiet(*values, 0.5)['auc']
    if n_boot:
        decided = bootstrap_ci(scans, y, shifted, 0.5, n_boot=n_boot)
        ranked = bootstrap_ci(scans, y, p_pos, 0.5, n_boot=n_boot)
        for level in _LEVELS:
            pooled[level].update({f'{key}_ci': ci for key, ci in decided[level].items()})
            pooled[level]['auc_ci'] = ranked[level]['auc']
    pooled['thresholds'] = [float(t) for t in thresholds]
    return {'per_fold': per_fold, 'pooled': pooled}


def format_out_of_fold(pooled: Mapping) -> str:
    """One line: the pooled out-of-fold scan AUC and accuracy with their CIs."""
    scan = pooled['scan']
    return (
        f'{scan["n"]} scans, AUC {fmt_ci(scan.get("auc"), scan.get("auc_ci"))}, '
        f'accuracy {fmt_ci(scan.get("accuracy"), scan.get("accuracy_ci"))} (each fold at '
        f'the threshold chosen on the others)'
    )


# ---- summaries -----------------------------------------------------------------------------


def cv_summary(fold_metrics: Sequence[Mapping]) -> dict:
    """Per-fold values, mean and sample sd (ddof=1) of each validation metric, per level.

    ``fold_metrics[i]`` is ``{'scan': {...}, 'slice': {...}}`` (``binary_metrics`` keys). Returns
    ``{'k': K, 'scan': {key: {'per_fold': [...], 'mean', 'sd', 'n'}}, 'slice': {...}}`` for every
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
            if key != 'n' and (v is None or is_number(v))
        ]
        keys = [k for k in CI_KEYS if k in seen]
        keys += [k for k in dict.fromkeys(seen) if k not in CI_KEYS]
        summary[level] = {}
        for key in keys:
            per_fold = [(fold.get(level) or {}).get(key) for fold in fold_metrics]
            per_fold = [float(v) if is_number(v) else None for v in per_fold]
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
    """A console table: one row per metric, ``mean ± sd`` over folds for scans and slices."""
    k = summary['k']
    keys = list(dict.fromkeys([*summary.get('scan', {}), *summary.get('slice', {})]))
    width = max([len('metric'), *map(len, keys)]) + 2
    lines = [f'{"metric":<{width}}{"scan":<22}slice']
    for key in keys:
        lines.append(
            f'{key:<{width}}{_mean_sd(summary["scan"].get(key), k):<22}'
            f'{_mean_sd(summary["slice"].get(key), k)}'
        )
    lines.append(f'{k} folds; held-out metrics, mean ± sample sd (ddof=1) over folds')
    return '\n'.join(lines)
