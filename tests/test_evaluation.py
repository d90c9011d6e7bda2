"""evaluate.py end to end on a tiny synthetic set with
a random adni_convnext_atto in a fake RUN folder.
"""

import csv
import hashlib
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from accelerate import Accelerator
from PIL import Image

from helpers import run_script
from adni_timm import data, inference, run
from adni_timm.export import format as export
from adni_timm.synthetic import slices as synthetic
from adni_timm.evaluation import (
    CamOptions,
    EvaluationError,
    EvaluationOptions,
    evaluate,
    format_table,
    predict_images,
)
from adni_timm.export.format import ExportError
from adni_timm.inference import UNNAMED_GROUP, load_model, predict_slices
from adni_timm.metrics import CI_KEYS, METRIC_KEYS
from adni_timm.run import Run
from adni_timm.data.splits import split_scans

ROOT = Path(__file__).resolve().parents[1]
STORED_THRESHOLD = 0.37
FILES = {
    'metrics.json',
    'predictions.csv',
    'scans.csv',
    'confusion_matrix.png',
    'confusion_matrix_slices.png',
    'roc.png',
    'reliability.png',
    'scan_probabilities.png',
}


def _tiny_model(**kwargs):
    kwargs.setdefault('pretrained_cfg_overlay', dict(input_size=(1, 64, 64)))
    return timm.create_model('adni_convnext_atto', **kwargs).eval()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    # 3 scans per class and split, 4 slices each: 24 test slices, 6 test scans
    return synthetic.generate(tmp_path_factory.mktemp('syn') / 'AD_NC', 3, 3, slices=4, seed=0)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return _tiny_model()


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, model, data_dir):
    run = tmp_path_factory.mktemp('runs') / 'tiny'
    export.export_model(
        model,
        run / 'best',
        extra={
            'threshold': STORED_THRESHOLD,
            'threshold_source': 'validation',
            'classes': ['NC', 'AD'],
        },
    )
    split = split_scans(data.scan_split(data_dir, 'train'), val_fraction=0.34, seed=0)
    (run / 'split.json').write_text(json.dumps(split))
    return run


@pytest.fixture(scope='module')
def loaded(run_dir):
    """The run's LoadedModel, for tests about something other than loading."""
    return load_model(run_dir)


@pytest.fixture(scope='module')
def direct_probs(model, data_dir):
    """(plain, flipped) softmax of a direct forward over the test slices."""
    slices = data.scan_split(data_dir, 'test')
    return _direct_probs(model, slices), _direct_probs(model, slices, flip=True)


@pytest.fixture(scope='module')
def plain_export(tmp_path_factory, model):
    """An export folder with no stored threshold and no run around it (like a downloaded model)."""
    return export.export_model(model, tmp_path_factory.mktemp('plain') / 'export')


def _direct_probs(model, slices, flip=False):
    tf = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    x = torch.stack([tf(Image.open(s.path).convert('L')) for s in slices])
    with torch.no_grad():
        return model(x.flip(-1) if flip else x).softmax(-1).numpy()


def _read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------- end to end


def test_evaluate_run_writes_reports_with_the_stored_threshold(
    run_dir, data_dir, direct_probs, tmp_path
):
    out = tmp_path / 'eval'
    result = evaluate(str(run_dir), data_dir, output_dir=out, n_boot=200)
    assert {p.name for p in out.iterdir()} == FILES
    assert result['threshold'] == STORED_THRESHOLD and result['threshold_source'] == 'validation'
    assert (result['model'], result['split'], result['positive_class']) == (
        str(run_dir),
        'test',
        'AD',
    )
    assert result['slice']['n'] == 24 and result['scan']['n'] == 6
    for level in ('slice', 'scan'):
        assert set(METRIC_KEYS) <= set(result[level])
        for key in CI_KEYS:
            lo, hi = result[level][f'{key}_ci']
            assert lo <= result[level][key] <= hi
    assert json.loads((out / 'metrics.json').read_text()) == json.loads(json.dumps(result))

    rows = _read_csv(out / 'predictions.csv')
    assert list(rows[0]) == ['path', 'scan', 'label', 'p_AD', 'predicted']
    assert len(rows) == 24 and sorted(r['label'] for r in rows) == ['AD'] * 12 + ['NC'] * 12
    slices = data.scan_split(data_dir, 'test')
    assert [r['path'] for r in rows] == [s.path for s in slices]
    p_ad = np.array([float(r['p_AD']) for r in rows])
    np.testing.assert_allclose(
        p_ad, direct_probs[0][:, 1], rtol=1e-5, atol=1e-6
    )  # the exported weights
    assert [r['predicted'] for r in rows] == ['AD' if p >= STORED_THRESHOLD else 'NC' for p in p_ad]
    tn_fp_fn_tp = np.array(result['slice']['confusion_matrix']).ravel()
    truth = np.array([r['label'] == 'AD' for r in rows])
    assert tn_fp_fn_tp.tolist() == [
        sum(~truth & (p_ad < 0.37)),
        sum(~truth & (p_ad >= 0.37)),
        sum(truth & (p_ad < 0.37)),
        sum(truth & (p_ad >= 0.37)),
    ]

    scans = _read_csv(out / 'scans.csv')
    assert len(scans) == 6 and all(r['n_slices'] == '4' for r in scans)
    for r in scans:
        mine = [float(x['p_AD']) for x in rows if x['scan'] == r['scan']]
        assert float(r['p_AD']) == pytest.approx(np.mean(mine), abs=2e-6)


