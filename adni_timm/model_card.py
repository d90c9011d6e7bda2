"""The model card (README.md) of a published run, built with huggingface_hub's ``ModelCard``.

Everything here is a pure function of plain data read from the run folder (export
config, resolved training config, split summary, evaluate.py metrics), so the
card can be tested without a model or the network. The front matter carries
``model-index`` eval results, which the Hub renders as an evaluation widget.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .display import fmt, fmt_ci, is_number
from .run import EvalCheck
from .export import ExportSettings

__all__ = [
    'CARD_TAGS',
    'EVAL_METRICS',
    'ACK_PLACEHOLDER',
    'build_model_card',
    'eval_results_from_metrics',
    'public_train_config',
    'dataset_label',
]

CARD_TAGS = [
    'timm',
    'image-classification',
    'medical-imaging',
    'mri',
    'alzheimers',
    'adni',
    'convnext',
]
# metrics.json key -> (model-index metric type, readable name); the subset reported in model-index
EVAL_METRICS = {
    'accuracy': ('accuracy', 'accuracy'),
    'auc': ('roc_auc', 'ROC AUC'),
    'sensitivity': ('recall', 'sensitivity (AD recall)'),
    'specificity': ('specificity', 'specificity (NC recall)'),
}
TABLE_METRICS = {
    'accuracy': 'Accuracy',
    'balanced_accuracy': 'Balanced accuracy',
    'sensitivity': 'Sensitivity (AD recall)',
    'specificity': 'Specificity (NC recall)',
    'precision': 'Precision (AD)',
    'f1': 'F1 (AD)',
    'auc': 'ROC AUC',
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


def build_model_card(
    *,
    repo_id: str,
    config: dict[str, Any],
    num_params: int,
    train_config: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    eval_facts: EvalCheck | None = None,
    cv: dict[str, Any] | None = None,
    plots: list[str] = (),
    acknowledgement: str | None = None,
) -> ModelCard:
    """The card for the export described by ``config``
    (its timm config.json), published as ``repo_id``.

    ``eval_facts`` (from ``run.check_eval_belongs``) decide what the card may claim
    about ``metrics``: an evaluation that could not be matched to these weights is
    published only with a warning, and "the test split shares no patient with
    training" is written only when it was checked. ``cv`` is ``RUN/cv.json`` of a
    cross-validation run: its table is the validation evidence.
    """
    extra = config.get('adni_timm', {})
    synthetic = ExportSettings.from_dict(extra).synthetic
    card_data = ModelCardData(
        model_name=repo_id.split('/')[-1],
        library_name='timm',
        pipeline_tag='image-classification',
        license=config.get('pretrained_cfg', {}).get('license', 'apache-2.0'),
        tags=CARD_TAGS + (['synthetic-data'] if synthetic else []),
        datasets=['synthetic-adni-layout' if synthetic else 'adni'],
        metrics=[metric_type for metric_type, _ in EVAL_METRICS.values()],
        eval_results=eval_results_from_metrics(metrics, synthetic) if metrics else None,
    )
    sections = [
        _title(repo_id, config, synthetic),
        _model_details(config, num_params),
        _intended_use(),
        _training_data(split, metrics, eval_facts, synthetic),
        _training_procedure(extra, train_config),
        _cross_validation(cv),
        _evaluation(metrics, eval_facts, plots, synthetic),
        _limitations(metrics, extra),
        _how_to_use(repo_id, config),
        _licence(synthetic),
        _citation(acknowledgement, synthetic),
    ]
    body = '\n\n'.join(s.strip() for s in sections if s)
    return ModelCard(f'---\n{card_data.to_yaml()}\n---\n\n{body}\n')


def dataset_label(synthetic: bool) -> str:
    return 'SYNTHETIC ADNI-layout data (not ADNI)' if synthetic else 'ADNI AD_NC'


def eval_results_from_metrics(metrics: dict[str, Any], synthetic: bool = False) -> list[EvalResult]:
    """model-index results: accuracy, AUC, sensitivity, specificity at slice and patient level."""
    split = metrics.get('split', 'test')
    results = []
    for level in ('slice', 'patient'):
        values = metrics.get(level) or {}
        for key, (metric_type, readable) in EVAL_METRICS.items():
            value = values.get(key)
            if not is_number(value):
                continue  # e.g. AUC is undefined when the split holds one class
            results.append(
                EvalResult(
                    task_type='image-classification',
                    task_name='AD vs NC classification of 2D MRI slices',
                    dataset_type='synthetic-adni-layout' if synthetic else 'adni',
                    dataset_name=f'{dataset_label(synthetic)} {split} ({level}-level)',
                    # part of model-index's grouping key; the name is not
                    dataset_config=f'{level}-level',
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=f'{level.capitalize()}-level {readable}',
                    metric_value=round(float(value), 4),
                )
            )
    return results


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
        or ['NC', 'AD']
    )


def _threshold_origin(source: str | None) -> str:
    """What the card may say about where the threshold came from."""
    return {
        'validation': 'chosen on the validation patients (never on test)',
        'out-of-fold': 'chosen on the out-of-fold predictions of cross-validation (never on test)',
        'cli': 'set by hand (--threshold)',
        'fixed': 'the fixed default 0.5',
    }.get(source or '', 'of unknown origin')


# --------------------------------------------------------------------------------------------------
# sections


def _title(repo_id: str, config: dict[str, Any], synthetic: bool) -> str:
    arch = _arch_name(config)
    text = (
        f'# {repo_id.split("/")[-1]}\n\n{arch} trained **from scratch** to classify 2D axial '
        f"brain-MRI slices as normal control (NC) or Alzheimer's disease (AD), published with "
        f'[adni-timm](https://github.com/adni-timm/adni-timm). It loads in plain '
        f"[timm](https://github.com/huggingface/pytorch-image-models) and in transformers' "
        f'image-classification pipeline.\n\n> **Research use only. Not a medical device. Not for '
        f'diagnosis or any clinical decision.**'
    )
    if synthetic:
        text += (
            '\n\n> **WARNING: SYNTHETIC DATA.** These weights were trained and '
            'evaluated on *synthetic*, generated images in the ADNI folder '
            'layout, not on ADNI or any real MRI. They only demonstrate the '
            "pipeline; their numbers say nothing about Alzheimer's disease."
        )
    return text


def _model_details(config: dict[str, Any], num_params: int) -> str:
    cfg = config.get('pretrained_cfg', {})
    extra = config.get('adni_timm', {})
    _, height, width = cfg.get('input_size', (3, 224, 224))
    classes = ', '.join(f'{i} = `{name}`' for i, name in enumerate(_label_names(config)))
    rows = [
        (
            'Architecture',
            f'{_arch_name(config)} (timm `{config.get("architecture")}`'
            + (f', trained as `{extra["model_name"]}`' if extra.get('model_name') else '')
            + ')',
        ),
        ('Initialisation', 'random (from scratch); no ImageNet or other pretrained weights'),
        ('Parameters', f'{num_params / 1e6:.2f} M'),
        (
            'Input',
            f'{height} x {width} px grayscale slices, as 3 identical RGB channels or 1 channel '
            f'(`in_chans=1`); normalised with mean {_fmt_list(cfg.get("mean"))} and std '
            f'{_fmt_list(cfg.get("std"))}',
        ),
        (
            'Preprocessing',
            f'resize shorter side to {round(height / cfg.get("crop_pct", 1.0))} px '
            f'({cfg.get("interpolation", "bilinear")}), centre crop {height} x {width} '
            f'(crop_pct {cfg.get("crop_pct", 1.0)})',
        ),
        ('Output', f'{config.get("num_classes")} logits: {classes}; AD is the positive class'),
        (
            'Weights',
            f'{extra.get("weights", "?")} weights of epoch {extra.get("epoch", "?")}, the best by '
            f'{extra.get("best_metric", "?")} = {fmt(extra.get("best_value"))} on validation'
            if extra.get('best_metric')
            else f'{extra.get("weights", "?")} weights after {extra.get("epoch", "?")} epochs',
        ),
        (
            'Calibration',
            f'temperature {fmt(extra.get("temperature", 1.0))}: '
            f'P(AD) = softmax(logits / T) at `AD`',
        ),
        (
            'Decision threshold',
            f'P(AD) >= {fmt(extra.get("threshold"))}, '
            f'{_threshold_origin(extra.get("threshold_source"))}; stored in '
            f'`config.json["adni_timm"]["threshold"]`',
        ),
        ('Files', '`model.safetensors` (weights only, no pickle), `config.json` (timm format)'),
    ]
    return '## Model details\n\n' + _table(['', ''], rows)


def _intended_use() -> str:
    return """## Intended use

