"""Draw docs/synthetic_examples.png: SYNTHETIC NC and AD slices as the generator writes them.

python docs/make_examples.py [--out docs/synthetic_examples.png]
"""

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from adni_timm.data import scan_split  # noqa: E402
from adni_timm.synthetic.slices import generate  # noqa: E402

SCANS = 3  # per class and row


def _rows(tmp: Path):
    """(row title, slice paths) per row: NC and AD at 'default' and at 'demo' difficulty."""
    for difficulty in ('default', 'demo'):
        root = generate(tmp / difficulty, SCANS, 0, slices=20, seed=0, difficulty=difficulty)
        slices = scan_split(root, 'train')
        for label, name in ((0, 'NC'), (1, 'AD')):
            scans = sorted({s.scan for s in slices if s.label == label})[:SCANS]
            by_scan = [[s for s in slices if s.scan == p] for p in scans]
            # + a lower slice
            paths = [own[len(own) // 2].path for own in by_scan] + [by_scan[0][2].path]
            yield f'{name}, {difficulty}', paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--out', type=Path, default=Path(__file__).with_name('synthetic_examples.png')
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = list(_rows(Path(tmp)))
        fig, axes = plt.subplots(
            len(rows), SCANS + 1, figsize=(1.9 * (SCANS + 1), 1.95 * len(rows) + 0.5), dpi=72
        )
        for ax_row, (title, paths) in zip(axes, rows):
            for ax, path in zip(ax_row, paths):
                ax.imshow(Image.open(path), cmap='gray', vmin=0, vmax=255)
                ax.set_title(f'{title}: {Path(path).name}', fontsize=7)
                ax.set_axis_off()
        fig.suptitle(
            'SYNTHETIC slices from adni_timm.synthetic: not MRI, not real patients. AD: larger '
            'ventricles\nand sulci, thinner cortex, smaller medial temporal lobes; "default" '
            'overlaps NC, "demo" does not. Last column: a lower slice.',
            fontsize=8,
        )
        fig.tight_layout()
        fig.savefig(args.out)
        plt.close(fig)
    # grayscale PNG: a third of the size
    Image.open(args.out).convert('L').save(args.out, optimize=True)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
