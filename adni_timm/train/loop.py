"""The training loop: timm model, transforms, optimizer, schedule, mixup and EMA under Accelerate.

Reads top to bottom: ``train()`` opens the run (``open_run``: refuse an existing folder, check the
process count), checks everything it can before any work (config, data, split, leakage, unreadable
files; ``adni_timm.data.splits``), makes room for the run, then ``_fit()`` runs the epochs: train
(``train_one_epoch``: where the loss is computed), validate live and EMA weights on the
scan-level validation split (``validate``), keep the best export in ``RUN/best`` and save an
atomic checkpoint for ``--resume``. Where things go is ``adni_timm.run.Run``'s business.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import timm
import timm.optim
import timm.scheduler
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

from .. import data, metrics
from .checkpoint import (
    CheckpointError,
    has_checkpoint,
    kept_note,
    resume_checkpoint,
    save_checkpoint,
)
from ..config import TrainConfig, config_to_dict, fit_warmup
from ..utils.display import fmt, fmt_duration
from ..utils.distributed import first_error, raise_agreed, run_on_main
from .precision import TRAINABLE, Precision, resolve_precision
from ..inference import predict_loader
from ..export.input_description import describe_slices
from ..models import CROP_PCT, INTERPOLATION, MEAN, STD
from ..utils.progress import Progress
from ..data.device import DeviceBatches, DeviceDataError, device_batches
from ..run import OldRunAside, Run, RunRecord
from .outputs import (  # noqa: F401  (best_settings, evaluate_on_test: the loop's API)
    _fit_input_check,
    _repair_best_export,
    _write_epoch_outputs,
    best_settings,
    evaluate_on_test,
)
from ..data.splits import Splits, load_splits

_logger = logging.getLogger(__name__)

# RUN/curves.png is redrawn after an epoch only when this long has passed since the last drawing,
# and always after the last epoch: matplotlib takes ~1 s a figure, which short epochs (a test, a
# smoke run) would spend more on than on training; metrics.jsonl is written every epoch.
CURVES_EVERY_S = 30.0


def curves_due(epoch: int, epochs: int, seconds_since_drawn: float, every_s: float) -> bool:
    """Whether RUN/curves.png is redrawn after ``epoch`` (0-based) of ``epochs``: always after the
    last one, otherwise once ``every_s`` seconds have passed since the last drawing."""
    return epoch + 1 == epochs or seconds_since_drawn >= every_s


__all__ = [
    'TrainingError',
    'BestEpoch',
    'LoopState',
    'TrainResult',
    'open_run',
    'stop_if',
    'train',
    'train_one_epoch',
    'validate',
    'make_accelerator',
    'run_precision',
    'create_model',
    'make_ema',
    'epoch_line',
]


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass
class BestEpoch:
    """The kept weights: which epoch, live or EMA, why, and the operating point they ship with."""

    epoch: int
    weights: str  # 'live' | 'ema'
    metric: str | None  # the selection metric; None without validation (the last epoch)
    value: float | None
    threshold: float = 0.5
    threshold_source: str = 'fixed'
    threshold_rule: str | None = None
    temperature: float = 1.0
    val_loss: float | None = None
    val_scan: dict | None = None
    val_slice: dict | None = None


@dataclass
class LoopState:
    """What a checkpoint carries besides the weights: resumable, JSON-able."""

    epoch: int = 0
    num_updates: int = 0
    history: list[dict] = field(default_factory=list)
    best: BestEpoch | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoopState:
        best = raw.get('best')
        if best is not None:
            names = {f.name for f in dataclasses.fields(BestEpoch)}
            best = BestEpoch(**{k: v for k, v in best.items() if k in names})
        return cls(raw['epoch'], raw['num_updates'], list(raw.get('history', [])), best)


@dataclass
class TrainResult:
    """What ``train`` (one run) and ``cv_run.train_cv`` (K folds, a refit) give back."""

    run: Run
    record: RunRecord
    best: BestEpoch | None = None
    history: list[dict] = field(default_factory=list)
    eval_metrics: dict[str, Any] | None = None  # the published model on test
    model: torch.nn.Module | None = None  # final live weights (unwrapped), for callers and tests
    # cross-validation only
    cv: dict[str, Any] | None = None  # cv.json
    cv_table: str = ''
    folds: list[TrainResult] = field(default_factory=list)
    final: TrainResult | None = None  # the refit
    ensemble_metrics: dict[str, Any] | None = None

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def is_cv(self) -> bool:
        return self.cv is not None


@dataclass
class Candidate:
    """One set of weights (live or EMA) as scored on validation this epoch, at its own operating
    point."""

    report: dict[str, Any]  # slice- and scan-level metrics at ``threshold``
    loss: float
    threshold: float
    threshold_rule: str
    temperature: float
    slices: int


# the error every process agreed on (``distributed.run_on_main``) stops them all, the same way
stop_if = partial(
    raise_agreed,
    exception=TrainingError,
    hint='; the last checkpoint is kept, continue with --resume once fixed',
)


def open_run(
    record: RunRecord, run: Run, *, resume: bool, overwrite: bool
) -> tuple[Accelerator, RunRecord]:
    """The accelerator of a run and its record with the hardware: a new run never lands in a
    folder that holds something, a resumed one continues on the process count it started with."""
    precision = run_precision(record, resume)
    accelerator = make_accelerator(record.config, run, precision)
    if not accelerator.is_main_process:  # one voice: other processes only report errors
        logging.getLogger('adni_timm').setLevel(logging.ERROR)
    stop_if(run_on_main(accelerator, lambda: _recover_replaced(run), f'checking {run.path}'))
    _logger.info('precision %s', precision.describe())
    if resume:
        record.check_processes(accelerator.num_processes)
        return accelerator, record
    if not overwrite:
        run.refuse_existing()
    return accelerator, record.with_hardware(accelerator, precision.source)


def run_precision(record: RunRecord, resume: bool) -> Precision:
    """The precision a run trains in: a resumed run keeps the one it recorded (the launch may differ
    from the first one's); a new run resolves its setting against Accelerate's configuration."""
    recorded = record.mixed_precision
    if resume and recorded in TRAINABLE and (recorded != 'fp16' or torch.cuda.is_available()):
        return Precision(recorded, 'the run record (--resume keeps the precision)')
    return resolve_precision(record.config.mixed_precision)


def _recover_replaced(run: Run) -> None:
    """A run that a killed ``--overwrite`` left in ``.RUN.replaced``: back, or let go."""
    note = OldRunAside.recover(run, has_checkpoint)
    if note:
        _logger.warning(note)


def train(
    record: RunRecord,
    run_dir: str | os.PathLike | Run,
    *,
    resume: bool = False,
    overwrite: bool = False,
    split: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``record.config`` on ``record.data_dir`` into ``run_dir``; evaluate on test if
    ``record.eval_test``.

    ``resume`` continues the run from its last checkpoint on its recorded split; ``overwrite``
    replaces an existing run, but only once every check has passed; ``split`` imposes a split
    (a cross-validation fold, a refit) instead of carving one.
    """
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    accelerator, record = open_run(record, run, resume=resume, overwrite=overwrite)
    if resume:
        split = run.read_split()  # never re-split: resume keeps who is in validation
    cfg, warmup_note = fit_warmup(record.config)  # a smoke run's warmup must leave room to train
    if warmup_note:
        _logger.info(warmup_note)
    record = dataclasses.replace(record, config=cfg)

    # every check that can fail runs before an old run is touched or a weight is trained
    splits = load_splits(cfg, record.data_dir, recorded=split, check_test=record.eval_test)
    # what the model will expect as input, stored with every export (the card's "Input data")
    described = describe_slices(splits.train, record.data).to_dict() if splits.train else None
    # --overwrite: the old run moves aside now and is deleted only once the new one has a checkpoint
    with OldRunAside(run, accelerator, active=overwrite and not resume) as aside:
        if accelerator.is_main_process and not resume:
            run.path.mkdir(parents=True, exist_ok=True)
            # recorded before training: resume and evaluate.py read who was in validation
            run.write_split(splits.split)
            run.save_record(record)
        return _fit(
            record, run, accelerator, splits, resume=resume, aside=aside, described=described
        )


@dataclass
class Setup:
    """What the loop trains with, once built and prepared by Accelerate."""

    base_model: torch.nn.Module  # unwrapped: what is exported and evaluated
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    optimizer: Any
    scheduler: Any
    train_loader: Any
    val_loader: Any  # None for a refit
    ema: ModelEmaV3 | None
    mixup: Any
    loss_fn: Any


def _fit(
    record: RunRecord,
    run: Run,
    accelerator: Accelerator,
    splits: Splits,
    *,
    resume: bool,
    aside: OldRunAside,
    described: dict | None = None,
) -> TrainResult:
    cfg = record.config
    setup = _build(cfg, splits, accelerator)
    state = _resume(run, record, setup, accelerator, described) if resume else LoopState()
    if cfg.log_with:
        accelerator.init_trackers(run.path.name, config=_tracker_config(cfg))
    _loop(record, run, accelerator, splits, setup, state, aside=aside, described=described)
    if cfg.log_with:
        accelerator.end_training()
    # once the kept weights are final: what they will refuse as unlike their training slices
    stop_if(
        run_on_main(
            accelerator,
            lambda: _fit_input_check(run, splits, cfg, accelerator.device),
            'fitting the input check',
        )
    )
    result = TrainResult(
        run=run, record=record, best=state.best, history=state.history, model=setup.base_model
    )
    if record.eval_test:  # once, at the end: test never steers training or model selection
        result.eval_metrics = _evaluate_on_test(run, record, splits, accelerator)
    return result


def _build(cfg: TrainConfig, splits: Splits, accelerator: Accelerator) -> Setup:
    """Model, transforms, loaders, loss, optimizer, schedule and EMA, prepared by Accelerate."""
    # ---- model and transforms (the eval transform is the one timm resolves for the exported model)
    set_seed(cfg.seed)  # the same initial weights on every process
    base_model = create_model(cfg).to(accelerator.device)
    train_tf, eval_tf = data.build_transforms(
        base_model,
        scale=tuple(cfg.scale),
        ratio=tuple(cfg.ratio),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.auto_augment,
        re_prob=cfg.re_prob,
    )
    train_loader, val_loader = _make_loaders(
        cfg, splits.train, splits.val, train_tf, eval_tf, accelerator
    )
    mixup, train_loss_fn = _make_loss(cfg)
    if cfg.channels_last and accelerator.device.type == 'cuda':  # a GPU speed-up only
        base_model = base_model.to(memory_format=torch.channels_last)
    # reseeded per process: the same init as above, but different drop-path and augmentation draws
    set_seed(cfg.seed + accelerator.process_index)

    # ---- optimisation: the lr follows the update count, so a resumed run picks up mid-schedule
    optimizer = timm.optim.create_optimizer_v2(
        base_model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    if isinstance(train_loader, DeviceBatches):  # drawn on the device, sharded already
        model, optimizer = accelerator.prepare(base_model, optimizer)
    else:
        model, optimizer, train_loader = accelerator.prepare(base_model, optimizer, train_loader)
        # a refit has no validation loader
        val_loader = accelerator.prepare(val_loader) if val_loader is not None else None
    # per process: the prepared loader is sharded over the processes
    updates_per_epoch = max(1, math.ceil(len(train_loader) / cfg.grad_accum_steps))
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    # timm < 1.0.31 returns None for names it lacks (e.g. 'constant') instead of failing
    if scheduler is None:
        raise TrainingError(
            f'sched={cfg.sched!r}: timm {timm.__version__} has no such learning-rate schedule; '
            f'pip install -U "timm>=1.0.31", or choose another --sched'
        )
    # EMA after prepare: its warmup is counted in updates, known once the loader is sharded
    ema = make_ema(cfg, base_model, updates_per_epoch)
    if cfg.compile:
        # in place: state-dict keys stay plain, so checkpoints resume with or without it
        base_model.compile()
    return Setup(
        base_model=base_model,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        ema=ema,
        mixup=mixup,
        loss_fn=train_loss_fn,
    )


def _resume(
    run: Run, record: RunRecord, setup: Setup, accelerator: Accelerator, described: dict | None
) -> LoopState:
    """Weights, optimizer, RNG states and loop state from the last checkpoint; the record gains
    one line in resumes.jsonl."""
    try:  # last, or the one before it when last is damaged (said in a warning)
        raw, ckpt = resume_checkpoint(accelerator, run.checkpoints_dir, setup.ema)
    except CheckpointError as e:
        raise TrainingError(str(e)) from None
    state = LoopState.from_dict(raw)
    setup.scheduler.step_update(num_updates=state.num_updates)
    if accelerator.is_main_process:
        run.append_resume(record.resume_entry(accelerator, after_epoch=state.epoch))
        _repair_best_export(run, state, setup.base_model, setup.ema, record, described)
    _logger.info('resumed from %s after epoch %d', ckpt, state.epoch)
    return state


def _train_and_validate(
    setup: Setup,
    accelerator,
    cfg: TrainConfig,
    epoch,
    state,
    nets,
    splits,
    val_scans,
    val_labels,
) -> tuple[dict[str, float], dict[str, Candidate]]:
    """One epoch's training pass, then each set of weights scored on validation."""
    train_stats = train_one_epoch(
        model=setup.model,
        base_model=setup.base_model,
        loader=setup.train_loader,
        optimizer=setup.optimizer,
        scheduler=setup.scheduler,
        loss_fn=setup.loss_fn,
        mixup=setup.mixup,
        ema=setup.ema,
        accelerator=accelerator,
        cfg=cfg,
        epoch=epoch,
        state=state,
    )
    candidates = (
        validate(nets, setup.val_loader, accelerator, cfg, val_scans, val_labels)
        if splits.val
        else {}
    )
    return train_stats, candidates


def _loop(
    record: RunRecord,
    run: Run,
    accelerator: Accelerator,
    splits: Splits,
    setup: Setup,
    state: LoopState,
    *,
    aside: OldRunAside,
    described: dict | None,
) -> None:
    """The epochs: train, validate, checkpoint, keep the best export, one line per epoch."""
    cfg, ema, base_model = record.config, setup.ema, setup.base_model
    val_scans = [s.scan for s in splits.val]
    val_labels = np.array([s.label for s in splits.val])
    nets = {'live': base_model, 'ema': ema.module if ema is not None else None}
    # without validation (a refit, a cv_select=last fold) the kept weights are fixed in advance
    fixed_weights = splits.split.get('weights', 'live') if ema is not None else 'live'
    run_start, epochs_done_here = time.perf_counter(), 0
    curves_drawn = run_start  # a first epoch of 30 s or more draws them at once
    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        _reseed_loader(setup.train_loader, cfg, accelerator, epoch)
        try:
            train_stats, candidates = _train_and_validate(
                setup, accelerator, cfg, epoch, state, nets, splits, val_scans, val_labels
            )
        except TrainingError as e:  # diverged: say what the run can still continue from
            raise TrainingError(f'{e}; {kept_note(run.checkpoints_dir)}') from None
        row = _epoch_row(
            epoch,
            train_stats,
            setup.optimizer.param_groups[0]['lr'],
            candidates,
            time.perf_counter() - t0,
        )
        is_best, chosen = _update_best(state, candidates, cfg, epoch, fixed_weights)
        state.history.append(row)
        state.epoch = epoch + 1
        # checkpoint first, then the best export: a kill in between is repaired on resume
        try:
            save_checkpoint(accelerator, run.checkpoints_dir, state.to_dict(), ema)
        except CheckpointError as e:
            raise TrainingError(str(e)) from None
        aside.release()  # the new run has a checkpoint of its own: the replaced run can go
        weights = ema.module if chosen == 'ema' else base_model
        curves = curves_due(epoch, cfg.epochs, time.perf_counter() - curves_drawn, CURVES_EVERY_S)
        curves_drawn = time.perf_counter() if curves else curves_drawn
        # the main process writes; its error stops every process, not just itself
        stop_if(
            run_on_main(
                accelerator,
                lambda: _write_epoch_outputs(
                    run, state, weights if is_best else None, record, described, curves=curves
                ),
                'writing RUN/best and metrics.jsonl',
            )
        )
        if cfg.log_with:
            accelerator.log(
                {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                step=epoch + 1,
            )
        epochs_done_here += 1
        eta = (time.perf_counter() - run_start) / epochs_done_here * (cfg.epochs - epoch - 1)
        _logger.info(epoch_line(row, cfg.epochs, chosen, is_best, eta))


# ------------------------------------------------------------------------------------- one epoch


def train_one_epoch(
    *,
    model,
    base_model,
    loader,
    optimizer,
    scheduler,
    loss_fn,
    mixup,
    ema,
    accelerator,
    cfg: TrainConfig,
    epoch: int,
    state: LoopState,
) -> dict[str, float]:
    """One pass over the training loader; returns the mean training loss and img/s."""
    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)  # summed on device: no host sync per step
    seen = 0
    t0 = time.perf_counter()
    progress = Progress(
        cfg.progress,
        len(loader) * loader.total_batch_size,
        f'epoch {epoch + 1}/{cfg.epochs}',
        enabled=accelerator.is_main_process,
    )
    for step, (images, targets) in enumerate(loader):
        if cfg.channels_last and images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = loss_fn(model(images), targets)  # the loss
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.clip_grad:
                accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:  # one optimizer update: the schedule and the EMA follow it
            state.num_updates += 1
            scheduler.step_update(num_updates=state.num_updates)
            if ema is not None:
                ema.update(base_model, step=state.num_updates)
        loss_sum += loss.detach() * images.shape[0]
        seen += images.shape[0]
        progress.update(images.shape[0] * accelerator.num_processes)
        # occasional host sync: progress and the NaN guard
        if step % 50 == 0 or step == len(loader) - 1:
            # reduced over processes so that all of them stop together, not one while others wait
            loss_total, count = _reduce_totals(accelerator, loss_sum, seen)
            mean_loss = loss_total / max(count, 1)
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f'non-finite training loss ({mean_loss}) in epoch '
                    f'{epoch + 1}, step {step}: lower --lr, keep --clip-grad, or use '
                    f'--mixed-precision no'
                )
            progress.set_postfix(
                loss=f'{mean_loss:.4f}', lr=f'{optimizer.param_groups[0]["lr"]:.2e}'
            )
    progress.close()
    scheduler.step(epoch + 1)
    loss_total, count = _reduce_totals(accelerator, loss_sum, seen)
    return {'train_loss': loss_total / count, 'train_img_per_s': count / (time.perf_counter() - t0)}


def _reduce_totals(accelerator, loss_sum: torch.Tensor, seen: int) -> tuple[float, float]:
    """(summed loss, images) over all processes: one host sync."""
    totals = accelerator.reduce(
        torch.stack([loss_sum, torch.tensor(float(seen), device=loss_sum.device)]), 'sum'
    )
    return float(totals[0]), float(totals[1])


def validate(
    nets: dict[str, torch.nn.Module | None],
    loader,
    accelerator,
    cfg: TrainConfig,
    scans: list[str],
    labels: np.ndarray,
) -> dict[str, Candidate]:
    """Score each set of weights on the validation split at the operating point it would ship with.

    Per weights: one temperature fitted on the validation slices, then the threshold (Youden's J, or
    ``target_sensitivity``) on the calibrated scan probabilities, and every metric at that
    threshold, so a threshold-dependent ``best_metric`` selects exactly what the export will do.
    Chosen on the same scans it is scored on: optimistic, and said so in the log and the card.
    """
    positive = data.positive_index(cfg.classes)
    out = {}
    for name, net in nets.items():
        if net is None:
            continue
        probs, losses = predict_loader(
            net,
            loader,
            device=accelerator.device,
            precision=accelerator.mixed_precision,
            channels_last=cfg.channels_last,
            accelerator=accelerator,
            with_loss=True,
        )
        if not (np.isfinite(probs).all() and np.isfinite(losses).all()):
            # fit_temperature and the metrics below need finite outputs: the weights diverged
            raise TrainingError(
                f'the {name} weights give non-finite outputs on the validation slices '
                f'(training diverged): lower --lr, keep --clip-grad, or use --mixed-precision no'
            )
        point = metrics.operating_point(probs, labels, scans, positive, cfg.target_sensitivity)
        y = (labels == positive).astype(np.int64)
        report = metrics.slice_and_scan_metrics(scans, y, point['p_pos'], point['threshold'])
        out[name] = Candidate(
            report=report,
            loss=float(losses.mean()),
            threshold=point['threshold'],
            threshold_rule=point['threshold_rule'],
            temperature=point['temperature'],
            slices=len(probs),
        )
    return out


def _epoch_row(
    epoch: int, train_stats: dict, lr: float, candidates: dict[str, Candidate], seconds: float
) -> dict:
    """One line of metrics.jsonl: everything measured this epoch, flat."""
    row = {'epoch': epoch + 1, **train_stats, 'lr': lr}
    for name, c in candidates.items():
        prefix = 'val' if name == 'live' else 'ema_val'
        row.update(
            {
                f'{prefix}_loss': c.loss,
                f'{prefix}_slices': c.slices,
                f'{prefix}_threshold': c.threshold,
                f'{prefix}_temperature': c.temperature,
            }
        )
        for level in ('slice', 'scan'):
            for key in ('accuracy', 'balanced_accuracy', 'auc', 'sensitivity', 'specificity', 'f1'):
                row[f'{prefix}_{level}_{key}'] = c.report[level][key]
    row['epoch_time_s'] = seconds
    return row


def _update_best(
    state: LoopState,
    candidates: dict[str, Candidate],
    cfg: TrainConfig,
    epoch: int,
    fixed_weights: str = 'live',
) -> tuple[bool, str]:
    """Pick the better of live/EMA this epoch; it becomes best when it beats the best so far.

    Ties (e.g. AUC 1.0 on an easy set) are broken by the lower validation loss. Without validation
    the last epoch's ``fixed_weights`` are kept: nothing is selected.
    """
    if not candidates:
        state.best = BestEpoch(epoch=epoch + 1, weights=fixed_weights, metric=None, value=None)
        return True, fixed_weights
    level, key = cfg.best_metric.split('_', 1)

    def score(c: Candidate):
        value = c.report[level][key]
        return (-math.inf if value is None else value, -c.loss)

    name, chosen = max(candidates.items(), key=lambda item: score(item[1]))
    best = state.best
    if best is not None and score(chosen) <= (best.value, -best.val_loss):
        return False, name
    value = chosen.report[level][key]
    state.best = BestEpoch(
        epoch=epoch + 1,
        weights=name,
        metric=cfg.best_metric,
        value=-math.inf if value is None else value,
        val_loss=chosen.loss,
        threshold=chosen.threshold,
        threshold_source='validation',
        threshold_rule=chosen.threshold_rule,
        temperature=chosen.temperature,
        val_scan=chosen.report['scan'],
        val_slice=chosen.report['slice'],
    )
    return True, name


def epoch_line(row: dict, epochs: int, chosen: str, is_best: bool, eta_s: float) -> str:
    """One line per epoch, under 120 characters: what people look at; the rest is in
    metrics.jsonl."""
    prefix = 'val' if chosen == 'live' else 'ema_val'
    parts = [f'epoch {row["epoch"]}/{epochs}', f'loss {fmt(row["train_loss"])}']
    if f'{prefix}_loss' in row:
        parts.append(f'val {fmt(row[f"{prefix}_loss"])}')
        parts.append(
            f'AUC {fmt(row[f"{prefix}_scan_auc"])} acc {fmt(row[f"{prefix}_scan_accuracy"])}'
            + (' (ema)' if chosen == 'ema' else '')
        )
    parts += [
        f'lr {row["lr"]:.1e}',
        f'{row["train_img_per_s"]:.0f} img/s',
        fmt_duration(row['epoch_time_s']),
        f'eta {fmt_duration(eta_s)}',
    ]
    return ' | '.join(parts) + (' *' if is_best else '')


# --------------------------------------------------------------------------------- set-up helpers


def make_accelerator(
    cfg: TrainConfig, run: Run | None = None, precision: Precision | None = None
) -> Accelerator:
    """The run's Accelerator; ``precision`` defaults to ``cfg.mixed_precision`` resolved against
    Accelerate's own configuration (``train.precision``)."""
    precision = precision or resolve_precision(cfg.mixed_precision)
    project = None
    if run is not None:  # trackers (TensorBoard, W&B) log under RUN/logs
        project = ProjectConfiguration(project_dir=str(run.path), logging_dir=str(run.logs_dir))
    return Accelerator(
        mixed_precision=precision.name,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.log_with,
        project_config=project,
        # non_blocking: host-to-GPU copies from pinned memory overlap with compute
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=cfg.seed, non_blocking=torch.cuda.is_available()
        ),
    )


