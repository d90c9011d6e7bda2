"""Evaluate a trained model honestly: slice- and patient-level metrics, bootstrap CIs, an untuned threshold.

    model, info = resolve_model('runs/tiny')            # or local-dir:DIR, hf-hub:ORG/NAME, path/model.safetensors
    result = evaluate('runs/tiny', 'AD_NC', split='test', output_dir='runs/tiny/eval-test')
    print(format_table(result))

Preprocessing is the model's own: ``timm.data.create_transform(**resolve_data_config(model=model))``,
exactly what anyone who downloads the weights gets. The positive class is ``AD``; with more
classes (``NC,MCI,AD``) the metrics are AD vs rest on ``p_AD``. The decision threshold is never
tuned on the evaluated split: ``threshold`` (CLI) > ``target_sensitivity`` met on validation
patients > the validation threshold stored with the model > 0.5.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from accelerate import PartialState
from huggingface_hub import hf_hub_download
from timm.data import resolve_data_config

from . import data, hub, metrics, plots
from .data import positive_index
from .hardware import bf16_supported

__all__ = [
    'EvaluationError', 'resolve_model', 'positive_index', 'predict', 'evaluate', 'format_table', 'predict_images',
    'format_predictions', 'default_output_dir',
]

_logger = logging.getLogger(__name__)

DATA_CHANNELS = 1  # data.SliceDataset reads every slice as 8-bit grayscale ('L')
IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png')
MODEL_FORMS = 'a training run folder (RUN), an export folder, local-dir:DIR, hf-hub:ORG/NAME or path/model.safetensors'


class EvaluationError(ValueError):
    """Bad input to evaluation (model reference, threshold options, classes); the message names the fix."""


# ---------------------------------------------------------------------------------------------- the model

def _locate_export(path: str) -> tuple[Path, Path | None]:
    """(export folder, run folder or None) for a RUN, RUN/best, an export folder or its model.safetensors."""
    p = Path(path).expanduser()
    if not p.exists():
        raise EvaluationError(f'model {path!r} does not exist; pass {MODEL_FORMS}.')
    if p.is_file():
        if p.name != hub.WEIGHTS_NAME:
            raise EvaluationError(
                f'{p} is not an export\'s weights file: timm loads {hub.WEIGHTS_NAME} with {hub.CONFIG_NAME} beside '
                f'it; pass the folder, or rename the file to {hub.WEIGHTS_NAME} next to its {hub.CONFIG_NAME}.')
        p = p.parent
    if hub.is_export(p / 'best'):
        return p / 'best', p
    if not hub.is_export(p):
        raise EvaluationError(
            f'{p} is neither a training run (no best/{hub.WEIGHTS_NAME}) nor a timm export folder (needs '
            f'{hub.CONFIG_NAME} and {hub.WEIGHTS_NAME}); pass {MODEL_FORMS}.')
    if 'architecture' not in hub.read_export_config(p):
        raise EvaluationError(f'{p / hub.CONFIG_NAME} is not a timm config (no "architecture" key); '
                              f'export the model with adni_timm.hub.export_model or timm.models.save_for_hf.')
    run_dir = p.parent if (p.parent / 'split.json').is_file() else None
    return p, run_dir


def _create_pretrained(name: str) -> torch.nn.Module:
    try:
        return timm.create_model(name, pretrained=True)
    except (OSError, RuntimeError, ValueError, KeyError) as e:  # missing files, offline Hub, shape mismatch
        hint = (' Check the repository id (ORG/NAME[@revision]) and the network; offline, the repository must be in '
                'the Hugging Face cache.' if name.startswith('hf') else '')
        raise EvaluationError(f'could not load {name} with timm: {type(e).__name__}: {e}{hint}') from e


def _hub_extra(repo: str) -> dict[str, Any]:
    """``config.json['adni_timm']`` of a Hub repo (``ORG/NAME[@revision]``); cached by the model load."""
    repo_id, _, revision = repo.partition('@')
    with open(hf_hub_download(repo_id, hub.CONFIG_NAME, revision=revision or None), encoding='utf-8') as f:
        return dict(json.load(f).get(hub.EXTRA_KEY, {}))


def resolve_model(ref: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load ``ref`` with stock timm (``pretrained=True``), in eval mode, with what we know about it.

    ``ref``: a RUN folder (uses ``RUN/best``; ``RUN/split.json`` gives the validation patients), an
    export folder, ``local-dir:DIR``, ``hf-hub:ORG/NAME[@rev]`` or ``path/model.safetensors``.
    ``info`` = ``{'model': ref, 'threshold': stored validation threshold or None, 'threshold_source',
    'run_dir': Path or None, 'classes': [...]}``.
    """
    ref = str(ref)
    prefix, _, rest = ref.partition(':')
    if prefix in ('hf-hub', 'hf_hub') and rest:
        model = _create_pretrained(ref)
        extra, run_dir = _hub_extra(rest), None
    else:
        export_dir, run_dir = _locate_export(rest if prefix == 'local-dir' and rest else ref)
        model = _create_pretrained(f'local-dir:{export_dir}')
        extra = hub.export_extra(export_dir)
    threshold = extra.get('threshold')
    classes = extra.get('classes') or model.pretrained_cfg.get('label_names') or data.DEFAULT_CLASSES
    info = {
        'model': ref,
        'threshold': None if threshold is None else float(threshold),
        'threshold_source': extra.get('threshold_source', 'validation') if threshold is not None else None,
        'run_dir': run_dir,
        'classes': list(classes),
    }
    return model.eval(), info


