"""The export format, written and read: ``model.safetensors`` + a timm ``config.json``.

An export is what ``RUN/best`` (and ``RUN/final``) holds and what goes to the
Hub. It loads without this package through every Hugging Face path:
``timm.create_model('hf-hub:ORG/NAME' | 'local-dir:DIR', pretrained=True)`` (3
channels, or ``in_chans=1``), ``transformers.pipeline('image-classification')``
and ``AutoModelForImageClassification``. What makes that work (format 2):

- the weights are published for **3-channel** input, as pipelines, the Hub widget and
  ``Image.open(p).convert('RGB')`` feed it: the trained 1-channel stem weight is split
  over R, G and B with the luma weights PIL's own grayscale conversion uses (0.299,
  0.587, 0.114; they sum to 1), so a grayscale slice as RGB gives exactly the 1-channel
  output, a colour image gives what the network would see after ``.convert('L')``, and
  timm's own first-conv adaptation (``in_chans=1``) sums the weight back;
- ``config.json`` names the *stock* timm architecture (``convnext_tiny``), keeps
  ``label_names`` at the top level (transformers reads them there) and no ``model_args``
  that collide with what transformers passes itself (``num_classes``) or that would undo
  the 3-channel form (``in_chans``); other ``model_args`` stay (transformers needs e.g.
  a ViT's ``img_size``). mean and std are 1-element, so timm's own transform normalises
  a 3-channel (RGB) and a 1-channel (``in_chans=1``) tensor alike;
- our own settings (threshold, temperature, classes, provenance) sit under
  ``config.json['adni_timm']``, which timm and transformers ignore.

Format 1 (adni-timm 0.1) stored 1-channel weights and config; ``resolve_model`` reads both.
Training and evaluation always run the 1-channel model: ``resolve_model`` loads an export with
``in_chans=1`` and a 1-channel data config.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import hf_hub_download
from timm.models import save_for_hf

from .files import read_json, sha256_file, write_json
from .models import LABEL_NAMES, LICENSE, PRETRAINED_TAG, stock_architecture

__all__ = [
    'WEIGHTS_NAME',
    'CONFIG_NAME',
    'EXTRA_KEY',
    'FORMAT_VERSION',
    'MODEL_FORMS',
    'ExportError',
    'export_model',
    'copy_export',
    'is_export',
    'read_export_config',
    'export_extra',
    'find_best_export',
    'input_channels',
    'locate_export',
    'resolve_model',
    'is_synthetic',
]

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
EXTRA_KEY = 'adni_timm'
FORMAT_VERSION = 2
PUBLISHED_CHANNELS = 3
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L'); sums to 1
MODEL_FORMS = (
    'a training run folder (RUN), an export folder, local-dir:DIR, hf-hub:ORG/NAME '
    'or path/model.safetensors'
)
# model_args that must not reach create_model from config.json:
# transformers passes its own num_classes (a duplicate is a TypeError),
# and in_chans would rebuild the 1-channel model that RGB input breaks.
_DROPPED_MODEL_ARGS = ('num_classes', 'in_chans')
# Provenance of whatever checkpoint the model was created from (an
# ImageNet tag, licence, hub id, test-time sizes never evaluated here):
# replaced by our own so the published cfg describes our weights.
_FOREIGN_CFG_KEYS = (
    'hf_hub_id',
    'hf_hub_filename',
    'hf_hub_revision',
    'url',
    'file',
    'source',
    'state_dict',
    'notes',
    'test_input_size',
    'test_crop_pct',
    'test_pool_size',
    'min_input_size',
    'label_descriptions',
)
_OWN_CFG_KEYS = ('description', 'origin_url', 'paper_name', 'paper_ids')


class ExportError(ValueError):
    """Not an export, or one that cannot be loaded; the message names the fix."""


# -------------------------------------------------------------------------------------------- write


def export_model(
    model: torch.nn.Module, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (format 2) to ``out_dir``, atomically.

    The folder is assembled beside ``out_dir`` and swapped in with a rename, so a kill mid-write
    leaves the previous export intact. ``extra`` (threshold, provenance) goes under
    ``config.json['adni_timm']``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, '_orig_mod', model)  # torch.compile wrapper
    state = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
    first_conv = _first_conv_names(model.pretrained_cfg)
    trained_in_chans = input_channels(model)
    if trained_in_chans == 1:
        for name in first_conv:
            weight = state[f'{name}.weight']
            luma = torch.tensor(LUMA, dtype=weight.dtype).view(1, PUBLISHED_CHANNELS, 1, 1)
            state[f'{name}.weight'] = (weight * luma).contiguous()
    extra = {**(extra or {}), 'format': FORMAT_VERSION, 'trained_in_chans': trained_in_chans}
    model_config = {
        'pretrained_cfg': {
            'architecture': stock_architecture(model.pretrained_cfg['architecture'])
        },
        EXTRA_KEY: extra,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', dir=out_dir.parent))
    try:
        # weights only: never a pickle (.bin), so local-dir:
        # and hf-hub: both pick the safetensors file
        save_for_hf(
            _StateOnly(model, state), tmp, model_config=model_config, safe_serialization=True
        )
        write_json(
            tmp / CONFIG_NAME, _published_config(read_json(tmp / CONFIG_NAME), trained_in_chans)
        )
        old = out_dir.with_name(f'.{out_dir.name}.old')
        if old.exists():
            shutil.rmtree(old)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class _StateOnly(torch.nn.Module):
    """Presents a model to ``save_for_hf`` with a given (CPU, contiguous) state dict."""

    def __init__(self, model: torch.nn.Module, state: dict[str, torch.Tensor]):
        super().__init__()
        object.__setattr__(self, '_model', model)
        object.__setattr__(self, '_state', state)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, '_model'), name)

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return self._state


def _first_conv_names(pretrained_cfg: dict) -> list[str]:
    names = pretrained_cfg.get('first_conv') or []
    return [names] if isinstance(names, str) else list(names)


def input_channels(model: torch.nn.Module) -> int:
    """A timm model's input channels: its first conv's, else its data config's."""
    try:
        return int(model.get_submodule(_first_conv_names(model.pretrained_cfg)[0]).in_channels)
    except (AttributeError, IndexError):
        return int(model.pretrained_cfg.get('input_size', (3,))[0])


