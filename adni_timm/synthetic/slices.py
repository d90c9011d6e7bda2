"""SYNTHETIC ADNI-layout data: procedurally drawn
axial brain slices, NOT real MRI, NOT real people.

ADNI is under a data-use agreement, so every test, demo and benchmark here runs
on this stand-in. It has the very layout and file format of the ADNI AD_NC set::

    OUT/{train,test}/{AD,NC}/<scan>_<slice>.jpeg     256 wide x 240 high, 8-bit grayscale

with numeric 6-digit scan ids (unique across splits) and consecutive axial
slice indices per scan (e.g. 57..76). Each subject is a head drawn from a
few analytic shapes (scalp, skull, CSF, cortex with sulci, white matter,
deep grey matter, lateral ventricles, medial temporal lobes) with its own size,
shape, position, intensities, bias field and Rician noise. AD subjects carry
atrophy -- larger ventricles and sulci, thinner cortex, smaller medial temporal
region -- drawn from a severity distribution that overlaps NC's, so the task is
learnable but not trivial. ``difficulty`` sets that overlap:

* ``demo``: well separated, little nuisance variation (what ``train.py --demo`` trains on);
* ``default``: realistic overlap; a pixel-level logistic regression stays far from perfect;
* ``hard``: more overlap and more nuisance variation.

One scan per subject by default; ``scans_per_subject`` > 1 scans each head again at later visits
(``Visit``) and writes the subject map ``subjects.csv`` beside the splits.

Numpy only, vectorised, deterministic for a seed. ``atrophy_masks`` says where each slice
carries atrophy (ground truth for Grad-CAM). CLI (``adni_timm.cli.synthetic``)::

    adni-synthetic OUT --train-subjects N --test-subjects M [--slices 20] [--seed 0]
                       [--scans-per-subject K] [--shared-subjects F] [--class-windows]
    python -m adni_timm.synthetic OUT ...                                  (the same)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import warnings
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.note import DATASET_NOTE, DataNote, write_data_note

__all__ = [
    'WIDTH',
    'HEIGHT',
    'GENERATOR_VERSION',
    'DIFFICULTIES',
    'Difficulty',
    'difficulty_level',
    'check_classes',
    'SYNTHETIC_COMMENT',
    'generate',
    'demo_dataset',
    'render_scan',
    'render_patient',
    'REGIONS',
    'scan_atrophy_masks',
    'patient_atrophy_masks',
    'atrophy_masks',
    'recorded_arguments',
    'is_synthetic_image',
]

_logger = logging.getLogger(__name__)

WIDTH, HEIGHT = 256, 240
GENERATOR_VERSION = 2  # bump when the images change, so cached demo sets are regenerated
SYNTHETIC_COMMENT = b'SYNTHETIC image from adni_timm.synthetic: not MRI, not a real patient'
FIRST_SLICE = 60  # ADNI-like slice numbering; each scan's slab starts near here
JPEG_QUALITY = 92

# Demo set: small enough for ConvNeXt-T at 64 px on 2 CPU cores in a few minutes.
DEMO_PARAMS = dict(train_subjects=24, test_subjects=16, slices=12, seed=0, difficulty='demo')

_VISIT_STREAM = 1_000_003  # rng key entries that set visits' and windows' draws apart
_WINDOW_STREAM = 1_000_033
_N_THETA = 720  # angular resolution of the per-direction tables (brain outline, sulci)
_NOISE_PAD = 48  # a scan's noise block is this much larger than a slice; slices take windows


@dataclass(frozen=True)
class Difficulty:
    """How separable the classes are.

    severity: class name -> (mean, sd) of the atrophy severity (clipped to [0, 1]);
    jitter: scales the anatomy / intensity variation between subjects and scans (nuisance);
    noise: range of the Rician noise sigma, relative to white matter ~0.75.
    """

    severity: dict
    jitter: float
    noise: tuple[float, float]


DIFFICULTIES = {
    'demo': Difficulty(
        severity={'NC': (0.10, 0.06), 'MCI': (0.50, 0.08), 'AD': (0.90, 0.06)},
        jitter=0.5,
        noise=(0.01, 0.025),
    ),
    'default': Difficulty(
        severity={'NC': (0.25, 0.14), 'MCI': (0.43, 0.14), 'AD': (0.62, 0.14)},
        jitter=1.0,
        noise=(0.02, 0.05),
    ),
    'hard': Difficulty(
        severity={'NC': (0.30, 0.17), 'MCI': (0.42, 0.17), 'AD': (0.55, 0.17)},
        jitter=1.3,
        noise=(0.03, 0.07),
    ),
}


class SyntheticError(ValueError):
    """Bad arguments for the synthetic generator (message says what to change)."""


def _ramp(x):
    """Soft step: 0 below -0.5, 1 above 0.5 (anti-aliased edges, one pixel wide)."""
    return np.clip(x + 0.5, 0.0, 1.0)


def _blend(img, value, alpha):
    """Paint ``value`` over ``img`` with opacity ``alpha`` (in place)."""
    img += alpha * (value - img)


def _ellipse_alpha(x, y, x0, y0, ax, ay, angle=0.0):
    """Soft mask of an ellipse (semi-axes in pixels); edge is ~1 px wide."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - x0, y - y0
    u, v = c * dx + s * dy, -s * dx + c * dy
    e = (u / ax) ** 2 + (v / ay) ** 2
    return _ramp((1.0 - e) * (0.5 * min(ax, ay)))


