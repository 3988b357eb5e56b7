"""python -m cppmega.bench: cppmega's backends next to torch peers, in one process, one receipt.

Each case times every backend of the op that runs on the device (label ``cppmega:<backend>``,
forced with ``backend=``, called through the public Python API as a user would) and the torch
peers (``torch:<what>``) with the shared C++ harness (paired, order-alternated, CUDA events), after
checking each backend bit for bit against the reference backend run on CPU copies. The receipt
(same writer and schema as ``cppmega bench``) goes to --out; AUTO can read it.

Without CUDA it runs on the CPU at small sizes: cppmega labels need only numpy (+ml_dtypes);
torch CPU peers join when torch is importable.
"""

import argparse
import platform
import sys

import numpy as np

import cppmega

from . import _C
from ._arrays import ml_dtypes, numpy_dtype, torch_dtype

FORMAT = "e4m3"
FMAX = 448.0
# Dequantisation scale of the dequantize case (as the C++ case): not a power of two, so the
# rounding of decode(q) * scale to bf16 is exercised.
DEQUANT_SCALE = 0.0137
OPS = ("fp8_amax", "fp8_quantize", "fp8_dequantize", "fp8_pack")
SMALL_PACK = 4096  # fp8_pack end to end at a small size: launch latency plus the finite check


def elementwise_bucket(dtype, n):
    """AUTO's shape bucket of an elementwise op; must equal elementwise_bucket in
    src/ops/fp8/fp8_ops.cpp, or AUTO never finds the receipt's rows."""
    k = 10 if n <= 1024 else (n - 1).bit_length()
    return f"{dtype}:n<=2^{k}"


def random_bf16_bits(n, rng):
    """bf16 bit patterns of normal values times a magnitude from {2^-6, 2^-2, 1, 8}, so the codecs
    see several binades. Rounded to nearest even from f32; never all zeros."""
    x = rng.standard_normal(n, dtype=np.float32)
    x *= np.array([2.0 ** -6, 0.25, 1.0, 8.0], np.float32)[rng.integers(0, 4, n, dtype=np.uint8)]
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def random_fp8_bits(n, rng):
    """Uniform e4m3 bytes without the two NaN codes."""
    b = rng.integers(0, 254, n, dtype=np.uint8)
    return np.where(b >= 0x7F, b + 1, b).astype(np.uint8)  # skip 0x7F; 0xFF is never drawn


class Env:
    """Where a run happens: arrays for cppmega labels (torch CUDA tensors, or numpy on the CPU),
    torch tensors for peers (if torch is there), the stream, and host copies for parity."""

    def __init__(self, device):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.torch = None
        try:
            import torch
            self.torch = torch
        except ImportError:
            if self.cuda:
                raise SystemExit("cppmega.bench: --device cuda needs torch (it allocates the device arrays)")
        if self.cuda:
            if not self.torch.cuda.is_available():
                raise SystemExit("cppmega.bench: torch sees no CUDA device")
            if cppmega.cuda_device_count() == 0:
                raise SystemExit(f"cppmega.bench: cppmega has no CUDA device: {cppmega.cuda_unavailable_reason()}")
            self.tdev = self.torch.device(device)
            self.stream = self.torch.cuda.current_stream(self.tdev).cuda_stream
        elif ml_dtypes is None:
            raise SystemExit("cppmega.bench: the CPU bench needs ml_dtypes for numpy bf16/fp8 arrays")
        else:
            self.stream = 0
        self.has_float8 = self.torch is not None and hasattr(self.torch, "float8_e4m3fn")

    def _torch_from_bits(self, bits, dtype, device):
        t = self.torch
        host = t.from_numpy(bits.view(np.int16) if bits.itemsize == 2 else bits)
        return host.to(device).view(torch_dtype(dtype))

    def array(self, bits, dtype):
        """What the cppmega labels get."""
        if self.cuda:
            return self._torch_from_bits(bits, dtype, self.tdev)
        return bits.view(numpy_dtype(dtype))

    def peer(self, bits, dtype, cppmega_array):
        """What the torch peers get (the same memory where possible); None without torch."""
        if self.torch is None:
            return None
        return cppmega_array if self.cuda else self._torch_from_bits(bits, dtype, "cpu")

    def poisoned(self, shape, dtype):
        """An output buffer with every byte 0xFF (NaN in each float format), so a call that
        writes nothing cannot pass parity."""
        n = int(np.prod(shape, dtype=np.int64))
        bits = np.full(n * np.dtype(numpy_dtype(dtype)).itemsize, 0xFF, np.uint8)
        if self.cuda:
            return self._torch_from_bits(bits, "u8", self.tdev).view(torch_dtype(dtype)).reshape(shape)
        return bits.view(numpy_dtype(dtype)).reshape(shape)

    def host_bytes(self, a):
        if self.torch is not None and isinstance(a, self.torch.Tensor):
            a = a.detach().cpu().reshape(-1)
            return a.view(self.torch.uint8).numpy() if a.element_size() == 1 else _torch_bytes(a)
        return np.ascontiguousarray(a).reshape(-1).view(np.uint8)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.tdev)


