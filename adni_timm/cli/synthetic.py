"""``adni-synthetic OUT --train-subjects N --test-subjects M``: write a SYNTHETIC ADNI-layout set
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
    from adni_timm.synthetic.slices import DIFFICULTIES

    parser = argparse.ArgumentParser(
        prog=prog,
        description='Write a SYNTHETIC dataset in the ADNI AD_NC layout: OUT/{train,test}/{AD,NC}/'
        '<scan>_<slice>.jpeg, 256x240 8-bit grayscale. The images are procedurally drawn '
        'heads with simulated atrophy for AD; they are not MRI and not real patients.',
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s syn --train-subjects 30 --test-subjects 15          # 900 slices',
            '%(prog)s syn --train-subjects 60 --test-subjects 30 --seed 1 --workers 4',
            '%(prog)s easy --train-subjects 8 --test-subjects 4 --difficulty demo --slices 12',
            '%(prog)s three --train-subjects 10 --test-subjects 5 --classes NC,MCI,AD',
            '%(prog)s vols --volumes --subjects 8   # 3D heads for adni-prepare (see --volumes -h)',
        ),
    )
    parser.add_argument('out', metavar='OUT', help='output folder (new or empty)')
    # --train-patients / --test-patients: their names before scans and subjects were told apart
    parser.add_argument(
        '--train-subjects',
        '--train-patients',
        dest='train_subjects',
        type=int,
        required=True,
        help='training subjects per class',
    )
    parser.add_argument(
        '--test-subjects',
        '--test-patients',
        dest='test_subjects',
        type=int,
        required=True,
        help='test subjects per class',
    )
    parser.add_argument(
        '--slices', type=int, default=20, help='consecutive axial slices per scan (default 20)'
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--difficulty',
        default='default',
        choices=list(DIFFICULTIES),
        help='class overlap: demo (easy), default (realistic), hard',
    )
    parser.add_argument(
        '--workers', type=int, default=1, help='processes rendering heads in parallel'
    )
    parser.add_argument(
        '--classes', default='NC,AD', help='comma-separated, from NC, MCI, AD (default NC,AD)'
    )
    return parser


def _parse_voxel(text: str):
    values = [float(v) for v in text.split(',')]
    if len(values) not in (1, 3) or min(values) <= 0:
        raise argparse.ArgumentTypeError('--voxel-mm takes one size or three (R-L,A-P,S-I), > 0')
    return values[0] if len(values) == 1 else tuple(values)


def build_volumes_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from adni_timm.synthetic.slices import DIFFICULTIES

    parser = argparse.ArgumentParser(
        prog=f'{prog} OUT --volumes',
        description='Write SYNTHETIC 3D T1 heads (the MNI152 template deformed, with skull, pose, '
        'bias field and noise; atrophy for AD) in the ADNI download layout with an ADNI '
        'collection labels.csv, for adni-prepare. Not real MRI, not real patients. Needs the '
        "[mri] extra (pip install 'adni-timm[mri]').",
        formatter_class=HelpFormatter,
        epilog=examples(
            f'{prog} vols --volumes --subjects 8                 # 16 NIfTI heads + labels.csv',
            f'{prog} vols --volumes --dicom --subjects 4 --visits 2',
            'adni-prepare vols prepared --labels vols/labels.csv   # then train on prepared/',
        ),
    )
    parser.add_argument('out', metavar='OUT', help='output folder (new or empty)')
    parser.add_argument('--volumes', action='store_true', help='(this mode)')
    parser.add_argument('--dicom', action='store_true', help='DICOM series instead of NIfTI')
    parser.add_argument('--subjects', type=int, default=8, help='subjects per class')
    parser.add_argument('--visits', type=int, default=1, help='scans per subject (bl, m12, ...)')
    parser.add_argument('--classes', default='NC,AD', help='from NC, MCI, AD')
    parser.add_argument('--difficulty', default='default', choices=list(DIFFICULTIES))
    parser.add_argument(
        '--voxel-mm',
        type=_parse_voxel,
        default=1.0,
        help='scanner voxel size, one value or R-L,A-P,S-I',
    )
    parser.add_argument(
        '--base-mm',
        type=float,
        default=1.0,
        help='resolution the heads are built at (2 = fast, coarser anatomy)',
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=1)
    return parser


def volumes_main(argv, prog: str = PROG) -> int:
    """``OUT --volumes``: 3D heads for adni-prepare (adni_timm.synthetic.volumes)."""
    args = build_volumes_parser(prog).parse_args(argv)
    classes = tuple(c.strip() for c in args.classes.split(',') if c.strip())
    try:
        from adni_timm.synthetic.slices import SyntheticError
        from adni_timm.synthetic.volumes import generate_volumes

        scans = generate_volumes(
            args.out,
            args.subjects,
            classes,
            args.visits,
            args.seed,
            args.difficulty,
            args.voxel_mm,
            args.base_mm,
            args.dicom,
            args.workers,
        )
    except ImportError as e:  # the [mri] extra is not installed
        return fail(prog, f"{e}; pip install 'adni-timm[mri]'")
    except SyntheticError as e:
        return fail(prog, e)
    kind = 'DICOM series' if args.dicom else 'NIfTI volumes'
    print(
        f'wrote {len(scans)} SYNTHETIC {kind} ({args.difficulty}) to {args.out}/ADNI, labels in '
        f'{args.out}/labels.csv'
    )
    return EXIT_OK


def main(argv=None, prog: str = PROG) -> int:
    """0 written, 2 refused (a folder that already holds files, unknown classes)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if '--volumes' in argv:  # 3D heads (NIfTI / DICOM) for adni-prepare
        return volumes_main(argv, prog)
    from adni_timm.synthetic.slices import SyntheticError, generate

    args = build_parser(prog).parse_args(argv)
    classes = tuple(c.strip() for c in args.classes.split(',') if c.strip())
    try:
        out = generate(
            args.out,
            args.train_subjects,
            args.test_subjects,
            args.slices,
            args.seed,
            args.difficulty,
            classes,
            workers=args.workers,
        )
    except SyntheticError as e:
        return fail(prog, e)
    n = (args.train_subjects + args.test_subjects) * len(classes)
    print(f'wrote SYNTHETIC data ({args.difficulty}): {n} scans x {args.slices} slices to {out}')
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
