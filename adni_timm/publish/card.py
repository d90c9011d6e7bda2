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

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .complexity import ModelStats
from ..data import positive_index
from ..utils.display import fmt, fmt_ci, is_number
from ..export.format import ExportSettings
from ..export.input_description import InputDescription, orientation, recipe_lines
from ..models import LABEL_NAMES
from ..run import EvalCheck, EvalFolder, Run
from ..utils.legacy import upgrade_key

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
    'Agreement\n> (`push_to_hub.py --acknowledgement FILE` fills it in).'
)
ARCHITECTURE_NAMES = {
    'convnext_atto': 'ConvNeXt-Atto',
    'convnext_nano': 'ConvNeXt-Nano',
    'convnext_tiny': 'ConvNeXt-T',
    'convnext_small': 'ConvNeXt-S',
    'convnext_base': 'ConvNeXt-B',
}
# diagnostic groups a class list may name (ADNI's and the usual ones); others appear as written
CLASS_NAMES = {
    'NC': 'normal control',
    'CN': 'cognitively normal',
    'SMC': 'significant memory concern',
    'MCI': 'mild cognitive impairment',
    'EMCI': 'early mild cognitive impairment',
    'LMCI': 'late mild cognitive impairment',
    'AD': "Alzheimer's disease",
}
_MCI_LIKE = {'MCI', 'EMCI', 'LMCI', 'SMC'}
_ADNI_NOTE = 'ADNI AD_NC'  # DataNote's default: a data folder without a note
# config keys never shown in the card: credentials, and local paths of the publisher's machine
_SECRET_KEY = re.compile(r'token|secret|password|passwd|api_?key|credential', re.IGNORECASE)
_PATH_KEY = re.compile(r'(_dir|_path|_file|^resume)$')

CITATIONS = r"""```bibtex
@inproceedings{liu2022convnet,
  title     = {A ConvNet for the 2020s},
  author    = {Liu, Zhuang and Mao, Hanzi and Wu, Chao-Yuan and Feichtenhofer, Christoph and
               Darrell, Trevor and Xie, Saining},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition
               (CVPR)},
  pages     = {11976--11986},
  year      = {2022}
}

@misc{rw2019timm,
  author       = {Ross Wightman},
  title        = {PyTorch Image Models},
  year         = {2019},
  publisher    = {GitHub},
  journal      = {GitHub repository},
  doi          = {10.5281/zenodo.4414861},
  howpublished = {\url{https://github.com/huggingface/pytorch-image-models}}
}
```"""


# --------------------------------------------------------------------------------------------------
# what the data and the task are, derived from the export


@dataclass(frozen=True)
class DataSource:
    """What the model was trained on, as the export records it.

    ``kind``: ``synthetic`` (adni_timm's generator), ``adni`` (the ADNI AD_NC slices: a data folder
    without a note), ``prepared`` (scans cut into slices by adni-prepare, its recipe recorded) or
    ``other`` (a folder whose note names another dataset). ``adni``: ADNI data, so ADNI's
    population, labels, Data Use Agreement and acknowledgement apply.
    """

    kind: str
    name: str
    adni: bool

    @classmethod
    def of(cls, settings: ExportSettings) -> DataSource:
        note = (settings.data or _ADNI_NOTE).strip()
        if settings.synthetic:
            return cls('synthetic', 'SYNTHETIC ADNI-layout data (not ADNI)', False)
        if settings.preprocessing:
            recipe = settings.preprocessing
            said = ' '.join(
                str(recipe.get(k, '')) for k in ('note', 'source', 'labels_format', 'dataset')
            )
            named = note if note != _ADNI_NOTE else str(recipe.get('note') or 'T1 scans')
            return cls('prepared', named, 'adni' in f'{named} {said}'.lower())
        if note == _ADNI_NOTE:
            return cls('adni', _ADNI_NOTE, True)
        return cls('other', note, 'adni' in note.lower())

    @property
    def synthetic(self) -> bool:
        return self.kind == 'synthetic'


