from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raykd.models import create_model
from raykd.models.features import capture, output_shapes, stage_names


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture
def resnet8() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10).eval()


def test_raykd_net_outputs_match_manual_forward(resnet8: nn.Module) -> None:
    m = resnet8
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = capture(m, x, ["penultimate", "stage:0", "stage:-1", "layer2"])
        stem = F.relu(m.bn1(m.conv1(x)))
        s0 = m.layer1(stem)
        s1 = m.layer2(s0)
        s2 = m.layer3(s1)
        pooled = s2.mean(dim=(2, 3))
        logits = m.fc(pooled)
    assert list(out) == ["logits", "penultimate", "stage:0", "stage:-1", "layer2"]
    torch.testing.assert_close(out["stage:0"], s0)
    torch.testing.assert_close(out["layer2"], s1)
    torch.testing.assert_close(out["stage:-1"], s2)
    torch.testing.assert_close(out["penultimate"], pooled)
    torch.testing.assert_close(out["logits"], logits)
    assert out["stage:-1"].shape == (2, 64, 8, 8)


def test_timm_model_stages_and_penultimate() -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10, pretrained=False).eval()
    assert stage_names(model) == ("act1", "layer1", "layer2", "layer3", "layer4")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = capture(model, x, ["penultimate", "stage:-1", "stage:0"])
        expected_logits = model(x)
    assert out["stage:0"].shape == (2, 64, 32, 32)
    assert out["stage:-1"].shape == (2, 512, 2, 2)
    torch.testing.assert_close(out["penultimate"], out["stage:-1"].mean(dim=(2, 3)))
    torch.testing.assert_close(model.fc(out["penultimate"]), out["logits"])
    torch.testing.assert_close(out["logits"], expected_logits)
    assert hook_count(model) == 0


