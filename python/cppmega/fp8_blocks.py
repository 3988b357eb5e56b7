"""Block-scaled FP8 (docs/contracts.md section 3, "Block scaling" and "MXFP8"), over
include/cppmega/ops/fp8_blocks.hpp.

- ``fp8_quantize_blocks`` / ``fp8_dequantize_blocks``: one f32 dequantisation scale per (1,128)
  block (per token, DeepSeek activations) or per (128,128) tile (weights), each chosen like
  ``fp8_pack`` from the block's amax.
- ``mxfp8_quantize`` / ``mxfp8_dequantize``: OCP MXFP8, e4m3 data and one e8m0 scale byte per
  32 values along the last dim.

Inputs and outputs follow cppmega.fp8: numpy arrays or torch tensors (CPU or CUDA), outputs
allocated by the input's framework on its device, ``backend=`` and ``stream=`` as there.
e8m0 scales are torch.float8_e8m0fnu / ml_dtypes.float8_e8m0fnu where those exist, else uint8
holding the bits; a uint8 array is accepted wherever e8m0 (or, with ``format``, fp8) is expected.

Scale shapes (``fp8_block_scales_shape``, ``mxfp8_scales_shape``):
(1,128) ``x.shape[:-1] + (ceil(K/128),)``; (128,128) ``x.shape[:-2] + (ceil(M/128), ceil(K/128))``;
MX ``x.shape[:-1] + (K/32,)``. Partial edge blocks are blocks of their own.

Non-finite input: a block holding NaN/Inf gets a NaN scale (MX: the byte 0xFF) and NaN codes. With
``check_finite`` (the default) the quantizers then raise FloatingPointError *after* writing q and
the scales (one pass over x; on CUDA one stream synchronisation), so buffers passed as ``out``
hold what ``check_finite=False`` would have returned.
"""

from . import _C
from ._arrays import FP8, Operand, dtype_name, fp8_format
from .fp8 import _FLOAT, _backend, _default_format

BLOCK_K = 128   # block length along K of both f32-scaled block shapes
MX_BLOCK = 32   # MXFP8 block length
_BLOCK_NAMES = {"1x128": "1x128", "(1,128)": "1x128", "1,128": "1x128",
                "128x128": "128x128", "(128,128)": "128x128", "128,128": "128x128"}


def _ceil(a, b):
    return -(-a // b)


def block_name(op, block):
    """"1x128" or "128x128" for a block given as such a string or as a (rows, 128) pair."""
    key = None
    if isinstance(block, str):
        key = block.replace(" ", "").lower()
    elif isinstance(block, (tuple, list)) and len(block) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in block):
        key = f"{block[0]}x{block[1]}"
    name = _BLOCK_NAMES.get(key)
    if name is None:
        raise _C.InvalidArgument(f"{op}: block must be '1x128' or '128x128' (or (1, 128), (128, 128)), got {block!r}")
    return name


def fp8_block_scales_shape(shape, block="1x128"):
    """The shape of the f32 scales of an x of ``shape``: (1,128) blocks ``shape[:-1] + (ceil(K/128),)``
    (rank >= 1), (128,128) blocks ``shape[:-2] + (ceil(M/128), ceil(K/128))`` (rank >= 2); None
    where x's rank is too small."""
    shape = tuple(int(d) for d in shape)
    if block_name("fp8_block_scales_shape", block) == "1x128":
        return shape[:-1] + (_ceil(shape[-1], BLOCK_K),) if len(shape) >= 1 else None
    return shape[:-2] + (_ceil(shape[-2], 128), _ceil(shape[-1], BLOCK_K)) if len(shape) >= 2 else None


def mxfp8_scales_shape(shape):
    """The shape of the e8m0 scales of an x of ``shape``: ``shape[:-1] + (K/32,)`` (K must be a
    multiple of 32; the ops reject other K); None for a 0-d x."""
    shape = tuple(int(d) for d in shape)
    return shape[:-1] + (_ceil(shape[-1], MX_BLOCK),) if len(shape) >= 1 else None


def _split_out(op, out):
    if out is None:
        return None, None
    if isinstance(out, tuple):
        if len(out) != 2:
            raise TypeError(f"{op}: out must be q's buffer or a (q, scales) pair, got a tuple of {len(out)}")
        return out
    return out, None


def _out_dtype(op, out_dtype):
    return dtype_name(op, "out_dtype", out_dtype, allowed=_FLOAT) if out_dtype is not None else None


def _dequant_out(op, qa, out_dtype, out):
    want = _out_dtype(op, out_dtype)
    if out is None:
        out = qa.empty(qa.shape, want or "bf16")
    oa = Operand(op, "out", out)
    if want is not None and oa.dtype != want:
        raise _C.InvalidArgument(f"{op}: out has dtype {oa.dtype} but out_dtype is {want}")
    return out, oa


# ---- (1,128) / (128,128) blocks, f32 scales -------------------------------------------------------

