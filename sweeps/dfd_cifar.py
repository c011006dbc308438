"""DFD on CIFAR-10, one sweep per LR size (8x8, 16x16): see ``raykd/sweeps/dfd_cifar.py`` or ``--help``.

    python sweeps/dfd_cifar.py --smoke                                   # the whole pipeline on the built-in digits
    python sweeps/dfd_cifar.py --data-root /data/cifar-10-batches-py     # LR 8x8 and 16x16 students
    python sweeps/dfd_cifar.py --data-root ... --recipe paper            # the paper's 100 epochs, VGG-16
"""
import sys

from raykd.sweeps import run

if __name__ == "__main__":
    sys.exit(run("dfd_cifar"))
