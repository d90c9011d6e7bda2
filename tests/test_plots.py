"""adni_timm.plots writes real PNGs and refuses what it cannot draw."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from adni_timm import plots
from adni_timm.plots import (
    FigureContext,
    plot_cam_montage,
    plot_confusion_matrix,
    plot_curves,
    plot_population_maps,
    plot_reliability,
    plot_roc,
)


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == 'PNG'
        return im.size


def test_confusion_matrix_png_with_counts_and_row_percentages(tmp_path, monkeypatch):
    texts = []
    monkeypatch.setattr(
        plt, 'close', lambda fig: texts.extend(t.get_text() for t in fig.axes[0].texts)
    )
    out = plot_confusion_matrix(
        [[5, 1], [2, 6]], ['NC', 'AD'], tmp_path / 'sub' / 'cm.png', title='scans'
    )
    assert out == tmp_path / 'sub' / 'cm.png' and _png_size(out)[0] > 100
    assert texts == ['5\n83%', '1\n17%', '2\n25%', '6\n75%']


def test_roc_png_and_single_class_refused(tmp_path):
    y, p = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    assert _png_size(plot_roc(y, p, tmp_path / 'roc.png', title='scans', threshold=0.5))[0] > 100
    with pytest.raises(ValueError, match='both positive'):
        plot_roc([1, 1], [0.2, 0.3], tmp_path / 'bad.png')
    assert not (tmp_path / 'bad.png').exists()


def test_curves_answer_did_it_learn_overfit_and_which_epoch_was_kept(tmp_path, monkeypatch):
    panels = []

    def record(fig):
        for ax in fig.axes:
            if ax.get_visible():
                panels.append(
                    (
                        ax.get_title(),
                        [
                            (
                                line.get_label(),
                                line.get_color(),
                                line.get_linestyle(),
                                list(line.get_xdata()),
                            )
                            for line in ax.get_lines()
                        ],
                    )
                )

    monkeypatch.setattr(plt, 'close', record)
    history = [
        {
            'epoch': e + 1,
            'train_loss': 1 / (e + 1),
            'val_loss': 1.1 / (e + 1),
            'ema_val_loss': 1.2 / (e + 1),
            'val_slice_accuracy': 0.5 + e / 20,
            'val_scan_auc': None if e == 0 else 0.6 + e / 30,
            'ema_val_scan_auc': 0.7,
            'val_scan_accuracy': 0.6,
            'ema_val_scan_accuracy': 0.65,
            'lr': 1e-3 * (1 - e / 5),
            'epoch_time_s': 3.0,
        }
        for e in range(5)
    ]
    out = plot_curves(history, tmp_path / 'curves.png', best_epoch=4, best_weights='ema')
    assert _png_size(out)[0] > 300
    titles = [title for title, _ in panels]
    # slice-level curves stay in metrics.jsonl
    assert titles == [
        'loss',
        'scan-level AUC (validation)',
        'scan-level accuracy (validation)',
        'learning rate',
    ]
    lines = dict(panels)
    loss = {label: (colour, style) for label, colour, style, _ in lines['loss']}
    assert set(loss) == {'train', 'validation', 'validation (EMA)', 'kept: epoch 4 (ema)'}
    # one colour per metric
    assert loss['validation'][0] == loss['validation (EMA)'][0] != loss['train'][0]
    # live solid, EMA dashed
    assert (loss['validation'][1], loss['validation (EMA)'][1]) == ('-', '--')
    auc = {label: xs for label, _, _, xs in lines['scan-level AUC (validation)']}
    assert auc['AUC'] == [2, 3, 4, 5]  # the undefined first AUC is skipped, not drawn as 0
    for _, series in panels:  # the kept epoch is marked in every panel
        assert [xs for label, _, _, xs in series if label.startswith('kept')] == [[4, 4]]


def test_curves_from_training_only_history(tmp_path):
    assert plot_curves([{'epoch': 1, 'train_loss': 0.7}], tmp_path / 'c.png').is_file()
    with pytest.raises(ValueError, match='no loss'):
        plot_curves([{'epoch': 1, 'epoch_time_s': 2.0}], tmp_path / 'none.png')


def test_confusion_matrix_with_an_empty_row(tmp_path):
    assert plot_confusion_matrix(
        np.array([[0, 0], [1, 3]]), ['NC', 'AD'], tmp_path / 'cm.png'
    ).is_file()


# --------------------------------------------------------------------- figures carry their context


def _figures(monkeypatch):
    """Figures as they are closed (after saving): their axes, texts and titles stay readable."""
    figures = []
    monkeypatch.setattr(plt, 'close', figures.append)
    return figures


SYN = FigureContext('adni_convnext_atto', 'test', synthetic=True)


def _all_text(fig) -> str:
    texts = [fig._suptitle.get_text()] if fig._suptitle else []
    for ax in fig.axes:
        texts += [ax.get_title(), *(t.get_text() for t in ax.texts)]
    return ' '.join(' '.join(texts).split())  # titles wrap: compare words, not line breaks


def test_context_line_names_model_split_n_and_synthetic():
    assert SYN.line('n=12 scans') == (
        'SYNTHETIC data (not MRI) | adni_convnext_atto | test split | n=12 scans'
    )
    assert FigureContext('m').line() == 'm'  # real data: no tag; unknown parts left out


def test_evaluation_figures_carry_model_split_n_and_synthetic(tmp_path, monkeypatch):
    figures = _figures(monkeypatch)
    plot_confusion_matrix(
        [[5, 1], [2, 6]], ['NC', 'AD'], tmp_path / 'cm.png', 'scans', SYN, unit='scans'
    )
    y, p = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    plot_roc(y, p, tmp_path / 'roc.png', 'AD vs NC', threshold=0.5, context=SYN, unit='scans')
    plot_reliability(y, p, y[:4], p[:4], tmp_path / 'rel.png', 'calibration', context=SYN)
    plot_curves(
        [{'epoch': 1, 'train_loss': 0.7, 'val_loss': 0.8, 'val_slices': 96}],
        tmp_path / 'c.png',
        context=SYN,
    )
    cm, roc, rel, curves = (_all_text(f) for f in figures)
    for text in (cm, roc, rel, curves):
        assert 'SYNTHETIC data (not MRI)' in text and 'adni_convnext_atto' in text
    assert 'test split' in cm and 'n=14 scans' in cm  # n: the matrix total
    assert 'n=6 scans (3 positive)' in roc
    assert 'validation n=96 slices' in curves


def test_reliability_marks_every_bin_with_its_count_and_keeps_the_diagonal_visible(
    tmp_path, monkeypatch
):
    figures = _figures(monkeypatch)
    # two filled bins: the curve joins them, the reference must still show, counts beside them
    y = [0] * 30 + [1] * 10
    p = [0.05] * 30 + [0.95] * 10
    plot_reliability(y, p, y[:4], p[:4], tmp_path / 'rel.png', n_bins=10)
    slices_ax = figures[0].axes[0]
    lines = {line.get_label(): line for line in slices_ax.get_lines()}
    model, reference = lines['model (ECE 0.050)'], lines['perfectly calibrated']
    assert model.get_marker() == 'o' and len(model.get_xdata()) == 2
    assert reference.get_zorder() > model.get_zorder()  # drawn over the curve
    assert sorted(t.get_text() for t in slices_ax.texts) == ['10', '30']


def test_montage_title_wraps_and_the_colour_bar_shows_the_scan_scale(tmp_path, monkeypatch):
    figures = _figures(monkeypatch)
    images = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    maps = images * 0.004  # raw values of one scan: the scale is theirs, not 0..1
    title = 'TP: scan 123456 (true AD, mean P(AD) 0.93 -> AD at threshold 0.50); ' * 2
    plot_cam_montage(
        images,
        maps,
        tmp_path / 'm.png',
        title=title.strip(),
        vmax=float(maps.max()),
        cmap='Reds',
        colorbar_label="Occlusion for AD, 0 to this scan's max",
        context=SYN,
    )
    fig = figures[0]
    lines = fig._suptitle.get_text().splitlines()
    assert len(lines) >= 3 and max(len(line) for line in lines) <= 80  # wrapped to the figure
    assert lines[-1].endswith('n=3 slices')
    colorbar = fig.axes[-1]
    assert colorbar.get_ylabel() == "Occlusion for AD, 0 to this scan's max"
    assert colorbar.get_ylim() == pytest.approx((0.0, float(maps.max())))
    tile = fig.axes[0].get_images()[-1]
    assert tile.get_cmap().name == 'Reds' and tile.get_clim()[1] == pytest.approx(maps.max())


def test_population_difference_panel_sits_on_the_mean_anatomy_with_a_labelled_bar(
    tmp_path, monkeypatch
):
    figures = _figures(monkeypatch)
    rng = np.random.default_rng(0)
    maps = {'NC': rng.random((8, 8)), 'AD': rng.random((8, 8))}
    anatomy = {k: rng.random((8, 8)) for k in maps}
    plot_population_maps(
        maps,
        tmp_path / 'pop.png',
        mean_slices=anatomy,
        counts={'NC': 6, 'AD': 6},
        title='mean map',
        target='AD',
        context=SYN,
    )
    fig = figures[0]
    diff_ax = next(ax for ax in fig.axes if ax.get_title() == 'AD - NC')
    background, overlay = diff_ax.get_images()
    np.testing.assert_allclose(
        background.get_array(), plots._unit((anatomy['NC'] + anatomy['AD']) / 2)
    )
    assert overlay.get_cmap().name == 'RdBu_r'
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert 'mean Grad-CAM of AD: AD minus NC' not in labels  # the method is not named wrongly
    assert 'mean map of AD: AD minus NC' in labels and 'mean map of AD' in labels
    assert 'n=12 slices' in fig._suptitle.get_text()


# ------------------------------------------------------------ new figures: scans, CV, cv compare


def test_scan_probabilities_show_every_scan_by_true_class_with_the_threshold(tmp_path, monkeypatch):
    figures = _figures(monkeypatch)
    y, p = np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.3, 0.7, 0.4, 0.9])
    path = plots.plot_scan_probabilities(
        y, p, ['NC', 'AD'], tmp_path / 's.png', threshold=0.5, title='P(AD) per scan', context=SYN
    )
    assert _png_size(path)[0] > 200
    (fig,) = figures
    text = _all_text(fig)
    assert 'SYNTHETIC data (not MRI)' in text and 'adni_convnext_atto' in text
    assert 'n=5 scans' in text and 'test split' in text
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ['NC\n(3)', 'AD\n(2)']
    # the threshold line, and every scan drawn once: right calls as dots, wrong ones as crosses
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.get_lines())
    drawn = sorted(float(v) for c in ax.collections for v in c.get_offsets()[:, 1])
    assert drawn == sorted(p.tolist())
    wrong = [c for c in ax.collections if len(c.get_offsets()) and c.get_paths()[0] is not None]
    assert len(wrong) >= 3  # NC right, NC wrong (0.7), AD right, AD wrong (0.4)
    with pytest.raises(ValueError, match='labels for'):
        plots.plot_scan_probabilities(y, p[:3], ['NC', 'AD'], tmp_path / 'x.png', threshold=0.5)


def test_the_cv_figure_has_every_fold_with_its_ci_and_the_pooled_roc(tmp_path, monkeypatch):
    figures = _figures(monkeypatch)
    folds = [
        {'auc': 0.8, 'auc_ci': [0.6, 0.95], 'accuracy': 0.7, 'accuracy_ci': [0.5, 0.85]},
        {'auc': 0.9, 'auc_ci': [0.75, 1.0], 'accuracy': 0.8, 'accuracy_ci': [0.6, 0.9]},
        {'auc': None, 'auc_ci': None, 'accuracy': 0.6, 'accuracy_ci': [0.4, 0.8]},
    ]
    y, p = np.array([0, 0, 1, 1, 0, 1]), np.array([0.2, 0.6, 0.7, 0.9, 0.1, 0.4])
    plots.plot_cv_folds(folds, y, p, tmp_path / 'cv.png', title='3-fold', context=SYN)
    assert (tmp_path / 'cv.png').is_file()
    (fig,) = figures
    text = _all_text(fig)
    assert 'SYNTHETIC data (not MRI)' in text and 'n=6 scans, 3 folds' in text
    left, right = fig.axes[:2]
    # error bars span each fold's CI
    bars = [c for c in left.collections if c.get_segments()]
    spans = sorted(
        (round(float(s[0][1]), 3), round(float(s[1][1]), 3))
        for c in bars
        for s in c.get_segments()
        if len(s) == 2
    )
    assert (0.6, 0.95) in spans and (0.75, 1.0) in spans and (0.4, 0.8) in spans
    assert 'AUC' in ' '.join(t.get_text() for t in right.get_legend().get_texts())


def test_the_cv_compare_figure_shows_per_fold_and_pooled_differences(tmp_path, monkeypatch):
    figures = _figures(monkeypatch)
    comparison = {
        'run_a': 'runs/a',
        'run_b': 'runs/b',
        'valid': True,
        'per_fold': [
            {'fold': 0, 'scan': {'auc': {'difference': 0.05}, 'accuracy': {'difference': 0.0}}},
            {'fold': 1, 'scan': {'auc': {'difference': -0.02}, 'accuracy': {'difference': 0.1}}},
        ],
        'paired': {
            'n_scans': 40,
            'auc': {'a': 0.8, 'b': 0.82, 'difference': 0.02, 'ci': [-0.03, 0.07]},
            'accuracy': {'a': 0.7, 'b': 0.75, 'difference': 0.05, 'ci': [-0.05, 0.15]},
        },
    }
    plots.plot_cv_comparison(comparison, tmp_path / 'cmp.png', title='compared', context=SYN)
    (fig,) = figures
    text = _all_text(fig)
    assert 'SYNTHETIC data (not MRI)' in text and 'A = runs/a, B = runs/b, n=40 scans' in text
    assert 'CI [-0.030, +0.070]' in text and 'CI [-0.050, +0.150]' in text
    auc_ax = fig.axes[0]
    labels = [t.get_text() for t in auc_ax.get_yticklabels()]
    assert labels == ['fold 0', 'fold 1', 'pooled (paired bootstrap)']
    xs = sorted(
        float(line.get_xdata()[0]) for line in auc_ax.get_lines() if line.get_marker() == 'o'
    )
    assert xs == [-0.02, 0.05]
    comparison['valid'] = False
    plots.plot_cv_comparison(comparison, tmp_path / 'cmp2.png', context=SYN)
    assert 'INVALID: different folds' in _all_text(figures[-1])


def test_the_curves_title_names_the_validation_split_once(tmp_path, monkeypatch):
    figures = _figures(monkeypatch)
    plot_curves(
        [{'epoch': 1, 'train_loss': 0.7, 'val_loss': 0.8, 'val_slices': 96}],
        tmp_path / 'c.png',
        context=FigureContext('adni_convnext_atto', 'validation', True),
    )
    text = _all_text(figures[-1])
    assert 'validation split | n=96 slices' in text and text.count('validation n=') == 0
