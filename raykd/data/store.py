"""The persistent store: content-keyed, verified Parquet tables on any pyarrow filesystem.

Decoded datasets (:mod:`raykd.data.arrays`) and teacher outputs (:mod:`raykd.teachers.store`) are kept here, one
table per content key (``content_key``: a sha256 of a canonical JSON document of everything the table depends on),
under ``<root>/<key>.parquet``. ``root`` is a local directory (NFS included) or a URI pyarrow understands
(``s3://bucket/prefix``, ``gs://...``, ``file:///...``), so every node of a cluster can share one store.

A table is a set of equally long columns:

* a *fixed-shape* column (``(N, *shape)`` of float16/float32/uint8/bool/int16/int32/int64) is stored as a
  ``fixed_size_list`` of its flattened rows;
* a *ragged* column (:class:`Ragged`: rows of one dtype and rank but different shapes, e.g. whole SR images) is a
  ``large_binary`` column of each row's raw little-endian bytes plus a ``__shape__<name>`` column of row shapes
  (raw bytes, because Parquet encodes list columns with a repetition level per element: several times slower for
  images of millions of values), unless it is kept raw.

A column named in ``raw`` (:meth:`Store.save`, :meth:`TableWriter.append_raw`: the decoded images of a split,
fixed-shape for classification, ragged for SR) is kept beside the table instead, in ``<key>.raw``: its rows' bytes
back to back, uncompressed, each raw column starting on a 64-byte boundary, and a sha256 per block of about 64 MiB
in the header. A ragged raw column's row shapes (N x ndim integers; its byte offsets follow from them) are in the
header too, and its blocks cut at row boundaries: a block is whole images (what the lazy reader hands out, as a
:class:`Ragged`), its sha256 covers their shapes as well as their bytes, and it passes 64 MiB by at most one image;
the column loads as a :class:`Ragged` whose buffer is a read-only view of the map. Parquet stores a fixed-size list
with a level per value and decodes it into new buffers: a 64 px TinyImageNet-200 train split of 1,172.6 MiB became a
2,020 MiB file read back at about 9 MiB/s (issue 17). The raw file is exactly the array's size; a local one is
memory-mapped (the column is a read-only view of the page cache: no copy, shared by every process of the node), any
other filesystem reads it in one sequential read (or by block, for the lazy reader). ``bench/store_speed.py``
measures both layouts side by side: for 20,000 images at 64 px (234 MiB) on a loaded 2-core machine, Parquet rows
saved at 41 MiB/s and loaded at 40 MiB/s (cold), 1.83x the array's size, peaking at 4.5x (save) and 6.1x (load) the
array in RSS; the raw file saved at 518 MiB/s and loaded at 786 MiB/s cold, 966 MiB/s warm when every block is
hashed, 1.000x the size, peaking at 1.23x (the array and a fixed ~54 MiB). Whole images of varied shapes
(``--ragged --images 800``: 800 images of sides 384 to 1152 px, 1,380 MiB, the machine as loaded) kept as the
store's Parquet rows (``large_binary``, as SR splits were before; lz4 finds nothing in pixels) saved at 155 MiB/s
and loaded at 128 MiB/s cold, 1.004x the size, peaking at 1.27x (save) and 2.14x (load: every row group decoded into
new buffers, then concatenated) the array in RSS; the raw file saved at 289 MiB/s and loaded at 575 MiB/s cold,
1,242 MiB/s warm when every block is hashed (1.6 ms once stamped), 1.000x the size, peaking at 1.04x (the array and
a fixed ~52 MiB). Tables without raw columns are unchanged on disk, so their format version and keys stay; a table
with a ragged raw column says :data:`RAGGED_RAW_FORMAT_VERSION` in its header (a raykd that knows fixed-shape raw
columns only refuses it by that), its key still made with :data:`STORE_FORMAT_VERSION`.

Rows are written in row groups of about 64 MiB (:class:`TableWriter` appends them one by one, so a table need not
fit in memory), and the file's key-value metadata (``raykd.store``) records the format version, the key, the row
count, each column's dtype and shape, a sha256 of every column in every row group, and the caller's ``meta`` (and,
for raw columns, their offsets, block rows and block checksums, and a ragged one's row shapes). The first
:meth:`Store.load` after a write verifies all of it (a raw file's size, then its blocks' sha256, hashed on threads:
the one read of the file, which also brings it into the page cache for training); :meth:`Store.open` gives a lazy
reader that verifies each row group (and raw block) as it is read, for tables larger than memory. Once every part
has matched, the table is stamped (``<key>.verified``: each file's size, mtime and, on a local disk, ctime and
inode, as they were when opened), and a later read whose files still match the stamp hashes nothing: it checks the
header (the manifest: checksums cover every column, raw columns tile the raw file, whose size it says) and the
stamp, and maps the raw file (``bench/store_speed.py``: 2.9 ms instead of 210 ms to read back 234 MiB warm). A
truncated, extended, replaced or rewritten file (a write moves the ctime even where the mtime is put back) fails the
stamp and is hashed again; what only a full hash finds, bits changed under the filesystem, :func:`verify_store`
(``raykd verify``) finds, naming each damaged table, column and block. A table that fails verification is reported
(:class:`StoreCorruptionWarning`, naming the file and the reason), moved aside to ``<key>.parquet.corrupt`` (its raw
file to ``<key>.raw.corrupt``, its stamp deleted) and treated as absent, so the caller rebuilds it.

Writers write to a unique temporary name in the same directory (fsynced on local disks) and then rename it onto
the final name, so readers see either no table or a complete one, and racing writers of one key both leave a
valid table. A table's raw file is renamed into place before its Parquet file, so a visible table has its raw
file. Temporary files (``.<key>.*.tmp``) are left only by a writer killed mid-write and are safe to delete.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raykd.config import CacheLayout, is_uri

__all__ = ["RAGGED_RAW_FORMAT_VERSION", "RAW_ALIGNMENT", "STORE_FORMAT_VERSION", "Ragged", "Store",
           "StoreCorruptionWarning", "Table", "TableCheck", "TableReader", "TableWriter", "content_key", "file_sha256",
           "store_root", "cache_store", "verify_store"]

# Bump whenever the on-disk layout or the meaning of a stored column changes: old tables then get new keys.
STORE_FORMAT_VERSION = 2
# What the header of a table with a ragged raw column says instead (its key still uses STORE_FORMAT_VERSION): a
# raykd that reads version 2 only, which knows fixed-shape raw columns only, refuses it by its version.
RAGGED_RAW_FORMAT_VERSION = 3

_METADATA_KEY = b"raykd.store"
_SHAPE_PREFIX = "__shape__"
_DTYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.uint8, np.bool_, np.int16, np.int32, np.int64))
_KEY_RE = re.compile(r"[0-9a-f]{64}")
GROUP_BYTES = 64 * 2**20  # bytes of a row group (or raw block): what a streamed table reads at a time
RAW_ALIGNMENT = 64  # each raw column starts at a multiple of this many bytes: its views are aligned for any dtype


class StoreCorruptionWarning(RuntimeWarning):
    """A stored table failed verification and was discarded; the caller rebuilds it."""


class _Corrupt(Exception):
    """Internal: a table failed verification for the reason in the message."""


def file_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk_size`` pieces so multi-GB weights never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} value {obj!r} is not JSON-serialisable; use str, int, float, bool, None, "
                    "list or dict")


def canonical_json(obj: Any) -> str:
    """One text per value: sorted keys, no whitespace, NaN/inf refused (they have no canonical JSON form)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_json_default)


