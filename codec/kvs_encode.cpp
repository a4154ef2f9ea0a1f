// kvs: the encoder (codec/kvs.h has the design).
#include "codec/kvs_internal.h"

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


uint32_t KvsCodec::best_spread(const int32_t* s, uint32_t n, const uint32_t* hist, uint32_t far, double sumsq) const {
  const double sd = std::sqrt(sumsq / n);
  const int j0 = sd > 0 ? int(std::lrint(kSpreadCenter + 8 * std::log2(sd))) : 0;
  int32_t lo = -kMaxRange, hi = kMaxRange;  // the histogram's occupied range
  while (lo < hi && !hist[lo + kMaxRange]) ++lo;
  while (hi > lo && !hist[hi + kMaxRange]) --hi;
  // Spreads with raw bits b: the histogram of s >> b (built once per b).
  uint32_t shifted[2 * kMaxRange + 1];
  int32_t shifted_lo = 0, shifted_hi = -1;  // its occupied range within [-kMaxRange, kMaxRange]
  uint32_t shifted_b = 0;
  uint32_t best_j = 0;
  double best_bits = INFINITY;
  for (int j = std::max(0, j0 - 4); j <= std::min(255, j0 + 4); ++j) {
    const Spread sp = split_spread(uint32_t(j));
    const GaussTable& g = tables_[sp.table];
    const double escape = g.cost_bits[0] + kEscapeBits;
    double bits = 0;
    if (sp.raw_bits == 0) {
      bits = far * escape;
      for (int32_t v = lo; v <= hi; ++v)
        if (hist[v + kMaxRange]) bits += hist[v + kMaxRange] * (std::abs(v) <= g.range ? g.cost_bits[1 + g.range + v] : escape);
    } else if (n <= exact_n_[size_t(j)]) {
      // The per-value sum below, as counts x costs: exact either way (exact_n_).
      if (shifted_b != sp.raw_bits) {
        std::fill(shifted, shifted + 2 * kMaxRange + 1, 0u);
        shifted_lo = kMaxRange, shifted_hi = -kMaxRange;
        for (uint32_t i = 0; i < n; ++i) {
          const int32_t v = std::clamp(s[i] >> sp.raw_bits, -kMaxRange - 1, kMaxRange + 1);
          if (v >= -kMaxRange && v <= kMaxRange) ++shifted[v + kMaxRange];
          shifted_lo = std::min(shifted_lo, v), shifted_hi = std::max(shifted_hi, v);
        }
        shifted_lo = std::max(shifted_lo, -kMaxRange), shifted_hi = std::min(shifted_hi, kMaxRange);
        shifted_b = sp.raw_bits;
      }
      uint64_t inside = 0;
      for (int32_t v = std::max(shifted_lo, -g.range); v <= std::min(shifted_hi, g.range); ++v) {
        const uint32_t count = shifted[v + kMaxRange];
        inside += count;
        bits += double(count) * double(g.cost_bits[1 + g.range + v] + float(sp.raw_bits));
      }
      bits += double(n - inside) * escape;
    } else {
      for (uint32_t i = 0; i < n; ++i) {
        const int64_t hi = int64_t(s[i]) >> sp.raw_bits;
        bits += (hi < -g.range || hi > g.range) ? escape : g.cost_bits[1 + g.range + hi] + sp.raw_bits;
      }
    }
    if (bits < best_bits) best_bits = bits, best_j = uint32_t(j);
  }
  return best_j;
}

void KvsCodec::put_ints(Bytes& out, const std::vector<int32_t>& v) const {
  std::vector<int32_t> sorted = v;
  std::nth_element(sorted.begin(), sorted.begin() + ptrdiff_t(sorted.size() / 2), sorted.end());
  const int32_t centre = sorted[sorted.size() / 2];
  std::vector<int32_t> s(v.size());
  uint32_t hist[2 * kMaxRange + 1] = {};
  uint32_t far = 0;
  double sumsq = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    s[i] = int32_t(int64_t(v[i]) - centre);  // |v| <= 2^29
    sumsq += double(s[i]) * s[i];
    if (s[i] >= -kMaxRange && s[i] <= kMaxRange) ++hist[s[i] + kMaxRange]; else ++far;
  }
  const uint32_t j = best_spread(s.data(), uint32_t(s.size()), hist, far, sumsq);
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


