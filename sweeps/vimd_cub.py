"""ViMD and its baselines on CUB-200-2011: see ``raykd/sweeps/vimd_cub.py`` or ``--help``.

    python sweeps/vimd_cub.py --smoke                          # the whole pipeline on the built-in demo data
    python sweeps/vimd_cub.py --data-root /data/CUB_200_2011   # 224 HR, 56 LR
    python sweeps/vimd_cub.py --data-root ... --recipe paper --teacher-init vim_t.pth --sr-checkpoint srgan.pth
"""
import sys

from raykd.sweeps import run

if __name__ == "__main__":
    sys.exit(run("vimd_cub"))
