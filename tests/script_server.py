"""Runs the repository's scripts for the tests (``helpers.run_script``) in forked copies of one
process that has imported torch, timm, Accelerate and adni_timm once.

Why: a fresh interpreter spends ~5 s of CPU importing them before ``train.py`` does anything, and
the suite starts dozens of runs. A fork is a fresh process as far as the script can tell: its own
pid, file descriptors 0-2 (stdin /dev/null, stdout and stderr to the files the test reads), working
directory, environment and ``sys.argv``; it runs ``runpy.run_path(script, run_name='__main__')`` as
``python script.py`` does, ``runpy.run_module(module, run_name='__main__', alter_sys=True)`` as
``python -m module`` does, or ``exec`` of the code in a fresh ``__main__`` as ``python -c code``
does, and its exit code is the script's. What it shares with the server is
only what the imports did: nothing has run a torch op here, so no thread pool exists to break in
the fork. ``helpers.run_script`` uses a real interpreter instead when the environment differs in a
variable that a preloaded library reads at import time (``IMPORT_TIME_ENV``).

Protocol (one request at a time, JSON lines): in ``{"script" or "module" or "code", "args", "cwd",
"env", "stdout", "stderr"}`` (stderr the same path as stdout: one file, as ``2>&1``); out
``{"pid": N}`` at once, then ``{"code": N, "maxrss": BYTES}`` when the script has ended: its exit
code and its peak resident set (``wait4``'s ru_maxrss, which counts the heap it inherited from
this server, ~0.5 GB of imports, in every run alike; mapped library files once it touches them).

The ranks of one ``accelerate launch`` (``helpers.accelerate_launch``): in ``{"ranks": [REQUEST,
...], "monitor_s", "shutdown_s"}``, each rank a request as above with ``"append": true`` (every
rank appends to the same stdout and stderr files, as workers share the launcher's streams) and
``"unbuffered": true`` (torchrun starts each worker as ``python -u``); out ``{"pids": [...]}`` at
once, then ``{"codes": [...], "maxrss": [...]}`` when every rank has ended. A rank that fails ends
the others as torchrun's agent does: it sees the failure at its next look (every ``monitor_s``),
sends the rest SIGTERM, and SIGKILL after ``shutdown_s``.
"""

import atexit
import builtins
import gc
import io
import json
import logging
import os
import runpy
import signal
import sys
import threading
import time
import traceback

import accelerate  # noqa: F401
import matplotlib

matplotlib.use('Agg')  # what plots.py selects; a display variable must not change it per run
import sklearn.metrics  # noqa: E402, F401
import timm  # noqa: E402, F401
import torch  # noqa: E402, F401

import adni_timm  # noqa: E402, F401
import adni_timm.cli.train  # noqa: E402, F401
import adni_timm.evaluation.report  # noqa: E402, F401
import adni_timm.train.loop  # noqa: E402, F401


def _child(request: dict) -> int:
    stdin = os.open(os.devnull, os.O_RDONLY)
    # a launch's ranks append to the files they share (each write lands at the end, none is lost)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if request.get('append') else os.O_TRUNC)
    out = os.open(request['stdout'], flags, 0o600)
    if request['stderr'] == request['stdout']:  # 2>&1: one file, one offset
        err = os.dup(out)
    else:
        err = os.open(request['stderr'], flags, 0o600)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    if request.get('unbuffered'):
        _unbuffered_stdio()
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    try:
        _run_main(request)
    except SystemExit as e:  # what the interpreter does with sys.exit(...)
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _unbuffered_stdio() -> None:
    """The streams ``python -u`` makes: every write goes straight to the file, so two ranks'
    lines interleave as a real launch's do, not in 8 KiB blocks at exit."""
    for name, errors in (('stdout', 'strict'), ('stderr', 'backslashreplace')):
        stream = io.TextIOWrapper(
            io.FileIO(getattr(sys, name).fileno(), 'w', closefd=False),
            encoding=getattr(sys, name).encoding,
            errors=errors,
            write_through=True,
        )
        setattr(sys, name, stream)
        setattr(sys, f'__{name}__', stream)


