// cppmega._C: the nanobind binding of the public C++ API. It stays thin on purpose:
// - arrays come in through DLPack / the buffer protocol as nb::ndarray and become TensorViews;
//   the Python layer (cppmega/_arrays.py) allocates every output with the caller's framework and
//   passes the real dtype name, because bf16/fp8 do not cross DLPack reliably between numpy and
//   torch versions (it sends such arrays as same-width integers);
// - cppmega::Error becomes cppmega.InvalidArgument/Unsupported/NonFinite/CudaError, subclasses
//   of ValueError/NotImplementedError/FloatingPointError/RuntimeError (docs/contracts.md 1);
// - every call into the C++ core runs without the GIL.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cppmega/bench.hpp"
#include "cppmega/dispatch.hpp"
#include "cppmega/error.hpp"
#include "cppmega/ops/fp8.hpp"
#include "cppmega/ops/fp8_blocks.hpp"
#include "cppmega/ops/fp8_gemv.hpp"
#include "cppmega/ops/topk.hpp"
#include "cppmega/runtime.hpp"
#include "cppmega/tensor.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace cppmega::py {
namespace {

// ---- Exceptions ---------------------------------------------------------------------------------
// Raw pointers on purpose: the types live as long as the interpreter (the module holds them), and
// a static nb::object would be released after Python has shut down.
PyObject* g_error = nullptr;
PyObject* g_kind_type[4] = {};

PyObject* exception_for(ErrorKind k) {
  switch (k) {
    case ErrorKind::InvalidArgument:
      return g_kind_type[0];
    case ErrorKind::Unsupported:
      return g_kind_type[1];
    case ErrorKind::NonFinite:
      return g_kind_type[2];
    case ErrorKind::CudaError:
      return g_kind_type[3];
  }
  return g_error;
}

[[noreturn]] void raise_invalid(const std::string& msg) { throw Error(ErrorKind::InvalidArgument, msg); }

void define_exceptions(nb::module_& m) {
  g_error = PyErr_NewExceptionWithDoc("cppmega.Error", "Base of every error raised by the cppmega C++ core.", nullptr,
                                      nullptr);
  if (!g_error) throw nb::python_error();
  m.attr("Error") = nb::borrow(g_error);
  struct Kind {
    const char* name;
    PyObject* base;
    const char* doc;
  } kinds[4] = {
      {"InvalidArgument", PyExc_ValueError, "The caller broke an op's contract (shape, dtype, device, range)."},
      {"Unsupported", PyExc_NotImplementedError, "The selected backend cannot run this call here."},
      {"NonFinite", PyExc_FloatingPointError, "NaN or Inf where the op forbids it."},
      {"CudaError", PyExc_RuntimeError, "A CUDA API or launch failure."},
  };
  for (int i = 0; i < 4; ++i) {
    const std::string qual = std::string("cppmega.") + kinds[i].name;
    nb::object bases = nb::make_tuple(nb::borrow(g_error), nb::borrow(kinds[i].base));
    g_kind_type[i] = PyErr_NewExceptionWithDoc(qual.c_str(), kinds[i].doc, bases.ptr(), nullptr);
    if (!g_kind_type[i]) throw nb::python_error();
    m.attr(kinds[i].name) = nb::borrow(g_kind_type[i]);
  }
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(exception_for(e.kind()), e.what());
    }
  });
}

// ---- Arrays -------------------------------------------------------------------------------------
using Array = nb::ndarray<nb::ro>;    // inputs: read-only buffers are fine
using WritableArray = nb::ndarray<>;  // outputs

// Keeps the producers of the views of one call alive until the call returns.
struct Keep {
  std::vector<Array> ro;
  std::vector<WritableArray> rw;
};

Device device_of(int type, int id, const char* op, const char* arg) {
  switch (type) {
    case nb::device::cpu::value:
    case nb::device::cuda_host::value:  // pinned host memory is host memory
      return Device::cpu();
    case nb::device::cuda::value:
    case nb::device::cuda_managed::value:
      return Device::cuda(id);
    default:
      raise_invalid(
          detail::cat(op, ": ", arg, " lives on DLPack device type ", type, "; cppmega takes CPU and CUDA arrays"));
  }
}

