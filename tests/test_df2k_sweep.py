"""The DIV2K SR sweeps (DVMSR, MTKD) train on DF2K with --flickr2k-root: the root of links assembled under the
cache from tiny synthetic DIV2K and Flickr2K folders, every image of both, validated on DIV2K's valid split; the
paper recipes keep their epochs of exactly 1,000 iterations on DF2K's image count, and say loudly when they train on
DIV2K only; flags that do not fit together are refused before any data is looked for. No Ray."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from raykd.config import CacheLayout, SweepConfig, TrainConfig
from raykd.console import UserError
from raykd.data.df2k import MANIFEST
from raykd.data.sr import open_sr_dataset
from raykd.sweeps import SWEEPS
from raykd.sweeps.recipes import epoch_layout, iteration_epochs
from raykd.tune.spec import check_flags, sweep_parser, sweep_profile, write_record

from sr_sources import make_source, png

DIV2K_NAMES = ["0001", "0002", "0003"]
FLICKR_NAMES = ["000001", "000002", "000003", "000004"]  # 7 images in all: 1,000 x 128 / 7 is not whole


@pytest.fixture()
def sources(tmp_path: Path) -> tuple[Path, Path]:
    div2k, flickr = tmp_path / "data" / "DIV2K", tmp_path / "data" / "Flickr2K"
    make_source(div2k, "DIV2K_train_HR", "DIV2K_train_LR_bicubic/X{s}", DIV2K_NAMES, (4,), 0)
    make_source(div2k, "DIV2K_valid_HR", "DIV2K_valid_LR_bicubic/X{s}", ["0801", "0802"], (4,), 20)
    make_source(flickr, "Flickr2K_HR", "Flickr2K_LR_bicubic/X{s}", FLICKR_NAMES, (4,), 50)
    return div2k, flickr


def configs(name: str, argv: list[str], tmp_path: Path, recipe: str = "budget"):
    """The sweep's flags checked as ``run_spec`` checks them, then its data and base config (no Ray)."""
    spec = SWEEPS[name]()
    parser = sweep_parser(spec, None)
    args = parser.parse_args(["--cache-dir", str(tmp_path / "cache"), "--recipe", recipe, *argv])
    check_flags(spec, parser, args)
    spec.check(args)
    profile = sweep_profile(spec, args)
    data = spec.data(args)
    return spec, args, profile, spec.base(args, data, profile)


def df2k_root(tmp_path: Path) -> Path:
    return CacheLayout.of(tmp_path / "cache").dataset("DF2K")


def steps_per_epoch(images: int, patches: int, batch: int, cap: int | None) -> int:
    """The batches :func:`raykd.train.loop.train_epoch` runs: a shuffle of every view, cut at the cap."""
    views = images * patches if cap is None else min(images * patches, cap * batch)
    return math.ceil(views / batch)


@pytest.mark.parametrize("flags", [[], ["--train-set", "df2k"]])
@pytest.mark.parametrize("sweep", ["dvmsr_div2k", "mtkd_div2k"])
def test_a_flickr2k_root_trains_on_df2k_with_every_image_and_validates_on_div2k_valid(sources, tmp_path, sweep,
                                                                                     flags):
    div2k, flickr = sources
    spec, args, profile, base = configs(sweep, ["--data-root", str(div2k), "--flickr2k-root", str(flickr), *flags],
                                        tmp_path)
    data = base.data
    assert (data.dataset, Path(data.root)) == ("paired", df2k_root(tmp_path))
    train = open_sr_dataset(data.dataset, data.root, data.scale, "train")
    names = sorted(Path(train.name(i)).stem for i in range(len(train)))
    assert names == sorted(DIV2K_NAMES + FLICKR_NAMES) and spec.train_images == len(names)
    assert all(f.resolve().parent in (div2k / "DIV2K_train_HR", flickr / "Flickr2K_HR") for f in train.hr_files)
    val = open_sr_dataset(data.val_dataset, data.val_root, data.scale, "val")
    assert sorted(Path(val.name(i)).stem for i in range(len(val))) == ["0801", "0802"]  # DIV2K valid, as before
    # the teacher trains on the same images
    teacher = spec._teacher_config(args, base, profile, "edsr", {}) if sweep == "mtkd_div2k" else \
        spec.teacher_config(args, base, profile)
    assert teacher.data.root == data.root


