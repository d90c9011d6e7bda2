"""adni-timm: scratch-initialised ConvNeXt for
Alzheimer's disease vs normal control on ADNI MRI slices.

Importing the package registers the ``adni_convnext_*`` timm entrypoints.
"""

from . import models  # noqa: F401  (registers the timm entrypoints)
from .models import LABEL_NAMES

__version__ = '0.1.0'
__all__ = ['LABEL_NAMES', '__version__', 'models']
