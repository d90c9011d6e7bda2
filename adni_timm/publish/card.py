"""The model card (README.md) of a published run, built with huggingface_hub's ``ModelCard``.

Everything here is a pure function of plain data read from the run folder (export config, resolved
training config, split or folds, evaluate.py metrics, cv.json, the model's measured size), so the
card can be tested without a model or the network. What the card says about the data, the classes
and the errors is derived from that data, never assumed: a synthetic run gets no ADNI population
bullet, three classes get three-class wording, a perfect model no "more frequent error". The front
matter carries ``model-index`` eval results (rendered by the Hub as an evaluation widget) and a
``widget`` entry with a SYNTHETIC example image.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .complexity import ModelStats
from ..utils.display import fmt, is_number
from ..export.format import ExportSettings
from ..export.licence import weights_licence
from ..export.input_description import InputDescription, orientation, recipe_lines
from ..models import LABEL_NAMES
from ..run import EvalCheck
from ..utils.legacy import upgrade_key
from .card_facts import (
    _MCI_LIKE,
    CLASS_NAMES,
    DataSource,
    Task,
    _lower_first,
    _threshold_origin,
    _table,
)
from .card_results import (
    _cross_validation,
    _error_sentence,
    _evaluation,
    _folds_summary,
)  # noqa: F401

__all__ = [
    'CARD_TAGS',
    'EVAL_METRICS',
    'ACK_PLACEHOLDER',
    'CLASS_NAMES',
    'DataSource',
    'Task',
    'build_model_card',
    'eval_results_from_metrics',
    'metrics_from_card',
    'public_train_config',
]

TEMPLATE = 'modelcard.md'  # in templates/, package data (pyproject)
CARD_TAGS = [
    'timm',
    'image-classification',
    'medical-imaging',
    'mri',
    'alzheimers',
    'convnext',
]
# metrics.json key -> model-index metric type; the subset reported in model-index
EVAL_METRICS = {
    'accuracy': 'accuracy',
    'auc': 'roc_auc',
    'sensitivity': 'recall',
    'specificity': 'specificity',
}
ACK_PLACEHOLDER = (
    '> **TODO (publisher): ADNI acknowledgement - complete before making this repository '
    'public.**\n> The ADNI Data Use Agreement requires every publication that uses ADNI data to '
    'carry the ADNI\n> acknowledgement and funding statement, and it may require ADNI approval to '
    'share derived models.\n> Replace this block with the exact text from your Data Use '
    'Agreement\n> (`adni-push --acknowledgement FILE` fills it in).'
)
ARCHITECTURE_NAMES = {
    'convnext_atto': 'ConvNeXt-Atto',
    'convnext_nano': 'ConvNeXt-Nano',
    'convnext_tiny': 'ConvNeXt-T',
    'convnext_small': 'ConvNeXt-S',
    'convnext_base': 'ConvNeXt-B',
}
# diagnostic groups a class list may name (ADNI's and the usual ones); others appear as written
# config keys never shown in the card: credentials, and local paths of the publisher's machine
_SECRET_KEY = re.compile(r'token|secret|password|passwd|api_?key|credential', re.IGNORECASE)
_PATH_KEY = re.compile(r'(_dir|_path|_file|^resume|^subjects)$')

# --------------------------------------------------------------------------------------------------
# what the data and the task are, derived from the export


def _model_index_type(source: DataSource) -> str:
    """model-index's required ``dataset.type``: none of these data sets is on the Hub, so a name
    that cannot be read as a Hub dataset id (spaces, brackets) rather than an id that is not one."""
    return f'{source.name} (not a Hub dataset)'


# --------------------------------------------------------------------------------------------------
# the card


def build_model_card(
    *,
    repo_id: str,
    config: dict[str, Any],
    num_params: int,
    stats: ModelStats | None = None,
    train_config: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    folds: dict[str, Any] | None = None,
    refit_split: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    eval_facts: EvalCheck | None = None,
    cv: dict[str, Any] | None = None,
    plots: Sequence[str] = (),
    example: str | None = None,
    acknowledgement: str | None = None,
    licence: str | None = None,
    licence_link: str | None = None,
) -> ModelCard:
    """The card for the export described by ``config`` (its timm config.json), published as
    ``repo_id``.

    ``stats``: the published network measured (``complexity.measure_export_config``): GMACs,
    feature-map shapes. ``split`` is an ordinary run's ``split.json``; a cross-validation run has
    ``folds`` (``folds.json``), ``refit_split`` (``refit/split.json``) and ``cv`` (``cv.json``)
    instead. ``eval_facts`` (``run.check_eval_belongs``) decide what the card may claim about
    ``metrics``: an evaluation not matched to these weights is published only with a warning, and
    "the test split shares no scan with training" only when it was checked. ``example``: the
    file name of the SYNTHETIC example image uploaded beside the card (widget and Input data).
    ``licence`` / ``licence_link``: the terms of real training data (``adni-push --license``).
    The prose is ``templates/modelcard.md`` (Jinja); this module computes what it states.
    """
    extra = config.get('adni_timm', {})
    settings = ExportSettings.from_dict(extra)
    source = DataSource.of(settings)
    task = Task(tuple(_label_names(config)))
    terms = weights_licence(
        synthetic=source.synthetic,
        adni=source.adni,
        data_name=source.name,
        chosen=licence,
        link=licence_link,
    )
    eval_results = eval_results_from_metrics(metrics, source, task.classes) if metrics else None
    card_data = ModelCardData(
        model_name=repo_id.split('/')[-1],
        library_name='timm',
        pipeline_tag='image-classification',
        **terms.front_matter,
        tags=CARD_TAGS
        + (['adni'] if source.adni else [])
        + (['synthetic-data'] if source.synthetic else []),
        metrics=list(EVAL_METRICS.values()),
        eval_results=eval_results or None,
        widget=[_widget(repo_id, example)] if example else None,
    )
    cfg = config.get('pretrained_cfg', {})
    _, height, width = cfg.get('input_size', (3, 224, 224))
    maps_comment, embedding_comment = _shape_comments(stats)
    scans = (metrics or {}).get('scan') or {}
    text = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            card_data=card_data.to_yaml(),
            model_name=repo_id.split('/')[-1],
            repo_id=repo_id,
            arch=_arch_name(config),
            task=task,
            pos=task.positive,
            mci_groups=[c for c in task.classes if c in _MCI_LIKE],
            source=source,
            licence=terms,
            acknowledgement=acknowledgement.strip() if acknowledgement else None,
            ack_placeholder=ACK_PLACEHOLDER,
            error_sentence=_error_sentence(scans, task),
            threshold_origin=_threshold_origin(settings.threshold_source),
            height=height,
            width=width,
            own_map=_class_map(task.classes),
            alphabetical_map=_class_map(sorted(task.classes)),
            maps_comment=maps_comment,
            embedding_comment=embedding_comment,
            sections={
                'model_details': _model_details(config, num_params, stats, task),
                'training_data': _training_data(
                    split, folds, refit_split, cv, settings, metrics, eval_facts, source
                ),
                'input_data': _input_data(config, settings, source, example),
                'training_procedure': _training_procedure(settings, train_config, refit_split),
                'cross_validation': _cross_validation(cv, task),
                'evaluation': _evaluation(metrics, eval_facts, plots, source, task),
            },
        )
    )
    return ModelCard(text)


@functools.cache
def _environment() -> jinja2.Environment:
    # the template ships as package data; an undefined name fails loudly instead of printing ''
    return jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, 'templates'),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # markdown, not HTML: the Hub renders and sanitises it
    )


def _shape_comments(stats: ModelStats | None) -> tuple[str, str]:
    """How to use's code comments: feature-map shapes and the embedding size, when measured."""
    if stats is None or not stats.features:
        return '# one map per stage', '# [1, num_features]'
    shapes = ', '.join(
        f'[1, {c}, {h}, {w}]' for c, h, w in map(stats.feature_shape, range(len(stats.features)))
    )
    return f'# {len(stats.features)} maps: {shapes}', f'# [1, {stats.num_features}]'


