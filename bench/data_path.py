"""The data path: a decoded split in the store (issue 17), and a trial's training input (issue 8).

From one run on data in the TinyImageNet layout (made here with synthetic JPEGs, ``--classes`` x ``--per-class``
training images, or the real set with ``--data-root``), at ``--size`` px:

1. the decoded store, side by side for a fresh decode (into an empty store) and the read-back of a later run (cold,
   the stored files dropped from the page cache first, and warm): seconds and MiB/s, stored size / array size,
   peak RSS / array size, and how often the dataset was scanned and fingerprinted. Each runs ``load_split`` as a
   sweep does, in its own process, so each peak is its own (above the interpreter's RSS after its imports; the
   whole process's is printed too); the Parquet rows the store kept before (``bench/store_speed.py``'s layout),
   read back cold from the same array, stand beside them;
2. (unless ``--store-only``) training-input images/s of the v2 path (decoded uint8 arrays, batched
   crop/flip/normalise as tensor ops) against v1's per-item path (decode the JPEG, then per-item tensor ops in a
   Dataset, as v1 did above its 512 MiB in-memory limit, e.g. TinyImageNet-200), one process, and the ratio;
3. each trial's start-up seconds (trial function called -> first training step) in a small sweep, once Ray is up;
4. the memory N = 4 concurrent trials' data costs on one node against one copy: each process's unique memory
   after mapping the split from the object store, and the object store's own use.

    .venv/bin/python bench/data_path.py [--classes 10 --per-class 1000 | --data-root tiny-imagenet-200]
        [--size 64] [--store-only] [--trials 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from store_speed import drop_from_page_cache, load_parquet, reset_peak, save_parquet, status_bytes


def make_tinyimagenet(root: Path, classes: int, per_class: int, size: int = 64) -> Path:
    """TinyImageNet's layout: ``per_class`` smooth random ``size`` px JPEGs per class for train, a tenth as many
    (at least one) for val."""
    rng = np.random.default_rng(0)
    wnids = [f"n{i:08d}" for i in range(classes)]
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    lines = []

    def picture() -> Image.Image:
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)

    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            picture().save(folder / f"{wnid}_{i}.JPEG", quality=90)
    for i in range(classes * max(1, per_class // 10)):
        picture().save(root / "val" / "images" / f"val_{i}.JPEG", quality=90)
        lines.append(f"val_{i}.JPEG\t{wnids[i % classes]}\t0\t0\t{size - 1}\t{size - 1}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------------------ 1. the decoded store


def child(step: str, root: str, cache: str, size: int) -> dict:
    """One measured step in this process: ``load_split`` of the train split through the store at ``cache``
    (``decode``, ``read``) or the Parquet rows of the stored array (``parquet-save``, ``parquet-read``)."""
    from raykd.config import DataConfig
    from raykd.data.arrays import load_split
    from raykd.data.store import Store

    from raykd.data.classification import OPENS

    data = DataConfig(dataset="tinyimagenet", root=root, image_size=size)
    store, parquet = Store(Path(cache) / "store"), Path(cache) / "before.parquet"
    arrays = load_split(data, "train", store) if step == "parquet-save" else None
    interpreter = status_bytes("VmRSS")
    reset_peak()
    started = time.perf_counter()
    if step in ("decode", "read"):
        arrays = load_split(data, "train", store)
    elif step == "parquet-save":
        save_parquet(parquet, arrays.images, arrays.labels)
    else:
        assert load_parquet(parquet, (size, size, 3)).shape[1:] == (size, size, 3)
    seconds = time.perf_counter() - started
    out = {"seconds": seconds, "peak": status_bytes("VmHWM") - interpreter, "interpreter": interpreter,
           "scans": OPENS["scans"], "fingerprints": OPENS["fingerprints"]}
    if step in ("decode", "read"):
        out.update(key=arrays.key, nbytes=arrays.images.nbytes, images=len(arrays))
    return out


def measure(step: str, root: Path, cache: Path, size: int, cold: bool = False) -> dict:
    if cold:
        for path in cache.rglob("*"):
            if path.is_file():
                drop_from_page_cache(path)
    result = subprocess.run([sys.executable, __file__, "--child", step, "--data-root", str(root), "--cache", str(cache),
                             "--size", str(size)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{step} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def store_figures(root: Path, cache: Path, size: int) -> None:
    steps = {"fresh decode": measure("decode", root, cache, size),
             "read back, cold": measure("read", root, cache, size, cold=True),
             "read back, warm": measure("read", root, cache, size)}
    first = steps["fresh decode"]
    mib = first["nbytes"] / 2**20
    stored = sum(p.stat().st_size for p in (cache / "store").glob(f"{first['key']}.*"))
    measure("parquet-save", root, cache, size)
    parquet = measure("parquet-read", root, cache, size, cold=True)
    print(f"{root}: {first['images']} training images at {size} px, {mib:.1f} MiB of uint8; each step in its own "
          f"process, {os.cpu_count()} cores")
    print(f"  {'':34s}" + "".join(f"{name:>17s}" for name in steps) + f"{'target':>10s}")

    def row(label: str, values, fmt: str, target: str = "") -> None:
        print(f"  {label:34s}" + "".join(f"{v:>17{fmt}}" for v in values) + f"{target:>10s}")

    row("seconds", [s["seconds"] for s in steps.values()], ".2f")
    row("MiB/s", [mib / s["seconds"] for s in steps.values()], ".0f")
    row("peak RSS / array", [s["peak"] / 2**20 / mib for s in steps.values()], ".3f", "<= 1.3")
    row("  beyond the array, MiB", [s["peak"] / 2**20 - mib for s in steps.values()], ".0f")
    row("  whole process (+ interpreter) / array", [(s["peak"] + s["interpreter"]) / 2**20 / mib
                                                    for s in steps.values()], ".3f")
    row("dataset scans", [s["scans"] for s in steps.values()], "d", "1")
    row("fingerprint passes", [s["fingerprints"] for s in steps.values()], "d", "1")
    print(f"  {'stored size / array':34s}{stored / 2**20 / mib:>17.4f}{'':>34s}{'<= 1.05':>10s}")
    print(f"  before (Parquet rows, read back cold): {parquet['seconds']:.2f} s, {mib / parquet['seconds']:.0f} MiB/s, "
          f"peak RSS / array {parquet['peak'] / 2**20 / mib:.2f}; the raw file read back cold is "
          f"{parquet['seconds'] / steps['read back, cold']['seconds']:.0f}x faster")
    print("  (peaks are above the interpreter's RSS after its imports; the read-back maps the stored file: its RSS is "
          "page-cache pages every process of the node shares)")


# ------------------------------------------------------------------------------- 2-4. a trial's training input


def images_per_second(data, batch_size: int, limit: int) -> tuple[float, float, float]:
    """(per-item images/s, batched images/s, decode-once seconds) on one process."""
    import torch
    import torch.nn.functional as F

    from raykd.data.arrays import decode_split
    from raykd.data.batches import ClassificationBatches
    from raykd.data.classification import open_dataset
    from raykd.data.views import IMAGENET_MEAN, IMAGENET_STD, CropFlip

    class PerItem(torch.utils.data.Dataset):
        """v1's path for sets above its in-memory limit: every item decodes its JPEG and is viewed on its own."""

        def __init__(self, dataset, views: CropFlip, epoch: int) -> None:
            self.dataset, self.views, self.epoch = dataset, views, epoch
            self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

        def __len__(self) -> int:
            return len(self.dataset)

        def __getitem__(self, i: int):
            img = self.dataset.image(i)
            x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
            top, left, flip = (a[0] for a in self.views.draw(np.array([i]), self.epoch))
            p = self.views.padding
            x = F.pad(x, (p, p, p, p))[:, top:top + self.views.size, left:left + self.views.size]
            if flip:
                x = x.flip(-1)
            return {"hr": (x - self.mean) / self.std, "label": self.dataset.label(i)}

    dataset = open_dataset(data.dataset, data.root, "train")
    views = CropFlip(0, data.image_size, data.crop_padding, data.flip)
    loader = torch.utils.data.DataLoader(PerItem(dataset, views, epoch=1), batch_size=batch_size, shuffle=True,
                                         num_workers=0)
    n, started = 0, time.perf_counter()
    for batch in loader:
        n += len(batch["hr"])
        if n >= limit:
            break
    per_item = n / (time.perf_counter() - started)

    started = time.perf_counter()
    arrays = decode_split(data, "train")
    decode_s = time.perf_counter() - started
    batches = ClassificationBatches(arrays, data, seed=0)
    order = np.random.default_rng(0).permutation(len(arrays))
    cpu = torch.device("cpu")
    for warm in range(2):
        batches.batch(order[:batch_size], 1, cpu)
    n, started = 0, time.perf_counter()
    for epoch in range(1, 100):
        for start in range(0, len(order) - batch_size + 1, batch_size):
            n += len(batches.batch(order[start:start + batch_size], epoch, cpu)["hr"])
        if n >= 5 * limit:
            break
    return per_item, n / (time.perf_counter() - started), decode_s


