"""The main job on real data: the FiGKD sweep on the 10 real TinyImageNet classes at 64 px, end to end on the v2
data path (decoded once, fresh views, the teacher service, the seeds stage), as a user runs it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_figkd_sweep_runs_on_real_tinyimagenet_classes_at_64_px(shared_data, tmp_path: Path) -> None:
    root = shared_data / "cls" / "tiny-imagenet-10"
    argv = [sys.executable, str(ROOT / "sweeps" / "figkd_tinyimagenet.py"), "--data-root", str(root),
            "--teacher-model", "resnet8", "--student-model", "resnet8", "--epochs", "1", "--teacher-epochs", "1",
            "--steps-per-epoch", "3", "--batch-size", "32", "--num-samples", "2", "--methods", "none", "figkd",
            "--seeds", "1", "--cache-dir", str(tmp_path / "cache"), "--storage", str(tmp_path / "runs")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    table = pd.read_parquet(tmp_path / "runs" / "figkd_tinyimagenet" / "results.parquet")
    assert (table["status"] == "ok").all() and set(table["stage"]) == {"search", "seeds"}
    assert set(table["method"]) == {"none", "figkd"}
    summary = (tmp_path / "runs" / "figkd_tinyimagenet" / "summary.md").read_text()
    assert "| mean of 1 seed |" in summary and "| figkd |" in summary
    # 64-px images decoded once into the store (raw image files beside their tables): 5,000 train + 500 val at
    # 64 x 64 x 3
    stored = sum(p.stat().st_size for p in (tmp_path / "cache" / "store").glob("*.raw"))
    assert stored > 0.5 * 5500 * 64 * 64 * 3
