"""Start-up in seconds (issue 17): the wall time of each command's ``--help`` (median of ``--repeat`` fresh
processes, so every run pays its own imports) and the heavy libraries it imported, and with ``--ray`` the time of
one local Ray start through :func:`raykd.tune.spec.connect` (its timeouts for a loaded machine and its retry).

    .venv/bin/python bench/startup.py [--repeat 5] [--ray]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "timm", "torchvision", "pandas", "pyarrow")
COMMANDS = {
    "raykd --help": ["-m", "raykd.cli", "--help"],
    "raykd sweep figkd_tinyimagenet --help": ["-m", "raykd.cli", "sweep", "figkd_tinyimagenet", "--help"],
    "python sweeps/figkd_tinyimagenet.py --help": ["sweeps/figkd_tinyimagenet.py", "--help"],
}
# runs a command's __main__ in this interpreter, then names the heavy modules it imported (stdout: one JSON line)
PROBE = """import json, runpy, sys
args = sys.argv[1:]
sys.argv = [args[0] if args[0] != "-m" else args[1], *args[2 if args[0] == "-m" else 1:]]
try:
    runpy.run_module(args[1], run_name="__main__") if args[0] == "-m" else runpy.run_path(args[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps([m for m in %r if m in sys.modules]), file=sys.stderr)
""" % (HEAVY,)


def heavy_imports(args: list[str]) -> list[str]:
    """The :data:`HEAVY` modules that ``python ARGS`` imports (run in a fresh interpreter)."""
    probe = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, check=True, capture_output=True,
                           text=True)
    return json.loads(probe.stderr.strip().splitlines()[-1])


def help_time(args: list[str], repeat: int) -> tuple[float, list[str]]:
    """(median wall seconds of ``python ARGS``, the heavy modules one run imported)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times), heavy_imports(args)


def ray_start() -> float:
    """Seconds to start a local Ray the way every sweep does (then shut down)."""
    code = ("import time, ray; from raykd.tune.spec import connect; t = time.perf_counter(); connect(None); "
            "print(time.perf_counter() - t); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ray", action="store_true", help="also time one local Ray start")
    args = parser.parse_args()
    print(f"{'command':<46} {'median s':>9}  heavy modules imported")
    for label, command in COMMANDS.items():
        seconds, heavy = help_time(command, args.repeat)
        print(f"{label:<46} {seconds:>9.2f}  {', '.join(heavy) or '-'}", flush=True)
    if args.ray:
        print(f"{'local Ray start (raykd.tune.spec.connect)':<46} {ray_start():>9.2f}")


if __name__ == "__main__":
    main()
