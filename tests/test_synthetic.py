"""The SYNTHETIC ADNI-layout generator: layout, file format, determinism, and measurable atrophy."""

import hashlib
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adni_timm.synthetic import slices as synthetic
from adni_timm.data.note import describe
from adni_timm.cli.synthetic import main as synthetic_cli
from adni_timm.synthetic.slices import (
    HEIGHT,
    WIDTH,
    SyntheticError,
    demo_dataset,
    generate,
    render_scan,
)

TRAIN, TEST, SLICES = 3, 2, 4
NAME = re.compile(r'^(\d{6})_(\d+)\.jpeg$')


@pytest.fixture(scope='module')
def synth(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp('synth') / 'AD_NC', TRAIN, TEST, slices=SLICES, seed=0)


def _files(root: Path) -> list[Path]:
    """The images of a generated set (its dataset.json note aside)."""
    return sorted(p for p in root.rglob('*.jpeg') if p.is_file())


def _scans(folder: Path) -> dict[str, list[int]]:
    """{scan id: its slice indices} of one class folder."""
    found = defaultdict(list)
    for f in folder.iterdir():
        m = NAME.match(f.name)
        assert m, f'bad file name {f.name}'
        found[m[1]].append(int(m[2]))
    return found


def test_layout_and_counts(synth):
    assert sorted(p.name for p in synth.iterdir()) == ['dataset.json', 'test', 'train']
    # what the set is, for the run record, the card and the demo: synthetic, never ADNI
    note = describe(synth)
    assert note.synthetic and 'NOT real MRI' in note.note
    for split, n in (('train', TRAIN), ('test', TEST)):
        assert sorted(p.name for p in (synth / split).iterdir()) == ['AD', 'NC']
        for name in ('AD', 'NC'):
            scans = _scans(synth / split / name)
            assert len(scans) == n  # one scan per subject
            for indices in scans.values():  # consecutive axial slices per scan
                assert sorted(indices) == list(range(min(indices), min(indices) + SLICES))
                assert 40 <= min(indices) <= 80


def test_scan_ids_unique_across_splits_and_classes(synth):
    ids = [
        scan
        for split in ('train', 'test')
        for name in ('AD', 'NC')
        for scan in _scans(synth / split / name)
    ]
    assert len(ids) == 2 * (TRAIN + TEST)
    assert len(set(ids)) == len(ids)


def test_files_are_256x240_grayscale_jpegs_marked_synthetic(synth):
    for f in _files(synth)[:6]:
        with Image.open(f) as im:
            assert im.format == 'JPEG'
            assert im.mode == 'L'
            assert im.size == (WIDTH, HEIGHT) == (256, 240)
            assert b'SYNTHETIC' in im.info['comment']


def test_deterministic_for_a_seed(synth, tmp_path):
    again = generate(tmp_path / 'again', TRAIN, TEST, slices=SLICES, seed=0)
    ours, theirs = _files(synth), _files(again)
    assert [p.relative_to(synth) for p in ours] == [p.relative_to(again) for p in theirs]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs))
    other = generate(tmp_path / 'other', TRAIN, TEST, slices=SLICES, seed=1)
    assert {p.name for p in _files(other)} != {p.name for p in ours}


def test_slices_of_a_scan_differ_but_resemble_each_other():
    _, images = render_scan(3, 0.5, slices=3)
    a, b = images[0].astype(float), images[1].astype(float)
    assert np.abs(a - b).mean() > 0.5  # not the same picture
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8  # but the same head


