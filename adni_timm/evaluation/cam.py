"""Class evidence maps: where in a slice the model finds its evidence for a class.

Three captum attributions, chosen by ``method``:

* ``occlusion`` (the report's default; captum ``Occlusion``): how much the class logit drops
  when one square of the slice (an 8x8 grid of squares) is replaced by the mean intensity (0
  after normalisation). It asks the model directly, at the cost of one forward pass per square;
* ``gradcam`` (Selvaraju et al. 2017, captum ``LayerGradCam``): ReLU of one layer's activations
  weighted by their spatially averaged gradients; one backward pass;
* ``hirescam`` (Draelos & Carin 2020, captum ``LayerGradientXActivation``): ReLU of gradient
  times activation, summed over channels position by position.

Why occlusion by default: measured against the atrophy regions the synthetic generator drew
(``adni_timm.synthetic.slices.atrophy_masks``), its AD maps peak inside them far more often than
Grad-CAM's or HiResCAM's at a coarse stage, whose mass often sits on the uniform background (the
figures: README, "Evidence maps"; tests/test_cam.py measures ``region_score``). Grad-CAM stays one
flag away (``--cam-method gradcam``): much cheaper, and with ``--cam-layer`` any stage.

This module adds what captum leaves to the caller: for the gradient methods a layer whose map is
fine enough to read (at least 7x7 at the model's input size: an earlier stage when the last is
smaller), refusing channels-last (NHWC) layers that would give silently wrong maps; float32
outside autocast, batching, upsampling to the input size, normalisation; and the report that
evaluation writes (scan montages on one colour scale per scan, population maps, the region
score).
"""

from __future__ import annotations

import logging
import textwrap
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam, LayerGradientXActivation, Occlusion
from timm.layers import LayerNorm2d
from torch import nn

from ..data import Slice, positive_index, read_image, slice_key
from ..utils.files import safe_name
from ..utils.progress import Progress
from .regions import RegionScore, region_score, transform_mask  # noqa: F401  (cam's API)
from ..inference import ScanRow, full_precision, negative_name, scan_rows


_logger = logging.getLogger(__name__)

OUTCOMES = ('TP', 'TN', 'FP', 'FN')
METHODS = ('occlusion', 'gradcam', 'hirescam')  # the first is the default
OCCLUSION_GRID = 8  # occlusion squares per side: the same coarseness as a 7-8 px CAM
MIN_MAP_SIDE = 7  # a coarser map cannot say which structure it points at (2x2 at 64 px is useless)


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile hides the real modules (and hooks on them) behind _orig_mod
    return getattr(model, '_orig_mod', model)


def _input_shape(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, 'pretrained_cfg', None) or getattr(model, 'default_cfg', None) or {}
    return tuple(cfg.get('input_size', (1, 224, 224)))


def _candidate_layers(model: nn.Module) -> list[str]:
    """Names of the NCHW feature stages, shallow to deep: timm's ``feature_info`` modules, else
    ``stages.*`` (ConvNeXt and most timm CNNs), else ResNet's ``layer1..4``."""
    info = getattr(model, 'feature_info', None)
    names = []
    if isinstance(info, list):
        names = [i['module'] for i in info if isinstance(i, dict) and i.get('module')]
        names = [n for n in names if n not in ('', 'stem') and not n.startswith('stem')]
    if not names:
        stages = getattr(model, 'stages', None)
        if isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages):
            names = [f'stages.{i}' for i in range(len(stages))]
    if not names:
        names = [
            f'layer{i}'
            for i in range(1, 5)
            if isinstance(getattr(model, f'layer{i}', None), nn.Module)
        ]
    return names


def _output_sizes(model: nn.Module, names: Sequence[str], input_shape) -> dict[str, tuple]:
    """The spatial size of each named module's output for one zero image of ``input_shape``."""
    sizes, hooks = {}, []
    for name in names:
        module = model.get_submodule(name)
        hooks.append(
            module.register_forward_hook(
                lambda m, i, out, name=name: sizes.__setitem__(
                    name, tuple(out.shape[-2:]) if torch.is_tensor(out) and out.ndim == 4 else None
                )
            )
        )
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sizes


