"""What a sweep leaves behind for people: a table, a summary and plots, in ``<storage>/<name>/``.

* ``results.parquet``: one row per trial (method, every hyperparameter, seed, best and last metric, epochs, wall
  time, start-up time, node, teacher rows computed, cache hits, the precision of the teacher outputs it learnt
  from, status; ``stage`` says "search" or "seeds");
* ``summary.md``: per method, the best searched trial and, from the seeds stage, the mean +- std over seeds of the
  best configuration (the table to paste into a paper);
* ``summary.json``: the same as data, plus the teacher service's counters;
* ``learning_curves.png`` (the metric against epoch for every trial, coloured by method), ``trials.png``,
  ``best_so_far.png`` and ``importance.png`` (Optuna's fANOVA importances per method).

Storage may be a URI (``s3://``...): the files are written locally first, then copied there with pyarrow.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from raykd.methods import method_class
from raykd.tune.spaces import trial_method

__all__ = ["trials_table", "summary_markdown", "write_report", "parameter_importances"]

FIXED = ("trial", "stage", "method", "seed", "status", "epochs", "wall_s", "startup_s", "node",
         "teacher_samples_computed", "cache_hits", "teacher_precision", "started")


def trials_table(results: Any, metric: str, task: str, stage: str = "search",
                 fixed: dict[str, dict[str, Any]] | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per trial of a Tune ``ResultGrid`` (in start order), and each trial's metric per epoch; ``fixed``:
    ``{method: params}`` the sweep fixed for that method's trials."""
    rows, curves = [], {}
    for result in results:
        config = result.config or {}
        config = config.get("run", config)  # the seeds stage nests the trial's config
        if "method" not in config:
            continue
        method, searched = trial_method(config)
        history = result.metrics_dataframe
        last = result.metrics or {}
        ok = result.error is None and metric in last
        trial = last.get("trial_id") or Path(result.path).name
        row: dict[str, Any] = {
            "trial": trial, "stage": stage, "method": method, "seed": int(last.get("seed", config.get("seed", 0))),
            "status": "ok" if ok else "error",
            **{**method_class(method, task).defaults(), **searched, **(fixed or {}).get(method, {})},
            f"best_{metric}": float(history[metric].max()) if ok and history is not None else math.nan,
            f"last_{metric}": float(last[metric]) if ok else math.nan,
            "epochs": int(last.get("epoch", 0)), "wall_s": float(last.get("wall_s", math.nan)),
            "startup_s": float(last.get("startup_s", math.nan)), "node": str(last.get("node", "")),
            "teacher_samples_computed": int(last.get("teacher_samples_computed", 0)),
            "cache_hits": int(last.get("cache_hits", 0)), "teacher_precision": last.get("teacher_precision"),
            "started": float(history["timestamp"].min()) if history is not None and "timestamp" in history else 0.0,
        }
        rows.append(row)
        if history is not None and metric in history and "epoch" in history:
            curves[trial] = (method, history["epoch"].to_numpy(), history[metric].to_numpy(dtype=float))
    table = pd.DataFrame(rows)
    if table.empty:
        return table, curves
    table = table.sort_values("started", kind="stable").reset_index(drop=True)
    params = [c for c in table.columns if c not in FIXED and not c.endswith(metric)]
    return table[["trial", "stage", "method", *params, f"best_{metric}", f"last_{metric}", *FIXED[3:]]], curves


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _best_rows(table: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    ok = table[(table["status"] == "ok") & (table["stage"] == "search")]
    key = f"best_{metric}"
    pick = ok.groupby("method")[key].idxmax() if mode == "max" else ok.groupby("method")[key].idxmin()
    return ok.loc[pick.values].sort_values(key, ascending=mode != "max")


def seed_statistics(table: pd.DataFrame, metric: str) -> dict[str, dict[str, float]]:
    """Per method, mean, std (sample, ddof 1) and count of the seeds stage's best metric."""
    seeds = table[(table["stage"] == "seeds") & (table["status"] == "ok")]
    out = {}
    for method, group in seeds.groupby("method"):
        values = group[f"best_{metric}"].to_numpy(dtype=float)
        out[method] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                       "n": int(len(values))}
    return out


