// kvs: the encoder (codec/kvs.h has the design).
#include "codec/kvs_internal.h"

#include <cfloat>
#include <cstring>
#include <memory>

#include "codec/bitstream.h"

namespace kvs::codec::kvs_detail {

void KvsCodec::build_encoder_tables() {
  rd_.resize(kTables);
  for (uint32_t k = 0; k < kTables; ++k) {
    const GaussTable& g = tables_[k];
    const double escape = g.cost_bits[0] + kEscapeBits;
    for (int32_t q = -g.range - 1; q <= g.range + 1; ++q) {
      const bool inside = q >= -g.range && q <= g.range;
      rd_[k].rec[q + g.range + 1] = inside ? double(q) - g.offset[1 + g.range + q] : double(q);
      rd_[k].lambda_bits[q + g.range + 1] = lambda_ * (inside ? g.cost_bits[1 + g.range + q] : escape);
    }
  }
  // Every cost is a multiple of the least ulp among them (the escape, float
  // cost + 32, of its float's ulp), and non-negative: with n x the largest at
  // most 2^53 x that ulp, every partial sum is exact.
  auto ulp = [](double x) {  // of a float x > 0
    int e = 0;
    std::frexp(x, &e);
    return std::ldexp(1.0, e - 24);
  };
  for (uint32_t j = kLastTable + 1; j < 256; ++j) {
    const Spread sp = split_spread(j);
    const GaussTable& g = tables_[sp.table];
    double least = ulp(g.cost_bits[0]), largest = g.cost_bits[0] + kEscapeBits;
    for (uint32_t s = 1; s < g.table.symbols; ++s) {
      const float term = g.cost_bits[s] + float(sp.raw_bits);
      least = std::min(least, ulp(term));
      largest = std::max(largest, double(term));
    }
    exact_n_[j] = uint64_t(std::floor(std::ldexp(least, 53) / largest));
  }
}


// The element of rank size / 2 (0-based) of v (not empty) in sorted order:
// by counting when v's range is small (the usual case: spreads and centres
// of nearby channels), else by nth_element.
static int32_t median_of(const std::vector<int32_t>& v) {
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  const int64_t range = int64_t(*hi) - int64_t(*lo);
  if (range < 4 * int64_t(v.size()) + 256) {
    std::vector<uint32_t> count(size_t(range) + 1, 0);
    for (int32_t x : v) ++count[size_t(int64_t(x) - *lo)];
    size_t k = v.size() / 2;
    for (size_t i = 0;; ++i) {
      if (k < count[i]) return int32_t(int64_t(*lo) + int64_t(i));
      k -= count[i];
    }
  }
  std::vector<int32_t> sorted = v;
  std::nth_element(sorted.begin(), sorted.begin() + ptrdiff_t(sorted.size() / 2), sorted.end());
  return sorted[sorted.size() / 2];
}

void KvsCodec::put_ints(Bytes& out, const std::vector<int32_t>& v) const {
  const int32_t centre = median_of(v);
  std::vector<int32_t> s(v.size());
  uint32_t hist[2 * kMaxRange + 1] = {};
  uint32_t far = 0;
  double sumsq = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    s[i] = int32_t(int64_t(v[i]) - centre);  // |v| <= 2^29
    sumsq += double(s[i]) * s[i];
    if (s[i] >= -kMaxRange && s[i] <= kMaxRange) ++hist[s[i] + kMaxRange]; else ++far;
  }
  bool near_tie = false;  // (a device-only flag)
  const uint32_t j = kvs_core::best_spread(encoder_tables(), s.data(), uint32_t(s.size()), hist, far, sumsq, &near_tie);
  const Spread sp = split_spread(j);
  const GaussTable& g = tables_[sp.table];
  std::vector<uint8_t> symbols(s.size());
  BitWriter extras;
  for (size_t i = 0; i < s.size(); ++i) {
    const int64_t hi = int64_t(s[i]) >> sp.raw_bits;
    if (hi < -g.range || hi > g.range) {
      symbols[i] = 0;
      extras.put(uint32_t(s[i]), kEscapeBits);
    } else {
      symbols[i] = uint8_t(1 + g.range + hi);
      extras.put(uint32_t(s[i]), sp.raw_bits);
    }
  }
  std::vector<uint8_t> buffer(4 + 2 * s.size() + 16);
  const size_t written = rans::encode(symbols.data(), symbols.size(), 1, g.encode_table, buffer.data(), buffer.size());
  if (written == 0) throw Error("codec kvs: internal error: rANS buffer too small");
  Bytes extra_bytes;
  extras.finish(extra_bytes);
  out.push_back(uint8_t(j));
  put_varint(out, zigzag(centre));
  put_varint(out, uint32_t(written));
  out.insert(out.end(), buffer.end() - ptrdiff_t(written), buffer.end());
  put_varint(out, uint32_t(extra_bytes.size()));
  out.insert(out.end(), extra_bytes.begin(), extra_bytes.end());
}


