"""adni-prepare: the plan (labels, visits, split by subject), the run (layout, manifest, QC,
records), shards, resume after a kill, bad inputs, and the road on to training.

All scans are SYNTHETIC (adni_timm.synthetic.volumes) at 4 mm, prepared with a fast recipe (no
N4, 2 mm working resolution, 4 slices); the full recipe is tested in test_preprocess.py.
"""

import filecmp
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('SimpleITK')
pytest.importorskip('nilearn')

from helpers import cli_in_process, popen_python, run_python, run_train  # noqa: E402
from PIL import Image  # noqa: E402

from adni_timm import data  # noqa: E402
from adni_timm.prepare.labels import read_labels  # noqa: E402
from adni_timm.prepare.run import (  # noqa: E402
    MANIFEST_COLUMNS,
    PrepareOptions,
    build_plan,
    encode_slice,
    flag_outliers,
    merge,
    prepare,
    read_recipe,
    slices_from_scan,
    written_pixels,
)
from adni_timm.prepare.preprocess import Recipe  # noqa: E402
from adni_timm.export.format import read_export_settings  # noqa: E402
from adni_timm.synthetic.volumes import generate_volumes, write_dicom_series  # noqa: E402
from adni_timm.prepare.volumes import discover_scans, read_volume  # noqa: E402

FAST = Recipe(n4=False, resample_mm=2.0, slices=4)
OPTIONS = PrepareOptions(test_fraction=0.34)


@pytest.fixture(scope='module')
def volumes(tmp_path_factory):
    """SYNTHETIC: 3 NC + 3 AD subjects, 2 visits each (bl, m12), NIfTI at 4 mm (read-only)."""
    out = tmp_path_factory.mktemp('volumes')
    generate_volumes(out, 3, visits=2, voxel_mm=4.0, base_mm=2.0)
    return out


@pytest.fixture(scope='module')
def prepared(volumes, tmp_path_factory):
    """(OUT, result) of an unsharded baseline run with the FAST recipe (read-only)."""
    out = tmp_path_factory.mktemp('prepared') / 'out'
    labels = read_labels(volumes / 'labels.csv')
    result = prepare(volumes / 'ADNI', out, labels, discover_scans(volumes / 'ADNI'), FAST, OPTIONS)
    return out, result


def _tree(folder: Path, pattern: str = '*/*/*.png') -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.glob(pattern))


# ---------------------------------------------------------------------------------- the plan


def test_plan_splits_by_subject_across_visits(volumes):
    discovery = discover_scans(volumes / 'ADNI')
    labels = read_labels(volumes / 'labels.csv')
    plan = build_plan(discovery, labels, PrepareOptions(visits='all', test_fraction=0.34))
    assert len(plan.scans) == 12 and not plan.problems
    by_subject = plan.by_subject()
    for subject, scans in by_subject.items():
        assert {s.split for s in scans} == {scans[0].split}, subject
        assert sorted(s.scan_id for s in scans) == [f'{subject}_bl', f'{subject}_m12']
    test = sorted(s for s, scans in by_subject.items() if scans[0].split == 'test')
    assert sorted(by_subject[s][0].label for s in test) == ['AD', 'NC']  # one per class
    again = build_plan(discovery, labels, PrepareOptions(visits='all', test_fraction=0.34))
    assert again.scans == plan.scans
    splits = {
        seed: tuple(
            s.split
            for s in build_plan(
                discovery, labels, PrepareOptions(test_fraction=0.34, seed=seed)
            ).scans
        )
        for seed in range(6)
    }
    assert len(set(splits.values())) > 1  # the seed chooses the split
    baseline = build_plan(discovery, labels, OPTIONS)
    assert [s.visit for s in baseline.scans] == ['bl'] * 6
    assert [s.scan_id for s in baseline.scans] == sorted(by_subject)  # the real subject ids
    assert len(baseline.skipped) == 6 and 'not the baseline visit' in baseline.skipped[0][1]


