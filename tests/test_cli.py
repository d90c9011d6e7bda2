"""The front ends (adni_timm.cli): each command explains itself (descriptions, choices, defaults in
the syntax it accepts, examples, its own name), list values take both forms, and one exit-code
policy holds for every command."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import runpy
import sys
import warnings

import pytest

from adni_timm import cli
from adni_timm.cli import EXIT_PROBLEM, EXIT_REFUSED, exit_code, fail
from adni_timm.cli import train as train_cli
from adni_timm.config import ConfigError, TrainConfig, field_help, field_types, load_config
from adni_timm.data import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {  # module: the console script it backs
    'train': 'adni-train',
    'evaluate': 'adni-evaluate',
    'push': 'adni-push',
    'check': 'adni-check-data',
    'synthetic': 'adni-synthetic',
    'app': 'adni-app',
    'cv': 'python -m adni_timm.cv',
}


def _help(parser: argparse.ArgumentParser) -> str:
    return ' '.join(parser.format_help().split())  # words, not the terminal's line breaks


def _override_help(flag: str) -> str:
    """The help text argparse shows for one option of adni-train."""
    (action,) = [a for a in train_cli.build_parser()._actions if flag in a.option_strings]
    return action.help


# ------------------------------------------------------------------------------ adni-train --help


def test_every_override_has_one_line_of_help_from_the_config():
    helps = field_help()
    assert set(helps) == set(field_types())
    for key, meta in helps.items():
        text = meta.get('help', '')
        assert text and '\n' not in text and len(text) < 100, key
        # the option shows the config's own description: one place for both
        assert _override_help(f'--{key.replace("_", "-")}').startswith(text.replace('%', '%%'))


@pytest.mark.parametrize(
    'flag, default',
    [
        ('--auto-augment', '(default: null)'),
        ('--target-sensitivity', '(default: null)'),
        ('--ema', '(default: true)'),
        ('--compile', '(default: false)'),
        ('--scale', '(default: 0.7,1.0)'),
        ('--classes', '(default: NC,AD)'),
        ('--clip-grad', '(default: 1.0)'),
        ('--lr', '(default: 0.0005)'),
    ],
)
def test_defaults_are_shown_in_the_syntax_the_option_accepts(flag, default):
    text = _override_help(flag)
    assert text.endswith(default), text
    assert 'None' not in text and 'True' not in text and 'False' not in text
    # and that syntax is accepted back, giving the default
    key = flag[2:].replace('-', '_')
    value = default[len('(default: ') : -1]
    assert getattr(load_config(overrides={key: value}), key) == getattr(TrainConfig(), key)


def test_choices_are_listed():
    usage = train_cli.build_parser().format_usage()
    assert '--split-level {scan,slice}' in usage
    # every tracker Accelerate offers: too many for the usage line, listed in the help
    assert '--log-with NAME' in usage
    assert 'one of null, all, aim, tensorboard, wandb' in _override_help('--log-with')
    assert '--mixed-precision {auto,no,fp16,bf16}' in usage
    assert 'one of cosine, constant, step, multistep, tanh, poly, wsd' in _override_help('--sched')
    assert 'scan_balanced_accuracy' in _override_help('--best-metric')


@pytest.mark.parametrize('argv', [['0.6', '1.0'], ['0.6,1.0'], ['0.6,', '1.0']])
def test_list_values_take_both_forms(argv):
    args = train_cli.build_parser().parse_args(['--scale', *argv, '--classes', 'NC', 'AD'])
    assert args.scale == '0.6,1.0' and args.classes == 'NC,AD'
    cfg = load_config(overrides={'scale': args.scale, 'classes': args.classes})
    assert cfg.scale == [0.6, 1.0] and cfg.classes == ['NC', 'AD']


def test_a_bad_list_is_still_refused_with_the_key():
    args = train_cli.build_parser().parse_args(['--scale', '0.6', 'x'])
    with pytest.raises(ConfigError, match=r"scale='0.6,x': expected list\[float\]"):
        load_config(overrides={'scale': args.scale})


# ------------------------------------------------------------------- every command: name, examples


@pytest.mark.parametrize('module, name', COMMANDS.items())
def test_each_command_names_itself_and_shows_examples(module, name):
    parser = importlib.import_module(f'adni_timm.cli.{module}').build_parser()
    text = parser.format_help()
    assert text.startswith(f'usage: {name} ')
    examples = text[text.index('\nexamples:\n') :].splitlines()[2:]
    commands = [line.strip() for line in examples if line.startswith('  ')]
    assert len(commands) >= 2 and all(name in c for c in commands[:2]), commands
    # as a script the usage line says what was run
    assert (
        importlib.import_module(f'adni_timm.cli.{module}')
        .build_parser('train.py')
        .format_usage()
        .startswith('usage: train.py ')
    )


def test_evaluate_help_shows_its_defaults_and_what_cam_draws():
    from adni_timm.cli.evaluate import build_parser

    text = _help(build_parser())
    for default in (
        'split folder to evaluate (default: test)',
        'slices per inference batch (default: 64)',
        'data-loader worker processes (default: 0)',
        'bootstrap resamples for 95% CIs (0: none) (default: 1000)',
        'at --cam-layer (default: occlusion)',
    ):
        assert default in text, default
    assert 'the N most confident scans of each outcome (TP/TN/FP/FN)' in text
    assert 'stages.1 at 64 px, stages.3 at 224' in text


def test_evaluate_refuses_a_layer_for_occlusion_and_missing_paths(tmp_path, capsys):
    from adni_timm.cli.evaluate import main

    for argv, message in (
        (
            ['--model', 'm', '--data-dir', str(tmp_path), '--cam', '--cam-layer', 'stages.2'],
            'occlusion has no layer',
        ),
        (['--model', 'm', '--data-dir', str(tmp_path / 'nope')], 'nope does not exist'),
        (['--model', 'm', '--images', str(tmp_path / 'none.png')], 'none.png does not exist'),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == EXIT_REFUSED and message in capsys.readouterr().err


# ----------------------------------------------------------------------------- one exit-code policy


def test_exit_codes_one_policy(capsys):
    assert (cli.EXIT_OK, EXIT_PROBLEM, EXIT_REFUSED) == (0, 1, 2)
    # a problem found in the data is 1; every other refusal is 2, like argparse's usage errors
    assert exit_code(DataError('2 test file(s) cannot be decoded')) == EXIT_PROBLEM
    for error in (ConfigError('lr=-1'), ValueError('x'), FileNotFoundError('f'), OSError('disk')):
        assert exit_code(error) == EXIT_REFUSED
    assert fail('adni-x', DataError('train and test share scans: 7')) == EXIT_PROBLEM
    assert fail('adni-x', 'a plain message') == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.splitlines() == [
        'adni-x: error: train and test share scans: 7',
        'adni-x: error: a plain message',
    ]
    # the policy is written down where users look
    readme = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    section = readme[readme.index('### Exit codes') :]
    assert re.search(r'`1`.*problem.*data', section) and re.search(r'`2`.*usage', section)


def test_app_without_a_model_is_a_usage_error(capsys, monkeypatch):
    from adni_timm.cli.app import main

    monkeypatch.delenv('ADNI_MODEL', raising=False)
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == EXIT_REFUSED and 'pass --model' in capsys.readouterr().err


@pytest.mark.parametrize(
    'name, argv',
    [
        ('python -m adni_timm.data check', ['adni_timm.data', 'check']),
        ('python -m adni_timm.cv', ['adni_timm.cv']),
        ('python -m adni_timm.synthetic', ['adni_timm.synthetic']),
        ('python -m adni_timm.app', ['adni_timm.app']),  # printed nothing and exited 0 before
        ('python -m adni_timm.prepare', ['adni_timm.prepare']),
        ('train.py', ['train.py']),
        ('evaluate.py', ['evaluate.py']),
        ('push_to_hub.py', ['push_to_hub.py']),
        ('app.py', ['app.py']),
    ],
)
def test_module_and_script_entry_points_name_themselves(name, argv, capsys, monkeypatch):
    """``python -m adni_timm.X --help`` and ``python X.py --help``: thin shims over adni_timm.cli,
    run here as ``__main__`` the way the interpreter runs them (in process: no torch import)."""
    target, *rest = argv
    monkeypatch.setattr(sys, 'argv', [target, *rest, '--help'])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as e:
        warnings.simplefilter('ignore', RuntimeWarning)  # runpy: the module is imported already
        if target.endswith('.py'):
            runpy.run_path(os.path.join(ROOT, target), run_name='__main__')
        else:
            runpy.run_module(target, run_name='__main__', alter_sys=True)
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert out.startswith(f'usage: {name} '), out[:200]
    assert '\nexamples:\n' in out


def test_evaluate_offers_the_cam_methods_of_adni_timm_cam():
    from adni_timm.evaluation import cam
    from adni_timm.cli.evaluate import CAM_METHODS, build_parser

    assert CAM_METHODS == cam.METHODS  # spelled twice so that --help needs no torch
    assert (
        build_parser().parse_args(['--model', 'm', '--images', ROOT]).cam_method == cam.METHODS[0]
    )


@pytest.mark.slow
def test_evaluate_cam_options_reach_the_report(tiny_run, tiny_data, tmp_path, capsys):
    from adni_timm.cli.evaluate import main

    run, _ = tiny_run
    out = tmp_path / 'ev'
    argv = ['--model', str(run), '--data-dir', str(tiny_data), '--n-boot', '0', '--output-dir']
    argv += [str(out), '--cam', '1', '--cam-method', 'gradcam', '--cam-layer', 'stages.2']
    assert main(argv) == cli.EXIT_OK
    report = json.loads((out / 'metrics.json').read_text())['cam']
    assert report['method'] == 'gradcam' and report['layer'] == 'stages.2'
    assert report['map_size'] == [4, 4]  # 64 px / 16
    assert (out / 'cam' / 'README.txt').read_text().startswith('Grad-CAM maps at layer stages.2')
    # a layer the model does not have: refused, with the stages it has
    assert main([*argv[:-1], 'stage.7']) == EXIT_REFUSED
    assert 'stages.0, stages.1, stages.2, stages.3' in capsys.readouterr().err
