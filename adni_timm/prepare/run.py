"""``adni-prepare``: a folder of 3D T1 scans + a labels file -> the slice layout training reads.

::

    OUT/{train,test}/{class}/<scan>_<slice>.png   the slices (8-bit; --image-format jpeg)
    OUT/manifest.csv      one row per scan: scan, subject, visit, image_id, source, label,
                          split, similarity, flagged, included, steps, warnings, ...
    OUT/prepare.json      the recipe, the template, library versions, options, slice mapping
    OUT/plan.json         every planned scan and its split (the same for every shard)
    OUT/records/<subject>.json   one per subject, written atomically after its slices
    OUT/qc/<scan>.png  the slices over the template's brain outline; OUT/qc/overview.png
    OUT/flagged/...       slices of registration outliers (unless --keep-flagged)
    OUT/dataset_description.json, OUT/.bidsignore   OUT is a BIDS derivative of SRC (``bids``)
    OUT/sub-<label>/[ses-<label>/]anat/...   --save-registered: each scan in template space and
                          its affine transform (``bids``)

How a run goes: find the scans (``volumes.discover_scans``); make the plan (``scan_plan``: each
scan matched to its label, the visits chosen, the split drawn **by subject**, stratified and
seeded, over *all* subjects, so every shard of ``--shard K/N`` computes the same split); prepare
this shard's subjects (``preprocess.slices_from_scan``) in ``workers`` processes. A subject
whose record holds the same recipe digest and the same scans is skipped: a re-run after a kill
redoes only the subject that was in flight. An unsharded run then finalises (:func:`merge`):
outlier flagging, the manifest and the overview (``prepare_qc``); sharded runs do that with
``adni-prepare --merge OUT``.

The file-name scan id is the subject (``002_S_0295``) with ``--visits baseline``, and
``<subject>_<visit>`` (``002_S_0295_m12``) with ``--visits all``; ``manifest.csv`` carries both
(columns ``scan`` and ``subject``) so a validation split can group the visits of a subject.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import platform
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.note import PREPARE_NOTE, DataNote, describe, write_data_note
from ..utils.files import read_json, safe_name, write_json, write_text
from . import bids
from .labels import Labels
from .qc import flag_outliers, qc_strip, write_overview
from .preprocess import (
    PreparedScan,
    Recipe,
    RegistrationError,
    encode_slice,
    read_recipe,
    slice_numbers,
    slices_from_scan,
    written_pixels,
)
from .plan import (
    Plan,
    PlannedScan,
    PrepareError,
    PrepareWriteError,
    PrepareOptions,
    Problem,
    ScanRecord,
    build_plan,
    parse_shard,
    shard_subjects,
    split_subjects,
)
from .similarity import MEASURE
from .template import load_template
from .volumes import Discovery, VolumeError

__all__ = [
    'MANIFEST_COLUMNS',
    'PrepareError',
    'PrepareWriteError',
    'PrepareOptions',
    'Problem',
    'PlannedScan',
    'Plan',
    'ScanRecord',
    'PrepareResult',
    'MergeResult',
    'build_plan',
    'split_subjects',
    'parse_shard',
    'prepare',
    'merge',
    'flag_outliers',
    'encode_slice',
    'written_pixels',
    'read_recipe',
    'slices_from_scan',
    'Recipe',
    'PreparedScan',
]

_logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    'scan',  # the file-name scan id: <scan>_<slice>.png
    'subject',  # the real subject id; all visits of a subject share it (and the split)
    'visit',
    'image_id',
    'date',
    'source',
    'group',  # the labels file's value (CN, Dementia, ...)
    'label',  # our class (NC, AD, ...)
    'split',
    'status',  # ok | failed
    'similarity',  # registration similarity (similarity.py; prepare.json names the measure)
    'flagged',  # a failed registration (below the floor) or an outlier of the run
    'included',  # slices in OUT/{split}/{label}/ (False: failed, or flagged without --keep-flagged)
    'n_slices',
    'steps',
    'warnings',
    'error',
)


@dataclass
class PrepareResult:
    plan: Plan
    prepared: list[ScanRecord]  # this run's
    already_done: list[str]  # subjects skipped: prepared before with the same recipe
    problems: list[Problem]
    merged: 'MergeResult | None' = None


@dataclass
class MergeResult:
    records: list[ScanRecord]
    flagged: list[str]
    missing: list[str]  # planned subjects without a record (a shard not run yet)
    problems: list[Problem]
    counts: dict[str, int]


# ---------------------------------------------------------------------------------- per subject


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {'python': platform.python_version()}
    for name in (
        'adni-timm',
        'SimpleITK',
        'nibabel',
        'numpy',
        'scipy',
        'pydicom',
        'nilearn',
        'pillow',
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = 'not installed'
    return out


def _write_image(array: np.ndarray, path: Path, fmt: str, comment: str) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_bytes(encode_slice(array, fmt, comment))
    tmp.replace(path)


def _prepare_scan(
    scan: PlannedScan,
    out: Path,
    recipe: Recipe,
    fmt_comment: str,
    registered: bids.RegisteredOutput | None = None,
) -> ScanRecord:
    record = ScanRecord(
        scan.scan_id,
        scan.subject,
        scan.visit,
        scan.image_id,
        scan.date,
        scan.source,
        scan.group,
        scan.label,
        scan.split,
        status='failed',
        steps=list(recipe.steps),
    )
    try:
        prepared = slices_from_scan(scan.source, recipe, keep_registered=registered is not None)
    except VolumeError as e:
        record.error, record.problem_kind = str(e), e.kind
        return record
    except RegistrationError as e:
        record.error = (
            f'{scan.source}: {e}: check the header orientation (view it in any '
            f'viewer), or use --no-register if the scan is already in MNI space'
        )
        record.problem_kind = 'registration'
        return record
    except Exception as e:  # noqa: BLE001  a bug or an ITK failure must not stop the others
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ''
        record.error = (
            f'{scan.source}: unexpected {type(e).__name__} ({last[:160]}): report it '
            f"with this scan's header (nibabel.load(path).header)"
        )
        record.problem_kind = 'error'
        return record
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    _write_scan(prepared, scan, out, recipe, fmt_comment, record)
    if registered is not None:
        record.registered = bids.write_registered(
            out,
            registered.name(scan.subject, scan.visit),
            prepared.registered,
            prepared.transform,
            scan.source,
            registered.src,
            recipe.steps,
        )
    record.status = 'ok'
    record.similarity = prepared.similarity
    record.slice_numbers = list(prepared.slice_numbers)
    record.warnings = list(prepared.warnings)
    record.seconds = {**prepared.seconds, 'write': round(time.perf_counter() - start_wall, 3)}
    record.cpu_seconds = {
        **prepared.cpu_seconds,
        'write': round(time.process_time() - start_cpu, 3),
    }
    return record


def _write_scan(prepared, scan, out: Path, recipe: Recipe, comment: str, record) -> None:
    """The scan's slices and QC strip (each written to a temporary name, then renamed). A write
    that fails (a full disk) removes what this scan wrote and raises PrepareWriteError naming
    the path."""
    from PIL import Image

    folder = out / scan.split / scan.label
    ext = 'png' if recipe.image_format == 'png' else 'jpeg'
    path = folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in zip(prepared.slice_numbers, prepared.slices):
            name = f'{scan.scan_id}_{k}.{ext}'
            path = folder / name
            _write_image(image, path, recipe.image_format, comment)
            record.files.append(f'{scan.split}/{scan.label}/{name}')
        title = f'{scan.scan_id}  {scan.label}  similarity {prepared.similarity:.3f}'
        qc = qc_strip(prepared, title)
        path = out / 'qc' / f'{scan.scan_id}.png'
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f'.{path.name}.tmp')
        Image.fromarray(qc).save(tmp, 'PNG')
        tmp.replace(path)
    except OSError as e:
        _remove_files(out, record.files + [f'qc/{scan.scan_id}.png'])
        record.files.clear()
        raise PrepareWriteError(
            f'cannot write {path}: {e.strerror or e}' + (f' (errno {e.errno})' if e.errno else '')
        ) from None


def _remove_files(out: Path, rels: list[str]) -> None:
    """Remove files (relative to ``out``) and their temporary twins; never raises."""
    for rel in rels:
        path = out / rel
        for p in (path, path.with_name(f'.{path.name}.tmp')):
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass


def _read_scans(path: Path) -> dict:
    """A record or plan; one written before names each scan's ``scan_id`` ``patient``."""
    found = read_json(path)
    for scan in found.get('scans', []):
        if 'patient' in scan:
            scan.setdefault('scan_id', scan.pop('patient'))
    return found


