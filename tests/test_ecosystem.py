"""Speaking the ecosystem's language (issue 30): Accelerate's configured precision and trackers,
timm's flag names, --version, and licence metadata that tells the truth."""

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from accelerate.utils import LoggerType
from huggingface_hub import ModelCard

from adni_timm.cli import train as train_cli
from adni_timm.config import load_config
from adni_timm.publish.card import build_model_card
from adni_timm.export.licence import ADNI_DUA_LINK, ADNI_DUA_NAME, LicenceError, weights_licence
from adni_timm.train.precision import ENV, PrecisionError, resolve_precision
from helpers import ROOT, TINY, train_in_process, with_option

NO_FILE = Path('/nonexistent/default_config.yaml')
LAUNCHED = {'ACCELERATE_DYNAMO_BACKEND': 'NO'}  # what every `accelerate launch` process has


# --------------------------------------------------------------------------------------------------
# precision: ours when chosen, else Accelerate's, else our rule


def _accelerate_file(tmp_path, precision):
    path = tmp_path / 'default_config.yaml'
    path.write_text(yaml.safe_dump({'distributed_type': 'NO', 'mixed_precision': precision}))
    return path


@pytest.mark.parametrize(
    'setting, environ, file_says, cuda, expected, source',
    [
        # nothing configured: our rule
        ('auto', {}, None, False, 'no', 'auto'),
        ('auto', {}, None, True, 'bf16', 'auto'),
        # accelerate launch --mixed_precision fp16 (or its config), or an exported variable
        ('auto', {ENV: 'fp16'}, None, True, 'fp16', ENV),
        ('auto', {ENV: 'bf16', **LAUNCHED}, 'fp16', True, 'bf16', ENV),
        # `accelerate config` default file, for a plain python run
        ('auto', {}, 'fp16', True, 'fp16', 'accelerate config'),
        ('auto', {}, 'no', True, 'no', 'accelerate config'),
        # an exported ACCELERATE_MIXED_PRECISION=no outside accelerate launch is a choice
        ('auto', {ENV: 'no'}, None, True, 'no', ENV),
        # accelerate launch writes `no` when nothing chose: that is not a choice ...
        ('auto', {ENV: 'no', **LAUNCHED}, None, True, 'bf16', 'auto'),
        # ... unless the default config file says it
        ('auto', {ENV: 'no', **LAUNCHED}, 'no', True, 'no', 'accelerate config'),
        # our own setting beats all of them
        ('no', {ENV: 'bf16'}, 'fp16', True, 'no', '--mixed-precision'),
        ('fp16', {ENV: 'bf16'}, None, True, 'fp16', '--mixed-precision'),
    ],
)
def test_auto_precision_defers_to_accelerate(
    tmp_path, setting, environ, file_says, cuda, expected, source
):
    config_file = _accelerate_file(tmp_path, file_says) if file_says else NO_FILE
    got = resolve_precision(setting, environ=environ, config_file=config_file, cuda=cuda, bf16=True)
    assert got.name == expected and got.source.startswith(source), got


def test_the_default_file_is_found_where_accelerate_config_writes_it(tmp_path):
    (tmp_path / 'accelerate').mkdir()
    _accelerate_file(tmp_path / 'accelerate', 'fp16')
    got = resolve_precision('auto', environ={'HF_HOME': str(tmp_path)}, cuda=True, bf16=True)
    assert got.name == 'fp16' and str(tmp_path / 'accelerate') in got.source


def test_a_precision_we_cannot_train_in_names_where_it_was_set():
    with pytest.raises(PrecisionError, match=f'fp8.*{ENV}'):
        resolve_precision('auto', environ={ENV: 'fp8'}, config_file=NO_FILE)


def test_a_resumed_run_keeps_the_precision_it_recorded(monkeypatch):
    from adni_timm.run import RunRecord
    from adni_timm.train.loop import run_precision

    monkeypatch.setenv(ENV, 'fp16')  # this launch would say fp16 ...
    record = RunRecord(config=load_config(), data_dir='.', mixed_precision='bf16')
    kept = run_precision(record, resume=True)  # ... the run trained in bf16 and goes on in it
    assert kept.name == 'bf16' and 'record' in kept.source
    assert run_precision(record, resume=False).name == 'fp16'  # a new run asks Accelerate


# the model's head output dtype while training (autocast makes it bf16), and the record
PROBE = textwrap.dedent("""
    import json, sys
    import torch
    from adni_timm.train import loop
    dtypes = set()
    build = loop.create_model
    def create_model(cfg):
        model = build(cfg)
        def hook(module, args, out):
            if module.training:
                dtypes.add(str(out.dtype))
        model.get_classifier().register_forward_hook(hook)
        return model
    loop.create_model = create_model
    from adni_timm.cli.train import main
    code = main(sys.argv[2:])
    json.dump({'code': code, 'dtypes': sorted(dtypes)}, open(sys.argv[1], 'w'))
""")


