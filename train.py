#!/usr/bin/env python
"""Train an ADNI AD vs NC classifier (timm + Accelerate): ``python train.py --help``.

The documented way to launch, on one GPU, several, or the CPU: ``python train.py ...`` or
``accelerate launch train.py ...``. The parsing lives in ``adni_timm.cli.train`` (also installed as
the ``adni-train`` console script); the work in ``adni_timm.train.loop``.
"""

import sys
from functools import partial

from adni_timm.cli import train as _cli

# tests and probes import these from here
from adni_timm.cli.train import build_parser, run  # noqa: F401

main = partial(_cli.main, prog='train.py')  # usage and error lines name the script that was run

if __name__ == '__main__':
    sys.exit(main())
