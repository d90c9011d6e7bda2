"""What a run leaves behind while and after it trains: the best export and metrics.jsonl per epoch
(repaired on resume), the input check of the kept weights, and the evaluation on test."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import data, plots
from ..config import TrainConfig
from ..data.splits import Splits, select, split_scans
from ..export import format as export
from ..run import Run, RunRecord

if TYPE_CHECKING:  # annotations only: the loop imports this module
    from .loop import BestEpoch, LoopState

_logger = logging.getLogger(__name__)


def best_settings(
    best: BestEpoch, record: RunRecord, described: dict | None = None
) -> dict[str, Any]:
    """What RUN/best/config.json keeps under 'adni_timm' (read by evaluate, the card, the demo)."""
    cfg = record.config
    return export.ExportSettings(
        threshold=best.threshold,
        threshold_source=best.threshold_source,
        threshold_rule=best.threshold_rule,
        temperature=best.temperature,
        classes=tuple(cfg.classes),
        weights=best.weights,
        epoch=best.epoch,
        best_metric=best.metric,
        best_value=best.value,
        model_name=cfg.model,
        img_size=cfg.img_size,
        data=record.data.note,
        synthetic=record.data.synthetic,
        preprocessing=record.data.preprocessing,
        precision=record.mixed_precision,
        file_is_scan=cfg.file_is_scan,
        split_level=cfg.split_level,
        extra={'input': described} if described else {},
    ).to_dict()


def _write_epoch_outputs(
    run: Run,
    state: LoopState,
    best_weights,
    record: RunRecord,
    described: dict | None,
    *,
    curves: bool = True,
) -> None:
    if best_weights is not None:
        export.export_model(
            best_weights, run.best_dir, extra=best_settings(state.best, record, described)
        )
    best = state.best
    run.write_history(
        state.history,
        best_epoch=best.epoch if best else None,
        best_weights=best.weights if best else None,
        context=plots.FigureContext(record.config.model, 'validation', record.synthetic),
        curves=curves,
    )


def _repair_best_export(
    run: Run, state: LoopState, base_model, ema, record: RunRecord, described: dict | None = None
) -> None:
    """A kill between the checkpoint and the best export leaves RUN/best one best behind: redo it.

    Only the last checkpointed epoch can be missing, and its weights are the ones just loaded.
    """
    best = state.best
    if best is None or best.epoch != state.epoch:
        return
    try:
        exported_epoch = export.read_export_settings(run.best_dir).epoch
    except export.ExportError:
        exported_epoch = None
    if exported_epoch != best.epoch:
        weights = ema.module if best.weights == 'ema' and ema is not None else base_model
        export.export_model(weights, run.best_dir, extra=best_settings(best, record, described))
        _logger.info('re-exported the best model (epoch %d) to %s', best.epoch, run.best_dir)


def _fit_input_check(run: Run, splits: Splits, cfg: TrainConfig, device) -> None:
    """Fit ``input_check`` on RUN/best: the training slices' distribution, its threshold on the
    validation slices. A run without validation (a refit) thresholds on training scans left out
    of the fit; the model saw them, so that threshold is tighter (it refuses more, never less)."""
    from ..export.input_check import fit_input_check

    net = export.load_export(str(run.best_dir), export_dir=run.best_dir).net
    _, eval_tf = data.build_transforms(net)
    fit, threshold_on = splits.train, splits.val
    if not threshold_on:
        held = split_scans(fit, 0.2, cfg.seed, splits.subjects)
        fit, threshold_on = select(fit, held, 'train'), select(fit, held, 'val')
    check = fit_input_check(
        net,
        [s.path for s in fit],
        [s.label for s in fit],
        [s.path for s in threshold_on],
        transform=eval_tf,
        batch_size=cfg.batch_size,
        device=device,
        seed=cfg.seed,
    )
    check.save(run.best_dir)  # fit_input_check logs what it fitted and the pass rate


def evaluate_on_test(model_ref: str, output_dir, record: RunRecord, test_slices) -> dict:
    """``evaluate`` of a trained model on the test slices checked at start-up (no re-scan), as
    training and cross-validation report it: the stored operating point, the run's classes."""
    from ..evaluation.options import EvaluationOptions
    from ..evaluation.report import evaluate

    return evaluate(
        model_ref,
        record.data_dir,
        split='test',
        output_dir=output_dir,
        classes=record.config.classes,
        slices=test_slices,
        options=EvaluationOptions(
            num_workers=min(record.config.num_workers, 4), progress=record.config.progress
        ),
    )