def _slice_position(slice_index: int) -> float:
    """~ -0.3 (low, temporal lobes) .. 0.3 (high, ventricle bodies)."""
    return (slice_index - 70) / 50.0


@dataclass(frozen=True)
class Visit:
    """How a later scan of a head differs from its first: the same person, scanned again.

    ``progression`` is added to the atrophy severity; ``shift`` (px), ``turn`` (radians) and
    ``z_offset`` (in slices: the head sits a little higher or lower in the slab) move the pose;
    ``gain``, ``bias`` and ``noise`` are the new session's intensity scale, bias field and noise;
    ``first_slice`` is the new scan's slice window (it may shift); ``rng`` draws the session's own
    noise. Anatomy (shape, sulci, texture, tissue contrasts) stays the person's own.
    """

    progression: float
    shift: tuple[float, float]
    turn: float
    z_offset: float
    gain: float
    bias: tuple[float, float, float]
    noise: float
    first_slice: int | None
    rng: np.random.Generator


def draw_visit(key, visit: int, severity: float, difficulty: Difficulty) -> Visit:
    """Visit ``visit`` (1, 2, ...) of the head with rng ``key``: mild progression (faster for more
    severe atrophy), another pose, intensity and noise, and a slice window that moves in half the
    visits. Its own rng stream, so the first scan (and every other head) is unchanged.
    """
    j = difficulty.jitter
    rng = np.random.default_rng([*key, _VISIT_STREAM, visit])
    rate = (0.01 + 0.06 * severity) * rng.uniform(0.5, 1.5)  # severity per visit (about a year)
    window = None  # the first scan's window
    if rng.random() < 0.5:
        window = FIRST_SLICE + int(rng.integers(-4, 5))
    return Visit(
        progression=float(rate * visit),
        shift=(float(rng.normal(0, 4.0 * j)), float(rng.normal(0, 4.0 * j))),
        turn=float(np.deg2rad(rng.normal(0, 4.0 * j))),
        z_offset=float(rng.normal(0, 0.5)),
        gain=float(1.0 + rng.normal(0, 0.07 * j)),
        bias=tuple(float(b) for b in rng.normal(0, 0.04 * j, size=3)),
        noise=float(rng.uniform(*difficulty.noise)),
        first_slice=window,
        rng=rng,
    )


