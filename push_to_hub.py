#!/usr/bin/env python
"""Publish a training run to the Hugging Face Hub: ``python push_to_hub.py --help``.

The parsing lives in ``adni_timm.cli.push`` (also installed as ``adni-push``); the work in
``adni_timm.publish.hub``.
"""

import sys

# tests import these from here
from adni_timm.cli.push import format_file_list, main, parse_args  # noqa: F401

if __name__ == '__main__':
    sys.exit(main(prog='push_to_hub.py'))
