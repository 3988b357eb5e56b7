// The receipt writer shared by `cppmega bench` and the Python bench. The schema is read back by
// AUTO (src/core/dispatch.cpp, `absorb`): keep "device.arch", "created_utc" and per result
// "op", "bucket", "timings"[label]["median_us"] and "parity"[label]["ok"] stable.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "cppmega/bench.hpp"
#include "cppmega/dispatch.hpp"
#include "cppmega/error.hpp"
#include "cppmega/runtime.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/utsname.h>
#include <unistd.h>
#endif

#ifndef CPPMEGA_VERSION
#define CPPMEGA_VERSION "unknown"
#endif

namespace cppmega::bench {

namespace {

// Insertion order: receipts read top-down (schema, environment, ceilings, results).
using json = nlohmann::ordered_json;

constexpr const char* kCppmegaPrefix = "cppmega:";
constexpr int kSchemaVersion = 1;

bool is_cppmega_label(const std::string& label) { return label.rfind(kCppmegaPrefix, 0) == 0; }

// A peer label matches a min-ratio key when it equals it or extends it with ":<what>".
bool peer_matches(const std::string& key, const std::string& label) {
  return label == key || (label.size() > key.size() && label.rfind(key, 0) == 0 && label[key.size()] == ':');
}

std::string utc_now_iso() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string host_name() {
#if defined(__unix__) || defined(__APPLE__)
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) == 0) return buf;
#endif
  return "unknown";
}

std::string os_name() {
#if defined(__unix__) || defined(__APPLE__)
  utsname u{};
  if (uname(&u) == 0) return std::string(u.sysname) + " " + u.release + " " + u.machine;
#endif
  return "unknown";
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
  }
  return "cpu";
}

json device_json(const Device& d) {
  json j;
  j["kind"] = d.is_cuda() ? "cuda" : "cpu";
  j["arch"] = device_arch(d);
  const bool have_gpu = d.is_cuda() && detail::cuda_availability(d).available;
  if (!have_gpu) {
    j["name"] = d.is_cuda() ? "unavailable" : cpu_model();
    for (const char* k : {"sm_count", "sm_clock_mhz", "mem_clock_mhz", "l2_bytes", "global_mem_bytes"}) j[k] = nullptr;
    return j;
  }
  const CudaDeviceInfo i = cuda_device_info(d.index);
  j["index"] = d.index;
  j["name"] = i.name;
  j["sm_count"] = i.sm_count;
  j["sm_clock_mhz"] = i.sm_clock_mhz;
  j["mem_clock_mhz"] = i.mem_clock_mhz;
  j["mem_bus_bits"] = i.mem_bus_bits;
  j["l2_bytes"] = i.l2_bytes;
  j["global_mem_bytes"] = i.global_mem_bytes;
  return j;
}

// NaN and Inf are not JSON; a missing measurement is written as null.
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

struct Rate {
  std::optional<double> tbps, tflops, pct_of_ceiling;
};

// Achieved rates of one timing; the % of ceiling is the larger of the two rooflines that
// apply (bytes vs the copy ceiling, flops vs the matmul ceiling).
Rate rate_of(const Result& r, const Stats& s, const Ceilings& c) {
  Rate out;
  if (!(s.median_us > 0)) return out;
  const double seconds = s.median_us * 1e-6;
  if (r.bytes > 0) {
    out.tbps = r.bytes / seconds / 1e12;
    if (c.copy_tbps > 0) out.pct_of_ceiling = 100.0 * *out.tbps / c.copy_tbps;
  }
  if (r.flops > 0) {
    out.tflops = r.flops / seconds / 1e12;
    if (c.bf16_matmul_tflops > 0)
      out.pct_of_ceiling = std::max(out.pct_of_ceiling.value_or(0.0), 100.0 * *out.tflops / c.bf16_matmul_tflops);
  }
  return out;
}

// The fastest cppmega median of a result, if it timed any cppmega label.
std::optional<double> best_cppmega_median(const Result& r) {
  std::optional<double> best;
  for (auto& [label, s] : r.timings)
    if (is_cppmega_label(label) && (!best || s.median_us < *best)) best = s.median_us;
  return best;
}

