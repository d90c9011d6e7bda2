"""The run folder: its layout, what it remembers, and what may be said about its evaluations.

This is the only module that names the files of a run folder (README, "The run folder")::

    RUN/train_config.yaml   the RunRecord: config, data, versions; written once, never rewritten
    RUN/resumes.jsonl       one line per --resume
    RUN/split.json          who is in train / val (/ test): resume and evaluation read it
    RUN/metrics.jsonl       one row per epoch;  RUN/curves.png
    RUN/best/               the export of the kept epoch;  RUN/checkpoints/  for --resume
    RUN/eval/               the published model on test at its stored operating point
    RUN/eval-<tag>/         any other evaluation (another split, threshold, TTA, precision)

A cross-validation run adds ``folds.json``, ``fold{k}/`` (ordinary runs), ``cv.json``,
``oof_predictions.csv``, ``refit/`` (an ordinary run) and ``final/`` (its export with the
out-of-fold operating point), ``eval/`` (the fold ensemble) and ``eval-final/`` (the refit).

``RunRecord`` is what a run remembers (``train_config.yaml`` + ``resumes.jsonl``), read once.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import TrainConfig, config_to_dict, make_config
from .data.note import DataNote
from .export.format import WEIGHTS_NAME, is_export, read_export_settings
from .utils.distributed import raise_agreed, run_on_main
from .utils.files import read_json, read_yaml, sha256_file, write_json, write_yaml
from .utils.legacy import scan_column, upgrade

__all__ = [
    'RESUME_OVERRIDABLE',
    'RunError',
    'DataNote',
    'RunRecord',
    'Run',
    'EvalFolder',
    'EvalCheck',
    'OldRunAside',
    'library_versions',
    'git_commit',
]

_logger = logging.getLogger(__name__)

# keys that may change when a run is continued. All but epochs leave what is learned as it was; a
# new epochs re-stretches the schedule (e.g. the cosine) over the new length from the current update
# on; refit adds the refit after a cross-validation that ran without it.
RESUME_OVERRIDABLE = (
    'epochs',
    'num_workers',
    'data_on_device',
    'log_with',
    'compile',
    'cache',
    'progress',
    'refit',
)


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message names the fix."""


# ------------------------------------------------------------------------------------ the record


