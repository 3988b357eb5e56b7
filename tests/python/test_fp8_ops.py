"""The four per-tensor FP8 ops on CPU inputs (numpy and torch) against the numpy contract."""

import ml_dtypes
import numpy as np
import pytest

import contract_ref as ref
import cppmega
from conftest import (FRAMEWORKS, HAS_FLOAT8, HAS_TORCH, NP_DTYPES, assert_bits_equal, assert_float_equal, bits,
                      fw_of, poisoned, to_fw, torch, values)

FORMATS = ["e4m3", "e5m2"]
FLOATS = ["f32", "bf16", "f16"]


def random_floats(rng, n, dtype):
    """Normal values over several binades, in `dtype`; never all zero."""
    x = rng.standard_normal(n).astype(np.float32) * rng.choice(np.float32([2 ** -6, 0.25, 1, 8, 300]), n)
    return x.astype(NP_DTYPES[dtype])


# ---- fp8_quantize --------------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("src", ["bf16", "f16"])
def test_quantize_every_bf16_and_f16_value(fw, fmt, src):
    x = ref.bf16_all() if src == "bf16" else ref.f16_all()
    out = poisoned(x.shape, fmt, fw)
    got = cppmega.fp8_quantize(to_fw(x, fw), 1.0, fmt, out=out)
    assert got is out
    assert_bits_equal(got, ref.quantize(x, 1.0, fmt), f"{src}->{fmt}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scale", [1.0, 0.37, 2.0 ** -20, 3.0e4])
def test_quantize_f32_boundaries_and_random(fw, fmt, scale, rng):
    with np.errstate(over="ignore"):
        x = np.concatenate([ref.f32_boundaries(fmt) * np.float32(scale), ref.f32_random(rng, 50_000)])
    got = cppmega.fp8_quantize(to_fw(x, fw), scale, fmt, out=poisoned(x.shape, fmt, fw))
    assert_bits_equal(got, ref.quantize(x, scale, fmt), f"f32->{fmt} scale {scale}")


def test_ml_dtypes_oracle_matches_hand_worked_cases():
    # The oracle itself, on values worked out by hand from the contract.
    v = np.float32([448, 464, 480, 1e9, np.inf, -np.inf, 2 ** -9, 2 ** -10, 3 * 2 ** -10, -0.0, np.nan, 0.3])
    assert list(ref.encode(v, "e4m3")) == [0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0xFE, 0x01, 0x00, 0x02, 0x80, 0x7F, 0x2A]
    v = np.float32([57344, 61440, np.inf, 2 ** -16, 2 ** -17, np.nan])
    assert list(ref.encode(v, "e5m2")) == [0x7B, 0x7B, 0x7B, 0x01, 0x00, 0x7F]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1,), (33,), (4, 5, 7)])
def test_quantize_dtypes_and_shapes(fw, dtype, shape, rng):
    x = random_floats(rng, int(np.prod(shape)), dtype).reshape(shape)
    scale = float(ref.scale_from_amax(ref.amax(x)))
    got = cppmega.fp8_quantize(to_fw(x, fw), scale, out=poisoned(shape, "e4m3", fw))
    assert tuple(got.shape) == shape
    assert_bits_equal(got, ref.quantize(x, scale))


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("scale_shape", [(), (1,), (1, 1)])
def test_quantize_scale_array(fw, scale_shape, rng):
    x = random_floats(rng, 1000, "bf16")
    s = np.full(scale_shape, 0.0625, np.float32)
    got = cppmega.fp8_quantize(to_fw(x, fw), to_fw(s, fw), "e5m2", out=poisoned(x.shape, "e5m2", fw))
    assert_bits_equal(got, ref.quantize(x, 0.0625, "e5m2"))


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_allocates_in_the_input_framework(fw, fmt, rng):
    x = random_floats(rng, 100, "f16")
    q = cppmega.fp8_quantize(to_fw(x, fw), 0.01, fmt)
    assert fw_of(q) == fw
    if fw == "numpy":
        assert q.dtype == NP_DTYPES[fmt]
    else:
        want = getattr(torch, {"e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2"}[fmt], torch.uint8)
        assert q.dtype == want and q.device.type == "cpu"
    assert_bits_equal(q, ref.quantize(x, 0.01, fmt))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_quantize_out_dtype_sets_format(fw, rng):
    # With out given and no format, out's dtype decides; a uint8 out holds e4m3 bits.
    x = random_floats(rng, 64, "f32")
    q = cppmega.fp8_quantize(to_fw(x, fw), 0.5, out=poisoned(x.shape, "e5m2", fw))
    if fw == "numpy" or HAS_FLOAT8:
        assert_bits_equal(q, ref.quantize(x, 0.5, "e5m2"))
    raw = poisoned(x.shape, "u8", fw)
    assert_bits_equal(cppmega.fp8_quantize(to_fw(x, fw), 0.5, out=raw), ref.quantize(x, 0.5, "e4m3"))
    assert_bits_equal(cppmega.fp8_quantize(to_fw(x, fw), 0.5, "e5m2", out=raw), ref.quantize(x, 0.5, "e5m2"))


