"""Teacher-output cache: content keys, Parquet round trip, verification on read, atomic and racing writes."""
from __future__ import annotations

import hashlib
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.teachers import cache as cache_mod
from raykd.teachers.cache import (
    CACHE_FORMAT_VERSION,
    CacheCorruptionWarning,
    TeacherCache,
    cache_key,
    file_sha256,
)

TEACHER = {"name": "swinir_x4", "weights_sha256": "ab" * 32, "config": {"scale": 4, "window": 8}}
KEY_ARGS = dict(teacher=TEACHER, dataset_fingerprint="div2k-train-0123", view_plan={"views": 2, "seed": 0},
                outputs=["logits", "feat"])


def _key(**overrides) -> str:
    return cache_key(**{**KEY_ARGS, **overrides})


def _sample(rng: np.random.Generator, num_samples: int = 6, num_views: int = 3) -> dict:
    """Rows in a shuffled (sample, view) order, with fixed fp16/fp32 outputs and one variable-shape fp16 output."""
    pairs = np.array([(i * 7, v) for i in range(num_samples) for v in range(num_views)])
    pairs = pairs[rng.permutation(len(pairs))]
    n = len(pairs)
    return {
        "index": pairs[:, 0].astype(np.int64),
        "view": pairs[:, 1].astype(np.int16),
        "outputs": {
            "logits": rng.standard_normal((n, 10)).astype(np.float16),
            "feat": rng.standard_normal((n, 4, 2, 3)).astype(np.float32),
            "sr": [rng.standard_normal((3, int(h), int(w))).astype(np.float16)
                   for h, w in rng.integers(2, 9, size=(n, 2))],
        },
    }


# ------------------------------------------------------------------------------------------------- keys


def test_cache_key_is_sha256_of_canonical_json_of_exactly_its_inputs():
    document = {
        "dataset_fingerprint": KEY_ARGS["dataset_fingerprint"],
        "format_version": CACHE_FORMAT_VERSION,
        "outputs": sorted(KEY_ARGS["outputs"]),
        "teacher": TEACHER,
        "view_plan": KEY_ARGS["view_plan"],
    }
    expected = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert _key() == expected


def test_cache_key_changes_with_every_input_and_the_format_version(monkeypatch):
    variants = {
        "base": _key(),
        "name": _key(teacher={**TEACHER, "name": "rcan_x4"}),
        "weights": _key(teacher={**TEACHER, "weights_sha256": "cd" * 32}),
        "config value": _key(teacher={**TEACHER, "config": {"scale": 4, "window": 16}}),
        "config field": _key(teacher={**TEACHER, "config": {**TEACHER["config"], "fp16": True}}),
        "dataset": _key(dataset_fingerprint="div2k-train-0124"),
        "view plan": _key(view_plan={"views": 2, "seed": 1}),
        "outputs": _key(outputs=["logits"]),
    }
    monkeypatch.setattr(cache_mod, "CACHE_FORMAT_VERSION", CACHE_FORMAT_VERSION + 1)
    variants["format version"] = _key()
    assert len(set(variants.values())) == len(variants), variants


