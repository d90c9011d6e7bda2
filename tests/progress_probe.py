"""train.py's main() with the progress-line interval shortened, so a tiny run prints some lines.

Used by tests/test_progress.py, which redirects this process's stdout and stderr to a file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from adni_timm.utils import progress  # noqa: E402
import train  # noqa: E402

progress.DEFAULT_INTERVAL_S = 0.2
sys.exit(train.main(sys.argv[1:]))
