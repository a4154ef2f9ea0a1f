// kvs: the decoder (codec/kvs.h has the design, docs/bitstream.md the format).
#include "codec/kvs_internal.h"

#include <cstring>
#include <memory>

#include "codec/bitstream.h"
#include "codec/kvs_core.h"

namespace kvs::codec::kvs_detail {

std::vector<int32_t> KvsCodec::get_ints(std::span<const uint8_t> in, size_t* pos, size_t n, const char* what) const {
  if (*pos >= in.size()) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} truncated", what));
  const uint32_t j = in[(*pos)++];
  const int64_t centre = unzigzag(get_varint(in, pos, what));
  const uint32_t rans_bytes = get_varint(in, pos, what);
  if (rans_bytes > in.size() - *pos) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} truncated", what));
  const auto rans_part = in.subspan(*pos, rans_bytes);
  *pos += rans_bytes;
  const uint32_t extra_bytes = get_varint(in, pos, what);
  if (extra_bytes > in.size() - *pos) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} truncated", what));
  BitReader extras(in.subspan(*pos, extra_bytes));
  *pos += extra_bytes;
  const Spread sp = split_spread(j);
  const GaussTable& g = tables_[sp.table];
  std::vector<uint8_t> symbols(n);
  if (rans::decode(rans_part.data(), rans_part.size(), g.table, g.index, symbols.data(), n) != rans::DecodeStatus::kOk)
    throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} do not decode", what));
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t s = symbols[i] == 0 ? int64_t(int32_t(extras.get(kEscapeBits)))
                                      : ((int64_t(symbols[i]) - 1 - g.range) << sp.raw_bits) + extras.get(sp.raw_bits);
    const int64_t x = centre + s;
    if (x > kMaxQ || x < -kMaxQ) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} out of range", what));
    v[i] = int32_t(x);
  }
  extras.expect_end();
  return v;
}


