#include "policies/selective.h"

#include <cmath>
#include <fstream>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvs::policies {

namespace {

using nlohmann::json;

// Field access with errors naming the file and the place in it ("{path}:
// settings[2].budget: ...").
class FieldReader {
 public:
  explicit FieldReader(const std::string& path) : path_(path) {}
  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Error(fmt::format("{}: {}: {}", path_, where, what));
  }
  bool has(const json& obj, const char* key) const { return obj.is_object() && obj.contains(key); }
  const json& field(const json& obj, const std::string& where, const char* key) const {
    if (!obj.is_object()) fail(where, fmt::format("expected an object, got {}", obj.dump()));
    if (!obj.contains(key)) fail(where, fmt::format("missing field '{}'", key));
    return obj[key];
  }
  // A number in [lo, hi].
  double number(const json& obj, const std::string& where, const char* key, double lo, double hi) const {
    const json& v = field(obj, where, key);
    if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi))
      fail(where + "." + key, fmt::format("expected a number in [{:g}, {:g}], got {}", lo, hi, v.dump()));
    return v.get<double>();
  }
  double number_or(const json& obj, const std::string& where, const char* key, double fallback, double lo,
                   double hi) const {
    return has(obj, key) ? number(obj, where, key, lo, hi) : fallback;
  }
  // A count (layers, tokens): a whole number in [lo, hi]; `fallback` when absent.
  uint64_t count(const json& obj, const std::string& where, const char* key, double lo, double hi,
                 std::optional<uint64_t> fallback = std::nullopt) const {
    if (fallback && !has(obj, key)) return *fallback;
    const double v = number(obj, where, key, lo, hi);
    if (v != std::floor(v)) fail(where + "." + key, fmt::format("expected a whole number, got {}", obj[key].dump()));
    return uint64_t(v);
  }
  std::string text(const json& obj, const std::string& where, const char* key) const {
    const json& v = field(obj, where, key);
    if (!v.is_string()) fail(where + "." + key, fmt::format("expected a string, got {}", v.dump()));
    return v.get<std::string>();
  }
  bool flag_or(const json& obj, const std::string& where, const char* key, bool fallback) const {
    if (!has(obj, key)) return fallback;
    if (!obj[key].is_boolean()) fail(where + "." + key, fmt::format("expected true or false, got {}", obj[key].dump()));
    return obj[key].get<bool>();
  }

 private:
  const std::string& path_;
};

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
    if (!profile_.empty()) {  // read once; a bad file or setting fails here, before any run
      try {
        profile_read_ = read_selective_profile(profile_);
        setting_ = &find_selective_setting(profile_read_, budget_, alpha_);
      } catch (const Error& e) {
        throw Error(fmt::format("{} (policy selective, parameter profile)", e.what()));
      }
    }
  }
  // setting_ points into profile_read_: copies would dangle.
  SelectivePolicy(const SelectivePolicy&) = delete;
  SelectivePolicy& operator=(const SelectivePolicy&) = delete;

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
      plan = policies::selective_plan(profile_read_, *setting_, layers);
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
  SelectiveProfile profile_read_;
  const SelectiveSetting* setting_ = nullptr;
};

}  // namespace

