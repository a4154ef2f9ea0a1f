// Adaptation policies: for the next chunk, choose a codec level or recompute
// the chunk from text.
//
// A policy sees only what a real client could know at the decision point
// (StreamState): elapsed time, the SLO, per remaining chunk and level the
// bytes, the quality estimate and the GPU decode time from the profile, every
// chunk's recompute time, the throughput it measured so far, the GPU's queued
// work and its own earlier decisions. It never sees the future of the
// bandwidth trace. The one exception is a policy that says so: its
// `PolicyInfo::reads_future` is true, its name says "oracle", and the
// simulator hands it the link through `see_future` before the first decision.
//
// A new policy is one file with a class deriving from Policy and a function
// returning its PolicyInfo (name, one-line summary, typed parameters, factory),
// plus one line in the registry (policy.cpp), plus a test.
//
// This header is included by the C++17 ns-3 engine: keep it C++17.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "traces/trace.h"

namespace kvs::policies {

// One throughput measurement a client made: `bytes` arrived in [start_s, end_s).
struct ThroughputSample {
  double start_s = 0;
  double end_s = 0;
  uint64_t bytes = 0;
  double rate_bps() const { return end_s > start_s ? 8.0 * double(bytes) / (end_s - start_s) : 0.0; }
};

// What the client knows of one chunk before fetching it: the profile's
// figures, scaled to the target model and timed on the simulated GPU.
struct ChunkInfo {
  uint64_t token_begin = 0;
  uint32_t tokens = 0;
  std::vector<uint64_t> bytes;        // per level, on the wire (header included)
  std::vector<double> decode_s;       // per level, on the simulated GPU
  // Per level: the quality cost of taking this level for this chunk, the
  // profile's per-chunk estimate in the measure StreamState::quality_measure
  // names (lower is better; 0 = exact): KL divergence of the next-token
  // distribution (nats/token) or relative continuation-loss increase.
  std::vector<double> quality_cost;
  double recompute_s = 0;             // prefill of this chunk after the ones before it
  // A target with sliding-window layers (sim/engine.h): recomputing this
  // chunk runs every layer over its tokens, and a windowed layer there reads
  // the tokens before the chunk within its window. Entry k is about chunk
  // (this - 1 - k), nearest first, as far back as some window reaches: the
  // layers of it that this recompute reads and the query does not (so a
  // fetch of that chunk left them out). Empty: none (full attention).
  // A chunk that no layer of the query reads has a quality_cost of 0 (its
  // level changes nothing the query sees) until a recompute reads it: its
  // degraded layers then enter the recomputed chunk, which takes on its
  // profiled cost for the level (WindowRead::quality_cost).
  struct WindowRead {
    std::vector<double> bytes;         // per level that chunk was fetched at, on the wire
    std::vector<double> decode_s;      // their GPU decode, per level
    std::vector<double> quality_cost;  // per level: that chunk's cost, if the query reads none of it; else empty
    uint32_t layers = 0;               // how many layers
  };
  std::vector<WindowRead> window_reads;
};

// What recomputing a chunk fetches first (ChunkInfo::window_reads): the
// left-out layers it reads of the chunks fetched right before it, back to the
// nearest recomputed chunk (whose own recompute fetched or computed all that
// a later recompute reads, since a later chunk's windows reach less far back)
// or as far as a window reaches. `action_of(j)` gives chunk j's level, or
// Action::kRecompute (also for a chunk not decided yet). What the simulator
// fetches (sim/streaming_app.cc) and what the planners predict.
struct RecomputeFetch {
  double bytes = 0;
  double decode_s = 0;
  double quality_cost = 0;  // of the chunks read that the query reads nothing of
  uint32_t layers = 0;    // layer-chunks fetched
  uint32_t chunks = 0;    // chunks they belong to (with bytes or not)
};
// The walk under it: visit(read, j, level) for each chunk j it reads.
template <class ActionOf, class Visit>
void for_each_window_read(const ChunkInfo& chunk, uint32_t index, const ActionOf& action_of, const Visit& visit) {
  for (size_t k = 0; k < chunk.window_reads.size() && k < index; ++k) {
    const uint32_t j = uint32_t(index - 1 - k);
    const int level = action_of(j);
    if (level < 0) break;
    visit(chunk.window_reads[k], j, level);
  }
}
template <class ActionOf>
RecomputeFetch recompute_fetch(const ChunkInfo& chunk, uint32_t index, const ActionOf& action_of) {
  RecomputeFetch f;
  for_each_window_read(chunk, index, action_of, [&](const ChunkInfo::WindowRead& r, uint32_t, int level) {
    const size_t l = size_t(level);
    if (l < r.bytes.size()) f.bytes += r.bytes[l];
    if (l < r.decode_s.size()) f.decode_s += r.decode_s[l];
    if (l < r.quality_cost.size()) f.quality_cost += r.quality_cost[l];
    f.layers += r.layers;
    ++f.chunks;
  });
  return f;
}

// One earlier decision of this request and what came of it.
struct Decision {
  uint32_t chunk = 0;
  int level = 0;                 // codec level, or Action::kRecompute
  double decided_s = 0;
  double arrived_s = -1;         // last byte of a fetched chunk (-1: not yet, or recomputed)
};

// How a request's chunks are fetched and computed.
enum class Schedule {
  // Chunks are decided in order 0, 1, 2, ...; the GPU decodes or recomputes
  // them in that order as their data is ready (pipelined with the network).
  kInOrder,
  // Cake-style: the GPU recomputes chunks forward from chunk 0 while the
  // network fetches chunks backward from the last; both stop where they meet
  // (decided at run time). The policy is asked only for the fetched chunks.
  kLoadBackComputeFront,
  // Selective loading (InfiniGen over a network, policies/selective.h): the
  // unit is a layer, not a chunk. Before the first token the client fetches
  // the partial keys, the layers its SelectivePlan loads in full, and for
  // every other layer only the selected tokens' K and V (a share of the
  // layer's bytes); the rest of the cache follows after the first token. The
  // policy is asked for a level once per layer request, with
  // StreamState::next_chunk holding the layer.
  kSelectiveLayers,
};

// Which profile figure ChunkInfo::quality_cost holds.
enum class QualityMeasure {
  kKl,            // kl_nats: mean KL(P_exact || P_degraded) per token, nats
  kLossIncrease,  // loss_increase: relative continuation-loss increase
};
// "kl" or "loss_increase", as in scenarios and results.
const char* quality_measure_name(QualityMeasure m);

struct StreamState {
  double now_s = 0;          // simulation time of the decision
  double elapsed_s = 0;      // since the request was issued
  double slo_s = 0;          // TTFT target for this request (0: none)
  uint32_t next_chunk = 0;   // index of the chunk to decide
  uint32_t total_chunks = 0;
  // Levels offered for every chunk, 0 = finest: by default only the codec's
  // levels on the profile's size-quality front, renumbered 0..levels-1 (the
  // simulator maps a chosen index back to the codec's level for its logs).
  uint32_t levels = 0;
  QualityMeasure quality_measure = QualityMeasure::kKl;  // what ChunkInfo::quality_cost holds
  // Every chunk of the context (owned by the simulator; valid during decide()).
  const std::vector<ChunkInfo>* chunks = nullptr;
  // This request's decisions so far, in the order they were made.
  std::vector<Decision> decisions;
  // Fine-grained samples: bytes received over intervals of at least the
  // simulator's sample interval (e.g. 10 ms) while data was flowing, oldest first.
  std::vector<ThroughputSample> samples;
  // One sample per fetched chunk: request sent -> last byte (includes one RTT).
  std::vector<ThroughputSample> chunk_samples;
  double rtt_s = 0;                // measured at connection setup (0 before)
  double gpu_busy_until_s = 0;     // when the GPU finishes all work queued so far (any request)
  double first_token_s = 0;        // GPU time of the first token once the cache is complete
  // What recomputing next_chunk fetches first: for a target with
  // sliding-window layers, the layers its window reads that earlier fetched
  // chunks left out (the query did not read them; sim/engine.h), their GPU
  // decode and the quality cost they bring in (ChunkInfo::window_reads); 0
  // otherwise.
  uint64_t recompute_fetch_bytes = 0;
  double recompute_fetch_decode_s = 0;
  double recompute_fetch_quality_cost = 0;

