"""Cross-validation that does not grade itself: with labels independent of the images (true AUC
0.5), the out-of-fold number must not look like skill.

Before nested selection each fold chose its best epoch and its live/EMA weights by AUC on the very
scans it then reported: with the classes shuffled across scans that reported a scan AUC of
0.646 +- 0.201 over folds. Now each fold selects on an inner split of its own training scans,
and every reported threshold-dependent number sits at a threshold chosen on the other folds.
"""

import json
import random
import shutil

import pytest

from adni_timm.synthetic import slices as synthetic
from helpers import run_train

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def null_data(tmp_path_factory):
    """SYNTHETIC slices whose class folders are shuffled across scans: labels carry no signal."""
    root = tmp_path_factory.mktemp('null')
    real = synthetic.generate(root / 'real', 14, 2, slices=3, seed=5, difficulty='demo')
    shuffled = root / 'AD_NC'
    scans = sorted({f.name.split('_')[0] for f in (real / 'train').rglob('*.jpeg')})
    random.Random(0).shuffle(scans)
    new_class = {p: ('AD' if i % 2 else 'NC') for i, p in enumerate(scans)}
    for f in (real / 'train').rglob('*.jpeg'):
        target = shuffled / 'train' / new_class[f.name.split('_')[0]] / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return shuffled


def test_a_null_label_cross_validation_reports_chance(null_data, tmp_path):
    # 3 epochs x live/EMA: 6 candidates per fold to select among. Pooled scan AUC [95% CI], 6 vs 3
    # epochs: this shuffle 0.577 [0.35, 0.80] vs 0.577 [0.34, 0.79]; two other shuffles of the
    # classes 0.653 [0.43, 0.85] vs 0.612 [0.40, 0.82] and 0.469 [0.26, 0.68] vs 0.505 [0.29, 0.71]
    run = tmp_path / 'cv'
    run_train(
        '--data-dir', null_data, '--output-dir', run,
        *'--model adni_convnext_atto --img-size 32 --batch-size 8 --epochs 3 --warmup-epochs 1'
        ' --num-workers 0 --lr 2e-3 --folds 3 --val-fraction 0.3'.split(),
    )  # fmt: skip
    result = json.loads((run / 'cv.json').read_text())
    pooled = result['out_of_fold']['scan']
    assert pooled['n'] == 28
    lo, hi = pooled['auc_ci']
    assert lo <= 0.5 <= hi, pooled  # chance is inside the 95% CI of the out-of-fold scan AUC
    for k, fold in enumerate(result['folds']):  # and no fold chose on what it reported
        split = json.loads((run / f'fold{k}' / 'split.json').read_text())
        assert split['held_out'] == fold and not set(split['val']) & set(fold)
