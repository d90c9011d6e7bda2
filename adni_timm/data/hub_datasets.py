"""Hugging Face datasets in: ``--data-dir hf:ORG/NAME[:CONFIG]``, or a dataset on disk (parquet
shards such as ``data/train-*.parquet``, an ``imagefolder`` with ``metadata.csv``, a
``save_to_disk`` folder), read with ``datasets`` and written once into the slice layout.

Why materialise (and not read rows from the Arrow table in the loader): every later step takes a
data folder (the layout scan, the subject map in ``manifest.csv``, the data note a card and the
demo show, ``slice_key``'s ``split/class/file`` in predictions, the decoded-slice cache, the
leakage check between train and test, resume and re-evaluation by path). A folder keeps all of
them exactly as they are for AD_NC; a second reading path would have to be kept equal to the first
in each of them. The cost is one copy of the images on disk, written once per dataset version:

    CACHE/hf-datasets/<name>-<key>/{train,test}/{NC,AD}/<scan>_<index>.{png,jpeg}
    CACHE/hf-datasets/<name>-<key>/dataset.json     the note (source, columns, what was assumed)
    CACHE/hf-datasets/<name>-<key>/manifest.csv     scan -> subject, when the dataset names subjects

``key`` hashes the datasets' fingerprints (they change with the revision or the files), the class
list and this module's format. PNG and JPEG bytes are copied as they are (no re-encoding: the
pixels are the dataset's); other encodings are decoded once and written as PNG. CACHE is
``$ADNI_TIMM_CACHE`` or ``~/.cache/adni_timm``. A lock and an atomic rename make concurrent
processes (several ranks of ``accelerate launch``) write it once.

Columns: ``image``; ``label`` as class names, or integers named by the dataset's ``ClassLabel``
(mapped to ``--classes`` BY NAME: an ``imagefolder``'s alphabetical AD=0, NC=1 becomes NC=0,
AD=1), or bare integers (read as indices of ``--classes``, said in the log); optional ``scan``
(images of one scan stay together in every split), ``subject`` (scans of one person stay
together) and ``slice`` (the slice number in the file name; else the image's position in its
scan). Without ``scan`` each image is its own scan, which the log and the data note (hence the
model card) say. Splits ``train`` and ``test`` are read; a validation split is not used
(validation is carved from train by scan or subject), and the log says so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .slices import DataError, parse_classes
from ..models import LABEL_NAMES

__all__ = [
    'HF_PREFIX',
    'DatasetSourceError',
    'DatasetSource',
    'Materialised',
    'parse_source',
    'resolve_data_dir',
    'materialise',
    'cache_root',
]

_logger = logging.getLogger(__name__)

HF_PREFIX = 'hf:'
FORMAT = 1  # of the materialised folder; a change re-materialises every dataset
SPLITS = ('train', 'test')
_UNUSED_SPLITS_NOTE = 'validation is carved from train by scan or subject'
_DATA_FILES = ('.parquet', '.arrow')
_METADATA = ('metadata.csv', 'metadata.jsonl', 'metadata.parquet')
_SAVED = ('dataset_dict.json', 'state.json')  # Dataset(Dict).save_to_disk
_PNG, _JPEG = b'\x89PNG\r\n\x1a\n', b'\xff\xd8\xff'
_PNG_MODES = {'1', 'L', 'LA', 'P', 'RGB', 'RGBA', 'I;16'}  # PNG holds these as they are
_NAME_PART = re.compile(r'[^A-Za-z0-9._-]+')


class DatasetSourceError(ValueError):
    """A dataset that cannot be named or loaded (bad ``hf:`` text, not found, not cached,
    ``datasets`` missing): a refused input (exit 2), where a DataError is a problem in the data
    (exit 1)."""


@dataclass(frozen=True)
class DatasetSource:
    """A dataset ``datasets`` can load: a Hub id (``hf:ORG/NAME[:CONFIG]``) or a folder on disk."""

    text: str  # what the user gave
    path: str  # what load_dataset / load_from_disk gets
    config: str | None = None
    saved: bool = False  # a save_to_disk folder: load_from_disk
    local: bool = False

    @property
    def name(self) -> str:
        """A file-name-safe short name: ORG-NAME, or the folder's name."""
        base = Path(self.path).name if self.local else self.path.replace('/', '-')
        return _safe(base + (f'-{self.config}' if self.config else ''))