namespace {

// get_ints (put_ints' layout: u8 spread, varint centre, varint rANS bytes,
// the rANS stream, varint extra bytes, the extras) for `count` vectors of n
// values back to back in `in` from *pos, into out[k * n + i]: the headers
// first, then the rANS streams eight at a time (independent chains that one
// core overlaps). The same values and end position as `count` get_ints
// calls; false (out and *pos unspecified) when any vector is not well
// formed, for the caller to decode them one by one for get_ints's message.
bool get_ints_interleaved(const std::vector<GaussTable>& tables, std::span<const uint8_t> in, size_t* pos,
                          size_t count, size_t n, int32_t* out) {
  struct Located {
    Spread sp;
    int64_t centre;
    std::span<const uint8_t> rans, extras;
  };
  std::vector<Located> at(count);
  size_t p = *pos;
  const auto varint = [&](uint32_t* v) {  // get_varint, without its messages
    *v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
      if (p >= in.size()) return false;
      const uint8_t b = in[p++];
      if (shift == 28 && b > 0x0f) return false;
      *v |= uint32_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  };
  for (Located& a : at) {
    uint32_t centre, rans_bytes, extra_bytes;
    if (p >= in.size()) return false;
    a.sp = split_spread(in[p++]);
    if (!varint(&centre) || !varint(&rans_bytes) || rans_bytes > in.size() - p) return false;
    a.centre = unzigzag(centre);
    a.rans = in.subspan(p, rans_bytes);
    p += rans_bytes;
    if (!varint(&extra_bytes) || extra_bytes > in.size() - p) return false;
    a.extras = in.subspan(p, extra_bytes);
    p += extra_bytes;
  }
  // The rANS streams copied with kPad zero bytes after each, so that a
  // block of kBlock steps (at most two bytes each) needs no check of its
  // end: decode_advance_unchecked gives decode_advance's state while the
  // stream lasts, and a stream that ends too early (where decode_advance
  // fails) has gone past its end after the block.
  constexpr size_t kLanes = 8, kBlock = 64, kPad = 2 * kBlock + 4;
  size_t padded_bytes = 0;
  for (const Located& a : at) padded_bytes += a.rans.size() + kPad;
  const auto padded = std::make_unique_for_overwrite<uint8_t[]>(padded_bytes);
  {
    uint8_t* q = padded.get();
    for (Located& a : at) {
      if (!a.rans.empty()) std::memcpy(q, a.rans.data(), a.rans.size());
      std::memset(q + a.rans.size(), 0, kPad);
      a.rans = {q, a.rans.size()};
      q += a.rans.size() + kPad;
    }
  }
  std::vector<uint8_t> symbols(kLanes * n);
  for (size_t k0 = 0; k0 < count; k0 += kLanes) {
    const size_t lanes = std::min(kLanes, count - k0);
    if (lanes < kLanes) {  // the last few, one at a time
      for (size_t l = 0; l < lanes; ++l) {
        const GaussTable& g = tables[at[k0 + l].sp.table];
        if (rans::decode(at[k0 + l].rans.data(), at[k0 + l].rans.size(), g.table, g.index, symbols.data() + l * n, n) !=
            rans::DecodeStatus::kOk)
          return false;
      }
    } else {
      rans::Decoder dec[kLanes];
      const GaussTable* g[kLanes];
      for (size_t l = 0; l < kLanes; ++l) {
        g[l] = &tables[at[k0 + l].sp.table];
        if (rans::decoder_init(at[k0 + l].rans.data(), at[k0 + l].rans.size(), &dec[l]) != rans::DecodeStatus::kOk)
          return false;
      }
      for (size_t i = 0; i < n;) {
        for (const size_t end = std::min(n, i + kBlock); i < end; ++i)
          for (size_t l = 0; l < kLanes; ++l) {
            const rans::Table& t = g[l]->table;
            const uint32_t slot = dec[l].x & (rans::kProbScale - 1);
            const uint32_t s = rans::find_symbol(t, g[l]->index, slot);
            rans::decode_advance_unchecked(&dec[l], t.freq[s], t.cum[s], slot);
            symbols[l * n + i] = uint8_t(s);
          }
        for (size_t l = 0; l < kLanes; ++l)
          if (dec[l].ptr > dec[l].end) return false;  // ran out (decode_advance would have failed)
      }
      for (size_t l = 0; l < kLanes; ++l)
        if (rans::decoder_finish(dec[l]) != rans::DecodeStatus::kOk) return false;
    }
    try {  // the values, as get_ints
      for (size_t l = 0; l < lanes; ++l) {
        const Located& a = at[k0 + l];
        const GaussTable& g = tables[a.sp.table];
        BitReader extras(a.extras);
        const uint8_t* sym = symbols.data() + l * n;
        int32_t* v = out + (k0 + l) * n;
        if (a.sp.raw_bits == 0 && a.extras.empty() && n > 0 && !std::memchr(sym, 0, n)) {
          // No escapes, no raw bits (the common case): v = centre + sym - 1 - range,
          // without a check when any symbol 1..255 gives a value in range.
          const int64_t base = a.centre - 1 - g.range;
          if (base + 1 >= -kMaxQ && base + 255 <= kMaxQ) {
            const int32_t b32 = int32_t(base);
            size_t i = 0;
            for (; i + 16 <= n; i += 16)  // fixed-length blocks: vectorized
              for (size_t k = 0; k < 16; ++k) v[i + k] = b32 + int32_t(sym[i + k]);
            for (; i < n; ++i) v[i] = b32 + int32_t(sym[i]);
            continue;
          }
        }
        for (size_t i = 0; i < n; ++i) {
          const int64_t sv = sym[i] == 0 ? int64_t(int32_t(extras.get(kEscapeBits)))
                                         : ((int64_t(sym[i]) - 1 - g.range) << a.sp.raw_bits) + extras.get(a.sp.raw_bits);
          const int64_t x = a.centre + sv;
          if (x > kMaxQ || x < -kMaxQ) return false;
          v[i] = int32_t(x);
        }
        extras.expect_end();
      }
    } catch (const CorruptStream&) {
      return false;
    }
  }
  *pos = p;
  return true;
}

}  // namespace

KvsLayout KvsCodec::parse(std::span<const uint8_t> stream) const { return parse(parse_stream(stream, CodecId::kKvs)); }

