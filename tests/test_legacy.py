"""Files, flags and exports written when a scan (a file-name prefix) was called a patient still load
(issue 26): every reader renames the old keys, values and columns on the way in."""

import json

from adni_timm.config import make_config


def test_files_written_when_a_scan_was_a_patient_still_load(tmp_path):
    from adni_timm.utils.legacy import upgrade
    from adni_timm.run import EvalFolder, Run

    old_metrics = {
        'slice': {'n': 8, 'auc': 0.9},
        'patient': {'n': 2, 'auc': 1.0, 'auc_ci': [1, 1]},
        'calibration': {'ece_patient': 0.1, 'ece_patient_uncalibrated': 0.2},
        'file_is_patient': False,
    }
    new = upgrade(old_metrics)
    assert new['scan'] == old_metrics['patient'] and 'patient' not in new
    assert new['calibration'] == {'ece_scan': 0.1, 'ece_scan_uncalibrated': 0.2}
    run = Run(tmp_path / 'run')
    run.path.mkdir()
    (run.path / 'split.json').write_text(
        json.dumps({'level': 'patient', 'seed': 0, 'train': ['111'], 'val': ['222']})
    )
    assert run.read_split()['level'] == 'scan' and run.read_split()['train'] == ['111']
    assert run.seen_scans() == {'111', '222'}
    folder = EvalFolder(tmp_path / 'eval')
    folder.path.mkdir()
    (folder.path / 'patients.csv').write_text('patient,label\n333,AD\n')
    assert folder.evaluated_scans() == {'333'}
    cfg = make_config(
        {'file_is_patient': True, 'split_level': 'patient', 'best_metric': 'patient_auc'}
    )
    assert cfg.file_is_scan and cfg.split_level == 'scan' and cfg.best_metric == 'scan_auc'


def test_the_old_flag_names_still_parse():
    from adni_timm.cli.check import build_parser as check_parser
    from adni_timm.cli.synthetic import build_parser as synthetic_parser
    from adni_timm.cli.train import build_parser as train_parser

    assert train_parser().parse_args(['--file-is-patient']).file_is_scan == 'true'
    assert check_parser().parse_args(['.', '--file-is-patient']).file_is_scan is True
    args = synthetic_parser().parse_args(['out', '--train-patients', '3', '--test-patients', '2'])
    assert (args.train_subjects, args.test_subjects) == (3, 2)


def test_an_adni_prepare_folder_written_before_still_reads(tmp_path):
    from adni_timm.prepare.run import _read_records

    (tmp_path / 'records').mkdir()
    old = {
        'subject': '002_S_0295',
        'recipe_digest': 'x',
        'scans': [
            {
                'patient': '002_S_0295',
                'subject': '002_S_0295',
                'visit': 'bl',
                'image_id': 'I1',
                'date': None,
                'source': 'a.nii',
                'group': 'AD',
                'label': 'AD',
                'split': 'train',
                'status': 'ok',
            }
        ],
    }
    (tmp_path / 'records' / '002_S_0295.json').write_text(json.dumps(old))
    [record] = _read_records(tmp_path)
    assert record.scan_id == '002_S_0295' and record.subject == '002_S_0295'


def test_an_export_and_a_card_written_before_still_read():
    from adni_timm.export.format import ExportSettings
    from adni_timm.export.input_description import InputDescription

    settings = ExportSettings.from_dict({'file_is_patient': True, 'split_level': 'patient'})
    assert settings.file_is_scan is True and settings.split_level == 'scan'
    assert 'file_is_patient' not in settings.extra
    described = InputDescription.from_dict(
        {
            'source': 'ADNI AD_NC',
            'synthetic': False,
            'n_slices': 40,
            'n_patients': 2,
            'n_images': 40,
            'image_sizes': [[256, 240]],
            'mode': 'L',
            'file_types': ['.jpeg'],
            'slice_range': [67, 86],
            'slices_per_patient': [20, 20],
            'intensity': None,
        }
    )
    assert described.n_scans == 2 and described.slices_per_scan == (20, 20)
