"""Backend choice shared by the SSM ops: the fused CUDA kernels of the optional ``mamba-ssm`` /
``causal-conv1d`` packages, or raykd's PyTorch code.

``"auto"`` picks ``"cuda"`` for CUDA tensors when the kernel imports and ``"torch"`` otherwise; ``"reference"``
is the step-by-step code the tests compare against. The kernels are probed lazily, the first time an op asks
for them, never at import: without CUDA their packages fail to load their compiled extension.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

__all__ = ["BACKENDS", "Backend", "pick_backend"]

Backend = Literal["auto", "cuda", "torch", "reference"]
BACKENDS = ("auto", "cuda", "torch", "reference")
_INSTALL_HINT = "install the cuda extra: pip install raykd[cuda] (needs an NVIDIA GPU and the CUDA toolkit)"


def pick_backend(backend: str, x: Tensor, kernel: Callable[[], Callable | None], op: str, package: str) -> str:
    """The backend ``op`` runs with for input ``x``; ``kernel()`` returns the fused kernel from ``package``,
    or None where it does not import."""
    if backend not in BACKENDS:
        raise ValueError(f"{op} got backend={backend!r}; use one of {BACKENDS}")
    if backend == "auto":
        return "cuda" if x.is_cuda and kernel() is not None else "torch"
    if backend == "cuda":
        if kernel() is None:
            raise RuntimeError(
                f"{op}(backend='cuda') needs the {package} package, which does not import here; {_INSTALL_HINT}, "
                "or use backend='torch'"
            )
        if not x.is_cuda:
            raise ValueError(f"{op}(backend='cuda') needs CUDA tensors, got device {x.device}")
    return backend
