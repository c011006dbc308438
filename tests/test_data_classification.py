from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raykd.data.builtin import default_cache_dir, make_demo_classification
from raykd.data.classification import Cifar, Cub200, ImageFolder, TinyImageNet, open_dataset

RNG = np.random.default_rng(0)


def _save(path: Path, size: int = 8, mode: str = "RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)
    return pixels


def make_tinyimagenet(root: Path, wnids=("n02", "n01", "n03"), n_train: int = 3, n_val: int = 2) -> Path:
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tname of {w}\n" for w in wnids))
    lines = []
    for w in wnids:
        for j in range(n_train):
            _save(root / "train" / w / "images" / f"{w}_{j}.JPEG")
        for j in range(n_val):
            name = f"val_{w}_{j}.JPEG"
            _save(root / "val" / "images" / name)
            lines.append(f"{name}\t{w}\t0\t0\t7\t7\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


# --- TinyImageNet on the real 10-class copy ---------------------------------------------------------------


def test_tinyimagenet_real_counts_and_labels(shared_data):
    root = shared_data / "cls" / "tiny-imagenet-10"
    train, val = TinyImageNet(root, "train"), TinyImageNet(root, "val")
    assert (len(train), len(val)) == (5000, 500)
    wnids = sorted((root / "wnids.txt").read_text().split())
    assert train.classes == val.classes == wnids
    words = dict(line.split("\t", 1) for line in (root / "words.txt").read_text().splitlines())
    assert train.class_names == [words[w].strip() for w in wnids]
    assert np.bincount(train.targets).tolist() == [500] * 10
    assert np.bincount(val.targets).tolist() == [50] * 10
    for i in range(0, 5000, 97):
        assert train.classes[train.label(i)] == train.files[i].parent.parent.name
    annotated = dict(line.split("\t")[:2] for line in (root / "val" / "val_annotations.txt").read_text().splitlines())
    assert len(annotated) == 500
    for i in range(len(val)):
        assert val.classes[val.label(i)] == annotated[val.files[i].name]
    img, label = val[0]
    assert img.mode == "RGB" and img.size == (64, 64) and label == val.label(0)


def test_tinyimagenet_real_greyscale_becomes_rgb(shared_data):
    val = TinyImageNet(shared_data / "cls" / "tiny-imagenet-10", "val")
    originals = {}
    for i, f in enumerate(val.files):
        with Image.open(f) as im:
            if im.mode == "L":
                originals[i] = np.asarray(im)
    assert originals, "the real val split has a few greyscale images"
    for i, grey in originals.items():
        img, _ = val[i]
        assert img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), np.repeat(grey[..., None], 3, axis=2))


def test_real_check_and_fingerprint_identical_across_processes(shared_data):
    root = shared_data / "cls" / "tiny-imagenet-10"
    val = TinyImageNet(root, "val")
    val.check()
    code = (f"from raykd.data.classification import TinyImageNet; "
            f"print(TinyImageNet({str(root)!r}, 'val').fingerprint())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == val.fingerprint()
    assert TinyImageNet(root, "train").fingerprint() != val.fingerprint()


# --- TinyImageNet layout and errors on generated copies -----------------------------------------------------


def test_tinyimagenet_layout_sorted_classes_and_parent_root(tmp_path):
    make_tinyimagenet(tmp_path / "tiny-imagenet-200")
    ds = TinyImageNet(tmp_path, "val")  # the directory containing tiny-imagenet-200 is accepted
    assert ds.root == tmp_path / "tiny-imagenet-200"
    assert ds.classes == ["n01", "n02", "n03"]
    assert ds.class_names == ["name of n01", "name of n02", "name of n03"]
    assert [ds.classes[t] for t in ds.targets] == [f.name.split("_")[1] for f in ds.files]


def test_fingerprint_tracks_content_not_location(tmp_path):
    root = make_tinyimagenet(tmp_path / "a")
    train, val = TinyImageNet(root, "train"), TinyImageNet(root, "val")
    before = val.fingerprint()
    assert TinyImageNet(root, "val").fingerprint() == before
    assert train.fingerprint() != before

    shutil.copytree(root, tmp_path / "b")
    assert TinyImageNet(tmp_path / "b", "val").fingerprint() == before

    changed = val.files[0]
    changed.write_bytes(changed.read_bytes() + b"\0")
    assert TinyImageNet(root, "val").fingerprint() != before

    # relabelling keeps every file size but moves a sample to another class
    ann = tmp_path / "b" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text().replace("val_n01_0.JPEG\tn01", "val_n01_0.JPEG\tn02"))
    assert TinyImageNet(tmp_path / "b", "val").fingerprint() != before


