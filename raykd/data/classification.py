"""Image classification datasets in their published on-disk layouts.

Every dataset yields ``(PIL.Image in RGB, int label)`` and exposes ``classes`` (the class ids of the layout, e.g.
WordNet ids), ``class_names`` (human-readable where the layout has them), ``split`` and ``root``. Layout errors
(missing root or split files, a label outside the class list, an empty split) are raised at construction, before
any training starts; ``check()`` decodes every image for the errors only decoding finds.

``fingerprint()`` is a content key for caches of teacher outputs: a sha256 over the dataset kind, split, class
list and, in dataset order, every sample's relative path, file size and label (CIFAR: the pickle files' names and
sizes plus the labels). It does not depend on where the data lives, so copies on different machines agree; it
changes when a file is added, removed, relabelled or rewritten with a different size. It is computed once per
dataset object, from one stat pass over the files; ``listing()`` (file datasets) is a sha256 of the same facts plus
every file's mtime and the root, the key under which :mod:`raykd.data.arrays` keeps the fingerprint between runs.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from raykd.console import UserError
from raykd.data.builtin import make_demo_classification
from raykd.registry import DATASETS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_SHOWN_FOLDERS = 3  # empty class folders named in the error


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} does not exist")
    return path


def check_split(split: str, valid: Sequence[str], aliases: dict[str, str] | None = None) -> str:
    split = (aliases or {}).get(split, split)
    if split not in valid:
        extra = f" (or {', '.join(repr(a) for a in aliases)})" if aliases else ""
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(repr(v) for v in valid)}{extra}")
    return split


def _refuse_empty_classes(empty: list[Path], class_count: int, fix: str) -> None:
    """Refuse a training split in which some classes have no images (a class the model would be asked to predict
    without ever seeing it), naming the folders, before anything is decoded."""
    if empty:
        shown = ", ".join(str(d) for d in empty[:_SHOWN_FOLDERS])
        more = f" and {len(empty) - _SHOWN_FOLDERS} more" if len(empty) > _SHOWN_FOLDERS else ""
        raise UserError(f"no training images ({', '.join(IMAGE_EXTENSIONS)}) in {len(empty)} of {class_count} class "
                        f"folders: {shown}{more}; {fix}")


def is_image(name: str) -> bool:
    # Names starting with "." are hidden files such as macOS "._x.jpg" resource forks, which are not images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_stats(files: list[Path], root: Path) -> list[tuple[str, int, int]]:
    """``(path relative to root, POSIX form; size; mtime_ns)`` of each file (string slicing: pathlib's
    ``relative_to`` was a large share of a profiled 20k-file scan)."""
    prefix = os.path.join(str(root), "")
    out = []
    for f in files:
        name = str(f)
        rel = name[len(prefix):].replace(os.sep, "/") if name.startswith(prefix) else f.relative_to(root).as_posix()
        stat = os.stat(name)
        out.append((rel, stat.st_size, stat.st_mtime_ns))
    return out


def _read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


# what this process did to datasets on disk, for the benches and tests of "open once": "scans" (listings of a
# TinyImageNet train split's directories) and "fingerprints" (per-file facts of a file dataset's content key)
OPENS: collections.Counter[str] = collections.Counter()


class ClassificationDataset(Dataset):
    """Base of raykd's classification datasets: ``ds[i] -> (PIL RGB image, label)``."""

    kind: str  # a class attribute, except for Cifar whose kind depends on num_classes

    root: Path
    split: str
    classes: list[str]
    class_names: list[str]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return self.image(i), self.targets[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def label(self, i: int) -> int:
        return self.targets[i]

    def image(self, i: int) -> Image.Image:
        """Sample ``i`` decoded as an RGB image."""
        raise NotImplementedError

    def source(self, i: int) -> str:
        """Where sample ``i`` is stored, for error messages."""
        raise NotImplementedError

    def _content(self) -> dict[str, Any]:
        """The per-sample and per-file facts ``fingerprint`` hashes (JSON-able, root-independent)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 hex digest identifying this split's content (see the module docstring), computed once."""
        if "_fingerprint" not in self.__dict__:
            self._fingerprint = _digest({"kind": self.kind, "split": self.split, "classes": self.classes,
                                         **self._content()})
        return self._fingerprint

    def listing(self) -> str | None:
        """A sha256 of this split's files (root, relative paths, sizes, mtimes) and labels: what the fingerprint is
        kept under between runs (a touched or rewritten file changes it), or ``None`` for datasets that keep none."""
        return None

    def check(self) -> None:
        """Decode every image; raise ``ValueError`` naming the first one that cannot be read."""
        for i in range(len(self)):
            try:
                self.image(i)
            except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
                raise ValueError(f"unreadable image {self.source(i)}: {err}") from err

    def _validate(self) -> None:
        if not self.targets:
            raise ValueError(f"{self.kind} split {self.split!r} under {self.root} contains no images")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"{len(self)} images, {self.num_classes} classes)")


