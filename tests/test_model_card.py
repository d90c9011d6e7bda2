"""The model card and the input description, built from hand-made plain data (no training).

Each card test states a fact the card must derive from the data (classes, the data source, the
errors, the cross-validation design) and checks the words that follow from it, and the words that
must not appear.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.errors import HFValidationError
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import validate_repo_id
from torch.utils.flop_counter import FlopCounterMode

from adni_timm.publish import complexity
from adni_timm.export import format as export
from adni_timm.publish import hub
from adni_timm.data.note import DataNote
from adni_timm.export.input_description import (
    PERCENTILES,
    InputDescription,
    describe_input,
    intensity_stats,
    network_data_format,
    recipe_lines,
    recipe_steps,
)
from adni_timm.publish.card import build_model_card
from adni_timm.run import EvalCheck

REPO = 'my-lab/adni-test'
IMG = 64


def _config(classes=('NC', 'AD'), **extra):
    """A config.json as export_model writes it, by hand."""
    classes = list(classes)
    return {
        'architecture': 'convnext_atto',
        'num_classes': len(classes),
        'label_names': classes,
        'pretrained_cfg': {
            'input_size': [3, IMG, IMG],
            'mean': [0.5],
            'std': [0.5],
            'crop_pct': 1.0,
            'interpolation': 'bilinear',
            'license': 'apache-2.0',
            'label_names': classes,
        },
        'adni_timm': {
            'threshold': 0.4,
            'threshold_source': 'validation',
            'temperature': 1.2,
            'classes': classes,
            'weights': 'live',
            'epoch': 5,
            'best_metric': 'val_scan_auc',
            'best_value': 0.9,
            'data': 'ADNI AD_NC',
            **extra,
        },
    }


def _level(n, sens, spec, cm):
    return {
        'n': n,
        'accuracy': 0.9,
        'balanced_accuracy': (sens + spec) / 2,
        'sensitivity': sens,
        'specificity': spec,
        'auc': 0.95,
        'auc_ci': [0.9, 1.0],
        'confusion_matrix': cm,
    }


def _metrics(sens=0.8, spec=0.9, n=40):
    cm = [[18, 2], [4, 16]]
    return {
        'slice': _level(n * 20, sens, spec, cm),
        'scan': _level(n, sens, spec, cm),
        'threshold': 0.4,
        'threshold_source': 'validation',
        'split': 'test',
    }


def _card(config=None, **kwargs):
    kwargs.setdefault('metrics', _metrics())
    return build_model_card(
        repo_id=REPO, config=config or _config(), num_params=3_375_162, **kwargs
    )


def _section(text, heading):
    return text.split(f'## {heading}\n')[1].split('\n## ')[0]


# ------------------------------------------------------------------------------ limitations


def test_a_perfect_model_has_no_more_frequent_error():
    text = _card(metrics=_metrics(sens=1.0, spec=1.0)).text
    limits = _section(text, 'Limitations and bias')
    assert 'missed no AD scan and flagged no NC scan as AD (40 scans)' in limits
    assert 'more frequent error' not in limits and 'false alarms on NC' not in limits


def test_equal_error_rates_are_said_to_be_equal():
    limits = _section(_card(metrics=_metrics(sens=0.9, spec=0.9)).text, 'Limitations and bias')
    assert 'misses 10.0% of AD scans and flags 10.0% of NC scans' in limits
    assert 'the two errors are equally frequent' in limits and 'more frequent' not in limits


@pytest.mark.parametrize(
    'sens, spec, more',
    [(0.7, 0.95, 'missed AD (false negatives)'), (0.95, 0.7, 'false alarms on NC')],
)
def test_the_more_frequent_error_is_the_larger_rate(sens, spec, more):
    limits = _section(_card(metrics=_metrics(sens, spec)).text, 'Limitations and bias')
    assert f'the more frequent error is {more}' in limits


# ------------------------------------------------------------------------ data-derived words


def test_a_synthetic_run_says_nothing_about_adni_participants_or_diagnoses():
    card = _card(_config(data='synthetic (adni_timm.synthetic, demo difficulty)', synthetic=True))
    text = card.text
    assert 'No real MRI and no ADNI data was used' in text
    assert 'ADNI participants' not in text and "ADNI's diagnostic groups" not in text
    assert 'No population at all' in text and "Labels are the generator's classes" in text
    assert 'Data Use Agreement' not in text and 'ADNI acknowledgement' not in text
    assert 'adni' not in card.data.tags and 'synthetic-data' in card.data.tags


def test_adni_data_keeps_adni_population_labels_and_acknowledgement():
    text = _card().text
    assert 'ADNI participants are mostly older' in text
    assert "Labels are ADNI's diagnostic groups" in text and '## ADNI acknowledgement' in text


def test_scans_of_another_dataset_prepared_by_adni_prepare_name_that_dataset():
    recipe = {'recipe': {'z_range_mm': [-30, 27], 'slices': 20, 'size': [192, 192]}}
    text = _card(_config(data='OASIS-3 T1 scans', preprocessing=recipe)).text
    assert (
        'OASIS-3 T1 scans: T1-weighted 3D scans cut into 2D axial slices by `adni-prepare`' in text
    )
    assert 'ADNI participants' not in text and "ADNI's diagnostic groups" not in text
    assert 'ADNI acknowledgement' not in text and 'ADNI Data Use Agreement' not in text
    assert 'Trained on OASIS-3 T1 scans only' in text
    assert 'Labels are the diagnostic groups OASIS-3 T1 scans gives' in text
    assert "confirming that the data's licence or use agreement allows" in text


def test_adni_scans_prepared_by_adni_prepare_keep_the_adni_bullets():
    recipe = {'labels_format': 'adni-collection', 'recipe': {'slices': 20}}
    text = _card(_config(data='ADNI T1 MPRAGE', preprocessing=recipe)).text
    assert 'ADNI participants are mostly older' in text and 'preprocessed by adni-prepare' in text
    assert '## ADNI acknowledgement' in text


def test_front_matter_names_no_dataset_that_is_not_on_the_hub(tmp_path):
    for config in (_config(), _config(data='synthetic', synthetic=True)):
        card = _card(config)
        assert card.data.datasets is None  # 'adni', 'synthetic-adni-layout' are no Hub datasets
        for result in card.data.eval_results:
            with pytest.raises(HFValidationError):  # cannot be read as a dataset id either
                validate_repo_id(result.dataset_type)
        # huggingface_hub's offline parse: the saved file, and the text, give the same card data
        card.save(tmp_path / 'README.md')
        meta = metadata_load(tmp_path / 'README.md')
        assert 'datasets' not in meta
        name, results = model_index_to_eval_results(meta['model-index'])
        assert name == 'adni-test' and results == card.data.eval_results
        again = ModelCard(str(card))
        assert again.data.to_dict() == card.data.to_dict()


# ---------------------------------------------------------------------------------- classes


def test_three_classes_get_their_names_in_title_tables_and_scope():
    classes = ('NC', 'MCI', 'AD')
    card = _card(_config(classes))
    text = card.text
    title = text.split('## Model details')[0]
    assert (
        "normal control (NC), mild cognitive impairment (MCI) or Alzheimer's disease (AD)" in title
    )
    assert '**AD against the rest** (NC, MCI together)' in title
    assert '| pred not AD (NC, MCI) | pred AD |' in text and '| true not AD (NC, MCI) |' in text
    assert '| pred NC |' not in text
    scope = _section(text, 'Intended use')
    assert 'which it never saw' in scope and 'mild cognitive impairment' not in scope
    assert 'does not predict who will progress to AD' in scope
    assert 'Specificity (not-AD recall)' in text and '**AD vs NC only.**' not in text
    assert {r.task_name for r in card.data.eval_results} == {
        'AD vs not AD (NC, MCI) classification of 2D MRI slices'
    }


def test_two_classes_keep_nc_wording():
    text = _card().text
    assert '| pred NC | pred AD |' in text and 'Specificity (NC recall)' in text
    assert 'mild cognitive impairment, other dementias), which it never saw' in text


def test_the_card_gives_stock_timm_users_the_class_map():
    how = _section(_card().text, 'How to use')
    assert "class_to_idx={'AD': 0, 'NC': 1}" in how  # what timm.data.ImageDataset makes of folders
    assert "class_to_idx={'NC': 0, 'AD': 1}" in how
    assert "ImageDataset('AD_NC/test', class_map=class_map" in how
    assert "class_map = {name: i for i, name in enumerate(config['label_names'])}" in how


# ------------------------------------------------------------------------ cross-validation

FOLDS = {'k': 3, 'seed': 7, 'folds': [['1', '2'], ['3', '4'], ['5', '6']]}
REFIT_SPLIT = {'level': 'scan', 'seed': 7, 'train': ['1', '2', '3', '4', '5', '6'], 'val': []}


def _cv(select='inner'):
    entry = {'per_fold': [0.81, 0.72, 0.93], 'mean': 0.82, 'sd': 0.105, 'n': 3}
    cv = {
        'k': 3,
        'seed': 7,
        'folds': FOLDS['folds'],
        'select': select,
        'summary': {'k': 3, 'scan': {'auc': entry}, 'slice': {}},
        'out_of_fold': {'scan': {'auc': 0.8, 'auc_ci': [0.61, 0.95]}, 'slice': {}},
        'ensemble': {
            'threshold': 0.45,
            'threshold_rule': 'youden',
            'temperatures': [1.1, 1.3, 0.9],
            'calibration': "each fold model's own temperature, then the mean",
        },
        'refit': {
            'threshold': 0.38,
            'threshold_rule': 'youden',
            'temperature': 1.4,
            'calibration': 'one temperature fitted on the raw out-of-fold predictions',
        },
        'best_epochs': [3, 4, 5],
        'best_weights': ['ema', 'ema', 'live'],
    }
    if select is None:
        del cv['select'], cv['out_of_fold']
    return cv


def _cv_config():
    return _config(
        threshold=0.38,
        threshold_source='out-of-fold',
        best_metric=None,
        best_value=None,
        weights='ema',
        refit_epochs=4,
        folds=3,
    )


def test_a_cv_card_describes_folds_and_refit_and_checks_leakage_against_both():
    card = _card(
        _cv_config(),
        folds=FOLDS,
        refit_split=REFIT_SPLIT,
        cv=_cv(),
        eval_facts=EvalCheck(problems=[], disjoint=True),
    )
    data = _section(card.text, 'Training data')
    assert 'The 6 training scans were cut into 3 folds (seed 7' in data
    assert 'no top-level split' in data and 'inner validation split of its own training' in data
    assert 'refit: one model trained on all 6 training scans (`refit/split.json`)' in data
    assert 'shares no scan with any cross-validation fold (checked against `folds.json`' in data
    assert "refit's `refit/split.json`" in data
    assert 'Validation was carved' not in data
    cv = _section(card.text, 'Cross-validation')
    assert (
        '| Scan-level ROC AUC | 0.820 ± 0.105 | 0.810, 0.720, 0.930 | 0.800 [0.610, 0.950] |' in cv
    )
    assert "threshold chosen on the *other* folds' out-of-fold predictions" in cv
    assert '`select: inner`' in cv
    assert '**refit** (the published model): threshold 0.380 (youden), temperature 1.400' in cv
    assert 'member temperatures 1.100, 1.300, 0.900' in cv
    assert 'all training scans for 4 epochs' in card.text


def test_a_cv_card_says_when_nothing_was_selected_or_when_it_is_not_known():
    text = _section(_card(_cv_config(), folds=FOLDS, cv=_cv('last')).text, 'Cross-validation')
    assert '`select: last`' in text and 'selected nothing' in text
    text = _section(_card(_cv_config(), folds=FOLDS, cv=_cv(None)).text, 'Cross-validation')
    assert 'not recorded in this cv.json' in text and 'may be optimistic' in text


# ------------------------------------------------------------------------------ input data


def _slices():
    class S:
        def __init__(self, scan, index, suffix='.jpeg'):
            self.scan, self.slice_index, self.path = scan, index, f'{scan}_{index}{suffix}'

    return [S('a', i) for i in range(57, 77)] + [S('b', i) for i in range(60, 72)]


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(240, 256), dtype=np.uint8) for _ in range(n)]


def test_intensity_statistics_match_numpy_on_all_pixels():
    images = _images() + [np.zeros((10, 20), np.uint8)]
    stats = intensity_stats(images)
    pixels = np.concatenate([im.ravel() for im in images]).astype(np.float64)
    assert stats.n_pixels == pixels.size
    assert stats.mean == pytest.approx(pixels.mean(), rel=1e-9)
    assert stats.std == pytest.approx(pixels.std(), rel=1e-9)
    assert (stats.min, stats.max) == (pixels.min(), pixels.max())
    for p in PERCENTILES:
        assert stats.percentiles[p] == np.percentile(pixels, p, method='inverted_cdf')
    assert intensity_stats([]) is None
    with pytest.raises(ValueError, match='8-bit'):
        intensity_stats([np.zeros((2, 2), np.float32)])


def test_describe_input_counts_slices_scans_and_round_trips():
    images = _images(3) + [np.zeros((192, 192), np.uint8)]
    desc = describe_input(_slices(), images, DataNote('ADNI AD_NC'))
    assert (desc.n_slices, desc.n_scans, desc.n_images) == (32, 2, 4)
    assert desc.image_sizes == ((256, 240), (192, 192)) and desc.image_size == (256, 240)
    assert desc.slice_range == (57, 76) and desc.slices_per_scan == (12, 20)
    assert desc.file_types == ('.jpeg',)
    assert InputDescription.from_dict(json.loads(json.dumps(desc.to_dict()))) == desc


def test_the_card_shows_the_recorded_input_and_the_recipe():
    recipe = {
        'template': {'name': 'MNI152 ICBM 2009a'},
        'recipe': {
            'n4': False,
            'percentiles': [0.5, 99.5],
            'z_range_mm': [-30.0, 27.0],
            'slices': 20,
            'size': [192, 192],
            'image_format': 'png',
        },
    }
    desc = describe_input(_slices(), _images(2), DataNote('OASIS-3', False, recipe))
    text = _card(_config(data='OASIS-3', preprocessing=recipe, input=desc.to_dict())).text
    section = _section(text, 'Input data')
    assert '32 slices of 2 scans, jpeg files' in section
    assert '256 x 240 px, 8-bit grayscale' in section and '57 to 76' in section
    assert f'mean {desc.intensity.mean:.1f}, sd {desc.intensity.std:.1f}' in section
    assert 'affine registration to MNI152 ICBM 2009a' in section
    assert 'N4' not in section  # switched off in the recipe
    assert '20 axial slices evenly over MNI z = -30 to 27 mm' in section
    assert '3 x 64 x 64 float32 in [-1, 1]' in section
    assert recipe_steps(recipe) == (
        'reorient',
        'resample',
        'register',
        'mask',
        'normalise',
        'slice',
    )
    assert len(recipe_lines(recipe)) == 7  # six steps and the file format


def test_network_data_format_follows_the_published_cfg():
    desc = describe_input(_slices(), _images(2), DataNote('synthetic', True))
    cfg = _config()['pretrained_cfg']
    block = network_data_format(cfg, ['NC', 'AD'], desc.to_dict())
    image, pred = block['inputs']['image'], block['outputs']['pred']
    for key in (
        'type',
        'format',
        'modality',
        'num_channels',
        'spatial_shape',
        'dtype',
        'value_range',
        'is_patch_data',
        'channel_def',
    ):  # MONAI's required keys
        assert key in image and key in pred
    assert image['num_channels'] == 3 and image['spatial_shape'] == [IMG, IMG]
    # timm's transform: x / 255 in [0, 1], then (x - 0.5) / 0.5
    lo, hi = ((np.array([0.0, 1.0]) - cfg['mean'][0]) / cfg['std'][0]).tolist()
    assert image['value_range'] == [lo, hi]
    assert image['synthetic'] is True and 'synthetic' in image['sequence']
    assert image['source_image']['width'] == 256 and image['source_image']['slice_range'] == [
        57,
        76,
    ]
    assert pred['num_channels'] == 2 and pred['channel_def'] == {'0': 'NC', '1': 'AD'}


# ------------------------------------------------------------------ the exported config, size


@pytest.mark.parametrize('size', [64, 96])
def test_pool_size_is_the_last_feature_map_at_the_input_size(tmp_path, size):
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, size, size))
    ).eval()
    config = export.read_export_config(export.export_model(model, tmp_path / 'e'))
    with torch.no_grad():
        last = model.forward_features(torch.zeros(1, 1, size, size))
    assert config['pretrained_cfg']['pool_size'] == list(last.shape[-2:]) == [size // 32] * 2
    block = config['adni_timm']['network_data_format']['inputs']['image']
    assert block['spatial_shape'] == [size, size] and block['num_channels'] == 3


def test_gmacs_params_and_feature_shapes_match_the_real_model(tmp_path):
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, IMG, IMG))
    )
    folder = export.export_model(model, tmp_path / 'e')
    config = export.read_export_config(folder)
    stats = complexity.measure_export_config(config)  # meta device, from config.json only
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()  # 3 channels
    x = torch.zeros(1, 3, IMG, IMG)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        loaded(x)
    assert stats.gmacs == pytest.approx(counter.get_total_flops() / 2e9, rel=1e-9)
    assert stats.params == hub.count_parameters(folder / 'model.safetensors')
    features = timm.create_model(f'local-dir:{folder}', pretrained=True, features_only=True)
    with torch.no_grad():
        maps = features.eval()(x)
    assert [stats.feature_shape(i) for i in range(len(maps))] == [tuple(m.shape[1:]) for m in maps]
    with torch.no_grad():
        pooled = loaded.forward_head(loaded.forward_features(x), pre_logits=True)
    assert pooled.shape == (1, stats.num_features)
    text = _card(config=copy.deepcopy(config), stats=stats).text
    assert f'| GMACs | {stats.gmacs:.3g} at {IMG} x {IMG} px' in text
    assert f'# [1, {stats.num_features}]' in text and '[1, 320, 2, 2]' in text


# ------------------------------------------------------------- through hub.build_export_folder


def _export(folder, extra=None):
    torch.manual_seed(0)
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, IMG, IMG))
    )
    with torch.no_grad():  # off the zero-init head: the predictions differ between slices
        model.head.fc.weight.normal_(0, 0.5)
    base = {'threshold': 0.5, 'classes': ['NC', 'AD'], 'weights': 'live', 'epoch': 3}
    return export.export_model(model.eval(), folder, extra={**base, **(extra or {})})


def _code_blocks(markdown):
    return [block.split('```')[0] for block in markdown.split('```python\n')[1:]]


def test_the_example_image_is_synthetic_and_the_widget_shows_it(tmp_path):
    from PIL import Image

    from adni_timm.synthetic.slices import SYNTHETIC_COMMENT

    out = tmp_path / 'out'
    files = hub.build_export_folder(_export(tmp_path / 'best'), out, repo_id=REPO)
    assert out / 'example.png' in files
    with Image.open(out / 'example.png') as image:
        assert image.mode == 'L' and image.size == (256, 240)
        assert image.text['Comment'] == SYNTHETIC_COMMENT.decode()
    card = ModelCard.load(out / 'README.md')
    assert card.data.widget == [
        {
            'src': f'https://huggingface.co/{REPO}/resolve/main/example.png',
            'example_title': 'SYNTHETIC example slice (generated, not MRI)',
        }
    ]
    assert '](example.png)' in card.text and 'never a training image' in card.text


def _cv_run(root, evaluated):
    """A cross-validation run folder as cv_run writes it: folds, cv.json, the refit's split,
    final/ and the refit's evaluation of ``evaluated`` scans."""
    import hashlib

    run = root / 'run'
    final = _export(run / 'final', _cv_config()['adni_timm'] | {'classes': ['NC', 'AD']})
    (run / 'folds.json').write_text(json.dumps(FOLDS))
    (run / 'cv.json').write_text(json.dumps(_cv()))
    (run / 'refit').mkdir()
    (run / 'refit' / 'split.json').write_text(
        json.dumps(REFIT_SPLIT | {'train': REFIT_SPLIT['train'] + ['7']})
    )
    settings = export.read_export_settings(final)
    metrics = _metrics() | {
        'threshold': settings.threshold,
        'calibration': {'temperature': settings.temperature},
        'epoch': settings.epoch,
        'weights_sha256': hashlib.sha256((final / 'model.safetensors').read_bytes()).hexdigest(),
    }
    (run / 'eval-final').mkdir()
    (run / 'eval-final' / 'metrics.json').write_text(json.dumps(metrics))
    rows = ''.join(f'{p},AD,20,0.9,AD\n' for p in evaluated)
    (run / 'eval-final' / 'scans.csv').write_text(f'scan,label,n_slices,p_AD,predicted\n{rows}')
    return run


