"""fp8_gemv: the decode-time FP8 weight times a few activation rows (docs/contracts.md section 3),
over include/cppmega/ops/fp8_gemv.hpp."""

import numpy as np

from . import _C
from ._arrays import Operand, dtype_name, is_torch
from .fp8 import _FLOAT, _backend


def _scale(op, arg, scale):
    """(object, dtype) for _C: a Python number (per tensor) or an f32 array (shape checked in C++)."""
    if isinstance(scale, bool):
        raise TypeError(f"{op}: {arg} must be a number or an f32 array, got bool")
    if isinstance(scale, (int, float, np.integer, np.floating)):
        return float(scale), None
    if is_torch(scale) or isinstance(scale, np.ndarray):
        s = Operand(op, arg, scale)
        return s.transport, s.dtype
    raise TypeError(f"{op}: {arg} must be a number or an f32 array, got {type(scale).__name__}")


def fp8_gemv(x, w, w_scale, x_scale=None, out_dtype=None, *, out=None, backend=None, stream=None):
    """``y[m, n] = sum_k deq(x)[m, k] * deq(w)[n, k]`` with f32 accumulation: ``y = x @ W.T``.

    w: e4m3 ``[N, K]`` (like a Linear weight; a uint8 w holds e4m3 bits).
    x: ``[M, K]`` f32/bf16/f16, or e4m3 (uint8 bits also taken as e4m3) together with ``x_scale``.
    w_scale: a number or a 1-element f32 array (per tensor), f32 ``[N]`` (per row), or f32
    ``[ceil(N/128), ceil(K/128)]`` (per (128,128) block).
    x_scale: only with e4m3 x, and then required: a number / 1-element array (per tensor), f32
    ``[M]`` (per row) or ``[M, ceil(K/128)]`` (per (1,128) block).
    Block scales multiply each 128-wide partial sum; per-tensor and per-row scales the final sum.
    out_dtype: "bf16" (default), "f16" or "f32"; out: a ``[M, N]`` buffer (row stride >= N), written
    and returned. Row strides of x and w are free (innermost dims contiguous).
    The CUDA fast path covers 1 <= M <= 64 with a 16-byte aligned w; other calls run a general kernel.
    """
    op = "fp8_gemv"
    xa = Operand(op, "x", x, raw="e4m3")
    wa = Operand(op, "w", w, raw="e4m3")
    ws, ws_dtype = _scale(op, "w_scale", w_scale)
    xs, xs_dtype = _scale(op, "x_scale", x_scale) if x_scale is not None else (None, None)
    want = dtype_name(op, "out_dtype", out_dtype, allowed=_FLOAT) if out_dtype is not None else None
    if out is None:
        # Wrong ranks: an empty stand-in, the op reports the rank.
        m = xa.shape[0] if len(xa.shape) == 2 else 0
        n = wa.shape[0] if len(wa.shape) == 2 else 0
        out = xa.empty((m, n), want or "bf16")
    oa = Operand(op, "out", out)
    if want is not None and oa.dtype != want:
        raise _C.InvalidArgument(f"{op}: out has dtype {oa.dtype} but out_dtype is {want}")
    _C.fp8_gemv_out(xa.transport, xa.dtype, wa.transport, wa.dtype, ws, ws_dtype, xs, xs_dtype, oa.transport,
                    oa.dtype, _backend(op, backend), xa.stream(stream))
    return out
