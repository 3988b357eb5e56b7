"""Backend selection (argument, per-op env, global env, AUTO), the dispatch log and listings."""

import json

import numpy as np
import pytest

import cppmega
from cppmega import _C
from cppmega.bench import elementwise_bucket
from conftest import FRAMEWORKS, to_fw

OPS = ["fp8_amax", "fp8_quantize", "fp8_dequantize", "fp8_pack"]


def x_of(fw, n=64):
    return to_fw(np.linspace(-3, 5, n, dtype=np.float32), fw)


def last():
    return cppmega.dispatch_log()[-1]


def call_each_op(x):
    cppmega.fp8_amax(x)
    q = cppmega.fp8_quantize(x, 0.5)
    cppmega.fp8_dequantize(q, 0.5)
    cppmega.fp8_pack(x)


def test_ops_listing():
    listing = cppmega.ops()
    ops = [e["op"] for e in listing]
    assert [op for op in ops if op in OPS] == OPS  # other op families may follow
    assert len(set(ops)) == len(ops)
    for entry in listing:
        names = [b["name"] for b in entry["backends"]]
        assert "reference" in names
        for b in entry["backends"]:
            assert set(b) == {"name", "device", "features", "available", "reason"}
            assert b["device"] in ("cpu", "cuda") and b["features"]
            assert b["available"] == (b["reason"] == "")
            if b["name"] == "reference":
                assert b["device"] == "cpu" and b["available"]
        if not cppmega.built_with_cuda():
            assert names == ["reference"]


def test_runtime_introspection():
    n = cppmega.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    assert isinstance(cppmega.built_with_cuda(), bool)
    if n == 0:
        assert cppmega.cuda_unavailable_reason()
    else:
        info = cppmega.device_info(0)
        assert info["name"] and info["sm_count"] > 0 and info["arch"].startswith("sm_")
    assert cppmega.__version__ == "0.1.0"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_auto_is_logged(fw):
    cppmega.clear_dispatch_log()
    call_each_op(x_of(fw))
    log = cppmega.dispatch_log()
    assert [r["op"] for r in log] == OPS
    for r in log:
        assert set(r) == {"seq", "op", "backend", "reason"}
        assert r["backend"] == "reference" and r["reason"].startswith("auto")
    assert [r["seq"] for r in log] == sorted(r["seq"] for r in log)


def test_clear_dispatch_log():
    cppmega.fp8_amax(x_of("numpy"))
    cppmega.clear_dispatch_log()
    assert cppmega.dispatch_log() == []


def test_dispatch_log_is_bounded():
    cppmega.clear_dispatch_log()
    x = x_of("numpy", 4)
    for _ in range(300):
        cppmega.fp8_amax(x)
    log = cppmega.dispatch_log()
    assert len(log) == 256
    assert log[-1]["seq"] - log[0]["seq"] == 255


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_backend_argument(fw):
    x = x_of(fw)
    cppmega.fp8_amax(x, backend="reference")
    assert last()["backend"] == "reference" and last()["reason"] == "argument backend="
    cppmega.fp8_pack(x, backend=" Reference ")  # names are case- and space-insensitive
    assert last()["op"] == "fp8_pack" and last()["backend"] == "reference"
    cppmega.fp8_amax(x, backend="auto")
    assert last()["reason"].startswith("auto")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["cuda", "cuda.sm90"])
def test_cuda_backend_on_cpu_input_is_unsupported(fw, backend):
    x = x_of(fw)
    cppmega.clear_dispatch_log()
    with pytest.raises(NotImplementedError, match=f"fp8_quantize: backend '{backend}'"):
        cppmega.fp8_quantize(x, 1.0, backend=backend)
    with pytest.raises(cppmega.Unsupported):
        cppmega.fp8_amax(x, backend=backend)
    assert cppmega.dispatch_log() == []  # nothing ran, nothing silently substituted


def test_unknown_backend_argument():
    with pytest.raises(ValueError, match="fp8_amax: unknown backend 'bogus'"):
        cppmega.fp8_amax(x_of("numpy"), backend="bogus")


def test_env_global_bogus(monkeypatch):
    monkeypatch.setenv("CPPMEGA_BACKEND", "bogus")
    with pytest.raises(ValueError, match="unknown backend 'bogus' from env CPPMEGA_BACKEND"):
        cppmega.fp8_amax(x_of("numpy"))
    cppmega.fp8_amax(x_of("numpy"), backend="reference")  # the argument comes first
    assert last()["reason"] == "argument backend="


def test_env_global(monkeypatch):
    monkeypatch.setenv("CPPMEGA_BACKEND", "reference")
    cppmega.fp8_quantize(x_of("numpy"), 1.0)
    assert last()["reason"] == "env CPPMEGA_BACKEND"


def test_env_per_op(monkeypatch):
    x = x_of("numpy")
    monkeypatch.setenv("CPPMEGA_BACKEND__FP8_AMAX", "reference")
    monkeypatch.setenv("CPPMEGA_BACKEND", "bogus")
    cppmega.fp8_amax(x)  # the per-op variable wins over the global one
    assert last()["backend"] == "reference" and last()["reason"] == "env CPPMEGA_BACKEND__FP8_AMAX"
    with pytest.raises(ValueError, match="env CPPMEGA_BACKEND"):
        cppmega.fp8_quantize(x, 1.0)  # other ops read the global one
    monkeypatch.delenv("CPPMEGA_BACKEND")
    monkeypatch.setenv("CPPMEGA_BACKEND__FP8_AMAX", "cuda")
    with pytest.raises(NotImplementedError, match="env CPPMEGA_BACKEND__FP8_AMAX"):
        cppmega.fp8_amax(x)
    cppmega.fp8_quantize(x, 1.0)
    assert last()["op"] == "fp8_quantize" and last()["reason"].startswith("auto")


@pytest.mark.parametrize("n", [1, 1000, 1024, 1025, 4096, 4097, 100_000])
def test_bench_bucket_matches_the_cpp_bucket(n):
    # A receipt row under Python's bucket string must route AUTO in C++: then the strings agree.
    receipt = {"device": {"arch": "cpu"}, "created_utc": "2099-01-01T00:00:00Z", "results": [{
        "op": "fp8_amax", "bucket": elementwise_bucket("f32", n),
        "timings": {"cppmega:reference": {"median_us": 1.0}},
        "parity": {"cppmega:reference": {"ok": True}}}]}
    try:
        _C.set_receipts_for_testing([json.dumps(receipt)])
        cppmega.fp8_amax(np.ones(n, np.float32))
        assert last()["reason"].startswith("auto: fastest parity-clean in receipt"), last()
        assert elementwise_bucket("f32", n) in last()["reason"]
    finally:
        _C.set_receipts_for_testing([])
