"""SVHN from its official .mat files, and DF2K assembled from DIV2K + Flickr2K (tiny synthetic copies; no network)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import raykd.data.svhn as svhn_mod
from raykd.config import DataConfig
from raykd.console import UserError
from raykd.data.arrays import decode_split
from raykd.data.classification import open_dataset
from raykd.data.df2k import MANIFEST, assemble_df2k, df2k_root
from raykd.data.sr import HRFolderSRDataset, PairedSRDataset, open_sr_dataset
from raykd.data.svhn import Svhn, download_svhn

from sr_sources import make_source, png

scipy_io = pytest.importorskip("scipy.io")


# ------------------------------------------------------------------------------------------------------ SVHN


def write_mat(path: Path, n: int, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN-format file: X uint8 32x32x3xN, y Nx1 in 1..10 (10 = digit 0). Returns (X, y)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (labels if labels is not None else rng.integers(1, 11, size=n)).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(path, {"X": x, "y": y})
    return x, y


@pytest.fixture()
def svhn_root(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    root = tmp_path / "svhn"
    made = {"train": write_mat(root / "train_32x32.mat", 12, 0, np.array([10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1])),
            "test": write_mat(root / "test_32x32.mat", 5, 1)}
    return root, made


def test_svhn_reads_images_in_order_with_10_as_digit_0(svhn_root) -> None:
    root, made = svhn_root
    ds = Svhn(root, "train")
    x, y = made["train"]
    assert len(ds) == 12 and ds.classes == [str(d) for d in range(10)] and ds.num_classes == 10
    assert ds.targets == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    for i in (0, 7, 11):
        img, label = ds[i]
        assert img.mode == "RGB" and img.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(img), x[:, :, :, i])  # rows, columns, RGB of sample i
        assert label == int(y[i, 0]) % 10
    test = Svhn(root.parent, "val")  # the parent holding svhn/; "val" is the reported test split
    assert test.split == "test" and len(test) == 5
    np.testing.assert_array_equal(np.asarray(test.image(4)), made["test"][0][:, :, :, 4])


def test_svhn_is_a_registered_dataset_that_raykd_decodes(svhn_root) -> None:
    root, made = svhn_root
    assert isinstance(open_dataset("svhn", root, "train"), Svhn)
    for name in ("svhn", "raykd.data.svhn:svhn"):
        arrays = decode_split(DataConfig(dataset=name, root=str(root), image_size=32), "val")
        x, y = made["test"]
        np.testing.assert_array_equal(arrays.images, x.transpose(3, 0, 1, 2))
        np.testing.assert_array_equal(arrays.labels, y[:, 0] % 10)
        assert arrays.classes == tuple(str(d) for d in range(10))


def test_svhn_fingerprint_follows_content_not_location(svhn_root, tmp_path: Path) -> None:
    root, _ = svhn_root
    copy = tmp_path / "elsewhere" / "svhn"
    shutil.copytree(root, copy)
    assert Svhn(root).fingerprint() == Svhn(copy).fingerprint() != Svhn(root, "test").fingerprint()
    write_mat(copy / "train_32x32.mat", 12, 0, np.array([9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1]))  # one relabelled
    assert Svhn(copy).fingerprint() != Svhn(root).fingerprint()


def test_svhn_refuses_bad_files_naming_them(tmp_path: Path) -> None:
    root = tmp_path / "svhn"
    with pytest.raises(FileNotFoundError, match="SVHN root"):
        Svhn(root)
    write_mat(root / "train_32x32.mat", 3, 0, np.array([1, 0, 10]))
    with pytest.raises(ValueError, match=r"train_32x32.mat: label 0 of image 1 is outside 1..10"):
        Svhn(root)
    with pytest.raises(FileNotFoundError, match="SVHN test split.*test_32x32.mat"):
        Svhn(root, "test")
    with pytest.raises(ValueError, match="unknown split 'extra'"):
        Svhn(root, "extra")
    scipy_io.savemat(root / "train_32x32.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"X is uint8 of shape \(28, 28, 3, 2\).*32x32x3xN"):
        Svhn(root)
    (root / "train_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="train_32x32.mat is not a readable MATLAB file"):
        Svhn(root)


def test_download_svhn_fetches_verified_files_from_the_site_layout(tmp_path: Path, monkeypatch) -> None:
    """The official URL's layout served from a local folder (file://): each split's file is fetched, verified by
    md5 and opened; a file with another md5 is refused."""
    site = tmp_path / "site"
    write_mat(site / "train_32x32.mat", 4, 0)
    write_mat(site / "test_32x32.mat", 2, 1)
    md5 = {n: hashlib.md5((site / n).read_bytes()).hexdigest() for n in ("train_32x32.mat", "test_32x32.mat")}
    files = {s: (f"{s}_32x32.mat", md5[f"{s}_32x32.mat"]) for s in ("train", "test")}
    monkeypatch.setattr(svhn_mod, "SVHN_FILES", files)
    root = download_svhn(tmp_path / "data", base_url=site.as_uri() + "/", progress=False)
    assert root == tmp_path / "data" / "svhn"
    assert (len(Svhn(root, "train")), len(Svhn(tmp_path / "data", "test"))) == (4, 2)
    monkeypatch.setattr(svhn_mod, "SVHN_FILES", {"train": ("train_32x32.mat", "0" * 32)})
    with pytest.raises(OSError, match="md5"):
        download_svhn(tmp_path / "other", ("train",), base_url=site.as_uri() + "/", progress=False)
    assert not (tmp_path / "other" / "svhn" / "train_32x32.mat").exists()
    with pytest.raises(ValueError, match="SVHN split 'extra'"):
        download_svhn(tmp_path, ("extra",))
    assert svhn_mod.SVHN_URL == "http://ufldl.stanford.edu/housenumbers/"


# ------------------------------------------------------------------------------------------------------ DF2K


@pytest.fixture()
def sources(tmp_path: Path) -> tuple[Path, Path]:
    div2k, flickr = tmp_path / "data" / "DIV2K", tmp_path / "data" / "Flickr2K"
    make_source(div2k, "DIV2K_train_HR", "DIV2K_train_LR_bicubic/X{s}", ["0001", "0002"], (2, 4), 0)
    make_source(flickr, "Flickr2K_HR", "Flickr2K_LR_bicubic/X{s}", ["000001"], (2,), 50)
    png(div2k / "DIV2K_valid_HR" / "0801.png", 8, 9)  # the validation split is not DF2K
    return div2k, flickr


def test_df2k_links_both_sources_into_the_paired_layout(sources, tmp_path: Path) -> None:
    div2k, flickr = sources
    dest = assemble_df2k(div2k.parent, flickr, tmp_path / "df2k")  # DIV2K found under its parent's DIV2K/
    names = sorted(p.name for p in (dest / "HR").iterdir())
    assert names == ["000001.png", "0001.png", "0002.png"]
    assert sorted(p.name for p in (dest / "LR_bicubic").iterdir()) == ["X2"]  # x4: Flickr2K has none; x3: neither
    entries = [p for p in dest.rglob("*") if p.is_file() and p.name != MANIFEST]
    assert len(entries) == 6 and all(p.is_symlink() for p in entries)  # nothing copied
    assert (dest / "HR" / "000001.png").resolve() == (flickr / "Flickr2K_HR" / "000001.png").resolve()
    assert json.loads((dest / MANIFEST).read_text()) == {
        "sources": {"DIV2K": str(div2k.resolve()), "Flickr2K": str(flickr.resolve())},
        "images": {"DIV2K": 2, "Flickr2K": 1}, "lr_scales": [2]}
    ds = open_sr_dataset("paired", dest, 2)
    assert [ds.name(i) for i in range(len(ds))] == ["000001", "0001", "0002"]
    lr, hr = ds.pair(0)
    np.testing.assert_array_equal(hr, np.asarray(Image.open(flickr / "Flickr2K_HR" / "000001.png")))
    np.testing.assert_array_equal(lr, np.asarray(Image.open(flickr / "Flickr2K_LR_bicubic/X2/000001x2.png")))
    assert len(HRFolderSRDataset(dest, 4)) == 3  # a scale without LR files: MATLAB bicubic on the same root
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy, symlinks=False)  # real files
    assert PairedSRDataset(copy, 2).fingerprint() == ds.fingerprint()


def test_df2k_names_a_missing_source_directory(sources, tmp_path: Path) -> None:
    div2k, _ = sources
    with pytest.raises(UserError, match=r"Flickr2K HR images not found: neither .*nowhere/Flickr2K_HR nor "
                                         r".*nowhere/Flickr2K/Flickr2K_HR is a directory"):
        assemble_df2k(div2k, tmp_path / "nowhere", tmp_path / "df2k")
    with pytest.raises(UserError, match="DIV2K HR images not found.*DIV2K_train_HR"):
        assemble_df2k(tmp_path / "nowhere", tmp_path / "data", tmp_path / "df2k")
    assert not (tmp_path / "df2k").exists()


def test_df2k_refuses_incomplete_lr_folders_and_clashing_names(sources, tmp_path: Path) -> None:
    div2k, flickr = sources
    (div2k / "DIV2K_train_LR_bicubic/X2/0002x2.png").unlink()
    with pytest.raises(UserError, match=r"X2 lacks the x2 LR partner .* of 1 DIV2K HR images \(0002.png\)"):
        assemble_df2k(div2k, flickr, tmp_path / "df2k")
    shutil.rmtree(div2k / "DIV2K_train_LR_bicubic/X2")
    png(flickr / "Flickr2K_HR" / "0001.png", 8, 3)
    with pytest.raises(UserError, match="both have HR images named 0001"):
        assemble_df2k(div2k, flickr, tmp_path / "df2k")
    assert not (tmp_path / "df2k").exists()


def test_df2k_replaces_its_own_root_and_nothing_else(sources, tmp_path: Path) -> None:
    div2k, flickr = sources
    dest = assemble_df2k(div2k, flickr, tmp_path / "df2k", scales=(2,))
    make_source(flickr, "Flickr2K_HR", "Flickr2K_LR_bicubic/X{s}", ["000002"], (2,), 70)
    assemble_df2k(div2k, flickr, dest, scales=(2,))
    assert len(PairedSRDataset(dest, 2)) == 4
    assert (flickr / "Flickr2K_HR" / "000001.png").is_file()  # replacing the links left the sources alone
    foreign = tmp_path / "mine"
    (foreign / "HR").mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match=f"mine exists and is not a DF2K root assembled by raykd.*{MANIFEST}"):
        assemble_df2k(div2k, flickr, foreign)
    assert (foreign / "notes.txt").read_text() == "keep"
    with pytest.raises(UserError, match=r"DF2K scales \(1,\)"):
        assemble_df2k(div2k, flickr, tmp_path / "df2k", scales=(1,))
    assert not any(p.name.startswith(".df2k") for p in tmp_path.iterdir())  # no temporary folders left
    assert os.listdir(tmp_path / "df2k")


def test_df2k_runs_starting_together_assemble_it_once(sources, tmp_path: Path, monkeypatch) -> None:
    """Two sweeps of one cache starting at once: one assembles DF2K, the other waits and reuses it."""
    div2k, flickr = sources
    link = os.symlink

    def slow_link(*args, **kwargs):  # as slow per link as Flickr2K's thousands of links are in all
        time.sleep(0.05)
        return link(*args, **kwargs)

    monkeypatch.setattr(os, "symlink", slow_link)
    results: list = []
    runs = [threading.Thread(target=lambda: results.append(df2k_root(tmp_path / "df2k", div2k, flickr, 2)))
            for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=60)
    assert sorted(assembled for _, assembled in results) == [False, True]
    assert results[0][0] == results[1][0] and results[0][0]["lr_scales"] == [2]
    assert len(PairedSRDataset(tmp_path / "df2k", 2)) == 3
    assert df2k_root(tmp_path / "df2k", div2k, flickr, 2)[1] is False  # later runs reuse it too
