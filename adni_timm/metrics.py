"""Binary AD-vs-rest metrics at slice and scan level; pure functions over numpy arrays.

``y_true`` is 1 for the positive class (AD) and 0 otherwise; ``p_pos`` is the
predicted probability of AD. A sample is called positive when ``p_pos >= threshold``
(the same rule as scikit-learn's ``roc_curve``, so thresholds taken from it are exact).
A scan's probability is the mean over its slices.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    'METRIC_KEYS',
    'CI_KEYS',
    'binary_metrics',
    'scan_level',
    'slice_and_scan_metrics',
    'youden_threshold',
    'threshold_for_sensitivity',
    'bootstrap_ci',
    'clopper_pearson',
    'weighted_metrics',
    'resample_scan_counts',
    'reliability_curve',
    'expected_calibration_error',
    'calibration_report',
    'TEMPERATURE_BOUNDS',
    'fit_temperature',
    'apply_temperature',
    'operating_point',
]

METRIC_KEYS = (
    'n',
    'accuracy',
    'balanced_accuracy',
    'sensitivity',
    'specificity',
    'precision',
    'f1',
    'auc',
    'confusion_matrix',
)
CI_KEYS = ('accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'precision', 'f1', 'auc')


def _as_arrays(y_true, p_pos, what: str = 'metrics') -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(p_pos, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(
            f'{what}: y_true and p_pos must be 1-D arrays of the same length, '
            f'got shapes {y.shape} and {p.shape}.'
        )
    if len(y) == 0:
        raise ValueError(
            f'{what}: no samples (empty y_true). Check that '
            f'the data folder holds images of every class.'
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError(
            f'{what}: y_true must hold 0 (negative, e.g. NC) or 1 (positive, AD), '
            f'got values {sorted(set(np.unique(y).tolist()))}.'
        )
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError(
            f'{what}: p_pos must be probabilities in [0, 1] (softmax outputs), not logits.'
        )
    return y.astype(np.int64), p


def _none_if_nan(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def binary_metrics(y_true, p_pos, threshold: float = 0.5) -> dict:
    """Accuracy, balanced accuracy, sensitivity, specificity,
    precision, F1, AUC and the confusion matrix.

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
        warnings.warn(
            f'AUC is undefined: y_true holds only class '
            f'{int(y[0])} ({len(y)} samples); reporting null.',
            UserWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        # a single class in y_true is reported as null values above, not as sklearn warnings
        warnings.simplefilter('ignore')
        return {
            'n': int(len(y)),
            'accuracy': float(accuracy_score(y, pred)),
            # recall of the one class if single
            'balanced_accuracy': float(balanced_accuracy_score(y, pred)),
            'sensitivity': _none_if_nan(recall_score(y, pred, pos_label=1, zero_division=np.nan)),
            'specificity': _none_if_nan(recall_score(y, pred, pos_label=0, zero_division=np.nan)),
            'precision': _none_if_nan(precision_score(y, pred, pos_label=1, zero_division=np.nan)),
            'f1': _none_if_nan(f1_score(y, pred, pos_label=1, zero_division=np.nan)),
            'auc': auc,
            'confusion_matrix': confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        }


def scan_level(scans: Sequence, y_true, p_pos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate slices to scans: ``(ids, y, mean p_pos)``, ids sorted.

    Raises ``ValueError`` when a scan's slices carry
    different labels (a scan is one diagnosis).
    """
    y, p = _as_arrays(y_true, p_pos, 'scan_level')
    scans = np.asarray(scans)
    if len(scans) != len(y):
        raise ValueError(f'scan_level: {len(scans)} scan ids for {len(y)} slices.')
    ids, inverse, counts = np.unique(scans, return_inverse=True, return_counts=True)
    n_pos = np.bincount(inverse, weights=y, minlength=len(ids))
    mixed = (n_pos > 0) & (n_pos < counts)
    if mixed.any():
        raise ValueError(
            f'scan_level: scans {ids[mixed][:5].tolist()} have slices with different labels; '
            f'each scan must sit in one class folder only.'
        )
    mean_p = np.bincount(inverse, weights=p, minlength=len(ids)) / counts
    return ids, (n_pos > 0).astype(np.int64), mean_p


def slice_and_scan_metrics(scans: Sequence, y_true, p_pos, threshold: float = 0.5) -> dict:
    """``{'slice': binary_metrics(...), 'scan': binary_metrics(...)}`` at the same threshold."""
    _, y_pat, p_pat = scan_level(scans, y_true, p_pos)
    return {
        'slice': binary_metrics(y_true, p_pos, threshold),
        'scan': binary_metrics(y_pat, p_pat, threshold),
    }


def _require_both_classes(y: np.ndarray, what: str) -> None:
    if len(np.unique(y)) != 2:
        raise ValueError(
            f'{what}: choosing a threshold needs both AD and non-AD samples; '
            f'the validation set holds only class {int(y[0])}.'
        )


def youden_threshold(y_true, p_pos) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1.

    Every threshold in the gap between the best observed score and the next lower one
    gives the same J on validation; we return the middle of that gap, not its edge, so
    that a well-separated validation set does not yield a brittle threshold like 0.99999.
    Choose it on validation scans, never on the split you report.
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

    Highest keeps specificity as high as the sensitivity target allows; within the gap between
    that score and the next lower one, the middle is returned (see ``youden_threshold``).
    """
    if not 0 < target <= 1:
        raise ValueError(
            f'threshold_for_sensitivity: target sensitivity must be in (0, 1], got {target}.'
        )
    y, p = _as_arrays(y_true, p_pos, 'threshold_for_sensitivity')
    _require_both_classes(y, 'threshold_for_sensitivity')
    _, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # thresholds decrease, tpr increases; 1e-12 absorbs 0.7*10 != 7
    first = int(np.argmax(tpr >= target - 1e-12))
    # as youden_threshold: the middle of the gap down to the next lower score, not its edge, which
    # keeps every decision on this set and leaves a margin on both sides
    if first + 1 < len(thresholds):
        return float((thresholds[first] + thresholds[first + 1]) / 2)
    return float(thresholds[first])


# ---- bootstrap over scans ---------------------------------------------------------------------


def weighted_metrics(y, p, threshold: float, weights) -> dict[str, np.ndarray]:
    """The ``CI_KEYS`` metrics for each row of sample ``weights`` ``(n_resamples, n_samples)``.

    A weight is how often a sample was drawn, so each row is one bootstrap resample (e.g. from
    :func:`resample_scan_counts`); a row of ones gives the plain metrics (the AUC equals
    ``roc_auc_score``). Vectorised over the rows; ``adni_timm.cv.compare`` scores two runs on the
    same resamples with it.
    """
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
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
        # Weighted Mann-Whitney AUC (ties count one half), identical to
        # roc_auc_score(sample_weight=w).
        order = np.argsort(p, kind='stable')
        p_sorted = p[order]
        starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])  # groups of tied scores
        w_pos = np.add.reduceat(w[:, order] * pos[order], starts, axis=1)
        w_neg = np.add.reduceat(w[:, order] * ~pos[order], starts, axis=1)
        neg_below = np.cumsum(w_neg, axis=1) - w_neg
        out['auc'] = (w_pos * (neg_below + 0.5 * w_neg)).sum(1) / (w_pos.sum(1) * w_neg.sum(1))
    return out


