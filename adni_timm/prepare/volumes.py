"""3D T1 volumes in: read NIfTI (nibabel) and DICOM series (SimpleITK / GDCM), and find the scans
of a source folder (a flat folder of NIfTI files, the ADNI download layout, a BIDS root).

Everything downstream works on ``SimpleITK.Image`` objects in physical (LPS, mm) coordinates, so a
volume stored LPS, RAS, LAS, sagittally or axially is the same object once read; the voxel order
only matters again when ``reorient`` makes it canonical (RAS, like nibabel's
``as_closest_canonical``).

Layouts :func:`discover_scans` understands (checked in this order):

* **BIDS**: ``SRC/sub-<label>/[ses-<label>/]anat/*_T1w.nii[.gz]`` (``dataset_description.json``
  or ``sub-*`` folders): subject ``sub-<label>``, visit ``ses-<label>``;
* **ADNI download** (IDA): ``.../<subject>/<description>/<date>/<image id>/*.dcm`` (or one
  ``.nii`` there): subject = the path part shaped like ``002_S_0295``, image id = the part shaped
  like ``I13722`` (also the ``_I13722`` tail of ADNI NIfTI file names), date from the date part;
* **generic**: ``SRC/<subject>.nii.gz``, or ``SRC/<subject>/[<visit>/]...`` holding one NIfTI file
  or one DICOM series per scan.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    'NIFTI_SUFFIXES',
    'MIN_VOXELS',
    'MIN_EXTENT_MM',
    'VolumeError',
    'Scan',
    'Discovery',
    'read_volume',
    'read_nifti',
    'read_dicom_series',
    'check_volume',
    'image_from_ras',
    'ras_from_image',
    'is_dicom_file',
    'discover_scans',
]

_logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = ('.nii', '.nii.gz', '.mgz', '.mgh')  # nibabel reads FreeSurfer's .mgz too
DICOM_SUFFIXES = ('.dcm', '.ima', '.dicom')
MIN_VOXELS = 16  # per axis: fewer is a localiser or a single slab, not a 3D T1
MIN_EXTENT_MM = 100.0  # per axis: a brain is ~140 x 170 x 120 mm; less is not a whole-brain scan

_PTID = re.compile(r'^\d{3}_S_\d{4,}$')
_IMAGE_ID = re.compile(r'^I\d+$')
_IMAGE_ID_TAIL = re.compile(r'_(I\d+)$')
_DATE = re.compile(r'^(\d{4})-(\d{2})-(\d{2})')


class VolumeError(ValueError):
    """A file or folder that is not a readable 3D volume; the message says what to do.

    ``kind`` names the problem for the run's summary (unreadable, 4d, two-series, not-3d,
    too-small).
    """

    def __init__(self, message: str, kind: str = 'unreadable'):
        super().__init__(message)
        self.kind = kind


# ------------------------------------------------------------------------------------------- read


def image_from_ras(array: np.ndarray, affine: np.ndarray):
    """A SimpleITK image from a nibabel-style array ``[i, j, k]`` and its voxel -> RAS mm affine.

    ITK works in LPS: the first two rows of the affine change sign. A sheared affine (rare: some
    reconstructions) is made orthonormal by its polar decomposition, the closest rotation.
    """
    import SimpleITK as sitk

    affine = np.asarray(affine, dtype=np.float64)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :4]
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(lps)):
        raise VolumeError(
            'the header affine is degenerate (a zero or NaN voxel size): fix the '
            'header (qform/sform) or re-export the scan',
            kind='unreadable',
        )
    direction = lps[:3, :3] / spacing
    u, _, vt = np.linalg.svd(direction)
    rotation = u @ vt
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(rotation.flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def ras_from_image(image) -> tuple[np.ndarray, np.ndarray]:
    """(array ``[i, j, k]``, voxel -> RAS mm affine) of a SimpleITK image: the inverse of
    :func:`image_from_ras`."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    affine[:2] *= -1
    return array, affine