def create_model(cfg: TrainConfig) -> torch.nn.Module:
    """Any timm model, scratch-initialised, 1 channel, our classes and preprocessing in its
    pretrained cfg.

    Models with a fixed input size (ViTs) are built for ``img_size``; others adapt to any size.
    """
    n = len(cfg.classes)
    overlay = dict(
        input_size=(1, cfg.img_size, cfg.img_size),
        mean=MEAN,
        std=STD,
        crop_pct=CROP_PCT,
        interpolation=INTERPOLATION,
        num_classes=n,
        label_names=tuple(cfg.classes),
    )
    sized = {'img_size': cfg.img_size} if _fixed_input_size(cfg.model) else {}
    return timm.create_model(
        cfg.model,
        pretrained=False,
        num_classes=n,
        in_chans=1,
        drop_path_rate=cfg.drop_path,
        pretrained_cfg_overlay=overlay,
        **sized,
    )


def _fixed_input_size(model_name: str) -> bool:
    try:
        return bool(timm.models.get_pretrained_cfg(model_name).fixed_input_size)
    except (AttributeError, RuntimeError):
        return False


def make_ema(cfg: TrainConfig, model: torch.nn.Module, updates_per_epoch: int) -> ModelEmaV3 | None:
    """timm's ModelEmaV3 whose decay reaches ``cfg.ema_decay`` when the lr warmup ends.

    timm's warmup raises the decay as ``1 - (1 + t / gamma) ** (-2/3)`` for update t; with its
    default gamma = 1 a decay of 0.9998 needs ~350,000 updates (a 100-epoch ADNI run has ~13,500),
    so the configured value would never run. We choose gamma so that the configured decay is reached
    after ``max(warmup_epochs, 1)`` epochs of updates and held from then on.
    """
    if not cfg.ema:
        return None
    power = 2 / 3
    reach = max(cfg.warmup_epochs, 1) * updates_per_epoch
    gamma = reach / ((1 - cfg.ema_decay) ** (-1 / power) - 1)
    return ModelEmaV3(
        model, decay=cfg.ema_decay, use_warmup=True, warmup_gamma=gamma, warmup_power=power
    )