SelectiveProfile read_selective_profile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open the selective profile", path));
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not JSON: {}", path, e.what()));
  }
  const FieldReader r(path);
  if (!doc.is_object()) r.fail("(top)", "not a selective profile: expected a JSON object");
  const json format = doc.contains("format") ? doc["format"] : json("nothing");
  if (format != "kvstream-selective")
    r.fail("(top).format", fmt::format("not a selective profile: expected \"kvstream-selective\", got {}", format.dump()));
  if (r.number(doc, "(top)", "version", 0, 1e9) != 1) r.fail("(top).version", "only version 1 is known");

  SelectiveProfile p;
  p.path = path;
  const json& model = r.field(doc, "(top)", "model");
  if (r.has(model, "name")) p.model = r.text(model, "model", "name");
  p.layers = uint32_t(r.count(model, "model", "layers", 1, 1e5));
  p.layer_windows.assign(p.layers, 0);
  if (r.has(model, "layer_windows")) {
    const json& w = model["layer_windows"];
    if (!w.is_array() || w.size() != p.layers)
      r.fail("model.layer_windows", fmt::format("expected {} whole numbers >= 0 (model.layers), got {}", p.layers,
                                                w.dump()));
    for (size_t l = 0; l < w.size(); ++l) {
      const json& x = w[l];
      if (!x.is_number() || !(x.get<double>() >= 0 && x.get<double>() <= 1e12) ||
          x.get<double>() != std::floor(x.get<double>()))
        r.fail(fmt::format("model.layer_windows[{}]", l),
               fmt::format("expected a whole number >= 0 (0: full attention), got {}", x.dump()));
      p.layer_windows[l] = uint64_t(x.get<double>());
    }
  }
  // options: absent fields (or an absent object) take the writer's defaults.
  const json options = doc.contains("options") ? doc["options"] : json::object();
  if (!options.is_object()) r.fail("options", fmt::format("expected an object, got {}", options.dump()));
  p.full_front_layers = uint32_t(r.count(options, "options", "full_front_layers", 0, p.layers, 2));
  p.full_last_layer = r.flag_or(options, "options", "full_last_layer", false);
  p.greedy_tokens = uint32_t(r.count(options, "options", "greedy_tokens", 0, 1e9, 0));
  p.ratio = r.number_or(options, "options", "ratio", 0.2, 0, 1);
  double partial_fallback = p.ratio / 2;
  if (r.has(options, "partial_channels") && r.has(model, "head_dim")) {
    const double head_dim = double(r.count(model, "model", "head_dim", 1, 1e6));
    partial_fallback = double(r.count(options, "options", "partial_channels", 0, head_dim)) / (2 * head_dim);
  }
  const json& contexts = r.field(doc, "(top)", "contexts");
  if (!contexts.is_array()) r.fail("(top).contexts", fmt::format("expected an array, got {}", contexts.dump()));
  for (size_t i = 0; i < contexts.size(); ++i)
    p.context_tokens.push_back(r.count(contexts[i], fmt::format("contexts[{}]", i), "tokens", 1, 1e12));

  const json& settings = r.field(doc, "(top)", "settings");
  if (!settings.is_array()) r.fail("(top).settings", fmt::format("expected an array, got {}", settings.dump()));
  for (size_t i = 0; i < settings.size(); ++i) {
    const json& s = settings[i];
    const std::string where = fmt::format("settings[{}]", i);
    if (r.text(s, where, "method") != "infinigen") continue;
    SelectiveSetting x;
    x.budget = r.number(s, where, "budget", 0, 1);
    x.alpha = r.number(s, where, "alpha", 0, 1e300);
    const json& per_layer = r.field(s, where, "fraction_fetched_per_layer");
    if (!per_layer.is_array() || per_layer.size() != p.layers)
      r.fail(where + ".fraction_fetched_per_layer", fmt::format("expected {} numbers (model.layers)", p.layers));
    double sum = 0;
    for (size_t l = 0; l < per_layer.size(); ++l) {
      const json& f = per_layer[l];
      if (!f.is_number() || !(f.get<double>() >= 0 && f.get<double>() <= 1))
        r.fail(fmt::format("{}.fraction_fetched_per_layer[{}]", where, l),
               fmt::format("expected a number in [0, 1], got {}", f.dump()));
      x.fraction_per_layer.push_back(f.get<double>());
      sum += f.get<double>();
    }
    x.fraction_fetched = r.number_or(s, where, "fraction_fetched", sum / p.layers, 0, 1);
    x.partial_key_fraction = r.number_or(s, where, "partial_key_fraction", partial_fallback, 0, 1);
    x.recall = r.number_or(s, where, "recall", -1, 0, 1);
    x.kl_divergence = r.number(s, where, "kl_divergence", -1e-6, 1e300);  // rounding may leave -1e-9
    x.loss_increase = r.number(s, where, "loss_increase", -1, 1e300);
    x.greedy_agreement = r.number(s, where, "greedy_agreement", 0, 1);
    x.task_accuracy = r.number_or(s, where, "task_accuracy", -1, -1, 1);
    p.settings.push_back(std::move(x));
  }
  if (p.settings.empty()) r.fail("(top).settings", "no `infinigen` setting");
  return p;
}

std::string selective_settings_list(const SelectiveProfile& profile) {
  std::string known;
  for (const auto& s : profile.settings) known += fmt::format("{}{:g}/{:g}", known.empty() ? "" : ", ", s.budget, s.alpha);
  return known;
}

const SelectiveSetting& find_selective_setting(const SelectiveProfile& profile, double budget, double alpha) {
  for (const auto& s : profile.settings)
    if (std::fabs(s.budget - budget) <= 1e-9 && std::fabs(s.alpha - alpha) <= 1e-9) return s;
  throw Error(fmt::format("{}: no infinigen setting with budget {:g} and alpha {:g} (it has: {})", profile.path,
                          budget, alpha, selective_settings_list(profile)));
}

std::vector<double> target_layer_fractions(const SelectiveProfile& profile, const SelectiveSetting& setting,
                                           uint32_t target_layers) {
  if (target_layers == profile.layers) return setting.fraction_per_layer;
  const auto speculated = [&](uint32_t l, uint32_t n) {
    return l >= profile.full_front_layers && !(profile.full_last_layer && l + 1 == n);
  };
  double sum = 0;
  uint32_t n = 0;
  for (uint32_t l = 0; l < profile.layers; ++l)
    if (speculated(l, profile.layers)) sum += setting.fraction_per_layer[l], ++n;
  const double mean = n ? sum / n : 1.0;
  std::vector<double> f(target_layers, 1.0);
  for (uint32_t l = 0; l < target_layers; ++l)
    if (speculated(l, target_layers)) f[l] = mean;
  return f;
}

std::vector<uint64_t> target_layer_windows(const SelectiveProfile& profile, uint32_t target_layers) {
  std::vector<uint64_t> w = profile.layer_windows;
  if (w.empty()) w.assign(profile.layers, 0);
  if (target_layers == w.size()) return w;
  for (uint64_t x : w)
    if (x != w[0])
      throw Error(fmt::format("{}: model.layer_windows: the {} profiled layers have different sliding windows, which "
                              "cannot be placed on a {}-layer target",
                              profile.path, w.size(), target_layers));
  return std::vector<uint64_t>(target_layers, w.empty() ? 0 : w[0]);
}

SelectivePlan selective_plan(const SelectiveProfile& profile, const SelectiveSetting& setting, uint32_t layers) {
  SelectivePlan plan;
  plan.layer_share = target_layer_fractions(profile, setting, layers);
  plan.layer_window = target_layer_windows(profile, layers);
  plan.partial_ratio = profile.ratio;
  plan.kl_nats = setting.kl_divergence;
  plan.loss_increase = setting.loss_increase;
  plan.greedy_agreement = setting.greedy_agreement;
  plan.task_accuracy = setting.task_accuracy;
  plan.greedy_tokens = profile.greedy_tokens;
  plan.source = fmt::format("infinigen budget={:g} alpha={:g} of {} ({} contexts, {} layers profiled{})",
                            setting.budget, setting.alpha, profile.path, profile.context_tokens.size(), profile.layers,
                            layers == profile.layers ? "" : fmt::format(", mapped onto {} layers", layers));
  return plan;
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
