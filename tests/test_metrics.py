"""adni_timm.metrics against scikit-learn on fixed arrays, plus the edge cases."""

import numpy as np
import pytest
from sklearn import metrics as skm

from adni_timm.metrics import (
    CI_KEYS,
    METRIC_KEYS,
    binary_metrics,
    bootstrap_ci,
    scan_level,
    slice_and_scan_metrics,
    threshold_for_sensitivity,
    weighted_metrics,
    youden_threshold,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.45, 0.9, 0.2, 0.55, 0.5])


def test_binary_metrics_match_sklearn():
    m = binary_metrics(Y, P, threshold=0.5)
    pred = (P >= 0.5).astype(int)
    assert list(m) == list(METRIC_KEYS)
    assert m['n'] == 10
    assert m['accuracy'] == pytest.approx(skm.accuracy_score(Y, pred))
    assert m['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(Y, pred))
    assert m['sensitivity'] == pytest.approx(skm.recall_score(Y, pred))
    assert m['specificity'] == pytest.approx(skm.recall_score(Y, pred, pos_label=0))
    assert m['precision'] == pytest.approx(skm.precision_score(Y, pred))
    assert m['f1'] == pytest.approx(skm.f1_score(Y, pred))
    assert m['auc'] == pytest.approx(skm.roc_auc_score(Y, P))
    # [[TN, FP], [FN, TP]]; 0.5 counts as AD (p >= threshold)
    assert m['confusion_matrix'] == [[3, 2], [2, 3]]
    assert all(type(m[k]) is float for k in CI_KEYS)  # plain floats: json.dump works


def test_threshold_moves_the_confusion_matrix():
    assert binary_metrics(Y, P, threshold=0.0)['confusion_matrix'] == [[0, 5], [0, 5]]
    assert binary_metrics(Y, P, threshold=0.95)['confusion_matrix'] == [[5, 0], [5, 0]]


def test_all_correct():
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert all(m[k] == 1.0 for k in CI_KEYS)
    assert m['confusion_matrix'] == [[2, 0], [0, 2]]


def test_single_class_gives_null_auc_with_warning():
    with pytest.warns(UserWarning, match='AUC is undefined'):
        m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m['auc'] is None
    assert m['specificity'] is None  # no NC sample: undefined, not 0
    assert m['sensitivity'] == pytest.approx(2 / 3)
    assert m['accuracy'] == pytest.approx(2 / 3)
    assert m['confusion_matrix'] == [[0, 0], [1, 2]]


def test_no_predicted_positive_gives_null_precision():
    m = binary_metrics([0, 1], [0.1, 0.2])
    assert m['precision'] is None and m['sensitivity'] == 0.0 and m['specificity'] == 1.0


@pytest.mark.parametrize(
    'y, p, match',
    [
        ([], [], 'no samples'),
        ([0, 1], [0.5], 'same length'),
        ([0, 2], [0.1, 0.9], '0 .* or 1'),
        ([0, 1], [-1.2, 3.0], 'probabilities'),
    ],
)
def test_bad_input_is_a_clear_error(y, p, match):
    with pytest.raises(ValueError, match=match):
        binary_metrics(y, p)


def test_scan_level_means_slices_per_scan():
    ids, y, p = scan_level(['b', 'a', 'b', 'a', 'c'], [1, 0, 1, 0, 0], [0.9, 0.2, 0.5, 0.4, 0.6])
    assert ids.tolist() == ['a', 'b', 'c']
    assert y.tolist() == [0, 1, 0]
    np.testing.assert_allclose(p, [0.3, 0.7, 0.6])


def test_scan_with_mixed_labels_is_an_error():
    with pytest.raises(ValueError, match=r"\['a'\].*different labels"):
        scan_level(['a', 'a', 'b'], [0, 1, 1], [0.1, 0.2, 0.3])


def test_slice_and_scan_metrics_use_one_threshold():
    pats = ['a', 'a', 'b', 'b', 'c', 'c']
    y = [0, 0, 1, 1, 1, 1]
    p = [0.1, 0.7, 0.6, 0.6, 0.2, 0.6]
    m = slice_and_scan_metrics(pats, y, p, threshold=0.5)
    assert m['slice']['confusion_matrix'] == [[1, 1], [1, 3]]
    assert m['scan']['n'] == 3
    # a: 0.4 -> NC, b: 0.6 -> AD, c: 0.4 missed
    assert m['scan']['confusion_matrix'] == [[1, 0], [1, 1]]


def test_youden_threshold_maximises_j():
    t = youden_threshold(Y, P)
    fpr, tpr, thr = skm.roc_curve(Y, P)
    best_j = np.max(tpr - fpr)
    m = binary_metrics(Y, P, t)
    assert m['sensitivity'] + m['specificity'] - 1 == pytest.approx(best_j)
    below, above = max(x for x in P if x < t), min(x for x in P if x >= t)
    assert t == pytest.approx((below + above) / 2)  # the middle of the gap, not its edge


def test_youden_on_separable_data_separates():
    t = youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9])
    assert (
        t == pytest.approx(0.45)
        and binary_metrics([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9], t)['accuracy'] == 1.0
    )


