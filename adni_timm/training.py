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
from accelerate.utils import set_seed
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from . import data, hub, metrics
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict, make_config
from .models import CROP_PCT, INTERPOLATION, MEAN, STD

_logger = logging.getLogger(__name__)

__all__ = ['TrainingError', 'TrainResult', 'resumed_config', 'train']


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
    accelerator = make_accelerator(cfg)
    if not accelerator.is_main_process:  # one voice: other processes only report errors
        logging.getLogger('adni_timm').setLevel(logging.ERROR)
    run_dir = Path(output_dir)
    if not resume:
        _claim_run_dir(run_dir, overwrite, accelerator)
    main = accelerator.is_main_process

    # ---- data: scan, split by patient, check for leakage and bad files before any training
    train_slices, val_slices, test_slices, split = load_splits(cfg, data_dir, main)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / 'split.json', split)
        _write_yaml(run_dir / 'train_config.yaml', _run_record(cfg, data_dir, data_note, accelerator))

    # ---- model and transforms (the eval transform is the one timm resolves for the exported model)
    set_seed(cfg.seed)
    model = create_model(cfg)
    train_tf, eval_tf = data.build_transforms(
        model, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), hflip=cfg.hflip, color_jitter=cfg.color_jitter,
        auto_augment=cfg.auto_augment, re_prob=cfg.re_prob)
    train_loader, val_loader = _make_loaders(cfg, train_slices, val_slices, train_tf, eval_tf, accelerator)

    # ---- optimisation
    optimizer = timm.optim.create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    updates_per_epoch = max(1, math.ceil(len(train_loader) / accelerator.num_processes / cfg.grad_accum_steps))
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                      num_classes=len(cfg.classes))
        train_loss_fn = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        train_loss_fn = LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    else:
        train_loss_fn = torch.nn.CrossEntropyLoss()

    base_model = model.to(accelerator.device)
    if cfg.channels_last and accelerator.device.type == 'cuda':
        base_model = base_model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(base_model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    model = torch.compile(base_model) if cfg.compile else base_model
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)

    # ---- resume
    state = {'epoch': 0, 'num_updates': 0, 'history': [], 'best': None}
    if resume:
        ckpt = find_checkpoint(run_dir / 'checkpoints')
        if ckpt is None:
            raise TrainingError(f'--resume: no complete checkpoint in {run_dir / "checkpoints"}; '
                                f'start a new run without --resume (or with --overwrite)')
        state = load_checkpoint(accelerator, ckpt, ema)
        scheduler.load_state_dict(state['scheduler'])
        _logger.info('resumed from %s after epoch %d', ckpt, state['epoch'])
    if cfg.log_with:
        accelerator.init_trackers(run_dir.name, config=config_to_dict(cfg))

    # ---- the loop
    val_patients = [s.patient for s in val_slices]
    val_labels = np.array([s.label for s in val_slices])
    for epoch in range(state['epoch'], cfg.epochs):
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)  # seedable sampler: the shuffle depends on (seed, epoch), so resume replays it
        train_stats = train_one_epoch(
            model, base_model, train_loader, optimizer, scheduler, train_loss_fn, mixup, ema, accelerator, cfg,
            epoch, state)
        row = {'epoch': epoch + 1, **train_stats, 'lr': optimizer.param_groups[0]['lr']}
        candidates = {}
        if len(val_slices):
            for name, net in (('live', model), ('ema', ema.module if ema is not None else None)):
                if net is None:
                    continue
                probs, val_loss = validate(net, val_loader, accelerator)
                report = metrics.slice_and_patient_metrics(val_patients, val_labels, _positive_prob(probs, cfg))
                prefix = 'val' if name == 'live' else 'ema_val'
                row[f'{prefix}_loss'] = val_loss
                row[f'{prefix}_slices'] = int(len(probs))
                for level in ('slice', 'patient'):
                    for key in ('accuracy', 'balanced_accuracy', 'auc', 'sensitivity', 'specificity'):
                        row[f'{prefix}_{level}_{key}'] = report[level][key]
                ids, y, p = metrics.patient_level(val_patients, val_labels, _positive_prob(probs, cfg))
                candidates[name] = (report, val_loss, metrics.youden_threshold(y, p))
        row['epoch_time_s'] = time.perf_counter() - t0

        is_best, chosen = _update_best(state, row, candidates, cfg, epoch)
        if is_best and main:
            weights = ema.module if chosen == 'ema' else accelerator.unwrap_model(model)
            hub.export_model(weights, run_dir / 'best', extra=_best_extra(state['best'], cfg, data_note))
        state['history'].append(row)
        state['epoch'] = epoch + 1
        state['scheduler'] = scheduler.state_dict()
        if main:
            _write_history(run_dir, state['history'])
        if cfg.log_with:
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                            step=epoch + 1)
        save_checkpoint(accelerator, run_dir / 'checkpoints', state, ema)
        _logger.info(_epoch_line(row, cfg, is_best))

    if cfg.log_with:
        accelerator.end_training()
    result = TrainResult(run_dir=run_dir, best=state['best'], history=state['history'],
                         model=accelerator.unwrap_model(model))
    if eval_test and main:
        if not test_slices:
            raise TrainingError(f'--eval-test: {data_dir} has no test split to evaluate on')
        from . import evaluation
        result.eval_metrics = evaluation.evaluate(
            str(run_dir), data_dir, split='test', output_dir=run_dir / 'eval', classes=cfg.classes,
            num_workers=min(cfg.num_workers, 4))
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
            mean_loss = (loss_sum / max(seen, 1)).item()
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f'non-finite training loss ({mean_loss}) in epoch {epoch + 1}, step {step}; '
                    f'the last good checkpoint is kept. Lower --lr, keep --clip-grad, or use --mixed-precision no')
            bar.set_postfix(loss=f'{mean_loss:.4f}', lr=f'{optimizer.param_groups[0]["lr"]:.2e}')
    bar.close()
    scheduler.step(epoch + 1)
    total = accelerator.reduce(torch.stack([loss_sum, torch.tensor(float(seen), device=loss_sum.device)]), 'sum')
    elapsed = time.perf_counter() - t0
    return {'train_loss': float(total[0] / total[1]), 'train_img_per_s': float(total[1]) / elapsed}


