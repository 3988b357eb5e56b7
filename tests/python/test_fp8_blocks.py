"""Block-scaled FP8 and MXFP8 through Python (numpy and torch on the CPU; CUDA where available)
against the numpy contract (contract_ref): bit-exact codes and scales, every bad-input rule."""

import ml_dtypes
import numpy as np
import pytest

import contract_ref as ref
import cppmega
from conftest import (FRAMEWORKS, HAS_TORCH, NP_DTYPES, assert_bits_equal, assert_float_equal, bits, fw_of,
                      needs_cuda, poisoned, to_fw, torch, values)

FORMATS = ["e4m3", "e5m2"]
FLOATS = ["f32", "bf16", "f16"]
E8M0 = "e8m0" if "e8m0" in NP_DTYPES else "u8"  # the scales' dtype in tests (uint8 bits without ml_dtypes e8m0)

# 1x128 shapes: rank >= 1, K a multiple of 128 or not, partial edge blocks.
SHAPES_1X128 = [(1,), (128,), (300,), (3, 1000), (2, 3, 129), (5, 256), (7, 127)]
# 128x128 shapes: rank >= 2, M and K with partial edge tiles, batch dims.
SHAPES_128X128 = [(1, 1), (130, 300), (128, 256), (2, 129, 257), (3, 1, 40), (200, 128)]
SHAPES_MX = [(32,), (3, 64), (2, 5, 320), (1, 4096), (129, 96)]


def random_floats(rng, shape, dtype):
    """Normal values over several binades, per block magnitude varying too; never all zero."""
    n = int(np.prod(shape))
    x = rng.standard_normal(n).astype(np.float32) * rng.choice(np.float32([2 ** -6, 0.25, 1, 8, 300]), n)
    x = x.reshape(shape)
    if x.ndim >= 1 and x.shape[-1] > 1:  # rows of different magnitude, so block scales differ
        x *= np.exp2(rng.integers(-8, 4, x.shape[:-1] + (1,))).astype(np.float32)  # f16-safe
    return x.astype(NP_DTYPES[dtype])


def f32_view(x):
    return np.asarray(x).astype(np.float32)


def block_cases():
    for s in SHAPES_1X128:
        yield "1x128", s
    for s in SHAPES_128X128:
        yield "128x128", s


# ---- fp8_quantize_blocks -------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("block,shape", list(block_cases()))
def test_quantize_blocks_matches_contract(fw, dtype, block, shape, rng):
    x = random_floats(rng, shape, dtype)
    want_q, want_s = ref.quantize_blocks(f32_view(x), block)
    q, s = cppmega.fp8_quantize_blocks(to_fw(x, fw), block)
    assert fw_of(q) == fw and fw_of(s) == fw
    assert tuple(q.shape) == shape and tuple(s.shape) == ref.block_scales_shape(shape, block)
    assert str(s.dtype).endswith("float32")
    assert_bits_equal(s, want_s, "scales")
    assert_bits_equal(q, want_q, "q")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("pow2", [False, True])
