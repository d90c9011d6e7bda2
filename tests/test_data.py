"""Data pipeline: layout scan, bad input, scan-level
splits, transforms, cache, loaders, `check` CLI.
"""

import json
import logging
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from adni_timm import data
from adni_timm.data import loader
from adni_timm.cli.check import module_main as check_cli
from adni_timm.data import (
    DataError,
    Slice,
    SliceCache,
    SliceDataset,
    build_transforms,
    create_loader,
    preload,
    read_image,
    resolve_bad_images,
    scan_split,
)
from adni_timm.data.splits import check_no_leakage, select, split_scans, split_slices
from adni_timm.utils.hardware import available_memory
from adni_timm.synthetic.slices import generate


@pytest.fixture(scope='module')
def synth(tmp_path_factory) -> Path:
    """A tiny SYNTHETIC AD_NC set: 3 train / 2 test scans per class, 3 slices each."""
    return generate(tmp_path_factory.mktemp('data') / 'AD_NC', 3, 2, slices=3, seed=0)


@pytest.fixture(scope='module')
def model():
    return timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 64, 64))
    )


def write_image(path: Path, size=(32, 30), mode='L', value=100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0]) + ((3,) if mode == 'RGB' else ())
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).convert(mode).save(path)
    return path


def make_layout(root: Path, scans: dict) -> Path:
    """scans: {split: {class: [scan ids]}} -> 2 slices per scan."""
    for split, by_class in scans.items():
        for name, ids in by_class.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for pid in ids:
                for k in (10, 11):
                    write_image(root / split / name / f'{pid}_{k}.jpeg', value=int(pid) + k)
    return root


def small_layout(root: Path) -> Path:
    return make_layout(
        root, {'train': {'NC': ['1', '2'], 'AD': ['3', '4']}, 'test': {'NC': ['5'], 'AD': ['6']}}
    )


# ----------------------------------------------------------------------------------------- scanning


def test_scan_labels_nc0_ad1_and_scan_ids(synth):
    slices = scan_split(synth, 'train')
    assert len(slices) == 2 * 3 * 3
    for s in slices:
        assert s.label == {'NC': 0, 'AD': 1}[Path(s.path).parent.name]
        pid, idx = Path(s.path).stem.split('_')
        assert (s.scan, s.slice_index) == (pid, int(idx))
    # NC first: not alphabetical
    assert [s.label for s in slices] == sorted(s.label for s in slices)
    assert slices == scan_split(synth, 'train')  # deterministic order


def test_explicit_three_classes(tmp_path):
    root = make_layout(tmp_path, {'train': {'NC': ['1'], 'MCI': ['2'], 'AD': ['3']}})
    labels = {s.scan: s.label for s in scan_split(root, 'train', classes=('NC', 'MCI', 'AD'))}
    assert labels == {'1': 0, '2': 1, '3': 2}
    assert data.parse_classes('NC, MCI ,AD') == ('NC', 'MCI', 'AD')
    with pytest.raises(DataError, match='two distinct'):
        data.parse_classes('NC,NC')


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r'DATA_DIR .*nowhere does not exist.*train/ and test/'):
        scan_split(tmp_path / 'nowhere')


def test_missing_split(tmp_path):
    root = make_layout(tmp_path / 'd', {'train': {'NC': ['1'], 'AD': ['2']}})
    with pytest.raises(
        DataError, match=r"no 'test' folder in .*d: expected .*test/\{NC,AD\}/<scan>_<slice>"
    ):
        scan_split(root, 'test')


def test_single_ad_nc_folder_hint(tmp_path):
    small_layout(tmp_path / 'AD_NC')
    with pytest.raises(DataError, match=r"holds a single folder 'AD_NC'.*--data-dir .*AD_NC"):
        scan_split(tmp_path, 'train')


def test_unknown_class_folder(tmp_path):
    root = small_layout(tmp_path)
    write_image(root / 'train' / 'MCI' / '9_1.jpeg')
    with pytest.raises(DataError, match=r'unknown class folder .*train/MCI.*--classes'):
        scan_split(root, 'train')
    (root / 'train' / 'MCI').rename(root / 'train' / 'ad')
    with pytest.raises(DataError, match='case-sensitive: rename it to AD'):
        scan_split(root, 'train')


