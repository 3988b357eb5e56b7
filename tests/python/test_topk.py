"""topk through Python: numpy and torch (CPU; CUDA where available) against a numpy oracle."""

import numpy as np
import pytest

import cppmega

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def oracle(scores, k, starts=None, ends=None):
    """Plain numpy: valid, selectable entries sorted by (value desc, index asc), -1 padded."""
    s = np.asarray(scores, dtype=np.float64)
    rows, t = s.shape
    out = np.full((rows, k), -1, dtype=np.int32)
    for r in range(rows):
        lo = 0 if starts is None else min(max(int(starts[r]), 0), t)
        hi = t if ends is None else min(max(int(ends[r]), 0), t)
        cand = [j for j in range(lo, hi) if not np.isnan(s[r, j]) and s[r, j] != -np.inf]
        cand.sort(key=lambda j: (-(s[r, j] + 0.0), j))  # -0.0 ties with +0.0
        sel = cand[:k]
        out[r, :len(sel)] = sel
    return out


def adversarial(rng, rows, t):
    s = rng.standard_normal((rows, t)).astype(np.float32)
    s[0, :] = 1.5                                  # every value equal
    if rows > 1:
        s[1, ::3] = 0.25                           # many ties
    if rows > 2:
        s[2, ::5] = np.nan
        s[2, 1::7] = -np.inf
    if rows > 3:
        s[3, ::2] = -0.0
        s[3, 1::2] = 0.0
    return s


@pytest.mark.parametrize("rows,t,k", [(5, 1, 1), (6, 37, 5), (4, 100, 100), (3, 64, 200), (8, 513, 17)])
def test_numpy_matches_oracle(rows, t, k):
    rng = np.random.default_rng()
    s = adversarial(rng, rows, t)
    starts = rng.integers(-3, t + 3, rows).astype(np.int32)
    ends = (starts + rng.integers(-2, t + 2, rows)).astype(np.int32)
    got = cppmega.topk(s, k, starts, ends, backend="reference")
    assert got.dtype == np.int32 and got.shape == (rows, k)
    np.testing.assert_array_equal(got, oracle(s, k, starts, ends))
    np.testing.assert_array_equal(cppmega.topk(s, k), oracle(s, k))


def test_batched_form_and_row_stride():
    rng = np.random.default_rng()
    s = rng.standard_normal((2, 3, 50)).astype(np.float32)
    got = cppmega.topk(s, 7)
    assert got.shape == (2, 3, 7)
    np.testing.assert_array_equal(got.reshape(6, 7), oracle(s.reshape(6, 50), 7))
    wide = rng.standard_normal((4, 80)).astype(np.float32)
    view = wide[:, :50]  # row stride 80 > T = 50
    np.testing.assert_array_equal(cppmega.topk(view, 9), oracle(view, 9))


def test_errors():
    s = np.ones((3, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="topk"):
        cppmega.topk(s, 0)
    with pytest.raises(ValueError, match="topk"):
        cppmega.topk(s, 3, np.zeros(2, dtype=np.int32))
    with pytest.raises(ValueError, match="topk"):
        cppmega.topk(np.ones((3, 10), dtype=np.int32), 3)
    with pytest.raises(NotImplementedError):
        cppmega.topk(s, 3, backend="cuda")


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_torch_cpu_and_bf16():
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 31)))
    s = torch.randn(7, 300, generator=g).to(torch.bfloat16)
    got = cppmega.topk(s, 40)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), oracle(s.float().numpy(), 40))


@pytest.mark.skipif(torch is None or not torch.cuda.is_available() or cppmega.cuda_device_count() == 0,
                    reason="needs torch with CUDA and a cppmega CUDA device")
def test_torch_cuda_matches_reference():
    rng = np.random.default_rng()
    for rows, t, k in [(64, 4096, 256), (3, 131072, 2048), (9, 1000, 1500)]:
        s = adversarial(rng, rows, t)
        starts = rng.integers(0, t, rows).astype(np.int32)
        ends = (starts + rng.integers(0, t, rows)).astype(np.int32)
        want = cppmega.topk(s, k, starts, ends, backend="reference")
        sd = torch.from_numpy(s).cuda()
        got = cppmega.topk(sd, k, torch.from_numpy(starts).cuda(), torch.from_numpy(ends).cuda(), backend="cuda")
        assert got.is_cuda
        np.testing.assert_array_equal(got.cpu().numpy(), want)