@dataclass(frozen=True)
class Materialised:
    """The slice-layout folder of a dataset and what it holds."""

    data_dir: Path
    source: DatasetSource
    images: dict[str, int]  # per split
    scans: dict[str, int]
    subjects: dict[str, int]
    has_scan: bool
    has_subject: bool
    reused: bool  # written by an earlier run
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f'{split} {self.images[split]} images in {self.scans[split]} scans'
            + (f' of {self.subjects[split]} subjects' if self.has_subject else '')
            for split in self.images
        ]
        where = 'reused' if self.reused else 'written'
        return f'{self.source.text}: {"; ".join(parts)} ({where} as {self.data_dir})'


def _safe(text: str) -> str:
    return _NAME_PART.sub('-', text).strip('-') or 'x'


def _is_local_dataset(path: Path) -> bool:
    """A folder ``datasets`` must read: Arrow / parquet files, a save_to_disk folder, or an
    imagefolder with a metadata file. A folder of class folders of images is the slice layout."""
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in _SAVED):
        return True
    for depth in ('*', '*/*', '*/*/*'):
        for found in path.glob(depth):
            if found.suffix in _DATA_FILES or found.name in _METADATA:
                return True
    return False


def parse_source(text: str | os.PathLike) -> DatasetSource | None:
    """The dataset ``text`` names, or None for a data folder in the slice layout.

    ``hf:ORG/NAME``, ``hf:ORG/NAME:CONFIG``, ``hf:PATH`` (any folder ``datasets`` can load, e.g.
    an imagefolder without a metadata file); a folder holding parquet / Arrow files, a
    ``metadata.csv`` or a ``save_to_disk`` dataset is read as a dataset without the prefix."""
    text = str(text)
    if text.startswith(HF_PREFIX):
        rest = text[len(HF_PREFIX) :].strip()
        if not rest:
            raise DatasetSourceError(
                f'--data-dir {text!r}: name the dataset, e.g. hf:ORG/NAME or hf:ORG/NAME:CONFIG'
            )
        local = Path(rest)
        if local.exists():
            saved = local.is_dir() and any((local / n).is_file() for n in _SAVED)
            return DatasetSource(text, str(local.resolve()), None, saved, local=True)
        name, _, config = rest.partition(':')
        if name.count('/') != 1 or not all(name.split('/')):
            raise DatasetSourceError(
                f'--data-dir {text!r}: neither a folder nor a Hub dataset id; write '
                f'hf:ORG/NAME[:CONFIG] or hf:PATH to a dataset folder'
            )
        return DatasetSource(text, name, config or None)
    path = Path(text)
    if _is_local_dataset(path):
        saved = any((path / n).is_file() for n in _SAVED)
        return DatasetSource(text, str(path.resolve()), None, saved, local=True)
    return None


def cache_root() -> Path:
    """Where materialised datasets go: ``$ADNI_TIMM_CACHE`` or ``~/.cache/adni_timm``."""
    root = os.environ.get('ADNI_TIMM_CACHE') or Path.home() / '.cache' / 'adni_timm'
    return Path(root) / 'hf-datasets'


# ---------------------------------------------------------------------------------------- loading