class _FileDataset(ClassificationDataset):
    """A dataset whose samples are image files below ``root``."""

    files: list[Path]

    def image(self, i: int) -> Image.Image:
        return _read_rgb(self.files[i])

    def source(self, i: int) -> str:
        return str(self.files[i])

    def _stats(self) -> list[tuple[str, int, int]]:
        """``(relative path, size, mtime_ns)`` of every sample's file: one stat pass, shared by the fingerprint and
        the listing."""
        if "_file_stats" not in self.__dict__:
            self._file_stats = _file_stats(self.files, self.root)
        return self._file_stats

    def _content(self) -> dict[str, Any]:
        OPENS["fingerprints"] += 1
        return {"samples": [[rel, size, t] for (rel, size, _), t in zip(self._stats(), self.targets)]}

    def listing(self) -> str:
        stats = self._stats()
        digest = hashlib.sha256(_digest({"root": str(self.root.resolve()), "kind": self.kind, "split": self.split,
                                         "classes": self.classes}).encode())
        digest.update("\0".join(rel for rel, _, _ in stats).encode())  # bytes, not JSON: half the time
        digest.update(np.array([(size, mtime) for _, size, mtime in stats], dtype=np.int64).tobytes())
        digest.update(np.asarray(self.targets, dtype=np.int64).tobytes())
        return digest.hexdigest()