def _widget(repo_id: str, example: str) -> dict[str, str]:
    # the widget fetches the image itself: an absolute URL of the file in this very repo
    return {
        'src': f'https://huggingface.co/{repo_id}/resolve/main/{example}',
        'example_title': 'SYNTHETIC example slice (generated, not MRI)',
    }


def eval_results_from_metrics(
    metrics: dict[str, Any],
    source: DataSource | bool | None = None,
    classes: Sequence[str] = LABEL_NAMES,
) -> list[EvalResult]:
    """model-index results: accuracy, AUC, sensitivity, specificity at slice and scan level."""
    if not isinstance(source, DataSource):  # a bool: synthetic or not (the older signature)
        source = DataSource.of(ExportSettings(synthetic=bool(source)))
    task = Task(tuple(classes))
    names = task.metric_names()
    split = metrics.get('split', 'test')
    results = []
    for level in ('slice', 'scan'):
        values = metrics.get(level) or {}
        for key, metric_type in EVAL_METRICS.items():
            value = values.get(key)
            if not is_number(value):
                continue  # e.g. AUC is undefined when the split holds one class
            readable = _lower_first(names[key])
            results.append(
                EvalResult(
                    task_type='image-classification',
                    task_name=f'{task.title} classification of 2D MRI slices',
                    dataset_type=_model_index_type(source),
                    dataset_name=f'{source.name} {split} ({level}-level)',
                    # part of model-index's grouping key; the name is not
                    dataset_config=f'{level}-level',
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=f'{level.capitalize()}-level {readable}',
                    metric_value=round(float(value), 4),
                )
            )
    return results


