"""Reading 3D volumes (NIfTI, DICOM), finding scans (ADNI, BIDS, generic layouts), label files.

Real files only where they ship inside wheels: nibabel's own NIfTI and DICOM test data; the
rest is the SYNTHETIC volume generator (adni_timm.synthetic.volumes).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip('SimpleITK')
nib = pytest.importorskip('nibabel')
pydicom = pytest.importorskip('pydicom')

from nibabel.testing import data_path as NIBABEL_DATA  # noqa: E402

from adni_timm.prepare.labels import (  # noqa: E402
    LabelsError,
    class_of_group,
    normalise_visit,
    parse_group_map,
    read_labels,
)
from adni_timm.synthetic.volumes import (  # noqa: E402
    draw_head_params,
    generate_volumes,
    render_head,
    write_dicom_series,
    write_nifti,
)
from adni_timm.prepare.volumes import (  # noqa: E402
    Scan,
    VolumeError,
    discover_scans,
    image_from_ras,
    ras_from_image,
    read_dicom_series,
    read_nifti,
    read_volume,
)

NIBABEL_DATA = Path(NIBABEL_DATA)
NICOM_DATA = Path(nib.__file__).parent / 'nicom' / 'tests' / 'data'


def _ras(image):
    """(array, affine) of an image reoriented to RAS."""
    return ras_from_image(sitk.DICOMOrient(image, 'RAS'))


# ------------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize('name', ['anatomical.nii', 'standard.nii.gz', 'reoriented_anat_moved.nii'])
def test_nibabel_nifti_files_read_with_their_geometry(name):
    """Voxels and world coordinates agree with nibabel's own canonical view of the file."""
    path = NIBABEL_DATA / name
    image = read_nifti(path)
    canonical = nib.as_closest_canonical(nib.load(path))
    array, affine = _ras(image)
    np.testing.assert_array_equal(array, np.asarray(canonical.dataobj, dtype=np.float32))
    np.testing.assert_allclose(affine, canonical.affine, rtol=1e-5, atol=1e-4)
    # one voxel's world position through ITK (LPS) and through nibabel (RAS)
    ijk = np.array(image.GetSize()) // 3
    lps = np.array(image.TransformIndexToPhysicalPoint(ijk.tolist()))
    ras = nib.load(path).affine @ np.r_[ijk, 1]
    np.testing.assert_allclose(lps * [-1, -1, 1], ras[:3], rtol=1e-5, atol=1e-4)


def test_4d_nifti_is_refused_in_one_line():
    with pytest.raises(VolumeError) as info:
        read_volume(NIBABEL_DATA / 'example4d.nii.gz')
    assert info.value.kind == '4d'
    assert 'is 4D (2 volumes' in str(info.value) and '\n' not in str(info.value)


def test_small_nifti_is_not_a_whole_brain_t1():
    """nibabel's anatomical.nii is a cropped 2 mm brain: it reads, but prepare refuses it."""
    with pytest.raises(VolumeError) as info:
        read_volume(NIBABEL_DATA / 'anatomical.nii')
    assert info.value.kind == 'too-small' and '66x82x50 mm' in str(info.value)


def test_unreadable_and_unknown_files_are_refused(tmp_path):
    broken = tmp_path / 'broken.nii.gz'
    broken.write_bytes(b'not a nifti file at all' * 10)
    with pytest.raises(VolumeError) as info:
        read_volume(broken)
    assert info.value.kind == 'unreadable' and 'cannot be read as NIfTI' in str(info.value)
    other = tmp_path / 'scan.txt'
    other.write_text('hello')
    with pytest.raises(VolumeError, match='neither NIfTI'):
        read_volume(other)


def test_ras_conversion_round_trips_an_oblique_affine():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q * [1.2, 0.9, 2.0]
    affine[:3, 3] = rng.normal(0, 50, 3)
    array = rng.random((5, 6, 7)).astype(np.float32)
    back, back_affine = ras_from_image(image_from_ras(array, affine))
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------- DICOM


def test_nibabel_dicom_files_read_as_pydicom_decodes_them(tmp_path):
    """Siemens DTI slices and a decimal rescale: the pixels are pydicom's, rescaled; two slices
    are read as a series but are no whole-brain T1."""
    folder = tmp_path / 'dti'
    folder.mkdir()
    for name in ('0.dcm', '1.dcm'):
        shutil.copy(NIBABEL_DATA / name, folder)
    image = read_dicom_series(folder)
    assert image.GetSize() == (256, 256, 2)
    first = pydicom.dcmread(NIBABEL_DATA / '0.dcm')
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], first.pixel_array)
    np.testing.assert_allclose(image.GetOrigin(), [float(v) for v in first.ImagePositionPatient])
    with pytest.raises(VolumeError) as info:
        read_volume(folder)
    assert info.value.kind == 'too-small' and '256x256x2 voxels' in str(info.value)

    rescaled = tmp_path / 'rescale'
    rescaled.mkdir()
    shutil.copy(NICOM_DATA / 'decimal_rescale.dcm', rescaled)
    ds = pydicom.dcmread(NICOM_DATA / 'decimal_rescale.dcm')
    want = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    got = sitk.GetArrayFromImage(read_dicom_series(rescaled))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope='module')
