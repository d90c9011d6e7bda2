"""Smoke test of benchmarks/prepare_throughput.py --quick: rates and per-step times are reported."""

import json

import pytest

from helpers import run_script

pytest.importorskip('SimpleITK')


@pytest.mark.slow
def test_prepare_benchmark_quick_reports_rates_and_steps(tmp_path):
    out = tmp_path / 'prepare.json'
    proc = run_script(
        'benchmarks/prepare_throughput.py', '--quick', '--workers', '1', '--work-dir', tmp_path,
        '--json', out, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r['volumes'] == 2 and r['failed'] == 0 and r['volumes_per_min'] > 0
    assert set(r['cpu_s_per_step_median']) >= {'read', 'n4', 'register', 'slice', 'write'}
    assert r['extrapolated_32_core_volumes_per_min'] > r['ideal_volumes_per_min_this_machine']
    assert '| volumes/min, measured (wall) |' in proc.stdout
