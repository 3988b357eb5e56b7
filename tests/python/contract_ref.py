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


# ---- Block scaling (section 3, "Block scaling") -----------------------------------------------------

BLOCK_K = 128


def ceil_div(a, b):
    return -(-a // b)


def block_scales_shape(shape, block):
    """(1,128): shape[:-1] + [ceil(K/128)]; (128,128): shape[:-2] + [ceil(M/128), ceil(K/128)]."""
    shape = tuple(shape)
    if block == "1x128":
        return shape[:-1] + (ceil_div(shape[-1], BLOCK_K),)
    return shape[:-2] + (ceil_div(shape[-2], 128), ceil_div(shape[-1], BLOCK_K))


def scales_from_amax(a, fmt="e4m3", pow2=False):
    """scale_from_amax over an array of block amaxes (NaN for a non-finite amax)."""
    a = np.asarray(a, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.maximum(a / np.float32(FMAX[fmt]), F32_MIN_NORMAL).astype(np.float32)
        s = np.where(a == 0, np.float32(1.0), s).astype(np.float32)
    if pow2:
        b = s.view(np.uint32)
        up = ((b & np.uint32(0x7F800000)) + np.uint32(0x800000)).astype(np.uint32).view(np.float32)
        s = np.where((b & np.uint32(0x7FFFFF)) != 0, up, s).astype(np.float32)
    s[~np.isfinite(a)] = np.nan
    return s


def _tiles(x, block):
    """x (f32) as blocks: [nblocks_total..., rows, cols] padded with zeros, and an undo function.
    1x128: [R, kb, 128]; 128x128: [B, mb, 128, kb, 128]."""
    K = x.shape[-1]
    kb = ceil_div(K, BLOCK_K)
    if block == "1x128":
        r = x.reshape(-1, K)
        p = np.zeros((r.shape[0], kb * BLOCK_K), np.float32)
        p[:, :K] = r
        return p.reshape(r.shape[0], kb, BLOCK_K), (-1,)
    M = x.shape[-2]
    mb = ceil_div(M, 128)
    r = x.reshape(-1, M, K)
    p = np.zeros((r.shape[0], mb * 128, kb * BLOCK_K), np.float32)
    p[:, :M, :K] = r
    return p.reshape(r.shape[0], mb, 128, kb, BLOCK_K), (2, 4)


def quantize_blocks(x, block="1x128", fmt="e4m3", pow2=False):
    """(q bytes, f32 scales): per block, scale as fp8_pack from the block's amax (NaN propagates:
    the zero padding never changes an amax), q = encode(x * (1/scale))."""
    x = f32(x)
    t, axes = _tiles(x, block)
    with np.errstate(invalid="ignore"):
        if block == "1x128":
            a = np.max(np.abs(t), axis=-1)
            s = scales_from_amax(a, fmt, pow2)
            inv = (np.float32(1.0) / s).astype(np.float32)
            with np.errstate(over="ignore"):
                q = encode(t * inv[..., None], fmt)
            q = q.reshape(t.shape[0], -1)[:, :x.shape[-1]]
        else:
            a = np.max(np.abs(t), axis=(2, 4))
            s = scales_from_amax(a, fmt, pow2)
            inv = (np.float32(1.0) / s).astype(np.float32)
            with np.errstate(over="ignore"):
                q = encode(t * inv[:, :, None, :, None], fmt)
            q = q.reshape(t.shape[0], t.shape[1] * 128, -1)[:, :x.shape[-2], :x.shape[-1]]
    return q.reshape(x.shape), s.reshape(block_scales_shape(x.shape, block))


def dequantize_blocks(bits, scales, block="1x128", fmt="e4m3", out="bf16"):
    """decode(q) * the scale of each element's block (f32), rounded to `out`."""
    d = decode(bits, fmt)
    s = np.asarray(scales, np.float32)
    K = d.shape[-1]
    if block == "1x128":
        full = np.repeat(s, BLOCK_K, axis=-1)[..., :K]
    else:
        M = d.shape[-2]
        full = np.repeat(np.repeat(s, 128, axis=-2), BLOCK_K, axis=-1)[..., :M, :K]
    with np.errstate(invalid="ignore", over="ignore"):
        return (d * full).astype(FLOAT[out])


# ---- MXFP8 (section 3, "MXFP8") ----------------------------------------------------------------------

MX_BLOCK = 32


def mx_quantize(x):
    """(q bytes, e8m0 bytes): X = floor(log2(amax)) - 8 clamped to [-127, 127] (amax 0 -> -127),
    byte X + 127 (0xFF and NaN data for a non-finite block), q = encode_e4m3(x * 2^-X)."""
    x = f32(x)
    K = x.shape[-1]
    t = x.reshape(-1, K // MX_BLOCK, MX_BLOCK)
    with np.errstate(invalid="ignore"):
        a = np.max(np.abs(t), axis=-1)
    finite = np.isfinite(a)
    _, e = np.frexp(np.where(finite, a, 0).astype(np.float32))  # a = m * 2^e, m in [0.5, 1)
    X = np.clip(np.where(a > 0, e.astype(np.int64) - 1 - 8, -127), -127, 127)
    byte = np.where(finite, X + 127, 0xFF).astype(np.uint8)
    mult = np.where(finite, np.ldexp(np.float32(1.0), -X).astype(np.float32), np.float32(np.nan)).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        q = encode(t * mult[..., None], "e4m3")
    return q.reshape(x.shape), byte.reshape(x.shape[:-1] + (K // MX_BLOCK,))


def e8m0_value(b):
    """2^(b - 127) as f32 (b = 0 is the subnormal 2^-127), NaN for 0xFF."""
    b = np.asarray(b, np.uint8)
    e = np.where(b == 0xFF, 127, b).astype(np.int64) - 127  # 0xFF: no power of two, NaN below
    v = np.ldexp(np.float64(1.0), e).astype(np.float32)
    return np.where(b == 0xFF, np.float32(np.nan), v).astype(np.float32)


def mx_dequantize(bits, scale_bytes, out="bf16"):
    d = decode(bits, "e4m3")
    s = np.repeat(e8m0_value(scale_bytes), MX_BLOCK, axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        return (d * s).astype(FLOAT[out])


# ---- fp8_gemv (section 3) ----------------------------------------------------------------------------

def scale_kind(s, rows, block_rows):
    """The granularity of a gemv scale from its shape: 'tensor' (a number or one element), 'row'
    ([rows]) or 'block' ([block_rows, ceil(K/128)]); checked by the caller."""
    if np.ndim(s) == 2 and np.shape(s)[0] == block_rows:
        return "block"
    if np.ndim(s) == 1 and np.shape(s)[0] == rows:
        return "row"
    return "tensor"


def gemv(x, w, w_scale, x_scale=None):
    """y[m, n] = sum_k deq(x)[m, k] * deq(w)[n, k] in f64, from already-decoded x [M, K] and
    w [N, K] (f64). Block scales multiply each 128-wide partial sum, per-tensor and per-row scales
    the final sum."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    M, K = x.shape
    N = w.shape[0]
    kb = ceil_div(K, BLOCK_K)
    xp = np.zeros((M, kb * BLOCK_K))
    wp = np.zeros((N, kb * BLOCK_K))
    xp[:, :K], wp[:, :K] = x, w
    xb = xp.reshape(M, kb, BLOCK_K).transpose(1, 0, 2)          # [kb, M, 128]
    wb = wp.reshape(N, kb, BLOCK_K).transpose(1, 2, 0)          # [kb, 128, N]
    part = np.matmul(xb, wb).transpose(1, 2, 0)                  # [M, N, kb]: one sum per block
    final = np.ones((M, N))
    for s, rows, block_rows, is_w in ((w_scale, N, ceil_div(N, 128), True), (x_scale, M, M, False)):
        if s is None:
            continue
        s = np.asarray(s, np.float64)
        kind = scale_kind(s, rows, block_rows)
        if kind == "block":
            per = np.repeat(s, 128, axis=0)[:N] if is_w else s      # [rows, kb]
            part = part * (per[None, :, :] if is_w else per[:, None, :])
        elif kind == "row":
            final = final * (s[None, :] if is_w else s[:, None])
        else:
            final = final * s.reshape(-1)[0]
    return part.sum(axis=-1) * final