# ---- fp8_dequantize ------------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("out_dtype", FLOATS)
@pytest.mark.parametrize("scale", [1.0, 0.0137, 2.0 ** 20, 3.0e-5])
def test_dequantize_every_code(fw, fmt, out_dtype, scale):
    codes = np.arange(256, dtype=np.uint8).view(NP_DTYPES[fmt])
    q = to_fw(codes, fw)
    # format= is needed where torch has no float8 dtypes (q is then uint8); elsewhere it must agree.
    got = cppmega.fp8_dequantize(q, scale, out_dtype, format=fmt, out=poisoned((256,), out_dtype, fw))
    want = ref.dequantize(codes.view(np.uint8), scale, fmt, out_dtype)
    assert_float_equal(got, want, out_dtype, f"{fmt}->{out_dtype} scale {scale}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dequantize_allocates_bf16_by_default(fw, rng):
    codes = rng.integers(0, 0x7F, (3, 50), dtype=np.uint8)  # positive, no NaN
    out = cppmega.fp8_dequantize(to_fw(codes.view(NP_DTYPES["e4m3"]), fw), 0.25)
    assert fw_of(out) == fw and tuple(out.shape) == (3, 50)
    assert str(out.dtype).endswith("bfloat16")
    assert_float_equal(out, ref.dequantize(codes, 0.25, "e4m3", "bf16"), "bf16")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_uint8_q_takes_format(fw, fmt, rng):
    codes = rng.integers(0, 0x7B, 300, dtype=np.uint8)
    got = cppmega.fp8_dequantize(to_fw(codes, fw), 2.0, "f32", format=fmt)
    assert_float_equal(got, ref.dequantize(codes, 2.0, fmt, "f32"), "f32")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dequantize_scale_array(fw, rng):
    codes = rng.integers(0, 0x7E, 77, dtype=np.uint8)
    got = cppmega.fp8_dequantize(to_fw(codes.view(NP_DTYPES["e4m3"]), fw), to_fw(np.float32([3.5]), fw), "f16")
    assert_float_equal(got, ref.dequantize(codes, 3.5, "e4m3", "f16"), "f16")


# ---- fp8_amax ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1,), (1000,), (3, 7, 11)])
def test_amax(fw, dtype, shape, rng):
    x = random_floats(rng, int(np.prod(shape)), dtype).reshape(shape)
    x.reshape(-1)[rng.integers(0, x.size)] = -1000.0  # the max magnitude is negative
    out = poisoned((), "f32", fw)
    got = cppmega.fp8_amax(to_fw(x, fw), out=out)
    assert got is out
    assert values(got, "f32")[0] == ref.amax(x) == 1000.0
    alloc = cppmega.fp8_amax(to_fw(x, fw))
    assert fw_of(alloc) == fw and tuple(alloc.shape) == () and str(alloc.dtype).endswith("float32")
    assert float(alloc) == 1000.0


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_amax_nonfinite_propagates(fw, special, rng):
    x = random_floats(rng, 5000, "bf16")
    x[rng.integers(0, x.size)] = special
    got = float(cppmega.fp8_amax(to_fw(x, fw)))
    if np.isnan(special):
        assert np.isnan(got)
    else:
        assert got == np.inf


# ---- fp8_pack ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("pow2", [False, True])
def test_pack(fw, dtype, fmt, pow2, rng):
    x = random_floats(rng, 4099, dtype)
    q, scale = cppmega.fp8_pack(to_fw(x, fw), fmt, pow2)
    want_q, want_s = ref.pack(x, fmt, pow2)
    assert fw_of(q) == fw and fw_of(scale) == fw and tuple(scale.shape) == ()
    assert values(scale, "f32")[0] == want_s
    assert_bits_equal(q, want_q)
    if pow2:
        m, _ = np.frexp(want_s)
        assert m == 0.5  # a power of two


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pack_into_out_buffers(fw, rng):
    x = random_floats(rng, 512, "bf16").reshape(8, 64)
    q_out, s_out = poisoned((8, 64), "e4m3", fw), poisoned((), "f32", fw)
    q, s = cppmega.fp8_pack(to_fw(x, fw), out=(q_out, s_out))
    assert q is q_out and s is s_out
    want_q, want_s = ref.pack(x)
    assert_bits_equal(q, want_q)
    assert values(s, "f32")[0] == want_s
    q2, _ = cppmega.fp8_pack(to_fw(x, fw), out=poisoned((8, 64), "e4m3", fw))  # q alone
    assert_bits_equal(q2, want_q)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pack_tiny_values_clamp_scale(fw):
    # amax / 448 underflows f32 normals: the scale is clamped to the smallest normal.
    x = np.float32([1e-44, -3e-45])
    q, s = cppmega.fp8_pack(to_fw(x, fw))
    assert values(s, "f32")[0] == ref.F32_MIN_NORMAL
    assert_bits_equal(q, ref.quantize(x, ref.F32_MIN_NORMAL))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pack_all_zero_input_has_scale_one(fw):
    q, s = cppmega.fp8_pack(to_fw(np.zeros(10, np.float32), fw))
    assert values(s, "f32")[0] == 1.0
    assert not bits(q).any()


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("special", [np.nan, np.inf])
def test_pack_nonfinite_unchecked_gives_nan_scale(fw, special, rng):
    x = random_floats(rng, 100, "f32")
    x[17] = special
    q, s = cppmega.fp8_pack(to_fw(x, fw), check_finite=False)
    assert np.isnan(values(s, "f32")[0])
    assert (bits(q) == 0x7F).all()  # x * (1/NaN) is NaN everywhere


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_pack_nonfinite_raises_and_writes_nothing(fw, special, rng):
    x = random_floats(rng, 300, "bf16")
    x[123] = special
    q_out, s_out = poisoned((300,), "e4m3", fw, byte=0x5A), poisoned((), "f32", fw, byte=0x5A)
    with pytest.raises(FloatingPointError, match="fp8_pack"):
        cppmega.fp8_pack(to_fw(x, fw), out=(q_out, s_out))
    assert (bits(q_out) == 0x5A).all()  # the contract promises q; the scale may hold NaN
    with pytest.raises(cppmega.NonFinite):
        cppmega.fp8_pack(to_fw(x, fw))


# ---- Shapes: empty and 0-d -----------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 2)])
def test_empty_inputs(fw, shape):
    x = to_fw(np.zeros(shape, ml_dtypes.bfloat16), fw)
    assert float(cppmega.fp8_amax(x)) == 0.0
    q = cppmega.fp8_quantize(x, 0.5)
    assert tuple(q.shape) == shape
    d = cppmega.fp8_dequantize(q, 0.5, "f32")
    assert tuple(d.shape) == shape
    q, s = cppmega.fp8_pack(x)
    assert tuple(q.shape) == shape and float(s) == 1.0


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_zero_dim_inputs(fw, dtype):
    x0 = np.array(-300.0, NP_DTYPES[dtype])
    x = to_fw(x0, fw)
    assert float(cppmega.fp8_amax(x)) == 300.0
    q = cppmega.fp8_quantize(x, 2.0)
    assert tuple(q.shape) == ()
    assert_bits_equal(q, ref.quantize(x0, 2.0))
    d = cppmega.fp8_dequantize(q, 2.0, "f32")
    assert tuple(d.shape) == () and float(d) == -288.0  # -150 rounds to -144 in e4m3
    q, s = cppmega.fp8_pack(x)
    want_q, want_s = ref.pack(x0)
    assert tuple(q.shape) == () and values(s, "f32")[0] == want_s
    assert_bits_equal(q, want_q)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_input_that_requires_grad(rng):
    x = torch.from_numpy(random_floats(rng, 64, "f32")).requires_grad_()
    assert float(cppmega.fp8_amax(x)) == float(x.detach().abs().max())
    q, _ = cppmega.fp8_pack(x)
    assert tuple(q.shape) == (64,)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_size_one_dims_may_have_any_stride(fw, rng):
    x = random_floats(rng, 40, "f32").reshape(40, 1)
    xt = to_fw(x, fw)
    view = xt.T if fw == "numpy" else xt.t()  # [1, 40]: contiguous in the sense of the contract
    assert_bits_equal(cppmega.fp8_quantize(view, 0.125), ref.quantize(x.T, 0.125))