def _record_path(out: Path, subject: str) -> Path:
    return out / 'records' / f'{safe_name(subject)}.json'


def _remove_old_files(out: Path, subject: str) -> None:
    """Slices of an earlier, different preparation of this subject (another recipe)."""
    path = _record_path(out, subject)
    if not path.is_file():
        return
    try:
        old = read_json(path)
    except (OSError, json.JSONDecodeError):
        return
    for scan in old.get('scans', []):
        for rel in scan.get('files', []):
            for base in (out, out / 'flagged'):
                (base / rel).unlink(missing_ok=True)
        for rel in scan.get('registered', []):
            (out / rel).unlink(missing_ok=True)


def _prepare_subject(
    subject: str,
    scans: list[PlannedScan],
    out: str,
    recipe_dict: dict,
    digest: str,
    registered: bids.RegisteredOutput | None = None,
) -> list[ScanRecord]:
    """Prepare one subject's scans and write its record last (atomically): the record is the
    mark of a finished subject."""
    out_dir = Path(out)
    recipe = Recipe.from_dict(recipe_dict)
    _remove_old_files(out_dir, subject)
    comment = f'adni-prepare recipe {digest}'
    records: list[ScanRecord] = []
    path = _record_path(out_dir, subject)
    try:
        for scan in scans:
            records.append(_prepare_scan(scan, out_dir, recipe, comment, registered))
        write_json(
            path,
            {
                'subject': subject,
                'recipe_digest': digest,
                'similarity_measure': MEASURE,
                'scans': [asdict(r) for r in records],
            },
        )
    except (OSError, PrepareWriteError) as e:
        # no record: a re-run redoes this subject; its slices so far would be orphans
        _remove_files(out_dir, [f for r in records for f in r.files])
        if isinstance(e, PrepareWriteError):
            raise
        raise PrepareWriteError(f'cannot write {path}: {e.strerror or e}') from None
    return records


