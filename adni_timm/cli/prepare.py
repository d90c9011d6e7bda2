"""3D T1 scans (NIfTI, DICOM, BIDS) + labels -> the slice layout (thin CLI over
adni_timm.prepare.run).

adni-prepare ADNI/ prepared/ --labels ADNI_collection.csv            # ADNI download, baseline scans
adni-prepare bids/ prepared/ --labels bids/participants.tsv --labels-column diagnosis
adni-prepare mni_t1s/ prepared/ --labels labels.csv --no-register     # already in MNI space
adni-prepare ADNI/ prepared/ --labels ADNIMERGE.csv --visits all --shard $SLURM_ARRAY_TASK_ID/8
adni-prepare --merge prepared/                                        # after all shards

Exit codes: 0 ok, 1 problems found in the data (each listed, one line), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from adni_timm.cli import (
    ArgumentParser,
    EXIT_OK,
    EXIT_PROBLEM,
    HelpFormatter,
    command,
    examples,
    fail,
)
from adni_timm.prepare.similarity import DEFAULT_MIN_SIMILARITY

__all__ = ['main']

PROG = 'adni-prepare'
_EPILOG = (
    examples(
        '%(prog)s ADNI/ prepared/ --labels ADNI_collection.csv    # ADNI download, baseline scans',
        '%(prog)s bids/ prepared/ --labels bids/participants.tsv --labels-column diagnosis',
        '%(prog)s mni_t1s/ prepared/ --labels labels.csv --no-register   # already in MNI space',
        '%(prog)s ADNI/ prepared/ --labels ADNIMERGE.csv --visits all --shard 1/8   # SLURM arrays',
        '%(prog)s --merge prepared/                                      # after all shards',
        '%(prog)s ADNI/ prepared/ --labels ADNI_collection.csv --save-registered  # + BIDS',
        'adni-synthetic vols --volumes && %(prog)s vols prep --labels vols/labels.csv  # SYNTHETIC',
    )
    + '\n\nEvery step, its default and why: docs/PREPARE.md.'
)


def _pair(text: str, sep: str, kind=float, what: str = ''):
    parts = text.split(sep)
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f'{what}: write two values, e.g. {text!r} -> A{sep}B')
    return values


def _parse_args(argv, prog: str = PROG):
    p = ArgumentParser(
        prog=prog,
        description=__doc__.split('\n\n')[0].replace('\n', ' '),
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        'src',
        nargs='?',
        metavar='SRC',
        help='NIfTI files, a DICOM tree (ADNI download layout) or a BIDS root',
    )
    p.add_argument('out', nargs='?', metavar='OUT', help='output folder (the slice layout)')
    p.add_argument(
        '--merge',
        metavar='OUT',
        help='assemble OUT from its shards (manifest, flags, overview) and stop',
    )
    p.add_argument(
        '--labels',
        metavar='FILE',
        help='ADNI collection CSV, ADNIMERGE, BIDS '
        'participants.tsv, or a CSV with subject,label[,visit]',
    )
    p.add_argument(
        '--labels-format', default='auto', choices=['auto', 'adni', 'adnimerge', 'bids', 'plain']
    )
    p.add_argument(
        '--labels-column',
        help='the group column (BIDS, plain; DX or DX_bl for ADNIMERGE; default: detected)',
    )
    p.add_argument(
        '--classes',
        default='NC,AD',
        help='classes in label order, NC first (default NC,AD; e.g. NC,MCI,AD)',
    )
    p.add_argument(
        '--group-map',
        default='',
        metavar='G=C,...',
        help="extra group -> class mappings, e.g. 'SMC=NC,Patient=AD'",
    )
    p.add_argument(
        '--visits',
        default='baseline',
        choices=['baseline', 'all'],
        help="baseline: each subject's earliest scan (default); all: every visit, "
        "file-name id <subject>_<visit>, all in the subject's split",
    )
    p.add_argument(
        '--test-fraction',
        type=float,
        default=0.2,
        help='subjects per class to OUT/test (default 0.2)',
    )
    p.add_argument('--seed', type=int, default=0, help='split seed (default 0)')
    p.add_argument(
        '--recipe',
        metavar='PREPARE_JSON',
        help="start from the recipe of an earlier run (its prepare.json, or a model export's "
        'preprocessing entry saved as JSON), to prepare new scans exactly as a model was trained; '
        'the options below still override it',
    )
    p.add_argument('--slices', type=int, help='axial slices per scan (default 20)')
    p.add_argument(
        '--z-range',
        metavar='LO,HI',
        help='MNI z range in mm the slices cover, written --z-range=-30,27 (the '
        'default: medial temporal lobes to the lateral ventricle bodies)',
    )
    p.add_argument('--size', metavar='WxH', help='slice size in px = mm (default 192x192)')
    p.add_argument(
        '--image-format',
        choices=['png', 'jpeg'],
        help='png (lossless, default) or jpeg (as the AD_NC set)',
    )
    for step, what in [
        ('reorient', 'reorientation to RAS'),
        ('resample', 'resampling to 1 mm'),
        ('n4', 'N4 bias-field correction'),
        ('register', 'affine registration (for scans already in MNI space)'),
        ('mask', 'the template brain mask'),
        ('normalise', 'intensity normalisation'),
    ]:
        p.add_argument(f'--no-{step}', action='store_true', help=f'skip {what}')
    p.add_argument(
        '--keep-flagged',
        action='store_true',
        help='keep registration outliers in the layout (default: moved to OUT/flagged); also '
        'with --merge',
    )
    p.add_argument(
        '--min-similarity',
        type=float,
        default=None,
        metavar='S',
        help='flag registrations whose similarity (docs/PREPARE.md, "Quality control") is below '
        f'S as failed (default {DEFAULT_MIN_SIMILARITY}); with --merge: flag again with this floor',
    )
    p.add_argument(
        '--save-registered',
        action='store_true',
        help='also keep each scan in template space (MNI152NLin2009aSym, 1 mm) and its affine '
        'transform as BIDS derivative files, OUT/sub-*/anat/ (about 15 MB per scan; '
        'docs/PREPARE.md, "A BIDS derivative")',
    )
    p.add_argument('--workers', type=int, default=1, help='scans prepared in parallel')
    p.add_argument('--shard', metavar='K/N', help='prepare only shard K of N (SLURM arrays)')
    p.add_argument('--progress', default='auto', choices=['auto', 'bar', 'lines', 'none'])
    args = p.parse_args(argv)
    if args.merge:
        if args.src or args.out:
            p.error('--merge OUT takes no SRC or OUT')
        return args
    if not args.src or not args.out or not args.labels:
        p.error('give SRC OUT --labels FILE (or --merge OUT)')
    if args.workers < 1:
        p.error('--workers must be >= 1')
    return args


def _recipe(args):
    import dataclasses

    from adni_timm.prepare.preprocess import Recipe, read_recipe

    base = read_recipe(args.recipe) if args.recipe else Recipe()
    changes = {}
    if args.z_range is not None:
        changes['z_range_mm'] = _pair(args.z_range, ',', float, '--z-range')
    if args.size is not None:
        changes['size'] = _pair(args.size, 'x', int, '--size')
    if args.slices is not None:
        changes['slices'] = args.slices
    if args.image_format is not None:
        changes['image_format'] = args.image_format
    for step in ('reorient', 'n4', 'register', 'mask', 'normalise'):
        if getattr(args, f'no_{step}'):
            changes[step] = False
    if args.no_resample:
        changes['resample_mm'] = None
    return dataclasses.replace(base, **changes)


def _print_merge(result, out) -> None:
    counts = ', '.join(f'{k} {v}' for k, v in result.counts.items()) or 'none'
    ok = sum(r.status == 'ok' for r in result.records)
    print(
        f'{out}: {ok} scans prepared ({counts}); {len(result.flagged)} flagged as registration '
        f'outliers{": " + ", ".join(result.flagged[:10]) if result.flagged else ""}'
    )
    print(f'  manifest {out}/manifest.csv   QC {out}/qc/overview.png')


def _print_problems(problems) -> None:
    if not problems:
        return
    print(f'{len(problems)} problem(s):', file=sys.stderr)
    for problem in problems:
        print(f'  {problem.message}', file=sys.stderr)


def _progress(mode: str):
    """(on_plan, on_subject, close): a tqdm bar on a terminal, plain lines otherwise."""
    from adni_timm.utils.progress import resolve_mode

    mode = resolve_mode(mode)
    state = {'bar': None, 'start': time.perf_counter()}

    def on_plan(plan, todo, done):
        counts = {}
        for s in plan.scans:
            counts[f'{s.split}/{s.label}'] = counts.get(f'{s.split}/{s.label}', 0) + 1
        mapping = ', '.join(f'{g} -> {c}' for g, c in sorted(plan.mapping.items()))
        print(
            f'layout {plan.layout}: {len(plan.scans)} scans of {len(plan.subjects())} subjects '
            f'to prepare ({", ".join(f"{k} {v}" for k, v in sorted(counts.items()))})'
        )
        print(f'groups -> classes: {mapping or "none matched"}')
        if plan.skipped:
            print(
                f'skipped {len(plan.skipped)} scan(s) (e.g. {plan.skipped[0][0]}: '
                f'{plan.skipped[0][1]})'
            )
        if done:
            print(f'{len(done)} subject(s) already prepared with this recipe: skipped')
        if mode == 'bar' and todo:
            from tqdm.auto import tqdm

            state['bar'] = tqdm(
                total=len(todo) + len(done), initial=len(done), unit='subject', dynamic_ncols=True
            )

    def on_subject(subject, records, n, total):
        if state['bar'] is not None:
            state['bar'].update(1)
            return
        if mode == 'lines':
            elapsed = time.perf_counter() - state['start']
            notes = '; '.join(
                f'{r.visit} {"similarity %.3f" % r.similarity if r.status == "ok" else "FAILED"}'
                for r in records
            )
            print(f'[{n}/{total}] {subject} {notes} ({elapsed:.0f} s)', flush=True)

    def close():
        if state['bar'] is not None:
            state['bar'].close()

    return on_plan, on_subject, close


def _write_failure(error: OSError, out) -> str:
    where = error.filename or out
    return (
        f'cannot write {where}: {error.strerror or error}: the prepared subjects are kept in '
        f'{out} (each with its record in {out}/records); free space, then adni-prepare --merge '
        f'{out} writes the manifest and the QC overview'
    )


@command
def main(argv=None, prog: str = PROG) -> int:
    args = _parse_args(argv, prog)
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    from adni_timm.prepare import labels as labels_mod
    from adni_timm.prepare import run as prepare_mod
    from adni_timm.prepare.volumes import VolumeError, discover_scans

    try:
        if args.merge:
            result = prepare_mod.merge(
                args.merge,
                keep_flagged=args.keep_flagged or None,
                min_similarity=args.min_similarity,
            )
            _print_merge(result, args.merge)
            _print_problems(result.problems)
            return EXIT_PROBLEM if result.problems else EXIT_OK
        recipe = _recipe(args)
        options = prepare_mod.PrepareOptions(
            classes=tuple(c.strip() for c in args.classes.split(',') if c.strip()),
            group_map=tuple(labels_mod.parse_group_map(args.group_map).items()),
            visits=args.visits,
            test_fraction=args.test_fraction,
            seed=args.seed,
            keep_flagged=args.keep_flagged,
            min_similarity=(
                DEFAULT_MIN_SIMILARITY if args.min_similarity is None else args.min_similarity
            ),
            save_registered=args.save_registered,
        )
        shard = prepare_mod.parse_shard(args.shard)
        labels = labels_mod.read_labels(args.labels, args.labels_format, args.labels_column)
        discovery = discover_scans(args.src)
    except (ValueError, OSError, argparse.ArgumentTypeError) as e:
        return fail(prog, e, code=2)
    on_plan, on_subject, close = _progress(args.progress)
    start = time.perf_counter()
    try:
        result = prepare_mod.prepare(
            args.src,
            args.out,
            labels,
            discovery,
            recipe,
            options,
            workers=args.workers,
            shard=shard,
            on_subject=on_subject,
            on_plan=on_plan,
        )
    except (prepare_mod.PrepareError, VolumeError) as e:
        close()
        return fail(prog, e, code=2)
    except OSError as e:  # writing the manifest or the overview at the end (a full disk)
        close()
        return fail(prog, _write_failure(e, args.out), code=2)
    close()
    minutes = (time.perf_counter() - start) / 60
    n = len(result.prepared)
    rate = f', {n / minutes:.1f} scans/min' if n and minutes > 0 else ''
    print(f'prepared {n} scan(s) in {minutes * 60:.0f} s{rate}')
    problems = result.problems
    if result.merged is not None:
        _print_merge(result.merged, args.out)
        problems = list(result.plan.problems) + result.merged.problems
    else:
        print(
            f'shard {shard[0]}/{shard[1]} done; after all shards: adni-prepare --merge {args.out}'
        )
    _print_problems(problems)
    return EXIT_PROBLEM if problems else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
