"""Shared by the tests: the tiny recipe, script runners
(subprocess, as a user runs them), an offline Hub cache.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

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


def accelerate_launch(*argv, port, env=None, timeout=900):
    """``accelerate launch`` with ``LAUNCH``'s options and ``--main_process_port PORT`` of ``argv``
    (a script or ``-m module``, then its arguments) from the repository root: a CompletedProcess
    of the launch, its ranks' output interleaved in stdout and stderr as the launcher's.

    The two ranks are forked from the script server (14-16 s of CPU saved per launch: the
    launcher's and two workers' imports) with the environment the real launcher gives each
    (``launched_workers``: tests/test_script_server.py compares every variable) and end as
    torchrun ends them (tests/script_server.py). What differs: no launcher process, so no agent
    TCPStore (rank 0 hosts the group's: ``TORCHELASTIC_USE_AGENT_STORE=False``), no
    ``TORCHELASTIC_ERROR_FILE`` and a one-line report in place of ChildFailedError's;
    ``returncode`` is 1 when a rank failed, as the launcher's (``rank_codes``: each rank's).
    ``ADNI_TIMM_TEST_FORK=0``, an environment the server cannot take, or a launch torchrun would
    run otherwise (a port in use) runs the real launcher; tests/test_training.py always does,
    for one real proof."""
    command = [*LAUNCH, '--main_process_port', str(port), *map(str, argv)]
    environ = {**os.environ, **(env or {})}
    server = _server_for(environ)
    workers = None if server is None else launched_workers(command[1:], environ)
    if workers is not None and all(server.can_take(e) for e in workers.environs):
        return server.run_ranks(command, workers, timeout)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=environ
    )


class LaunchedWorkers(NamedTuple):
    """What torchrun would start for a launch: each worker's ``[python, script | -m module,
    *args]`` and environment, how often its agent looks at them and how long it lets them end."""

    argvs: list[list[str]]
    environs: list[dict[str, str]]
    monitor_s: float
    shutdown_s: float


def launched_workers(launch_argv, environ) -> LaunchedWorkers | None:
    """The workers ``python LAUNCH_ARGV`` (``-m accelerate.commands.launch --multi_gpu ...``) would
    start with ``environ``, found by Accelerate's and torchrun's own code: Accelerate's
    ``launch_command_parser``, ``_validate_launch_command`` and ``multi_gpu_launcher`` (which calls
    ``prepare_multi_gpu_env``) up to where it hands over to torchrun, then torchrun's
    ``config_from_args``; per worker the variables LocalElasticAgent._start_workers sets. None
    for a launch this does not reproduce (another launcher, several machines, torchrun's own
    rendezvous on a free port when the given one is in use)."""
    from unittest import mock

    import accelerate.commands.launch as accelerate_launcher
    import torch.distributed.run as torchrun
    from accelerate.utils.launch import _filter_args

    if list(launch_argv[:2]) != ['-m', 'accelerate.commands.launch']:
        return None
    handed_over = {}

    def run_torchrun(args):  # multi_gpu_launcher's last step, in the environment it has set
        args = _filter_args(
            args,
            torchrun.get_args_parser(),
            ['--training_script', args.training_script,
             '--training_script_args', args.training_script_args],
        )  # fmt: skip
        if args.standalone or args.rdzv_backend != 'static' or args.rdzv_endpoint:
            return  # torchrun.run would rendezvous through its agent's store (on a free port)
        if args.master_port is None:
            return
        config, cmd, cmd_args = torchrun.config_from_args(args)  # may set OMP_NUM_THREADS
        if not args.log_dir:  # the empty folder it made for the agent's logs: no agent here
            os.rmdir(config.logs_specs.root_log_dir)
        os.environ['TORCHELASTIC_SIGNALS_TO_HANDLE'] = config.signals_to_handle  # launch_agent
        handed_over.update(args=args, config=config, cmd=cmd, cmd_args=cmd_args)
        handed_over['environ'] = dict(os.environ)

    with (
        mock.patch.dict(os.environ, environ, clear=True),
        mock.patch.object(accelerate_launcher, '_run_torchrun', run_torchrun),
    ):
        args = accelerate_launcher.launch_command_parser().parse_args(launch_argv[2:])
        args, _, _ = accelerate_launcher._validate_launch_command(args)
        # launch_command's choice: this reproduces only its multi_gpu_launcher
        if not args.multi_gpu or args.cpu or args.use_deepspeed or args.use_fsdp:
            return None
        if args.use_megatron_lm:
            return None
        accelerate_launcher.multi_gpu_launcher(args)
    if not handed_over:
        return None
    return _torchrun_workers(**handed_over)


def _torchrun_workers(args, config, cmd, cmd_args, environ) -> LaunchedWorkers | None:
    """torchrun's workers on one machine (LocalElasticAgent._start_workers, static rendezvous)."""
    from torch.distributed.elastic.utils import macros

    if (config.min_nodes, config.max_nodes) != (1, 1) or config.virtual_local_rank:
        return None
    if cmd != sys.executable or not cmd_args or cmd_args[0] != '-u':
        return None  # a run_path or no-python launch: not a ``python -u`` worker
    size = config.nproc_per_node
    shutdown_s = args.shutdown_timeout or float(environ.get('TORCH_ELASTIC_SHUTDOWN_TIMEOUT', 30))
    argvs, environs = [], []
    for rank in range(size):  # one machine: global, local and role ranks are one number
        argvs.append([sys.executable, *macros.substitute(list(cmd_args[1:]), str(rank))])
        worker = {
            'RANK': str(rank), 'GROUP_RANK': str(args.node_rank), 'ROLE_RANK': str(rank),
            'ROLE_NAME': config.role, 'LOCAL_WORLD_SIZE': str(size), 'WORLD_SIZE': str(size),
            'GROUP_WORLD_SIZE': '1', 'ROLE_WORLD_SIZE': str(size),
            'MASTER_ADDR': args.master_addr, 'MASTER_PORT': str(args.master_port),
            'TORCHELASTIC_RESTART_COUNT': '0',
            'TORCHELASTIC_MAX_RESTARTS': str(config.max_restarts),
            'TORCHELASTIC_RUN_ID': config.run_id,
            # no agent here to host the group's TCPStore: rank 0 hosts it (torch.distributed's
            # env:// rendezvous), as under a plain ``torch.distributed`` launch without torchrun
            'TORCHELASTIC_USE_AGENT_STORE': 'False',
            'TORCH_NCCL_ASYNC_ERROR_HANDLING': environ.get('TORCH_NCCL_ASYNC_ERROR_HANDLING', '1'),
            'LOCAL_RANK': str(rank),
        }  # fmt: skip
        environs.append({**environ, **worker})
    return LaunchedWorkers(argvs, environs, config.monitor_interval, shutdown_s)


