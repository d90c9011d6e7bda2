"""Smoke test of benchmarks/throughput.py --quick (CPU): every measurement is taken and written."""

import json

import pytest

from helpers import run_script


@pytest.mark.slow
def test_quick_benchmark_measures_everything(tmp_path):
    out = tmp_path / 'throughput.json'
    # 32 px: every measurement is still taken, in ~2/3 of the CPU time of 64 px
    proc = run_script(
        'benchmarks/throughput.py', '--quick', '--model', 'adni_convnext_atto',
        '--img-size', '32', '--work-dir', tmp_path, '--json', out, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in (
        'a_model_bound',
        'b_end_to_end_w2',
        'b_end_to_end_w0',
        'b_end_to_end_device',
        'c_reference',
        'd_inference',
    ):
        assert r[key]['img_per_s'] > 0, key
    assert r['d_inference']['slices'] == 3 * 2 * 8  # 3 test scans per class x 8 slices
    assert r['img_size'] == 32
    assert r['f_projected_100_epochs_min'] > 0
    assert r['ratios']['b_over_c'] > 0
    assert r['c_reference']['model'] == 'convnext_atto'  # the reference loop on --model's twin
    # the data on the device, beside the loader paths: its rate and every path's CPU cost
    assert r['b_end_to_end_device']['data_on_device'] is True
    assert r['ratios']['b_device_over_a'] > 0 and r['f_projected_100_epochs_min_device'] > 0
    for key in ('g_data_cpu_w2', 'g_data_cpu_w0', 'g_data_cpu_device'):
        assert r[key]['cpu_s_per_1000_img'] > 0 and r[key]['images'] >= 256, key
    assert (
        '(a) model-bound train img/s' in proc.stdout and '(f) projected 100 epochs' in proc.stdout
    )
