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
  images of millions of values).

Rows are written in row groups of about 64 MiB (:class:`TableWriter` appends them one by one, so a table need not
fit in memory), and the file's key-value metadata (``raykd.store``) records the format version, the key, the row count, each column's dtype and shape, a sha256 of every column in every row group, and
the caller's ``meta``. :meth:`Store.load` verifies all of it; :meth:`Store.open` gives a lazy reader that verifies
each row group as it is read, for tables larger than memory. A table that fails verification is reported
(:class:`StoreCorruptionWarning`, naming the file and the reason), moved aside to ``<key>.parquet.corrupt`` and
treated as absent, so the caller rebuilds it: nothing unverified is ever used.

Writers write to a unique temporary name in the same directory (fsynced on local disks) and then rename it onto
the final name, so readers see either no table or a complete one, and racing writers of one key both leave a
valid table. Temporary files (``.<key>.*.tmp``) are left only by a writer killed mid-write and are safe to delete.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["STORE_FORMAT_VERSION", "Ragged", "Store", "StoreCorruptionWarning", "Table", "TableReader",
           "TableWriter", "content_key", "file_sha256"]

# Bump whenever the on-disk layout or the meaning of a stored column changes: old tables then get new keys.
STORE_FORMAT_VERSION = 2

_METADATA_KEY = b"raykd.store"
_SHAPE_PREFIX = "__shape__"
_DTYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.uint8, np.bool_, np.int16, np.int32, np.int64))
_KEY_RE = re.compile(r"[0-9a-f]{64}")
GROUP_BYTES = 64 * 2**20  # bytes of a row group: what a streamed table reads at a time


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
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([r.size * native.itemsize for r in arrays], out=offsets[1:])
        shapes = np.array([r.shape for r in arrays], dtype=np.int64).reshape(len(arrays), ndim)
        return cls(data, offsets, shapes, native)

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


def _decode_group(batch: pa.Table, header: dict[str, Any], group: int) -> dict[str, Column]:
    """One row group's columns, verified against the header; raises _Corrupt with the reason."""
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
        if _column_checksum(col, 0, rows) != header["checksums"][name][group]:
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
    if version != STORE_FORMAT_VERSION:
        raise _Corrupt(f"format version {version!r}, this raykd reads version {STORE_FORMAT_VERSION}")
    if stored_key != key:
        raise _Corrupt(f"it holds key {stored_key!r}, not {key!r}")
    if set(checksums) != set(columns) or any(len(v) != len(groups) for v in checksums.values()):
        raise _Corrupt("checksums do not cover every column and row group")
    if sum(groups) != header["num_rows"]:
        raise _Corrupt(f"row groups hold {sum(groups)} rows, the header says {header['num_rows']}")
    return header


def _concat(parts: list[dict[str, Column]]) -> dict[str, Column]:
    names = parts[0].keys()
    return {name: Ragged.concat([p[name] for p in parts]) if isinstance(parts[0][name], Ragged)
            else np.concatenate([p[name] for p in parts]) for name in names}


# ------------------------------------------------------------------------------------------------ storage


class TableReader:
    """A stored table opened lazily: row group ``i`` is read and verified by :meth:`group` (streaming tables
    larger than memory). ``group_rows`` lists each group's row count."""

    def __init__(self, store: "Store", key: str, header: dict[str, Any]) -> None:
        self.store, self.key, self.header = store, key, header
        self.meta: dict[str, Any] = dict(header["meta"])
        self.group_rows: list[int] = list(header["group_rows"])
        self.num_rows: int = int(header["num_rows"])

    def group(self, i: int) -> dict[str, Column]:
        path = self.store.path(self.key)
        try:
            with self.store.fs.open_input_file(path) as fh:
                return _decode_group(pq.ParquetFile(fh).read_row_group(i), self.header, i)
        except _Corrupt as exc:
            self.store.discard(path, str(exc))
            raise ValueError(f"stored table {path} failed verification ({exc}); it was moved aside, rebuild it"
                             ) from None


