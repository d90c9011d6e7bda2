"""Matplotlib figures for runs and evaluations: training curves, confusion matrix, ROC.

Each function writes one PNG and returns its path. The Agg backend is used so
figures render on headless machines (clusters, CI) without a display. A figure
travels without its run folder (a card, a slide), so each one carries its
context in its title: model, split, n, and SYNTHETIC when the data was generated
(``FigureContext``).
"""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

__all__ = ['FigureContext', 'plot_curves', 'plot_confusion_matrix', 'plot_roc']

SYNTHETIC_TAG = 'SYNTHETIC data (not MRI)'


@dataclass(frozen=True)
class FigureContext:
    """What a figure says about where it came from: the model, the split, and SYNTHETIC.

    Each plot adds its own ``n`` (scans or slices of that figure) to ``line``.
    """

    model: str
    split: str | None = None
    synthetic: bool = False

    def line(self, n: str | None = None) -> str:
        """``SYNTHETIC data (not MRI) | model | split split | n`` (the parts that are known)."""
        parts = [SYNTHETIC_TAG] if self.synthetic else []
        parts.append(self.model)
        if self.split:
            parts.append(f'{self.split} split')
        if n:
            parts.append(n)
        return ' | '.join(parts)


def _title(title: str | None, context: FigureContext | None, n: str | None, width: int) -> str:
    """The figure's title over its context line, each wrapped to ``width`` characters."""
    lines = [title] if title else []
    if context is not None:
        lines.append(context.line(n))
    elif n:
        lines.append(n)
    return '\n'.join(textwrap.fill(line, width) for line in lines)


def _save(fig, path: str | os.PathLike | None):
    """Write ``fig`` to ``path`` and return the path; ``path=None``: return it as a PIL image."""
    if path is None:
        from PIL import Image

        buffer = io.BytesIO()
        fig.savefig(buffer, format='png', dpi=120, bbox_inches='tight')
        plt.close(fig)
        buffer.seek(0)
        with Image.open(buffer) as im:
            return im.convert('RGB')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
    return path


def _series(history: list[dict], key: str) -> tuple[list, list]:
    """(epochs, values) of the rows that hold a number for ``key``."""
    points = [
        (row.get('epoch', i), row[key])
        for i, row in enumerate(history)
        if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
    ]
    return [e for e, _ in points], [v for _, v in points]


# panels of the training-curve figure: (title, metrics.jsonl keys of the live weights, y limits)
# EMA keys are the same with an 'ema_' prefix: same colour, dashed
_CURVE_PANELS = (
    ('loss', (('train_loss', 'train'), ('val_loss', 'validation')), None),
    ('scan-level AUC (validation)', (('val_scan_auc', 'AUC'),), (0, 1.02)),
    ('scan-level accuracy (validation)', (('val_scan_accuracy', 'accuracy'),), (0, 1.02)),
    ('learning rate', (('lr', 'lr'),), None),
)


