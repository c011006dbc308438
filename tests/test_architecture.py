"""The package's shape: imports run one way (pyproject.toml's import-linter layers contract, checked by the real
tool), and no function is longer than a reader can hold at once."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_run_one_way_through_the_layers():
    tool = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([tool, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


LONGEST_FUNCTION = 60  # lines, decorators and docstring included


def long_functions(root: Path) -> list[str]:
    """``path:line name (n lines)`` for every function under ``root`` longer than :data:`LONGEST_FUNCTION`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > LONGEST_FUNCTION:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_the_package_is_longer_than_sixty_lines(tmp_path):
    long_one = tmp_path / "long.py"  # the rule itself sees a long function (so an empty result means something)
    long_one.write_text("def f():\n" + "    x = 1\n" * LONGEST_FUNCTION)
    assert [line.split(" ", 1)[1] for line in long_functions(tmp_path)] == [f"f ({LONGEST_FUNCTION + 1} lines)"]
    assert long_functions(ROOT / "raykd") == []