def resample_scan_counts(rng: np.random.Generator, y_pat, n_boot: int) -> np.ndarray:
    """``(n_boot, n_scans)`` draw counts, scans resampled with replacement within class."""
    y_pat = np.asarray(y_pat)
    counts = np.zeros((n_boot, len(y_pat)))
    for cls in np.unique(y_pat):
        members = np.flatnonzero(y_pat == cls)
        counts[:, members] = rng.multinomial(
            len(members), np.full(len(members), 1 / len(members)), size=n_boot
        )
    return counts


def _percentile_ci(values: np.ndarray, level: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def bootstrap_ci(
    scans: Sequence,
    y_true,
    p_pos,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 200,
) -> dict[str, dict[str, list[float] | None]]:
    """Percentile bootstrap CIs of the slice- and scan-level metrics, resampling SCANS.

    Each resample draws scans with replacement within each class (the test set is a fixed number
    of AD and NC scans) and keeps all slices of a drawn scan, so slices of one scan are
    never treated as independent. The threshold is held fixed. Returns ``{'slice': {key: [lo, hi]},
    'scan': ...}`` for ``CI_KEYS`` (``None`` where a metric is undefined in every resample).

    When every resample gives the same value (32 of 32 scans right: the bootstrap says
    ``[1, 1]``), a proportion (accuracy, sensitivity, specificity, precision) gets the exact
    Clopper-Pearson interval instead, counted in scans at both levels (slices of one scan
    are not independent): 32/32 -> [0.891, 1].
    """
    if n_boot < 1:
        raise ValueError(f'bootstrap_ci: n_boot must be >= 1, got {n_boot}.')
    if not 0 < level < 1:
        raise ValueError(f'bootstrap_ci: level must be in (0, 1), got {level}.')
    y, p = _as_arrays(y_true, p_pos, 'bootstrap_ci')
    ids, y_pat, p_pat = scan_level(scans, y, p)
    slice_to_scan = np.searchsorted(ids, np.asarray(scans))
    rng = np.random.default_rng(seed)
    draws = {'slice': {k: [] for k in CI_KEYS}, 'scan': {k: [] for k in CI_KEYS}}
    for start in range(0, n_boot, chunk):  # chunks bound memory: (chunk, n_slices) weights
        counts = resample_scan_counts(rng, y_pat, min(chunk, n_boot - start))
        for level_name, values in (
            ('scan', weighted_metrics(y_pat, p_pat, threshold, counts)),
            ('slice', weighted_metrics(y, p, threshold, counts[:, slice_to_scan])),
        ):
            for k, v in values.items():
                draws[level_name][k].append(v)
    cis = {
        lvl: {k: _percentile_ci(np.concatenate(v), level) for k, v in per_key.items()}
        for lvl, per_key in draws.items()
    }
    point = {
        'scan': binary_metrics_quiet(y_pat, p_pat, threshold),
        'slice': binary_metrics_quiet(y, p, threshold),
    }
    pred_pat = p_pat >= threshold
    scans_behind = {  # the scans each proportion is counted over
        'accuracy': len(y_pat),
        'sensitivity': int((y_pat == 1).sum()),
        'specificity': int((y_pat == 0).sum()),
        'precision': int(pred_pat.sum()),
    }
    for lvl in cis:
        for key, n in scans_behind.items():
            ci, value = cis[lvl].get(key), point[lvl].get(key)
            if ci is not None and value is not None and n > 0 and ci[0] == ci[1]:
                cis[lvl][key] = clopper_pearson(value * n, n, level)
    return cis


def clopper_pearson(successes: float, n: int, level: float = 0.95) -> list[float]:
    """The exact binomial interval of ``successes`` out of ``n`` (beta quantiles)."""
    from scipy.stats import beta

    alpha = 1 - level
    lo = 0.0 if successes <= 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes >= n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return [lo, hi]


def binary_metrics_quiet(y_true, p_pos, threshold: float) -> dict:
    """``binary_metrics`` without the single-class AUC warning (a resample may hold one class)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return binary_metrics(y_true, p_pos, threshold)


# ---- calibration -------------------------------------------------------------------------------

# Temperatures outside this range mean the fit ran away (e.g. perfectly separated validation data).
TEMPERATURE_BOUNDS = (1e-2, 1e2)
_LOG_FLOOR = float(np.log(np.finfo(np.float64).tiny))  # log(0) -> finite, so the NLL stays finite


def reliability_curve(y_true, p_pos, n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean predicted P(AD), observed AD frequency, count)`` of each NON-EMPTY probability bin.

    Bins are ``n_bins`` equal-width intervals of [0, 1], closed on the right, ``(lo, hi]``, with
    ``p = 0`` in the first bin (the same binning as ``sklearn.calibration.calibration_curve``).
    A calibrated model lies on the diagonal: of the slices given P(AD) ~ 0.7, about 70% are AD.
    """
    y, p = _as_arrays(y_true, p_pos, 'reliability_curve')
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f'reliability_curve: n_bins must be a positive integer, got {n_bins}.')
    n_bins = int(n_bins)
    inner_edges = np.linspace(0, 1, n_bins + 1)[1:-1]
    bin_of = np.searchsorted(inner_edges, p, side='left')  # number of inner edges below p: (lo, hi]
    count = np.bincount(bin_of, minlength=n_bins)
    sum_p = np.bincount(bin_of, weights=p, minlength=n_bins)
    sum_y = np.bincount(bin_of, weights=y, minlength=n_bins)
    used = count > 0
    return sum_p[used] / count[used], sum_y[used] / count[used], count[used]


