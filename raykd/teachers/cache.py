"""Persistent, content-keyed store of frozen-teacher outputs (Parquet via pyarrow).

A sweep computes each teacher's outputs once per (teacher weights, dataset, view plan, output names) and every
trial and epoch reads them back; ``cache_key`` hashes exactly those inputs plus ``CACHE_FORMAT_VERSION``, one key
per teacher (MTKD's three teachers and its aggregator are four entries).

Layout of one entry, ``<root>/<key>.parquet``, one row per (sample, view):

* ``index`` int64 sample id and ``view`` int16/int32 view number (both >= 0, pairs unique);
* a *fixed-shape* output (e.g. logits ``(N, C)``, features ``(N, C, H, W)``) is a ``fixed_size_list`` column of
  float16/float32 (the dtype given is kept) holding each row's flattened array;
* a *variable-shape* output (SR teachers' whole images, each its own ``(3, H, W)``) is a ``large_binary`` column
  holding each row's flattened array as raw little-endian bytes, plus a ``__shape__<name>`` column of
  ``fixed_size_list<int64>[ndim]`` holding that row's shape. Raw bytes instead of ``list<float16>`` because
  Parquet encodes list columns with a repetition level per element, several times slower to write and read for
  images of millions of values.

The schema metadata key ``raykd.cache`` holds JSON with the format version, the key, the row count, each output's
dtype and per-row shape (``null`` for variable), a sha256 of every column's data and the caller's ``meta``.

Writers write to a unique temporary name in the same directory, fsync, then ``os.replace`` it onto the final
name, so readers see either no entry or a complete one and racing writers of one key both leave a valid entry (the
last rename wins). ``TeacherCache.load`` verifies everything above; an entry that fails is reported with a
``CacheCorruptionWarning`` naming the file and the reason, moved aside to ``<key>.parquet.corrupt`` and ``None``
is returned so the caller recomputes it. Temporary files (``.<key>.*.tmp``) left behind only by a writer killed
mid-write are safe to delete.
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
import pyarrow.parquet as pq

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheCorruptionWarning",
    "CacheEntry",
    "TeacherCache",
    "cache_key",
    "file_sha256",
]

# Bump whenever the on-disk layout or the meaning of a stored column changes: old entries then get new keys.
CACHE_FORMAT_VERSION = 1

_METADATA_KEY = b"raykd.cache"
_SHAPE_PREFIX = "__shape__"
_RESERVED_COLUMNS = frozenset({"index", "view"})
_OUTPUT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_VIEW_DTYPES = (np.dtype(np.int16), np.dtype(np.int32))
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_TEACHER_FIELDS = frozenset({"name", "weights_sha256", "config"})


class CacheCorruptionWarning(RuntimeWarning):
    """A cache entry on disk failed verification and was discarded; the caller recomputes it."""


class _CorruptEntry(Exception):
    """Internal: an entry failed verification for the reason in the message."""


# --------------------------------------------------------------------------------------------------- keys


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
    raise TypeError(
        f"{type(obj).__name__} value {obj!r} is not JSON-serialisable; use str, int, float, bool, None, list or dict"
    )


def _canonical_json(obj: Any) -> str:
    """One text per value: sorted keys, no whitespace, NaN/inf refused (they have no canonical JSON form)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    )


