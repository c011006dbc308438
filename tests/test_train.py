"""The training function end to end, in-process, on the built-in digits demo (real images, no download)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raykd.cli import main as cli_main
from raykd.train.checkpoint import MODEL_FILE, read_meta
from raykd.train.loop import shard_order, train

# 16x16 digits keep every run to seconds; resnet8 reaches ~90% on them in a few epochs
TINY = dict(data="demo", image_size=16, batch_size=64, lr=0.1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "ckpt"
    train({**TINY, "model": "resnet8", "epochs": 5}, checkpoint_dir=path)
    return path


def test_teacher_learns_and_its_checkpoint_describes_it(teacher: Path) -> None:
    meta = read_meta(teacher)
    assert meta["model"] == "resnet8" and meta["model_kwargs"] == {"num_classes": 10}
    assert meta["epoch"] == 5
    assert meta["val_top1"] > 60, meta  # 10 classes: chance is 10%


@pytest.mark.parametrize("method", ["kd", "figkd"])
def test_students_learn_from_the_teacher(teacher: Path, method: str) -> None:
    reports = []
    final = train({**TINY, "model": "resnet8", "epochs": 3, "method": method, "teacher": str(teacher)},
                  report=lambda metrics, _: reports.append(metrics))
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    distill_term = {"kd": "train_kd", "figkd": "train_hf"}[method]
    assert reports[0][distill_term] > 0 and "train_ce" in reports[0]
    assert final["val_top1"] > 40, final  # well above the 10% of chance


def test_teacher_is_frozen_and_never_trained(teacher: Path) -> None:
    before = load_file(str(teacher / MODEL_FILE))
    train({**TINY, "model": "resnet8", "epochs": 1, "steps_per_epoch": 2, "method": "dkd", "teacher": str(teacher)})
    after = load_file(str(teacher / MODEL_FILE))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, teacher: Path) -> None:
    cfg = {**TINY, "model": "resnet8", "epochs": 2, "steps_per_epoch": 3, "method": "fitnet", "teacher": str(teacher),
           "num_views": 2}
    straight = train(cfg, checkpoint_dir=tmp_path / "a")

    class Interrupted(Exception):
        pass

    def crash_after_first_epoch(metrics, checkpoint):
        assert checkpoint is not None and checkpoint.is_dir()  # the checkpoint is written before the report
        raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, checkpoint_dir=tmp_path / "b", report=crash_after_first_epoch)
    assert read_meta(tmp_path / "b")["epoch"] == 1
    resumed = train(cfg, checkpoint_dir=tmp_path / "b", resume_from=tmp_path / "b")
    assert resumed["epoch"] == straight["epoch"] == 2
    a, b = load_file(str(tmp_path / "a" / MODEL_FILE)), load_file(str(tmp_path / "b" / MODEL_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val_top1"] == straight["val_top1"]


def test_shards_are_disjoint_and_equal_and_cover_the_data() -> None:
    shards = [shard_order(103, seed=1, epoch=4, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 103 // 3
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == len(flat)
    assert shard_order(103, seed=1, epoch=5, rank=0, world_size=3) != shards[0]  # reshuffled every epoch


def test_bad_config_fails_before_training_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        train({**TINY, "data": "tinyimagenet", "data_root": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="unknown training config keys \\['epoch'\\]"):
        train({**TINY, "epoch": 3})
    with pytest.raises(ValueError, match="set 'teacher'"):
        train({**TINY, "method": "kd"})


def test_cli_train_then_distill_prints_progress(tmp_path: Path, teacher: Path, capsys) -> None:
    out = tmp_path / "student"
    args = ["--data", "demo", "--image-size", "16", "--epochs", "1", "--steps-per-epoch", "2", "--out", str(out)]
    assert cli_main(["distill", *args, "--teacher", str(teacher), "--method", "figkd", "--param", "T=2",
                     "--param", "wavelet=db2"]) == 0
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "best top-1" in printed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "figkd" and meta["method_params"]["T"] == 2 and meta["method_params"]["wavelet"] == "db2"


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
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_average_in_worker, args=(port, str(tmp_path)), nprocs=2)
    grads = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for g in grads:
        torch.testing.assert_close(g["weight"], torch.full((2, 3), 1.5))
        assert g["bias"] is None


def test_resuming_a_finished_run_returns_its_final_metrics_without_training(tmp_path: Path, teacher: Path) -> None:
    cfg = {**TINY, "model": "resnet8", "epochs": 1, "steps_per_epoch": 2, "method": "kd", "teacher": str(teacher)}
    done = train(cfg, checkpoint_dir=tmp_path / "run")
    reports = []
    again = train(cfg, checkpoint_dir=tmp_path / "run", resume_from=tmp_path / "run",
                  report=lambda metrics, _: reports.append(metrics))
    assert reports == [] and again == pytest.approx(done)
