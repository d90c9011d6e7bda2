"""``python -m adni_timm.cv compare RUN_A RUN_B`` and ``... summary RUN``: cross-validation run
tools. Parsing and printing only: the work is in ``adni_timm.cv.compare`` and
``adni_timm.cv.summary``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adni_timm.cli import EXIT_OK, HelpFormatter, examples, fail

__all__ = ['build_parser', 'main']

PROG = 'python -m adni_timm.cv'


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description='Cross-validation run tools (runs written by adni-train --folds K).',
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s compare runs/cv5-seed runs/cv5     # B - A on the same folds',
            '%(prog)s compare runs/a runs/b --json cmp.json --plot cmp.png',
            '%(prog)s summary runs/cv5                   # per-fold validation metrics',
        ),
    )
    commands = parser.add_subparsers(dest='command', required=True)
    cmp = commands.add_parser(
        'compare',
        help='compare two CV runs made on the same folds (B - A, paired bootstrap CI)',
        description='Compare CV run B against run A: per-fold differences of the validation '
        'metrics and the paired bootstrap difference of the out-of-fold scan '
        'AUC and accuracy. Refuses runs made on different folds (exit 2).',
        formatter_class=HelpFormatter,
        epilog=examples('%(prog)s runs/cv5-seed runs/cv5 --n-boot 5000'),
    )
    cmp.add_argument('run_a', metavar='RUN_A', type=Path, help='the reference run (A)')
    cmp.add_argument('run_b', metavar='RUN_B', type=Path, help='the run compared with it (B)')
    cmp.add_argument(
        '--allow-different-folds',
        action='store_true',
        help='report anyway when the folds differ (the comparison is then INVALID)',
    )
    cmp.add_argument('--n-boot', type=int, default=2000, help='bootstrap resamples')
    cmp.add_argument('--seed', type=int, default=0, help='bootstrap seed')
    cmp.add_argument('--json', type=Path, metavar='FILE', help='also write the result as JSON')
    cmp.add_argument(
        '--plot',
        type=Path,
        metavar='FILE',
        help='also draw the paired differences with their CIs (a PNG: per fold and pooled)',
    )
    summary = commands.add_parser(
        'summary',
        help='the per-fold validation metrics of a CV run',
        description='The per-fold validation metrics of a CV run, mean and SD.',
        formatter_class=HelpFormatter,
        epilog=examples('%(prog)s runs/cv5'),
    )
    summary.add_argument('run', metavar='RUN', type=Path, help='a CV run folder (holds cv.json)')
    return parser


def main(argv=None, prog: str = PROG) -> int:
    """0 done, 2 a run that cannot be read or runs on different folds (one line on stderr)."""
    from adni_timm.cv.summary import cv_summary, format_cv_table
    from adni_timm.cv.compare import compare, format_comparison, read_cv_run

    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == 'summary':
            cv, _ = read_cv_run(args.run)
            print(format_cv_table(cv_summary(cv['per_fold'])))
            return EXIT_OK
        result = compare(args.run_a, args.run_b, args.allow_different_folds, args.n_boot, args.seed)
        print(format_comparison(result))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + '\n')
        if args.plot:
            from adni_timm import plots
            from adni_timm.run import Run

            runs = [Run(args.run_a), Run(args.run_b)]
            synthetic = any(r.record().synthetic for r in runs if r.record_file.is_file())
            plots.plot_cv_comparison(
                result,
                args.plot,
                title='cross-validation runs compared (B - A)',
                context=plots.FigureContext('out-of-fold predictions', None, synthetic),
            )
            print(f'wrote {args.plot}')
    except (ValueError, OSError) as e:  # CVError and unreadable files: refused inputs
        return fail(prog, ' '.join(str(e).split()))  # one line, whatever the exception carried
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
