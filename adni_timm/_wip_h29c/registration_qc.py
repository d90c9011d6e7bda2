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
registration left turned around, or matched skull-to-brain, scores about 0 or below.
docs/PREPARE.md ("Quality control") has the figures, measured on public real heads.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    'MEASURE',
    'DEFAULT_MIN_SIMILARITY',
    'SIGMA_MM',
    'MASK_DILATION_MM',
    'registration_similarity',
    'describe_registration',
]

MEASURE = 'turn-contrast-ncc-v1'  # recorded with every similarity: values of other measures differ
DEFAULT_MIN_SIMILARITY = 0.15  # below this a registration has failed (docs/PREPARE.md)
SIGMA_MM = 2.0
MASK_DILATION_MM = 6
_TURNS = ((1,), (2,), (1, 2))  # array axes flipped on the RAS template grid: A-P, S-I, both


@functools.lru_cache(maxsize=2)
def _template_side(sha256: str, t1_id: int, shape: tuple, voxel_mm: float):
    """(smoothed template, mask), cached per template. ``t1_id`` ties the cache to the array."""
    from scipy import ndimage

    from .template import load_template

    template = load_template()
    sigma = SIGMA_MM / voxel_mm
    smooth = ndimage.gaussian_filter(template.t1.astype(np.float32), sigma)
    mask = ndimage.binary_dilation(
        template.brain, iterations=max(1, int(round(MASK_DILATION_MM / voxel_mm)))
    )
    return smooth, mask


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0
