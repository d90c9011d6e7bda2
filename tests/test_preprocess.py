"""The per-scan recipe on real anatomy: the MNI152 template (shipped in nilearn's wheel) moved by
known affine transforms and stored in other voxel orders must come back aligned; N4 removes a
known bias field; the recipe is plain data that round-trips through prepare.json."""

import dataclasses

import numpy as np
import pytest

sitk = pytest.importorskip('SimpleITK')
pytest.importorskip('nilearn')

from adni_timm.prepare.preprocess import (  # noqa: E402
    Recipe,
    RecipeError,
    RegistrationError,
    _cached_template_images,
    _ncc,
    n4_correct,
    read_recipe,
    register_affine,
    slice_numbers,
    slices_from_image,
)
from adni_timm.prepare.template import load_template  # noqa: E402
from adni_timm.prepare.volumes import image_from_ras, ras_from_image  # noqa: E402

FLIP = np.diag([-1.0, -1.0, 1.0])


def _random_affine(rng, max_deg=15.0, max_shift=15.0, scale=(0.9, 1.1), shear=0.03):
    """A known head pose (template RAS mm -> scanner RAS mm)."""
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    r = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        rot = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        rot[[i, i, j, j], [i, j, i, j]] = [c, -s, s, c]
        r = rot @ r
    m = np.eye(4)
    m[:3, :3] = (
        r @ np.diag(rng.uniform(*scale, 3)) @ (np.eye(3) + rng.uniform(-shear, shear, (3, 3)))
    )
    m[:3, 3] = rng.uniform(-max_shift, max_shift, 3)
    return m


def _moved_template(pose: np.ndarray, voxel_mm: float, orientation: str):
    """The template as a scanner would see it after ``pose``, on a ``voxel_mm`` grid stored in
    ``orientation`` voxel order; with a little noise."""
    template = load_template()
    fixed = image_from_ras(template.t1 * 1000, template.affine)
    size = int(round(240 / voxel_mm))
    grid = np.eye(4)
    grid[:3, :3] *= voxel_mm
    grid[:3, 3] = -voxel_mm * (size - 1) / 2 + np.array([0, -18, 10])
    reference = image_from_ras(np.zeros((size, size, size), np.float32), grid)
    inverse = np.linalg.inv(pose)  # resampling pulls: scanner point -> template point
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((FLIP @ inverse[:3, :3] @ FLIP).flatten().tolist())
    transform.SetTranslation((FLIP @ inverse[:3, 3]).tolist())
    moved = sitk.Resample(fixed, reference, transform, sitk.sitkLinear, 0.0)
    noise = np.random.default_rng(0).normal(0, 10, moved.GetSize()[::-1]).astype(np.float32)
    noisy = sitk.GetImageFromArray(np.abs(sitk.GetArrayFromImage(moved) + noise))
    noisy.CopyInformation(moved)
    return sitk.DICOMOrient(noisy, orientation)


def _transform_error_mm(transform, pose) -> float:
    """Mean distance over brain points between the recovered and the true template -> scan map."""
    template = load_template()
    idx = np.argwhere(template.brain)[::997]
    ras = idx @ template.affine[:3, :3].T + template.affine[:3, 3]
    got = np.array([transform.TransformPoint((p * [-1, -1, 1]).tolist()) for p in ras])
    want = (ras @ pose[:3, :3].T + pose[:3, 3]) * [-1, -1, 1]
    return float(np.linalg.norm(got - want, axis=1).mean())


@pytest.mark.parametrize('seed,orientation', [(0, 'RAS'), (1, 'LPS'), (2, 'PIL'), (3, 'RPI')])
def test_template_moved_by_a_known_affine_comes_back_aligned(seed, orientation):
    """Random rotation (15 deg), shift (15 mm), scale (10%), shear, any voxel order: the
    recovered transform is within 2 mm of the truth and the registered scan correlates > 0.95
    with the template. A registration that fails fails here."""
    template = load_template()
    pose = _random_affine(np.random.default_rng(seed))
    moving = _moved_template(pose, voxel_mm=2.0, orientation=orientation)
    ks = slice_numbers(Recipe(), template)
    fixed, mask, _, _ = _cached_template_images(template, ks, 2)
    transform = register_affine(fixed, moving, mask)
    assert _transform_error_mm(transform, pose) < 2.0
    registered = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    array, _ = ras_from_image(registered)
    assert _ncc(array, template.t1, template.brain) > 0.95


