"""What teacher tables cost and when a sweep is told before making them: ``--top-k``'s error (``top_k_error``: the
KL a student sees between full and top-k softened teacher outputs), the disk (``check_table_space``: sizes at a few
k when the tables are large, the k that fits when they do not) and the object store (``check_object_store``: the
data beside the tables it keeps). No Ray: the projection is hand-made, the disk's free space faked."""
from __future__ import annotations

import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raykd.console import UserError, log
from raykd.teachers.store import TeacherTable, top_k_error
from raykd.tune.sweep import TOP_K_SIZES, check_object_store, check_table_space


def _size(count: int) -> str:
    """Sizes as the sweep's lines print them."""
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _logits(rows: int = 64, classes: int = 20, seed: int = 0) -> np.ndarray:
    """Peaked rows: logits falling with the class rank (a random order per row) plus noise."""
    rng = np.random.default_rng(seed)
    ranked = -0.6 * np.arange(classes, dtype=np.float32) + rng.normal(0, 0.3, (rows, classes)).astype(np.float32)
    return np.stack([row[rng.permutation(classes)] for row in ranked]).astype(np.float32)


def _reference_kl(logits: np.ndarray, k: int, t: float) -> torch.Tensor:
    """KL(p_T || q_T) per row built by hand: q_1 keeps the top k probabilities of p_1 and spreads the rest evenly
    over the other classes; q_T is q_1 softened (q_1 ** (1/T), renormalised)."""
    z = torch.from_numpy(logits).double()
    p1 = z.softmax(dim=1)
    top = p1.topk(k, dim=1).indices
    keep = torch.zeros_like(p1, dtype=torch.bool).scatter_(1, top, True)
    rest = (1 - (p1 * keep).sum(1, keepdim=True)) / (z.shape[1] - k) if k < z.shape[1] else 0.0
    q1 = torch.where(keep, p1, rest)
    log_q = F.log_softmax(q1.log() / t, dim=1)
    return F.kl_div(log_q, F.softmax(z / t, dim=1), reduction="none").sum(1)


@pytest.mark.parametrize("t", [1.0, 4.0])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_error_is_the_kl_of_the_restored_softened_distribution(k, t) -> None:
    logits = _logits()
    got = top_k_error(logits, k, t, precision="float32")
    kl = _reference_kl(logits, k, t)
    assert got["kl_mean"] == pytest.approx(kl.mean().item(), rel=1e-4, abs=1e-9)
    assert got["kl_max"] == pytest.approx(kl.max().item(), rel=1e-4, abs=1e-9)
    assert 0 < got["tv_mean"] <= 1


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_every_class_kept_costs_nothing(precision) -> None:
    logits = _logits()
    for t in (1.0, 4.0):
        got = top_k_error(logits, logits.shape[1], t, precision=precision)
        assert got["kl_max"] == pytest.approx(0.0, abs=1e-9) and got["tv_mean"] == pytest.approx(0.0, abs=1e-7)


def test_the_error_falls_as_more_logits_are_kept() -> None:
    logits = _logits(classes=30)
    for t in (1.0, 4.0):
        kls = [top_k_error(logits, k, t, precision="float32")["kl_mean"] for k in (1, 2, 5, 10, 20)]
        assert all(a > b for a, b in zip(kls, kls[1:])), kls


def test_the_error_falls_as_more_logits_are_kept_at_float16_too() -> None:
    """float16 kept logits leave the light tail intact (its mass is stored as itself), so T = 4 sees it too."""
    logits = _logits(classes=30)
    kls = [top_k_error(logits, k, 4.0)["kl_mean"] for k in (1, 2, 5, 10, 20)]
    assert all(a > b for a, b in zip(kls, kls[1:])), kls


# ------------------------------------------------------------------------------------------- check_table_space


@pytest.fixture
def logged(caplog, monkeypatch):
    """The raykd logger's records (a command that configured it stopped it propagating to caplog's handler)."""
    monkeypatch.setattr(log, "propagate", True)
    caplog.set_level(logging.INFO, logger=log.name)
    return caplog


@pytest.fixture
def free_bytes(monkeypatch):
    """Fake the store disk's free space: ``free_bytes(n)``."""
    def set_free(n: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=2 * n, used=n, free=n))
    return set_free


def _stored_row_bytes(classes: int, k: int | None, precision: str = "float16") -> float:
    """Bytes per row of the logits columns a table of ``classes`` logits really stores at ``k``."""
    columns, _ = TeacherTable.columns(np.arange(8), {"logits": _logits(8, classes)}, k, precision)
    return sum(v.nbytes for name, v in columns.items() if name.startswith("logits")) / 8


