"""SYNTHETIC 3D T1 heads: NOT real MRI scans, NOT real patients.

Each head is the real-anatomy MNI152 template (nilearn's ICBM 2009a, see ``template.py``) with a
synthetic skull, scalp and neck around it, deformed smoothly for its own anatomy and for atrophy,
then scanned: a random head pose, a multiplicative bias field, Rician noise and a scanner grid
stored in one of several voxel orders (RAS, LAS, LPS, sagittal PIL...). Because the anatomy is a
real T1's, registration behaves on these heads roughly as it does on real scans; they are still
one template, deformed, and say nothing about real patients.

The atrophy model is the 2D generator's (``synthetic.py``), in 3D, with its severity
distributions per class and difficulty (``synthetic.DIFFICULTIES``): larger lateral ventricles
(a smooth expansion field), smaller medial temporal lobes (a contraction around the hippocampi, and
CSF around them), thinner cortex and wider sulci (the outermost grey matter turned into CSF), and a
slightly smaller brain inside the skull. The severities of NC and AD overlap, so the task is
learnable, not trivial.

What :func:`generate_volumes` writes, in the ADNI download layout, with an ADNI collection CSV::

    OUT/ADNI/<subject>/SYNTHETIC_MPRAGE/<date>_00_00_00.0/<image id>/<file>.nii.gz   (or *.dcm)
    OUT/labels.csv       Image Data ID, Subject, Group, Sex, Age, Visit, Modality, Description, ...
    OUT/README.txt       says SYNTHETIC

Subjects are ``000_S_0001``...: ADNI has no site 000. CLI::

    adni-synthetic OUT --volumes --subjects N [--visits K] [--dicom] [--voxel-mm 1.0]
"""

from __future__ import annotations

import csv
import datetime
import functools
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.note import DataNote, write_data_note
from .slices import DIFFICULTIES, SyntheticError, check_classes, difficulty_level
from ..prepare.template import load_template
from ..prepare.volumes import image_from_ras, ras_from_image

__all__ = [
    'SYNTHETIC_DESCRIPTION',
    'COLLECTION_COLUMNS',
    'STORAGE_ORIENTATIONS',
    'HeadParams',
    'SyntheticScan',
    'draw_head_params',
    'render_head',
    'write_nifti',
    'write_dicom_series',
    'generate_volumes',
]

_logger = logging.getLogger(__name__)

SYNTHETIC_DESCRIPTION = 'SYNTHETIC MPRAGE (adni_timm.synthetic.volumes; not a real patient)'
COLLECTION_COLUMNS = (
    'Image Data ID',
    'Subject',
    'Group',
    'Sex',
    'Age',
    'Visit',
    'Modality',
    'Description',
    'Type',
    'Acq Date',
    'Format',
)
# voxel orders a scanner or a converter may store a volume in (the physical head is the same)
STORAGE_ORIENTATIONS = ('RAS', 'LAS', 'LPS', 'PIL', 'ASL', 'RPI')
VISIT_CODES = ('bl', 'm12', 'm24', 'm36', 'm48')
PROGRESSION_PER_YEAR = {'NC': 0.01, 'MCI': 0.04, 'AD': 0.06}  # severity added per visit year

_CSF, _BONE, _FAT, _MUSCLE = 0.22, 0.05, 0.85, 0.5  # T1 intensities; template WM ~0.87, GM ~0.65
_NECK_PAD_MM = 44  # the template stops at MNI z = -72; the neck continues below
_FIELD_MM = 4.0  # the deformation fields are smooth: a 4 mm grid holds them
_HIPPOCAMPI_MM = ((-26.0, -20.0, -14.0), (26.0, -20.0, -14.0))  # MNI centres (approx.)
_HIPPOCAMPUS_SD_MM = (5.0, 11.0, 6.0)


# ------------------------------------------------------------------------------------ base head


