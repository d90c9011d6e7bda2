"""Evaluate a trained model honestly: slice- and
patient-level metrics, bootstrap CIs, an untuned threshold.

    # a RUN folder, or local-dir:DIR, hf-hub:ORG/NAME, path/model.safetensors
    model, info = resolve_model('runs/tiny')
    result = evaluate('runs/tiny', 'AD_NC', split='test', output_dir='runs/tiny/eval')
    print(format_table(result))

Preprocessing is the model's own:
``timm.data.create_transform(**resolve_data_config(model=model))``, exactly what anyone who
downloads the weights gets. The positive class is ``AD``; with more classes (``NC,MCI,AD``) the
metrics are AD vs rest on ``p_AD``. Probabilities are calibrated with the temperature stored with
the model, and the decision threshold is never tuned on the evaluated split: ``threshold`` (CLI) >
``target_sensitivity`` met on validation patients > (with TTA: chosen again with TTA on the
validation patients) > the validation threshold stored with the model > 0.5. Inference runs in the
precision the model was trained in (``precision`` overrides).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from timm.data import resolve_data_config

from . import data, metrics, plots
from .cv import CV_JSON, OOF_CSV, read_oof_csv
from .display import fmt, fmt_ci
from .export import input_channels, resolve_model
from .files import read_json, write_json
from .inference import PRECISIONS, predict_loader
from .run_record import RECORD_NAME, RunRecord

__all__ = [
    'EvaluationError',
    'resolve_model',
    'load_models',
    'predict',
    'evaluate',
    'format_table',
    'predict_images',
    'format_predictions',
    'default_output_dir',
    'eval_dir_name',
    'recorded_precision',
]

_logger = logging.getLogger(__name__)

DATA_CHANNELS = 1  # data.SliceDataset reads every slice as 8-bit grayscale ('L')


class EvaluationError(ValueError):
    """Bad input to evaluation (threshold options,
    classes, precision); the message names the fix.
    """


# ---------------------------------------------------------------------------------------- the model


def _check_input_channels(model: torch.nn.Module) -> None:
    channels = {input_channels(model), resolve_data_config(model=model)['input_size'][0]}
    if channels != {DATA_CHANNELS}:
        raise EvaluationError(
            f'the model takes {max(channels)}-channel input but ADNI slices are '
            f'{DATA_CHANNELS}-channel grayscale; use a model created with in_chans=1 (every '
            f'adni_convnext_* model is), e.g. one trained by train.py.'
        )


def _recorded(info: dict) -> tuple[str | None, bool | None]:
    """(precision, file_is_patient) the model was trained with: its export, else its run record
    (read once, only when the export does not say)."""
    export = info.get('export', {})
    precision, file_is_patient = export.get('precision'), export.get('file_is_patient')
    run_dir = info.get('run_dir')
    if (precision is None or file_is_patient is None) and run_dir is not None:
        if (Path(run_dir) / RECORD_NAME).is_file():
            record = RunRecord.load(run_dir)
            precision = precision if precision is not None else record.mixed_precision
            if file_is_patient is None:
                file_is_patient = record.config.file_is_patient
    return precision, file_is_patient


def recorded_precision(info: dict) -> str:
    """The precision the model was trained in (export, else its run record); fp32 when unknown."""
    recorded, _ = _recorded(info)
    return recorded if recorded in PRECISIONS else 'no'


# ---------------------------------------------------------------------------------------- inference


def predict(
    model: torch.nn.Module,
    slices: Sequence[data.Slice],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    accelerator=None,
    tta: bool = False,
    precision: str = 'no',
) -> np.ndarray:
    """Softmax probabilities ``(len(slices), num_classes)``, in the order of ``slices``.

    Preprocessing is the model's own eval transform. With an ``accelerator`` the slices are sharded
    over its processes and gathered (each slice counted once); every process must call. Without one,
    this process alone predicts on its own device. ``tta`` averages the softmax of the image and its
    horizontal flip. ``precision`` ('no' = fp32, 'bf16', 'fp16', 'auto') applies on CUDA only.
    """
    if not slices:
        raise EvaluationError('predict: no slices to predict on.')
    net = accelerator.unwrap_model(model) if accelerator is not None else model
    _check_input_channels(net)
    device = accelerator.device if accelerator is not None else PartialState().device
    _, eval_tf = data.build_transforms(net)  # == create_transform(**resolve_data_config(model=net))
    loader = data.create_loader(
        data.SliceDataset(list(slices), transform=eval_tf),
        batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == 'cuda',
    )
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    net.to(device)
    if device.type == 'cuda':
        net.to(memory_format=torch.channels_last)
    probs, _ = predict_loader(
        net,
        loader,
        device=device,
        precision=precision,
        channels_last=True,
        tta=tta,
        accelerator=accelerator,
    )
    return probs


# ------------------------------------------------------------------------------------ the threshold


def _validation_slices(
    data_dir, classes, run_dir: Path | None, file_is_patient: bool, *, allow_fallback: bool = True
) -> tuple[list[data.Slice], str] | None:
    """Validation slices from ``DATA_DIR/train``: the run's
    ``split.json`` val patients, else a seed-0 split.
    """
    train = data.scan_split(data_dir, 'train', classes, file_is_patient=file_is_patient)
    split_file = run_dir / 'split.json' if run_dir is not None else None
    if split_file is not None and split_file.is_file():
        split = read_json(split_file)
        val = data.select(train, split, 'val')
        if split.get('level') != 'patient':
            _logger.warning(
                '%s splits by %s, not by patient: the validation slices share patients with the '
                'training slices, so the chosen threshold is optimistic.',
                split_file,
                split.get('level'),
            )
        if not val:
            raise EvaluationError(
                f'{split_file} lists no validation patients (the run trained without a '
                f'validation split), so none can set the threshold; pass --threshold X.'
            )
        return val, str(split_file)
    if not allow_fallback:
        return None
    split = data.split_patients(train, seed=0)
    _logger.warning(
        'no split.json with this model: choosing the threshold on a seed-0 '
        'patient split of %s/train. If the model was trained on those patients '
        'the threshold is optimistic (never on the test split, though).',
        data_dir,
    )
    return data.select(train, split, 'val'), 'seed-0 patient split of DATA_DIR/train'


def _choose_operating_point(
    *,
    threshold,
    target_sensitivity,
    tta,
    info,
    data_dir,
    split,
    classes,
    eval_patients,
    file_is_patient,
    predict_fn,
) -> dict[str, Any]:
    """``{'threshold', 'threshold_source', 'temperature',
    ...details}``: never chosen on the evaluated split.

    cli > target sensitivity on validation patients > with TTA, chosen again with TTA on the run's
    validation patients > stored (validation) > 0.5.
    """
    stored_t = info.get('temperature') or 1.0
    if threshold is not None and target_sensitivity is not None:
        raise EvaluationError('pass either --threshold or --target-sensitivity, not both.')
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise EvaluationError(f'--threshold must be a probability in [0, 1], got {threshold}.')
        return {'threshold': float(threshold), 'threshold_source': 'cli', 'temperature': stored_t}
    if target_sensitivity is not None:
        if not 0 < target_sensitivity <= 1:
            raise EvaluationError(
                f'--target-sensitivity must be in (0, 1], got {target_sensitivity}.'
            )
        if split == 'train':
            raise EvaluationError(
                '--target-sensitivity chooses the threshold on validation patients '
                'carved from the train split, so it cannot be used when evaluating '
                '--split train; pass --threshold X, or evaluate --split test.'
            )
    if target_sensitivity is not None and info.get('cv_run') is not None:
        return _out_of_fold_point(info, classes, target_sensitivity)
    if target_sensitivity is not None or (
        tta and split != 'train' and data_dir is not None and info.get('cv_run') is None
    ):
        found = _validation_slices(
            data_dir,
            classes,
            info.get('run_dir'),
            file_is_patient,
            allow_fallback=target_sensitivity is not None,
        )
        if found is not None:
            val, source = found
            leaked = set(eval_patients) & {s.patient for s in val}
            if leaked:
                raise EvaluationError(
                    f'{len(leaked)} validation patients (e.g. {sorted(leaked)[:3]}) are also in '
                    f'the evaluated split {split!r}; a threshold chosen on them would be tuned on '
                    f'the test data. Pass --threshold X.'
                )
            pos = data.positive_index(classes)
            labels = np.array([s.label for s in val])
            patients = [s.patient for s in val]
            point = metrics.operating_point(
                predict_fn(val),
                labels,
                patients,
                pos,
                target_sensitivity,
                temperature=None if tta else stored_t,
            )
            ids, y, p = metrics.patient_level(patients, (labels == pos).astype(int), point['p_pos'])
            achieved = metrics.binary_metrics(y, p, point['threshold'])
            details = {
                'chosen_on': source,
                'validation_patients': int(len(y)),
                'tta': tta,
                'validation_sensitivity': achieved['sensitivity'],
                'validation_specificity': achieved['specificity'],
            }
            if target_sensitivity is not None:
                details['target_sensitivity'] = float(target_sensitivity)
            return {
                'threshold': point['threshold'],
                'threshold_source': 'validation',
                'temperature': point['temperature'],
                'threshold_selection': details,
            }
        _logger.warning(
            '--tta: no validation split of this model is known, so the stored threshold (chosen '
            'without TTA) is used as it is'
        )
    note = {'threshold_note': 'chosen without TTA'} if tta else {}
    if info.get('threshold') is not None:
        return {
            'threshold': float(info['threshold']),
            'threshold_source': info.get('threshold_source') or 'validation',
            'temperature': stored_t,
            **note,
        }
    return {'threshold': 0.5, 'threshold_source': 'fixed', 'temperature': stored_t, **note}


def _out_of_fold_point(info: dict, classes, target_sensitivity: float) -> dict[str, Any]:
    """A CV ensemble's threshold for a target sensitivity,
    chosen on the run's out-of-fold predictions.
    """
    rows = read_oof_csv(Path(info['cv_run']) / OOF_CSV)
    pos = data.positive_index(classes)
    p = np.array([r['p_AD'] for r in rows])
    labels = np.array([int(r['label'] == pos) for r in rows])
    # the csv holds calibrated P(AD)
    point = metrics.operating_point(
        np.stack([1 - p, p], axis=1),
        labels,
        [r['patient'] for r in rows],
        1,
        target_sensitivity,
        temperature=1.0,
    )
    return {
        'threshold': point['threshold'],
        'threshold_source': 'out-of-fold',
        'temperature': info['temperature'],
        'threshold_selection': {
            'target_sensitivity': float(target_sensitivity),
            'chosen_on': str(Path(info['cv_run']) / OOF_CSV),
        },
    }


# ----------------------------------------------------------------------------------------- evaluate


def _default_info(model_ref, model: torch.nn.Module) -> dict[str, Any]:
    return {
        'model': str(model_ref),
        'threshold': None,
        'threshold_source': None,
        'temperature': 1.0,
        'run_dir': None,
        'export': {},
        'classes': list(model.pretrained_cfg.get('label_names') or data.LABEL_NAMES),
    }


def _check_classes(model: torch.nn.Module, classes: Sequence[str]) -> None:
    if model.num_classes != len(classes):
        raise EvaluationError(
            f'the model has {model.num_classes} outputs but the classes are '
            f'{",".join(classes)} ({len(classes)}); pass --classes with the '
            f'{model.num_classes} classes it was trained on, in training order.'
        )


def load_models(model_ref) -> tuple[list[tuple[torch.nn.Module, dict]], dict[str, Any]]:
    """(members, info): one model; the fold ensemble of a
    cross-validation run; or several exports' ensemble.

    A CV run (``RUN/cv.json``) gives its K fold models with the out-of-fold threshold and
    temperature; other ensembles have no stored operating point (0.5, T = 1) unless chosen with
    ``--threshold`` or ``--target-sensitivity``. Members must share classes and input size.
    """
    refs = [model_ref] if isinstance(model_ref, (str, os.PathLike)) else list(model_ref)
    if len(refs) == 1 and (Path(str(refs[0])) / CV_JSON).is_file():
        run_dir = Path(str(refs[0]))
        cv = read_json(run_dir / CV_JSON)
        members = [resolve_model(run_dir / f'fold{k}') for k in range(cv['k'])]
        info = {
            'model': str(run_dir),
            'threshold': float(cv['threshold']),
            'threshold_source': 'out-of-fold',
            'temperature': float(cv.get('temperature') or 1.0),
            'run_dir': None,
            'cv_run': run_dir,
            'classes': list(cv.get('classes') or members[0][1]['classes']),
        }
    elif len(refs) == 1:
        model, info = resolve_model(refs[0])
        return [(model, info)], info
    else:
        members = [resolve_model(ref) for ref in refs]
        info = {
            'model': ' + '.join(map(str, refs)),
            'threshold': None,
            'threshold_source': None,
            'temperature': 1.0,
            'run_dir': None,
            'classes': members[0][1]['classes'],
        }
    sizes = {tuple(m.pretrained_cfg['input_size']) for m, _ in members}
    class_lists = {tuple(i['classes']) for _, i in members}
    if len(sizes) > 1 or len(class_lists) > 1:
        raise EvaluationError(
            f'the models of an ensemble must share classes and input size; got classes '
            f'{sorted(class_lists)} and input sizes {sorted(sizes)}'
        )
    info.update(
        export={},
        weights_sha256=[i['weights_sha256'] for _, i in members],
        members=[i['model'] for _, i in members],
    )
    return members, info


def evaluate(
    model_ref,
    data_dir,
    *,
    split: str = 'test',
    output_dir=None,
    threshold: float | None = None,
    target_sensitivity: float | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    tta: bool = False,
    n_boot: int = 1000,
    classes: Sequence[str] | None = None,
    model: torch.nn.Module | None = None,
    info: dict | None = None,
    accelerator=None,
    precision: str | None = None,
    skip_bad_images: bool = False,
    file_is_patient: bool | None = None,
    slices: Sequence[data.Slice] | None = None,
    members: list | None = None,
    cam: int = 0,
    cam_method: str = 'occlusion',
    cam_layer: str | None = None,
    cam_region_masks=None,
) -> dict[str, Any]:
    """Slice- and patient-level metrics of a model on
    ``DATA_DIR/<split>``: the ``metrics.json`` dict.

    ``model_ref`` is one model reference, a CV run (its fold ensemble) or a list of references
    (their ensemble: the mean of their probabilities; ``members`` then lists each one's own
    metrics). ``model``/``info`` (or ``members``/``info`` from ``load_models``) skip loading
    ``model_ref``. ``cam`` > 0 writes Grad-CAM montages of the ``cam`` most confident patients of
    each outcome and the population maps under ``OUTPUT_DIR/cam/`` (one model only; ``cam_method``,
    ``cam_layer`` and ``cam_region_masks`` as ``cam.write_cam_report``'s method, layer and
    region_masks: with masks, metrics.json's ``cam.region_score``). ``slices``
    skips scanning and checking the split (training passes the test slices it checked at start-up).
    ``precision`` defaults to the model's training precision; ``file_is_patient`` to the run's
    setting. With ``output_dir``, writes metrics.json, predictions.csv, patients.csv, confusion
    matrices, roc.png and reliability.png. CIs: percentile bootstrap over patients (``n_boot``
    resamples, 0 for none). With an ``accelerator`` every process must call (inference is sharded,
    each slice counted once) and only the main process writes.
    """
    if model is not None:
        members = [(model, info or _default_info(model_ref, model))]
        info = members[0][1]
    elif members is None:
        members, info = load_models(model_ref)
    classes = list(classes or info['classes'])
    for member, _ in members:
        _check_classes(member, classes)
        _check_input_channels(member)
    if precision is not None and precision not in PRECISIONS:
        raise EvaluationError(f'--precision {precision!r}: choose one of {list(PRECISIONS)}')
    recorded = [_recorded(i) for _, i in members]
    precisions = [precision or (p if p in PRECISIONS else 'no') for p, _ in recorded]
    if file_is_patient is None:
        file_is_patient = any(bool(f) for _, f in recorded)
    if slices is None:
        slices = data.scan_split(data_dir, split, classes, file_is_patient=file_is_patient)
        slices = data.resolve_bad_images(
            slices, skip_bad=skip_bad_images, num_workers=num_workers, what=split
        )
    slices = list(slices)
    pos = data.positive_index(classes)

    def member_probs(items):
        return [
            predict(
                m,
                items,
                batch_size=batch_size,
                num_workers=num_workers,
                accelerator=accelerator,
                tta=tta,
                precision=prec,
            )
            for (m, _), prec in zip(members, precisions)
        ]

    def predict_fn(items):  # an ensemble's P is the mean of its members' (before calibration)
        return np.mean(member_probs(items), axis=0)

    patients = [s.patient for s in slices]
    point = _choose_operating_point(
        threshold=threshold,
        target_sensitivity=target_sensitivity,
        tta=tta,
        info=info,
        data_dir=data_dir,
        split=split,
        classes=classes,
        eval_patients=patients,
        file_is_patient=file_is_patient,
        predict_fn=predict_fn,
    )
    each = member_probs(slices)
    raw = np.mean(each, axis=0)
    probs = metrics.apply_temperature(raw, point['temperature'])
    y = data.binary_labels(slices, classes)
    p_pos, thr = probs[:, pos], point.pop('threshold')
    result = metrics.slice_and_patient_metrics(patients, y, p_pos, thr)
    if n_boot:
        for level, cis in metrics.bootstrap_ci(patients, y, p_pos, thr, n_boot=n_boot).items():
            result[level].update({f'{k}_ci': v for k, v in cis.items()})
    result.update(
        {
            'threshold': thr,
            **point,
            'calibration': _calibration(patients, y, raw[:, pos], p_pos, point['temperature']),
            'model': info['model'],
            'data_dir': str(data_dir),
            'split': split,
            'classes': classes,
            'positive_class': classes[pos],
            'tta': tta,
            'precision': precisions[0] if len(set(precisions)) == 1 else precisions,
            'file_is_patient': file_is_patient,
            'weights_sha256': info.get('weights_sha256'),
            'epoch': info.get('export', {}).get('epoch'),
            'ci': {
                'method': 'percentile bootstrap, patients resampled within class',
                'n_boot': n_boot,
                'level': 0.95,
                'seed': 0,
            }
            if n_boot
            else None,
        }
    )
    if len(members) > 1:
        result['members'] = _member_metrics(members, each, patients, y, pos)
    if output_dir is not None and (accelerator is None or accelerator.is_main_process):
        context = _figure_context(result, slices)
        _write_reports(Path(output_dir), result, slices, probs, raw[:, pos], y, classes, context)
        if cam:
            result['cam'] = _write_cam(
                members,
                slices,
                p_pos,
                thr,
                classes,
                Path(output_dir),
                cam,
                labelled=True,
                method=cam_method,
                layer=cam_layer,
                region_masks=cam_region_masks,
                context=context,
            )
            write_json(Path(output_dir) / 'metrics.json', result)
    return result


def _figure_context(result: dict, slices) -> plots.FigureContext:
    """Model, split and SYNTHETIC (the images carry the generator's marker) for every figure."""
    from .synthetic import is_synthetic_image

    synthetic = bool(slices) and is_synthetic_image(slices[0].path)
    return plots.FigureContext(str(result.get('model')), result.get('split'), synthetic)


def _write_cam(
    members,
    slices,
    p_pos,
    threshold,
    classes,
    out_dir: Path,
    n: int,
    labelled: bool,
    method: str = 'occlusion',
    layer: str | None = None,
    region_masks=None,
    context=None,
) -> dict:
    """Evidence-map montages and population maps of one model (``adni_timm.cam``; captum)."""
    if len(members) != 1:
        raise EvaluationError(
            '--cam explains one model, not an ensemble: pass a single --model '
            '(e.g. RUN/final or RUN/fold0)'
        )
    from . import cam

    model, _ = members[0]
    _, eval_tf = data.build_transforms(model)
    report = cam.write_cam_report(
        model,
        slices,
        p_pos,
        threshold,
        classes,
        out_dir,
        n,
        transform=eval_tf,
        device=PartialState().device,
        labelled=labelled,
        method=method,
        layer=layer,
        region_masks=region_masks,
        context=context,
    )
    _logger.info(
        'Grad-CAM (%s of %s): %d montages and %s in %.1f s under %s',
        report.get('target'),
        report.get('layer'),
        len(report.get('montages', [])),
        'population maps' if labelled else 'no population maps',
        report.get('seconds', 0),
        out_dir / 'cam',
    )
    return json.loads(json.dumps(report, default=str))


def _member_metrics(members, each, patients, y, pos) -> list[dict[str, Any]]:
    """Each member's own test metrics, at its own stored operating point, beside the ensemble's."""
    out = []
    for (_, info), raw in zip(members, each):
        thr = info['threshold'] if info['threshold'] is not None else 0.5
        p_pos = metrics.apply_temperature(raw, info['temperature'])[:, pos]
        out.append(
            {
                'model': info['model'],
                'threshold': thr,
                'temperature': info['temperature'],
                **metrics.slice_and_patient_metrics(patients, y, p_pos, thr),
            }
        )
    return out


def _calibration(patients, y, p_raw, p_cal, temperature: float) -> dict[str, Any]:
    """ECE of the evaluated split with the stored
    temperature, and without it (T = 1) for comparison.
    """
    after = metrics.calibration_report(patients, y, p_cal)
    before = metrics.calibration_report(patients, y, p_raw)
    return {
        'temperature': float(temperature),
        **after,
        'ece_slice_uncalibrated': before['ece_slice'],
        'ece_patient_uncalibrated': before['ece_patient'],
    }


def _predicted_names(probs: np.ndarray, thr: float, classes: Sequence[str]) -> list[str]:
    """AD when p_AD >= thr, else the most probable other class (NC for two classes)."""
    pos = data.positive_index(classes)
    others = probs.copy()
    others[:, pos] = -1
    return [
        classes[pos] if row[pos] >= thr else classes[int(np.argmax(o))]
        for row, o in zip(probs, others)
    ]


def _negative_name(classes: Sequence[str]) -> str:
    pos = data.positive_index(classes)
    return classes[1 - pos] if len(classes) == 2 else f'not {classes[pos]}'


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open('w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_reports(out: Path, result: dict, slices, probs, p_raw, y, classes, context) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pos, thr = data.positive_index(classes), result['threshold']
    p_key = f'p_{classes[pos]}'
    predicted = _predicted_names(probs, thr, classes)
    _write_csv(
        out / 'predictions.csv',
        [
            {
                'path': s.path,
                'patient': s.patient,
                'label': classes[s.label],
                p_key: f'{p[pos]:.6f}',
                'predicted': pred,
            }
            for s, p, pred in zip(slices, probs, predicted)
        ],
    )
    patients = [s.patient for s in slices]
    ids, y_pat, p_pat = metrics.patient_level(patients, y, probs[:, pos])
    label_of = {s.patient: classes[s.label] for s in slices}
    n_slices = dict(zip(*np.unique(patients, return_counts=True)))
    negative = _negative_name(classes)
    _write_csv(
        out / 'patients.csv',
        [
            {
                'patient': pid,
                'label': label_of[pid],
                'n_slices': int(n_slices[pid]),
                p_key: f'{p:.6f}',
                'predicted': classes[pos] if p >= thr else negative,
            }
            for pid, p in zip(ids, p_pat)
        ],
    )
    write_json(out / 'metrics.json', result)
    labels = [negative, classes[pos]]
    plots.plot_confusion_matrix(
        result['patient']['confusion_matrix'],
        labels,
        out / 'confusion_matrix.png',
        title=f'patients (threshold {thr:.3g})',
        context=context,
        unit='patients',
    )
    plots.plot_confusion_matrix(
        result['slice']['confusion_matrix'],
        labels,
        out / 'confusion_matrix_slices.png',
        title=f'slices (threshold {thr:.3g})',
        context=context,
        unit='slices',
    )
    if len(np.unique(y_pat)) == 2:
        plots.plot_roc(
            y_pat,
            p_pat,
            out / 'roc.png',
            title=f'{classes[pos]} vs {negative}, patients',
            threshold=thr,
            context=context,
            unit='patients',
        )
    else:
        _logger.warning('roc.png not written: the %s split holds a single class', result['split'])
    _, _, p_pat_raw = metrics.patient_level(patients, y, p_raw)
    calibrated = result['calibration']['temperature'] != 1
    plots.plot_reliability(
        y,
        p_raw,
        y_pat,
        p_pat_raw,
        out / 'reliability.png',
        title=f'calibration, temperature {result["calibration"]["temperature"]:.3g}',
        p_slice_calibrated=probs[:, pos] if calibrated else None,
        p_patient_calibrated=p_pat if calibrated else None,
        context=context,
    )
    _logger.info('wrote metrics.json, predictions.csv, patients.csv and figures to %s', out)


def eval_dir_name(split: str) -> str:
    """``eval`` for the test split (what train.py --eval-test
    writes and push_to_hub.py reads), else eval-<split>.
    """
    return 'eval' if split == 'test' else f'eval-{split}'


def default_output_dir(info: dict, name: str) -> Path:
    """``RUN/<name>`` when the model is a training run (``RUN/<name>-final`` style for a refit's
    ``RUN/final``: ``eval-final``), else ``./<name>``."""
    base = info.get('run_dir') or info.get('cv_run')
    if info.get('export_dir') and Path(info['export_dir']).name == 'final':
        name = name.replace('eval', 'eval-final', 1) if name.startswith('eval') else f'{name}-final'
    return Path(base) / name if base is not None else Path(name)


def format_table(result: dict) -> str:
    """A compact console table: slice and patient columns, 95% CIs in brackets."""
    s, p = result['slice'], result['patient']
    width = max(24, len(str(s['confusion_matrix'])) + 2)  # confusion matrices of ADNI size run wide
    lines = [
        f'{result.get("model", "")} on {result.get("data_dir", "")}/{result.get("split", "")}: '
        f'{result.get("positive_class", "AD")} positive, threshold {fmt(result["threshold"])} '
        f'({result["threshold_source"]})',
        f'{"":<18}{"slices (n=" + str(s["n"]) + ")":<{width}}'
        f'{"patients (n=" + str(p["n"]) + ")":<{width}}',
    ]
    for key in metrics.CI_KEYS:
        lines.append(
            f'{key:<18}{fmt_ci(s[key], s.get(key + "_ci")):<{width}}'
            f'{fmt_ci(p[key], p.get(key + "_ci")):<{width}}'
        )
    lines.append(
        f'{"[[TN,FP],[FN,TP]]":<18}{str(s["confusion_matrix"]):<{width}}'
        f'{str(p["confusion_matrix"]):<{width}}'
    )
    cal = result.get('calibration')
    if cal:
        lines.append(
            f'{"ECE":<18}{fmt(cal["ece_slice"]):<{width}}{fmt(cal["ece_patient"]):<{width}}'
            f'(temperature {fmt(cal["temperature"])}; '
            f'uncalibrated {fmt(cal["ece_slice_uncalibrated"])} / '
            f'{fmt(cal["ece_patient_uncalibrated"])})'
        )
    if result.get('ci'):
        lines.append(
            f'[lo, hi]: 95% CI, bootstrap over patients ({result["ci"]["n_boot"]} resamples)'
        )
    if result.get('members'):
        lines.append(
            f'the ensemble of {len(result["members"])}: P(AD) = mean '
            f"of the members'; each member alone, at its own threshold:"
        )
        for m in result['members']:
            pat = m['patient']
            lines.append(
                f'  {str(m["model"])[-40:]:<40} patient acc {fmt(pat["accuracy"])}  AUC '
                f'{fmt(pat["auc"])}  sens {fmt(pat["sensitivity"])}  spec {fmt(pat["specificity"])}'
            )
    return '\n'.join(lines)


# -------------------------------------------------------------------------------- unlabelled images


def _unlabelled_slices(path) -> list[data.Slice]:
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(f for f in path.rglob('*') if f.suffix.lower() in data.IMAGE_EXTENSIONS)
    elif path.is_file():
        files = [path]
    else:
        raise EvaluationError(f'--images {path}: no such file or folder.')
    if not files:
        raise EvaluationError(
            f'--images {path}: no {"/".join(data.IMAGE_EXTENSIONS)} images found.'
        )
    out = []
    for f in files:
        # <patient>_<slice> names group into patients;
        # any other name stands alone (label -1: unknown)
        patient, slice_index = data.parse_file_name(f) or (f.stem, None)
        out.append(data.Slice(path=str(f), patient=patient, label=-1, slice_index=slice_index))
    return out


def predict_images(
    model_ref,
    path,
    *,
    output_dir=None,
    batch_size: int = 64,
    num_workers: int = 0,
    tta: bool = False,
    threshold: float | None = None,
    classes: Sequence[str] | None = None,
    model: torch.nn.Module | None = None,
    info: dict | None = None,
    precision: str | None = None,
    cam: int = 0,
    cam_method: str = 'occlusion',
    cam_layer: str | None = None,
) -> dict[str, Any]:
    """Predict unlabelled slices (one file or a folder,
    searched recursively): class and p_AD per slice.

    Files named ``<patient>_<slice>`` are also aggregated per patient (mean p_AD). Returns
    ``{'threshold', 'threshold_source', 'positive_class', 'slices': [rows], 'patients': [rows]}``;
    with ``output_dir`` writes ``predictions.csv`` (and ``patients.csv``).
    """
    if model is None:
        model, info = resolve_model(model_ref)
    info = info or _default_info(model_ref, model)
    classes = list(classes or info['classes'])
    _check_classes(model, classes)
    point = _choose_operating_point(
        threshold=threshold,
        target_sensitivity=None,
        tta=False,
        info=info,
        data_dir=None,
        split=None,
        classes=classes,
        eval_patients=[],
        file_is_patient=False,
        predict_fn=None,
    )
    thr = point['threshold']
    slices = _unlabelled_slices(path)
    raw = predict(
        model,
        slices,
        batch_size=batch_size,
        num_workers=num_workers,
        tta=tta,
        precision=precision or recorded_precision(info),
    )
    probs = metrics.apply_temperature(raw, point['temperature'])
    pos = data.positive_index(classes)
    p_key = f'p_{classes[pos]}'
    slice_rows = [
        {
            'path': s.path,
            'patient': s.patient if s.slice_index is not None else '',
            p_key: float(p[pos]),
            'predicted': pred,
        }
        for s, p, pred in zip(slices, probs, _predicted_names(probs, thr, classes))
    ]
    with_ids = [i for i, s in enumerate(slices) if s.slice_index is not None]
    patient_rows = []
    if with_ids:
        pids = [slices[i].patient for i in with_ids]
        ids, counts = np.unique(pids, return_counts=True)
        _, _, p_pat = metrics.patient_level(
            pids, np.zeros(len(pids), dtype=int), probs[with_ids, pos]
        )
        negative = _negative_name(classes)
        patient_rows = [
            {
                'patient': str(pid),
                'n_slices': int(n),
                p_key: float(p),
                'predicted': classes[pos] if p >= thr else negative,
            }
            for pid, n, p in zip(ids, counts, p_pat)
        ]
    result = {
        'model': info['model'],
        'threshold': thr,
        'threshold_source': point['threshold_source'],
        'temperature': point['temperature'],
        'positive_class': classes[pos],
        'slices': slice_rows,
        'patients': patient_rows,
    }
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(out / 'predictions.csv', slice_rows)
        if patient_rows:
            _write_csv(out / 'patients.csv', patient_rows)
        _logger.info('wrote predictions to %s', out)
        if cam:
            result['cam'] = _write_cam(
                [(model, info)],
                slices,
                probs[:, pos],
                thr,
                classes,
                out,
                cam,
                labelled=False,
                method=cam_method,
                layer=cam_layer,
                context=plots.FigureContext(str(info['model']), 'unlabelled'),
            )
    return result


def format_predictions(result: dict, max_rows: int = 20) -> str:
    """Per-patient rows when file names carry patient
    ids, else per-slice rows; at most ``max_rows``.
    """
    rows, kind = (
        (result['patients'], 'patient') if result['patients'] else (result['slices'], 'path')
    )
    p_key = f'p_{result["positive_class"]}'
    lines = [
        f'threshold {fmt(result["threshold"])} ({result["threshold_source"]})',
        f'{kind:<40}{p_key:>8}  predicted',
    ]
    lines += [
        f'{str(r[kind])[-40:]:<40}{r[p_key]:>8.3f}  {r["predicted"]}' for r in rows[:max_rows]
    ]
    if len(rows) > max_rows:
        lines.append(f'... {len(rows) - max_rows} more')
    return '\n'.join(lines)
