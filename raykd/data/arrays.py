"""Decode once, share everywhere: a dataset split as compact uint8 arrays.

A sweep decodes each split once (JPEG/PNG decoding, resizing, MATLAB-bicubic LR for HR-only SR folders) into
:class:`ImageArrays` (classification) or :class:`PairArrays` (super-resolution), keeps it in the persistent store
(:mod:`raykd.data.store`, content-keyed by the dataset fingerprint and the decode settings, verified when read
back; a split's images, classification or LR/HR pairs, are a raw, memory-mapped file there, not Parquet rows) and
puts it in Ray's object store once; every trial, teacher actor and Train worker on a node then maps the same copy
(numpy arrays from the object store are zero-copy). A second sweep on the same data only reads the store.

Memory: a split is held whole while it fits :data:`MEMORY_BUDGET_BYTES` (``$RAYKD_DATA_MEMORY``, default 8 GiB
per split; TinyImageNet-200 train at 64 px is 1.2 GB): a node's object store (30% of its RAM by default) must
hold it next to the teacher tables. The budget counts what the process holds, images and labels. Through a store
(what sweeps do) a classification split is decoded straight into the store's raw file, one block (about 64 MiB) at a
time into one reused buffer (the decode threads write each image where it belongs: no list of images, no stacked
copy, at most a block's tasks at once), then read back as a map of that file: the process holds one block beyond
the page cache's pages of the split, which every process of the node shares. Without a store it is decoded the same
way into its final, preallocated array. A split held whole is checked before any decoding (:func:`check_memory`)
against the budget, the machine's available memory (its allowed peak, :func:`peak_bytes`: the split + 10% + 256
MiB) and, where the sweep gives it, the object store's room for it, each refusal naming the numbers and what to
raise. Before issue 17 a list of decoded images and the array stacked from it, then Parquet's buffers, peaked at
4.03 GB for a 1.17 GB split (3.64 GB on read-back); ``bench/data_path.py`` measures 1.29x the split decoding a 586
MiB one (172 MiB above it) and 1.15x reading it back, above the interpreter's own RSS. A classification split above
the budget is decoded into the store the same way and streamed back by block (:class:`StreamedImages`): each
process reads the blocks itself, and training visits them in a shuffled order, shuffling within each.
Super-resolution splits are held whole (DIV2K's 800 training pairs at x4 are about 7 GB): their sizes are known
from the file headers read when the dataset is opened, so they are checked before any decoding too and decoded
straight into their final LR and HR buffers (each thread copies its pair where it belongs: no list of images, no
concatenated copy). Through a store those buffers are written to its raw file as they are (two ragged raw columns)
and let go; the split is read back as a map of that file, then and by every later run, with no decode or copy.

The dataset behind a split is opened once per run (one scan, one stat of each file) and its fingerprint, the
part of the split's key that names the data, is kept in a local store's ``fingerprints/`` under the files'
listing (paths, sizes, mtimes, labels: a touched, rewritten, added or removed file is a miss), so a later run
computes it only when a file changed.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from raykd.config import DataConfig
from raykd.console import UserError
from raykd.data.classification import ClassificationDataset, open_dataset
from raykd.data.sr import SRDataset, open_sr_dataset
from raykd.data.store import GROUP_BYTES, Ragged, Store, content_key
import raykd.data.svhn  # noqa: F401  (registers the "svhn" classification dataset)

__all__ = ["ImageArrays", "PairArrays", "StreamedImages", "MEMORY_BUDGET_BYTES", "DataMemoryError", "load_split",
           "decode_split", "check_memory", "decoded_bytes", "peak_bytes", "available_memory", "object_store_bytes"]

# 2: a classification split's images in the store's raw file (memory-mapped), not in Parquet; 3: an SR split's LR
# and HR images there too (ragged raw columns), not Parquet large_binary rows
DECODE_FORMAT = 3
MEMORY_BUDGET_BYTES = int(float(os.environ.get("RAYKD_DATA_MEMORY", 8 * 2**30)))
# What a process holding a split may add at its peak beyond the split (issue 17's bound): 10% of it and a fixed
# part for the decode threads, one 64 MiB block buffer, the scan and pyarrow's buffers. bench/data_path.py measured
# 172 MiB above a 586 MiB split decoding into the store (86 MiB reading it back), above the interpreter's own RSS
# after its imports (541 MiB with torch), which is already spent when the check runs.
PEAK_SLACK = 0.10
PEAK_FIXED_BYTES = 256 * 2**20


class DataMemoryError(UserError, MemoryError):
    """A split the memory budget, the machine's available memory or the object store cannot hold, said before any
    decoding with the numbers and which to raise."""


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


def _fingerprint(dataset: ClassificationDataset | SRDataset, store: Store | None) -> str:
    """``dataset.fingerprint()``, kept between runs in a local store's ``fingerprints/<listing>`` (the listing: the
    files' paths, sizes, mtimes and labels, so a touched, rewritten, added or removed file is a miss) and computed
    on a miss only."""
    listing = dataset.listing() if store is not None and store.local and hasattr(dataset, "listing") else None
    if listing is None:
        return dataset.fingerprint()
    path = Path(store.root) / "fingerprints" / listing
    try:
        kept = path.read_text()
        if re.fullmatch(r"[0-9a-f]{64}", kept):
            return kept
    except OSError:
        pass
    fingerprint = dataset.fingerprint()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{listing}.{os.getpid()}.tmp")
        tmp.write_text(fingerprint)
        tmp.replace(path)  # racing writers write the same text
    except OSError:
        pass  # a read-only store: computed again next run, nothing else lost
    return fingerprint


def _document(data: DataConfig, split: str, dataset: ClassificationDataset | SRDataset,
              store: Store | None) -> dict[str, Any]:
    settings = {"size": data.image_size} if data.task == "cls" else {"scale": data.scale}
    return {"table": "decoded", "format": DECODE_FORMAT, "task": data.task, "split": split,
            "dataset": _fingerprint(dataset, store), **settings}


def _decode_image(dataset: ClassificationDataset, i: int, size: int) -> np.ndarray:
    try:
        img = dataset.image(i)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        raise ValueError(f"unreadable image {dataset.source(i)}: {err}") from err
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def decoded_bytes(n: int, size: int) -> int:
    """What a classification split of ``n`` images at ``size`` px holds in memory: uint8 images and int64 labels."""
    return n * (size * size * 3 + np.dtype(np.int64).itemsize)


class _Decoder:
    """Decode threads (PIL decodes without the GIL) and a progress line every 20,000 images of a split. Work is
    handed over :data:`TASKS` items at a time, so no more tasks than that (and their results) exist at once."""

    TASKS = 4096

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done, self.started = what, total, 0, time.perf_counter()
        self.pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))

    def __enter__(self) -> "_Decoder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pool.shutdown(cancel_futures=True)

    def map(self, fn, items: range) -> list:
        """``[fn(i) for i in items]`` on the threads."""
        out = []
        for start in range(0, len(items), self.TASKS):
            for item in self.pool.map(fn, items[start:start + self.TASKS]):
                out.append(item)
                self.done += 1
                if self.done % 20000 == 0:
                    rate = self.done / (time.perf_counter() - self.started)
                    print(f"decoding {self.what}: {self.done}/{self.total} images, {rate:.0f}/s, ETA "
                          f"{(self.total - self.done) / rate:.0f} s", file=sys.stderr, flush=True)
        return out


def _decode_rows(dataset: ClassificationDataset, size: int, what: str, out: np.ndarray | None = None
                 ) -> Iterator[np.ndarray]:
    """Decode every image of ``dataset`` at ``size`` px, one block of about :data:`GROUP_BYTES` at a time, yielding
    each block once decoded. Each image is written where it belongs by the decode threads: into ``out`` (the final
    array) when given, else into one reused block buffer (a block's bytes are then the caller's to keep)."""
    n, per = len(dataset), max(1, GROUP_BYTES // (size * size * 3))
    buffer = out if out is not None else np.empty((min(n, per), size, size, 3), dtype=np.uint8)
    with _Decoder(what, n) as decoder:
        for start in range(0, n, per):
            rows = range(start, min(n, start + per))
            block = buffer[start:rows.stop] if out is not None else buffer[:len(rows)]

            def decode(i: int, block: np.ndarray = block, first: int = start) -> None:
                block[i - first] = _decode_image(dataset, i, size)

            decoder.map(decode, rows)
            yield block


def decode_split(data: DataConfig, split: str) -> Arrays:
    """Decode ``split`` of ``data`` in memory (every image read once; an unreadable file stops it, naming the
    file). A classification split above the memory budget needs a store to stream through (:func:`load_split`)."""
    dataset = _open(data, split)
    key = content_key(_document(data, split, dataset, None))
    n = len(dataset)
    if data.task == "cls":
        size = data.image_size
        check_memory(decoded_bytes(n, size), f"{data.dataset} {split} at {size} px", streamable=True)
        images = np.empty((n, size, size, 3), dtype=np.uint8)
        for _ in _decode_rows(dataset, size, f"{data.dataset} {split}", out=images):
            pass
        return ImageArrays(images, _labels(dataset), tuple(dataset.classes), key)
    return _decode_pairs(data, split, dataset, key)


def _decode_pairs(data: DataConfig, split: str, dataset: SRDataset, key: str, object_store: int | None = None
                  ) -> PairArrays:
    """Every pair of ``dataset`` decoded into its final LR and HR buffers: their sizes come from the file headers
    (:meth:`SRDataset.shapes`), so the memory check runs before any image is decoded, and each decode thread
    copies its pair where it belongs (no list of images, no concatenated copy)."""
    shapes = dataset.shapes()
    offsets = [Ragged.byte_offsets(s, np.uint8) for s in shapes]
    check_memory(sum(int(o[-1]) + o.nbytes + s.nbytes for o, s in zip(offsets, shapes)),
                 f"{data.dataset} {split} at x{data.scale}", streamable=False, object_store=object_store)
    buffers = [np.empty(int(o[-1]), dtype=np.uint8) for o in offsets]

    def decode(i: int) -> None:
        for image, buffer, o in zip(dataset.pair(i), buffers, offsets):
            buffer[o[i]:o[i + 1]] = image.reshape(-1)

    with _Decoder(f"{data.dataset} {split}", len(dataset)) as decoder:
        decoder.map(decode, range(len(dataset)))
    lr, hr = (Ragged(b, o, s, np.uint8) for b, o, s in zip(buffers, offsets, shapes))
    return PairArrays(lr, hr, np.asarray(dataset.grey, dtype=bool), tuple(dataset.name(i) for i in range(len(dataset))),
                      data.scale, key)


def _labels(dataset: ClassificationDataset) -> np.ndarray:
    return np.asarray([dataset.label(i) for i in range(len(dataset))], dtype=np.int64)


def available_memory() -> int | None:
    """Bytes this machine can still give a process without swapping (Linux ``MemAvailable``), or ``None`` where
    ``/proc/meminfo`` does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_bytes(nbytes: int) -> int:
    """The most memory a process holding a split of ``nbytes`` is allowed to peak at while decoding, saving or
    reading it back: the split, :data:`PEAK_SLACK` more, and :data:`PEAK_FIXED_BYTES` (``bench/data_path.py``
    measures it)."""
    return int(nbytes * (1 + PEAK_SLACK)) + PEAK_FIXED_BYTES