@dataclass(frozen=True)
class _BaseHead:
    """The template head on a ``base_mm`` grid and the unit fields its subjects are made from."""

    intensity: np.ndarray  # [i, j, k] RAS, brain + skull + scalp + neck
    affine: np.ndarray
    cortex: np.ndarray  # weight of the outermost grey matter (cortical thinning)
    mtl: np.ndarray  # weight of the medial temporal region (darkened with atrophy)
    field_affine: np.ndarray  # the coarse grid of the fields below
    ventricles: np.ndarray  # [3, ...] mm per unit severity: expansion of the ventricles
    hippocampi: np.ndarray  # [3, ...] contraction around the hippocampi
    shrink: np.ndarray  # [3, ...] the brain shrinking towards its centre
    centre_mm: np.ndarray  # brain centre (RAS mm)


def _zoom(array, factor, order=1):
    from scipy import ndimage

    return array if factor == 1 else ndimage.zoom(array, factor, order=order, grid_mode=False)


def _unit_gradient(potential, voxel_mm, weight):
    grad = np.stack(np.gradient(potential.astype(np.float32), voxel_mm))
    grad *= weight
    return grad / max(float(np.linalg.norm(grad, axis=0).max()), 1e-12)


def _mm_grid(shape, affine):
    idx = np.indices(shape, dtype=np.float32)
    return np.einsum('ij,j...->i...', affine[:3, :3].astype(np.float32), idx) + affine[
        :3, 3
    ].astype(np.float32).reshape(3, 1, 1, 1)


@functools.lru_cache(maxsize=2)
def _base_head(base_mm: float) -> _BaseHead:
    from scipy import ndimage

    template = load_template()
    pad = ((0, 0), (0, 0), (_NECK_PAD_MM, 0))
    t1, brain = np.pad(template.t1, pad), np.pad(template.brain, pad)
    gm, wm = np.pad(template.gm, pad), np.pad(template.wm, pad)
    affine = template.affine.copy()
    affine[2, 3] -= _NECK_PAD_MM
    factor = 1.0 / base_mm
    if factor != 1:
        t1, gm, wm = (_zoom(a, factor) for a in (t1, gm, wm))
        brain = _zoom(brain.astype(np.float32), factor) > 0.5
        affine[:3, :3] *= base_mm
    xyz = _mm_grid(t1.shape, affine)

    outside_mm = ndimage.distance_transform_edt(~brain) * base_mm
    head = np.where(brain, t1, 0).astype(np.float32)
    ramp = lambda d: np.clip(d + 0.5, 0, 1)  # noqa: E731  soft 1-voxel edges
    shell = [(2.5, _CSF), (8.0, _BONE), (13.0, _FAT)]
    inner = 0.0
    for outer, value in shell:
        band = ramp((outside_mm - inner) / base_mm) * ramp((outer - outside_mm) / base_mm)
        head += np.where(brain, 0, band * value).astype(np.float32)
        inner = outer
    neck = ((xyz[0] / 42) ** 2 + ((xyz[1] + 22) / 38) ** 2 < 1) & (xyz[2] < -50)
    neck_fat = neck & ~ndimage.binary_erosion(neck, iterations=max(1, int(5 / base_mm)))
    air = outside_mm > 13.0
    head = np.where(air & neck, np.where(neck_fat, _FAT, _MUSCLE), head).astype(np.float32)

    # cortex: grey matter within ~1.5 mm of CSF or of the brain surface
    csf_like = ~brain | ((t1 < 0.45) & (gm < 0.5))
    to_csf_mm = ndimage.distance_transform_edt(~csf_like) * base_mm
    cortex = (gm * np.exp(-to_csf_mm / 1.5) * brain).astype(np.float32)
    # ventricles: the large CSF components deep in the brain
    deep = brain & (ndimage.distance_transform_edt(brain) * base_mm > 12)
    labels, n = ndimage.label(deep & (t1 < 0.45))
    sizes = ndimage.sum(np.ones_like(t1), labels, range(1, n + 1))
    ventricles = np.isin(labels, 1 + np.argsort(sizes)[::-1][:3])
    hippocampi = sum(
        np.exp(-0.5 * sum(((xyz[a] - c[a]) / _HIPPOCAMPUS_SD_MM[a]) ** 2 for a in range(3)))
        for c in _HIPPOCAMPI_MM
    ).astype(np.float32)
    mtl = (hippocampi * (1 - wm) * brain).astype(np.float32)
    centre = np.asarray(ndimage.center_of_mass(brain)) * base_mm + affine[:3, 3]

    # unit fields on the coarse field grid (mm per unit severity, RAS components)
    field_factor = base_mm / _FIELD_MM
    field_affine = affine.copy()
    field_affine[:3, :3] *= _FIELD_MM / base_mm
    inside = _zoom(ndimage.gaussian_filter(brain.astype(np.float32), 3 / base_mm), field_factor)
    vent = _zoom(ndimage.gaussian_filter(ventricles.astype(np.float32), 4 / base_mm), field_factor)
    hip = _zoom(hippocampi, field_factor)
    fxyz = _mm_grid(vent.shape, field_affine)
    toward_centre = (fxyz - centre.reshape(3, 1, 1, 1).astype(np.float32)) / 70.0
    return _BaseHead(
        intensity=head,
        affine=affine,
        cortex=cortex,
        mtl=mtl,
        field_affine=field_affine,
        ventricles=_unit_gradient(vent, _FIELD_MM, inside),  # sample towards them: they grow
        hippocampi=-_unit_gradient(hip, _FIELD_MM, inside),  # sample away: they shrink
        shrink=(toward_centre * inside).astype(np.float32),
        centre_mm=centre,
    )