void throw_bad_value(float x, float step) {
  if (!(std::fabs(x) <= FLT_MAX)) throw Error("codec kvs: the chunk holds a value that is not finite");
  throw Error(fmt::format("codec kvs: value {} is too large for step {}", x, step));
}

void put_layer_rows(const std::vector<uint8_t>& modes, std::vector<RowPlan>* layer_plans, Bytes* params,
                    BitWriter* refs, std::vector<RowPlan>* plans) {
  for (size_t k = 0; k < modes.size(); ++k) {
    params->push_back(modes[k]);
    if (modes[k] == 1)
      for (uint32_t r : (*layer_plans)[k].ranks) put_gamma(*refs, r + 1);
    plans->push_back(std::move((*layer_plans)[k]));
  }
}

Bytes KvsCodec::models_section(std::span<const ChannelModel> model, size_t planes, uint32_t C) const {
  Bytes models;
  std::vector<int32_t> side(C);
  for (size_t p = 0; p < planes; ++p) {
    for (uint32_t c = 0; c < C; ++c) side[c] = int32_t(model[p * C + c].spread);
    put_ints(models, side);
    for (uint32_t c = 0; c < C; ++c) side[c] = model[p * C + c].centre;
    put_ints(models, side);
  }
  return models;
}

TableGroups table_groups(std::span<const ChannelModel> model) {
  // Counted, then filled (one array for all tables, as the GPU kernels read it).
  TableGroups groups;
  for (const ChannelModel& m : model) ++groups.offset[split_spread(m.spread).table + 1];
  for (uint32_t k = 0; k < kTables; ++k) groups.offset[k + 1] += groups.offset[k];
  groups.channels.resize(model.size());
  std::array<uint32_t, kTables> next{};
  std::copy(groups.offset.begin(), groups.offset.end() - 1, next.begin());
  for (size_t ch = 0; ch < model.size(); ++ch) groups.channels[next[split_spread(model[ch].spread).table]++] = uint32_t(ch);
  return groups;
}

std::vector<PiecePlan> plan_pieces(const TableGroups& groups, std::span<const uint64_t> first_symbol) {
  std::vector<PiecePlan> pieces;
  for (uint32_t g = 0; g < kTables; ++g) {
    const std::span<const uint32_t> group = groups.group(g);
    uint32_t n = 0;  // symbols in the open piece
    for (size_t gi = 0; gi < group.size(); ++gi) {
      const uint32_t ch = group[gi];
      const size_t count = first_symbol[ch + 1] - first_symbol[ch];
      for (size_t i = 0; i < count;) {
        if (n == 0) pieces.push_back({g, 0, gi, uint32_t(i)});
        const size_t take = std::min<size_t>(count - i, kKvsStreamSymbols - n);
        n += uint32_t(take);
        i += take;
        pieces.back().n = n;
        if (n == kKvsStreamSymbols) n = 0;
      }
    }
  }
  return pieces;
}

