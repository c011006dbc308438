"""What a classification sweep says before it starts, for a dataset of any size (issue 17): the decoded split, the
memory and object-store checks, and the teacher tables it would write, printed by the sweep's own checks
(:func:`raykd.data.arrays.check_memory`, :func:`raykd.tune.sweep.check_object_store`,
:func:`raykd.tune.sweep.check_table_space`) from the projection a teacher service makes
(:meth:`raykd.teachers.service.TeacherService.projection`: a table per seed stream and epoch view, one fp16 logit row
per training image), against this machine's memory, the object store a local Ray would start with (Ray's default:
30% of memory) and the free disk under ``--cache-dir``. The default is ImageNet-1k (1,281,167 training images, 1,000
classes) at 64 px, 30 epochs, the four seed streams of a search stage and three seeds.

    .venv/bin/python bench/projection.py [--images 1281167 --classes 1000 --size 64 --epochs 30 --streams 4]
        [--cache-dir ~/.cache/raykd] [--top-k K]
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from raykd.config import TeacherServiceConfig
from raykd.console import UserError
from raykd.data.arrays import DataMemoryError, check_memory, decoded_bytes
from raykd.teachers.precision import stored_dtype
from raykd.teachers.store import compact_logits
from raykd.tune.sweep import check_object_store, check_table_space

RAY_OBJECT_STORE_SHARE = 0.3  # a local ray.init()'s object store: 30% of the machine's memory


def projection(images: int, classes: int, tables: int, top_k: int | None, precision: str) -> dict:
    """One classifier teacher's projection, shaped as :meth:`TeacherService.projection` returns it."""
    full = classes * stored_dtype(precision).itemsize
    logits = full if top_k is None else sum(
        a.nbytes for a in compact_logits(np.zeros((1, classes), np.float32), top_k, precision).values())
    return {"teacher": {"tables": tables, "table_bytes": logits * images, "rows": images, "classes": classes,
                        "logits_bytes": logits, "precision": precision}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1_281_167)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=30, help="epochs, each its own view (table) of the data")
    p.add_argument("--streams", type=int, default=4, help="seed streams (search stage: one; seeds stage: one each)")
    p.add_argument("--cache-dir", default=os.environ.get("RAYKD_CACHE", "~/.cache/raykd"))
    p.add_argument("--top-k", type=int, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    service = TeacherServiceConfig()
    data = decoded_bytes(args.images, args.size)
    print(f"== {args.images:,} images x {args.classes:,} classes at {args.size} px, {args.epochs} epochs x "
          f"{args.streams} seed streams, tables at {service.precision}"
          + (f", --top-k {args.top_k}" if args.top_k else ""))
    print(f"decoded train split: {data / 2**30:.2f} GiB")
    in_store = data  # what the split puts in the object store: all of it, or only its labels when streamed
    try:
        check_memory(data, f"train at {args.size} px", streamable=True)
        print("memory: held in memory (and once in the object store)")
    except DataMemoryError as e:
        in_store = args.images * np.dtype(np.int64).itemsize
        print(f"memory: streamed from the store's raw file, only the labels in the object store ({e})")
    proj = projection(args.images, args.classes, args.epochs * args.streams, args.top_k, service.precision)
    table = proj["teacher"]["table_bytes"]
    print(f"one table: {table / 2**30:.2f} GiB ({'stored' if table <= service.live_threshold_bytes else 'live'}: "
          f"the service's live threshold is {service.live_threshold_bytes / 2**30:.0f} GiB)")
    capacity = int(RAY_OBJECT_STORE_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        check_object_store(proj, in_store, service.keep_epochs, capacity)
        print(f"object store: {capacity / 2**30:.2f} GiB holds the data's {in_store / 2**30:.2f} GiB and "
              f"{service.keep_epochs} tables")
    except UserError as e:
        print(f"object store: refused: {e}")
    root = str(Path(args.cache_dir).expanduser() / "store")
    try:
        check_table_space(proj, root)
    except UserError as e:
        print(f"disk: refused: {e}")


if __name__ == "__main__":
    main()
