"""Data on the device: the decoded slice cache lives on the accelerator, batches are drawn and
augmented there, and no DataLoader worker sits on the training path.

``DeviceTransform.from_timm(tf)`` reads a timm/torchvision transform (``build_transforms``'s train
or eval transform) op by op and builds its batched twin; an op it has no twin for raises
``UnsupportedTransform`` naming it, so the two paths can never silently differ. Per sample, in the
CPU pipeline's order: random resized crop (timm's sampling rule, its ``scale``/``ratio``),
horizontal flip, brightness/contrast jitter (random order, as torchvision's ColorJitter), /255,
normalise, timm's ``RandomErasing``; the eval twin is a short-side resize and a centre crop.

Crop and resize are one linear map per sample: ``out = Wy @ crop @ Wx^T``, whose rows are PIL's own
resampling weights (its bilinear or bicubic filter, widened when it shrinks: the antialiasing that
PIL applies and ``grid_sample`` does not), so the image matches the PIL path up to PIL's uint8
rounding. A flip reverses Wx's rows. Two batched matmuls per batch, whatever the crop sizes.

``DeviceBatches`` iterates (images, labels) like a prepared Accelerate loader: a seeded shuffle per
epoch sharded over processes the way ``DistributedSampler`` does it, or, for validation, every slice
once in order, padded on the last step and truncated again by ``accelerator.gather_for_metrics``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
from torch.utils.data import DistributedSampler
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

__all__ = [
    'DEVICE_MEMORY_FRACTION',
    'DeviceDataError',
    'UnsupportedTransform',
    'CropParams',
    'DeviceTransform',
    'DeviceBatches',
    'resample_weights',
    'device_cache_fits',
    'device_batches',
]

# ``data_on_device: auto`` moves the cache only when it takes at most this share of the device's
# free memory: the rest is for the model, its activations and the optimizer state.
DEVICE_MEMORY_FRACTION = 0.25

_logger = logging.getLogger(__name__)


class DeviceDataError(ValueError):
    """The data cannot go on the device as asked; the message says why."""


class UnsupportedTransform(DeviceDataError):
    """The CPU transform holds an op the device path has no twin for (an auto-augment policy)."""


# ------------------------------------------------------------------------------ PIL's resampling


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1 - x.abs()).clamp_min(0)


def _bicubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:  # PIL's cubic, a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


# PIL's Resample.c filters (zero outside their support, so no window bounds are needed)
_FILTERS: dict[InterpolationMode, Callable] = {
    InterpolationMode.BILINEAR: _triangle,
    InterpolationMode.BICUBIC: _bicubic,
}


def resample_weights(
    in_len: int,
    start: torch.Tensor,
    length: torch.Tensor,
    out_len: int,
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
) -> torch.Tensor:
    """``[B, out_len, in_len]``: row i holds the weights PIL gives the input pixels for output
    pixel i when it resizes the crop ``[start, start + length)`` (per sample) to ``out_len``.

    PIL (``ImagingResample``): centre = (i + 0.5) * scale, filter widened by max(scale, 1) so a
    shrink averages (antialiasing), weights normalised to sum 1, pixels outside the crop unused.
    """
    kernel = _FILTERS[interpolation]
    start, length = start.float(), length.float()
    scale = length / out_len
    widen = scale.clamp_min(1.0)
    out = torch.arange(out_len, device=start.device, dtype=torch.float32) + 0.5
    centre = start[:, None] + out[None, :] * scale[:, None]  # [B, out] in input coordinates
    pixel = torch.arange(in_len, device=start.device, dtype=torch.float32)  # [in]
    w = kernel((pixel[None, None, :] + 0.5 - centre[:, :, None]) / widen[:, None, None])
    inside = (pixel[None, :] >= start[:, None]) & (pixel[None, :] < (start + length)[:, None])
    w = w * inside[:, None, :]
    return w / w.sum(-1, keepdim=True)


# ------------------------------------------------------------------------------------ the twin


@dataclass
class CropParams:
    """Per-sample random parameters of one training batch (all ``[B]`` tensors on the device)."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor  # bool
    brightness: torch.Tensor | None = None  # factor; None: no jitter
    contrast: torch.Tensor | None = None
    brightness_first: torch.Tensor | None = None  # bool: ColorJitter's random order


