"""Losses: differentiable wavelets and the distillation terms the methods combine."""
