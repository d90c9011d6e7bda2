"""Small files that declare huge images, written without ever holding the pixels in memory, and a
peak-memory runner for the commands that must refuse them (issue 29, "bounded resources")."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT

GIB = 1024**3
# what a refused hostile file may cost above the same command refusing a harmless bad file
MAX_EXTRA_RSS = GIB // 2


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))


def write_png_bomb(path: Path, width: int = 13_000, height: int = 13_000, bits: int = 16) -> Path:
    """A grayscale PNG of ``width`` x ``height`` black pixels (13,000^2 at 16 bits: ~330 KB on
    disk, 338 MB decoded), compressed row by row."""
    row = b'\0' * (1 + width * bits // 8)  # filter byte + the row
    comp = zlib.compressobj(6)
    rows = row * 64  # 64 rows per call: the loop, not zlib, is what takes time
    idat = b''.join(comp.compress(rows) for _ in range(height // 64))
    idat += comp.compress(row * (height % 64)) + comp.flush()
    header = struct.pack('>IIBBBBB', width, height, bits, 0, 0, 0, 0)
    path.write_bytes(
        b'\x89PNG\r\n\x1a\n'
        + _png_chunk(b'IHDR', header)
        + _png_chunk(b'IDAT', idat)
        + _png_chunk(b'IEND', b'')
    )
    return path


def write_nifti_bomb(path: Path, shape=(800, 800, 400)) -> Path:
    """A gzipped uint8 NIfTI of ``shape`` zeros at 1 mm (800x800x400: 256 M voxels, about 1 MB on
    disk), written in chunks."""
    import nibabel as nib
    import numpy as np

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header['vox_offset'] = 352
    total = int(np.prod(shape))
    chunk = b'\0' * (16 * 1024 * 1024)
    with gzip.open(path, 'wb', compresslevel=6) as f:
        f.write(header.binaryblock + b'\0' * 4)
        while total > 0:
            f.write(chunk[: min(total, len(chunk))])
            total -= len(chunk)
    return path


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes, the command's own process
    seconds: float


def run_measured(code: str, *args, env=None, timeout=900) -> Measured:
    """``python -c code args...`` with its own peak RSS (``wait4`` on the child: ru_maxrss of that
    process alone). ``timeout`` is a hang guard, not a speed check.

    Forked from the tests' script server when it can take the environment (``helpers.run_script``;
    ~5 s of CPU saved per run): then the footprint is the heap of the server's preloaded imports
    (torch, timm, Accelerate, adni_timm: ~0.5 GB, which a fork's ru_maxrss counts from the start)
    plus what the command itself touched; a fresh interpreter (``ADNI_TIMM_TEST_FORK=0``) counts
    only what it imported. Either way the tests compare two runs of one kind, a harmless bad file
    against a hostile one, so the difference is what the hostile file cost."""
    import tempfile

    from helpers import _server_for

    command = [sys.executable, '-c', code, *map(str, args)]
    environ = {**os.environ, **(env or {})}
    server = _server_for(environ)
    if server is None:
        return _run_fresh_measured(command, environ, timeout)
    with tempfile.TemporaryDirectory(prefix='adni-timm-measured-') as tmp:
        out, err = Path(tmp) / 'stdout', Path(tmp) / 'stderr'
        start = time.perf_counter()
        forked = server.start(command, environ, out, err)
        try:
            returncode = forked.wait(timeout)
        except subprocess.TimeoutExpired:
            forked.kill()
            raise
        seconds = time.perf_counter() - start
        return Measured(returncode, out.read_text(), err.read_text(), forked.maxrss, seconds)


def _run_fresh_measured(command, environ, timeout) -> Measured:
    import tempfile
    import threading

    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT, env=environ)
        guard = threading.Timer(timeout, proc.kill)
        guard.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            guard.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(proc.returncode, out.read(), err.read(), usage.ru_maxrss * 1024, seconds)


def cli(module: str) -> str:
    """Code for ``run_measured`` that runs ``adni_timm.cli.<module>.main(argv)`` and exits with its
    code, as the console script does."""
    return f'import sys; from adni_timm.cli.{module} import main; sys.exit(main(sys.argv[1:]))'


def export_with_input_check(root: Path, recipe: bool = False) -> tuple[Path, Path]:
    """(export, synthetic data dir): an adni_convnext_atto export at 64 px (classes NC, AD) whose
    input check is fitted on synthetic slices (4 per scan), as tests/test_app.py builds it; with
    ``recipe`` the default adni-prepare recipe is recorded, so a NIfTI is read."""
    import timm

    import adni_timm  # noqa: F401  (registers adni_convnext_*)
    from adni_timm.data import build_transforms, scan_split
    from adni_timm.export.format import export_model
    from adni_timm.inference import load_model
    from adni_timm.export.input_check import fit_input_check
    from adni_timm.synthetic.slices import generate

    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 64, 64))
    )
    extra = {'classes': ['NC', 'AD'], 'data': 'synthetic (test)', 'epoch': 1}
    if recipe:
        from adni_timm.prepare.preprocess import Recipe

        extra['preprocessing'] = {'recipe': Recipe().to_dict()}
    export = export_model(model, root / 'best', extra=extra)
    generate(root / 'data', 3, 2, slices=4, seed=0)  # scans per class: train, test
    net = load_model(export).net
    train, test = scan_split(root / 'data', 'train'), scan_split(root / 'data', 'test')
    fit_input_check(
        net,
        [s.path for s in train],
        [s.label for s in train],
        [s.path for s in test],
        transform=build_transforms(net)[1],
    ).save(export)
    return export, root / 'data'
