"""How big a published model is, as timm's model cards say it: parameters, GMACs at the input size,
and the shapes of its feature maps and pooled embedding.

Measured with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; the
multiply-accumulates are half its FLOPs) on a copy of the architecture built on the ``meta``
device: no weights are read or allocated, so a ConvNeXt-B costs what a ConvNeXt-Atto does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['FeatureMap', 'ModelStats', 'measure', 'measure_export_config']


@dataclass(frozen=True)
class FeatureMap:
    """One ``features_only`` output: its module, channels and stride against the input."""

    module: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class ModelStats:
    params: int
    gmacs: float  # at input_size, batch 1
    input_size: tuple[int, int, int]  # (channels, height, width)
    features: tuple[FeatureMap, ...]  # what features_only=True returns, in order
    num_features: int  # the pooled embedding's size (forward_head(..., pre_logits=True))

    def feature_shape(self, i: int) -> tuple[int, int, int]:
        """(channels, height, width) of feature map ``i`` at the input size (floor of H / stride,
        as the strided convolutions give)."""
        _, height, width = self.input_size
        f = self.features[i]
        return f.channels, height // f.reduction, width // f.reduction


def measure(model: torch.nn.Module, input_size: tuple[int, int, int]) -> ModelStats:
    """``model`` (any device, eval mode is set) counted on one zero input of ``input_size``."""
    model = model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, *input_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    info = getattr(model, 'feature_info', None) or []
    return ModelStats(
        params=sum(p.numel() for p in model.parameters()),
        gmacs=counter.get_total_flops() / 2 / 1e9,
        input_size=tuple(int(v) for v in input_size),
        features=tuple(
            FeatureMap(str(f['module']), int(f['num_chs']), int(f['reduction'])) for f in info
        ),
        num_features=int(getattr(model, 'num_features', 0)),
    )


def measure_export_config(config: Mapping[str, Any]) -> ModelStats:
    """The published network of an export's ``config.json``: its stock architecture, classes,
    ``model_args`` and ``pretrained_cfg.input_size``, built on the meta device."""
    cfg = config.get('pretrained_cfg', {})
    input_size = tuple(int(v) for v in cfg.get('input_size', (3, 224, 224)))
    with torch.device('meta'):
        model = timm.create_model(
            config['architecture'],
            pretrained=False,
            num_classes=int(config.get('num_classes', cfg.get('num_classes', 2))),
            in_chans=input_size[0],
            **dict(config.get('model_args') or {}),
        )
    return measure(model, input_size)
