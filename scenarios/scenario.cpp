#include "scenarios/scenario.h"

#include <cmath>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "base/error.h"
#include "base/files.h"

namespace kvs::scenarios {

namespace {

// A range a number must lie in, and how to say it.
struct Check {
  bool (*ok)(double);
  const char* expected;
};
constexpr Check kAnyNumber{[](double) { return true; }, "a number"};
constexpr Check kNonNegative{[](double x) { return x >= 0; }, "a number >= 0"};
constexpr Check kPositive{[](double x) { return x > 0; }, "a positive number"};
constexpr Check kProbability{[](double x) { return x >= 0 && x < 1; }, "a number in [0, 1)"};
constexpr Check kFraction{[](double x) { return x > 0 && x <= 1; }, "a number in (0, 1]"};

// Reads one YAML mapping, field by field, rejecting unknown keys.
class Fields {
 public:
  Fields(const YAML::Node& node, std::string source, std::string prefix)
      : node_(node), source_(std::move(source)), prefix_(std::move(prefix)) {
    if (!node.IsMap()) fail(node, "", "expected a mapping of keys to values");
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
    const size_t line = at.Mark().line >= 0 ? size_t(at.Mark().line) + 1 : 0;
    const std::string name = key.empty() ? (prefix_.empty() ? "document" : prefix_) : full(key);
    throw Error(at_location(source_, line, name + ": " + what));
  }
  std::string full(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  bool has(const std::string& key) {
    seen_.insert(key);
    return bool(node_[key]);
  }
  YAML::Node get(const std::string& key) {
    seen_.insert(key);
    return node_[key];
  }

  template <class T>
  void read(const std::string& key, T& out, const char* expected) {
    if (!has(key)) return;
    const YAML::Node v = node_[key];
    if (!v.IsScalar()) fail(v, key, std::string("expected ") + expected);
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      fail(v, key, fmt::format("expected {}, got '{}'", expected, v.Scalar()));
    }
  }
  // A finite number that passes `check`, which is tested here so that the
  // error names the file and line (the simulator re-validates without them).
  void number(const std::string& key, double& out, const Check& check = kAnyNumber) {
    if (!has(key)) return;
    read(key, out, check.expected);
    if (!std::isfinite(out) || !check.ok(out))
      fail(node_[key], key, fmt::format("expected {}, got {}", check.expected, node_[key].Scalar()));
  }
  // An integer in [min, max].
  void unsigned_int(const std::string& key, uint32_t& out, uint32_t min = 0, uint32_t max = 0xffffffffu) {
    if (!has(key)) return;
    const YAML::Node v = node_[key];
    const std::string expected = max == 0xffffffffu ? fmt::format("an integer >= {}", min)
                                                    : fmt::format("an integer in {}..{}", min, max);
    long long x = 0;
    if (!v.IsScalar()) fail(v, key, "expected " + expected);
    try {
      x = v.as<long long>();
    } catch (const YAML::Exception&) {
      fail(v, key, fmt::format("expected {}, got '{}'", expected, v.Scalar()));
    }
    if (x < min || x > max) fail(v, key, fmt::format("expected {}, got {}", expected, x));
    out = uint32_t(x);
  }
  void string(const std::string& key, std::string& out) { read(key, out, "a string"); }
  // A string that must be one of `allowed`.
  void one_of(const std::string& key, std::string& out, std::initializer_list<const char*> allowed) {
    if (!has(key)) return;
    string(key, out);
    std::string list;
    for (const char* a : allowed) {
      if (out == a) return;
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    fail(node_[key], key, fmt::format("expected one of {}, got '{}'", list, out));
  }
  void required_string(const std::string& key, std::string& out) {
    if (!has(key)) fail(node_, key, "missing (required)");
    string(key, out);
  }
  template <class T>
  void list(const std::string& key, std::vector<T>& out, const char* expected) {
    if (!has(key)) return;
    const YAML::Node v = node_[key];
    if (!v.IsSequence()) fail(v, key, std::string("expected a list of ") + expected);
    out.clear();
    for (const auto& item : v) {
      try {
        if (!item.IsScalar()) throw YAML::Exception(item.Mark(), "");
        out.push_back(item.as<T>());
      } catch (const YAML::Exception&) {
        fail(item, key, std::string("expected a list of ") + expected);
      }
    }
  }
  void number_list(const std::string& key, std::vector<double>& out, const Check& check) {
    list(key, out, "numbers");
    if (!has(key)) return;
    const YAML::Node v = node_[key];
    for (size_t i = 0; i < out.size(); ++i)
      if (!std::isfinite(out[i]) || !check.ok(out[i]))
        fail(v[i], key, fmt::format("expected each item to be {}, got {}", check.expected, v[i].Scalar()));
  }

  // Call after reading: any key not asked for is an error.
  void finish() const {
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (!seen_.count(key)) {
        std::string known;
        for (const auto& k : seen_) known += (known.empty() ? "" : ", ") + k;
        fail(kv.first, key, fmt::format("unknown key (known here: {})", known));
      }
    }
  }

