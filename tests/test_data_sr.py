from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raykd.data.builtin import SR_DEMO_IMAGES, make_demo_sr
from raykd.data.degrade import imresize, modcrop
from raykd.data.sr import DIV2K, HRFolderSRDataset, PairedSRDataset, download_div2k, open_sr_dataset

RNG = np.random.default_rng(0)
SET5 = ("baby", "bird", "butterfly", "head", "woman")


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_paired(root: Path, scale: int, sizes: dict[str, tuple[int, int]], grey: tuple[str, ...] = ()) -> Path:
    """Random HR images and their MATLAB-bicubic LR partners in the benchmark layout."""
    for name, (h, w) in sizes.items():
        hr = RNG.integers(0, 256, (h, w) if name in grey else (h, w, 3), dtype=np.uint8)
        _write(root / "HR" / f"{name}.png", hr)
        _write(root / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png", imresize(modcrop(hr, scale), 1 / scale))
    return root


# --- real benchmark data -------------------------------------------------------------------------------------


def test_set5_paired_pairs_are_the_files(shared_data, tmp_path):
    root = shared_data / "sr" / "Set5"
    ds = PairedSRDataset(root, 4)
    assert [ds.name(i) for i in range(len(ds))] == list(SET5)
    for i, name in enumerate(SET5):
        lr, hr = ds.pair(i)
        assert lr.dtype == hr.dtype == np.uint8 and lr.shape[2] == hr.shape[2] == 3
        assert np.array_equal(hr, modcrop(_read(root / "HR" / f"{name}.png"), 4))
        assert np.array_equal(lr, _read(root / "LR_bicubic" / "X4" / f"{name}x4.png"))
        assert hr.shape[:2] == (4 * lr.shape[0], 4 * lr.shape[1]) and not ds.is_grey(i)
        assert ds.lr_size(i) == lr.shape[:2] and ds.hr_sizes[i] == hr.shape[:2]  # known from the headers

    # the fingerprint names the content, not the place: a copy agrees, a rewritten file or another scale does not
    copy = Path(shutil.copytree(root, tmp_path / "Set5"))
    assert PairedSRDataset(copy, 4).fingerprint() == ds.fingerprint()
    assert PairedSRDataset(copy, 3).fingerprint() != ds.fingerprint()
    Image.fromarray(_read(copy / "HR" / "baby.png")[:, ::-1]).save(copy / "HR" / "baby.png", compress_level=0)
    assert PairedSRDataset(copy, 4).fingerprint() != ds.fingerprint()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_hr_folder_regenerates_set5_lr_files_exactly(shared_data, scale):
    root = shared_data / "sr" / "Set5"
    ds = HRFolderSRDataset(root, scale)  # reads root/HR, ignores the LR files beside it
    paired = PairedSRDataset(root, scale)
    assert [ds.name(i) for i in range(len(ds))] == list(SET5)
    for i, name in enumerate(SET5):
        lr, hr = ds.pair(i)
        assert np.array_equal(lr, _read(root / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"))
        assert np.array_equal(hr, paired.pair(i)[1])
    assert ds.fingerprint() != paired.fingerprint()  # made LR is not the same data as LR files
    assert ds.fingerprint() != HRFolderSRDataset(root, scale + 1).fingerprint()


def test_hr_folder_takes_a_plain_folder_and_refuses_tiny_images(tmp_path):
    hr = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    _write(tmp_path / "plain" / "x.png", hr)
    ds = open_sr_dataset("hr_folder", tmp_path / "plain", 2)
    lr, got = ds.pair(0)
    assert np.array_equal(got, hr[:8, :6]) and np.array_equal(lr, imresize(modcrop(hr, 2), 0.5))
    _write(tmp_path / "plain" / "y.png", np.zeros((1, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"smaller than the scale 2.*y\.png \(1x5\)"):
        HRFolderSRDataset(tmp_path / "plain", 2)


def test_set14_greyscale_bridge_is_flagged_and_replicated(shared_data):
    ds = PairedSRDataset(shared_data / "sr" / "Set14", 4)
    grey = [ds.name(i) for i in range(len(ds)) if ds.is_grey(i)]
    assert grey == ["bridge"]
    lr, hr = ds.pair([ds.name(i) for i in range(len(ds))].index("bridge"))
    assert lr.shape[2] == hr.shape[2] == 3
    assert np.array_equal(hr[..., 0], hr[..., 1]) and np.array_equal(hr[..., 0], hr[..., 2])
    assert np.array_equal(hr[..., 0], modcrop(_read(shared_data / "sr" / "Set14" / "HR" / "bridge.png"), 4))


# --- layouts and their errors on generated data ---------------------------------------------------------------


def test_paired_modcrops_hr_and_keeps_greyscale(tmp_path):
    root = make_paired(tmp_path / "set", 3, {"a": (10, 13), "g": (9, 9)}, grey=("g",))
    ds = PairedSRDataset(root, 3)
    lr, hr = ds.pair(0)
    assert (lr.shape, hr.shape) == ((3, 4, 3), (9, 12, 3))
    assert np.array_equal(hr, _read(root / "HR" / "a.png")[:9, :12])
    assert [ds.is_grey(i) for i in range(2)] == [False, True]
    assert ds.lr_size(0) == (3, 4)
    lr, hr = ds.pair(1)  # the greyscale file, replicated to three channels
    assert hr.shape == (9, 9, 3) and np.array_equal(hr[..., 0], _read(root / "HR" / "g.png"))
    assert np.array_equal(hr[..., 1], hr[..., 0]) and np.array_equal(lr[..., 2], lr[..., 0])


def test_paired_missing_partners_are_named(tmp_path):
    root = make_paired(tmp_path / "set", 2, {"a": (8, 8), "b": (8, 8)})
    (root / "LR_bicubic" / "X2" / "bx2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"without an LR partner.*b\.png"):
        PairedSRDataset(root, 2)
    _write(root / "LR_bicubic" / "X2" / "bx2.png", np.zeros((4, 4, 3), np.uint8))
    _write(root / "LR_bicubic" / "X2" / "stray x2.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"without an HR partner.*stray x2\.png"):
        PairedSRDataset(root, 2)
    with pytest.raises(FileNotFoundError, match="X3"):
        PairedSRDataset(root, 3)


def test_paired_size_mismatch_names_the_files_and_sizes(tmp_path):
    root = make_paired(tmp_path / "set", 2, {"a": (8, 8), "b": (10, 8)})
    _write(root / "LR_bicubic" / "X2" / "bx2.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"bx2\.png is 4x4 but b\.png is 10x8.*should be 5x4"):
        PairedSRDataset(root, 2)


def test_unreadable_image_is_named(tmp_path):
    root = make_paired(tmp_path / "set", 2, {"a": (8, 8)})
    (root / "HR" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a\.png"):
        PairedSRDataset(root, 2)


def _div2k_tree(root: Path, scale: int) -> None:
    for split, names in (("train", ("0001", "0002")), ("valid", ("0801",))):
        for name in names:
            hr = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            _write(root / f"DIV2K_{split}_HR" / f"{name}.png", hr)
            _write(root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png", imresize(hr, 1 / scale))


def test_div2k_layout_splits(tmp_path):
    _div2k_tree(tmp_path / "DIV2K", 4)
    train = DIV2K(tmp_path, "train", 4)  # the folder holding DIV2K/ works too
    val = open_sr_dataset("div2k", tmp_path / "DIV2K", 4, "val")
    assert [train.name(i) for i in range(len(train))] == ["0001", "0002"] and val.name(0) == "0801"
    assert train.pair(1)[0].shape == (3, 4, 3) and val.split == "valid"
    with pytest.raises(FileNotFoundError, match="X2"):
        DIV2K(tmp_path, "train", 2)


def test_download_div2k_extracts_verified_archives(tmp_path):
    src = tmp_path / "src"
    _div2k_tree(src, 2)
    server = tmp_path / "server"
    server.mkdir()
    checksums = {}
    for split in ("train", "valid"):
        for archive, folder in ((f"DIV2K_{split}_HR.zip", f"DIV2K_{split}_HR"),
                                (f"DIV2K_{split}_LR_bicubic_X2.zip", f"DIV2K_{split}_LR_bicubic")):
            with zipfile.ZipFile(server / archive, "w") as zf:
                for f in sorted((src / folder).rglob("*.png")):
                    zf.write(f, f.relative_to(src).as_posix())
            data = (server / archive).read_bytes()
            checksums[archive] = (len(data), hashlib.sha256(data).hexdigest())
    root = download_div2k(tmp_path / "data", 2, base_url=server.as_uri() + "/", checksums=checksums, progress=False)
    train, val = DIV2K(root, "train", 2), DIV2K(root, "valid", 2)
    for ds, split in ((train, "train"), (val, "valid")):
        for i in range(len(ds)):
            name = ds.name(i)
            assert np.array_equal(ds.pair(i)[1], _read(src / f"DIV2K_{split}_HR" / f"{name}.png"))
            assert np.array_equal(ds.pair(i)[0], _read(src / f"DIV2K_{split}_LR_bicubic" / "X2" / f"{name}x2.png"))
    # extracted folders are not fetched again (an unreachable server is not contacted)
    assert download_div2k(root, 2, base_url="http://127.0.0.1:9/", checksums=checksums, progress=False) == root
    # a corrupted archive is refused and nothing is extracted
    (server / "DIV2K_train_LR_bicubic_X3.zip").write_bytes(b"garbage")
    bad = {"DIV2K_train_HR.zip": checksums["DIV2K_train_HR.zip"], "DIV2K_train_LR_bicubic_X3.zip": (7, "0" * 64)}
    with pytest.raises(OSError, match="sha256"):
        download_div2k(root, 3, ("train",), base_url=server.as_uri() + "/", checksums=bad, progress=False)
    assert not (root / "DIV2K_train_LR_bicubic" / "X3").exists()


def test_open_sr_dataset_names_unknown_kinds_and_missing_roots(tmp_path):
    with pytest.raises(KeyError, match=r"unknown sr dataset 'tinyimagenet'.*'div2k'"):
        open_sr_dataset("tinyimagenet", tmp_path, 4)
    with pytest.raises(ValueError, match="needs a root"):
        open_sr_dataset("paired", None, 4)
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        PairedSRDataset(tmp_path, 0)


# --- built-in demo --------------------------------------------------------------------------------------------


def test_demo_sr_is_real_photos_in_the_benchmark_layout(tmp_path):
    root = make_demo_sr(tmp_path / "sr-demo")
    assert make_demo_sr(tmp_path / "sr-demo") == root  # idempotent
    for split, names in SR_DEMO_IMAGES.items():
        ds = PairedSRDataset(root / split, 4)
        assert sorted(names) == [ds.name(i) for i in range(len(ds))]
    train = open_sr_dataset("demo_sr", root, 3, "train")
    camera = [train.name(i) for i in range(len(train))].index("camera")
    assert train.is_grey(camera)
    import skimage.data

    hr = skimage.data.coffee()
    lr, got_hr = train.pair([train.name(i) for i in range(len(train))].index("coffee"))
    assert np.array_equal(got_hr, modcrop(hr, 3)) and np.array_equal(lr, imresize(modcrop(hr, 3), 1 / 3))
    assert len(train) >= 5 and 2 <= len(open_sr_dataset("demo_sr", root, 2, "val")) <= 3
    with pytest.raises(FileExistsError):
        (tmp_path / "occupied").mkdir()
        (tmp_path / "occupied" / "x").write_text("")
        make_demo_sr(tmp_path / "occupied")