# ---------------------------------------------------------------------------------- one subject


@dataclass(frozen=True)
class HeadParams:
    """Everything that makes one synthetic scan (drawn by :func:`draw_head_params`)."""

    severity: float
    anatomy_seed: int  # the subject's own smooth deformation (same at every visit)
    pose: tuple  # (rx, ry, rz degrees, tx, ty, tz mm, scale)
    bias: tuple  # coefficients of the smooth multiplicative bias field
    noise: float  # Rician sigma, relative to white matter ~0.87
    gain: float  # scanner units per template unit
    orientation: str  # voxel order of the stored volume


def draw_head_params(
    rng: np.random.Generator,
    severity: float,
    anatomy_seed: int,
    difficulty: str = 'default',
    orientation: str | None = None,
) -> HeadParams:
    level = DIFFICULTIES[difficulty]
    j = level.jitter
    angles = np.clip(rng.normal(0, [8 * j, 4 * j, 5 * j]), -20, 20)
    shift = np.clip(rng.normal(0, 6 * j, 3), -15, 15)
    scale = float(np.clip(rng.normal(1.0, 0.04 * j), 0.88, 1.12))
    return HeadParams(
        severity=float(severity),
        anatomy_seed=int(anatomy_seed),
        pose=(*map(float, angles), *map(float, shift), scale),
        bias=tuple(float(b) for b in rng.normal(0, 0.07 * j, 6)),
        noise=float(rng.uniform(*level.noise)),
        gain=float(rng.uniform(600, 1200)),
        orientation=orientation or str(rng.choice(STORAGE_ORIENTATIONS)),
    )


def _pose_matrix(pose) -> np.ndarray:
    """Head space -> scanner world (RAS mm), 4x4: rotate and scale about the origin, shift."""
    rx, ry, rz = np.deg2rad(pose[:3])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rot_z @ rot_y @ rot_x * pose[6]
    m[:3, 3] = pose[3:6]
    return m


def _anatomy_field(seed: int, shape, affine) -> np.ndarray:
    """A subject's own smooth deformation (mm, RAS): a few low-frequency waves, ~1.5 mm."""
    rng = np.random.default_rng(seed)
    xyz = _mm_grid(shape, affine)
    field = np.zeros((3, *shape), np.float32)
    for axis in range(3):
        for _ in range(3):
            k = rng.normal(0, 1 / 60, 3).astype(np.float32)  # wavelengths of ~40 cm .. 10 cm
            phase = rng.uniform(0, 2 * np.pi)
            field[axis] += np.float32(0.9) * np.sin(np.einsum('i,i...->...', k, xyz) + phase)
    return field