def object_store_bytes(split: ImageArrays | PairArrays | StreamedImages) -> int:
    """What ``split`` takes in the object store once put there: its arrays, or for a streamed split only its labels
    (it pickles as its store location; every process reads the blocks itself)."""
    return split.labels.nbytes if isinstance(split, StreamedImages) else split.nbytes


def check_memory(nbytes: int, what: str, *, streamable: bool, object_store: int | None = None) -> None:
    """Refuse, before any decoding, a split of ``nbytes`` held in memory that the budget (``RAYKD_DATA_MEMORY``),
    this machine's available memory or the object store (``object_store``: the bytes it has for this split, beside
    the tables it must hold; given by the sweep) cannot hold, saying which to raise."""
    size = f"{what} takes {nbytes / 2**30:.2f} GiB in memory"
    stream = "lower RAYKD_DATA_MEMORY (bytes) below its size so it streams from the store" if streamable else ""
    if nbytes > MEMORY_BUDGET_BYTES:
        how = ("decode it through a store (load_split with a store; the sweeps do), which streams it, or raise "
               "RAYKD_DATA_MEMORY (bytes)") if streamable else "raise RAYKD_DATA_MEMORY (bytes) if the nodes hold it"
        raise DataMemoryError(f"{size}, above the {MEMORY_BUDGET_BYTES / 2**30:.2f} GiB a split may take "
                              f"(RAYKD_DATA_MEMORY); {how}")
    free = available_memory()
    if free is not None and peak_bytes(nbytes) > free:
        raise DataMemoryError(f"{size} and peaks near {peak_bytes(nbytes) / 2**30:.2f} GiB while decoded or read "
                              f"back; this machine has {free / 2**30:.2f} GiB available: free memory"
                              f"{', or ' + stream if stream else ''}")
    if object_store is not None and nbytes > object_store:
        raise DataMemoryError(f"{size} and the object store has {object_store / 2**30:.2f} GiB for it beside the "
                              "teacher tables it holds: raise the object store (ray start --object-store-memory "
                              f"BYTES, ray.init(object_store_memory=BYTES)){', or ' + stream if stream else ''}")


