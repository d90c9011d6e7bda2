"""train.py --folds K [--refit] end to end on tiny SYNTHETIC data: nested selection (no fold selects
on the scans it reports), out-of-fold predictions, cross-fitted thresholds, the ensemble's and
the refit's own operating points, publishing, resume, and the crashes issue 18 found."""

import json
import shutil
import statistics

import numpy as np
import pytest

from adni_timm import data, evaluation, inference, metrics
from adni_timm.cv import summary as cv
from adni_timm.export import format as export
from adni_timm.publish import hub
from adni_timm.train.cv import refit_epochs, refit_weights
from adni_timm.inference import load_model
from adni_timm.run import Run
from adni_timm.data.splits import make_folds, scan_labels
from helpers import TINY, cli_in_process, run_train, train_and_kill, with_option

# a 2-fold CV run with a refit: end to end, a minute of CPU
pytestmark = pytest.mark.slow

# 2 epochs per fold; 32 px: nothing here depends on the size, and a CV run trains three times
CV_ARGS = [*with_option(TINY, '--img-size', '32'), '--folds', '2']


@pytest.fixture(scope='module')
def cv_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp('cv') / 'run'
    proc = run_train(
        '--data-dir', tiny_data, '--output-dir', run, *CV_ARGS, '--refit', '--eval-test'
    )
    return run, proc


def _raw(ref, slices):
    return load_model(ref).predict_raw(slices)[0]


def test_no_fold_selects_on_the_scans_it_reports(cv_run, tiny_data):
    run, _ = cv_run
    result = json.loads((run / 'cv.json').read_text())
    train = data.scan_split(tiny_data, 'train')
    assert result['folds'] == make_folds(scan_labels(train), 2, 0)
    assert result['select'] == 'inner'
    for k, fold in enumerate(result['folds']):
        split = json.loads((run / f'fold{k}' / 'split.json').read_text())
        held_out, selection, trained = (
            set(split['held_out']),
            set(split['val']),
            set(split['train']),
        )
        assert split['held_out'] == fold and selection  # an inner validation split exists
        assert not held_out & selection and not held_out & trained and not trained & selection
        assert trained | selection == {s.scan for s in train} - held_out
        # the fold's kept epoch and temperature were chosen on its selection scans only
        history = [json.loads(x) for x in (run / f'fold{k}/metrics.jsonl').read_text().splitlines()]
        settings = export.read_export_settings(run / f'fold{k}' / 'best')
        row = history[settings.epoch - 1]
        prefix = 'val' if settings.weights == 'live' else 'ema_val'
        n_selection = sum(1 for s in train if s.scan in selection)
        assert row[f'{prefix}_slices'] == n_selection
        assert row[f'{prefix}_temperature'] == settings.temperature


def test_every_training_slice_is_predicted_once_by_the_fold_model_that_never_saw_it(
    cv_run, tiny_data
):
    run, _ = cv_run
    result = json.loads((run / 'cv.json').read_text())
    train = data.scan_split(tiny_data, 'train')
    rows = cv.read_oof_csv(run / 'oof_predictions.csv')
    assert sorted(r['path'] for r in rows) == sorted(s.path for s in train)  # each exactly once
    for k in range(2):
        held_out = json.loads((run / f'fold{k}' / 'split.json').read_text())['held_out']
        fold_rows = {r['path']: r['p_AD'] for r in rows if r['fold'] == k}
        slices = [s for s in train if s.scan in held_out]
        assert set(fold_rows) == {s.path for s in slices}
        # calibrated by that fold model's own temperature (its inner validation's)
        temperature = export.read_export_settings(run / f'fold{k}' / 'best').temperature
        assert result['ensemble']['temperatures'][k] == pytest.approx(temperature)
        expected = metrics.apply_temperature(_raw(run / f'fold{k}', slices), temperature)[:, 1]
        np.testing.assert_allclose(
            [fold_rows[s.path] for s in slices], expected, rtol=1e-6, atol=1e-8
        )


