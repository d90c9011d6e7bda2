"""A local web demo (Gradio) over an export: drop a scan's slices, read P(AD) and Grad-CAM.

    demo_model = load('runs/tiny')                 # or local-dir:DIR, hf-hub:ORG/NAME
    result = predict_files(demo_model, ['218391_78.jpeg', '218391_79.jpeg'])   # plain data
    build_demo(demo_model).launch()                # what ``python app.py --model RUN`` does

The probabilities are evaluate.py's: ``LoadedModel.predict`` (the model's own eval transform, in the
precision it was trained in, each member at its stored temperature) and the decision at the stored
threshold (0.5 when none is stored); scans come from ``inference.scan_rows``, as in
evaluation. Files named ``<scan>_<slice>.jpeg`` are grouped by scan; files with other names
count as one scan (the page takes one scan's slices at a time). A cross-validation run shows
what it publishes: its refit (``RUN/final``), else its fold ensemble (without Grad-CAM).

Gradio is an optional extra (``pip install 'adni-timm[demo]'``); only this module imports it, and
only inside ``build_demo`` / ``launch``, so ``import adni_timm.app.demo`` works without it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from .. import data
from ..utils.display import fmt
from ..utils.files import read_json
from ..inference import (
    REFUSED,
    UNNAMED_GROUP,
    LoadedModel,
    load_model,
    onnx_runner,
)
from ..run import Run, check_eval_belongs
from ..data.images import EXPECTED_SLICE
from ..evaluation.options import EvaluationOptions
from ..evaluation.predict import score_slices
from ..prepare.scan_input import is_scan, prepare_scans
from ..utils.legacy import upgrade

__all__ = [
    'DISCLAIMER',
    'MAX_FILES',
    'MAX_CAM_SLICES',
    'UNNAMED_SCAN',
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
MAX_FILES = 200  # a scan has ~20 slices; more is a folder dropped by mistake
MAX_CAM_SLICES = 40  # Grad-CAM costs a backward pass per slice: keep a CPU demo responsive
UNNAMED_SCAN = UNNAMED_GROUP  # the group of files whose names carry no <scan>_<slice>
_METRIC_KEYS = (
    ('accuracy', 'accuracy'),
    ('balanced_accuracy', 'balanced accuracy'),
    ('sensitivity', 'sensitivity'),
    ('specificity', 'specificity'),
    ('auc', 'AUC'),
)


@dataclass
class DemoModel:
    """A loaded model and what the page shows about it."""

    loaded: LoadedModel
    transform: Callable
    test_metrics: dict[str, Any] | None = None
    test_metrics_source: str | None = None
    test_metrics_problems: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        """torch, or onnxruntime: P(AD) from the export's model.onnx."""
        return self.loaded.backend

    @property
    def classes(self) -> list[str]:
        return self.loaded.classes

    @property
    def positive(self) -> int:
        return self.loaded.positive

    @property
    def positive_class(self) -> str:
        return self.loaded.positive_class

    @property
    def negative_class(self) -> str:
        return self.loaded.negative_class

    @property
    def threshold(self) -> float:
        return self.loaded.point.threshold

    @property
    def threshold_source(self) -> str:
        return self.loaded.point.source

    @property
    def temperature(self) -> float | list[float]:
        return self.loaded.point.temperature


# ------------------------------------------------------------------------------- the model


def load(ref: str | os.PathLike, backend: str = 'torch') -> DemoModel:
    """Load ``ref`` (RUN, export folder, local-dir:DIR, hf-hub:ORG/NAME) as evaluate.py does; a
    cross-validation run gives what it publishes (its refit), else its fold ensemble.
    ``backend='onnxruntime'``: P(AD) from each member's ``model.onnx`` (written beside a local
    export when missing, checked here so a page never starts without it); the input check and
    Grad-CAM still run on the torch model.

    Raises ``ExportError`` / ``ValueError`` with a message that names the fix.
    """
    run = Run(str(ref))
    if run.is_cv and run.final_dir.is_dir():
        ref = str(run.final_dir)
    loaded = load_model(ref).with_backend(backend)
    # also refuses a data config that is not 1-channel
    _, eval_tf = data.build_transforms(loaded.members[0].net)
    if backend == 'onnxruntime':
        for member in loaded.members:
            onnx_runner(member)
    demo_model = DemoModel(loaded=loaded, transform=eval_tf)
    _attach_test_metrics(demo_model)
    return demo_model


