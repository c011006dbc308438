"""What a sweep's report tells a person: which method won (never by comparing trials of different lengths), how
sure that is, and where the best student is."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd

from raykd.methods import method_class
from raykd.tune.report import (best_student, metric_unit, rank_methods, service_rows_share, summary_markdown,
                               trials_table)

METRIC = "val_top1"


def _row(trial: str, stage: str, method: str, best: float, epochs: int, seed: int = 0) -> dict:
    return {"trial": trial, "stage": stage, "method": method, "seed": seed, "status": "ok",
            **method_class(method, "cls").defaults(), f"best_{METRIC}": best, "epochs": epochs,
            "trial_dir": f"/runs/demo/{trial}",
            "checkpoint": f"/runs/demo/{trial}/checkpoint_{epochs - 1:06d}", "checkpoint_epoch": epochs}


def _table() -> pd.DataFrame:
    # the best search trial is kd's, and dkd's 1-epoch trial beats figkd's 2-epoch ones; over three seeds figkd wins
    rows = [_row("kd_0", "search", "kd", 60.0, 2), _row("dkd_0", "search", "dkd", 70.0, 1),
            _row("figkd_0", "search", "figkd", 58.0, 2), _row("none_0", "search", "none", 50.0, 2)]
    rows += [_row(f"kd_s{s}", "seeds", "kd", v, 2, s) for s, v in ((1, 55.0), (2, 56.0), (3, 54.0))]
    rows += [_row(f"figkd_s{s}", "seeds", "figkd", v, 2, s) for s, v in ((1, 59.0), (2, 57.0), (3, 61.0))]
    rows.append({**_row("none_1", "search", "none", math.nan, 0), "status": "error"})
    return pd.DataFrame(rows)


def test_the_winner_is_the_best_seeds_mean_not_the_best_search_trial() -> None:
    ranking = rank_methods(_table(), METRIC, "max")
    assert [e["method"] for e in ranking] == ["figkd", "kd", "none", "dkd"]
    figkd, kd, none, dkd = ranking
    assert figkd["value"] == 59.0 and figkd["seeds"]["n"] == 3 and figkd["seeds"]["std"] == 2.0
    assert figkd["basis"] == "mean of 3 seeds" and kd["value"] == 55.0
    assert none["basis"] == "best search trial of 2 epochs"  # the student alone, at the full length
    assert dkd["basis"] == "best search trial, stopped at 1 epoch"  # never compared with 2-epoch trials
    assert [e["rank"] for e in ranking] == [1, 2, 3, 4]


def test_the_best_student_is_the_winners_best_seed_run_with_its_checkpoint() -> None:
    best = best_student(_table(), METRIC, "max", "figkd", "cls")
    assert best["trial"] == "figkd_s3" and best["stage"] == "seeds" and best["seed"] == 3 and best[METRIC] == 61.0
    assert best["checkpoint"] == "/runs/demo/figkd_s3/checkpoint_000001" and best["trial_dir"] == "/runs/demo/figkd_s3"
    without_seeds = best_student(_table(), METRIC, "max", "none", "cls")
    assert without_seeds["trial"] == "none_0" and without_seeds["stage"] == "search"


def test_the_summary_marks_the_winner_says_the_unit_and_shows_the_teacher() -> None:
    table = _table()
    summary = {"ranking": rank_methods(table, METRIC, "max"), "best": best_student(table, METRIC, "max", "figkd",
                                                                                   "cls"),
               "teacher_scores": {"resnet56": 72.5, "released": None}, "trials": len(table), "failed": 1,
               "wall_s": 10.0, "teacher_samples_computed": 0, "cache_hits": 0,
               "seeds": {"figkd": {"n": 3}, "kd": {"n": 3}}}
    text = summary_markdown(table, METRIC, "max", summary, "cls")
    assert text.startswith("# Sweep summary: val_top1 (%), higher is better")
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert rows[0].startswith("| **1** (winner) | figkd | 59.00 +- 2.00 | mean of 3 seeds | 58.00 (2 epochs) |")
    assert rows[-2] == "| - | teacher resnet56 | 72.50 | its own checkpoint | - | - | - |"
    assert rows[-1] == "| - | teacher released | not measured | its own checkpoint | - | - | - |"
    assert "checkpoint `/runs/demo/figkd_s3/checkpoint_000001` (epoch 2)" in text
    assert metric_unit("val_psnr") == " dB" and metric_unit("val_ssim") == ""


def test_the_figures_keep_the_stages_apart_and_say_when_importance_is_missing(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from raykd.tune.report import plot_trials

    table = _table()
    curves = {row.trial: (row.method, np.arange(1, row.epochs + 1), np.linspace(10, getattr(row, f"best_{METRIC}"),
                                                                                  row.epochs))
              for row in table[table["status"] == "ok"].itertuples()}
    paths = plot_trials(table, curves, METRIC, "max", tmp_path, "cls")
    assert [p.name for p in paths] == ["learning_curves.png", "trials.png", "best_so_far.png", "seeds.png"]
    assert all(Image.open(p).size[0] > 400 for p in paths)
    summary = {"ranking": rank_methods(table, METRIC, "max"), "trials": len(table), "failed": 1, "wall_s": 1.0,
               "teacher_samples_computed": 0, "cache_hits": 0, "plots": [p.name for p in paths]}
    text = summary_markdown(table, METRIC, "max", summary, "cls")
    assert "`seeds.png` (per method, mean +- std over seeds and each run)" in text
    assert "No `importance.png`: Optuna attributes" in text


def test_a_trial_started_when_it_began_not_at_its_first_report() -> None:
    history = pd.DataFrame({"epoch": [1, 2], "val_top1": [40.0, 50.0], "wall_s": [30.0, 61.0],
                            "timestamp": [1_000_030, 1_000_061]})
    result = SimpleNamespace(config={"method": "none"}, metrics=history.iloc[-1].to_dict() | {"trial_id": "t0"},
                             metrics_dataframe=history, path="/runs/t0", error=None, best_checkpoints=[],
                             checkpoint=None)
    table, _ = trials_table([result], "val_top1", "cls")
    assert table.loc[0, "started"] == 1_000_000.0  # the first report came 30 s after the trial began
    assert table.loc[0, "best_val_top1"] == 50.0 and table.loc[0, "epochs"] == 2


def test_the_services_rows_are_shared_among_the_trials_that_read_them() -> None:
    """1,000 rows of teacher a read by three trials 1:1:2 (and one of teacher b's 7 by one trial): each trial's share
    follows its reads, in whole rows adding up to what the service computed; a trial without a teacher gets none."""
    table = pd.DataFrame({"teacher": ["a", "a", "a", "b", ""], "cache_hits": [300, 300, 600, 50, 0]})
    stats = {"a": {"samples_computed": 1000}, "b": {"samples_computed": 7}, "c": {"samples_computed": 0}}
    share = service_rows_share(table, stats)
    assert share.tolist()[3:] == [7, 0] and share[:3].sum() == 1000
    assert sorted(share[:2]) == [250, 250] and share[2] == 500
    uneven = service_rows_share(table.assign(cache_hits=[1, 1, 1, 1, 0]), {"a": {"samples_computed": 10}})
    assert sorted(uneven[:3]) == [3, 3, 4] and uneven[:3].sum() == 10 and uneven[3] == 0