@dataclass(frozen=True)
class Task:
    """The classes in logit order and the one decision the card reports: positive vs the rest."""

    classes: tuple[str, ...]

    @property
    def positive(self) -> str:
        return self.classes[positive_index(self.classes)]

    @property
    def negatives(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c != self.positive)

    @property
    def negative(self) -> str:
        """The negative side, as a label: ``NC``, or ``not AD (NC, MCI)``."""
        if len(self.negatives) == 1:
            return self.negatives[0]
        return f'not {self.positive} ({", ".join(self.negatives)})'

    @property
    def negative_scans(self) -> str:
        """Who the negatives are, in a sentence: ``NC``, or ``NC or MCI``."""
        return ' or '.join(self.negatives) if len(self.negatives) < 3 else self.negative

    @property
    def short_negative(self) -> str:
        return self.negatives[0] if len(self.negatives) == 1 else f'not-{self.positive}'

    @property
    def sees_mci(self) -> bool:
        return bool(_MCI_LIKE & set(self.classes))

    def named(self, name: str) -> str:
        return f'{CLASS_NAMES[name]} ({name})' if name in CLASS_NAMES else f'`{name}`'

    def listing(self) -> str:
        names = [self.named(c) for c in self.classes]
        return ' or '.join(names) if len(names) == 2 else ', '.join(names[:-1]) + f' or {names[-1]}'

    @property
    def title(self) -> str:
        return f'{self.positive} vs {self.negative}'

    def metric_names(self) -> dict[str, str]:
        """metrics.json key -> the name the card gives it."""
        return {
            'accuracy': 'Accuracy',
            'balanced_accuracy': 'Balanced accuracy',
            'sensitivity': f'Sensitivity ({self.positive} recall)',
            'specificity': f'Specificity ({self.short_negative} recall)',
            'precision': f'Precision ({self.positive})',
            'f1': f'F1 ({self.positive})',
            'auc': 'ROC AUC',
        }


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
    """
    extra = config.get('adni_timm', {})
    settings = ExportSettings.from_dict(extra)
    source = DataSource.of(settings)
    task = Task(tuple(_label_names(config)))
    eval_results = eval_results_from_metrics(metrics, source, task.classes) if metrics else None
    card_data = ModelCardData(
        model_name=repo_id.split('/')[-1],
        library_name='timm',
        pipeline_tag='image-classification',
        license=config.get('pretrained_cfg', {}).get('license', 'apache-2.0'),
        tags=CARD_TAGS
        + (['adni'] if source.adni else [])
        + (['synthetic-data'] if source.synthetic else []),
        metrics=list(EVAL_METRICS.values()),
        eval_results=eval_results or None,
        widget=[_widget(repo_id, example)] if example else None,
    )
    sections = [
        _title(repo_id, config, source, task),
        _model_details(config, num_params, stats, task),
        _intended_use(task),
        _training_data(split, folds, refit_split, cv, settings, metrics, eval_facts, source),
        _input_data(config, settings, source, example),
        _training_procedure(settings, train_config, refit_split),
        _cross_validation(cv, task),
        _evaluation(metrics, eval_facts, plots, source, task),
        _limitations(metrics, settings, source, task),
        _how_to_use(repo_id, config, stats, task),
        _licence(source),
        _citation(acknowledgement, source),
    ]
    body = '\n\n'.join(s.strip() for s in sections if s)
    return ModelCard(f'---\n{card_data.to_yaml()}\n---\n\n{body}\n')


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


def _threshold_origin(source: str | None) -> str:
    """What the card may say about where the threshold came from."""
    return {
        'validation': 'chosen on the validation scans (never on test)',
        'out-of-fold': 'chosen on the out-of-fold predictions of cross-validation (never on test)',
        'cli': 'set by hand (--threshold)',
        'fixed': 'the fixed default 0.5',
    }.get(source or '', 'of unknown origin')


# --------------------------------------------------------------------------------------------------
# sections


def _title(repo_id: str, config: dict[str, Any], source: DataSource, task: Task) -> str:
    arch = _arch_name(config)
    text = (
        f'# {repo_id.split("/")[-1]}\n\n{arch} trained **from scratch** to classify 2D axial '
        f'brain-MRI slices as {task.listing()}, published with '
        f'[adni-timm](https://github.com/adni-timm/adni-timm). It loads in plain '
        f"[timm](https://github.com/huggingface/pytorch-image-models) and in transformers' "
        f'image-classification pipeline.'
    )
    if len(task.negatives) > 1:
        text += (
            f' Its decision, and every number in this card, is **{task.positive} against the '
            f'rest** ({", ".join(task.negatives)} together): P({task.positive}) compared with one '
            f'threshold.'
        )
    text += (
        '\n\n> **Research use only. Not a medical device. Not for diagnosis or any clinical '
        'decision.**'
    )
    if source.synthetic:
        text += (
            '\n\n> **WARNING: SYNTHETIC DATA.** These weights were trained and '
            'evaluated on *synthetic*, generated images in the ADNI folder '
            'layout, not on ADNI or any real MRI. They only demonstrate the '
            "pipeline; their numbers say nothing about Alzheimer's disease."
        )
    return text


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


def _intended_use(task: Task) -> str:
    if task.sees_mci:
        other = (
            '- Not for other conditions (other dementias, vascular or other causes of atrophy), '
            f'which it never saw. It does not predict who will progress to {task.positive}: '
            f'{", ".join(c for c in task.classes if c in _MCI_LIKE)} was one group of its '
            'training, not a prognosis.'
        )
    else:
        other = (
            '- Not for other conditions (e.g. mild cognitive impairment, other dementias), which '
            'it never saw.'
        )
    return f"""## Intended use

