"""ViMD (raykd/methods/vimd.py, raykd/models/srvm.py) and its sweep (raykd/sweeps/vimd_cub.py) on v2: SRVM-Net's
LR input and hidden states, the loss and its Table II terms, training an LR student, the sweep's recipe and
ablation flags, the teacher's ImageNet start (head left out), and the smoke sweep end to end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from raykd.config import (DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig, TeacherConfig,
                          TrainConfig)
from raykd.data.views import LowResolution
from raykd.methods import create_method, method_class
from raykd.models import create_model
from raykd.models.features import capture, output_shapes
from raykd.models.srvm import SRVMNet
from raykd.sweeps import SWEEPS
from raykd.teachers.sources import run_teacher
from raykd.train.checkpoint import save_checkpoint
from raykd.train.loop import build_student, train
from raykd.tune.spec import sweep_parser, sweep_profile, sweep_config
from raykd.tune.spaces import teacher_needs
from raykd.tune.sweep import SweepPayload

ROOT = Path(__file__).resolve().parents[1]
HR, LR, CLASSES = 32, 8, 5
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _pair(seed: int = 0, depth: int = 4):
    torch.manual_seed(seed)
    teacher = create_model("vim_micro", num_classes=CLASSES, img_size=HR).eval().requires_grad_(False)
    student = create_model("srvm_micro", num_classes=CLASSES, img_size=HR, depth=depth)
    return teacher, student


def _images(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised HR images and their bicubic x4-down LR versions, as the classification task makes them."""
    rgb = torch.rand(n, 3, HR, HR, generator=torch.Generator().manual_seed(seed))
    return (rgb - MEAN) / STD, (LowResolution(4, "down")(rgb) - MEAN) / STD


def test_srvm_takes_lr_and_matches_the_hr_teachers_hidden_states():
    teacher, student = _pair()
    hr, lr = _images(3)
    assert lr.shape == (3, 3, LR, LR)
    out = capture(student, lr, ["hidden", "sr", "penultimate"])
    ref = capture(teacher, hr, ["hidden"])
    assert out["logits"].shape == (3, CLASSES) and out["sr"].shape == (3, 3, HR, HR)  # LR * 4
    # batch-first (B, layers, tokens, dim): 4 layers, a 2 x 2 patch grid plus the class token, dim 48
    assert out["hidden"].shape == ref["hidden"].shape == (3, 4, 5, 48)
    probed = output_shapes(student, ["hidden"], (3, LR, LR)), output_shapes(teacher, ["hidden"], (3, HR, HR))
    assert probed[0]["hidden"] == probed[1]["hidden"] == (4, 5, 48)
    with torch.no_grad():
        alone = capture(student.eval(), lr[1:2], ["hidden"])["hidden"]
        batch = capture(student, lr, ["hidden"])["hidden"]
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-4, atol=1e-5)  # row b is sample b


def test_sr_sub_network_sees_rgb_in_0_1_and_the_vim_normalised_input():
    seen = {}

    class Spy(nn.Module):
        def forward(self, rgb):
            seen["rgb"] = rgb
            return F.interpolate(rgb, scale_factor=4, mode="nearest")

    torch.manual_seed(0)
    vim = create_model("vim_micro", num_classes=CLASSES, img_size=HR).eval()
    net = SRVMNet(Spy(), vim).eval()
    rgb = torch.rand(2, 3, LR, LR)
    with torch.no_grad():
        logits = net((rgb - MEAN) / STD)
        expected = vim((F.interpolate(rgb, scale_factor=4, mode="nearest") - MEAN) / STD)
    torch.testing.assert_close(seen["rgb"], rgb)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("arch", ["srresnet", "msrresnet"])
def test_pretrained_sr_sub_network_of_either_arch_is_loaded_and_frozen(tmp_path, arch):
    torch.manual_seed(3)
    sr = create_model(arch, scale=4, n_blocks=2, n_feats=16)  # srvm_micro's SR size
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in sr.state_dict().items()}, str(path))
    student = create_model("srvm_micro", num_classes=CLASSES, img_size=HR, sr_arch=arch, sr_checkpoint=path)
    for name, value in sr.state_dict().items():
        torch.testing.assert_close(student.sr.state_dict()[name], value)
    student.train()
    assert not student.sr.training and student.classifier.training  # the pre-trained statistics stay
    student(_images(2)[1]).logsumexp(1).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in student.sr.parameters())
    assert student.classifier.patch_embed.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sr_checkpoint"):
        create_model("srvm_micro", num_classes=CLASSES, freeze_sr=True)


