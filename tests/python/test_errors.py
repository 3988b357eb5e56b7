"""Every bad-input rule maps to the contract's Python exception, names the op, and leaves the
outputs untouched."""

import ml_dtypes
import numpy as np
import pytest

import cppmega
from conftest import FRAMEWORKS, HAS_TORCH, bits, poisoned, to_fw, torch


def x_of(fw, n=16, dtype=ml_dtypes.bfloat16, rng=None):
    rng = rng or np.random.default_rng(1)
    return to_fw((rng.standard_normal(n) * 4 + 0.5).astype(dtype), fw)


def test_exception_hierarchy():
    pairs = [(cppmega.InvalidArgument, ValueError), (cppmega.Unsupported, NotImplementedError),
             (cppmega.NonFinite, FloatingPointError), (cppmega.CudaError, RuntimeError)]
    for ours, builtin in pairs:
        assert issubclass(ours, builtin) and issubclass(ours, cppmega.Error)
        assert ours.__module__ == "cppmega"


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("call", [
    lambda x: cppmega.fp8_amax(x),
    lambda x: cppmega.fp8_quantize(x, 1.0),
    lambda x: cppmega.fp8_pack(x),
])
def test_x_wrong_dtype(fw, call):
    with pytest.raises(ValueError, match="fp8_.*: x must be f32, bf16 or f16, got i32"):
        call(to_fw(np.arange(8, dtype=np.int32), fw))
    with pytest.raises(ValueError, match="fp8_.*: x has dtype float64"):  # no cppmega dtype at all
        call(to_fw(np.ones(8, np.float64), fw))


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, "x", None])
def test_x_not_an_array(value):
    for call in (lambda: cppmega.fp8_amax(value), lambda: cppmega.fp8_quantize(value, 1.0),
                 lambda: cppmega.fp8_pack(value), lambda: cppmega.fp8_dequantize(value, 1.0)):
        with pytest.raises(TypeError, match="fp8_.*must be a numpy array or a torch tensor"):
            call()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_non_contiguous_input(fw):
    x = x_of(fw, 32)
    with pytest.raises(ValueError, match="fp8_amax: x must be contiguous"):
        cppmega.fp8_amax(x[::2])
    transposed = x.reshape(4, 8).T if fw == "numpy" else x.reshape(4, 8).t()
    with pytest.raises(ValueError, match="fp8_quantize: x must be contiguous"):
        cppmega.fp8_quantize(transposed, 1.0)
    with pytest.raises(ValueError, match="fp8_pack: x must be contiguous"):
        cppmega.fp8_pack(x[1::3])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_quantize_out_rules(fw):
    x = x_of(fw, 12)
    bad_shape = poisoned((13,), "e4m3", fw)
    with pytest.raises(ValueError, match=r"fp8_quantize: out must have the shape of x \[12\]"):
        cppmega.fp8_quantize(x, 1.0, out=bad_shape)
    assert (bits(bad_shape) == 0xFF).all()
    with pytest.raises(ValueError, match="fp8_quantize: out must be e4m3 or e5m2, got f32"):
        cppmega.fp8_quantize(x, 1.0, out=poisoned((12,), "f32", fw))
    strided = poisoned((24,), "e4m3", fw)[::2]
    with pytest.raises(ValueError, match="fp8_quantize: out must be contiguous"):
        cppmega.fp8_quantize(x, 1.0, out=strided)
    assert (bits(strided) == 0xFF).all()


def test_quantize_out_format_conflict():
    x = x_of("numpy", 4)
    with pytest.raises(ValueError, match="fp8_quantize: out has dtype float8_e5m2 but format is e4m3"):
        cppmega.fp8_quantize(x, 1.0, "e4m3", out=np.empty(4, ml_dtypes.float8_e5m2))


def test_read_only_out():
    out = np.empty(4, ml_dtypes.float8_e4m3fn)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="fp8_quantize: out is read-only"):
        cppmega.fp8_quantize(x_of("numpy", 4), 1.0, out=out)


