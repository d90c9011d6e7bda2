"""Train an ADNI AD vs NC classifier (timm + Accelerate).
Argument parsing only: the work is in adni_timm.train.loop.

adni-train --demo                                         # built-in synthetic demo, no data needed
adni-train --data-dir AD_NC --output-dir runs/convnext_t
accelerate launch -m adni_timm.cli.train --data-dir AD_NC --output-dir runs/convnext_t --config adni
adni-train --output-dir runs/convnext_t --resume          # continue a killed run
adni-train --data-dir AD_NC --output-dir runs/cv --folds 5 --refit   # 5-fold CV by scan
(also ``python train.py`` / ``accelerate launch train.py`` in a checkout)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from adni_timm.cli import (
    ArgumentParser,
    EXIT_INTERRUPTED,
    EXIT_OUT_OF_MEMORY,
    HelpFormatter,
    command,
    examples,
    data_source,
    fail,
    resolve_data_source,
)
from adni_timm.config import (
    ConfigError,
    TrainConfig,
    field_help,
    field_types,
    format_value,
    load_config,
    preset_names,
)

__all__ = ['build_parser', 'run', 'main']

PROG = 'adni-train'

EPILOG = examples(
    '%(prog)s --demo                                   # SYNTHETIC demo set, no data needed',
    '%(prog)s --data-dir AD_NC --output-dir runs/convnext_t',
    '%(prog)s --data-dir AD_NC --output-dir runs/atto --model adni_convnext_atto --img-size 96',
    '%(prog)s --data-dir AD_NC --output-dir runs/s --scale 0.6 1.0 --target-sensitivity 0.9',
    '%(prog)s --output-dir runs/convnext_t --resume    # continue a killed run',
    '%(prog)s --data-dir AD_NC --output-dir runs/cv --folds 5 --refit   # 5-fold CV by scan',
    'accelerate launch -m adni_timm.cli.train --data-dir AD_NC --output-dir RUN   # several GPUs',
) + (
    '\n\nOverrides use the config keys (YAML presets: '
    + ', '.join(preset_names())
    + "); defaults shown are the adni\npreset's, a --config preset replaces them. Values as in"
    ' YAML: null, true/false, lists as 0.7,1.0\nor 0.7 1.0.'
)


class _ListValue(argparse.Action):
    """A list key: ``--scale 0.6 1.0`` and ``--scale 0.6,1.0`` both become the text '0.6,1.0'."""

    def __call__(self, parser, namespace, values, option_string=None):
        parts = [part.strip() for value in values for part in value.split(',')]
        setattr(namespace, self.dest, ','.join(part for part in parts if part))


# flags of keys renamed since: they keep working (a file-name group was called a patient)
_OLD_FLAGS = {'file_is_scan': ('--file-is-patient',)}


# timm train.py's flag names where they mean exactly what ours mean (README lists them, and the
# ones left out because they differ: --amp, --output, --resume PATH)
TIMM_ALIASES = {
    're_prob': ('--reprob',),
    'auto_augment': ('--aa',),
    'ema': ('--model-ema',),
    'ema_decay': ('--model-ema-decay',),
    'num_workers': ('-j', '--workers'),
    'batch_size': ('-b',),
}


class _TorchCompile(argparse.Action):
    """timm's ``--torchcompile [BACKEND]``: our ``compile: true``, which runs torch's default
    backend (inductor); another backend would not be what was asked, so it is refused."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values != 'inductor':
            parser.error(
                f"{option_string} {values}: only the inductor backend (torch.compile's default) "
                f'runs here; use --compile or {option_string} alone'
            )
        setattr(namespace, self.dest, 'true')