def test_the_listing_the_fingerprint_is_kept_under_tracks_place_and_mtimes(tmp_path):
    """The listing names the files where they are, with their mtimes: a copy elsewhere or a touched file is another
    listing (its fingerprint is computed again) while the fingerprint, which names the content, stays."""
    root = make_tinyimagenet(tmp_path / "a")
    val = TinyImageNet(root, "val")
    listing, fingerprint = val.listing(), val.fingerprint()
    assert TinyImageNet(root, "val").listing() == listing and TinyImageNet(root, "train").listing() != listing
    shutil.copytree(root, tmp_path / "b")
    copy = TinyImageNet(tmp_path / "b", "val")
    assert copy.listing() != listing and copy.fingerprint() == fingerprint
    stat = val.files[1].stat()
    os.utime(val.files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = TinyImageNet(root, "val")
    assert touched.listing() != listing and touched.fingerprint() == fingerprint


def test_tinyimagenet_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TinyImageNet(tmp_path / "nowhere")
    root = make_tinyimagenet(tmp_path / "t")
    with pytest.raises(ValueError, match="'test'"):
        TinyImageNet(root, "test")

    ann = root / "val" / "val_annotations.txt"
    good = ann.read_text()
    ann.write_text(good + "val_extra.JPEG\tn99\t0\t0\t7\t7\n")
    with pytest.raises(ValueError, match=r"n99.*wnids\.txt"):
        TinyImageNet(root, "val")
    ann.write_text(good + "val_missing.JPEG\tn01\t0\t0\t7\t7\n")
    with pytest.raises(FileNotFoundError, match="val_missing.JPEG"):
        TinyImageNet(root, "val")
    ann.unlink()
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        TinyImageNet(root, "val")

    (root / "train" / "n77" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="n77"):
        TinyImageNet(root, "train")

    empty = tmp_path / "empty"
    (empty / "train" / "n01" / "images").mkdir(parents=True)
    (empty / "wnids.txt").write_text("n01\n")
    with pytest.raises(ValueError, match="no training images"):
        TinyImageNet(empty, "train")
    (empty / "wnids.txt").unlink()
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        TinyImageNet(empty, "train")


def test_check_names_the_unreadable_image(tmp_path):
    root = make_tinyimagenet(tmp_path / "t")
    ds = TinyImageNet(root, "train")
    ds.check()
    bad = ds.files[4]
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=str(bad)):
        TinyImageNet(root, "train").check()


# --- CIFAR in the official pickle format ----------------------------------------------------------------------


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The official files are Python 2 pickles with bytes keys, protocol 2.
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_cifar10(root: Path, rows: int = 3) -> tuple[np.ndarray, list[int]]:
    base = root / "cifar-10-batches-py"
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _pickle(base / "batches.meta", {b"label_names": names, b"num_cases_per_batch": rows, b"num_vis": 3072})
    all_data, all_labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = RNG.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = [int(x) for x in RNG.integers(0, 10, rows)]
        _pickle(base / name, {b"batch_label": f"batch {i}".encode(), b"labels": labels, b"data": data,
                              b"filenames": [f"img_{i}_{r}.png".encode() for r in range(rows)]})
        all_data.append(data)
        all_labels += labels
    return np.concatenate(all_data), all_labels