def _mode(interpolation) -> InterpolationMode:
    if isinstance(interpolation, InterpolationMode) and interpolation in _FILTERS:
        return interpolation
    raise UnsupportedTransform(
        f'interpolation {interpolation!r}: the device path resamples bilinear or bicubic only'
    )


def _range(value) -> tuple[float, float] | None:
    """torchvision ColorJitter stores a factor range [lo, hi] or None."""
    return None if value is None else (float(value[0]), float(value[1]))


class DeviceTransform:
    """The batched twin of one timm transform: uint8 ``[B, H, W]`` on the device in, float
    ``[B, 1, h, w]`` out (normalised). Build it with ``from_timm``."""

    def __init__(
        self,
        size: tuple[int, int],
        interpolation: InterpolationMode,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        random_crop: tuple[tuple[float, float], tuple[float, float]] | None = None,
        resize_short: int | None = None,
        hflip: float = 0.0,
        brightness: tuple[float, float] | None = None,
        contrast: tuple[float, float] | None = None,
        erasing: RandomErasing | None = None,
    ):
        if len(mean) != 1 or len(std) != 1:
            raise UnsupportedTransform(
                f'normalisation with {len(mean)} channel(s): slices are 1-channel grayscale'
            )
        self.size = size
        self.interpolation = interpolation
        self.mean, self.std = float(mean[0]), float(std[0])
        self.random_crop = random_crop  # (scale, ratio) of a random resized crop
        self.resize_short = resize_short  # eval: short side to this, then a centre crop
        self.hflip = hflip
        self.brightness, self.contrast = brightness, contrast
        self.erasing = erasing
        self._eval_cache: dict = {}

    @property
    def is_training(self) -> bool:
        return self.random_crop is not None

    @classmethod
    def from_timm(cls, transform) -> DeviceTransform:
        """Read a ``transforms.Compose`` built by timm's ``create_transform`` (train or eval) on
        1-channel images; raise UnsupportedTransform naming the first op without a twin."""
        ops = list(getattr(transform, 'transforms', [transform]))
        args: dict = {}
        size = interpolation = mean = std = None
        for op in ops:
            if isinstance(op, RandomResizedCropAndInterpolation):
                size, interpolation = tuple(op.size), _mode(op.interpolation)
                args['random_crop'] = (tuple(op.scale), tuple(op.ratio))
            elif isinstance(op, T.RandomResizedCrop):
                size, interpolation = tuple(op.size), _mode(op.interpolation)
                args['random_crop'] = (tuple(op.scale), tuple(op.ratio))
            elif isinstance(op, T.Resize) and isinstance(op.size, int) and op.max_size is None:
                args['resize_short'], interpolation = op.size, _mode(op.interpolation)
            elif isinstance(op, T.CenterCrop):
                size = tuple(op.size)
            elif isinstance(op, T.RandomHorizontalFlip):
                args['hflip'] = float(op.p)
            elif isinstance(op, T.ColorJitter):
                # saturation and hue leave a 1-channel image as it is (PIL and torchvision alike)
                args['brightness'] = _range(op.brightness)
                args['contrast'] = _range(op.contrast)
            elif isinstance(op, (MaybeToTensor, T.ToTensor)):
                pass  # /255: part of the twin's output
            elif isinstance(op, T.Normalize):
                mean, std = [float(v) for v in op.mean], [float(v) for v in op.std]
            elif isinstance(op, RandomErasing):
                args['erasing'] = copy.copy(op)  # its own: the twin points it at the device
            else:
                raise UnsupportedTransform(
                    f'the transform op {type(op).__name__} has no device twin (the device path '
                    f'does random resized crop, flip, brightness/contrast jitter, random erasing)'
                )
        if size is None or mean is None:
            names = ', '.join(type(op).__name__ for op in ops)
            raise UnsupportedTransform(f'{names}: not a crop/resize + normalise transform')
        if len(size) == 1:
            size = (size[0], size[0])
        return cls(size, interpolation, mean, std, **args)

    # -------------------------------------------------------------------------- random parameters

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> CropParams:
        """Per-sample parameters drawn on the device, by the rules of timm's
        ``RandomResizedCropAndInterpolation.get_params`` (10 tries, then a centre crop) and
        torchvision's ``RandomHorizontalFlip`` / ``ColorJitter``."""
        device = generator.device
        (s_lo, s_hi), (r_lo, r_hi) = self.random_crop

        def uniform(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=device)

        area = height * width * uniform(s_lo, s_hi, batch, 10)
        ratio = torch.exp(uniform(math.log(r_lo), math.log(r_hi), batch, 10))
        w = torch.round(torch.sqrt(area * ratio))
        h = torch.round(torch.sqrt(area / ratio))
        ok = (w <= width) & (h <= height)
        first = ok.float().argmax(1, keepdim=True)  # the first try that fits
        w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
        # no try fits: timm's centre crop, the whole image clamped to the ratio range
        in_ratio = width / height
        fw = width if in_ratio <= r_hi else round(height * r_hi)
        fh = height if in_ratio >= r_lo else round(width / r_lo)
        found = ok.any(1)
        w = torch.where(found, w, torch.full_like(w, fw))
        h = torch.where(found, h, torch.full_like(h, fh))
        top = torch.floor(uniform(0, 1, batch) * (height - h + 1))
        left = torch.floor(uniform(0, 1, batch) * (width - w + 1))
        top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
        left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
        params = CropParams(top, left, h, w, uniform(0, 1, batch) < self.hflip)
        if self.brightness is not None or self.contrast is not None:
            b, c = self.brightness or (1.0, 1.0), self.contrast or (1.0, 1.0)
            params.brightness = uniform(*b, batch)
            params.contrast = uniform(*c, batch)
            params.brightness_first = uniform(0, 1, batch) < 0.5
        return params

    def eval_weights(self, height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(Wy ``[h, H]``, Wx ``[w, W]``) of the eval transform: timm's ``Resize`` (short side) then
        ``CenterCrop``, i.e. PIL's resize of the whole image with the centre rows/columns kept."""
        oh, ow = self.size
        short = self.resize_short or min(oh, ow)
        if height <= width:  # torchvision: the long side becomes int(short * long / short side)
            rh, rw = short, int(short * width / height)
        else:
            rh, rw = int(short * height / width), short
        if oh > rh or ow > rw:
            raise UnsupportedTransform(f'a centre crop {self.size} larger than the resized image')
        top, left = int(round((rh - oh) / 2.0)), int(round((rw - ow) / 2.0))
        zero = torch.zeros(1, device=device)
        wy = resample_weights(height, zero, zero + height, rh, self.interpolation)[0]
        wx = resample_weights(width, zero, zero + width, rw, self.interpolation)[0]
        return wy[top : top + oh], wx[left : left + ow]

    # --------------------------------------------------------------------------------- applying

    def apply(self, images: torch.Tensor, params: CropParams) -> torch.Tensor:
        """The training transform with given parameters: uint8 ``[B, H, W]`` -> ``[B, 1, h, w]``."""
        _, height, width = images.shape
        oh, ow = self.size
        wy = resample_weights(height, params.top, params.height, oh, self.interpolation)
        wx = resample_weights(width, params.left, params.width, ow, self.interpolation)
        wx = torch.where(params.flip[:, None, None], wx.flip(1), wx)  # a flip reverses the columns
        x = torch.matmul(torch.matmul(wy, images.float()), wx.transpose(1, 2))
        x = x.clamp(0, 255)  # PIL stores uint8: a bicubic overshoot is clipped
        if params.brightness is not None:
            b, c = params.brightness[:, None, None], params.contrast[:, None, None]

            # PIL's blends truncate to uint8 (a -0.45 grey-level bias on average): so do these
            def bright(v):  # PIL ImageEnhance.Brightness: a blend with black
                return torch.floor((v * b).clamp(0, 255))

            def contrast(v):  # PIL ImageEnhance.Contrast: a blend with the rounded mean grey
                mean = torch.floor(v.mean((1, 2), keepdim=True) + 0.5)
                return torch.floor((mean + c * (v - mean)).clamp(0, 255))

            first = params.brightness_first[:, None, None]
            x = torch.where(first, contrast(bright(x)), bright(contrast(x)))
        x = self._normalise(x)
        if self.erasing is not None and self.erasing.probability > 0:
            self.erasing.device = x.device  # timm fills the erased boxes on this device
            x = self.erasing(x)
        return x

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x / 255 - self.mean) / self.std).unsqueeze(1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """uint8 ``[B, H, W]`` on the device -> normalised float ``[B, 1, h, w]``."""
        batch, height, width = images.shape
        if self.is_training:
            if generator is None:
                raise ValueError('a training transform draws its parameters from a generator')
            return self.apply(images, self.sample(batch, height, width, generator))
        key = (height, width, images.device)
        if self._eval_cache.get('key') != key:  # the same two matrices for every batch
            self._eval_cache = {'key': key, 'w': self.eval_weights(height, width, images.device)}
        wy, wx = self._eval_cache['w']
        return self._normalise(torch.matmul(torch.matmul(wy, images.float()), wx.T))


# ------------------------------------------------------------------------------------- batches


class DeviceBatches(DataLoaderStateMixin):
    """(images, labels) batches from a uint8 cache ``[N, H, W]`` already on the device.

    ``shuffle=True`` (training): each epoch a permutation seeded by (seed, epoch), identical on
    every process, sharded as ``DistributedSampler`` shards it, full batches only. ``shuffle=False``
    (validation): every index once, in order; with several processes step s gives process r the
    slice ``[(s * P + r) * B, (s * P + r + 1) * B)``, the last step padded, and ``remainder`` tells
    ``accelerator.gather_for_metrics`` to drop the padding, as it does for a prepared DataLoader.
    Random augmentation parameters come from a device generator seeded by (seed, process, epoch),
    so a resumed run redraws the same augmentations.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: DeviceTransform,
        batch_size: int,
        *,
        shuffle: bool,
        rows: torch.Tensor | None = None,
        seed: int = 0,
        num_processes: int = 1,
        process_index: int = 0,
    ):
        rows = torch.arange(len(images)) if rows is None else torch.as_tensor(rows)
        if images.dtype != torch.uint8 or images.ndim != 3 or len(rows) != len(labels):
            raise ValueError('DeviceBatches needs uint8 images [N, H, W] and a label per row used')
        # ``rows``: which images of the (shared) store are this set's, item by item
        self.images, self.rows = images, rows.to(images.device)
        self.labels = labels.to(images.device)
        self.transform, self.batch_size, self.shuffle = transform, batch_size, shuffle
        self.seed, self.num_processes, self.process_index = seed, num_processes, process_index
        self.epoch = 0
        self.generator = None  # no loader generator to reseed (training.py looks for one)
        self._augment = torch.Generator(device=images.device)
        self.gradient_state = GradientState()  # shared with the Accelerator

    @property
    def total_batch_size(self) -> int:
        return self.batch_size * self.num_processes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[torch.Tensor]:
        """This process's batches of item indices for this epoch, moved to the device at once."""
        n, b, p = len(self.rows), self.batch_size, self.num_processes
        if self.shuffle:
            sampler = DistributedSampler(
                range(n), num_replicas=p, rank=self.process_index, shuffle=True, seed=self.seed
            )
            sampler.set_epoch(self.epoch)
            mine = torch.tensor(list(sampler), dtype=torch.long)
            return list(mine[: len(mine) // b * b].to(self.images.device).view(-1, b))
        order = torch.arange(n)
        if p == 1:
            return list(order.to(self.images.device).split(b))
        total = math.ceil(n / (b * p)) * b * p  # padded from the start, as Accelerate pads
        padded = torch.cat([order, order.repeat(math.ceil(total / n))[: total - n]])
        return list(padded.to(self.images.device).view(-1, p, b)[:, self.process_index])

    def __len__(self) -> int:
        n, b, p = len(self.rows), self.batch_size, self.num_processes
        if self.shuffle:
            return math.ceil(n / p) // b
        return math.ceil(n / (b * p)) if p > 1 else math.ceil(n / b)

    def __iter__(self):
        batches = self._indices()
        # ``(seed, process, epoch)``: different augmentations per process, replayed on resume
        self._augment.manual_seed(
            (self.seed * 1_000_003 + self.process_index * 7_919 + self.epoch) % 2**63
        )
        # what an Accelerate loader tells the gradient state: gather_for_metrics and
        # accumulate() read the end of the epoch and the padding from it
        self.begin()
        self.remainder = -1 if self.shuffle else len(self.rows) % self.total_batch_size
        try:
            for i, index in enumerate(batches):
                images = self.transform(self.images[self.rows[index]], self._augment)
                if i == len(batches) - 1:
                    self.end_of_dataloader = True
                yield images, self.labels[index]
        finally:
            self.end()


def device_cache_fits(nbytes: int, device: torch.device) -> tuple[bool, str]:
    """Whether ``nbytes`` of cache fit the ``DEVICE_MEMORY_FRACTION`` of the device's free memory,
    and one line that says so (``data_on_device: auto``)."""
    if device.type != 'cuda':
        return False, f'data on device: off on {device.type} under auto (true forces it)'
    free, _ = torch.cuda.mem_get_info(device)
    fits = nbytes <= DEVICE_MEMORY_FRACTION * free
    return fits, (
        f'data on device: the slice cache takes {nbytes / 2**30:.2f} GiB, '
        f'{"within" if fits else "more than"} {DEVICE_MEMORY_FRACTION:.0%} of the '
        f'{free / 2**30:.1f} GiB free on {device}: '
        + ('batches are drawn and augmented there' if fits else 'using the DataLoader instead')
    )


def device_batches(
    setting: str,
    cache,
    train_slices: Sequence,
    val_slices: Sequence,
    train_tf,
    eval_tf,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    num_processes: int = 1,
    process_index: int = 0,
    agree: Callable[[bool], bool] = bool,
) -> tuple[DeviceBatches, DeviceBatches | None] | None:
    """(train, validation) batches drawn on ``device``, or None for the DataLoader path.

    ``setting`` is ``data_on_device``: 'false' -> None; 'auto' -> on for CUDA when the cache fits
    (``device_cache_fits``), else None, with one log line that says why; 'true' -> on, or
    DeviceDataError when it cannot be (an op without a twin, no cache, slices of several sizes).
    ``cache`` is the host SliceCache of train + validation slices (``preload``), or None.
    ``agree`` turns this process's 'auto' verdict into the one all processes share (every process
    calls it once under 'auto'; the training loop passes a collective: on only if all can).
    """
    if setting == 'false':
        return None
    reason = None
    try:
        if cache is None:
            raise DeviceDataError('the slices are not cached in memory (cache: false, or too big)')
        if cache.odd:
            raise DeviceDataError(
                f'{len(cache.odd)} slices differ in size from the others; the device cache holds '
                f'one size'
            )
        train_twin, eval_twin = (
            DeviceTransform.from_timm(train_tf),
            DeviceTransform.from_timm(eval_tf),
        )
    except DeviceDataError as e:
        if setting == 'true':
            raise
        reason = str(e)
    if setting == 'auto':
        if reason is not None:
            _logger.info('data on device: off (%s); using the DataLoader', reason)
        else:
            fits, line = device_cache_fits(cache.images.nbytes, device)
            (_logger.info if device.type == 'cuda' else _logger.debug)(line)
            reason = None if fits else 'does not fit'
        # every process takes the same path: a DDP run with two kinds of batches would hang
        if not agree(reason is None):
            if reason is None:
                _logger.info('data on device: off: another process cannot; using the DataLoader')
            return None
    else:
        _logger.info(
            'data on device: the slice cache (%.2f GiB) moves to %s; batches are drawn and '
            'augmented there',
            cache.images.nbytes / 2**30,
            device,
        )
    store = torch.from_numpy(cache.images).to(device)  # once; CPU: the same memory, no copy

    def batches(slices, twin, shuffle):
        rows = torch.tensor([cache.index[s.path] for s in slices], dtype=torch.long)
        labels = torch.tensor([s.label for s in slices], dtype=torch.long)
        return DeviceBatches(
            store,
            labels,
            twin,
            batch_size,
            shuffle=shuffle,
            rows=rows,
            seed=seed,
            num_processes=num_processes,
            process_index=process_index,
        )

    val = batches(val_slices, eval_twin, False) if len(val_slices) else None
    return batches(train_slices, train_twin, True), val