def read_nifti(path: str | Path):
    """A NIfTI (or MGH) file as a float32 SimpleITK image, read with nibabel."""
    import nibabel as nib

    path = Path(path)
    try:
        nifti = nib.load(str(path))
        shape = nifti.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) == 4:
            raise VolumeError(
                f'{path} is 4D ({shape[3]} volumes of {shape[0]}x{shape[1]}x{shape[2]}; fMRI or '
                f'DWI?): give one 3D T1 per file (e.g. nibabel.funcs.four_to_three)',
                kind='4d',
            )
        if len(shape) != 3:
            raise VolumeError(
                f'{path} has {len(shape)} dimensions {tuple(shape)}: give a 3D T1 volume',
                kind='not-3d',
            )
        data = np.asarray(nifti.dataobj, dtype=np.float32).reshape(shape)
        affine = nifti.affine
    except VolumeError:
        raise
    except Exception as e:  # nibabel raises many types for damaged files
        raise VolumeError(
            f'{path} cannot be read as NIfTI ({type(e).__name__}: {e}): re-download or '
            f're-convert it (e.g. dcm2niix), or remove it from the source folder',
            kind='unreadable',
        ) from e
    return image_from_ras(data, affine)


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM file: a DICOM suffix, or the ``DICM`` marker at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open('rb') as f:
            f.seek(128)
            return f.read(4) == b'DICM'
    except OSError:
        return False


