"""``adni-check-data DATA_DIR``: is this folder usable as ADNI AD_NC data? (also
``python -m adni_timm.data check DATA_DIR``). Parsing and printing only: the check is
``adni_timm.data.check_data_dir``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from adni_timm.cli import (
    ArgumentParser,
    EXIT_OK,
    EXIT_PROBLEM,
    HelpFormatter,
    class_list,
    command,
    data_source,
    examples,
    existing_path,
    fail,
    resolve_data_source,
)

__all__ = ['build_parser', 'main', 'module_main']

PROG = 'adni-check-data'
DESCRIPTION = (
    'Check DATA_DIR/{train,test}/{NC,AD}/<scan>_<slice>.jpeg: print scans and slices per '
    'split and class, slices per scan, image sizes and modes, the slice-number windows and '
    'the slice-number baseline (the scan accuracy of slice numbers alone), and every problem '
    'found. --audit adds a content audit: duplicate slices and scans that are probably the same '
    'person. Exit status 1 when there are problems (duplicate slices among them), 2 on a usage '
    'error (e.g. DATA_DIR does not exist).'
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        'data_dir',
        metavar='DATA_DIR',
        type=data_source,
        help='the AD_NC folder: DATA_DIR/{train,test}/{NC,AD}/; or a Hugging Face dataset '
        '(hf:ORG/NAME[:CONFIG], parquet shards, an imagefolder), checked as written into it',
    )
    parser.add_argument(
        '--classes',
        default='NC,AD',
        type=class_list,
        metavar='NAME,NAME',
        help='class folders in label order (NC=0, AD=1)',
    )
    parser.add_argument(
        '--file-is-scan',
        '--file-is-patient',  # its name before scans were called scans
        action='store_true',
        help='treat each file as its own scan (names without <scan>_<slice>)',
    )
    parser.add_argument(
        '--subjects',
        metavar='FILE',
        type=existing_path,
        help="subject map (the course's meta_data_with_label.json, an ADNI collection CSV or a "
        'scan,subject CSV): subjects per split and class, scans per subject, and the test '
        "subjects who also have scans in train (a problem). Default: DATA_DIR's manifest.csv",
    )
    parser.add_argument(
        '--workers',
        type=int,
        default=min(8, os.cpu_count() or 1),
        help='threads decoding images (default: up to 8)',
    )
    parser.add_argument(
        '--audit',
        action='store_true',
        help='also audit the images: duplicate slices (within and across splits) and pairs of '
        'scans that are probably one person, each with a score; an estimate from image content '
        '(see docs/DATA.md)',
    )
    parser.add_argument(
        '--audit-csv',
        metavar='PATH',
        help='write the audit pairs to PATH (kind,scan_a,split_a,scan_b,split_b,score); '
        'implies --audit. train.py --subjects-from-audit PATH splits by the groups they make',
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s AD_NC                         # counts, sizes, every problem',
            '%(prog)s AD_NC --classes NC,MCI,AD     # three classes, in label order',
            '%(prog)s scans/ --file-is-scan         # one file per scan',
            '%(prog)s AD_NC --subjects meta_data_with_label.json   # subjects, train/test overlap',
            '%(prog)s AD_NC --audit --audit-csv audit.csv   # duplicates, probable same subjects',
            '%(prog)s hf:ORG/NAME                   # a Hugging Face dataset',
        ),
    )
    _add_arguments(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    from adni_timm.data import DataError, check_data_dir
    from adni_timm.data.hub_datasets import DatasetSourceError

    try:  # a dataset is checked as written into the slice layout (its own problems: one line)
        data_dir = resolve_data_source(args.data_dir, args.classes)
    except (DataError, DatasetSourceError) as e:
        return fail(PROG, e)
    if Path(data_dir) != Path(args.data_dir):
        print(f'dataset {args.data_dir} -> {data_dir}')
    report = check_data_dir(
        data_dir, args.classes, args.file_is_scan, args.workers, subjects=args.subjects
    )
    print('\n'.join(report.lines))
    for note in report.notes:
        print(f'note: {note}')
    problems = list(report.problems)
    if (args.audit or args.audit_csv) and any(report.slices.values()):
        problems += _audit(report.slices, args.audit_csv, args.workers)
    if problems:
        print(f'{len(problems)} problem(s):')
        print('\n'.join(f'- {p}' for p in problems))
        return EXIT_PROBLEM
    print('no problems found')
    return EXIT_OK


def _audit(slices, csv_path, workers: int) -> list[str]:
    """Print the audit (and write its CSV); duplicate slices are problems, the same-subject pairs
    an estimate to act on (train.py --subjects-from-audit)."""
    from adni_timm.data.audit import audit_slices, write_audit_csv

    report = audit_slices(slices, workers)
    print('\n'.join(report.lines()))
    if csv_path:
        print(f'audit pairs written to {write_audit_csv(report, csv_path)}')
    duplicates = report.of_kind('duplicate')
    if not duplicates:
        return []
    return [
        f'{len(duplicates)} pair(s) of scans hold the same slice image (listed under "duplicate '
        f'slices" above): a copy counts twice, and a copy in train and test is tested on what was '
        f'trained on; keep one of each'
    ]


@command
def main(argv=None, prog: str = PROG) -> int:
    """``adni-check-data DATA_DIR [...]``: 0 no problems, 1 problems listed, 2 usage error."""
    return _run(build_parser(prog).parse_args(argv))


def module_main(argv=None, prog: str = 'python -m adni_timm.data') -> int:
    """``python -m adni_timm.data check DATA_DIR [...]``: the same command as a subcommand."""
    parser = ArgumentParser(prog=prog, description='Tools for data in the ADNI AD_NC layout.')
    commands = parser.add_subparsers(dest='command', required=True)
    check = commands.add_parser(
        'check',
        help='report scans, slices, image sizes and every problem; exit 1 on problems',
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
        epilog=examples('%(prog)s AD_NC', f'{PROG} AD_NC   # the same, as a console script'),
    )
    _add_arguments(check)
    return _run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