@pytest.mark.slow  # one bf16 epoch on the CPU: 77 CPU-seconds, 4.5 min on the loaded 2-core VM
def test_the_configured_accelerate_precision_is_what_trains_and_is_recorded(tiny_data, tmp_path):
    run, out = tmp_path / 'run', tmp_path / 'probe.json'
    # 32 px: bf16 convolutions are slow on a CPU; the dtype does not depend on the size
    args = with_option(with_option(TINY, '--epochs', '1'), '--img-size', '32')
    env = {
        **os.environ,
        ENV: 'bf16',  # as `accelerate launch --mixed_precision bf16` sets it
        'HF_HOME': str(tmp_path / 'hf'),  # no accelerate config file of this machine
    }
    proc = subprocess.run(
        [sys.executable, '-c', PROBE, out, '--data-dir', tiny_data, '--output-dir', run, *args],
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(out.read_text())
    assert probe == {'code': 0, 'dtypes': ['torch.bfloat16']}
    record = yaml.safe_load((run / 'train_config.yaml').read_text())
    assert record['config']['mixed_precision'] == 'auto'  # the setting, unchanged
    assert record['mixed_precision'] == 'bf16'  # what trained
    assert record['mixed_precision_source'] == ENV
    assert f'precision bf16 (from {ENV})' in proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------------
# trackers


def test_log_with_offers_every_accelerate_tracker():
    parser = train_cli.build_parser()
    names = [t.value for t in LoggerType]
    for name in names:
        assert parser.parse_args(['--log-with', name]).log_with == name
    help_text = parser.format_help()
    assert all(name in help_text for name in names)


def test_a_tracker_without_its_package_is_one_line_naming_it(tiny_data, tmp_path, capsys):
    from accelerate.tracking import get_available_trackers

    available = get_available_trackers()
    missing = [t.value for t in LoggerType if t.value != 'all' and t not in available]
    if not missing:
        pytest.skip('every tracker package is installed here')
    code, _, err = train_in_process(
        capsys, '--data-dir', tiny_data, '--output-dir', tmp_path / 'r', '--log-with', missing[0]
    )
    assert code == 2
    assert err.count('\n') == 1 and f'pip install {missing[0]}' in err, err


# --------------------------------------------------------------------------------------------------
# timm's flag names


def test_timm_flag_names_parse_to_the_same_config():
    parser = train_cli.build_parser()
    ours = parser.parse_args(
        '--re-prob 0.25 --auto-augment rand-m9-mstd0.5 --ema --ema-decay 0.999 --num-workers 3 '
        '--compile --batch-size 32'.split()
    )
    timms = parser.parse_args(
        '--reprob 0.25 --aa rand-m9-mstd0.5 --model-ema --model-ema-decay 0.999 -j 3 '
        '--torchcompile -b 32'.split()
    )
    assert vars(ours) == vars(timms)
    assert parser.parse_args(['--workers', '3']).num_workers == '3'
    assert parser.parse_args(['--torchcompile', 'inductor']).compile == 'true'
    keys = set(vars(load_config()))
    overrides = {k: v for k, v in vars(timms).items() if v is not None and k in keys}
    cfg = load_config(overrides=overrides)
    assert (cfg.re_prob, cfg.auto_augment, cfg.ema, cfg.ema_decay) == (
        0.25,
        'rand-m9-mstd0.5',
        True,
        0.999,
    )
    assert (cfg.num_workers, cfg.compile, cfg.batch_size) == (3, True, 32)
    assert parser.parse_args(['--log-wandb']).log_with == 'wandb'


def test_a_torchcompile_backend_we_do_not_run_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.build_parser().parse_args(['--torchcompile', 'aot_eager'])
    assert e.value.code == 2 and 'inductor' in capsys.readouterr().err


def test_timm_aliases_are_documented():
    readme = (ROOT / 'README.md').read_text()
    for flag in ('--reprob', '--aa', '--model-ema', '-j/--workers', '--torchcompile'):
        assert f'`{flag}`' in readme, flag


# --------------------------------------------------------------------------------------------------
# --version


@pytest.mark.parametrize(
    'tool', ['train', 'evaluate', 'push', 'check', 'synthetic', 'app', 'prepare', 'cv']
)
def test_every_command_says_its_version(tool, capsys):
    import importlib

    main = importlib.import_module(f'adni_timm.cli.{tool}').main
    with pytest.raises(SystemExit) as e:
        main(['--version'])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith(f' {version("adni-timm")}'), out


# --------------------------------------------------------------------------------------------------
# licences


def _config(**extra):
    return {
        'architecture': 'convnext_atto',
        'num_classes': 2,
        'label_names': ['NC', 'AD'],
        'pretrained_cfg': {'input_size': [3, 64, 64], 'mean': [0.5], 'std': [0.5]},
        'adni_timm': {'threshold': 0.5, 'classes': ['NC', 'AD'], **extra},
    }


def _card(config, **kwargs):
    card = build_model_card(repo_id='lab/m', config=config, num_params=1, **kwargs)
    return ModelCard(str(card))  # re-parsed, as the Hub reads it


def test_an_adni_data_export_says_license_other_naming_the_data_use_agreement():
    card = _card(_config(data='ADNI AD_NC'))
    data = card.data.to_dict()
    assert data['license'] == 'other'
    assert data['license_name'] == ADNI_DUA_NAME and data['license_link'] == ADNI_DUA_LINK
    assert 'ADNI Data Use Agreement' in card.text and 'Apache-2.0' in card.text  # the code's


def test_a_synthetic_export_stays_apache():
    card = _card(_config(data='SYNTHETIC', synthetic=True))
    assert card.data.license == 'apache-2.0' and 'license_name' not in card.data.to_dict()


def test_other_data_takes_the_licence_the_publisher_names():
    config = _config(data='OASIS-3 T1 scans')
    unnamed = _card(config).data.to_dict()
    assert unnamed['license'] == 'other' and unnamed['license_name'] == 'oasis-3-t1-scans-terms'
    named = _card(
        config, licence='OASIS Data Use Terms', licence_link='https://sites.wustl.edu/oasisbrains/'
    ).data.to_dict()
    assert named['license_name'] == 'oasis-data-use-terms'
    assert named['license_link'] == 'https://sites.wustl.edu/oasisbrains/'


def test_a_licence_for_synthetic_weights_is_refused():
    with pytest.raises(LicenceError, match='SYNTHETIC'):
        weights_licence(synthetic=True, adni=False, data_name='x', chosen='cc-by-4.0')
