"""How a model is run over images: one options object that the CLI builds once and ``evaluate``,
``predict_images`` and the demo take."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CamOptions:
    """Evidence maps (``cam.write_cam_report``): ``n`` montages per outcome, 0 for none."""

    n: int = 0
    method: str = 'occlusion'
    layer: str | None = None  # gradient methods only; default: cam.default_target_layer
    # {slice_key: bool [H, W]} regions to score the maps against (synthetic sets know them)
    region_masks: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class EvaluationOptions:
    """Batching, precision, backend, bad files and maps: everything but what is evaluated."""

    batch_size: int = 64
    num_workers: int = 0
    tta: bool = False
    precision: str | None = None  # None: the precision the model was trained in
    backend: str = 'torch'  # or 'onnxruntime': each member's model.onnx
    skip_bad_images: bool = False
    file_is_scan: bool | None = None  # None: what the model recorded
    cam: CamOptions = field(default_factory=CamOptions)
    progress: str = 'none'  # auto, bar, lines, none (utils.progress): the CLI's default is auto