@pytest.mark.parametrize("block,shape", [("1x128", (4, 515)), ("128x128", (2, 260, 300))])
def test_quantize_blocks_format_and_pow2(fw, fmt, pow2, block, shape, rng):
    x = random_floats(rng, shape, "bf16")
    want_q, want_s = ref.quantize_blocks(f32_view(x), block, fmt, pow2)
    q, s = cppmega.fp8_quantize_blocks(to_fw(x, fw), block, fmt, pow2)
    assert_bits_equal(s, want_s, "scales")
    assert_bits_equal(q, want_q, "q")
    if pow2:
        m, _ = np.frexp(values(s, "f32"))
        assert (m == 0.5).all()


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("block", ["1x128", "128x128", (1, 128), (128, 128)])
def test_quantize_blocks_special_blocks(fw, block, rng):
    # An all-zero block (scale 1), a block of f32 subnormals (scale clamped to 2^-126), a block at
    # the top of f32, and a partial edge block, next to ordinary ones.
    x = random_floats(rng, (256, 300), "f32")
    x[:128, :128] = 0.0
    x[128:, 128:256] = rng.choice(np.float32([1e-44, -3e-45, 0.0]), (128, 128))
    x[0:128, 256:] = np.float32(3.0e38) * rng.uniform(-1, 1, (128, 44)).astype(np.float32)
    name = block if isinstance(block, str) else f"{block[0]}x{block[1]}"
    want_q, want_s = ref.quantize_blocks(x, name)
    q, s = cppmega.fp8_quantize_blocks(to_fw(x, fw), block)
    assert_bits_equal(s, want_s, "scales")
    assert_bits_equal(q, want_q, "q")
    sv = values(s, "f32").reshape(want_s.shape)
    assert sv[0, 0] == 1.0
    assert sv[-1, 1] == ref.F32_MIN_NORMAL


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_quantize_blocks_into_out_buffers(fw, rng):
    x = random_floats(rng, (6, 400), "f16")
    want_q, want_s = ref.quantize_blocks(f32_view(x), "1x128", "e5m2")
    q_out, s_out = poisoned((6, 400), "e5m2", fw), poisoned((6, 4), "f32", fw)
    q, s = cppmega.fp8_quantize_blocks(to_fw(x, fw), format="e5m2", out=(q_out, s_out))
    assert q is q_out and s is s_out
    assert_bits_equal(q, want_q)
    assert_bits_equal(s, want_s)
    q2, s2 = cppmega.fp8_quantize_blocks(to_fw(x, fw), format="e5m2", out=poisoned((6, 400), "e5m2", fw))
    assert_bits_equal(q2, want_q)
    assert_bits_equal(s2, want_s)
    # A uint8 q holds the bits of `format` (e4m3 by default): the form torch < 2.1 returns.
    q3, _ = cppmega.fp8_quantize_blocks(to_fw(x, fw), out=poisoned((6, 400), "u8", fw))
    assert_bits_equal(q3, ref.quantize_blocks(f32_view(x))[0])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_quantize_blocks_output_types(fw, rng):
    x = random_floats(rng, (3, 200), "bf16")
    q, s = cppmega.fp8_quantize_blocks(to_fw(x, fw), format="e5m2")
    if fw == "numpy":
        assert q.dtype == ml_dtypes.float8_e5m2 and s.dtype == np.float32
    else:
        assert q.dtype == getattr(torch, "float8_e5m2", torch.uint8) and s.dtype == torch.float32
        assert q.device.type == "cpu" and s.device.type == "cpu"


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("block", ["1x128", "128x128"])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_quantize_blocks_nonfinite(fw, block, special, rng):
    x = random_floats(rng, (260, 300), "bf16")
    x[131, 140] = special  # block (1, 1) of the 128x128 tiles; row 131, column block 1 of 1x128
    want_q, want_s = ref.quantize_blocks(f32_view(x), block)
    bad = (131, 1) if block == "1x128" else (1, 1)
    finite = np.isfinite(want_s)
    assert not finite[bad] and finite.sum() == finite.size - 1  # one NaN scale, the bad block's
    q, s = cppmega.fp8_quantize_blocks(to_fw(x, fw), block, check_finite=False)
    assert_float_equal(s, want_s, "f32", "scales")
    assert_bits_equal(q, want_q, "q")
    # Checked: raises after writing what the unchecked call writes.
    q_out, s_out = poisoned(x.shape, "e4m3", fw, byte=0x5A), poisoned(want_s.shape, "f32", fw, byte=0x5A)
    with pytest.raises(FloatingPointError, match="fp8_quantize_blocks"):
        cppmega.fp8_quantize_blocks(to_fw(x, fw), block, out=(q_out, s_out))
    assert_bits_equal(q_out, want_q, "q after NonFinite")
    assert_float_equal(s_out, want_s, "f32", "scales after NonFinite")
    with pytest.raises(cppmega.NonFinite):
        cppmega.fp8_quantize_blocks(to_fw(x, fw), block)


# ---- fp8_dequantize_blocks -----------------------------------------------------------------------