std::optional<DType> dtype_from_dlpack(nb::dlpack::dtype t) {
  using C = nb::dlpack::dtype_code;
  if (t.lanes != 1) return std::nullopt;
  switch (static_cast<C>(t.code)) {
    case C::Float:
      if (t.bits == 32) return DType::f32;
      if (t.bits == 16) return DType::f16;
      break;
    case C::Bfloat:
      if (t.bits == 16) return DType::bf16;
      break;
    case C::UInt:
      if (t.bits == 8) return DType::u8;
      break;
    case C::Int:
      if (t.bits == 32) return DType::i32;
      if (t.bits == 64) return DType::i64;
      break;
    default:
      break;
  }
  return std::nullopt;
}

// A TensorView over `a`. `dtype` (a cppmega dtype name) overrides the element type the buffer
// declares, which must have the same width: that is how bf16/fp8 arrive as integer arrays.
template <class A>
TensorView make_view(const A& a, const std::optional<std::string>& dtype, const char* op, const char* arg) {
  const nb::dlpack::dtype dt = a.dtype();
  DType t;
  if (dtype) {
    t = parse_dtype(*dtype, detail::cat(op, ": ", arg).c_str());
    if (dt.lanes != 1 || dtype_size(t) * 8 != dt.bits)
      raise_invalid(detail::cat(op, ": ", arg, " is declared ", dtype_name(t), " but its buffer holds ", int(dt.bits),
                                "-bit elements"));
  } else if (auto d = dtype_from_dlpack(dt)) {
    t = *d;
  } else {
    raise_invalid(detail::cat(op, ": ", arg, " has an element type cppmega does not take (DLPack code ", int(dt.code),
                              ", ", int(dt.bits), " bits)"));
  }
  const int rank = static_cast<int>(a.ndim());
  if (rank > kMaxRank)
    raise_invalid(detail::cat(op, ": ", arg, " has rank ", rank, "; cppmega takes at most ", kMaxRank));
  std::int64_t shape[kMaxRank] = {};
  for (int i = 0; i < rank; ++i) shape[i] = static_cast<std::int64_t>(a.shape(i));
  void* data = const_cast<void*>(static_cast<const void*>(a.data()));
  const Device device = device_of(a.device_type(), a.device_id(), op, arg);
  TensorView v = TensorView::contiguous(data, t, shape, rank, device);
  if (v.numel() > 0) {
    for (int i = 0; i < rank; ++i) v.strides[i] = a.stride(i);
  } else {
    // An empty array addresses nothing, so its strides mean nothing (torch.from_numpy gives
    // them as 0): use plain row-major products, which is_contiguous() accepts.
    std::int64_t st = 1;
    for (int i = rank - 1; i >= 0; --i) {
      v.strides[i] = st;
      st *= shape[i];
    }
  }
  return v;
}

std::string py_type_name(nb::handle h) { return nb::cast<std::string>(nb::type_name(h.type())); }

TensorView input_view(nb::handle obj, const std::optional<std::string>& dtype, const char* op, const char* arg,
                      Keep& keep) {
  Array a;
  if (!nb::try_cast(obj, a, false))
    throw nb::type_error(
        detail::cat(op, ": ", arg, " must be an array (numpy array or torch tensor), got ", py_type_name(obj)).c_str());
  keep.ro.push_back(a);
  return make_view(a, dtype, op, arg);
}

TensorView output_view(nb::handle obj, const std::optional<std::string>& dtype, const char* op, const char* arg,
                       Keep& keep) {
  WritableArray a;
  if (!nb::try_cast(obj, a, false)) {
    Array ro;
    if (nb::try_cast(obj, ro, false)) raise_invalid(detail::cat(op, ": ", arg, " is read-only"));
    throw nb::type_error(
        detail::cat(op, ": ", arg, " must be an array (numpy array or torch tensor), got ", py_type_name(obj)).c_str());
  }
  keep.rw.push_back(a);
  return make_view(a, dtype, op, arg);
}

