"""DF2K: DIV2K's 800 training images and Flickr2K's 2,650 (Lim et al., EDSR, CVPRW 2017), the training set of
DVMSR, MTKD and the SwinIR/RCAN-era SR literature, assembled from the two datasets as distributed.

:func:`assemble_df2k` makes a root in the benchmark layout that :class:`raykd.data.sr.PairedSRDataset` reads
(dataset ``"paired"``): ``HR/<name>.png`` and, for each scale whose bicubic LR both sources have,
``LR_bicubic/X{s}/<name>x{s}.png``; for a scale they lack, ``"hr_folder"`` on the same root makes the LR inputs
with MATLAB's bicubic, as the official ones were made. Every entry is a symbolic link to the source file, so
nothing is copied, and the fingerprint is that of a copy (paths relative to the root, sizes of the files).
Sources, as their archives extract:

* DIV2K: ``DIV2K_train_HR/0001.png`` and ``DIV2K_train_LR_bicubic/X{s}/0001x{s}.png`` (:func:`download_div2k`);
* Flickr2K: ``Flickr2K_HR/000001.png`` and ``Flickr2K_LR_bicubic/X{s}/000001x{s}.png`` (``Flickr2K.tar``);

each under the root given or under its ``DIV2K`` / ``Flickr2K`` folder.

:func:`df2k_root` is what a sweep calls: the root at a destination reused while it fits its sources, else
assembled, under a lock beside it so that runs starting together assemble it once.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from raykd.console import UserError
from raykd.data.sr import list_images, name_list, unique_stems

__all__ = ["assemble_df2k", "assembled_df2k", "df2k_root", "source_root", "MANIFEST"]

MANIFEST = "df2k.json"  # what marks a root as assembled here (and lets a later call replace it)
# source -> (folder it may sit in, HR folder, LR folder with {s})
_SOURCES = {
    "DIV2K": ("DIV2K", "DIV2K_train_HR", "DIV2K_train_LR_bicubic/X{s}"),
    "Flickr2K": ("Flickr2K", "Flickr2K_HR", "Flickr2K_LR_bicubic/X{s}"),
}


def source_root(name: str, root: str | os.PathLike) -> Path:
    """The directory holding ``name``'s HR folder: ``root`` or ``root/<name>``; a UserError naming both otherwise."""
    folder, hr, _ = _SOURCES[name]
    root = Path(root).expanduser().resolve()
    for candidate in (root, root / folder):
        if (candidate / hr).is_dir():
            return candidate
    raise UserError(f"{name} HR images not found: neither {root / hr} nor {root / folder / hr} is a directory; pass "
                    f"the folder that holds {hr}/")


def _lr_files(name: str, root: Path, hr: dict[str, Path], scale: int) -> dict[str, Path] | None:
    """``{HR stem: its x``scale`` LR file}``, or None when the source has no LR folder for ``scale``; a UserError
    naming the HR images whose LR partner is missing from a folder that exists."""
    folder = root / _SOURCES[name][2].format(s=scale)
    if not folder.is_dir():
        return None
    lr = unique_stems(list_images(folder), folder)
    missing = [hr[stem].name for stem in hr if f"{stem}x{scale}" not in lr]
    if missing:
        raise UserError(f"{folder} lacks the x{scale} LR partner <name>x{scale}.<ext> of {len(missing)} {name} HR "
                        f"images ({name_list(missing)}): an incomplete extraction? Extract it again, or remove the "
                        f"folder to assemble DF2K without x{scale} LR images")
    return {stem: lr[f"{stem}x{scale}"] for stem in hr}


def _check_dest(dest: Path) -> None:
    """Refuse a ``dest`` that holds anything but an empty folder or a root assembled here before."""
    if not (dest.exists() or dest.is_symlink()) or (dest / MANIFEST).is_file():
        return
    if dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
        raise UserError(f"{dest} exists and is not a DF2K root assembled by raykd (no {MANIFEST}): choose another "
                        "destination or remove it")


