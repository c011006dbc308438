"""DVMSR distillation (Lei, Zhang & Cao, "DVMSR: Distillated Vision Mamba for Efficient Super-Resolution",
CVPRW 2024, Sec. 3.3), registered as the SR method ``dvmsr``.

A frozen large DVMSR (``dvmsr_teacher``: 8 RSSB, 192 channels) supervises the small one (``dvmsr``: 4 RSSB,
60 channels) next to the ground truth::

    L = w_gt * L1(I_stu, I_GT) + w_kd * L1(x_stu, x_tea)

where ``x`` is the SR image (``position="output"``: the paper's end-level distillation, its choice) or the
deep feature entering the reconstruction module (``position="feature"``: the mid-level alternative of its
ablation; :meth:`raykd.models.dvmsr.DVMSR.extract`'s ``"body"``, at LR resolution). Student and teacher
features differ in width, so in feature mode the student's is first mapped to the teacher's by a learned 1x1
convolution (a FitNet regressor, Romero et al., ICLR 2015, Sec. 2.2) trained with the student. The official
repository (github.com/nathan66666/DVMSR) ships inference code only, so the projection is ours.

The paper's "set 1" of loss weights (its Sec. 4.1 distillation settings) weights the two L1 terms equally, so
the defaults are ``w_gt = w_kd = 1``; the sweep searches both and the position.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from raykd.methods.base import Choice, Float, Outputs, Param, Shapes, require_outputs
from raykd.methods.sr import SRMethod
from raykd.registry import METHODS

__all__ = ["DVMSRDistill"]

POSITIONS = {"output": "image", "feature": "body"}  # distill position -> the output name it compares


@METHODS.register()
class DVMSRDistill(SRMethod):
    """``w_gt * L1(I_stu, I_GT) + w_kd * L1(x_stu, x_tea)`` at ``position`` "output" or "feature" (see module)."""

    name = "dvmsr"
    hparams: ClassVar[dict[str, Param]] = {
        "w_gt": Float(1.0, search=(0.1, 1.0)), "w_kd": Float(1.0, search=(0.1, 10.0), log=True),
        "position": Choice("output", tuple(POSITIONS), search=tuple(POSITIONS))}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.proj: nn.Conv2d | None = None

    @property
    def _key(self) -> str:
        return POSITIONS[self.params["position"]]

    def teacher_outputs(self) -> tuple[str, ...]:
        return (self._key,)

    def student_outputs(self) -> tuple[str, ...]:
        return (self._key,)

    def bind(self, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
        """Output mode: the SR images must match. Feature mode: both ``"body"`` features are ``(C, h, w)`` of one
        spatial size (the LR patch's); the 1x1 projection from the student's C to the teacher's is built here."""
        if self._key == "image":
            super().bind(student_shapes, teacher_shapes)
            return
        require_outputs(self.name, "body", student_shapes, teacher_shapes)
        s, t = tuple(student_shapes["body"]), tuple(teacher_shapes["body"])
        if len(s) != 3 or len(t) != 3 or s[1:] != t[1:]:
            raise ValueError(f"method 'dvmsr': position 'feature' needs student and teacher 'body' features "
                             f"(C, h, w) of the same h x w (the LR patch); got {s} and {t}")
        self.proj = nn.Conv2d(s[0], t[0], kernel_size=1)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, epoch: int) -> Outputs:
        p = self.params
        image = student["image"]
        l1 = p["w_gt"] * F.l1_loss(image, target.detach().to(image.dtype))
        if self._key == "image":
            mine = image
        else:
            if self.proj is None:
                raise RuntimeError("method 'dvmsr': position 'feature' needs bind(student_shapes, teacher_shapes) "
                                   "before the first forward (it builds the 1x1 projection)")
            mine = self.proj(student["body"])
        # cached teacher outputs may arrive as float16
        theirs = teacher[self._key].detach().to(mine.dtype)
        return {"l1": l1, "kd": p["w_kd"] * F.l1_loss(mine, theirs)}
