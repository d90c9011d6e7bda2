"""What input a trained model expects: facts about its training slices, for people and programs.

Three consumers read the same facts: the model card's "Input data" section, the MONAI-bundle-style
``network_data_format`` block under ``config.json['adni_timm']`` (for programs that check inputs
before they call a model), and the card's example image. Everything here is a pure function of
decoded slices or recorded facts (the data note, adni-prepare's recipe, the export's timm cfg);
only :func:`read_sample` and :func:`write_example_image` touch files.

``InputDescription.to_dict()`` is what training stores under ``config.json['adni_timm']['input']``;
``network_data_format`` follows MONAI's bundle metadata (``docs.monai.io`` "MONAI Bundle
Specification", tensor format specifiers: type, format, modality, num_channels, spatial_shape,
dtype, value_range, is_patch_data, channel_def) and adds what a 2D slice model needs beyond it
(orientation, sequence, the source image and the transform from it).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, PngImagePlugin

from ..data.note import DataNote
from ..utils.legacy import upgrade

__all__ = [
    'PERCENTILES',
    'EXAMPLE_NAME',
    'IntensityStats',
    'InputDescription',
    'intensity_stats',
    'describe_input',
    'read_sample',
    'describe_slices',
    'recipe_steps',
    'recipe_lines',
    'orientation',
    'network_data_format',
    'example_image',
    'write_example_image',
]

PERCENTILES = (1, 5, 50, 95, 99)
EXAMPLE_NAME = 'example.png'  # the card's example and widget image: SYNTHETIC, never data
# adni-prepare's steps in the order it runs them (adni_timm.prepare.preprocess.STEPS), and what
# each means
_STEP_ORDER = ('reorient', 'resample', 'n4', 'register', 'mask', 'normalise', 'slice')


class _SliceLike(Protocol):
    """``adni_timm.data.Slice`` without importing it (data imports torch)."""

    path: str
    scan: str
    slice_index: int | None


# ---------------------------------------------------------------------------------- the facts


@dataclass(frozen=True)
class IntensityStats:
    """8-bit pixel values (0-255) over every pixel of the images it was computed on."""

    n_pixels: int
    mean: float
    std: float
    min: int
    max: int
    percentiles: dict[int, float]  # percentile -> value (inverted CDF: an actual pixel value)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out['percentiles'] = {str(k): v for k, v in self.percentiles.items()}
        return out

    @classmethod
    def from_dict(cls, block: Mapping[str, Any]) -> IntensityStats:
        values = dict(block)
        values['percentiles'] = {int(k): float(v) for k, v in values['percentiles'].items()}
        return cls(**values)


@dataclass(frozen=True)
class InputDescription:
    """What the training slices were: stored under ``config.json['adni_timm']['input']``."""

    source: str  # the data note: 'ADNI AD_NC', 'synthetic (...)', adni-prepare's note
    synthetic: bool
    n_slices: int  # training slices described (slice numbers, scans)
    n_scans: int
    n_images: int  # of them decoded for sizes and intensities
    image_sizes: tuple[tuple[int, int], ...]  # distinct (width, height), most frequent first
    mode: str  # 'L': 8-bit grayscale, as the loader reads every file
    file_types: tuple[str, ...]  # suffixes seen ('.jpeg', '.png')
    slice_range: tuple[int, int] | None  # smallest and largest slice number in the file names
    slices_per_scan: tuple[int, int] | None  # fewest and most slices of one scan
    intensity: IntensityStats | None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """The most frequent (width, height)."""
        return self.image_sizes[0] if self.image_sizes else None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out['image_sizes'] = [list(s) for s in self.image_sizes]
        out['file_types'] = list(self.file_types)
        for key in ('slice_range', 'slices_per_scan'):
            out[key] = list(out[key]) if out[key] is not None else None
        out['intensity'] = self.intensity.to_dict() if self.intensity is not None else None
        return out

    @classmethod
    def from_dict(cls, block: Mapping[str, Any]) -> InputDescription:
        known = {f.name for f in dataclasses.fields(cls)}
        block = upgrade(dict(block))  # n_patients, slices_per_patient: exports written before
        values = {k: v for k, v in block.items() if k in known}  # newer keys are ignored
        values['image_sizes'] = tuple(tuple(s) for s in values.get('image_sizes') or ())
        values['file_types'] = tuple(values.get('file_types') or ())
        for key in ('slice_range', 'slices_per_scan'):
            values[key] = tuple(values[key]) if values.get(key) is not None else None
        if values.get('intensity') is not None:
            values['intensity'] = IntensityStats.from_dict(values['intensity'])
        return cls(**values)


def intensity_stats(images: Iterable[np.ndarray]) -> IntensityStats | None:
    """Pixel statistics of 8-bit grayscale images (None for no image).

    Accumulated as one 256-bin histogram, so thousands of slices cost one counter, and the
    percentiles are exact (the smallest value whose cumulative share reaches p%).
    """
    counts = np.zeros(256, dtype=np.int64)
    for image in images:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f'intensity_stats needs 8-bit images (uint8), got {array.dtype}')
        counts += np.bincount(array.ravel(), minlength=256)
    n = int(counts.sum())
    if n == 0:
        return None
    values = np.arange(256, dtype=np.float64)
    mean = float((counts * values).sum() / n)
    std = float(np.sqrt((counts * (values - mean) ** 2).sum() / n))
    cumulative = np.cumsum(counts)
    percentiles = {
        p: float(np.searchsorted(cumulative, p / 100 * n, side='left')) for p in PERCENTILES
    }
    present = np.flatnonzero(counts)
    return IntensityStats(
        n_pixels=n,
        mean=mean,
        std=std,
        min=int(present[0]),
        max=int(present[-1]),
        percentiles=percentiles,
    )


def describe_input(
    slices: Sequence[_SliceLike], images: Iterable[np.ndarray], note: DataNote
) -> InputDescription:
    """The description of a training set: ``slices`` are all its slices (their scans and slice
    numbers are counted), ``images`` the decoded 8-bit arrays ``[H, W]`` of all or a sample of them
    (sizes and intensities), ``note`` what the data folder says it is."""
    images = [np.asarray(image) for image in images]
    sizes = Counter((int(a.shape[1]), int(a.shape[0])) for a in images)
    per_scan = Counter(s.scan for s in slices)
    numbers = [s.slice_index for s in slices if s.slice_index is not None]
    suffixes = sorted({Path(s.path).suffix.lower() for s in slices if Path(s.path).suffix})
    return InputDescription(
        source=note.note,
        synthetic=note.synthetic,
        n_slices=len(slices),
        n_scans=len(per_scan),
        n_images=len(images),
        image_sizes=tuple(size for size, _ in sizes.most_common()),
        mode='L',
        file_types=tuple(suffixes),
        slice_range=(min(numbers), max(numbers)) if numbers else None,
        slices_per_scan=(min(per_scan.values()), max(per_scan.values())) if per_scan else None,
        intensity=intensity_stats(images),
    )


def read_sample(slices: Sequence[_SliceLike], max_images: int = 1000) -> list[np.ndarray]:
    """Up to ``max_images`` of ``slices`` decoded as 8-bit grayscale, evenly spaced over the list
    (deterministic: the same list gives the same sample)."""
    from ..data import read_image  # torch-heavy module: only when files are read

    if not slices or max_images <= 0:
        return []
    picks = np.unique(np.linspace(0, len(slices) - 1, min(max_images, len(slices))).round())
    return [np.asarray(read_image(slices[int(i)].path)) for i in picks]


def describe_slices(
    slices: Sequence[_SliceLike], note: DataNote, max_images: int = 1000
) -> InputDescription:
    """:func:`describe_input` on the files themselves (a sample of ``max_images`` decoded)."""
    return describe_input(slices, read_sample(slices, max_images), note)


# ----------------------------------------------------------------------- adni-prepare's recipe


def _recipe(preprocessing: Mapping[str, Any] | None) -> dict[str, Any]:
    """The recipe inside prepare.json (its ``recipe`` entry), or the recipe itself."""
    if not preprocessing:
        return {}
    inner = preprocessing.get('recipe')
    return dict(inner) if isinstance(inner, Mapping) else dict(preprocessing)


def recipe_steps(preprocessing: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The steps adni-prepare ran, in order: as recorded (``steps``), else read from the recipe's
    switches (``n4: false`` leaves out ``n4``, ``resample_mm: null`` leaves out ``resample``)."""
    if not preprocessing:
        return ()
    recipe = _recipe(preprocessing)
    recorded = preprocessing.get('steps') or recipe.get('steps')
    if recorded:
        return tuple(str(s) for s in recorded)
    on = {
        'reorient': recipe.get('reorient', True),
        'resample': recipe.get('resample_mm', 1.0) is not None,
        'n4': recipe.get('n4', True),
        'register': recipe.get('register', True),
        'mask': recipe.get('mask', True),
        'normalise': recipe.get('normalise', True),
        'slice': True,
    }
    return tuple(step for step in _STEP_ORDER if on[step])


