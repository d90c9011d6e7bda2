"""The training loop: timm model, transforms, optimizer, schedule, mixup and EMA under Accelerate.

Reads top to bottom: ``train()`` sets up the run, then each epoch trains
(``train_one_epoch``), validates live and EMA weights on the patient-level
validation split (``validate``), keeps the best export in ``RUN/best`` and
saves an atomic checkpoint for ``--resume``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import timm.optim
import timm.scheduler
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from . import data, hub, metrics, plots
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict, make_config
from .hardware import bf16_supported
from .models import CROP_PCT, INTERPOLATION, MEAN, STD

_logger = logging.getLogger(__name__)

__all__ = ['TrainingError', 'TrainResult', 'read_run_record', 'resumed_config', 'train']


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass
class TrainResult:
    run_dir: Path
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_metrics: dict[str, Any] | None = None
    model: torch.nn.Module | None = None  # final live weights (unwrapped), for callers and tests


def train(cfg: TrainConfig, data_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
          resume: bool = False, overwrite: bool = False, eval_test: bool = False,
          data_note: str | None = None) -> TrainResult:
    run_dir = Path(output_dir)
    accelerator = make_accelerator(cfg, run_dir)
    main = accelerator.is_main_process
    if not main:  # one voice: other processes only report errors
        logging.getLogger('adni_timm').setLevel(logging.ERROR)
    if resume:
        _check_same_processes(run_dir, accelerator)
    else:
        _claim_run_dir(run_dir, overwrite, accelerator)

    # ---- data: scan, split by patient, check for leakage and bad files before any training
    train_slices, val_slices, test_slices, split = load_splits(cfg, data_dir)
    if eval_test and not test_slices:
        raise TrainingError(f'--eval-test: {data_dir} has no test split to evaluate on; drop --eval-test or add '
                            f'{Path(data_dir) / "test"}')
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / 'split.json', split)
        _write_yaml(run_dir / 'train_config.yaml', _run_record(cfg, data_dir, data_note, eval_test, accelerator))

    # ---- model and transforms (the eval transform is the one timm resolves for the exported model)
    set_seed(cfg.seed)  # the same initial weights on every process
    base_model = create_model(cfg).to(accelerator.device)
    train_tf, eval_tf = data.build_transforms(
        base_model, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), hflip=cfg.hflip,
        color_jitter=cfg.color_jitter, auto_augment=cfg.auto_augment, re_prob=cfg.re_prob)
    train_loader, val_loader = _make_loaders(cfg, train_slices, val_slices, train_tf, eval_tf, accelerator)
    if cfg.channels_last and accelerator.device.type == 'cuda':
        base_model = base_model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(base_model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    if cfg.compile:
        base_model.compile()  # in place: state-dict keys stay plain, so checkpoints resume with or without it
    set_seed(cfg.seed + accelerator.process_index)  # but different drop-path and augmentation draws per process

    # ---- optimisation
    optimizer = timm.optim.create_optimizer_v2(base_model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(base_model, optimizer, train_loader, val_loader)
    updates_per_epoch = max(1, math.ceil(len(train_loader) / cfg.grad_accum_steps))  # per process, after sharding
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    mixup, train_loss_fn = _make_loss(cfg)

    # ---- resume
    state = {'epoch': 0, 'num_updates': 0, 'history': [], 'best': None}
    if resume:
        ckpt = find_checkpoint(run_dir / 'checkpoints')
        if ckpt is None:
            raise TrainingError(f'--resume: no complete checkpoint in {run_dir / "checkpoints"}; '
                                f'start a new run without --resume (or with --overwrite)')
        state = load_checkpoint(accelerator, ckpt, ema)
        scheduler.step_update(num_updates=state['num_updates'])  # the lr is a function of the update count
        if main:
            _repair_best_export(run_dir, state, base_model, ema, cfg, data_note)
        _logger.info('resumed from %s after epoch %d', ckpt, state['epoch'])
    if cfg.log_with:
        accelerator.init_trackers(run_dir.name, config=_tracker_config(cfg))

    # ---- the loop
    val_patients = [s.patient for s in val_slices]
    positive = data.positive_index(cfg.classes)
    val_labels = np.array([int(s.label == positive) for s in val_slices])  # AD vs rest
    for epoch in range(state['epoch'], cfg.epochs):
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)  # seedable sampler: the shuffle depends on (seed, epoch), so resume replays it
        if getattr(train_loader, 'generator', None) is not None:
            # worker seeds are drawn from this generator: make them differ per process (the sampler reseeds it
            # from (seed, epoch) afterwards, so the shared shuffle order is unchanged)
            train_loader.generator.manual_seed(cfg.seed * 1_000_003 + accelerator.process_index * 7_919 + epoch)
        train_stats = train_one_epoch(
            model, base_model, train_loader, optimizer, scheduler, train_loss_fn, mixup, ema, accelerator, cfg,
            epoch, state)
        row = {'epoch': epoch + 1, **train_stats, 'lr': optimizer.param_groups[0]['lr']}
        candidates = {}
        nets = {'live': base_model, 'ema': ema.module if ema is not None else None}
        for name, net in nets.items():
            if net is None or not val_slices:
                continue
            probs, val_loss = validate(net, val_loader, accelerator)
            p_pos = probs[:, positive]
            report = metrics.slice_and_patient_metrics(val_patients, val_labels, p_pos)
            prefix = 'val' if name == 'live' else 'ema_val'
            row[f'{prefix}_loss'] = val_loss
            row[f'{prefix}_slices'] = int(len(probs))
            for level in ('slice', 'patient'):
                for key in ('accuracy', 'balanced_accuracy', 'auc', 'sensitivity', 'specificity'):
                    row[f'{prefix}_{level}_{key}'] = report[level][key]
            _, y, p = metrics.patient_level(val_patients, val_labels, p_pos)
            candidates[name] = (report, val_loss, metrics.youden_threshold(y, p))
        row['epoch_time_s'] = time.perf_counter() - t0

        is_best, chosen = _update_best(state, row, candidates, cfg, epoch)
        state['history'].append(row)
        state['epoch'] = epoch + 1
        # checkpoint first, then the best export: a kill in between is repaired on resume (_repair_best_export)
        save_checkpoint(accelerator, run_dir / 'checkpoints', state, ema)
        if main:
            if is_best:
                weights = ema.module if chosen == 'ema' else base_model
                hub.export_model(weights, run_dir / 'best', extra=_best_extra(state['best'], cfg, data_note))
            _write_history(run_dir, state['history'])
        if cfg.log_with:
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                            step=epoch + 1)
        _logger.info(_epoch_line(row, cfg, is_best))

    if cfg.log_with:
        accelerator.end_training()
    result = TrainResult(run_dir=run_dir, best=state['best'], history=state['history'], model=base_model)
    try:
        if eval_test and main:
            from . import evaluation
            result.eval_metrics = evaluation.evaluate(
                str(run_dir), data_dir, split='test', output_dir=run_dir / 'eval', classes=cfg.classes,
                num_workers=min(cfg.num_workers, 4))
    finally:  # other processes wait here; an error on the main process must not leave them hanging
        accelerator.wait_for_everyone()
    return result


def train_one_epoch(model, base_model, loader, optimizer, scheduler, loss_fn, mixup, ema, accelerator, cfg,
                    epoch, state) -> dict[str, float]:
    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)  # summed on device: no host sync per step
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(loader) * loader.total_batch_size if hasattr(loader, 'total_batch_size') else None,
               unit='img', unit_scale=True, desc=f'epoch {epoch + 1}/{cfg.epochs}', leave=False, dynamic_ncols=True,
               disable=not accelerator.is_main_process)
    for step, (images, targets) in enumerate(loader):
        if cfg.channels_last and images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = loss_fn(model(images), targets)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.clip_grad:
                accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            state['num_updates'] += 1
            scheduler.step_update(num_updates=state['num_updates'])
            if ema is not None:
                ema.update(base_model, step=state['num_updates'])
        loss_sum += loss.detach() * images.shape[0]
        seen += images.shape[0]
        bar.update(images.shape[0] * accelerator.num_processes)
        if step % 50 == 0 or step == len(loader) - 1:  # occasional host sync: progress and the NaN guard
            # reduced over processes so that all of them stop together, not one while others wait
            loss_total, count = _reduce_totals(accelerator, loss_sum, seen)
            mean_loss = loss_total / max(count, 1)
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f'non-finite training loss ({mean_loss}) in epoch {epoch + 1}, step {step}; '
                    f'the last good checkpoint is kept. Lower --lr, keep --clip-grad, or use --mixed-precision no')
            bar.set_postfix(loss=f'{mean_loss:.4f}', lr=f'{optimizer.param_groups[0]["lr"]:.2e}')
    bar.close()
    scheduler.step(epoch + 1)
    loss_total, count = _reduce_totals(accelerator, loss_sum, seen)
    return {'train_loss': loss_total / count, 'train_img_per_s': count / (time.perf_counter() - t0)}


def _reduce_totals(accelerator, loss_sum: torch.Tensor, seen: int) -> tuple[float, float]:
    """(summed loss, images) over all processes: one host sync."""
    totals = accelerator.reduce(torch.stack([loss_sum, torch.tensor(float(seen), device=loss_sum.device)]), 'sum')
    return float(totals[0]), float(totals[1])


@torch.inference_mode()
def validate(model, loader, accelerator) -> tuple[np.ndarray, float]:
    """Softmax probabilities for every validation slice, in dataset order, exactly once across processes.

    ``model`` is the plain module (not the DDP wrapper); its ``forward`` runs eagerly even when
    the module was compiled, which avoids recompiling for eval mode and the last partial batch.
    """
    model.eval()
    all_probs, all_losses = [], []
    for images, targets in loader:
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model.forward(images).float()
        losses = F.cross_entropy(logits, targets, reduction='none')
        probs, losses = accelerator.gather_for_metrics((logits.softmax(-1), losses))
        all_probs.append(probs.cpu())
        all_losses.append(losses.cpu())
    probs = torch.cat(all_probs).numpy()
    return probs, float(torch.cat(all_losses).mean())


# ---------------------------------------------------------------------------------------------- set-up helpers

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
        mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum_steps, log_with=cfg.log_with,
        project_config=project,
        # non_blocking: host-to-GPU copies from pinned memory overlap with compute
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed,
                                                  non_blocking=torch.cuda.is_available()))


def create_model(cfg: TrainConfig) -> torch.nn.Module:
    """Any timm model, scratch-initialised, 1 channel, our classes and preprocessing in its pretrained cfg."""
    n = len(cfg.classes)
    overlay = dict(input_size=(1, cfg.img_size, cfg.img_size), mean=MEAN, std=STD, crop_pct=CROP_PCT,
                   interpolation=INTERPOLATION, num_classes=n, label_names=tuple(cfg.classes))
    return timm.create_model(cfg.model, pretrained=False, num_classes=n, in_chans=1,
                             drop_path_rate=cfg.drop_path, pretrained_cfg_overlay=overlay)


def load_splits(cfg: TrainConfig, data_dir):
    """Scan train (and test, when present), split train by patient, refuse leakage and bad files."""
    train_all = data.scan_split(data_dir, 'train', classes=tuple(cfg.classes), file_is_patient=cfg.file_is_patient)
    test_slices = []
    if (Path(data_dir) / 'test').is_dir():
        test_slices = data.scan_split(data_dir, 'test', classes=tuple(cfg.classes),
                                      file_is_patient=cfg.file_is_patient)
        data.check_no_leakage(train_all, test_slices, names=('train', 'test'))
    train_all = data.resolve_bad_images(train_all, skip_bad=cfg.skip_bad_images, num_workers=cfg.num_workers)
    if cfg.split_level == 'slice':
        _logger.warning('split_level=slice: slices of one patient land in both train and val. This LEAKS '
                        'patients and inflates validation scores; it exists only to reproduce the reference.')
        split = data.split_slices(train_all, cfg.val_fraction, cfg.seed)
    else:
        split = data.split_patients(train_all, cfg.val_fraction, cfg.seed)
    if test_slices:
        split['test'] = sorted({s.patient for s in test_slices})
    return data.select(train_all, split, 'train'), data.select(train_all, split, 'val'), test_slices, split


def _make_loaders(cfg, train_slices, val_slices, train_tf, eval_tf, accelerator):
    cache = None
    if cfg.cache:
        cache = data.preload(train_slices + val_slices, num_workers=cfg.num_workers)
    pin = accelerator.device.type == 'cuda'
    batches = len(train_slices) // cfg.batch_size
    if batches < 1:
        raise TrainingError(f'batch_size={cfg.batch_size} is larger than the training set ({len(train_slices)} '
                            f'slices); lower --batch-size')
    train_loader = data.create_loader(
        data.SliceDataset(train_slices, train_tf, cache), cfg.batch_size, shuffle=True, drop_last=True,
        num_workers=cfg.num_workers, pin_memory=pin, seed=cfg.seed)
    val_loader = data.create_loader(
        data.SliceDataset(val_slices, eval_tf, cache), cfg.batch_size, shuffle=False,
        num_workers=cfg.num_workers, pin_memory=pin, seed=cfg.seed)
    return train_loader, val_loader


def _claim_run_dir(run_dir: Path, overwrite: bool, accelerator: Accelerator) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise TrainingError(f'{run_dir} already exists and is not empty; continue it with --resume, '
                                f'replace it with --overwrite, or choose another --output-dir')
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _logger.warning('--overwrite: removing %s', run_dir)
            shutil.rmtree(run_dir)
    accelerator.wait_for_everyone()


# keys that may change when a run is continued. All but epochs leave what is learned as it was; a new
# epochs re-stretches the schedule (e.g. the cosine) over the new length from the current update on.
RESUME_OVERRIDABLE = ('epochs', 'num_workers', 'log_with', 'compile', 'cache')


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """RUN/train_config.yaml: the resolved config, data folder, versions."""
    record = Path(run_dir) / 'train_config.yaml'
    if not record.is_file():
        raise TrainingError(f'--resume: {record} not found; is {run_dir} a training run folder?')
    return yaml.safe_load(record.read_text())


def resumed_config(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """--resume continues with the run's own recorded config; only RESUME_OVERRIDABLE keys may change."""
    saved = read_run_record(run_dir)['config']
    refused = sorted(k for k in (overrides or {}) if k not in RESUME_OVERRIDABLE)
    if refused:
        raise TrainingError(f'--resume continues the recorded recipe; {refused} cannot change (only '
                            f'{list(RESUME_OVERRIDABLE)} can). Start a new run to change them.')
    return make_config({**saved, **(overrides or {})}, source=str(Path(run_dir) / 'train_config.yaml'))