def _load(source: DatasetSource):
    """The dataset's splits (a DatasetDict), or DatasetSourceError in one line."""
    try:
        import datasets
    except ImportError:
        raise DatasetSourceError(
            f'--data-dir {source.text}: reading Hugging Face datasets needs the datasets '
            f"package: pip install 'adni-timm[hf]'"
        ) from None
    try:
        if source.saved:
            loaded = datasets.load_from_disk(source.path)
        else:
            loaded = datasets.load_dataset(source.path, source.config)
    except (OSError, ValueError, ImportError, datasets.exceptions.DatasetNotFoundError) as e:
        # ConnectionError (offline, not cached) and FileNotFoundError are OSErrors
        message = ' '.join(str(e).split()) or type(e).__name__
        offline = getattr(datasets.config, 'HF_HUB_OFFLINE', False) or os.environ.get(
            'HF_DATASETS_OFFLINE'
        )
        hint = (
            ' (offline: it must be in the datasets cache, HF_DATASETS_CACHE)'
            if offline and not source.local
            else ''
        )
        raise DatasetSourceError(
            f'--data-dir {source.text}: the dataset cannot be loaded{hint}: {message[:300]}'
        ) from None
    if isinstance(loaded, datasets.Dataset):  # one split: a dataset of training images
        loaded = datasets.DatasetDict({'train': loaded})
    return loaded


def _columns(loaded) -> set[str]:
    return {c for split in loaded.values() for c in split.column_names}


def _folder_labels(ds, classes: tuple[str, ...]) -> list[int] | None:
    """Labels from the class folders of an imagefolder's files (``train/NC/x.png``): datasets
    drops the folder labels when a metadata file is present. None when a file is elsewhere."""
    paths = [image.get('path') if isinstance(image, dict) else None for image in ds['image'][:]]
    names = [Path(p).parent.name if p else None for p in paths]
    if not names or any(n not in classes for n in names):
        return None
    return [classes.index(n) for n in names]


# ----------------------------------------------------------------------------------------- labels


def _label_names(feature, values: Sequence, classes: tuple[str, ...], text: str) -> list[int]:
    """Each row's index in ``classes``; a label the classes cannot place is a DataError."""
    import datasets

    fix = (
        f'give --classes in label order with every class the dataset has (now {",".join(classes)})'
    )
    # a ClassLabel stores a missing label as -1 (which would index the last class)
    missing = sum(v is None or (isinstance(v, int) and v < 0) for v in values)
    if missing:
        raise DataError(
            f'--data-dir {text}: {missing} row(s) have no label (None or -1): label them, or '
            f'drop them with Dataset.filter'
        )
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        if sorted(names) != sorted(classes):
            raise DataError(
                f'--data-dir {text}: the label names {",".join(names)} are not the classes '
                f'{",".join(classes)}: {fix}'
            )
        by_index = [classes.index(n) for n in names]  # by name: the dataset's order may be any
        if by_index != list(range(len(names))):
            _logger.info(
                'labels: the dataset numbers them %s; mapped by name to %s',
                ', '.join(f'{n}={i}' for i, n in enumerate(names)),
                ', '.join(f'{c}={i}' for i, c in enumerate(classes)),
            )
        return [by_index[int(v)] for v in values]
    dtype = getattr(feature, 'dtype', '')
    if str(dtype).startswith(('int', 'uint')):
        bad = sorted({int(v) for v in values if not 0 <= int(v) < len(classes)})
        if bad:
            raise DataError(
                f'--data-dir {text}: label values {bad[:5]} are not indices of the classes '
                f'{",".join(classes)}: {fix}, or give the labels names (a ClassLabel)'
            )
        _logger.warning(
            'labels: integers without class names, read as indices of --classes (%s); give the '
            'dataset a ClassLabel or name the labels if it numbers them otherwise',
            ', '.join(f'{i}={c}' for i, c in enumerate(classes)),
        )
        return [int(v) for v in values]
    if 'string' in str(dtype):
        unknown = sorted({str(v) for v in values} - set(classes))
        if unknown:
            raise DataError(
                f'--data-dir {text}: label values {", ".join(unknown[:5])} are not classes '
                f'{",".join(classes)}: {fix}'
            )
        return [classes.index(str(v)) for v in values]
    raise DataError(
        f'--data-dir {text}: the label column is {feature}: give class names or integers '
        f'(a ClassLabel)'
    )


# ---------------------------------------------------------------------------------------- writing


@dataclass
class _Row:
    split: str
    row: int  # in its split
    scan: str
    subject: str | None
    slice_index: int | None
    label: int


