"""Run train.py's main() under `accelerate launch`
with a disk that fills up at the second checkpoint.

Used by tests/test_ddp.py: the main process's EMA save raises ENOSPC; every process must stop
promptly with the same error instead of waiting at the next collective until it times out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from adni_timm.train import checkpoint  # noqa: E402
import train  # noqa: E402  (the repo's train.py)

_real_save_file = checkpoint.save_file
_calls = {'n': 0}


def _full_disk(*args, **kwargs):
    _calls['n'] += 1
    if _calls['n'] >= 2:
        raise OSError(28, 'No space left on device')
    return _real_save_file(*args, **kwargs)


checkpoint.save_file = _full_disk
sys.exit(train.main(sys.argv[1:]))