def test_group_mapping_skips_classes_not_asked_for(volumes, tmp_path):
    labels_path = tmp_path / 'labels.csv'
    text = (volumes / 'labels.csv').read_text().replace(',AD,', ',LMCI,', 2)
    labels_path.write_text(text)
    discovery = discover_scans(volumes / 'ADNI')
    plan = build_plan(discovery, read_labels(labels_path), OPTIONS)
    assert plan.mapping['LMCI'] == 'MCI (not in --classes: skipped)'
    assert sum('LMCI -> MCI is not in --classes NC,AD' in why for _, why in plan.skipped) == 1
    three = build_plan(
        discovery,
        read_labels(labels_path),
        PrepareOptions(classes=('NC', 'MCI', 'AD'), test_fraction=0.34),
    )
    assert sorted({s.label for s in three.scans}) == ['AD', 'MCI', 'NC']


# ------------------------------------------------------------------------------------ the run


@pytest.mark.slow
def test_prepare_writes_the_layout_manifest_and_qc(prepared):
    out, result = prepared
    assert not result.problems and result.merged.counts == {
        'test/AD': 1,
        'test/NC': 1,
        'train/AD': 2,
        'train/NC': 2,
    }
    meta = json.loads((out / 'prepare.json').read_text())
    assert read_recipe(meta) == FAST and meta['recipe_digest'] == FAST.digest
    assert meta['slices']['numbers'] == [42, 61, 80, 99]
    assert meta['slices']['mni_z_mm'] == [-30.0, -11.0, 8.0, 27.0]
    assert meta['template']['shape'] == [197, 233, 189] and len(meta['template']['sha256']) == 64
    assert {'SimpleITK', 'nibabel', 'numpy'} <= set(meta['versions'])
    files = _tree(out)
    assert len(files) == 6 * 4
    assert all(Path(f).stem.rsplit('_', 1)[1] in {'42', '61', '80', '99'} for f in files)
    with Image.open(out / files[0]) as image:
        assert (image.mode, image.size) == ('L', (192, 192))
    rows = (out / 'manifest.csv').read_text().splitlines()
    assert rows[0].split(',') == list(MANIFEST_COLUMNS) and len(rows) == 7
    row = dict(zip(MANIFEST_COLUMNS, rows[1].split(',')))
    assert row['scan'] == row['subject'] == '000_S_0001' and row['visit'] == 'bl'
    assert row['status'] == 'ok' and float(row['similarity']) > 0.3 and row['included'] == 'True'
    assert row['steps'] == 'reorient resample register mask normalise slice'
    assert sorted(p.name for p in (out / 'qc').glob('*.png')) == sorted(
        [f'000_S_000{i}.png' for i in range(1, 7)] + ['overview.png']
    )
    # the training code reads the layout: scans are the real subject ids
    slices = data.scan_split(out, 'train')
    assert sorted({s.scan for s in slices}) == sorted(
        r.split(',')[0] for r in rows[1:] if ',train,' in r
    )


def test_slices_from_scan_gives_exactly_what_prepare_wrote(prepared):
    out, result = prepared
    record = next(r for r in result.merged.records if r.split == 'test')
    again = slices_from_scan(record.source, read_recipe(out / 'prepare.json'))
    assert list(again.slice_numbers) == record.slice_numbers
    assert again.similarity == record.similarity
    written = np.stack([np.asarray(Image.open(out / f)) for f in record.files])
    np.testing.assert_array_equal(again.slices, written)


def test_jpeg_pixels_are_the_ones_training_reads(prepared, tmp_path):
    out, result = prepared
    record = result.merged.records[0]
    scan = slices_from_scan(record.source, FAST)
    jpeg = Recipe(**{**FAST.to_dict(), 'image_format': 'jpeg'})
    path = tmp_path / 'slice.jpeg'
    path.write_bytes(encode_slice(scan.slices[1], 'jpeg'))
    np.testing.assert_array_equal(written_pixels(scan, jpeg)[1], np.asarray(Image.open(path)))
    assert not np.array_equal(written_pixels(scan, jpeg), scan.slices)  # lossy
    assert written_pixels(scan, FAST) is scan.slices


