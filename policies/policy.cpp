#include "policies/policy.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "base/error.h"
#include "policies/basic.h"
#include "policies/hybrid.h"
#include "policies/cachegen.h"
#include "policies/rate.h"
#include "policies/oracle.h"
#include "policies/mpc.h"
#include "policies/bola.h"
#include "policies/selective.h"

namespace kvs::policies {

namespace {

// The registry: one line per policy.
std::vector<PolicyInfo> registry() {
  return {
      fixed_policy(),
      hybrid_policy(),
      recompute_policy(),
      cachegen_code_policy(),
      cachegen_policy(),
      rate_policy(),
      oracle_policy(),
      mpc_policy(),
      robust_mpc_policy(),
      bola_policy(),
      selective_policy(),
  };
}

const char* type_name(ParamSpec::Type t) {
  switch (t) {
    case ParamSpec::Type::kInt: return "integer";
    case ParamSpec::Type::kNumber: return "number";
    case ParamSpec::Type::kBool: return "bool";
    case ParamSpec::Type::kChoice: return "choice";
    case ParamSpec::Type::kText: return "text";
  }
  return "?";
}

std::string range_text(const ParamSpec& p) {
  if (p.type == ParamSpec::Type::kChoice) return fmt::format("one of {}", fmt::join(p.choices, ", "));
  if (p.type == ParamSpec::Type::kBool) return "true or false";
  if (p.type == ParamSpec::Type::kText) return p.file_path ? "a file (relative to the scenario)" : "any text";
  const bool lo = p.min > -1e299, hi = p.max < 1e299;
  const char* what = p.type == ParamSpec::Type::kInt ? "an integer" : "a number";
  if (lo && hi) return fmt::format("{} in [{}, {}]", what, p.min, p.max);
  if (lo) return fmt::format("{} >= {}", what, p.min);
  if (hi) return fmt::format("{} <= {}", what, p.max);
  return what;
}

// Checks one value; returns its canonical text or throws.
std::string check_value(const std::string& policy, const ParamSpec& p, const std::string& v) {
  auto bad = [&] {
    return Error(fmt::format("policy {}: parameter {}: expected {}, got '{}'", policy, p.name, range_text(p), v));
  };
  switch (p.type) {
    case ParamSpec::Type::kInt: {
      long long x = 0;
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
      if (ec != std::errc() || ptr != v.data() + v.size() || double(x) < p.min || double(x) > p.max) throw bad();
      return std::to_string(x);
    }
    case ParamSpec::Type::kNumber: {
      char* end = nullptr;
      const double x = v.empty() ? NAN : std::strtod(v.c_str(), &end);
      if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(x) || x < p.min || x > p.max) throw bad();
      return v;
    }
    case ParamSpec::Type::kBool:
      if (v == "true" || v == "1" || v == "yes") return "true";
      if (v == "false" || v == "0" || v == "no") return "false";
      throw bad();
    case ParamSpec::Type::kChoice:
      if (std::find(p.choices.begin(), p.choices.end(), v) == p.choices.end()) throw bad();
      return v;
    case ParamSpec::Type::kText:
      return v;
  }
  throw bad();
}

}  // namespace

ParamSpec ParamSpec::integer(std::string name, long long dflt, std::string unit, std::string help, double min,
                             double max) {
  ParamSpec p;
  p.name = std::move(name), p.type = Type::kInt, p.default_value = std::to_string(dflt);
  p.unit = std::move(unit), p.help = std::move(help), p.min = min, p.max = max;
  return p;
}

ParamSpec ParamSpec::number(std::string name, double dflt, std::string unit, std::string help, double min,
                            double max) {
  ParamSpec p;
  p.name = std::move(name), p.type = Type::kNumber, p.default_value = fmt::format("{}", dflt);
  p.unit = std::move(unit), p.help = std::move(help), p.min = min, p.max = max;
  return p;
}

ParamSpec ParamSpec::boolean(std::string name, bool dflt, std::string help) {
  ParamSpec p;
  p.name = std::move(name), p.type = Type::kBool, p.default_value = dflt ? "true" : "false";
  p.help = std::move(help);
  return p;
}

ParamSpec ParamSpec::choice(std::string name, std::string dflt, std::vector<std::string> choices, std::string help) {
  ParamSpec p;
  p.name = std::move(name), p.type = Type::kChoice, p.default_value = std::move(dflt);
  p.choices = std::move(choices), p.help = std::move(help);
  return p;
}

ParamSpec ParamSpec::text(std::string name, std::string dflt, std::string help) {
  ParamSpec p;
  p.name = std::move(name), p.type = Type::kText, p.default_value = std::move(dflt);
  p.help = std::move(help);
  return p;
}

ParamSpec ParamSpec::path(std::string name, std::string help) {
  ParamSpec p = text(std::move(name), "", std::move(help));
  p.file_path = true;
  return p;
}

ParamValues parse_params(const std::string& policy, const std::vector<ParamSpec>& specs, const PolicyParams& given) {
  std::vector<std::string> names;
  for (const auto& p : specs) names.push_back(p.name);
  for (const auto& [key, value] : given)
    if (std::find(names.begin(), names.end(), key) == names.end())
      throw Error(fmt::format("policy {}: unknown parameter '{}'{} (its parameters: {})", policy, key,
                              did_you_mean(key, names), names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "))));
  ParamValues out;
  for (const auto& p : specs) {
    auto it = given.find(p.name);
    out.values_[p.name] = check_value(policy, p, it == given.end() ? p.default_value : it->second);
  }
  return out;
}

double ParamValues::number(const std::string& name) const { return std::strtod(text(name).c_str(), nullptr); }
int ParamValues::integer(const std::string& name) const { return std::atoi(text(name).c_str()); }
bool ParamValues::flag(const std::string& name) const { return text(name) == "true"; }
const std::string& ParamValues::text(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::logic_error("policy parameter '" + name + "' was not declared");
  return it->second;
}

const std::vector<PolicyInfo>& policy_infos() {
  static const std::vector<PolicyInfo> kInfos = [] {
    auto v = registry();
    std::sort(v.begin(), v.end(), [](const PolicyInfo& a, const PolicyInfo& b) { return a.name < b.name; });
    return v;
  }();
  return kInfos;
}

const char* quality_measure_name(QualityMeasure m) {
  return m == QualityMeasure::kKl ? "kl" : "loss_increase";
}

std::vector<std::string> policy_names() {
  std::vector<std::string> names;
  for (const auto& info : policy_infos()) names.push_back(info.name);
  return names;
}

const PolicyInfo& policy_info(const std::string& name) {
  for (const auto& info : policy_infos())
    if (info.name == name) return info;
  throw Error(fmt::format("unknown policy '{}'{} (known: {})", name, did_you_mean(name, policy_names()),
                          fmt::join(policy_names(), ", ")));
}

std::unique_ptr<Policy> make_policy(const std::string& name, const PolicyParams& params) {
  const PolicyInfo& info = policy_info(name);
  return info.make(parse_params(name, info.params, params));
}

std::string describe_policies() {
  std::string out;
  for (const auto& info : policy_infos()) {
    out += fmt::format("{}{}\n  {}\n", info.name, info.reads_future ? "  [reads the future of the trace]" : "",
                       info.summary);
    for (const auto& p : info.params)
      out += fmt::format("  {:<20} {:<8} default {:<10} {:<9} {} ({})\n", p.name, type_name(p.type),
                         p.default_value, p.unit.empty() ? "-" : p.unit, p.help, range_text(p));
    out += "\n";
  }
  return out;
}

}  // namespace kvs::policies
