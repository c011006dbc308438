"""The persistent store (raykd.data.store) and teacher tables on it (raykd.teachers.store).

Content keys, the round trip of every dtype and of ragged columns, row groups and the lazy reader, verification
on read (truncated, tampered, wrong key, wrong version: reported, moved aside, treated as absent), atomic and
racing writes, and non-local filesystems (a ``file://`` URI, pyarrow's in-memory filesystem). Raw columns: bit-exact,
a memory map of their file on a local store, verified by size and per-block sha256 on any filesystem. Then teacher
tables: lookups by sample, float16 storage, top-k logits.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raykd.data import store as store_mod
from raykd.data.store import (
    RAGGED_RAW_FORMAT_VERSION,
    RAW_ALIGNMENT,
    STORE_FORMAT_VERSION,
    Ragged,
    Store,
    StoreCorruptionWarning,
    Table,
    TableReader,
    content_key,
    file_sha256,
)
from raykd.teachers.store import TeacherTable, compact_logits, restore_logits, table_key

DOC = {"table": "test", "teacher": {"name": "swinir_x4", "sha256": "ab" * 32}, "view": 3, "outputs": ["logits"]}
DTYPES = (np.float16, np.float32, np.uint8, np.bool_, np.int16, np.int32, np.int64)


def _key(**changes) -> str:
    return content_key({**DOC, **changes})


def _values(rng: np.random.Generator, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Random values of ``dtype`` covering its range (floats with nan, inf and -0.0 too)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    out = (rng.standard_normal(shape) * 100).astype(dtype)
    flat = out.reshape(-1)
    flat[:4] = [np.nan, np.inf, -np.inf, -0.0][: flat.size]
    return out


def _columns(rng: np.random.Generator, n: int = 10) -> dict:
    """One fixed-shape column per dtype (of varied ranks) and ragged columns of three dtypes."""
    shapes = [(), (3,), (2, 2), (2, 1, 3)]
    cols = {f"{np.dtype(d).name}": _values(rng, d, (n, *shapes[i % len(shapes)])) for i, d in enumerate(DTYPES)}
    sizes = rng.integers(1, 6, size=(n, 2))
    cols["image"] = [_values(rng, np.uint8, (int(h), int(w), 3)) for h, w in sizes]
    cols["sr"] = [_values(rng, np.float16, (3, int(h), int(w))) for h, w in sizes]
    cols["tokens"] = [_values(rng, np.int64, (int(h),)) for h, _ in sizes]
    return cols


def _assert_columns_equal(table: Table | dict, cols: dict) -> None:
    got = table.columns if isinstance(table, Table) else table
    assert sorted(got) == sorted(cols)
    for name, want in cols.items():
        col = got[name]
        if isinstance(want, list):
            assert isinstance(col, Ragged) and len(col) == len(want)
            for row, ref in zip((col[i] for i in range(len(col))), want, strict=True):
                assert row.dtype == ref.dtype and row.shape == ref.shape
                np.testing.assert_array_equal(row, ref)
        else:
            assert col.dtype == want.dtype and col.shape == want.shape, name
            # bytes, not values: -0.0 vs 0.0 and NaN payloads count
            assert col.tobytes() == want.tobytes(), name


# ------------------------------------------------------------------------------------------------- keys


def test_content_key_is_sha256_of_canonical_json_with_the_format_version():
    document = {**DOC, "format_version": STORE_FORMAT_VERSION}
    expected = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert _key() == expected
    assert len(_key()) == 64 and all(c in "0123456789abcdef" for c in _key())


def test_content_key_changes_with_every_field_and_the_format_version(monkeypatch):
    variants = {
        "base": _key(),
        "teacher": _key(teacher={**DOC["teacher"], "sha256": "cd" * 32}),
        "view": _key(view=4),
        "view type": _key(view="3"),
        "outputs": _key(outputs=["logits", "feat"]),
        "extra field": _key(top_k=5),
        "null field": _key(top_k=None),
    }
    monkeypatch.setattr(store_mod, "STORE_FORMAT_VERSION", STORE_FORMAT_VERSION + 1)
    variants["format version"] = _key()
    assert len(set(variants.values())) == len(variants), variants


def test_content_key_ignores_key_order_and_numpy_scalar_types():
    reordered = {"outputs": ["logits"], "view": 3, "teacher": {"sha256": "ab" * 32, "name": "swinir_x4"},
                 "table": "test"}
    assert content_key(reordered) == _key()
    assert _key(view=np.int64(3)) == _key()
    assert _key(scale=np.float32(0.5)) == _key(scale=0.5)


@pytest.mark.parametrize("bad, error", [(float("nan"), ValueError), (float("inf"), ValueError),
                                        ({1, 2}, TypeError), (object(), TypeError)])
def test_content_key_refuses_values_without_a_canonical_json_form(bad, error):
    with pytest.raises(error):
        _key(view=bad)


def test_file_sha256_streams_to_the_same_digest(tmp_path):
    path = tmp_path / "weights.bin"
    payload = np.random.default_rng(0).bytes(10_001)
    path.write_bytes(payload)
    assert file_sha256(path, chunk_size=4096) == hashlib.sha256(payload).hexdigest()


def test_store_paths_refuse_anything_but_a_key(tmp_path):
    store = Store(tmp_path)
    for bad in ("../../etc/passwd", _key().upper(), _key()[:-1], _key() + "0", 123):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            store.path(bad)
    assert store.path(_key()) == f"{tmp_path.resolve()}/{_key()}.parquet"


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip_of_every_dtype_and_ragged_columns(tmp_path):
    cols = _columns(np.random.default_rng(1))
    meta = {"teacher": "swinir_x4", "names": ["a", "b"], "scale": np.int64(4), "nested": {"x": [1.5, None]}}
    saved = Store(tmp_path).save(_key(), cols, meta)
    loaded = Store(tmp_path).load(_key())  # a fresh instance, as in another process
    assert loaded is not None
    for table in (saved, loaded):
        assert table.key == _key() and table.num_rows == 10
        assert table.meta == {"teacher": "swinir_x4", "names": ["a", "b"], "scale": 4, "nested": {"x": [1.5, None]}}
        _assert_columns_equal(table, cols)
    assert loaded.nbytes == saved.nbytes
    fixed = sum(v.nbytes for v in cols.values() if isinstance(v, np.ndarray))
    ragged = sum(r.nbytes for name in ("image", "sr", "tokens") for r in cols[name])
    shapes = 8 * 10 * (3 + 3 + 1) + 3 * 8 * 11  # int64 shapes of each row, plus the N + 1 offsets of each column
    assert loaded.nbytes == fixed + ragged + shapes
    # what comes back is read-only: a table is shared between consumers
    with pytest.raises(ValueError):
        loaded["int32"][0] = 1
    with pytest.raises(ValueError):
        loaded["image"][0][0, 0, 0] = 1
    with pytest.raises(KeyError, match="'nope'.*holds"):
        loaded["nope"]


def test_ragged_round_trips_through_slices_and_concatenation():
    rng = np.random.default_rng(2)
    rows = [_values(rng, np.float32, (int(n), 2)) for n in rng.integers(1, 5, 7)]
    ragged = Ragged.from_rows(rows)
    assert len(ragged) == 7 and ragged.dtype == np.float32
    joined = Ragged.concat([ragged.slice(0, 3), ragged.slice(3, 7)])
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(joined[i], row)
    assert joined.checksum() == ragged.checksum()
    assert [r.shape for r in ragged.take(np.array([6, 0]))] == [rows[6].shape, rows[0].shape]
    with pytest.raises(TypeError, match="row 1"):
        Ragged.from_rows([np.zeros((2, 2), np.float32), np.zeros(2, np.float32)])
    with pytest.raises(TypeError, match="row 1"):
        Ragged.from_rows([np.zeros(2, np.float32), np.zeros(2, np.float16)])


def test_byte_swapped_arrays_are_stored_by_value(tmp_path):
    values = np.arange(-3, 5, dtype=">i4")
    table = Store(tmp_path).save(_key(), {"x": values})
    loaded = Store(tmp_path).load(_key())
    for got in (table["x"], loaded["x"]):
        assert got.dtype == np.int32 and got.tolist() == values.tolist()


@pytest.mark.parametrize(
    "columns, kwargs, error, match",
    [
        ({"x": np.zeros(3, np.float64)}, {}, TypeError, "float64"),
        ({"x": [np.zeros(2, np.float64), np.zeros(3, np.float64)]}, {}, TypeError, "float64"),
        ({"x": np.float32(1.0)}, {}, TypeError, "numpy array"),
        ({"x": np.array(1.0, np.float32)}, {}, ValueError, "scalar"),
        ({"x": np.zeros(3, np.int32), "y": np.zeros(4, np.int32)}, {}, ValueError, "one length"),
        ({"__shape__x": np.zeros(3, np.int32)}, {}, ValueError, "column name"),
        ({"": np.zeros(3, np.int32)}, {}, ValueError, "column name"),
        ({}, {}, ValueError, "non-empty mapping"),
        ({"x": "abc"}, {}, TypeError, "numpy array"),
        ({"x": np.zeros(3, np.int32)}, {"meta": {"bad": float("nan")}}, ValueError, "JSON"),
        ({"x": np.zeros(3, np.int32)}, {"rows_per_group": 0}, ValueError, "rows_per_group"),
        ({"x": np.zeros(3, np.int32)}, {"rows_per_group": -2}, ValueError, "rows_per_group"),
    ],
)
def test_save_refuses_malformed_input_without_writing(tmp_path, columns, kwargs, error, match):
    with pytest.raises(error, match=match):
        Store(tmp_path / "store").save(_key(), columns, **kwargs)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


# ------------------------------------------------------------------------------ row groups, lazy reader


def test_row_groups_and_the_lazy_reader(tmp_path):
    cols = _columns(np.random.default_rng(3), n=10)
    store = Store(tmp_path)
    store.save(_key(), cols, {"m": 1}, rows_per_group=3)
    assert pq.ParquetFile(store.path(_key())).num_row_groups == 4
    reader = store.open(_key())
    assert isinstance(reader, TableReader)
    assert reader.group_rows == [3, 3, 3, 1] and reader.num_rows == 10 and reader.meta == {"m": 1}
    starts = np.cumsum([0, *reader.group_rows])
    for g in (2, 0, 3, 1):  # any order
        part = reader.group(g)
        want = {name: v[starts[g]:starts[g + 1]] for name, v in cols.items()}
        _assert_columns_equal(part, want)
    # the whole table is the row groups concatenated
    _assert_columns_equal(store.load(_key()), cols)


def test_default_row_groups_hold_about_64_mib(tmp_path, monkeypatch):
    store = Store(tmp_path)
    store.save(_key(), {"x": np.zeros((50, 1000), np.uint8)})
    assert store.open(_key()).group_rows == [50]  # 50 kB: one group
    monkeypatch.setattr(store_mod, "GROUP_BYTES", 16_000)  # 16 rows of 1000 bytes per group
    store.save(_key(view=9), {"x": np.zeros((50, 1000), np.uint8)})
    assert store.open(_key(view=9)).group_rows == [16, 16, 16, 2]


def test_lazy_reader_verifies_each_group_as_it_is_read(tmp_path):
    store, key = Store(tmp_path), _key()
    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    store.save(key, {"x": values}, rows_per_group=3)
    path = Path(store.path(key))
    _rewrite(path, edit_table=lambda t: _bump(t, "x", 2 * 3 * 4 + 1), row_group_size=3)  # a value in group 2
    reader = store.open(key)  # the header is intact
    assert reader is not None
    np.testing.assert_array_equal(reader.group(0)["x"], values[:3])
    np.testing.assert_array_equal(reader.group(1)["x"], values[3:6])
    with pytest.warns(StoreCorruptionWarning, match=r"sha256 mismatch in column 'x', row group 2") as record:
        with pytest.raises(ValueError, match=rf"{path}.*failed verification.*row group 2"):
            reader.group(2)
    assert str(path) in str(record[0].message)
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()


# --------------------------------------------------------------------------------- verification on read


def _saved(tmp_path: Path) -> tuple[Store, str, Path]:
    store, key = Store(tmp_path), _key()
    store.save(key, _columns(np.random.default_rng(4)))
    return store, key, Path(store.path(key))


def _rewrite(path: Path, edit_table=lambda t: t, edit_header=lambda h: h, row_group_size=None) -> None:
    table = pq.read_table(path)
    header = edit_header(json.loads(pq.ParquetFile(path).metadata.metadata[b"raykd.store"]))
    table = edit_table(table).replace_schema_metadata({b"raykd.store": json.dumps(header).encode()})
    pq.write_table(table, path, row_group_size=row_group_size)


def _bump(table: pa.Table, name: str, position: int) -> pa.Table:
    col = table.column(name).combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False).copy()
    values[position] += 1
    tampered = pa.FixedSizeListArray.from_arrays(pa.array(values), col.type.list_size)
    return table.set_column(table.column_names.index(name), name, tampered)


def _assert_discarded(store: Store, key: str, path: Path, reason: str, reader: bool = False) -> None:
    with pytest.warns(StoreCorruptionWarning, match=reason) as record:
        assert (store.open(key) if reader else store.load(key)) is None
    assert len(record) == 1 and str(path) in str(record[0].message)
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left at the final name: a plain miss, no second warning
        assert store.load(key) is None and store.open(key) is None


@pytest.mark.parametrize("reader", [False, True], ids=["load", "open"])
def test_truncated_table_is_reported_moved_aside_and_rebuilt(tmp_path, reader):
    store, key, path = _saved(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _assert_discarded(store, key, path, "unreadable Parquet", reader)
    cols = _columns(np.random.default_rng(4))
    store.save(key, cols)
    _assert_columns_equal(store.load(key), cols)


def test_tampered_value_is_caught_by_the_checksum(tmp_path):
    store, key, path = _saved(tmp_path)
    _rewrite(path, edit_table=lambda t: _bump(t, "int32", 5))
    _assert_discarded(store, key, path, r"sha256 mismatch in column 'int32', row group 0")


def test_tampered_ragged_shape_is_caught(tmp_path):
    store, key, path = _saved(tmp_path)

    def swap_two_dims(table: pa.Table) -> pa.Table:
        col = table.column("__shape__image").combine_chunks()
        shapes = col.flatten().to_numpy().reshape(-1, 3).copy()
        h, w, c = shapes[0]
        shapes[0] = (w, h, c) if h != w else (1, h * w, c)  # same byte length, different shape
        fixed = pa.FixedSizeListArray.from_arrays(pa.array(shapes.reshape(-1)), 3)
        return table.set_column(table.column_names.index("__shape__image"), "__shape__image", fixed)

    _rewrite(path, edit_table=swap_two_dims)
    _assert_discarded(store, key, path, r"sha256 mismatch in column 'image'")


def test_ragged_shape_that_does_not_fit_the_bytes_is_caught(tmp_path):
    store, key, path = _saved(tmp_path)

    def grow_a_row(table: pa.Table) -> pa.Table:
        col = table.column("__shape__sr").combine_chunks()
        shapes = col.flatten().to_numpy().reshape(-1, 3).copy()
        shapes[3, 1] += 1
        fixed = pa.FixedSizeListArray.from_arrays(pa.array(shapes.reshape(-1)), 3)
        return table.set_column(table.column_names.index("__shape__sr"), "__shape__sr", fixed)

    _rewrite(path, edit_table=grow_a_row)
    _assert_discarded(store, key, path, r"column 'sr': row byte lengths do not match the stored shapes")


@pytest.mark.parametrize("reader", [False, True], ids=["load", "open"])
def test_format_version_mismatch_is_rejected(tmp_path, reader):
    store, key, path = _saved(tmp_path)
    _rewrite(path, edit_header=lambda h: {**h, "format_version": STORE_FORMAT_VERSION + 1})
    _assert_discarded(store, key, path, rf"format version {STORE_FORMAT_VERSION + 1}", reader)


@pytest.mark.parametrize("reader", [False, True], ids=["load", "open"])
def test_table_under_the_wrong_key_is_rejected(tmp_path, reader):
    store, key, path = _saved(tmp_path)
    other = _key(view=99)
    path.rename(store.path(other))
    _assert_discarded(store, other, Path(store.path(other)), f"holds key '{key}'", reader)


@pytest.mark.parametrize(
    "edit_header, reason",
    [
        (lambda h: {**h, "num_rows": h["num_rows"] + 1}, "row groups hold 10 rows, the header says 11"),
        (lambda h: {**h, "group_rows": [9]}, "row groups hold 9 rows, the header says 10"),
        (lambda h: {**h, "group_rows": [9], "num_rows": 9}, "row group 0 has 10 rows, its header says 9"),
        (lambda h: {**h, "group_rows": [5, 5], "checksums": {k: v * 2 for k, v in h["checksums"].items()}},
         "it has 1 row groups, its header says 2"),
        (lambda h: {k: v for k, v in h.items() if k != "checksums"}, "metadata is unreadable"),
        (lambda h: {**h, "checksums": {**h["checksums"], "int32": []}}, "checksums do not cover"),
        (lambda h: {**h, "columns": {**h["columns"], "int32": {"dtype": "float64", "shape": []}}}, "float64"),
    ],
)
def test_inconsistent_headers_are_rejected(tmp_path, edit_header, reason):
    store, key, path = _saved(tmp_path)
    _rewrite(path, edit_header=edit_header)
    _assert_discarded(store, key, path, reason)


def test_a_parquet_file_without_the_store_header_is_rejected(tmp_path):
    store, key, path = _saved(tmp_path)
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    _assert_discarded(store, key, path, "metadata 'raykd.store' is missing")


# ----------------------------------------------------------------------------------- atomicity, races


def test_failed_write_leaves_no_file_and_keeps_the_previous_table(tmp_path, monkeypatch):
    store, key = Store(tmp_path), _key()

    original = store_mod.pq.ParquetWriter.write_table

    def half_then_fail(self, table, **kwargs):
        original(self, table, **kwargs)  # a row group on disk, then the disk fills
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store_mod.pq.ParquetWriter, "write_table", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        store.save(key, {"x": np.ones((4, 2), np.float16)})
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    store.save(key, {"x": np.ones((4, 2), np.float16)})
    monkeypatch.setattr(store_mod.pq.ParquetWriter, "write_table", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        store.save(key, {"x": np.zeros((4, 2), np.float16)})
    assert [p.name for p in tmp_path.iterdir()] == [Path(store.path(key)).name]
    np.testing.assert_array_equal(store.load(key)["x"], np.ones((4, 2), np.float16))


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    """A KeyboardInterrupt (any BaseException) mid-write cleans up too."""
    store = Store(tmp_path)

    original = store_mod.pq.ParquetWriter.write_table

    def interrupted(self, table, **kwargs):
        original(self, table, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.pq.ParquetWriter, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save(_key(), {"x": np.ones(3, np.int32)})
    assert list(tmp_path.iterdir()) == []


def test_racing_writers_and_readers_only_ever_see_valid_tables(tmp_path):
    rng = np.random.default_rng(5)
    cols = {"logits": _values(rng, np.float16, (2000, 100)), "sr": [_values(rng, np.float16, (3, 24, 24))] * 2000}
    key, writers, rounds = _key(), 3, 4
    barrier = threading.Barrier(writers + 2)
    writing = threading.Event()
    errors: list[BaseException] = []
    seen: list[bool] = []

    def write() -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                Store(tmp_path).save(key, cols, rows_per_group=256)
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(exc)

    def read() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", StoreCorruptionWarning)
                barrier.wait()
                while writing.is_set():  # read for as long as anyone writes
                    table = Store(tmp_path).load(key)
                    seen.append(table is not None)
                    if table is not None:
                        _assert_columns_equal(table, cols)
        except BaseException as exc:
            errors.append(exc)

    writing.set()
    threads = [threading.Thread(target=write) for _ in range(writers)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    writing.clear()
    for t in readers:
        t.join()
    assert not errors, errors[0]
    assert len(seen) >= 2  # the readers did read while the writers wrote
    # no temporaries left: the table and, where a reader hashed it in full, its stamp
    assert {p.name for p in tmp_path.iterdir()} - {f"{key}.verified"} == {Path(Store(tmp_path).path(key)).name}
    _assert_columns_equal(Store(tmp_path).load(key), cols)


# ------------------------------------------------------------------------------------ other filesystems


def test_a_file_uri_root(tmp_path):
    cols = _columns(np.random.default_rng(6))
    store = Store(f"file://{tmp_path}/uri-store")
    assert store.local and store.root == f"{tmp_path}/uri-store"
    store.save(_key(), cols, {"m": "uri"})
    assert (tmp_path / "uri-store" / f"{_key()}.parquet").is_file()
    _assert_columns_equal(Store(tmp_path / "uri-store").load(_key()), cols)  # the same table as a plain path


def test_an_in_memory_filesystem():
    fs = pafs._MockFileSystem()
    store = Store("bucket/prefix", filesystem=fs)
    assert not store.local
    cols = _columns(np.random.default_rng(7))
    key = _key()
    assert store.load(key) is None and store.open(key) is None
    store.save(key, cols, {"m": "mock"}, rows_per_group=4)
    table = Store("bucket/prefix", filesystem=fs).load(key)
    _assert_columns_equal(table, cols)
    assert table.meta == {"m": "mock"}
    _assert_columns_equal(store.open(key).group(2), {n: v[8:] for n, v in cols.items()})
    listing = {info.path for info in fs.get_file_info(pafs.FileSelector("bucket", recursive=True))}
    # no temporaries left: the table and the stamp of its full check on the first load
    assert listing == {"bucket/prefix", f"bucket/prefix/{key}.parquet", f"bucket/prefix/{key}.verified"}

    # corruption is handled there too: reported, moved aside, rebuilt
    path = store.path(key)
    with fs.open_input_file(path) as fh:
        raw = fh.read()
    with fs.open_output_stream(path) as fh:
        fh.write(raw[: len(raw) // 3])
    with pytest.warns(StoreCorruptionWarning, match=rf"{path}.*unreadable Parquet"):
        assert store.load(key) is None
    assert fs.get_file_info(path + ".corrupt").type == pafs.FileType.File
    assert fs.get_file_info(path).type == pafs.FileType.NotFound
    store.save(key, cols)
    _assert_columns_equal(store.load(key), cols)


def test_failed_write_on_an_in_memory_filesystem_leaves_no_file(monkeypatch):
    fs = pafs._MockFileSystem()
    store = Store("bucket", filesystem=fs)

    original = store_mod.pq.ParquetWriter.write_table

    def half_then_fail(self, table, **kwargs):
        original(self, table, **kwargs)
        raise OSError("network down (simulated)")

    monkeypatch.setattr(store_mod.pq.ParquetWriter, "write_table", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        store.save(_key(), {"x": np.ones(3, np.int32)})
    files = [i.path for i in fs.get_file_info(pafs.FileSelector("bucket", recursive=True))
             if i.type == pafs.FileType.File]
    assert files == []


# ------------------------------------------------------------------------------------------ raw columns


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is a view of a memory-mapped file (its ``base`` chain ends in an ``mmap.mmap``)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(getattr(base, "obj", base), mmap.mmap)


def _raw_columns(rng: np.random.Generator, n: int = 10) -> dict:
    """The Parquet columns of :func:`_columns` plus two fixed-shape columns to keep raw."""
    return {**_columns(rng, n), "pixels": _values(rng, np.uint8, (n, 4, 4, 3)),
            "half": _values(rng, np.float16, (n, 5))}


def _saved_raw(root, monkeypatch, fs=None) -> tuple[Store, str, dict]:
    monkeypatch.setattr(store_mod, "GROUP_BYTES", 4 * 4 * 4 * 3)  # raw blocks of 4 pixel rows: 3 blocks
    store, key, cols = Store(root, filesystem=fs), _key(), _raw_columns(np.random.default_rng(8))
    store.save(key, cols, {"m": "raw"}, raw=("pixels", "half"))
    return store, key, cols


def test_raw_columns_round_trip_bit_exact_as_a_map_of_their_file(tmp_path, monkeypatch):
    store, key, cols = _saved_raw(tmp_path, monkeypatch)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.parquet", f"{key}.raw"]
    assert "pixels" not in pq.read_schema(store.path(key)).names  # the raw columns are not in the Parquet file
    header = json.loads(pq.ParquetFile(store.path(key)).metadata.metadata[b"raykd.store"])
    pixels, half = header["raw"]["pixels"], header["raw"]["half"]
    assert pixels["offset"] == 0 and half["offset"] == 512 and pixels["block_rows"] == [4, 4, 2]
    # the raw file is the arrays' bytes, nothing more (the second column starts on a 64-byte boundary)
    assert Path(store.raw_path(key)).stat().st_size == header["raw_bytes"] == 512 + cols["half"].nbytes
    loaded = Store(tmp_path).load(key)
    _assert_columns_equal(loaded, cols)
    assert loaded.meta == {"m": "raw"} and header["format_version"] == STORE_FORMAT_VERSION  # fixed-shape only
    for name in ("pixels", "half"):
        assert _mapped(loaded[name]) and not loaded[name].flags.writeable  # a view of the page cache: no copy
        assert loaded[name].ctypes.data % store_mod.RAW_ALIGNMENT == 0
    assert not _mapped(loaded["int32"])
    reader = store.open(key)
    assert reader.raw_rows("pixels") == [4, 4, 2] and reader.raw_rows("half") == [10]
    block = reader.raw_block("pixels", 1)
    assert _mapped(block) and block.tobytes() == cols["pixels"][4:8].tobytes()


def test_raw_columns_on_an_in_memory_filesystem(monkeypatch):
    fs = pafs._MockFileSystem()
    store, key, cols = _saved_raw("bucket/raw", monkeypatch, fs)
    listing = {info.path for info in fs.get_file_info(pafs.FileSelector("bucket", recursive=True))}
    assert listing == {"bucket/raw", f"bucket/raw/{key}.parquet", f"bucket/raw/{key}.raw"}  # no temporaries
    loaded = Store("bucket/raw", filesystem=fs).load(key)
    _assert_columns_equal(loaded, cols)
    assert not _mapped(loaded["pixels"]) and not loaded["pixels"].flags.writeable
    assert Store("bucket/raw", filesystem=fs).open(key).raw_block("pixels", 2).tobytes() == cols["pixels"][8:].tobytes()

    with fs.open_input_file(store.raw_path(key)) as fh:
        raw = fh.read()
    with fs.open_output_stream(store.raw_path(key)) as fh:
        fh.write(raw[:-1])
    with pytest.warns(StoreCorruptionWarning, match=rf"{store.path(key)}.*raw file .* has {len(raw) - 1} bytes"):
        assert store.load(key) is None
    for path in (store.path(key), store.raw_path(key)):
        assert fs.get_file_info(path).type == pafs.FileType.NotFound
        assert fs.get_file_info(path + ".corrupt").type == pafs.FileType.File
    store.save(key, cols, raw=("pixels", "half"))
    _assert_columns_equal(store.load(key), cols)


@pytest.mark.parametrize("reader", [False, True], ids=["load", "open"])
@pytest.mark.parametrize("damage, reason", [
    (lambda raw: raw[:-7], r"raw file .*\.raw has \d+ bytes, its header says \d+"),
    (lambda raw: raw + b"\0", r"raw file .*\.raw has \d+ bytes, its header says \d+"),
    (None, r"raw file .*\.raw is missing"),
], ids=["truncated", "extended", "missing"])
def test_a_raw_file_of_the_wrong_size_is_reported_moved_aside_and_rebuilt(tmp_path, monkeypatch, reader, damage,
                                                                          reason):
    store, key, cols = _saved_raw(tmp_path, monkeypatch)
    raw_path = Path(store.raw_path(key))
    if damage is None:
        raw_path.unlink()
    else:
        raw_path.write_bytes(damage(raw_path.read_bytes()))
    _assert_discarded(store, key, Path(store.path(key)), reason, reader)
    assert raw_path.with_name(raw_path.name + ".corrupt").exists() == (damage is not None)
    store.save(key, cols, raw=("pixels", "half"))
    _assert_columns_equal(store.load(key), cols)


def test_a_tampered_raw_block_is_caught_by_its_checksum(tmp_path, monkeypatch):
    store, key, cols = _saved_raw(tmp_path, monkeypatch)
    raw_path = Path(store.raw_path(key))
    pristine = raw_path.read_bytes()
    tampered = bytearray(pristine)
    tampered[5 * 48 + 7] ^= 1  # a bit of row 5: block 1 of "pixels" (48 bytes a row)
    raw_path.write_bytes(bytes(tampered))
    reader = store.open(key)  # the header and the size are intact
    assert reader.raw_block("pixels", 0).tobytes() == cols["pixels"][:4].tobytes()
    with pytest.warns(StoreCorruptionWarning, match=r"sha256 mismatch in raw column 'pixels', block 1"):
        with pytest.raises(ValueError, match=r"failed verification.*block 1"):
            reader.raw_block("pixels", 1)
    assert raw_path.with_name(raw_path.name + ".corrupt").exists() and not raw_path.exists()

    store.save(key, cols, raw=("pixels", "half"))
    raw_path.write_bytes(bytes(tampered))
    _assert_discarded(store, key, Path(store.path(key)), r"sha256 mismatch in raw column 'pixels', block 1")


def test_raw_headers_that_do_not_tile_the_file_are_rejected(tmp_path, monkeypatch):
    store, key, _ = _saved_raw(tmp_path, monkeypatch)
    path = Path(store.path(key))

    def overlap(header):
        header["raw"]["half"]["offset"] = 448  # inside "pixels"
        return header

    _rewrite(path, edit_header=overlap)
    _assert_discarded(store, key, path, r"raw column 'half' starts at byte 448")


@pytest.mark.parametrize("raw, match", [(("nope",), "must name"), (("image", "nope"), "must name"),
                                        (tuple(_columns(np.random.default_rng(0))), "leaving one or more")])
def test_save_refuses_raw_columns_it_cannot_keep_raw(tmp_path, raw, match):
    with pytest.raises(ValueError, match=match):
        Store(tmp_path).save(_key(), _columns(np.random.default_rng(0)), raw=raw)
    assert list(tmp_path.iterdir()) == []


def test_a_raw_writer_refuses_interleaved_or_short_columns_and_leaves_nothing(tmp_path):
    store, key = Store(tmp_path), _key()
    with pytest.raises(ValueError, match="in one run"):
        with store.writer(key) as writer:
            writer.append({"labels": np.arange(4)})
            writer.append_raw("a", np.zeros((2, 3), np.uint8))
            writer.append_raw("b", np.zeros((4, 3), np.uint8))
            writer.append_raw("a", np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="has 2 rows, the table 4"):
        with store.writer(key) as writer:
            writer.append({"labels": np.arange(4)})
            writer.append_raw("a", np.zeros((2, 3), np.uint8))
    with pytest.raises(RuntimeError, match="decode failed"):
        with store.writer(key) as writer:
            writer.append_raw("a", np.zeros((2, 3), np.uint8))
            raise RuntimeError("decode failed")
    assert list(tmp_path.iterdir()) == []
    with store.writer(key, {"m": 1}) as writer:  # appended in pieces, the blocks are the pieces
        writer.append({"labels": np.arange(4)})
        writer.append_raw("a", np.arange(6, dtype=np.uint8).reshape(2, 3))
        writer.append_raw("a", np.arange(6, 12, dtype=np.uint8).reshape(2, 3))
    assert store.open(key).raw_rows("a") == [2, 2]
    assert store.load(key)["a"].tolist() == np.arange(12).reshape(4, 3).tolist()


# ------------------------------------------------------------------ the cheap check after the first read, verify


class _CountingHashlib:
    """Stands in for the store module's ``hashlib``: counts every sha256 it makes."""

    def __init__(self) -> None:
        self.calls = 0

    def sha256(self, *args):
        self.calls += 1
        return hashlib.sha256(*args)


