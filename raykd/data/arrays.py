"""Decode once, share everywhere: a dataset split as compact uint8 arrays.

A sweep decodes each split once (JPEG/PNG decoding, resizing, MATLAB-bicubic LR for HR-only SR folders) into
:class:`ImageArrays` (classification) or :class:`PairArrays` (super-resolution), keeps it in the persistent store
(:mod:`raykd.data.store`, content-keyed by the dataset fingerprint and the decode settings, verified when read
back; a classification split's images are a raw, memory-mapped file there, not Parquet rows) and puts it in Ray's
object store once; every trial, teacher actor and Train worker on a node then maps the
same copy (numpy arrays from the object store are zero-copy). A second sweep on the same data only reads the
store.

Memory: a split is held whole while it fits :data:`MEMORY_BUDGET_BYTES` (``$RAYKD_DATA_MEMORY``, default 8 GiB
per split; TinyImageNet-200 train at 64 px is 1.2 GB): a node's object store (30% of its RAM by default) must
hold it next to the teacher tables. The budget counts what the process holds, images and labels: images are
decoded into their final array (preallocated, each row written once by the decode threads) and written from it
to the store, and read back as a map of the stored file, so nothing else is held. Before, a list of decoded images
and the array stacked from it, then Parquet's buffers, peaked at 4.03 GB for a 1.17 GB split (3.64 GB on
read-back; issue 17); ``bench/store_speed.py`` measures the store's part: 1.23x the array at its peak, save or
load, a fixed ~54 MiB above it (Parquet's: 4.5x and 6.1x). A classification split above it is
decoded straight into the store, one block (64 MiB) at a time into one reused buffer, and streamed back by block
(:class:`StreamedImages`): each process reads the blocks itself, and training visits them in a shuffled order,
shuffling within each. Super-resolution splits are held whole (DIV2K's 800 training pairs at x4 are about 7 GB).
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from raykd.config import DataConfig
from raykd.data.classification import ClassificationDataset, open_dataset
from raykd.data.sr import SRDataset, open_sr_dataset
from raykd.data.store import GROUP_BYTES, Ragged, Store, content_key

__all__ = ["ImageArrays", "PairArrays", "StreamedImages", "MEMORY_BUDGET_BYTES", "load_split", "decode_split"]

DECODE_FORMAT = 2  # 2: a classification split's images in the store's raw file (memory-mapped), not in Parquet
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


def _split_bytes(n: int, size: int) -> int:
    """What a classification split of ``n`` images at ``size`` px holds in memory: uint8 images and int64 labels."""
    return n * (size * size * 3 + np.dtype(np.int64).itemsize)


def _decode_into(out: np.ndarray, dataset: ClassificationDataset, rows: range, size: int, what: str) -> None:
    """Decode images ``rows`` of ``dataset`` into ``out[: len(rows)]``, each written where it belongs by the decode
    threads: no list of decoded images, no stacked copy of them."""
    def decode(i: int) -> None:
        out[i - rows.start] = _decode_image(dataset, i, size)

    _parallel(decode, rows, what)


def _parallel(fn, items: range, what: str) -> list:
    """``[fn(i) for i in items]`` on threads (PIL decodes without the GIL), with a progress line for long decodes."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        out = []
        for i, item in enumerate(pool.map(fn, items)):
            out.append(item)
            if (i + 1) % 20000 == 0:
                rate = (i + 1) / (time.perf_counter() - started)
                print(f"decoding {what}: {i + 1}/{len(items)} images, {rate:.0f}/s, ETA "
                      f"{(len(items) - i - 1) / rate:.0f} s", file=sys.stderr, flush=True)
    return out


def decode_split(data: DataConfig, split: str) -> Arrays:
    """Decode ``split`` of ``data`` in memory (every image read once; an unreadable file stops it, naming the
    file). A classification split above the memory budget needs a store to stream through (:func:`load_split`)."""
    dataset = _open(data, split)
    key = content_key(_document(data, split, dataset))
    n = len(dataset)
    if data.task == "cls":
        size = data.image_size
        _check_budget(_split_bytes(n, size), f"{data.dataset} {split} at {size} px", streamable=True)
        images = np.empty((n, size, size, 3), dtype=np.uint8)
        _decode_into(images, dataset, range(n), size, f"{data.dataset} {split}")
        return ImageArrays(images, _labels(dataset), tuple(dataset.classes), key)
    pairs = _parallel(dataset.pair, range(n), f"{data.dataset} {split}")
    lr, hr = Ragged.from_rows([p[0] for p in pairs], "LR images"), Ragged.from_rows([p[1] for p in pairs], "HR images")
    _check_budget(lr.nbytes + hr.nbytes, f"{data.dataset} {split} at x{data.scale}", streamable=False)
    return PairArrays(lr, hr, np.asarray(dataset.grey, dtype=bool), tuple(dataset.name(i) for i in range(n)),
                      data.scale, key)


def _labels(dataset: ClassificationDataset) -> np.ndarray:
    return np.asarray([dataset.label(i) for i in range(len(dataset))], dtype=np.int64)