def _attach_test_metrics(demo_model: DemoModel) -> None:
    """The run's evaluation of these weights, and why it may not belong to them (the check
    push_to_hub.py applies before a model card may quote the numbers)."""
    loaded = demo_model.loaded
    run = loaded.cv_run or loaded.run
    if run is None:
        _attach_card_metrics(demo_model)
        return
    folder = run.eval_dir(final=loaded.cv_run is not None and not loaded.is_ensemble)
    if not folder.metrics_file.is_file():
        return
    try:
        found = upgrade(read_json(folder.metrics_file))
        if loaded.is_ensemble:
            problems = (
                []
                if found.get('weights_sha256') == loaded.weights_sha256
                else ['it evaluated other fold models']
            )
        else:
            facts = check_eval_belongs(found, folder, loaded.export_dir, run)
            problems = list(facts.problems)
            if facts.disjoint is False:
                problems.append('the evaluated scans overlap training or validation')
    except (ValueError, OSError, KeyError, TypeError) as e:  # an odd file must not stop the demo
        _logger.warning('could not read %s: %s', folder.metrics_file, e)
        return
    demo_model.test_metrics = found
    demo_model.test_metrics_source = str(folder.metrics_file)
    demo_model.test_metrics_problems = problems


def _attach_card_metrics(demo_model: DemoModel) -> None:
    """A published model (hf-hub:ORG/NAME): the test metrics of its card's model-index."""
    from huggingface_hub import hf_hub_download

    from ..publish.card import metrics_from_card

    ref = str(demo_model.loaded.ref)
    if not ref.startswith(('hf-hub:', 'hf_hub:')):
        return
    repo_id, _, revision = ref.split(':', 1)[1].partition('@')
    try:
        card = Path(hf_hub_download(repo_id, 'README.md', revision=revision or None))
        found = metrics_from_card(card.read_text(encoding='utf-8'))
    except Exception as e:  # noqa: BLE001 - offline, or a repo without a card: say not known
        _logger.warning('no model card of %s: %s', repo_id, e)
        return
    if found:
        found.setdefault('data_dir', f"the model card's model-index (huggingface.co/{repo_id})")
        demo_model.test_metrics = found
        demo_model.test_metrics_source = f'model card of {repo_id}'


# ------------------------------------------------------------------------------- the input


