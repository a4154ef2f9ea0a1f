#include "scenarios/sweep.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "base/error.h"
#include "base/files.h"
#include "policies/policy.h"

namespace kvs::scenarios {

namespace {

// Where a one-run error came from when the document is a sweep's run: the
// parser is given this name, and the "name:line: " it prefixes is replaced.
constexpr const char* kRunSource = "\x1f";

size_t line_of(const YAML::Node& n) { return n.Mark().line >= 0 ? size_t(n.Mark().line) + 1 : 0; }

std::string flow(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter e;
  e.SetMapFormat(YAML::Flow);
  e.SetSeqFormat(YAML::Flow);
  e << n;
  return e.c_str();
}

std::string number_text(double x) { return fmt::format("{}", x); }

// One group of the product: the keys it sets and, per step, one value each.
struct Group {
  std::vector<std::string> keys;
  std::vector<size_t> lines;
  std::vector<std::vector<YAML::Node>> steps;  // steps[i][k]: value of keys[k]
};

// A list, or a range given as a mapping.
std::vector<YAML::Node> values_of(const std::string& source, const std::string& key, const YAML::Node& spec) {
  auto fail = [&](const YAML::Node& at, const std::string& what) -> void {
    throw Error(at_location(source, line_of(at), "sweep." + key + ": " + what));
  };
  std::vector<YAML::Node> out;
  if (spec.IsSequence()) {
    for (const auto& v : spec) out.push_back(v);
    if (out.empty()) fail(spec, "expected at least one value");
    return out;
  }
  if (!spec.IsMap()) fail(spec, "expected a list of values or a range {from, to, step} / {from, to, count, scale}");
  double from = 0, to = 0, step = 0;
  long long count = 0;
  std::string scale = "linear";
  for (const auto& kv : spec) {
    const std::string k = kv.first.Scalar();
    try {
      if (k == "from") from = kv.second.as<double>();
      else if (k == "to") to = kv.second.as<double>();
      else if (k == "step") step = kv.second.as<double>();
      else if (k == "count") count = kv.second.as<long long>();
      else if (k == "scale") scale = kv.second.as<std::string>();
      else fail(kv.first, fmt::format("unknown range key '{}'{} (known: from, to, step, count, scale)", k,
                                      did_you_mean(k, {"from", "to", "step", "count", "scale"})));
    } catch (const YAML::Exception&) {
      fail(kv.second, fmt::format("{}: expected a number", k));
    }
  }
  if (!spec["from"] || !spec["to"]) fail(spec, "a range needs from and to");
  if (!std::isfinite(from) || !std::isfinite(to)) fail(spec, "from and to must be finite numbers");
  if (bool(spec["step"]) == bool(spec["count"])) fail(spec, "a range needs exactly one of step and count");
  if (scale != "linear" && scale != "log") fail(spec["scale"], fmt::format("scale: expected linear or log, got '{}'", scale));
  constexpr long long kMaxValues = 100000;
  std::vector<double> xs;
  if (spec["step"]) {
    if (scale == "log") fail(spec, "scale: log needs count, not step");
    if (!(std::isfinite(step) && step != 0) || (to - from) / step < 0)
      fail(spec["step"], "step must be nonzero and lead from `from` to `to`");
    const double n = std::floor((to - from) / step + 1e-9) + 1;
    if (n > kMaxValues) fail(spec, fmt::format("more than {} values", kMaxValues));
    for (long long i = 0; i < (long long)n; ++i) xs.push_back(from + double(i) * step);
  } else {
    if (count < 1 || count > kMaxValues) fail(spec["count"], fmt::format("count: expected 1..{}", kMaxValues));
    if (scale == "log" && !(from > 0 && to > 0)) fail(spec, "scale: log needs from and to > 0");
    for (long long i = 0; i < count; ++i) {
      const double f = count == 1 ? 0.0 : double(i) / double(count - 1);
      xs.push_back(scale == "log" ? std::exp(std::log(from) + f * (std::log(to) - std::log(from)))
                                  : from + f * (to - from));
    }
  }
  for (double x : xs) {
    // Round off the last bits of the arithmetic so that 0.1 + 2 x 0.1 reads 0.3.
    const double r = std::stod(fmt::format("{:.12g}", x));
    out.push_back(YAML::Node(number_text(r)));
  }
  return out;
}

// "fixed:2" -> {name: fixed, params: {level: 2}}; "mpc:lambda=5,horizon=3" -> params.
YAML::Node policy_value(const std::string& source, size_t line, const YAML::Node& v) {
  if (!v.IsScalar()) return v;
  const std::string s = v.Scalar();
  const size_t colon = s.find(':');
  if (colon == std::string::npos) return v;
  YAML::Node m(YAML::NodeType::Map);
  m["name"] = s.substr(0, colon);
  YAML::Node params(YAML::NodeType::Map);
  const std::string rest = s.substr(colon + 1);
  if (rest.find('=') == std::string::npos) {
    params["level"] = rest;
  } else {
    size_t pos = 0;
    while (pos <= rest.size()) {
      const size_t comma = std::min(rest.find(',', pos), rest.size());
      const std::string kv = rest.substr(pos, comma - pos);
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        throw Error(at_location(source, line, fmt::format("sweep.policy: '{}': expected name:k=v,k=v", s)));
      params[kv.substr(0, eq)] = kv.substr(eq + 1);
      pos = comma + 1;
    }
  }
  m["params"] = params;
  return m;
}

// A value as it goes into a run's document, for comparing values: a policy
// shorthand expanded, a number by its value (10, 10.0 and 1e1 are one).
std::string value_key(const std::string& source, const std::string& key, size_t line, const YAML::Node& v) {
  if (key == "policy") return flow(policy_value(source, line, v));
  if (v.IsScalar()) {
    const std::string& text = v.Scalar();
    char* end = nullptr;
    const double x = std::strtod(text.c_str(), &end);
    if (!text.empty() && end == text.c_str() + text.size() && std::isfinite(x)) return number_text(x);
  }
  return flow(v);
}

// A value (or, in a zip, a combination) listed twice would make two points of
// one run document, so one run id: refused, naming the key, the value and the
// line of its second listing (of the key for a range's values, which have none).
void check_distinct(const std::string& source, const std::vector<Group>& groups) {
  for (const auto& g : groups) {
    std::map<std::string, size_t> first;  // the step's values -> its position
    for (size_t i = 0; i < g.steps.size(); ++i) {
      std::string point, shown;
      for (size_t k = 0; k < g.keys.size(); ++k) {
        point += value_key(source, g.keys[k], g.lines[k], g.steps[i][k]) + '\x1f';
        shown += fmt::format("{}{}={}", k ? ", " : "", g.keys[k], flow(g.steps[i][k]));
      }
      const auto [at, fresh] = first.emplace(point, i);
      if (fresh) continue;
      const size_t line = line_of(g.steps[i][0]) ? line_of(g.steps[i][0]) : g.lines[0];
      const std::string what =
          g.keys.size() == 1
              ? fmt::format("sweep.{}: the value {} is listed twice (values {} and {})", g.keys[0],
                            flow(g.steps[i][0]), at->second + 1, i + 1)
              : fmt::format("sweep.zip: the values {} are listed twice (positions {} and {})", shown,
                            at->second + 1, i + 1);
      throw Error(at_location(source, line, what + "; both would be one run (the same run id)"));
    }
  }
}

void set_path(YAML::Node node, const std::vector<std::string>& parts, size_t i, const YAML::Node& value) {
  if (i + 1 == parts.size()) {
    // A copy: assigning the sweep's own node would merge this document's
    // node memory with the sweep file's, which then grows with every run.
    node[parts[i]] = YAML::Clone(value);
    return;
  }
  const YAML::Node child = node[parts[i]];
  if (i == 0 && parts[0] == "policy" && child && child.IsScalar()) {
    // `policy: NAME` is short for {name: NAME}: a swept parameter
    // (policy.params.level) keeps the name.
    YAML::Node policy(YAML::NodeType::Map);
    policy["name"] = child.Scalar();
    node[parts[i]] = policy;
  } else if (!child || !child.IsMap()) {
    node[parts[i]] = YAML::Node(YAML::NodeType::Map);
  }
  set_path(node[parts[i]], parts, i + 1, value);
}

std::vector<std::string> split_dots(const std::string& key) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    const size_t dot = key.find('.', pos);
    parts.push_back(key.substr(pos, dot - pos));
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return parts;
}

std::string absolute(const std::string& p) {
  return p.empty() ? p : std::filesystem::absolute(std::filesystem::path(p)).lexically_normal().string();
}

}  // namespace

