"""Hugging Face datasets in (``--data-dir`` a parquet / imagefolder dataset or ``hf:ORG/NAME``):
written once into the slice layout, labels mapped by name, scans and subjects kept, and a run on
one trains, evaluates and keeps a scan's images together. All images are SYNTHETIC."""

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip('datasets')

from PIL import Image  # noqa: E402

from adni_timm import data  # noqa: E402
from adni_timm.data import hub_datasets as hub  # noqa: E402
from adni_timm.data import DataError  # noqa: E402


def _features(label=None, **extra):
    return datasets.Features(
        {
            'image': datasets.Image(),
            'label': label or datasets.ClassLabel(names=['NC', 'AD']),
            **extra,
        }
    )


def _subject(scan: str) -> str:
    return f'person-{int(scan) % 5}'  # several scans per person, never across classes here


def _parquet_from_folder(folder: Path, out: Path, *, scan=True, subject=True, slice_=True):
    """The slice folder ``folder`` as parquet shards ``out/data/{split}-00000-of-00001.parquet``
    with image / label (ClassLabel NC, AD) / scan / subject / slice columns."""
    (out / 'data').mkdir(parents=True, exist_ok=True)
    for split in ('train', 'test'):
        slices = data.scan_split(folder, split)
        extra, columns = {}, {}
        if scan:
            extra['scan'] = datasets.Value('string')
            columns['scan'] = [s.scan for s in slices]
        if subject:
            extra['subject'] = datasets.Value('string')
            # a person's scans share a class and a split here (train and test share no subject,
            # as a split by subject must): subject = split + class + scan group
            columns['subject'] = [f'{split}-{s.label}-{_subject(s.scan)}' for s in slices]
        if slice_:
            extra['slice'] = datasets.Value('int32')
            columns['slice'] = [s.slice_index for s in slices]
        ds = datasets.Dataset.from_dict(
            {'image': [s.path for s in slices], 'label': [s.label for s in slices], **columns},
            features=_features(**extra),
        )
        ds.to_parquet(str(out / 'data' / f'{split}-00000-of-00001.parquet'))
    return out


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('ADNI_TIMM_CACHE', str(tmp_path / 'adni-cache'))
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', str(tmp_path / 'hf-datasets'))
    return tmp_path / 'adni-cache'


def test_parquet_dataset_becomes_the_slice_folder_it_came_from(tiny_data, tmp_path, cache):
    source = _parquet_from_folder(tiny_data, tmp_path / 'parquet')
    assert hub.parse_source(source) is not None and hub.parse_source(tiny_data) is None
    done = hub.materialise(source)
    assert done.data_dir.parent == cache / 'hf-datasets' and not done.reused
    for split in ('train', 'test'):
        before, after = data.scan_split(tiny_data, split), data.scan_split(done.data_dir, split)
        assert [(s.scan, s.label, s.slice_index) for s in after] == [
            (s.scan, s.label, s.slice_index) for s in before
        ]
        # the JPEG bytes are copied, not re-encoded: the pixels are the dataset's
        assert all(
            Path(a.path).read_bytes() == Path(b.path).read_bytes() for a, b in zip(after, before)
        )
    assert done.images == {'train': 48, 'test': 24} and done.scans == {'train': 12, 'test': 6}
    from adni_timm.data.note import describe, subjects_of

    subjects = subjects_of(done.data_dir)
    assert subjects['%s' % after[0].scan] == f'test-{after[0].label}-{_subject(after[0].scan)}'
    note = describe(done.data_dir)
    assert 'Hugging Face dataset' in note.note and not note.synthetic
    again = hub.materialise(str(source))
    assert again.reused and again.data_dir == done.data_dir


