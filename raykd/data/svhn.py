"""SVHN (Netzer et al., "Reading Digits in Natural Images with Unsupervised Feature Learning", NIPS workshop 2011),
DFD's second dataset, read from the official cropped-digits files (format 2) as they are distributed.

``train_32x32.mat`` (73,257 digits) and ``test_32x32.mat`` (26,032) are MATLAB files holding ``X``, uint8 of
shape 32x32x3xN (rows, columns, RGB, sample), and ``y``, Nx1 labels 1..10 where 10 is the digit 0 (the SVHN
site's description). Class ``k`` is the digit ``k``: label 10 becomes class 0. :func:`download_svhn` fetches
the files from the SVHN site and verifies them; ``Svhn(root, split)`` reads them (scipy's ``loadmat``; scipy
comes with scikit-learn and scikit-image) into the in-memory layout of :class:`raykd.data.classification.Cifar`,
so a split decodes like CIFAR's. The 531,131-digit ``extra`` set is not offered: DFD trains on ``train``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from raykd.data.classification import ClassificationDataset, check_split, require_dir, require_file
from raykd.data.download import download
from raykd.registry import DATASETS

__all__ = ["Svhn", "download_svhn", "SVHN_URL", "SVHN_FILES"]

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
# split -> (file, md5); md5s as torchvision's SVHN dataset records them
SVHN_FILES: dict[str, tuple[str, str]] = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}
_FOLDER = "svhn"


def _find_root(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if not any((root / f).is_file() for f, _ in SVHN_FILES.values()) and (root / _FOLDER).is_dir():
        root = root / _FOLDER
    return require_dir(root, "SVHN root (holding train_32x32.mat, test_32x32.mat)")


def _load_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, digit labels 0..9) of one official ``*_32x32.mat`` file."""
    from scipy.io import loadmat  # imported when SVHN is read: about 0.5 s that other runs need not pay

    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError... for a file that is not .mat
        raise ValueError(f"{path} is not a readable MATLAB file ({err}): download it again") from err
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path} lacks 'X' or 'y' (has {sorted(k for k in mat if not k.startswith('__'))}): it "
                         "is not an SVHN cropped-digits file")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(f"{path}: X is {x.dtype} of shape {x.shape} for {len(y)} labels; SVHN's is uint8 "
                         "32x32x3xN with one label per image")
    bad = np.flatnonzero((y < 1) | (y > 10))
    if bad.size:
        raise ValueError(f"{path}: label {y[bad[0]].item()!r} of image {bad[0]} is outside 1..10 (10 is the digit 0)")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), (y % 10).astype(np.int64)


class Svhn(ClassificationDataset):
    """SVHN cropped digits from the official ``.mat`` files. ``root`` holds ``train_32x32.mat`` and/or
    ``test_32x32.mat`` (or is a directory holding ``svhn/`` with them); ``split`` is ``"train"`` or ``"test"``
    (``"val"`` means test, the split SVHN results are reported on). Classes are the digits ``"0"``..``"9"``."""

    kind = "svhn"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = _find_root(root)
        self.split = check_split(split, tuple(SVHN_FILES), {"val": "test"})
        self._file = SVHN_FILES[self.split][0]
        self.data, labels = _load_mat(require_file(self.root / self._file, f"SVHN {self.split} split"))
        self.targets = labels.tolist()
        self.classes = [str(d) for d in range(10)]
        self.class_names = list(self.classes)
        self._validate()

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.data[i], mode="RGB")

    def source(self, i: int) -> str:
        return f"{self.root / self._file}[image {i}]"

    def _content(self) -> dict[str, Any]:
        return {"files": [[self._file, (self.root / self._file).stat().st_size]], "labels": self.targets}


def download_svhn(root: str | os.PathLike, splits: tuple[str, ...] = ("train", "test"), *, base_url: str = SVHN_URL,
                  progress: bool = True) -> Path:
    """Download SVHN's ``splits`` from the SVHN site into ``root/svhn`` and return that directory, which ``Svhn``
    opens. Each file is verified against its md5 (:data:`SVHN_FILES`); a verified file already there is used
    without network access (copy the files there by hand on an offline machine)."""
    for split in splits:
        if split not in SVHN_FILES:
            raise ValueError(f"SVHN split {split!r}: expected one of {', '.join(map(repr, SVHN_FILES))}")
    target = Path(root).expanduser() / _FOLDER
    for split in splits:
        name, md5 = SVHN_FILES[split]
        download(base_url + name, target / name, md5=md5, progress=progress)
    return target


@DATASETS.register(name="svhn", scope="cls")
def svhn(root: str | os.PathLike, split: str) -> Svhn:
    return Svhn(root, split)
