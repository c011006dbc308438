"""Teacher outputs as stored tables: their content keys, their compact form, and lookups by sample.

One table holds one teacher's requested outputs for every sample of one view: an epoch's table (classification:
view ``e`` of every training sample, the view epoch ``e`` trains on) or the whole-image table (super-resolution:
one row per training image, the teacher's output on the whole LR image, cropped later with each patch's box, so
it serves every epoch). Its key (:func:`table_key`) hashes exactly what determines the outputs: the teacher's
weights and config, the decoded data's content key, how its input is made from the data (views, normalisation,
or the whole image and the tiling), the output names, the view number and the storage form, precision included:
rows are held at the sweep's precision (:mod:`raykd.teachers.precision`, float16 by default), so a table of one
precision never serves a run of another.

``top_k`` keeps only the k largest logits of each row, their class indices and the log of the other classes'
summed ``exp`` (FKD, Shen & Xing, ECCV 2022, stores soft labels this way): :meth:`TeacherTable.lookup` restores the
other classes as equal logits holding that mass, so the softmax at temperature 1 keeps the top k probabilities and
spreads the rest uniformly; ``k = C`` is exact. :func:`top_k_error` measures what k costs at a temperature.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raykd.data.store import Ragged, Store, Table, content_key
from raykd.teachers.precision import DEFAULT_PRECISION, stored_dtype

__all__ = ["TABLE_FORMAT", "TeacherTable", "table_key", "compact_logits", "restore_logits", "top_k_error"]

TABLE_FORMAT = 4  # 4: top-k tables keep the remaining classes' log-mass ("logits.tail"), not the log-sum-exp


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
    """The ``k`` largest logits per row (at ``precision``, descending), their class indices and the log of the
    remaining classes' summed ``exp`` (float32; ``-inf`` where ``k`` covers every class). The remainder is kept as
    itself rather than as ``1 -`` the kept probabilities: float16 rounding of the kept logits can make those sum
    past 1 and erase a light tail, which softening at T > 1 would have brought back."""
    logits = np.asarray(logits, dtype=np.float32)
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")
    top, rest = order[:, :k], order[:, k:]
    if rest.shape[1]:
        others = np.take_along_axis(logits, rest, axis=1)
        peak = others.max(axis=1, keepdims=True)
        tail = (peak[:, 0] + np.log(np.exp(others - peak).sum(axis=1))).astype(np.float32)
    else:
        tail = np.full(len(logits), -np.inf, dtype=np.float32)
    index_dtype = np.int16 if logits.shape[1] <= np.iinfo(np.int16).max else np.int32
    return {"values": np.take_along_axis(logits, top, axis=1).astype(stored_dtype(precision)),
            "classes": top.astype(index_dtype), "tail": tail}


def restore_logits(values: np.ndarray, classes: np.ndarray, tail: np.ndarray, num_classes: int) -> np.ndarray:
    """Full ``(B, C)`` logits from :func:`compact_logits`: the kept logits where they were, every other class the
    logit ``tail - log(C - k)`` (the remainder's mass spread evenly: FKD's rule). Softmax of the result is the
    teacher's distribution on the kept classes exactly (up to the kept logits' precision)."""
    values = values.astype(np.float32)
    b, k = values.shape
    out = np.empty((b, num_classes), dtype=np.float32)
    if k < num_classes:
        out[:] = (tail.astype(np.float32) - np.float32(np.log(num_classes - k)))[:, None]
    np.put_along_axis(out, classes.astype(np.int64), values, axis=1)
    return out


def top_k_error(logits: np.ndarray, k: int, temperature: float = 1.0, precision: str = DEFAULT_PRECISION
                ) -> dict[str, float]:
    """What a top-``k`` table costs a student at ``temperature``: over the rows of teacher ``logits`` ``(N, C)``,
    the mean and max of KL(p_T || q_T) (nats) and the mean total variation ``0.5 * sum |p_T - q_T|``.

    ``p_T = softmax(z / T)`` with ``z`` the full logits at ``precision`` (what a full table of that precision holds,
    so the figure is top-k's own error and ``k = C`` gives exactly 0), ``q_T = softmax(restore_logits(
    compact_logits(logits, k)) / T)``: what the student reads from the top-k table and softens. The stored top k
    keep their probabilities at T = 1; at T > 1 the uniform remainder holds more mass than the true tail did (the
    power mean of the tail's probabilities exceeds their mean), so the error grows with T. Storing only the top-k
    soft labels is FKD's (Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV
    2022)."""
    logits = np.asarray(logits, dtype=np.float32)
    compact = compact_logits(logits, k, precision)
    restored = restore_logits(compact["values"], compact["classes"], compact["tail"], logits.shape[1])
    full = logits.astype(stored_dtype(precision)).astype(np.float64) / temperature
    log_p = full - _logsumexp(full)
    log_q = restored.astype(np.float64) / temperature
    log_q = log_q - _logsumexp(log_q)
    p = np.exp(log_p)
    kl = np.maximum((p * (log_p - log_q)).sum(axis=1), 0.0)  # >= 0; rounding can leave -1e-17
    tv = 0.5 * np.abs(p - np.exp(log_q)).sum(axis=1)
    return {"kl_mean": float(kl.mean()), "kl_max": float(kl.max()), "tv_mean": float(tv.mean())}


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(axis=1, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(axis=1, keepdims=True))


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
                                           self.table["logits.tail"][rows], self.num_classes)
                continue
            column = self.table[name]
            out[name] = column.take(rows) if isinstance(column, Ragged) else column[rows].astype(np.float32)
        return out

    def __repr__(self) -> str:
        return f"TeacherTable({self.key[:12]}..., rows={self.num_rows}, outputs={list(self.outputs)})"
