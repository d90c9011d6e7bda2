"""Quality control of an adni-prepare run: the per-scan QC strip, the outlier rule on the
registration similarity, and qc/overview.png."""

from __future__ import annotations

from pathlib import Path
import numpy as np

from .plan import ScanRecord
from .preprocess import PreparedScan

__all__ = ['qc_strip', 'flag_outliers', 'write_overview']


def qc_strip(prepared: PreparedScan, title: str, n: int = 5) -> np.ndarray:
    """RGB strip: up to ``n`` of the slices, the template's brain outline in red."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    picks = np.unique(np.round(np.linspace(0, len(prepared.slices) - 1, n)).astype(int))
    tiles = []
    for i in picks:
        gray = prepared.slices[i]
        rgb = np.repeat(gray[..., None], 3, axis=2)
        brain = prepared.brain_slices[i] > 0
        outline = brain & ~ndimage.binary_erosion(brain)
        rgb[outline] = (255, 40, 40)
        tile = Image.fromarray(rgb)
        ImageDraw.Draw(tile).text((4, 4), f'k={prepared.slice_numbers[i]}', fill=(255, 255, 0))
        tiles.append(np.asarray(tile))
    strip = np.concatenate(tiles, axis=1)
    header = Image.new('RGB', (strip.shape[1], 18))
    ImageDraw.Draw(header).text((4, 3), title, fill=(255, 255, 255))
    return np.concatenate([np.asarray(header), strip], axis=0)


def flag_outliers(
    similarity: dict[str, float],
    min_similarity: float = 0.6,
    outlier_z: float = 3.5,
    min_gap: float = 0.1,
) -> set[str]:
    """The keys whose registration similarity is below ``min_similarity``, or, with 10 or more
    scans, low outliers of the run: more than ``outlier_z`` robust SDs (1.4826 MAD) **and** at
    least ``min_gap`` below the median. Noise, bias and atrophy move a good registration's NCC
    by a few hundredths (a noisy synthetic head at 0.81 against a median of 0.87 is fine); a
    misregistration moves it by tenths."""
    flagged = {k for k, v in similarity.items() if v < min_similarity}
    if len(similarity) >= 10:
        values = np.array(list(similarity.values()))
        median = float(np.median(values))
        spread = 1.4826 * float(np.median(np.abs(values - median)))
        limit = median - max(outlier_z * spread, min_gap)
        flagged |= {k for k, v in similarity.items() if v < limit}
    return flagged


def write_overview(out: Path, records: list[ScanRecord], flagged: set[str], options: dict) -> None:
    """qc/overview.png: every scan's similarity, and the lowest 24 scans' middle slices."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from PIL import Image

    ok = sorted((r for r in records if r.status == 'ok'), key=lambda r: r.similarity)
    if not ok:
        return
    worst = ok[:24]
    cols = 8
    rows = (len(worst) + cols - 1) // cols
    fig = plt.figure(figsize=(16, 3 + 2.2 * rows))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.4] + [1] * rows)
    ax = fig.add_subplot(grid[0, :])
    values = [r.similarity for r in ok]
    colours = ['tab:red' if r.scan_id in flagged else 'tab:blue' for r in ok]
    ax.scatter(range(len(ok)), values, c=colours, s=12)
    ax.axhline(
        options['min_similarity'],
        color='tab:red',
        lw=0.8,
        ls='--',
        label=f'floor {options["min_similarity"]}',
    )
    ax.set_ylabel('NCC with template')
    ax.set_xlabel(f'{len(ok)} prepared scans, by similarity ({len(flagged)} flagged, red)')
    ax.legend(loc='lower right')
    for i, r in enumerate(worst):
        rel = r.files[len(r.files) // 2]
        path = out / ('flagged/' + rel if (out / 'flagged' / rel).is_file() else rel)
        sub = fig.add_subplot(grid[1 + i // cols, i % cols])
        sub.imshow(np.asarray(Image.open(path)), cmap='gray', vmin=0, vmax=255)
        sub.set_title(
            f'{r.scan_id}\n{r.similarity:.3f}',
            fontsize=7,
            color='tab:red' if r.scan_id in flagged else 'black',
        )
        sub.axis('off')
    fig.tight_layout()
    (out / 'qc').mkdir(exist_ok=True)
    tmp = out / 'qc' / '.overview.png.tmp'
    fig.savefig(tmp, dpi=80, format='png')
    plt.close(fig)
    tmp.replace(out / 'qc' / 'overview.png')
