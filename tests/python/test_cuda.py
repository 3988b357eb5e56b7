"""The ops on torch CUDA tensors against the CPU reference backend and the numpy contract:
backend selection, streams, scales on the device, errors, empty and odd-sized inputs."""

import numpy as np
import pytest

import contract_ref as ref
import cppmega
from conftest import HAS_CUDA, NP_DTYPES, assert_bits_equal, assert_float_equal, bits, needs_cuda, poisoned, to_fw

pytestmark = needs_cuda

if HAS_CUDA:
    import torch

FORMATS = ["e4m3", "e5m2"]
FLOATS = ["f32", "bf16", "f16"]
SIZES = [1, 7, 4096, 65_537, (1 << 20) + 3]


def random_floats(rng, n, dtype):
    x = rng.standard_normal(n).astype(np.float32) * rng.choice(np.float32([2 ** -6, 0.25, 1, 8, 300]), n)
    return x.astype(NP_DTYPES[dtype])


def cuda(a):
    return to_fw(a, "torch", "cuda")


def last():
    return cppmega.dispatch_log()[-1]


def cuda_backends(op):
    entry = next(e for e in cppmega.ops() if e["op"] == op)
    return [b["name"] for b in entry["backends"] if b["device"] == "cuda" and b["available"]]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_amax(n, dtype, rng):
    x = random_floats(rng, n, dtype)
    x[rng.integers(0, n)] = -5000.0
    xd = cuda(x)
    for b in cuda_backends("fp8_amax"):
        out = poisoned((), "f32", "torch", "cuda")
        got = cppmega.fp8_amax(xd, out=out, backend=b)
        assert got is out
        assert float(got) == ref.amax(x) == float(cppmega.fp8_amax(x, backend="reference"))
    auto = cppmega.fp8_amax(xd)
    assert auto.device == xd.device and auto.dtype == torch.float32 and auto.shape == ()
    assert last()["backend"].startswith("cuda")


