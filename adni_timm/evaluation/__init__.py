"""Evaluation: honest metrics for a labelled split, predictions for unlabelled files, evidence maps.

``report``   ``evaluate`` a labelled split: operating point, slice/scan metrics with CIs, reports
``predict``  unlabelled files (slices, a folder, a 3D scan): P(AD) per slice and per scan
``cam``      evidence maps (occlusion, Grad-CAM) and their montages
``options``  ``EvaluationOptions``: batching, precision, backend, bad files, maps

The names below are importable as ``adni_timm.evaluation.NAME``; they load on first use.
"""

from importlib import import_module

_PUBLIC = {
    'report': (
        'CI_METHOD EvaluationError check_output_dir choose_point default_output_dir evaluate '
        'evaluation_tag format_table'
    ),
    'predict': 'format_predictions predict_images unlabelled_slices',
    'options': 'CamOptions EvaluationOptions',
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names.split()}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(f'.{_HOME[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