def test_missing_and_empty_class_folders(tmp_path):
    root = small_layout(tmp_path)
    for f in (root / 'train' / 'AD').iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r'empty class folder .*train/AD'):
        scan_split(root, 'train')
    (root / 'train' / 'AD').rmdir()
    with pytest.raises(DataError, match=r'missing class folder .*train/AD'):
        scan_split(root, 'train')


@pytest.mark.parametrize(
    'name, parsed',
    [
        ('218391_78.jpeg', ('218391', 78)),
        ('002_S_0295_12.png', ('002_S_0295', 12)),  # ADNI subject ids hold underscores
        ('002_S_0295_m12_45.png', ('002_S_0295_m12', 45)),  # a visit of a subject (adni-prepare)
        ('002_S_0295.jpeg', None),  # a subject without a slice number, not scan 002_S slice 295
        ('scan.png', None),
    ],
)
def test_the_slice_number_is_the_last_underscore_digits(name, parsed):
    assert data.parse_file_name(Path(name)) == parsed


def test_one_slice_in_two_files_is_an_error_naming_both(tmp_path):
    root = small_layout(tmp_path)
    write_image(root / 'train' / 'NC' / '1_010.jpeg')  # 1_10.jpeg exists: the same slice 10
    with pytest.raises(DataError, match=r'scan 1 slice 10 is in 2 files .*1_010.jpeg.*1_10.jpeg'):
        scan_split(root, 'train')


def test_a_scan_with_an_odd_slice_count_is_warned_about(tmp_path, caplog):
    root = make_layout(tmp_path, {'train': {'NC': ['1', '2', '3'], 'AD': ['4', '5']}})
    for k in range(12, 20):  # scan 5: 10 slices where the others have 2
        write_image(root / 'train' / 'AD' / f'5_{k}.jpeg', value=k)
    with caplog.at_level(logging.WARNING, logger='adni_timm.data'):
        scan_split(root, 'train')
    assert 'slice count far from the median 2: 5 (10)' in caplog.text


def test_file_name_without_scan_id(tmp_path):
    root = small_layout(tmp_path)
    write_image(root / 'train' / 'NC' / 'scan.jpeg')
    with pytest.raises(
        DataError,
        match=r'without a scan id.*scan\.jpeg.*<scan>_<slice>\.jpeg.*file_is_scan',
    ):
        scan_split(root, 'train')
    slices = scan_split(root, 'train', file_is_scan=True)
    assert {s.scan for s in slices} == {
        '1_10',
        '1_11',
        '2_10',
        '2_11',
        '3_10',
        '3_11',
        '4_10',
        '4_11',
        'scan',
    }
    assert all(s.slice_index is None for s in slices)


def test_scan_in_two_class_folders(tmp_path):
    root = small_layout(tmp_path)
    write_image(root / 'train' / 'AD' / '1_12.jpeg')
    with pytest.raises(DataError, match='scan 1 has slices in several class folders'):
        scan_split(root, 'train')


def test_every_problem_is_reported_at_once(tmp_path):
    root = small_layout(tmp_path)
    write_image(root / 'train' / 'MCI' / '9_1.jpeg')
    write_image(root / 'train' / 'NC' / 'scan.jpeg')
    with pytest.raises(DataError) as e:
        scan_split(root, 'train')
    assert 'unknown class folder' in str(e.value) and 'without a scan id' in str(e.value)


def test_non_image_files_are_ignored_with_a_warning(tmp_path, caplog):
    root = small_layout(tmp_path)
    (root / 'train' / 'NC' / 'notes.txt').write_text('hello')
    (root / 'train' / 'NC' / '.DS_Store').write_text('')
    with caplog.at_level(logging.WARNING, logger='adni_timm.data'):
        slices = scan_split(root, 'train')
    assert len(slices) == 8
    assert 'notes.txt' in caplog.text and '.DS_Store' not in caplog.text


def test_leakage_between_train_and_test_is_an_error(synth, tmp_path):
    check_no_leakage(scan_split(synth, 'train'), scan_split(synth, 'test'))  # generator: disjoint
    root = make_layout(
        tmp_path, {'train': {'NC': ['1', '2'], 'AD': ['3']}, 'test': {'NC': ['2'], 'AD': ['3']}}
    )
    with pytest.raises(DataError, match=r'2 scan\(s\) appear in both train and test: 2, 3'):
        check_no_leakage(scan_split(root, 'train'), scan_split(root, 'test'))