def cache_key(
    *,
    teacher: Mapping[str, Any],
    dataset_fingerprint: str,
    view_plan: Mapping[str, Any],
    outputs: Sequence[str],
) -> str:
    """Content key of one teacher's cached outputs: sha256 of a canonical JSON of exactly the inputs below.

    Args:
        teacher: ``{"name": str, "weights_sha256": 64 hex digits, "config": {...}}`` (no other fields, so that
            nothing incidental such as a device or a path splits the cache). Several teachers get one key each.
        dataset_fingerprint: identifies the exact samples (e.g. a hash of the file list and contents).
        view_plan: the replayable augmentation plan (views per sample, crop boxes, flips, seeds, ...).
        outputs: names of the cached outputs; order does not matter (the entry stores them by name).

    The format version is part of the hashed document, so a format change gives every entry a new key.
    """
    if not isinstance(teacher, Mapping):
        raise TypeError(
            f"teacher must be a mapping with fields {sorted(_TEACHER_FIELDS)}, got {type(teacher).__name__}"
        )
    missing = _TEACHER_FIELDS - teacher.keys()
    extra = teacher.keys() - _TEACHER_FIELDS
    if missing or extra:
        raise ValueError(
            f"teacher must have exactly the fields {sorted(_TEACHER_FIELDS)}; missing {sorted(missing)}, "
            f"unexpected {sorted(map(str, extra))}"
        )
    name, weights, config = teacher["name"], teacher["weights_sha256"], teacher["config"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"teacher['name'] must be a non-empty string, got {name!r}")
    if not isinstance(weights, str) or not _KEY_RE.fullmatch(weights.lower()):
        raise ValueError(
            f"teacher['weights_sha256'] of teacher {name!r} must be 64 hex digits (see file_sha256), got {weights!r}"
        )
    if not isinstance(config, Mapping):
        raise TypeError(f"teacher['config'] of teacher {name!r} must be a mapping, got {type(config).__name__}")
    if not isinstance(dataset_fingerprint, str) or not dataset_fingerprint:
        raise ValueError(f"dataset_fingerprint must be a non-empty string, got {dataset_fingerprint!r}")
    if not isinstance(view_plan, Mapping):
        raise TypeError(f"view_plan must be a mapping, got {type(view_plan).__name__}")
    if isinstance(outputs, str) or not isinstance(outputs, Sequence) or not outputs:
        raise TypeError(f"outputs must be a non-empty sequence of output names, got {outputs!r}")
    names = list(outputs)
    for out in names:
        _check_output_name(out)
    if len(set(names)) != len(names):
        raise ValueError(f"outputs must be unique, got {names}")
    document = {
        "format_version": CACHE_FORMAT_VERSION,
        "teacher": {"name": name, "weights_sha256": weights.lower(), "config": dict(config)},
        "dataset_fingerprint": dataset_fingerprint,
        "view_plan": dict(view_plan),
        "outputs": sorted(names),
    }
    return hashlib.sha256(_canonical_json(document).encode("utf-8")).hexdigest()


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(f"cache key must be the 64 lowercase hex digits returned by cache_key(), got {key!r}")


def _check_output_name(name: object) -> None:
    if not isinstance(name, str) or not name or name in _RESERVED_COLUMNS or name.startswith("__"):
        raise ValueError(
            f"output name {name!r} is invalid: use a non-empty string other than 'index'/'view' not starting with '__'"
        )


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data).hexdigest()


# ------------------------------------------------------------------------------------------------ outputs


def _readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view, so an entry's arrays cannot be edited in place (the caller's own array stays writable)."""
    view = array.view()
    view.flags.writeable = False
    return view


class _Ragged:
    """Rows of differing shapes: all rows' bytes in one buffer, ``offsets`` (N+1) into it and ``shapes`` (N, ndim)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, shapes: np.ndarray, dtype: np.dtype) -> None:
        self.data, self.offsets, self.shapes = _readonly(data), _readonly(offsets), _readonly(shapes)
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.offsets.nbytes + self.shapes.nbytes

    def rows(self, rows: np.ndarray) -> list[np.ndarray]:
        """Zero-copy, read-only views of the requested rows."""
        return [
            self.data[self.offsets[r] : self.offsets[r + 1]].view(self.dtype).reshape(tuple(self.shapes[r]))
            for r in rows.tolist()
        ]