json result_json(const Result& r, const Ceilings& c) {
  json j;
  j["op"] = r.op;
  j["name"] = r.name;
  j["bucket"] = r.bucket;
  j["dtype"] = r.dtype;
  j["shape"] = r.shape;
  j["bytes"] = r.bytes;
  j["flops"] = r.flops;
  json timings = json::object(), parity = json::object(), rates = json::object(), ratios = json::object();
  for (auto& [label, s] : r.timings) {
    timings[label] = {{"median_us", number_or_null(s.median_us)}, {"min_us", number_or_null(s.min_us)},
                      {"max_us", number_or_null(s.max_us)},       {"mean_us", number_or_null(s.mean_us)},
                      {"iters", s.iters},                         {"samples_us", s.samples_us}};
    const Rate rate = rate_of(r, s, c);
    json rj = json::object();
    if (rate.tbps) rj["tbps"] = *rate.tbps;
    if (rate.tflops) rj["tflops"] = *rate.tflops;
    rj["pct_of_ceiling"] = rate.pct_of_ceiling ? json(*rate.pct_of_ceiling) : json(nullptr);
    rates[label] = rj;
  }
  for (auto& [label, p] : r.parity)
    parity[label] = {{"ok", p.ok}, {"metric", p.metric}, {"value", number_or_null(p.value)}, {"tolerance", p.tolerance}};
  for (auto& [peer, ps] : r.timings) {
    if (is_cppmega_label(peer)) continue;
    for (auto& [ours, os] : r.timings)
      if (is_cppmega_label(ours) && os.median_us > 0) ratios[peer + "/" + ours] = ps.median_us / os.median_us;
  }
  j["timings"] = timings;
  j["parity"] = parity;
  j["rates"] = rates;
  j["ratios"] = ratios;
  json extra;
  try {
    extra = json::parse(r.extra_json.empty() ? "{}" : r.extra_json);
  } catch (const std::exception& e) {
    invalid_argument("receipt: extra_json of ", r.op, " '", r.name, "' is not valid JSON: ", e.what());
  }
  if (!extra.is_object()) invalid_argument("receipt: extra_json of ", r.op, " '", r.name, "' must be a JSON object");
  for (auto& [k, v] : extra.items()) {
    if (j.contains(k)) invalid_argument("receipt: extra_json of ", r.op, " '", r.name, "' redefines the field '", k, "'");
    j[k] = v;
  }
  return j;
}

// "<op>" when every result is one op, "<family>" when they share the prefix before '_'
// (fp8_amax, fp8_pack -> fp8), else "suite".
std::string file_stem(const std::vector<Result>& results) {
  if (results.empty()) return "suite";
  auto family = [](const std::string& op) { return op.substr(0, op.find('_')); };
  bool same_op = true, same_family = true;
  for (auto& r : results) {
    same_op = same_op && r.op == results.front().op;
    same_family = same_family && family(r.op) == family(results.front().op);
  }
  if (same_op) return results.front().op;
  return same_family ? family(results.front().op) : "suite";
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::string build_git_commit() {
#ifdef CPPMEGA_GIT_COMMIT
  const std::string c = CPPMEGA_GIT_COMMIT;
  return c.empty() ? "unknown" : c;
#else
  return "unknown";
#endif
}

Receipt::Receipt(std::string tool, Device device, int warmup, int iters, std::uint64_t seed)
    : tool_(std::move(tool)), device_(device), warmup_(warmup), iters_(iters), seed_(seed) {
  versions_["cppmega"] = CPPMEGA_VERSION;
  versions_["cuda_runtime"] = cuda_runtime_version();
  versions_["cuda_driver"] = cuda_driver_version();
}

std::string Receipt::to_json() const {
  json j;
  j["schema"] = "cppmega.receipt";
  j["schema_version"] = kSchemaVersion;
  j["created_utc"] = utc_now_iso();
  j["tool"] = tool_;
  j["git"] = {{"commit", build_git_commit()}};
  j["host"] = {{"hostname", host_name()}, {"os", os_name()}};
  j["device"] = device_json(device_);
  j["versions"] = versions_;
  j["config"] = {{"warmup", warmup_}, {"iters", iters_}, {"seed", seed_}};
  j["ceilings"] = {{"copy_tbps", ceilings_.copy_tbps},
                   {"bf16_matmul_tflops", ceilings_.bf16_matmul_tflops},
                   {"copy_method", ceilings_.copy_method},
                   {"matmul_method", ceilings_.matmul_method}};
  json results = json::array();
  for (auto& r : results_) results.push_back(result_json(r, ceilings_));
  j["results"] = results;
  return j.dump(2) + "\n";
}

std::string Receipt::write(const std::string& path) const {
  namespace fs = std::filesystem;
  if (path.empty()) invalid_argument("receipt: write needs a file or folder path");
  const std::string text = to_json();
  fs::path target(path);
  std::error_code ec;
  if (path.back() == '/' || fs::is_directory(target, ec)) {
    // <stem>-<arch>-<UTC stamp>.json, the stamp taken from the receipt's own created_utc.
    std::string stamp = json::parse(text)["created_utc"].get<std::string>();
    stamp.erase(std::remove_if(stamp.begin(), stamp.end(), [](char ch) { return ch == '-' || ch == ':'; }), stamp.end());
    const std::string base = file_stem(results_) + "-" + device_arch(device_) + "-" + stamp;
    target = fs::path(path) / (base + ".json");
    for (int k = 2; fs::exists(target, ec); ++k) target = fs::path(path) / (base + "-" + std::to_string(k) + ".json");
  }
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) invalid_argument("receipt: cannot create folder ", target.parent_path().string(), ": ", ec.message());
  }
  // Write then rename, so a reader (AUTO via CPPMEGA_RECEIPTS) never sees half a receipt.
  const fs::path tmp = target.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.good()) invalid_argument("receipt: cannot write ", tmp.string());
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    invalid_argument("receipt: cannot write ", target.string());
  }
  return target.string();
}