- Research on machine learning for neuroimaging: benchmarking, reproducing results, studying
  failure modes, as a baseline or starting point for fine-tuning on comparable, consented research
  data.
- Teaching how such models are trained and evaluated without patient-level leakage.

### Out-of-scope use

- **Not a medical device.** It has no regulatory clearance and was not validated clinically.
- **Not for diagnosis**, screening, triage, prognosis or any decision about a person's care.
- Not for scans unlike the training slices: other sequences, orientations, slice positions,
  scanners, preprocessing pipelines, populations, or 3D volumes.
- Not for other conditions (e.g. mild cognitive impairment, other dementias), which it never saw."""


def _training_data(
    split: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
    eval_facts: EvalCheck | None,
    synthetic: bool,
) -> str:
    if synthetic:
        source = (
            '**Synthetic images** generated by `python -m adni_timm.synthetic` in the layout of '
            'the ADNI AD_NC set. No real MRI and no ADNI data was used.'
        )
    else:
        source = (
            'The ADNI "AD_NC" set: 2D axial T1-weighted brain-MRI slices (256 x 240 px, 8-bit '
            "grayscale, 20 slices per subject) of Alzheimer's disease (AD) and normal control "
            "(NC) participants of the [Alzheimer's Disease Neuroimaging "
            'Initiative](https://adni.loni.usc.edu). ADNI data is available only under the ADNI '
            'Data Use Agreement (DUA) to approved researchers.'
        )
    lines = [
        '## Training data',
        '',
        source,
        '',
        '**No images, patient identifiers or other ADNI data are included in this repository.**',
    ]
    if split:
        lines += ['', _split_summary(split)]
    if metrics and isinstance(metrics.get('patient'), dict):
        n = metrics['patient'].get('n', '?')
        disjoint = eval_facts.disjoint if eval_facts is not None else None
        if disjoint is True and metrics.get('split') == 'test':
            lines += [
                '',
                f'The test split ({n} patients) shares no patient with '
                f'training or validation (checked against the recorded '
                f'split) and was used only for the final evaluation below.',
            ]
        elif disjoint is False:
            lines += [
                '',
                f'**The evaluated split ({metrics.get("split")}, {n} patients) shares patients '
                f'with training or validation: its results below are optimistic.**',
            ]
        else:
            lines += [
                '',
                f'Whether the evaluated split ({metrics.get("split")}, {n} patients) shares '
                f'patients with training could not be checked.',
            ]
    return '\n'.join(lines)


def _split_summary(split: dict[str, Any]) -> str:
    level = split.get('level', '?')
    if 'folds' in split and isinstance(split.get('folds'), int):
        return (
            f'Cross-validation by patient: fold {split.get("fold")} of '
            f'{split.get("folds")}, {len(split.get("train", []))} training '
            f'and {len(split.get("val", []))} validation patients.'
        )
    counts = (
        f'{len(split.get("train", []))} training and {len(split.get("val", []))} validation '
        f'(fraction {split.get("val_fraction", "?")}, seed {split.get("seed", "?")})'
    )
    if level == 'patient':
        return (
            f'Validation was carved from the training folder **by patient**: {counts} '
            f'patients, no patient in both.'
        )
    return (
        f'**Validation was carved from the training folder by {level}**: {counts} {level}s, so one '
        f"patient's slices can sit in both training and validation. Validation scores, and the "
        f'epoch and threshold chosen on them, are optimistic.'
    )


def _training_procedure(extra: dict[str, Any], train_config: dict[str, Any] | None) -> str:
    selected = (
        f'the best by {extra.get("best_metric")} on the validation split'
        if extra.get('best_metric')
        else 'trained for a fixed number of epochs without a validation split'
    )
    text = (
        f'## Training procedure\n\nTrained with adni-timm (timm + Hugging Face Accelerate). The '
        f'released weights are the {extra.get("weights", "?")} weights of epoch '
        f'{extra.get("epoch", "?")}, {selected}. Validation metrics during training were measured '
        f'at the operating point chosen on the same validation patients, so they are optimistic; '
        f'the test evaluation below is not.'
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


def _cross_validation(cv: dict[str, Any] | None) -> str:
    if not cv:
        return ''
    summary = cv.get('summary') or {}
    rows = []
    for level in ('patient', 'slice'):
        for key in ('auc', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity'):
            entry = (summary.get(level) or {}).get(key)
            if entry and is_number(entry.get('mean')):
                per_fold = ', '.join(fmt(v) for v in entry.get('per_fold', []))
                rows.append(
                    (f'{level} {key}', f'{fmt(entry["mean"])} ± {fmt(entry.get("sd"))}', per_fold)
                )
    return (
        f'## Cross-validation\n\n{cv.get("k")}-fold cross-validation by patient (seed '
        f'{cv.get("seed")}) on the training patients: each fold model validated on patients it '
        f'never saw. The threshold ({fmt(cv.get("threshold"))}) and temperature '
        f'({fmt(cv.get("temperature"))}) were chosen on all out-of-fold predictions.\n\n'
        + _table(['Validation metric', 'mean ± sd', 'per fold'], rows)
    )


def _evaluation(
    metrics: dict[str, Any] | None,
    eval_facts: EvalCheck | None,
    plots: list[str],
    synthetic: bool,
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
        slices, patients = metrics.get('slice') or {}, metrics.get('patient') or {}
        cal = metrics.get('calibration') or {}
        lines += [
            f'On the **{dataset_label(synthetic)} {split}** split ({slices.get("n", "?")} slices, '
            f'{patients.get("n", "?")} patients), at threshold P(AD) >= '
            f'{fmt(metrics.get("threshold"))} '
            f'({_threshold_origin(metrics.get("threshold_source"))}). Patient-level: the '
            f'probability of a patient is the mean over their slices. Brackets: 95% confidence '
            f'intervals where computed (bootstrap over patients).',
            '',
            _table(
                ['Metric', 'Slice-level', 'Patient-level'],
                [
                    (name, _fmt_ci(slices, key), _fmt_ci(patients, key))
                    for key, name in TABLE_METRICS.items()
                    if key in slices or key in patients
                ],
            ),
        ]
        if cal:
            lines += [
                '',
                f'Calibration: expected calibration error {fmt(cal.get("ece_slice"))} (slices), '
                f'{fmt(cal.get("ece_patient"))} (patients) with temperature '
                f'{fmt(cal.get("temperature"))}; {fmt(cal.get("ece_slice_uncalibrated"))} / '
                f'{fmt(cal.get("ece_patient_uncalibrated"))} without it.',
            ]
        for level, values in (('Slice', slices), ('Patient', patients)):
            cm = values.get('confusion_matrix')
            if cm and len(cm) == 2:
                lines += [
                    '',
                    f'{level}-level confusion matrix (rows: true, columns: predicted):',
                    '',
                    _table(['', 'pred NC', 'pred AD'], [('true NC', *cm[0]), ('true AD', *cm[1])]),
                ]
    captions = {
        'curves.png': 'Training curves',
        'confusion_matrix.png': 'Patient-level confusion matrix',
        'roc.png': 'ROC curve',
        'reliability.png': 'Reliability diagram (calibration)',
        'population_maps.png': (
            'Mean Grad-CAM over all AD and all NC test slices (an average, no patient)'
        ),
    }
    figures = [f'![{captions[name]}]({name})' for name in captions if name in plots]
    if figures:
        lines += ['', *figures]
    return '\n'.join(lines)


def _limitations(metrics: dict[str, Any] | None, extra: dict[str, Any]) -> str:
    patients = (metrics or {}).get('patient') or {}
    sens, spec = patients.get('sensitivity'), patients.get('specificity')
    if is_number(sens) and is_number(spec):
        more = (
            'missed AD (false negatives)'
            if 1 - sens > 1 - spec
            else 'false alarms on NC (false positives)'
        )
        asymmetry = (
            f'On the test split it misses {100 * (1 - sens):.1f}% of AD patients and flags '
            f'{100 * (1 - spec):.1f}% of NC patients as AD; the more frequent error is {more}. '
        )
    else:
        asymmetry = ''
    origin = _threshold_origin(extra.get('threshold_source'))
    return f"""## Limitations and bias

