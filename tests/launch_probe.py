"""Under `accelerate launch` (forked ranks or the real launcher): joins the gloo group, sums each
rank's RANK + 1 over it, and writes OUT_DIR/rank<R>.json with the sum and its environment.

Used by tests/test_script_server.py. argv: OUT_DIR [FAILING_RANK]: that rank exits 3 before the
group forms, so the other waits for it until it is stopped.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

out_dir = Path(sys.argv[1])
rank = int(os.environ['RANK'])
if len(sys.argv) > 2 and rank == int(sys.argv[2]):
    print(f'rank {rank} fails on purpose', file=sys.stderr)
    sys.exit(3)
dist.init_process_group('gloo')  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
total = torch.tensor([rank + 1.0])
dist.all_reduce(total)
report = {'sum': total.item(), 'environ': dict(os.environ), 'unbuffered': sys.stdout.write_through}
(out_dir / f'rank{rank}.json').write_text(json.dumps(report))
# one write: print's text and newline are two under python -u, and the ranks' could interleave
sys.stdout.write(f'rank {rank} of {dist.get_world_size()}: sum {total.item():g}\n')
dist.destroy_process_group()
