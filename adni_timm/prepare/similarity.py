"""Registration QC: is a registered scan a head in the template's place and orientation?

:func:`registration_similarity` compares the scan, resampled onto the template grid, with the
template twice: as registered, and turned around (front to back, upside down, both: the scan's
array flipped on the template grid). The similarity is how much better it matches as registered
than in its best wrong orientation::

    similarity = NCC(scan, template) - max over turns of NCC(turned scan, template)

NCC is the normalised cross-correlation inside the template's brain mask dilated by
``MASK_DILATION_MM`` (so the brain's edge against the dark skull and CSF counts), on both images
smoothed by a Gaussian of ``SIGMA_MM``: what is compared is the layout of the head (brain,
ventricles, cerebellum, its edge), not the folding of one person's cortex against a 152-brain
average.

Why a difference and not the NCC itself: on real heads the NCC of a good registration depends on
the person (atrophy, contrast, resolution) about as much as on the registration; a strongly
atrophic, well-registered head scored below a healthy head turned upside down. Atrophy lowers the
NCC in every orientation alike, so the difference keeps such heads well clear of the failures:
a blob, a phantom, noise or a CT have no front and back and score about 0; a head the
registration left turned around scores about 0 or below, one it matched skull to brain (too
small) clearly less than a well-registered head.
docs/PREPARE.md ("Quality control") has the figures, measured on public real heads.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    'MEASURE',
    'DEFAULT_MIN_SIMILARITY',
    'SIGMA_MM',
    'MASK_DILATION_MM',
    'registration_similarity',
    'registration_failed',
    'describe_registration',
]

MEASURE = 'turn-contrast-ncc-v1'  # recorded with every similarity: values of other measures differ
DEFAULT_MIN_SIMILARITY = 0.15  # below this a registration has failed (docs/PREPARE.md)
SIGMA_MM = 2.0
MASK_DILATION_MM = 6
_TURNS = ((1,), (2,), (1, 2))  # array axes flipped on the RAS template grid: A-P, S-I, both


_CACHE: dict = {}


def _template_side(template):
    """(smoothed template values inside the mask, the mask), once per template and process."""
    from scipy import ndimage

    if template.sha256 not in _CACHE:
        _CACHE.clear()
        voxel_mm = float(abs(template.affine[0, 0]))
        mask = ndimage.binary_dilation(
            template.brain, iterations=max(1, int(round(MASK_DILATION_MM / voxel_mm)))
        )
        smooth = ndimage.gaussian_filter(template.t1.astype(np.float32), SIGMA_MM / voxel_mm)
        _CACHE[template.sha256] = (_centred(smooth[mask]), mask)
    return _CACHE[template.sha256]


def _centred(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    values -= values.mean()
    norm = math.sqrt(float((values * values).sum()))
    return values / norm if norm > 0 else values


def registration_similarity(volume: np.ndarray, template) -> float:
    """The registration similarity (module docstring) of ``volume``: a scan resampled onto the
    template grid (array ``[i, j, k]``, RAS, the template's shape)."""
    from scipy import ndimage

    if volume.shape != template.shape:
        raise ValueError(f'volume {volume.shape} is not on the template grid {template.shape}')
    reference, mask = _template_side(template)
    voxel_mm = float(abs(template.affine[0, 0]))
    smooth = ndimage.gaussian_filter(volume.astype(np.float32), SIGMA_MM / voxel_mm)
    as_registered = float(_centred(smooth[mask]) @ reference)
    turned = max(float(_centred(np.flip(smooth, axes)[mask]) @ reference) for axes in _TURNS)
    return as_registered - turned


def registration_failed(similarity: float | None, floor: float = DEFAULT_MIN_SIMILARITY) -> bool:
    """True when a registration similarity is below the floor (None: not measured, not failed)."""
    return similarity is not None and similarity < floor


def describe_registration(similarity: float | None, floor: float = DEFAULT_MIN_SIMILARITY) -> str:
    """One phrase for a scan's registration: failed below the floor, else registered."""
    if similarity is None:
        return 'registration not measured'
    if similarity < floor:
        return (
            f'registration to the template FAILED (similarity {similarity:.3f} < {floor:g}): '
            f'its slices are not at the template levels'
        )
    return f'registered to the template (similarity {similarity:.3f} >= {floor:g})'
