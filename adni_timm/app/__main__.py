"""``python -m adni_timm.app --model RUN: the same command as adni-app.``"""

import sys

from ..cli.app import main

if __name__ == '__main__':
    sys.exit(main(prog='python -m adni_timm.app'))