def test_labels_are_mapped_by_name_never_by_position(tmp_path, cache, caplog):
    pixels = [Image.fromarray(np.full((16, 16), 40 * i, np.uint8)) for i in range(4)]

    def write(name, label_feature, labels):
        folder = tmp_path / name / 'data'
        folder.mkdir(parents=True)
        features = _features(label_feature, scan=datasets.Value('string'))
        ds = datasets.Dataset.from_dict(
            {'image': pixels, 'label': labels, 'scan': ['a', 'a', 'b', 'b']}, features=features
        )
        ds.to_parquet(str(folder / 'train-00000-of-00001.parquet'))
        return folder.parent

    # an imagefolder-style alphabetical ClassLabel (AD=0, NC=1): mapped by name to NC=0, AD=1
    alphabetical = write('alpha', datasets.ClassLabel(names=['AD', 'NC']), [0, 0, 1, 1])
    done = hub.materialise(alphabetical)
    assert sorted(p.name for p in (done.data_dir / 'train' / 'AD').iterdir()) == [
        'a_0.png',
        'a_1.png',
    ]
    assert [s.label for s in data.scan_split(done.data_dir, 'train')] == [0, 0, 1, 1]  # b: NC
    # names that are not the classes, unknown strings, out-of-range integers: one line each
    wrong = write('wrong', datasets.ClassLabel(names=['CN', 'AD']), [0, 0, 1, 1])
    with pytest.raises(DataError, match=r'label names CN,AD are not the classes NC,AD'):
        hub.materialise(wrong)
    strings = write('strings', datasets.Value('string'), ['NC', 'NC', 'Dementia', 'Dementia'])
    with pytest.raises(DataError, match=r'label values Dementia are not classes NC,AD'):
        hub.materialise(strings)
    unlabelled = write('unlabelled', datasets.ClassLabel(names=['NC', 'AD']), [0, 0, 1, -1])
    with pytest.raises(DataError, match=r'1 row\(s\) have no label \(None or -1\)'):
        hub.materialise(unlabelled)
    ints = write('ints', datasets.Value('int64'), [0, 0, 2, 2])
    with pytest.raises(DataError, match=r'label values \[2\] are not indices'):
        hub.materialise(ints)
    # bare integers: indices of --classes, and the log says so
    bare = write('bare', datasets.Value('int64'), [0, 0, 1, 1])
    with caplog.at_level(logging.WARNING):
        done = hub.materialise(bare)
    assert 'integers without class names' in caplog.text
    assert [s.label for s in data.scan_split(done.data_dir, 'train')] == [0, 0, 1, 1]


def test_a_scan_with_two_labels_or_missing_columns_is_refused(tmp_path, cache):
    folder = tmp_path / 'mixed' / 'data'
    folder.mkdir(parents=True)
    pixels = [Image.fromarray(np.zeros((8, 8), np.uint8))] * 2
    ds = datasets.Dataset.from_dict(
        {'image': pixels, 'label': [0, 1], 'scan': ['a', 'a']},
        features=_features(scan=datasets.Value('string')),
    )
    ds.to_parquet(str(folder / 'train-00000-of-00001.parquet'))
    with pytest.raises(DataError, match='scan.*a have rows of two labels'):
        hub.materialise(folder.parent)
    other = tmp_path / 'nolabel' / 'data'
    other.mkdir(parents=True)
    datasets.Dataset.from_dict(
        {'img': pixels}, features=datasets.Features({'img': datasets.Image()})
    ).to_parquet(str(other / 'train-00000-of-00001.parquet'))
    with pytest.raises(DataError, match=r'no image column \(columns: img\)'):
        hub.materialise(other.parent)


def test_without_a_scan_column_each_image_is_its_own_scan(tiny_data, tmp_path, cache):
    source = _parquet_from_folder(tiny_data, tmp_path / 'parquet', scan=False, subject=False)
    done = hub.materialise(source)
    assert done.scans == done.images and not done.has_scan
    assert any('each image is its own scan' in n for n in done.notes)
    from adni_timm.data.note import describe

    note = describe(done.data_dir).note
    assert 'each image is its own scan' in note
    # the note travels with the run into the export, and the card's training-data paragraph says it
    from adni_timm.export.format import ExportSettings
    from adni_timm.publish.card import DataSource, _source_paragraph

    settings = ExportSettings.from_dict({'data': note, 'synthetic': False})
    assert 'each image is its own scan' in _source_paragraph(settings, DataSource.of(settings))


def test_an_imagefolder_with_metadata_keeps_its_folder_labels_and_scans(tmp_path, cache):
    root = tmp_path / 'imagefolder'
    for split in ('train', 'test'):
        rows = []
        for name in ('AD', 'NC'):  # alphabetical on disk; the labels go by name
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((16, 16), 10 * i, np.uint8)).save(
                    root / split / name / f'img{i}.png'
                )
                rows.append([f'{name}/img{i}.png', f'{split}-{name}-{i // 2}', f'p-{split}-{name}'])
        with (root / split / 'metadata.csv').open('w', newline='') as f:
            csv.writer(f).writerows([['file_name', 'scan', 'subject'], *rows])
    done = hub.materialise(root)
    train = data.scan_split(done.data_dir, 'train')
    assert {(s.scan, s.label) for s in train} == {
        ('train-NC-0', 0),
        ('train-NC-1', 0),
        ('train-AD-0', 1),
        ('train-AD-1', 1),
    }
    assert done.subjects == {'train': 2, 'test': 2}


