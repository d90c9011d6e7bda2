"""adni_timm.cv.summary and cv_compare: out-of-fold predictions, cross-fitted metrics, summaries,
comparing runs. (Folds: tests/test_splits.py.)"""

import json
import statistics

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from adni_timm.cv.summary import (
    OOF_COLUMNS,
    CVError,
    assemble_oof,
    cross_fitted,
    cv_summary,
    format_cv_table,
    read_oof_csv,
    write_oof_csv,
)
from adni_timm.cli.cv import main
from adni_timm.cv.compare import compare, format_comparison, paired_bootstrap_difference
from adni_timm.metrics import resample_scan_counts, slice_and_scan_metrics, youden_threshold
from helpers import run_module
from adni_timm.data.splits import make_folds

# 23 AD and 27 NC scans; ids of mixed widths so that sorting is by string, not insertion order
LABELS = {f'P{i}': int(i % 2 == 0 and i < 46) for i in range(50)}


def _fold_columns(folds, slices_per_scan=3, seed=0):
    """Each fold's validation slices as assemble_oof takes them, with random P(AD)."""
    rng = np.random.default_rng(seed)
    per_fold = []
    for fold in folds:
        rows = [
            (f'{"AD" if LABELS[p] else "NC"}/{p}_{s}.jpeg', p, LABELS[p])
            for p in fold
            for s in range(slices_per_scan)
        ]
        per_fold.append(
            {
                'path': [r[0] for r in rows],
                'scan': [r[1] for r in rows],
                'label': [r[2] for r in rows],
                'p_AD': rng.uniform(size=len(rows)).tolist(),
            }
        )
    return per_fold


def test_oof_covers_every_slice_once_and_round_trips(tmp_path):
    folds = make_folds(LABELS, k=4, seed=0)
    per_fold = _fold_columns(folds)
    all_paths = [path for columns in per_fold for path in columns['path']]
    rows = assemble_oof(per_fold, expected_paths=all_paths)
    assert sorted(r['path'] for r in rows) == sorted(all_paths) and len(rows) == 150
    assert all(r['scan'] in folds[r['fold']] for r in rows)
    path = write_oof_csv(tmp_path / 'oof_predictions.csv', rows)
    assert path.read_text().splitlines()[0] == ','.join(OOF_COLUMNS)
    back = read_oof_csv(path)
    assert [{k: v for k, v in r.items() if k != 'p_AD'} for r in back] == [
        {k: v for k, v in r.items() if k != 'p_AD'} for r in rows
    ]
    # every CSV holds probabilities at 8 significant digits, with LF line endings
    np.testing.assert_allclose([r['p_AD'] for r in back], [r['p_AD'] for r in rows], rtol=1e-7)
    assert b'\r' not in path.read_bytes()


def test_oof_refuses_duplicates_and_gaps():
    folds = make_folds(LABELS, k=4, seed=0)
    per_fold = _fold_columns(folds)
    twice = [dict(per_fold[0]), per_fold[1]]
    twice[0] = {key: values + [per_fold[1][key][0]] for key, values in per_fold[0].items()}
    with pytest.raises(CVError, match='predicted twice'):
        assemble_oof(twice)
    moved = [dict(per_fold[0]), per_fold[1]]  # another slice of a fold-1 scan shows up in fold 0
    moved[0] = {
        key: values + [per_fold[1][key][0] if key != 'path' else 'elsewhere.jpeg']
        for key, values in per_fold[0].items()
    }
    with pytest.raises(CVError, match='in folds 1 and 0|in folds 0 and 1'):
        assemble_oof(moved)
    with pytest.raises(CVError, match='1 not predicted'):
        all_paths = [p for c in per_fold for p in c['path']]
        assemble_oof(per_fold, expected_paths=all_paths + ['missing.jpeg'])


