"""model.onnx beside an export (adni_timm.export.onnx) and the torch-free runner
(adni_timm.export.onnx_runtime): the same P(AD) as the torch export. SYNTHETIC slices."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from adni_timm import data
from adni_timm.data import splits
from adni_timm.inference import load_model
from adni_timm.run import locate
from adni_timm.export.input_check import fit_input_check
from adni_timm.export.onnx import ONNX_NAME, OnnxExportError, export_onnx
from adni_timm.export.onnx_runtime import OnnxClassifier, OnnxRuntimeError, Preprocessing

from helpers import ROOT

RUNTIME_FILE = ROOT / 'adni_timm' / 'export' / 'onnx_runtime.py'


@pytest.fixture(scope='module')
def onnx_export(tiny_run, tmp_path_factory):
    """A copy of the tiny run's export with its model.onnx."""
    export_dir = tmp_path_factory.mktemp('onnx') / 'export'
    shutil.copytree(locate(tiny_run[0])[0], export_dir)
    export_onnx(export_dir)
    return export_dir


def torch_published(export_dir):
    """The export as a user loads it with timm (3 channels) and its timm eval transform."""
    model = timm.create_model(f'local-dir:{export_dir}', pretrained=True).eval()
    return model, timm.data.create_transform(**timm.data.resolve_data_config(model=model))


@pytest.mark.slow
def test_onnx_p_ad_equals_the_torch_export(onnx_export, tiny_data):
    paths = [s.path for s in data.scan_split(tiny_data, 'test')]
    model, transform = torch_published(onnx_export)
    batch = torch.stack([transform(Image.open(p).convert('RGB')) for p in paths])
    with torch.inference_mode():
        trunk = model.forward_features(batch)
        want_probs = model.forward_head(trunk).softmax(-1).double().numpy()
        want_features = model.forward_head(trunk, pre_logits=True).numpy()

    clf = OnnxClassifier(onnx_export, threads=2)
    # the numpy preprocessing is timm's transform
    np.testing.assert_allclose(clf.preprocess(paths), batch.numpy(), rtol=1e-6, atol=1e-7)
    got = clf.predict_images(paths, batch_size=5)  # batches of 5 and 2: the batch is dynamic
    positive = clf.classes.index('AD')
    assert clf.classes == ['NC', 'AD'] and len(paths) == 24
    np.testing.assert_allclose(
        got.probs[:, positive], want_probs[:, positive], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(got.features, want_features, rtol=1e-4, atol=1e-5)
    one = clf.predict_proba(clf.preprocess(paths[:1]))
    np.testing.assert_allclose(one, want_probs[:1], rtol=1e-5, atol=1e-6)


def test_the_runner_computes_p_ad_without_importing_torch(onnx_export, tiny_data):
    paths = [s.path for s in data.scan_split(tiny_data, 'test')][:6]
    script = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location('onnx_runtime', {str(RUNTIME_FILE)!r})
runtime = sys.modules['onnx_runtime'] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)  # as a copied file would be imported: outside the package
clf = runtime.OnnxClassifier({str(onnx_export)!r}, threads=1)
probs = clf.predict_images({paths!r}).probs[:, clf.positive]
print(json.dumps({{'p_ad': probs.tolist(), 'torch': 'torch' in sys.modules,
                  'timm': 'timm' in sys.modules, 'threshold': clf.threshold}}))