def test_rerun_skips_finished_subjects(prepared, volumes, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(prepared[0], out)
    records = {p.name: p.stat().st_mtime_ns for p in (out / 'records').glob('*.json')}
    result = prepare(
        volumes / 'ADNI',
        out,
        read_labels(volumes / 'labels.csv'),
        discover_scans(volumes / 'ADNI'),
        FAST,
        OPTIONS,
    )
    assert result.prepared == [] and len(result.already_done) == 6
    assert {p.name: p.stat().st_mtime_ns for p in (out / 'records').glob('*.json')} == records
    assert (out / 'manifest.csv').read_text() == (prepared[0] / 'manifest.csv').read_text()


def test_outliers_are_flagged_and_moved_out_unless_kept(prepared, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(prepared[0], out)
    record_path = out / 'records' / '000_S_0002.json'
    record = json.loads(record_path.read_text())
    record['scans'][0]['similarity'] = 0.05  # a registration gone wrong
    record_path.write_text(json.dumps(record))
    result = merge(out)
    assert result.flagged == ['000_S_0002']
    files = record['scans'][0]['files']
    assert not any((out / f).exists() for f in files)
    assert all((out / 'flagged' / f).is_file() for f in files)
    row = next(r for r in (out / 'manifest.csv').read_text().splitlines() if '000_S_0002,' in r)
    assert ',0.0500,True,False,' in row
    merge(out, keep_flagged=True)  # adni-prepare --merge OUT --keep-flagged
    assert all((out / f).is_file() for f in files)
    assert json.loads((out / 'prepare.json').read_text())['options']['keep_flagged'] is True
    row = next(r for r in (out / 'manifest.csv').read_text().splitlines() if '000_S_0002,' in r)
    assert ',0.0500,True,True,' in row


def test_outlier_rule_flags_misregistrations_not_noise():
    good = {f's{i}': 0.40 + 0.004 * i for i in range(12)}  # median ~0.42, spread ~0.02
    assert flag_outliers({**good, 'noisy': 0.35}) == set()
    assert flag_outliers({**good, 'tilted': 0.25}) == {'tilted'}
    assert flag_outliers({'a': 0.4, 'b': 0.1}) == {'b'}  # the floor, whatever the run size
    assert flag_outliers({'a': 0.4, 'b': 0.2}) == set()  # too few scans for a run statistic


@pytest.mark.slow
def test_shards_merged_equal_an_unsharded_run(prepared, volumes, tmp_path):
    out = tmp_path / 'sharded'
    labels = read_labels(volumes / 'labels.csv')
    discovery = discover_scans(volumes / 'ADNI')
    first = prepare(volumes / 'ADNI', out, labels, discovery, FAST, OPTIONS, shard=(1, 2))
    assert first.merged is None and len(first.prepared) == 3
    assert any('not prepared yet' in p.message for p in merge(out).problems)
    second = prepare(volumes / 'ADNI', out, labels, discovery, FAST, OPTIONS, shard=(2, 2))
    assert {r.subject for r in first.prepared}.isdisjoint(r.subject for r in second.prepared)
    result = merge(out)
    assert not result.problems
    reference = prepared[0]
    assert (out / 'manifest.csv').read_text() == (reference / 'manifest.csv').read_text()
    files = _tree(out)
    assert files == _tree(reference)
    _, mismatch, errors = filecmp.cmpfiles(out, reference, files, shallow=False)
    assert mismatch == errors == []


# ------------------------------------------------------------------------------- bad inputs


def test_each_bad_input_gets_one_line_and_the_others_finish(volumes, tmp_path, capsys):
    from nibabel.testing import data_path

    from adni_timm.cli.prepare import main

    src = tmp_path / 'src'
    src.mkdir()
    good = sorted((volumes / 'ADNI').glob('*/*/*/*/*.nii.gz'))[::2][2:4]  # NC 0003, AD 0004
    rows = ['subject,label']
    for path in good:
        subject = path.parts[-5]
        shutil.copy(path, src / f'{subject}.nii.gz')
        rows.append(f'{subject},{"NC" if subject <= "000_S_0003" else "AD"}')
    (src / 'broken.nii.gz').write_bytes(b'\x1f\x8b not really gzip')
    shutil.copy(Path(data_path) / 'example4d.nii.gz', src / 'fourd.nii.gz')
    image = read_volume(good[0])
    write_dicom_series(image, src / 'twoseries', 'twoseries', 'I1', '2006-01-01')
    write_dicom_series(image, src / 'twoseries', 'twoseries', 'I2', '2006-01-01')
    shutil.copy(good[0], src / 'nolabel.nii.gz')
    shutil.copy(good[1], src / 'odd.nii.gz')
    shutil.copy(good[0], src / 'mci.nii.gz')
    ball = np.zeros((96, 96, 96), np.int16)
    idx = np.indices(ball.shape)
    ball[((idx - 30) ** 2).sum(0) < 100] = 100
    import nibabel as nib

    nib.save(nib.Nifti1Image(ball, np.diag([1.5, 1.5, 1.5, 1])), src / 'ball.nii.gz')
    rows += ['broken,AD', 'fourd,NC', 'twoseries,AD', 'odd,Scan', 'mci,MCI', 'ball,NC']
    (tmp_path / 'labels.csv').write_text('\n'.join(rows) + '\n')
    recipe = tmp_path / 'fast.json'
    recipe.write_text(json.dumps({'recipe': FAST.to_dict()}))
    out = tmp_path / 'out'
    code = main(
        [
            str(src),
            str(out),
            '--labels',
            str(tmp_path / 'labels.csv'),
            '--recipe',
            str(recipe),
            '--test-fraction',
            '0.5',
            '--progress',
            'none',
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    problems = [line.strip() for line in captured.err.splitlines()[1:]]
    # 6 bad inputs, and the split/class their failures left empty (training would refuse it)
    assert captured.err.splitlines()[0] == '7 problem(s):'
    emptied = [p for p in problems if 'training refuses an empty class folder' in p]
    assert len(emptied) == 1 and 'failed' in emptied[0], problems
    expected = {
        'nolabel': 'no row in',
        'Scan': "--group-map 'Scan=NC'",
        'broken': 'cannot be read as NIfTI',
        'fourd': 'is 4D (2 volumes',
        'twoseries': 'holds 2 DICOM series',
        'ball': 'no head found',
    }
    for key, text in expected.items():
        assert sum(key in p and text in p for p in problems) == 1, (key, problems)
    assert 'groups -> classes: AD -> AD, MCI -> MCI (not in --classes: skipped), NC -> NC' in (
        captured.out
    )
    manifest = (out / 'manifest.csv').read_text().splitlines()
    ok = [r.split(',')[0] for r in manifest[1:] if ',ok,' in r]
    assert ok == sorted(p.parts[-5] for p in good)
    assert len(_tree(out)) == 2 * 4


def test_cli_refuses_bad_usage(tmp_path, capsys):
    from adni_timm.cli.prepare import main

    assert main(['--merge', str(tmp_path)]) == 2
    assert 'holds no prepare.json' in capsys.readouterr().err
    (tmp_path / 'l.csv').write_text('subject,label\nS1,AD\n')
    assert (
        main(
            [
                str(tmp_path),
                str(tmp_path / 'o'),
                '--labels',
                str(tmp_path / 'l.csv'),
                '--shard',
                '3/2',
            ]
        )
        == 2
    )
    assert 'write K/N' in capsys.readouterr().err
    assert (
        main(
            [
                str(tmp_path),
                str(tmp_path / 'o'),
                '--labels',
                str(tmp_path / 'l.csv'),
                '--test-fraction',
                '1.5',
            ]
        )
        == 2
    )
    assert 'in [0, 1)' in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), str(tmp_path / 'o')])
    assert info.value.code == 2


# ------------------------------------------------------------------------- kill and resume


def _prepare_cli(*args):
    return ['-m', 'adni_timm.prepare', *args]  # python -m adni_timm.prepare ARGS


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_subjects(prepared, volumes, tmp_path):
    recipe = tmp_path / 'fast.json'
    recipe.write_text(json.dumps({'recipe': FAST.to_dict()}))
    out = tmp_path / 'out'
    args = _prepare_cli(
        volumes,  # the generator's folder itself: the ADNI layout is found inside
        out,
        '--labels',
        volumes / 'labels.csv',
        '--recipe',
        recipe,
        '--test-fraction',
        '0.34',
        '--progress',
        'lines',
    )
    proc = popen_python(*args)  # forked from the tests' script server (helpers.run_script)
    deadline = time.time() + 900  # a hang guard, never a speed check
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / 'records').glob('*.json'))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, 'the run ended before it could be killed midway'
    proc.kill()  # SIGKILL
    proc.wait()
    finished = {p.name: p.read_bytes() for p in (out / 'records').glob('*.json')}
    assert 2 <= len(finished) < 6 and not (out / 'manifest.csv').exists()
    rerun = run_python(*args, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f'{len(finished)} subject(s) already prepared with this recipe: skipped' in rerun.stdout
    assert rerun.stdout.count('] 000_S_') == 6 - len(finished)
    for name, content in finished.items():
        assert (out / 'records' / name).read_bytes() == content  # not redone
    reference = prepared[0]
    assert (out / 'manifest.csv').read_text() == (reference / 'manifest.csv').read_text()
    files = _tree(out)
    assert files == _tree(reference)
    assert filecmp.cmpfiles(out, reference, files, shallow=False)[1] == []


# ------------------------------------------------------------------------------ to training


@pytest.mark.slow
def test_prepared_scans_train_and_a_new_scan_gets_the_p_ad_of_its_prepared_slices(
    prepared, volumes, tmp_path, capsys, monkeypatch
):
    out, _ = prepared
    run = tmp_path / 'run'
    run_train(
        '--data-dir',
        out,
        '--output-dir',
        run,
        '--model',
        'adni_convnext_atto',
        '--img-size',
        '64',
        '--epochs',
        '1',
        '--batch-size',
        '8',
        '--num-workers',
        '0',
        '--warmup-epochs',
        '0',
        '--val-fraction',
        '0.5',
    )
    lines = (run / 'metrics.jsonl').read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])['epoch'] == 1
    assert (run / 'best' / 'model.safetensors').is_file()
    split = json.loads((run / 'split.json').read_text())
    assert {p for part in split.values() if isinstance(part, list) for p in part} <= {
        f'000_S_000{i}' for i in range(1, 7)
    }
    # the export records the recipe, and says what the slices were
    settings = read_export_settings(run / 'best')
    assert (
        settings.preprocessing['recipe'] == json.loads((out / 'prepare.json').read_text())['recipe']
    )
    assert settings.synthetic  # synthetic heads, prepared: still synthetic
    # a scan of a test subject, as the ADNI archive ships it: the same P(AD) as its slices
    manifest = list(csv.DictReader((out / 'manifest.csv').open()))
    row = next(r for r in manifest if r['split'] == 'test' and r['included'] == 'True')
    code, text, err = cli_in_process(
        capsys, 'evaluate', '--model', run, '--images', row['source'], '--output-dir',
        tmp_path / 'scan',
    )  # fmt: skip
    assert code == 0, err
    assert 'registered to the template (similarity' in text
    by_scan = {
        r['path']: float(r['p_AD'])
        for r in csv.DictReader((tmp_path / 'scan/predictions.csv').open())
    }
    code, _, err = cli_in_process(
        capsys, 'evaluate', '--model', run, '--images', out / 'test' / row['label'],
        '--output-dir', tmp_path / 'slices',
    )  # fmt: skip
    assert code == 0, err
    by_slice = {
        Path(r['path']).name.rsplit('_', 1)[1]: float(r['p_AD'])
        for r in csv.DictReader((tmp_path / 'slices/predictions.csv').open())
        if Path(r['path']).name.startswith(row['scan'] + '_')
    }
    scan_p = {Path(k).name.rsplit('_', 1)[1]: v for k, v in by_scan.items()}
    assert set(scan_p) == set(by_slice) and len(scan_p) == 4  # the recipe's 4 slices
    for number in scan_p:
        assert scan_p[number] == pytest.approx(by_slice[number], rel=1e-6, abs=1e-7)
    # the web demo takes the .nii.gz upload the same way
    pytest.importorskip('gradio')
    from adni_timm.app import demo as app

    demo_model = app.load(run)
    scratch = tmp_path / 'server-tmp'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))  # what the page's handler leaves
    summary, gallery, shown = app.analyse(demo_model, [row['source']])
    assert not shown['rejected'] and len(shown['slices']) == 4, summary
    assert sorted(r['p_AD'] for r in shown['slices']) == pytest.approx(
        sorted(scan_p.values()), rel=1e-6, abs=1e-7
    )
    assert len(gallery) == 1  # the scan's evidence maps were drawn from its slices
    assert sorted(scratch.iterdir()) == []  # and then the slices were removed
