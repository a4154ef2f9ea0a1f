#include "policies/selective.h"

#include <cmath>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvs::policies {

namespace {

using nlohmann::json;

// A number field of `obj` (at `where` in `path`) within [lo, hi].
double number_at(const std::string& path, const json& obj, const std::string& where, const char* key, double lo,
                 double hi) {
  if (!obj.is_object() || !obj.contains(key)) throw Error(fmt::format("{}: {}: missing '{}'", path, where, key));
  const json& v = obj[key];
  if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi))
    throw Error(fmt::format("{}: {}.{}: expected a number in [{:g}, {:g}], got {}", path, where, key, lo, hi, v.dump()));
  return v.get<double>();
}

// As number_at, and a whole number (a count of layers or tokens).
double integer_at(const std::string& path, const json& obj, const std::string& where, const char* key, double lo,
                  double hi) {
  const double v = number_at(path, obj, where, key, lo, hi);
  if (v != std::floor(v))
    throw Error(fmt::format("{}: {}.{}: expected a whole number, got {}", path, where, key, obj[key].dump()));
  return v;
}

// A string field of `obj` (at `where` in `path`); `fallback` when absent.
std::string string_at(const std::string& path, const json& obj, const std::string& where, const char* key,
                      const std::string& fallback) {
  if (!obj.is_object() || !obj.contains(key)) return fallback;
  if (!obj[key].is_string())
    throw Error(fmt::format("{}: {}.{}: expected a string, got {}", path, where, key, obj[key].dump()));
  return obj[key].get<std::string>();
}

// A boolean field of `obj` (at `where` in `path`); `fallback` when absent.
bool bool_at(const std::string& path, const json& obj, const std::string& where, const char* key, bool fallback) {
  if (!obj.is_object() || !obj.contains(key)) return fallback;
  if (!obj[key].is_boolean())
    throw Error(fmt::format("{}: {}.{}: expected true or false, got {}", path, where, key, obj[key].dump()));
  return obj[key].get<bool>();
}

class SelectivePolicy : public Policy {
 public:
  SelectivePolicy(int level, std::string profile, double budget, double alpha, double share, int full_front,
                  double partial_ratio, bool per_layer)
      : level_(level),
        profile_(std::move(profile)),
        budget_(budget),
        alpha_(alpha),
        share_(share),
        full_front_(full_front),
        partial_ratio_(partial_ratio),
        per_layer_(per_layer) {
    if (!profile_.empty()) read_selective_plan(profile_, budget_, alpha_, 1);  // fail early on a bad file or setting
  }

  std::string name() const override {
    const char* rt = per_layer_ ? "per-layer" : "up-front";
    if (profile_.empty())
      return fmt::format("selective(level={},share={:g},full_front_layers={},round_trips={})", level_, share_,
                         full_front_, rt);
    return fmt::format("selective(level={},budget={:g},alpha={:g},round_trips={})", level_, budget_, alpha_, rt);
  }

  Action decide(const StreamState& state) override {
    if (state.levels && uint32_t(level_) >= state.levels)
      throw Error(fmt::format("policy selective: level {} but the codec has {} levels", level_, state.levels));
    return {level_, fmt::format("selective: layer {}", state.next_chunk)};
  }

  Schedule schedule() const override { return Schedule::kSelectiveLayers; }

  SelectivePlan selective_plan(uint32_t layers) const override {
    SelectivePlan plan;
    if (!profile_.empty()) {
      plan = read_selective_plan(profile_, budget_, alpha_, layers);
    } else {
      plan.layer_share.assign(layers, share_);
      for (uint32_t l = 0; l < layers && l < uint32_t(full_front_); ++l) plan.layer_share[l] = 1;
      plan.partial_ratio = partial_ratio_;
      plan.source = fmt::format("share {:g} given (no selective profile: quality not measured)", share_);
    }
    plan.per_layer_round_trips = per_layer_;
    if (!per_layer_) {
      // The profile measured InfiniGen's layer-by-layer speculation, not this one.
      plan.kl_nats = plan.loss_increase = plan.greedy_agreement = plan.task_accuracy = -1;
      plan.source += "; up-front speculation: quality not measured";
    }
    return plan;
  }

 private:
  int level_;
  std::string profile_;
  double budget_, alpha_, share_;
  int full_front_;
  double partial_ratio_;
  bool per_layer_;
};

}  // namespace

