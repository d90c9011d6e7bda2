"""The one inference loop: per-slice probabilities
(and losses) for per-epoch validation and evaluate.py.

One precision policy for both (``autocast_dtype``): a run trained in fp32 is validated and evaluated
in fp32, a bf16 run in bf16 on CUDA; the CPU always computes in fp32 (autocast there is slower here
and would change results for nothing). channels_last only on CUDA, where it is faster.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from .hardware import bf16_supported

__all__ = ['PRECISIONS', 'autocast_dtype', 'predict_loader']

# 'no' is Accelerate's name for fp32; 'auto' is bf16 where the GPU has it natively, else fp16
PRECISIONS = ('auto', 'no', 'fp32', 'bf16', 'fp16')


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision {precision!r}: choose one of {list(PRECISIONS)}')
    if device.type != 'cuda' or precision in ('no', 'fp32'):
        return None
    if precision == 'bf16' or (precision == 'auto' and bf16_supported()):
        return torch.bfloat16
    return torch.float16


@torch.inference_mode()
def predict_loader(
    model: torch.nn.Module,
    loader,
    *,
    device: torch.device,
    precision: str = 'no',
    channels_last: bool = False,
    tta: bool = False,
    accelerator=None,
    with_loss: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(softmax probabilities ``[N, C]`` float64, per-slice
    cross-entropy ``[N]`` or None), in loader order.

    ``model`` is the plain module (not a DDP wrapper): its forward runs eagerly even
    when it was compiled in place, which avoids recompiling for eval mode and the
    last partial batch. With an ``accelerator`` the loader is sharded over its
    processes and ``gather_for_metrics`` returns every slice exactly once (drops the
    padding of the last batch); every process must call. ``tta`` averages the softmax
    of each slice and its horizontal flip. The model's training flag is restored.
    """
    dtype = autocast_dtype(precision, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    channels_last = channels_last and device.type == 'cuda'
    was_training = model.training
    model.eval()
    probs_out, losses_out = [], []
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model.forward(images).float()
                probs = logits.softmax(-1)
                if tta:
                    probs = (probs + model.forward(images.flip(-1)).float().softmax(-1)) / 2
            out = (
                (probs, F.cross_entropy(logits, targets.to(device), reduction='none'))
                if with_loss
                else (probs,)
            )
            if accelerator is not None:
                out = accelerator.gather_for_metrics(out)
            probs_out.append(out[0].cpu())
            if with_loss:
                losses_out.append(out[1].cpu())
    finally:
        model.train(was_training)
    probs = torch.cat(probs_out).double().numpy()
    return probs, (torch.cat(losses_out).double().numpy() if with_loss else None)