class _Head:
    """One synthetic head: anatomy drawn once, any axial slice rendered on demand.

    With a ``visit``, the same head at a later scan: the same draws make the same anatomy, then
    the visit's progression, pose, intensity, noise and window replace the first scan's.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        severity: float,
        difficulty: Difficulty,
        visit: Visit | None = None,
    ):
        j = difficulty.jitter
        self.rng = rng
        self.z_offset = 0.0
        if visit is not None:
            severity = min(1.0, severity + visit.progression)
        self.a = a = float(severity)
        # Pose and size
        self.cx = WIDTH / 2 + rng.normal(0, 6.0 * j)
        self.cy = HEIGHT / 2 + rng.normal(0, 5.0 * j)
        self.phi = np.deg2rad(rng.normal(0, 6.0 * j))
        size = 1.0 + rng.normal(0, 0.05 * j)
        aspect = 1.0 + rng.normal(0, 0.03 * j)
        brain_ax, brain_ay = 80.0 * size * aspect, 98.0 * size / aspect  # lateral, antero-posterior
        self.gap = 1.5 + 2.5 * a + abs(rng.normal(0, 0.5 * j))  # CSF between brain and skull
        self.skull = 5.0 + rng.normal(0, 0.6 * j)
        self.scalp = 5.0 + rng.normal(0, 0.8 * j)
        self.brain_shrink = 1.0 - 0.04 * a
        # Tissue geometry driven by atrophy, each with its own individual variation
        self.cortex = 5.5 * (1.0 - 0.35 * a) * (1.0 + rng.normal(0, 0.07 * j))
        self.sulcus_width = max(0.4, (0.5 + 2.2 * a) * (1.0 + rng.normal(0, 0.15 * j)))
        self.ventricles = max(0.5, (0.9 + 1.3 * a) * (1.0 + rng.normal(0, 0.15 * j)))
        self.mtl = max(0.3, (1.0 - 0.4 * a) * (1.0 + rng.normal(0, 0.08 * j)))
        self.fissure = 1.0 + 2.0 * a + abs(rng.normal(0, 0.3 * j))
        # Intensities (T1-like: WM bright, GM mid, CSF dark) and acquisition
        self.wm = 0.75 + rng.normal(0, 0.03 * j)
        self.gm = 0.47 + rng.normal(0, 0.03 * j)
        self.deep_gm = 0.57 + rng.normal(0, 0.03 * j)
        self.csf = 0.08 + abs(rng.normal(0, 0.02 * j))
        self.bone = 0.12 + abs(rng.normal(0, 0.03 * j))
        self.fat = 0.62 + rng.normal(0, 0.05 * j)
        self.gain = 1.0 + rng.normal(0, 0.07 * j)
        self.noise = rng.uniform(*difficulty.noise)
        bias = rng.normal(0, 0.04 * j, size=3)
        # Slab position: consecutive slices around the ventricles, start jittered per scan
        self.first_slice = FIRST_SLICE + int(rng.integers(-4, 5))
        if visit is not None:  # the new session; every draw above is kept, so the anatomy is too
            self.cx, self.cy = self.cx + visit.shift[0], self.cy + visit.shift[1]
            self.phi += visit.turn
            self.z_offset = visit.z_offset
            self.gain *= visit.gain
            self.noise = visit.noise
            bias = np.asarray(visit.bias)
            if visit.first_slice is not None:
                self.first_slice = visit.first_slice

        self._prepare_grid(brain_ax, brain_ay, bias)
        self._prepare_sulci()
        if visit is not None:  # the session's own noise (the first scan's block was drawn above
            # to keep the anatomy's draws in step)
            self.rng = visit.rng
            self.noise_block = self.rng.standard_normal(self.noise_block.shape, dtype=np.float32)
            self.noise_block *= np.float32(self.noise)

    def _position(self, slice_index: int) -> float:
        if self.z_offset:  # a later visit's head sits a little higher or lower
            return _slice_position(slice_index + self.z_offset)
        return _slice_position(slice_index)

    def _prepare_grid(self, ax, ay, bias):
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        c, s = np.cos(self.phi), np.sin(self.phi)
        dx, dy = xx - self.cx, yy - self.cy
        self.x = (c * dx + s * dy).astype(np.float32)  # lateral, the head's own frame
        self.y = (-s * dx + c * dy).astype(np.float32)  # antero-posterior (anterior = up)
        self.r = np.hypot(self.x, self.y)
        theta = np.arctan2(self.y, self.x)
        self.tidx = ((theta + np.pi) * (_N_THETA / (2 * np.pi))).astype(np.intp) % _N_THETA
        # Brain outline: an ellipse with a few low-frequency bumps of this subject's own
        t = (np.arange(_N_THETA) + 0.5) * (2 * np.pi / _N_THETA) - np.pi
        radius = ax * ay / np.sqrt((ay * np.cos(t)) ** 2 + (ax * np.sin(t)) ** 2)
        k = np.arange(2, 6)[:, None]
        bumps = self.rng.normal(0, 0.012, size=(4, 1)) * np.cos(
            k * t + self.rng.uniform(0, 2 * np.pi, (4, 1))
        )
        self.theta_table = t
        self.radius_table = (radius * (1 + bumps.sum(0))).astype(np.float32)
        # outline radius in each pixel's direction
        self.radius = np.take(self.radius_table, self.tidx)
        self.bias = (
            1 + bias[0] * self.x / 100 + bias[1] * self.y / 100 + bias[2] * (self.r / 100) ** 2
        ).astype(np.float32)
        # Smooth tissue texture: two fields blended by slice position, so neighbours look alike
        self.texture = [self._smooth_field() for _ in range(2)]
        self.noise_block = self.rng.standard_normal(
            (2, HEIGHT + _NOISE_PAD, WIDTH + _NOISE_PAD), dtype=np.float32
        )
        self.noise_block *= np.float32(self.noise)

    def _smooth_field(self):
        field = np.zeros((HEIGHT, WIDTH), np.float32)
        for _ in range(3):
            f = self.rng.uniform(0.03, 0.12, size=2) * self.rng.choice([-1, 1], size=2)
            field += np.sin(f[0] * self.x + f[1] * self.y + self.rng.uniform(0, 2 * np.pi))
        return field * np.float32(0.02)

    def _prepare_sulci(self):
        n = int(self.rng.integers(44, 56))
        self.sulcus_theta = np.sort(self.rng.uniform(-np.pi, np.pi, n))
        self.sulcus_drift = self.rng.normal(0, 0.08, n)  # radians per unit of slice position z
        self.sulcus_depth = self.rng.uniform(6, 14, n) * (1 + 0.3 * self.a)
        # Sylvian fissures: two deep lateral sulci, slightly anterior
        self.sulcus_theta[:2] = [
            np.deg2rad(-20 + self.rng.normal(0, 4)),
            np.deg2rad(-160 + self.rng.normal(0, 4)),
        ]
        self.sulcus_depth[:2] = self.rng.uniform(22, 28, 2) * (1 + 0.3 * self.a)

    def _sulcus_tables(self, z, scale):
        """Per direction: how central a sulcus is (0..1),
        its depth, and how deep white matter starts.
        """
        centers = self.sulcus_theta + self.sulcus_drift * z
        d = np.abs(self.theta_table[:, None] - centers[None, :])
        d = np.minimum(d, 2 * np.pi - d)  # circular angular distance
        nearest = d.argmin(1)
        dist_px = d[np.arange(_N_THETA), nearest] * self.radius_table * scale
        depth = self.sulcus_depth[nearest]
        opening = np.clip(1.0 - dist_px / self.sulcus_width, 0.0, 1.0)
        # cortex folds around each sulcus, so white matter recedes beneath it
        white_start = self.cortex + depth * np.exp(
            -((dist_px / (self.sulcus_width + self.cortex)) ** 2)
        )
        return (
            opening.astype(np.float32),
            depth.astype(np.float32),
            white_start.astype(np.float32),
        )

    def _surface(self, z):
        """Brain-surface fields of slice position ``z``: (px inside the brain surface, per
        direction the depth where white matter starts, sulcal CSF opacity, fissure opacity).
        """
        scale = np.float32(np.sqrt(max(0.2, 1 - z * z)) * self.brain_shrink)
        depth = scale * self.radius - self.r  # px inside the brain surface (< 0 outside)
        opening, sulcus_depth, white_start = self._sulcus_tables(z, scale)
        sulci = (
            np.take(opening, self.tidx)
            * _ramp(np.take(sulcus_depth, self.tidx) - depth)
            * _ramp(depth + 1)
        )
        fissure = (
            _ramp(self.fissure / 2 - np.abs(self.x))
            * _ramp(np.abs(self.y) - 34 * scale)
            * _ramp(depth)
        )
        return depth, white_start, sulci, fissure

    def render(self, slice_index: int) -> np.ndarray:
        """The axial slice ``slice_index`` as a uint8 [HEIGHT, WIDTH] array."""
        z = self._position(slice_index)
        depth, white_start, sulci, fissure = self._surface(z)
        img = np.zeros((HEIGHT, WIDTH), np.float32)
        _blend(img, self.fat, _ramp(depth + self.gap + self.skull + self.scalp))
        _blend(img, self.bone, _ramp(depth + self.gap + self.skull))
        _blend(img, self.csf, _ramp(depth + self.gap))
        _blend(img, self.gm, _ramp(depth))
        _blend(img, self.wm, _ramp(depth - np.take(white_start, self.tidx)))
        _blend(img, self.csf, sulci)
        _blend(img, self.csf, fissure)
        self._render_centre(img, z)
        w = np.float32(0.5 + 0.5 * np.cos(4 * z))
        img *= (
            (1 + w * self.texture[0] + (1 - w) * self.texture[1])
            * self.bias
            * np.float32(self.gain)
        )
        # Rician noise, as in magnitude MR images (dark background stays noisy but positive); a
        # window at a random offset into this scan's noise block (drawing fresh noise costs more
        # than the rest of the slice)
        dy, dx = self.rng.integers(0, _NOISE_PAD, size=2)
        noise = self.noise_block[:, dy : dy + HEIGHT, dx : dx + WIDTH]
        img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)
        return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)

    def _paint_ellipse(self, img, value, x0, y0, ax, ay, angle=0.0):
        """Paint an ellipse given in the head's frame, touching only its bounding box (fast)."""
        if min(ax, ay) < 0.3:
            return
        c, s = np.cos(self.phi), np.sin(self.phi)
        col, row = self.cx + c * x0 - s * y0, self.cy + s * x0 + c * y0  # centre in image pixels
        reach = max(ax, ay) + 2
        box = (
            slice(max(0, int(row - reach)), max(0, int(row + reach) + 2)),
            slice(max(0, int(col - reach)), max(0, int(col + reach) + 2)),
        )
        _blend(img[box], value, _ellipse_alpha(self.x[box], self.y[box], x0, y0, ax, ay, angle))

    def _centre_shapes(self, z):
        """Ellipses of the slice centre in paint order: (value, atrophy region or None, x0, y0,
        ax, ay, angle) in the head's frame. Deep grey matter, lateral ventricles and the medial
        temporal lobes (CSF rim first, the hippocampus over it).
        """
        shapes = []
        # ventricles largest high in the slab
        v = self.ventricles * max(0.25, 1 - ((z - 0.15) / 0.55) ** 2)
        for side in (-1, 1):
            # caudate / thalamus
            shapes.append((self.deep_gm, None, side * 24, 2, 9, 20, side * 0.25))
            # lateral ventricle: body, frontal horn diverging forwards, atrium diverging backwards
            shapes.append(
                (self.csf, 'ventricles', side * (3.0 + 2.2 * v), -4, 2.4 * v, 20 + 3 * v, 0.0)
            )
            shapes.append(
                (
                    self.csf,
                    'ventricles',
                    side * (5.0 + 3.0 * v),
                    -24 - 2 * v,
                    2.8 * v,
                    9 + 2 * v,
                    side * 0.45,
                )
            )
            shapes.append(
                (
                    self.csf,
                    'ventricles',
                    side * (9 + 3.5 * v),
                    20 + 2 * v,
                    3.2 * v,
                    8 + 2 * v,
                    -side * 0.6,
                )
            )
        visible = float(np.clip((0.05 - z) / 0.25, 0, 1))  # temporal lobes only in the lower slices
        if visible > 0:
            m = self.mtl * visible
            # temporal horn / CSF widening around the hippocampus
            rim = (1.0 + 4.0 * self.a) * visible
            for side in (-1, 1):
                x0, y0, angle = side * 50, 14, side * 0.35
                shapes.append(
                    (self.csf, 'medial_temporal', x0, y0, 8 * m + rim, 20 * m + rim, angle)
                )
                shapes.append(
                    (self.deep_gm * 0.85, 'medial_temporal', x0, y0, 8 * m, 20 * m, angle)
                )
        return shapes

    def _render_centre(self, img, z):
        """Deep grey matter, lateral ventricles and medial temporal lobes."""
        for value, _, *ellipse in self._centre_shapes(z):
            self._paint_ellipse(img, value, *ellipse)

    def atrophy_masks(self, slice_index: int) -> dict[str, np.ndarray]:
        """Where slice ``slice_index`` carries atrophy: ``{region: bool [HEIGHT, WIDTH]}``.

        The pixels the renderer paints with the atrophy-driven shapes (more than half opaque):
        ``ventricles``; ``sulci`` (cortical sulci, the interhemispheric fissure and the CSF between
        brain and skull, all widened by atrophy); ``cortex`` (the grey-matter ribbon, thinned by
        atrophy); ``medial_temporal`` (hippocampus and the CSF rim around it, in the lower slices
        only). Uses no random numbers, so rendering is unchanged.
        """
        z = self._position(slice_index)
        depth, white_start, sulci, fissure = self._surface(z)
        surface_csf = _ramp(depth + self.gap) * (1 - _ramp(depth))
        ribbon = _ramp(depth) * (1 - _ramp(depth - np.take(white_start, self.tidx)))
        masks = {
            'ventricles': np.zeros((HEIGHT, WIDTH), bool),
            'sulci': np.maximum(np.maximum(sulci, fissure), surface_csf) > 0.5,
            'cortex': (ribbon > 0.5) & ~(np.maximum(sulci, fissure) > 0.5),
            'medial_temporal': np.zeros((HEIGHT, WIDTH), bool),
        }
        for _, region, x0, y0, ax, ay, angle in self._centre_shapes(z):
            if region is None or min(ax, ay) < 0.3:  # what _paint_ellipse skips
                continue
            masks[region] |= _ellipse_alpha(self.x, self.y, x0, y0, ax, ay, angle) > 0.5
        return masks


