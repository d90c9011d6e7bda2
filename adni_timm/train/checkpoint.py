"""Atomic training checkpoints in ``RUN/checkpoints/last``.

Accelerate saves model, optimizer and every process's RNG state; we add the
EMA weights (safetensors) and the loop's own state (JSON: epoch, history,
scheduler, best so far). Everything is written to a temporary folder that is
renamed into place, so a kill mid-save leaves the previous checkpoint intact.
A failure on any process (a full disk) stops every process with the same error.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from ..utils.distributed import first_error, raise_agreed, run_on_main
from ..utils.legacy import upgrade

__all__ = ['CheckpointError', 'save_checkpoint', 'find_checkpoint', 'load_checkpoint']

LAST = 'last'
STATE_FILE = 'trainer_state.json'
EMA_FILE = 'ema.safetensors'


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous one is kept."""


_stop_if = partial(
    raise_agreed,
    exception=CheckpointError,
    hint='. The previous checkpoint is kept: fix the cause (e.g. free disk space) and continue '
    'with --resume.',
)


def save_checkpoint(
    accelerator: Accelerator, ckpt_root: Path, state: dict[str, Any], ema=None
) -> Path:
    """Save on all processes (each writes its RNG state); the main process swaps the folder in."""
    ckpt_root = Path(ckpt_root)
    tmp = ckpt_root / f'.tmp-epoch{state["epoch"]}'
    old = ckpt_root / f'.{LAST}.old'
    last = ckpt_root / LAST

    def make_tmp():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    def complete():
        if ema is not None:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in ema.module.state_dict().items()},
                tmp / EMA_FILE,
            )
        # written last: marks the folder complete
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        if last.exists():
            shutil.rmtree(old, ignore_errors=True)
            last.rename(old)
        tmp.rename(last)
        shutil.rmtree(old, ignore_errors=True)

    _stop_if(run_on_main(accelerator, make_tmp, 'creating the checkpoint folder'))
    error = None
    try:
        accelerator.save_state(str(tmp))
    except Exception as e:  # noqa: BLE001 - every process must hear of it, not just this one
        error = (
            f'saving the training state failed on process {accelerator.process_index}: '
            f'{type(e).__name__}: {e}'
        )
    _stop_if(first_error(accelerator, error))
    _stop_if(run_on_main(accelerator, complete, 'completing the checkpoint'))
    return last


def find_checkpoint(ckpt_root: Path) -> Path | None:
    """The last complete checkpoint, also when a kill fell between the two renames."""
    for candidate in (Path(ckpt_root) / LAST, Path(ckpt_root) / f'.{LAST}.old'):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(accelerator: Accelerator, ckpt_dir: Path, ema=None) -> dict[str, Any]:
    accelerator.load_state(str(ckpt_dir))
    if ema is not None and (ckpt_dir / EMA_FILE).is_file():
        ema.module.load_state_dict(load_file(ckpt_dir / EMA_FILE, device=str(accelerator.device)))
    return upgrade(json.loads((ckpt_dir / STATE_FILE).read_text()))  # older runs: 'patient'
