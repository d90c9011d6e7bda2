"""Training configuration: plain data, YAML presets, CLI overrides by key, validation.

``TrainConfig``'s defaults are our recommended ADNI recipe (``adni_timm/configs/adni.yaml``
spells the same values out; ``configs/`` at the top of the repository points there);
``seed.yaml`` reproduces the reference project. The presets ship inside the package, so
``--config seed`` works from an installed copy too. Every key can be overridden on the
command line with dashes for underscores (``--weight-decay 0.05``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .utils.legacy import upgrade_config
from .models import LABEL_NAMES

__all__ = [
    'ConfigError',
    'TrainConfig',
    'load_config',
    'validate_config',
    'CONFIG_DIR',
    'preset_names',
    'fit_warmup',
    'field_types',
    'field_help',
    'format_value',
    'missing_tracker',
    'tracker_names',
]

# package data: works after a plain pip install
CONFIG_DIR = Path(__file__).resolve().parent / 'configs'


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


def _key(default, help: str, *, choices=None, metavar: str | None = None):
    """A config field with its one-line ``help`` (what ``adni-train --help`` shows), its
    ``choices`` (checked by ``validate_config``) and a ``metavar`` for the command line."""
    metadata = {'help': help}
    if choices is not None:
        metadata['choices'] = tuple(choices)
    if metavar is not None:
        metadata['metavar'] = metavar
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def tracker_names() -> tuple[str, ...]:
    """Every experiment tracker Accelerate offers (``accelerate.utils.LoggerType``: tensorboard,
    wandb, trackio, mlflow, ... and ``all``), so a new Accelerate's trackers need no change here."""
    from accelerate.utils import LoggerType

    return tuple(t.value for t in LoggerType)


_BEST_METRICS = tuple(
    f'{level}_{m}'
    for level in ('scan', 'slice')
    for m in ('auc', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'f1')
)


