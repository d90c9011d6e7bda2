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
import re
import warnings
from contextlib import contextmanager
from typing import Iterator

from PIL import Image

__all__ = ['MAX_SLICE_SIDE', 'ImageTooLarge', 'open_image', 'size_problem']

MAX_SLICE_SIDE = 2048  # px, width and height alike (the web demo's cap since it exists)


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than a slice may have; the message says so.
    ``size``: (width, height) from the header, None when PIL refused before telling it."""

    def __init__(self, message: str, size: tuple[int, int] | None = None):
        super().__init__(message)
        self.size = size


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

    PIL's own decompression-bomb guard fires inside ``Image.open``: its warning (above ~89 Mpx) is
    silenced, as the size check that follows is stricter; its error (above twice that, before the
    size is known) becomes the same one-line ``ImageTooLarge``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            declared = re.search(r'\((\d+) pixels\)', str(e))
            pixels = f'{int(declared[1]):,} pixels' if declared else 'too many pixels'
            raise ImageTooLarge(
                f'declares {pixels}: slices are at most {max_side} px a side (ADNI slices are '
                f'256 x 240); downsample it or leave it out'
            ) from None
    with im:
        problem = size_problem(im.size, max_side)
        if problem:
            raise ImageTooLarge(problem, im.size)
        yield im
