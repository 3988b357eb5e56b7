"""cppmega: DSA/FP8 training kernels (C++/CUDA core, thin Python front end).

Ops take numpy arrays or torch tensors (CPU or CUDA) and return the same kind. Backends are
chosen per call: ``backend=`` argument, env ``CPPMEGA_BACKEND__<OP>``, env ``CPPMEGA_BACKEND``,
then AUTO; every choice is recorded in :func:`dispatch_log`.

``cppmega.torch`` adds torch.library custom ops; ``python -m cppmega.bench`` benchmarks.
"""

from . import _C
from ._C import (  # noqa: F401  (re-exported)
    CudaError,
    Error,
    InvalidArgument,
    NonFinite,
    Unsupported,
    built_with_cuda,
    clear_dispatch_log,
    cuda_device_count,
    cuda_unavailable_reason,
    device_info,
)
from .fp8 import fp8_amax, fp8_dequantize, fp8_pack, fp8_quantize
from .fp8_blocks import fp8_dequantize_blocks, fp8_quantize_blocks, mxfp8_dequantize, mxfp8_quantize
from .gemv import fp8_gemv
from .topk import topk

__version__ = _C.__version__

__all__ = [
    "CudaError", "Error", "InvalidArgument", "NonFinite", "Unsupported",
    "fp8_amax", "fp8_quantize", "fp8_dequantize", "fp8_pack", "topk",
    "fp8_quantize_blocks", "fp8_dequantize_blocks", "mxfp8_quantize", "mxfp8_dequantize", "fp8_gemv",
    "ops", "dispatch_log", "clear_dispatch_log",
    "built_with_cuda", "cuda_device_count", "cuda_unavailable_reason", "device_info",
]


def ops():
    """Every op and its backends: ``[{op, backends: [{name, device, features, available, reason}]}]``."""
    return _C.ops()


def dispatch_log():
    """The last (at most 256) dispatch decisions, oldest first: ``[{seq, op, backend, reason}]``."""
    return _C.dispatch_log()
