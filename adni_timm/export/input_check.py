"""Refuse slices unlike the training slices: cheap image checks, then a feature-space distance.

A model scores anything it is given: an all-black JPEG gets a confident P(AD). This check says,
per image, whether it looks like what the model was trained on, and why not, in one line::

    check = fit_input_check(model, train_paths, train_labels, val_paths, transform=eval_tf)
    check.save(export_dir)                       # input_check.json + input_check.safetensors
    check = InputCheck.load(export_dir)          # None for an export without one
    for v in check.check(model, paths, eval_tf):
        if not v.ok:
            print(f'does not look like a training slice: {v.reason}')

Two stages, both fitted on the training slices and stored beside the export (files that stock
timm and transformers ignore):

1. **Image checks** on the decoded 8-bit grayscale slice, before the model transform: colour,
   aspect ratio, blank or near-constant, intensity percentiles and foreground fraction outside the
   range training saw, the correlation with the mean training slice at 32 x 32 px (a photo or
   noise does not resemble a brain), and three orientation cues: the head's height / width (an
   axial slice is longer front to back than side to side), and whether a 90-degree-turned or an
   upside-down copy of the mean slice fits better than the mean itself. Ranges are the training
   minimum and maximum, widened by ``RANGE_WIDEN`` of their span plus a per-statistic slack (JPEG
   noise, scanner gain), so held-out slices of new scans pass; the two 90-degree bounds are
   plain facts instead (``StatRange.fit``: wider than tall; the turned mean fits better), because
   a held-out round head falls below the training range of both cues while still upright.
2. **Feature check**: the penultimate features (timm's ``forward_head(forward_features(x),
   pre_logits=True)``) against class-conditional Gaussians with one shared covariance, shrunk
   with scikit-learn's Ledoit-Wolf estimator (a few thousand slices for 320-1024 feature
   dimensions). The score is the Mahalanobis distance to the nearest class mean. The threshold
   comes from the *validation* slices' distances (never the training slices', which the
   covariance was fitted on and so sit closer): 1.5 x their 95th percentile by default. Not a
   tail quantile such as the 99.5th: slices of one scan move together, so a tail quantile is
   set by one or two validation scans and new scans cross it far more often than it
   promises (the figures: docs/EVALUATION.md, "Inputs the model refuses").

Images are PIL images (any mode; colour is detected before the conversion to 'L') or file paths.
The feature stage needs the model as ``inference.load_model`` loads it (1 channel) and its eval
transform (``data.build_transforms(model)[1]``); ``InputCheck.verdicts`` takes precomputed
features instead, e.g. the ONNX runner's (``adni_timm.export.onnx_runtime``: its ``features``
output), so an onnxruntime backend needs no torch forward pass for it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from ..data.images import is_colour, to_gray
from ..utils.files import sha256_file, write_json

__all__ = [
    'CHECK_NAME',
    'TENSORS_NAME',
    'INPUT_CHECK_FILES',
    'TEMPLATE_SIZE',
    'InputCheckError',
    'ImageStats',
    'StatRange',
    'ImageRanges',
    'FeatureGaussians',
    'InputCheckSummary',
    'InputVerdict',
    'InputCheck',
    'is_colour',
    'to_gray',
    'image_stats',
    'penultimate_features',
    'fit_input_check',
]

_logger = logging.getLogger(__name__)

CHECK_NAME = 'input_check.json'
TENSORS_NAME = 'input_check.safetensors'
INPUT_CHECK_FILES = (CHECK_NAME, TENSORS_NAME)
FORMAT_VERSION = 1
TEMPLATE_SIZE = 32  # px a side: the mean slice at this size keeps the head outline, costs nothing
# colour: over 1% of pixels whose R, G, B differ by more than 24 grey levels (the chroma noise of a
# grayscale slice saved as an RGB JPEG stays well below); the web demo's rule
MIN_CONTRAST = 8  # grey levels between the 1st and 99th percentile: below it a slice is blank
FOREGROUND_LEVEL = 0.15  # a pixel is foreground above this fraction of its slice's 99th percentile
ASPECT_TOLERANCE = 0.05  # relative: a 256 x 240 slice turned by 90 degrees is 12% off
RANGE_WIDEN = 0.25  # of the training span (max - min), on both sides of every range
# absolute slack per statistic on top of RANGE_WIDEN: what re-encoding or another scanner's gain
# moves without the slice being different
SLACK = {
    'p1': 8.0,
    'p50': 8.0,
    'p99': 8.0,
    'foreground_fraction': 0.03,
    'elongation': 0.02,
    'template_correlation': 0.05,
    'upright_vs_rotated': 0.01,
    'upright_vs_flipped': 0.01,
}
# bounded below only: a slice cannot resemble the mean slice too much, nor look too upright
LOWER_BOUND_ONLY = (
    'template_correlation',
    'elongation',
    'upright_vs_rotated',
    'upright_vs_flipped',
)
# readable names and units for the reasons
_DESCRIBE = {
    'p1': ('its 1st-percentile grey level', '{:.0f}'),
    'p50': ('its median grey level', '{:.0f}'),
    'p99': ('its 99th-percentile grey level', '{:.0f}'),
    'foreground_fraction': ('its foreground (pixels above 15% of its 99th percentile)', '{:.0%}'),
}

ImageLike = Union[Image.Image, str, os.PathLike]


class InputCheckError(ValueError):
    """A stored input check that cannot be used with this model; the message names the fix."""


# ------------------------------------------------------------------------------ image statistics


@dataclass(frozen=True)
class ImageStats:
    """The numbers the image checks look at, for one decoded slice."""

    width: int
    height: int
    colour: bool
    contrast: float  # 99th minus 1st percentile grey level
    p1: float
    p50: float
    p99: float
    foreground_fraction: float
    elongation: float  # height / width of the foreground (sd of its rows / of its columns)
    template_correlation: float  # Pearson r with the mean training slice at 32 x 32 (nan: blank)
    upright_vs_rotated: float  # r(mean) - r(mean turned by +-90 degrees): < 0 fits turned better
    upright_vs_flipped: float  # r(mean) - r(mean upside down): < 0 fits upside down better

    @property
    def blank(self) -> bool:
        return self.contrast < MIN_CONTRAST


def _decode(item: ImageLike) -> tuple[Image.Image, bool]:
    """(8-bit grayscale image, whether the original was colour)."""
    if isinstance(item, Image.Image):
        return to_gray(item), is_colour(item)
    with Image.open(item) as im:
        im.load()
        return to_gray(im), is_colour(im)


def _zscore(a: np.ndarray) -> np.ndarray:
    v = a.astype(np.float64).ravel()
    v = v - v.mean()
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def _small(gray: Image.Image) -> np.ndarray:
    """The slice squashed to TEMPLATE_SIZE x TEMPLATE_SIZE, z-scored, as a vector."""
    return _zscore(np.asarray(gray.resize((TEMPLATE_SIZE, TEMPLATE_SIZE), Image.BILINEAR)))


@dataclass(frozen=True)
class _Templates:
    """The mean training slice (z-scored 32 x 32) and its turned and flipped copies."""

    upright: np.ndarray

    def correlations(self, small: np.ndarray) -> tuple[float, float, float]:
        """(r with upright, r with the best of +-90 degrees, r with upside down)."""
        t = self.upright.reshape(TEMPLATE_SIZE, TEMPLATE_SIZE)
        rotated = max(float(small @ _zscore(np.rot90(t, k))) for k in (1, 3))
        return float(small @ self.upright), rotated, float(small @ _zscore(np.flipud(t)))


def image_stats(
    gray: Image.Image,
    colour: bool,
    templates: _Templates | None,
    small: np.ndarray | None = None,
) -> ImageStats:
    """The statistics of one decoded grayscale slice (template columns nan without templates).

    ``small``: its 32 x 32 z-scored form when the caller has it already."""
    a = np.asarray(gray)
    p1, p50, p99 = (float(v) for v in np.percentile(a, [1, 50, 99]))
    mask = a > FOREGROUND_LEVEL * p99 if p99 > 0 else np.zeros(a.shape, bool)
    foreground = float(mask.mean())
    rows, cols = np.nonzero(mask)
    elongation = float(np.sqrt(rows.var() / cols.var())) if cols.size and cols.var() > 0 else 0.0
    r_up = r_rot = r_flip = math.nan
    if templates is not None and p99 - p1 >= MIN_CONTRAST:
        r_up, r_rot, r_flip = templates.correlations(_small(gray) if small is None else small)
    return ImageStats(
        width=gray.width,
        height=gray.height,
        colour=colour,
        contrast=p99 - p1,
        p1=p1,
        p50=p50,
        p99=p99,
        foreground_fraction=foreground,
        elongation=elongation,
        template_correlation=r_up,
        upright_vs_rotated=r_up - r_rot,
        upright_vs_flipped=r_up - r_flip,
    )


@dataclass(frozen=True)
class StatRange:
    """Accepted values of one statistic: training min / max, widened (see the module docstring)."""

    lo: float
    hi: float | None  # None: no upper bound
    train_min: float
    train_max: float

    @classmethod
    def fit(cls, values: np.ndarray, name: str) -> StatRange:
        lo, hi = float(np.min(values)), float(np.max(values))
        pad = RANGE_WIDEN * (hi - lo) + SLACK[name]
        lower = lo - pad
        if name == 'upright_vs_rotated':
            # flagged only when the turned mean fits better (< 0), or below anything training saw
            lower = min(0.0, lower)
        elif name == 'elongation' and lo >= 1:
            # every training head is taller than wide: one wider than tall is turned
            lower = 1.0
        upper = None if name in LOWER_BOUND_ONLY else hi + pad
        return cls(lo=lower, hi=upper, train_min=lo, train_max=hi)

    def __contains__(self, value: float) -> bool:
        return self.lo <= value and (self.hi is None or value <= self.hi)


@dataclass(frozen=True)
class ImageRanges:
    """What the image checks accept: aspect ratios and statistic ranges seen in training."""

    aspect_min: float  # width / height
    aspect_max: float
    sizes: tuple[tuple[int, int], ...]  # (width, height) seen in training, most common first
    ranges: dict[str, StatRange]

    def _aspect_seen(self, aspect: float) -> bool:
        lo, hi = self.aspect_min * (1 - ASPECT_TOLERANCE), self.aspect_max * (1 + ASPECT_TOLERANCE)
        return lo <= aspect <= hi

    def problems(self, s: ImageStats) -> list[str]:
        """Why the statistics ``s`` are unlike training (empty: like training)."""
        out = []
        if s.colour:
            out.append('it is a colour image (training slices are grayscale)')
        if not self._aspect_seen(s.width / s.height):
            w, h = self.sizes[0]
            turned = self._aspect_seen(s.height / s.width)
            out.append(
                f'it is {s.width} x {s.height} px (width x height), a shape training never saw '
                f'(training slices: {w} x {h}){"; is it rotated by 90 degrees?" if turned else ""}'
            )
        if s.blank:  # the statistics below mean nothing for a uniform image
            out.append(
                f'it is blank or nearly uniform (grey levels {s.p1:.0f} to {s.p99:.0f} '
                f'between the 1st and 99th percentile)'
            )
            return out
        for name, (what, form) in _DESCRIBE.items():
            r, value = self.ranges[name], getattr(s, name)
            if value not in r:
                out.append(
                    f'{what} is {form.format(value)}, outside the training range '
                    f'{form.format(r.train_min)} to {form.format(r.train_max)}'
                )
        corr = self.ranges['template_correlation']
        turned = s.template_correlation - s.upright_vs_rotated  # r with the turned mean slice
        flipped = s.template_correlation - s.upright_vs_flipped
        if not any(r in corr for r in (s.template_correlation, turned, flipped)):
            out.append(
                f'it does not resemble the mean training slice (correlation '
                f'{s.template_correlation:.2f}; training slices {corr.train_min:.2f} or more)'
            )
            return out  # the orientation cues below assume a head: meaningless here
        orientation = []
        elongation = self.ranges.get('elongation')
        if elongation is not None and s.elongation not in elongation:
            orientation.append(
                f'its head is {s.elongation:.2f} times as tall as wide (training slices '
                f'{elongation.train_min:.2f} to {elongation.train_max:.2f}): is it rotated by '
                f'90 degrees?'
            )
        if s.upright_vs_rotated not in self.ranges['upright_vs_rotated']:
            orientation.append(
                'it looks rotated by 90 degrees (it matches the turned mean training slice '
                'better than the upright one)'
            )
        if s.upright_vs_flipped not in self.ranges['upright_vs_flipped']:
            orientation.append(
                'it looks upside down (it matches the flipped mean training slice better than '
                'the upright one)'
            )
        if s.template_correlation not in corr and not orientation:
            orientation.append(
                f'it does not resemble the mean training slice (correlation '
                f'{s.template_correlation:.2f}; training slices {corr.train_min:.2f} or more)'
            )
        return out + orientation


# ----------------------------------------------------------------------------- feature statistics


def _ordinal(quantile: float) -> str:
    """0.95 -> '95th', 0.995 -> '99.5th', 0.5 -> '50th'."""
    pct = f'{100 * quantile:g}'
    if '.' in pct or pct.endswith(('11', '12', '13')):
        return pct + 'th'
    return pct + {'1': 'st', '2': 'nd', '3': 'rd'}.get(pct[-1], 'th')


def penultimate_features(model, images) -> Any:
    """timm's pooled pre-logits features ``[N, D]``: ``forward_head(..., pre_logits=True)``."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