def test_vimd_loss_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    B, N, L, D, C = 3, 4, 5, 6, 7
    zs, zt = rng.normal(size=(B, C)), rng.normal(size=(B, C)) * 2
    hs, ht = rng.normal(size=(B, N, L, D)), rng.normal(size=(B, N, L, D))
    y = np.array([0, 3, 6])
    alpha, beta, T = 0.7, 5.0, 3.0

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ce = -log_softmax(zs)[np.arange(B), y].mean()
    log_ps, log_pt = log_softmax(zs / T), log_softmax(zt / T)
    kl = T**2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    hidden = sum(((ht[:, i] - hs[:, i]) ** 2).mean() for i in range(N))

    method = create_method("vimd", "cls", {"alpha": alpha, "beta": beta, "T": T})
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    losses = method({"logits": t(zs), "hidden": t(hs)}, {"logits": t(zt), "hidden": t(ht)}, torch.tensor(y), 1)
    assert set(losses) == {"ce", "kd", "hidden"}
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-9)
    assert losses["kd"].item() == pytest.approx(alpha * kl, rel=1e-9)
    assert losses["hidden"].item() == pytest.approx(alpha * beta * hidden, rel=1e-9)
    assert method_class("vimd").defaults() == {"alpha": 1.0, "beta": 20.0, "T": 4.0, "terms": "both"}
    assert method.student_input == "lr"
    assert method.teacher_outputs() == ("logits", "hidden") and method.student_outputs() == ("hidden",)


@pytest.mark.parametrize("terms, expected", [("both", {"ce", "kd", "hidden"}), ("logits", {"ce", "kd"}),
                                             ("hidden", {"ce", "hidden"})])
def test_table_ii_terms_pick_the_loss_terms_whatever_the_teacher_serves(terms, expected):
    """A sweep's teacher service serves the union of the outputs its methods may need (logits and hidden
    states): the terms must follow ``terms``, not what arrived."""
    method = create_method("vimd", "cls", {"terms": terms})
    g = torch.Generator().manual_seed(0)
    student = {"logits": torch.randn(2, 5, generator=g), "hidden": torch.randn(2, 4, 5, 6, generator=g)}
    teacher = {"logits": torch.randn(2, 5, generator=g), "hidden": torch.randn(2, 4, 5, 6, generator=g)}
    assert set(method(student, teacher, torch.tensor([0, 1]), 1)) == expected
    assert method.teacher_outputs() == {"both": ("logits", "hidden"), "logits": ("logits",),
                                        "hidden": ("hidden",)}[terms]
    assert ("hidden" in method.student_outputs()) == ("hidden" in expected)
    assert 0.0 in method_class("vimd").hparams["beta"].grid  # beta = 0: the logit-only column inside one sweep


def test_the_sweep_fixes_alpha_at_the_papers_1_and_grids_beta_over_its_10_20_30():
    space = method_class("vimd").search_space()
    assert "alpha" not in space and method_class("vimd").defaults()["alpha"] == 1.0
    assert {0.0, 10.0, 20.0, 30.0} <= set(space["beta"].grid)


def test_gradients_reach_the_student_only():
    teacher, student = _pair()
    teacher.requires_grad_(True)  # even a teacher left trainable must receive nothing
    hr, lr = _images(4)
    method = create_method("vimd")
    losses = method(capture(student, lr, ["hidden"]), capture(teacher, hr, ["hidden"]), torch.arange(4), 1)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.sr.head[0].weight.grad.abs().sum() > 0  # no pre-trained SR weights: trained jointly
    assert student.classifier.layers[0].mixer.in_proj.weight.grad.abs().sum() > 0


def test_bind_requires_hidden_states_of_one_shape():
    teacher, student = _pair(depth=2)
    method = create_method("vimd")
    s = output_shapes(student, ("logits", *method.student_outputs()), (3, LR, LR))
    t = output_shapes(teacher, method.teacher_outputs(), (3, HR, HR))
    with pytest.raises(ValueError, match=r"student 'hidden' \(2, 5, 48\) and teacher 'hidden' \(4, 5, 48\)"):
        method.bind(s, t)
    with pytest.raises(ValueError, match="provided no 'hidden'"):
        method.bind(s, {"logits": t["logits"]})