def _image_bytes(image: Any, where: str) -> tuple[bytes, str]:
    """(file bytes, extension): PNG / JPEG as they are; anything else decoded and written as PNG
    (modes PNG cannot hold become 8-bit grayscale by ``images.to_gray``, as when read)."""
    from PIL import Image, UnidentifiedImageError

    data = image.get('bytes') if isinstance(image, dict) else None
    path = image.get('path') if isinstance(image, dict) else None
    if data is None and path:
        data = Path(path).read_bytes()
    if not data:
        raise DataError(f'{where}: the image is empty (no bytes and no readable path)')
    if data.startswith(_PNG):
        return data, 'png'
    if data.startswith(_JPEG):
        return data, 'jpeg'
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in _PNG_MODES:
                from .images import to_gray  # the conversion every reader of a slice applies

                im = to_gray(im)
            buffer = io.BytesIO()
            im.save(buffer, 'PNG')
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f'{where}: the image cannot be decoded ({e})') from None
    return buffer.getvalue(), 'png'


def _column(ds, name: str) -> list | None:
    # ds[name][:]: datasets >= 4 returns a lazy Column whose list() reads row by row (1.7 s per
    # 30k rows); a slice reads it at once (and is a plain list copy on older versions)
    return ds[name][:] if name in ds.column_names else None


def _splits(loaded, text: str) -> tuple[dict, list[str]]:
    """{split: dataset with the image column undecoded}, and notes on what is not used."""
    import datasets

    notes = []
    columns = _columns(loaded)
    missing = [c for c in ('image',) if c not in columns]
    if missing:
        raise DataError(
            f'--data-dir {text}: no {" or ".join(missing)} column (columns: '
            f'{", ".join(sorted(columns))}); rename them with Dataset.rename_column'
        )
    unused = sorted(set(loaded) - set(SPLITS))
    if unused:
        notes.append(f'split(s) {", ".join(unused)} not used ({_UNUSED_SPLITS_NOTE})')
    if not set(loaded) & set(SPLITS):
        raise DataError(
            f'--data-dir {text}: no train or test split (splits: {", ".join(loaded)}); name '
            f'the shards data/train-*.parquet and data/test-*.parquet, or split folders train/ '
            f'and test/'
        )
    out = {}
    for split in SPLITS:
        if split not in loaded:
            continue
        ds = loaded[split]
        keep = [c for c in ('image', 'label', 'scan', 'subject', 'slice') if c in ds.column_names]
        ds = ds.select_columns(keep)
        try:
            out[split] = ds.cast_column('image', datasets.Image(decode=False))
        except (ValueError, TypeError) as e:
            raise DataError(f'--data-dir {text}: the image column is not images ({e})') from None
    return out, notes


def _rows(splits: dict, classes: tuple[str, ...], text: str) -> list[_Row]:
    """One row per image: split, scan, subject, slice number and label (no pixels yet)."""
    rows: list[_Row] = []
    for split, ds in splits.items():
        if 'label' in ds.column_names:
            labels = _label_names(ds.features['label'], _column(ds, 'label'), classes, text)
        else:  # an imagefolder with a metadata file: its class folders name the labels
            labels = _folder_labels(ds, classes)
            if labels is None:
                raise DataError(
                    f'--data-dir {text}: no label column in {split} (columns: '
                    f'{", ".join(ds.column_names)}) and its files are not in class folders '
                    f'{",".join(classes)}: add a label column (class names or a ClassLabel)'
                )
        scans, subjects = _column(ds, 'scan'), _column(ds, 'subject')
        numbers = _column(ds, 'slice')
        position: Counter = Counter()
        for i, label in enumerate(labels):
            scan = f'{split}-{i:06d}' if scans is None else scans[i]
            if scan is None or str(scan).strip() == '':
                raise DataError(
                    f'{text} {split} row {i}: no scan id; fill the scan column for every row'
                )
            scan = str(scan)
            if numbers is not None and numbers[i] is not None:
                index = int(numbers[i])
            else:
                index = position[scan] if scans is not None else 0
            position[scan] += 1
            subject = None if subjects is None or subjects[i] is None else str(subjects[i])
            rows.append(_Row(split, i, scan, subject, index, label))
    return rows


