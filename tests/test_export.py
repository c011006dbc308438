"""From a finished sweep to a usable student: ``raykd export`` -> ``raykd.load_student`` -> ``raykd evaluate``
reproduce the metric the sweep recorded, and bad input is refused in one line.

A real sweep is minutes; the run directory is built as a sweep builds it instead: tiny students trained by the
real training function on the built-in digits, a kept checkpoint per epoch as Tune keeps them, and the report
written by :func:`raykd.tune.report.write_report` from what Tune's results hold.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import raykd
from raykd.cli import main
from raykd.config import DataConfig, MethodConfig, ModelConfig, OptimConfig, TeacherConfig, TrainConfig, to_json
from raykd.data.store import Store
from raykd.models.checkpoint import MODEL_FILE, read_meta, verify
from raykd.train.loop import train
from raykd.train.tasks import build_task
from raykd.tune.report import write_report

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@dataclass
class _TuneResult:
    """What :func:`raykd.tune.report.trials_table` reads of a Tune ``Result``."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    metrics_dataframe: pd.DataFrame
    path: str
    best_checkpoints: list[tuple[Any, dict[str, Any]]]
    checkpoint: Any
    error: Any = None


def _trial(cfg: TrainConfig, trial_dir: Path, trial_id: str, task: Any) -> _TuneResult:
    """Train ``cfg`` as a trial does, keeping each epoch's checkpoint under ``trial_dir`` as Tune does."""
    rows, kept = [], []

    def report(metrics: dict[str, Any], saved: Path | None) -> None:
        copy = trial_dir / f"checkpoint_{metrics['epoch'] - 1:06d}"
        shutil.copytree(saved, copy)
        rows.append({**metrics, "trial_id": trial_id, "seed": cfg.seed, "timestamp": time.time()})
        kept.append((SimpleNamespace(path=str(copy)), rows[-1]))

    train(cfg, task=task, report=report, checkpoint_dir=trial_dir / "live")
    return _TuneResult({"method": cfg.method.name}, rows[-1], pd.DataFrame(rows), str(trial_dir), kept, kept[-1][0])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> SimpleNamespace:
    """``runs/demo_sweep``: a kd student of a resnet8 teacher and a student alone, 2 epochs each."""
    tmp = tmp_path_factory.mktemp("sweep")
    data = DataConfig(dataset="demo", image_size=16, root=str(tmp / "digits-16"))
    task = build_task(data, 0, store=Store(tmp / "cache" / "store"))
    alone = TrainConfig(model=ModelConfig("resnet8"), data=data, optim=OptimConfig(lr=0.1, epochs=2, batch_size=64))
    train(alone, task=task, checkpoint_dir=tmp / "teacher")
    kd = TrainConfig(model=ModelConfig("resnet8"), data=data, optim=alone.optim, method=MethodConfig("kd"),
                     teacher=TeacherConfig(str(tmp / "teacher")), seed=1)
    run_dir = tmp / "runs" / "demo_sweep"
    results = [_trial(kd, run_dir / "trial_kd", "kd_00000", task), _trial(alone, run_dir / "trial_none",
                                                                          "none_00001", task)]
    summary = write_report(results, None, str(run_dir), task="cls",
                           sweep={"name": "demo_sweep", "metric": "val_top1", "mode": "max"}, base=to_json(kd),
                           teacher_stats={}, wall_s=1.0,
                           teacher_scores={"resnet8": read_meta(tmp / "teacher")["val_top1"]})
    return SimpleNamespace(root=tmp, run_dir=run_dir, data=data, task=task, summary=summary)