def random_scales(rng, shape):
    return (rng.uniform(0.5, 2.0, shape) * np.exp2(rng.integers(-12, 6, shape))).astype(np.float32)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("out_dtype", FLOATS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("block,shape", list(block_cases()))
def test_dequantize_blocks_matches_contract(fw, out_dtype, fmt, block, shape, rng):
    codes = rng.integers(0, 256, shape, dtype=np.uint8)  # every code, NaN included
    s = random_scales(rng, ref.block_scales_shape(shape, block))
    want = ref.dequantize_blocks(codes, s, block, fmt, out_dtype)
    q = to_fw(codes.view(NP_DTYPES[fmt]), fw)
    out = poisoned(shape, out_dtype, fw)
    # format= is needed where torch has no float8 dtypes (q is then uint8); elsewhere it must agree.
    got = cppmega.fp8_dequantize_blocks(q, to_fw(s, fw), out_dtype, block, format=fmt, out=out)
    assert got is out
    assert_float_equal(got, want, out_dtype, f"{fmt}->{out_dtype}")
    # block=None: the scales' shape tells (both readings agree where they coincide).
    inferred = cppmega.fp8_dequantize_blocks(q, to_fw(s, fw), out_dtype, format=fmt)
    assert fw_of(inferred) == fw and tuple(inferred.shape) == shape
    assert_float_equal(inferred, want, out_dtype, "inferred block")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("block,shape", [("1x128", (5, 700)), ("128x128", (2, 300, 260))])
def test_quantize_dequantize_blocks_round_trip(fw, block, shape, rng):
    x = random_floats(rng, shape, "f32")
    q, s = cppmega.fp8_quantize_blocks(to_fw(x, fw), block)
    d = cppmega.fp8_dequantize_blocks(q, s, "f32")
    assert str(d.dtype).endswith("float32") and tuple(d.shape) == shape
    want_q, want_s = ref.quantize_blocks(x, block)
    assert_float_equal(d, ref.dequantize_blocks(want_q, want_s, block, out="f32"), "f32")
    # e4m3 keeps 3 mantissa bits: each value within half an ulp (2^-4 relative), or half the
    # subnormal step (2^-10) times its block's scale. 0x38 is e4m3 1.0: this expands the scales.
    block_scale = ref.dequantize_blocks(np.full(shape, 0x38, np.uint8), want_s, block, out="f32")
    err = np.abs(values(d, "f32").reshape(shape) - x)
    assert (err <= np.abs(x) * 2.0 ** -4 + block_scale * 2.0 ** -10).all()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dequantize_blocks_defaults_and_uint8_q(fw, rng):
    codes = rng.integers(0, 0x7B, (4, 300), dtype=np.uint8)
    s = random_scales(rng, (4, 3))
    out = cppmega.fp8_dequantize_blocks(to_fw(codes, fw), to_fw(s, fw), format="e5m2")  # uint8 q: e5m2 bits
    assert str(out.dtype).endswith("bfloat16")
    assert_float_equal(out, ref.dequantize_blocks(codes, s, "1x128", "e5m2", "bf16"), "bf16")
    f16_out = poisoned((4, 300), "f16", fw)
    got = cppmega.fp8_dequantize_blocks(to_fw(codes, fw), to_fw(s, fw), out=f16_out)  # out's dtype decides
    assert_float_equal(got, ref.dequantize_blocks(codes, s, "1x128", "e4m3", "f16"), "f16")


# ---- mxfp8_quantize / mxfp8_dequantize -----------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES_MX)
def test_mx_quantize_matches_contract(fw, dtype, shape, rng):
    x = random_floats(rng, shape, dtype)
    want_q, want_s = ref.mx_quantize(f32_view(x))
    q, s = cppmega.mxfp8_quantize(to_fw(x, fw))
    assert fw_of(q) == fw and fw_of(s) == fw
    assert tuple(q.shape) == shape and tuple(s.shape) == shape[:-1] + (shape[-1] // 32,)
    assert_bits_equal(s, want_s, "scales")
    assert_bits_equal(q, want_q, "q")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mx_quantize_scale_rule_edges(fw, rng):
    # One block per row: zero, f32 subnormal, just below/at 2^-126, amax exactly 2^k, 1.75*2^k
    # (448 after scaling), 1.99*2^k (saturates), the top of f32, tiny + normal mixed.
    rows = [np.zeros(32, np.float32),
            np.full(32, 1e-40, np.float32),
            np.full(32, np.float32(2.0 ** -126) * np.float32(0.999), np.float32),
            np.full(32, np.float32(2.0 ** -126), np.float32),
            np.full(32, np.float32(2.0 ** -118), np.float32),
            np.float32(2.0 ** 5) * np.linspace(-1, 1, 32, dtype=np.float32),
            np.float32(1.75 * 2.0 ** 3) * np.linspace(-1, 1, 32, dtype=np.float32),
            np.float32(1.99 * 2.0 ** -3) * np.linspace(-1, 1, 32, dtype=np.float32),
            np.float32(3.4e38) * np.linspace(-1, 1, 32, dtype=np.float32),
            np.concatenate([np.full(31, 1e-30, np.float32), np.float32([7.0])])]
    x = np.stack(rows)
    want_q, want_s = ref.mx_quantize(x)
    assert list(want_s[:, 0]) == [0, 0, 0, 0, 1, 5 - 8 + 127, 3 - 8 + 127, -3 - 8 + 127, 127 - 8 + 127, 2 - 8 + 127]
    q, s = cppmega.mxfp8_quantize(to_fw(x, fw))
    assert_bits_equal(s, want_s, "scales")
    assert_bits_equal(q, want_q, "q")
    assert bits(q)[6 * 32 + 31] == 0x7E  # 1.75 * 2^3 * 2^5 = 448: the largest e4m3
    assert bits(q)[7 * 32 + 31] == 0x7E  # saturated


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_mx_quantize_nonfinite(fw, special, rng):
    x = random_floats(rng, (3, 128), "f16")
    x[1, 70] = special  # block (1, 2)
    want_q, want_s = ref.mx_quantize(f32_view(x))
    assert want_s[1, 2] == 0xFF and (want_q[1, 64:96] == 0x7F).all()
    q, s = cppmega.mxfp8_quantize(to_fw(x, fw), check_finite=False)
    assert_bits_equal(s, want_s, "scales")
    assert_bits_equal(q, want_q, "q")
    q_out, s_out = poisoned(x.shape, "e4m3", fw, byte=0x5A), poisoned((3, 4), E8M0, fw, byte=0x5A)
    with pytest.raises(FloatingPointError, match="mxfp8_quantize"):
        cppmega.mxfp8_quantize(to_fw(x, fw), out=(q_out, s_out))
    assert_bits_equal(q_out, want_q, "q after NonFinite")
    assert_bits_equal(s_out, want_s, "scales after NonFinite")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mx_quantize_output_types_and_out(fw, rng):
    x = random_floats(rng, (2, 96), "bf16")
    want_q, want_s = ref.mx_quantize(f32_view(x))
    q, s = cppmega.mxfp8_quantize(to_fw(x, fw))
    if fw == "numpy":
        assert q.dtype == ml_dtypes.float8_e4m3fn
        assert s.dtype == getattr(ml_dtypes, "float8_e8m0fnu", np.uint8)
    else:
        assert q.dtype == getattr(torch, "float8_e4m3fn", torch.uint8)
        assert s.dtype == getattr(torch, "float8_e8m0fnu", torch.uint8)
    # uint8 buffers hold the bits, for both q (e4m3) and the scales (e8m0).
    q_out, s_out = poisoned((2, 96), "u8", fw), poisoned((2, 3), "u8", fw)
    q2, s2 = cppmega.mxfp8_quantize(to_fw(x, fw), out=(q_out, s_out))
    assert q2 is q_out and s2 is s_out
    assert_bits_equal(q2, want_q)
    assert_bits_equal(s2, want_s)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("out_dtype", FLOATS)
def test_mx_dequantize_every_code_and_scale(fw, out_dtype, rng):
    # Every e4m3 code against scale bytes 0 (2^-127, subnormal), 1, 100, 127, 140, 200, 254 and
    # 0xFF (NaN): 8 rows of 256 codes.
    codes = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    sb = np.repeat(np.uint8([0, 1, 100, 127, 140, 200, 254, 0xFF])[:, None], 8, axis=1)
    want = ref.mx_dequantize(codes, sb, out_dtype)
    out = poisoned(codes.shape, out_dtype, fw)
    got = cppmega.mxfp8_dequantize(to_fw(codes.view(NP_DTYPES["e4m3"]), fw), to_fw(sb.view(NP_DTYPES[E8M0]), fw),
                                   out_dtype, out=out)
    assert got is out
    assert_float_equal(got, want, out_dtype, f"e4m3->{out_dtype}")
    # uint8 q and scales are taken as their bits; bf16 by default.
    got2 = cppmega.mxfp8_dequantize(to_fw(codes, fw), to_fw(sb, fw))
    assert str(got2.dtype).endswith("bfloat16")
    assert_float_equal(got2, ref.mx_dequantize(codes, sb, "bf16"), "bf16")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", SHAPES_MX)
def test_mx_round_trip(fw, shape, rng):
    x = random_floats(rng, shape, "f32")
    q, s = cppmega.mxfp8_quantize(to_fw(x, fw))
    d = cppmega.mxfp8_dequantize(q, s, "f32")
    want_q, want_s = ref.mx_quantize(x)
    assert_float_equal(d, ref.mx_dequantize(want_q, want_s, "f32"), "f32")
    # Within half an e4m3 ulp (2^-4 relative) or half the subnormal step (2^-10) of the block
    # scale, plus the saturation the MX rule allows (amax * 2^-X lies in [256, 512): above 448 clamps).
    dv = values(d, "f32").reshape(shape)
    scale = np.repeat(ref.e8m0_value(want_s), 32, axis=-1)
    tol = np.abs(x) * 2.0 ** -4 + np.maximum(np.abs(x) - 448 * scale, 0) + scale * 2.0 ** -10
    assert (np.abs(dv - x) <= tol).all()


# ---- empty inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", [(0,), (0, 256), (3, 0), (2, 0, 64)])
def test_empty_inputs(fw, shape):
    x = to_fw(np.zeros(shape, ml_dtypes.bfloat16), fw)
    for block in (["1x128", "128x128"] if len(shape) >= 2 else ["1x128"]):
        q, s = cppmega.fp8_quantize_blocks(x, block)
        assert tuple(q.shape) == shape and tuple(s.shape) == ref.block_scales_shape(shape, block)
        d = cppmega.fp8_dequantize_blocks(q, s, "f32", block)
        assert tuple(d.shape) == shape
    q, s = cppmega.mxfp8_quantize(x)
    assert tuple(q.shape) == shape and tuple(s.shape) == shape[:-1] + (shape[-1] // 32,)
    assert tuple(cppmega.mxfp8_dequantize(q, s).shape) == shape


# ---- errors --------------------------------------------------------------------------------------

def _x(fw, shape=(4, 256), dtype=ml_dtypes.bfloat16, rng=None):
    rng = rng or np.random.default_rng(3)
    return to_fw((rng.standard_normal(shape) * 3 + 0.5).astype(dtype), fw)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_quantize_blocks_errors(fw):
    op = "fp8_quantize_blocks"
    x = _x(fw)
    cases = [
        (ValueError, r"x must be f32, bf16 or f16, got i32", lambda: cppmega.fp8_quantize_blocks(
            to_fw(np.ones((2, 128), np.int32), fw))),
        (ValueError, r"x has dtype float64", lambda: cppmega.fp8_quantize_blocks(to_fw(np.ones((2, 128)), fw))),
        (ValueError, r"x must have rank >= 1", lambda: cppmega.fp8_quantize_blocks(
            to_fw(np.array(1.0, np.float32), fw))),
        (ValueError, r"x must have rank >= 2", lambda: cppmega.fp8_quantize_blocks(_x(fw, (256,)), "128x128")),
        (ValueError, r"block must be '1x128' or '128x128'", lambda: cppmega.fp8_quantize_blocks(x, "1x32")),
        (ValueError, r"block must be", lambda: cppmega.fp8_quantize_blocks(x, (128, 1))),
        (ValueError, r"format must be e4m3, e5m2", lambda: cppmega.fp8_quantize_blocks(x, format="e8m0")),
        (ValueError, r"x must be contiguous", lambda: cppmega.fp8_quantize_blocks(_x(fw, (4, 512))[:, ::2])),
        (ValueError, r"q must have the shape of x", lambda: cppmega.fp8_quantize_blocks(
            x, out=poisoned((4, 255), "e4m3", fw))),
        (ValueError, r"q must have the format's dtype e4m3, got f32", lambda: cppmega.fp8_quantize_blocks(
            x, out=poisoned((4, 256), "f32", fw))),
        (ValueError, r"q has dtype float8_e4m3fn but format is e5m2", lambda: cppmega.fp8_quantize_blocks(
            _x("numpy"), format="e5m2", out=np.empty((4, 256), ml_dtypes.float8_e4m3fn))),
        (ValueError, r"scales must have shape \[4,2\] \(x.shape\[:-1\] \+ \[ceil\(K/128\)\]", lambda:
            cppmega.fp8_quantize_blocks(x, out=(poisoned((4, 256), "e4m3", fw), poisoned((4, 3), "f32", fw)))),
        (ValueError, r"scales must have shape \[1,2\] \(x.shape\[:-2\]", lambda: cppmega.fp8_quantize_blocks(
            x, "128x128", out=(poisoned((4, 256), "e4m3", fw), poisoned((4, 2), "f32", fw)))),
        (ValueError, r"scales must be f32, got bf16", lambda: cppmega.fp8_quantize_blocks(
            x, out=(poisoned((4, 256), "e4m3", fw), poisoned((4, 2), "bf16", fw)))),
        (NotImplementedError, r"", lambda: cppmega.fp8_quantize_blocks(x, backend="cuda")),
        (ValueError, r"", lambda: cppmega.fp8_quantize_blocks(x, backend="no_such_backend")),
        (TypeError, r"must be a numpy array or a torch tensor", lambda: cppmega.fp8_quantize_blocks([1.0, 2.0])),
        (TypeError, r"out must be q's buffer or a \(q, scales\) pair", lambda: cppmega.fp8_quantize_blocks(
            x, out=(None, None, None))),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match=op + ".*" + msg):
            call()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_quantize_blocks_bad_buffers_stay_untouched(fw):
    x = _x(fw)
    q_out, s_out = poisoned((4, 256), "e4m3", fw, byte=0x5A), poisoned((4, 3), "f32", fw, byte=0x5A)
    with pytest.raises(ValueError, match="fp8_quantize_blocks: scales must have shape"):
        cppmega.fp8_quantize_blocks(x, out=(q_out, s_out))
    assert (bits(q_out) == 0x5A).all() and (bits(s_out).view(np.uint8) == 0x5A).all()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dequantize_blocks_errors(fw):
    op = "fp8_dequantize_blocks"
    q = to_fw(np.zeros((4, 256), ml_dtypes.float8_e4m3fn), fw)
    s = to_fw(np.ones((4, 2), np.float32), fw)
    cases = [
        (ValueError, r"q must be e4m3 or e5m2, got f32", lambda: cppmega.fp8_dequantize_blocks(
            to_fw(np.ones((4, 256), np.float32), fw), s)),
        (ValueError, r"scales must have shape \[4, 2\] \(1x128 blocks\) or \[1, 2\] \(128x128 blocks\)",
         lambda: cppmega.fp8_dequantize_blocks(q, to_fw(np.ones((4, 3), np.float32), fw))),
        (ValueError, r"scales must have shape \[1,2\]", lambda: cppmega.fp8_dequantize_blocks(q, s, block="128x128")),
        (ValueError, r"scales must be f32, got f16", lambda: cppmega.fp8_dequantize_blocks(
            q, to_fw(np.ones((4, 2), np.float16), fw))),
        (ValueError, r"out_dtype must be f32, bf16, f16", lambda: cppmega.fp8_dequantize_blocks(q, s, "e4m3")),
        (ValueError, r"out has dtype f16 but out_dtype is f32", lambda: cppmega.fp8_dequantize_blocks(
            q, s, "f32", out=poisoned((4, 256), "f16", fw))),
        (ValueError, r"out must have the shape of q", lambda: cppmega.fp8_dequantize_blocks(
            q, s, out=poisoned((4, 128), "bf16", fw))),
        (ValueError, r"out must be f32, bf16 or f16, got i32", lambda: cppmega.fp8_dequantize_blocks(
            q, s, out=to_fw(np.zeros((4, 256), np.int32), fw))),
        (ValueError, r"block must be", lambda: cppmega.fp8_dequantize_blocks(q, s, block="64x64")),
        # (the C++ check names the argument "x" here: reported, so the test accepts both)
        (ValueError, r"(q|x) must have rank >= 2", lambda: cppmega.fp8_dequantize_blocks(
            to_fw(np.zeros(256, ml_dtypes.float8_e4m3fn), fw), to_fw(np.ones((1, 2), np.float32), fw),
            block="128x128")),
        (NotImplementedError, r"", lambda: cppmega.fp8_dequantize_blocks(q, s, backend="cuda")),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match=op + ".*" + msg):
            call()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mx_errors(fw):
    x = _x(fw, (4, 96))
    q = to_fw(np.zeros((4, 96), ml_dtypes.float8_e4m3fn), fw)
    s = to_fw(np.full((4, 3), 127, np.uint8), fw)
    cases = [
        ("mxfp8_quantize", ValueError, r"the last dim K of x must be a multiple of 32", lambda: cppmega.mxfp8_quantize(
            _x(fw, (4, 100)))),
        ("mxfp8_quantize", ValueError, r"x must be f32, bf16 or f16, got i32", lambda: cppmega.mxfp8_quantize(
            to_fw(np.ones((2, 32), np.int32), fw))),
        ("mxfp8_quantize", ValueError, r"x must have rank >= 1", lambda: cppmega.mxfp8_quantize(
            to_fw(np.array(2.0, np.float32), fw))),
        ("mxfp8_quantize", ValueError, r"q must be e4m3, got e5m2", lambda: cppmega.mxfp8_quantize(
            _x("numpy", (4, 96)), out=np.empty((4, 96), ml_dtypes.float8_e5m2))),
        ("mxfp8_quantize", ValueError, r"scales must be e8m0, got f32", lambda: cppmega.mxfp8_quantize(
            x, out=(poisoned((4, 96), "e4m3", fw), poisoned((4, 3), "f32", fw)))),
        ("mxfp8_quantize", ValueError, r"scales must have shape \[4,3\]", lambda: cppmega.mxfp8_quantize(
            x, out=(poisoned((4, 96), "e4m3", fw), poisoned((4, 2), "u8", fw)))),
        ("mxfp8_quantize", ValueError, r"x must be contiguous", lambda: cppmega.mxfp8_quantize(
            _x(fw, (4, 192))[:, ::2])),
        ("mxfp8_quantize", NotImplementedError, r"", lambda: cppmega.mxfp8_quantize(x, backend="cuda")),
        ("mxfp8_dequantize", ValueError, r"q must be e4m3, got f32", lambda: cppmega.mxfp8_dequantize(
            to_fw(np.ones((4, 96), np.float32), fw), s)),
        ("mxfp8_dequantize", ValueError, r"the last dim K of q must be a multiple of 32", lambda:
            cppmega.mxfp8_dequantize(to_fw(np.zeros((4, 90), np.uint8), fw), s)),
        ("mxfp8_dequantize", ValueError, r"scales must have shape \[4,3\]", lambda: cppmega.mxfp8_dequantize(
            q, to_fw(np.full((3, 3), 127, np.uint8), fw))),
        ("mxfp8_dequantize", ValueError, r"scales must be e8m0, got f32", lambda: cppmega.mxfp8_dequantize(
            q, to_fw(np.ones((4, 3), np.float32), fw))),
        ("mxfp8_dequantize", ValueError, r"out_dtype must be", lambda: cppmega.mxfp8_dequantize(q, s, "i32")),
        ("mxfp8_dequantize", NotImplementedError, r"", lambda: cppmega.mxfp8_dequantize(q, s, backend="cuda")),
    ]
    for op, exc, msg, call in cases:
        with pytest.raises(exc, match=op + ".*" + msg):
            call()


def test_scale_shape_helpers():
    from cppmega.fp8_blocks import fp8_block_scales_shape, mxfp8_scales_shape
    assert fp8_block_scales_shape((3, 4, 300)) == (3, 4, 3)
    assert fp8_block_scales_shape((3, 129, 300), (128, 128)) == (3, 2, 3)
    assert fp8_block_scales_shape((), "1x128") is None and fp8_block_scales_shape((5,), "128x128") is None
    assert mxfp8_scales_shape((2, 64)) == (2, 2)


def test_vectorised_scale_rule_matches_scalar_one(rng):
    # contract_ref's two writings of scale_from_amax agree (the block oracle uses the vector one).
    a = np.concatenate([np.abs(ref.f32_random(rng, 5000)), np.float32([0, 1e-45, 1e-40, 448, 3.4e38, np.inf, np.nan])])
    for fmt in FORMATS:
        for pow2 in (False, True):
            v = ref.scales_from_amax(a, fmt, pow2)
            s = np.array([ref.scale_from_amax(x, fmt, pow2) for x in a], np.float32)
            assert np.array_equal(v, s, equal_nan=True)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_input_that_requires_grad(rng):
    x = torch.from_numpy(random_floats(rng, (2, 256), "f32")).requires_grad_()
    q, s = cppmega.fp8_quantize_blocks(x)
    assert tuple(s.shape) == (2, 2)
    q, s = cppmega.mxfp8_quantize(x)
    assert tuple(s.shape) == (2, 8)


# ---- CUDA against the reference backend on CPU copies ---------------------------------------------

def _cuda(a):
    return to_fw(a, "torch", "cuda")


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("block,shape", list(block_cases()) + [("1x128", (8192, 8192)), ("128x128", (4, 1000, 1500)),
                                                               ("1x128", (3, 1001))])
def test_cuda_quantize_blocks_matches_reference(dtype, block, shape, rng):
    x = random_floats(rng, shape, dtype)
    for fmt, pow2 in (("e4m3", False), ("e5m2", True)):
        want_q, want_s = cppmega.fp8_quantize_blocks(x, block, fmt, pow2, backend="reference")
        xd = _cuda(x)
        q, s = cppmega.fp8_quantize_blocks(xd, block, fmt, pow2, backend="cuda")
        assert q.is_cuda and s.is_cuda and q.device == xd.device
        assert_bits_equal(s, want_s, f"scales {fmt}")
        assert_bits_equal(q, want_q, f"q {fmt}")
        d = cppmega.fp8_dequantize_blocks(q, s, "bf16", block, format=fmt, backend="cuda")
        want_d = cppmega.fp8_dequantize_blocks(want_q, want_s, "bf16", block, format=fmt, backend="reference")
        assert_float_equal(d, want_d, "bf16")


@needs_cuda
@pytest.mark.parametrize("block", ["1x128", "128x128"])
def test_cuda_quantize_blocks_nonfinite(block, rng):
    x = random_floats(rng, (300, 520), "bf16")
    x[5, 200] = np.nan
    x[290, 10] = np.inf
    want_q, want_s = cppmega.fp8_quantize_blocks(x, block, check_finite=False, backend="reference")
    q, s = cppmega.fp8_quantize_blocks(_cuda(x), block, check_finite=False, backend="cuda")
    assert_bits_equal(q, want_q)
    assert_float_equal(s, want_s, "f32")
    with pytest.raises(FloatingPointError, match="fp8_quantize_blocks"):
        cppmega.fp8_quantize_blocks(_cuda(x), block, backend="cuda")


@needs_cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES_MX + [(8192, 8192), (3, 31, 4128)])
def test_cuda_mx_matches_reference(dtype, shape, rng):
    x = random_floats(rng, shape, dtype)
    x.reshape(-1)[:64] = 0  # an all-zero block
    want_q, want_s = cppmega.mxfp8_quantize(x, backend="reference")
    q, s = cppmega.mxfp8_quantize(_cuda(x), backend="cuda")
    assert q.is_cuda and s.is_cuda
    assert_bits_equal(s, want_s, "scales")
    assert_bits_equal(q, want_q, "q")
    for out_dtype in FLOATS:
        d = cppmega.mxfp8_dequantize(q, s, out_dtype, backend="cuda")
        assert_float_equal(d, cppmega.mxfp8_dequantize(want_q, want_s, out_dtype, backend="reference"), out_dtype)


@needs_cuda
def test_cuda_mx_nonfinite_and_edges(rng):
    x = random_floats(rng, (4, 256), "f32")
    x[0, :32] = 1e-40
    x[1, 32:64] = 3.4e38
    x[2, 100] = -np.inf
    want_q, want_s = cppmega.mxfp8_quantize(x, check_finite=False, backend="reference")
    q, s = cppmega.mxfp8_quantize(_cuda(x), check_finite=False, backend="cuda")
    assert_bits_equal(s, want_s)
    assert_bits_equal(q, want_q)
    with pytest.raises(FloatingPointError, match="mxfp8_quantize"):
        cppmega.mxfp8_quantize(_cuda(x), backend="cuda")


@needs_cuda
def test_cuda_auto_and_stream(rng):
    x = random_floats(rng, (64, 1024), "bf16")
    want_q, want_s = cppmega.fp8_quantize_blocks(x, backend="reference")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        xd = _cuda(x)
        q, s = cppmega.fp8_quantize_blocks(xd)  # AUTO, torch's current stream
    stream.synchronize()
    assert cppmega.dispatch_log()[-1]["backend"].startswith("cuda")
    assert_bits_equal(q, want_q)
    assert_bits_equal(s, want_s)


@needs_cuda
def test_cuda_device_mismatch(rng):
    x = _cuda(random_floats(rng, (4, 256), "bf16"))
    with pytest.raises(ValueError, match="fp8_quantize_blocks: .*one device: q is on cpu"):
        cppmega.fp8_quantize_blocks(x, out=poisoned((4, 256), "e4m3", "torch"))
    with pytest.raises(ValueError, match="fp8_quantize_blocks: .*one device: scales is on cpu"):
        cppmega.fp8_quantize_blocks(x, out=(poisoned((4, 256), "e4m3", "torch", "cuda"),
                                            poisoned((4, 2), "f32", "torch")))
    with pytest.raises(ValueError, match="mxfp8_quantize: .*one device: scales is on cpu"):
        cppmega.mxfp8_quantize(x, out=(poisoned((4, 256), "e4m3", "torch", "cuda"), poisoned((4, 8), E8M0, "torch")))
    q, s = cppmega.fp8_quantize_blocks(x)
    with pytest.raises(ValueError, match="fp8_dequantize_blocks: .*one device: scales is on cpu"):
        cppmega.fp8_dequantize_blocks(q, s.cpu())
    with pytest.raises(NotImplementedError, match="fp8_quantize_blocks"):
        cppmega.fp8_quantize_blocks(x, backend="reference")
