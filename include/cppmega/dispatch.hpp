// Backend registry and selection (docs/contracts.md section 1, "Backends").
//
// Every op owns an `OpTable<Args>`: a list of backends, each declaring where it runs and
// which calls it supports. `select()` applies the selection order
//   call argument -> env CPPMEGA_BACKEND__<OP> -> env CPPMEGA_BACKEND -> AUTO
// and records the decision in the dispatch log. A named backend that cannot run the call
// raises Unsupported (never a silent substitute); AUTO walks the receipt ranking (or the
// declared order) and skips only backends whose `supports` says no.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cppmega/error.hpp"
#include "cppmega/tensor.hpp"

namespace cppmega {

// Per-call options shared by every op.
struct CallOptions {
  std::string backend;       // "" = selection chain; "auto", "reference", "cuda", "cuda.sm90", ...
  void* stream = nullptr;    // cudaStream_t; nullptr = the legacy default stream
};

// One entry of the bounded in-process dispatch log.
struct DispatchRecord {
  std::uint64_t seq = 0;
  std::string op;
  std::string backend;
  std::string reason;  // how it was chosen: "argument", "env CPPMEGA_BACKEND", "auto: receipt ...", ...
};

inline constexpr std::size_t kDispatchLogCapacity = 256;
std::vector<DispatchRecord> dispatch_log();  // oldest first, at most kDispatchLogCapacity
void clear_dispatch_log();

// Everything a backend says about itself, for listings (`cppmega ops`) and errors.
struct BackendInfo {
  std::string name;
  DeviceKind device;
  std::string features;  // human-readable: dtypes, limits, arch
};

// Where a backend runs right now: available, or why not (no GPU, wrong arch, not built).
struct Availability {
  bool available = false;
  std::string reason;
};

// The AUTO ranking for one call: backends that a receipt shows parity-clean for this op,
// device arch and shape bucket, fastest first. Empty when no receipt covers the call.
std::vector<std::string> receipt_ranking(const std::string& op, const Device& device, const std::string& bucket,
                                         std::string* source = nullptr);
// Replaces the receipts AUTO reads (tests; `CPPMEGA_RECEIPTS` env at start-up does the same).
// An empty vector restores the built-in table compiled from bench/receipts/.
void set_receipts_for_testing(const std::vector<std::string>& receipt_json_texts);
// Architecture tag used by receipts for a device: "cpu", "sm_90", ...
std::string device_arch(const Device& d);

namespace detail {
// Shared, non-template parts of selection.
std::string requested_backend(const std::string& op, const std::string& call_arg, std::string* reason);
void record_dispatch(const std::string& op, const std::string& backend, const std::string& reason);
// The backend names any op may declare ("reference", "cuda", "cuda.sm90").
bool is_known_backend_name(const std::string& name);
Availability cuda_availability(const Device& d);
}  // namespace detail

template <class Args>
struct Backend {
  std::string name;
  DeviceKind device = DeviceKind::cpu;
  std::string features;
  // Returns nullopt when this backend can run the call, else the reason it cannot.
  std::function<std::optional<std::string>(const Args&)> supports;
  std::function<void(const Args&, const CallOptions&)> run;
};

template <class Args>
class OpTable {
 public:
  OpTable(std::string op, std::function<Device(const Args&)> device_of,
          std::function<std::string(const Args&)> bucket_of)
      : op_(std::move(op)), device_of_(std::move(device_of)), bucket_of_(std::move(bucket_of)) {}

  OpTable& add(Backend<Args> b) {
    if (!detail::is_known_backend_name(b.name)) invalid_argument(op_, ": backend name '", b.name, "' is not a known backend name");
    backends_.push_back(std::move(b));
    return *this;
  }

  const std::string& op() const { return op_; }

  std::vector<BackendInfo> list() const {
    std::vector<BackendInfo> out;
    for (auto& b : backends_) out.push_back({b.name, b.device, b.features});
    return out;
  }

  // Selects the backend for this call and runs it.
  void dispatch(const Args& args, const CallOptions& opts) const {
    const Backend<Args>& b = select(args, opts);
    b.run(args, opts);
  }

  const Backend<Args>& select(const Args& args, const CallOptions& opts) const {
    std::string how;
    const std::string want = detail::requested_backend(op_, opts.backend, &how);
    const Device dev = device_of_(args);
    if (want != "auto") {
      const Backend<Args>* b = find(want);
      if (!b) {
        if (!detail::is_known_backend_name(want))
          invalid_argument(op_, ": unknown backend '", want, "' (", how, "); known backends of ", op_, ": ", names());
        unsupported(op_, ": backend '", want, "' (", how, ") does not exist for this op; it has: ", names());
      }
      if (auto why = reason_not(*b, args, dev)) unsupported(op_, ": backend '", want, "' (", how, ") cannot run this call: ", *why);
      detail::record_dispatch(op_, b->name, how);
      return *b;
    }
    // AUTO: receipt ranking first, then the declared order.
    std::string source;
    std::vector<std::string> order = receipt_ranking(op_, dev, bucket_of_(args), &source);
    const bool from_receipts = !order.empty();
    for (auto& b : backends_) order.push_back(b.name);
    std::string skipped;
    for (auto& name : order) {
      const Backend<Args>* b = find(name);
      if (!b) continue;
      if (auto why = reason_not(*b, args, dev)) {
        if (skipped.find(name + ":") == std::string::npos) skipped += (skipped.empty() ? "" : "; ") + name + ": " + *why;
        continue;
      }
      std::string reason = from_receipts && name == order.front() ? "auto: fastest parity-clean in receipt " + source
                                                                  : "auto: default order";
      if (!skipped.empty()) reason += " (skipped " + skipped + ")";
      detail::record_dispatch(op_, b->name, reason);
      return *b;
    }
    unsupported(op_, ": no backend can run this call on ", dev.str(), ": ", skipped);
  }

 private:
  const Backend<Args>* find(const std::string& name) const {
    for (auto& b : backends_)
      if (b.name == name) return &b;
    return nullptr;
  }
  std::string names() const {
    std::string s;
    for (auto& b : backends_) s += (s.empty() ? "" : ", ") + b.name;
    return s;
  }
  std::optional<std::string> reason_not(const Backend<Args>& b, const Args& args, const Device& dev) const {
    if (b.device != dev.kind)
      return std::string(b.device == DeviceKind::cpu ? "runs on CPU tensors" : "runs on CUDA tensors") + ", inputs are on " +
             dev.str();
    if (b.device == DeviceKind::cuda) {
      Availability a = detail::cuda_availability(dev);
      if (!a.available) return a.reason;
    }
    return b.supports ? b.supports(args) : std::nullopt;
  }

  std::string op_;
  std::function<Device(const Args&)> device_of_;
  std::function<std::string(const Args&)> bucket_of_;
  std::vector<Backend<Args>> backends_;
};

// Registry of every op's backends for listings (`cppmega ops`, Python `cppmega.ops()`).
struct OpListing {
  std::string op;
  std::vector<BackendInfo> backends;
};
std::vector<OpListing> list_ops();                       // every op family, in src/ops/registry.cpp
Availability backend_availability(const BackendInfo& b);  // on device 0 for CUDA backends

}  // namespace cppmega