 private:
  YAML::Node node_;
  std::string source_, prefix_;
  std::set<std::string> seen_;
};

std::string resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || std::filesystem::path(p).is_absolute() || base_dir.empty()) return p;
  return (std::filesystem::path(base_dir) / p).lexically_normal().string();
}

}  // namespace

Scenario parse_scenario(const std::string& yaml_text, const std::string& source, const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw Error(at_location(source, size_t(e.mark.line + 1), "YAML syntax: " + e.msg));
  }
  Scenario s;
  sim::SimConfig& c = s.sim;
  Fields f(root, source, "");
  f.required_string("profile", c.profile_path);
  c.profile_path = resolve(base_dir, c.profile_path);
  f.required_string("codec", c.codec);
  if (f.has("policy")) {
    const YAML::Node p = f.get("policy");
    if (p.IsScalar()) {
      c.policy = p.Scalar();
    } else {
      Fields pf(p, source, "policy");
      pf.required_string("name", c.policy);
      if (pf.has("params")) {
        const YAML::Node params = pf.get("params");
        if (!params.IsMap()) pf.fail(params, "params", "expected a mapping of parameter names to values");
        for (const auto& kv : params) {
          if (!kv.second.IsScalar()) pf.fail(kv.second, "params." + kv.first.as<std::string>(), "expected a scalar value");
          c.policy_params[kv.first.as<std::string>()] = kv.second.Scalar();
        }
      }
      pf.finish();
    }
  }
  f.string("target", c.target);
  if (f.has("link")) {
    Fields lf(f.get("link"), source, "link");
    auto& l = c.link;
    lf.number("rate_mbps", l.rate_mbps, kPositive);
    lf.string("trace", s.trace_file);
    s.trace_file = resolve(base_dir, s.trace_file);
    lf.string("trace_gen", s.trace_gen);
    if (!s.trace_file.empty() && !s.trace_gen.empty())
      lf.fail(lf.get("trace_gen"), "trace_gen", "give either trace or trace_gen, not both");
    lf.one_of("trace_mode", l.trace_mode, {"auto", "rate", "mahimahi"});
    if (l.trace_mode == "mahimahi" && !s.trace_gen.empty())
      lf.fail(lf.get("trace_mode"), "trace_mode",
              "mahimahi needs a trace with delivery opportunities (a mahimahi file); generated traces have none");
    lf.number("rtt_ms", l.rtt_ms, kNonNegative);
    lf.number("access_rtt_ms", l.access_rtt_ms, kNonNegative);
    lf.number("loss_rate", l.loss_rate, kProbability);
    lf.one_of("queue", l.queue, {"droptail", "codel", "fqcodel"});
    lf.unsigned_int("queue_packets", l.queue_packets);
    lf.unsigned_int("mtu_bytes", l.mtu_bytes, 576, 65535);
    lf.number("access_rate_mbps", l.access_rate_mbps, kPositive);
    lf.one_of("tcp", l.tcp, {"cubic", "cubic-hystart-fix", "newreno", "bbr"});
    lf.unsigned_int("tcp_buffer_bytes", l.tcp_buffer_bytes);
    lf.unsigned_int("mss_bytes", l.mss_bytes);
    if (l.mss_bytes != 0 && (l.mss_bytes < 64 || l.mss_bytes > l.mtu_bytes - 52))
      lf.fail(lf.get("mss_bytes"), "mss_bytes",
              fmt::format("expected 64..{} (mtu_bytes - 52), or 0 for that; got {}", l.mtu_bytes - 52, l.mss_bytes));
    lf.unsigned_int("initial_cwnd_segments", l.initial_cwnd_segments, 1);
    lf.unsigned_int("delayed_ack_count", l.delayed_ack_count, 1);
    lf.number("min_rto_ms", l.min_rto_ms, kPositive);
    lf.finish();
  }
  if (f.has("gpu")) {
    Fields gf(f.get("gpu"), source, "gpu");
    auto& g = c.gpu;
    gf.string("preset", g.preset);
    gf.number("peak_flops", g.peak_flops, kNonNegative);  // 0: from the preset
    gf.number("memory_bytes_per_s", g.memory_bytes_per_s, kNonNegative);
    gf.number("efficiency", g.efficiency, kFraction);
    gf.number("decode_speedup", g.decode_speedup, kPositive);
    gf.number("first_token_s", g.first_token_s);
    gf.finish();
  }
  if (f.has("arrivals")) {
    Fields af(f.get("arrivals"), source, "arrivals");
    auto& a = c.arrivals;
    af.string("mode", a.mode);
    if (a.mode != "schedule" && a.mode != "poisson")
      af.fail(af.get("mode"), "mode", fmt::format("expected 'schedule' or 'poisson', got '{}'", a.mode));
    af.number_list("times_s", a.times_s, kNonNegative);
    af.unsigned_int("count", a.count, 1);
    af.number("rate_per_s", a.rate_per_s, kPositive);
    af.list("contexts", a.contexts, "context indices");
    af.finish();
  }
  if (f.has("cross_traffic")) {
    Fields xf(f.get("cross_traffic"), source, "cross_traffic");
    auto& x = c.cross;
    xf.unsigned_int("bulk_tcp_flows", x.bulk_tcp_flows);
    xf.unsigned_int("onoff_udp_flows", x.onoff_udp_flows);
    xf.number("udp_rate_mbps", x.udp_rate_mbps, kPositive);
    xf.number("udp_on_s", x.udp_on_s, kPositive);
    xf.number("udp_off_s", x.udp_off_s, kPositive);
    xf.number("start_s", x.start_s, kNonNegative);
    xf.finish();
  }
  f.number("slo_s", c.slo_s, kNonNegative);  // 0: no SLO
  f.unsigned_int("in_flight", c.in_flight, 1);
  f.number("sample_interval_ms", c.sample_interval_ms, kPositive);
  f.unsigned_int("request_header_bytes", c.request_header_bytes, 16);
  f.unsigned_int("response_header_bytes", c.response_header_bytes, 16);
  f.unsigned_int("seed", c.seed);
  f.unsigned_int("run", c.run);
  f.number("max_sim_s", c.max_sim_s, kPositive);
  f.string("output", s.output_dir);
  s.output_dir = resolve(base_dir, s.output_dir);
  f.finish();
  return s;
}

Scenario load_scenario(const std::string& path) {
  const std::string text = read_file(path);
  return parse_scenario(text, path, std::filesystem::path(path).parent_path().string());
}

}  // namespace kvs::scenarios
