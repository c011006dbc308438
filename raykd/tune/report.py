"""What a sweep leaves behind for people: a table, a summary and plots.

``results.parquet``: one row per trial (method, every hyperparameter, best and last metric, epochs, wall time,
teacher samples computed, cache hits). ``summary.md``: the best trial of each method as a table to paste into a
paper. ``summary.json``: trials, the best trial and the sweep-wide teacher counters. PNGs: the metric of every
trial coloured by method, the best-so-far curve, and Optuna's parameter importances per method.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raykd.methods import method_defaults
from raykd.tune.spaces import SPACES, trial_method

FIXED = ("trial", "method", "status", "epochs", "wall_s", "teacher_samples_computed", "cache_hits", "started")


def trials_table(results, metric: str, task: str = "cls") -> pd.DataFrame:
    """One row per trial of a Tune ``ResultGrid``, in the order the trials started."""
    rows = []
    for result in results:
        config = result.config or {}
        if "method" not in config:
            continue
        method, searched = trial_method(config)
        history = result.metrics_dataframe
        last = result.metrics or {}
        ok = result.error is None and metric in last
        row: dict[str, Any] = {
            "trial": last.get("trial_id") or Path(result.path).name,
            "method": method,
            "status": "ok" if ok else "error",
            **{**method_defaults(method, task), **searched},
            f"best_{metric}": float(history[metric].max()) if ok and history is not None else math.nan,
            f"last_{metric}": float(last[metric]) if ok else math.nan,
            "epochs": int(last.get("epoch", 0)),
            "wall_s": float(last.get("wall_s", math.nan)),
            "teacher_samples_computed": int(last.get("teacher_samples_computed", 0)),
            "cache_hits": int(last.get("cache_hits", 0)),
            "started": float(history["timestamp"].min()) if history is not None and "timestamp" in history else 0.0,
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values("started", kind="stable").reset_index(drop=True)
    params = [c for c in table.columns if c not in FIXED and not c.endswith(metric)]
    return table[["trial", "method", *params, f"best_{metric}", f"last_{metric}", *FIXED[2:]]]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_per_method(table: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    ok = table[table["status"] == "ok"]
    key = f"best_{metric}"
    pick = ok.groupby("method")[key].idxmax() if mode == "max" else ok.groupby("method")[key].idxmin()
    best = ok.loc[pick.values]
    return best.sort_values(key, ascending=mode != "max")


def summary_markdown(table: pd.DataFrame, metric: str, mode: str, summary: dict[str, Any], task: str = "cls") -> str:
    best = best_per_method(table, metric, mode)
    lines = [f"# Sweep summary: best trial per method ({metric}, {mode})", "",
             f"| method | {metric} | hyperparameters | epochs | trial |", "|---|---|---|---|---|"]
    for _, row in best.iterrows():
        params = ", ".join(f"{p}={_format(row[p])}" for p in method_defaults(row["method"], task))
        lines.append(f"| {row['method']} | {row[f'best_{metric}']:.2f} | {params or '-'} | {row['epochs']} | "
                     f"{row['trial']} |")
    lines += ["", f"{summary['trials']} trials ({summary['failed']} failed) in {summary['wall_s']:.0f} s; "
              f"teacher samples computed: {summary['teacher_samples_computed']}, cache hits: {summary['cache_hits']}."]
    return "\n".join(lines) + "\n"


def plot_trials(table: pd.DataFrame, metric: str, mode: str, directory: Path, task: str = "cls") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    key = f"best_{metric}"
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, group in ok.groupby("method"):
        ax.scatter(group.index + 1, group[key], label=method, s=36)
    ax.set(xlabel="trial (start order)", ylabel=metric, title=f"{metric} of every trial")
    ax.legend(title="method")
    ax.grid(alpha=0.3)
    paths.append(directory / "trials.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    values = table[key].to_numpy(dtype=float)
    running = np.fmax.accumulate(np.where(np.isnan(values), -np.inf, values)) if mode == "max" else \
        np.fmin.accumulate(np.where(np.isnan(values), np.inf, values))
    ax.step(np.arange(1, len(values) + 1), running, where="post")
    ax.set(xlabel="trials (start order)", ylabel=f"best {metric} so far", title="best so far")
    ax.grid(alpha=0.3)
    paths.append(directory / "best_so_far.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    importances = parameter_importances(table, metric, mode, task)
    if importances:
        fig, axes = plt.subplots(1, len(importances), figsize=(3.5 * len(importances), 3.2), squeeze=False)
        for ax, (method, values) in zip(axes[0], importances.items()):
            names = list(values)[::-1]
            ax.barh(names, [values[n] for n in names])
            ax.set(title=method, xlabel="importance")
        fig.suptitle("hyperparameter importance (Optuna fANOVA)")
        fig.tight_layout()
        paths.append(directory / "importance.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def parameter_importances(table: pd.DataFrame, metric: str, mode: str,
                          task: str = "cls") -> dict[str, dict[str, float]]:
    """Optuna's parameter importances within each method that has enough finished trials to compare."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for method, group in table[table["status"] == "ok"].groupby("method"):
        knobs = SPACES[task].get(method, {})
        if len(group) < 3 or not knobs:
            continue
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for _, row in group.iterrows():
            params, dists = {}, {}
            for name, knob in knobs.items():
                params[name] = row[name].item() if hasattr(row[name], "item") else row[name]
                dists[name] = CategoricalDistribution(knob.choices) if knob.kind == "choice" else \
                    FloatDistribution(knob.low, knob.high, log=knob.log)
                if knob.kind != "choice":
                    params[name] = float(params[name])
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                      value=float(row[f"best_{metric}"])))
        try:
            out[method] = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # every trial identical in some knob: nothing to attribute
            continue
    return out


