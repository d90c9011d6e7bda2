"""Subject maps (issue 26): scans grouped into people, splits that keep a person on one side, the
train/test subject overlap found and refused, the subject re-split, the subject level of
metrics.json, and files written when a scan was called a patient still loading."""

import csv
import json

import numpy as np
import pytest

from adni_timm import cli, metrics
from adni_timm.config import make_config
from adni_timm.data import scan_split, splits
from adni_timm.data.subjects import SubjectMapError, find_subject_map, read_subject_map

# the fixture's people, by hand: (class, subject, [(split, index of the scan in that split/class)])
# two subjects (0002, 0008) have scans in train AND test: "2 of 5 test subjects also in train"
PEOPLE = [
    ('AD', '002_S_0001', [('train', 0), ('train', 1)]),
    ('AD', '002_S_0002', [('train', 2), ('test', 0)]),
    ('AD', '013_S_0003', [('train', 3)]),
    ('AD', '013_S_0004', [('train', 4)]),
    ('AD', '013_S_0005', [('train', 5)]),
    ('AD', '013_S_0006', [('test', 1), ('test', 2)]),
    ('NC', '005_S_0007', [('train', 0), ('train', 1), ('train', 2)]),
    ('NC', '005_S_0008', [('train', 3), ('test', 0)]),
    ('NC', '127_S_0009', [('train', 4)]),
    ('NC', '127_S_0010', [('train', 5)]),
    ('NC', '127_S_0011', [('test', 1)]),
    ('NC', '127_S_0012', [('test', 2)]),
]
COURSE_LABEL = {'NC': 0, 'AD': 2}
ADNI_GROUP = {'NC': 'CN', 'AD': 'AD'}


@pytest.fixture(scope='module')
def people(tmp_path_factory):
    """(DATA_DIR, {scan: subject}, {scan: class}): SYNTHETIC, 6 train + 3 test scans per class,
    2 slices each, grouped into the 12 subjects of PEOPLE (read-only)."""
    from adni_timm.synthetic.slices import generate

    data_dir = tmp_path_factory.mktemp('people') / 'AD_NC'
    generate(data_dir, 6, 3, 2, 0)  # train and test scans per class, slices per scan, seed
    scans = {
        (split, name): sorted(
            {p.stem.rsplit('_', 1)[0] for p in (data_dir / split / name).iterdir()}
        )
        for split in ('train', 'test')
        for name in ('NC', 'AD')
    }
    subject_of, class_of = {}, {}
    for name, subject, where in PEOPLE:
        for split, i in where:
            scan = scans[(split, name)][i]
            subject_of[scan], class_of[scan] = subject, name
    assert len(subject_of) == 18  # every scan of the set has its subject
    return data_dir, subject_of, class_of


def _course_record(scan: str, subject: str, name: str) -> dict:
    """A record as the course's meta_data_with_label.json holds it."""
    raw = f'/home/groups/comp3710/ADNI/{subject}/MPRAGE/2006-05-17/I{scan}'
    return {
        'label': COURSE_LABEL[name],
        'raw': f'{raw}/ADNI_{subject}_MR_MPRAGE_br_raw_20060517_S15077_I{scan}.nii',
        'masked': f'/masked/ADNI_{subject}_MR_MPRAGE_I{scan}_masked_brain.nii.gz',
        'c1': f'/seg/c1ADNI_{subject}_MR_MPRAGE_I{scan}.nii',
        'c3': f'/seg/c3ADNI_{subject}_MR_MPRAGE_I{scan}.nii',
    }


