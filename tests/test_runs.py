"""Runs whose numbers can be trusted: resume, overwrite,
smoke runs, data checked up front, the operating point.

Each test here failed on the code before issue 10 and passes after it (CPU, tiny SYNTHETIC data).
"""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from adni_timm import data, metrics
from adni_timm.config import load_config
from adni_timm.export.format import read_export_settings
from adni_timm.inference import load_model, predict_slices
from adni_timm.run import RunRecord
from adni_timm.data.splits import select
from adni_timm.train.loop import make_ema
from helpers import TINY, cli_in_process, run_train, train_in_process, with_option

ONE_EPOCH = with_option(with_option(TINY, '--epochs', '1'), '--warmup-epochs', '0')


def _copy(src, dst):
    return shutil.copytree(src, dst)


@pytest.fixture(scope='module')
def one_epoch_run(tiny_data, tmp_path_factory):
    """A finished 1-epoch run on a private copy of the data (tests change the data under it)."""
    root = tmp_path_factory.mktemp('resume')
    data_dir = _copy(tiny_data, root / 'AD_NC')
    run = root / 'run'
    run_train('--data-dir', data_dir, '--output-dir', run, *ONE_EPOCH)
    return run, data_dir


def _split(run):
    return json.loads((run / 'split.json').read_text())


# ---------------------------------------------------------------------------------- runs and resume


@pytest.mark.slow
def test_resume_keeps_the_recorded_split_when_scans_are_added_or_the_data_moves(
    one_epoch_run, tmp_path
):
    run, data_dir = one_epoch_run
    run = _copy(run, tmp_path / 'run')
    before = _split(run)
    # the data moved, and a new scan appeared
    moved = _copy(data_dir, tmp_path / 'moved' / 'AD_NC')
    for f in (moved / 'train' / 'AD').glob(f'{before["train"][0]}_*.jpeg'):
        shutil.copy(f, f.with_name(f.name.replace(before['train'][0], 'newcomer')))
    proc = run_train('--output-dir', run, '--resume', '--epochs', '2', '--data-dir', moved)
    assert _split(run) == before  # nobody moved into or out of validation
    assert (
        '1 scan(s) in the data are not in the recorded split and are not used: newcomer'
        in proc.stderr
    )
    rows = [json.loads(x) for x in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['val_slices'] for r in rows] == [rows[0]['val_slices']] * 2
    assert RunRecord.load(run).data_dir == str(moved)


@pytest.mark.slow
def test_resume_refuses_when_a_recorded_scan_is_missing(one_epoch_run, tmp_path, capsys):
    run, data_dir = one_epoch_run
    run = _copy(run, tmp_path / 'run')
    scan = _split(run)['val'][0]
    data_copy = _copy(data_dir, tmp_path / 'AD_NC')
    for f in data_copy.glob(f'train/*/{scan}_*.jpeg'):
        f.unlink()
    code, _, err = train_in_process(
        capsys, '--output-dir', run, '--resume', '--epochs', '2', '--data-dir', data_copy
    )
    assert code == 1  # a problem in the data
    assert f"recorded in split['val'] are not in the data: {scan}" in err
    assert 'Restore their files, or point --data-dir at the data' in err
    # nothing lost
    assert json.loads((run / 'checkpoints/last/trainer_state.json').read_text())['epoch'] == 1


@pytest.mark.slow
def test_resume_keeps_the_original_provenance_and_records_each_resume(one_epoch_run, tmp_path):
    run, _ = one_epoch_run
    run = _copy(run, tmp_path / 'run')
    original = (run / 'train_config.yaml').read_bytes()
    run_train('--output-dir', run, '--resume', '--epochs', '2')
    # versions, git commit, config as they were
    assert (run / 'train_config.yaml').read_bytes() == original
    (entry,) = [json.loads(x) for x in (run / 'resumes.jsonl').read_text().splitlines()]
    assert entry['changed'] == {'epochs': [1, 2]} and entry['after_epoch'] == 1
    assert entry['num_processes'] == 1 and {'torch', 'timm', 'adni_timm'} <= set(entry['versions'])
    assert 'git_commit' in entry and entry['time']
    assert RunRecord.load(run).config.epochs == 2


@pytest.mark.slow
def test_overwrite_touches_the_old_run_only_after_every_check_passed(
    one_epoch_run, tmp_path, capsys
):
    run, data_dir = one_epoch_run
    run = _copy(run, tmp_path / 'run')
    before = (run / 'best/model.safetensors').read_bytes()
    # a DATA_DIR that does not exist is a usage error (2, from argparse) ...
    with pytest.raises(SystemExit) as typo:
        train_in_process(
            capsys,
            '--data-dir',
            tmp_path / 'AD_NCC',
            '--output-dir',
            run,
            '--overwrite',
            *ONE_EPOCH,
        )
    assert typo.value.code == 2 and 'AD_NCC does not exist' in capsys.readouterr().err
    assert (run / 'best/model.safetensors').read_bytes() == before
    # ... a corrupt file a problem in the data (1), found by the checks before anything is moved
    broken = _copy(data_dir, tmp_path / 'broken')
    next((broken / 'train' / 'NC').glob('*.jpeg')).write_bytes(b'not a jpeg')
    code, _, err = train_in_process(
        capsys, '--data-dir', broken, '--output-dir', run, '--overwrite', *ONE_EPOCH
    )
    assert code == 1 and 'cannot be decoded' in err
    assert (run / 'best/model.safetensors').read_bytes() == before  # the old run is untouched
    run_train('--data-dir', data_dir, '--output-dir', run, '--overwrite', *ONE_EPOCH, '--seed', '1')
    # replaced ...
    assert yaml.safe_load((run / 'train_config.yaml').read_text())['config']['seed'] == 1
    # ... and the old one gone once the new one checkpointed
    assert not list(tmp_path.glob('.run.replaced*'))


