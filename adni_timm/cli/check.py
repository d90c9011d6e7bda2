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
    EXIT_OK,
    EXIT_PROBLEM,
    HelpFormatter,
    class_list,
    data_source,
    examples,
    fail,
    resolve_data_source,
)

__all__ = ['build_parser', 'main', 'module_main']

PROG = 'adni-check-data'
DESCRIPTION = (
    'Check DATA_DIR/{train,test}/{NC,AD}/<scan>_<slice>.jpeg: print scans and slices per '
    'split and class, slices per scan, image sizes and modes, and every problem found. '
    'Exit status 1 when there are problems, 2 on a usage error (e.g. DATA_DIR does not exist).'
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
        '--workers',
        type=int,
        default=min(8, os.cpu_count() or 1),
        help='threads decoding images (default: up to 8)',
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s AD_NC                         # counts, sizes, every problem',
            '%(prog)s AD_NC --classes NC,MCI,AD     # three classes, in label order',
            '%(prog)s scans/ --file-is-scan         # one file per scan',
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
    report = check_data_dir(data_dir, args.classes, args.file_is_scan, args.workers)
    print('\n'.join(report.lines))
    for note in report.notes:
        print(f'note: {note}')
    if report.problems:
        print(f'{len(report.problems)} problem(s):')
        print('\n'.join(f'- {p}' for p in report.problems))
        return EXIT_PROBLEM
    print('no problems found')
    return EXIT_OK


def main(argv=None, prog: str = PROG) -> int:
    """``adni-check-data DATA_DIR [...]``: 0 no problems, 1 problems listed, 2 usage error."""
    return _run(build_parser(prog).parse_args(argv))


def module_main(argv=None, prog: str = 'python -m adni_timm.data') -> int:
    """``python -m adni_timm.data check DATA_DIR [...]``: the same command as a subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog, description='Tools for data in the ADNI AD_NC layout.'
    )
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