def _override_help(type_name: str, meta: dict, default) -> tuple[str, str | tuple[str, ...]]:
    """(help, metavar) of one override: its description, choices and default in CLI syntax."""
    choices = meta.get('choices')
    text = meta['help']
    if type_name == 'bool':
        metavar = 'true|false'
    elif 'metavar' in meta:  # a list: --classes NAME [NAME ...]
        metavar = tuple(meta['metavar'].split(','))
        text += f'; {" ".join(metavar)} or {",".join(metavar)}'
    elif choices and len(choices) <= 4:
        metavar = '{' + ','.join(format_value(c) for c in choices) + '}'
    elif choices:  # a long list reads better in the help than in the usage line
        metavar = 'NAME'
        text += f'; one of {", ".join(format_value(c) for c in choices)}'
    else:
        metavar = type_name.upper().replace(' | NONE', '|null')
    text += f' (default: {format_value(default)})'
    return text.replace('%', '%%'), metavar


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description='Train an ADNI AD vs NC classifier with timm and Accelerate.',
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        '--data-dir',
        type=data_source,
        help='AD_NC folder with train/{NC,AD} (and test/{NC,AD}); or a Hugging Face dataset: '
        'hf:ORG/NAME[:CONFIG], or a folder of parquet shards / an imagefolder (docs/DATA.md)',
    )
    parser.add_argument('--output-dir', help='run folder to create (see README: run folder)')
    parser.add_argument(
        '--config', help=f'YAML preset: a path, or a preset name ({", ".join(preset_names())})'
    )
    parser.add_argument(
        '--demo',
        action='store_true',
        help='no data needed: train on the built-in SYNTHETIC set, then evaluate on its test split',
    )
    parser.add_argument(
        '--resume', action='store_true', help='continue the run in --output-dir from its checkpoint'
    )
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace an existing --output-dir (only once every check has passed)',
    )
    parser.add_argument(
        '--eval-test',
        action='store_true',
        help='evaluate the best model on the test split at the end',
    )
    parser.add_argument('--log-level', default='info', choices=['debug', 'info', 'warning'])
    overrides = parser.add_argument_group(
        'config overrides (keys of the YAML presets, dashes for underscores)'
    )
    defaults = TrainConfig()
    helps = field_help()
    for key, type_name in field_types().items():
        flags = [
            f'--{key.replace("_", "-")}',
            *_OLD_FLAGS.get(key, ()),
            *TIMM_ALIASES.get(key, ()),
        ]
        text, metavar = _override_help(type_name, helps[key], getattr(defaults, key))
        if type_name == 'bool':  # --cache (= true), --cache false
            overrides.add_argument(
                *flags, dest=key, nargs='?', const='true', default=None, metavar=metavar, help=text
            )
        elif type_name.startswith('list['):
            overrides.add_argument(
                *flags, dest=key, nargs='+', action=_ListValue, metavar=metavar, help=text
            )
        else:
            overrides.add_argument(*flags, dest=key, default=None, help=text, metavar=metavar)
    # the other timm names are second option strings of the overrides above (--re-prob, --reprob)
    timm_names = parser.add_argument_group("timm train.py's names for the same settings")
    timm_names.add_argument(
        '--torchcompile',
        dest='compile',
        nargs='?',
        const='inductor',
        action=_TorchCompile,
        metavar='inductor',
        help="= --compile (timm's backend argument: only inductor, torch's default, runs here)",
    )
    timm_names.add_argument(
        '--log-wandb',
        dest='log_with',
        action='store_const',
        const='wandb',
        help='= --log-with wandb',
    )
    return parser


def run(argv=None, prog: str = PROG):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    # libraries below stay at warnings
    logging.getLogger('adni_timm').setLevel(args.log_level.upper())
    overrides = {k: getattr(args, k) for k in field_types() if getattr(args, k) is not None}
    if overrides.get('subjects'):  # recorded absolute: resume and evaluate.py find it from anywhere
        found = Path(overrides['subjects']).expanduser()
        if not found.is_file():
            parser.error(f'--subjects {overrides["subjects"]}: no such file')
        overrides['subjects'] = str(found.resolve())
    if overrides.get('subjects_from_audit'):  # checked now, recorded absolute (resume finds it)
        from adni_timm.data.audit import read_audit_csv

        found = Path(overrides['subjects_from_audit']).expanduser()
        try:
            read_audit_csv(found)
        except (OSError, ValueError) as e:
            parser.error(f'--subjects-from-audit {found}: {e}')
        overrides['subjects_from_audit'] = str(found.resolve())

    from adni_timm.data.note import describe
    from adni_timm.run import RunRecord

    if args.resume:  # the run's own record says what it was: recipe, split, data, test evaluation
        if not args.output_dir:
            parser.error('--resume needs --output-dir: the run folder to continue')
        recorded = RunRecord.load(args.output_dir)
        data_dir = args.data_dir and resolve_data_source(args.data_dir, recorded.config.classes)
        record = recorded.resumed(overrides, data_dir=data_dir, eval_test=args.eval_test)
        return _train(record, args.output_dir, resume=True)
    if args.demo:
        import torch

        from adni_timm.synthetic.slices import demo_dataset

        if not torch.cuda.is_available():
            # ConvNeXt-T at 224 px trains at ~5 img/s on a laptop CPU
            overrides.setdefault('img_size', '64')
        cfg = load_config(args.config or 'demo', overrides)
        data_dir = args.data_dir and resolve_data_source(args.data_dir, cfg.classes)
        data_dir = data_dir or demo_dataset()
        record = RunRecord.new(cfg, data_dir, describe(data_dir), eval_test=True)
        return _train(
            record,
            args.output_dir or f'runs/demo-{time.strftime("%Y%m%d-%H%M%S")}',
            overwrite=args.overwrite,
        )
    if not args.output_dir or not args.data_dir:
        parser.error('--data-dir (the AD_NC folder) and --output-dir are required, or use --demo')
    cfg = load_config(args.config, overrides)
    data_dir = resolve_data_source(args.data_dir, cfg.classes)
    return _train(
        RunRecord.new(cfg, data_dir, describe(data_dir), eval_test=args.eval_test),
        args.output_dir,
        overwrite=args.overwrite,
    )