def _make_loss(cfg: TrainConfig):
    """(mixup or None, training loss): timm's Mixup + SoftTargetCrossEntropy, or (smoothed) cross-entropy."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                      num_classes=len(cfg.classes))
        return mixup, SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return None, torch.nn.CrossEntropyLoss()


def _tracker_config(cfg: TrainConfig) -> dict[str, Any]:
    """TensorBoard's hparams take scalars and strings only."""
    return {k: ','.join(map(str, v)) if isinstance(v, list) else ('null' if v is None else v)
            for k, v in config_to_dict(cfg).items()}


def _check_same_processes(run_dir: Path, accelerator: Accelerator) -> None:
    """--batch-size is per process: resuming on another process count would change the recipe."""
    recorded = read_run_record(run_dir).get('num_processes')
    if recorded is not None and recorded != accelerator.num_processes:
        raise TrainingError(f'--resume: {run_dir} was trained with {recorded} process(es), this launch has '
                            f'{accelerator.num_processes}; resume with the same number of GPUs / processes')


def _repair_best_export(run_dir: Path, state: dict, base_model, ema, cfg: TrainConfig, data_note) -> None:
    """A kill between the checkpoint and the best export leaves RUN/best one best behind: redo it.

    Only the last checkpointed epoch can be missing, and its weights are the ones just loaded.
    """
    best = state.get('best')
    if not best or best['epoch'] != state['epoch']:
        return
    try:
        exported_epoch = hub.export_extra(run_dir / 'best').get('epoch')
    except FileNotFoundError:
        exported_epoch = None
    if exported_epoch != best['epoch']:
        weights = ema.module if best['weights'] == 'ema' and ema is not None else base_model
        hub.export_model(weights, run_dir / 'best', extra=_best_extra(best, cfg, data_note))
        _logger.info('re-exported the best model (epoch %d) to %s', best['epoch'], run_dir / 'best')


