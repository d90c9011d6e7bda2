"""Evaluate a trained AD vs NC model at slice and
patient level (thin CLI over adni_timm.evaluation).

python evaluate.py --model runs/tiny --data-dir AD_NC                # -> runs/tiny/eval/
python evaluate.py --model hf-hub:ORG/NAME --data-dir AD_NC --target-sensitivity 0.9
python evaluate.py --model runs/tiny --images new_scans/            # unlabelled: predictions only
python evaluate.py --model runs/cv --data-dir AD_NC                  # a CV run: its fold ensemble
python evaluate.py --model runs/a --model runs/b --data-dir AD_NC    # any ensemble of exports
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

__all__ = ['main']


def _parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument(
        '--model',
        required=True,
        action='append',
        help='RUN folder, export folder, local-dir:DIR, hf-hub:ORG/NAME[@rev] '
        'or path/model.safetensors; a cross-validation RUN evaluates its '
        'fold ensemble; repeat --model for any ensemble',
    )
    p.add_argument(
        '--data-dir', help='ADNI-layout folder with <split>/<class>/<patient>_<slice>.jpeg'
    )
    p.add_argument('--split', default='test', help='split folder to evaluate (default: test)')
    p.add_argument(
        '--output-dir',
        help='where reports go (default: RUN/eval for the test split of a run, '
        'RUN/eval-<split> for another split, else ./eval[-<split>]; '
        'with --images: RUN/predict or ./predict)',
    )
    thr = p.add_mutually_exclusive_group()
    thr.add_argument(
        '--threshold',
        type=float,
        help='decision threshold on p_AD (default: the stored validation threshold, else 0.5)',
    )
    thr.add_argument(
        '--target-sensitivity',
        type=float,
        metavar='S',
        help='choose the highest threshold reaching sensitivity S on the validation patients of '
        "DATA_DIR/train (the run's split.json), never on the evaluated split",
    )
    p.add_argument(
        '--tta',
        action='store_true',
        help='average with the horizontally flipped slice (the '
        'threshold is then chosen again with TTA on validation)',
    )
    p.add_argument(
        '--precision',
        choices=['auto', 'no', 'fp32', 'bf16', 'fp16'],
        help='CUDA inference precision (default: the precision the model was trained in)',
    )
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--num-workers', type=int, default=0)
    p.add_argument(
        '--n-boot', type=int, default=1000, help='bootstrap resamples for 95%% CIs (0: none)'
    )
    p.add_argument(
        '--classes',
        help='comma-separated class list in training order (default: stored with the model)',
    )
    p.add_argument(
        '--file-is-patient',
        action='store_true',
        default=None,
        help='treat each file as its own patient (default: as the model was trained)',
    )
    p.add_argument(
        '--skip-bad-images',
        action='store_true',
        help='leave out files that cannot be decoded (default: list them and stop)',
    )
    p.add_argument(
        '--images', metavar='PATH', help='predict unlabelled slices (a file or folder) instead'
    )
    p.add_argument(
        '--cam',
        type=int,
        nargs='?',
        const=2,
        default=0,
        metavar='N',
        help='Grad-CAM maps under OUT/cam/: montages of the N most confident right and wrong '
        'patients of each class (default N 2) and the mean map over all AD and all NC slices',
    )
    p.add_argument(
        '--cam-layer',
        metavar='NAME',
        help='the module whose output Grad-CAM explains (default: the last stage whose map is at '
        'least 7x7 at the input size, e.g. stages.2)',
    )
    args = p.parse_args(argv)
    if args.images is None and args.data_dir is None:
        p.error('--data-dir is required (or --images PATH for unlabelled slices)')
    if args.images is not None and args.target_sensitivity is not None:
        p.error(
            '--target-sensitivity needs labelled validation data; with --images pass --threshold X'
        )
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    # per-load chatter ("Loading pretrained weights ...")
    logging.getLogger('timm').setLevel(logging.WARNING)
    from adni_timm import data, evaluation  # after argparse: --help stays fast
    from adni_timm.inference import load_model

    start = time.perf_counter()
    try:
        model = load_model(args.model[0] if len(args.model) == 1 else args.model)
        if args.classes:
            model.classes = list(data.parse_classes(args.classes))
        if args.images:
            tag = 'tta' if args.tta else None
            if args.threshold is not None:
                tag = '-'.join(filter(None, [f'threshold-{args.threshold:g}', tag]))
            out = args.output_dir or evaluation.default_output_dir(model, tag, what='predict')
            result = evaluation.predict_images(
                model,
                args.images,
                output_dir=out,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                tta=args.tta,
                threshold=args.threshold,
                precision=args.precision,
                cam=args.cam,
                cam_layer=args.cam_layer,
                skip_bad_images=args.skip_bad_images,
                file_is_patient=args.file_is_patient,
            )
            print(evaluation.format_predictions(result))
        else:
            tag = evaluation.evaluation_tag(
                model,
                split=args.split,
                threshold=args.threshold,
                target_sensitivity=args.target_sensitivity,
                tta=args.tta,
                precision=args.precision,
            )
            out = args.output_dir or evaluation.default_output_dir(model, tag)
            evaluation.check_output_dir(model, out, tag)
            result = evaluation.evaluate(
                model,
                args.data_dir,
                split=args.split,
                output_dir=out,
                threshold=args.threshold,
                target_sensitivity=args.target_sensitivity,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                tta=args.tta,
                n_boot=args.n_boot,
                precision=args.precision,
                skip_bad_images=args.skip_bad_images,
                file_is_patient=args.file_is_patient,
                cam=args.cam,
                cam_layer=args.cam_layer,
            )
            print(evaluation.format_table(result))
    except (ValueError, OSError) as e:
        # EvaluationError, DataError, ExportError, RunError, missing files: one line, no traceback
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {out} in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
