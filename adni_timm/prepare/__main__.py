"""``python -m adni_timm.prepare SRC OUT ...: the same command as adni-prepare.``"""

import sys

from ..cli.prepare import main

if __name__ == '__main__':
    sys.exit(main(prog='python -m adni_timm.prepare'))