def render_scan(seed, severity: float, slices: int = 20, difficulty: str = 'default'):
    """(first slice index, uint8 array [slices, HEIGHT, WIDTH]): one synthetic scan of one head
    (the head drawn from ``seed`` with atrophy ``severity``)."""
    head = _Head(np.random.default_rng(seed), severity, difficulty_level(difficulty))
    images = np.stack([head.render(head.first_slice + i) for i in range(slices)])
    return head.first_slice, images


render_patient = render_scan  # old name, kept for callers of 0.2


REGIONS = ('ventricles', 'sulci', 'cortex', 'medial_temporal')


def scan_atrophy_masks(
    seed, severity: float, slices: int = 20, difficulty: str = 'default'
) -> tuple[int, dict[str, np.ndarray]]:
    """Where ``render_scan`` with the same arguments draws atrophy.

    (first slice index, ``{region: bool [slices, HEIGHT, WIDTH]}``) for the regions in
    ``REGIONS`` (see ``_Head.atrophy_masks``); ``seed`` as in ``render_scan`` (an int, or a
    fresh Generator in the same state).
    """
    head = _Head(np.random.default_rng(seed), severity, difficulty_level(difficulty))
    per_slice = [head.atrophy_masks(head.first_slice + i) for i in range(slices)]
    return head.first_slice, {r: np.stack([m[r] for m in per_slice]) for r in REGIONS}