- Research on machine learning for neuroimaging: benchmarking, reproducing results, studying
  failure modes, as a baseline or starting point for fine-tuning on comparable, consented research
  data.
- Teaching how such models are trained and evaluated without scan-level leakage.

### Out-of-scope use

- **Not a medical device.** It has no regulatory clearance and was not validated clinically.
- **Not for diagnosis**, screening, triage, prognosis or any decision about a person's care.
- Not for scans unlike the training slices (see Input data): other sequences, orientations, slice
  positions, scanners, preprocessing pipelines, populations, or 3D volumes.
{other}"""


def _source_paragraph(settings: ExportSettings, source: DataSource) -> str:
    if source.kind == 'synthetic':
        return (
            '**Synthetic images** in the layout of the ADNI AD_NC set, generated by '
            f'`python -m adni_timm.synthetic` (the data note: "{settings.data or "synthetic"}"). '
            'No real MRI and no ADNI data was used.'
        )
    if source.kind == 'adni':
        return (
            'The ADNI "AD_NC" set: 2D axial T1-weighted brain-MRI slices (256 x 240 px, 8-bit '
            "grayscale, 20 slices per subject) of Alzheimer's disease (AD) and normal control "
            "(NC) participants of the [Alzheimer's Disease Neuroimaging "
            'Initiative](https://adni.loni.usc.edu). ADNI data is available only under the ADNI '
            'Data Use Agreement (DUA) to approved researchers.'
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
    return '\n'.join(lines)


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
    if level == 'scan':
        return (
            f'Validation was carved from the training folder **by scan**: {counts} '
            f'scans, no scan in both.'
        )
    return (
        f'**Validation was carved from the training folder by {level}**: {counts} {level}s, so one '
        f"scan's slices can sit in both training and validation. Validation scores, and the "
        f'epoch and threshold chosen on them, are optimistic.'
    )


def _selection_words(select: str | None) -> str:
    if select == 'inner':
        return (
            'chose its epoch, its live or EMA weights and its temperature on an inner validation '
            'split of its own training scans (`select: inner`)'
        )
    if select == 'last':
        return 'selected nothing: a fixed number of epochs, the last weights (`select: last`)'
    return (
        'selected its epoch in a way this cv.json does not record (an older run: each fold may '
        'have selected on the scans it reports, so its numbers may be optimistic)'
    )


def _folds_summary(
    folds: dict[str, Any], refit_split: dict[str, Any] | None, cv: dict[str, Any] | None
) -> str:
    groups = folds.get('folds') or []
    k = folds.get('k', len(groups))
    scans = sum(len(g) for g in groups)
    text = (
        f'**Cross-validation by scan, then a refit** (no top-level split: a cross-validation '
        f'run has none). The {scans} training scans were cut into {k} folds (seed '
        f'{folds.get("seed", "?")}, `folds.json`). Each fold model trained on the other {k - 1} '
        f'folds, {_selection_words((cv or {}).get("select"))}, and only predicted its own '
        f'held-out fold.'
    )
    if refit_split:
        n_refit = len(refit_split.get('train', [])) + len(refit_split.get('val', []))
        text += (
            f' The published model is the refit: one model trained on all {n_refit} training '
            f'scans (`refit/split.json`), no validation split; its operating point comes from '
            f'the out-of-fold predictions.'
        )
    return text


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
            '`config.json["adni_timm"]["preprocessing"]`; `evaluate.py --images scan.nii.gz` '
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


def _cross_validation(cv: dict[str, Any] | None, task: Task) -> str:
    if not cv:
        return ''
    summary = cv.get('summary') or {}
    pooled = cv.get('out_of_fold') or {}
    names = task.metric_names()
    rows = []
    for level in ('scan', 'slice'):
        for key in ('auc', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity'):
            entry = (summary.get(level) or {}).get(key)
            if entry and is_number(entry.get('mean')):
                per_fold = ', '.join(fmt(v) for v in entry.get('per_fold', []))
                mean_sd = fmt(entry['mean']) + (
                    f' ± {fmt(entry["sd"])}' if is_number(entry.get('sd')) else ''
                )
                rows.append(
                    (
                        f'{level.capitalize()}-level {_lower_first(names[key])}',
                        mean_sd,
                        per_fold,
                        _fmt_ci(pooled.get(level) or {}, key),
                    )
                )
    k, select = cv.get('k'), cv.get('select')
    if select in ('inner', 'last'):
        how = (
            f'Nested selection: each fold model {_selection_words(select)}, so no fold selected '
            f'anything on the scans it reports. Each fold is scored on its held-out scans '
            f"at a threshold chosen on the *other* folds' out-of-fold predictions (no number here "
            f'sits at a threshold tuned on the predictions it scores). "Pooled out-of-fold": every '
            f'training scan predicted by the fold model that never saw them, each at its '
            f"fold's threshold, with 95% bootstrap confidence intervals over scans."
        )
    else:
        how = (
            'How the folds selected their epochs and thresholds is not recorded in this cv.json '
            '(an older adni-timm): each fold may have chosen its epoch and threshold on the '
            'scans it reports, so these numbers may be optimistic.'
        )
    text = (
        f'## Cross-validation\n\n{k}-fold cross-validation by scan (seed {cv.get("seed")}) on '
        f'the training scans. {how}\n\n'
        + _table(
            ['Held-out metric', 'mean ± sd over folds', 'per fold', 'pooled out-of-fold'], rows
        )
    )
    points = []
    refit, ensemble = cv.get('refit') or {}, cv.get('ensemble') or {}
    if refit:
        points.append(
            f'- **refit** (the published model): threshold {fmt(refit.get("threshold"))} '
            f'({refit.get("threshold_rule", "?")}), temperature {fmt(refit.get("temperature"))} '
            f'({refit.get("calibration", "fitted on the out-of-fold predictions")})'
        )
    if ensemble:
        temps = ', '.join(fmt(t) for t in ensemble.get('temperatures') or [])
        points.append(
            f'- **fold ensemble** (`evaluate.py --model RUN`, the mean of the {k} fold models): '
            f'threshold {fmt(ensemble.get("threshold"))} ({ensemble.get("threshold_rule", "?")}), '
            f'member temperatures {temps} ({ensemble.get("calibration", "?")})'
        )
    if points:
        text += (
            '\n\nThe two operating points, each chosen on all out-of-fold predictions (and so not '
            'scored in the table above):\n\n' + '\n'.join(points)
        )
    if cv.get('best_epochs'):
        text += (
            f'\n\nThe folds chose epochs {", ".join(map(str, cv["best_epochs"]))} and weights '
            f'{", ".join(map(str, cv.get("best_weights") or []))}.'
        )
    return text


def _evaluation(
    metrics: dict[str, Any] | None,
    eval_facts: EvalCheck | None,
    plots: Sequence[str],
    source: DataSource,
    task: Task,
) -> str:
    lines = ['## Evaluation', '']
    if not metrics:
        lines.append(
            '**Not evaluated on a held-out test split.** Run `evaluate.py` and publish again with '
            '`--eval OUT/metrics.json` before drawing any conclusion from this model.'
        )
    else:
        problems = eval_facts.problems if eval_facts is not None else []
        if problems:
            lines += [
                f'> **Unverified evaluation:** these results could not be '
                f'matched to the published weights ({"; ".join(problems)}). '
                f'They were published anyway (`--force-eval`).',
                '',
            ]
        split = metrics.get('split', 'test')
        slices, scans = metrics.get('slice') or {}, metrics.get('scan') or {}
        cal = metrics.get('calibration') or {}
        pos = task.positive
        lines += [
            f'On the **{source.name} {split}** split ({slices.get("n", "?")} slices, '
            f'{scans.get("n", "?")} scans), at threshold P({pos}) >= '
            f'{fmt(metrics.get("threshold"))}, '
            f'{_threshold_origin(metrics.get("threshold_source"))}. Scan-level: the '
            f'probability of a scan is the mean over their slices. Brackets: 95% confidence '
            f'intervals where computed (bootstrap over scans).',
            '',
            _table(
                ['Metric', 'Slice-level', 'Scan-level'],
                [
                    (name, _fmt_ci(slices, key), _fmt_ci(scans, key))
                    for key, name in task.metric_names().items()
                    if key in slices or key in scans
                ],
            ),
        ]
        if cal:
            lines += [
                '',
                f'Calibration: expected calibration error {fmt(cal.get("ece_slice"))} (slices), '
                f'{fmt(cal.get("ece_scan"))} (scans) with temperature '
                f'{fmt(cal.get("temperature"))}; {fmt(cal.get("ece_slice_uncalibrated"))} / '
                f'{fmt(cal.get("ece_scan_uncalibrated"))} without it.',
            ]
        for level, values in (('Slice', slices), ('Scan', scans)):
            table = _confusion_table(values.get('confusion_matrix'), task)
            if table:
                lines += [
                    '',
                    f'{level}-level confusion matrix (rows: true, columns: predicted):',
                    '',
                    table,
                ]
    captions = {
        Run.CURVES: 'Training curves',
        EvalFolder.CONFUSION: 'Scan-level confusion matrix',
        EvalFolder.ROC: 'ROC curve',
        EvalFolder.RELIABILITY: 'Reliability diagram (calibration)',
        EvalFolder.POPULATION_MAPS: (
            f'Mean Grad-CAM over all {task.positive} and all {task.short_negative} test slices (an '
            f'average, no scan)'
        ),
    }
    figures = [f'![{captions[name]}]({name})' for name in captions if name in plots]
    if figures:
        lines += ['', *figures]
    return '\n'.join(lines)


def _confusion_table(cm: Any, task: Task) -> str:
    """The confusion matrix with its labels: 2 x 2 is the reported decision (positive vs the
    rest), a square of the class count is per class."""
    if not cm:
        return ''
    if len(cm) == 2:
        labels = [task.negative, task.positive]
    elif len(cm) == len(task.classes):
        labels = list(task.classes)
    else:
        return ''
    return _table(
        ['', *(f'pred {label}' for label in labels)],
        [(f'true {label}', *row) for label, row in zip(labels, cm)],
    )


def _error_sentence(scans: dict[str, Any], task: Task) -> str:
    sens, spec = scans.get('sensitivity'), scans.get('specificity')
    if not (is_number(sens) and is_number(spec)):
        return ''
    miss, alarm = 1 - sens, 1 - spec
    pos, neg, n = task.positive, task.negative_scans, scans.get('n', '?')
    if math.isclose(miss, 0, abs_tol=1e-12) and math.isclose(alarm, 0, abs_tol=1e-12):
        return (
            f'On the test split it missed no {pos} scan and flagged no {neg} scan as {pos} '
            f'({n} scans): there is no error to compare, and a perfect score on this many '
            f'scans still leaves the confidence intervals above wide. '
        )
    rates = (
        f'On the test split it misses {100 * miss:.1f}% of {pos} scans and flags '
        f'{100 * alarm:.1f}% of {neg} scans as {pos}'
    )
    if math.isclose(miss, alarm, abs_tol=1e-9):
        return f'{rates}: the two errors are equally frequent. '
    more = (
        f'missed {pos} (false negatives)'
        if miss > alarm
        else f'false alarms on {neg} (false positives)'
    )
    return f'{rates}; the more frequent error is {more}. '


def _limitations(
    metrics: dict[str, Any] | None, settings: ExportSettings, source: DataSource, task: Task
) -> str:
    scans = (metrics or {}).get('scan') or {}
    origin = _threshold_origin(settings.threshold_source)
    bullets = [
        f'**Missed {task.positive} and false alarms cost differently.** '
        f'{_error_sentence(scans, task)}The stored threshold was {origin};\n  a different '
        f'trade-off needs a different threshold, chosen on data other than the test split.',
        '**2D slices, not 3D volumes.** Each slice is classified on its own and scans are '
        'scored by\n  averaging slices; anatomy outside the selected axial slices and 3D context '
        'are never seen.',
        _population_bullet(source),
        _task_bullet(task, source),
        _labels_bullet(source),
    ]
    return '## Limitations and bias\n\n' + '\n'.join(f'- {b}' for b in bullets)


def _population_bullet(source: DataSource) -> str:
    if source.synthetic:
        return (
            '**No population at all.** The images are generated: no person, scanner or site is '
            "behind them,\n  so nothing here says how the model would do on anyone's MRI."
        )
    if source.adni:
        made = (
            'preprocessed by adni-prepare (see Input data)'
            if source.kind == 'prepared'
            else 'with ADNI preprocessing'
        )
        return (
            '**One dataset, one population.** ADNI participants are mostly older, well-educated, '
            f'white North\n  Americans scanned on research protocols, {made}. Performance on '
            'other scanners,\n  sites, protocols, ages, ethnicities or clinical populations is '
            'unknown and likely lower.'
        )
    return (
        f'**One dataset, one population.** Trained on {source.name} only; the publisher should '
        'describe who\n  is in it. Performance on other scanners, sites, protocols, ages, '
        'ethnicities or clinical populations\n  is unknown and likely lower.'
    )


def _task_bullet(task: Task, source: DataSource) -> str:
    pos = task.positive
    if len(task.negatives) > 1 and source.synthetic:
        return (
            f'**{pos} against the rest.** {" and ".join(task.negatives)} are pooled as not-{pos} '
            'in every number here; the generator draws the\n  middle classes with atrophy between '
            "the others', no disease is modelled."
        )
    if len(task.negatives) > 1:
        return (
            f'**{pos} against the rest.** {" and ".join(task.negatives)} are pooled as not-{pos} '
            'in every number here; MCI-like groups are\n  heterogeneous (some convert, some do '
            'not), and other causes of atrophy were never seen, so a confident\n  output on such a '
            'scan is meaningless.'
        )
    if source.synthetic:
        return (
            f'**Two generated classes.** {pos} images were drawn with more atrophy than '
            f'{task.negatives[0]} images;\n  no disease, no mild cognitive impairment and no other '
            'condition is modelled.'
        )
    return (
        f'**{pos} vs {task.negatives[0]} only.** The task excludes mild cognitive impairment and '
        'other causes of atrophy, so it\n  is far easier than a clinical question; a confident '
        'output on such a scan is meaningless.'
    )


def _labels_bullet(source: DataSource) -> str:
    if source.synthetic:
        return (
            "Labels are the generator's classes: each image's class fixed how much atrophy "
            '(larger ventricles and\n  sulci, thinner cortex, smaller medial temporal lobes) was '
            "drawn, on severity scales that overlap. They are\n  not anyone's diagnosis."
        )
    if source.adni:
        return (
            "Labels are ADNI's diagnostic groups at the time of the scan, not post-mortem ground "
            'truth.'
        )
    return (
        f'Labels are the diagnostic groups {source.name} gives, as mapped to these classes when '
        'the data was\n  prepared; they are clinical diagnoses, not post-mortem ground truth.'
    )


def _lower_first(name: str) -> str:
    """'Sensitivity (AD recall)' -> 'sensitivity (AD recall)'; 'ROC AUC' stays."""
    return name if name[:2].isupper() else name[:1].lower() + name[1:]


def _class_map(classes: Sequence[str]) -> str:
    return '{' + ', '.join(f"'{c}': {i}" for i, c in enumerate(classes)) + '}'


def _how_to_use(repo_id: str, config: dict[str, Any], stats: ModelStats | None, task: Task) -> str:
    cfg = config.get('pretrained_cfg', {})
    _, height, width = cfg.get('input_size', (3, 224, 224))
    pos = task.positive
    own_map = _class_map(task.classes)
    alphabetical = _class_map(sorted(task.classes))
    if stats is not None and stats.features:
        shapes = ', '.join(
            f'[1, {c}, {h}, {w}]'
            for c, h, w in map(stats.feature_shape, range(len(stats.features)))
        )
        maps_comment = f'# {len(stats.features)} maps: {shapes}'
        embedding_comment = f'# [1, {stats.num_features}]'
    else:
        maps_comment = '# one map per stage'
        embedding_comment = '# [1, num_features]'
    if own_map == alphabetical:
        order_note = (
            f"`class_to_idx={alphabetical}`, which happens to be this model's order; pass the "
            'map anyway, so that renamed folders cannot swap the labels silently.'
        )
    else:
        order_note = (
            f"`class_to_idx={alphabetical}`: not this model's `class_to_idx={own_map}`. Without "
            "the model's own map every label is swapped, and a plain timm evaluation loop scores "
            'the model as nearly always wrong.'
        )
    return f"""## How to use