def render_head(params: HeadParams, voxel_mm=1.0, base_mm: float = 1.0, fov_mm=(200, 256, 256)):
    """One synthetic scan as a SimpleITK image (float32, scanner units), stored in
    ``params.orientation`` voxel order, on a scanner grid of ``voxel_mm`` (one value or three, in
    the R-L, A-P, S-I order) over ``fov_mm``."""
    import SimpleITK as sitk

    base = _base_head(float(base_mm))
    s = params.severity
    intensity = base.intensity + s * 0.55 * base.cortex * (_CSF - base.intensity)
    intensity += s * 0.4 * base.mtl * (_CSF - intensity)
    xyz = _mm_grid(intensity.shape, base.affine)
    b = params.bias
    rel = (xyz - base.centre_mm.reshape(3, 1, 1, 1).astype(np.float32)) / 100.0
    log_bias = b[0] * rel[0] + b[1] * rel[1] + b[2] * rel[2]
    log_bias += b[3] * rel[0] * rel[1] + b[4] * rel[2] ** 2 + b[5] * (rel[0] ** 2 + rel[1] ** 2)
    intensity = (intensity * np.exp(log_bias)).astype(np.float32)
    del xyz, rel, log_bias

    fshape = base.ventricles.shape[1:]
    field = s * (3.5 * base.ventricles + 2.5 * base.hippocampi + 2.0 * base.shrink)
    field += _anatomy_field(params.anatomy_seed, fshape, base.field_affine)
    field[:2] *= -1  # RAS -> LPS components
    vectors = sitk.GetImageFromArray(field.transpose(3, 2, 1, 0).astype(np.float64), isVector=True)
    geometry = image_from_ras(np.zeros(fshape, np.float32), base.field_affine)
    vectors.CopyInformation(geometry)
    warp = sitk.DisplacementFieldTransform(vectors)

    pose = _pose_matrix(params.pose)
    flip = np.diag([-1.0, -1.0, 1.0])
    inverse = np.linalg.inv(pose)
    world_to_head = sitk.AffineTransform(3)
    world_to_head.SetMatrix((flip @ inverse[:3, :3] @ flip).flatten().tolist())
    world_to_head.SetTranslation((flip @ inverse[:3, 3]).tolist())
    # Resample pulls: a scanner point goes to head space, then through the warp into the base head
    transform = sitk.CompositeTransform([warp, world_to_head])

    voxel = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
    size = np.maximum(np.round(np.asarray(fov_mm) / voxel).astype(int), 1)
    scanner = np.eye(4)
    scanner[:3, :3] = np.diag(voxel)
    scanner[:3, 3] = base.centre_mm + np.array([0, 10, 5]) - voxel * (size - 1) / 2
    reference = image_from_ras(np.zeros(tuple(size), np.float32), scanner)
    image = sitk.Resample(
        image_from_ras(intensity, base.affine), reference, transform, sitk.sitkLinear, 0.0
    )
    array = sitk.GetArrayFromImage(image)
    rng = np.random.default_rng([params.anatomy_seed, int(1e6 * params.noise)])
    noise = rng.standard_normal((2, *array.shape), dtype=np.float32) * np.float32(params.noise)
    array = np.sqrt((array + noise[0]) ** 2 + noise[1] ** 2) * np.float32(params.gain)
    noisy = sitk.GetImageFromArray(np.round(array).astype(np.float32))
    noisy.CopyInformation(image)
    return sitk.DICOMOrient(noisy, params.orientation)


# --------------------------------------------------------------------------------------- writing


def write_nifti(image, path: str | Path) -> Path:
    """``image`` as an int16 NIfTI with its voxel order kept (affine from the ITK geometry)."""
    import nibabel as nib

    array, affine = ras_from_image(image)
    nifti = nib.Nifti1Image(np.clip(np.round(array), -32768, 32767).astype(np.int16), affine)
    nifti.header['descrip'] = b'SYNTHETIC adni_timm: not a real patient'
    nifti.header.set_qform(affine, code=1)
    nifti.header.set_sform(affine, code=1)
    path = Path(path)
    nib.save(nifti, str(path))
    return path


