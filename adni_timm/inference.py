"""The one prediction path: a loaded model, its operating point, slices in, scans out.

- ``load_model(ref)`` builds a ``LoadedModel`` (one export, a cross-validation run's fold ensemble,
  or any list of exports) in this one place: its members, classes, precision and the stored
  ``OperatingPoint`` (threshold, where it came from, the members' temperatures).
- ``LoadedModel.predict`` gives calibrated probabilities: each member's softmax scaled by its own
  temperature, averaged over the members (an ensemble is calibrated member by member, on what each
  member was selected on, never on the mean of raw probabilities).
- ``predict_loader`` is the one inference loop (per-epoch validation uses it too) with the one
  precision policy: a run trained in fp32 is validated and evaluated in fp32, a bf16 run in bf16 on
  CUDA; the CPU always computes in fp32. channels_last only on CUDA.
- ``scan_rows`` groups slices into scans and decides, for evaluate, ``--images``, the demo and
  Grad-CAM alike.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import data, metrics
from .export.format import ExportError, ExportSettings, input_channels, load_export
from .utils.hardware import bf16_supported
from .utils.progress import Progress
from .models import LABEL_NAMES
from .run import Run, RunError, locate

__all__ = [
    'PRECISIONS',
    'THRESHOLD_SOURCES',
    'UNNAMED_GROUP',
    'REFUSED',
    'InferenceError',
    'OperatingPoint',
    'Member',
    'LoadedModel',
    'ScanRow',
    'autocast_dtype',
    'full_precision',
    'predict_loader',
    'predict_slices',
    'check_input_channels',
    'load_model',
    'calibrated_mean',
    'negative_name',
    'slice_decisions',
    'scan_rows',
]

# 'no' is Accelerate's name for fp32; 'auto' is bf16 where the GPU has it natively, else fp16
_logger = logging.getLogger(__name__)
PRECISIONS = ('auto', 'no', 'fp32', 'bf16', 'fp16')
BACKENDS = ('torch', 'onnxruntime')
# where a threshold came from: chosen on validation scans, on out-of-fold predictions of
# cross-validation, set by hand, or the fixed 0.5 when nothing was stored
THRESHOLD_SOURCES = ('validation', 'out-of-fold', 'cli', 'fixed')
DATA_CHANNELS = 1  # data.SliceDataset reads every slice as 8-bit grayscale ('L')
UNNAMED_GROUP = 'unnamed files'  # the scan of files whose names carry no <scan>_<slice>
# how a slice the input check refuses is shown, before its reason
REFUSED = 'does not look like a training slice'


class InferenceError(ValueError):
    """A model or input that cannot be predicted as asked; the message names the fix."""


# ------------------------------------------------------------------------------ the loop


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision {precision!r}: choose one of {list(PRECISIONS)}')
    if device.type != 'cuda' or precision in ('no', 'fp32'):
        return None
    if precision == 'bf16' or (precision == 'auto' and bf16_supported()):
        return torch.bfloat16
    return torch.float16


@torch.inference_mode()
def predict_loader(
    model: torch.nn.Module,
    loader,
    *,
    device: torch.device,
    precision: str = 'no',
    channels_last: bool = False,
    tta: bool = False,
    accelerator=None,
    with_loss: bool = False,
    progress: str = 'none',
    desc: str = 'predict',
) -> tuple[np.ndarray, np.ndarray | None]:
    """(softmax probabilities ``[N, C]`` float64, per-slice cross-entropy ``[N]`` or None).

    ``model`` is the plain module (not a DDP wrapper): its forward runs eagerly even when it was
    compiled in place. With an ``accelerator`` the loader is sharded over its processes and
    ``gather_for_metrics`` returns every slice exactly once; every process must call. ``tta``
    averages the softmax of each slice and its horizontal flip. The training flag is restored.
    ``progress`` (auto, bar, lines, none) shows the slices done (``utils.progress``), on the main
    process only.
    """
    dtype = autocast_dtype(precision, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    channels_last = channels_last and device.type == 'cuda'
    was_training = model.training
    model.eval()
    probs_out, losses_out = [], []
    main = accelerator is None or accelerator.is_main_process
    total = len(loader.dataset) if hasattr(loader, 'dataset') else 0
    bar = Progress(progress, total, desc, enabled=main, unit='slices', summary=True, logger=_logger)
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model.forward(images).float()
                probs = logits.softmax(-1)
                if tta:
                    probs = (probs + model.forward(images.flip(-1)).float().softmax(-1)) / 2
            out = (
                (probs, F.cross_entropy(logits, targets.to(device), reduction='none'))
                if with_loss
                else (probs,)
            )
            if accelerator is not None:
                out = accelerator.gather_for_metrics(out)
            probs_out.append(out[0].cpu())
            if with_loss:
                losses_out.append(out[1].cpu())
            bar.update(out[0].shape[0])
    finally:
        model.train(was_training)
        bar.close()
    probs = torch.cat(probs_out).double().numpy()
    return probs, (torch.cat(losses_out).double().numpy() if with_loss else None)


def full_precision(device_type: str):
    """A context without autocast, whatever a caller's: attributions need fp32 gradients."""
    return torch.autocast(device_type, enabled=False)


