from __future__ import annotations

import functools
import hashlib
import io
import socket
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raykd.data.classification import TinyImageNet
from raykd.data.download import DownloadError, download, download_tinyimagenet


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over tmp_path/www; yields (directory, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a local port nobody listens on: connecting fails like an offline machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/archive.zip"


def test_download_verifies_and_renames(served, tmp_path):
    www, base = served
    payload = np.random.default_rng(0).bytes(300_000)
    (www / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    got = download(f"{base}/blob.bin", dest, sha256=hashlib.sha256(payload).hexdigest(),
                   md5=hashlib.md5(payload).hexdigest(), size=len(payload), progress=False)
    assert got == dest and dest.read_bytes() == payload
    assert not dest.with_name("blob.bin.part").exists()


def test_download_rejects_wrong_checksum_or_size(served, tmp_path):
    www, base = served
    (www / "blob.bin").write_bytes(b"x" * 1000)
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match=r"sha256 .* expected 0{64}"):
        download(f"{base}/blob.bin", dest, sha256="0" * 64, progress=False)
    with pytest.raises(DownloadError, match="size 1000 bytes, expected 999"):
        download(f"{base}/blob.bin", dest, size=999, progress=False)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{base}/missing.bin", dest, progress=False)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_offline_error_names_url_and_where_to_put_the_file(closed_port_url, tmp_path):
    dest = tmp_path / "archive.zip"
    with pytest.raises(DownloadError) as err:
        download(closed_port_url, dest, md5="0" * 32, size=10, progress=False)
    message = str(err.value)
    assert closed_port_url in message and str(dest) in message and "md5 " + "0" * 32 in message
    assert not dest.exists()
    # a hand-placed file that verifies is used without any network access
    dest.write_bytes(b"0123456789")
    assert download(closed_port_url, dest, md5=hashlib.md5(b"0123456789").hexdigest(), size=10) == dest


def _tinyimagenet_zip(path: Path, top: str = "tiny-imagenet-200") -> None:
    """A two-class archive in the official layout (the real one is 237 MiB)."""
    rng = np.random.default_rng(1)

    def jpeg() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="JPEG")
        return buf.getvalue()

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/wnids.txt", "n2\nn1\n")
        zf.writestr(f"{top}/words.txt", "n1\tfirst\nn2\tsecond\n")
        for w in ("n1", "n2"):
            for j in range(3):
                zf.writestr(f"{top}/train/{w}/images/{w}_{j}.JPEG", jpeg())
        zf.writestr(f"{top}/val/images/val_0.JPEG", jpeg())
        zf.writestr(f"{top}/val/val_annotations.txt", "val_0.JPEG\tn2\t0\t0\t7\t7\n")


def test_download_tinyimagenet_extracts_the_official_layout(served, closed_port_url, tmp_path):
    www, base = served
    _tinyimagenet_zip(www / "tiny.zip")
    data = (www / "tiny.zip").read_bytes()
    root = tmp_path / "data"
    target = download_tinyimagenet(root, url=f"{base}/tiny.zip", md5=hashlib.md5(data).hexdigest(),
                                   size=len(data), progress=False)
    assert target == root / "tiny-imagenet-200"
    train, val = TinyImageNet(root, "train"), TinyImageNet(target, "val")
    assert (len(train), len(val), val.targets, train.class_names) == (6, 1, [1], ["first", "second"])
    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200", "tiny-imagenet-200.zip"]
    # already extracted: no network needed
    assert download_tinyimagenet(root, url=closed_port_url, progress=False) == target


def test_download_tinyimagenet_rejects_a_foreign_archive(served, tmp_path):
    www, base = served
    _tinyimagenet_zip(www / "other.zip", top="something-else")
    data = (www / "other.zip").read_bytes()
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="tiny-imagenet-200/wnids.txt"):
        download_tinyimagenet(root, url=f"{base}/other.zip", md5=hashlib.md5(data).hexdigest(), size=len(data),
                              progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200.zip"]  # nothing half-extracted