std::string Receipt::table() const {
  std::string out;
  out += "device " + device_arch(device_) + "   ceilings: ";
  if (ceilings_.copy_method.empty() && ceilings_.matmul_method.empty())
    out += "not measured\n";
  else
    out += "copy " + fmt("%.3g", ceilings_.copy_tbps) + " TB/s, bf16 matmul " + fmt("%.4g", ceilings_.bf16_matmul_tflops) +
           " TFLOP/s\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-34s %-18s %12s %16s %8s %8s  %s\n", "case", "label", "median us", "rate", "% ceil",
                "t/best", "parity");
  out += line;
  for (auto& r : results_) {
    const std::string name = r.op + " " + r.name;
    const std::optional<double> best = best_cppmega_median(r);
    for (auto& [label, s] : r.timings) {
      const Rate rate = rate_of(r, s, ceilings_);
      std::string rate_s = "-";
      if (rate.tflops) rate_s = fmt("%.4g TFLOP/s", *rate.tflops);
      else if (rate.tbps) rate_s = fmt("%.3g TB/s", *rate.tbps);
      const std::string pct = rate.pct_of_ceiling ? fmt("%.1f%%", *rate.pct_of_ceiling) : "-";
      const std::string rel = best && *best > 0 ? fmt("%.2f", s.median_us / *best) : "-";
      std::string parity = "-";
      if (auto it = r.parity.find(label); it != r.parity.end()) parity = it->second.ok ? "ok" : "FAIL";
      std::snprintf(line, sizeof line, "%-34s %-18s %12.2f %16s %8s %8s  %s\n", name.c_str(), label.c_str(), s.median_us,
                    rate_s.c_str(), pct.c_str(), rel.c_str(), parity.c_str());
      out += line;
    }
    if (r.timings.empty()) out += name + "  (no timings)\n";
  }
  return out;
}

std::vector<std::string> Receipt::strict_failures(const std::map<std::string, double>& min_ratio) const {
  std::vector<std::string> failures;
  std::map<std::string, bool> key_matched;
  for (auto& [key, _] : min_ratio) key_matched[key] = false;
  for (auto& r : results_) {
    const std::string where = r.op + " " + r.name + ": ";
    for (auto& [label, p] : r.parity)
      if (!p.ok)
        failures.push_back(where + label + " parity failed: " + p.metric + " = " + fmt("%g", p.value) + " (tolerance " +
                           fmt("%g", p.tolerance) + ")");
    // A timed cppmega backend with no parity check is unverified: strict mode refuses it.
    for (auto& [label, s] : r.timings)
      if (is_cppmega_label(label) && !r.parity.count(label)) failures.push_back(where + label + " has no parity check");
    const std::optional<double> best = best_cppmega_median(r);
    for (auto& [key, minimum] : min_ratio) {
      for (auto& [label, s] : r.timings) {
        if (is_cppmega_label(label) || !peer_matches(key, label)) continue;
        key_matched[key] = true;
        if (!best || !(*best > 0)) {
          failures.push_back(where + label + " has no cppmega timing to compare with");
          continue;
        }
        const double ratio = s.median_us / *best;
        if (!(ratio >= minimum))
          failures.push_back(where + label + " / best cppmega = " + fmt("%.3f", ratio) + ", required >= " +
                             fmt("%.3f", minimum));
      }
    }
  }
  for (auto& [key, matched] : key_matched)
    if (!matched) failures.push_back("min-ratio " + key + ": no peer timing label matches it in any result");
  return failures;
}

}  // namespace cppmega::bench