"""
    proc = subprocess.run(
        [sys.executable, '-c', script],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, 'PYTHONPATH': ''},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['torch'] is False and out['timm'] is False
    model, transform = torch_published(onnx_export)
    with torch.inference_mode():
        batch = torch.stack([transform(Image.open(p).convert('RGB')) for p in paths])
        want = model(batch).softmax(-1)[:, 1].double().numpy()
    np.testing.assert_allclose(out['p_ad'], want, rtol=1e-5, atol=1e-6)
    assert out['threshold'] == pytest.approx(load_model(onnx_export).point.threshold)


@pytest.mark.parametrize('size', [(256, 240), (240, 256), (300, 200), (50, 40), (64, 64)])
def test_preprocessing_reproduces_timms_eval_transform_at_any_size(onnx_export, size):
    model, transform = torch_published(onnx_export)
    config = json.loads((onnx_export / 'config.json').read_text())
    pre = Preprocessing.from_config(config['pretrained_cfg'])
    pixels = np.random.default_rng(sum(size)).integers(0, 256, size[::-1], dtype=np.uint8)
    image = Image.fromarray(pixels)
    want = transform(image.convert('RGB')).numpy()
    np.testing.assert_allclose(pre(image), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('crop_pct', [0.875, 1.2])  # 1.2: the crop is larger than the resize
def test_preprocessing_reproduces_timm_for_other_crop_fractions(crop_pct):
    cfg = dict(
        input_size=(3, 64, 64), crop_pct=crop_pct, interpolation='bilinear', mean=(0.5,), std=(0.5,)
    )
    transform = timm.data.create_transform(**cfg)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (240, 256), dtype=np.uint8))
    got = Preprocessing.from_config(dict(cfg))(image)
    np.testing.assert_allclose(got, transform(image.convert('RGB')).numpy(), rtol=1e-6, atol=1e-7)


def test_the_input_check_runs_on_onnx_features(onnx_export, tiny_run, tiny_data):
    """The torch-free path of item 1: image statistics + the ONNX model's features."""
    model = load_model(tiny_run[0]).net
    _, eval_tf = data.build_transforms(model)
    train = data.scan_split(tiny_data, 'train')
    split = splits.split_scans(train, val_fraction=0.34, seed=0)
    fit, val = splits.select(train, split, 'train'), splits.select(train, split, 'val')
    check = fit_input_check(
        model,
        [data.read_image(s.path) for s in fit],
        [s.label for s in fit],
        [data.read_image(s.path) for s in val],
        transform=eval_tf,
    )
    probe = [data.read_image(s.path) for s in data.scan_split(tiny_data, 'test')[:4]]
    probe.append(Image.new('L', (256, 240), 0))
    clf = OnnxClassifier(onnx_export)
    onnx_verdicts = check.verdicts(check.image_stats(probe), clf.predict_images(probe).features)
    torch_verdicts = check.check(model, probe, eval_tf)
    assert [v.ok for v in onnx_verdicts] == [v.ok for v in torch_verdicts]
    assert not onnx_verdicts[-1].ok and 'blank' in onnx_verdicts[-1].reason
    np.testing.assert_allclose(
        [v.distance for v in onnx_verdicts],
        [v.distance for v in torch_verdicts],
        rtol=1e-4,
        atol=1e-4,
    )


def test_an_onnx_file_beside_other_weights_is_refused(onnx_export, tmp_path):
    stale = shutil.copytree(onnx_export, tmp_path / 'export')
    (stale / 'model.safetensors').write_bytes(b'retrained weights')
    with pytest.raises(OnnxRuntimeError, match='exported from other weights'):
        OnnxClassifier(stale)


def test_a_folder_without_model_onnx_is_refused_with_the_fix(tiny_run, tmp_path):
    export_dir = shutil.copytree(locate(tiny_run[0])[0], tmp_path / 'export')
    with pytest.raises(OnnxRuntimeError, match=f'needs {ONNX_NAME} and config.json.*--onnx'):
        OnnxClassifier(export_dir)


def test_export_refuses_the_one_channel_training_model(tiny_run, tmp_path):
    model = load_model(tiny_run[0]).net  # 1 channel, as training and evaluation run it
    with pytest.raises(OnnxExportError, match='1-channel input.*pass the export folder'):
        export_onnx(model, tmp_path / ONNX_NAME)
    assert not (tmp_path / ONNX_NAME).exists()