def write_maps(folder, subject_of, class_of) -> dict:
    """The course JSON and its two CSV twins (ADNI collection, scan,subject) of one grouping."""
    folder.mkdir(parents=True, exist_ok=True)
    course = {s: _course_record(s, subject_of[s], class_of[s]) for s in subject_of}
    paths = {'json': folder / 'meta_data_with_label.json', 'adni': folder / 'collection.csv'}
    paths['json'].write_text(json.dumps(course, indent=1))
    with paths['adni'].open('w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['Image Data ID', 'Subject', 'Group', 'Sex', 'Age', 'Visit', 'Modality'])
        for s in subject_of:  # IDA spells image ids with an I: I218391 matches scan 218391
            w.writerow([f'I{s}', subject_of[s], ADNI_GROUP[class_of[s]], 'F', 75, 'sc', 'MRI'])
    paths['plain'] = folder / 'subjects.csv'
    paths['plain'].write_text(
        'scan,subject\n' + ''.join(f'{s},{subject_of[s]}\n' for s in subject_of)
    )
    return paths


def test_a_course_json_and_its_csv_twins_map_every_scan_to_its_subject(people, tmp_path):
    data_dir, subject_of, class_of = people
    paths = write_maps(tmp_path, subject_of, class_of)
    slices = [*scan_split(data_dir, 'train'), *scan_split(data_dir, 'test')]
    for kind, path in paths.items():
        smap = read_subject_map(path)
        assert smap.for_slices(slices, ('NC', 'AD')) == subject_of, kind
    course = read_subject_map(paths['json'])
    assert course.kind == 'course-json' and read_subject_map(paths['adni']).kind == 'adni-csv'
    some = next(iter(subject_of))
    assert course.subject(f'I{some}') == course.subject(some) == subject_of[some]
    assert course.class_of(some) == class_of[some]  # label 0 -> NC, 2 -> AD
    # scans per subject as the fixture made them: 1 to 3
    per_subject = sorted(np.unique(list(subject_of.values()), return_counts=True)[1].tolist())
    assert per_subject == [1] * 7 + [2] * 4 + [3]


def test_a_record_whose_paths_name_two_subjects_is_one_error_naming_the_scan(tmp_path):
    record = _course_record('218391', '002_S_0295', 'AD')
    record['c1'] = '/seg/c1ADNI_941_S_1195_MR_MPRAGE_I218391.nii'
    path = tmp_path / 'meta.json'
    path.write_text(
        json.dumps({'218391': record, '218392': _course_record('218392', '002_S_0295', 'AD')})
    )
    with pytest.raises(SubjectMapError) as e:
        read_subject_map(path)
    assert '218391 (002_S_0295, 941_S_1195)' in str(e.value) and '218392' not in str(e.value)
    assert '\n' not in str(e.value)


def _check(capsys, *argv) -> tuple[int, str]:
    from adni_timm.cli.check import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


def test_unmapped_and_mislabelled_scans_are_one_line_and_exit_1(people, tmp_path, capsys):
    data_dir, subject_of, class_of = people
    scans = sorted(subject_of)
    missing, flipped = scans[0], scans[1]
    partial = {s: v for s, v in subject_of.items() if s != missing}
    wrong = dict(class_of, **{flipped: 'NC' if class_of[flipped] == 'AD' else 'AD'})
    paths = write_maps(tmp_path, partial, wrong)
    code, out = _check(capsys, data_dir, '--subjects', paths['json'], '--workers', 1)
    assert code == cli.EXIT_PROBLEM
    [line] = [x for x in out.splitlines() if 'subject map:' in x]
    assert f'1 of 18 scans are not in {paths["json"]} ({missing})' in line
    assert "1 scan(s) sit in a class folder other than the map's label" in line
    assert f'{flipped} ({class_of[flipped]} folder, ' in line
    # train.py stops on the same map before any work: one line, exit 1
    from helpers import train_in_process

    code, _, err = train_in_process(
        capsys,
        '--data-dir',
        data_dir,
        '--output-dir',
        tmp_path / 'run',
        '--subjects',
        paths['plain'],
        '--allow-subject-overlap',
        '--epochs',
        '1',
    )
    assert code == cli.EXIT_PROBLEM and len(err.strip().splitlines()) == 1
    assert err.startswith('adni-train: error: subject map: 1 of 18 scans are not in')
    assert not (tmp_path / 'run').exists()


def test_the_train_test_subject_overlap_is_counted_and_refused(people, tmp_path, capsys):
    data_dir, subject_of, class_of = people
    paths = write_maps(tmp_path, subject_of, class_of)
    code, out = _check(capsys, data_dir, '--subjects', paths['adni'], '--workers', 1)
    assert code == cli.EXIT_PROBLEM
    assert 'train/test: 2 of 5 test subjects also in train' in out
    assert 'e.g. 002_S_0002, 005_S_0008' in out
    rows = [x.split() for x in out.splitlines() if x.startswith(('train ', 'test '))]
    # the second table counts subjects and scans per split and class: train AD 5 subjects, 6 scans
    assert ['train', 'AD', '5', '6', '1/1/2'] in rows and [
        'test',
        'AD',
        '2',
        '3',
        '1/1.5/2',
    ] in rows
    from helpers import train_in_process

    code, _, err = train_in_process(
        capsys,
        '--data-dir',
        data_dir,
        '--output-dir',
        tmp_path / 'run',
        '--subjects',
        paths['json'],
    )
    assert code == cli.EXIT_PROBLEM and len(err.strip().splitlines()) == 1
    assert '2 of 5 test subjects also in train' in err
    assert '--resplit-test' in err and '--allow-subject-overlap' in err
    # a map with no overlap: no problem
    test_scans = sorted(_test_scans(data_dir))
    alone = {
        s: f'999_S_{test_scans.index(s):04d}' if s in test_scans else v
        for s, v in subject_of.items()
    }
    ok = write_maps(tmp_path / 'ok', alone, class_of)
    code, out = _check(capsys, data_dir, '--subjects', ok['plain'], '--workers', 1)
    assert code == cli.EXIT_OK and 'train/test: 0 of' in out


def _test_scans(data_dir) -> set[str]:
    return {s.scan for s in scan_split(data_dir, 'test')}


def _subjects(slices, subject_of) -> set[str]:
    return {subject_of[s.scan] for s in slices}


@pytest.mark.parametrize('seed', [0, 1])
def test_the_resplit_keeps_every_subject_on_one_side(people, tmp_path, seed):
    fraction = 0.3
    data_dir, subject_of, class_of = people
    paths = write_maps(tmp_path, subject_of, class_of)
    cfg = make_config(
        {
            'seed': seed,
            'subjects': str(paths['json']),
            'resplit_test': fraction,
            'val_fraction': 0.34,
            'num_workers': 0,
        }
    )
    got = splits.load_splits(cfg, data_dir)
    train, val, test = (_subjects(p, subject_of) for p in (got.train, got.val, got.test))
    assert train and val and test
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(got.train) + len(got.val) + len(got.test) == 36  # every slice of the pool, once
    assert got.split['test_from'] == 'resplit' and got.split['resplit_test'] == fraction
    assert got.split['test'] == sorted({s.scan for s in got.test})
    assert got.split['subjects'] == {
        'train': sorted(train),
        'val': sorted(val),
        'test': sorted(test),
    }
    # the folders' test/ is not the test set: some of its scans train now
    assert {s.scan for s in got.train} & _test_scans(data_dir)
    # seeded: the same again; resume reads the recorded test set
    again = splits.load_splits(cfg, data_dir, recorded=got.split)
    assert [s.path for s in again.test] == [s.path for s in got.test]
    # folds, inner validation and the refit's pool, on the re-split training scans
    checked = splits.check_data(cfg, data_dir)
    labels = splits.scan_labels(checked.train)
    folds = splits.make_subject_folds(labels, 2, seed, checked.subjects)
    fold_subjects = [{subject_of[p] for p in fold} for fold in folds]
    assert not (fold_subjects[0] & fold_subjects[1])
    for k in range(2):
        part = splits.fold_split(
            folds, k, labels, seed=seed, val_fraction=0.5, subjects=checked.subjects
        )
        sides = [{subject_of[p] for p in part[key]} for key in ('train', 'val', 'held_out')]
        assert all(sides) and not (sides[0] & sides[1]) and not (sides[0] & sides[2])
        assert not (sides[1] & sides[2])
    refit_pool = {subject_of[s.scan] for s in checked.train}  # the refit trains on all of these
    assert not refit_pool & {subject_of[s.scan] for s in checked.test}


def test_a_missing_map_file_is_a_usage_error(tiny_data, tmp_path, capsys):
    from helpers import train_in_process

    with pytest.raises(SystemExit) as e:
        _check(capsys, tiny_data, '--subjects', tmp_path / 'nope.json')
    assert e.value.code == cli.EXIT_REFUSED
    with pytest.raises(SystemExit) as e:
        train_in_process(
            capsys,
            '--data-dir',
            tiny_data,
            '--output-dir',
            tmp_path / 'run',
            '--subjects',
            tmp_path / 'nope.json',
        )
    assert e.value.code == cli.EXIT_REFUSED and 'nope.json: no such file' in capsys.readouterr().err


def test_resplit_without_a_map_is_refused(tiny_data):
    cfg = make_config({'resplit_test': 0.2, 'num_workers': 0})
    with pytest.raises(splits.SplitError, match='needs a subject map'):
        splits.check_data(cfg, tiny_data)


def test_subject_level_means_scan_means_and_the_bootstrap_resamples_subjects():
    # subject A: scans a1 (2 slices) and a2 (1 slice); B: b1; C and D one scan each
    scans = ['a1', 'a1', 'a2', 'b1', 'c1', 'd1']
    y = [1, 1, 1, 1, 0, 0]
    p = [0.9, 0.7, 0.2, 0.6, 0.1, 0.7]
    subjects = {'a1': 'A', 'a2': 'A', 'b1': 'B', 'c1': 'C', 'd1': 'D'}
    ids, y_sub, p_sub = metrics.subject_level(scans, y, p, subjects)
    assert ids.tolist() == ['A', 'B', 'C', 'D'] and y_sub.tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(p_sub, [(0.8 + 0.2) / 2, 0.6, 0.1, 0.7], rtol=1e-12)
    m = metrics.slice_and_scan_metrics(scans, y, p, 0.5, subjects)
    assert set(m) == {'slice', 'scan', 'subject'} and m['subject']['n'] == 4
    cis = metrics.bootstrap_ci(scans, y, p, 0.5, n_boot=200, subjects=subjects)
    assert set(cis) == {'slice', 'scan', 'subject'}
    # one scan per subject: resampling subjects IS resampling scans (two paths, one answer)
    own = {s: s for s in set(scans)}
    by_scan = metrics.bootstrap_ci(scans, y, p, 0.5, n_boot=200)
    by_subject = metrics.bootstrap_ci(scans, y, p, 0.5, n_boot=200, subjects=own)
    for level in ('slice', 'scan'):
        for key, ci in by_scan[level].items():
            if ci is None:
                assert by_subject[level][key] is None
            else:
                np.testing.assert_allclose(by_subject[level][key], ci, rtol=1e-12)


def test_a_converter_is_scored_once_per_diagnosis():
    ids, y, p = metrics.subject_level(['s1', 's2'], [0, 1], [0.2, 0.9], {'s1': 'A', 's2': 'A'})
    assert ids.tolist() == ['A:0', 'A:1'] and y.tolist() == [0, 1]


def test_manifest_csv_gives_subjects_and_its_old_patient_column_still_reads(tmp_path):
    (tmp_path / 'manifest.csv').write_text(
        'patient,subject,visit,label\n002_S_0295,002_S_0295,bl,AD\n002_S_0295_m12,002_S_0295,m12,AD\n'
    )
    smap = find_subject_map(tmp_path)
    assert smap.kind == 'manifest' and smap.subject('002_S_0295_m12') == '002_S_0295'
    assert smap.class_of('002_S_0295') == 'AD'
    from adni_timm.data.note import subjects_of

    assert subjects_of(tmp_path) == {'002_S_0295': '002_S_0295', '002_S_0295_m12': '002_S_0295'}
    assert subjects_of(tmp_path / 'elsewhere') == {}


# --------------------------------------------------------------------------- train and evaluate


@pytest.mark.slow
def test_a_resplit_run_trains_and_is_tested_on_its_own_subject_test_set(people, tmp_path):
    """train.py --resplit-test: split.json records subjects and the test scans; RUN/eval is on
    exactly those scans, with slice, scan and subject levels; evaluate.py agrees."""
    from helpers import TINY, run_script, run_train, with_option

    data_dir, subject_of, class_of = people
    paths = write_maps(tmp_path / 'maps', subject_of, class_of)
    run = tmp_path / 'run'
    args = with_option(with_option(TINY, '--epochs', '1'), '--val-fraction', '0.34')
    run_train(
        '--data-dir',
        data_dir,
        '--output-dir',
        run,
        *args,
        '--subjects',
        paths['json'],
        '--resplit-test',
        '0.3',
        '--eval-test',
        timeout=900,
    )
    split = json.loads((run / 'split.json').read_text())
    assert split['test_from'] == 'resplit' and split['subject_map'] == str(paths['json'].resolve())
    sides = [set(split['subjects'][k]) for k in ('train', 'val', 'test')]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    found = json.loads((run / 'eval' / 'metrics.json').read_text())
    assert {'slice', 'scan', 'subject'} <= set(found) and found['test_from'] == 'resplit'
    assert found['scan']['n'] == len(split['test']) and found['subject']['n'] == len(sides[2])
    assert found['subject_overlap'] == {'n': 0, 'of': len(sides[2])}
    assert found['ci']['resampled'] == 'subjects'
    with (run / 'eval' / 'scans.csv').open() as f:
        assert sorted(r['scan'] for r in csv.DictReader(f)) == split['test']
    # evaluate.py on the run reads the same test set and the run's map
    proc = run_script(
        'evaluate.py',
        '--model',
        run,
        '--data-dir',
        data_dir,
        '--output-dir',
        tmp_path / 'ev',
        '--n-boot',
        '50',
        timeout=900,
    )
    assert 'subjects (n=' in proc.stdout and '(re-split by subject)' in proc.stdout
    again = json.loads((tmp_path / 'ev' / 'metrics.json').read_text())
    assert (
        again['scan']['n'] == found['scan']['n'] and again['subject']['n'] == found['subject']['n']
    )


@pytest.mark.slow
def test_an_allowed_overlap_is_stated_in_metrics_and_the_summary(people, tmp_path):
    """--allow-subject-overlap: trains on the official split, says "N of M" everywhere."""
    from helpers import TINY, run_script, run_train, with_option

    data_dir, subject_of, class_of = people
    paths = write_maps(tmp_path / 'maps', subject_of, class_of)
    run = tmp_path / 'run'
    args = with_option(with_option(TINY, '--epochs', '1'), '--val-fraction', '0.5')
    proc = run_train(
        '--data-dir',
        data_dir,
        '--output-dir',
        run,
        *args,
        '--subjects',
        paths['plain'],
        '--allow-subject-overlap',
        timeout=900,
    )
    assert 'subjects overlap train and test: 2 of 5' in proc.stderr + proc.stdout
    split = json.loads((run / 'split.json').read_text())
    assert split['subject_overlap']['n'] == 2 and split['subject_overlap']['of'] == 5
    proc = run_script(
        'evaluate.py',
        '--model',
        run,
        '--data-dir',
        data_dir,
        '--output-dir',
        tmp_path / 'ev',
        '--n-boot',
        '50',
        timeout=900,
    )
    found = json.loads((tmp_path / 'ev' / 'metrics.json').read_text())
    assert found['subject_overlap'] == {'n': 2, 'of': 5}
    assert 'subjects overlap train and test: 2 of 5' in proc.stdout
    from adni_timm.publish.card import _subject_sentence

    assert 'Subjects overlap train and test: 2 of 5' in _subject_sentence(found)
