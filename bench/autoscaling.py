"""Time to the first trial on an autoscaling cluster from zero workers (issue 17): the GPU-sharing rule
(:func:`raykd.tune.resources.share_gpus`: the teacher actors take a fraction of the first GPU node's GPU and a trial
the rest) against the rule before it (teacher actors and trials each a whole GPU, so the first trial waits for a
second node). Both on the cluster of the tests (``tests/autoscaling_harness.py``: Ray's fake provider, a head with
no CPUs, GPU nodes of 2 CPUs and 1 GPU from zero, at most two, each joining ``--boot-s`` after it is asked for, as
a cloud instance boots and runs its setup: minutes on AWS), the same small sweep (two ``kd`` trials, a stored
teacher), one after the other in one run. Printed: when the first worker came up, when the first trial started,
when the sweep ended (seconds after submit), the nodes it used and the node the first trial ran on.

    .venv/bin/python bench/autoscaling.py [--boot-s 30]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from autoscaling_harness import autoscaling_cluster, small_sweep, sweep_on_cluster, train_teacher  # noqa: E402

import raykd.tune.sweep  # noqa: E402
from raykd.tune.resources import share_gpus  # noqa: E402


def measure(rule: str, teacher, root: Path, boot_s: float) -> dict:
    """One sweep under ``rule`` (``shared`` or ``whole``) on a fresh cluster; its timings and nodes."""
    root.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        if rule == "whole":  # the rule before share_gpus: every request as asked
            patch.setattr(raykd.tune.sweep, "share_gpus", lambda sweep, actors: sweep)
        with autoscaling_cluster(patch, root, gpu_nodes=2, boot_s=boot_s):
            sweep = small_sweep(root, name=f"autoscaling-{rule}")
            table, watcher, submitted = sweep_on_cluster(share_gpus(sweep, 1) if rule == "shared" else sweep,
                                                         teacher)
            ended = time.time()
    if not (table["status"] == "ok").all():
        raise SystemExit(f"{rule}: not every trial finished:\n{table[['trial_id', 'status']]}")
    first = table.loc[table["started"].idxmin()]
    order = sorted(watcher.up, key=watcher.up.get)
    return {"rule": rule, "first node": watcher.first - submitted, "first trial": first["started"] - submitted,
            "sweep": ended - submitted, "nodes": len(watcher.seen),
            "trial node": f"#{order.index(first['node']) + 1} (up at {watcher.up[first['node']] - submitted:.1f} s)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boot-s", type=float, default=30.0, help="seconds from a node asked for to its raylet up")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rkbench") as tmp:
        root = Path(tmp)
        teacher = train_teacher(root)
        rows = [measure(rule, teacher, root / rule, args.boot_s) for rule in ("whole", "shared")]
    print(f"\nnodes join {args.boot_s:.0f} s after they are asked for")
    print(f"{'rule':<8} {'first node s':>13} {'first trial s':>14} {'sweep s':>8} {'nodes':>6}  first trial's node")
    for r in rows:
        print(f"{r['rule']:<8} {r['first node']:>13.1f} {r['first trial']:>14.1f} {r['sweep']:>8.1f} {r['nodes']:>6}  "
              f"{r['trial node']}")
    whole, shared = rows
    print(f"\nfirst trial: {whole['first trial'] / shared['first trial']:.2f}x sooner with shared GPUs")


if __name__ == "__main__":
    main()