Bytes KvsCodec::encode_chunk(const KVChunk& chunk, int level) const {
  const std::vector<float> steps = level_steps(level, chunk.shape.layers);
  const KVShape& sh = chunk.shape;
  const uint32_t T = chunk.tokens, C = uint32_t(sh.channels()), D = sh.head_dim, H = sh.kv_heads;
  const KvsStreamRope coded = coded_rope(D, sh.layers, chunk.context_tokens);
  const auto rope = rope_tables(coded, chunk.token_begin, T);
  const uint32_t half = D / 2;
  const size_t planes = 2 * size_t(sh.layers), channels = planes * C, layer_channels = 2 * size_t(C);
  const kvs_core::EncoderTables tables = encoder_tables();
  // Layer l's keys' cos and sin per token (null: values, or keys coded as given).
  auto rope_at = [&](uint32_t l, Kind k, uint32_t t) -> const float* {
    const auto& table = rope[coded.layer_table[l]];
    return k == Kind::kKey && !table.empty() ? table[size_t(t) * half].data() : nullptr;
  };

  // A bad value of layer l: the error for the first one in chunk order.
  auto throw_first_bad_value = [&](uint32_t l) {
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = steps[2 * size_t(l) + size_t(k)];
      for (uint32_t h = 0; h < H; ++h)
        for (uint32_t t = 0; t < T; ++t) {
          const float* in = &chunk.at(l, k, h, t, 0);
          for (uint32_t d = 0; d < D; ++d) {
            const float x = kvs_core::row_value([&](uint32_t i) { return in[i]; }, rope_at(l, k, t), d, half);
            if (kvs_core::value_is_bad(x, x / step)) throw_bad_value(x, step);
          }
        }
    }
    throw Error("codec kvs: internal error: no bad value found");
  };

  Bytes params = params_section(D, sh.layers, chunk.context_tokens, steps);
  std::vector<RowPlan> plans;  // per head (layer, kind, head)
  BitWriter refs;
  std::vector<ChannelModel> model(channels);
  std::vector<size_t> first_symbol(channels + 1, 0);
  // Of each channel's literal tokens, channel after channel: s = q - m and its symbol.
  std::unique_ptr<int32_t[]> svals(new int32_t[channels * T]);
  std::unique_ptr<uint8_t[]> channel_symbols(new uint8_t[channels * T]);
  std::vector<uint8_t> has_extras(channels);

  // Per layer: the values to quantize, in steps, channel-major (channel = kind
  // * C + head * D + dim; keys pre-RoPE), and per channel their sum (as
  // double, in token order). Channels start every channel_stride(T) values.
  const size_t stride = channel_stride(T);
  std::unique_ptr<float[]> yl_buffer(new float[layer_channels * stride + 16]);  // every value used is written
  float* const yl = aligned64(yl_buffer.get());
  std::vector<double> sum_y(layer_channels);
  // Rows are read and rotated kBlock tokens at a time, then written channel-major.
  constexpr uint32_t kBlock = 16;
  std::vector<float> tile_y(size_t(kBlock) * D);
  std::vector<float> gathered_y(T);
  std::vector<uint8_t> modes;
  std::vector<RowPlan> layer_plans;
  ChannelScratch scratch;
  for (uint32_t l = 0; l < sh.layers; ++l) {
    std::fill(sum_y.begin(), sum_y.end(), 0.0);
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = steps[2 * size_t(l) + size_t(k)];
      for (uint32_t h = 0; h < H; ++h) {
        const size_t c0 = size_t(k) * C + size_t(h) * D;  // the layer channel of dim 0
        double* const sy = sum_y.data() + c0;
        for (uint32_t t0 = 0; t0 < T; t0 += kBlock) {
          const uint32_t nb = std::min(kBlock, T - t0);
          for (uint32_t b = 0; b < nb; ++b) {
            const uint32_t t = t0 + b;
            const float* in = &chunk.at(l, k, h, t, 0);
            float* ty = &tile_y[size_t(b) * D];
            const bool bad = kvs_core::row_in_steps([&](uint32_t i) { return in[i]; }, rope_at(l, k, t), D, step,
                                                    [&](uint32_t d, float y) { ty[d] = y; });
            if (bad) throw_first_bad_value(l);
            for (uint32_t d = 0; d < D; ++d) sy[d] += double(ty[d]);
          }
          for (uint32_t d = 0; d < D; ++d) {
            float* dy = yl + (c0 + d) * stride + t0;
            for (uint32_t b = 0; b < nb; ++b) dy[b] = tile_y[size_t(b) * D + d];
          }
        }
      }
    }

    // Row references.
    plan_layer(yl, stride, 2 * H, T, D, rows_, &modes, &layer_plans);
    put_layer_rows(modes, &layer_plans, &params, &refs, &plans);

    // Per channel: centre, spread and symbols over the head's literal tokens.
    const size_t ch0 = 2 * size_t(l) * C;
    for (size_t c = 0; c < layer_channels; ++c)
      first_symbol[ch0 + c + 1] = first_symbol[ch0 + c] + plans[(ch0 + c) / D].literal.size();
    for (size_t c = 0; c < layer_channels; ++c) {
      const size_t ch = ch0 + c;
      const RowPlan& plan = plans[ch / D];
      const uint32_t n = uint32_t(plan.literal.size());
      const float* y = yl + c * stride;
      double sum = sum_y[c];
      if (n != T) {  // some rows are references: the literal ones
        sum = 0;
        for (uint32_t i = 0; i < n; ++i) {
          gathered_y[i] = y[plan.literal[i]];
          sum += gathered_y[i];
        }
        y = gathered_y.data();
      }
      // Rows of heads that copy rows keep plain rounding, so a copy (whose
      // rounded values equal its source's) is also within one step.
      bool near_tie = false;  // (a device-only flag)
      has_extras[ch] = kvs_core::code_channel(tables, [y](uint32_t i) { return y[i]; }, n, sum,
                                              centroid_ && plan.ranks.empty(), &scratch,
                                              svals.get() + first_symbol[ch], channel_symbols.get() + first_symbol[ch],
                                              &model[ch], &near_tie);
    }
  }
  Bytes refs_bytes;
  refs.finish(refs_bytes);

  // Channel models, per plane: the spreads, then the centres.
  Bytes models = models_section(model, planes, C);

  // Channels grouped by table, in channel order; each group's symbols cut into
  // substreams of kKvsStreamSymbols, each with its raw bits and escapes.
  const TableGroups groups = table_groups(model);
  const std::vector<PiecePlan> pieces = plan_pieces(groups, first_symbol);
  std::unique_ptr<uint8_t[]> symbols(new uint8_t[first_symbol[channels]]);  // in substream order
  std::vector<size_t> piece_begin(pieces.size());
  std::vector<Bytes> piece_extras(pieces.size());
  {
    std::vector<uint8_t> extra_buffer(4 * size_t(kKvsStreamSymbols) + 8);
    size_t pos = 0;
    for (size_t k = 0; k < pieces.size(); ++k) {
      const PiecePlan& pc = pieces[k];
      const std::span<const uint32_t> group = groups.group(pc.table);
      kvs_core::BitSink extras(extra_buffer.data());
      kvs_core::piece_gather(
          pc.n, pc.first_channel, pc.first_literal,
          [&](size_t gi) {
            const uint32_t ch = group[gi];
            return kvs_core::PieceChannel{channel_symbols.get() + first_symbol[ch], svals.get() + first_symbol[ch],
                                          uint32_t(first_symbol[ch + 1] - first_symbol[ch]),
                                          split_spread(model[ch].spread).raw_bits, has_extras[ch] != 0};
          },
          symbols.get() + pos, &extras);
      piece_extras[k].assign(extra_buffer.data(), extra_buffer.data() + extras.finish());
      piece_begin[k] = pos;
      pos += pc.n;
    }
  }

  std::vector<Bytes> sections;
  sections.reserve(3 + pieces.size());
  sections.push_back(std::move(params));
  sections.push_back(std::move(refs_bytes));
  sections.push_back(std::move(models));
  // rANS, four substreams side by side (independent chains that one core
  // overlaps; each substream's bytes are those of encoding it alone, as the
  // GPU encoder does).
  constexpr size_t kWays = 4;
  const size_t capacity = 4 + 2 * size_t(kKvsStreamSymbols) + 16;
  std::vector<uint8_t> buffer(kWays * capacity);
  for (size_t p0 = 0; p0 < pieces.size(); p0 += kWays) {
    const size_t np = std::min(kWays, pieces.size() - p0);
    rans::Encoder enc[kWays];
    uint32_t nmin = kKvsStreamSymbols;
    for (size_t k = 0; k < np; ++k) nmin = std::min(nmin, pieces[p0 + k].n);
    bool ok = true;
    for (size_t k = 0; k < np; ++k) {  // symbols [nmin, n) one substream at a time, the rest side by side
      const PiecePlan& pc = pieces[p0 + k];
      const rans::EncodeTable& e = tables_[pc.table].encode_table;
      const uint8_t* sy = symbols.get() + piece_begin[p0 + k];
      rans::encoder_init(buffer.data() + k * capacity, capacity, &enc[k]);
      for (uint32_t i = pc.n; i-- > nmin;) ok &= rans::encode_step(&enc[k], e.sym[sy[i]]);
    }
    if (np == kWays) {
      const rans::EncodeTable &e0 = tables_[pieces[p0].table].encode_table,
                              &e1 = tables_[pieces[p0 + 1].table].encode_table,
                              &e2 = tables_[pieces[p0 + 2].table].encode_table,
                              &e3 = tables_[pieces[p0 + 3].table].encode_table;
      const uint8_t *s0 = symbols.get() + piece_begin[p0], *s1 = symbols.get() + piece_begin[p0 + 1],
                    *s2 = symbols.get() + piece_begin[p0 + 2], *s3 = symbols.get() + piece_begin[p0 + 3];
      for (uint32_t i = nmin; i-- > 0;) {
        ok &= rans::encode_step(&enc[0], e0.sym[s0[i]]);
        ok &= rans::encode_step(&enc[1], e1.sym[s1[i]]);
        ok &= rans::encode_step(&enc[2], e2.sym[s2[i]]);
        ok &= rans::encode_step(&enc[3], e3.sym[s3[i]]);
      }
    } else {
      for (size_t k = 0; k < np; ++k) {
        const PiecePlan& pc = pieces[p0 + k];
        const rans::EncodeTable& e = tables_[pc.table].encode_table;
        const uint8_t* sy = symbols.get() + piece_begin[p0 + k];
        for (uint32_t i = nmin; i-- > 0;) ok &= rans::encode_step(&enc[k], e.sym[sy[i]]);
      }
    }
    for (size_t k = 0; k < np; ++k) {
      const size_t written = ok ? rans::encoder_finish(&enc[k], capacity) : 0;
      if (written == 0) throw Error("codec kvs: internal error: rANS buffer too small");
      const uint8_t* end = buffer.data() + (k + 1) * capacity;
      Bytes sec;
      sec.reserve(5 + written + piece_extras[p0 + k].size());
      put_varint(sec, uint32_t(written));
      sec.insert(sec.end(), end - written, end);
      sec.insert(sec.end(), piece_extras[p0 + k].begin(), piece_extras[p0 + k].end());
      sections.push_back(std::move(sec));
    }
  }
  StreamHeader header = header_for(chunk, CodecId::kKvs, level);
  header.flags = header_flags();
  return write_stream(header, sections);
}


}  // namespace kvs::codec::kvs_detail
