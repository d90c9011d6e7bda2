"""How well evidence maps point at known regions (the synthetic generator's atrophy): the region
score of a set of maps against masks, next to random maps of the same coarseness."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from captum.attr import LayerAttribution
from PIL import Image


def transform_mask(mask: np.ndarray, transform: Callable) -> np.ndarray:
    """A boolean mask drawn on the original slice, as the model sees it: bool ``[H, W]`` of the
    model's input.

    ``transform`` is the model's eval transform on PIL 'L' images (resize, crop, to tensor,
    normalise): the mask goes through it as an image, so it lands on the same pixels as the
    anatomy; a pixel belongs to the mask when more than half of it was mask.
    """
    mask = np.asarray(mask, dtype=bool)
    size = (mask.shape[1], mask.shape[0])

    def grey(im):
        return transform(im)[0].float().numpy()

    black, white = grey(Image.new('L', size, 0)), grey(Image.new('L', size, 255))
    seen = (grey(Image.fromarray(mask.astype(np.uint8) * 255)) - black) / (white - black)
    return seen > 0.5


@dataclass(frozen=True)
class RegionScore:
    """How much of the maps lands in known regions, against random maps of the same coarseness.

    ``energy_inside``: mean over slices of the share of a map's mass inside its mask;
    ``pointing_game``: share of slices whose map peaks inside the mask. The ``*_random`` values
    are the same for random maps (uniform noise at the layer's resolution, upsampled like a
    map); ``mask_area`` the mean share of pixels in the mask (what a flat map scores).
    """

    n_slices: int
    energy_inside: float
    energy_inside_random: float
    pointing_game: float
    pointing_game_random: float
    mask_area: float

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def region_score(
    maps, masks, map_side: tuple[int, int], *, n_random: int = 20, seed: int = 0
) -> RegionScore:
    """Score ``maps`` ``[N, H, W]`` (>= 0) against bool ``masks`` ``[N, H, W]``.

    ``map_side`` is the layer's own map size (h, w): the random baseline draws ``n_random`` maps
    per slice at that size and upsamples them bilinearly, as a real map is. Slices whose map is all
    zero count as missing the mask (no mass inside, no peak).
    """
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f'region_score: maps {maps.shape} and masks {masks.shape} differ')
    if not len(maps):
        raise ValueError('region_score: no slices to score')

    def score(m, k):
        total = m.sum(axis=(1, 2))
        inside = (m * k).sum(axis=(1, 2))
        energy = np.where(total > 0, inside / np.maximum(total, 1e-30), 0.0)
        peaks = m.reshape(len(m), -1).argmax(axis=1)
        hit = k.reshape(len(k), -1)[np.arange(len(k)), peaks] & (total > 0)
        return float(energy.mean()), float(hit.mean())

    energy, pointing = score(maps, masks)
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.random((len(maps) * n_random, 1, *map_side), dtype=np.float32))
    random = LayerAttribution.interpolate(noise, tuple(maps.shape[1:]), 'bilinear')[:, 0].numpy()
    energy_random, pointing_random = score(random, np.repeat(masks, n_random, axis=0))
    return RegionScore(
        n_slices=len(maps),
        energy_inside=energy,
        energy_inside_random=energy_random,
        pointing_game=pointing,
        pointing_game_random=pointing_random,
        mask_area=float(masks.mean()),
    )


# --------------------------------------------------------------------------------------- the report
