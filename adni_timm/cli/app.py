"""``adni-app --model RUN``: the local web demo (also ``python app.py``, ``python -m
adni_timm.app.demo``).

Drop MRI slices, read P(AD), the decision and Grad-CAM. Research use only. Needs the demo extra
(``pip install 'adni-timm[demo]'``). Parsing only: the page lives in ``adni_timm.app.demo``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys

from adni_timm.cli import (
    ArgumentParser,
    EXIT_OK,
    EXIT_REFUSED,
    HelpFormatter,
    command,
    examples,
    fail,
)

__all__ = ['build_parser', 'main']

PROG = 'adni-app'


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description='Local web demo: drop MRI slices, read P(AD), the decision and Grad-CAM. '
        "Research use only. Needs the demo extra: pip install 'adni-timm[demo]'.",
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s --model runs/tiny                  # http://127.0.0.1:7860',
            '%(prog)s --model hf-hub:ORG/NAME --port 8080',
            '%(prog)s --model runs/tiny --backend onnxruntime   # P(AD) from model.onnx',
            'ADNI_MODEL=hf-hub:ORG/NAME %(prog)s        # as a Hugging Face Space runs it',
        ),
    )
    parser.add_argument(
        '--model',
        default=os.environ.get('ADNI_MODEL'),
        help='RUN folder, export folder, local-dir:DIR or hf-hub:ORG/NAME[@rev] '
        '(default: $ADNI_MODEL)',
    )
    # a Space sets GRADIO_SERVER_NAME=0.0.0.0; anywhere else the page stays on this machine
    parser.add_argument(
        '--host',
        default=os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1'),
        help='address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1: '
        'this machine only)',
    )
    parser.add_argument(
        '--port',
        type=int,
        default=int(os.environ.get('GRADIO_SERVER_PORT', 7860)),
        help='port (default: $GRADIO_SERVER_PORT, else 7860)',
    )
    parser.add_argument(
        '--min-accepted',
        type=float,
        default=0.5,
        metavar='FRACTION',
        help='a scan gets a decision only when at least this fraction of its slices pass the '
        'input check; else "no decision" with the count',
    )
    parser.add_argument(
        '--backend',
        choices=('torch', 'onnxruntime'),
        default='torch',
        help="onnxruntime: P(AD) from the export's model.onnx (written beside a local export "
        'when missing; needs the onnx extra); the input check and Grad-CAM stay on torch '
        '(default: torch)',
    )
    return parser


@command
def main(argv=None, prog: str = PROG) -> int:
    """Serves until stopped (0); 2 when the model cannot be loaded or gradio is missing."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.model:
        parser.error('pass --model RUN|local-dir:DIR|hf-hub:ORG/NAME, or set ADNI_MODEL')
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    logging.getLogger('timm').setLevel(logging.WARNING)
    if importlib.util.find_spec('gradio') is None:  # say so before a model is downloaded
        return fail(
            prog,
            "the demo needs gradio: pip install 'adni-timm[demo]' (or pip install 'gradio>=4')",
            EXIT_REFUSED,
        )
    from adni_timm.app import demo as app

    from adni_timm.app.uploads import private_temp_dir

    try:
        demo_model = app.load(args.model, backend=args.backend, min_accepted=args.min_accepted)
    except (ValueError, OSError) as e:  # ExportError, missing files: one line, no traceback
        return fail(prog, e)
    # a service manager (or a Space) stops the server with SIGTERM: close it as Ctrl-C does, so
    # the uploads' folder is removed (Python's default for SIGTERM ends without any clean-up)
    signal.signal(signal.SIGTERM, _interrupt)
    with private_temp_dir():  # everything gradio writes, removed when the server stops
        app.launch(demo_model, host=args.host, port=args.port)
    return EXIT_OK


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == '__main__':
    sys.exit(main())
