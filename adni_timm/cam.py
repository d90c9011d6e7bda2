"""Grad-CAM: where in a slice the model finds its evidence for AD.

The attribution itself is captum's ``LayerGradCam`` (gradients of one class logit with
respect to a layer's output, averaged over space, weighting that output's channels).
This module adds what captum leaves to the caller: choosing a sensible layer for timm
models, refusing channels-last (NHWC) layers that would give silently wrong maps,
float32 outside autocast, batching, upsampling to the input size and per-map
normalisation; plus the report (patient montages, population maps) that evaluation writes.

Maps are normalised by their own maximum, so a map shows *where* the evidence lies within
its slice, not how strong it is: read it together with the slice's P(AD).
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from timm.layers import LayerNorm2d
from torch import nn

from .data import Slice, positive_index, read_image

__all__ = [
    'OUTCOMES',
    'default_target_layer',
    'gradcam',
    'select_patients',
    'population_maps',
    'write_cam_report',
]

_logger = logging.getLogger(__name__)

OUTCOMES = ('TP', 'TN', 'FP', 'FN')


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile hides the real modules (and hooks on them) behind _orig_mod
    return getattr(model, '_orig_mod', model)


def default_target_layer(model: nn.Module) -> nn.Module:
    """The last NCHW feature stage: ``stages[-1]`` (ConvNeXt and most timm CNNs), ``layer4``
    (ResNet), else the last module of timm's ``feature_info``.

    For ConvNeXt never a block's inner ``norm``/``mlp``: with ``conv_mlp=False`` they run on
    NHWC tensors and Grad-CAM over them averages the wrong axis. Raises ValueError when no
    default fits: pass ``layer=`` (a module or its name) to ``gradcam``.
    """
    model = _unwrap(model)
    stages = getattr(model, 'stages', None)
    if isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages):
        return stages[-1]
    if isinstance(getattr(model, 'layer4', None), nn.Module):
        return model.layer4
    info = getattr(model, 'feature_info', None)
    if isinstance(info, list) and info and isinstance(info[-1], dict) and info[-1].get('module'):
        return model.get_submodule(info[-1]['module'])
    raise ValueError(
        f'no default Grad-CAM layer for {type(model).__name__}: pass layer= a module '
        f'whose output is NCHW (e.g. the last convolutional stage), or its name'
    )


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    if layer is None:
        layer = default_target_layer(model)
    elif isinstance(layer, str):
        layer = model.get_submodule(layer)
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
) -> np.ndarray:
    """Grad-CAM maps ``[N, H, W]`` (float32, 0..1) of class ``target`` for images ``[N, C, H, W]``.

    Each map is ReLU(captum LayerGradCam) at ``layer`` (default ``default_target_layer``), upsampled
    bilinearly to the input size and divided by its own maximum (an all-zero map stays zero).
    Runs on the model's device, in eval mode (the training flag is restored), with grads enabled
    and autocast off: the attribution is computed in the model's own dtype (float32 unless the
    weights themselves were cast), so a caller's bf16 autocast does not coarsen the gradients.
    """
    if images.ndim != 4:
        raise ValueError(f'gradcam: images must be [N, C, H, W], got shape {tuple(images.shape)}')
    model = _unwrap(model)
    layer = _resolve_layer(model, layer)
    param = next(model.parameters())
    height, width = images.shape[-2:]
    explainer = LayerGradCam(model, layer)
    was_training = model.training
    model.eval()
    maps = []
    try:
        # inference_mode(False) + clone: a caller's inference tensors cannot enter autograd
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast(param.device.type, enabled=False),
        ):
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(param.device, param.dtype).clone()
                attr = explainer.attribute(x, target=target, relu_attributions=True).detach()
                _check_spatial(attr, height, width)
                attr = LayerAttribution.interpolate(attr.float(), (height, width), 'bilinear')[:, 0]
                peak = attr.amax(dim=(1, 2), keepdim=True)
                maps.append(torch.where(peak > 0, attr / peak.clamp_min(1e-12), 0.0).cpu())
    finally:
        model.train(was_training)
    if not maps:
        return np.zeros((0, height, width), np.float32)
    return torch.cat(maps).clamp_(0, 1).numpy().astype(np.float32, copy=False)


def select_patients(ids, y, p, threshold: float, n: int) -> dict[str, list]:
    """For each outcome TP, TN, FP, FN: the ``n`` most confident patients, most confident first.

    ``ids``, ``y`` (1 = positive / AD, 0 = negative) and ``p`` (P(AD)) are per patient; positive
    means ``p >= threshold``. Confidence is the distance from the threshold on the side of the
    decision (``|p - threshold|``); ties keep the order of ``ids``.
    """
    ids, y, p = list(ids), np.asarray(y).astype(bool), np.asarray(p, dtype=np.float64)
    if not len(ids) == len(y) == len(p):
        raise ValueError(
            f'select_patients: {len(ids)} ids, {len(y)} labels, {len(p)} probabilities'
        )
    pred = p >= threshold
    masks = {'TP': y & pred, 'TN': ~y & ~pred, 'FP': ~y & pred, 'FN': y & ~pred}
    order = np.argsort(-np.abs(p - threshold), kind='stable')
    return {k: [ids[i] for i in order if masks[k][i]][:n] for k in OUTCOMES}


def population_maps(maps, labels, classes: Sequence[str] = ('NC', 'AD')) -> dict[str, np.ndarray]:
    """Mean map per class, ``{'NC': [H, W], 'AD': [H, W]}`` (``labels`` = class indices per map).

    Only meaningful because the slices are aligned (same anatomy at the same pixels).
    Classes without any slice are left out.
    """
    maps, labels = np.asarray(maps, dtype=np.float32), np.asarray(labels)
    if len(maps) != len(labels):
        raise ValueError(f'population_maps: {len(maps)} maps for {len(labels)} labels')
    return {
        name: maps[labels == i].mean(axis=0)
        for i, name in enumerate(classes)
        if (labels == i).any()
    }


# --------------------------------------------------------------------------------------- the report


def _safe_name(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '-', str(text)).strip('-') or 'image'


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    names = (name for name, m in _unwrap(model).named_modules() if m is layer)
    return next(names, type(layer).__name__)


def _load(slices: Sequence[Slice], transform: Callable) -> torch.Tensor:
    return torch.stack([transform(read_image(s.path)) for s in slices])


def _display(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] model inputs -> [N, H, W] for display (channel mean; plots rescale per tile)."""
    return images.float().mean(dim=1).numpy()


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
) -> dict:
    """Grad-CAM of the positive class (AD) written under ``out_dir/cam/``; returns what was written.

    Labelled: ``<OUTCOME>_<patient>.png`` montages (all the patient's slices in slice order, map
    over slice, P(AD) per tile) for the ``n`` most confident patients of each outcome TP/TN/FP/FN,
    plus ``population_maps.png`` / ``.npz``: the mean map over all slices of each class (every
    slice is attributed, so this pass costs about one backward pass over the split).
    Unlabelled (``labelled=False``): montages named ``<decision>_<patient>.png`` for up to ``n * 4``
    patients (files without a patient id stand alone), most confident first; no population maps.
    ``p_pos`` holds P(AD) per slice; ``transform`` is the model's eval transform on PIL 'L' images.
    The model is moved to ``device``; ``layer`` as in ``gradcam``.
    """
    start = time.perf_counter()
    slices, p_pos = list(slices), np.asarray(p_pos, dtype=np.float64).reshape(-1)
    if len(slices) != len(p_pos):
        raise ValueError(f'write_cam_report: {len(slices)} slices but {len(p_pos)} probabilities')
    cam_dir = Path(out_dir) / 'cam'
    cam_dir.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model).to(device)
    pos = positive_index(classes)
    negative = classes[1 - pos] if len(classes) == 2 else f'not-{classes[pos]}'

    # group slices into patients (a file without a slice index stands alone), slices in order
    groups: dict[str, list[int]] = defaultdict(list)
    names: dict[str, str] = {}
    for i, s in enumerate(slices):
        key = s.patient if s.slice_index is not None else s.path
        groups[key].append(i)
        names[key] = s.patient if s.slice_index is not None else Path(s.path).stem
    for key in groups:
        groups[key].sort(key=lambda i: (slices[i].slice_index or 0, slices[i].path))
    keys = list(groups)
    p_patient = np.array([p_pos[groups[k]].mean() for k in keys])
    p_of = dict(zip(keys, p_patient))

    if labelled:
        y = [slices[groups[k][0]].label == pos for k in keys]
        chosen = [
            (outcome, key)
            for outcome, picked in select_patients(keys, y, p_patient, threshold, n).items()
            for key in picked
        ]
    else:
        order = np.argsort(-np.abs(p_patient - threshold), kind='stable')[: n * 4]
        chosen = [(classes[pos] if p_patient[i] >= threshold else negative, keys[i]) for i in order]
    wanted = {i for _, key in chosen for i in groups[key]}

    # one pass: population sums over every slice (labelled), maps kept only for montage slices
    layer = _resolve_layer(model, layer)
    todo = list(range(len(slices))) if labelled else sorted(wanted)
    kept_maps, kept_images = {}, {}
    map_sums, image_sums, counts = {}, {}, defaultdict(int)
    for b in range(0, len(todo), batch_size):
        idx = todo[b : b + batch_size]
        images = _load([slices[i] for i in idx], transform)
        maps = gradcam(model, images, pos, layer=layer, batch_size=batch_size)
        shown = _display(images)
        for j, i in enumerate(idx):
            if i in wanted:
                kept_maps[i], kept_images[i] = maps[j], shown[j]
            if labelled:
                label = slices[i].label
                map_sums[label] = map_sums.get(label, 0.0) + maps[j].astype(np.float64)
                image_sums[label] = image_sums.get(label, 0.0) + shown[j].astype(np.float64)
                counts[label] += 1

    from . import plots  # matplotlib only when a report is written

    montages, used = [], set()
    patients = {o: [] for o in OUTCOMES} if labelled else defaultdict(list)
    for outcome, key in chosen:
        idx = groups[key]
        stem = f'{outcome}_{_safe_name(names[key])}'
        while stem in used:  # two loose files with one stem in different folders
            stem += '_'
        used.add(stem)
        patients[outcome].append(names[key])
        p_mean = p_of[key]
        decision = classes[pos] if p_mean >= threshold else negative
        truth = f'true {classes[slices[idx[0]].label]}, ' if labelled else ''
        title = (
            f'{outcome}: patient {names[key]} ({truth}mean P({classes[pos]}) {p_mean:.2f} '
            f'-> {decision} at threshold {threshold:.2f})'
        )
        tile_titles = [
            ('' if slices[i].slice_index is None else f'slice {slices[i].slice_index}\n')
            + f'P({classes[pos]}) {p_pos[i]:.2f}'
            for i in idx
        ]
        montages.append(
            str(
                plots.plot_cam_montage(
                    np.stack([kept_images[i] for i in idx]),
                    np.stack([kept_maps[i] for i in idx]),
                    cam_dir / f'{stem}.png',
                    tile_titles=tile_titles,
                    title=title,
                )
            )
        )

    result = {
        'dir': str(cam_dir),
        'layer': _layer_name(model, layer),
        'target': classes[pos],
        'montages': montages,
        'patients': dict(patients),
        'population_maps': None,
        'population_npz': None,
        'n_slices': len(todo),
    }
    if labelled and counts:
        present = [label for label in range(len(classes)) if counts[label]]
        pop = {classes[k]: (map_sums[k] / counts[k]).astype(np.float32) for k in present}
        mean_slices = {classes[k]: (image_sums[k] / counts[k]).astype(np.float32) for k in present}
        npz = cam_dir / 'population_maps.npz'
        np.savez_compressed(
            npz,
            **pop,
            **{f'mean_slice_{k}': v for k, v in mean_slices.items()},
            **{f'n_{classes[k]}': counts[k] for k in present},
        )
        png = plots.plot_population_maps(
            pop,
            cam_dir / 'population_maps.png',
            mean_slices=mean_slices,
            counts={classes[k]: counts[k] for k in present},
            title=f'Mean Grad-CAM of P({classes[pos]}) per true class',
        )
        result.update(
            population_maps=str(png),
            population_npz=str(npz),
            population_counts={classes[k]: counts[k] for k in present},
        )
    result['seconds'] = round(time.perf_counter() - start, 2)
    _logger.info(
        'wrote %d Grad-CAM montages to %s in %.1fs', len(montages), cam_dir, result['seconds']
    )
    return result
