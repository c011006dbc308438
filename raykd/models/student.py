"""A trained student outside raykd: a finished sweep's best student (or any of its trials) exported to a directory
of its own, and any such directory or raykd checkpoint loaded back as a module.

An export is itself a raykd checkpoint directory (``model.safetensors`` and a ``meta.json`` whose manifest covers
it), so whatever takes a checkpoint takes it: ``raykd evaluate``, ``raykd eval-sr --model``, ``raykd distill
--teacher``, ``--init-from``. Its ``README.md`` model card lies outside the manifest, so a person may edit the
card without making the checkpoint fail verification. The training state (``state.pt``) is left behind: an export
is for using the student, not for resuming its run.

This sits with the models (not with :mod:`raykd.tune`) so that ``raykd.load_student`` stays as light as building
one model; it reads a sweep's files as data (``summary.json``, ``results.parquet``, :mod:`raykd.tune.report`
writes them) and imports nothing of the sweep machinery.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from raykd.console import UserError
from raykd.models.build import build_model, checkpoint_entry
from raykd.models.checkpoint import (META_FILE, MODEL_FILE, CheckpointError, manifest, model_entry, read_meta,
                                     recorded_score, verify)

__all__ = ["SUMMARY_FILE", "RESULTS_FILE", "CARD_FILE", "load_student", "export_student", "model_card", "with_unit"]

SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.parquet"
CARD_FILE = "README.md"


def load_student(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """The model of an exported student directory (``raykd export``) or of any raykd checkpoint directory, with
    its weights, in eval mode on ``device``. The directory is verified against its manifest, and its ``meta.json``
    may name only models that run no code of their own (:func:`raykd.models.checkpoint.model_entry`; a plugin
    model needs ``raykd.registry.trust_plugins``)."""
    return build_model(*checkpoint_entry(path), path, device=device).eval()


def export_student(run_dir: str | os.PathLike, out: str | os.PathLike, trial: str | None = None) -> dict[str, Any]:
    """Write the best student of the sweep in ``run_dir`` (``<storage>/<name>``: its ``summary.json``), or trial
    ``trial`` of its ``results.parquet``, to ``out``: weights, ``meta.json`` and a model card. ``out`` is built
    under a temporary sibling and renamed into place, so it is either complete or absent. Returns the exported
    ``meta.json``."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not an empty directory; give a new directory (or "
                        "remove that one)")
    summary = _read_summary(run_dir)
    entry = _trial_entry(run_dir, summary, trial) if trial is not None else _best_entry(run_dir, summary)
    checkpoint = _checkpoint_of(entry, run_dir)
    meta = verify(checkpoint)
    model_entry(meta, checkpoint / META_FILE)  # a model this process would refuse to build is refused here
    metric = summary["metric"]
    exported = {**{k: v for k, v in meta.items() if k != "files"},
                "teachers": _teachers(meta, summary),
                "export": {"metric": metric, "value": meta.get(metric), "unit": summary.get("unit", ""),
                           "sweep": summary.get("sweep", {}).get("name", run_dir.name),
                           "run_dir": str(run_dir.resolve()),
                           "trial": entry["trial"], "stage": entry["stage"], "seed": entry["seed"],
                           "trial_best": entry.get(metric), "checkpoint": str(checkpoint),
                           "checkpoint_epoch": entry.get("checkpoint_epoch")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(checkpoint / MODEL_FILE, tmp / MODEL_FILE)
        exported["files"] = manifest(tmp)  # before the card: the card stays editable
        (tmp / META_FILE).write_text(json.dumps(exported, indent=2, sort_keys=True, default=str))
        (tmp / CARD_FILE).write_text(model_card(exported, out))
        os.replace(tmp, out)  # onto an empty directory too (POSIX rename)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return exported


def _read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: give a finished sweep's directory, <storage>/<name> (it holds "
                        f"{SUMMARY_FILE} and {RESULTS_FILE})")
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); the sweep's report is damaged: rerun the sweep with "
                        "--resume to write it again") from None
    if not isinstance(summary, dict) or "metric" not in summary:
        raise UserError(f"{path} is not a raykd sweep summary (no 'metric' entry)")
    return summary


def _best_entry(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    best = summary.get("best")
    if not best:
        raise UserError(f"{run_dir / SUMMARY_FILE} names no best student (no trial of the sweep finished); "
                        f"give --trial TRIAL_ID to export one of {run_dir / RESULTS_FILE}")
    return best


def _trial_entry(run_dir: Path, summary: dict[str, Any], trial: str) -> dict[str, Any]:
    """Trial ``trial``'s row of ``results.parquet``, in the shape of the summary's ``best`` entry."""
    import pandas as pd

    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"--trial {trial}: {path} not found: give a finished sweep's directory, <storage>/<name>")
    table = pd.read_parquet(path)
    rows = table[table["trial"] == trial]
    if rows.empty:
        known = ", ".join(map(str, table["trial"]))
        raise UserError(f"--trial {trial}: no such trial in {path}; its trials are {known}")
    row = rows.iloc[0]
    best = row.get(f"best_{summary['metric']}")
    checkpoint = row["checkpoint"]
    return {"trial": trial, "stage": row["stage"], "method": row["method"], "seed": int(row["seed"]),
            summary["metric"]: None if best is None or math.isnan(best) else float(best),
            "trial_dir": row["trial_dir"], "checkpoint": checkpoint if isinstance(checkpoint, str) else None,
            "checkpoint_epoch": None if pd.isna(row["checkpoint_epoch"]) else int(row["checkpoint_epoch"])}