def test_format_table_shows_both_levels_and_cis(run_dir, data_dir, loaded):
    table = format_table(evaluate(loaded, data_dir, n_boot=50))
    assert 'slices (n=24)' in table and 'scans (n=6)' in table
    assert 'threshold 0.370 (validation)' in table
    assert len([line for line in table.splitlines() if line.startswith(CI_KEYS)]) == len(CI_KEYS)
    assert '[[TN,FP],[FN,TP]]' in table and '95% CI' in table


def test_predict_equals_a_direct_forward_with_and_without_tta(model, data_dir, direct_probs):
    slices = data.scan_split(data_dir, 'test')
    probs = predict_slices(model, slices, batch_size=5)  # 5 does not divide 24: a short last batch
    assert probs.shape == (24, 2)
    np.testing.assert_allclose(probs, direct_probs[0], rtol=1e-5, atol=1e-6)
    tta = predict_slices(model, slices, batch_size=8, tta=True)
    np.testing.assert_allclose(tta, (direct_probs[0] + direct_probs[1]) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta, probs)


def test_predict_through_an_accelerator_counts_each_slice_once(model, data_dir, direct_probs):
    slices = data.scan_split(data_dir, 'test')
    probs = predict_slices(model, slices, batch_size=7, accelerator=Accelerator(cpu=True))
    np.testing.assert_allclose(probs, direct_probs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_predict_on_cuda_in_bf16_matches_cpu(data_dir):
    torch.manual_seed(0)
    net = _tiny_model()  # its own model: predict moves it to the GPU
    slices = data.scan_split(data_dir, 'test')
    reference = _direct_probs(net, slices)
    probs = predict_slices(net, slices, batch_size=8, tta=True)
    assert next(net.parameters()).is_cuda and not net.training
    np.testing.assert_allclose(
        probs, (reference + _direct_probs(net.cpu(), slices, flip=True)) / 2, atol=3e-2
    )


# --------------------------------------------------------------------------------- model references


@pytest.mark.parametrize(
    'form', ['run', 'run/best', 'local-dir:run/best', 'run/best/model.safetensors']
)
def test_load_model_forms(run_dir, model, form):
    ref = form.replace('run', str(run_dir))
    loaded = load_model(ref)
    assert (loaded.ref, loaded.classes, loaded.run, loaded.cv_run) == (
        ref,
        ['NC', 'AD'],
        Run(run_dir),
        None,
    )
    assert (loaded.point.threshold, loaded.point.source, loaded.point.temperature) == (
        STORED_THRESHOLD,
        'validation',
        1.0,
    )
    assert loaded.settings.format == 2 and loaded.settings.trained_in_chans == 1
    assert (
        loaded.weights_sha256
        == hashlib.sha256((run_dir / 'best/model.safetensors').read_bytes()).hexdigest()
    )
    assert not loaded.net.training and not loaded.is_ensemble
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(loaded.net(x), model(x), rtol=1e-5, atol=1e-6)


def test_plain_export_has_no_run_and_a_fixed_threshold(plain_export, data_dir):
    loaded = load_model(plain_export)
    assert loaded.run is None and loaded.settings.threshold is None
    assert (loaded.point.threshold, loaded.point.source) == (0.5, 'fixed')
    result = evaluate(str(plain_export), data_dir, n_boot=0)
    assert (result['threshold'], result['threshold_source']) == (0.5, 'fixed')
    assert 'accuracy_ci' not in result['scan'] and result['ci'] is None


def test_hf_hub_model_loads_from_the_cache_with_its_threshold(
    run_dir, model, tmp_path, monkeypatch
):
    # a Hub repo as huggingface_hub caches it; HF_HUB_OFFLINE=1 (conftest) makes it the only source
    import huggingface_hub.constants

    commit = '0123456789abcdef0123456789abcdef01234567'
    repo = tmp_path / 'models--adni-timm--tiny'
    shutil.copytree(run_dir / 'best', repo / 'snapshots' / commit)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path))
    loaded = load_model('hf-hub:adni-timm/tiny')
    assert loaded.point.threshold == STORED_THRESHOLD and loaded.run is None
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(loaded.net(x), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ExportError, match='could not load hf-hub:adni-timm/absent.*repository id'):
        load_model('hf-hub:adni-timm/absent')


