"""Decoded splits (raykd.data.arrays): decode once, keep in the store, read back verified, rebuild when corrupt."""
from __future__ import annotations

import collections
import mmap
import pickle
import warnings
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raykd.config import DataConfig
from raykd.data import arrays as arrays_mod
from raykd.data import sr as sr_mod
from raykd.data.batches import ClassificationBatches
from raykd.data.arrays import ImageArrays, PairArrays, decode_split, load_split
from raykd.data.degrade import imresize, modcrop
from raykd.data.store import Ragged, Store, StoreCorruptionWarning

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


def _count_decodes(monkeypatch, decoder: str = "_decode_rows") -> list[int]:
    """Counts decodes of a classification split (into the store or into memory), or with ``"_decode_pairs"`` of
    an SR split."""
    calls: list[int] = []
    real = getattr(arrays_mod, decoder)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(arrays_mod, decoder, counted)
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
    # a map of the file this test damages in place (raykd never does: it renames): compare with a copy
    first = ImageArrays(first.images.copy(), first.labels.copy(), first.classes, first.key)
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
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["fingerprints"]  # no table, no temporary file


def _sr_folder(root: Path, sizes: dict[str, tuple[int, int]], grey: tuple[str, ...] = ()) -> Path:
    rng = np.random.default_rng(2)
    (root / "HR").mkdir(parents=True)
    for name, (h, w) in sizes.items():
        shape = (h, w) if name in grey else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / "HR" / f"{name}.png")
    return root


def _hr_folder(tmp_path: Path) -> DataConfig:
    """An HR-only SR folder of three images (one greyscale) at x3."""
    root = _sr_folder(tmp_path / "hr", {"a": (13, 10), "b": (8, 12), "g": (9, 9)}, grey=("g",))
    return DataConfig(task="sr", dataset="hr_folder", root=str(root), scale=3, patch_size=2)


def test_hr_only_sr_split_makes_its_lr_once_and_keeps_it(tmp_path, monkeypatch):
    data = _hr_folder(tmp_path)
    root = Path(data.root)
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