def summary_markdown(table: pd.DataFrame, metric: str, mode: str, summary: dict[str, Any], task: str) -> str:
    seeds = summary.get("seeds") or {}
    lines = [f"# Sweep summary ({metric}, {mode})", ""]
    if summary.get("incomplete"):
        lines += [f"**Incomplete: {summary['incomplete']}.** The same command with `--resume` continues it.", ""]
    lines += [f"| method | best trial {metric} | mean +- std over seeds | hyperparameters | epochs | trial |",
              "|---|---|---|---|---|---|"]
    for _, row in _best_rows(table, metric, mode).iterrows():
        params = ", ".join(f"{p}={_format(row[p])}" for p in method_class(row["method"], task).hparams)
        stats = seeds.get(row["method"])
        spread = f"{stats['mean']:.2f} +- {stats['std']:.2f} (n={stats['n']})" if stats else "-"
        lines.append(f"| {row['method']} | {row[f'best_{metric}']:.2f} | {spread} | {params or '-'} | "
                     f"{row['epochs']} | {row['trial']} |")
    lines += ["", f"{summary['trials']} trials ({summary['failed']} failed) in {summary['wall_s']:.0f} s; teacher "
              f"samples computed: {summary['teacher_samples_computed']}, cache hits: {summary['cache_hits']}."]
    if seeds:
        count = max(stats["n"] for stats in seeds.values())
        lines.append(f"Seeds stage: the best configuration of each method retrained with {count} seeds (views, "
                     "initialisation and order all follow the seed).")
    return "\n".join(lines) + "\n"


