// The host's part of the GPU kvs encoder (codec/cuda/kvs_encode_plan.h).
#include "codec/cuda/kvs_encode_plan.h"

#include <chrono>
#include <cstring>
#include <optional>

#include <fmt/core.h>

#include "codec/fp16.h"
#include "codec/kvs_internal.h"

namespace kvs::codec::cuda::detail {

using kvs_detail::KvsCodec;

const KvsCodec& as_kvs(const Codec& codec) {
  const auto* kvs = dynamic_cast<const KvsCodec*>(&codec);
  if (!kvs) throw Error(fmt::format("CUDA encode: codec {} is not kvs", codec.name()));
  return *kvs;
}

KvsEncodePlan::KvsEncodePlan(const KvsCodec& c, KVShape shape, DType dtype, uint64_t token_begin, uint32_t tokens,
                             int level, uint64_t context_tokens)
    : codec(&c), steps(c.level_steps(level, shape.layers)) {
  header.codec = CodecId::kKvs;
  header.level = uint8_t(level);
  header.dtype = dtype;
  header.flags = c.header_flags();
  header.shape = shape;
  header.token_begin = token_begin;
  header.tokens = tokens;
  check_writable(header);  // the CPU encoder's refusal of a chunk of no tokens, before any work
  const uint32_t D = shape.head_dim;
  // The tables that rotate, back to back; each layer pointing at its own.
  const kvs_detail::KvsStreamRope coded = c.coded_rope(D, shape.layers, context_tokens);
  std::vector<uint8_t> packed(coded.tables.size(), kNoRope);
  uint8_t n = 0;
  for (size_t i = 0; i < coded.tables.size(); ++i) {
    if (coded.tables[i].empty()) continue;
    packed[i] = n++;
    const auto cs = kvs_detail::rope_table(coded.tables[i], token_begin, tokens);
    const size_t at = rope.size();
    rope.resize(at + 2 * cs.size());
    for (size_t j = 0; j < cs.size(); ++j) rope[at + 2 * j] = cs[j][0], rope[at + 2 * j + 1] = cs[j][1];
  }
  layer_rope.resize(shape.layers);
  for (uint32_t l = 0; l < shape.layers; ++l) layer_rope[l] = packed[coded.layer_table[l]];
  stride = kvs_detail::channel_stride(tokens);
  rows = 2ull * shape.layers * shape.kv_heads * tokens;
  channels = 2ull * shape.layers * shape.channels();
  plan_rows = c.rows();
  params = c.params_section(D, shape.layers, context_tokens, steps);
}

KvsEncodeLaunch KvsEncodePlan::launch(const void* in, bool in_f16) const {
  KvsEncodeLaunch p{};
  p.in = in;
  p.in_f16 = in_f16;
  p.layers = header.shape.layers;
  p.kv_heads = header.shape.kv_heads;
  p.head_dim = header.shape.head_dim;
  p.tokens = header.tokens;
  p.steps = steps.data();
  p.rope = rope.data();
  p.layer_rope = layer_rope.data();
  p.rows = plan_rows;
  p.tables = codec->encoder_tables();
  p.stride = stride;
  p.rans_capacity = kRansCapacity;
  p.extras_capacity = kExtrasCapacity;
  return p;
}

void KvsEncodePlan::throw_value_error(unsigned long long fault, std::span<const float> row) const {
  const uint32_t D = header.shape.head_dim, T = header.tokens, H = header.shape.kv_heads;
  const uint64_t i = fault_value(fault), r = i / D;
  const uint32_t d = uint32_t(i % D), t = uint32_t(r % T);
  const uint64_t plane = r / T / H;
  const float* cs = kvs_row_rope(launch(nullptr, false), plane, t);
  const float x = kvs_core::row_value([&](uint32_t k) { return row[k]; }, cs, d, D / 2);
  kvs_detail::throw_bad_value(x, steps[plane]);
}

bool KvsEncodePlan::needs_cpu(unsigned long long fault) {
  const uint32_t code = uint32_t(fault & 0xff);
  return fault != kNoFault && (code == kFaultKvsHashCollision || code == kFaultKvsNearTie);
}

void KvsEncodePlan::plan_references(std::span<const uint64_t> row_hash, std::span<const double> s1,
                                    std::span<const double> s2) {
  const uint32_t T = header.tokens, D = header.shape.head_dim, H = header.shape.kv_heads;
  const size_t C = header.shape.channels();
  std::vector<uint8_t> modes;
  // One layer's plans at a time (each head's literal tokens and ranks: what
  // the heads need is copied out before the next layer reuses the memory).
  std::vector<kvs_detail::RowPlan> layer_plans, plans;
  kvs_detail::BitWriter refs_writer;
  std::vector<double> dim_bits(2 * C);
  if (plan_rows) first.resize(rows);
  heads.resize(2 * size_t(header.shape.layers) * H);
  literal_tokens.clear();
  for (uint32_t l = 0; l < header.shape.layers; ++l) {
    const size_t head0 = 2 * size_t(l) * H;
    if (plan_rows) {
      kvs_detail::first_by_hash(row_hash.data() + head0 * T, 2 * size_t(H), T, first.data() + head0 * T);
      for (size_t c = 0; c < 2 * C; ++c)
        dim_bits[c] = kvs_detail::dimension_bits(s1[2 * l * C + c], s2[2 * l * C + c], T);
    }
    kvs_detail::plan_layer_from(plan_rows ? first.data() + head0 * T : nullptr, dim_bits.data(), 2 * H, T, D,
                                plan_rows, &modes, &layer_plans);
    plans.clear();
    kvs_detail::put_layer_rows(modes, &layer_plans, &params, &refs_writer, &plans);
    for (size_t k = 0; k < plans.size(); ++k) {
      const kvs_detail::RowPlan& plan = plans[k];
      KvsEncHead& h = heads[head0 + k];
      h.literals = uint32_t(plan.literal.size());
      h.rdo = codec->centroid() && plan.ranks.empty();
      if (plan.literal.size() == T) {  // every token (literal tokens are distinct and in order)
        h.literal = kNone;
      } else {
        h.literal = uint32_t(literal_tokens.size());
        literal_tokens.insert(literal_tokens.end(), plan.literal.begin(), plan.literal.end());
      }
    }
  }
  refs_writer.finish(refs);
  first_symbol.resize(channels + 1);
  uint64_t total = 0;
  first_symbol[0] = 0;
  for (size_t ph = 0, ch = 0; ph < heads.size(); ++ph)
    for (uint32_t d = 0; d < D; ++d) first_symbol[++ch] = total += heads[ph].literals;
}

void KvsEncodePlan::plan_pieces(std::span<const kvs_core::ChannelModel> model) {
  models = codec->models_section(model, 2 * size_t(header.shape.layers), uint32_t(header.shape.channels()));
  kvs_detail::TableGroups groups = kvs_detail::table_groups(model);
  const std::vector<kvs_detail::PiecePlan> plan = kvs_detail::plan_pieces(groups, first_symbol);
  group_offset.assign(groups.offset.begin(), groups.offset.end());
  group_channels = std::move(groups.channels);
  pieces.resize(plan.size());
  for (size_t k = 0; k < plan.size(); ++k)
    pieces[k] = {plan[k].table, plan[k].n, uint32_t(plan[k].first_channel), plan[k].first_literal};
}

std::vector<uint64_t> KvsEncodePlan::offsets(std::span<const uint32_t> rans_sizes,
                                             std::span<const uint32_t> extras_sizes) const {
  std::vector<uint64_t> off(pieces.size() + 1, 0);
  for (size_t k = 0; k < pieces.size(); ++k) {
    if (rans_sizes[k] == 0) throw Error("codec kvs: internal error: rANS buffer too small");
    off[k + 1] = off[k] + kvs_core::varint_size(rans_sizes[k]) + rans_sizes[k] + extras_sizes[k];
  }
  return off;
}

StreamLayout KvsEncodePlan::layout(std::span<const uint64_t> off) const {
  const uint64_t prefix_sizes[] = {params.size(), refs.size(), models.size()};
  return StreamLayout(header, prefix_sizes, off);
}

Bytes KvsEncodePlan::prefix() const {
  Bytes out;
  out.reserve(params.size() + refs.size() + models.size());
  out.insert(out.end(), params.begin(), params.end());
  out.insert(out.end(), refs.begin(), refs.end());
  out.insert(out.end(), models.begin(), models.end());
  return out;
}

Bytes encode_kvs_on_host(const KVChunk& chunk, int level, const Codec& codec, bool in_f16, double* host_s) {
  // The host's steps, timed (wall clock) when asked.
  double host = 0;
  const auto timed = [&](auto&& step) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    host += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const KvsCodec& kvs = as_kvs(codec);
  const auto t0 = std::chrono::steady_clock::now();
  KvsEncodePlan plan(kvs, chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens, level, chunk.context_tokens);
  host += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The values as the device would read them (fp16 bits or floats), and as floats.
  std::vector<uint16_t> half;
  std::vector<float> values = chunk.values;
  if (in_f16) {
    half.resize(values.size());
    for (size_t i = 0; i < half.size(); ++i) half[i] = f32_to_f16_bits(values[i]), values[i] = f16_bits_to_f32(half[i]);
  }
  const auto on_cpu = [&] {  // what the GPU encoder does on a hash collision or near tie
    KVChunk c(chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens);
    c.values = values;
    return kvs.encode(c, level);
  };
  KvsEncodeLaunch p = plan.launch(in_f16 ? static_cast<const void*>(half.data()) : chunk.values.data(), in_f16);
  unsigned long long fault = kNoFault;
  p.fault = &fault;
  // 1.
  std::vector<float> y(plan.channels * plan.stride);
  std::vector<uint64_t> hash(plan.rows);
  std::vector<double> s1(plan.channels), s2(plan.channels);
  poison_scratch(y), poison_scratch(hash), poison_scratch(s1), poison_scratch(s2);
  p.y = y.data();
  p.row_hash = hash.data();
  p.column_s1 = s1.data();
  p.column_s2 = s2.data();
  for (size_t r = 0; r < plan.rows; ++r) kvs_encode_row(p, r);
  if (fault != kNoFault) {
    const uint32_t D = chunk.shape.head_dim;
    const uint64_t i = KvsEncodePlan::fault_value(fault);
    plan.throw_value_error(fault, std::span<const float>(values).subspan(i - i % D, D));
  }
  if (plan.plan_rows)
    for (size_t ch = 0; ch < plan.channels; ++ch) kvs_encode_column(p, ch);
  timed([&] { plan.plan_references(hash, s1, s2); });
  // 2.
  std::vector<int32_t> svals(plan.symbols());
  std::vector<uint8_t> channel_symbols(plan.symbols()), has_extras(plan.channels);
  std::vector<kvs_core::ChannelModel> models(plan.channels);
  poison_scratch(svals), poison_scratch(channel_symbols), poison_scratch(has_extras), poison_scratch(models);
  p.heads = plan.heads.data();
  p.literal_tokens = plan.literal_tokens.data();
  p.first = plan.first.empty() ? nullptr : plan.first.data();
  p.first_symbol = plan.first_symbol.data();
  p.svals = svals.data();
  p.channel_symbols = channel_symbols.data();
  p.models = models.data();
  p.has_extras = has_extras.data();
  if (p.first)
    for (size_t r = 0; r < plan.rows; ++r) kvs_encode_verify(p, r);
  for (size_t ch = 0; ch < plan.channels; ++ch) kvs_encode_channel(p, ch);
  if (KvsEncodePlan::needs_cpu(fault)) return on_cpu();
  if (fault != kNoFault) throw Error(fmt::format("codec kvs: internal error: GPU encoder fault {:#x}", fault));
  timed([&] { plan.plan_pieces(models); });
  // 3.
  const size_t np = plan.pieces.size();
  std::vector<uint8_t> piece_symbols(np * kKvsPieceSymbols), rans_slots(np * plan.kRansCapacity),
      extras_slots(np * plan.kExtrasCapacity);
  std::vector<uint32_t> rans_sizes(np), extras_sizes(np);
  poison_scratch(piece_symbols), poison_scratch(rans_slots), poison_scratch(extras_slots);
  poison_scratch(rans_sizes), poison_scratch(extras_sizes);
  p.pieces = plan.pieces.data();
  p.piece_count = uint32_t(np);
  p.group_offset = plan.group_offset.data();
  p.group_channels = plan.group_channels.data();
  p.piece_symbols = piece_symbols.data();
  p.rans_slots = rans_slots.data();
  p.extras_slots = extras_slots.data();
  p.rans_sizes = rans_sizes.data();
  p.extras_sizes = extras_sizes.data();
  for (uint32_t k = 0; k < np; ++k) kvs_encode_piece(p, k);
  // 4. The stream: the host's layout and prefix, then the device's part
  // (gather, table, CRC: stream_layout.h) run here.
  std::vector<uint64_t> off;
  std::optional<StreamLayout> layout;
  Bytes prefix;
  timed([&] {
    off = plan.offsets(rans_sizes, extras_sizes);
    layout.emplace(plan.layout(off));
    prefix = plan.prefix();
  });
  if (host_s) *host_s = host;
  return assemble_on_host(*layout, prefix, off, [&](uint8_t* payload) {
    for (uint32_t k = 0; k < np; ++k) kvs_encode_gather(p, off.data(), k, payload);
  });
}

}  // namespace kvs::codec::cuda::detail
