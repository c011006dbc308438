"""Decoded splits (raykd.data.arrays): decode once, keep in the store, read back verified, rebuild when corrupt."""
from __future__ import annotations

import mmap
import warnings
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image

from raykd.config import DataConfig
from raykd.data import arrays as arrays_mod
from raykd.data import sr as sr_mod
from raykd.data.batches import ClassificationBatches
from raykd.data.arrays import ImageArrays, PairArrays, decode_split, load_split
from raykd.data.degrade import imresize, modcrop
from raykd.data.store import Store, StoreCorruptionWarning

WNIDS = ("n02", "n01", "n03")


def _tinyimagenet(root: Path, size: int = 12, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """A TinyImageNet-layout tree of random images (one greyscale per class) of ``size`` px."""
    rng = np.random.default_rng(seed)
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    lines = []
    for w in WNIDS:
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        for j in range(n_train):
            shape = (size, size) if j == 0 else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{w}_{j}.png")
        for j in range(n_val):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / "val" / "images" / f"val_{w}_{j}.png")
            lines.append(f"val_{w}_{j}.png\t{w}\t0\t0\t1\t1\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


def _cls(root: Path, size: int = 8) -> DataConfig:
    return DataConfig(task="cls", dataset="tinyimagenet", root=str(root), image_size=size)


def _assert_same(a, b) -> None:
    assert type(a) is type(b) and a.key == b.key and len(a) == len(b)
    if isinstance(a, ImageArrays):
        assert a.classes == b.classes
        assert a.images.dtype == b.images.dtype == np.uint8 and np.array_equal(a.images, b.images)
        assert a.labels.dtype == b.labels.dtype == np.int64 and np.array_equal(a.labels, b.labels)
    else:
        assert a.names == b.names and a.scale == b.scale and np.array_equal(a.grey, b.grey)
        for i in range(len(a)):
            assert np.array_equal(a.lr[i], b.lr[i]) and np.array_equal(a.hr[i], b.hr[i])


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is a view of a memory-mapped file (its ``base`` chain ends in an ``mmap.mmap``)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(getattr(base, "obj", base), mmap.mmap)


def _count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = arrays_mod.decode_split

    def counted(data, split):
        calls.append(1)
        return real(data, split)

    monkeypatch.setattr(arrays_mod, "decode_split", counted)
    return calls


def test_a_split_is_decoded_once_and_read_back_identical(tmp_path, monkeypatch):
    root = _tinyimagenet(tmp_path / "tin")
    data, store = _cls(root), Store(tmp_path / "store")
    calls = _count_decodes(monkeypatch)
    first = load_split(data, "train", store)
    assert len(calls) == 1 and store.open(first.key) is not None
    assert first.images.shape == (12, 8, 8, 3) and first.classes == ("n01", "n02", "n03")
    assert first.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # the decode itself: each file as RGB, bicubically resized to image_size (PIL)
    files = sorted((root / "train" / "n02" / "images").iterdir())
    for j, path in enumerate(files):
        with Image.open(path) as img:
            expected = np.asarray(img.convert("RGB").resize((8, 8), Image.Resampling.BICUBIC))
        assert np.array_equal(first.images[4 + j], expected)
    assert np.array_equal(first.images[4][..., 0], first.images[4][..., 2])  # the greyscale file, replicated

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_split(data, "train", Store(tmp_path / "store"))  # another process: read, not decoded
    assert len(calls) == 1
    _assert_same(first, again)
    assert not again.images.flags.writeable  # shared read-only
    # the images come back as a map of the stored raw file, exactly the array's size: read, not copied
    assert _mapped(again.images) and Path(store.raw_path(first.key)).stat().st_size == first.images.nbytes
    # the key names the content: another split or size is another table
    val = load_split(data, "val", store)
    bigger = load_split(_cls(root, 10), "train", store)
    assert len({first.key, val.key, bigger.key}) == 3 and len(calls) == 3
    assert len(val) == 6 and bigger.images.shape[1:] == (10, 10, 3)
    _assert_same(decode_split(data, "train"), first)  # no store: just decoded
    assert load_split(data, "train", None).key == first.key


def test_a_corrupt_stored_split_is_reported_and_rebuilt_identically(tmp_path, monkeypatch):
    data, store = _cls(_tinyimagenet(tmp_path / "tin")), Store(tmp_path / "store")
    first = load_split(data, "train", store)
    path = Path(store.path(first.key))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    calls = _count_decodes(monkeypatch)
    with pytest.warns(StoreCorruptionWarning, match=str(path)):
        rebuilt = load_split(data, "train", store)
    assert len(calls) == 1
    _assert_same(rebuilt, first)
    assert path.with_name(path.name + ".corrupt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(load_split(data, "train", store), first)  # the rebuilt table is valid
    assert len(calls) == 1


def test_a_damaged_raw_image_file_is_reported_and_rebuilt_identically(tmp_path, monkeypatch):
    data, store = _cls(_tinyimagenet(tmp_path / "tin")), Store(tmp_path / "store")
    first = load_split(data, "train", store)
    raw = Path(store.raw_path(first.key))
    pixels = bytearray(raw.read_bytes())
    pixels[100] ^= 0xFF
    raw.write_bytes(bytes(pixels))  # same size, one byte changed: only the checksum can tell
    calls = _count_decodes(monkeypatch)
    with pytest.warns(StoreCorruptionWarning, match=r"sha256 mismatch in raw column 'images'"):
        rebuilt = load_split(data, "train", store)
    assert len(calls) == 1 and raw.with_name(raw.name + ".corrupt").exists()
    _assert_same(rebuilt, first)
    raw.write_bytes(raw.read_bytes()[:-1])  # and a truncated one
    with pytest.warns(StoreCorruptionWarning, match=r"raw file .* has \d+ bytes"):
        _assert_same(load_split(data, "train", store), first)
    assert len(calls) == 2


def test_a_split_round_trips_through_a_non_local_store(tmp_path):
    data = _cls(_tinyimagenet(tmp_path / "tin"))
    fs = pafs._MockFileSystem()
    first = load_split(data, "train", Store("bucket/store", filesystem=fs))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_split(data, "train", Store("bucket/store", filesystem=fs))
    _assert_same(again, first)
    assert not _mapped(again.images) and not again.images.flags.writeable
    assert fs.get_file_info(f"bucket/store/{first.key}.raw").size == first.images.nbytes


def test_the_memory_budget_counts_labels_as_well_as_images(tmp_path, monkeypatch):
    data = _cls(_tinyimagenet(tmp_path / "tin"))
    images = 12 * 8 * 8 * 3
    monkeypatch.setattr(arrays_mod, "MEMORY_BUDGET_BYTES", images + 12 * 8)  # images and int64 labels: fits
    assert decode_split(data, "train").nbytes == images + 12 * 8
    monkeypatch.setattr(arrays_mod, "MEMORY_BUDGET_BYTES", images)  # the images alone would fit; the split does not
    with pytest.raises(MemoryError, match="RAYKD_DATA_MEMORY"):
        decode_split(data, "train")


def test_an_unreadable_image_stops_decoding_and_names_the_file(tmp_path):
    root = _tinyimagenet(tmp_path / "tin")
    bad = root / "train" / "n03" / "images" / "n03_2.JPEG"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(bad, quality=95)
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # a truncated JPEG
    store = Store(tmp_path / "store")
    with pytest.raises(ValueError, match=rf"unreadable image {bad}"):
        load_split(_cls(root), "train", store)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())  # nothing stored


def _sr_folder(root: Path, sizes: dict[str, tuple[int, int]], grey: tuple[str, ...] = ()) -> Path:
    rng = np.random.default_rng(2)
    (root / "HR").mkdir(parents=True)
    for name, (h, w) in sizes.items():
        shape = (h, w) if name in grey else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / "HR" / f"{name}.png")
    return root


