import os

import pytest
import torch

# Never reach for the network from tests: the Hub is not available here.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

# pytest-xdist runs 2 workers (pyproject). Measured on the 2-core VM, whose speed drifts during the
# day: 2 workers 379-498 s for the suite, 1 process 553-614 s (most tests are single-threaded:
# imports, scripts, I/O). torch keeps up to 2 threads in each worker (1 thread made one in-process
# training fixture 14 s -> 32 s, a single sample); the scripts a test starts get the cores' share.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
os.environ.setdefault('OMP_NUM_THREADS', str(max(1, min(2, (os.cpu_count() or 1) // WORKERS))))


# pytest-xdist (--dist loadfile --no-loadscope-reorder, pyproject) hands out test files in
# collection order (its default order, most tests first, put the three one-test files of 70-120 s
# last); the longest files go first so that neither worker starts a long file when the other is
# nearly done. Seconds per file in a 2-worker run on the 2-core VM (2026-12-07, after the 32 px
# and fork-server cuts); files not named keep their place after these.
LONGEST_FIRST = {
    'test_training.py': 145, 'test_runs.py': 73, 'test_cam.py': 69, 'test_cv_null.py': 58,
    'test_benchmark.py': 54, 'test_prepare.py': 53, 'test_cv_run.py': 50,
    'test_data_on_device.py': 50, 'test_install.py': 47, 'test_onnx.py': 35,
    'test_evaluation.py': 34, 'test_loading_paths.py': 33, 'test_app.py': 32, 'test_ddp.py': 31,
    'test_faults.py': 30,
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.path.name, 0))  # stable: files stay whole
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """SYNTHETIC: 6 train + 3 test scans per class,
    4 slices each (read-only: copy it to change it).
    """
    from adni_timm.synthetic.slices import generate

    out = tmp_path_factory.mktemp('synthetic') / 'AD_NC'
    generate(out, train_subjects=6, test_subjects=3, slices=4, seed=0)
    return out


@pytest.fixture(scope='session')
def tiny_run(tiny_data, tmp_path_factory):
    """(RUN, completed process) of a 2-epoch tiny run
    on ``tiny_data`` (read-only: copy it to change it).
    """
    from helpers import TINY, run_train

    run = tmp_path_factory.mktemp('runs') / 'tiny'
    proc = run_train('--data-dir', tiny_data, '--output-dir', run, *TINY)
    return run, proc