def metrics_from_card(card_text: str) -> dict[str, Any] | None:
    """The test metrics a published card's model-index holds, in metrics.json's shape
    (``{'slice': {...}, 'scan': {...}, 'split': ...}``); None when it holds none."""
    from huggingface_hub import ModelCard

    try:
        results = ModelCard(card_text).data.eval_results or []
    except Exception:  # noqa: BLE001 - a card that does not parse has nothing to show
        return None
    key_of = {metric_type: key for key, metric_type in EVAL_METRICS.items()}
    found: dict[str, Any] = {}
    for r in results:
        level = upgrade_key((r.dataset_config or '').replace('-level', ''))  # 'patient' before
        if level in ('slice', 'scan') and r.metric_type in key_of:
            found.setdefault(level, {})[key_of[r.metric_type]] = r.metric_value
            found['split'] = r.dataset_split or 'test'
    return found or None


def public_train_config(train_config: dict[str, Any]) -> dict[str, Any]:
    """The resolved training config safe to publish: no
    credentials, local paths shortened to their last part.
    """

    def clean(value, key=''):
        if isinstance(value, dict):
            return {k: clean(v, str(k)) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and _PATH_KEY.search(key) and value:
            return Path(value).name
        return value

    return clean(train_config)


def _label_names(config: dict[str, Any]) -> list[str]:
    return list(
        config.get('label_names')
        or config.get('pretrained_cfg', {}).get('label_names')
        or LABEL_NAMES
    )


# --------------------------------------------------------------------------------------------------
# sections


def _model_details(
    config: dict[str, Any], num_params: int, stats: ModelStats | None, task: Task
) -> str:
    cfg = config.get('pretrained_cfg', {})
    extra = config.get('adni_timm', {})
    settings = ExportSettings.from_dict(extra)
    _, height, width = cfg.get('input_size', (3, 224, 224))
    classes = ', '.join(f'{i} = `{name}`' for i, name in enumerate(task.classes))
    rows = [
        (
            'Architecture',
            f'{_arch_name(config)} (timm `{config.get("architecture")}`'
            + (f', trained as `{settings.model_name}`' if settings.model_name else '')
            + ')',
        ),
        ('Initialisation', 'random (from scratch); no ImageNet or other pretrained weights'),
        ('Params (M)', f'{num_params / 1e6:.2f} M'),
    ]
    if stats is not None:
        rows.append(('GMACs', f'{stats.gmacs:.3g} at {height} x {width} px, batch 1'))
    rows += [
        ('Image size', f'train = {height} x {width}, test = {height} x {width}'),
        (
            'Input',
            f'{height} x {width} px grayscale slices, as 3 identical RGB channels or 1 channel '
            f'(`in_chans=1`); normalised with mean {_fmt_list(cfg.get("mean"))} and std '
            f'{_fmt_list(cfg.get("std"))} (see Input data)',
        ),
        (
            'Preprocessing',
            f'resize shorter side to {round(height / cfg.get("crop_pct", 1.0))} px '
            f'({cfg.get("interpolation", "bilinear")}), centre crop {height} x {width} '
            f'(crop_pct {cfg.get("crop_pct", 1.0)})',
        ),
        (
            'Output',
            f'{config.get("num_classes")} logits: {classes}; `{task.positive}` is the positive '
            f'class',
        ),
    ]
    if stats is not None and stats.features:
        shapes = ', '.join(
            f'{c} x {h} x {w}' for c, h, w in map(stats.feature_shape, range(len(stats.features)))
        )
        rows += [
            ('Feature maps', f'`features_only=True`: {shapes} (channels x height x width)'),
            ('Embedding', f'{stats.num_features} (pooled, `forward_head(..., pre_logits=True)`)'),
        ]
    rows += [
        ('Weights', _weights_row(settings)),
        (
            'Calibration',
            f'temperature {fmt(settings.temperature)}: '
            f'P({task.positive}) = softmax(logits / T) at `{task.positive}`',
        ),
        (
            'Decision threshold',
            f'P({task.positive}) >= {fmt(settings.threshold)}, '
            f'{_threshold_origin(settings.threshold_source)}; stored in '
            f'`config.json["adni_timm"]["threshold"]`',
        ),
        ('Files', '`model.safetensors` (weights only, no pickle), `config.json` (timm format)'),
    ]
    return '## Model details\n\n' + _table(['', ''], rows)


def _weights_row(settings: ExportSettings) -> str:
    weights = settings.weights or '?'
    if settings.folds:  # the refit of a cross-validation run
        epochs = settings.refit_epochs if settings.refit_epochs is not None else settings.epoch
        return (
            f'{weights} weights of the refit: all training scans for {fmt(epochs)} epochs '
            f'(see Cross-validation)'
        )
    if settings.best_metric:
        return (
            f'{weights} weights of epoch {fmt(settings.epoch)}, the best by '
            f'{settings.best_metric} = {fmt(settings.best_value)} on validation'
        )
    return f'{weights} weights after {fmt(settings.epoch)} epochs'


def _source_paragraph(settings: ExportSettings, source: DataSource) -> str:
    if source.kind == 'synthetic':
        return (
            '**Synthetic images** in the layout of the ADNI AD_NC set, generated by '
            f'`python -m adni_timm.synthetic` (the data note: "{settings.data or "synthetic"}"). '
            'No real MRI and no ADNI data was used.'
        )
    if source.kind == 'adni':
        return (
            'The ADNI "AD_NC" set: 2D T1-weighted brain-MRI slices (256 x 240 px, 8-bit '
            "grayscale, 20 slices per scan) of Alzheimer's disease (AD) and normal control "
            "(NC) participants of the [Alzheimer's Disease Neuroimaging "
            'Initiative](https://adni.loni.usc.edu). ADNI data is available only under the ADNI '
            'Data Use Agreement (DUA) to approved researchers. The slice orientation is not '
            'documented with the set (a public audit of it describes sagittal slices); training '
            'flips images horizontally, a choice explained in docs/DATA.md.'
        )
    text = (
        f'{source.name}: T1-weighted 3D scans cut into 2D axial slices by `adni-prepare` (its '
        f'recipe is under Input data).'
        if source.kind == 'prepared'
        else f'{source.name} (as the data folder names it).'
    )
    if source.adni:
        text += (
            " Participants of the [Alzheimer's Disease Neuroimaging "
            'Initiative](https://adni.loni.usc.edu); ADNI data is available only under the ADNI '
            'Data Use Agreement (DUA) to approved researchers.'
        )
    else:
        text += ' The publisher should name the dataset, its population and its licence here.'
    return text


def _training_data(
    split: dict[str, Any] | None,
    folds: dict[str, Any] | None,
    refit_split: dict[str, Any] | None,
    cv: dict[str, Any] | None,
    settings: ExportSettings,
    metrics: dict[str, Any] | None,
    eval_facts: EvalCheck | None,
    source: DataSource,
) -> str:
    withheld = (
        '**No images, subject or scan identifiers or other ADNI data are included in this '
        'repository.**'
        if source.adni
        else '**No training images, subject or scan identifiers are included in this repository.**'
    )
    lines = ['## Training data', '', _source_paragraph(settings, source), '', withheld]
    if folds:
        lines += ['', _folds_summary(folds, refit_split, cv)]
    elif split:
        lines += ['', _split_summary(split)]
    if metrics and isinstance(metrics.get('scan'), dict):
        lines += ['', _leakage(metrics, eval_facts, cross_validated=bool(folds), refit=refit_split)]
        people = _subject_sentence(metrics)
        if people:
            lines += ['', people]
    return '\n'.join(lines)


def _subject_sentence(metrics: dict[str, Any]) -> str:
    """What the evaluation knows about people: a re-split test set, or the subjects it shares
    with training (``metrics.json``'s ``test_from``, ``subjects``, ``subject_overlap``)."""
    out = []
    if metrics.get('test_from') == 'resplit':
        out.append(
            'The test set is a **re-split by subject** (`--resplit-test`): subjects held out of '
            "the pooled training and test scans, recorded in `split.json['test']`; the data "
            "folder's own test split was not used as such."
        )
    overlap = metrics.get('subject_overlap')
    if isinstance(overlap, dict) and overlap.get('n'):
        out.append(
            f'**Subjects overlap train and test: {overlap["n"]} of {overlap.get("of", "?")}** '
            f'evaluated subjects also had scans that trained or selected this model (the '
            f'official AD_NC split is not by subject), so the results below are optimistic for '
            f'people the model has never seen.'
        )
    elif isinstance(overlap, dict):
        out.append(
            f'None of its {overlap.get("of", "?")} subjects had a scan that trained or selected '
            f'this model.'
        )
    return ' '.join(out)


def _leakage(
    metrics: dict[str, Any],
    eval_facts: EvalCheck | None,
    *,
    cross_validated: bool,
    refit: dict[str, Any] | None,
) -> str:
    n = metrics['scan'].get('n', '?')
    disjoint = eval_facts.disjoint if eval_facts is not None else None
    if disjoint is True and metrics.get('split') == 'test':
        if cross_validated:
            against = 'any cross-validation fold (checked against `folds.json`' + (
                " and the refit's `refit/split.json`)" if refit else ')'
            )
            return (
                f'The test split ({n} scans) shares no scan with {against} and was used '
                f'only for the final evaluation below.'
            )
        return (
            f'The test split ({n} scans) shares no scan with '
            f'training or validation (checked against the recorded '
            f'split) and was used only for the final evaluation below.'
        )
    if disjoint is False:
        return (
            f'**The evaluated split ({metrics.get("split")}, {n} scans) shares scans '
            f'with training or validation: its results below are optimistic.**'
        )
    return (
        f'Whether the evaluated split ({metrics.get("split")}, {n} scans) shares '
        f'scans with training could not be checked.'
    )


def _split_summary(split: dict[str, Any]) -> str:
    level = split.get('level', '?')
    if 'folds' in split and isinstance(split.get('folds'), int):
        inner = (
            f'{len(split.get("val", []))} of them an inner validation split that chose the epoch, '
            f'weights and temperature'
            if split.get('val')
            else 'no validation split (nothing selected)'
        )
        trained = len(split.get('train', [])) + len(split.get('val', []))
        return (
            f'One fold model of a cross-validation by scan: fold {split.get("fold")} of '
            f'{split.get("folds")}, trained on {trained} '
            f'scans ({inner}); its {len(split.get("held_out", []))} held-out scans were only '
            f'predicted.'
        )
    counts = (
        f'{len(split.get("train", []))} training and {len(split.get("val", []))} validation '
        f'(fraction {split.get("val_fraction", "?")}, seed {split.get("seed", "?")})'
    )
    if level == 'scan' and isinstance(split.get('subjects'), dict):
        people = split['subjects']
        return (
            f'Validation was carved from the training scans **by subject** '
            f'(subject map `{Path(str(split.get("subject_map") or "?")).name}`): {counts} scans of '
            f'{len(people.get("train", []))} and {len(people.get("val", []))} subjects, no subject '
            f'in both.'
        )
    if level == 'scan':
        return (
            f'Validation was carved from the training folder **by scan**: {counts} '
            f'scans, no scan in both (subjects unknown: a person with several scans may sit on '
            f'both sides).'
        )
    return (
        f'**Validation was carved from the training folder by {level}**: {counts} {level}s, so one '
        f"scan's slices can sit in both training and validation. Validation scores, and the "
        f'epoch and threshold chosen on them, are optimistic.'
    )


def _input_data(
    config: dict[str, Any], settings: ExportSettings, source: DataSource, example: str | None
) -> str:
    cfg = config.get('pretrained_cfg', {})
    channels, height, width = cfg.get('input_size', (3, 224, 224))
    raw = settings.extra.get('input')
    description = InputDescription.from_dict(raw) if isinstance(raw, dict) else None
    preprocessing = settings.preprocessing
    what = (
        'synthetic T1-like images (generated, not MRI)'
        if source.synthetic
        else 'T1-weighted brain MRI'
    )
    rows = [
        ('Modality', what),
        ('Orientation', orientation(preprocessing, source.synthetic)),
    ]
    if description is not None:
        sizes = ', '.join(f'{w} x {h}' for w, h in description.image_sizes) or '?'
        rows += [
            (
                'Training slices',
                f'{description.n_slices} slices of {description.n_scans} scans, '
                f'{" ".join(t.lstrip(".") for t in description.file_types) or "?"} files',
            ),
            ('Image size (width x height)', f'{sizes} px, 8-bit grayscale'),
        ]
        if description.slice_range is not None:
            lo, hi = description.slice_range
            per = description.slices_per_scan
            rows.append(
                (
                    'Slice numbers seen',
                    f'{lo} to {hi} (file names `<scan>_<slice>`)'
                    + (f'; {per[0]}-{per[1]} slices per scan' if per else ''),
                )
            )
        if description.intensity is not None:
            stats = description.intensity
            pct = ', '.join(f'p{p} = {v:g}' for p, v in sorted(stats.percentiles.items()))
            rows.append(
                (
                    'Intensity (0-255)',
                    f'mean {stats.mean:.1f}, sd {stats.std:.1f}, {pct}, range {stats.min}-'
                    f'{stats.max} (over {description.n_images} decoded slices)',
                )
            )
    rows.append(
        (
            'Network input',
            f'{channels} x {height} x {width} float32 in [-1, 1]: the slice resized (shorter side '
            f'{round(height / cfg.get("crop_pct", 1.0))} px), centre-cropped, x / 255, then '
            f'(x - {_fmt_list(cfg.get("mean"))}) / {_fmt_list(cfg.get("std"))}',
        )
    )
    lines = [
        '## Input data',
        '',
        'What a slice must look like for this model: it was trained on nothing else, so anything '
        'else (another sequence, orientation, axial level, registration or intensity scaling) is '
        'out of scope. The same facts are in `config.json["adni_timm"]["network_data_format"]` '
        '(the tensor format of a MONAI bundle: modality, channels, value range, spatial shape, '
        'orientation).',
        '',
        _table(['', ''], rows),
    ]
    steps = recipe_lines(preprocessing)
    if steps:
        lines += [
            '',
            'The slices were made from 3D scans by `adni-prepare` with this recipe (recorded in '
            '`config.json["adni_timm"]["preprocessing"]`; `adni-evaluate --images scan.nii.gz` '
            'applies it to a new scan):',
            '',
            *[f'{i}. {step}' for i, step in enumerate(steps, 1)],
        ]
    elif source.kind == 'adni':
        lines += [
            '',
            'How the AD_NC slices were made (registration, skull stripping, which axial levels) is '
            'not documented with the set; give the model slices made the same way.',
        ]
    elif source.synthetic:
        lines += [
            '',
            'The synthetic slices are drawn directly (analytic head shapes, bias field and noise); '
            'no scanner, registration or skull stripping is involved.',
        ]
    if description is None:
        lines += [
            '',
            'The training slices were not described when this model was exported (image sizes, '
            'slice numbers and intensities are unknown here).',
        ]
    if example:
        lines += [
            '',
            f'![SYNTHETIC example slice, generated by adni_timm.synthetic: not MRI, not a '
            f'scan]({example})',
            '',
            f"`{example}` (also the Hub widget's example) is a **synthetic** slice drawn by "
            f'`adni_timm.synthetic`, never a training image; its prediction means nothing.',
        ]
    return '\n'.join(lines)


def _training_procedure(
    settings: ExportSettings, train_config: dict[str, Any] | None, refit_split: dict | None
) -> str:
    if settings.folds:
        epochs = settings.refit_epochs or settings.epoch
        text = (
            f'## Training procedure\n\nTrained with adni-timm (timm + Hugging Face Accelerate). '
            f'The released weights are the refit of a {settings.folds}-fold cross-validation: '
            f'{settings.weights or "?"} weights after {fmt(epochs)} '
            f'epochs on all training scans, with no validation split; the threshold and '
            f'temperature were chosen on the out-of-fold predictions (see Cross-validation), the '
            f'test evaluation below never saw them.'
        )
    else:
        selected = (
            f'the best by {settings.best_metric} on the validation split'
            if settings.best_metric
            else 'trained for a fixed number of epochs without a validation split'
        )
        text = (
            f'## Training procedure\n\nTrained with adni-timm (timm + Hugging Face Accelerate). '
            f'The released weights are the {settings.weights or "?"} weights of epoch '
            f'{fmt(settings.epoch)}, {selected}. Validation metrics during training were measured '
            f'at the operating point chosen on the same validation scans, so they are '
            f'optimistic; the test evaluation below is not.'
        )
    if train_config:
        dumped = yaml.safe_dump(
            public_train_config(train_config), sort_keys=False, default_flow_style=None
        )
        text += (
            f'\n\nResolved training configuration (`train_config.yaml`):\n\n'
            f'```yaml\n{dumped.rstrip()}\n```'
        )
    else:
        text += '\n\nThe resolved training configuration was not found in the run folder.'
    return text


def _class_map(classes: Sequence[str]) -> str:
    return '{' + ', '.join(f"'{c}': {i}" for i, c in enumerate(classes)) + '}'


# --------------------------------------------------------------------------------------------------
# formatting


def _arch_name(config: dict[str, Any]) -> str:
    arch = config.get('architecture', '')
    return ARCHITECTURE_NAMES.get(arch, arch)


def _fmt_list(values: Any) -> str:
    return ', '.join(fmt(v) for v in values) if values else '?'