def test_hub_id_loads_from_the_offline_datasets_cache(tiny_data, tmp_path, cache, monkeypatch):
    """``hf:ORG/NAME`` with HF_HUB_OFFLINE: what an earlier download left in the datasets cache
    (built here as load_dataset would have, under ORG___NAME/default/0.0.0/<hash>)."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', True)
    source = _parquet_from_folder(tiny_data, tmp_path / 'parquet')
    files = {s: [str(source / 'data' / f'{s}-00000-of-00001.parquet')] for s in ('train', 'test')}
    root = Path(datasets.config.HF_DATASETS_CACHE)
    builder = Parquet(cache_dir=str(root), dataset_name='slices', data_files=files, hash='0123abcd')
    builder.download_and_prepare()
    (root / 'someorg___slices').mkdir()
    shutil.move(Path(builder.cache_dir).parent.parent, root / 'someorg___slices' / 'default')
    done = hub.materialise('hf:someorg/slices')
    assert done.data_dir.name.startswith('someorg-slices-')
    assert [s.scan for s in data.scan_split(done.data_dir, 'test')] == [
        s.scan for s in data.scan_split(tiny_data, 'test')
    ]
    meta = json.loads((done.data_dir / 'dataset.json').read_text())
    assert 'someorg/slices' in meta['note'] and meta['hub_dataset']['source'] == 'hf:someorg/slices'
    with pytest.raises(hub.DatasetSourceError, match='cannot be loaded.*offline'):
        hub.materialise('hf:someorg/not-cached')
    with pytest.raises(hub.DatasetSourceError, match='neither a folder nor a Hub dataset id'):
        hub.parse_source('hf:just-a-name')


@pytest.mark.slow
def test_a_parquet_dataset_trains_evaluates_and_keeps_scans_together(tiny_data, tmp_path):
    """train.py and evaluate.py on a parquet dataset with image / label / scan columns (no slice,
    no subject column), as a user runs them: the split is by scan, evaluation reports scans."""
    from helpers import TINY, run_script, run_train, with_option

    source = _parquet_from_folder(tiny_data, tmp_path / 'parquet', subject=False, slice_=False)
    env = {'ADNI_TIMM_CACHE': str(tmp_path / 'cache'), 'HF_DATASETS_CACHE': str(tmp_path / 'hf')}
    run = tmp_path / 'run'
    proc = run_train(
        '--data-dir',
        source,
        '--output-dir',
        run,
        *with_option(TINY, '--epochs', '1'),
        '--warmup-epochs',
        '0',
        env=env,
        timeout=900,
    )
    log = proc.stdout + proc.stderr  # the log says what it read and what it assumed
    assert f'dataset {source}: train 48 images in 12 scans; test 24 images in 6 scans' in log
    assert 'no slice column: slices are numbered by their order in the scan' in log
    split = json.loads((run / 'split.json').read_text())
    scans = {s.scan for s in data.scan_split(tiny_data, 'train')}
    # every scan whole on one side: the split lists scans, each once, and all of them
    assert sorted(split['train'] + split['val']) == sorted(scans)
    assert not set(split['train']) & set(split['val'])
    assert sorted(split['test']) == sorted({s.scan for s in data.scan_split(tiny_data, 'test')})
    record = (run / 'train_config.yaml').read_text()
    assert 'Hugging Face dataset' in record and 'no slice column' not in record
    out = tmp_path / 'eval'
    run_script(
        'evaluate.py',
        '--model',
        run,
        '--data-dir',
        f'hf:{source}',
        '--output-dir',
        out,
        '--num-workers',
        '0',
        env=env,
        timeout=900,
    )
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['slice']['n'] == 24 and metrics['scan']['n'] == 6
    # the same dataset is written once: training and evaluation read the same folder
    assert len(list((tmp_path / 'cache' / 'hf-datasets').glob('parquet-*/dataset.json'))) == 1


def test_check_data_reads_a_dataset_and_refuses_bad_ones_in_one_line(
    tiny_data, tmp_path, cache, capsys
):
    from adni_timm.cli.check import main

    source = _parquet_from_folder(tiny_data, tmp_path / 'parquet')
    assert main([str(source)]) == 0
    out = capsys.readouterr().out
    assert f'dataset {source} -> {cache}' in out and 'no problems found' in out
    assert main([str(source), '--classes', 'NC,MCI,AD']) == 1  # a problem in the data
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f'adni-check-data: error: --data-dir {source}: the label names NC,AD are not the classes '
        'NC,MCI,AD: give --classes in label order with every class the dataset has (now NC,MCI,AD)'
    ]
    assert main(['hf:someorg/absent']) == 2  # a refused input: not cached, offline
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        'adni-check-data: error: --data-dir hf:someorg/absent'
    )


def test_train_refuses_a_dataset_it_cannot_load_in_one_line(tmp_path, cache, capsys):
    from helpers import train_in_process

    code, _, err = train_in_process(
        capsys, '--data-dir', 'hf:someorg/absent', '--output-dir', tmp_path / 'run'
    )
    assert code == 2 and not (tmp_path / 'run').exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        'adni-train: error: --data-dir hf:someorg/absent: the dataset cannot be loaded (offline'
    )