def _input_channels(model: torch.nn.Module) -> int:
    first_conv = model.pretrained_cfg.get('first_conv')
    try:
        return model.get_submodule(first_conv).in_channels
    except (AttributeError, TypeError):  # no first_conv in the cfg: trust the data config
        return resolve_data_config(model=model)['input_size'][0]


def _check_input_channels(model: torch.nn.Module) -> None:
    channels = {_input_channels(model), resolve_data_config(model=model)['input_size'][0]}
    if channels != {DATA_CHANNELS}:
        raise EvaluationError(
            f'the model takes {max(channels)}-channel input but ADNI slices are {DATA_CHANNELS}-channel grayscale; '
            f'use a model created with in_chans=1 (every adni_convnext_* model is), e.g. one trained by train.py.')


# ---------------------------------------------------------------------------------------------- inference

@torch.inference_mode()
def predict(model: torch.nn.Module, slices: Sequence[data.Slice], *, batch_size: int = 64, num_workers: int = 0,
            accelerator=None, tta: bool = False) -> np.ndarray:
    """Softmax probabilities ``(len(slices), num_classes)``, in the order of ``slices``.

    Preprocessing is the model's own eval transform. With an ``accelerator`` the slices are sharded over
    its processes and gathered with ``gather_for_metrics`` (each slice counted once); every process must
    call. Without one, this process alone predicts on its own device. ``tta`` averages the softmax of the
    image and its horizontal flip. On CUDA: bf16 autocast (fp16 where bf16 is unsupported) and channels_last.
    """
    if not slices:
        raise EvaluationError('predict: no slices to predict on.')
    net = accelerator.unwrap_model(model) if accelerator is not None else model
    _check_input_channels(net)
    device = accelerator.device if accelerator is not None else PartialState().device
    cuda = device.type == 'cuda'
    _, eval_tf = data.build_transforms(net)  # == create_transform(**resolve_data_config(model=net))
    loader = data.create_loader(data.SliceDataset(list(slices), transform=eval_tf), batch_size, shuffle=False,
                                num_workers=num_workers, pin_memory=cuda)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    was_training = net.training
    net.eval().to(device)
    if cuda:
        net.to(memory_format=torch.channels_last)
    amp_dtype = torch.bfloat16 if cuda and bf16_supported() else torch.float16
    autocast = torch.autocast('cuda', dtype=amp_dtype) if cuda else nullcontext()
    out = []
    try:
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                probs = net(images).float().softmax(-1)
                if tta:
                    probs = (probs + net(images.flip(-1)).float().softmax(-1)) / 2
            if accelerator is not None:
                probs = accelerator.gather_for_metrics(probs)
            out.append(probs.cpu())
    finally:
        net.train(was_training)
    return torch.cat(out).double().numpy()


# ---------------------------------------------------------------------------------------------- the threshold

def _validation_slices(data_dir, classes, run_dir: Path | None) -> tuple[list[data.Slice], str]:
    """Validation slices from ``DATA_DIR/train``: the run's ``split.json`` val patients, else a seed-0 split."""
    train = data.scan_split(data_dir, 'train', classes)
    split_file = run_dir / 'split.json' if run_dir is not None else None
    if split_file is not None and split_file.is_file():
        with split_file.open(encoding='utf-8') as f:
            split = json.load(f)
        val = data.select(train, split, 'val')
        if split.get('level') != 'patient':
            _logger.warning('%s splits by %s, not by patient: the validation slices share patients with the '
                            'training slices, so the chosen threshold is optimistic.', split_file, split.get('level'))
        if not val:
            raise EvaluationError(f'{split_file} lists no validation patients (the run trained without a '
                                  f'validation split), so none can set the threshold; pass --threshold X.')
        return val, str(split_file)
    split = data.split_patients(train, seed=0)
    _logger.warning('no split.json with this model: choosing the threshold on a seed-0 patient split of %s/train. '
                    'If the model was trained on those patients the threshold is optimistic (never on the test '
                    'split, though).', data_dir)
    return data.select(train, split, 'val'), 'seed-0 patient split of DATA_DIR/train'


