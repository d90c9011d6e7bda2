"""The slice-window shortcut: how well slice numbers alone give the class.

Each AD_NC scan's 20 slices come from one of a few slice-number windows, and public audits found
the window alone predicts the class of 68% of the scans. A model can score by recognising the
slice level instead of the anatomy, so every report puts the model's scan accuracy beside the
accuracy of a classifier that sees nothing but the slice numbers (``slice_number_baseline``):
fitted on the training scans and scored on the evaluated ones, or cross-validated over the scans
when there is no separate training set. The classifier is a scikit-learn decision tree on each
scan's first and last slice number and slice count (a window is exactly that), with the scans
as the unit.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    'Window',
    'ScanWindows',
    'ShortcutBaseline',
    'scan_windows',
    'window_lines',
    'slice_number_baseline',
    'accuracy_per_window',
    'clearly_above',
    'shortcut_lines',
    'baseline_for',
    'evaluation_shortcut',
    'shortcut_summary',
]

CV_FOLDS = 5
MARGIN = 0.05  # "clearly above" without a CI: at least this much scan accuracy over the baseline


@dataclass(frozen=True, order=True)
class Window:
    """The slice numbers a scan covers: first, last, and how many files."""

    first: int
    last: int
    n: int

    def __str__(self) -> str:
        return f'{self.first}-{self.last}'


@dataclass(frozen=True)
class ScanWindows:
    """Per scan (sorted): its window and class label, the unit the baseline works on."""

    scans: tuple[str, ...]
    windows: tuple[Window, ...]
    labels: tuple[int, ...]

    def features(self) -> np.ndarray:
        return np.array([[w.first, w.last, w.n] for w in self.windows], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.scans)


@dataclass(frozen=True)
class ShortcutBaseline:
    """Scan accuracy of the slice-number classifier, and how it was measured."""

    accuracy: float | None  # None: no slice numbers, or too few scans to measure
    method: str  # 'train -> test' | '5-fold cross-validation' | why it was not measured
    n_scans: int  # scans scored
    majority_accuracy: float | None  # always the most frequent training class, for scale
    predictions: dict[str, int] | None = None  # scan -> predicted label (scored scans)

    def sentence(self) -> str:
        if self.accuracy is None:
            return f'slice-number baseline: not measured ({self.method})'
        return (
            f'slice-number baseline: {100 * self.accuracy:.1f}% of {self.n_scans} scans '
            f'({self.method}; always the majority class: {100 * self.majority_accuracy:.1f}%)'
        )

    def as_metrics(self) -> dict:
        return {
            'slice_number_accuracy': self.accuracy,
            'method': self.method,
            'n_scans': self.n_scans,
            'majority_accuracy': self.majority_accuracy,
        }


def scan_windows(slices: Sequence) -> ScanWindows:
    """The window of every scan with slice numbers (``Slice`` objects; files without a slice
    number are left out)."""
    numbers, labels = defaultdict(list), {}
    for s in slices:
        if s.slice_index is not None:
            numbers[s.scan].append(s.slice_index)
            labels[s.scan] = s.label
    scans = tuple(sorted(numbers))
    return ScanWindows(
        scans,
        tuple(Window(min(numbers[p]), max(numbers[p]), len(numbers[p])) for p in scans),
        tuple(labels[p] for p in scans),
    )


def window_lines(split: str, windows: ScanWindows, classes: Sequence[str], top: int = 12):
    """Per class: its scans' windows, most frequent first (``67-86 x120``)."""
    lines = []
    for label, name in enumerate(classes):
        counts = Counter(str(w) for w, y in zip(windows.windows, windows.labels) if y == label)
        if not counts:
            continue
        shown = ', '.join(f'{w} x{n}' for w, n in counts.most_common(top))
        more = f', +{len(counts) - top} more' if len(counts) > top else ''
        lines.append(f'{split:<6} {name:<6} slice windows ({len(counts)}): {shown}{more}')
    return lines


def _tree():
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=0)


def slice_number_baseline(train: ScanWindows, test: ScanWindows | None = None) -> ShortcutBaseline:
    """Scan accuracy of a classifier that sees only slice numbers: fitted on ``train`` and scored
    on ``test``; with no ``test``, ``CV_FOLDS``-fold cross-validation over ``train``'s scans
    (stratified, seeded; fewer folds for a small class)."""
    if not len(train) and (test is None or not len(test)):
        return ShortcutBaseline(None, 'no slice numbers in the file names', 0, None)
    if test is not None and len(test) and len(train):
        if len(set(train.labels)) < 2:
            return ShortcutBaseline(None, 'the training scans hold one class', len(test), None)
        model = _tree().fit(train.features(), train.labels)
        predicted = model.predict(test.features())
        y = np.asarray(test.labels)
        majority = Counter(train.labels).most_common(1)[0][0]
        return ShortcutBaseline(
            float(np.mean(predicted == y)),
            'train -> test',
            len(test),
            float(np.mean(y == majority)),
            dict(zip(test.scans, (int(p) for p in predicted))),
        )
    scans = train if test is None or not len(test) else test
    counts = Counter(scans.labels)
    folds = min(CV_FOLDS, min(counts.values()) if counts else 0)
    if len(counts) < 2 or folds < 2:
        return ShortcutBaseline(
            None, 'too few scans of each class to cross-validate', len(scans), None
        )
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(scans.labels)
    predicted = cross_val_predict(
        _tree(), scans.features(), y, cv=StratifiedKFold(folds, shuffle=True, random_state=0)
    )
    majority = counts.most_common(1)[0][0]
    return ShortcutBaseline(
        float(np.mean(predicted == y)),
        f'{folds}-fold cross-validation',
        len(scans),
        float(np.mean(y == majority)),
        dict(zip(scans.scans, (int(p) for p in predicted))),
    )


