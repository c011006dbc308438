"""Bad files a user gives (weights that are truncated, damaged, empty or not weights at all; a class folder without
training images) are refused in one line that names the file and says what would be right, before any work."""
from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from raykd import cli
from raykd.config import DataConfig
from raykd.console import UserError
from raykd.data import classification
from raykd.data.arrays import load_split
from raykd.models import create_model
from raykd.models.weights import MODEL_FILE, load_weights

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(19)
TORCH_FILE = "not a PyTorch weights file (truncated or another format); expected a .pth/.pt saved by torch.save or a " \
             ".safetensors file"
OBJECTS = ("holds Python objects besides tensors (argparse.Namespace); raykd loads weights only (torch.load "
           "weights_only=True) — re-save the state_dict with torch.save(model.state_dict(), path)")


def small_model() -> torch.nn.Module:
    return create_model("msrresnet", scale=2, n_blocks=1, n_feats=4)


def saved(path: Path, obj: object, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def with_damaged_pickle(path: Path) -> Path:
    """``path`` (a torch.save zip) with its pickle overwritten in place, so that its CRC no longer matches."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith("/data.pkl"))
    name_len, extra_len = struct.unpack_from("<HH", data, member.header_offset + 26)
    start = member.header_offset + 30 + name_len + extra_len
    data[start:start + member.file_size] = b"\xff" * member.file_size
    path.write_bytes(bytes(data))
    return path


def bad_weights(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Every kind of bad weights file, with the message (after its path) that says what is wrong."""
    state = small_model().state_dict()
    random_bytes = b"\x00" + RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes()  # neither a zip nor a pickle
    (tmp_path / "random.pth").write_bytes(random_bytes)
    (tmp_path / "pickle_like.pth").write_bytes(b"\x80" + random_bytes)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    safetensors.torch.save_file(state, str(tmp_path / "cut.safetensors"))
    (tmp_path / "no_weights_here").mkdir()
    with_args = {"params": state, "args": argparse.Namespace(lr=0.1)}
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    empty = "is empty (0 bytes: an interrupted download or copy?); expected a .pth/.pt saved by torch.save or a " \
            ".safetensors file"
    return {
        "truncated .pth": (truncated(saved(tmp_path / "cut.pth", state)), f": {TORCH_FILE}"),
        "truncated pre-1.6 .pth": (truncated(saved(tmp_path / "cut_legacy.pth", state,
                                                   _use_new_zipfile_serialization=False)), f": {TORCH_FILE}"),
        "random bytes": (tmp_path / "random.pth", f": {TORCH_FILE}"),
        "random bytes after a pickle's first byte": (tmp_path / "pickle_like.pth", f": {TORCH_FILE}"),
        "damaged pickle": (with_damaged_pickle(saved(tmp_path / "damaged.pth", state)),
                           ": truncated or damaged PyTorch weights file (damaged/data.pkl fails its checksum); "
                           "expected a .pth/.pt saved by torch.save or a .safetensors file"),
        "pickled objects": (saved(tmp_path / "with_args.pth", with_args), f" {OBJECTS}"),
        "pickled objects, pre-1.6": (saved(tmp_path / "with_args_legacy.pth", with_args,
                                           _use_new_zipfile_serialization=False), f" {OBJECTS}"),
        "TorchScript": (tmp_path / "scripted.pt", " is a TorchScript archive (torch.jit.save), not weights; re-save "
                                                  "the state_dict with torch.save(model.state_dict(), path)"),
        "zero-byte .pth": (tmp_path / "empty.pth", f" {empty}"),
        "zero-byte .safetensors": (tmp_path / "empty.safetensors", f" {empty}"),
        "truncated .safetensors": (truncated(tmp_path / "cut.safetensors"),
                                   ": truncated or damaged safetensors file (Error while deserializing header: "),
        "directory": (tmp_path / "no_weights_here", f" is a directory without {MODEL_FILE}: give a weights file "
                                                     "(.pth/.pt/.safetensors) or a raykd checkpoint directory"),
    }


def test_every_bad_weights_file_is_one_user_error_naming_it(tmp_path) -> None:
    for case, (path, said) in bad_weights(tmp_path).items():
        model = small_model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(UserError) as caught:
            load_weights(model, path)
        message = str(caught.value)
        assert message.startswith(f"{path}{said}"), (case, message)
        assert "\n" not in message and "weights_only=False" not in message and "`weights_only`" not in message, case
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), case


def test_the_good_files_beside_them_still_load(tmp_path) -> None:
    state = small_model().state_dict()
    safetensors.torch.save_file(state, str(tmp_path / "good.safetensors"))
    for path in (saved(tmp_path / "good.pth", {"params_ema": state}), tmp_path / "good.safetensors",
                 saved(tmp_path / "good_legacy.pth", state, _use_new_zipfile_serialization=False)):
        model = load_weights(small_model(), path)
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), path


def eval_sr_argv(weights: Path, tmp_path: Path) -> list[str]:
    return ["eval-sr", "--model", "msrresnet", "--model-kwargs", '{"n_blocks": 1, "n_feats": 4}', "--weights",
            str(weights), "--set", str(tmp_path), "--scale", "2"]