def _read_everything(store: Store, key: str) -> None:
    reader = store.open(key)
    for i in range(len(reader.group_rows)):
        reader.group(i)
    for name in reader.header["raw"]:
        for b in range(len(reader.raw_rows(name))):
            reader.raw_block(name, b)


@pytest.mark.parametrize("first", ["load", "open"])
def test_a_table_is_hashed_on_its_first_read_only(tmp_path, monkeypatch, first):
    store, key, cols = _saved_raw(tmp_path, monkeypatch)
    counter = _CountingHashlib()
    monkeypatch.setattr(store_mod, "hashlib", counter)
    if first == "load":
        _assert_columns_equal(Store(tmp_path).load(key), cols)
    else:  # a lazy reader that has read every raw block, as a streamed split does, hashes the labels and stamps
        reader = Store(tmp_path).open(key)
        for name in reader.header["raw"]:
            for b in range(len(reader.raw_rows(name))):
                assert not Path(store.stamp_path(key)).exists()
                reader.raw_block(name, b)
    assert counter.calls >= 4 + 1  # every raw block and row group
    assert Path(store.stamp_path(key)).exists()
    counter.calls = 0
    _assert_columns_equal(Store(tmp_path).load(key), cols)  # a later run: size, mtime, ctime, inode, manifest
    _read_everything(Store(tmp_path), key)
    assert counter.calls == 0
    Path(store.stamp_path(key)).unlink()  # no stamp: hashed in full again
    _assert_columns_equal(Store(tmp_path).load(key), cols)
    assert counter.calls >= 4


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _replace(path: Path) -> None:
    """Another file of the same size renamed over it (a restore from a bad copy, say)."""
    tampered = bytearray(path.read_bytes())
    tampered[5 * 48 + 7] ^= 1  # a bit of row 5: block 1 of "pixels"
    other = path.with_name("other")
    other.write_bytes(bytes(tampered))
    other.replace(path)


