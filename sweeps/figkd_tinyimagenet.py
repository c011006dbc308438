"""FiGKD and the classification baselines on TinyImageNet: see ``raykd/sweeps/figkd_tinyimagenet.py`` or ``--help``.

    python sweeps/figkd_tinyimagenet.py --smoke              # the whole pipeline on the built-in demo data
    python sweeps/figkd_tinyimagenet.py --download           # TinyImageNet into the cache dir, then the sweep
    python sweeps/figkd_tinyimagenet.py --recipe paper       # the KD protocol's 240 epochs
"""
import sys

from raykd.sweeps import run

if __name__ == "__main__":
    sys.exit(run("figkd_tinyimagenet"))