@dataclass
class TrainConfig:
    """One training recipe. Each field's metadata holds its help line (and choices): the one place
    ``adni-train --help`` and ``validate_config`` read them from."""

    # model
    model: str = _key(
        'adni_convnext_tiny',
        'timm model name: adni_convnext_{atto,nano,tiny,small,base} or any timm model',
    )
    classes: list[str] = _key(
        list(LABEL_NAMES),
        'class folders in label order (AD, else the last, is the positive class)',
        metavar='NAME,NAME',
    )
    img_size: int = _key(224, 'input side in pixels, a multiple of 32 (slices are resized to it)')
    drop_path: float = _key(0.1, 'stochastic depth rate')
    # data
    val_fraction: float = _key(
        0.2, 'share of training scans held out for validation, by scan and class'
    )
    split_level: str = _key(
        'scan',
        "validation split by scan; 'slice' is the reference's leaky split, only to reproduce it",
        choices=('scan', 'slice'),
    )
    file_is_scan: bool = _key(
        False, 'each file is its own scan (file names without <scan>_<slice>)'
    )
    # subjects: a map file (meta_data_with_label.json, an ADNI collection CSV, scan,subject CSV)
    subjects: str | None = _key(None, "subject map file: splits keep a subject's scans together")
    resplit_test: float | None = _key(
        None, 'pool train+test, hold out this share of SUBJECTS as the test set'
    )
    allow_subject_overlap: bool = _key(
        False, 'train although test subjects have scans in train (stated everywhere)'
    )
    subjects_from_audit: str | None = _key(
        None,
        'audit CSV (adni-check-data --audit-csv): split by the subjects it estimates',
        metavar='PATH',
    )
    skip_bad_images: bool = _key(
        False, 'leave out files that cannot be decoded (else: list them and stop)'
    )
    cache: bool = _key(True, 'decode every slice once into memory shared by the loader workers')
    num_workers: int = _key(8, 'data-loader worker processes per training process')
    data_on_device: str = _key(
        'auto',
        'slices cached and augmented on the GPU, no loader workers (auto: when it fits 4 times)',
        choices=('auto', 'true', 'false'),
    )
    # augmentation (timm create_transform)
    scale: list[float] = _key(
        [0.7, 1.0], 'random-resized-crop area range (fractions of the slice)', metavar='MIN,MAX'
    )
    ratio: list[float] = _key(
        [0.9, 1.1], 'random-resized-crop aspect-ratio range', metavar='MIN,MAX'
    )
    hflip: float = _key(0.5, 'probability of a horizontal flip')
    color_jitter: float = _key(0.1, 'brightness / contrast jitter strength (0: off)')
    auto_augment: str | None = _key(
        None, 'timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (null: off)'
    )
    re_prob: float = _key(0.1, 'random-erasing probability')
    mixup: float = _key(0.0, 'mixup alpha (0: off)')
    cutmix: float = _key(0.0, 'cutmix alpha (0: off)')
    smoothing: float = _key(0.1, 'label smoothing')
    # optimisation (timm create_optimizer_v2 / create_scheduler_v2)
    epochs: int = _key(100, 'training epochs')
    batch_size: int = _key(128, 'images per step and process')
    grad_accum_steps: int = _key(
        1, 'steps per optimizer update (effective batch: batch-size x processes x this)'
    )
    opt: str = _key('adamw', 'timm optimizer, e.g. adamw, sgd, lamb (timm.optim.list_optimizers())')
    lr: float = _key(5e-4, 'peak learning rate')
    weight_decay: float = _key(0.05, 'weight decay')
    clip_grad: float | None = _key(1.0, 'clip the gradient norm to this (null: no clipping)')
    sched: str = _key(
        'cosine',
        'timm learning-rate schedule after the warmup',
        choices=('cosine', 'constant', 'step', 'multistep', 'tanh', 'poly', 'wsd'),
    )
    warmup_epochs: int = _key(5, 'epochs of linear warmup from warmup-lr')
    warmup_lr: float = _key(1e-6, 'learning rate at the start of the warmup')
    min_lr: float = _key(1e-6, 'learning rate at the end of the schedule')
    # EMA (timm ModelEmaV3)
    ema: bool = _key(True, 'also validate an EMA of the weights (timm ModelEmaV3); keep the better')
    ema_decay: float = _key(0.9998, 'EMA decay per optimizer step')
    # model selection and the operating point (chosen on validation, or out-of-fold with folds)
    best_metric: str = _key(
        'scan_auc', 'validation metric that chooses the kept epoch', choices=_BEST_METRICS
    )
    target_sensitivity: float | None = _key(
        None, "threshold: the highest reaching this validation sensitivity (null: Youden's J)"
    )
    # cross-validation by scan (0: one validation split of val_fraction)
    folds: int = _key(0, 'K-fold cross-validation by scan, K >= 2 (0: one validation split)')
    cv_select: str = _key(
        'inner',
        "with folds: choose each fold's epoch on its own training scans (inner), or not (last)",
        choices=('inner', 'last'),
    )
    refit: bool = _key(
        False, "with folds: then train on all training scans for the folds' median best epoch"
    )
    # hardware
    mixed_precision: str = _key(
        'auto',
        'auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU',
        choices=('auto', 'no', 'fp16', 'bf16'),
    )
    channels_last: bool = _key(True, 'channels-last memory format (CUDA only)')
    compile: bool = _key(False, 'torch.compile the model')
    log_with: str | None = _key(
        None,
        "experiment tracker, any Accelerate offers ('all': every installed one; null: none)",
        choices=(None, *tracker_names()),
    )
    progress: str = _key(
        'auto',
        'auto: a live bar on a terminal, plain lines in a log file',
        choices=('auto', 'bar', 'lines', 'none'),
    )
    seed: int = _key(0, 'seed of the split, the initialisation and the augmentation')


# choices per key, from the fields' metadata
_CHOICES = {
    f.name: f.metadata['choices']
    for f in dataclasses.fields(TrainConfig)
    if 'choices' in f.metadata
}


