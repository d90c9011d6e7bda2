"""The input check (adni_timm.export.input_check): slices unlike the training slices are refused.

All slices are SYNTHETIC (adni_timm.synthetic); the natural photo is matplotlib's sample image.
"""

import math

import numpy as np
import pytest
import timm
import torch
from matplotlib import cbook
from PIL import Image
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from adni_timm import data
from adni_timm.data import splits
from adni_timm.inference import load_model
from adni_timm.export.input_check import (
    CHECK_NAME,
    TENSORS_NAME,
    FeatureGaussians,
    InputCheck,
    InputCheckError,
    fit_input_check,
    image_stats,
    is_colour,
)

FEATURES_TOO_FAR = "the model's features are far"


def photo() -> Image.Image:
    return Image.open(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))


def noise(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (240, 256), dtype=np.uint8)
    return Image.fromarray(pixels)


def upside_down(im: Image.Image) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(np.flipud(np.asarray(im))))


def turned_90(im: Image.Image) -> Image.Image:
    """The array turned by 90 degrees: a 256 x 240 slice becomes 240 x 256."""
    return Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(im))))


def turned_90_in_canvas(im: Image.Image) -> Image.Image:
    """Turned by 90 degrees inside its own 256 x 240 canvas (corners cut): the training shape."""
    return im.rotate(90)


def slices_of(data_dir, split):
    return data.scan_split(data_dir, split)


def load(slices):
    return [data.read_image(s.path) for s in slices]


# ------------------------------------------------------------------------- fast: no trained model


def test_colour_is_told_from_grayscale_saved_as_rgb(tiny_data):
    gray = data.read_image(slices_of(tiny_data, 'train')[0].path)
    assert not is_colour(gray)
    assert not is_colour(gray.convert('RGB'))  # a grayscale slice saved as RGB is still grayscale
    assert is_colour(photo())
    assert not is_colour(photo().convert('L'))


def test_image_statistics_are_the_documented_numbers():
    half = np.zeros((240, 256), np.uint8)
    half[:, :128] = 200
    s = image_stats(Image.fromarray(half), colour=False, templates=None)
    assert (s.width, s.height) == (256, 240)
    assert s.p1 == 0 and s.p99 == 200 and s.contrast == 200
    assert s.foreground_fraction == 0.5  # pixels above 15% of the 99th percentile
    assert not s.blank and math.isnan(s.template_correlation)  # no templates given
    flat = image_stats(Image.new('L', (256, 240), 128), colour=False, templates=None)
    assert flat.blank and flat.contrast == 0


def test_distance_is_mahalanobis_to_the_nearest_class_mean_with_a_ledoit_wolf_covariance():
    rng = np.random.default_rng(0)
    dim = 6
    train = np.concatenate([rng.normal(0, 1, (300, dim)), rng.normal(3, 1, (300, dim))])
    labels = np.repeat([0, 1], 300)
    val = np.concatenate([rng.normal(0, 1, (100, dim)), rng.normal(3, 1, (100, dim))])
    gaussians, val_distances = FeatureGaussians.fit(train, labels, val, quantile=0.95, margin=0.5)

    means = np.stack([train[:300].mean(0), train[300:].mean(0)])
    centred = train - means[labels]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    probe = np.array([[0.0] * dim, [3.0] * dim, [10.0] * dim])
    want = [
        min(mahalanobis(x, m, precision.astype(np.float32).astype(np.float64)) for m in means)
        for x in probe
    ]
    np.testing.assert_allclose(gaussians.distances(probe), want, rtol=1e-5, atol=1e-6)
    assert gaussians.threshold == pytest.approx(1.5 * np.quantile(val_distances, 0.95), rel=1e-12)
    assert gaussians.distances(probe)[2] > gaussians.threshold > gaussians.distances(probe)[0]
    with pytest.raises(InputCheckError, match='fitted on 6-dimensional features'):
        gaussians.distances(np.zeros((2, dim + 1)))