def _run_main(request: dict) -> None:
    """The request's script, module or code as ``__main__``, with the ``sys.argv`` and
    ``sys.path[0]`` that ``python script``, ``python -m module`` or ``python -c code`` gives."""
    if 'module' in request:
        sys.argv = [request['module'], *request['args']]  # run_module puts the file's path first
        sys.path[0] = os.getcwd()
        runpy.run_module(request['module'], run_name='__main__', alter_sys=True)
    elif 'code' in request:
        sys.argv = ['-c', *request['args']]
        sys.path[0] = ''
        main = type(sys)('__main__')
        main.__builtins__ = builtins
        sys.modules['__main__'] = main
        exec(compile(request['code'], '<string>', 'exec'), main.__dict__)
    else:
        sys.argv = [request['script'], *request['args']]
        sys.path[0] = os.path.dirname(os.path.realpath(request['script']))  # links resolved
        runpy.run_path(request['script'], run_name='__main__')


def _finalize() -> None:
    """What the interpreter does at a normal exit: join non-daemon threads, run the atexit
    functions, flush and close the logging handlers."""
    try:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        logging.shutdown()
    except BaseException:  # noqa: BLE001  (an exit function's error is printed, as Python does)
        traceback.print_exc()


def _fork(request: dict, reply) -> int:
    """The request's script forked; the child never returns from here."""
    reply.flush()
    sys.stderr.flush()
    # the imports' objects into the permanent generation: the child's collections never write
    # to their pages, so fewer of them are copied (a forked tiny train.py, 12 runs each:
    # 91,700 -> 60,800 page faults, 3.36 -> 3.00 CPU-seconds)
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(request)
        finally:
            _finalize()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001  (a closed stream: nothing left to say)
                    pass
            os._exit(code)
    return pid


def _serve_one(request: dict, reply) -> None:
    pid = _fork(request, reply)
    print(json.dumps({'pid': pid}), file=reply, flush=True)
    _, status, usage = os.wait4(pid, 0)
    code, maxrss = os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({'code': code, 'maxrss': maxrss}), file=reply, flush=True)


def _serve_ranks(request: dict, reply) -> None:
    """Every rank of one launch at once; they end as torchrun's agent ends its workers
    (torch/distributed/elastic: LocalElasticAgent._shutdown, SubprocessContext._close)."""
    pids = [_fork(rank, reply) for rank in request['ranks']]
    print(json.dumps({'pids': pids}), file=reply, flush=True)
    ended = {}  # pid: (exit code, peak resident set in bytes)

    def reap(block: bool) -> bool:
        """One rank reaped (False: none had ended). This server has no other children."""
        pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
        if pid in pids:
            ended[pid] = os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024
        return pid != 0

    def running() -> list[int]:
        return [pid for pid in pids if pid not in ended]

    while running() and all(code == 0 for code, _ in ended.values()):
        reap(block=True)
    if running():  # a rank failed: the agent sees it at its next look and stops the others
        time.sleep(request['monitor_s'])
        while running() and reap(block=False):
            pass
        for pid in running():
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + request['shutdown_s']
        while running() and time.monotonic() < deadline:
            if not reap(block=False):
                time.sleep(request['monitor_s'])
        for pid in running():
            os.kill(pid, signal.SIGKILL)
        while running():
            reap(block=True)
    codes, maxrss = zip(*(ended[pid] for pid in pids), strict=True)
    print(json.dumps({'codes': codes, 'maxrss': maxrss}), file=reply, flush=True)


def main() -> None:
    reply = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        if 'ranks' in request:
            _serve_ranks(request, reply)
        else:
            _serve_one(request, reply)


if __name__ == '__main__':
    main()
