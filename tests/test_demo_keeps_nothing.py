"""Issue 29: the web demo keeps nothing and shows no server path; hostile uploads are refused
with bounded memory. The demo is served for real (``app.py`` in a subprocess, GRADIO_TEMP_DIR a
tmp folder) and driven by gradio_client, through Gradio's real upload route."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from hostile_files import MAX_EXTRA_RSS, export_with_input_check, write_nifti_bomb

LOCAL_ENV = {
    'NO_PROXY': '127.0.0.1,localhost',
    'no_proxy': '127.0.0.1,localhost',
    'GRADIO_ANALYTICS_ENABLED': 'False',
    'HF_HUB_OFFLINE': '1',
}
MIB = 1024**2


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob('*') if p.is_file())


def _peak_rss(pid: int) -> int:
    """VmHWM (the peak resident set) of a running process, in bytes."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
    raise AssertionError('no VmHWM')


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """(client, process, GRADIO_TEMP_DIR, export, data dir, uploads dir) of a served demo."""
    pytest.importorskip(
        'gradio', reason="the demo extra is not installed: pip install -e '.[demo]'"
    )
    from gradio_client import Client

    root = tmp_path_factory.mktemp('demo')
    export, data_dir = export_with_input_check(root, recipe=True)
    temp = root / 'gradio-temp'
    temp.mkdir()
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    log = (root / 'app.log').open('w')
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / 'app.py'), '--model', str(export), '--port', str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **LOCAL_ENV, 'GRADIO_TEMP_DIR': str(temp)},
    )
    url = f'http://127.0.0.1:{port}/'
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 900  # a hang guard
    while True:
        if proc.poll() is not None:
            pytest.fail(f'app.py exited ({proc.returncode}):\n{(root / "app.log").read_text()}')
        try:
            with opener.open(url, timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail('app.py did not serve')
            time.sleep(0.3)
    client = Client(url, verbose=False, analytics_enabled=False, download_files=str(root / 'dl'))
    uploads = root / 'uploads'  # what a visitor uploads from
    uploads.mkdir()
    try:
        yield client, proc, temp, export, data_dir, uploads
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _assert_nothing_kept(temp: Path, names):
    left = [p for p in _files(temp) if p.name in set(names)]
    assert left == [], f'uploads kept after the response: {left}'
    empty = [p for p in _files(temp) if p.stat().st_size == 0]
    assert empty == [], f'empty temporary files left: {empty}'


@pytest.mark.slow
def test_uploads_are_removed_after_each_response_and_no_path_is_shown(served):
    from gradio_client import handle_file

    client, proc, temp, export, data_dir, uploads = served
    slices = sorted((data_dir / 'test' / 'AD').glob('*.jpeg'))[:4]
    names = [p.name for p in slices]
    for _ in range(2):
        summary, gallery, result = client.predict(
            [handle_file(str(p)) for p in slices], api_name='/analyse'
        )
        assert result['slices'], summary
        _assert_nothing_kept(temp, names)
    # a scan that cannot be read: the message names the file, never where the server keeps it
    broken = uploads / 'broken.nii.gz'
    broken.write_bytes(b'\x1f\x8b' + b'\0' * 64)
    summary, gallery, result = client.predict([handle_file(str(broken))], api_name='/analyse')
    (refused,) = result['rejected']
    assert 'broken.nii.gz' in refused['problem']
    for text in (summary, str(result)):
        assert str(temp) not in text and '/tmp' not in text, text
    _assert_nothing_kept(temp, names + ['broken.nii.gz'])


@pytest.mark.slow
def test_the_upload_limit_is_set(served):
    from adni_timm.app.demo import MAX_UPLOAD_MB

    client = served[0]
    assert client.config['max_file_size'] == MAX_UPLOAD_MB * 1024**2


@pytest.mark.slow
def test_a_huge_scan_is_refused_with_bounded_server_memory(served):
    from gradio_client import handle_file

    client, proc, temp, export, data_dir, uploads = served
    before = _peak_rss(proc.pid)  # start-up and the requests above
    bomb = write_nifti_bomb(uploads / 'head.nii.gz')
    summary, gallery, result = client.predict([handle_file(str(bomb))], api_name='/analyse')
    (refused,) = result['rejected']
    assert '800x800x400' in refused['problem'] and 'voxels' in refused['problem']
    assert str(temp) not in summary
    extra = _peak_rss(proc.pid) - before
    assert extra <= MAX_EXTRA_RSS, f'the server grew by {extra / MIB:.0f} MiB'
    _assert_nothing_kept(temp, ['head.nii.gz'])


@pytest.mark.slow
def test_nothing_is_left_after_the_server_stops(served):
    from gradio_client import handle_file

    client, proc, temp, export, data_dir, uploads = served
    slice_path = sorted((data_dir / 'test' / 'NC').glob('*.jpeg'))[0]
    client.predict([handle_file(str(slice_path))], api_name='/analyse')  # a montage to serve
    proc.send_signal(signal.SIGTERM)  # what a service manager (or a Space) sends
    proc.wait(timeout=900)  # a hang guard
    assert list(temp.rglob('*')) == []


def test_analyse_never_removes_a_callers_own_files(tmp_path):
    """``analyse`` in Python on the user's files: only the served page's uploads are removed."""
    from adni_timm.app import uploads

    own = tmp_path / 'mine_70.png'
    Image.fromarray(np.full((64, 64), 9, np.uint8)).save(own)
    assert uploads.remove_uploads([own]) == 0 and own.is_file()
