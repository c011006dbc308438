"""``--recipe paper``: each sweep's config equals its paper's published setting (a table per paper, written out
here), the SR papers' iteration milestones land on the iterations they name, and the recipe is recorded and named
in the summary."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from raykd.config import SweepConfig, TrainConfig
from raykd.console import UserError
from raykd.sweeps import SWEEPS
from raykd.sweeps.recipes import iteration_epochs
from raykd.train.loop import make_scheduler
from raykd.tune.spec import Profile, SweepSpec, sweep_parser, sweep_profile, recorded_flags, sweep_config, write_record


def _configs(name: str, argv: list[str], tmp_path: Path):
    spec = SWEEPS[name]()
    args = sweep_parser(spec, None).parse_args(["--cache-dir", str(tmp_path / "cache"), "--recipe", "paper", *argv])
    spec.check(args)
    profile = sweep_profile(spec, args)
    base = spec.base(args, spec.data(args), profile)
    return spec, args, profile, base


def _optim(base: TrainConfig) -> dict:
    o = base.optim
    return {"optimizer": o.name, "lr": o.lr, "momentum": o.momentum, "weight_decay": o.weight_decay,
            "schedule": o.schedule, "milestones": o.milestones, "gamma": o.gamma, "epochs": o.epochs,
            "batch": o.batch_size}


def _div2k(root: Path) -> list[str]:
    (root / "DIV2K_train_HR").mkdir(parents=True)
    (root / "DIV2K_train_LR_bicubic" / "X4").mkdir(parents=True)
    return ["--data-root", str(root)]


def test_figkd_paper_recipe_is_the_kd_protocols_240_epochs(tmp_path, capsys):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "wnids.txt").write_text("n0\n")
    spec, args, profile, base = _configs("figkd_tinyimagenet", ["--data-root", str(tmp_path / "tiny")], tmp_path)
    # CRD Sec. 4.1 / mdistiller: SGD 0.05, momentum 0.9, wd 5e-4, x0.1 at 150/180/210 of 240, batch 64
    assert _optim(base) == {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                            "schedule": "multistep", "milestones": (150, 180, 210), "gamma": 0.1, "epochs": 240,
                            "batch": 64}
    assert (base.data.dataset, base.data.image_size, base.data.crop_padding, base.data.flip) == \
        ("tinyimagenet", 64, 4, True)
    assert (base.model.name, spec.teacher_model(args).name) == ("resnet8x4", "resnet32x4")
    teacher = spec.teacher_config(args, base, profile)
    assert (teacher.optim.epochs, teacher.optim.milestones) == (240, (150, 180, 210))
    assert "mlkd" in args.methods and sweep_config(spec, args, profile).name == "figkd_tinyimagenet_paper"


def test_dvmsr_paper_recipe_is_500k_iterations_of_128_halved_at_the_papers_milestones(tmp_path, capsys):
    spec, args, profile, base = _configs("dvmsr_div2k", _div2k(tmp_path / "DIV2K"), tmp_path)
    # DVMSR Sec. 4.1: 500k iterations, batch 128, halved at 250k/400k/450k/475k; an epoch = 1,000 iterations
    assert _optim(base) == {"optimizer": "adam", "lr": 2e-4, "momentum": 0.9, "weight_decay": 0.0,
                            "schedule": "multistep", "milestones": (250, 400, 450, 475), "gamma": 0.5,
                            "epochs": 500, "batch": 128}
    steps_per_epoch = 800 * base.data.patches_per_image // base.optim.batch_size
    assert steps_per_epoch == 1000 and base.data.dataset == "div2k"
    assert spec.teacher_config(args, base, profile).optim.epochs == 500
    assert "DF2K" in capsys.readouterr().err  # said before anything starts: DIV2K stands in for DF2K


def test_mtkd_paper_recipe_is_1e4_over_250k_iterations_divided_by_10_every_100k(tmp_path, capsys):
    spec, args, profile, base = _configs("mtkd_div2k", _div2k(tmp_path / "DIV2K"), tmp_path)
    # MTKD Sec. 4.1: stage 2 lr 1e-4, /10 every 100k, 250k iterations (epochs of 1,000 iterations)
    assert _optim(base) == {"optimizer": "adam", "lr": 1e-4, "momentum": 0.9, "weight_decay": 0.0,
                            "schedule": "multistep", "milestones": (100, 200), "gamma": 0.1, "epochs": 250,
                            "batch": 16}
    assert 800 * base.data.patches_per_image // base.optim.batch_size == 1000
    stage1 = spec.stage1_config(args, base).optim
    # stage 1: lr 1e-4, x0.1 at the released config's 200k and 400k of 500k iterations
    assert (stage1.lr, stage1.schedule, stage1.milestones, stage1.gamma, stage1.epochs) == \
        (1e-4, "multistep", (200, 400), 0.1, 500)
    assert "swinir, rcan, edsr are trained by raykd" in capsys.readouterr().err


def test_vimd_paper_recipe_is_adamw_1e6_cosine_200_epochs_batch_16(tmp_path, capsys):
    (tmp_path / "CUB_200_2011").mkdir()
    (tmp_path / "CUB_200_2011" / "images.txt").write_text("")
    spec, args, profile, base = _configs("vimd_cub", ["--data-root", str(tmp_path)], tmp_path)
    # the letter's AdamW, lr 1e-6, cosine, 200 epochs, batch 16; weight decay 1e-8 from the released scripts
    assert _optim(base) == {"optimizer": "adamw", "lr": 1e-6, "momentum": 0.9, "weight_decay": 1e-8,
                            "schedule": "cosine", "milestones": (), "gamma": 0.1, "epochs": 200, "batch": 16}
    assert (base.data.dataset, base.data.image_size, base.data.lr_factor) == ("cub200", 224, 4)
    # the paper's random crop with scaling (torchvision's RandomResizedCrop ranges), for the teacher too
    assert (base.data.crop, base.data.crop_scale, base.data.crop_ratio) == ("resized", (0.08, 1.0), (3 / 4, 4 / 3))
    assert spec.teacher_config(args, base, profile).data.crop == "resized"
    assert spec.teacher_config(args, base, profile).optim.epochs == 200
    err = capsys.readouterr().err
    assert "--teacher-init" in err and "--sr-checkpoint" in err  # the paper's starts, missing, said loudly
    assert "padded" not in err


def test_dfd_paper_recipe_is_100_epochs_of_vgg16_on_cifar10(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("batches.meta", "test_batch"):
        (folder / name).write_bytes(pickle.dumps({}))
    spec, args, profile, base = _configs("dfd_cifar", ["--data-root", str(folder)], tmp_path)
    assert (base.optim.epochs, base.model.name, base.data.dataset, base.data.image_size) == \
        (100, "vgg16", "cifar10", 32)
    assert spec.teacher_config(args, base, profile).optim.epochs == 100
    err = capsys.readouterr().err
    assert "optimiser" in err and "none of the paper's" not in err  # only the unknown optimiser is announced
    # the paper's other two networks, and SVHN, its second dataset
    svhn = tmp_path / "svhn"
    svhn.mkdir()
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (svhn / name).write_bytes(b"")
    for model in ("alexnet_cifar", "resnet18_cifar"):
        _, _, _, other = _configs("dfd_cifar", ["--dataset", "svhn", "--data-root", str(tmp_path), "--model", model],
                                  tmp_path)
        assert (other.model.name, other.data.dataset, other.data.root, other.optim.epochs) == \
            (model, "svhn", str(svhn.resolve()), 100)
        assert "none of the paper's" not in capsys.readouterr().err
    _configs("dfd_cifar", ["--data-root", str(folder), "--model", "resnet20"], tmp_path)
    assert "network resnet20 is none of the paper's" in capsys.readouterr().err


def test_the_paper_schedule_steps_at_the_iterations_the_paper_names(tmp_path, capsys):
    """DVMSR's halvings at 250k/400k/450k/475k of 500k iterations: lr per epoch of 1,000 iterations."""
    _, _, _, base = _configs("dvmsr_div2k", _div2k(tmp_path / "DIV2K"), tmp_path)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=base.optim.lr)
    scheduler = make_scheduler(base.optim, optimizer)
    lrs = []
    for _ in range(base.optim.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    at = {iteration: lrs[iteration // 1000] for iteration in (0, 249_000, 250_000, 399_000, 400_000, 450_000,
                                                             474_000, 475_000, 499_000)}
    want = {0: 2e-4, 249_000: 2e-4, 250_000: 1e-4, 399_000: 1e-4, 400_000: 5e-5, 450_000: 2.5e-5,
            474_000: 2.5e-5, 475_000: 1.25e-5, 499_000: 1.25e-5}
    assert at == pytest.approx(want)


def test_iterations_that_are_not_whole_epochs_are_refused():
    assert iteration_epochs(500_000, 128, 800, 160) == 500
    with pytest.raises(ValueError, match="not whole epochs"):
        iteration_epochs(475_000, 128, 800, 320)  # 2,000 steps an epoch: 237.5 epochs
    with pytest.raises(ValueError, match="not whole epochs"):
        iteration_epochs(1000, 128, 800, 1)  # 6.25 steps an epoch


def test_paper_recipe_with_smoke_or_a_spec_without_one_is_refused(tmp_path):
    spec = SWEEPS["figkd_tinyimagenet"]()
    with pytest.raises(UserError, match="--recipe paper --smoke"):
        sweep_profile(spec, sweep_parser(spec, None).parse_args(["--smoke", "--recipe", "paper"]))

    class Mine(SweepSpec):
        name, methods = "mine", ("none",)
        full = smoke = Profile(1, 1, 1, 1)

    with pytest.raises(UserError, match="sweep 'mine' has no paper recipe"):
        sweep_profile(Mine(), sweep_parser(Mine(), None).parse_args(["--recipe", "paper"]))
    budget = sweep_profile(spec, sweep_parser(spec, None).parse_args([]))
    assert budget == spec.full and budget.recipe == "budget"


def test_the_recipe_is_recorded_rerun_and_named_in_the_summary(tmp_path):
    spec = SWEEPS["figkd_tinyimagenet"]()
    sweep = SweepConfig(name="s", storage=str(tmp_path))
    Path(sweep.directory).mkdir(parents=True)
    (Path(sweep.directory) / "summary.md").write_text("# table\n")
    write_record(spec, ["--recipe", "paper", "--seeds", "1"], TrainConfig(), sweep)
    record = json.loads((Path(sweep.directory) / "sweep.json").read_text())
    assert record["recipe"] == "paper"
    assert "Recipe: paper" in (Path(sweep.directory) / "summary.md").read_text()

    budget = SweepConfig(name="b", storage=str(tmp_path))
    Path(budget.directory).mkdir(parents=True)
    (Path(budget.directory) / "summary.md").write_text("# table\n")
    write_record(spec, ["--seeds", "1"], TrainConfig(), budget)
    assert "Recipe: budget: a scaled recipe, not the paper's" in (Path(budget.directory) / "summary.md").read_text()
    # a record whose recipe was the default then reruns that recipe even if the default changes
    assert recorded_flags(spec, Path(budget.directory) / "sweep.json") == ["--recipe", "budget", "--seeds", "1"]


def test_what_a_paper_run_lacks_ends_its_summary(tmp_path):
    sweep = SweepConfig(name="d", storage=str(tmp_path))
    Path(sweep.directory).mkdir(parents=True)
    (Path(sweep.directory) / "summary.md").write_text("# table\n")
    write_record(SWEEPS["dvmsr_div2k"](), ["--recipe", "paper"], TrainConfig(), sweep)
    summary = (Path(sweep.directory) / "summary.md").read_text()
    assert "Recipe: paper" in summary and "- not the paper's: trained on DIV2K" in summary
