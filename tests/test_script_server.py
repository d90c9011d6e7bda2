"""tests/script_server.py: a script forked from the server answers as a fresh interpreter does."""

import os
import subprocess
import sys

import pytest

import helpers
from helpers import run_script


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


def test_an_import_time_variable_gets_a_fresh_interpreter(monkeypatch):
    server = helpers._server()
    assert server.can_take({**server.environ, 'ADNI_TIMM_CACHE': '/elsewhere'})
    assert not server.can_take({**server.environ, 'HF_HUB_CACHE': '/elsewhere'})
    assert not server.can_take({k: v for k, v in server.environ.items() if k != 'PATH'})


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
