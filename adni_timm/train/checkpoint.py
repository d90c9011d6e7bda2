"""Atomic training checkpoints in ``RUN/checkpoints/last``.

Accelerate saves model, optimizer and every process's RNG state; we add the
EMA weights (safetensors) and the loop's own state (JSON: epoch, history,
scheduler, best so far). Everything is written to a temporary folder that is
renamed into place, so a kill mid-save leaves the previous checkpoint intact.
A failure on any process (a full disk) stops every process with the same error,
naming the folder and what was kept; the partial folder is removed. Resuming
reads ``last``, or the previous checkpoint when ``last`` turns out damaged.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from ..run import Run
from ..utils.distributed import first_error, raise_agreed, run_on_main
from ..utils.legacy import upgrade

__all__ = [
    'CheckpointError',
    'save_checkpoint',
    'find_checkpoint',
    'has_checkpoint',
    'load_checkpoint',
    'resume_checkpoint',
    'kept_note',
]

_logger = logging.getLogger(__name__)

LAST = 'last'
OLD = f'.{LAST}.old'
STATE_FILE = 'trainer_state.json'
EMA_FILE = 'ema.safetensors'
TMP_PREFIX = '.tmp-epoch'


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message says what was kept."""


def save_checkpoint(
    accelerator: Accelerator, ckpt_root: Path, state: dict[str, Any], ema=None
) -> Path:
    """Save on all processes (each writes its RNG state); the main process swaps the folder in."""
    ckpt_root = Path(ckpt_root)
    tmp = ckpt_root / f'{TMP_PREFIX}{state["epoch"]}'
    old = ckpt_root / OLD
    last = ckpt_root / LAST

    def make_tmp():
        for stale in ckpt_root.glob(f'{TMP_PREFIX}*'):  # what a kill mid-save left
            shutil.rmtree(stale, ignore_errors=True)
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

    def stop_if(error: str | None) -> None:
        if not error:  # agreed by every process: all of them go on, or all stop here
            return
        note = None
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # never a partial folder left behind
            note = f' ({_free_space(ckpt_root)}; the partial {tmp.name} was removed); '
            note += kept_note(ckpt_root)
        # every process says the same words: the main process's
        raise_agreed(error, CheckpointError, first_error(accelerator, note) or '')

    stop_if(run_on_main(accelerator, make_tmp, f'creating {tmp}'))
    error = None
    try:
        accelerator.save_state(str(tmp))
    except Exception as e:  # noqa: BLE001 - every process must hear of it, not just this one
        error = (
            f'writing the checkpoint of epoch {state["epoch"]} to {tmp} failed on process '
            f'{accelerator.process_index}: {_short(e)}'
        )
    stop_if(first_error(accelerator, error))
    stop_if(run_on_main(accelerator, complete, f'completing the checkpoint in {ckpt_root}'))
    return last


def _short(error: BaseException) -> str:
    """One line: torch's writer reports a full disk as a C++ assertion ('unexpected pos')."""
    text = ' '.join(str(error).split())
    if 'unexpected pos' in text or 'PytorchStreamWriter failed' in text:
        text = 'the file could not be written (a full disk?)'
    return f'{type(error).__name__}: {text}'


def _free_space(path: Path) -> str:
    try:
        free = shutil.disk_usage(path if path.exists() else path.parent).free
    except OSError:
        return 'free space unknown'
    return f'{free / 2**20:.0f} MiB free on that disk'


