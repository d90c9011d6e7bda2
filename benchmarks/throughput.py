#!/usr/bin/env python
"""Training and inference throughput of adni-timm on the current device, in one run.

    python benchmarks/throughput.py          # GPU: ADNI-size SYNTHETIC set, 224 px, batch 128
    python benchmarks/throughput.py --quick  # CPU smoke test, under a minute

Measures (a) model-bound training img/s (random tensors on the device, train.py's
default precision and compile setting), (b) end-to-end training img/s through train.py's
real path (adni_timm.train.loop.train: its loader, cache, transforms and Accelerate loop)
with 16 and 4 loader workers, and with the data on the device (``data_on_device: true``:
no loader), (c) the reference project's loop (fp32, 3 channels, torchvision transforms,
plain PyTorch) on the same files and architecture (the stock timm twin of ``--model``: the
reference's own convnext_tiny for the default), (d) evaluate.py's inference img/s, (e) peak GPU
memory, (f) the projected wall time of a 100-epoch ADNI-size run and (g) the CPU seconds each
training-data path spends per 1,000 images outside the model (process CPU time of this
process and its loader workers, batches drawn without a model step). JSON keys of the
device path hold ``device``. Prints a table and writes JSON. All images are SYNTHETIC.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from adni_timm import data  # noqa: E402
from adni_timm.synthetic import slices as synthetic
from adni_timm.config import load_config  # noqa: E402
from adni_timm.data.note import DataNote  # noqa: E402
from adni_timm.inference import load_model, predict_slices  # noqa: E402
from adni_timm.models import STOCK_ARCHITECTURES  # noqa: E402
from adni_timm.run import RunRecord  # noqa: E402
from adni_timm.data.device import device_batches  # noqa: E402
from adni_timm.train.loop import create_model, make_accelerator, train  # noqa: E402

# fmt: off
# ADNI AD_NC: 10,400 + 11,120 train slices (520 + 556 scans), 4,460 + 4,540 test slices,
# 20 per scan
FULL = dict(train_subjects=538, test_subjects=225, slices=20, img_size=224, batch_size=128,
            workers=(16, 4), model_steps=30, ref_steps=40, epochs=2, inference_repeats=3,
            data_images=4096)
QUICK = dict(train_subjects=6, test_subjects=3, slices=8, img_size=64, batch_size=16,
             workers=(2, 0), model_steps=5, ref_steps=4, epochs=2, inference_repeats=1,
             data_images=256)
# fmt: on


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def model_bound(cfg, steps: int) -> dict:
    """(a): train steps on random tensors resident on the
    device; same model/precision/compile as train.py.
    """
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    model = create_model(cfg).to(device)
    if device.type == 'cuda' and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = timm.optim.create_optimizer_v2(
        model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    if cfg.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    x = torch.randn(cfg.batch_size, 1, cfg.img_size, cfg.img_size, device=device)
    if device.type == 'cuda' and cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (cfg.batch_size,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.smoothing)

    def step():
        with accelerator.autocast():
            loss = loss_fn(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(max(3, steps // 5)):  # warm-up (and compile)
        step()
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - t0
    out = {'img_per_s': steps * cfg.batch_size / elapsed, 'precision': accelerator.mixed_precision}
    if device.type == 'cuda':
        out['peak_mem_gib'] = torch.cuda.max_memory_allocated() / 2**30
    # Accelerate's forward patch keeps a reference cycle: drop the references (step() holds them
    # too, so rebind rather than del) and collect it before (b)
    model = optimizer = x = y = None
    accelerator.free_memory()
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return out


def end_to_end(cfg, data_dir: Path, workers: int, work: Path, on_device: bool = False) -> dict:
    """(b): train.py's own path for `epochs` epochs; the last epoch's training img/s (workers
    warm, cache built); ``on_device``: the same with the data on the device, no loader.
    """
    cfg.num_workers = 0 if on_device else workers
    cfg.data_on_device = 'true' if on_device else 'false'
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train(
        RunRecord.new(cfg, data_dir, DataNote('synthetic (benchmark)', synthetic=True)),
        work / ('run-device' if on_device else f'run-w{workers}'),
        overwrite=True,
    )
    total = time.perf_counter() - t0
    last = result.history[-1]
    out = {
        'img_per_s': last['train_img_per_s'],
        'epoch_time_s': last['epoch_time_s'],
        'run_total_s': total,
        'workers': 0 if on_device else workers,
        'data_on_device': on_device,
    }
    if torch.cuda.is_available():
        out['peak_mem_gib'] = torch.cuda.max_memory_allocated() / 2**30
    return out


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (the loader workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def data_cost(cfg, data_dir: Path, workers: int | None, images: int) -> dict:
    """(g): CPU seconds per 1,000 training images spent producing batches on the device, without
    a model step: train.py's DataLoader (its cache, timm transform, pinned copies) with
    ``workers`` workers, or (``workers=None``) the data-on-device batches. Timed after one warm-up
    batch (workers started); on CUDA the device path's cost is the host side of its kernels."""
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    model = create_model(cfg)
    train_tf, eval_tf = data.build_transforms(
        model, scale=cfg.scale, ratio=cfg.ratio, hflip=cfg.hflip,
        color_jitter=cfg.color_jitter, auto_augment=cfg.auto_augment, re_prob=cfg.re_prob,
    )  # fmt: skip
    slices = data.scan_split(data_dir, 'train')
    cache = data.preload(slices, num_workers=os.cpu_count() or 1)
    if workers is None:
        batches, _ = device_batches(
            'true', cache, slices, [], train_tf, eval_tf, batch_size=cfg.batch_size,
            seed=cfg.seed, device=device,
        )  # fmt: skip
    else:
        batches = data.create_loader(
            data.SliceDataset(slices, train_tf, cache), cfg.batch_size, shuffle=True,
            drop_last=True, num_workers=workers, pin_memory=device.type == 'cuda', seed=cfg.seed,
        )  # fmt: skip
    # one torch thread, as in each loader worker: on a shared CPU, idle OpenMP threads spin and
    # would bill the main-process paths for CPU time that does no work
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seen, t0, c0, epoch = 0, None, None, 0
    while seen < images:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if t0 is None:  # warm-up batch done: workers started, first kernels compiled
                sync(device)
                t0, c0 = time.perf_counter(), cpu_seconds()
                continue
            seen += len(x)
            if seen >= images:
                break
        epoch += 1
        if hasattr(batches, 'set_epoch'):
            batches.set_epoch(epoch)
    sync(device)
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
    torch.set_num_threads(threads)
    del batches
    gc.collect()
    return {
        'cpu_s_per_1000_img': 1000 * cpu / seen,
        'img_per_s': seen / wall,
        'images': seen,
        'path': 'device' if workers is None else f'loader, {workers} workers',
    }