def test_bad_model_references(tmp_path, run_dir):
    with pytest.raises(ExportError, match='does not exist.*hf-hub:ORG/NAME'):
        load_model(tmp_path / 'nope')
    (tmp_path / 'notes.txt').write_text('hi')
    with pytest.raises(ExportError, match='neither a training run nor a timm export folder'):
        load_model(tmp_path)
    weights = tmp_path / 'w' / 'weights.safetensors'
    weights.parent.mkdir()
    shutil.copy(run_dir / 'best' / 'model.safetensors', weights)
    with pytest.raises(ExportError, match='rename the file to model.safetensors'):
        load_model(weights)
    not_timm = tmp_path / 'hf'
    shutil.copytree(run_dir / 'best', not_timm)
    (not_timm / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
    with pytest.raises(ExportError, match='not a timm config'):
        load_model(not_timm)


# --------------------------------------------------------------------------------------- thresholds


def test_cli_threshold_wins_and_is_applied(run_dir, data_dir, loaded):
    low = evaluate(loaded, data_dir, threshold=0.0, n_boot=0)
    assert (low['threshold'], low['threshold_source']) == (0.0, 'cli')
    assert low['scan']['confusion_matrix'] == [[0, 3], [0, 3]]  # everything called AD
    high = evaluate(loaded, data_dir, threshold=1.0, n_boot=0)
    assert high['scan']['sensitivity'] == 0.0 and high['scan']['specificity'] == 1.0


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(threshold=0.3, target_sensitivity=0.9), 'either --threshold or --target-sensitivity'),
        (dict(threshold=1.5), r'\[0, 1\]'),
        (dict(target_sensitivity=0.0), r'\(0, 1\]'),
        (
            dict(target_sensitivity=0.9, split='train'),
            'cannot be used when evaluating --split train',
        ),
    ],
)
def test_bad_threshold_options(run_dir, data_dir, loaded, kwargs, match):
    with pytest.raises(EvaluationError, match=match):
        evaluate(loaded, data_dir, n_boot=0, **kwargs)


def _fake_predict(p_by_scan):
    def fake(net, slices, **kwargs):
        p = np.array([p_by_scan[s.scan] for s in slices])
        return np.stack([1 - p, p], axis=1)

    return fake


def _scans(data_dir, split, label):
    return sorted({s.scan for s in data.scan_split(data_dir, split) if s.label == label})


