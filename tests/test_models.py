"""The adni_convnext family behaves like any timm model."""

import subprocess
import sys

import pytest
import timm
import torch

import adni_timm  # noqa: F401  registers the entrypoints
from adni_timm.models import LABEL_NAMES, STOCK_ARCHITECTURES, stock_architecture

FAMILY = sorted(STOCK_ARCHITECTURES)


def test_list_models_lists_the_family():
    assert timm.list_models('adni_*') == FAMILY


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
    assert cfg['hf_hub_id'].endswith('adni_convnext_tiny.adni_ad_nc')


def test_resolved_data_config_is_grayscale_half_normalisation():
    model = timm.create_model('adni_convnext_atto')
    data_cfg = timm.data.resolve_data_config(model=model)
    assert data_cfg['input_size'] == (1, 224, 224)
    assert data_cfg['mean'] == (0.5,) and data_cfg['std'] == (0.5,)


@pytest.mark.parametrize('name', FAMILY)
def test_state_dict_matches_stock_timm(name):
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


def test_pretrained_without_reachable_weights_is_a_clear_error():
    code = "import timm, adni_timm\ntimm.create_model('adni_convnext_atto', pretrained=True)\n"
    proc = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__('os').environ, 'HF_HUB_OFFLINE': '1'},
    )
    assert proc.returncode != 0
    assert 'RuntimeError' in proc.stderr
    assert 'pretrained_cfg_overlay=dict(hf_hub_id=' in proc.stderr
    assert 'local-dir:' in proc.stderr