def _make_loaders(cfg, train_slices, val_slices, train_tf, eval_tf, accelerator):
    batches = len(train_slices) // cfg.batch_size
    if batches < 1:
        raise TrainingError(
            f'batch_size={cfg.batch_size} is larger than the training set ({len(train_slices)} '
            f'slices); lower --batch-size'
        )
    # data_on_device auto: only where it can help (CUDA) and the user keeps the cache on
    wanted = cfg.data_on_device == 'true' or (
        cfg.data_on_device == 'auto' and cfg.cache and accelerator.device.type == 'cuda'
    )
    shown = cfg.progress if accelerator.is_main_process else 'none'  # one voice
    cache = (
        data.preload(train_slices + val_slices, cfg.num_workers, shown)
        if cfg.cache or wanted
        else None
    )
    try:
        on_device = device_batches(
            cfg.data_on_device if wanted else 'false',
            cache,
            train_slices,
            val_slices,
            train_tf,
            eval_tf,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            device=accelerator.device,
            num_processes=accelerator.num_processes,
            process_index=accelerator.process_index,
            agree=lambda ok: first_error(accelerator, None if ok else 'off') is None,
        )
    except DeviceDataError as e:
        raise TrainingError(
            f'data_on_device=true: {e}; use --data-on-device auto (the DataLoader instead)'
        ) from None
    if on_device is not None:
        return on_device
    pin = accelerator.device.type == 'cuda'
    train_loader = data.create_loader(
        data.SliceDataset(train_slices, train_tf, cache),
        cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        seed=cfg.seed,
    )
    val_loader = (
        data.create_loader(
            data.SliceDataset(val_slices, eval_tf, cache),
            cfg.batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            pin_memory=pin,
            seed=cfg.seed,
        )
        if val_slices
        else None
    )
    return train_loader, val_loader


