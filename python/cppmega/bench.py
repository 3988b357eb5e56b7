"""python -m cppmega.bench: cppmega's backends next to torch peers, in one process, one receipt.

Each case times every backend of the op that runs on the device (label ``cppmega:<backend>``,
forced with ``backend=``, called through the public Python API as a user would) and the torch
peers (``torch:<what>``) with the shared C++ harness (paired, order-alternated, CUDA events), after
checking each backend against the reference backend run on CPU copies (bit for bit; fp8_gemv: relative
L2 <= 1e-2 of its bf16 output). The receipt (same writer and schema as ``cppmega bench``) goes to
--out; AUTO can read it. Shapes and buckets follow the C++ cases of each op: --n sizes the
elementwise fp8 cases; topk, the block quantizers and fp8_gemv have fixed shape sets (small ones on
the CPU).

Without CUDA it runs on the CPU at small sizes: cppmega labels need only numpy (+ml_dtypes);
torch CPU peers join when torch is importable.
"""

import argparse
import itertools
import math
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
OPS = ("fp8_amax", "fp8_quantize", "fp8_dequantize", "fp8_pack", "topk", "fp8_quantize_blocks", "mxfp8_quantize",
       "fp8_gemv")
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

    def __init__(self, op, n, dtype, bytes_, extra, call, check, reference, peers, metric="mismatched_bytes",
                 name=None, bucket=None, shape=None, flops=0.0):
        self.op, self.n, self.dtype, self.bytes, self.extra, self.flops = op, n, dtype, bytes_, extra, flops
        # Receipt identity; the elementwise defaults suit the fp8 ops.
        self.name = name or f"{dtype} n={n}"
        self.bucket = bucket or elementwise_bucket(dtype, n)
        self.shape = shape or [n]
        self.call = call            # backend -> None; the timed public call
        self.check = check          # backend -> [output arrays], written into poisoned buffers
        self.reference = reference  # [host byte arrays] from the reference backend on CPU copies
        self.peers = peers          # {label: (callable, expression)}
        self.metric = metric

    def parity(self, env, backend):
        got = self.check(backend)
        env.sync()
        got = [env.host_bytes(g) for g in got]
        if self.metric == "rel_l2":  # bf16 output against the reference's f32 output
            rel = rel_l2(bf16_bytes_to_f64(got[0]), self.reference[0].view(np.float32).astype(np.float64))
            return {"ok": rel <= GEMV_TOLERANCE, "metric": "rel_l2", "value": rel, "tolerance": GEMV_TOLERANCE}
        diff = int(sum(np.count_nonzero(g != r) for g, r in zip(got, self.reference)))
        if self.metric == "abs_diff":  # one f32 value: report its distance, require bit equality
            a, b = float(got[0].view(np.float32)[0]), float(self.reference[0].view(np.float32)[0])
            return {"ok": diff == 0, "metric": "abs_diff", "value": abs(a - b), "tolerance": 0.0}
        return {"ok": diff == 0, "metric": "mismatched_bytes", "value": float(diff), "tolerance": 0.0}


def _host_ref(arrays):
    return [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays]


def bf16_bytes_to_f64(b):
    """bf16 values from their bytes, without ml_dtypes."""
    return (b.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def rel_l2(got, want):
    """||got - want|| / ||want||; infinite where got holds a NaN (NaN never passes)."""
    if np.isnan(got).any():
        return math.inf
    return float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-300))


def make_cases(env, ops, n, rng):
    """The cases, one at a time (so a case's arrays are freed before the next is made)."""
    makers = {"fp8_amax": _amax_case, "fp8_quantize": _quantize_case, "fp8_dequantize": _dequantize_case}
    for op in OPS:
        if op not in ops:
            continue
        if op == "topk":
            for shape in (TOPK_SHAPES if env.cuda else TOPK_SHAPES_CPU):
                yield _topk_case(env, *shape, rng)
            continue
        if op == "fp8_quantize_blocks":
            for block in BLOCK_KINDS:
                yield _blocks_case(env, block, BLOCKS_SHAPE if env.cuda else BLOCKS_SHAPE_CPU, rng)
            continue
        if op == "mxfp8_quantize":
            yield _mx_case(env, BLOCKS_SHAPE if env.cuda else BLOCKS_SHAPE_CPU, rng)
            continue
        if op == "fp8_gemv":
            yield from _gemv_cases(env, rng)
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


