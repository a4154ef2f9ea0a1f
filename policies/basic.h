// The two policies that need no estimate: a fixed level for every chunk
// (`fixed`, parameter `level`, default 0) and recomputing every chunk from
// text (`recompute`).
#pragma once

#include <memory>

#include "policies/policy.h"

namespace kvs::policies {

std::unique_ptr<Policy> make_fixed_policy(const PolicyParams& params);
std::unique_ptr<Policy> make_recompute_policy(const PolicyParams& params);

}  // namespace kvs::policies
