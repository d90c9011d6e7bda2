"""The content audit (adni_timm.data.audit), measured where the truth is known: the synthetic
generator's repeat scans (subjects.csv says whose head each scan is)."""

import csv
import itertools
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from adni_timm.data import audit
from adni_timm.data.slices import scan_split
from adni_timm.synthetic.slices import generate

pytestmark = pytest.mark.slow  # about a minute on the 2-core VM (generating 800 slices)

PER_CLASS = 10  # subjects per split and class: 40 heads, two scans each


@pytest.fixture(scope='module')
def repeats(tmp_path_factory) -> Path:
    """40 SYNTHETIC subjects x 2 scans x 10 slices; half of each class's test subjects have their
    second scan in train (as AD_NC's official split shares subjects)."""
    out = tmp_path_factory.mktemp('audit') / 'AD_NC'
    return generate(
        out, PER_CLASS, PER_CLASS, slices=10, seed=0, scans_per_subject=2, shared_subjects=0.5
    )


def _subjects(root: Path) -> dict[str, str]:
    with (root / 'subjects.csv').open(newline='') as f:
        return {r['scan']: r['subject'] for r in csv.DictReader(f)}


def _audit(root: Path) -> audit.AuditReport:
    return audit.audit_slices({s: scan_split(root, s) for s in ('train', 'test')})


@pytest.fixture(scope='module')
def report(repeats) -> audit.AuditReport:
    return _audit(repeats)


def test_audit_finds_repeat_scans_and_pairs_no_two_different_heads(repeats, report):
    subjects = _subjects(repeats)
    assert len(set(subjects.values())) == 4 * PER_CLASS
    truth = set()
    by_subject = defaultdict(list)
    for scan, subject in subjects.items():
        by_subject[subject].append(scan)
    for scans in by_subject.values():
        truth |= {tuple(sorted(p)) for p in itertools.combinations(scans, 2)}
    found = {tuple(sorted((p.scan_a, p.scan_b))) for p in report.of_kind('same_subject')}
    assert found <= truth, f'different heads paired: {sorted(found - truth)}'  # precision 1
    recall = len(found & truth) / len(truth)
    assert recall >= 0.9, f'recall {recall:.2f}'
    assert report.threshold is not None and report.threshold.value > report.threshold.median
    assert not report.of_kind('duplicate')  # a later scan is another image, never a copy
    # the groups it builds never join two heads
    groups = audit.subject_groups(report.pairs, subjects)
    for group in set(groups.values()):
        assert len({subjects[s] for s, g in groups.items() if g == group}) == 1


def test_audit_counts_test_scans_that_share_a_subject_with_train(repeats, report):
    subjects = _subjects(repeats)
    test = {s.scan for s in scan_split(repeats, 'test')}
    train_subjects = {subjects[s.scan] for s in scan_split(repeats, 'train')}
    truth = sorted(s for s in test if subjects[s] in train_subjects)
    assert len(truth) == 2 * PER_CLASS // 2  # half of each class's test subjects
    assert set(report.test_scans_sharing()) <= set(truth)
    assert len(report.test_scans_sharing()) >= 0.9 * len(truth)
    text = '\n'.join(report.lines())
    assert f'{len(report.test_scans_sharing())} test scans probably share a subject' in text
    assert 'score threshold' in text and 'not validated on real MRI' in text