def check_input_channels(net: torch.nn.Module) -> None:
    from timm.data import resolve_data_config

    channels = {input_channels(net), resolve_data_config(model=net)['input_size'][0]}
    if channels != {DATA_CHANNELS}:
        raise InferenceError(
            f'the model takes {max(channels)}-channel input but ADNI slices are '
            f'{DATA_CHANNELS}-channel grayscale; use a model created with in_chans=1 (every '
            f'adni_convnext_* model is), e.g. one trained by train.py.'
        )


def predict_slices(
    net: torch.nn.Module,
    slices: Sequence[data.Slice],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    accelerator=None,
    tta: bool = False,
    precision: str = 'no',
    progress: str = 'none',
) -> np.ndarray:
    """Raw softmax probabilities ``(len(slices), num_classes)`` of one network, in slice order.

    Preprocessing is the model's own eval transform. With an ``accelerator`` the slices are sharded
    over its processes and gathered (each counted once); every process must call.
    """
    from accelerate import PartialState

    if not slices:
        raise InferenceError('no slices to predict on.')
    net = accelerator.unwrap_model(net) if accelerator is not None else net
    check_input_channels(net)
    device = accelerator.device if accelerator is not None else PartialState().device
    _, eval_tf = data.build_transforms(net)  # == create_transform(**resolve_data_config(model=net))
    loader = data.create_loader(
        data.SliceDataset(list(slices), transform=eval_tf),
        batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == 'cuda',
    )
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    net.to(device)
    if device.type == 'cuda':
        net.to(memory_format=torch.channels_last)
    probs, _ = predict_loader(
        net,
        loader,
        device=device,
        precision=precision,
        channels_last=True,
        tta=tta,
        accelerator=accelerator,
        progress=progress,
    )
    return probs


# ------------------------------------------------------------------- the model and its point


@dataclass(frozen=True)
class OperatingPoint:
    """How probabilities become a decision: each member's temperature, then P(AD) >= threshold."""

    threshold: float
    source: str  # one of THRESHOLD_SOURCES
    temperatures: tuple[float, ...] = (1.0,)  # one per member
    rule: str | None = None  # 'youden', 'sensitivity >= 0.9', ...
    note: str | None = None  # e.g. 'chosen without TTA'
    selection: dict | None = None  # how an evaluation chose it (on which scans, what it met)

    @classmethod
    def fixed(cls, temperatures: Sequence[float] = (1.0,)) -> OperatingPoint:
        return cls(0.5, 'fixed', tuple(temperatures))

    @property
    def temperature(self) -> float | list[float]:
        """The temperature of a single model; the members' for an ensemble."""
        return self.temperatures[0] if len(self.temperatures) == 1 else list(self.temperatures)

    def as_metrics(self) -> dict:
        """The keys metrics.json carries for it."""
        out = {'threshold': self.threshold, 'threshold_source': self.source}
        if self.rule:
            out['threshold_rule'] = self.rule
        if self.note:
            out['threshold_note'] = self.note
        if self.selection:
            out['threshold_selection'] = self.selection
        return out


@dataclass
class Member:
    """One network of a loaded model, as exported."""

    net: torch.nn.Module
    ref: str
    settings: ExportSettings
    precision: str  # the precision it was trained in ('no' = fp32)
    weights_sha256: str
    export_dir: Path | None
    files_dir: Path | None = None  # the export's files (a Hub repo: its cache snapshot)
    # onnx_runner's session, built once: each build parses the graph and hashes the weights
    _onnx: Any = field(default=None, init=False, repr=False, compare=False)

    def input_check(self):
        """The export's ``input_check.InputCheck``; None when it has none."""
        from .export.input_check import InputCheck

        return InputCheck.load(self.files_dir) if self.files_dir is not None else None


