"""Export folders (safetensors + timm config.json), and loading them back.

An export folder is what ``RUN/best`` holds and what goes to the Hub. Its
``config.json`` names the *stock* timm architecture (e.g. ``convnext_tiny``)
so that plain timm loads it without this package; our own settings (decision
threshold, classes, provenance) sit under the top-level key ``adni_timm``,
which timm ignores.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from timm.models import save_for_hf

from .models import stock_architecture

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
EXTRA_KEY = 'adni_timm'


def export_model(model: torch.nn.Module, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + timm ``config.json`` to ``out_dir``, atomically.

    The folder is assembled beside ``out_dir`` and swapped in with a rename, so a
    kill mid-write leaves the previous export intact. ``extra`` (e.g. the
    validation threshold) is stored under ``config.json['adni_timm']``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, '_orig_mod', model)  # torch.compile wrapper
    arch = stock_architecture(model.pretrained_cfg.get('architecture', ''))
    model_config = {
        'pretrained_cfg': {'architecture': arch},
        EXTRA_KEY: dict(extra or {}),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', dir=out_dir.parent))
    try:
        # weights only: never a pickle (.bin), so local-dir: and hf-hub: both pick the safetensors file
        state = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
        cpu_model = _StateOnly(model, state)
        save_for_hf(cpu_model, tmp, model_config=model_config, safe_serialization=True)
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


def read_export_config(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of an export folder (clear error when it is not one)."""
    export_dir = Path(export_dir)
    cfg_file = export_dir / CONFIG_NAME
    if not cfg_file.is_file() or not (export_dir / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f'{export_dir} is not a timm export folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}. '
            f'Point at a training run (RUN or RUN/best) or a folder written by push_to_hub.py --dry-run.')
    with cfg_file.open(encoding='utf-8') as f:
        return json.load(f)


def export_extra(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Our own settings stored in an export (threshold, classes, ...); empty when absent."""
    return dict(read_export_config(export_dir).get(EXTRA_KEY, {}))
