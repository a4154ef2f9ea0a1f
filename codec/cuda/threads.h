// What each GPU thread does, as KVS_HD functions over plain launch structs
// (device pointers on a GPU, host pointers when codec/cuda/plan.h runs them
// on the CPU for tests): only indexing around the shared per-substream code
// (codec/cachegen_core.h, codec/kvs_core.h). Kernels (codec/cuda/kernels.cu)
// add launch geometry and shared memory, nothing else.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/cachegen_core.h"
#include "codec/cachegen_paper_core.h"
#include "codec/fp16.h"
#include "codec/hd.h"
#include "codec/kvs_core.h"
#include "codec/rans.h"

namespace kvs::codec::cuda::detail {

inline constexpr uint32_t kKvsPieceSymbols = 16384;  // kKvsStreamSymbols (codec/kvs.h)

// Fault codes beyond the shared cores' (cachegen_core::Fault 1..3, kvs_core::Fault 1..5).
inline constexpr uint32_t kFaultBadTable = 8;  // a cachegen frequency table
inline constexpr uint32_t kFaultBadScale = 9;  // a cachegen scale not finite or negative
// A chunk's first fault: (section << 8) | code, kept with atomicMin; all ones: none.
inline constexpr unsigned long long kNoFault = ~0ull;

// Keeps the smallest (first) fault of a chunk.
KVS_HD inline void report(unsigned long long* fault, uint64_t section, uint32_t code) {
  const unsigned long long v = (unsigned long long)(section << 8 | code);
#if defined(__CUDA_ARCH__)
  atomicMin(fault, v);
#else
  if (v < *fault) *fault = v;  // the host runs threads one at a time
#endif
}

// Output types (cuda::OutputType's values).
inline constexpr uint8_t kOutF32 = 0, kOutF16 = 1, kOutBF16 = 2;

KVS_HD inline void store(void* out, size_t i, float v, uint8_t out_type) {
  if (out_type == kOutF16)
    static_cast<uint16_t*>(out)[i] = f32_to_f16_bits(v);
  else if (out_type == kOutBF16)
    static_cast<uint16_t*>(out)[i] = f32_to_bf16_bits(v);
  else
    static_cast<float*>(out)[i] = v;
}


// cachegen scheme=code: one (layer, kind) plane.
struct CachegenPlane {
  int32_t M;              // symbols 0..2M
  uint32_t nsym;          // 2M + 1
  uint32_t table_offset;  // byte offset of its first channel's table in the tables section
};

struct CachegenCodeLaunch {
  const uint8_t* stream;     // the whole bitstream
  const uint32_t* offsets;   // section i is stream[offsets[i] .. offsets[i + 1])
  const CachegenPlane* planes;
  uint32_t layers, channels, head_dim, tokens, blocks, stream_tokens;
  void* out;  // [layer][kind][head][token][dim], fp16 or fp32
  uint8_t out_type;
  unsigned long long* fault;
};

// kvs: the Gaussian tables as the device reads them.
struct KvsGauss {
  rans::Table table;
  rans::SymbolIndex index;
  float offset[rans::kMaxSymbols];
  int32_t range;
};
struct KvsHead {
  uint32_t literal;   // offset into literal_tokens, or kNone (every token literal)
  uint32_t literals;  // how many
  uint32_t source;    // offset into sources, or kNone (each token its own source)
};
inline constexpr uint32_t kNone = 0xffffffffu;
struct KvsChannel {
  int32_t centre;
  uint32_t raw_bits;
};
struct KvsPieceDesc {
  uint32_t table, n, section;
  uint32_t rans_offset, rans_size, extras_offset, extras_size;  // in the stream
  uint32_t first_channel, first_literal;
};
struct KvsLaunch {
  const uint8_t* stream;
  const KvsGauss* gauss;
  const KvsPieceDesc* pieces;
  uint32_t piece_count;
  const uint32_t* group_offset;    // [table]: first entry of its channels in group_channels; [kTables]: the end
  const uint32_t* group_channels;
  const KvsChannel* channels;
  const KvsHead* heads;
  const uint32_t* literal_tokens;
  const uint32_t* sources;
  const float* steps;   // per plane
  // Per RoPE table of the stream: [token][pair][cos, sin] from the chunk's
  // first token (KvsRope::at); null: keys not rotated. layer_rope: each
  // layer's table.
  const float* rope[kvs_core::kMaxRopeTables];
  const uint8_t* layer_rope;
  uint8_t* symbols;     // scratch: piece k's symbols at k * kKvsStreamSymbols
  float* tmp;           // scratch: [channel][token], channels `stride` floats apart
  size_t stride;
  uint32_t layers, kv_heads, head_dim, tokens;
  bool centroid;
  void* out;
  uint8_t out_type;
  unsigned long long* fault;
};
// cachegen scheme=code encoding of a chunk in device memory.
inline constexpr uint32_t kFaultScaleRange = 10;  // a token's |x| beyond fp16 (fault "section": plane * T + t)
struct CachegenEncodeLaunch {
  const void* in;  // [layer][kind][head][token][dim], fp16 bits or floats
  bool in_f16;
  uint32_t layers, kv_heads, head_dim, tokens, stream_tokens, blocks;
  const CachegenPlane* planes;  // M, nsym, table_offset
  uint8_t* scales;              // the scales section: u16 per (plane, token)
  uint8_t* tables;              // the tables section
  uint8_t* symbols;             // scratch: [plane][channel][token]
  uint8_t* slots;               // scratch: per stream `capacity` bytes, the stream at the end
  size_t capacity;
  uint32_t* sizes;              // per stream (section - 2), 0: did not fit
  unsigned long long* fault;
};

KVS_HD inline float load_in(const CachegenEncodeLaunch& p, size_t i) {
  return p.in_f16 ? f16_bits_to_f32(static_cast<const uint16_t*>(p.in)[i]) : static_cast<const float*>(p.in)[i];
}

// Token t of `plane`: its absmax over all channels and its fp16 scale.
KVS_HD inline void cachegen_encode_scale(const CachegenEncodeLaunch& p, uint32_t plane, uint32_t t) {
  const uint32_t H = p.kv_heads, D = p.head_dim, T = p.tokens;
  float m = 0;
  for (uint32_t h = 0; h < H; ++h) {
    const size_t row = ((size_t(plane) * H + h) * T + t) * D;
    for (uint32_t d = 0; d < D; ++d) m = cachegen_core::abs_max_fold(m, load_in(p, row + d));
  }
  if (!(m <= cachegen_core::kHalfMax)) {
    report(p.fault, uint64_t(plane) * T + t, kFaultScaleRange);
    m = 0;
  }
  const uint16_t bits = f32_to_f16_bits(cachegen_core::round_up_scale(m));
  p.scales[2 * (size_t(plane) * T + t)] = uint8_t(bits);
  p.scales[2 * (size_t(plane) * T + t) + 1] = uint8_t(bits >> 8);
}

// Channel c of `plane`: its symbols (after the scales) and frequency table.
KVS_HD inline void cachegen_encode_channel(const CachegenEncodeLaunch& p, uint32_t plane, uint32_t c) {
  const uint32_t D = p.head_dim, T = p.tokens, C = p.kv_heads * D;
  const CachegenPlane pl = p.planes[plane];
  const size_t in0 = (size_t(plane) * p.kv_heads + c / D) * T * D + c % D;
  uint8_t* sym = p.symbols + (size_t(plane) * C + c) * T;
  uint32_t counts[64] = {};  // nsym <= 63
  for (uint32_t t = 0; t < T; ++t) {
    const uint8_t* sb = p.scales + 2 * (size_t(plane) * T + t);
    const float scale = f16_bits_to_f32(uint16_t(sb[0] | sb[1] << 8));
    const uint8_t q = scale > 0 ? cachegen_core::quantize_symbol(load_in(p, in0 + size_t(t) * D), pl.M, scale)
                                : uint8_t(pl.M);
    sym[t] = q;
    ++counts[q];
  }
  rans::Table table;
  rans::build_table(counts, pl.nsym, &table);
  uint8_t* out = p.tables + pl.table_offset + size_t(c) * pl.nsym * 2;
  for (uint32_t q = 0; q < pl.nsym; ++q) out[2 * q] = uint8_t(table.freq[q]), out[2 * q + 1] = uint8_t(table.freq[q] >> 8);
}

// Stream b of channel c of `plane`: rANS-coded (last symbol first) into its slot.
KVS_HD inline void cachegen_encode_block(const CachegenEncodeLaunch& p, uint32_t plane, uint32_t c, uint32_t b) {
  const uint32_t T = p.tokens, C = p.kv_heads * p.head_dim;
  const CachegenPlane pl = p.planes[plane];
  rans::EncSymbol es[64];
  const uint8_t* freq = p.tables + pl.table_offset + size_t(c) * pl.nsym * 2;
  uint32_t cum = 0;
  for (uint32_t q = 0; q < pl.nsym; ++q) {
    const uint32_t f = uint32_t(freq[2 * q]) | uint32_t(freq[2 * q + 1]) << 8;
    es[q] = rans::make_enc_symbol(f, cum);
    cum += f;
  }
  const size_t stream = (size_t(plane) * C + c) * p.blocks + b;
  const uint32_t token0 = b * p.stream_tokens;
  const uint32_t n = T - token0 < p.stream_tokens ? T - token0 : p.stream_tokens;
  const uint8_t* sym = p.symbols + (size_t(plane) * C + c) * T + token0;
  rans::Encoder enc;
  rans::encoder_init(p.slots + stream * p.capacity, p.capacity, &enc);
  bool ok = true;
  for (uint32_t i = n; i-- > 0;) ok &= rans::encode_step(&enc, es[sym[i]]);
  p.sizes[stream] = ok ? uint32_t(rans::encoder_finish(&enc, p.capacity)) : 0;
}

// Byte i of the payload (every stream back to back): from its stream's slot.
// offsets[s]: the payload offset of stream s (offsets[streams]: the end).
KVS_HD inline void cachegen_encode_gather(const CachegenEncodeLaunch& p, const uint64_t* offsets, size_t stream,
                                          uint8_t* payload) {
  const uint64_t begin = offsets[stream], size = offsets[stream + 1] - begin;
  const uint8_t* src = p.slots + (stream + 1) * p.capacity - size;
  for (uint64_t i = 0; i < size; ++i) payload[begin + i] = src[i];
}

// cachegen scheme=paper: one channel of one substream as the decoder reads it
// (in device scratch: the anchor value changes per group of tokens).
struct PaperChannel {
  float step_d, anchor_value, step_a, unused;
  const rans::CumTable* anchor;
  const rans::BasicPackedTable<64>* delta;
  KVS_HD const rans::CumTable& anchor_table() const { return *anchor; }
  KVS_HD const rans::BasicPackedTable<64>& delta_table() const { return *delta; }
};
struct PaperSubstream {
  uint32_t escapes_offset, count, rans_offset, rans_size;  // in the stream
};
struct CachegenPaperLaunch {
  const uint8_t* stream;
  const PaperSubstream* substreams;  // (layer, kind, head), head fastest
  uint32_t substream_count;
  const rans::CumTable* anchors;               // [record]: the model's anchor tables
  const float* step_a;                         // [record]
  const rans::BasicPackedTable<64>* deltas;    // [record]: delta tables at the stream's level
  const float* step_d;                         // [record] at that level
  const int32_t* M;                            // [layer] at that level
  PaperChannel* channels;                      // scratch: [substream][dim]
  uint32_t layers, kv_heads, head_dim, tokens;
  void* out;
  uint8_t out_type;
  unsigned long long* fault;
};

// cachegen: channel c's table of `plane` (false, and a fault, when invalid).
KVS_HD inline bool cachegen_table(const CachegenCodeLaunch& p, uint32_t plane, uint32_t c, rans::Table* table,
                                  rans::SymbolIndex* index) {
  const CachegenPlane pl = p.planes[plane];
  const uint8_t* freq = p.stream + p.offsets[1] + pl.table_offset + size_t(c) * pl.nsym * 2;
  if (cachegen_core::load_table(freq, pl.nsym, table, index)) return true;
  report(p.fault, 1, kFaultBadTable);
  return false;
}

// cachegen: the stream of token block b of channel c of `plane`.
KVS_HD inline void cachegen_block(const CachegenCodeLaunch& p, uint32_t plane, uint32_t c, uint32_t b,
                                  const rans::Table& tab, const rans::SymbolIndex& idx) {
  const CachegenPlane pl = p.planes[plane];
  const uint8_t* scales = p.stream + p.offsets[0] + size_t(plane) * p.tokens * 2;
  const uint32_t head = c / p.head_dim, d = c % p.head_dim;
  const size_t plane_base = size_t(plane) * p.channels * p.tokens;
  const size_t section = 2 + (size_t(plane) * p.channels + c) * p.blocks + b;
  const uint32_t token0 = b * p.stream_tokens;
  const uint32_t n = p.tokens - token0 < p.stream_tokens ? p.tokens - token0 : p.stream_tokens;
  const uint8_t* data[1] = {p.stream + p.offsets[section]};
  const size_t size[1] = {size_t(p.offsets[section + 1] - p.offsets[section])};
  const rans::Table* table[1] = {&tab};
  const rans::SymbolIndex* index[1] = {&idx};
  bool bad_scale = false;
  uint32_t lane = 0;
  const auto fault = cachegen_core::decode_streams<1>(
      data, size, table, index, n,
      [&](uint32_t, uint32_t i, uint32_t sym) {
        const uint32_t t = token0 + i;
        const uint16_t h = uint16_t(scales[2 * t] | scales[2 * t + 1] << 8);
        // Not finite (exponent all ones) or negative (not -0): the CPU decoder refuses it.
        if ((h & 0x7c00u) == 0x7c00u || ((h & 0x8000u) && (h & 0x7fffu))) bad_scale = true;
        return cachegen_core::dequantize(int(sym), pl.M, f16_bits_to_f32(h));
      },
      [&](uint32_t, uint32_t i, float v) {
        store(p.out, plane_base + (size_t(head) * p.tokens + token0 + i) * p.head_dim + d, v, p.out_type);
      },
      &lane);
  if (bad_scale) report(p.fault, 0, kFaultBadScale);
  if (fault != cachegen_core::Fault::kNone) report(p.fault, section, uint32_t(fault));
}

// cachegen scheme=paper: substream `index` (layer, kind, head), its rows in
// token order; records (layer, kind, channel) are those of codec/cachegen_paper.h.
KVS_HD inline void cachegen_paper_substream(const CachegenPaperLaunch& p, uint32_t index) {
  const uint32_t H = p.kv_heads, D = p.head_dim, C = H * D;
  const uint32_t h = index % H, l = index / H / 2, k = index / H % 2;
  const size_t r0 = (size_t(l) * 2 + k) * C + size_t(h) * D;
  PaperChannel* ch = p.channels + size_t(index) * D;
  for (uint32_t d = 0; d < D; ++d)
    ch[d] = PaperChannel{p.step_d[r0 + d], 0.0f, p.step_a[r0 + d], 0.0f, p.anchors + r0 + d, p.deltas + r0 + d};
  const PaperSubstream sub = p.substreams[index];
  rans::Decoder dec;
  if (rans::decoder_init(p.stream + sub.rans_offset, sub.rans_size, &dec) != rans::DecodeStatus::kOk) {
    report(p.fault, index, uint32_t(cachegen_paper_core::Fault::kDoesNotDecode));
    return;
  }
  const int M[1] = {p.M[l]};
  const uint8_t* escapes[1] = {p.stream + sub.escapes_offset};
  const uint32_t count[1] = {sub.count};
  const size_t base = size_t(index) * p.tokens * D;  // the output's [layer][kind][head] plane
  uint32_t lane = 0, used = 0;
  const auto fault = cachegen_paper_core::decode_rows<1>(
      &dec, ch, M, escapes, count, p.tokens, D,
      [&](uint32_t, uint32_t t, uint32_t d, float v) { store(p.out, base + size_t(t) * D + d, v, p.out_type); }, &lane,
      &used);
  if (fault != cachegen_paper_core::Fault::kNone) report(p.fault, index, uint32_t(fault));
}

// kvs: piece k's rANS symbols into scratch, then their values into the
// channel-major buffer.
KVS_HD inline void kvs_piece(const KvsLaunch& p, uint32_t k) {
  const KvsPieceDesc pc = p.pieces[k];
  const KvsGauss& g = p.gauss[pc.table];
  uint8_t* sym = p.symbols + size_t(k) * kKvsPieceSymbols;
  rans::Decoder dec;
  if (rans::decoder_init(p.stream + pc.rans_offset, pc.rans_size, &dec) != rans::DecodeStatus::kOk) {
    report(p.fault, pc.section, uint32_t(kvs_core::Fault::kBadInitialState));
    return;
  }
  bool ok = true;
  for (uint32_t i = 0; i < pc.n; ++i) {
    uint32_t s;
    ok &= rans::decode_step(&dec, g.table, g.index, &s);
    sym[i] = uint8_t(s);
  }
  if (!ok || rans::decoder_finish(dec) != rans::DecodeStatus::kOk) {
    report(p.fault, pc.section, uint32_t(kvs_core::Fault::kDoesNotDecode));
    return;
  }
  const uint32_t C = p.kv_heads * p.head_dim;
  const uint32_t* group = p.group_channels + p.group_offset[pc.table];
  const auto channel = [&](size_t gi) {
    const uint32_t ch = group[gi];
    const KvsHead h = p.heads[ch / p.head_dim];
    const KvsChannel m = p.channels[ch];
    return kvs_core::ChannelView{p.tmp + size_t(ch) * p.stride,
                                 h.literal == kNone ? nullptr : p.literal_tokens + h.literal, h.literals,
                                 m.raw_bits, m.centre, p.steps[ch / C]};
  };
  kvs_core::BitReader extras(p.stream + pc.extras_offset, pc.extras_size);
  const auto fault = kvs_core::piece_values<false>(sym, pc.n, pc.first_channel, pc.first_literal, channel,
                                                   kvs_core::GaussView{g.range, g.offset}, p.centroid, &extras);
  if (fault != kvs_core::Fault::kNone) report(p.fault, pc.section, uint32_t(fault));
}

// kvs: the output, as a transpose of the channel-major scratch through
// shared memory in tiles. A tile: kvs_tile_tokens(D) consecutive output
// tokens (rows) of one (layer, kind, head) ph, all D dims (the last tile of
// a head may hold fewer tokens). Its block's threads first load the rows'
// source values column by column (kvs_values_tile_load: consecutive threads
// on consecutive tokens of one dim, reading consecutive floats of the
// scratch where the sources are consecutive), then, after a barrier, store
// the rows (kvs_values_tile_store: consecutive threads on consecutive dims,
// writing consecutive outputs), each value kvs_core::output_value of the
// shared copy, so the arithmetic is that of the CPU decoder.
inline constexpr uint32_t kKvsTileThreads = 256;   // a block
inline constexpr uint32_t kKvsTileFloats = 4096;   // a tile's values (D <= 4096), 16 KB
inline constexpr uint32_t kKvsTileMaxTokens = 32;
inline constexpr uint32_t kKvsTileMaxDim = 1024;   // kMaxHeadDim (codec/bitstream.h)
// Tokens per tile: as many as fill kKvsTileFloats, 1 to kKvsTileMaxTokens.
KVS_HD inline uint32_t kvs_tile_tokens(uint32_t D) {
  const uint32_t tt = kKvsTileFloats / D;
  return tt < 1 ? 1 : tt > kKvsTileMaxTokens ? kKvsTileMaxTokens : tt;
}
// Floats between two dims' columns in shared memory: odd, so that 32
// consecutive dims of one token (a warp's reads in the store phase) lie in
// 32 different banks.
KVS_HD inline uint32_t kvs_tile_pitch(uint32_t D) { return kvs_tile_tokens(D) | 1u; }
// Shared floats a tile takes; at most kKvsTileShared.
KVS_HD inline uint32_t kvs_tile_shared(uint32_t D) { return kvs_tile_pitch(D) * D; }
inline constexpr uint32_t kKvsTileShared = kKvsTileFloats + kKvsTileMaxDim;  // pitch <= tokens + 1
// Tiles per (layer, kind, head), and in all.
KVS_HD inline uint32_t kvs_head_tiles(const KvsLaunch& p) {
  const uint32_t tt = kvs_tile_tokens(p.head_dim);
  return (p.tokens + tt - 1) / tt;
}
KVS_HD inline size_t kvs_tiles(const KvsLaunch& p) {
  return size_t(2) * p.layers * p.kv_heads * kvs_head_tiles(p);
}

// Where tile `tile` lies: its plane ph, its first token and its token count.
struct KvsTile {
  size_t ph;
  uint32_t t0, n, pitch;
};
KVS_HD inline KvsTile kvs_tile(const KvsLaunch& p, size_t tile) {
  const uint32_t tt = kvs_tile_tokens(p.head_dim), per_head = kvs_head_tiles(p);
  KvsTile k;
  k.ph = tile / per_head;
  k.t0 = uint32_t(tile % per_head) * tt;
  k.n = p.tokens - k.t0 < tt ? p.tokens - k.t0 : tt;
  k.pitch = kvs_tile_pitch(p.head_dim);
  return k;
}

// Thread j of tile's block, phase 1: values e = j, j + kKvsTileThreads, ...
// of the tile's D x n, dim d = e / n, token t0 + tl (tl = e % n): its row's
// source token's value of channel d into smem[d * pitch + tl].
KVS_HD inline void kvs_values_tile_load(const KvsLaunch& p, size_t tile, uint32_t j, float* smem) {
  const KvsTile k = kvs_tile(p, tile);
  const KvsHead h = p.heads[k.ph];
  const float* plane = p.tmp + k.ph * size_t(p.head_dim) * p.stride;
  // e's (d, tl) moved on by kKvsTileThreads without a division per value.
  const uint32_t step_d = kKvsTileThreads / k.n, step_t = kKvsTileThreads % k.n;
  for (uint32_t d = j / k.n, tl = j % k.n; d < p.head_dim;) {
    const uint32_t t = k.t0 + tl;
    const uint32_t src = h.source == kNone ? t : p.sources[h.source + t];
    smem[d * k.pitch + tl] = plane[size_t(d) * p.stride + src];
    d += step_d, tl += step_t;
    if (tl >= k.n) tl -= k.n, ++d;
  }
}

// Thread j, phase 2 (after every thread's phase 1): values e = j, j +
// kKvsTileThreads, ... of the tile's n x D rows, token t0 + e / D, dim
// e % D: the output value (keys rotated back) into out, where the tile's
// rows lie back to back.
KVS_HD inline void kvs_values_tile_store(const KvsLaunch& p, size_t tile, uint32_t j, const float* smem) {
  const KvsTile k = kvs_tile(p, tile);
  const uint32_t D = p.head_dim, H = p.kv_heads, half = D / 2;
  const size_t plane = k.ph / H;
  const float* rope = plane % 2 == 0 ? p.rope[p.layer_rope[plane / 2]] : nullptr;
  const bool key = rope != nullptr;
  const size_t base = (k.ph * p.tokens + k.t0) * D;
  const uint32_t step_t = kKvsTileThreads / D, step_d = kKvsTileThreads % D;
  for (uint32_t tl = j / D, d = j % D; tl < k.n;) {
    const uint32_t t = k.t0 + tl;
    const float* cs = key ? rope + (size_t(t) * half + (d < half ? d : d - half)) * 2 : nullptr;
    store(p.out, base + size_t(tl) * D + d, kvs_core::output_value(smem + tl, k.pitch, d, half, key, cs), p.out_type);
    tl += step_t, d += step_d;
    if (d >= D) d -= D, ++tl;
  }
}

}  // namespace kvs::codec::cuda::detail
