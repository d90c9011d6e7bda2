"""``python -m adni_timm.synthetic OUT ...: the same command as adni-synthetic.``"""

import sys

from ..cli.synthetic import main

if __name__ == '__main__':
    sys.exit(main(prog='python -m adni_timm.synthetic'))
