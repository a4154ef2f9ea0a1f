// `hybrid`: Cake-style loading and computing together (Jin et al., "Compute
// Or Load KV Cache? Why Not Both?", arXiv 2410.03065). The GPU recomputes
// chunks forward from the first while the network fetches chunks backward
// from the last, both at once; they stop where they meet, so the split
// settles where the compute time of the front equals the transfer (and
// decode) time of the back, found at run time from measured progress with no
// profiling (Schedule::kLoadBackComputeFront; the simulator claims chunks for
// either side). The policy only picks the codec level of the fetched chunks:
// a fixed `level` (Cake itself loads one stored format).
#pragma once

#include "policies/policy.h"

namespace kvs::policies {

PolicyInfo hybrid_policy();

}  // namespace kvs::policies
