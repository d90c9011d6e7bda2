"""A content audit of a slice folder: duplicate slices, and scans that are probably one person.

For users without a subject map (``--subjects``): the images themselves say which scans look like
the same head. Two findings, each a pair of scans with a score:

``duplicate``     the same slice twice: identical files, or slices whose perceptual hashes are
                  within ``HASH_RADIUS`` bits and whose pixels correlate at
                  ``DUPLICATE_CORRELATION`` or more (a re-encoded, re-scaled or re-named copy).
                  The hash is a DCT pHash made for a set of look-alikes: 128 low-frequency DCT
                  coefficients of a 32 x 32 thumbnail, each compared with its median over the set
                  (the classic pHash compares with the image's own median, and every brain slice
                  then hashes alike). Neighbouring slices of one scan resemble each other by
                  nature: inside a scan only identical slices count. Score: the pixel correlation
                  (1 = identical).
``same_subject``  two scans whose slices at the same slice numbers match after alignment. Each
                  slice is brought to a canonical pose (centre and principal axis of the head),
                  shrunk to ``GRID`` x ``GRID`` and high-passed; per slice number the population's
                  mean and its ``PCS`` strongest shared directions (head size, atrophy, residual
                  pose: what many people have in common) are taken out, so what remains is the
                  individual detail (folding pattern, outline). Similarity: the mean correlation
                  of that detail over the slice numbers two scans share (``MIN_SHARED`` at
                  least). Score: twice the similarity less each scan's mean similarity to its
                  ``NEIGHBOURS`` nearest scans (local scaling): a scan that resembles everyone a
                  little (a "hub") does not pair with everyone.

The same-subject threshold comes from the data's own scores: nearly all scan pairs are of different
people, so their median and robust spread (1.4826 x MAD) describe chance; the threshold sits
``z`` robust SDs above the median, with ``z`` such that 0.05 pairs of a normal bulk of that many
pairs would pass. The report says the numbers. Pairs then join into subject groups (connected
components), the estimate ``train.py --subjects-from-audit`` splits by.

Cost: decoding and features are linear in slices; duplicates compare every slice pair's 128-bit
hashes (N^2 / 2 popcounts, vectorised); same-subject scoring is one matrix product per slice number
(sum over slice numbers of scans_with_it^2 x GRID^2). Validated on synthetic repeat scans only
(docs/DATA.md gives precision, recall and timings); never on real MRI.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    'AUDIT_COLUMNS',
    'AuditPair',
    'AuditReport',
    'SubjectThreshold',
    'audit_slices',
    'write_audit_csv',
    'read_audit_csv',
    'subject_groups',
    'audit_subjects',
]

_logger = logging.getLogger(__name__)

AUDIT_COLUMNS = ('kind', 'scan_a', 'split_a', 'scan_b', 'split_b', 'score')
HASH_RADIUS = 8  # candidate near-duplicates: hash Hamming distance at most this (of 128 bits)
DUPLICATE_CORRELATION = 0.98  # full-resolution pixel correlation that confirms a near-duplicate
GRID = 48  # canonical slice side for the same-subject features
PCS = 5  # shared directions removed per slice number (never more than an eighth of its scans)
MIN_SHARED = 3  # slice numbers two scans must share to be compared
NEIGHBOURS = 20  # a scan's nearest scans whose mean similarity is its local level
FALSE_PAIRS = 0.05  # expected chance pairs over the threshold, were the bulk of scores normal
_MAX_CANDIDATES = 200_000  # near-duplicate candidates confirmed at full resolution, at most
_MIN_PAIRS = 20  # scored scan pairs needed to estimate a threshold from their distribution
_MAX_CACHED = 4096  # decoded slices kept while confirming candidates (8-bit: ~250 MB for AD_NC's)


@dataclass(frozen=True)
class AuditPair:
    """One finding: two scans (the same scan twice for a duplicate inside a scan) and a score."""

    kind: str  # 'duplicate' | 'same_subject'
    scan_a: str
    split_a: str
    scan_b: str
    split_b: str
    score: float
    detail: str = ''  # duplicates: the files; not in the CSV

    def row(self) -> dict[str, str]:
        return {
            'kind': self.kind,
            'scan_a': self.scan_a,
            'split_a': self.split_a,
            'scan_b': self.scan_b,
            'split_b': self.split_b,
            'score': f'{self.score:.4f}',
        }


@dataclass(frozen=True)
class SubjectThreshold:
    """Where a same-subject score starts: ``median + z * spread`` of ``n_pairs`` pair scores."""

    value: float
    median: float
    spread: float  # 1.4826 x median absolute deviation
    z: float
    n_pairs: int

    def sentence(self) -> str:
        return (
            f'score threshold {self.value:.2f} = median {self.median:.2f} + {self.z:.2f} x robust '
            f'SD {self.spread:.2f} of the {self.n_pairs:,} scan-pair scores ({FALSE_PAIRS:g} '
            f'chance pairs expected above it if their bulk were normal)'
        )


@dataclass(frozen=True)
class AuditReport:
    """What ``audit_slices`` found, with the numbers it used."""

    pairs: tuple[AuditPair, ...]
    scans: Mapping[str, str]  # scan -> split
    n_slices: int
    threshold: SubjectThreshold | None  # None: too few comparable scan pairs
    n_compared: int  # scan pairs sharing MIN_SHARED slice numbers or more
    n_not_compared: int
    seconds: float

    def of_kind(self, kind: str) -> list[AuditPair]:
        return [p for p in self.pairs if p.kind == kind]

    def test_scans_sharing(self, held_out: str = 'test', train: str = 'train') -> list[str]:
        """Held-out scans that probably share a subject with a training scan (either finding)."""
        found = set()
        for p in self.pairs:
            for a, sa, sb in ((p.scan_a, p.split_a, p.split_b), (p.scan_b, p.split_b, p.split_a)):
                if sa == held_out and sb == train:
                    found.add(a)
        return sorted(found)

    def lines(self, limit: int = 10) -> list[str]:
        per_split = defaultdict(int)
        for split in self.scans.values():
            per_split[split] += 1
        splits = ', '.join(f'{s} {n}' for s, n in per_split.items())
        dups, same = self.of_kind('duplicate'), self.of_kind('same_subject')
        exact = sum(1 for p in dups if p.score >= 1 - 1e-9)
        lines = [
            f'audit: {self.n_slices:,} slices of {len(self.scans):,} scans ({splits}) in '
            f'{self.seconds:.1f} s',
            f'duplicate slices: {len(dups)} scan pair(s), {exact} with identical pixels (image '
            f'hash within {HASH_RADIUS} of 128 bits, pixel correlation >= '
            f'{DUPLICATE_CORRELATION})',
        ]
        lines += [
            f'  {p.split_a}/{p.scan_a} ~ {p.split_b}/{p.scan_b}: {p.detail}' for p in dups[:limit]
        ]
        if self.threshold is None:
            lines.append(
                f'same-subject pairs: not estimated ({self.n_compared} scan pairs share '
                f'{MIN_SHARED} or more slice numbers; {_MIN_PAIRS} needed for a threshold)'
            )
        else:
            lines.append(
                f'same-subject pairs: {len(same)} of {self.n_compared:,} compared scan pairs; '
                f'{self.threshold.sentence()}'
            )
        if self.n_not_compared:
            lines.append(
                f'  {self.n_not_compared:,} scan pairs share fewer than {MIN_SHARED} slice numbers '
                f'and were not compared'
            )
        lines += [
            f'  {p.split_a}/{p.scan_a} ~ {p.split_b}/{p.scan_b}: {p.score:.2f}'
            for p in sorted(same, key=lambda p: -p.score)[:limit]
        ]
        groups = subject_groups(self.pairs, self.scans)
        lines.append(
            f'probable subjects: {len(set(groups.values())):,} for {len(self.scans):,} scans '
            f'(scans joined through their pairs)'
        )
        if 'test' in per_split and 'train' in per_split:
            shared = self.test_scans_sharing()
            lines.append(
                f'{len(shared)} test scans probably share a subject with a training scan '
                f'(of {per_split["test"]})'
            )
        lines.append(
            'the audit is an estimate from image content, measured on synthetic repeat scans only '
            '(docs/DATA.md), not validated on real MRI'
        )
        return lines


# ------------------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _Features:
    digest: bytes  # of the file's bytes
    dct: np.ndarray  # float32 [128]: low-frequency DCT of a 32 x 32 thumbnail, unit length
    canon: np.ndarray | None  # float16 [GRID * GRID], None for a blank slice


def _open_small(path: str) -> Image.Image:
    """The image as 8-bit grayscale; JPEGs decoded at half size (DCT scaling: 4x less work)."""
    with Image.open(path) as im:
        if im.format == 'JPEG':
            im.draft('L', (im.width // 2, im.height // 2))
        if im.mode in ('L', 'RGB', 'RGBA', 'LA', 'P', '1'):
            return im.convert('L')
    from .images import read_image  # 16-bit and float files: scaled as training reads them

    return read_image(path)


def dct_signature(im: Image.Image) -> np.ndarray:
    """128 low-frequency DCT coefficients (the constant one left out) of a 32 x 32 thumbnail, to
    unit length (a brighter copy has the same signature)."""
    from scipy.fft import dctn

    small = np.asarray(im.resize((32, 32), Image.Resampling.BOX), np.float32)
    low = dctn(small, norm='ortho')[:12, :12].ravel()[1:129]
    norm = np.linalg.norm(low)
    return low / norm if norm > 0 else low


def set_hashes(signatures: np.ndarray) -> np.ndarray:
    """128-bit hashes (uint64 [n, 2]): each coefficient above its median over the set."""
    bits = signatures > np.median(signatures, axis=0)
    return np.packbits(bits, axis=1).view('>u8').astype(np.uint64)


def canonical(im: Image.Image) -> np.ndarray | None:
    """The slice in a canonical pose (head centre, principal axis upright), ``GRID`` square,
    high-passed and standardised; None when nothing stands out from the background."""
    from scipy.ndimage import gaussian_filter

    a = np.asarray(im, np.float32)
    k = int(a.size * 0.99)
    top = np.partition(a.ravel(), k)[k]
    ys, xs = np.nonzero(a > 0.25 * top)
    if top <= 0 or len(xs) < 50:
        return None
    cx, cy = xs.mean(), ys.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy]))
    major = np.linalg.eigh(cov)[1][:, 1]
    angle = math.atan2(major[0], major[1])  # of the long axis from upright, folded to +-90 deg
    angle = (angle + math.pi / 2) % math.pi - math.pi / 2
    out = 2 * GRID  # sampled at twice the grid, then box-averaged (no aliasing)
    step = 2 * 0.47 * min(a.shape) / out  # the frame spans 94% of the image's short side
    c, s = math.cos(angle) * step, math.sin(angle) * step
    centre = (out - 1) / 2
    coeffs = (c, s, cx - c * centre - s * centre, -s, c, cy + s * centre - c * centre)
    frame = im.transform((out, out), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    x = np.asarray(frame.reduce(2), np.float32)
    x = x - gaussian_filter(x, 2.0)  # keep folds and edges; drop slow intensity changes
    x -= x.mean()
    norm = np.linalg.norm(x)
    return (x.ravel() / norm).astype(np.float16) if norm > 0 else None


def _features(path: str) -> _Features:
    digest = hashlib.blake2b(Path(path).read_bytes(), digest_size=16).digest()
    im = _open_small(path)
    return _Features(digest, dct_signature(im), canonical(im))


def _map(fn, items: Sequence, num_workers: int) -> list:
    if num_workers > 1:  # PIL decodes and resamples without the GIL
        with ThreadPoolExecutor(num_workers) as pool:
            return list(pool.map(fn, items, chunksize=64))
    return [fn(i) for i in items]


# ------------------------------------------------------------------------------------ duplicates


def _full(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert('L'))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 0.0
    a, b = a.astype(np.float32), b.astype(np.float32)
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float((a * b).sum() / den)


def _near_hash_pairs(hashes: np.ndarray, radius: int, chunk: int = 512):
    """(i, j) with i < j whose hashes (uint64 [n, words]) differ in at most ``radius`` bits."""
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        dist = np.zeros((len(block), len(hashes)), np.uint8)
        for w in range(hashes.shape[1]):
            dist += np.bitwise_count(block[:, w, None] ^ hashes[None, :, w])
        i, j = np.nonzero(dist <= radius)
        i = i + start
        keep = j > i
        yield from zip(i[keep].tolist(), j[keep].tolist())


def _duplicates(slices, scan_of, feats) -> list[AuditPair]:
    by_digest = defaultdict(list)
    for n, f in enumerate(feats):
        by_digest[f.digest].append(n)
    found = {}  # (i, j) -> correlation
    for group in by_digest.values():
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                found[(group[a], group[b])] = 1.0
    if len(feats) < 2:
        return []
    hashes = set_hashes(np.stack([f.dct for f in feats]))
    candidates = []
    for i, j in _near_hash_pairs(hashes, HASH_RADIUS):
        if (i, j) in found or scan_of[i] == scan_of[j]:  # neighbours in a scan look alike
            continue
        candidates.append((i, j))
        if len(candidates) >= _MAX_CANDIDATES:
            _logger.warning(
                'audit: more than %d near-duplicate candidates (blank slices?); the rest are not '
                'checked',
                _MAX_CANDIDATES,
            )
            break
    cache: dict[int, np.ndarray] = {}

    def full(n: int) -> np.ndarray:
        if n not in cache:
            if len(cache) >= _MAX_CACHED:  # bounded memory; candidates come sorted by i
                cache.clear()
            cache[n] = _full(slices[n].path)
        return cache[n]

    for i, j in candidates:
        r = _correlation(full(i), full(j))
        if r >= DUPLICATE_CORRELATION:
            found[(i, j)] = r
    per_scans = defaultdict(list)
    for (i, j), r in found.items():
        a, b = sorted((i, j), key=lambda n: (scan_of[n], slices[n].path))
        per_scans[(scan_of[a], scan_of[b])].append((r, a, b))
    pairs = []
    for (sa, sb), hits in sorted(per_scans.items()):
        # a copy of a slice also resembles the original's neighbours: pair each slice once, best
        # match first
        hits.sort(key=lambda h: -h[0])
        used, matched = set(), []
        for r, a, b in hits:
            if a not in used and b not in used:
                used |= {a, b}
                matched.append((r, a, b))
        files = '; '.join(
            f'{Path(slices[a].path).name} = {Path(slices[b].path).name} ({r:.3f})'
            for r, a, b in matched[:3]
        )
        more = f' and {len(matched) - 3} more' if len(matched) > 3 else ''
        pairs.append(
            AuditPair('duplicate', sa[1], sa[0], sb[1], sb[0], matched[0][0], files + more)
        )
    return pairs


# ---------------------------------------------------------------------------------- same subject


def _individual_correlations(x: np.ndarray) -> np.ndarray:
    """Correlations between rows once their mean and their ``PCS`` strongest shared directions
    are taken out. Works on the Gram matrix (rows x rows): taking out the top principal
    directions of ``x`` takes the top eigenpairs out of ``x @ x.T``."""
    from scipy.linalg import eigh
    from threadpoolctl import threadpool_limits

    x = x - x.mean(0)
    gram = (x @ x.T).astype(np.float64)
    k = min(PCS, (len(x) - 1) // 8)
    if k > 0:
        # a small eigenproblem: one thread (threaded LAPACK ran 50x slower on a busy machine)
        with threadpool_limits(1):
            values, vectors = eigh(gram, subset_by_index=[len(x) - k, len(x) - 1], driver='evr')
        gram -= (vectors * values) @ vectors.T
    norm = np.sqrt(np.clip(np.diag(gram), 1e-12, None))
    return (gram / norm[:, None] / norm[None, :]).astype(np.float32)


def _subject_scores(slices, scan_index, feats, n_scans: int):
    """(sum of correlations, count of shared slice numbers) for every scan pair."""
    by_number = defaultdict(dict)  # slice number -> scan index -> slice index
    for n, s in enumerate(slices):
        if s.slice_index is not None and feats[n].canon is not None:
            by_number[s.slice_index].setdefault(scan_index[n], n)
    total = np.zeros((n_scans, n_scans), np.float32)
    count = np.zeros((n_scans, n_scans), np.int32)
    for members in by_number.values():
        if len(members) < 2:
            continue
        scans = np.fromiter(members.keys(), np.intp)
        x = np.stack([feats[n].canon for n in members.values()]).astype(np.float32)
        cell = np.ix_(scans, scans)
        total[cell] += _individual_correlations(x)
        count[cell] += 1
    return total, count


def _robust(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x median absolute deviation (the SD of a normal bulk)."""
    median = float(np.median(values))
    return median, float(1.4826 * np.median(np.abs(values - median)))


