"""The training loop: timm model, transforms, optimizer, schedule, mixup and EMA under Accelerate.

Reads top to bottom: ``train()`` checks everything it can before any work (config, data, split,
leakage, unreadable files), makes room for the run, then ``_fit()`` runs the epochs: train
(``train_one_epoch``: where the loss is computed), validate live and EMA weights on the
patient-level validation split (``validate``), keep the best export in ``RUN/best`` and save an
atomic checkpoint for ``--resume``. What a run remembers is its ``RunRecord``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
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

from . import data, export, metrics, plots
from .checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict, fit_warmup
from .display import fmt, fmt_duration
from .distributed import run_on_main
from .files import read_json, write_json
from .hardware import bf16_supported
from .inference import predict_loader
from .models import CROP_PCT, INTERPOLATION, MEAN, STD
from .progress import Progress
from .run_record import RunRecord

_logger = logging.getLogger(__name__)

__all__ = [
    'TrainingError',
    'TrainResult',
    'Splits',
    'OldRunAside',
    'refuse_existing_run',
    'train',
    'train_one_epoch',
    'validate',
    'make_accelerator',
    'create_model',
    'make_ema',
    'check_data',
    'load_splits',
]

SPLIT_NAME = 'split.json'


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass
class TrainResult:
    run_dir: Path
    record: RunRecord
    best: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_metrics: dict[str, Any] | None = None
    model: torch.nn.Module | None = None  # final live weights (unwrapped), for callers and tests


@dataclass
class Splits:
    """The slices of each part and the JSON-able split (patient ids) that ``split.json`` records."""

    train: list[data.Slice]
    val: list[data.Slice]
    test: list[data.Slice]
    split: dict[str, Any]


@dataclass
class Candidate:
    """One set of weights (live or EMA) as scored on
    validation this epoch, at its own operating point.
    """

    report: dict[str, Any]  # slice- and patient-level metrics at ``threshold``
    loss: float
    threshold: float
    temperature: float
    slices: int


def train(
    record: RunRecord,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    split: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``record.config`` on ``record.data_dir`` into
    ``run_dir``; evaluate on test if ``record.eval_test``.

    ``resume`` continues ``run_dir`` from its last checkpoint on its recorded split; ``overwrite``
    replaces an existing run, but only once every check has passed; ``split`` imposes a train/val
    split (cross-validation folds) instead of carving one.
    """
    run_dir = Path(run_dir)
    accelerator = make_accelerator(record.config, run_dir)
    if not accelerator.is_main_process:  # one voice: other processes only report errors
        logging.getLogger('adni_timm').setLevel(logging.ERROR)
    if resume:
        record.check_processes(accelerator.num_processes)
        split = read_json(run_dir / SPLIT_NAME)  # never re-split: resume keeps who is in validation
    elif not overwrite:
        refuse_existing_run(run_dir)
    cfg, warmup_note = fit_warmup(record.config)  # a smoke run's warmup must leave room to train
    if warmup_note:
        _logger.info(warmup_note)
    record = dataclasses.replace(record, config=cfg)
    if not resume:  # a resumed run keeps the hardware it started on (check_processes above)
        record = record.with_hardware(accelerator)

    # every check that can fail runs before an old run is touched or a weight is trained
    splits = load_splits(cfg, record.data_dir, recorded=split, check_test=record.eval_test)
    # --overwrite: the old run moves aside now and is deleted only once the new one has a checkpoint
    with OldRunAside(run_dir, accelerator, active=overwrite and not resume) as aside:
        if accelerator.is_main_process and not resume:
            run_dir.mkdir(parents=True, exist_ok=True)
            # recorded before training: resume and evaluate.py read who was in validation
            write_json(run_dir / SPLIT_NAME, splits.split)
            record.save(run_dir)
        return _fit(record, run_dir, accelerator, splits, resume=resume, aside=aside)


