"""Issue 29: no confident wrong answer. A scan is decided only when at least half its slices pass
the input check (``--min-accepted``); a run that decided nothing exits 2; ``--classes`` that
contradicts the model's recorded classes is refused; a subject with two labels is an error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import cli_in_process
from hostile_files import export_with_input_check


@pytest.fixture(scope='module')
def checked(tmp_path_factory):
    """(export, images folder): scan ``good`` (4 synthetic test slices the input check passes) and
    scan ``mostly-blank`` (1 such slice and 3 blank ones, which the check refuses)."""
    from adni_timm.data import scan_split
    from adni_timm.inference import load_model

    root = tmp_path_factory.mktemp('checked')
    export, data_dir = export_with_input_check(root)
    test = scan_split(data_dir, 'test')
    reasons = load_model(export).check_inputs(test)
    passing = [s.path for s, reason in zip(test, reasons) if reason is None]
    assert len(passing) >= 5, reasons
    images = root / 'images'
    images.mkdir()
    for i, src in enumerate(passing[:4]):
        shutil.copy(src, images / f'good_{70 + i}.jpeg')
    shutil.copy(passing[4], images / 'mostly-blank_70.jpeg')
    for i in range(3):
        Image.fromarray(np.zeros((240, 256), np.uint8)).save(images / f'mostly-blank_{71 + i}.png')
    return export, images


def test_decide_scans_needs_the_fraction_of_accepted_slices():
    from adni_timm.evaluation.decision import decide_scans

    scans = ['a'] * 4 + ['b'] * 4 + ['c'] * 2
    accepted = [True, False, False, False] + [True, True, False, False] + [False, False]
    p = [0.9, 0.1, 0.1, 0.1] + [0.2, 0.4, 0.99, 0.99] + [0.5, 0.5]
    a, b, c = decide_scans(scans, accepted, p, threshold=0.5, positive='AD', negative='NC')
    assert (a.scan, a.predicted, a.p_positive, a.n_accepted, a.n_slices) == ('a', None, None, 1, 4)
    assert (
        a.reason
        == 'no decision: 1 of 4 slices passed the input check, 2 needed (--min-accepted 0.5)'
    )
    assert b.predicted == 'NC' and b.p_positive == pytest.approx(0.3, rel=1e-9)  # half is enough
    assert c.predicted is None and c.n_accepted == 0
    (a_any,) = decide_scans(['a'] * 4, accepted[:4], p[:4], 0.5, 'AD', 'NC', min_accepted=0.25)
    assert a_any.predicted == 'AD' and a_any.p_positive == pytest.approx(0.9, rel=1e-9)
    with pytest.raises(ValueError, match='--min-accepted 1.5'):
        decide_scans(['a'], [True], [0.5], 0.5, 'AD', 'NC', min_accepted=1.5)


def test_evaluate_images_decides_a_scan_only_when_half_its_slices_pass(checked, capsys, tmp_path):
    export, images = checked
    code, out, err = cli_in_process(
        capsys, 'evaluate', '--model', export, '--images', images, '--output-dir', tmp_path / 'o'
    )
    assert code == 0, err
    rows = {
        line.split()[0]: line for line in out.splitlines() if line.startswith(('good', 'mostly'))
    }
    assert 'no decision: 1 of 4 slices passed the input check' in rows['mostly-blank']
    assert rows['good'].split()[-1] in ('AD', 'NC')  # decided: all 4 passed
    table = (tmp_path / 'o' / 'scans.csv').read_text()
    assert 'no decision: 1 of 4' in table


def test_evaluate_images_exits_2_when_no_input_got_a_decision(checked, capsys, tmp_path):
    export, images = checked
    only = tmp_path / 'only'
    only.mkdir()
    for f in images.glob('mostly-blank_*'):
        shutil.copy(f, only / f.name)
    code, out, err = cli_in_process(
        capsys, 'evaluate', '--model', export, '--images', only, '--output-dir', tmp_path / 'o'
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith('adni-evaluate: error: no input got a decision')
    assert '1 scan' in line and '--min-accepted' in line
    # ... unless asked for less
    code, out, err = cli_in_process(
        capsys,
        'evaluate',
        '--model',
        export,
        '--images',
        only,
        '--min-accepted',
        '0.25',
        '--output-dir',
        tmp_path / 'o2',
    )
    assert code == 0, err


def test_the_demo_gives_no_decision_below_the_fraction(checked):
    from adni_timm.app.demo import load, predict_files

    export, images = checked
    result = predict_files(load(export), sorted(str(p) for p in images.iterdir()))
    by_scan = {r['scan']: r for r in result['scans']}
    blank = by_scan['mostly-blank']
    assert blank['predicted'] is None and 'no decision: 1 of 4 slices' in blank['reason']
    assert by_scan['good']['predicted'] in ('AD', 'NC')


def test_evaluate_refuses_classes_that_contradict_the_model(checked, capsys, tmp_path):
    export, images = checked
    code, out, err = cli_in_process(
        capsys,
        'evaluate',
        '--model',
        export,
        '--images',
        images,
        '--classes',
        'AD,NC',
        '--output-dir',
        tmp_path / 'o',
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert '--classes AD,NC' in line and 'NC,AD' in line
    code, out, err = cli_in_process(
        capsys,
        'evaluate',
        '--model',
        export,
        '--images',
        images,
        '--classes',
        'NC,AD',
        '--output-dir',
        tmp_path / 'o2',
    )
    assert code == 0, err


def test_a_subject_with_two_labels_is_one_error(tmp_path):
    from adni_timm.prepare.labels import LabelsError, read_labels

    path = tmp_path / 'labels.csv'
    path.write_text('subject,label\n002_S_0295,NC\n011_S_0002,AD\n002_S_0295,AD\n')
    with pytest.raises(LabelsError) as info:
        read_labels(path)
    message = str(info.value)
    assert '002_S_0295' in message and 'line 2 (NC)' in message and 'line 4 (AD)' in message
    assert '011_S_0002' not in message
    # the same label twice, or two visits with their own labels, are fine
    path.write_text('subject,label,visit\n002_S_0295,NC,bl\n002_S_0295,AD,m24\n002_S_0295,NC,bl\n')
    assert len(read_labels(path).rows) == 3