# variables a preloaded library reads when it is imported (huggingface_hub's cache and offline
# switch, torch's and OpenMP's threads, matplotlib's config, Python's own): a request that changes
# one of them gets a fresh interpreter, which reads them as a user's process would
IMPORT_TIME_ENV = ('HF_', 'HUGGINGFACE', 'TRANSFORMERS', 'TORCH', 'PYTORCH', 'CUDA', 'OMP_', 'MKL',
                   'PYTHON', 'MPL', 'XDG_', 'TMPDIR', 'HOME', 'PATH', 'LD_')  # fmt: skip
# ... except these: read only by a library the server does not import (``datasets`` reads
# HF_DATASETS_* in datasets.config; huggingface_hub, timm and Accelerate do not), so the forked
# script's own import reads them (tests/test_script_server.py checks it)
NOT_PRELOADED_ENV = ('HF_DATASETS_',)
# ... nor these, which torchrun's agent gives each worker (``accelerate_launch``): torch.distributed
# reads them when a process group forms or an error is recorded, never at import (checked by
# tests/test_script_server.py), so each forked rank reads its own
RUNTIME_ONLY_ENV = ('TORCHELASTIC_', 'TORCH_NCCL_ASYNC_ERROR_HANDLING')
_SERVER = None


class _ScriptServer:
    """One tests/script_server.py per test process; requests go one at a time."""

    def __init__(self):
        self.environ = dict(os.environ)  # what its imports read
        # the script (or a launch's ranks) it runs or ran last: one request at a time
        self.current: Forked | ForkedRanks | None = None
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
        not_at_import = NOT_PRELOADED_ENV + RUNTIME_ONLY_ENV
        return not any(
            k.startswith(IMPORT_TIME_ENV) and not k.startswith(not_at_import) for k in changed
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

    def _request(self, request: dict) -> dict:
        """``request`` sent; the server's first reply (the pids it forked)."""
        import json

        if self.current is not None and self.current.returncode is None:
            self.current.kill()  # a test that failed before waiting for its script: end it here
        self.proc.stdin.write(json.dumps(request) + '\n')
        self.proc.stdin.flush()
        return self._reply()

    def start(self, command, environ, stdout, stderr) -> 'Forked':
        """``command`` (``[python, script, *args]``, ``[python, '-m', module, *args]`` or
        ``[python, '-c', code, *args]``) forked, its output into the two files (the same path
        twice: one file, as ``2>&1``)."""
        request = _script_request(command, environ, stdout, stderr)
        self.current = Forked(self, self._request(request)['pid'])
        return self.current

    def run_ranks(
        self, command, workers: 'LaunchedWorkers', timeout
    ) -> subprocess.CompletedProcess:
        """The launch ``command``'s workers forked at once, their output into one stdout and one
        stderr as a launch's is: a CompletedProcess of the launch (``returncode`` 1, as
        ``accelerate launch`` exits, when any rank failed; ``rank_codes``: each rank's code)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix='adni-timm-launch-') as tmp:
            out, err = Path(tmp) / 'stdout', Path(tmp) / 'stderr'
            ranks = [
                {**_script_request(argv, env, out, err), 'append': True, 'unbuffered': True}
                for argv, env in zip(workers.argvs, workers.environs, strict=True)
            ]
            request = dict(ranks=ranks, monitor_s=workers.monitor_s, shutdown_s=workers.shutdown_s)
            forked = self.current = ForkedRanks(self, self._request(request)['pids'])
            try:
                codes = forked.wait(timeout)
            except subprocess.TimeoutExpired:  # a hang guard, as subprocess.run's timeout
                forked.kill()
                raise subprocess.TimeoutExpired(command, timeout) from None
            stderr = err.read_text(errors='replace')
            if any(codes):  # what the launcher's ChildFailedError report says, in one line
                stderr += f'accelerate_launch: the forked ranks exited with {codes}\n'
            proc = subprocess.CompletedProcess(
                command, int(any(codes)), out.read_text(errors='replace'), stderr
            )
            proc.rank_codes = codes
            return proc

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


class ForkedRanks:
    """The ranks of one launch, forked by the server together: ``returncode`` is each rank's exit
    code once all have ended."""

    def __init__(self, server: _ScriptServer, pids: list[int]):
        self.server, self.pids, self.returncode = server, pids, None

    def wait(self, timeout: float | None = None) -> list[int]:
        import time

        if self.returncode is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            reply = self.server._reply(deadline)
            if reply is None:
                raise subprocess.TimeoutExpired(str(self.pids), timeout)
            self.returncode = reply['codes']
        return self.returncode

    def kill(self) -> None:
        import signal

        if self.returncode is None:
            for pid in self.pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # reaped already: the server is replying
                    pass
            self.wait()


def _script_request(command, environ, stdout, stderr) -> dict:
    """The server's request for ``command`` (``[python, script | -m module | -c code, *args]``)."""
    if command[1] in ('-m', '-c'):
        main = {'-m': 'module', '-c': 'code'}[command[1]]
        request = {main: command[2], 'args': command[3:]}
    else:
        request = {'script': command[1], 'args': command[2:]}
    paths = {'stdout': str(stdout), 'stderr': str(stderr)}
    return {**request, 'cwd': str(ROOT), 'env': environ, **paths}


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