def content_key(document: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``document`` plus the store's format version: the key of a table whose
    content is determined by exactly that document."""
    return hashlib.sha256(canonical_json({"format_version": STORE_FORMAT_VERSION, **document}).encode()).hexdigest()


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(f"store key must be 64 lowercase hex digits (see content_key), got {key!r}")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or name.startswith("__"):
        raise ValueError(f"column name {name!r} is invalid: use a non-empty string not starting with '__'")


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data).hexdigest()


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class Ragged:
    """Rows of one dtype and rank whose shapes differ: all rows' bytes in one buffer, ``offsets`` (N + 1, in
    bytes) into it and ``shapes`` (N, ndim). Pickles as three numpy arrays, so a Ray object-store copy is read
    zero-copy by every process on a node."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, shapes: np.ndarray, dtype: np.dtype) -> None:
        self.data, self.offsets, self.shapes = _readonly(data), _readonly(offsets), _readonly(shapes)
        self.dtype = np.dtype(dtype)

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray], name: str = "rows") -> "Ragged":
        if not len(rows):
            raise ValueError(f"{name}: no rows")
        arrays = [np.asarray(r) for r in rows]
        dtype, ndim = arrays[0].dtype, arrays[0].ndim
        for i, row in enumerate(arrays):
            if row.dtype != dtype or row.ndim != ndim or ndim == 0:
                raise TypeError(f"{name} row {i} is {row.dtype} with ndim {row.ndim}; every row must be {dtype} "
                                f"with ndim {ndim} >= 1")
        native = np.dtype(dtype.name)
        data = np.concatenate([np.ascontiguousarray(r, dtype=native).reshape(-1) for r in arrays]).view(np.uint8)
        shapes = np.array([r.shape for r in arrays], dtype=np.int64).reshape(len(arrays), ndim)
        return cls(data, cls.byte_offsets(shapes, native), shapes, native)

    @staticmethod
    def byte_offsets(shapes: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``(N + 1,)`` int64 byte offsets of rows of ``shapes`` (``(N, ndim)``) and ``dtype`` laid back to back:
        where each row starts in a Ragged's buffer (the last: the buffer's size)."""
        offsets = np.zeros(len(shapes) + 1, dtype=np.int64)
        np.cumsum(np.prod(shapes, axis=1, dtype=np.int64) * np.dtype(dtype).itemsize, out=offsets[1:])
        return offsets

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> np.ndarray:
        """Row ``i`` as a read-only view (no copy)."""
        return self.data[self.offsets[i]:self.offsets[i + 1]].view(self.dtype).reshape(tuple(self.shapes[i]))

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.offsets.nbytes + self.shapes.nbytes

    def take(self, rows: np.ndarray) -> list[np.ndarray]:
        return [self[int(r)] for r in rows]

    def slice(self, start: int, stop: int) -> "Ragged":
        offsets = self.offsets[start:stop + 1]
        return Ragged(self.data[offsets[0]:offsets[-1]], offsets - offsets[0], self.shapes[start:stop], self.dtype)

    def checksum(self) -> str:
        return hashlib.sha256(self.data[self.offsets[0]:self.offsets[-1]].data).hexdigest() + _sha256(self.shapes)

    @staticmethod
    def concat(parts: Sequence["Ragged"]) -> "Ragged":
        data = np.concatenate([p.data[p.offsets[0]:p.offsets[-1]] for p in parts])
        sizes = np.concatenate([np.diff(p.offsets) for p in parts])
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return Ragged(data, offsets, np.concatenate([p.shapes for p in parts]), parts[0].dtype)


Column = np.ndarray | Ragged


def _as_column(name: str, value: Any) -> Column:
    _check_name(name)
    if isinstance(value, Ragged):
        return value
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            raise ValueError(f"column {name!r} must have one row per entry, got a scalar")
        native = value.dtype.newbyteorder("=")  # byte-swapped arrays are stored in native (little-endian) order
        if native not in _DTYPES:
            raise TypeError(f"column {name!r} has dtype {value.dtype}; the store holds "
                            f"{', '.join(str(d) for d in _DTYPES)}")
        return np.ascontiguousarray(value, dtype=native)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"column {name!r} must be a numpy array (fixed shape), a list of numpy arrays (variable "
                        f"shape) or a Ragged, got {type(value).__name__}")
    ragged = Ragged.from_rows(value, f"column {name!r}")
    if ragged.dtype not in _DTYPES:
        raise TypeError(f"column {name!r} rows have dtype {ragged.dtype}, which the store does not hold")
    return ragged


class Table:
    """A verified table in memory: ``columns`` (name -> ``(N, *shape)`` array or :class:`Ragged`, read-only),
    ``meta`` (the JSON given at save) and ``key``."""

    def __init__(self, key: str, columns: Mapping[str, Column], meta: Mapping[str, Any]) -> None:
        lengths = {name: len(col) for name, col in columns.items()}
        if not columns or len(set(lengths.values())) != 1:
            raise ValueError(f"a table needs one or more columns of one length, got lengths {lengths}")
        self.key = key
        self.meta = dict(meta)
        self.columns: dict[str, Column] = {name: col if isinstance(col, Ragged) else _readonly(col)
                                           for name, col in sorted(columns.items())}

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def nbytes(self) -> int:
        return sum(col.nbytes for col in self.columns.values())

    def __getitem__(self, name: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"column {name!r} not in stored table {self.key[:12]}...; it holds "
                           f"{list(self.columns)}") from None

    def __repr__(self) -> str:
        return f"Table(key={self.key[:12]}..., rows={self.num_rows}, columns={list(self.columns)})"


# ----------------------------------------------------------------------------------------- Parquet layout


def _groups(num_rows: int, row_bytes: int, rows_per_group: int | None) -> list[tuple[int, int]]:
    per = rows_per_group or max(1, GROUP_BYTES // max(row_bytes, 1))
    return [(start, min(num_rows, start + per)) for start in range(0, num_rows, per)]


def _raw_blocks(col: Column) -> list[tuple[int, int]]:
    """A raw column's blocks (rows ``[start, stop)``, each with its own sha256) of about :data:`GROUP_BYTES`, cut at
    row boundaries: a ragged block is whole images (what the lazy reader hands out, and its checksum covers their
    shapes), passing :data:`GROUP_BYTES` by at most one row."""
    if not isinstance(col, Ragged):
        return _groups(len(col), col[0].nbytes, None)
    blocks, start, ends = [], 0, col.offsets - col.offsets[0]
    while start < len(col):
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] + GROUP_BYTES, side="right")) - 1)
        blocks.append((start, stop))
        start = stop
    return blocks


def _column_bytes(col: Column, start: int, stop: int) -> memoryview:
    """The bytes of rows ``[start, stop)`` of a column, as they lie in memory (no copy)."""
    if isinstance(col, Ragged):
        return col.data[col.offsets[start]:col.offsets[stop]].data
    return col[start:stop].data


def _column_checksum(col: Column, start: int, stop: int) -> str:
    return col.slice(start, stop).checksum() if isinstance(col, Ragged) else _sha256(col[start:stop])


def _arrow(col: Column) -> dict[str, pa.Array]:
    if isinstance(col, Ragged):
        values = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(col),
                                                  [None, pa.py_buffer(col.offsets - col.offsets[0]),
                                                   pa.py_buffer(col.data[col.offsets[0]:col.offsets[-1]])])
        return {"": values, _SHAPE_PREFIX: pa.FixedSizeListArray.from_arrays(pa.array(col.shapes.reshape(-1)),
                                                                             col.shapes.shape[1])}
    flat = col.reshape(len(col), -1)
    return {"": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])}


def _spec(col: Column) -> dict[str, Any]:
    if isinstance(col, Ragged):
        return {"dtype": col.dtype.name, "shape": None, "ndim": int(col.shapes.shape[1])}
    return {"dtype": col.dtype.name, "shape": list(col.shape[1:])}


def _decode_group(batch: pa.Table, header: dict[str, Any], group: int, check: bool = True) -> dict[str, Column]:
    """One row group's columns, checked against the header (their sha256 too when ``check``); raises _Corrupt with
    the reason."""
    rows = header["group_rows"][group]
    if batch.num_rows != rows:
        raise _Corrupt(f"row group {group} has {batch.num_rows} rows, its header says {rows}")
    out: dict[str, Column] = {}
    for name, spec in header["columns"].items():
        dtype = np.dtype(spec["dtype"])
        if dtype not in _DTYPES:
            raise _Corrupt(f"column {name!r} has dtype {dtype}")
        chunk = _chunk(batch, name)
        if spec["shape"] is None:
            shapes = _fixed(_chunk(batch, _SHAPE_PREFIX + name), _SHAPE_PREFIX + name, int(spec["ndim"]),
                            np.dtype(np.int64))
            if chunk.type != pa.large_binary():
                raise _Corrupt(f"column {name!r} is {chunk.type}, expected large_binary")
            _, offsets_buf, data_buf = chunk.buffers()
            offsets = np.frombuffer(offsets_buf, dtype=np.int64)[chunk.offset:chunk.offset + rows + 1]
            if (shapes < 0).any() or not np.array_equal(np.diff(offsets), np.prod(shapes, axis=1) * dtype.itemsize):
                raise _Corrupt(f"column {name!r}: row byte lengths do not match the stored shapes")
            col: Column = Ragged(np.frombuffer(data_buf, dtype=np.uint8), offsets, shapes, dtype)
        else:
            shape = tuple(int(s) for s in spec["shape"])
            col = _fixed(chunk, name, int(np.prod(shape)), dtype).reshape((rows, *shape))
        if check and _column_checksum(col, 0, rows) != header["checksums"][name][group]:
            raise _Corrupt(f"sha256 mismatch in column {name!r}, row group {group}")
        out[name] = col
    return out


def _chunk(batch: pa.Table, name: str) -> pa.Array:
    if name not in batch.column_names:
        raise _Corrupt(f"column {name!r} is missing")
    col = batch.column(name)
    chunk = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if chunk.null_count:
        raise _Corrupt(f"column {name!r} has {chunk.null_count} null rows")
    return chunk


def _fixed(chunk: pa.Array, name: str, size: int, dtype: np.dtype) -> np.ndarray:
    expected = pa.list_(pa.from_numpy_dtype(dtype), size)
    if chunk.type != expected:
        raise _Corrupt(f"column {name!r} is {chunk.type}, expected {expected}")
    values = chunk.flatten()
    if values.null_count:
        raise _Corrupt(f"column {name!r} has {values.null_count} null values")
    return values.to_numpy(zero_copy_only=False).reshape(len(chunk), size)


def _read_header(metadata: dict[bytes, bytes] | None, key: str) -> dict[str, Any]:
    raw = (metadata or {}).get(_METADATA_KEY)
    if raw is None:
        raise _Corrupt(f"metadata {_METADATA_KEY.decode()!r} is missing")
    try:
        header = json.loads(raw)
        version, stored_key = header["format_version"], header["key"]
        columns, groups, checksums = header["columns"], header["group_rows"], header["checksums"]
        header["meta"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _Corrupt(f"metadata is unreadable ({exc!r})") from None
    if version not in (STORE_FORMAT_VERSION, RAGGED_RAW_FORMAT_VERSION):
        raise _Corrupt(f"format version {version!r}, this raykd reads versions {STORE_FORMAT_VERSION} and "
                       f"{RAGGED_RAW_FORMAT_VERSION} (with ragged raw columns)")
    if stored_key != key:
        raise _Corrupt(f"it holds key {stored_key!r}, not {key!r}")
    if set(checksums) != set(columns) or any(len(v) != len(groups) for v in checksums.values()):
        raise _Corrupt("checksums do not cover every column and row group")
    if sum(groups) != header["num_rows"]:
        raise _Corrupt(f"row groups hold {sum(groups)} rows, the header says {header['num_rows']}")
    header["raw"] = _check_raw_header(header, set(columns))
    if version != _format_version(header["raw"]):
        raise _Corrupt(f"format version {version!r} does not match its raw columns, which are for version "
                       f"{_format_version(header['raw'])}")
    return header


def _format_version(raw: Mapping[str, Mapping[str, Any]]) -> int:
    """The version a table's header carries: :data:`RAGGED_RAW_FORMAT_VERSION` with a ragged raw column (so a
    raykd that reads version 2 only refuses it by its version), else :data:`STORE_FORMAT_VERSION` (unchanged)."""
    return RAGGED_RAW_FORMAT_VERSION if any(spec["shape"] is None for spec in raw.values()) else STORE_FORMAT_VERSION


def _check_raw_header(header: dict[str, Any], parquet_columns: set[str]) -> dict[str, Any]:
    """The header's raw columns, checked to tile ``<key>.raw`` without overlap, each block checksummed."""
    raw = header.get("raw", {})
    end = 0
    try:
        for name, spec in sorted(raw.items(), key=lambda item: item[1]["offset"]):  # canonical JSON sorts by name
            if name in parquet_columns:
                raise _Corrupt(f"column {name!r} is both a Parquet and a raw column")
            if np.dtype(spec["dtype"]) not in _DTYPES:
                raise _Corrupt(f"raw column {name!r} has dtype {spec['dtype']}")
            if sum(spec["block_rows"]) != header["num_rows"] or len(spec["checksums"]) != len(spec["block_rows"]):
                raise _Corrupt(f"raw column {name!r}: its blocks hold {sum(spec['block_rows'])} rows with "
                               f"{len(spec['checksums'])} checksums for {len(spec['block_rows'])} blocks; the table "
                               f"has {header['num_rows']} rows")
            if not isinstance(spec["offset"], int) or spec["offset"] < end or spec["offset"] % RAW_ALIGNMENT:
                raise _Corrupt(f"raw column {name!r} starts at byte {spec['offset']!r}, not an aligned offset at or "
                               f"after {end}")
            if spec["shape"] is None:
                _ragged_layout(name, spec, header["num_rows"])
            end = spec["offset"] + _raw_extent(spec, 0, header["num_rows"])[1]
        if raw and header["raw_bytes"] != end:
            raise _Corrupt(f"raw columns end at byte {end}, the header says the raw file has {header['raw_bytes']}")
    except (ValueError, KeyError, TypeError) as exc:
        raise _Corrupt(f"raw columns' metadata is unreadable ({exc!r})") from None
    return raw


