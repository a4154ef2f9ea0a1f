#include "scenarios/scenario.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <functional>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "base/error.h"
#include "base/files.h"
#include "policies/policy.h"
#include "sim/limits.h"

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
constexpr double kNoCap = std::numeric_limits<double>::infinity();

size_t line_of(const YAML::Node& n) { return n.Mark().line >= 0 ? size_t(n.Mark().line) + 1 : 0; }

// Where documents start (an event handler that only notes that).
struct DocumentStarts : YAML::EventHandler {
  std::vector<size_t> lines;
  void OnDocumentStart(const YAML::Mark& mark) override { lines.push_back(mark.line >= 0 ? size_t(mark.line) + 1 : 0); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Reads one YAML mapping, field by field, rejecting unknown keys.
class Fields {
 public:
  // `lines`: where each key read was found, "prefix.key" -> line.
  Fields(const YAML::Node& node, std::string source, std::string prefix, std::map<std::string, size_t>* lines)
      : node_(node), source_(std::move(source)), prefix_(std::move(prefix)), lines_(lines) {
    if (!node.IsMap()) fail(node, "", "expected a mapping of keys to values");
    // yaml-cpp keeps the first of duplicate keys silently; a key that is not
    // a plain name would fail later as a "bad conversion".
    std::map<std::string, size_t> first;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) fail(kv.first, "", "expected plain names as keys, found a list or mapping");
      const std::string key = kv.first.Scalar();
      const auto [it, fresh] = first.emplace(key, line_of(kv.first));
      if (!fresh) fail(kv.first, key, fmt::format("duplicate key (first given on line {})", it->second));
    }
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& what) const {
    const size_t line = at.Mark().line >= 0 ? size_t(at.Mark().line) + 1 : 0;
    const std::string name = key.empty() ? (prefix_.empty() ? "document" : prefix_) : full(key);
    throw Error(at_location(source_, line, name + ": " + what));
  }
  std::string full(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  bool has(const std::string& key) {
    seen_.insert(key);
    const YAML::Node v = node_[key];
    if (v && lines_) (*lines_)[full(key)] = line_of(v);
    return bool(v);
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
  // `cap`: the largest value a real run can have (sim/limits.h).
  void number(const std::string& key, double& out, const Check& check = kAnyNumber, double cap = kNoCap,
              const char* cap_why = "") {
    if (!has(key)) return;
    read(key, out, check.expected);
    if (!std::isfinite(out) || !check.ok(out))
      fail(node_[key], key, fmt::format("expected {}, got {}", check.expected, node_[key].Scalar()));
    if (out > cap) fail(node_[key], key, fmt::format("expected at most {:g}{}, got {}", cap, cap_why, node_[key].Scalar()));
  }
  // An integer in [min, max].
  // `cap`: the largest value a real run can have (sim/limits.h).
  void unsigned_int(const std::string& key, uint32_t& out, uint32_t min = 0, uint32_t max = 0xffffffffu,
                    uint32_t cap = 0xffffffffu, const char* cap_why = "") {
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
    if (x > cap) fail(v, key, fmt::format("expected at most {}{}, got {}", cap, cap_why, x));
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
    size_t i = 0;
    for (const auto& item : v) {
      if (lines_) (*lines_)[fmt::format("{}[{}]", full(key), i++)] = line_of(item);
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
      const std::string key = kv.first.Scalar();
      if (!seen_.count(key)) {
        const std::vector<std::string> known(seen_.begin(), seen_.end());
        fail(kv.first, key,
             fmt::format("unknown key{} (known here: {})", did_you_mean(key, known), fmt::join(known, ", ")));
      }
    }
  }

 private:
  YAML::Node node_;
  std::string source_, prefix_;
  std::map<std::string, size_t>* lines_ = nullptr;
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
    root.reset(YAML::Load(yaml_text));
    // A second document ("---") is an error, not ignored. Documents are only
    // counted, two at most: yaml-cpp 0.7's LoadAll loops forever on some
    // broken inputs (found by tests/fuzz/scenario_fuzz).
    std::istringstream in(yaml_text);
    YAML::Parser parser(in);
    DocumentStarts starts;
    for (int n = 0; n < 2 && parser.HandleNextDocument(starts); ++n) {
    }
    if (starts.lines.size() > 1)
      throw Error(at_location(source, starts.lines[1], "a second YAML document: a scenario file holds one (remove the '---')"));
  } catch (const YAML::ParserException& e) {
    throw Error(at_location(source, size_t(e.mark.line + 1), "YAML syntax: " + e.msg));
  }
  return parse_scenario_node(root, source, base_dir);
}

Scenario parse_scenario_node(const YAML::Node& root, const std::string& source, const std::string& base_dir) {
  Scenario s;
  s.source = source;
  sim::SimConfig& c = s.sim;
  auto* lines = &s.lines;
  Fields f(root, source, "", lines);
  // `profile_from:` (a model and contexts, scenarios/profile_cache.h) stands
  // for a profile that `kvstream run` computes once and caches.
  s.profile_from = f.has("profile_from");
  if (s.profile_from && f.has("profile"))
    f.fail(f.get("profile"), "profile", "give either profile or profile_from, not both");
  if (!s.profile_from) f.required_string("profile", c.profile_path);
  c.profile_path = resolve(base_dir, c.profile_path);
  f.required_string("codec", c.codec);
  if (f.has("policy")) {
    const YAML::Node p = f.get("policy");
    YAML::Node name_node = p;
    std::string name_key = "policy";
    std::map<std::string, YAML::Node> param_nodes;
    if (p.IsScalar()) {
      c.policy = p.Scalar();
    } else {
      Fields pf(p, source, "policy", lines);
      pf.required_string("name", c.policy);
      name_node.reset(pf.get("name"));  // reset: YAML::Node's = would assign into `p`
      name_key = "name";
      if (pf.has("params")) {
        const YAML::Node params = pf.get("params");
        Fields pp(params, source, "policy.params", lines);  // a mapping, plain unique names
        for (const auto& kv : params) {
          const std::string k = kv.first.Scalar();
          pp.has(k);
          if (!kv.second.IsScalar()) pp.fail(kv.second, k, "expected a scalar value");
          c.policy_params[k] = kv.second.Scalar();
          param_nodes.emplace(k, kv.first);
        }
      }
      pf.finish();
    }
    // The policy and its parameters are known now, with the file and line.
    const policies::PolicyInfo* info = nullptr;
    try {
      info = &policies::policy_info(c.policy);
    } catch (const Error& e) {
      f.fail(name_node, name_key == "policy" ? "policy" : "policy.name", e.what());
    }
    for (const auto& [k, v] : c.policy_params) {
      try {
        policies::parse_params(c.policy, info->params, {{k, v}});
      } catch (const Error& e) {
        f.fail(param_nodes.at(k), "policy.params." + k, e.what());
      }
    }
    // A parameter naming a file is relative to this file's folder, as `profile:` is.
    for (const auto& spec : info->params) {
      auto it = c.policy_params.find(spec.name);
      if (spec.file_path && it != c.policy_params.end()) it->second = resolve(base_dir, it->second);
    }
  }
  f.string("target", c.target);
  // How the network is simulated (sim/config.h): ns-3, or a model without packets.
  f.string("network", c.network);
  {
    const std::vector<std::string> models = {"ns3", "fluid", "pensieve"};
    if (std::find(models.begin(), models.end(), c.network) == models.end())
      f.fail(f.get("network"), "network",
             fmt::format("expected one of ns3, fluid, pensieve, got '{}'{}", printable(c.network),
                         did_you_mean(c.network, models)));
  }
  std::string levels = "front", measure = "kl";
  f.one_of("levels", levels, {"front", "all"});
  c.all_levels = levels == "all";
  f.one_of("quality_measure", measure, {"kl", "loss_increase"});
  c.quality_loss_increase = measure == "loss_increase";
  if (f.has("link")) {
    Fields lf(f.get("link"), source, "link", lines);
    auto& l = c.link;
    lf.number("rate_mbps", l.rate_mbps, kPositive, sim::limits::kMaxRateMbps, " (1 Tbit/s)");
    lf.string("trace", s.trace_file);
    s.trace_file = resolve(base_dir, s.trace_file);
    if (lf.has("trace_csv")) {
      // A CSV trace's columns (traces/formats.h CsvOptions), e.g. 5Gophers':
      // {time_column: seq_num, interval_s: 1, value_column: throughput_mbps}.
      Fields cf(lf.get("trace_csv"), source, "link.trace_csv", lines);
      auto& csv = s.trace_load.csv;
      s.trace_load.format = traces::Format::kCsv;
      cf.string("time_column", csv.time_column);
      cf.number("interval_s", csv.interval_s, kNonNegative);
      cf.string("value_column", csv.value_column);
      if (cf.has("filter")) {
        Fields ff(cf.get("filter"), source, "link.trace_csv.filter", lines);
        for (const auto& kv : cf.get("filter")) {
          std::string value;
          ff.string(kv.first.Scalar(), value);
          csv.filters[kv.first.Scalar()] = value;
        }
        ff.finish();
      }
      cf.finish();
      if (s.trace_file.empty()) lf.fail(lf.get("trace_csv"), "trace_csv", "says how to read a CSV trace: give trace too");
    }
    lf.string("trace_gen", s.trace_gen);
    if (!s.trace_file.empty() && !s.trace_gen.empty())
      lf.fail(lf.get("trace_gen"), "trace_gen", "give either trace or trace_gen, not both");
    lf.number("trace_scale", s.trace_scale, kPositive, sim::limits::kMaxTraceScale);
    if (s.trace_scale != 1 && s.trace_file.empty() && s.trace_gen.empty())
      lf.fail(lf.get("trace_scale"), "trace_scale", "scales a trace: give trace or trace_gen too");
    lf.one_of("trace_mode", l.trace_mode, {"auto", "rate", "mahimahi"});
    if (l.trace_mode == "mahimahi" && s.trace_scale != 1)
      lf.fail(lf.get("trace_mode"), "trace_mode",
              "mahimahi replays the recorded delivery opportunities, which a scaled trace no longer has");
    if (l.trace_mode == "mahimahi" && !s.trace_gen.empty())
      lf.fail(lf.get("trace_mode"), "trace_mode",
              "mahimahi needs a trace with delivery opportunities (a mahimahi file); generated traces have none");
    lf.number("rtt_ms", l.rtt_ms, kNonNegative, sim::limits::kMaxRttMs, " (a minute)");
    lf.number("access_rtt_ms", l.access_rtt_ms, kNonNegative, sim::limits::kMaxRttMs, " (a minute)");
    lf.number("loss_rate", l.loss_rate, kProbability);
    lf.one_of("queue", l.queue, {"droptail", "codel", "fqcodel"});
    lf.unsigned_int("queue_packets", l.queue_packets, 0, 0xffffffffu, sim::limits::kMaxQueuePackets);
    lf.unsigned_int("mtu_bytes", l.mtu_bytes, 576, 65535);
    lf.number("access_rate_mbps", l.access_rate_mbps, kPositive, sim::limits::kMaxRateMbps, " (1 Tbit/s)");
    lf.one_of("tcp", l.tcp, {"cubic", "cubic-rfc9438", "cubic-ns3", "cubic-hystart-fix", "newreno", "bbr"});
    lf.unsigned_int("tcp_buffer_bytes", l.tcp_buffer_bytes, 0, 0xffffffffu, sim::limits::kMaxTcpBufferBytes, " (1 GiB)");
    lf.unsigned_int("mss_bytes", l.mss_bytes);
    if (l.mss_bytes != 0 && (l.mss_bytes < 64 || l.mss_bytes > l.mtu_bytes - 52))
      lf.fail(lf.get("mss_bytes"), "mss_bytes",
              fmt::format("expected 64..{} (mtu_bytes - 52), or 0 for that; got {}", l.mtu_bytes - 52, l.mss_bytes));
    lf.unsigned_int("initial_cwnd_segments", l.initial_cwnd_segments, 1, 0xffffffffu,
                    sim::limits::kMaxInitialCwndSegments);
    lf.unsigned_int("delayed_ack_count", l.delayed_ack_count, 1, 0xffffffffu, sim::limits::kMaxDelayedAckCount);
    lf.number("min_rto_ms", l.min_rto_ms, kPositive, sim::limits::kMaxMinRtoMs, " (a minute)");
    lf.read("ns3_stock", l.ns3_stock, "true or false");
    lf.read("fold_access_links", l.fold_access_links, "true or false");
    lf.finish();
  }
  if (f.has("gpu")) {
    Fields gf(f.get("gpu"), source, "gpu", lines);
    auto& g = c.gpu;
    gf.string("preset", g.preset);
    gf.number("peak_flops", g.peak_flops, kNonNegative, sim::limits::kMaxPeakFlops);  // 0: from the preset
    gf.number("memory_bytes_per_s", g.memory_bytes_per_s, kNonNegative, sim::limits::kMaxBytesPerS);
    gf.number("efficiency", g.efficiency, kFraction);
    gf.number("busy_fraction", g.busy_fraction, kProbability);
    gf.one_of("decode", g.decode, {"auto", "assumed", "profile"});
    gf.number("decode_bytes_per_s", g.decode_bytes_per_s, kNonNegative, sim::limits::kMaxBytesPerS);  // 0: the preset's
    gf.number("decode_speedup", g.decode_speedup, kPositive, sim::limits::kMaxDecodeSpeedup);
    gf.number("first_token_s", g.first_token_s, kAnyNumber, sim::limits::kMaxFirstTokenS, " (an hour)");
    gf.finish();
  }
  if (f.has("arrivals")) {
    Fields af(f.get("arrivals"), source, "arrivals", lines);
    auto& a = c.arrivals;
    af.string("mode", a.mode);
    if (a.mode != "schedule" && a.mode != "poisson")
      af.fail(af.get("mode"), "mode", fmt::format("expected 'schedule' or 'poisson', got '{}'", a.mode));
    af.number_list("times_s", a.times_s, kNonNegative);
    if (af.has("times_s") && a.times_s.empty()) af.fail(af.get("times_s"), "times_s", "expected at least one time");
    if (a.times_s.size() > sim::limits::kMaxRequests)
      af.fail(af.get("times_s"), "times_s",
              fmt::format("{} arrivals, more than a run takes ({})", a.times_s.size(), sim::limits::kMaxRequests));
    af.unsigned_int("count", a.count, 1, 0xffffffffu, sim::limits::kMaxRequests);
    af.number("rate_per_s", a.rate_per_s, kPositive, sim::limits::kMaxArrivalRatePerS);
    af.list("contexts", a.contexts, "context indices");  // [] keeps its meaning: every context in turn
    af.finish();
  }
  if (f.has("cross_traffic")) {
    Fields xf(f.get("cross_traffic"), source, "cross_traffic", lines);
    auto& x = c.cross;
    xf.unsigned_int("bulk_tcp_flows", x.bulk_tcp_flows, 0, 0xffffffffu, sim::limits::kMaxCrossFlows);
    xf.unsigned_int("onoff_udp_flows", x.onoff_udp_flows, 0, 0xffffffffu, sim::limits::kMaxCrossFlows);
    xf.number("udp_rate_mbps", x.udp_rate_mbps, kPositive, sim::limits::kMaxRateMbps, " (1 Tbit/s)");
    xf.number("udp_on_s", x.udp_on_s, kPositive, sim::limits::kMaxSimS);
    xf.number("udp_off_s", x.udp_off_s, kPositive, sim::limits::kMaxSimS);
    for (const char* k : {"udp_on_s", "udp_off_s"})
      if (xf.has(k) && (std::string(k) == "udp_on_s" ? x.udp_on_s : x.udp_off_s) < sim::limits::kMinUdpPeriodS)
        xf.fail(xf.get(k), k, fmt::format("expected at least {:g} s (a millisecond), got {}", sim::limits::kMinUdpPeriodS,
                                          xf.get(k).Scalar()));
    xf.number("start_s", x.start_s, kNonNegative);
    xf.finish();
  }
  f.number("slo_s", c.slo_s, kNonNegative, sim::limits::kMaxSimS, " (a day)");  // 0: no SLO
  f.unsigned_int("in_flight", c.in_flight, 1, 0xffffffffu, sim::limits::kMaxInFlight);
  f.number("sample_interval_ms", c.sample_interval_ms, kPositive, sim::limits::kMaxSampleIntervalMs, " (a minute)");
  f.unsigned_int("request_header_bytes", c.request_header_bytes, 16, 0xffffffffu, sim::limits::kMaxHeaderBytes,
                 " (1 MiB)");
  f.unsigned_int("response_header_bytes", c.response_header_bytes, 16, 0xffffffffu, sim::limits::kMaxHeaderBytes,
                 " (1 MiB)");
  f.unsigned_int("seed", c.seed);
  f.unsigned_int("run", c.run);
  f.number("max_sim_s", c.max_sim_s, kPositive, sim::limits::kMaxSimS, " (a day)");
  f.string("output", s.output_dir);
  s.output_dir = resolve(base_dir, s.output_dir);
  // Checks across keys (each names the key whose value is out of place).
  for (size_t i = 0; i < c.arrivals.times_s.size(); ++i)
    if (c.arrivals.times_s[i] >= c.max_sim_s)
      throw Error(s.at(fmt::format("arrivals.times_s[{}]", i),
                       fmt::format("arrival at {:g} s is not before max_sim_s ({:g} s): it would never start",
                                   c.arrivals.times_s[i], c.max_sim_s)));
  if (c.cross.onoff_udp_flows > 0 && c.cross.udp_rate_mbps > c.link.access_rate_mbps)
    throw Error(s.at("cross_traffic.udp_rate_mbps",
                     fmt::format("{:g} Mbit/s is faster than the access link (link.access_rate_mbps = {:g})",
                                 c.cross.udp_rate_mbps, c.link.access_rate_mbps)));
  if ((c.cross.bulk_tcp_flows > 0 || c.cross.onoff_udp_flows > 0) && c.cross.start_s >= c.max_sim_s)
    throw Error(s.at("cross_traffic.start_s", fmt::format("{:g} s is not before max_sim_s ({:g} s)", c.cross.start_s,
                                                          c.max_sim_s)));
  if (c.network != "ns3" && c.link.loss_rate > 0)
    throw Error(s.at("link.loss_rate", fmt::format("network: {} does not model loss; use network: ns3", c.network)));
  if (c.network != "ns3" && (c.cross.bulk_tcp_flows > 0 || c.cross.onoff_udp_flows > 0))
    throw Error(s.at(c.cross.bulk_tcp_flows > 0 ? "cross_traffic.bulk_tcp_flows" : "cross_traffic.onoff_udp_flows",
                     fmt::format("network: {} does not model cross traffic; use network: ns3", c.network)));
  if (c.network != "ns3" && c.link.ns3_stock)
    throw Error(s.at("link.ns3_stock", fmt::format("selects ns-3's own TCP, but network is {}", c.network)));
  // A sweep's own keys (scenarios/sweep.h checks them): one run reads the base document.
  const bool has_sweep = f.has("sweep"), has_replicates = f.has("replicates");
  s.sweeps = has_sweep || has_replicates;
  f.finish();
  return s;
}

std::string Scenario::at(const std::string& key, const std::string& message) const {
  const auto it = lines.find(key);
  if (it == lines.end() || source.empty()) return key + ": " + message;
  return at_location(source, it->second, key + ": " + message);
}

void check_against_profile(const Scenario& s, const codec::Profile& profile) {
  const sim::SimConfig& c = s.sim;
  const codec::CodecProfile* cp = nullptr;
  std::vector<std::string> present;
  for (const auto& x : profile.codecs) {
    present.push_back(x.codec);
    if (x.codec == c.codec) cp = &x;
  }
  if (!cp)
    throw Error(s.at("codec", fmt::format("'{}' is not in the profile {}{} (it has: {})", printable(c.codec),
                                          c.profile_path, did_you_mean(c.codec, present), fmt::join(present, ", "))));
  if (cp->contexts.empty()) throw Error(s.at("codec", fmt::format("the profile's '{}' has no contexts", c.codec)));
  for (size_t i = 0; i < c.arrivals.contexts.size(); ++i)
    if (c.arrivals.contexts[i] >= cp->contexts.size())
      throw Error(s.at(fmt::format("arrivals.contexts[{}]", i),
                       fmt::format("context {} but the profile's {} has {} (0..{})", c.arrivals.contexts[i], c.codec,
                                   cp->contexts.size(), cp->contexts.size() - 1)));
  // A level parameter (fixed, hybrid) must be one of the codec's levels.
  size_t levels = cp->levels();
  for (const auto& ctx : cp->contexts)
    for (const auto& ch : ctx.chunks) levels = std::min(levels, ch.levels.size());
  const auto level = c.policy_params.find("level");
  if (level != c.policy_params.end()) {
    long long v = -1;
    try {
      v = std::stoll(level->second);
    } catch (const std::exception&) {
    }
    if (v < 0 || size_t(v) >= levels)
      throw Error(s.at("policy.params.level", fmt::format("level {} but the profile's {} has {} levels (0..{})",
                                                          printable(level->second), c.codec, levels, levels - 1)));
  }
}

Scenario load_scenario(const std::string& path) {
  const std::string text = read_file(path);
  return parse_scenario(text, path, std::filesystem::path(path).parent_path().string());
}

}  // namespace kvs::scenarios
