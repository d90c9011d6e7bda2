"""A 3D scan meets a trained model: the model's own recorded preprocessing turns it into slices.

A model trained on ``adni-prepare`` output records the recipe (``prepare.json``) in its export
(``config.json['adni_timm']['preprocessing']``). ``prepare_scans`` runs exactly that recipe on new
scans (NIfTI files, a DICOM series folder) and writes the slices as ``<scan>_<slice>.png``, the
pixels training read (``preprocess.written_pixels``), so the rest of the prediction path is the one
for slices: ``evaluate.py --images scan.nii.gz`` and the web demo give a scan a P(AD).

Needs the ``[mri]`` extra (SimpleITK, nibabel); ``is_scan`` does not.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import Slice
from .volumes import NIFTI_SUFFIXES, is_dicom_file, is_nifti

__all__ = ['ScanError', 'PreparedInput', 'is_scan', 'find_scans', 'prepare_scans']

_logger = logging.getLogger(__name__)

LOW_SIMILARITY = 0.6  # adni-prepare flags a registration below this as an outlier


class ScanError(ValueError):
    """A scan that cannot be prepared for this model; the message names the fix."""


@dataclass
class PreparedInput:
    """The slices of the scans, ready for the slice prediction path, and what happened."""

    slices: list[Slice]
    similarity: dict[str, float]  # per scan: registration NCC with the template
    warnings: list[str]


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    return any(is_dicom_file(f) for f in sorted(path.iterdir())[:20] if f.is_file())


def is_scan(path: str | os.PathLike) -> bool:
    """A NIfTI file, a folder holding a DICOM series, or a folder of NIfTI files."""
    path = Path(path)
    if is_nifti(path) or _is_dicom_folder(path):
        return True
    return path.is_dir() and any(is_nifti(f) for f in path.iterdir())


def find_scans(path: str | os.PathLike) -> list[Path]:
    """The scans under ``path``: the file itself, the DICOM folder, or every NIfTI in a folder."""
    path = Path(path)
    if is_nifti(path) or _is_dicom_folder(path):
        return [path]
    return sorted(f for f in path.iterdir() if is_nifti(f))


def _scan_id(path: Path) -> str:
    """A scan id for the slices of one scan: its file (or folder) name without the suffix,
    safe for ``<scan>_<slice>`` file names."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r'[^A-Za-z0-9.-]+', '-', name).strip('-') or 'scan'


def prepare_scans(
    path: str | os.PathLike, preprocessing: dict[str, Any] | None, out_dir: str | os.PathLike
) -> PreparedInput:
    """Run the recorded recipe on every scan under ``path``; slices into ``out_dir``."""
    if not preprocessing:
        raise ScanError(
            f'{path} is a 3D scan, but this model was trained on 2D slices without a recorded '
            f'preprocessing recipe (it was not trained on adni-prepare output), so nothing says '
            f'how to cut the scan into its slices: give the slices themselves (--images DIR), or '
            f'use a model trained on adni-prepare output.'
        )
    try:
        from .preprocess import read_recipe, slices_from_scan, written_pixels
    except ImportError as e:
        raise ScanError(
            f"preparing a scan needs the [mri] extra ({e}): pip install 'adni-timm[mri]'"
        ) from None
    from PIL import Image

    recipe = read_recipe(preprocessing)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slices, similarity, warnings = [], {}, []
    for scan_path in find_scans(path):
        scan_id = _scan_id(scan_path)
        try:
            prepared = slices_from_scan(scan_path, recipe)
        except ValueError as e:  # VolumeError, RegistrationError: one line each
            raise ScanError(f'{scan_path}: {e}') from None
        similarity[scan_id] = float(prepared.similarity)
        if prepared.similarity < LOW_SIMILARITY:
            warnings.append(
                f'{scan_path}: the registration to the template is poor (similarity '
                f'{prepared.similarity:.2f} < {LOW_SIMILARITY}): the slices may not show the '
                f'levels the model was trained on'
            )
        warnings += [f'{scan_path}: {w}' for w in prepared.warnings]
        for number, pixels in zip(prepared.slice_numbers, written_pixels(prepared, recipe)):
            file = out_dir / f'{scan_id}_{int(number)}.png'
            Image.fromarray(pixels, 'L').save(file)
            slices.append(Slice(str(file), scan_id, -1, int(number)))
        _logger.info(
            '%s: %d slices by the recorded recipe (registration similarity %.3f)',
            scan_path,
            len(prepared.slice_numbers),
            prepared.similarity,
        )
    if not slices:
        raise ScanError(f'{path}: no NIfTI file or DICOM series found')
    for w in warnings:
        _logger.warning(w)
    return PreparedInput(slices, similarity, warnings)
