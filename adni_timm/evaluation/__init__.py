"""Evaluation: honest metrics for a labelled split, predictions for unlabelled files, evidence maps.

``report``   ``evaluate`` a labelled split: operating point, slice/scan metrics with CIs, reports
``predict``  unlabelled files (slices, a folder, a 3D scan): P(AD) per slice and per scan
``cam``      evidence maps (occlusion, Grad-CAM) and their montages
``options``  ``EvaluationOptions``: batching, precision, backend, bad files, maps

The names below are importable as ``adni_timm.evaluation.NAME``; they load on first use.
"""

from ..utils.lazy import lazy_exports

_PUBLIC = {
    'report': (
        'CI_METHOD EvaluationError check_output_dir choose_point default_output_dir evaluate '
        'evaluation_tag format_table recorded_classes resolve_classes'
    ),
    'predict': 'format_predictions no_decision_summary predict_images unlabelled_slices',
    'options': 'CamOptions EvaluationOptions',
}
__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
