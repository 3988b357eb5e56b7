"""fp8_gemv through Python (numpy and torch on the CPU; CUDA where available) against an f64 numpy
product of the dequantized inputs (contract_ref.gemv): relative L2 <= 1e-5 for f32 out, <= 1e-2 for
bf16/f16 out; every bad-input rule."""

import ml_dtypes
import numpy as np
import pytest

import contract_ref as ref
import cppmega
from conftest import FRAMEWORKS, HAS_TORCH, NP_DTYPES, bits, fw_of, needs_cuda, poisoned, to_fw, torch, values

TOL = {"f32": 1e-5, "bf16": 1e-2, "f16": 1e-2}
X_DTYPES = ["f32", "bf16", "f16", "e4m3"]
# (M, N, K): K a multiple of 128 or not, N across 128-row weight tiles, M up to and past the
# CUDA fast path's 64.
SHAPES = [(1, 1, 1), (1, 64, 128), (3, 100, 300), (4, 257, 1000), (16, 130, 129), (64, 96, 512), (65, 40, 200)]
W_KINDS = ["number", "tensor", "row", "block"]
X_KINDS = ["number", "row", "block"]


def random_w(rng, n, k):
    """Random e4m3 codes without the two NaNs."""
    b = rng.integers(0, 254, (n, k), dtype=np.uint8)
    return np.where(b >= 0x7F, b + 1, b).astype(np.uint8)


def random_x(rng, m, k, dtype):
    if dtype == "e4m3":
        return random_w(rng, m, k).view(ml_dtypes.float8_e4m3fn)
    return (rng.standard_normal((m, k)) * rng.choice([0.05, 1.0, 4.0], (m, 1))).astype(NP_DTYPES[dtype])


def random_scales(rng, shape):
    return (rng.uniform(1.0, 2.0, shape) * np.exp2(rng.integers(-8, -2, shape))).astype(np.float32)


def make_scale(rng, kind, rows, block_rows, k, fw):
    """(value passed to cppmega, value for the oracle)."""
    if kind == "number":
        return 0.3125, 0.3125
    if kind == "tensor":
        s = random_scales(rng, (1,))
        return to_fw(s, fw), s
    if kind == "row":
        s = random_scales(rng, (rows,))
        return to_fw(s, fw), s
    s = random_scales(rng, (block_rows, ref.ceil_div(k, 128)))
    return to_fw(s, fw), s


def f64(a, dtype):
    a = np.asarray(a)
    return a.astype(np.float64) if dtype != "e4m3" else ref.decode(a.view(np.uint8), "e4m3").astype(np.float64)


def rel_l2(got, want):
    got = np.asarray(got, np.float64)
    assert not np.isnan(got).any(), "NaN in the output"
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def out_values(y, dtype, shape):
    return values(y, dtype).astype(np.float64).reshape(shape)