KvsLayout KvsCodec::parse(const ParsedStream& ps, bool locate_pieces,
                          const std::function<uint32_t*(const KvsLayout&)>& group_channels_to) const {
  KvsLayout layout;
  const StreamHeader& hd = ps.header;
  layout.header = hd;
  // Bits 1 (a RoPE table) and 2 (per-layer RoPE) exclude each other.
  if (hd.flags > 7 || (hd.flags & 6) == 6)
    throw CorruptStream(fmt::format("corrupt KV bitstream: kvs flags {} (expected 0 to 5)", hd.flags));
  const bool centroid = hd.flags & 1, rope_table = hd.flags & 2, per_layer = hd.flags & 4;
  layout.centroid = centroid;
  const KVShape& sh = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(sh.channels()), D = sh.head_dim, H = sh.kv_heads;
  const size_t planes = 2 * size_t(sh.layers), channels = planes * C, heads = planes * H;
  if (ps.sections.size() < 3) throw CorruptStream("corrupt KV bitstream: kvs has fewer than 3 sections");

  SectionReader params(ps.sections[0], "kvs parameters");
  auto read_table = [&] {
    if (D % 2) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs RoPE table for head_dim {} (odd)", D));
    std::vector<double> inv_freq(D / 2);
    for (double& f : inv_freq) {
      f = params.f32();
      if (!(f >= 0 && f <= kKvsMaxInvFreq))
        throw CorruptStream(fmt::format("corrupt KV bitstream: kvs RoPE frequency {}", f));
    }
    return inv_freq;
  };
  auto read_theta = [&] {
    const float theta = params.f32();
    if (!std::isfinite(theta) || (theta != 0 && !(theta > 1 && D % 2 == 0)))
      throw CorruptStream(fmt::format("corrupt KV bitstream: kvs rope_theta {}", theta));
    return theta > 0 ? rope_inv_freqs(theta, D) : std::vector<double>{};
  };
  KvsStreamRope& rope = layout.rope;
  if (per_layer) {
    const uint8_t n = params.bytes(1)[0];
    if (n < 1 || n > kKvsMaxRopeTables)
      throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} RoPE tables (1 to {})", n, kKvsMaxRopeTables));
    for (uint8_t i = 0; i < n; ++i) {
      const uint8_t form = params.bytes(1)[0];
      if (form > 1) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs RoPE table form {}", form));
      rope.tables.push_back(form ? read_table() : read_theta());
    }
    const auto of_layer = params.bytes(sh.layers);
    for (uint32_t l = 0; l < sh.layers; ++l)
      if (of_layer[l] >= n)
        throw CorruptStream(fmt::format("corrupt KV bitstream: kvs layer {}'s RoPE table {} (of {})", l, of_layer[l], n));
    rope.layer_table.assign(of_layer.begin(), of_layer.end());
  } else {
    rope.tables.push_back(rope_table ? read_table() : read_theta());
    rope.layer_table.assign(sh.layers, 0);
  }
  std::vector<float>& steps = layout.steps;
  steps.resize(planes);
  for (float& s : steps) {
    s = params.f32();
    if (!(s >= 1e-20f && s <= 1e20f)) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs step {}", s));
  }
  const auto modes = params.bytes(heads);
  params.expect_end();

  // Row references, per head in mode 1: its literal tokens and each token's
  // source (itself for a literal row). A head in mode 2 points at the lists
  // of the head it shares; one in mode 0 has none (every token literal), so
  // the lists grow with the references read (T codes per list), not with
  // the number of heads times T.
  std::vector<std::vector<uint32_t>>& literal_lists = layout.literal_lists;  // one per head in mode 1
  std::vector<std::vector<uint32_t>>& source_lists = layout.source_lists;
  std::vector<HeadRows>& rows = layout.rows;
  rows.resize(heads);
  {
    BitReader refs(ps.sections[1]);
    size_t previous = heads;  // the last head in copy mode
    std::vector<size_t> list_of(heads, 0);
    for (size_t ph = 0; ph < heads; ++ph) {
      if (modes[ph] > 2) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs row mode {}", modes[ph]));
      if (!modes[ph]) continue;
      if (modes[ph] == 2) {
        if (previous == heads) throw CorruptStream("corrupt KV bitstream: kvs shares the references of no head");
        list_of[ph] = list_of[previous];
        previous = ph;
        continue;
      }
      previous = ph;
      list_of[ph] = literal_lists.size();
      std::vector<uint32_t>& literal = literal_lists.emplace_back();
      std::vector<uint32_t>& source = source_lists.emplace_back(T);
      RecencyList recent(T);
      for (uint32_t t = 0; t < T; ++t) {
        const uint32_t rank = get_gamma(refs) - 1;
        if (rank == 0) {
          literal.push_back(t);
          source[t] = t;
        } else {
          if (rank > recent.size()) throw CorruptStream("corrupt KV bitstream: kvs row reference out of range");
          const uint32_t last = recent.time_of(rank);
          recent.remove(last);
          source[t] = source[last];  // the row used at `last` (its source is the row's first token)
        }
        recent.add(t);
      }
    }
    refs.expect_end();
    for (size_t ph = 0; ph < heads; ++ph)
      if (modes[ph]) {
        const size_t k = list_of[ph];
        rows[ph] = {literal_lists[k].data(), source_lists[k].data(), uint32_t(literal_lists[k].size())};
      } else {
        rows[ph] = {nullptr, nullptr, T};
      }
  }

  // Channel models: every plane's spreads and centres decoded together; if
  // any is not well formed, plane by plane for get_ints's message in the
  // stream's order (a plane's spreads checked before the next plane is read).
  const auto sec = ps.sections[2];
  size_t pos = 0;
  layout.C = C;
  layout.channel_ints = std::make_unique_for_overwrite<int32_t[]>(2 * planes * C);
  int32_t* const ints = layout.channel_ints.get();
  const auto check_spreads = [&](const int32_t* spread) {
    for (uint32_t c = 0; c < C; ++c)
      if (spread[c] < 0 || spread[c] > 255)
        throw CorruptStream(fmt::format("corrupt KV bitstream: kvs spread index {}", spread[c]));
  };
  if (!get_ints_interleaved(tables_, sec, &pos, 2 * planes, C, ints)) {
    pos = 0;
    for (size_t p = 0; p < planes; ++p) {
      const std::vector<int32_t> spread = get_ints(sec, &pos, C, "channel spreads");
      const std::vector<int32_t> centre = get_ints(sec, &pos, C, "channel centres");
      check_spreads(spread.data());
      std::copy(spread.begin(), spread.end(), ints + 2 * p * C);
      std::copy(centre.begin(), centre.end(), ints + (2 * p + 1) * C);
    }
  }
  for (size_t p = 0; p < planes; ++p) check_spreads(layout.spreads(p));  // the first bad one in the stream's order
  if (pos != sec.size()) throw CorruptStream("corrupt KV bitstream: kvs channel models have extra bytes");

  // Channels grouped by table: per table its channels and symbols (each
  // channel's literal tokens) counted, so that the section count is checked
  // and every array sized first; then, in channel order, each channel put
  // in its group, and where each table's pieces start: its symbols, channel
  // after channel, cut every kKvsStreamSymbols (piece m of the table starts
  // at its symbol m * kKvsStreamSymbols, in the channel holding it).
  static_assert(kTables <= 256);
  std::array<uint8_t, 256> table_of;  // split_spread(j).table
  for (uint32_t j = 0; j < 256; ++j) table_of[j] = uint8_t(split_spread(j).table);
  // Head ph: its first channel, the spreads of its channels, its literal tokens.
  struct Head {
    uint32_t channel;
    const int32_t* spread;
    uint64_t literals;
  };
  const auto head = [&](size_t ph) {
    const size_t p = ph / H, c = (ph % H) * D;
    return Head{uint32_t(p * C + c), ints + 2 * p * C + c, rows[ph].literals};
  };
  std::array<uint32_t, kTables> group_size{};
  std::array<uint64_t, kTables> group_symbols{};
  for (size_t ph = 0; ph < heads; ++ph) {
    const Head hd = head(ph);
    for (uint32_t d = 0; d < D; ++d) {
      const uint32_t g = table_of[uint8_t(hd.spread[d])];
      ++group_size[g];
      group_symbols[g] += hd.literals;
    }
  }
  uint64_t expected = 3;
  for (uint64_t n : group_symbols) expected += (n + kKvsStreamSymbols - 1) / kKvsStreamSymbols;
  if (ps.sections.size() != expected)
    throw CorruptStream(
        fmt::format("corrupt KV bitstream: kvs has {} sections, expected {}", ps.sections.size(), expected));

  std::vector<KvsPiece>& pieces = layout.pieces;  // the substreams, in section order: per table, its pieces
  pieces.resize(expected - 3);
  // Per table: where the group's next channel goes, its first piece, the
  // next piece to start, and the symbols before that one's first symbol
  // from the next channel's first.
  std::array<uint32_t, kTables> slot_of{};
  std::array<size_t, kTables> first_piece{}, next_piece{};
  std::array<uint64_t, kTables> gap{};
  for (uint32_t g = 0; g < kTables; ++g) {
    slot_of[g] = layout.group_offset[g];
    layout.group_offset[g + 1] = layout.group_offset[g] + group_size[g];
    next_piece[g] = first_piece[g];
    if (g + 1 < kTables)
      first_piece[g + 1] = first_piece[g] + size_t((group_symbols[g] + kKvsStreamSymbols - 1) / kKvsStreamSymbols);
  }
  layout.group_channels = group_channels_to ? group_channels_to(layout) : nullptr;
  if (!layout.group_channels) {
    layout.owned_group_channels = std::make_unique_for_overwrite<uint32_t[]>(channels);
    layout.group_channels = layout.owned_group_channels.get();
  }
  uint32_t* const group_channels = layout.group_channels;
  for (size_t ph = 0; ph < heads; ++ph) {
    const Head hd = head(ph);
    for (uint32_t d = 0; d < D; ++d) {
      const uint32_t g = table_of[uint8_t(hd.spread[d])];
      const uint32_t slot = slot_of[g]++;
      group_channels[slot] = hd.channel + d;
      uint64_t left = gap[g];
      for (; left < hd.literals; left += kKvsStreamSymbols) {  // a piece starts in this channel
        const size_t k = next_piece[g]++;
        const uint64_t start = uint64_t(k - first_piece[g]) * kKvsStreamSymbols;  // its first symbol in the table
        const uint32_t n = uint32_t(std::min<uint64_t>(kKvsStreamSymbols, group_symbols[g] - start));
        pieces[k] = {g, n, 3 + k, {}, {}, slot - layout.group_offset[g], uint32_t(left)};
      }
      gap[g] = left - hd.literals;
    }
  }
  if (locate_pieces)
    for (KvsPiece& pc : pieces) {
      const auto piece_sec = ps.sections[pc.section];
      size_t at = 0;
      const uint32_t rans_bytes = get_varint(piece_sec, &at, "substream");
      if (rans_bytes > piece_sec.size() - at)
        throw CorruptStream(
            fmt::format("corrupt KV bitstream: kvs substream {} rANS size {} too large", pc.section, rans_bytes));
      pc.rans = piece_sec.subspan(at, rans_bytes);
      pc.extras = piece_sec.subspan(at + rans_bytes);
    }

  return layout;
}