def test_hooks_do_not_leak_between_calls(resnet8: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    first = capture(resnet8, x, ["stage:0"])
    assert hook_count(resnet8) == 0
    second = capture(resnet8, x, ["penultimate"])
    assert hook_count(resnet8) == 0
    assert set(first) == {"logits", "stage:0"}
    assert set(second) == {"logits", "penultimate"}


class Boom(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("boom")


def test_exception_mid_forward_leaves_no_hooks(resnet8: nn.Module) -> None:
    resnet8.layer2[0].conv1 = Boom()  # runs after the stage-0 hook fired, before the head's pre-hook
    with pytest.raises(RuntimeError, match="boom"):
        capture(resnet8, torch.randn(2, 3, 32, 32), ["stage:0", "penultimate"])
    assert hook_count(resnet8) == 0


def test_gradients_flow_unless_no_grad(resnet8: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    out = capture(resnet8, x, ["stage:1"])
    assert out["stage:1"].requires_grad
    out["stage:1"].pow(2).mean().backward()
    assert resnet8.conv1.weight.grad is not None
    with torch.no_grad():
        frozen = capture(resnet8, x, ["stage:1"])
    assert not frozen["stage:1"].requires_grad
    with torch.inference_mode():
        assert capture(resnet8, x, ["stage:1"])["stage:1"].shape == (2, 32, 16, 16)


def test_unknown_names_list_valid_stages(resnet8: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32)
    for bad in ("stage:3", "stage:-4", "stage:last", "layer9"):
        with pytest.raises(ValueError, match=r"'layer1', 'layer2', 'layer3'"):
            capture(resnet8, x, [bad])
    with pytest.raises(TypeError, match="sequence of output names"):
        capture(resnet8, x, "stage:0")  # type: ignore[arg-type]
    assert hook_count(resnet8) == 0


def test_capture_later_modified_in_place_is_rejected(resnet8: nn.Module) -> None:
    # bn1's output is overwritten by the in-place ReLU that follows it inside the block.
    with pytest.raises(RuntimeError, match="modified in place"):
        capture(resnet8, torch.randn(1, 3, 32, 32), ["layer1.0.bn1"])
    assert hook_count(resnet8) == 0


class SharedAct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Tanh()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.act(self.act(x)))

    def get_classifier(self) -> nn.Linear:
        return self.fc


def test_module_running_twice_is_ambiguous() -> None:
    model = SharedAct()
    x = torch.randn(2, 4)
    out = capture(model, x, ["penultimate"])
    torch.testing.assert_close(out["penultimate"], torch.tanh(torch.tanh(x)))
    with pytest.raises(RuntimeError, match="ran 2 times"):
        capture(model, x, ["act"])
    assert hook_count(model) == 0


class WithExtract(nn.Module):
    """Stands in for a model (like Vim) that exposes hidden states through its own ``extract``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)

    def extract(self, x: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
        out = {"hidden:0": 2 * x}
        return {"output": self.fc(x), **{n: out[n] for n in names if n in out}}


def test_models_with_extract_get_the_whole_request() -> None:
    model = WithExtract()
    x = torch.randn(2, 4)
    out = capture(model, x, ["hidden:0"])
    torch.testing.assert_close(out["hidden:0"], 2 * x)
    torch.testing.assert_close(out["logits"], model.fc(x))
    assert set(out) == {"logits", "hidden:0"}
    # the model's own output ("output" in the extract protocol) comes back under the caller's name
    image = capture(model, x, ["hidden:0"], output="image")
    assert set(image) == {"image", "hidden:0"}
    torch.testing.assert_close(image["image"], model.fc(x))
    with pytest.raises(KeyError, match="hidden:7"):
        capture(model, x, ["hidden:7"])


class ExtractWithoutOutput(WithExtract):
    """An ``extract`` that forgets the protocol's ``"output"`` key."""

    def extract(self, x: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
        return {"logits": self.fc(x), "hidden:0": 2 * x}


def test_extract_must_return_the_models_own_output() -> None:
    with pytest.raises(KeyError, match="'output'"):
        capture(ExtractWithoutOutput(), torch.randn(2, 4), ["hidden:0"])


def test_ddp_wrapped_models(tmp_path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = create_model("resnet8", num_classes=10)
        ddp = DDP(net)
        wrapper_calls = []
        ddp.register_forward_hook(lambda m, a, o: wrapper_calls.append(1))
        x = torch.randn(2, 3, 32, 32)
        out = capture(ddp, x, ["stage:-1", "penultimate"])
        assert len(wrapper_calls) == 1
        assert out["stage:-1"].shape == (2, 64, 8, 8)
        torch.testing.assert_close(net.fc(out["penultimate"]), out["logits"])
        out["logits"].sum().backward()  # DDP's reducer was prepared by its own forward
        assert net.fc.weight.grad is not None
        assert hook_count(net) == 0

        inner = WithExtract()
        wrapped = DDP(inner)
        wrapped.register_forward_hook(lambda m, a, o: wrapper_calls.append(2))
        got = capture(wrapped, torch.ones(2, 4), ["hidden:0"])
        assert wrapper_calls[-1] == 2
        torch.testing.assert_close(got["hidden:0"], torch.full((2, 4), 2.0))
        assert "forward" not in inner.__dict__  # the temporary forward was taken off again
    finally:
        dist.destroy_process_group()


def test_output_shapes_probe_restores_modes_and_statistics(resnet8: nn.Module) -> None:
    resnet8.train()
    resnet8.layer1.eval()  # a frozen part inside a training model must stay frozen
    running = resnet8.bn1.running_mean.clone()
    shapes = output_shapes(resnet8, ["penultimate", "stage:0", "stage:-1"], (3, 32, 32))
    assert shapes == {"logits": (10,), "penultimate": (64,), "stage:0": (16, 32, 32), "stage:-1": (64, 8, 8)}
    assert resnet8.training and resnet8.layer2.training and resnet8.bn1.training
    assert not resnet8.layer1.training and not resnet8.layer1[0].bn1.training
    torch.testing.assert_close(resnet8.bn1.running_mean, running)
    assert hook_count(resnet8) == 0


def test_output_shapes_of_vgg_at_both_resolutions() -> None:
    vgg = create_model("vgg8", num_classes=100)
    for side in (32, 64):
        shapes = output_shapes(vgg, ["stage:0", "stage:-1", "penultimate"], (3, side, side))
        assert shapes["stage:0"] == (64, side, side)
        assert shapes["stage:-1"] == (512, 4, 4)
        assert shapes["penultimate"] == (512,)


def test_output_shapes_name_the_models_own_output_as_asked() -> None:
    assert output_shapes(WithExtract(), ["hidden:0"], (4,), output="image") == {"image": (3,), "hidden:0": (4,)}
    sr = create_model("edsr_baseline", scale=2, n_resblocks=1, n_feats=8)
    assert output_shapes(sr, [], (3, 6, 5), output="image") == {"image": (3, 12, 10)}