SelectivePlan read_selective_plan(const std::string& path, double budget, double alpha, uint32_t layers) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open the selective profile (policy selective, parameter profile)", path));
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not JSON: {}", path, e.what()));
  }
  if (!doc.is_object() || string_at(path, doc, "(top)", "format", "") != "kvstream-selective")
    throw Error(fmt::format("{}: not a selective profile (format \"kvstream-selective\" expected)", path));
  if (number_at(path, doc, "(top)", "version", 0, 1e9) != 1)
    throw Error(fmt::format("{}: version: only version 1 is known", path));
  const json& model = doc.contains("model") ? doc["model"] : json();
  const auto profiled_layers = uint32_t(integer_at(path, model, "model", "layers", 1, 1e5));
  const json& options = doc.contains("options") ? doc["options"] : json();
  const auto full_front = uint32_t(options.contains("full_front_layers")
                                       ? integer_at(path, options, "options", "full_front_layers", 0, profiled_layers)
                                       : 2);
  const bool full_last = bool_at(path, options, "options", "full_last_layer", false);
  const uint32_t greedy_tokens =
      options.contains("greedy_tokens") ? uint32_t(integer_at(path, options, "options", "greedy_tokens", 0, 1e9)) : 0;
  const double ratio = options.contains("ratio") ? number_at(path, options, "options", "ratio", 1e-9, 1) : 0.2;
  const size_t contexts = doc.contains("contexts") && doc["contexts"].is_array() ? doc["contexts"].size() : 0;
  if (!doc.contains("settings") || !doc["settings"].is_array())
    throw Error(fmt::format("{}: settings: expected an array", path));

  std::string known;
  for (size_t i = 0; i < doc["settings"].size(); ++i) {
    const json& s = doc["settings"][i];
    const std::string where = fmt::format("settings[{}]", i);
    if (!s.is_object()) throw Error(fmt::format("{}: {}: expected an object, got {}", path, where, s.dump()));
    if (string_at(path, s, where, "method", "") != "infinigen") continue;
    const double b = number_at(path, s, where, "budget", 0, 1e12), a = number_at(path, s, where, "alpha", 0, 1e300);
    known += fmt::format("{}{:g}/{:g}", known.empty() ? "" : ", ", b, a);
    if (std::fabs(b - budget) > 1e-9 || std::fabs(a - alpha) > 1e-9) continue;
    if (!s.contains("fraction_fetched_per_layer") || !s["fraction_fetched_per_layer"].is_array() ||
        s["fraction_fetched_per_layer"].size() != profiled_layers)
      throw Error(fmt::format("{}: {}.fraction_fetched_per_layer: expected {} numbers (model.layers)", path, where,
                              profiled_layers));
    std::vector<double> f;
    for (const json& x : s["fraction_fetched_per_layer"]) {
      if (!x.is_number() || !(x.get<double>() >= 0 && x.get<double>() <= 1))
        throw Error(fmt::format("{}: {}.fraction_fetched_per_layer: expected fractions in [0, 1]", path, where));
      f.push_back(x.get<double>());
    }
    SelectivePlan plan;
    plan.partial_ratio = ratio;
    if (layers == profiled_layers) {
      plan.layer_share = f;
    } else {
      // The profile's layout on the target: its full layers, the mean
      // fraction of its speculated layers everywhere else.
      auto speculated = [&](uint32_t l, uint32_t n) { return l >= full_front && !(full_last && l + 1 == n); };
      double sum = 0;
      uint32_t n = 0;
      for (uint32_t l = 0; l < profiled_layers; ++l)
        if (speculated(l, profiled_layers)) sum += f[l], ++n;
      const double mean = n ? sum / n : 1.0;
      for (uint32_t l = 0; l < layers; ++l) plan.layer_share.push_back(speculated(l, layers) ? mean : 1.0);
    }
    plan.kl_nats = number_at(path, s, where, "kl_divergence", 0, 1e300);
    plan.loss_increase = number_at(path, s, where, "loss_increase", -1, 1e300);
    plan.greedy_agreement = number_at(path, s, where, "greedy_agreement", 0, 1);
    plan.task_accuracy = s.contains("task_accuracy") ? number_at(path, s, where, "task_accuracy", -1, 1) : -1;
    plan.greedy_tokens = greedy_tokens;
    plan.source = fmt::format("infinigen budget={:g} alpha={:g} of {} ({} contexts, {} layers profiled{})", b, a, path,
                              contexts, profiled_layers,
                              layers == profiled_layers ? "" : fmt::format(", mapped onto {} layers", layers));
    return plan;
  }
  throw Error(fmt::format("{}: no infinigen setting with budget {:g} and alpha {:g} (it has: {})", path, budget, alpha,
                          known.empty() ? "none" : known));
}

PolicyInfo selective_policy() {
  return {"selective",
          "InfiniGen over the network: partial keys first, then per layer only the speculated tokens' KV; the rest "
          "after the first token",
          {ParamSpec::integer("level", 0, "", "codec level of every fetched layer, 0 = finest", 0, 1000),
           ParamSpec::path("profile",
                           "selective profile (kvstream selective-profile) giving the shares and the quality; empty: "
                           "`share`, quality not measured"),
           ParamSpec::number("budget", 0.2, "", "the profile's infinigen setting: budget", 0, 1e12),
           ParamSpec::number("alpha", 5, "", "the profile's infinigen setting: alpha", 0, 1e300),
           ParamSpec::number("share", 0.2, "", "without a profile: share of a speculated layer's tokens fetched", 0, 1),
           ParamSpec::integer("full_front_layers", 2, "layers", "without a profile: layers fetched in full", 0, 100000),
           ParamSpec::number("partial_ratio", 0.2, "", "without a profile: partial key channels / head_dim", 0, 1),
           ParamSpec::choice("round_trips", "per-layer", {"per-layer", "up-front"},
                             "per-layer: layer l's request waits for layers < l-1 (InfiniGen); up-front: all at once")},
          false,
          [](const ParamValues& v) {
            return std::make_unique<SelectivePolicy>(v.integer("level"), v.text("profile"), v.number("budget"),
                                                     v.number("alpha"), v.number("share"),
                                                     v.integer("full_front_layers"), v.number("partial_ratio"),
                                                     v.text("round_trips") == "per-layer");
          }};
}

}  // namespace kvs::policies