@dataclass
class LoadedModel:
    """A model ready to predict: one export or an ensemble, and its stored operating point."""

    ref: str
    members: list[Member]
    classes: list[str]
    point: OperatingPoint
    run: Run | None = None  # the ordinary run it came from: its split.json names who validated
    cv_run: Run | None = None  # the cross-validation run whose out-of-fold predictions set it
    calibration_method: str = 'temperature fitted on the validation slices'
    file_is_scan: bool = False
    notes: list[str] = field(default_factory=list)
    backend: str = 'torch'  # what computes P(AD): torch, or each member's model.onnx (onnxruntime)

    def with_backend(self, backend: str) -> LoadedModel:
        """The same model predicting through ``backend`` (``torch`` or ``onnxruntime``)."""
        if backend not in BACKENDS:
            raise InferenceError(f'backend {backend!r}: choose torch or onnxruntime')
        return replace(self, backend=backend)

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def net(self) -> torch.nn.Module:
        if self.is_ensemble:
            raise InferenceError(
                f'{self.ref} is an ensemble of {len(self.members)} models: this needs one model, '
                f'e.g. RUN/final (a refit) or RUN/fold0'
            )
        return self.members[0].net

    @property
    def settings(self) -> ExportSettings:
        """The export settings of a single model (the first member's for an ensemble)."""
        return self.members[0].settings

    @property
    def export_dir(self) -> Path | None:
        return None if self.is_ensemble else self.members[0].export_dir

    @property
    def positive(self) -> int:
        return data.positive_index(self.classes)

    @property
    def positive_class(self) -> str:
        return self.classes[self.positive]

    @property
    def negative_class(self) -> str:
        return negative_name(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.members[0].net.pretrained_cfg['input_size'])

    @property
    def weights_sha256(self) -> str | list[str]:
        hashes = [m.weights_sha256 for m in self.members]
        return hashes[0] if len(hashes) == 1 else hashes

    @property
    def precision(self) -> str | list[str]:
        found = [m.precision for m in self.members]
        return found[0] if len(set(found)) == 1 else found

    @property
    def synthetic(self) -> bool:
        return any(m.settings.synthetic for m in self.members)

    def predict_raw(self, slices, *, precision: str | None = None, **kwargs) -> list[np.ndarray]:
        """Each member's raw softmax ``[N, C]`` on ``slices`` (see ``predict_slices``); with the
        ``onnxruntime`` backend each member's ``model.onnx`` computes it (``onnx_runtime``: one
        process, fp32, no TTA; the torch-only options are not used)."""
        if self.backend == 'onnxruntime':
            return [_onnx_probs(m, slices, kwargs.get('batch_size', 64)) for m in self.members]

        return [
            predict_slices(m.net, slices, precision=precision or m.precision, **kwargs)
            for m in self.members
        ]

    def check_inputs(self, slices, *, batch_size: int = 64) -> list[str | None]:
        """Per slice, why it does not look like a training slice (the first member's check that
        refuses it), or None; all None when no member has an input check."""
        from accelerate import PartialState

        reasons: list[str | None] = [None] * len(slices)
        for member in self.members:
            check = member.input_check()
            if check is None:
                continue
            _, eval_tf = data.build_transforms(member.net)
            verdicts = check.check(
                member.net,
                [s.path for s in slices],
                eval_tf,
                batch_size=batch_size,
                device=PartialState().device,
            )
            for i, verdict in enumerate(verdicts):
                if not verdict.ok and reasons[i] is None:
                    reasons[i] = verdict.reason
        return reasons

    @property
    def has_input_check(self) -> bool:
        from .export.input_check import CHECK_NAME

        return any(
            m.files_dir is not None and (m.files_dir / CHECK_NAME).is_file() for m in self.members
        )

    def predict(self, slices, *, point: OperatingPoint | None = None, **kwargs) -> np.ndarray:
        """Calibrated probabilities ``[N, C]`` at ``point`` (default: the stored one)."""
        return calibrated_mean(self.predict_raw(slices, **kwargs), (point or self.point))


def _onnx_probs(member: Member, slices, batch_size: int) -> np.ndarray:
    """A member's softmax from its ``model.onnx`` (``onnx_runner``)."""
    runner = onnx_runner(member)
    return runner.predict_images([s.path for s in slices], batch_size=batch_size).probs


