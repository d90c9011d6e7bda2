#!/usr/bin/env python
"""Train an ADNI AD vs NC classifier (timm + Accelerate). Argument parsing only: the work is in adni_timm.training.

    python train.py --demo                                    # built-in synthetic demo, no data needed
    python train.py --data-dir AD_NC --output-dir runs/convnext_t
    accelerate launch train.py --data-dir AD_NC --output-dir runs/convnext_t --config configs/adni.yaml
    python train.py --output-dir runs/convnext_t --resume     # continue a killed run
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from adni_timm.config import CONFIG_DIR, ConfigError, TrainConfig, field_types, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train an ADNI AD vs NC classifier with timm and Accelerate.',
        epilog='Overrides default to the preset (--config), else to configs/adni.yaml.')
    parser.add_argument('--data-dir', help='AD_NC folder with train/{NC,AD} (and test/{NC,AD})')
    parser.add_argument('--output-dir', help='run folder to create (see README: run folder)')
    parser.add_argument('--config', help=f'YAML preset: a path, or a name in {CONFIG_DIR} (adni, seed, demo)')
    parser.add_argument('--demo', action='store_true',
                        help='no data needed: train on the built-in SYNTHETIC set, then evaluate on its test split')
    parser.add_argument('--resume', action='store_true', help='continue the run in --output-dir from its checkpoint')
    parser.add_argument('--overwrite', action='store_true', help='delete an existing --output-dir first')
    parser.add_argument('--eval-test', action='store_true', help='evaluate the best model on the test split at the end')
    parser.add_argument('--log-level', default='info', choices=['debug', 'info', 'warning'])
    overrides = parser.add_argument_group('config overrides (keys of the YAML presets)')
    defaults = TrainConfig()
    for key, type_name in field_types().items():
        flag = f'--{key.replace("_", "-")}'
        if type_name == 'bool':  # --cache (= true), --cache false
            overrides.add_argument(flag, dest=key, nargs='?', const='true', default=None, metavar='true|false',
                                   help=f'(adni.yaml: {getattr(defaults, key)})')
        else:
            overrides.add_argument(flag, dest=key, default=None, help=f'(adni.yaml: {getattr(defaults, key)})',
                                   metavar=type_name.upper().replace(' | NONE', '|null'))
    return parser


def run(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    logging.getLogger('adni_timm').setLevel(args.log_level.upper())  # libraries below stay at warnings
    overrides = {k: getattr(args, k) for k in field_types() if getattr(args, k) is not None}

    from adni_timm.training import read_run_record, resumed_config, train

    if args.resume:  # the run's own record says what it was: recipe, data, test evaluation
        if not args.output_dir:
            parser.error('--resume needs --output-dir: the run folder to continue')
        record = read_run_record(args.output_dir)
        cfg = resumed_config(args.output_dir, overrides)
        return train(cfg, args.data_dir or record['data_dir'], args.output_dir, resume=True,
                     eval_test=args.eval_test or record.get('eval_test', False), data_note=record.get('data'))
    if args.demo:
        import torch

        from adni_timm.synthetic import demo_dataset
        if not torch.cuda.is_available():
            overrides.setdefault('img_size', '64')  # ConvNeXt-T at 224 px trains at ~5 img/s on a laptop CPU
        cfg = load_config(args.config or 'demo', overrides)
        return train(cfg, args.data_dir or demo_dataset(),
                     args.output_dir or f'runs/demo-{time.strftime("%Y%m%d-%H%M%S")}', overwrite=args.overwrite,
                     eval_test=True, data_note='synthetic (adni_timm.synthetic demo set; NOT real MRI)')
    if not args.output_dir or not args.data_dir:
        parser.error('--data-dir (the AD_NC folder) and --output-dir are required, or use --demo')
    cfg = load_config(args.config, overrides)
    return train(cfg, args.data_dir, args.output_dir, overwrite=args.overwrite, eval_test=args.eval_test)


def main(argv=None) -> int:
    import torch

    from adni_timm.data import DataError
    from adni_timm.evaluation import EvaluationError
    from adni_timm.training import TrainingError
    try:
        result = run(argv)
    except (ConfigError, DataError, TrainingError, EvaluationError, FileNotFoundError) as e:
        print(f'train.py: error: {e}', file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        print('train.py: error: the GPU ran out of memory. Lower --batch-size (and raise --grad-accum-steps to keep '
              'the same effective batch), or lower --img-size; continue with --resume from the last checkpoint.',
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print('train.py: interrupted; continue with --resume', file=sys.stderr)
        return 130
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    from accelerate import PartialState
    if not PartialState().is_main_process:
        return
    run = result.run_dir
    best = result.best or {}
    print(f'\nrun folder:   {run}')
    print(f'best model:   {run / "best"}  (epoch {best.get("epoch")}, {best.get("weights")} weights, '
          f'{best.get("metric")} = {best.get("value")}, threshold {best.get("threshold")})')
    print(f'  load it:    timm.create_model("local-dir:{run / "best"}", pretrained=True)')
    print(f'metrics:      {run / "metrics.jsonl"}   curves: {run / "curves.png"}')
    if result.eval_metrics:
        from adni_timm.evaluation import format_table
        print('\n' + format_table(result.eval_metrics))
        p = result.eval_metrics['patient']
        print(f'test eval:    {run / "eval"}  patient accuracy {p["accuracy"]:.3f}, AUC {p["auc"]}, '
              f'sensitivity {p["sensitivity"]:.3f}, specificity {p["specificity"]:.3f}')


if __name__ == '__main__':
    sys.exit(main())
