"""``python -m adni_timm.data check DATA_DIR: the same command as adni-check-data.``"""

import sys

from ..cli.check import module_main

if __name__ == '__main__':
    sys.exit(module_main())
