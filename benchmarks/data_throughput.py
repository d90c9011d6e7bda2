"""Data-side numbers on SYNTHETIC ADNI-layout data:
generator speed, loader throughput, task difficulty.

    python benchmarks/data_throughput.py [--work-dir DIR] [--quick]

1. generator: slices/s on one core (render + JPEG write);
2. loader: img/s of one loader worker (num_workers=0: decode + timm train transform + collate) at
   224 and 64 px, reading JPEGs from disk vs from the SliceCache, plus the preload time;
3. difficulty: logistic regression on 32x32 downsampled pixels (scikit-learn), scan-level test
   accuracy (mean probability over a scan's slices), for the 'default' difficulty
   (100 train / 50 test scans per class) and for the demo set of ``train.py --demo``; and the
   ceiling: the accuracy of thresholding each scan's true atrophy severity.
Prints a Markdown table (docs/DATA.md quotes it).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import adni_timm  # noqa: F401  (registers the models)
from adni_timm import data
from adni_timm.synthetic import slices as synthetic


def generator_speed(out: Path, scans: int) -> float:
    start = time.perf_counter()
    synthetic.generate(out, scans, 0, slices=20, seed=0)
    return 2 * scans * 20 / (time.perf_counter() - start)


def loader_speed(slices, img_size: int, cache, augment: dict, batch_size: int = 32) -> float:
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, img_size, img_size))
    )
    train_tf, _ = data.build_transforms(model, **augment)
    loader = data.create_loader(
        data.SliceDataset(slices, train_tf, cache), batch_size, shuffle=True, num_workers=0
    )
    start = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - start)


def downsampled(slices, size: int = 32) -> np.ndarray:
    return (
        np.stack(
            [
                np.asarray(
                    data.read_image(s.path).resize((size, size), Image.BILINEAR), np.float32
                ).ravel()
                for s in slices
            ]
        )
        / 255
    )


def scan_accuracy(slices, probs) -> float:
    per_scan = defaultdict(list)
    for s, p in zip(slices, probs):
        per_scan[(s.scan, s.label)].append(p)
    return float(np.mean([(np.mean(p) > 0.5) == label for (_, label), p in per_scan.items()]))


def baseline(root: Path) -> tuple[float, float]:
    """(slice accuracy, scan accuracy) of logistic regression on 32x32 pixels, train -> test."""
    train, test = data.scan_split(root, 'train'), data.scan_split(root, 'test')
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    clf.fit(downsampled(train), [s.label for s in train])
    probs = clf.predict_proba(downsampled(test))[:, 1]
    slice_acc = float(np.mean((probs > 0.5) == np.array([s.label for s in test])))
    return slice_acc, scan_accuracy(test, probs)


def severity_ceiling(difficulty: str, n: int = 200_000) -> float:
    """Best scan-level accuracy possible: thresholding each scan's true atrophy severity."""
    rng = np.random.default_rng(0)
    (m0, s0), (m1, s1) = (synthetic.DIFFICULTIES[difficulty].severity[c] for c in ('NC', 'AD'))
    nc, ad = np.clip(rng.normal(m0, s0, n), 0, 1), np.clip(rng.normal(m1, s1, n), 0, 1)
    return max(((nc < t).mean() + (ad >= t).mean()) / 2 for t in np.linspace(0, 1, 201))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--work-dir', type=Path, default=None, help='scratch folder (default: a temp dir)'
    )
    parser.add_argument(
        '--quick', action='store_true', help='smaller sets (a smoke run, noisier numbers)'
    )
    parser.add_argument(
        '--seeds', type=int, nargs='+', default=[0], help='generator seeds of the baseline sets'
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core, like one loader worker
    work = args.work_dir or Path(tempfile.mkdtemp(prefix='adni-timm-bench-'))
    if not args.work_dir:  # scratch: gone when the script ends
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    rows = []

    speed = generator_speed(work / 'speed', 5 if args.quick else 10)
    rows.append(('generator, 1 core (render + JPEG write)', f'{speed:.0f} slices/s'))

    loader_set = synthetic.generate(work / 'loader', 5 if args.quick else 10, 0, slices=20, seed=1)
    slices = data.scan_split(loader_set, 'train')
    start = time.perf_counter()
    cache = data.preload(slices)
    preload_s = time.perf_counter() - start
    rows.append(
        (
            f'preload {len(slices)} slices, 1 thread',
            f'{preload_s:.2f} s ({len(slices) / preload_s:.0f} '
            f'slices/s, {cache.nbytes / 2**20:.0f} MiB)',
        )
    )
    augments = {
        'RRC + flip': {},
        'RRC + flip + rand-m9-mstd0.5-inc1 + RE 0.25': dict(
            auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25
        ),
    }
    for img_size in (224, 64):
        for name, augment in augments.items():
            disk = loader_speed(slices, img_size, None, augment)
            cached = loader_speed(slices, img_size, cache, augment)
            rows.append(
                (
                    f'loader, 1 worker, {img_size} px, {name}',
                    f'disk {disk:.0f} img/s, cache {cached:.0f} img/s',
                )
            )

    n_train, n_test = (30, 15) if args.quick else (100, 50)
    for seed in args.seeds:
        default_set = synthetic.generate(
            work / f'default-seed{seed}', n_train, n_test, slices=20, seed=seed
        )
        slice_acc, scan_acc = baseline(default_set)
        rows.append(
            (
                f'logreg 32x32, default difficulty, '
                f'{n_train}/{n_test} scans per class, seed {seed}',
                f'slice {slice_acc:.1%}, scan {scan_acc:.1%}',
            )
        )
    for difficulty in synthetic.DIFFICULTIES:
        rows.append(
            (
                f'ceiling, {difficulty} difficulty (threshold on true severity)',
                f'scan {severity_ceiling(difficulty):.1%}',
            )
        )
    p = synthetic.DEMO_PARAMS
    slice_acc, scan_acc = baseline(synthetic.demo_dataset(cache_root=work / 'cache'))
    rows.append(
        (
            f'logreg 32x32, demo set ({p["train_subjects"]}/{p["test_subjects"]} '
            f'scans per class, {p["slices"]} slices)',
            f'slice {slice_acc:.1%}, scan {scan_acc:.1%}',
        )
    )

    print(f'\nCPU: {os.cpu_count()} cores visible; torch threads 1; work dir {work}\n')
    print('| measurement | result |\n|---|---|')
    for name, value in rows:
        print(f'| {name} | {value} |')


if __name__ == '__main__':
    main()