def expected_calibration_error(y_true, p_pos, n_bins: int = 15) -> float:
    """Binary expected calibration error of P(AD), equal-width bins weighted by their counts.

    ``ECE = sum_b (n_b / N) * |mean(p_pos in b) - mean(y_true in b)|`` over the bins of
    :func:`reliability_curve`. This is the ECE of the positive-class probability, not the
    "top-label" ECE of Guo et al. (2017), which bins max(p, 1 - p) against accuracy; the two
    differ a little in binary problems. 0 is perfect; it depends on ``n_bins`` (report it).
    """
    mean_p, observed, count = reliability_curve(y_true, p_pos, n_bins)
    return float(np.sum(count * np.abs(mean_p - observed)) / np.sum(count))


def calibration_report(scans: Sequence, y_true, p_pos, n_bins: int = 15) -> dict[str, float]:
    """``{'ece_slice', 'ece_scan'}``; a scan's probability is the mean over its slices."""
    _, y_pat, p_pat = scan_level(scans, y_true, p_pos)
    return {
        'ece_slice': expected_calibration_error(y_true, p_pos, n_bins),
        'ece_scan': expected_calibration_error(y_pat, p_pat, n_bins),
    }


def _as_log_probs(log_probs, labels) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] < 2 or y.ndim != 1 or len(y) != len(z) or len(z) == 0:
        raise ValueError(
            f'fit_temperature: log_probs must be [N, C] with C >= 2 and labels [N], '
            f'N > 0; got shapes {z.shape} and {y.shape}.'
        )
    if np.isnan(z).any() or np.isposinf(z).any():
        raise ValueError(
            'fit_temperature: log_probs hold NaN or +inf; pass log-softmax outputs or logits.'
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f'fit_temperature: labels must be class indices in [0, {z.shape[1] - 1}].')
    return np.maximum(z, _LOG_FLOOR), y


