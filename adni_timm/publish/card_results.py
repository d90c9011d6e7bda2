"""The card's results sections: the evaluation table and its shortcut baseline, the errors, and
cross-validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


from ..utils.display import fmt, is_number
from ..run import EvalCheck, EvalFolder, Run

from .card_facts import DataSource, Task, _fmt_ci, _lower_first, _threshold_origin, _table


# --------------------------------------------------------------------------------------------------
# what the data and the task are, derived from the export


def _evaluation(
    metrics: dict[str, Any] | None,
    eval_facts: EvalCheck | None,
    plots: Sequence[str],
    source: DataSource,
    task: Task,
) -> str:
    lines = ['## Evaluation', '']
    if not metrics:
        lines.append(
            '**Not evaluated on a held-out test split.** Run `adni-evaluate` and publish again '
            'with `--eval OUT/metrics.json` before drawing any conclusion from this model.'
        )
    else:
        problems = eval_facts.problems if eval_facts is not None else []
        if problems:
            lines += [
                f'> **Unverified evaluation:** these results could not be '
                f'matched to the published weights ({"; ".join(problems)}). '
                f'They were published anyway (`--force-eval`).',
                '',
            ]
        split = metrics.get('split', 'test')
        slices, scans = metrics.get('slice') or {}, metrics.get('scan') or {}
        people = metrics.get('subject') if isinstance(metrics.get('subject'), dict) else None
        levels = [('Slice', slices), ('Scan', scans)] + ([('Subject', people)] if people else [])
        cal = metrics.get('calibration') or {}
        pos = task.positive
        unit = (metrics.get('ci') or {}).get('resampled') or 'scans'
        lines += [
            f'On the **{source.name} {split}** split ({slices.get("n", "?")} slices, '
            f'{scans.get("n", "?")} scans'
            + (f', {people.get("n", "?")} subjects' if people else '')
            + f'), at threshold P({pos}) >= {fmt(metrics.get("threshold"))}, '
            f'{_threshold_origin(metrics.get("threshold_source"))}. Scan-level: the '
            f'probability of a scan is the mean over its slices'
            + ("; subject-level: the mean over the subject's scans" if people else '')
            + f'. Brackets: 95% confidence intervals where computed (bootstrap over {unit}).',
            '',
            _table(
                ['Metric', *(f'{name}-level' for name, _ in levels)],
                [
                    (name, *(_fmt_ci(values, key) for _, values in levels))
                    for key, name in task.metric_names().items()
                    if any(key in values for _, values in levels)
                ],
            ),
        ]
        if cal:
            lines += [
                '',
                f'Calibration: expected calibration error {fmt(cal.get("ece_slice"))} (slices), '
                f'{fmt(cal.get("ece_scan"))} (scans) with temperature '
                f'{fmt(cal.get("temperature"))}; {fmt(cal.get("ece_slice_uncalibrated"))} / '
                f'{fmt(cal.get("ece_scan_uncalibrated"))} without it.',
            ]
        shortcut = _shortcut_paragraph(metrics.get('shortcut'))
        if shortcut:
            lines += ['', shortcut]
        for level, values in (('Slice', slices), ('Scan', scans)):
            table = _confusion_table(values.get('confusion_matrix'), task)
            if table:
                lines += [
                    '',
                    f'{level}-level confusion matrix (rows: true, columns: predicted):',
                    '',
                    table,
                ]
    captions = {
        Run.CURVES: 'Training curves',
        EvalFolder.CONFUSION: 'Scan-level confusion matrix',
        EvalFolder.ROC: 'ROC curve',
        EvalFolder.RELIABILITY: 'Reliability diagram (calibration)',
        EvalFolder.POPULATION_MAPS: (
            f'Mean Grad-CAM over all {task.positive} and all {task.short_negative} test slices (an '
            f'average, no scan)'
        ),
    }
    figures = [f'![{captions[name]}]({name})' for name in captions if name in plots]
    if figures:
        lines += ['', *figures]
    return '\n'.join(lines)


def _cross_validation(cv: dict[str, Any] | None, task: Task) -> str:
    if not cv:
        return ''
    summary = cv.get('summary') or {}
    pooled = cv.get('out_of_fold') or {}
    names = task.metric_names()
    rows = []
    for level in ('scan', 'slice'):
        for key in ('auc', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity'):
            entry = (summary.get(level) or {}).get(key)
            if entry and is_number(entry.get('mean')):
                per_fold = ', '.join(fmt(v) for v in entry.get('per_fold', []))
                mean_sd = fmt(entry['mean']) + (
                    f' ± {fmt(entry["sd"])}' if is_number(entry.get('sd')) else ''
                )
                rows.append(
                    (
                        f'{level.capitalize()}-level {_lower_first(names[key])}',
                        mean_sd,
                        per_fold,
                        _fmt_ci(pooled.get(level) or {}, key),
                    )
                )
    k, select = cv.get('k'), cv.get('select')
    if select in ('inner', 'last'):
        how = (
            f'Nested selection: each fold model {_selection_words(select)}, so no fold selected '
            f'anything on the scans it reports. Each fold is scored on its held-out scans '
            f"at a threshold chosen on the *other* folds' out-of-fold predictions (no number here "
            f'sits at a threshold tuned on the predictions it scores). "Pooled out-of-fold": every '
            f'training scan predicted by the fold model that never saw them, each at its '
            f"fold's threshold, with 95% bootstrap confidence intervals over scans."
        )
    else:
        how = (
            'How the folds selected their epochs and thresholds is not recorded in this cv.json '
            '(an older adni-timm): each fold may have chosen its epoch and threshold on the '
            'scans it reports, so these numbers may be optimistic.'
        )
    text = (
        f'## Cross-validation\n\n{k}-fold cross-validation by scan (seed {cv.get("seed")}) on '
        f'the training scans. {how}\n\n'
        + _table(
            ['Held-out metric', 'mean ± sd over folds', 'per fold', 'pooled out-of-fold'], rows
        )
    )
    points = []
    refit, ensemble = cv.get('refit') or {}, cv.get('ensemble') or {}
    if refit:
        points.append(
            f'- **refit** (the published model): threshold {fmt(refit.get("threshold"))} '
            f'({refit.get("threshold_rule", "?")}), temperature {fmt(refit.get("temperature"))} '
            f'({refit.get("calibration", "fitted on the out-of-fold predictions")})'
        )
    if ensemble:
        temps = ', '.join(fmt(t) for t in ensemble.get('temperatures') or [])
        points.append(
            f'- **fold ensemble** (`adni-evaluate --model RUN`, the mean of the {k} fold models): '
            f'threshold {fmt(ensemble.get("threshold"))} ({ensemble.get("threshold_rule", "?")}), '
            f'member temperatures {temps} ({ensemble.get("calibration", "?")})'
        )
    if points:
        text += (
            '\n\nThe two operating points, each chosen on all out-of-fold predictions (and so not '
            'scored in the table above):\n\n' + '\n'.join(points)
        )
    if cv.get('best_epochs'):
        text += (
            f'\n\nThe folds chose epochs {", ".join(map(str, cv["best_epochs"]))} and weights '
            f'{", ".join(map(str, cv.get("best_weights") or []))}.'
        )
    return text


def _shortcut_paragraph(shortcut: dict[str, Any] | None) -> str:
    """The slice-number baseline beside the model's scan accuracy, and per slice window."""
    if not shortcut or not is_number(shortcut.get('slice_number_accuracy')):
        return ''
    base, acc = shortcut['slice_number_accuracy'], shortcut.get('scan_accuracy')
    if not is_number(acc):
        return ''
    text = (
        f'**Slice-number baseline: {100 * base:.1f}%.** A classifier that sees only the slice '
        f'numbers of each scan (its slice window, nothing of the image) reaches this scan accuracy '
        f'on the same scans ({shortcut.get("method")}); this model reaches {100 * acc:.1f}%'
    )
    if shortcut.get('clearly_above', True):
        text += '.'
    else:
        text += (
            ', **not clearly above it**: its score may come from recognising the slice level '
            'rather than the anatomy.'
        )
    rows = shortcut.get('per_window') or []
    if 1 < len(rows) <= 12:
        text += '\n\n' + _table(
            ['Slice window', 'Scans', 'Model scan accuracy', 'Slice-number baseline'],
            [
                (
                    r['window'],
                    r['n_scans'],
                    f'{100 * r["accuracy"]:.1f}%',
                    f'{100 * r["slice_number_accuracy"]:.1f}%'
                    if is_number(r.get('slice_number_accuracy'))
                    else '',
                )
                for r in rows
            ],
        )
    return text


