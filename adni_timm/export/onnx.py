"""``model.onnx`` beside an export: the published network for onnxruntime, without torch.

    export_onnx('runs/tiny/best')               # -> runs/tiny/best/model.onnx
    OnnxClassifier('runs/tiny/best').predict_images(['218391_78.jpeg'])   # export.onnx_runtime

The ONNX graph is the export as anyone loads it, ``timm.create_model('local-dir:EXPORT',
pretrained=True)``: 3-channel input ``pixel_values [batch, 3, H, W]`` (the grayscale slice in all
three channels, normalised with the export's mean / std), dynamic batch, two outputs: ``logits
[batch, classes]`` and ``features [batch, D]``, the pooled pre-logits features the input check
(``adni_timm.export.input_check``) measures, so that check runs without torch as well. Written with
torch's ``torch.export``-based exporter (``onnxscript``), in one file (no external data),
atomically; the fingerprint of the weights it came from is stored in the model's metadata
(``weights_sha256``) so the runner can refuse an ONNX file left beside other weights. After
writing, onnxruntime runs it once against torch and the export is refused when they disagree.

Needs the ``[onnx]`` extra (onnx, onnxruntime, onnxscript); only inside ``export_onnx``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import timm
import torch

from .format import CONFIG_NAME, WEIGHTS_NAME, ExportError, input_channels, read_export_config
from ..utils.files import sha256_file

__all__ = [
    'ONNX_NAME',
    'INPUT_NAME',
    'OUTPUT_NAMES',
    'OPSET',
    'OnnxExportError',
    'OnnxLogitsAndFeatures',
    'export_onnx',
]

_logger = logging.getLogger(__name__)

ONNX_NAME = 'model.onnx'
INPUT_NAME = 'pixel_values'  # the Hugging Face name for an image batch
OUTPUT_NAMES = ('logits', 'features')
OPSET = 18  # onnxruntime >= 1.14 runs it; torch's exporter targets 18 natively
_CHECK_RTOL, _CHECK_ATOL = 1e-4, 1e-5  # onnxruntime vs torch after export, on random input


class OnnxExportError(ExportError):
    """The ONNX file could not be written or does not reproduce torch; the message names the fix."""


class OnnxLogitsAndFeatures(torch.nn.Module):
    """A timm classifier returning ``(logits, pooled pre-logits features)`` from one trunk pass."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self.model.forward_features(pixel_values)
        features = self.model.forward_head(trunk, pre_logits=True)
        return self.model.forward_head(trunk), features


def _load_published(export_dir: Path) -> torch.nn.Module:
    read_export_config(export_dir)  # a clear error when it is not an export
    try:
        return timm.create_model(f'local-dir:{export_dir}', pretrained=True).eval()
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise OnnxExportError(
            f'could not load {export_dir} with timm ({type(e).__name__}: {e}); export the run '
            f'first (RUN/best is one) and pass that folder'
        ) from e


def export_onnx(
    source: str | os.PathLike | torch.nn.Module,
    out_path: str | os.PathLike | None = None,
    *,
    opset: int = OPSET,
    check: bool = True,
) -> Path:
    """Write the ONNX form of ``source`` to ``out_path`` (default ``EXPORT/model.onnx``).

    ``source``: an export folder (``RUN/best``, ``RUN/final``, a ``push_to_hub.py --dry-run``
    folder), loaded as users load it, or a 3-channel timm model in eval mode (then ``out_path`` is
    required). ``check`` runs onnxruntime once on a random batch of 2 and raises
    ``OnnxExportError`` unless logits and features match torch to rtol 1e-4.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's exporter needs it; a clear message if absent
    except ImportError as e:
        raise OnnxExportError(
            f'ONNX export needs onnx and onnxscript ({e}): pip install "adni-timm[onnx]"'
        ) from e
    if isinstance(source, torch.nn.Module):
        if out_path is None:
            raise OnnxExportError('export_onnx(model) needs out_path (the file to write)')
        model, weights = source.eval(), None
    else:
        export_dir = Path(str(source).removeprefix('local-dir:'))
        model, weights = _load_published(export_dir), export_dir / WEIGHTS_NAME
        out_path = export_dir / ONNX_NAME if out_path is None else out_path
    if input_channels(model) != 3:
        raise OnnxExportError(
            f'the model takes {input_channels(model)}-channel input; the ONNX file is the '
            f'published 3-channel form: pass the export folder (it holds {WEIGHTS_NAME} + '
            f'{CONFIG_NAME}) instead of the training model'
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _, height, width = model.pretrained_cfg['input_size']
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    wrapper = OnnxLogitsAndFeatures(model).eval()
    tmp = out_path.with_name(f'.{out_path.name}.tmp')
    try:
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim('batch', min=1)},),
            opset_version=opset,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        meta = {
            'weights_sha256': sha256_file(weights) if weights is not None else '',
            'architecture': str(model.pretrained_cfg.get('architecture', '')),
            'producer': 'adni_timm.export.onnx',
        }
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
        if check:
            _check_against_torch(tmp, wrapper, example)
        tmp.replace(out_path)
    except OnnxExportError:
        raise
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds: one message, the cause
        raise OnnxExportError(
            f'ONNX export to {out_path} failed ({type(e).__name__}: {e}); nothing written. '
            f'Check the torch, onnxscript and onnx versions (pip install "adni-timm[onnx]")'
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    _logger.info('wrote %s (%.1f MB)', out_path, out_path.stat().st_size / 1e6)
    return out_path


def _check_against_torch(path: Path, wrapper: torch.nn.Module, example: torch.Tensor) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: example.numpy()})
    with torch.inference_mode():
        want = [t.numpy() for t in wrapper(example)]
    for name, g, w in zip(OUTPUT_NAMES, got, want):
        if g.shape != w.shape or not np.allclose(g, w, rtol=_CHECK_RTOL, atol=_CHECK_ATOL):
            diff = float(np.max(np.abs(g - w))) if g.shape == w.shape else float('nan')
            raise OnnxExportError(
                f'the ONNX {name} differ from torch (shapes {g.shape} vs {w.shape}, max abs '
                f'difference {diff:.2e}); nothing written. Report it with the torch and '
                f'onnxruntime versions'
            )