def _check_budget(nbytes: int, what: str, streamable: bool) -> None:
    if nbytes > MEMORY_BUDGET_BYTES:
        how = ("decode it through a store (load_split with a store; the sweeps do), which streams it, or raise "
               "RAYKD_DATA_MEMORY (bytes)") if streamable else "raise RAYKD_DATA_MEMORY (bytes) if the nodes hold it"
        raise MemoryError(f"{what} decodes to {nbytes / 2**30:.1f} GiB, above the {MEMORY_BUDGET_BYTES / 2**30:.1f} "
                          f"GiB a split may take in memory; {how}")


class StreamedImages:
    """A classification split above the memory budget, kept in the store and read back by block of its raw file.

    ``images[indices]`` reads (and verifies) the blocks the indices fall in, keeping the last ``keep`` blocks (views
    of the mapped file on a local store); training visits the split block by block (:attr:`groups`, used by the
    trainer's shuffle) so each block is read once per epoch. It pickles as its store location, so every process
    (trial, Train worker, teacher actor) streams on its own instead of receiving the data.
    """

    def __init__(self, root: str, key: str, labels: np.ndarray, classes: tuple[str, ...], group_rows: list[int],
                 row_shape: tuple[int, ...], keep: int = 2) -> None:
        self.root, self.key, self.labels, self.classes = root, key, labels, classes
        bounds = np.cumsum([0, *group_rows])
        self.groups = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.row_shape, self.keep = tuple(row_shape), keep
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._reader = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict(), "_reader": None}

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.row_shape))

    @property
    def images(self) -> "StreamedImages":
        return self

    def _group(self, g: int) -> np.ndarray:
        if g not in self._cache:
            if self._reader is None:
                self._reader = Store(self.root).open(self.key)
                if self._reader is None:
                    raise FileNotFoundError(f"decoded split {self.key} is gone from the store {self.root}; decode it "
                                            "again (rerun the sweep)")
            self._cache[g] = self._reader.raw_block("images", g)
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        self._cache.move_to_end(g)
        return self._cache[g]

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        starts = np.array([a for a, _ in self.groups])
        which = np.searchsorted(starts, indices, side="right") - 1
        out = np.empty((len(indices), *self.row_shape), dtype=np.uint8)
        for g in np.unique(which):
            mask = which == g
            out[mask] = self._group(int(g))[indices[mask] - starts[g]]
        return out


def _decode_streamed(data: DataConfig, split: str, dataset: ClassificationDataset, store: Store, key: str
                     ) -> StreamedImages:
    """Decode a split too large for memory straight into the store, one block (about 64 MiB) at a time into one
    reused buffer, each block written to the store's raw file as soon as it is decoded."""
    size = data.image_size
    per_group = max(1, GROUP_BYTES // (size * size * 3))
    labels, n = _labels(dataset), len(dataset)
    print(f"{data.dataset} {split}: {_split_bytes(n, size) / 2**30:.1f} GiB at {size} px is above the "
          f"{MEMORY_BUDGET_BYTES / 2**30:.1f} GiB in-memory budget; streaming it from the store", file=sys.stderr)
    block = np.empty((min(n, per_group), size, size, 3), dtype=np.uint8)
    with store.writer(key, {"classes": list(dataset.classes)}) as writer:
        writer.append({"labels": labels})
        for start in range(0, n, per_group):
            rows = range(start, min(n, start + per_group))
            _decode_into(block, dataset, rows, size, f"{data.dataset} {split}")
            writer.append_raw("images", block[:len(rows)])
    return _streamed(store, key, labels, tuple(dataset.classes))


def _streamed(store: Store, key: str, labels: np.ndarray, classes: tuple[str, ...]) -> StreamedImages:
    reader = store.open(key)
    if reader is None:
        raise FileNotFoundError(f"decoded split {key} could not be read back from {store.root}")
    shape = tuple(reader.header["raw"]["images"]["shape"])
    return StreamedImages(store.location, key, labels, classes, reader.raw_rows("images"), shape)


def load_split(data: DataConfig, split: str, store: Store | None) -> Arrays:
    """``split`` of ``data`` from ``store`` when it holds a verified copy, else decoded and saved there. A
    classification split above the memory budget is streamed from the store (:class:`StreamedImages`)."""
    if store is None:
        return decode_split(data, split)
    dataset = _open(data, split)
    key = content_key(_document(data, split, dataset))
    big = data.task == "cls" and _split_bytes(len(dataset), data.image_size) > MEMORY_BUDGET_BYTES
    if big:
        reader = store.open(key)
        if reader is not None:
            return _streamed(store, key, _labels(dataset), tuple(dataset.classes))
        return _decode_streamed(data, split, dataset, store, key)
    table = store.load(key)
    if table is not None:
        meta = table.meta
        if data.task == "cls":
            return ImageArrays(table["images"], table["labels"], tuple(meta["classes"]), key)
        return PairArrays(table["lr"], table["hr"], table["grey"], tuple(meta["names"]), data.scale, key)
    arrays = decode_split(data, split)
    if isinstance(arrays, ImageArrays):
        store.save(key, {"images": arrays.images, "labels": arrays.labels}, {"classes": list(arrays.classes)},
                   raw=("images",))
    else:
        store.save(key, {"lr": arrays.lr, "hr": arrays.hr, "grey": arrays.grey}, {"names": list(arrays.names)})
    return arrays