def test_a_cv_runs_card_checks_the_test_scans_against_folds_and_refit(tmp_path):
    run = _cv_run(tmp_path / 'clean', evaluated=['900', '901'])
    hub.build_export_folder(run, tmp_path / 'a', run / 'eval-final' / 'metrics.json', repo_id=REPO)
    text = (tmp_path / 'a' / 'README.md').read_text()
    assert 'shares no scan with any cross-validation fold (checked against `folds.json`' in text
    assert 'cut into 3 folds' in text and '0.810, 0.720, 0.930' in text
    # scan 7 is in no fold but the refit trained on it: the check must see refit/split.json
    run = _cv_run(tmp_path / 'leaky', evaluated=['900', '7'])
    hub.build_export_folder(run, tmp_path / 'b', run / 'eval-final' / 'metrics.json', repo_id=REPO)
    text = (tmp_path / 'b' / 'README.md').read_text()
    assert 'shares scans with training or validation: its results below are optimistic' in text
    assert 'shares no scan' not in text


@pytest.mark.slow
def test_the_cards_timm_snippets_run_offline_and_the_class_map_matters(tmp_path):
    """The card's code, run as a user would (a fresh process, the Hub repo in the offline cache):
    the class map gives the accuracy P(AD) earns on the files; timm's alphabetical map the
    complement."""
    import os
    import shutil
    import subprocess
    import sys

    from PIL import Image

    from adni_timm.synthetic.slices import generate
    from helpers import populate_hub_cache

    out = tmp_path / 'out'
    folder = _export(tmp_path / 'best')
    hub.build_export_folder(folder, out, repo_id=REPO)
    populate_hub_cache(tmp_path / 'cache', REPO, out)
    work = tmp_path / 'work'
    generate(work / 'AD_NC', train_subjects=0, test_subjects=2, slices=3, seed=1)
    first = sorted((work / 'AD_NC' / 'test' / 'AD').iterdir())[0]
    shutil.copyfile(first, work / 'slice.jpeg')  # the same bytes: a re-encoded JPEG differs
    timm_code, dataset_code = _code_blocks(_section((out / 'README.md').read_text(), 'How to use'))[
        :2
    ]
    report = (
        "\nprint('embedding', list(embedding.shape))"
        "\nprint('maps', [list(m.shape) for m in maps])"
        "\nprint('p_ad', p_ad)"
    )
    alphabetical = dataset_code.replace(', class_map=class_map', '')
    script = timm_code + report + '\n' + dataset_code + alphabetical
    env = {**os.environ, 'HF_HUB_CACHE': str(tmp_path / 'cache'), 'HF_HUB_OFFLINE': '1'}
    proc = subprocess.run(
        [sys.executable, '-c', script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    decision, p_rgb = lines[0].split()  # the card's own print, RGB input
    assert lines[1] == 'embedding [1, 320]'
    assert lines[2] == 'maps [[1, 40, 16, 16], [1, 80, 8, 8], [1, 160, 4, 4], [1, 320, 2, 2]]'
    p_one_channel = float(lines[3].split()[1])  # the in_chans=1 model, last in the snippet
    # what the card's code should find: each file, P(AD) at the stored threshold vs its folder
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    right, files = 0, sorted((work / 'AD_NC' / 'test').glob('*/*.jpeg'))
    with torch.no_grad():
        for path in files:
            x = transform(Image.open(path).convert('RGB')).unsqueeze(0)
            p_ad = model(x).softmax(-1)[0, 1].item()
            right += (p_ad >= 0.5) == (path.parent.name == 'AD')
            if path == first:
                for p in (float(p_rgb), p_one_channel):
                    assert p == pytest.approx(p_ad, rel=1e-5, abs=1e-6)
                assert decision == ('AD' if p_ad >= 0.5 else 'NC')
    accuracy = right / len(files)
    assert 0 < accuracy < 1  # a model that is neither always right nor always wrong here
    assert lines[4] == f'slice accuracy {accuracy:.3f}'
    assert lines[5] == f'slice accuracy {1 - accuracy:.3f}'  # every label swapped


def test_describe_slices_reads_the_files_as_the_loader_does(tiny_data):
    from adni_timm import data
    from adni_timm.data.note import describe
    from adni_timm.export.input_description import describe_slices, read_sample

    slices = data.scan_split(tiny_data, 'train', ('NC', 'AD'))
    desc = describe_slices(slices, describe(tiny_data), max_images=10)
    images = [np.asarray(data.read_image(s.path)) for s in slices]  # every file, decoded
    sample = read_sample(slices, max_images=10)
    assert desc.n_images == len(sample) == 10 and desc.n_slices == len(slices) == 48
    assert desc.synthetic and desc.image_sizes == ((256, 240),)
    assert all(any(np.array_equal(s, im) for im in images) for s in sample)
    assert desc.intensity == intensity_stats(sample)
    assert describe_slices(slices, describe(tiny_data), max_images=len(slices)).intensity == (
        intensity_stats(images)
    )


def test_an_export_from_prepared_scans_says_how_they_were_made(tmp_path):
    recipe = {'template': {'name': 'MNI152 2009a'}, 'recipe': {'slices': 20, 'register': True}}
    config = export.read_export_config(
        _export(tmp_path / 'e', {'preprocessing': recipe, 'data': 'ADNI T1'})
    )
    image = config['adni_timm']['network_data_format']['inputs']['image']
    assert (
        image['orientation']
        == 'axial 2D slices, in the space of MNI152 2009a (affine registration)'
    )
    assert (
        image['preprocessing'] == list(recipe_steps(recipe)) and image['sequence'] == 'T1-weighted'
    )
