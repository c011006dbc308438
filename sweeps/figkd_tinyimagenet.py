"""FiGKD and the classification baselines on TinyImageNet: see ``raykd/sweeps/figkd_tinyimagenet.py`` or ``--help``.

    python sweeps/figkd_tinyimagenet.py --smoke              # the whole pipeline on the built-in demo data
    python sweeps/figkd_tinyimagenet.py --download           # TinyImageNet into the cache dir, then the sweep
"""
import sys

from raykd.sweeps import run

if __name__ == "__main__":
    sys.exit(run("figkd_tinyimagenet"))