def test_hr_only_sr_split_makes_its_lr_once_and_keeps_it(tmp_path, monkeypatch):
    root = _sr_folder(tmp_path / "hr", {"a": (13, 10), "b": (8, 12), "g": (9, 9)}, grey=("g",))
    data = DataConfig(task="sr", dataset="hr_folder", root=str(root), scale=3, patch_size=2)
    store = Store(tmp_path / "store")
    first = load_split(data, "train", store)
    assert isinstance(first, PairArrays) and first.names == ("a", "b", "g") and first.scale == 3
    assert first.grey.tolist() == [False, False, True]
    for i, name in enumerate(first.names):
        with Image.open(root / "HR" / f"{name}.png") as img:
            hr = np.asarray(img.convert("RGB"))
        assert np.array_equal(first.hr[i], modcrop(hr, 3))
        assert np.array_equal(first.lr[i], imresize(modcrop(hr, 3), 1 / 3))
    assert first.lr_sizes(np.array([2, 0])).tolist() == [[3, 3], [4, 3]]

    def no_resize(*args, **kwargs):
        raise AssertionError("the LR inputs were made again")

    monkeypatch.setattr(sr_mod, "imresize", no_resize)
    _assert_same(load_split(data, "train", Store(tmp_path / "store")), first)
    with pytest.raises(AssertionError, match="made again"):
        decode_split(data, "train")  # the guard works: only the store spared the resize