# (rows, T, k, causal ranges): the shapes of the top-k issue.
TOPK_SHAPES = [(64, 131072, 2048, False), (1, 131072, 2048, False), (32768, 4096, 256, True), (4096, 65536, 512, False)]
TOPK_SHAPES_CPU = [(8, 4096, 256, True), (2, 8192, 64, False)]
TOPK_PARITY_ROWS = 64  # the reference checks this many rows of each case (the CPU oracle is slow on 268M scores)


def topk_bucket(dtype, rows, t, k):
    """The C++ topk bucket (src/ops/topk/topk_ops.cpp): dtype and powers of two bounding R, T, k."""
    p = lambda v: "2^" + str(0 if v <= 1 else int(v - 1).bit_length())  # noqa: E731
    return f"{dtype}:R<={p(rows)}:T<={p(t)}:k<={p(k)}"


def _topk_case(env, rows, t, k, causal, rng):
    scores = rng.standard_normal((rows, t), dtype=np.float32)
    starts = ends = None
    if causal:  # DSA prefill: row s of each 4096-row sequence sees keys [0, s+1)
        starts = np.zeros(rows, np.int32)
        ends = (np.arange(rows, dtype=np.int64) % t + 1).astype(np.int32)
    m = min(rows, TOPK_PARITY_ROWS)
    ref = cppmega.topk(scores[:m], k, None if starts is None else starts[:m], None if ends is None else ends[:m],
                       backend="reference")
    t_ = env.torch
    if env.cuda:
        x = t_.from_numpy(scores).to(env.tdev)
        st = None if starts is None else t_.from_numpy(starts).to(env.tdev)
        en = None if ends is None else t_.from_numpy(ends).to(env.tdev)
    else:
        x, st, en = scores, starts, ends
    peers = {}
    if t_ is not None:
        xp = x if env.cuda else t_.from_numpy(scores)
        peers["torch:topk"] = (lambda: t_.topk(xp, k, dim=-1), "torch.topk(scores, k) (no ranges)")
        if causal:
            col = t_.arange(t, device=xp.device)
            endp = (en if env.cuda else t_.from_numpy(ends)).to(t_.int64)
            peers["torch:masked_topk"] = (
                lambda: t_.topk(xp.masked_fill(col[None, :] >= endp[:, None], float("-inf")), k, dim=-1),
                "torch.topk(scores.masked_fill(col >= end, -inf), k)")

    def check(b):
        out = cppmega.topk(x, k, st, en, out=env.poisoned((rows, k), "i32"), backend=b)
        return [out[:m]]

    shape = [rows, t]
    return Case("topk", rows * t, "f32", 4.0 * rows * t + 4.0 * rows * k, {"k": k, "causal": causal},
                call=lambda b: cppmega.topk(x, k, st, en, backend=b), check=check,
                reference=_host_ref([ref]), peers=peers,
                name=f"f32 R={rows} T={t} k={k}{' causal' if causal else ''}",
                bucket=topk_bucket("f32", rows, t, k), shape=shape)


# ---- Block-scaled FP8 quantizers ----------------------------------------------------------------------
# [M, K] bf16: the C++ cases' [n/8192, 8192] at n = 64M on a GPU; a small tile set on the CPU. Both
# run with check_finite=False like the C++ cases (the checked form adds one stream synchronisation
# per call) and like the torch expressions, which check nothing.
BLOCKS_SHAPE = (8192, 8192)
BLOCKS_SHAPE_CPU = (128, 1024)
BLOCK_KINDS = ("1x128", "128x128")


def blocks_bucket(dtype, n, kind):
    """The C++ bucket of the block-scaled ops (fp8_blocks::blocks_bucket in
    src/ops/fp8_blocks/fp8_blocks_ops.cpp): dtype, kind ("1x128", "128x128", "mx32") and the power
    of two that bounds numel."""
    k = 10 if n <= 1024 else (n - 1).bit_length()
    return f"{dtype}:{kind}:n<=2^{k}"


def _bf16_matrix(env, shape, rng):
    """(host bf16 array, the cppmega labels' array, the peers' torch tensor or None) of `shape`."""
    bits = random_bf16_bits(int(np.prod(shape)), rng)
    x = env.array(bits, "bf16").reshape(shape)
    xp = env.peer(bits, "bf16", x)
    return bits.view(numpy_dtype("bf16")).reshape(shape), x, None if xp is None else xp.reshape(shape)


