"""Publishing a run to the Hub (HfApi patched: no
network) and loading it back offline, three ways.
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import matplotlib
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

from adni_timm.export import format as export
from adni_timm.publish import hub
from adni_timm.publish.card import eval_results_from_metrics
from helpers import populate_hub_cache

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('push_to_hub_cli', ROOT / 'push_to_hub.py')
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

REPO_ID = 'my-lab/adni-convnext-atto'
IMG = 64
EXPORT_FILES = {
    'model.safetensors',
    'config.json',
    'README.md',
    'curves.png',
    'confusion_matrix.png',
    'roc.png',
    'example.png',  # SYNTHETIC: drawn for the card's widget, never a training image
}
EXTRA = {
    'threshold': 0.47,
    'threshold_source': 'validation',
    'classes': ['NC', 'AD'],
    'weights': 'ema',
    'epoch': 12,
    'best_metric': 'val_scan_auc',
    'best_value': 0.93,
    'model_name': 'adni_convnext_atto',
    'img_size': IMG,
    'data': 'ADNI AD_NC',
}


def _level_metrics(n, acc, sens, spec, auc):
    return {
        'n': n,
        'accuracy': acc,
        'balanced_accuracy': (sens + spec) / 2,
        'sensitivity': sens,
        'specificity': spec,
        'precision': 0.8,
        'f1': 0.75,
        'auc': auc,
        'auc_ci': [auc - 0.03, auc + 0.03],
        'confusion_matrix': [[90, 10], [28, 72]],
    }


METRICS = {
    'slice': _level_metrics(4000, 0.8123, 0.70, 0.91, 0.8765),
    'scan': _level_metrics(200, 0.855, 0.78, 0.93, 0.9312),
    'threshold': 0.47,
    'threshold_source': 'validation',
    'model': 'RUN',
    'data_dir': 'AD_NC',
    'split': 'test',
}


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, [[0.0, 1.0]])


def make_run(run: Path, extra=None, model=None) -> Path:
    """A fake train.py run folder, plus things that must
    never be uploaded (data image, checkpoint, csv).
    """
    model = model or timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, IMG, IMG))
    )
    export.export_model(model, run / 'best', extra=dict(EXTRA, **(extra or {})))
    config = {
        'model': 'adni_convnext_atto',
        'epochs': 3,
        'img_size': IMG,
        'batch_size': 8,
        'lr': 5e-4,
        'weight_decay': 0.05,
        'data_dir': '/home/someone/private/AD_NC',
        'hub_token': 'hf_SECRETSECRET',
        'versions': {'torch': str(torch.__version__), 'timm': timm.__version__},
        'git_commit': 'abc123',
    }
    (run / 'train_config.yaml').write_text(yaml.safe_dump(config))
    (run / 'split.json').write_text(
        json.dumps(
            {
                'level': 'scan',
                'seed': 0,
                'val_fraction': 0.2,
                'train': ['1', '2', '3', '4'],
                'val': ['5'],
            }
        )
    )
    (run / 'metrics.jsonl').write_text('{"epoch": 0, "val_scan_auc": 0.9}\n')
    _png(run / 'curves.png')
    (run / 'eval').mkdir()
    # what evaluate.py writes for these weights: their
    # fingerprint, epoch, and the evaluated scans
    weights_sha256 = hashlib.sha256((run / 'best' / 'model.safetensors').read_bytes()).hexdigest()
    (run / 'eval' / 'metrics.json').write_text(
        json.dumps(dict(METRICS, weights_sha256=weights_sha256, epoch=12))
    )
    (run / 'eval' / 'scans.csv').write_text(
        'scan,label,n_slices,p_AD,predicted\n900,AD,20,0.9,AD\n901,NC,20,0.1,NC\n'
    )
    for name in ('confusion_matrix.png', 'roc.png'):
        _png(run / 'eval' / name)
    (run / 'eval' / 'predictions.csv').write_text('path,label,p_ad\nAD/1_1.jpeg,1,0.9\n')
    (run / 'checkpoints').mkdir()
    (run / 'checkpoints' / 'pytorch_model.bin').write_bytes(b'pickle')
    # a data image in the weights folder: must never be picked up
    _png(run / 'best' / '218391_78.jpeg')
    return run


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A run folder, the model behind it, a fixed input and the model's logits on it."""
    root = tmp_path_factory.mktemp('trained')
    torch.manual_seed(0)
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, IMG, IMG))
    ).eval()
    # move the head off its zero init so that wrong weights give different logits
    with torch.no_grad():
        model.head.fc.weight.normal_(0, 0.5)
    x = torch.randn(2, 1, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    torch.save(x, root / 'x.pt')
    torch.save(logits, root / 'logits.pt')
    run = make_run(root / 'run', model=model)
    export = root / 'export'
    hub.build_export_folder(run, export, run / 'eval' / 'metrics.json', repo_id=REPO_ID)
    return dict(root=root, run=run, export=export, x=x, logits=logits)


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / 'run')


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    """No HF_TOKEN and no saved login, whatever the machine running the tests has."""
    for var in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr('huggingface_hub.constants.HF_TOKEN_PATH', str(tmp_path / 'no_token'))


