"""Publishing a run to the Hugging Face Hub: the folder that goes up, its model card, the upload.

The only module that talks to the Hub. The export format itself (weights + timm config.json,
written and read) lives in ``adni_timm.export``. Publishing assembles a separate folder from a
training run: an allowlist of files (weights, config, card, plots) and nothing else, checks that
the evaluation in the card belongs to these weights, then ``HfApi.create_repo`` +
``HfApi.upload_folder``. The published repo loads with ``timm.create_model('hf-hub:ORG/NAME',
pretrained=True)`` and with transformers' image-classification pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open

from . import data, export
from .export import CONFIG_NAME, EXTRA_KEY, WEIGHTS_NAME, find_best_export, read_export_config
from .files import read_json, read_yaml, sha256_file
from .input_check import INPUT_CHECK_FILES
from .model_card import ACK_PLACEHOLDER, build_model_card
from .models import MEAN, STD
from .onnx_export import ONNX_NAME

try:  # huggingface_hub >= 1.0 talks httpx; older versions raise requests errors, which are OSErrors
    from huggingface_hub.errors import HTTPError as _TransportError
except ImportError:  # pragma: no cover
    _TransportError = OSError

__all__ = [
    'CARD_NAME',
    'PLOT_NAMES',
    'UPLOAD_ALLOWLIST',
    'HubError',
    'UploadError',
    'PushResult',
    'default_eval_metrics',
    'publishable_config',
    'check_eval_belongs',
    'build_export_folder',
    'count_parameters',
    'check_repo_id',
    'resolve_token',
    'push_to_hub',
]

_logger = logging.getLogger(__name__)

CARD_NAME = 'README.md'
PLOT_NAMES = (
    'curves.png',
    'confusion_matrix.png',
    'roc.png',
    'reliability.png',
    'population_maps.png',
)
# The only files that ever go to the Hub: never a data image, a checkpoint pickle or a token.
# model.onnx and the input check are optional (push_to_hub.py --onnx; a run that fitted the check).
UPLOAD_ALLOWLIST = (
    WEIGHTS_NAME,
    CONFIG_NAME,
    CARD_NAME,
    *PLOT_NAMES,
    ONNX_NAME,
    *INPUT_CHECK_FILES,
)


class HubError(ValueError):
    """Bad input for an export or push; the message names the problem and the fix."""


class UploadError(HubError):
    """The Hub refused the upload or could not be reached; the local export folder is kept."""

    def __init__(self, message: str, export_dir: Path):
        super().__init__(
            f'{message}. The export folder is kept at {export_dir}; fix the problem and run again.'
        )
        self.export_dir = export_dir


def publishable_config(config: dict[str, Any], source: str = CONFIG_NAME) -> dict[str, Any]:
    """``config`` when it describes this project's preprocessing, else ``HubError``.

    Refused: weights trained on something else than 1-channel input normalised with mean = std = 0.5
    (e.g. a run of a stock timm model that kept ImageNet statistics), or without class names.
    """
    cfg, extra = config.get('pretrained_cfg', {}), config.get(EXTRA_KEY, {})
    trained = extra.get('trained_in_chans', cfg.get('input_size', [3])[0])
    problems = []
    if trained != 1:
        problems.append(
            f'trained on {trained}-channel input, input_size={cfg.get("input_size")} '
            f'(expected 1 grayscale channel)'
        )
    for key, want in (('mean', MEAN[0]), ('std', STD[0])):
        got = cfg.get(key)
        if not got or not all(math.isclose(g, want) for g in got):
            problems.append(f'{key}={got} (expected {want} per channel)')
    if not config.get('label_names', cfg.get('label_names')):
        problems.append(f'num_classes={config.get("num_classes")} does not match the class list')
    if problems:
        raise HubError(
            f"{source} does not describe this project's preprocessing: {'; '.join(problems)}. "
            f'Publish a run of an adni_convnext_* model (1 channel, mean = std = 0.5).'
        )
    return config


def default_eval_metrics(run_dir: str | os.PathLike) -> Path | None:
    """The evaluation of what a run publishes: ``RUN/eval-final/metrics.json`` for a refit
    (``RUN/final``), else ``RUN/eval/metrics.json``; None when it was not evaluated."""
    run_dir = Path(run_dir)
    path = run_dir / ('eval-final' if (run_dir / 'final').is_dir() else 'eval') / 'metrics.json'
    return path if path.is_file() else None


def check_eval_belongs(metrics: dict[str, Any], export_dir: Path, run_dir: Path) -> dict[str, Any]:
    """What a card may say about ``metrics``: do they
    belong to these weights, and is their split unseen?

    Returns ``{'problems': [...], 'disjoint': bool | None}``. A problem is a mismatch of the weights
    (fingerprint), epoch, threshold or split between the evaluation and the export; ``disjoint`` is
    True only when the evaluated patients are known to share none with training and validation.
    """
    extra = read_export_config(export_dir).get(EXTRA_KEY, {})
    problems = []
    evaluated = metrics.get('weights_sha256')
    if evaluated is None:
        problems.append('it records no weights fingerprint (made by an older evaluate.py)')
    elif evaluated != sha256_file(export_dir / WEIGHTS_NAME):
        problems.append(f'it evaluated other weights than {export_dir / WEIGHTS_NAME}')
    if (
        metrics.get('epoch') is not None
        and extra.get('epoch') is not None
        and metrics['epoch'] != extra['epoch']
    ):
        problems.append(
            f'it evaluated epoch {metrics["epoch"]}, the export holds epoch {extra["epoch"]}'
        )
    stored = extra.get('threshold')
    if (
        metrics.get('threshold_source') == extra.get('threshold_source')
        and 'threshold_selection' not in metrics
        and stored is not None
        and not math.isclose(metrics.get('threshold', -1), stored, abs_tol=1e-9)
    ):
        problems.append(f'its threshold {metrics.get("threshold")} is not the stored {stored}')
    if metrics.get('split') != 'test':
        problems.append(
            f'it evaluated the {metrics.get("split")!r} split, not the held-out test split'
        )
    return {'problems': problems, 'disjoint': _disjoint_from_training(metrics, run_dir)}


def _disjoint_from_training(metrics: dict[str, Any], run_dir: Path) -> bool | None:
    """Whether the evaluated patients (patients.csv
    beside metrics.json) are absent from RUN/split.json.
    """
    source = metrics.get('_path')
    patients_csv = Path(source).parent / 'patients.csv' if source else None
    split_file = run_dir / 'split.json'
    if patients_csv is None or not patients_csv.is_file() or not split_file.is_file():
        return None
    split = read_json(split_file)
    trained = set(split.get('train', [])) | set(split.get('val', []))
    if split.get('level') == 'slice':  # slice keys: their patient is in the file name
        trained = {(data.parse_file_name(Path(key)) or (key,))[0] for key in trained}
    import csv

    with patients_csv.open(encoding='utf-8') as f:
        evaluated = {row['patient'] for row in csv.DictReader(f)}
    return not (evaluated & trained)


# --------------------------------------------------------------------------------------------------
# export folder for the Hub


def build_export_folder(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    eval_metrics_path: str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    acknowledgement: str | None = None,
    force_eval: bool = False,
) -> list[Path]:
    """Assemble the folder to publish from a training run; returns the files written (sorted).

    Only ``UPLOAD_ALLOWLIST`` is ever written: the best (or refit) weights in the current export
    format, a checked ``config.json``, the model card ``README.md`` and the plots that exist
    (``RUN/curves.png``; the evaluation's figures beside its ``metrics.json``). The evaluation must
    belong to these weights (``check_eval_belongs``); ``force_eval`` publishes it anyway and the
    card says it is unverified. ``out_dir`` must be new, empty or an earlier export folder: a folder
    holding anything else is refused rather than cleaned. ``repo_id`` is used in the card's code
    examples; ``acknowledgement`` replaces the card's ADNI acknowledgement placeholder.
    """
    run_dir = Path(run_dir)
    best = find_best_export(run_dir)
    publishable_config(read_export_config(best), source=str(best / CONFIG_NAME))
    metrics = _read_eval_metrics(eval_metrics_path)
    eval_facts = None
    if metrics is not None:
        eval_facts = check_eval_belongs(metrics, best, run_dir)
        if eval_facts['problems'] and not force_eval:
            raise HubError(
                f'{eval_metrics_path} does not belong to the weights being published: '
                f'{"; ".join(eval_facts["problems"])}. Evaluate these weights (python evaluate.py '
                f'--model {run_dir} --data-dir AD_NC), or pass --force-eval to publish it marked '
                f'unverified (see docs/HUB.md).'
            )
    plot_sources = {'curves.png': run_dir / 'curves.png'}
    if eval_metrics_path is not None:
        eval_dir = Path(eval_metrics_path).parent
        plot_sources.update({name: eval_dir / name for name in PLOT_NAMES if name != 'curves.png'})
        # an average, no patient
        plot_sources['population_maps.png'] = eval_dir / 'cam' / 'population_maps.png'
    plots = {name: src for name, src in plot_sources.items() if src.is_file()}

    out_dir = _prepare_out_dir(Path(out_dir))
    config = export.copy_export(best, out_dir)  # converts an older format to the current one
    for name, src in plots.items():
        shutil.copyfile(src, out_dir / name)
    card = build_model_card(
        repo_id=repo_id or 'ORG/NAME',
        config=config,
        num_params=count_parameters(out_dir / WEIGHTS_NAME),
        train_config=read_yaml(run_dir / 'train_config.yaml')
        if (run_dir / 'train_config.yaml').is_file()
        else None,
        split=read_json(run_dir / 'split.json') if (run_dir / 'split.json').is_file() else None,
        metrics=metrics,
        eval_facts=eval_facts,
        cv=read_json(run_dir / 'cv.json') if (run_dir / 'cv.json').is_file() else None,
        plots=sorted(plots),
        acknowledgement=acknowledgement,
    )
    card.save(out_dir / CARD_NAME)
    return sorted(p for p in out_dir.iterdir() if p.name in UPLOAD_ALLOWLIST)


def count_parameters(weights_file: str | os.PathLike) -> int:
    """Number of parameters in a safetensors file, read from its header (no tensors loaded)."""
    with safe_open(str(weights_file), framework='pt') as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def _prepare_out_dir(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise HubError(f'--output-dir {out_dir} is a file; give a new or empty folder')
    out_dir.mkdir(parents=True, exist_ok=True)
    strangers = sorted(p.name for p in out_dir.iterdir() if p.name not in UPLOAD_ALLOWLIST)
    if strangers:
        raise HubError(
            f'--output-dir {out_dir} holds files that are not part of '
            f'an export ({", ".join(strangers[:5])}); give a new or '
            f'empty folder so nothing else can be uploaded by mistake'
        )
    for stale in out_dir.iterdir():  # an earlier export: its plots may no longer apply
        stale.unlink()
    return out_dir


def _read_eval_metrics(path: str | os.PathLike | None) -> dict[str, Any] | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise HubError(
            f'--eval {path} does not exist; run evaluate.py '
            f'--output-dir OUT and pass OUT/metrics.json'
        )
    metrics = read_json(path)
    if not isinstance(metrics, dict) or not any(
        isinstance(metrics.get(k), dict) for k in ('slice', 'patient')
    ):
        raise HubError(
            f'--eval {path} is not an evaluate.py metrics.json (no "slice" or "patient" section)'
        )
    metrics['_path'] = str(path)  # where its patients.csv lies; never written into the card
    return metrics


# --------------------------------------------------------------------------------------------------
# push


@dataclasses.dataclass
class PushResult:
    """What a push sent (or, with ``dry_run``, would send)."""

    repo_id: str
    export_dir: Path
    files: list[Path]
    dry_run: bool
    commit_url: str | None = None
    pr_url: str | None = None


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it is a valid ``ORG/NAME`` Hub model id, else ``HubError``."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(
            f'--repo-id {repo_id!r} is not a valid Hub repo id: {e} Use ORG/NAME, '
            f'e.g. my-lab/adni-convnext-tiny'
        ) from None
    if repo_id.count('/') != 1:
        raise HubError(
            f'--repo-id {repo_id!r} needs an owner: use ORG/NAME (your user name or an '
            f'organisation), e.g. my-lab/adni-convnext-tiny'
        )
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else
    ``HF_TOKEN`` or the saved login; ``HubError`` if none.
    """
    token = token or get_token()
    if not token:
        raise HubError(
            'not logged in to the Hugging Face Hub: run `hf auth login`, or set HF_TOKEN, '
            'or pass --token (a token with write access)'
        )
    return token


def push_to_hub(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    eval_metrics_path: str | os.PathLike | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    acknowledgement: str | None = None,
    force_eval: bool = False,
) -> PushResult:
    """Build the export folder of ``run_dir`` and upload it to ``repo_id`` (model repo).

    ``eval_metrics_path`` defaults to ``RUN/eval/metrics.json`` when it exists (what
    ``train.py --eval-test`` and ``evaluate.py --model RUN`` write); ``output_dir`` to
    ``RUN/hub``. The folder is kept after the push (and after a failure) for inspection.
    With ``dry_run`` nothing touches the network. The token is passed to ``HfApi`` only:
    never logged, never written (the export is checked not to contain it).
    """
    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    if eval_metrics_path is None:
        eval_metrics_path = default_eval_metrics(run_dir)
    if eval_metrics_path is None:
        _logger.warning(
            'no evaluation metrics (RUN/eval/metrics.json missing, no --eval): '
            'the model card will have no test results'
        )
    export_dir = Path(output_dir) if output_dir is not None else run_dir / 'hub'
    files = build_export_folder(
        run_dir,
        export_dir,
        eval_metrics_path,
        repo_id=repo_id,
        acknowledgement=acknowledgement,
        force_eval=force_eval,
    )
    if ACK_PLACEHOLDER in (export_dir / CARD_NAME).read_text(encoding='utf-8'):
        _logger.warning(
            '%s still has the ADNI acknowledgement placeholder: pass --acknowledgement FILE '
            'or edit the card on the Hub before making the repo public',
            CARD_NAME,
        )
    result = PushResult(repo_id=repo_id, export_dir=export_dir, files=files, dry_run=dry_run)
    if dry_run:
        return result

    token = resolve_token(token)
    _refuse_secret_in_export(files, token, export_dir)
    extra = read_json(export_dir / CONFIG_NAME).get(EXTRA_KEY, {})
    commit_message = commit_message or _default_commit_message(extra)
    api = HfApi(token=token, library_name='adni-timm', library_version=_package_version())
    try:
        api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
        if private and not api.repo_info(repo_id, repo_type='model').private:
            raise HubError(
                f'{repo_id} already exists and is public, but --private was asked: nothing '
                f'uploaded. Make it private on the Hub first, or choose another --repo-id'
            )
        if revision and not create_pr:
            api.create_branch(repo_id, branch=revision, repo_type='model', exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type='model',
            folder_path=export_dir,
            # the allowlist again: nothing else in the folder goes up
            allow_patterns=[p.name for p in files],
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )
    except HfHubHTTPError as e:
        raise UploadError(_describe_http_error(e, repo_id), export_dir) from None
    except (_TransportError, OSError) as e:
        raise UploadError(
            f'could not reach the Hugging Face Hub ({type(e).__name__}: {e})', export_dir
        ) from None
    result.commit_url = getattr(commit, 'commit_url', None)
    result.pr_url = getattr(commit, 'pr_url', None)
    return result


def _describe_http_error(error: HfHubHTTPError, repo_id: str) -> str:
    status = getattr(getattr(error, 'response', None), 'status_code', None)
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    if status in (401, 403):
        return (
            f'the Hub refused the token (HTTP {status}) for {repo_id}: it '
            f'may be invalid, read-only or lack access to the organisation. '
            f'Run `hf auth login` with a write token, or set HF_TOKEN'
        )
    return f'upload to {repo_id} failed (HTTP {status or "error"}): {first_line}'


def _refuse_secret_in_export(files: list[Path], token: str, export_dir: Path) -> None:
    for path in files:
        if path.suffix in ('.json', '.md') and token in path.read_text(
            encoding='utf-8', errors='ignore'
        ):
            raise UploadError(
                f'{path.name} contains your Hub token; nothing uploaded. Remove the token from the '
                f'training config and export again',
                export_dir,
            )


def _default_commit_message(extra: dict[str, Any]) -> str:
    what = extra.get('model_name', 'model')
    details = [
        f'{extra["weights"]} weights' if extra.get('weights') else None,
        f'epoch {extra["epoch"]}' if extra.get('epoch') is not None else None,
    ]
    details = ', '.join(d for d in details if d)
    return f'Upload {what}{f" ({details})" if details else ""} with adni-timm'


def _package_version() -> str:
    from . import __version__

    return __version__
