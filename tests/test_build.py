"""raykd.models.build: one builder for every network, from each kind of weights, verified once per load."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import safetensors.torch
import torch

from raykd.console import UserError
from raykd.models import create_model
from raykd.models.build import build_model, checkpoint_entry
from raykd.models.checkpoint import META_FILE, MODEL_FILE, CheckpointError
from raykd.registry import UntrustedPlugin
from raykd.teachers.spec import TeacherSpec
from raykd.teachers.trained import TrainedTeachers
from raykd.train.checkpoint import save_checkpoint

KWARGS = {"num_classes": 10}


def same(a: torch.nn.Module, b: torch.nn.Module, skip: str = "\0") -> None:
    theirs = b.state_dict()
    for key, value in a.state_dict().items():
        if not key.startswith(skip):
            torch.testing.assert_close(value, theirs[key], msg=key)


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    net = create_model("resnet8", **KWARGS)
    path = save_checkpoint(tmp_path / "ckpt", model=net, meta={"model": "resnet8", "model_kwargs": KWARGS})
    return net, path


def test_no_weights_is_the_models_own_initialisation() -> None:
    torch.manual_seed(1)
    built = build_model("resnet8", KWARGS)
    torch.manual_seed(1)
    same(built, create_model("resnet8", **KWARGS))
    assert built.training and all(p.requires_grad for p in built.parameters())


def test_a_checkpoint_directory_is_loaded_and_its_model_named_by_its_meta(trained) -> None:
    net, path = trained
    name, kwargs = checkpoint_entry(path)
    assert (name, kwargs) == ("resnet8", KWARGS)
    built = build_model(name, kwargs, path, frozen=True, device="cpu")
    same(built, net)
    assert not built.training and not any(p.requires_grad for p in built.parameters())


def test_a_released_file_goes_through_its_key_map(tmp_path) -> None:
    net = create_model("msrresnet", scale=2, n_blocks=1, n_feats=4)
    torch.save({"params": net.state_dict()}, tmp_path / "msrresnet_x2.pth")  # BasicSR's wrapper
    built = build_model("msrresnet", {"scale": 2, "n_blocks": 1, "n_feats": 4}, tmp_path / "msrresnet_x2.pth",
                        keymap="basicsr_msrresnet")
    same(built, net)
    with pytest.raises(ValueError, match="maps into MSRResNet, not SRResNet"):  # the key map checks its target
        build_model("srresnet", {"scale": 2}, tmp_path / "msrresnet_x2.pth", keymap="basicsr_msrresnet")


def test_safetensors_bytes_and_a_state_dict_load_strictly() -> None:
    net = create_model("resnet8", **KWARGS)
    blob = safetensors.torch.save({k: v.contiguous() for k, v in net.state_dict().items()})
    same(build_model("resnet8", KWARGS, blob), net)
    same(build_model("resnet8", KWARGS, net.state_dict()), net)
    with pytest.raises(ValueError, match="does not fit CifarResNet"):
        build_model("resnet14", KWARGS, blob)


def test_a_checkpoint_is_hashed_once_per_load(trained, hashes) -> None:
    """Verified once: building from it, a teacher spec of it, its identity and its trained-teacher store entry hash
    its weights file once between them, and so does reading its bytes for the teacher actors (the process
    remembers what it verified while the files stat the same)."""
    _, path = trained
    stat = (path / MODEL_FILE).stat()
    os.utime(path / MODEL_FILE, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: verified afresh
    build_model("resnet8", KWARGS, path)
    assert len(hashes) == 1
    spec = TeacherSpec.from_checkpoint(path)  # verified against its manifest: already done
    spec.identity()  # the verified manifest's digest: nothing hashed again
    assert len(hashes) == 1 and spec.weights_sha256 == hashlib.new("sha256", (path / MODEL_FILE).read_bytes()
                                                                   ).hexdigest()
    spec.weights_bytes()  # a load, verified: already done
    assert TrainedTeachers(path.parent).find(path) == spec  # the store's check is the spec's verification
    assert len(hashes) == 1


def test_a_damaged_checkpoint_is_refused_at_every_load(trained) -> None:
    _, path = trained
    data = (path / MODEL_FILE).read_bytes()
    (path / MODEL_FILE).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    with pytest.raises(CheckpointError, match="does not match the checkpoint's manifest"):
        build_model("resnet8", KWARGS, path)
    with pytest.raises(CheckpointError, match="does not match the checkpoint's manifest"):
        build_model("resnet8", {"num_classes": 3}, path, adapt_head=True)


def test_a_head_of_another_size_is_adapted(trained) -> None:
    net, path = trained
    torch.manual_seed(2)
    fresh = create_model("resnet8", num_classes=3)
    torch.manual_seed(2)
    built = build_model("resnet8", {"num_classes": 3}, path, adapt_head=True)
    same(built, net, skip="fc.")  # the body is the checkpoint's, the head the model's own initialisation
    torch.testing.assert_close(built.fc.weight, fresh.fc.weight)
    same(build_model("resnet8", KWARGS, path, adapt_head=True), net)  # a head that fits is loaded
    with pytest.raises(ValueError, match=r"fc\.weight: checkpoint \(10, 64\) vs model \(3, 64\).*adapt_head=True"):
        build_model("resnet8", {"num_classes": 3}, path)


def test_mistakes_name_the_value(tmp_path, trained) -> None:
    with pytest.raises(KeyError, match="unknown model 'resnet9'"):
        build_model("resnet9")
    (tmp_path / "bad.pth").write_bytes(b"not a weights file")
    with pytest.raises(UserError, match=f"{tmp_path / 'bad.pth'}: not a PyTorch weights file"):
        build_model("resnet8", KWARGS, tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match=f"weights {tmp_path / 'nowhere.pth'} do not exist"):
        build_model("resnet8", KWARGS, tmp_path / "nowhere.pth")
    with pytest.raises(UserError, match=r"weights 3 \(int\): expected a raykd checkpoint directory"):
        build_model("resnet8", KWARGS, 3)
    _, path = trained
    meta = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps({**meta, "model": "os:system"}))
    with pytest.raises(UntrustedPlugin, match="'os:system', an import path"):  # the trust-plugins rule holds
        checkpoint_entry(path)