def _local_scaling(similarity: np.ndarray, compared: np.ndarray) -> np.ndarray:
    """``2 sim(a, b) - r(a) - r(b)``, ``r`` a scan's mean similarity to its ``NEIGHBOURS`` most
    similar scans (cross-domain similarity local scaling, Conneau et al. 2018): a scan that
    resembles everyone a little (a "hub") no longer pairs with everyone. Measured on the synthetic
    sets it removed every false pair that plain similarities let through (docs/DATA.md)."""
    rows = np.where(compared, similarity, -np.inf)
    np.fill_diagonal(rows, -np.inf)
    k = max(1, min(NEIGHBOURS, len(rows) - 1))
    top = -np.partition(-rows, k - 1, axis=1)[:, :k]
    finite = np.isfinite(top)
    counts = finite.sum(1)
    local = np.where(counts > 0, np.where(finite, top, 0).sum(1) / np.maximum(counts, 1), 0.0)
    return 2 * similarity - local[:, None] - local[None, :]


def _threshold(scores: np.ndarray) -> SubjectThreshold | None:
    if len(scores) < _MIN_PAIRS:
        return None
    from scipy.stats import norm

    median, spread = _robust(scores)
    z = float(norm.isf(FALSE_PAIRS / len(scores)))
    return SubjectThreshold(median + z * spread, median, spread, z, len(scores))