class TableWriter:
    """Writes one table row group by row group, then makes it visible under its key in one rename (a context
    manager: an exception leaves nothing behind). Every group must have the same columns, dtypes and shapes."""

    def __init__(self, store: "Store", key: str, meta: Mapping[str, Any] | None) -> None:
        self.store, self.key, self.path = store, key, store.path(key)
        # round-trip meta through JSON now: refuses what cannot be stored, and save and load return equal dicts
        self.meta: dict[str, Any] = json.loads(canonical_json(dict(meta or {})))
        # pid + uuid: racing writers (threads, processes, nodes on shared storage) never share a temporary name
        self.tmp = f"{store.root}/.{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        self.specs: dict[str, dict[str, Any]] | None = None
        self.group_rows: list[int] = []
        self.checksums: dict[str, list[str]] = {}
        self._file: Any = None
        self._parquet: pq.ParquetWriter | None = None

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
            self.store.fs.create_dir(self.store.root, recursive=True)
            self._file = open(self.tmp, "wb") if self.store.local else self.store.fs.open_output_stream(self.tmp)
            # lz4: tensors and pixels barely compress, and the store is read on every sweep start
            self._parquet = pq.ParquetWriter(self._file, arrow.schema, compression="lz4", use_dictionary=False,
                                             write_statistics=False)
        self._parquet.write_table(arrow, row_group_size=rows)
        self.group_rows.append(rows)

    def close(self) -> None:
        """Write the header (format, key, columns, row groups, checksums, meta) and make the table visible."""
        if self._parquet is None:
            raise ValueError(f"table {self.key[:12]}... has no rows; the store keeps tables of one or more rows")
        header = {"format_version": STORE_FORMAT_VERSION, "key": self.key, "num_rows": sum(self.group_rows),
                  "columns": self.specs, "group_rows": self.group_rows, "checksums": self.checksums,
                  "meta": self.meta}
        self._parquet.add_key_value_metadata({_METADATA_KEY: canonical_json(header).encode()})
        self._parquet.close()
        if self.store.local:
            self._file.flush()
            os.fsync(self._file.fileno())  # durable before visible: after a crash the final name is complete or absent
        self._file.close()
        self.store.fs.move(self.tmp, self.path)

    def abort(self) -> None:
        for closing in (self._parquet, self._file):
            try:
                if closing is not None:
                    closing.close()
            except (OSError, ValueError):
                pass
        try:
            self.store.fs.delete_file(self.tmp)
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
        elif "://" in root:
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

    def save(self, key: str, columns: Mapping[str, Any], meta: Mapping[str, Any] | None = None, *,
             rows_per_group: int | None = None) -> Table:
        """Write a table atomically and return it (built from the given arrays, not re-read).

        ``columns``: name -> ``(N, *shape)`` array, list of N arrays of differing shapes, or :class:`Ragged`.
        ``meta``: JSON-able provenance, returned as ``table.meta``. ``rows_per_group`` sets the row groups (default:
        about 64 MiB each), the unit :class:`TableReader` streams.
        """
        if rows_per_group is not None and (isinstance(rows_per_group, bool) or not isinstance(rows_per_group, int)
                                           or rows_per_group < 1):
            raise ValueError(f"rows_per_group must be a positive integer or None, got {rows_per_group!r}")
        if not isinstance(columns, Mapping) or not columns:
            raise ValueError("columns must be a non-empty mapping of column name -> array(s)")
        cols = {name: _as_column(name, value) for name, value in columns.items()}
        if not len(next(iter(cols.values()))):
            raise ValueError(f"table {key[:12]}... has no rows; the store keeps tables of one or more rows")
        with self.writer(key, meta) as writer:
            table = Table(key, cols, writer.meta)  # checks the columns' lengths agree
            row_bytes = sum(col.nbytes for col in cols.values()) // table.num_rows
            for start, stop in _groups(table.num_rows, row_bytes, rows_per_group):
                writer.append({name: col.slice(start, stop) if isinstance(col, Ragged) else col[start:stop]
                               for name, col in table.columns.items()})
        return table

    def writer(self, key: str, meta: Mapping[str, Any] | None = None) -> "TableWriter":
        """A :class:`TableWriter` for ``key``: row groups appended one by one (tables larger than memory)."""
        return TableWriter(self, key, meta)

    def load(self, key: str) -> Table | None:
        """The verified table for ``key``, or ``None`` if absent or if it failed verification (then reported)."""
        return self._read(key, whole=True)

    def open(self, key: str) -> TableReader | None:
        """A lazy reader of ``key`` (its header verified now, each row group when read), or ``None`` if absent or
        unreadable (then reported and moved aside)."""
        return self._read(key, whole=False)

    def _read(self, key: str, whole: bool) -> Table | TableReader | None:
        path = self.path(key)
        try:
            fh = self.fs.open_input_file(path)
        except FileNotFoundError:
            return None
        try:
            with fh:
                parquet = pq.ParquetFile(fh)
                header = _read_header(parquet.metadata.metadata, key)
                if parquet.num_row_groups != len(header["group_rows"]):
                    raise _Corrupt(f"it has {parquet.num_row_groups} row groups, its header says "
                                   f"{len(header['group_rows'])}")
                if not whole:
                    return TableReader(self, key, header)
                parts = [_decode_group(parquet.read_row_group(i), header, i) for i in range(parquet.num_row_groups)]
            return Table(key, _concat(parts), header["meta"])
        except _Corrupt as exc:
            reason = str(exc)
        except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"unreadable Parquet ({type(exc).__name__}: {exc})"
        self.discard(path, reason)
        return None

    def discard(self, path: str, reason: str) -> None:
        """Move a table that failed verification aside (``.corrupt``) and warn, naming the file and the reason."""
        aside = path + ".corrupt"
        try:
            self.fs.move(path, aside)
            outcome = f"moved to {aside}"
        except (FileNotFoundError, OSError):
            outcome = "already removed or replaced by another process"
        warnings.warn(f"stored table {path} failed verification: {reason}; {outcome}; it will be rebuilt",
                      StoreCorruptionWarning, stacklevel=3)