def test_the_div2k_root_is_found_under_its_parent_and_flickr2k_under_its_own(sources, tmp_path):
    div2k, flickr = sources
    _, _, _, base = configs("dvmsr_div2k", ["--data-root", str(div2k.parent), "--flickr2k-root", str(flickr.parent)],
                            tmp_path)
    assert len(open_sr_dataset("paired", base.data.root, 4)) == len(DIV2K_NAMES) + len(FLICKR_NAMES)


def test_a_val_root_still_validates_df2k_runs(sources, tmp_path):
    div2k, flickr = sources
    set5 = tmp_path / "Set5"
    make_source(set5, "HR", "LR_bicubic/X{s}", ["baby"], (4,), 90)
    _, _, _, base = configs("dvmsr_div2k", ["--data-root", str(div2k), "--flickr2k-root", str(flickr),
                                            "--val-root", str(set5)], tmp_path)
    assert (base.data.dataset, base.data.val_dataset, base.data.val_root) == ("paired", "paired", str(set5.resolve()))


def test_the_df2k_root_is_reused_while_its_sources_hold_the_same_images(sources, tmp_path):
    div2k, flickr = sources
    argv = ["--data-root", str(div2k), "--flickr2k-root", str(flickr)]
    configs("dvmsr_div2k", argv, tmp_path)
    manifest = df2k_root(tmp_path) / MANIFEST
    first = manifest.stat().st_ino
    configs("dvmsr_div2k", argv, tmp_path)
    assert manifest.stat().st_ino == first  # not assembled again
    png(flickr / "Flickr2K_HR" / "000005.png", 8, 77)
    png(flickr / "Flickr2K_LR_bicubic" / "X4" / "000005x4.png", 2, 78)
    spec, _, _, base = configs("dvmsr_div2k", argv, tmp_path)
    assert json.loads(manifest.read_text())["images"] == {"DIV2K": 3, "Flickr2K": 5}
    assert len(open_sr_dataset("paired", base.data.root, 4)) == spec.train_images == 8


def test_flickr2k_without_bicubic_lr_at_the_scale_is_read_as_hr_folder(sources, tmp_path, capsys):
    div2k, flickr = sources
    for f in (flickr / "Flickr2K_LR_bicubic" / "X4").iterdir():
        f.unlink()
    (flickr / "Flickr2K_LR_bicubic" / "X4").rmdir()
    _, _, _, base = configs("dvmsr_div2k", ["--data-root", str(div2k), "--flickr2k-root", str(flickr)], tmp_path)
    assert base.data.dataset == "hr_folder" and "MATLAB's bicubic" in capsys.readouterr().err
    assert len(open_sr_dataset("hr_folder", base.data.root, 4)) == len(DIV2K_NAMES) + len(FLICKR_NAMES)


def test_dvmsr_paper_recipe_on_df2k_keeps_epochs_of_1000_iterations_at_the_papers_milestones(sources, tmp_path,
                                                                                              capsys):
    div2k, flickr = sources
    spec, args, profile, base = configs("dvmsr_div2k", ["--data-root", str(div2k), "--flickr2k-root", str(flickr)],
                                        tmp_path, recipe="paper")
    o, images = base.optim, spec.train_images
    assert images == 7 and (o.batch_size, o.epochs, o.milestones, o.gamma) == (128, 500, (250, 400, 450, 475), 0.5)
    assert steps_per_epoch(images, base.data.patches_per_image, o.batch_size, o.steps_per_epoch) == 1000
    assert (base.data.patches_per_image - 1) * images < 1000 * 128  # no more views than an epoch needs
    assert spec.teacher_config(args, base, profile).optim.steps_per_epoch == o.steps_per_epoch
    err = capsys.readouterr().err
    assert "trained on DIV2K only" not in err and "learning rate 0.0002" in err  # DF2K is the paper's; the rest: said


def test_the_real_df2k_count_has_no_whole_epoch_layout_but_the_capped_one_is_exact():
    with pytest.raises(ValueError, match="not whole epochs"):  # 3,450 x 64 / 128 = 1,725 steps: 500k is not whole
        iteration_epochs(500_000, 128, 3450, 64)
    for batch in (128, 16):
        patches, cap = epoch_layout(1000, batch, 3450)
        assert cap == 1000 and steps_per_epoch(3450, patches, batch, cap) == 1000
        assert (patches - 1) * 3450 < 1000 * batch <= patches * 3450
        assert iteration_epochs(500_000, batch, 3450, patches, cap) == 500
    assert epoch_layout(1000, 128, 800) == (160, None)  # DIV2K: whole, uncapped, as before


