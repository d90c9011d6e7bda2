"""``python -m adni_timm.cv compare RUN_A RUN_B (parsing: adni_timm.cli.cv).``"""

import sys

from ..cli.cv import main

if __name__ == '__main__':
    sys.exit(main())
