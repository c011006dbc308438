"""ViMD (seed 000): SRVM-Net (raykd/models/srvm.py) and the vimd method (raykd/methods/vimd.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from raykd.data.views import LowResolution
from raykd.methods import create_method, method_defaults
from raykd.models import create_model
from raykd.models.features import capture, output_shapes
from raykd.models.srvm import SRVMNet
from raykd.teachers.cache import TeacherCache
from raykd.teachers.sources import CachedTeacher, run_teacher
from raykd.train.checkpoint import save_checkpoint
from raykd.train.loop import train

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
    assert out["logits"].shape == (3, CLASSES)
    assert out["sr"].shape == (3, 3, HR, HR)  # LR * 4
    # batch-first (B, layers, tokens, dim): 4 layers, a 2 x 2 patch grid plus the class token, dim 48
    assert out["hidden"].shape == ref["hidden"].shape == (3, 4, 5, 48)
    probed = output_shapes(student, ["hidden"], (3, LR, LR)), output_shapes(teacher, ["hidden"], (3, HR, HR))
    assert probed[0]["hidden"] == probed[1]["hidden"] == (4, 5, 48)
    torch.testing.assert_close(student(lr), out["logits"])
    # the hidden state of sample b is row b: the stack is batch-first, not layer-first
    with torch.no_grad():
        alone = capture(student.eval(), lr[1:2], ["hidden"])["hidden"]
        batch = capture(student, lr, ["hidden"])["hidden"]
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-4, atol=1e-5)


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
    x = (rgb - MEAN) / STD
    with torch.no_grad():
        logits = net(x)
        expected = vim((F.interpolate(rgb, scale_factor=4, mode="nearest") - MEAN) / STD)
    torch.testing.assert_close(seen["rgb"], rgb)
    torch.testing.assert_close(logits, expected)


def test_pretrained_sr_sub_network_is_loaded_and_frozen(tmp_path):
    torch.manual_seed(3)
    sr = create_model("srresnet", scale=4, n_blocks=2, n_feats=16)
    path = tmp_path / "srresnet.safetensors"
    save_file({k: v.contiguous() for k, v in sr.state_dict().items()}, str(path))

    student = create_model("srvm_micro", num_classes=CLASSES, img_size=HR, sr_checkpoint=path)
    for name, value in sr.state_dict().items():
        torch.testing.assert_close(student.sr.state_dict()[name], value)
    student.train()
    assert not student.sr.training and student.classifier.training  # BN statistics stay the pre-trained ones
    student(_images(2)[1]).logsumexp(1).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in student.sr.parameters())
    assert student.classifier.patch_embed.proj.weight.grad.abs().sum() > 0

    tuned = create_model("srvm_micro", num_classes=CLASSES, img_size=HR, sr_checkpoint=path, freeze_sr=False)
    tuned(_images(2)[1]).logsumexp(1).sum().backward()
    assert tuned.sr.head[0].weight.grad.abs().sum() > 0
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

    method = create_method("vimd", alpha=alpha, beta=beta, T=T)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    losses = method({"logits": t(zs), "hidden": t(hs)}, {"logits": t(zt), "hidden": t(ht)}, torch.tensor(y), 1)
    assert set(losses) == {"ce", "kd", "hidden"}
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-9)
    assert losses["kd"].item() == pytest.approx(alpha * kl, rel=1e-9)
    assert losses["hidden"].item() == pytest.approx(alpha * beta * hidden, rel=1e-9)
    assert method_defaults("vimd") == {"alpha": 1.0, "beta": 20.0, "T": 4.0}
    assert method.student_input == "lr"
    assert method.teacher_outputs() == method.student_outputs() == ("logits", "hidden")


def test_gradients_reach_the_student_only():
    teacher, student = _pair()
    teacher.requires_grad_(True)  # even a teacher left trainable must receive nothing
    hr, lr = _images(4)
    method = create_method("vimd")
    losses = method(capture(student, lr, ["hidden"]), capture(teacher, hr, ["hidden"]),
                    torch.tensor([0, 1, 2, 3]), 1)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.sr.head[0].weight.grad.abs().sum() > 0  # no pre-trained SR weights: trained jointly
    assert student.classifier.layers[0].mixer.in_proj.weight.grad.abs().sum() > 0


def test_bind_requires_hidden_states_of_one_shape():
    teacher, student = _pair(depth=2)
    method = create_method("vimd")
    s = output_shapes(student, method.student_outputs(), (3, LR, LR))
    t = output_shapes(teacher, method.teacher_outputs(), (3, HR, HR))
    with pytest.raises(ValueError, match=r"hidden states \(2, 5, 48\) and teacher hidden states \(4, 5, 48\)"):
        method.bind(s, t)
    with pytest.raises(ValueError, match="provided no 'hidden'"):
        method.bind(s, {"logits": t["logits"]})


def test_distillation_steps_reduce_the_vimd_loss():
    teacher, student = _pair()
    hr, lr = _images(8)
    target = torch.arange(8) % CLASSES
    method = create_method("vimd")
    with torch.no_grad():
        t_out = run_teacher(teacher, hr, method.teacher_outputs())
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    history = []
    for _ in range(12):
        losses = method(capture(student, lr, method.student_outputs()), t_out, target, 1)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert history[-1]["hidden"] < 0.5 * history[0]["hidden"]
    assert sum(history[-1].values()) < 0.6 * sum(history[0].values())


def test_hidden_states_are_served_batch_first_live_and_cached(tmp_path):
    teacher, _ = _pair()
    hr, _ = _images(4)
    outputs = ("hidden", "logits")
    live = run_teacher(teacher, hr, outputs)  # what an in-process or actor (live) teacher returns
    assert live["hidden"].shape == (4, 4, 5, 48)
    index, view = np.array([10, 11, 12, 13]), np.zeros(4, dtype=np.int16)
    # the service stores one row per (sample, view): exactly the batch-first rows
    entry = TeacherCache(tmp_path).save("a" * 64, index, view, {k: v.numpy() for k, v in live.items()})
    assert entry.shapes["hidden"] == (4, 5, 48)
    batch = {"index": torch.tensor([12, 10]), "view": torch.tensor([0, 0])}
    cached = CachedTeacher(entry, outputs).request(batch)()
    torch.testing.assert_close(cached["hidden"], live["hidden"][[2, 0]])
    torch.testing.assert_close(cached["logits"], live["logits"][[2, 0]])


@pytest.fixture
def teacher_checkpoint(tmp_path):
    torch.manual_seed(0)
    teacher = create_model("vim_micro", num_classes=10, img_size=HR)
    return save_checkpoint(tmp_path / "teacher", model=teacher,
                           meta={"model": "vim_micro", "model_kwargs": {"num_classes": 10, "img_size": HR}})


def _train_srvm(monkeypatch, method: str, teacher: str | None, **extra) -> tuple[dict, set[int]]:
    """Train srvm_micro for two steps on the digits demo; returns the metrics and the input sizes it was fed."""
    sizes = set()
    super_resolve = SRVMNet.super_resolve

    def spy(self, x):
        sizes.add(x.shape[-1])
        return super_resolve(self, x)

    monkeypatch.setattr(SRVMNet, "super_resolve", spy)
    metrics = train(dict(model="srvm_micro", model_kwargs={"img_size": HR}, method=method, teacher=teacher,
                         data="demo", image_size=HR, lr_factor=4, lr_mode="down", epochs=1, steps_per_epoch=2,
                         batch_size=8, optimizer="adam", lr=1e-3, check_data=False, **extra))
    return metrics, sizes


def test_training_loop_distils_an_lr_srvm_student_with_vimd(monkeypatch, teacher_checkpoint):
    # vimd's own student_input is "lr": SRVM-Net gets the 8 x 8 image (training and evaluation), the teacher 32 x 32
    metrics, sizes = _train_srvm(monkeypatch, "vimd", str(teacher_checkpoint))
    assert {"train_ce", "train_kd", "train_hidden"} <= set(metrics) and metrics["train_hidden"] > 0
    assert sizes == {LR}


@pytest.mark.parametrize("method", ["none", "kd"])
def test_baselines_train_the_same_lr_student_when_the_config_says_so(monkeypatch, teacher_checkpoint, method):
    # sweeps/vimd_cub.py compares methods for one LR student: TrainConfig.student_input overrides the method's "hr"
    metrics, sizes = _train_srvm(monkeypatch, method, str(teacher_checkpoint) if method == "kd" else None,
                                 student_input="lr")
    assert sizes == {LR} and metrics["train_ce"] > 0