def test_mtkd_paper_recipe_on_df2k_keeps_both_stages_at_1000_iterations_an_epoch(sources, tmp_path, capsys):
    div2k, flickr = sources
    spec, args, profile, base = configs("mtkd_div2k", ["--data-root", str(div2k), "--flickr2k-root", str(flickr)],
                                        tmp_path, recipe="paper")
    o = base.optim
    assert (o.batch_size, o.epochs, o.milestones) == (16, 250, (100, 200))
    assert steps_per_epoch(spec.train_images, base.data.patches_per_image, o.batch_size, o.steps_per_epoch) == 1000
    stage1 = spec.stage1_config(args, base)
    s = stage1.optim
    assert (s.epochs, s.milestones, stage1.data.root) == (500, (200, 400), base.data.root)
    assert steps_per_epoch(spec.train_images, stage1.data.patches_per_image, s.batch_size, s.steps_per_epoch) == 1000
    err = capsys.readouterr().err
    assert "trained on DIV2K only" not in err and "trained by raykd" in err


@pytest.mark.parametrize("sweep", ["dvmsr_div2k", "mtkd_div2k"])
def test_a_paper_run_on_div2k_only_says_so_before_it_starts_and_in_the_summary(sources, tmp_path, capsys, sweep):
    div2k, _ = sources
    spec, _, _, base = configs(sweep, ["--data-root", str(div2k)], tmp_path, recipe="paper")
    assert base.data.dataset == "div2k" and base.optim.steps_per_epoch is None
    err = capsys.readouterr().err
    assert "trained on DIV2K only" in err and "give --flickr2k-root" in err
    sweep_dir = SweepConfig(name="s", storage=str(tmp_path / "runs"))
    Path(sweep_dir.directory).mkdir(parents=True)
    (Path(sweep_dir.directory) / "summary.md").write_text("# table\n")
    write_record(spec, ["--recipe", "paper", "--data-root", str(div2k)], TrainConfig(), sweep_dir)
    summary = (Path(sweep_dir.directory) / "summary.md").read_text()
    assert "- not the paper's: trained on DIV2K only" in summary and "--flickr2k-root" in summary
    write_record(spec, ["--recipe", "paper", "--flickr2k-root", "F"], TrainConfig(), sweep_dir)
    assert (Path(sweep_dir.directory) / "summary.md").read_text().count("trained on DIV2K only") == 1


@pytest.mark.parametrize("argv, match", [
    (["--train-set", "df2k"], "--train-set df2k needs --flickr2k-root"),
    (["--flickr2k-root", "{tmp}/data/DIV2K"], r"--flickr2k-root .*DIV2K: no Flickr2K_HR/ there"),
    (["--train-set", "df2k", "--flickr2k-root", "{tmp}/nowhere"], r"--flickr2k-root .*nowhere: no Flickr2K_HR/"),
    (["--train-set", "div2k", "--flickr2k-root", "{tmp}/data/Flickr2K"], "with --train-set div2k would not be read"),
])
@pytest.mark.parametrize("sweep", ["dvmsr_div2k", "mtkd_div2k"])
def test_flags_that_do_not_fit_are_refused_before_any_data_is_looked_for(sources, tmp_path, sweep, argv, match):
    div2k, _ = sources
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    spec = SWEEPS[sweep]()
    args = sweep_parser(spec, None).parse_args(["--cache-dir", str(tmp_path / "cache"), "--data-root", str(div2k),
                                                *argv])
    with pytest.raises(UserError, match=match):
        spec.check(args)
    assert not df2k_root(tmp_path).exists()


def test_smoke_refuses_the_df2k_flags(sources, tmp_path):
    spec = SWEEPS["dvmsr_div2k"]()
    parser = sweep_parser(spec, None)
    for argv in (["--flickr2k-root", str(sources[1])], ["--train-set", "df2k"]):
        with pytest.raises(UserError, match="--smoke runs on built-in data"):
            check_flags(spec, parser, parser.parse_args(["--smoke", *argv]))
