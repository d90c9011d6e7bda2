"""tests/script_server.py: a script forked from the server answers as a fresh interpreter does."""

import json
import os
import signal
import subprocess
import sys

import pytest

import helpers
from helpers import run_script


@pytest.mark.slow
def test_a_forked_script_answers_as_a_fresh_interpreter_does(tmp_path, monkeypatch):
    args = ('--data-dir', tmp_path / 'nope', '--output-dir', tmp_path / 'run', '--epochs', '1')
    forked = run_script('train.py', *args, check=False)
    server = helpers._SERVER
    assert server is not None and server.proc.poll() is None  # the server took it
    monkeypatch.setenv('ADNI_TIMM_TEST_FORK', '0')
    fresh = run_script('train.py', *args, check=False)
    assert forked.returncode == fresh.returncode == 2
    assert (forked.stdout, forked.stderr) == (fresh.stdout, fresh.stderr)
    assert f'{tmp_path / "nope"} does not exist' in forked.stderr
    assert not (tmp_path / 'run').exists()


PROBE_CODE = (
    'import sys; print(__name__, sys.argv, repr(sys.path[0])); '
    'print("to stderr", file=sys.stderr); sys.exit(int(sys.argv[1]))'
)


@pytest.mark.parametrize(
    'main, code',
    [(('-m', 'tests.module_probe'), 3), (('-c', PROBE_CODE), 4), (('tests/module_probe.py',), 5)],
    ids=['module', 'code', 'script'],
)
def test_a_module_code_or_script_runs_forked_as_python_runs_it(main, code, monkeypatch):
    argv = (*main, code, 'a b')
    forked = helpers.run_python(*argv, check=False)
    assert helpers._SERVER is not None and helpers._SERVER.current.returncode == code  # forked
    monkeypatch.setenv('ADNI_TIMM_TEST_FORK', '0')
    fresh = helpers.run_python(*argv, check=False)
    assert forked.returncode == fresh.returncode == code
    assert (forked.stdout, forked.stderr) == (fresh.stdout, fresh.stderr)
    assert fresh.stdout.startswith('__main__') and 'a b' in fresh.stdout  # it ran, with its args


def test_stderr_into_stdout_is_one_file_as_2_and_1_is(tmp_path, monkeypatch):
    code = 'import sys; print("out", flush=True); print("err", file=sys.stderr); print("end")'
    logs = []
    for fork in ('1', '0'):
        monkeypatch.setenv('ADNI_TIMM_TEST_FORK', fork)
        log = tmp_path / f'log-{fork}'
        log.write_text('something older and longer than the output\n')  # truncated, as > does
        proc = helpers.popen_python('-c', code, stdout=log, stderr=subprocess.STDOUT)
        assert proc.wait(900) == 0  # a hang guard
        logs.append(log.read_text())
    assert logs[0] == logs[1] == 'out\nerr\nend\n'


def test_a_forked_script_reports_its_own_peak_memory():
    """``maxrss``: what hostile_files.run_measured compares. A fork's counts the server's pages
    it inherited, so a script that touches 300 MiB more reports ~300 MiB more, not less."""
    server = helpers._server()
    runs = {}
    for name, code in (('idle', 'pass'), ('300 MiB', 'x = b"1" * (300 * 1024**2)')):
        forked = server.start([sys.executable, '-c', code], dict(server.environ), *2 * [os.devnull])
        assert forked.wait(900) == 0  # a hang guard
        runs[name] = forked.maxrss
    status = open(f'/proc/{server.proc.pid}/status').read()
    anonymous = int(status.split('RssAnon:')[1].split()[0]) * 1024  # the server's own heap
    assert runs['idle'] >= 0.9 * anonymous  # the imports' memory it inherited counts
    assert 280 * 1024**2 <= runs['300 MiB'] - runs['idle'] <= 400 * 1024**2, runs


def test_a_forked_script_finds_the_servers_imports_frozen():
    """gc.freeze() before each fork: the script's collections leave the imports' pages alone."""
    server = helpers._server()
    code = 'import gc; print(gc.get_freeze_count())'
    proc = server.run([sys.executable, '-c', code], dict(server.environ), 900)
    assert proc.returncode == 0 and int(proc.stdout) > 100_000, proc.stdout + proc.stderr  # ~180k


