// `selective`: InfiniGen's selective KV loading (OSDI'24) as a streaming
// policy for the first token over a network (issue 23). The server sends the
// partial keys first; the client speculates with the new prompt which tokens
// each layer's attention needs and fetches only their K and V, at one codec
// level; the layers InfiniGen loads in full are fetched whole; the rest of
// the cache follows after the first token (Schedule::kSelectiveLayers, run by
// sim/streaming_app.h).
//
// Which share of every layer is fetched, and what that costs in quality,
// comes from a selective profile (`kvstream selective-profile`,
// docs/selective-format.md): the `infinigen` setting with the given budget
// and alpha. Its per-layer fractions are used as they are when the target
// has the profiled model's layer count; otherwise the profile's layout (its
// full front layers, its last layer) with the mean fraction of the profiled
// speculated layers elsewhere. Without a profile, `share` is used and the
// quality is reported as not measured.
//
// `round_trips`: `per-layer` (the default, InfiniGen's own scheme: layer l is
// speculated from layer l-1's input, so its selected tokens can only be
// requested once layers 0..l-2 are computed, and the quality measured in the
// profile is that of this scheme) or `up-front` (every layer speculated from
// the prompt at once, one round trip; a timing bound only: its quality is
// not measured, and the outputs say so).
#pragma once

#include "policies/policy.h"

namespace kvs::policies {

PolicyInfo selective_policy();

// A selective profile's `infinigen` setting mapped onto a target with
// `layers` layers, as the policy uses it (exposed for tests). Throws
// kvs::Error naming the file and what is missing or malformed.
SelectivePlan read_selective_plan(const std::string& path, double budget, double alpha, uint32_t layers);

}  // namespace kvs::policies
