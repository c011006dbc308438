"""The precision of the teacher outputs a student sees: one rule for every way a teacher is served.

A stored table holds its rows at ``TeacherServiceConfig.precision`` (float16 by default: half float32's bytes).
Live actors and in-process teachers round their outputs to the same precision before a student sees them, so one
seed trains one student whether its teacher's outputs come from the tables, from live actors or from a teacher in
the training process. Measured on a FiGKD smoke run before this rule: live float32 outputs, within 0.004 of the
stored float16 ones, gave a different val top-1 per epoch and different final weights.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from raykd.config import TeacherServiceConfig

__all__ = ["DEFAULT_PRECISION", "at_precision", "stored_dtype"]

DEFAULT_PRECISION: str = TeacherServiceConfig.precision


def at_precision(value: Tensor, precision: str) -> Tensor:
    """``value`` rounded to ``precision``, as a tensor of that dtype: stored or sent on as it is, so that widening
    it back to float32 where a student reads it is exact."""
    return value.to(getattr(torch, precision))


def stored_dtype(precision: str) -> np.dtype:
    """The numpy dtype of rows at ``precision`` (its item size is what a stored row costs per value)."""
    return np.dtype(precision)