@dataclass(frozen=True)
class FeatureGaussians:
    """Class-conditional Gaussians with one shared, shrunk covariance, and the distance threshold.

    The parameters are float32 (what is stored), distances are computed in float64 from them, so a
    loaded check gives the very distances its threshold was set on.
    """

    class_means: np.ndarray  # [C, D] float32
    precision: np.ndarray  # [D, D] float32, the inverse of the shared covariance
    threshold: float  # Mahalanobis distance above which a slice is refused
    quantile: float  # threshold = quantile(validation distances) * (1 + margin)
    margin: float
    shrinkage: float  # Ledoit-Wolf's shrinkage towards a scaled identity

    @property
    def dim(self) -> int:
        return int(self.class_means.shape[1])

    @property
    def rule(self) -> str:
        """How the threshold was set, in words."""
        return (
            f'{1 + self.margin:g} x the {_ordinal(self.quantile)} percentile of validation slices'
        )

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features [N, D]`` to the nearest class mean."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputCheckError(
                f'the input check was fitted on {self.dim}-dimensional features, this model '
                f'gives {tuple(x.shape)}: it belongs to another model; fit it again for these '
                f'weights (adni_timm.export.input_check.fit_input_check)'
            )
        precision = self.precision.astype(np.float64)
        squared = [
            np.einsum('nd,de,ne->n', x - mu, precision, x - mu)
            for mu in self.class_means.astype(np.float64)
        ]
        return np.sqrt(np.clip(np.min(squared, axis=0), 0, None))

    @classmethod
    def fit(
        cls,
        train_features: np.ndarray,
        train_labels: np.ndarray,
        val_features: np.ndarray,
        quantile: float,
        margin: float,
    ) -> tuple[FeatureGaussians, np.ndarray]:
        """The Gaussians of the training features, thresholded on the validation distances;
        returns (fitted, validation distances)."""
        from sklearn.covariance import LedoitWolf

        x = np.asarray(train_features, dtype=np.float64)
        labels = np.asarray(train_labels)
        classes = np.unique(labels)
        means = np.stack([x[labels == c].mean(0) for c in classes])
        centred = x - means[np.searchsorted(classes, labels)]
        lw = LedoitWolf(assume_centered=True).fit(centred)
        unthresholded = cls(
            class_means=means.astype(np.float32),
            precision=lw.precision_.astype(np.float32),
            threshold=math.inf,
            quantile=quantile,
            margin=margin,
            shrinkage=float(lw.shrinkage_),
        )
        val_distances = unthresholded.distances(val_features)
        threshold = float(np.quantile(val_distances, quantile)) * (1 + margin)
        return dataclasses.replace(unthresholded, threshold=threshold), val_distances


