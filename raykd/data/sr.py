"""Super-resolution datasets in their published layouts.

Layouts (the LR partner of ``<name>.<ext>`` is ``<name>x{s}.<ext>``, any image extension):

* **paired** benchmark folders, as in the EDSR/RCAN/SwinIR benchmark packs: ``<root>/HR/<name>.png`` and
  ``<root>/LR_bicubic/X{s}/<name>x{s}.png`` (Set5, Set14, B100, Urban100, Manga109: open each by its folder);
* **DIV2K**: ``DIV2K_{train,valid}_HR/0001.png`` and ``DIV2K_{train,valid}_LR_bicubic/X{s}/0001x{s}.png``
  (:func:`download_div2k` fetches the official archives);
* **HR-only** folders, whose LR inputs are made as the SR literature makes them, MATLAB's
  ``imresize(modcrop(hr, s), 1/s)`` (:mod:`raykd.data.degrade`), once per sweep when the split is decoded.

Every dataset gives ``(lr, hr)`` as uint8 HxWx3 arrays with ``lr * s == hr`` in size: an HR image whose sides are
not multiples of ``s`` is cropped at the bottom and right ("modcrop"). Greyscale files (Set14's ``bridge.png``)
are replicated to three channels so that RGB models can train on them; ``is_grey(i)`` keeps the fact, because
their PSNR/SSIM must be measured on the grey channel itself, not on the BT.601 luma of a 3-channel copy (which
compresses the range to [16, 235] and reads about 0.09 dB too high on Set14). Layout errors (a missing partner,
an LR whose size times ``s`` is not the modcropped HR size) are raised at construction, naming the files.

Training patches are drawn from the decoded pairs by :mod:`raykd.data.views`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from PIL import Image

from raykd.data.builtin import make_demo_sr
from raykd.data.classification import IMAGE_EXTENSIONS, is_image, require_dir
from raykd.data.degrade import imresize, modcrop
from raykd.data.download import download, extract_folder
from raykd.registry import DATASETS

BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
DEGRADATION = "matlab_bicubic"  # how hr_folder LR inputs are made; part of their fingerprint
_LR_CACHE_FORMAT = 1

_GREY_MODES = frozenset({"1", "L", "LA"})
_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr"})

# Official DIV2K archives and their (size in bytes, sha256), as recorded by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/div2k.txt).
DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
DIV2K_ARCHIVES: dict[str, tuple[int, str]] = {
    "DIV2K_train_HR.zip": (3530603713, "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335"),
    "DIV2K_train_LR_bicubic_X2.zip": (925390592, "a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850"),
    "DIV2K_train_LR_bicubic_X3.zip": (427847282, "ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a"),
    "DIV2K_train_LR_bicubic_X4.zip": (246914039, "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a"),
    "DIV2K_valid_HR.zip": (448993893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc"),
    "DIV2K_valid_LR_bicubic_X2.zip": (117763600, "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57"),
    "DIV2K_valid_LR_bicubic_X3.zip": (54513392, "04b9a2ed3b4a0715d3924d3ae8514830c3328fac8d30512ce716d6f419e052a3"),
    "DIV2K_valid_LR_bicubic_X4.zip": (31505881, "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553"),
}
_DIV2K_SPLITS = {"train": "train", "valid": "valid", "val": "valid"}


# ----------------------------------------------------------------------------------------------- images


def _header(path: Path) -> tuple[tuple[int, int], bool]:
    """(rows, cols) and whether the file is greyscale, from the header alone (no decoding)."""
    try:
        with Image.open(path) as img:
            mode, (w, h) = img.mode, img.size
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        raise ValueError(f"unreadable image {path}: {err}") from err
    if mode not in _GREY_MODES | _COLOUR_MODES:
        raise ValueError(f"{path} has PIL mode {mode!r} (16-bit or float pixels); SR data must be 8-bit greyscale "
                         "or colour: convert it to 8-bit PNG")
    return (h, w), mode in _GREY_MODES


def _read(path: Path) -> np.ndarray:
    """Decode an 8-bit image as uint8: HxW for greyscale files, HxWx3 for colour (alpha dropped)."""
    try:
        with Image.open(path) as img:
            img.load()
            grey = img.mode in _GREY_MODES
            return np.asarray(img.convert("L" if grey else "RGB"))
    except Exception as err:
        raise ValueError(f"unreadable image {path}: {err}") from err


def _rgb(img: np.ndarray) -> np.ndarray:
    """A writable, contiguous HxWx3 uint8 copy, replicating a greyscale image's single channel."""
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else np.array(img, order="C")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p.name))