@dataclass
class RunRecord:
    config: TrainConfig
    data_dir: str
    data: DataNote = field(default_factory=DataNote)
    eval_test: bool = False
    num_processes: int | None = None
    mixed_precision: str | None = None
    # where the precision came from: --mixed-precision, ACCELERATE_MIXED_PRECISION, accelerate
    # config FILE, or the auto rule (train.precision.resolve_precision)
    mixed_precision_source: str | None = None
    device: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    created: str | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)
    # what --resume changed
    resumed_from: RunRecord | None = field(default=None, repr=False, compare=False)

    @classmethod
    def new(
        cls,
        config: TrainConfig,
        data_dir: str | os.PathLike,
        data: DataNote | None = None,
        eval_test: bool = False,
    ) -> RunRecord:
        return cls(
            config=config,
            data_dir=str(Path(data_dir).resolve()),
            data=data or DataNote(),
            eval_test=eval_test,
            versions=library_versions(),
            git_commit=git_commit(),
            created=_now(),
        )

    @property
    def synthetic(self) -> bool:
        return self.data.synthetic

    def with_hardware(self, accelerator, precision_source: str | None = None) -> RunRecord:
        return dataclasses.replace(
            self,
            num_processes=accelerator.num_processes,
            mixed_precision=accelerator.mixed_precision,
            mixed_precision_source=precision_source,
            device=str(accelerator.device),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            'config': config_to_dict(self.config),
            'data_dir': self.data_dir,
            'data': self.data.note,
            'synthetic': self.data.synthetic,
            'preprocessing': self.data.preprocessing,
            'eval_test': self.eval_test,
            'num_processes': self.num_processes,
            'mixed_precision': self.mixed_precision,
            'mixed_precision_source': self.mixed_precision_source,
            'device': self.device,
            'versions': self.versions,
            'git_commit': self.git_commit,
            'created': self.created,
        }

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunRecord:
        """The record of ``run_dir`` with every resume applied (the config it continues with)."""
        run = Run(run_dir)
        if not run.record_file.is_file():
            raise RunError(
                f'{run.record_file} not found; is {run.path} a training run folder '
                f'(adni-train --output-dir)?'
            )
        try:
            raw = read_yaml(run.record_file) or {}
        except yaml.YAMLError as e:
            raise RunError(
                f'{run.record_file} is damaged ({" ".join(str(e).split())}); it is written once '
                f'when a run starts: restore it from a copy, or start a new run'
            ) from None
        resumes = (
            [
                json.loads(line)
                for line in (run.resumes_file.read_text(encoding='utf-8').splitlines())
                if line.strip()
            ]
            if run.resumes_file.is_file()
            else []
        )
        values = dict(raw.get('config') or {})
        data_dir = raw.get('data_dir', '')
        for entry in resumes:
            values.update({key: new for key, (_, new) in entry.get('changed', {}).items()})
            data_dir = entry.get('data_dir') or data_dir
        note = raw.get('data') or DataNote.note
        # records written before the boolean existed said "synthetic" in the note
        synthetic = raw.get('synthetic', 'synthetic' in note.lower())
        return cls(
            config=make_config(values, source=str(run.record_file)),
            data_dir=data_dir,
            data=DataNote(note, bool(synthetic), raw.get('preprocessing')),
            eval_test=bool(raw.get('eval_test')),
            num_processes=raw.get('num_processes'),
            mixed_precision=raw.get('mixed_precision'),
            mixed_precision_source=raw.get('mixed_precision_source'),
            device=raw.get('device'),
            versions=raw.get('versions') or {},
            git_commit=raw.get('git_commit'),
            created=raw.get('created'),
            resumes=resumes,
        )

    def resumed(
        self,
        overrides: dict[str, Any] | None = None,
        data_dir: str | os.PathLike | None = None,
        eval_test: bool = False,
    ) -> RunRecord:
        """This record continued with ``overrides`` (RESUME_OVERRIDABLE keys only), maybe moved."""
        overrides = overrides or {}
        refused = sorted(k for k in overrides if k not in RESUME_OVERRIDABLE)
        if refused:
            raise RunError(
                f'--resume continues the recorded recipe; {refused} cannot change (only '
                f'{list(RESUME_OVERRIDABLE)} can). Start a new run to change them.'
            )
        config = make_config(
            {**config_to_dict(self.config), **overrides}, source='--resume overrides'
        )
        return dataclasses.replace(
            self,
            config=config,
            eval_test=self.eval_test or eval_test,
            data_dir=str(Path(data_dir).resolve()) if data_dir else self.data_dir,
            resumed_from=self,
        )

    def check_processes(self, num_processes: int) -> None:
        """--batch-size is per process: another process count would change the recipe."""
        if self.num_processes is not None and self.num_processes != num_processes:
            raise RunError(
                f'--resume: the run was trained with {self.num_processes} process(es), this launch '
                f'has {num_processes}; resume with the same number of GPUs / processes'
            )

    def resume_entry(self, accelerator, after_epoch: int | None) -> dict[str, Any]:
        """One line of ``resumes.jsonl``: when, with what, and which keys changed."""
        before = config_to_dict((self.resumed_from or self).config)
        after = config_to_dict(self.config)
        return {
            'time': _now(),
            'after_epoch': after_epoch,
            'versions': library_versions(),
            'git_commit': git_commit(),
            'num_processes': accelerator.num_processes,
            'mixed_precision': accelerator.mixed_precision,
            'device': str(accelerator.device),
            'data_dir': self.data_dir,
            'changed': {k: [before[k], after[k]] for k in after if before.get(k) != after[k]},
        }


def _now() -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%S%z')


def library_versions() -> dict[str, str]:
    import accelerate
    import huggingface_hub
    import sklearn
    import timm
    import torch

    from . import __version__

    return {
        'adni_timm': __version__,
        'python': platform.python_version(),
        'torch': str(torch.__version__),
        'timm': timm.__version__,
        'accelerate': accelerate.__version__,
        'huggingface_hub': huggingface_hub.__version__,
        'scikit-learn': sklearn.__version__,
    }