def _is_done(
    out: Path, subject: str, scans: list[PlannedScan], digest: str, registered: bool = False
) -> bool:
    path = _record_path(out, subject)
    if not path.is_file():
        return False
    try:
        record = _read_scans(path)
    except (OSError, json.JSONDecodeError):
        return False
    done = [(s['scan_id'], s['source']) for s in record.get('scans', [])]
    if registered and any(  # prepared before without --save-registered: redo it
        s.get('status') == 'ok'
        and not all((out / f).is_file() for f in s.get('registered') or [''])
        for s in record.get('scans', [])
    ):
        return False
    return (
        record.get('recipe_digest') == digest
        # a similarity of another measure cannot be compared with this floor: redo the subject
        and record.get('similarity_measure') == MEASURE
        and done == [(s.scan_id, s.source) for s in scans]
    )


# ------------------------------------------------------------------------------------------ run


def _prepare_json(recipe: Recipe, options: PrepareOptions, labels: Labels, src: Path) -> dict:
    template = load_template()
    ks = slice_numbers(recipe, template)
    return {
        'format': 1,
        'tool': 'adni-prepare',
        'recipe': recipe.to_dict(),
        'recipe_digest': recipe.digest,
        'steps': list(recipe.steps),
        'slices': {
            'numbers': list(ks),
            'mni_z_mm': [template.z_of_index(k) for k in ks],
            'numbering': 'template axial voxel index k; MNI z = k - 72 mm',
            'size': list(recipe.size),
            'orientation': 'rows anterior -> posterior, columns patient right -> left '
            '(radiological), 1 mm pixels',
        },
        'template': template.describe(),
        'modality': 'T1-weighted MRI (3D MPRAGE / SPGR)',
        'options': {
            'classes': list(options.classes),
            'group_map': dict(options.group_map),
            'visits': options.visits,
            'test_fraction': options.test_fraction,
            'seed': options.seed,
            'keep_flagged': options.keep_flagged,
            'min_similarity': options.min_similarity,
            'similarity_measure': MEASURE,
            'outlier_z': options.outlier_z,
            'outlier_min_gap': options.outlier_min_gap,
            'save_registered': options.save_registered,
        },
        'labels': {'path': str(labels.path), 'format': labels.format, 'column': labels.column},
        'source': str(src),
        'versions': _versions(),
    }


