"""The PyTorch layer.

- Helpers: torch dtypes of cppmega formats, and bit-level views (``bits``/``from_bits``) that work
  on every torch version (fp8 results are uint8 where torch has no float8 dtypes, torch < 2.1).
- Custom ops (torch >= 2.4, ``torch.library.custom_op``): ``torch.ops.cppmega.fp8_amax``,
  ``fp8_quantize``, ``fp8_quantize_host_scale``, ``fp8_dequantize``, ``fp8_pack``, with fake
  (meta) implementations so torch.compile traces through them without a graph break.
  ``CUSTOM_OPS`` says whether they were registered.

The plain functions (``cppmega.fp8_quantize`` etc.) already take and return torch tensors; the
custom ops are for code that torch.compile should see.
"""

from typing import Tuple

import torch

from . import fp8 as _fp8
from ._arrays import FP8, dtype_name, fp8_format, torch_dtype

HAS_FLOAT8 = hasattr(torch, "float8_e4m3fn") and hasattr(torch, "float8_e5m2")
CUSTOM_OPS = False


def fp8_dtype(format="e4m3"):
    """The torch dtype of fp8 ``format``: torch.float8_e4m3fn / float8_e5m2, or torch.uint8
    (raw bits) on torch without float8 dtypes."""
    return torch_dtype(fp8_format("fp8_dtype", format))


def bits(t):
    """The bytes of an fp8 (or uint8) tensor as a uint8 tensor of the same shape (a view)."""
    if t.dtype == torch.uint8:
        return t
    if t.element_size() != 1:
        raise ValueError(f"bits: expected a 1-byte dtype, got {t.dtype}")
    return t.view(torch.uint8)


def from_bits(t, format="e4m3"):
    """A uint8 tensor of fp8 bits viewed as ``format``'s torch dtype (unchanged on torch without
    float8 dtypes)."""
    if t.dtype != torch.uint8:
        raise ValueError(f"from_bits: expected a uint8 tensor, got {t.dtype}")
    return t.view(fp8_dtype(format))


def _register():
    """Registers the custom ops; they call the same Python functions as eager code, so outputs
    come from torch's allocator and run on the current stream."""
    lib = torch.library

    @lib.custom_op("cppmega::fp8_amax", mutates_args=())
    def fp8_amax(x: torch.Tensor) -> torch.Tensor:
        return _fp8.fp8_amax(x)

    @fp8_amax.register_fake
    def _(x):
        return x.new_empty((), dtype=torch.float32)

    @lib.custom_op("cppmega::fp8_quantize", mutates_args=())
    def fp8_quantize(x: torch.Tensor, scale: torch.Tensor, format: str = "e4m3") -> torch.Tensor:
        return _fp8.fp8_quantize(x, scale, format)

    @fp8_quantize.register_fake
    def _(x, scale, format="e4m3"):
        return torch.empty_like(x, dtype=fp8_dtype(format))

    @lib.custom_op("cppmega::fp8_quantize_host_scale", mutates_args=())
    def fp8_quantize_host_scale(x: torch.Tensor, scale: float, format: str = "e4m3") -> torch.Tensor:
        return _fp8.fp8_quantize(x, scale, format)

    @fp8_quantize_host_scale.register_fake
    def _(x, scale, format="e4m3"):
        return torch.empty_like(x, dtype=fp8_dtype(format))

    @lib.custom_op("cppmega::fp8_dequantize", mutates_args=())
    def fp8_dequantize(q: torch.Tensor, scale: torch.Tensor, out_dtype: str = "bf16") -> torch.Tensor:
        return _fp8.fp8_dequantize(q, scale, out_dtype)

    @fp8_dequantize.register_fake
    def _(q, scale, out_dtype="bf16"):
        return torch.empty_like(q, dtype=torch_dtype(dtype_name("fp8_dequantize", "out_dtype", out_dtype)))

    @lib.custom_op("cppmega::fp8_pack", mutates_args=())
    def fp8_pack(x: torch.Tensor, format: str = "e4m3", pow2_scale: bool = False,
                 check_finite: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        return _fp8.fp8_pack(x, format, pow2_scale, check_finite)

    @fp8_pack.register_fake
    def _(x, format="e4m3", pow2_scale=False, check_finite=True):
        return torch.empty_like(x, dtype=fp8_dtype(format)), x.new_empty((), dtype=torch.float32)


# custom_op came with torch 2.4; the fp8 fake outputs need float8 dtypes. Older torch (1.13 in
# CI) keeps the eager functions only.
if HAS_FLOAT8 and hasattr(getattr(torch, "library", None), "custom_op"):
    _register()
    CUSTOM_OPS = True


def fp8_quantize(x, scale, format="e4m3"):
    """torch.ops.cppmega.fp8_quantize (tensor scale) or fp8_quantize_host_scale (number)."""
    if not CUSTOM_OPS:
        return _fp8.fp8_quantize(x, scale, format)
    if isinstance(scale, torch.Tensor):
        return torch.ops.cppmega.fp8_quantize(x, scale, format)
    return torch.ops.cppmega.fp8_quantize_host_scale(x, float(scale), format)


__all__ = ["CUSTOM_OPS", "FP8", "HAS_FLOAT8", "bits", "from_bits", "fp8_dtype", "fp8_quantize"]