def git_commit() -> str | None:
    """The commit of the adni-timm checkout in use; None for an installed copy."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ['git', *args], capture_output=True, text=True, timeout=5, cwd=here
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    top = git('rev-parse', '--show-toplevel')
    if top is None or Path(top).resolve() / 'adni_timm' != here:
        return None
    return git('rev-parse', 'HEAD')


# ------------------------------------------------------------------------------- the folder


class EvalFolder:
    """One evaluation's folder (``RUN/eval``, ``RUN/eval-<tag>`` or any ``--output-dir``)."""

    METRICS = 'metrics.json'
    PREDICTIONS = 'predictions.csv'
    SCANS = 'scans.csv'
    OLD_SCANS = 'patients.csv'  # its name before a scan was called a scan
    CONFUSION = 'confusion_matrix.png'  # scans
    CONFUSION_SLICES = 'confusion_matrix_slices.png'
    ROC = 'roc.png'
    RELIABILITY = 'reliability.png'
    SCAN_PROBABILITIES = 'scan_probabilities.png'  # P(AD) per scan by true class, the threshold
    CAM = 'cam'
    POPULATION_MAPS = 'population_maps.png'
    POPULATION_ARRAYS = 'population_maps.npz'

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    metrics_file = property(lambda self: self.path / self.METRICS)
    predictions_file = property(lambda self: self.path / self.PREDICTIONS)
    scans_file = property(lambda self: self.path / self.SCANS)
    cam_dir = property(lambda self: self.path / self.CAM)
    population_maps = property(lambda self: self.path / self.CAM / self.POPULATION_MAPS)

    def figure(self, name: str) -> Path:
        return self.path / name

    def evaluated_scans(self) -> set[str] | None:
        """The scan ids of ``scans.csv`` (``patients.csv`` in folders written before); None
        when it is missing."""
        path = next((p for p in (self.scans_file, self.path / self.OLD_SCANS) if p.is_file()), None)
        if path is None:
            return None
        with path.open(encoding='utf-8') as f:
            return {scan_column(row) for row in csv.DictReader(f)}


