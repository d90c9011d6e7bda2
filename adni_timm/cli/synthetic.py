"""``adni-synthetic OUT --train-patients N --test-patients M``: write a SYNTHETIC ADNI-layout set
(also ``python -m adni_timm.synthetic``). Parsing and printing only: the generator is
``adni_timm.synthetic``.
"""

from __future__ import annotations

import argparse
import sys

from adni_timm.cli import EXIT_OK, HelpFormatter, examples, fail

__all__ = ['build_parser', 'main']

PROG = 'adni-synthetic'


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from adni_timm.synthetic import DIFFICULTIES

    parser = argparse.ArgumentParser(
        prog=prog,
        description='Write a SYNTHETIC dataset in the ADNI AD_NC layout: OUT/{train,test}/{AD,NC}/'
        '<patient>_<slice>.jpeg, 256x240 8-bit grayscale. The images are procedurally drawn '
        'heads with simulated atrophy for AD; they are not MRI and not real patients.',
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s syn --train-patients 30 --test-patients 15          # 900 slices',
            '%(prog)s syn --train-patients 60 --test-patients 30 --seed 1 --workers 4',
            '%(prog)s easy --train-patients 8 --test-patients 4 --difficulty demo --slices 12',
            '%(prog)s three --train-patients 10 --test-patients 5 --classes NC,MCI,AD',
        ),
    )
    parser.add_argument('out', metavar='OUT', help='output folder (new or empty)')
    parser.add_argument(
        '--train-patients', type=int, required=True, help='training patients per class'
    )
    parser.add_argument('--test-patients', type=int, required=True, help='test patients per class')
    parser.add_argument(
        '--slices', type=int, default=20, help='consecutive axial slices per patient (default 20)'
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--difficulty',
        default='default',
        choices=list(DIFFICULTIES),
        help='class overlap: demo (easy), default (realistic), hard',
    )
    parser.add_argument(
        '--workers', type=int, default=1, help='processes rendering patients in parallel'
    )
    parser.add_argument(
        '--classes', default='NC,AD', help='comma-separated, from NC, MCI, AD (default NC,AD)'
    )
    return parser


def main(argv=None, prog: str = PROG) -> int:
    """0 written, 2 refused (a folder that already holds files, unknown classes)."""
    from adni_timm.synthetic import SyntheticError, generate

    args = build_parser(prog).parse_args(argv)
    classes = tuple(c.strip() for c in args.classes.split(',') if c.strip())
    try:
        out = generate(
            args.out,
            args.train_patients,
            args.test_patients,
            args.slices,
            args.seed,
            args.difficulty,
            classes,
            workers=args.workers,
        )
    except SyntheticError as e:
        return fail(prog, e)
    n = (args.train_patients + args.test_patients) * len(classes)
    print(f'wrote SYNTHETIC data ({args.difficulty}): {n} patients x {args.slices} slices to {out}')
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