def accuracy_per_window(windows: ScanWindows, correct: dict[str, bool], baseline=None):
    """Per window (sorted): scans, the model's scan accuracy (``correct``: scan -> right or
    wrong), and the baseline's on the same scans when its predictions are given."""
    rows = defaultdict(lambda: [0, 0, 0])
    for scan, w, y in zip(windows.scans, windows.windows, windows.labels):
        if scan not in correct:
            continue
        row = rows[str(w)]
        row[0] += 1
        row[1] += bool(correct[scan])
        if baseline and baseline.predictions and scan in baseline.predictions:
            row[2] += baseline.predictions[scan] == y
    has_baseline = bool(baseline and baseline.predictions)
    return [
        {
            'window': w,
            'n_scans': n,
            'accuracy': right / n,
            'slice_number_accuracy': base / n if has_baseline else None,
        }
        for w, (n, right, base) in sorted(rows.items(), key=lambda kv: _window_order(kv[0]))
    ]


def _window_order(text: str):
    first, last = text.split('-')
    return int(first), int(last)


def clearly_above(accuracy: float, ci: Sequence[float] | None, baseline: float | None) -> bool:
    """Whether a scan accuracy is clearly above the baseline: its 95% CI's lower end above it, or
    (without a CI) at least ``MARGIN`` above it. True when there is no baseline."""
    if baseline is None:
        return True
    if ci is not None and ci[0] is not None:
        return ci[0] > baseline
    return accuracy >= baseline + MARGIN


def baseline_for(found) -> ShortcutBaseline:
    """The baseline of a data folder's splits (``{split: slices}``): train -> test when both
    exist, else cross-validated over the one there is."""
    windows = {split: scan_windows(slices) for split, slices in found.items()}
    if 'train' in windows and 'test' in windows:
        return slice_number_baseline(windows['train'], windows['test'])
    if not windows:
        return ShortcutBaseline(None, 'no split could be read', 0, None)
    return slice_number_baseline(windows.get('train') or next(iter(windows.values())))


def shortcut_lines(found, classes: Sequence[str]) -> list[str]:
    """The check report's lines: per split and class the scans' slice windows, then the
    slice-number baseline."""
    lines = []
    for split, slices in found.items():
        lines += window_lines(split, scan_windows(slices), classes)
    return lines + [baseline_for(found).sentence()]


def evaluation_shortcut(
    train_slices: Sequence | None,
    eval_slices: Sequence,
    positive: int,
    scan_correct: dict[str, bool],
    scan_accuracy: float,
    scan_accuracy_ci: Sequence[float] | None = None,
) -> dict:
    """metrics.json's ``shortcut``: the slice-number baseline on the evaluated scans (fitted on
    ``train_slices`` when given, else cross-validated over the evaluated scans), the model's scan
    accuracy beside it, whether the model is clearly above it, and both per slice window.

    Labels are the reported decision (``positive`` vs the rest), as the scan accuracy is.
    """

    def decision(slices):
        return [replace(s, label=int(s.label == positive)) for s in slices]

    evaluated = scan_windows(decision(eval_slices))
    if train_slices:
        base = slice_number_baseline(scan_windows(decision(train_slices)), evaluated)
    else:
        base = slice_number_baseline(evaluated)
    return {
        **base.as_metrics(),
        'scan_accuracy': scan_accuracy,
        'clearly_above': clearly_above(scan_accuracy, scan_accuracy_ci, base.accuracy),
        'per_window': accuracy_per_window(evaluated, scan_correct, base),
    }


def shortcut_summary(shortcut: dict | None) -> list[str]:
    """The evaluation summary's lines: the baseline beside the model, a flag when the model is
    not clearly above it, and the scan accuracy per window."""
    if not shortcut or shortcut.get('slice_number_accuracy') is None:
        return []
    base, acc = shortcut['slice_number_accuracy'], shortcut['scan_accuracy']
    lines = [
        f"slice-number baseline {100 * base:.1f}% ({shortcut['method']}) vs the model's scan "
        f'accuracy {100 * acc:.1f}%'
    ]
    if not shortcut.get('clearly_above', True):
        lines.append(
            'WARNING: the model is not clearly above the slice-number baseline (its scan '
            'accuracy CI reaches it): its score may come from the slice level, not the anatomy'
        )
    rows = shortcut.get('per_window') or []
    if rows:
        lines.append(
            'scan accuracy per slice window: '
            + ', '.join(
                f'{r["window"]} {100 * r["accuracy"]:.0f}% of {r["n_scans"]}'
                + (
                    f' (baseline {100 * r["slice_number_accuracy"]:.0f}%)'
                    if r.get('slice_number_accuracy') is not None
                    else ''
                )
                for r in rows
            )
        )
    return lines
