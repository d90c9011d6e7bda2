"""From slices to batches: timm transforms, the decoded-slice cache, the dataset and its loader.

Images are read as 8-bit grayscale (PIL mode ``'L'``) and preprocessed with timm's own
``resolve_data_config`` + ``create_transform``, so the eval transform is exactly what anyone who
downloads the weights gets from timm. ``preload`` decodes every slice once into one contiguous
uint8 array that forked loader workers share copy-on-write; slices of another size are kept as they
are, so training and evaluation both apply the exported preprocessing to the original image.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.data.auto_augment import AugmentOp

from ..utils.display import preview
from ..utils.hardware import available_memory, local_process_count
from ..utils.progress import Progress
from ..utils.threads import thread_map
from .images import read_image
from .slices import DataError, Slice

_logger = logging.getLogger(__name__)


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


def preload(
    slices: Sequence[Slice], num_workers: int = 0, progress: str = 'none'
) -> SliceCache | None:
    """Decode every slice once into a SliceCache (grayscale,
    each at its own size); None if it won't fit.

    Call in the main process BEFORE creating the DataLoader, so forked workers share the array.
    ``num_workers`` threads decode in parallel. Bad files raise (run ``resolve_bad_images`` first).
    Logs one line saying what it decided (see ``cache_fits``).
    """
    paths = list(dict.fromkeys(s.path for s in slices))
    if not paths:
        raise DataError('nothing to preload: the slice list is empty')
    sizes = thread_map(_image_size, paths, num_workers)
    width, height = Counter(sizes).most_common(1)[0][0]
    fits, decision = cache_fits(sum(w * h for w, h in sizes))
    (_logger.info if fits else _logger.warning)(decision)
    if not fits:
        return None
    common = [p for p, size in zip(paths, sizes) if size == (width, height)]
    images = np.empty((len(common), height, width), np.uint8)

    bar = Progress(
        progress, len(common), 'decoding slices', unit='slices', summary=True, logger=_logger
    )

    def fill(i: int) -> None:
        images[i] = np.asarray(read_image(common[i]))
        bar.update(1)

    with bar:
        thread_map(fill, range(len(common)), num_workers)
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
                    f'{len(missing)} slice(s) are not in the cache: {preview(missing)}. '
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