def default_target_layer(model: nn.Module, input_shape=None) -> nn.Module:
    """The deepest NCHW feature stage whose map is at least ``MIN_MAP_SIDE`` on each side.

    Stages are timm's ``feature_info`` modules (``stages.0..3`` for ConvNeXt), else ``stages[*]``,
    else ResNet's ``layer1..4``. ``input_shape`` (C, H, W) defaults to the model's pretrained_cfg
    ``input_size``. ConvNeXt at 224 px: ``stages.3`` (7x7); at 64 px ``stages.1`` (8x8), since
    ``stages.3`` would give 2x2. When no stage is that large, the largest map; when the model does
    not run at the guessed input shape, its last stage. For ConvNeXt never
    a block's inner ``norm``/``mlp``: with ``conv_mlp=False`` they run on NHWC tensors and a map
    over them averages the wrong axis. Raises ValueError when no stage fits: pass ``layer=`` (a
    module or its name) to ``gradcam``.
    """
    model = _unwrap(model)
    names = _candidate_layers(model)
    if not names:
        raise ValueError(
            f'no default Grad-CAM layer for {type(model).__name__}: pass layer= a module '
            f'whose output is NCHW (e.g. a convolutional stage), or its name'
        )
    try:
        sizes = _output_sizes(model, names, tuple(input_shape or _input_shape(model)))
    except RuntimeError:  # the guessed input shape does not fit this model: its last stage
        _logger.debug('could not probe %s at %s', type(model).__name__, input_shape, exc_info=True)
        return model.get_submodule(names[-1])
    usable = [n for n in names if sizes.get(n)]
    if not usable:
        raise ValueError(
            f'no NCHW feature stage found in {type(model).__name__}: pass layer= a module whose '
            f'output is NCHW, or its name'
        )
    fine = [n for n in usable if min(sizes[n]) >= MIN_MAP_SIDE]
    name = fine[-1] if fine else max(usable, key=lambda n: sizes[n][0] * sizes[n][1])
    return model.get_submodule(name)


def map_size(model: nn.Module, layer: nn.Module | str | None = None, input_shape=None) -> tuple:
    """(h, w) of the map ``layer`` gives (default layer as in ``gradcam``) at ``input_shape``."""
    model = _unwrap(model)
    input_shape = tuple(input_shape or _input_shape(model))
    layer = _resolve_layer(model, layer, input_shape)
    name = _layer_name(model, layer)
    return _output_sizes(model, [name], input_shape)[name]


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None, input_shape=None) -> nn.Module:
    if layer is None:
        layer = default_target_layer(model, input_shape)
    elif isinstance(layer, str):
        try:
            layer = model.get_submodule(layer)
        except AttributeError:
            stages = ', '.join(_candidate_layers(model)) or 'none found'
            raise ValueError(
                f'Grad-CAM layer {layer!r} is not a module of {type(model).__name__}: pass a '
                f'module name such as one of its stages ({stages})'
            ) from None
    if isinstance(layer, nn.Linear) or (
        isinstance(layer, nn.LayerNorm) and not isinstance(layer, LayerNorm2d)
    ):
        raise ValueError(
            f'Grad-CAM layer {type(layer).__name__} runs on channels-last (NHWC / '
            f'NLC) tensors and would give wrong maps: pick a stage, e.g. '
            f'model.stages[-1]'
        )
    return layer