def test_a_dataset_variable_is_read_by_the_forked_script_itself(tmp_path):
    """HF_DATASETS_* is read when ``datasets`` is imported, which the server never does: a forked
    script that imports it reads its own value (tests/test_hub_datasets.py relies on it)."""
    server = helpers._server()
    environ = {**server.environ, 'HF_DATASETS_CACHE': str(tmp_path / 'hf')}
    assert server.can_take(environ)
    code = (
        'import sys; print("datasets" in sys.modules); import datasets.config; '
        'print(datasets.config.HF_DATASETS_CACHE)'
    )
    proc = server.run([sys.executable, '-c', code], environ, 900)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['False', str(tmp_path / 'hf')]


def test_an_import_time_variable_gets_a_fresh_interpreter(monkeypatch):
    server = helpers._server()
    assert server.can_take({**server.environ, 'ADNI_TIMM_CACHE': '/elsewhere'})
    assert not server.can_take({**server.environ, 'HF_HUB_CACHE': '/elsewhere'})
    assert not server.can_take({k: v for k, v in server.environ.items() if k != 'PATH'})
    # what torchrun gives each worker is read at run time (the test below), the rest of TORCH* not
    assert server.can_take({**server.environ, 'TORCHELASTIC_RUN_ID': 'x'})
    assert not server.can_take({**server.environ, 'TORCH_HOME': '/elsewhere'})


def test_a_hung_script_is_killed_at_its_time_out_and_the_server_goes_on(tmp_path):
    hang = tmp_path / 'hang.py'
    hang.write_text('import time\ntime.sleep(600)\n')
    server = helpers._server()
    kill_after_s = 1  # the behaviour under test, not a speed check: the script never ends
    with pytest.raises(subprocess.TimeoutExpired):
        server.run([sys.executable, str(hang)], dict(server.environ), kill_after_s)
    assert server.proc.poll() is None  # still serving: the next script runs
    done = tmp_path / 'done.py'
    done.write_text('import os, sys\nprint(os.getcwd(), os.environ["PROBE"])\nsys.exit(3)\n')
    proc = server.run([sys.executable, str(done)], {**server.environ, 'PROBE': 'x'}, 900)
    assert proc.returncode == 3 and proc.stdout.split() == [str(helpers.ROOT), 'x']


def test_a_started_script_polls_and_dies_as_a_popen_does(tmp_path):
    hang = tmp_path / 'hang.py'
    hang.write_text('import time\ntime.sleep(600)\n')
    started = helpers.popen_script(hang)
    assert isinstance(started, helpers.Forked) and started.poll() is None
    started.kill()
    assert started.wait() == started.poll() == -9  # what subprocess.Popen says of a SIGKILL


@pytest.mark.slow
def test_a_script_a_test_left_running_ends_with_the_test_process(tmp_path):
    hang = tmp_path / 'hang.py'
    hang.write_text('import time\ntime.sleep(600)\n')
    code = (
        'import sys; sys.path.insert(0, sys.argv[1]); import helpers\n'
        'print(helpers.popen_script(sys.argv[2]).pid)\n'  # never waited for: a failed test
    )
    proc = subprocess.run(
        [sys.executable, '-c', code, str(helpers.ROOT / 'tests'), str(hang)],
        capture_output=True, text=True, timeout=900, env={**os.environ, 'ADNI_TIMM_TEST_FORK': '1'},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ProcessLookupError):  # killed and reaped at exit, not an orphan
        os.kill(int(proc.stdout.split()[-1]), 0)


# what the launcher and torchrun's agent give each worker, besides ACCELERATE_*
WORKER_VARIABLES = (
    'RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'GROUP_WORLD_SIZE',
    'ROLE_RANK', 'ROLE_NAME', 'ROLE_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'OMP_NUM_THREADS',
    'TORCHELASTIC_RESTART_COUNT', 'TORCHELASTIC_MAX_RESTARTS', 'TORCHELASTIC_RUN_ID',
    'TORCHELASTIC_SIGNALS_TO_HANDLE', 'TORCH_NCCL_ASYNC_ERROR_HANDLING',
)  # fmt: skip
NOT_GIVEN_TO_FORKED_RANKS = {'TORCHELASTIC_USE_AGENT_STORE', 'TORCHELASTIC_ERROR_FILE'}


