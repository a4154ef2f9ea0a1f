#include "policies/basic.h"

#include <fmt/core.h>

#include "base/error.h"

namespace kvs::policies {

namespace {

class FixedPolicy : public Policy {
 public:
  explicit FixedPolicy(int level) : level_(level) {}
  std::string name() const override { return fmt::format("fixed(level={})", level_); }
  Action decide(const StreamState& state) override {
    if (state.levels && uint32_t(level_) >= state.levels)
      throw Error(fmt::format("policy fixed: level {} but the codec has {} levels", level_, state.levels));
    return {level_, "fixed"};
  }

 private:
  int level_;
};

class RecomputePolicy : public Policy {
 public:
  std::string name() const override { return "recompute"; }
  Action decide(const StreamState&) override { return {Action::kRecompute, "recompute all"}; }
};

}  // namespace

PolicyInfo fixed_policy() {
  return {"fixed",
          "the same codec level for every chunk",
          {ParamSpec::integer("level", 0, "", "codec level, 0 = finest", 0, 1000)},
          false,
          [](const ParamValues& v) { return std::make_unique<FixedPolicy>(v.integer("level")); }};
}

PolicyInfo recompute_policy() {
  return {"recompute", "recompute every chunk from text on the GPU (no KV fetched)", {}, false,
          [](const ParamValues&) { return std::make_unique<RecomputePolicy>(); }};
}

}  // namespace kvs::policies
