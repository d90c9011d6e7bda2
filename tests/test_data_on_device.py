"""Data on the device (adni_timm.data.device): the batched twin gives the CPU transform's image,
draws crops by timm's rule, and its batches shard and gather like an Accelerate loader."""

import json
import math
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from timm.data.transforms import RandomResizedCropAndInterpolation

from adni_timm import data
from adni_timm.data.device import (
    CropParams,
    DeviceBatches,
    DeviceTransform,
    UnsupportedTransform,
)
from adni_timm.config import load_config
from adni_timm.train.loop import create_model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| over the images in [0, 1] (the normalised values cross 0 at mid-grey)."""
    a, b = a * 0.5 + 0.5, b * 0.5 + 0.5  # our models normalise with mean = std = 0.5
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope='module')
def slices_u8(tiny_data):
    paths = [s.path for s in data.scan_split(tiny_data, 'train')][::7][:6]
    pils = [data.read_image(p) for p in paths]
    return pils, torch.from_numpy(np.stack([np.asarray(p) for p in pils]))


def transforms(img_size=64, **overrides):
    cfg = load_config(None, dict(model='adni_convnext_atto', img_size=img_size))
    args = dict(
        scale=cfg.scale,
        ratio=cfg.ratio,
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        re_prob=cfg.re_prob,
    )
    args.update(overrides)
    return data.build_transforms(create_model(cfg), **args)


@pytest.mark.parametrize('img_size', [64, 224])
def test_eval_twin_gives_timms_eval_image(slices_u8, img_size):
    pils, u8 = slices_u8
    _, eval_tf = transforms(img_size)
    cpu = torch.stack([eval_tf(p) for p in pils])
    device = DeviceTransform.from_timm(eval_tf)(u8)
    assert device.shape == cpu.shape == (len(pils), 1, img_size, img_size)
    assert relative_error(device, cpu) < 5e-3  # PIL rounds to uint8; the twin does not
    # within one grey level anywhere: not only on average
    assert float((device - cpu).abs().max()) <= 2 / 255 * 1.01


def test_identity_crop_gives_the_cpu_training_image(slices_u8):
    pils, u8 = slices_u8
    h, w = u8.shape[1:]
    # a crop that can only be the whole slice, no flip, jitter or erasing: deterministic on the CPU
    train_tf, _ = transforms(
        64, scale=(1.0, 1.0), ratio=(w / h, w / h), hflip=0.0, color_jitter=0.0, re_prob=0.0
    )
    twin = DeviceTransform.from_timm(train_tf)
    cpu = torch.stack([train_tf(p) for p in pils])
    generator = torch.Generator().manual_seed(0)
    params = twin.sample(len(pils), h, w, generator)
    assert params.top.tolist() == params.left.tolist() == [0] * len(pils)
    assert params.height.tolist() == [h] * len(pils) and params.width.tolist() == [w] * len(pils)
    assert relative_error(twin.apply(u8, params), cpu) < 5e-3


def _pil_reference(pil, params: CropParams, k: int, size: int):
    """What timm's train transform does to one image for the given parameters (torchvision's
    functional ops on PIL, as RandomResizedCropAndInterpolation and ColorJitter call them)."""
    box = [int(getattr(params, name)[k]) for name in ('top', 'left', 'height', 'width')]
    im = F.resized_crop(pil, *box, [size, size], F.InterpolationMode.BILINEAR)
    if params.flip[k]:
        im = F.hflip(im)
    b, c = float(params.brightness[k]), float(params.contrast[k])
    if params.brightness_first[k]:
        im = F.adjust_contrast(F.adjust_brightness(im, b), c)
    else:
        im = F.adjust_brightness(F.adjust_contrast(im, c), b)
    return F.normalize(F.to_tensor(im), [0.5], [0.5])


@pytest.mark.parametrize('img_size', [64, 224])  # shrinking (antialiased) and enlarging crops
def test_given_crop_box_flip_and_jitter_give_the_pil_image(slices_u8, img_size):
    pils, u8 = slices_u8
    train_tf, _ = transforms(img_size, re_prob=0.0)
    twin = DeviceTransform.from_timm(train_tf)
    n = len(pils)

    def t(values):
        return torch.tensor(values[:n], dtype=torch.float32)

    params = CropParams(
        top=t([0, 10, 5, 20, 0, 33]),
        left=t([0, 3, 30, 7, 50, 1]),
        height=t([240, 200, 220, 210, 190, 180]),
        width=t([256, 210, 200, 230, 180, 200]),
        flip=torch.tensor([False, True, False, True, True, False][:n]),
        brightness=t([1.0, 1.1, 0.9, 1.05, 0.92, 1.08]),
        contrast=t([1.0, 0.9, 1.1, 1.08, 0.95, 0.91]),
        brightness_first=torch.tensor([True, False, True, False, False, True][:n]),
    )
    device = twin.apply(u8, params)
    for k, pil in enumerate(pils):
        cpu = _pil_reference(pil, params, k, img_size)
        assert relative_error(device[k], cpu) < 1e-2, k
    # a flip really flips: the unflipped image differs
    unflipped = twin.apply(u8, CropParams(**{**params.__dict__, 'flip': ~params.flip}))
    assert relative_error(unflipped[1], _pil_reference(pils[1], params, 1, img_size)) > 5e-2


@pytest.mark.parametrize('scale, ratio', [((0.7, 1.0), (0.9, 1.1)), ((0.08, 1.0), (3 / 4, 4 / 3))])
def test_crop_areas_and_ratios_stay_in_the_configured_ranges(scale, ratio):
    height, width, n = 240, 256, 20_000
    twin = DeviceTransform((64, 64), F.InterpolationMode.BILINEAR, [0.5], [0.5],
                           random_crop=(scale, ratio))  # fmt: skip
    p = twin.sample(n, height, width, torch.Generator().manual_seed(1))
    h, w = p.height, p.width
    assert bool((p.top >= 0).all() and (p.left >= 0).all())
    assert bool((p.top + h <= height).all() and (p.left + w <= width).all())
    # rounding each side to whole pixels moves the area and the ratio by at most half a pixel
    slack = 0.5 / h + 0.5 / w
    area = h * w / (height * width)
    assert bool((area >= scale[0] * (1 - 2 * slack)).all()), float(area.min())
    assert bool((area <= scale[1] * (1 + 2 * slack)).all()), float(area.max())
    assert bool(
        (w / h >= ratio[0] * (1 - 2 * slack)).all() and (w / h <= ratio[1] * (1 + 2 * slack)).all()
    )
    # the same law as timm's sampler: compare the means with timm's own get_params
    random.seed(0)
    img = F.to_pil_image(torch.zeros(1, height, width))
    ref = np.array([
        RandomResizedCropAndInterpolation.get_params(img, scale, ratio) for _ in range(n)
    ])  # fmt: skip
    ref_area = ref[:, 2] * ref[:, 3] / (height * width)
    assert abs(
        float(area.mean()) - ref_area.mean()
    ) < 0.01 * ref_area.mean() + 3 * ref_area.std() / math.sqrt(n)
    ref_ratio = ref[:, 3] / ref[:, 2]
    assert abs(float((w / h).mean()) - ref_ratio.mean()) < 0.01 * ref_ratio.mean()
    # and every position inside the slice is drawn: left edges spread over the free room
    assert float(p.left.max()) >= 0.9 * float((width - w).max())


def test_flip_and_jitter_draws_follow_the_configuration():
    twin = DeviceTransform((64, 64), F.InterpolationMode.BILINEAR, [0.5], [0.5],
                           random_crop=((0.7, 1.0), (0.9, 1.1)), hflip=0.5,
                           brightness=(0.9, 1.1), contrast=(0.8, 1.2))  # fmt: skip
    p = twin.sample(10_000, 240, 256, torch.Generator().manual_seed(2))
    assert 0.47 < float(p.flip.float().mean()) < 0.53
    assert 0.47 < float(p.brightness_first.float().mean()) < 0.53
    assert 0.9 <= float(p.brightness.min()) and float(p.brightness.max()) <= 1.1
    assert 0.8 <= float(p.contrast.min()) and float(p.contrast.max()) <= 1.2
    assert float(p.contrast.max()) > 1.19 and float(p.contrast.min()) < 0.81


def test_random_erasing_is_timms_and_erases_at_its_rate(slices_u8):
    _, u8 = slices_u8
    train_tf, _ = transforms(64, re_prob=1.0, color_jitter=0.0, hflip=0.0)
    twin = DeviceTransform.from_timm(train_tf)
    timms = next(op for op in train_tf.transforms if 'Erasing' in type(op).__name__)
    assert type(twin.erasing) is type(timms) and twin.erasing.__dict__ == timms.__dict__
    random.seed(0)
    out = twin(u8, torch.Generator().manual_seed(0))
    # const mode: the erased box holds 0 (mid-grey after normalisation), a rectangle per slice
    for k in range(len(u8)):
        assert int((out[k, 0] == 0).sum()) >= 0.02 * 64 * 64 * 0.5


def test_ops_without_a_twin_are_refused_by_name():
    train_tf, _ = transforms(64, auto_augment='rand-m9-mstd0.5-inc1')
    with pytest.raises(UnsupportedTransform, match='RandAugment'):
        DeviceTransform.from_timm(train_tf)


def test_training_batches_shard_a_seeded_shuffle_like_distributed_sampler():
    n, batch = 50, 4
    images = torch.arange(n, dtype=torch.uint8)[:, None, None].expand(n, 8, 8).contiguous()
    labels = torch.arange(n)

    def epoch(process, seed=3, epoch=0, processes=2):
        b = DeviceBatches(images, labels, _IdentityTwin(), batch, shuffle=True, seed=seed,
                          num_processes=processes, process_index=process)  # fmt: skip
        b.set_epoch(epoch)
        return [y for _, y in b], len(b)

    (p0, n0), (p1, n1) = epoch(0), epoch(1)
    assert n0 == n1 == len(p0) == len(p1) == 25 // batch  # ceil(50 / 2) slices per process
    seen0, seen1 = torch.cat(p0).tolist(), torch.cat(p1).tolist()
    assert not set(seen0) & set(seen1)  # disjoint shards
    assert all(len(y) == batch for y in p0 + p1)  # full batches only
    assert torch.cat(epoch(0)[0]).tolist() == seen0  # seeded: the same order again
    assert torch.cat(epoch(0, epoch=1)[0]).tolist() != seen0  # a new order each epoch
    assert torch.cat(epoch(0, seed=4)[0]).tolist() != seen0
    whole = torch.cat(epoch(0, processes=1)[0]).tolist()
    assert sorted(whole) == sorted(set(whole)) and len(whole) == n // batch * batch


@pytest.mark.parametrize('n, batch, processes', [(23, 4, 2), (24, 4, 2), (5, 4, 3), (23, 5, 1)])
def test_validation_batches_gather_to_every_slice_once_in_order(n, batch, processes):
    images = torch.zeros(n, 8, 8, dtype=torch.uint8)
    labels = torch.arange(n)
    loaders = [
        DeviceBatches(
            images,
            labels,
            _IdentityTwin(),
            batch,
            shuffle=False,
            num_processes=processes,
            process_index=r,
        )  # fmt: skip
        for r in range(processes)
    ]
    steps = [list(loader) for loader in loaders]
    assert len({len(s) for s in steps}) == 1 and len(steps[0]) == len(loaders[0])
    gathered = []
    for step in zip(*steps):  # what accelerator.gather concatenates, process by process
        gathered.append(torch.cat([y for _, y in step]))
    remainder = loaders[0].remainder  # gather_for_metrics drops the padding of the last step
    if remainder > 0:
        gathered[-1] = gathered[-1][:remainder]
    assert torch.cat(gathered).tolist() == list(range(n))


def test_validation_through_predict_loader_counts_every_slice_once(slices_u8):
    from accelerate import Accelerator

    from adni_timm.inference import predict_loader

    _, u8 = slices_u8
    _, eval_tf = transforms(64)
    images = u8.repeat(4, 1, 1)[:23]
    labels = torch.arange(23) % 2
    loader = DeviceBatches(images, labels, DeviceTransform.from_timm(eval_tf), 5, shuffle=False)
    model = create_model(load_config(None, dict(model='adni_convnext_atto', img_size=64)))
    probs, losses = predict_loader(
        model, loader, device=torch.device('cpu'), accelerator=Accelerator(cpu=True),
        with_loss=True,
    )  # fmt: skip
    assert probs.shape == (23, 2) and losses.shape == (23,)
    np.testing.assert_allclose(probs[:6], probs[6:12], rtol=1e-5)  # the same slices again


def test_auto_falls_back_with_one_log_line_and_follows_the_other_processes(
    tiny_data, caplog, monkeypatch
):
    import logging

    from adni_timm.data import device

    slices = data.scan_split(tiny_data, 'train')
    cache = data.preload(slices)
    cpu = torch.device('cpu')
    caplog.set_level(logging.INFO, logger=device.__name__)
    votes = []

    def vote(ok):
        votes.append(ok)
        return ok

    # an op without a twin: off, said once with its name, and this process votes no
    train_tf, eval_tf = transforms(64, auto_augment='rand-m9-mstd0.5-inc1')
    out = device.device_batches('auto', cache, slices, [], train_tf, eval_tf, batch_size=8,
                                seed=0, device=cpu, agree=vote)  # fmt: skip
    said = [r.getMessage() for r in caplog.records if 'data on device' in r.getMessage()]
    assert out is None and votes == [False]
    assert len(said) == 1 and 'RandAugment' in said[0] and 'DataLoader' in said[0]
    # it would fit here, but another process cannot hold it: every process stays on the loader
    monkeypatch.setattr(device, 'device_cache_fits', lambda nbytes, dev: (True, 'fits'))
    train_tf, eval_tf = transforms(64)
    out = device.device_batches('auto', cache, slices, [], train_tf, eval_tf, batch_size=8,
                                seed=0, device=cpu, agree=lambda ok: False)  # fmt: skip
    assert out is None
    out = device.device_batches('auto', cache, slices, [], train_tf, eval_tf, batch_size=8,
                                seed=0, device=cpu, agree=vote)  # fmt: skip
    assert out is not None and votes[-1] is True


class _IdentityTwin:
    """A stand-in transform: the batch as it is (the tests above look at indices)."""

    is_training = False

    def __call__(self, images, generator=None):
        return images


@pytest.mark.gpu
def test_the_twin_gives_the_same_images_on_cuda_as_on_the_cpu(slices_u8):
    _, u8 = slices_u8
    train_tf, eval_tf = transforms(224, re_prob=0.0)
    twin = DeviceTransform.from_timm(train_tf)
    params = twin.sample(len(u8), *u8.shape[1:], torch.Generator().manual_seed(0))
    cuda = CropParams(**{k: v.cuda() for k, v in params.__dict__.items()})
    on_gpu = twin.apply(u8.cuda(), cuda).cpu()
    assert relative_error(on_gpu, twin.apply(u8, params)) < 1e-3
    eval_twin = DeviceTransform.from_timm(eval_tf)
    assert relative_error(eval_twin(u8.cuda()).cpu(), eval_twin(u8)) < 1e-3


@pytest.mark.gpu
def test_auto_puts_a_small_cache_on_cuda(tiny_data):
    from adni_timm.data.device import device_batches

    slices = data.scan_split(tiny_data, 'train')
    train_tf, eval_tf = transforms(64)
    batches = device_batches(
        'auto', data.preload(slices), slices[:30], slices[30:], train_tf, eval_tf,
        batch_size=8, seed=0, device=torch.device('cuda'),
    )  # fmt: skip
    assert batches is not None
    images, labels = next(iter(batches[0]))
    assert images.is_cuda and labels.is_cuda and images.shape == (8, 1, 64, 64)


# ------------------------------------------------------------------------ training with it


@pytest.fixture(scope='module')
def demo_like(tmp_path_factory):
    """SYNTHETIC, the demo's difficulty: 8 train + 10 test scans per class, 6 slices each."""
    from adni_timm.synthetic.slices import generate

    return generate(
        tmp_path_factory.mktemp('demo-like') / 'AD_NC', 8, 10, slices=6, seed=1, difficulty='demo'
    )