@pytest.mark.slow
def test_forked_ranks_form_a_gloo_group_with_the_environment_the_real_launcher_gives(
    tmp_path, monkeypatch
):
    probe = helpers.ROOT / 'tests/launch_probe.py'
    reports = {}
    for fork in ('1', '0'):  # forked ranks, then the real `accelerate launch`
        monkeypatch.setenv('ADNI_TIMM_TEST_FORK', fork)
        out = tmp_path / fork
        out.mkdir()
        env = {'ACCELERATE_USE_CPU': '1'}
        proc = helpers.accelerate_launch(probe, out, port=29529, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert hasattr(proc, 'rank_codes') == (fork == '1')  # forked only when asked
        assert sorted(proc.stdout.splitlines()) == ['rank 0 of 2: sum 3', 'rank 1 of 2: sum 3']
        reports[fork] = [json.loads((out / f'rank{r}.json').read_text()) for r in (0, 1)]
    for rank, (forked, real) in enumerate(zip(reports['1'], reports['0'], strict=True)):
        assert forked['sum'] == real['sum'] == 3  # 1 + 2: the group formed and reduced
        assert forked['unbuffered'] and real['unbuffered']  # python -u
        differ = {
            k
            for k in forked['environ'].keys() | real['environ'].keys()
            if forked['environ'].get(k) != real['environ'].get(k)
        }
        # all else alike: what the test runs with, Accelerate's ACCELERATE_*, torchrun's variables
        assert differ == {'ADNI_TIMM_TEST_FORK', *NOT_GIVEN_TO_FORKED_RANKS}
        assert set(WORKER_VARIABLES) <= forked['environ'].keys()
        assert forked['environ']['ACCELERATE_MIXED_PRECISION'] == 'no'
        assert forked['environ']['RANK'] == forked['environ']['LOCAL_RANK'] == str(rank)
        assert forked['environ']['MASTER_PORT'] == '29529'
        # no agent: rank 0 hosts the group's store, and there is no agent to read an error file
        assert real['environ']['TORCHELASTIC_USE_AGENT_STORE'] == 'True'
        assert forked['environ']['TORCHELASTIC_USE_AGENT_STORE'] == 'False'
        assert real['environ']['TORCHELASTIC_ERROR_FILE'].endswith(f'/{rank}/error.json')


def test_a_failing_rank_fails_the_launch_and_the_other_rank_is_stopped(tmp_path):
    probe = helpers.ROOT / 'tests/launch_probe.py'
    env = {'ACCELERATE_USE_CPU': '1'}
    proc = helpers.accelerate_launch(probe, tmp_path, '1', port=29531, env=env)
    # rank 1 exits 3; rank 0, waiting for it to join the group, gets torchrun's SIGTERM (SIGKILL
    # would come 30 s later)
    assert proc.rank_codes == [-signal.SIGTERM, 3], proc.stderr[-3000:]
    assert proc.returncode == 1  # what `accelerate launch` exits with when a worker failed
    assert 'rank 1 fails on purpose' in proc.stderr
    assert not list(tmp_path.iterdir())  # no rank got past the group


@pytest.mark.slow
def test_the_variables_torchrun_gives_each_worker_are_not_read_by_the_servers_imports():
    """helpers.RUNTIME_ONLY_ENV: a fresh interpreter without them records every variable looked up
    by name (get, in, os.getenv, [...]) while it imports what tests/script_server.py imports;
    none of them is. Unset, they cannot be met by a scan of the whole environment (tqdm's, at
    import): only a look-up by name asks for them. Not seen: C code's getenv."""
    code = (
        'import os, runpy, sys\n'
        'read = set()\n'
        'class Recording(type(os.environ)):\n'
        '    def __getitem__(self, key):\n'
        '        read.add(key)\n'
        '        return super().__getitem__(key)\n'
        'e = os.environ\n'
        'os.environ = Recording(e._data, e.encodekey, e.decodekey, e.encodevalue, e.decodevalue)\n'
        'runpy.run_path(sys.argv[1], run_name="imports_only")\n'  # its main() not run
        'print(*sorted(read))\n'
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(helpers.RUNTIME_ONLY_ENV)}
    proc = subprocess.run(
        [sys.executable, '-c', code, str(helpers.ROOT / 'tests/script_server.py')],
        capture_output=True, text=True, timeout=900, cwd=helpers.ROOT, env=environ,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = proc.stdout.split()
    # it sees what imports look up, set or not: huggingface_hub's offline switch, torch.hub's cache
    assert 'HF_HUB_OFFLINE' in read and 'TORCH_HOME' in read, read
    assert [k for k in read if k.startswith(helpers.RUNTIME_ONLY_ENV)] == []
