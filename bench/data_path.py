"""The data path of a trial (issue #8): decode once and share, batched views on the device, trials that start at
once. Prints, from one run on data in the TinyImageNet layout at 64 px (made here, or the real set with
``--data-root``):

1. training-input images/s of the v2 path (decoded uint8 arrays, batched crop/flip/normalise as tensor ops)
   against v1's per-item path (decode the JPEG, then per-item tensor ops in a Dataset, as v1 did above its
   512 MiB in-memory limit, e.g. TinyImageNet-200), one process, and the ratio;
2. each trial's start-up seconds (trial function called -> first training step) in a small sweep, once Ray is up;
3. the memory N = 4 concurrent trials' data costs on one node against one copy: each process's unique memory
   after mapping the split from the object store, and the object store's own use.

    .venv/bin/python bench/data_path.py [--images 10000] [--data-root tiny-imagenet-200] [--trials 4]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
import torch.nn.functional as F
from PIL import Image

from raykd.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig
from raykd.data.arrays import decode_split
from raykd.data.batches import ClassificationBatches
from raykd.data.classification import open_dataset
from raykd.data.views import IMAGENET_MEAN, IMAGENET_STD, CropFlip
from raykd.tune.sweep import decoded_splits, run_sweep


def make_tinyimagenet(root: Path, images: int, classes: int = 10, size: int = 64) -> Path:
    """TinyImageNet's layout with ``images`` smooth random 64 px JPEGs (train) and a tenth as many (val)."""
    rng = np.random.default_rng(0)
    wnids = [f"n{i:08d}" for i in range(classes)]
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    lines = []

    def picture() -> Image.Image:
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)

    for i in range(images):
        wnid = wnids[i % classes]
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True, exist_ok=True)
        picture().save(folder / f"{wnid}_{i}.JPEG", quality=90)
    for i in range(max(images // 10, classes)):
        picture().save(root / "val" / "images" / f"val_{i}.JPEG", quality=90)
        lines.append(f"val_{i}.JPEG\t{wnids[i % classes]}\t0\t0\t{size - 1}\t{size - 1}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


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


def images_per_second(data: DataConfig, batch_size: int, limit: int) -> tuple[float, float, float]:
    """(per-item images/s, batched images/s, decode-once seconds) on one process."""
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


@ray.remote(num_cpus=0)
class Trial:
    """Stands for one trial process on the node: maps the split from the object store and reads it."""

    def __init__(self) -> None:
        import raykd.data.arrays  # noqa: F401  (the modules the split unpickles into: not the data's cost)

    def map(self, refs: dict) -> tuple[int, int]:
        before = unique_memory()
        arrays = ray.get(refs["train"])
        checksum = int(arrays.images[:: max(1, len(arrays) // 1000)].sum())  # touch it
        return unique_memory() - before, checksum


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None, help="a tiny-imagenet-200 directory (default: made here)")
    p.add_argument("--images", type=int, default=10000, help="training images to make (default 10000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=3000, help="images timed on the per-item path")
    p.add_argument("--trials", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)  # one process, one thread: the comparison the issue asks for
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        root = args.data_root or make_tinyimagenet(Path(tmp) / "tiny-imagenet-200", args.images)
        data = DataConfig(dataset="tinyimagenet", root=str(root), image_size=64)
        per_item, batched, decode_s = images_per_second(data, args.batch_size, args.limit)
        print(f"training input, one process, one thread, batch {args.batch_size}, 64 px:")
        print(f"  v1 per-item (JPEG decode + per-item views): {per_item:9.0f} images/s")
        print(f"  v2 batched views on decoded arrays:         {batched:9.0f} images/s   x{batched / per_item:.1f}")
        print(f"  (decoding the split once: {decode_s:.1f} s, threads)")

        torch.set_num_threads(os.cpu_count() or 1)
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            base = TrainConfig(model=ModelConfig("resnet8"), data=data,
                               optim=OptimConfig(epochs=1, batch_size=args.batch_size, steps_per_epoch=2))
            splits = decoded_splits(base, str(Path(tmp) / "cache"))
            one_copy = ray.get(splits["train"]).nbytes
            trials = [Trial.remote() for _ in range(args.trials)]
            mapped = ray.get([t.map.remote(splits) for t in trials])
            store = ray.available_resources().get("object_store_memory"), ray.cluster_resources()["object_store_memory"]
            print(f"\nmemory of {args.trials} concurrent trials' data on one node (split: {one_copy / 2**20:.0f} MiB):")
            for i, (uss, _) in enumerate(mapped):
                print(f"  trial {i}: +{uss / 2**20:6.1f} MiB unique memory after mapping the split")
            print(f"  object store in use: {(store[1] - store[0]) / 2**20:.0f} MiB (one copy: "
                  f"{one_copy / 2**20:.0f} MiB; {args.trials} private copies would be "
                  f"{args.trials * one_copy / 2**20:.0f} MiB)")

            sweep = SweepConfig(name="startup", methods=("none",), num_samples=args.trials, max_concurrent_trials=1,
                                seeds=0, verbose=0, storage=str(Path(tmp) / "runs"), cache_dir=str(Path(tmp) / "cache"))
            run_sweep(base, None, sweep, splits=splits)
            table = pd.read_parquet(Path(tmp) / "runs" / "startup" / "results.parquet")
            print(f"\nper-trial start-up (trial function called -> first training step), Ray up, "
                  f"{os.cpu_count()} cores:")
            for _, row in table.iterrows():
                print(f"  {row['trial']}: {row['startup_s']:.2f} s")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
