// `kvstream policies`: every adaptation policy with its parameters, defaults,
// units and a one-line description (from the policies' own declarations).
#include <cstdio>

#include "apps/commands.h"
#include "policies/policy.h"

namespace kvs::apps {

void add_policy_commands(CLI::App& app) {
  auto* cmd = app.add_subcommand("policies", "List the adaptation policies with their parameters and defaults");
  cmd->callback([] { std::fputs(policies::describe_policies().c_str(), stdout); });
}

}  // namespace kvs::apps