def test_cifar10_pickles_decode_planes_and_labels(tmp_path):
    data, labels = make_cifar10(tmp_path)
    train, test = Cifar(tmp_path, "train"), Cifar(tmp_path / "cifar-10-batches-py", "val", num_classes=10)
    assert (len(train), len(test), test.split) == (15, 3, "test")
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and train.kind == "cifar10"
    assert train.targets == labels[:15] and test.targets == labels[15:]
    for i, y, x in [(0, 0, 0), (7, 5, 31), (14, 31, 2)]:
        img, label = train[i]
        expected = [data[i][c * 1024 + y * 32 + x] for c in range(3)]  # R plane, G plane, B plane, row-major
        assert list(img.getpixel((x, y))) == expected and img.mode == "RGB" and label == labels[i]
    train.check()


def test_cifar100_fine_labels_and_errors(tmp_path):
    base = tmp_path / "cifar-100-python"
    fine = [f"class{i:03d}".encode() for i in range(100)]
    _pickle(base / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})
    data = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
    _pickle(base / "train", {b"data": data, b"fine_labels": [0, 99, 5, 42], b"coarse_labels": [0, 19, 1, 2],
                             b"filenames": [b"a"] * 4, b"batch_label": b"training batch 1 of 1"})
    ds = Cifar(tmp_path, "train", num_classes=100)
    assert ds.targets == [0, 99, 5, 42] and ds.classes[99] == "class099" and ds.kind == "cifar100"
    before = ds.fingerprint()

    with pytest.raises(FileNotFoundError, match="test"):
        Cifar(tmp_path, "test", num_classes=100)
    _pickle(base / "train", {b"data": data, b"fine_labels": [0, 100, 5, 42]})
    with pytest.raises(ValueError, match=r"cifar-100-python/train: label 100"):
        Cifar(tmp_path, "train", num_classes=100)
    _pickle(base / "train", {b"data": data[:3], b"fine_labels": [0, 1, 5]})
    assert Cifar(tmp_path, "train", num_classes=100).fingerprint() != before
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 class names.*batches\.meta"):
        Cifar(tmp_path / "cifar-100-python", "train", num_classes=10)


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    _pickle(tmp_path / "cifar-10-batches-py" / "test_batch", Exploit())
    with pytest.raises(pickle.UnpicklingError, match="system"):
        Cifar(tmp_path, "test")
    assert not marker.exists()


# --- ImageFolder and CUB-200-2011 --------------------------------------------------------------------------


def test_imagefolder_classes_from_train_and_file_filtering(tmp_path):
    for cls, n in (("beta", 2), ("alpha", 3)):
        for j in range(n):
            _save(tmp_path / "train" / cls / f"{j}.jpg")
    _save(tmp_path / "train" / "alpha" / "nested" / "deep.PNG")
    (tmp_path / "train" / "alpha" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "alpha" / "._0.jpg").write_bytes(b"macOS resource fork")
    _save(tmp_path / "val" / "beta" / "v.jpeg")
    train, val = ImageFolder(tmp_path, "train"), ImageFolder(tmp_path, "val")
    assert train.classes == val.classes == ["alpha", "beta"]
    assert len(train) == 6 and train.targets == [0, 0, 0, 0, 1, 1]
    assert train.files[3].name == "deep.PNG"
    assert val.targets == [1]  # beta keeps index 1 although val has no alpha
    _save(tmp_path / "val" / "gamma" / "g.jpg")
    with pytest.raises(ValueError, match="gamma"):
        ImageFolder(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="test"):
        ImageFolder(tmp_path, "test")


