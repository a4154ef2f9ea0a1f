// Host preparation for the GPU encoder of cachegen scheme=paper
// (codec/cuda/paper_encode_plan.h): no CUDA here.
#include "codec/cuda/paper_encode_plan.h"

#include <cstring>

#include "base/error.h"
#include "codec/cachegen.h"
#include "codec/cuda/plan.h"
#include "codec/fp16.h"

namespace kvs::codec::cuda::detail {

CachegenPaperEncodePlan plan_cachegen_paper_encode(KVShape shape, DType dtype, uint64_t token_begin, uint32_t tokens,
                                                   int level, const CacheGenPaperModel* model,
                                                   const std::string& model_file) {
  check_cachegen_paper_encode(shape, level, model, model_file);
  CachegenPaperEncodePlan plan;
  StreamHeader& h = plan.header;  // as header_for, with the paper scheme's group and model
  h.codec = CodecId::kCacheGen;
  h.level = uint8_t(level);
  h.dtype = dtype;
  h.flags = uint16_t(kPaperGroupTokens);
  h.shape = shape;
  h.token_begin = token_begin;
  h.tokens = tokens;
  h.model_hash = model->hash;
  check_writable(h);  // the CPU encoder's refusal of a chunk of no tokens, before any work
  plan.substreams = uint32_t(uint64_t(shape.layers) * 2 * shape.kv_heads);
  const size_t n = size_t(tokens) * shape.head_dim;
  plan.symbols_bytes = size_t(plan.substreams) * n;
  plan.capacity = 4 + 2 * n;  // as the CPU encoder's buffer
  return plan;
}

CachegenPaperEncodeLaunch CachegenPaperEncodePlan::bind(const void* in, bool in_f16, const rans::CumTable* anchors,
                                                        const float* step_a, const rans::BasicPackedTable<64>* deltas,
                                                        const float* step_d, const int32_t* M, uint8_t* symbols,
                                                        uint8_t* slots, uint32_t* sizes, uint32_t* escapes) const {
  CachegenPaperEncodeLaunch p{};
  p.in = in;
  p.in_f16 = in_f16;
  p.layers = header.shape.layers;
  p.kv_heads = header.shape.kv_heads;
  p.head_dim = header.shape.head_dim;
  p.tokens = header.tokens;
  p.substreams = substreams;
  p.anchors = anchors;
  p.step_a = step_a;
  p.deltas = deltas;
  p.step_d = step_d;
  p.M = M;
  p.symbols = symbols;
  p.slots = slots;
  p.capacity = capacity;
  p.sizes = sizes;
  p.escapes = escapes;
  return p;
}

std::vector<uint64_t> CachegenPaperEncodePlan::offsets(std::span<const uint32_t> sizes,
                                                       std::span<const uint32_t> escapes) const {
  std::vector<uint64_t> off(size_t(substreams) + 1, 0);
  for (size_t i = 0; i < substreams; ++i) {
    if (sizes[i] == 0) throw Error("codec cachegen: internal error: rANS buffer too small");
    off[i + 1] = off[i] + 4 + 4 * uint64_t(escapes[i]) + sizes[i];
  }
  return off;
}

StreamLayout CachegenPaperEncodePlan::layout(std::span<const uint64_t> off) const {
  return StreamLayout(header, {}, off);
}

Bytes encode_cachegen_paper_on_host(const KVChunk& chunk, int level, const CacheGenPaperModel* model,
                                    const std::string& model_file, bool in_f16) {
  const CachegenPaperEncodePlan plan = plan_cachegen_paper_encode(chunk.shape, chunk.dtype, chunk.token_begin,
                                                                  chunk.tokens, level, model, model_file);
  // The model's tables as the GPU encoder (and decoder) read them.
  PaperTables t = paper_tables(*model);
  build_paper_level(*model, level, &t);
  const size_t lv = size_t(level);
  std::vector<uint16_t> half;
  if (in_f16) {
    half.resize(chunk.values.size());
    for (size_t i = 0; i < half.size(); ++i) half[i] = f32_to_f16_bits(chunk.values[i]);
  }
  std::vector<uint8_t> symbols(plan.symbols_bytes), slots(plan.substreams * plan.capacity);
  std::vector<uint32_t> sizes(plan.substreams), escapes(plan.substreams);
  poison_scratch(symbols), poison_scratch(slots), poison_scratch(sizes), poison_scratch(escapes);
  const CachegenPaperEncodeLaunch p =
      plan.bind(in_f16 ? static_cast<const void*>(half.data()) : chunk.values.data(), in_f16, t.anchors.data(),
                t.step_a.data(), t.deltas[lv].data(), t.step_d[lv].data(), t.M[lv].data(), symbols.data(),
                slots.data(), sizes.data(), escapes.data());
  for (uint32_t sub = 0; sub < p.substreams; ++sub)
    for (uint32_t d = 0; d < p.head_dim; ++d) cachegen_paper_encode_channel(p, sub, d);
  for (uint32_t sub = 0; sub < p.substreams; ++sub) cachegen_paper_encode_substream(p, sub);
  const std::vector<uint64_t> off = plan.offsets(sizes, escapes);
  return assemble_on_host(plan.layout(off), {}, off, [&](uint8_t* payload) {
    for (uint32_t sub = 0; sub < p.substreams; ++sub) {
      cachegen_paper_encode_escapes(p, off.data(), sub, payload);
      cachegen_paper_encode_copy(p, off.data(), sub, 0, 1, payload);
    }
  });
}

}  // namespace kvs::codec::cuda::detail
