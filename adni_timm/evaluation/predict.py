"""Predict unlabelled files: slices, a folder, or a 3D scan (NIfTI / DICOM) made into slices.

``evaluate.py --images`` and the web demo both come here: one path from files to P(AD) per slice
and per scan, at the model's stored operating point, with the input check's refusals said.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import data, plots
from ..inference import (
    REFUSED,
    UNNAMED_GROUP,
    LoadedModel,
    OperatingPoint,
    calibrated_mean,
    load_model,
    scan_rows,
    slice_decisions,
)
from ..prepare.scan_input import is_scan, prepare_scans
from ..utils.display import fmt
from ..utils.files import write_csv
from ..run import EvalFolder
from .options import EvaluationOptions
from .report import EvaluationError, _write_cam, choose_point

_logger = logging.getLogger(__name__)


def unlabelled_slices(path, file_is_scan: bool = False) -> list[data.Slice]:
    """Every image under ``path`` (a file or a folder, searched recursively) as an unlabelled slice;
    ``<scan>_<slice>`` names group into scans, other names into ``UNNAMED_GROUP``."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(f for f in path.rglob('*') if f.suffix.lower() in data.IMAGE_EXTENSIONS)
    elif path.is_file():
        files = [path]
    else:
        raise EvaluationError(f'--images {path}: no such file or folder.')
    if not files:
        raise EvaluationError(
            f'--images {path}: no {"/".join(data.IMAGE_EXTENSIONS)} images found.'
        )
    out = []
    for f in files:
        scan, slice_index = data.parse_file_name(f, file_is_scan) or (UNNAMED_GROUP, None)
        out.append(data.Slice(path=str(f), scan=scan, label=-1, slice_index=slice_index))
    return out


def _refuse_unusable(
    slices: list[data.Slice], skip_bad: bool, num_workers: int
) -> list[data.Slice]:
    """Undecodable files (listed; ``--skip-bad-images`` leaves them out) and colour pictures
    (refused, as the web demo refuses them) never get a score."""
    slices = data.resolve_bad_images(
        slices, skip_bad=skip_bad, num_workers=num_workers, what='--images'
    )
    colour = [s.path for s in slices if data.is_colour_image(s.path)]
    if colour and not skip_bad:
        raise EvaluationError(
            f'{len(colour)} colour image(s) among --images ({", ".join(colour[:3])}): the model '
            f'takes grayscale MRI slices; remove them, or leave them out with --skip-bad-images.'
        )
    if colour:
        _logger.warning(
            '--skip-bad-images: left out %d colour image(s): %s', len(colour), ', '.join(colour[:5])
        )
    return [s for s in slices if s.path not in set(colour)]


@dataclass
class ScoredSlices:
    """Unlabelled slices scored at one operating point: calibrated probabilities for every slice
    and, per slice, why the input check refused it (None: accepted)."""

    slices: list[data.Slice]
    probs: np.ndarray  # [N, C], calibrated at ``point``
    reasons: list[str | None]
    point: OperatingPoint
    classes: list[str]

    @property
    def positive(self) -> int:
        return data.positive_index(self.classes)

    @property
    def kept(self) -> np.ndarray:
        return np.array([r is None for r in self.reasons], dtype=bool)

    def decisions(self) -> list[str]:
        return slice_decisions(self.probs, self.point.threshold, self.classes)

    def scan_rows(self):
        """A decision per scan over its accepted slices (``inference.scan_rows``)."""
        kept = self.kept
        return scan_rows(
            [s for s, k in zip(self.slices, kept) if k],
            self.probs[kept, self.positive],
            self.point.threshold,
            self.classes,
        )


def score_slices(
    model: LoadedModel,
    slices: list[data.Slice],
    point: OperatingPoint,
    options: EvaluationOptions | None = None,
) -> ScoredSlices:
    """The one path from unlabelled slices to P(AD): the input check, then the model (its backend),
    calibrated at ``point``. ``evaluate --images`` and the web demo both call it."""
    opt = options or EvaluationOptions()
    reasons = model.check_inputs(slices, batch_size=opt.batch_size)
    each = model.predict_raw(
        slices,
        batch_size=opt.batch_size,
        num_workers=opt.num_workers,
        tta=opt.tta,
        precision=opt.precision,
        progress=opt.progress,
    )
    return ScoredSlices(list(slices), calibrated_mean(each, point), reasons, point, model.classes)


