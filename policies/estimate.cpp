#include "policies/estimate.h"

#include <algorithm>

namespace kvs::policies {

double harmonic_mean_bps(const std::vector<ThroughputSample>& samples, size_t k) {
  double inv_sum = 0;
  size_t n = 0;
  for (auto it = samples.rbegin(); it != samples.rend() && n < k; ++it) {
    const double r = it->rate_bps();
    if (r <= 0) continue;
    inv_sum += 1.0 / r;
    ++n;
  }
  return n ? double(n) / inv_sum : 0.0;
}

double fetch_s(uint64_t bytes, double rate_bps, double rtt_s) {
  if (rate_bps <= 0) return 1e18;
  return rtt_s + 8.0 * double(bytes) / rate_bps;
}

Pipeline Pipeline::at(const StreamState& s, bool sequential) {
  Pipeline p;
  p.net_free_s = s.now_s;
  p.gpu_free_s = std::max(s.now_s, s.gpu_busy_until_s);
  p.sequential = sequential;
  return p;
}

Pipeline Pipeline::after_decided(const StreamState& s, double rate_bps, bool sequential) {
  Pipeline p = at(s, sequential);
  std::vector<Decision> decided;
  for (const Decision& d : s.decisions)
    if (s.chunks && d.chunk < s.next_chunk && d.chunk < s.chunks->size()) decided.push_back(d);
  std::stable_sort(decided.begin(), decided.end(), [](const Decision& a, const Decision& b) { return a.chunk < b.chunk; });
  bool waiting = false;  // behind a fetch in flight
  for (const Decision& d : decided) {
    const bool in_flight = d.level >= 0 && d.arrived_s < 0;
    waiting = waiting || in_flight;
    if (!waiting) continue;  // on the GPU already (in gpu_busy_until_s)
    const ChunkInfo& c = s.chunk(d.chunk);
    if (d.level < 0) {
      p.recompute(c.recompute_s);
    } else {
      const size_t l = size_t(d.level);
      const double decode = l < c.decode_s.size() ? c.decode_s[l] : 0.0;
      const double transfer = in_flight && l < c.bytes.size() ? fetch_s(c.bytes[l], rate_bps, 0.0) : 0.0;
      p.fetch(transfer, decode);
    }
  }
  return p;
}

void Pipeline::fetch(double transfer_s, double decode_s) {
  if (sequential) {
    gpu_free_s = std::max(gpu_free_s, net_free_s) + transfer_s + decode_s;
    net_free_s = gpu_free_s;
    return;
  }
  net_free_s += transfer_s;
  gpu_free_s = std::max(gpu_free_s, net_free_s) + decode_s;
}

void Pipeline::recompute(double recompute_s) {
  if (sequential) {
    gpu_free_s = std::max(gpu_free_s, net_free_s) + recompute_s;
    net_free_s = gpu_free_s;
    return;
  }
  gpu_free_s += recompute_s;
}

void Pipeline::recompute_next(const StreamState& s, double rate_bps) {
  const double recompute_s = s.chunk(s.next_chunk).recompute_s;
  if (s.recompute_fetch_bytes == 0) return recompute(recompute_s);
  fetch(fetch_s(s.recompute_fetch_bytes, rate_bps, 0.0), s.recompute_fetch_decode_s + recompute_s);
}

double Pipeline::ttft_end_s(double first_token_s) const { return std::max(gpu_free_s, net_free_s) + first_token_s; }

double deadline_s(const StreamState& s) {
  const double start = s.now_s - s.elapsed_s;
  return s.slo_s > 0 ? start + s.slo_s : 1e18;
}

}  // namespace kvs::policies
