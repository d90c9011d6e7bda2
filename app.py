#!/usr/bin/env python
"""Local web demo: drop MRI slices, read P(AD), the decision and Grad-CAM. Research use only.

    python app.py --model runs/tiny                     # http://127.0.0.1:7860
    python app.py --model hf-hub:ORG/NAME --port 8080
    ADNI_MODEL=hf-hub:ORG/NAME python app.py            # a Hugging Face Space (docs/SPACE.md)

Needs the demo extra: pip install -e '.[demo]'. Argument parsing only; the page lives in
``adni_timm.app``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys

__all__ = ['main']


def _parse_args(argv):
    p = argparse.ArgumentParser(prog='app.py', description=__doc__.split('\n')[0])
    p.add_argument(
        '--model',
        default=os.environ.get('ADNI_MODEL'),
        help='RUN folder, export folder, local-dir:DIR or hf-hub:ORG/NAME[@rev] '
        '(default: $ADNI_MODEL)',
    )
    # a Space sets GRADIO_SERVER_NAME=0.0.0.0; anywhere else the page stays on this machine
    p.add_argument(
        '--host',
        default=os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1'),
        help='address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1: '
        'this machine only)',
    )
    p.add_argument(
        '--port',
        type=int,
        default=int(os.environ.get('GRADIO_SERVER_PORT', 7860)),
        help='port (default: $GRADIO_SERVER_PORT, else 7860)',
    )
    args = p.parse_args(argv)
    if not args.model:
        p.error('pass --model RUN|local-dir:DIR|hf-hub:ORG/NAME, or set ADNI_MODEL')
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    logging.getLogger('timm').setLevel(logging.WARNING)
    if importlib.util.find_spec('gradio') is None:  # say so before a model is downloaded
        print(
            "error: the demo needs gradio: pip install -e '.[demo]' (or pip install 'gradio>=4')",
            file=sys.stderr,
        )
        return 1
    from adni_timm import app

    try:
        demo_model = app.load(args.model)
    except (ValueError, OSError) as e:  # ExportError, missing files: one line, no traceback
        print(f'error: {e}', file=sys.stderr)
        return 1
    app.launch(demo_model, host=args.host, port=args.port)
    return 0


if __name__ == '__main__':
    sys.exit(main())