def read_dicom_series(folder: str | Path):
    """The one DICOM series in ``folder`` as a float32 SimpleITK image (GDCM sorts the slices by
    position and applies the rescale slope / intercept)."""
    import SimpleITK as sitk

    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeError(
            f'{folder} holds no readable DICOM series: re-download it, or remove the folder',
            kind='unreadable',
        )
    if len(series) > 1:
        raise VolumeError(
            f'{folder} holds {len(series)} DICOM series ({", ".join(s[-12:] for s in series)}): '
            f'put each series in its own folder (as the ADNI download does, one image id per '
            f'folder)',
            kind='two-series',
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise VolumeError(
            f'{folder}: the DICOM series cannot be read ({first}): re-download it or convert it '
            f'with dcm2niix and point adni-prepare at the NIfTI',
            kind='unreadable',
        ) from e
    if image.GetDimension() != 3:
        raise VolumeError(f'{folder}: the DICOM series is not 3D', kind='not-3d')
    return sitk.Cast(image, sitk.sitkFloat32)


def read_volume(path: str | Path):
    """A 3D volume (NIfTI/MGH file, a DICOM folder or one file of a DICOM series) as float32
    SimpleITK image, checked by :func:`check_volume`."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(f'{path} does not exist', kind='unreadable')
    if path.is_dir():
        image = read_dicom_series(path)
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        image = read_nifti(path)
    elif is_dicom_file(path):
        image = read_dicom_series(path.parent)
    else:
        raise VolumeError(
            f'{path} is neither NIfTI ({", ".join(NIFTI_SUFFIXES)}) nor DICOM: convert it '
            f'(e.g. dcm2niix) or remove it from the source folder',
            kind='unreadable',
        )
    check_volume(image, path)
    return image


def check_volume(image, path: str | Path = 'the volume') -> None:
    """Refuse what cannot be a whole-brain 3D T1: too few voxels or too small a field of view
    along an axis, or no finite signal."""
    import SimpleITK as sitk

    size = np.asarray(image.GetSize())
    extent = size * np.asarray(image.GetSpacing())
    if size.min() < MIN_VOXELS or extent.min() < MIN_EXTENT_MM:
        raise VolumeError(
            f'{path} is {"x".join(map(str, size))} voxels covering '
            f'{"x".join(f"{e:.0f}" for e in extent)} mm: that is not a whole-brain 3D T1 '
            f'(needs >= {MIN_VOXELS} voxels and >= {MIN_EXTENT_MM:.0f} mm per axis); '
            f'give the MPRAGE / SPGR volume',
            kind='too-small',
        )
    stats = sitk.StatisticsImageFilter()
    stats.Execute(image)
    if not np.isfinite(stats.GetSum()) or stats.GetMaximum() <= stats.GetMinimum():
        raise VolumeError(
            f'{path} holds no usable signal (constant or non-finite voxels): re-download or '
            f're-convert it',
            kind='unreadable',
        )


# -------------------------------------------------------------------------------------- discover


@dataclass(frozen=True)
class Scan:
    """One 3D T1 found in the source: where it is and what its path says about it.

    ``visit`` and ``date`` (ISO ``YYYY-MM-DD``) are None where the layout does not tell them; the
    labels file may (an ADNI collection CSV knows each image's visit and date).
    """

    subject: str
    path: str
    image_id: str
    visit: str | None = None
    date: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Discovery:
    """The scans of a source folder, the layout found, and the files that were skipped."""

    layout: str
    scans: tuple[Scan, ...]
    skipped: tuple[str, ...] = ()


def is_nifti(path: Path) -> bool:
    """A NIfTI (or FreeSurfer .mgz / .mgh) file, by its name."""
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _visible(paths):
    return sorted(p for p in paths if not any(part.startswith('.') for part in p.parts))


def _volume_entries(src: Path) -> list[Path]:
    """Every NIfTI file and every folder that directly holds DICOM files, under ``src``."""
    entries, dicom_dirs = [], set()
    for path in _visible(src.rglob('*')):
        rel = path.relative_to(src)
        if any(part.startswith('.') for part in rel.parts):
            continue
        if is_nifti(path):
            entries.append(path)
        elif path.is_file() and path.parent not in dicom_dirs and is_dicom_file(path):
            dicom_dirs.add(path.parent)
    return sorted(entries + list(dicom_dirs))


def _iso_date(text: str) -> str | None:
    m = _DATE.match(text)
    return f'{m[1]}-{m[2]}-{m[3]}' if m else None


def _discover_bids(src: Path) -> Discovery:
    scans, skipped = [], []
    pattern = re.compile(r'^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?.*_T1w$')
    for path in _visible(src.glob('sub-*/**/anat/*')):
        if not is_nifti(path):
            continue
        m = pattern.match(_nifti_stem(path))
        if not m:
            skipped.append(str(path))
            continue
        subject, visit = m[1], m[2]
        scans.append(Scan(subject, str(path), _nifti_stem(path), visit=visit))
    return Discovery('bids', tuple(scans), tuple(skipped))


def _discover_adni(src: Path, entries: list[Path]) -> Discovery:
    scans, skipped = [], []
    for path in entries:
        parts = path.relative_to(src).parts
        subject_at = next((i for i, p in enumerate(parts) if _PTID.match(p)), None)
        if subject_at is None:
            skipped.append(str(path))
            continue
        image_id = next((p for p in reversed(parts) if _IMAGE_ID.match(p)), None)
        if image_id is None:  # IDA file names end in _I<image id> (NIfTI and DICOM downloads)
            named = path if path.is_file() else next(iter(sorted(path.glob('*.dcm'))), path)
            m = _IMAGE_ID_TAIL.search(_nifti_stem(named) if named.is_file() else '')
            image_id = m[1] if m else None
        date = next((d for d in map(_iso_date, parts[subject_at + 1 :]) if d), None)
        description = parts[subject_at + 1] if len(parts) > subject_at + 2 else None
        scans.append(
            Scan(
                parts[subject_at],
                str(path),
                image_id or str(Path(*parts)),
                date=date,
                description=description,
            )
        )
    return Discovery('adni', tuple(scans), tuple(skipped))


def _discover_generic(src: Path, entries: list[Path]) -> Discovery:
    scans = []
    for path in entries:
        parts = path.relative_to(src).parts
        if len(parts) == 1:  # SRC/<subject>.nii.gz
            subject = _nifti_stem(path) if path.is_file() else parts[0]
            scans.append(Scan(subject, str(path), subject))
            continue
        visit = parts[1] if len(parts) > 2 else None  # SRC/<subject>/<visit>/...
        image_id = '/'.join(parts[:-1] + ((_nifti_stem(path),) if path.is_file() else parts[-1:]))
        scans.append(Scan(parts[0], str(path), image_id, visit=visit))
    return Discovery('generic', tuple(scans))


def discover_scans(src: str | Path) -> Discovery:
    """The scans under ``src`` (a NIfTI file, a DICOM folder, or a tree of them); see the module
    docstring for the layouts. Raises VolumeError when nothing is found."""
    src = Path(src)
    if not src.exists():
        raise VolumeError(f'source {src} does not exist: give the folder holding the scans')
    if src.is_file():
        stem = _nifti_stem(src)
        return Discovery('file', (Scan(stem, str(src), stem),))
    if (src / 'dataset_description.json').is_file() or any(p.is_dir() for p in src.glob('sub-*')):
        found = _discover_bids(src)
    else:
        entries = _volume_entries(src)
        if any(_PTID.match(p) for e in entries for p in e.relative_to(src).parts):
            found = _discover_adni(src, entries)
        else:
            found = _discover_generic(src, entries)
    if not found.scans:
        raise VolumeError(
            f'no scans found under {src}: expected NIfTI files ({", ".join(NIFTI_SUFFIXES)}), '
            f'folders of DICOM files (the ADNI download layout) or a BIDS root '
            f'(sub-*/anat/*_T1w.nii.gz)',
            kind='unreadable',
        )
    _logger.info('found %d scans in %s (%s layout)', len(found.scans), src, found.layout)
    return found