def _published_config(config: dict[str, Any], trained_in_chans: int) -> dict[str, Any]:
    """timm's config.json made loadable everywhere
    (see the module docstring) and our own provenance.
    """
    config = json.loads(json.dumps(config))  # deep copy
    cfg = config.setdefault('pretrained_cfg', {})
    for key in _FOREIGN_CFG_KEYS:
        cfg.pop(key, None)
    own = timm.models.get_pretrained_cfg(f'adni_convnext_tiny.{PRETRAINED_TAG}').to_dict()
    cfg.update({key: own[key] for key in _OWN_CFG_KEYS}, tag=PRETRAINED_TAG, license=LICENSE)
    extra = config.get(EXTRA_KEY, {})
    if is_synthetic(extra):
        cfg['description'] = (
            'SYNTHETIC-DATA DEMO, trained on generated images, not ADNI. ' + cfg['description']
        )
    model_args = {
        k: v for k, v in config.pop('model_args', {}).items() if k not in _DROPPED_MODEL_ARGS
    }
    if model_args:
        config['model_args'] = model_args
    if trained_in_chans == 1:
        _, height, width = cfg['input_size']
        cfg['input_size'] = [PUBLISHED_CHANNELS, height, width]
        for key in ('mean', 'std'):
            cfg[key] = [cfg[key][0]]  # 1-element: broadcasts over 3 channels and 1 alike
    classes = list(extra.get('classes') or LABEL_NAMES)
    if len(classes) == config.get('num_classes', cfg.get('num_classes')):
        cfg['label_names'] = config['label_names'] = classes
    else:
        cfg.pop('label_names', None)
        config.pop('label_names', None)
    # our block last: what timm and transformers read comes first in the file
    config[EXTRA_KEY] = config.pop(EXTRA_KEY, {})
    return config