def _registered_output(
    plan: Plan, options: PrepareOptions, src: Path
) -> bids.RegisteredOutput | None:
    """Where --save-registered writes (None without it); two scans on one BIDS name refused."""
    if not options.save_registered:
        return None
    registered = bids.RegisteredOutput(str(src), sessions=options.visits == 'all')
    names: dict[str, str] = {}
    for scan in plan.scans:
        try:
            prefix = registered.name(scan.subject, scan.visit).prefix
        except ValueError as e:
            raise PrepareError(f'--save-registered: {e}: rename the subject or visit') from None
        if names.setdefault(prefix, scan.scan_id) != scan.scan_id:
            raise PrepareError(
                f'--save-registered: scans {names[prefix]} and {scan.scan_id} would both be '
                f'{prefix} (BIDS labels keep letters and digits only): rename one subject'
            )
    return registered


def _check_out(out: Path, plan: Plan) -> None:
    """Refuse an OUT that holds another run's plan (another source, labels or split)."""
    plan_path = out / 'plan.json'
    if plan_path.is_file():
        old = _read_scans(plan_path)
        if old.get('scans') != plan.to_dict()['scans']:
            raise PrepareError(
                f'{out} holds another plan (other scans, labels, visits or split options): '
                f'prepare into a new folder, or repeat the options of the first run'
            )


def prepare(
    src,
    out,
    labels: Labels,
    discovery: Discovery,
    recipe: Recipe | None = None,
    options: PrepareOptions | None = None,
    workers: int = 1,
    shard: tuple[int, int] = (1, 1),
    on_subject: Callable[[str, list[ScanRecord], int, int], None] | None = None,
    on_plan: Callable[[Plan, list[str], list[str]], None] | None = None,
) -> PrepareResult:
    """Prepare this shard's subjects of ``discovery`` into ``out`` (see the module docstring).

    With ``workers`` > 1 the subjects go to ``spawn``ed processes: a script calling this needs the
    usual ``if __name__ == '__main__':`` guard.

    ``on_plan(plan, todo, done)`` is called once the plan is made; ``on_subject(subject,
    records, n_done, n_total)`` after each subject (the CLI's progress). An unsharded run ends with
    :func:`merge`."""
    recipe = recipe or Recipe()
    options = options or PrepareOptions()
    out, src = Path(out), Path(src)
    plan = build_plan(discovery, labels, options)
    meta = _prepare_json(recipe, options, labels, src)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(out, plan)
    registered = _registered_output(plan, options, src)
    write_json(out / 'plan.json', plan.to_dict())
    write_json(out / PREPARE_NOTE, meta)
    bids.write_dataset_description(
        out, bids.dataset_description(src, meta['recipe'], meta['recipe_digest'], meta['steps'])
    )
    # the source's note, beside the scans or one folder up (adni-synthetic OUT --volumes writes
    # OUT/ADNI/... and OUT/dataset.json; either folder may be given)
    source = next((n for n in map(describe, (src, src.parent)) if n.synthetic), describe(src))
    if source.synthetic:  # slices of synthetic heads are synthetic: training and cards say so
        write_data_note(out, DataNote(f'{source.note}, prepared by adni-prepare', synthetic=True))
    for split in ('train', 'test'):
        for name in options.classes:
            (out / split / name).mkdir(parents=True, exist_ok=True)
    (out / 'records').mkdir(exist_ok=True)
    by_subject = plan.by_subject()
    mine = shard_subjects(list(by_subject), shard)
    done = [
        s for s in mine if _is_done(out, s, by_subject[s], recipe.digest, registered is not None)
    ]
    todo = [s for s in mine if s not in set(done)]
    if on_plan:
        on_plan(plan, todo, done)
    records: list[ScanRecord] = []

    def finished(subject, subject_records):
        records.extend(subject_records)
        if on_subject:
            on_subject(subject, subject_records, len(done) + n_finished, len(mine))

    n_finished = 0
    recipe_dict = recipe.to_dict()
    try:
        if workers > 1 and len(todo) > 1:
            context = multiprocessing.get_context('spawn')  # ITK's threads do not survive fork
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
                futures = {
                    pool.submit(
                        _prepare_subject,
                        s,
                        by_subject[s],
                        str(out),
                        recipe_dict,
                        recipe.digest,
                        registered,
                    ): s
                    for s in todo
                }
                try:
                    for future in as_completed(futures):
                        n_finished += 1
                        finished(futures[future], future.result())
                except PrepareWriteError:
                    for future in futures:
                        future.cancel()
                    raise
        else:
            for subject in todo:
                subject_records = _prepare_subject(
                    subject, by_subject[subject], str(out), recipe_dict, recipe.digest, registered
                )
                n_finished += 1
                finished(subject, subject_records)
    except PrepareWriteError as e:
        kept = sum(_is_done(out, s, by_subject[s], recipe.digest) for s in mine)
        raise PrepareWriteError(
            f'{e}: stopped; {kept} of {len(mine)} subject(s) are prepared and kept in {out} '
            f'(each with its record in {out}/records), the one(s) in flight left nothing '
            f'behind; free space (or make {out} writable) and run the same command again: '
            f'the prepared subjects are skipped'
        ) from None
    problems = list(plan.problems) + [
        Problem(r.problem_kind, f'{r.scan_id}: {r.error}') for r in records if r.status != 'ok'
    ]
    result = PrepareResult(plan, records, done, problems)
    if shard == (1, 1):
        result.merged = merge(out)
    return result


