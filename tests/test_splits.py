"""adni_timm.data.splits: every split by scan, stratified, reproducible; cross-validation
folds whose selection scans never include the fold they report."""

import json

import pytest

from adni_timm.data.splits import SplitError, check_folds, fold_split, make_folds

# 23 AD and 27 NC scans; ids of mixed widths so that sorting is by string, not insertion order
LABELS = {f'P{i}': int(i % 2 == 0 and i < 46) for i in range(50)}


def test_folds_partition_scans_stratified_and_disjoint():
    folds = make_folds(LABELS, k=5, seed=0)
    assert len(folds) == 5
    assert sorted(p for fold in folds for p in fold) == sorted(LABELS)  # every scan exactly once
    assert all(fold == sorted(fold) for fold in folds)
    for cls in (0, 1):
        per_fold = [sum(LABELS[p] == cls for p in fold) for fold in folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold


def test_folds_reproducible_for_a_seed_and_different_for_another():
    folds = make_folds(LABELS, k=5, seed=0)
    shuffled = dict(reversed(list(LABELS.items())))  # same scans, other dict order
    assert make_folds(shuffled, k=5, seed=0) == folds
    assert make_folds(LABELS, k=5, seed=1) != folds


@pytest.mark.parametrize(
    'k, match', [(1, 'k must be an integer >= 2'), (24, r'use --folds 23 or fewer')]
)
def test_make_folds_refuses_impossible_k(k, match):
    with pytest.raises(SplitError, match=match):
        make_folds(LABELS, k=k, seed=0)


@pytest.mark.parametrize('k', range(5))
def test_a_fold_selects_only_on_its_own_training_scans(k):
    folds = make_folds(LABELS, k=5, seed=3)
    split = fold_split(folds, k, LABELS, seed=3, select_by='inner', val_fraction=0.2)
    held_out, train, val = set(split['held_out']), set(split['train']), set(split['val'])
    assert split['held_out'] == folds[k]
    # the scans that choose the epoch, the weights and the temperature: never the reported fold
    assert not val & held_out and not train & held_out and not train & val
    assert train | val == set(LABELS) - held_out
    assert len(val) == pytest.approx(0.2 * (len(LABELS) - len(held_out)), abs=1)
    for cls in (0, 1):  # stratified
        assert sum(LABELS[p] == cls for p in val) >= 1
    assert (split['level'], split['fold'], split['folds'], split['select']) == (
        'scan',
        k,
        5,
        'inner',
    )
    json.dumps(split)
    # reproducible; each fold carves its own inner split
    assert fold_split(folds, k, LABELS, seed=3) == split


def test_a_fold_without_selection_trains_on_all_its_scans():
    folds = make_folds(LABELS, k=5, seed=3)
    split = fold_split(folds, 2, LABELS, seed=3, select_by='last')
    assert split['val'] == [] and set(split['train']) == set(LABELS) - set(folds[2])


def test_fold_split_refusals():
    folds = make_folds(LABELS, k=5, seed=3)
    with pytest.raises(SplitError, match='out of range'):
        fold_split(folds, 5, LABELS, seed=0)
    with pytest.raises(SplitError, match='cv_select'):
        fold_split(folds, 0, LABELS, seed=0, select_by='best')
    with pytest.raises(SplitError, match='--cv-select last'):
        fold_split(folds, 0, LABELS, seed=0, val_fraction=0)
    with pytest.raises(SplitError, match='in fold 0 and fold 1'):
        check_folds([['a', 'b'], ['b']])


def test_every_visit_of_a_subject_lands_on_one_side():
    # adni-prepare --visits all: one file-name scan id per visit, the subject in manifest.csv
    from adni_timm.data import Slice
    from adni_timm.data.splits import make_subject_folds, split_scans

    subjects, slices = {}, []
    for i in range(20):
        for visit in ('bl', 'm12', 'm24'):
            scan = f'{i:03d}_S_{i:04d}_{visit}'
            subjects[scan] = f'{i:03d}_S_{i:04d}'
            slices.append(Slice(f'{scan}_50.png', scan, i % 2, 50))
    split = split_scans(slices, 0.25, seed=0, subjects=subjects)
    assert split['grouped_by'] == 'subject (manifest.csv)'
    sides = {}
    for part in ('train', 'val'):
        for scan in split[part]:
            sides.setdefault(subjects[scan], set()).add(part)
    assert all(len(s) == 1 for s in sides.values()) and len(split['val']) == 15  # 5 subjects
    labels = {s.scan: s.label for s in slices}
    folds = make_subject_folds(labels, 4, seed=0, subjects=subjects)
    fold_of = {subjects[p]: k for k, fold in enumerate(folds) for p in fold}
    assert (
        all(fold_of[subjects[p]] == k for k, fold in enumerate(folds) for p in fold)
        and len(fold_of) == 20
    )
    inner = fold_split(folds, 0, labels, seed=0, val_fraction=0.3, subjects=subjects)
    inner_sides = {}
    for part in ('train', 'val', 'held_out'):
        for scan in inner[part]:
            inner_sides.setdefault(subjects[scan], set()).add(part)
    assert all(len(s) == 1 for s in inner_sides.values())
    # without a manifest the scan is the unit, as before
    assert split_scans(slices, 0.25, seed=0)['val'] != split['val']
