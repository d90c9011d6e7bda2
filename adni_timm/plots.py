"""Matplotlib figures for runs and evaluations: training curves, confusion matrix, ROC.

Each function writes one PNG and returns its path. The Agg backend is used so
figures render on headless machines (clusters, CI) without a display.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

__all__ = ['plot_curves', 'plot_confusion_matrix', 'plot_roc']

# panels of the training-curve figure: (title, does a RUN/metrics.jsonl key belong to it)
_CURVE_PANELS = (
    ('loss', lambda k: k.endswith('loss')),
    ('accuracy', lambda k: k.endswith('accuracy')),
    ('AUC', lambda k: k.endswith('auc')),
    ('sensitivity / specificity', lambda k: k.endswith(('sensitivity', 'specificity'))),
    ('learning rate', lambda k: k == 'lr'),
)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
    return path


def _series(history: list[dict], key: str) -> tuple[list, list]:
    """(epochs, values) of the rows that hold a number for ``key``."""
    points = [(row.get('epoch', i), row[key]) for i, row in enumerate(history)
              if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)]
    return [e for e, _ in points], [v for _, v in points]


def plot_curves(history: list[dict], path: str | os.PathLike) -> Path:
    """Loss, accuracy, AUC, sensitivity/specificity and learning rate per epoch (rows of ``RUN/metrics.jsonl``).

    Keys are grouped by their ending (``*_loss``, ``*_accuracy``, ``*_auc``, ...), so whatever the run
    logged is plotted; a panel with no values is left out, as are null values (e.g. an undefined AUC).
    """
    keys = list(dict.fromkeys(k for row in history for k in row))  # first-seen order
    panels = []
    for title, belongs in _CURVE_PANELS:
        series = [(k, *_series(history, k)) for k in keys if belongs(k)]
        series = [s for s in series if s[1]]
        if series:
            panels.append((title, series))
    if not panels:
        raise ValueError(f'plot_curves: no loss, accuracy, AUC, sensitivity/specificity or lr values in the '
                         f'history (keys: {keys[:10]}).')
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, series) in zip(axes.flat, panels):
        colours = {}  # EMA shares its live metric's colour, dashed, so pairs read at a glance
        for key, epochs, values in series:
            base = key.removeprefix('ema_')
            colour = colours.setdefault(base, f'C{len(colours) % 10}')
            ax.plot(epochs, values, color=colour, linestyle='--' if key != base else '-',
                    marker='o' if len(values) < 30 else None, markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        if title == 'learning rate':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
        ax.legend(fontsize=6, framealpha=0.6)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(cm, labels, path: str | os.PathLike, title: str | None = None) -> Path:
    """Confusion matrix (rows = true class, columns = predicted) with counts and row percentages."""
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    display = ConfusionMatrixDisplay(cm, display_labels=list(labels))
    display.plot(ax=ax, cmap='Blues', colorbar=False, values_format='d')
    row_totals = cm.sum(axis=1)
    for (i, j), text in np.ndenumerate(display.text_):
        if row_totals[i]:  # the percentage of the true class: sensitivity / specificity on the diagonal
            text.set_text(f'{cm[i, j]}\n{100 * cm[i, j] / row_totals[i]:.0f}%')
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_roc(y_true, p_pos, path: str | os.PathLike, title: str | None = None,
             threshold: float | None = None) -> Path:
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
    if title:
        ax.set_title(title)
    return _save(fig, path)
