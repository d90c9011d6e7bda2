#!/usr/bin/env python
"""Evaluate a trained AD vs NC model at slice and scan level: ``python evaluate.py --help``.

The parsing lives in ``adni_timm.cli.evaluate`` (also installed as ``adni-evaluate``); the work in
``adni_timm.evaluation``.
"""

import sys

from adni_timm.cli.evaluate import main

if __name__ == '__main__':
    sys.exit(main(prog='evaluate.py'))
