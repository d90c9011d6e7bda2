"""Training configuration: presets, overrides by key, refusal of bad values."""

import dataclasses

import pytest
import yaml

from adni_timm.config import CONFIG_DIR, ConfigError, TrainConfig, load_config


def test_adni_preset_spells_out_the_defaults():
    preset = yaml.safe_load((CONFIG_DIR / 'adni.yaml').read_text())
    assert load_config(CONFIG_DIR / 'adni.yaml') == TrainConfig()
    assert set(preset) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_seed_preset_is_the_reference_recipe():
    cfg = load_config('seed')
    assert (cfg.epochs, cfg.opt, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.img_size) == (
        100,
        'adamw',
        1e-4,
        0.0,
        128,
        224,
    )
    assert cfg.split_level == 'slice' and cfg.sched == 'constant' and not cfg.ema


def test_string_overrides_are_coerced_to_field_types():
    cfg = load_config(
        None,
        {
            'lr': '1e-4',
            'epochs': '3',
            'ema': 'false',
            'classes': 'NC,MCI,AD',
            'scale': '0.5,1',
            'clip_grad': 'null',
            'img_size': '64',
            'warmup_epochs': '1',
        },
    )
    assert cfg.lr == 1e-4 and cfg.epochs == 3 and cfg.ema is False
    assert cfg.classes == ['NC', 'MCI', 'AD'] and cfg.scale == [0.5, 1.0] and cfg.clip_grad is None


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'lr': '-1'}, 'lr=-1.0: must be positive'),
        ({'model': 'convnext_tinny'}, 'not a registered timm model'),
        ({'opt': 'adamwz'}, 'unknown optimizer'),
        ({'img_size': '100'}, 'multiple of 32'),
        ({'epochs': '2.5'}, 'expected int'),
        ({'val_fraction': '1.5'}, 'must be in [0, 1)'),
        ({'split_level': 'random'}, "choose one of ['scan', 'slice']"),
        ({'best_metric': 'loss'}, 'not a valid choice'),
        ({'mixup': '0.8', 'batch_size': '7'}, 'even batch size'),
        ({'classes': 'AD'}, 'at least two distinct'),
        ({'scale': '0.5'}, 'must be [min, max]'),
        ({'ratio': '1.2,0.8'}, 'must be [min, max] aspect ratios'),
    ],
)
def test_bad_values_are_refused_with_the_key_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_unknown_key_in_yaml_is_refused(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('lr: 0.001\nlearning_rate: 0.1\n')
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['learning_rate'\]"):
        load_config(path)


def test_missing_config_file_lists_presets(tmp_path):
    with pytest.raises(ConfigError, match='presets: adni, demo, seed'):
        load_config(tmp_path / 'nope.yaml')


def test_tracker_must_be_installed(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, 'find_spec', lambda name, *a: None if name == 'wandb' else real(name, *a)
    )
    with pytest.raises(ConfigError, match='pip install wandb'):
        load_config(None, {'log_with': 'wandb'})


def test_every_preset_builds_its_lr_schedule():
    """timm before 1.0.31 has no 'constant' schedule and returned None
    silently (seed.yaml then crashed on its first step): pyproject's
    floor is that release, and training refuses a missing schedule."""
    import re
    from pathlib import Path

    import timm
    import timm.optim
    import timm.scheduler
    import torch

    from adni_timm.config import preset_names

    floor = re.search(
        r'"timm>=([\d.]+)"', (Path(__file__).parents[1] / 'pyproject.toml').read_text()
    )[1]
    assert tuple(map(int, floor.split('.'))) >= (1, 0, 31)
    for name in preset_names():
        cfg = load_config(name)
        optimizer = timm.optim.create_optimizer_v2(torch.nn.Linear(2, 2), opt=cfg.opt, lr=cfg.lr)
        scheduler, _ = timm.scheduler.create_scheduler_v2(
            optimizer,
            sched=cfg.sched,
            num_epochs=cfg.epochs,
            warmup_epochs=min(cfg.warmup_epochs, cfg.epochs - 1),
            warmup_lr=cfg.warmup_lr,
            min_lr=cfg.min_lr,
            step_on_epochs=False,
            updates_per_epoch=10,
        )
        assert scheduler is not None, name
        if name == 'seed':  # the reference's fixed learning rate
            for update in (1, 250, 999):
                scheduler.step_update(update)
                assert optimizer.param_groups[0]['lr'] == pytest.approx(1e-4)