# --------------------------------------------------------------------------------------------------
# the export folder


def test_export_folder_holds_exactly_the_allowlist(trained):
    export, run = trained['export'], trained['run']
    assert {p.name for p in export.iterdir()} == EXPORT_FILES
    assert (export / 'model.safetensors').read_bytes() == (
        run / 'best' / 'model.safetensors'
    ).read_bytes()
    assert (export / 'roc.png').read_bytes() == (run / 'eval' / 'roc.png').read_bytes()


def test_published_config_is_our_own_pretrained_cfg(trained):
    text = (trained['export'] / 'config.json').read_text()
    config = json.loads(text)
    assert config['architecture'] == 'convnext_atto'  # stock name: loads without adni_timm
    # at the top level, where transformers reads them
    assert config['num_classes'] == 2 and config['label_names'] == ['NC', 'AD']
    # transformers passes its own num_classes; in_chans would rebuild the 1-channel model
    assert not {'num_classes', 'in_chans'} & set(config.get('model_args', {}))
    cfg = config['pretrained_cfg']
    # published for RGB input; in_chans=1 loads the trained form
    assert cfg['input_size'] == [3, IMG, IMG]
    # 1-element: normalises 3 channels and 1 alike
    assert cfg['mean'] == [0.5] and cfg['std'] == [0.5]
    assert cfg['label_names'] == ['NC', 'AD']
    assert config['adni_timm']['format'] == 2 and config['adni_timm']['trained_in_chans'] == 1
    # trained on (the fixture's stand-in for) ADNI data: the data's terms, not our code's licence
    assert cfg['tag'] == 'adni_ad_nc' and cfg['license'] == 'other'
    assert not {'hf_hub_id', 'url', 'test_input_size', 'test_crop_pct'} & set(cfg)
    assert config['adni_timm']['threshold'] == 0.47
    assert 'no ImageNet weights' in cfg.pop('description')  # the one allowed mention
    for leftover in ('imagenet', 'in1k', 'in22k', '0.485', '0.229', '0.449'):
        assert leftover not in json.dumps(config).lower()


def test_stock_model_export_loses_imagenet_provenance_and_is_refused_for_its_imagenet_mean(
    tmp_path,
):
    stock = timm.create_model('convnext_atto', in_chans=1, num_classes=2)
    export.export_model(stock, tmp_path / 'run' / 'best', extra={'classes': ['NC', 'AD']})
    cfg = export.read_export_config(tmp_path / 'run' / 'best')['pretrained_cfg']
    assert (
        cfg['tag'] == 'adni_ad_nc'
        and cfg['license'] == 'other'  # no data note: ADNI AD_NC, the data's terms
        and cfg['label_names'] == ['NC', 'AD']
    )
    assert 'test_input_size' not in cfg
    with pytest.raises(hub.HubError, match=r'mean=\[0\.449\].*adni_convnext'):
        hub.build_export_folder(tmp_path / 'run', tmp_path / 'export')


