"""Calibration in adni_timm.metrics (ECE, reliability curve, temperature scaling) and its plot."""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from scipy.special import expit, log_softmax, softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from adni_timm.metrics import (
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from adni_timm.plots import plot_reliability

# Hand example, 2 bins (0, 0.5] and (0.5, 1]:
#   bin 1: p 0.1, 0.3, 0.5 -> mean 0.3, AD 1 of 3
#   bin 2: p 0.8, 0.9, 0.95 -> mean 0.88333, AD 2 of 3
#   ECE = (3 * |0.3 - 1/3| + 3 * |0.88333 - 2/3|) / 6 = (0.1 + 0.65) / 6 = 0.125
Y_HAND = np.array([0, 0, 1, 1, 1, 0])
P_HAND = np.array([0.1, 0.3, 0.5, 0.8, 0.9, 0.95])


def test_ece_equals_hand_computation():
    mean_p, observed, count = reliability_curve(Y_HAND, P_HAND, n_bins=2)
    np.testing.assert_allclose(mean_p, [0.3, 2.65 / 3])
    np.testing.assert_allclose(observed, [1 / 3, 2 / 3])
    assert count.tolist() == [3, 3]  # 0.5 sits in the first bin: bins are (lo, hi]
    assert expected_calibration_error(Y_HAND, P_HAND, n_bins=2) == pytest.approx(0.125)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0  # p = 0 and 1 fall in a bin


def test_reliability_curve_matches_sklearn_binning():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p).astype(int)
    mean_p, observed, count = reliability_curve(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy='uniform')
    np.testing.assert_allclose(mean_p, prob_pred)
    np.testing.assert_allclose(observed, prob_true)
    assert count.sum() == 500
    with pytest.raises(ValueError, match='n_bins'):
        reliability_curve(y, p, n_bins=0)


def test_calibration_report_uses_scan_means():
    scans = ['a', 'a', 'b', 'b', 'c', 'c']
    y = [1, 1, 0, 0, 1, 1]
    p = [0.9, 0.7, 0.4, 0.2, 0.6, 0.6]  # scan means: a 0.8, b 0.3, c 0.6
    report = calibration_report(scans, y, p, n_bins=5)
    ece_scan = expected_calibration_error([1, 0, 1], [0.8, 0.3, 0.6], 5)
    assert report == {
        'ece_slice': pytest.approx(expected_calibration_error(y, p, 5)),
        'ece_scan': pytest.approx(ece_scan),
    }
    assert report['ece_scan'] == pytest.approx((0.2 + 0.3 + 0.4) / 3)  # one scan per bin