@pytest.mark.slow
def test_a_smoke_run_shortens_the_warmup_and_nonsense_is_still_refused(tiny_data, tmp_path, capsys):
    at = TINY.index('--warmup-epochs')
    # no --warmup-epochs: the preset's 5
    args = with_option(TINY[:at] + TINY[at + 2 :], '--epochs', '1')
    # adni preset: 5 warmup
    proc = run_train('--data-dir', tiny_data, '--output-dir', tmp_path / 'smoke', *args)
    assert 'warmup_epochs 5 -> 0: a 1-epoch run needs a shorter warmup' in proc.stderr
    assert (
        yaml.safe_load((tmp_path / 'smoke/train_config.yaml').read_text())['config'][
            'warmup_epochs'
        ]
        == 0
    )
    code, _, err = train_in_process(
        capsys,
        '--data-dir',
        tiny_data,
        '--output-dir',
        tmp_path / 'bad',
        *args,
        '--warmup-epochs',
        '-1',
    )
    assert code == 2 and 'warmup_epochs=-1: must not be negative' in err


# ---------------------------------------------------------------------------- data checked up front


@pytest.mark.slow
def test_a_corrupt_test_image_stops_eval_test_before_training(tiny_data, tmp_path, capsys):
    data_dir = _copy(tiny_data, tmp_path / 'AD_NC')
    bad = next((data_dir / 'test' / 'AD').glob('*.jpeg'))
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    train_args = ['--data-dir', data_dir, '--output-dir', tmp_path / 'run']
    train_args += [*ONE_EPOCH, '--eval-test']
    code, _, err = train_in_process(capsys, *train_args)
    assert code == 1  # a problem in the data
    assert '1 test file(s) cannot be decoded' in err and bad.name in err
    assert '--skip-bad-images' in err
    assert not (tmp_path / 'run' / 'checkpoints').exists()  # found before any training
    proc = run_train(*train_args, '--skip-bad-images')
    assert '--skip-bad-images: dropped 1 of 24 test file(s)' in proc.stderr
    assert json.loads((tmp_path / 'run/eval/metrics.json').read_text())['slice']['n'] == 23
    # evaluate.py reports the same file the same way, and skips it on request
    eval_args = ['--model', tmp_path / 'run', '--data-dir', data_dir, '--n-boot', '0']
    code, _, err = cli_in_process(capsys, 'evaluate', *eval_args, '--output-dir', tmp_path / 'ev')
    assert code == 1 and bad.name in err
    assert '1 test file(s) cannot be decoded' in err and '--skip-bad-images' in err
    code, _, _ = cli_in_process(
        capsys, 'evaluate', *eval_args, '--output-dir', tmp_path / 'ev', '--skip-bad-images'
    )
    assert code == 0