# --------------------------------------------------------------------------------------- bad images


@pytest.fixture()
def broken(tmp_path):
    """small_layout plus a text file named .jpeg and a truncated JPEG."""
    root = small_layout(tmp_path)
    (root / 'train' / 'NC' / '7_1.jpeg').write_text('not a jpeg at all')
    truncated = write_image(root / 'train' / 'AD' / '8_1.jpeg', size=(128, 120))
    truncated.write_bytes(truncated.read_bytes()[: len(truncated.read_bytes()) // 2])
    return root


def test_bad_images_are_found_alike_on_threads(broken):
    slices = scan_split(broken, 'train')
    kept = resolve_bad_images(slices, skip_bad=True)
    assert {s.path for s in slices} - {s.path for s in kept} == {
        str(broken / 'train' / 'NC' / '7_1.jpeg'),
        str(broken / 'train' / 'AD' / '8_1.jpeg'),
    }
    assert resolve_bad_images(slices, skip_bad=True, num_workers=2) == kept


def test_bad_images_stop_by_default_listing_every_file(broken):
    with pytest.raises(DataError, match=r'2 image file\(s\) cannot be decoded') as e:
        resolve_bad_images(scan_split(broken, 'train'))
    assert '7_1.jpeg: not an image' in str(e.value) and '8_1.jpeg: truncated' in str(e.value)
    assert '--skip-bad-images' in str(e.value)


def test_bad_images_skipped_on_request(broken, caplog):
    slices = scan_split(broken, 'train')
    with caplog.at_level(logging.WARNING, logger='adni_timm.data'):
        kept = resolve_bad_images(slices, skip_bad=True)
    assert len(kept) == len(slices) - 2
    assert not {'7', '8'} & {s.scan for s in kept}
    assert 'dropped 2 of 10 image file(s)' in caplog.text and '8_1.jpeg' in caplog.text


def test_colour_image_converted_with_a_note(tmp_path, caplog):
    root = small_layout(tmp_path)
    write_image(root / 'train' / 'NC' / '1_12.jpeg', mode='RGB')
    slices = scan_split(root, 'train')
    with caplog.at_level(logging.INFO, logger='adni_timm.data'):
        assert resolve_bad_images(slices) == slices
    assert (
        'colour image(s) are converted to grayscale' in caplog.text and '1_12.jpeg' in caplog.text
    )
    assert read_image(str(root / 'train' / 'NC' / '1_12.jpeg')).mode == 'L'
    cache = preload(slices)
    assert cache.images.shape == (len(slices), 30, 32)


def test_16_bit_png_scaled_not_clipped(tmp_path, caplog):
    root = small_layout(tmp_path)
    path = root / 'train' / 'NC' / '1_12.png'
    Image.fromarray(np.arange(0, 60000, 50, dtype=np.uint16).reshape(30, 40)).save(path)
    assert Image.open(path).mode == 'I;16'
    pixels = np.asarray(read_image(str(path)))
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    assert 100 < pixels.mean() < 155  # a ramp, not clipped to white
    with caplog.at_level(logging.INFO, logger='adni_timm.data'):
        resolve_bad_images(scan_split(root, 'train'))
    assert '1 16-bit / float image(s) are scaled' in caplog.text


def test_odd_sized_slices_get_the_same_preprocessing_from_the_cache_as_from_disk(tmp_path, caplog):
    """One policy for odd sizes: the cache keeps them
    as they are, so training sees what evaluation sees.
    """
    root = small_layout(tmp_path)
    # another size and aspect ratio
    odd = write_image(root / 'train' / 'NC' / '1_12.png', size=(64, 48))
    slices = scan_split(root, 'train')
    with caplog.at_level(logging.INFO, logger='adni_timm.data'):
        cache = preload(slices, num_workers=2)
    assert cache.images.shape == (len(slices) - 1, 30, 32) and len(cache) == len(slices)
    assert '1 of 9 slices are not 32x30; cached at their own size' in caplog.text
    assert np.array_equal(np.asarray(cache.image(str(odd))), np.asarray(read_image(str(odd))))
    model = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(input_size=(1, 64, 64))
    )
    _, eval_tf = build_transforms(model)
    cached, disk = SliceDataset(slices, eval_tf, cache), SliceDataset(slices, eval_tf)
    for i in range(len(slices)):
        assert torch.equal(cached[i][0], disk[i][0]), slices[i].path


def test_available_memory_reads_memavailable_and_the_container_limit(tmp_path):
    meminfo = tmp_path / 'meminfo'
    meminfo.write_text('MemTotal: 32000000 kB\nMemFree: 1000000 kB\nMemAvailable: 20000000 kB\n')
    no_cgroup = tmp_path / 'none'
    # not MemFree
    assert available_memory(meminfo, no_cgroup) == (20000000 * 1024, 'available memory')
    v2 = tmp_path / 'v2'
    v2.mkdir()
    (v2 / 'memory.max').write_text('8589934592\n')  # an 8 GiB container on a 32 GB machine
    (v2 / 'memory.current').write_text('1073741824\n')
    assert available_memory(meminfo, v2) == (7 * 2**30, 'container (cgroup) limit')
    (v2 / 'memory.max').write_text('max\n')  # cgroup v2 without a limit
    assert available_memory(meminfo, v2)[1] == 'available memory'
    v1 = tmp_path / 'v1' / 'memory'
    v1.mkdir(parents=True)
    (v1 / 'memory.limit_in_bytes').write_text(str(4 * 2**30))
    (v1 / 'memory.usage_in_bytes').write_text(str(2**30))
    assert available_memory(meminfo, tmp_path / 'v1') == (3 * 2**30, 'container (cgroup) limit')
    (v1 / 'memory.limit_in_bytes').write_text(str(2**63 - 4096))  # v1's "no limit"
    assert available_memory(meminfo, tmp_path / 'v1')[1] == 'available memory'


def test_cache_counts_every_process_on_the_machine_and_falls_back_to_disk(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(
        loader, 'available_memory', lambda: (10 * 2**30, 'container (cgroup) limit')
    )
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    fits, line = data.cache_fits(2 * 2**30)
    assert (
        fits
        and line == 'slice cache: 2.00 GiB of 10.0 GiB usable (container (cgroup) limit): caching'
    )
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '8')  # 8 GPUs on the node: 8 copies of the cache
    fits, line = data.cache_fits(2 * 2**30)
    assert (
        not fits
        and '2.00 GiB x 8 processes of 10.0 GiB usable' in line
        and 'reading slices from disk' in line
    )
    monkeypatch.setattr(loader, 'cache_fits', lambda nbytes: (False, 'too much'))
    slices = scan_split(small_layout(tmp_path), 'train')
    with caplog.at_level(logging.INFO, logger='adni_timm.data'):
        assert preload(slices) is None
    assert 'too much' in caplog.text


# ------------------------------------------------------------------------------------------- splits


def fake_slices(n_nc=50, n_ad=30, per_scan=3) -> list[Slice]:
    return [
        Slice(f'/x/{label}/{p}_{k}.jpeg', p, label, k)
        for label, n in ((0, n_nc), (1, n_ad))
        for p in (f'{label}{i:04d}' for i in range(n))
        for k in range(per_scan)
    ]


def test_split_scans_stratified_disjoint_deterministic():
    slices = fake_slices()
    split = split_scans(slices, val_fraction=0.2, seed=0)
    assert split['level'] == 'scan' and split['seed'] == 0 and split['val_fraction'] == 0.2
    assert not set(split['train']) & set(split['val'])
    assert set(split['train']) | set(split['val']) == {s.scan for s in slices}
    val_labels = Counter(p[0] for p in split['val'])  # ids start with their label
    assert val_labels == {'0': 10, '1': 6}  # 20% of 50 NC and of 30 AD
    assert split == split_scans(slices, 0.2, seed=0)
    assert split['val'] != split_scans(slices, 0.2, seed=1)['val']
    assert json.loads(json.dumps(split)) == split
    assert len(split_scans(slices, 0.5)['val']) == 40


def test_split_scans_edge_cases():
    slices = fake_slices()
    assert split_scans(slices, 0.0)['val'] == []
    with pytest.raises(DataError, match=r'must be in \[0, 1\)'):
        split_scans(slices, 1.0)
    with pytest.raises(DataError, match='cannot split 3 scans'):
        split_scans(fake_slices(2, 1), 0.5)


def test_select_by_scan():
    slices = fake_slices()
    split = split_scans(slices, 0.2)
    val = select(slices, split, 'val')
    train = select(slices, split, 'train')
    assert len(val) == 16 * 3 and len(train) + len(val) == len(slices)
    assert {s.scan for s in val} == set(split['val'])
    with pytest.raises(DataError, match='not in the data'):
        select(slices[:30], split, 'val')


def test_split_slices_is_the_leaky_reference_split():
    slices = fake_slices()
    split = split_slices(slices, 0.2, seed=0)
    assert split['level'] == 'slice' and len(split['val']) == 48
    train, val = select(slices, split, 'train'), select(slices, split, 'val')
    assert not {s.path for s in train} & {s.path for s in val}
    assert {s.scan for s in train} & {s.scan for s in val}  # the leak it exists to reproduce
    assert split == split_slices(slices, 0.2, seed=0)


def test_a_slice_level_split_still_applies_when_the_data_moves(synth, tmp_path):
    import shutil

    split = split_slices(scan_split(synth, 'train'), 0.34, seed=0)
    assert all(
        key.count('/') == 2 and key.startswith('train/') for key in split['train'] + split['val']
    )
    moved = shutil.copytree(synth, tmp_path / 'elsewhere' / 'AD_NC')
    val = select(scan_split(moved, 'train'), json.loads(json.dumps(split)), 'val')
    assert sorted(data.slice_key(s.path) for s in val) == sorted(split['val'])
    assert all(s.path.startswith(str(moved)) for s in val)


# -------------------------------------------------------------------------------- transforms, cache


def test_eval_transform_is_timms(synth, model):
    train_tf, eval_tf = build_transforms(model)
    timm_tf = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    img = read_image(scan_split(synth, 'test')[0].path)
    assert torch.equal(eval_tf(img), timm_tf(img))
    assert eval_tf(img).shape == (1, 64, 64)
    assert train_tf(img).shape == (1, 64, 64)


@pytest.mark.parametrize(
    'augment',
    [
        dict(color_jitter=0.4),
        dict(auto_augment='rand-m9-mstd0.5-inc1'),
        dict(auto_augment='original'),
        dict(auto_augment='augmix-m3'),
        dict(re_prob=1.0),
    ],
)
def test_train_augmentations_work_on_grayscale(synth, model, augment):
    train_tf, _ = build_transforms(model, scale=(0.5, 1.0), **augment)
    img = read_image(scan_split(synth, 'train')[0].path)
    torch.manual_seed(0)
    outs = [train_tf(img) for _ in range(4)]
    assert all(o.shape == (1, 64, 64) and o.dtype == torch.float32 for o in outs)
    assert not torch.equal(outs[0], outs[1])


def test_full_strength_posterize_does_not_crash(synth, model):
    # timm asks PIL for 0 bits at magnitude 10; Pillow raises ValueError. n10: every op, every image
    train_tf, _ = build_transforms(model, auto_augment='rand-m10-n10-inc1')
    posterize = [op for op in train_tf.transforms[2].ops if op.name == 'PosterizeIncreasing']
    assert posterize and posterize[0].level_fn(10, posterize[0].hparams) == (1,)
    img = read_image(scan_split(synth, 'train')[0].path)
    for _ in range(20):
        assert train_tf(img).shape == (1, 64, 64)
    pickle.loads(pickle.dumps(train_tf))  # still picklable for spawn-started loader workers


def test_transform_config_errors(model):
    with pytest.raises(ValueError, match='not a timm policy'):
        build_transforms(model, auto_augment='trivial')
    rgb_stats = timm.create_model(
        'adni_convnext_atto', pretrained_cfg_overlay=dict(mean=(0.5,) * 3, std=(0.5,) * 3)
    )
    with pytest.raises(ValueError, match=r'input_size \(1, 224, 224\) but mean'):
        build_transforms(rgb_stats)


def test_cache_gives_the_same_tensors_as_disk(synth, model):
    slices = scan_split(synth, 'train')
    _, eval_tf = build_transforms(model)
    cache = preload(slices)
    assert isinstance(cache, SliceCache) and len(cache) == len(slices)
    assert cache.images.dtype == np.uint8 and cache.images.flags['C_CONTIGUOUS']
    assert cache.images.shape == (len(slices), 240, 256)
    from_disk, from_cache = (
        SliceDataset(slices, eval_tf),
        SliceDataset(slices, eval_tf, cache=cache),
    )
    for i in range(len(slices)):
        (a, la), (b, lb) = from_disk[i], from_cache[i]
        assert torch.equal(a, b) and la == lb == slices[i].label
    assert from_cache.labels == [s.label for s in slices]
    with pytest.raises(DataError, match='not in the cache'):
        SliceDataset(scan_split(synth, 'test'), eval_tf, cache=cache)


# ------------------------------------------------------------------------------------------ loaders


def _order(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch]


def test_loader_shuffle_order_is_reproducible():
    dataset = torch.arange(40)
    a, b = (
        create_loader(dataset, 8, shuffle=True, seed=0),
        create_loader(dataset, 8, shuffle=True, seed=0),
    )
    first_epoch = _order(a)
    assert first_epoch == _order(b) and sorted(first_epoch) == list(range(40))
    assert _order(a) == _order(b) != first_epoch  # each epoch reshuffles, reproducibly
    assert _order(create_loader(dataset, 8, shuffle=True, seed=1)) != first_epoch
    assert _order(create_loader(dataset, 8, shuffle=False)) == list(range(40))


def test_loader_with_workers_and_cache(synth, model):
    slices = scan_split(synth, 'train')
    train_tf, _ = build_transforms(model)
    dataset = SliceDataset(slices, train_tf, cache=preload(slices))
    loader = create_loader(
        dataset, 6, shuffle=True, num_workers=2, drop_last=True, prefetch_factor=1
    )
    assert loader.persistent_workers and loader.prefetch_factor == 1
    batches = list(loader)
    assert len(batches) == 3 and batches[0][0].shape == (6, 1, 64, 64)
    assert sorted(int(y) for _, labels in batches for y in labels) == sorted(
        s.label for s in slices
    )
    assert not create_loader(dataset, 6, shuffle=False, num_workers=0).persistent_workers


# ---------------------------------------------------------------------------------------- check CLI


def test_check_cli_clean_set(synth, capsys):
    assert check_cli(['check', str(synth)]) == 0
    out = capsys.readouterr().out
    assert 'train  NC            3       9   3/3/3' in out
    assert 'test   AD            2       6   3/3/3' in out
    assert '256x240 (30)' in out and 'image modes: L (30)' in out
    assert 'no problems found' in out


def test_check_cli_lists_every_problem(broken, capsys):
    write_image(broken / 'test' / 'MCI' / '9_1.jpeg')
    # leaks scan 1 from train; colour
    write_image(broken / 'test' / 'NC' / '1_12.jpeg', mode='RGB')
    assert check_cli(['check', str(broken)]) == 1
    out = capsys.readouterr().out
    assert '4 problem(s)' in out
    for expected in (
        'unknown class folder',
        'appear in both train and test: 1',
        '7_1.jpeg: not an image',
        '8_1.jpeg: truncated',
        'note: 1 colour image(s)',
    ):
        assert expected in out


def test_check_cli_errors(tmp_path, capsys):
    # a DATA_DIR that does not exist is a usage error (2), like any refused input; 1 is for
    # problems found in data that is there
    with pytest.raises(SystemExit) as e:
        check_cli(['check', str(tmp_path / 'nowhere')])
    assert e.value.code == 2
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        check_cli(['check', str(tmp_path), '--classes', 'AD'])
    assert e.value.code == 2
    assert 'two distinct' in capsys.readouterr().err


@pytest.mark.slow
def test_the_rooms_public_names_load_on_first_use_and_unknown_names_fail_as_python_says():
    import subprocess
    import sys

    script = (
        'import sys, adni_timm.data as d, adni_timm.data.images\n'
        "heavy = ['adni_timm.data.' + m for m in ('loader', 'device', 'hub_datasets')]\n"
        'before = [m for m in heavy if m in sys.modules]\n'
        'd.SliceCache\n'
        "print(before, 'adni_timm.data.loader' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['[]', 'True']
    assert data.SliceCache is loader.SliceCache and 'SliceCache' in data.__all__
    with pytest.raises(AttributeError, match="module 'adni_timm.data' has no attribute 'Slices'"):
        data.Slices  # noqa: B018
