"""Publish a training run to the Hugging Face Hub: weights, timm config, model card and plots.

    adni-push --run RUN --repo-id ORG/NAME [--eval OUT/metrics.json] [--private]
              [--revision R] [--create-pr] [--token T] [--commit-message M]
              [--acknowledgement FILE] [--license NAME [--license-link URL]]
              [--force-eval] [--onnx] [--dry-run] [--output-dir DIR]

The logic lives in ``adni_timm.publish.hub``; this module only parses arguments and reports.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from adni_timm.cli import ArgumentParser, EXIT_OK, HelpFormatter, command, examples, fail
from adni_timm.export.format import ExportError
from adni_timm.publish.hub import HubError, push_to_hub

__all__ = ['build_parser', 'parse_args', 'format_file_list', 'main']

PROG = 'adni-push'


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description=__doc__.split('\n\n')[0],
        formatter_class=HelpFormatter,
        epilog=examples(
            '%(prog)s --run runs/convnext_t --repo-id ORG/NAME --dry-run --output-dir export',
            '%(prog)s --run runs/convnext_t --repo-id ORG/NAME --private',
            '%(prog)s --run runs/cv --repo-id ORG/NAME --eval runs/cv/eval-final/metrics.json',
            '%(prog)s --run runs/convnext_t --repo-id ORG/NAME --revision v2 --create-pr',
            '%(prog)s --run runs/oasis --repo-id ORG/NAME --license oasis-3-data-use-terms '
            '--license-link https://sites.wustl.edu/oasisbrains/',
        ),
    )
    p.add_argument(
        '--run',
        required=True,
        type=Path,
        help='training run folder (holds best/, train_config.yaml)',
    )
    p.add_argument(
        '--repo-id', required=True, help='Hub model repo, ORG/NAME (created when missing)'
    )
    p.add_argument(
        '--eval',
        type=Path,
        default=None,
        dest='eval_metrics',
        help='evaluate.py metrics.json for the card (default: RUN/eval/metrics.json when it '
        'exists); it must belong to the published weights',
    )
    p.add_argument(
        '--private',
        action='store_true',
        help='create the repo private (refused if it exists publicly)',
    )
    p.add_argument('--revision', default=None, help='branch to push to (created when missing)')
    p.add_argument(
        '--create-pr',
        action='store_true',
        help='open a pull request instead of committing directly',
    )
    p.add_argument(
        '--token', default=None, help='Hub write token (default: HF_TOKEN or `hf auth login`)'
    )
    p.add_argument('--commit-message', default=None)
    p.add_argument(
        '--acknowledgement',
        type=Path,
        default=None,
        help='text file with the ADNI acknowledgement that replaces the card placeholder',
    )
    p.add_argument(
        '--license',
        dest='licence',
        metavar='NAME',
        default=None,
        help="the training data's terms, for weights trained on real data (the card says "
        'license: other, license_name: NAME; default for ADNI data: the ADNI Data Use Agreement). '
        'Refused for weights trained on synthetic data, which are Apache-2.0',
    )
    p.add_argument(
        '--license-link',
        dest='licence_link',
        metavar='URL',
        default=None,
        help="where those terms are written (the card's license_link)",
    )
    p.add_argument(
        '--force-eval',
        action='store_true',
        help='publish an evaluation that cannot be matched to these weights (the card says so)',
    )
    p.add_argument(
        '--onnx',
        action='store_true',
        help='also publish model.onnx (onnxruntime runs it without torch; needs the onnx extra)',
    )
    p.add_argument(
        '--dry-run', action='store_true', help='write the export folder and list it; no network'
    )
    p.add_argument('--output-dir', type=Path, default=None, help='export folder (default: RUN/hub)')
    return p


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


def format_file_list(files: list[Path]) -> str:
    width = max(len(f.name) for f in files)
    lines = [f'  {f.name:<{width}}  {f.stat().st_size:>12,d} bytes' for f in files]
    lines.append(f'  {"total":<{width}}  {sum(f.stat().st_size for f in files):>12,d} bytes')
    return '\n'.join(lines)


@command
def main(argv=None, prog: str = PROG) -> int:
    """0 uploaded (or written, with --dry-run); 2 refused: a bad repo id, a run without weights,
    an evaluation of other weights, no token, a failed upload (the export is kept)."""
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s: %(message)s')
    for chatty in ('onnxscript', 'onnx_ir', 'torch.onnx'):  # the exporter's per-node messages
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        acknowledgement = (
            args.acknowledgement.read_text(encoding='utf-8') if args.acknowledgement else None
        )
        result = push_to_hub(
            args.run,
            args.repo_id,
            eval_metrics_path=args.eval_metrics,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            token=args.token,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
            output_dir=args.output_dir,
            acknowledgement=acknowledgement,
            force_eval=args.force_eval,
            onnx=args.onnx,
            licence=args.licence,
            licence_link=args.licence_link,
        )
    except (HubError, ExportError, OSError) as e:  # UploadError too: the export is kept
        return fail(prog, e)
    if result.dry_run:
        print(
            f'dry run: nothing uploaded. {result.repo_id} would receive, from {result.export_dir}:'
        )
    else:
        print(f'uploaded to https://huggingface.co/{result.repo_id} from {result.export_dir}:')
    print(format_file_list(result.files))
    if result.pr_url or result.commit_url:
        print(result.pr_url or result.commit_url)
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