def small_head():
    """One SYNTHETIC head at 4 mm, stored sagittally (PIL) as scanners often do."""
    params = draw_head_params(np.random.default_rng(1), 0.5, 7, orientation='PIL')
    return render_head(params, voxel_mm=4.0, base_mm=2.0)


def test_synthetic_dicom_series_round_trips_to_the_nifti(tmp_path):
    """The generator's DICOM series and its NIfTI of the same scan read to the same volume."""
    nifti = generate_volumes(tmp_path / 'n', 1, classes=('AD',), voxel_mm=4.0, base_mm=2.0)
    dicom = generate_volumes(
        tmp_path / 'd', 1, classes=('AD',), voxel_mm=4.0, base_mm=2.0, dicom=True
    )
    assert [s.image_id for s in nifti] == [s.image_id for s in dicom]
    for a, b in zip(nifti, dicom):
        assert Path(b.path).is_dir() and len(list(Path(b.path).glob('*.dcm'))) > 16
        array_a, affine_a = _ras(read_volume(a.path))
        array_b, affine_b = _ras(read_volume(b.path))
        np.testing.assert_array_equal(array_a, array_b)
        np.testing.assert_allclose(affine_a, affine_b, rtol=1e-6, atol=1e-4)
    header = pydicom.dcmread(next(Path(dicom[0].path).glob('*.dcm')))
    assert 'SYNTHETIC' in header.ImageComments and header.PatientID == dicom[0].subject


def test_two_series_in_one_folder_are_refused(tmp_path, small_head):
    folder = tmp_path / 'mixed'
    write_dicom_series(small_head, folder, '000_S_0001', 'I1', '2006-01-01')
    write_dicom_series(small_head, folder, '000_S_0001', 'I2', '2006-01-01')
    with pytest.raises(VolumeError) as info:
        read_volume(folder)
    assert info.value.kind == 'two-series'
    assert 'holds 2 DICOM series' in str(info.value) and 'own folder' in str(info.value)


# --------------------------------------------------------------------------------- discovery


def test_discover_adni_download_layout(tmp_path):
    scans = generate_volumes(tmp_path, 1, visits=2, voxel_mm=6.0, base_mm=2.0, dicom=True)
    found = discover_scans(tmp_path / 'ADNI')
    assert found.layout == 'adni'
    assert sorted((s.subject, s.image_id, s.date) for s in found.scans) == sorted(
        (s.subject, s.image_id, s.date) for s in scans
    )
    assert all(s.description == 'SYNTHETIC_MPRAGE' for s in found.scans)


def test_discover_bids_and_generic(tmp_path, small_head):
    bids = tmp_path / 'bids'
    for sub, ses in [('01', 'M000'), ('01', 'M012'), ('02', 'M000')]:
        anat = bids / f'sub-{sub}' / f'ses-{ses}' / 'anat'
        anat.mkdir(parents=True)
        write_nifti(small_head, anat / f'sub-{sub}_ses-{ses}_T1w.nii.gz')
    (bids / 'sub-02' / 'ses-M000' / 'anat' / 'sub-02_ses-M000_FLAIR.nii.gz').write_bytes(b'x')
    (bids / 'dataset_description.json').write_text('{"Name": "synthetic", "BIDSVersion": "1.8"}')
    found = discover_scans(bids)
    assert found.layout == 'bids'
    assert [(s.subject, s.visit) for s in found.scans] == [
        ('sub-01', 'ses-M000'),
        ('sub-01', 'ses-M012'),
        ('sub-02', 'ses-M000'),
    ]
    flat = tmp_path / 'flat'
    (flat / 'S2' / 'v1').mkdir(parents=True)
    write_nifti(small_head, flat / 'S1.nii.gz')
    write_nifti(small_head, flat / 'S2' / 'v1' / 't1.nii')
    found = discover_scans(flat)
    assert found.layout == 'generic'
    assert [(s.subject, s.visit) for s in found.scans] == [('S1', None), ('S2', 'v1')]
    ida = tmp_path / 'ida' / 'ADNI' / '002_S_0295' / 'MPRAGE' / '2006-04-18_08_20_30.0' / 'S13408'
    ida.mkdir(parents=True)
    write_nifti(small_head, ida / 'ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418_S13408_I13722.nii')
    (found,) = discover_scans(tmp_path / 'ida').scans
    assert (found.subject, found.image_id, found.date, found.description) == (
        '002_S_0295',
        'I13722',
        '2006-04-18',
        'MPRAGE',
    )
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no scans')
    with pytest.raises(VolumeError, match='no scans found'):
        discover_scans(empty)