def test_a_split_over_the_memory_budget_is_streamed_from_the_store(tmp_path, monkeypatch):
    """Above the budget a split is decoded into the store one block at a time and read back by block; without a
    store to stream through it is refused, naming the setting."""
    import pickle

    import torch

    from raykd.train.loop import shard_order

    data = _cls(_tinyimagenet(tmp_path / "tin"))
    whole = decode_split(data, "train")
    monkeypatch.setattr(arrays_mod, "MEMORY_BUDGET_BYTES", 12 * 8 * 8 * 3 - 1)
    monkeypatch.setattr(arrays_mod, "GROUP_BYTES", 5 * 8 * 8 * 3)  # row groups of 5 images
    with pytest.raises(MemoryError, match="RAYKD_DATA_MEMORY"):
        decode_split(data, "train")
    store = Store(tmp_path / "store")
    streamed = load_split(data, "train", store)
    assert isinstance(streamed, arrays_mod.StreamedImages) and len(streamed) == len(whole)
    assert streamed.groups == [(0, 5), (5, 10), (10, 12)]
    assert Path(store.raw_path(streamed.key)).stat().st_size == whole.images.nbytes
    index = np.array([11, 0, 7, 3, 7])
    assert np.array_equal(streamed.images[index], whole.images[index])
    assert np.array_equal(streamed.labels, whole.labels) and streamed.classes == whole.classes
    again = pickle.loads(pickle.dumps(streamed))  # what another process receives: the location, not the pixels
    assert len(pickle.dumps(streamed)) < whole.images.nbytes and np.array_equal(again.images[index],
                                                                                  whole.images[index])
    reloaded = load_split(data, "train", store)  # a second sweep streams what the first stored
    assert reloaded.key == streamed.key and np.array_equal(reloaded.images[np.arange(12)], whole.images)
    order = shard_order(12, seed=0, epoch=3, rank=0, world_size=1, groups=streamed.groups)
    assert sorted(order.tolist()) == list(range(12))
    visits = [g for k, g in enumerate(order // 5) if k == 0 or g != order[k - 1] // 5]
    assert sorted(visits) == [0, 1, 2]  # each group read once, as one run of its items
    views = ClassificationBatches(streamed, data, seed=1).batch(index, 2, torch.device("cpu"))
    expected = ClassificationBatches(whole, data, seed=1).batch(index, 2, torch.device("cpu"))
    assert torch.equal(views["hr"], expected["hr"])


def test_real_tinyimagenet_10_decodes_to_its_counts_in_rgb(shared_data, tmp_path):
    root = shared_data / "cls" / "tiny-imagenet-10"
    data = DataConfig(task="cls", dataset="tinyimagenet", root=str(root), image_size=64)
    # train is only decoded (storing 60 MB of JPEG pixels would dominate the test); val goes through the store
    train, val = decode_split(data, "train"), load_split(data, "val", Store(tmp_path / "store"))
    assert train.images.shape == (5000, 64, 64, 3) and val.images.shape == (500, 64, 64, 3)
    assert len(train.classes) == 10 and train.classes == val.classes == tuple(sorted(train.classes))
    assert np.bincount(train.labels).tolist() == [500] * 10 and np.bincount(val.labels).tolist() == [50] * 10
    _assert_same(load_split(data, "val", Store(tmp_path / "store")), val)
    # the greyscale files are in there, converted to RGB (three equal channels), with their pixels
    files = sorted((root / "train").rglob("*.JPEG"), key=lambda p: (train.classes.index(p.parts[-3]), p.name))
    grey = []
    for row, path in enumerate(files):
        with Image.open(path) as img:
            if img.mode == "L":
                grey.append((row, np.asarray(img)))
    assert len(grey) >= 5
    for row, pixels in grey:
        for channel in range(3):
            assert np.array_equal(train.images[row][..., channel], pixels), (files[row], channel)
    colour = next(r for r in range(len(files)) if r not in dict(grey))
    assert not np.array_equal(train.images[colour][..., 0], train.images[colour][..., 1])