# ------------------------------------------------------------------------------------------ audit


def audit_slices(slices_by_split: Mapping[str, Sequence], num_workers: int = 0) -> AuditReport:
    """Duplicate slices and probable same-subject scan pairs among all splits' slices.

    ``slices_by_split``: split name -> ``Slice`` objects (``data.scan_split``). A scan is a
    file-name prefix within its split (the same prefix in two splits is two scans here; the
    layout check reports it separately).
    """
    start = time.perf_counter()
    slices, scan_of = [], []
    for split, items in slices_by_split.items():
        for s in items:
            slices.append(s)
            scan_of.append((split, s.scan))
    keys = sorted(set(scan_of))
    index = {k: n for n, k in enumerate(keys)}
    scan_index = [index[k] for k in scan_of]
    feats = _map(_features, [s.path for s in slices], num_workers)
    pairs = _duplicates(slices, scan_of, feats)
    total, count = _subject_scores(slices, scan_index, feats, len(keys))
    compared = count >= MIN_SHARED
    standardised = _local_scaling(total / np.maximum(count, 1), compared)
    ia, ib = np.triu_indices(len(keys), 1)
    keep = compared[ia, ib]
    ia, ib = ia[keep], ib[keep]
    scores = standardised[ia, ib]
    threshold = _threshold(scores)
    if threshold is not None:
        for n in np.nonzero(scores > threshold.value)[0]:
            (sa, a), (sb, b) = keys[ia[n]], keys[ib[n]]
            pairs.append(AuditPair('same_subject', a, sa, b, sb, float(scores[n])))
    return AuditReport(
        pairs=tuple(pairs),
        scans={scan: split for split, scan in keys},
        n_slices=len(slices),
        threshold=threshold,
        n_compared=len(scores),
        n_not_compared=len(keys) * (len(keys) - 1) // 2 - len(scores),
        seconds=time.perf_counter() - start,
    )