The weights take a grayscale slice **as RGB** (three identical channels: what the Hub widget,
transformers' pipeline and `Image.open(p).convert('RGB')` give) or **as one channel** (`in_chans=1`,
the network as trained; timm sums its first layer over R, G and B). Both give the same P({pos}).
P({pos}) is the softmax of the logits divided by the stored temperature, taken at the position of
`{pos}` in the label names; the decision compares it with the stored threshold. For a scan,
average P({pos}) over their slices and compare the mean with the threshold (this is how the
scan-level results above were computed).

```python
import json
import timm
import torch
from huggingface_hub import hf_hub_download
from PIL import Image

config = json.load(open(hf_hub_download('{repo_id}', 'config.json')))
ad = config['label_names'].index('{pos}')
threshold = config['adni_timm']['threshold']
temperature = config['adni_timm'].get('temperature', 1.0)  # 1.0: not calibrated

# 1. timm, RGB input
model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()
# the model's own preprocessing: {height} x {width}
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
x = transform(Image.open('slice.jpeg').convert('RGB')).unsqueeze(0)
with torch.no_grad():
    p_ad = (model(x) / temperature).softmax(-1)[0, ad].item()
print('{pos}' if p_ad >= threshold else '{task.short_negative}', p_ad)

# 2. pooled embedding and feature maps, as for any timm model
with torch.no_grad():
    embedding = model.forward_head(model.forward_features(x), pre_logits=True)  {embedding_comment}
features = timm.create_model(
    'hf-hub:{repo_id}', pretrained=True, features_only=True
).eval()
with torch.no_grad():
    maps = features(x)  {maps_comment}

# 3. timm, one channel (as trained)
model = timm.create_model('hf-hub:{repo_id}', pretrained=True, in_chans=1).eval()
x = transform(Image.open('slice.jpeg').convert('L')).unsqueeze(0)
with torch.no_grad():
    p_ad = (model(x) / temperature).softmax(-1)[0, ad].item()
```