# -------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class InputVerdict:
    """Whether one image looks like a training slice, why not, and the numbers behind it."""

    ok: bool
    reason: str | None  # the text after "does not look like a training slice: "; None when ok
    problems: tuple[str, ...]
    stats: ImageStats
    distance: float | None  # Mahalanobis distance of its features; None without a feature check
    threshold: float | None


@dataclass(frozen=True)
class InputCheckSummary:
    """The validation pass rates and the threshold: what metrics.json reports."""

    n_train: int
    n_val: int
    threshold: float
    quantile: float
    margin: float
    val_pass_rate: float  # both stages
    val_image_pass_rate: float
    val_feature_pass_rate: float

    def as_metrics(self) -> dict[str, Any]:
        """The ``metrics.json['input_check']`` block."""
        return {
            'threshold': self.threshold,
            'threshold_rule': (
                f'Mahalanobis distance of the penultimate features > {1 + self.margin:g} x the '
                f'{_ordinal(self.quantile)} percentile of the validation slices'
            ),
            'validation_pass_rate': self.val_pass_rate,
            'validation_image_pass_rate': self.val_image_pass_rate,
            'validation_feature_pass_rate': self.val_feature_pass_rate,
            'n_train': self.n_train,
            'n_val': self.n_val,
        }


@dataclass(frozen=True)
class InputCheck:
    """A fitted input check: image ranges, the mean training slice, the feature Gaussians."""

    ranges: ImageRanges
    template: np.ndarray  # [TEMPLATE_SIZE**2] float64, z-scored mean training slice
    features: FeatureGaussians
    summary: InputCheckSummary

    @property
    def _templates(self) -> _Templates:
        return _Templates(self.template)

    def image_stats(self, images: Sequence[ImageLike]) -> list[ImageStats]:
        """The image-stage statistics of each image (no model)."""
        return _scan(images, self._templates, None, None, 1, 'cpu')[0]

    def verdicts(
        self, stats: Sequence[ImageStats], features: np.ndarray | None
    ) -> list[InputVerdict]:
        """Verdicts from image statistics and (optionally) the penultimate features ``[N, D]``
        computed elsewhere, e.g. by the ONNX runner; without features only the image stage runs."""
        distances = None if features is None else self.features.distances(features)
        out = []
        for i, s in enumerate(stats):
            problems = self.ranges.problems(s)
            distance = None if distances is None else float(distances[i])
            if distance is not None and not s.blank and distance > self.features.threshold:
                problems.append(
                    f"the model's features are far from the training slices' (Mahalanobis "
                    f'distance {distance:.1f}, above {self.features.threshold:.1f} = '
                    f'{self.features.rule})'
                )
            out.append(
                InputVerdict(
                    ok=not problems,
                    reason='; '.join(problems) or None,
                    problems=tuple(problems),
                    stats=s,
                    distance=distance,
                    threshold=None if distance is None else self.features.threshold,
                )
            )
        return out

    def check(
        self,
        model,
        images: Sequence[ImageLike],
        transform: Callable,
        *,
        batch_size: int = 64,
        device='cpu',
    ) -> list[InputVerdict]:
        """Both stages for each image, in order (the model runs once per image, in fp32)."""
        stats, _, features = _scan(images, self._templates, model, transform, batch_size, device)
        return self.verdicts(stats, features)

    # ------------------------------------------------------------------------------ stored form

    def save(self, export_dir: str | os.PathLike) -> list[Path]:
        """Write ``input_check.json`` + ``input_check.safetensors`` into ``export_dir``.

        The json records the fingerprint of ``model.safetensors`` there (when present), so a
        check left beside other weights is refused on load rather than silently wrong.
        """
        export_dir = Path(export_dir)
        weights = export_dir / 'model.safetensors'
        tensors = export_dir / TENSORS_NAME
        tmp = tensors.with_name(f'.{tensors.name}.tmp')
        save_file(
            {
                'template': self.template.astype(np.float64),
                'class_means': self.features.class_means,
                'precision': self.features.precision,
            },
            str(tmp),
        )
        tmp.replace(tensors)
        record = {
            'format': FORMAT_VERSION,
            'what': (
                'adni-timm input check: slices unlike the training slices are refused (see '
                'adni_timm.export.input_check); tensors in ' + TENSORS_NAME
            ),
            'weights_sha256': sha256_file(weights) if weights.is_file() else None,
            'image': {
                'aspect_min': self.ranges.aspect_min,
                'aspect_max': self.ranges.aspect_max,
                'sizes': [list(s) for s in self.ranges.sizes],
                'ranges': {k: dataclasses.asdict(r) for k, r in self.ranges.ranges.items()},
                'template_size': TEMPLATE_SIZE,
            },
            'features': {
                'dim': self.features.dim,
                'threshold': self.features.threshold,
                'quantile': self.features.quantile,
                'margin': self.features.margin,
                'shrinkage': self.features.shrinkage,
            },
            'summary': dataclasses.asdict(self.summary),
        }
        write_json(export_dir / CHECK_NAME, record)
        return [export_dir / CHECK_NAME, tensors]

    @classmethod
    def load(cls, export_dir: str | os.PathLike) -> InputCheck | None:
        """The check stored in ``export_dir``; None when the export has none."""
        export_dir = Path(export_dir)
        path = export_dir / CHECK_NAME
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding='utf-8'))
            tensors = load_file(str(export_dir / TENSORS_NAME))
            image, feats = record['image'], record['features']
            version = record.get('format')
        except (OSError, ValueError, KeyError) as e:
            raise InputCheckError(
                f'{path} or {TENSORS_NAME} beside it cannot be read ({type(e).__name__}: {e}); '
                f'fit the input check again or delete both files'
            ) from e
        if version != FORMAT_VERSION:
            raise InputCheckError(
                f'{path} is input-check format {version}; this adni-timm reads format '
                f'{FORMAT_VERSION}: fit the input check again'
            )
        weights = export_dir / 'model.safetensors'
        recorded = record.get('weights_sha256')
        if recorded and weights.is_file() and sha256_file(weights) != recorded:
            raise InputCheckError(
                f'{path} was fitted on other weights than {weights}: fit the input check '
                f'again for these weights, or delete {CHECK_NAME} and {TENSORS_NAME}'
            )
        ranges = ImageRanges(
            aspect_min=float(image['aspect_min']),
            aspect_max=float(image['aspect_max']),
            sizes=tuple(tuple(s) for s in image['sizes']),
            ranges={k: StatRange(**v) for k, v in image['ranges'].items()},
        )
        gaussians = FeatureGaussians(
            class_means=tensors['class_means'],
            precision=tensors['precision'],
            threshold=float(feats['threshold']),
            quantile=float(feats['quantile']),
            margin=float(feats['margin']),
            shrinkage=float(feats['shrinkage']),
        )
        return cls(
            ranges=ranges,
            template=tensors['template'],
            features=gaussians,
            summary=InputCheckSummary(**record['summary']),
        )