def test_output_dir_with_other_files_is_refused(run_dir, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    with pytest.raises(hub.HubError, match='notes.txt'):
        hub.build_export_folder(run_dir, out)
    assert (out / 'notes.txt').read_text() == 'keep me'


def test_rebuilding_drops_plots_that_no_longer_apply(run_dir, tmp_path):
    out = tmp_path / 'out'
    hub.build_export_folder(run_dir, out, run_dir / 'eval' / 'metrics.json')
    files = hub.build_export_folder(run_dir, out)  # no eval this time
    assert (
        {p.name for p in files}
        == {p.name for p in out.iterdir()}
        == {'model.safetensors', 'config.json', 'README.md', 'curves.png', 'example.png'}
    )


# --------------------------------------------------------------------------------------------------
# the model card


def test_card_front_matter_and_eval_results_round_trip(trained):
    card = ModelCard.load(trained['export'] / 'README.md')
    data = card.data
    assert data.library_name == 'timm' and data.pipeline_tag == 'image-classification'
    # ADNI data: its Data Use Agreement, not the code's Apache-2.0 (tests/test_ecosystem.py)
    assert data.license == 'other' and data.license_name == 'adni-data-use-agreement'
    assert 'base_model' not in data.to_dict()  # nothing false: the weights are from scratch
    # huggingface_hub's offline checks: the front matter re-parses into the same card data and eval
    # results (ModelCard.validate posts the YAML to the Hub, which these tests cannot reach)
    again = ModelCard(str(card))
    assert again.data.to_dict() == data.to_dict() and again.data.eval_results == data.eval_results
    tags = 'timm image-classification medical-imaging mri alzheimers adni convnext'.split()
    assert set(tags) <= set(data.tags)
    assert data.eval_results == eval_results_from_metrics(METRICS)
    got = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert got == {
        ('ADNI AD_NC test (slice-level)', 'accuracy'): 0.8123,
        ('ADNI AD_NC test (slice-level)', 'roc_auc'): 0.8765,
        ('ADNI AD_NC test (slice-level)', 'recall'): 0.70,
        ('ADNI AD_NC test (slice-level)', 'specificity'): 0.91,
        ('ADNI AD_NC test (scan-level)', 'accuracy'): 0.855,
        ('ADNI AD_NC test (scan-level)', 'roc_auc'): 0.9312,
        ('ADNI AD_NC test (scan-level)', 'recall'): 0.78,
        ('ADNI AD_NC test (scan-level)', 'specificity'): 0.93,
    }


def test_card_sections_say_what_the_model_is_and_must_not_be_used_for(trained):
    text = (trained['export'] / 'README.md').read_text()
    for heading in (
        '## Model details',
        '## Intended use',
        '### Out-of-scope use',
        '## Training data',
        '## Training procedure',
        '## Evaluation',
        '## Limitations and bias',
        '## How to use',
        '## Citation',
        '## ADNI acknowledgement',
    ):
        assert heading in text
    assert 'Not a medical device' in text and 'Not for diagnosis' in text
    # convnext_atto, 2 classes, as published (3-channel stem)
    assert 'from scratch' in text and '3.38 M' in text
    assert 'Data Use Agreement' in text and 'No images' in text and '**by scan**' in text
    assert "timm.create_model('hf-hub:my-lab/adni-convnext-atto', pretrained=True)" in text
    assert (
        "timm.create_model('hf-hub:my-lab/adni-convnext-atto', pretrained=True, in_chans=1)" in text
    )
    assert "pipeline('image-classification', model='my-lab/adni-convnext-atto')" in text
    # scan sens .78, spec .93
    assert 'misses 22.0% of AD scans and flags 7.0% of NC scans' in text
    assert '![ROC curve](roc.png)' in text and '0.931 [0.901, 0.961]' in text
    # threshold_source: validation
    assert 'chosen on the validation scans (never on test)' in text
    assert 'shares no scan with training or validation (checked' in text
    assert '@inproceedings{liu2022convnet' in text and '@misc{rw2019timm' in text
    assert 'TODO (publisher)' in text
    config_block = text.split('```yaml\n')[1].split('```')[0]
    assert yaml.safe_load(config_block)['lr'] == 5e-4
    assert 'hf_SECRETSECRET' not in text and 'hub_token' not in text and '/home/someone' not in text


def test_synthetic_run_says_so_loudly(tmp_path):
    run = make_run(tmp_path / 'run', extra={'data': 'synthetic'})
    hub.build_export_folder(run, tmp_path / 'out', run / 'eval' / 'metrics.json')
    card = ModelCard.load(tmp_path / 'out' / 'README.md')
    assert 'WARNING: SYNTHETIC DATA' in card.text
    assert 'synthetic-data' in card.data.tags
    assert all(r.dataset_name.startswith('SYNTHETIC') for r in card.data.eval_results)
    assert 'TODO (publisher)' not in card.text  # no ADNI data, no ADNI acknowledgement
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['pretrained_cfg']['description'].startswith('SYNTHETIC')


def test_slice_level_split_is_flagged_as_leaky(run_dir, tmp_path):
    (run_dir / 'split.json').write_text(
        json.dumps({'level': 'slice', 'seed': 0, 'val_fraction': 0.2, 'train': ['a'], 'val': ['b']})
    )
    hub.build_export_folder(run_dir, tmp_path / 'out')
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert 'by slice' in text and 'optimistic' in text
    assert 'model-index' not in text and 'Not evaluated on a held-out test split' in text


# --------------------------------------------------------------------------------------------------
# loading back


@pytest.mark.slow
def test_stock_timm_loads_the_hub_repo_in_a_fresh_process_without_adni_timm(trained, tmp_path):
    cache = tmp_path / 'hub_cache'
    populate_hub_cache(cache, REPO_ID, trained['export'])
    root = trained['root']
    script = textwrap.dedent(f"""
        import json, sys
        import timm, torch
        model = timm.create_model('hf-hub:{REPO_ID}', pretrained=True).eval()
        assert 'adni_timm' not in sys.modules
        x, expected = torch.load({str(root / 'x.pt')!r}), torch.load({str(root / 'logits.pt')!r})
        with torch.no_grad():  # a grayscale slice as RGB: 3 equal channels
            diff = (model(x.repeat(1, 3, 1, 1)) - expected).abs().max().item()
        cfg = timm.data.resolve_data_config(model=model)
        print(json.dumps(dict(diff=diff, input_size=cfg['input_size'], mean=cfg['mean'],
                              std=cfg['std'], labels=model.pretrained_cfg.get('label_names'))))
    """)
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), PYTHONPATH='')
    proc = subprocess.run(
        [sys.executable, '-c', script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['diff'] < 1e-4  # logits of a few units; the split stem sums back to float32 rounding
    assert out['input_size'] == [3, IMG, IMG] and out['mean'] == [0.5] and out['std'] == [0.5]
    assert out['labels'] == ['NC', 'AD']


def test_registered_name_with_hub_overlay_and_local_dir_load_the_same_weights(trained, tmp_path):
    cache = tmp_path / 'hub_cache'
    populate_hub_cache(cache, REPO_ID, trained['export'])
    overlay = timm.create_model(
        'adni_convnext_atto',
        pretrained=True,
        cache_dir=cache,
        pretrained_cfg_overlay=dict(hf_hub_id=REPO_ID, input_size=(1, IMG, IMG)),
    ).eval()
    local = timm.create_model(f'local-dir:{trained["export"]}', pretrained=True, in_chans=1).eval()
    with torch.no_grad():
        for model in (overlay, local):
            # 3-channel luma stem vs the trained 1-channel one: fp32 rounding is relative
            torch.testing.assert_close(model(trained['x']), trained['logits'], rtol=1e-5, atol=1e-6)
    # the registered model describes itself: 1 channel
    cfg = timm.data.resolve_data_config(model=overlay)
    assert (
        tuple(cfg['input_size']) == (1, IMG, IMG)
        and tuple(cfg['mean']) == (0.5,)
        and tuple(cfg['std']) == (0.5,)
    )


# --------------------------------------------------------------------------------------------------
# push (HfApi patched)


def test_push_creates_the_repo_and_uploads_only_the_export_folder(run_dir, tmp_path):
    uploaded = {}

    def record_upload(**kwargs):
        folder = Path(kwargs['folder_path'])
        uploaded.update({p.name: p.read_bytes() for p in folder.iterdir()})
        return mock.Mock(commit_url='https://huggingface.co/my-lab/x/commit/1', pr_url=None)

    with mock.patch('adni_timm.publish.hub.HfApi') as api_cls:
        api = api_cls.return_value
        api.repo_info.return_value.private = True
        api.upload_folder.side_effect = record_upload
        result = hub.push_to_hub(
            run_dir,
            REPO_ID,
            private=True,
            token='hf_test_token',
            commit_message='v1',
            output_dir=tmp_path / 'export',
        )
    assert api_cls.call_args.kwargs['token'] == 'hf_test_token'
    api.create_repo.assert_called_once_with(REPO_ID, repo_type='model', private=True, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs['repo_id'] == REPO_ID and kwargs['commit_message'] == 'v1'
    assert kwargs['revision'] is None and kwargs['create_pr'] is False
    assert set(kwargs['allow_patterns']) == EXPORT_FILES == set(uploaded)
    assert uploaded['model.safetensors'] == (run_dir / 'best' / 'model.safetensors').read_bytes()
    assert 'model-index' in uploaded['README.md'].decode()  # RUN/eval/metrics.json used by default
    assert result.commit_url.endswith('/commit/1') and not result.dry_run
    api.create_branch.assert_not_called()


def test_push_to_a_revision_creates_the_branch_and_can_open_a_pr(run_dir, tmp_path):
    with mock.patch('adni_timm.publish.hub.HfApi') as api_cls:
        api = api_cls.return_value
        hub.push_to_hub(run_dir, REPO_ID, revision='v2', token='hf_t', output_dir=tmp_path / 'a')
        api.create_branch.assert_called_once_with(
            REPO_ID, branch='v2', repo_type='model', exist_ok=True
        )
        hub.push_to_hub(run_dir, REPO_ID, create_pr=True, token='hf_t', output_dir=tmp_path / 'b')
    assert api.upload_folder.call_args_list[0].kwargs['revision'] == 'v2'
    assert api.upload_folder.call_args_list[1].kwargs['create_pr'] is True
    assert api.upload_folder.call_args_list[0].kwargs['commit_message'] == (
        'Upload adni_convnext_atto (ema weights, epoch 12) with adni-timm'
    )


def test_private_push_to_an_existing_public_repo_is_refused(run_dir):
    with mock.patch('adni_timm.publish.hub.HfApi') as api_cls:
        api_cls.return_value.repo_info.return_value.private = False
        with pytest.raises(hub.HubError, match='public'):
            hub.push_to_hub(run_dir, REPO_ID, private=True, token='hf_t')
        api_cls.return_value.upload_folder.assert_not_called()


def test_token_from_hf_token_env_is_used(run_dir, no_login, monkeypatch):
    monkeypatch.setenv('HF_TOKEN', 'hf_from_env')
    with mock.patch('adni_timm.publish.hub.HfApi') as api_cls:
        hub.push_to_hub(run_dir, REPO_ID)
    assert api_cls.call_args.kwargs['token'] == 'hf_from_env'


def test_a_token_that_leaked_into_the_export_stops_the_upload(run_dir):
    with (
        mock.patch('adni_timm.publish.hub.HfApi') as api_cls,
        pytest.raises(hub.UploadError, match='contains your Hub'),
    ):
        # a "token" that the card contains
        hub.push_to_hub(run_dir, REPO_ID, token='adni_convnext_atto')
    api_cls.assert_not_called()


# --------------------------------------------------------------------------------------------------
# the CLI: one clear line and a non-zero exit for each fault


def _cli(capsys, run, *argv, repo_id=REPO_ID):
    """``push_to_hub.py --run RUN --repo-id REPO_ID ARGV...`` in process: (code, stdout, stderr)."""
    code = cli.main(['--run', str(run), '--repo-id', repo_id, *argv])
    out, err = capsys.readouterr()
    assert 'Traceback' not in err
    return code, out, err


def test_cli_dry_run_lists_files_with_sizes_and_touches_no_network(run_dir, tmp_path, capsys):
    with mock.patch('adni_timm.publish.hub.HfApi') as api_cls:
        code, out, _ = _cli(capsys, run_dir, '--dry-run', '--output-dir', str(tmp_path / 'dry'))
    assert code == 0
    api_cls.assert_not_called()
    size = (tmp_path / 'dry' / 'model.safetensors').stat().st_size
    assert re.search(rf'^  model\.safetensors +{size:,d} bytes$', out, re.M)
    assert {line.split()[0] for line in out.splitlines()[1:-1]} == EXPORT_FILES


def test_cli_acknowledgement_file_replaces_the_placeholder(run_dir, tmp_path, capsys):
    ack = tmp_path / 'ack.md'
    ack.write_text('Data collection and sharing for this project was funded by ADNI (test text).')
    code, _, _ = _cli(capsys, run_dir, '--dry-run', '--acknowledgement', str(ack))
    text = (run_dir / 'hub' / 'README.md').read_text()
    assert code == 0 and 'funded by ADNI (test text)' in text and 'TODO (publisher)' not in text


@pytest.mark.parametrize('repo_id', ['no-owner', 'a/b/c', 'org/bad name', 'org/-x'])
def test_cli_malformed_repo_id(run_dir, capsys, repo_id):
    code, _, err = _cli(capsys, run_dir, '--dry-run', repo_id=repo_id)
    assert code == 2 and 'ORG/NAME' in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / 'hub').exists()


def test_cli_run_without_best_weights(tmp_path, capsys):
    (tmp_path / 'run').mkdir()
    code, _, err = _cli(capsys, tmp_path / 'run', '--dry-run')
    assert code == 2 and 'no best weights' in err and len(err.strip().splitlines()) == 1


def test_cli_without_a_token_names_the_fix_and_keeps_the_export(run_dir, no_login, capsys):
    with mock.patch('adni_timm.publish.hub.HfApi') as api_cls:
        code, _, err = _cli(capsys, run_dir)
    assert code == 2 and 'hf auth login' in err and 'HF_TOKEN' in err
    api_cls.assert_not_called()
    assert {p.name for p in (run_dir / 'hub').iterdir()} == EXPORT_FILES


@pytest.mark.parametrize(
    'error, expected',
    [
        (
            HfHubHTTPError(
                '500 Server Error: boom', response=mock.Mock(status_code=500, headers={})
            ),
            'HTTP 500',
        ),
        (
            HfHubHTTPError('401 Unauthorized', response=mock.Mock(status_code=401, headers={})),
            'hf auth login',
        ),
        (ConnectionError('connection refused'), 'could not reach'),
    ],
)
def test_cli_upload_failure_exits_non_zero_and_keeps_the_export(
    run_dir, tmp_path, capsys, error, expected
):
    out_dir = tmp_path / 'export'
    with mock.patch('adni_timm.publish.hub.HfApi') as api_cls:
        api_cls.return_value.upload_folder.side_effect = error
        code, _, err = _cli(
            capsys, run_dir, '--token', 'hf_secret_value', '--output-dir', str(out_dir)
        )
    assert code == 2 and expected in err and str(out_dir) in err
    assert 'hf_secret_value' not in err
    assert {p.name for p in out_dir.iterdir()} == EXPORT_FILES


def test_cli_missing_eval_metrics_file(run_dir, tmp_path, capsys):
    missing = tmp_path / 'nope' / 'metrics.json'
    code, _, err = _cli(capsys, run_dir, '--dry-run', '--eval', str(missing))
    assert code == 2 and 'does not exist' in err and 'adni-evaluate' in err


# --------------------------------------------------------------------------------------------------
# the card claims only what was checked


def _edit_metrics(run, **changes):
    path = run / 'eval' / 'metrics.json'
    metrics = json.loads(path.read_text())
    metrics.update(changes)
    path.write_text(json.dumps(metrics))
    return path


def test_an_evaluation_of_other_weights_is_refused_unless_forced(run_dir, tmp_path):
    # e.g. a stale RUN/eval from an earlier best
    path = _edit_metrics(run_dir, weights_sha256='0' * 64)
    with pytest.raises(
        hub.HubError,
        match=r'does not belong to the weights.*other weights.*adni-evaluate --model'
        r'.*--force-eval',
    ):
        hub.build_export_folder(run_dir, tmp_path / 'out', path)
    assert not (tmp_path / 'out' / 'README.md').exists()
    hub.build_export_folder(run_dir, tmp_path / 'out', path, force_eval=True)
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert 'Unverified evaluation' in text and 'evaluated other weights' in text


@pytest.mark.parametrize(
    'changes, problem',
    [
        ({'weights_sha256': None}, 'no weights fingerprint'),
        ({'epoch': 11}, 'evaluated epoch 11, the export holds epoch 12'),
        ({'threshold': 0.3}, 'threshold 0.3 is not the stored 0.47'),
        ({'split': 'train'}, "evaluated the 'train' split, not the held-out test split"),
        # evaluate.py --threshold 0.05 once overwrote RUN/eval and was published "set by hand"
        ({'threshold': 0.05, 'threshold_source': 'cli'}, 'threshold 0.05 is not the stored 0.47'),
        ({'calibration': {'temperature': 2.0}}, 'temperature 2.0 is not the stored 1.0'),
        ({'tta': True}, 'used test-time augmentation'),
        ({'precision': 'bf16'}, 'ran in bf16 precision, the model was trained in fp32'),
    ],
)
def test_an_evaluation_that_does_not_match_the_export_is_named(run_dir, tmp_path, changes, problem):
    with pytest.raises(hub.HubError, match=re.escape(problem)):
        hub.build_export_folder(run_dir, tmp_path / 'out', _edit_metrics(run_dir, **changes))


def test_the_card_says_the_test_split_is_unseen_only_when_checked(run_dir, tmp_path):
    (run_dir / 'eval' / 'scans.csv').write_text(
        'scan,label,n_slices,p_AD,predicted\n1,AD,20,0.9,AD\n'
    )
    # scan 1 trained on
    hub.build_export_folder(run_dir, tmp_path / 'a', run_dir / 'eval' / 'metrics.json')
    text = (tmp_path / 'a' / 'README.md').read_text()
    assert 'shares scans with training or validation: its results below are optimistic' in text
    assert 'shares no scan' not in text
    (run_dir / 'eval' / 'scans.csv').unlink()
    hub.build_export_folder(run_dir, tmp_path / 'b', _edit_metrics(run_dir, threshold_source='cli'))
    text = (tmp_path / 'b' / 'README.md').read_text()
    assert 'could not be checked' in text and 'shares no scan' not in text
    assert 'set by hand (--threshold)' in text  # where the evaluated threshold came from, as it is


def test_the_cards_code_reads_p_ad_at_the_position_of_ad(tmp_path):
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, IMG, IMG))
    )
    run = make_run(tmp_path / 'run', extra={'classes': ['AD', 'NC']}, model=model)  # AD first
    hub.build_export_folder(run, tmp_path / 'out', run / 'eval' / 'metrics.json')
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['label_names'] == ['AD', 'NC']
    how_to = (
        (tmp_path / 'out' / 'README.md')
        .read_text()
        .split('## How to use')[1]
        .split('## Licence')[0]
    )
    assert "ad = config['label_names'].index('AD')" in how_to and '[0, ad]' in how_to
    assert '[0, 1]' not in how_to and 'softmax(-1)[1]' not in how_to
    # the pipeline's top label is the 0.5 decision
    assert 'not** the stored operating point' in how_to


