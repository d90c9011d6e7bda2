"""train.py --folds K [--refit] end to end on tiny SYNTHETIC data:
folds, out-of-fold predictions, the out-of-fold operating point, the
refit, the fold ensemble in evaluate.py, publishing, and resume."""

import json
import shutil
import statistics

import numpy as np
import pytest

from adni_timm import cv, data, evaluation, export, hub, metrics
from helpers import TINY, run_train, train_and_kill

CV_ARGS = [*TINY, '--folds', '2']  # 2 epochs per fold


@pytest.fixture(scope='module')
def cv_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp('cv') / 'run'
    proc = run_train(
        '--data-dir', tiny_data, '--output-dir', run, *CV_ARGS, '--refit', '--eval-test'
    )
    return run, proc


def _probs(ref, slices):
    model, info = evaluation.resolve_model(ref)
    return evaluation.predict(model, slices)


def test_every_training_slice_is_predicted_once_by_the_fold_model_that_never_saw_its_patient(
    cv_run, tiny_data
):
    run, _ = cv_run
    result = json.loads((run / 'cv.json').read_text())
    train = data.scan_split(tiny_data, 'train')
    labels = {s.patient: s.label for s in train}
    assert (
        result['folds']
        == json.loads((run / 'folds.json').read_text())['folds']
        == cv.make_folds(labels, 2, 0)
    )
    rows = cv.read_oof_csv(run / 'oof_predictions.csv')
    # every slice, exactly once
    assert sorted(r['path'] for r in rows) == sorted(s.path for s in train)
    for k in range(2):
        split = json.loads((run / f'fold{k}' / 'split.json').read_text())
        assert split['val'] == result['folds'][k] and not set(split['train']) & set(split['val'])
        fold_rows = [r for r in rows if r['fold'] == k]
        # predicted by the model that never saw it
        assert {r['patient'] for r in fold_rows} == set(split['val'])
        slices = [s for s in train if s.patient in split['val']]
        expected = metrics.apply_temperature(
            _probs(run / f'fold{k}', slices), result['temperature']
        )[:, 1]
        got = {r['path']: r['p_AD'] for r in fold_rows}
        np.testing.assert_allclose([got[s.path] for s in slices], expected, atol=1e-6)


def test_the_operating_point_is_chosen_out_of_fold_and_shipped_with_the_refit(cv_run):
    run, proc = cv_run
    result = json.loads((run / 'cv.json').read_text())
    rows = cv.read_oof_csv(run / 'oof_predictions.csv')
    _, y, p = metrics.patient_level(
        [r['patient'] for r in rows], [r['label'] for r in rows], [r['p_AD'] for r in rows]
    )
    # on all OOF patients
    assert result['threshold'] == pytest.approx(metrics.youden_threshold(y, p))
    assert result['threshold_source'] == 'out-of-fold' and len(result['per_fold']) == 2
    assert result['summary']['patient']['auc']['mean'] == pytest.approx(
        np.mean([f['patient']['auc'] for f in result['per_fold']])
    )
    final = export.export_extra(run / 'final')
    assert (final['threshold'], final['temperature'], final['threshold_source']) == (
        result['threshold'],
        result['temperature'],
        'out-of-fold',
    )
    refit_epochs = len((run / 'refit' / 'metrics.jsonl').read_text().splitlines())
    # the folds' median best epoch
    assert refit_epochs == round(statistics.median(result['best_epochs']))
    # no validation, no early stopping
    assert not json.loads((run / 'refit' / 'split.json').read_text())['val']
    assert 'cross-validation, 2 folds' in proc.stderr and 'mean ± sample sd' in proc.stdout


def test_a_cv_run_evaluates_as_the_mean_of_its_fold_models(cv_run, tiny_data):
    run, _ = cv_run
    result = json.loads((run / 'cv.json').read_text())
    test = data.scan_split(tiny_data, 'test')
    mean = (_probs(run / 'fold0', test) + _probs(run / 'fold1', test)) / 2  # computed independently
    ensemble = metrics.apply_temperature(mean, result['temperature'])[:, 1]
    written = {
        r.split(',')[0]: float(r.split(',')[3])
        for r in (run / 'eval/predictions.csv').read_text().splitlines()[1:]
    }
    np.testing.assert_allclose([written[s.path] for s in test], ensemble, atol=1e-6)
    metrics_json = json.loads((run / 'eval/metrics.json').read_text())
    assert metrics_json['threshold_source'] == 'out-of-fold' and len(metrics_json['members']) == 2
    assert len(metrics_json['weights_sha256']) == 2
    assert json.loads((run / 'eval-final/metrics.json').read_text())['model'] == str(run / 'final')
    # any two exports that share classes and input size make an ensemble; others are refused
    pair = evaluation.evaluate([str(run / 'fold0'), str(run / 'fold1')], tiny_data, n_boot=0)
    assert pair['threshold'] == 0.5 and pair['threshold_source'] == 'fixed'
    np.testing.assert_allclose(
        pair['patient']['auc'],
        metrics.slice_and_patient_metrics(
            [s.patient for s in test], data.binary_labels(test, ['NC', 'AD']), mean[:, 1]
        )['patient']['auc'],
    )


def test_ensemble_members_must_share_classes_and_input_size(cv_run, tmp_path):
    import timm

    run, _ = cv_run
    other = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 96, 96))
    )
    export.export_model(other, tmp_path / 'other')
    with pytest.raises(evaluation.EvaluationError, match='share classes and input size'):
        evaluation.load_models([str(run / 'fold0'), str(tmp_path / 'other')])


def test_a_cv_run_publishes_its_refit_with_the_cross_validation_table(cv_run, tmp_path):
    run, _ = cv_run
    files = hub.build_export_folder(run, tmp_path / 'hub', hub.default_eval_metrics(run))
    assert (tmp_path / 'hub/model.safetensors').read_bytes() == (
        run / 'final/model.safetensors'
    ).read_bytes()
    text = (tmp_path / 'hub/README.md').read_text()
    assert '## Cross-validation' in text and '2-fold cross-validation by patient' in text
    assert (
        'out-of-fold predictions of cross-validation (never on test)' in text
        and 'Unverified' not in text
    )
    assert {f.name for f in files} >= {'README.md', 'config.json', 'model.safetensors', 'roc.png'}
    no_refit = shutil.copytree(
        run, tmp_path / 'no_refit', ignore=shutil.ignore_patterns('final', 'refit')
    )
    with pytest.raises(export.ExportError, match='--resume --refit'):
        hub.build_export_folder(no_refit, tmp_path / 'hub2')


def test_a_cv_run_killed_in_fold_1_resumes_to_the_same_result(cv_run, tiny_data, tmp_path):
    # the fixture's run without its refit and test evaluation
    args = ['--data-dir', str(tiny_data), *CV_ARGS]
    killed = tmp_path / 'killed'
    train_and_kill(killed, args, killed / 'fold1/checkpoints/last/trainer_state.json')
    assert not (killed / 'cv.json').exists()
    run_train('--output-dir', killed, '--resume')
    full, resumed = (json.loads((r / 'cv.json').read_text()) for r in (cv_run[0], killed))
    assert resumed['folds'] == full['folds'] and resumed['best_epochs'] == full['best_epochs']
    assert resumed['threshold'] == pytest.approx(full['threshold'], abs=1e-4)
    assert resumed['temperature'] == pytest.approx(full['temperature'], rel=1e-3)
    for a, b in zip(resumed['per_fold'], full['per_fold']):
        assert a['patient']['auc'] == pytest.approx(b['patient']['auc'], abs=1e-6)