class CacheEntry:
    """One teacher's outputs for a set of (sample, view) pairs, held in memory as numpy arrays.

    Attributes:
        key: the cache key. meta: the dict given to ``TeacherCache.save``.
        index: (N,) int64 sample ids. view: (N,) int16/int32 view numbers.
        outputs: output names, sorted. shapes: per-row shape of each output (``None`` where rows differ).
        dtypes: numpy dtype of each output.
    """

    def __init__(
        self,
        *,
        key: str,
        index: np.ndarray,
        view: np.ndarray,
        arrays: Mapping[str, np.ndarray | _Ragged],
        meta: Mapping[str, Any],
    ) -> None:
        self.key = key
        self.meta = dict(meta)
        self.index = _readonly(index)
        self.view = _readonly(view)
        self._arrays = {name: arrays[name] if isinstance(arrays[name], _Ragged) else _readonly(arrays[name])
                        for name in sorted(arrays)}
        self.outputs: tuple[str, ...] = tuple(self._arrays)
        self.shapes: dict[str, tuple[int, ...] | None] = {
            name: None if isinstance(arr, _Ragged) else tuple(arr.shape[1:]) for name, arr in self._arrays.items()
        }
        self.dtypes: dict[str, np.dtype] = {name: arr.dtype for name, arr in self._arrays.items()}
        # (sample, view) -> row via one sorted int64 code; views are bounded by the stored maximum so codes are
        # unique and a query with a larger view cannot alias another sample's row.
        self._num_views = int(view.max()) + 1
        self._max_index = int(index.max())
        if self._max_index > (np.iinfo(np.int64).max - self._num_views) // self._num_views:
            raise ValueError(
                f"sample ids up to {self._max_index} with {self._num_views} views overflow the int64 row code"
            )
        codes = index * self._num_views + view.astype(np.int64)
        self._order = np.argsort(codes, kind="stable")
        self._sorted_codes = codes[self._order]
        duplicated = np.flatnonzero(self._sorted_codes[1:] == self._sorted_codes[:-1])
        if duplicated.size:
            row = int(self._order[duplicated[0]])
            raise ValueError(
                f"(sample, view) pairs must be unique; ({int(index[row])}, {int(view[row])}) appears more than once"
            )

    @property
    def num_rows(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.view.nbytes + sum(arr.nbytes for arr in self._arrays.values())

    def array(self, name: str) -> np.ndarray | list[np.ndarray]:
        """All rows of one output in stored order: an (N, *shape) array, or a list of N arrays if rows differ."""
        arr = self._get(name)
        return arr.rows(np.arange(len(arr))) if isinstance(arr, _Ragged) else arr

    def rows(self, index: np.ndarray | int, view: np.ndarray | int) -> np.ndarray:
        """Row numbers of the (sample, view) pairs (``index`` and ``view`` broadcast); KeyError names missing pairs."""
        qi, qv = np.broadcast_arrays(np.asarray(index), np.asarray(view))
        if qi.ndim > 1:
            raise ValueError(f"index and view must be scalars or 1-D, got shape {qi.shape}")
        for label, q in (("index", qi), ("view", qv)):
            if q.size and q.dtype.kind not in "iu":
                raise TypeError(f"{label} must hold integers, got dtype {q.dtype}")
        qi = np.atleast_1d(qi).astype(np.int64)
        qv = np.atleast_1d(qv).astype(np.int64)
        valid = (qi >= 0) & (qi <= self._max_index) & (qv >= 0) & (qv < self._num_views)
        codes = np.where(valid, qi * self._num_views + qv, -1)
        pos = np.minimum(np.searchsorted(self._sorted_codes, codes), self.num_rows - 1)
        found = valid & (self._sorted_codes[pos] == codes)
        if not found.all():
            missing = np.flatnonzero(~found)
            pairs = [(int(qi[m]), int(qv[m])) for m in missing[:10]]
            more = f" and {missing.size - 10} more" if missing.size > 10 else ""
            raise KeyError(
                f"{missing.size} (sample, view) pair(s) not in teacher cache entry {self.key}: {pairs}{more}"
            )
        return self._order[pos]

    def lookup(
        self, index: np.ndarray | int, view: np.ndarray | int, names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray | list[np.ndarray]]:
        """Outputs for the (sample, view) pairs, in query order.

        Fixed-shape outputs come back as one (Q, *shape) array, variable-shape outputs as a list of Q arrays.
        ``names`` picks outputs (default: all). Raises KeyError naming the pairs that are not cached.
        """
        rows = self.rows(index, view)
        selected = self.outputs if names is None else tuple(names)
        result: dict[str, np.ndarray | list[np.ndarray]] = {}
        for name in selected:
            arr = self._get(name)
            result[name] = arr.rows(rows) if isinstance(arr, _Ragged) else arr[rows]
        return result

    def _get(self, name: str) -> np.ndarray | _Ragged:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(
                f"output {name!r} not in teacher cache entry {self.key}; it holds {list(self.outputs)}"
            ) from None

    def __repr__(self) -> str:
        return f"CacheEntry(key={self.key[:12]}..., rows={self.num_rows}, outputs={self.shapes})"


# ------------------------------------------------------------------------------------------------ storage


def _as_index_view(index: np.ndarray, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index, view = np.asarray(index), np.asarray(view)
    if index.ndim != 1 or view.shape != index.shape or index.size == 0:
        raise ValueError(
            f"index and view must be non-empty 1-D arrays of equal length, got shapes {index.shape} and {view.shape}"
        )
    if index.dtype.kind not in "iu" or view.dtype.kind not in "iu":
        raise TypeError(f"index and view must hold integers, got dtypes {index.dtype} and {view.dtype}")
    if index.min() < 0 or view.min() < 0:
        raise ValueError("sample ids (index) and view numbers must be >= 0")
    if index.max() > np.iinfo(np.int64).max:
        raise ValueError(f"sample ids must fit int64, got a maximum of {int(index.max())}")
    if view.dtype not in _VIEW_DTYPES:
        if view.max() > np.iinfo(np.int32).max:
            raise ValueError(f"view numbers must fit int32, got a maximum of {int(view.max())}")
        # Keep int16/int32 as given; narrow anything else to the smaller type that holds it.
        view = view.astype(np.int16 if view.max() <= np.iinfo(np.int16).max else np.int32)
    return np.ascontiguousarray(index, dtype=np.int64), np.ascontiguousarray(view, dtype=view.dtype.name)


def _as_output(name: str, value: Any, num_rows: int) -> np.ndarray | _Ragged:
    """Validate one output: an (N, *shape) float array, or a sequence of N float arrays of one dtype and ndim."""
    _check_output_name(name)
    if isinstance(value, np.ndarray):
        if value.ndim == 0 or len(value) != num_rows:
            raise ValueError(
                f"output {name!r} must have {num_rows} rows (one per (sample, view)), got shape {value.shape}"
            )
        if value.dtype not in _OUTPUT_DTYPES:
            raise TypeError(f"output {name!r} must be float16 or float32, got {value.dtype}")
        if int(np.prod(value.shape[1:])) == 0:
            raise ValueError(f"output {name!r} has an empty per-row shape {value.shape[1:]}")
        return np.ascontiguousarray(value, dtype=value.dtype.name)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"output {name!r} must be a numpy array (fixed shape) or a list of numpy arrays (variable shape), "
            f"got {type(value).__name__}"
        )
    rows = [np.asarray(v) for v in value]
    if len(rows) != num_rows:
        raise ValueError(f"output {name!r} must have {num_rows} rows (one per (sample, view)), got {len(rows)}")
    dtype, ndim = rows[0].dtype, rows[0].ndim
    if dtype not in _OUTPUT_DTYPES or ndim == 0:
        raise TypeError(f"output {name!r} rows must be float16 or float32 arrays of ndim >= 1, got {dtype} ndim {ndim}")
    for i, row in enumerate(rows):
        if row.dtype != dtype or row.ndim != ndim:
            raise TypeError(
                f"output {name!r} row {i} is {row.dtype} with ndim {row.ndim}; "
                f"every row must be {dtype} with ndim {ndim}"
            )
    native = np.dtype(dtype.name)
    data = np.concatenate([np.ascontiguousarray(r, dtype=native).reshape(-1) for r in rows]).view(np.uint8)
    offsets = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum([r.size * native.itemsize for r in rows], out=offsets[1:])
    shapes = np.array([r.shape for r in rows], dtype=np.int64).reshape(num_rows, ndim)
    return _Ragged(data, offsets, shapes, native)


def _ragged_checksum(arr: _Ragged) -> str:
    return _sha256(arr.data[arr.offsets[0] : arr.offsets[-1]])


def _build_table(key: str, index: np.ndarray, view: np.ndarray, arrays: Mapping[str, np.ndarray | _Ragged],
                 meta: Mapping[str, Any]) -> pa.Table:
    columns: dict[str, pa.Array] = {"index": pa.array(index), "view": pa.array(view)}
    checksums = {"index": _sha256(index), "view": _sha256(view)}
    specs: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        if isinstance(arr, _Ragged):
            columns[name] = pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), len(arr), [None, pa.py_buffer(arr.offsets), pa.py_buffer(arr.data)]
            )
            shape_col = _SHAPE_PREFIX + name
            columns[shape_col] = pa.FixedSizeListArray.from_arrays(
                pa.array(arr.shapes.reshape(-1)), arr.shapes.shape[1]
            )
            checksums[name] = _ragged_checksum(arr)
            checksums[shape_col] = _sha256(arr.shapes)
            specs[name] = {"dtype": arr.dtype.name, "shape": None, "ndim": int(arr.shapes.shape[1])}
        else:
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), int(np.prod(arr.shape[1:])))
            checksums[name] = _sha256(arr)
            specs[name] = {"dtype": arr.dtype.name, "shape": list(arr.shape[1:])}
    header = {
        "format_version": CACHE_FORMAT_VERSION,
        "key": key,
        "num_rows": len(index),
        "outputs": specs,
        "checksums": checksums,
        "meta": dict(meta),
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({_METADATA_KEY: _canonical_json(header).encode("utf-8")})


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    chunk = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if chunk.null_count:
        raise _CorruptEntry(f"column {name!r} has {chunk.null_count} null rows")
    return chunk


def _numeric(chunk: pa.Array, name: str, expected: pa.DataType) -> np.ndarray:
    if chunk.type != expected:
        raise _CorruptEntry(f"column {name!r} is {chunk.type}, expected {expected}")
    return chunk.to_numpy(zero_copy_only=False)


def _fixed_list(chunk: pa.Array, name: str, value_type: pa.DataType, size: int) -> np.ndarray:
    if chunk.type != pa.list_(value_type, size):
        raise _CorruptEntry(f"column {name!r} is {chunk.type}, expected fixed_size_list<{value_type}>[{size}]")
    values = chunk.flatten()
    if values.null_count:
        raise _CorruptEntry(f"column {name!r} has {values.null_count} null values")
    return values.to_numpy(zero_copy_only=False).reshape(len(chunk), size)


def _entry_from_table(key: str, table: pa.Table) -> CacheEntry:
    """Rebuild and verify an entry; raises _CorruptEntry with the reason on any mismatch."""
    raw = (table.schema.metadata or {}).get(_METADATA_KEY)
    if raw is None:
        raise _CorruptEntry(f"schema metadata {_METADATA_KEY.decode()!r} is missing")
    try:
        header = json.loads(raw)
        version, stored_key, num_rows = header["format_version"], header["key"], header["num_rows"]
        specs, checksums, meta = header["outputs"], header["checksums"], header["meta"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _CorruptEntry(f"schema metadata is unreadable ({exc!r})") from None
    if version != CACHE_FORMAT_VERSION:
        raise _CorruptEntry(f"format version {version!r}, this raykd reads version {CACHE_FORMAT_VERSION}")
    if stored_key != key:
        raise _CorruptEntry(f"it holds key {stored_key!r}, not {key!r}")
    if table.num_rows != num_rows:
        raise _CorruptEntry(f"it has {table.num_rows} rows, its header says {num_rows}")
    ragged_names = [name for name, spec in specs.items() if spec["shape"] is None]
    expected_columns = {"index", "view"} | set(specs) | {_SHAPE_PREFIX + name for name in ragged_names}
    if set(table.column_names) != expected_columns or set(checksums) != expected_columns:
        raise _CorruptEntry(
            f"columns {sorted(table.column_names)} do not match the header's {sorted(expected_columns)}"
        )

    index = _numeric(_column(table, "index"), "index", pa.int64())
    view_chunk = _column(table, "view")
    if view_chunk.type not in (pa.int16(), pa.int32()):
        raise _CorruptEntry(f"column 'view' is {view_chunk.type}, expected int16 or int32")
    view = view_chunk.to_numpy(zero_copy_only=False)
    actual = {"index": _sha256(index), "view": _sha256(view)}
    arrays: dict[str, np.ndarray | _Ragged] = {}
    for name, spec in specs.items():
        dtype = np.dtype(spec["dtype"])
        if dtype not in _OUTPUT_DTYPES:
            raise _CorruptEntry(f"output {name!r} has dtype {dtype}, expected float16 or float32")
        value_type = pa.from_numpy_dtype(dtype)
        if spec["shape"] is not None:
            shape = tuple(int(s) for s in spec["shape"])
            flat = _fixed_list(_column(table, name), name, value_type, int(np.prod(shape)))
            arrays[name] = flat.reshape((num_rows, *shape))
            actual[name] = _sha256(flat)
            continue
        shape_col = _SHAPE_PREFIX + name
        shapes = _fixed_list(_column(table, shape_col), shape_col, pa.int64(), int(spec["ndim"]))
        chunk = _column(table, name)
        if chunk.type != pa.large_binary():
            raise _CorruptEntry(f"column {name!r} is {chunk.type}, expected large_binary")
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[chunk.offset : chunk.offset + num_rows + 1]
        sizes = np.prod(shapes, axis=1) * dtype.itemsize
        if (shapes < 0).any() or not np.array_equal(np.diff(offsets), sizes):
            raise _CorruptEntry(f"output {name!r}: row byte lengths do not match the stored shapes")
        ragged = _Ragged(np.frombuffer(data_buf, dtype=np.uint8), offsets, shapes, dtype)
        arrays[name] = ragged
        actual[name] = _ragged_checksum(ragged)
        actual[shape_col] = _sha256(shapes)
    bad = sorted(col for col in expected_columns if actual[col] != checksums[col])
    if bad:
        raise _CorruptEntry(f"sha256 mismatch in column(s) {bad}")
    try:
        return CacheEntry(key=key, index=index, view=view, arrays=arrays, meta=meta)
    except ValueError as exc:
        raise _CorruptEntry(str(exc)) from None


class TeacherCache:
    """A directory of cache entries, one Parquet file per key; usable from any process that sees ``root``.

    On a multi-node cluster ``root`` must be shared storage (e.g. EFS/NFS mounted at the same path on every
    node) for an actor on one node to write what trials on other nodes read.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"TeacherCache({str(self.root)!r})"

    def entry_path(self, key: str) -> Path:
        _check_key(key)
        return self.root / f"{key}.parquet"

    def save(
        self,
        key: str,
        index: np.ndarray,
        view: np.ndarray,
        outputs: Mapping[str, np.ndarray | Sequence[np.ndarray]],
        meta: Mapping[str, Any] | None = None,
    ) -> CacheEntry:
        """Write an entry atomically and return it (built from the given arrays, not re-read).

        Args:
            key: from ``cache_key``.
            index: (N,) non-negative integer sample ids, stored as int64.
            view: (N,) non-negative view numbers; int16/int32 are kept, other integer dtypes are narrowed to
                the smaller of the two that holds them. (index, view) pairs must be unique.
            outputs: name -> (N, *shape) float16/float32 array, or name -> list of N float16/float32 arrays
                of one dtype and ndim whose shapes differ (whole SR images). Dtypes are kept.
            meta: JSON-serialisable provenance (teacher name, timings, ...), returned as ``entry.meta``.
        """
        path = self.entry_path(key)
        index, view = _as_index_view(index, view)
        if not isinstance(outputs, Mapping) or not outputs:
            raise ValueError("outputs must be a non-empty mapping of output name -> array(s)")
        arrays = {name: _as_output(name, value, len(index)) for name, value in outputs.items()}
        # Round-trip meta through JSON now: refuses what cannot be stored, and save and load return equal dicts.
        meta = json.loads(_canonical_json(dict(meta or {})))
        entry = CacheEntry(key=key, index=index, view=view, arrays=arrays, meta=meta)
        table = _build_table(key, index, view, arrays, entry.meta)

        self.root.mkdir(parents=True, exist_ok=True)
        # pid + uuid: racing writers (threads or processes, one node or several on shared storage) never share one.
        tmp = self.root / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(
                    table, fh, compression="zstd", use_dictionary=False, write_statistics=["index", "view"]
                )
                fh.flush()
                # Durable before visible: after a crash the final name holds a complete file or nothing.
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return entry

    def load(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``, or ``None`` if absent or if it failed verification (then reported)."""
        path = self.entry_path(key)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return None
        with fh:
            stat = os.fstat(fh.fileno())
            try:
                table = pq.read_table(fh)
                return _entry_from_table(key, table)
            except _CorruptEntry as exc:
                reason = str(exc)
            except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as exc:
                reason = f"unreadable Parquet or header ({type(exc).__name__}: {exc})"
        self._discard(path, stat, reason)
        return None

    def _discard(self, path: Path, stat: os.stat_result, reason: str) -> None:
        aside = path.with_name(path.name + ".corrupt")
        try:
            current = os.stat(path)
            # Only move the file we read: a writer may have replaced it with a good entry since.
            if (current.st_dev, current.st_ino) == (stat.st_dev, stat.st_ino):
                os.replace(path, aside)
                outcome = f"moved to {aside}"
            else:
                outcome = "already replaced by a newer entry, left in place"
        except FileNotFoundError:
            outcome = "already removed by another reader"
        warnings.warn(
            f"teacher cache entry {path} failed verification: {reason}; {outcome}; it will be recomputed",
            CacheCorruptionWarning,
            stacklevel=3,
        )