def _torch_bytes(t):
    # 2- and 4-byte tensors: reinterpret through a same-width integer numpy understands.
    import torch
    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(width).numpy().view(np.uint8)


class Case:
    """One op at one size: how to call each backend, the torch peers, and the parity check."""

    def __init__(self, op, n, dtype, bytes_, extra, call, check, reference, peers, metric="mismatched_bytes"):
        self.op, self.n, self.dtype, self.bytes, self.extra = op, n, dtype, bytes_, extra
        self.call = call            # backend -> None; the timed public call
        self.check = check          # backend -> [output arrays], written into poisoned buffers
        self.reference = reference  # [host byte arrays] from the reference backend on CPU copies
        self.peers = peers          # {label: (callable, expression)}
        self.metric = metric

    def parity(self, env, backend):
        got = self.check(backend)
        env.sync()
        got = [env.host_bytes(g) for g in got]
        diff = int(sum(np.count_nonzero(g != r) for g, r in zip(got, self.reference)))
        if self.metric == "abs_diff":  # one f32 value: report its distance, require bit equality
            a, b = float(got[0].view(np.float32)[0]), float(self.reference[0].view(np.float32)[0])
            return {"ok": diff == 0, "metric": "abs_diff", "value": abs(a - b), "tolerance": 0.0}
        return {"ok": diff == 0, "metric": "mismatched_bytes", "value": float(diff), "tolerance": 0.0}


def _host_ref(arrays):
    return [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays]


def make_cases(env, ops, n, rng):
    """The cases, one at a time (so a case's arrays are freed before the next is made)."""
    makers = {"fp8_amax": _amax_case, "fp8_quantize": _quantize_case, "fp8_dequantize": _dequantize_case}
    for op in OPS:
        if op not in ops:
            continue
        if op == "fp8_pack":
            for size in dict.fromkeys((n, SMALL_PACK)):
                yield _pack_case(env, size, rng)
        else:
            yield makers[op](env, n, rng)


def _amax_case(env, n, rng):
    bits = random_bf16_bits(n, rng)
    x = env.array(bits, "bf16")
    xp = env.peer(bits, "bf16", x)
    ref = cppmega.fp8_amax(bits.view(numpy_dtype("bf16")), backend="reference")
    peers = {"torch:amax": (lambda: xp.abs().amax(), "x.abs().amax()")} if xp is not None else {}
    return Case(
        "fp8_amax", n, "bf16", 2.0 * n, {},
        call=lambda b: cppmega.fp8_amax(x, backend=b),
        check=lambda b: [cppmega.fp8_amax(x, out=env.poisoned((), "f32"), backend=b)],
        reference=_host_ref([ref]), peers=peers, metric="abs_diff")