- **Errors are not symmetric between NC and AD.** {asymmetry}The stored threshold was {origin};
  a different trade-off needs a different threshold, chosen on data other than the test split.
- **2D slices, not 3D volumes.** Each slice is classified on its own and patients are scored by
  averaging slices; anatomy outside the selected axial slices and 3D context are never seen.
- **One dataset, one population.** ADNI participants are mostly older, well-educated, white North
  Americans scanned on research protocols with ADNI preprocessing. Performance on other scanners,
  sites, protocols, ages, ethnicities or clinical populations is unknown and likely lower.
- **AD vs NC only.** The task excludes mild cognitive impairment and other causes of atrophy, so it
  is far easier than a clinical question; a confident output on such a scan is meaningless.
- Labels are ADNI's diagnostic groups at the time of the scan, not post-mortem ground truth."""


def _how_to_use(repo_id: str, config: dict[str, Any]) -> str:
    cfg = config.get('pretrained_cfg', {})
    _, height, width = cfg.get('input_size', (3, 224, 224))
    return f"""## How to use

The weights take a grayscale slice **as RGB** (three identical channels: what the Hub widget,
transformers' pipeline and `Image.open(p).convert('RGB')` give) or **as one channel** (`in_chans=1`,
the network as trained; timm sums its first layer over R, G and B). Both give the same P(AD). P(AD)
is the softmax of the logits divided by the stored temperature, taken at the position of `AD` in the
label names; the decision compares it with the stored threshold. For a patient, average P(AD) over
their slices and compare the mean with the threshold (this is how the patient-level results above
were computed).

```python
import json
import timm
import torch
from huggingface_hub import hf_hub_download
from PIL import Image

config = json.load(open(hf_hub_download('{repo_id}', 'config.json')))
ad = config['label_names'].index('AD')
threshold, temperature = config['adni_timm']['threshold'], config['adni_timm']['temperature']

# 1. timm, RGB input
model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()
# the model's own preprocessing: {height} x {width}
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
x = transform(Image.open('slice.jpeg').convert('RGB')).unsqueeze(0)
with torch.no_grad():
    p_ad = (model(x) / temperature).softmax(-1)[0, ad].item()
print('AD' if p_ad >= threshold else 'NC', p_ad)

# 2. timm, one channel (as trained)
model = timm.create_model('hf-hub:{repo_id}', pretrained=True, in_chans=1).eval()
x = transform(Image.open('slice.jpeg').convert('L')).unsqueeze(0)
with torch.no_grad():
    p_ad = (model(x) / temperature).softmax(-1)[0, ad].item()
```

With transformers (`pip install transformers`), on a file path or a PIL image:

```python
from transformers import pipeline

classify = pipeline('image-classification', model='{repo_id}')
outputs = classify('slice.jpeg', function_to_apply='none', top_k=None)
logits = {{r['label']: r['score'] for r in outputs}}
scaled = torch.tensor([logits[name] for name in config['label_names']]) / temperature
p_ad = scaled.softmax(-1)[ad].item()
print('AD' if p_ad >= threshold else 'NC', p_ad)
```

The pipeline's own top label (`classify('slice.jpeg')[0]['label']`) is the plain argmax, i.e. the
decision at P(AD) = 0.5 without calibration, **not** the stored operating point: apply the threshold
as above.

With [adni-timm](https://github.com/adni-timm/adni-timm) installed, `evaluate.py` reproduces the
evaluation on your own copy of the data:

```bash
python evaluate.py --model hf-hub:{repo_id} --data-dir AD_NC --split test
```"""


def _licence(synthetic: bool) -> str:
    text = '## Licence\n\nThe weights and this card are released under the Apache-2.0 licence.'
    if not synthetic:
        text += (
            ' They were derived from ADNI data obtained under the ADNI Data Use '
            'Agreement, which may restrict redistributing models trained on it: '
            'the publisher is responsible for confirming that the agreement allows '
            'this release. Anyone wanting the data itself must apply to ADNI.'
        )
    return text


def _citation(acknowledgement: str | None, synthetic: bool) -> str:
    text = f'## Citation\n\nIf you use these weights, please cite ConvNeXt and timm:\n\n{CITATIONS}'
    if synthetic:
        return text
    ack = acknowledgement.strip() if acknowledgement else ACK_PLACEHOLDER
    return f'{text}\n\n## ADNI acknowledgement\n\n{ack}'


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