def onnx_runner(member: Member):
    """The onnxruntime session of a member's ``model.onnx``, written beside a local export when
    missing (it is derived from the weights and records their fingerprint); built on the first
    call, the same one after (the demo checks it at start-up, then serves every request)."""
    if member._onnx is not None:
        return member._onnx
    import importlib.util

    from .export.onnx import ONNX_NAME, export_onnx
    from .export.onnx_runtime import OnnxClassifier

    if importlib.util.find_spec('onnxruntime') is None:
        raise InferenceError(
            "the onnxruntime backend needs onnxruntime: pip install 'adni-timm[onnx]', or use "
            'the torch backend'
        )
    folder = member.files_dir
    if folder is None:
        raise InferenceError(f'{member.ref}: no export folder to run with onnxruntime')
    if not (folder / ONNX_NAME).is_file():
        if member.export_dir is None:  # a Hub repo published without --onnx
            raise InferenceError(
                f'{member.ref} has no {ONNX_NAME}: publish it with push_to_hub.py --onnx, or use '
                f'--backend torch'
            )
        export_onnx(member.export_dir)
    member._onnx = OnnxClassifier(folder)
    return member._onnx


def calibrated_mean(member_probs: Sequence[np.ndarray], point: OperatingPoint) -> np.ndarray:
    """The mean over members of each member's softmax scaled by its own temperature."""
    if len(member_probs) != len(point.temperatures):
        raise InferenceError(
            f'{len(member_probs)} members but {len(point.temperatures)} temperatures'
        )
    return np.mean(
        [metrics.apply_temperature(p, t) for p, t in zip(member_probs, point.temperatures)], axis=0
    )


def _recorded(settings: ExportSettings, run: Run | None) -> tuple[str, bool]:
    """(precision, file_is_scan) a model was trained with: its export, else its run record."""
    precision, file_is_scan = settings.precision, settings.file_is_scan
    if precision is None and run is not None and run.record_file.is_file():
        record = run.record()
        precision = record.mixed_precision
        file_is_scan = file_is_scan or record.config.file_is_scan
    return (precision if precision in PRECISIONS else 'no'), bool(file_is_scan)


def _load_member(ref: str) -> tuple[Member, Run | None]:
    prefix, _, rest = ref.partition(':')
    if prefix in ('hf-hub', 'hf_hub') and rest:
        loaded, run = load_export(ref), None
    else:
        export_dir, run = locate(rest if prefix == 'local-dir' and rest else ref)
        loaded = load_export(ref, export_dir=export_dir)
    precision, _ = _recorded(loaded.settings, run)
    member = Member(
        net=loaded.net,
        ref=ref,
        settings=loaded.settings,
        precision=precision,
        weights_sha256=loaded.weights_sha256,
        export_dir=loaded.export_dir,
        files_dir=loaded.files_dir,
    )
    return member, run


def _stored_point(settings: ExportSettings) -> OperatingPoint:
    if settings.threshold is None:
        return OperatingPoint.fixed((settings.temperature,))
    return OperatingPoint(
        threshold=settings.threshold,
        source=settings.threshold_source or 'validation',
        temperatures=(settings.temperature,),
        rule=settings.threshold_rule,
    )


def _classes(members: list[Member]) -> list[str]:
    lists = {
        tuple(m.settings.classes or m.net.pretrained_cfg.get('label_names') or LABEL_NAMES)
        for m in members
    }
    sizes = {tuple(m.net.pretrained_cfg['input_size']) for m in members}
    if len(lists) > 1 or len(sizes) > 1:
        raise InferenceError(
            f'the models of an ensemble must share classes and input size; got classes '
            f'{sorted(lists)} and input sizes {sorted(sizes)}'
        )
    return list(lists.pop())


def load_model(ref: str | os.PathLike | Sequence[str | os.PathLike]) -> LoadedModel:
    """Load a model reference as the 1-channel model(s) it was trained as, in eval mode.

    ``ref``: a RUN folder (its published export: ``RUN/best``, or a cross-validation run's fold
    ensemble), an export folder, ``local-dir:DIR``, ``hf-hub:ORG/NAME[@rev]``,
    ``path/model.safetensors``, or a list of these (their ensemble: members calibrated with their
    own stored temperatures, the fixed threshold 0.5 unless one is chosen at evaluation).
    """
    refs = [ref] if isinstance(ref, (str, os.PathLike)) else list(ref)
    if not refs:
        raise InferenceError('no model given')
    if len(refs) == 1 and Run(str(refs[0])).is_cv:
        return _load_cv_ensemble(Run(str(refs[0])))
    loaded = [_load_member(str(r)) for r in refs]
    members = [m for m, _ in loaded]
    classes = _classes(members)
    if len(members) == 1:
        ((member, run),) = loaded
        model = LoadedModel(
            ref=str(refs[0]),
            members=members,
            classes=classes,
            point=_stored_point(member.settings),
            file_is_scan=_recorded(member.settings, run)[1],
        )
        # RUN/best (an ordinary run): split.json says who validated; RUN/final (a refit): its
        # operating point is the cross-validation run's, chosen out of fold
        if run is not None and run.is_cv:
            model.cv_run = run
            model.calibration_method = 'temperature fitted on out-of-fold predictions'
        else:
            model.run = run
        return model
    return LoadedModel(
        ref=' + '.join(map(str, refs)),
        members=members,
        classes=classes,
        point=OperatingPoint.fixed(tuple(m.settings.temperature for m in members)),
        calibration_method="each member's own stored temperature, then the mean",
        file_is_scan=any(_recorded(m.settings, r)[1] for m, r in loaded),
    )


