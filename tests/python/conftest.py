"""Shared fixtures and helpers: framework conversion (numpy <-> torch, bit views that work on
every torch version), poisoned output buffers, a clean backend environment per test."""

import os
import zlib

import ml_dtypes
import numpy as np
import pytest

import cppmega

try:
    import torch
except ImportError:  # torch is optional: numpy tests still run
    torch = None

HAS_TORCH = torch is not None
HAS_FLOAT8 = HAS_TORCH and hasattr(torch, "float8_e4m3fn")
HAS_CUDA = HAS_TORCH and torch.cuda.is_available() and cppmega.cuda_device_count() > 0

FRAMEWORKS = ["numpy", pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="torch not installed"))]
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device for torch and cppmega")

NP_DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16,
             "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "u8": np.uint8,
             "i32": np.int32, "i64": np.int64}
if hasattr(ml_dtypes, "float8_e8m0fnu"):  # e8m0 scales (MXFP8); older ml_dtypes: uint8 bits
    NP_DTYPES["e8m0"] = ml_dtypes.float8_e8m0fnu
_WIDTH_NP = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@pytest.fixture(autouse=True)
def clean_backend_env(monkeypatch):
    """No inherited CPPMEGA_BACKEND* variable changes a test's dispatch."""
    for k in list(os.environ):
        if k.startswith("CPPMEGA_BACKEND"):
            monkeypatch.delenv(k)


@pytest.fixture
def rng(request):
    """Fresh random data per test, reproducible per test name."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def torch_dtype(name):
    attr = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "e4m3": "float8_e4m3fn",
            "e5m2": "float8_e5m2", "e8m0": "float8_e8m0fnu", "u8": "uint8", "i32": "int32", "i64": "int64"}[name]
    return getattr(torch, attr, torch.uint8)  # fp8 as raw uint8 on torch without float8


def to_fw(a, fw, device="cpu"):
    """A numpy array (ml_dtypes allowed) in framework `fw`, same bits and dtype."""
    a = np.asarray(a)
    if fw == "numpy":
        return a.copy()
    name = {v: k for k, v in NP_DTYPES.items()}.get(a.dtype.type)
    if name is None:  # float64, int16, ...: dtypes torch and numpy share
        return torch.from_numpy(a.copy()).to(device)
    if a.dtype.itemsize == 1:
        host = torch.from_numpy(a.view(np.uint8).copy())
    elif a.dtype.itemsize == 2:
        host = torch.from_numpy(a.view(np.int16).copy())
    else:
        host = torch.from_numpy(a.copy())
    return host.to(device).view(torch_dtype(name))


def bits(a):
    """The data of a numpy array or torch tensor (any device) as a flat numpy unsigned-int array
    of the same width: compare these for bit-exactness."""
    if HAS_TORCH and isinstance(a, torch.Tensor):
        t = a.detach().cpu().reshape(-1)
        signed = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        return t.view(signed).numpy().view(_WIDTH_NP[t.element_size()])
    a = np.ascontiguousarray(a).reshape(-1)
    return a.view(_WIDTH_NP[a.dtype.itemsize])


def values(a, dtype):
    """The data of `a` as a numpy array of cppmega dtype `dtype` (flattened)."""
    return bits(a).view(NP_DTYPES[dtype])


def poisoned(shape, dtype, fw, device="cpu", byte=0xFF):
    """An output buffer filled with `byte` (0xFF is NaN in every float format used)."""
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.full(n * np.dtype(NP_DTYPES[dtype]).itemsize, byte, np.uint8)
    return to_fw(raw.view(NP_DTYPES[dtype]).reshape(shape), fw, device)


def fw_of(a):
    return "torch" if HAS_TORCH and isinstance(a, torch.Tensor) else "numpy"


def assert_bits_equal(got, want, what=""):
    g, w = bits(got), bits(want)
    assert g.shape == w.shape, f"{what}: {g.shape} vs {w.shape}"
    bad = np.flatnonzero(g != w)
    first = bad[:5]
    assert bad.size == 0, f"{what}: {bad.size} of {g.size} differ, first at {first}: got {g[first]} want {w[first]}"


def assert_float_equal(got, want, dtype, what=""):
    """Bit equality except that any NaN matches any NaN (payloads differ between codecs)."""
    g, w = values(got, dtype).astype(np.float32), values(want, dtype).astype(np.float32)
    nan = np.isnan(w)
    assert np.array_equal(np.isnan(g), nan), f"{what}: NaN positions differ"
    gb, wb = bits(got)[~nan], bits(want)[~nan]
    bad = np.flatnonzero(gb != wb)
    assert bad.size == 0, f"{what}: {bad.size} differ, e.g. got {g[~nan][bad[:5]]} want {w[~nan][bad[:5]]}"