class Run:
    """A training run folder (possibly not created yet). Paths only: nothing is read on creation."""

    RECORD = 'train_config.yaml'
    RESUMES = 'resumes.jsonl'
    SPLIT = 'split.json'
    HISTORY = 'metrics.jsonl'
    CURVES = 'curves.png'
    BEST = 'best'
    CHECKPOINTS = 'checkpoints'
    LOGS = 'logs'
    FOLDS = 'folds.json'
    CV = 'cv.json'
    OOF = 'oof_predictions.csv'
    CV_FIGURE = 'cv.png'  # per-fold metrics with CIs and the pooled out-of-fold ROC
    REFIT = 'refit'
    FINAL = 'final'
    EVAL = 'eval'
    HUB = 'hub'  # push_to_hub.py's default export folder
    PREDICT = 'predict'  # evaluate.py --images

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f'Run({str(self.path)!r})'

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    # ---- files
    record_file = property(lambda self: self.path / self.RECORD)
    resumes_file = property(lambda self: self.path / self.RESUMES)
    split_file = property(lambda self: self.path / self.SPLIT)
    history_file = property(lambda self: self.path / self.HISTORY)
    curves_file = property(lambda self: self.path / self.CURVES)
    best_dir = property(lambda self: self.path / self.BEST)
    checkpoints_dir = property(lambda self: self.path / self.CHECKPOINTS)
    logs_dir = property(lambda self: self.path / self.LOGS)
    folds_file = property(lambda self: self.path / self.FOLDS)
    cv_file = property(lambda self: self.path / self.CV)
    cv_figure_file = property(lambda self: self.path / self.CV_FIGURE)
    oof_file = property(lambda self: self.path / self.OOF)
    final_dir = property(lambda self: self.path / self.FINAL)
    hub_dir = property(lambda self: self.path / self.HUB)

    def fold(self, k: int) -> Run:
        return Run(self.path / f'fold{k}')

    @property
    def refit(self) -> Run:
        return Run(self.path / self.REFIT)

    # ---- what this folder is
    @property
    def is_run(self) -> bool:
        """A training run (ordinary or cross-validation): it has a record or a split."""
        return any(p.is_file() for p in (self.record_file, self.split_file, self.folds_file))

    @property
    def is_cv(self) -> bool:
        return self.folds_file.is_file() or self.cv_file.is_file()

    def has_content(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())

    def refuse_existing(self) -> None:
        """A new run never lands in a folder that holds something (that is --resume/--overwrite)."""
        if self.has_content():
            raise RunError(
                f'{self.path} already exists and is not empty; continue it with --resume, '
                f'replace it with --overwrite, or choose another --output-dir'
            )

    @staticmethod
    def of_export(export_dir: str | os.PathLike) -> Run | None:
        """The run an export folder belongs to: ``RUN`` for ``RUN/best`` and ``RUN/final``."""
        export_dir = Path(export_dir)
        parent = Run(export_dir.parent)
        if export_dir.name in (Run.BEST, Run.FINAL) and parent.is_run:
            return parent
        return None

    def published_export_dir(self) -> Path:
        """What a run publishes: ``final/`` (a cross-validation refit), else ``best/``."""
        return self.final_dir if self.is_cv else self.best_dir

    # ---- evaluations
    def eval_dir(self, tag: str | None = None, *, final: bool = False) -> EvalFolder:
        """``eval`` (the published model's test evaluation), ``eval-<tag>`` for any other;
        ``eval-final[-<tag>]`` for a cross-validation run's refit."""
        name = self.EVAL + ('-final' if final else '') + (f'-{tag}' if tag else '')
        return EvalFolder(self.path / name)

    def published_eval(self) -> EvalFolder | None:
        """The evaluation of what this run publishes, when it exists."""
        folder = self.eval_dir(final=self.final_dir.is_dir())
        return folder if folder.metrics_file.is_file() else None

    # ---- what it remembers
    def record(self) -> RunRecord:
        return RunRecord.load(self.path)

    def save_record(self, record: RunRecord) -> Path:
        """Write ``train_config.yaml`` (new runs only: the record is never rewritten)."""
        return write_yaml(self.record_file, record.to_dict())

    def append_resume(self, entry: dict[str, Any]) -> None:
        with self.resumes_file.open('a', encoding='utf-8') as f:
            f.write(json.dumps(entry) + '\n')

    def read_split(self) -> dict[str, Any]:
        if not self.split_file.is_file():
            raise RunError(f'{self.split_file} not found: {self.path} is not a finished run folder')
        return upgrade(read_json(self.split_file))

    def write_split(self, split: dict[str, Any]) -> None:
        write_json(self.split_file, split)

    def read_folds(self) -> dict[str, Any]:
        return upgrade(read_json(self.folds_file))

    def write_folds(
        self, folds: list[list[str]], seed: int, subjects: dict[str, str] | None = None
    ) -> None:
        """``folds.json``: the scans of each fold, and each fold's subjects when known."""
        found: dict[str, Any] = {'k': len(folds), 'seed': seed, 'folds': folds}
        if subjects:
            found['subjects'] = [sorted({subjects.get(p, p) for p in fold}) for fold in folds]
        write_json(self.folds_file, found)

    def read_cv(self) -> dict[str, Any]:
        return upgrade(read_json(self.cv_file))

    def write_cv(self, result: dict[str, Any]) -> None:
        write_json(self.cv_file, result)

    def seen_scans(self) -> set[str] | None:
        """Every scan whose slices trained or selected these weights; None when unknown.

        An ordinary run: its split's train and val. A cross-validation run: every fold's scans
        (the refit trains on all of them). Slice-level splits name files: the scan is parsed.
        """
        if self.folds_file.is_file():
            return {p for fold in self.read_folds()['folds'] for p in fold}
        if not self.split_file.is_file():
            return None
        split = self.read_split()
        seen = set(split.get('train', [])) | set(split.get('val', []))
        if split.get('level') == 'slice':
            from .data import parse_file_name

            seen = {(parse_file_name(Path(key)) or (key,))[0] for key in seen}
        return seen

    def write_history(
        self,
        history: list[dict],
        best_epoch: int | None,
        best_weights,
        context=None,
        *,
        curves: bool = True,
    ) -> None:
        """``metrics.jsonl`` rewritten whole from the (checkpointed) history, and the curves
        unless ``curves`` is False (``context``: the ``plots.FigureContext`` their title names)."""
        tmp = self.path / f'.{self.HISTORY}.tmp'
        # strict JSON: a non-finite value (a diverged epoch) is null, never Infinity / NaN
        tmp.write_text(''.join(json.dumps(_finite(row), allow_nan=False) + '\n' for row in history))
        tmp.replace(self.history_file)
        if not curves:
            return
        from . import plots  # matplotlib only when a run writes its curves

        plots.plot_curves(
            history,
            self.curves_file,
            best_epoch=best_epoch,
            best_weights=best_weights,
            context=context,
        )