def _mean_nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    scaled = z / temperature
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))


def fit_temperature(log_probs, labels) -> float:
    """The temperature ``T > 0`` minimising the mean NLL of ``softmax(log_probs / T)``.

    Temperature scaling (Guo et al. 2017): one scalar for all classes, fitted after training.

    ``log_probs`` is ``[N, C]``: log of the softmax outputs (logits work too: they differ from
    log-softmax by a per-row constant, which softmax ignores). ``labels`` are class indices.
    Fit it on validation (or out-of-fold) slices, never on the split you report. ``T > 1``
    softens an over-confident model; the ranking of P(AD), hence AUC, does not change.

    The NLL is convex in ``1 / T``, so it has one minimum; bounded Brent search on ``log T``
    finds it deterministically. The result is clipped to ``TEMPERATURE_BOUNDS`` with a warning
    (e.g. when validation is perfectly separated and the NLL keeps falling as ``T -> 0``).
    """
    z, y = _as_log_probs(log_probs, labels)
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: _mean_nll(z, y, np.exp(log_t)),
        bounds=(lo, hi),
        method='bounded',
        options={'xatol': 1e-7},
    )
    for bound in (lo, hi):
        # No interior optimum: the NLL keeps falling towards a bound, or is flat there (it
        # underflows to 0 when validation is perfectly separated and T is small).
        if _mean_nll(z, y, np.exp(bound)) <= result.fun + 1e-12 * max(1.0, abs(result.fun)):
            warnings.warn(
                f'fit_temperature: the best temperature is at the bound '
                f'{np.exp(bound):.3g} of {TEMPERATURE_BOUNDS}; the validation '
                f'predictions give no finite optimum (perfectly separated, or too few '
                f'samples).',
                UserWarning,
                stacklevel=2,
            )
            return float(np.exp(bound))
    return float(np.exp(result.x))


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities ``softmax(log(probs) / T)``; rows sum to 1.

    ``probs`` is ``[N, C]`` softmax outputs, or 1-D P(AD) of a binary model (then 1-D P(AD) is
    returned). ``T = 1`` returns the input values unchanged. Zeros are floored before the log,
    so the result is finite for any input in [0, 1].
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f'apply_temperature: temperature must be a positive number, got {temperature}.'
        )
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim not in (1, 2) or (p.ndim == 2 and p.shape[1] < 2):
        raise ValueError(
            f'apply_temperature: probs must be [N, C] (C >= 2) or 1-D P(AD), got shape {p.shape}.'
        )
    if not np.isfinite(p).all() or (p.size and (p.min() < 0 or p.max() > 1)):
        raise ValueError(
            'apply_temperature: probs must be probabilities in [0, 1] '
            '(softmax outputs), not logits.'
        )
    if temperature == 1:
        return p
    rows = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
    scaled = softmax(np.log(np.maximum(rows, np.finfo(np.float64).tiny)) / temperature, axis=1)
    return scaled[:, 1] if p.ndim == 1 else scaled


