"""``train.py --folds K [--refit]``: k-fold cross-validation
by patient, out-of-fold operating point, refit.

Reads top to bottom like ``training.train``: check the data, make (or, on resume, read) the folds,
train one ordinary run per fold in ``RUN/fold{k}/`` (each resumable), predict every training slice
with the one fold model that never saw its patient (``oof_predictions.csv``), choose the temperature
and threshold on all those out-of-fold predictions (``cv.json``), optionally refit one model on all
training patients for the folds' median best epoch (``RUN/refit/``, exported to ``RUN/final/`` with
the out-of-fold operating point), and evaluate on test: the fold ensemble into ``RUN/eval/`` (each
fold model's own test metrics beside it) and the refit model into ``RUN/eval-final/``.

Every fold uses all processes of ``accelerate launch``; the bookkeeping between folds runs on the
main process, and an error there stops every process (``distributed.run_on_main``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import cv, data, export, metrics, training
from .checkpoint import find_checkpoint
from .distributed import run_on_main
from .files import read_json, write_json
from .run_record import RESUME_OVERRIDABLE, RunRecord
from .training import TrainingError, TrainResult

__all__ = ['FOLDS_NAME', 'CVResult', 'train_cv']

_logger = logging.getLogger(__name__)

FOLDS_NAME = 'folds.json'  # the folds, recorded before any fold trains: a resume reuses them


@dataclass
class CVResult:
    run_dir: Path
    record: RunRecord
    cv: dict[str, Any]
    folds: list[TrainResult] = field(default_factory=list)
    final: TrainResult | None = None
    eval_metrics: dict[str, Any] | None = (
        None  # the refit model's when there is one, else the ensemble's
    )
    ensemble_metrics: dict[str, Any] | None = None
    cv_table: str = ''

    @property
    def best(self) -> dict[str, Any]:
        """What the summary reports: the refit model's operating point, else the ensemble's."""
        best = (
            dict(self.final.best)
            if self.final is not None
            else {'weights': f'{self.cv["k"]}-fold ensemble'}
        )
        best.update(
            threshold=self.cv['threshold'],
            threshold_source='out-of-fold',
            temperature=self.cv['temperature'],
        )
        return best


def train_cv(
    record: RunRecord, run_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False
) -> CVResult:
    """Cross-validate ``record.config`` (``folds`` >= 2) on ``record.data_dir`` into ``run_dir``."""
    cfg = record.config
    run_dir = Path(run_dir)
    accelerator = training.make_accelerator(cfg)
    if not resume and not overwrite:
        training.refuse_existing_run(run_dir)
    if resume:
        record.check_processes(accelerator.num_processes)
    else:
        record = record.with_hardware(accelerator)

    # ---- the data and the folds, checked before anything is replaced or trained
    train_slices, test_slices = training.check_data(
        cfg, record.data_dir, check_test=record.eval_test
    )
    folds = _folds(run_dir, train_slices, cfg, resume)
    with training.OldRunAside(run_dir, accelerator, active=overwrite and not resume) as aside:
        if accelerator.is_main_process:
            if resume:
                record.append_resume(run_dir, accelerator, after_epoch=None)
            else:
                run_dir.mkdir(parents=True, exist_ok=True)
                record.save(run_dir)
                write_json(
                    run_dir / FOLDS_NAME, {'k': len(folds), 'seed': cfg.seed, 'folds': folds}
                )

        # ---- one ordinary run per fold (a killed CV run resumes the unfinished fold and the rest)
        fold_results = []
        for k in range(len(folds)):
            split = cv.fold_split(folds, k, seed=cfg.seed)
            _logger.info(
                'fold %d/%d: %d training, %d validation patients',
                k + 1,
                len(folds),
                len(split['train']),
                len(split['val']),
            )
            fold_results.append(_run_part(record, run_dir / f'fold{k}', split))
            aside.release()  # a fold has finished: the replaced run can go

    # ---- out-of-fold predictions and the operating point chosen on them
    outcome: dict[str, Any] = {}
    error = run_on_main(
        accelerator,
        lambda: outcome.update(cv=_write_cv(run_dir, train_slices, folds, fold_results, cfg)),
        'the out-of-fold predictions',
    )
    if error:
        raise TrainingError(error)
    result = CVResult(
        run_dir=run_dir,
        record=record,
        cv=outcome.get('cv') or read_json(run_dir / cv.CV_JSON),
        folds=fold_results,
    )
    result.cv_table = cv.format_cv_table(result.cv['summary'])
    if accelerator.is_main_process:
        _logger.info(
            'cross-validation, %d folds (validation patients; out-of-fold threshold %.3f):\n%s',
            len(folds),
            result.cv['threshold'],
            result.cv_table,
        )

    # ---- refit on all training patients for the folds' median best epoch
    if cfg.refit:
        result.final = _refit(record, run_dir, train_slices, result.cv, accelerator)

    # ---- the test split: the ensemble (and each fold model), the refit model
    if record.eval_test:
        error = run_on_main(
            accelerator,
            lambda: _evaluate_on_test(result, test_slices),
            'evaluating on the test split',
        )
        if error:
            raise TrainingError(error)
    return result


def _folds(run_dir: Path, slices: list[data.Slice], cfg, resume: bool) -> list[list[str]]:
    """The recorded folds on resume (their patients must
    all be there), else new ones from (patients, K, seed).
    """
    labels = {s.patient: s.label for s in slices}
    if resume:
        folds = read_json(run_dir / FOLDS_NAME)['folds']
        missing = sorted({p for fold in folds for p in fold} - set(labels))
        if missing:
            raise data.DataError(
                f'{len(missing)} patient(s) of the recorded folds are not in the data: '
                f'{", ".join(missing[:5])}. Restore their files, or point --data-dir at the '
                f'data the run was made on.'
            )
        return folds
    return cv.make_folds(labels, cfg.folds, cfg.seed)


def _run_part(record: RunRecord, part_dir: Path, split: dict) -> TrainResult:
    """Train (or continue) one fold or the refit as an ordinary run folder."""
    part = dataclasses.replace(record, eval_test=False, resumes=[], resumed_from=None)
    ckpt = find_checkpoint(part_dir / 'checkpoints')
    if ckpt is None:
        return training.train(part, part_dir, split=split, overwrite=True)
    recorded = RunRecord.load(part_dir)
    changes = {
        key: getattr(part.config, key)
        for key in RESUME_OVERRIDABLE
        if getattr(part.config, key) != getattr(recorded.config, key)
    }
    return training.train(
        recorded.resumed(changes, data_dir=record.data_dir), part_dir, resume=True
    )


def _write_cv(run_dir: Path, train_slices, folds, fold_results, cfg) -> dict[str, Any]:
    """oof_predictions.csv and cv.json: every training
    slice predicted by the fold model that never saw it.

    The temperature and threshold are chosen on all out-of-fold predictions together; the csv holds
    the calibrated P(AD), the probability the threshold applies to.
    """
    from .evaluation import predict

    classes, positive = list(cfg.classes), data.positive_index(cfg.classes)
    by_patient: dict[str, list[data.Slice]] = {}
    for s in train_slices:
        by_patient.setdefault(s.patient, []).append(s)
    probs, oof_slices, fold_of = [], [], []
    for k, fold in enumerate(folds):
        model, info = export.resolve_model(run_dir / f'fold{k}')
        val = [s for p in fold for s in by_patient[p]]
        probs.append(
            predict(
                model,
                val,
                batch_size=cfg.batch_size,
                num_workers=min(cfg.num_workers, 4),
                precision=info['export'].get('precision') or 'no',
            )
        )
        oof_slices += val
        fold_of += [k] * len(val)
    probs, fold_of = np.concatenate(probs), np.array(fold_of)
    labels, patients = (
        np.array([s.label for s in oof_slices]),
        np.array([s.patient for s in oof_slices]),
    )
    point = metrics.operating_point(probs, labels, patients, positive, cfg.target_sensitivity)
    columns = [
        {
            'path': [s.path for s, f in zip(oof_slices, fold_of) if f == k],
            'patient': patients[fold_of == k],
            'label': labels[fold_of == k],
            'p_AD': point['p_pos'][fold_of == k],
        }
        for k in range(len(folds))
    ]
    cv.write_oof_csv(
        run_dir / cv.OOF_CSV,
        cv.assemble_oof(columns, expected_paths=[s.path for s in train_slices]),
    )
    y = (labels == positive).astype(np.int64)
    per_fold = [
        metrics.slice_and_patient_metrics(
            patients[fold_of == k],
            y[fold_of == k],
            point['p_pos'][fold_of == k],
            point['threshold'],
        )
        for k in range(len(folds))
    ]
    result = {
        'k': len(folds),
        'seed': cfg.seed,
        'folds': folds,
        'classes': classes,
        'threshold': point['threshold'],
        'threshold_source': 'out-of-fold',
        'threshold_rule': point['threshold_rule'],
        'temperature': point['temperature'],
        'per_fold': per_fold,
        'summary': cv.cv_summary(per_fold),
        'out_of_fold': metrics.slice_and_patient_metrics(
            patients, y, point['p_pos'], point['threshold']
        ),
        'best_epochs': [r.best['epoch'] for r in fold_results],
    }
    write_json(run_dir / cv.CV_JSON, result)
    return result


def _refit(
    record: RunRecord, run_dir: Path, train_slices, cv_result: dict, accelerator
) -> TrainResult:
    """One model on all training patients for the folds'
    median best epoch; exported with the OOF point.
    """
    epochs = max(1, int(round(statistics.median(cv_result['best_epochs']))))
    patients = sorted({s.patient for s in train_slices})
    refit_record = dataclasses.replace(
        record, config=dataclasses.replace(record.config, epochs=epochs)
    )
    _logger.info(
        'refit: all %d training patients for %d epochs (the median best epoch of the folds)',
        len(patients),
        epochs,
    )
    result = _run_part(
        refit_record,
        run_dir / 'refit',
        {
            'level': 'patient',
            'seed': record.config.seed,
            'train': patients,
            'val': [],
            'refit_of': str(run_dir),
        },
    )

    def write_final():
        model, info = export.resolve_model(run_dir / 'refit')
        extra = dict(
            info['export'],
            threshold=cv_result['threshold'],
            threshold_source='out-of-fold',
            temperature=cv_result['temperature'],
            weights='live',
            best_metric=None,
            best_value=None,
            refit_epochs=epochs,
            folds=cv_result['k'],
        )
        export.export_model(model, run_dir / 'final', extra=extra)

    error = run_on_main(accelerator, write_final, 'exporting the refit model')
    if error:
        raise TrainingError(error)
    return result


def _evaluate_on_test(result: CVResult, test_slices) -> None:
    from . import evaluation

    run_dir, record = result.run_dir, result.record
    kwargs = dict(
        classes=record.config.classes,
        num_workers=min(record.config.num_workers, 4),
        slices=test_slices,
    )
    result.ensemble_metrics = evaluation.evaluate(
        str(run_dir), record.data_dir, split='test', output_dir=run_dir / 'eval', **kwargs
    )
    result.eval_metrics = result.ensemble_metrics
    if result.final is not None:
        result.eval_metrics = evaluation.evaluate(
            str(run_dir / 'final'),
            record.data_dir,
            split='test',
            output_dir=run_dir / 'eval-final',
            **kwargs,
        )
