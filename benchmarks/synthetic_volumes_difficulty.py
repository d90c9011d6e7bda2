"""How hard the SYNTHETIC 3D heads are: prepare N + N subjects, then a pixel baseline.

    python benchmarks/synthetic_volumes_difficulty.py [--subjects 20] [--difficulty default]

Writes the heads at 2 mm, prepares them (no N4, 2 mm working resolution: the atrophy is coarse),
and cross-validates (5 folds x 3 repeats, by subject) a logistic regression on each subject's
slices downsampled to 32 x 32 and concatenated. docs/PREPARE.md quotes the result.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from adni_timm.prepare.labels import read_labels
from adni_timm.prepare.run import PrepareOptions, prepare
from adni_timm.prepare.preprocess import Recipe
from adni_timm.synthetic.volumes import generate_volumes
from adni_timm.prepare.volumes import discover_scans


def features(out: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = [], []
    for label, name in enumerate(('NC', 'AD')):
        folder = out / 'train' / name
        for scan in sorted({p.stem.rsplit('_', 1)[0] for p in folder.glob('*.png')}):
            files = sorted(folder.glob(f'{scan}_*.png'), key=lambda p: int(p.stem.split('_')[-1]))
            x.append(
                np.concatenate(
                    [
                        np.asarray(
                            Image.open(f).resize((32, 32), Image.BILINEAR), np.float32
                        ).ravel()
                        for f in files
                    ]
                )
            )
            y.append(label)
    return np.stack(x), np.array(y)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--subjects', type=int, default=20, help='per class')
    p.add_argument('--difficulty', default='default')
    p.add_argument('--workers', type=int, default=2)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix='adni-volume-difficulty-'))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # scratch: gone when the script ends
    generate_volumes(
        work / 'src',
        args.subjects,
        difficulty=args.difficulty,
        voxel_mm=2.0,
        base_mm=2.0,
        workers=args.workers,
    )
    prepare(
        work / 'src',
        work / 'out',
        read_labels(work / 'src' / 'labels.csv'),
        discover_scans(work / 'src'),
        Recipe(n4=False, resample_mm=2.0),
        PrepareOptions(test_fraction=0.0),
        workers=args.workers,
    )
    x, y = features(work / 'out')
    for c in (0.001, 0.01, 0.1):
        accuracies = []
        for seed in range(3):
            for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
                model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
                accuracies.append(
                    (model.fit(x[train], y[train]).predict(x[test]) == y[test]).mean()
                )
        print(f'C {c}: scan-level CV accuracy {np.mean(accuracies):.3f} ({len(y)} subjects)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