@pytest.mark.parametrize(
    'target, edge, below',
    [(0.2, 0.9, 0.8), (0.4, 0.7, 0.55), (0.6, 0.55, 0.5), (0.8, 0.45, 0.4), (1.0, 0.2, 0.1)],
)
def test_threshold_for_sensitivity_is_the_highest_reaching_target_with_a_margin(
    target, edge, below
):
    # AD scores, descending: 0.9, 0.7, 0.55, 0.45, 0.2 (five AD samples). The highest threshold
    # reaching the target is the AD score ``edge``; every threshold down to the next lower score
    # ``below`` makes the same decisions, and the middle of that gap is returned (not the edge,
    # which would call a new slice scoring a hair under ``edge`` negative)
    t = threshold_for_sensitivity(Y, P, target)
    assert t == pytest.approx((edge + below) / 2)
    assert (
        binary_metrics(Y, P, t)['confusion_matrix']
        == binary_metrics(Y, P, edge)['confusion_matrix']
    )
    assert binary_metrics(Y, P, t)['sensitivity'] >= target
    assert binary_metrics(Y, P, np.nextafter(edge, 1))['sensitivity'] < target


def test_threshold_for_sensitivity_on_separated_validation_sits_in_the_middle_of_the_gap():
    # perfectly separated: the old rule returned the lowest AD score itself (0.773)
    y, p = [0, 0, 0, 1, 1, 1], [0.05, 0.1, 0.2, 0.773, 0.8, 0.95]
    assert threshold_for_sensitivity(y, p, 1.0) == pytest.approx((0.2 + 0.773) / 2)


def test_threshold_for_sensitivity_tolerates_float_rounding():
    y = np.r_[np.ones(10, int), np.zeros(3, int)]
    p = np.r_[np.linspace(0.95, 0.5, 10), [0.1, 0.2, 0.3]]
    # 0.7 * 10 = 7.000000000000001: must still need only 7 of the 10 AD samples
    assert threshold_for_sensitivity(y, p, 0.7) == pytest.approx((p[6] + p[7]) / 2)


def test_threshold_choice_needs_both_classes_and_a_valid_target():
    with pytest.raises(ValueError, match='both AD and non-AD'):
        youden_threshold([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        threshold_for_sensitivity(Y, P, 0.0)


def _toy_scans(n_scans=40, slices=5, seed=0):
    rng = np.random.default_rng(seed)
    y_pat = np.arange(n_scans) % 2
    pats = np.repeat([f'p{i:03d}' for i in range(n_scans)], slices)
    y = np.repeat(y_pat, slices)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.3), 0, 1)
    return pats, y, p


def test_bootstrap_ci_contains_point_estimate_and_is_deterministic():
    pats, y, p = _toy_scans()
    ci = bootstrap_ci(pats, y, p, 0.5, n_boot=300, seed=1)
    point = slice_and_scan_metrics(pats, y, p, 0.5)
    for level in ('slice', 'scan'):
        assert set(ci[level]) == set(CI_KEYS)
        for key, (lo, hi) in ci[level].items():
            assert lo <= point[level][key] <= hi, (level, key)
            assert lo < hi
    assert ci == bootstrap_ci(pats, y, p, 0.5, n_boot=300, seed=1)
    assert ci != bootstrap_ci(pats, y, p, 0.5, n_boot=300, seed=2)


def test_bootstrap_resamples_scans_not_slices():
    # every slice of a scan gets the same prediction: resampling scans gives a wider slice CI
    # than treating slices as independent would; here 10 scans x 50 slices behave like 10 samples
    pats = np.repeat(np.arange(10), 50)
    y = np.repeat(np.arange(10) % 2, 50)
    p = np.repeat([0.2, 0.8, 0.6, 0.3, 0.1, 0.9, 0.7, 0.4, 0.2, 0.6], 50)
    ci = bootstrap_ci(pats, y, p, 0.5, n_boot=500)
    assert ci['slice']['accuracy'] == pytest.approx(ci['scan']['accuracy'])
    assert ci['slice']['accuracy'][1] - ci['slice']['accuracy'][0] > 0.2


def test_weighted_metrics_equal_sklearn_with_sample_weight():
    pats, y, p = _toy_scans(seed=3)
    w = np.random.default_rng(0).integers(0, 3, size=(2, len(y))).astype(float)
    # rounding makes ties: AUC counts them one half
    out = weighted_metrics(y, np.round(p, 1), 0.5, w)
    for row in range(2):
        pred = np.round(p, 1) >= 0.5
        assert out['auc'][row] == pytest.approx(
            skm.roc_auc_score(y, np.round(p, 1), sample_weight=w[row])
        )
        assert out['accuracy'][row] == pytest.approx(
            skm.accuracy_score(y, pred, sample_weight=w[row])
        )
        assert out['f1'][row] == pytest.approx(skm.f1_score(y, pred, sample_weight=w[row]))
        assert out['balanced_accuracy'][row] == pytest.approx(
            skm.balanced_accuracy_score(y, pred, sample_weight=w[row])
        )


def test_a_degenerate_bootstrap_gives_the_exact_interval_for_proportions():
    # 32 of 32 scans right: every resample agrees, and a [1, 1] interval would claim certainty
    pats = np.repeat([f'p{i:02d}' for i in range(32)], 3)
    y = np.repeat(np.arange(32) % 2, 3)
    p = np.where(y == 1, 0.9, 0.1)
    ci = bootstrap_ci(pats, y, p, 0.5, n_boot=200)
    for level in ('scan', 'slice'):  # slices of one scan are not independent: scans count
        assert ci[level]['accuracy'][0] == pytest.approx(0.025 ** (1 / 32), abs=1e-9)  # 0.891
        assert ci[level]['accuracy'][1] == 1.0
        assert ci[level]['sensitivity'][0] == pytest.approx(0.025 ** (1 / 16), abs=1e-9)
    assert ci['scan']['accuracy'][0] == pytest.approx(0.891, abs=5e-4)
    # an ordinary bootstrap interval is kept as it is
    pats, y, p = _toy_scans()
    assert bootstrap_ci(pats, y, p, 0.5, n_boot=300, seed=1)['scan']['accuracy'][1] < 1.0