def test_cache_key_ignores_ordering_that_carries_no_meaning():
    assert _key(outputs=["feat", "logits"]) == _key()
    assert _key(view_plan={"seed": 0, "views": 2}) == _key()
    assert _key(teacher={**TEACHER, "weights_sha256": TEACHER["weights_sha256"].upper()}) == _key()


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"teacher": {**TEACHER, "device": "cuda"}}, "unexpected"),
        ({"teacher": {"name": "x", "config": {}}}, "missing"),
        ({"teacher": {**TEACHER, "weights_sha256": "/weights/swinir.pth"}}, "64 hex"),
        ({"outputs": "logits"}, "sequence"),
        ({"outputs": ["logits", "logits"]}, "unique"),
        ({"outputs": ["index"]}, "invalid"),
        ({"view_plan": {"crop": float("nan")}}, "JSON|Out of range"),
    ],
)
def test_cache_key_rejects_malformed_inputs(overrides, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _key(**overrides)


def test_file_sha256_streams_to_the_same_digest(tmp_path):
    path = tmp_path / "weights.bin"
    payload = np.random.default_rng(0).bytes(10_001)
    path.write_bytes(payload)
    assert file_sha256(path, chunk_size=4096) == hashlib.sha256(payload).hexdigest()


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip_keeps_values_dtypes_and_shapes(tmp_path):
    data = _sample(np.random.default_rng(1))
    key = _key()
    saved = TeacherCache(tmp_path).save(key, data["index"], data["view"], data["outputs"], {"teacher": "swinir_x4"})
    loaded = TeacherCache(tmp_path).load(key)  # a fresh instance, as in another process
    assert loaded is not None
    for entry in (saved, loaded):
        assert entry.key == key and entry.meta == {"teacher": "swinir_x4"}
        assert entry.num_rows == len(data["index"])
        assert entry.outputs == ("feat", "logits", "sr")
        assert entry.shapes == {"feat": (4, 2, 3), "logits": (10,), "sr": None}
        assert entry.view.dtype == np.int16 and entry.index.dtype == np.int64
        np.testing.assert_array_equal(entry.index, data["index"])
        np.testing.assert_array_equal(entry.view, data["view"])
        for name in ("logits", "feat"):
            stored = entry.array(name)
            assert stored.dtype == data["outputs"][name].dtype
            np.testing.assert_array_equal(stored, data["outputs"][name])
        for got, want in zip(entry.array("sr"), data["outputs"]["sr"], strict=True):
            assert got.dtype == np.float16 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    expected_nbytes = (data["index"].nbytes + data["view"].nbytes + data["outputs"]["logits"].nbytes
                       + data["outputs"]["feat"].nbytes + sum(a.nbytes for a in data["outputs"]["sr"]))
    n = len(data["index"])
    assert loaded.nbytes == expected_nbytes + (n + 1) * 8 + n * 3 * 8  # + sr offsets and shapes


def test_view_dtypes_int16_int32_kept_and_wider_integers_narrowed(tmp_path):
    cache = TeacherCache(tmp_path)
    out = {"logits": np.zeros((3, 2), np.float32)}
    for view, expected in ((np.arange(3, dtype=np.int32), np.int32), (np.arange(3), np.int16),
                           (np.array([0, 1, 40_000]), np.int32)):
        key = _key(view_plan={"case": str(expected), "max": int(view.max())})
        cache.save(key, np.arange(3), view, out)
        assert cache.load(key).view.dtype == expected


def test_lookup_matches_brute_force_mapping_in_query_order(tmp_path):
    rng = np.random.default_rng(2)
    data = _sample(rng)
    entry = TeacherCache(tmp_path).save(_key(), data["index"], data["view"], data["outputs"])
    row_of = {(int(i), int(v)): r for r, (i, v) in enumerate(zip(data["index"], data["view"]))}
    queries = list(row_of)
    queries = [queries[q] for q in rng.integers(0, len(queries), size=25)]  # repeats allowed
    q_index = np.array([q[0] for q in queries])
    q_view = np.array([q[1] for q in queries], dtype=np.int32)
    got = entry.lookup(q_index, q_view)
    rows = [row_of[q] for q in queries]
    np.testing.assert_array_equal(got["logits"], data["outputs"]["logits"][rows])
    np.testing.assert_array_equal(got["feat"], data["outputs"]["feat"][rows])
    for arr, r in zip(got["sr"], rows, strict=True):
        np.testing.assert_array_equal(arr, data["outputs"]["sr"][r])
    # a scalar view broadcasts against the sample ids; names selects outputs
    only = entry.lookup(np.array([0, 7, 14]), 1, names=["logits"])
    assert list(only) == ["logits"]
    np.testing.assert_array_equal(only["logits"], data["outputs"]["logits"][[row_of[(i, 1)] for i in (0, 7, 14)]])


def test_lookup_raises_keyerror_naming_missing_pairs(tmp_path):
    data = _sample(np.random.default_rng(3), num_samples=4, num_views=3)  # sample ids 0, 7, 14, 21; views 0..2
    entry = TeacherCache(tmp_path).save(_key(), data["index"], data["view"], data["outputs"])
    with pytest.raises(KeyError, match=r"\(5, 0\)"):
        entry.lookup([0, 5], [0, 0])
    # view 21 of sample 0 would share the row code 0 * 3 + 21 with (7, 0) if views were not bounded
    with pytest.raises(KeyError, match=r"\(0, 21\)"):
        entry.lookup([0], [21])
    with pytest.raises(KeyError, match=r"\(-1, 0\)"):
        entry.lookup([-1], [0])
    with pytest.raises(KeyError, match="'nope'"):
        entry.lookup([0], [0], names=["nope"])


@pytest.mark.parametrize(
    "index, view, outputs, match",
    [
        ([0, 0], [1, 1], {"logits": np.zeros((2, 3), np.float16)}, "unique"),
        ([0, 1], [0, 0], {"logits": np.zeros((3, 3), np.float16)}, "2 rows"),
        ([0, 1], [0, 0], {"logits": np.zeros((2, 3), np.float64)}, "float16 or float32"),
        ([0, 1], [0, -1], {"logits": np.zeros((2, 3), np.float16)}, ">= 0"),
        ([0, 1], [0, 0], {"view": np.zeros((2, 3), np.float16)}, "invalid"),
        ([0, 1], [0, 0], {"sr": [np.zeros((3, 2, 2), np.float16), np.zeros((3, 2), np.float16)]}, "ndim"),
    ],
)
def test_save_rejects_malformed_arrays_without_writing(tmp_path, index, view, outputs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TeacherCache(tmp_path).save(_key(), np.array(index), np.array(view), outputs)
    assert not any(tmp_path.iterdir())


def test_entry_path_refuses_a_non_key():
    with pytest.raises(ValueError, match="64 lowercase hex"):
        TeacherCache("/tmp").entry_path("../../etc/passwd")


# --------------------------------------------------------------------------------- verification on read


def _saved(tmp_path: Path) -> tuple[TeacherCache, str, Path]:
    data = _sample(np.random.default_rng(4))
    cache, key = TeacherCache(tmp_path), _key()
    cache.save(key, data["index"], data["view"], data["outputs"])
    return cache, key, cache.entry_path(key)


def _rewrite(path: Path, edit_table=lambda t: t, edit_header=lambda h: h) -> None:
    table = pq.read_table(path)
    header = edit_header(json.loads(table.schema.metadata[b"raykd.cache"]))
    table = edit_table(table).replace_schema_metadata({b"raykd.cache": json.dumps(header).encode()})
    pq.write_table(table, path)


def _assert_discarded(cache: TeacherCache, key: str, path: Path, reason: str) -> None:
    with pytest.warns(CacheCorruptionWarning, match=reason) as record:
        assert cache.load(key) is None
    assert str(path) in str(record[0].message)
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()


def test_truncated_entry_is_reported_moved_aside_and_rebuilt(tmp_path):
    cache, key, path = _saved(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _assert_discarded(cache, key, path, "unreadable Parquet")
    assert cache.load(key) is None  # nothing left at the final name: a plain miss, no second warning
    data = _sample(np.random.default_rng(4))
    cache.save(key, data["index"], data["view"], data["outputs"])
    assert cache.load(key) is not None


def test_tampered_value_is_caught_by_the_checksum(tmp_path):
    cache, key, path = _saved(tmp_path)

    def bump_one_logit(table: pa.Table) -> pa.Table:
        col = table.column("logits").combine_chunks()
        values = col.flatten().to_numpy().copy()
        values[5] += np.float16(1.0)
        tampered = pa.FixedSizeListArray.from_arrays(pa.array(values), col.type.list_size)
        return table.set_column(table.column_names.index("logits"), "logits", tampered)

    _rewrite(path, edit_table=bump_one_logit)
    _assert_discarded(cache, key, path, r"sha256 mismatch in column\(s\) \['logits'\]")


def test_tampered_variable_shape_is_caught(tmp_path):
    cache, key, path = _saved(tmp_path)

    def swap_two_dims(table: pa.Table) -> pa.Table:
        col = table.column("__shape__sr").combine_chunks()
        shapes = col.flatten().to_numpy().reshape(-1, 3).copy()
        shapes[0, 1:] = shapes[0, 2], shapes[0, 1]
        if shapes[0, 1] == shapes[0, 2]:
            shapes[0] = (1, shapes[0, 1] * 3, shapes[0, 2])  # same byte length, different shape
        fixed = pa.FixedSizeListArray.from_arrays(pa.array(shapes.reshape(-1)), 3)
        return table.set_column(table.column_names.index("__shape__sr"), "__shape__sr", fixed)

    _rewrite(path, edit_table=swap_two_dims)
    _assert_discarded(cache, key, path, r"sha256 mismatch in column\(s\) \['__shape__sr'\]")


def test_format_version_mismatch_is_rejected(tmp_path):
    cache, key, path = _saved(tmp_path)
    _rewrite(path, edit_header=lambda h: {**h, "format_version": CACHE_FORMAT_VERSION + 1})
    _assert_discarded(cache, key, path, "format version")


def test_entry_under_the_wrong_key_is_rejected(tmp_path):
    cache, key, path = _saved(tmp_path)
    other = _key(dataset_fingerprint="something-else")
    path.rename(cache.entry_path(other))
    _assert_discarded(cache, other, cache.entry_path(other), "holds key")


def test_row_count_mismatch_is_rejected(tmp_path):
    cache, key, path = _saved(tmp_path)
    _rewrite(path, edit_header=lambda h: {**h, "num_rows": h["num_rows"] + 1})
    _assert_discarded(cache, key, path, "rows")


# ----------------------------------------------------------------------------------- atomicity, races


def test_failed_write_leaves_no_file_and_keeps_the_previous_entry(tmp_path, monkeypatch):
    cache, key = TeacherCache(tmp_path), _key()
    index, view = np.arange(4), np.zeros(4, np.int16)

    def half_then_fail(table, where, **kwargs):
        where.write(b"PAR1 partial bytes")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache_mod.pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        cache.save(key, index, view, {"logits": np.ones((4, 2), np.float16)})
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    cache.save(key, index, view, {"logits": np.ones((4, 2), np.float16)})
    monkeypatch.setattr(cache_mod.pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        cache.save(key, index, view, {"logits": np.zeros((4, 2), np.float16)})
    assert [p.name for p in tmp_path.iterdir()] == [cache.entry_path(key).name]
    np.testing.assert_array_equal(cache.load(key).array("logits"), np.ones((4, 2), np.float16))


def test_racing_writers_and_a_reader_only_ever_see_valid_entries(tmp_path):
    data = _sample(np.random.default_rng(5), num_samples=40, num_views=4)
    cache, key = TeacherCache(tmp_path), _key()
    writers, rounds = 4, 3
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []
    seen: list[bool] = []

    def write() -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                TeacherCache(tmp_path).save(key, data["index"], data["view"], data["outputs"])
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(exc)

    def read() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", CacheCorruptionWarning)
                barrier.wait()
                for _ in range(writers * rounds):
                    seen.append(TeacherCache(tmp_path).load(key) is not None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(writers)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [p.name for p in tmp_path.iterdir()] == [cache.entry_path(key).name]
    entry = cache.load(key)
    np.testing.assert_array_equal(entry.array("logits"), data["outputs"]["logits"])