def test_target_sensitivity_is_met_on_the_runs_validation_scans_not_on_test(
    data_dir, model, tmp_path, monkeypatch
):
    train_ad, train_nc = _scans(data_dir, 'train', 1), _scans(data_dir, 'train', 0)
    seed0_val = set(split_scans(data.scan_split(data_dir, 'train'), seed=0)['val'])
    # differs from the fallback split on purpose
    val_ad = next(p for p in train_ad if p not in seed0_val)
    run = tmp_path / 'run'
    export.export_model(model, run / 'best', extra={'threshold': STORED_THRESHOLD})
    (run / 'split.json').write_text(
        json.dumps(
            {
                'level': 'scan',
                'seed': 0,
                'val_fraction': 0.3,
                'train': [p for p in train_ad + train_nc[1:] if p != val_ad],
                'val': [val_ad, train_nc[0]],
            }
        )
    )
    # validation AD scan 0.8; other train AD 0.6 / 0.7; test AD 0.3: sensitivity 1.0 needs 0.8 on
    # validation, 0.6 if the whole train split were used, 0.3 if it were tuned on test
    p = {pid: 0.1 for pid in train_nc + _scans(data_dir, 'test', 0)}
    p.update({pid: 0.6 + 0.1 * i for i, pid in enumerate(q for q in train_ad if q != val_ad)})
    p.update({val_ad: 0.8, **{pid: 0.3 for pid in _scans(data_dir, 'test', 1)}})
    monkeypatch.setattr(inference, 'predict_slices', _fake_predict(p))
    result = evaluate(str(run), data_dir, target_sensitivity=1.0, n_boot=0)
    # the middle of the gap below 0.8 on validation (NC at 0.1): 0.45, never 0.6 or 0.3
    assert result['threshold'] == pytest.approx(0.45) and result['threshold_source'] == 'validation'
    assert result['threshold_selection'] == {
        'target_sensitivity': 1.0,
        'chosen_on': str(run / 'split.json'),
        'validation_scans': 2,
        'validation_sensitivity': 1.0,
        'validation_specificity': 1.0,
        'tta': False,
    }
    assert result['scan']['sensitivity'] == 0.0  # the honest consequence on test, not re-tuned


def test_target_sensitivity_without_a_run_uses_a_seed0_split_of_train(
    plain_export, data_dir, monkeypatch, caplog
):
    split = split_scans(data.scan_split(data_dir, 'train'), seed=0)
    val_ad = [pid for pid in split['val'] if pid in _scans(data_dir, 'train', 1)]
    p = {pid: 0.2 for pid in _scans(data_dir, 'train', 0) + _scans(data_dir, 'test', 0)}
    p.update({pid: 0.9 for pid in _scans(data_dir, 'train', 1) + _scans(data_dir, 'test', 1)})
    p.update({pid: 0.65 for pid in val_ad})
    monkeypatch.setattr(inference, 'predict_slices', _fake_predict(p))
    with caplog.at_level(logging.WARNING, logger='adni_timm.evaluation'):
        result = evaluate(str(plain_export), data_dir, target_sensitivity=1.0, n_boot=0)
    assert result['threshold'] == pytest.approx((0.65 + 0.2) / 2)  # the gap below 0.65
    assert result['threshold_selection']['chosen_on'] == 'seed-0 scan split of DATA_DIR/train'
    assert 'optimistic' in caplog.text


def test_target_sensitivity_refuses_validation_scans_that_are_also_tested(
    data_dir, model, tmp_path
):
    leaky = tmp_path / 'leaky'
    shutil.copytree(data_dir, leaky)
    test_ad = _scans(leaky, 'test', 1)[0]
    for f in (leaky / 'test' / 'AD').glob(f'{test_ad}_*.jpeg'):
        shutil.copy(f, leaky / 'train' / 'AD' / f.name)
    run = tmp_path / 'run'
    export.export_model(model, run / 'best')
    (run / 'split.json').write_text(
        json.dumps(
            {
                'level': 'scan',
                'seed': 0,
                'val_fraction': 0.3,
                'train': [],
                'val': [test_ad, _scans(leaky, 'train', 0)[0]],
            }
        )
    )
    with pytest.raises(
        EvaluationError, match=f'validation scans .*{test_ad}.* also in the evaluated split'
    ):
        evaluate(str(run), leaky, target_sensitivity=0.9, n_boot=0)


# --------------------------------------------------------------------------------- bad data / model


def test_data_dir_without_the_split(run_dir, data_dir, loaded, tmp_path):
    with pytest.raises(data.DataError, match='does not exist'):
        evaluate(loaded, tmp_path / 'missing', n_boot=0)
    only_train = tmp_path / 'only_train'
    shutil.copytree(data_dir / 'train', only_train / 'train')
    with pytest.raises(data.DataError, match="no 'test' folder"):
        evaluate(loaded, only_train, n_boot=0)


def test_three_channel_model_on_grayscale_data(tmp_path, data_dir):
    rgb = _tiny_model(
        in_chans=3,
        pretrained_cfg_overlay=dict(input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.5,) * 3),
    )
    exported = export.export_model(rgb, tmp_path / 'rgb')
    with pytest.raises(
        inference.InferenceError, match='3-channel input but ADNI slices are 1-channel.*in_chans=1'
    ):
        evaluate(str(exported), data_dir, n_boot=0)