@pytest.mark.slow
def test_the_readme_order_evaluate_then_publish_puts_these_results_in_the_card(
    tiny_run, tiny_data, tmp_path, capsys
):
    from helpers import cli_in_process

    run = shutil.copytree(tiny_run[0], tmp_path / 'run')
    assert (
        cli_in_process(
            capsys, 'evaluate', '--model', run, '--data-dir', tiny_data, '--n-boot', '20'
        )[0]
        == 0
    )
    # RUN/eval is what it publishes by default
    code, out, _ = cli_in_process(
        capsys,
        'push',
        '--run',
        run,
        '--repo-id',
        REPO_ID,
        '--dry-run',
        '--output-dir',
        tmp_path / 'hub',
    )
    assert code == 0
    card = ModelCard.load(tmp_path / 'hub' / 'README.md')
    scan_acc = json.loads((run / 'eval' / 'metrics.json').read_text())['scan']['accuracy']
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[('scan-level', 'accuracy')] == round(scan_acc, 4)
    assert (
        'Unverified' not in card.text
        and 'shares no scan with training or validation (checked' in card.text
    )
    assert 'reliability.png' in out


def test_the_population_maps_go_up_but_never_a_scans_montage(run_dir, tmp_path):
    _png(run_dir / 'eval' / 'cam' / 'population_maps.png')  # an average over a class's test slices
    _png(run_dir / 'eval' / 'cam' / 'TP_218391.png')  # one scan's slices: data, never uploaded
    files = hub.build_export_folder(run_dir, tmp_path / 'out', run_dir / 'eval' / 'metrics.json')
    assert 'population_maps.png' in {f.name for f in files}
    assert not any('218391' in f.name for f in (tmp_path / 'out').iterdir())
    text = (tmp_path / 'out' / 'README.md').read_text()
    assert '](population_maps.png)' in text and 'an average, no scan' in text
