"""Export folders (safetensors + timm config.json + model card), publishing them to the Hub, loading them back.

An export folder is what ``RUN/best`` holds and what goes to the Hub. Its
``config.json`` names the *stock* timm architecture (e.g. ``convnext_tiny``)
so that plain timm loads it without this package; our own settings (decision
threshold, classes, provenance) sit under the top-level key ``adni_timm``,
which timm ignores.

Publishing (``push_to_hub``) assembles a separate folder from a training run:
an allowlist of files (weights, config, card, plots) and nothing else, then
``HfApi.create_repo`` + ``HfApi.upload_folder``. The published repo loads with
``timm.create_model('hf-hub:ORG/NAME', pretrained=True)``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
import yaml
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open
from timm.models import save_for_hf

from .model_card import ACK_PLACEHOLDER, build_model_card, is_synthetic
from .models import LABEL_NAMES, MEAN, STD, stock_architecture

try:  # huggingface_hub >= 1.0 talks httpx; older versions raise requests errors, which are OSErrors
    from huggingface_hub.errors import HTTPError as _TransportError
except ImportError:  # pragma: no cover
    _TransportError = OSError

__all__ = [
    'WEIGHTS_NAME', 'CONFIG_NAME', 'CARD_NAME', 'EXTRA_KEY', 'PLOT_NAMES', 'UPLOAD_ALLOWLIST', 'LICENSE',
    'HubError', 'UploadError', 'PushResult',
    'export_model', 'is_export', 'read_export_config', 'export_extra', 'find_best_export', 'default_eval_metrics',
    'publishable_config', 'build_export_folder', 'count_parameters', 'check_repo_id', 'resolve_token', 'push_to_hub',
]

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
EXTRA_KEY = 'adni_timm'
PLOT_NAMES = ('curves.png', 'confusion_matrix.png', 'roc.png')
# The only files that ever go to the Hub: never a data image, a checkpoint pickle or a token.
UPLOAD_ALLOWLIST = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, *PLOT_NAMES)
LICENSE = 'apache-2.0'  # of the weights; the card says the ADNI DUA may restrict redistribution
PRETRAINED_TAG = 'adni_ad_nc'


class HubError(ValueError):
    """Bad input for an export or push; the message names the problem and the fix."""


class UploadError(HubError):
    """The Hub refused the upload or could not be reached; the local export folder is kept."""

    def __init__(self, message: str, export_dir: Path):
        super().__init__(f'{message}. The export folder is kept at {export_dir}; fix the problem and run again.')
        self.export_dir = export_dir


# ---------------------------------------------------------------------------------------------------------------
# export folder of one model (RUN/best)


def export_model(model: torch.nn.Module, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + timm ``config.json`` to ``out_dir``, atomically.

    The folder is assembled beside ``out_dir`` and swapped in with a rename, so a
    kill mid-write leaves the previous export intact. ``extra`` (e.g. the
    validation threshold) is stored under ``config.json['adni_timm']``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, '_orig_mod', model)  # torch.compile wrapper
    arch = stock_architecture(model.pretrained_cfg.get('architecture', ''))
    model_config = {
        'pretrained_cfg': {'architecture': arch},
        EXTRA_KEY: dict(extra or {}),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', dir=out_dir.parent))
    try:
        # weights only: never a pickle (.bin), so local-dir: and hf-hub: both pick the safetensors file
        state = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
        cpu_model = _StateOnly(model, state)
        save_for_hf(cpu_model, tmp, model_config=model_config, safe_serialization=True)
        _write_json(tmp / CONFIG_NAME, _with_own_provenance(_read_json(tmp / CONFIG_NAME)))
        old = out_dir.with_name(f'.{out_dir.name}.old')
        if old.exists():
            shutil.rmtree(old)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class _StateOnly(torch.nn.Module):
    """Presents a model to ``save_for_hf`` with a given (CPU, contiguous) state dict."""

    def __init__(self, model: torch.nn.Module, state: dict[str, torch.Tensor]):
        super().__init__()
        object.__setattr__(self, '_model', model)
        object.__setattr__(self, '_state', state)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, '_model'), name)

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return self._state


def is_export(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an export: ``config.json`` and ``model.safetensors``."""
    return (Path(folder) / CONFIG_NAME).is_file() and (Path(folder) / WEIGHTS_NAME).is_file()


