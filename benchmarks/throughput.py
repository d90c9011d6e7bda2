#!/usr/bin/env python
"""Training and inference throughput of adni-timm on the current device, in one run.

    python benchmarks/throughput.py          # GPU: ADNI-size SYNTHETIC set, 224 px, batch 128
    python benchmarks/throughput.py --quick  # CPU smoke test, under a minute

Measures (a) model-bound training img/s (random tensors on the device, train.py's
default precision and compile setting), (b) end-to-end training img/s through train.py's
real path (adni_timm.train.loop.train: its loader, cache, transforms and Accelerate loop)
with 16 and 4 loader workers, (c) the reference project's loop (fp32, 3 channels,
torchvision transforms, plain PyTorch) on the same files, (d) evaluate.py's inference
img/s, (e) peak GPU memory and (f) the projected wall time of a 100-epoch ADNI-size run.
Prints a table and writes JSON. All images are SYNTHETIC (adni_timm.synthetic).
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
from adni_timm.run import RunRecord  # noqa: E402
from adni_timm.train.loop import create_model, make_accelerator, train  # noqa: E402

# fmt: off
# ADNI AD_NC: 10,400 + 11,120 train slices (520 + 556 scans), 4,460 + 4,540 test slices,
# 20 per scan
FULL = dict(train_patients=538, test_patients=225, slices=20, img_size=224, batch_size=128,
            workers=(16, 4), model_steps=30, ref_steps=40, epochs=2, inference_repeats=3)
QUICK = dict(train_patients=6, test_patients=3, slices=8, img_size=64, batch_size=16,
             workers=(2, 0), model_steps=5, ref_steps=4, epochs=2, inference_repeats=1)
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


def end_to_end(cfg, data_dir: Path, workers: int, work: Path) -> dict:
    """(b): train.py's own path for `epochs` epochs; the
    last epoch's training img/s (workers warm, cache built).
    """
    cfg.num_workers = workers
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train(
        RunRecord.new(cfg, data_dir, DataNote('synthetic (benchmark)', synthetic=True)),
        work / f'run-w{workers}',
        overwrite=True,
    )
    total = time.perf_counter() - t0
    last = result.history[-1]
    out = {
        'img_per_s': last['train_img_per_s'],
        'epoch_time_s': last['epoch_time_s'],
        'run_total_s': total,
        'workers': workers,
    }
    if torch.cuda.is_available():
        out['peak_mem_gib'] = torch.cuda.max_memory_allocated() / 2**30
    return out


def reference_loop(
    data_dir: Path, img_size: int, batch_size: int, workers: int, steps: int
) -> dict:
    """(c): the reference project's style: ImageFolder,
    torchvision transforms to 3 channels, fp32, NCHW.
    """
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
    model = timm.create_model('convnext_tiny', num_classes=2).to(device)
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
    return {'img_per_s': seen / (time.perf_counter() - t0), 'workers': workers}


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
        '--json', default=None, help='write the results here (default: WORK/throughput.json)'
    )
    args = parser.parse_args(argv)
    p = QUICK if args.quick else FULL
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
            p['train_patients'],
            p['test_patients'],
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
    results['a_model_bound'] = model_bound(cfg, p['model_steps'])
    for workers in p['workers']:
        results[f'b_end_to_end_w{workers}'] = end_to_end(
            dataclasses.replace(cfg), data_dir, workers, work
        )
    results['c_reference'] = reference_loop(
        data_dir, p['img_size'], p['batch_size'], p['workers'][0], p['ref_steps']
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
    a = results['a_model_bound']['img_per_s']
    results['ratios'] = {
        **{f'b_w{w}_over_a': results[f'b_end_to_end_w{w}']['img_per_s'] / a for w in p['workers']},
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
        (f'(c) reference loop img/s, {w_hi} workers', f'{r["c_reference"]["img_per_s"]:.0f}'),
        ('(d) inference img/s (evaluate.py)', f'{r["d_inference"]["img_per_s"]:.0f}'),
        (
            '(e) peak GPU memory GiB',
            f'{r["a_model_bound"].get("peak_mem_gib", float("nan")):.1f} (a) / '
            f'{r[f"b_end_to_end_w{w_hi}"].get("peak_mem_gib", float("nan")):.1f} (b)',
        ),
        ('(f) projected 100 epochs, ADNI size', f'{r["f_projected_100_epochs_min"]:.1f} min'),
        (
            f'b(w{w_hi}) / a, b(w{w_lo}) / a, b / c',
            f'{r["ratios"][f"b_w{w_hi}_over_a"]:.2f}, '
            f'{r["ratios"][f"b_w{w_lo}_over_a"]:.2f}, '
            f'{r["ratios"]["b_over_c"]:.2f}',
        ),
        (
            'synthetic data generation',
            f'{r["data_generation_s"]:.0f} s for {r["train_slices"]} train slices',
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


if __name__ == '__main__':
    sys.exit(main())
