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
    """``python SCRIPT ARGS`` from the repository root, as a user runs it: a CompletedProcess with
    its exit code, stdout and stderr. The process is forked from a server that imported torch and
    timm once (tests/script_server.py: ~5 s of CPU saved per run); ``ADNI_TIMM_TEST_FORK=0``, or
    an environment the server cannot take, starts a fresh interpreter instead."""
    return run_python(str(ROOT / script), *args, env=env, check=check, timeout=timeout)


def run_module(module, *args, env=None, check=True, timeout=900):
    """``python -m MODULE ARGS`` from the repository root, forked as ``run_script`` forks."""
    return run_python('-m', module, *args, env=env, check=check, timeout=timeout)


def run_python(*argv, env=None, check=True, timeout=900):
    """``python ARGV`` (a script, ``-m module`` or ``-c code``, then its arguments) from the
    repository root, forked as ``run_script`` forks when it can."""
    command = [sys.executable, *map(str, argv)]
    environ = {**os.environ, **(env or {})}
    server = _server_for(environ)
    if server is not None:
        proc = server.run(command, environ, timeout)
    else:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=environ
        )
    if check and proc.returncode != 0:
        raise AssertionError(f'{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
    return proc


# variables a preloaded library reads when it is imported (huggingface_hub's cache and offline
# switch, torch's and OpenMP's threads, matplotlib's config, Python's own): a request that changes
# one of them gets a fresh interpreter, which reads them as a user's process would
IMPORT_TIME_ENV = ('HF_', 'HUGGINGFACE', 'TRANSFORMERS', 'TORCH', 'PYTORCH', 'CUDA', 'OMP_', 'MKL',
                   'PYTHON', 'MPL', 'XDG_', 'TMPDIR', 'HOME', 'PATH', 'LD_')  # fmt: skip
# ... except these: read only by a library the server does not import (``datasets`` reads
# HF_DATASETS_* in datasets.config; huggingface_hub, timm and Accelerate do not), so the forked
# script's own import reads them (tests/test_script_server.py checks it)
NOT_PRELOADED_ENV = ('HF_DATASETS_',)
_SERVER = None


class _ScriptServer:
    """One tests/script_server.py per test process; requests go one at a time."""

    def __init__(self):
        self.environ = dict(os.environ)  # what its imports read
        self.current: Forked | None = None  # the script it runs or ran last (one at a time)
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / 'tests/script_server.py')],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=self.environ,
        )
        import atexit

        atexit.register(self.close)

    def close(self) -> None:
        """End of the test process: the server reads EOF and exits; wait for it (no zombie)."""
        if self.proc.poll() is None:
            if self.current is not None and self.current.returncode is None:
                self.current.kill()  # a script a failed test left running: not an orphan
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def can_take(self, environ) -> bool:
        changed = {
            k for k in set(environ) | set(self.environ) if environ.get(k) != self.environ.get(k)
        }
        return not any(
            k.startswith(IMPORT_TIME_ENV) and not k.startswith(NOT_PRELOADED_ENV) for k in changed
        )

    def _reply(self, deadline: float | None = None) -> dict | None:
        """The server's next line; None when ``deadline`` (time.monotonic) passes first."""
        import json
        import select
        import time

        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([self.proc.stdout], [], [], wait)[0]:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f'tests/script_server.py ended ({self.proc.poll()})')
        return json.loads(line)

    def start(self, command, environ, stdout, stderr) -> 'Forked':
        """``command`` (``[python, script, *args]``, ``[python, '-m', module, *args]`` or
        ``[python, '-c', code, *args]``) forked, its output into the two files (the same path
        twice: one file, as ``2>&1``)."""
        import json

        if self.current is not None and self.current.returncode is None:
            self.current.kill()  # a test that failed before waiting for its script: end it here
        if command[1] in ('-m', '-c'):
            main = {'-m': 'module', '-c': 'code'}[command[1]]
            request = {main: command[2], 'args': command[3:]}
        else:
            request = {'script': command[1], 'args': command[2:]}
        request.update(cwd=str(ROOT), env=environ, stdout=str(stdout), stderr=str(stderr))
        self.proc.stdin.write(json.dumps(request) + '\n')
        self.proc.stdin.flush()
        self.current = Forked(self, self._reply()['pid'])
        return self.current

    def run(self, command, environ, timeout) -> subprocess.CompletedProcess:
        import tempfile

        with tempfile.TemporaryDirectory(prefix='adni-timm-run-') as tmp:
            out, err = Path(tmp) / 'stdout', Path(tmp) / 'stderr'
            forked = self.start(command, environ, out, err)
            try:
                code = forked.wait(timeout)
            except subprocess.TimeoutExpired:  # a hang guard, as subprocess.run's timeout
                forked.kill()
                raise subprocess.TimeoutExpired(command, timeout) from None
            return subprocess.CompletedProcess(
                command, code, out.read_text(errors='replace'), err.read_text(errors='replace')
            )