std::string content_hash(std::string_view data) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

Sweep parse_sweep(const std::string& yaml_text, const std::string& source, const std::string& base_dir,
                  const std::string& profile_path) {
  // The base document is a valid one-run scenario by itself (lines as written).
  const Scenario base = parse_scenario(yaml_text, source, base_dir);
  if (base.profile_from && profile_path.empty())
    throw Error(at_location(source, base.lines.count("profile_from") ? base.lines.at("profile_from") : 0,
                            "profile_from: the profile is computed by `kvstream run`"));
  YAML::Node root = YAML::Load(yaml_text);
  Sweep sw;
  sw.source = source;
  sw.output_dir = base.output_dir;

  std::vector<Group> groups;
  size_t sweep_line = 0;
  if (const YAML::Node spec = root["sweep"]) {
    sweep_line = line_of(spec);
    if (!spec.IsMap()) throw Error(at_location(source, sweep_line, "sweep: expected a mapping of keys to values"));
    for (const auto& kv : spec) {
      const std::string key = kv.first.Scalar();
      if (key == "zip") {
        if (!kv.second.IsSequence())
          throw Error(at_location(source, line_of(kv.second), "sweep.zip: expected a list of mappings"));
        for (const auto& z : kv.second) {
          if (!z.IsMap() || z.size() == 0)
            throw Error(at_location(source, line_of(z), "sweep.zip: expected a mapping of keys to equally long lists"));
          Group g;
          size_t n = 0;
          std::vector<std::vector<YAML::Node>> cols;
          for (const auto& zk : z) {
            const std::string k = zk.first.Scalar();
            cols.push_back(values_of(source, k, zk.second));
            if (!zk.second.IsSequence())
              throw Error(at_location(source, line_of(zk.second), "sweep.zip." + k + ": expected a list"));
            if (!g.keys.empty() && cols.back().size() != n)
              throw Error(at_location(source, line_of(zk.second),
                                      fmt::format("sweep.zip.{}: {} values, but {} has {}", k, cols.back().size(),
                                                  g.keys.front(), n)));
            n = cols.back().size();
            g.keys.push_back(k);
            g.lines.push_back(line_of(zk.first));
          }
          for (size_t i = 0; i < n; ++i) {
            g.steps.emplace_back();
            for (auto& col : cols) g.steps.back().push_back(col[i]);
          }
          groups.push_back(std::move(g));
        }
        continue;
      }
      Group g;
      g.keys = {key};
      g.lines = {line_of(kv.first)};
      for (const auto& v : values_of(source, key, kv.second)) g.steps.push_back({v});
      groups.push_back(std::move(g));
    }
  }
  for (auto& g : groups)
    for (size_t k = 0; k < g.keys.size(); ++k) {
      if (g.keys[k] == "sweep" || g.keys[k] == "replicates" || g.keys[k] == "output")
        throw Error(at_location(source, g.lines[k], fmt::format("sweep.{}: cannot be swept", g.keys[k])));
      if (g.keys[k] == "policy")
        for (auto& step : g.steps) policy_value(source, g.lines[k], step[k]);  // checked here, once
    }
  check_distinct(source, groups);
  std::map<std::string, size_t> seen;
  for (const auto& g : groups)
    for (size_t k = 0; k < g.keys.size(); ++k) {
      if (seen.count(g.keys[k]))
        throw Error(at_location(source, g.lines[k], fmt::format("sweep.{}: swept twice", g.keys[k])));
      seen[g.keys[k]] = g.lines[k];
    }
  if (const YAML::Node rep = root["replicates"]) {
    long long n = 0;
    try {
      n = rep.as<long long>();
    } catch (const YAML::Exception&) {
      n = 0;
    }
    if (n < 1 || n > 10000)
      throw Error(at_location(source, line_of(rep), fmt::format("replicates: expected an integer in 1..10000, got {}", flow(rep))));
    if (n > 1) {
      if (seen.count("seed"))
        throw Error(at_location(source, line_of(rep), "replicates: seed is swept already; give one of them"));
      Group g;
      g.keys = {"seed"};
      g.lines = {line_of(rep)};
      for (long long r = 0; r < n; ++r) g.steps.push_back({YAML::Node(std::to_string(base.sim.seed + uint32_t(r)))});
      groups.push_back(std::move(g));
    }
  }
  size_t total = 1;
  for (const auto& g : groups) {
    total *= g.steps.size();
    if (total > 1000000) throw Error(at_location(source, sweep_line, "sweep: more than 1,000,000 runs"));
  }
  for (const auto& g : groups) sw.keys.insert(sw.keys.end(), g.keys.begin(), g.keys.end());

  root.remove("sweep");
  root.remove("replicates");
  root.remove("output");
  if (base.profile_from) {
    // The recipe's product stands in for it: run ids follow the profile's
    // content, not how the recipe is written.
    root.remove("profile_from");
    root["profile"] = "(profile_from)";
  }
  std::map<std::string, std::string> file_hashes;
  auto hash_of = [&](const std::string& path) {
    if (path.empty()) return std::string();
    auto it = file_hashes.find(path);
    if (it != file_hashes.end()) return it->second;
    return file_hashes[path] = content_hash(read_file(path));
  };
  std::string all_ids;
  std::vector<size_t> pick(groups.size(), 0);
  for (size_t index = 0; index < total; ++index) {
    // Mixed-radix counter, the first group outermost.
    size_t rem = index;
    for (size_t g = groups.size(); g-- > 0;) {
      pick[g] = rem % groups[g].steps.size();
      rem /= groups[g].steps.size();
    }
    YAML::Node doc = YAML::Clone(root);
    SweepRun run;
    run.index = index;
    for (size_t g = 0; g < groups.size(); ++g)
      for (size_t k = 0; k < groups[g].keys.size(); ++k) {
        const std::string& key = groups[g].keys[k];
        const YAML::Node& v = groups[g].steps[pick[g]][k];
        // The value as given is the run's parameter; a policy shorthand is expanded for the document.
        set_path(doc, split_dots(key), 0, key == "policy" ? policy_value(source, groups[g].lines[k], v) : v);
        run.params.emplace_back(key, flow(v));
      }
    YAML::Emitter e;
    e << doc;
    const std::string text = e.c_str();  // what the run id is computed from
    try {
      run.scenario = parse_scenario_node(doc, kRunSource, base_dir);
      if (base.profile_from) run.scenario.sim.profile_path = profile_path;
      // Lines of the run's own document mean nothing to a user: later errors
      // name the key, and the caller the sweep file and the run.
      run.scenario.source.clear();
      run.scenario.lines.clear();
    } catch (const Error& err) {
      std::string msg = err.what();
      // "\x1f:12: link.rtt_ms: ..." -> "link.rtt_ms: ..."
      if (msg.rfind(kRunSource, 0) == 0) {
        const size_t cut = msg.find(": ");
        msg = cut == std::string::npos ? msg.substr(1) : msg.substr(cut + 2);
      }
      size_t line = sweep_line;
      for (const auto& [key, key_line] : seen)
        if (msg.rfind(key + ":", 0) == 0 || msg.rfind(key + " ", 0) == 0) line = key_line;
      std::string params;
      for (const auto& [k, v] : run.params) params += (params.empty() ? "" : ", ") + k + "=" + v;
      throw Error(at_location(source, line, fmt::format("sweep run {} ({}): {}", index, params, msg)));
    }
    // The worker's copy: paths absolute, so that it runs from any folder
    // (`doc` is not needed after this).
    doc["profile"] = absolute(run.scenario.sim.profile_path);
    if (!run.scenario.trace_file.empty()) doc["link"]["trace"] = absolute(run.scenario.trace_file);
    // Files named by policy parameters (selective's profile): absolute for the
    // worker, and their content in the run id (nothing added for other runs).
    std::string param_files;
    const auto& params = run.scenario.sim.policy_params;
    for (const auto& spec : policies::policy_info(run.scenario.sim.policy).params) {
      const auto it = params.find(spec.name);
      if (!spec.file_path || it == params.end() || it->second.empty()) continue;
      doc["policy"]["params"][spec.name] = absolute(it->second);
      param_files += "\n" + hash_of(it->second);
    }
    YAML::Emitter we;
    we << doc;
    run.run_yaml = std::string(we.c_str()) + "\n";
    run.id = content_hash(text + "\n" + hash_of(run.scenario.sim.profile_path) + "\n" +
                          hash_of(run.scenario.trace_file) + param_files)
                 .substr(0, 12);
    all_ids += run.id;
    sw.runs.push_back(std::move(run));
  }
  sw.hash = content_hash(all_ids).substr(0, 12);
  return sw;
}

Sweep load_sweep(const std::string& path, const std::string& profile_path) {
  return parse_sweep(read_file(path), path, std::filesystem::path(path).parent_path().string(), profile_path);
}

}  // namespace kvs::scenarios