def unique_stems(files: Sequence[Path], folder: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ValueError(f"{folder} holds two images named {f.stem!r} ({stems[f.stem].name}, {f.name}): "
                             "SR pairs are matched by name, so names must be unique")
        stems[f.stem] = f
    return stems


def name_list(names: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------------------------------------- datasets


class SRDataset:
    """Base of the SR datasets: ``pair(i) -> (lr uint8 HxWx3, hr uint8 (s*H)x(s*W)x3)``. A sweep decodes each
    split once into :class:`raykd.data.arrays.PairArrays`; the dataset itself reads files only."""

    kind: ClassVar[str]
    lr_source: ClassVar[str]  # "files" (LR read from disk) or the degradation that makes it
    root: Path
    scale: int
    hr_files: list[Path]
    hr_sizes: list[tuple[int, int]]  # modcropped (rows, cols)
    grey: list[bool]

    def __init__(self, root: Path, scale: int) -> None:
        if not isinstance(scale, (int, np.integer)) or scale < 1:
            raise ValueError(f"SR scale must be a positive integer, got {scale!r}")
        self.root, self.scale = root, int(scale)

    def __len__(self) -> int:
        return len(self.hr_files)

    def name(self, i: int) -> str:
        """The image's name: its HR file name without extension (``baby``, ``0001``)."""
        return self.hr_files[i].stem

    def is_grey(self, i: int) -> bool:
        """Whether the HR file is greyscale: measure it on its single channel (``hr[..., 0]``), not on Y."""
        return self.grey[i]

    def lr_size(self, i: int) -> tuple[int, int]:
        """(rows, cols) of the LR image, known without decoding."""
        h, w = self.hr_sizes[i]
        return h // self.scale, w // self.scale

    def shapes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3)`` int64 shapes of every LR and HR array :meth:`pair` gives, from the file headers read when the
        dataset was opened (no decoding): what a decoder allocates and checks memory with first."""
        hr = np.array([(h, w, 3) for h, w in self.hr_sizes], dtype=np.int64).reshape(len(self), 3)
        lr = np.array([(*self.lr_size(i), 3) for i in range(len(self))], dtype=np.int64).reshape(len(self), 3)
        return lr, hr

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(LR, modcropped HR), uint8 HxWx3 each (greyscale replicated)."""
        lr, hr = self._load(i)
        lr, hr = _rgb(lr), _rgb(modcrop(hr, self.scale))
        if lr.shape[:2] != self.lr_size(i) or hr.shape[:2] != self.hr_sizes[i]:
            raise ValueError(f"{self.hr_files[i]}: decoded LR {lr.shape[:2]} / HR {hr.shape[:2]} differ from the "
                             f"sizes in the file headers {self.lr_size(i)} / {self.hr_sizes[i]}")
        return lr, hr

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(LR, raw HR) as decoded, HxW or HxWx3."""
        raise NotImplementedError

    def _samples(self) -> list[list[Any]]:
        """Per-sample facts for the fingerprint: relative paths and sizes in bytes (root-independent)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 of the kind, scale, LR source and every sample's relative file paths and byte sizes: copies of
        the data on different machines agree; adding, removing or rewriting a file (to another size) changes it."""
        record = {"kind": self.kind, "scale": self.scale, "lr_source": self.lr_source, "samples": self._samples()}
        return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _modcropped(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] - size[0] % self.scale, size[1] - size[1] % self.scale

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, scale={self.scale}, {len(self)} images)"


class PairedSRDataset(SRDataset):
    """HR images with their LR partners on disk: ``<root>/<hr_dir>/<name>.png`` and
    ``<root>/<lr_dir>/<name>x{s}.png``. ``lr_dir`` may contain ``{scale}``. The defaults are the benchmark
    layout (``HR``, ``LR_bicubic/X{scale}``) of Set5, Set14, B100, Urban100 and Manga109."""

    kind = "paired"
    lr_source = "files"

    def __init__(self, root: str | os.PathLike, scale: int, hr_dir: str = "HR",
                 lr_dir: str = "LR_bicubic/X{scale}") -> None:
        super().__init__(Path(root).expanduser(), scale)
        require_dir(self.root, f"{self.kind} SR root")
        hr_folder = require_dir(self.root / hr_dir, "HR image folder")
        lr_folder = require_dir(self.root / lr_dir.format(scale=self.scale), f"x{self.scale} LR image folder")
        hr = unique_stems(list_images(hr_folder), hr_folder)
        lr = unique_stems(list_images(lr_folder), lr_folder)
        suffix = f"x{self.scale}"
        no_lr = [hr[n].name for n in hr if n + suffix not in lr]
        no_hr = [lr[n].name for n in lr if not (n.endswith(suffix) and n[: -len(suffix)] in hr)]
        if no_lr or no_hr:
            parts = ([f"HR images without an LR partner <name>{suffix}.<ext> in {lr_folder}: {name_list(no_lr)}"]
                     if no_lr else []) + ([f"LR images without an HR partner in {hr_folder}: {name_list(no_hr)}"]
                                          if no_hr else [])
            raise FileNotFoundError("; ".join(parts))
        if not hr:
            raise ValueError(f"{hr_folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.hr_files = [hr[n] for n in sorted(hr)]
        self.lr_files = [lr[f.stem + suffix] for f in self.hr_files]
        self.hr_sizes, self.grey, bad = [], [], []
        for hr_file, lr_file in zip(self.hr_files, self.lr_files):
            hr_size, grey = _header(hr_file)
            lr_size, _ = _header(lr_file)
            cropped = self._modcropped(hr_size)
            if (lr_size[0] * self.scale, lr_size[1] * self.scale) != cropped:
                bad.append(f"{lr_file.name} is {lr_size[0]}x{lr_size[1]} but {hr_file.name} is {hr_size[0]}x"
                           f"{hr_size[1]} (modcropped {cropped[0]}x{cropped[1]}, so LR should be "
                           f"{cropped[0] // self.scale}x{cropped[1] // self.scale})")
            self.hr_sizes.append(cropped)
            self.grey.append(grey)
        if bad:
            raise ValueError(f"x{self.scale} LR/HR size mismatch under {self.root}: {name_list(bad, 5)}")

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return _read(self.lr_files[i]), _read(self.hr_files[i])

    def _samples(self) -> list[list[Any]]:
        return [[f.relative_to(self.root).as_posix(), f.stat().st_size, g.relative_to(self.root).as_posix(),
                 g.stat().st_size] for f, g in zip(self.hr_files, self.lr_files)]


class DIV2K(PairedSRDataset):
    """DIV2K (Agustsson & Timofte, CVPRW 2017) bicubic track: ``DIV2K_{split}_HR/0001.png`` and
    ``DIV2K_{split}_LR_bicubic/X{s}/0001x{s}.png`` under ``root`` (or under ``root/DIV2K``). ``split`` is
    ``"train"`` (800 images) or ``"valid"`` (100; ``"val"`` is accepted)."""

    kind = "div2k"

    def __init__(self, root: str | os.PathLike, split: str = "train", scale: int = 4) -> None:
        if split not in _DIV2K_SPLITS:
            raise ValueError(f"DIV2K split {split!r}: expected 'train' or 'valid' (or 'val')")
        split = _DIV2K_SPLITS[split]
        root = Path(root).expanduser()
        if not (root / f"DIV2K_{split}_HR").is_dir() and (root / "DIV2K" / f"DIV2K_{split}_HR").is_dir():
            root = root / "DIV2K"
        self.split = split
        super().__init__(root, scale, hr_dir=f"DIV2K_{split}_HR", lr_dir=f"DIV2K_{split}_LR_bicubic/X{{scale}}")


class HRFolderSRDataset(SRDataset):
    """HR images only (``<root>/HR/*`` if that folder exists, else ``<root>/*``); the LR input of each is
    MATLAB's ``imresize(modcrop(hr, s), 1/s)``, bit-exact with the benchmark packs' LR files (computed once per
    sweep when the split is decoded, and kept in the store with it)."""

    kind = "hr_folder"
    lr_source = DEGRADATION

    def __init__(self, root: str | os.PathLike, scale: int) -> None:
        super().__init__(Path(root).expanduser(), scale)
        require_dir(self.root, "HR-only SR root")
        folder = self.root / "HR" if (self.root / "HR").is_dir() else self.root
        files = list_images(folder)
        if not files:
            raise ValueError(f"{folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.hr_files = list(unique_stems(files, folder).values())
        self.hr_sizes, self.grey = [], []
        small = []
        for f in self.hr_files:
            size, grey = _header(f)
            if min(size) < self.scale:
                small.append(f"{f.name} ({size[0]}x{size[1]})")
            self.hr_sizes.append(self._modcropped(size))
            self.grey.append(grey)
        if small:
            raise ValueError(f"HR images smaller than the scale {self.scale} under {folder}: {name_list(small)}")

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        hr = _read(self.hr_files[i])
        return imresize(modcrop(hr, self.scale), 1.0 / self.scale), hr

    def _samples(self) -> list[list[Any]]:
        return [[f.relative_to(self.root).as_posix(), f.stat().st_size] for f in self.hr_files]


@DATASETS.register(name="demo_sr", scope="sr")
def demo_sr(root: str | os.PathLike | None, split: str, scale: int) -> PairedSRDataset:
    """The built-in photo demo (:func:`raykd.data.builtin.make_demo_sr`; ``root`` optional), split "train" or
    "val"."""
    if split not in ("train", "val"):
        raise ValueError(f"demo_sr split {split!r}: expected 'train' or 'val'")
    return PairedSRDataset(make_demo_sr(root) / split, scale)


@DATASETS.register(name="div2k", scope="sr")
def div2k(root: str | os.PathLike, split: str, scale: int) -> DIV2K:
    return DIV2K(root, split, scale)


@DATASETS.register(name="paired", scope="sr")
def paired(root: str | os.PathLike, split: str, scale: int) -> PairedSRDataset:
    """A benchmark folder (HR/ + LR_bicubic/X{s}/); the folder is the split, ``split`` is not used."""
    return PairedSRDataset(root, scale)


@DATASETS.register(name="hr_folder", scope="sr")
def hr_folder(root: str | os.PathLike, split: str, scale: int) -> HRFolderSRDataset:
    """A folder of HR images (LR made by MATLAB bicubic); the folder is the split, ``split`` is not used."""
    return HRFolderSRDataset(root, scale)


def open_sr_dataset(kind: str, root: str | os.PathLike | None, scale: int, split: str = "train") -> SRDataset:
    """Open an SR dataset: a registered kind (:data:`raykd.registry.DATASETS`, scope ``"sr"``: demo_sr, div2k,
    paired, hr_folder) or a plugin ``"pkg.mod:fn"`` called as ``fn(root, split, scale)``. Every kind but demo_sr
    needs ``root``."""
    opener = DATASETS.get(kind, scope="sr")
    if root is None and kind != "demo_sr":
        raise ValueError(f"SR dataset {kind!r} needs a root directory (data.root); only 'demo_sr' builds its own")
    return opener(root, split, scale)


# ------------------------------------------------------------------------------------------------ DIV2K


def download_div2k(root: str | os.PathLike, scale: int = 4, splits: Sequence[str] = ("train", "valid"), *,
                   base_url: str = DIV2K_URL, checksums: Mapping[str, tuple[int, str]] = DIV2K_ARCHIVES,
                   progress: bool = True) -> Path:
    """Download and extract DIV2K's HR and bicubic x``scale`` LR archives for ``splits``; return ``root``.

    ``DIV2K(root, split, scale)`` opens the result. Each archive is verified against ``checksums`` (size,
    sha256) and kept at ``root/<archive>.zip`` (delete to save space); a folder already extracted is not
    downloaded again. Extraction goes to a temporary directory renamed into place, so ``DIV2K_train_HR`` and
    ``DIV2K_train_LR_bicubic/X4`` only ever appear complete.
    """
    if scale not in (2, 3, 4):
        raise ValueError(f"DIV2K's bicubic track has scales 2, 3 and 4, not {scale}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        if split not in _DIV2K_SPLITS:
            raise ValueError(f"DIV2K split {split!r}: expected 'train' or 'valid'")
        split = _DIV2K_SPLITS[split]
        for archive, member in ((f"DIV2K_{split}_HR.zip", f"DIV2K_{split}_HR"),
                                (f"DIV2K_{split}_LR_bicubic_X{scale}.zip", f"DIV2K_{split}_LR_bicubic/X{scale}")):
            target = root / member
            if target.is_dir():
                continue
            if archive not in checksums:
                raise KeyError(f"no (size, sha256) for {archive} in checksums: pass them to verify the download")
            size, sha256 = checksums[archive]
            path = download(base_url + archive, root / archive, sha256=sha256, size=size, progress=progress)
            extract_folder(path, member, target)
    return root
