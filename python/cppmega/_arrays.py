"""Arrays in and out of the C++ core.

cppmega takes numpy arrays (ml_dtypes supplies bfloat16 and float8 dtypes) and torch tensors on
the CPU or a CUDA device, zero-copy through DLPack or the buffer protocol. Outputs are allocated
here by the input's framework, on its device, so results come from the caller's allocator and
type: torch in, torch out; numpy in, numpy out.

bf16/f16/fp8 do not cross DLPack reliably between numpy and torch versions, so such arrays travel
as integers of the same width and the real dtype goes to C++ by name.
"""

import sys

import numpy as np

from . import _C

try:  # bfloat16 and float8 dtypes for numpy
    import ml_dtypes
except ImportError:  # pragma: no cover - ml_dtypes is a dependency; stay importable without it
    ml_dtypes = None

# Framework dtype names (numpy dtype.name, torch dtype without "torch.") -> cppmega dtype names.
_DTYPES = {
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "float8_e4m3fn": "e4m3",
    "float8_e5m2": "e5m2",
    "float8_e8m0fnu": "e8m0",
    "uint8": "u8",
    "int32": "i32",
    "int64": "i64",
}
_ALIASES = dict(_DTYPES, f32="f32", f16="f16", bf16="bf16", e4m3="e4m3", e4m3fn="e4m3", e5m2="e5m2",
                e8m0="e8m0", u8="u8", i32="i32", i64="i64", float="f32", half="f16")
_SIZES = {"f32": 4, "f16": 2, "bf16": 2, "e4m3": 1, "e5m2": 1, "e8m0": 1, "u8": 1, "i32": 4, "i64": 8}
FP8 = ("e4m3", "e5m2")
# Exchanged as they are: every numpy/torch version agrees on these over DLPack.
_PLAIN = ("f32", "u8", "i32", "i64")


def _torch():
    # Never import torch here: numpy users should not pay for it.
    return sys.modules.get("torch")


def is_torch(obj):
    torch = _torch()
    return torch is not None and isinstance(obj, torch.Tensor)


def _key(dtype):
    """A framework dtype (numpy/ml_dtypes/torch dtype, type or name) as a lookup key."""
    if isinstance(dtype, str):
        return dtype.lower()
    s = str(dtype)
    if s.startswith("torch."):
        return s[len("torch."):]
    try:
        return np.dtype(dtype).name
    except TypeError:
        return s


def dtype_name(op, arg, dtype, allowed=None):
    """The cppmega name of `dtype` (a name, alias or framework dtype); InvalidArgument otherwise."""
    name = _ALIASES.get(_key(dtype))
    if name is None or (allowed is not None and name not in allowed):
        expect = ", ".join(allowed) if allowed is not None else "one of " + ", ".join(sorted(set(_DTYPES.values())))
        raise _C.InvalidArgument(f"{op}: {arg} must be {expect}, got {dtype!r}")
    return name


def fp8_format(op, format, arg="format"):
    return dtype_name(op, arg, format, allowed=FP8)