@torch.inference_mode()
def validate(model, loader, accelerator) -> tuple[np.ndarray, float]:
    """Softmax probabilities for every validation slice, in dataset order, exactly once across processes."""
    model.eval()
    all_probs, all_losses = [], []
    for images, targets in loader:
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model(images).float()
        losses = F.cross_entropy(logits, targets, reduction='none')
        probs, losses = accelerator.gather_for_metrics((logits.softmax(-1), losses))
        all_probs.append(probs.cpu())
        all_losses.append(losses.cpu())
    probs = torch.cat(all_probs).numpy()
    return probs, float(torch.cat(all_losses).mean())


# ---------------------------------------------------------------------------------------------- set-up helpers

def make_accelerator(cfg: TrainConfig) -> Accelerator:
    precision = cfg.mixed_precision
    if precision == 'auto':
        if torch.cuda.is_available():
            precision = 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
        else:
            precision = 'no'  # autocast on CPU is slower than fp32 here
    return Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum_steps, log_with=cfg.log_with,
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


def load_splits(cfg: TrainConfig, data_dir, main: bool):
    """Scan train (and test, when present), split train by patient, refuse leakage and bad files."""
    train_all = data.scan_split(data_dir, 'train', classes=tuple(cfg.classes), file_is_patient=cfg.file_is_patient)
    test_slices = []
    if (Path(data_dir) / 'test').is_dir():
        test_slices = data.scan_split(data_dir, 'test', classes=tuple(cfg.classes),
                                      file_is_patient=cfg.file_is_patient)
        data.check_no_leakage(train_all, test_slices, names=('train', 'test'))
    train_all = data.resolve_bad_images(train_all, skip_bad=cfg.skip_bad_images)
    if cfg.split_level == 'slice':
        if main:
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


# keys that may change when a run is continued: they do not change what is learned
RESUME_OVERRIDABLE = ('epochs', 'num_workers', 'log_with', 'compile', 'cache')


def resumed_config(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """--resume continues with the run's own recorded config; only RESUME_OVERRIDABLE keys may change."""
    record = Path(run_dir) / 'train_config.yaml'
    if not record.is_file():
        raise TrainingError(f'--resume: {record} not found; is {run_dir} a training run folder?')
    saved = yaml.safe_load(record.read_text())['config']
    refused = sorted(k for k in (overrides or {}) if k not in RESUME_OVERRIDABLE)
    if refused:
        raise TrainingError(f'--resume continues the recorded recipe; {refused} cannot change (only '
                            f'{list(RESUME_OVERRIDABLE)} can). Start a new run to change them.')
    return make_config({**saved, **(overrides or {})}, source=str(record))


def _positive_prob(probs: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    positive = cfg.classes.index('AD') if 'AD' in cfg.classes else len(cfg.classes) - 1
    return probs[:, positive]


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


def _run_record(cfg: TrainConfig, data_dir, data_note, accelerator: Accelerator) -> dict[str, Any]:
    import accelerate
    import huggingface_hub
    import sklearn

    from . import __version__
    return {
        'config': config_to_dict(cfg),
        'data_dir': str(Path(data_dir).resolve()),
        'data': data_note or 'ADNI AD_NC',
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
    try:
        from .plots import plot_curves
        plot_curves(history, run_dir / 'curves.png')
    except ImportError:  # plots land separately; curves are a convenience
        pass