def reference_loop(
    data_dir: Path, img_size: int, batch_size: int, workers: int, steps: int, model_name: str
) -> dict:
    """(c): the reference project's style: ImageFolder,
    torchvision transforms to 3 channels, fp32, NCHW.

    ``model_name`` is train.py's model; the loop trains its stock timm twin (3 channels), so that
    b / c compares the two loops on one architecture (convnext_tiny, the reference's, by default).
    """
    arch = STOCK_ARCHITECTURES.get(model_name, model_name)
    from torchvision import datasets, transforms

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    tf = transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=3),
            transforms.Resize((img_size, img_size)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    dataset = datasets.ImageFolder(str(data_dir / 'train'), transform=tf)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )
    model = timm.create_model(arch, num_classes=2).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    seen, t0 = 0, None
    it = iter(loader)
    for i in range(steps + 2):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the reference logged the loss every step
        if i == 1:  # skip the first two steps (worker start, cudnn autotune)
            sync(device)
            t0 = time.perf_counter()
        elif i > 1:
            seen += x.shape[0]
    sync(device)
    return {'img_per_s': seen / (time.perf_counter() - t0), 'workers': workers, 'model': arch}


def inference(run_dir: Path, data_dir: Path, batch_size: int, workers: int, repeats: int) -> dict:
    """(d): evaluate.py's prediction path (JPEG decode, eval
    transform, bf16 forward on CUDA) over the test split.

    One call over the split repeated ``repeats`` times, so that starting the loader workers is a
    small share of the timed pass, as it is in a real evaluation of ADNI's 9,000 test slices.
    """
    model = load_model(str(run_dir)).net
    slices = data.scan_split(data_dir, 'test')
    # bf16 where the GPU has it: the speed target; evaluate.py uses the run's own precision
    precision = 'auto'
    # warm-up
    predict_slices(
        model,
        slices[: batch_size * 2],
        batch_size=batch_size,
        num_workers=workers,
        precision=precision,
    )
    t0 = time.perf_counter()
    predict_slices(
        model, slices * repeats, batch_size=batch_size, num_workers=workers, precision=precision
    )
    elapsed = time.perf_counter() - t0
    return {'img_per_s': len(slices) * repeats / elapsed, 'slices': len(slices), 'repeats': repeats}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--quick', action='store_true', help='tiny CPU-sized run (smoke test)')
    parser.add_argument(
        '--data-dir', help='reuse an ADNI-layout folder instead of generating the synthetic set'
    )
    parser.add_argument(
        '--work-dir', default=None, help='where the synthetic set and scratch runs live'
    )
    parser.add_argument('--model', default='adni_convnext_tiny')
    parser.add_argument('--compile', action='store_true', help='torch.compile for (a) and (b)')
    parser.add_argument(
        '--workers',
        type=int,
        nargs=2,
        metavar=('MANY', 'FEW'),
        help='loader workers of the two loader paths (default: 16 4; --quick: 2 0)',
    )
    parser.add_argument('--img-size', type=int, help='input side (default: 224; --quick: 64)')
    parser.add_argument(
        '--only-data-cost',
        action='store_true',
        help='measure (g) only (the CPU cost of each data path), e.g. repeated side by side',
    )
    parser.add_argument(
        '--json', default=None, help='write the results here (default: WORK/throughput.json)'
    )
    args = parser.parse_args(argv)
    p = dict(QUICK if args.quick else FULL)
    if args.workers:
        p['workers'] = tuple(args.workers)
    if args.img_size:
        p['img_size'] = args.img_size
    work = Path(
        args.work_dir
        or Path(tempfile.gettempdir()) / f'adni-timm-bench{"-quick" if args.quick else ""}'
    )
    work.mkdir(parents=True, exist_ok=True)

    data_dir = Path(args.data_dir) if args.data_dir else work / 'AD_NC'
    t0 = time.perf_counter()
    if not (data_dir / 'train').is_dir():
        synthetic.generate(
            data_dir,
            p['train_subjects'],
            p['test_subjects'],
            slices=p['slices'],
            seed=0,
            workers=os.cpu_count() or 1,
        )
    gen_s = time.perf_counter() - t0
    n_train = len(data.scan_split(data_dir, 'train'))

    cfg = load_config(
        None,
        dict(
            model=args.model,
            img_size=p['img_size'],
            batch_size=p['batch_size'],
            epochs=p['epochs'],
            warmup_epochs=1,
            compile=args.compile,
        ),
    )
    results = {
        'device': torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or platform.machine(),
        'cpus': os.cpu_count(),
        'model': cfg.model,
        'img_size': cfg.img_size,
        'batch_size': cfg.batch_size,
        'compile': cfg.compile,
        'train_slices': n_train,
        'data_generation_s': gen_s,
        'versions': {
            'torch': str(torch.__version__),
            'timm': timm.__version__,
            'python': platform.python_version(),
        },
    }
    # (g) first: the CPU cost of each data path, nothing else running in this process
    for workers in p['workers']:
        results[f'g_data_cpu_w{workers}'] = data_cost(cfg, data_dir, workers, p['data_images'])
    results['g_data_cpu_device'] = data_cost(cfg, data_dir, None, p['data_images'])
    if args.only_data_cost:
        out = Path(args.json or work / 'throughput.json')
        out.write_text(json.dumps(results, indent=1))
        print(format_data_cost(results, p))
        return 0
    results['a_model_bound'] = model_bound(cfg, p['model_steps'])
    for workers in p['workers']:
        results[f'b_end_to_end_w{workers}'] = end_to_end(
            dataclasses.replace(cfg), data_dir, workers, work
        )
    results['b_end_to_end_device'] = end_to_end(
        dataclasses.replace(cfg), data_dir, 0, work, on_device=True
    )
    results['c_reference'] = reference_loop(
        data_dir, p['img_size'], p['batch_size'], p['workers'][0], p['ref_steps'], cfg.model
    )
    results['d_inference'] = inference(
        work / f'run-w{p["workers"][0]}',
        data_dir,
        p['batch_size'] * 2,
        p['workers'][0],
        p['inference_repeats'],
    )
    # (f) 100 epochs of the ADNI train split (80% train, 20% val) at the measured rates
    adni_train, adni_val = 21520 * 0.8, 21520 * 0.2
    b = results[f'b_end_to_end_w{p["workers"][0]}']['img_per_s']
    # live + EMA validation
    epoch_s = adni_train / b + 2 * adni_val / results['d_inference']['img_per_s']
    results['f_projected_100_epochs_min'] = 100 * epoch_s / 60
    # the device path's own last epoch (an ADNI-size epoch in the full run: train + live and EMA
    # validation, both on the device)
    results['f_projected_100_epochs_min_device'] = (
        100 * results['b_end_to_end_device']['epoch_time_s'] / 60
    )
    a = results['a_model_bound']['img_per_s']
    results['ratios'] = {
        **{f'b_w{w}_over_a': results[f'b_end_to_end_w{w}']['img_per_s'] / a for w in p['workers']},
        'b_device_over_a': results['b_end_to_end_device']['img_per_s'] / a,
        'b_over_c': b / results['c_reference']['img_per_s'],
    }
    out = Path(args.json or work / 'throughput.json')
    out.write_text(json.dumps(results, indent=1))
    print(format_table(results, p))
    print(f'\nJSON: {out}')
    return 0


