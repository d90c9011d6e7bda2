"""Slice files as images: one grayscale conversion, one colour rule, one decode check.

Every front end (training, evaluation, the input check, the demo) reads a slice through
``read_image`` / ``to_gray`` and calls a photo a photo through ``is_colour``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils.display import preview
from ..utils.threads import thread_map
from .slices import DataError, Slice

_logger = logging.getLogger(__name__)

HIGH_DEPTH_MODES = {'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'}
GRAY_MODES = {'1', 'L', 'LA', 'La'} | HIGH_DEPTH_MODES
# a pixel is coloured when its channels spread by more than COLOUR_SPREAD levels; an image is a
# colour image when more than COLOUR_FRACTION of its pixels are (JPEG chroma noise stays below)
COLOUR_SPREAD, COLOUR_FRACTION = 24, 0.01


def is_colour(im: Image.Image) -> bool:
    """Whether the channels of ``im`` clearly differ (grayscale saved as RGB is accepted)."""
    bands = [b for b in im.getbands() if b != 'A']
    if im.mode != 'P' and len(bands) <= 1:
        return False
    rgb = np.asarray(im.convert('RGB'), dtype=np.int16)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float((spread > COLOUR_SPREAD).mean()) > COLOUR_FRACTION


def to_gray(im: Image.Image) -> Image.Image:
    """``im`` as the 8-bit grayscale slice training reads.

    16-bit / float images are scaled by their own maximum: PIL's plain conversion would clip
    everything above 255 to white.
    """
    if im.mode == 'L':
        return im
    if im.mode in HIGH_DEPTH_MODES:
        pixels = np.asarray(im, dtype=np.float32)
        peak = float(pixels.max())
        scaled = np.clip(pixels, 0, None) * (255 / peak if peak > 0 else 0)
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    return im.convert('L')


def read_image(path: str) -> Image.Image:
    """One slice file as a PIL 'L' (8-bit grayscale) image (``to_gray`` of its pixels)."""
    with Image.open(path) as im:
        return im.copy() if im.mode == 'L' else to_gray(im)


def size_text(size) -> str:
    return f'{size[0]}x{size[1]}'


def format_counts(counts: Counter, fmt: Callable = str) -> str:
    return ', '.join(f'{fmt(k)} ({n})' for k, n in counts.most_common())


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


def inspect_all(slices: Sequence[Slice], num_workers: int = 0) -> list[_ImageInfo]:
    return thread_map(_inspect, [s.path for s in slices], num_workers)


def is_colour_image(path: str | os.PathLike) -> bool:
    """``is_colour`` of an image file (a colour photo, not a slice); False when it cannot open."""
    try:
        with Image.open(path) as im:
            return is_colour(im)
    except (OSError, SyntaxError, ValueError):
        return False


def notes_on(infos: Sequence[_ImageInfo]) -> list[str]:
    """Things we fix on the fly but the user should know: colour files, mixed sizes."""
    notes = []
    colour = [i.path for i in infos if i.mode and i.mode not in GRAY_MODES]
    if colour:
        notes.append(
            f'{len(colour)} colour image(s) are converted '
            f'to grayscale (L) when read: {preview(colour)}'
        )
    deep = [i.path for i in infos if i.mode in HIGH_DEPTH_MODES]
    if deep:
        notes.append(
            f'{len(deep)} 16-bit / float image(s) are scaled to 8 '
            f'bits by their own maximum when read: {preview(deep)}'
        )
    sizes = Counter(i.size for i in infos if i.size)
    if len(sizes) > 1:
        (w, h), _ = sizes.most_common(1)[0]
        others = [i.path for i in infos if i.size and i.size != (w, h)]
        notes.append(
            f"mixed image sizes ({format_counts(sizes, size_text)}): the model's transform "
            f'resizes each image (short side, then centre crop), in training and evaluation alike; '
            f'not {w}x{h}: {preview(others)}'
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
    infos = inspect_all(slices, num_workers)
    for note in notes_on(infos):
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


# the sizes a slice file may declare; ADNI AD_NC slices are 256 x 240
MIN_SIDE, MAX_SIDE = 32, 2048
EXPECTED_SLICE = (
    'an 8-bit grayscale axial MRI slice (JPEG or PNG, e.g. 218391_78.jpeg, 256 x 240 px)'
)


def slice_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a usable slice (one readable sentence), or None when it is: its size
    from the header (a huge file is refused before it is decoded), then the decode, then colour."""
    name = os.path.basename(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
                return (
                    f'{name} is {width} x {height} px; this model takes slices of {MIN_SIDE} '
                    f'to {MAX_SIDE} px a side: drop {EXPECTED_SLICE}.'
                )
            im.load()
            if is_colour(im):
                return (
                    f'{name} is a colour image; this model takes grayscale MRI slices, not '
                    f'photos or colour maps: drop {EXPECTED_SLICE}.'
                )
    except UnidentifiedImageError:
        return f'{name} is not an image (it cannot be decoded); drop {EXPECTED_SLICE}.'
    except Image.DecompressionBombError:
        return f'{name} declares too many pixels to decode safely; drop {EXPECTED_SLICE}.'
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data: PIL raises these
        return f'{name} is truncated or corrupt ({e}); export the slice again.'
    return None
