"""Publishing a run to the Hugging Face Hub: the folder that goes up, its model card, the upload.

The only module that talks to the Hub. The export format itself (weights + timm config.json,
written and read) lives in ``adni_timm.export.format``. Publishing assembles a separate folder
from a training run: an allowlist of files (weights, config, card, plots) and nothing else, checks
that the evaluation in the card belongs to these weights, then ``HfApi.create_repo`` +
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

from ..export import format as export
from .complexity import measure_export_config
from ..export.format import (
    CONFIG_NAME,
    EXTRA_KEY,
    WEIGHTS_NAME,
    read_export_config,
    trained_in_chans,
)
from ..utils.files import read_json, read_yaml
from ..export.input_check import INPUT_CHECK_FILES
from ..export.input_description import EXAMPLE_NAME, InputDescription, write_example_image
from .card import ACK_PLACEHOLDER, build_model_card
from ..models import MEAN, STD
from ..export.onnx import ONNX_NAME
from ..run import EvalCheck, EvalFolder, Run, check_eval_belongs, locate
from ..utils.legacy import upgrade

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
    'publishable_config',
    'build_export_folder',
    'count_parameters',
    'check_repo_id',
    'resolve_token',
    'push_to_hub',
]

_logger = logging.getLogger(__name__)

CARD_NAME = 'README.md'
# the run's and its evaluation's figures, published under the same names
PLOT_NAMES = (
    Run.CURVES,
    EvalFolder.CONFUSION,
    EvalFolder.ROC,
    EvalFolder.RELIABILITY,
    EvalFolder.POPULATION_MAPS,
)
# The only files that ever go to the Hub: never a data image, a checkpoint pickle or a token.
# EXAMPLE_NAME is a SYNTHETIC slice drawn for the card and the widget, never a training image;
# model.onnx and the input check are optional (push_to_hub.py --onnx; a run that fitted the check).
UPLOAD_ALLOWLIST = (
    WEIGHTS_NAME,
    CONFIG_NAME,
    CARD_NAME,
    EXAMPLE_NAME,
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
    cfg = config.get('pretrained_cfg', {})
    trained = trained_in_chans(config)
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
    onnx: bool = False,
) -> list[Path]:
    """Assemble the folder to publish from a training run; returns the files written (sorted).

    ``onnx`` adds ``model.onnx`` (dynamic batch, the export's 3-channel input: onnxruntime runs it
    without torch); the input check fitted on these weights goes along when the run has one.

    Only ``UPLOAD_ALLOWLIST`` is ever written: the best (or refit) weights in the current export
    format, a checked ``config.json``, the model card ``README.md``, the plots that exist
    (``RUN/curves.png``; the evaluation's figures beside its ``metrics.json``) and ``example.png``,
    a SYNTHETIC slice for the card and the Hub widget (never a data image). The evaluation must
    belong to these weights at their stored operating point (``run.check_eval_belongs``; its
    scans must share none with the folds nor, for a cross-validation run, the refit's split);
    ``force_eval`` publishes it anyway and the card says it is unverified. ``out_dir`` must be new,
    empty or an earlier export folder: a folder holding anything else is refused rather than
    cleaned. ``repo_id`` is used in the card's code examples; ``acknowledgement`` replaces the
    card's ADNI acknowledgement placeholder.
    """
    best, run = locate(run_dir)
    run = run or Run(run_dir)
    publishable_config(read_export_config(best), source=str(best / CONFIG_NAME))
    metrics = _read_eval_metrics(eval_metrics_path)
    eval_facts = None
    folder = EvalFolder(Path(eval_metrics_path).parent) if eval_metrics_path is not None else None
    if metrics is not None:
        eval_facts = _with_refit_scans(check_eval_belongs(metrics, folder, best, run), folder, run)
        if eval_facts.problems and not force_eval:
            raise HubError(
                f'{eval_metrics_path} does not belong to the weights being published: '
                f'{"; ".join(eval_facts.problems)}. Evaluate these weights at their stored '
                f'operating point (python evaluate.py --model {run.path} --data-dir AD_NC), or '
                f'pass --force-eval to publish it marked unverified (see docs/HUB.md).'
            )
    plot_sources = {Run.CURVES: run.curves_file}
    if folder is not None:
        plot_sources.update(
            {name: folder.figure(name) for name in PLOT_NAMES if name != Run.CURVES}
        )
        plot_sources[EvalFolder.POPULATION_MAPS] = folder.population_maps  # an average, no scan
    plots = {name: src for name, src in plot_sources.items() if src.is_file()}

    out_dir = _prepare_out_dir(Path(out_dir))
    config = export.copy_export(best, out_dir)  # converts an older format to the current one
    for name, src in plots.items():
        shutil.copyfile(src, out_dir / name)
    _copy_input_check(best, out_dir)
    if onnx:  # model.onnx of exactly the published weights (it records their fingerprint)
        from ..export.onnx import export_onnx

        export_onnx(out_dir)
    write_example_image(out_dir, _example_size(config))
    card = build_model_card(
        repo_id=repo_id or 'ORG/NAME',
        config=config,
        num_params=count_parameters(out_dir / WEIGHTS_NAME),
        stats=measure_export_config(config),
        train_config=read_yaml(run.record_file) if run.record_file.is_file() else None,
        split=run.read_split() if run.split_file.is_file() else None,
        folds=run.read_folds() if run.folds_file.is_file() else None,
        refit_split=run.refit.read_split() if run.refit.split_file.is_file() else None,
        metrics=metrics,
        eval_facts=eval_facts,
        cv=run.read_cv() if run.cv_file.is_file() else None,
        plots=sorted(plots),
        example=EXAMPLE_NAME,
        acknowledgement=acknowledgement,
    )
    card.save(out_dir / CARD_NAME)
    return sorted(p for p in out_dir.iterdir() if p.name in UPLOAD_ALLOWLIST)


def _copy_input_check(export_dir: Path, out_dir: Path) -> None:
    """The input check beside the published weights, when it was fitted on these very weights
    (an export converted from an older format has new weights: its check would be refused)."""
    from ..utils.files import sha256_file
    from ..export.input_check import CHECK_NAME, INPUT_CHECK_FILES

    if not (export_dir / CHECK_NAME).is_file():
        return
    recorded = read_json(export_dir / CHECK_NAME).get('weights_sha256')
    if recorded != sha256_file(out_dir / WEIGHTS_NAME):
        _logger.warning(
            'the input check of %s was fitted on other weights than the ones published (an older '
            'export format was converted): it is left out; refit it by training again',
            export_dir,
        )
        return
    for name in INPUT_CHECK_FILES:
        shutil.copyfile(export_dir / name, out_dir / name)


def _with_refit_scans(facts: EvalCheck, folder: EvalFolder | None, run: Run) -> EvalCheck:
    """A cross-validation run's refit trains on ``refit/split.json``'s scans: the evaluated
    scans must share none with them either (``Run.seen_scans`` covers the folds)."""
    if facts.disjoint is not True or folder is None or not run.refit.split_file.is_file():
        return facts
    split = run.refit.read_split()
    refit = set(split.get('train', [])) | set(split.get('val', []))
    evaluated = folder.evaluated_scans() or set()
    return dataclasses.replace(facts, disjoint=not (evaluated & refit))


def _example_size(config: dict[str, Any]) -> tuple[int, int] | None:
    """The example at the training slices' size when it was recorded, else the generator's."""
    recorded = config.get(EXTRA_KEY, {}).get('input')
    return InputDescription.from_dict(recorded).image_size if isinstance(recorded, dict) else None


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
    metrics = upgrade(read_json(path))
    if not isinstance(metrics, dict) or not any(
        isinstance(metrics.get(k), dict) for k in ('slice', 'scan')
    ):
        raise HubError(
            f'--eval {path} is not an evaluate.py metrics.json (no "slice" or "scan" section)'
        )
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
    onnx: bool = False,
) -> PushResult:
    """Build the export folder of ``run_dir`` and upload it to ``repo_id`` (model repo).

    ``eval_metrics_path`` defaults to ``RUN/eval/metrics.json`` when it exists (what
    ``train.py --eval-test`` and ``evaluate.py --model RUN`` write); ``output_dir`` to
    ``RUN/hub``. The folder is kept after the push (and after a failure) for inspection.
    With ``dry_run`` nothing touches the network. The token is passed to ``HfApi`` only:
    never logged, never written (the export is checked not to contain it).
    """
    check_repo_id(repo_id)
    run = Run(run_dir)
    if eval_metrics_path is None:
        published = run.published_eval()
        eval_metrics_path = published.metrics_file if published is not None else None
    if eval_metrics_path is None:
        _logger.warning(
            'no evaluation metrics (RUN/eval/metrics.json missing, no --eval): '
            'the model card will have no test results'
        )
    export_dir = Path(output_dir) if output_dir is not None else run.hub_dir
    files = build_export_folder(
        run.path,
        export_dir,
        eval_metrics_path,
        repo_id=repo_id,
        acknowledgement=acknowledgement,
        force_eval=force_eval,
        onnx=onnx,
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
    from .. import __version__

    return __version__
