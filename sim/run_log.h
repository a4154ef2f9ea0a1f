// What a run produces: per request the TTFT and its breakdown, every chunk's
// decision, bytes and timing; a JSON-lines event log with simulation
// timestamps. No wall-clock times and no addresses, so the same inputs give
// byte-identical files.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kvs::sim {

struct ChunkRecord {
  uint32_t index = 0;
  uint32_t tokens = 0;
  int level = 0;              // codec level, or -1 for recompute
  std::string reason;         // the policy's note
  double estimate_bps = 0;    // last throughput sample the policy saw (0: none yet)
  // Chunk bytes on the wire. A recomputed chunk: 0, or, for a target with
  // sliding-window layers, the left-out layers of earlier chunks that its
  // recompute reads (ContextSpec::layer_windows).
  uint64_t payload_bytes = 0;
  double decided_s = 0;
  double request_sent_s = -1, first_byte_s = -1, last_byte_s = -1;
  double gpu_start_s = -1, gpu_end_s = -1;  // decode or recompute
  // The profile's estimates for this chunk at this level (0 when recomputed):
  // quality_cost in the measure the policies saw (RunResult::quality_measure),
  // and both measures by name. A sliding-window target: 0 for a chunk the
  // query reads no layer of; a recompute carries the costs of such chunks
  // whose layers it read (policies::ChunkInfo::window_reads).
  double quality_cost = 0;
  double loss_increase = 0;   // relative continuation-loss increase
  double kl_nats = 0;         // KL divergence per token, nats
};

// TTFT = request start -> first token. The breakdown is additive along the
// critical path: `network_s` runs from the request to the last byte of the last
// fetched chunk; decode, recompute and first token count only GPU work of this
// request after that point; `queueing_s` is the rest (the GPU busy with other
// requests, or waiting for data). Totals of GPU work are given separately.
struct TtftBreakdown {
  double network_s = 0;
  double queueing_s = 0;
  double decode_s = 0;
  double recompute_s = 0;
  double first_token_s = 0;
};

// Quality measured by running the profiled model on the cache the request
// assembled (chunks decoded at their chosen levels, recomputed chunks exact):
// `kvstream simulate --exact-quality`. Filled in after the simulation.
struct MeasuredQuality {
  bool measured = false;
  double loss_increase = 0;     // relative continuation-loss increase over the exact cache
  double kl_nats = 0;           // mean KL(P_exact || P_assembled) per continuation token
  double kl_stderr_nats = 0;    // its standard error (llm/evaluate.h)
  double top1_agreement = 1;    // teacher-forced: positions with the same most likely token
  double greedy_agreement = 1;  // fraction of the profile's greedy tokens that match
  double task_accuracy = -1;    // exact match on the context's question; -1: none
};

// Selective loading (policy `selective`, Schedule::kSelectiveLayers): what
// was fetched before the first token and what the rest cost after it; the
// selection's quality is the selective profile's measurement (-1: not measured).
struct SelectiveRecord {
  bool used = false;
  std::string source;               // which profile setting (or none)
  bool per_layer_round_trips = true;
  uint32_t selected_layers = 0;     // layers fetched in part
  uint32_t waits = 0;               // layer requests that had to wait for earlier layers' compute
  uint64_t partial_key_bytes = 0, before_first_token_bytes = 0, rest_bytes = 0;  // payload
  double share_before_first_token = 0;  // of the whole context's bytes at the chosen level
  double rest_last_byte_s = -1;         // simulation time the whole cache was in (-1: not yet)
  double kl_nats = -1, loss_increase = -1, greedy_agreement = -1, task_accuracy = -1;
  uint32_t greedy_tokens = 0;
};

struct RequestResult {
  uint32_t id = 0;
  uint32_t context = 0;
  std::string context_id;
  uint32_t tokens = 0;
  double arrival_s = 0;        // when the request arrived (its scheduled start)
  bool started = false;        // false: the run stopped (max_sim_s) before it arrived
  double start_s = 0;          // when it started (meaningful only when `started`)
  double first_token_s = -1;  // simulation time of the first token; -1 if unfinished
  double ttft_s = -1;
  bool finished = false;
  bool slo_met = false;
  TtftBreakdown breakdown;
  double decode_total_s = 0, recompute_total_s = 0;
  uint64_t payload_bytes = 0;  // chunk bytes received
  uint64_t wire_bytes = 0;     // TCP payload bytes both ways, as counted by the client's socket
  uint32_t recomputed_chunks = 0;
  // Sums over chunks of the chosen levels' per-chunk estimates (recompute: 0).
  double quality_cost = 0;           // in RunResult::quality_measure
  double quality_loss_increase = 0;
  double quality_kl_nats = 0;
  double predicted_ttft_s = -1;      // the policy's own prediction (an oracle's plan); -1: none
  MeasuredQuality exact_quality;
  SelectiveRecord selective;  // only for selective loading
  std::vector<ChunkRecord> chunks;
};

struct RunResult {
  std::string policy;          // the policy's name with its parameters
  bool policy_reads_future = false;  // an oracle or oracle-informed policy: saw the trace's future
  std::string schedule = "in-order";  // or "load-back-compute-front" (Cake-style hybrid)
  std::string decode_timing;   // how decode times were obtained (assumed or measured, and where)
  std::string profile;         // path of the profile, for the record
  std::string codec;
  std::string quality_measure = "kl";  // what policies saw as quality cost: "kl" or "loss_increase"
  std::vector<int> levels_offered;     // codec levels offered to the policy, in the order it saw them
  std::string model;          // target model
  std::string profiled_model;
  double slo_s = 0;
  uint32_t seed = 0, run = 0;
  double size_scale = 1;      // target / profiled KV elements per token
  std::string scaling_note;   // empty when sizes are the profile's
  // For a target with sliding-window layers: which layers of which chunks
  // are sent (empty when every layer attends to everything).
  std::string window_note;
  std::string network_model;  // how the network was simulated: ns3, fluid or pensieve
  std::string network;        // description of the topology and TCP settings (or of the model)
  // Every link, queue and TCP setting used, as (name, value) in a fixed order
  // (ns-3 attributes as "ns3::Type::Attribute").
  std::vector<std::pair<std::string, std::string>> network_settings;
  double sim_end_s = 0;
  uint64_t events = 0;        // simulator events executed
  std::vector<RequestResult> requests;
};

// JSON-lines event log. Events may be added out of time order (GPU work is
// scheduled ahead); lines() sorts them by time, ties in insertion order.
class EventLog {
 public:
  // `fields`: extra JSON members, already formatted, without braces (e.g.
  // "\"chunk\":3,\"level\":1"), or empty.
  void add(double t_s, uint32_t request, const char* event, std::string fields = {});
  std::string lines() const;
  size_t size() const { return events_.size(); }

 private:
  struct Event {
    double t_s;
    uint64_t seq;
    std::string text;
  };
  std::vector<Event> events_;
};

// Formats a time or rate so that output is stable across runs and platforms.
std::string json_number(double x);
// A JSON string literal, quoted and escaped.
std::string json_string(const std::string& s);

std::string result_to_json(const RunResult& result);
// A one-screen summary for the terminal.
std::string result_summary(const RunResult& result, double slo_s);

}  // namespace kvs::sim