@pytest.fixture(scope='module')
def untrained(tiny_data):
    """An untrained 64 px atto (its features are random but fixed) and its eval transform."""
    torch.manual_seed(0)
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 64, 64))
    ).eval()
    _, eval_tf = data.build_transforms(model)
    train = slices_of(tiny_data, 'train')
    split = splits.split_scans(train, val_fraction=0.34, seed=0)
    fit, val = splits.select(train, split, 'train'), splits.select(train, split, 'val')
    check = fit_input_check(
        model, load(fit), [s.label for s in fit], load(val), transform=eval_tf, batch_size=16
    )
    return model, eval_tf, check


def test_a_saved_check_loads_and_gives_the_same_verdicts(untrained, tiny_data, tmp_path):
    model, eval_tf, check = untrained
    images = [*load(slices_of(tiny_data, 'test')[:6]), Image.new('L', (256, 240)), photo()]
    before = check.check(model, images, eval_tf)
    (tmp_path / 'model.safetensors').write_bytes(b'weights of this export')
    written = check.save(tmp_path)
    assert sorted(p.name for p in written) == sorted([CHECK_NAME, TENSORS_NAME])

    loaded = InputCheck.load(tmp_path)
    after = loaded.check(model, images, eval_tf)
    assert [v.ok for v in after] == [v.ok for v in before]
    assert [v.reason for v in after] == [v.reason for v in before]
    np.testing.assert_allclose(
        [v.distance for v in after], [v.distance for v in before], rtol=1e-12, atol=0
    )
    assert loaded.summary == check.summary
    assert not after[-2].ok and 'blank' in after[-2].reason
    assert not after[-1].ok and 'colour' in after[-1].reason


def test_an_export_without_a_check_loads_none_and_a_stale_check_is_refused(untrained, tmp_path):
    _, _, check = untrained
    assert InputCheck.load(tmp_path) is None
    weights = tmp_path / 'model.safetensors'
    weights.write_bytes(b'the weights the check was fitted for')
    check.save(tmp_path)
    weights.write_bytes(b'retrained weights')
    with pytest.raises(InputCheckError, match='fitted on other weights'):
        InputCheck.load(tmp_path)


def test_verdicts_from_features_computed_elsewhere_match_the_torch_path(untrained, tiny_data):
    """What the ONNX path does: image statistics + features from another runtime."""
    model, eval_tf, check = untrained
    images = load(slices_of(tiny_data, 'test')[:4]) + [noise(0)]
    batch = torch.stack([eval_tf(im) for im in images])
    with torch.inference_mode():
        features = model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
    elsewhere = check.verdicts(check.image_stats(images), features)
    here = check.check(model, images, eval_tf)
    assert [v.reason for v in elsewhere] == [v.reason for v in here]
    np.testing.assert_allclose(
        [v.distance for v in elsewhere], [v.distance for v in here], rtol=1e-5, atol=1e-6
    )
    image_only = check.verdicts(check.image_stats(images), None)
    assert all(v.distance is None for v in image_only)


def test_the_summary_is_what_metrics_json_reports(untrained):
    _, _, check = untrained
    block = check.summary.as_metrics()
    assert block['threshold'] == check.features.threshold > 0
    assert 0 <= block['validation_pass_rate'] <= block['validation_image_pass_rate'] <= 1
    assert block['validation_feature_pass_rate'] >= block['validation_pass_rate']
    assert '1.5 x the 95th percentile' in block['threshold_rule']
    assert block['n_val'] == check.summary.n_val > 0


def test_fit_refuses_mismatched_labels(untrained, tiny_data):
    model, eval_tf, _ = untrained
    images = load(slices_of(tiny_data, 'train')[:4])
    with pytest.raises(ValueError, match='4 training images but 3 labels'):
        fit_input_check(model, images, [0, 1, 0], images, transform=eval_tf)


# --------------------------------------------------------- slow: a model trained on synthetic data