def _ragged_layout(name: str, spec: dict[str, Any], num_rows: int) -> None:
    """Check a ragged raw column's row shapes (one of ``ndim`` per row, none negative) and put them in ``spec`` as
    an ``(N, ndim)`` array beside ``row_offsets`` (N + 1 byte offsets into the column: :meth:`Ragged.byte_offsets`).
    A shape changed in the header is caught by its block's sha256, which covers the rows' shapes."""
    shapes = np.asarray(spec["shapes"], dtype=np.int64)
    if int(spec["ndim"]) < 1 or shapes.shape != (num_rows, int(spec["ndim"])) or (shapes < 0).any():
        raise _Corrupt(f"raw column {name!r} has row shapes of shape {shapes.shape}, not {num_rows} of "
                       f"{spec['ndim']!r} >= 1 sizes each, none negative")
    spec["shapes"], spec["row_offsets"] = shapes, Ragged.byte_offsets(shapes, np.dtype(spec["dtype"]))


def _raw_extent(spec: Mapping[str, Any], start: int, stop: int) -> tuple[int, int]:
    """Where rows ``[start, stop)`` of a raw column lie in the raw file: ``(first byte, byte count)``."""
    if spec["shape"] is None:
        offsets = spec["row_offsets"]
        return spec["offset"] + int(offsets[start]), int(offsets[stop] - offsets[start])
    row_bytes = int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
    return spec["offset"] + start * row_bytes, (stop - start) * row_bytes


