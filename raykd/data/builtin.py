"""Built-in demo data that needs no download.

The classification demo is scikit-learn's copy of the UCI optical handwritten digits (1,797 real 8x8 images of
the digits 0-9, shipped inside the scikit-learn package), upscaled and written in the ``tiny-imagenet-200``
layout so it runs through exactly the code path of the real benchmark. The super-resolution demo is a handful of
real photographs that ship inside scikit-image, written in the SR benchmark layout with MATLAB-bicubic LR inputs.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from raykd.config import CacheLayout, default_cache_dir

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DEMO_FORMAT = 1
# skimage.data photographs bundled with scikit-image itself (no download); camera and clock are greyscale.
SR_DEMO_IMAGES = {"train": ("astronaut", "camera", "coffee", "coins", "immunohistochemistry", "rocket"),
                  "val": ("chelsea", "clock")}
SR_DEMO_SCALES = (2, 3, 4)


def _default_root(name: str) -> Path:
    return CacheLayout.of(default_cache_dir(), "$RAYKD_CACHE").dataset(name)


def make_demo_classification(root: str | os.PathLike | None = None, image_size: int = 32) -> Path:
    """Write the digits demo in the TinyImageNet layout at ``root`` and return ``root``.

    Default root: ``default_cache_dir() / "datasets" / f"digits-{image_size}"``. Classes ``digit0``..``digit9``;
    the val split is the first of every six images of each class in scikit-learn's order (~30 per class, 304 in
    all), the train split the rest (~150 per class, 1,493). Images are RGB PNGs, bicubically upscaled from 8x8.
    Idempotent: a complete copy is reused; a new one is written to a temporary sibling and renamed into place,
    so an interrupted build never leaves a half-written dataset at ``root``.
    """
    if image_size < 8:
        raise ValueError(f"image_size={image_size}: the digits are 8x8, so the demo needs image_size >= 8")
    root = Path(root).expanduser() if root is not None else _default_root(f"digits-{image_size}")
    spec = {"dataset": "sklearn-digits", "image_size": image_size, "format": _DEMO_FORMAT}
    return _build_once(root, spec, lambda dst: _write_digits(dst, image_size), "digits demo")


def make_demo_sr(root: str | os.PathLike | None = None) -> Path:
    """Write the super-resolution demo at ``root`` and return ``root``.

    Default root: ``default_cache_dir() / "datasets" / "sr-demo"``. Real photographs from ``skimage.data``
    (``SR_DEMO_IMAGES``: six for ``train/``, two for ``val/``, two of them greyscale) in the benchmark layout of
    each split: ``HR/<name>.png`` as shipped, ``LR_bicubic/X{s}/<name>x{s}.png`` = MATLAB
    ``imresize(modcrop(hr, s), 1/s)`` for s in ``SR_DEMO_SCALES``. Open a split with
    ``PairedSRDataset(root / "train", s)``. Idempotent, and built in a temporary sibling renamed into place,
    like :func:`make_demo_classification`.
    """
    root = Path(root).expanduser() if root is not None else _default_root("sr-demo")
    spec = {"dataset": "skimage-photos", "images": {k: list(v) for k, v in SR_DEMO_IMAGES.items()},
            "scales": list(SR_DEMO_SCALES), "format": _DEMO_FORMAT}
    return _build_once(root, spec, _write_sr_photos, "SR demo")


def _build_once(root: Path, spec: dict, write: Callable[[Path], None], what: str) -> Path:
    """Build a demo with ``write`` into a temporary sibling of ``root`` and rename it into place, once."""
    if _complete(root, spec):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists but is not a complete {what} (no .complete.json): remove it "
                              "or choose another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is meant to be shared like any cache entry
    try:
        write(tmp)
        (tmp / ".complete.json").write_text(json.dumps(spec, sort_keys=True))
        try:
            os.rename(tmp, root)  # replaces an empty directory; fails if another process already filled root
        except OSError:
            if not _complete(root, spec):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _complete(root: Path, spec: dict) -> bool:
    marker = root / ".complete.json"
    if not marker.is_file():
        return False
    found = json.loads(marker.read_text())
    if found != spec:
        raise FileExistsError(f"{root} holds a demo built as {found}, not {spec}: choose another root")
    return True


def _write_digits(dst: Path, image_size: int) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    wnids = [f"digit{d}" for d in range(10)]
    (dst / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (dst / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in zip(wnids, DIGIT_NAMES)))
    (dst / "val" / "images").mkdir(parents=True)
    annotations = []
    seen = [0] * 10
    for n, (pixels, digit) in enumerate(zip(digits.images, digits.target)):
        # sklearn's digits count ink in 0..16 per pixel.
        grey = Image.fromarray(np.rint(pixels * (255 / 16)).astype(np.uint8), mode="L")
        img = grey.resize((image_size, image_size), Image.Resampling.BICUBIC).convert("RGB")
        wnid = wnids[digit]
        if seen[digit] % 6 == 0:
            img.save(dst / "val" / "images" / f"val_{n}.png")
            annotations.append(f"val_{n}.png\t{wnid}\t0\t0\t{image_size - 1}\t{image_size - 1}\n")
        else:
            folder = dst / "train" / wnid / "images"
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{wnid}_{n}.png")
        seen[digit] += 1
    (dst / "val" / "val_annotations.txt").write_text("".join(annotations))


def _write_sr_photos(dst: Path) -> None:
    import skimage.data

    from raykd.data.degrade import imresize, modcrop

    for split, names in SR_DEMO_IMAGES.items():
        (dst / split / "HR").mkdir(parents=True)
        for name in names:
            hr = np.asarray(getattr(skimage.data, name)())
            Image.fromarray(hr).save(dst / split / "HR" / f"{name}.png")
            for s in SR_DEMO_SCALES:
                folder = dst / split / "LR_bicubic" / f"X{s}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(imresize(modcrop(hr, s), 1.0 / s)).save(folder / f"{name}x{s}.png")