@pytest.mark.slow
def test_a_run_with_data_on_device_learns_like_the_loader_path(demo_like, tmp_path):
    from helpers import run_train

    # no validation split: both runs keep their last epoch, so the test AUCs compare the two
    # data paths, not which epoch a 4-scan validation happened to pick; 32 px: test AUC 1.0 on
    # both paths, as at 64 px, for a quarter of the model's work
    recipe = (
        '--model adni_convnext_atto --img-size 32 --batch-size 16 --epochs 5 --warmup-epochs 1 '
        '--num-workers 0 --val-fraction 0 --lr 2e-3 --eval-test --seed 0'
    ).split()
    auc = {}
    for setting in ('true', 'false'):
        run = tmp_path / setting
        proc = run_train(
            '--data-dir', demo_like, '--output-dir', run, *recipe, '--data-on-device', setting,
            timeout=900,
        )  # fmt: skip
        said = 'data on device: the slice cache' in proc.stdout + proc.stderr
        assert said == (setting == 'true')
        history = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
        assert history[-1]['train_loss'] < history[0]['train_loss']
        auc[setting] = json.loads((run / 'eval/metrics.json').read_text())['scan']['auc']
    assert auc['true'] >= 0.9, auc  # it learned the task
    assert abs(auc['true'] - auc['false']) <= 0.1, auc  # as well as the loader path


