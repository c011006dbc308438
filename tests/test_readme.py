"""Every example of the README runs as written (in a fresh directory, with the cache under it)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands(prefix: str) -> list[list[str]]:
    """The README's shell commands starting with ``prefix`` (continuation lines joined, comments dropped)."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith(prefix):
                commands.append(shlex.split(line))
    return commands


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAYKD_CACHE": str(cwd / "cache")}
    if argv[0] == ".venv/bin/raykd":
        argv = [sys.executable, "-m", "raykd.cli", *argv[1:]]
    elif argv[0] == ".venv/bin/python":
        argv = [sys.executable, str(ROOT / argv[1]), *argv[2:]]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.mark.slow
def test_the_command_line_examples_run(workdir: Path) -> None:
    plugin = next(b for b in _blocks("python") if b.startswith("# mykd.py"))
    (workdir / "mykd.py").write_text(plugin)
    commands = _commands(".venv/bin/raykd train") + _commands(".venv/bin/raykd distill")
    assert len(commands) == 4
    for argv in commands:
        result = _run(argv, workdir)
        assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-3000:])
        assert "best top-1" in result.stdout
    assert (workdir / "runs" / "mine" / "meta.json").is_file()


@pytest.mark.slow
def test_the_python_example_runs(workdir: Path) -> None:
    example = next(b for b in _blocks("python") if "from raykd.config import" in b)
    result = subprocess.run([sys.executable, "-c", example], cwd=workdir, capture_output=True, text=True,
                            env={**os.environ, "RAYKD_CACHE": str(workdir / "cache")}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.strip().splitlines()) == 2  # one report line per student epoch


@pytest.mark.slow
def test_a_users_method_joins_the_main_sweep(workdir: Path) -> None:
    """The README's plugin sweep: the main job's smoke run with a method from mykd.py beside it."""
    plugin = next(b for b in _blocks("python") if b.startswith("# mykd.py"))
    (workdir / "mykd.py").write_text(plugin)
    (argv,) = [c for c in _commands(".venv/bin/python sweeps/") if "mykd:SoftL2" in c]
    result = _run([*argv, "--storage", str(workdir / "runs")], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (workdir / "runs" / "figkd_tinyimagenet_smoke" / "summary.md").read_text()
    assert "| mykd:SoftL2 |" in summary and "| kd |" in summary
