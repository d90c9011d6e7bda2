"""What a run remembers, read once: ``RUN/train_config.yaml`` and ``RUN/resumes.jsonl``.

``train_config.yaml`` is written once, when the run starts: the resolved config, the data folder
and what it holds, library versions, git commit, process count and precision. It is never
rewritten, so the provenance of the weights survives any number of resumes. Each ``--resume``
appends one line to ``resumes.jsonl`` (time, versions, commit, processes, data folder, the keys it
changed); the config a resumed run continues with is the original plus those changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig, config_to_dict, make_config
from .files import read_yaml, write_yaml

__all__ = [
    'RECORD_NAME',
    'RESUMES_NAME',
    'RESUME_OVERRIDABLE',
    'RunRecordError',
    'RunRecord',
    'library_versions',
    'git_commit',
]

RECORD_NAME = 'train_config.yaml'
RESUMES_NAME = 'resumes.jsonl'
DEFAULT_DATA_NOTE = 'ADNI AD_NC'
# keys that may change when a run is continued. All but epochs leave what is learned as it was; a
# new epochs re-stretches the schedule (e.g. the cosine) over the new length from the current update
# on; refit adds the refit after a cross-validation that ran without it.
RESUME_OVERRIDABLE = ('epochs', 'num_workers', 'log_with', 'compile', 'cache', 'progress', 'refit')


class RunRecordError(ValueError):
    """A run folder that cannot be continued as asked; the message names the fix."""


@dataclass
class RunRecord:
    config: TrainConfig
    data_dir: str
    data_note: str = DEFAULT_DATA_NOTE  # 'synthetic ...' for generated data: cards and plots say so
    eval_test: bool = False
    num_processes: int | None = None
    mixed_precision: str | None = None
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
        data_note: str | None = None,
        eval_test: bool = False,
    ) -> RunRecord:
        return cls(
            config=config,
            data_dir=str(Path(data_dir).resolve()),
            data_note=data_note or DEFAULT_DATA_NOTE,
            eval_test=eval_test,
            versions=library_versions(),
            git_commit=git_commit(),
            created=_now(),
        )

    @property
    def synthetic(self) -> bool:
        return 'synthetic' in self.data_note.lower()

    def with_hardware(self, accelerator) -> RunRecord:
        return dataclasses.replace(
            self,
            num_processes=accelerator.num_processes,
            mixed_precision=accelerator.mixed_precision,
            device=str(accelerator.device),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            'config': config_to_dict(self.config),
            'data_dir': self.data_dir,
            'data': self.data_note,
            'eval_test': self.eval_test,
            'num_processes': self.num_processes,
            'mixed_precision': self.mixed_precision,
            'device': self.device,
            'versions': self.versions,
            'git_commit': self.git_commit,
            'created': self.created,
        }

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``RUN/train_config.yaml`` (new runs only: the record is never rewritten)."""
        return write_yaml(Path(run_dir) / RECORD_NAME, self.to_dict())

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunRecord:
        """The record of ``run_dir`` with every resume
        applied (the config the run continues with).
        """
        run_dir = Path(run_dir)
        path = run_dir / RECORD_NAME
        if not path.is_file():
            raise RunRecordError(
                f'{path} not found; is {run_dir} a training run folder (train.py --output-dir)?'
            )
        raw = read_yaml(path) or {}
        resumes = _read_resumes(run_dir / RESUMES_NAME)
        values = dict(raw.get('config') or {})
        data_dir = raw.get('data_dir', '')
        for entry in resumes:
            values.update({key: new for key, (_, new) in entry.get('changed', {}).items()})
            data_dir = entry.get('data_dir') or data_dir
        return cls(
            config=make_config(values, source=str(path)),
            data_dir=data_dir,
            data_note=raw.get('data') or DEFAULT_DATA_NOTE,
            eval_test=bool(raw.get('eval_test')),
            num_processes=raw.get('num_processes'),
            mixed_precision=raw.get('mixed_precision'),
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
        """This record continued with ``overrides`` (only
        RESUME_OVERRIDABLE keys) and maybe moved data.
        """
        overrides = overrides or {}
        refused = sorted(k for k in overrides if k not in RESUME_OVERRIDABLE)
        if refused:
            raise RunRecordError(
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
        """--batch-size is per process: resuming on
        another process count would change the recipe.
        """
        if self.num_processes is not None and self.num_processes != num_processes:
            raise RunRecordError(
                f'--resume: the run was trained with {self.num_processes} process(es), this launch '
                f'has {num_processes}; resume with the same number of GPUs / processes'
            )

    def append_resume(
        self, run_dir: str | os.PathLike, accelerator, after_epoch: int | None
    ) -> dict[str, Any]:
        """Add this resume to ``RUN/resumes.jsonl``: when, with what, and which keys changed."""
        before = config_to_dict((self.resumed_from or self).config)
        after = config_to_dict(self.config)
        entry = {
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
        with (Path(run_dir) / RESUMES_NAME).open('a', encoding='utf-8') as f:
            f.write(json.dumps(entry) + '\n')
        return entry


def _read_resumes(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding='utf-8').splitlines() if line.strip()
    ]


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
    """The commit of the adni-timm checkout in use; None
    for an installed copy (even inside another repo).
    """
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