// A Python number is a host scale; anything else is an array whose shape the op checks (a
// 1-element f32 array for the per-tensor ops; fp8_gemv also takes per-row and per-block scales).
ScaleArg scale_arg(nb::handle obj, const std::optional<std::string>& dtype, const char* op, Keep& keep,
                   const char* arg = "scale") {
  if (PyFloat_Check(obj.ptr()) || (PyLong_Check(obj.ptr()) && !PyBool_Check(obj.ptr())))
    return ScaleArg(static_cast<float>(nb::cast<double>(obj)));
  return ScaleArg(input_view(obj, dtype, op, arg, keep));
}

CallOptions call_options(const std::string& backend, std::uintptr_t stream) {
  CallOptions o;
  o.backend = backend;
  o.stream = reinterpret_cast<void*>(stream);
  return o;
}

using OptStr = std::optional<std::string>;

// The core's parsers name no op; these do (docs/contracts.md 1: messages name the op).
Fp8BlockShape block_arg(const std::string& s, const char* op) {
  if (s == "1x128" || s == "128x128") return parse_fp8_block_shape(s);
  raise_invalid(detail::cat(op, ": block must be '1x128' or '128x128', got '", s, "'"));
}
Fp8Format format_arg(const std::string& s, const char* op) {
  try {
    return parse_fp8_format(s);
  } catch (const Error&) {
    raise_invalid(detail::cat(op, ": format must be e4m3 or e5m2, got '", s, "'"));
  }
}

// nb::dict has no keyword constructor: Dict().set("a", 1).set("b", x).d
struct Dict {
  nb::dict d;
  template <class T>
  Dict& set(const char* key, T&& value) {
    d[key] = nb::cast(std::forward<T>(value));
    return *this;
  }
};

// ---- Introspection --------------------------------------------------------------------------------
const char* device_kind_name(DeviceKind k) { return k == DeviceKind::cpu ? "cpu" : "cuda"; }

nb::list ops_listing() {
  nb::list out;
  for (const OpListing& l : list_ops()) {
    nb::list backends;
    for (const BackendInfo& b : l.backends) {
      const Availability a = backend_availability(b);
      backends.append(Dict()
                          .set("name", b.name)
                          .set("device", device_kind_name(b.device))
                          .set("features", b.features)
                          .set("available", a.available)
                          .set("reason", a.reason)
                          .d);
    }
    out.append(Dict().set("op", l.op).set("backends", backends).d);
  }
  return out;
}

nb::list dispatch_log_list() {
  nb::list out;
  for (const DispatchRecord& r : dispatch_log())
    out.append(Dict().set("seq", r.seq).set("op", r.op).set("backend", r.backend).set("reason", r.reason).d);
  return out;
}

nb::dict device_info_dict(int index) {
  CudaDeviceInfo i;
  {
    nb::gil_scoped_release nogil;
    i = cuda_device_info(index);
  }
  return Dict()
      .set("index", i.index)
      .set("name", i.name)
      .set("cc_major", i.cc_major)
      .set("cc_minor", i.cc_minor)
      .set("sm_count", i.sm_count)
      .set("sm_clock_mhz", i.sm_clock_mhz)
      .set("mem_clock_mhz", i.mem_clock_mhz)
      .set("mem_bus_bits", i.mem_bus_bits)
      .set("l2_bytes", i.l2_bytes)
      .set("global_mem_bytes", i.global_mem_bytes)
      .set("smem_per_block_optin", i.smem_per_block_optin)
      .set("arch", device_arch(Device::cuda(index)))
      .d;
}

// ---- Bench ----------------------------------------------------------------------------------------
Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.find_first_not_of("0123456789", 5) == std::string::npos)
    return Device::cuda(std::stoi(s.substr(5)));
  raise_invalid(detail::cat("device must be 'cpu', 'cuda' or 'cuda:N', got '", s, "'"));
}