def test_duplicates_are_found_exactly(repeats, tmp_path):
    """An identical copy, a brighter re-encoded copy and a re-encoded whole scan, renamed into
    other scans and splits: each found, nothing else."""
    root = tmp_path / 'AD_NC'
    shutil.copytree(repeats, root)
    ad = sorted((root / 'train' / 'AD').glob('*.jpeg'))
    exact, bright = ad[3], ad[25]
    shutil.copy(exact, root / 'test' / 'AD' / f'900001_{exact.stem.split("_")[1]}.jpeg')
    with Image.open(bright) as im:
        ImageEnhance.Brightness(im.convert('L')).enhance(1.08).save(
            root / 'test' / 'AD' / f'900002_{bright.stem.split("_")[1]}.jpeg', quality=80
        )
    whole = ad[50].stem.split('_')[0]
    for f in sorted((root / 'train' / 'AD').glob(f'{whole}_*.jpeg')):
        with Image.open(f) as im:
            im.save(root / 'train' / 'AD' / f'900003_{f.stem.split("_")[1]}.jpeg', quality=70)
    ad_only = {s: [x for x in scan_split(root, s) if x.label == 1] for s in ('train', 'test')}
    found = audit.audit_slices(ad_only).of_kind('duplicate')
    pairs = {frozenset((p.scan_a, p.scan_b)): p for p in found}
    assert set(pairs) == {
        frozenset(('900001', exact.stem.split('_')[0])),
        frozenset(('900002', bright.stem.split('_')[0])),
        frozenset(('900003', whole)),
    }
    assert pairs[frozenset(('900001', exact.stem.split('_')[0]))].score == pytest.approx(1.0)
    for p in found:
        assert p.score >= audit.DUPLICATE_CORRELATION


def test_audit_csv_columns_and_subject_groups(report, repeats, tmp_path):
    path = audit.write_audit_csv(report, tmp_path / 'audit.csv')
    with path.open(newline='') as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ('kind', 'scan_a', 'split_a', 'scan_b', 'split_b', 'score')
    assert {r['kind'] for r in rows} == {'same_subject'}
    assert {r['split_a'] for r in rows} | {r['split_b'] for r in rows} <= {'train', 'test'}
    back = audit.read_audit_csv(path)
    assert [(p.scan_a, p.scan_b) for p in back] == [(p.scan_a, p.scan_b) for p in report.pairs]
    subjects = _subjects(repeats)
    groups = audit.subject_groups(back, subjects)
    assert set(groups) == set(subjects)
    assert len(set(groups.values())) >= 4 * PER_CLASS  # never fewer groups than heads
    (tmp_path / 'bad.csv').write_text('scan,subject\n1,2\n')
    with pytest.raises(ValueError, match='not an audit CSV'):
        audit.read_audit_csv(tmp_path / 'bad.csv')


def test_subjects_from_audit_keeps_each_estimated_subject_on_one_side(report, repeats, tmp_path):
    from types import SimpleNamespace

    from adni_timm.data.splits import split_scans, subjects_for

    path = audit.write_audit_csv(report, tmp_path / 'audit.csv')
    subjects, source = subjects_for(SimpleNamespace(subjects_from_audit=str(path)), repeats)
    assert 'audit' in source and len(subjects) >= 2 * len(report.of_kind('same_subject')) // 2
    train = scan_split(repeats, 'train')
    for seed in range(3):
        split = split_scans(train, 0.4, seed, subjects, source)
        assert split['grouped_by'] == source
        val = set(split['val'])
        groups = defaultdict(set)
        for scan in split['train'] + split['val']:
            groups[subjects.get(scan, scan)].add(scan in val)
        assert all(len(sides) == 1 for sides in groups.values())
        # the generator's subjects too (the audit found every pair inside train here)
        truth = _subjects(repeats)
        sides = defaultdict(set)
        for scan in split['train'] + split['val']:
            sides[truth[scan]].add(scan in val)
        assert all(len(s) == 1 for s in sides.values())


def test_train_refuses_a_file_that_is_not_an_audit_csv(tmp_path, capsys):
    from adni_timm.cli.train import main

    bad = tmp_path / 'map.csv'
    bad.write_text('scan,subject\n1,a\n')
    with pytest.raises(SystemExit) as e:
        main(['--data-dir', str(tmp_path), '--subjects-from-audit', str(bad)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'not an audit CSV' in err and 'Traceback' not in err
