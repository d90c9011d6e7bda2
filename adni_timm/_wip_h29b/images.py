"""Open an image file with its size bounded: the header is read and checked before any pixel is
decoded, so a small hostile file (a 300 KB PNG declaring 13,000 x 13,000 pixels) is refused in
milliseconds instead of costing gigabytes.

One cap, ``MAX_SLICE_SIDE`` pixels a side, for every front end that reads slices: check-data,
training, ``evaluate --images``, the input check and the web demo. ADNI slices are 256 x 240;
the cap leaves room for high-resolution exports and still bounds one decoded 16-bit slice to a few
tens of megabytes.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Iterator

from PIL import Image

__all__ = ['MAX_SLICE_SIDE', 'ImageTooLarge', 'open_image', 'size_problem']

MAX_SLICE_SIDE = 4096  # px, width and height alike


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than a slice may have; the message says so."""


def size_problem(size: tuple[int, int], max_side: int = MAX_SLICE_SIDE) -> str | None:
    """Why an image of ``size`` (width, height) is too large for a slice, or None."""
    width, height = size
    if max(width, height) <= max_side:
        return None
    return (
        f'{width} x {height} px: slices are at most {max_side} px a side (ADNI slices are '
        f'256 x 240); downsample it or leave it out'
    )


@contextmanager
def open_image(path: str | os.PathLike, max_side: int = MAX_SLICE_SIDE) -> Iterator[Image.Image]:
    """``PIL.Image.open`` (the header only), refused with ``ImageTooLarge`` before decoding when
    the header declares more than ``max_side`` px a side.

    PIL's own decompression-bomb guard (a warning above ~89 Mpx, an error above twice that) fires
    inside ``Image.open``; both become the same one-line ``ImageTooLarge``.
    """
    with warnings.catch_warnings():
        # PIL warns, then decodes anyway; an error here stops it before the pixels
        warnings.simplefilter('error', Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageTooLarge(
                f'declares too many pixels to decode safely ({e}): slices are at most '
                f'{max_side} px a side; downsample it or leave it out'
            ) from None
    with im:
        problem = size_problem(im.size, max_side)
        if problem:
            raise ImageTooLarge(problem)
        yield im
