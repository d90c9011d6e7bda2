"""Smoke test of benchmarks/throughput.py --quick (CPU): every measurement is taken and written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_measures_everything(tmp_path):
    out = tmp_path / 'throughput.json'
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'benchmarks/throughput.py'),
            '--quick',
            '--model',
            'adni_convnext_atto',
            '--work-dir',
            str(tmp_path),
            '--json',
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in (
        'a_model_bound',
        'b_end_to_end_w2',
        'b_end_to_end_w0',
        'c_reference',
        'd_inference',
    ):
        assert r[key]['img_per_s'] > 0, key
    assert r['d_inference']['slices'] == 3 * 2 * 8  # 3 test scans per class x 8 slices
    assert r['f_projected_100_epochs_min'] > 0
    assert r['ratios']['b_over_c'] > 0
    assert (
        '(a) model-bound train img/s' in proc.stdout and '(f) projected 100 epochs' in proc.stdout
    )