def _raw_view(data: np.ndarray, spec: Mapping[str, Any], start: int, stop: int) -> Column:
    """Rows ``[start, stop)`` of a raw column from ``data``, their bytes (a view: no copy)."""
    dtype = np.dtype(spec["dtype"])
    if spec["shape"] is None:
        offsets = spec["row_offsets"][start:stop + 1]
        return Ragged(data, offsets - offsets[0], spec["shapes"][start:stop], dtype)
    return data.view(dtype).reshape((stop - start, *spec["shape"]))


def _concat(parts: list[dict[str, Column]]) -> dict[str, Column]:
    names = parts[0].keys()
    return {name: Ragged.concat([p[name] for p in parts]) if isinstance(parts[0][name], Ragged)
            else np.concatenate([p[name] for p in parts]) for name in names}


# ------------------------------------------------------------------------------------------------ storage


class _RawFile:
    """A table's ``<key>.raw``, its size checked against the header when opened. Local: memory-mapped, so a column
    or block is a read-only view of the page cache (no copy). Elsewhere: read whole in one sequential read
    (``whole``), or each block by one ranged read. ``stat`` is what the cheap check compares (:meth:`Store.stat`,
    of the very file mapped or read); blocks are hashed unless ``trusted`` (set by the reader when the table's
    stamp matches)."""

    def __init__(self, store: "Store", key: str, header: dict[str, Any], whole: bool) -> None:
        self.fs, self.path, self.columns = store.fs, store.raw_path(key), header["raw"]
        self.buffer: Any = None
        self.trusted = False
        try:
            if store.local:
                with open(self.path, "rb") as fh:
                    self.stat = store.stat(self.path, fh.fileno())
                    self._check_size(self.stat[0], header)
                    self.buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # the map outlives the file
                if whole:
                    self.buffer.madvise(mmap.MADV_WILLNEED)  # read ahead of the verification's (or training's) faults
            else:
                with self.fs.open_input_file(self.path) as fh:
                    self._check_size(fh.size(), header)
                    self.stat = store.stat(self.path)
                    if whole:
                        self.buffer = fh.read_buffer()
        except FileNotFoundError:
            raise _Corrupt(f"its raw file {self.path} is missing") from None

    def _check_size(self, size: int, header: dict[str, Any]) -> None:
        if size != header["raw_bytes"]:
            raise _Corrupt(f"its raw file {self.path} has {size} bytes, its header says {header['raw_bytes']}")

    def block(self, name: str, b: int) -> Column:
        """Rows of block ``b`` of raw column ``name`` (an array, or a :class:`Ragged` of whole rows), verified
        against the block's sha256 (unless trusted)."""
        spec = self.columns[name]
        start = sum(spec["block_rows"][:b])
        stop = start + spec["block_rows"][b]
        offset, nbytes = _raw_extent(spec, start, stop)
        if self.buffer is not None:
            data = np.frombuffer(self.buffer, np.uint8, nbytes, offset)
        else:
            with self.fs.open_input_file(self.path) as fh:
                data = np.frombuffer(fh.read_at(nbytes, offset), np.uint8)
        block = _raw_view(data, spec, start, stop) if len(data) == nbytes else None
        if block is None or not self.trusted and _column_checksum(block, 0, stop - start) != spec["checksums"][b]:
            raise _Corrupt(f"sha256 mismatch in raw column {name!r}, block {b} of {self.path}")
        return block

    def column(self, name: str) -> Column:
        """All of raw column ``name``: one view of the mapped (or read) buffer, every block verified first unless
        trusted, on threads (hashlib releases the GIL: about 800 MiB/s per core here)."""
        spec = self.columns[name]
        blocks = range(len(spec["block_rows"]))
        if not self.trusted:
            with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
                list(pool.map(lambda b: self.block(name, b), blocks))
        rows = sum(spec["block_rows"])
        offset, nbytes = _raw_extent(spec, 0, rows)
        return _raw_view(np.frombuffer(self.buffer, np.uint8, nbytes, offset), spec, 0, rows)


