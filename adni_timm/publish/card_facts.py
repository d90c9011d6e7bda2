"""The card's facts about the task and the data: which classes, which is positive, where the
slices came from; and the small formatters every section uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


from ..data import positive_index
from ..utils.display import fmt_ci
from ..export.format import ExportSettings


# diagnostic groups a class list may name (ADNI's and the usual ones); others appear as written
CLASS_NAMES = {
    'NC': 'normal control',
    'CN': 'cognitively normal',
    'SMC': 'significant memory concern',
    'MCI': 'mild cognitive impairment',
    'EMCI': 'early mild cognitive impairment',
    'LMCI': 'late mild cognitive impairment',
    'AD': "Alzheimer's disease",
}
_MCI_LIKE = {'MCI', 'EMCI', 'LMCI', 'SMC'}
_ADNI_NOTE = 'ADNI AD_NC'  # DataNote's default: a data folder without a note

# --------------------------------------------------------------------------------------------------
# what the data and the task are, derived from the export


@dataclass(frozen=True)
class DataSource:
    """What the model was trained on, as the export records it.

    ``kind``: ``synthetic`` (adni_timm's generator), ``adni`` (the ADNI AD_NC slices: a data folder
    without a note), ``prepared`` (scans cut into slices by adni-prepare, its recipe recorded) or
    ``other`` (a folder whose note names another dataset). ``adni``: ADNI data, so ADNI's
    population, labels, Data Use Agreement and acknowledgement apply.
    """

    kind: str
    name: str
    adni: bool

    @classmethod
    def of(cls, settings: ExportSettings) -> DataSource:
        note = (settings.data or _ADNI_NOTE).strip()
        if settings.synthetic:
            return cls('synthetic', 'SYNTHETIC ADNI-layout data (not ADNI)', False)
        if settings.preprocessing:
            recipe = settings.preprocessing
            said = ' '.join(
                str(recipe.get(k, '')) for k in ('note', 'source', 'labels_format', 'dataset')
            )
            named = note if note != _ADNI_NOTE else str(recipe.get('note') or 'T1 scans')
            return cls('prepared', named, 'adni' in f'{named} {said}'.lower())
        if note == _ADNI_NOTE:
            return cls('adni', _ADNI_NOTE, True)
        return cls('other', note, 'adni' in note.lower())

    @property
    def synthetic(self) -> bool:
        return self.kind == 'synthetic'


@dataclass(frozen=True)
class Task:
    """The classes in logit order and the one decision the card reports: positive vs the rest."""

    classes: tuple[str, ...]

    @property
    def positive(self) -> str:
        return self.classes[positive_index(self.classes)]

    @property
    def negatives(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c != self.positive)

    @property
    def negative(self) -> str:
        """The negative side, as a label: ``NC``, or ``not AD (NC, MCI)``."""
        if len(self.negatives) == 1:
            return self.negatives[0]
        return f'not {self.positive} ({", ".join(self.negatives)})'

    @property
    def negative_scans(self) -> str:
        """Who the negatives are, in a sentence: ``NC``, or ``NC or MCI``."""
        return ' or '.join(self.negatives) if len(self.negatives) < 3 else self.negative

    @property
    def short_negative(self) -> str:
        return self.negatives[0] if len(self.negatives) == 1 else f'not-{self.positive}'

    @property
    def sees_mci(self) -> bool:
        return bool(_MCI_LIKE & set(self.classes))

    def named(self, name: str) -> str:
        return f'{CLASS_NAMES[name]} ({name})' if name in CLASS_NAMES else f'`{name}`'

    def listing(self) -> str:
        names = [self.named(c) for c in self.classes]
        return ' or '.join(names) if len(names) == 2 else ', '.join(names[:-1]) + f' or {names[-1]}'

    @property
    def title(self) -> str:
        return f'{self.positive} vs {self.negative}'

    def metric_names(self) -> dict[str, str]:
        """metrics.json key -> the name the card gives it."""
        return {
            'accuracy': 'Accuracy',
            'balanced_accuracy': 'Balanced accuracy',
            'sensitivity': f'Sensitivity ({self.positive} recall)',
            'specificity': f'Specificity ({self.short_negative} recall)',
            'precision': f'Precision ({self.positive})',
            'f1': f'F1 ({self.positive})',
            'auc': 'ROC AUC',
        }


def _fmt_ci(values: dict[str, Any], key: str) -> str:
    return fmt_ci(values.get(key), values.get(f'{key}_ci'), missing='n/a')


def _lower_first(name: str) -> str:
    """'Sensitivity (AD recall)' -> 'sensitivity (AD recall)'; 'ROC AUC' stays."""
    return name if name[:2].isupper() else name[:1].lower() + name[1:]


def _threshold_origin(source: str | None) -> str:
    """What the card may say about where the threshold came from."""
    return {
        'validation': 'chosen on the validation scans (never on test)',
        'out-of-fold': 'chosen on the out-of-fold predictions of cross-validation (never on test)',
        'cli': 'set by hand (--threshold)',
        'fixed': 'the fixed default 0.5',
    }.get(source or '', 'of unknown origin')


def _table(header: list[str], rows: list[tuple]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