# ---------------------------------------------------------------------------------------- merge


def _read_records(out: Path) -> list[ScanRecord]:
    records = []
    for path in sorted((out / 'records').glob('*.json')):
        for scan in _read_scans(path).get('scans', []):
            records.append(ScanRecord(**scan))
    return records


def _outliers(records: list[ScanRecord], options: dict) -> set[str]:
    ok = {r.scan_id: r.similarity for r in records if r.status == 'ok' and r.similarity is not None}
    return flag_outliers(
        ok, options['min_similarity'], options['outlier_z'], options['outlier_min_gap']
    )


def _place(out: Path, rel: str, flagged: bool) -> None:
    """Move a slice between the layout and ``flagged/`` to match the decision."""
    here, there = (
        (out / rel, out / 'flagged' / rel) if flagged else (out / 'flagged' / rel, out / rel)
    )
    if here.is_file():
        there.parent.mkdir(parents=True, exist_ok=True)
        os.replace(here, there)


def _manifest_text(records: list[ScanRecord], flagged: set[str], keep: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(MANIFEST_COLUMNS)
    for r in sorted(records, key=lambda r: r.scan_id):
        is_flagged = r.scan_id in flagged
        included = r.status == 'ok' and (keep or not is_flagged)
        writer.writerow(
            [
                r.scan_id,
                r.subject,
                r.visit,
                r.image_id,
                r.date or '',
                r.source,
                r.group,
                r.label,
                r.split,
                r.status,
                '' if r.similarity is None else f'{r.similarity:.4f}',
                is_flagged,
                included,
                len(r.files),
                ' '.join(r.steps),
                ' | '.join(r.warnings),
                r.error,
            ]
        )
    return buffer.getvalue()


def merge(
    out, keep_flagged: bool | None = None, min_similarity: float | None = None
) -> MergeResult:
    """Assemble ``out`` from its records (after all shards, or at the end of an unsharded run):
    flag registration outliers over the whole run, move their slices to ``flagged/`` (back, with
    ``--keep-flagged``; ``keep_flagged`` and ``min_similarity`` override the run's choices and
    are recorded), write manifest.csv and qc/overview.png. Idempotent.

    A problem is added when flagging empties a split/class the plan filled, or flags most of
    the prepared scans: training would refuse the layout, or learn from what is left."""
    out = Path(out)
    if not (out / 'prepare.json').is_file() or not (out / 'plan.json').is_file():
        raise PrepareError(
            f'{out} holds no prepare.json / plan.json: give the OUT folder of an adni-prepare run'
        )
    meta = read_json(out / 'prepare.json')
    options = meta['options']
    changed = False
    if keep_flagged is not None and keep_flagged != options['keep_flagged']:
        options['keep_flagged'], changed = keep_flagged, True
    if min_similarity is not None and min_similarity != options['min_similarity']:
        options['min_similarity'], changed = float(min_similarity), True
    if changed:
        write_json(out / 'prepare.json', meta)
    plan_scans = _read_scans(out / 'plan.json')['scans']
    records = _read_records(out)
    planned = {(s['scan_id'], s['source']) for s in plan_scans}
    stale = [r for r in records if (r.scan_id, r.source) not in planned]
    records = [r for r in records if (r.scan_id, r.source) in planned]
    digests = {read_json(p).get('recipe_digest') for p in (out / 'records').glob('*.json')}
    problems = []
    if digests - {meta['recipe_digest']}:
        problems.append(
            Problem(
                'recipe',
                f'some records in {out}/records were made with another '
                f'recipe: re-run every shard with the same options',
            )
        )
    done_subjects = {r.subject for r in records}
    missing = sorted({s['subject'] for s in plan_scans} - done_subjects)
    if missing:
        problems.append(
            Problem(
                'missing',
                f'{len(missing)} planned subject(s) are not prepared yet: '
                f'{", ".join(missing[:10])}{" ..." if len(missing) > 10 else ""}: run the '
                f'shards that hold them (or re-run without --shard), then --merge again',
            )
        )
    measures = {read_json(p).get('similarity_measure') for p in (out / 'records').glob('*.json')}
    if measures - {MEASURE}:
        problems.append(
            Problem(
                'measure',
                f'some records in {out}/records hold a registration similarity of an older '
                f'measure, which the floor does not apply to: run the same adni-prepare command '
                f'again (it redoes those subjects), then --merge',
            )
        )
    if stale:
        problems.append(
            Problem(
                'stale',
                f'{len(stale)} record(s) belong to no planned scan '
                f'(an older plan): they are left out of the manifest',
            )
        )
    for r in records:
        if r.status != 'ok':
            problems.append(Problem(r.problem_kind or 'error', f'{r.scan_id}: {r.error}'))
    flagged = _outliers(records, options)
    keep = bool(options['keep_flagged'])
    for r in records:
        for rel in r.files:
            _place(out, rel, r.scan_id in flagged and not keep)
    write_text(out / 'manifest.csv', _manifest_text(records, flagged, keep))
    write_overview(out, records, flagged, options)
    counts = Counter()
    for r in records:
        if r.status == 'ok' and (keep or r.scan_id not in flagged):
            counts[f'{r.split}/{r.label}'] += 1
    if not missing:
        problems += _emptied(out, plan_scans, records, flagged, keep, options, counts)
    return MergeResult(records, sorted(flagged), missing, problems, dict(sorted(counts.items())))


def _emptied(out, plan_scans, records, flagged, keep, options, counts) -> list[Problem]:
    """One problem when the flags (or failures) leave a split/class of the plan without scans,
    or flag most prepared scans; it says what happened and which options to change."""
    planned = Counter(f'{s["split"]}/{s["label"]}' for s in plan_scans)
    empty = [group for group in sorted(planned) if not counts.get(group)]
    ok = [r for r in records if r.status == 'ok']
    moved = [r for r in ok if r.scan_id in flagged and not keep]
    most = len(moved) * 2 > len(ok) > 0
    if not empty and not most:
        return []
    failed = Counter(f'{r.split}/{r.label}' for r in records if r.status != 'ok')
    lost = Counter(f'{r.split}/{r.label}' for r in moved)
    what = []
    if most:
        what.append(f'registration QC flagged {len(moved)} of {len(ok)} prepared scans')
    if empty:
        why = ', '.join(
            f'{g}: {lost[g]} flagged, {failed[g]} failed of {planned[g]}' for g in empty
        )
        what.append(f'{" and ".join(empty)} ha{"ve" if len(empty) > 1 else "s"} no scans ({why})')
    options_text = ''
    if moved:
        values = sorted(r.similarity for r in moved)
        floor = options['min_similarity']
        options_text = (
            f'; flagged similarity {values[0]:.3f}..{values[-1]:.3f} (floor {floor:g}): look at '
            f'{out}/qc/overview.png and {out}/qc/<scan>.png; where the red outline sits on the '
            f'brain the registration is good: lower the floor (adni-prepare --merge {out} '
            f'--min-similarity X) or keep them (adni-prepare --merge {out} --keep-flagged); '
            f'where it does not, fix or leave out those scans'
        )
    elif any(failed[g] for g in empty):
        options_text = '; fix the failed scans (listed above) or give more scans of that class'
    else:
        options_text = '; give scans of that class, or a larger --test-fraction'
    return [
        Problem(
            'emptied',
            '; '.join(what) + ': training refuses an empty class folder' + options_text,
        )
    ]