nb::dict stats_dict(const std::string& label, const bench::Stats& s) {
  return Dict()
      .set("label", label)
      .set("median_us", s.median_us)
      .set("min_us", s.min_us)
      .set("max_us", s.max_us)
      .set("mean_us", s.mean_us)
      .set("iters", s.iters)
      .set("samples_us", s.samples_us)
      .d;
}

template <class T>
T get_or(const nb::dict& d, const char* key, T fallback) {
  return d.contains(key) ? nb::cast<T>(d[key]) : fallback;
}

bench::Stats stats_from(const nb::dict& d) {
  bench::Stats s;
  s.median_us = get_or<double>(d, "median_us", 0);
  s.min_us = get_or<double>(d, "min_us", 0);
  s.max_us = get_or<double>(d, "max_us", 0);
  s.mean_us = get_or<double>(d, "mean_us", 0);
  s.iters = get_or<int>(d, "iters", 0);
  s.samples_us = get_or<std::vector<double>>(d, "samples_us", {});
  return s;
}

bench::Result result_from(const nb::dict& d) {
  bench::Result r;
  r.op = nb::cast<std::string>(d["op"]);
  r.name = get_or<std::string>(d, "name", r.op);
  r.bucket = get_or<std::string>(d, "bucket", "");
  r.dtype = get_or<std::string>(d, "dtype", "");
  r.shape = get_or<std::vector<std::int64_t>>(d, "shape", {});
  r.bytes = get_or<double>(d, "bytes", 0);
  r.flops = get_or<double>(d, "flops", 0);
  if (d.contains("timings"))
    for (auto [k, v] : nb::cast<nb::dict>(d["timings"]))
      r.timings[nb::cast<std::string>(k)] = stats_from(nb::cast<nb::dict>(v));
  if (d.contains("parity")) {
    for (auto [k, v] : nb::cast<nb::dict>(d["parity"])) {
      nb::dict p = nb::cast<nb::dict>(v);
      bench::Parity q;
      q.ok = get_or<bool>(p, "ok", false);
      q.metric = get_or<std::string>(p, "metric", "");
      q.value = get_or<double>(p, "value", 0);
      q.tolerance = get_or<double>(p, "tolerance", 0);
      r.parity[nb::cast<std::string>(k)] = q;
    }
  }
  if (d.contains("extra")) {
    nb::handle e = d["extra"];
    r.extra_json = nb::isinstance<nb::str>(e) ? nb::cast<std::string>(e)
                                              : nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(e));
  }
  return r;
}

nb::list time_paired_py(nb::list fns, const std::string& device, std::uintptr_t stream, int warmup, int iters) {
  const Device dev = parse_device(device);
  std::vector<nb::object> keep;  // owns the callables; the C++ side only sees borrowed pointers
  std::vector<bench::Callable> callables;
  for (nb::handle item : fns) {
    nb::tuple t;
    if (!nb::try_cast(item, t) || t.size() != 2 || !nb::isinstance<nb::str>(t[0]) || !PyCallable_Check(t[1].ptr()))
      throw nb::type_error("time_paired: each entry must be a (label, callable) pair");
    keep.push_back(nb::borrow(t[1]));
    PyObject* fn = t[1].ptr();
    // Runs on the harness thread without the GIL held; copies of this lambda touch no refcounts.
    callables.push_back({nb::cast<std::string>(t[0]), [fn] {
                           nb::gil_scoped_acquire gil;
                           nb::handle f(fn);
                           f();
                         }});
  }
  std::vector<bench::Stats> stats;
  {
    nb::gil_scoped_release nogil;
    stats = bench::time_paired(callables, dev, reinterpret_cast<void*>(stream), warmup, iters);
  }
  nb::list out;
  for (std::size_t i = 0; i < stats.size() && i < callables.size(); ++i)
    out.append(stats_dict(callables[i].label, stats[i]));
  return out;
}