patient_atrophy_masks = scan_atrophy_masks  # old name, kept for callers of 0.2


# Keyword names of 0.2 (they counted subjects, not patients); accepted for one more release.
_OLD_COUNT_NAMES = {'train_patients': 'train_subjects', 'test_patients': 'test_subjects'}


def _old_count_names(fn):
    """Let ``fn`` take ``train_patients=`` / ``test_patients=`` (keyword only) for
    ``train_subjects`` / ``test_subjects``, with a DeprecationWarning; both names at once is a
    TypeError."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        for old, new in _OLD_COUNT_NAMES.items():
            if old not in kwargs:
                continue
            if new in kwargs or new in signature.bind_partial(*args).arguments:
                raise TypeError(
                    f'{fn.__name__}() got both {new} and {old} (its old name): give only {new}='
                )
            warnings.warn(
                f'{fn.__name__}({old}=...) is the old name of {new}=, kept for one release: '
                f'give {new}=',
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs[new] = kwargs.pop(old)
        return fn(*args, **kwargs)

    return call


# dataset.json's ``generator`` record keeps the key names sets on disk already carry (a file
# format: readers and cached sets stay as they are); the arguments are named for what they count.
def _recorded(arguments: dict) -> dict:
    """``generate``'s arguments as dataset.json records them."""
    old = {new: old for old, new in _OLD_COUNT_NAMES.items()}
    return {old.get(k, k): v for k, v in arguments.items()}