def _update_best(state, row, candidates, cfg, epoch) -> tuple[bool, str]:
    """Pick the better of live/EMA this epoch; it becomes best when it beats the best so far.

    ``candidates[name] = (report, val_loss, threshold)``. Ties (e.g. AUC 1.0 on an
    easy set) are broken by the lower validation loss.
    """
    if not candidates:  # no validation split: the last epoch is the best we know
        state['best'] = {'epoch': epoch + 1, 'weights': 'live', 'metric': None, 'value': None,
                         'threshold': 0.5, 'threshold_source': 'fixed'}
        return True, 'live'
    level, key = cfg.best_metric.split('_', 1)

    def score(report, loss):
        value = report[level][key]
        return (-math.inf if value is None else value, -loss)

    name, (report, loss, threshold) = max(candidates.items(), key=lambda item: score(*item[1][:2]))
    best = state['best']
    if best is not None and score(report, loss) <= (best['value'], -best['val_loss']):
        return False, name
    value = report[level][key]
    state['best'] = {'epoch': epoch + 1, 'weights': name, 'metric': cfg.best_metric,
                     'value': -math.inf if value is None else value, 'val_loss': loss,
                     'threshold': threshold, 'threshold_source': 'validation',
                     'val_patient': report['patient'], 'val_slice': report['slice']}
    return True, name