def _load_cv_ensemble(run: Run) -> LoadedModel:
    """A cross-validation run as its fold ensemble, at the out-of-fold operating point."""
    if not run.cv_file.is_file():
        raise RunError(
            f'{run} is a cross-validation run whose folds have not all finished (no '
            f'{Run.CV}); continue it with train.py --output-dir {run} --resume'
        )
    cv = run.read_cv()
    members = []
    for k in range(cv['k']):
        try:
            members.append(_load_member(str(run.fold(k).path))[0])
        except ExportError as e:
            raise RunError(f'{run}: fold {k} cannot be loaded ({e})') from e
    ensemble = cv.get('ensemble') or {}
    temperatures = ensemble.get('temperatures') or [m.settings.temperature for m in members]
    return LoadedModel(
        ref=str(run),
        members=members,
        classes=list(cv.get('classes') or _classes(members)),
        point=OperatingPoint(
            threshold=float(ensemble.get('threshold', cv['threshold'])),
            source='out-of-fold',
            temperatures=tuple(float(t) for t in temperatures),
            rule=ensemble.get('threshold_rule', cv.get('threshold_rule')),
        ),
        cv_run=run,
        calibration_method=ensemble.get(
            'calibration', "each fold model's own temperature, then the mean"
        ),
        file_is_scan=any(m.settings.file_is_scan for m in members),
    )


# --------------------------------------------------------------------- slices -> decisions


def negative_name(classes: Sequence[str]) -> str:
    """What a decision against AD is called: NC for two classes, else 'not AD'."""
    pos = data.positive_index(classes)
    return classes[1 - pos] if len(classes) == 2 else f'not {classes[pos]}'


def slice_decisions(probs: np.ndarray, threshold: float, classes: Sequence[str]) -> list[str]:
    """AD when P(AD) >= threshold, else the most probable other class (NC for two classes)."""
    pos = data.positive_index(classes)
    others = np.array(probs, dtype=np.float64)
    others[:, pos] = -1
    return [
        classes[pos] if row[pos] >= threshold else classes[int(np.argmax(o))]
        for row, o in zip(probs, others)
    ]


@dataclass(frozen=True)
class ScanRow:
    """One scan: its slices' mean calibrated P(AD) and the decision at the threshold."""

    scan: str
    n_slices: int
    p_positive: float
    predicted: str
    label: str | None = None  # the true class, when known
    named: bool = True  # False: the group of files whose names carry no scan id


def scan_rows(
    slices: Sequence[data.Slice],
    p_positive: np.ndarray,
    threshold: float,
    classes: Sequence[str],
    labelled: bool = False,
) -> list[ScanRow]:
    """Group slices by scan (sorted ids), mean P(AD), decide. Files without a scan id
    (``slice_index`` None and no scan from the name) form one group, ``UNNAMED_GROUP``."""
    p_positive = np.asarray(p_positive, dtype=np.float64)
    if len(slices) != len(p_positive):
        raise InferenceError(f'{len(slices)} slices but {len(p_positive)} probabilities')
    ids = [s.scan or UNNAMED_GROUP for s in slices]
    pos = data.positive_index(classes)
    groups, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=p_positive, minlength=len(groups)) / counts
    label_of = {i: classes[s.label] for i, s in zip(ids, slices)} if labelled else {}
    negative = negative_name(classes)
    return [
        ScanRow(
            scan=str(g),
            n_slices=int(n),
            p_positive=float(p),
            predicted=classes[pos] if p >= threshold else negative,
            label=label_of.get(g),
            named=g != UNNAMED_GROUP,
        )
        for g, n, p in zip(groups, counts, means)
    ]
