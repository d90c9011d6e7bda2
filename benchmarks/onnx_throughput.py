#!/usr/bin/env python
"""torch eager vs onnxruntime on CPU: images per second and how far the outputs differ.

    python benchmarks/onnx_throughput.py prepare WORK       # SYNTHETIC slices, a 1-epoch ConvNeXt-T
                                                            # run at 224 px, model.onnx beside it
    python benchmarks/onnx_throughput.py run WORK --backend torch        # evaluate.py's path
    python benchmarks/onnx_throughput.py run WORK --backend onnxruntime  # torch never imported
    python benchmarks/onnx_throughput.py compare WORK      # both on the same slices: differences

``run`` is one process doing what a user's process does: load the model, then decode, preprocess
and predict ``--images`` slices in batches. It prints the loop's img/s (after one warm-up batch)
and writes P(AD) per slice to ``--json``. Timing it as a whole process (``/usr/bin/time -v``,
several runs) adds the start-up each backend costs: importing torch + timm + adni-timm vs
onnxruntime. The torch backend is evaluate.py's own (``inference.predict_slices``: the 1-channel
model, fp32, its eval transform); the onnxruntime backend is ``adni_timm/export/onnx_runtime.py``
loaded as a standalone file (``OnnxClassifier``: numpy preprocessing, the published 3-channel
graph), so ``run --backend onnxruntime`` works in an environment without torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_FILE = ROOT / 'adni_timm' / 'export' / 'onnx_runtime.py'


def prepare(work: Path, model: str, img_size: int, test_subjects: int) -> None:
    """SYNTHETIC data, a 1-epoch run (realistic weights, not random ones), model.onnx."""
    sys.path.insert(0, str(ROOT))
    from adni_timm.run import locate
    from adni_timm.export.onnx import export_onnx
    from adni_timm.synthetic.slices import generate

    data_dir = work / 'AD_NC'
    if not data_dir.exists():
        generate(data_dir, train_subjects=6, test_subjects=test_subjects, slices=4, seed=0)
    run = work / 'run'
    if not (run / 'best').exists():
        args = f'--model {model} --img-size {img_size} --batch-size 8 --epochs 1 '
        args += '--warmup-epochs 0 --num-workers 0 --val-fraction 0.33'
        cmd = [sys.executable, str(ROOT / 'train.py'), '--data-dir', str(data_dir)]
        subprocess.run([*cmd, '--output-dir', str(run), *args.split()], check=True, cwd=ROOT)
    export_onnx(locate(run)[0])
    paths = sorted(str(p) for p in (data_dir / 'test').glob('*/*.jpeg'))
    (work / 'slices.txt').write_text('\n'.join(paths) + '\n')
    print(f'prepared {work}: {len(paths)} test slices, export {locate(run)[0]}')


def _slices(work: Path, n: int) -> list[str]:
    paths = (work / 'slices.txt').read_text().split()
    if n > len(paths):
        raise SystemExit(f'--images {n}: {work} has {len(paths)} slices; prepare more')
    return paths[:n]


def _export_dir(work: Path) -> Path:
    run = work / 'run'
    return run / 'final' if (run / 'final').is_dir() else run / 'best'


def _load_runtime():
    spec = importlib.util.spec_from_file_location('onnx_runtime', RUNTIME_FILE)
    module = sys.modules['onnx_runtime'] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_torch(work: Path, paths: list[str], batch_size: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    from adni_timm import data
    from adni_timm.inference import load_model, predict_slices

    model = load_model(work / 'run').net
    slices = [data.Slice(path=p, scan='x', label=0, slice_index=None) for p in paths]

    def predict(chunk):
        probs = predict_slices(model, chunk, batch_size=batch_size, num_workers=0)
        return probs[:, 1]

    return predict, slices


def run_onnx(work: Path, paths: list[str], batch_size: int, threads: int):
    runtime = _load_runtime()
    clf = runtime.OnnxClassifier(_export_dir(work), threads=threads)

    def predict(chunk):
        return clf.predict_images(chunk, batch_size=batch_size).probs[:, clf.positive]

    return predict, paths


def run(work: Path, backend: str, n: int, batch_size: int, threads: int, out: Path | None) -> None:
    t_start = time.perf_counter()
    paths = _slices(work, n)
    make = run_torch if backend == 'torch' else run_onnx
    predict, items = make(work, paths, batch_size, threads)
    loaded = time.perf_counter()
    predict(items[:batch_size])  # warm-up: first-call allocations, thread pools
    t0 = time.perf_counter()
    p_ad = predict(items)
    loop = time.perf_counter() - t0
    result = {
        'backend': backend,
        'images': n,
        'batch_size': batch_size,
        'threads': threads,
        'img_per_s': n / loop,
        'load_s': loaded - t_start,
        'torch_imported': 'torch' in sys.modules,
        'p_ad': [float(p) for p in p_ad],
    }
    print(
        f'{backend}: {result["img_per_s"]:.2f} img/s over {n} slices (batch {batch_size}, '
        f'{threads} threads); start-up + load {result["load_s"]:.1f} s; '
        f'torch imported: {result["torch_imported"]}'
    )
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + '\n')


def compare(work: Path, n: int, batch_size: int, threads: int) -> None:
    """P(AD) through both backends' own paths, and the logits of the same preprocessed batch."""
    import numpy as np
    import torch

    paths = _slices(work, n)
    predict_t, items_t = run_torch(work, paths, batch_size, threads)
    predict_o, items_o = run_onnx(work, paths, batch_size, threads)
    a, b = np.asarray(predict_t(items_t)), np.asarray(predict_o(items_o))
    diff = np.abs(a - b)
    relative = (diff / np.maximum(np.abs(a), 1e-12)).max()
    print(
        f'{n} slices: max |P(AD) torch - onnxruntime| = {diff.max():.2e}, max relative '
        f'{relative:.2e}; P(AD) range {a.min():.3f}..{a.max():.3f}'
    )
    from adni_timm import data
    from adni_timm.inference import load_model

    model = load_model(work / 'run').net
    _, eval_tf = data.build_transforms(model)
    clf = _load_runtime().OnnxClassifier(_export_dir(work), threads=threads)
    with torch.inference_mode():
        want = model(torch.stack([eval_tf(data.read_image(p)) for p in paths])).numpy()
    got = clf.run(clf.preprocess(paths))[0]
    print(
        f'logits: max |torch - onnxruntime| = {np.abs(want - got).max():.2e} '
        f'(logits span {want.min():.2f}..{want.max():.2f})'
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog='onnx_throughput.py',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('prepare', help='synthetic slices, a 1-epoch run and its model.onnx')
    p.add_argument('work', type=Path)
    p.add_argument('--model', default='adni_convnext_tiny')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument(  # --test-patients: its name before scans and subjects were told apart
        '--test-subjects',
        '--test-patients',
        dest='test_subjects',
        type=int,
        default=10,
        help='test subjects per class (one scan each, 4 slices)',
    )
    for name in ('run', 'compare'):
        p = sub.add_parser(name)
        p.add_argument('work', type=Path)
        if name == 'run':
            p.add_argument('--backend', choices=('torch', 'onnxruntime'), required=True)
            p.add_argument('--json', type=Path, default=None, help='write the result here')
        p.add_argument('--images', type=int, default=48)
        p.add_argument('--batch-size', type=int, default=8)
        p.add_argument('--threads', type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if args.command == 'prepare':
        prepare(args.work, args.model, args.img_size, args.test_subjects)
    elif args.command == 'run':
        run(args.work, args.backend, args.images, args.batch_size, args.threads, args.json)
    else:
        compare(args.work, args.images, args.batch_size, args.threads)
    return 0


if __name__ == '__main__':
    sys.exit(main())
