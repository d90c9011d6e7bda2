"""Run train.py's main() under `accelerate launch`, recording from outside what each process did.

Used by tests/test_training.py. Writes, per process, PROBE_DIR/rank<R>.json with the files that
process opened for writing (via a Python audit hook) and a fingerprint of its final weights.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from accelerate import PartialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train  # noqa: E402  (the repo's train.py)

PROBE_DIR = Path(os.environ['ADNI_TIMM_PROBE_DIR'])
RANK = int(os.environ.get('RANK', '0'))
written = []


def _audit(event, args):
    if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and any(c in mode for c in 'wax+')) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        ):
            written.append(os.fsdecode(args[0]))
    elif event == 'os.mkdir' and not os.path.isdir(args[0]):
        # makedirs(exist_ok=True) on a made folder is no write
        written.append(os.fsdecode(args[0]))
    elif event in ('os.rename', 'os.replace', 'shutil.rmtree', 'os.remove'):
        written.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)
result = train.run(sys.argv[1:])
state = result.model.state_dict()
digest = hashlib.sha256()
for key in sorted(state):
    digest.update(key.encode())
    digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
(PROBE_DIR / f'rank{RANK}.json').write_text(
    json.dumps(
        {
            'written': written,
            'weights_sha256': digest.hexdigest(),
            'val_slices': [row.get('val_slices') for row in result.history],
        }
    )
)
# as adni-train's main() does before it returns: no process exits with the process group alive
PartialState().wait_for_everyone()
PartialState().destroy_process_group()
