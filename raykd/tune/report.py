"""What a sweep leaves behind for people: a table, a summary and plots, in ``<storage>/<name>/``.

* ``results.parquet``: one row per trial (method, every hyperparameter, seed, best and last metric, epochs, wall
  time, start-up time, node, its teacher, the teacher rows it computed itself and its share of the service's
  (:func:`service_rows_share`), cache hits, the precision of the teacher outputs it learnt
  from, status, the trial's directory and its best checkpoint; ``stage`` says "search" or "seeds");
* ``summary.md``: the methods ranked (by the seeds stage's mean +- std where there is one, never trials of
  different lengths against each other), the winner marked, the teachers' own score, and where the best student's
  checkpoint is (the table to paste into a paper);
* ``summary.json``: the same as data (``winner``, ``ranking``, ``best`` with its checkpoint), plus the teacher
  service's counters;
* ``learning_curves.png`` (the metric against epoch for every trial, search and seeds stages apart),
  ``trials.png`` (each search trial's best; hollow where stopped early), ``best_so_far.png``, ``seeds.png`` (per
  method, mean +- std over seeds with each run) and, where Optuna can attribute, ``importance.png``.

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

from raykd.config import is_uri
from raykd.console import UserError, one_line
from raykd.methods import method_class
from raykd.tune.spaces import trial_config, trial_method

__all__ = ["trials_table", "summary_markdown", "write_report", "parameter_importances", "rank_methods",
           "best_student", "metric_unit", "compare_runs", "service_rows_share"]

FIXED = ("trial", "stage", "method", "seed", "status", "epochs", "wall_s", "startup_s", "node", "teacher",
         "teacher_samples_computed", "teacher_rows_share", "cache_hits", "teacher_precision", "started", "trial_dir", "checkpoint",
         "checkpoint_epoch")


def _started(history: pd.DataFrame | None) -> float:
    """When the trial began (Unix seconds): each report's time less the trial's wall time at it (Tune's own
    ``timestamp`` is the first report's, an epoch later); 0 where nothing was reported."""
    if history is None or "timestamp" not in history:
        return 0.0
    if "wall_s" not in history:
        return float(history["timestamp"].min())
    return float((history["timestamp"] - history["wall_s"]).min())


def trials_table(results: Any, metric: str, task: str, stage: str = "search",
                 fixed: dict[str, dict[str, Any]] | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per trial of a Tune ``ResultGrid`` (in start order), and each trial's metric per epoch; ``fixed``:
    ``{method: params}`` the sweep fixed for that method's trials."""
    rows, curves = [], {}
    for result in results:
        config = trial_config(result.config)
        if "method" not in config:
            continue
        method, searched = trial_method(config)
        history = result.metrics_dataframe
        last = result.metrics or {}
        ok = result.error is None and metric in last
        trial = last.get("trial_id") or Path(result.path).name
        checkpoint, checkpoint_epoch = _best_checkpoint(result, metric) if ok else (None, None)
        row: dict[str, Any] = {
            "trial": trial, "stage": stage, "method": method, "seed": int(last.get("seed", config.get("seed", 0))),
            "status": "ok" if ok else "error",
            **{**method_class(method, task).defaults(), **searched, **(fixed or {}).get(method, {})},
            f"best_{metric}": float(history[metric].max()) if ok and history is not None else math.nan,
            f"last_{metric}": float(last[metric]) if ok else math.nan,
            "epochs": int(last.get("epoch", 0)), "wall_s": float(last.get("wall_s", math.nan)),
            "startup_s": float(last.get("startup_s", math.nan)), "node": str(last.get("node", "")),
            "teacher": str(last.get("teacher", "")),
            "teacher_samples_computed": int(last.get("teacher_samples_computed", 0)), "teacher_rows_share": 0,
            "cache_hits": int(last.get("cache_hits", 0)), "teacher_precision": last.get("teacher_precision"),
            "started": _started(history),
            "trial_dir": str(result.path), "checkpoint": checkpoint, "checkpoint_epoch": checkpoint_epoch,
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


def _best_checkpoint(result: Any, metric: str) -> tuple[str | None, int | None]:
    """The path and epoch of the trial's kept checkpoint with the best ``metric`` (Tune keeps one per epoch), or
    its last one."""
    kept = [(checkpoint, metrics) for checkpoint, metrics in (result.best_checkpoints or []) if metric in metrics]
    if kept:
        checkpoint, metrics = max(kept, key=lambda pair: (pair[1][metric], pair[1].get("epoch", 0)))
        return checkpoint.path, int(metrics.get("epoch", 0))
    last = result.checkpoint
    return (last.path, int((result.metrics or {}).get("epoch", 0))) if last is not None else (None, None)


def service_rows_share(table: pd.DataFrame, teacher_stats: dict[str, dict[str, int]]) -> pd.Series:
    """Each trial's share of the rows the teacher service computed: a teacher's ``samples_computed`` split among
    the trials that read its tables in proportion to the rows each read (``cache_hits``), in whole rows that add up
    to the service's count (largest remainders). Streams are shared, so no row belongs to one trial; per teacher
    rather than per seed stream (the service counts per teacher)."""
    share = pd.Series(0, index=table.index, dtype="int64")
    for teacher, stats in teacher_stats.items():
        hits = table.loc[table["teacher"] == teacher, "cache_hits"].astype("int64")
        computed = int(stats.get("samples_computed", 0))
        if not computed or hits.sum() <= 0:
            continue
        exact = hits * computed / hits.sum()
        whole = exact.astype("int64")
        extra = (exact - whole).sort_values(ascending=False, kind="stable").index[:computed - int(whole.sum())]
        whole[extra] += 1
        share[whole.index] = whole
    return share


def metric_unit(metric: str) -> str:
    """The unit a paper prints ``metric`` in: accuracies in %, PSNR in dB, SSIM and losses without one."""
    if metric.endswith(("top1", "top5", "acc")):
        return "%"
    return " dB" if metric.endswith("psnr") else ""


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


def rank_methods(table: pd.DataFrame, metric: str, mode: str) -> list[dict[str, Any]]:
    """Every method with a finished trial, best first. Trials of different lengths are not compared: a method is
    ranked by its seeds-stage mean where it has one, else by its best search trial among those that ran the longest
    any search trial ran, else (every trial of it stopped early) by its best shorter trial, after the others."""
    key = f"best_{metric}"
    ok = table[table["status"] == "ok"]
    search = ok[ok["stage"] == "search"]
    full = int(search["epochs"].max()) if not search.empty else 0
    seeds = seed_statistics(table, metric)
    entries = []
    for method in sorted(set(ok["method"])):
        mine = search[search["method"] == method]
        at_full = mine[mine["epochs"] == full]
        pool = at_full if not at_full.empty else mine
        searched = float(pool[key].max() if mode == "max" else pool[key].min()) if not pool.empty else math.nan
        if method in seeds:
            count = seeds[method]["n"]
            tier, value, basis = 0, seeds[method]["mean"], f"mean of {count} seed{'s' if count != 1 else ''}"
        elif not at_full.empty:
            tier, value, basis = 1, searched, f"best search trial of {_epochs(full)}"
        else:
            tier, value, basis = 2, searched, f"best search trial, stopped at {_epochs(int(mine['epochs'].max()))}"
        entries.append({"method": method, "value": value, "basis": basis, "tier": tier, "seeds": seeds.get(method),
                        "search_best": searched, "search_epochs": int(pool["epochs"].max()) if not pool.empty else 0})
    entries.sort(key=lambda e: (e["tier"], -e["value"] if mode == "max" else e["value"]))
    for rank, entry in enumerate(entries, 1):
        entry["rank"] = rank
    return entries


def best_student(table: pd.DataFrame, metric: str, mode: str, method: str, task: str) -> dict[str, Any]:
    """The winner's best trial: its best seeds-stage run if it has one, else its best longest search trial."""
    key = f"best_{metric}"
    mine = table[(table["status"] == "ok") & (table["method"] == method)]
    pool = mine[mine["stage"] == "seeds"]
    if pool.empty:
        search = mine[mine["stage"] == "search"]
        pool = search[search["epochs"] == search["epochs"].max()]
    row = pool.loc[pool[key].idxmax() if mode == "max" else pool[key].idxmin()]
    return {"trial": row["trial"], "stage": row["stage"], "method": method, "seed": int(row["seed"]),
            metric: float(row[key]), "params": {p: _jsonable(row[p]) for p in method_class(method, task).hparams},
            "trial_dir": row["trial_dir"], "checkpoint": row["checkpoint"],
            "checkpoint_epoch": _jsonable(row["checkpoint_epoch"])}


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
    """The table to paste into a paper: methods ranked (:func:`rank_methods`), the winner marked, the teachers'
    own score beside them."""
    unit = metric_unit(metric)
    better = "higher" if mode == "max" else "lower"
    lines = [f"# Sweep summary: {metric}{f' ({unit.strip()})' if unit else ''}, {better} is better", ""]
    if summary.get("incomplete"):
        lines += [f"**Incomplete: {summary['incomplete']}.** The same command with `--resume` continues it.", ""]
    lines += [f"| rank | method | {metric} | ranked by | best search trial | hyperparameters | trial |",
              "|---|---|---|---|---|---|---|"]
    best_rows = {row["method"]: row for _, row in _best_rows(table, metric, mode).iterrows()}
    for entry in summary["ranking"]:
        method, stats = entry["method"], entry["seeds"]
        value = f"{stats['mean']:.2f} +- {stats['std']:.2f}" if stats else f"{entry['value']:.2f}"
        row = best_rows.get(method)
        params = "-" if row is None else ", ".join(f"{p}={_format(row[p])}" for p in
                                                   method_class(method, task).hparams) or "-"
        rank = "**1** (winner)" if entry["rank"] == 1 else entry["rank"]
        lines.append(f"| {rank} | {method} | {value} | {entry['basis']} | {entry['search_best']:.2f} "
                     f"({_epochs(entry['search_epochs'])}) | {params} | {'-' if row is None else row['trial']} |")
    for teacher, score in (summary.get("teacher_scores") or {}).items():
        lines.append(f"| - | teacher {teacher} | {'not measured' if score is None else f'{score:.2f}'} | its own "
                     "checkpoint | - | - | - |")
    best = summary.get("best")
    if best is not None:
        lines += ["", f"Best student: {best['method']} ({best['stage']} trial {best['trial']}, {metric} "
                      f"{best[metric]:.2f}{unit}), checkpoint `{best['checkpoint']}` "
                      f"(epoch {best['checkpoint_epoch']})."]
    lines += ["", f"{summary['trials']} trials ({summary['failed']} failed) in {summary['wall_s']:.0f} s; teacher "
              f"samples computed: {summary['teacher_samples_computed']}, cache hits: {summary['cache_hits']}."]
    seeds = summary.get("seeds") or {}
    if seeds:
        count = max(stats["n"] for stats in seeds.values())
        lines.append(f"Seeds stage: the best configuration of each method retrained with {count} seeds (views, "
                     "initialisation and order all follow the seed); mean +- sample std.")
    if summary.get("plots"):
        lines += ["", "Figures: " + "; ".join(f"`{name}` ({FIGURES[name]})" for name in summary["plots"]) + "."]
        if "importance.png" not in summary["plots"]:
            lines.append("No `importance.png`: Optuna attributes a method's result to its hyperparameters only from 3 "
                         "or more finished search trials that differ in them.")
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
    """The report's figures, each a PNG in ``directory`` (returned in the order made): ``learning_curves.png``,
    ``trials.png``, ``best_so_far.png``, ``seeds.png`` (when there is a seeds stage) and ``importance.png`` (when
    Optuna can attribute; :func:`parameter_importances`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(sorted(table["method"].unique()))}
    label = f"{metric} ({metric_unit(metric).strip()})" if metric_unit(metric) else metric
    paths = [_learning_curves(table, curves, label, colours, directory), _trials(table, metric, label, colours,
                                                                                  directory),
             _best_so_far(table, metric, mode, label, colours, directory)]
    if (table["stage"] == "seeds").any():
        paths.append(_seeds(table, metric, mode, label, colours, directory))
    importances = parameter_importances(table, metric, mode, task)
    if importances:
        fig, axes = plt.subplots(1, len(importances), figsize=(3.5 * len(importances), 3.2), squeeze=False)
        for ax, (method, values) in zip(axes[0], importances.items()):
            names = list(values)[::-1]
            ax.barh(names, [values[n] for n in names])
            ax.set(title=method, xlabel="importance (share of the variance)")
        fig.suptitle(f"hyperparameter importance for {metric} (Optuna fANOVA, search trials)")
        paths.append(_save(fig, directory / "importance.png"))
    return paths


FIGURES = {"learning_curves.png": "the metric per epoch of every trial, search and seeds stages apart",
           "trials.png": "each search trial's best, hollow where stopped early",
           "best_so_far.png": "the search's best so far",
           "seeds.png": "per method, mean +- std over seeds and each run",
           "importance.png": "how much each hyperparameter explains, per method"}


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _learning_curves(table: pd.DataFrame, curves: dict, label: str, colours: dict, directory: Path) -> Path:
    """The metric against epoch of every trial, the search and the seeds stage side by side."""
    import matplotlib.pyplot as plt

    stage_of = dict(zip(table["trial"], table["stage"]))
    stages = [stage for stage in ("search", "seeds") if stage in set(stage_of.values())]
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False, sharey=True)
    for ax, stage in zip(axes[0], stages):
        shown = set()
        for trial, (method, epochs, values) in curves.items():
            if stage_of.get(trial) != stage:
                continue
            ax.plot(epochs, values, color=colours.get(method), alpha=0.7, marker="o", markersize=3,
                    label=method if method not in shown else None)
            shown.add(method)
        ax.set(xlabel="epoch", ylabel=label, title=f"{stage} stage: every trial")
        _integer_ticks(ax.xaxis)
        ax.legend(title="method")
        ax.grid(alpha=0.3)
    return _save(fig, directory / "learning_curves.png")


def _trials(table: pd.DataFrame, metric: str, label: str, colours: dict, directory: Path) -> Path:
    """Each search trial's best metric in start order, hollow where ASHA stopped it before the full length."""
    import matplotlib.pyplot as plt

    search = table[(table["status"] == "ok") & (table["stage"] == "search")].reset_index(drop=True)
    full = search["epochs"].max() if not search.empty else 0
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, group in search.groupby("method"):
        whole = group["epochs"] == full
        ax.scatter(group.index[whole] + 1, group[f"best_{metric}"][whole], s=40, color=colours.get(method),
                   label=method)
        ax.scatter(group.index[~whole] + 1, group[f"best_{metric}"][~whole], s=40, facecolors="none",
                   edgecolors=colours.get(method))
    ax.set(xlabel="search trial (start order)", ylabel=f"best {label}",
           title=f"search trials (hollow: stopped early, before {full} epochs)")
    _integer_ticks(ax.xaxis)
    ax.legend(title="method")
    ax.grid(alpha=0.3)
    return _save(fig, directory / "trials.png")


def _best_so_far(table: pd.DataFrame, metric: str, mode: str, label: str, colours: dict, directory: Path) -> Path:
    """The best metric of the search so far, over each trial's own result (coloured by method)."""
    import matplotlib.pyplot as plt

    search = table[table["stage"] == "search"].reset_index(drop=True)
    values = search[f"best_{metric}"].to_numpy(dtype=float)
    running = np.fmax.accumulate(np.where(np.isnan(values), -np.inf, values)) if mode == "max" else \
        np.fmin.accumulate(np.where(np.isnan(values), np.inf, values))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(np.arange(1, len(values) + 1), running, where="post", color="black", label="best so far")
    for method, group in search.groupby("method"):
        ax.scatter(group.index + 1, group[f"best_{metric}"], s=24, color=colours.get(method), label=method)
    ax.set(xlabel="search trial (start order)", ylabel=label, title="search: best so far")
    _integer_ticks(ax.xaxis)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, directory / "best_so_far.png")


def _seeds(table: pd.DataFrame, metric: str, mode: str, label: str, colours: dict, directory: Path) -> Path:
    """Per method, the seeds stage's mean +- sample std (bars) and each seed's run (dots), best method first."""
    import matplotlib.pyplot as plt

    stats = seed_statistics(table, metric)
    order = sorted(stats, key=lambda m: stats[m]["mean"], reverse=mode == "max")
    seeds = table[(table["stage"] == "seeds") & (table["status"] == "ok")]
    fig, ax = plt.subplots(figsize=(1.4 * len(order) + 2, 4))
    for x, method in enumerate(order):
        ax.bar(x, stats[method]["mean"], yerr=stats[method]["std"], capsize=6, color=colours.get(method), alpha=0.6)
        runs = seeds[seeds["method"] == method][f"best_{metric}"]
        ax.scatter(np.full(len(runs), x), runs, color="black", s=14, zorder=3)
    ax.set_xticks(range(len(order)), order)
    ax.set(ylabel=f"best {label}", title=f"seeds stage: mean +- std over {max(s['n'] for s in stats.values())} seeds")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, directory / "seeds.png")


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
                 incomplete: str | None = None, teacher_scores: dict[str, float | None] | None = None
                 ) -> dict[str, Any]:
    """Write the results, the summaries and the plots to ``directory`` (a path or URI); return the summary.
    ``incomplete`` says what did not finish (a stage stopped by Ctrl-C, one whose every trial failed): the summary
    leads with it, so partial results are never read as a finished sweep. ``teacher_scores``: each teacher's own
    ``metric`` (None where its checkpoint does not say), shown beside the students."""
    metric, mode = sweep["metric"], sweep["mode"]
    fixed = {base["method"]["name"]: dict(base["method"]["params"])} if base.get("method") else {}
    table, curves = trials_table(results, metric, task, fixed=fixed)
    if seed_results is not None:
        seeds_table, seed_curves = trials_table(seed_results, metric, task, stage="seeds", fixed=fixed)
        table = pd.concat([table, seeds_table], ignore_index=True)
        curves.update(seed_curves)
    ok = table[(table["status"] == "ok") & (table["stage"] == "search")] if not table.empty else table
    ranking = rank_methods(table, metric, mode) if not table.empty else []
    trial_computed = int(table["teacher_samples_computed"].sum()) if not table.empty else 0
    if not table.empty:
        table["teacher_rows_share"] = service_rows_share(table, teacher_stats)
    summary = {
        "incomplete": incomplete,
        "trials": int(len(table)),
        "failed": int((table["status"] != "ok").sum()) if not table.empty else 0,
        "metric": metric, "unit": metric_unit(metric).strip(), "mode": mode,
        "winner": ranking[0]["method"] if ranking else None,
        "ranking": ranking,
        "best": best_student(table, metric, mode, ranking[0]["method"], task) if ranking else None,
        "seeds": seed_statistics(table, metric) if not table.empty else {},
        "teacher_scores": dict(teacher_scores or {}),
        # sweep-wide: the teacher service's tables plus any live or in-process forwards inside trials
        "teacher_samples_computed": sum(s["samples_computed"] for s in teacher_stats.values()) + trial_computed,
        "cache_hits": int(table["cache_hits"].sum()) if not table.empty else 0,
        "teachers": teacher_stats, "wall_s": wall_s, "sweep": sweep, "base": base,
    }
    with tempfile.TemporaryDirectory(prefix="raykd-report-") as tmp:
        local = Path(tmp)
        table.to_parquet(local / "results.parquet", index=False)
        if not ok.empty:
            summary["plots"] = [p.name for p in plot_trials(table, curves, metric, mode, local, task)]
            (local / "summary.md").write_text(summary_markdown(table, metric, mode, summary, task))
        (local / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
        _publish(local, directory)
    return summary


def _publish(local: Path, directory: str) -> None:
    """Copy the report files to ``directory`` (a local path or a pyarrow URI)."""
    if is_uri(directory):
        fs, path = pafs.FileSystem.from_uri(directory)
    else:
        fs, path = pafs.LocalFileSystem(), str(Path(directory))
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def compare_runs(first: str | Path, second: str | Path) -> str:
    """Two finished sweeps side by side: each method's ranked value (seeds mean +- std, or best search trial),
    the winners, the teachers' scores, then every config field that differs (the trials' base and the sweep's
    own, from ``summary.json``)."""
    runs = [Path(first), Path(second)]
    summaries = []
    for run in runs:
        path = run / "summary.json"
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: cannot read it ({one_line(err)}); give the results directory of a finished "
                            "sweep (<storage>/<name>)") from None
    metrics = {s.get("metric") for s in summaries}
    if len(metrics) > 1:
        raise UserError(f"{runs[0]} and {runs[1]} measure different metrics ({' vs '.join(map(str, metrics))}): "
                        "nothing to compare")

    def value(summary: dict[str, Any], method: str) -> str:
        entry = next((e for e in summary.get("ranking") or [] if e["method"] == method), None)
        if entry is None:
            return "-"
        stats = entry.get("seeds")
        text = f"{stats['mean']:.2f} +- {stats['std']:.2f} (n={stats['n']})" if stats else \
            f"{entry['value']:.2f} ({entry['basis']})"
        return f"{text}{' winner' if entry['rank'] == 1 else ''}"

    methods = list(dict.fromkeys(e["method"] for s in summaries for e in s.get("ranking") or []))  # A's rank first
    teachers = sorted({t for s in summaries for t in s.get("teacher_scores") or {}})
    rows = [("", str(runs[0]), str(runs[1])), ("metric", *(f"{s.get('metric')} ({s.get('mode')})" for s in
                                                           summaries))]
    rows += [(method, *(value(s, method) for s in summaries)) for method in methods]
    rows += [(f"teacher {t}", *(_score((s.get("teacher_scores") or {}).get(t, "-")) for s in summaries))
             for t in teachers]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    differences = _differences({"train": summaries[0].get("base"), "sweep": summaries[0].get("sweep")},
                               {"train": summaries[1].get("base"), "sweep": summaries[1].get("sweep")})
    lines += ["", "config differences:" if differences else "configs: identical"]
    lines += [f"  {key}: {a} -> {b}" for key, (a, b) in differences.items()]
    return "\n".join(lines) + "\n"


def _score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "not measured" if value is None else str(value)


def _differences(first: Any, second: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted paths where two JSON documents differ, with the two values."""
    if isinstance(first, dict) and isinstance(second, dict):
        out = {}
        for key in sorted(set(first) | set(second)):
            out.update(_differences(first.get(key), second.get(key), f"{prefix}{key}."))
        return out
    return {} if first == second else {prefix.rstrip("."): (first, second)}
