"""inference.predict_slices under `accelerate launch` (2 CPU processes): rank 0 saves it all.

Used by tests/test_ddp.py. argv: EXPORT_DIR DATA_DIR OUT_FILE BATCH_SIZE.
"""

import sys
from pathlib import Path

import numpy as np
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from adni_timm import data  # noqa: E402
from adni_timm.inference import load_model, predict_slices  # noqa: E402

export_dir, data_dir, out_file, batch_size = sys.argv[1:5]
accelerator = Accelerator(cpu=True)
model = load_model(export_dir).net
slices = data.scan_split(data_dir, 'test')
probs = predict_slices(model, slices, batch_size=int(batch_size), accelerator=accelerator)
if accelerator.is_main_process:
    np.save(out_file, probs)
# as adni-train does: leaving with the process group alive aborted 4 of 12 runs at exit
# ('terminate called without an active exception')
accelerator.wait_for_everyone()
accelerator.end_training()
