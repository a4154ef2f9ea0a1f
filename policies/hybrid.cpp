#include "policies/hybrid.h"

#include <fmt/core.h>

#include "base/error.h"

namespace kvs::policies {

namespace {

class HybridPolicy : public Policy {
 public:
  explicit HybridPolicy(int level) : level_(level) {}
  std::string name() const override { return fmt::format("hybrid(level={})", level_); }
  Schedule schedule() const override { return Schedule::kLoadBackComputeFront; }
  Action decide(const StreamState& state) override {
    if (state.levels && uint32_t(level_) >= state.levels)
      throw Error(fmt::format("policy hybrid: level {} but the codec has {} levels", level_, state.levels));
    return {level_, "back: fetch"};
  }

 private:
  int level_;
};

}  // namespace

PolicyInfo hybrid_policy() {
  return {"hybrid",
          "Cake: the GPU recomputes from the first chunk while the network fetches from the last; they meet at run time",
          {ParamSpec::integer("level", 0, "", "codec level of the fetched chunks, 0 = finest", 0, 1000)},
          false,
          [](const ParamValues& v) { return std::make_unique<HybridPolicy>(v.integer("level")); }};
}

}  // namespace kvs::policies
