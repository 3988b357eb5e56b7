"""python -m cppmega.bench on the CPU at tiny sizes, and the bench bindings it uses."""

import json
import os
import subprocess
import sys

import pytest

import numpy as np

import cppmega
from cppmega import _C
from cppmega.bench import (BLOCK_KINDS, BLOCKS_SHAPE_CPU, GEMV_MS_CPU, GEMV_SHAPES_CPU, OPS, TOPK_SHAPES_CPU,
                           blocks_bucket, elementwise_bucket, gemv_bucket, main, topk_bucket)
from conftest import HAS_FLOAT8, HAS_TORCH, NP_DTYPES

# The ops the bench covers; a new op must be added here and get its identity checks below.
EXPECTED_OPS = {"fp8_amax", "fp8_quantize", "fp8_dequantize", "fp8_pack", "topk", "fp8_quantize_blocks",
                "mxfp8_quantize", "fp8_gemv"}


def test_bench_op_set():
    assert set(OPS) == EXPECTED_OPS and len(OPS) == len(EXPECTED_OPS)


def test_bench_cpu_receipt(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--device", "cpu", "--n", "3000", "--warmup", "1", "--iters", "3", "--out", str(out), "--strict"]) == 0
    printed = capsys.readouterr().out
    assert f"receipt: {out}" in printed and "cppmega:reference" in printed
    r = json.loads(out.read_text())
    for key in ("schema", "schema_version", "created_utc", "tool", "git", "device", "versions", "config", "ceilings",
                "results"):
        assert key in r, key
    assert r["tool"] == "python -m cppmega.bench" and r["device"]["arch"] == "cpu"
    assert r["config"] == {"warmup": 1, "iters": 3, "seed": 0}
    assert "numpy" in r["versions"] and "cppmega" in r["versions"]
    assert {x["op"] for x in r["results"]} == set(OPS)
    assert sorted(x["shape"][0] for x in r["results"] if x["op"] == "fp8_pack") == [3000, 4096]
    topk = [x for x in r["results"] if x["op"] == "topk"]
    assert [x["shape"] for x in topk] == [[rows, t] for rows, t, _, _ in TOPK_SHAPES_CPU]
    blocks = [x for x in r["results"] if x["op"] == "fp8_quantize_blocks"]
    assert [x["block"] for x in blocks] == list(BLOCK_KINDS)
    gemv = [x for x in r["results"] if x["op"] == "fp8_gemv"]
    assert [x["shape"] for x in gemv] == [[m, n, k] for n, k in GEMV_SHAPES_CPU for m in GEMV_MS_CPU]
    for res in r["results"]:
        op = res["op"]
        if op == "topk":
            rows, t = res["shape"]
            assert res["bucket"] == topk_bucket("f32", rows, t, res["k"]) and res["dtype"] == "f32"
        elif op in ("fp8_quantize_blocks", "mxfp8_quantize"):
            m, k = res["shape"]
            assert (m, k) == BLOCKS_SHAPE_CPU and res["dtype"] == "bf16"
            kind = res["block"] if op == "fp8_quantize_blocks" else "mx32"
            assert res["name"] == f"bf16 [{m},{k}] {kind}" and res["bucket"] == blocks_bucket("bf16", m * k, kind)
            assert res["check_finite"] is False and res["bytes"] > 3 * m * k
        elif op == "fp8_gemv":
            m, n, k = res["shape"]
            assert res["name"] == f"bf16 M={m} N={n} K={k} per-row w" and res["dtype"] == "bf16"
            assert res["bucket"] == gemv_bucket("bf16", m, n, k)
            assert res["bytes"] == n * k + 2 * m * k + 2 * m * n and res["flops"] == 2 * m * n * k
            assert res["w_scale"] == "row" and res["weight_copies"] == 1
            p = res["parity"]["cppmega:reference"]
            assert p["metric"] == "rel_l2" and 0 < p["value"] <= p["tolerance"] == 1e-2
        else:
            n = res["shape"][0]
            assert res["bucket"] == elementwise_bucket("bf16", n)
            assert res["name"] == f"bf16 n={n}" and res["dtype"] == "bf16" and res["bytes"] > 0
        t = res["timings"]["cppmega:reference"]
        assert t["iters"] == 3 and len(t["samples_us"]) == 3 and t["median_us"] > 0
        assert res["parity"]["cppmega:reference"]["ok"] is True
        peers = [label for label in res["timings"] if label.startswith("torch:")]
        if HAS_TORCH and (op in ("fp8_amax", "topk", "fp8_gemv") or HAS_FLOAT8):
            assert peers and all(p in res["peer_expressions"] for p in peers)
        assert all(label.startswith(("cppmega:", "torch:")) for label in res["timings"])


def test_bench_buckets_are_the_cpp_buckets(tmp_path, capsys):
    # AUTO finds a receipt row only under the bucket the C++ op computes: load the bench's receipt
    # and check that each new op's AUTO decision names it.
    out = tmp_path / "r.json"
    assert main(["--device", "cpu", "--warmup", "0", "--iters", "1", "--out", str(out),
                 "--ops", "fp8_quantize_blocks,mxfp8_quantize,fp8_gemv"]) == 0
    receipt = json.loads(out.read_text())
    bf16 = NP_DTYPES["bf16"]
    calls = {
        "fp8_quantize_blocks": lambda res: cppmega.fp8_quantize_blocks(
            np.ones(res["shape"], bf16), res["block"], check_finite=False),
        "mxfp8_quantize": lambda res: cppmega.mxfp8_quantize(np.ones(res["shape"], bf16)),
        "fp8_gemv": lambda res: cppmega.fp8_gemv(np.ones(res["shape"][::2], bf16),
                                                 np.zeros(res["shape"][1:], np.uint8), 1.0),
    }
    try:
        _C.set_receipts_for_testing([json.dumps(receipt)])
        for res in receipt["results"]:
            calls[res["op"]](res)
            last = cppmega.dispatch_log()[-1]
            assert last["op"] == res["op"] and "receipt" in last["reason"], last
            assert f"({res['bucket']})" in last["reason"], (res["bucket"], last)
    finally:
        _C.set_receipts_for_testing([])


def test_bench_folder_output_and_op_filter(tmp_path, capsys):
    assert main(["--device", "cpu", "--n", "100", "--warmup", "0", "--iters", "1", "--ops", "amax",
                 "--out", str(tmp_path) + "/"]) == 0
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    r = json.loads(files[0].read_text())
    assert [x["op"] for x in r["results"]] == ["fp8_amax"]


def test_bench_min_ratio_gate(tmp_path, capsys):
    # No peer can be 1e9 times slower: a strict run must fail, a plain run only notes it.
    args = ["--device", "cpu", "--n", "64", "--warmup", "0", "--iters", "1", "--ops", "amax", "--out", str(tmp_path),
            "--min-ratio", "torch=1e9"]
    assert main(args) == 0
    assert "note: " in capsys.readouterr().out
    assert main(args + ["--strict"]) == 1
    assert "FAIL: " in capsys.readouterr().out


def test_bench_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--ops", "fp8_gemm", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--min-ratio", "torch", "--out", str(tmp_path)])


