"""An export's ``config.json`` checked against its weights before anything is built.

timm builds ``config['architecture']`` with ``config['model_args']`` and only then compares the
weights' shapes: a 3 KB ``config.json`` asking for ``dims: [2500] * 4`` costs gigabytes of memory
before that check refuses it. Here the architecture must be one timm registers, and the network
the ``model_args`` ask for is built on the meta device (no memory for its tensors) and compared
with the tensor shapes in the weights file's header (``safetensors`` reads only the header); the
meta build itself stops once it creates many more modules than the weights hold tensors (asking
for ``depths: [100000] * 4`` would otherwise take minutes even on the meta device). An
architecture that cannot be built on the meta device at all is left to timm's own check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import timm
import torch

__all__ = ['ModelArgsError', 'check_model_args', 'weight_shapes']

# modules a network may have per tensor of its weights (activations, dropouts, identities, ...);
# a registered timm model has well under 2
_MODULES_PER_TENSOR = 4
_SPARE_MODULES = 64
# the first convolution of a published export takes 3 channels (format 2, foreign timm weights)
# or 1 (format 1): the only shape difference that is not a different network
_STEM_CHANNELS = {1, 3}


class ModelArgsError(ValueError):
    """A ``config.json`` that does not describe the weights beside it; the message says what."""


class _TooManyModules(Exception):
    pass


def weight_shapes(weights: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the header of a safetensors file (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework='pt') as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types for damaged files
        raise ModelArgsError(
            f'{weights} is not a readable safetensors file ({type(e).__name__}: {e}): '
            f're-export or re-download the model'
        ) from None


def _same_network(built: tuple[int, ...], stored: tuple[int, ...]) -> bool:
    if built == stored:
        return True
    return (
        len(built) == len(stored) == 4
        and built[:1] + built[2:] == stored[:1] + stored[2:]
        and {built[1], stored[1]} <= _STEM_CHANNELS
    )


def _meta_state_shapes(
    architecture: str, kwargs: dict[str, Any], max_modules: int
) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of ``timm.create_model(architecture, **kwargs)``, built on the meta
    device; ``_TooManyModules`` once more than ``max_modules`` submodules are registered."""
    count = 0

    def guard(module, name, submodule):
        nonlocal count
        count += 1
        if count > max_modules:
            raise _TooManyModules(count)

    hook = torch.nn.modules.module.register_module_module_registration_hook(guard)
    try:
        with torch.device('meta'):
            net = timm.create_model(architecture, pretrained=False, **kwargs)
    finally:
        hook.remove()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _builds_on_meta(architecture: str, num_classes) -> bool:
    """Whether the registered architecture itself builds on the meta device (a few compute
    values from tensors while they build, which the meta device cannot give)."""
    try:
        with torch.device('meta'):
            timm.create_model(architecture, pretrained=False, num_classes=num_classes)
    except Exception:  # noqa: BLE001 - any failure means: not checkable this way
        return False
    return True


def check_model_args(
    config: Mapping[str, Any], weights: str | os.PathLike, where: str | os.PathLike = 'config.json'
) -> None:
    """Refuse (``ModelArgsError``) a ``config.json`` whose architecture timm does not register, or
    whose ``model_args`` build a network other than the one ``weights`` holds.

    ``where`` names the config in messages. Costs two header reads and a meta-device build.
    """
    architecture = config.get('architecture')
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ModelArgsError(
            f'{where}: architecture {architecture!r} is not a timm model: export the model with '
            f'adni_timm (or timm.models.save_for_hf) from a timm architecture'
        )
    model_args = config.get('model_args') or {}
    if not isinstance(model_args, dict):
        raise ModelArgsError(f'{where}: model_args must be an object of keyword arguments')
    stored = weight_shapes(weights)
    cfg = config.get('pretrained_cfg') or {}
    kwargs = {
        'num_classes': config.get('num_classes', cfg.get('num_classes', 2)),
        **model_args,
        'in_chans': 3,  # the published form; a 1-channel stem is allowed by _same_network
    }
    shown = ', '.join(f'{k}={v!r}' for k, v in model_args.items())[:200] or 'none'
    try:
        built = _meta_state_shapes(
            architecture, kwargs, _MODULES_PER_TENSOR * len(stored) + _SPARE_MODULES
        )
    except _TooManyModules:
        raise ModelArgsError(
            f'{where}: model_args ({shown}) ask for a {architecture} with far more layers than '
            f'the {len(stored)} tensors of {Path(weights).name}: the config does not describe '
            f'these weights; re-export the model'
        ) from None
    except Exception as e:  # noqa: BLE001 - any argument timm refuses: one line
        if not _builds_on_meta(architecture, kwargs['num_classes']):
            return  # an architecture that needs real tensors to build: timm's own check stands
        raise ModelArgsError(
            f'{where}: {architecture} cannot be built with model_args ({shown}): '
            f'{type(e).__name__}: {e}'
        ) from None
    missing = [k for k in built if k not in stored]
    extra = [k for k in stored if k not in built]
    wrong = [k for k in built if k in stored and not _same_network(built[k], stored[k])]
    if missing or extra or wrong:
        if wrong:
            k = wrong[0]
            detail = f'{k} is {list(stored[k])} in the weights but {list(built[k])} as configured'
        else:
            detail = (
                f'{len(missing)} tensors missing from the weights (e.g. {missing[:1]}), '
                f'{len(extra)} unexpected (e.g. {extra[:1]})'
            )
        raise ModelArgsError(
            f'{where}: {architecture} with model_args ({shown}) does not match '
            f'{Path(weights).name}: {detail}; fix config.json or re-export the model'
        )
