"""Runs the repository's scripts for the tests (``helpers.run_script``) in forked copies of one
process that has imported torch, timm, Accelerate and adni_timm once.

Why: a fresh interpreter spends ~5 s of CPU importing them before ``train.py`` does anything, and
the suite starts dozens of runs. A fork is a fresh process as far as the script can tell: its own
pid, file descriptors 0-2 (stdin /dev/null, stdout and stderr to the files the test reads), working
directory, environment and ``sys.argv``; it runs ``runpy.run_path(script, run_name='__main__')``, as
``python script.py`` does, and its exit code is the script's. What it shares with the server is
only what the imports did: nothing has run a torch op here, so no thread pool exists to break in
the fork. ``helpers.run_script`` uses a real interpreter instead when the environment differs in a
variable that a preloaded library reads at import time (``IMPORT_TIME_ENV``).

Protocol (one request at a time, JSON lines): in ``{"script", "args", "cwd", "env", "stdout",
"stderr"}``; out ``{"pid": N}`` at once, then ``{"code": N}`` when the script has ended.
"""

import atexit
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
    err = os.open(request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    sys.argv = [request['script'], *request['args']]
    try:
        runpy.run_path(request['script'], run_name='__main__')
    except SystemExit as e:  # what the interpreter does with sys.exit(...)
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


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
        _, status = os.waitpid(pid, 0)
        print(json.dumps({'code': os.waitstatus_to_exitcode(status)}), file=reply, flush=True)


if __name__ == '__main__':
    main()
