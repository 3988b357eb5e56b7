"""Per-tensor FP8 ops (docs/contracts.md sections 2-3), over include/cppmega/ops/fp8.hpp.

Every op takes numpy arrays or torch tensors (CPU or CUDA) and returns arrays of the same
framework on the same device. Common keyword arguments:

- ``backend``: "reference", "cuda", "auto", ... (else env CPPMEGA_BACKEND__<OP>, then
  CPPMEGA_BACKEND, then AUTO). A named backend that cannot run the call raises
  NotImplementedError; it never runs another.
- ``stream``: CUDA stream (int handle or torch.cuda.Stream); default torch's current stream.

fp8 arrays: torch float8 dtypes / ml_dtypes float8 dtypes; a uint8 array is taken as the raw bits
of ``format`` (torch < 2.1 has no float8 dtypes, so there the fp8 outputs are uint8).
Errors: ValueError (cppmega.InvalidArgument), NotImplementedError (cppmega.Unsupported),
FloatingPointError (cppmega.NonFinite), RuntimeError (cppmega.CudaError).
"""

from . import _C
from ._arrays import FP8, Operand, dtype_name, fp8_format, scale_arg

_FLOAT = ("f32", "bf16", "f16")


def _backend(op, backend):
    if backend is None:
        return ""
    if not isinstance(backend, str):
        raise TypeError(f"{op}: backend must be a string, got {type(backend).__name__}")
    return backend


def fp8_amax(x, *, out=None, backend=None, stream=None):
    """max |x| over f32/bf16/f16 ``x`` of any shape as a 0-d f32 array on x's device (``out``,
    a 1-element f32 array, if given). 0 for an empty x; NaN anywhere gives NaN, Inf gives Inf."""
    op = "fp8_amax"
    xa = Operand(op, "x", x)
    if out is None:
        out = xa.empty((), "f32")
    oa = Operand(op, "out", out)
    _C.fp8_amax_out(xa.transport, xa.dtype, oa.transport, oa.dtype, _backend(op, backend), xa.stream(stream))
    return out


def fp8_quantize(x, scale, format=None, out=None, *, backend=None, stream=None):
    """``q = encode(x * (1/scale))``, saturating, round to nearest even.

    scale: the dequantisation multiplier, a Python number or a 1-element f32 array on x's device.
    format: "e4m3" (default) or "e5m2"; with ``out`` given, out's dtype decides.
    out: written and returned if given (x's shape, the format's dtype or uint8).
    """
    op = "fp8_quantize"
    xa = Operand(op, "x", x)
    fmt = fp8_format(op, format) if format is not None else None
    if out is None:
        out = xa.empty(xa.shape, fmt or "e4m3")
    oa = Operand(op, "out", out, fp8=fmt or _default_format(out))
    s, s_dtype = scale_arg(op, scale)
    _C.fp8_quantize_out(xa.transport, xa.dtype, s, s_dtype, oa.transport, oa.dtype, _backend(op, backend),
                        xa.stream(stream))
    return out


def fp8_dequantize(q, scale, out_dtype=None, *, format=None, out=None, backend=None, stream=None):
    """``x = decode(q) * scale`` rounded to ``out_dtype`` ("bf16" default, "f16", "f32"; any
    torch/numpy dtype or alias of those). ``format`` names what a uint8 ``q`` holds (default
    e4m3); for fp8-typed q it must agree. ``out``: written and returned if given."""
    op = "fp8_dequantize"
    fmt = fp8_format(op, format) if format is not None else None
    qa = Operand(op, "q", q, fp8=fmt or _default_format(q))
    want = dtype_name(op, "out_dtype", out_dtype, allowed=_FLOAT) if out_dtype is not None else None
    if out is None:
        out = qa.empty(qa.shape, want or "bf16")
    oa = Operand(op, "out", out)
    if want is not None and oa.dtype != want:
        raise _C.InvalidArgument(f"{op}: out has dtype {oa.dtype} but out_dtype is {want}")
    s, s_dtype = scale_arg(op, scale)
    _C.fp8_dequantize_out(qa.transport, qa.dtype, s, s_dtype, oa.transport, oa.dtype, _backend(op, backend),
                          qa.stream(stream))
    return out


def fp8_pack(x, format=None, pow2_scale=False, check_finite=True, *, out=None, backend=None, stream=None):
    """Current scaling in one call: ``(q, scale)`` with ``scale = amax/fmax`` (1 if amax is 0;
    rounded up to a power of two with ``pow2_scale``) and ``q = fp8_quantize(x, scale)``.

    A NaN/Inf in x raises FloatingPointError and writes nothing (the ``out`` buffers are left as
    they were); with ``check_finite=False`` the scale becomes NaN instead and no host sync
    happens. ``scale`` is a 0-d f32 array on x's device.
    out: q's buffer (as in fp8_quantize), or a ``(q, scale)`` pair of buffers.
    """
    op = "fp8_pack"
    xa = Operand(op, "x", x)
    fmt = fp8_format(op, format) if format is not None else None
    q, scale = out if isinstance(out, tuple) else (out, None)
    if q is None:
        q = xa.empty(xa.shape, fmt or "e4m3")
    if scale is None:
        scale = xa.empty((), "f32")
    qa = Operand(op, "out", q, fp8=fmt or _default_format(q))
    sa = Operand(op, "scale", scale)
    if qa.dtype in FP8:
        fmt = qa.dtype
    _C.fp8_pack_out(xa.transport, xa.dtype, qa.transport, qa.dtype, sa.transport, sa.dtype, fmt or "e4m3",
                    bool(pow2_scale), bool(check_finite), _backend(op, backend), xa.stream(stream))
    return q, scale


def _default_format(arr):
    """An fp8-typed array's own format, else e4m3 (for raw uint8 bits and for wrong dtypes, which
    the C++ checks then report)."""
    key = str(getattr(arr, "dtype", ""))
    return "e5m2" if key.endswith("float8_e5m2") else "e4m3"
