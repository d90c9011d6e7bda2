"""Binary AD-vs-rest metrics at slice and patient level; pure functions over numpy arrays.

``y_true`` is 1 for the positive class (AD) and 0 otherwise; ``p_pos`` is the
predicted probability of AD. A sample is called positive when ``p_pos >= threshold``
(the same rule as scikit-learn's ``roc_curve``, so thresholds taken from it are exact).
A patient's probability is the mean over its slices.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, precision_score, recall_score,
    roc_auc_score, roc_curve,
)

__all__ = [
    'METRIC_KEYS', 'CI_KEYS', 'binary_metrics', 'patient_level', 'slice_and_patient_metrics', 'youden_threshold',
    'threshold_for_sensitivity', 'bootstrap_ci',
]

METRIC_KEYS = ('n', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'precision', 'f1', 'auc',
               'confusion_matrix')
CI_KEYS = ('accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'precision', 'f1', 'auc')


def _as_arrays(y_true, p_pos, what: str = 'metrics') -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(p_pos, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f'{what}: y_true and p_pos must be 1-D arrays of the same length, '
                         f'got shapes {y.shape} and {p.shape}.')
    if len(y) == 0:
        raise ValueError(f'{what}: no samples (empty y_true). Check that the data folder holds images of every class.')
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f'{what}: y_true must hold 0 (negative, e.g. NC) or 1 (positive, AD), '
                         f'got values {sorted(set(np.unique(y).tolist()))}.')
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError(f'{what}: p_pos must be probabilities in [0, 1] (softmax outputs), not logits.')
    return y.astype(np.int64), p


def _none_if_nan(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def binary_metrics(y_true, p_pos, threshold: float = 0.5) -> dict:
    """Accuracy, balanced accuracy, sensitivity, specificity, precision, F1, AUC and the confusion matrix.

    Undefined values (e.g. sensitivity without any AD sample) are ``None``; AUC is ``None``, with a
    warning, when ``y_true`` holds a single class. The confusion matrix is ``[[TN, FP], [FN, TP]]``.
    """
    y, p = _as_arrays(y_true, p_pos, 'binary_metrics')
    pred = (p >= threshold).astype(np.int64)
    both_classes = len(np.unique(y)) == 2
    auc = None
    if both_classes:
        auc = float(roc_auc_score(y, p))
    else:
        warnings.warn(f'AUC is undefined: y_true holds only class {int(y[0])} ({len(y)} samples); reporting null.',
                      UserWarning, stacklevel=2)
    with warnings.catch_warnings():
        # a single class in y_true is reported as null values above, not as sklearn warnings
        warnings.simplefilter('ignore')
        return {
            'n': int(len(y)),
            'accuracy': float(accuracy_score(y, pred)),
            'balanced_accuracy': float(balanced_accuracy_score(y, pred)),  # recall of the one class if single
            'sensitivity': _none_if_nan(recall_score(y, pred, pos_label=1, zero_division=np.nan)),
            'specificity': _none_if_nan(recall_score(y, pred, pos_label=0, zero_division=np.nan)),
            'precision': _none_if_nan(precision_score(y, pred, pos_label=1, zero_division=np.nan)),
            'f1': _none_if_nan(f1_score(y, pred, pos_label=1, zero_division=np.nan)),
            'auc': auc,
            'confusion_matrix': confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        }


def patient_level(patients: Sequence, y_true, p_pos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate slices to patients: ``(ids, y, mean p_pos)``, ids sorted.

    Raises ``ValueError`` when a patient's slices carry different labels (a patient is one diagnosis).
    """
    y, p = _as_arrays(y_true, p_pos, 'patient_level')
    patients = np.asarray(patients)
    if len(patients) != len(y):
        raise ValueError(f'patient_level: {len(patients)} patient ids for {len(y)} slices.')
    ids, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    n_pos = np.bincount(inverse, weights=y, minlength=len(ids))
    mixed = (n_pos > 0) & (n_pos < counts)
    if mixed.any():
        raise ValueError(f'patient_level: patients {ids[mixed][:5].tolist()} have slices with different labels; '
                         f'each patient must sit in one class folder only.')
    mean_p = np.bincount(inverse, weights=p, minlength=len(ids)) / counts
    return ids, (n_pos > 0).astype(np.int64), mean_p


def slice_and_patient_metrics(patients: Sequence, y_true, p_pos, threshold: float = 0.5) -> dict:
    """``{'slice': binary_metrics(...), 'patient': binary_metrics(...)}`` at the same threshold."""
    _, y_pat, p_pat = patient_level(patients, y_true, p_pos)
    return {'slice': binary_metrics(y_true, p_pos, threshold), 'patient': binary_metrics(y_pat, p_pat, threshold)}


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if len(np.unique(y)) != 2:
        raise ValueError(f'{what}: choosing a threshold needs both AD and non-AD samples; '
                         f'the validation set holds only class {int(y[0])}.')


