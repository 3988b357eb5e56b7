"""cppmega.torch: dtype and bit helpers on any torch; custom ops where torch has custom_op."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import contract_ref as ref  # noqa: E402
import cppmega  # noqa: E402
import cppmega.torch as ct  # noqa: E402
from conftest import HAS_CUDA, assert_bits_equal  # noqa: E402

needs_custom_ops = pytest.mark.skipif(not ct.CUSTOM_OPS, reason="torch.library.custom_op needs torch >= 2.4")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA"))]


def randn(n, device="cpu", dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 3).to(dtype).to(device)


def test_dtype_helpers():
    if ct.HAS_FLOAT8:
        assert ct.fp8_dtype() == torch.float8_e4m3fn and ct.fp8_dtype("e5m2") == torch.float8_e5m2
    else:
        assert ct.fp8_dtype() == torch.uint8
    with pytest.raises(ValueError, match="format must be e4m3, e5m2"):
        ct.fp8_dtype("e2m1")


def test_bits_round_trip():
    q = cppmega.fp8_quantize(randn(100), 0.05)
    b = ct.bits(q)
    assert b.dtype == torch.uint8 and b.shape == q.shape
    assert ct.from_bits(b).dtype == ct.fp8_dtype()
    assert_bits_equal(ct.from_bits(b, "e4m3"), q)
    with pytest.raises(ValueError):
        ct.bits(torch.zeros(3))
    with pytest.raises(ValueError):
        ct.from_bits(torch.zeros(3))


def test_quantize_wrapper_without_custom_ops_is_eager():
    x = randn(64)
    assert_bits_equal(ct.fp8_quantize(x, 0.25), ref.quantize(x.float().numpy(), 0.25))


@needs_custom_ops
@pytest.mark.parametrize("device", DEVICES)
def test_custom_ops_match_eager(device):
    x = randn(1000, device)
    s = torch.tensor([0.03125], device=device)
    assert_bits_equal(torch.ops.cppmega.fp8_amax(x), cppmega.fp8_amax(x))
    q = torch.ops.cppmega.fp8_quantize(x, s, "e5m2")
    assert q.dtype == torch.float8_e5m2 and q.device.type == device
    assert_bits_equal(q, cppmega.fp8_quantize(x, s, "e5m2"))
    assert_bits_equal(torch.ops.cppmega.fp8_quantize_host_scale(x, 0.03125, "e4m3"), cppmega.fp8_quantize(x, 0.03125))
    d = torch.ops.cppmega.fp8_dequantize(q, s, "f32")
    assert d.dtype == torch.float32
    assert_bits_equal(d, cppmega.fp8_dequantize(q, s, "f32"))
    pq, ps = torch.ops.cppmega.fp8_pack(x, "e4m3", True, True)
    eq, es = cppmega.fp8_pack(x, "e4m3", True)
    assert_bits_equal(pq, eq)
    assert_bits_equal(ps, es)


@needs_custom_ops
def test_custom_ops_trace_under_compile():
    def f(x, s):
        q = torch.ops.cppmega.fp8_quantize(x, s, "e4m3")
        amax = torch.ops.cppmega.fp8_amax(x)
        return torch.ops.cppmega.fp8_dequantize(q, s, "bf16"), amax

    x, s = randn(256), torch.tensor([0.02])
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break fails
    got_d, got_a = compiled(x, s)
    want_d, want_a = f(x, s)
    assert_bits_equal(got_d, want_d)
    assert_bits_equal(got_a, want_a)


@needs_custom_ops
def test_custom_op_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(4, 8, dtype=torch.bfloat16)
        q, s = torch.ops.cppmega.fp8_pack(x)
        assert q.shape == (4, 8) and q.dtype == torch.float8_e4m3fn and s.shape == ()
        d = torch.ops.cppmega.fp8_dequantize(q, s.reshape(1), "f16")
        assert d.dtype == torch.float16 and d.shape == (4, 8)


def test_numpy_oracle_agrees_on_torch_input():
    x = randn(4096, dtype=torch.float16)
    q, s = cppmega.fp8_pack(x, "e5m2")
    want_q, want_s = ref.pack(x.numpy(), "e5m2")
    assert float(s) == want_s
    assert_bits_equal(q, want_q)
    assert isinstance(np.asarray(want_q), np.ndarray)
