"""When a scan gets a decision: only when enough of its slices pass the input check.

A scan whose slices the input check mostly refuses (a failed registration, another modality, a
head cut at the wrong levels) is not the kind of input the model was trained on; the mean P(AD) of
the one or two slices that slipped through is a confident answer about nothing. So a scan is
decided only when at least ``min_accepted`` of its slices (a fraction, default one half) pass;
otherwise it gets "no decision" and the count. Every front end that decides scans (``evaluate
--images``, the web demo) applies this one rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ['MIN_ACCEPTED', 'ScanDecision', 'check_min_accepted', 'decide_scans']

MIN_ACCEPTED = 0.5  # at least half of a scan's slices must pass the input check


@dataclass(frozen=True)
class ScanDecision:
    """One scan (a group of slices): how many passed the input check, and the decision.

    ``p_positive`` is the mean calibrated P(AD) over the accepted slices and ``predicted`` the
    decision at the threshold; both are None when the scan got no decision (``reason`` says why).
    """

    scan: str
    n_slices: int  # every slice of the scan
    n_accepted: int  # those the input check passed
    p_positive: float | None
    predicted: str | None
    reason: str | None = None

    @property
    def decided(self) -> bool:
        return self.predicted is not None

    @property
    def n_refused(self) -> int:
        return self.n_slices - self.n_accepted


def check_min_accepted(value: float) -> float:
    """``value`` as a fraction in [0, 1]; ValueError naming the fix otherwise."""
    value = float(value)
    if not 0.0 <= value <= 1.0 or value != value:
        raise ValueError(
            f"--min-accepted {value:g}: give the fraction of a scan's slices that must pass "
            f'the input check, between 0 and 1 (default {MIN_ACCEPTED})'
        )
    return value


def decide_scans(
    scans: Sequence[str],
    accepted: Sequence[bool],
    p_positive: Sequence[float],
    threshold: float,
    positive: str,
    negative: str,
    min_accepted: float = MIN_ACCEPTED,
) -> list[ScanDecision]:
    """Per scan (sorted ids): the mean ``p_positive`` over its accepted slices and the decision
    at ``threshold``, when at least ``min_accepted`` of its slices were accepted (and at least
    one); else no decision, with the count.

    ``scans``, ``accepted`` and ``p_positive`` run over the same slices (``p_positive`` of a
    refused slice is ignored).
    """
    min_accepted = check_min_accepted(min_accepted)
    if not len(scans) == len(accepted) == len(p_positive):
        raise ValueError(
            f'{len(scans)} scan ids, {len(accepted)} input-check results and '
            f'{len(p_positive)} probabilities: one of each per slice'
        )
    ids = np.asarray([str(s) for s in scans], dtype=object)
    ok = np.asarray(accepted, dtype=bool)
    p = np.asarray(p_positive, dtype=np.float64)
    out = []
    for scan in sorted(set(ids.tolist())):
        mine = ids == scan
        n, n_ok = int(mine.sum()), int((mine & ok).sum())
        if n_ok == 0 or n_ok < min_accepted * n:
            need = max(1, int(np.ceil(min_accepted * n)))
            reason = (
                f'no decision: {n_ok} of {n} slice{"s" if n != 1 else ""} passed the input '
                f'check, {need} needed (--min-accepted {min_accepted:g})'
            )
            out.append(ScanDecision(scan, n, n_ok, None, None, reason))
            continue
        mean = float(p[mine & ok].mean())
        out.append(ScanDecision(scan, n, n_ok, mean, positive if mean >= threshold else negative))
    return out