class TinyImageNet(_FileDataset):
    """Tiny ImageNet in the original ``tiny-imagenet-200`` layout.

    ``root`` holds ``wnids.txt``, ``words.txt`` (optional: names), ``train/<wnid>/images/*.JPEG`` and
    ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``; a directory containing ``tiny-imagenet-200``
    is accepted too. Classes are the WordNet ids of ``wnids.txt`` in sorted order (the directory order that
    ImageFolder-style training, and so most published teachers, use). The test split has no labels and is not
    offered. Greyscale images are converted to RGB.
    """

    kind = "tinyimagenet"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        root = Path(root).expanduser()
        if not (root / "wnids.txt").exists() and (root / "tiny-imagenet-200" / "wnids.txt").exists():
            root = root / "tiny-imagenet-200"
        self.root = require_dir(root, "TinyImageNet root")
        self.split = check_split(split, ("train", "val"))
        wnids_file = require_file(root / "wnids.txt", "TinyImageNet class list")
        self.classes = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
        if not self.classes:
            raise ValueError(f"TinyImageNet class list {wnids_file} is empty")
        names = self._read_words(root / "words.txt")
        self.class_names = [names.get(w, w) for w in self.classes]
        index = {w: c for c, w in enumerate(self.classes)}
        self.files, self.targets = self._scan_train(index) if self.split == "train" else self._scan_val(index)
        self._validate()

    @staticmethod
    def _read_words(path: Path) -> dict[str, str]:
        if not path.is_file():
            return {}
        words = {}
        for line in path.read_text().splitlines():
            wnid, _, name = line.partition("\t")
            words[wnid.strip()] = name.strip()
        return words

    def _scan_train(self, index: dict[str, int]) -> tuple[list[Path], list[int]]:
        OPENS["scans"] += 1
        train = require_dir(self.root / "train", "TinyImageNet train split")
        unknown = sorted(d.name for d in train.iterdir() if d.is_dir() and d.name not in index)
        if unknown:
            raise ValueError(f"{train} has class directories {unknown[:5]} that are not in {self.root / 'wnids.txt'}")
        files, targets, empty = [], [], []
        for wnid, c in index.items():
            images = require_dir(train / wnid / "images", f"images of class {wnid}")
            found = [images / name for name in sorted(os.listdir(images)) if is_image(name)]  # Paths' order
            files += found
            targets += [c] * len(found)
            if not found:
                empty.append(images)
        _refuse_empty_classes(empty, len(index), "put each class's images in its folder, or remove the class (its "
                              f"train/<wnid> folder and its line in {self.root / 'wnids.txt'})")
        return files, targets

    def _scan_val(self, index: dict[str, int]) -> tuple[list[Path], list[int]]:
        val = require_dir(self.root / "val", "TinyImageNet val split")
        annotations = require_file(val / "val_annotations.txt", "TinyImageNet val labels")
        labelled = []
        for n, line in enumerate(annotations.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(f"{annotations} line {n}: expected '<file>\\t<wnid>\\t...', got {line!r}")
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in index:
                raise ValueError(f"{annotations} line {n}: wnid {wnid!r} is not in {self.root / 'wnids.txt'}")
            path = val / "images" / name
            if not path.is_file():
                raise FileNotFoundError(f"{annotations} line {n} names {path}, which does not exist")
            labelled.append((name, path, index[wnid]))
        labelled.sort()
        return [p for _, p, _ in labelled], [t for _, _, t in labelled]


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of numpy arrays, lists, bytes) and refuses anything else.

    The official files are Python pickles; this keeps a tampered download from running code on load.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR pickle refers to {module}.{name}, which a data batch never contains")
        if module == "numpy.core.multiarray":  # numpy>=2 moved it; the old path only warns
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _load_pickle(path: Path, what: str) -> dict[str, Any]:
    with open(require_file(path, what), "rb") as f:
        obj = _SafeUnpickler(f, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR batch: it holds a {type(obj).__name__}, not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values: Sequence[bytes | str]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class Cifar(ClassificationDataset):
    """CIFAR-10 / CIFAR-100 from the official python-pickle archives.

    ``root`` is ``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or
    ``cifar-100-python`` (``train``, ``test``, ``meta``; fine labels), or a directory containing it. ``split`` is
    ``"train"`` or ``"test"``; ``"val"`` means the test set, the split CIFAR results are reported on.
    Each row of ``data`` is 3072 bytes: the 32x32 red plane, then green, then blue, each row-major.
    """

    _LAYOUT = {
        10: ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
             "batches.meta", "label_names", "labels"),
        100: ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta", "fine_label_names", "fine_labels"),
    }

    def __init__(self, root: str | os.PathLike, split: str = "train", num_classes: int = 10) -> None:
        if num_classes not in self._LAYOUT:
            raise ValueError(f"num_classes={num_classes!r}: CIFAR has 10 or 100 classes")
        folder, splits, meta_name, names_key, labels_key = self._LAYOUT[num_classes]
        self.kind = f"cifar{num_classes}"
        root = Path(root).expanduser()
        if (root / folder).is_dir():
            root = root / folder
        self.root = require_dir(root, f"CIFAR-{num_classes} root ({folder})")
        self.split = check_split(split, ("train", "test"), {"val": "test"})
        meta = _load_pickle(root / meta_name, f"CIFAR-{num_classes} class names")
        if names_key not in meta:
            raise ValueError(f"{root / meta_name} has no {names_key!r} entry (keys: {sorted(meta)})")
        self.classes = _names(meta[names_key])
        if len(self.classes) != num_classes:
            raise ValueError(f"{root / meta_name} lists {len(self.classes)} classes, expected {num_classes}")
        self.class_names = list(self.classes)
        self._files = splits[self.split]
        data, targets, self._rows = [], [], []
        for name in self._files:
            path = root / name
            batch = _load_pickle(path, f"CIFAR-{num_classes} {self.split} batch")
            if "data" not in batch or labels_key not in batch:
                raise ValueError(f"{path} lacks 'data' or {labels_key!r} (keys: {sorted(batch)})")
            rows = np.asarray(batch["data"], dtype=np.uint8)
            labels = [int(t) for t in batch[labels_key]]
            if rows.ndim != 2 or rows.shape[1] != 3072 or len(rows) != len(labels):
                raise ValueError(f"{path}: data has shape {rows.shape} for {len(labels)} labels, "
                                 "expected (N, 3072) with one label per row")
            bad = [t for t in labels if not 0 <= t < num_classes]
            if bad:
                raise ValueError(f"{path}: label {bad[0]} is outside the {num_classes} classes of {root / meta_name}")
            data.append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            targets += labels
            self._rows += [(name, r) for r in range(len(labels))]
        self.data = np.ascontiguousarray(np.concatenate(data)) if data else np.zeros((0, 32, 32, 3), np.uint8)
        self.targets = targets
        self._validate()

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.data[i], mode="RGB")

    def source(self, i: int) -> str:
        name, row = self._rows[i]
        return f"{self.root / name}[row {row}]"

    def _content(self) -> dict[str, Any]:
        return {"files": [[n, (self.root / n).stat().st_size] for n in self._files], "labels": self.targets}


