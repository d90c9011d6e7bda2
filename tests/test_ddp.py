"""Two CPU processes under `accelerate launch`: inference
counts each slice once, failures stop everyone.
"""

import re
import time

import numpy as np
import pytest
import timm
import torch

from adni_timm import data
from adni_timm.export import format as export
from adni_timm.inference import load_model, predict_slices
from helpers import ROOT, TINY, accelerate_launch

# on top of the test process's environment (accelerate_launch merges them)
ENV = {'ACCELERATE_USE_CPU': '1', 'OMP_NUM_THREADS': '1'}


@pytest.mark.slow
def test_two_process_predict_returns_every_test_slice_once_in_order(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 64, 64))
    ).eval()
    with torch.no_grad():
        model.head.fc.weight.normal_(0, 1.0)  # outputs that differ per slice, so order shows
    exported = export.export_model(model, tmp_path / 'export')
    out = tmp_path / 'probs.npy'
    # 24 slices; batches of 5 over 2 processes pad the last one
    slices = data.scan_split(tiny_data, 'test')
    probe = ROOT / 'tests/ddp_predict_probe.py'
    proc = accelerate_launch(probe, exported, tiny_data, out, '5', port=29517, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gathered = np.load(out)
    single = predict_slices(load_model(exported).net, slices, batch_size=5)
    assert gathered.shape == single.shape == (len(slices), 2)
    np.testing.assert_allclose(gathered, single, rtol=1e-5, atol=1e-7)
    # distinct values: order is really checked
    assert len(np.unique(gathered[:, 1].round(6))) > len(slices) // 2


@pytest.mark.slow
def test_a_failed_checkpoint_on_the_main_process_stops_every_process_promptly(tiny_data, tmp_path):
    run = tmp_path / 'run'
    args = ['--data-dir', tiny_data, '--output-dir', run, *TINY]
    start = time.perf_counter()
    proc = accelerate_launch(ROOT / 'tests/ddp_fault_probe.py', *args, port=29519, env=ENV)
    elapsed = time.perf_counter() - start
    assert proc.returncode != 0
    # the two processes write to one stderr at the same moment: their lines can interleave
    errors = [e.strip() for e in re.findall(r'train\.py: error: (.*?--resume\.)', proc.stderr)]
    assert len(errors) == 2, proc.stderr[-3000:]  # each process says so ...
    assert len(set(errors)) == 1 and 'No space left on device' in errors[0]  # ... the same thing
    assert 'previous checkpoint is kept' in errors[0]
    assert elapsed < 240  # promptly: not after a collective timeout (30 minutes by default)
    assert (run / 'checkpoints/last/trainer_state.json').is_file()  # epoch 1's checkpoint survives
