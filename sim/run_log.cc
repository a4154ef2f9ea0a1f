#include "sim/run_log.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace kvs::sim {

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  // Nanosecond resolution is what ns-3 time has; trailing zeros trimmed.
  std::string s = fmt::format("{:.9f}", x);
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s == "-0") s = "0";
  return s;
}

std::string json_string(const std::string& s) { return nlohmann::json(s).dump(); }

void EventLog::add(double t_s, uint32_t request, const char* event, std::string fields) {
  std::string text = fmt::format("{{\"t_s\":{},\"request\":{},\"event\":\"{}\"", json_number(t_s), request, event);
  if (!fields.empty()) text += "," + fields;
  text += "}\n";
  events_.push_back({t_s, events_.size(), std::move(text)});
}

std::string EventLog::lines() const {
  std::vector<const Event*> order;
  order.reserve(events_.size());
  for (const auto& e : events_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const Event* a, const Event* b) {
    return a->t_s < b->t_s || (a->t_s == b->t_s && a->seq < b->seq);
  });
  std::string out;
  for (const Event* e : order) out += e->text;
  return out;
}

namespace {

// Rounds to the nanosecond so that JSON numbers print identically everywhere.
double ns(double x) { return std::round(x * 1e9) / 1e9; }

}  // namespace

std::string result_to_json(const RunResult& r) {
  using nlohmann::ordered_json;
  ordered_json j;
  j["policy"] = r.policy;
  j["policy_reads_future"] = r.policy_reads_future;
  j["schedule"] = r.schedule;
  j["decode_timing"] = r.decode_timing;
  j["profile"] = r.profile;
  j["codec"] = r.codec;
  j["quality_measure"] = r.quality_measure;
  j["levels_offered"] = r.levels_offered;
  j["model"] = r.model;
  j["profiled_model"] = r.profiled_model;
  j["slo_s"] = r.slo_s;
  j["seed"] = r.seed;
  j["run"] = r.run;
  j["size_scale"] = r.size_scale;
  j["scaling_note"] = r.scaling_note;
  if (!r.window_note.empty()) j["window_note"] = r.window_note;
  j["network_model"] = r.network_model;
  j["network"] = r.network;
  ordered_json settings = ordered_json::object();
  for (const auto& [name, value] : r.network_settings) settings[name] = value;
  j["network_settings"] = settings;
  j["sim_end_s"] = ns(r.sim_end_s);
  j["events"] = r.events;
  ordered_json reqs = ordered_json::array();
  for (const auto& q : r.requests) {
    ordered_json o;
    o["id"] = q.id;
    o["context"] = q.context;
    o["context_id"] = q.context_id;
    o["tokens"] = q.tokens;
    o["arrival_s"] = ns(q.arrival_s);
    o["started"] = q.started;
    if (q.started) o["start_s"] = ns(q.start_s);  // a request that never started has no start
    o["finished"] = q.finished;
    o["ttft_s"] = ns(q.ttft_s);
    o["slo_met"] = q.slo_met;
    o["breakdown"] = {{"network_s", ns(q.breakdown.network_s)},
                      {"queueing_s", ns(q.breakdown.queueing_s)},
                      {"decode_s", ns(q.breakdown.decode_s)},
                      {"recompute_s", ns(q.breakdown.recompute_s)},
                      {"first_token_s", ns(q.breakdown.first_token_s)}};
    o["decode_total_s"] = ns(q.decode_total_s);
    o["recompute_total_s"] = ns(q.recompute_total_s);
    o["payload_bytes"] = q.payload_bytes;
    o["wire_bytes"] = q.wire_bytes;
    o["recomputed_chunks"] = q.recomputed_chunks;
    o["quality_loss_increase"] = q.quality_loss_increase;
    o["quality_kl_nats"] = q.quality_kl_nats;
    if (q.predicted_ttft_s >= 0) o["predicted_ttft_s"] = ns(q.predicted_ttft_s);
    if (q.exact_quality.measured)
      o["exact_quality"] = {{"loss_increase", q.exact_quality.loss_increase},
                            {"kl_nats", q.exact_quality.kl_nats},
                            {"kl_stderr_nats", q.exact_quality.kl_stderr_nats},
                            {"top1_agreement", q.exact_quality.top1_agreement},
                            {"greedy_agreement", q.exact_quality.greedy_agreement},
                            {"task_accuracy", q.exact_quality.task_accuracy}};
    if (q.selective.used) {
      const SelectiveRecord& sr = q.selective;
      o["selective"] = {{"source", sr.source},
                        {"round_trips", sr.per_layer_round_trips ? "per-layer" : "up-front"},
                        {"selected_layers", sr.selected_layers},
                        {"waits", sr.waits},
                        {"partial_key_bytes", sr.partial_key_bytes},
                        {"before_first_token_bytes", sr.before_first_token_bytes},
                        {"share_before_first_token", sr.share_before_first_token},
                        {"rest_bytes", sr.rest_bytes},
                        {"rest_last_byte_s", ns(sr.rest_last_byte_s)},
                        {"kl_nats", sr.kl_nats},
                        {"loss_increase", sr.loss_increase},
                        {"greedy_agreement", sr.greedy_agreement},
                        {"greedy_tokens", sr.greedy_tokens},
                        {"task_accuracy", sr.task_accuracy}};
    }
    ordered_json chunks = ordered_json::array();
    for (const auto& c : q.chunks) {
      chunks.push_back({{"index", c.index},
                        {"tokens", c.tokens},
                        {"level", c.level},
                        {"reason", c.reason},
                        {"estimate_bps", std::round(c.estimate_bps)},
                        {"payload_bytes", c.payload_bytes},
                        {"decided_s", ns(c.decided_s)},
                        {"last_byte_s", ns(c.last_byte_s)},
                        {"gpu_start_s", ns(c.gpu_start_s)},
                        {"gpu_end_s", ns(c.gpu_end_s)},
                        {"loss_increase", c.loss_increase},
                        {"kl_nats", c.kl_nats}});
    }
    o["chunks"] = std::move(chunks);
    reqs.push_back(std::move(o));
  }
  j["requests"] = std::move(reqs);
  return j.dump(2) + "\n";
}