class ImageFolder(_FileDataset):
    """The generic fine-grained layout ``root/<split>/<class>/**/*.{jpg,jpeg,png,...}``.

    The class list is the sorted class folders of ``root/train`` when it exists, so every split indexes the same
    list even when a val or test split lacks a class; a class folder that ``train`` does not have is an error.
    """

    kind = "imagefolder"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = require_dir(Path(root).expanduser(), "ImageFolder root")
        self.split = split
        split_dir = require_dir(self.root / split, f"ImageFolder split {split!r}")
        reference = self.root / "train" if (self.root / "train").is_dir() else split_dir
        self.classes = sorted(d.name for d in reference.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.class_names = list(self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        self.files, self.targets, empty = [], [], []
        for d in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if d.name not in index:
                raise ValueError(f"class folder {d} is not one of the classes of {reference}: {self.classes}")
            before = len(self.files)
            for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
                dirnames.sort()
                found = [Path(dirpath) / n for n in sorted(filenames) if is_image(n)]
                self.files += found
                self.targets += [index[d.name]] * len(found)
            if len(self.files) == before:
                empty.append(d)
        if split == "train":  # the class list; another split may lack a class
            _refuse_empty_classes(empty, len(self.classes), "put images in each, or remove the folder")
        self._validate()


class Cub200(_FileDataset):
    """Caltech-UCSD Birds-200-2011 in its own layout.

    ``root`` is ``CUB_200_2011`` (or a directory containing it) with ``images.txt`` (``<id> <path>``),
    ``image_class_labels.txt`` (``<id> <class id, 1-based>``), ``train_test_split.txt`` (``<id> <1 = train>``),
    ``classes.txt`` (``<class id> <NNN.Name>``) and ``images/``. ``split`` is ``"train"`` or ``"test"`` (``"val"``
    means test: CUB has no separate validation set). Samples follow ``images.txt`` order.
    """

    kind = "cub200"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        root = Path(root).expanduser()
        if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
            root = root / "CUB_200_2011"
        self.root = require_dir(root, "CUB-200-2011 root")
        self.split = check_split(split, ("train", "test"), {"val": "test"})
        class_rows = self._table("classes.txt")
        ids = [int(k) for k in class_rows]
        if sorted(ids) != list(range(1, len(ids) + 1)):
            raise ValueError(f"{root / 'classes.txt'} must number its classes 1..N, got ids {sorted(ids)[:5]}...")
        self.classes = [class_rows[str(i)] for i in range(1, len(ids) + 1)]
        # "001.Black_footed_Albatross" -> "Black footed Albatross"
        self.class_names = [c.split(".", 1)[-1].replace("_", " ") for c in self.classes]
        paths = self._table("images.txt")
        labels = self._table("image_class_labels.txt")
        is_train = self._table("train_test_split.txt")
        want = "1" if self.split == "train" else "0"
        self.files, self.targets = [], []
        for image_id, rel in paths.items():
            for table, name in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
                if image_id not in table:
                    raise ValueError(f"{root / name} has no entry for image id {image_id} ({rel})")
            if is_train[image_id] != want:
                continue
            label = int(labels[image_id])
            if not 1 <= label <= len(self.classes):
                raise ValueError(f"{root / 'image_class_labels.txt'}: image {image_id} has class {label}, "
                                 f"outside 1..{len(self.classes)} of {root / 'classes.txt'}")
            path = root / "images" / rel
            if not path.is_file():
                raise FileNotFoundError(f"{root / 'images.txt'} lists image {image_id} at {path}, which does not exist")
            self.files.append(path)
            self.targets.append(label - 1)
        self._validate()

    def _table(self, name: str) -> dict[str, str]:
        path = require_file(self.root / name, f"CUB-200-2011 {name}")
        table = {}
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            key, _, value = line.strip().partition(" ")
            if not value:
                raise ValueError(f"{path} line {n}: expected '<id> <value>', got {line!r}")
            table[key] = value.strip()
        return table


@DATASETS.register(name="tinyimagenet", scope="cls")
def tinyimagenet(root: str | os.PathLike, split: str) -> TinyImageNet:
    return TinyImageNet(root, split)


@DATASETS.register(name="cifar10", scope="cls")
def cifar10(root: str | os.PathLike, split: str) -> Cifar:
    return Cifar(root, split, num_classes=10)


@DATASETS.register(name="cifar100", scope="cls")
def cifar100(root: str | os.PathLike, split: str) -> Cifar:
    return Cifar(root, split, num_classes=100)


@DATASETS.register(name="imagefolder", scope="cls")
def imagefolder(root: str | os.PathLike, split: str) -> ImageFolder:
    return ImageFolder(root, split)


@DATASETS.register(name="cub200", scope="cls")
def cub200(root: str | os.PathLike, split: str) -> Cub200:
    return Cub200(root, split)


@DATASETS.register(name="demo", scope="cls")
def demo(root: str | os.PathLike | None, split: str) -> TinyImageNet:
    """The built-in digits demo in the TinyImageNet layout (:func:`raykd.data.builtin.make_demo_classification`;
    ``root`` optional: default under the cache directory)."""
    return TinyImageNet(make_demo_classification(root), split)


def open_dataset(kind: str, root: str | os.PathLike | None = None, split: str = "train") -> ClassificationDataset:
    """Open a classification dataset: a registered kind (:data:`raykd.registry.DATASETS`, scope ``"cls"``:
    tinyimagenet, cifar10, cifar100, imagefolder, cub200, demo) or a plugin ``"pkg.mod:fn"`` called as
    ``fn(root, split)``. Every kind but ``demo`` needs ``root``."""
    opener = DATASETS.get(kind, scope="cls")
    if root is None and kind != "demo":
        raise ValueError(f"dataset {kind!r} needs a root directory (data.root); only 'demo' builds its own")
    return opener(root, split)