def test_data_on_device_true_refuses_an_auto_augment_policy(tiny_data, tmp_path, capsys):
    from helpers import TINY, train_in_process

    code, _, err = train_in_process(
        capsys, '--data-dir', tiny_data, '--output-dir', tmp_path / 'run', *TINY,
        '--data-on-device', 'true', '--auto-augment', 'rand-m9-mstd0.5-inc1',
    )  # fmt: skip
    assert code == 2
    assert 'data_on_device' in err and 'auto-augment' in err
    assert not (tmp_path / 'run').exists()  # refused before any work


@pytest.mark.slow
def test_two_processes_draw_their_own_shards_and_count_each_val_slice_once(tiny_data, tmp_path):
    from helpers import ROOT, TINY, accelerate_launch, with_option

    probe, run = tmp_path / 'probe', tmp_path / 'run'
    probe.mkdir()
    args = [
        '--data-dir', tiny_data, '--output-dir', run,
        *with_option(TINY, '--batch-size', '3'), '--data-on-device', 'true',
    ]  # fmt: skip
    env = {'ACCELERATE_USE_CPU': '1', 'ADNI_TIMM_PROBE_DIR': str(probe), 'OMP_NUM_THREADS': '1'}
    proc = accelerate_launch(ROOT / 'tests/ddp_probe.py', *args, port=29523, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((probe / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert ranks[0]['weights_sha256'] == ranks[1]['weights_sha256']  # one model, kept in sync
    assert ranks[0]['val_slices'] == [16, 16]  # 16 validation slices, each counted once
    assert (proc.stdout + proc.stderr).count('data on device: the slice cache') == 1