def recorded_arguments(generator: dict) -> dict:
    """The keyword arguments of ``generate`` / ``atrophy_masks`` from a set's dataset.json
    ``generator`` record (``DataNote.generator``)."""
    return {_OLD_COUNT_NAMES.get(k, k): v for k, v in generator.items()}


@_old_count_names
def atrophy_masks(
    train_subjects: int,
    test_subjects: int,
    slices: int = 20,
    seed: int = 0,
    difficulty: str = 'default',
    classes=('NC', 'AD'),
    splits=('test',),
    regions=REGIONS,
    scans_per_subject: int = 1,
    shared_subjects: float = 0.0,
    class_windows: bool = False,
) -> dict[str, np.ndarray]:
    """The atrophy regions of every slice of the set ``generate`` writes with these arguments.

    ``{'<split>/<class>/<scan>_<slice>.jpeg': bool [HEIGHT, WIDTH]}`` (the keys are
    ``adni_timm.data.slice_key`` of the written files), each the union of ``regions``, for the
    ``splits`` asked for. Computed from the same anatomy as the images, without rendering them
    (about 0.1 s and 60 KB per slice); ``atrophy_masks(**DEMO_PARAMS)`` gives the demo set's.
    NC scans have the regions too, only smaller: the class difference is their size.
    """
    level = difficulty_level(difficulty)
    unknown = sorted(set(regions) - set(REGIONS))
    if unknown or not regions:
        raise SyntheticError(f'unknown atrophy region(s) {unknown}: choose from {REGIONS}')
    out = {}
    scans = _scans(
        train_subjects,
        test_subjects,
        seed,
        classes,
        scans_per_subject,
        shared_subjects,
        class_windows,
    )
    for scan in scans:
        if scan.split not in splits:
            continue
        head = _scan_head(scan, level.severity[scan.name], difficulty)
        for i in range(slices):
            index = head.first_slice + i
            masks = head.atrophy_masks(index)
            out[f'{scan.split}/{scan.name}/{scan.scan}_{index}.jpeg'] = np.logical_or.reduce(
                [masks[r] for r in regions]
            )
    return out


def difficulty_level(name: str) -> Difficulty:
    """``DIFFICULTIES[name]``, or ``SyntheticError`` naming the choices."""
    if name not in DIFFICULTIES:
        raise SyntheticError(
            f'unknown difficulty {name!r}: choose one of {", ".join(DIFFICULTIES)}'
        )
    return DIFFICULTIES[name]


def check_classes(classes: Sequence[str], level: Difficulty) -> None:
    """Refuse an unknown, repeated or missing class: ``NC,NC`` would write every subject into
    one folder under one label and still report two classes' worth."""
    unknown = [c for c in classes if c not in level.severity]
    if unknown:
        raise SyntheticError(
            f'the generator knows classes {", ".join(level.severity)}, not {", ".join(unknown)}'
        )
    if not classes:
        raise SyntheticError('no classes given: name at least one, e.g. --classes NC,AD')
    repeated = sorted({c for c in classes if list(classes).count(c) > 1})
    if repeated:
        raise SyntheticError(
            f'classes {",".join(classes)} repeat {", ".join(repeated)}: give each class once, '
            f'e.g. NC,AD'
        )


def _check_out_dir(out_dir: Path) -> None:
    for split in ('train', 'test'):
        if (out_dir / split).exists() and any((out_dir / split).iterdir()):
            raise SyntheticError(
                f'{out_dir / split} already holds files: write the synthetic set into an empty or '
                f'new folder (mixing two sets would mix subjects)'
            )