def _pair(value: Any, sep: str = ' to ') -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f'{_num(value[0])}{sep}{_num(value[1])}'
    return str(value)


def _num(value: Any) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


def _template_name(preprocessing: Mapping[str, Any]) -> str:
    template = preprocessing.get('template')
    if isinstance(template, Mapping):
        return str(template.get('name') or 'the MNI152 template')
    return str(template) if template else 'the MNI152 template'


def recipe_lines(preprocessing: Mapping[str, Any] | None) -> list[str]:
    """adni-prepare's recipe in words, one line per step (empty when there is none)."""
    if not preprocessing:
        return []
    recipe = _recipe(preprocessing)
    words = {
        'reorient': 'reorient the volume to canonical RAS (a relabelling, no interpolation)',
        'resample': f'resample to {_num(recipe.get("resample_mm", 1.0))} mm isotropic voxels',
        'n4': 'N4 bias-field correction',
        'register': f'affine registration to {_template_name(preprocessing)}',
        'mask': (
            "brain mask from the registered template's mask: an approximate skull strip "
            '(affine only, not a subject-specific segmentation)'
        ),
        'normalise': (
            f'intensity normalisation: the {_pair(recipe.get("percentiles", "?"), "-")} '
            f'percentiles of the brain voxels mapped to 0-255'
        ),
        'slice': _slicing_words(recipe),
    }
    lines = [
        f'`{step}`: {words.get(step, "(not described by this adni-timm version)")}'
        for step in recipe_steps(preprocessing)
    ]
    if recipe.get('image_format'):
        lines.append(f'saved as 8-bit {str(recipe["image_format"]).upper()}')
    return lines