def test_class_count_must_match_the_model(run_dir, data_dir, loaded):
    with pytest.raises(EvaluationError, match='2 outputs but the classes are NC,MCI,AD'):
        evaluate(loaded, data_dir, classes=['NC', 'MCI', 'AD'], n_boot=0)


def test_three_classes_report_ad_vs_rest(tmp_path):
    three = synthetic.generate(
        tmp_path / 'three', 1, 2, slices=2, seed=1, classes=('NC', 'MCI', 'AD')
    )
    torch.manual_seed(0)
    net = _tiny_model(num_classes=3)
    exported = export.export_model(net, tmp_path / 'export', extra={'classes': ['NC', 'MCI', 'AD']})
    result = evaluate(str(exported), three, output_dir=tmp_path / 'out', n_boot=20)
    assert result['positive_class'] == 'AD' and result['classes'] == ['NC', 'MCI', 'AD']
    cm = result['scan']['confusion_matrix']  # AD vs rest: [[rest], [AD]]
    assert result['scan']['n'] == 6 and sum(map(sum, cm)) == 6
    assert cm[1][0] + cm[1][1] == 2  # 2 AD
    rows = _read_csv(tmp_path / 'out' / 'predictions.csv')
    assert {r['label'] for r in rows} == {'NC', 'MCI', 'AD'} and {r['predicted'] for r in rows} <= {
        'NC',
        'MCI',
        'AD',
    }


# -------------------------------------------------------------------------------- unlabelled images


def test_predict_images_folder_file_and_unnamed(run_dir, data_dir, model, tmp_path):
    folder = data_dir / 'test' / 'AD'
    result = predict_images(str(run_dir), folder, output_dir=tmp_path / 'pred')
    slices = sorted(folder.glob('*.jpeg'))
    assert [r['path'] for r in result['slices']] == [str(f) for f in slices]
    assert len(result['scans']) == 3 and all(r['n_slices'] == 4 for r in result['scans'])
    assert result['threshold'] == STORED_THRESHOLD
    by_path = {r['path']: r['p_AD'] for r in result['slices']}
    for row in result['scans']:
        assert row['p_AD'] == pytest.approx(
            np.mean([v for k, v in by_path.items() if Path(k).name.startswith(row['scan'] + '_')])
        )
        assert row['predicted'] == ('AD' if row['p_AD'] >= STORED_THRESHOLD else 'NC')
    assert len(_read_csv(tmp_path / 'pred' / 'predictions.csv')) == 12
    assert len(_read_csv(tmp_path / 'pred' / 'scans.csv')) == 3

    unnamed = tmp_path / 'scan.png'
    Image.open(slices[0]).save(unnamed)
    single = predict_images(str(run_dir), unnamed, threshold=0.9)
    # a file without a <scan>_<slice> name is its own group, never dropped from the table
    assert [r['scan'] for r in single['scans']] == [UNNAMED_GROUP]
    assert single['slices'][0]['scan'] == UNNAMED_GROUP
    # PNG of the same pixels
    assert single['slices'][0]['p_AD'] == pytest.approx(by_path[str(slices[0])], abs=1e-3)
    assert (single['threshold'], single['threshold_source']) == (0.9, 'cli')
    with pytest.raises(EvaluationError, match='no .* images found'):
        predict_images(str(run_dir), tmp_path / 'pred')


# ---------------------------------------------------------------------------------------------- CLI


