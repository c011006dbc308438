"""The SR sweep scripts' behaviour before any Ray work: where they look for data, and how they stop without it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from raykd.tune.driver import find_div2k

SCRIPTS = Path(__file__).resolve().parents[1] / "sweeps"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"sweep_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dvmsr_script():
    return _load("dvmsr_div2k")


def test_dvmsr_without_data_stops_at_once_saying_where_it_looked(dvmsr_script, tmp_path, capsys) -> None:
    root = tmp_path / "nowhere"
    assert dvmsr_script.main(["--data-root", str(root), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and "--download" in err and "--smoke" in err and "X4" in err
    # the default place is under the cache dir
    assert dvmsr_script.main(["--cache-dir", str(tmp_path / "cache"), "--scale", "2"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "cache" / "datasets" / "DIV2K") in err and "X2" in err


def test_div2k_is_found_directly_or_one_level_down(tmp_path) -> None:
    flat, nested = tmp_path / "flat", tmp_path / "outer"
    for root in (flat, nested / "DIV2K"):
        (root / "DIV2K_train_HR").mkdir(parents=True)
        (root / "DIV2K_train_LR_bicubic" / "X4").mkdir(parents=True)
    cache = tmp_path / "cache"
    assert find_div2k(flat, cache, 4, download=False) == flat
    assert find_div2k(nested, cache, 4, download=False) == nested / "DIV2K"
    # the x3 pairs are missing: not found
    assert find_div2k(flat, cache, 3, download=False) is None