def load_split(data: DataConfig, split: str, store: Store | None, *, object_store: int | None = None) -> Arrays:
    """``split`` of ``data`` from ``store`` when it holds a verified copy, else decoded and saved there, its dataset
    opened (scanned, fingerprinted) once. A classification split above the memory budget is streamed from the store
    (:class:`StreamedImages`); one held whole is checked first against free memory and ``object_store`` (bytes the
    object store has for it: see :func:`check_memory`)."""
    if store is None:
        return decode_split(data, split)
    dataset = _open(data, split)
    key = content_key(_document(data, split, dataset, store))
    if data.task == "cls":
        return _load_images(data, split, dataset, store, key, object_store)
    return _load_pairs(data, split, dataset, store, key, object_store)


def _load_pairs(data: DataConfig, split: str, dataset: SRDataset, store: Store, key: str,
                object_store: int | None) -> PairArrays:
    """An SR split through the store: decoded and saved when absent, its LR and HR images in the raw file, then
    read back as a map of that file (the decoded buffers are let go: the page cache's pages of the split remain,
    shared by every process of the node)."""
    table = store.load(key)
    if table is None:
        arrays = _decode_pairs(data, split, dataset, key, object_store)
        store.save(key, {"lr": arrays.lr, "hr": arrays.hr, "grey": arrays.grey}, {"names": list(arrays.names)},
                   raw=("lr", "hr"))
        del arrays
        table = store.load(key)
        if table is None:
            raise FileNotFoundError(f"decoded split {key} could not be read back from {store.root}")
    return PairArrays(table["lr"], table["hr"], table["grey"], tuple(table.meta["names"]), data.scale, key)