def test_distillation_steps_reduce_the_vimd_loss():
    teacher, student = _pair()
    hr, lr = _images(8)
    target = torch.arange(8) % CLASSES
    method = create_method("vimd")
    t_out = run_teacher(teacher, hr, method.teacher_outputs())
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    history = []
    for _ in range(12):
        losses = method(capture(student, lr, method.student_outputs()), t_out, target, 1)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert history[-1]["hidden"] < 0.5 * history[0]["hidden"]
    assert sum(history[-1].values()) < 0.6 * sum(history[0].values())


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    teacher = create_model("vim_micro", num_classes=10, img_size=HR)
    return save_checkpoint(tmp_path_factory.mktemp("vim") / "teacher", model=teacher,
                           meta={"model": "vim_micro", "model_kwargs": {"num_classes": 10, "img_size": HR}})


def _train_srvm(monkeypatch, tmp_path, method: MethodConfig, teacher: Path | None) -> tuple[dict, set[int]]:
    """Train srvm_micro for two steps on the digits demo; returns the metrics and the input sizes it was fed."""
    sizes = set()
    super_resolve = SRVMNet.super_resolve

    def spy(self, x):
        sizes.add(x.shape[-1])
        return super_resolve(self, x)

    monkeypatch.setattr(SRVMNet, "super_resolve", spy)
    cfg = TrainConfig(model=ModelConfig("srvm_micro", {"img_size": HR}), method=method,
                      data=DataConfig(dataset="demo", root=str(tmp_path / "digits"), image_size=HR, lr_factor=4,
                                      lr_mode="down"),
                      optim=OptimConfig(name="adam", lr=1e-3, weight_decay=0.0, epochs=1, batch_size=8,
                                        steps_per_epoch=2),
                      teacher=TeacherConfig(str(teacher)) if teacher is not None else None,
                      runtime=RuntimeConfig(device="cpu"))
    return train(cfg), sizes


def test_training_loop_distils_an_lr_srvm_student_with_vimd(monkeypatch, tmp_path, teacher_checkpoint):
    # vimd's own student_input is "lr": SRVM-Net gets the 8 x 8 image (training and evaluation), the teacher 32 x 32
    metrics, sizes = _train_srvm(monkeypatch, tmp_path, MethodConfig("vimd"), teacher_checkpoint)
    assert {"train_ce", "train_kd", "train_hidden"} <= set(metrics) and metrics["train_hidden"] > 0
    assert sizes == {LR}


@pytest.mark.parametrize("method", ["none", "kd"])
def test_baselines_train_the_same_lr_student_when_the_config_says_so(monkeypatch, tmp_path, teacher_checkpoint,
                                                                     method):
    # vimd_cub compares methods for one LR student: MethodConfig.student_input overrides the method's "hr"
    metrics, sizes = _train_srvm(monkeypatch, tmp_path, MethodConfig(method, student_input="lr"),
                                 teacher_checkpoint if method == "kd" else None)
    assert sizes == {LR} and metrics["train_ce"] > 0


def test_an_imagenet_vim_starts_the_teacher_without_its_1000_class_head(tmp_path):
    torch.manual_seed(1)
    imagenet = create_model("vim_micro", num_classes=1000, img_size=HR)
    path = tmp_path / "vim_t_midclstok.pth"
    torch.save({"model": imagenet.state_dict()}, path)  # hustvl/Vim's layout: {"model": state}

    class Task:
        def __init__(self, classes):
            self.classes = classes

        def model_kwargs(self):
            return {"num_classes": self.classes}

    model = ModelConfig("vim_micro", {"img_size": HR}, init_from=str(path), init_keymap="hustvl_vim")
    cub = build_student(TrainConfig(model=model), Task(200))
    assert cub.head.weight.shape == (200, 48)
    torch.testing.assert_close(cub.patch_embed.proj.weight, imagenet.patch_embed.proj.weight)
    torch.testing.assert_close(cub.layers[0].mixer.in_proj.weight, imagenet.layers[0].mixer.in_proj.weight)
    same = build_student(TrainConfig(model=model), Task(1000))  # a head that fits is loaded
    torch.testing.assert_close(same.head.weight, imagenet.head.weight)


def _spec_config(argv: list[str], tmp_path: Path):
    spec = SWEEPS["vimd_cub"]()
    args = sweep_parser(spec, None).parse_args(["--cache-dir", str(tmp_path / "cache"), *argv])
    data = spec.data(args)
    profile = sweep_profile(spec, args)
    base = spec.base(args, data, profile)
    return spec, args, base, sweep_config(spec, args, profile), profile