def fp8_quantize_blocks(x, block="1x128", format=None, pow2_scale=False, check_finite=True, *, out=None, backend=None,
                        stream=None):
    """Block-scaled quantisation: ``(q, scales)``.

    x: f32/bf16/f16 ``[..., K]`` ((1,128) blocks) or ``[..., M, K]`` ((128,128) blocks), contiguous.
    block: "1x128" (default) or "128x128" (also (1, 128) / (128, 128)).
    format: "e4m3" (default) or "e5m2"; with ``out`` given, q's dtype decides.
    Each block: ``scale = amax/fmax`` (1 for an all-zero block, clamped below at 2^-126, rounded
    up to a power of two with ``pow2_scale``), ``q = encode(x * (1/scale))``.
    Returns q (x's shape, the format's dtype) and f32 scales (see fp8_block_scales_shape).
    out: q's buffer, or a ``(q, scales)`` pair of buffers; written and returned.
    """
    op = "fp8_quantize_blocks"
    blk = block_name(op, block)
    xa = Operand(op, "x", x)
    fmt = fp8_format(op, format) if format is not None else None
    q, scales = _split_out(op, out)
    if q is None:
        q = xa.empty(xa.shape, fmt or "e4m3")
    if scales is None:
        # x of too small a rank: an empty stand-in, the op reports the rank.
        scales = xa.empty(fp8_block_scales_shape(xa.shape, blk) or (0,), "f32")
    qa = Operand(op, "q", q, fp8=fmt or _default_format(q))
    sa = Operand(op, "scales", scales)
    if qa.dtype in FP8:
        fmt = qa.dtype
    _C.fp8_quantize_blocks_out(xa.transport, xa.dtype, qa.transport, qa.dtype, sa.transport, sa.dtype, blk,
                               fmt or "e4m3", bool(pow2_scale), bool(check_finite), _backend(op, backend),
                               xa.stream(stream))
    return q, scales


def _infer_block(op, q_shape, s_shape):
    """The block shape that q's and the scales' shapes imply. Where both fit (M <= 1) they mean
    the same blocks."""
    one = fp8_block_scales_shape(q_shape, "1x128")
    tile = fp8_block_scales_shape(q_shape, "128x128")
    if one is None or s_shape == one:
        return "1x128"
    if s_shape == tile:
        return "128x128"
    want = f"{list(one)} (1x128 blocks)" + (f" or {list(tile)} (128x128 blocks)" if tile is not None else "")
    raise _C.InvalidArgument(f"{op}: scales must have shape {want} for q {list(q_shape)}, got {list(s_shape)}")


def fp8_dequantize_blocks(q, scales, out_dtype=None, block=None, *, format=None, out=None, backend=None, stream=None):
    """``out = decode(q) * scales[block of each element]`` (f32 multiply), rounded to ``out_dtype``
    ("bf16" default, "f16", "f32").

    q: e4m3/e5m2 (a uint8 q holds the bits of ``format``, default e4m3); scales: f32 of
    fp8_block_scales_shape(q.shape, block). block: "1x128" or "128x128"; None takes it from the
    scales' shape. out: written and returned if given (q's shape).
    """
    op = "fp8_dequantize_blocks"
    fmt = fp8_format(op, format) if format is not None else None
    qa = Operand(op, "q", q, fp8=fmt or _default_format(q))
    sa = Operand(op, "scales", scales)
    blk = block_name(op, block) if block is not None else _infer_block(op, qa.shape, sa.shape)
    out, oa = _dequant_out(op, qa, out_dtype, out)
    _C.fp8_dequantize_blocks_out(qa.transport, qa.dtype, sa.transport, sa.dtype, oa.transport, oa.dtype, blk,
                                 _backend(op, backend), qa.stream(stream))
    return out


# ---- MXFP8: 32-value blocks, e8m0 scales ----------------------------------------------------------

def mxfp8_quantize(x, check_finite=True, *, out=None, backend=None, stream=None):
    """OCP MXFP8: ``(q, scales)`` with e4m3 q (x's shape) and one e8m0 byte per 32 values along
    the last dim (shape ``x.shape[:-1] + (K/32,)``; K must be a multiple of 32).

    Each block's exponent is ``X = floor(log2(amax)) - 8`` clamped to [-127, 127] (an all-zero or
    tiny block gets X = -127, byte 0x00); ``q = encode_e4m3(x * 2^-X)`` with saturation.
    out: q's buffer, or a ``(q, scales)`` pair; written and returned.
    """
    op = "mxfp8_quantize"
    xa = Operand(op, "x", x)
    q, scales = _split_out(op, out)
    if q is None:
        q = xa.empty(xa.shape, "e4m3")
    if scales is None:
        scales = xa.empty(mxfp8_scales_shape(xa.shape) or (0,), "e8m0")
    qa = Operand(op, "q", q, raw="e4m3")
    sa = Operand(op, "scales", scales, raw="e8m0")
    _C.mxfp8_quantize_out(xa.transport, xa.dtype, qa.transport, qa.dtype, sa.transport, sa.dtype, bool(check_finite),
                          _backend(op, backend), xa.stream(stream))
    return q, scales


def mxfp8_dequantize(q, scales, out_dtype=None, *, out=None, backend=None, stream=None):
    """``out = decode_e4m3(q) * 2^(scale byte - 127)`` (byte 0xFF: NaN), rounded to ``out_dtype``
    ("bf16" default, "f16", "f32"). q: e4m3 (or uint8 bits); scales: e8m0 (or uint8 bits) of
    shape ``q.shape[:-1] + (K/32,)``. out: written and returned if given."""
    op = "mxfp8_dequantize"
    qa = Operand(op, "q", q, raw="e4m3")
    sa = Operand(op, "scales", scales, raw="e8m0")
    out, oa = _dequant_out(op, qa, out_dtype, out)
    _C.mxfp8_dequantize_out(qa.transport, qa.dtype, sa.transport, sa.dtype, oa.transport, oa.dtype,
                            _backend(op, backend), qa.stream(stream))
    return out