std::vector<double> KvsCodec::layer_shares(std::span<const uint8_t> stream) const {
  const KvsLayout layout = parse(stream);
  const KVShape& sh = layout.header.shape;
  const uint32_t C = uint32_t(sh.channels()), D = sh.head_dim, H = sh.kv_heads;
  // Channel ch (plane * C + c, plane = layer * 2 + kind): its symbols are its head's literal tokens.
  const auto symbols = [&](uint32_t ch) { return uint64_t(layout.rows[size_t(ch / C) * H + (ch % C) / D].literals); };
  std::vector<double> bytes(sh.layers, 0.0);
  struct Span {
    uint32_t layer;
    double symbols, raw_bits;
  };
  std::vector<Span> spans;  // per channel of a piece
  for (const KvsPiece& pc : layout.pieces) {
    // The piece's symbols, channel after channel of its table's group; its
    // rANS bytes split by symbols, its extras (each symbol's raw bits, then
    // the rare escapes) by raw bits, or by symbols when there are none.
    const uint32_t* group = layout.group(pc.table);
    const size_t group_size = layout.group_offset[pc.table + 1] - layout.group_offset[pc.table];
    spans.clear();
    double raw_bits = 0;
    uint64_t left = pc.n, skip = pc.first_literal;
    for (size_t i = pc.first_channel; left > 0 && i < group_size; ++i) {
      const uint64_t here = std::min(left, symbols(group[i]) - skip);
      const double raw = double(here) * split_spread(uint32_t(layout.model(group[i]).spread)).raw_bits;
      spans.push_back({group[i] / C / 2, double(here), raw});
      raw_bits += raw;
      left -= here, skip = 0;
    }
    const double rans = double(pc.rans.size() + 4), extras = double(pc.extras.size());  // 4: its size in the table
    for (const Span& sp : spans)
      bytes[sp.layer] += rans * sp.symbols / double(pc.n) +
                         extras * (raw_bits > 0 ? sp.raw_bits / raw_bits : sp.symbols / double(pc.n));
  }
  return layer_shares_from_bytes(stream.size(), std::move(bytes));
}