def copy_export(src: str | os.PathLike, dst_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the export ``src`` into the existing folder
    ``dst_dir`` in the current format; its config.

    A current export is copied byte for byte; an older one (format 1: 1-channel) is loaded as the
    model it was trained as and written again, so what gets published always loads everywhere.
    """
    src, dst_dir = Path(src), Path(dst_dir)
    config = read_export_config(src)
    if config.get(EXTRA_KEY, {}).get('format', 1) < FORMAT_VERSION:
        model, _ = resolve_model(src)
        tmp = Path(tempfile.mkdtemp(prefix='.upgrade.', dir=dst_dir.parent))
        try:
            src = export_model(model, tmp / 'export', extra=config.get(EXTRA_KEY))
            config = read_export_config(src)
            for name in (WEIGHTS_NAME, CONFIG_NAME):
                shutil.move(str(src / name), dst_dir / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return config
    shutil.copyfile(src / WEIGHTS_NAME, dst_dir / WEIGHTS_NAME)
    shutil.copyfile(src / CONFIG_NAME, dst_dir / CONFIG_NAME)
    return config


def is_synthetic(extra: dict[str, Any]) -> bool:
    """Whether an export says it was trained on generated (not ADNI) images."""
    return 'synthetic' in str(extra.get('data', '')).lower()


# --------------------------------------------------------------------------------------------- read


def is_export(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an export: ``config.json`` and ``model.safetensors``."""
    return (Path(folder) / CONFIG_NAME).is_file() and (Path(folder) / WEIGHTS_NAME).is_file()


def read_export_config(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of an export folder (clear error when it is not one)."""
    export_dir = Path(export_dir)
    if not is_export(export_dir):
        raise ExportError(
            f'{export_dir} is not a timm export folder: it needs '
            f'{CONFIG_NAME} and {WEIGHTS_NAME}. Point at a training run (RUN '
            f'or RUN/best) or a folder written by push_to_hub.py --dry-run.'
        )
    return read_json(export_dir / CONFIG_NAME)


def export_extra(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Our own settings stored in an export (threshold, classes, ...); empty when absent."""
    return dict(read_export_config(export_dir).get(EXTRA_KEY, {}))


def find_best_export(run_dir: str | os.PathLike) -> Path:
    """The export a run publishes: ``RUN/final`` (a refit),
    ``RUN/best``, or ``RUN`` itself when it is one.
    """
    run_dir = Path(run_dir)
    for candidate in (run_dir / 'final', run_dir / 'best', run_dir):
        if is_export(candidate):
            return candidate
    if not run_dir.is_dir():
        raise ExportError(
            f'run folder {run_dir} does not exist; pass the --output-dir of a finished train.py run'
        )
    if (run_dir / 'cv.json').is_file():
        raise ExportError(
            f'{run_dir} is a cross-validation run without its refit model (RUN/final): add it with '
            f'train.py --output-dir {run_dir} --resume --refit, or pass --run {run_dir / "fold0"} '
            f'for one fold model (see docs/EVALUATION.md).'
        )
    raise ExportError(
        f'{run_dir} has no best weights ({run_dir / "best" / WEIGHTS_NAME} and '
        f'{CONFIG_NAME} are missing); train first (train.py writes RUN/best '
        f'when a validation epoch finishes) or point at a finished run'
    )


def locate_export(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(export folder, run folder or None) for a RUN,
    RUN/best, an export folder or its model.safetensors.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ExportError(f'model {str(path)!r} does not exist; pass {MODEL_FORMS}.')
    if p.is_file():
        if p.name != WEIGHTS_NAME:
            raise ExportError(
                f"{p} is not an export's weights file: timm loads "
                f'{WEIGHTS_NAME} with {CONFIG_NAME} beside it; pass the folder, '
                f'or rename the file to {WEIGHTS_NAME} next to its {CONFIG_NAME}.'
            )
        p = p.parent
    for sub in ('final', 'best'):
        if is_export(p / sub):
            return p / sub, p
    if not is_export(p):
        raise ExportError(
            f'{p} is neither a training run (no best/{WEIGHTS_NAME}) nor a timm export folder '
            f'(needs {CONFIG_NAME} and {WEIGHTS_NAME}); pass {MODEL_FORMS}.'
        )
    if 'architecture' not in read_export_config(p):
        raise ExportError(
            f'{p / CONFIG_NAME} is not a timm config (no "architecture" key); '
            f'export the model with adni_timm.export.export_model or timm.models.save_for_hf.'
        )
    # RUN/best of a run (its split.json), or RUN/final of a cross-validation run (its cv.json)
    run_dir = (
        p.parent if any((p.parent / name).is_file() for name in ('split.json', 'cv.json')) else None
    )
    return p, run_dir


def _hub_file(repo: str, filename: str) -> str:
    """Path of ``filename`` of a Hub repo (``ORG/NAME[@revision]``) in the local HF cache."""
    repo_id, _, revision = repo.partition('@')
    return hf_hub_download(repo_id, filename, revision=revision or None)


def _trained_in_chans(config: dict[str, Any]) -> int:
    """Channels the export was trained on: recorded
    since format 2; format 1 stored the 1-channel cfg.
    """
    extra, cfg = config.get(EXTRA_KEY, {}), config.get('pretrained_cfg', {})
    return int(extra.get('trained_in_chans', cfg.get('input_size', [3])[0]))


def _as_one_channel(model: torch.nn.Module) -> torch.nn.Module:
    """Describe a model loaded with ``in_chans=1`` as the 1-channel model it now is.

    timm adapts the weights (sums the 3-channel stem) but keeps the source's 3-channel data config;
    our transforms read 1-channel slices, so the cfg says (1, H, W) and one mean / std.
    """
    cfg = dict(model.pretrained_cfg)
    _, height, width = cfg['input_size']
    cfg.update(
        input_size=(1, height, width), mean=tuple(cfg['mean'][:1]), std=tuple(cfg['std'][:1])
    )
    model.pretrained_cfg = model.default_cfg = cfg
    return model


def _create_pretrained(name: str, **kwargs) -> torch.nn.Module:
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        # missing files, offline Hub, shape mismatch
        hint = (
            ' Check the repository id (ORG/NAME[@revision]) and the network; offline, the '
            'repository must be in the Hugging Face cache.'
            if name.startswith('hf')
            else ''
        )
        raise ExportError(f'could not load {name} with timm: {type(e).__name__}: {e}{hint}') from e


def _load(name: str, config: dict[str, Any]) -> torch.nn.Module:
    """The export as the 1-channel model it was trained as; a foreign 3-channel model as it is."""
    if _trained_in_chans(config) != 1:
        return _create_pretrained(name)  # evaluation refuses it with a clear message
    return _as_one_channel(_create_pretrained(name, in_chans=1))


def resolve_model(ref: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load ``ref`` with stock timm as the 1-channel model it was trained as, in eval mode.

    ``ref``: a RUN folder (uses ``RUN/final`` or ``RUN/best``; ``RUN/split.json`` gives the
    validation patients), an export folder, ``local-dir:DIR``, ``hf-hub:ORG/NAME[@rev]`` or
    ``path/model.safetensors``. ``info`` = ``{'model': ref, 'threshold', 'threshold_source',
    'temperature', 'run_dir', 'classes', 'export': config['adni_timm'], 'weights_sha256'}``
    (threshold None when none is stored).
    """
    ref = str(ref)
    prefix, _, rest = ref.partition(':')
    if prefix in ('hf-hub', 'hf_hub') and rest:
        try:
            config, weights = read_json(_hub_file(rest, CONFIG_NAME)), _hub_file(rest, WEIGHTS_NAME)
        except Exception as e:  # noqa: BLE001 - cache miss, unknown repo or network: one message
            raise ExportError(
                f'could not load {ref}: {type(e).__name__}: {e} Check the repository id '
                f'(ORG/NAME[@revision]) and the network; offline, the repository must be in '
                f'the Hugging Face cache.'
            ) from e
        model = _load(ref, config)
        run_dir = None
    else:
        export_dir, run_dir = locate_export(rest if prefix == 'local-dir' and rest else ref)
        config, weights = read_export_config(export_dir), export_dir / WEIGHTS_NAME
        model = _load(f'local-dir:{export_dir}', config)
    extra = dict(config.get(EXTRA_KEY, {}))
    threshold = extra.get('threshold')
    classes = extra.get('classes') or model.pretrained_cfg.get('label_names') or LABEL_NAMES
    info = {
        'model': ref,
        'threshold': None if threshold is None else float(threshold),
        'threshold_source': extra.get('threshold_source', 'validation')
        if threshold is not None
        else None,
        'temperature': float(extra.get('temperature') or 1.0),
        'run_dir': run_dir,
        'classes': list(classes),
        'export': extra,
        'weights_sha256': sha256_file(weights),
        'export_dir': None if prefix in ('hf-hub', 'hf_hub') else str(Path(weights).parent),
    }
    # a refit: its operating point is out-of-fold
    if run_dir is not None and (run_dir / 'cv.json').is_file():
        info.update(run_dir=None, cv_run=run_dir)
    return model.eval(), info
