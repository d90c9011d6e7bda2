"""Repeat scans in the SYNTHETIC slice generator: several scans per subject, a subject map beside
them, and a plain set (one scan per subject) exactly as before."""

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adni_timm.data.note import describe
from adni_timm.synthetic import slices as synthetic

# generate(OUT, 1, 1, slices=3, seed=0) as the generator wrote it before repeat scans existed:
# (file, sum of its decoded pixels)
BEFORE = [
    ('test/AD/673264_57.jpeg', 4535676),
    ('test/AD/673264_58.jpeg', 4563401),
    ('test/AD/673264_59.jpeg', 4590612),
    ('test/NC/865559_61.jpeg', 4378563),
    ('test/NC/865559_62.jpeg', 4420857),
    ('test/NC/865559_63.jpeg', 4455115),
    ('train/AD/560022_61.jpeg', 4484197),
    ('train/AD/560022_62.jpeg', 4527578),
    ('train/AD/560022_63.jpeg', 4561969),
    ('train/NC/342808_62.jpeg', 4283580),
    ('train/NC/342808_63.jpeg', 4312488),
    ('train/NC/342808_64.jpeg', 4339897),
]


def _pixel_sums(root: Path):
    return [
        ('/'.join(p.parts[-3:]), int(np.asarray(Image.open(p), np.int64).sum()))
        for p in sorted(root.rglob('*.jpeg'))
    ]


def test_one_scan_per_subject_is_the_set_it_always_was(tmp_path):
    plain = synthetic.generate(tmp_path / 'a', 1, 1, slices=3, seed=0)
    once = synthetic.generate(tmp_path / 'b', 1, 1, slices=3, seed=0, scans_per_subject=1)
    found = _pixel_sums(once)
    assert [f for f, _ in found] == [f for f, _ in BEFORE]
    for (_, got), (_, want) in zip(found, BEFORE):  # JPEG decoders may differ by a grey level
        assert got == pytest.approx(want, rel=1e-4)
    for p in sorted(plain.rglob('*')):
        if p.is_file():
            assert p.read_bytes() == (once / p.relative_to(plain)).read_bytes()
    assert not (once / 'subjects.csv').exists()
    assert 'scans_per_subject' not in json.loads((once / 'dataset.json').read_text())['generator']


@pytest.fixture(scope='module')
def three(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('repeats') / 'AD_NC'
    return synthetic.generate(out, 2, 2, slices=4, seed=0, scans_per_subject=3, shared_subjects=0.5)


def _map(root: Path) -> dict[str, str]:
    with (root / 'subjects.csv').open(newline='') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['scan', 'subject']
    return {r['scan']: r['subject'] for r in rows}


def test_repeat_scans_have_their_own_ids_and_a_subject_map(three):
    subjects = _map(three)
    where = defaultdict(set)  # scan -> split/class
    for p in three.rglob('*.jpeg'):
        where[p.stem.split('_')[0]].add('/'.join(p.parts[-3:-1]))
    assert set(where) == set(subjects)  # every scan written is mapped, and only those
    assert all(len(v) == 1 for v in where.values())
    per_subject = defaultdict(list)
    for scan, subject in subjects.items():
        per_subject[subject].append(scan)
    assert len(per_subject) == 8 and all(len(v) == 3 for v in per_subject.values())
    for scans in per_subject.values():  # one class per subject
        assert len({next(iter(where[s])).split('/')[1] for s in scans}) == 1
    note = describe(three)
    assert note.subject_map == 'subjects.csv'
    assert note.generator['scans_per_subject'] == 3 and note.generator['shared_subjects'] == 0.5
    # half of each class's test subjects have their later scans in train
    shared = [
        v
        for v in per_subject.values()
        if {next(iter(where[s])).split('/')[0] for s in v} == {'train', 'test'}
    ]
    assert len(shared) == 2


def test_a_later_scan_is_the_same_head_in_another_session():
    """Closer to its own first scan than another subject's head is, but not a copy."""
    level = synthetic.difficulty_level('default')
    key, other = (0, 0, 1, 0), (0, 0, 1, 1)
    first = synthetic._subject_head(key, level.severity['AD'], 'default')
    later = synthetic._subject_head(key, level.severity['AD'], 'default', visit=1)
    stranger = synthetic._subject_head(other, level.severity['AD'], 'default')
    index = 64
    a, b, c = (h.render(index).astype(np.float64) for h in (first, later, stranger))
    assert later.a > first.a  # progression
    assert (later.cx, later.cy, later.phi) != (first.cx, first.cy, first.phi)
    assert not np.array_equal(a, b)
    assert np.abs(a - b).mean() > 1  # another pose and noise
    assert abs(later.sulcus_theta - first.sulcus_theta).max() < 1e-12  # the same folds


def test_atrophy_masks_cover_every_slice_of_a_repeat_set(three):
    args = describe(three).generator
    masks = synthetic.atrophy_masks(**{**args, 'splits': ('train', 'test')})
    files = {'/'.join(p.parts[-3:]) for p in three.rglob('*.jpeg')}
    assert set(masks) == files


def test_class_windows_give_the_class(tmp_path):
    root = synthetic.generate(tmp_path / 'w', 4, 2, slices=2, seed=1, class_windows=True)
    firsts = defaultdict(set)
    for p in root.rglob('*.jpeg'):
        firsts[p.parts[-2]].add(int(p.stem.split('_')[1]))
    assert max(firsts['NC']) < min(firsts['AD'])


def test_cli_repeat_scans_and_refusals(tmp_path, capsys):
    from adni_timm.cli.synthetic import main

    out = tmp_path / 's'
    code = main(
        [
            str(out),
            '--train-subjects',
            '1',
            '--test-subjects',
            '1',
            '--slices',
            '2',
            '--scans-per-subject',
            '2',
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert '8 scans of 4 subjects' in text and 'subjects.csv' in text
    assert len(_map(out)) == 8
    code = main(
        [
            str(tmp_path / 't'),
            '--train-subjects',
            '1',
            '--test-subjects',
            '1',
            '--shared-subjects',
            '0.5',
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and 'scans-per-subject' in err and 'Traceback' not in err