def _finite(row: dict) -> dict:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


# ------------------------------------------------------------ does an evaluation belong here


@dataclass
class EvalCheck:
    """What a card or the demo may say about an evaluation of an export."""

    problems: list[str] = field(default_factory=list)
    # True only when the evaluated scans are known to share none with the weights' training
    disjoint: bool | None = None


def check_eval_belongs(
    metrics: dict[str, Any], folder: EvalFolder, export_dir: Path, run: Run | None
) -> EvalCheck:
    """Whether ``metrics`` (read from ``folder``) evaluated exactly the export in ``export_dir``.

    A problem is any difference from what the export ships: other weights (fingerprint), another
    epoch, another split than test, or another operating point (threshold, temperature), TTA or
    precision than the stored ones. ``disjoint`` compares the evaluated scans with
    every scan the run trained or selected on.
    """
    settings = read_export_settings(export_dir)
    problems = []
    evaluated = metrics.get('weights_sha256')
    if evaluated is None:
        problems.append('it records no weights fingerprint (made by an older evaluate.py)')
    elif evaluated != sha256_file(export_dir / WEIGHTS_NAME):
        problems.append(f'it evaluated other weights than {export_dir}')
    if (
        metrics.get('epoch') is not None
        and settings.epoch is not None
        and metrics['epoch'] != settings.epoch
    ):
        problems.append(
            f'it evaluated epoch {metrics["epoch"]}, the export holds epoch {settings.epoch}'
        )
    if metrics.get('split') != 'test':
        problems.append(
            f'it evaluated the {metrics.get("split")!r} split, not the held-out test split'
        )
    if settings.threshold is not None and not math.isclose(
        metrics.get('threshold', -1), settings.threshold, abs_tol=1e-9
    ):
        problems.append(
            f'its threshold {metrics.get("threshold")} is not the stored {settings.threshold} '
            f'({metrics.get("threshold_source")} threshold)'
        )
    temperature = (metrics.get('calibration') or {}).get('temperature')
    if isinstance(temperature, (int, float)) and not math.isclose(
        temperature, settings.temperature, rel_tol=1e-9
    ):
        problems.append(f'its temperature {temperature} is not the stored {settings.temperature}')
    if metrics.get('tta'):
        problems.append('it used test-time augmentation, which the published model does not')
    stored = plain_precision(settings.precision)
    used = plain_precision(metrics.get('precision'))
    if stored != used:
        problems.append(f'it ran in {used} precision, the model was trained in {stored}')
    seen = run.seen_scans() if run is not None else None
    evaluated_scans = folder.evaluated_scans()
    disjoint = None
    if seen is not None and evaluated_scans is not None:
        disjoint = not (evaluated_scans & seen)
    return EvalCheck(problems=problems, disjoint=disjoint)


def plain_precision(precision) -> str:
    """A precision as people name it: 'no' (Accelerate's word) and None are fp32."""
    if precision is None or isinstance(precision, str):
        return {'no': 'fp32', None: 'fp32'}.get(precision, precision)
    return str(precision)  # an ensemble's list


# ------------------------------------------------------------------------------ --overwrite


