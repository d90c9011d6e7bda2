"""A local web demo (Gradio) over an export: drop a patient's slices, read P(AD) and Grad-CAM.

    demo_model = load('runs/tiny')                 # or local-dir:DIR, hf-hub:ORG/NAME
    result = predict_files(demo_model, ['218391_78.jpeg', '218391_79.jpeg'])   # plain data
    build_demo(demo_model).launch()                # what ``python app.py --model RUN`` does

The probabilities are evaluate.py's: ``evaluation.predict`` (the model's own eval transform, in the
precision it was trained in) then ``metrics.apply_temperature`` with the stored temperature, and the
decision uses the stored threshold (0.5 when none is stored). A patient's P(AD) is the mean over
their slices, as in evaluation. Files named ``<patient>_<slice>.jpeg`` are grouped by patient; files
with other names count as one patient (the page takes one patient's slices at a time).

Gradio is an optional extra (``pip install 'adni-timm[demo]'``); only this module imports it, and
only inside ``build_demo`` / ``launch``, so ``import adni_timm.app`` works without it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import data, metrics
from .display import fmt
from .export import is_synthetic, locate_export, resolve_model
from .files import read_json

__all__ = [
    'DISCLAIMER',
    'MIN_SIDE',
    'MAX_SIDE',
    'MAX_FILES',
    'MAX_CAM_SLICES',
    'UNNAMED_PATIENT',
    'DemoModel',
    'load',
    'check_image',
    'predict_files',
    'cam_montages',
    'describe_model',
    'format_result',
    'analyse',
    'build_demo',
    'launch',
]

_logger = logging.getLogger(__name__)

DISCLAIMER = (
    '**Research use only, not a medical device.** Not for diagnosis or any clinical '
    'decision; the output is a model score, not a finding.'
)
MIN_SIDE, MAX_SIDE = 32, 2048  # px; ADNI slices are 256 x 240
MAX_FILES = 200  # a patient has ~20 slices; more is a folder dropped by mistake
MAX_CAM_SLICES = 40  # Grad-CAM costs a backward pass per slice: keep a CPU demo responsive
UNNAMED_PATIENT = 'uploaded slices'  # the group of files whose names carry no <patient>_<slice>
# a colour picture: over 1% of pixels whose R, G, B differ by more than 24 grey levels (the chroma
# noise of a grayscale slice saved as an RGB JPEG stays well below)
_COLOUR_SPREAD, _COLOUR_FRACTION = 24, 0.01
_METRIC_KEYS = (
    ('accuracy', 'accuracy'),
    ('balanced_accuracy', 'balanced accuracy'),
    ('sensitivity', 'sensitivity'),
    ('specificity', 'specificity'),
    ('auc', 'AUC'),
)
_EXPECTED = 'an 8-bit grayscale axial MRI slice (JPEG or PNG, e.g. 218391_78.jpeg, 256 x 240 px)'


@dataclass
class DemoModel:
    """A loaded export and what the page shows about it."""

    model: torch.nn.Module
    info: dict[str, Any]
    classes: list[str]
    positive: int
    threshold: float
    threshold_source: str
    temperature: float
    precision: str
    transform: Callable
    test_metrics: dict[str, Any] | None = None
    test_metrics_source: str | None = None
    test_metrics_problems: list[str] = field(default_factory=list)

    @property
    def positive_class(self) -> str:
        return self.classes[self.positive]

    @property
    def negative_class(self) -> str:
        if len(self.classes) == 2:
            return self.classes[1 - self.positive]
        return f'not {self.positive_class}'


# ------------------------------------------------------------------------------- the model


def load(ref: str | os.PathLike) -> DemoModel:
    """Load ``ref`` (RUN, export folder, local-dir:DIR, hf-hub:ORG/NAME) as evaluate.py does.

    Raises ``ExportError`` / ``ValueError`` with a message that names the fix.
    """
    from .evaluation import recorded_precision  # evaluation pulls in accelerate: only when loading

    model, info = resolve_model(ref)
    classes = list(info['classes'])
    _, eval_tf = data.build_transforms(model)  # also refuses a data config that is not 1-channel
    threshold = info.get('threshold')
    demo_model = DemoModel(
        model=model,
        info=info,
        classes=classes,
        positive=data.positive_index(classes),
        threshold=0.5 if threshold is None else float(threshold),
        threshold_source=(
            'fixed' if threshold is None else info.get('threshold_source') or 'validation'
        ),
        temperature=float(info.get('temperature') or 1.0),
        precision=recorded_precision(info),
        transform=eval_tf,
    )
    if info.get('run_dir') is not None:
        ref = str(ref)
        prefix = 'local-dir:'
        export_dir, _ = locate_export(ref[len(prefix) :] if ref.startswith(prefix) else ref)
        _attach_test_metrics(demo_model, export_dir, Path(info['run_dir']))
    return demo_model


def _attach_test_metrics(demo_model: DemoModel, export_dir: Path, run_dir: Path) -> None:
    """RUN/eval/metrics.json, and why it may not belong to these weights (hub's own check)."""
    from . import hub  # the check push_to_hub.py applies before a model card may quote the numbers

    path = hub.default_eval_metrics(run_dir)
    if path is None:
        return
    try:
        found = read_json(path)
        facts = hub.check_eval_belongs({**found, '_path': str(path)}, export_dir, run_dir)
        demo_model.test_metrics_problems = list(facts['problems'])
        if facts.get('disjoint') is False:
            demo_model.test_metrics_problems.append(
                'the evaluated patients overlap training or validation'
            )
    except (ValueError, OSError, KeyError, TypeError) as e:  # an odd file must not stop the demo
        _logger.warning('could not read %s: %s', path, e)
        return
    demo_model.test_metrics, demo_model.test_metrics_source = found, str(path)


# ------------------------------------------------------------------------------- the input


def check_image(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a slice this model takes (one readable sentence), or None when it is."""
    name = Path(path).name
    try:
        with Image.open(path) as im:
            width, height = im.size  # from the header: a huge file is refused before it is decoded
            if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
                return (
                    f'{name} is {width} x {height} px; this model takes slices of {MIN_SIDE} '
                    f'to {MAX_SIDE} px a side: drop {_EXPECTED}.'
                )
            im.load()
            if _is_colour(im):
                return (
                    f'{name} is a colour image; this model takes grayscale MRI slices, not '
                    f'photos or colour maps: drop {_EXPECTED}.'
                )
    except UnidentifiedImageError:
        return f'{name} is not an image (it cannot be decoded); drop {_EXPECTED}.'
    except Image.DecompressionBombError:
        return f'{name} declares too many pixels to decode safely; drop {_EXPECTED}.'
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data: PIL raises these
        return f'{name} is truncated or corrupt ({e}); export the slice again.'
    return None


def _is_colour(im: Image.Image) -> bool:
    """Whether the channels of ``im`` clearly differ (grayscale saved as RGB is accepted)."""
    bands = [b for b in im.getbands() if b != 'A']
    if im.mode != 'P' and len(bands) <= 1:
        return False
    rgb = np.asarray(im.convert('RGB'), dtype=np.int16)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float((spread > _COLOUR_SPREAD).mean()) > _COLOUR_FRACTION


def _as_slices(paths: Sequence[str]) -> list[data.Slice]:
    out = []
    for path in paths:
        patient, slice_index = data.parse_file_name(Path(path)) or (UNNAMED_PATIENT, None)
        out.append(data.Slice(path=str(path), patient=patient, label=-1, slice_index=slice_index))
    return out


# ------------------------------------------------------------------------------- prediction


def predict_files(
    demo_model: DemoModel, paths: Sequence[str | os.PathLike], *, batch_size: int = 32
) -> dict[str, Any]:
    """P(AD) per accepted file and per patient, the decision at the stored threshold; plain data.

    ``{'positive_class', 'threshold', 'threshold_source', 'temperature',
    'slices': [{'file', 'path', 'patient', 'slice_index', 'p_<AD>', 'predicted'}],
    'patients': [{'patient', 'n_slices', 'p_<AD>', 'predicted'}],
    'rejected': [{'file', 'problem'}]}``. Slices are sorted by patient and slice index; files that
    are not usable slices are listed under ``rejected``, never raised.
    """
    paths = [str(p) for p in paths]
    rejected, accepted = [], []
    if len(paths) > MAX_FILES:
        too_many = f"more than {MAX_FILES} files at once; drop one patient's slices at a time."
        rejected += [{'file': Path(p).name, 'problem': too_many} for p in paths[MAX_FILES:]]
        paths = paths[:MAX_FILES]
    for path in paths:
        problem = check_image(path)
        if problem is None:
            accepted.append(path)
        else:
            rejected.append({'file': Path(path).name, 'problem': problem})
    p_key = f'p_{demo_model.positive_class}'
    result = {
        'positive_class': demo_model.positive_class,
        'threshold': demo_model.threshold,
        'threshold_source': demo_model.threshold_source,
        'temperature': demo_model.temperature,
        'slices': [],
        'patients': [],
        'rejected': rejected,
    }
    if not accepted:
        return result
    from .evaluation import predict  # evaluate.py's own inference

    slices = sorted(_as_slices(accepted), key=lambda s: (s.patient, s.slice_index or 0, s.path))
    raw = predict(demo_model.model, slices, batch_size=batch_size, precision=demo_model.precision)
    p_pos = metrics.apply_temperature(raw, demo_model.temperature)[:, demo_model.positive]
    result['slices'] = [
        {
            'file': Path(s.path).name,
            'path': s.path,
            'patient': s.patient,
            'slice_index': s.slice_index,
            p_key: float(p),
            'predicted': _decision(demo_model, p),
        }
        for s, p in zip(slices, p_pos)
    ]
    patients = [s.patient for s in slices]
    ids, _, means = metrics.patient_level(patients, np.zeros(len(slices), dtype=int), p_pos)
    counts = Counter(patients)
    result['patients'] = [
        {
            'patient': str(patient),
            'n_slices': counts[patient],
            p_key: float(mean),
            'predicted': _decision(demo_model, float(mean)),
        }
        for patient, mean in zip(ids, means)  # sorted by patient, as the slices are
    ]
    return result


def _decision(demo_model: DemoModel, p: float) -> str:
    return demo_model.positive_class if p >= demo_model.threshold else demo_model.negative_class


def cam_montages(demo_model: DemoModel, result: dict[str, Any]) -> list[tuple[Image.Image, str]]:
    """One Grad-CAM montage (PIL image, caption) per patient of ``result``: the evidence for AD.

    At most ``MAX_CAM_SLICES`` slices in all; the maps are ``cam.gradcam`` of the positive class
    over the model's input, drawn with ``plots.plot_cam_montage``.
    """
    from . import cam, plots  # captum and matplotlib only when maps are drawn

    positive = demo_model.positive_class
    p_key = f'p_{positive}'
    budget = MAX_CAM_SLICES
    montages = []
    with tempfile.TemporaryDirectory(prefix='adni-demo-') as tmp:
        for row in result['patients']:
            rows = [r for r in result['slices'] if r['patient'] == row['patient']][:budget]
            if not rows:
                break
            budget -= len(rows)
            images = torch.stack([demo_model.transform(data.read_image(r['path'])) for r in rows])
            maps = cam.gradcam(demo_model.model, images, demo_model.positive, batch_size=8)
            shown = images.float().mean(dim=1).numpy()  # [N, H, W]; the plot rescales each tile
            titles = [
                (r['file'] if r['slice_index'] is None else f'slice {r["slice_index"]}')
                + f'\nP({positive}) {r[p_key]:.3f}'
                for r in rows
            ]
            caption = (
                f'patient {row["patient"]}: mean P({positive}) {row[p_key]:.3f} '
                f'→ {row["predicted"]} at threshold {demo_model.threshold:.2f}'
            )
            png = plots.plot_cam_montage(
                shown, maps, Path(tmp) / f'{len(montages)}.png', tile_titles=titles, title=caption
            )
            with Image.open(png) as im:
                montages.append((im.convert('RGB'), caption))
    return montages


# ------------------------------------------------------------------------------- the page


def describe_model(demo_model: DemoModel) -> str:
    """Markdown: the model, what it was trained on, its operating point, test metrics if known."""
    extra, info = demo_model.info.get('export', {}), demo_model.info
    cfg = demo_model.model.pretrained_cfg
    size = 'x'.join(str(v) for v in cfg.get('input_size', ())[1:])
    architecture = extra.get('model_name') or cfg.get('architecture', '?')
    lines = [
        f'**Model** `{info["model"]}`: {architecture}, {size} px input, '
        f'classes {", ".join(demo_model.classes)}'
    ]
    note = extra.get('data') or 'not recorded with this export'
    if is_synthetic(extra):
        lines.append(
            f'**Trained on SYNTHETIC images, not ADNI MRI** ({note}): its scores on real '
            f'scans mean nothing.'
        )
    else:
        lines.append(f'**Trained on** {note}')
    checkpoint = [f'epoch {fmt(extra.get("epoch"))}']
    if extra.get('weights'):
        checkpoint.append(f'{extra["weights"]} weights')  # 'ema' or 'live'
    if extra.get('best_metric'):
        checkpoint.append(f'best validation {extra["best_metric"]} {fmt(extra.get("best_value"))}')
    lines.append('**Checkpoint** ' + ', '.join(checkpoint))
    lines.append(
        f'**Decision** {demo_model.positive_class} when P({demo_model.positive_class}) >= '
        f'{demo_model.threshold:.3f} ({demo_model.threshold_source} threshold); '
        f'calibration temperature {demo_model.temperature:.3f}'
    )
    lines.append(_describe_test_metrics(demo_model))
    return '\n\n'.join(lines)


def _describe_test_metrics(demo_model: DemoModel) -> str:
    found = demo_model.test_metrics
    if found is None:
        ref = str(demo_model.info['model'])
        where = ''
        if ref.startswith(('hf-hub:', 'hf_hub:')):
            repo_id = ref.split(':', 1)[1].split('@')[0]
            where = f' (see the model card at https://huggingface.co/{repo_id})'
        return f'**Test metrics** not known here{where}: run evaluate.py on held-out data.'
    patient = found.get('patient', {})
    shown = ', '.join(
        f'{label} {fmt(patient.get(key))}' for key, label in _METRIC_KEYS if key in patient
    )
    text = (
        f'**Test metrics** (patient level, {fmt(patient.get("n"))} patients of split '
        f"'{found.get('split', '?')}' in {found.get('data_dir', '?')}): {shown}; "
        f'slice accuracy {fmt(found.get("slice", {}).get("accuracy"))}'
    )
    if demo_model.test_metrics_problems:
        text += '. **These may not belong to the loaded weights:** ' + '; '.join(
            demo_model.test_metrics_problems
        )
    return text


def format_result(result: dict[str, Any]) -> str:
    """Markdown summary of ``predict_files``: patients first, then slices, then refused files."""
    positive = result['positive_class']
    p_key = f'p_{positive}'
    lines = []
    for row in result['patients']:
        lines.append(
            f'### Patient {row["patient"]}: P({positive}) = {row[p_key]:.3f} → '
            f'**{row["predicted"]}** (mean over {row["n_slices"]} slice'
            f'{"s" if row["n_slices"] != 1 else ""}; threshold {result["threshold"]:.3f})'
        )
    if len(result['patients']) > 1:
        lines.append('Several patients in one upload: each is scored on its own slices.')
    if result['slices']:
        lines.append('| file | slice | P(' + positive + ') | predicted |\n|---|---|---|---|')
        # a '|' in a file name would end its table cell
        lines[-1] += ''.join(
            f'\n| {r["file"].replace("|", "&#124;")} | {fmt(r["slice_index"])} | '
            f'{r[p_key]:.3f} | {r["predicted"]} |'
            for r in result['slices']
        )
    if result['rejected']:
        lines.append(
            '**Not analysed:**\n' + '\n'.join(f'- {r["problem"]}' for r in result['rejected'])
        )
    if not result['slices']:
        lines.insert(
            0,
            '### No slice could be analysed'
            if result['rejected']
            else f'Drop one or more slices: {_EXPECTED}.',
        )
    return '\n\n'.join(lines)


def analyse(demo_model: DemoModel, paths: Sequence[str] | None) -> tuple[str, list, dict]:
    """The page's handler: (summary markdown, Grad-CAM gallery, plain result). Never raises.

    A failure shows as one readable line on the page; the traceback goes to the server log only.
    """
    paths = [getattr(p, 'name', p) for p in (paths or [])]  # str paths (older gradio: file objects)
    try:
        result = predict_files(demo_model, paths)
    except Exception as e:  # noqa: BLE001 - the page must show a message, never a stack trace
        _logger.exception('prediction failed')
        return f'**Could not analyse these files:** {type(e).__name__}: {e}', [], {}
    gallery = []
    if result['slices']:
        try:
            gallery = cam_montages(demo_model, result)
        except Exception as e:  # noqa: BLE001 - the scores stand without the maps
            _logger.exception('Grad-CAM failed')
            result['cam_error'] = f'{type(e).__name__}: {e}'
    summary = format_result(result)
    # the page gets no server paths (and gradio_client would take a dict with 'path' for a file)
    result = {
        **result,
        'slices': [{k: v for k, v in r.items() if k != 'path'} for r in result['slices']],
    }
    if 'cam_error' in result:
        summary += f'\n\n**Grad-CAM could not be drawn:** {result["cam_error"]}'
    elif len(result['slices']) > MAX_CAM_SLICES:
        summary += f'\n\nGrad-CAM is drawn for the first {MAX_CAM_SLICES} slices only.'
    return summary, gallery, result


def build_demo(demo_model: DemoModel):
    """The ``gr.Blocks`` page: disclaimer, model facts, upload, result, Grad-CAM, raw JSON."""
    import gradio as gr

    positive = demo_model.positive_class
    with gr.Blocks(
        title=f'adni-timm: {positive} vs {demo_model.negative_class} demo', analytics_enabled=False
    ) as demo:
        gr.Markdown(
            f'# adni-timm demo: {positive} vs {demo_model.negative_class} on axial MRI '
            f'slices\n\n{DISCLAIMER}',
            elem_id='disclaimer',
        )
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(
                    label="Slices: one, or all of one patient's (grayscale JPEG/PNG)",
                    file_count='multiple',
                    type='filepath',
                    elem_id='slices',
                )
                run = gr.Button('Analyse', variant='primary', elem_id='analyse')
                with gr.Accordion('The model', open=True):
                    gr.Markdown(describe_model(demo_model), elem_id='model-info')
            with gr.Column(scale=3):  # the result beside the upload: visible without scrolling
                summary = gr.Markdown(f'Drop slices to see P({positive}).', elem_id='result')
                gallery = gr.Gallery(
                    label=f'Grad-CAM: where the model finds evidence for '
                    f"{positive} (each slice's map scaled to its maximum)",
                    columns=4,
                    height=480,
                    object_fit='contain',
                    elem_id='cam',
                )
        with gr.Accordion('Result as JSON', open=False):
            raw = gr.JSON(elem_id='raw')
        gr.Markdown(
            f"{DISCLAIMER} Scores come from `evaluate.py`'s inference with the stored "
            f"temperature; a patient's P({positive}) is the mean over their slices."
        )

        def handle(paths):
            return analyse(demo_model, paths)

        def open_first_montage(result):  # the gallery grid would crop a montage to a square
            return gr.Gallery(selected_index=0 if (result or {}).get('slices') else None)

        ui_only = _ui_only_event(run.click)
        # one public API endpoint, /analyse, returns plain values; the upload event is UI only
        run.click(handle, inputs=files, outputs=[summary, gallery, raw], api_name='analyse').then(
            open_first_montage, inputs=raw, outputs=gallery, **ui_only
        )
        files.upload(handle, inputs=files, outputs=[summary, gallery, raw], **ui_only).then(
            open_first_montage, inputs=raw, outputs=gallery, **ui_only
        )
    return demo


def _ui_only_event(listener: Callable) -> dict[str, Any]:
    """Keyword arguments that keep an event out of the API: gradio 6 spells it api_visibility."""
    import inspect

    if 'api_visibility' in inspect.signature(listener).parameters:
        return {'api_visibility': 'private'}
    return {'show_api': False, 'api_name': False}  # gradio 4 and 5


def launch(
    demo_model: DemoModel,
    *,
    host: str = '127.0.0.1',
    port: int | None = 7860,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
):
    """Serve ``build_demo(demo_model)`` on ``host:port`` (loopback by default); the Blocks."""
    demo = build_demo(demo_model)
    demo.queue(default_concurrency_limit=1)  # one model, hooks for Grad-CAM: one request at a time
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=False,
    )
    return demo


if __name__ == '__main__':  # python -m adni_timm.app --model RUN (parsing: adni_timm.cli.app)
    import sys

    from .cli.app import main

    sys.exit(main(prog='python -m adni_timm.app'))
