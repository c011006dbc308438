"""Tiny SR sources in the layouts their archives extract to (DIV2K, Flickr2K): random PNGs, for the tests of the DF2K
assembly and of the sweeps that train on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, size: int, seed: int) -> np.ndarray:
    """A random ``size`` x ``size`` RGB PNG at ``path`` (its folders made); returns its pixels."""
    img = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return img


def make_source(root: Path, hr_dir: str, lr_dir: str, names: list[str], scales: tuple[int, ...], seed: int) -> None:
    """8-pixel HR images ``names`` under ``root/hr_dir`` and their x``s`` LR partners under ``root/lr_dir`` (with
    ``{s}``) for each of ``scales``, named as the archives name them (``<name>x<s>.png``)."""
    for k, name in enumerate(names):
        png(root / hr_dir / f"{name}.png", 8, seed + k)
        for s in scales:
            png(root / lr_dir.format(s=s) / f"{name}x{s}.png", 8 // s, seed + 100 * s + k)
