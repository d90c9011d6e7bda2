#!/usr/bin/env python
"""Local web demo: drop MRI slices, read P(AD), the decision and Grad-CAM. Research use only.

    python app.py --model runs/tiny                     # http://127.0.0.1:7860
    python app.py --model hf-hub:ORG/NAME --port 8080
    ADNI_MODEL=hf-hub:ORG/NAME python app.py            # a Hugging Face Space (docs/SPACE.md)

Needs the demo extra: pip install -e '.[demo]'. The parsing lives in ``adni_timm.cli.app`` (also
installed as ``adni-app``, and ``python -m adni_timm.app``); the page in ``adni_timm.app.demo``.
"""

import sys

from adni_timm.cli.app import main

if __name__ == '__main__':
    sys.exit(main(prog='app.py'))