# ------------------------------------------------------------------------------------ labels


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_adni_collection_csv_matches_by_image_id_then_date(tmp_path):
    path = _write(
        tmp_path / 'coll.csv',
        'Image Data ID,Subject,Group,Sex,Age,Visit,Modality,Description,Type,Acq Date,Format\n'
        'I100,002_S_0295,CN,M,84,sc,MRI,MPRAGE,Original,4/18/2006,DCM\n'
        'I200,002_S_0295,CN,M,85,m12,MRI,MPRAGE,Original,5/02/2007,DCM\n',
    )
    labels = read_labels(path)
    assert labels.format == 'adni'
    by_id = labels.match(Scan('002_S_0295', 'x', 'I200'))
    assert (by_id.group, by_id.visit, by_id.date) == ('CN', 'm12', '2007-05-02')
    by_date = labels.match(Scan('002_S_0295', 'x', 'other', date='2006-04-18'))
    assert by_date.visit == 'sc'
    assert labels.match(Scan('011_S_0002', 'x', 'I300')) is None
    with pytest.raises(LabelsError, match='none has this scan'):
        labels.match(Scan('002_S_0295', 'x', 'other'))


def test_adnimerge_matches_visit_code_or_nearest_exam_date(tmp_path):
    path = _write(
        tmp_path / 'ADNIMERGE.csv',
        'RID,PTID,VISCODE,EXAMDATE,DX_bl,DX\n'
        '295,002_S_0295,bl,2006-04-18,CN,\n'
        '295,002_S_0295,m12,2007-04-20,CN,MCI\n'
        '295,002_S_0295,m24,2008-04-25,CN,Dementia\n',
    )
    labels = read_labels(path)
    assert labels.format == 'adnimerge'
    assert labels.match(Scan('002_S_0295', 'x', 'i', visit='ses-M024')).group == 'Dementia'
    assert labels.match(Scan('002_S_0295', 'x', 'i', date='2007-05-30')).group == 'MCI'
    baseline = labels.match(Scan('002_S_0295', 'x', 'i', date='2006-04-19'))
    assert (baseline.group, baseline.visit) == ('CN', 'bl')  # empty DX at bl -> DX_bl
    assert labels.match(Scan('002_S_0295', 'x', 'i', date='2012-01-01')).group == ''


def test_bids_participants_and_plain_csv(tmp_path):
    tsv = _write(
        tmp_path / 'participants.tsv',
        'participant_id\tsex\tdiagnosis_bl\nsub-01\tF\tCN\nsub-02\tM\tAD\n',
    )
    labels = read_labels(tsv)
    assert (labels.format, labels.column) == ('bids', 'diagnosis_bl')
    assert labels.match(Scan('sub-02', 'x', 'i', visit='ses-M012')).group == 'AD'
    plain = _write(tmp_path / 'labels.csv', 'subject,label,visit\nS1,AD,v1\nS1,NC,v0\nS2,NC,\n')
    labels = read_labels(plain)
    assert labels.format == 'plain'
    assert labels.match(Scan('S1', 'x', 'i', visit='v0')).group == 'NC'
    assert labels.match(Scan('S2', 'x', 'i')).group == 'NC'
    with pytest.raises(LabelsError, match='no matching visit'):
        labels.match(Scan('S1', 'x', 'i'))
    with pytest.raises(LabelsError, match='unknown labels format'):
        read_labels(_write(tmp_path / 'odd.csv', 'a,b\n1,2\n'))


def test_group_mapping_is_explicit():
    assert [class_of_group(g) for g in ('CN', 'cn', 'Dementia', 'AD', 'EMCI', 'SMC')] == [
        'NC',
        'NC',
        'AD',
        'AD',
        'MCI',
        'SMC',
    ]
    assert class_of_group('Patient') is None
    overrides = parse_group_map('SMC=NC, Patient=AD')
    assert class_of_group('smc', overrides) == 'NC' and class_of_group('patient', overrides) == 'AD'
    with pytest.raises(LabelsError, match='GROUP=CLASS'):
        parse_group_map('SMC')
    assert [normalise_visit(v) for v in ('ses-M000', 'M12', 'm12', 'bl', 'ses-bl', None)] == [
        'bl',
        'm12',
        'm12',
        'bl',
        'bl',
        None,
    ]


def test_adni_synthetic_volumes_cli(tmp_path, capsys):
    """`adni-synthetic OUT --volumes [--dicom]` (the 2D generator's CLI hands over)."""
    from adni_timm.cli.synthetic import main

    args = ['--volumes', '--subjects', '1', '--classes', 'AD', '--voxel-mm', '6', '--base-mm', '2']
    assert main([str(tmp_path / 'n'), *args]) == 0
    assert main([str(tmp_path / 'd'), *args, '--dicom']) == 0
    assert 'wrote 1 SYNTHETIC DICOM series' in capsys.readouterr().out
    rows = (tmp_path / 'd' / 'labels.csv').read_text().splitlines()
    assert rows[0].startswith('Image Data ID,Subject,Group,Sex,Age,Visit,Modality,Description')
    assert rows[1].split(',')[2] == 'AD' and 'SYNTHETIC' in rows[1]
    assert len(list((tmp_path / 'n' / 'ADNI').glob('000_S_0001/*/*/*/*.nii.gz'))) == 1
    assert 'NOT real MRI' in (tmp_path / 'n' / 'README.txt').read_text()
    assert main([str(tmp_path / 'n'), *args]) == 2  # refuses to mix two sets