class OldRunAside:
    """``--overwrite`` without losing work: the old run moves aside (``.RUN.replaced``) only after
    every check has passed, is deleted once the new run has its first checkpoint (``release``), and
    comes back if the new run fails before that. A kill leaves it aside: ``recover``, which every
    train command runs first, puts it back or lets it go."""

    def __init__(self, run: Run, accelerator, active: bool):
        self.run, self.accelerator = run, accelerator
        self.active = active and run.has_content()
        self.aside = self.aside_of(run)

    @staticmethod
    def aside_of(run: Run) -> Path:
        return run.path.with_name(f'.{run.path.name}.replaced')

    @classmethod
    def recover(cls, run: Run, has_checkpoint: Callable[[Path], bool]) -> str | None:
        """What a killed ``--overwrite`` left behind, settled; a sentence for the log, or None.

        The replaced run in ``.RUN.replaced`` is finished work: it goes back to ``RUN`` when the run
        replacing it never reached its first checkpoint (``has_checkpoint(RUN)`` is False; its
        partial folder is removed), and is deleted only once that run has one.
        """
        aside = cls.aside_of(run)
        if not aside.is_dir():
            return None
        if run.path.is_dir() and has_checkpoint(run.path):
            shutil.rmtree(aside)
            return (
                f'deleted {aside}, the run that --overwrite replaced: its replacement {run.path} '
                f'has a checkpoint of its own'
            )
        partial = None
        if run.path.exists():  # the replacement's first files: no checkpoint, nothing finished
            partial = run.path.with_name(f'.{run.path.name}.interrupted')
            shutil.rmtree(partial, ignore_errors=True)
            run.path.rename(partial)
        aside.rename(run.path)
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        return (
            f'restored {run.path} from {aside}: the --overwrite run that replaced it was '
            f'interrupted before its first checkpoint'
            + (' (its partial folder was removed)' if partial is not None else '')
        )

    def __enter__(self) -> OldRunAside:
        def move_aside():
            if self.aside.exists():  # recover() settled it first: a finished run is never deleted
                raise RunError(
                    f'{self.aside} holds a run replaced by an earlier --overwrite; move it away '
                    f'or delete it, then run again'
                )
            self.run.path.rename(self.aside)
            _logger.warning(
                '--overwrite: %s moved to %s; deleted once the new run has its first checkpoint',
                self.run.path,
                self.aside,
            )

        if self.active:
            raise_agreed(
                run_on_main(self.accelerator, move_aside, f'--overwrite of {self.run.path}'),
                RunError,
                '',
            )
        self.accelerator.wait_for_everyone()
        return self

    def release(self) -> None:
        if self.active and self.accelerator.is_main_process:
            shutil.rmtree(self.aside, ignore_errors=True)
        self.active = False

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.active and exc_type is not None and self.accelerator.is_main_process:
            shutil.rmtree(self.run.path, ignore_errors=True)
            self.aside.rename(self.run.path)
            _logger.warning(
                'the new run failed before its first checkpoint: %s restored', self.run.path
            )


# ------------------------------------------------------------------------- finding the export

MODEL_FORMS = (
    'a training run folder (RUN), an export folder, local-dir:DIR, hf-hub:ORG/NAME '
    'or path/model.safetensors'
)


def locate(path: str | os.PathLike) -> tuple[Path, Run | None]:
    """(export folder, its run or None) for RUN, RUN/best, RUN/final, an export folder or its
    ``model.safetensors``. A run gives what it publishes (``Run.published_export_dir``)."""
    from .export.format import ExportError

    p = Path(path).expanduser()
    if not p.exists():
        raise ExportError(f'model {str(path)!r} does not exist; pass {MODEL_FORMS}.')
    if p.is_file():
        if p.name != WEIGHTS_NAME:
            raise ExportError(
                f"{p} is not an export's weights file: timm loads {WEIGHTS_NAME} with its "
                f'config.json beside it; pass the folder, or rename the file to {WEIGHTS_NAME}.'
            )
        p = p.parent
    run = Run(p)
    if run.is_cv:
        if is_export(run.final_dir):
            return run.final_dir, run
        raise ExportError(
            f'{p} is a cross-validation run without its refit model ({run.final_dir}): add it '
            f'with adni-train --output-dir {p} --resume --refit, or pass {run.fold(0).path} for '
            f'one fold model (see docs/EVALUATION.md).'
        )
    for candidate in (run.final_dir, run.best_dir):  # a run folder, also one copied without records
        if is_export(candidate):
            return candidate, run if run.is_run else Run.of_export(candidate)
    if is_export(p):
        return p, Run.of_export(p)
    if run.is_run:
        raise ExportError(
            f'{p} has no best weights ({run.best_dir} is missing or incomplete); train first '
            f'(adni-train writes RUN/{Run.BEST} when a validation epoch finishes) or point at a '
            f'finished run'
        )
    raise ExportError(
        f'{p} is neither a training run nor a timm export folder: it has no best weights '
        f'({Run.BEST}/{WEIGHTS_NAME}) and no config.json with {WEIGHTS_NAME}; pass {MODEL_FORMS}.'
    )
