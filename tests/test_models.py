"""The adni_convnext family behaves like any timm model."""

import json
import socket

import pytest
import timm
import torch

import adni_timm  # noqa: F401  registers the entrypoints
from adni_timm.models import (
    LABEL_NAMES,
    PRETRAINED_TAG,
    PUBLISHED_WEIGHTS,
    STOCK_ARCHITECTURES,
    stock_architecture,
)
from helpers import populate_hub_cache

FAMILY = sorted(STOCK_ARCHITECTURES)


def test_list_models_lists_the_family():
    assert timm.list_models('adni_*') == FAMILY


def test_list_pretrained_lists_only_published_weights():
    # nothing is published today: timm advertises no adni weights, yet still lists the five models
    assert PUBLISHED_WEIGHTS == {}
    assert timm.list_pretrained('adni*') == []
    assert timm.list_models('adni*', pretrained=True) == []
    assert timm.list_models('adni*') == FAMILY
    for name in FAMILY:
        cfg = timm.models.get_pretrained_cfg(f'{name}.{PRETRAINED_TAG}')
        assert not (cfg.hf_hub_id or cfg.url or cfg.file)


def test_tiny_is_convnext_t_with_one_channel_and_two_classes():
    model = timm.create_model('adni_convnext_tiny')
    assert model.stem[0].in_channels == 1
    assert model.num_classes == 2 and model.head.fc.out_features == 2
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 27.8e6) < 0.05e6
    assert [len(s.blocks) for s in model.stages] == [3, 3, 9, 3]
    assert model.num_features == 768


def test_pretrained_cfg_is_ours_not_imagenet():
    cfg = timm.create_model('adni_convnext_tiny').pretrained_cfg
    assert cfg['input_size'] == (1, 224, 224)
    assert cfg['num_classes'] == 2
    assert tuple(cfg['label_names']) == LABEL_NAMES == ('NC', 'AD')
    assert tuple(cfg['mean']) == (0.5,) and tuple(cfg['std']) == (0.5,)
    assert cfg['first_conv'] == 'stem.0' and cfg['classifier'] == 'head.fc'
    assert 'scratch' in cfg['description'] and 'ADNI' in cfg['description']
    assert cfg['tag'] == PRETRAINED_TAG and 'hf_hub_id' not in cfg


def test_resolved_data_config_is_grayscale_half_normalisation():
    model = timm.create_model('adni_convnext_atto')
    data_cfg = timm.data.resolve_data_config(model=model)
    assert data_cfg['input_size'] == (1, 224, 224)
    assert data_cfg['mean'] == (0.5,) and data_cfg['std'] == (0.5,)


@pytest.mark.parametrize('name', FAMILY)
def test_state_dict_matches_stock_timm(name):
    with torch.device('meta'):  # names and shapes only: no memory, no weight init (base: ~6 s)
        ours = timm.create_model(name).state_dict()
        stock = timm.create_model(stock_architecture(name), in_chans=1, num_classes=2).state_dict()
    assert list(ours) == list(stock)
    assert all(ours[k].shape == stock[k].shape for k in ours)


def test_our_weights_load_into_stock_timm_with_same_logits():
    torch.manual_seed(0)
    ours = timm.create_model('adni_convnext_atto').eval()
    stock = timm.create_model('convnext_atto', in_chans=1, num_classes=2).eval()
    stock.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(ours(x), stock(x))


def test_overrides_work():
    model = timm.create_model('adni_convnext_atto', num_classes=3, in_chans=3, drop_path_rate=0.2)
    assert model.num_classes == 3 and model.stem[0].in_channels == 3
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    drop_probs = [
        b.drop_path.drop_prob
        for s in model.stages
        for b in s.blocks
        if hasattr(b.drop_path, 'drop_prob')
    ]
    assert drop_probs and max(drop_probs) == pytest.approx(0.2)


def test_forward_features_head_and_pre_logits():
    model = timm.create_model('adni_convnext_atto').eval()
    x = torch.randn(2, 1, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 320, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 320)
    torch.testing.assert_close(model.forward_head(feats), model(x))


def test_reset_classifier_and_grad_checkpointing_backward():
    model = timm.create_model('adni_convnext_atto')
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.stages)
    out = model(torch.randn(2, 1, 64, 64))
    out.sum().backward()
    assert model.stem[0].weight.grad is not None and torch.isfinite(model.stem[0].weight.grad).all()


def test_features_only_with_feature_info():
    model = timm.create_model('adni_convnext_atto', features_only=True)
    assert model.feature_info.channels() == [40, 80, 160, 320]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    outs = model(torch.randn(1, 1, 64, 64))
    assert [o.shape[1] for o in outs] == [40, 80, 160, 320]