bool KvsCodec::code_channel(const float* y, uint32_t n, double sum_y, bool rdo, ChannelScratch* scratch, int32_t* out,
                            uint8_t* symbols, ChannelModel* model) const {
  const int32_t m = int32_t(std::lrint(sum_y / n));
  // Rounded values relative to the centre, their histogram (four partial
  // counts, so that repeated values do not wait on one counter) and sum of squares.
  uint32_t(*part)[2 * kMaxRange + 1] = scratch->part;
  uint32_t* hist = scratch->hist;
  uint32_t far = 0;  // |s| > kMaxRange
  uint64_t sumsq = 0;
  uint32_t max_abs = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const int64_t r = int64_t(round_to_int(y[i])) - int64_t(m);  // |r| <= 2^30
    out[i] = int32_t(r);
    sumsq += uint64_t(r * r);
    max_abs = std::max(max_abs, uint32_t(r < 0 ? -r : r));
    if (r >= -kMaxRange && r <= kMaxRange) ++part[i & 3][r + kMaxRange]; else ++far;
  }
  const int32_t occupied = int32_t(std::min<uint32_t>(max_abs, kMaxRange));  // counts in [-occupied, occupied]
  for (int32_t v = kMaxRange - occupied; v <= kMaxRange + occupied; ++v) {
    hist[v] = part[0][v] + part[1][v] + part[2][v] + part[3][v];
    part[0][v] = part[1][v] = part[2][v] = part[3][v] = 0;
  }
  // The variance as the plain sum of double(r)^2 in order: the integer sum
  // when every partial sum is below 2^53 (then that sum is exact), else that loop.
  double var = 0;
  if (n > 0 && max_abs <= (1u << 26) && uint64_t(max_abs) * max_abs <= (uint64_t(1) << 53) / n) {
    var = double(sumsq);
  } else {
    for (uint32_t i = 0; i < n; ++i) var += double(out[i]) * double(out[i]);
  }
  const uint32_t best_j = best_spread(out, n, hist, far, var);
  std::fill(hist + kMaxRange - occupied, hist + kMaxRange + occupied + 1, 0u);
  // With centroid reconstruction each value takes whichever of its two
  // neighbouring reconstruction points costs less in distortion + lambda x bits,
  // among those within one step of it.
  const Spread sp = split_spread(best_j);
  if (rdo && sp.raw_bits == 0) {
    const GaussTable& g = tables_[sp.table];
    const RdTable& rd = rd_[sp.table];
    const double escape = g.cost_bits[0] + kEscapeBits;
    constexpr double kLimit = 1.0 + 1e-6;  // keeps |error| <= 1 step (the nearer point always qualifies)
    for (uint32_t i = 0; i < n; ++i) {
      const double dd = double(y[i]) - m;
      const int64_t whole = int64_t(dd);
      const int64_t q0 = whole - int64_t(double(whole) > dd);  // floor(dd)
      if (q0 >= -g.range - 1 && q0 <= g.range) {
        // Both points from the table: the same operations as below.
        const size_t k = size_t(q0 + g.range + 1);
        const double e0 = (dd - rd.rec[k]) * (dd - rd.rec[k]), e1 = (dd - rd.rec[k + 1]) * (dd - rd.rec[k + 1]);
        const bool ok0 = !(e0 > kLimit), ok1 = !(e1 > kLimit);
        const double c0 = e0 + rd.lambda_bits[k], c1 = e1 + rd.lambda_bits[k + 1];
        // Without branches (the choice is data-dependent): q0 + 1 if it
        // qualifies and q0 does not or costs more, else q0 if it qualifies.
        const bool take1 = ok1 & (!ok0 | (c1 < c0));
        const int32_t chosen = int32_t(q0) + int32_t(take1);
        out[i] = (ok0 | ok1) ? chosen : out[i];
        continue;
      }
      double best_c = INFINITY;
      for (int64_t q = q0; q <= q0 + 1; ++q) {
        const bool inside = q >= -g.range && q <= g.range;
        const double rec = inside ? double(q) - g.offset[1 + g.range + q] : double(q);
        const double e = (dd - rec) * (dd - rec);
        if (e > kLimit) continue;
        const double cost = e + lambda_ * (inside ? g.cost_bits[1 + g.range + q] : escape);
        if (cost < best_c) best_c = cost, out[i] = int32_t(q);
      }
    }
  }
  *model = {best_j, m};
  // Symbols: 1 + range + (s >> raw bits) in the table, else 0 (an escape).
  const int32_t range = tables_[sp.table].range;
  if (sp.raw_bits == 0) {
    bool escapes = false;
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t u = uint32_t(out[i] + range);  // in the table iff u <= 2 range
      symbols[i] = u <= uint32_t(2 * range) ? uint8_t(u + 1) : 0;
      escapes |= symbols[i] == 0;
    }
    return escapes;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t hi = out[i] >> sp.raw_bits;
    symbols[i] = hi < -range || hi > range ? 0 : uint8_t(1 + range + hi);
  }
  return true;
}