class TableReader:
    """A stored table opened lazily: row group ``i`` is read and verified by :meth:`group`, block ``b`` of a raw
    column by :meth:`raw_block` (streaming tables larger than memory). ``group_rows`` lists each group's row count,
    ``raw_rows(name)`` each block's. Nothing is hashed when the table's stamp matched (``trusted``); otherwise
    each part is hashed as read, and once every part has been (with raw columns: every raw block, then the row
    groups not read yet), the stamp is written (``stamp``)."""

    def __init__(self, store: "Store", key: str, header: dict[str, Any], raw: _RawFile | None,
                 stamp: dict[str, Any] | None = None, trusted: bool = False) -> None:
        self.store, self.key, self.header, self.raw, self.trusted = store, key, header, raw, trusted
        self.meta: dict[str, Any] = dict(header["meta"])
        self.group_rows: list[int] = list(header["group_rows"])
        self.num_rows: int = int(header["num_rows"])
        self._stamp = None if trusted else stamp
        self._unhashed = {("", i) for i in range(len(self.group_rows))} | {
            (name, b) for name, spec in header["raw"].items() for b in range(len(spec["block_rows"]))}

    def group(self, i: int) -> dict[str, Column]:
        """Row group ``i`` of the Parquet columns (raw columns are read by :meth:`raw_block`)."""
        try:
            return self._group(i)
        except _Corrupt as exc:
            self._failed(exc)

    def raw_rows(self, name: str) -> list[int]:
        return list(self.header["raw"][name]["block_rows"])

    def raw_block(self, name: str, b: int) -> np.ndarray:
        """Block ``b`` of raw column ``name`` (read-only; a view of the mapped file on a local store)."""
        try:
            return self._raw_block(name, b)
        except _Corrupt as exc:
            self._failed(exc)

    def _group(self, i: int) -> dict[str, Column]:
        with self.store.fs.open_input_file(self.store.path(self.key)) as fh:
            group = _decode_group(pq.ParquetFile(fh).read_row_group(i), self.header, i, check=not self.trusted)
        self._hashed(("", i))
        return group

    def _raw_block(self, name: str, b: int) -> np.ndarray:
        block = self.raw.block(name, b)
        self._hashed((name, b))
        return block

    def _hashed(self, part: tuple[str, int]) -> None:
        self._unhashed.discard(part)
        raw_left = any(name for name, _ in self._unhashed)
        if self._stamp is None or raw_left or (self._unhashed and not self.header["raw"]):
            return
        stamp, self._stamp = self._stamp, None
        for _, i in sorted(self._unhashed):  # every raw block matched: the Parquet groups left (a split's labels,
            self._group(i)  # which a streamed split never reads) are hashed now, so the table can be stamped
        self.store.write_stamp(self.key, stamp)

    def _failed(self, exc: _Corrupt) -> None:
        path = self.store.path(self.key)
        self.store.discard(self.key, str(exc))
        raise ValueError(f"stored table {path} failed verification ({exc}); it was moved aside, rebuild it") from None


