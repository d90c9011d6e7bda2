"""ADNI AD_NC layout: scanning, patient-level splits, datasets, loaders, and the ``check`` CLI.

Layout (what ADNI users have, and what ``adni_timm.synthetic`` writes)::

    DATA_DIR/{train,test}/{NC,AD}/<patient>_<slice>.jpeg     (.jpg and .png too)

Labels follow the class list, never the alphabet: NC = 0, AD = 1 (the positive
class); more classes come from an explicit list such as ``('NC', 'MCI', 'AD')``.
Validation is carved from train *by patient*, stratified by class: splitting by
slice puts the same patient on both sides and inflates validation scores.

Images are read as 8-bit grayscale (PIL mode ``'L'``) and preprocessed with timm's
own ``resolve_data_config`` + ``create_transform``, so the eval transform is exactly
what anyone who downloads the weights gets from timm. ``preload`` decodes every
slice once into one contiguous uint8 array (the full AD_NC set is ~1.9 GB) that
forked loader workers share copy-on-write; slices of another size are kept as they
are, so training and evaluation both apply the exported preprocessing to the
original image.

The ``check`` report (``check_data_dir``) is what ``adni-check-data DATA_DIR`` prints (its
parsing lives in ``adni_timm.cli.check``; ``python -m adni_timm.data check DATA_DIR`` works too).
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform, resolve_data_config
from timm.data.auto_augment import AugmentOp

from .hardware import available_memory, local_process_count
from .input_check import is_colour  # one rule for every front end (the demo's)
from .models import LABEL_NAMES

__all__ = [
    'SPLITS',
    'IMAGE_EXTENSIONS',
    'DataError',
    'Slice',
    'positive_index',
    'binary_labels',
    'parse_classes',
    'parse_file_name',
    'slice_count_outliers',
    'scan_split',
    'slice_key',
    'summarize',
    'resolve_bad_images',
    'is_colour',
    'is_colour_image',
    'build_transforms',
    'read_image',
    'SliceCache',
    'preload',
    'SliceDataset',
    'create_loader',
    'CheckReport',
    'check_data_dir',
]

_logger = logging.getLogger(__name__)

SPLITS = ('train', 'test')
IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')
FILE_NAME_PATTERN = '<patient>_<slice>.jpeg'
# stem; the slice is the last '_<digits>', the patient all before it (ids may hold underscores)
_FILE_NAME = re.compile(r'^(?P<patient>.+)_(?P<slice>\d+)$')
# an ADNI subject id (site_S_number, e.g. 002_S_0295) is a whole patient id, not <patient>_<slice>
_ADNI_SUBJECT = re.compile(r'^\d{3}_S_\d{4}$')
_HIGH_DEPTH_MODES = {'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'}
_GRAY_MODES = {'1', 'L', 'LA', 'La'} | _HIGH_DEPTH_MODES
_PREVIEW = 10  # items named in an error before "... and N more"


class DataError(ValueError):
    """The data on disk does not fit the expected layout;
    the message names the file or folder and the fix.
    """


@dataclass(frozen=True)
class Slice:
    """One image file: an axial slice of one patient."""

    path: str
    patient: str
    label: int
    slice_index: int | None


def _preview(items: Sequence, n: int = _PREVIEW) -> str:
    items = [str(i) for i in items]
    more = f' ... and {len(items) - n} more' if len(items) > n else ''
    return ', '.join(items[:n]) + more


def positive_index(classes: Sequence[str]) -> int:
    """Index of the positive class: ``AD`` (index 1 for the default NC, AD), else the last class."""
    return list(classes).index('AD') if 'AD' in classes else len(classes) - 1


def binary_labels(slices: Iterable[Slice], classes: Sequence[str]) -> np.ndarray:
    """1 where a slice is of the positive class (AD),
    else 0: the AD-vs-rest labels every metric uses.
    """
    positive = positive_index(classes)
    return np.array([int(s.label == positive) for s in slices], dtype=np.int64)


def slice_key(path: str | os.PathLike) -> str:
    """``split/class/file`` of a slice path: names a slice independently of where DATA_DIR lives."""
    return '/'.join(Path(path).parts[-3:])


def parse_classes(text: str | Sequence[str]) -> tuple[str, ...]:
    """'NC,AD' -> ('NC', 'AD'): the class folders in label order (index = label)."""
    classes = tuple(
        c.strip() for c in (text.split(',') if isinstance(text, str) else text) if c.strip()
    )
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(
            f'classes {text!r}: give at least two distinct class folder names in label order, '
            f'e.g. NC,AD (NC = 0, AD = 1) or NC,MCI,AD'
        )
    return classes


# ----------------------------------------------------------------------------------------- scanning


def _require_data_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise DataError(
            f'DATA_DIR {data_dir} does not exist or is not a folder: pass the folder that holds '
            f'train/ and test/ (the ADNI AD_NC folder)'
        )


def _split_dir(data_dir: Path, split: str, classes: Sequence[str]) -> Path:
    _require_data_dir(data_dir)
    split_dir = data_dir / split
    if split_dir.is_dir():
        return split_dir
    hint = ''
    subdirs = [p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith('.')]
    if len(subdirs) == 1:
        hint = (
            f' {data_dir} holds a single folder {subdirs[0].name!r}: '
            f'did you mean --data-dir {subdirs[0]}?'
        )
    raise DataError(
        f'no {split!r} folder in {data_dir}: expected {data_dir / split}/{{{",".join(classes)}}}/'
        f'{FILE_NAME_PATTERN}.{hint}'
    )


def parse_file_name(path: Path, file_is_patient: bool = False) -> tuple[str, int | None] | None:
    """(patient, slice index) from ``<patient>_<slice>.jpeg``;
    None when the name has no patient id.
    """
    if file_is_patient:
        return path.stem, None
    if _ADNI_SUBJECT.match(path.stem):  # 002_S_0295.jpeg: a subject, no slice number
        return None
    m = _FILE_NAME.match(path.stem)
    return (m['patient'], int(m['slice'])) if m else None


def _scan(split_dir: Path, classes: Sequence[str], file_is_patient: bool):
    """(slices, problems, ignored files) of one split
    folder; problems are messages, not exceptions.
    """
    problems, ignored, slices, unnamed = [], [], [], []
    folders = sorted(p for p in split_dir.iterdir() if not p.name.startswith('.'))
    for p in folders:
        if not p.is_dir():
            ignored.append(p)
        elif p.name not in classes:
            case = next((c for c in classes if c.lower() == p.name.lower()), None)
            hint = f' (folder names are case-sensitive: rename it to {case})' if case else ''
            problems.append(
                f'unknown class folder {p}{hint}: the classes are '
                f'{",".join(classes)} (label = position). Pass --classes with every '
                f'class in label order (e.g. NC,MCI,AD), or move the folder out.'
            )
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            problems.append(
                f'missing class folder {folder}: create it with the {name} slices, '
                f'or leave {name} out of --classes'
            )
            continue
        images = []
        for f in sorted(folder.iterdir()):
            if f.name.startswith('.'):
                continue
            (images if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS else ignored).append(f)
        if not images:
            problems.append(
                f'empty class folder {folder}: it holds no {"/".join(IMAGE_EXTENSIONS)} files; '
                f'put the {name} slices there, or leave {name} out of --classes'
            )
        for f in images:
            parsed = parse_file_name(f, file_is_patient)
            if parsed is None:
                unnamed.append(f)
            else:
                slices.append(Slice(str(f), parsed[0], label, parsed[1]))
    if unnamed:
        problems.append(
            f'{len(unnamed)} file name(s) without a patient id in {split_dir}: '
            f'{_preview(unnamed)}. Rename them to {FILE_NAME_PATTERN}, or make each file its own '
            f'patient with --file-is-patient (file_is_patient=True; see docs/DATA.md).'
        )
    problems += _patients_in_two_classes(slices)
    problems += _duplicate_slices(slices)
    return sorted(slices, key=_slice_order), problems, ignored


def _duplicate_slices(slices: Iterable[Slice]) -> list[str]:
    """Two files of one (patient, slice) (``123_5.png`` and ``123_05.png``) would count twice."""
    files = defaultdict(list)
    for s in slices:
        if s.slice_index is not None:
            files[(s.patient, s.slice_index)].append(s.path)
    return [
        f'patient {patient} slice {index} is in {len(paths)} files ({", ".join(sorted(paths))}): '
        f'the same slice would count {len(paths)} times; keep one file'
        for (patient, index), paths in sorted(files.items())
        if len(paths) > 1
    ]


def slice_count_outliers(slices: Sequence[Slice]) -> str | None:
    """A note naming the patients whose slice count is far (< half or > twice) from the median."""
    counts = Counter(s.patient for s in slices)
    if len(counts) < 2:
        return None
    median = statistics.median(counts.values())
    odd = sorted(p for p, n in counts.items() if n < median / 2 or n > median * 2)
    if not odd:
        return None
    return (
        f'{len(odd)} patient(s) have a slice count far from the median {median:g}: '
        f'{_preview([f"{p} ({counts[p]})" for p in odd])}; check for missing or extra files'
    )


def _slice_order(s: Slice):
    return s.label, s.patient, -1 if s.slice_index is None else s.slice_index, s.path


def _patients_in_two_classes(slices: Iterable[Slice]) -> list[str]:
    where = defaultdict(dict)
    for s in slices:
        where[s.patient].setdefault(s.label, s.path)
    mixed = sorted(p for p, labels in where.items() if len(labels) > 1)
    return [
        f'patient {p} has slices in several class folders ({", ".join(where[p].values())}): a '
        f'patient has one diagnosis; move its slices into one class folder'
        for p in mixed
    ]


def scan_split(
    data_dir,
    split: str = 'train',
    classes: Sequence[str] = LABEL_NAMES,
    file_is_patient: bool = False,
) -> list[Slice]:
    """Every image of ``DATA_DIR/split/<class>/``, in a deterministic order (class, patient, slice).

    Raises DataError naming every layout problem found (missing folder, unknown or empty
    class folder, file names without a patient id, a patient in two class folders).
    Non-image files are ignored with a warning.
    """
    classes = parse_classes(classes)
    slices, problems, ignored = _scan(
        _split_dir(Path(data_dir), split, classes), classes, file_is_patient
    )
    if problems:
        raise DataError('\n'.join(problems))
    odd = slice_count_outliers(slices)
    if odd:
        _logger.warning('%s/%s: %s', Path(data_dir).name, split, odd)
    if ignored:
        _logger.warning(
            'ignored %d entries that are not %s files: %s',
            len(ignored),
            '/'.join(IMAGE_EXTENSIONS),
            _preview(ignored),
        )
    return slices


def summarize(slices: Sequence[Slice], classes: Sequence[str] = LABEL_NAMES) -> list[dict]:
    """Per class: patients, slices and slices per patient (min / median / max)."""
    rows = []
    for label, name in enumerate(classes):
        per_patient = Counter(s.patient for s in slices if s.label == label)
        counts = sorted(per_patient.values()) or [0]
        rows.append(
            dict(
                name=name,
                label=label,
                patients=len(per_patient),
                slices=sum(per_patient.values()),
                per_patient=(counts[0], statistics.median(counts), counts[-1]),
            )
        )
    return rows


# ------------------------------------------------------------------------------------- image checks


@dataclass(frozen=True)
class _ImageInfo:
    path: str
    size: tuple[int, int] | None  # (width, height)
    mode: str | None
    problem: str | None


def _inspect(path: str) -> _ImageInfo:
    """Open and fully decode one file (truncation shows only when the pixels are read)."""
    size = mode = None
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            im.load()
    except UnidentifiedImageError:
        return _ImageInfo(path, None, None, 'not an image (PIL cannot identify it)')
    except (FileNotFoundError, PermissionError) as e:
        return _ImageInfo(path, None, None, f'unreadable ({e.strerror})')
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data; PIL raises these
        return _ImageInfo(path, size, mode, f'truncated or corrupt image ({e})')
    return _ImageInfo(path, size, mode, None)


def _map(fn: Callable, items: Sequence, num_workers: int) -> list:
    """``[fn(x) for x in items]``, on threads when asked (PIL decodes without holding the GIL)."""
    if num_workers <= 0 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(fn, items, chunksize=64))


def _inspect_all(slices: Sequence[Slice], num_workers: int = 0) -> list[_ImageInfo]:
    return _map(_inspect, [s.path for s in slices], num_workers)


def is_colour_image(path: str | os.PathLike) -> bool:
    """``is_colour`` of an image file (a colour photo, not a slice); False when it cannot open."""
    try:
        with Image.open(path) as im:
            return is_colour(im)
    except (OSError, SyntaxError, ValueError):
        return False


def _notes(infos: Sequence[_ImageInfo]) -> list[str]:
    """Things we fix on the fly but the user should know: colour files, mixed sizes."""
    notes = []
    colour = [i.path for i in infos if i.mode and i.mode not in _GRAY_MODES]
    if colour:
        notes.append(
            f'{len(colour)} colour image(s) are converted '
            f'to grayscale (L) when read: {_preview(colour)}'
        )
    deep = [i.path for i in infos if i.mode in _HIGH_DEPTH_MODES]
    if deep:
        notes.append(
            f'{len(deep)} 16-bit / float image(s) are scaled to 8 '
            f'bits by their own maximum when read: {_preview(deep)}'
        )
    sizes = Counter(i.size for i in infos if i.size)
    if len(sizes) > 1:
        (w, h), _ = sizes.most_common(1)[0]
        others = [i.path for i in infos if i.size and i.size != (w, h)]
        notes.append(
            f"mixed image sizes ({_format_counts(sizes, _size_text)}): the model's transform "
            f'resizes each image (short side, then centre crop), in training and evaluation alike; '
            f'not {w}x{h}: {_preview(others)}'
        )
    return notes


def resolve_bad_images(
    slices: Sequence[Slice], skip_bad: bool = False, num_workers: int = 0, what: str = 'image'
) -> list[Slice]:
    """Decode every file once, before hours of training or an evaluation depend on it.

    Default: raise DataError listing EVERY bad file. ``skip_bad=True`` drops them with a warning
    that says how many (``what`` names the set, e.g. 'test'). Colour files and mixed sizes are
    logged as notes (they are converted / resized when read).
    """
    infos = _inspect_all(slices, num_workers)
    for note in _notes(infos):
        _logger.info('note: %s', note)
    bad = {i.path: i.problem for i in infos if i.problem}
    if not bad:
        return list(slices)
    listing = '\n'.join(f'  {path}: {reason}' for path, reason in bad.items())
    if not skip_bad:
        raise DataError(
            f'{len(bad)} {what} file(s) cannot be decoded:\n{listing}\n'
            f'Replace or delete them, or leave them out with --skip-bad-images.'
        )
    _logger.warning(
        '--skip-bad-images: dropped %d of %d %s file(s) that cannot be decoded:\n%s',
        len(bad),
        len(infos),
        what,
        listing,
    )
    return [s for s in slices if s.path not in bad]


# --------------------------------------------------------------------------------------- transforms


def build_transforms(
    model,
    *,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    auto_augment: str | None = None,
    re_prob: float = 0.0,
    interpolation: str | None = None,
) -> tuple[Callable, Callable]:
    """(train_tf, eval_tf) from timm's ``resolve_data_config(model=model)`` + ``create_transform``.

    ``eval_tf`` is exactly ``create_transform(**resolve_data_config(model=model))``: what anyone who
    downloads the weights gets from timm. The image size comes from the model's pretrained_cfg
    ``input_size``. All of timm's train augmentations (colour jitter, RandAugment / AutoAugment /
    AugMix, random erasing) work on 1-channel 'L' images; Posterize is kept at >= 1 bit (see
    ``_fix_posterize``).
    """
    config = resolve_data_config(model=model)
    channels = config['input_size'][0]
    if len(config['mean']) != channels or len(config['std']) != channels:
        raise ValueError(
            f"the model's data config has input_size {config['input_size']} but mean "
            f'{config["mean"]} / std {config["std"]}: give it one mean and std per input channel, '
            f'as the adni_convnext_* models do (see docs/DATA.md, "Preprocessing").'
        )
    eval_tf = create_transform(**config)
    train_config = dict(config, interpolation=interpolation or config['interpolation'])
    try:
        train_tf = create_transform(
            **train_config,
            is_training=True,
            scale=tuple(scale),
            ratio=tuple(ratio),
            hflip=hflip,
            color_jitter=color_jitter or None,
            auto_augment=auto_augment or None,
            re_prob=re_prob,
        )
    except AssertionError as e:  # timm asserts on unknown auto-augment policy strings
        raise ValueError(
            f'auto_augment={auto_augment!r} is not a timm policy ({e}): use e.g. '
            f'rand-m9-mstd0.5-inc1, original or augmix-m5'
        ) from e
    _fix_posterize(train_tf)
    return train_tf, eval_tf


def _keep_one_bit(level_fn, magnitude, hparams):
    return tuple(max(1, bits) for bits in level_fn(magnitude, hparams))


def _fix_posterize(transform) -> None:
    """Make timm's Posterize ops keep at least 1 bit.

    At full strength (magnitude 10, e.g. reached by rand-m9-mstd0.5's noise) timm asks PIL to keep
    0 bits, which current Pillow rejects with a ValueError that kills training mid-epoch. 1 bit is
    the closest valid setting. ``partial`` of module-level functions keeps the transform picklable.
    """
    for t in getattr(transform, 'transforms', []):
        ops = list(getattr(t, 'ops', [])) + [op for sub in getattr(t, 'policy', []) for op in sub]
        for op in ops:
            if isinstance(op, AugmentOp) and 'Posterize' in op.name and op.level_fn is not None:
                op.level_fn = partial(_keep_one_bit, op.level_fn)


# --------------------------------------------------------------------------------- reading, caching


def read_image(path: str) -> Image.Image:
    """One slice as a PIL 'L' (8-bit grayscale) image.

    Colour files are converted; 16-bit / float files are scaled by their own maximum
    (PIL's plain conversion would clip everything above 255 to white).
    """
    with Image.open(path) as im:
        if im.mode == 'L':
            return im.copy()
        if im.mode in _HIGH_DEPTH_MODES:
            pixels = np.asarray(im, dtype=np.float32)
            peak = float(pixels.max())
            return Image.fromarray(
                np.round(np.clip(pixels, 0, None) * (255 / peak if peak > 0 else 0)).astype(
                    np.uint8
                )
            )
        return im.convert('L')


class SliceCache:
    """Decoded slices: one contiguous uint8 array ``[N, H, W]`` plus an index by path.

    One numpy buffer (not one Python object per image), so forked DataLoader workers
    share it copy-on-write instead of each holding a copy. Slices of another size (rare)
    are kept apart at their own size (``odd``), never resized: the transforms then see
    the same image in training as in evaluation.
    """

    def __init__(
        self, images: np.ndarray, paths: Sequence[str], odd: dict[str, np.ndarray] | None = None
    ):
        if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(paths):
            raise ValueError('SliceCache needs a uint8 array [N, H, W] and N paths')
        self.images = images
        self.index = {p: i for i, p in enumerate(paths)}
        self.odd = dict(odd or {})

    def __len__(self) -> int:
        return len(self.index) + len(self.odd)

    def __contains__(self, path: str) -> bool:
        return path in self.index or path in self.odd

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + sum(a.nbytes for a in self.odd.values())

    def image(self, path: str) -> Image.Image:
        i = self.index.get(path)
        return Image.fromarray(self.images[i] if i is not None else self.odd[path])


def _image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:  # reads the header only
        return im.size


def cache_fits(nbytes: int) -> tuple[bool, str]:
    """Whether a slice cache of ``nbytes`` per process fits in memory, and one line that says why.

    Every process on this machine (DDP) holds its own copy; 80% of the usable memory (the smaller
    of available memory and the container's limit) is the ceiling, leaving room for the model and
    the loader workers.
    """
    processes = local_process_count()
    usable, source = available_memory()
    need = nbytes * processes
    per = f'{nbytes / 2**30:.2f} GiB' + (f' x {processes} processes' if processes > 1 else '')
    if usable is None:
        return True, f'slice cache: {per}; usable memory unknown, caching'
    fits = need <= 0.8 * usable
    verdict = (
        'caching' if fits else 'too much: reading slices from disk instead (slower, same results)'
    )
    return fits, f'slice cache: {per} of {usable / 2**30:.1f} GiB usable ({source}): {verdict}'


def preload(slices: Sequence[Slice], num_workers: int = 0) -> SliceCache | None:
    """Decode every slice once into a SliceCache (grayscale,
    each at its own size); None if it won't fit.

    Call in the main process BEFORE creating the DataLoader, so forked workers share the array.
    ``num_workers`` threads decode in parallel. Bad files raise (run ``resolve_bad_images`` first).
    Logs one line saying what it decided (see ``cache_fits``).
    """
    paths = list(dict.fromkeys(s.path for s in slices))
    if not paths:
        raise DataError('nothing to preload: the slice list is empty')
    sizes = _map(_image_size, paths, num_workers)
    width, height = Counter(sizes).most_common(1)[0][0]
    fits, decision = cache_fits(sum(w * h for w, h in sizes))
    (_logger.info if fits else _logger.warning)(decision)
    if not fits:
        return None
    common = [p for p, size in zip(paths, sizes) if size == (width, height)]
    images = np.empty((len(common), height, width), np.uint8)

    def fill(i: int) -> None:
        images[i] = np.asarray(read_image(common[i]))

    _map(fill, range(len(common)), num_workers)
    odd = {p: np.asarray(read_image(p)) for p, size in zip(paths, sizes) if size != (width, height)}
    if odd:
        _logger.info(
            'note: %d of %d slices are not %dx%d; cached at their own size',
            len(odd),
            len(paths),
            width,
            height,
        )
    return SliceCache(images, common, odd)


class SliceDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` per slice; images
    come from ``cache`` if given, else from disk.
    """

    def __init__(
        self,
        slices: Sequence[Slice],
        transform: Callable | None = None,
        cache: SliceCache | None = None,
    ):
        self.slices = list(slices)
        self.transform = transform
        self.cache = cache
        if cache is not None:
            missing = [s.path for s in self.slices if s.path not in cache]
            if missing:
                raise DataError(
                    f'{len(missing)} slice(s) are not in the cache: {_preview(missing)}. '
                    f'Preload the same slice list the dataset uses.'
                )

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.slices]

    def __len__(self) -> int:
        return len(self.slices)

    def load(self, index: int) -> Image.Image:
        path = self.slices[index].path
        return self.cache.image(path) if self.cache is not None else read_image(path)

    def __getitem__(self, index: int):
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.slices[index].label


def create_loader(
    dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    seed: int = 0,
    persistent_workers: bool = True,
    prefetch_factor: int | None = None,
) -> torch.utils.data.DataLoader:
    """A plain torch DataLoader whose shuffle order is reproducible (its own generator, seeded)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    worker_args = {}
    if num_workers > 0:
        worker_args['persistent_workers'] = persistent_workers
        if prefetch_factor is not None:
            worker_args['prefetch_factor'] = prefetch_factor
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        **worker_args,
    )


# ---------------------------------------------------------------------------------------- check CLI


def _size_text(size) -> str:
    return f'{size[0]}x{size[1]}'


def _format_counts(counts: Counter, fmt: Callable = str) -> str:
    return ', '.join(f'{fmt(k)} ({n})' for k, n in counts.most_common())


@dataclass(frozen=True)
class CheckReport:
    """What ``check_data_dir`` found: the table (lines), notes (fixed on the fly) and problems."""

    lines: list[str]
    notes: list[str]
    problems: list[str]


def check_data_dir(
    data_dir: str | os.PathLike,
    classes: Sequence[str] = LABEL_NAMES,
    file_is_patient: bool = False,
    num_workers: int = 0,
) -> CheckReport:
    """Patients and slices per split and class, image sizes and modes, and every problem found.

    Problems: a missing split or class folder, unknown class folders, bad file names, patients in
    two classes or in both train and test, files that do not decode. ``num_workers`` threads
    decode the images.
    """
    data_dir = Path(data_dir)
    lines = [
        f'DATA_DIR {data_dir}   classes: ' + ', '.join(f'{c}={i}' for i, c in enumerate(classes)),
        f'{"split":<6} {"class":<6} {"patients":>8} {"slices":>7}   slices/patient min/median/max',
    ]
    problems, notes, found = [], [], {}
    try:
        _require_data_dir(data_dir)
    except DataError as e:  # one problem, not one per split
        return CheckReport(lines[:1], notes, [str(e)])
    for split in SPLITS:
        try:
            slices, split_problems, ignored = _scan(
                _split_dir(data_dir, split, classes), classes, file_is_patient
            )
        except DataError as e:
            problems.append(str(e))
            continue
        found[split] = slices
        problems += split_problems
        odd = slice_count_outliers(slices)
        if odd:
            notes.append(f'{split}: {odd}')
        if ignored:
            notes.append(
                f'{split}: ignored {len(ignored)} entries that are not images: {_preview(ignored)}'
            )
        for row in summarize(slices, classes):
            lo, mid, hi = row['per_patient']
            lines.append(
                f'{split:<6} {row["name"]:<6} {row["patients"]:>8} '
                f'{row["slices"]:>7}   {lo}/{mid:g}/{hi}'
            )
    if len(found) == 2:
        from .splits import check_no_leakage  # splits builds on this module

        try:
            check_no_leakage(found['train'], found['test'])
        except DataError as e:
            problems.append(str(e))
    infos = _inspect_all([s for split in found.values() for s in split], num_workers)
    lines.append(
        'image sizes (WxH): '
        + (_format_counts(Counter(i.size for i in infos if i.size), _size_text) or 'none')
    )
    lines.append(
        'image modes: ' + (_format_counts(Counter(i.mode for i in infos if i.mode)) or 'none')
    )
    notes += _notes(infos)
    problems += [f'{i.path}: {i.problem}' for i in infos if i.problem]
    return CheckReport(lines, notes, problems)


if __name__ == '__main__':  # python -m adni_timm.data check DATA_DIR
    from .cli.check import module_main

    sys.exit(module_main())