def unique_memory() -> int:
    """This process's unique set size in bytes (private pages; Linux's /proc/self/smaps_rollup): what it alone
    costs, shared object-store pages excluded."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[k].split()[0]) * 1024 for k in ("Private_Clean", "Private_Dirty"))


class Trial:
    """Stands for one trial process on the node: maps the split from the object store and reads it."""

    def __init__(self) -> None:
        import raykd.data.arrays  # noqa: F401  (the modules the split unpickles into: not the data's cost)

    def map(self, refs: dict) -> tuple[int, int]:
        import ray

        before = unique_memory()
        arrays = ray.get(refs["train"])
        checksum = int(arrays.images[:: max(1, len(arrays) // 1000)].sum())  # touch it
        return unique_memory() - before, checksum


def training_figures(root: Path, tmp: Path, args: argparse.Namespace) -> None:
    import pandas as pd
    import ray
    import torch

    from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig
    from raykd.tune.sweep import decoded_splits, run_sweep

    torch.set_num_threads(1)  # one process, one thread: the comparison issue 8 asks for
    data = DataConfig(dataset="tinyimagenet", root=str(root), image_size=args.size)
    per_item, batched, decode_s = images_per_second(data, args.batch_size, args.limit)
    print(f"\ntraining input, one process, one thread, batch {args.batch_size}, {args.size} px:")
    print(f"  v1 per-item (JPEG decode + per-item views): {per_item:9.0f} images/s")
    print(f"  v2 batched views on decoded arrays:         {batched:9.0f} images/s   x{batched / per_item:.1f}")
    print(f"  (decoding the split once: {decode_s:.1f} s, threads)")

    torch.set_num_threads(os.cpu_count() or 1)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        base = TrainConfig(model=ModelConfig("resnet8"), data=data,
                           optim=OptimConfig(epochs=1, batch_size=args.batch_size, steps_per_epoch=2))
        splits = decoded_splits(base, str(tmp / "cache"))
        one_copy = ray.get(splits["train"]).nbytes
        trials = [ray.remote(num_cpus=0)(Trial).remote() for _ in range(args.trials)]
        mapped = ray.get([t.map.remote(splits) for t in trials])
        store = ray.available_resources().get("object_store_memory"), ray.cluster_resources()["object_store_memory"]
        print(f"\nmemory of {args.trials} concurrent trials' data on one node (split: {one_copy / 2**20:.0f} MiB):")
        for i, (uss, _) in enumerate(mapped):
            print(f"  trial {i}: +{uss / 2**20:6.1f} MiB unique memory after mapping the split")
        print(f"  object store in use: {(store[1] - store[0]) / 2**20:.0f} MiB (one copy: "
              f"{one_copy / 2**20:.0f} MiB; {args.trials} private copies would be "
              f"{args.trials * one_copy / 2**20:.0f} MiB)")

        sweep = SweepConfig(name="startup", methods=("none",), num_samples=args.trials, max_concurrent_trials=1,
                            seeds=0, verbose=0, storage=str(tmp / "runs"), cache_dir=str(tmp / "cache"))
        run_sweep(base, None, sweep, splits=splits)
        table = pd.read_parquet(tmp / "runs" / "startup" / "results.parquet")
        print(f"\nper-trial start-up (trial function called -> first training step), Ray up, {os.cpu_count()} cores:")
        for _, row in table.iterrows():
            print(f"  {row['trial']}: {row['startup_s']:.2f} s")
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None, help="a tiny-imagenet-200 directory (default: made here)")
    p.add_argument("--classes", type=int, default=10, help="classes to make (default 10; the real set has 200)")
    p.add_argument("--per-class", type=int, default=1000, help="training images per class to make (default 1000; "
                                                                "the real set has 500)")
    p.add_argument("--size", type=int, default=64, help="decoded image size in px (default 64)")
    p.add_argument("--store-only", action="store_true", help="only the decoded store's figures (1.)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=3000, help="images timed on the per-item path")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, str(args.data_root), args.cache, args.size)))
        return
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        root = args.data_root
        if root is None:
            started = time.perf_counter()
            root = make_tinyimagenet(Path(tmp) / "tiny-imagenet-200", args.classes, args.per_class, args.size)
            print(f"made {args.classes} x {args.per_class} synthetic JPEGs in {time.perf_counter() - started:.0f} s")
        store_figures(root, Path(tmp) / "store-bench", args.size)
        if not args.store_only:
            training_figures(root, Path(tmp), args)


if __name__ == "__main__":
    main()