Bytes KvsCodec::encode(const KVChunk& chunk, int level) const {
  if (level < 0 || level >= levels())
    throw Error(fmt::format("codec kvs: level {} out of range (0..{})", level, levels() - 1));
  const KVShape& sh = chunk.shape;
  const uint32_t T = chunk.tokens, C = uint32_t(sh.channels()), D = sh.head_dim, H = sh.kv_heads;
  const std::vector<float> steps = steps_for(level, sh.layers);
  const double theta = (D % 2 == 0) ? rope_theta_ : 0.0;
  const auto rope = theta > 0 ? rope_table(theta, chunk.token_begin, T, D) : std::vector<std::array<float, 2>>{};
  const uint32_t half = D / 2;
  const size_t planes = 2 * size_t(sh.layers), channels = planes * C, layer_channels = 2 * size_t(C);

  // A bad value of layer l: the error for the first one in chunk order.
  auto throw_bad_value = [&](uint32_t l) {
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = steps[2 * size_t(l) + size_t(k)];
      for (uint32_t h = 0; h < H; ++h)
        for (uint32_t t = 0; t < T; ++t) {
          const float* in = &chunk.at(l, k, h, t, 0);
          for (uint32_t d = 0; d < D; ++d) {
            float x = in[d];
            if (k == Kind::kKey && theta > 0) {
              const auto& cs = rope[size_t(t) * half + (d % half)];
              const float o1 = in[d % half], o2 = in[d % half + half];
              x = d < half ? o1 * cs[0] + o2 * cs[1] : o2 * cs[0] - o1 * cs[1];
            }
            if (!std::isfinite(x)) throw Error("codec kvs: the chunk holds a value that is not finite");
            const float y = x / step;
            if (!(std::fabs(y) <= float(kMaxQ)))
              throw Error(fmt::format("codec kvs: value {} is too large for step {}", x, step));
          }
        }
    }
    throw Error("codec kvs: internal error: no bad value found");
  };

  Bytes params, models;
  put_f32(params, float(theta));
  for (float s : steps) put_f32(params, s);
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
  std::vector<float> tile_y(size_t(kBlock) * D), rotated(D);
  std::vector<float> gathered_y(T);
  std::vector<uint8_t> modes;
  std::vector<RowPlan> layer_plans;
  ChannelScratch scratch;
  for (uint32_t l = 0; l < sh.layers; ++l) {
    std::fill(sum_y.begin(), sum_y.end(), 0.0);
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = steps[2 * size_t(l) + size_t(k)];
      const bool rotate = k == Kind::kKey && theta > 0;
      for (uint32_t h = 0; h < H; ++h) {
        const size_t c0 = size_t(k) * C + size_t(h) * D;  // the layer channel of dim 0
        double* const sy = sum_y.data() + c0;
        for (uint32_t t0 = 0; t0 < T; t0 += kBlock) {
          const uint32_t nb = std::min(kBlock, T - t0);
          for (uint32_t b = 0; b < nb; ++b) {
            const uint32_t t = t0 + b;
            const float* in = &chunk.at(l, k, h, t, 0);
            const float* x = in;
            if (rotate) {
              const std::array<float, 2>* cs = &rope[size_t(t) * half];
              for (uint32_t i = 0; i < half; ++i) {
                rotated[i] = in[i] * cs[i][0] + in[i + half] * cs[i][1];
                rotated[i + half] = in[i + half] * cs[i][0] - in[i] * cs[i][1];
              }
              x = rotated.data();
            }
            float* ty = &tile_y[size_t(b) * D];
            bool bad = false;
            for (uint32_t d = 0; d < D; ++d) {
              const float v = x[d] / step;
              ty[d] = v;
              bad |= !std::isfinite(x[d]) || !(std::fabs(v) <= float(kMaxQ));
            }
            if (bad) throw_bad_value(l);
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
    for (uint32_t k = 0; k < 2 * H; ++k) {
      params.push_back(modes[k]);
      if (modes[k] == 1)
        for (uint32_t r : layer_plans[k].ranks) put_gamma(refs, r + 1);
      plans.push_back(std::move(layer_plans[k]));
    }

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
      has_extras[ch] = code_channel(y, n, sum, centroid_ && plan.ranks.empty(), &scratch,
                                    svals.get() + first_symbol[ch], channel_symbols.get() + first_symbol[ch],
                                    &model[ch]);
    }
  }
  Bytes refs_bytes;
  refs.finish(refs_bytes);

  // Channel models, per plane: the spreads, then the centres, each an integer
  // vector coded like the values (centre, spread, rANS symbols).
  std::vector<int32_t> side(C);
  for (size_t p = 0; p < planes; ++p) {
    for (uint32_t c = 0; c < C; ++c) side[c] = int32_t(model[p * C + c].spread);
    put_ints(models, side);
    for (uint32_t c = 0; c < C; ++c) side[c] = model[p * C + c].centre;
    put_ints(models, side);
  }

  // Channels grouped by table, in channel order; each group's symbols cut into
  // substreams of kKvsStreamSymbols, each with its raw bits and escapes.
  std::vector<std::vector<uint32_t>> groups(kTables);
  for (size_t ch = 0; ch < channels; ++ch) groups[split_spread(model[ch].spread).table].push_back(uint32_t(ch));
  struct Piece {
    uint32_t table;
    size_t begin;  // in symbols
    uint32_t n;
    Bytes extras;
  };
  std::vector<Piece> pieces;
  std::unique_ptr<uint8_t[]> symbols(new uint8_t[first_symbol[channels]]);  // in substream order
  {
    size_t pos = 0;
    for (uint32_t g = 0; g < kTables; ++g) {
      BitWriter extras;
      size_t begin = pos;
      auto close_piece = [&] {
        Bytes bytes;
        extras.finish(bytes);
        pieces.push_back({g, begin, uint32_t(pos - begin), std::move(bytes)});
        begin = pos;
      };
      for (uint32_t ch : groups[g]) {
        const uint32_t b = split_spread(model[ch].spread).raw_bits;
        size_t i = first_symbol[ch];
        while (i < first_symbol[ch + 1]) {
          // Up to the channel's end or the piece's.
          const size_t end = std::min(first_symbol[ch + 1], i + (begin + kKvsStreamSymbols - pos));
          std::memcpy(symbols.get() + pos, channel_symbols.get() + i, end - i);
          if (has_extras[ch])
            for (size_t j = i; j < end; ++j) extras.put(uint32_t(svals[j]), channel_symbols[j] ? b : kEscapeBits);
          pos += end - i;
          i = end;
          if (pos - begin == kKvsStreamSymbols) close_piece();
        }
      }
      if (pos != begin) close_piece();
    }
  }

  std::vector<Bytes> sections;
  sections.reserve(3 + pieces.size());
  sections.push_back(std::move(params));
  sections.push_back(std::move(refs_bytes));
  sections.push_back(std::move(models));
  // rANS, four substreams side by side (independent chains that one core
  // overlaps; each substream's bytes are those of encoding it alone).
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
      const Piece& pc = pieces[p0 + k];
      const rans::EncodeTable& e = tables_[pc.table].encode_table;
      rans::encoder_init(buffer.data() + k * capacity, capacity, &enc[k]);
      for (uint32_t i = pc.n; i-- > nmin;) ok &= rans::encode_step(&enc[k], e.sym[symbols[pc.begin + i]]);
    }
    if (np == kWays) {
      const rans::EncodeTable &e0 = tables_[pieces[p0].table].encode_table,
                              &e1 = tables_[pieces[p0 + 1].table].encode_table,
                              &e2 = tables_[pieces[p0 + 2].table].encode_table,
                              &e3 = tables_[pieces[p0 + 3].table].encode_table;
      const uint8_t *s0 = symbols.get() + pieces[p0].begin, *s1 = symbols.get() + pieces[p0 + 1].begin,
                    *s2 = symbols.get() + pieces[p0 + 2].begin, *s3 = symbols.get() + pieces[p0 + 3].begin;
      for (uint32_t i = nmin; i-- > 0;) {
        ok &= rans::encode_step(&enc[0], e0.sym[s0[i]]);
        ok &= rans::encode_step(&enc[1], e1.sym[s1[i]]);
        ok &= rans::encode_step(&enc[2], e2.sym[s2[i]]);
        ok &= rans::encode_step(&enc[3], e3.sym[s3[i]]);
      }
    } else {
      for (size_t k = 0; k < np; ++k) {
        const Piece& pc = pieces[p0 + k];
        const rans::EncodeTable& e = tables_[pc.table].encode_table;
        for (uint32_t i = nmin; i-- > 0;) ok &= rans::encode_step(&enc[k], e.sym[symbols[pc.begin + i]]);
      }
    }
    for (size_t k = 0; k < np; ++k) {
      const size_t written = ok ? rans::encoder_finish(&enc[k], capacity) : 0;
      if (written == 0) throw Error("codec kvs: internal error: rANS buffer too small");
      const uint8_t* end = buffer.data() + (k + 1) * capacity;
      Bytes sec;
      sec.reserve(5 + written + pieces[p0 + k].extras.size());
      put_varint(sec, uint32_t(written));
      sec.insert(sec.end(), end - written, end);
      sec.insert(sec.end(), pieces[p0 + k].extras.begin(), pieces[p0 + k].extras.end());
      sections.push_back(std::move(sec));
    }
  }
  StreamHeader header = header_for(chunk, CodecId::kKvs, level);
  header.flags = centroid_ ? 1 : 0;
  return write_stream(header, sections);
}


}  // namespace kvs::codec::kvs_detail