def test_cross_fitted_metrics_score_each_fold_at_the_threshold_of_the_others():
    folds = make_folds(LABELS, k=3, seed=0)
    per_fold = _fold_columns(folds)
    scans = np.array([p for c in per_fold for p in c['scan']])
    y = np.array([lab for c in per_fold for lab in c['label']])
    p = np.array([x for c in per_fold for x in c['p_AD']])
    fold_of = np.array([k for k, c in enumerate(per_fold) for _ in c['path']])

    def choose(mask):
        from adni_timm.metrics import scan_level

        _, y_pat, p_pat = scan_level(scans[mask], y[mask], p[mask])
        return {'threshold': youden_threshold(y_pat, p_pat)}

    result = cross_fitted(scans, y, p, fold_of, choose, n_boot=200)
    for k, fold in enumerate(result['per_fold']):
        others = fold_of != k
        expected = choose(others)['threshold']
        assert fold['threshold'] == pytest.approx(expected)
        mine = fold_of == k
        direct = slice_and_scan_metrics(scans[mine], y[mine], p[mine], expected)
        assert fold['scan']['accuracy'] == pytest.approx(direct['scan']['accuracy'])
    # pooled: every scan decided at its own fold's threshold; AUC threshold-free
    pooled = result['pooled']
    decided = [result['per_fold'][k]['scan']['confusion_matrix'] for k in range(3)]
    assert pooled['scan']['confusion_matrix'] == np.sum(decided, axis=0).tolist()
    everyone = slice_and_scan_metrics(scans, y, p, 0.5)
    assert pooled['scan']['auc'] == pytest.approx(everyone['scan']['auc'])
    lo, hi = pooled['scan']['auc_ci']
    assert lo <= pooled['scan']['auc'] <= hi


def test_cv_summary_mean_sd_and_table():
    per_fold = [
        {
            'scan': {'n': 10, 'accuracy': acc, 'auc': auc, 'confusion_matrix': [[1, 0], [0, 1]]},
            'slice': {'accuracy': acc - 0.1, 'auc': None},
        }
        for acc, auc in ((0.7, 0.8), (0.8, None), (0.9, 0.9))
    ]
    summary = cv_summary(per_fold)
    acc = summary['scan']['accuracy']
    assert acc['per_fold'] == [0.7, 0.8, 0.9] and acc['mean'] == pytest.approx(0.8)
    assert acc['sd'] == pytest.approx(statistics.stdev([0.7, 0.8, 0.9]))  # sample sd, ddof=1
    assert summary['scan']['auc'] == {
        'per_fold': [0.8, None, 0.9],
        'mean': pytest.approx(0.85),
        'sd': pytest.approx(statistics.stdev([0.8, 0.9])),
        'n': 2,
    }
    assert summary['slice']['auc'] == {'per_fold': [None] * 3, 'mean': None, 'sd': None, 'n': 0}
    assert 'n' not in summary['scan'] and 'confusion_matrix' not in summary['scan']
    table = format_cv_table(summary)
    assert table.splitlines()[1].split() == [
        'accuracy',
        '0.800',
        '±',
        '0.100',
        '0.700',
        '±',
        '0.100',
    ]
    assert '0.850 ± 0.071 (2/3)' in table and 'n/a' in table and '3 folds' in table


# ---- comparing runs: hand-written run folders -------------------------------------------------


def _write_run(folder, p_of_scan, seed=0, k=4, threshold=0.5, slices=3):
    """A CV run folder as training writes it: cv.json and oof_predictions.csv."""
    folds = make_folds(LABELS, k=k, seed=seed)
    rng = np.random.default_rng(1)
    per_fold = []
    for columns in _fold_columns(folds, slices):
        columns['p_AD'] = [
            float(np.clip(p_of_scan(p) + rng.normal(0, 0.05), 0, 1)) for p in columns['scan']
        ]
        per_fold.append(columns)
    rows = assemble_oof(per_fold)
    rows = read_oof_csv(write_oof_csv(folder / 'oof_predictions.csv', rows))  # what compare reads
    metrics = [
        slice_and_scan_metrics(c['scan'], c['label'], c['p_AD'], threshold) for c in per_fold
    ]
    (folder / 'cv.json').write_text(
        json.dumps(
            {'k': k, 'seed': seed, 'folds': folds, 'threshold': threshold, 'per_fold': metrics}
        )
    )
    return rows


def _noise(scan):  # a fixed pseudo-random number in [0, 1) per scan
    return ((int(scan[1:]) * 7919) % 13) / 13


def _decent(scan):  # informative but noisy: scan AUC ~0.86
    return 0.15 + 0.2 * LABELS[scan] + 0.5 * _noise(scan)


def _better(scan):  # nearly separates the classes
    return 0.25 + 0.4 * LABELS[scan] + 0.1 * _noise(scan)


def test_compare_a_run_with_itself_is_zero(tmp_path):
    _write_run(tmp_path, _decent)
    result = compare(tmp_path, tmp_path, n_boot=500)
    assert result['valid'] and result['same_folds'] and result['problems'] == []
    for key in ('auc', 'accuracy'):
        assert result['paired'][key]['difference'] == 0
        lo, hi = result['paired'][key]['ci']
        assert lo <= 0 <= hi
    assert all(e['scan']['auc']['difference'] == 0 for e in result['per_fold'])
    text = format_comparison(result)
    assert 'INVALID' not in text and 'no clear difference' in text
    json.dumps(result)