def make_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    (base / "images").mkdir(parents=True)
    (base / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    images, labels, split = [], [], []
    image_id = 0
    for c, name in enumerate(classes):
        for j in range(4):
            image_id += 1
            rel = f"{name}/{name.split('.')[1]}_{j:04d}.jpg"
            _save(base / "images" / rel)
            images.append(f"{image_id} {rel}\n")
            labels.append(f"{image_id} {c + 1}\n")
            split.append(f"{image_id} {int(j < 3)}\n")
    (base / "images.txt").write_text("".join(images))
    (base / "image_class_labels.txt").write_text("".join(labels))
    (base / "train_test_split.txt").write_text("".join(split))
    return base


def test_cub200_own_layout(tmp_path):
    base = make_cub(tmp_path)
    train, test = Cub200(tmp_path, "train"), Cub200(base, "test")
    assert (len(train), len(test)) == (9, 3)
    assert train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2] and test.targets == [0, 1, 2]
    assert train.class_names == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert test.files[1].name == "Laysan_Albatross_0003.jpg"
    assert Cub200(base, "val").targets == test.targets

    labels = base / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("12 3", "12 4"))
    with pytest.raises(ValueError, match=r"class 4.*classes.txt"):
        Cub200(base, "test")
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"image id 12"):
        Cub200(base, "test")
    (base / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_test_split.txt"):
        Cub200(base, "train")


def test_open_dataset_kinds(tmp_path):
    make_tinyimagenet(tmp_path / "tin")
    make_cifar10(tmp_path / "c10")
    make_cub(tmp_path / "cub")
    assert isinstance(open_dataset("tinyimagenet", tmp_path / "tin", "val"), TinyImageNet)
    assert open_dataset("cifar10", tmp_path / "c10", "test").kind == "cifar10"
    assert isinstance(open_dataset("cub200", tmp_path / "cub", "test"), Cub200)
    assert isinstance(open_dataset("imagefolder", tmp_path / "cub" / "CUB_200_2011", "images"), ImageFolder)
    with pytest.raises(KeyError, match="unknown cls dataset 'imagenet21k'.*cifar10"):
        open_dataset("imagenet21k", tmp_path)
    with pytest.raises(KeyError, match="unknown cls dataset 'div2k'"):  # an SR dataset is not a cls one
        open_dataset("div2k", tmp_path)
    with pytest.raises(ValueError, match="root"):
        open_dataset("cub200", None)


# --- built-in digits demo ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    make_demo_classification(cache / "datasets" / "digits-32")
    return cache


def test_demo_is_sklearn_digits_in_tinyimagenet_layout(demo_cache):
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = demo_cache / "datasets" / "digits-32"
    train, val = open_dataset("demo", root, "train"), open_dataset("demo", root, "val")
    assert isinstance(train, TinyImageNet) and train.classes == [f"digit{d}" for d in range(10)]
    assert train.class_names[3] == "three"
    counts = np.bincount(digits.target)
    assert np.bincount(val.targets).tolist() == [-(-n // 6) for n in counts]
    assert (np.bincount(train.targets) + np.bincount(val.targets)).tolist() == counts.tolist()
    for i in (0, 101, len(val) - 1):
        n = int(val.files[i].stem.split("_")[1])
        assert val.label(i) == digits.target[n]
        img, _ = val[i]
        assert img.size == (32, 32) and img.mode == "RGB"
        # averaging 4x4 blocks of the upscaled image recovers the 8x8 original up to interpolation
        small = np.asarray(img, dtype=float)[..., 0].reshape(8, 4, 8, 4).mean(axis=(1, 3))
        assert np.abs(small - digits.images[n] * 255 / 16).mean() < 20
    val.check()


def test_demo_build_is_idempotent_and_uses_the_cache_dir(demo_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("RAYKD_CACHE", str(demo_cache))
    assert Path(default_cache_dir()) == demo_cache
    root = demo_cache / "datasets" / "digits-32"
    marker, some_image = root / ".complete.json", next((root / "val" / "images").iterdir())
    stamps = (marker.stat().st_mtime_ns, some_image.stat().st_ino, some_image.stat().st_mtime_ns)
    fingerprint = TinyImageNet(root, "train").fingerprint()
    assert make_demo_classification() == root
    assert open_dataset("demo", split="train").fingerprint() == fingerprint
    assert (marker.stat().st_mtime_ns, some_image.stat().st_ino, some_image.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in root.parent.iterdir()) == ["digits-32"]  # no temporary directories left

    with pytest.raises(FileExistsError, match="image_size"):
        make_demo_classification(root, image_size=16)
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="occupied"):
        make_demo_classification(tmp_path / "occupied")

    monkeypatch.delenv("RAYKD_CACHE")
    assert Path(default_cache_dir()) == Path.home() / ".cache" / "raykd"