def _slicing_words(recipe: Mapping[str, Any]) -> str:
    parts = []
    if recipe.get('slices') is not None:
        parts.append(f'{recipe["slices"]} axial slices')
    else:
        parts.append('axial slices')
    if recipe.get('z_range_mm') is not None:
        parts.append(f'evenly over MNI z = {_pair(recipe["z_range_mm"])} mm')
    if recipe.get('size') is not None:
        parts.append(f'cropped or padded to {_pair(recipe["size"], " x ")} px (width x height)')
    return ' '.join(parts)


def orientation(preprocessing: Mapping[str, Any] | None, synthetic: bool) -> str:
    """How the slices are oriented, as far as it is known (adni-prepare's recipe says it)."""
    if preprocessing:
        steps = recipe_steps(preprocessing)
        recorded = _recipe(preprocessing).get('orientation') or preprocessing.get('orientation')
        text = 'axial 2D slices'
        if 'register' in steps:
            text += f', in the space of {_template_name(preprocessing)} (affine registration)'
        elif 'reorient' in steps:
            text += ', reoriented to RAS (not registered)'
        return f'{text}; {recorded}' if recorded else text
    if synthetic:
        return 'axial 2D slices drawn by adni_timm.synthetic (no scanner, no registration)'
    return (
        'axial 2D slices as in the source set (its orientation and registration are not recorded '
        'with it)'
    )


# --------------------------------------------------------------------- network_data_format


