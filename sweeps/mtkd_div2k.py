"""MTKD on DIV2K (three teachers, stage 1, the student sweep): see ``raykd/sweeps/mtkd_div2k.py`` or ``--help``.

    python sweeps/mtkd_div2k.py --smoke                                    # the whole pipeline on built-in data
    python sweeps/mtkd_div2k.py --download --val-root benchmark/Set5 --set14-root benchmark/Set14
    python sweeps/mtkd_div2k.py --val-root benchmark/Set5 --recipe paper --teacher-checkpoints swinir=F rcan=F edsr=F
"""
import sys

from raykd.sweeps import run

if __name__ == "__main__":
    sys.exit(run("mtkd_div2k"))
