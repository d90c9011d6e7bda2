"""``train.py --folds K [--refit]``: K-fold cross-validation by scan that never grades itself.

Reads top to bottom like ``training.train``: open the run, check the data, make (or, on resume,
read) the folds, then per fold k one ordinary run in ``RUN/fold{k}/`` whose ``split.json`` holds
three disjoint parts (``splits.fold_split``): ``held_out`` (fold k: only ever predicted), and the
fold's training scans split into ``train`` and ``val``. With ``cv_select: inner`` (default) the
epoch, the live/EMA weights and the fold's temperature are chosen on ``val``; with
``cv_select: last`` nothing is chosen (the fixed number of epochs, the last weights). Then:

- ``oof_predictions.csv``: every training slice predicted by the one fold model that never saw its
  scan, calibrated with that model's own temperature;
- ``cv.json``: per-fold metrics on the held-out fold at a threshold chosen on the *other* folds'
  out-of-fold predictions (so no reported number is tuned on itself), the pooled out-of-fold metrics
  with CIs (at the same cross-fitted thresholds), and two operating points chosen on all out-of-fold
  predictions: the ensemble's (members at their own temperatures, then the mean) and the refit's
  (one temperature fitted on the raw out-of-fold probabilities);
- ``--refit``: one model on all training scans for the folds' median best epoch, keeping the
  weights most folds chose (live or EMA), exported to ``RUN/final/`` with the refit's point;
- ``--eval-test``: the fold ensemble into ``RUN/eval/``, the refit into ``RUN/eval-final/``.

Every fold uses all processes of ``accelerate launch``; the bookkeeping between folds runs on the
main process, and an error there stops every process (``distributed.run_on_main``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
from collections import Counter
from typing import Any

import numpy as np

from ..cv import summary as cv
from .. import data, metrics
from ..export import format as export
from . import loop as training
from .checkpoint import find_checkpoint
from ..utils.distributed import run_on_main
from ..inference import load_model
from ..run import RESUME_OVERRIDABLE, OldRunAside, Run, RunRecord
from ..data.note import subjects_of
from ..data.splits import check_data, fold_split, make_subject_folds, scan_labels, recorded_folds
from .loop import TrainResult, open_run, stop_if

__all__ = ['train_cv']

_logger = logging.getLogger(__name__)


def train_cv(
    record: RunRecord, run_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False
) -> TrainResult:
    """Cross-validate ``record.config`` (``folds`` >= 2) on ``record.data_dir`` into ``run_dir``."""
    cfg = record.config
    run = Run(run_dir)
    accelerator, record = open_run(record, run, resume=resume, overwrite=overwrite)

    # ---- the data and the folds, checked before anything is replaced or trained
    train_slices, test_slices = check_data(cfg, record.data_dir, check_test=record.eval_test)
    if resume:  # the recorded folds' scans only: a scan new on disk joins no fold, no refit
        folds = run.read_folds()['folds']
        train_slices = recorded_folds(folds, train_slices)
    else:  # every visit of a subject in one fold (adni-prepare --visits all)
        folds = make_subject_folds(
            scan_labels(train_slices), cfg.folds, cfg.seed, subjects_of(record.data_dir)
        )
    labels = scan_labels(train_slices)
    with OldRunAside(run, accelerator, active=overwrite and not resume) as aside:
        if accelerator.is_main_process:
            if resume:
                run.append_resume(record.resume_entry(accelerator, after_epoch=None))
            else:
                run.path.mkdir(parents=True, exist_ok=True)
                run.save_record(record)
                run.write_folds(folds, cfg.seed)

        # ---- one ordinary run per fold (a killed CV run resumes the unfinished fold and the rest)
        fold_results = []
        for k in range(len(folds)):
            split = fold_split(
                folds,
                k,
                labels,
                seed=cfg.seed,
                select_by=cfg.cv_select,
                val_fraction=cfg.val_fraction,
                subjects=subjects_of(record.data_dir),
            )
            _logger.info(
                'fold %d/%d: %d training, %d selection (inner validation), %d held-out scans',
                k + 1,
                len(folds),
                len(split['train']),
                len(split['val']),
                len(split['held_out']),
            )
            fold_results.append(_run_part(record, run.fold(k), split))
            aside.release()  # a fold has finished: the replaced run can go

    # ---- out-of-fold predictions and the operating points chosen on them
    outcome: dict[str, Any] = {}
    stop_if(
        run_on_main(
            accelerator,
            lambda: outcome.update(cv=_write_cv(run, train_slices, folds, fold_results, cfg)),
            'the out-of-fold predictions',
        )
    )
    result = TrainResult(
        run=run,
        record=record,
        cv=outcome.get('cv') or run.read_cv(),
        folds=fold_results,
    )
    result.cv_table = cv.format_cv_table(result.cv['summary'])
    if accelerator.is_main_process:
        _logger.info(
            'cross-validation, %d folds (held-out scans, thresholds chosen on the other '
            'folds):\n%s\nout of fold: %s',
            len(folds),
            result.cv_table,
            cv.format_out_of_fold(result.cv['out_of_fold']),
        )

    # ---- refit on all training scans for the folds' median best epoch
    if cfg.refit:
        result.final = _refit(record, run, train_slices, result.cv, accelerator)
        result.best = result.final.best

    # ---- the test split: the ensemble (and each fold model), the refit model
    if record.eval_test:
        stop_if(
            run_on_main(
                accelerator,
                lambda: _evaluate_on_test(result, test_slices),
                'evaluating on the test split',
            )
        )
    return result


def _run_part(record: RunRecord, part: Run, split: dict) -> TrainResult:
    """Train (or continue) one fold or the refit as an ordinary run folder: its record says
    folds = 0, so ``train.py --output-dir RUN/fold0 --resume`` continues it on its own."""
    config = dataclasses.replace(record.config, folds=0, refit=False)
    part_record = dataclasses.replace(
        record, config=config, eval_test=False, resumes=[], resumed_from=None
    )
    if find_checkpoint(part.checkpoints_dir) is None:
        return training.train(part_record, part, split=split, overwrite=True)
    recorded = part.record()
    changes = {
        key: getattr(config, key)
        for key in RESUME_OVERRIDABLE
        if getattr(config, key) != getattr(recorded.config, key)
    }
    return training.train(recorded.resumed(changes, data_dir=record.data_dir), part, resume=True)


def _write_cv(run: Run, train_slices, folds, fold_results, cfg) -> dict[str, Any]:
    """oof_predictions.csv and cv.json (see the module docstring)."""
    classes, positive = list(cfg.classes), data.positive_index(cfg.classes)
    by_scan: dict[str, list[data.Slice]] = {}
    for s in train_slices:
        by_scan.setdefault(s.scan, []).append(s)
    raw, oof_slices, fold_of = [], [], []
    for k, fold in enumerate(folds):
        held_out = [s for p in fold for s in by_scan[p]]
        model = load_model(str(run.fold(k).path))
        raw.append(
            model.predict_raw(
                held_out, batch_size=cfg.batch_size, num_workers=min(cfg.num_workers, 4)
            )[0]
        )
        oof_slices += held_out
        fold_of += [k] * len(held_out)
    fold_of = np.array(fold_of)
    labels = np.array([s.label for s in oof_slices])
    scans = np.array([s.scan for s in oof_slices])
    y = (labels == positive).astype(np.int64)

    # each member's temperature: its own (chosen on its inner validation) or, where nothing was
    # selected (cv_select=last), one fitted on the out-of-fold predictions
    raw_all = np.concatenate(raw)
    if cfg.cv_select == 'inner':
        temperatures = [float(r.best.temperature) for r in fold_results]
        calibration = (
            "each fold model's own temperature (fitted on its inner validation), then the mean"
        )
    else:
        fitted = metrics.operating_point(raw_all, labels, scans, positive)['temperature']
        temperatures = [fitted] * len(folds)
        calibration = 'one temperature fitted on the out-of-fold predictions, then the mean'
    p_oof = np.concatenate(
        [metrics.apply_temperature(r, t)[:, positive] for r, t in zip(raw, temperatures)]
    )
    cv.write_oof_csv(
        run.oof_file,
        cv.assemble_oof(
            [
                {
                    'path': [s.path for s, f in zip(oof_slices, fold_of) if f == k],
                    'scan': scans[fold_of == k],
                    'label': labels[fold_of == k],
                    'p_AD': p_oof[fold_of == k],
                }
                for k in range(len(folds))
            ],
            expected_paths=[s.path for s in train_slices],
        ),
    )

    def choose(p_pos, mask):  # the threshold rule on the scans of ``mask``
        return metrics.operating_point(
            np.stack([1 - p_pos[mask], p_pos[mask]], axis=1),
            y[mask],
            scans[mask],
            1,
            cfg.target_sensitivity,
            temperature=1.0,
        )

    everyone = np.ones(len(y), dtype=bool)
    ensemble_point = choose(p_oof, everyone)
    crossed = cv.cross_fitted(scans, y, p_oof, fold_of, lambda mask: choose(p_oof, mask))
    refit_point = metrics.operating_point(raw_all, labels, scans, positive, cfg.target_sensitivity)
    result = {
        'k': len(folds),
        'seed': cfg.seed,
        'folds': folds,
        'classes': classes,
        'select': cfg.cv_select,
        # the out-of-fold operating point of the ensemble (what oof_predictions.csv is calibrated
        # like); cv compare and evaluate.py --target-sensitivity read these rows
        'threshold': ensemble_point['threshold'],
        'threshold_source': 'out-of-fold',
        'threshold_rule': ensemble_point['threshold_rule'],
        'ensemble': {
            'threshold': ensemble_point['threshold'],
            'threshold_rule': ensemble_point['threshold_rule'],
            'temperatures': temperatures,
            'calibration': calibration,
        },
        'refit': {
            'threshold': refit_point['threshold'],
            'threshold_rule': refit_point['threshold_rule'],
            'temperature': refit_point['temperature'],
            'calibration': 'one temperature fitted on the raw out-of-fold predictions',
        },
        'per_fold': crossed['per_fold'],
        'summary': cv.cv_summary(crossed['per_fold']),
        'out_of_fold': crossed['pooled'],
        'reported_at': 'per fold and pooled: the threshold chosen on the other folds',
        'best_epochs': [r.best.epoch for r in fold_results],
        'best_weights': [r.best.weights for r in fold_results],
    }
    run.write_cv(result)
    _plot_cv(run, cfg, scans, y, p_oof, fold_of, crossed['per_fold'], len(folds))
    return result


def _plot_cv(run: Run, cfg, scans, y, p_oof, fold_of, per_fold, k: int) -> None:
    """RUN/cv.png: each fold's scan-level AUC and accuracy with a bootstrap CI (scans resampled
    within class), beside the pooled out-of-fold ROC."""
    from .. import plots  # matplotlib only when the figure is drawn

    rows = []
    for i in range(k):
        mask = fold_of == i
        cis = metrics.bootstrap_ci(
            scans[mask], y[mask], p_oof[mask], per_fold[i]['threshold'], n_boot=200
        )
        level = 'scan'
        values, level_cis = per_fold[i][level], cis.get(level, {})
        rows.append(
            {
                'auc': values.get('auc'),
                'auc_ci': level_cis.get('auc'),
                'accuracy': values.get('accuracy'),
                'accuracy_ci': level_cis.get('accuracy'),
            }
        )
    _, y_scan, p_scan = metrics.scan_level(scans, y, p_oof)
    synthetic = run.record().synthetic if run.record_file.is_file() else False
    plots.plot_cv_folds(
        rows,
        y_scan,
        p_scan,
        run.cv_figure_file,
        title=f'{k}-fold cross-validation, out of fold ({cfg.model})',
        context=plots.FigureContext(str(run.path), 'train (out of fold)', synthetic),
    )


def refit_epochs(cv_result: dict[str, Any], configured: int) -> int:
    """The folds' median best epoch, rounded half up (2.5 -> 3); the configured epochs when the
    folds chose nothing (cv_select=last)."""
    if cv_result.get('select') == 'last':
        return configured
    return max(1, math.floor(statistics.median(cv_result['best_epochs']) + 0.5))


def refit_weights(cv_result: dict[str, Any]) -> str:
    """The weights most folds chose (live or EMA); live on a tie."""
    votes = Counter(cv_result.get('best_weights') or ['live'])
    return 'ema' if votes['ema'] > votes['live'] else 'live'


def _refit(record: RunRecord, run: Run, train_slices, cv_result: dict, accelerator) -> TrainResult:
    """One model on all training scans, as the folds chose; exported with the refit's point."""
    epochs, weights = refit_epochs(cv_result, record.config.epochs), refit_weights(cv_result)
    scans = sorted({s.scan for s in train_slices})
    refit_record = dataclasses.replace(
        record, config=dataclasses.replace(record.config, epochs=epochs)
    )
    _logger.info(
        "refit: all %d training scans for %d epochs (the folds' median best epoch), %s "
        'weights (what most folds chose)',
        len(scans),
        epochs,
        weights,
    )
    result = _run_part(
        refit_record,
        run.refit,
        {
            'level': 'scan',
            'seed': record.config.seed,
            'train': scans,
            'val': [],
            'weights': weights,
            'refit_of': str(run.path),
        },
    )
    point = cv_result['refit']

    def write_final():
        settings = dataclasses.replace(
            export.read_export_settings(run.refit.best_dir),
            threshold=point['threshold'],
            threshold_source='out-of-fold',
            threshold_rule=point['threshold_rule'],
            temperature=point['temperature'],
            weights=weights,
            best_metric=None,
            best_value=None,
            refit_epochs=epochs,
            folds=cv_result['k'],
        )
        # the refit's weights byte for byte (its input check still belongs to them), new settings
        export.export_with_settings(run.refit.best_dir, run.final_dir, settings.to_dict())

    stop_if(run_on_main(accelerator, write_final, 'exporting the refit model'))
    return result


def _evaluate_on_test(result: TrainResult, test_slices) -> None:
    """The ensemble into RUN/eval and, with --refit, the refit into RUN/eval-final."""
    run, record = result.run, result.record
    result.ensemble_metrics = training.evaluate_on_test(
        str(run.path), run.eval_dir().path, record, test_slices
    )
    result.eval_metrics = result.ensemble_metrics
    if result.final is not None:
        result.eval_metrics = training.evaluate_on_test(
            str(run.final_dir), run.eval_dir(final=True).path, record, test_slices
        )