def _cli():
    spec = importlib.util.spec_from_file_location('evaluate_cli', ROOT / 'evaluate.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_evaluates_into_the_run_folder(run_dir, data_dir, capsys):
    assert _cli()(['--model', str(run_dir), '--data-dir', str(data_dir), '--n-boot', '20']) == 0
    out = capsys.readouterr().out
    # where push_to_hub.py looks
    assert 'scans (n=6)' in out and f'wrote {run_dir / "eval"}' in out
    assert {p.name for p in (run_dir / 'eval').iterdir()} == FILES
    assert json.loads((run_dir / 'eval' / 'metrics.json').read_text())['tta'] is False


def test_cli_images_and_usage_errors(run_dir, data_dir, tmp_path, capsys):
    main = _cli()
    assert (
        main(
            [
                '--model',
                str(run_dir),
                '--images',
                str(data_dir / 'test' / 'NC'),
                '--output-dir',
                str(tmp_path / 'p'),
            ]
        )
        == 0
    )
    assert 'scan' in capsys.readouterr().out and (tmp_path / 'p' / 'scans.csv').is_file()
    for argv in (
        ['--model', str(run_dir)],  # no --data-dir
        [
            '--model',
            str(run_dir),
            '--data-dir',
            str(data_dir),
            '--threshold',
            '0.3',
            '--target-sensitivity',
            '0.9',
        ],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # a bad flag value: a usage error
        main(['--model', str(run_dir), '--data-dir', str(data_dir), '--classes', 'NC'])
    assert e.value.code == 2
    assert 'at least two distinct class' in capsys.readouterr().err


def test_cli_bad_model_is_one_line_without_traceback(tmp_path):
    proc = run_script(
        'evaluate.py', '--model', tmp_path / 'nope', '--data-dir', tmp_path, check=False
    )
    assert proc.returncode == 2  # a refused input (adni_timm.cli: exit codes)
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"evaluate.py: error: model '{tmp_path / 'nope'}' does not exist; pass {run.MODEL_FORMS}."
    ]


@pytest.mark.slow
def test_non_default_evaluations_get_their_own_folder_and_never_overwrite_eval(
    run_dir, data_dir, capsys, tmp_path
):
    run = shutil.copytree(run_dir, tmp_path / 'run')
    main = _cli()
    assert main(['--model', str(run), '--data-dir', str(data_dir), '--n-boot', '0']) == 0
    published = (run / 'eval' / 'metrics.json').read_bytes()
    for extra, folder in (
        (['--threshold', '0.05'], 'eval-threshold-0.05'),
        (['--tta'], 'eval-tta'),
        (['--target-sensitivity', '0.9'], 'eval-sensitivity-0.9'),
        (['--split', 'train', '--threshold', '0.5'], 'eval-train-threshold-0.5'),
    ):
        assert (
            main(['--model', str(run), '--data-dir', str(data_dir), '--n-boot', '0', *extra]) == 0
        )
        assert f'wrote {run / folder}' in capsys.readouterr().out
        assert (run / folder / 'metrics.json').is_file()
    assert (run / 'eval' / 'metrics.json').read_bytes() == published
    # asked for by name, the published folder still refuses a non-default evaluation
    argv = ['--model', str(run), '--data-dir', str(data_dir), '--threshold', '0.05']
    assert main([*argv, '--output-dir', str(run / 'eval')]) == 2  # a refused input
    err = capsys.readouterr().err
    assert 'eval-threshold-0.05' in err and err.count('\n') == 1
    assert (run / 'eval' / 'metrics.json').read_bytes() == published


def test_images_name_every_unusable_file_and_skip_them_on_request(run_dir, data_dir, tmp_path):
    folder = tmp_path / 'mixed'
    folder.mkdir()
    good = sorted((data_dir / 'test' / 'NC').glob('*.jpeg'))[0]
    shutil.copy(good, folder / good.name)
    (folder / '5_1.jpeg').write_text('not a jpeg')
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(folder / 'photo.png')
    with pytest.raises(data.DataError, match='(?s)5_1.jpeg: not an image.*--skip-bad-images'):
        predict_images(str(run_dir), folder)
    (folder / '5_1.jpeg').unlink()
    with pytest.raises(EvaluationError, match='(?s)colour image.*photo.png.*--skip-bad-images'):
        predict_images(str(run_dir), folder)
    result = predict_images(str(run_dir), folder, options=EvaluationOptions(skip_bad_images=True))
    assert [Path(r['path']).name for r in result['slices']] == [good.name]


@pytest.mark.slow
def test_evidence_maps_of_a_synthetic_split_are_scored_against_the_drawn_atrophy(
    loaded, data_dir, tmp_path
):
    from adni_timm.synthetic import slices as synthetic

    result = evaluate(
        loaded,
        data_dir,
        output_dir=tmp_path / 'e',
        n_boot=0,
        options=EvaluationOptions(cam=CamOptions(n=1, method='gradcam')),
    )
    score = result['cam']['region_score']  # the generator's arguments are in dataset.json
    assert score is not None and 0 <= score['pointing_game'] <= 1
    assert json.loads((tmp_path / 'e' / 'metrics.json').read_text())['cam']['region_score'] == score
    masks = synthetic.atrophy_masks(3, 3, slices=4, seed=0)  # what data_dir was generated with
    assert score['n_slices'] == sum(1 for key in masks if key.startswith('test/AD/'))
