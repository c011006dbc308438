"""Sequence ops of the Mamba mixer, split from the modules that call them as in ``mamba_ssm.ops``: the selective
scan and the depthwise causal convolution, each with a pure PyTorch implementation and the optional fused CUDA
kernel (imported lazily, never at import time)."""
from raykd.models.ops.backend import BACKENDS, Backend
from raykd.models.ops.causal_conv1d import causal_conv1d, causal_conv1d_kernel
from raykd.models.ops.selective_scan import DEFAULT_CHUNK_SIZE, selective_scan, selective_scan_kernel

__all__ = ["BACKENDS", "Backend", "DEFAULT_CHUNK_SIZE", "causal_conv1d", "cuda_kernels_available", "selective_scan"]


def cuda_kernels_available() -> bool:
    """Whether both fused CUDA kernels (``mamba_ssm`` and ``causal_conv1d``) import in this process."""
    return selective_scan_kernel() is not None and causal_conv1d_kernel() is not None
