"""A student on a GPU, fed by the v2 data path, and how busy the GPU is (issue #8's GPU check; needs CUDA).

Makes TinyImageNet-layout data at 64 px (JPEGs), decodes it once, stores a teacher's (resnet32x4) outputs for
the epoch's views as a table, then trains a resnet8x4 student with KD from that table for one epoch (AMP,
channels-last, pinned non-blocking copies, the next batch prepared on a thread while the current one trains),
sampling ``nvidia-smi`` utilisation every 100 ms. Prints images/s and the utilisation's mean and quartiles
during the student's epoch. Runs without Ray (the table is the one the teacher service would produce).

    python bench/gpu_student.py [--images 50000] [--batch-size 256]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from raykd.config import DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig
from raykd.data.arrays import decode_split
from raykd.data.store import Store
from raykd.models import create_model
from raykd.teachers.sources import StoredTeacher, run_teacher
from raykd.teachers.store import TeacherTable, table_key
from raykd.train.loop import train
from raykd.train.tasks import build_task


def _write(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    folder, start, stop, seed = args
    rng = np.random.default_rng(seed)
    for i in range(start, stop):
        base = np.asarray(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((64, 64)))
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{folder.parent.name}_{i}.JPEG", quality=90)


def make_data(root: Path, images: int, classes: int = 200) -> Path:
    wnids = [f"n{i:08d}" for i in range(classes)]
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    jobs = []
    per = images // classes
    for c, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        jobs.append((folder, 0, per, c))
    (root / "val" / "images").mkdir(parents=True)
    jobs.append((root / "val" / "images", 0, 2 * classes, 10_000))
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write, jobs))
    val = sorted((root / "val" / "images").iterdir())
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{p.name}\t{wnids[i % classes]}\t0\t0\t63\t63\n" for i, p in enumerate(val)))
    return root


class Sampler(threading.Thread):
    """GPU utilisation (%) from nvidia-smi every 100 ms while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                 "-lms", "100"], stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if self.stop.is_set():
                break
            if line.strip().isdigit():
                self.samples.append((time.time(), int(line.strip())))
        proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--device", default="cuda", help="cuda (the measurement), or cpu to check the script runs")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU (or --device cpu to check that it runs)")
    device = torch.device(args.device)
    print(torch.cuda.get_device_name() if device.type == "cuda" else "cpu", torch.__version__, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        root = make_data(Path(tmp) / "tiny", args.images)
        print(f"made {args.images} JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
        data = DataConfig(dataset="tinyimagenet", root=str(root), image_size=64)
        started = time.perf_counter()
        splits = {s: decode_split(data, s) for s in ("train", "val")}
        print(f"decoded once in {time.perf_counter() - started:.1f} s ({splits['train'].nbytes / 2**20:.0f} MiB)",
              flush=True)
        task = build_task(data, 0, splits)
        teacher = create_model(args.teacher, num_classes=task.num_classes).to(device).eval()
        teacher.to(memory_format=torch.channels_last)
        started = time.perf_counter()
        logits = []
        for s in range(0, len(task), 1024):
            batch = task.batch(np.arange(s, min(len(task), s + 1024)), 0, device, ("hr",))
            logits.append(run_teacher(teacher, batch["hr"], ("logits",))["logits"].half().cpu().numpy())
        table = TeacherTable.save(Store(Path(tmp) / "store"), table_key({"name": "t"}, {"bench": 1}, ["logits"], 0),
                                  np.arange(len(task)), {"logits": np.concatenate(logits)}, {"teacher": "t"})
        print(f"teacher table for the epoch's views: {len(task)} rows in {time.perf_counter() - started:.1f} s",
              flush=True)

        cfg = TrainConfig(model=ModelConfig("resnet8x4"), data=data, method=MethodConfig("kd"),
                          optim=OptimConfig(lr=0.05, epochs=1, batch_size=args.batch_size),
                          runtime=RuntimeConfig(device=args.device))
        source = StoredTeacher(lambda epoch: table, ("logits",))
        # warm-up (cuDNN autotuning, allocator) on a few steps, then the timed epoch
        train(replace(cfg, optim=replace(cfg.optim, steps_per_epoch=20)), task=task, teacher=source)
        sampler = Sampler()
        if device.type == "cuda":
            sampler.start()
            time.sleep(0.5)
        epoch_started = time.time()
        metrics = train(cfg, task=task, teacher=source)
        epoch_s = time.time() - epoch_started
        sampler.stop.set()
        busy = np.array([u for t, u in sampler.samples if epoch_started + 1 <= t <= epoch_started + epoch_s - 2])
        print(f"student resnet8x4, KD from the stored table, batch {args.batch_size}, 64 px, AMP + channels-last:")
        print(f"  one epoch: {epoch_s:.1f} s incl. evaluation; training {metrics['samples_per_s']:.0f} images/s")
        if busy.size:
            print(f"  GPU utilisation during the epoch ({busy.size} samples at 100 ms): mean {busy.mean():.0f}%, "
                  f"quartiles {np.percentile(busy, 25):.0f}/{np.percentile(busy, 50):.0f}/"
                  f"{np.percentile(busy, 75):.0f}%")
        print(f"  val top-1 after one epoch {metrics['val_top1']:.2f}% (random teacher, throughput only)")


if __name__ == "__main__":
    main()
