// Chunks and stream states built by hand for the policies' tests, and errors' messages.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "policies/policy.h"

namespace kvs::policies::testing {

// The message of the kvs::Error `f` throws; empty when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct LevelSpec {
  uint64_t bytes;
  double decode_s;
  double loss;
};

std::vector<ChunkInfo> make_chunks(uint32_t n, const std::vector<LevelSpec>& levels, double recompute_s) {
  std::vector<ChunkInfo> chunks(n);
  for (uint32_t c = 0; c < n; ++c) {
    chunks[c].token_begin = uint64_t(c) * 1000;
    chunks[c].tokens = 1000;
    for (const auto& l : levels) {
      chunks[c].bytes.push_back(l.bytes);
      chunks[c].decode_s.push_back(l.decode_s);
      chunks[c].quality_cost.push_back(l.loss);
    }
    chunks[c].recompute_s = recompute_s;
  }
  return chunks;
}

// Chunks of three levels: 1 MB, 0.5 MB, 0.25 MB (8, 4 and 2 Mbit), loss 0,
// 0.01, 0.05, decode 10 ms each, recompute `recompute_s`.
inline std::vector<ChunkInfo> three_level_chunks(uint32_t n, double recompute_s = 100) {
  return make_chunks(n, {{1000000, 0.01, 0}, {500000, 0.01, 0.01}, {250000, 0.01, 0.05}}, recompute_s);
}

// A request started at time 0, now `elapsed_s` in, about to decide chunk `next`
// (the earlier ones fetched at level 0), with one 1 MB chunk sample per rate.
StreamState make_state(const std::vector<ChunkInfo>& chunks, uint32_t next, double slo_s, double elapsed_s,
                       const std::vector<double>& rates_mbps) {
  StreamState s;
  s.now_s = elapsed_s;
  s.elapsed_s = elapsed_s;
  s.slo_s = slo_s;
  s.next_chunk = next;
  s.total_chunks = uint32_t(chunks.size());
  s.levels = uint32_t(chunks[0].bytes.size());
  s.chunks = &chunks;
  for (uint32_t c = 0; c < next; ++c) s.decisions.push_back({c, 0, 0.0, elapsed_s});
  double t = 0;
  for (double r : rates_mbps) {
    const double d = r > 0 ? 8e6 / (r * 1e6) : 0.0;
    s.chunk_samples.push_back({t, t + d, r > 0 ? uint64_t(1000000) : 0});
    t += d;
  }
  s.rtt_s = 0.02;
  s.gpu_busy_until_s = elapsed_s;
  s.first_token_s = 0.02;
  return s;
}

}  // namespace kvs::policies::testing
