"""adni-prepare's output as a BIDS derivative: ``dataset_description.json`` (the spec's required
keys for a derivative), and with ``--save-registered`` each scan in template space and the affine
transform that put it there: both load, the transform applied to the source scan gives the saved
volume, and the saved volume prepared again without registration gives the same slices.

All scans are SYNTHETIC (adni_timm.synthetic_volumes) at 4 mm, one subject per class."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip('SimpleITK')
nib = pytest.importorskip('nibabel')
pytest.importorskip('nilearn')

from PIL import Image  # noqa: E402

from adni_timm.prepare.run import PrepareOptions, prepare  # noqa: E402
from adni_timm.prepare.bids import (  # noqa: E402
    SPACE,
    bids_name,
    check_derivative_description,
    registered_reference,
)
from adni_timm.prepare.labels import read_labels  # noqa: E402
from adni_timm.prepare.preprocess import Recipe  # noqa: E402
from adni_timm.prepare.template import load_template  # noqa: E402
from adni_timm.prepare.volumes import discover_scans, read_volume  # noqa: E402
from adni_timm.synthetic.volumes import generate_volumes  # noqa: E402

# no N4, no resampling: the saved volume is then the source scan under the transform alone
RECIPE = Recipe(n4=False, resample_mm=None, slices=4)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """(SRC, OUT, result): 1 NC + 1 AD subject prepared with --save-registered (read-only)."""
    root = tmp_path_factory.mktemp('bids')
    generate_volumes(root / 'volumes', 1, visits=1, voxel_mm=4.0, base_mm=2.0)
    src, out = root / 'volumes' / 'ADNI', root / 'out'
    labels = read_labels(root / 'volumes' / 'labels.csv')
    options = PrepareOptions(test_fraction=0.0, save_registered=True)
    result = prepare(src, out, labels, discover_scans(src), RECIPE, options)
    assert not result.problems and len(result.prepared) == 2
    return src, out, result


@pytest.mark.slow
def test_dataset_description_is_a_valid_derivative_description(prepared):
    src, out, _ = prepared
    found = json.loads((out / 'dataset_description.json').read_text())
    # the BIDS schema's rules: dataset_description (Name, BIDSVersion required) and
    # derivative_description (GeneratedBy required when DatasetType is derivative); GeneratedBy is
    # an array (minItems 1) of objects whose Name is required
    assert isinstance(found['Name'], str) and found['Name']
    assert [int(x) for x in found['BIDSVersion'].split('.')] >= [1, 4, 0]  # derivatives: 1.4.0+
    assert found['DatasetType'] == 'derivative'
    generated = found['GeneratedBy']
    assert isinstance(generated, list) and len(generated) >= 1
    from adni_timm import __version__

    assert generated[0]['Name'] == 'adni-prepare' and generated[0]['Version'] == __version__
    recipe = json.loads((out / 'prepare.json').read_text())
    assert recipe['recipe_digest'] in generated[0]['Description']
    assert found['SourceDatasets'] == [{'URL': src.resolve().as_uri()}]
    assert check_derivative_description(found) == []
    # and the checker refuses what the rules refuse
    bad = dict(found, GeneratedBy={'Name': 'x'})
    assert check_derivative_description(bad) == [
        'GeneratedBy is required for a derivative: a list of one or more objects'
    ]
    assert (
        'BIDSVersion is required'
        in check_derivative_description({k: v for k, v in found.items() if k != 'BIDSVersion'})[0]
    )
    ignored = (out / '.bidsignore').read_text().split()
    assert {'/train', '/test', '/qc', '/records', '*_xfm.mat'} <= set(ignored)


def test_the_official_bids_validator_finds_no_error(prepared, tmp_path):
    """bids-validator (the schema validator, on Deno) on OUT: no errors. Skipped where it is not
    installed (pip install bids-validator-deno: the validator and a Deno runtime, ~45 MB)."""
    pytest.importorskip('bids_validator_deno', reason='pip install bids-validator-deno to run it')
    import subprocess
    import sys

    _, out, _ = prepared
    run = 'import sys; from bids_validator_deno import cli; sys.argv[0] = "bids-validator"; cli()'
    proc = subprocess.run(
        [sys.executable, '-c', run, str(out), '--json'],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, 'DENO_DIR': str(tmp_path / 'deno')},
    )
    issues = json.loads(proc.stdout)['issues']['issues']
    errors = [(i['code'], i.get('location')) for i in issues if i['severity'] == 'error']
    assert errors == []


def test_registered_volume_and_transform_load_and_reproduce_each_other(prepared):
    src, out, result = prepared
    template = load_template()
    for record in result.prepared:
        name = bids_name(record.subject, None)
        assert record.registered == [name.volume, name.sidecar, name.transform]
        assert name.volume == (
            f'sub-{record.subject.replace("_", "")}/anat/sub-{record.subject.replace("_", "")}'
            f'_space-{SPACE}_desc-preproc_T1w.nii.gz'
        )
        volume = nib.load(out / name.volume)
        assert volume.shape == template.shape
        np.testing.assert_allclose(volume.affine, template.affine, rtol=1e-6, atol=1e-6)
        assert int(volume.header['sform_code']) == 4  # MNI 152
        saved = np.asarray(volume.dataobj, dtype=np.float32)
        sidecar = json.loads((out / name.sidecar).read_text())
        assert sidecar['SkullStripped'] is False
        assert sidecar['Sources'][0].startswith('bids:source:') and Path(
            src / sidecar['Sources'][0].removeprefix('bids:source:')
        ).samefile(record.source)
        transform = sitk.ReadTransform(str(out / name.transform))
        assert transform.GetName() == 'AffineTransform'
        again = sitk.Resample(
            read_volume(record.source),
            registered_reference(template),
            transform,
            sitk.sitkLinear,
            0.0,
            sitk.sitkFloat32,
        )
        again = sitk.GetArrayFromImage(again).transpose(2, 1, 0)  # [k, j, i] -> [i, j, k]
        peak = float(np.abs(again).max())
        # the saved volume is 16-bit with a scale factor: equal to 1/65535 of the range
        np.testing.assert_allclose(saved, again, rtol=1e-4, atol=peak / 65535 * 1.01)
        # the transform maps as the slices say: the registration similarity adni-prepare
        # recorded (prepare.similarity, on the scan resampled onto the template grid) is the
        # saved volume's, up to its 16-bit quantisation
        from adni_timm.prepare.similarity import registration_similarity

        assert registration_similarity(saved, template) == pytest.approx(
            record.similarity, rel=1e-2, abs=2e-3
        )


def test_the_saved_volume_prepared_again_gives_the_same_slices(prepared, tmp_path):
    """Another pipeline's output plugs in with --no-register: ours, saved, gives our slices."""
    _, out, result = prepared
    labels = tmp_path / 'labels.csv'
    with labels.open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['subject', 'label'])
        for r in result.prepared:
            writer.writerow([f'sub-{r.subject.replace("_", "")}', r.label])
    again = tmp_path / 'again'
    recipe = Recipe(n4=False, resample_mm=None, register=False, slices=4)
    redo = prepare(
        out,
        again,
        read_labels(labels),
        discover_scans(out),
        recipe,
        PrepareOptions(test_fraction=0.0),
    )
    assert not redo.problems and len(redo.prepared) == 2
    by_subject = {f'sub-{r.subject.replace("_", "")}': r for r in result.prepared}
    for r in redo.prepared:
        first = by_subject[r.subject]
        for a, b in zip(first.files, r.files):
            assert Path(a).name.split('_')[-1] == Path(b).name.split('_')[-1]  # slice numbers
            x = np.asarray(Image.open(out / a), dtype=np.int16)
            y = np.asarray(Image.open(again / b), dtype=np.int16)
            assert np.abs(x - y).max() <= 1  # the 16-bit rounding of the saved volume


def test_subject_and_visit_become_bids_labels():
    assert bids_name('002_S_0295', None).prefix == 'sub-002S0295'
    assert bids_name('002_S_0295', 'm12').prefix == 'sub-002S0295_ses-m12'
    assert bids_name('sub-01', 'ses-02').folder == 'sub-01/ses-02/anat'
    with pytest.raises(ValueError, match='no letters or digits'):
        bids_name('___', None)


def test_two_scans_on_one_bids_name_are_refused_before_any_work(tmp_path):
    from adni_timm.prepare.plan import Plan, PlannedScan, PrepareError
    from adni_timm.prepare.run import _registered_output

    scans = [
        PlannedScan(p, p, 'bl', 'I1', f'{p}.nii.gz', 'CN', 'NC', 'train')
        for p in ('002_S_0295', '002S0295')
    ]
    options = PrepareOptions(save_registered=True)
    with pytest.raises(PrepareError, match='002_S_0295 and 002S0295 would both be sub-002S0295'):
        _registered_output(Plan('generic', scans), options, tmp_path)
    assert _registered_output(Plan('generic', scans[:1]), PrepareOptions(), tmp_path) is None
