"""adni-prepare throughput at the default recipe, on SYNTHETIC ADNI-like T1 volumes.

    python benchmarks/prepare_throughput.py [--volumes 8] [--workers N] [--work-dir DIR]
                                            [--json FILE] [--quick]

1. writes ``--volumes`` SYNTHETIC heads (half NC, half AD) the size of an ADNI MPRAGE: 1.2 mm
   sagittal x 1 mm x 1 mm, 167 x 256 x 256 voxels, int16 NIfTI (not timed);
2. prepares them with ``adni_timm.prepare.run.prepare`` at the default recipe with ``--workers``
   processes (default: every core): volumes/min over the whole run (wall clock, process start-up
   included), and per step the median wall and CPU seconds per volume;
3. extrapolates: every scan is prepared on one thread, so a node with C cores prepares about
   C x 60 / (CPU s per volume) volumes/min, if nothing else is running; ADNI's ~800 baseline
   scans take 800 / that.

The machine's load average is printed before and after: on a shared machine wall times inflate,
CPU times much less. ``--quick`` (2 volumes at 2 mm) only checks that everything runs.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from adni_timm.prepare.labels import read_labels
from adni_timm.prepare.run import PrepareOptions, prepare
from adni_timm.prepare.preprocess import Recipe
from adni_timm.synthetic.volumes import generate_volumes
from adni_timm.prepare.volumes import discover_scans

ADNI_BASELINE_SCANS = 800


def _median_per_step(records, key: str) -> dict[str, float]:
    steps = {}
    for r in records:
        for step, value in getattr(r, key).items():
            steps.setdefault(step, []).append(value)
    return {step: round(statistics.median(v), 2) for step, v in steps.items()}


def run(work: Path, volumes: int, workers: int, quick: bool) -> dict:
    src = work / 'volumes'
    voxel, base, fov = (
        (2.0, 2.0, (200, 256, 256)) if quick else ((1.2, 1.0, 1.0), 1.0, (200, 256, 256))
    )
    if not (src / 'labels.csv').is_file():
        start = time.perf_counter()
        generate_volumes(
            src, max(1, volumes // 2), voxel_mm=voxel, base_mm=base, fov_mm=fov, workers=workers
        )
        print(f'generated {volumes} SYNTHETIC volumes in {time.perf_counter() - start:.0f} s')
    out = work / 'prepared'
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    result = prepare(
        src / 'ADNI',
        out,
        read_labels(src / 'labels.csv'),
        discover_scans(src / 'ADNI'),
        Recipe(),
        PrepareOptions(),
        workers=workers,
    )
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    records = [r for r in result.prepared if r.status == 'ok']
    wall_steps = _median_per_step(records, 'seconds')
    cpu_steps = _median_per_step(records, 'cpu_seconds')
    cpu_per_volume = statistics.median(sum(r.cpu_seconds.values()) for r in records)
    wall_per_volume = statistics.median(sum(r.seconds.values()) for r in records)
    per_min = len(records) / wall * 60
    ideal_here = (os.cpu_count() or 1) * 60 / cpu_per_volume
    node = 32 * 60 / cpu_per_volume
    return {
        'volumes': len(records),
        'failed': len(result.prepared) - len(records),
        'workers': workers,
        'cores': os.cpu_count(),
        'voxel_mm': voxel,
        'wall_s': round(wall, 1),
        'volumes_per_min': round(per_min, 2),
        'wall_s_per_volume_median': round(wall_per_volume, 2),
        'cpu_s_per_volume_median': round(cpu_per_volume, 2),
        'wall_s_per_step_median': wall_steps,
        'cpu_s_per_step_median': cpu_steps,
        'similarity_min': min(r.similarity for r in records),
        'similarity_median': statistics.median(r.similarity for r in records),
        'load_average_before_after': [round(load_before[0], 2), round(load_after[0], 2)],
        'ideal_volumes_per_min_this_machine': round(ideal_here, 1),
        'extrapolated_32_core_volumes_per_min': round(node, 1),
        'extrapolated_32_core_adni_baseline_min': round(ADNI_BASELINE_SCANS / node, 1),
        'this_machine_adni_baseline_h_measured': round(ADNI_BASELINE_SCANS / per_min / 60, 2),
    }


def _table(r: dict) -> str:
    steps = '; '.join(
        f'{k} {r["cpu_s_per_step_median"][k]:.2f} / {v:.2f}'
        for k, v in r['wall_s_per_step_median'].items()
    )
    rows = [
        ('volumes prepared (failed)', f'{r["volumes"]} ({r["failed"]})'),
        ('workers / cores', f'{r["workers"]} / {r["cores"]}'),
        ('volumes/min, measured (wall)', f'{r["volumes_per_min"]:.1f}'),
        (
            'per volume: CPU s / wall s (median)',
            f'{r["cpu_s_per_volume_median"]:.1f} / {r["wall_s_per_volume_median"]:.1f}',
        ),
        ('per step: CPU s / wall s (median)', steps),
        (
            'registration NCC min / median',
            f'{r["similarity_min"]:.3f} / {r["similarity_median"]:.3f}',
        ),
        ('load average before / after', ' / '.join(map(str, r['load_average_before_after']))),
        (
            'ideal volumes/min here (cores x 60 / CPU s)',
            f'{r["ideal_volumes_per_min_this_machine"]:.1f}',
        ),
        (
            '800 ADNI baseline scans here, measured',
            f'{r["this_machine_adni_baseline_h_measured"]:.2f} h',
        ),
        (
            '32-core node: volumes/min; 800 scans',
            f'{r["extrapolated_32_core_volumes_per_min"]:.0f}; '
            f'{r["extrapolated_32_core_adni_baseline_min"]:.0f} min',
        ),
    ]
    return '\n'.join(
        ['| measurement | result |', '|---|---|'] + [f'| {a} | {b} |' for a, b in rows]
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--volumes', type=int, default=8)
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    p.add_argument('--work-dir', help='keeps the generated volumes for the next run')
    p.add_argument('--json', help='write the numbers here')
    p.add_argument('--quick', action='store_true', help='2 volumes at 2 mm: a smoke test')
    args = p.parse_args(argv)
    volumes = 2 if args.quick else args.volumes
    work = Path(args.work_dir or tempfile.mkdtemp(prefix='adni-prepare-bench-'))
    if not args.work_dir:  # scratch: gone when the script ends
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    result = run(work, volumes, args.workers, args.quick)
    print(_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