def _ventricle_csf(images: np.ndarray) -> float:
    """Fraction of dark (CSF) pixels in the central region where the ventricles sit."""
    centre = images[:, HEIGHT // 2 - 40 : HEIGHT // 2 + 40, WIDTH // 2 - 25 : WIDTH // 2 + 25]
    return float((centre < 60).mean())


def _cortex_csf(images: np.ndarray) -> float:
    """Fraction of dark pixels inside the head outside
    the central region: sulci and widened CSF spaces.
    """
    head = images > 30
    ring = head.copy()
    ring[:, HEIGHT // 2 - 60 : HEIGHT // 2 + 60, WIDTH // 2 - 50 : WIDTH // 2 + 50] = False
    return float(((images < 60) & ring).sum() / ring.sum())


@pytest.mark.parametrize('seed', range(4))
def test_atrophy_enlarges_ventricles_and_sulci(seed):
    _, healthy = render_scan(seed, 0.1, slices=4)
    _, atrophic = render_scan(seed, 0.9, slices=4)
    assert _ventricle_csf(atrophic) > 1.5 * _ventricle_csf(healthy)
    assert _cortex_csf(atrophic) > _cortex_csf(healthy)


def test_ad_scans_have_larger_ventricles_on_average(synth):
    def mean_csf(folder):
        return np.mean(
            [_ventricle_csf(np.asarray(Image.open(f))[None]) for f in sorted(folder.iterdir())]
        )

    for split in ('train', 'test'):
        assert mean_csf(synth / split / 'AD') > mean_csf(synth / split / 'NC')


def test_more_classes(tmp_path):
    out = generate(tmp_path / 'three', 1, 1, slices=1, classes=('NC', 'MCI', 'AD'))
    assert sorted(p.name for p in (out / 'train').iterdir()) == ['AD', 'MCI', 'NC']


def test_refuses_to_mix_into_a_used_folder(synth):
    with pytest.raises(SyntheticError, match='already holds files'):
        generate(synth, 1, 1, slices=1)


def test_bad_arguments(tmp_path):
    with pytest.raises(SyntheticError, match='unknown difficulty'):
        generate(tmp_path / 'x', 1, 1, difficulty='easy')
    with pytest.raises(SyntheticError, match='knows classes'):
        generate(tmp_path / 'x', 1, 1, classes=('NC', 'FTD'))
    with pytest.raises(SyntheticError, match='repeat NC: give each class once'):
        generate(tmp_path / 'x', 1, 1, classes=('NC', 'AD', 'NC'))
    with pytest.raises(SyntheticError, match='no classes given'):
        generate(tmp_path / 'x', 1, 1, classes=())
    assert not (tmp_path / 'x').exists()  # refused before anything was written


def test_cli_refuses_a_repeated_class_in_one_line(tmp_path, capsys):
    # NC,NC once wrote every subject into NC/ and printed "4 patients": a one-class set
    slices_args = ['--train-subjects', '1', '--test-subjects', '1', '--slices', '1']
    for i, extra in enumerate((slices_args, ['--volumes', '--subjects', '1'])):
        out = tmp_path / f'repeat{i}'
        assert synthetic_cli([str(out), '--classes', 'NC,NC', *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and 'repeat NC: give each class once' in err[0], err
        assert not out.exists()
    # one class stays allowed (a set of controls for adni-prepare)
    assert synthetic_cli([str(tmp_path / 'one'), '--classes', 'NC', *slices_args]) == 0
    assert sorted(p.name for p in (tmp_path / 'one' / 'train').iterdir()) == ['NC']


def test_cli(tmp_path, capsys):
    assert (
        synthetic_cli(
            [
                str(tmp_path / 'cli'),
                '--train-subjects',
                '1',
                '--test-subjects',
                '1',
                '--slices',
                '2',
                '--difficulty',
                'demo',
            ]
        )
        == 0
    )
    assert len(_files(tmp_path / 'cli')) == 2 * 2 * 2
    assert 'SYNTHETIC' in capsys.readouterr().out
    assert (
        synthetic_cli([str(tmp_path / 'cli'), '--train-subjects', '1', '--test-subjects', '1']) == 2
    )
    assert 'already holds files' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        synthetic_cli(['--help'])
    assert e.value.code == 0
    assert 'SYNTHETIC' in capsys.readouterr().out


def test_demo_dataset_is_generated_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(
        synthetic,
        'DEMO_PARAMS',
        dict(train_subjects=1, test_subjects=1, slices=2, seed=0, difficulty='demo'),
    )
    monkeypatch.setenv('ADNI_TIMM_CACHE', str(tmp_path / 'cache'))
    first = demo_dataset()
    assert first.parent == tmp_path / 'cache'
    assert f'v{synthetic.GENERATOR_VERSION}' in first.name and 'demo' in first.name
    assert len(_files(first)) == 2 * 2 * 2
    # no temp folder left behind
    assert [p.name for p in (tmp_path / 'cache').iterdir()] == [first.name]

    def fail(*args, **kwargs):
        raise AssertionError('generated twice')

    monkeypatch.setattr(synthetic, 'generate', fail)
    assert demo_dataset() == first
    assert demo_dataset(cache_root=tmp_path / 'cache') == first


def test_demo_cache_folder_keeps_the_name_of_0_2(tmp_path, monkeypatch):
    """A demo set cached by 0.2 (before its counts were named subjects) is found and reused, and
    the note written beside it records the generator's arguments under the keys 0.2 wrote."""
    name = f'synthetic-demo-v{synthetic.GENERATOR_VERSION}-demo-24x16x12-seed0'
    (tmp_path / name).mkdir()  # cached without a note, as the earliest versions left it

    def fail(*args, **kwargs):
        raise AssertionError('the cached demo set was not found: generated again')

    monkeypatch.setattr(synthetic, 'generate', fail)
    assert demo_dataset(cache_root=tmp_path) == tmp_path / name
    generator = describe(tmp_path / name).generator
    assert generator == {
        'train_patients': 24,
        'test_patients': 16,
        'slices': 12,
        'seed': 0,
        'difficulty': 'demo',
        'classes': ['NC', 'AD'],
    }
    assert synthetic.recorded_arguments(generator) == {
        **synthetic.DEMO_PARAMS,
        'classes': ['NC', 'AD'],
    }


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob('*'))
        if p.is_file()
    }


def test_old_keyword_names_give_the_same_set(tmp_path):
    """train_patients= / test_patients= (0.2's names) still work, for one release, and write the
    very set train_subjects= / test_subjects= write (dataset.json included)."""
    new = generate(tmp_path / 'new', train_subjects=2, test_subjects=1, slices=2, difficulty='demo')
    with pytest.warns(DeprecationWarning, match='old name of train_subjects='):
        old = generate(
            tmp_path / 'old', train_patients=2, test_patients=1, slices=2, difficulty='demo'
        )
    digests = _digests(new)
    assert len(digests) == (2 + 1) * 2 * 2 + 1  # the slices and dataset.json
    assert _digests(old) == digests
    # dataset.json's record gives atrophy_masks the arguments of the set it describes
    recorded = synthetic.recorded_arguments(describe(new).generator)
    assert recorded['train_subjects'] == 2 and recorded['test_subjects'] == 1
    masks = synthetic.atrophy_masks(**recorded, splits=('train', 'test'))
    assert set(masks) == {'/'.join(f.parts[-3:]) for f in _files(new)}
    with pytest.warns(DeprecationWarning, match='old name of test_subjects='):
        old_masks = synthetic.atrophy_masks(
            2, test_patients=1, slices=2, difficulty='demo', splits=('train', 'test')
        )
    assert set(old_masks) == set(masks)
    assert all(np.array_equal(old_masks[k], masks[k]) for k in masks)


def test_old_and_new_keyword_names_together_are_refused(tmp_path):
    both = re.escape(
        'got both train_subjects and train_patients (its old name): give only train_subjects='
    )
    with pytest.raises(TypeError, match=both):
        generate(tmp_path / 'x', train_subjects=1, test_subjects=1, train_patients=1)
    with pytest.raises(TypeError, match=both):  # the new name given by position
        generate(tmp_path / 'x', 1, 1, train_patients=1)
    with pytest.raises(TypeError, match='got both test_subjects and test_patients'):
        synthetic.atrophy_masks(1, test_subjects=1, test_patients=1)
    assert not (tmp_path / 'x').exists()


def test_old_function_names_stay():
    assert synthetic.render_patient is synthetic.render_scan
    assert synthetic.patient_atrophy_masks is synthetic.scan_atrophy_masks
    names = {'render_scan', 'render_patient', 'scan_atrophy_masks', 'patient_atrophy_masks'}
    assert names <= set(synthetic.__all__)


def test_parallel_generation_writes_identical_files(tmp_path):
    from adni_timm.synthetic.slices import generate

    generate(tmp_path / 'one', 2, 1, slices=3, seed=5, workers=1)
    generate(tmp_path / 'two', 2, 1, slices=3, seed=5, workers=2)
    files_one = sorted(p.relative_to(tmp_path / 'one') for p in (tmp_path / 'one').rglob('*.jpeg'))
    files_two = sorted(p.relative_to(tmp_path / 'two') for p in (tmp_path / 'two').rglob('*.jpeg'))
    assert files_one == files_two and len(files_one) == (2 + 1) * 2 * 3
    assert all(
        (tmp_path / 'one' / f).read_bytes() == (tmp_path / 'two' / f).read_bytes()
        for f in files_one
    )


# ------------------------------------------------------- where atrophy was drawn (Grad-CAM truth)


def test_atrophy_masks_cover_every_written_slice_and_sit_on_the_dark_csf(synth):
    masks = synthetic.atrophy_masks(TRAIN, TEST, slices=SLICES, seed=0, splits=('train', 'test'))
    written = {'/'.join(f.parts[-3:]) for f in _files(synth)}
    assert set(masks) == written  # keyed like adni_timm.data.slice_key
    ventricles = synthetic.atrophy_masks(
        TRAIN, TEST, slices=SLICES, seed=0, regions=('ventricles',)
    )
    for key, mask in ventricles.items():
        image = np.asarray(Image.open(synth / key))
        assert mask.shape == image.shape == (HEIGHT, WIDTH) and mask.dtype == bool
        brain = image > 60  # tissue, not background or CSF
        # the masks land on the image's own ventricles: CSF, much darker than the tissue around
        assert image[mask].mean() < 0.5 * image[brain].mean(), key
    with pytest.raises(SyntheticError, match='unknown atrophy region'):
        synthetic.atrophy_masks(1, 1, regions=('hippocampus',))


def test_ad_scans_have_larger_atrophy_regions_and_masks_leave_images_unchanged():
    areas = {}
    for name, severity in (('NC', 0.1), ('AD', 0.9)):
        first, images = render_scan(7, severity, slices=20, difficulty='demo')
        first_m, masks = synthetic.scan_atrophy_masks(7, severity, slices=20, difficulty='demo')
        assert first_m == first and set(masks) == set(synthetic.REGIONS)
        assert all(m.shape == images.shape and m.dtype == bool for m in masks.values())
        areas[name] = {region: m.mean() for region, m in masks.items()}
        # the masks use no random numbers: rendering after computing them gives the same pixels
        np.testing.assert_array_equal(render_scan(7, severity, 20, 'demo')[1], images)
        # the medial temporal lobes show only in the lower slices of the slab
        assert masks['medial_temporal'][0].any() and not masks['medial_temporal'][-1].any()
    for region in ('ventricles', 'sulci'):
        assert areas['AD'][region] > 1.5 * areas['NC'][region], (region, areas)
    assert areas['AD']['cortex'] < areas['NC']['cortex']  # a thinner ribbon