# ------------------------------------------------------------------------------------------- fit


def _scan(
    images: Sequence[ImageLike],
    templates: _Templates | None,
    model,
    transform: Callable | None,
    batch_size: int,
    device,
) -> tuple[list[ImageStats], np.ndarray, np.ndarray | None]:
    """(statistics, 32 x 32 z-scored slices ``[N, 1024]``, penultimate features ``[N, D]`` float64
    or None without a model) of ``images``, decoding each once and holding one batch at a time."""
    stats, smalls, features, batch = [], [], [], []

    def flush():
        if model is not None and batch:
            features.append(_features(model, batch, transform, device))
        batch.clear()

    for item in images:
        gray, colour = _decode(item)
        small = _small(gray)
        stats.append(image_stats(gray, colour, templates, small))
        smalls.append(small)
        batch.append(gray)
        if len(batch) == batch_size:
            flush()
    flush()
    smalls = np.stack(smalls) if smalls else np.zeros((0, TEMPLATE_SIZE**2))
    return stats, smalls, (np.concatenate(features) if model is not None and features else None)


def _features(model, grays: Sequence[Image.Image], transform, device) -> np.ndarray:
    """Penultimate features ``[N, D]`` (float64) of decoded slices, in fp32, in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            batch = torch.stack([transform(g) for g in grays]).to(device)
            return penultimate_features(model, batch).float().cpu().double().numpy()
    finally:
        model.train(was_training)


def _with_templates(stats: list[ImageStats], smalls: np.ndarray, t: _Templates) -> list[ImageStats]:
    """``stats`` with the template columns filled in (the mean slice is known only after a pass)."""
    out = []
    for s, small in zip(stats, smalls):
        if s.blank:
            out.append(s)
            continue
        r_up, r_rot, r_flip = t.correlations(small)
        out.append(
            dataclasses.replace(
                s,
                template_correlation=r_up,
                upright_vs_rotated=r_up - r_rot,
                upright_vs_flipped=r_up - r_flip,
            )
        )
    return out


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def fit_input_check(
    model,
    train_images: Sequence[ImageLike],
    train_labels: Sequence[int],
    val_images: Sequence[ImageLike],
    *,
    transform: Callable,
    batch_size: int = 64,
    device='cpu',
    max_train: int | None = 4000,
    quantile: float = 0.95,
    margin: float = 0.5,
    seed: int = 0,
) -> InputCheck:
    """Fit the input check of ``model`` on its training slices; threshold on validation slices.

    ``train_images`` / ``val_images``: PIL images or paths (the run's own train and validation
    slices). ``train_labels``: class indices of the training slices (one Gaussian per class). At
    most ``max_train`` training slices are used (a seeded sample): the covariance of 768 features
    needs a few thousand, and every slice costs a forward pass. ``model``: as
    ``inference.load_model`` loads it (1 channel); ``transform``: its eval transform.
    ``quantile`` and ``margin`` set the
    threshold (module docstring); the validation pass rates land in ``summary``.
    """
    if len(train_images) != len(train_labels):
        raise ValueError(
            f'fit_input_check: {len(train_images)} training images but {len(train_labels)} labels'
        )
    if len(train_images) < 2 or len(val_images) < 1:
        raise ValueError('fit_input_check needs training slices and validation slices')
    if not 0.5 < quantile <= 1 or margin < 0:
        raise ValueError(f'fit_input_check: quantile {quantile} in (0.5, 1], margin {margin} >= 0')
    keep = _subsample(len(train_images), max_train, seed)
    labels = np.asarray(train_labels)[keep]
    stats, smalls, train_features = _scan(
        [train_images[i] for i in keep], None, model, transform, batch_size, device
    )
    templates = _Templates(_zscore(smalls.mean(axis=0)))
    stats = _with_templates(stats, smalls, templates)

    blank = sum(s.blank for s in stats)
    if blank:
        _logger.warning('%d of %d training slices are blank; ranges ignore them', blank, len(stats))
    usable = [s for s in stats if not s.blank] or stats
    aspects = np.array([s.width / s.height for s in usable])
    counts = Counter((s.width, s.height) for s in usable)
    ranges = ImageRanges(
        aspect_min=float(aspects.min()),
        aspect_max=float(aspects.max()),
        sizes=tuple(size for size, _ in counts.most_common()),
        ranges={
            name: StatRange.fit(np.array([getattr(s, name) for s in usable]), name)
            for name in SLACK
        },
    )

    val_stats, _, val_features = _scan(val_images, templates, model, transform, batch_size, device)
    gaussians, val_distances = FeatureGaussians.fit(
        train_features, labels, val_features, quantile, margin
    )
    provisional = InputCheck(ranges, templates.upright, gaussians, summary=None)
    image_ok = np.array([v.ok for v in provisional.verdicts(val_stats, None)])
    both_ok = np.array([v.ok for v in provisional.verdicts(val_stats, val_features)])
    summary = InputCheckSummary(
        n_train=len(stats),
        n_val=len(val_stats),
        threshold=gaussians.threshold,
        quantile=quantile,
        margin=margin,
        val_pass_rate=float(both_ok.mean()),
        val_image_pass_rate=float(image_ok.mean()),
        val_feature_pass_rate=float(np.mean(val_distances <= gaussians.threshold)),
    )
    _logger.info(
        'input check: %d training + %d validation slices, %d-d features (shrinkage %.3f), '
        'threshold %.2f; validation pass rate %.1f%% (images %.1f%%, features %.1f%%)',
        summary.n_train,
        summary.n_val,
        gaussians.dim,
        gaussians.shrinkage,
        gaussians.threshold,
        100 * summary.val_pass_rate,
        100 * summary.val_image_pass_rate,
        100 * summary.val_feature_pass_rate,
    )
    return dataclasses.replace(provisional, summary=summary)
