"""Super-resolution datasets in their published layouts, and the aligned random patches SR training uses.

Layouts (the LR partner of ``<name>.<ext>`` is ``<name>x{s}.<ext>``, any image extension):

* **paired** benchmark folders, as in the EDSR/RCAN/SwinIR benchmark packs: ``<root>/HR/<name>.png`` and
  ``<root>/LR_bicubic/X{s}/<name>x{s}.png`` (Set5, Set14, B100, Urban100, Manga109: open each by its folder);
* **DIV2K**: ``DIV2K_{train,valid}_HR/0001.png`` and ``DIV2K_{train,valid}_LR_bicubic/X{s}/0001x{s}.png``
  (:func:`download_div2k` fetches the official archives);
* **HR-only** folders, whose LR inputs are made as the SR literature makes them, MATLAB's
  ``imresize(modcrop(hr, s), 1/s)`` (:mod:`raykd.data.degrade`), and kept in memory and on disk under
  ``default_cache_dir()/sr_lr/<fingerprint>/``.

Every dataset gives ``(lr, hr)`` as uint8 HxWx3 arrays with ``lr * s == hr`` in size: an HR image whose sides are
not multiples of ``s`` is cropped at the bottom and right ("modcrop"). Greyscale files (Set14's ``bridge.png``)
are replicated to three channels so that RGB models can train on them; ``is_grey(i)`` keeps the fact, because
their PSNR/SSIM must be measured on the grey channel itself, not on the BT.601 luma of a 3-channel copy (which
compresses the range to [16, 235] and reads about 0.09 dB too high on Set14). Layout errors (a missing partner,
an LR whose size times ``s`` is not the modcropped HR size) are raised at construction, naming the files.

Training patches are *views* (BasicSR's paired random crop + ``augment``): view ``k`` of image ``i`` is an LR box
of ``patch`` x ``patch`` pixels at (top, left), then a horizontal flip and ``rot`` quarter turns, drawn from
``np.random.default_rng([seed, i, k])`` alone. :func:`apply_view` applies one view to the LR image (``scale=1``)
or to anything at HR resolution (``scale=s``: the HR image, a whole-image teacher output), so LR patch, HR patch
and teacher patch stay aligned pixel for pixel.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from raykd.data.classification import IMAGE_EXTENSIONS, _is_image, _require_dir
from raykd.data.degrade import imresize, modcrop
from raykd.data.download import download, extract_folder

SR_KINDS = ("demo_sr", "paired", "hr_folder", "div2k")
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


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p.name))


def _unique_stems(files: Sequence[Path], folder: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ValueError(f"{folder} holds two images named {f.stem!r} ({stems[f.stem].name}, {f.name}): "
                             "SR pairs are matched by name, so names must be unique")
        stems[f.stem] = f
    return stems


def _listing(names: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------------------------------------- datasets


class SRDataset(Dataset):
    """Base of the SR datasets: ``ds[i] -> (lr uint8 HxWx3, hr uint8 (s*H)x(s*W)x3)``.

    Decoded pairs are kept in memory while they fit in ``cache_bytes`` (small sets are re-read every epoch);
    DataLoader workers each hold their own copy.
    """

    kind: ClassVar[str]
    lr_source: ClassVar[str]  # "files" (LR read from disk) or the degradation that makes it
    root: Path
    scale: int
    hr_files: list[Path]
    hr_sizes: list[tuple[int, int]]  # modcropped (rows, cols)
    grey: list[bool]

    def __init__(self, root: Path, scale: int, cache_bytes: int) -> None:
        if not isinstance(scale, (int, np.integer)) or scale < 1:
            raise ValueError(f"SR scale must be a positive integer, got {scale!r}")
        self.root, self.scale = root, int(scale)
        self.cache_bytes = cache_bytes
        self._memory: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._memory_used = 0

    def __len__(self) -> int:
        return len(self.hr_files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pair(i)

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

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(LR, modcropped HR), uint8 HxWx3 each (greyscale replicated)."""
        if i in self._memory:
            return self._memory[i]
        lr, hr = self._load(i)
        lr, hr = _rgb(lr), _rgb(modcrop(hr, self.scale))
        if lr.shape[:2] != self.lr_size(i) or hr.shape[:2] != self.hr_sizes[i]:
            raise ValueError(f"{self.hr_files[i]}: decoded LR {lr.shape[:2]} / HR {hr.shape[:2]} differ from the "
                             f"sizes in the file headers {self.lr_size(i)} / {self.hr_sizes[i]}")
        if self._memory_used + lr.nbytes + hr.nbytes <= self.cache_bytes:
            self._memory[i] = (lr, hr)
            self._memory_used += lr.nbytes + hr.nbytes
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

    def check(self) -> None:
        """Decode every pair; raise ``ValueError`` naming the first file that cannot be read or has the wrong size."""
        for i in range(len(self)):
            self.pair(i)

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
                 lr_dir: str = "LR_bicubic/X{scale}", cache_bytes: int = 512 * 2**20) -> None:
        super().__init__(Path(root).expanduser(), scale, cache_bytes)
        _require_dir(self.root, f"{self.kind} SR root")
        hr_folder = _require_dir(self.root / hr_dir, "HR image folder")
        lr_folder = _require_dir(self.root / lr_dir.format(scale=self.scale), f"x{self.scale} LR image folder")
        hr = _unique_stems(_list_images(hr_folder), hr_folder)
        lr = _unique_stems(_list_images(lr_folder), lr_folder)
        suffix = f"x{self.scale}"
        no_lr = [hr[n].name for n in hr if n + suffix not in lr]
        no_hr = [lr[n].name for n in lr if not (n.endswith(suffix) and n[: -len(suffix)] in hr)]
        if no_lr or no_hr:
            parts = ([f"HR images without an LR partner <name>{suffix}.<ext> in {lr_folder}: {_listing(no_lr)}"]
                     if no_lr else []) + ([f"LR images without an HR partner in {hr_folder}: {_listing(no_hr)}"]
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
            raise ValueError(f"x{self.scale} LR/HR size mismatch under {self.root}: {_listing(bad, 5)}")

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

    def __init__(self, root: str | os.PathLike, split: str = "train", scale: int = 4,
                 cache_bytes: int = 512 * 2**20) -> None:
        if split not in _DIV2K_SPLITS:
            raise ValueError(f"DIV2K split {split!r}: expected 'train' or 'valid' (or 'val')")
        split = _DIV2K_SPLITS[split]
        root = Path(root).expanduser()
        if not (root / f"DIV2K_{split}_HR").is_dir() and (root / "DIV2K" / f"DIV2K_{split}_HR").is_dir():
            root = root / "DIV2K"
        self.split = split
        super().__init__(root, scale, hr_dir=f"DIV2K_{split}_HR", lr_dir=f"DIV2K_{split}_LR_bicubic/X{{scale}}",
                         cache_bytes=cache_bytes)


class HRFolderSRDataset(SRDataset):
    """HR images only (``<root>/HR/*`` if that folder exists, else ``<root>/*``); the LR input of each is
    MATLAB's ``imresize(modcrop(hr, s), 1/s)``, bit-exact with the benchmark packs' LR files.

    Degraded images are cached on disk as PNG under ``<cache_dir>/sr_lr/<fingerprint>/`` (default
    ``cache_dir``: :func:`raykd.data.builtin.default_cache_dir`) when ``disk_cache``; a cached file is written
    to a temporary name and renamed, and one with the wrong size is recomputed.
    """

    kind = "hr_folder"
    lr_source = DEGRADATION

    def __init__(self, root: str | os.PathLike, scale: int, *, disk_cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, cache_bytes: int = 512 * 2**20) -> None:
        super().__init__(Path(root).expanduser(), scale, cache_bytes)
        _require_dir(self.root, "HR-only SR root")
        folder = self.root / "HR" if (self.root / "HR").is_dir() else self.root
        files = _list_images(folder)
        if not files:
            raise ValueError(f"{folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.hr_files = list(_unique_stems(files, folder).values())
        self.hr_sizes, self.grey = [], []
        small = []
        for f in self.hr_files:
            size, grey = _header(f)
            if min(size) < self.scale:
                small.append(f"{f.name} ({size[0]}x{size[1]})")
            self.hr_sizes.append(self._modcropped(size))
            self.grey.append(grey)
        if small:
            raise ValueError(f"HR images smaller than the scale {self.scale} under {folder}: {_listing(small)}")
        self.lr_cache: Path | None = None
        if disk_cache:
            from raykd.data.builtin import default_cache_dir

            base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
            self.lr_cache = base / "sr_lr" / self.fingerprint()

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        hr = _read(self.hr_files[i])
        cached = self.lr_cache / f"{self.name(i)}x{self.scale}.png" if self.lr_cache is not None else None
        if cached is not None and cached.is_file():
            try:
                lr = _read(cached)
            except ValueError:
                lr = None  # a damaged cache file is rebuilt below
            if lr is not None and lr.shape[:2] == self.lr_size(i) and lr.ndim == hr.ndim:
                return lr, hr
        lr = imresize(modcrop(hr, self.scale), 1.0 / self.scale)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{cached.stem}.", suffix=".png.tmp", dir=cached.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    Image.fromarray(lr).save(fh, format="PNG")
                os.replace(tmp, cached)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return lr, hr

    def _samples(self) -> list[list[Any]]:
        return [[f.relative_to(self.root).as_posix(), f.stat().st_size] for f in self.hr_files]


def open_benchmark(name: str, root: str | os.PathLike, scale: int) -> PairedSRDataset:
    """A benchmark set (``BENCHMARKS``) in the benchmark-pack layout, found at ``root/name`` or
    ``root/benchmark/name``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown SR benchmark {name!r}: expected one of {', '.join(BENCHMARKS)}")
    root = Path(root).expanduser()
    for candidate in (root / name, root / "benchmark" / name):
        if candidate.is_dir():
            return PairedSRDataset(candidate, scale)
    raise FileNotFoundError(f"SR benchmark {name} not found: neither {root / name} nor {root / 'benchmark' / name} "
                            "is a directory")


def open_sr_dataset(kind: str, root: str | os.PathLike | None, scale: int, split: str = "train",
                    **kw: Any) -> SRDataset:
    """Open an SR dataset by kind (``SR_KINDS``).

    ``"demo_sr"`` builds (once) the scikit-image photo demo (:func:`raykd.data.builtin.make_demo_sr`; ``root``
    optional) and opens its ``split`` ("train" or "val"); ``"div2k"`` opens ``split`` of DIV2K; ``"paired"`` and
    ``"hr_folder"`` open the folder ``root`` itself (``split`` is not used). ``kw`` goes to the dataset class.
    """
    if kind == "demo_sr":
        from raykd.data.builtin import make_demo_sr

        if split not in ("train", "val"):
            raise ValueError(f"demo_sr split {split!r}: expected 'train' or 'val'")
        return PairedSRDataset(make_demo_sr(root) / split, scale, **kw)
    if kind not in SR_KINDS:
        raise ValueError(f"unknown SR dataset kind {kind!r}: expected one of {', '.join(SR_KINDS)}")
    if root is None:
        raise ValueError(f"SR dataset kind {kind!r} needs a root directory (only 'demo_sr' builds its own)")
    if kind == "div2k":
        return DIV2K(root, split, scale, **kw)
    cls = PairedSRDataset if kind == "paired" else HRFolderSRDataset
    return cls(root, scale, **kw)


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


# ------------------------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class PatchView:
    """An LR box of ``size`` x ``size`` pixels at (``top``, ``left``), then a horizontal flip if ``flip``, then
    ``rot`` counter-clockwise quarter turns (flip and rot90 together give all eight symmetries of the square)."""

    top: int
    left: int
    size: int
    flip: bool = False
    rot: int = 0

    def box(self) -> Tensor:
        """The view as an int64 tensor ``[top, left, size, flip, rot]`` (what training batches carry)."""
        return torch.tensor([self.top, self.left, self.size, int(self.flip), self.rot], dtype=torch.int64)

    @classmethod
    def from_box(cls, box: Tensor | Sequence[int]) -> "PatchView":
        values = [int(v) for v in (box.tolist() if isinstance(box, Tensor) else box)]
        if len(values) != 5:
            raise ValueError(f"a patch box is [top, left, size, flip, rot], got {values}")
        top, left, size, flip, rot = values
        return cls(top, left, size, bool(flip), rot % 4)


def draw_view(seed: int, index: int, k: int, lr_size: tuple[int, int], size: int, *, flip: bool = True,
              rot90: bool = True) -> PatchView:
    """View ``k`` of image ``index`` (LR of ``lr_size`` rows x cols) from ``np.random.default_rng([seed, index, k])``.

    All four draws happen whatever ``flip``/``rot90`` say, so turning augmentation on does not move the crops.
    """
    h, w = lr_size
    if size > h or size > w:
        raise ValueError(f"LR patch {size}x{size} does not fit image {index} of {h}x{w}")
    rng = np.random.default_rng([seed, index, k])
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    flipped = bool(rng.random() < 0.5)
    rot = int(rng.integers(0, 4))
    return PatchView(top, left, size, flipped and flip, rot if rot90 else 0)


def crop_box(img: Any, view: PatchView, scale: int = 1) -> Any:
    """The view's box times ``scale`` of ``img`` (..., H, W), a numpy array or tensor, unoriented and uncopied."""
    top, left, size = view.top * scale, view.left * scale, view.size * scale
    h, w = img.shape[-2:]
    if top < 0 or left < 0 or top + size > h or left + size > w:
        raise ValueError(f"patch box top={top} left={left} size={size} (LR box x{scale}) exceeds the {h}x{w} image")
    return img[..., top:top + size, left:left + size]


def orient(patch: Tensor, view: PatchView) -> Tensor:
    """The view's flip, then its quarter turns, of an already cropped (..., C, h, w) patch."""
    if view.flip:
        patch = patch.flip(-1)
    return torch.rot90(patch, view.rot, dims=(-2, -1)) if view.rot else patch


def apply_view(img: Tensor, view: PatchView, scale: int = 1) -> Tensor:
    """Crop, flip and rotate ``img`` (..., C, H, W) as ``view`` says, its box multiplied by ``scale``.

    ``scale=1`` for the LR image; ``scale=s`` for anything at HR resolution (the HR image, a teacher's whole-image
    SR output), which then lands exactly on the LR patch's pixels times ``s``.
    """
    return orient(crop_box(img, view, scale), view)


def to_tensor(img: np.ndarray) -> Tensor:
    """uint8 HxWx3 -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


class SRPatches(Dataset):
    """Aligned random training patches of an SR dataset.

    Item ``i`` is a patch of image ``i // repeat`` (``repeat`` patches per image and epoch); in epoch ``e`` it is
    view ``k = e * repeat + i % repeat``. Items are ``{"lr": (3, p, p), "hr": (3, p*s, p*s)`` float in [0, 1],
    ``"index"``: the image, ``"view"``: ``k``, ``"box"``: ``PatchView.box()``}. Views never repeat, which is
    what SR wants: the teacher cache holds whole-image outputs, so any crop of them is exact.
    """

    def __init__(self, base: SRDataset, patch_size: int, *, seed: int = 0, repeat: int = 1, flip: bool = True,
                 rot90: bool = True) -> None:
        if patch_size < 1 or repeat < 1:
            raise ValueError(f"patch_size={patch_size} and repeat={repeat} must both be >= 1")
        small = [f"{base.name(i)} (LR {base.lr_size(i)[0]}x{base.lr_size(i)[1]})" for i in range(len(base))
                 if min(base.lr_size(i)) < patch_size]
        if small:
            raise ValueError(f"LR images smaller than the {patch_size}x{patch_size} patch in {base.root}: "
                             f"{_listing(small)}; lower patch_size")
        self.base, self.patch_size, self.seed, self.repeat = base, int(patch_size), int(seed), int(repeat)
        self.flip, self.rot90 = flip, rot90
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base) * self.repeat

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def view(self, image: int, k: int) -> PatchView:
        """View ``k`` of image ``image``."""
        return draw_view(self.seed, image, k, self.base.lr_size(image), self.patch_size, flip=self.flip,
                         rot90=self.rot90)

    def get(self, i: int, k: int) -> dict[str, Any]:
        """Item ``i`` under view ``k``."""
        image = i // self.repeat
        view = self.view(image, k)
        lr, hr = self.base.pair(image)
        lr_t = torch.from_numpy(lr).permute(2, 0, 1)
        hr_t = torch.from_numpy(hr).permute(2, 0, 1)
        return {"lr": apply_view(lr_t, view).float().div_(255.0),
                "hr": apply_view(hr_t, view, self.base.scale).float().div_(255.0),
                "index": image, "view": k, "box": view.box()}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(i, self.epoch * self.repeat + i % self.repeat)