@_old_count_names
def generate(
    out_dir,
    train_subjects: int,
    test_subjects: int,
    slices: int = 20,
    seed: int = 0,
    difficulty: str = 'default',
    classes=('NC', 'AD'),
    workers: int = 1,
    scans_per_subject: int = 1,
    shared_subjects: float = 0.0,
    class_windows: bool = False,
) -> Path:
    """Write a SYNTHETIC ADNI-layout set to ``out_dir`` and return its path.

    ``train_subjects`` / ``test_subjects`` are the subjects drawn for each split, per class (each
    with ``scans_per_subject`` scans). Classes may be any of NC, MCI, AD (MCI gets a severity
    between NC's and AD's). Subject ``i`` of a split and class always gets the same anatomy for a
    seed, whatever the other counts; scan ids are drawn for the whole set, so they are unique
    across splits. ``workers`` > 1 renders scans in that many processes; the files are identical
    either way. ``train_patients=`` / ``test_patients=``, the names of 0.2, still work for now.

    ``scans_per_subject`` > 1 scans each head again at later visits (``draw_visit``: mild
    progression, another pose, intensity, noise, maybe another slice window), each scan with its
    own id, and writes the subject map ``subjects.csv`` (``scan,subject``) beside the splits;
    1 writes exactly the set it always did. ``shared_subjects`` (0..1) puts the later scans of
    that fraction of each class's test subjects into train, as the official AD_NC split does.
    ``class_windows`` draws each scan's slice window from a band of its class (the slice numbers
    alone then give the class: a shortcut to test the slice-number baseline with).
    """
    level = difficulty_level(difficulty)
    check_classes(classes, level)
    if min(train_subjects, test_subjects) < 0 or slices < 1:
        raise SyntheticError('subject counts must be >= 0 and --slices >= 1')
    if scans_per_subject < 1:
        raise SyntheticError('--scans-per-subject must be >= 1')
    if not 0 <= shared_subjects <= 1 or (shared_subjects and scans_per_subject < 2):
        raise SyntheticError(
            '--shared-subjects takes a fraction in [0, 1] and needs --scans-per-subject >= 2 '
            '(a subject shares train and test through its later scans)'
        )
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    # one per scan: (scan, severity params, output stem), independent of the worker count
    jobs, subjects = [], []
    scans = _scans(
        train_subjects,
        test_subjects,
        seed,
        classes,
        scans_per_subject,
        shared_subjects,
        class_windows,
    )
    for scan in scans:
        folder = out_dir / scan.split / scan.name
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((scan, level.severity[scan.name], str(folder / scan.scan)))
        subjects.append((scan.scan, scan.subject))
    write = partial(_write_scan, slices=slices, difficulty=difficulty)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(write, jobs, chunksize=8))
    else:
        for job in jobs:
            write(job)
    note = synthetic_note(difficulty, seed)
    generator = _recorded(
        dict(
            train_subjects=train_subjects,
            test_subjects=test_subjects,
            slices=slices,
            seed=seed,
            difficulty=difficulty,
            classes=list(classes),
        )
    )
    # only what differs from a plain set, so a plain set's dataset.json stays as it always was
    if scans_per_subject > 1:
        generator['scans_per_subject'] = scans_per_subject
    if shared_subjects:
        generator['shared_subjects'] = shared_subjects
    if class_windows:
        generator['class_windows'] = True
    subject_map = _write_subject_map(out_dir, subjects) if scans_per_subject > 1 else None
    write_data_note(
        out_dir, dataclasses.replace(note, generator=generator, subject_map=subject_map)
    )
    _logger.info('wrote %d synthetic scans x %d slices to %s', len(jobs), slices, out_dir)
    return out_dir


SUBJECT_MAP = 'subjects.csv'  # scan,subject of a set with repeat scans