class TableWriter:
    """Writes one table row group by row group, then makes it visible under its key in one rename (a context
    manager: an exception leaves nothing behind). Every group must have the same columns, dtypes and shapes."""

    def __init__(self, store: "Store", key: str, meta: Mapping[str, Any] | None) -> None:
        self.store, self.key, self.path = store, key, store.path(key)
        # round-trip meta through JSON now: refuses what cannot be stored, and save and load return equal dicts
        self.meta: dict[str, Any] = json.loads(canonical_json(dict(meta or {})))
        # pid + uuid: racing writers (threads, processes, nodes on shared storage) never share a temporary name
        self.tmp = f"{store.root}/.{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        self.raw_tmp = f"{store.root}/.{key}.{os.getpid()}.{uuid.uuid4().hex}.raw.tmp"
        self.specs: dict[str, dict[str, Any]] | None = None
        self.group_rows: list[int] = []
        self.checksums: dict[str, list[str]] = {}
        self.raw: dict[str, dict[str, Any]] = {}  # raw column -> dtype, shape, offset, block_rows, checksums
        self._raw_bytes = 0
        self._file: Any = None
        self._raw_file: Any = None
        self._parquet: pq.ParquetWriter | None = None

    def _output(self, path: str) -> Any:
        self.store.fs.create_dir(self.store.root, recursive=True)
        return open(path, "wb") if self.store.local else self.store.fs.open_output_stream(path)

    def _durable(self, fh: Any) -> None:
        if self.store.local:
            fh.flush()
            os.fsync(fh.fileno())  # durable before visible: after a crash the final name is complete or absent
        fh.close()

    def append(self, columns: Mapping[str, Any]) -> None:
        """Write the next row group."""
        cols = {name: _as_column(name, value) for name, value in sorted(columns.items())}
        lengths = {len(col) for col in cols.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"a row group needs columns of one non-zero length, got {sorted(lengths)}")
        specs = {name: _spec(col) for name, col in cols.items()}
        if self.specs is None:
            self.specs = specs
        elif specs != self.specs:
            raise ValueError(f"row group {len(self.group_rows)} of table {self.key[:12]}... has columns {specs}, the "
                             f"first had {self.specs}")
        rows = lengths.pop()
        for name, col in cols.items():
            self.checksums.setdefault(name, []).append(_column_checksum(col, 0, rows))
        arrow = pa.table({f"{prefix}{name}": arr for name, col in cols.items() for prefix, arr in _arrow(col).items()})
        if self._parquet is None:
            self._file = self._output(self.tmp)
            # lz4: tensors and pixels barely compress, and the store is read on every sweep start
            self._parquet = pq.ParquetWriter(self._file, arrow.schema, compression="lz4", use_dictionary=False,
                                             write_statistics=False)
        self._parquet.write_table(arrow, row_group_size=rows)
        self.group_rows.append(rows)

    def append_raw(self, name: str, rows: Column) -> None:
        """Append ``rows`` (``(n, *shape)``, or a :class:`Ragged` of n rows) to column ``name`` in the raw file, in
        blocks of about :data:`GROUP_BYTES` (:func:`_raw_blocks`), each hashed as it is written (the bytes go from
        the caller's buffer to the file: no copy; a ragged column's row shapes go to the header). A raw column's
        rows are appended in one run; the table's Parquet columns must hold as many rows."""
        col = _as_column(name, rows)
        if not len(col):
            raise ValueError(f"raw column {name!r} takes a non-empty numpy array or Ragged")
        spec = _spec(col)
        if name not in self.raw:
            if self._raw_file is None:
                self._raw_file = self._output(self.raw_tmp)
            self._raw_file.write(b"\0" * (-self._raw_bytes % RAW_ALIGNMENT))
            self._raw_bytes += -self._raw_bytes % RAW_ALIGNMENT
            self.raw[name] = {**spec, "offset": self._raw_bytes, "block_rows": [], "checksums": []}
            if isinstance(col, Ragged):
                self.raw[name]["shapes"] = []
        elif name != list(self.raw)[-1] or {k: self.raw[name].get(k) for k in spec} != spec:
            first = self.raw[name]
            raise ValueError(f"raw column {name!r} of table {self.key[:12]}...: append its rows in one run, all of "
                             f"{first['dtype']} {'ragged' if first['shape'] is None else first['shape']}")
        entry = self.raw[name]
        for start, stop in _raw_blocks(col):
            data = _column_bytes(col, start, stop)
            entry["checksums"].append(_column_checksum(col, start, stop))
            self._raw_file.write(data)
            entry["block_rows"].append(stop - start)
            self._raw_bytes += data.nbytes
        if isinstance(col, Ragged):
            entry["shapes"].extend(col.shapes.tolist())

    def close(self) -> None:
        """Write the header (format, key, columns, row groups, checksums, raw columns, meta) and make the table
        visible: its raw file first, then the Parquet file that names it."""
        if self._parquet is None:
            raise ValueError(f"table {self.key[:12]}... has no rows; the store keeps tables of one or more rows "
                             "(raw columns beside at least one Parquet column, whose rows the table counts)")
        num_rows = sum(self.group_rows)
        for name, spec in self.raw.items():
            if name in self.specs or sum(spec["block_rows"]) != num_rows:
                raise ValueError(f"raw column {name!r} of table {self.key[:12]}... has {sum(spec['block_rows'])} "
                                 f"rows, the table {num_rows}; a column is either raw or Parquet")
        header = {"format_version": _format_version(self.raw), "key": self.key, "num_rows": num_rows,
                  "columns": self.specs, "group_rows": self.group_rows, "checksums": self.checksums,
                  "meta": self.meta}
        if self.raw:  # only tables with raw columns say so: the others are byte for byte what they were
            header.update(raw=self.raw, raw_bytes=self._raw_bytes)
            self._durable(self._raw_file)
            self.store.fs.move(self.raw_tmp, self.store.raw_path(self.key))
        self._parquet.add_key_value_metadata({_METADATA_KEY: canonical_json(header).encode()})
        self._parquet.close()
        self._durable(self._file)
        self.store.fs.move(self.tmp, self.path)

    def abort(self) -> None:
        for closing in (self._parquet, self._file, self._raw_file):
            try:
                if closing is not None:
                    closing.close()
            except (OSError, ValueError):
                pass
        for tmp in (self.tmp, self.raw_tmp):
            try:
                self.store.fs.delete_file(tmp)
            except (FileNotFoundError, OSError):
                pass

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