def _quantize_case(env, n, rng):
    t = env.torch
    bits = random_bf16_bits(n, rng)
    xh = bits.view(numpy_dtype("bf16"))
    x = env.array(bits, "bf16")
    xp = env.peer(bits, "bf16", x)
    amax = float(cppmega.fp8_amax(xh, backend="reference"))
    scale = float(np.float32(amax) / np.float32(FMAX)) if amax > 0 else 1.0  # what current scaling picks
    ref = cppmega.fp8_quantize(xh, scale, FORMAT, backend="reference")
    inv = 1.0 / scale
    peers = {}
    if xp is not None and env.has_float8:
        peers["torch:quantize"] = (lambda: (xp * inv).clamp(-FMAX, FMAX).to(t.float8_e4m3fn),
                                   "(x * (1/scale)).clamp(-448, 448).to(torch.float8_e4m3fn)")
    return Case(
        "fp8_quantize", n, "bf16", 3.0 * n, {"format": FORMAT, "scale": scale},
        call=lambda b: cppmega.fp8_quantize(x, scale, FORMAT, backend=b),
        check=lambda b: [cppmega.fp8_quantize(x, scale, out=env.poisoned((n,), FORMAT), backend=b)],
        reference=_host_ref([ref]), peers=peers)


def _dequantize_case(env, n, rng):
    t = env.torch
    bits = random_fp8_bits(n, rng)
    q = env.array(bits, FORMAT)
    qp = env.peer(bits, FORMAT, q)
    ref = cppmega.fp8_dequantize(bits.view(numpy_dtype(FORMAT)), DEQUANT_SCALE, "bf16", backend="reference")
    peers = {}
    if qp is not None and env.has_float8:
        peers["torch:dequantize"] = (lambda: qp.to(t.bfloat16) * DEQUANT_SCALE, "q.to(torch.bfloat16) * scale")
    return Case(
        "fp8_dequantize", n, "bf16", 3.0 * n, {"format": FORMAT, "scale": DEQUANT_SCALE},
        call=lambda b: cppmega.fp8_dequantize(q, DEQUANT_SCALE, "bf16", backend=b),
        check=lambda b: [cppmega.fp8_dequantize(q, DEQUANT_SCALE, out=env.poisoned((n,), "bf16"), backend=b)],
        reference=_host_ref([ref]), peers=peers)


def _pack_case(env, n, rng):
    t = env.torch
    bits = random_bf16_bits(n, rng)
    x = env.array(bits, "bf16")
    xp = env.peer(bits, "bf16", x)
    q_ref, s_ref = cppmega.fp8_pack(bits.view(numpy_dtype("bf16")), FORMAT, backend="reference")
    peers = {}
    if xp is not None and env.has_float8:
        def torch_pack():
            amax = xp.abs().amax().float()
            scale = t.where(amax > 0, amax / FMAX, t.ones_like(amax))
            return (xp * (1.0 / scale)).clamp(-FMAX, FMAX).to(t.float8_e4m3fn), scale
        peers["torch:pack"] = (torch_pack, "amax = x.abs().amax().float(); scale = where(amax > 0, amax / 448, 1); "
                                           "q = (x * (1/scale)).clamp(-448, 448).to(torch.float8_e4m3fn)")

        def torch_pack_checked():
            # What cppmega's default (check_finite=True) does: refuse NaN/Inf, which costs a host sync.
            amax = xp.abs().amax().float()
            if not bool(t.isfinite(amax).item()):
                raise FloatingPointError("non-finite amax")
            scale = t.where(amax > 0, amax / FMAX, t.ones_like(amax))
            return (xp * (1.0 / scale)).clamp(-FMAX, FMAX).to(t.float8_e4m3fn), scale
        peers["torch:pack_checked"] = (torch_pack_checked, "torch:pack plus `isfinite(amax).item()` (a host sync), "
                                                           "like cppmega's check_finite=True")
    return Case(
        "fp8_pack", n, "bf16", 5.0 * n, {"format": FORMAT, "pow2_scale": False, "check_finite": True},
        call=lambda b: cppmega.fp8_pack(x, FORMAT, backend=b),
        check=lambda b: list(cppmega.fp8_pack(x, FORMAT, out=(env.poisoned((n,), FORMAT), env.poisoned((), "f32")),
                                              backend=b)),
        reference=_host_ref([q_ref, s_ref]), peers=peers)


