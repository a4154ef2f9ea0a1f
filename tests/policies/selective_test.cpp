// The `selective` policy: the plan it reads from a selective profile (shares
// per layer, mapped onto a target's layers, the measured quality), its name
// and parameters, and its errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

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
   "kl_divergence": 0.0128, "loss_increase": 0.0129, "greedy_agreement": 0.451, "task_accuracy": 0},
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

TEST(SelectivePlan, TakesTheProfilesSettingAsItIsOnTheProfiledModel) {
  TempFile f("a.json", profile_text());
  const SelectivePlan p = read_selective_plan(f.path, 0.2, 5, 4);
  ASSERT_EQ(p.layer_share.size(), 4u);
  EXPECT_EQ(p.layer_share[0], 1);
  EXPECT_EQ(p.layer_share[1], 1);
  EXPECT_DOUBLE_EQ(p.layer_share[2], 0.171);
  EXPECT_DOUBLE_EQ(p.layer_share[3], 0.168);
  EXPECT_DOUBLE_EQ(p.partial_ratio, 0.2);
  EXPECT_DOUBLE_EQ(p.kl_nats, 0.0128);
  EXPECT_DOUBLE_EQ(p.loss_increase, 0.0129);
  EXPECT_DOUBLE_EQ(p.greedy_agreement, 0.451);
  EXPECT_EQ(p.task_accuracy, 0);
  EXPECT_EQ(p.greedy_tokens, 64u);
  EXPECT_NE(p.source.find("budget=0.2 alpha=5"), std::string::npos) << p.source;
  EXPECT_NE(p.source.find("2 contexts"), std::string::npos) << p.source;
  // Another setting of the same file.
  EXPECT_DOUBLE_EQ(read_selective_plan(f.path, 0.1, 4, 4).layer_share[2], 0.095);
}

TEST(SelectivePlan, MapsTheLayoutOntoATargetWithOtherLayers) {
  TempFile f("b.json", profile_text());
  const SelectivePlan p = read_selective_plan(f.path, 0.2, 5, 32);
  ASSERT_EQ(p.layer_share.size(), 32u);
  EXPECT_EQ(p.layer_share[0], 1);
  EXPECT_EQ(p.layer_share[1], 1);
  for (size_t l = 2; l < 32; ++l) EXPECT_NEAR(p.layer_share[l], (0.171 + 0.168) / 2, 1e-12) << l;
  EXPECT_NE(p.source.find("mapped onto 32 layers"), std::string::npos) << p.source;
  // A profile that loaded its last layer in full: the target's last layer too,
  // and the mean over the speculated layers only (layer 2).
  TempFile g("c.json", profile_text(true));
  const SelectivePlan q = read_selective_plan(g.path, 0.2, 5, 8);
  EXPECT_EQ(q.layer_share[7], 1);
  EXPECT_NEAR(q.layer_share[3], 0.171, 1e-12);
}

TEST(SelectivePlan, ErrorsNameTheFileAndWhatIsWrong) {
  TempFile f("d.json", profile_text());
  const std::string unknown = error_of([&] { read_selective_plan(f.path, 0.3, 5, 4); });
  EXPECT_NE(unknown.find("no infinigen setting with budget 0.3 and alpha 5 (it has: 0.1/4, 0.2/5)"), std::string::npos)
      << unknown;
  EXPECT_NE(error_of([] { read_selective_plan("/nonexistent/sel.json", 0.2, 5, 4); }).find("/nonexistent/sel.json"),
            std::string::npos);
  TempFile bad("e.json", "{not json");
  EXPECT_NE(error_of([&] { read_selective_plan(bad.path, 0.2, 5, 4); }).find("not JSON"), std::string::npos);
  TempFile other("f.json", R"({"format": "kvstream-profile", "version": 1})");
  EXPECT_NE(error_of([&] { read_selective_plan(other.path, 0.2, 5, 4); }).find("not a selective profile"),
            std::string::npos);
  std::string wrong = profile_text();
  wrong.replace(wrong.find("[1, 1, 0.171, 0.168]"), 20, "[1, 1, 1.5, 0.168]");
  TempFile w("g.json", wrong);
  const std::string range = error_of([&] { read_selective_plan(w.path, 0.2, 5, 4); });
  EXPECT_NE(range.find("settings[2].fraction_fetched_per_layer"), std::string::npos) << range;
}

// Fields of the wrong type or fractional counts: a kvs::Error naming the file
// and the field (not a JSON library exception, not a silently truncated count).
TEST(SelectivePlan, RejectsWrongTypesAndFractionalCounts) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("format": "kvstream-selective")", R"("format": 5)"},
      {R"({"method": "infinigen", "budget": 0.2)", R"({"method": 7, "budget": 0.2)"},
      {R"("full_last_layer": false)", R"("full_last_layer": "no")"},
      {R"("layers": 4)", R"("layers": 4.5)"},
      {R"("full_front_layers": 2)", R"("full_front_layers": 1.5)"},
      {R"("greedy_tokens": 64)", R"("greedy_tokens": 6.4)"},
      {R"({"method": "full")", R"(3, {"method": "full")"},
  };
  const std::vector<std::string> names = {"(top).format",          "settings[2].method",
                                          "options.full_last_layer", "model.layers",
                                          "options.full_front_layers", "options.greedy_tokens",
                                          "settings[0]"};
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string text = profile_text();
    const size_t at = text.find(cases[i].first);
    ASSERT_NE(at, std::string::npos) << cases[i].first;
    text.replace(at, cases[i].first.size(), cases[i].second);
    TempFile f("corrupt" + std::to_string(i) + ".json", text);
    std::string message;
    try {
      read_selective_plan(f.path, 0.2, 5, 4);
    } catch (const Error& e) {
      message = e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << cases[i].second << ": not a kvs::Error: " << e.what();
      continue;
    }
    EXPECT_NE(message.find(f.path), std::string::npos) << cases[i].second << ": " << message;
    EXPECT_NE(message.find(names[i]), std::string::npos) << cases[i].second << ": " << message;
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
  EXPECT_THROW(make_policy("selective", {{"profile", "/nonexistent/sel.json"}}), Error);
  TempFile f("j.json", profile_text());
  EXPECT_THROW(make_policy("selective", {{"profile", f.path}, {"budget", "0.4"}}), Error);
  EXPECT_THROW(make_policy("selective", {{"round_trips", "sometimes"}}), Error);
}

}  // namespace
}  // namespace kvs::policies
