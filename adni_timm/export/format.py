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

Format 1 (adni-timm 0.1) stored 1-channel weights and config; ``load_export`` reads both.
Training and evaluation always run the 1-channel model: ``load_export`` loads an export with
``in_chans=1`` and a 1-channel data config. Where an export lives in a run folder is
``adni_timm.run``'s business (``run.locate``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import hf_hub_download
from timm.models import save_for_hf

from ..utils.files import read_json, sha256_file, write_json
from .input_check import INPUT_CHECK_FILES
from .input_description import network_data_format
from ..models import LABEL_NAMES, LICENSE, PRETRAINED_TAG, stock_architecture
from ..utils.legacy import upgrade

__all__ = [
    'WEIGHTS_NAME',
    'CONFIG_NAME',
    'EXTRA_KEY',
    'FORMAT_VERSION',
    'ExportError',
    'ExportSettings',
    'Export',
    'export_model',
    'copy_export',
    'export_with_settings',
    'is_export',
    'read_export_config',
    'read_export_settings',
    'input_channels',
    'trained_in_chans',
    'load_export',
]

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
EXTRA_KEY = 'adni_timm'
FORMAT_VERSION = 2
PUBLISHED_CHANNELS = 3
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L'); sums to 1
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
            tmp / CONFIG_NAME,
            _published_config(
                read_json(tmp / CONFIG_NAME), trained_in_chans, _final_reduction(model)
            ),
        )
        _swap_in(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished folder ``tmp`` with renames: a kill never leaves a
    half-written export."""
    old = out_dir.with_name(f'.{out_dir.name}.old')
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def export_with_settings(
    src: str | os.PathLike, out_dir: str | os.PathLike, settings: dict[str, Any]
) -> Path:
    """``src`` copied to ``out_dir`` with other settings under ``config.json['adni_timm']``: the
    weights and every file beside them (the input check) byte for byte, so whatever was fitted on
    these weights still belongs to them (a refit's ``RUN/final``)."""
    src, out_dir = Path(src), Path(out_dir)
    config = read_export_config(src)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', dir=out_dir.parent))
    try:
        for f in src.iterdir():
            if f.is_file() and f.name != CONFIG_NAME:
                shutil.copyfile(f, tmp / f.name)
        config[EXTRA_KEY] = {**settings, 'format': config.get(EXTRA_KEY, {}).get('format', 1)}
        write_json(tmp / CONFIG_NAME, config)
        _swap_in(tmp, out_dir)
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


def _final_reduction(model: torch.nn.Module) -> int | None:
    """The stride of the last feature map against the input (32 for ConvNeXt); None if unknown."""
    stages = getattr(model, 'feature_info', None)
    try:
        return int(stages[-1]['reduction'])
    except (TypeError, IndexError, KeyError):
        return None


def _published_config(
    config: dict[str, Any], trained_in_chans: int, reduction: int | None = None
) -> dict[str, Any]:
    """timm's config.json made loadable everywhere (see the module docstring), our own
    provenance, and the input description (``network_data_format``) in our block.

    ``reduction``: the model's final stride; ``pool_size`` is then the last feature map's size at
    the trained input size (timm's cfgs say 7 x 7 for 224 px whatever size the model was built for).
    """
    config = json.loads(json.dumps(config))  # deep copy
    cfg = config.setdefault('pretrained_cfg', {})
    for key in _FOREIGN_CFG_KEYS:
        cfg.pop(key, None)
    own = timm.models.get_pretrained_cfg(f'adni_convnext_tiny.{PRETRAINED_TAG}').to_dict()
    cfg.update({key: own[key] for key in _OWN_CFG_KEYS}, tag=PRETRAINED_TAG, license=LICENSE)
    extra = config.get(EXTRA_KEY, {})
    if ExportSettings.from_dict(extra).synthetic:
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
    if reduction and cfg.get('pool_size'):
        _, height, width = cfg['input_size']
        cfg['pool_size'] = [height // reduction, width // reduction]
    classes = list(extra.get('classes') or LABEL_NAMES)
    if len(classes) == config.get('num_classes', cfg.get('num_classes')):
        cfg['label_names'] = config['label_names'] = classes
    else:
        cfg.pop('label_names', None)
        config.pop('label_names', None)
    if EXTRA_KEY in config:
        settings = ExportSettings.from_dict(extra)
        config[EXTRA_KEY]['network_data_format'] = network_data_format(
            cfg,
            cfg.get('label_names') or classes,
            extra.get('input'),
            synthetic=settings.synthetic,
            preprocessing=settings.preprocessing,
        )
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
        model = load_export(str(src), export_dir=src).net
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


# --------------------------------------------------------------------------------------------- read


@dataclass(frozen=True)
class ExportSettings:
    """``config.json['adni_timm']``: our own settings, which timm and transformers ignore.

    ``to_dict`` gives the JSON block back (unknown keys kept): older and newer exports round-trip.
    """

    threshold: float | None = None  # None: nothing stored (a plain timm export)
    threshold_source: str | None = None  # 'validation' | 'out-of-fold' | ...
    threshold_rule: str | None = None  # 'youden' | 'sensitivity >= 0.9' | ...
    temperature: float = 1.0
    classes: tuple[str, ...] | None = None
    weights: str | None = None  # 'live' | 'ema'
    epoch: int | None = None
    best_metric: str | None = None
    best_value: float | None = None
    model_name: str | None = None
    img_size: int | None = None
    data: str | None = None  # what the model was trained on, for people
    synthetic: bool = False
    preprocessing: dict[str, Any] | None = None
    precision: str | None = None
    file_is_scan: bool = False
    split_level: str | None = None
    refit_epochs: int | None = None
    folds: int | None = None
    format: int = 1
    trained_in_chans: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_dict(cls, block: dict[str, Any] | None) -> ExportSettings:
        block = upgrade(dict(block or {}))  # file_is_patient, split_level: patient (older exports)
        known = {f.name for f in dataclasses.fields(cls)} - {'extra'}
        values = {k: block.pop(k) for k in list(block) if k in known}
        if 'synthetic' not in values:  # exports written before the boolean said it in the note
            values['synthetic'] = 'synthetic' in str(values.get('data', '')).lower()
        if values.get('threshold') is not None:
            values['threshold'] = float(values['threshold'])
            values.setdefault('threshold_source', 'validation')
        values['temperature'] = float(values.get('temperature') or 1.0)
        if values.get('classes'):
            values['classes'] = tuple(values['classes'])
        values['file_is_scan'] = bool(values.get('file_is_scan'))
        return cls(**values, extra=block)

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != 'extra' and getattr(self, f.name) is not None
        }
        if self.classes is not None:
            out['classes'] = list(self.classes)
        return {**out, **self.extra}


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


def read_export_settings(export_dir: str | os.PathLike) -> ExportSettings:
    """Our settings stored in an export (threshold, classes, ...); defaults when absent."""
    return ExportSettings.from_dict(read_export_config(export_dir).get(EXTRA_KEY))


@dataclass
class Export:
    """An export loaded as the 1-channel model it was trained as (eval mode)."""

    net: torch.nn.Module
    ref: str  # as given: a path, local-dir:DIR or hf-hub:ORG/NAME
    config: dict[str, Any]  # config.json
    settings: ExportSettings
    weights_sha256: str
    export_dir: Path | None  # None for hf-hub:
    files_dir: Path | None = None  # where the files beside the weights lie (the Hub cache too)


def _hub_file(repo: str, filename: str) -> str:
    """Path of ``filename`` of a Hub repo (``ORG/NAME[@revision]``) in the local HF cache."""
    repo_id, _, revision = repo.partition('@')
    return hf_hub_download(repo_id, filename, revision=revision or None)


def trained_in_chans(config: dict[str, Any]) -> int:
    """Channels the export was trained on: recorded since format 2; format 1 stored the 1-channel
    cfg (and a foreign timm export its own)."""
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
    if trained_in_chans(config) != 1:
        return _create_pretrained(name)  # evaluation refuses it with a clear message
    return _as_one_channel(_create_pretrained(name, in_chans=1))


def load_export(ref: str | os.PathLike, export_dir: Path | None = None) -> Export:
    """Load an export with stock timm: ``hf-hub:ORG/NAME[@rev]``, or the folder ``export_dir``
    (found from ``ref`` by ``run.locate``; a ``local-dir:`` prefix is the caller's to strip)."""
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
        net = _load(ref, config)
        export_dir = None
        _fetch_optional(rest, OPTIONAL_FILES)  # the input check, when the repo has one
    else:
        if export_dir is None:
            raise ExportError(f'{ref}: no export folder given')
        config, weights = read_export_config(export_dir), export_dir / WEIGHTS_NAME
        if 'architecture' not in config:
            raise ExportError(
                f'{export_dir / CONFIG_NAME} is not a timm config (no "architecture" key); '
                f'export the model with adni_timm.export.format.export_model or '
                f'timm.models.save_for_hf.'
            )
        net = _load(f'local-dir:{export_dir}', config)
    return Export(
        net=net.eval(),
        ref=ref,
        config=config,
        settings=ExportSettings.from_dict(config.get(EXTRA_KEY)),
        weights_sha256=sha256_file(weights),
        export_dir=export_dir,
        files_dir=Path(weights).parent,
    )


# files a published repo may hold beside the weights: the input check, model.onnx
OPTIONAL_FILES = (*INPUT_CHECK_FILES, 'model.onnx')


def _fetch_optional(repo: str, names: tuple[str, ...]) -> None:
    """Bring the optional files of a Hub repo into the cache beside its weights; absent: fine."""
    for name in names:
        try:
            _hub_file(repo, name)
        except Exception:  # noqa: BLE001 - a repo without the file, or offline without it
            pass
