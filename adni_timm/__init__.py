"""adni-timm: scratch-initialised ConvNeXt for
Alzheimer's disease vs normal control on ADNI MRI slices.

Importing the package registers the ``adni_convnext_*`` timm entrypoints.
"""

from importlib.metadata import PackageNotFoundError, version

from .utils.interrupt import quiet_until_main

# a command's Ctrl-C during the imports below (torch, timm: seconds) exits 130 in one line; a
# notebook or test importing the library keeps Python's KeyboardInterrupt (utils/interrupt.py)
quiet_until_main()

from . import models  # noqa: E402, F401  (registers the timm entrypoints)
from .models import LABEL_NAMES  # noqa: E402

try:  # one source of truth: pyproject's version, as the installed metadata holds it
    __version__ = version('adni-timm')
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = '0+unknown'
__all__ = ['LABEL_NAMES', '__version__', 'models']