# ---- against the f64 oracle ----------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("out_dtype", ["f32", "bf16"])
@pytest.mark.parametrize("w_kind", W_KINDS)
@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemv_matches_f64(fw, out_dtype, w_kind, x_dtype, M, N, K, rng):
    x = random_x(rng, M, K, x_dtype)
    w = random_w(rng, N, K)
    ws, ws_ref = make_scale(rng, w_kind, N, ref.ceil_div(N, 128), K, fw)
    xs = xs_ref = None
    if x_dtype == "e4m3":  # the x scale kind follows the w kind, so every kind meets e4m3 x
        xs, xs_ref = make_scale(rng, X_KINDS[W_KINDS.index(w_kind) % 3], M, M, K, fw)
    want = ref.gemv(f64(x, x_dtype), ref.decode(w, "e4m3"), ws_ref, xs_ref)
    wq = to_fw(w.view(ml_dtypes.float8_e4m3fn), fw)
    out = poisoned((M, N), out_dtype, fw)
    y = cppmega.fp8_gemv(to_fw(x, fw), wq, ws, xs, out=out)
    assert y is out
    err = rel_l2(out_values(y, out_dtype, (M, N)), want)
    assert err <= TOL[out_dtype], f"rel L2 {err}"
    # The allocating form: the input's framework, [M, N], out_dtype (bf16 by default).
    y2 = cppmega.fp8_gemv(to_fw(x, fw), wq, ws, xs, out_dtype)
    assert fw_of(y2) == fw and tuple(y2.shape) == (M, N)
    assert str(y2.dtype).endswith({"f32": "float32", "bf16": "bfloat16"}[out_dtype])
    assert np.array_equal(bits(y2), bits(y))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gemv_f16_out_and_defaults(fw, rng):
    M, N, K = 5, 70, 384
    x = random_x(rng, M, K, "bf16")
    w = random_w(rng, N, K)
    s = random_scales(rng, (N,)) / 64  # keeps y inside f16's range
    want = ref.gemv(f64(x, "bf16"), ref.decode(w, "e4m3"), s)
    y = cppmega.fp8_gemv(to_fw(x, fw), to_fw(w, fw), to_fw(s, fw), out_dtype="f16")  # uint8 w: e4m3 bits
    assert rel_l2(out_values(y, "f16", (M, N)), want) <= TOL["f16"]
    y = cppmega.fp8_gemv(to_fw(x, fw), to_fw(w, fw), to_fw(s, fw))
    assert str(y.dtype).endswith("bfloat16")
    assert rel_l2(out_values(y, "bf16", (M, N)), want) <= TOL["bf16"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gemv_uint8_x_is_e4m3(fw, rng):
    M, N, K = 4, 33, 260
    x = random_w(rng, M, K)
    w = random_w(rng, N, K)
    xs = random_scales(rng, (M, 3))
    want = ref.gemv(ref.decode(x, "e4m3"), ref.decode(w, "e4m3"), 0.5, xs)
    y = cppmega.fp8_gemv(to_fw(x, fw), to_fw(w, fw), 0.5, to_fw(xs, fw), "f32")
    assert rel_l2(out_values(y, "f32", (M, N)), want) <= TOL["f32"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gemv_row_strides(fw, rng):
    # x, w and out with row strides wider than K / N (innermost contiguous): views of wider arrays.
    M, N, K = 6, 50, 300
    xw = random_x(rng, M, K + 40, "bf16")
    ww = random_w(rng, N, K + 16)
    xt, wt = to_fw(xw, fw), to_fw(ww.view(ml_dtypes.float8_e4m3fn), fw)
    x, w = xt[:, 5:5 + K], wt[:, 16:]
    s = random_scales(rng, (ref.ceil_div(N, 128), ref.ceil_div(K, 128)))
    want = ref.gemv(f64(xw[:, 5:5 + K], "bf16"), ref.decode(ww[:, 16:], "e4m3"), s)
    store = poisoned((M, N + 7), "f32", fw)
    out = store[:, 3:3 + N]
    y = cppmega.fp8_gemv(x, w, to_fw(s, fw), out=out)
    assert rel_l2(out_values(store, "f32", (M, N + 7))[:, 3:3 + N], want) <= TOL["f32"]
    sv = bits(store).reshape(M, N + 7)
    assert (sv[:, :3] == 0xFFFFFFFF).all() and (sv[:, 3 + N:] == 0xFFFFFFFF).all()  # padding untouched
    assert y is out


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gemv_empty_and_k_zero(fw, rng):
    w = random_w(rng, 8, 0)
    x = np.zeros((3, 0), np.float32)
    y = cppmega.fp8_gemv(to_fw(x, fw), to_fw(w, fw), 1.0, out=poisoned((3, 8), "bf16", fw))
    assert (bits(y) == 0).all()  # the empty sum
    y = cppmega.fp8_gemv(to_fw(np.zeros((0, 64), np.float32), fw), to_fw(random_w(rng, 8, 64), fw), 1.0)
    assert tuple(y.shape) == (0, 8)
    y = cppmega.fp8_gemv(to_fw(np.ones((2, 64), np.float32), fw), to_fw(random_w(rng, 0, 64), fw), 1.0, out_dtype="f32")
    assert tuple(y.shape) == (2, 0)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_gemv_torch_input_that_requires_grad(rng):
    x = torch.from_numpy(random_x(rng, 2, 128, "f32")).requires_grad_()
    w = random_w(rng, 16, 128)
    y = cppmega.fp8_gemv(x, torch.from_numpy(w), 1.0, out_dtype="f32")
    want = ref.gemv(x.detach().numpy().astype(np.float64), ref.decode(w, "e4m3"), 1.0)
    assert rel_l2(y.numpy(), want) <= TOL["f32"]


# ---- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gemv_errors(fw, rng):
    M, N, K = 4, 16, 256
    x = to_fw(random_x(rng, M, K, "bf16"), fw)
    xq = to_fw(random_x(rng, M, K, "e4m3"), fw)
    w = to_fw(random_w(rng, N, K).view(ml_dtypes.float8_e4m3fn), fw)
    f32 = lambda *shape: to_fw(np.ones(shape, np.float32), fw)  # noqa: E731
    cases = [
        (ValueError, r"x must be f32, bf16, f16 or e4m3, got i32", lambda: cppmega.fp8_gemv(
            to_fw(np.ones((M, K), np.int32), fw), w, 1.0)),
        (ValueError, r"x has dtype float64", lambda: cppmega.fp8_gemv(to_fw(np.ones((M, K)), fw), w, 1.0)),
        (ValueError, r"x must have rank 2 \[M,K\]", lambda: cppmega.fp8_gemv(
            to_fw(np.ones(K, np.float32), fw), w, 1.0)),
        (ValueError, r"w must be e4m3, got bf16", lambda: cppmega.fp8_gemv(x, to_fw(
            np.ones((N, K), ml_dtypes.bfloat16), fw), 1.0)),
        (ValueError, r"w must have rank 2 \[N,K\]", lambda: cppmega.fp8_gemv(
            x, to_fw(random_w(rng, 1, K)[0], fw), 1.0)),
        (ValueError, r"must have the same K", lambda: cppmega.fp8_gemv(x, to_fw(random_w(rng, N, K + 1), fw), 1.0)),
        (ValueError, r"x is e4m3 .* and needs x_scale", lambda: cppmega.fp8_gemv(xq, w, 1.0)),
        (ValueError, r"x_scale is only for e4m3 x", lambda: cppmega.fp8_gemv(x, w, 1.0, 2.0)),
        (ValueError, r"w_scale must be finite and > 0, got -1", lambda: cppmega.fp8_gemv(x, w, -1.0)),
        (ValueError, r"w_scale must be finite and > 0, got nan", lambda: cppmega.fp8_gemv(x, w, float("nan"))),
        (ValueError, r"w_scale must be finite and > 0, got 0", lambda: cppmega.fp8_gemv(x, w, 0)),
        (ValueError, r"x_scale must be finite and > 0", lambda: cppmega.fp8_gemv(xq, w, 1.0, float("inf"))),
        (ValueError, r"w_scale must be f32 with one element \(per tensor\), shape \[N\]=\[16\] \(per row\) or "
                     r"\[ceil\(N/128\),ceil\(K/128\)\]=\[1,2\] \(per block\), got f32\[17\]",
         lambda: cppmega.fp8_gemv(x, w, f32(N + 1))),
        (ValueError, r"w_scale must be f32 .*got f32\[1,3\]", lambda: cppmega.fp8_gemv(x, w, f32(1, 3))),
        (ValueError, r"w_scale must be f32, got f16", lambda: cppmega.fp8_gemv(
            x, w, to_fw(np.ones(N, np.float16), fw))),
        (ValueError, r"x_scale must be f32 .*\[M\]=\[4\] .*\[M,ceil\(K/128\)\]=\[4,2\]", lambda: cppmega.fp8_gemv(
            xq, w, 1.0, f32(M, 3))),
        (ValueError, r"out must have shape \[M,N\]=\[4,16\]", lambda: cppmega.fp8_gemv(
            x, w, 1.0, out=poisoned((4, 15), "bf16", fw))),
        (ValueError, r"out must be f32, bf16 or f16, got e4m3", lambda: cppmega.fp8_gemv(
            x, w, 1.0, out=poisoned((4, 16), "e4m3", fw) if fw == "numpy" or hasattr(torch, "float8_e4m3fn")
            else to_fw(np.zeros((4, 16), ml_dtypes.float8_e4m3fn), "numpy"))),
        (ValueError, r"out_dtype must be f32, bf16, f16", lambda: cppmega.fp8_gemv(x, w, 1.0, out_dtype="e4m3")),
        (ValueError, r"out has dtype f32 but out_dtype is bf16", lambda: cppmega.fp8_gemv(
            x, w, 1.0, out_dtype="bf16", out=poisoned((4, 16), "f32", fw))),
        (ValueError, r"x must be contiguous|x must have a contiguous innermost", lambda: cppmega.fp8_gemv(
            to_fw(random_x(rng, M, 2 * K, "f32"), fw)[:, ::2], w, 1.0)),
        (NotImplementedError, r"", lambda: cppmega.fp8_gemv(x, w, 1.0, backend="cuda")),
        (TypeError, r"w_scale must be a number or an f32 array, got bool", lambda: cppmega.fp8_gemv(x, w, True)),
        (TypeError, r"x_scale must be a number or an f32 array, got str", lambda: cppmega.fp8_gemv(xq, w, 1.0, "1")),
        (TypeError, r"w must be a numpy array or a torch tensor", lambda: cppmega.fp8_gemv(x, [[1]], 1.0)),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match="fp8_gemv.*" + msg):
            call()


def test_gemv_overlapping_out_rows(rng):
    x = random_x(rng, 2, 128, "f32")
    w = random_w(rng, 16, 128)
    buf = np.zeros(64, np.float32)
    out = np.lib.stride_tricks.as_strided(buf, shape=(2, 16), strides=(8 * 4, 4))  # row stride 8 < N
    with pytest.raises(ValueError, match=r"fp8_gemv: rows of out must not overlap \(row stride >= N\)"):
        cppmega.fp8_gemv(x, w, 1.0, out=out)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gemv_bad_call_leaves_out_untouched(fw, rng):
    x = to_fw(random_x(rng, 2, 128, "bf16"), fw)
    w = to_fw(random_w(rng, 8, 128), fw)
    out = poisoned((2, 8), "f32", fw, byte=0x5A)
    with pytest.raises(ValueError, match="fp8_gemv: w_scale"):
        cppmega.fp8_gemv(x, w, to_fw(np.ones(9, np.float32), fw), out=out)
    assert (bits(out) == 0x5A5A5A5A).all()


# ---- CUDA against the reference backend on CPU copies ---------------------------------------------

def _cuda(a):
    return to_fw(a, "torch", "cuda")


def _check_cuda(rng, M, N, K, x_dtype, w_kind, x_kind, out_dtype):
    """The CUDA backend against the reference backend on CPU copies, with the C++ tests' bound:
    ||got - ref|| <= tol ||ref|| + 1e-7 || |x| |w| || (what f32 accumulation of a cancelling sum
    cannot avoid)."""
    x = random_x(rng, M, K, x_dtype)
    w = random_w(rng, N, K)
    ws, _ = make_scale(rng, w_kind, N, ref.ceil_div(N, 128), K, "numpy")
    xs = make_scale(rng, x_kind, M, M, K, "numpy")[0] if x_dtype == "e4m3" else None
    want = np.asarray(cppmega.fp8_gemv(x, w, ws, xs, "f32", backend="reference"), np.float64)
    top = np.abs(want).max()
    if out_dtype == "f16" and top > 16384:  # keep y inside f16's range: a power of two, exact
        ws = ws * 2.0 ** -int(np.ceil(np.log2(top / 16384)))
        want = np.asarray(cppmega.fp8_gemv(x, w, ws, xs, "f32", backend="reference"), np.float64)
    absref = ref.gemv(np.abs(f64(x, x_dtype)), np.abs(ref.decode(w, "e4m3")), ws, xs)
    dev = lambda s: s if s is None or isinstance(s, float) else _cuda(s)  # noqa: E731
    y = cppmega.fp8_gemv(_cuda(x), _cuda(w), dev(ws), dev(xs), out_dtype, backend="cuda")
    assert y.is_cuda and tuple(y.shape) == (M, N)
    got = out_values(y, out_dtype, (M, N))
    assert not np.isnan(got).any()
    err = np.linalg.norm(got - want)
    bound = TOL[out_dtype] * np.linalg.norm(want) + 1e-7 * np.linalg.norm(absref)
    assert err <= bound, f"M={M} N={N} K={K} x {x_dtype} w {w_kind} x_scale {x_kind} out {out_dtype}: {err} > {bound}"


@needs_cuda
@pytest.mark.parametrize("out_dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("M,N,K", SHAPES + [(1, 4096, 4096), (16, 7168, 2048), (64, 1000, 4100), (33, 257, 7168)])
def test_cuda_gemv_matches_reference(out_dtype, x_dtype, M, N, K, rng):
    for i, w_kind in enumerate(W_KINDS):
        _check_cuda(rng, M, N, K, x_dtype, w_kind, X_KINDS[i % 3], out_dtype)


@needs_cuda
def test_cuda_gemv_auto_stream_and_strides(rng):
    M, N, K = 8, 300, 1024
    x = random_x(rng, M, K + 64, "bf16")
    w = random_w(rng, N, K)
    s = random_scales(rng, (N,))
    want = cppmega.fp8_gemv(np.ascontiguousarray(x[:, :K]), w, s, None, "f32", backend="reference")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        xd = _cuda(x)[:, :K]  # row stride K + 64
        y = cppmega.fp8_gemv(xd, _cuda(w), _cuda(s), out_dtype="f32")  # AUTO, torch's current stream
    stream.synchronize()
    assert cppmega.dispatch_log()[-1]["backend"].startswith("cuda")
    assert rel_l2(y.cpu().numpy(), np.asarray(want, np.float64)) <= 1e-5


@needs_cuda
def test_cuda_gemv_device_mismatch(rng):
    x = _cuda(random_x(rng, 2, 128, "bf16"))
    w = random_w(rng, 8, 128)
    with pytest.raises(ValueError, match="fp8_gemv: all tensors of one call must be on one device: w is on cpu"):
        cppmega.fp8_gemv(x, to_fw(w, "torch"), 1.0)
    with pytest.raises(ValueError, match="fp8_gemv: .*one device: w_scale is on cpu"):
        cppmega.fp8_gemv(x, _cuda(w), to_fw(np.ones(8, np.float32), "torch"))
    with pytest.raises(ValueError, match="fp8_gemv: .*one device: out is on cpu"):
        cppmega.fp8_gemv(x, _cuda(w), 1.0, out=poisoned((2, 8), "bf16", "torch"))
    with pytest.raises(NotImplementedError, match="fp8_gemv"):
        cppmega.fp8_gemv(x, _cuda(w), 1.0, backend="reference")
