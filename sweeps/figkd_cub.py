"""FiGKD and the logit-distillation baselines on CUB-200-2011: see ``raykd/sweeps/figkd_cub.py`` or ``--help``.

    python sweeps/figkd_cub.py --smoke                          # the whole pipeline on the built-in demo data
    python sweeps/figkd_cub.py --data-root /data/CUB_200_2011   # ResNet34 -> ResNet18 at 224 px
    python sweeps/figkd_cub.py --recipe paper --data-root ...   # the fine-grained protocol's 200 epochs
"""
import sys

from raykd.sweeps import run

if __name__ == "__main__":
    sys.exit(run("figkd_cub"))