def parameter_importances(table: pd.DataFrame, metric: str, mode: str, task: str) -> dict[str, dict[str, float]]:
    """Optuna's parameter importances within each method that has enough finished trials to compare."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    searched = table[(table["status"] == "ok") & (table["stage"] == "search")]
    for method, group in searched.groupby("method"):
        space = method_class(method, task).search_space()
        if len(group) < 3 or not space:
            continue
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for _, row in group.iterrows():
            params, dists = {}, {}
            for name, param in space.items():
                value = row[name].item() if hasattr(row[name], "item") else row[name]
                if param.categorical is not None:
                    dists[name] = CategoricalDistribution(param.categorical)
                    params[name] = value
                else:
                    dists[name] = FloatDistribution(float(param.search[0]), float(param.search[1]), log=param.log)
                    params[name] = float(value)
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                      value=float(row[f"best_{metric}"])))
        try:
            out[method] = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # every trial identical in some knob: nothing to attribute
            continue
    return out


def plot_trials(table: pd.DataFrame, curves: dict, metric: str, mode: str, directory: Path, task: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    methods = sorted(table["method"].unique())
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}

    fig, ax = plt.subplots(figsize=(7, 4))
    shown = set()
    for trial, (method, epochs, values) in curves.items():
        ax.plot(epochs, values, color=colours.get(method), alpha=0.7, marker="o", markersize=3,
                label=method if method not in shown else None)
        shown.add(method)
    ax.set(xlabel="epoch", ylabel=metric, title=f"learning curves: {metric} of every trial")
    ax.legend(title="method")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, directory / "learning_curves.png"))

    ok = table[table["status"] == "ok"]
    key = f"best_{metric}"
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, group in ok.groupby("method"):
        ax.scatter(group.index + 1, group[key], label=method, s=36, color=colours.get(method))
    ax.set(xlabel="trial (start order)", ylabel=metric, title=f"{metric} of every trial")
    ax.legend(title="method")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, directory / "trials.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    values = table[table["stage"] == "search"][key].to_numpy(dtype=float)
    running = np.fmax.accumulate(np.where(np.isnan(values), -np.inf, values)) if mode == "max" else \
        np.fmin.accumulate(np.where(np.isnan(values), np.inf, values))
    ax.step(np.arange(1, len(values) + 1), running, where="post")
    ax.set(xlabel="trials (start order)", ylabel=f"best {metric} so far", title="best so far")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, directory / "best_so_far.png"))

    importances = parameter_importances(table, metric, mode, task)
    if importances:
        fig, axes = plt.subplots(1, len(importances), figsize=(3.5 * len(importances), 3.2), squeeze=False)
        for ax, (method, values) in zip(axes[0], importances.items()):
            names = list(values)[::-1]
            ax.barh(names, [values[n] for n in names])
            ax.set(title=method, xlabel="importance")
        fig.suptitle("hyperparameter importance (Optuna fANOVA)")
        paths.append(_save(fig, directory / "importance.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_report(results: Any, seed_results: Any, directory: str, *, task: str, sweep: dict[str, Any],
                 base: dict[str, Any], teacher_stats: dict[str, dict[str, int]], wall_s: float,
                 incomplete: str | None = None) -> dict[str, Any]:
    """Write the results, the summaries and the plots to ``directory`` (a path or URI); return the summary.
    ``incomplete`` says what did not finish (a stage stopped by Ctrl-C, one whose every trial failed): the summary
    leads with it, so partial results are never read as a finished sweep."""
    metric, mode = sweep["metric"], sweep["mode"]
    fixed = {base["method"]["name"]: dict(base["method"]["params"])} if base.get("method") else {}
    table, curves = trials_table(results, metric, task, fixed=fixed)
    if seed_results is not None:
        seeds_table, seed_curves = trials_table(seed_results, metric, task, stage="seeds", fixed=fixed)
        table = pd.concat([table, seeds_table], ignore_index=True)
        curves.update(seed_curves)
    ok = table[(table["status"] == "ok") & (table["stage"] == "search")] if not table.empty else table
    best_row = None
    if not ok.empty:
        best_row = ok.loc[ok[f"best_{metric}"].idxmax() if mode == "max" else ok[f"best_{metric}"].idxmin()]
    trial_computed = int(table["teacher_samples_computed"].sum()) if not table.empty else 0
    summary = {
        "incomplete": incomplete,
        "trials": int(len(table)),
        "failed": int((table["status"] != "ok").sum()) if not table.empty else 0,
        "metric": metric, "mode": mode,
        "best": None if best_row is None else {
            "trial": best_row["trial"], "method": best_row["method"], metric: float(best_row[f"best_{metric}"]),
            "params": {p: _jsonable(best_row[p]) for p in method_class(best_row["method"], task).hparams}},
        "seeds": seed_statistics(table, metric) if not table.empty else {},
        # sweep-wide: the teacher service's tables plus any live or in-process forwards inside trials
        "teacher_samples_computed": sum(s["samples_computed"] for s in teacher_stats.values()) + trial_computed,
        "cache_hits": int(table["cache_hits"].sum()) if not table.empty else 0,
        "teachers": teacher_stats, "wall_s": wall_s, "sweep": sweep, "base": base,
    }
    with tempfile.TemporaryDirectory(prefix="raykd-report-") as tmp:
        local = Path(tmp)
        table.to_parquet(local / "results.parquet", index=False)
        (local / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
        if not ok.empty:
            (local / "summary.md").write_text(summary_markdown(table, metric, mode, summary, task))
            summary["plots"] = [p.name for p in plot_trials(table, curves, metric, mode, local, task)]
        _publish(local, directory)
    return summary


def _publish(local: Path, directory: str) -> None:
    """Copy the report files to ``directory`` (a local path or a pyarrow URI)."""
    if "://" in directory:
        fs, path = pafs.FileSystem.from_uri(directory)
    else:
        fs, path = pafs.LocalFileSystem(), str(Path(directory))
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