# ---- the operating point -------------------------------------------------------------------------


def operating_point(
    probs,
    labels,
    scans: Sequence,
    positive: int,
    target_sensitivity: float | None = None,
    temperature: float | None = None,
) -> dict:
    """Temperature, then threshold, chosen on one labelled
    set (validation, or out-of-fold predictions).

    ``probs`` ``[N, C]`` softmax outputs, ``labels`` class indices, ``positive`` the index of AD.
    The temperature is fitted on the slices (``temperature`` given: used as it is); when the fit has
    no finite optimum (perfectly separated validation data) the probabilities stay uncalibrated (T =
    1), rather than being pushed to 0 / 1. The threshold is chosen on the calibrated scan
    probabilities: Youden's J, or the highest reaching ``target_sensitivity``; 0.5 when the set
    holds one class only. Returns ``{'temperature', 'threshold', 'threshold_rule', 'p_pos'}``
    (``p_pos``: calibrated P(AD)).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if temperature is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            temperature = fit_temperature(
                np.log(np.maximum(probs, np.finfo(np.float64).tiny)), labels
            )
        if any('bound' in str(w.message) for w in caught):
            temperature = 1.0
    p_pos = apply_temperature(probs, temperature)[:, positive]
    y = (labels == positive).astype(np.int64)
    _, y_pat, p_pat = scan_level(scans, y, p_pos)
    if len(np.unique(y_pat)) < 2:
        threshold, rule = 0.5, 'fixed (one class only)'
    elif target_sensitivity is not None:
        threshold, rule = (
            threshold_for_sensitivity(y_pat, p_pat, target_sensitivity),
            f'sensitivity >= {target_sensitivity}',
        )
    else:
        threshold, rule = youden_threshold(y_pat, p_pat), 'youden'
    return {
        'temperature': float(temperature),
        'threshold': float(threshold),
        'threshold_rule': rule,
        'p_pos': p_pos,
    }