def _fit(
    record: RunRecord,
    run_dir: Path,
    accelerator: Accelerator,
    splits: Splits,
    *,
    resume: bool,
    aside: OldRunAside,
) -> TrainResult:
    cfg, main = record.config, accelerator.is_main_process

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

    # ---- resume: weights, optimizer, RNG states, loop state; the record gains one line
    state = {'epoch': 0, 'num_updates': 0, 'history': [], 'best': None}
    if resume:
        ckpt = find_checkpoint(run_dir / 'checkpoints')
        if ckpt is None:
            raise TrainingError(
                f'--resume: no complete checkpoint in {run_dir / "checkpoints"}; '
                f'start a new run without --resume (or with --overwrite)'
            )
        state = load_checkpoint(accelerator, ckpt, ema)
        scheduler.step_update(num_updates=state['num_updates'])
        if main:
            record.append_resume(run_dir, accelerator, after_epoch=state['epoch'])
            _repair_best_export(run_dir, state, base_model, ema, record)
        _logger.info('resumed from %s after epoch %d', ckpt, state['epoch'])
    if cfg.log_with:
        accelerator.init_trackers(run_dir.name, config=_tracker_config(cfg))

    # ---- the loop
    val_patients = [s.patient for s in splits.val]
    val_labels = np.array([s.label for s in splits.val])
    nets = {'live': base_model, 'ema': ema.module if ema is not None else None}
    run_start, epochs_done_here = time.perf_counter(), 0
    for epoch in range(state['epoch'], cfg.epochs):
        t0 = time.perf_counter()
        _reseed_loader(train_loader, cfg, accelerator, epoch)
        train_stats = train_one_epoch(
            model=model,
            base_model=base_model,
            loader=train_loader,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_fn=train_loss_fn,
            mixup=mixup,
            ema=ema,
            accelerator=accelerator,
            cfg=cfg,
            epoch=epoch,
            state=state,
        )
        candidates = (
            validate(nets, val_loader, accelerator, cfg, val_patients, val_labels)
            if splits.val
            else {}
        )
        row = _epoch_row(
            epoch,
            train_stats,
            optimizer.param_groups[0]['lr'],
            candidates,
            time.perf_counter() - t0,
        )
        is_best, chosen = _update_best(state, candidates, cfg, epoch)
        state['history'].append(row)
        state['epoch'] = epoch + 1
        # checkpoint first, then the best export: a kill in
        # between is repaired on resume (_repair_best_export)
        try:
            save_checkpoint(accelerator, run_dir / 'checkpoints', state, ema)
        except CheckpointError as e:
            raise TrainingError(str(e)) from None
        aside.release()  # the new run has a checkpoint of its own: the replaced run can go
        weights = ema.module if chosen == 'ema' else base_model
        # the main process writes; its error stops every process, not just itself
        _stop_if(
            run_on_main(
                accelerator,
                lambda: _write_epoch_outputs(run_dir, state, weights if is_best else None, record),
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

    if cfg.log_with:
        accelerator.end_training()
    result = TrainResult(
        run_dir=run_dir,
        record=record,
        best=state['best'],
        history=state['history'],
        model=base_model,
    )
    if record.eval_test:  # once, at the end: test never steers training or model selection
        result.eval_metrics = _evaluate_on_test(run_dir, record, splits, accelerator)
    return result


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
    state: dict,
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
            state['num_updates'] += 1
            scheduler.step_update(num_updates=state['num_updates'])
            if ema is not None:
                ema.update(base_model, step=state['num_updates'])
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
                    f'{epoch + 1}, step {step}; the last good checkpoint is kept. '
                    f'Lower --lr, keep --clip-grad, or use --mixed-precision no'
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
    patients: list[str],
    labels: np.ndarray,
) -> dict[str, Candidate]:
    """Score each set of weights on the validation split at the operating point it would ship with.

    Per weights: one temperature fitted on the validation slices, then the threshold (Youden's J, or
    ``target_sensitivity``) on the calibrated patient probabilities, and every metric at that
    threshold, so a threshold-dependent ``best_metric`` selects exactly what the export will do.
    Chosen on the same patients it is scored on: optimistic, and said so in the log and the card.
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
        point = metrics.operating_point(probs, labels, patients, positive, cfg.target_sensitivity)
        y = (labels == positive).astype(np.int64)
        report = metrics.slice_and_patient_metrics(patients, y, point['p_pos'], point['threshold'])
        out[name] = Candidate(
            report=report,
            loss=float(losses.mean()),
            threshold=point['threshold'],
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
        for level in ('slice', 'patient'):
            for key in ('accuracy', 'balanced_accuracy', 'auc', 'sensitivity', 'specificity', 'f1'):
                row[f'{prefix}_{level}_{key}'] = c.report[level][key]
    row['epoch_time_s'] = seconds
    return row


def _update_best(
    state, candidates: dict[str, Candidate], cfg: TrainConfig, epoch: int
) -> tuple[bool, str]:
    """Pick the better of live/EMA this epoch; it becomes best when it beats the best so far.

    Ties (e.g. AUC 1.0 on an easy set) are broken by the lower validation loss.
    """
    if not candidates:  # no validation split: the last epoch is the best we know
        state['best'] = {
            'epoch': epoch + 1,
            'weights': 'live',
            'metric': None,
            'value': None,
            'threshold': 0.5,
            'threshold_source': 'fixed',
            'temperature': 1.0,
        }
        return True, 'live'
    level, key = cfg.best_metric.split('_', 1)

    def score(c: Candidate):
        value = c.report[level][key]
        return (-math.inf if value is None else value, -c.loss)

    name, chosen = max(candidates.items(), key=lambda item: score(item[1]))
    best = state['best']
    if best is not None and score(chosen) <= (best['value'], -best['val_loss']):
        return False, name
    value = chosen.report[level][key]
    state['best'] = {
        'epoch': epoch + 1,
        'weights': name,
        'metric': cfg.best_metric,
        'value': -math.inf if value is None else value,
        'val_loss': chosen.loss,
        'threshold': chosen.threshold,
        'threshold_source': 'validation',
        'temperature': chosen.temperature,
        'val_patient': chosen.report['patient'],
        'val_slice': chosen.report['slice'],
    }
    return True, name


def epoch_line(row: dict, epochs: int, chosen: str, is_best: bool, eta_s: float) -> str:
    """One line per epoch, under 120 characters: what
    people look at; the rest is in metrics.jsonl.
    """
    prefix = 'val' if chosen == 'live' else 'ema_val'
    parts = [f'epoch {row["epoch"]}/{epochs}', f'loss {fmt(row["train_loss"])}']
    if f'{prefix}_loss' in row:
        parts.append(f'val {fmt(row[f"{prefix}_loss"])}')
        parts.append(
            f'AUC {fmt(row[f"{prefix}_patient_auc"])} acc {fmt(row[f"{prefix}_patient_accuracy"])}'
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


def make_accelerator(cfg: TrainConfig, run_dir: Path | None = None) -> Accelerator:
    precision = cfg.mixed_precision
    if precision == 'auto':
        if torch.cuda.is_available():
            precision = 'bf16' if bf16_supported() else 'fp16'
        else:
            precision = 'no'  # autocast on CPU is slower than fp32 here
    project = None
    if run_dir is not None:  # trackers (TensorBoard, W&B) log under RUN/logs
        project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / 'logs'))
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.log_with,
        project_config=project,
        # non_blocking: host-to-GPU copies from pinned memory overlap with compute
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=cfg.seed, non_blocking=torch.cuda.is_available()
        ),
    )


def create_model(cfg: TrainConfig) -> torch.nn.Module:
    """Any timm model, scratch-initialised, 1 channel,
    our classes and preprocessing in its pretrained cfg.

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


def check_data(
    cfg: TrainConfig, data_dir, check_test: bool = False
) -> tuple[list[data.Slice], list[data.Slice]]:
    """(train, test) slices, checked before any training: layout,
    leakage between the splits, unreadable files (of test too when it
    will be evaluated; ``skip_bad_images`` drops them with a count)."""
    scan = dict(classes=tuple(cfg.classes), file_is_patient=cfg.file_is_patient)
    train_all = data.scan_split(data_dir, 'train', **scan)
    test = data.scan_split(data_dir, 'test', **scan) if (Path(data_dir) / 'test').is_dir() else []
    if test:
        data.check_no_leakage(train_all, test, names=('train', 'test'))
    train_all = data.resolve_bad_images(
        train_all, skip_bad=cfg.skip_bad_images, num_workers=cfg.num_workers, what='train'
    )
    if check_test:
        if not test:
            raise TrainingError(
                f'--eval-test: {data_dir} has no test split to evaluate '
                f'on; drop --eval-test or add {Path(data_dir) / "test"}'
            )
        test = data.resolve_bad_images(
            test, skip_bad=cfg.skip_bad_images, num_workers=cfg.num_workers, what='test'
        )
    return train_all, test


def load_splits(
    cfg: TrainConfig, data_dir, recorded: dict[str, Any] | None = None, check_test: bool = False
) -> Splits:
    """The checked data split into train and validation:
    by patient (or ``recorded``, e.g. on resume).
    """
    train_all, test = check_data(cfg, data_dir, check_test)
    if recorded is not None:
        split = dict(recorded)
        _warn_new_patients(train_all, split)
    elif cfg.split_level == 'slice':
        _logger.warning(
            'split_level=slice: slices of one patient land in both train and val. This LEAKS '
            'patients and inflates validation scores; it exists only to reproduce the reference.'
        )
        split = data.split_slices(train_all, cfg.val_fraction, cfg.seed)
    else:
        split = data.split_patients(train_all, cfg.val_fraction, cfg.seed)
    if test:
        split['test'] = sorted({s.patient for s in test})
    return Splits(
        train=data.select(train_all, split, 'train'),
        val=data.select(train_all, split, 'val'),
        test=test,
        split=split,
    )


def _warn_new_patients(slices: list[data.Slice], split: dict[str, Any]) -> None:
    if split.get('level') != 'patient':
        return
    known = set(split['train']) | set(split['val'])
    new = sorted({s.patient for s in slices} - known)
    if new:
        _logger.warning(
            '%d patient(s) in the data are not in the recorded split and are not used: %s',
            len(new),
            ', '.join(new[:5]) + (' ...' if len(new) > 5 else ''),
        )


def _make_loaders(cfg, train_slices, val_slices, train_tf, eval_tf, accelerator):
    batches = len(train_slices) // cfg.batch_size
    if batches < 1:
        raise TrainingError(
            f'batch_size={cfg.batch_size} is larger than the training set ({len(train_slices)} '
            f'slices); lower --batch-size'
        )
    cache = (
        data.preload(train_slices + val_slices, num_workers=cfg.num_workers) if cfg.cache else None
    )
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
    """(mixup or None, training loss): timm's Mixup +
    SoftTargetCrossEntropy, or (smoothed) cross-entropy.
    """
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


def refuse_existing_run(run_dir: Path) -> None:
    """A new run never lands in a folder that holds something (that is --resume or --overwrite)."""
    if run_dir.exists() and any(run_dir.iterdir()):
        raise TrainingError(
            f'{run_dir} already exists and is not empty; continue it with --resume, '
            f'replace it with --overwrite, or choose another --output-dir'
        )


class OldRunAside:
    """``--overwrite`` without losing work: the old run moves aside only after every check has
    passed, is deleted once the new run has its first checkpoint (``release``), and comes back if
    the new run fails before that."""

    def __init__(self, run_dir: Path, accelerator: Accelerator, active: bool):
        self.run_dir, self.accelerator = run_dir, accelerator
        self.active = active and run_dir.exists() and any(run_dir.iterdir())
        self.aside = run_dir.with_name(f'.{run_dir.name}.replaced')

    def __enter__(self) -> OldRunAside:
        if self.active and self.accelerator.is_main_process:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.run_dir.rename(self.aside)
            _logger.warning(
                '--overwrite: %s moved to %s; deleted once the new run has its first checkpoint',
                self.run_dir,
                self.aside,
            )
        self.accelerator.wait_for_everyone()
        return self

    def release(self) -> None:
        if self.active and self.accelerator.is_main_process:
            shutil.rmtree(self.aside, ignore_errors=True)
        self.active = False

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.active and exc_type is not None and self.accelerator.is_main_process:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.aside.rename(self.run_dir)
            _logger.warning(
                'the new run failed before its first checkpoint: %s restored', self.run_dir
            )


def _stop_if(error: str | None) -> None:
    if error:
        raise TrainingError(
            f'{error}; the last checkpoint is kept, continue with --resume once fixed'
        )


# ------------------------------------------------------------------------------- run folder outputs


def _best_extra(best: dict, record: RunRecord) -> dict[str, Any]:
    """What RUN/best/config.json keeps under 'adni_timm'
    (read by evaluate.py, the card and the demo).
    """
    cfg = record.config
    return {
        'threshold': best['threshold'],
        'threshold_source': best['threshold_source'],
        'temperature': best.get('temperature', 1.0),
        'classes': list(cfg.classes),
        'weights': best['weights'],
        'epoch': best['epoch'],
        'best_metric': best['metric'],
        'best_value': best['value'],
        'model_name': cfg.model,
        'img_size': cfg.img_size,
        'data': record.data_note,
        'precision': record.mixed_precision,
        'file_is_patient': cfg.file_is_patient,
        'split_level': cfg.split_level,
    }


def _write_epoch_outputs(run_dir: Path, state: dict, best_weights, record: RunRecord) -> None:
    if best_weights is not None:
        export.export_model(
            best_weights, run_dir / 'best', extra=_best_extra(state['best'], record)
        )
    context = plots.FigureContext(record.config.model, 'validation', record.synthetic)
    _write_history(run_dir, state['history'], state['best'], context)


def _write_history(
    run_dir: Path,
    history: list[dict],
    best: dict | None,
    context: plots.FigureContext | None = None,
) -> None:
    """metrics.jsonl rewritten whole from the (checkpointed)
    history, so a resumed run stays consistent.
    """
    tmp = run_dir / 'metrics.jsonl.tmp'
    tmp.write_text(''.join(json.dumps(row) + '\n' for row in history))
    tmp.replace(run_dir / 'metrics.jsonl')
    plots.plot_curves(
        history,
        run_dir / 'curves.png',
        best_epoch=(best or {}).get('epoch'),
        best_weights=(best or {}).get('weights'),
        context=context,
    )


def _repair_best_export(run_dir: Path, state: dict, base_model, ema, record: RunRecord) -> None:
    """A kill between the checkpoint and the best export leaves RUN/best one best behind: redo it.

    Only the last checkpointed epoch can be missing, and its weights are the ones just loaded.
    """
    best = state.get('best')
    if not best or best['epoch'] != state['epoch']:
        return
    try:
        exported_epoch = export.export_extra(run_dir / 'best').get('epoch')
    except export.ExportError:
        exported_epoch = None
    if exported_epoch != best['epoch']:
        weights = ema.module if best['weights'] == 'ema' and ema is not None else base_model
        export.export_model(weights, run_dir / 'best', extra=_best_extra(best, record))
        _logger.info('re-exported the best model (epoch %d) to %s', best['epoch'], run_dir / 'best')


def _evaluate_on_test(run_dir: Path, record: RunRecord, splits: Splits, accelerator) -> dict | None:
    """The exported best model on the (already checked) test slices, into RUN/eval."""
    from . import evaluation

    outcome: dict[str, Any] = {}

    def run():
        outcome['metrics'] = evaluation.evaluate(
            str(run_dir),
            record.data_dir,
            split='test',
            output_dir=run_dir / 'eval',
            classes=record.config.classes,
            num_workers=min(record.config.num_workers, 4),
            slices=splits.test,
        )

    _stop_if(run_on_main(accelerator, run, 'evaluating the best model on the test split'))
    return outcome.get('metrics')