def test_export_load_and_evaluate_reproduce_the_recorded_metric(sweep, tmp_path: Path, capsys) -> None:
    best = sweep.summary["best"]
    recorded = read_meta(best["checkpoint"])
    assert best["val_top1"] == recorded["val_top1"]  # the best epoch's checkpoint was kept
    out = tmp_path / "students" / "best"
    assert main(["export", str(sweep.run_dir), "--out", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", MODEL_FILE, "meta.json"])
    assert [p.name for p in out.parent.iterdir()] == ["best"]  # no temporary sibling left behind
    meta = verify(out)
    assert meta["val_top1"] == recorded["val_top1"] and meta["config"] == recorded["config"]
    assert meta["model"] == "resnet8" and meta["model_kwargs"] == {"num_classes": 10}
    assert meta["export"]["trial"] == best["trial"] and meta["export"]["sweep"] == "demo_sweep"

    student = raykd.load_student(out)
    assert isinstance(student, torch.nn.Module) and not student.training
    weights = load_file(str(Path(best["checkpoint"]) / MODEL_FILE))
    assert all(torch.equal(weights[k], v) for k, v in student.state_dict().items())
    assert sweep.task.evaluate(student, torch.device("cpu"), "hr")["val_top1"] == recorded["val_top1"]

    assert main(["evaluate", str(out), "--cache-dir", str(sweep.root / "cache"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"val_top1 {recorded['val_top1']:.2f}%  (recorded at epoch {recorded['epoch']}: " \
           f"{recorded['val_top1']:.2f}%)" in printed, printed
    assert f"val_top5 {recorded['val_top5']:.2f}%" in printed

    card = (out / "README.md").read_text()
    method = best["method"]
    params = ", ".join(f"{k}={v}" for k, v in sorted(recorded["method_params"].items())) or \
        "no hyperparameters"
    assert f"| method | {method}: {params} |" in card
    assert f"| val_top1 | {recorded['val_top1']:.2f}% at epoch {recorded['epoch']} of 2" in card
    assert f"| seed | {best['seed']} (search trial {best['trial']}) |" in card
    assert f"| data | demo (cls, root `{sweep.data.root}`, image size 16) |" in card
    assert "| sweep | demo_sweep" in card and f"raykd.load_student({str(out)!r})" in card
    assert f"| teacher | {_teacher_cell(sweep, method)} |" in card


def _teacher_cell(sweep, method: str) -> str:
    if method == "none":
        return "none: trained without a teacher"
    score = read_meta(sweep.root / "teacher")["val_top1"]
    return f"resnet8 (`{sweep.root / 'teacher'}`), its own val_top1 {score:.2f}%"


def test_any_trial_exports_with_its_teacher_named(sweep, tmp_path: Path) -> None:
    for trial, method in (("kd_00000", "kd"), ("none_00001", "none")):
        out = tmp_path / trial
        assert main(["export", str(sweep.run_dir), "--trial", trial, "--out", str(out)]) == 0
        meta = verify(out)
        assert meta["export"]["trial"] == trial and meta["export"]["checkpoint"].startswith(str(sweep.run_dir))
        assert meta["config"]["method"]["name"] == method
        assert f"| teacher | {_teacher_cell(sweep, method)} |" in (out / "README.md").read_text()
    assert verify(tmp_path / "kd_00000")["teachers"] == [{
        "name": "resnet8", "checkpoint": str(sweep.root / "teacher"),
        "score": read_meta(sweep.root / "teacher")["val_top1"]}]
    assert verify(tmp_path / "none_00001")["teachers"] == []


def _summary_copy(sweep, tmp_path: Path, **best: Any) -> Path:
    summary = json.loads((sweep.run_dir / "summary.json").read_text())
    summary["best"] = None if best.get("none") else {**summary["best"], **best}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    return tmp_path / "run"


def _sr_model(sweep, tmp_path: Path) -> Path:
    """The exported student with an SR data config: what an SR checkpoint records."""
    out = tmp_path / "sr"
    assert main(["export", str(sweep.run_dir), "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    meta["config"]["data"] = {"task": "sr", "dataset": "demo_sr", "scale": 3}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize("case, expected", [
    ("no summary", r"run/summary.json not found: give a finished sweep's directory"),
    ("no best", r"run/summary.json names no best student .* give --trial TRIAL_ID"),
    ("checkpoint gone", r"gone no longer exists"),
    ("out not empty", r"--out .*full already exists and is not an empty directory"),
    ("unknown trial", r"--trial nope: no such trial in .*results.parquet; its trials are kd_00000, none_00001"),
    ("evaluate sr", r"holds an SR model; measure it with raykd eval-sr --model .*sr --set BENCHMARK_DIR --scale 3"),
    ("evaluate not a checkpoint", r"run/meta.json not found: .*run is not a raykd checkpoint directory"),
])
def test_bad_input_is_refused_in_one_line(sweep, tmp_path: Path, capsys, case: str, expected: str) -> None:
    out = tmp_path / "student"
    argv = {
        "no summary": lambda: ["export", str((tmp_path / "run").mkdir() or tmp_path / "run"), "--out", str(out)],
        "no best": lambda: ["export", str(_summary_copy(sweep, tmp_path, none=True)), "--out", str(out)],
        "checkpoint gone": lambda: ["export", str(_summary_copy(sweep, tmp_path, checkpoint=str(tmp_path / "gone"))),
                                    "--out", str(out)],
        "out not empty": lambda: ["export", str(sweep.run_dir), "--out",
                                  str((tmp_path / "full").mkdir() or (tmp_path / "full" / "x").touch() or
                                      tmp_path / "full")],
        "unknown trial": lambda: ["export", str(sweep.run_dir), "--trial", "nope", "--out", str(out)],
        "evaluate sr": lambda: ["evaluate", str(_sr_model(sweep, tmp_path))],
        "evaluate not a checkpoint": lambda: ["evaluate", str((tmp_path / "run").mkdir() or tmp_path / "run")],
    }[case]()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(expected, err), err
    assert not out.exists()


def test_the_readme_section_runs_as_written(sweep, tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's "From a sweep to a student" commands and Python, on a sweep at the path they name."""
    section = README.split("## From a sweep to a student", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(line.split("#")[0]) for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
                for line in block.splitlines() if line.startswith(".venv/bin/raykd")]
    run_dirs = {Path(argv[2]) for argv in commands if argv[1] == "export"}
    assert [argv[1] for argv in commands] == ["export", "evaluate"] and len(run_dirs) == 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYKD_CACHE", str(sweep.root / "cache"))
    shutil.copytree(sweep.run_dir, tmp_path / run_dirs.pop())
    for argv in commands:
        assert main(argv[1:]) == 0, capsys.readouterr().err
    assert "val_top1" in capsys.readouterr().out
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip().isdigit()  # the example prints the student's parameter count