def predict_images(
    model,
    path,
    *,
    output_dir=None,
    threshold: float | None = None,
    score_flagged: bool = False,
    options: EvaluationOptions | None = None,
) -> dict[str, Any]:
    """Predict unlabelled slices (one file or a folder), or 3D scans (a NIfTI file, a DICOM series
    folder, a folder of NIfTI files: cut into slices by the model's recorded adni-prepare recipe,
    ``scan_input``): P(AD) and the decision per slice and per scan (a 3D file is one scan; a
    cross-validation run predicts with its fold ensemble). With ``output_dir`` writes
    ``predictions.csv`` and ``scans.csv``.

    A slice the model's input check refuses (``input_check``: unlike every training slice) gets
    no decision and no P(AD) (``score_flagged`` shows its P(AD) anyway) and leaves its scan's
    mean; a scan left with no slice gets no decision either.
    """
    opt = options or EvaluationOptions()
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    model = model.with_backend(opt.backend)
    classes = model.classes
    if opt.cam.n:
        model.net  # noqa: B018 - refuses an ensemble before any work
    point = choose_point(model, threshold=threshold, tta=False, split=None)
    file_is_scan = model.file_is_scan if opt.file_is_scan is None else opt.file_is_scan
    scans = None
    if is_scan(path):  # a 3D scan: the model's own recorded preprocessing cuts it into slices
        work = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp())
        scans = prepare_scans(path, model.settings.preprocessing, work / 'slices')
        slices = scans.slices
    else:
        slices = _refuse_unusable(
            unlabelled_slices(path, file_is_scan), opt.skip_bad_images, opt.num_workers
        )
    if not slices:
        raise EvaluationError(f'--images {path}: no usable image left')
    scored_slices = score_slices(model, slices, point, opt)
    probs, reasons, kept = scored_slices.probs, scored_slices.reasons, scored_slices.kept
    pos = scored_slices.positive
    p_key = f'p_{classes[pos]}'
    slice_rows = [
        {
            'path': s.path,
            'scan': s.scan,
            p_key: float(p[pos]) if reason is None or score_flagged else None,
            'predicted': decision if reason is None else '',
            'input_check': 'ok' if reason is None else f'{REFUSED}: {reason}',
        }
        for s, p, decision, reason in zip(slices, probs, scored_slices.decisions(), reasons)
    ]
    rows = scored_slices.scan_rows()
    flagged = Counter(s.scan for s, k in zip(slices, kept) if not k)
    scan_table = [
        {
            'scan': r.scan,
            'n_slices': r.n_slices,
            p_key: r.p_positive,
            'predicted': r.predicted,
            'n_refused': flagged.get(r.scan, 0),
        }
        for r in rows
    ]
    scored = {r.scan for r in rows}
    scan_table += [  # every slice refused: nothing to decide on
        {'scan': pid, 'n_slices': 0, p_key: None, 'predicted': '', 'n_refused': n}
        for pid, n in sorted(flagged.items())
        if pid not in scored
    ]
    result = {
        'model': model.ref,
        **point.as_metrics(),
        'temperature': point.temperature,
        'positive_class': classes[pos],
        'input_check': model.has_input_check,
        'refused': int((~kept).sum()),
        'slices': slice_rows,
        'scans': scan_table,
    }
    if scans is not None:
        result['volumes'] = {
            'registration_similarity': scans.similarity,
            'warnings': scans.warnings,
        }
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        folder = EvalFolder(out)
        write_csv(folder.predictions_file, slice_rows)
        write_csv(folder.scans_file, scan_table)
        _logger.info('wrote predictions to %s', out)
        if opt.cam.n:
            result['cam'] = _write_cam(
                model,
                [s for s, k in zip(slices, kept) if k],
                probs[kept, pos],
                point.threshold,
                classes,
                folder,
                opt.cam,
                labelled=False,
                context=plots.FigureContext(model.ref, 'unlabelled', model.synthetic),
                progress=opt.progress,
            )
    return result


def format_predictions(result: dict, max_rows: int = 20) -> str:
    """Per-scan rows (files without a scan id as one group), then per-slice rows; a slice
    the input check refused says why instead of a decision."""
    p_key = f'p_{result["positive_class"]}'

    def p(value):
        return f'{value:>9.3f}' if value is not None else f'{"-":>9}'

    lines = [f'threshold {fmt(result["threshold"])} ({result["threshold_source"]})']
    for scan, similarity in (
        (result.get('volumes') or {}).get('registration_similarity', {}).items()
    ):
        lines.append(f'scan {scan}: registered to the template, similarity {similarity:.3f}')
    if not result.get('input_check'):
        lines.append('(this model has no input check: every image is scored, whatever it shows)')
    lines.append(f'{"scan":<40}{"slices":>7}{p_key:>9}  predicted')
    for r in result['scans'][:max_rows]:
        refused = f' ({r["n_refused"]} refused)' if r.get('n_refused') else ''
        lines.append(
            f'{str(r["scan"])[-40:]:<40}{r["n_slices"]:>7}{p(r[p_key])}  '
            f'{r["predicted"] or "no decision"}{refused}'
        )
    if len(result['scans']) > max_rows:
        lines.append(f'... {len(result["scans"]) - max_rows} more scans')
    lines.append(f'{"slice":<47}{p_key:>9}  predicted')
    for r in result['slices'][:max_rows]:
        said = r['predicted'] if r.get('input_check', 'ok') == 'ok' else r['input_check']
        lines.append(f'{str(r["path"])[-47:]:<47}{p(r[p_key])}  {said}')
    if len(result['slices']) > max_rows:
        lines.append(f'... {len(result["slices"]) - max_rows} more slices (predictions.csv)')
    return '\n'.join(lines)