**Class indices with stock timm.** `timm.data.ImageDataset` (like torchvision's `ImageFolder`)
numbers class folders alphabetically, {order_note} Pass the label names of `config.json` as the
class map:

```python
from timm.data import ImageDataset

model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()
class_map = {{name: i for i, name in enumerate(config['label_names'])}}  # {own_map}
dataset = ImageDataset('AD_NC/test', class_map=class_map, transform=transform)
correct = 0
with torch.no_grad():
    for x, target in torch.utils.data.DataLoader(dataset, batch_size=32):
        p_ad = (model(x) / temperature).softmax(-1)[:, ad]
        correct += ((p_ad >= threshold) == (target == ad)).sum().item()
print(f'slice accuracy {{correct / len(dataset):.3f}}')
```

With transformers (`pip install transformers`), on a file path or a PIL image:

```python
from transformers import pipeline

classify = pipeline('image-classification', model='{repo_id}')
outputs = classify('slice.jpeg', function_to_apply='none', top_k=None)
logits = {{r['label']: r['score'] for r in outputs}}
scaled = torch.tensor([logits[name] for name in config['label_names']]) / temperature
p_ad = scaled.softmax(-1)[ad].item()
print('{pos}' if p_ad >= threshold else '{task.short_negative}', p_ad)
```

The pipeline's own top label (`classify('slice.jpeg')[0]['label']`) is the plain argmax, i.e. the
decision at P({pos}) = 0.5 without calibration, **not** the stored operating point: apply the
threshold as above.

With [adni-timm](https://github.com/adni-timm/adni-timm) installed, `evaluate.py` reproduces the
evaluation on your own copy of the data:

```bash
python evaluate.py --model hf-hub:{repo_id} --data-dir AD_NC --split test
```"""


def _licence(source: DataSource) -> str:
    text = '## Licence\n\nThe weights and this card are released under the Apache-2.0 licence.'
    if source.adni:
        text += (
            ' They were derived from ADNI data obtained under the ADNI Data Use '
            'Agreement, which may restrict redistributing models trained on it: '
            'the publisher is responsible for confirming that the agreement allows '
            'this release. Anyone wanting the data itself must apply to ADNI.'
        )
    elif not source.synthetic:
        text += (
            f' They were derived from {source.name}: the publisher is responsible for confirming '
            f"that the data's licence or use agreement allows this release."
        )
    return text


def _citation(acknowledgement: str | None, source: DataSource) -> str:
    text = f'## Citation\n\nIf you use these weights, please cite ConvNeXt and timm:\n\n{CITATIONS}'
    if source.adni:
        ack = acknowledgement.strip() if acknowledgement else ACK_PLACEHOLDER
        return f'{text}\n\n## ADNI acknowledgement\n\n{ack}'
    if acknowledgement and not source.synthetic:
        return f'{text}\n\n## Data acknowledgement\n\n{acknowledgement.strip()}'
    return text


# --------------------------------------------------------------------------------------------------
# formatting


def _arch_name(config: dict[str, Any]) -> str:
    arch = config.get('architecture', '')
    return ARCHITECTURE_NAMES.get(arch, arch)


def _fmt_list(values: Any) -> str:
    return ', '.join(fmt(v) for v in values) if values else '?'


def _fmt_ci(values: dict[str, Any], key: str) -> str:
    return fmt_ci(values.get(key), values.get(f'{key}_ci'), missing='n/a')


def _table(header: list[str], rows: list[tuple]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