def test_reported_numbers_sit_at_thresholds_chosen_on_other_predictions(cv_run):
    run, proc = cv_run
    result = json.loads((run / 'cv.json').read_text())
    rows = cv.read_oof_csv(run / 'oof_predictions.csv')
    scans = np.array([r['scan'] for r in rows])
    y, p = np.array([r['label'] for r in rows]), np.array([r['p_AD'] for r in rows])
    fold_of = np.array([r['fold'] for r in rows])
    for k, fold in enumerate(result['per_fold']):
        others = fold_of != k
        _, y_pat, p_pat = metrics.scan_level(scans[others], y[others], p[others])
        assert fold['threshold'] == pytest.approx(metrics.youden_threshold(y_pat, p_pat), abs=1e-6)
    # the ensemble's stored point uses all out-of-fold scans (what it ships with)
    _, y_pat, p_pat = metrics.scan_level(scans, y, p)
    assert result['ensemble']['threshold'] == pytest.approx(
        metrics.youden_threshold(y_pat, p_pat), abs=1e-6
    )
    assert result['threshold'] == result['ensemble']['threshold']
    pooled = result['out_of_fold']['scan']
    assert pooled['n'] == 12 and pooled['auc_ci'][0] <= pooled['auc'] <= pooled['auc_ci'][1]
    assert result['summary']['scan']['auc']['mean'] == pytest.approx(
        np.mean([f['scan']['auc'] for f in result['per_fold']])
    )
    assert 'cross-validation, 2 folds' in proc.stderr and 'mean ± sample sd' in proc.stdout


def test_the_refit_keeps_what_the_folds_chose_and_ships_its_own_point(cv_run):
    run, _ = cv_run
    result = json.loads((run / 'cv.json').read_text())
    final = export.read_export_settings(run / 'final')
    assert (final.threshold, final.temperature, final.threshold_source) == (
        result['refit']['threshold'],
        result['refit']['temperature'],
        'out-of-fold',
    )
    refit_rows = (run / 'refit' / 'metrics.jsonl').read_text().splitlines()
    median = statistics.median(result['best_epochs'])
    assert len(refit_rows) == int(median + 0.5)  # the folds' median best epoch, half up
    assert final.weights == refit_weights(result)
    split = json.loads((run / 'refit' / 'split.json').read_text())
    assert not split['val'] and split['weights'] == final.weights  # no validation, no selection


@pytest.mark.parametrize(
    'best_epochs, weights, epochs, kept',
    [
        ([2, 3], ['ema', 'live'], 3, 'live'),  # 2.5 rounds half up; a tie keeps live
        ([3, 4], ['ema', 'ema'], 4, 'ema'),  # 3.5 -> 4, banker's rounding would also say 4
        ([1, 2, 3, 4], ['ema', 'ema', 'live', 'ema'], 3, 'ema'),
    ],
)
def test_refit_epochs_round_half_up_and_weights_follow_the_majority(
    best_epochs, weights, epochs, kept
):
    result = {'select': 'inner', 'best_epochs': best_epochs, 'best_weights': weights}
    assert refit_epochs(result, configured=10) == epochs
    assert refit_weights(result) == kept
    assert refit_epochs({**result, 'select': 'last'}, configured=10) == 10


def test_a_cv_run_evaluates_as_the_mean_of_its_calibrated_fold_models(cv_run, tiny_data):
    run, _ = cv_run
    result = json.loads((run / 'cv.json').read_text())
    test = data.scan_split(tiny_data, 'test')
    temperatures = result['ensemble']['temperatures']
    ensemble = np.mean(  # each member calibrated on its own inner validation, then averaged
        [
            metrics.apply_temperature(_raw(run / f'fold{k}', test), temperatures[k])[:, 1]
            for k in range(2)
        ],
        axis=0,
    )
    written = {
        r.split(',')[0]: float(r.split(',')[3])
        for r in (run / 'eval/predictions.csv').read_text().splitlines()[1:]
    }
    np.testing.assert_allclose([written[s.path] for s in test], ensemble, rtol=1e-6, atol=1e-8)
    metrics_json = json.loads((run / 'eval/metrics.json').read_text())
    assert metrics_json['threshold_source'] == 'out-of-fold' and len(metrics_json['members']) == 2
    assert metrics_json['calibration']['temperature'] == pytest.approx(temperatures)
    assert 'own temperature' in metrics_json['calibration']['method']
    refit_json = json.loads((run / 'eval-final/metrics.json').read_text())
    assert refit_json['model'] == str(run / 'final')
    assert refit_json['threshold'] == pytest.approx(result['refit']['threshold'])


def test_ensemble_members_must_share_classes_and_input_size(cv_run, tmp_path):
    import timm

    run, _ = cv_run
    other = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 96, 96))
    )
    export.export_model(other, tmp_path / 'other')
    with pytest.raises(inference.InferenceError, match='share classes and input size'):
        load_model([str(run / 'fold0'), str(tmp_path / 'other')])


def test_a_cv_run_publishes_its_refit_with_the_cross_validation_table(cv_run, tmp_path):
    run, _ = cv_run
    published = Run(run).published_eval()
    assert published.path == run / 'eval-final'
    files = hub.build_export_folder(run, tmp_path / 'hub', published.metrics_file)
    assert (tmp_path / 'hub/model.safetensors').read_bytes() == (
        run / 'final/model.safetensors'
    ).read_bytes()
    text = (tmp_path / 'hub/README.md').read_text()
    assert '## Cross-validation' in text and '2-fold cross-validation by scan' in text
    assert 'Unverified' not in text
    assert {f.name for f in files} >= {'README.md', 'config.json', 'model.safetensors', 'roc.png'}
    no_refit = shutil.copytree(
        run, tmp_path / 'no_refit', ignore=shutil.ignore_patterns('final', 'refit')
    )
    with pytest.raises(export.ExportError, match='--resume --refit'):
        hub.build_export_folder(no_refit, tmp_path / 'hub2')