def _replace(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` to ``dest``, replacing what :func:`_check_dest` let through."""
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=".df2k.old-", dir=dest.parent))
        os.rename(dest, old / "root")
        os.rename(tmp, dest)
        shutil.rmtree(old)  # links only: their targets are not touched
    else:
        os.rename(tmp, dest)


def assembled_df2k(dest: str | os.PathLike, div2k_root: str | os.PathLike, flickr2k_root: str | os.PathLike,
                   scale: int) -> dict | None:
    """The manifest of the DF2K root at ``dest`` where :func:`assemble_df2k` made it from these sources and it
    still fits them: it links every HR image they hold now (each link resolving), and x``scale`` LR images exactly
    where both sources have that folder; else ``None`` (assemble it again)."""
    dest = Path(dest).expanduser().absolute()
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    roots = {"DIV2K": source_root("DIV2K", div2k_root), "Flickr2K": source_root("Flickr2K", flickr2k_root)}
    if not isinstance(manifest, dict) or manifest.get("sources") != {k: str(v) for k, v in roots.items()}:
        return None
    names = sorted(f.name for name, root in roots.items() for f in list_images(root / _SOURCES[name][1]))
    linked = sorted(f.name for f in list_images(dest / "HR")) if (dest / "HR").is_dir() else []
    if names != linked or not all((dest / "HR" / n).exists() for n in linked):
        return None
    both = all((root / _SOURCES[name][2].format(s=scale)).is_dir() for name, root in roots.items())
    return manifest if (scale in manifest.get("lr_scales", [])) == both else None


def assemble_df2k(div2k_root: str | os.PathLike, flickr2k_root: str | os.PathLike, dest: str | os.PathLike,
                  scales: Sequence[int] = (2, 3, 4)) -> Path:
    """Assemble DF2K at ``dest`` from DIV2K's training split and Flickr2K (see the module docstring); return
    ``dest``. LR links are made for each of ``scales`` that both sources have; ``dest/df2k.json`` records the
    sources, image counts and the scales linked. Every source is checked before anything is written, and the
    root is built beside ``dest`` and renamed into place, so ``dest`` only ever appears complete; a root this
    function assembled before is replaced."""
    bad = [s for s in scales if not isinstance(s, int) or isinstance(s, bool) or s < 2]
    if bad or not scales:
        raise UserError(f"DF2K scales {tuple(scales)!r}: expected SR scales, integers >= 2 such as (2, 3, 4)")
    roots = {"DIV2K": source_root("DIV2K", div2k_root), "Flickr2K": source_root("Flickr2K", flickr2k_root)}
    hr: dict[str, dict[str, Path]] = {}
    for name, root in roots.items():
        folder = root / _SOURCES[name][1]
        hr[name] = unique_stems(list_images(folder), folder)
        if not hr[name]:
            raise UserError(f"{folder} holds no images: is it the {name} HR folder?")
    shared = sorted(set(hr["DIV2K"]) & set(hr["Flickr2K"]))
    if shared:
        raise UserError(f"DIV2K and Flickr2K both have HR images named {name_list(shared)}: DF2K pairs images by name")
    dest = Path(dest).expanduser().absolute()
    _check_dest(dest)
    links = {Path("HR", f.name): f.resolve() for images in hr.values() for f in images.values()}
    linked = []
    for scale in sorted(set(scales)):
        lr = {name: _lr_files(name, root, hr[name], scale) for name, root in roots.items()}
        if all(files is not None for files in lr.values()):
            linked.append(scale)
            links.update({Path("LR_bicubic", f"X{scale}", f.name): f.resolve()
                          for files in lr.values() for f in files.values()})
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        for link, target in links.items():
            (tmp / link).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, tmp / link)
        manifest = {"sources": {name: str(root) for name, root in roots.items()},
                    "images": {name: len(images) for name, images in hr.items()}, "lr_scales": linked}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextmanager
def _assembly_lock(dest: Path) -> Iterator[None]:
    """Hold ``.<dest>.lock`` beside ``dest`` (``flock``: released when the holder exits, however it exits), so
    that runs starting together assemble ``dest`` once and the others reuse it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def df2k_root(dest: str | os.PathLike, div2k_root: str | os.PathLike, flickr2k_root: str | os.PathLike,
              scale: int) -> tuple[dict, bool]:
    """DF2K at ``dest`` for these sources with x``scale`` LR links where both have them: ``(manifest, True)``
    where it was assembled now (with the LR scales it linked before, too), ``(manifest, False)`` where the root
    there still fits them (:func:`assembled_df2k`). Under a lock, so concurrent runs assemble it once."""
    dest = Path(dest).expanduser().absolute()
    with _assembly_lock(dest):
        manifest = assembled_df2k(dest, div2k_root, flickr2k_root, scale)
        if manifest is not None:
            return manifest, False
        try:
            before = json.loads((dest / MANIFEST).read_text()).get("lr_scales", [])
        except (OSError, ValueError, AttributeError):
            before = []
        scales = sorted({scale, *(s for s in before if isinstance(s, int) and not isinstance(s, bool))})
        assemble_df2k(div2k_root, flickr2k_root, dest, scales=scales)
        return json.loads((dest / MANIFEST).read_text()), True
