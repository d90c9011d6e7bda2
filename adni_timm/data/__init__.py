"""Data in: slice files -> scans -> splits.

``slices``  the AD_NC layout: file names, classes, scanning a split folder (``Slice``)
``images``  reading and checking slice files: grayscale conversion, colour rule, decode check
``loader``  timm transforms, the decoded-slice cache, the dataset and its DataLoader
``subjects`` which person each scan is of: subject maps (course JSON, ADNI CSV, scan,subject CSV)
``device``  the cache on the accelerator: batches drawn and augmented there (``data_on_device``)
``splits``  validation split and cross-validation folds (grouped, stratified), leakage checks
``note``    what a data folder says about itself (``dataset.json``, ``prepare.json``)
``check``   the ``adni-check-data`` report (``python -m adni_timm.data check DIR``)
``hub_datasets``  Hugging Face datasets in (parquet, imagefolder, ``hf:ORG/NAME``): written once
            into the slice layout (``resolve_data_dir``)

The names below are the package's public API, importable as ``adni_timm.data.NAME``. They load on
first use (``utils.lazy``): importing one module of the room (``images`` for the demo) does not
import the others (the loader, the device path, ``datasets``).
"""

from ..utils.lazy import lazy_exports

_PUBLIC = {
    'slices': (
        'DataError FILE_NAME_PATTERN IMAGE_EXTENSIONS SPLITS Slice binary_labels parse_classes '
        'parse_file_name positive_index scan_split slice_count_outliers slice_key summarize'
    ),
    'images': 'is_colour is_colour_image read_image resolve_bad_images slice_problem to_gray',
    'loader': 'SliceCache SliceDataset build_transforms cache_fits create_loader preload',
    'device': 'DeviceBatches DeviceTransform device_batches',
    'check': 'CheckReport check_data_dir',
    'subjects': 'SubjectMap SubjectMapError find_subject_map read_subject_map',
    'hub_datasets': 'DatasetSourceError resolve_data_dir',
}
__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