def test_python_dash_m(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-m", "cppmega.bench", "--device", "cpu", "--n", "64", "--warmup", "0",
                        "--iters", "1", "--ops", "pack", "--out", str(tmp_path / "x.json")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "receipt: " in p.stdout and (tmp_path / "x.json").exists()


def test_time_paired_binding():
    calls = []
    stats = _C.time_paired([("a", lambda: calls.append("a")), ("b", lambda: calls.append("b"))], "cpu", 0, 2, 5)
    assert [s["label"] for s in stats] == ["a", "b"]
    assert calls.count("a") == calls.count("b") == 7
    assert calls[:4] == ["a", "b", "b", "a"]  # order alternates between rounds
    for s in stats:
        assert s["iters"] == 5 and len(s["samples_us"]) == 5 and s["min_us"] <= s["median_us"] <= s["max_us"]


def test_time_paired_propagates_python_errors():
    def boom():
        raise KeyError("from the callable")
    with pytest.raises(KeyError, match="from the callable"):
        _C.time_paired([("boom", boom)], "cpu", 0, 0, 1)
    with pytest.raises(TypeError):
        _C.time_paired([("no callable", 3)], "cpu", 0, 0, 1)


def test_receipt_binding(tmp_path):
    r = _C.Receipt("pytest", "cpu", 1, 2, 7)
    r.set_ceilings({"copy_tbps": 0.5, "bf16_matmul_tflops": 0.0, "copy_method": "memcpy", "matmul_method": ""})
    r.set_versions("pytest", "yes")
    stats = {"median_us": 2.0, "min_us": 1.0, "max_us": 3.0, "mean_us": 2.0, "iters": 2, "samples_us": [1.0, 3.0]}
    r.add({"op": "fp8_amax", "name": "f32 n=8", "bucket": elementwise_bucket("f32", 8), "dtype": "f32", "shape": [8],
           "bytes": 32.0, "flops": 0.0,
           "timings": {"cppmega:reference": stats, "torch:amax": dict(stats, median_us=8.0)},
           "parity": {"cppmega:reference": {"ok": False, "metric": "mismatched_bytes", "value": 3, "tolerance": 0}},
           "extra": {"note": "hi"}})
    assert len(r) == 1
    j = json.loads(r.to_json())
    res = j["results"][0]
    assert res["note"] == "hi" and res["timings"]["torch:amax"]["median_us"] == 8.0
    assert j["versions"]["pytest"] == "yes" and j["ceilings"]["copy_tbps"] == 0.5
    assert "fp8_amax f32 n=8" in r.table()
    fails = r.strict_failures({"torch": 4.0})
    assert any("parity failed" in f for f in fails) and not any("torch:amax /" in f for f in fails)
    assert any("torch:amax /" in f for f in r.strict_failures({"torch": 4.0001}))
    path = r.write(str(tmp_path / "sub" / "r.json"))
    assert json.loads(open(path).read())["tool"] == "pytest"
    with pytest.raises(ValueError, match="device"):
        _C.Receipt("pytest", "gpu7", 1, 1, 0)


def test_measure_ceilings_cpu():
    c = _C.measure_ceilings("cpu", 0)
    assert set(c) == {"copy_tbps", "bf16_matmul_tflops", "copy_method", "matmul_method"}
    assert c["copy_tbps"] > 0
