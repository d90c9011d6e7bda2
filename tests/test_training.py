"""train.py end to end on a tiny synthetic set (CPU):
run folder, resume after a kill, errors, 2 processes.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from adni_timm.synthetic.slices import generate
from helpers import LAUNCH, ROOT, TINY, run_train, train_and_kill, train_in_process, with_option


def _tiny_config():
    """The TINY recipe as a TrainConfig, for runs inside the test process."""
    from adni_timm.config import load_config

    return load_config(
        None, dict(zip([a.lstrip('-').replace('-', '_') for a in TINY[::2]], TINY[1::2]))
    )


def test_run_folder_has_the_contract_files(tiny_run):
    run, proc = tiny_run
    for name in (
        'train_config.yaml',
        'split.json',
        'metrics.jsonl',
        'curves.png',
        'best/model.safetensors',
        'best/config.json',
        'checkpoints/last/trainer_state.json',
    ):
        assert (run / name).is_file(), name
    assert not list((run / 'best').glob('*.bin'))
    record = yaml.safe_load((run / 'train_config.yaml').read_text())
    assert record['config']['model'] == 'adni_convnext_atto' and record['config']['img_size'] == 64
    assert {'torch', 'timm', 'accelerate'} <= set(record['versions'])
    assert 'epoch 2/2' in proc.stderr + proc.stdout


def test_split_is_by_scan_and_counts_every_val_slice(tiny_run, tiny_data):
    run, _ = tiny_run
    split = json.loads((run / 'split.json').read_text())
    assert split['level'] == 'scan'
    assert not set(split['train']) & set(split['val'])
    assert not (set(split['train']) | set(split['val'])) & set(split['test'])
    assert len(split['val']) == 4 and len(split['train']) == 8  # stratified: 2 + 2 of 12
    rows = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2]
    for row in rows:
        assert row['val_slices'] == row['ema_val_slices'] == 4 * 4
        for key in (
            'train_loss',
            'val_scan_auc',
            'val_scan_balanced_accuracy',
            'val_slice_accuracy',
            'val_scan_sensitivity',
            'val_scan_specificity',
            'ema_val_scan_auc',
            'lr',
        ):
            assert key in row, key


@pytest.mark.slow
def test_best_export_loads_in_plain_timm_with_the_same_logits(tiny_run, tmp_path):
    run, _ = tiny_run
    cfg = json.loads((run / 'best/config.json').read_text())
    assert cfg['architecture'] == 'convnext_atto'
    extra = cfg['adni_timm']
    assert 0.0 <= extra['threshold'] <= 1.0 and extra['threshold_source'] == 'validation'
    assert extra['weights'] in ('live', 'ema') and extra['classes'] == ['NC', 'AD']
    # reference logits of the trained 1-channel network (the
    # checkpoint's live or EMA weights, as exported) ...
    from adni_timm.inference import load_model

    model = load_model(run).net
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save({'x': x, 'logits': model(x).detach()}, tmp_path / 'ref.pt')
    # ... in a fresh process that never imports adni_timm:
    # 3 channels (a grayscale slice as RGB) and 1 channel
    code = (
        f'import sys, timm, torch\nref = torch.load(r"{tmp_path / "ref.pt"}", '
        f'weights_only=True)\nrgb = timm.create_model("local-dir:{run / "best"}", '
        f'pretrained=True).eval()\ntorch.testing.assert_close(rgb(ref["x"].repeat(1, 3, 1, 1)), '
        f'ref["logits"], rtol=1e-5, atol=1e-6)\n'
        f'gray = timm.create_model("local-dir:{run / "best"}", pretrained=True, in_chans=1).eval()'
        f'\ntorch.testing.assert_close(gray(ref["x"]), '
        f'ref["logits"], rtol=1e-5, atol=1e-6)\nassert "adni_timm" not in '
        f'sys.modules\nprint(timm.data.resolve_data_config(model=rgb)["input_size"])\n'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[3, 64, 64]'


def test_existing_run_folder_is_not_overwritten(tiny_run, tiny_data, capsys):
    run, _ = tiny_run
    before = (run / 'best/model.safetensors').read_bytes()
    code, _, err = train_in_process(capsys, '--data-dir', tiny_data, '--output-dir', run, *TINY)
    assert code == 2
    assert 'already exists' in err and '--resume' in err and '--overwrite' in err
    assert (run / 'best/model.safetensors').read_bytes() == before


@pytest.mark.parametrize(
    'args, message',
    [
        (['--lr', '-0.1'], 'lr=-0.1: must be positive'),
        (['--model', 'no_such_model'], 'not a registered timm model'),
        (['--opt', 'sgdd'], 'unknown optimizer'),
        (['--img-size', '70'], 'multiple of 32'),
    ],
)
def test_bad_config_is_refused_before_any_work(tiny_data, tmp_path, args, message, capsys):
    code, _, err = train_in_process(
        capsys, '--data-dir', tiny_data, '--output-dir', tmp_path / 'run', *args
    )
    assert code == 2 and message in err
    assert not (tmp_path / 'run').exists()


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # refused while parsing: a usage error
        train_in_process(
            capsys, '--data-dir', tmp_path / 'nope', '--output-dir', tmp_path / 'run', *TINY
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and f'{tmp_path / "nope"} does not exist' in err
    assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(tiny_data, tmp_path):
    # 32 px: three runs of three epochs; the comparison does not depend on the size
    args = [*with_option(TINY, '--img-size', '32'), '--epochs', '3', '--data-dir', tiny_data]
    full = tmp_path / 'full'
    run_train('--output-dir', full, *args)
    killed = tmp_path / 'killed'
    state_file = killed / 'checkpoints/last/trainer_state.json'
    train_and_kill(killed, args, state_file)
    epoch_at_kill = json.loads(state_file.read_text())['epoch']
    assert 1 <= epoch_at_kill < 3
    run_train('--output-dir', killed, '--resume')
    from safetensors.torch import load_file

    a = load_file(full / 'checkpoints/last/model.safetensors')
    b = load_file(killed / 'checkpoints/last/model.safetensors')
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    rows_full = [json.loads(x) for x in (full / 'metrics.jsonl').read_text().splitlines()]
    rows_resumed = [json.loads(x) for x in (killed / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows_resumed] == [1, 2, 3]
    assert rows_resumed[-1]['train_loss'] == pytest.approx(rows_full[-1]['train_loss'], rel=1e-4)
    assert json.loads((full / 'split.json').read_text()) == json.loads(
        (killed / 'split.json').read_text()
    )


def test_resume_refuses_to_change_the_recipe(tiny_run, capsys):
    run, _ = tiny_run
    code, _, err = train_in_process(capsys, '--output-dir', run, '--resume', '--lr', '0.1')
    assert code == 2 and "['lr'] cannot change" in err


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(tiny_data, tmp_path, monkeypatch):
    from adni_timm.train import loop as training
    from adni_timm.run import RunRecord

    cfg = _tiny_config()
    cfg.epochs, cfg.smoothing = 3, 0.0
    calls = {'n': 0}
    original = torch.nn.CrossEntropyLoss.forward

    def poisoned(self, logits, target):
        calls['n'] += 1
        loss = original(self, logits, target)
        return loss * float('nan') if calls['n'] > 4 else loss  # 4 steps/epoch: NaN from epoch 2 on

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, 'forward', poisoned)
    with pytest.raises(training.TrainingError, match='non-finite training loss'):
        training.train(RunRecord.new(cfg, tiny_data), tmp_path / 'run')
    state = json.loads((tmp_path / 'run/checkpoints/last/trainer_state.json').read_text())
    assert state['epoch'] == 1
    from safetensors.torch import load_file

    weights = load_file(tmp_path / 'run/checkpoints/last/model.safetensors')
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_curves_are_redrawn_only_after_the_last_epoch_within_the_interval(
    tiny_data, tmp_path, monkeypatch
):
    from adni_timm import plots
    from adni_timm.run import RunRecord
    from adni_timm.train import loop as training

    drawn, plot_curves = [], plots.plot_curves

    def counting(history, *args, **kwargs):
        drawn.append(len(history))
        return plot_curves(history, *args, **kwargs)

    monkeypatch.setattr(plots, 'plot_curves', counting)
    monkeypatch.setattr(training, 'CURVES_EVERY_S', float('inf'))
    training.train(RunRecord.new(_tiny_config(), tiny_data), tmp_path / 'run')
    assert drawn == [2]  # epoch 1 of 2 is not drawn; the last always is
    assert (tmp_path / 'run/curves.png').is_file()
    assert len((tmp_path / 'run/metrics.jsonl').read_text().splitlines()) == 2


@pytest.mark.parametrize(
    'epoch, since_s, due',
    [(0, 29.9, False), (0, 30.0, True), (1, 0.0, False), (2, 0.0, True), (2, 1e9, True)],
)
def test_curves_are_due_after_the_interval_or_the_last_epoch(epoch, since_s, due):
    from adni_timm.train.loop import curves_due

    assert curves_due(epoch, 3, since_s, every_s=30.0) is due


@pytest.mark.slow
def test_two_processes_count_each_val_slice_once_write_from_main_and_agree(tiny_data, tmp_path):
    probe = tmp_path / 'probe'
    probe.mkdir()
    run = tmp_path / 'ddp'
    # 4 val scans x 4 slices = 16 val slices; batch 3
    # over 2 processes forces padding of the last batch
    cmd = [
        *LAUNCH,
        '--main_process_port',
        '29513',
        str(ROOT / 'tests/ddp_probe.py'),
        '--data-dir',
        str(tiny_data),
        '--output-dir',
        str(run),
        *with_option(TINY, '--batch-size', '3'),
    ]
    env = {
        **os.environ,
        'ACCELERATE_USE_CPU': '1',
        'ADNI_TIMM_PROBE_DIR': str(probe),
        'OMP_NUM_THREADS': '1',
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((probe / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert ranks[0]['weights_sha256'] == ranks[1]['weights_sha256']
    assert ranks[0]['val_slices'] == [16, 16]
    rank1_in_run = [p for p in ranks[1]['written'] if str(run) in p]
    # the only files process 1 writes are its own RNG states, which an exact resume needs
    assert all(Path(p).name == 'random_states_1.pkl' for p in rank1_in_run), rank1_in_run
    assert any(str(run) in p for p in ranks[0]['written'])
    # one log line, from the main process
    assert (proc.stdout + proc.stderr).count('epoch 2/2 | loss') == 1


def test_the_demo_trains_at_64_px_on_a_cpu_unless_told_otherwise(tiny_data, tmp_path, monkeypatch):
    from adni_timm.cli import train as cli
    from adni_timm.synthetic import slices

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(slices, 'demo_dataset', lambda cache_root=None: tiny_data)
    monkeypatch.setattr(cli, '_train', lambda record, run_dir, **kw: record)  # no training
    started = [
        cli.run(['--demo', '--output-dir', str(tmp_path / 'a')], 'adni-train'),
        cli.run(['--demo', '--output-dir', str(tmp_path / 'b'), '--img-size', '96'], 'adni-train'),
    ]
    assert [r.config.img_size for r in started] == [64, 96]  # ConvNeXt-T: ~5 img/s at 224 px
    assert all(r.synthetic and r.eval_test for r in started)
    assert {r.data_dir for r in started} == {str(tiny_data.resolve())}


@pytest.mark.slow
def test_demo_runs_without_data_and_evaluates_on_the_synthetic_test_split(tmp_path):
    run = tmp_path / 'demo'
    # 32 px: the same run as the CPU's 64 px (test above) at a quarter of the model's work
    proc = run_train(
        *('--demo', '--output-dir', run, '--model', 'adni_convnext_atto', '--img-size', '32'),
        *('--epochs', '1', '--warmup-epochs', '0', '--num-workers', '0'),
        env={'ADNI_TIMM_CACHE': str(tmp_path / 'cache')},
    )
    metrics = json.loads((run / 'eval/metrics.json').read_text())
    # 16 + 16 synthetic test scans
    assert metrics['split'] == 'test' and metrics['scan']['n'] == 32
    assert metrics['threshold_source'] == 'validation'
    record = yaml.safe_load((run / 'train_config.yaml').read_text())
    assert 'synthetic' in record['data'].lower() and record['config']['img_size'] == 32
    assert f'run folder   {run}' in proc.stdout and f'evaluation   {run / "eval"}' in proc.stdout
    assert any((tmp_path / 'cache').glob('synthetic-demo-*/train/AD/*.jpeg'))
    # resuming the demo keeps what it is: synthetic data, evaluated on its test split
    (run / 'eval/metrics.json').unlink()
    run_train(
        '--output-dir',
        run,
        '--resume',
        '--epochs',
        '2',
        env={'ADNI_TIMM_CACHE': str(tmp_path / 'cache')},
    )
    from adni_timm.run import RunRecord

    record = RunRecord.load(run)  # the original record plus the resume's change
    assert (
        record.synthetic
        and record.config.epochs == 2
        and record.resumes[0]['changed'] == {'epochs': [1, 2]}
    )
    assert (
        'synthetic'
        in json.loads((run / 'best/config.json').read_text())['adni_timm']['data'].lower()
    )
    assert (run / 'eval/metrics.json').is_file()


def test_out_of_memory_prints_a_hint(monkeypatch, capsys, tiny_data, tmp_path):
    sys.path.insert(0, str(ROOT))
    import train as train_cli
    from adni_timm.train import loop as training

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    monkeypatch.setattr(training, 'train', oom)
    code = train_cli.main(
        ['--data-dir', str(tiny_data), '--output-dir', str(tmp_path / 'run'), *TINY]
    )
    assert code == 3
    err = capsys.readouterr().err
    assert 'out of memory' in err and '--batch-size' in err and '--grad-accum-steps' in err


def test_bool_overrides_work_as_flags():
    sys.path.insert(0, str(ROOT))
    import train as train_cli

    args = train_cli.build_parser().parse_args(['--skip-bad-images', '--ema', 'false'])
    assert args.skip_bad_images == 'true' and args.ema == 'false'


@pytest.mark.gpu
def test_cuda_run_uses_bf16_channels_last_and_exports_loadable_weights(tiny_data, tmp_path):
    run = tmp_path / 'cuda'
    run_train(
        '--data-dir', tiny_data, '--output-dir', run, *with_option(TINY, '--num-workers', '2')
    )
    record = yaml.safe_load((run / 'train_config.yaml').read_text())
    assert record['device'].startswith('cuda')
    assert record['mixed_precision'] == ('bf16' if torch.cuda.is_bf16_supported() else 'fp16')
    import timm

    model = timm.create_model(f'local-dir:{run / "best"}', pretrained=True).eval()
    assert torch.isfinite(model(torch.randn(2, 1, 64, 64))).all()


def test_resume_refuses_another_process_count(tiny_run, tmp_path, capsys):
    run = tmp_path / 'copy'
    shutil.copytree(tiny_run[0], run)
    record = yaml.safe_load((run / 'train_config.yaml').read_text())
    record['num_processes'] = 4
    (run / 'train_config.yaml').write_text(yaml.safe_dump(record))
    code, _, err = train_in_process(capsys, '--output-dir', run, '--resume')
    assert code == 2 and 'trained with 4 process(es)' in err


def test_a_best_export_lost_to_a_kill_is_redone_on_resume(tmp_path):
    import timm
    from adni_timm.export import format as export
    from adni_timm.config import load_config
    from adni_timm.run import RunRecord
    from adni_timm.run import Run
    from adni_timm.train.loop import BestEpoch, LoopState, _repair_best_export

    record = RunRecord.new(
        load_config(None, {'model': 'adni_convnext_atto', 'img_size': '64'}), tmp_path
    )
    model = timm.create_model('adni_convnext_atto')
    best = BestEpoch(
        epoch=3,
        weights='live',
        metric='scan_auc',
        value=0.9,
        threshold=0.4,
        threshold_source='validation',
    )
    # killed before the export
    _repair_best_export(Run(tmp_path), LoopState(epoch=3, best=best), model, None, record)
    assert export.read_export_settings(tmp_path / 'best').epoch == 3
    before = (tmp_path / 'best/model.safetensors').stat().st_mtime_ns
    # best is older: nothing to do
    _repair_best_export(Run(tmp_path), LoopState(epoch=4, best=best), model, None, record)
    assert (tmp_path / 'best/model.safetensors').stat().st_mtime_ns == before


@pytest.mark.slow
def test_three_classes_validate_ad_against_the_rest(tmp_path):
    data_dir = tmp_path / 'AD_NC'
    generate(
        data_dir, train_subjects=3, test_subjects=1, slices=4, seed=0, classes=('NC', 'MCI', 'AD')
    )
    run = tmp_path / 'run3'
    run_train(
        '--data-dir',
        data_dir,
        '--output-dir',
        run,
        '--classes',
        'NC,MCI,AD',
        '--val-fraction',
        '0.34',
        *with_option(with_option(TINY, '--epochs', '1'), '--warmup-epochs', '0'),
    )
    row = json.loads((run / 'metrics.jsonl').read_text().splitlines()[0])
    assert row['val_slices'] == 3 * 4  # one scan per class
    assert json.loads((run / 'best/config.json').read_text())['num_classes'] == 3


def test_tensorboard_logs_under_the_run_folder(tiny_data, tmp_path):
    pytest.importorskip('tensorboard')  # optional tracker: runs where it is installed
    run = tmp_path / 'tb'
    run_train(
        '--data-dir',
        tiny_data,
        '--output-dir',
        run,
        *with_option(TINY, '--epochs', '2'),
        '--log-with',
        'tensorboard',
    )
    assert list((run / 'logs').rglob('events.out.tfevents.*'))
    assert any('classes' in p.read_text() for p in (run / 'logs').rglob('hparams.yml'))
