"""Which precision a run trains in: ours when chosen, else what Accelerate was configured with.

``mixed_precision: auto`` (the default) defers to Accelerate's own settings, in this order, and
falls back to our rule (bf16 on GPUs with native bf16, fp16 on older GPUs, fp32 on CPU) only when
none is set:

1. ``ACCELERATE_MIXED_PRECISION`` in the environment: what ``accelerate launch --mixed_precision``
   or the launched config file set (``accelerate launch`` copies both there), or what you exported.
2. the default config file of ``accelerate config`` (``$HF_HOME/accelerate/default_config.yaml``),
   for a plain ``python train.py`` that ``accelerate launch`` did not start.

``accelerate launch`` writes ``ACCELERATE_MIXED_PRECISION=no`` when neither its flag nor a config
file chose anything, which cannot be told from a chosen ``no``: under ``accelerate launch`` a ``no``
counts only when the default config file says it; otherwise our rule applies (``--mixed-precision
no`` always trains in fp32). The answer carries where it came from, for the log and the record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ConfigError

__all__ = [
    'ENV',
    'TRAINABLE',
    'Precision',
    'PrecisionError',
    'accelerate_config_file',
    'auto_rule',
    'resolve_precision',
]

ENV = 'ACCELERATE_MIXED_PRECISION'
# every process `accelerate launch` starts has it (simple and multi-GPU launchers alike)
_LAUNCHED_ENV = 'ACCELERATE_DYNAMO_BACKEND'
TRAINABLE = ('no', 'fp16', 'bf16')  # Accelerate's fp8 needs TransformerEngine/MS-AMP: not ours


class PrecisionError(ConfigError):
    """A configured precision we cannot train in; the message names where it was set."""


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in (Accelerate's name: ``no`` is fp32) and where it came from."""

    name: str
    source: str  # 'config' | 'ACCELERATE_MIXED_PRECISION' | 'accelerate config FILE' | 'auto' | ...

    def describe(self) -> str:
        shown = 'fp32' if self.name == 'no' else self.name
        return f'{shown} (from {self.source})'


def accelerate_config_file(environ: Mapping[str, str] = os.environ) -> Path:
    """Where ``accelerate config`` writes its default file (accelerate's own rule, read now: the
    module-level constant in accelerate is fixed when it is first imported)."""
    cache = environ.get('HF_HOME') or os.path.join(
        environ.get('XDG_CACHE_HOME', '~/.cache'), 'huggingface'
    )
    return Path(os.path.expanduser(cache)) / 'accelerate' / 'default_config.yaml'


def _from_file(path: Path) -> str | None:
    """``mixed_precision`` of an accelerate config file; None when absent or unreadable (a broken
    file is accelerate launch's to report, not a reason to refuse a plain python run)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding='utf-8')) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    value = raw.get('mixed_precision') if isinstance(raw, dict) else None
    return str(value).lower() if value else None


def _checked(name: str, source: str) -> Precision:
    if name not in TRAINABLE:
        raise PrecisionError(
            f'mixed precision {name!r} (from {source}) cannot train here; choose one of '
            f'{list(TRAINABLE)} there, or pass --mixed-precision bf16|fp16|no'
        )
    return Precision(name, source)


def auto_rule(cuda: bool, bf16: bool) -> str:
    """Our own choice: bf16 where the GPU has it natively, fp16 on older GPUs, fp32 on CPU
    (autocast on CPU is slower than fp32 here)."""
    if not cuda:
        return 'no'
    return 'bf16' if bf16 else 'fp16'


def resolve_precision(
    setting: str,
    *,
    environ: Mapping[str, str] = os.environ,
    config_file: Path | None = None,
    cuda: bool | None = None,
    bf16: bool | None = None,
) -> Precision:
    """The precision to pass to ``Accelerator`` for our ``setting`` (the config's
    ``mixed_precision``). ``config_file`` defaults to accelerate's default file; ``cuda`` and
    ``bf16`` to this machine (both only for tests)."""
    if setting != 'auto':
        return _checked(setting, '--mixed-precision / the config')
    path = config_file if config_file is not None else accelerate_config_file(environ)
    from_file = _from_file(path)
    env = (environ.get(ENV) or '').strip().lower()
    if env and env != 'no':
        return _checked(env, ENV)
    if env == 'no':
        if _LAUNCHED_ENV not in environ:  # not accelerate launch: someone exported it
            return Precision('no', ENV)
        if from_file == 'no':
            return Precision('no', f'accelerate config {path}')
        # accelerate launch's default, not a choice: fall through to our rule
    elif from_file is not None:
        return _checked(from_file, f'accelerate config {path}')
    if cuda is None or bf16 is None:
        import torch

        from ..utils.hardware import bf16_supported

        cuda = torch.cuda.is_available() if cuda is None else cuda
        bf16 = bf16_supported() if bf16 is None else bf16
    return Precision(auto_rule(cuda, bf16), 'auto: no Accelerate precision configured')
