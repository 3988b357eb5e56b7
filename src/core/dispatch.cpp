#include "cppmega/dispatch.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cppmega/runtime.hpp"

namespace cppmega {

namespace {

const char* const kBackendNames[] = {"reference", "cuda", "cuda.sm90"};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

struct DispatchLog {
  std::mutex mu;
  std::deque<DispatchRecord> entries;
  std::uint64_t next_seq = 1;
};
DispatchLog& log_instance() {
  static DispatchLog log;
  return log;
}

}  // namespace

std::vector<DispatchRecord> dispatch_log() {
  auto& l = log_instance();
  std::lock_guard<std::mutex> lock(l.mu);
  return {l.entries.begin(), l.entries.end()};
}

void clear_dispatch_log() {
  auto& l = log_instance();
  std::lock_guard<std::mutex> lock(l.mu);
  l.entries.clear();
}

namespace detail {

bool is_known_backend_name(const std::string& name) {
  for (const char* n : kBackendNames)
    if (name == n) return true;
  return false;
}

std::string requested_backend(const std::string& op, const std::string& call_arg, std::string* reason) {
  auto normalise = [](const std::string& v) {
    std::string s = lower(v);
    s.erase(0, s.find_first_not_of(" \t"));
    s.erase(s.find_last_not_of(" \t") + 1);
    return s;
  };
  auto check = [&](const std::string& v, const std::string& where) {
    if (v != "auto" && !is_known_backend_name(v)) {
      std::string known = "auto";
      for (const char* n : kBackendNames) known += std::string(", ") + n;
      invalid_argument(op, ": unknown backend '", v, "' from ", where, " (expected one of ", known, ")");
    }
    *reason = where;
    return v;
  };
  if (!call_arg.empty()) return check(normalise(call_arg), "argument backend=");
  const std::string per_op = "CPPMEGA_BACKEND__" + upper(op);
  if (const char* e = std::getenv(per_op.c_str()); e && *e) return check(normalise(e), "env " + per_op);
  if (const char* e = std::getenv("CPPMEGA_BACKEND"); e && *e) return check(normalise(e), "env CPPMEGA_BACKEND");
  *reason = "auto";
  return "auto";
}

void record_dispatch(const std::string& op, const std::string& backend, const std::string& reason) {
  auto& l = log_instance();
  std::lock_guard<std::mutex> lock(l.mu);
  l.entries.push_back({l.next_seq++, op, backend, reason});
  while (l.entries.size() > kDispatchLogCapacity) l.entries.pop_front();
}

Availability cuda_availability(const Device& d) {
  if (!built_with_cuda()) return {false, "cppmega was built without CUDA"};
  const int n = cuda_device_count();
  if (n == 0) return {false, cuda_unavailable_reason()};
  if (d.index < 0 || d.index >= n)
    return {false, "CUDA device " + std::to_string(d.index) + " does not exist (" + std::to_string(n) + " present)"};
  return {true, ""};
}

}  // namespace detail

Availability backend_availability(const BackendInfo& b) {
  if (b.device == DeviceKind::cpu) return {true, ""};
  return detail::cuda_availability(Device::cuda(0));
}

std::string device_arch(const Device& d) {
  if (d.kind == DeviceKind::cpu) return "cpu";
  if (!detail::cuda_availability(d).available) return "cuda";
  // Every AUTO call asks; device properties are slow to query, so remember them.
  static std::mutex mu;
  static std::map<int, std::string> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(d.index);
  if (it != cache.end()) return it->second;
  const CudaDeviceInfo i = cuda_device_info(d.index);
  return cache[d.index] = "sm_" + std::to_string(i.cc_major * 10 + i.cc_minor);
}

// ---- Receipt-driven AUTO -----------------------------------------------------------------------
// A receipt (bench/receipts/*.json, schema in docs/design.md) lists results per (op, bucket);
// each result times cppmega backends under labels "cppmega:<backend>" and records whether each
// label's output matched the reference. AUTO ranks the parity-clean backends by median time,
// taking each backend's newest measurement.

namespace detail {
extern const char* const kBuiltinReceipts[];
extern const std::size_t kBuiltinReceiptCount;
}  // namespace detail

namespace {

struct Measurement {
  double median_us = 0;
  std::string created;  // ISO time, for "newest wins"
  std::string source;
};
// key: op | arch | bucket -> backend -> measurement
using RankTable = std::map<std::string, std::map<std::string, Measurement>>;

void absorb(RankTable& table, const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception&) {
    return;  // a malformed receipt ranks nothing (fail closed)
  }
  if (!j.is_object() || !j.contains("results") || !j.contains("device")) return;
  const std::string arch = j["device"].value("arch", "");
  const std::string created = j.value("created_utc", "");
  for (auto& r : j["results"]) {
    if (!r.is_object() || !r.contains("timings")) continue;
    const std::string op = r.value("op", ""), bucket = r.value("bucket", "");
    if (op.empty() || bucket.empty()) continue;
    for (auto& [label, t] : r["timings"].items()) {
      if (label.rfind("cppmega:", 0) != 0 || !t.is_object()) continue;
      const std::string backend = label.substr(8);
      bool ok = false;
      if (r.contains("parity") && r["parity"].contains(label)) ok = r["parity"][label].value("ok", false);
      if (!ok || !t.contains("median_us") || !t["median_us"].is_number()) continue;
      auto& slot = table[op + "|" + arch + "|" + bucket][backend];
      if (slot.created.empty() || created >= slot.created) slot = {t["median_us"].get<double>(), created, source};
    }
  }
}

struct Receipts {
  std::mutex mu;
  bool loaded = false;
  RankTable table;
};
Receipts& receipts() {
  static Receipts r;
  return r;
}

void load_default(RankTable& table) {
  for (std::size_t i = 0; i < detail::kBuiltinReceiptCount; ++i)
    absorb(table, detail::kBuiltinReceipts[i], "builtin#" + std::to_string(i));
  // CPPMEGA_RECEIPTS: a receipt file or a folder of them, read in addition to the built-in table.
  if (const char* e = std::getenv("CPPMEGA_RECEIPTS"); e && *e) {
    namespace fs = std::filesystem;
    std::error_code ec;
    std::vector<fs::path> files;
    if (fs::is_directory(e, ec)) {
      for (auto& f : fs::directory_iterator(e, ec))
        if (f.path().extension() == ".json") files.push_back(f.path());
    } else {
      files.push_back(e);
    }
    for (auto& f : files) {
      std::ifstream in(f);
      std::stringstream ss;
      ss << in.rdbuf();
      absorb(table, ss.str(), f.filename().string());
    }
  }
}

}  // namespace

void set_receipts_for_testing(const std::vector<std::string>& texts) {
  auto& r = receipts();
  std::lock_guard<std::mutex> lock(r.mu);
  r.table.clear();
  if (texts.empty()) {
    load_default(r.table);
  } else {
    for (std::size_t i = 0; i < texts.size(); ++i) absorb(r.table, texts[i], "test#" + std::to_string(i));
  }
  r.loaded = true;
}

std::vector<std::string> receipt_ranking(const std::string& op, const Device& device, const std::string& bucket,
                                         std::string* source) {
  auto& r = receipts();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.loaded) {
    load_default(r.table);
    r.loaded = true;
  }
  auto it = r.table.find(op + "|" + device_arch(device) + "|" + bucket);
  if (it == r.table.end()) return {};
  std::vector<std::pair<double, std::string>> v;
  for (auto& [backend, m] : it->second) v.push_back({m.median_us, backend});
  std::sort(v.begin(), v.end());
  if (source && !v.empty()) *source = it->second[v.front().second].source + " (" + bucket + ")";
  std::vector<std::string> out;
  for (auto& p : v) out.push_back(p.second);
  return out;
}

}  // namespace cppmega