def check_image(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a slice this model takes (one readable sentence), or None when it is
    (``data.images.slice_problem``: the one usable-slice rule)."""
    return data.slice_problem(path)


def _as_slices(paths: Sequence[str]) -> list[data.Slice]:
    out = []
    for path in paths:
        scan, slice_index = data.parse_file_name(Path(path)) or (UNNAMED_SCAN, None)
        out.append(data.Slice(path=str(path), scan=scan, label=-1, slice_index=slice_index))
    return out


# ------------------------------------------------------------------------------- prediction


def predict_files(
    demo_model: DemoModel,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    scan_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """P(AD) per accepted file and per scan, the decision at the stored threshold; plain data.

    ``{'positive_class', 'threshold', 'threshold_source', 'temperature',
    'slices': [{'file', 'path', 'scan', 'slice_index', 'p_<AD>', 'predicted'}],
    'scans': [{'scan', 'n_slices', 'p_<AD>', 'predicted'}],
    'rejected': [{'file', 'problem'}]}``. Slices are sorted by scan and slice index; files that
    are not usable slices are listed under ``rejected``, never raised.

    A 3D scan is cut into slices under ``scan_dir`` (one subfolder per scan), which the caller
    owns and removes once it is done with the slices' ``path``; without one, a new temporary
    folder per call that is left in place (``analyse`` passes one and removes it).
    """
    paths = [str(p) for p in paths]
    rejected, accepted = [], []
    if len(paths) > MAX_FILES:
        too_many = f"more than {MAX_FILES} files at once; drop one scan's slices at a time."
        rejected += [{'file': Path(p).name, 'problem': too_many} for p in paths[MAX_FILES:]]
        paths = paths[:MAX_FILES]
    scan_slices = []
    for index, path in enumerate(paths):
        if is_scan(path):  # a NIfTI upload: the model's recorded recipe cuts it into slices
            if scan_dir is None:
                scan_dir = tempfile.mkdtemp(prefix='adni-demo-scan-')
            try:
                prepared = prepare_scans(
                    path,
                    demo_model.loaded.settings.preprocessing,
                    Path(scan_dir) / f'upload-{index}',  # two uploads may share file names
                )
            except ValueError as e:  # ScanError, VolumeError, RegistrationError: one line
                rejected.append({'file': Path(path).name, 'problem': str(e)})
                continue
            scan_slices += prepared.slices
            continue
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
        'scans': [],
        'rejected': rejected,
    }
    if not accepted and not scan_slices:
        return result
    slices = sorted(
        _as_slices(accepted) + scan_slices, key=lambda s: (s.scan, s.slice_index or 0, s.path)
    )
    scored = score_slices(
        demo_model.loaded, slices, demo_model.loaded.point, EvaluationOptions(batch_size=batch_size)
    )
    # unlike every training slice (blank, a photo, turned): no decision, said why
    result['rejected'] += [
        {'file': Path(s.path).name, 'problem': f'{Path(s.path).name} {REFUSED}: {reason}'}
        for s, reason in zip(slices, scored.reasons)
        if reason is not None
    ]
    result['input_check'] = demo_model.loaded.has_input_check
    kept = scored.kept
    result['slices'] = [
        {
            'file': Path(s.path).name,
            'path': s.path,
            'scan': s.scan,
            'slice_index': s.slice_index,
            p_key: float(p[demo_model.positive]),
            'predicted': decision,
        }
        for s, p, decision, k in zip(slices, scored.probs, scored.decisions(), kept)
        if k
    ]
    result['scans'] = [
        {
            'scan': r.scan,
            'n_slices': r.n_slices,
            p_key: r.p_positive,
            'predicted': r.predicted,
        }
        for r in scored.scan_rows()
    ]
    return result


def cam_montages(demo_model: DemoModel, result: dict[str, Any]) -> list[tuple[Image.Image, str]]:
    """One evidence-map montage (PIL image, caption) per scan of ``result``: where the model
    finds evidence for the class it *predicted* (AD in red, NC in blue), every slice of a scan
    on one colour scale (0 to that scan's largest value): evaluate.py's montage
    (``cam.scan_montage``), drawn in memory.

    At most ``MAX_CAM_SLICES`` slices in all; Grad-CAM at a stage giving at least 7x7 at the input
    size (``cam.default_target_layer``; occlusion would cost ~30 times more per upload).
    """
    from .. import plots
    from ..evaluation import cam  # captum and matplotlib only when maps are drawn

    loaded = demo_model.loaded
    if loaded.is_ensemble:  # one model's maps: an ensemble has none
        return []
    positive = demo_model.positive_class
    p_key = f'p_{positive}'
    budget = MAX_CAM_SLICES
    context = plots.FigureContext(
        loaded.settings.model_name or loaded.ref, 'upload', loaded.synthetic
    )
    montages = []
    for row in result['scans']:
        rows = [r for r in result['slices'] if r['scan'] == row['scan']][:budget]
        if not rows:
            break
        budget -= len(rows)
        images = torch.stack([demo_model.transform(data.read_image(r['path'])) for r in rows])
        explained = positive if row['predicted'] == positive else demo_model.negative_class
        target = (
            demo_model.classes.index(explained)
            if explained in demo_model.classes
            else (demo_model.positive)
        )
        maps = cam.class_maps(
            loaded.net, images, target, method='gradcam', batch_size=8, normalize=False
        )
        titles = [
            (r['file'] if r['slice_index'] is None else f'slice {r["slice_index"]}')
            + f'\nP({positive}) {r[p_key]:.3f}'
            for r in rows
        ]
        caption = (
            f'scan {row["scan"]}: mean P({positive}) {row[p_key]:.3f} '
            f'→ {row["predicted"]} at threshold {demo_model.threshold:.2f}; '
            f'evidence for {explained}'
        )
        image = cam.scan_montage(
            images.float().mean(dim=1).numpy(),  # [N, H, W]
            maps,
            tile_titles=titles,
            title=caption,
            explained=explained,
            positive=explained == positive,
            method_name='Grad-CAM',
            context=context,
        )
        montages.append((image, caption))
    return montages


# ------------------------------------------------------------------------------- the page


def describe_model(demo_model: DemoModel) -> str:
    """Markdown: the model, what it was trained on, its operating point, test metrics if known."""
    loaded = demo_model.loaded
    settings = loaded.settings
    size = 'x'.join(str(v) for v in loaded.input_size[1:])
    architecture = settings.model_name or loaded.members[0].net.pretrained_cfg.get('architecture')
    what = (
        f'{len(loaded.members)} fold models of {architecture}'
        if loaded.is_ensemble
        else architecture
    )
    classes = ', '.join(demo_model.classes)
    lines = [f'**Model** `{loaded.ref}`: {what}, {size} px input, classes {classes}']
    if demo_model.backend != 'torch':
        lines[0] += f'; P({demo_model.positive_class}) computed with {demo_model.backend}'
    note = settings.data or 'not recorded with this export'
    if loaded.synthetic:
        lines.append(
            f'**Trained on SYNTHETIC images, not ADNI MRI**: {note}. Its scores on real scans '
            f'mean nothing.'
        )
    else:
        lines.append(f'**Trained on** {note}')
    if not loaded.is_ensemble:
        checkpoint = [f'epoch {fmt(settings.epoch)}']
        if settings.weights:
            checkpoint.append(f'{settings.weights} weights')  # 'ema' or 'live'
        if settings.best_metric:
            checkpoint.append(f'best validation {settings.best_metric} {fmt(settings.best_value)}')
        lines.append('**Checkpoint** ' + ', '.join(checkpoint))
    temperature = demo_model.temperature
    shown = (
        f'calibration temperature {temperature:.3f}'
        if not isinstance(temperature, list)
        else 'each fold model at its own temperature, then the mean'
    )
    lines.append(
        f'**Decision** {demo_model.positive_class} when P({demo_model.positive_class}) >= '
        f'{demo_model.threshold:.3f} ({demo_model.threshold_source} threshold); {shown}'
    )
    lines.append(_describe_test_metrics(demo_model))
    return '\n\n'.join(lines)


def _describe_test_metrics(demo_model: DemoModel) -> str:
    found = demo_model.test_metrics
    if found is None:
        ref = str(demo_model.loaded.ref)
        where = ''
        if ref.startswith(('hf-hub:', 'hf_hub:')):
            repo_id = ref.split(':', 1)[1].split('@')[0]
            where = f' (see the model card at https://huggingface.co/{repo_id})'
        return f'**Test metrics** not known here{where}: run evaluate.py on held-out data.'
    scan = found.get('scan', {})
    shown = ', '.join(f'{label} {fmt(scan.get(key))}' for key, label in _METRIC_KEYS if key in scan)
    text = (
        f'**Test metrics** (scan level, {fmt(scan.get("n"))} scans of split '
        f"'{found.get('split', '?')}' in {found.get('data_dir', '?')}): {shown}; "
        f'slice accuracy {fmt(found.get("slice", {}).get("accuracy"))}'
    )
    if demo_model.test_metrics_problems:
        text += '. **These may not belong to the loaded weights:** ' + '; '.join(
            demo_model.test_metrics_problems
        )
    return text


def format_result(result: dict[str, Any]) -> str:
    """Markdown summary of ``predict_files``: scans first, then slices, then refused files."""
    positive = result['positive_class']
    p_key = f'p_{positive}'
    lines = []
    for row in result['scans']:
        lines.append(
            f'### Scan {row["scan"]}: P({positive}) = {row[p_key]:.3f} → '
            f'**{row["predicted"]}** (mean over {row["n_slices"]} slice'
            f'{"s" if row["n_slices"] != 1 else ""}; threshold {result["threshold"]:.3f})'
        )
    if len(result['scans']) > 1:
        lines.append('Several scans in one upload: each is scored on its own slices.')
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
            else f'Drop one or more slices: {EXPECTED_SLICE}.',
        )
    return '\n\n'.join(lines)


def analyse(demo_model: DemoModel, paths: Sequence[str] | None) -> tuple[str, list, dict]:
    """The page's handler: (summary markdown, Grad-CAM gallery, plain result). Never raises.

    A failure shows as one readable line on the page; the traceback goes to the server log only.
    """
    paths = [getattr(p, 'name', p) for p in (paths or [])]  # str paths (older gradio: file objects)
    # an uploaded scan's slices live only until its maps are drawn: a server runs for weeks
    with tempfile.TemporaryDirectory(prefix='adni-demo-scan-') as scan_dir:
        try:
            result = predict_files(demo_model, paths, scan_dir=scan_dir)
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


EXAMPLES_DIR = Path(__file__).resolve().parent / 'demo_examples'  # SYNTHETIC slices, package data


def example_uploads() -> list[list[list[str]]]:
    """The page's clickable examples: one SYNTHETIC AD and one NC scan (three slices each,
    drawn by adni_timm.synthetic), and a blank image that the input check refuses."""
    groups = [sorted(EXAMPLES_DIR.glob(f'synthetic-{c}_*.png')) for c in ('AD', 'NC')]
    groups.append([EXAMPLES_DIR / 'blank.png'])
    return [[[str(p) for p in group]] for group in groups if group and group[0].is_file()]


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
                    label="Slices: one, or all of one scan's (grayscale JPEG/PNG); or a 3D "
                    'scan (.nii / .nii.gz) when the model was trained on adni-prepare output',
                    file_count='multiple',
                    type='filepath',
                    elem_id='slices',
                )
                preview = gr.Gallery(
                    label='your upload',
                    columns=6,
                    height=120,
                    object_fit='contain',
                    elem_id='preview',
                )
                run = gr.Button('Analyse', variant='primary', elem_id='analyse')
                gr.Examples(
                    examples=example_uploads(),
                    inputs=files,
                    label='SYNTHETIC examples (generated, not MRI), and a blank image the model '
                    'refuses',
                )
                with gr.Accordion('The model', open=True):
                    gr.Markdown(describe_model(demo_model), elem_id='model-info')
            with gr.Column(scale=3):  # the result beside the upload: visible without scrolling
                summary = gr.Markdown(f'Drop slices to see P({positive}).', elem_id='result')
                gallery = gr.Gallery(
                    label='Grad-CAM: where the model finds evidence for the class it predicted '
                    f'({positive} red, {demo_model.negative_class} blue; one scale per scan)',
                    columns=4,
                    height=480,
                    object_fit='contain',
                    elem_id='cam',
                )
        with gr.Accordion('Result as JSON', open=False):
            raw = gr.JSON(elem_id='raw')
        gr.Markdown(
            f"{DISCLAIMER} Scores come from `evaluate.py`'s inference with the stored "
            f"temperature; a scan's P({positive}) is the mean over their slices."
        )

        def handle(paths):
            return analyse(demo_model, paths)

        def open_first_montage(result):  # the gallery grid would crop a montage to a square
            return gr.Gallery(selected_index=0 if (result or {}).get('slices') else None)

        def show(paths):  # what was dropped, before anything is scored
            return [getattr(p, 'name', p) for p in (paths or [])]

        ui_only = _ui_only_event(run.click)
        files.change(show, inputs=files, outputs=preview, **ui_only)
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