def _error_sentence(scans: dict[str, Any], task: Task) -> str:
    sens, spec = scans.get('sensitivity'), scans.get('specificity')
    if not (is_number(sens) and is_number(spec)):
        return ''
    miss, alarm = 1 - sens, 1 - spec
    pos, neg, n = task.positive, task.negative_scans, scans.get('n', '?')
    if math.isclose(miss, 0, abs_tol=1e-12) and math.isclose(alarm, 0, abs_tol=1e-12):
        return (
            f'On the test split it missed no {pos} scan and flagged no {neg} scan as {pos} '
            f'({n} scans): there is no error to compare, and a perfect score on this many '
            f'scans still leaves the confidence intervals above wide. '
        )
    rates = (
        f'On the test split it misses {100 * miss:.1f}% of {pos} scans and flags '
        f'{100 * alarm:.1f}% of {neg} scans as {pos}'
    )
    if math.isclose(miss, alarm, abs_tol=1e-9):
        return f'{rates}: the two errors are equally frequent. '
    more = (
        f'missed {pos} (false negatives)'
        if miss > alarm
        else f'false alarms on {neg} (false positives)'
    )
    return f'{rates}; the more frequent error is {more}. '


def _confusion_table(cm: Any, task: Task) -> str:
    """The confusion matrix with its labels: 2 x 2 is the reported decision (positive vs the
    rest), a square of the class count is per class."""
    if not cm:
        return ''
    if len(cm) == 2:
        labels = [task.negative, task.positive]
    elif len(cm) == len(task.classes):
        labels = list(task.classes)
    else:
        return ''
    return _table(
        ['', *(f'pred {label}' for label in labels)],
        [(f'true {label}', *row) for label, row in zip(labels, cm)],
    )