def write_report(results, directory: Path, *, task: str, sweep: dict[str, Any], base: dict[str, Any],
                 teacher_stats: dict[str, dict[str, int]], wall_s: float) -> dict[str, Any]:
    """Write results.parquet, summary.md, summary.json and the plots into ``directory``; return the summary."""
    metric, mode = sweep["metric"], sweep["mode"]
    directory.mkdir(parents=True, exist_ok=True)
    table = trials_table(results, metric, task)
    table.to_parquet(directory / "results.parquet", index=False)
    ok = table[table["status"] == "ok"] if not table.empty else table
    best_row = None
    if not ok.empty:
        best_row = ok.loc[ok[f"best_{metric}"].idxmax() if mode == "max" else ok[f"best_{metric}"].idxmin()]
    trial_computed = int(table["teacher_samples_computed"].sum()) if not table.empty else 0
    summary = {
        "trials": int(len(table)),
        "failed": int((table["status"] != "ok").sum()) if not table.empty else 0,
        "metric": metric,
        "mode": mode,
        "best": None if best_row is None else {
            "trial": best_row["trial"], "method": best_row["method"], metric: float(best_row[f"best_{metric}"]),
            "params": {p: _jsonable(best_row[p]) for p in method_defaults(best_row["method"], task)}},
        # sweep-wide: the cache build (teacher service) plus any live-mode forwards inside trials
        "teacher_samples_computed": sum(s["samples_computed"] for s in teacher_stats.values()) + trial_computed,
        "cache_hits": int(table["cache_hits"].sum()) if not table.empty else 0,
        "teachers": teacher_stats,
        "wall_s": wall_s,
        "sweep": sweep,
        "base": base,
    }
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
    if not ok.empty:
        (directory / "summary.md").write_text(summary_markdown(table, metric, mode, summary, task))
        summary["plots"] = [str(p) for p in plot_trials(table, metric, mode, directory, task)]
    return summary


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ------------------------------------------------------------------ SR: every trial's student on test sets


def evaluate_weights(weights: bytes, meta: dict[str, Any], tests: dict[str, dict[str, Any]]) -> dict[str, float]:
    """PSNR/SSIM of a checkpoint's model (its safetensors bytes and meta.json) on each test set, given as the
    training config of an SR task whose val split is that set (run as a Ray task, on a GPU when given one)."""
    import safetensors.torch

    from raykd.models import create_model
    from raykd.train.config import TrainConfig
    from raykd.train.loop import resolve_device
    from raykd.train.sr_task import SRTask

    device = resolve_device("auto")
    model = create_model(meta["model"], **meta["model_kwargs"])
    model.load_state_dict(safetensors.torch.load(weights), strict=True)
    model.to(device).eval()
    out = {}
    for name, cfg in tests.items():
        metrics = SRTask(TrainConfig.from_dict(cfg)).evaluate(model, device)
        out[f"{name}_psnr"], out[f"{name}_ssim"] = metrics["val_psnr"], metrics["val_ssim"]
    return out


def add_test_sets(directory: Path, base, tests: dict[str, Path], gpus: float = 0) -> pd.DataFrame:
    """Every trial's last validation SSIM and, per test set, the PSNR/SSIM of its final student (BT.601 Y,
    ``scale``-pixel border; one Ray task per trial), merged into ``results.parquet`` by trial and appended to
    ``summary.md`` as a table."""
    import ray
    from ray.tune import ExperimentAnalysis

    from raykd.train.checkpoint import MODEL_FILE, read_meta

    # the test set is also the (unused) training split: the task then needs nothing but the test folder
    configs = {name: {"task": "sr", "data": "paired", "data_root": str(root), "val_root": str(root),
                      "scale": base.scale, "patch_size": 1, "tile": base.tile, "tile_overlap": base.tile_overlap,
                      "check_data": False} for name, root in tests.items()}
    evaluate = ray.remote(num_cpus=1, num_gpus=gpus)(evaluate_weights)
    analysis = ExperimentAnalysis(str(directory))
    rows, pending = [], []
    for trial in analysis.trials:
        last = trial.last_result or {}
        rows.append({"trial": last.get("trial_id", trial.trial_id),
                     "last_val_ssim": float(last.get("val_ssim", math.nan))})
        checkpoint = analysis.get_last_checkpoint(trial) if configs else None
        if checkpoint is not None:
            with checkpoint.as_directory() as path:
                files = read_meta(path), (Path(path) / MODEL_FILE).read_bytes()
            pending.append((rows[-1], evaluate.remote(files[1], files[0], configs)))
    for row, ref in pending:
        row.update(ray.get(ref))
    table = pd.read_parquet(directory / "results.parquet")
    added = pd.DataFrame(rows)
    table = table.drop(columns=[c for c in added.columns if c != "trial" and c in table.columns])
    table = table.merge(added, on="trial", how="left")
    table.to_parquet(directory / "results.parquet", index=False)

    columns = ["last_val_psnr", "last_val_ssim"] + [f"{n}_{m}" for n in tests for m in ("psnr", "ssim")]
    columns = [c for c in columns if c in table.columns]
    lines = ["", f"## Every trial: final student (val: {base.val_root or base.data}; "
             f"{', '.join(f'{n}: {r}' for n, r in tests.items()) or 'no test sets'})", "",
             "| trial | method | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for _, r in table.iterrows():
        lines.append(f"| {r['trial']} | {r['method']} | " + " | ".join(f"{r[c]:.4f}" for c in columns) + " |")
    summary = directory / "summary.md"
    summary.write_text((summary.read_text() if summary.exists() else "") + "\n".join(lines) + "\n")
    return table