def _write_subject_map(out_dir: Path, subjects) -> str:
    import csv

    with (out_dir / SUBJECT_MAP).open('w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(['scan', 'subject'])
        writer.writerows(sorted(subjects))
    return SUBJECT_MAP


def synthetic_note(difficulty: str, seed: int) -> DataNote:
    """What a generated set is, in the words the card, the demo and the plots use."""
    return DataNote(
        f'synthetic (adni_timm.synthetic, {difficulty} difficulty, seed {seed}; NOT real MRI)',
        synthetic=True,
    )


@dataclass(frozen=True)
class _Scan:
    """One scan of a set: where it goes, whose head (rng ``key``), which visit, its window."""

    split: str
    name: str  # class
    key: tuple
    visit: int  # 0 = the subject's first scan
    scan: str  # file-name prefix
    subject: str
    window: int | None  # first slice when --class-windows sets it, else the head's own


def _scans(
    train_subjects: int,
    test_subjects: int,
    seed: int,
    classes,
    scans_per_subject: int = 1,
    shared_subjects: float = 0.0,
    class_windows: bool = False,
):
    """Every scan of a set, in writing order.

    Scan ids are drawn for the whole set (unique across splits); the rng key gives subject
    ``i`` of a split and class the same anatomy whatever the other counts. With one scan per
    subject this is the set the generator always wrote (the same ids, keys and order).
    """
    counts = {'train': train_subjects, 'test': test_subjects}  # subjects per class
    total = sum(counts.values()) * len(classes)
    k = scans_per_subject
    ids = np.random.default_rng(seed).choice(900_000, size=total * k, replace=False) + 100_000
    n = 0
    for split_i, split in enumerate(counts):
        for class_i, name in enumerate(classes):
            shared = round(shared_subjects * counts[split]) if split == 'test' else 0
            for i in range(counts[split]):
                key = (seed, split_i, class_i, i)
                for v in range(k):
                    where = 'train' if v and i < shared else split
                    window = _class_window(key, v, class_i, len(classes)) if class_windows else None
                    yield _Scan(
                        where, name, key, v, str(ids[n * k + v]), f'SYN_S_{n + 1:04d}', window
                    )
                n += 1


def _class_window(key, visit: int, class_i: int, n_classes: int) -> int:
    """A first slice from the band of class ``class_i``: bands split the windows' range apart, so
    the slice numbers alone give the class (its own rng stream: the images are otherwise those of
    the plain set)."""
    rng = np.random.default_rng([*key, _WINDOW_STREAM, visit])
    centre = FIRST_SLICE - 4 + round(8 * class_i / max(1, n_classes - 1))
    return int(np.clip(centre + rng.integers(-1, 2), FIRST_SLICE - 4, FIRST_SLICE + 4))


def _subject_head(key, severity_params, difficulty: str, visit: int = 0) -> _Head:
    """The head of the subject with rng ``key``: its severity drawn first, then its anatomy;
    ``visit`` > 0: the same head at that later scan (``draw_visit``)."""
    mean, sd = severity_params
    rng = np.random.default_rng(list(key))
    severity = float(np.clip(rng.normal(mean, sd), 0.0, 1.0))
    level = difficulty_level(difficulty)
    later = draw_visit(key, visit, severity, level) if visit else None
    return _Head(rng, severity, level, later)


def _scan_head(scan: _Scan, severity_params, difficulty: str) -> _Head:
    head = _subject_head(scan.key, severity_params, difficulty, scan.visit)
    if scan.window is not None:
        head.first_slice = scan.window
    return head


def _write_scan(job, slices: int, difficulty: str) -> None:
    scan, severity_params, stem = job
    head = _scan_head(scan, severity_params, difficulty)
    first = head.first_slice
    images = np.stack([head.render(first + i) for i in range(slices)])
    for k, image in enumerate(images):
        Image.fromarray(image, 'L').save(
            f'{stem}_{first + k}.jpeg', 'JPEG', quality=JPEG_QUALITY, comment=SYNTHETIC_COMMENT
        )


def is_synthetic_image(path) -> bool:
    """Whether an image file carries this generator's SYNTHETIC marker (its JPEG comment)."""
    try:
        with Image.open(path) as im:
            return im.info.get('comment') == SYNTHETIC_COMMENT
    except OSError:
        return False


def _cache_root(cache_root=None) -> Path:
    if cache_root is not None:
        return Path(cache_root)
    if os.environ.get('ADNI_TIMM_CACHE'):
        return Path(os.environ['ADNI_TIMM_CACHE'])
    return Path.home() / '.cache' / 'adni_timm'


def _demo_folder_name(p: dict) -> str:
    """The demo cache's folder: the generator version and the set's arguments (the same name
    as 0.2's, so a set cached then is reused)."""
    return (
        f'synthetic-demo-v{GENERATOR_VERSION}-{p["difficulty"]}-{p["train_subjects"]}x'
        f'{p["test_subjects"]}x{p["slices"]}-seed{p["seed"]}'
    )


def demo_dataset(cache_root=None) -> Path:
    """The SYNTHETIC set ``train.py --demo`` trains on: generated once, then reused from the cache.

    Lives in ``cache_root`` / ``$ADNI_TIMM_CACHE`` / ``~/.cache/adni_timm``, in a folder whose
    name carries the generator version and parameters. It is written into a temporary
    folder and renamed into place, so an interrupted run never leaves a half set behind.
    """
    p = DEMO_PARAMS
    root = _cache_root(cache_root)
    target = root / _demo_folder_name(p)
    if target.is_dir():
        if not (target / DATASET_NOTE).is_file():  # cached by a version that left no note
            write_data_note(
                target,
                dataclasses.replace(
                    synthetic_note(p['difficulty'], p['seed']),
                    generator=_recorded({**p, 'classes': ['NC', 'AD']}),
                ),
            )
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.tmp-synthetic-demo-', dir=root))
    try:
        generate(tmp, **p, workers=min(4, os.cpu_count() or 1))
        tmp.chmod(0o755)  # mkdtemp makes it private; the finished set is an ordinary folder
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # not a concurrent writer having won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _logger.info('synthetic demo set ready at %s', target)
    return target