def _load_images(data: DataConfig, split: str, dataset: ClassificationDataset, store: Store, key: str,
                 object_store: int | None) -> ImageArrays | StreamedImages:
    """A classification split through the store: decoded into it block by block when absent (the process holds one
    block), then read back as a map of the stored file (held whole) or streamed by block (above the budget)."""
    size, n = data.image_size, len(dataset)
    what = f"{data.dataset} {split} at {size} px"
    big = decoded_bytes(n, size) > MEMORY_BUDGET_BYTES
    if big:
        print(f"{what}: {decoded_bytes(n, size) / 2**30:.1f} GiB is above the {MEMORY_BUDGET_BYTES / 2**30:.1f} GiB "
              "in-memory budget (RAYKD_DATA_MEMORY); streaming it from the store", file=sys.stderr)
    else:
        check_memory(decoded_bytes(n, size), what, streamable=True, object_store=object_store)
    stored = store.open(key) if big else store.load(key)
    if stored is None:
        with store.writer(key, {"classes": list(dataset.classes)}) as writer:
            writer.append({"labels": _labels(dataset)})
            for block in _decode_rows(dataset, size, f"{data.dataset} {split}"):
                writer.append_raw("images", block)
        stored = store.open(key) if big else store.load(key)
        if stored is None:
            raise FileNotFoundError(f"decoded split {key} could not be read back from {store.root}")
    if big:
        return StreamedImages(store.location, key, _labels(dataset), tuple(dataset.classes), stored.raw_rows("images"),
                              tuple(stored.header["raw"]["images"]["shape"]))
    return ImageArrays(stored["images"], stored["labels"], tuple(stored.meta["classes"]), key)


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