def _choose_threshold(*, threshold, target_sensitivity, info, data_dir, split, classes, eval_patients,
                      predict_fn) -> tuple[float, str, dict[str, Any]]:
    """(threshold, source, details): cli > target sensitivity on validation patients > stored > 0.5."""
    if threshold is not None and target_sensitivity is not None:
        raise EvaluationError('pass either --threshold or --target-sensitivity, not both.')
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise EvaluationError(f'--threshold must be a probability in [0, 1], got {threshold}.')
        return float(threshold), 'cli', {}
    if target_sensitivity is not None:
        if not 0 < target_sensitivity <= 1:
            raise EvaluationError(f'--target-sensitivity must be in (0, 1], got {target_sensitivity}.')
        if split == 'train':
            raise EvaluationError(
                '--target-sensitivity chooses the threshold on validation patients carved from the train split, '
                'so it cannot be used when evaluating --split train; pass --threshold X, or evaluate --split test.')
        val, source = _validation_slices(data_dir, classes, info.get('run_dir'))
        leaked = set(eval_patients) & {s.patient for s in val}
        if leaked:
            raise EvaluationError(
                f'{len(leaked)} validation patients (e.g. {sorted(leaked)[:3]}) are also in the evaluated split '
                f'{split!r}; a threshold chosen on them would be tuned on the test data. Pass --threshold X.')
        pos = positive_index(classes)
        _, y, p = metrics.patient_level([s.patient for s in val], [int(s.label == pos) for s in val],
                                        predict_fn(val)[:, pos])
        chosen = metrics.threshold_for_sensitivity(y, p, target_sensitivity)
        achieved = metrics.binary_metrics(y, p, chosen)
        details = {'threshold_selection': {
            'target_sensitivity': float(target_sensitivity), 'chosen_on': source, 'validation_patients': int(len(y)),
            'validation_sensitivity': achieved['sensitivity'], 'validation_specificity': achieved['specificity']}}
        return chosen, 'validation', details
    if info.get('threshold') is not None:
        return float(info['threshold']), info.get('threshold_source') or 'validation', {}
    return 0.5, 'fixed', {}


# ---------------------------------------------------------------------------------------------- evaluate

def _default_info(model_ref, model: torch.nn.Module) -> dict[str, Any]:
    return {'model': str(model_ref), 'threshold': None, 'threshold_source': None, 'run_dir': None,
            'classes': list(model.pretrained_cfg.get('label_names') or data.DEFAULT_CLASSES)}


def _check_classes(model: torch.nn.Module, classes: Sequence[str]) -> None:
    if model.num_classes != len(classes):
        raise EvaluationError(
            f'the model has {model.num_classes} outputs but the classes are {",".join(classes)} ({len(classes)}); '
            f'pass --classes with the {model.num_classes} classes it was trained on, in training order.')


def evaluate(model_ref, data_dir, *, split: str = 'test', output_dir=None, threshold: float | None = None,
             target_sensitivity: float | None = None, batch_size: int = 64, num_workers: int = 0, tta: bool = False,
             n_boot: int = 1000, classes: Sequence[str] | None = None, model: torch.nn.Module | None = None,
             info: dict | None = None, accelerator=None) -> dict[str, Any]:
    """Slice- and patient-level metrics of a model on ``DATA_DIR/<split>``: the ``metrics.json`` dict.

    ``model``/``info`` skip loading ``model_ref`` (training passes its model). With ``output_dir``, writes
    metrics.json, predictions.csv, patients.csv, confusion_matrix.png (patients),
    confusion_matrix_slices.png and roc.png (patients). CIs: percentile bootstrap over patients
    (``n_boot`` resamples, 0 for none). With an ``accelerator`` every process must call (inference is
    sharded, each slice counted once) and only the main process writes; without one, call it on one process.
    """
    if model is None:
        model, info = resolve_model(model_ref)
    info = info or _default_info(model_ref, model)
    classes = list(classes or info['classes'])
    _check_classes(model, classes)
    _check_input_channels(model)
    slices = data.scan_split(data_dir, split, classes)
    pos = positive_index(classes)

    def predict_fn(items):
        return predict(model, items, batch_size=batch_size, num_workers=num_workers, accelerator=accelerator,
                       tta=tta)

    patients = [s.patient for s in slices]
    thr, source, details = _choose_threshold(
        threshold=threshold, target_sensitivity=target_sensitivity, info=info, data_dir=data_dir, split=split,
        classes=classes, eval_patients=patients, predict_fn=predict_fn)
    probs = predict_fn(slices)
    y = np.array([int(s.label == pos) for s in slices])
    p_pos = probs[:, pos]
    result = metrics.slice_and_patient_metrics(patients, y, p_pos, thr)
    if n_boot:
        for level, cis in metrics.bootstrap_ci(patients, y, p_pos, thr, n_boot=n_boot).items():
            result[level].update({f'{k}_ci': v for k, v in cis.items()})
    result.update({
        'threshold': thr, 'threshold_source': source, **details,
        'model': info['model'], 'data_dir': str(data_dir), 'split': split,
        'classes': classes, 'positive_class': classes[pos], 'tta': tta,
        'ci': {'method': 'percentile bootstrap, patients resampled within class', 'n_boot': n_boot,
               'level': 0.95, 'seed': 0} if n_boot else None,
    })
    if output_dir is not None and (accelerator is None or accelerator.is_main_process):
        _write_reports(Path(output_dir), result, slices, probs, y, classes)
    return result


