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
"""

import atexit
import builtins
import gc
import json
import logging
import os
import runpy
import sys
import threading
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
    out = os.open(request['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if request['stderr'] == request['stdout']:  # 2>&1: one file, one offset
        err = os.dup(out)
    else:
        err = os.open(request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
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


def main() -> None:
    reply = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
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
        print(json.dumps({'pid': pid}), file=reply, flush=True)
        _, status, usage = os.wait4(pid, 0)
        code, maxrss = os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024  # KiB on Linux
        print(json.dumps({'code': code, 'maxrss': maxrss}), file=reply, flush=True)


if __name__ == '__main__':
    main()
