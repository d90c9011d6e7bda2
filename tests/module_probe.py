"""What ``python -m tests.module_probe ARGS`` (or a forked run of it) sees: printed for
tests/test_script_server.py to compare a forked run with a fresh interpreter's."""

import sys

print(__name__, __spec__ and __spec__.name, sys.argv, sys.path[0])
print('to stderr', file=sys.stderr)
sys.exit(int(sys.argv[1]))