def _cls(tables: int, rows: int, classes: int, other: int = 0, precision: str = "float16") -> dict:
    """A projection entry as ``TeacherService.projection`` makes it: full logits plus ``other`` bytes a row."""
    logits = int(_stored_row_bytes(classes, None, precision))
    return {"tables": tables, "table_bytes": rows * (logits + other), "rows": rows, "classes": classes,
            "logits_bytes": logits, "precision": precision}


def _expected(projection: dict, k: int) -> int:
    """Bytes of the projected tables with the logits of those that have more than ``k`` classes at top ``k``."""
    total = 0
    for p in projection.values():
        cut = k < p.get("classes", 0)
        row = _stored_row_bytes(p["classes"], k, p["precision"]) - p["logits_bytes"] if cut else 0
        total += p["tables"] * (p["table_bytes"] + int(p.get("rows", 0) * row))
    return total


def test_large_tables_are_told_their_size_at_a_few_top_k(logged, free_bytes, tmp_path) -> None:
    projection = {"resnet": _cls(10, 1_000_000, 1000, other=64), "sr": {"tables": 1, "table_bytes": 2**30}}
    total = _expected(projection, 10**6)
    free_bytes(int(total * 1.5))  # fits, but takes two thirds of the disk
    check_table_space(projection, str(tmp_path / "store"))
    warnings = [r.getMessage() for r in logged.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"would take {_size(total)}" in warnings[0]
    for k in (k for k in TOP_K_SIZES if k < 1000):
        assert f"--top-k {k}: {_size(_expected(projection, k))}" in warnings[0]
    assert "--top-k 1000" not in warnings[0]


def test_tables_well_within_the_disk_or_without_logits_get_no_top_k_sizes(logged, free_bytes, tmp_path) -> None:
    small = {"resnet": _cls(2, 1000, 100)}
    free_bytes(3 * _expected(small, 10**6))
    check_table_space(small, str(tmp_path))
    free_bytes(int(1.5 * 2**30))
    check_table_space({"sr": {"tables": 1, "table_bytes": 2**30, "rows": 10, "classes": 0, "logits_bytes": 0,
                              "precision": "float16"}}, str(tmp_path))
    assert not [r for r in logged.records if r.levelno >= logging.WARNING]
    assert any("teacher tables to write" in r.getMessage() for r in logged.records)


def test_a_refusal_names_the_largest_top_k_that_fits(logged, free_bytes, tmp_path) -> None:
    projection = {"a": _cls(4, 50_000, 200, other=32), "b": _cls(4, 50_000, 1000)}
    fitting = 37
    free_bytes((_expected(projection, fitting) + _expected(projection, fitting + 1)) // 2)  # 37 fits, 38 does not
    with pytest.raises(UserError, match=rf"keep fewer logits \(--top-k {fitting} fits\)"):
        check_table_space(projection, str(tmp_path))
    assert any("--top-k 20:" in r.getMessage() for r in logged.records if r.levelno == logging.WARNING)
    free_bytes(_expected(projection, 1) - 1)  # not even one logit a row fits
    with pytest.raises(UserError, match=r"keep fewer logits \(--top-k K\)"):
        check_table_space(projection, str(tmp_path))


def test_data_and_the_tables_kept_beside_it_must_fit_the_object_store() -> None:
    """1 GiB of data and 4 kept tables of 0.5 GiB (teacher a) and 0.25 GiB (b): 4 GiB is refused, naming each
    share and what to raise; 4 GiB plus a byte, or keeping 3 tables, or no capacity known, passes."""
    projection = {"a": {"tables": 2, "table_bytes": 2**29}, "b": {"tables": 0, "table_bytes": 2**28}}
    with pytest.raises(UserError, match=r"holds 4\.00 GiB; the data takes 1\.00 GiB and the teacher tables it keeps "
                                        r"3\.00 GiB \(a: 4 x 512\.0 MiB, b: 4 x 256\.0 MiB\): raise the object store.*"
                                        r"teacher_service\.keep_epochs.*--top-k"):
        check_object_store(projection, 2**30 + 1, 4, 4 * 2**30)
    with pytest.raises(UserError, match="stream the data"):  # streaming (labels only) alone would make room
        check_object_store(projection, 2**30 + 1, 4, 4 * 2**30)
    with pytest.raises(UserError) as tables_alone:  # 4 x 0.75 GiB of tables over 2 GiB: streaming would not do
        check_object_store(projection, 2**20, 4, 2 * 2**30)
    assert "stream the data" not in str(tables_alone.value) and "--top-k K" in str(tables_alone.value)
    check_object_store(projection, 2**30, 4, 4 * 2**30)
    check_object_store(projection, 2**30 + 1, 3, 4 * 2**30)
    check_object_store(projection, 2**40, 4, None)