@pytest.mark.slow
def test_a_file_is_scan_run_can_be_evaluated(tmp_path, capsys):
    data_dir = tmp_path / 'flat'
    for split, n in (('train', 5), ('test', 2)):
        for label, name in enumerate(('NC', 'AD')):
            (data_dir / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.full((40, 48), 60 + 120 * label, np.uint8) + np.uint8(i)
                Image.fromarray(pixels).save(
                    data_dir / split / name / f'{split}-{name}-scan{i}.png'
                )
    run = tmp_path / 'run'
    run_train(
        '--data-dir',
        data_dir,
        '--output-dir',
        run,
        *with_option(ONE_EPOCH, '--batch-size', '2'),
        '--file-is-scan',
        '--val-fraction',
        '0.4',
    )
    assert read_export_settings(run / 'best').file_is_scan is True
    code, _, err = cli_in_process(
        capsys, 'evaluate', '--model', run, '--data-dir', data_dir, '--n-boot', '0'
    )
    assert code == 0, err
    assert json.loads((run / 'eval/metrics.json').read_text())['scan']['n'] == 4


# ------------------------------------------------------------------------------ the operating point


def test_validation_metrics_are_those_of_the_shipped_operating_point(one_epoch_run):
    """The logged validation accuracy is what the export does on the validation scans: same
    weights, same temperature, same threshold."""
    run, data_dir = one_epoch_run
    row = json.loads((run / 'metrics.jsonl').read_text().splitlines()[-1])
    settings = read_export_settings(run / 'best')
    prefix = 'val' if settings.weights == 'live' else 'ema_val'
    assert (
        row[f'{prefix}_threshold'] == settings.threshold
        and row[f'{prefix}_temperature'] == settings.temperature
    )
    val = select(data.scan_split(data_dir, 'train'), _split(run), 'val')
    probs = load_model(run).predict(val)  # the stored temperature
    scans, y = [s.scan for s in val], data.binary_labels(val, ['NC', 'AD'])
    report = metrics.slice_and_scan_metrics(scans, y, probs[:, 1], settings.threshold)
    for level in ('scan', 'slice'):
        for key in ('accuracy', 'sensitivity', 'specificity'):
            assert row[f'{prefix}_{level}_{key}'] == pytest.approx(report[level][key]), (level, key)


def test_ema_reaches_the_configured_decay_when_the_lr_warmup_ends():
    """README rule: the decay rises (timm's 1 - (1 + t / gamma) ** -2/3) and reaches ema_decay after
    max(warmup_epochs, 1) epochs of updates."""
    cfg = load_config(None, {'ema_decay': '0.9998', 'warmup_epochs': '5'})
    # ADNI at batch 128: ~135 updates / epoch
    ema = make_ema(cfg, torch.nn.Linear(2, 2), updates_per_epoch=135)
    reach = 5 * 135
    assert ema.get_decay(reach + 1) == pytest.approx(0.9998, abs=1e-9)
    assert ema.get_decay(13_500) == 0.9998  # held for the rest of a 100-epoch run
    assert 0.99 < ema.get_decay(reach // 2) < 0.9998  # still rising halfway through the warmup
    no_warmup = make_ema(
        load_config(None, {'ema_decay': '0.99', 'warmup_epochs': '0'}), torch.nn.Linear(2, 2), 40
    )
    # one epoch when there is no warmup
    assert no_warmup.get_decay(41) == pytest.approx(0.99, abs=1e-9)


# ----------------------------------------------------------------------------- evaluation precision


def test_evaluation_runs_in_the_recorded_precision_and_chooses_the_tta_threshold_with_tta(
    tiny_run, tiny_data, tmp_path
):
    from adni_timm.evaluation import EvaluationOptions, evaluate

    run = tiny_run[0]
    loaded = load_model(run)
    # trained in fp32 on the CPU: evaluated in fp32, also on a GPU
    assert loaded.precision == 'no' and loaded.settings.precision == 'no'
    bf16 = shutil.copytree(run, tmp_path / 'bf16')
    config = json.loads((bf16 / 'best' / 'config.json').read_text())
    config['adni_timm']['precision'] = 'bf16'
    (bf16 / 'best' / 'config.json').write_text(json.dumps(config))
    assert load_model(bf16).precision == 'bf16'
    assert evaluate(loaded, tiny_data, n_boot=0)['precision'] == 'no'
    tta = evaluate(str(run), tiny_data, n_boot=0, options=EvaluationOptions(tta=True))
    assert tta['threshold_selection']['tta'] is True and tta['threshold_selection'][
        'chosen_on'
    ] == str(run / 'split.json')
    val = select(data.scan_split(tiny_data, 'train'), _split(run), 'val')
    # chosen again, with TTA, on validation
    point = metrics.operating_point(
        predict_slices(loaded.net, val, tta=True),
        np.array([s.label for s in val]),
        [s.scan for s in val],
        1,
    )
    assert tta['threshold'] == pytest.approx(point['threshold'])
    assert tta['calibration']['temperature'] == pytest.approx(point['temperature'])
    # no split.json: no validation to choose on
    plain = shutil.copytree(run / 'best', tmp_path / 'export')
    said = evaluate(str(plain), tiny_data, n_boot=0, options=EvaluationOptions(tta=True))
    assert (
        said['threshold'] == read_export_settings(plain).threshold
        and said['threshold_note'] == 'chosen without TTA'
    )


@pytest.mark.gpu
def test_an_fp32_run_is_evaluated_in_fp32_on_cuda(tiny_run, tiny_data):
    loaded = load_model(tiny_run[0])
    slices = data.scan_split(tiny_data, 'test')
    cpu = predict_slices(loaded.net, slices, precision=loaded.precision)
    cuda = predict_slices(loaded.net.cuda(), slices, precision=loaded.precision)
    # no autocast: scans near the threshold do not flip
    np.testing.assert_allclose(cuda, cpu, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------ README claims


@pytest.mark.parametrize('name', ['resnet18', 'vit_tiny_patch16_224'])
def test_any_timm_model_trains_at_the_configured_size_and_exports(name, tmp_path):
    """--model resnet18 (any size) and a ViT (fixed input
    size: built for img_size) both work end to end.
    """
    from adni_timm.export.format import export_model
    from adni_timm.train.loop import create_model

    model = create_model(load_config(None, {'model': name, 'img_size': '64'})).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 2)
    export_model(model, tmp_path / 'best')
    loaded = load_model(tmp_path / 'best').net
    with torch.no_grad():  # the 3-channel luma stem summed back: fp32 rounding, not identity
        torch.testing.assert_close(loaded(x), logits, rtol=1e-5, atol=1e-6)
