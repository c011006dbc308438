"""The DFD sweep (raykd/sweeps/dfd_cifar.py): LR students of 8x8 and 16x16 against one HR teacher of their own
architecture, an LR-only baseline, one sweep and one table per LR size; (slow) the smoke run end to end."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raykd.config import MethodConfig, SweepConfig
from raykd.console import UserError
from raykd.sweeps import SWEEPS, run
from raykd.sweeps.dfd_cifar import find_cifar10, write_summary
from raykd.tune.spec import sweep_parser, sweep_profile

ROOT = Path(__file__).resolve().parents[1]


def _configs(argv: list[str], tmp_path: Path):
    spec = SWEEPS["dfd_cifar"]()
    args = sweep_parser(spec, None).parse_args(["--cache-dir", str(tmp_path / "cache"), *argv])
    data = spec.data(args)
    profile = sweep_profile(spec, args)
    base = None if data is None else spec.base(args, data, profile)
    return spec, args, profile, base


def _fake_cifar10(root: Path) -> Path:
    """The python-pickle layout of CIFAR-10 with a few random images per batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}, fh)
    return folder


def test_students_see_the_lr_image_and_the_teacher_is_their_architecture_on_hr(tmp_path):
    folder = _fake_cifar10(tmp_path / "data")
    spec, args, profile, base = _configs(["--data-root", str(tmp_path / "data")], tmp_path)
    assert spec.methods == ("none", "dfd")
    assert (base.data.dataset, base.data.root, base.data.image_size) == ("cifar10", str(folder.resolve()), 32)
    assert (base.data.lr_factor, base.data.lr_mode) == (4, "down_up")  # the first LR size: 8 x 8
    assert base.method == MethodConfig(student_input="lr")  # "none" is the LR-only baseline
    teacher = spec.teacher_config(args, base, profile)
    assert teacher.model == base.model and base.model.name == "resnet20"
    assert teacher.method == MethodConfig() and teacher.data.lr_factor == 1
    assert teacher.optim.epochs == profile.teacher_epochs
    _, _, _, sixteen = _configs(["--data-root", str(folder), "--lr-sizes", "16", "--model", "wrn_16_2"], tmp_path)
    assert sixteen.data.lr_factor == 2 and sixteen.model.name == "wrn_16_2"
    # one teacher for every LR size: its config does not depend on the students' LR factor
    assert spec.teacher_config(args, sixteen, profile).data == teacher.data
    with pytest.raises(UserError, match="must divide 32"):
        _configs(["--data-root", str(folder), "--lr-sizes", "5"], tmp_path)


def test_without_cifar10_it_stops_saying_where_it_looked(tmp_path, capsys):
    assert run("dfd_cifar", ["--data-root", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "cifar-10-batches-py" in err and "--smoke" in err
    assert find_cifar10(tmp_path / "nowhere", tmp_path) is None


def test_the_summary_puts_each_lr_size_in_its_own_section(tmp_path):
    subs = {}
    for size, best in ((8, 41.0), (16, 63.0)):
        sub = SweepConfig(name=f"dfd_lr{size}", storage=str(tmp_path))
        Path(sub.directory).mkdir(parents=True)
        (Path(sub.directory) / "summary.md").write_text(f"# Sweep summary (val_top1, max)\n\n| dfd | {best} |\n")
        subs[size] = (sub, {"best": {"val_top1": best}})
    sweep = SweepConfig(name="dfd", storage=str(tmp_path))
    _, _, _, base = _configs(["--smoke"], tmp_path)
    write_summary(sweep, subs, {}, base)
    text = (tmp_path / "dfd" / "summary.md").read_text()
    eight, sixteen = text.index("## LR 8x8"), text.index("## LR 16x16")
    assert eight < text.index("| dfd | 41.0 |") < sixteen < text.index("| dfd | 63.0 |")
    assert "Sweep summary" not in text  # each size's own title is replaced by its section
    combined = json.loads((tmp_path / "dfd" / "summary.json").read_text())
    assert combined["lr_sizes"]["16"]["best"]["val_top1"] == 63.0


@pytest.mark.slow
def test_smoke_runs_end_to_end_one_table_per_lr_size(tmp_path):
    # a private local Ray: never join another Ray instance on this machine (its address file is shared)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "dfd_cifar.py"), "--smoke", "--cache-dir",
                           str(tmp_path / "cache"), "--storage", str(tmp_path / "runs"), "--seeds", "0",
                           "--num-samples", "2", "--teacher-epochs", "1"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    runs = tmp_path / "runs"
    text = (runs / "dfd_cifar_smoke" / "summary.md").read_text()
    assert text.index("## LR 8x8") < text.index("## LR 16x16") and "HR teacher (resnet8" in text
    assert text in done.stdout
    for size, other in ((8, 16), (16, 8)):
        table = pd.read_parquet(runs / f"dfd_cifar_smoke_lr{size}" / "results.parquet")
        assert set(table["method"]) == {"none", "dfd"} and (table["status"] == "ok").all()
        own = (runs / f"dfd_cifar_smoke_lr{size}" / "summary.md").read_text()
        assert f"lr{other}" not in own
        base = json.loads((runs / f"dfd_cifar_smoke_lr{size}" / "summary.json").read_text())["base"]
        assert base["data"]["lr_factor"] == 32 // size and base["method"]["student_input"] == "lr"
    # one teacher, trained once; its outputs computed for the first size and read back for the second
    assert len([p for p in (tmp_path / "cache" / "teachers").iterdir() if p.is_dir()]) == 1
    second = json.loads((runs / "dfd_cifar_smoke_lr16" / "summary.json").read_text())["teachers"]
    assert all(stats["tables_built"] == 0 for stats in second.values())


def test_svhn_is_found_or_its_download_offered_and_download_is_svhn_only(tmp_path, capsys):
    spec, args, _, base = _configs(["--dataset", "svhn", "--data-root", str(tmp_path / "none")], tmp_path)
    assert base is None
    err = capsys.readouterr().err
    assert "SVHN not found" in err and "--download" in err and "train_32x32.mat" in err
    args = sweep_parser(spec, None).parse_args(["--cache-dir", str(tmp_path), "--download"])
    with pytest.raises(UserError, match="--download fetches SVHN only"):
        spec.check(args)
