"""Issue 29, bounded resources: a small hostile file is refused from its header, in one line, with
peak memory at most 0.5 GiB above what the same command costs refusing a harmless bad file (its
own start-up footprint: torch and timm take ~1 GB; both runs are forked from the tests' script
server when it can take them, so its preloaded imports are in both numbers: hostile_files)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from hostile_files import MAX_EXTRA_RSS, cli, run_measured, write_nifti_bomb, write_png_bomb

MIB = 1024**2


@pytest.fixture(scope='module')
def png_bomb(tmp_path_factory):
    return write_png_bomb(tmp_path_factory.mktemp('bomb') / 'bomb_70.png')


@pytest.fixture(scope='module')
def small_export(tmp_path_factory):
    """An adni_convnext_atto export at 64 px with the default adni-prepare recipe recorded (so
    ``--images scan.nii.gz`` reads the scan)."""
    import timm

    import adni_timm  # noqa: F401  (registers adni_convnext_*)
    from adni_timm.export.format import export_model
    from adni_timm.prepare.preprocess import Recipe

    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 64, 64))
    )
    return export_model(
        model,
        tmp_path_factory.mktemp('export') / 'best',
        extra={'classes': ['NC', 'AD'], 'preprocessing': {'recipe': Recipe().to_dict()}},
    )


def _not_a_png(path):
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 64)  # a PNG signature, then nothing usable
    return path


def _assert_bounded(hostile, baseline, what):
    extra = hostile.peak_rss - baseline.peak_rss
    assert extra <= MAX_EXTRA_RSS, (
        f'{what}: peak RSS {hostile.peak_rss / MIB:.0f} MiB, {extra / MIB:.0f} MiB above the '
        f'same command refusing a harmless bad file ({baseline.peak_rss / MIB:.0f} MiB)'
    )
    assert 'Traceback' not in hostile.stderr, hostile.stderr


# ------------------------------------------------------------------------------- slices (images)


def test_open_image_refuses_from_the_header(png_bomb, tmp_path):
    from adni_timm.data.images import MAX_SIDE, ImageTooLarge, open_image

    with pytest.raises(ImageTooLarge, match=f'13000 x 13000 px: slices are at most {MAX_SIDE}'):
        with open_image(png_bomb):
            pytest.fail('the body must not run: nothing is decoded')
    # PIL's own guard (an error above 2 x MAX_IMAGE_PIXELS): the same one-line refusal
    huge = write_png_bomb(tmp_path / 'huge.png', 20_000, 20_000, bits=8)
    with pytest.raises(ImageTooLarge, match='declares 400,000,000 pixels: slices are at most 2048'):
        with open_image(huge):
            pass
    ok = tmp_path / 'ok.png'
    Image.fromarray(np.full((240, 256), 7, np.uint8)).save(ok)
    with open_image(ok) as im:
        assert im.size == (256, 240)


@pytest.mark.slow
def test_check_data_refuses_a_huge_slice_from_its_header(png_bomb, tmp_path):
    from adni_timm.synthetic.slices import generate

    generate(tmp_path / 'data', 2, 1, slices=2, seed=0)
    baseline_dir = tmp_path / 'data'
    _not_a_png(baseline_dir / 'train' / 'AD' / 'bad_70.png')
    baseline = run_measured(cli('check'), baseline_dir)
    assert baseline.returncode == 1, baseline.stderr  # the harmless bad file: a data problem
    (baseline_dir / 'train' / 'AD' / 'bad_70.png').unlink()
    shutil.copy(png_bomb, baseline_dir / 'train' / 'AD' / png_bomb.name)
    hostile = run_measured(cli('check'), baseline_dir)
    shown = hostile.stdout + hostile.stderr
    assert hostile.returncode == 1, shown
    assert 'bomb_70.png' in shown and '13000 x 13000 px: slices are at most 2048 px' in shown
    _assert_bounded(hostile, baseline, 'adni-check-data')


@pytest.mark.slow
def test_evaluate_images_refuses_a_huge_slice_with_bounded_memory(png_bomb, small_export, tmp_path):
    bad = tmp_path / 'bad'
    bad.mkdir()
    _not_a_png(bad / 'x_70.png')
    args = ['--model', small_export, '--images', bad, '--output-dir', tmp_path / 'out']
    baseline = run_measured(cli('evaluate'), *args)
    assert baseline.returncode == 1, baseline.stderr
    (bad / 'x_70.png').unlink()
    shutil.copy(png_bomb, bad / png_bomb.name)
    hostile = run_measured(cli('evaluate'), *args)
    assert hostile.returncode == 1, hostile.stdout + hostile.stderr  # a bad file: exit 1
    assert hostile.stderr.startswith('adni-evaluate: error:') or 'error:' in hostile.stderr
    assert '13000 x 13000 px: slices are at most 2048 px a side' in hostile.stderr
    _assert_bounded(hostile, baseline, 'evaluate --images')


@pytest.mark.slow
def test_train_refuses_a_huge_slice_before_training(png_bomb, tmp_path):
    from adni_timm.synthetic.slices import generate

    from helpers import TINY

    generate(tmp_path / 'data', 3, 1, slices=3, seed=0)
    target = tmp_path / 'data' / 'train' / 'AD'
    _not_a_png(target / 'bad_70.png')
    args = ['--data-dir', tmp_path / 'data', '--output-dir', tmp_path / 'run', *TINY]
    baseline = run_measured(cli('train'), *args)
    assert baseline.returncode == 1, baseline.stderr
    (target / 'bad_70.png').unlink()
    shutil.copy(png_bomb, target / png_bomb.name)
    hostile = run_measured(cli('train'), *args)
    assert hostile.returncode == 1, hostile.stderr
    assert '13000 x 13000 px: slices are at most 2048 px a side' in hostile.stderr
    assert not (tmp_path / 'run' / 'best').exists()
    _assert_bounded(hostile, baseline, 'train')


# ------------------------------------------------------------------------------------ volumes


def test_read_volume_refuses_a_huge_nifti_from_its_header(tmp_path):
    from adni_timm.prepare.volumes import MAX_VOXELS, VolumeError, read_volume

    bomb = write_nifti_bomb(tmp_path / 'big.nii.gz')
    with pytest.raises(VolumeError) as info:
        read_volume(bomb)
    assert info.value.kind == 'too-large'
    assert '800x800x400' in str(info.value) and f'{MAX_VOXELS:,}' in str(info.value)


def test_read_volume_refuses_a_large_dicom_series_before_reading_it(tmp_path, monkeypatch):
    import SimpleITK as sitk

    from adni_timm.prepare import volumes
    from adni_timm.synthetic.volumes import write_dicom_series

    image = sitk.Image([20, 20, 12], sitk.sitkInt16)
    image.SetSpacing([10.0, 10.0, 10.0])
    write_dicom_series(image, tmp_path / 'series', 'sub', 'I1', '2020-01-01')
    monkeypatch.setattr(volumes, 'MAX_VOXELS', 20 * 20 * 12 - 1)
    executed = []
    monkeypatch.setattr(sitk.ImageSeriesReader, 'Execute', lambda self: executed.append(1))
    with pytest.raises(volumes.VolumeError) as info:
        volumes.read_volume(tmp_path / 'series')
    assert info.value.kind == 'too-large' and '20x20x12' in str(info.value)
    assert executed == []  # refused from the headers, before GDCM read a pixel


@pytest.mark.slow
def test_evaluate_refuses_a_huge_nifti_with_bounded_memory(small_export, tmp_path):
    bad = _not_a_nifti = tmp_path / 'bad.nii.gz'
    bad.write_bytes(b'\x1f\x8b' + b'\0' * 64)  # a gzip signature, then nothing readable
    baseline = run_measured(
        cli('evaluate'), '--model', small_export, '--images', bad, '--output-dir', tmp_path / 'o1'
    )
    assert baseline.returncode == 2, baseline.stderr
    bomb = write_nifti_bomb(tmp_path / 'head.nii.gz')
    hostile = run_measured(
        cli('evaluate'), '--model', small_export, '--images', bomb, '--output-dir', tmp_path / 'o2'
    )
    assert hostile.returncode == 2, hostile.stdout + hostile.stderr
    assert '800x800x400' in hostile.stderr and 'voxels' in hostile.stderr
    assert hostile.stderr.count(str(bomb)) <= 1  # the path once, not twice
    _assert_bounded(hostile, baseline, 'evaluate --images scan.nii.gz')


# ------------------------------------------------------------------------- an export's config.json


def _hostile_copy(export, tmp_path, **model_args):
    hostile = tmp_path / 'hostile'
    shutil.copytree(export, hostile)
    config = json.loads((hostile / 'config.json').read_text())
    config['model_args'] = {**config.get('model_args', {}), **model_args}
    (hostile / 'config.json').write_text(json.dumps(config))
    return hostile


@pytest.mark.parametrize(
    'model_args, said',
    [
        (
            dict(dims=[2500] * 4),
            'stem.0.weight is [40, 3, 4, 4] in the weights but [2500, 3, 4, 4]',
        ),
        (dict(depths=[100_000] * 4), 'far more layers than the'),
        (dict(no_such_argument=1), "unexpected keyword argument 'no_such_argument'"),
    ],
)
def test_load_export_checks_model_args_before_building(small_export, tmp_path, model_args, said):
    from adni_timm.export.format import ExportError
    from adni_timm.inference import load_model

    hostile = _hostile_copy(small_export, tmp_path, **model_args)
    with pytest.raises(ExportError, match='model_args') as info:
        load_model(hostile)
    assert said in str(info.value)
    load_model(small_export)  # the export as written still loads


@pytest.mark.slow
def test_evaluate_refuses_hostile_model_args_with_bounded_memory(small_export, tmp_path):
    slices = tmp_path / 'slices'
    slices.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(
        slices / 's_70.png'
    )
    baseline = run_measured(
        cli('evaluate'), '--model', small_export, '--images', slices, '--output-dir', tmp_path / 'a'
    )
    assert baseline.returncode in (0, 2), baseline.stderr  # it ran (whatever it decided)
    hostile = _hostile_copy(small_export, tmp_path, dims=[2500] * 4)
    refused = run_measured(
        cli('evaluate'), '--model', hostile, '--images', slices, '--output-dir', tmp_path / 'b'
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count('\n') == 1 and 'model_args' in refused.stderr
    _assert_bounded(refused, baseline, 'evaluate with a hostile config.json')


def test_the_standalone_onnx_runner_keeps_the_same_cap():
    from adni_timm.data.images import MAX_SIDE
    from adni_timm.export import onnx_runtime

    assert onnx_runtime.MAX_SIDE == MAX_SIDE