def test_read_only_input_is_fine():
    x = np.float32([1, -7, 3])
    x.flags.writeable = False
    assert float(cppmega.fp8_amax(x)) == 7.0


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), 1e39])
def test_bad_host_scale(fw, scale):
    with pytest.raises(ValueError, match="fp8_quantize: scale must be finite and > 0"):
        cppmega.fp8_quantize(x_of(fw), scale)
    with pytest.raises(ValueError, match="fp8_dequantize: scale must be finite and > 0"):
        cppmega.fp8_dequantize(cppmega.fp8_quantize(x_of(fw), 1.0), scale)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_scale_array(fw):
    x = x_of(fw)
    with pytest.raises(ValueError, match="fp8_quantize: scale must have exactly 1 element"):
        cppmega.fp8_quantize(x, to_fw(np.float32([1, 2]), fw))
    with pytest.raises(ValueError, match="fp8_quantize: scale must be f32, got f16"):
        cppmega.fp8_quantize(x, to_fw(np.float16([1]), fw))
    with pytest.raises(ValueError, match="fp8_quantize: scale has dtype float64"):
        cppmega.fp8_quantize(x, to_fw(np.float64([1]), fw))
    with pytest.raises(TypeError, match="fp8_quantize: scale must be a number"):
        cppmega.fp8_quantize(x, "1.0")
    with pytest.raises(TypeError, match="fp8_quantize: scale must be a number"):
        cppmega.fp8_quantize(x, True)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_scale_on_another_framework_device_is_fine_on_cpu():
    # numpy and torch CPU arrays are both CPU memory: one call may mix them.
    x = x_of("numpy")
    q = cppmega.fp8_quantize(x, torch.tensor([0.5]))
    assert isinstance(q, np.ndarray)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_unknown_format_and_out_dtype(fw):
    x = x_of(fw)
    with pytest.raises(ValueError, match="fp8_quantize: format must be e4m3, e5m2, got 'e3m4'"):
        cppmega.fp8_quantize(x, 1.0, "e3m4")
    with pytest.raises(ValueError, match="fp8_pack: format must be e4m3, e5m2"):
        cppmega.fp8_pack(x, "int8")
    q = cppmega.fp8_quantize(x, 1.0)
    with pytest.raises(ValueError, match="fp8_dequantize: out_dtype must be f32, bf16, f16, got 'e4m3'"):
        cppmega.fp8_dequantize(q, 1.0, "e4m3")
    with pytest.raises(ValueError, match="fp8_dequantize: out_dtype must be"):
        cppmega.fp8_dequantize(q, 1.0, "float64")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dequantize_rules(fw):
    with pytest.raises(ValueError, match="fp8_dequantize: q must be e4m3 or e5m2, got f32"):
        cppmega.fp8_dequantize(to_fw(np.ones(4, np.float32), fw), 1.0)
    q = to_fw(np.zeros(4, ml_dtypes.float8_e4m3fn) + ml_dtypes.float8_e4m3fn(1), fw)
    out = poisoned((5,), "bf16", fw)
    with pytest.raises(ValueError, match="fp8_dequantize: out must have the shape of q"):
        cppmega.fp8_dequantize(q, 1.0, out=out)
    assert (bits(out) == 0xFFFF).all()
    with pytest.raises(ValueError, match="fp8_dequantize: out has dtype f32 but out_dtype is bf16"):
        cppmega.fp8_dequantize(q, 1.0, "bf16", out=poisoned((4,), "f32", fw))
    with pytest.raises(ValueError, match="fp8_dequantize: out must be f32, bf16 or f16, got i32"):
        cppmega.fp8_dequantize(q, 1.0, out=to_fw(np.zeros(4, np.int32), fw))


def test_dequantize_format_conflict():
    q = np.zeros(3, ml_dtypes.float8_e4m3fn)
    with pytest.raises(ValueError, match="fp8_dequantize: q has dtype float8_e4m3fn but format is e5m2"):
        cppmega.fp8_dequantize(q, 1.0, format="e5m2")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_amax_out_rules(fw):
    x = x_of(fw)
    with pytest.raises(ValueError, match="fp8_amax: out must be f32, got bf16"):
        cppmega.fp8_amax(x, out=poisoned((), "bf16", fw))
    out = poisoned((2,), "f32", fw)
    with pytest.raises(ValueError, match="fp8_amax: out must have exactly 1 element"):
        cppmega.fp8_amax(x, out=out)
    assert (bits(out) == 0xFFFFFFFF).all()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pack_out_rules(fw):
    x = x_of(fw, 8)
    q = poisoned((8,), "e4m3", fw)
    with pytest.raises(ValueError, match="fp8_pack: scale must have exactly 1 element"):
        cppmega.fp8_pack(x, out=(q, poisoned((2,), "f32", fw)))
    with pytest.raises(ValueError, match="fp8_pack: q must have the shape of x"):
        cppmega.fp8_pack(x, out=poisoned((9,), "e4m3", fw))
    with pytest.raises(ValueError, match="fp8_pack: q must have the format's dtype e4m3, got f16"):
        cppmega.fp8_pack(x, out=poisoned((8,), "f16", fw))
    assert (bits(q) == 0xFF).all()


def test_rank_above_eight():
    x = np.ones((1,) * 9, np.float32)
    with pytest.raises(ValueError, match="fp8_amax: x has rank 9; cppmega takes at most 8"):
        cppmega.fp8_amax(x)


def test_backend_must_be_a_string():
    with pytest.raises(TypeError, match="fp8_amax: backend must be a string"):
        cppmega.fp8_amax(x_of("numpy"), backend=1)
