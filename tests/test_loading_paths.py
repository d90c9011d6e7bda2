"""A published model gives the same P(AD) through
every Hugging Face path, offline, without adni_timm.

timm (``local-dir:`` and ``hf-hub:``) on a slice as RGB, timm with ``in_chans=1`` on a grayscale
slice, transformers' image-classification pipeline (file path, PIL grayscale, PIL RGB) and
AutoImageProcessor + AutoModelForImageClassification, compared with evaluate.py's own predictions.
An export in the previous (1-channel) format still evaluates, resumes and publishes.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from timm.models import save_for_hf

from adni_timm import data, evaluation
from adni_timm.export import format as export
from adni_timm.publish import hub
from adni_timm.inference import load_model, predict_slices
from helpers import ROOT, populate_hub_cache, run_train

pytest.importorskip('transformers')
# every Hugging Face loading path, in fresh processes: end to end, a minute of CPU
pytestmark = pytest.mark.slow
REPO_ID = 'adni-timm-tests/tiny'


@pytest.fixture(scope='module')
def paths(tiny_run, tiny_data, tmp_path_factory):
    run, _ = tiny_run
    root = tmp_path_factory.mktemp('paths')
    cache = root / 'hub'
    populate_hub_cache(cache, REPO_ID, run / 'best')
    images = [s.path for s in data.scan_split(tiny_data, 'test')[::5]]  # both classes, a few slices
    env = {
        **os.environ,
        'HF_HUB_OFFLINE': '1',
        'TRANSFORMERS_OFFLINE': '1',
        'HF_HUB_CACHE': str(cache),
        'PYTHONPATH': '',
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'tests/loading_paths_probe.py'),
            str(run / 'best'),
            REPO_ID,
            str(root / 'out.json'),
            *images,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, images, json.loads((root / 'out.json').read_text())


def test_every_path_gives_evaluates_p_ad_and_the_labels_nc_ad(paths):
    run, images, out = paths
    model = load_model(run).net
    slices = [data.Slice(path=p, scan='x', label=-1, slice_index=None) for p in images]
    ours = predict_slices(model, slices)[:, 1]  # evaluate.py's inference, before calibration
    p_paths = {name: v for name, v in out.items() if 'labels' not in name and 'logits' not in name}
    # 2 sources x (timm RGB, in_chans=1) + 2 x 3 pipeline + 2 AutoModel
    assert len(p_paths) == 4 + 2 * 3 + 2
    for name, p in p_paths.items():
        # a 3-channel luma stem vs the summed 1-channel one: equal up to fp32 rounding, which is
        # relative (a logit of ~4 moves by ~1e-5 on another CPU); P(AD) within 1e-4 of itself
        np.testing.assert_allclose(p, ours, rtol=1e-4, atol=1e-6, err_msg=name)
    for name, labels in out.items():
        if 'labels' in name:
            assert sorted(labels) == ['AD', 'NC'], name
    assert out[f'AutoModel labels {REPO_ID}'] == ['NC', 'AD']  # index 1 = AD, never alphabetical


def test_the_cards_pipeline_recipe_gives_evaluates_calibrated_p_ad(paths):
    run, images, out = paths
    loaded = load_model(run)
    temperature = loaded.point.temperature
    slices = [data.Slice(path=p, scan='x', label=-1, slice_index=None) for p in images]
    calibrated = loaded.predict(slices)[:, 1]
    for logits in (out[f'pipeline logits {run / "best"}'], out[f'pipeline logits {REPO_ID}']):
        scaled = torch.tensor([[row['NC'], row['AD']] for row in logits]) / temperature
        np.testing.assert_allclose(
            scaled.softmax(-1)[:, 1].numpy(), calibrated, rtol=1e-4, atol=1e-6
        )


def _old_format_export(model, out_dir, extra):
    """What adni-timm 0.1 wrote: 1-channel weights
    and a 1-channel config (made here, by the test).
    """
    save_for_hf(
        model,
        out_dir,
        model_config={'pretrained_cfg': {'architecture': 'convnext_atto'}, 'adni_timm': extra},
        safe_serialization=True,
    )
    return out_dir


def test_an_old_one_channel_export_still_evaluates_resumes_and_publishes(
    tiny_run, tiny_data, tmp_path
):
    run = shutil.copytree(tiny_run[0], tmp_path / 'run')
    loaded = load_model(run)  # the trained 1-channel network
    model = loaded.net
    old_extra = {
        k: v
        for k, v in loaded.settings.to_dict().items()
        if k not in ('format', 'trained_in_chans')
    }
    shutil.rmtree(run / 'best')
    _old_format_export(model, run / 'best', old_extra)
    config = json.loads((run / 'best/config.json').read_text())
    assert config['pretrained_cfg']['input_size'][0] == 1 and 'format' not in config['adni_timm']
    slices = data.scan_split(tiny_data, 'test')
    old_model = load_model(run).net
    np.testing.assert_allclose(
        predict_slices(old_model, slices), predict_slices(model, slices), rtol=1e-5, atol=1e-7
    )
    assert evaluation.evaluate(str(run), tiny_data, n_boot=0)['scan']['n'] == 6
    # the checkpoint never depended on the format
    run_train('--output-dir', run, '--resume', '--epochs', '3')
    assert json.loads((run / 'metrics.jsonl').read_text().splitlines()[-1])['epoch'] == 3
    files = hub.build_export_folder(run, tmp_path / 'hub')  # published in the current format
    published = json.loads((tmp_path / 'hub/config.json').read_text())
    assert published['adni_timm']['format'] == export.FORMAT_VERSION and published[
        'label_names'
    ] == ['NC', 'AD']
    assert {f.name for f in files} >= {'model.safetensors', 'config.json', 'README.md'}
    again, best_now = load_model(tmp_path / 'hub').net, load_model(run).net
    np.testing.assert_allclose(
        predict_slices(again, slices), predict_slices(best_now, slices), rtol=1e-4, atol=1e-6
    )
