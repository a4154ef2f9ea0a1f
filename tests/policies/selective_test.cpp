// The selective profile reader (policies/selective.h, shared by the policy and
// `kvstream offload`): its fields, defaults and errors; the plan the
// `selective` policy makes of a setting (shares per layer, mapped onto a
// target's layers, the measured quality), its name and parameters.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <tuple>

#include <unistd.h>

#include "base/error.h"
#include "policies/selective.h"
#include "tests/policies/policy_test_util.h"

namespace kvs::policies {
namespace {

using testing::error_of;

namespace fs = std::filesystem;

// A selective profile of a 4-layer model, as `kvstream selective-profile` writes it (fields the policy reads).
std::string profile_text(bool full_last = false) {
  return std::string(R"({"format": "kvstream-selective", "version": 1,
 "model": {"name": "default", "layers": 4, "kv_heads": 2, "head_dim": 32},
 "options": {"ratio": 0.2, "full_front_layers": 2, "full_last_layer": )") +
         (full_last ? "true" : "false") + R"(, "greedy_tokens": 64},
 "contexts": [{"id": "a", "tokens": 2047}, {"id": "b", "tokens": 2047}],
 "settings": [
  {"method": "full", "fraction_fetched_per_layer": [1, 1, 1, 1], "kl_divergence": 0, "loss_increase": 0,
   "greedy_agreement": 1, "task_accuracy": 1},
  {"method": "infinigen", "budget": 0.1, "alpha": 4, "fraction_fetched_per_layer": [1, 1, 0.095, 0.093],
   "kl_divergence": 0.0378, "loss_increase": 0.0321, "greedy_agreement": 0.279, "task_accuracy": 0},
  {"method": "infinigen", "budget": 0.2, "alpha": 5, "fraction_fetched_per_layer": [1, 1, 0.171, 0.168],
   "recall": 0.86, "kl_divergence": 0.0128, "loss_increase": 0.0129, "greedy_agreement": 0.451, "task_accuracy": 0},
  {"method": "oracle", "budget": 0.2, "fraction_fetched_per_layer": [0.2, 0.2, 0.2, 0.2], "kl_divergence": 0.0001,
   "loss_increase": 0.0002, "greedy_agreement": 0.934, "task_accuracy": 1}]})";
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& name, const std::string& text)
      : path((fs::temp_directory_path() / ("kvs_selective_" + std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream(path) << text;
  }
  ~TempFile() { fs::remove(path); }
};

// The plan of one setting of the profile at `path` on a target with `layers` layers.
SelectivePlan plan_of(const std::string& path, double budget, double alpha, uint32_t layers) {
  const SelectiveProfile p = read_selective_profile(path);
  return selective_plan(p, find_selective_setting(p, budget, alpha), layers);
}

TEST(SelectiveProfileReader, ReadsTheInfinigenSettingsAndTheLayout) {
  TempFile f("a.json", profile_text());
  const SelectiveProfile p = read_selective_profile(f.path);
  EXPECT_EQ(p.path, f.path);
  EXPECT_EQ(p.model, "default");
  EXPECT_EQ(p.layers, 4u);
  EXPECT_EQ(p.full_front_layers, 2u);
  EXPECT_FALSE(p.full_last_layer);
  EXPECT_DOUBLE_EQ(p.ratio, 0.2);
  EXPECT_EQ(p.greedy_tokens, 64u);
  EXPECT_EQ(p.context_tokens, (std::vector<uint64_t>{2047, 2047}));
  ASSERT_EQ(p.settings.size(), 2u);  // the full and oracle baselines are not InfiniGen settings
  EXPECT_EQ(selective_settings_list(p), "0.1/4, 0.2/5");
  const SelectiveSetting& s = find_selective_setting(p, 0.2, 5);
  EXPECT_EQ(&s, &p.settings[1]);
  EXPECT_EQ(s.fraction_per_layer, (std::vector<double>{1, 1, 0.171, 0.168}));
  EXPECT_DOUBLE_EQ(s.fraction_fetched, 0.58475);  // absent: the mean over layers
  EXPECT_DOUBLE_EQ(s.recall, 0.86);
  EXPECT_EQ(p.settings[0].recall, -1);  // absent: not measured
  EXPECT_DOUBLE_EQ(s.kl_divergence, 0.0128);
  EXPECT_DOUBLE_EQ(s.loss_increase, 0.0129);
  EXPECT_DOUBLE_EQ(s.greedy_agreement, 0.451);
  EXPECT_EQ(s.task_accuracy, 0);
}

// partial_key_fraction as written; absent: partial_channels / (2 x head_dim)
// as the writer computes it (int(0.2 x 32) = 6 channels: 6 / 64, not 0.2 / 2),
// and ratio / 2 without partial_channels.
TEST(SelectiveProfileReader, AbsentPartialKeyFractionIsTheWritersChannelsOverTwoHeadDims) {
  const auto insert_after = [](std::string& text, const std::string& at, const std::string& what) {
    ASSERT_NE(text.find(at), std::string::npos) << at;
    text.insert(text.find(at) + at.size(), what);
  };
  std::string text = profile_text();
  insert_after(text, R"("budget": 0.2, "alpha": 5,)", R"( "partial_key_fraction": 0.125,)");
  TempFile f("pk1.json", text);
  const SelectiveProfile p = read_selective_profile(f.path);
  EXPECT_DOUBLE_EQ(p.settings[0].partial_key_fraction, 0.1);
  EXPECT_DOUBLE_EQ(p.settings[1].partial_key_fraction, 0.125);
  insert_after(text, R"("ratio": 0.2,)", R"( "partial_channels": 6,)");
  TempFile g("pk2.json", text);
  EXPECT_DOUBLE_EQ(read_selective_profile(g.path).settings[0].partial_key_fraction, 6.0 / 64);
}

TEST(SelectivePlan, TakesTheProfilesSettingAsItIsOnTheProfiledModel) {
  TempFile f("b.json", profile_text());
  const SelectivePlan p = plan_of(f.path, 0.2, 5, 4);
  EXPECT_EQ(p.layer_share, (std::vector<double>{1, 1, 0.171, 0.168}));
  EXPECT_DOUBLE_EQ(p.partial_ratio, 0.2);
  EXPECT_DOUBLE_EQ(p.kl_nats, 0.0128);
  EXPECT_DOUBLE_EQ(p.loss_increase, 0.0129);
  EXPECT_DOUBLE_EQ(p.greedy_agreement, 0.451);
  EXPECT_EQ(p.task_accuracy, 0);
  EXPECT_EQ(p.greedy_tokens, 64u);
  EXPECT_NE(p.source.find("budget=0.2 alpha=5"), std::string::npos) << p.source;
  EXPECT_NE(p.source.find("2 contexts"), std::string::npos) << p.source;
  // Another setting of the same file.
  EXPECT_DOUBLE_EQ(plan_of(f.path, 0.1, 4, 4).layer_share[2], 0.095);
}

TEST(SelectivePlan, MapsTheLayoutOntoATargetWithOtherLayers) {
  TempFile f("c.json", profile_text());
  const SelectivePlan p = plan_of(f.path, 0.2, 5, 32);
  ASSERT_EQ(p.layer_share.size(), 32u);
  EXPECT_EQ(p.layer_share[0], 1);
  EXPECT_EQ(p.layer_share[1], 1);
  for (size_t l = 2; l < 32; ++l) EXPECT_NEAR(p.layer_share[l], (0.171 + 0.168) / 2, 1e-12) << l;
  EXPECT_NE(p.source.find("mapped onto 32 layers"), std::string::npos) << p.source;
  // A profile that loaded its last layer in full: the target's last layer too,
  // and the mean over the speculated layers only (layer 2).
  TempFile g("d.json", profile_text(true));
  const SelectiveProfile q = read_selective_profile(g.path);
  const std::vector<double> f8 = target_layer_fractions(q, q.settings[1], 8);
  EXPECT_EQ(f8, (std::vector<double>{1, 1, 0.171, 0.171, 0.171, 0.171, 0.171, 1}));
  EXPECT_EQ(target_layer_fractions(q, q.settings[1], 4), q.settings[1].fraction_per_layer);
}

TEST(SelectiveProfileReader, ErrorsNameTheFileAndWhatIsWrong) {
  TempFile f("e.json", profile_text());
  const std::string unknown = error_of([&] { plan_of(f.path, 0.3, 5, 4); });
  EXPECT_NE(unknown.find(f.path + ": no infinigen setting with budget 0.3 and alpha 5 (it has: 0.1/4, 0.2/5)"),
            std::string::npos)
      << unknown;
  EXPECT_NE(error_of([] { read_selective_profile("/nonexistent/sel.json"); }).find("/nonexistent/sel.json: cannot open"),
            std::string::npos);
  TempFile bad("f.json", "{not json");
  EXPECT_NE(error_of([&] { read_selective_profile(bad.path); }).find(bad.path + ": not JSON"), std::string::npos);
  TempFile other("g.json", R"({"format": "kvstream-profile", "version": 1})");
  const std::string not_selective = error_of([&] { read_selective_profile(other.path); });
  EXPECT_NE(not_selective.find(other.path + ": (top).format: not a selective profile"), std::string::npos)
      << not_selective;
  std::string none = profile_text();
  for (size_t at; (at = none.find("\"infinigen\"")) != std::string::npos;) none.replace(at, 11, "\"h2o\"");
  TempFile n("h.json", none);
  EXPECT_NE(error_of([&] { read_selective_profile(n.path); }).find(n.path + ": (top).settings: no `infinigen` setting"),
            std::string::npos);
}

// Fields missing, of the wrong type or out of range, fractional counts: a
// kvs::Error naming the file and the field (not a JSON library exception,
// not a silently truncated count).
TEST(SelectiveProfileReader, RejectsBadFieldsNamingTheFileAndField) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {R"("format": "kvstream-selective")", R"("format": 5)", "(top).format"},
      {R"("version": 1)", R"("version": 2)", "(top).version: only version 1"},
      {R"({"method": "infinigen", "budget": 0.2)", R"({"method": 7, "budget": 0.2)", "settings[2].method"},
      {R"({"method": "infinigen", "budget": 0.2)", R"({"budget": 0.2)", "settings[2]: missing field 'method'"},
      {R"("budget": 0.2, "alpha": 5)", R"("budget": 2, "alpha": 5)", "settings[2].budget: expected a number in [0, 1]"},
      {R"("full_last_layer": false)", R"("full_last_layer": "no")", "options.full_last_layer"},
      {R"("layers": 4)", R"("layers": 4.5)", "model.layers: expected a whole number"},
      {R"("full_front_layers": 2)", R"("full_front_layers": 1.5)", "options.full_front_layers: expected a whole number"},
      {R"("full_front_layers": 2)", R"("full_front_layers": 5)", "options.full_front_layers: expected a number in [0, 4]"},
      {R"("greedy_tokens": 64)", R"("greedy_tokens": 6.4)", "options.greedy_tokens: expected a whole number"},
      {R"("tokens": 2047}])", R"("tokens": 0}])", "contexts[1].tokens"},
      {R"("contexts": [)", R"("contexts": 3, "x": [)", "(top).contexts: expected an array"},
      {R"({"method": "full")", R"(3, {"method": "full")", "settings[0]: expected an object"},
      {"[1, 1, 0.171, 0.168]", "[1, 1, 0.5]", "settings[2].fraction_fetched_per_layer: expected 4 numbers"},
      {"[1, 1, 0.171, 0.168]", "[1, 1, 0.5, 2]", "settings[2].fraction_fetched_per_layer[3]: expected a number in [0, 1]"},
      {R"("kl_divergence": 0.0128, )", "", "settings[2]: missing field 'kl_divergence'"},
      {R"("greedy_agreement": 0.451)", R"("greedy_agreement": 1.5)", "settings[2].greedy_agreement"},
      {R"("recall": 0.86)", R"("recall": "high")", "settings[2].recall"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [from, to, needle] = cases[i];
    std::string text = profile_text();
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    TempFile f("corrupt" + std::to_string(i) + ".json", text);
    std::string message;
    try {
      read_selective_profile(f.path);
      ADD_FAILURE() << to << ": no error";
    } catch (const Error& e) {
      message = e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << to << ": not a kvs::Error: " << e.what();
      continue;
    }
    EXPECT_NE(message.find(f.path + ": "), std::string::npos) << to << ": " << message;
    EXPECT_NE(message.find(needle), std::string::npos) << to << ": " << message;
  }
}

// model.layer_windows (docs/selective-format.md): each layer's sliding
// window, 0 = full attention; absent (older profiles) = all full.
std::string windowed_profile_text(const std::string& windows) {
  std::string text = profile_text();
  const std::string at = R"("head_dim": 32)";
  text.insert(text.find(at) + at.size(), R"(, "layer_windows": )" + windows);
  return text;
}

TEST(SelectiveProfileReader, ReadsTheLayerWindows) {
  TempFile f("w1.json", windowed_profile_text("[0, 0, 4096, 8]"));
  const SelectiveProfile p = read_selective_profile(f.path);
  EXPECT_EQ(p.layer_windows, (std::vector<uint64_t>{0, 0, 4096, 8}));
  EXPECT_EQ(target_layer_windows(p, 4), (std::vector<uint64_t>{0, 0, 4096, 8}));
  // Mixed windows cannot be placed on another layer count.
  const std::string mixed = error_of([&] { target_layer_windows(p, 32); });
  EXPECT_NE(mixed.find(f.path + ": model.layer_windows"), std::string::npos) << mixed;
  // One window on every layer (mistral) carries over to any layer count.
  TempFile g("w2.json", windowed_profile_text("[16, 16, 16, 16]"));
  EXPECT_EQ(target_layer_windows(read_selective_profile(g.path), 6), std::vector<uint64_t>(6, 16));
  // Absent: every layer full attention.
  TempFile h("w3.json", profile_text());
  const SelectiveProfile q = read_selective_profile(h.path);
  EXPECT_EQ(q.layer_windows, std::vector<uint64_t>(4, 0));
  EXPECT_EQ(target_layer_windows(q, 32), std::vector<uint64_t>(32, 0));
}

TEST(SelectiveProfileReader, RejectsBadLayerWindowsNamingTheFileAndField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[0, 0, 8]", "model.layer_windows: expected 4 whole numbers"},
      {"[0, 0, 8, 8, 8]", "model.layer_windows: expected 4 whole numbers"},
      {"8", "model.layer_windows: expected 4 whole numbers"},
      {"[0, 0, -8, 8]", "model.layer_windows[2]: expected a whole number >= 0"},
      {"[0, 0, 8, 7.5]", "model.layer_windows[3]: expected a whole number >= 0"},
      {R"([0, "8", 8, 8])", "model.layer_windows[1]: expected a whole number >= 0"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [windows, needle] = cases[i];
    TempFile f("badwin" + std::to_string(i) + ".json", windowed_profile_text(windows));
    const std::string message = error_of([&] { read_selective_profile(f.path); });
    EXPECT_NE(message.find(f.path + ": " + needle), std::string::npos) << windows << ": " << message;
  }
}

TEST(SelectivePolicy, NamesWhatItDoesAndFetchesItsLevelPerLayer) {
  TempFile f("h.json", profile_text());
  auto p = make_policy("selective", {{"profile", f.path}, {"level", "2"}});
  EXPECT_EQ(p->name(), "selective(level=2,budget=0.2,alpha=5,round_trips=per-layer)");
  EXPECT_EQ(p->schedule(), Schedule::kSelectiveLayers);
  StreamState s;
  s.levels = 4;
  s.next_chunk = 3;
  const Action a = p->decide(s);
  EXPECT_EQ(a.level, 2);
  EXPECT_NE(a.reason.find("layer 3"), std::string::npos);
  s.levels = 2;
  EXPECT_THROW(p->decide(s), Error);
  const SelectivePlan plan = p->selective_plan(4);
  EXPECT_TRUE(plan.per_layer_round_trips);
  EXPECT_DOUBLE_EQ(plan.greedy_agreement, 0.451);
}

TEST(SelectivePolicy, UpFrontSpeculationHasNoMeasuredQuality) {
  TempFile f("i.json", profile_text());
  auto p = make_policy("selective", {{"profile", f.path}, {"round_trips", "up-front"}});
  EXPECT_NE(p->name().find("round_trips=up-front"), std::string::npos);
  const SelectivePlan plan = p->selective_plan(4);
  EXPECT_FALSE(plan.per_layer_round_trips);
  EXPECT_EQ(plan.kl_nats, -1);
  EXPECT_EQ(plan.greedy_agreement, -1);
  EXPECT_NE(plan.source.find("not measured"), std::string::npos);
  EXPECT_DOUBLE_EQ(plan.layer_share[2], 0.171);  // the same fetch, only the quality is unknown
}

TEST(SelectivePolicy, WithoutAProfileTakesTheShareAndSaysTheQualityIsUnknown) {
  auto p = make_policy("selective", {{"share", "0.3"}, {"full_front_layers", "3"}, {"partial_ratio", "0.25"}});
  EXPECT_EQ(p->name(), "selective(level=0,share=0.3,full_front_layers=3,round_trips=per-layer)");
  const SelectivePlan plan = p->selective_plan(6);
  EXPECT_EQ(plan.layer_share, (std::vector<double>{1, 1, 1, 0.3, 0.3, 0.3}));
  EXPECT_DOUBLE_EQ(plan.partial_ratio, 0.25);
  EXPECT_EQ(plan.kl_nats, -1);
  EXPECT_NE(plan.source.find("quality not measured"), std::string::npos);
}

TEST(SelectivePolicy, ABadProfileFailsWhenThePolicyIsMade) {
  EXPECT_NE(error_of([] { make_policy("selective", {{"profile", "/nonexistent/sel.json"}}); })
                .find("/nonexistent/sel.json: cannot open the selective profile (policy selective, parameter profile)"),
            std::string::npos);
  TempFile f("j.json", profile_text());
  EXPECT_THROW(make_policy("selective", {{"profile", f.path}, {"budget", "0.4"}}), Error);
  EXPECT_THROW(make_policy("selective", {{"round_trips", "sometimes"}}), Error);
}

}  // namespace
}  // namespace kvs::policies