  const ChunkInfo& chunk(uint32_t c) const { return (*chunks)[c]; }
  double gpu_queued_s() const { return gpu_busy_until_s > now_s ? gpu_busy_until_s - now_s : 0.0; }
  // Seconds left before the SLO (negative when missed; a large number without an SLO).
  double slack_s() const { return slo_s > 0 ? slo_s - elapsed_s : 1e18; }
};

struct Action {
  static constexpr int kRecompute = -1;
  int level = 0;  // codec level, or kRecompute
  bool recompute() const { return level == kRecompute; }
  std::string reason;  // a short note for the event log (e.g. the estimate used)
};

// The link as an oracle sees it: the real trace (or constant rate), the
// propagation delay, and the share of the bottleneck rate that carries payload.
struct NetworkFuture {
  const traces::Trace* trace = nullptr;  // null: constant `rate_bps`
  double rate_bps = 0;
  double rtt_s = 0;
  double payload_share = 1;   // payload bytes / bytes on the wire (headers of every packet)
  double request_start_s = 0; // simulation time the request was issued
  uint32_t in_flight = 1;     // chunk requests outstanding per connection
  bool handshake = true;      // a TCP handshake (one RTT) before the first request; network: pensieve has none
};

// What a Schedule::kSelectiveLayers policy fetches before the first token.
struct SelectivePlan {
  // Per layer of the target model: the share of the context's tokens whose K
  // and V that layer fetches before the first token (1: the whole layer).
  std::vector<double> layer_share;
  // Per layer of the target model: its sliding window in tokens (0, or an
  // empty vector: full attention). The first token's query on a windowed layer
  // reads only the last W-1 context tokens, so that layer's share and its
  // partial keys count those (a share of 1 fetches all of them); the rest of
  // the layer follows the first token.
  std::vector<uint64_t> layer_window;
  // Partial keys (InfiniGen): floor(partial_ratio x head_dim) channels per KV
  // head and token of every layer with a share below 1, sent first as fp16.
  double partial_ratio = 0.2;
  // true (InfiniGen): layer l is speculated from layer l-1's input, so its
  // request waits until layers 0..l-2 are computed on the GPU (a round trip
  // per one or two layers). false: every layer is speculated from the prompt
  // once the partial keys are in, and all requests go out at once.
  bool per_layer_round_trips = true;
  // The selection's measured quality over the first tokens (from a selective
  // profile; -1: not measured) and where it comes from, for the outputs.
  double kl_nats = -1, loss_increase = -1, greedy_agreement = -1, task_accuracy = -1;
  uint32_t greedy_tokens = 0;  // tokens greedy_agreement covers
  std::string source;          // e.g. "infinigen budget=0.2 alpha=5 of FILE (8 contexts)"
};

class Policy {
 public:
  virtual ~Policy() = default;
  // The policy's name with its parameters, as it appears in every output.
  virtual std::string name() const = 0;
  virtual Action decide(const StreamState& state) = 0;
  virtual Schedule schedule() const { return Schedule::kInOrder; }
  // Called once, before the first decision, for policies whose PolicyInfo says
  // reads_future; never for the others.
  virtual void see_future(const NetworkFuture&) {}
  // A policy's own prediction of this request's TTFT (s), when it makes one
  // (the oracle); negative: none.
  virtual double predicted_ttft_s() const { return -1; }
  // Schedule::kSelectiveLayers: the plan for a target with `layers` layers
  // (asked once, before the first request).
  virtual SelectivePlan selective_plan(uint32_t /*layers*/) const { return {}; }
};

// ---- parameters ---------------------------------------------------------------

// One typed parameter of a policy, declared once with its default and unit.
struct ParamSpec {
  enum class Type { kInt, kNumber, kBool, kChoice, kText };
  std::string name;
  Type type = Type::kNumber;
  std::string default_value;  // as text, e.g. "0.9"
  std::string unit;           // e.g. "s", "chunks", "" for plain numbers
  std::string help;           // one line
  double min = -1e300, max = 1e300;  // inclusive bounds (kInt, kNumber)
  std::vector<std::string> choices;  // kChoice
  // kText naming a file: a scenario resolves it against its own folder and a
  // sweep hashes the file's content into the run ids (scenarios/).
  bool file_path = false;

