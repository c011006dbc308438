"""The SR sweep specs (raykd/sweeps/div2k.py, dvmsr_div2k.py, mtkd_div2k.py) and their scripts: where they look
for data and how they stop without it, what their flags put in the run's config, released teachers converted once,
and (slow) the smoke runs end to end, Set14 measured on every trial's final student."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from raykd.console import UserError
from raykd.data.builtin import make_demo_sr
from raykd.models import create_model
from raykd.sweeps import SWEEPS, run
from raykd.sweeps.div2k import find_div2k
from raykd.sweeps.mtkd_div2k import released_teacher
from raykd.tune.spec import sweep_parser, sweep_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_sr(tmp_path_factory.mktemp("data") / "sr-demo")


def _configs(name: str, argv: list[str], tmp_path: Path):
    spec = SWEEPS[name]()
    args = sweep_parser(spec, None).parse_args(["--cache-dir", str(tmp_path / "cache"), *argv])
    data = spec.data(args)
    profile = sweep_profile(spec, args)
    return spec, args, profile, (None if data is None else spec.base(args, data, profile))


def _div2k(root: Path, scale: int = 4) -> Path:
    (root / "DIV2K_train_HR").mkdir(parents=True)
    (root / f"DIV2K_train_LR_bicubic" / f"X{scale}").mkdir(parents=True)
    return root


def test_every_sweep_is_registered_with_a_script_and_its_flags():
    assert set(SWEEPS) >= {"figkd_tinyimagenet", "figkd_cub", "dvmsr_div2k", "mtkd_div2k", "vimd_cub", "dfd_cifar"}
    for name in SWEEPS:
        assert (ROOT / "sweeps" / f"{name}.py").is_file(), name
        with pytest.raises(SystemExit) as stop:
            run(name, ["--help"])
        assert stop.value.code == 0


def test_dvmsr_without_data_stops_at_once_saying_where_it_looked(tmp_path, capsys):
    root = tmp_path / "nowhere"
    assert run("dvmsr_div2k", ["--data-root", str(root), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and "--download" in err and "--smoke" in err and "X4" in err
    # the default place is under the cache dir
    assert run("mtkd_div2k", ["--cache-dir", str(tmp_path / "cache"), "--scale", "2"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "cache" / "datasets" / "DIV2K") in err and "X2" in err
    # a validation or test folder that is not a benchmark set stops it too
    assert run("dvmsr_div2k", ["--smoke", "--cache-dir", str(tmp_path / "cache"), "--set14-root",
                               str(tmp_path)]) == 2
    assert "--set14-root" in capsys.readouterr().err


def test_div2k_is_found_directly_or_one_level_down(tmp_path):
    flat, nested = _div2k(tmp_path / "flat"), _div2k(tmp_path / "outer" / "DIV2K")
    cache = tmp_path / "cache"
    assert find_div2k(flat, cache, 4, download=False) == flat.resolve()
    assert find_div2k(tmp_path / "outer", cache, 4, download=False) == nested.resolve()
    assert find_div2k(flat, cache, 3, download=False) is None  # the x3 pairs are missing


def test_div2k_flags_reach_the_data_and_the_sr_optimiser(tmp_path, demo):
    root = _div2k(tmp_path / "DIV2K")
    set5 = demo / "val"  # the demo's val folder is in the benchmark layout
    _, _, _, base = _configs("dvmsr_div2k", ["--data-root", str(root), "--val-root", str(set5), "--y-channel",
                                             "float", "--tile", "64", "--tile-overlap", "8"], tmp_path)
    data = base.data
    assert (data.task, data.dataset, data.root, data.scale) == ("sr", "div2k", str(root.resolve()), 4)
    assert (data.val_dataset, data.val_root) == ("paired", str(set5.resolve()))
    assert (data.y_channel, data.tile, data.tile_overlap, data.patch_size) == ("float", 64, 8, 64)
    assert (base.optim.name, base.optim.betas, base.optim.weight_decay, base.optim.lr) == ("adam", (0.9, 0.999),
                                                                                          0.0, 2e-4)
    assert base.model.name == "dvmsr" and base.model.kwargs == {}  # the released network by default
    spec, args, profile, smoke = _configs("dvmsr_div2k", ["--smoke", "--student", "dvmsr_paper"], tmp_path)
    assert (smoke.data.dataset, smoke.data.patch_size, smoke.data.y_channel, smoke.data.tile) == ("demo_sr", 16,
                                                                                                   "matlab", 0)
    assert smoke.model.name == "dvmsr_paper" and spec.teacher_model(args).name == "dvmsr_teacher"
    assert spec.teacher_config(args, smoke, profile).optim.epochs == profile.teacher_epochs


def test_mtkd_flags_student_patch_teacher_patch_and_stage1(tmp_path):
    root = _div2k(tmp_path / "DIV2K")
    spec, args, profile, base = _configs("mtkd_div2k", ["--data-root", str(root), "--student", "rcan_light"],
                                         tmp_path)
    assert base.model.name == "rcan_light" and base.data.patch_size == 64  # stage 2's LR patch: 64
    teacher = spec._teacher_config(args, base, profile, "swinir", {"img_size": 48})
    assert teacher.data.patch_size == 48 and teacher.model.kwargs == {"img_size": 48}
    assert teacher.optim.epochs == profile.teacher_epochs and teacher.method.name == "none"
    with pytest.raises(UserError, match="not among --teachers"):
        spec.teachers(sweep_parser(spec, None).parse_args(["--teacher-checkpoints", "vdsr=x.pth"]), base, profile, {})
    with pytest.raises(UserError, match="--teacher-checkpoints"):
        spec.teachers(sweep_parser(spec, None).parse_args(["--teacher", str(tmp_path)]), base, profile, {})


def test_a_released_teacher_is_converted_once_into_the_trained_teacher_store(tmp_path):
    torch.manual_seed(0)
    net = create_model("edsr_baseline", scale=4, n_resblocks=1, n_feats=8)
    path = tmp_path / "edsr_x4.pt"
    torch.save({"params_ema": net.state_dict()}, path)  # a BasicSR-style wrapper is unwrapped
    kwargs = {"n_resblocks": 1, "n_feats": 8}
    spec = released_teacher("edsr_baseline", path, kwargs, 4, str(tmp_path / "cache"))
    assert Path(spec.checkpoint).parent == tmp_path / "cache" / "teachers" and spec.name == "edsr_baseline"
    built = spec.build("cpu")
    torch.testing.assert_close(built.state_dict()["head.0.weight"], net.state_dict()["head.0.weight"])
    stamp = (Path(spec.checkpoint) / "model.safetensors").stat().st_mtime_ns
    again = released_teacher("edsr_baseline", path, kwargs, 4, str(tmp_path / "cache"))
    assert again.checkpoint == spec.checkpoint
    assert (Path(spec.checkpoint) / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    bad = tmp_path / "other.safetensors"
    save_file({"nonsense": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="does not fit"):
        released_teacher("edsr_baseline", bad, kwargs, 4, str(tmp_path / "cache"))


def _smoke(name: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    # a private local Ray: never join another Ray instance on this machine (its address file is shared)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}
    run = subprocess.run([sys.executable, str(ROOT / "sweeps" / f"{name}.py"), "--smoke", "--cache-dir",
                          str(tmp_path / "cache"), "--storage", str(tmp_path / "runs"), *extra],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run


@pytest.mark.slow
def test_dvmsr_smoke_runs_end_to_end_and_measures_set14_on_every_final_student(tmp_path, demo):
    # the demo's two val photos stand in for Set14 (same benchmark layout)
    run = _smoke("dvmsr_div2k", tmp_path, "--set14-root", str(demo / "val"), "--num-samples", "2",
                 "--teacher-epochs", "1", "--seeds", "1")
    out = tmp_path / "runs" / "dvmsr_div2k_smoke"
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["method"]) == {"none", "dvmsr"} and set(table["stage"]) == {"search", "seeds"}
    assert table["set14_psnr"].notna().all() and table["set14_ssim"].between(0, 1).all()
    summary = (out / "summary.md").read_text()
    assert "## Test sets" in summary and "set14_psnr" in summary and "## Test sets" in run.stdout


@pytest.mark.slow
def test_mtkd_smoke_runs_stage1_then_the_student_sweep_with_per_method_teachers(tmp_path):
    run = _smoke("mtkd_div2k", tmp_path, "--num-samples", "5", "--teacher-epochs", "1", "--stage1-epochs", "2",
                 "--seeds", "0")
    out = tmp_path / "runs" / "mtkd_div2k_smoke"
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["method"]) == {"none", "l1kd", "fakd", "at", "mtkd"} and (table["status"] == "ok").all()
    summary = (out / "summary.md").read_text()
    assert "## MTKD stage 1" in summary and "| mtkd (aggregator) |" in summary
    stats = json.loads((out / "summary.json").read_text())["teachers"]
    best = summary.split("l1kd distils from ")[1].split(";")[0]
    # fakd's and at's teacher under its own name (its own serving mode), one for both
    assert set(stats) == {"mtkd", best, f"{best}-features"}
    # the best single teacher's table is the one stage 1 stored; only the aggregate and the features are computed
    assert (stats[best]["tables_loaded"], stats[best]["tables_built"]) == (1, 0)
    assert stats["mtkd"]["tables_built"] == 1 and stats[f"{best}-features"]["tables_built"] == 1
    assert "MTKD stage 1, held-out" in run.stdout
