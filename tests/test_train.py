"""The training function end to end, in-process, on the built-in digits demo (real images, no download)."""
from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from raykd.cli import main as cli_main
from raykd.config import DataConfig, ModelConfig, OptimConfig, TeacherConfig, TrainConfig, override
from raykd.data.store import Store
from raykd.methods import create_method
from raykd.models import create_model
from raykd.models.checkpoint import MODEL_FILE, CheckpointError, read_meta, recorded_score, verify
from raykd.train import checkpoint as checkpoint_module
from raykd.train.checkpoint import find_checkpoint
from raykd.train.loop import NonFiniteLoss, make_optimizer, make_scheduler, param_groups, shard_order, train
from raykd.train.tasks import build_task, task_builds

# 16x16 digits keep every run to seconds; resnet8 reaches ~90% on them in a few epochs
DATA = DataConfig(dataset="demo", image_size=16)


def _cfg(**changes) -> TrainConfig:
    base = TrainConfig(model=ModelConfig("resnet8"), data=DATA, optim=OptimConfig(lr=0.1, epochs=1, batch_size=64))
    return override(base, changes)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_task(DATA, 0, store=Store(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, task) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "ckpt"
    train(_cfg(**{"optim.epochs": 5}), task=task, checkpoint_dir=path)
    return path


def test_teacher_learns_and_its_checkpoint_describes_it(teacher: Path) -> None:
    meta = verify(teacher)
    assert meta["model"] == "resnet8" and meta["model_kwargs"] == {"num_classes": 10}
    assert meta["epoch"] == 5 and meta["config"]["method"]["name"] == "none"
    assert meta["val_top1"] > 60, meta  # 10 classes: chance is 10%
    assert set(meta["files"]) == {MODEL_FILE, "state.pt"}


@pytest.mark.parametrize("method", ["kd", "figkd"])
def test_students_learn_from_the_teacher(teacher: Path, task, method: str) -> None:
    reports = []
    final = train(_cfg(**{"optim.epochs": 3, "method.name": method, "teacher": TeacherConfig(str(teacher))}),
                  task=task, report=lambda metrics, _: reports.append(metrics))
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    distill_term = {"kd": "train_kd", "figkd": "train_hf"}[method]
    assert reports[0][distill_term] > 0 and "train_ce" in reports[0]
    assert final["val_top1"] > 40, final  # well above the 10% of chance
    assert final["teacher_samples_computed"] == 3 * len(task)  # the in-process teacher ran on every view
    assert 0 < final["startup_s"] < 60


def test_every_epoch_trains_on_fresh_views(task) -> None:
    """``none`` too: epoch 0 and epoch 1 show the same sample under different crops/flips, and the run's views
    are those the teacher service computes (one function, ClassificationBatches)."""
    cpu = torch.device("cpu")
    index = np.arange(64)
    first, second = (task.batch(index, epoch, cpu, ("hr",))["hr"] for epoch in (0, 1))
    differing = [i for i in range(64) if not torch.equal(first[i], second[i])]
    assert len(differing) > 48, len(differing)  # a few samples draw the same crop and flip by chance
    again = task.batch(index, 1, cpu, ("hr",))["hr"]
    assert torch.equal(second, again)  # replayable
    reused = build_task(override(DATA, {"reuse_views": 1}), 0, {"train": task.train_arrays, "val": task.val_arrays})
    assert torch.equal(reused.batch(index, 0, cpu, ("hr",))["hr"], reused.batch(index, 1, cpu, ("hr",))["hr"])


def test_a_task_is_built_once_per_process(task) -> None:
    before = task_builds()
    again = build_task(DATA, 0, {"train": task.train_arrays, "val": task.val_arrays})
    assert again is task and task_builds() == before


def test_teacher_is_frozen_and_never_trained(teacher: Path, task) -> None:
    before = load_file(str(teacher / MODEL_FILE))
    train(_cfg(**{"optim.steps_per_epoch": 2, "method.name": "dkd", "teacher": TeacherConfig(str(teacher))}), task=task)
    after = load_file(str(teacher / MODEL_FILE))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_reproduces_the_uninterrupted_run_and_its_counters(tmp_path: Path, teacher: Path, task) -> None:
    cfg = _cfg(**{"optim.epochs": 2, "optim.steps_per_epoch": 3, "method.name": "fitnet",
                  "teacher": TeacherConfig(str(teacher))})
    straight = train(cfg, task=task, checkpoint_dir=tmp_path / "a")

    class Interrupted(Exception):
        pass

    def crash_after_first_epoch(metrics, checkpoint):
        assert checkpoint is not None and checkpoint.is_dir()  # the checkpoint is written before the report
        raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, task=task, checkpoint_dir=tmp_path / "b", report=crash_after_first_epoch)
    assert read_meta(tmp_path / "b")["epoch"] == 1
    resumed = train(cfg, task=task, checkpoint_dir=tmp_path / "b", resume_from=tmp_path / "b")
    assert resumed["epoch"] == straight["epoch"] == 2
    a, b = load_file(str(tmp_path / "a" / MODEL_FILE)), load_file(str(tmp_path / "b" / MODEL_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val_top1"] == straight["val_top1"]
    assert resumed["teacher_samples_computed"] == straight["teacher_samples_computed"] == 2 * 3 * 64


def test_a_crash_between_checkpoint_writes_always_leaves_a_complete_checkpoint(tmp_path: Path, task,
                                                                                monkeypatch) -> None:
    """The swap is old -> <dir>.old, new -> <dir>; a crash between the two renames leaves only <dir>.old, which
    find_checkpoint returns and --resume continues from."""
    cfg = _cfg(**{"optim.epochs": 2, "optim.steps_per_epoch": 2})
    out = tmp_path / "run"
    train(override(cfg, {"optim.epochs": 1}), task=task, checkpoint_dir=out)
    real_replace = os.replace
    calls = []

    def crash_on_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies between the two renames
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, task=task, checkpoint_dir=out, resume_from=out)
    monkeypatch.undo()
    assert not out.exists() and out.with_name("run.old").is_dir()
    found = find_checkpoint(out)
    assert found == out.with_name("run.old") and read_meta(found)["epoch"] == 1
    resumed = train(cfg, task=task, checkpoint_dir=out, resume_from=found)
    assert resumed["epoch"] == 2 and find_checkpoint(out) == out and not out.with_name("run.old").exists()


def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path: Path, teacher: Path, task) -> None:
    copy = tmp_path / "teacher"
    copy.mkdir()
    for f in teacher.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = (copy / MODEL_FILE).read_bytes()
    (copy / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(copy / MODEL_FILE)):
        verify(copy)
    assert find_checkpoint(copy) is None
    (copy / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json is not valid JSON"):
        train(_cfg(**{"method.name": "kd", "teacher": TeacherConfig(str(copy))}), task=task)


def test_a_resume_hashes_each_checkpoint_file_once_and_a_changed_file_again(tmp_path: Path, task,
                                                                            hashes) -> None:
    """Finding a checkpoint, resuming from it and loading its weights each verify it; its files are hashed once
    (not three times), and a file rewritten since (same size, other bytes) is hashed again and refused."""
    out = tmp_path / "run"
    cfg = _cfg(**{"optim.epochs": 2, "optim.steps_per_epoch": 2})
    train(override(cfg, {"optim.epochs": 1}), task=task, checkpoint_dir=out)
    copy = tmp_path / "copy"  # a directory this process never verified
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    hashes.clear()
    train(cfg, task=task, resume_from=find_checkpoint(copy))
    assert len(hashes) == len(read_meta(copy)["files"])
    data = bytearray((copy / MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checkpoint's manifest"):
        verify(copy)


def test_a_non_finite_loss_stops_the_run_before_saving(tmp_path: Path, teacher: Path, task) -> None:
    cfg = _cfg(**{"optim.lr": 1e30, "optim.steps_per_epoch": 5})
    with pytest.raises(NonFiniteLoss, match="training loss is (nan|inf)"):
        train(cfg, task=task, checkpoint_dir=tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


def test_resume_refuses_another_method_or_parameters(tmp_path: Path, teacher: Path, task) -> None:
    cfg = _cfg(**{"optim.steps_per_epoch": 1, "method.name": "kd", "teacher": TeacherConfig(str(teacher))})
    train(cfg, task=task, checkpoint_dir=tmp_path / "kd")
    for changed in ({"method.name": "dkd"}, {"method.params": {"T": 2.0}}, {"model.name": "resnet14"}):
        with pytest.raises(ValueError, match="cannot resume .* as a different run"):
            train(override(cfg, {**changed, "optim.epochs": 2}), task=task, resume_from=tmp_path / "kd")
    # a checkpoint written before a config field existed (here: the model's init_keymap) resumes at its default
    meta_path = tmp_path / "kd" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["model"]["init_keymap"], meta["config"]["method"]["params"]
    meta_path.write_text(json.dumps(meta))
    assert train(override(cfg, {"optim.epochs": 2}), task=task, resume_from=tmp_path / "kd")["epoch"] == 2
    meta["config"]["model"]["gone_field"] = 1  # one this raykd does not know: said, not a traceback
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"its config no longer reads \(unknown ModelConfig keys \['config.model.gone"):
        train(override(cfg, {"optim.epochs": 3}), task=task, resume_from=tmp_path / "kd")


def test_shards_are_disjoint_and_equal_and_cover_the_data() -> None:
    shards = [shard_order(103, seed=1, epoch=4, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 103 // 3
    flat = np.concatenate(shards)
    assert len(set(flat.tolist())) == len(flat)
    assert not np.array_equal(shard_order(103, seed=1, epoch=5, rank=0, world_size=3), shards[0])


def test_bad_input_fails_before_training_naming_the_value(tmp_path: Path, task) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        build_task(override(DATA, {"dataset": "tinyimagenet", "root": str(tmp_path / "nowhere")}), 0)
    with pytest.raises(ValueError, match="set the teacher"):
        train(_cfg(**{"method.name": "kd"}), task=task)
    with pytest.raises(ValueError, match=r"'kd'.*T=nan"):
        train(_cfg(**{"method.name": "kd", "method.params": {"T": math.nan}}), task=task)


def test_the_optimiser_skips_weight_decay_where_the_model_says(task) -> None:
    vim = create_model("vim_micro", num_classes=10, img_size=16)
    groups = param_groups(vim, create_method("none"), OptimConfig(weight_decay=0.05))
    no_decay = {id(p) for p in groups[1]["params"]}
    names = {n for n, p in vim.named_parameters() if id(p) in no_decay}
    assert groups[1]["weight_decay"] == 0.0 and names == set(vim.no_weight_decay())
    assert len(param_groups(vim, create_method("none"), OptimConfig(no_decay=False))) == 1


def test_cli_train_then_distill_prints_progress(tmp_path: Path, teacher: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RAYKD_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "student"
    args = ["--data", "demo", "--image-size", "16", "--epochs", "1", "--steps-per-epoch", "2", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    assert cli_main(["distill", *args, "--teacher", str(teacher), "--method", "figkd", "--param", "w_hf=2",
                     "--param", "wavelet=db2"]) == 0
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "best top-1" in printed
    meta = read_meta(out)
    assert meta["config"]["method"] == {"name": "figkd", "params": {"w_hf": 2, "wavelet": "db2"}, "student_input": None}
    assert meta["method_params"]["wavelet"] == "db2"


def test_cli_refuses_bad_teachers_naming_them(tmp_path: Path, capsys) -> None:
    args = ["distill", "--data", "demo", "--image-size", "16", "--out", str(tmp_path / "s")]
    assert cli_main([*args, "--teacher", "/nonexistent"]) == 2
    assert "/nonexistent does not exist" in capsys.readouterr().err
    weights = tmp_path / "bare.safetensors"
    weights.write_bytes(b"")
    assert cli_main([*args, "--teacher", str(weights)]) == 2
    assert "--teacher-model" in capsys.readouterr().err


def _average_in_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from raykd.train.loop import average_gradients

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    regressor = torch.nn.Linear(3, 2)
    for p in regressor.parameters():
        p.grad = torch.full_like(p, float(rank + 1))  # worker 0 saw gradient 1, worker 1 gradient 2
    regressor.bias.grad = None  # a parameter the loss did not reach stays without a gradient
    average_gradients(regressor)
    torch.save({"weight": regressor.weight.grad, "bias": regressor.bias.grad}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_learned_method_parts_get_the_same_averaged_gradient_on_every_worker(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_average_in_worker, args=(port, str(tmp_path)), nprocs=2)
    grads = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for g in grads:
        torch.testing.assert_close(g["weight"], torch.full((2, 3), 1.5))
        assert g["bias"] is None


def test_resuming_a_finished_run_returns_its_final_metrics_without_training(tmp_path: Path, task) -> None:
    cfg = _cfg(**{"optim.steps_per_epoch": 2})
    done = train(cfg, task=task, checkpoint_dir=tmp_path / "run")
    reports = []
    again = train(cfg, task=task, checkpoint_dir=tmp_path / "run", resume_from=tmp_path / "run",
                  report=lambda metrics, _: reports.append(metrics))
    assert reports == []
    assert {k: again[k] for k in ("epoch", "val_top1", "best_val_top1")} == \
        {k: done[k] for k in ("epoch", "val_top1", "best_val_top1")}


def test_the_multistep_schedule_multiplies_the_lr_at_the_papers_milestones() -> None:
    # the KD literature's CIFAR/TinyImageNet recipe: SGD 0.05, x0.1 at epochs 150, 180 and 210 of 240
    optim = OptimConfig(lr=0.05, schedule="multistep", milestones=(150, 180, 210), gamma=0.1, epochs=240)
    optimizer = make_optimizer(optim, [{"params": [torch.nn.Parameter(torch.zeros(1))]}])
    scheduler = make_scheduler(optim, optimizer)
    lrs = []
    for _ in range(240):  # the loop steps the schedule once per epoch
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [lrs[e] for e in (0, 149, 150, 179, 180, 209, 210, 239)] == pytest.approx(
        [0.05, 0.05, 5e-3, 5e-3, 5e-4, 5e-4, 5e-5, 5e-5], rel=1e-9)


def test_a_checkpoint_tells_the_score_of_the_weights_it_holds(teacher: Path, tmp_path: Path) -> None:
    # what a sweep's summary and an exported model card show beside the students, as "the teacher's own"
    meta = read_meta(teacher)
    assert recorded_score(teacher, "val_top1") == meta["val_top1"] and isinstance(meta["val_top1"], float)
    assert recorded_score(teacher, "val_psnr") is None  # a metric it never measured
    assert recorded_score(tmp_path / "moved", "val_top1") is None and recorded_score(None, "val_top1") is None