def network_data_format(
    pretrained_cfg: Mapping[str, Any],
    classes: Sequence[str],
    description: InputDescription | Mapping[str, Any] | None = None,
    *,
    synthetic: bool = False,
    preprocessing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The MONAI-bundle-style ``network_data_format`` of a published export.

    ``pretrained_cfg`` is the export's timm cfg (what the published network takes: ``input_size``,
    ``mean``, ``std``, ``crop_pct``, ``interpolation``); ``classes`` its label names in logit
    order; ``description`` the training slices (:class:`InputDescription` or its dict), when
    recorded; ``synthetic`` and ``preprocessing`` (adni-prepare's prepare.json) as the export
    records them, for exports without a description.
    """
    if isinstance(description, Mapping):
        description = InputDescription.from_dict(description)
    if description is not None:
        synthetic = synthetic or description.synthetic
    channels, height, width = (int(v) for v in pretrained_cfg.get('input_size', (3, 224, 224)))
    mean = float((pretrained_cfg.get('mean') or [0.5])[0])
    std = float((pretrained_cfg.get('std') or [0.5])[0])
    crop_pct = float(pretrained_cfg.get('crop_pct') or 1.0)
    image: dict[str, Any] = {
        'type': 'image',
        'format': 'magnitude',
        'modality': 'MR',
        'num_channels': channels,
        'spatial_shape': [height, width],
        'dtype': 'float32',
        # x / 255 in [0, 1], then (x - mean) / std
        'value_range': [round((0 - mean) / std, 6), round((1 - mean) / std, 6)],
        'is_patch_data': False,
        'channel_def': {
            str(c): 'the grayscale slice' + (' (the same in every channel)' if channels > 1 else '')
            for c in range(channels)
        },
        # beyond MONAI's keys: what a 2D slice classifier needs said
        'sequence': 'synthetic T1-like image, not MRI' if synthetic else 'T1-weighted',
        'orientation': orientation(preprocessing, synthetic),
        'synthetic': synthetic,
        'transform': (
            f'8-bit grayscale slice; resize the shorter side to {round(height / crop_pct)} px '
            f'({pretrained_cfg.get("interpolation", "bilinear")}), centre crop {height} x {width}, '
            f'x / 255, (x - {mean:g}) / {std:g}'
        ),
        'one_channel': 'timm.create_model(..., in_chans=1) takes the same input as 1 channel',
    }
    if description is not None:
        source: dict[str, Any] = {'mode': '8-bit grayscale', 'value_range': [0, 255]}
        if description.image_size is not None:
            source['width'], source['height'] = description.image_size
        if description.slice_range is not None:
            source['slice_range'] = list(description.slice_range)
        if description.intensity is not None:
            source['intensity_mean'] = round(description.intensity.mean, 3)
            source['intensity_std'] = round(description.intensity.std, 3)
        image['source_image'] = source
    if preprocessing:
        image['preprocessing'] = list(recipe_steps(preprocessing))
    pred = {
        'type': 'probabilities',
        'format': 'classes',
        'modality': 'n/a',
        'num_channels': len(classes),
        'spatial_shape': [1, len(classes)],
        'dtype': 'float32',
        'value_range': [],  # logits: unbounded
        'is_patch_data': False,
        'channel_def': {str(i): name for i, name in enumerate(classes)},
        'activation': (
            'logits: P = softmax(logits / temperature); decide P(AD) >= threshold (both in '
            "config.json['adni_timm'])"
        ),
    }
    return {'inputs': {'image': image}, 'outputs': {'pred': pred}}


# -------------------------------------------------------------------------- the example image


def example_image(size: tuple[int, int] | None = None, seed: int = 0) -> Image.Image:
    """A SYNTHETIC slice (adni_timm.synthetic, never a training image) for the card and the Hub
    widget, at ``size`` (width, height; default the generator's 256 x 240)."""
    from ..synthetic.slices import render_scan

    _, images = render_scan(np.random.default_rng(seed), 0.5, slices=20, difficulty='default')
    image = Image.fromarray(images[len(images) // 2], 'L')  # a mid-ventricle level
    if size is not None and tuple(size) != image.size:
        image = image.resize(tuple(int(v) for v in size), Image.Resampling.BILINEAR)
    return image


def write_example_image(out_dir: str | os.PathLike, size: tuple[int, int] | None = None) -> Path:
    """``out_dir/example.png``: :func:`example_image`, labelled SYNTHETIC in its PNG text."""
    from ..synthetic.slices import SYNTHETIC_COMMENT

    path = Path(out_dir) / EXAMPLE_NAME
    info = PngImagePlugin.PngInfo()
    info.add_text('Comment', SYNTHETIC_COMMENT.decode())
    example_image(size).save(path, 'PNG', pnginfo=info)
    return path
