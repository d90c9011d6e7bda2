"""The slice-window shortcut (adni_timm.data.shortcut): how well slice numbers alone give the
class, in the check report and in evaluation's metrics.json."""

import json

import numpy as np
import pytest

from adni_timm.data import shortcut
from adni_timm.data.slices import Slice
from adni_timm.synthetic.slices import generate


def _scans(n_per_class: int, windows_give_class: bool, seed: int, slices: int = 20):
    """Slice records (no images needed: the baseline reads names only)."""
    rng = np.random.default_rng(seed)
    out = []
    for label in (0, 1):
        for i in range(n_per_class):
            if windows_give_class:
                first = 67 + 12 * label + int(rng.integers(0, 3))
            else:
                first = 67 + 3 * int(rng.integers(0, 9))
            scan = f'{seed}{label}{i:04d}'
            out += [
                Slice(f'{scan}_{first + k}.jpeg', scan, label, first + k) for k in range(slices)
            ]
    return out


def test_baseline_is_perfect_when_windows_give_the_class_and_chance_when_not():
    train, test = _scans(60, True, 1), _scans(60, True, 2)
    base = shortcut.slice_number_baseline(shortcut.scan_windows(train), shortcut.scan_windows(test))
    assert base.accuracy == 1.0 and base.method == 'train -> test' and base.n_scans == 120
    assert base.majority_accuracy == 0.5
    # every window holds both classes alike: chance (many scans, or the nine windows' luck shows)
    train, test = _scans(1000, False, 3, slices=2), _scans(1000, False, 4, slices=2)
    base = shortcut.slice_number_baseline(shortcut.scan_windows(train), shortcut.scan_windows(test))
    assert 0.4 <= base.accuracy <= 0.6
    assert 'slice-number baseline: ' in base.sentence()
    # no test split: cross-validated over the scans
    cv = shortcut.slice_number_baseline(shortcut.scan_windows(_scans(30, True, 5)))
    assert cv.accuracy == 1.0 and cv.method == '5-fold cross-validation'
    cv = shortcut.slice_number_baseline(shortcut.scan_windows(_scans(1000, False, 6, slices=2)))
    assert 0.4 <= cv.accuracy <= 0.6


def test_baseline_without_slice_numbers_or_classes_says_why():
    lone = [Slice('a.jpeg', 'a', 0, None), Slice('b.jpeg', 'b', 1, None)]
    base = shortcut.slice_number_baseline(shortcut.scan_windows(lone))
    assert base.accuracy is None and 'not measured' in base.sentence()
    one_class = shortcut.scan_windows([s for s in _scans(10, True, 7) if s.label == 0])
    assert shortcut.slice_number_baseline(one_class, one_class).accuracy is None


def test_accuracy_per_window_and_clearly_above():
    windows = shortcut.scan_windows(_scans(3, True, 8, slices=4))
    correct = {scan: i % 2 == 0 for i, scan in enumerate(windows.scans)}
    rows = shortcut.accuracy_per_window(windows, correct)
    assert sum(r['n_scans'] for r in rows) == 6
    assert sum(r['accuracy'] * r['n_scans'] for r in rows) == pytest.approx(3)
    assert [r['window'] for r in rows] == sorted(
        {r['window'] for r in rows}, key=lambda w: int(w[:2])
    )
    assert not shortcut.clearly_above(0.70, None, 0.68)
    assert shortcut.clearly_above(0.90, None, 0.68)
    assert not shortcut.clearly_above(0.90, [0.65, 0.95], 0.68)  # the CI reaches below it
    assert shortcut.clearly_above(0.50, None, None)


@pytest.mark.parametrize('class_windows, expected', [(True, '100.0%'), (False, None)])
def test_check_prints_windows_and_the_baseline(tmp_path, capsys, class_windows, expected):
    from adni_timm.cli.check import main

    root = generate(tmp_path / 'AD_NC', 6, 6, slices=2, seed=0, class_windows=class_windows)
    code = main([str(root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'slice windows' in out
    line = next(line for line in out.splitlines() if line.startswith('slice-number baseline: '))
    if expected:
        assert line.startswith(f'slice-number baseline: {expected}')
    else:
        value = float(line.split()[2].rstrip('%'))
        assert 20 <= value <= 80


def test_metrics_json_holds_the_shortcut(tiny_run, tiny_data, tmp_path, capsys):
    from adni_timm.cli.evaluate import main

    run, _ = tiny_run
    out = tmp_path / 'ev'
    code = main(['--model', str(run), '--data-dir', str(tiny_data), '--output-dir', str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    cut = metrics['shortcut']
    assert 0 <= cut['slice_number_accuracy'] <= 1
    assert cut['method'] == 'train -> test'
    level = metrics['scan']
    assert cut['scan_accuracy'] == level['accuracy']
    assert sum(r['n_scans'] for r in cut['per_window']) == level['n']
    # clearly above: the lower end of the scan accuracy's 95% CI above the baseline
    assert cut['clearly_above'] == (level['accuracy_ci'][0] > cut['slice_number_accuracy'])
    assert 'slice-number baseline' in printed
    assert ('WARNING: the model is not clearly above' in printed) != cut['clearly_above']
    assert 'scan accuracy per slice window: ' in printed