def plot_curves(
    history: list[dict],
    path: str | os.PathLike,
    best_epoch: int | None = None,
    best_weights: str | None = None,
    context: FigureContext | None = None,
) -> Path:
    """Did it learn, did it overfit, which epoch was
    kept? Four panels from ``RUN/metrics.jsonl`` rows.

    Loss (train vs validation), scan-level AUC and accuracy, learning rate; live weights solid
    and EMA dashed in the same colour; a vertical line at ``best_epoch`` (the kept weights).
    Scan-level only: the slice-level numbers are in metrics.jsonl and add little beside them.
    Null values (e.g. an undefined AUC) are skipped; a panel without any value is left out.
    ``context`` titles the figure (n: the validation slices of the last row, when recorded).
    """
    panels = []
    for title, keys, ylim in _CURVE_PANELS:
        series = []
        for colour, (key, label) in enumerate(keys):
            for prefix, style, suffix in (('', '-', ''), ('ema_', '--', ' (EMA)')):
                epochs, values = _series(history, prefix + key)
                if epochs and not (prefix and key in ('train_loss', 'lr')):
                    series.append((label + suffix, epochs, values, f'C{colour}', style))
        if series:
            panels.append((title, series, ylim))
    if not panels:
        raise ValueError(
            f'plot_curves: no loss, AUC, accuracy or lr values in the history '
            f'(keys: {list(dict.fromkeys(k for row in history for k in row))[:10]}).'
        )
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, series, ylim) in zip(axes.flat, panels):
        for label, epochs, values, colour, style in series:
            ax.plot(
                epochs,
                values,
                color=colour,
                linestyle=style,
                linewidth=1.6,
                marker='o' if len(values) < 30 and style == '-' else None,
                markersize=3,
                label=label,
            )
        if best_epoch is not None:
            kept = f'kept: epoch {best_epoch}' + (f' ({best_weights})' if best_weights else '')
            ax.axvline(best_epoch, color='0.35', linestyle=':', linewidth=1.2, label=kept)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ylim:
            ax.set_ylim(*ylim)
        if title == 'learning rate':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, framealpha=0.7)
    if context is not None:
        val = next((row['val_slices'] for row in reversed(history) if row.get('val_slices')), None)
        said = context.split == 'validation'  # 'validation split | n=...', not said twice
        n = (f'n={val} slices' if said else f'validation n={val} slices') if val else None
        fig.suptitle(_title(None, context, n, 40 * ncols), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(
    cm,
    labels,
    path: str | os.PathLike,
    title: str | None = None,
    context: FigureContext | None = None,
    unit: str = '',
) -> Path:
    """Confusion matrix (rows = true class, columns = predicted) with counts and row percentages.

    The title ends with the context line and ``n`` = the matrix total (``unit``: e.g. 'scans').
    """
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    display = ConfusionMatrixDisplay(cm, display_labels=list(labels))
    display.plot(ax=ax, cmap='Blues', colorbar=False, values_format='d')
    row_totals = cm.sum(axis=1)
    for (i, j), text in np.ndenumerate(display.text_):
        # the percentage of the true class: sensitivity / specificity on the diagonal
        if row_totals[i]:
            text.set_text(f'{cm[i, j]}\n{100 * cm[i, j] / row_totals[i]:.0f}%')
    n = f'n={int(cm.sum())} {unit}'.strip()
    if title or context is not None:
        ax.set_title(_title(title, context, n, 38), fontsize=9)
    return _save(fig, path)


def plot_roc(
    y_true,
    p_pos,
    path: str | os.PathLike,
    title: str | None = None,
    threshold: float | None = None,
    context: FigureContext | None = None,
    unit: str = '',
) -> Path:
    """ROC curve with its AUC; marks the operating point of ``threshold`` when given."""
    y, p = np.asarray(y_true), np.asarray(p_pos)
    if len(np.unique(y)) != 2:
        raise ValueError('plot_roc: a ROC curve needs both positive (AD) and negative samples.')
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    RocCurveDisplay.from_predictions(y, p, ax=ax, name='ROC', plot_chance_level=True)
    if threshold is not None:
        pred = p >= threshold
        sens, spec = pred[y == 1].mean(), 1 - pred[y == 0].mean()
        ax.plot([1 - spec], [sens], 'o', color='tab:red', label=f'threshold {threshold:.3g}')
        ax.legend(loc='lower right', fontsize=8)
    ax.set_xlabel('1 - specificity')
    ax.set_ylabel('sensitivity')
    n = f'n={len(y)} {unit} ({int((y == 1).sum())} positive)'.replace('  ', ' ')
    if title or context is not None:
        ax.set_title(_title(title, context, n, 40), fontsize=9)
    return _save(fig, path)


__all__.append('plot_reliability')


def plot_reliability(
    y_true_slice,
    p_slice,
    y_true_scan,
    p_scan,
    path: str | os.PathLike,
    title: str | None = None,
    p_slice_calibrated=None,
    p_scan_calibrated=None,
    n_bins: int = 15,
    context: FigureContext | None = None,
) -> Path:
    """Reliability diagrams of P(AD), slices and scans side by side, with the ECE in the legend.

    Each marker is one non-empty equal-width bin: mean predicted P(AD) against the observed
    fraction of AD (``adni_timm.metrics.reliability_curve``), its count written beside it; a
    calibrated model lies on the diagonal, drawn dotted over the curves so that two filled bins
    cannot hide it. Give ``p_slice_calibrated`` / ``p_scan_calibrated`` (e.g. after temperature
    scaling) to draw them over the uncalibrated curves, labelled 'calibrated'.
    """
    from .metrics import expected_calibration_error, reliability_curve

    panels = []  # curves first, so bad input raises before a figure is opened
    for name, y, p, p_calibrated in (
        ('slices', y_true_slice, p_slice, p_slice_calibrated),
        ('scans', y_true_scan, p_scan, p_scan_calibrated),
    ):
        probs = [('model' if p_calibrated is None else 'uncalibrated', p)]
        if p_calibrated is not None:
            probs.append(('calibrated', p_calibrated))
        curves = [
            (
                f'{label} (ECE {expected_calibration_error(y, q, n_bins):.3f})',
                reliability_curve(y, q, n_bins),
            )
            for label, q in probs
        ]
        panels.append((f'{name} (n={len(y)})', curves))
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.0), sharey=True)
    for ax, (panel_title, curves) in zip(axes, panels):
        for i, (label, (mean_predicted, observed, count)) in enumerate(curves):
            ax.plot(
                mean_predicted,
                observed,
                marker='o' if i == 0 else 's',
                markersize=5,
                linewidth=1.0,
                alpha=0.85,
                color=f'C{i}',
                label=label,
            )
            for x, y_obs, c in zip(mean_predicted, observed, count):
                # counts beside the markers: a bin of 3 slices and one of 300 look alike otherwise
                ax.annotate(
                    str(int(c)),
                    (x, y_obs),
                    xytext=(4, -10 if i else 4),
                    textcoords='offset points',
                    fontsize=7,
                    color=f'C{i}',
                )
        ax.plot([0, 1], [0, 1], linestyle=':', color='0.3', zorder=5, label='perfectly calibrated')
        ax.set(title=panel_title, xlabel='mean predicted P(AD)', xlim=(0, 1), ylim=(-0.02, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(
            loc='upper left',
            fontsize=7,
            framealpha=0.6,
            title='n per bin beside it',
            title_fontsize=7,
        )
    axes[0].set_ylabel('observed fraction AD')
    if title or context is not None:
        fig.suptitle(_title(title, context, None, 90), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


__all__ += ['plot_cam_montage', 'plot_population_maps']


def _unit(image: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] for display (normalised model inputs are not in [0, 1])."""
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def _overlay(
    ax, image: np.ndarray, heat: np.ndarray, vmax: float = 1.0, cmap: str = 'jet', vmin=0.0
):
    """Grey slice with the map on top; opacity follows |map|, so cold areas show the anatomy."""
    ax.imshow(_unit(image), cmap='gray', vmin=0, vmax=1)
    bound = max(abs(vmin), abs(vmax))
    shown = ax.imshow(
        heat,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=0.6 * np.clip(np.abs(heat) / bound, 0, 1) if bound > 0 else 0.0,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def plot_cam_montage(
    images,
    maps,
    path: str | os.PathLike | None,
    *,
    tile_titles=None,
    title: str | None = None,
    ncols: int = 5,
    vmax: float | None = None,
    cmap: str = 'jet',
    colorbar_label: str = "Grad-CAM (each slice's max = 1)",
    context: FigureContext | None = None,
) -> Path:
    """One scan's slices in a grid, each with its Grad-CAM map overlaid on one colour scale.

    ``images`` and ``maps`` are ``[S, H, W]`` (slices in order); ``tile_titles`` one per slice
    (e.g. slice index and P(AD)); ``title`` the scan line (mean P(AD), decision, outcome),
    wrapped to the figure's width over the ``context`` line. The colour scale runs from 0 to
    ``vmax`` (default 1: maps already normalised) for every tile, with ``colorbar_label``.
    ``path=None`` returns the figure as a PIL image instead of writing it.
    """
    images, maps = np.asarray(images, dtype=np.float32), np.asarray(maps, dtype=np.float32)
    if images.ndim != 3 or images.shape != maps.shape:
        raise ValueError(
            f'plot_cam_montage: images {images.shape} and maps {maps.shape} must both be [S, H, W]'
        )
    if tile_titles is not None and len(tile_titles) != len(images):
        raise ValueError(
            f'plot_cam_montage: {len(tile_titles)} tile titles for {len(images)} slices'
        )
    vmax = 1.0 if vmax is None else float(vmax)
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    width = 2.2 * ncols + 0.8
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width, 2.4 * nrows + 0.9),
        squeeze=False,
        layout='constrained',
    )
    for ax in axes.flat[len(images) :]:
        ax.axis('off')
    shown = None
    for k, ax in enumerate(axes.flat[: len(images)]):
        shown = _overlay(ax, images[k], maps[k], vmax=vmax, cmap=cmap)
        if tile_titles is not None:
            ax.set_title(tile_titles[k], fontsize=9)
    if shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.7, label=colorbar_label)
    if title or context is not None:
        # ~ 11 characters per inch at 10 pt: a long scan line wraps instead of being cut off
        n = f'n={len(images)} slices'
        fig.suptitle(_title(title, context, n, max(30, int(width * 11))), fontsize=10)
    return _save(fig, path)


def plot_population_maps(
    maps: dict,
    path: str | os.PathLike,
    *,
    mean_slices: dict | None = None,
    counts: dict | None = None,
    title: str | None = None,
    target: str | None = None,
    map_name: str = 'map',
    context: FigureContext | None = None,
) -> Path:
    """Mean evidence map per class side by side (one colour scale), over the class's mean slice.

    ``maps`` is ``{class: [H, W]}`` (e.g. ``adni_timm.evaluation.cam.population_maps``);
    ``mean_slices`` the
    mean input slice per class, drawn underneath; ``counts`` slices per class, in the titles.
    With two classes a third panel shows their difference (second minus first, e.g. AD - NC) over
    the mean anatomy of both, red where the second class's maps are stronger, with its own
    labelled colour bar. ``target`` names the class the maps explain and ``map_name`` the kind of
    map (e.g. 'Occlusion map'), both for the colour-bar labels.
    """
    if not maps:
        raise ValueError('plot_population_maps: no maps to draw')
    names = list(maps)
    vmax = max(float(np.max(maps[k])) for k in names) or 1.0
    diff = len(names) == 2
    fig, axes = plt.subplots(
        1,
        len(names) + diff,
        figsize=(3.3 * (len(names) + diff), 3.9),
        squeeze=False,
        layout='constrained',
    )
    axes = axes[0]
    of = f' of {target}' if target else ''
    backgrounds = {name: (mean_slices or {}).get(name, np.zeros_like(maps[name])) for name in names}
    for ax, name in zip(axes, names):
        shown = _overlay(ax, backgrounds[name], maps[name], vmax=vmax)
        n = f' ({counts[name]} slices)' if counts and name in counts else ''
        ax.set_title(f'{name}{n}', fontsize=10)
    fig.colorbar(shown, ax=list(axes[: len(names)]), shrink=0.8, label=f'mean {map_name}{of}')
    if diff:
        delta = np.asarray(maps[names[1]]) - np.asarray(maps[names[0]])
        bound = float(np.abs(delta).max()) or 1.0
        anatomy = (backgrounds[names[0]] + backgrounds[names[1]]) / 2
        shown = _overlay(axes[-1], anatomy, delta, vmax=bound, vmin=-bound, cmap='RdBu_r')
        axes[-1].set_title(f'{names[1]} - {names[0]}', fontsize=10)
        fig.colorbar(
            shown,
            ax=axes[-1],
            shrink=0.8,
            label=f'mean {map_name}{of}: {names[1]} minus {names[0]}',
        )
    total = sum(counts.values()) if counts else None
    n = f'n={total} slices' if total else None
    if title or context is not None:
        fig.suptitle(_title(title, context, n, int(3.3 * (len(names) + diff) * 11)), fontsize=10)
    return _save(fig, path)


__all__ += ['plot_scan_probabilities', 'plot_cv_folds', 'plot_cv_comparison']


def plot_scan_probabilities(
    y_true,
    p_pos,
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    threshold: float,
    title: str | None = None,
    context: FigureContext | None = None,
    unit: str = 'scans',
) -> Path:
    """P(positive) of every scan as a dot, one column per true class (``labels`` = [negative,
    positive]), the operating threshold as a line: where the errors sit and how close the calls are.
    Wrong calls are drawn as crosses."""
    y, p = np.asarray(y_true).astype(int), np.asarray(p_pos, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f'plot_scan_probabilities: {y.shape} labels for {p.shape} probabilities')
    rng = np.random.default_rng(0)  # the jitter only spreads the dots; the same figure each time
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    for k, (name, colour) in enumerate(zip(labels, ('tab:blue', 'tab:red'))):
        mine = p[y == k]
        x = k + rng.uniform(-0.18, 0.18, len(mine))
        right = (mine >= threshold) == bool(k)
        ax.scatter(x[right], mine[right], s=14, color=colour, alpha=0.7, label=f'true {name}')
        if (~right).any():
            ax.scatter(x[~right], mine[~right], s=22, color=colour, marker='x', alpha=0.9)
    ax.axhline(
        threshold, color='0.3', linestyle='--', linewidth=1, label=f'threshold {threshold:.3g}'
    )
    ax.set_xticks(
        [0, 1], [f'{labels[0]}\n({int((y == 0).sum())})', f'{labels[1]}\n({int((y == 1).sum())})']
    )
    ax.set_xlim(-0.5, 1.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f'mean P({labels[1]}) of the {unit[:-1] if unit.endswith("s") else unit}')
    ax.set_xlabel('true class (x: wrong call)')
    ax.legend(loc='upper left', fontsize=7)
    n = f'n={len(y)} {unit}'
    ax.set_title(_title(title, context, n, 44), fontsize=9)
    return _save(fig, path)


def plot_cv_folds(
    folds: Sequence[Mapping],
    y_true,
    p_pos,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    context: FigureContext | None = None,
    unit: str = 'scans',
) -> Path:
    """Cross-validation at a glance: per-fold AUC and accuracy with their CIs (``folds``: one
    ``{'auc', 'auc_ci', 'accuracy', 'accuracy_ci'}`` each) beside the pooled out-of-fold ROC of
    ``y_true`` / ``p_pos``."""
    y, p = np.asarray(y_true), np.asarray(p_pos)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.2, 3.8), layout='constrained')
    xs = np.arange(len(folds))
    for key, offset, colour in (('auc', -0.12, 'tab:purple'), ('accuracy', 0.12, 'tab:green')):
        values = np.array([f.get(key) if f.get(key) is not None else np.nan for f in folds], float)
        cis = [f.get(f'{key}_ci') or [np.nan, np.nan] for f in folds]
        lo = values - np.array([c[0] for c in cis], float)
        hi = np.array([c[1] for c in cis], float) - values
        left.errorbar(
            xs + offset,
            values,
            yerr=[np.nan_to_num(lo), np.nan_to_num(hi)],
            fmt='o',
            color=colour,
            capsize=3,
            label=key,
        )
        if np.isfinite(values).any():
            left.axhline(np.nanmean(values), color=colour, linewidth=0.8, linestyle=':')
    left.set_xticks(xs, [f'fold {k}' for k in xs])
    left.set_ylim(0, 1.02)
    left.set_ylabel(f'{unit[:-1] if unit.endswith("s") else unit}-level metric (95% CI)')
    left.legend(loc='lower left', fontsize=8)
    left.set_title('per fold (dotted: mean)', fontsize=9)
    if len(np.unique(y)) == 2:
        RocCurveDisplay.from_predictions(y, p, ax=right, name='out of fold', plot_chance_level=True)
        right.set_xlabel('1 - specificity')
        right.set_ylabel('sensitivity')
        right.legend(loc='lower right', fontsize=8)
    else:
        right.text(0.5, 0.5, 'one class only: no ROC', ha='center', va='center')
    right.set_title('pooled out-of-fold ROC', fontsize=9)
    n = f'n={len(y)} {unit}, {len(folds)} folds'
    fig.suptitle(_title(title, context, n, 90), fontsize=10)
    return _save(fig, path)


def plot_cv_comparison(
    comparison: Mapping,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    context: FigureContext | None = None,
) -> Path:
    """``cv compare``'s answer as a forest plot: per fold the difference B - A (dots) and the
    pooled paired-bootstrap difference with its CI (a bar), for AUC and accuracy; 0 = no
    difference, so a CI that crosses the line cannot tell the runs apart."""
    paired = comparison['paired']
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.4), layout='constrained', sharey=True)
    folds = comparison.get('per_fold') or []
    for ax, key in zip(axes, ('auc', 'accuracy')):
        rows = []
        for entry in folds:
            level = entry.get('scan') or entry.get('patient') or {}
            diff = (level.get(key) or {}).get('difference')
            rows.append((f'fold {entry["fold"]}', diff))
        ys = np.arange(len(rows) + 1)[::-1]
        for y_pos, (name, diff) in zip(ys[:-1] if rows else [], rows):
            if diff is not None:
                ax.plot([diff], [y_pos], 'o', color='0.4')
        pooled = paired[key]
        lo, hi = pooled['ci']
        ax.errorbar(
            [pooled['difference']],
            [ys[-1]],
            xerr=[[pooled['difference'] - lo], [hi - pooled['difference']]],
            fmt='s',
            color='tab:red',
            capsize=4,
        )
        ax.axvline(0, color='0.3', linestyle='--', linewidth=1)
        ax.set_yticks(ys, [name for name, _ in rows] + ['pooled (paired bootstrap)'])
        ax.set_xlabel(f'{key}: B - A')
        ax.set_title(
            f'{key} {pooled["a"]:.3f} (A) vs {pooled["b"]:.3f} (B), CI [{lo:+.3f}, {hi:+.3f}]',
            fontsize=8,
        )
    count = paired.get('n_scans', paired.get('n_patients', '?'))  # older runs named scans patients
    n = f'A = {comparison["run_a"]}, B = {comparison["run_b"]}, n={count} scans'
    if not comparison.get('valid', True):
        n += ' | INVALID: different folds'
    fig.suptitle(_title(title, context, n, 100), fontsize=10)
    return _save(fig, path)