def test_sweep_flags_reach_the_recipe_the_sr_arch_and_the_teachers_start(tmp_path):
    init = tmp_path / "vim_t.pth"
    init.write_bytes(b"")
    spec, args, base, sweep, profile = _spec_config(["--smoke", "--sr-arch", "msrresnet", "--teacher-init",
                                                     str(init)], tmp_path)
    assert base.method == MethodConfig(student_input="lr") and sweep.name == "vimd_cub_smoke"
    assert base.model.kwargs["sr_arch"] == "msrresnet" and base.data.lr_mode == "down"
    teacher = spec.teacher_config(args, base, profile)
    assert teacher.model.init_from == str(init.resolve()) and teacher.model.init_keymap == "hustvl_vim"
    assert teacher.method == MethodConfig() and teacher.optim.epochs == profile.teacher_epochs

    cub = tmp_path / "CUB_200_2011"
    cub.mkdir()
    (cub / "images.txt").write_text("")
    _, _, released, _, _ = _spec_config(["--data-root", str(tmp_path), "--recipe", "released"], tmp_path)
    assert released.data.dataset == "cub200" and released.data.root == str(cub.resolve())
    assert (released.optim.name, released.optim.lr, released.optim.weight_decay) == ("adamw", 1e-5, 1e-8)
    assert (released.optim.batch_size, released.optim.epochs) == (16, 250)
    _, _, mixed, _, _ = _spec_config(["--data-root", str(cub), "--recipe", "released", "--lr", "3e-5",
                                      "--batch-size", "24"], tmp_path)
    assert (mixed.optim.name, mixed.optim.lr, mixed.optim.batch_size) == ("adamw", 3e-5, 24)
    _, _, default, _, _ = _spec_config(["--data-root", str(cub)], tmp_path)
    assert (default.optim.name, default.optim.lr, default.optim.batch_size) == ("adam", 5e-4, 32)


def test_vimd_terms_flag_fixes_terms_for_the_sweeps_vimd_trials(tmp_path):
    _, _, base, sweep, _ = _spec_config(["--smoke", "--vimd-terms", "hidden"], tmp_path)
    assert base.method == MethodConfig("vimd", {"terms": "hidden"}, student_input="lr")
    assert sweep.name == "vimd_cub_hidden_smoke"
    payload = SweepPayload(base, {}, {}, {}, None, 0, str(tmp_path))
    vimd = payload.trial({"method": "vimd", "vimd": {"alpha": 0.5, "beta": 0.0}}).cfg
    assert dict(vimd.method.params) == {"alpha": 0.5, "beta": 0.0, "terms": "hidden"}
    assert vimd.method.student_input == "lr"
    kd = payload.trial({"method": "kd", "kd": {"T": 2.0}}).cfg  # other methods keep their own params
    assert (kd.method.name, dict(kd.method.params)) == ("kd", {"T": 2.0})


@pytest.mark.parametrize(("terms", "needs"), [("both", ("hidden", "logits")), ("logits", ("logits",)),
                                              ("hidden", ("hidden",))])
def test_an_ablation_column_asks_the_teacher_only_for_the_outputs_its_terms_use(tmp_path, terms, needs):
    _, _, base, _, _ = _spec_config(["--smoke", "--vimd-terms", terms], tmp_path)
    fixed = base.method.params if base.method.name == "vimd" else None
    assert teacher_needs("vimd", "cls", fixed) == needs


@pytest.mark.slow
def test_smoke_sweep_runs_end_to_end_with_an_ablation_column(tmp_path):
    # a private local Ray: never join another Ray instance on this machine (its address file is shared)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}
    run = subprocess.run([sys.executable, str(ROOT / "sweeps" / "vimd_cub.py"), "--smoke", "--cache-dir",
                          str(tmp_path / "cache"), "--storage", str(tmp_path / "runs"), "--methods", "none", "vimd",
                          "--vimd-terms", "hidden", "--num-samples", "2", "--seeds", "0"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "runs" / "vimd_cub_hidden_smoke"
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["method"]) == {"none", "vimd"} and (table["status"] == "ok").all()
    assert set(table.loc[table["method"] == "vimd", "terms"]) == {"hidden"}
    assert "terms=hidden" in (out / "summary.md").read_text()
