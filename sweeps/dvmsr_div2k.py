"""DVMSR distillation on DIV2K: see ``raykd/sweeps/dvmsr_div2k.py`` or ``--help``.

    python sweeps/dvmsr_div2k.py --smoke                                  # the whole pipeline on built-in data
    python sweeps/dvmsr_div2k.py --download --val-root benchmark/Set5      # DIV2K into the cache dir, then the sweep
    python sweeps/dvmsr_div2k.py --val-root benchmark/Set5 --recipe paper  # 500k iterations of 128, the paper's
"""
import sys

from raykd.sweeps import run

if __name__ == "__main__":
    sys.exit(run("dvmsr_div2k"))