def _check_spatial(attr: torch.Tensor, height: int, width: int) -> None:
    """Refuse a layer output that is not [N, C, h, w] with h, w scaling like the input."""
    if attr.ndim != 4:
        raise ValueError(
            f'Grad-CAM layer output has {attr.ndim - 1} dims after the batch; it '
            f'needs an NCHW feature map: pass layer= a convolutional stage'
        )
    h, w = attr.shape[-2:]
    ratio = (height / h) / (width / w)
    if not 1 / 1.3 < ratio < 1.3:  # NHWC outputs land here: their "width" is the channel count
        raise ValueError(
            f'Grad-CAM layer output {tuple(attr.shape[-2:])} does not scale like the '
            f'input {(height, width)}: it looks channels-last (NHWC); pass layer= an '
            f'NCHW stage'
        )


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    target: int,
    *,
    layer: nn.Module | str | None = None,
    batch_size: int = 32,
    method: str = 'gradcam',
    normalize: bool = True,
) -> np.ndarray:
    """Grad-CAM maps ``[N, H, W]`` (float32, >= 0) of class ``target`` for images ``[N, C, H, W]``.

    Each map is ReLU of captum's ``method`` attribution (``gradcam`` or ``hirescam``, see the
    module doc) at ``layer`` (default ``default_target_layer`` for the images' size), upsampled
    bilinearly to the input size. ``normalize`` divides each map by its own maximum (0..1; an
    all-zero map stays zero); without it maps keep the attribution's units, so maps of one model
    and class can share a colour scale. Runs on the model's device, in eval mode (the training
    flag is restored), with grads enabled and autocast off: the attribution is computed in the
    model's own dtype (float32 unless the weights themselves were cast), so a caller's bf16
    autocast does not coarsen the gradients.
    """
    if images.ndim != 4:
        raise ValueError(f'gradcam: images must be [N, C, H, W], got shape {tuple(images.shape)}')
    if method not in ('gradcam', 'hirescam'):
        raise ValueError(f'gradcam: method {method!r} is not gradcam or hirescam')
    model = _unwrap(model)
    layer = _resolve_layer(model, layer, tuple(images.shape[1:]))
    param = next(model.parameters())
    height, width = images.shape[-2:]
    explainer = (LayerGradCam if method == 'gradcam' else LayerGradientXActivation)(model, layer)
    was_training = model.training
    model.eval()
    maps = []
    try:
        # inference_mode(False) + clone: a caller's inference tensors cannot enter autograd
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            full_precision(param.device.type),
        ):
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(param.device, param.dtype).clone()
                if method == 'gradcam':
                    attr = explainer.attribute(x, target=target, relu_attributions=True)
                else:  # element-wise gradient x activation, summed over channels
                    attr = explainer.attribute(x, target=target)
                    _check_spatial(attr, height, width)
                    attr = attr.sum(dim=1, keepdim=True).clamp_min(0)
                attr = attr.detach()
                _check_spatial(attr, height, width)
                attr = LayerAttribution.interpolate(attr.float(), (height, width), 'bilinear')[:, 0]
                attr = attr.clamp_min(0)  # bilinear upsampling keeps >= 0; rounding may not
                if normalize:
                    peak = attr.amax(dim=(1, 2), keepdim=True)
                    attr = torch.where(peak > 0, attr / peak.clamp_min(1e-12), 0.0).clamp_(0, 1)
                maps.append(attr.cpu())
    finally:
        model.train(was_training)
    if not maps:
        return np.zeros((0, height, width), np.float32)
    return torch.cat(maps).numpy().astype(np.float32, copy=False)