std::string result_summary(const RunResult& r, double slo_s) {
  std::string s = fmt::format("policy {}  codec {}  model {}\n", r.policy, r.codec, r.model);
  if (r.policy_reads_future) s += "  the policy read the future of the trace (an oracle or oracle-informed baseline)\n";
  if (r.schedule != "in-order") s += "  schedule: " + r.schedule + "\n";
  if (!r.scaling_note.empty()) s += "  " + r.scaling_note + "\n";
  if (!r.window_note.empty()) s += "  " + r.window_note + "\n";
  if (!r.decode_timing.empty()) s += "  decode timing: " + r.decode_timing + "\n";
  s += "  network (" + r.network_model + "): " + r.network + "\n";
  for (const auto& q : r.requests) {
    if (!q.started) {
      s += fmt::format("request {} (context {}, {} tokens, arrives {:.3f} s): NOT STARTED (the run stopped first)\n",
                       q.id, q.context_id, q.tokens, q.arrival_s);
      continue;
    }
    s += fmt::format("request {} (context {}, {} tokens, start {:.3f} s): ", q.id, q.context_id, q.tokens, q.start_s);
    if (!q.finished) {
      s += "UNFINISHED\n";
      continue;
    }
    s += fmt::format("TTFT {:.3f} s", q.ttft_s);
    if (q.predicted_ttft_s >= 0) s += fmt::format(" (the policy predicted {:.3f} s)", q.predicted_ttft_s);
    if (slo_s > 0) s += fmt::format("  SLO {:.3f} s {}", slo_s, q.slo_met ? "met" : "MISSED");
    s += "\n";
    const auto& b = q.breakdown;
    s += fmt::format("  network {:.3f}  queueing {:.3f}  decode {:.3f}  recompute {:.3f}  first token {:.4f} s\n",
                     b.network_s, b.queueing_s, b.decode_s, b.recompute_s, b.first_token_s);
    std::string levels;
    for (const auto& c : q.chunks) levels += c.level < 0 ? "R" : std::to_string(c.level), levels += ' ';
    if (!levels.empty()) levels.pop_back();
    s += fmt::format("  levels [{}] (R = recompute)  payload {:.3f} MB  quality (estimates): KL {:.3g} nats/token  loss "
                     "{:+.4f}%\n",
                     levels, q.payload_bytes / 1e6, q.quality_kl_nats, 100 * q.quality_loss_increase);
    if (q.selective.used) {
      const SelectiveRecord& sr = q.selective;
      s += fmt::format("  selective ({}): {:.1f}% of the cache's bytes and {:.3f} MB of partial keys before the first "
                       "token ({} layers in part, {} waits for earlier layers); the rest ({:.3f} MB) in at {:.3f} s\n",
                       sr.per_layer_round_trips ? "per-layer round trips" : "up-front", 100 * sr.share_before_first_token,
                       sr.partial_key_bytes / 1e6, sr.selected_layers, sr.waits, sr.rest_bytes / 1e6,
                       sr.rest_last_byte_s);
      if (sr.kl_nats >= 0)
        s += fmt::format("  selection quality (measured, {}): KL {:.3g} nats/token  loss {:+.2f}%  greedy agreement "
                         "{:.3f} over {} tokens\n",
                         sr.source, sr.kl_nats, 100 * sr.loss_increase, sr.greedy_agreement, sr.greedy_tokens);
      else
        s += "  selection quality: not measured (" + sr.source + ")\n";
    }
    if (q.exact_quality.measured) {
      s += fmt::format("  measured quality: loss {:+.4f}%  greedy agreement {:.3f}  KL {:.3g} nats/token (SE {:.2g})  top-1 {:.3f}",
                       100 * q.exact_quality.loss_increase, q.exact_quality.greedy_agreement, q.exact_quality.kl_nats,
                       q.exact_quality.kl_stderr_nats, q.exact_quality.top1_agreement);
      if (q.exact_quality.task_accuracy >= 0) s += fmt::format("  task {}", q.exact_quality.task_accuracy > 0 ? "correct" : "WRONG");
      s += "\n";
    }
  }
  return s;
}

}  // namespace kvs::sim
