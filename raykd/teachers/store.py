"""Teacher outputs as stored tables: their content keys, their compact form, and lookups by sample.

One table holds one teacher's requested outputs for every sample of one view: an epoch's table (classification:
view ``e`` of every training sample, the view epoch ``e`` trains on) or the whole-image table (super-resolution:
one row per training image, the teacher's output on the whole LR image, cropped later with each patch's box, so
it serves every epoch). Its key (:func:`table_key`) hashes exactly what determines the outputs: the teacher's
weights and config, the decoded data's content key, how its input is made from the data (views, normalisation,
or the whole image and the tiling), the output names, the view number and the storage form, precision included:
rows are held at the sweep's precision (:mod:`raykd.teachers.precision`, float16 by default), so a table of one
precision never serves a run of another.

``top_k`` keeps only the k largest logits of each row, their class indices and the row's log-sum-exp (FKD, Shen &
Xing, ECCV 2022, stores soft labels this way): :meth:`TeacherTable.lookup` restores the other classes as equal
logits holding the remaining probability mass, so the softmax at temperature 1 keeps the top k probabilities and
spreads the rest uniformly; ``k = C`` is exact.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raykd.data.store import Ragged, Store, Table, content_key
from raykd.teachers.precision import DEFAULT_PRECISION, stored_dtype

__all__ = ["TABLE_FORMAT", "TeacherTable", "table_key", "compact_logits", "restore_logits"]

TABLE_FORMAT = 3


def table_key(teacher: Mapping[str, Any], inputs: Mapping[str, Any], outputs: Sequence[str], view: int | None,
              top_k: int | None = None, precision: str = DEFAULT_PRECISION, rows: np.ndarray | None = None) -> str:
    """The content key of one teacher's table: ``teacher`` is :meth:`TeacherSpec.identity`, ``inputs`` what the
    teacher's input depends on (:meth:`ClassificationBatches.describe` / :meth:`SRBatches.describe` plus inference
    settings), ``view`` the view number (``None`` for whole-image tables), ``precision`` that of its rows;
    ``rows``: the samples of a table of only some of them (those trials read), ``None`` for every sample."""
    document = {"table": "teacher_outputs", "format": TABLE_FORMAT, "teacher": dict(teacher), "inputs": dict(inputs),
                "outputs": sorted(outputs), "view": view, "top_k": top_k, "precision": precision}
    if rows is not None:  # the set of samples, in whatever order the table holds them
        document["rows"] = hashlib.sha256(np.unique(np.asarray(rows, dtype=np.int64)).tobytes()).hexdigest()
    return content_key(document)


def compact_logits(logits: np.ndarray, k: int, precision: str = DEFAULT_PRECISION) -> dict[str, np.ndarray]:
    """The ``k`` largest logits per row (at ``precision``, descending), their class indices and each row's
    log-sum-exp."""
    logits = np.asarray(logits, dtype=np.float32)
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    peak = logits.max(axis=1, keepdims=True)
    lse = (peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))).astype(np.float32)
    index_dtype = np.int16 if logits.shape[1] <= np.iinfo(np.int16).max else np.int32
    return {"values": np.take_along_axis(logits, top, axis=1).astype(stored_dtype(precision)),
            "classes": top.astype(index_dtype), "lse": lse}


def restore_logits(values: np.ndarray, classes: np.ndarray, lse: np.ndarray, num_classes: int) -> np.ndarray:
    """Full ``(B, C)`` logits from :func:`compact_logits`: the kept logits where they were, every other class the
    logit ``lse + log(remaining mass / (C - k))``."""
    values = values.astype(np.float32)
    b, k = values.shape
    out = np.empty((b, num_classes), dtype=np.float32)
    if k < num_classes:
        kept = np.exp(values - lse[:, None]).sum(axis=1)
        rest = np.clip(1.0 - kept, np.finfo(np.float32).tiny, None) / (num_classes - k)
        out[:] = (lse + np.log(rest))[:, None]
    np.put_along_axis(out, classes.astype(np.int64), values, axis=1)
    return out


class TeacherTable:
    """One teacher's stored outputs: ``lookup(index)`` returns the rows of samples ``index`` (in query order) as
    float32 arrays (fixed-shape outputs) or lists of arrays (whole SR images)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.key = table.key
        self.index = np.asarray(table["index"])
        self.outputs: tuple[str, ...] = tuple(table.meta["outputs"])
        self.top_k = table.meta.get("top_k")
        self.precision: str = table.meta["precision"]
        self.num_classes = table.meta.get("num_classes")
        self._position = np.argsort(self.index, kind="stable")
        self._sorted = self.index[self._position]

    @classmethod
    def save(cls, store: Store, key: str, index: np.ndarray, outputs: Mapping[str, Any], meta: Mapping[str, Any],
             top_k: int | None = None, precision: str = DEFAULT_PRECISION) -> "TeacherTable":
        """Store a table (rows at ``precision``; ``logits`` compacted to the top ``top_k`` when given) and return
        it."""
        columns, extra = cls.columns(index, outputs, top_k, precision)
        return cls(store.save(key, columns, {**meta, **extra}))

    @classmethod
    def in_memory(cls, key: str, index: np.ndarray, outputs: Mapping[str, Any], meta: Mapping[str, Any],
                  top_k: int | None = None, precision: str = DEFAULT_PRECISION) -> "TeacherTable":
        """The table :meth:`save` would store (a chunk of rows, say), not written anywhere."""
        columns, extra = cls.columns(index, outputs, top_k, precision)
        return cls(Table(key, columns, {**meta, **extra}))

    @staticmethod
    def concat(parts: Sequence["TeacherTable"]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The columns and meta of ``parts`` (tables of one teacher and view, in row order) as one table's."""
        names = parts[0].table.columns
        columns = {name: Ragged.concat([p.table[name] for p in parts]) if isinstance(parts[0].table[name], Ragged)
                   else np.concatenate([p.table[name] for p in parts]) for name in names}
        return columns, dict(parts[0].table.meta)

    @staticmethod
    def columns(index: np.ndarray, outputs: Mapping[str, Any], top_k: int | None, precision: str
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The stored columns of ``outputs`` for samples ``index`` and the meta they need to be read back."""
        dtype = stored_dtype(precision)
        columns: dict[str, Any] = {"index": np.asarray(index, dtype=np.int64)}
        extra: dict[str, Any] = {"outputs": sorted(outputs), "top_k": top_k, "precision": precision}
        for name, value in outputs.items():
            if top_k is not None and name == "logits":
                compact = compact_logits(value, top_k, precision)
                columns.update({f"logits.{part}": array for part, array in compact.items()})
                extra["num_classes"] = int(np.asarray(value).shape[1])
            elif isinstance(value, (list, Ragged)):
                columns[name] = Ragged.from_rows([np.asarray(v, dtype=dtype) for v in value], name) \
                    if isinstance(value, list) else value
            else:
                columns[name] = np.asarray(value, dtype=dtype)
        return columns, extra

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def nbytes(self) -> int:
        return self.table.nbytes

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Row numbers of samples ``index``; KeyError names samples the table does not hold."""
        index = np.asarray(index, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, index), len(self._sorted) - 1)
        found = self._sorted[pos] == index
        if not found.all():
            missing = index[~found][:10].tolist()
            raise KeyError(f"samples {missing} are not in teacher table {self.key[:12]}... ({self.num_rows} rows)")
        return self._position[pos]

    def lookup(self, index: np.ndarray, names: Sequence[str] | None = None) -> dict[str, Any]:
        rows = self.rows(index)
        out: dict[str, Any] = {}
        for name in names or self.outputs:
            if name not in self.outputs:
                raise KeyError(f"output {name!r} not in teacher table {self.key[:12]}...; it holds "
                               f"{list(self.outputs)}")
            if name == "logits" and self.top_k is not None:
                out[name] = restore_logits(self.table["logits.values"][rows], self.table["logits.classes"][rows],
                                           self.table["logits.lse"][rows], self.num_classes)
                continue
            column = self.table[name]
            out[name] = column.take(rows) if isinstance(column, Ragged) else column[rows].astype(np.float32)
        return out

    def __repr__(self) -> str:
        return f"TeacherTable({self.key[:12]}..., rows={self.num_rows}, outputs={list(self.outputs)})"