def _occlusion_window(height: int, width: int) -> tuple[int, int]:
    return max(1, height // OCCLUSION_GRID), max(1, width // OCCLUSION_GRID)


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    target: int,
    *,
    batch_size: int = 32,
    normalize: bool = True,
) -> np.ndarray:
    """Occlusion maps ``[N, H, W]`` (float32, >= 0) of class ``target`` for images ``[N, C, H, W]``.

    captum's ``Occlusion``: the image is cut into an ``OCCLUSION_GRID`` x ``OCCLUSION_GRID`` grid of
    squares; each square in turn is set to 0 (the mean intensity, after the model's normalisation)
    and the drop of the ``target`` logit is that square's value (ReLU: only evidence for the
    class). The grid is upsampled bilinearly to the input size, as a CAM is. ``normalize`` as in
    ``gradcam``. Costs ``OCCLUSION_GRID ** 2`` forward passes per image, run ``batch_size`` at a
    time, in eval mode, without autocast.
    """
    if images.ndim != 4:
        raise ValueError(f'occlusion: images must be [N, C, H, W], got shape {tuple(images.shape)}')
    model = _unwrap(model)
    param = next(model.parameters())
    channels, height, width = images.shape[1:]
    win = _occlusion_window(height, width)
    explainer = Occlusion(model)
    was_training = model.training
    model.eval()
    maps = []
    try:
        with torch.no_grad(), full_precision(param.device.type):
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(param.device, param.dtype)
                attr = explainer.attribute(
                    x,
                    sliding_window_shapes=(channels, *win),
                    strides=(channels, *win),
                    baselines=0.0,
                    target=target,
                    perturbations_per_eval=max(1, batch_size // len(x)),
                )
                # one value per square (the squares tile the image), then upsampled like a CAM
                grid = nn.functional.avg_pool2d(attr.float().mean(1, keepdim=True), win)
                attr = LayerAttribution.interpolate(grid.clamp_min(0), (height, width), 'bilinear')
                attr = attr[:, 0].clamp_min(0)
                if normalize:
                    peak = attr.amax(dim=(1, 2), keepdim=True)
                    attr = torch.where(peak > 0, attr / peak.clamp_min(1e-12), 0.0).clamp_(0, 1)
                maps.append(attr.cpu())
    finally:
        model.train(was_training)
    if not maps:
        return np.zeros((0, height, width), np.float32)
    return torch.cat(maps).numpy().astype(np.float32, copy=False)


def class_maps(
    model: nn.Module,
    images: torch.Tensor,
    target: int,
    *,
    method: str = 'occlusion',
    layer: nn.Module | str | None = None,
    batch_size: int = 32,
    normalize: bool = True,
) -> np.ndarray:
    """Evidence maps of class ``target``: ``occlusion``, or ``gradcam``/``hirescam`` at a layer."""
    if method not in METHODS:
        raise ValueError(f'method {method!r} is not one of {", ".join(METHODS)}')
    if method == 'occlusion':
        if layer is not None:
            raise ValueError('occlusion perturbs the input, it has no layer: drop the layer')
        return occlusion(model, images, target, batch_size=batch_size, normalize=normalize)
    return gradcam(
        model,
        images,
        target,
        layer=layer,
        batch_size=batch_size,
        method=method,
        normalize=normalize,
    )


def select_scans(ids, y, p, threshold: float, n: int) -> dict[str, list]:
    """For each outcome TP, TN, FP, FN: the ``n`` most confident scans, most confident first.

    ``ids``, ``y`` (1 = positive / AD, 0 = negative) and ``p`` (P(AD)) are per scan; positive
    means ``p >= threshold``. Confidence is the distance from the threshold on the side of the
    decision (``|p - threshold|``); ties keep the order of ``ids``.
    """
    ids, y, p = list(ids), np.asarray(y).astype(bool), np.asarray(p, dtype=np.float64)
    if not len(ids) == len(y) == len(p):
        raise ValueError(f'select_scans: {len(ids)} ids, {len(y)} labels, {len(p)} probabilities')
    pred = p >= threshold
    masks = {'TP': y & pred, 'TN': ~y & ~pred, 'FP': ~y & pred, 'FN': y & ~pred}
    order = np.argsort(-np.abs(p - threshold), kind='stable')
    return {k: [ids[i] for i in order if masks[k][i]][:n] for k in OUTCOMES}


# ------------------------------------------------------------------------- scored against truth


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    names = (name for name, m in _unwrap(model).named_modules() if m is layer)
    return next(names, type(layer).__name__)


def _load(slices: Sequence[Slice], transform: Callable) -> torch.Tensor:
    return torch.stack([transform(read_image(s.path)) for s in slices])


def _display(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] model inputs -> [N, H, W] for display (channel mean; plots rescale per tile)."""
    return images.float().mean(dim=1).numpy()


_METHOD_NAMES = {'occlusion': 'Occlusion', 'hirescam': 'HiResCAM', 'gradcam': 'Grad-CAM'}
# montage colours by the class a map explains: a map of NC evidence is never painted like AD's
_CLASS_CMAPS = ('Blues', 'Reds')


def _group_scans(
    slices: Sequence[Slice], p_pos: np.ndarray, threshold: float, classes: Sequence[str]
) -> tuple[list[ScanRow], dict[str, list[int]]]:
    """The scans as evaluation reports them (``inference.scan_rows``: the same groups, mean
    P(AD) and decisions), and each one's slice indices in slice order."""
    rows = scan_rows(slices, p_pos, threshold, classes)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(slices):
        groups[s.scan].append(i)
    for key in groups:
        groups[key].sort(key=lambda i: (slices[i].slice_index or 0, slices[i].path))
    return rows, groups


def _no_outcome_notes(scans: dict[str, list], classes, pos: int, threshold: float) -> list[str]:
    """One line per outcome without any scan, so an empty FP/FN is said, not just missing."""
    neg = classes[1 - pos] if len(classes) == 2 else f'non-{classes[pos]}'
    what = {
        'TP': f'no {classes[pos]} scan was called {classes[pos]}',
        'TN': f'no {neg} scan was called {neg}',
        'FP': f'no {neg} scan was called {classes[pos]}',
        'FN': f'no {classes[pos]} scan was missed',
    }
    return [
        f'no {o} scans: {what[o]} at threshold {threshold:.2f}' for o in OUTCOMES if not scans[o]
    ]


def write_cam_report(
    model: nn.Module,
    slices: Sequence[Slice],
    p_pos,
    threshold: float,
    classes: Sequence[str],
    out_dir,
    n: int,
    *,
    transform: Callable,
    device: str | torch.device = 'cpu',
    batch_size: int = 32,
    labelled: bool = True,
    layer: nn.Module | str | None = None,
    method: str = 'occlusion',
    region_masks: Mapping[str, np.ndarray] | None = None,
    context=None,
    progress: str = 'none',
) -> dict:
    """Class activation maps written under ``out_dir/cam/``; returns what was written (JSON-safe).

    Labelled: ``<OUTCOME>_<scan>.png`` montages (all the scan's slices in slice order, map
    over slice, P(AD) per tile) for the ``n`` most confident scans of each outcome TP/TN/FP/FN,
    plus ``population_maps.png`` / ``.npz``: the mean map of the positive class (AD) over all slices
    of each true class, per-slice normalised (every slice is attributed: about one backward pass
    over the split). Unlabelled (``labelled=False``): montages named ``<decision>_<scan>.png``
    for up to ``n * 4`` scans (files without a scan id stand alone), most confident first.

    A montage maps the evidence for the scan's *predicted* class (a TN scan shows where it
    looks NC, in blue; AD evidence in red), every slice on one colour scale: 0 to the scan's
    largest value, so a weak slice looks weak. ``notes`` says which outcomes have no scan.
    ``region_masks`` (``{slice_key: bool [H, W] on the original slice}``, e.g.
    ``adni_timm.synthetic.slices.atrophy_masks``) adds ``region_score``: ``RegionScore`` of the
    positive-class maps of the true-positive-class slices against those regions, next to random
    maps. ``method`` as in ``class_maps``; ``layer`` (gradient methods only: a module or its
    name, default ``default_target_layer`` at the input size); ``p_pos`` holds P(AD) per slice;
    ``transform`` is the model's eval transform on PIL 'L' images; ``context`` (a
    ``plots.FigureContext``) titles the figures. The model is moved to ``device``. Also writes
    ``README.txt``: method, layer, map size, notes, region score. ``progress`` (auto, bar,
    lines, none) shows the slices mapped.
    """
    start = time.perf_counter()
    slices, p_pos = list(slices), np.asarray(p_pos, dtype=np.float64).reshape(-1)
    if len(slices) != len(p_pos):
        raise ValueError(f'write_cam_report: {len(slices)} slices but {len(p_pos)} probabilities')
    if method not in METHODS:
        raise ValueError(f'write_cam_report: method {method!r} is not one of {", ".join(METHODS)}')
    cam_dir = Path(out_dir) / 'cam'
    cam_dir.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model).to(device)
    pos = positive_index(classes)
    choice = _choose_montages(slices, p_pos, threshold, classes, n, labelled)
    wanted_pos = {i for key, c in choice.target_of.items() if c == pos for i in choice.groups[key]}
    wanted_neg = {i for key, c in choice.target_of.items() if c != pos for i in choice.groups[key]}

    layer, layer_name, side = _map_geometry(model, slices, transform, method, layer)
    attribute = partial(
        _attribute,
        model,
        slices,
        transform=transform,
        method=method,
        layer=layer,
        batch_size=batch_size,
    )
    # labelled: every slice is mapped for the population maps and region scores
    todo = list(range(len(slices))) if labelled else sorted(wanted_pos)
    bar = Progress(
        progress,
        len(todo) + len(wanted_neg),
        f'{method} maps',
        unit='slices',
        summary=True,
        logger=_logger,
    )
    with bar:
        passes = _map_passes(
            attribute,
            slices,
            todo,
            wanted_pos,
            wanted_neg,
            classes,
            labelled,
            region_masks,
            transform,
            bar,
        )
    kept_maps, kept_images, population, scored_maps, scored_masks = passes

    method_name = _METHOD_NAMES[method]
    montages, scans = _write_montages(
        choice,
        slices,
        p_pos,
        kept_maps,
        kept_images,
        cam_dir,
        threshold=threshold,
        classes=classes,
        labelled=labelled,
        method_name=method_name,
        context=context,
    )
    notes = _no_outcome_notes(scans, classes, pos, threshold) if labelled else []
    result = {
        'dir': str(cam_dir),
        'method': method,
        'layer': layer_name,
        'map_size': list(side) if side else None,
        'target': classes[pos],
        'montages': montages,
        'scans': dict(scans),
        'montage_targets': {key: classes[c] for key, c in choice.target_of.items()},
        'notes': notes,
        'population_maps': None,
        'population_npz': None,
        'region_score': None,
        'n_slices': len(todo) + len(wanted_neg),
    }
    if labelled and population.counts:
        title = f'Mean {method_name} map of {classes[pos]} per true class' + (
            '' if method == 'occlusion' else f' ({layer_name})'
        )
        result.update(population.write(cam_dir, classes, pos, method_name, title, context))
    if scored_maps:
        score = region_score(np.stack(scored_maps), np.stack(scored_masks), side)
        result['region_score'] = {'class': classes[pos], **score.to_dict()}
    elif region_masks is not None:
        notes.append(f'region score: no true {classes[pos]} slice has a region mask')
    result['seconds'] = round(time.perf_counter() - start, 2)
    _write_readme(cam_dir, result, method_name)
    for note in notes:
        _logger.info('%s maps: %s', method_name, note)
    _logger.info(
        'wrote %d %s montages (%s, %s map) to %s in %.1fs',
        len(montages),
        method_name,
        layer_name,
        'x'.join(map(str, side or ())),
        cam_dir,
        result['seconds'],
    )
    return result