@pytest.mark.slow
def test_voxel_order_does_not_change_the_slices():
    """A scan stored axially (LPS) or sagittally (PIL) gives the very same slices."""
    pose = _random_affine(np.random.default_rng(7))
    recipe = Recipe(n4=False, resample_mm=2.0, slices=4)
    results = [
        slices_from_image(_moved_template(pose, 3.0, o), recipe).slices for o in ('LPS', 'PIL')
    ]
    assert results[0].shape == (4, 192, 192) and results[0].dtype == np.uint8
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_no_register_takes_the_scan_as_already_in_mni_space():
    """--no-register on the template itself gives the template's own slices (correlation 1)."""
    template = load_template()
    image = image_from_ras(template.t1 * 1000, template.affine)
    result = slices_from_image(image, Recipe(register=False, n4=False, slices=3))
    assert result.steps == ('reorient', 'resample', 'mask', 'normalise', 'slice')
    assert result.similarity == pytest.approx(1.0, abs=1e-4)
    # the template's own plane, in the radiological view: column c = x index 98 + 96 - c (the
    # patient's right, high x, on the left), row r = y index 117 + 96 - r (anterior on top);
    # centre (MNI 0, -17) = index (98, 117)
    raw = slices_from_image(
        image, Recipe(register=False, n4=False, mask=False, normalise=False, slices=3)
    )
    plane = template.t1[:, :, raw.slice_numbers[1]] * 1000
    expected = plane[194 - np.arange(192)][:, 213 - np.arange(192)].T
    np.testing.assert_array_equal(raw.slices[1], np.clip(np.round(expected), 0, 255))


def test_n4_removes_a_known_bias_field():
    template = load_template()
    t1 = template.t1[::3, ::3, ::3] * 1000  # 3 mm: N4 fits on a coarse grid anyway
    x = np.linspace(-1, 1, t1.shape[0])[:, None, None]
    z = np.linspace(-1, 1, t1.shape[2])[None, None, :]
    biased = (t1 * np.exp(0.25 * x + 0.2 * z**2)).astype(np.float32)
    image = image_from_ras(biased, template.affine @ np.diag([3, 3, 3, 1]))
    corrected, _ = ras_from_image(n4_correct(image, shrink=2))
    wm = template.wm[::3, ::3, ::3] > 0.9

    def cov(a):
        return a[wm].std() / a[wm].mean()

    assert cov(corrected) < 0.6 * cov(biased)


def test_a_scan_without_a_head_fails_registration_in_one_line():
    ball = np.zeros((96, 96, 96), np.float32)
    idx = np.indices(ball.shape)
    ball[((idx - 30) ** 2).sum(0) < 100] = 100
    image = image_from_ras(ball + 1, np.diag([1.5, 1.5, 1.5, 1]))
    with pytest.raises(RegistrationError, match='no head found: the foreground spans 30x30x30'):
        slices_from_image(image, Recipe(n4=False))


def test_recipe_round_trips_and_refuses_bad_values(tmp_path):
    recipe = Recipe(slices=8, z_range_mm=(-20, 20), register=False, image_format='jpeg')
    assert read_recipe(recipe.to_dict()) == recipe
    assert read_recipe({'recipe': recipe.to_dict(), 'other': 1}) == recipe
    path = tmp_path / 'prepare.json'
    path.write_text('{"recipe": %s}' % __import__('json').dumps(recipe.to_dict()))
    assert read_recipe(path) == read_recipe(tmp_path) == recipe
    assert recipe.digest != Recipe().digest
    assert recipe.steps == ('reorient', 'resample', 'n4', 'mask', 'normalise', 'slice')
    with pytest.raises(RecipeError, match='unknown recipe keys'):
        read_recipe({'slices': 4, 'colour': 'blue'})
    with pytest.raises(RecipeError, match='do not fit'):
        Recipe(slices=50, z_range_mm=(0, 20))
    with pytest.raises(RecipeError, match='png or jpeg'):
        dataclasses.replace(recipe, image_format='tiff')


def test_default_slices_span_the_medial_temporal_lobes_to_the_ventricles():
    template = load_template()
    ks = slice_numbers(Recipe(), template)
    assert len(ks) == 20 and ks[0] == 42 and ks[-1] == 99  # MNI z -30 .. +27 mm, every 3 mm
    assert [template.z_of_index(k) for k in (ks[0], ks[-1])] == [-30.0, 27.0]
    assert _ncc(template.t1, template.t1, template.brain) == pytest.approx(1.0)
