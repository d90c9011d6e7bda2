"""Smoke test of benchmarks/prepare_throughput.py --quick: rates and per-step times are reported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('SimpleITK')

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_prepare_benchmark_quick_reports_rates_and_steps(tmp_path):
    out = tmp_path / 'prepare.json'
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'benchmarks/prepare_throughput.py'),
            '--quick',
            '--workers',
            '1',
            '--work-dir',
            str(tmp_path),
            '--json',
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, 'PYTHONPATH': str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r['volumes'] == 2 and r['failed'] == 0 and r['volumes_per_min'] > 0
    assert set(r['cpu_s_per_step_median']) >= {'read', 'n4', 'register', 'slice', 'write'}
    assert r['extrapolated_32_core_volumes_per_min'] > r['ideal_volumes_per_min_this_machine']
    assert '| volumes/min, measured (wall) |' in proc.stdout
