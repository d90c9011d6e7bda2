"""Small facts about the accelerator that training and evaluation both need."""
from __future__ import annotations

import torch


def bf16_supported() -> bool:
    """True on GPUs with native bf16 (Ampere and newer); False on CPU and on T4/V100.

    ``torch.cuda.is_bf16_supported()`` also says True where bf16 is only emulated
    (slow), so ask for native support where this torch can.
    """
    if not torch.cuda.is_available():
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the argument
        return torch.cuda.is_bf16_supported()