@pytest.fixture(scope='module')
def trained_check(tiny_run, tmp_path_factory):
    """The check of the tiny trained run, fitted on 60 SYNTHETIC scans, thresholded on 20 other
    scans, asked about 40 held-out scans (4 slices each)."""
    from adni_timm.synthetic.slices import generate

    root = generate(
        tmp_path_factory.mktemp('input_check') / 'AD_NC',
        train_subjects=40,
        test_subjects=20,
        slices=4,
        seed=5,
    )
    model = load_model(tiny_run[0]).net
    _, eval_tf = data.build_transforms(model)
    train = slices_of(root, 'train')
    split = splits.split_scans(train, val_fraction=0.25, seed=0)
    fit, val = splits.select(train, split, 'train'), splits.select(train, split, 'val')
    check = fit_input_check(
        model, load(fit), [s.label for s in fit], load(val), transform=eval_tf, batch_size=32
    )
    return model, eval_tf, check, load(slices_of(root, 'test'))


def flag_rate(verdicts) -> float:
    return float(np.mean([not v.ok for v in verdicts]))


@pytest.mark.slow
def test_held_out_slices_pass(trained_check):
    model, eval_tf, check, test_images = trained_check
    verdicts = check.check(model, test_images, eval_tf)
    assert len(verdicts) == 160
    assert 1 - flag_rate(verdicts) >= 0.99, [v.reason for v in verdicts if not v.ok]
    assert check.summary.val_pass_rate >= 0.95
    assert check.summary.n_train == 240 and check.summary.n_val == 80


@pytest.mark.slow
@pytest.mark.parametrize(
    'kind, make, cue',
    [
        ('black', lambda s: [Image.new('L', (256, 240), 0)], 'blank'),
        ('uniform grey', lambda s: [Image.new('L', (256, 240), 128)], 'blank'),
        ('noise', lambda s: [noise(i) for i in range(5)], 'does not resemble the mean'),
        ('photo in grayscale', lambda s: [photo().convert('L')], 'does not resemble the mean'),
        ('photo in colour', lambda s: [photo()], 'colour image'),
        ('turned 90 degrees', lambda s: [turned_90(im) for im in s], 'rotated by 90 degrees'),
        (
            'turned 90 degrees in the canvas',
            lambda s: [turned_90_in_canvas(im) for im in s],
            'rotated by 90 degrees',
        ),
    ],
)
def test_inputs_unlike_training_are_flagged(trained_check, kind, make, cue):
    model, eval_tf, check, test_images = trained_check
    verdicts = check.check(model, make(test_images), eval_tf)
    assert flag_rate(verdicts) == 1.0, kind
    assert all(cue in v.reason for v in verdicts), verdicts[0].reason


@pytest.mark.slow
def test_noise_is_far_in_feature_space_too(trained_check):
    """The feature stage alone refuses noise, with room to spare. Not asserted for the photo: with
    this 2-epoch model its distance is 0.85 x the threshold (measured; 1.7 x with a model trained
    4 epochs on 400 slices), so the photo is refused by the image stage only."""
    model, eval_tf, check, _ = trained_check
    verdicts = check.check(model, [noise(0), noise(1), noise(2)], eval_tf)
    assert all(FEATURES_TOO_FAR in v.reason for v in verdicts)
    assert min(v.distance for v in verdicts) > 1.2 * check.features.threshold


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason=(
        'synthetic heads are nearly symmetric front to back: measured on 160 held-out slices, an '
        'upside-down slice is flagged 0% of the time (image stage: its fit to the flipped mean '
        'slice stays within the training range; feature stage: distances within the threshold). '
        'Real axial MRI is not symmetric (frontal lobes, cerebellum); unverified there.'
    ),
)
def test_upside_down_slices_are_flagged(trained_check):
    model, eval_tf, check, test_images = trained_check
    verdicts = check.check(model, [upside_down(im) for im in test_images], eval_tf)
    assert flag_rate(verdicts) >= 0.9