def _make_loss(cfg: TrainConfig):
    """(mixup or None, training loss): timm's Mixup + SoftTargetCrossEntropy, or (smoothed)
    cross-entropy."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            label_smoothing=cfg.smoothing,
            num_classes=len(cfg.classes),
        )
        return mixup, SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return None, torch.nn.CrossEntropyLoss()


def _reseed_loader(train_loader, cfg: TrainConfig, accelerator, epoch: int) -> None:
    # seedable sampler: the shuffle depends on (seed, epoch), so resume replays it
    train_loader.set_epoch(epoch)
    if getattr(train_loader, 'generator', None) is not None:
        # worker seeds are drawn from this generator: make them differ per process (the sampler
        # reseeds it from (seed, epoch) afterwards, so the shared shuffle order is unchanged)
        train_loader.generator.manual_seed(
            cfg.seed * 1_000_003 + accelerator.process_index * 7_919 + epoch
        )


def _tracker_config(cfg: TrainConfig) -> dict[str, Any]:
    """TensorBoard's hparams take scalars and strings only."""
    return {
        k: ','.join(map(str, v)) if isinstance(v, list) else ('null' if v is None else v)
        for k, v in config_to_dict(cfg).items()
    }


# ------------------------------------------------------------------------------- run folder outputs


def _evaluate_on_test(run: Run, record: RunRecord, splits: Splits, accelerator) -> dict | None:
    """The exported best model on the (already checked) test slices, into RUN/eval."""
    outcome: dict[str, Any] = {}

    def evaluate():
        outcome['metrics'] = evaluate_on_test(
            str(run.path), run.eval_dir().path, record, splits.test
        )

    stop_if(run_on_main(accelerator, evaluate, 'evaluating the best model on the test split'))
    return outcome.get('metrics')
