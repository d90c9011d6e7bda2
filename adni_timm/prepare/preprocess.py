"""One scan -> the 2D slices the classifier sees: the preprocessing recipe and its steps.

A :class:`Recipe` is plain data (it is written to ``prepare.json`` and, by training, into the
export), and :func:`slices_from_scan` runs it on one scan. Steps, in order, each named, recorded
and switchable (``Recipe.steps`` lists the ones that ran):

``reorient``   voxel order to canonical RAS (``DICOMOrient``; a relabelling, no interpolation)
``resample``   to ``resample_mm`` isotropic voxels (linear), when the scan's voxels differ
``n4``         N4 bias-field correction, fitted on a ``n4_shrink``-times shrunk copy inside a head
               mask and applied to the full-resolution image as ``image / exp(log field)``
``register``   affine registration to the MNI152 template (Mattes mutual information inside the
               template's dilated brain mask, a start from the centre of the upper head, a
               similarity stage then an affine one on ``registration_levels_mm`` shrunk images,
               on one thread); the scan is then resampled
               once onto the template grid. Off (``--no-register``): the scan is taken to be in
               MNI space already and only resampled onto the grid
``mask``       the template's brain mask, dilated by ``mask_dilation_mm``: an APPROXIMATE skull
               strip (affine only: cortex that lies outside the template's brain is cut, some
               dura may stay), never a learned or subject-specific one
``normalise``  robust percentiles (``percentiles``) of the brain voxels of the slab -> 0..255
``slice``      ``slices`` axial planes evenly over ``z_range_mm`` (MNI), numbered by the
               template's axial voxel index ``k`` (MNI z = k - 72), each cropped or padded to
               ``size`` around ``centre_mm``; rows run anterior -> posterior, columns the
               patient's right -> left (radiological view)

The scan is resampled once onto the whole template grid: the slab of the slices is cut from it,
and the registration similarity (``similarity.registration_similarity``: how much better the
scan matches the template as registered than turned front to back or upside down) is measured on
it.
"""

from __future__ import annotations

import io
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .similarity import registration_similarity
from .template import Template, load_template
from .volumes import VolumeError, read_volume, ras_from_image

__all__ = [
    'RECIPE_VERSION',
    'STEPS',
    'RecipeError',
    'RegistrationError',
    'Recipe',
    'PreparedScan',
    'read_recipe',
    'slices_from_scan',
    'slices_from_image',
    'slice_numbers',
    'register_affine',
    'n4_correct',
    'one_itk_thread',
]

_logger = logging.getLogger(__name__)

RECIPE_VERSION = 1
STEPS = ('reorient', 'resample', 'n4', 'register', 'mask', 'normalise', 'slice')


class RecipeError(ValueError):
    """A recipe that cannot run (bad values, unknown keys); the message says what to change."""


class RegistrationError(ValueError):
    """The registration failed on a scan (ITK gave up, or the result is not a brain)."""