def read_export_config(export_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of an export folder (clear error when it is not one)."""
    export_dir = Path(export_dir)
    cfg_file = export_dir / CONFIG_NAME
    if not is_export(export_dir):
        raise FileNotFoundError(
            f'{export_dir} is not a timm export folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}. '
            f'Point at a training run (RUN or RUN/best) or a folder written by push_to_hub.py --dry-run.')
    return _read_json(cfg_file)


def export_extra(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Our own settings stored in an export (threshold, classes, ...); empty when absent."""
    return dict(read_export_config(export_dir).get(EXTRA_KEY, {}))


# Provenance of whatever checkpoint the model was created from (e.g. an ImageNet tag, licence, hub id or
# test-time sizes that were never evaluated here): replaced by our own so the published cfg describes our weights.
_FOREIGN_CFG_KEYS = (
    'hf_hub_id', 'hf_hub_filename', 'hf_hub_revision', 'url', 'file', 'source', 'state_dict', 'notes',
    'test_input_size', 'test_crop_pct', 'test_pool_size', 'min_input_size', 'label_descriptions')
_OWN_CFG_KEYS = ('description', 'origin_url', 'paper_name', 'paper_ids')


def _with_own_provenance(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with our tag, licence, description and class names in its ``pretrained_cfg``."""
    config = json.loads(json.dumps(config))  # deep copy
    cfg = config.setdefault('pretrained_cfg', {})
    for key in _FOREIGN_CFG_KEYS:
        cfg.pop(key, None)
    own = timm.models.get_pretrained_cfg(f'adni_convnext_tiny.{PRETRAINED_TAG}').to_dict()
    cfg.update({key: own[key] for key in _OWN_CFG_KEYS}, tag=PRETRAINED_TAG, license=LICENSE)
    if is_synthetic(config.get(EXTRA_KEY, {})):
        cfg['description'] = 'SYNTHETIC-DATA DEMO, trained on generated images, not ADNI. ' + cfg['description']
    classes = list(config.get(EXTRA_KEY, {}).get('classes') or LABEL_NAMES)
    if len(classes) == config.get('num_classes', cfg.get('num_classes')):
        cfg['label_names'] = classes
    else:
        cfg.pop('label_names', None)
    return config


def publishable_config(config: dict[str, Any], source: str = CONFIG_NAME) -> dict[str, Any]:
    """The config.json to publish: our own provenance, checked to preprocess as this project trains.

    Raises ``HubError`` when the weights expect something else than 1-channel input normalised
    with mean = std = 0.5 (e.g. a run of a stock timm model that kept ImageNet statistics).
    """
    config = _with_own_provenance(config)
    cfg = config['pretrained_cfg']
    in_chans = config.get('model_args', {}).get('in_chans', cfg.get('input_size', [3])[0])
    problems = []
    if in_chans != 1 or cfg.get('input_size', [None])[0] != 1:
        problems.append(f'in_chans={in_chans}, input_size={cfg.get("input_size")} (expected 1 grayscale channel)')
    for key, want in (('mean', MEAN), ('std', STD)):
        got = cfg.get(key)
        if got is None or len(got) != len(want) or not all(math.isclose(g, w) for g, w in zip(got, want)):
            problems.append(f'{key}={got} (expected {list(want)})')
    if 'label_names' not in cfg:
        problems.append(f'num_classes={config.get("num_classes")} does not match the class list')
    if problems:
        raise HubError(
            f'{source} does not describe this project\'s preprocessing: {"; ".join(problems)}. '
            f'Train an adni_convnext_* model (train.py --model adni_convnext_tiny), whose config uses '
            f'1 channel and mean = std = 0.5, then publish that run.')
    return config


# ---------------------------------------------------------------------------------------------------------------
# export folder for the Hub


def find_best_export(run_dir: str | os.PathLike) -> Path:
    """The export folder holding a run's best weights: ``RUN/best``, or ``RUN`` itself when it is one."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / 'best', run_dir):
        if is_export(candidate):
            return candidate
    if not run_dir.is_dir():
        raise HubError(f'run folder {run_dir} does not exist; pass the --output-dir of a finished train.py run')
    raise HubError(
        f'{run_dir} has no best weights ({run_dir / "best" / WEIGHTS_NAME} and {CONFIG_NAME} are missing); '
        f'train first (train.py writes RUN/best when a validation epoch finishes) or point at a finished run')


def default_eval_metrics(run_dir: str | os.PathLike) -> Path | None:
    """``RUN/eval/metrics.json`` when the run was evaluated, else None."""
    path = Path(run_dir) / 'eval' / 'metrics.json'
    return path if path.is_file() else None


def build_export_folder(
        run_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        eval_metrics_path: str | os.PathLike | None = None,
        *,
        repo_id: str | None = None,
        acknowledgement: str | None = None,
) -> list[Path]:
    """Assemble the folder to publish from a training run; returns the files written (sorted).

    Only ``UPLOAD_ALLOWLIST`` is ever written: the best weights, a checked ``config.json``, the model
    card ``README.md`` and the plots that exist (``RUN/curves.png``; ``confusion_matrix.png`` and
    ``roc.png`` beside the eval ``metrics.json``). ``out_dir`` must be new, empty or an earlier export
    folder: a folder holding anything else is refused rather than cleaned. ``repo_id`` is used in the
    card's code examples; ``acknowledgement`` replaces the card's ADNI acknowledgement placeholder.
    """
    run_dir = Path(run_dir)
    best = find_best_export(run_dir)
    config = publishable_config(read_export_config(best), source=str(best / CONFIG_NAME))
    metrics = _read_eval_metrics(eval_metrics_path)
    plot_sources = {'curves.png': run_dir / 'curves.png'}
    if eval_metrics_path is not None:
        eval_dir = Path(eval_metrics_path).parent
        plot_sources.update({name: eval_dir / name for name in ('confusion_matrix.png', 'roc.png')})
    plots = {name: src for name, src in plot_sources.items() if src.is_file()}

    out_dir = _prepare_out_dir(Path(out_dir))
    shutil.copyfile(best / WEIGHTS_NAME, out_dir / WEIGHTS_NAME)
    _write_json(out_dir / CONFIG_NAME, config)
    for name, src in plots.items():
        shutil.copyfile(src, out_dir / name)
    card = build_model_card(
        repo_id=repo_id or 'ORG/NAME',
        config=config,
        num_params=count_parameters(out_dir / WEIGHTS_NAME),
        train_config=_read_yaml(run_dir / 'train_config.yaml'),
        split=_read_json(run_dir / 'split.json') if (run_dir / 'split.json').is_file() else None,
        metrics=metrics,
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
            f'--output-dir {out_dir} holds files that are not part of an export ({", ".join(strangers[:5])}); '
            f'give a new or empty folder so nothing else can be uploaded by mistake')
    for stale in out_dir.iterdir():  # an earlier export: its plots may no longer apply
        stale.unlink()
    return out_dir


def _read_eval_metrics(path: str | os.PathLike | None) -> dict[str, Any] | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise HubError(f'--eval {path} does not exist; run evaluate.py --output-dir OUT and pass OUT/metrics.json')
    metrics = _read_json(path)
    if not isinstance(metrics, dict) or not any(isinstance(metrics.get(k), dict) for k in ('slice', 'patient')):
        raise HubError(f'--eval {path} is not an evaluate.py metrics.json (no "slice" or "patient" section)')
    return metrics


# ---------------------------------------------------------------------------------------------------------------
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
        raise HubError(f'--repo-id {repo_id!r} is not a valid Hub repo id: {e} Use ORG/NAME, '
                       f'e.g. my-lab/adni-convnext-tiny') from None
    if repo_id.count('/') != 1:
        raise HubError(f'--repo-id {repo_id!r} needs an owner: use ORG/NAME (your user name or an organisation), '
                       f'e.g. my-lab/adni-convnext-tiny')
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN`` or the saved login; ``HubError`` if none."""
    token = token or get_token()
    if not token:
        raise HubError('not logged in to the Hugging Face Hub: run `hf auth login`, or set HF_TOKEN, '
                       'or pass --token (a token with write access)')
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
) -> PushResult:
    """Build the export folder of ``run_dir`` and upload it to ``repo_id`` (model repo).

    ``eval_metrics_path`` defaults to ``RUN/eval/metrics.json`` when it exists; ``output_dir`` to
    ``RUN/hub``. The folder is kept after the push (and after a failure) for inspection. With
    ``dry_run`` nothing touches the network. The token is passed to ``HfApi`` only: never logged,
    never written (the export is checked not to contain it).
    """
    check_repo_id(repo_id)
    run_dir = Path(run_dir)
    if eval_metrics_path is None:
        eval_metrics_path = default_eval_metrics(run_dir)
    if eval_metrics_path is None:
        _logger.warning('no evaluation metrics (RUN/eval/metrics.json missing, no --eval): '
                        'the model card will have no test results')
    export_dir = Path(output_dir) if output_dir is not None else run_dir / 'hub'
    files = build_export_folder(run_dir, export_dir, eval_metrics_path, repo_id=repo_id,
                                acknowledgement=acknowledgement)
    if ACK_PLACEHOLDER in (export_dir / CARD_NAME).read_text(encoding='utf-8'):
        _logger.warning('%s still has the ADNI acknowledgement placeholder: pass --acknowledgement FILE '
                        'or edit the card on the Hub before making the repo public', CARD_NAME)
    result = PushResult(repo_id=repo_id, export_dir=export_dir, files=files, dry_run=dry_run)
    if dry_run:
        return result

    token = resolve_token(token)
    _refuse_secret_in_export(files, token, export_dir)
    extra = json.loads((export_dir / CONFIG_NAME).read_text(encoding='utf-8')).get(EXTRA_KEY, {})
    commit_message = commit_message or _default_commit_message(extra)
    api = HfApi(token=token, library_name='adni-timm', library_version=_package_version())
    try:
        api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
        if private and not api.repo_info(repo_id, repo_type='model').private:
            raise HubError(f'{repo_id} already exists and is public, but --private was asked: nothing uploaded. '
                           f'Make it private on the Hub first, or choose another --repo-id')
        if revision and not create_pr:
            api.create_branch(repo_id, branch=revision, repo_type='model', exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type='model', folder_path=export_dir,
            allow_patterns=[p.name for p in files],  # the allowlist again: nothing else in the folder goes up
            commit_message=commit_message, revision=revision, create_pr=create_pr)
    except HfHubHTTPError as e:
        raise UploadError(_describe_http_error(e, repo_id), export_dir) from None
    except (_TransportError, OSError) as e:
        raise UploadError(f'could not reach the Hugging Face Hub ({type(e).__name__}: {e})', export_dir) from None
    result.commit_url = getattr(commit, 'commit_url', None)
    result.pr_url = getattr(commit, 'pr_url', None)
    return result


def _describe_http_error(error: HfHubHTTPError, repo_id: str) -> str:
    status = getattr(getattr(error, 'response', None), 'status_code', None)
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    if status in (401, 403):
        return (f'the Hub refused the token (HTTP {status}) for {repo_id}: it may be invalid, read-only or lack '
                f'access to the organisation. Run `hf auth login` with a write token, or set HF_TOKEN')
    return f'upload to {repo_id} failed (HTTP {status or "error"}): {first_line}'


def _refuse_secret_in_export(files: list[Path], token: str, export_dir: Path) -> None:
    for path in files:
        if path.suffix in ('.json', '.md') and token in path.read_text(encoding='utf-8', errors='ignore'):
            raise UploadError(f'{path.name} contains your Hub token; nothing uploaded. Remove the token from the '
                              f'training config and export again', export_dir)


def _default_commit_message(extra: dict[str, Any]) -> str:
    what = extra.get('model_name', 'model')
    details = [f'{extra["weights"]} weights' if extra.get('weights') else None,
               f'epoch {extra["epoch"]}' if extra.get('epoch') is not None else None]
    details = ', '.join(d for d in details if d)
    return f'Upload {what}{f" ({details})" if details else ""} with adni-timm'


def _package_version() -> str:
    from . import __version__
    return __version__


# ---------------------------------------------------------------------------------------------------------------
# small file helpers


def _read_json(path: Path) -> Any:
    with Path(path).open(encoding='utf-8') as f:
        return json.load(f)


def _write_json(path: Path, data: Any) -> None:
    with Path(path).open('w', encoding='utf-8') as f:
        json.dump(data, f, indent=2)
        f.write('\n')


def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with path.open(encoding='utf-8') as f:
        return yaml.safe_load(f) or {}