def test_a_cv_run_predicts_images_and_serves_the_demo_with_its_own_metrics(
    cv_run, tiny_data, tmp_path, capsys
):
    from adni_timm.app import demo as app

    run, _ = cv_run
    # --images on a CV run: the fold ensemble (was "too many values to unpack")
    code, out, err = cli_in_process(
        capsys, 'evaluate', '--model', run, '--images', tiny_data / 'test' / 'AD'
    )
    assert code == 0, err
    assert (run / 'predict' / 'scans.csv').is_file() and 'AD' in out
    # the demo: the refit, with its own test metrics (RUN/eval-final), not "not known here"
    served = app.load(run)
    assert served.loaded.export_dir == run / 'final'
    assert served.test_metrics_source == str(run / 'eval-final' / 'metrics.json')
    assert served.test_metrics_problems == []
    # without a refit: the fold ensemble (was an ExportError), with the ensemble's test metrics
    no_refit = shutil.copytree(
        run, tmp_path / 'no_refit', ignore=shutil.ignore_patterns('final', 'refit', 'eval-final')
    )
    served = app.load(no_refit)
    assert served.loaded.is_ensemble and served.test_metrics is not None
    assert 'Test metrics' in app.describe_model(served)
    result = app.predict_files(served, [str(p) for p in sorted((tiny_data / 'test/NC').iterdir())])
    assert len(result['scans']) == 3 and not result['rejected']


def test_a_fold_folder_resumes_on_its_own(cv_run, tmp_path):
    run = shutil.copytree(cv_run[0], tmp_path / 'run')
    proc = run_train('--output-dir', run / 'fold0', '--resume', '--epochs', '3')
    assert 'folds.json' not in proc.stderr
    rows = (run / 'fold0' / 'metrics.jsonl').read_text().splitlines()
    assert len(rows) == 3


@pytest.mark.slow
def test_a_cv_run_killed_in_fold_1_resumes_to_the_same_result_and_ignores_a_newcomer(
    cv_run, tiny_data, tmp_path
):
    # the fixture's run without its refit and test evaluation
    data_dir = shutil.copytree(tiny_data, tmp_path / 'data')
    args = ['--data-dir', str(data_dir), *CV_ARGS]
    killed = tmp_path / 'killed'
    train_and_kill(killed, args, killed / 'fold1/checkpoints/last/trainer_state.json')
    assert not (killed / 'cv.json').exists()
    # a scan appears on disk before the resume: it joins no fold and no refit
    first = sorted((data_dir / 'train' / 'AD').glob('*.jpeg'))[0]
    shutil.copy(first, first.with_name('newcomer_1.jpeg'))
    proc = run_train('--output-dir', killed, '--resume', '--refit')
    assert 'not in the recorded split and are not used: newcomer' in proc.stderr
    full, resumed = (json.loads((r / 'cv.json').read_text()) for r in (cv_run[0], killed))
    assert resumed['folds'] == full['folds'] and resumed['best_epochs'] == full['best_epochs']
    assert resumed['threshold'] == pytest.approx(full['threshold'], abs=1e-4)
    for a, b in zip(resumed['per_fold'], full['per_fold']):
        assert a['scan']['auc'] == pytest.approx(b['scan']['auc'], abs=1e-6)
    rows = cv.read_oof_csv(killed / 'oof_predictions.csv')
    assert 'newcomer' not in {r['scan'] for r in rows}
    assert 'newcomer' not in json.loads((killed / 'refit' / 'split.json').read_text())['train']


def test_evaluate_on_a_cv_run_uses_the_oof_rows_for_a_target_sensitivity(cv_run, tiny_data):
    run, _ = cv_run
    result = evaluation.evaluate(str(run), tiny_data, target_sensitivity=1.0, n_boot=0)
    rows = cv.read_oof_csv(run / 'oof_predictions.csv')
    _, y_pat, p_pat = metrics.scan_level(
        [r['scan'] for r in rows], [r['label'] for r in rows], [r['p_AD'] for r in rows]
    )
    assert result['threshold_source'] == 'out-of-fold'
    assert result['threshold'] == pytest.approx(
        metrics.threshold_for_sensitivity(y_pat, p_pat, 1.0), abs=1e-6
    )