def _file_ids(scans: set[str]) -> dict[str, str]:
    """Scan id -> the file-name id: the id itself when it is file-name safe, else a safe form
    with a short hash (two ids never share a file name)."""
    ids = {}
    for scan in sorted(scans):
        safe = _safe(scan)
        ids[scan] = (
            safe if safe == scan else f'{safe}-{hashlib.sha1(scan.encode()).hexdigest()[:6]}'
        )
    return ids


def _check_groups(rows: list[_Row], text: str) -> None:
    labels, subjects = defaultdict(set), defaultdict(set)
    for r in rows:
        labels[r.scan].add(r.label)
        if r.subject is not None:
            subjects[r.scan].add(r.subject)
    mixed = sorted(s for s, v in labels.items() if len(v) > 1)
    if mixed:
        raise DataError(
            f'--data-dir {text}: scan(s) {", ".join(mixed[:5])} have rows of two labels: a scan '
            f'is one diagnosis; fix the label or scan column'
        )
    two = sorted(s for s, v in subjects.items() if len(v) > 1)
    if two:
        raise DataError(
            f'--data-dir {text}: scan(s) {", ".join(two[:5])} have rows of two subjects: a scan '
            f'is one person; fix the subject or scan column'
        )


def _note_text(source: DatasetSource, has_scan: bool, counts: dict[str, int]) -> str:
    what = 'Hugging Face dataset' + ('' if source.local else f' {source.path}')
    if source.local:
        what += f' {Path(source.path).name} (on disk)'
    if source.config:
        what += f' (config {source.config})'
    what += ', ' + ', '.join(f'{split} {n} images' for split, n in counts.items())
    if not has_scan:
        what += (
            '; no scan column: each image is its own scan, so a split cannot keep the images '
            'of one scan or person together'
        )
    return what


def _write(rows: list[_Row], splits: dict, classes, tmp: Path, source: DatasetSource, meta) -> None:
    ids = _file_ids({r.scan for r in rows})
    for split in splits:
        for name in classes:
            (tmp / split / name).mkdir(parents=True, exist_ok=True)
    paths: dict[tuple[str, int], Path] = {}
    taken: set[Path] = set()
    for r in rows:
        path = tmp / r.split / classes[r.label] / f'{ids[r.scan]}_{r.slice_index}'
        if path in taken:  # the same (scan, slice) twice would count twice downstream
            raise DataError(
                f'--data-dir {source.text}: scan {r.scan} has slice {r.slice_index} twice in '
                f'{r.split}: fix the slice column, or drop it (slices are then numbered in order)'
            )
        paths[(r.split, r.row)] = path
        taken.add(path)
    for split, ds in splits.items():
        row = 0
        for batch in ds.select_columns(['image']).iter(batch_size=256):
            for image in batch['image']:
                stem = paths[(split, row)]
                data, ext = _image_bytes(image, f'{source.text} {split} row {row}')
                stem.with_name(f'{stem.name}.{ext}').write_bytes(data)
                row += 1
    subject_of = {r.scan: r.subject for r in rows if r.subject is not None}
    if subject_of:
        with (tmp / 'manifest.csv').open('w', encoding='utf-8', newline='') as f:
            writer = csv.writer(f, lineterminator='\n')
            # the columns data.note.subjects_of reads (adni-prepare's manifest), + the dataset's id
            writer.writerow(['scan', 'subject', 'dataset_scan'])
            for scan in sorted(subject_of):
                writer.writerow([ids[scan], subject_of[scan], scan])
    note = {'synthetic': False, 'note': meta['note'], 'hub_dataset': meta}
    # the note last: a folder without it was not finished
    (tmp / 'dataset.json').write_text(json.dumps(note, indent=2) + '\n', encoding='utf-8')


