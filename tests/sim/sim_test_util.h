// Profiles built in code for the simulator's tests.
#pragma once

#include <cstdint>
#include <vector>

#include "codec/profile.h"
#include "policies/policy.h"
#include "sim/config.h"

namespace kvs::sim::testing {

// A small Llama-like model (8 layers, 2 KV heads of 64).
inline codec::ModelInfo small_model() {
  codec::ModelInfo m;
  m.name = "tiny";
  m.kv = {8, 2, 64};
  m.hidden_size = 256;
  m.intermediate_size = 688;
  m.num_attention_heads = 4;
  m.vocab_size = 256;
  m.parameters = 12'000'000;
  return m;
}

// One codec "c" with one context of `chunks` chunks of `tokens` tokens;
// bytes[level] for every chunk, decode_s per chunk and level, loss 0.001 x (level + 1).
inline codec::Profile make_profile(uint32_t chunks, uint32_t tokens, const std::vector<uint64_t>& bytes,
                                   double decode_s = 0.0, uint32_t contexts = 1) {
  codec::Profile p;
  p.model = small_model();
  p.device = "test";
  p.chunk_tokens = tokens;
  codec::CodecProfile c;
  c.codec = "c";
  for (size_t l = 0; l < bytes.size(); ++l) c.level_names.push_back("L" + std::to_string(l));
  for (uint32_t x = 0; x < contexts; ++x) {
    codec::ContextProfile ctx;
    ctx.id = "ctx" + std::to_string(x);
    ctx.tokens = chunks * tokens;
    ctx.base_loss_nats = 1.0;
    for (size_t l = 0; l < bytes.size(); ++l) {
      codec::LevelQuality q;
      q.bits_per_element = 8.0 * double(bytes[l]) / (double(tokens) * double(p.model.kv.elements_per_token()));
      q.loss_increase = 0.001 * double(l + 1) * chunks;
      q.kl_nats = q.loss_increase;  // the same figures in both measures: every level on the front
      ctx.quality.push_back(q);
    }
    for (uint32_t i = 0; i < chunks; ++i) {
      codec::ChunkProfile ch;
      ch.token_begin = uint64_t(i) * tokens;
      ch.tokens = tokens;
      for (size_t l = 0; l < bytes.size(); ++l) {
        codec::ChunkLevel lv;
        lv.bytes = bytes[l];
        lv.decode_s = decode_s;
        lv.loss_increase = 0.001 * double(l + 1);
        lv.kl_nats = lv.loss_increase;
        ch.levels.push_back(lv);
      }
      ctx.chunks.push_back(ch);
    }
    c.contexts.push_back(ctx);
  }
  p.codecs.push_back(c);
  return p;
}

inline SimConfig base_config(double rate_mbps, double rtt_ms) {
  SimConfig c;
  c.codec = "c";
  c.policy = "fixed";
  c.link.rate_mbps = rate_mbps;
  c.link.rtt_ms = rtt_ms;
  c.gpu.decode = "profile";  // decode seconds as the test profile gives them
  return c;
}

// Records every StreamState it is shown; fetches `level` (or recomputes when -1).
class RecordingPolicy : public policies::Policy {
 public:
  RecordingPolicy(std::vector<policies::StreamState>* out, int level) : out_(out), level_(level) {}
  std::string name() const override { return "recording"; }
  policies::Action decide(const policies::StreamState& s) override {
    out_->push_back(s);
    out_->back().chunks = nullptr;  // points into the simulation; not valid after it
    return {level_, "test"};
  }

 private:
  std::vector<policies::StreamState>* out_;
  int level_;
};

}  // namespace kvs::sim::testing