def _blocks_case(env, block, shape, rng):
    t = env.torch
    M, K = shape
    n = M * K
    xh, x, xp = _bf16_matrix(env, shape, rng)
    q_ref, s_ref = cppmega.fp8_quantize_blocks(xh, block, FORMAT, check_finite=False, backend="reference")
    sshape = tuple(s_ref.shape)
    peers = {}
    if xp is not None and env.has_float8 and K % 128 == 0 and (block == "1x128" or M % 128 == 0):
        if block == "1x128":
            def torch_blocks():
                xb = xp.view(-1, K // 128, 128).float()
                amax = xb.abs().amax(-1, keepdim=True)
                s = t.where(amax > 0, amax / FMAX, 1.0)
                return (xb * (1 / s)).clamp(-FMAX, FMAX).to(t.float8_e4m3fn), s
            expr = ("xb = x.view(-1, K//128, 128).float(); amax = xb.abs().amax(-1, keepdim=True); "
                    "s = torch.where(amax > 0, amax/448, 1); q = (xb * (1/s)).clamp(-448, 448).to(torch.float8_e4m3fn)")
        else:
            def torch_blocks():
                xb = xp.view(M // 128, 128, K // 128, 128).float()
                amax = xb.abs().amax(dim=(1, 3), keepdim=True)
                s = t.where(amax > 0, amax / FMAX, 1.0)
                return (xb * (1 / s)).clamp(-FMAX, FMAX).to(t.float8_e4m3fn), s
            expr = ("xb = x.view(M//128, 128, K//128, 128).float(); amax = xb.abs().amax(dim=(1, 3), keepdim=True); "
                    "s = torch.where(amax > 0, amax/448, 1); q = (xb * (1/s)).clamp(-448, 448).to(torch.float8_e4m3fn)")
        peers["torch:block_quantize"] = (torch_blocks, expr)
    nscales = int(np.prod(sshape))
    return Case(
        "fp8_quantize_blocks", n, "bf16", 3.0 * n + 4.0 * nscales,
        {"block": block, "format": FORMAT, "pow2_scale": False, "check_finite": False},
        call=lambda b: cppmega.fp8_quantize_blocks(x, block, FORMAT, check_finite=False, backend=b),
        check=lambda b: list(cppmega.fp8_quantize_blocks(
            x, block, FORMAT, check_finite=False, out=(env.poisoned(shape, FORMAT), env.poisoned(sshape, "f32")),
            backend=b)),
        reference=_host_ref([q_ref, s_ref]), peers=peers,
        name=f"bf16 [{M},{K}] {block}", bucket=blocks_bucket("bf16", n, block), shape=[M, K])


def _mx_case(env, shape, rng):
    t = env.torch
    M, K = shape
    n = M * K
    xh, x, xp = _bf16_matrix(env, shape, rng)
    q_ref, s_ref = cppmega.mxfp8_quantize(xh, check_finite=False, backend="reference")
    sshape = tuple(s_ref.shape)
    peers = {}
    if xp is not None and env.has_float8 and K % 32 == 0:
        def torch_mx():
            xb = xp.view(-1, K // 32, 32).float()
            amax = xb.abs().amax(-1, keepdim=True)
            e = t.frexp(amax).exponent  # amax = m * 2^e, m in [0.5, 1): floor(log2(amax)) = e - 1
            X = t.where(amax > 0, e - 9, -127).clamp(-127, 127)
            q = (xb * t.exp2(-X.float())).clamp(-FMAX, FMAX).to(t.float8_e4m3fn)
            return q, (X + 127).to(t.uint8)
        peers["torch:mx_quantize"] = (
            torch_mx, "xb = x.view(-1, K//32, 32).float(); amax = xb.abs().amax(-1, keepdim=True); "
                      "X = torch.where(amax > 0, torch.frexp(amax).exponent - 9, -127).clamp(-127, 127); "
                      "q = (xb * torch.exp2(-X.float())).clamp(-448, 448).to(torch.float8_e4m3fn); "
                      "scales = (X + 127).to(torch.uint8)")
    return Case(
        "mxfp8_quantize", n, "bf16", n * (2.0 + 1.0 + 1.0 / 32), {"block": 32, "check_finite": False},
        call=lambda b: cppmega.mxfp8_quantize(x, check_finite=False, backend=b),
        check=lambda b: list(cppmega.mxfp8_quantize(
            x, check_finite=False, out=(env.poisoned(shape, "e4m3"), env.poisoned(sshape, "e8m0")), backend=b)),
        reference=_host_ref([q_ref, s_ref]), peers=peers,
        name=f"bf16 [{M},{K}] mx32", bucket=blocks_bucket("bf16", n, "mx32"), shape=[M, K])


# ---- fp8_gemv ---------------------------------------------------------------------------------------
# The C++ cases' shapes (src/ops/fp8_gemv/fp8_gemv_cases.cpp, variant 0): (N, K) x M, bf16 x,
# per-row f32 w scales, bf16 out. Parity: relative L2 against the reference backend's f32 output on
# CPU copies <= 1e-2 (the contract's FP8-compute tolerance; bf16 rounding is ~2^-9).
GEMV_SHAPES = [(8192, 8192), (16384, 7168), (7168, 2048), (4096, 4096)]
GEMV_MS = (1, 4, 16, 64)
GEMV_SHAPES_CPU = [(1024, 1024)]
GEMV_MS_CPU = (4,)
GEMV_TOLERANCE = 1e-2
# Each label cycles through enough copies of its weight that one pass over them reads >= 256 MiB,
# so no call finds its weight in L2 (50 MB on H100/H200) left there by an earlier call.
GEMV_ROTATE_BYTES = 256 << 20


def gemv_bucket(x_dtype, M, N, K):
    """The C++ bucket of fp8_gemv (gemv_op::gemv_bucket in src/ops/fp8_gemv/fp8_gemv_ops.cpp): x's
    dtype, an M class and the power of two that bounds N*K."""
    mb = "M<=1" if M <= 1 else "M<=4" if M <= 4 else "M<=16" if M <= 16 else "M<=64" if M <= 64 else "M>64"
    nk = N * K
    k = 10 if nk <= 1024 else (nk - 1).bit_length()
    return f"x:{x_dtype}:{mb}:NK<=2^{k}"


def _gemv_row_scales(n, rng):
    """Positive per-row scales over a few binades (as the C++ case)."""
    return ((1.0 + rng.integers(0, 1000, n) / 1000.0) * np.exp2(rng.integers(-8, -2, n))).astype(np.float32)


def _copies(nbytes):
    return max(1, math.ceil(GEMV_ROTATE_BYTES / nbytes))


def _gemv_cases(env, rng):
    """Per (N, K): one weight (and its rotating copies), x rows for the largest M; the cases of
    that shape take the first M rows, and their reference is the first M rows of one reference
    run (each output row depends on its x row only)."""
    t = env.torch
    shapes, ms = (GEMV_SHAPES, GEMV_MS) if env.cuda else (GEMV_SHAPES_CPU, GEMV_MS_CPU)
    for N, K in shapes:
        mmax = max(ms)
        wbits = random_fp8_bits(N * K, rng)
        xbits = random_bf16_bits(mmax * K, rng)
        ws_h = _gemv_row_scales(N, rng)
        wh = wbits.view(numpy_dtype(FORMAT)).reshape(N, K)
        xh = xbits.view(numpy_dtype("bf16")).reshape(mmax, K)
        ref_all = cppmega.fp8_gemv(xh, wh, ws_h, None, "f32", backend="reference")
        # The cppmega labels' arrays; on CUDA the weight rotates over copies.
        w0 = env.array(wbits, FORMAT).reshape(N, K)
        x_all = env.array(xbits, "bf16").reshape(mmax, K)
        if env.cuda:
            ws = t.from_numpy(ws_h).to(env.tdev)
            w_copies = [w0] + [w0.clone() for _ in range(_copies(N * K) - 1)]
        else:
            ws, w_copies = ws_h, [w0]
        # The peers' arrays: the same x (bf16) and the same weight values in bf16.
        xp_all = None
        wb_copies = []
        if t is not None:
            xp_all = env.peer(xbits, "bf16", x_all).reshape(mmax, K)
            if env.cuda and env.has_float8:
                wb = w0.to(t.bfloat16)
            else:
                wb = t.from_numpy(wh.astype(np.float32)).to(t.bfloat16)
                wb = wb.to(env.tdev) if env.cuda else wb
            wb_copies = [wb] + ([wb.clone() for _ in range(_copies(2 * N * K) - 1)] if env.cuda else [])
        for M in ms:
            yield _gemv_case(env, M, N, K, x_all[:M], w_copies, ws, ref_all[:M],
                             None if xp_all is None else xp_all[:M], wb_copies, rng)
        del w_copies, wb_copies, x_all, xp_all


def _try_peer(fn, label, skipped):
    """Runs a peer once; a peer torch cannot run here (arch, build) is left out, with the reason."""
    try:
        fn()
        return True
    except Exception as e:  # noqa: BLE001 - any failure means "no such peer here"
        skipped[label] = f"{type(e).__name__}: {str(e)[:200]}"
        return False


def _gemv_case(env, M, N, K, x, w_copies, ws, ref, xp, wb_copies, rng):
    t = env.torch
    wc = itertools.cycle(w_copies)
    peers, skipped = {}, {}
    if xp is not None:
        wbc = itertools.cycle(wb_copies)
        linear = t.nn.functional.linear

        def bf16_linear():
            return linear(xp, next(wbc))
        if _try_peer(bf16_linear, "torch:bf16_linear", skipped):
            peers["torch:bf16_linear"] = (
                bf16_linear, "torch.nn.functional.linear(x, w_bf16) (bf16 x and a bf16 copy of the e4m3 weight, "
                             f"rotating over {len(wb_copies)} copies)")
    if (env.cuda and env.has_float8 and hasattr(t, "_scaled_mm") and M % 16 == 0 and K % 16 == 0
            and N % 16 == 0):
        xq = env.array(random_fp8_bits(M * K, rng), FORMAT).reshape(M, K)
        one = t.ones((), dtype=t.float32, device=env.tdev)
        wtc = itertools.cycle([w.t() for w in w_copies])

        def scaled_mm():
            return t._scaled_mm(xq, next(wtc), scale_a=one, scale_b=one, out_dtype=t.bfloat16)
        if _try_peer(scaled_mm, "torch:scaled_mm", skipped):
            peers["torch:scaled_mm"] = (
                scaled_mm, "torch._scaled_mm(xq, w.t(), scale_a=s, scale_b=s, out_dtype=torch.bfloat16) (e4m3 x, "
                           "per-tensor f32 scales; the same rotating e4m3 weights)")
    extra = {"M": M, "N": N, "K": K, "w_scale": "row", "x_scale": "none", "out": "bf16",
             "weight_copies": len(w_copies)}
    if skipped:
        extra["peers_skipped"] = skipped
    w0 = w_copies[0]
    return Case(
        "fp8_gemv", M * K, "bf16", float(N * K + 2 * M * K + 2 * M * N), extra,
        call=lambda b: cppmega.fp8_gemv(x, next(wc), ws, None, "bf16", backend=b),
        check=lambda b: [cppmega.fp8_gemv(x, w0, ws, None, out=env.poisoned((M, N), "bf16"), backend=b)],
        reference=_host_ref([np.asarray(ref, np.float32)]), peers=peers, metric="rel_l2",
        name=f"bf16 M={M} N={N} K={K} per-row w", bucket=gemv_bucket("bf16", M, N, K), shape=[M, N, K],
        flops=2.0 * M * N * K)


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
    p.add_argument("--n", type=int, help="elements of the large elementwise fp8 cases (default 2^26 on CUDA, 2^20 on "
                                         "the CPU); the other ops have fixed shapes")
    p.add_argument("--warmup", type=int, help="warm-up rounds (default 10 on CUDA, 3 on the CPU)")
    p.add_argument("--iters", type=int, help="timed rounds (default 50 on CUDA, 10 on the CPU)")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated ops (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/", help="receipt file (.json) or folder (default out/)")
    p.add_argument("--strict", action="store_true", help="exit 1 on a parity failure or a --min-ratio miss")
    p.add_argument("--min-ratio", action="append", default=[], metavar="PEER=R",
                   help="require peer median / best cppmega median >= R (e.g. torch=5); repeatable")
    args = p.parse_args(argv)

    ops = [o if o.startswith("fp8_") or o in OPS else "fp8_" + o for o in filter(None, args.ops.split(","))]
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
                "op": case.op, "name": case.name, "bucket": case.bucket,
                "dtype": case.dtype, "shape": case.shape, "bytes": case.bytes, "flops": case.flops,
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