def test_compare_paired_ci_matches_a_direct_computation(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    rows_a = _write_run(tmp_path / 'a', _decent, threshold=0.5)
    rows_b = _write_run(tmp_path / 'b', _better, threshold=0.45)
    n_boot, seed = 400, 7
    result = compare(tmp_path / 'a', tmp_path / 'b', n_boot=n_boot, seed=seed)

    # direct: scan means, the same resamples, sklearn's AUC with the draw counts as weights
    scans = sorted(LABELS)
    y = np.array([LABELS[p] for p in scans])
    mean_a = np.array([np.mean([r['p_AD'] for r in rows_a if r['scan'] == p]) for p in scans])
    mean_b = np.array([np.mean([r['p_AD'] for r in rows_b if r['scan'] == p]) for p in scans])
    counts = resample_scan_counts(np.random.default_rng(seed), y, n_boot)
    d_auc, d_acc = [], []
    for w in counts:
        d_auc.append(
            roc_auc_score(y, mean_b, sample_weight=w) - roc_auc_score(y, mean_a, sample_weight=w)
        )
        d_acc.append(
            np.average((mean_b >= 0.45) == y, weights=w)
            - np.average((mean_a >= 0.5) == y, weights=w)
        )
    paired = result['paired']
    assert paired['auc']['a'] == pytest.approx(roc_auc_score(y, mean_a))
    assert paired['auc']['difference'] == pytest.approx(
        roc_auc_score(y, mean_b) - roc_auc_score(y, mean_a)
    )
    np.testing.assert_allclose(
        paired['auc']['ci'], np.percentile(d_auc, [2.5, 97.5]), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(
        paired['accuracy']['ci'], np.percentile(d_acc, [2.5, 97.5]), rtol=1e-9, atol=1e-12
    )
    assert paired['auc']['ci'][0] > 0  # B is clearly better here
    assert 'B better' in format_comparison(result)
    # the function on plain arrays gives the same answer as compare() over the run folders
    direct = paired_bootstrap_difference(
        [r['scan'] for r in rows_a],
        [r['label'] for r in rows_a],
        [r['p_AD'] for r in rows_a],
        [r['p_AD'] for r in rows_b],
        0.5,
        0.45,
        n_boot=n_boot,
        seed=seed,
    )
    assert direct == paired


def test_compare_refuses_runs_on_different_folds(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    _write_run(tmp_path / 'a', _decent, seed=0)
    _write_run(tmp_path / 'b', _better, seed=1)
    with pytest.raises(CVError, match='INVALID comparison: the runs used different folds'):
        compare(tmp_path / 'a', tmp_path / 'b')
    result = compare(tmp_path / 'a', tmp_path / 'b', allow_different_folds=True, n_boot=200)
    assert not result['valid'] and result['per_fold'] == []
    assert format_comparison(result).startswith('INVALID COMPARISON: the runs used different folds')


def test_cli_compare_and_one_line_errors(tmp_path, capsys):
    (tmp_path / 'run').mkdir()
    (tmp_path / 'plain').mkdir()
    _write_run(tmp_path / 'run', _decent)
    assert (
        main(
            [
                'compare',
                str(tmp_path / 'run'),
                str(tmp_path / 'run'),
                '--n-boot',
                '100',
                '--json',
                str(tmp_path / 'out' / 'cmp.json'),
            ]
        )
        == 0
    )
    assert 'scan AUC' in capsys.readouterr().out
    assert json.loads((tmp_path / 'out' / 'cmp.json').read_text())['valid'] is True
    assert main(['summary', str(tmp_path / 'run')]) == 0
    assert '± ' in capsys.readouterr().out

    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'cv.json').write_text('{"k": 5}')
    for bad, message in (
        ('missing', 'not a folder'),
        ('plain', 'is not a cross-validation run'),
        ('broken', 'needs the keys'),
    ):
        assert main(['compare', str(tmp_path / bad), str(tmp_path / 'run')]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err and 'Traceback' not in err


@pytest.mark.slow
def test_cli_as_a_module_exits_2_without_traceback(tmp_path):
    done = run_module('adni_timm.cv', 'compare', tmp_path, tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().count('\n') == 0 and 'is not a cross-validation run' in done.stderr
    assert 'Traceback' not in done.stderr
