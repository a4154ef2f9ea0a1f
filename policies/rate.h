// `rate`: throughput-based adaptation (POLICIES.md, "Throughput-based"). The
// bandwidth estimate is the harmonic mean of the last k chunk throughputs
// (request to last byte, zeros skipped; Pensieve test/mpc.py uses k = 5)
// times a safety factor (dash.js's throughputSafetyFactor, 0.9). The next
// chunk takes the best-quality level whose expected time -- its transfer at
// the estimate, or its decode when that is longer (the pipeline's
// bottleneck) -- fits its share of the remaining budget: (SLO - elapsed -
// first token) / chunks not yet delivered. When none fits, the quickest level,
// or recomputing the chunk when that is quicker still. Before any chunk
// sample (or with only zero-rate ones) it takes the fewest-bytes level.
#pragma once

#include "policies/policy.h"

namespace kvs::policies {

PolicyInfo rate_policy();

}  // namespace kvs::policies