def _map_passes(
    attribute, slices, todo, wanted_pos, wanted_neg, classes, labelled, region_masks, transform, bar
):
    """Pass 1, the positive class: population sums and region scores (labelled), and the
    montages of scans predicted positive; pass 2: the montages of scans predicted negative,
    mapped for their own class. Returns (kept maps, kept images, population, scored maps,
    their masks)."""
    pos = positive_index(classes)
    kept_maps, kept_images = {}, {}
    population = _PopulationSums()
    scored_maps, scored_masks = [], []
    for i, raw, shown in attribute(todo, pos):
        bar.update(1)
        if i in wanted_pos:
            kept_maps[i], kept_images[i] = raw, shown
        if labelled:
            label = slices[i].label
            population.add(label, raw, shown)
            mask = (
                None
                if region_masks is None or label != pos
                else region_masks.get(slice_key(slices[i].path))
            )
            if mask is not None:
                scored_maps.append(raw)
                scored_masks.append(transform_mask(mask, transform))
    for i, raw, shown in attribute(sorted(wanted_neg), 1 - pos if len(classes) == 2 else pos):
        bar.update(1)
        kept_maps[i], kept_images[i] = raw, shown
    return kept_maps, kept_images, population, scored_maps, scored_masks


def _map_geometry(model, slices, transform, method: str, layer):
    """(layer, its name, the map's size): the input's grid of squares for occlusion, else the
    resolved layer's output size at the input size."""
    input_shape = tuple(_load(slices[:1], transform).shape[1:]) if slices else (1, 1, 1)
    if method == 'occlusion':
        if layer is not None:
            raise ValueError('occlusion perturbs the input, it has no layer: drop the layer')
        window = _occlusion_window(*input_shape[1:])
        return None, 'input', (input_shape[1] // window[0], input_shape[2] // window[1])
    layer = _resolve_layer(model, layer, input_shape)
    name = _layer_name(model, layer)
    return layer, name, (_output_sizes(model, [name], input_shape)[name] if slices else None)


@dataclass(frozen=True)
class _Choice:
    """Which scans get a montage, in order, and the class each montage explains."""

    groups: dict[str, list[int]]  # scan -> its slice indices, in slice order
    p_of: dict[str, float]  # scan -> mean P(positive)
    chosen: list[tuple[str, str]]  # (outcome or decision, scan)
    target_of: dict[str, int]  # scan -> the class index its montage explains


def _choose_montages(slices, p_pos, threshold: float, classes, n: int, labelled: bool) -> _Choice:
    """Labelled: the ``n`` most confident scans of each outcome; else up to ``n * 4`` scans, most
    confident first. Each montage explains the *predicted* class."""
    pos = positive_index(classes)
    negative = negative_name(classes)
    rows, groups = _group_scans(slices, p_pos, threshold, classes)
    keys = [r.scan for r in rows]
    p_scan = np.array([r.p_positive for r in rows])
    p_of = dict(zip(keys, p_scan))
    if labelled:
        y = [slices[groups[k][0]].label == pos for k in keys]
        chosen = [
            (outcome, key)
            for outcome, picked in select_scans(keys, y, p_scan, threshold, n).items()
            for key in picked
        ]
    else:
        order = np.argsort(-np.abs(p_scan - threshold), kind='stable')[: n * 4]
        chosen = [(classes[pos] if p_scan[i] >= threshold else negative, keys[i]) for i in order]
    # with more than two classes a negative decision names no single class, so those keep the
    # positive class's map
    target_of = {
        key: pos if p_of[key] >= threshold or len(classes) != 2 else 1 - pos for _, key in chosen
    }
    return _Choice(groups, p_of, chosen, target_of)


def _attribute(
    model, slices, indices, target, *, transform, method, layer, batch_size
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (slice index, raw map, displayed slice) for ``indices``, batch by batch."""
    for b in range(0, len(indices), batch_size):
        idx = indices[b : b + batch_size]
        images = _load([slices[i] for i in idx], transform)
        maps = class_maps(
            model,
            images,
            target,
            method=method,
            layer=layer,
            batch_size=batch_size,
            normalize=False,
        )
        yield from zip(idx, maps, _display(images))


class _PopulationSums:
    """Per true class: the sum of per-slice normalised maps and of the displayed slices."""

    def __init__(self):
        self.map_sums, self.image_sums, self.counts = {}, {}, defaultdict(int)

    def add(self, label: int, raw: np.ndarray, shown: np.ndarray) -> None:
        peak = float(raw.max())
        unit = raw / peak if peak > 0 else np.zeros_like(raw)
        self.map_sums[label] = self.map_sums.get(label, 0.0) + unit.astype(np.float64)
        self.image_sums[label] = self.image_sums.get(label, 0.0) + shown.astype(np.float64)
        self.counts[label] += 1

    def write(self, cam_dir: Path, classes, pos: int, method_name: str, title: str, context):
        """``population_maps.npz`` + ``.png``; returns the result keys that name them."""
        from .. import plots  # matplotlib only when a report is written

        present = [label for label in range(len(classes)) if self.counts[label]]
        counts = {classes[k]: self.counts[k] for k in present}
        pop = {classes[k]: (self.map_sums[k] / self.counts[k]).astype(np.float32) for k in present}
        mean_slices = {
            classes[k]: (self.image_sums[k] / self.counts[k]).astype(np.float32) for k in present
        }
        npz = cam_dir / 'population_maps.npz'
        np.savez_compressed(
            npz,
            **pop,
            **{f'mean_slice_{k}': v for k, v in mean_slices.items()},
            **{f'n_{k}': v for k, v in counts.items()},
        )
        png = plots.plot_population_maps(
            pop,
            cam_dir / 'population_maps.png',
            mean_slices=mean_slices,
            counts=counts,
            title=title,
            target=classes[pos],
            map_name=f'{method_name} map',
            context=context,
        )
        return {
            'population_maps': str(png),
            'population_npz': str(npz),
            'population_counts': counts,
        }


def _write_montages(
    choice: _Choice,
    slices,
    p_pos,
    kept_maps,
    kept_images,
    cam_dir: Path,
    *,
    threshold,
    classes,
    labelled: bool,
    method_name: str,
    context,
) -> tuple[list[str], dict[str, list[str]]]:
    """One montage PNG per chosen scan; returns the paths and the scans per outcome."""
    pos = positive_index(classes)
    negative = negative_name(classes)
    montages, used = [], set()
    scans = {o: [] for o in OUTCOMES} if labelled else defaultdict(list)
    for outcome, key in choice.chosen:
        idx = choice.groups[key]
        stem = f'{outcome}_{safe_name(key, "image")}'
        while stem in used:  # two loose files with one stem in different folders
            stem += '_'
        used.add(stem)
        scans[outcome].append(key)
        p_mean = choice.p_of[key]
        decision = classes[pos] if p_mean >= threshold else negative
        truth = f'true {classes[slices[idx[0]].label]}, ' if labelled else ''
        explained = classes[choice.target_of[key]]
        title = (
            f'{outcome}: scan {key} ({truth}mean P({classes[pos]}) {p_mean:.2f} '
            f'-> {decision} at threshold {threshold:.2f}); map: evidence for {explained}'
        )
        tile_titles = [
            ('' if slices[i].slice_index is None else f'slice {slices[i].slice_index}\n')
            + f'P({classes[pos]}) {p_pos[i]:.2f}'
            for i in idx
        ]
        path = scan_montage(
            np.stack([kept_images[i] for i in idx]),
            np.stack([kept_maps[i] for i in idx]),
            tile_titles=tile_titles,
            title=title,
            explained=explained,
            positive=choice.target_of[key] == pos,
            method_name=method_name,
            context=context,
            path=cam_dir / f'{stem}.png',
        )
        montages.append(str(path))
    return montages, scans


def scan_montage(
    images,
    maps,
    *,
    tile_titles,
    title: str,
    explained: str,
    positive: bool,
    method_name: str,
    context=None,
    path=None,
):
    """One scan's montage: its slices in order, the map of the class it ``explained`` over each,
    every slice on one colour scale from 0 to the scan's largest value (a weak slice looks weak);
    red for the positive class, blue otherwise. Written to ``path``, or returned as a PIL image
    when ``path`` is None (the demo). evaluate.py's montages and the demo's are this figure."""
    from .. import plots  # matplotlib only when a montage is drawn

    maps = np.asarray(maps)
    return plots.plot_cam_montage(
        np.asarray(images),
        maps,
        path,
        tile_titles=tile_titles,
        title=title,
        vmax=float(maps.max()) or 1.0,
        cmap=_CLASS_CMAPS[bool(positive)],
        colorbar_label=f"{method_name} for {explained}, 0 to this scan's max",
        context=context,
    )


def _write_readme(cam_dir: Path, result: dict, method_name: str) -> None:
    """What the folder holds, in words: the layer, its map size, the notes and the region score."""
    size = 'x'.join(map(str, result['map_size'] or ())) or '?'
    where = (
        f'Occlusion maps: the logit drop when each square of an {size} grid is set to the mean '
        f'intensity, upsampled to the input.'
        if result['method'] == 'occlusion'
        else f'{method_name} maps at layer {result["layer"]} ({size} map, upsampled to the input).'
    )
    lines = [
        where,
        "Montages: the evidence for each scan's predicted class, one colour scale per scan",
        "(0 to the scan's largest value; red: evidence for the positive class, blue: for the",
        'negative class).',
    ]
    lines += [f'- {name}' for name in (Path(m).name for m in result['montages'])]
    lines += result['notes']
    if result['population_maps']:
        lines.append(
            f'population_maps.png: mean map of {result["target"]} per true class (each slice '
            f'normalised to its own maximum), and their difference over the mean anatomy.'
        )
    score = result['region_score']
    if score:
        lines.append(
            textwrap.fill(
                f'Region score over {score["n_slices"]} true {score["class"]} slices: '
                f'{score["energy_inside"]:.3f} of the map mass inside the regions (random maps '
                f'{score["energy_inside_random"]:.3f}); peak inside in '
                f'{score["pointing_game"]:.3f} of slices (random maps '
                f'{score["pointing_game_random"]:.3f}).',
                100,
            )
        )
    (cam_dir / 'README.txt').write_text('\n'.join(lines) + '\n', encoding='utf-8')