def youden_threshold(y_true, p_pos) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1.

    Every threshold in the gap between the best observed score and the next lower one
    gives the same J on validation; we return the middle of that gap, not its edge, so
    that a well-separated validation set does not yield a brittle threshold like 0.99999.
    Choose it on validation patients, never on the split you report.
    """
    y, p = _as_arrays(y_true, p_pos, 'youden_threshold')
    _require_both_classes(y, 'youden_threshold')
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    j = tpr - fpr
    j[~np.isfinite(thresholds)] = -np.inf  # roc_curve's first threshold is +inf (nothing positive)
    best = int(np.argmax(j))
    if best + 1 < len(thresholds):
        return float((thresholds[best] + thresholds[best + 1]) / 2)
    return float(thresholds[best])


def threshold_for_sensitivity(y_true, p_pos, target: float) -> float:
    """The highest threshold whose sensitivity on ``(y_true, p_pos)`` is at least ``target``.

    Highest keeps specificity as high as the sensitivity target allows.
    """
    if not 0 < target <= 1:
        raise ValueError(f'threshold_for_sensitivity: target sensitivity must be in (0, 1], got {target}.')
    y, p = _as_arrays(y_true, p_pos, 'threshold_for_sensitivity')
    _require_both_classes(y, 'threshold_for_sensitivity')
    _, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    first = int(np.argmax(tpr >= target - 1e-12))  # thresholds decrease, tpr increases; 1e-12 absorbs 0.7*10 != 7
    return float(thresholds[first])


# ---- bootstrap over patients -------------------------------------------------------------------------------------

def _weighted_metrics(y: np.ndarray, p: np.ndarray, threshold: float, w: np.ndarray) -> dict[str, np.ndarray]:
    """The CI_KEYS metrics for each row of sample weights ``w`` (n_resamples, n_samples), vectorised.

    A weight is how often a sample was drawn, so each row is one bootstrap resample.
    """
    pos, pred = y == 1, p >= threshold
    tp, fn = w @ (pos & pred), w @ (pos & ~pred)
    fp, tn = w @ (~pos & pred), w @ (~pos & ~pred)
    with np.errstate(invalid='ignore', divide='ignore'):
        sens, spec, prec = tp / (tp + fn), tn / (tn + fp), tp / (tp + fp)
        out = {
            'accuracy': (tp + tn) / (tp + tn + fp + fn),
            'balanced_accuracy': (sens + spec) / 2,
            'sensitivity': sens,
            'specificity': spec,
            'precision': prec,
            'f1': 2 * tp / (2 * tp + fp + fn),
        }
        # Weighted Mann-Whitney AUC (ties count one half), identical to roc_auc_score(sample_weight=w).
        order = np.argsort(p, kind='stable')
        p_sorted = p[order]
        starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])  # groups of tied scores
        w_pos = np.add.reduceat(w[:, order] * pos[order], starts, axis=1)
        w_neg = np.add.reduceat(w[:, order] * ~pos[order], starts, axis=1)
        neg_below = np.cumsum(w_neg, axis=1) - w_neg
        out['auc'] = (w_pos * (neg_below + 0.5 * w_neg)).sum(1) / (w_pos.sum(1) * w_neg.sum(1))
    return out


def _resample_counts(rng: np.random.Generator, y_pat: np.ndarray, n_boot: int) -> np.ndarray:
    """(n_boot, n_patients) draw counts, resampling patients with replacement within each class."""
    counts = np.zeros((n_boot, len(y_pat)))
    for cls in np.unique(y_pat):
        members = np.flatnonzero(y_pat == cls)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=n_boot)
    return counts


def _percentile_ci(values: np.ndarray, level: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def bootstrap_ci(patients: Sequence, y_true, p_pos, threshold: float, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, chunk: int = 200) -> dict[str, dict[str, list[float] | None]]:
    """Percentile bootstrap CIs of the slice- and patient-level metrics, resampling PATIENTS.

    Each resample draws patients with replacement within each class (the test set is a fixed number
    of AD and NC patients) and keeps all slices of a drawn patient, so slices of one patient are never
    treated as independent. The threshold is held fixed. Returns ``{'slice': {key: [lo, hi]}, 'patient': ...}``
    for ``CI_KEYS`` (``None`` where a metric is undefined in every resample).
    """
    if n_boot < 1:
        raise ValueError(f'bootstrap_ci: n_boot must be >= 1, got {n_boot}.')
    if not 0 < level < 1:
        raise ValueError(f'bootstrap_ci: level must be in (0, 1), got {level}.')
    y, p = _as_arrays(y_true, p_pos, 'bootstrap_ci')
    ids, y_pat, p_pat = patient_level(patients, y, p)
    slice_to_patient = np.searchsorted(ids, np.asarray(patients))
    rng = np.random.default_rng(seed)
    draws = {'slice': {k: [] for k in CI_KEYS}, 'patient': {k: [] for k in CI_KEYS}}
    for start in range(0, n_boot, chunk):  # chunks bound memory: (chunk, n_slices) weights
        counts = _resample_counts(rng, y_pat, min(chunk, n_boot - start))
        for level_name, values in (('patient', _weighted_metrics(y_pat, p_pat, threshold, counts)),
                                   ('slice', _weighted_metrics(y, p, threshold, counts[:, slice_to_patient]))):
            for k, v in values.items():
                draws[level_name][k].append(v)
    return {lvl: {k: _percentile_ci(np.concatenate(v), level) for k, v in per_key.items()}
            for lvl, per_key in draws.items()}