def runnable_backends(op, device):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    for entry in cppmega.ops():
        if entry["op"] == op:
            return [b["name"] for b in entry["backends"] if b["device"] == kind and b["available"]]
    return []


def parse_min_ratio(items):
    out = {}
    for item in items:
        for part in filter(None, item.split(",")):
            key, sep, value = part.partition("=")
            try:
                out[key.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or not key.strip():
                raise SystemExit(f"cppmega.bench: --min-ratio wants PEER=RATIO (e.g. torch=5), got '{part}'")
    return out


def _versions(env):
    v = {"python": platform.python_version(), "numpy": np.__version__, "cppmega_python": cppmega.__version__}
    if ml_dtypes is not None:
        v["ml_dtypes"] = ml_dtypes.__version__
    if env.torch is not None:
        v["torch"] = env.torch.__version__
        if env.torch.version.cuda:
            v["torch_cuda"] = env.torch.version.cuda
    return v


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cppmega.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when torch and cppmega see a GPU, else cpu)")
    p.add_argument("--n", type=int, help="elements of the large cases (default 2^26 on CUDA, 2^20 on the CPU)")
    p.add_argument("--warmup", type=int, help="warm-up rounds (default 10 on CUDA, 3 on the CPU)")
    p.add_argument("--iters", type=int, help="timed rounds (default 50 on CUDA, 10 on the CPU)")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated ops (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/", help="receipt file (.json) or folder (default out/)")
    p.add_argument("--strict", action="store_true", help="exit 1 on a parity failure or a --min-ratio miss")
    p.add_argument("--min-ratio", action="append", default=[], metavar="PEER=R",
                   help="require peer median / best cppmega median >= R (e.g. torch=5); repeatable")
    args = p.parse_args(argv)

    ops = [o if o.startswith("fp8_") else "fp8_" + o for o in filter(None, args.ops.split(","))]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        p.error(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(OPS)}")
    min_ratio = parse_min_ratio(args.min_ratio)
    device = args.device or _default_device()
    env = Env(device)
    n = args.n or (1 << 26 if env.cuda else 1 << 20)
    if n < 1:
        p.error("--n must be >= 1")
    warmup = args.warmup if args.warmup is not None else (10 if env.cuda else 3)
    iters = args.iters if args.iters is not None else (50 if env.cuda else 10)

    ctx = env.torch.cuda.device(env.tdev) if env.cuda else _nullcontext()
    with ctx:
        receipt = _C.Receipt("python -m cppmega.bench", device, warmup, iters, args.seed)
        receipt.set_ceilings(_C.measure_ceilings(device, env.stream))
        for k, v in _versions(env).items():
            receipt.set_versions(k, v)
        rng = np.random.default_rng(args.seed)
        for case in make_cases(env, ops, n, rng):
            backends = runnable_backends(case.op, device)
            parity = {f"cppmega:{b}": case.parity(env, b) for b in backends}
            fns = [(f"cppmega:{b}", (lambda b=b: case.call(b))) for b in backends]
            fns += [(label, fn) for label, (fn, _) in case.peers.items()]
            stats = _C.time_paired(fns, device, env.stream, warmup, iters)
            extra = dict(case.extra, frontend="python",
                         peer_expressions={label: expr for label, (_, expr) in case.peers.items()})
            receipt.add({
                "op": case.op, "name": f"{case.dtype} n={case.n}", "bucket": elementwise_bucket(case.dtype, case.n),
                "dtype": case.dtype, "shape": [case.n], "bytes": case.bytes, "flops": 0.0,
                "timings": {s["label"]: s for s in stats}, "parity": parity, "extra": extra,
            })
    print(receipt.table(), end="")
    path = receipt.write(args.out)
    print(f"receipt: {path}")
    failures = receipt.strict_failures(min_ratio)
    for f in failures:
        print(f"{'FAIL' if args.strict else 'note'}: {f}")
    return 1 if args.strict and failures else 0


def _default_device():
    if cppmega.cuda_device_count() > 0:
        try:
            import torch
            if torch.cuda.is_available():
                return "cuda"
        except ImportError:
            pass
    return "cpu"


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    sys.exit(main())