nb::dict ceilings_dict(const bench::Ceilings& c) {
  return Dict()
      .set("copy_tbps", c.copy_tbps)
      .set("bf16_matmul_tflops", c.bf16_matmul_tflops)
      .set("copy_method", c.copy_method)
      .set("matmul_method", c.matmul_method)
      .d;
}

}  // namespace

void define_fp8(nb::module_& m) {
  m.def(
      "fp8_amax_out",
      [](nb::handle x, OptStr x_dtype, nb::handle out, OptStr out_dtype, const std::string& backend,
         std::uintptr_t stream) {
        Keep keep;
        const TensorView xv = input_view(x, x_dtype, "fp8_amax", "x", keep);
        const TensorView ov = output_view(out, out_dtype, "fp8_amax", "out", keep);
        nb::gil_scoped_release nogil;
        fp8_amax_out(xv, ov, call_options(backend, stream));
      },
      "x"_a, "x_dtype"_a.none(), "out"_a, "out_dtype"_a.none(), "backend"_a = "", "stream"_a = 0);

  m.def(
      "fp8_quantize_out",
      [](nb::handle x, OptStr x_dtype, nb::handle scale, OptStr scale_dtype, nb::handle out, OptStr out_dtype,
         const std::string& backend, std::uintptr_t stream) {
        Keep keep;
        const TensorView xv = input_view(x, x_dtype, "fp8_quantize", "x", keep);
        const ScaleArg s = scale_arg(scale, scale_dtype, "fp8_quantize", keep);
        const TensorView ov = output_view(out, out_dtype, "fp8_quantize", "out", keep);
        nb::gil_scoped_release nogil;
        fp8_quantize_out(xv, s, ov, call_options(backend, stream));
      },
      "x"_a, "x_dtype"_a.none(), "scale"_a, "scale_dtype"_a.none(), "out"_a, "out_dtype"_a.none(), "backend"_a = "",
      "stream"_a = 0);

  m.def(
      "fp8_dequantize_out",
      [](nb::handle q, OptStr q_dtype, nb::handle scale, OptStr scale_dtype, nb::handle out, OptStr out_dtype,
         const std::string& backend, std::uintptr_t stream) {
        Keep keep;
        const TensorView qv = input_view(q, q_dtype, "fp8_dequantize", "q", keep);
        const ScaleArg s = scale_arg(scale, scale_dtype, "fp8_dequantize", keep);
        const TensorView ov = output_view(out, out_dtype, "fp8_dequantize", "out", keep);
        nb::gil_scoped_release nogil;
        fp8_dequantize_out(qv, s, ov, call_options(backend, stream));
      },
      "q"_a, "q_dtype"_a.none(), "scale"_a, "scale_dtype"_a.none(), "out"_a, "out_dtype"_a.none(), "backend"_a = "",
      "stream"_a = 0);

  m.def(
      "fp8_pack_out",
      [](nb::handle x, OptStr x_dtype, nb::handle q, OptStr q_dtype, nb::handle scale, OptStr scale_dtype,
         const std::string& format, bool pow2_scale, bool check_finite, const std::string& backend,
         std::uintptr_t stream) {
        Keep keep;
        const TensorView xv = input_view(x, x_dtype, "fp8_pack", "x", keep);
        const TensorView qv = output_view(q, q_dtype, "fp8_pack", "q", keep);
        const TensorView sv = output_view(scale, scale_dtype, "fp8_pack", "scale", keep);
        PackOptions p;
        p.format = parse_fp8_format(format);
        p.pow2_scale = pow2_scale;
        p.check_finite = check_finite;
        nb::gil_scoped_release nogil;
        fp8_pack_out(xv, qv, sv, p, call_options(backend, stream));
      },
      "x"_a, "x_dtype"_a.none(), "q"_a, "q_dtype"_a.none(), "scale"_a, "scale_dtype"_a.none(), "format"_a = "e4m3",
      "pow2_scale"_a = false, "check_finite"_a = true, "backend"_a = "", "stream"_a = 0);
}