def write_audit_csv(report: AuditReport, path: str | os.PathLike) -> Path:
    """The findings as CSV: ``kind,scan_a,split_a,scan_b,split_b,score``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('w', encoding='utf-8', newline='') as f:
        writer = csv.DictWriter(f, AUDIT_COLUMNS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(p.row() for p in report.pairs)
    return path


def read_audit_csv(path: str | os.PathLike) -> list[AuditPair]:
    """The pairs of an audit CSV; ValueError naming the file when its columns are not the
    audit's."""
    with Path(path).open(encoding='utf-8', newline='') as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != AUDIT_COLUMNS:
            raise ValueError(
                f'{path} is not an audit CSV: expected the columns {",".join(AUDIT_COLUMNS)} '
                f'(adni-check-data DATA_DIR --audit --audit-csv {path} writes one)'
            )
        return [
            AuditPair(
                r['kind'], r['scan_a'], r['split_a'], r['scan_b'], r['split_b'], float(r['score'])
            )
            for r in reader
        ]


def subject_groups(pairs: Sequence[AuditPair], scans) -> dict[str, str]:
    """``{scan: group}``: scans joined through their pairs (connected components), an estimate of
    who is the same person. A group is named after its first scan (sorted), so a scan with no pair
    is its own group. ``scans``: every scan to map (a scan id may sit in two splits here: one id,
    one group)."""
    parent = {s: s for s in scans}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for p in pairs:
        if p.scan_a in parent and p.scan_b in parent:
            ra, rb = root(p.scan_a), root(p.scan_b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {s: root(s) for s in sorted(parent)}


def audit_subjects(path: str | os.PathLike) -> dict[str, str]:
    """``{scan: estimated subject}`` from an audit CSV, for splitting: the scans its pairs (both
    kinds) join, each group named ``audit:<its first scan>``; a scan in no pair is absent (its own
    subject). ValueError naming the file when it is not an audit CSV."""
    pairs = read_audit_csv(path)
    scans = {s for p in pairs for s in (p.scan_a, p.scan_b)}
    return {scan: f'audit:{group}' for scan, group in subject_groups(pairs, scans).items()}