def _checkpoint_of(entry: dict[str, Any], run_dir: Path) -> Path:
    where = f"trial {entry['trial']} of {run_dir}"
    if not entry.get("checkpoint"):
        raise UserError(f"{where} kept no checkpoint (it failed before its first epoch ended); export another "
                        f"trial (--trial, see {run_dir / RESULTS_FILE})")
    checkpoint = Path(entry["checkpoint"])
    if not checkpoint.is_dir():
        raise UserError(f"{where}: its checkpoint {checkpoint} no longer exists; export from where the sweep's "
                        "storage is (the trials' directories as the sweep wrote them), or another trial (--trial)")
    return checkpoint


def _teachers(meta: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The teachers the student learnt from, as its run recorded them: none where it read no teacher outputs
    (``teacher_precision`` is unset then), else the run's own teacher (``raykd distill``, ``TeacherConfig``),
    else the sweep's teachers (served by the teacher service) with their own scores."""
    if "teacher_precision" in meta and meta["teacher_precision"] is None:
        return []
    own = (meta.get("config") or {}).get("teacher") or (summary.get("base") or {}).get("teacher")
    if own:
        return [_own_teacher(own, summary["metric"])]
    return [{"name": name, "checkpoint": None, "score": score}
            for name, score in sorted((summary.get("teacher_scores") or {}).items())]


def _own_teacher(teacher: dict[str, Any], metric: str) -> dict[str, Any]:
    """A ``TeacherConfig``'s teacher: its model and own score from its checkpoint where that is still there, else
    the model it was said to be (or, for a checkpoint, the directory's name)."""
    path = Path(teacher["checkpoint"])
    try:
        model = read_meta(path)["model"]
    except CheckpointError:  # moved since, or a released weights file: what the config says is all there is
        model = (teacher.get("model") or {}).get("name") or path.name
    return {"name": model, "checkpoint": str(path), "score": recorded_score(path, metric)}


def with_unit(value: float | None, unit: str) -> str:
    """``value`` as a paper prints it: ``93.42%``, ``32.19 dB``, ``0.8954``."""
    if value is None:
        return "not recorded"
    return f"{value:.2f}{'' if unit in ('', '%') else ' '}{unit}"


def model_card(meta: dict[str, Any], out: Path) -> str:
    """The ``README.md`` of an export: what the student is, how well it does, what it learnt from and how to
    load it, from the exported ``meta.json``."""
    export, config = meta["export"], meta.get("config") or {}
    metric, unit = export["metric"], export["unit"]
    method = config.get("method") or {}
    data = config.get("data") or {}
    params = ", ".join(f"{k}={v}" for k, v in sorted((meta.get("method_params") or {}).items()))
    epochs = (config.get("optim") or {}).get("epochs")
    score = f"{with_unit(export['value'], unit)} at epoch {meta.get('epoch')} of {epochs}"
    if export["trial_best"] is not None and export["value"] is not None and export["trial_best"] != export["value"]:
        score += f" (the trial's best epoch: {with_unit(export['trial_best'], unit)}; its weights were not kept)"
    teachers = "; ".join(
        f"{t['name']}" + (f" (`{t['checkpoint']}`)" if t["checkpoint"] else "") +
        (f", its own {metric} {with_unit(t['score'], unit)}" if t["score"] is not None else "")
        for t in meta["teachers"]) or "none: trained without a teacher"
    root = f", root `{data['root']}`" if data.get("root") else ""
    kwargs = json.dumps(meta.get("model_kwargs") or {}, sort_keys=True)
    scale = (meta.get("model_kwargs") or {}).get("scale")
    evaluate = (f"raykd evaluate {out}" if data.get("task", "cls") == "cls" else
                f"raykd eval-sr --model {out} --set BENCHMARK_DIR --scale {scale}")
    lines = [
        f"# {meta['model']} student: {method.get('name', 'none')}, {metric} {with_unit(export['value'], unit)}", "",
        "| | |", "|---|---|",
        f"| model | `{meta['model']}` with `{kwargs}` |",
        f"| method | {method.get('name', 'none')}: {params or 'no hyperparameters'} |",
        f"| {metric} | {score}, on the val split of {data.get('dataset')} |",
        f"| seed | {export['seed']} ({export['stage']} trial {export['trial']}) |",
        f"| teacher | {teachers} |",
        f"| data | {data.get('dataset')} ({data.get('task', 'cls')}{root}, image size {data.get('image_size')}) |",
        f"| sweep | {export['sweep']} (`{export['run_dir']}`) |",
        f"| exported from | `{export['checkpoint']}` |", "",
        "Load it (a `torch.nn.Module` in eval mode):", "",
        "```python", "import raykd", "", f"model = raykd.load_student({str(out)!r})", "```", "",
        f"Measure it again: `{evaluate}`. `meta.json` holds the full training config and the metrics of its epoch.", ""]
    return "\n".join(lines)