@pytest.mark.parametrize("special", [np.nan, np.inf])
def test_amax_nonfinite(special, rng):
    x = random_floats(rng, 100_000, "bf16")
    x[77_777] = special
    got = float(cppmega.fp8_amax(cuda(x)))
    assert np.isnan(got) if np.isnan(special) else got == np.inf


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize(n, dtype, fmt, rng):
    x = random_floats(rng, n, dtype)
    scale = float(ref.scale_from_amax(ref.amax(x), fmt))
    want = cppmega.fp8_quantize(x, scale, fmt, backend="reference")
    assert_bits_equal(want, ref.quantize(x, scale, fmt))
    for b in cuda_backends("fp8_quantize"):
        got = cppmega.fp8_quantize(cuda(x), scale, fmt, out=poisoned((n,), fmt, "torch", "cuda"), backend=b)
        assert_bits_equal(got, want, f"{b} n={n}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("src", ["bf16", "f16"])
def test_quantize_every_value(fmt, src):
    x = ref.bf16_all() if src == "bf16" else ref.f16_all()
    got = cppmega.fp8_quantize(cuda(x), 1.0, fmt)
    assert got.is_cuda and got.dtype == getattr(torch, {"e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2"}[fmt])
    assert_bits_equal(got, ref.quantize(x, 1.0, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_f32_boundaries(fmt, rng):
    x = np.concatenate([ref.f32_boundaries(fmt), ref.f32_random(rng, 100_000)])
    assert_bits_equal(cppmega.fp8_quantize(cuda(x), 1.0, fmt), ref.quantize(x, 1.0, fmt))


def test_quantize_unaligned_views(rng):
    # Offsets that break 16-byte alignment of both input and output.
    x = random_floats(rng, 10_000, "bf16")
    xd = cuda(x)
    out = poisoned((10_000,), "e4m3", "torch", "cuda")
    for off in (1, 3, 8):
        got = cppmega.fp8_quantize(xd[off:], 0.1, out=out[: 10_000 - off])
        assert_bits_equal(got, ref.quantize(x[off:], 0.1))


def test_quantize_device_scale(rng):
    x = random_floats(rng, 5000, "bf16")
    s = torch.tensor([0.0078125], device="cuda")
    assert_bits_equal(cppmega.fp8_quantize(cuda(x), s), ref.quantize(x, 0.0078125))
    with pytest.raises(ValueError, match="fp8_quantize: all tensors of one call must be on one device"):
        cppmega.fp8_quantize(cuda(x), torch.tensor([0.5]))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("out_dtype", FLOATS)
@pytest.mark.parametrize("scale", [1.0, 0.0137, 3.0e-5])
def test_dequantize(fmt, out_dtype, scale, rng):
    codes = np.concatenate([np.arange(256, dtype=np.uint8), rng.integers(0, 256, 100_003, dtype=np.uint8)])
    want = cppmega.fp8_dequantize(codes, scale, out_dtype, format=fmt, backend="reference")
    assert_float_equal(want, ref.dequantize(codes, scale, fmt, out_dtype), out_dtype)
    q = cuda(codes.view(NP_DTYPES[fmt]))
    for b in cuda_backends("fp8_dequantize"):
        got = cppmega.fp8_dequantize(q, scale, out_dtype, out=poisoned(codes.shape, out_dtype, "torch", "cuda"),
                                     backend=b)
        assert_float_equal(got, want, out_dtype, f"{b} {fmt}->{out_dtype}")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("pow2", [False, True])
def test_pack(n, dtype, fmt, pow2, rng):
    x = random_floats(rng, n, dtype)
    want_q, want_s = cppmega.fp8_pack(x, fmt, pow2, backend="reference")
    ref_q, ref_s = ref.pack(x, fmt, pow2)
    assert float(want_s) == ref_s
    assert_bits_equal(want_q, ref_q)
    for b in cuda_backends("fp8_pack"):
        out = (poisoned((n,), fmt, "torch", "cuda"), poisoned((), "f32", "torch", "cuda"))
        q, s = cppmega.fp8_pack(cuda(x), fmt, pow2, out=out, backend=b)
        assert q is out[0] and s is out[1]
        assert_bits_equal(s, want_s, f"{b} scale")
        assert_bits_equal(q, want_q, f"{b} q n={n}")


@pytest.mark.parametrize("n", [5, 4096, 1 << 20])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_pack_nonfinite(n, special, rng):
    x = random_floats(rng, n, "bf16")
    x[n // 2] = special
    q_out = poisoned((n,), "e4m3", "torch", "cuda", byte=0x5A)
    s_out = poisoned((), "f32", "torch", "cuda", byte=0x5A)
    with pytest.raises(FloatingPointError, match="fp8_pack"):
        cppmega.fp8_pack(cuda(x), out=(q_out, s_out))
    torch.cuda.synchronize()
    assert (bits(q_out) == 0x5A).all()  # the contract promises q; the scale may hold NaN
    q, s = cppmega.fp8_pack(cuda(x), check_finite=False)
    assert np.isnan(float(s)) and (bits(q) == 0x7F).all()
    # The process stays usable after the failure.
    assert float(cppmega.fp8_amax(cuda(np.float32([1, -2])))) == 2.0


@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_empty(shape):
    x = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
    assert float(cppmega.fp8_amax(x)) == 0.0
    q = cppmega.fp8_quantize(x, 1.0)
    assert q.shape == shape and q.is_cuda
    assert cppmega.fp8_dequantize(q, 1.0).shape == shape
    q, s = cppmega.fp8_pack(x)
    assert q.shape == shape and float(s) == 1.0 and s.is_cuda


def test_zero_dim():
    x = torch.tensor(-3.0, device="cuda")
    assert float(cppmega.fp8_amax(x)) == 3.0
    q, s = cppmega.fp8_pack(x)
    assert q.shape == () and float(s) == float(ref.scale_from_amax(3.0))


def test_backend_selection():
    x = cuda(np.float32([1, -2, 3]))
    with pytest.raises(NotImplementedError, match="fp8_amax: backend 'reference'.*cannot run this call"):
        cppmega.fp8_amax(x, backend="reference")
    cppmega.fp8_amax(x, backend="cuda")
    assert last()["backend"] == "cuda" and last()["reason"] == "argument backend="
    cppmega.fp8_amax(cuda(np.float32([1])))
    assert last()["reason"].startswith("auto")


def test_env_backend_on_cuda(monkeypatch):
    x = cuda(np.float32([1, -2, 3]))
    monkeypatch.setenv("CPPMEGA_BACKEND__FP8_AMAX", "reference")
    with pytest.raises(NotImplementedError, match="env CPPMEGA_BACKEND__FP8_AMAX"):
        cppmega.fp8_amax(x)


def test_current_stream_is_used(rng):
    # Work queued on a side stream: cppmega must run behind it (torch's current stream) or the
    # result would read the input before it is written.
    x = random_floats(rng, 1 << 22, "f32")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # keep the stream busy so ordering matters
        xd = torch.from_numpy(x).to("cuda", non_blocking=False)
        xd.mul_(-1)
        amax = cppmega.fp8_amax(xd)
        q, s = cppmega.fp8_pack(xd)
    side.synchronize()
    assert float(amax) == ref.amax(x)
    want_q, want_s = ref.pack(-x)
    assert float(s) == want_s
    assert_bits_equal(q, want_q)


def test_explicit_stream_argument(rng):
    x = random_floats(rng, 1 << 20, "bf16")
    xd = cuda(x)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    out = poisoned((1 << 20,), "e4m3", "torch", "cuda")
    torch.cuda.synchronize()
    cppmega.fp8_quantize(xd, 0.5, out=out, stream=s)  # a torch.cuda.Stream
    s.synchronize()
    assert_bits_equal(out, ref.quantize(x, 0.5))
    out2 = poisoned((1 << 20,), "e4m3", "torch", "cuda")
    torch.cuda.synchronize()
    cppmega.fp8_quantize(xd, 0.5, out=out2, stream=s.cuda_stream)  # a raw handle
    s.synchronize()
    assert_bits_equal(out2, ref.quantize(x, 0.5))


def test_bench_cuda_smoke(tmp_path):
    import json

    from cppmega.bench import main
    out = tmp_path / "r.json"
    args = ["--device", "cuda", "--n", "100000", "--warmup", "1", "--iters", "3", "--out", str(out), "--strict"]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["device"]["arch"].startswith("sm_") and r["ceilings"]["copy_tbps"] > 0
    for res in r["results"]:
        labels = [label for label in res["timings"] if label.startswith("cppmega:")]
        assert labels and all(res["parity"][label]["ok"] for label in labels)
        assert any(label.startswith("torch:") for label in res["timings"])