def _epoch_of(ckpt: Path) -> int | None:
    try:
        return int(json.loads((ckpt / STATE_FILE).read_text())['epoch'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def kept_note(ckpt_root: Path) -> str:
    """What a stopped run still has to continue from (the end of its error message)."""
    ckpt = find_checkpoint(ckpt_root)
    if ckpt is None:
        return (
            'no checkpoint was kept: this run has none yet; fix the cause and start it again '
            '(--overwrite)'
        )
    epoch = _epoch_of(ckpt)
    return (
        f'the previous checkpoint is kept (epoch {epoch if epoch is not None else "?"}, {ckpt}): '
        f'fix the cause and continue with --resume.'
    )


def find_checkpoint(ckpt_root: Path) -> Path | None:
    """The last complete checkpoint, also when a kill fell between the two renames."""
    for candidate in _candidates(ckpt_root):
        return candidate
    return None


def _candidates(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, newest first: ``last``, then ``.last.old`` (left by a kill
    between the renames, or the one ``last`` replaced)."""
    return [
        c for c in (Path(ckpt_root) / LAST, Path(ckpt_root) / OLD) if (c / STATE_FILE).is_file()
    ]


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether a run folder (or a fold or refit inside it) holds a complete checkpoint."""
    run = Run(run_dir)
    roots = [run.checkpoints_dir, *run.path.glob(f'*/{Run.CHECKPOINTS}')]
    return any(find_checkpoint(root) is not None for root in roots)


def load_checkpoint(accelerator: Accelerator, ckpt_dir: Path, ema=None) -> dict[str, Any]:
    """The loop state of ``ckpt_dir``, with the weights, optimizer, RNG and EMA loaded into place.

    Raises ``CheckpointError`` naming the damaged file. A missing or unreadable RNG state is a
    warning: the run goes on, with other random draws than an uninterrupted run.
    """
    ckpt_dir = Path(ckpt_dir)
    state_file = ckpt_dir / STATE_FILE
    try:  # read first: a torn state file is found before any weight is touched
        state = json.loads(state_file.read_text())
        int(state['epoch']), int(state['num_updates'])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f'{state_file} is damaged ({_short(e)})') from None
    _warn_if_rng_unreadable(accelerator, ckpt_dir)
    try:
        accelerator.load_state(str(ckpt_dir))
        if ema is not None and (ckpt_dir / EMA_FILE).is_file():
            ema.module.load_state_dict(
                load_file(ckpt_dir / EMA_FILE, device=str(accelerator.device))
            )
    except Exception as e:  # noqa: BLE001 - safetensors, torch.load, shapes: one line each
        raise CheckpointError(f'{ckpt_dir} is damaged ({_short(e)})') from None
    return upgrade(state)  # older runs: 'patient'


def _warn_if_rng_unreadable(accelerator: Accelerator, ckpt_dir: Path) -> None:
    """Accelerate drops an unreadable RNG state with an info line; we say it out loud."""
    from accelerate.utils import RNG_STATE_NAME
    from accelerate.utils.other import load

    path = ckpt_dir / f'{RNG_STATE_NAME}_{accelerator.process_index}.pkl'
    try:
        load(path)
    except Exception as e:  # noqa: BLE001 - missing, truncated or refused by weights_only
        _logger.warning(
            'the random state of process %d (%s) could not be read (%s): the run continues '
            'with fresh random draws, so its augmentation and drop-path differ from an '
            'uninterrupted run',
            accelerator.process_index,
            path,
            _short(e),
        )


def resume_checkpoint(
    accelerator: Accelerator, ckpt_root: Path, ema=None
) -> tuple[dict[str, Any], Path]:
    """(loop state, its folder) of the newest checkpoint that loads: ``last``, else the previous
    one when ``last`` is damaged (said in a warning). ``CheckpointError`` when none loads."""
    candidates = _candidates(ckpt_root)
    if not candidates:
        raise CheckpointError(
            f'--resume: no complete checkpoint in {ckpt_root}; start a new run without '
            f'--resume (or with --overwrite)'
        )
    problems = []
    for ckpt in candidates:
        try:
            state = load_checkpoint(accelerator, ckpt, ema)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            _logger.warning(
                '%s; resuming from %s (epoch %s) instead', '; '.join(problems), ckpt, state['epoch']
            )
        return state, ckpt
    raise CheckpointError(
        f'--resume: {"; ".join(problems)}; no other checkpoint to continue from: start the run '
        f'again with --overwrite (RUN/best, the kept model so far, stays until then)'
    )
