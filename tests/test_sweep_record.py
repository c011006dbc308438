"""A sweep writes what it ran (sweep.json); `--config` reruns it exactly; `--set` reaches any config field;
`raykd compare` puts two sweeps side by side with what differs."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from raykd import cli
from raykd.sweeps import run


@pytest.mark.slow
def test_a_sweep_rerun_from_its_record_is_the_same_run(tmp_path, capsys) -> None:
    storage, cache = tmp_path / "runs", tmp_path / "cache"
    flags = ["--smoke", "--methods", "kd", "--num-samples", "1", "--seeds", "0", "--epochs", "1",
             "--set", "optim.lr=0.05", "--set", "sweep.grace_period=1", "--storage", str(storage),
             "--cache-dir", str(cache)]
    assert run("figkd_tinyimagenet", [*flags, "--name", "first"]) == 0
    record = json.loads((storage / "first" / "sweep.json").read_text())
    assert record["sweep"] == "figkd_tinyimagenet" and record["train"]["optim"]["lr"] == 0.05
    assert record["flags"] == [*flags, "--name", "first"]
    assert run("figkd_tinyimagenet", ["--config", str(storage / "first" / "sweep.json"), "--name", "again"]) == 0
    again = json.loads((storage / "again" / "sweep.json").read_text())
    assert again["train"] == record["train"]  # the same trials' config
    assert {k for k in record["sweep_config"] if record["sweep_config"][k] != again["sweep_config"][k]} == {"name"}
    first, second = (pd.read_parquet(storage / name / "results.parquet") for name in ("first", "again"))
    assert first["best_val_top1"].tolist() == second["best_val_top1"].tolist()  # CPU, same seed: same epoch-1 metric

    capsys.readouterr()
    assert cli.main(["compare", str(storage / "first"), str(storage / "again")]) == 0
    out = capsys.readouterr().out
    assert "config differences:\n  sweep.name: first -> again\n" in out and "winner" in out


def test_set_refuses_an_unknown_field_and_config_another_sweeps_record(tmp_path, capsys) -> None:
    assert run("figkd_tinyimagenet", ["--smoke", "--set", "optim.lrr=3", "--storage", str(tmp_path)]) == 2
    assert "OptimConfig has no field 'lrr' (in 'optim.lrr')" in capsys.readouterr().err
    record = tmp_path / "sweep.json"
    record.write_text(json.dumps({"sweep": "dfd_cifar", "flags": ["--smoke"]}))
    assert run("figkd_tinyimagenet", ["--config", str(record)]) == 2
    assert f"--config {record} records the sweep 'dfd_cifar', not 'figkd_tinyimagenet': run `raykd sweep dfd_cifar" \
        in capsys.readouterr().err