def _rewrite_keeping_mtime(path: Path) -> None:
    """A bit flipped by a write in place, the mtime put back afterwards: the ctime still moves."""
    before = path.stat()
    time.sleep(0.05)  # past a coarse (per-tick) filesystem clock
    with open(path, "r+b") as fh:
        fh.seek(5 * 48 + 7)
        byte = fh.read(1)[0]
        fh.seek(5 * 48 + 7)
        fh.write(bytes([byte ^ 1]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("reader", [False, True], ids=["load", "open"])
@pytest.mark.parametrize("damage, reason", [
    (_truncate, r"raw file .*\.raw has \d+ bytes, its header says \d+"),
    (_replace, r"sha256 mismatch in raw column 'pixels', block 1"),
    (_rewrite_keeping_mtime, r"sha256 mismatch in raw column 'pixels', block 1"),
], ids=["truncated", "replaced", "rewritten-mtime-kept"])
def test_a_raw_file_changed_after_its_full_check_is_refused_by_the_cheap_check(tmp_path, monkeypatch, reader,
                                                                                damage, reason):
    store, key, cols = _saved_raw(tmp_path, monkeypatch)
    _assert_columns_equal(store.load(key), cols)  # hashed in full and stamped
    damage(Path(store.raw_path(key)))
    if reader and damage is not _truncate:  # the size is right: the stamp no longer matches, so blocks are hashed
        opened = store.open(key)
        assert opened.raw_block("pixels", 0).tobytes() == cols["pixels"][:4].tobytes()
        with pytest.warns(StoreCorruptionWarning, match=reason), pytest.raises(ValueError, match="block 1"):
            opened.raw_block("pixels", 1)
    else:
        _assert_discarded(store, key, Path(store.path(key)), reason, reader)
    assert not Path(store.stamp_path(key)).exists()
    store.save(key, cols, raw=("pixels", "half"))
    _assert_columns_equal(store.load(key), cols)


def _rot(store: Store, key: str, position: int = 5 * 48 + 7) -> None:
    """A bit flipped under the filesystem (the medium decays): the files' stat, hence the stamp, still match. By
    default a bit of row 5: block 1 of "pixels"."""
    raw_path = Path(store.raw_path(key))
    tampered = bytearray(raw_path.read_bytes())
    tampered[position] ^= 1
    raw_path.write_bytes(bytes(tampered))
    stamp = json.loads(Path(store.stamp_path(key)).read_text())
    stamp["raw"] = store.stat(str(raw_path))
    Path(store.stamp_path(key)).write_text(json.dumps(stamp))


def test_verify_rehashes_everything_and_names_each_damaged_table(tmp_path, monkeypatch):
    store, key, cols = _saved_raw(tmp_path, monkeypatch)
    other = _key(view=7)
    store.save(other, {"x": np.arange(30, dtype=np.int32)}, rows_per_group=10)
    assert store.load(key) is not None and store.load(other) is not None  # both stamped
    _rot(store, key)
    assert store.load(key) is not None  # what the cheap check cannot see...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report says it, no warning besides
        checks = list(store_mod.verify_store(Store(tmp_path)))
    assert [c.key for c in checks] == sorted([key, other])
    damaged = {c.key: c for c in checks}[key]
    assert damaged.path == store.path(key)
    assert re.fullmatch(rf"sha256 mismatch in raw column 'pixels', block 1 of {re.escape(store.raw_path(key))}",
                        damaged.problem)
    sound = {c.key: c for c in checks}[other]
    assert sound.problem is None and sound.nbytes == 30 * 4
    # ...is moved aside by verify, so the run that needs it rebuilds it
    assert store.load(key) is None and Path(store.path(key) + ".corrupt").exists()
    assert not Path(store.stamp_path(key)).exists() and Path(store.stamp_path(other)).exists()
    assert [c.problem for c in store_mod.verify_store(store, [key])] == ["no such table"]


def test_raykd_verify_names_the_damaged_table_and_exits_1(tmp_path, monkeypatch, capsys):
    from raykd.cli import main

    store, key, _ = _saved_raw(tmp_path / "cache" / "store", monkeypatch)
    assert store.load(key) is not None
    assert main(["verify", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "every table matched its sha256" in capsys.readouterr().out
    _rot(store, key)
    assert main(["verify", "--cache-dir", str(tmp_path / "cache")]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED {store.path(key)}: sha256 mismatch in raw column 'pixels'" in out and "1 damaged" in out


# ------------------------------------------------------------------------------------ ragged raw columns


def _saved_ragged_raw(root, monkeypatch, fs=None) -> tuple[Store, str, dict]:
    """:func:`_columns` saved with its uint8 and float16 ragged columns raw, in blocks of whole rows of about 192
    bytes (rows of 3 to 75 and 6 to 150 bytes)."""
    monkeypatch.setattr(store_mod, "GROUP_BYTES", 4 * 4 * 4 * 3)
    store, key, cols = Store(root, filesystem=fs), _key(), _columns(np.random.default_rng(9))
    store.save(key, cols, {"m": "ragged"}, rows_per_group=10, raw=("image", "sr"))  # one row group
    return store, key, cols


def _block_start(store: Store, key: str, cols: dict, name: str, block: int) -> int:
    """The raw file's byte where block ``block`` of ragged raw column ``name`` starts."""
    spec = json.loads(pq.ParquetFile(store.path(key)).metadata.metadata[b"raykd.store"])["raw"][name]
    return spec["offset"] + sum(r.nbytes for r in cols[name][:sum(spec["block_rows"][:block])])


def test_ragged_raw_columns_round_trip_as_a_map_of_their_file(tmp_path, monkeypatch):
    store, key, cols = _saved_ragged_raw(tmp_path, monkeypatch)
    schema = pq.read_schema(store.path(key)).names
    assert not {"image", "sr", "__shape__image", "__shape__sr"} & set(schema) and "__shape__tokens" in schema
    header = json.loads(pq.ParquetFile(store.path(key)).metadata.metadata[b"raykd.store"])
    assert header["format_version"] == RAGGED_RAW_FORMAT_VERSION
    image, sr = header["raw"]["image"], header["raw"]["sr"]
    sizes = {name: [r.nbytes for r in cols[name]] for name in ("image", "sr")}
    # the rows' bytes back to back, each column from a 64-byte boundary, nothing more; the shapes in the header
    assert image["offset"] == 0 and sr["offset"] == -(-sum(sizes["image"]) // RAW_ALIGNMENT) * RAW_ALIGNMENT
    assert Path(store.raw_path(key)).stat().st_size == header["raw_bytes"] == sr["offset"] + sum(sizes["sr"])
    assert sr["shapes"] == [list(r.shape) for r in cols["sr"]]
    for name in ("image", "sr"):  # blocks of whole rows: as many as fit in 192 bytes, at least one
        bounds = np.cumsum([0, *header["raw"][name]["block_rows"]])
        assert len(bounds) > 2 and bounds[-1] == 10
        for a, b in zip(bounds[:-1], bounds[1:]):
            assert (sum(sizes[name][a:b]) <= 192 or b - a == 1) and (b == 10 or sum(sizes[name][a:b + 1]) > 192)
    loaded = Store(tmp_path).load(key)
    _assert_columns_equal(loaded, cols)
    for name in ("image", "sr"):  # a view of the page cache: no copy
        col = loaded[name]
        assert isinstance(col, Ragged) and _mapped(col.data) and _mapped(col[3]) and not col.data.flags.writeable
        assert col.data.ctypes.data % RAW_ALIGNMENT == 0
    assert not _mapped(loaded["tokens"].data)
    counter = _CountingHashlib()
    monkeypatch.setattr(store_mod, "hashlib", counter)
    _assert_columns_equal(Store(tmp_path).load(key), cols)  # stamped by the first load: nothing hashed
    assert counter.calls == 0
    block = store.open(key).raw_block("image", 1)
    rows = slice(image["block_rows"][0], sum(image["block_rows"][:2]))
    assert isinstance(block, Ragged) and _mapped(block.data)
    _assert_columns_equal({"image": block}, {"image": cols["image"][rows]})


def test_ragged_raw_columns_on_an_in_memory_filesystem(monkeypatch):
    fs = pafs._MockFileSystem()
    store, key, cols = _saved_ragged_raw("bucket/raw", monkeypatch, fs)
    loaded = Store("bucket/raw", filesystem=fs).load(key)
    _assert_columns_equal(loaded, cols)
    assert not _mapped(loaded["sr"].data) and not loaded["sr"].data.flags.writeable
    reader = Store("bucket/raw", filesystem=fs).open(key)
    first, block = reader.raw_rows("sr")[0], reader.raw_block("sr", 1)  # one ranged read
    assert [r.tobytes() for r in block.take(np.arange(len(block)))] == [
        r.tobytes() for r in cols["sr"][first:first + len(block)]]


def test_verify_names_the_ragged_raw_column_and_block_of_a_flipped_byte(tmp_path, monkeypatch):
    store, key, cols = _saved_ragged_raw(tmp_path, monkeypatch)
    assert [c.problem for c in store_mod.verify_store(store)] == [None]  # hashed in full and stamped
    _rot(store, key, _block_start(store, key, cols, "sr", 2) + 1)
    assert store.load(key) is not None  # what the cheap check cannot see...
    [check] = store_mod.verify_store(Store(tmp_path))
    assert check.path == store.path(key)
    assert re.fullmatch(rf"sha256 mismatch in raw column 'sr', block 2 of {re.escape(store.raw_path(key))}",
                        check.problem)
    # ...is moved aside, raw file and all, so the run that needs it rebuilds it
    assert store.load(key) is None and Path(store.raw_path(key) + ".corrupt").exists()
    store.save(key, cols, raw=("image", "sr"))
    _assert_columns_equal(store.load(key), cols)


def _transpose_a_row(header: dict) -> None:
    """Row 7's (h, w, 3) becomes (w, h, 3) (or (1, h * w, 3)): the same bytes, another shape."""
    shapes = header["raw"]["image"]["shapes"]
    h, w, c = shapes[7]
    shapes[7] = [w, h, c] if h != w else [1, h * w, c]


@pytest.mark.parametrize("edit, reason", [
    (_transpose_a_row, r"sha256 mismatch in raw column 'image', block \d+ of"),  # the checksum covers the shapes
    (lambda h: h["raw"]["image"]["shapes"].pop(), r"raw column 'image' has row shapes of shape \(9, 3\), not 10"),
    (lambda h: h["raw"]["sr"].update(ndim=2), r"raw column 'sr' has row shapes of shape \(10, 3\), not 10 of 2"),
    (lambda h: h.update(format_version=STORE_FORMAT_VERSION), "format version 2 does not match its raw columns"),
], ids=["shape", "rows", "ndim", "version"])
def test_ragged_raw_headers_that_do_not_fit_their_rows_are_rejected(tmp_path, monkeypatch, edit, reason):
    store, key, _ = _saved_ragged_raw(tmp_path, monkeypatch)
    path = Path(store.path(key))

    def edited(header: dict) -> dict:
        edit(header)
        return header

    _rewrite(path, edit_header=edited)
    _assert_discarded(store, key, path, reason)


@pytest.mark.parametrize("reader", [False, True], ids=["load", "open"])
def test_a_truncated_ragged_raw_file_is_reported_moved_aside_and_rebuilt(tmp_path, monkeypatch, reader):
    store, key, cols = _saved_ragged_raw(tmp_path, monkeypatch)
    assert store.load(key) is not None  # stamped: the truncation is seen by the cheap check
    raw_path = Path(store.raw_path(key))
    _truncate(raw_path)
    _assert_discarded(store, key, Path(store.path(key)), r"raw file .*\.raw has \d+ bytes, its header says \d+", reader)
    assert raw_path.with_name(raw_path.name + ".corrupt").exists() and not Path(store.stamp_path(key)).exists()
    store.save(key, cols, raw=("image", "sr"))
    _assert_columns_equal(store.load(key), cols)


def test_a_ragged_raw_column_appended_in_pieces(tmp_path):
    store, key = Store(tmp_path), _key()
    rows = [np.full((i + 1, 2), i - 2, np.int16) for i in range(5)]
    with store.writer(key) as writer:  # the blocks are the pieces
        writer.append({"labels": np.arange(5)})
        writer.append_raw("r", Ragged.from_rows(rows[:2]))
        writer.append_raw("r", rows[2:])
    assert store.open(key).raw_rows("r") == [2, 3]
    _assert_columns_equal(store.load(key), {"labels": np.arange(5), "r": rows})
    with pytest.raises(ValueError, match=r"in one run, all of int16 ragged"):
        with store.writer(_key(view=5)) as writer:
            writer.append({"labels": np.arange(4)})
            writer.append_raw("r", rows[:2])
            writer.append_raw("r", np.zeros((2, 3), np.int16))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.parquet", f"{key}.raw", f"{key}.verified"]


# ------------------------------------------------------------------------------------------ teacher tables


def _teacher_outputs(rng: np.random.Generator, n: int = 12, classes: int = 10) -> dict:
    return {"logits": (rng.standard_normal((n, classes)) * 3).astype(np.float32),
            "feat": rng.standard_normal((n, 4, 2, 2)).astype(np.float32),
            "image": [rng.random((3, int(h), int(w))).astype(np.float32) for h, w in rng.integers(2, 7, (n, 2))]}


def _teacher_key(**changes) -> str:
    args = dict(teacher={"name": "resnet32x4", "weights": "ab" * 32}, inputs={"data": "cd" * 32, "views": "crop"},
                outputs=["logits", "feat"], view=0, top_k=None)
    return table_key(**{**args, **changes})


def test_table_key_changes_with_everything_that_determines_the_outputs():
    base = _teacher_key()
    variants = [_teacher_key(teacher={"name": "resnet32x4", "weights": "ef" * 32}),
                _teacher_key(inputs={"data": "cd" * 32, "views": "none"}), _teacher_key(outputs=["logits"]),
                _teacher_key(view=1), _teacher_key(view=None), _teacher_key(top_k=5)]
    assert len({base, *variants}) == len(variants) + 1
    assert _teacher_key(outputs=["feat", "logits"]) == base  # the order of the names carries no meaning


def test_teacher_table_lookup_by_sample_in_query_order(tmp_path):
    rng = np.random.default_rng(8)
    outputs = _teacher_outputs(rng)
    index = rng.permutation(np.arange(0, 60, 5))  # sample ids, not row numbers, in shuffled order
    store = Store(tmp_path)
    saved = TeacherTable.save(store, _teacher_key(), index, outputs, {"teacher": "resnet32x4"})
    loaded = TeacherTable(store.load(_teacher_key()))
    row_of = {int(i): r for r, i in enumerate(index)}
    query = rng.choice(index, size=30)  # repeats allowed
    rows = [row_of[int(q)] for q in query]
    for table in (saved, loaded):
        assert table.outputs == ("feat", "image", "logits") and table.num_rows == 12
        assert table.table.meta["teacher"] == "resnet32x4"
        got = table.lookup(query)
        for name in ("logits", "feat"):
            assert table.table[name].dtype == np.float16  # stored as float16
            assert got[name].dtype == np.float32  # served as float32
            np.testing.assert_array_equal(got[name], outputs[name][rows].astype(np.float16).astype(np.float32))
        assert isinstance(table.table["image"], Ragged) and table.table["image"].dtype == np.float16
        for arr, r in zip(got["image"], rows, strict=True):
            np.testing.assert_array_equal(arr, outputs["image"][r].astype(np.float16))
        only = table.lookup(query[:3], names=["feat"])
        assert list(only) == ["feat"]


def test_teacher_table_names_missing_samples_and_outputs(tmp_path):
    index = np.array([3, 7, 11])
    table = TeacherTable.save(Store(tmp_path), _teacher_key(), index, {"logits": np.zeros((3, 4))}, {})
    for missing in ([3, 5], [-1], [12], [0], [2, 4]):
        absent = [m for m in missing if m not in index]
        with pytest.raises(KeyError, match=rf"samples \[{', '.join(map(str, absent))}\] are not in teacher table"):
            table.lookup(np.array(missing))
    with pytest.raises(KeyError, match="output 'feat' not in teacher table"):
        table.lookup(index, names=["feat"])


def test_top_k_equal_to_the_class_count_is_exactly_the_full_table(tmp_path):
    rng = np.random.default_rng(9)
    outputs = {"logits": (rng.standard_normal((20, 7)) * 4).astype(np.float32)}
    index = np.arange(20)
    store = Store(tmp_path)
    full = TeacherTable.save(store, _teacher_key(), index, outputs, {})
    topk = TeacherTable.save(store, _teacher_key(top_k=7), index, outputs, {}, top_k=7)
    assert "logits" not in topk.table.columns and topk.table["logits.values"].dtype == np.float16
    query = rng.permutation(index)
    np.testing.assert_array_equal(topk.lookup(query)["logits"], full.lookup(query)["logits"])
    # and so after reading back
    reread = TeacherTable(store.load(_teacher_key(top_k=7)))
    np.testing.assert_array_equal(reread.lookup(query)["logits"], full.lookup(query)["logits"])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_top_k_keeps_the_top_probabilities_and_spreads_the_rest_uniformly(tmp_path, k):
    rng = np.random.default_rng(10 + k)
    n, classes = 16, 10
    # logits float16 holds exactly, so the stored top k are the teacher's own and the comparison can be tight
    logits = (rng.standard_normal((n, classes)) * 2).astype(np.float16).astype(np.float32)
    table = TeacherTable.save(Store(tmp_path), _teacher_key(top_k=k), np.arange(n), {"logits": logits}, {}, top_k=k)
    assert table.table["logits.values"].shape == (n, k) and table.num_classes == classes
    restored = table.lookup(np.arange(n))["logits"]
    assert restored.shape == (n, classes) and restored.dtype == np.float32
    p, q = _softmax(logits), _softmax(restored)
    for row in range(n):
        top = np.argsort(-logits[row])[:k]
        rest = np.setdiff1d(np.arange(classes), top)
        # the top k: the teacher's probabilities at T = 1
        np.testing.assert_allclose(q[row, top], p[row, top], rtol=1e-5)
        assert set(np.argsort(-restored[row], kind="stable")[:k]) == set(top)
        # the rest: the teacher's remaining mass (to float32's precision of 1 - kept), spread evenly
        np.testing.assert_allclose(q[row, rest], p[row, rest].sum() / len(rest), rtol=1e-4, atol=1e-6)
        assert restored[row, rest].max() == restored[row, rest].min()


def test_top_k_of_logits_float16_cannot_hold_is_close(tmp_path):
    rng = np.random.default_rng(20)
    logits = (rng.standard_normal((16, 10)) * 2).astype(np.float32)
    table = TeacherTable.save(Store(tmp_path), _teacher_key(top_k=3), np.arange(16), {"logits": logits}, {}, top_k=3)
    p, q = _softmax(logits), _softmax(table.lookup(np.arange(16))["logits"])
    top = np.argsort(-logits, axis=1)[:, :3]
    np.testing.assert_allclose(np.take_along_axis(q, top, 1), np.take_along_axis(p, top, 1), rtol=1e-2)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-6)


def test_compact_and_restore_logits_directly():
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((5, 300)).astype(np.float32)
    compact = compact_logits(logits, 4)
    assert compact["classes"].dtype == np.int16 and compact["values"].dtype == np.float16
    np.testing.assert_array_equal(compact["classes"], np.argsort(-logits, axis=1)[:, :4])
    rest = np.sort(logits.astype(np.float64), axis=1)[:, :-4]  # the 296 classes not kept
    np.testing.assert_allclose(compact["tail"], np.log(np.exp(rest).sum(axis=1)), rtol=1e-6)
    restored = restore_logits(compact["values"], compact["classes"], compact["tail"], 300)
    np.testing.assert_array_equal(np.take_along_axis(restored, compact["classes"].astype(np.int64), axis=1),
                                  compact["values"].astype(np.float32))
    p = np.exp(logits.astype(np.float64)) / np.exp(logits.astype(np.float64)).sum(axis=1, keepdims=True)
    q = np.exp(restored.astype(np.float64)) / np.exp(restored.astype(np.float64)).sum(axis=1, keepdims=True)
    kept = np.take_along_axis(p, compact["classes"].astype(np.int64), axis=1)
    np.testing.assert_allclose(np.take_along_axis(q, compact["classes"].astype(np.int64), axis=1), kept, rtol=2e-3)
    assert compact_logits(logits, 1000)["values"].shape == (5, 300)  # k is capped at the class count
    assert np.isneginf(compact_logits(logits, 300)["tail"]).all()  # nothing left out
