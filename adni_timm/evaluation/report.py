"""Evaluate a model honestly: slice- and scan-level metrics with CIs, at a threshold never tuned
on the evaluated split; reports (unlabelled images: ``predict``).

    model = load_model('runs/tiny')        # adni_timm.inference: RUN, local-dir:, hf-hub:, a CV run
    result = evaluate(model, 'AD_NC', split='test', output_dir='runs/tiny/eval')
    print(format_table(result))

Preprocessing is the model's own (``timm.data.create_transform(**resolve_data_config(model=m))``).
The positive class is ``AD``; with more classes (``NC,MCI,AD``) the metrics are AD vs rest. The
operating point (``choose_point``): ``threshold`` (CLI) > ``target_sensitivity`` met on the model's
validation scans (a cross-validation ensemble: on its out-of-fold predictions) > with TTA, chosen
again with TTA on the validation scans > the stored point > 0.5. Inference runs in the precision
the model was trained in (``precision`` overrides).

An evaluation at the stored operating point of the published model, on test, is the one that
belongs in ``RUN/eval``; anything else gets a tag (``evaluation_tag``) and its own folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cv import summary as cv
from .. import data, metrics, plots
from ..utils.display import fmt, fmt_ci
from ..utils.files import write_csv, write_json
from ..inference import (
    PRECISIONS,
    LoadedModel,
    OperatingPoint,
    calibrated_mean,
    load_model,
    negative_name,
    scan_rows,
    slice_decisions,
)
from ..run import EvalFolder, Run, RunRecord, plain_precision
from ..data.shortcut import evaluation_shortcut, shortcut_summary
from ..data.splits import select, split_scans
from ..data.subjects import SubjectMap, find_subject_map
from .options import CamOptions, EvaluationOptions

_logger = logging.getLogger(__name__)

CI_METHOD = (
    'percentile bootstrap, scans resampled within class; Clopper-Pearson over scans for a '
    'proportion whose every resample agreed'
)


class EvaluationError(ValueError):
    """Bad input to evaluation (threshold options, classes, precision); the message names it."""


# ------------------------------------------------------------------------------ the threshold


def _validation_slices(
    model: LoadedModel, data_dir, classes, file_is_scan: bool, *, allow_fallback: bool
) -> tuple[list[data.Slice], str] | None:
    """Validation slices from ``DATA_DIR/train``: the run's ``split.json`` val scans, else (when
    allowed) a seed-0 scan split."""
    train = data.scan_split(data_dir, 'train', classes, file_is_scan=file_is_scan)
    run = model.run
    if run is not None and run.split_file.is_file():
        split = run.read_split()
        if split.get('test_from') == 'resplit':  # its train and val came from train/ and test/
            train = _pooled(data_dir, classes, file_is_scan)
        if split.get('level') != 'scan':
            _logger.warning(
                '%s splits by %s, not by scan: the validation slices share scans with the '
                'training slices, so the chosen threshold is optimistic.',
                run.split_file,
                split.get('level'),
            )
        val = select(train, split, 'val')
        if not val:
            raise EvaluationError(
                f'{run.split_file} lists no validation scans (the run trained without a '
                f'validation split), so none can set the threshold; pass --threshold X.'
            )
        return val, str(run.split_file)
    if not allow_fallback:
        return None
    _logger.warning(
        'no split.json with this model: choosing the threshold on a seed-0 scan split of '
        '%s/train. If the model was trained on those scans the threshold is optimistic (never '
        'on the test split, though).',
        data_dir,
    )
    return select(train, split_scans(train, seed=0), 'val'), 'seed-0 scan split of DATA_DIR/train'


def _pooled(data_dir, classes, file_is_scan: bool) -> list[data.Slice]:
    """The slices of DATA_DIR/train and DATA_DIR/test together (a subject re-split's pool)."""
    found = data.scan_split(data_dir, 'train', classes, file_is_scan=file_is_scan)
    if (Path(data_dir) / 'test').is_dir():
        found += data.scan_split(data_dir, 'test', classes, file_is_scan=file_is_scan)
    return found


def _run_split(model: LoadedModel) -> dict[str, Any] | None:
    """The model's recorded split; a cross-validation run's is its first fold's (every fold
    records the same test set)."""
    run = model.run
    if run is None:
        return None
    for candidate in (run, run.fold(0)):
        if candidate.split_file.is_file():
            return candidate.read_split()
    return None


def _split_slices(model: LoadedModel, data_dir, split: str, classes, file_is_scan: bool):
    """The slices of ``split``: the folder ``DATA_DIR/<split>``, except the test set of a run
    that re-split test by subject (``--resplit-test``): exactly its recorded test scans."""
    recorded = _run_split(model) or {}
    if split == 'test' and recorded.get('test_from') == 'resplit':
        wanted = {'level': 'scan', 'test': recorded.get('test', [])}
        _logger.info(
            "the test set is the run's subject re-split (split.json: %d scans), not %s/test",
            len(wanted['test']),
            data_dir,
        )
        return select(_pooled(data_dir, classes, file_is_scan), wanted, 'test')
    return data.scan_split(data_dir, split, classes, file_is_scan=file_is_scan)


def _subject_map(model: LoadedModel, data_dir, subjects) -> SubjectMap | None:
    """``subjects`` (a file or a SubjectMap), else the run's recorded ``--subjects`` file, else
    the data folder's manifest.csv; None when subjects are unknown."""
    if isinstance(subjects, SubjectMap):
        return subjects
    if subjects is None and model.run is not None and model.run.record_file.is_file():
        recorded = RunRecord.load(model.run.path).config.subjects
        if recorded and Path(recorded).is_file():
            subjects = recorded
    return find_subject_map(data_dir, subjects)


def choose_point(
    model: LoadedModel,
    *,
    threshold: float | None = None,
    target_sensitivity: float | None = None,
    tta: bool = False,
    data_dir=None,
    split: str | None = 'test',
    classes: Sequence[str] | None = None,
    eval_scans: Sequence[str] = (),
    file_is_scan: bool = False,
    predict_raw=None,
) -> OperatingPoint:
    """The operating point of this evaluation: never chosen on the evaluated split.

    ``predict_raw(slices) -> [member probs]`` predicts validation slices (with TTA when ``tta``).
    """
    stored = model.point
    classes = list(classes or model.classes)
    if threshold is not None and target_sensitivity is not None:
        raise EvaluationError('pass either --threshold or --target-sensitivity, not both.')
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise EvaluationError(f'--threshold must be a probability in [0, 1], got {threshold}.')
        return OperatingPoint(float(threshold), 'cli', stored.temperatures, rule='set by hand')
    if target_sensitivity is not None:
        if not 0 < target_sensitivity <= 1:
            raise EvaluationError(
                f'--target-sensitivity must be in (0, 1], got {target_sensitivity}.'
            )
        if split == 'train':
            raise EvaluationError(
                '--target-sensitivity chooses the threshold on validation scans carved from '
                'the train split, so it cannot be used when evaluating --split train; pass '
                '--threshold X, or evaluate --split test.'
            )
        if model.cv_run is not None:
            return _out_of_fold_point(model, target_sensitivity)
    retune_tta = tta and split != 'train' and data_dir is not None and model.cv_run is None
    if target_sensitivity is None and not retune_tta:
        if tta:
            return replace(stored, note='chosen without TTA')
        return stored
    found = _validation_slices(
        model, data_dir, classes, file_is_scan, allow_fallback=target_sensitivity is not None
    )
    if found is None:
        _logger.warning(
            '--tta: no validation split of this model is known, so the stored threshold (chosen '
            'without TTA) is used as it is'
        )
        return replace(stored, note='chosen without TTA')
    val, source = found
    leaked = set(eval_scans) & {s.scan for s in val}
    if leaked:
        raise EvaluationError(
            f'{len(leaked)} validation scans (e.g. {sorted(leaked)[:3]}) are also in the '
            f'evaluated split {split!r}; a threshold chosen on them would be tuned on the test '
            f'data. Pass --threshold X.'
        )
    pos = data.positive_index(classes)
    labels = np.array([s.label for s in val])
    scans = [s.scan for s in val]
    member_probs = predict_raw(val)
    if len(member_probs) == 1:  # one model: with TTA its temperature is fitted again as well
        found_point = metrics.operating_point(
            member_probs[0],
            labels,
            scans,
            pos,
            target_sensitivity,
            temperature=None if tta else stored.temperatures[0],
        )
        temperatures = (found_point['temperature'],)
    else:  # an ensemble keeps its members' temperatures; the threshold is chosen on their mean
        found_point = metrics.operating_point(
            calibrated_mean(member_probs, stored), labels, scans, pos, target_sensitivity, 1.0
        )
        temperatures = stored.temperatures
    _, y, p = metrics.scan_level(scans, (labels == pos).astype(int), found_point['p_pos'])
    achieved = metrics.binary_metrics_quiet(y, p, found_point['threshold'])
    selection = {
        'chosen_on': source,
        'validation_scans': int(len(y)),
        'tta': tta,
        'validation_sensitivity': achieved['sensitivity'],
        'validation_specificity': achieved['specificity'],
    }
    if target_sensitivity is not None:
        selection['target_sensitivity'] = float(target_sensitivity)
    return OperatingPoint(
        threshold=found_point['threshold'],
        source='validation',
        temperatures=temperatures,
        rule=found_point['threshold_rule'],
        selection=selection,
    )


def _out_of_fold_point(model: LoadedModel, target_sensitivity: float) -> OperatingPoint:
    """A cross-validation model's threshold for a target sensitivity, on the out-of-fold rows."""
    rows = cv.read_oof_csv(model.cv_run.oof_file)
    pos = data.positive_index(model.classes)
    p = np.array([r['p_AD'] for r in rows])  # calibrated by each fold model's own temperature
    y = np.array([int(r['label'] == pos) for r in rows])
    _, y_pat, p_pat = metrics.scan_level([r['scan'] for r in rows], y, p)
    return OperatingPoint(
        threshold=metrics.threshold_for_sensitivity(y_pat, p_pat, target_sensitivity),
        source='out-of-fold',
        temperatures=model.point.temperatures,
        rule=f'sensitivity >= {target_sensitivity}',
        selection={
            'target_sensitivity': float(target_sensitivity),
            'chosen_on': str(model.cv_run.oof_file),
        },
    )


# ------------------------------------------------------------------------ where it belongs


def evaluation_tag(
    model: LoadedModel,
    *,
    split: str = 'test',
    threshold: float | None = None,
    target_sensitivity: float | None = None,
    options: EvaluationOptions | None = None,
) -> str | None:
    """None for the evaluation of the stored operating point on test (``RUN/eval``); otherwise the
    tag of its own folder (``RUN/eval-<tag>``): the split, the threshold or the sensitivity asked
    for, ``tta``, a precision other than the trained one."""
    opt = options or EvaluationOptions()
    tta, precision, backend = opt.tta, opt.precision, opt.backend
    parts = [] if split == 'test' else [split]
    if threshold is not None:
        parts.append(f'threshold-{threshold:g}')
    if target_sensitivity is not None:
        parts.append(f'sensitivity-{target_sensitivity:g}')
    if tta:
        parts.append('tta')
    if precision is not None and plain_precision(precision) != plain_precision(model.precision):
        parts.append(plain_precision(precision))
    if backend != 'torch':
        parts.append(backend)
    return '-'.join(parts) or None


def default_output_dir(model: LoadedModel, tag: str | None, images: bool = False) -> Path:
    """Where an evaluation goes by default: the run's ``eval[-<tag>]`` (``eval-final`` for a
    refit), else ``./eval[-<tag>]``; for unlabelled images (``images``) ``predict[-<tag>]``."""
    if images:
        run = model.run or model.cv_run
        name = Run.PREDICT if tag is None else f'{Run.PREDICT}-{tag}'
        return (run.path / name) if run is not None else Path(name)
    if model.cv_run is not None:
        return model.cv_run.eval_dir(tag, final=not model.is_ensemble).path
    if model.run is not None:
        return model.run.eval_dir(tag).path
    return Path(Run.EVAL if tag is None else f'{Run.EVAL}-{tag}')


def check_output_dir(model: LoadedModel, output_dir: Path, tag: str | None) -> None:
    """A non-default evaluation never lands in the folder of the published one (``RUN/eval``)."""
    run = model.cv_run or model.run
    if tag is None or run is None:
        return
    published = run.eval_dir(final=model.cv_run is not None and not model.is_ensemble).path
    if Path(output_dir).resolve() == published.resolve():
        raise EvaluationError(
            f'{published} holds the evaluation of the published model at its stored operating '
            f'point; this one ({tag}) goes to {default_output_dir(model, tag)} (leave out '
            f'--output-dir, or choose another folder)'
        )


# ------------------------------------------------------------------------------------ evaluate


def recorded_classes(model: LoadedModel) -> list[str] | None:
    """The classes the model records (its export's ``classes``, else timm's ``label_names``), in
    training order; None when it records none (a foreign export: ``--classes`` says them)."""
    for member in model.members:
        named = member.settings.classes or member.net.pretrained_cfg.get('label_names')
        if named:
            return list(named)
    return None


def resolve_classes(model: LoadedModel, classes: Sequence[str] | None) -> list[str]:
    """The classes to evaluate with: the model's, or ``classes`` when given and the model records
    none or the same ones. Classes that contradict the recorded ones raise EvaluationError: in
    another order they swap the labels (an AUC of 0.42 reads 0.58)."""
    if classes is None:
        classes = list(model.classes)
        _check_classes(model, classes)
        return classes
    classes = list(classes)
    _check_classes(model, classes)
    recorded = recorded_classes(model)
    if recorded is not None and classes != recorded:
        raise EvaluationError(
            f'--classes {",".join(classes)} contradicts the classes the model records '
            f'({",".join(recorded)}, in training order): drop --classes, or give '
            f'{",".join(recorded)}'
        )
    return classes


def _check_classes(model: LoadedModel, classes: Sequence[str]) -> None:
    for member in model.members:
        if member.net.num_classes != len(classes):
            raise EvaluationError(
                f'the model has {member.net.num_classes} outputs but the classes are '
                f'{",".join(classes)} ({len(classes)}); pass --classes with the '
                f'{member.net.num_classes} classes it was trained on, in training order.'
            )


def evaluate(
    model,
    data_dir,
    *,
    split: str = 'test',
    output_dir=None,
    threshold: float | None = None,
    target_sensitivity: float | None = None,
    n_boot: int = 1000,
    classes: Sequence[str] | None = None,
    slices: Sequence[data.Slice] | None = None,
    accelerator=None,
    options: EvaluationOptions | None = None,
    subjects=None,
) -> dict[str, Any]:
    """Slice- and scan-level metrics of ``model`` on ``DATA_DIR/<split>``: the metrics.json dict.

    ``model`` is a ``LoadedModel`` or anything ``load_model`` takes. ``slices`` skips scanning and
    checking the split (training passes the test slices it checked at start-up); the test split of
    a run that re-split test by subject is its recorded test scans. ``subjects`` (a subject map
    file, else the run's, else the folder's manifest.csv) adds the ``subject`` level, resamples
    subjects for the CIs and counts the evaluated subjects the model trained on. ``options``:
    batching, TTA, precision, backend, bad files; ``options.cam.n`` > 0 writes evidence-map
    montages of the ``n`` most confident scans of each outcome and the population maps under
    ``OUTPUT_DIR/cam/`` (one model only; with region masks, metrics.json's
    ``cam.region_score``). With an ``accelerator`` every process must call (inference is
    sharded, each slice counted once) and only the main process writes.
    """
    opt = options or EvaluationOptions()
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    model = model.with_backend(opt.backend)
    classes = resolve_classes(model, classes)
    tta, precision, cam = opt.tta, opt.precision, opt.cam
    if precision is not None and precision not in PRECISIONS:
        raise EvaluationError(f'--precision {precision!r}: choose one of {list(PRECISIONS)}')
    if cam.n:
        model.net  # noqa: B018 - refuses an ensemble (one model's maps) before any work
    file_is_scan = model.file_is_scan if opt.file_is_scan is None else opt.file_is_scan
    if slices is None:
        slices = _split_slices(model, data_dir, split, classes, file_is_scan)
        slices = data.resolve_bad_images(
            slices, skip_bad=opt.skip_bad_images, num_workers=opt.num_workers, what=split
        )
    slices = list(slices)
    pos = data.positive_index(classes)
    subject_map = _subject_map(model, data_dir, subjects)
    # {scan: subject} of the evaluated scans: every one must be mapped (else one error, exit 1)
    subject_of = subject_map.for_slices(slices, classes) if subject_map is not None else None

    def predict_raw(items, progress='none'):
        return model.predict_raw(
            items,
            batch_size=opt.batch_size,
            num_workers=opt.num_workers,
            accelerator=accelerator,
            tta=tta,
            precision=precision,
            progress=progress,
        )

    scans = [s.scan for s in slices]
    point = choose_point(
        model,
        threshold=threshold,
        target_sensitivity=target_sensitivity,
        tta=tta,
        data_dir=data_dir,
        split=split,
        classes=classes,
        eval_scans=scans,
        file_is_scan=file_is_scan,
        predict_raw=predict_raw,
    )
    each = predict_raw(slices, opt.progress)
    probs = calibrated_mean(each, point)
    uncalibrated = np.mean(each, axis=0)
    y = data.binary_labels(slices, classes)
    p_pos = probs[:, pos]
    result = metrics.slice_and_scan_metrics(scans, y, p_pos, point.threshold, subject_of)
    if n_boot:
        cis = metrics.bootstrap_ci(
            scans, y, p_pos, point.threshold, n_boot=n_boot, subjects=subject_of
        )
        for level, level_cis in cis.items():
            result[level].update({f'{k}_ci': v for k, v in level_cis.items()})
    result.update(
        {
            **point.as_metrics(),
            'calibration': {
                'temperature': point.temperature,
                'method': model.calibration_method,
                **_ece(scans, y, uncalibrated[:, pos], p_pos),
            },
            'model': model.ref,
            'data_dir': str(data_dir),
            'split': split,
            'classes': classes,
            'positive_class': classes[pos],
            'tta': tta,
            'precision': precision or model.precision,
            'backend': opt.backend,
            'file_is_scan': file_is_scan,
            'weights_sha256': model.weights_sha256,
            'epoch': None if model.is_ensemble else model.settings.epoch,
            'synthetic': model.synthetic,
            'ci': _ci_facts(n_boot, subject_of),
        }
    )
    result.update(_subject_facts(model, split, subject_map, subject_of))
    result['shortcut'] = _shortcut(
        data_dir,
        split,
        classes,
        slices,
        scans,
        y,
        p_pos,
        point.threshold,
        result['scan'],
        file_is_scan,
    )
    checks = _input_check_facts(model)
    if checks is not None:  # how the model refuses unlike inputs (validation)
        result['input_check'] = checks
    if model.is_ensemble:
        result['members'] = _member_metrics(model, each, scans, y, pos)
    if cam.n and cam.region_masks is None:
        cam = replace(cam, region_masks=_synthetic_atrophy(data_dir, split))
    if output_dir is not None and (accelerator is None or accelerator.is_main_process):
        folder = EvalFolder(output_dir)
        context = _figure_context(model, result, slices)
        _write_reports(folder, result, slices, probs, uncalibrated[:, pos], y, classes, context)
        if cam.n:
            result['cam'] = _write_cam(
                model,
                slices,
                p_pos,
                point.threshold,
                classes,
                folder,
                cam,
                labelled=True,
                context=context,
                progress=opt.progress,
            )
            write_json(folder.metrics_file, result)
    return result


def _shortcut(
    data_dir, split, classes, slices, scans, y, p_pos, threshold, scan_metrics, file_is_scan
) -> dict[str, Any]:
    """The slice-number baseline beside the model's scan accuracy, overall and per slice window
    (metrics.json's ``shortcut``): fitted on DATA_DIR/train's scans, or cross-validated over the
    evaluated scans when the split is train or there is no train folder."""
    train = None
    if data_dir is not None and split != 'train':
        try:
            train = data.scan_split(data_dir, 'train', classes, file_is_scan=file_is_scan)
        except data.DataError:
            train = None
    ids, y_scan, p_scan = metrics.scan_level(scans, y, p_pos)
    correct = {str(i): bool((p >= threshold) == t) for i, t, p in zip(ids, y_scan, p_scan)}
    return evaluation_shortcut(
        train,
        slices,
        data.positive_index(classes),
        correct,
        scan_metrics['accuracy'],
        scan_metrics.get('accuracy_ci'),
    )


def _ci_facts(n_boot: int, subject_of) -> dict[str, Any] | None:
    """metrics.json's ``ci``: how the intervals were made (None without a bootstrap)."""
    if not n_boot:
        return None
    resampled = 'subjects' if subject_of is not None else 'scans'
    return {'method': CI_METHOD, 'n_boot': n_boot, 'level': 0.95, 'seed': 0, 'resampled': resampled}


def _input_check_facts(model: LoadedModel):
    """Each member's input-check summary (one dict for a single model); None without a check."""
    checks = [m.input_check() for m in model.members]
    if all(c is None for c in checks):
        return None
    summaries = [c.summary.as_metrics() if c is not None else None for c in checks]
    return summaries[0] if len(summaries) == 1 else summaries


def _subject_facts(model: LoadedModel, split: str, subject_map, subject_of) -> dict[str, Any]:
    """``test_from`` (a run's subject re-split), ``subjects`` and ``subject_overlap``: the
    evaluated subjects that also had scans that trained or selected the model."""
    facts: dict[str, Any] = {}
    recorded = _run_split(model) or {}
    if split == 'test' and recorded.get('test_from') == 'resplit':
        facts['test_from'] = 'resplit'  # the run's subject re-split, not the folder's test/
    if subject_of is not None:
        facts['subjects'] = {'source': subject_map.source, 'n': len(set(subject_of.values()))}
        if model.run is not None:
            seen = model.run.seen_scans()
            if seen is not None:
                # the subjects of the scans that trained or selected the model, as far as mapped
                seen_subjects = {subject_map.subject(p) or p for p in seen}
                evaluated = set(subject_of.values())
                facts['subject_overlap'] = {
                    'n': len(evaluated & seen_subjects),
                    'of': len(evaluated),
                }
                if facts['subject_overlap']['n']:
                    _logger.warning(
                        'subjects overlap train and test: %d of %d evaluated subjects also had '
                        'scans that trained or selected this model',
                        facts['subject_overlap']['n'],
                        len(evaluated),
                    )
    return facts


def _member_metrics(model: LoadedModel, each, scans, y, pos) -> list[dict[str, Any]]:
    """Each member alone, at its own stored operating point, beside the ensemble's metrics."""
    out = []
    for member, raw in zip(model.members, each):
        settings = member.settings
        thr = settings.threshold if settings.threshold is not None else 0.5
        p_pos = metrics.apply_temperature(raw, settings.temperature)[:, pos]
        out.append(
            {
                'model': member.ref,
                'threshold': thr,
                'temperature': settings.temperature,
                **metrics.slice_and_scan_metrics(scans, y, p_pos, thr),
            }
        )
    return out


def _ece(scans, y, p_raw, p_cal) -> dict[str, Any]:
    """ECE of the evaluated split calibrated, and uncalibrated (T = 1) for comparison."""
    after = metrics.calibration_report(scans, y, p_cal)
    before = metrics.calibration_report(scans, y, p_raw)
    return {
        **after,
        'ece_slice_uncalibrated': before['ece_slice'],
        'ece_scan_uncalibrated': before['ece_scan'],
    }


def _synthetic_atrophy(data_dir, split: str):
    """Where the synthetic generator drew atrophy in ``DATA_DIR/<split>`` (its dataset.json
    records its arguments), so the evidence maps get a region score; None for other data."""
    from ..data.note import describe

    generator = describe(data_dir).generator if data_dir is not None else None
    if not generator:
        return None
    from ..synthetic import slices as synthetic

    return synthetic.atrophy_masks(**synthetic.recorded_arguments(generator), splits=(split,))


def _figure_context(model: LoadedModel, result: dict, slices) -> plots.FigureContext:
    """Model, split and SYNTHETIC (a synthetic model, or images with the generator's marker)."""
    from ..synthetic.slices import is_synthetic_image

    synthetic = model.synthetic or (bool(slices) and is_synthetic_image(slices[0].path))
    return plots.FigureContext(str(result.get('model')), result.get('split'), synthetic)


def _write_cam(
    model: LoadedModel,
    slices,
    p_pos,
    threshold,
    classes,
    folder: EvalFolder,
    cam_options: CamOptions,
    *,
    labelled: bool,
    context=None,
    progress: str = 'none',
) -> dict:
    """Evidence-map montages and population maps of one model (``adni_timm.evaluation.cam``;
    captum)."""
    from accelerate import PartialState

    from . import cam

    net = model.net
    _, eval_tf = data.build_transforms(net)
    report = cam.write_cam_report(
        net,
        slices,
        p_pos,
        threshold,
        classes,
        folder.path,
        cam_options.n,
        transform=eval_tf,
        device=PartialState().device,
        labelled=labelled,
        method=cam_options.method,
        layer=cam_options.layer,
        region_masks=cam_options.region_masks,
        context=context,
        progress=progress,
    )
    _logger.info(
        'Grad-CAM (%s of %s): %d montages in %.1f s under %s',
        report.get('target'),
        report.get('layer'),
        len(report.get('montages', [])),
        report.get('seconds', 0),
        folder.cam_dir,
    )
    return json.loads(json.dumps(report, default=str))


def _write_reports(
    folder: EvalFolder, result: dict, slices, probs, p_raw, y, classes, context=None
) -> None:
    folder.path.mkdir(parents=True, exist_ok=True)
    pos, thr = data.positive_index(classes), result['threshold']
    p_key = f'p_{classes[pos]}'
    write_csv(
        folder.predictions_file,
        [
            {
                'path': s.path,
                'scan': s.scan,
                'label': classes[s.label],
                p_key: float(p[pos]),
                'predicted': pred,
            }
            for s, p, pred in zip(slices, probs, slice_decisions(probs, thr, classes))
        ],
    )
    rows = scan_rows(slices, probs[:, pos], thr, classes, labelled=True)
    write_csv(
        folder.scans_file,
        [
            {
                'scan': r.scan,
                'label': r.label,
                'n_slices': r.n_slices,
                p_key: r.p_positive,
                'predicted': r.predicted,
            }
            for r in rows
        ],
    )
    write_json(folder.metrics_file, result)
    negative = negative_name(classes)
    labels = [negative, classes[pos]]
    plots.plot_confusion_matrix(
        result['scan']['confusion_matrix'],
        labels,
        folder.figure(EvalFolder.CONFUSION),
        title=f'scans (threshold {thr:.3g})',
        context=context,
        unit='scans',
    )
    plots.plot_confusion_matrix(
        result['slice']['confusion_matrix'],
        labels,
        folder.figure(EvalFolder.CONFUSION_SLICES),
        title=f'slices (threshold {thr:.3g})',
        context=context,
        unit='slices',
    )
    scans = [s.scan for s in slices]
    _, y_pat, p_pat = metrics.scan_level(scans, y, probs[:, pos])
    if len(np.unique(y_pat)) == 2:
        plots.plot_roc(
            y_pat,
            p_pat,
            folder.figure(EvalFolder.ROC),
            title=f'{classes[pos]} vs {negative}, scans',
            threshold=thr,
            context=context,
            unit='scans',
        )
    else:
        _logger.warning('roc.png not written: the %s split holds a single class', result['split'])
    plots.plot_scan_probabilities(
        y_pat,
        p_pat,
        labels,
        folder.figure(EvalFolder.SCAN_PROBABILITIES),
        threshold=thr,
        title=f'P({classes[pos]}) per scan by true class',
        context=context,
    )
    _, _, p_pat_raw = metrics.scan_level(scans, y, p_raw)
    temperature = result['calibration']['temperature']
    calibrated = temperature != 1
    plots.plot_reliability(
        y,
        p_raw,
        y_pat,
        p_pat_raw,
        folder.figure(EvalFolder.RELIABILITY),
        title=f'calibration, temperature {fmt(temperature)}',
        p_slice_calibrated=probs[:, pos] if calibrated else None,
        p_scan_calibrated=p_pat if calibrated else None,
        context=context,
    )
    _logger.info('wrote metrics.json, predictions.csv, scans.csv and figures to %s', folder.path)


def format_table(result: dict) -> str:
    """A compact console table: slice, scan (and subject) columns, 95% CIs in brackets."""
    s, p = result['slice'], result['scan']
    levels = [('slices', s), ('scans', p)]
    if isinstance(result.get('subject'), dict):
        levels.append(('subjects', result['subject']))
    width = max(24, len(str(s['confusion_matrix'])) + 2)  # confusion matrices of ADNI size run wide
    test = ' (re-split by subject)' if result.get('test_from') == 'resplit' else ''
    lines = [
        f'{result.get("model", "")} on {result.get("data_dir", "")}/{result.get("split", "")}'
        f'{test}: {result.get("positive_class", "AD")} positive, threshold '
        f'{fmt(result["threshold"])} ({result["threshold_source"]})',
        f'{"":<18}'
        + ''.join(f'{name + " (n=" + str(m["n"]) + ")":<{width}}' for name, m in levels),
    ]
    for key in metrics.CI_KEYS:
        lines.append(
            f'{key:<18}'
            + ''.join(f'{fmt_ci(m[key], m.get(key + "_ci")):<{width}}' for _, m in levels)
        )
    lines.append(
        f'{"[[TN,FP],[FN,TP]]":<18}'
        + ''.join(f'{str(m["confusion_matrix"]):<{width}}' for _, m in levels)
    )
    cal = result.get('calibration')
    if cal:
        temperature = cal['temperature']
        shown = (
            f'temperature {fmt(temperature)}'
            if not isinstance(temperature, list)
            else 'temperatures ' + ', '.join(fmt(t) for t in temperature)
        )
        lines.append(
            f'{"ECE":<18}{fmt(cal["ece_slice"]):<{width}}{fmt(cal["ece_scan"]):<{width}}'
            f'({shown}; uncalibrated {fmt(cal["ece_slice_uncalibrated"])} / '
            f'{fmt(cal["ece_scan_uncalibrated"])})'
        )
    if result.get('ci'):
        unit = result['ci'].get('resampled', 'scans')
        lines.append(
            f'[lo, hi]: 95% CI, bootstrap over {unit} ({result["ci"]["n_boot"]} resamples)'
        )
    overlap = result.get('subject_overlap')
    if overlap and overlap.get('n'):
        lines.append(f'subjects overlap train and test: {overlap["n"]} of {overlap["of"]}')
    lines += shortcut_summary(result.get('shortcut'))
    if result.get('members'):
        lines.append(
            f"the ensemble of {len(result['members'])}: P(AD) = mean of the members' calibrated "
            f'P(AD); each member alone, at its own threshold:'
        )
        for m in result['members']:
            pat = m['scan']
            lines.append(
                f'  {str(m["model"])[-40:]:<40} scan acc {fmt(pat["accuracy"])}  AUC '
                f'{fmt(pat["auc"])}  sens {fmt(pat["sensitivity"])}  spec {fmt(pat["specificity"])}'
            )
    return '\n'.join(lines)