// topk: scores [R,T] or [B,S,T] (f32/bf16), optional i32/i64 starts/ends, i32 out.
void define_topk(nb::module_& m) {
  m.def(
      "topk_out",
      [](nb::handle scores, OptStr scores_dtype, std::int64_t k, nb::handle starts, OptStr starts_dtype,
         nb::handle ends, OptStr ends_dtype, nb::handle out, OptStr out_dtype, const std::string& backend,
         std::uintptr_t stream) {
        Keep keep;
        const TensorView sv = input_view(scores, scores_dtype, "topk", "scores", keep);
        std::optional<TensorView> st, en;
        if (!starts.is_none()) st = input_view(starts, starts_dtype, "topk", "starts", keep);
        if (!ends.is_none()) en = input_view(ends, ends_dtype, "topk", "ends", keep);
        const TensorView ov = output_view(out, out_dtype, "topk", "out", keep);
        nb::gil_scoped_release nogil;
        topk_out(sv, k, st, en, ov, call_options(backend, stream));
      },
      "scores"_a, "scores_dtype"_a.none(), "k"_a, "starts"_a.none(), "starts_dtype"_a.none(), "ends"_a.none(),
      "ends_dtype"_a.none(), "out"_a, "out_dtype"_a.none(), "backend"_a = "", "stream"_a = 0);
}

// Block-scaled FP8: x [..., M, K] -> q and f32 scales per (1,128)/(128,128) block, or e4m3 q and
// e8m0 scales per 32 values (MXFP8); the dequantizers invert them. The Python layer allocates the
// outputs (scale shapes as fp8_block_scales_shape / mxfp8_scales_shape).
void define_fp8_blocks(nb::module_& m) {
  m.def(
      "fp8_quantize_blocks_out",
      [](nb::handle x, OptStr x_dtype, nb::handle q, OptStr q_dtype, nb::handle scales, OptStr scales_dtype,
         const std::string& block, const std::string& format, bool pow2_scale, bool check_finite,
         const std::string& backend, std::uintptr_t stream) {
        const char* op = "fp8_quantize_blocks";
        Keep keep;
        const TensorView xv = input_view(x, x_dtype, op, "x", keep);
        const TensorView qv = output_view(q, q_dtype, op, "q", keep);
        const TensorView sv = output_view(scales, scales_dtype, op, "scales", keep);
        BlockQuantOptions bq;
        bq.block = block_arg(block, op);
        bq.format = format_arg(format, op);
        bq.pow2_scale = pow2_scale;
        bq.check_finite = check_finite;
        nb::gil_scoped_release nogil;
        fp8_quantize_blocks_out(xv, qv, sv, bq, call_options(backend, stream));
      },
      "x"_a, "x_dtype"_a.none(), "q"_a, "q_dtype"_a.none(), "scales"_a, "scales_dtype"_a.none(), "block"_a = "1x128",
      "format"_a = "e4m3", "pow2_scale"_a = false, "check_finite"_a = true, "backend"_a = "", "stream"_a = 0);

  m.def(
      "fp8_dequantize_blocks_out",
      [](nb::handle q, OptStr q_dtype, nb::handle scales, OptStr scales_dtype, nb::handle out, OptStr out_dtype,
         const std::string& block, const std::string& backend, std::uintptr_t stream) {
        const char* op = "fp8_dequantize_blocks";
        Keep keep;
        const TensorView qv = input_view(q, q_dtype, op, "q", keep);
        const TensorView sv = input_view(scales, scales_dtype, op, "scales", keep);
        const TensorView ov = output_view(out, out_dtype, op, "out", keep);
        const Fp8BlockShape b = block_arg(block, op);
        nb::gil_scoped_release nogil;
        fp8_dequantize_blocks_out(qv, sv, ov, b, call_options(backend, stream));
      },
      "q"_a, "q_dtype"_a.none(), "scales"_a, "scales_dtype"_a.none(), "out"_a, "out_dtype"_a.none(),
      "block"_a = "1x128", "backend"_a = "", "stream"_a = 0);

  m.def(
      "mxfp8_quantize_out",
      [](nb::handle x, OptStr x_dtype, nb::handle q, OptStr q_dtype, nb::handle scales, OptStr scales_dtype,
         bool check_finite, const std::string& backend, std::uintptr_t stream) {
        const char* op = "mxfp8_quantize";
        Keep keep;
        const TensorView xv = input_view(x, x_dtype, op, "x", keep);
        const TensorView qv = output_view(q, q_dtype, op, "q", keep);
        const TensorView sv = output_view(scales, scales_dtype, op, "scales", keep);
        MxQuantOptions mx;
        mx.check_finite = check_finite;
        nb::gil_scoped_release nogil;
        mxfp8_quantize_out(xv, qv, sv, mx, call_options(backend, stream));
      },
      "x"_a, "x_dtype"_a.none(), "q"_a, "q_dtype"_a.none(), "scales"_a, "scales_dtype"_a.none(),
      "check_finite"_a = true, "backend"_a = "", "stream"_a = 0);

  m.def(
      "mxfp8_dequantize_out",
      [](nb::handle q, OptStr q_dtype, nb::handle scales, OptStr scales_dtype, nb::handle out, OptStr out_dtype,
         const std::string& backend, std::uintptr_t stream) {
        const char* op = "mxfp8_dequantize";
        Keep keep;
        const TensorView qv = input_view(q, q_dtype, op, "q", keep);
        const TensorView sv = input_view(scales, scales_dtype, op, "scales", keep);
        const TensorView ov = output_view(out, out_dtype, op, "out", keep);
        nb::gil_scoped_release nogil;
        mxfp8_dequantize_out(qv, sv, ov, call_options(backend, stream));
      },
      "q"_a, "q_dtype"_a.none(), "scales"_a, "scales_dtype"_a.none(), "out"_a, "out_dtype"_a.none(),
      "backend"_a = "", "stream"_a = 0);
}

