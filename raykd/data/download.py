"""Verified downloads of dataset archives.

A download streams to ``<dest>.part`` and becomes ``dest`` only after its size and checksum match, so ``dest``
is either complete and verified or absent. A file already at ``dest`` that verifies is used without network
access, which is also how machines without internet get the data: copy the file there by hand.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

# Official Tiny ImageNet archive (cs231n); md5 and size as recorded by torchvision-style loaders.
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINYIMAGENET_SIZE = 248_100_043

_CHUNK = 1 << 20
# What a failed connection or transfer raises; other OSErrors (a full disk) are not network problems.
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


class DownloadError(OSError):
    """A download that failed, or whose bytes did not match the expected size or checksum."""


def _mismatch(path: Path, size: int | None, sha256: str | None, md5: str | None) -> str | None:
    """Why ``path`` is not the expected file, or None when it matches everything that was given."""
    got = path.stat().st_size
    if size is not None and got != size:
        return f"size {got} bytes, expected {size}"
    digests = {name: (hashlib.new(name), want.lower()) for name, want in (("sha256", sha256), ("md5", md5)) if want}
    if digests:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                for h, _ in digests.values():
                    h.update(chunk)
        for name, (h, want) in digests.items():
            if h.hexdigest() != want:
                return f"{name} {h.hexdigest()}, expected {want}"
    return None


def _expected(size: int | None, sha256: str | None, md5: str | None) -> str:
    facts = [f"{size} bytes" if size is not None else "", f"sha256 {sha256}" if sha256 else "",
             f"md5 {md5}" if md5 else ""]
    return ", ".join(f for f in facts if f) or "no checksum given"


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
             size: int | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; verify ``size``, ``sha256`` and ``md5`` where given.

    A ``dest`` that already matches is returned at once. Raises ``DownloadError`` when the server cannot be
    reached (naming the URL and where to put a hand-copied file) or the bytes do not match; ``dest`` is only
    ever replaced by verified bytes, and ``dest.part`` is removed on any failure.
    """
    dest = Path(dest).expanduser()
    if dest.is_file() and _mismatch(dest, size, sha256, md5) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = size if size is not None else int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except BaseException as err:
        part.unlink(missing_ok=True)
        if not isinstance(err, _NETWORK_ERRORS):
            raise
        reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(
            getattr(err, "reason", err))
        raise DownloadError(
            f"could not download {url} ({reason}). If this machine is offline, download it elsewhere and place it "
            f"at {dest} ({_expected(size, sha256, md5)}); it is verified and used without network access."
        ) from err
    problem = _mismatch(part, size, sha256, md5)
    if problem is not None:
        part.unlink()
        raise DownloadError(f"download of {url} is corrupt or not the expected file: {problem}; nothing was "
                            f"written to {dest}. Retry, or check that the URL still serves this file.")
    os.replace(part, dest)
    return dest


def download_tinyimagenet(root: str | os.PathLike, *, url: str = TINYIMAGENET_URL, md5: str = TINYIMAGENET_MD5,
                          size: int = TINYIMAGENET_SIZE, progress: bool = True) -> Path:
    """Download and extract Tiny ImageNet into ``root``; return ``root / "tiny-imagenet-200"``.

    The verified archive stays at ``root / "tiny-imagenet-200.zip"`` (delete it to save 237 MiB); an already
    extracted copy is returned without touching the network. Extraction goes to a temporary directory that is
    renamed into place, so ``tiny-imagenet-200`` only ever appears complete.
    """
    root = Path(root).expanduser()
    target = root / "tiny-imagenet-200"
    if (target / "wnids.txt").is_file():
        return target
    if target.exists():
        raise FileExistsError(f"{target} exists without wnids.txt (an incomplete copy?): remove it and retry")
    archive = download(url, root / "tiny-imagenet-200.zip", md5=md5, size=size, progress=progress)
    extract_folder(archive, "tiny-imagenet-200", target, marker="wnids.txt")
    return target


def extract_folder(archive: Path, member: str, target: Path, *, marker: str | None = None) -> Path:
    """Extract the zip ``archive`` into a temporary sibling and rename its folder ``member`` to ``target``, so
    ``target`` only ever appears complete. ``marker`` names a file the folder must hold (what makes it the
    expected archive)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.stem}.tmp-", dir=archive.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)  # zipfile drops absolute paths and ".." from member names
        except zipfile.BadZipFile as err:
            raise DownloadError(f"{archive} is not a readable zip archive ({err}): delete it and retry") from err
        expected = tmp / member / marker if marker else tmp / member
        if not expected.exists():
            raise DownloadError(f"{archive} has no {member}/{marker or ''}: it is not the archive expected")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp / member, target)
        except OSError:  # another process extracted it first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