def write_dicom_series(
    image,
    folder: str | Path,
    subject: str,
    image_id: str,
    date: str,
    sex: str = 'O',
    age: float | None = None,
) -> list[Path]:
    """``image`` as a DICOM MR series in ``folder``, one file per slice of its third voxel axis
    (int16, rescale 1/0), with the geometry GDCM needs to stack it back (tested)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import MRImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array = np.clip(np.round(np.asarray(image_array(image))), -32768, 32767).astype(np.int16)
    spacing = image.GetSpacing()
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    study, series, frame = (generate_uid(entropy_srcs=[image_id, tag]) for tag in 'SUF')
    files = []
    for k in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[image_id, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f'{subject}_{image_id}_{k + 1:04d}.dcm'
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b'\0' * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.Manufacturer = 'MR', 'SYNTHETIC'
        ds.PatientID = ds.PatientName = subject
        ds.PatientSex = sex
        if age is not None:
            ds.PatientAge = f'{int(age):03d}Y'
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = date.replace('-', '')
        ds.SeriesDescription = 'SYNTHETIC MPRAGE'
        ds.ImageComments = SYNTHETIC_DESCRIPTION
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageType = ['ORIGINAL', 'PRIMARY', 'M']
        ds.ImageOrientationPatient = [
            f'{v:.10g}' for v in direction[:, 0].tolist() + direction[:, 1].tolist()
        ]
        ds.ImagePositionPatient = [
            f'{v:.10g}' for v in image.TransformIndexToPhysicalPoint((0, 0, k))
        ]
        ds.PixelSpacing = [f'{spacing[1]:.10g}', f'{spacing[0]:.10g}']  # row, column spacing
        ds.SliceThickness = ds.SpacingBetweenSlices = f'{spacing[2]:.10g}'
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 'MONOCHROME2'
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = '0', '1'
        ds.PixelData = np.ascontiguousarray(array[k]).tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        files.append(path)
    del pydicom
    return files


def image_array(image) -> np.ndarray:
    """The voxels of a SimpleITK image as numpy ``[k, j, i]`` (ITK's own order)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


# ------------------------------------------------------------------------------------------- set


@dataclass(frozen=True)
class SyntheticScan:
    """One written scan and its row of ``labels.csv``."""

    image_id: str
    subject: str
    group: str
    visit: str
    date: str
    sex: str
    age: float
    severity: float
    path: str


def _scan_jobs(subjects: int, classes, visits: int, seed: int, difficulty: str):
    level = DIFFICULTIES[difficulty]
    jobs, n = [], 0
    for class_i, group in enumerate(classes):
        mean, sd = level.severity[group]
        for i in range(subjects):
            number = class_i * subjects + i + 1
            subject = f'000_S_{number:04d}'
            rng = np.random.default_rng([seed, class_i, i])
            severity = float(np.clip(rng.normal(mean, sd), 0, 1))
            sex = str(rng.choice(['F', 'M']))
            age = float(np.round(rng.normal(75 if group != 'NC' else 74, 6), 1))
            start = datetime.date(2006, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 900)))
            for v in range(visits):
                n += 1
                date = start + datetime.timedelta(days=365 * v + int(rng.integers(-20, 20)))
                progressed = min(1.0, severity + v * PROGRESSION_PER_YEAR.get(group, 0.03))
                jobs.append(
                    dict(
                        key=(seed, class_i, i, v),
                        image_id=f'I{9_000_000 + number * 10 + v}',
                        subject=subject,
                        group=group,
                        visit=VISIT_CODES[v],
                        date=date.isoformat(),
                        sex=sex,
                        age=round(age + v, 1),
                        severity=progressed,
                        anatomy_seed=int(
                            np.random.default_rng([seed, class_i, i, 99]).integers(2**31)
                        ),
                    )
                )
    return jobs