def test_channels_last_gives_same_output():
    model = timm.create_model('adni_convnext_atto').eval()
    x = torch.randn(2, 1, 64, 64)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(
        model(x.to(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-4
    )


def test_training_step_on_cpu_reduces_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = timm.create_model('adni_convnext_atto')
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_never_loads_imagenet_weights_by_default():
    a = timm.create_model('adni_convnext_atto')
    b = timm.create_model('adni_convnext_atto')
    # scratch init is random: two fresh models differ
    assert not torch.equal(a.stem[0].weight, b.stem[0].weight)


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails the test: a refusal must not try the Hub first."""

    def connect(*args, **kwargs):
        raise AssertionError('tried the network')

    monkeypatch.setattr(socket.socket, 'connect', connect)
    monkeypatch.setattr(socket, 'create_connection', connect)


@pytest.mark.parametrize('name', FAMILY)
@pytest.mark.parametrize(
    'kwargs', [{}, {'features_only': True}, {'pretrained_cfg': PRETRAINED_TAG}, {'in_chans': 3}]
)
def test_pretrained_without_a_weight_source_fails_at_once(name, kwargs, no_network, monkeypatch):
    def build(*args, **kwargs):
        raise AssertionError('built the model before refusing')  # convnext_base: 89 M parameters

    monkeypatch.setattr(adni_timm.models, 'build_model_with_cfg', build)
    with pytest.raises(RuntimeError) as err:
        timm.create_model(name, pretrained=True, **kwargs)
    message = str(err.value)
    assert message.startswith(f'{name}: no pretrained weights are published')
    assert "pretrained_cfg_overlay=dict(hf_hub_id='ORG/NAME')" in message
    assert 'local-dir:' in message and '\n' not in message


def test_pretrained_with_a_hub_overlay_loads_those_weights(tmp_path, no_network):
    # weights as adni_timm.export.format publishes them: stock convnext_atto, 3 channels, 2 classes
    torch.manual_seed(0)
    stock = timm.create_model('convnext_atto', in_chans=3, num_classes=2).eval()
    folder = tmp_path / 'export'
    timm.models.save_for_hf(stock, str(folder), model_config={'num_classes': 2})
    assert json.loads((folder / 'config.json').read_text())['architecture'] == 'convnext_atto'
    populate_hub_cache(tmp_path / 'cache', 'my-lab/atto', folder)

    model = timm.create_model(
        'adni_convnext_atto',
        pretrained=True,
        cache_dir=tmp_path / 'cache',
        pretrained_cfg_overlay=dict(hf_hub_id='my-lab/atto'),
    ).eval()
    assert model.stem[0].in_channels == 1 and model.pretrained_cfg['input_size'] == (1, 224, 224)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # timm sums the 3-channel stem: one channel = three equal channels
        torch.testing.assert_close(model(x), stock(x.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# .ci/timm_model_tests.py: the offline parts (the run itself needs PyPI; .ci/run does it)


@pytest.fixture(scope='module')
def timm_tests_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / '.ci' / 'timm_model_tests.py'
    spec = importlib.util.spec_from_file_location('timm_model_tests', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timm_tests_refuse_an_unknown_variant(timm_tests_script, capsys):
    with pytest.raises(SystemExit) as exit_:
        timm_tests_script.main(['adni_convnext_atto', 'adni_convnext_huge'])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert 'unknown variant adni_convnext_huge' in err and 'adni_convnext_tiny' in err


def test_timm_tests_count_outcomes_and_variants_that_ran_nothing(timm_tests_script, tmp_path):
    junit = tmp_path / 'junit.xml'
    junit.write_text(
        '<testsuites><testsuite>'
        '<testcase name="test_model_forward[1-adni_convnext_atto]"/>'
        '<testcase name="test_model_default_cfgs_non_std[1-adni_convnext_atto.adni_ad_nc]">'
        '<skipped/></testcase>'
        '<testcase name="test_model_backward[2-adni_convnext_tiny]"><failure/></testcase>'
        '<testcase name="test_model_forward_fx[1-adni_convnext_tiny]"><error/></testcase>'
        '</testsuite></testsuites>'
    )
    counts, silent = timm_tests_script.summarize(
        junit, ['adni_convnext_atto', 'adni_convnext_tiny', 'adni_convnext_nano']
    )
    assert counts == {'passed': 1, 'failed': 2, 'skipped': 1}
    assert silent == ['adni_convnext_nano']


def test_timm_tests_unpack_only_the_tests_of_the_installed_version(timm_tests_script, tmp_path):
    import io
    import tarfile

    sdist = tmp_path / 'timm-9.9.9.tar.gz'
    with tarfile.open(sdist, 'w:gz') as tar:
        for name in ('tests/test_models.py', 'tests/__init__.py', 'pyproject.toml', 'timm/x.py'):
            info = tarfile.TarInfo(f'timm-9.9.9/{name}')
            info.size = 2
            tar.addfile(info, io.BytesIO(b'#\n'))
    with pytest.raises(timm_tests_script.TimmTestsError, match='not the installed timm-1.0.31'):
        timm_tests_script.unpack_tests(sdist, '1.0.31', tmp_path / 'a')
    root = timm_tests_script.unpack_tests(sdist, '9.9.9', tmp_path / 'b')
    assert root == tmp_path / 'b' / 'timm-9.9.9'
    # no timm/ source folder: the tests import the installed timm our models register in
    files = sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())
    assert files == ['conftest.py', 'pyproject.toml', 'tests/__init__.py', 'tests/test_models.py']
    assert 'import adni_timm' in (root / 'conftest.py').read_text()