def test_the_command_line_says_it_in_one_line(tmp_path, capsys) -> None:
    for case, (path, said) in bad_weights(tmp_path).items():
        assert cli.main(eval_sr_argv(path, tmp_path)) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"raykd: error: {path}{said}"), (case, err)


def test_a_bad_teacher_weights_file_is_said_as_it_is_not_as_a_misfit(tmp_path) -> None:
    from raykd.teachers.spec import TeacherSpec

    path, said = bad_weights(tmp_path)["truncated .pth"]
    with pytest.raises(UserError) as caught:
        TeacherSpec(name="t", model="resnet8", model_kwargs={"num_classes": 3}, checkpoint=str(path)).load()
    assert str(caught.value).startswith(f"{path}{said}") and "do not fit" not in str(caught.value)


def test_a_real_process_prints_exactly_that_line(tmp_path) -> None:
    path, said = bad_weights(tmp_path)["pickled objects"]
    done = subprocess.run([sys.executable, "-m", "raykd.cli", *eval_sr_argv(path, tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"raykd: error: {path}{said}"]
    assert done.stdout == ""


# --- class folders without training images ------------------------------------------------------------------


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any image is decoded: the refusal comes first."""
    def decode(path):
        raise AssertionError(f"{path} was decoded")

    monkeypatch.setattr(classification, "_read_rgb", decode)


def imagefolder(root: Path, classes: dict[str, int], split: str = "train") -> Path:
    for name, n in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            image(root / split / name / f"{j}.png")
    return root


def test_an_imagefolder_class_without_training_images_is_refused(tmp_path, no_decoding) -> None:
    root = imagefolder(tmp_path / "birds", {"crow": 2, "owl": 0, "wren": 1})
    (root / "train" / "owl" / "notes.txt").write_text("not an image")
    data = DataConfig(dataset="imagefolder", root=str(root), image_size=8)
    with pytest.raises(UserError) as caught:
        load_split(data, "train", None)
    assert str(caught.value) == (
        f"no training images ({', '.join(classification.IMAGE_EXTENSIONS)}) in 1 of 3 class folders: "
        f"{root / 'train' / 'owl'}; put images in each, or remove the folder")


def test_many_empty_class_folders_are_counted_and_a_few_named(tmp_path, no_decoding) -> None:
    root = imagefolder(tmp_path / "birds", {"a": 1, **{f"empty{i}": 0 for i in range(5)}})
    with pytest.raises(UserError) as caught:
        load_split(DataConfig(dataset="imagefolder", root=str(root), image_size=8), "train", None)
    shown = ", ".join(str(root / "train" / f"empty{i}") for i in range(3))
    assert f"in 5 of 6 class folders: {shown} and 2 more; put images in each" in str(caught.value)


def test_a_val_split_may_lack_a_class(tmp_path) -> None:
    root = imagefolder(tmp_path / "birds", {"crow": 2, "owl": 1})
    imagefolder(root, {"crow": 1, "owl": 0}, split="val")
    val = load_split(DataConfig(dataset="imagefolder", root=str(root), image_size=8), "val", None)
    assert val.labels.tolist() == [0]


def tinyimagenet(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(train) + "\n")
    for wnid, n in train.items():
        (root / "train" / wnid / "images").mkdir(parents=True)
        for j in range(n):
            image(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG")
    names = [(f"val_{wnid}_{j}.JPEG", wnid) for wnid, n in val.items() for j in range(n)]
    for name, _ in names:
        image(root / "val" / "images" / name)
    (root / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t7\t7\n" for n, w in names))
    return root


def test_a_tinyimagenet_class_without_training_images_is_refused(tmp_path, no_decoding) -> None:
    root = tinyimagenet(tmp_path / "tiny-imagenet-200", {"n01": 2, "n02": 0}, {"n01": 1, "n02": 1})
    with pytest.raises(UserError) as caught:
        load_split(DataConfig(dataset="tinyimagenet", root=str(root), image_size=8), "train", None)
    assert str(caught.value).startswith("no training images (.jpg, ") and str(caught.value).endswith(
        f"in 1 of 2 class folders: {root / 'train' / 'n02' / 'images'}; put each class's images in its folder, or "
        f"remove the class (its train/<wnid> folder and its line in {root / 'wnids.txt'})")


def test_a_tinyimagenet_class_without_val_images_is_fine(tmp_path) -> None:
    root = tinyimagenet(tmp_path / "tiny-imagenet-200", {"n01": 1, "n02": 1}, {"n01": 2})
    assert load_split(DataConfig(dataset="tinyimagenet", root=str(root), image_size=8), "val", None).labels.tolist() \
        == [0, 0]


def test_raykd_train_refuses_it_in_one_line(tmp_path, capsys, no_decoding) -> None:
    root = imagefolder(tmp_path / "birds", {"crow": 1, "owl": 0})
    argv = ["train", "--data", "imagefolder", "--data-root", str(root), "--image-size", "8", "--out",
            str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raykd: error: no training images") and str(root / "train" / "owl") \
        in err[0], err