def _key(loaded, classes, source: DatasetSource) -> str:
    fingerprints = {split: loaded[split]._fingerprint for split in sorted(loaded)}
    text = json.dumps(
        {
            'format': FORMAT,
            'fingerprints': fingerprints,
            'classes': list(classes),
            'config': source.config,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _counts(root: Path) -> tuple[dict, dict, dict]:
    images, scans, subjects = {}, {}, {}
    subject_of = {}
    manifest = root / 'manifest.csv'
    if manifest.is_file():
        with manifest.open(encoding='utf-8', newline='') as f:
            subject_of = {r['scan']: r['subject'] for r in csv.DictReader(f)}
    for split in SPLITS:
        files = [p for p in (root / split).glob('*/*') if p.is_file()]
        if not (root / split).is_dir():
            continue
        ids = {p.stem.rsplit('_', 1)[0] for p in files}
        images[split], scans[split] = len(files), len(ids)
        subjects[split] = len({subject_of.get(i, i) for i in ids})
    return images, scans, subjects


def materialise(
    source: DatasetSource | str,
    classes: Sequence[str] = LABEL_NAMES,
    cache_dir: str | os.PathLike | None = None,
) -> Materialised:
    """The dataset written once into the slice layout (see the module docstring); reused while
    the dataset's fingerprint, the classes and the format stay the same."""
    if not isinstance(source, DatasetSource):
        parsed = parse_source(source)
        if parsed is None:
            raise DatasetSourceError(f'{source} is a data folder, not a dataset: use it as it is')
        source = parsed
    classes = parse_classes(classes)
    loaded = _load(source)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / f'{source.name}-{_key(loaded, classes, source)}'
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # a dependency of huggingface_hub and datasets

    notes: list[str] = []
    reused = True
    with FileLock(str(target) + '.lock'):
        if not (target / 'dataset.json').is_file():
            reused = False
            splits, notes = _splits(loaded, source.text)
            rows = _rows(splits, classes, source.text)
            _check_groups(rows, source.text)
            has_scan = 'scan' in _columns(loaded)
            counts = Counter(r.split for r in rows)
            meta = {
                'source': source.text,
                'path': source.path,
                'config': source.config,
                'local': source.local,
                'fingerprints': {s: loaded[s]._fingerprint for s in sorted(loaded)},
                'columns': sorted(_columns(loaded)),
                'scan_column': has_scan,
                'subject_column': 'subject' in _columns(loaded),
                'slice_column': 'slice' in _columns(loaded),
                'classes': list(classes),
                'format': FORMAT,
                'note': _note_text(source, has_scan, dict(sorted(counts.items()))),
            }
            tmp = target.with_name(f'.{target.name}.tmp-{os.getpid()}')
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                _write(rows, splits, classes, tmp, source, meta)
                shutil.rmtree(target, ignore_errors=True)  # an unfinished folder (no note)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    found = json.loads((target / 'dataset.json').read_text(encoding='utf-8'))['hub_dataset']
    if not found['scan_column']:
        notes.append(
            'no scan column: each image is its own scan, so splits cannot keep the images of '
            'one scan or person together (add a scan column, and a subject column if known)'
        )
    if found['scan_column'] and not found['slice_column']:
        notes.append('no slice column: slices are numbered by their order in the scan')
    images, scans, subjects = _counts(target)
    return Materialised(
        target,
        source,
        images,
        scans,
        subjects,
        has_scan=found['scan_column'],
        has_subject=found['subject_column'],
        reused=reused,
        notes=notes,
    )


def resolve_data_dir(
    text: str | os.PathLike,
    classes: Sequence[str] = LABEL_NAMES,
    cache_dir: str | os.PathLike | None = None,
    log: bool = True,
) -> Path:
    """The data folder ``--data-dir text`` means: the folder itself, or a dataset materialised
    into the slice layout, with what was read and assumed logged (``log``: False on all but one
    process of a launch)."""
    source = parse_source(text)
    if source is None:
        return Path(text)
    done = materialise(source, classes, cache_dir)
    if log:
        _logger.info('dataset %s', done.summary())
        for note in done.notes:
            _logger.warning('dataset %s: %s', source.text, note)
    return done.data_dir