def test_an_sr_split_is_stored_as_raw_images_and_read_back_as_a_map_of_them(tmp_path):
    data = _hr_folder(tmp_path)
    decoded, store = decode_split(data, "train"), Store(tmp_path / "store")
    first = load_split(data, "train", store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_split(data, "train", Store(tmp_path / "store"))  # another process: read, not decoded
    for got in (first, again):  # both maps of the stored raw file, even the first (its buffers were let go)
        _assert_same(got, decoded)
        for rows, want in ((got.lr, decoded.lr), (got.hr, decoded.hr)):
            assert _mapped(rows.data) and not rows.data.flags.writeable and rows.dtype == np.uint8
            assert np.array_equal(rows.shapes, want.shapes) and rows.data.tobytes() == want.data.tobytes()
    # the raw file is the LR bytes, then the HR bytes from a 64-byte boundary; no image is in Parquet rows
    lr_end = -(-decoded.lr.data.nbytes // 64) * 64
    assert Path(store.raw_path(first.key)).stat().st_size == lr_end + decoded.hr.data.nbytes
    assert pq.read_schema(store.path(first.key)).names == ["grey"]
    # what Ray's object store receives (pickle 5, buffers out of band): each Ragged as three numpy arrays
    buffers: list[pickle.PickleBuffer] = []
    blob = pickle.dumps(again, protocol=5, buffer_callback=buffers.append)
    assert sum(b.raw().nbytes for b in buffers) == again.nbytes + again.grey.nbytes and len(buffers) == 7
    _assert_same(pickle.loads(blob, buffers=buffers), decoded)


def test_a_damaged_raw_sr_file_is_reported_and_rebuilt_identically(tmp_path, monkeypatch):
    data, store = _hr_folder(tmp_path), Store(tmp_path / "store")
    decoded = decode_split(data, "train")  # in memory: not a map of the file this test damages in place
    load_split(data, "train", store)
    raw = Path(store.raw_path(decoded.key))
    pixels = bytearray(raw.read_bytes())
    pixels[-5] ^= 0xFF  # a byte of the last HR image
    raw.write_bytes(bytes(pixels))  # same size, one byte changed: only the checksum can tell
    calls = _count_decodes(monkeypatch, "_decode_pairs")
    with pytest.warns(StoreCorruptionWarning, match=r"sha256 mismatch in raw column 'hr', block 0"):
        _assert_same(load_split(data, "train", store), decoded)
    assert len(calls) == 1 and raw.with_name(raw.name + ".corrupt").exists()
    raw.write_bytes(raw.read_bytes()[:-1])  # and a truncated one
    with pytest.warns(StoreCorruptionWarning, match=r"raw file .* has \d+ bytes"):
        _assert_same(load_split(data, "train", store), decoded)
    assert len(calls) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(load_split(data, "train", store), decoded)  # the rebuilt table is valid
    assert len(calls) == 2


def test_sr_pairs_are_decoded_into_their_final_buffers_as_the_list_path_made_them(tmp_path):
    data = _hr_folder(tmp_path)
    got = decode_split(data, "train")
    dataset = sr_mod.open_sr_dataset("hr_folder", data.root, 3)
    pairs = [dataset.pair(i) for i in range(len(dataset))]  # the path before: a list of images, concatenated
    for got_rows, rows in ((got.lr, [p[0] for p in pairs]), (got.hr, [p[1] for p in pairs])):
        want = Ragged.from_rows(rows)
        assert got_rows.data.tobytes() == want.data.tobytes() and got_rows.nbytes == want.nbytes
        assert np.array_equal(got_rows.offsets, want.offsets) and np.array_equal(got_rows.shapes, want.shapes)
        assert got_rows.dtype == want.dtype == np.uint8


@pytest.mark.parametrize("through_store", [False, True])
def test_an_sr_split_too_big_is_refused_before_any_image_is_decoded(tmp_path, monkeypatch, through_store):
    root = _sr_folder(tmp_path / "hr", {"a": (13, 10), "b": (8, 12)})
    data = DataConfig(task="sr", dataset="hr_folder", root=str(root), scale=3, patch_size=2)
    decoded = []
    read = sr_mod._read
    monkeypatch.setattr(sr_mod, "_read", lambda path: decoded.append(path) or read(path))
    # modcropped HR 12x9 and 6x12, LR 4x3 and 2x4, 3 channels; per Ragged 3 int64 offsets and 2 x 3 int64 shapes
    nbytes = (12 * 9 + 6 * 12 + 4 * 3 + 2 * 4) * 3 + 2 * (3 * 8 + 2 * 3 * 8)
    monkeypatch.setattr(arrays_mod, "MEMORY_BUDGET_BYTES", nbytes - 1)
    with pytest.raises(arrays_mod.DataMemoryError, match=rf"hr_folder train at x3 takes .*above the 0\.00 GiB"):
        load_split(data, "train", Store(tmp_path / "store") if through_store else None)
    assert decoded == []
    monkeypatch.setattr(arrays_mod, "MEMORY_BUDGET_BYTES", nbytes)  # exactly what it takes: decoded
    assert load_split(data, "train", Store(tmp_path / "store") if through_store else None).nbytes == nbytes
    assert len(decoded) == 2


def test_a_split_over_the_memory_budget_is_streamed_from_the_store(tmp_path, monkeypatch):
    """Above the budget a split is decoded into the store one block at a time and read back by block; without a
    store to stream through it is refused, naming the setting."""
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


def _old_decode(root: Path, split: str, size: int) -> np.ndarray:
    """The decode before issue 17: a list of per-image arrays (PIL RGB, bicubic to ``size``), then np.stack."""
    from raykd.data.classification import TinyImageNet

    dataset = TinyImageNet(root, split)
    rows = []
    for path in dataset.files:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        rows.append(np.asarray(rgb if rgb.size == (size, size) else rgb.resize((size, size),
                                                                              Image.Resampling.BICUBIC)))
    return np.stack(rows)


def test_block_by_block_decodes_equal_the_old_list_and_stack(tmp_path, monkeypatch):
    root = _tinyimagenet(tmp_path / "tin")
    calls = _count_decodes(monkeypatch)
    monkeypatch.setattr(arrays_mod, "GROUP_BYTES", 5 * 8 * 8 * 3)  # blocks of 5 images: 5 + 5 + 2
    expected = _old_decode(root, "train", 8)
    in_memory = decode_split(_cls(root), "train")
    stored = load_split(_cls(root), "train", Store(tmp_path / "store"))
    assert len(calls) == 2 and _mapped(stored.images)
    assert np.array_equal(in_memory.images, expected) and np.array_equal(stored.images, expected)
    assert len(Store(tmp_path / "store").open(stored.key).raw_rows("images")) == 3


def test_the_memory_check_refuses_what_would_not_fit_naming_the_numbers(tmp_path, monkeypatch):
    data = _cls(_tinyimagenet(tmp_path / "tin"))
    nbytes = 12 * (8 * 8 * 3 + 8)
    calls = _count_decodes(monkeypatch)
    monkeypatch.setattr(arrays_mod, "PEAK_FIXED_BYTES", 2**30)
    monkeypatch.setattr(arrays_mod, "available_memory", lambda: 2**30 + nbytes)  # less than 1 GiB + 10% + split
    with pytest.raises(arrays_mod.DataMemoryError, match=r"peaks near 1\.00 GiB .* has 1\.00 GiB available: free "
                                                         r"memory, or lower RAYKD_DATA_MEMORY"):
        load_split(data, "train", Store(tmp_path / "store"))
    with pytest.raises(MemoryError, match="GiB available"):
        decode_split(data, "train")
    monkeypatch.setattr(arrays_mod, "available_memory", lambda: 2 * 2**30)
    assert arrays_mod.peak_bytes(nbytes) == int(nbytes * 1.1) + 2**30
    with pytest.raises(arrays_mod.DataMemoryError, match=r"takes 0\.00 GiB in memory and the object store has "
                                                         r"0\.00 GiB for it .*raise the object store"):
        load_split(data, "train", Store(tmp_path / "store"), object_store=nbytes - 1)
    assert not calls  # refused before decoding
    assert len(load_split(data, "train", Store(tmp_path / "store"), object_store=nbytes)) == 12 and calls == [1]


def _count_opens(monkeypatch) -> collections.Counter:
    """Counts scans of a TinyImageNet train split and computations of a fingerprint (its per-file facts) from
    now on: ``raykd.data.classification.OPENS``, fresh for the test."""
    from raykd.data import classification

    counts: collections.Counter = collections.Counter({"scans": 0, "fingerprints": 0})
    monkeypatch.setattr(classification, "OPENS", counts)
    return counts


def test_a_run_scans_once_and_the_fingerprint_is_kept_until_a_file_changes(tmp_path, monkeypatch):
    import os

    root = _tinyimagenet(tmp_path / "tin")
    data, counts = _cls(root), _count_opens(monkeypatch)
    calls = _count_decodes(monkeypatch)
    first = load_split(data, "train", Store(tmp_path / "store"))  # a fresh decode
    assert counts == {"scans": 1, "fingerprints": 1} and calls == [1]
    again = load_split(data, "train", Store(tmp_path / "store"))  # a later run: the fingerprint is kept
    assert counts == {"scans": 2, "fingerprints": 1} and again.key == first.key and calls == [1]
    touched = root / "train" / "n01" / "images" / "n01_1.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, new mtime
    assert load_split(data, "train", Store(tmp_path / "store")).key == first.key
    assert counts == {"scans": 3, "fingerprints": 2} and calls == [1]  # fingerprinted again, same content key
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "train" / "n01" / "images" / "n01_9.png")
    assert load_split(data, "train", Store(tmp_path / "store")).key != first.key
    assert counts == {"scans": 4, "fingerprints": 3} and calls == [1, 1]
