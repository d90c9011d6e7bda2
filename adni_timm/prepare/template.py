"""The MNI152 template scans are registered to: the ICBM 2009a nonlinear symmetric T1 that ships
inside nilearn's wheel (no download, no network), at 1 mm, skull-stripped.

Why this one: it is the standard space of Clinica's ``t1-linear`` (which uses the 2009c version of
the same ICBM 2009 family), it is symmetric (so left-right flips stay valid augmentations after
registration), it comes with grey- and white-matter probability maps on the same grid, and it is
pip-installable. Its grid is 197 x 233 x 189 voxels of 1 mm, RAS, voxel (i, j, k) at MNI
(i - 98, j - 134, k - 72) mm: the axial voxel index ``k`` is what the prepared slices are
numbered by (``z_mm = k - 72``).

The files are read with nibabel straight from nilearn's package folder, so nilearn itself is
never imported (its import pulls in pandas and scikit-learn and takes seconds per worker).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    'TEMPLATE_NAME',
    'TEMPLATE_FILES',
    'TemplateError',
    'Template',
    'template_path',
    'load_template',
]

TEMPLATE_NAME = 'MNI152 ICBM 2009a nonlinear symmetric, 1 mm, skull-stripped (nilearn)'
TEMPLATE_FILES = {
    't1': 'mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz',
    'gm': 'mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz',
    'wm': 'mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz',
}


class TemplateError(ValueError):
    """The template files cannot be found (nilearn missing)."""


def template_path(kind: str = 't1') -> Path:
    """Path of one of the template files inside the installed nilearn package."""
    spec = importlib.util.find_spec('nilearn')
    if spec is None or not spec.submodule_search_locations:
        raise TemplateError(
            'the MNI152 template ships inside nilearn, which is not installed: '
            "pip install 'adni-timm[mri]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / 'datasets' / 'data'
    path = path / TEMPLATE_FILES[kind]
    if not path.is_file():
        raise TemplateError(
            f'{path} is missing from this nilearn install: reinstall nilearn '
            "(pip install --force-reinstall nilearn) or pip install 'adni-timm[mri]'"
        )
    return path


@dataclass(frozen=True)
class Template:
    """Template arrays on the template grid, indexed [i, j, k] = [x, y, z] (RAS), float32.

    ``t1`` is scaled to 0..1; ``brain`` is the brain mask (the non-zero voxels of the
    skull-stripped T1, holes filled: it includes the ventricles); ``gm`` / ``wm`` are tissue
    probabilities 0..1. ``affine`` maps voxel indices to MNI mm (RAS).
    """

    t1: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    affine: np.ndarray
    sha256: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)

    def z_of_index(self, k: int) -> float:
        """MNI z (mm) of axial voxel index ``k``."""
        return float(self.affine[2, 2] * k + self.affine[2, 3])

    def index_of_z(self, z_mm: float) -> int:
        """Nearest axial voxel index of MNI z (mm)."""
        return int(round((z_mm - self.affine[2, 3]) / self.affine[2, 2]))

    def describe(self) -> dict:
        return {
            'name': TEMPLATE_NAME,
            'file': TEMPLATE_FILES['t1'],
            'sha256': self.sha256,
            'shape': list(self.shape),
            'affine': self.affine.tolist(),
            'voxel_mm': [float(abs(self.affine[i, i])) for i in range(3)],
        }


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The template, read once per process (about 0.5 s)."""
    import nibabel as nib
    from scipy import ndimage

    arrays = {}
    for kind in TEMPLATE_FILES:
        image = nib.load(template_path(kind))
        arrays[kind] = np.asarray(image.dataobj, dtype=np.float32) / 255.0
        affine = image.affine
    brain = ndimage.binary_fill_holes(arrays['t1'] > 0)
    digest = hashlib.sha256(template_path('t1').read_bytes()).hexdigest()
    return Template(
        t1=arrays['t1'],
        brain=brain,
        gm=arrays['gm'],
        wm=arrays['wm'],
        affine=np.asarray(affine, dtype=np.float64),
        sha256=digest,
    )