def _calibrated_binary(n, seed):
    """Logits of a perfectly calibrated binary model and labels drawn from it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=n)
    return z, (rng.uniform(size=n) < expit(z)).astype(int)


def test_temperature_scaling_fixes_an_over_confident_model_and_keeps_auc():
    z, y = _calibrated_binary(8000, seed=1)
    logits = np.stack([np.zeros_like(z), 5 * z], axis=1)  # over-confident: logits x 5
    probs = softmax(logits, axis=1)
    fit, held_out = slice(0, 4000), slice(4000, None)  # fit on "validation", judge on the rest
    temperature = fit_temperature(np.log(probs[fit]), y[fit])
    assert temperature == pytest.approx(5, rel=0.1)
    calibrated = apply_temperature(probs[held_out], temperature)
    ece_before = expected_calibration_error(y[held_out], probs[held_out, 1])
    ece_after = expected_calibration_error(y[held_out], calibrated[:, 1])
    assert ece_before > 0.1 and ece_after < 0.03 and ece_after < ece_before / 4
    assert roc_auc_score(y[held_out], calibrated[:, 1]) == pytest.approx(
        roc_auc_score(y[held_out], probs[held_out, 1]), abs=1e-12
    )
    # 1-D P(AD) input is the binary special case of the same scaling
    np.testing.assert_allclose(apply_temperature(probs[held_out, 1], temperature), calibrated[:, 1])


@pytest.mark.parametrize('true_temperature', [2.5, 0.6])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(2)
    z = rng.normal(0, 1.5, size=(20000, 3))  # a calibrated 3-class model ...
    y = np.array([rng.choice(3, p=row) for row in softmax(z, axis=1)])
    model_logits = z * true_temperature  # ... made over- (2.5) or under-confident (0.6)
    log_probs = log_softmax(model_logits, axis=1)
    fitted = fit_temperature(log_probs, y)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert fit_temperature(model_logits, y) == pytest.approx(fitted, rel=1e-5)  # logits: same T
    assert fit_temperature(log_probs, y) == fitted  # deterministic


def test_apply_temperature_is_safe():
    probs = np.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    assert apply_temperature(probs, 1.0) is probs  # T = 1: the input, untouched
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no divide-by-zero from log(0)
        for t in (0.05, 0.5, 3.0, 100.0):
            out = apply_temperature(probs, t)
            assert np.isfinite(out).all()
            np.testing.assert_allclose(out.sum(axis=1), 1)
            np.testing.assert_allclose(out[2], [0.5, 0.5])
    np.testing.assert_allclose(apply_temperature([0.2, 0.8], 2.0), expit(np.log([0.25, 4.0]) / 2))
    for bad in (0, -1, np.nan):
        with pytest.raises(ValueError, match='temperature'):
            apply_temperature(probs, bad)
    with pytest.raises(ValueError, match='not logits'):
        apply_temperature([[2.0, -1.0]], 2.0)


def test_fit_temperature_refuses_bad_input_and_warns_at_the_bound():
    with pytest.raises(ValueError, match=r'\[N, C\]'):
        fit_temperature(np.log([0.2, 0.8]), [1])
    with pytest.raises(ValueError, match='class indices'):
        fit_temperature(np.log([[0.2, 0.8]]), [2])
    with pytest.warns(UserWarning, match='bound'):  # perfectly separated: the NLL falls as T -> 0
        fit_temperature(np.log([[0.9, 0.1], [0.2, 0.8]]), [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a log-probability of -inf (p = 0) still gives a finite fit
        log_probs = np.array([[0.0, -np.inf], *np.log([[0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])])
        assert 0.01 < fit_temperature(log_probs, [0, 1, 1, 1]) < 100


def test_reliability_plot_shows_both_levels_with_ece(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(
        plt,
        'close',
        lambda fig: drawn.append(
            [(ax.get_title(), [line.get_label() for line in ax.get_lines()]) for ax in fig.axes]
        ),
    )
    y_pat, p_pat = np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9])
    out = plot_reliability(
        Y_HAND, P_HAND, y_pat, p_pat, tmp_path / 'sub' / 'reliability.png', title='test'
    )
    with Image.open(out) as im:
        assert im.format == 'PNG' and im.size[0] > 400
    ece = expected_calibration_error(Y_HAND, P_HAND)
    # the reference diagonal is drawn over the model's points (it stays visible), so in any order
    assert [(title, sorted(labels)) for title, labels in drawn[0]] == [
        ('slices (n=6)', sorted(['perfectly calibrated', f'model (ECE {ece:.3f})'])),
        ('scans (n=3)', sorted(['perfectly calibrated', 'model (ECE 0.200)'])),
    ]

    calibrated = apply_temperature(P_HAND, 2.0)
    plot_reliability(
        Y_HAND,
        P_HAND,
        y_pat,
        p_pat,
        tmp_path / 'cal.png',
        p_slice_calibrated=calibrated,
        p_scan_calibrated=apply_temperature(p_pat, 2.0),
    )
    slice_labels = drawn[1][0][1]
    ece_calibrated = expected_calibration_error(Y_HAND, calibrated)
    assert f'uncalibrated (ECE {ece:.3f})' in slice_labels
    assert f'calibrated (ECE {ece_calibrated:.3f})' in slice_labels
    with pytest.raises(ValueError, match='probabilities'):
        plot_reliability(Y_HAND, P_HAND * 3, y_pat, p_pat, tmp_path / 'bad.png')
    assert not (tmp_path / 'bad.png').exists()