def _folds_summary(
    folds: dict[str, Any], refit_split: dict[str, Any] | None, cv: dict[str, Any] | None
) -> str:
    groups = folds.get('folds') or []
    k = folds.get('k', len(groups))
    scans = sum(len(g) for g in groups)
    text = (
        f'**Cross-validation by scan, then a refit** (no top-level split: a cross-validation '
        f'run has none). The {scans} training scans were cut into {k} folds (seed '
        f'{folds.get("seed", "?")}, `folds.json`). Each fold model trained on the other {k - 1} '
        f'folds, {_selection_words((cv or {}).get("select"))}, and only predicted its own '
        f'held-out fold.'
    )
    if refit_split:
        n_refit = len(refit_split.get('train', [])) + len(refit_split.get('val', []))
        text += (
            f' The published model is the refit: one model trained on all {n_refit} training '
            f'scans (`refit/split.json`), no validation split; its operating point comes from '
            f'the out-of-fold predictions.'
        )
    return text


def _selection_words(select: str | None) -> str:
    if select == 'inner':
        return (
            'chose its epoch, its live or EMA weights and its temperature on an inner validation '
            'split of its own training scans (`select: inner`)'
        )
    if select == 'last':
        return 'selected nothing: a fixed number of epochs, the last weights (`select: last`)'
    return (
        'selected its epoch in a way this cv.json does not record (an older run: each fold may '
        'have selected on the scans it reports, so its numbers may be optimistic)'
    )
