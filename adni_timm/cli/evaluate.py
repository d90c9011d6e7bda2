"""``adni-evaluate`` (``python evaluate.py``): evaluate a trained AD vs NC model at slice and
scan level (thin CLI over adni_timm.evaluation).

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

from adni_timm.cli import (
    ArgumentParser,
    EXIT_OK,
    EXIT_REFUSED,
    HelpFormatter,
    class_list,
    command,
    describe_os_error,
    examples,
    data_source,
    existing_path,
    fail,
    resolve_data_source,
)

__all__ = ['build_parser', 'main']

PROG = 'adni-evaluate'
# adni_timm.evaluation.cam.METHODS (cam imports torch)
CAM_METHODS = ('occlusion', 'gradcam', 'hirescam')


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description='Evaluate a trained AD vs NC model at slice and scan level: metrics with '
        'bootstrap CIs, predictions, confusion matrices, ROC and reliability diagrams.',
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s --model runs/tiny --data-dir AD_NC                 # -> runs/tiny/eval/',
            '%(prog)s --model hf-hub:ORG/NAME --data-dir AD_NC --target-sensitivity 0.9',
            '%(prog)s --model runs/tiny --data-dir AD_NC --cam 2         # + maps under eval/cam/',
            '%(prog)s --model runs/tiny --images new_scans/             # unlabelled: predictions',
            '%(prog)s --model runs/cv --data-dir AD_NC                   # a CV run: its ensemble',
            '%(prog)s --model runs/a --model runs/b --data-dir AD_NC     # any ensemble of exports',
        ),
    )
    p.add_argument(
        '--model',
        required=True,
        action='append',
        help='RUN folder, export folder, local-dir:DIR, hf-hub:ORG/NAME[@rev] '
        'or path/model.safetensors; a cross-validation RUN evaluates its '
        'fold ensemble; repeat --model for any ensemble',
    )
    p.add_argument(
        '--data-dir',
        type=data_source,
        help='ADNI-layout folder with <split>/<class>/<scan>_<slice>.jpeg, or a Hugging Face '
        'dataset: hf:ORG/NAME[:CONFIG], a folder of parquet shards, an imagefolder (docs/DATA.md)',
    )
    p.add_argument('--split', default='test', help='split folder to evaluate')
    p.add_argument(
        '--output-dir',
        help='where reports go (default: RUN/eval for the published model on the test split at '
        'its stored operating point; RUN/eval-<tag> for any other split, threshold, sensitivity, '
        'TTA or precision, e.g. eval-threshold-0.05; ./eval[-<tag>] outside a run; with --images: '
        'RUN/predict or ./predict)',
    )
    thr = p.add_mutually_exclusive_group()
    thr.add_argument(
        '--threshold',
        type=float,
        help='decision threshold on P(AD) (default: the stored validation threshold, else 0.5)',
    )
    thr.add_argument(
        '--target-sensitivity',
        type=float,
        metavar='S',
        help='choose the highest threshold reaching sensitivity S on the validation scans of '
        "DATA_DIR/train (the run's split.json), never on the evaluated split (default: off)",
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
    p.add_argument('--batch-size', type=int, default=64, help='slices per inference batch')
    p.add_argument('--num-workers', type=int, default=0, help='data-loader worker processes')
    p.add_argument(
        '--n-boot', type=int, default=1000, help='bootstrap resamples for 95%% CIs (0: none)'
    )
    p.add_argument(
        '--classes',
        type=class_list,
        metavar='NAME,NAME',
        help='comma-separated class list in training order (default: stored with the model)',
    )
    p.add_argument(
        '--file-is-scan',
        '--file-is-patient',  # its name before scans were called scans
        action='store_true',
        default=None,
        help='treat each file as its own scan (default: as the model was trained)',
    )
    p.add_argument(
        '--subjects',
        metavar='FILE',
        type=existing_path,
        help="subject map (the course's meta_data_with_label.json, an ADNI collection CSV or a "
        'scan,subject CSV): adds subject-level metrics, resamples subjects for the CIs and counts '
        "evaluated subjects the model trained on (default: the run's map, else DATA_DIR's "
        'manifest.csv)',
    )
    p.add_argument(
        '--skip-bad-images',
        action='store_true',
        help='leave out files that cannot be decoded (default: list them and stop)',
    )
    p.add_argument(
        '--backend',
        choices=('torch', 'onnxruntime'),
        default='torch',
        help="onnxruntime: predict with the export's model.onnx (written beside a local export "
        'when missing; needs the onnx extra); no --tta',
    )
    p.add_argument(
        '--progress',
        choices=('auto', 'bar', 'lines', 'none'),
        default='auto',
        help='auto: a bar on a terminal, plain lines in a log (one every 30 s and one per step '
        'at its end); for prediction, --cam maps and the decode',
    )
    p.add_argument(
        '--score-flagged',
        action='store_true',
        help='with --images: also show P(AD) of slices the input check refuses (they still get '
        'no decision)',
    )
    p.add_argument(
        '--min-accepted',
        type=float,
        default=0.5,
        metavar='FRACTION',
        help='with --images: a scan gets a decision only when at least this fraction of its '
        'slices pass the input check; else "no decision" with the count (a run that decided '
        'nothing exits 2)',
    )
    p.add_argument(
        '--images',
        metavar='PATH',
        type=existing_path,
        help='predict unlabelled slices (a file or folder) instead of evaluating a split',
    )
    _add_cam_arguments(p)
    return p


def _add_cam_arguments(p) -> None:
    """Evidence maps: how many, which method, which layer."""
    cam = p.add_argument_group('evidence maps (Grad-CAM and friends, under OUT/cam/)')
    cam.add_argument(
        '--cam',
        type=int,
        nargs='?',
        const=2,
        default=0,
        metavar='N',
        help='montages of the N most confident scans of each outcome (TP/TN/FP/FN), the map '
        'of the class each scan was called, and the mean map over all AD and all NC slices '
        '(N defaults to 2 when --cam is given; default: no maps)',
    )
    cam.add_argument(
        '--cam-method',
        choices=CAM_METHODS,
        default='occlusion',
        help='occlusion: the logit drop when each square of an 8x8 grid is masked (checked '
        'against the synthetic atrophy regions, see README); gradcam / hirescam: one backward '
        'pass, ~30x faster, at --cam-layer',
    )
    cam.add_argument(
        '--cam-layer',
        metavar='NAME',
        help='module whose output gradcam/hirescam explain, e.g. stages.3 (default: the deepest '
        'stage giving at least a 7x7 map at the input size: stages.1 at 64 px, stages.3 at 224)',
    )


def _parse_args(argv, prog: str = PROG):
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.images is None and args.data_dir is None:
        p.error('--data-dir is required (or --images PATH for unlabelled slices)')
    if args.images is not None and args.target_sensitivity is not None:
        p.error(
            '--target-sensitivity needs labelled validation data; with --images pass --threshold X'
        )
    if args.backend == 'onnxruntime' and (args.tta or args.cam):
        p.error('--backend onnxruntime runs the plain export: no --tta, no --cam')
    if args.cam_layer and args.cam_method == 'occlusion':
        p.error('--cam-layer is for --cam-method gradcam or hirescam (occlusion has no layer)')
    return args


@command
def main(argv=None, prog: str = PROG) -> int:
    """0 done; 1 a problem in the data (files that cannot be decoded); 2 a refused input (also
    ``--images`` where no input got a decision)."""
    args = _parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    # per-load chatter ("Loading pretrained weights ...")
    logging.getLogger('timm').setLevel(logging.WARNING)
    from adni_timm import evaluation  # after argparse: --help stays fast
    from adni_timm.evaluation.options import CamOptions, EvaluationOptions
    from adni_timm.inference import load_model

    from adni_timm.utils.files import staged_dir

    start, out = time.perf_counter(), args.output_dir
    try:
        options = EvaluationOptions(
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            tta=args.tta,
            precision=args.precision,
            backend=args.backend,
            skip_bad_images=args.skip_bad_images,
            file_is_scan=args.file_is_scan,
            cam=CamOptions(n=args.cam, method=args.cam_method, layer=args.cam_layer),
            progress=args.progress,
            min_accepted=args.min_accepted,
        )
        model = load_model(args.model[0] if len(args.model) == 1 else args.model)
        # --classes that contradict what the model records would swap the labels: refused
        model.classes = evaluation.resolve_classes(model, args.classes)
        if args.images:
            tag = 'tta' if args.tta else None
            if args.threshold is not None:
                tag = '-'.join(filter(None, [f'threshold-{args.threshold:g}', tag]))
            out = args.output_dir or evaluation.default_output_dir(model, tag, images=True)
            result = evaluation.predict_images(
                model,
                args.images,
                output_dir=out,
                threshold=args.threshold,
                score_flagged=args.score_flagged,
                options=options,
            )
            print(evaluation.format_predictions(result))
            nothing = evaluation.no_decision_summary(result)
            if nothing:  # every scan refused or undecided: that is not an answer
                return fail(prog, f'{nothing} to {out}', EXIT_REFUSED)
        else:
            tag = evaluation.evaluation_tag(
                model,
                split=args.split,
                threshold=args.threshold,
                target_sensitivity=args.target_sensitivity,
                options=options,
            )
            out = args.output_dir or evaluation.default_output_dir(model, tag)
            evaluation.check_output_dir(model, out, tag)
            # written beside OUT and moved in when complete: a full disk or Ctrl-C leaves no
            # half-written evaluation, and an earlier one in OUT stays whole until then
            with staged_dir(out, marker='metrics.json') as staging:
                result = evaluation.evaluate(
                    model,
                    resolve_data_source(args.data_dir, model.classes),
                    split=args.split,
                    output_dir=staging,
                    threshold=args.threshold,
                    target_sensitivity=args.target_sensitivity,
                    n_boot=args.n_boot,
                    options=options,
                    subjects=args.subjects,
                )
            print(evaluation.format_table(result))
    except OSError as e:  # missing files; a full disk names the folder it was writing
        return fail(prog, describe_os_error(e, out) if out else e, EXIT_REFUSED)
    except ValueError as e:
        # EvaluationError, ExportError, RunError: refused (2); DataError: data (1)
        return fail(prog, e)
    print(f'wrote {out} in {time.perf_counter() - start:.1f} s')
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
