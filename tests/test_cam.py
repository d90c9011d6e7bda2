"""Grad-CAM (adni_timm.cam): maps land where the evidence is, depend on the learned weights,
survive channels_last and export, and the report writes the right patients and population maps."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from adni_timm import cam, data, plots, synthetic

SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: a second intra-op thread buys little, and on a busy 2-core machine its
    # spin-waits made the training test 10x slower (measured 20 s vs 2 s)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _atto(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, SIZE, SIZE))
    )


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------- 1. the map finds the evidence


class _Gate(nn.Module):
    """NCHW stage: channel k is the (one-channel) input feature map kept only inside region k."""

    def __init__(self, masks: torch.Tensor):
        super().__init__()
        self.register_buffer('masks', masks)

    def forward(self, f):
        return f * self.masks


class _RegionNet(nn.Module):
    """Logit k = mean of stage channel k, only seeing region k: AD (index 1) reads one region."""

    def __init__(self, nc_region, ad_region):
        super().__init__()
        pool = nn.Conv2d(1, 1, 4, stride=4, bias=False)  # 64 -> 16: a 4x4 average
        nn.init.constant_(pool.weight, 1 / 16)
        masks = torch.zeros(2, 16, 16)
        masks[0][nc_region] = 1
        masks[1][ad_region] = 1
        self.stages = nn.Sequential(pool, _Gate(masks))

    def forward(self, x):
        return self.stages(x).mean(dim=(2, 3))


# regions on the 16x16 feature grid; one is the other's transpose, so a swapped H/W would show
TOP_RIGHT = (slice(0, 4), slice(10, 16))
BOTTOM_LEFT = (slice(10, 16), slice(0, 4))


def _pixels(region, scale: int = 4):
    return tuple(slice(s.start * scale, s.stop * scale) for s in region)


@pytest.mark.parametrize(
    'ad_region, nc_region', [(TOP_RIGHT, BOTTOM_LEFT), (BOTTOM_LEFT, TOP_RIGHT)]
)
def test_map_peaks_in_the_region_the_logit_reads(ad_region, nc_region):
    model = _RegionNet(nc_region, ad_region)
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) + 0.1
    assert cam.default_target_layer(model) is model.stages[-1]
    for target, region in ((1, ad_region), (0, nc_region)):
        maps = cam.gradcam(model, images, target)
        inside = np.zeros((SIZE, SIZE), bool)
        inside[_pixels(region)] = True
        for m in maps:
            row, col = np.unravel_index(m.argmax(), m.shape)
            assert inside[row, col], (target, row, col)
            # bilinear upsampling spills a little over the border, nothing more
            assert m[inside].sum() / m.sum() > 0.9


def test_all_zero_map_stays_zero():
    maps = cam.gradcam(_RegionNet(BOTTOM_LEFT, TOP_RIGHT), torch.zeros(2, 1, SIZE, SIZE), 1)
    assert np.isfinite(maps).all() and not maps.any()


def test_captum_matches_the_grad_cam_formula():
    """ReLU(sum_k mean(dy/dA_k) * A_k) at stages[-1], by hand, upsampled and max-normalised."""
    model = _atto().eval()
    images = _images(3)
    acts = {}
    hook = model.stages[-1].register_forward_hook(lambda m, i, out: acts.__setitem__('a', out))
    logits = model(images)
    hook.remove()
    a = acts['a']
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), a)
    expected = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    expected = nn.functional.interpolate(expected, (SIZE, SIZE), mode='bilinear')[:, 0].detach()
    expected = (expected / expected.amax(dim=(1, 2), keepdim=True)).numpy()
    np.testing.assert_allclose(cam.gradcam(model, images, 1), expected, atol=1e-5)


# ------------------------------------------------------------ 2. Adebayo et al. model randomisation


def _blob_data(n: int, seed: int):
    """Noise; AD (label 1, every other image) adds a bright blob in the top-right quadrant."""
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing='ij')
    blob = torch.exp(-((rows - 16) ** 2 + (cols - 48) ** 2) / (2 * 5.0**2))
    y = torch.arange(n) % 2
    noise = 0.3 * torch.randn(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return noise + 2 * y[:, None, None, None] * blob, y


def _top_right_share(maps: np.ndarray) -> float:
    return float(maps[:, : SIZE // 2, SIZE // 2 :].sum() / maps.sum())


def test_trained_map_differs_from_randomised_weights():
    model = _atto(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(20):
        x, y = _blob_data(8, seed=step)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = _blob_data(32, seed=1000)
    with torch.no_grad():
        assert (model.eval()(x).argmax(1) == y).float().mean() >= 0.9  # it learned the task
    x = x[y == 1]
    trained = cam.gradcam(model, x, 1)
    randomised = cam.gradcam(_atto(seed=1), x, 1)  # same architecture, freshly initialised weights
    corr = [np.corrcoef(t.ravel(), r.ravel())[0, 1] for t, r in zip(trained, randomised)]
    assert np.nanmean(corr) < 0.3, corr
    # the trained map points at the blob (a quadrant holds 1/4 of a flat map), the random one not
    assert _top_right_share(trained) > 0.5
    assert _top_right_share(randomised) < 0.35


# ------------------------------------------------------- 3. shapes, channels_last, exports, layers


def test_maps_shape_range_dtype_and_training_flag_restored():
    model = _atto().train()
    images = _images(5)
    maps = cam.gradcam(model, images, 1, batch_size=2)
    assert model.training
    assert maps.shape == (5, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    peaks = maps.reshape(5, -1).max(axis=1)
    assert np.all((peaks == 0) | np.isclose(peaks, 1))
    np.testing.assert_allclose(cam.gradcam(model, images, 1, batch_size=5), maps, atol=1e-5)


def test_channels_last_gives_the_same_maps():
    model = _atto()
    images = _images(3)
    expected = cam.gradcam(model, images, 1)
    model = model.to(memory_format=torch.channels_last)
    got = cam.gradcam(model, images.contiguous(memory_format=torch.channels_last), 1)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_caller_autocast_does_not_change_the_maps():
    # evaluation may call under bf16 autocast; the attribution runs in float32 regardless
    model, images = _atto(), _images(2)
    expected = cam.gradcam(model, images, 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = cam.gradcam(model, images, 1)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_works_inside_inference_mode():
    model, images = _atto(), _images(2)
    expected = cam.gradcam(model, images, 1)
    with torch.inference_mode():
        got = cam.gradcam(model, images.clone(), 1)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def _export(model, folder):
    try:
        from adni_timm.export import export_model
    except ImportError:  # the export format lived in hub.py before it moved
        from adni_timm.hub import export_model
    return export_model(model, folder)


def test_model_loaded_from_an_export_folder(tmp_path):
    model = _atto()
    _export(model, tmp_path / 'best')
    images = _images(3)
    expected = cam.gradcam(model, images, 1)
    # plain timm: the export may publish a 3-channel stem (grey repeated), or keep 1 channel
    loaded = timm.create_model(f'local-dir:{tmp_path / "best"}', pretrained=True)
    assert cam.default_target_layer(loaded) is loaded.stages[-1]
    channels = loaded.stem[0].in_channels
    np.testing.assert_allclose(
        cam.gradcam(loaded, images.repeat(1, channels, 1, 1), 1), expected, atol=1e-4
    )
    grey = timm.create_model(f'local-dir:{tmp_path / "best"}', pretrained=True, in_chans=1)
    np.testing.assert_allclose(cam.gradcam(grey, images, 1), expected, atol=1e-4)


def test_layer_choice_and_nhwc_layers_refused():
    torch.manual_seed(0)
    # stock ConvNeXt with conv_mlp=False: blocks run their norm and MLP on NHWC tensors
    model = timm.create_model('convnext_atto', in_chans=1, num_classes=2, conv_mlp=False)
    images = _images(2)
    np.testing.assert_allclose(
        cam.gradcam(model, images, 1, layer='stages.2'),
        cam.gradcam(model, images, 1, layer=model.stages[2]),
    )
    block = model.stages[-1].blocks[-1]
    with pytest.raises(ValueError, match='NHWC'):
        cam.gradcam(model, images, 1, layer=block.norm)
    with pytest.raises(ValueError, match='NHWC'):
        cam.gradcam(model, images, 1, layer=block.mlp)  # caught by its output shape
    with pytest.raises(ValueError, match='layer='):
        cam.default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2)))


# ---------------------------------------------------------------------- 4. patients and the report


def test_select_patients_most_confident_per_outcome():
    ids = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']
    y = [1, 1, 1, 0, 0, 0, 1, 0]
    p = [0.9, 0.6, 0.99, 0.1, 0.45, 0.7, 0.2, 0.95]
    assert cam.select_patients(ids, y, p, 0.5, 2) == {
        'TP': ['c', 'a'],
        'TN': ['d', 'e'],
        'FP': ['h', 'f'],
        'FN': ['g'],
    }
    # at threshold 0.4, 0.45 is a positive decision, farthest from 0.4 on the negative side is 0.1
    assert cam.select_patients(ids, y, p, 0.4, 1) == {
        'TP': ['c'],
        'TN': ['d'],
        'FP': ['h'],
        'FN': ['g'],
    }


def test_population_maps_are_class_means():
    maps = np.random.default_rng(0).random((5, 4, 4)).astype(np.float32)
    pop = cam.population_maps(maps, [1, 0, 1, 1, 0])
    np.testing.assert_allclose(pop['AD'], maps[[0, 2, 3]].mean(0))
    np.testing.assert_allclose(pop['NC'], maps[[1, 4]].mean(0))


@pytest.fixture(scope='module')
def test_slices(tmp_path_factory):
    out = synthetic.generate(
        tmp_path_factory.mktemp('syn') / 'data', train_patients=2, test_patients=2, slices=3, seed=0
    )
    return data.scan_split(out, 'test')


def _transform(model):
    return timm.data.create_transform(**timm.data.resolve_data_config(model=model))


def _record_montages(monkeypatch):
    calls = {}
    real = plots.plot_cam_montage

    def spy(images, maps, path, **kwargs):
        calls[path.name] = (images, maps, kwargs)
        return real(images, maps, path, **kwargs)

    monkeypatch.setattr(plots, 'plot_cam_montage', spy)
    return calls


def test_write_cam_report_labelled(test_slices, tmp_path, monkeypatch):
    slices = test_slices  # scan order: NC patients, then AD patients, slices in order
    patients = list(dict.fromkeys(s.patient for s in slices))
    assert len(patients) == 4 and len(slices) == 12
    nc0, nc1, ad0, ad1 = patients
    base = {nc0: 0.1, nc1: 0.8, ad0: 0.9, ad1: 0.3}  # TN, FP, TP, FN
    p = np.array([base[s.patient] + 0.05 * (s.slice_index % 3 - 1) for s in slices])
    model = _atto()
    transform = _transform(model)
    calls = _record_montages(monkeypatch)

    result = cam.write_cam_report(
        model, slices, p, 0.5, ('NC', 'AD'), tmp_path, 1, transform=transform, batch_size=5
    )

    cam_dir = tmp_path / 'cam'
    expected = {
        f'TP_{ad0}.png',
        f'TN_{nc0}.png',
        f'FP_{nc1}.png',
        f'FN_{ad1}.png',
        'population_maps.png',
        'population_maps.npz',
    }
    assert {f.name for f in cam_dir.iterdir()} == expected
    assert result['patients'] == {'TP': [ad0], 'TN': [nc0], 'FP': [nc1], 'FN': [ad1]}
    assert result['n_slices'] == 12 and result['layer'] == 'stages.3'

    # independently: every slice's map, then class means
    images = torch.stack([transform(data.read_image(s.path)) for s in slices])
    maps = cam.gradcam(model, images, 1)
    labels = np.array([s.label for s in slices])
    with np.load(cam_dir / 'population_maps.npz') as saved:
        for name, mean in cam.population_maps(maps, labels).items():
            np.testing.assert_allclose(saved[name], mean, atol=1e-5)
        assert int(saved['n_AD']) == 6 and int(saved['n_NC']) == 6

    # the TP montage shows that patient's slices, in slice order, with their maps and P(AD)
    tiles, tile_maps, kwargs = calls[f'TP_{ad0}.png']
    own = [i for i, s in enumerate(slices) if s.patient == ad0]
    own.sort(key=lambda i: slices[i].slice_index)
    np.testing.assert_allclose(tile_maps, maps[own], atol=1e-5)
    np.testing.assert_allclose(tiles, images[own, 0].numpy(), atol=1e-6)
    assert kwargs['tile_titles'] == [
        f'slice {slices[i].slice_index}\nP(AD) {p[i]:.2f}' for i in own
    ]
    assert kwargs['title'].startswith(f'TP: patient {ad0} (true AD, mean P(AD) 0.90 -> AD')


def test_write_cam_report_unlabelled(test_slices, tmp_path, monkeypatch):
    patients = list(dict.fromkeys(s.patient for s in test_slices))
    base = dict(zip(patients, (0.45, 0.05, 0.7, 0.98)))
    slices = [data.Slice(s.path, s.patient, -1, s.slice_index) for s in test_slices]
    # a file without a patient id stands alone
    loose = data.Slice(test_slices[0].path, 'loose', -1, None)
    p = np.array([base[s.patient] for s in slices] + [0.6])
    calls = _record_montages(monkeypatch)

    model = _atto()
    result = cam.write_cam_report(
        model,
        slices + [loose],
        p,
        0.5,
        ('NC', 'AD'),
        tmp_path,
        1,
        transform=_transform(model),
        labelled=False,
    )

    # n * 4 = 4 of the 5 "patients", most confident first; the least confident (0.45) is left out
    stem = test_slices[0].path.rsplit('/', 1)[-1].rsplit('.', 1)[0]
    order = [
        f'AD_{patients[3]}.png',
        f'NC_{patients[1]}.png',
        f'AD_{patients[2]}.png',
        f'AD_{stem}.png',
    ]
    assert list(calls) == order
    assert [p.rsplit('/', 1)[-1] for p in result['montages']] == order
    assert {f.name for f in (tmp_path / 'cam').iterdir()} == set(order)
    assert result['population_maps'] is None and result['n_slices'] == 10
    assert calls[f'AD_{stem}.png'][0].shape == (1, SIZE, SIZE)
