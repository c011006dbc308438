"""The decoded-split store at disk speed (issue 17): a uint8 image split saved and read back as Parquet rows (the
layout before: a ``fixed_size_list`` column, lz4, row groups of 64 MiB, a sha256 per group) against the store's
raw file (:meth:`raykd.data.store.Store.save` with ``raw=("images",)``: the array's bytes, memory-mapped on read,
a sha256 per 64 MiB block). Printed, from one run, side by side: save and load MiB/s, file size / array size, and
each step's peak RSS (above the interpreter's) / array size. Every step runs in its own process, so each peak is
its own (reset once the synthetic array exists: ``/proc/self/clear_refs``); loads run cold, the file dropped from
the page cache first (``posix_fadvise(DONTNEED)``). The raw file is then read back as later runs read it: the first
read after the write hashes every block and stamps the table, a later one only checks the stamp (sizes, mtimes,
ctimes, inodes); shown warm with the stamp and without it (every block hashed: what every read cost before), and
cold with the stamp, every page of the map touched (the disk read a later run pays while training).

With ``--ragged`` the split is whole images of varied shapes instead (an SR split's HR images: sides drawn from
``size / 2`` to ``3 * size / 2``, multiples of 8), a :class:`raykd.data.store.Ragged` column: the store's Parquet
rows of it (a ``large_binary`` column of each image's bytes and a ``__shape__`` column, as SR splits were kept
before, and teacher tables still are) against the raw file (``raw=("images",)``: the images' bytes back to back,
a sha256 per block of whole images of about 64 MiB, the shapes in the header).

    .venv/bin/python bench/store_speed.py [--images 20000] [--size 64] [--dir /tmp]
    .venv/bin/python bench/store_speed.py --ragged [--images 300] [--size 768] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raykd.data.store import Ragged, Store, content_key

PARQUET_GROUP_BYTES = 64 * 2**20
KEY = content_key({"table": "bench", "what": "store_speed"})


def synthetic_split(images: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Photo-like uint8 images (smooth colour fields plus sensor-like noise, so lz4 finds as little as in real
    pixels) filled in place, one chunk at a time, and int64 labels."""
    rng = np.random.default_rng(0)
    out = np.empty((images, size, size, 3), dtype=np.uint8)
    coarse = size // 8
    for start in range(0, images, 1000):
        stop = min(images, start + 1000)
        smooth = rng.integers(0, 256, (stop - start, coarse, coarse, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
        out[start:stop] = smooth + rng.integers(0, 8, smooth.shape, dtype=np.uint8)
    return out, rng.integers(0, 200, images).astype(np.int64)


def ragged_shapes(images: int, size: int) -> np.ndarray:
    """``(images, 3)`` shapes of whole RGB images, each side a multiple of 8 from ``size / 2`` to ``3 * size / 2``."""
    sides = np.random.default_rng(0).integers(size // 16, 3 * size // 16, (images, 2), endpoint=True) * 8
    return np.column_stack([sides, np.full(images, 3)]).astype(np.int64)


def synthetic_ragged(images: int, size: int) -> tuple[Ragged, np.ndarray]:
    """Photo-like uint8 images of :func:`ragged_shapes` (as :func:`synthetic_split` makes them) filled in place into
    one flat buffer, one image at a time, and int64 labels."""
    rng, shapes = np.random.default_rng(1), ragged_shapes(images, size)
    offsets = Ragged.byte_offsets(shapes, np.uint8)
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for i, (h, w, _) in enumerate(shapes):
        smooth = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        data[offsets[i]:offsets[i + 1]] = (smooth + rng.integers(0, 8, smooth.shape, dtype=np.uint8)).reshape(-1)
    return Ragged(data, offsets, shapes, np.uint8), rng.integers(0, 200, images).astype(np.int64)


def status_bytes(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def save_parquet(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The Parquet layout the store wrote before (its TableWriter, inlined): fixed-size lists, lz4, no dictionary."""
    row = images[0].size
    per = max(1, PARQUET_GROUP_BYTES // row)
    with pq.ParquetWriter(path, pa.schema([("images", pa.list_(pa.uint8(), row)), ("labels", pa.int64())]),
                          compression="lz4", use_dictionary=False, write_statistics=False) as writer:
        checksums = []
        for start in range(0, len(images), per):
            part = images[start:start + per]
            checksums.append(hashlib.sha256(part.data).hexdigest())
            column = pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), row)
            writer.write_table(pa.table({"images": column, "labels": labels[start:start + per]}),
                               row_group_size=len(part))
        writer.add_key_value_metadata({"checksums": json.dumps(checksums)})


def load_parquet(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read back as the store did before: each row group decoded, flattened to numpy, verified, then concatenated."""
    parquet = pq.ParquetFile(path)
    checksums = json.loads(parquet.metadata.metadata[b"checksums"])
    parts = []
    for g in range(parquet.num_row_groups):
        column = parquet.read_row_group(g).column("images").combine_chunks()
        part = column.flatten().to_numpy(zero_copy_only=False).reshape((len(column), *shape))
        assert hashlib.sha256(part.data).hexdigest() == checksums[g]
        parts.append(part)
    return np.concatenate(parts)


def warm_up_pyarrow() -> None:
    """Write and read a one-row Parquet table in memory, so pyarrow's imports on first use (about 0.2 s here, paid
    once per process whatever it reads) are not timed as part of a step."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1]}), sink)
    pq.ParquetFile(pa.BufferReader(sink.getvalue())).read_row_group(0)


def child(step: str, directory: Path, images: int, size: int, ragged: bool) -> dict:
    """One measured step in this process: ``{"seconds", "peak"}``, peak the most RSS during the step above the
    interpreter's own (imports done): what the step holds, the saved array included. ``ragged``: the Parquet rows
    are the store's own (a table without raw columns, under ``rows/``)."""
    shape = (size, size, 3)
    interpreter = status_bytes("VmRSS")
    if step.startswith("save"):
        array, labels = synthetic_ragged(images, size) if ragged else synthetic_split(images, size)
    warm_up_pyarrow()
    reset_peak()
    started = time.perf_counter()
    if step == "save-parquet" and ragged:
        Store(directory / "rows").save(KEY, {"images": array, "labels": labels})
    elif step == "save-parquet":
        save_parquet(directory / "split.parquet", array, labels)
    elif step == "save-raw":
        Store(directory).save(KEY, {"images": array, "labels": labels}, raw=("images",))
    elif step == "load-parquet":
        loaded = Store(directory / "rows").load(KEY)["images"] if ragged else load_parquet(
            directory / "split.parquet", shape)
    elif step.startswith("load-raw"):
        loaded = Store(directory).load(KEY)["images"]
        if step == "load-raw-cold-touched":  # one byte of every page: the whole file read
            int((loaded.data if ragged else loaded.reshape(-1))[::mmap.PAGESIZE].sum())
    seconds = time.perf_counter() - started
    if step.startswith("load"):
        assert len(loaded) == images and (ragged or loaded.shape == (images, *shape))
    return {"seconds": seconds, "peak": status_bytes("VmHWM") - interpreter}


def parquet_file(directory: Path, ragged: bool) -> Path:
    """Where the Parquet rows are: the store's table under ``rows/`` (ragged) or ``split.parquet``."""
    return directory / "rows" / f"{KEY}.parquet" if ragged else directory / "split.parquet"


def measure(step: str, directory: Path, images: int, size: int, ragged: bool) -> dict:
    if step in ("load-parquet", "load-raw", "load-raw-cold-touched"):
        for path in (parquet_file(directory, ragged), directory / f"{KEY}.raw", directory / f"{KEY}.parquet"):
            if path.exists():
                drop_from_page_cache(path)
    if step == "load-raw-hashed":
        Path(Store(directory).stamp_path(KEY)).unlink()
    result = subprocess.run([sys.executable, __file__, "--child", step, "--dir", str(directory), "--images",
                             str(images), "--size", str(size), *(["--ragged"] if ragged else [])],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="default: 20000, or 300 with --ragged")
    parser.add_argument("--size", type=int, default=None, help="default: 64, or 768 (the mean side) with --ragged")
    parser.add_argument("--ragged", action="store_true", help="whole images of varied shapes (an SR split)")
    parser.add_argument("--dir", default=None, help="where the files are written (default: the system's temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    images = args.images or (300 if args.ragged else 20000)
    size = args.size or (768 if args.ragged else 64)
    if args.child:
        print(json.dumps(child(args.child, Path(args.dir), images, size, args.ragged)))
        return
    shapes = ragged_shapes(images, size) if args.ragged else np.tile([size, size, 3], (images, 1))
    mib = int(np.prod(shapes, axis=1).sum()) / 2**20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        steps = {s: measure(s, directory, images, size, args.ragged)
                 for s in ("save-parquet", "load-parquet", "save-raw", "load-raw", "load-raw-warm",
                           "load-raw-hashed", "load-raw-cold-touched")}
        sizes = {"parquet": parquet_file(directory, args.ragged).stat().st_size,
                 "raw": (directory / f"{KEY}.raw").stat().st_size + (directory / f"{KEY}.parquet").stat().st_size}
    what = (f"uint8 images of sides {size // 2} to {3 * size // 2} (a Ragged column)" if args.ragged
            else f"x {size} x {size} x 3 uint8 images")
    print(f"{images} {what} ({mib:.1f} MiB) + int64 labels; each step in its own process; loads cold (dropped "
          f"from the page cache) unless warm")
    print(f"  {'':22s} {'Parquet rows':>14s} {'raw file':>14s} {'raw / Parquet':>14s}")

    def row(label: str, parquet: float, raw: float, fmt: str) -> None:
        print(f"  {label:22s} {parquet:>14{fmt}} {raw:>14{fmt}} {raw / parquet:>13.2f}x")

    row("save MiB/s", mib / steps["save-parquet"]["seconds"], mib / steps["save-raw"]["seconds"], ".0f")
    row("load MiB/s (cold)", mib / steps["load-parquet"]["seconds"], mib / steps["load-raw"]["seconds"], ".0f")
    row("file / array size", sizes["parquet"] / 2**20 / mib, sizes["raw"] / 2**20 / mib, ".3f")
    for step in ("save", "load"):
        row(f"{step} peak RSS / array", steps[f"{step}-parquet"]["peak"] / 2**20 / mib,
            steps[f"{step}-raw"]["peak"] / 2**20 / mib, ".2f")
        row("  beyond the array, MiB", steps[f"{step}-parquet"]["peak"] / 2**20 - mib,
            steps[f"{step}-raw"]["peak"] / 2**20 - mib, ".0f")
    print(f"  (the raw load maps the file: its RSS is page-cache pages shared by every process of the node)")
    print("  raw file read back by a later run:")
    for step, label in (("load-raw", "first read after the write, cold (every block hashed, stamped)"),
                        ("load-raw-hashed", "warm, every block hashed (each read before the stamp)"),
                        ("load-raw-warm", "warm, the stamp checked"),
                        ("load-raw-cold-touched", "cold, the stamp checked, every page of the map touched")):
        seconds = steps[step]["seconds"]
        print(f"    {label:62s} {seconds * 1e3:9.1f} ms  {mib / seconds:8.0f} MiB/s")
    print(f"  (sha256 on threads, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