class Store:
    """A directory (or URI prefix) of content-keyed tables. ``filesystem`` overrides the pyarrow filesystem
    inferred from ``root`` (tests use pyarrow's in-memory filesystem)."""

    def __init__(self, root: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> None:
        root = str(root)
        self.location = root  # as given: what another process opens the same store with
        if filesystem is not None:
            self.fs, self.root = filesystem, root.rstrip("/")
        elif is_uri(root):
            self.fs, self.root = pafs.FileSystem.from_uri(root)
            self.root = self.root.rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def path(self, key: str) -> str:
        _check_key(key)
        return f"{self.root}/{key}.parquet"

    def raw_path(self, key: str) -> str:
        """Where the raw columns of ``key`` are kept (beside its Parquet file)."""
        _check_key(key)
        return f"{self.root}/{key}.raw"

    def save(self, key: str, columns: Mapping[str, Any], meta: Mapping[str, Any] | None = None, *,
             rows_per_group: int | None = None, raw: Sequence[str] = ()) -> Table:
        """Write a table atomically and return it (built from the given arrays, not re-read).

        ``columns``: name -> ``(N, *shape)`` array, list of N arrays of differing shapes, or :class:`Ragged`.
        ``meta``: JSON-able provenance, returned as ``table.meta``. ``rows_per_group`` sets the row groups (default:
        about 64 MiB each), the unit :class:`TableReader` streams. ``raw`` names columns (fixed-shape or ragged) kept
        in the raw file (mapped, not decoded, when read back); at least one column must stay in Parquet.
        """
        if rows_per_group is not None and (isinstance(rows_per_group, bool) or not isinstance(rows_per_group, int)
                                           or rows_per_group < 1):
            raise ValueError(f"rows_per_group must be a positive integer or None, got {rows_per_group!r}")
        if not isinstance(columns, Mapping) or not columns:
            raise ValueError("columns must be a non-empty mapping of column name -> array(s)")
        cols = {name: _as_column(name, value) for name, value in columns.items()}
        if not len(next(iter(cols.values()))):
            raise ValueError(f"table {key[:12]}... has no rows; the store keeps tables of one or more rows")
        raw = tuple(raw)
        if not set(raw) <= set(cols) or set(raw) == set(cols):
            raise ValueError(f"raw={list(raw)} must name columns of {sorted(cols)}, leaving one or more in Parquet")
        with self.writer(key, meta) as writer:
            table = Table(key, cols, writer.meta)  # checks the columns' lengths agree
            parquet = {name: col for name, col in table.columns.items() if name not in raw}
            row_bytes = sum(col.nbytes for col in parquet.values()) // table.num_rows
            for start, stop in _groups(table.num_rows, row_bytes, rows_per_group):
                writer.append({name: col.slice(start, stop) if isinstance(col, Ragged) else col[start:stop]
                               for name, col in parquet.items()})
            for name in raw:
                writer.append_raw(name, table.columns[name])
        return table

    def writer(self, key: str, meta: Mapping[str, Any] | None = None) -> "TableWriter":
        """A :class:`TableWriter` for ``key``: row groups appended one by one (tables larger than memory)."""
        return TableWriter(self, key, meta)

    def stamp_path(self, key: str) -> str:
        """Where the stamp of ``key``'s last full verification is kept (beside its Parquet file)."""
        _check_key(key)
        return f"{self.root}/{key}.verified"

    def keys(self) -> list[str]:
        """The keys of the tables in the store, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        names = [info.base_name for info in infos if info.type == pafs.FileType.File]
        return sorted(n[:-8] for n in names if n.endswith(".parquet") and _KEY_RE.fullmatch(n[:-8]))

    def load(self, key: str) -> Table | None:
        """The verified table for ``key``, or ``None`` if absent or if it failed verification (then reported)."""
        return self._read(key, whole=True)

    def open(self, key: str) -> TableReader | None:
        """A lazy reader of ``key`` (its header verified now, each row group when read), or ``None`` if absent or
        unreadable (then reported and moved aside)."""
        return self._read(key, whole=False)

    def _read(self, key: str, whole: bool) -> Table | TableReader | None:
        try:
            return self._verified(key, whole, full=False)
        except _Corrupt as exc:
            reason = str(exc)
        except _UNREADABLE as exc:
            reason = _unreadable(exc)
        self.discard(key, reason)
        return None

    def _verified(self, key: str, whole: bool, full: bool) -> Table | TableReader | None:
        """``key``'s table (``whole``) or lazy reader, or None if absent; raises _Corrupt (or what a damaged file
        raises). Hashes everything unless its stamp matches and not ``full``; a whole table hashed is stamped."""
        path = self.path(key)
        before = self.stat(path)
        try:
            fh = self.fs.open_input_file(path)
        except FileNotFoundError:
            return None
        with fh:
            parquet = pq.ParquetFile(fh)
            header = _read_header(parquet.metadata.metadata, key)
            if parquet.num_row_groups != len(header["group_rows"]):
                raise _Corrupt(f"it has {parquet.num_row_groups} row groups, its header says "
                               f"{len(header['group_rows'])}")
            raw = _RawFile(self, key, header, whole) if header["raw"] else None
            stamp = _stamp(key, before if self.stat(path) == before else None, raw)
            trusted = not full and stamp is not None and self._read_stamp(key) == stamp
            if raw is not None:
                raw.trusted = trusted
            if not whole:
                return TableReader(self, key, header, raw, stamp, trusted)
            parts = [_decode_group(parquet.read_row_group(i), header, i, check=not trusted)
                     for i in range(parquet.num_row_groups)]
        columns = _concat(parts)
        columns.update({name: raw.column(name) for name in header["raw"]})
        if not trusted and stamp is not None:
            self.write_stamp(key, stamp)
        return Table(key, columns, header["meta"])

    def stat(self, path: str, fd: int | None = None) -> list[int | None] | None:
        """What the cheap check compares of a file (of ``fd`` when given): its size and mtime (ns) and, on a local
        disk, its ctime (ns: changed by any write, even one that puts the mtime back) and inode; None where the file
        is missing or the filesystem keeps no mtime (that table is then hashed on every read)."""
        try:
            if self.local:
                st = os.stat(path) if fd is None else os.fstat(fd)
                return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            info = self.fs.get_file_info(path)
        except OSError:
            return None
        if info.type != pafs.FileType.File or info.mtime_ns is None:
            return None
        return [info.size, info.mtime_ns, None, None]

    def _read_stamp(self, key: str) -> Any:
        try:
            with self.fs.open_input_file(self.stamp_path(key)) as fh:
                return json.loads(fh.read())
        except (OSError, ValueError):  # absent, unreadable or half-written by hand: the table is hashed
            return None

    def write_stamp(self, key: str, stamp: Mapping[str, Any]) -> None:
        """Record that ``key``'s files, as ``stamp`` describes them, were hashed in full and matched (atomically:
        written aside, then renamed; a read-only store just hashes again next time)."""
        tmp = f"{self.root}/.{key}.{os.getpid()}.{uuid.uuid4().hex}.verified.tmp"
        try:
            with self.fs.open_output_stream(tmp) as fh:
                fh.write(canonical_json(stamp).encode())
            self.fs.move(tmp, self.stamp_path(key))
        except OSError:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass

    def discard(self, key: str, reason: str) -> None:
        """Move a table that failed verification aside (``.corrupt``, its raw file too), drop its stamp and warn,
        naming the file and the reason."""
        try:
            self.fs.delete_file(self.stamp_path(key))
        except OSError:  # FileNotFoundError included: never verified
            pass
        path = self.path(key)
        aside = path + ".corrupt"
        try:
            self.fs.move(path, aside)
            outcome = f"moved to {aside}"
        except (FileNotFoundError, OSError):
            outcome = "already removed or replaced by another process"
        try:
            self.fs.move(self.raw_path(key), self.raw_path(key) + ".corrupt")
        except (FileNotFoundError, OSError):
            pass  # a table without raw columns, or a raw file already moved
        warnings.warn(f"stored table {path} failed verification: {reason}; {outcome}; it will be rebuilt",
                      StoreCorruptionWarning, stacklevel=3)


_UNREADABLE = (pa.ArrowException, OSError, ValueError, KeyError, TypeError)  # what damaged Parquet raises


def _unreadable(exc: BaseException) -> str:
    return f"unreadable Parquet ({type(exc).__name__}: {exc})"


def _stamp(key: str, parquet: list[int | None] | None, raw: _RawFile | None) -> dict[str, Any] | None:
    """What a table's stamp says when it was hashed in full as it is now: its files' :meth:`Store.stat` (the
    Parquet file's covers its header, the manifest of checksums and offsets, which every read checks for
    consistency and against the raw file's size); None when a stat is unknown or changed while it was opened."""
    raw_stat = None if raw is None else raw.stat
    if parquet is None or (raw is not None and raw_stat is None):
        return None
    return {"key": key, "parquet": parquet, "raw": raw_stat}


@dataclass(frozen=True)
class TableCheck:
    """One table's full check (:func:`verify_store`): ``problem`` is None when every sha256 matched, else what
    failed (the table was then moved aside, to be rebuilt by the run that needs it); ``nbytes`` were hashed."""

    key: str
    path: str
    nbytes: int
    problem: str | None


def verify_store(store: Store, keys: Sequence[str] | None = None) -> Iterator[TableCheck]:
    """Hash every table of ``store`` (or ``keys``) in full, whatever their stamps say, one :class:`TableCheck` per
    table as it is done (``raykd verify``): what the cheap check on load cannot see, bits flipped in place, is found
    here. A table read by row group and raw block, so memory stays at one block; sound tables are stamped anew."""
    for key in store.keys() if keys is None else keys:
        yield _verify_table(store, key)


def _verify_table(store: Store, key: str) -> TableCheck:
    nbytes = 0
    try:
        reader = store._verified(key, whole=False, full=True)
        if reader is None:
            return TableCheck(key, store.path(key), 0, "no such table")
        for i in range(len(reader.group_rows)):
            nbytes += sum(col.nbytes for col in reader._group(i).values())
        for name in reader.header["raw"]:
            nbytes += sum(reader._raw_block(name, b).nbytes for b in range(len(reader.raw_rows(name))))
        return TableCheck(key, store.path(key), nbytes, None)
    except _Corrupt as exc:
        problem = str(exc)
    except _UNREADABLE as exc:
        problem = _unreadable(exc)
    with warnings.catch_warnings():  # the check itself reports it
        warnings.simplefilter("ignore", StoreCorruptionWarning)
        store.discard(key, problem)
    return TableCheck(key, store.path(key), nbytes, problem)


def store_root(cache_dir: str | os.PathLike) -> str:
    """Where a cache directory keeps its store (decoded splits and teacher tables): :attr:`CacheLayout.store`."""
    return str(CacheLayout.of(cache_dir).store)


def cache_store(cache_dir: str | os.PathLike) -> Store:
    """The :class:`Store` of a cache directory (:func:`store_root`)."""
    return Store(store_root(cache_dir))
