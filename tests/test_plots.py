"""adni_timm.plots writes real PNGs and refuses what it cannot draw."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from adni_timm.plots import plot_confusion_matrix, plot_curves, plot_roc


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
        [[5, 1], [2, 6]], ['NC', 'AD'], tmp_path / 'sub' / 'cm.png', title='patients'
    )
    assert out == tmp_path / 'sub' / 'cm.png' and _png_size(out)[0] > 100
    assert texts == ['5\n83%', '1\n17%', '2\n25%', '6\n75%']


def test_roc_png_and_single_class_refused(tmp_path):
    y, p = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    assert _png_size(plot_roc(y, p, tmp_path / 'roc.png', title='patients', threshold=0.5))[0] > 100
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
            'val_patient_auc': None if e == 0 else 0.6 + e / 30,
            'ema_val_patient_auc': 0.7,
            'val_patient_accuracy': 0.6,
            'ema_val_patient_accuracy': 0.65,
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
        'patient-level AUC (validation)',
        'patient-level accuracy (validation)',
        'learning rate',
    ]
    lines = dict(panels)
    loss = {label: (colour, style) for label, colour, style, _ in lines['loss']}
    assert set(loss) == {'train', 'validation', 'validation (EMA)', 'kept: epoch 4 (ema)'}
    # one colour per metric
    assert loss['validation'][0] == loss['validation (EMA)'][0] != loss['train'][0]
    # live solid, EMA dashed
    assert (loss['validation'][1], loss['validation (EMA)'][1]) == ('-', '--')
    auc = {label: xs for label, _, _, xs in lines['patient-level AUC (validation)']}
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