class Forked:
    """A script forked by the server, with the part of Popen's interface the tests use."""

    def __init__(self, server: _ScriptServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None
        self.maxrss: int | None = None  # bytes, once it has ended (wait4: see script_server.py)

    def _ended(self, reply: dict) -> None:
        self.returncode, self.maxrss = reply['code'], reply['maxrss']

    def poll(self) -> int | None:
        if self.returncode is None:
            reply = self.server._reply(0)
            if reply is not None:
                self._ended(reply)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import time

        if self.returncode is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            reply = self.server._reply(deadline)
            if reply is None:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            self._ended(reply)
        return self.returncode

    def kill(self) -> None:
        import signal

        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()


def popen_script(script, *args, stdout=os.devnull, stderr=os.devnull, env=None):
    """``python SCRIPT ARGS`` started (not waited for), forked as ``run_script`` forks it when it
    can: an object with ``poll()``, ``wait()``, ``kill()`` and ``pid``, as ``subprocess.Popen``.
    ``stderr=subprocess.STDOUT``: both into ``stdout``."""
    return popen_python(str(ROOT / script), *args, stdout=stdout, stderr=stderr, env=env)


def popen_python(*argv, stdout=os.devnull, stderr=os.devnull, env=None):
    """``python ARGV`` (a script, ``-m module`` or ``-c code``, then its arguments) started, as
    ``popen_script`` starts a script."""
    command = [sys.executable, *map(str, argv)]
    environ = {**os.environ, **(env or {})}
    if stderr == subprocess.STDOUT:
        stderr = stdout
    server = _server_for(environ)
    if server is not None:
        return server.start(command, environ, stdout, stderr)
    with open(stdout, 'wb') as out:
        if stderr == stdout:
            return subprocess.Popen(
                command, cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT
            )
        with open(stderr, 'wb') as err:
            return subprocess.Popen(command, cwd=ROOT, env=environ, stdout=out, stderr=err)


def _server_for(environ) -> _ScriptServer | None:
    """The server, when forking is on (``ADNI_TIMM_TEST_FORK``) and it can take ``environ``;
    None: start a fresh interpreter."""
    if os.environ.get('ADNI_TIMM_TEST_FORK', '1') == '0':
        return None
    server = _server()
    return server if server is not None and server.can_take(environ) else None


def _server() -> _ScriptServer | None:
    global _SERVER
    if not hasattr(os, 'fork'):
        return None
    if _SERVER is None or _SERVER.proc.poll() is not None:
        _SERVER = _ScriptServer()
    return _SERVER


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
    import time

    proc = popen_script('train.py', '--output-dir', run_dir, *args)
    deadline = time.time() + 900  # a hang guard, never a speed check
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())['epoch'] >= after_epoch:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f'the run ended before it could be killed midway ({state_file})'
    proc.kill()
    proc.wait()