  static ParamSpec integer(std::string name, long long dflt, std::string unit, std::string help, double min = -1e300,
                           double max = 1e300);
  static ParamSpec number(std::string name, double dflt, std::string unit, std::string help, double min = -1e300,
                          double max = 1e300);
  static ParamSpec boolean(std::string name, bool dflt, std::string help);
  static ParamSpec choice(std::string name, std::string dflt, std::vector<std::string> choices, std::string help);
  // Free text (e.g. a file path); any value, the empty default included.
  static ParamSpec text(std::string name, std::string dflt, std::string help);
  // A file's path (kText, file_path); empty by default.
  static ParamSpec path(std::string name, std::string help);
};

// Parameter values as given in a scenario or on the command line: key -> text.
using PolicyParams = std::map<std::string, std::string>;

// Parsed and checked parameter values, defaults filled in.
class ParamValues {
 public:
  double number(const std::string& name) const;
  int integer(const std::string& name) const;
  bool flag(const std::string& name) const;
  const std::string& text(const std::string& name) const;

 private:
  friend ParamValues parse_params(const std::string&, const std::vector<ParamSpec>&, const PolicyParams&);
  std::map<std::string, std::string> values_;
};

struct PolicyInfo {
  std::string name;
  std::string summary;         // one line
  std::vector<ParamSpec> params;
  bool reads_future = false;   // an oracle: sees the trace through see_future
  std::function<std::unique_ptr<Policy>(const ParamValues&)> make;
};

// Checks `given` against `specs`: an unknown name (with the closest known one),
// a value of the wrong type or out of range is a kvs::Error naming the policy
// and the parameter. Missing parameters take their defaults.
ParamValues parse_params(const std::string& policy, const std::vector<ParamSpec>& specs, const PolicyParams& given);

// Every registered policy, sorted by name.
const std::vector<PolicyInfo>& policy_infos();
// The named policy's info; throws kvs::Error listing the known ones (and the
// closest) when unknown.
const PolicyInfo& policy_info(const std::string& name);
// Creates the named policy with checked parameters.
std::unique_ptr<Policy> make_policy(const std::string& name, const PolicyParams& params);
std::vector<std::string> policy_names();
// A table of every policy, its parameters, defaults, units and summaries
// (`kvstream policies`).
std::string describe_policies();

}  // namespace kvs::policies