def format_table(r: dict, p: dict) -> str:
    w_hi, w_lo = p['workers']
    rows = [
        ('device', r['device']),
        ('model / img / batch', f'{r["model"]} / {r["img_size"]} px / {r["batch_size"]}'),
        (
            '(a) model-bound train img/s',
            f'{r["a_model_bound"]["img_per_s"]:.0f} ({r["a_model_bound"]["precision"]})',
        ),
        (
            f'(b) end-to-end train img/s, {w_hi} workers',
            f'{r[f"b_end_to_end_w{w_hi}"]["img_per_s"]:.0f}',
        ),
        (
            f'(b) end-to-end train img/s, {w_lo} workers',
            f'{r[f"b_end_to_end_w{w_lo}"]["img_per_s"]:.0f}',
        ),
        (
            '(b) end-to-end train img/s, data on device',
            f'{r["b_end_to_end_device"]["img_per_s"]:.0f}',
        ),
        (f'(c) reference loop img/s, {w_hi} workers', f'{r["c_reference"]["img_per_s"]:.0f}'),
        ('(d) inference img/s (evaluate.py)', f'{r["d_inference"]["img_per_s"]:.0f}'),
        (
            '(e) peak GPU memory GiB',
            f'{r["a_model_bound"].get("peak_mem_gib", float("nan")):.1f} (a) / '
            f'{r[f"b_end_to_end_w{w_hi}"].get("peak_mem_gib", float("nan")):.1f} (b)',
        ),
        ('(f) projected 100 epochs, ADNI size', f'{r["f_projected_100_epochs_min"]:.1f} min'),
        (
            '(f) the same, data on device (its epoch)',
            f'{r["f_projected_100_epochs_min_device"]:.1f} min',
        ),
        (
            f'b(w{w_hi}) / a, b(w{w_lo}) / a, b(device) / a, b / c',
            f'{r["ratios"][f"b_w{w_hi}_over_a"]:.2f}, '
            f'{r["ratios"][f"b_w{w_lo}_over_a"]:.2f}, '
            f'{r["ratios"]["b_device_over_a"]:.2f}, '
            f'{r["ratios"]["b_over_c"]:.2f}',
        ),
        (
            'synthetic data generation',
            f'{r["data_generation_s"]:.0f} s for {r["train_slices"]} train slices',
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows) + '\n' + format_data_cost(r, p)


def format_data_cost(r: dict, p: dict) -> str:
    keys = [f'g_data_cpu_w{w}' for w in p['workers']] + ['g_data_cpu_device']
    rows = [
        (
            f'(g) data path CPU s / 1,000 img, {r[k]["path"]}',
            f'{r[k]["cpu_s_per_1000_img"]:.2f} ({r[k]["img_per_s"]:.0f} img/s without a model)',
        )
        for k in keys
    ]
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


if __name__ == '__main__':
    sys.exit(main())