@dataclass(frozen=True)
class Recipe:
    """How a scan becomes slices. Defaults: see docs/PREPARE.md for each value and why."""

    reorient: bool = True
    resample_mm: float | None = 1.0  # None: keep the scan's voxels
    n4: bool = True
    n4_shrink: int = 6
    n4_iterations: tuple[int, ...] = (50, 40, 30)  # per fitting level (3 B-spline levels)
    register: bool = True
    registration_levels_mm: tuple[float, ...] = (6.0, 3.0)  # voxel size of each pyramid level
    registration_iterations: int = 100  # per level and stage
    registration_sampling: float = 0.25  # fraction of the masked template voxels sampled
    mask: bool = True
    mask_dilation_mm: int = 2
    normalise: bool = True
    percentiles: tuple[float, float] = (0.5, 99.5)
    z_range_mm: tuple[float, float] = (-30.0, 27.0)
    slices: int = 20
    size: tuple[int, int] = (192, 192)  # width, height (px = mm)
    centre_mm: tuple[float, float] = (0.0, -17.0)  # MNI (x, y) at the image centre
    image_format: str = 'png'
    version: int = RECIPE_VERSION

    def __post_init__(self):
        for name in (
            'n4_iterations',
            'registration_levels_mm',
            'percentiles',
            'z_range_mm',
            'size',
            'centre_mm',
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if self.image_format not in ('png', 'jpeg'):
            problems.append(f'image_format {self.image_format!r}: choose png or jpeg')
        if self.slices < 1:
            problems.append('slices must be >= 1')
        lo, hi = self.z_range_mm
        if not lo <= hi:
            problems.append(f'z_range_mm {self.z_range_mm}: give (low, high) with low <= high')
        elif self.slices > 1 and self.slices > int(hi - lo) + 1:
            problems.append(
                f'{self.slices} slices do not fit in {hi - lo:g} mm of 1 mm planes: '
                f'use fewer slices or a wider z range'
            )
        if min(self.size) < 16:
            problems.append(f'size {self.size}: at least 16 x 16')
        if self.resample_mm is not None and self.resample_mm <= 0:
            problems.append('resample_mm must be > 0 (or None to keep the voxels)')
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            problems.append(f'percentiles {self.percentiles}: need 0 <= low < high <= 100')
        if not 0 < self.registration_sampling <= 1:
            problems.append('registration_sampling must be in (0, 1]')
        if problems:
            raise RecipeError('bad recipe: ' + '; '.join(problems))

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps this recipe runs, in order."""
        on = {
            'reorient': self.reorient,
            'resample': self.resample_mm is not None,
            'n4': self.n4,
            'register': self.register,
            'mask': self.mask,
            'normalise': self.normalise,
            'slice': True,
        }
        return tuple(s for s in STEPS if on[s])

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @property
    def digest(self) -> str:
        """Identifies the recipe: a re-run skips subjects prepared with the same digest."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict) -> 'Recipe':
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(
                f'unknown recipe keys {unknown}: this adni-timm knows '
                f'{sorted(known)} (a newer prepare.json? upgrade adni-timm)'
            )
        if data.get('version', RECIPE_VERSION) > RECIPE_VERSION:
            raise RecipeError(
                f'recipe version {data["version"]} is newer than this adni-timm '
                f'({RECIPE_VERSION}): upgrade adni-timm'
            )
        return cls(**data)


def read_recipe(source: str | Path | dict) -> Recipe:
    """The recipe of ``prepare.json`` (a path, the parsed file, or its ``recipe`` entry), e.g.
    what training stored under ``config.json['adni_timm']['preprocessing']``."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            path = path / 'prepare.json'
        try:
            source = json.loads(path.read_text(encoding='utf-8'))
        except (OSError, json.JSONDecodeError) as e:
            raise RecipeError(
                f'cannot read the recipe from {path} ({e}): give the '
                f'prepare.json adni-prepare wrote'
            ) from e
    if not isinstance(source, dict):
        raise RecipeError('a recipe is a dict (prepare.json or its "recipe" entry)')
    return Recipe.from_dict(source['recipe'] if 'recipe' in source else source)


def slice_numbers(recipe: Recipe, template: Template | None = None) -> tuple[int, ...]:
    """The template axial voxel indices ``k`` of the recipe's slices (file-name slice numbers)."""
    template = template or load_template()
    lo, hi = (template.index_of_z(z) for z in recipe.z_range_mm)
    if recipe.slices == 1:
        return ((lo + hi) // 2,)
    ks = np.round(np.linspace(lo, hi, recipe.slices)).astype(int)
    if len(set(ks.tolist())) != len(ks) or ks.min() < 0 or ks.max() >= template.shape[2]:
        raise RecipeError(
            f'z range {recipe.z_range_mm} with {recipe.slices} slices gives '
            f'repeated or out-of-template planes: widen the range or use fewer'
        )
    return tuple(int(k) for k in ks)


@dataclass
class PreparedScan:
    """What :func:`slices_from_scan` made of one scan: exactly what ``adni-prepare`` writes.

    ``slices``: uint8 ``[n, height, width]``; ``slice_numbers``: their template axial indices;
    ``similarity``: the registration similarity (``similarity.py``); ``warnings``: notes for
    the manifest; ``seconds`` / ``cpu_seconds``: wall and CPU time per step (``to_template`` is
    the one resampling onto the template grid); ``brain_slices``: the template's (dilated) brain
    mask at the same planes, for the QC outline. With ``keep_registered``: ``registered``, the
    scan (after the steps before the registration) on the whole template grid, resampled as the
    slices were (their planes are its planes, before mask and normalisation), and ``transform``,
    the affine (template point -> scan point, ITK's direction) that put it there.
    """

    slices: np.ndarray
    slice_numbers: tuple[int, ...]
    similarity: float | None
    steps: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    brain_slices: np.ndarray | None = None  # the brain mask at the same planes (for QC)
    registered: Any = None  # SimpleITK image on the template grid (keep_registered)
    transform: Any = None  # SimpleITK AffineTransform (keep_registered)


# ----------------------------------------------------------------------------------------- steps


@contextlib.contextmanager
def one_itk_thread():
    """Run ITK on one thread inside the block. N4's fit and the registration metric sum over
    voxels in an order that depends on the thread split (2 threads instead of 1 changed 4% of the
    output pixels by one grey level, even with the filters' own thread count set to 1: their
    inner filters use the global default). One thread keeps a scan's slices identical wherever it
    is prepared (adni-prepare with any --workers, or a new scan at evaluation); parallelism comes
    from preparing several scans at once."""
    import SimpleITK as sitk

    before = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(before)


def _resample_isotropic(image, voxel_mm: float):
    import SimpleITK as sitk

    spacing = np.asarray(image.GetSpacing())
    if np.allclose(spacing, voxel_mm, rtol=0.01):
        return image
    size = np.maximum(np.round(np.asarray(image.GetSize()) * spacing / voxel_mm), 1).astype(int)
    return sitk.Resample(
        image,
        size.tolist(),
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        [voxel_mm] * 3,
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )


def _shrink_to(image, voxel_mm: float):
    """``image`` shrunk (block-averaged) to about ``voxel_mm`` voxels."""
    import SimpleITK as sitk

    factors = [max(1, int(round(voxel_mm / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def _head_mask(image):
    import SimpleITK as sitk

    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    return sitk.BinaryMorphologicalClosing(mask, [2, 2, 2])


def n4_correct(image, shrink: int = 6, iterations=(50, 40, 30)):
    """N4 fitted on a ``shrink``-times block-averaged copy inside an Otsu head mask (the field is
    smooth on a scale of centimetres), its log field upsampled linearly and divided out at full
    resolution (evaluating the B-spline at 10^7 voxels would cost more than the fit)."""
    import SimpleITK as sitk

    small = sitk.BinShrink(image, [shrink] * 3)
    mask = _head_mask(small)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.Execute(small, mask)
    log_field = sitk.Resample(
        corrector.GetLogBiasFieldAsImage(small),
        image,
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.Cast(image / sitk.Exp(log_field), sitk.sitkFloat32)


def _registration(
    fixed,
    moving,
    mask,
    transform,
    iterations: int,
    shrink_factors,
    sigmas_mm,
    sampling: float,
    seed: int = 1,
):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricFixedMask(mask)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink_factors))
    reg.SetSmoothingSigmasPerLevel(list(sigmas_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(transform, inPlace=False)
    result = reg.Execute(fixed, moving)
    return sitk.CompositeTransform(result).GetNthTransform(0)


def register_affine(
    fixed, moving, fixed_mask, levels_mm=(6.0, 3.0), iterations: int = 100, sampling: float = 0.25
):
    """An affine transform (fixed -> moving physical points, ITK's direction) that aligns
    ``moving`` (a head) to ``fixed`` (the template): a start that puts the centres of the heads'
    upper 150 mm together, a similarity stage (rigid + isotropic scale) over ``levels_mm``, then
    an affine stage at the finest level. A rigid first stage got stuck on heads 10% smaller or
    larger than the template, and the affine stage then diverged from there.

    Both images are block-averaged to the finest level's voxel size first, so the pyramid's
    smoothing and the metric work on small images (the costly part at 1 mm is not the
    optimiser but smoothing 10^7 voxels per level).
    """
    import SimpleITK as sitk

    finest = float(min(levels_mm))
    fixed_small, mask_small = _shrink_to(fixed, finest), _shrink_mask(fixed_mask, finest)
    moving_small = _shrink_to(moving, finest)
    initial = sitk.Similarity3DTransform()  # rigid + one scale: a rigid start cannot fix head size
    fixed_centre = _upper_centre(mask_small, extra_mm=_SCALP_MM)
    initial.SetCenter(fixed_centre.tolist())
    head = _head_mask(moving_small)
    _check_head(head)
    initial.SetTranslation((_upper_centre(head) - fixed_centre).tolist())
    shrink = [max(1, int(round(mm / finest))) for mm in levels_mm]
    sigmas = [mm / 2 for mm in levels_mm]
    try:
        similar = _registration(
            fixed_small, moving_small, mask_small, initial, iterations, shrink, sigmas, sampling
        )
        affine = sitk.AffineTransform(3)
        affine.SetCenter(similar.GetCenter())
        affine.SetMatrix(similar.GetMatrix())
        affine.SetTranslation(similar.GetTranslation())
        result = _registration(
            fixed_small, moving_small, mask_small, affine, iterations, [1], [finest / 2], sampling
        )
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise RegistrationError(f'the affine registration failed ({last[:160]})') from e
    _check_transform(result)
    return result


_HEAD_MIN_MM = 100.0  # the foreground of a head scan spans >= 10 cm in every direction
_SCALE_RANGE = (0.6, 1.6)  # adult heads are within ~20% of the template's size


def _check_head(head) -> None:
    array, affine = ras_from_image(head)
    points = np.argwhere(array > 0)
    if len(points) == 0:
        raise RegistrationError('no head found (the Otsu foreground is empty)')
    mm = points @ affine[:3, :3].T
    extent = mm.max(axis=0) - mm.min(axis=0) + np.abs(np.diag(affine[:3, :3]))
    if extent.min() < _HEAD_MIN_MM:
        raise RegistrationError(
            f'no head found: the foreground spans {"x".join(f"{e:.0f}" for e in extent)} mm '
            f'(a head spans >= {_HEAD_MIN_MM:.0f} mm each way; a phantom or a localiser?)'
        )


def _check_transform(transform) -> None:
    """Refuse what no head gives: a collapse or blow-up of the scale, a reflection."""
    singular = np.linalg.svd(np.asarray(transform.GetMatrix()).reshape(3, 3), compute_uv=False)
    det = np.linalg.det(np.asarray(transform.GetMatrix()).reshape(3, 3))
    if det <= 0 or singular.min() < _SCALE_RANGE[0] or singular.max() > _SCALE_RANGE[1]:
        raise RegistrationError(
            f'the affine registration diverged (scales {", ".join(f"{v:.2f}" for v in singular)})'
        )


_SCALP_MM = 10.0  # skull + scalp above the brain's top, roughly, in adults
_CROP_MM = 150.0  # keep the top 150 mm of a head (as FSL's robustfov): the neck moves the centre


def _upper_centre(mask, extra_mm: float = 0.0) -> np.ndarray:
    """Centre of mass (LPS mm) of the part of ``mask`` within ``_CROP_MM`` of its top (the
    superior-most voxel, ``extra_mm`` higher for a brain mask standing in for a head). How much
    neck a scan holds varies; the top of the head does not, so this centre is the same for
    a brain and its head to within a centimetre, where the whole head's is several off."""
    array, affine = ras_from_image(mask)
    points = np.argwhere(array > 0)
    if len(points) == 0:
        raise RegistrationError('no head found in the scan (an empty Otsu mask)')
    mm = points @ affine[:3, :3].T + affine[:3, 3]
    top = mm[:, 2].max() + extra_mm
    centre = mm[mm[:, 2] > top - _CROP_MM].mean(axis=0)
    return centre * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS


def _shrink_mask(mask, voxel_mm: float):
    import SimpleITK as sitk

    factors = [max(1, int(round(voxel_mm / s))) for s in mask.GetSpacing()]
    if max(factors) == 1:
        return mask
    return sitk.Cast(
        sitk.BinShrink(sitk.Cast(mask, sitk.sitkFloat32), factors) > 0.5, sitk.sitkUInt8
    )


def _template_images(template: Template, ks: tuple[int, ...], dilation_mm: int):
    """(template T1 as an ITK image, registration mask, template grid, slab brain mask)."""
    import SimpleITK as sitk
    from scipy import ndimage

    from .volumes import image_from_ras

    fixed = image_from_ras(template.t1, template.affine)
    reg_mask = ndimage.binary_dilation(template.brain, iterations=5)
    mask_image = sitk.Cast(
        image_from_ras(reg_mask.astype(np.uint8), template.affine), sitk.sitkUInt8
    )
    k0, k1 = min(ks), max(ks)
    # the whole grid, not only the slab: the registration QC looks at the whole head; the slab's
    # voxels are the same points, so the slices are those of a slab-only resampling
    reference = image_from_ras(np.zeros(template.shape, np.float32), template.affine)
    brain = template.brain[:, :, k0 : k1 + 1]
    if dilation_mm > 0:
        brain = ndimage.binary_dilation(brain, iterations=int(dilation_mm))
    return fixed, mask_image, reference, brain


_TEMPLATE_CACHE: dict = {}


def _cached_template_images(template, ks, dilation_mm):
    key = (template.sha256, ks, dilation_mm)
    if key not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE.clear()
        _TEMPLATE_CACHE[key] = _template_images(template, ks, dilation_mm)
    return _TEMPLATE_CACHE[key]


class _StepClock:
    """Wall and CPU seconds per step (CPU time is what a busy machine does not inflate)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def done(self, step: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[step] = round(wall - self._wall, 3)
        self.cpu[step] = round(cpu - self._cpu, 3)
        self._wall, self._cpu = wall, cpu


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Plain NCC of two arrays inside ``mask`` (tests compare registrations with it)."""
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def _plane_to_image(plane: np.ndarray, template: Template, size, centre_mm) -> np.ndarray:
    """A template-grid axial plane ``[i, j]`` (x, y) -> an image ``[row, col]`` of ``size`` (w, h),
    anterior at the top, the patient's right on the left, centred on ``centre_mm``."""
    width, height = size
    ci = int(round((centre_mm[0] - template.affine[0, 3]) / template.affine[0, 0]))
    cj = int(round((centre_mm[1] - template.affine[1, 3]) / template.affine[1, 1]))
    # RAS: x grows towards the patient's right, y towards the front. Radiological view: column c
    # shows x = ci + width//2 - c (the patient's right on the image's left); row r shows
    # y = cj + height//2 - r (anterior at the top)
    cols = ci + width // 2 - np.arange(width)
    rows = cj + height // 2 - np.arange(height)
    ok_c = (cols >= 0) & (cols < plane.shape[0])
    ok_r = (rows >= 0) & (rows < plane.shape[1])
    out = np.zeros((height, width), plane.dtype)
    out[np.ix_(ok_r, ok_c)] = plane[np.ix_(cols[ok_c], rows[ok_r])].T
    return out


def slices_from_image(
    image, recipe: Recipe, template: Template | None = None, keep_registered: bool = False
) -> PreparedScan:
    """Run ``recipe`` on a SimpleITK image (see :func:`slices_from_scan`), on one ITK thread."""
    with one_itk_thread():
        return _slices_from_image(image, recipe, template, keep_registered)


def _slices_from_image(
    image, recipe: Recipe, template: Template | None, keep_registered: bool = False
) -> PreparedScan:
    import SimpleITK as sitk

    template = template or load_template()
    ks = slice_numbers(recipe, template)
    warnings: list[str] = []
    clock = _StepClock()
    done = clock.done

    image = sitk.Cast(image, sitk.sitkFloat32)
    if recipe.reorient:
        image = sitk.DICOMOrient(image, 'RAS')
        done('reorient')
    if recipe.resample_mm is not None:
        image = _resample_isotropic(image, recipe.resample_mm)
        done('resample')
    if recipe.n4:
        try:
            image = n4_correct(image, recipe.n4_shrink, recipe.n4_iterations)
        except RuntimeError as e:
            warnings.append(f'N4 failed and was skipped ({str(e).strip().splitlines()[-1][:80]})')
        done('n4')
    fixed, reg_mask, reference, brain = _cached_template_images(
        template, ks, recipe.mask_dilation_mm
    )
    if recipe.register:
        transform = register_affine(
            fixed,
            image,
            reg_mask,
            recipe.registration_levels_mm,
            recipe.registration_iterations,
            recipe.registration_sampling,
        )
        done('register')
    else:
        transform = sitk.Transform(3, sitk.sitkIdentity)
    on_grid = sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    volume, _ = ras_from_image(on_grid)
    k0 = min(ks)
    slab = volume[:, :, k0 : k0 + brain.shape[2]]
    done('to_template')
    similarity = registration_similarity(volume, template)
    del volume, on_grid
    done('qc')
    registered = None
    if keep_registered:
        from .bids import registered_reference

        # the whole grid with the slab's transform and interpolation: the slab is part of it
        registered = sitk.Resample(
            image, registered_reference(template), transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32
        )
        if not recipe.register:  # an identity, written as the affine it is
            transform = sitk.AffineTransform(3)
        done('registered')
    if recipe.mask:
        slab = np.where(brain, slab, 0).astype(np.float32)
        done('mask')
    if recipe.normalise:
        values = slab[brain]
        lo, hi = np.percentile(values, recipe.percentiles) if values.size else (0.0, 1.0)
        if hi <= lo:
            warnings.append('flat intensities inside the brain: is this a T1 with signal?')
            hi = lo + 1.0
        slab = (slab - lo) * (255.0 / (hi - lo))
        done('normalise')
    slab = np.clip(np.round(slab), 0, 255).astype(np.uint8)
    planes = [slab[:, :, k - k0] for k in ks]
    slices = np.stack([_plane_to_image(p, template, recipe.size, recipe.centre_mm) for p in planes])
    qc_brain = np.stack(
        [_plane_to_image(brain[:, :, k - k0], template, recipe.size, recipe.centre_mm) for k in ks]
    )
    done('slice')
    return PreparedScan(
        slices=slices,
        slice_numbers=ks,
        similarity=round(similarity, 4),
        steps=recipe.steps,
        warnings=warnings,
        seconds=clock.wall,
        cpu_seconds=clock.cpu,
        brain_slices=qc_brain,
        registered=registered,
        transform=transform if keep_registered else None,
    )


def slices_from_scan(
    path: str | Path,
    recipe: Recipe | None = None,
    template: Template | None = None,
    keep_registered: bool = False,
) -> PreparedScan:
    """The slices ``adni-prepare`` writes for the scan at ``path`` (a NIfTI file or a DICOM
    folder) under ``recipe``: the same arrays, slice numbers and similarity. Raises VolumeError
    for a file that is not a 3D volume and RegistrationError when the registration fails."""
    recipe = recipe or Recipe()
    clock = _StepClock()
    image = read_volume(path)
    clock.done('read')
    prepared = slices_from_image(image, recipe, template, keep_registered)
    prepared.seconds = {**clock.wall, **prepared.seconds}
    prepared.cpu_seconds = {**clock.cpu, **prepared.cpu_seconds}
    return prepared


__all__ += ['VolumeError']


JPEG_QUALITY = 95


def encode_slice(array: np.ndarray, image_format: str, comment: str = '') -> bytes:
    """One uint8 slice as the bytes adni-prepare writes (PNG with a Software text chunk, or
    JPEG at quality 95 with a comment)."""
    from PIL import Image, PngImagePlugin

    buffer = io.BytesIO()
    image = Image.fromarray(array, 'L')
    if image_format == 'png':
        info = PngImagePlugin.PngInfo()
        info.add_text('Software', comment)
        image.save(buffer, 'PNG', pnginfo=info)
    else:
        image.save(buffer, 'JPEG', quality=JPEG_QUALITY, comment=comment.encode())
    return buffer.getvalue()


def written_pixels(prepared: PreparedScan, recipe: Recipe) -> np.ndarray:
    """The pixels training reads back from what adni-prepare wrote for this scan: the slices
    themselves for PNG, their JPEG decode with ``--image-format jpeg``. Use these, not
    ``prepared.slices``, to predict a new scan as the model saw its training scans."""
    from PIL import Image

    if recipe.image_format == 'png':
        return prepared.slices
    decoded = [Image.open(io.BytesIO(encode_slice(s, 'jpeg'))) for s in prepared.slices]
    return np.stack([np.asarray(image.convert('L')) for image in decoded])