def _train(record, run_dir, **kwargs):
    if record.config.folds >= 2:
        from adni_timm.train.cv import train_cv

        return train_cv(record, run_dir, **kwargs)
    from adni_timm.train.loop import train

    return train(record, run_dir, **kwargs)


@command
def main(argv=None, prog: str = PROG) -> int:
    """Exit codes: ``adni_timm.cli`` (0 ok, 1 a problem in the data, 2 refused, 3 out of GPU
    memory, 130 interrupted)."""
    import torch

    from adni_timm.data import DataError
    from adni_timm.data.hub_datasets import DatasetSourceError
    from adni_timm.evaluation import EvaluationError
    from adni_timm.export.format import ExportError
    from adni_timm.inference import InferenceError
    from adni_timm.run import RunError
    from adni_timm.train.loop import TrainingError

    try:
        result = run(argv, prog)
    except (
        ConfigError,
        DataError,
        DatasetSourceError,
        TrainingError,
        EvaluationError,
        ExportError,
        InferenceError,
        RunError,
        OSError,  # a missing file; a full disk outside a checkpoint (the record, the split)
    ) as e:
        return fail(prog, e)
    except torch.OutOfMemoryError:
        return fail(
            prog,
            'the GPU ran out of memory. Lower --batch-size (and raise --grad-accum-steps to keep '
            'the same effective batch), or lower --img-size; continue with --resume from the last '
            'checkpoint.',
            EXIT_OUT_OF_MEMORY,
        )
    except KeyboardInterrupt:
        print(f'{prog}: interrupted; continue with --resume', file=sys.stderr)
        return EXIT_INTERRUPTED
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        print('\n' + format_summary(result))
    # every process finished; leaving with the process group alive lets one process tear it
    # down while another still uses it (an abort at exit, seen with gloo; torch warns on NCCL)
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


def format_summary(result) -> str:
    """Where everything is, which model was kept and why, the test table, and the next commands."""
    from adni_timm.cv.summary import format_out_of_fold
    from adni_timm.utils.display import fmt
    from adni_timm.evaluation import format_table

    run, best = result.run, result.best
    lines = ['=' * 100, f'run folder   {run}']
    if result.is_cv:
        cv = result.cv
        lines += [
            f'folds        {run.fold(0).path} .. fold{cv["k"] - 1} (ordinary run folders), '
            f'{run.oof_file}, {run.cv_file}',
            'cross-validation (held-out scans of each fold, at the threshold chosen on the '
            'other folds):',
            result.cv_table,
            f'out of fold  {format_out_of_fold(cv["out_of_fold"])}',
        ]
        if result.final is not None:
            lines.append(
                f'final model  {run.final_dir}  (refit on all training scans for '
                f"{best.epoch} epochs, the folds' choice; {best.weights} weights)"
            )
            point = cv['refit']
        else:
            lines.append(
                f'ensemble     the {cv["k"]} fold models (no refit: add one with --resume --refit)'
            )
            point = cv['ensemble']
        lines.append(
            f'threshold    P(AD) >= {fmt(point["threshold"])} (out-of-fold, '
            f'{point["threshold_rule"]})'
        )
        export = run.final_dir if result.final is not None else None
    else:
        export = run.best_dir
        if best is not None:
            why = (
                f'best {best.metric} {fmt(best.value)} on validation, ties by lower val loss'
                if best.metric
                else 'the last epoch (no validation split)'
            )
            lines.append(
                f'best model   {export}  (epoch {best.epoch}, {best.weights} weights: {why})'
            )
            lines.append(
                f'threshold    P(AD) >= {fmt(best.threshold)} ({best.threshold_source}), '
                f'temperature {fmt(best.temperature)}'
            )
        lines.append(f'curves       {run.curves_file}   per epoch: {run.history_file}')
    if result.ensemble_metrics is not None and result.ensemble_metrics is not result.eval_metrics:
        lines += [
            '',
            format_table(result.ensemble_metrics),
            f'evaluation   {run.eval_dir().path} (the fold ensemble)',
        ]
    if result.eval_metrics:
        where = run.eval_dir(final=result.final is not None).path
        lines += ['', format_table(result.eval_metrics), f'evaluation   {where}']
    # the installed commands: a pip install has no evaluate.py / push_to_hub.py
    lines += [
        '',
        'next:',
        f'  adni-evaluate --model {run.final_dir if result.final is not None else run} '
        f'--data-dir {result.record.data_dir}',
        f'  adni-push --run {run} --repo-id ORG/NAME --dry-run --output-dir {run.hub_dir}',
    ]
    if export is not None:
        lines.append(f'  timm.create_model("local-dir:{export}", pretrained=True)')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