def _write_scan(
    job, out_dir: str, difficulty: str, voxel_mm, base_mm: float, dicom: bool, fov_mm
) -> SyntheticScan:
    rng = np.random.default_rng(list(job['key']))
    params = draw_head_params(rng, job['severity'], job['anatomy_seed'], difficulty)
    image = render_head(params, voxel_mm=voxel_mm, base_mm=base_mm, fov_mm=fov_mm)
    folder = (
        Path(out_dir)
        / 'ADNI'
        / job['subject']
        / 'SYNTHETIC_MPRAGE'
        / f'{job["date"]}_00_00_00.0'
        / job['image_id']
    )
    folder.mkdir(parents=True, exist_ok=True)
    if dicom:
        write_dicom_series(
            image, folder, job['subject'], job['image_id'], job['date'], job['sex'], job['age']
        )
        path = folder
    else:
        path = write_nifti(
            image, folder / f'ADNI_{job["subject"]}_MR_SYNTHETIC_MPRAGE_{job["image_id"]}.nii.gz'
        )
    fields = {k: job[k] for k in ('image_id', 'subject', 'group', 'visit', 'date', 'sex', 'age')}
    return SyntheticScan(**fields, severity=job['severity'], path=str(path))


def _acq_date(iso: str) -> str:
    d = datetime.date.fromisoformat(iso)
    return f'{d.month}/{d.day}/{d.year}'  # the IDA collection CSV's M/D/YYYY


def generate_volumes(
    out_dir,
    subjects: int,
    classes=('NC', 'AD'),
    visits: int = 1,
    seed: int = 0,
    difficulty: str = 'default',
    voxel_mm=1.0,
    base_mm: float = 1.0,
    dicom: bool = False,
    workers: int = 1,
    fov_mm=(200, 256, 256),
) -> list[SyntheticScan]:
    """Write ``subjects`` SYNTHETIC subjects per class, ``visits`` scans each, to ``out_dir`` in
    the ADNI download layout, NIfTI or (``dicom``) DICOM series, plus ``labels.csv`` in the ADNI
    collection format. ``base_mm`` > 1 builds the heads from a coarser template (fast tests).
    Scan ``i`` is the same whatever the worker count and the format."""
    check_classes(classes, difficulty_level(difficulty))
    if subjects < 1 or not 1 <= visits <= len(VISIT_CODES):
        raise SyntheticError(f'--subjects must be >= 1 and --visits 1..{len(VISIT_CODES)}')
    out = Path(out_dir)
    if (out / 'ADNI').exists() and any((out / 'ADNI').iterdir()):
        raise SyntheticError(f'{out / "ADNI"} already holds scans: write into a new folder')
    out.mkdir(parents=True, exist_ok=True)
    jobs = _scan_jobs(subjects, tuple(classes), visits, seed, difficulty)
    write = functools.partial(
        _write_scan,
        out_dir=str(out),
        difficulty=difficulty,
        voxel_mm=voxel_mm,
        base_mm=base_mm,
        dicom=dicom,
        fov_mm=fov_mm,
    )
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            scans = list(pool.map(write, jobs))
    else:
        scans = [write(job) for job in jobs]
    with (out / 'labels.csv').open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(COLLECTION_COLUMNS)
        for s in scans:
            writer.writerow(
                [
                    s.image_id,
                    s.subject,
                    s.group,
                    s.sex,
                    f'{s.age:g}',
                    s.visit,
                    'MRI',
                    'SYNTHETIC MPRAGE',
                    'Original',
                    _acq_date(s.date),
                    'DCM' if dicom else 'NiFTI',
                ]
            )
    (out / 'README.txt').write_text(
        'SYNTHETIC 3D T1 heads written by adni_timm.synthetic.volumes: the MNI152 template with a\n'
        'synthetic skull, deformed (individual anatomy, atrophy for AD), posed, bias field and\n'
        'noise added. NOT real MRI scans, NOT real patients. labels.csv is in the ADNI collection\n'
        'format; subjects 000_S_* (ADNI has no site 000).\n'
    )
    write_data_note(
        out,
        DataNote(
            f'synthetic 3D T1 heads (adni_timm.synthetic.volumes, {difficulty} difficulty, seed '
            f'{seed}; NOT real MRI)',
            synthetic=True,
        ),
    )
    _logger.info('wrote %d synthetic scans to %s', len(scans), out)
    return scans