// fp8_gemv: x [M,K] (f32/bf16/f16, or e4m3 with x_scale), w [N,K] e4m3, out [M,N]. Scales are a
// Python number (per tensor) or an f32 array whose shape gives the granularity (fp8_gemv.hpp).
void define_fp8_gemv(nb::module_& m) {
  m.def(
      "fp8_gemv_out",
      [](nb::handle x, OptStr x_dtype, nb::handle w, OptStr w_dtype, nb::handle w_scale, OptStr w_scale_dtype,
         nb::handle x_scale, OptStr x_scale_dtype, nb::handle out, OptStr out_dtype, const std::string& backend,
         std::uintptr_t stream) {
        const char* op = "fp8_gemv";
        Keep keep;
        const TensorView xv = input_view(x, x_dtype, op, "x", keep);
        const TensorView wv = input_view(w, w_dtype, op, "w", keep);
        const ScaleArg ws = scale_arg(w_scale, w_scale_dtype, op, keep, "w_scale");
        std::optional<ScaleArg> xs;
        if (!x_scale.is_none()) xs = scale_arg(x_scale, x_scale_dtype, op, keep, "x_scale");
        const TensorView ov = output_view(out, out_dtype, op, "out", keep);
        nb::gil_scoped_release nogil;
        fp8_gemv_out(xv, wv, ws, xs, ov, call_options(backend, stream));
      },
      "x"_a, "x_dtype"_a.none(), "w"_a, "w_dtype"_a.none(), "w_scale"_a, "w_scale_dtype"_a.none(),
      "x_scale"_a.none(), "x_scale_dtype"_a.none(), "out"_a, "out_dtype"_a.none(), "backend"_a = "", "stream"_a = 0);
}

