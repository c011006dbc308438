"""Decode once, share everywhere: a dataset split as compact uint8 arrays.

A sweep decodes each split once (JPEG/PNG decoding, resizing, MATLAB-bicubic LR for HR-only SR folders) into
:class:`ImageArrays` (classification) or :class:`PairArrays` (super-resolution), keeps it in the persistent store
(:mod:`raykd.data.store`, content-keyed by the dataset fingerprint and the decode settings, verified when read
back) and puts it in Ray's object store once; every trial, teacher actor and Train worker on a node then maps the
same copy (numpy arrays from the object store are zero-copy). A second sweep on the same data only reads the
store.

Memory: a split is held whole (TinyImageNet-200 train at 64 px is 1.2 GB). A split above
:data:`MEMORY_BUDGET_BYTES` (``$RAYKD_DATA_MEMORY``, default 8 GiB per split) is refused with the numbers, naming
the setting that raises it: it would not fit a node's object store (30% of its RAM by default) next to the
teacher tables.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from raykd.config import DataConfig
from raykd.data.classification import ClassificationDataset, open_dataset
from raykd.data.sr import SRDataset, open_sr_dataset
from raykd.data.store import Ragged, Store, content_key

__all__ = ["ImageArrays", "PairArrays", "MEMORY_BUDGET_BYTES", "load_split", "decode_split"]

DECODE_FORMAT = 1
MEMORY_BUDGET_BYTES = int(float(os.environ.get("RAYKD_DATA_MEMORY", 8 * 2**30)))


@dataclass(frozen=True)
class ImageArrays:
    """A classification split: ``images`` uint8 ``(N, S, S, 3)`` resized to ``S`` (bicubic, PIL), ``labels`` int64
    ``(N,)``, the ``classes`` ids, and ``key``, the content key it is stored under (it identifies the content)."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    key: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes


@dataclass(frozen=True)
class PairArrays:
    """A super-resolution split at ``scale``: per image its LR ``(h, w, 3)`` and modcropped HR ``(s*h, s*w, 3)``
    uint8 rows (:class:`raykd.data.store.Ragged`; greyscale replicated to three channels), whether the file was
    greyscale (measured on its own channel), its name, and the content ``key``."""

    lr: Ragged
    hr: Ragged
    grey: np.ndarray
    names: tuple[str, ...]
    scale: int
    key: str

    def __len__(self) -> int:
        return len(self.names)

    @property
    def nbytes(self) -> int:
        return self.lr.nbytes + self.hr.nbytes

    def lr_sizes(self, images: np.ndarray) -> np.ndarray:
        """``(B, 2)`` LR (rows, cols) of ``images``."""
        return self.lr.shapes[np.asarray(images), :2]


Arrays = ImageArrays | PairArrays


def _open(data: DataConfig, split: str) -> ClassificationDataset | SRDataset:
    """The dataset behind ``split`` ("train" or "val"): ``data.val_dataset``/``data.val_root`` name the val set
    when given (an SR benchmark folder, say), else the training dataset's own val split."""
    kind, root = data.dataset, data.root
    if split == "val" and (data.val_dataset is not None or data.val_root is not None):
        kind = data.val_dataset or ("paired" if data.task == "sr" else data.dataset)
        root = data.val_root if data.val_root is not None else data.root
    if data.task == "sr":
        return open_sr_dataset(kind, root, data.scale, split)
    return open_dataset(kind, root, split)


def _document(data: DataConfig, split: str, dataset: ClassificationDataset | SRDataset) -> dict[str, Any]:
    settings = {"size": data.image_size} if data.task == "cls" else {"scale": data.scale}
    return {"table": "decoded", "format": DECODE_FORMAT, "task": data.task, "split": split,
            "dataset": dataset.fingerprint(), **settings}


def _decode_image(dataset: ClassificationDataset, i: int, size: int) -> np.ndarray:
    try:
        img = dataset.image(i)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        raise ValueError(f"unreadable image {dataset.source(i)}: {err}") from err
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _parallel(fn, n: int, what: str) -> list:
    """``[fn(i) for i in range(n)]`` on threads (PIL decodes without the GIL), with a progress line for long
    decodes."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        out = []
        for i, item in enumerate(pool.map(fn, range(n))):
            out.append(item)
            if (i + 1) % 20000 == 0:
                rate = (i + 1) / (time.perf_counter() - started)
                print(f"decoding {what}: {i + 1}/{n} images, {rate:.0f}/s, ETA {(n - i - 1) / rate:.0f} s",
                      file=sys.stderr, flush=True)
    return out


def decode_split(data: DataConfig, split: str) -> Arrays:
    """Decode ``split`` of ``data`` (every image read once; an unreadable file stops it, naming the file)."""
    dataset = _open(data, split)
    key = content_key(_document(data, split, dataset))
    n = len(dataset)
    if data.task == "cls":
        size = data.image_size
        needed = n * size * size * 3
        _check_budget(needed, f"{data.dataset} {split} at {size} px")
        images = np.stack(_parallel(lambda i: _decode_image(dataset, i, size), n, f"{data.dataset} {split}"))
        return ImageArrays(images, np.asarray([dataset.label(i) for i in range(n)], dtype=np.int64),
                           tuple(dataset.classes), key)
    pairs = _parallel(dataset.pair, n, f"{data.dataset} {split}")
    lr, hr = Ragged.from_rows([p[0] for p in pairs], "LR images"), Ragged.from_rows([p[1] for p in pairs], "HR images")
    _check_budget(lr.nbytes + hr.nbytes, f"{data.dataset} {split} at x{data.scale}")
    return PairArrays(lr, hr, np.asarray(dataset.grey, dtype=bool), tuple(dataset.name(i) for i in range(n)),
                      data.scale, key)


def _check_budget(nbytes: int, what: str) -> None:
    if nbytes > MEMORY_BUDGET_BYTES:
        raise MemoryError(f"{what} decodes to {nbytes / 2**30:.1f} GiB, above the {MEMORY_BUDGET_BYTES / 2**30:.1f} "
                          "GiB a split may take in memory; raise RAYKD_DATA_MEMORY (bytes) if the nodes' object "
                          "stores hold it, or lower data.image_size")


def load_split(data: DataConfig, split: str, store: Store | None) -> Arrays:
    """``split`` of ``data`` from ``store`` when it holds a verified copy, else decoded and saved there."""
    if store is None:
        return decode_split(data, split)
    dataset = _open(data, split)
    key = content_key(_document(data, split, dataset))
    table = store.load(key)
    if table is not None:
        meta = table.meta
        if data.task == "cls":
            return ImageArrays(table["images"], table["labels"], tuple(meta["classes"]), key)
        return PairArrays(table["lr"], table["hr"], table["grey"], tuple(meta["names"]), data.scale, key)
    arrays = decode_split(data, split)
    if isinstance(arrays, ImageArrays):
        store.save(key, {"images": arrays.images, "labels": arrays.labels}, {"classes": list(arrays.classes)})
    else:
        store.save(key, {"lr": arrays.lr, "hr": arrays.hr, "grey": arrays.grey}, {"names": list(arrays.names)})
    return arrays
