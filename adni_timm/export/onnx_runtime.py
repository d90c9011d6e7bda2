"""Run a published adni-timm model with onnxruntime: numpy, Pillow and onnxruntime, no torch.

    clf = OnnxClassifier('path/to/export')       # model.onnx + config.json (a Hub snapshot too)
    result = clf.predict_images(['218391_78.jpeg', '218391_79.jpeg'])
    p_ad = result.probs[:, clf.positive]         # softmax, before the stored temperature

Standalone on purpose: this file imports nothing from ``adni_timm`` (the package imports torch to
register its timm models), so a deployment can copy it beside ``model.onnx`` + ``config.json``
and install only ``onnxruntime numpy pillow`` (about 15 MB instead of a multi-GB torch). Inside
adni-timm it is ``adni_timm.export.onnx_runtime``; ``adni_timm.export.onnx.export_onnx`` writes
the file.

Preprocessing reproduces timm's eval transform for the export's config
(``timm.data.create_transform(**resolve_data_config(model=model))``), which for an adni-timm export
is: shorter side resized to ``floor(img_size / crop_pct)`` with bilinear interpolation (Pillow's,
as torchvision uses on PIL images), centre crop to ``img_size``, ``/ 255``, ``(x - mean) / std``,
the grayscale value in all three channels. The probabilities are plain softmax, like
``adni_timm.inference.predict_loader``; apply the stored ``temperature``
(``metrics.apply_temperature``) and compare P(AD) with ``threshold`` as evaluate.py does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

__all__ = [
    'ONNX_NAME',
    'CONFIG_NAME',
    'OnnxRuntimeError',
    'Preprocessing',
    'OnnxPrediction',
    'OnnxClassifier',
]

ONNX_NAME = 'model.onnx'
CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
_HIGH_DEPTH_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')
MAX_SIDE = 2048  # px a side: adni_timm.data.images.MAX_SIDE (tests/test_bounded_inputs.py)
_FILTERS = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
    'box': Image.Resampling.BOX,
    'hamming': Image.Resampling.HAMMING,
    'lanczos': Image.Resampling.LANCZOS,
}

ImageLike = Union[Image.Image, str, os.PathLike]


class OnnxRuntimeError(ValueError):
    """An ONNX export that cannot be run as given; the message names the fix."""


@dataclass(frozen=True)
class Preprocessing:
    """timm's eval transform (centre-crop mode) for one export's data config, in numpy."""

    img_size: int
    scale_size: int  # the shorter side before the centre crop
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3

    @classmethod
    def from_config(cls, cfg: dict) -> Preprocessing:
        """From ``config.json['pretrained_cfg']`` (what ``resolve_data_config`` reads)."""
        channels, height, width = cfg['input_size']
        if height != width:
            raise OnnxRuntimeError(
                f'input_size {cfg["input_size"]} is not square; this runner reproduces timm only '
                f'for square inputs (adni-timm exports are): run the model with timm instead'
            )
        crop_mode = cfg.get('crop_mode') or 'center'
        interpolation = cfg.get('interpolation', 'bilinear')
        if crop_mode != 'center' or interpolation not in _FILTERS:
            raise OnnxRuntimeError(
                f'crop_mode {crop_mode!r} / interpolation {interpolation!r}: this runner '
                f"reproduces timm's 'center' crop with {', '.join(_FILTERS)}"
            )
        crop_pct = float(cfg.get('crop_pct') or 0.875)  # timm's DEFAULT_CROP_PCT
        mean, std = tuple(cfg['mean']), tuple(cfg['std'])
        return cls(
            img_size=int(height),
            scale_size=math.floor(height / crop_pct),
            interpolation=interpolation,
            mean=mean,
            std=std,
            channels=int(channels),
        )

    def resize_and_crop(self, gray: Image.Image) -> Image.Image:
        """Shorter side to ``scale_size`` (torchvision's rounding), then the centre crop."""
        w, h = gray.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.scale_size, int(self.scale_size * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        if size != gray.size:
            gray = gray.resize(size, _FILTERS[self.interpolation])
        w, h = gray.size
        crop = self.img_size
        if w < crop or h < crop:  # torchvision pads with zeros before cropping
            canvas = Image.new(gray.mode, (max(w, crop), max(h, crop)), 0)
            canvas.paste(gray, ((canvas.width - w) // 2, (canvas.height - h) // 2))
            gray, (w, h) = canvas, canvas.size
        top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
        return gray.crop((left, top, left + crop, top + crop))

    def __call__(self, image: ImageLike) -> np.ndarray:
        """One image as the network's input ``[channels, img_size, img_size]`` float32."""
        x = np.asarray(self.resize_and_crop(_gray(image)), dtype=np.float32) / np.float32(255)
        planes = []
        for c in range(self.channels):  # 1-element mean / std apply to every channel
            mean = np.float32(self.mean[c] if len(self.mean) > 1 else self.mean[0])
            std = np.float32(self.std[c] if len(self.std) > 1 else self.std[0])
            planes.append((x - mean) / std)
        return np.stack(planes)


def _gray(image: ImageLike) -> Image.Image:
    """8-bit grayscale; 16-bit / float scaled by their maximum (as adni_timm.data.read_image)."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as im:
            # from the header, before decoding (adni_timm.data.images.open_image, copied)
            if max(im.size) > MAX_SIDE:
                raise ValueError(
                    f'{image} is {im.size[0]} x {im.size[1]} px: slices are at most {MAX_SIDE} '
                    f'px a side; downsample it'
                )
            im.load()
            return _gray(im)
    if image.mode == 'L':
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        pixels = np.clip(np.asarray(image, dtype=np.float32), 0, None)
        peak = float(pixels.max())
        return Image.fromarray(np.round(pixels * (255 / peak if peak > 0 else 0)).astype(np.uint8))
    return image.convert('L')


@dataclass(frozen=True)
class OnnxPrediction:
    """What the network gives for a list of images, in order."""

    probs: np.ndarray  # [N, C] float64 softmax (no temperature)
    logits: np.ndarray  # [N, C] float32
    features: np.ndarray  # [N, D] float32 pooled pre-logits features (the input check's)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class OnnxClassifier:
    """``model.onnx`` of an export in an onnxruntime session, with its preprocessing and settings.

    ``path``: the export folder or its ``model.onnx``; ``config.json`` must sit beside it. When
    ``model.safetensors`` sits there too, the ONNX file must have been exported from it (its
    recorded fingerprint), else ``OnnxRuntimeError``. ``threads``: onnxruntime's intra-op threads
    (default: its own choice, all cores).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ):
        import onnxruntime as ort

        path = Path(path)
        onnx_path = path / ONNX_NAME if path.is_dir() else path
        config_path = onnx_path.with_name(CONFIG_NAME)
        if not onnx_path.is_file() or not config_path.is_file():
            raise OnnxRuntimeError(
                f'{onnx_path.parent} needs {ONNX_NAME} and {CONFIG_NAME}; write {ONNX_NAME} with '
                f'adni-push --onnx (or adni_timm.export.onnx.export_onnx(EXPORT_DIR))'
            )
        config = json.loads(config_path.read_text(encoding='utf-8'))
        cfg, extra = config.get('pretrained_cfg', {}), config.get('adni_timm', {})
        self.path = onnx_path
        self.preprocessing = Preprocessing.from_config(cfg)
        self.classes = list(
            extra.get('classes') or config.get('label_names') or cfg.get('label_names') or []
        )
        self.positive = self.classes.index('AD') if 'AD' in self.classes else len(self.classes) - 1
        threshold = extra.get('threshold')
        self.threshold = None if threshold is None else float(threshold)
        self.temperature = float(extra.get('temperature') or 1.0)

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), options, providers=list(providers or ['CPUExecutionProvider'])
            )
        except Exception as e:  # noqa: BLE001 - InvalidProtobuf, Fail, ...: the file is damaged
            raise OnnxRuntimeError(
                f'{onnx_path} cannot be loaded by onnxruntime ({type(e).__name__}: '
                f'{" ".join(str(e).split())[:300]}): delete it (a local export writes it again '
                f'from its weights) or export it again (push_to_hub.py --onnx)'
            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.weights_sha256 = meta.get('weights_sha256') or None
        weights = onnx_path.with_name(WEIGHTS_NAME)
        if self.weights_sha256 and weights.is_file() and _sha256(weights) != self.weights_sha256:
            raise OnnxRuntimeError(
                f'{onnx_path} was exported from other weights than {weights}: export it again '
                f'(adni-push --onnx, or adni_timm.export.onnx.export_onnx)'
            )
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """The batch ``[N, 3, H, W]`` float32 that timm's eval transform would give."""
        return np.stack([self.preprocessing(im) for im in images])

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits ``[N, C]``, features ``[N, D]``) of a preprocessed batch."""
        logits, features = self.session.run(
            self.output_names, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return logits, features

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``[N, C]`` (float64) of a preprocessed batch."""
        return _softmax(self.run(batch)[0])

    def predict_images(self, images: Sequence[ImageLike], batch_size: int = 32) -> OnnxPrediction:
        """Probabilities, logits and features of images (PIL or paths), ``batch_size`` at a time."""
        logits, features = [], []
        for start in range(0, len(images), batch_size):
            out = self.run(self.preprocess(images[start : start + batch_size]))
            logits.append(out[0])
            features.append(out[1])
        if not logits:
            raise OnnxRuntimeError('predict_images: no images given')
        logits = np.concatenate(logits)
        return OnnxPrediction(
            probs=_softmax(logits), logits=logits, features=np.concatenate(features)
        )