def _best_extra(best: dict, cfg: TrainConfig, data_note: str | None) -> dict[str, Any]:
    """What RUN/best/config.json keeps under 'adni_timm' (read by evaluate.py and the model card)."""
    return {
        'threshold': best['threshold'], 'threshold_source': best['threshold_source'],
        'classes': list(cfg.classes), 'weights': best['weights'], 'epoch': best['epoch'],
        'best_metric': best['metric'], 'best_value': best['value'], 'model_name': cfg.model,
        'img_size': cfg.img_size, 'data': data_note or 'ADNI AD_NC',
    }


def _epoch_line(row: dict, cfg: TrainConfig, is_best: bool) -> str:
    def f(key, fmt='.3f'):
        value = row.get(key)
        return '-' if value is None else format(value, fmt)

    parts = [f"epoch {row['epoch']}/{cfg.epochs}", f"loss {f('train_loss', '.4f')}"]
    if 'val_loss' in row:
        parts.append(f"val loss {f('val_loss', '.4f')} slice acc {f('val_slice_accuracy')} "
                     f"patient acc {f('val_patient_accuracy')} bacc {f('val_patient_balanced_accuracy')} "
                     f"auc {f('val_patient_auc')} sens {f('val_patient_sensitivity')} "
                     f"spec {f('val_patient_specificity')}")
    if 'ema_val_loss' in row:
        parts.append(f"ema patient acc {f('ema_val_patient_accuracy')} auc {f('ema_val_patient_auc')}")
    parts.append(f"lr {row['lr']:.2e}")
    parts.append(f"{row['train_img_per_s']:.0f} img/s {row['epoch_time_s']:.0f}s")
    return ' | '.join(parts) + ('  *best*' if is_best else '')


def _run_record(cfg: TrainConfig, data_dir, data_note, eval_test: bool, accelerator: Accelerator) -> dict[str, Any]:
    import accelerate
    import huggingface_hub
    import sklearn

    from . import __version__
    return {
        'config': config_to_dict(cfg),
        'data_dir': str(Path(data_dir).resolve()),
        'data': data_note or 'ADNI AD_NC',
        'eval_test': eval_test,
        'num_processes': accelerator.num_processes,
        'mixed_precision': accelerator.mixed_precision,
        'device': str(accelerator.device),
        'versions': {'adni_timm': __version__, 'python': platform.python_version(), 'torch': str(torch.__version__),
                     'timm': timm.__version__, 'accelerate': accelerate.__version__,
                     'huggingface_hub': huggingface_hub.__version__, 'scikit-learn': sklearn.__version__},
        'git_commit': _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _write_yaml(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    tmp.replace(path)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl rewritten whole from the (checkpointed) history, so a resumed run stays consistent."""
    tmp = run_dir / 'metrics.jsonl.tmp'
    tmp.write_text(''.join(json.dumps(row) + '\n' for row in history))
    tmp.replace(run_dir / 'metrics.jsonl')
    plots.plot_curves(history, run_dir / 'curves.png')
