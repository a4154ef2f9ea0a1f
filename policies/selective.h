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

#include <cstdint>
#include <string>
#include <vector>

#include "policies/policy.h"

namespace kvs::policies {

PolicyInfo selective_policy();

// The selective profile's one reader, for the policy and for `kvstream
// offload` (sim/offload.h's pipeline takes its fractions): here because
// kvstream_sim links kvstream_policies, while llm/ (the writer) needs libtorch.

// One `infinigen` setting of a selective profile: what it fetched and what
// that cost in quality, measured with the profiled model (means over the
// profile's contexts; docs/selective-format.md names each field).
struct SelectiveSetting {
  double budget = 0;
  double alpha = 0;
  std::vector<double> fraction_per_layer;  // fraction_fetched_per_layer, the profiled model's layers
  double fraction_fetched = 0;             // mean over layers (absent: the mean of fraction_per_layer)
  // Partial keys / full K and V bytes. Absent: partial_channels / (2 x
  // head_dim) as the writer computes it (int(ratio x head_dim) channels),
  // else ratio / 2.
  double partial_key_fraction = 0;
  double recall = -1;  // -1: not in the file
  double kl_divergence = 0, loss_increase = 0, greedy_agreement = 0;
  double task_accuracy = -1;  // -1: no question
};

// A selective profile (`kvstream selective-profile`): the fields the
// `selective` policy and `kvstream offload` use.
struct SelectiveProfile {
  std::string path;
  std::string model;                     // the profiled model's name ("" when absent)
  uint32_t layers = 0;                   // of the profiled model
  // model.layer_windows: each profiled layer's sliding window W in tokens (0:
  // full attention). On a windowed layer the fractions are relative to the
  // min(past, W - 1) past keys its full attention reads. All 0 when absent.
  std::vector<uint64_t> layer_windows;
  uint32_t full_front_layers = 2;        // options.full_front_layers
  bool full_last_layer = false;          // options.full_last_layer
  double ratio = 0.2;                    // options.ratio (partial channels / head_dim)
  uint32_t greedy_tokens = 0;            // options.greedy_tokens: tokens greedy_agreement covers
  std::vector<uint64_t> context_tokens;  // contexts[].tokens
  std::vector<SelectiveSetting> settings;  // the `infinigen` settings, in file order (at least one)
};

// Reads and checks the file. Throws kvs::Error naming the file and the field
// (e.g. "settings[2].fraction_fetched_per_layer[3]") for a missing or
// malformed one, a fractional count, or a file without `infinigen` settings.
SelectiveProfile read_selective_profile(const std::string& path);

// The settings as "budget/alpha, ..." (e.g. "0.1/4, 0.2/5"), for messages.
std::string selective_settings_list(const SelectiveProfile& profile);

// The setting with this budget and alpha; throws kvs::Error naming the file
// and the settings it has.
const SelectiveSetting& find_selective_setting(const SelectiveProfile& profile, double budget, double alpha);

// A setting's per-layer fractions on a target with `target_layers` layers:
// the profiled ones when the layer counts match; otherwise the profile's
// layout (its full front layers, its last layer full or not) with the mean
// fraction of the profiled speculated layers in every speculated layer.
std::vector<double> target_layer_fractions(const SelectiveProfile& profile, const SelectiveSetting& setting,
                                           uint32_t target_layers);

// The profiled windows on a target with `target_layers` layers (0: full
// attention): the profiled ones when the layer counts match, the common one
// when every profiled layer has the same window; otherwise throws kvs::Error
// naming the file (mixed windows cannot be placed on another layer count).
std::vector<uint64_t> target_layer_windows(const SelectiveProfile& profile, uint32_t target_layers);

// A setting as the policy uses it on a target with `layers` layers: the
// shares of target_layer_fractions, the partial ratio, the measured quality
// and a source line for the outputs (per_layer_round_trips left true).
SelectivePlan selective_plan(const SelectiveProfile& profile, const SelectiveSetting& setting, uint32_t layers);

}  // namespace kvs::policies
