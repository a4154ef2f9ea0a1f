// The two policies that need no estimate: a fixed level for every chunk
// (`fixed`, parameter `level`, default 0) and recomputing every chunk from
// text (`recompute`).
#pragma once

#include "policies/policy.h"

namespace kvs::policies {

PolicyInfo fixed_policy();
PolicyInfo recompute_policy();

}  // namespace kvs::policies