void define_runtime(nb::module_& m) {
  m.def("ops", &ops_listing, "Every op and its backends: name, device, features, available, reason.");
  m.def("dispatch_log", &dispatch_log_list, "The last dispatch decisions (oldest first): seq, op, backend, reason.");
  m.def("clear_dispatch_log", &clear_dispatch_log);
  m.def("built_with_cuda", &built_with_cuda);
  m.def("cuda_device_count", [] {
    nb::gil_scoped_release nogil;
    return cuda_device_count();
  });
  m.def("cuda_unavailable_reason", &cuda_unavailable_reason);
  m.def("cuda_runtime_version", &cuda_runtime_version);
  m.def("cuda_driver_version", &cuda_driver_version);
  m.def("device_info", &device_info_dict, "index"_a = 0);
  m.def(
      "device_arch", [](const std::string& d) { return device_arch(parse_device(d)); }, "device"_a);
  m.def(
      "cuda_synchronize",
      [](int i) {
        nb::gil_scoped_release nogil;
        cuda_synchronize(i);
      },
      "index"_a = 0);
  m.def("set_receipts_for_testing", &set_receipts_for_testing, "receipt_json_texts"_a,
        "Replaces the receipts AUTO ranks by; an empty list restores the built-in table.");
  m.def(
      "dtype_size", [](const std::string& name) { return dtype_size(parse_dtype(name)); }, "dtype"_a);
  m.def(
      "dtype_name", [](const std::string& name) { return std::string(dtype_name(parse_dtype(name))); }, "dtype"_a,
      "The canonical cppmega name of a dtype name or alias (InvalidArgument if unknown).");
}

void define_bench(nb::module_& m) {
  m.def("time_paired", &time_paired_py, "fns"_a, "device"_a, "stream"_a = 0, "warmup"_a = 10, "iters"_a = 50,
        "Times [(label, callable)] in paired, order-alternated rounds; returns one stats dict per label.");
  m.def(
      "measure_ceilings",
      [](const std::string& device, std::uintptr_t stream) {
        const Device dev = parse_device(device);
        bench::Ceilings c;
        {
          nb::gil_scoped_release nogil;
          c = bench::measure_ceilings(dev, reinterpret_cast<void*>(stream));
        }
        return ceilings_dict(c);
      },
      "device"_a, "stream"_a = 0);
  m.def("build_git_commit", &bench::build_git_commit);

  nb::class_<bench::Receipt>(m, "Receipt")
      .def(
          "__init__",
          [](bench::Receipt* self, const std::string& tool, const std::string& device, int warmup, int iters,
             std::uint64_t seed) { new (self) bench::Receipt(tool, parse_device(device), warmup, iters, seed); },
          "tool"_a, "device"_a, "warmup"_a, "iters"_a, "seed"_a = 0)
      .def("set_ceilings",
           [](bench::Receipt& r, const nb::dict& d) {
             bench::Ceilings c;
             c.copy_tbps = get_or<double>(d, "copy_tbps", 0);
             c.bf16_matmul_tflops = get_or<double>(d, "bf16_matmul_tflops", 0);
             c.copy_method = get_or<std::string>(d, "copy_method", "");
             c.matmul_method = get_or<std::string>(d, "matmul_method", "");
             r.set_ceilings(c);
           })
      .def("ceilings", [](const bench::Receipt& r) { return ceilings_dict(r.ceilings()); })
      .def("set_versions", &bench::Receipt::set_versions, "key"_a, "value"_a)
      .def(
          "add", [](bench::Receipt& r, const nb::dict& d) { r.add(result_from(d)); }, "result"_a)
      .def("__len__", [](const bench::Receipt& r) { return r.results().size(); })
      .def("to_json", &bench::Receipt::to_json)
      .def("write", &bench::Receipt::write, "path"_a)
      .def("table", &bench::Receipt::table)
      .def("strict_failures", &bench::Receipt::strict_failures, "min_ratio"_a = std::map<std::string, double>{});
}

}  // namespace cppmega::py

NB_MODULE(_C, m) {
  m.doc() = "cppmega C++ core (nanobind). Use the `cppmega` package, not this module directly.";
  m.attr("__version__") = CPPMEGA_VERSION;
  cppmega::py::define_exceptions(m);
  cppmega::py::define_fp8(m);
  cppmega::py::define_topk(m);
  cppmega::py::define_fp8_blocks(m);
  cppmega::py::define_fp8_gemv(m);
  cppmega::py::define_runtime(m);
  cppmega::py::define_bench(m);
}
