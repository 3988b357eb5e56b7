"""The FP8 contract (docs/contracts.md sections 2-3) written again in numpy, independently of the
C++ reference: the oracle of the Python tests.

ml_dtypes' float8 casts round to nearest even and keep subnormals like the contract, but turn
finite overflow and Inf into NaN (e4m3fn) or Inf (e5m2) instead of saturating, and write NaN as
0x7E/0xFE: so values are clamped to +-max first and NaN codes are set to CUDA's canonical 0x7F.
"""

import ml_dtypes
import numpy as np

FMAX = {"e4m3": 448.0, "e5m2": 57344.0}
FP8 = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
FLOAT = {"f32": np.float32, "bf16": ml_dtypes.bfloat16, "f16": np.float16}
F32_MIN_NORMAL = np.float32(1.17549435e-38)


def f32(x):
    return np.asarray(x).astype(np.float32)


def encode(v, fmt):
    """f32 values -> fp8 bytes: RNE, subnormals kept, overflow and +-Inf saturate, NaN -> 0x7F."""
    v = np.asarray(v, np.float32)
    shape = v.shape
    v = v.reshape(-1)
    fmax = np.float32(FMAX[fmt])
    with np.errstate(invalid="ignore"):
        clamped = np.clip(v, -fmax, fmax)  # NaN stays NaN
        out = clamped.astype(FP8[fmt]).view(np.uint8).copy()
    out[np.isnan(v)] = 0x7F
    return out.reshape(shape)


def decode(bits, fmt):
    return np.asarray(bits, np.uint8).view(FP8[fmt]).astype(np.float32)


def amax(x):
    x = f32(x)
    if x.size == 0:
        return np.float32(0.0)
    return np.float32(np.max(np.abs(x)))  # np.max propagates NaN


def quantize(x, scale, fmt="e4m3"):
    inv = np.float32(1.0) / np.float32(scale)  # the reciprocal taken once, in f32
    with np.errstate(invalid="ignore", over="ignore"):
        return encode(f32(x) * inv, fmt)


def dequantize(bits, scale, fmt="e4m3", out="bf16"):
    with np.errstate(invalid="ignore", over="ignore"):
        return (decode(bits, fmt) * np.float32(scale)).astype(FLOAT[out])


def scale_from_amax(a, fmt="e4m3", pow2=False):
    a = np.float32(a)
    if not np.isfinite(a):
        return np.float32(np.nan)
    if a == 0:
        return np.float32(1.0)
    s = max(np.float32(a / np.float32(FMAX[fmt])), F32_MIN_NORMAL)
    if pow2:
        b = np.array(s, np.float32).view(np.uint32)
        if b & 0x7FFFFF:  # not a power of two yet: next one up
            s = np.array((b & 0x7F800000) + 0x800000, np.uint32).view(np.float32)[()]
    return np.float32(s)


def pack(x, fmt="e4m3", pow2=False):
    s = scale_from_amax(amax(x), fmt, pow2)
    return quantize(x, s, fmt), s


def bf16_all():
    """Every bf16 bit pattern, as ml_dtypes.bfloat16."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16)


def f16_all():
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)


def f32_boundaries(fmt):
    """f32 values at the edges of fmt: zero signs, subnormal ties, the normal boundary, max and
    the overflow ties, Inf, NaN, extremes of f32."""
    fmax = FMAX[fmt]
    sub = 2.0 ** -9 if fmt == "e4m3" else 2.0 ** -16     # smallest subnormal
    norm = 2.0 ** -6 if fmt == "e4m3" else 2.0 ** -14    # smallest normal
    ulp_top = 32.0 if fmt == "e4m3" else 8192.0          # spacing below max
    v = [0.0, sub, sub / 2, sub * 0.5000001, sub * 1.5, sub * 2.5, sub * 3.5, sub / 4, norm, norm - sub / 2,
         norm - sub, norm + sub / 2, 1.0, 1.0 + 2.0 ** -4, 1.0 + 2.0 ** -3 + 2.0 ** -4, fmax, fmax - ulp_top / 2,
         fmax + ulp_top / 4, fmax + ulp_top / 2, fmax + ulp_top, fmax * 2, 1e30, 3.4028235e38, 1.4e-45, 1.2e-38,
         np.inf, np.nan]
    v = np.array(v, np.float32)
    return np.concatenate([v, -v])


def f32_random(rng, n):
    """f32 values over a wide exponent range (scale 1 reaches both ends of each fp8 format)."""
    mant = rng.uniform(1.0, 2.0, n).astype(np.float32)
    exp = rng.integers(-30, 30, n).astype(np.float32)
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), n)
    return (sign * mant * np.exp2(exp)).astype(np.float32)
