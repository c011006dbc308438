"""Time and memory of the pure-PyTorch selective scan against the step-by-step reference, with a roofline floor.

Shapes are one Vim-Tiny direction at 224 px: batch 8, d_inner 384, length 197 (196 patches + class token),
d_state 16, with D, z, delta_bias and softplus as the Vim layer calls it. Run:

    python bench/selective_scan.py [--threads N] [--chunks 16,32,64,128,197]

It prints, from this one run, the forward and forward+backward times of both backends and their ratios, the
peak resident-memory growth of each (measured in a fresh child process, so earlier runs do not mask it), the
"torch" backend's time per chunk size, and the floor: the bytes that must move and the FLOPs that must run,
divided by this machine's copy bandwidth and matmul FLOP rate measured here, at the same thread count.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import threading
import time
from collections.abc import Callable

import torch

from raykd.models.ops import DEFAULT_CHUNK_SIZE, selective_scan

SHAPE = {"b": 8, "d": 384, "l": 197, "n": 16}
# FLOPs per (b, d, l, n) element: forward = delta*A, exp (counted as 1), delta*u*B (1, the delta*u product is
# per (b, d, l)), the state FMA (2) and C*h summed over n (2); backward recomputes the forward (7) and adds the
# adjoint FMA (2), C*dy (1), dC (2), dB (2), exp-weighted h_{t-1} product (2), dA and d(delta) from it (4) and
# d(delta u) (2).
FLOPS_PER_ELEMENT = {"forward": 7, "forward+backward": 7 + 22}


def _inputs(requires_grad: bool, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b, d, l, n = SHAPE["b"], SHAPE["d"], SHAPE["l"], SHAPE["n"]
    u = torch.randn(b, d, l, generator=gen)
    delta = torch.randn(b, d, l, generator=gen) * 0.5
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B = torch.randn(b, n, l, generator=gen)
    C = torch.randn(b, n, l, generator=gen)
    D = torch.ones(d)
    z = torch.randn(b, d, l, generator=gen)
    delta_bias = torch.full((d,), -4.0)  # softplus(-4 + ...) ~ 0.02: Vim's initial step sizes
    return [t.requires_grad_(requires_grad) for t in (u, delta, A, B, C, D, z, delta_bias)]


def _step(backend: str, backward: bool, chunk: int) -> Callable[[], None]:
    ts = _inputs(backward)
    u, delta, A, B, C, D, z, delta_bias = ts

    def run() -> None:
        y = selective_scan(u, delta, A, B, C, D, z, delta_bias, True, backend=backend, chunk_size=chunk)
        if backward:
            y.sum().backward()
            for t in ts:
                t.grad = None

    return run


def _best_time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and dispatch caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_child(backend: str, backward: bool, chunk: int, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    fn = _step(backend, backward, chunk)
    base = peak = _rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    fn()
    done.set()
    sampler.join()
    queue.put(peak - base)


def peak_memory_mib(backend: str, backward: bool, chunk: int, threads: int) -> float:
    """Peak growth of resident memory during one call, sampled every 0.5 ms in a fresh process whose malloc
    returns freed blocks to the OS (so RSS follows live memory and earlier calls cannot mask the peak)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    try:
        proc = ctx.Process(target=_peak_child, args=(backend, backward, chunk, threads, queue))
        proc.start()
    finally:
        del os.environ["MALLOC_MMAP_THRESHOLD_"]
    nbytes = queue.get()
    proc.join()
    return nbytes / 2**20


def machine_rates() -> tuple[float, float]:
    """(copy bandwidth in bytes/s counting read + write, matmul FLOP/s), measured on this machine now."""
    src = torch.empty(64 * 2**20 // 4).uniform_()
    dst = torch.empty_like(src)
    copy_s = _best_time(lambda: dst.copy_(src), 5)
    m = torch.randn(1024, 1024)
    mm_s = _best_time(lambda: m @ m, 5)
    return 2 * src.numel() * 4 / copy_s, 2 * 1024**3 / mm_s


def floor_seconds(kind: str, bandwidth: float, flop_rate: float) -> tuple[float, float, float]:
    """(seconds, bytes, flops): the time to move the data that must move and to run the FLOPs that must run."""
    b, d, l, n = SHAPE["b"], SHAPE["d"], SHAPE["l"], SHAPE["n"]
    per_bdl, per_bnl = b * d * l, b * n * l
    # forward reads u, delta, z, B, C and writes y; backward also reads dy and writes du, ddelta, dz, dB, dC.
    tensors = 4 * per_bdl + 2 * per_bnl
    if kind == "forward+backward":
        tensors += 4 * per_bdl + 2 * per_bnl
    nbytes = 4 * tensors
    flops = FLOPS_PER_ELEMENT[kind] * b * d * l * n
    return max(nbytes / bandwidth, flops / flop_rate), nbytes, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--chunks", default="16,32,64,128,197", help="chunk sizes to time for the torch backend")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"selective_scan at {SHAPE} (float32, CPU, {args.threads} threads), best of {args.repeats}")

    bandwidth, flop_rate = machine_rates()
    print(f"machine: copy bandwidth {bandwidth / 1e9:.2f} GB/s, matmul {flop_rate / 1e9:.1f} GFLOP/s")

    times: dict[tuple[str, str], float] = {}
    for kind, backward in (("forward", False), ("forward+backward", True)):
        for backend in ("reference", "torch"):
            # The reference backward takes seconds; one timed call is enough for a ratio.
            repeats = 1 if (backend == "reference" and backward) else args.repeats
            times[backend, kind] = _best_time(_step(backend, backward, DEFAULT_CHUNK_SIZE), repeats)

    print(f"\n{'':18s} {'reference':>11s} {'torch':>11s} {'speed-up':>9s} {'floor':>10s} {'torch/floor':>12s}"
          f" {'peak MiB ref':>13s} {'peak MiB torch':>15s}")
    for kind, backward in (("forward", False), ("forward+backward", True)):
        ref, ours = times["reference", kind], times["torch", kind]
        floor, nbytes, flops = floor_seconds(kind, bandwidth, flop_rate)
        mem_ref = peak_memory_mib("reference", backward, DEFAULT_CHUNK_SIZE, args.threads)
        mem_ours = peak_memory_mib("torch", backward, DEFAULT_CHUNK_SIZE, args.threads)
        print(f"{kind:18s} {ref * 1e3:9.1f}ms {ours * 1e3:9.1f}ms {ref / ours:8.1f}x {floor * 1e3:8.2f}ms "
              f"{ours / floor:11.0f}x {mem_ref:13.1f} {mem_ours:15.1f}")
        print(f"{'':18s} floor = max({nbytes / 1e6:.1f} MB / bandwidth, {flops / 1e6:.0f} MFLOP / matmul rate)")

    print(f"\ntorch backend by chunk size (default {DEFAULT_CHUNK_SIZE}):")
    for chunk in (int(c) for c in args.chunks.split(",")):
        fwd = _best_time(_step("torch", False, chunk), args.repeats)
        fb = _best_time(_step("torch", True, chunk), args.repeats)
        print(f"  chunk {chunk:4d}: forward {fwd * 1e3:7.1f}ms  forward+backward {fb * 1e3:7.1f}ms")


if __name__ == "__main__":
    main()
