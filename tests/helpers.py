"""Shared by the tests: the tiny recipe, script runners
(subprocess, as a user runs them), an offline Hub cache.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = (
    '--model adni_convnext_atto --img-size 64 --batch-size 8 --epochs 2 --warmup-epochs 1 '
    '--num-workers 0 --val-fraction 0.33 --lr 2e-3'
).split()
# two CPU processes on this machine (tests/test_ddp.py, tests/test_training.py)
LAUNCH = [
    sys.executable,
    *'-m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1'.split(),
    *'--mixed_precision no --dynamo_backend no'.split(),
]


def with_option(args, flag, value):
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def run_script(script, *args, env=None, check=True, timeout=900):
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f'{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
    return proc


def run_train(*args, **kwargs):
    return run_script('train.py', *args, **kwargs)


def train_in_process(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of train.py's main() in this process: for the fast refusals,
    which need no fresh interpreter (an uncaught exception fails the test, as a traceback would)."""
    from adni_timm.cli.train import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def populate_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The layout hf_hub_download leaves behind: blobs
    by hash, snapshot symlinks, refs/main -> commit.
    """
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type='model')
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / 'snapshots' / commit
    (repo / 'blobs').mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        blob = repo / 'blobs' / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)


def cli_in_process(capsys, tool: str, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``evaluate`` or ``push``'s main() in this process."""
    import importlib

    main = importlib.import_module(f'adni_timm.cli.{tool}').main
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_and_kill(run_dir: Path, args, state_file: Path, after_epoch: int = 1) -> None:
    """Start train.py into ``run_dir`` and SIGKILL it once ``state_file`` records ``after_epoch``:
    a run killed midway (the test fails if the run ends before that)."""
    import json
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / 'train.py'), '--output-dir', str(run_dir), *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())['epoch'] >= after_epoch:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f'the run ended before it could be killed midway ({state_file})'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