def field_types() -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def field_help() -> dict[str, dict[str, Any]]:
    """Per key: ``help`` (one line), and ``choices`` / ``metavar`` where the key has them."""
    return {f.name: dict(f.metadata) for f in dataclasses.fields(TrainConfig)}


def format_value(value: Any) -> str:
    """A config value in the syntax the command line and YAML accept: null, true, 0.7,1.0."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ','.join(format_value(v) for v in value)
    return str(value)


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the YAML file, then overrides; validated."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file() and (CONFIG_DIR / f'{path}.yaml').is_file():
            path = CONFIG_DIR / f'{path}.yaml'  # a preset name: --config seed
        if not path.is_file():
            raise ConfigError(
                f'config file {path} does not exist; presets: {", ".join(preset_names())}'
            )
        try:
            with path.open(encoding='utf-8') as f:
                loaded = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:  # a python/object tag is refused by safe_load: say so
            raise ConfigError(
                f'{path} is not a plain YAML config ({" ".join(str(e).split())}); a config maps '
                f'keys to numbers, text, true/false or lists, without tags such as !!python'
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f'{path} must hold a mapping of config keys to values')
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(values, source=str(path) if path else 'overrides')


def make_config(values: dict[str, Any], source: str = 'config') -> TrainConfig:
    values = upgrade_config(values)  # records and presets written when a scan was a 'patient'
    known = field_types()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f'{source}: unknown config key(s) {unknown}; valid keys: {", ".join(sorted(known))}'
        )
    cfg = TrainConfig(**{k: coerce(k, v, known[k]) for k, v in values.items()})
    validate_config(cfg)
    return cfg


def coerce(key: str, value: Any, type_name: str) -> Any:
    """Turn a YAML or command-line value into the field's
    type (command-line values arrive as strings).
    """
    if type_name.endswith(' | None'):
        if value is None or (isinstance(value, str) and value.lower() in ('null', 'none', '')):
            return None
        type_name = type_name[: -len(' | None')]
    try:
        if type_name.startswith('list['):
            items = value.split(',') if isinstance(value, str) else list(value)
            return [
                coerce(key, item.strip() if isinstance(item, str) else item, type_name[5:-1])
                for item in items
            ]
        if type_name == 'bool':
            if isinstance(value, bool):
                return value
            if str(value).lower() in ('true', 'yes', '1', 'on'):
                return True
            if str(value).lower() in ('false', 'no', '0', 'off'):
                return False
            raise ValueError
        if type_name == 'int':
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name == 'float':
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        # YAML reads `data_on_device: true` as a bool: the key's choices are the words
        return str(value).lower() if isinstance(value, bool) else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f'{key}={value!r}: expected {type_name}') from None


def validate_config(cfg: TrainConfig) -> None:
    """Refuse bad values before any work starts."""
    import timm
    import timm.optim

    def bad(key, problem, fix):
        raise ConfigError(f'{key}={getattr(cfg, key)!r}: {problem}; {fix}')

    if not timm.is_model(cfg.model):
        close = timm.list_models(f'*{cfg.model.split("_")[-1]}*')[:5]
        bad(
            'model',
            'not a registered timm model',
            f'use adni_convnext_tiny or another timm name (close: {close})',
        )
    if cfg.opt.lower() not in timm.optim.list_optimizers():
        bad('opt', 'unknown optimizer', 'use a name from timm.optim.list_optimizers(), e.g. adamw')
    if cfg.img_size <= 0 or cfg.img_size % 32:
        bad(
            'img_size',
            'must be a positive multiple of 32 (ConvNeXt downsamples by 32)',
            'e.g. 64, 96, 224',
        )
    for key in ('lr', 'batch_size', 'epochs', 'grad_accum_steps'):
        if not getattr(cfg, key) > 0:
            bad(key, 'must be positive', 'give a value > 0')
    for key in (
        'weight_decay',
        'warmup_lr',
        'min_lr',
        'drop_path',
        'mixup',
        'cutmix',
        'smoothing',
        'num_workers',
        'warmup_epochs',
        're_prob',
        'color_jitter',
    ):
        if getattr(cfg, key) < 0:
            bad(key, 'must not be negative', 'give a value >= 0')
    if cfg.clip_grad is not None and cfg.clip_grad <= 0:
        bad('clip_grad', 'must be positive or null', 'use e.g. 1.0, or null for no clipping')
    if not 0 <= cfg.val_fraction < 1:
        bad('val_fraction', 'must be in [0, 1)', 'e.g. 0.2')
    if cfg.resplit_test is not None and not 0 < cfg.resplit_test < 1:
        bad('resplit_test', 'must be in (0, 1)', 'e.g. 0.2 (a fifth of the subjects)')
    if cfg.resplit_test is not None and cfg.allow_subject_overlap:
        bad(
            'allow_subject_overlap',
            'contradicts --resplit-test (a re-split test set shares no subject with train)',
            'give one of the two',
        )
    if cfg.target_sensitivity is not None and not 0 < cfg.target_sensitivity <= 1:
        bad('target_sensitivity', 'must be in (0, 1]', "e.g. 0.9, or null for Youden's J")
    if cfg.folds == 1 or cfg.folds < 0:
        bad('folds', 'must be 0 (one validation split) or at least 2', 'e.g. --folds 5')
    if cfg.refit and cfg.folds < 2:
        bad(
            'refit', 'refits after cross-validation only', 'add --folds K (K >= 2), or drop --refit'
        )
    if not 0 < cfg.ema_decay < 1:
        bad('ema_decay', 'must be in (0, 1)', 'e.g. 0.9998')
    if len(cfg.scale) != 2 or not (0 < cfg.scale[0] <= cfg.scale[1] <= 1):
        bad('scale', 'must be [min, max] with 0 < min <= max <= 1', 'e.g. [0.7, 1.0]')
    if len(cfg.ratio) != 2 or not (0 < cfg.ratio[0] <= cfg.ratio[1]):
        bad('ratio', 'must be [min, max] aspect ratios with 0 < min <= max', 'e.g. [0.9, 1.1]')
    if len(cfg.classes) < 2 or len(set(cfg.classes)) != len(cfg.classes):
        bad('classes', 'needs at least two distinct class folder names', 'e.g. [NC, AD]')
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        bad('batch_size', 'mixup/cutmix need an even batch size', 'use an even batch_size')
    if cfg.data_on_device == 'true' and cfg.auto_augment:
        bad(
            'data_on_device',
            'the device path has no auto-augment policy (timm runs it on PIL images)',
            'use --data-on-device auto (the DataLoader then applies --auto-augment) or drop '
            '--auto-augment',
        )
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            bad(key, 'not a valid choice', f'choose one of {list(choices)}')
    missing = missing_tracker(cfg.log_with)
    if missing is not None:
        bad('log_with', missing, f'pip install {cfg.log_with}, or leave it off')


def missing_tracker(name: str | None) -> str | None:
    """Why Accelerate cannot log to ``name`` here (its package is missing), or None: also for a
    name that is no tracker at all, which the choices check reports."""
    if name is None or name not in tracker_names():
        return None
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    available = get_available_trackers()
    if name == LoggerType.ALL.value:
        return None if available else 'no tracker package Accelerate knows is installed'
    if LoggerType(name) not in available:
        return f'the {name} package is not installed'
    return None


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def fit_warmup(cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """A warmup as long as the run would leave no cosine at all: shorten it to half the run.

    A 1- or 2-epoch smoke run with a preset's 5 warmup epochs is what people try first; it should
    run, and say what it changed (the returned note). Longer runs keep their warmup unchanged.
    """
    if cfg.warmup_epochs < cfg.epochs or cfg.warmup_epochs == 0:
        return cfg, None
    shorter = cfg.epochs // 2
    note = (
        f'warmup_epochs {cfg.warmup_epochs} -> {shorter}: a {cfg.epochs}-epoch run needs a shorter '
        f'warmup (set --warmup-epochs to choose)'
    )
    return dataclasses.replace(cfg, warmup_epochs=shorter), note