@pytest.mark.slow
def test_evaluate_and_publish_with_onnx(tiny_run, tiny_data, tmp_path, capsys):
    """evaluate.py --backend onnxruntime gives the torch evaluation's P(AD) (in its own folder);
    push_to_hub.py --onnx publishes model.onnx with the input check of the same weights."""
    import csv
    import json

    from helpers import cli_in_process

    run = shutil.copytree(tiny_run[0], tmp_path / 'run')
    code, _, err = cli_in_process(capsys, 'evaluate', '--model', run, '--data-dir', tiny_data)
    assert code == 0, err
    code, out, err = cli_in_process(
        capsys, 'evaluate', '--model', run, '--data-dir', tiny_data, '--backend', 'onnxruntime'
    )
    assert code == 0, err
    assert f'wrote {run / "eval-onnxruntime"}' in out  # never over RUN/eval
    torch_rows, onnx_rows = (
        {r['path']: float(r['p_AD']) for r in csv.DictReader((run / d / 'predictions.csv').open())}
        for d in ('eval', 'eval-onnxruntime')
    )
    assert torch_rows.keys() == onnx_rows.keys()
    np.testing.assert_allclose(
        [onnx_rows[k] for k in torch_rows], list(torch_rows.values()), rtol=1e-5, atol=1e-7
    )
    assert (
        json.loads((run / 'eval-onnxruntime/metrics.json').read_text())['backend'] == 'onnxruntime'
    )
    code, out, err = cli_in_process(
        capsys, 'push', '--run', run, '--repo-id', 'lab/x', '--dry-run', '--onnx',
        '--output-dir', tmp_path / 'hub',
    )  # fmt: skip
    assert code == 0, err
    files = {p.name for p in (tmp_path / 'hub').iterdir()}
    assert {'model.onnx', 'input_check.json', 'input_check.safetensors'} <= files
    # the published model.onnx, torch-free, at the stored temperature: evaluate.py's P(AD)
    from adni_timm.metrics import apply_temperature

    published = OnnxClassifier(tmp_path / 'hub')
    paths = list(torch_rows)[:4]
    calibrated = apply_temperature(published.predict_images(paths).probs, published.temperature)
    np.testing.assert_allclose(
        calibrated[:, 1], [torch_rows[k] for k in paths], rtol=1e-5, atol=1e-7
    )


@pytest.mark.slow
def test_the_demo_scores_with_onnxruntime_as_with_torch(tiny_run, tiny_data, tmp_path, monkeypatch):
    """adni-app --backend onnxruntime: the page's P(AD) and decisions are the torch page's; the
    model.onnx is written at start-up, and a missing onnxruntime is one line naming the extra."""
    import importlib.util

    from adni_timm.app import demo as app
    from adni_timm.inference import InferenceError

    from adni_timm.export.onnx_runtime import OnnxClassifier

    run = shutil.copytree(tiny_run[0], tmp_path / 'run')
    assert not (run / 'best' / ONNX_NAME).exists()
    on_torch = app.load(run)
    sessions = []
    real_init = OnnxClassifier.__init__

    def counted_init(self, *args, **kwargs):
        sessions.append(args[0] if args else kwargs)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(OnnxClassifier, '__init__', counted_init)
    on_onnx = app.load(run, backend='onnxruntime')
    assert (run / 'best' / ONNX_NAME).is_file()  # checked before the page could start
    paths = [s.path for s in data.scan_split(tiny_data, 'test')][:6]
    want, got = app.predict_files(on_torch, paths), app.predict_files(on_onnx, paths)
    again = app.predict_files(on_onnx, paths)
    assert [r['p_AD'] for r in again['slices']] == [r['p_AD'] for r in got['slices']]
    assert len(sessions) == 1  # the session checked at start-up serves every request
    assert len(got['slices']) == len(want['slices']) == 6 and not got['rejected']
    np.testing.assert_allclose(
        [r['p_AD'] for r in got['slices']],
        [r['p_AD'] for r in want['slices']],
        rtol=1e-5,
        atol=1e-7,
    )
    assert [r['predicted'] for r in got['scans']] == [r['predicted'] for r in want['scans']]
    assert 'computed with onnxruntime' in app.describe_model(on_onnx)
    assert 'onnxruntime' not in app.describe_model(on_torch)
    with pytest.raises(ValueError, match='choose torch or onnxruntime'):
        app.load(run, backend='tensorrt')

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        'find_spec',
        lambda n, *a: None if n == 'onnxruntime' else real_find_spec(n, *a),
    )
    with pytest.raises(InferenceError, match=r"pip install 'adni-timm\[onnx\]'"):
        app.load(run, backend='onnxruntime')
