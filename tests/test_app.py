"""The web demo (app.py, adni_timm.app.demo), served for real: driven by gradio_client and a
browser.

SYNTHETIC: a random-weight adni_convnext_atto export (64 px) and generated slices, so the numbers
mean nothing; what is tested is that the page shows evaluate.py's P(AD) and refuses bad files
with a readable reason.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, run_script

THRESHOLD, TEMPERATURE = 0.4, 1.3
# docs/app.png was taken by this test:
# ADNI_TIMM_SCREENSHOT=docs/app.png pytest -m browser tests/test_app.py
SCREENSHOT = (
    Path(os.environ.get('ADNI_TIMM_SCREENSHOT', ''))
    if os.environ.get('ADNI_TIMM_SCREENSHOT')
    else None
)
WINDOW = (1280, 900)
CHROMIUM_FLAGS = (
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
    f'--window-size={WINDOW[0]},{WINDOW[1]}',
)
NO_GRADIO = "the demo extra is not installed: pip install -e '.[demo]'"
# loopback must never go through a proxy from the environment
LOCAL_ENV = {
    'NO_PROXY': '127.0.0.1,localhost',
    'no_proxy': '127.0.0.1,localhost',
    'GRADIO_ANALYTICS_ENABLED': 'False',
    'HF_HUB_OFFLINE': '1',
}


@pytest.fixture(scope='module')
def demo_files(tmp_path_factory):
    """(export folder, one synthetic slice, bad files {name: path}) in a fresh folder."""
    import timm

    import adni_timm  # noqa: F401  (registers adni_convnext_*)
    from adni_timm.export.format import export_model
    from adni_timm.synthetic.slices import generate

    root = tmp_path_factory.mktemp('app')
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 64, 64))
    )
    export = export_model(
        model,
        root / 'best',
        extra={
            'threshold': THRESHOLD,
            'temperature': TEMPERATURE,
            'classes': ['NC', 'AD'],
            'data': 'synthetic (test)',
            'epoch': 1,
        },
    )
    generate(root / 'data', train_subjects=3, test_subjects=1, slices=3, seed=0)
    slice_path = sorted((root / 'data' / 'test' / 'AD').glob('*.jpeg'))[0]
    # the input check training fits, here on the synthetic train slices (thresholded on test's)
    from adni_timm.data import build_transforms, scan_split
    from adni_timm.inference import load_model
    from adni_timm.export.input_check import fit_input_check

    net = load_model(export).net
    train, test = scan_split(root / 'data', 'train'), scan_split(root / 'data', 'test')
    fit_input_check(
        net,
        [s.path for s in train],
        [s.label for s in train],
        [s.path for s in test],
        transform=build_transforms(net)[1],
    ).save(export)
    bad = root / 'bad'
    bad.mkdir()
    Image.fromarray(np.zeros((240, 256), np.uint8)).save(bad / 'blank.png')
    (bad / 'notes.jpeg').write_text('not an image, only a renamed text file\n')
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[..., 0], photo[:60, :, 2], photo[:, 80:, 1] = 200, 255, 128
    Image.fromarray(photo).save(bad / 'holiday.jpg')
    return (
        export,
        slice_path,
        {'text': bad / 'notes.jpeg', 'photo': bad / 'holiday.jpg', 'blank': bad / 'blank.png'},
    )


@pytest.fixture(scope='module')
def app_process(demo_files, tmp_path_factory):
    """(process, URL, log path) of ``python app.py --model EXPORT`` on a free loopback port, started
    (not yet serving): as a user runs it, in a subprocess. Stopped at the end of the module."""
    pytest.importorskip('gradio', reason=NO_GRADIO)
    export, _, _ = demo_files
    port = _free_port()
    log_path = tmp_path_factory.mktemp('app-log') / 'app.log'
    with log_path.open('w') as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / 'app.py'),
                '--model',
                str(export),
                '--host',
                '127.0.0.1',
                '--port',
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **LOCAL_ENV},
        )
    try:
        yield proc, f'http://127.0.0.1:{port}/', log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert 'Traceback' not in log_path.read_text(), log_path.read_text()


@pytest.fixture(scope='module')
def expected_p_ad(demo_files, app_process):
    """evaluate.py's P(AD) of the slice: inference.predict_slices, then the stored temperature.

    Computed while the app starts up in its own process (hence ``app_process``)."""
    from adni_timm import data, metrics
    from adni_timm.inference import load_model, predict_slices

    export, slice_path, _ = demo_files
    loaded = load_model(export)
    scan, index = data.parse_file_name(slice_path)
    probs = predict_slices(loaded.net, [data.Slice(str(slice_path), scan, -1, index)], batch_size=1)
    assert loaded.point.temperature == pytest.approx(TEMPERATURE)
    calibrated = metrics.apply_temperature(probs, loaded.point.temperature)
    return float(calibrated[0, data.positive_index(loaded.classes)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.status


@pytest.fixture(scope='module')
def served_app(app_process, expected_p_ad):
    """URL of the app once it serves its page."""
    proc, url, log_path = app_process
    deadline = time.monotonic() + 900  # a hang guard, never a speed check
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f'app.py exited ({proc.returncode}) before serving:\n{log_path.read_text()}'
            )
        try:
            if _get(url) == 200:
                return url
        except OSError:  # not listening yet
            pass
        if time.monotonic() > deadline:
            pytest.fail(f'app.py did not serve {url} within 120 s:\n{log_path.read_text()}')
        time.sleep(0.3)


@pytest.mark.slow
def test_core_package_does_not_import_gradio():
    code = (
        'import sys, adni_timm, adni_timm.evaluation, adni_timm.train.loop, adni_timm.app.demo; '
        'print(sorted(m for m in sys.modules '
        'if m.split(".")[0] in ("gradio", "gradio_client")))'
    )
    proc = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]', f'gradio imported by the core package: {proc.stdout}'


def test_check_image_refuses_bad_files_with_a_reason(demo_files, tmp_path):
    from adni_timm.app.demo import check_image

    _, slice_path, bad = demo_files
    assert check_image(slice_path) is None
    gray_as_rgb = tmp_path / 'gray_1.jpg'  # a grayscale slice saved as RGB JPEG: chroma noise only
    Image.open(slice_path).convert('RGB').save(gray_as_rgb, quality=75)
    assert check_image(gray_as_rgb) is None
    assert 'not an image' in check_image(bad['text'])
    assert 'colour image' in check_image(bad['photo']) and 'grayscale' in check_image(bad['photo'])
    Image.new('L', (20, 20)).save(tmp_path / 'tiny.png')
    Image.new('L', (3000, 40)).save(tmp_path / 'huge.png')
    assert '20 x 20 px' in check_image(tmp_path / 'tiny.png')
    assert '3000 x 40 px' in check_image(tmp_path / 'huge.png')


@pytest.mark.slow
def test_app_cli_reports_a_missing_model_in_one_line(tmp_path):
    pytest.importorskip('gradio', reason=NO_GRADIO)
    # no --model: app.py reads ADNI_MODEL, as a Space does
    env = {**LOCAL_ENV, 'ADNI_MODEL': str(tmp_path / 'nowhere')}
    proc = run_script('app.py', env=env, check=False)
    assert proc.returncode == 2  # a refused input (adni_timm.cli: exit codes)
    assert proc.stderr.startswith('app.py: error:') and 'does not exist' in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_served_app_gives_evaluate_probability_and_refuses_bad_input(
    served_app, demo_files, expected_p_ad
):
    from gradio_client import Client, handle_file

    _, slice_path, bad = demo_files
    client = Client(served_app, verbose=False, analytics_enabled=False)
    summary, gallery, result = client.predict([handle_file(str(slice_path))], api_name='/analyse')
    (row,) = result['slices']
    assert row['file'] == slice_path.name
    assert row['p_AD'] == pytest.approx(expected_p_ad, abs=1e-6)
    (scan,) = result['scans']
    assert scan['p_AD'] == pytest.approx(expected_p_ad, abs=1e-6)
    assert scan['predicted'] == ('AD' if expected_p_ad >= THRESHOLD else 'NC')
    assert result['threshold'] == pytest.approx(THRESHOLD)
    assert f'P(AD) = {expected_p_ad:.3f}' in summary
    assert len(gallery) == 1  # one Grad-CAM montage for the one scan

    summary, gallery, result = client.predict(
        [handle_file(str(bad['text'])), handle_file(str(bad['photo']))], api_name='/analyse'
    )
    assert result['slices'] == [] and gallery == []
    assert len(result['rejected']) == 2
    assert 'notes.jpeg is not an image' in summary
    assert 'holiday.jpg is a colour image' in summary and 'grayscale MRI slices' in summary
    assert 'Traceback' not in summary and 'Error' not in summary

    # an all-black slice (it used to get P(AD) = 1.000 -> AD): refused by the input check, no score
    summary, gallery, result = client.predict(
        [handle_file(str(bad['blank'])), handle_file(str(slice_path))], api_name='/analyse'
    )
    assert [r['file'] for r in result['slices']] == [slice_path.name]
    (refused,) = result['rejected']
    assert refused['file'] == 'blank.png'
    assert 'blank.png does not look like a training slice: it is blank' in summary
    assert result['scans'][0]['p_AD'] == pytest.approx(expected_p_ad, abs=1e-6)


def test_the_examples_are_synthetic_slices_shipped_with_the_package():
    from adni_timm import data
    from adni_timm.app import demo as app
    from adni_timm.synthetic.slices import SYNTHETIC_COMMENT

    examples = app.example_uploads()
    assert len(examples) == 3  # an AD and an NC scan, and a blank image the model refuses
    ad, nc, blank = ([Path(p) for p in group[0]] for group in examples)
    assert len(ad) == len(nc) == 3 and [p.name for p in blank] == ['blank.png']
    for path in ad + nc:
        assert path.is_file() and app.EXAMPLES_DIR in path.parents  # package data, not the tests
        scan, _ = data.parse_file_name(path)
        assert scan in ('synthetic-AD', 'synthetic-NC')
        with Image.open(path) as im:
            assert im.size == (256, 240) and im.mode == 'L'
            assert im.info.get('Comment') == SYNTHETIC_COMMENT.decode()
        assert app.check_image(path) is None


def test_a_published_model_shows_the_test_metrics_of_its_card(demo_files, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from adni_timm.app import demo as app
    from adni_timm.publish.card import eval_results_from_metrics
    from helpers import populate_hub_cache
    from huggingface_hub import ModelCard, ModelCardData

    export, _, _ = demo_files
    metrics = {
        'split': 'test',
        'scan': {'accuracy': 0.8125, 'auc': 0.875, 'sensitivity': 0.75, 'specificity': 0.875},
        'slice': {'accuracy': 0.7},
    }
    data = ModelCardData(eval_results=eval_results_from_metrics(metrics, True), model_name='x')
    folder = shutil.copytree(export, tmp_path / 'repo')
    ModelCard(f'---\n{data.to_yaml()}\n---\n\n# x\n').save(folder / 'README.md')
    populate_hub_cache(tmp_path / 'cache', 'lab/demo', folder)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'cache'))
    served = app.load('hf-hub:lab/demo')
    assert served.test_metrics['scan']['auc'] == pytest.approx(0.875)
    text = app.describe_model(served)
    assert 'not known here' not in text and 'AUC 0.875' in text and 'model card' in text


@pytest.fixture(scope='module')
def browser_tools():
    """(chromium, chromedriver) paths, or skip saying what is missing (before the app starts)."""
    pytest.importorskip('selenium', reason='selenium is not installed: pip install -e .[test]')
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    chromedriver = shutil.which('chromedriver')
    if not chromium or not chromedriver:
        pytest.skip(
            "the browser test needs Debian's chromium and chromedriver: "
            'apt-get install chromium chromium-driver'
        )
    return chromium, chromedriver


@pytest.mark.slow
@pytest.mark.browser
def test_page_in_a_real_browser_shows_p_ad_and_grad_cam(
    browser_tools, served_app, demo_files, expected_p_ad, tmp_path
):
    chromium, chromedriver = browser_tools
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, slice_path, bad = demo_files
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + (f'--user-data-dir={tmp_path / "profile"}',):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)  # never downloads one
    try:
        # the viewport itself 1280 x 900 (a window size would include the browser's frame)
        driver.execute_cdp_cmd(
            'Emulation.setDeviceMetricsOverride',
            {'width': WINDOW[0], 'height': WINDOW[1], 'deviceScaleFactor': 1, 'mobile': False},
        )
        driver.get(served_app)
        wait = WebDriverWait(driver, 90)
        upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#slices input[type=file]'))[
            0
        ]
        disclaimer = driver.find_element(By.ID, 'disclaimer').text
        assert 'Research use only, not a medical device' in disclaimer
        assert 'SYNTHETIC' in driver.find_element(By.ID, 'model-info').text
        # a blank image and a real (synthetic) slice at once; the upload event runs the analysis
        upload.send_keys(f'{bad["blank"]}\n{slice_path}')
        wait.until(lambda d: 'P(AD) =' in d.find_element(By.ID, 'result').text)
        shown = driver.find_element(By.ID, 'result').text
        assert 'blank.png does not look like a training slice' in shown
        p_shown = float(re.search(r'P\(AD\) = ([0-9.]+)', shown)[1])
        assert p_shown == pytest.approx(expected_p_ad, abs=5e-4)  # shown with 3 decimals
        wait.until(
            lambda d: d.execute_script(
                "const img = document.querySelector('#cam img');"
                'return img !== null && img.complete && img.naturalWidth > 0;'
            )
        )
        try:  # the first montage opens large (preview: it and its thumbnail); older gradio may not
            WebDriverWait(driver, 10).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, '#cam img')) >= 2
            )
        except TimeoutException:
            pass
        time.sleep(0.5)  # let the gallery finish its layout before the picture is taken
        shot_path = SCREENSHOT or tmp_path / 'app.png'  # the tree stays clean unless asked
        shot_path.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot_path))
    finally:
        driver.quit()
    with Image.open(shot_path) as shot:
        assert shot.size == WINDOW