KVChunk KvsCodec::decode(std::span<const uint8_t> stream) const {
  const KvsLayout layout = parse(stream);
  const StreamHeader& hd = layout.header;
  const bool centroid = layout.centroid;
  const KVShape& sh = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(sh.channels()), D = sh.head_dim, H = sh.kv_heads, half = D / 2;
  const size_t planes = 2 * size_t(sh.layers), channels = planes * C, heads = planes * H;
  const std::vector<float>& steps = layout.steps;
  const std::vector<HeadRows>& rows = layout.rows;
  using Piece = KvsPiece;
  const std::vector<Piece>& pieces = layout.pieces;
  // Only now, with every section's size checked, the output (the header alone
  // can ask for 2^28 values).
  KVChunk out = chunk_for(hd);
  // [channel][token], channels `stride` apart, before rotation; every value used is written.
  const size_t stride = channel_stride(T);
  std::unique_ptr<float[]> tmp_buffer(new float[channels * stride + 16]);
  float* const tmp = aligned64(tmp_buffer.get());

  // A decoded piece's values into the channel-major buffer (kvs_core::piece_values, the code a GPU thread runs).
  auto piece_values = [&](const Piece& pc, const uint8_t* piece_sym) {
    const GaussTable& gt = tables_[pc.table];
    const uint32_t* group = layout.group(pc.table);
    kvs_core::BitReader extras(pc.extras.data(), pc.extras.size());
    const auto channel = [&](size_t gi) {
      const uint32_t ch = group[gi];
      const HeadRows& hr = rows[ch / D];
      const ChannelModel m = layout.model(ch);
      return kvs_core::ChannelView{tmp + size_t(ch) * stride, hr.literal, hr.literals, split_spread(m.spread).raw_bits,
                                   m.centre, steps[ch / C]};
    };
    switch (kvs_core::piece_values<true>(piece_sym, pc.n, pc.first_channel, pc.first_literal, channel,
                                         kvs_core::GaussView{gt.range, gt.offset}, centroid, &extras)) {
      case kvs_core::Fault::kNone: return;
      case kvs_core::Fault::kRawBitsTruncated: throw CorruptStream("corrupt KV bitstream: kvs raw bits truncated");
      case kvs_core::Fault::kRawBitsExtra: throw CorruptStream("corrupt KV bitstream: kvs raw bits have extra data");
      default:
        throw CorruptStream(fmt::format("corrupt KV bitstream: kvs substream {} value out of range", pc.section));
    }
  };

  // The rANS substreams, kLanes side by side (independent chains that one
  // core overlaps): each lane takes the next piece, longest first, as soon as
  // its own ends, so lanes stay busy although pieces differ in length (a
  // small chunk has tens of pieces of a few hundred to 16,384 symbols). Each
  // piece writes only its own channels' values, so the order is free.
  std::vector<uint32_t> order(pieces.size());
  for (uint32_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return pieces[a].n > pieces[b].n; });
  constexpr size_t kLanes = 4;
  std::vector<uint8_t> symbols(kLanes * kKvsStreamSymbols);
  struct Lane {
    const Piece* piece = nullptr;  // null: idle
    const GaussTable* table = nullptr;
    uint8_t* symbols = nullptr;
    uint32_t done = 0;  // symbols decoded
    bool ok = true;     // no step ran out of bytes
    rans::Decoder dec;
  };
  Lane lanes[kLanes];
  size_t next_piece = 0;
  auto start = [&](Lane& lane) {
    lane.piece = nullptr;
    if (next_piece == order.size()) return;
    const Piece& pc = pieces[order[next_piece++]];
    if (rans::decoder_init(pc.rans.data(), pc.rans.size(), &lane.dec) != rans::DecodeStatus::kOk)
      throw CorruptStream(fmt::format("corrupt KV bitstream: kvs substream {} does not decode", pc.section));
    lane.piece = &pc;
    lane.table = &tables_[pc.table];
    lane.done = 0;
    lane.ok = true;
  };
  auto finish = [&](Lane& lane) {
    if (!lane.ok || rans::decoder_finish(lane.dec) != rans::DecodeStatus::kOk)
      throw CorruptStream(fmt::format("corrupt KV bitstream: kvs substream {} does not decode", lane.piece->section));
    piece_values(*lane.piece, lane.symbols);
  };
  for (size_t k = 0; k < kLanes; ++k) {
    lanes[k].symbols = symbols.data() + k * kKvsStreamSymbols;
    start(lanes[k]);
  }
  auto all_busy = [&] {
    for (const Lane& lane : lanes)
      if (!lane.piece) return false;
    return true;
  };
  uint32_t sym;
  while (all_busy()) {  // a lane goes idle only when no piece is left
    uint32_t steps = kKvsStreamSymbols;
    for (const Lane& lane : lanes) steps = std::min(steps, lane.piece->n - lane.done);
    rans::Decoder d0 = lanes[0].dec, d1 = lanes[1].dec, d2 = lanes[2].dec, d3 = lanes[3].dec;
    const GaussTable &g0 = *lanes[0].table, &g1 = *lanes[1].table, &g2 = *lanes[2].table, &g3 = *lanes[3].table;
    uint8_t *s0 = lanes[0].symbols + lanes[0].done, *s1 = lanes[1].symbols + lanes[1].done,
            *s2 = lanes[2].symbols + lanes[2].done, *s3 = lanes[3].symbols + lanes[3].done;
    bool ok0 = true, ok1 = true, ok2 = true, ok3 = true;
    for (uint32_t i = 0; i < steps; ++i) {
      ok0 &= rans::decode_step(&d0, g0.table, g0.index, &sym), s0[i] = uint8_t(sym);
      ok1 &= rans::decode_step(&d1, g1.table, g1.index, &sym), s1[i] = uint8_t(sym);
      ok2 &= rans::decode_step(&d2, g2.table, g2.index, &sym), s2[i] = uint8_t(sym);
      ok3 &= rans::decode_step(&d3, g3.table, g3.index, &sym), s3[i] = uint8_t(sym);
    }
    lanes[0].dec = d0, lanes[1].dec = d1, lanes[2].dec = d2, lanes[3].dec = d3;
    lanes[0].ok &= ok0, lanes[1].ok &= ok1, lanes[2].ok &= ok2, lanes[3].ok &= ok3;
    for (Lane& lane : lanes) {
      lane.done += steps;
      if (lane.done == lane.piece->n) finish(lane), start(lane);
    }
  }
  for (Lane& lane : lanes) {  // the last pieces, one at a time
    if (!lane.piece) continue;
    const GaussTable& gt = *lane.table;
    for (uint32_t i = lane.done; i < lane.piece->n; ++i)
      lane.ok &= rans::decode_step(&lane.dec, gt.table, gt.index, &sym), lane.symbols[i] = uint8_t(sym);
    finish(lane);
  }
  // Channel-major values to [token][dim] rows, in blocks of tokens that stay in
  // cache; copied rows take their source's values; keys rotate back to their positions.
  const auto rope = rope_tables(layout.rope, hd.token_begin, T);
  constexpr uint32_t kBlock = 16;
  uint32_t src[kBlock];
  for (size_t ph = 0; ph < heads; ++ph) {
    const size_t p = ph / H;
    const auto& table = rope[layout.rope.layer_table[p / 2]];
    const bool key = p % 2 == 0 && !table.empty();
    const float* in = tmp + ph * size_t(D) * stride;
    float* base = out.values.data() + out.plane_offset(uint32_t(p / 2), Kind(p % 2)) + (ph % H) * size_t(T) * D;
    for (uint32_t t0 = 0; t0 < T; t0 += kBlock) {
      // A block's [D][kBlock] input tile stays in L1 while its rows are written in order.
      const uint32_t nb = std::min(kBlock, T - t0);
      for (uint32_t k = 0; k < nb; ++k) src[k] = rows[ph].source ? rows[ph].source[t0 + k] : t0 + k;
      for (uint32_t k = 0; k < nb; ++k) {
        float* row = base + size_t(t0 + k) * D;
        const float* col = in + src[k];
        if (!key) {
          for (uint32_t d = 0; d < D; ++d) row[d] = kvs_core::output_value(col, stride, d, half, false, nullptr);
          continue;
        }
        const auto* cs = &table[size_t(t0 + k) * half];
        for (uint32_t d = 0; d < D; ++d)
          row[d] = kvs_core::output_value(col, stride, d, half, true, cs[d < half ? d : d - half].data());
      }
    }
  }
  return out;
}


}  // namespace kvs::codec::kvs_detail