def _predicted_names(probs: np.ndarray, thr: float, classes: Sequence[str]) -> list[str]:
    """AD when p_AD >= thr, else the most probable other class (NC for two classes)."""
    pos = positive_index(classes)
    others = probs.copy()
    others[:, pos] = -1
    return [classes[pos] if row[pos] >= thr else classes[int(np.argmax(o))] for row, o in zip(probs, others)]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open('w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_reports(out: Path, result: dict, slices, probs, y, classes) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pos, thr = positive_index(classes), result['threshold']
    p_key = f'p_{classes[pos]}'
    predicted = _predicted_names(probs, thr, classes)
    _write_csv(out / 'predictions.csv', [
        {'path': s.path, 'patient': s.patient, 'label': classes[s.label], p_key: f'{p[pos]:.6f}', 'predicted': pred}
        for s, p, pred in zip(slices, probs, predicted)])
    ids, y_pat, p_pat = metrics.patient_level([s.patient for s in slices], y, probs[:, pos])
    label_of = {s.patient: classes[s.label] for s in slices}
    n_slices = dict(zip(*np.unique([s.patient for s in slices], return_counts=True)))
    negative = classes[1 - pos] if len(classes) == 2 else f'not {classes[pos]}'
    _write_csv(out / 'patients.csv', [
        {'patient': pid, 'label': label_of[pid], 'n_slices': int(n_slices[pid]), p_key: f'{p:.6f}',
         'predicted': classes[pos] if p >= thr else negative} for pid, p in zip(ids, p_pat)])
    with (out / 'metrics.json').open('w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)
    labels = [negative, classes[pos]]
    plots.plot_confusion_matrix(result['patient']['confusion_matrix'], labels, out / 'confusion_matrix.png',
                                title=f'patients (threshold {thr:.3g})')
    plots.plot_confusion_matrix(result['slice']['confusion_matrix'], labels, out / 'confusion_matrix_slices.png',
                                title=f'slices (threshold {thr:.3g})')
    if len(np.unique(y_pat)) == 2:
        plots.plot_roc(y_pat, p_pat, out / 'roc.png', title=f'{classes[pos]} vs {negative}, patients', threshold=thr)
    else:
        _logger.warning('roc.png not written: the %s split holds a single class', result['split'])
    _logger.info('wrote metrics.json, predictions.csv, patients.csv and figures to %s', out)


def default_output_dir(info: dict, name: str) -> Path:
    """``RUN/<name>`` when the model is a training run, else ``./<name>``."""
    run_dir = info.get('run_dir')
    return Path(run_dir) / name if run_dir is not None else Path(name)


def _fmt(value, ci=None) -> str:
    text = '-' if value is None else f'{value:.3f}'
    return f'{text} [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else text


def format_table(result: dict) -> str:
    """A compact console table: slice and patient columns, 95% CIs in brackets."""
    s, p = result['slice'], result['patient']
    width = max(24, len(str(s['confusion_matrix'])) + 2)  # confusion matrices of ADNI size run wide
    lines = [
        f"{result.get('model', '')} on {result.get('data_dir', '')}/{result.get('split', '')}: "
        f"{result.get('positive_class', 'AD')} positive, threshold {result['threshold']:.3f} "
        f"({result['threshold_source']})",
        f"{'':<18}{'slices (n=' + str(s['n']) + ')':<{width}}{'patients (n=' + str(p['n']) + ')':<{width}}",
    ]
    for key in metrics.CI_KEYS:
        lines.append(f'{key:<18}{_fmt(s[key], s.get(key + "_ci")):<{width}}{_fmt(p[key], p.get(key + "_ci")):<{width}}')
    lines.append(f"{'[[TN,FP],[FN,TP]]':<18}{str(s['confusion_matrix']):<{width}}{str(p['confusion_matrix']):<{width}}")
    if result.get('ci'):
        lines.append(f"[lo, hi]: 95% CI, bootstrap over patients ({result['ci']['n_boot']} resamples)")
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------- unlabelled images

def _unlabelled_slices(path) -> list[data.Slice]:
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(f for f in path.rglob('*') if f.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        raise EvaluationError(f'--images {path}: no such file or folder.')
    if not files:
        raise EvaluationError(f'--images {path}: no {"/".join(IMAGE_SUFFIXES)} images found.')
    out = []
    for f in files:
        # <patient>_<slice> names group into patients; any other name stands alone (label -1: unknown)
        patient, slice_index = data.parse_file_name(f) or (f.stem, None)
        out.append(data.Slice(path=str(f), patient=patient, label=-1, slice_index=slice_index))
    return out


def predict_images(model_ref, path, *, output_dir=None, batch_size: int = 64, num_workers: int = 0,
                   tta: bool = False, threshold: float | None = None, classes: Sequence[str] | None = None,
                   model: torch.nn.Module | None = None, info: dict | None = None) -> dict[str, Any]:
    """Predict unlabelled slices (one file or a folder, searched recursively): class and p_AD per slice.

    Files named ``<patient>_<slice>`` are also aggregated per patient (mean p_AD). Returns
    ``{'threshold', 'threshold_source', 'positive_class', 'slices': [rows], 'patients': [rows]}``; with
    ``output_dir`` writes ``predictions.csv`` (and ``patients.csv``).
    """
    if model is None:
        model, info = resolve_model(model_ref)
    info = info or _default_info(model_ref, model)
    classes = list(classes or info['classes'])
    _check_classes(model, classes)
    thr, source, _ = _choose_threshold(threshold=threshold, target_sensitivity=None, info=info, data_dir=None,
                                       split=None, classes=classes, eval_patients=[], predict_fn=None)
    slices = _unlabelled_slices(path)
    probs = predict(model, slices, batch_size=batch_size, num_workers=num_workers, tta=tta)
    pos = positive_index(classes)
    p_key = f'p_{classes[pos]}'
    slice_rows = [{'path': s.path, 'patient': s.patient if s.slice_index is not None else '', p_key: float(p[pos]),
                   'predicted': pred} for s, p, pred in zip(slices, probs, _predicted_names(probs, thr, classes))]
    with_ids = [i for i, s in enumerate(slices) if s.slice_index is not None]
    patient_rows = []
    if with_ids:
        pids = [slices[i].patient for i in with_ids]
        ids, counts = np.unique(pids, return_counts=True)
        _, _, p_pat = metrics.patient_level(pids, np.zeros(len(pids), dtype=int), probs[with_ids, pos])
        negative = classes[1 - pos] if len(classes) == 2 else f'not {classes[pos]}'
        patient_rows = [{'patient': str(pid), 'n_slices': int(n), p_key: float(p),
                         'predicted': classes[pos] if p >= thr else negative} for pid, n, p in zip(ids, counts, p_pat)]
    result = {'model': info['model'], 'threshold': thr, 'threshold_source': source, 'positive_class': classes[pos],
              'slices': slice_rows, 'patients': patient_rows}
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(out / 'predictions.csv', slice_rows)
        if patient_rows:
            _write_csv(out / 'patients.csv', patient_rows)
        _logger.info('wrote predictions to %s', out)
    return result


def format_predictions(result: dict, max_rows: int = 20) -> str:
    """Per-patient rows when file names carry patient ids, else per-slice rows; at most ``max_rows``."""
    rows, kind = (result['patients'], 'patient') if result['patients'] else (result['slices'], 'path')
    p_key = f"p_{result['positive_class']}"
    lines = [f"threshold {result['threshold']:.3f} ({result['threshold_source']})",
             f'{kind:<40}{p_key:>8}  predicted']
    lines += [f'{str(r[kind])[-40:]:<40}{r[p_key]:>8.3f}  {r["predicted"]}' for r in rows[:max_rows]]
    if len(rows) > max_rows:
        lines.append(f'... {len(rows) - max_rows} more')
    return '\n'.join(lines)
