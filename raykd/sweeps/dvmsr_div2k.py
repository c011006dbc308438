"""DVMSR distillation (Lei, Zhang & Cao, CVPRW 2024) on DIV2K, swept with Ray Tune + Optuna.

    python sweeps/dvmsr_div2k.py --smoke                                  # the whole pipeline on built-in data
    python sweeps/dvmsr_div2k.py --download --val-root benchmark/Set5      # DIV2K into the cache dir, then the sweep
    python sweeps/dvmsr_div2k.py --data-root /data/DIV2K --val-root benchmark/Set5 --set14-root benchmark/Set14
    python sweeps/dvmsr_div2k.py --address auto ...                       # on a running cluster (ray up cluster.yaml)

The teacher (``dvmsr_teacher``: 8 RSSB, 192 channels, classical pixel-shuffle upsampler) is trained first unless
--teacher names a checkpoint, and kept in the cache directory; the teacher service computes its whole-image
outputs once and every trial reads crops of them. The student is ``dvmsr``, the released network (ViMMs without
the residual of the paper's figure; ``--student dvmsr_paper`` keeps it), 0.424M parameters at x4. The sweep
compares it alone (``none``) with DVMSR distillation (``dvmsr``: ``w_gt * L1(I_stu, I_GT) + w_kd * L1(x_stu,
x_tea)``; its defaults are the paper's "set 1" of loss weights, w_gt = w_kd = 1, at the end-level output, and the
sweep searches both weights and the distill position, output or mid-level feature). Trials are validated on
--val-root (Set5 in the benchmark layout HR/ + LR_bicubic/X{s}/; DIV2K's 100 valid images without it); with
--set14-root every trial's final student is also measured on Set14, and both sets' PSNR/SSIM (Y channel, MATLAB
rounding unless --y-channel float, scale-pixel border) join the results table. Results go to <storage>/<name>/.
"""
from __future__ import annotations

import argparse

from raykd.config import ModelConfig
from raykd.sweeps.div2k import DIV2KSweep
from raykd.tune.spec import Profile

__all__ = ["DVMSRDiv2K", "SMOKE_STUDENT", "SMOKE_TEACHER"]

# --smoke: a few channels, one or two ViMMs per RSSB, so that the pure-PyTorch scan trains in minutes on two cores
SMOKE_STUDENT = {"embed_dim": 16, "depths": (1, 1)}
SMOKE_TEACHER = {"embed_dim": 24, "depths": (1, 1, 1)}


class DVMSRDiv2K(DIV2KSweep):
    name = "dvmsr_div2k"
    methods = ("none", "dvmsr")
    full = Profile(num_samples=16, epochs=30, teacher_epochs=60, batch_size=32)
    smoke = Profile(num_samples=4, epochs=2, teacher_epochs=3, batch_size=8)
    patch = (64, 16)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        super().add_arguments(p)
        p.add_argument("--student", choices=("dvmsr", "dvmsr_paper"), default="dvmsr",
                       help="dvmsr: the released network behind Table 1 (default); dvmsr_paper: with the per-ViMM "
                            "residual of the paper's Fig. 2")

    def student(self, args: argparse.Namespace) -> ModelConfig:
        return ModelConfig(args.student, SMOKE_STUDENT if args.smoke else {})

    def teacher_model(self, args: argparse.Namespace) -> ModelConfig:
        return ModelConfig("dvmsr_teacher", SMOKE_TEACHER if args.smoke else {})
