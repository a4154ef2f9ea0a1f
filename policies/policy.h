// Adaptation policies: for the next chunk, choose a codec level or recompute
// the chunk from text.
//
// A policy sees only what a real client could know at the decision point
// (StreamState): elapsed time, the SLO, the byte sizes of the remaining chunks
// at every level, throughput samples observed so far, and the GPU's queue. It
// never sees the future of the bandwidth trace (the one exception, an oracle,
// will say so in its name).
//
// A new policy is one file with a class deriving from Policy, plus one line in
// the registry (policy.cpp), plus a test.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvs::policies {

// One throughput measurement a client made: `bytes` arrived in [start_s, end_s).
struct ThroughputSample {
  double start_s = 0;
  double end_s = 0;
  uint64_t bytes = 0;
  double rate_bps() const { return end_s > start_s ? 8.0 * double(bytes) / (end_s - start_s) : 0.0; }
};

struct StreamState {
  double now_s = 0;          // simulation time of the decision
  double elapsed_s = 0;      // since the request was issued
  double slo_s = 0;          // TTFT target for this request (0: none)
  uint32_t next_chunk = 0;   // index of the chunk to decide
  uint32_t total_chunks = 0;
  // chunk_bytes[c][level]: bytes of chunk c at each level, for c >= next_chunk
  // (earlier entries are those already decided).
  const std::vector<std::vector<uint64_t>>* chunk_bytes = nullptr;
  std::vector<uint32_t> chunk_tokens;             // tokens of every chunk
  // Fine-grained samples: bytes received over intervals of at least the
  // simulator's sample interval (e.g. 10 ms) while data was flowing, oldest first.
  std::vector<ThroughputSample> samples;
  // One sample per fetched chunk: request sent -> last byte (includes one RTT).
  std::vector<ThroughputSample> chunk_samples;
  double rtt_s = 0;                               // measured at connection setup (0 before)
  double gpu_busy_until_s = 0;                    // when the GPU finishes queued work
  double recompute_s_per_chunk_estimate = 0;      // for chunk next_chunk, from the compute model
  uint32_t levels = 0;                            // levels of the codec, 0 = finest
};

struct Action {
  static constexpr int kRecompute = -1;
  int level = 0;  // codec level, or kRecompute
  bool recompute() const { return level == kRecompute; }
  std::string reason;  // a short note for the event log (e.g. the estimate used)
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string name() const = 0;
  virtual Action decide(const StreamState& state) = 0;
};

// Parameters as given in a scenario or on the command line: key -> value text.
using PolicyParams = std::map<std::string, std::string>;

// Creates the named policy; throws kvs::Error naming the policy and the
// registered ones when unknown, or the parameter when a parameter is bad.
std::unique_ptr<Policy> make_policy(const std::string& name, const PolicyParams& params);
std::vector<std::string> policy_names();

}  // namespace kvs::policies