class Operand:
    """One array argument: the object handed to _C, its cppmega dtype and its framework."""

    __slots__ = ("value", "transport", "dtype", "torch")

    def __init__(self, op, arg, value, fp8=None, raw=None):
        """`fp8`: the format that a uint8 array's bits mean in an fp8 slot (q, quantize's out);
        an array with a real fp8 dtype must agree with it.
        `raw`: the dtype that a uint8 array's bits mean (e.g. "e8m0" scales, "e4m3" weights where
        the framework lacks the dtype); arrays of other dtypes pass as they are, for the C++
        checks to judge."""
        if is_torch(value):
            self.torch = True
            if value.requires_grad:
                value = value.detach()  # DLPack refuses tensors that require grad
            key = str(value.dtype)[len("torch."):]
        elif isinstance(value, np.ndarray):
            self.torch = False
            key = value.dtype.name
        else:
            raise TypeError(f"{op}: {arg} must be a numpy array or a torch tensor, got {type(value).__name__}")
        dtype = _DTYPES.get(key)
        if dtype is None:
            raise _C.InvalidArgument(
                f"{op}: {arg} has dtype {key}, which cppmega does not take "
                f"(it takes {', '.join(sorted(_DTYPES))})")
        if raw is not None and dtype == "u8":
            dtype = raw
        elif fp8 is not None:
            if dtype == "u8":
                dtype = fp8  # raw bits, e.g. torch without float8 dtypes
            elif dtype in FP8 and dtype != fp8:
                raise _C.InvalidArgument(f"{op}: {arg} has dtype {key} but format is {fp8}")
        self.value = value
        self.dtype = dtype
        self.transport = value if dtype in _PLAIN else _as_int(value, _SIZES[dtype], self.torch)
        if self.torch and value.is_cuda:
            # Export with stream=-1: cppmega runs on the caller's stream itself, so it needs no
            # cross-stream event. The default (stream=None) makes torch record an event and make
            # a stream wait on it for every operand of every call.
            self.transport = self.transport.__dlpack__(stream=-1)

    @property
    def shape(self):
        return tuple(self.value.shape)

    def empty(self, shape, dtype):
        """An uninitialised array of cppmega dtype `dtype` in this operand's framework and device."""
        if self.torch:
            torch = _torch()
            return torch.empty(shape, dtype=torch_dtype(dtype), device=self.value.device)
        return np.empty(shape, dtype=numpy_dtype(dtype))

    def stream(self, stream):
        """The CUDA stream handle for a call on this operand: `stream` if given (an int or an
        object with `.cuda_stream`, such as torch.cuda.Stream), else torch's current stream on
        the tensor's device; 0 (legacy default stream) otherwise."""
        if stream is not None:
            return int(getattr(stream, "cuda_stream", stream))
        if self.torch and self.value.is_cuda:
            torch = _torch()
            raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
            if raw is not None:  # the bare handle, without building a torch.cuda.Stream object
                return raw(self.value.get_device())
            return torch.cuda.current_stream(self.value.device).cuda_stream
        return 0


def _as_int(value, size, is_torch_value):
    if is_torch_value:
        torch = _torch()
        return value.view({1: torch.uint8, 2: torch.int16}[size])  # torch < 2.3 has no uint16
    return value.view({1: np.uint8, 2: np.uint16}[size])


def scale_arg(op, scale):
    """(object, dtype) for _C: a Python float, or a 1-element f32 array (checked in C++)."""
    if isinstance(scale, bool):
        raise TypeError(f"{op}: scale must be a number or a 1-element f32 array, got bool")
    if isinstance(scale, (int, float, np.integer, np.floating)):
        return float(scale), None
    if is_torch(scale) or isinstance(scale, np.ndarray):
        s = Operand(op, "scale", scale)
        return s.transport, s.dtype
    raise TypeError(f"{op}: scale must be a number or a 1-element f32 array, got {type(scale).__name__}")


def torch_dtype(name):
    """The torch dtype for a cppmega dtype name; fp8 without torch float8 dtypes (torch < 2.1)
    is uint8 holding the bits."""
    torch = _torch()
    attr = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2",
            "e8m0": "float8_e8m0fnu", "u8": "uint8", "i32": "int32", "i64": "int64"}[name]
    return getattr(torch, attr, torch.uint8 if name in ("e4m3", "e5m2", "e8m0") else None)


def numpy_dtype(name):
    """The numpy dtype for a cppmega dtype name (ml_dtypes for bf16/fp8; without ml_dtypes, fp8
    is uint8 holding the bits and bf16 is not available)."""
    plain = {"f32": np.float32, "f16": np.float16, "u8": np.uint8, "i32": np.int32, "i64": np.int64}
    if name in plain:
        return plain[name]
    attr = {"bf16": "bfloat16", "e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2", "e8m0": "float8_e8m0fnu"}[name]
    if ml_dtypes is not None and hasattr(ml_dtypes, attr):
        return getattr(ml_dtypes, attr)
    if name != "bf16":
        return np.uint8
    raise _C.InvalidArgument(f"numpy has no {attr} dtype without the ml_dtypes package (pip install ml_dtypes)")
