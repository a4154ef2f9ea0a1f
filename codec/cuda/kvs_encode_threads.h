// What each GPU thread of the kvs encoder (codec/cuda/encode.h,
// Encoder::encode_kvs) does, as KVS_HD functions over one plain launch struct
// (device pointers on a GPU, host pointers when codec/cuda/kvs_encode_plan.h
// runs them on the CPU for tests): indexing around the per-row, per-channel
// and per-piece code the CPU encoder runs (codec/kvs_encode_core.h).
//
// The chunk goes through four kernels, the host deciding what is global and
// small in between (codec/cuda/kvs_encode_plan.h):
//   1. kvs_encode_row (per row: layer, kind, head, token): the values in
//      steps, keys rotated back to before RoPE, into a channel-major buffer;
//      refused values; each row's hash of its rounded values.
//      kvs_encode_column (per channel): the sums the row planner estimates a
//      dimension's bits from. -> host: row references (from the hashes).
//   2. kvs_encode_verify (per row): a row sent as a reference equals its
//      source (else the hashes collided: the host then encodes on the CPU).
//      kvs_encode_channel (per channel): centre, spread, s = q - m and the
//      rANS symbols of its literal tokens. -> host: the models section and
//      the substreams' layout.
//   3. kvs_encode_piece (per substream): its symbols and raw bits gathered,
//      rANS-coded alone (as the CPU's four side by side code each).
//   4. kvs_encode_gather (per substream): its section (varint size, rANS
//      bytes, raw bits) into the payload, at its place in the stream (the
//      host computes the offsets; the table and CRC: codec/cuda/stream_threads.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/cuda/threads.h"
#include "codec/fp16.h"
#include "codec/hd.h"
#include "codec/kvs_encode_core.h"
#include "codec/rans.h"

namespace kvs::codec::cuda::detail {

// Fault codes of the kvs encoder (its own fault word; "section": see each).
inline constexpr uint32_t kFaultKvsBadValue = 40;       // a value refused (at: its index in the chunk)
inline constexpr uint32_t kFaultKvsHashCollision = 41;  // two different rows with one hash (at: the row)
inline constexpr uint32_t kFaultKvsNearTie = 42;        // a spread search centre near a rounding tie (at: channel)

// A head (layer, kind, head) after the row plan.
struct KvsEncHead {
  uint32_t literal;   // offset of its literal tokens in literal_tokens, or kNone (every token)
  uint32_t literals;  // how many
  uint32_t rdo;       // 1: its channels take the rate-distortion choice (centroid, no references)
};
// A substream: n symbols of `table` from the first_literal-th symbol of the
// first_channel-th channel of the table's group.
struct KvsEncPiece {
  uint32_t table, n, first_channel, first_literal;
};

inline constexpr uint8_t kNoRope = 0xff;  // a layer whose keys are coded as given

struct KvsEncodeLaunch {
  // The chunk: [layer][kind][head][token][dim], fp16 bits or floats.
  const void* in;
  bool in_f16;
  uint32_t layers, kv_heads, head_dim, tokens;
  const float* steps;  // per plane (layer, kind)
  const float* rope;   // per table: [token][pair][cos, sin] (tokens x D floats)
  const uint8_t* layer_rope;  // per layer: its table in rope, kNoRope: keys coded as given
  bool rows;           // row references planned (hashes and column sums wanted)
  kvs_core::EncoderTables tables;
  // 1.
  float* y;          // values in steps, [channel][token], channels `stride` floats apart
  size_t stride;
  uint64_t* row_hash;  // [plane * H + head][token]
  double* column_s1;   // [channel]
  double* column_s2;
  // 2. (after the row plan)
  const KvsEncHead* heads;       // [plane * H + head]
  const uint32_t* literal_tokens;
  const uint32_t* first;         // [plane * H + head][token]: the row's source by hash (null: none checked)
  const uint64_t* first_symbol;  // [channel]: where its symbols start; [channels]: the end
  int32_t* svals;                // s = q - m per symbol
  uint8_t* channel_symbols;      // per symbol
  kvs_core::ChannelModel* models;  // [channel]
  uint8_t* has_extras;             // [channel]
  // 3. and 4. (after the models)
  const KvsEncPiece* pieces;
  uint32_t piece_count;
  const uint32_t* group_offset;    // [table]: its first entry in group_channels; [kTables]: the end
  const uint32_t* group_channels;
  uint8_t* piece_symbols;          // scratch: piece k's at k * kKvsPieceSymbols
  uint8_t* rans_slots;             // per piece rans_capacity bytes, the stream at the end
  size_t rans_capacity;
  uint8_t* extras_slots;           // per piece extras_capacity bytes from the start
  size_t extras_capacity;
  uint32_t* rans_sizes;            // per piece, 0: did not fit
  uint32_t* extras_sizes;
  unsigned long long* fault;
};

// A key row's cos and sin (D / 2 pairs) for plane (layer, kind) at token t; null: not rotated.
KVS_HD inline const float* kvs_row_rope(const KvsEncodeLaunch& p, size_t plane, uint32_t t) {
  if (plane % 2) return nullptr;
  const uint8_t table = p.layer_rope[plane / 2];
  return table == kNoRope ? nullptr : p.rope + (size_t(table) * p.tokens + t) * p.head_dim;
}

KVS_HD inline float kvs_load(const KvsEncodeLaunch& p, size_t i) {
  return p.in_f16 ? f16_bits_to_f32(static_cast<const uint16_t*>(p.in)[i]) : static_cast<const float*>(p.in)[i];
}

// Row `row` = (plane * H + head) * T + token: its values in steps into y,
// the first refused value reported, its hash.
KVS_HD inline void kvs_encode_row(const KvsEncodeLaunch& p, size_t row) {
  const uint32_t D = p.head_dim, T = p.tokens, H = p.kv_heads, t = uint32_t(row % T);
  const size_t ph = row / T, plane = ph / H;
  const float step = p.steps[plane];
  const float* cs = kvs_row_rope(p, plane, t);
  const size_t in0 = row * D;
  float* y0 = p.y + ph * D * p.stride + t;
  const auto in = [&](uint32_t k) { return kvs_load(p, in0 + k); };
  const bool bad = kvs_core::row_in_steps(in, cs, D, step, [&](uint32_t d, float v) { y0[size_t(d) * p.stride] = v; });
  if (bad) {
    for (uint32_t d = 0; d < D; ++d) {
      const float x = kvs_core::row_value(in, cs, d, D / 2);
      if (kvs_core::value_is_bad(x, x / step)) {
        report(p.fault, in0 + d, kFaultKvsBadValue);
        break;
      }
    }
    return;
  }
  if (!p.rows) return;
  uint64_t hash = 0;  // of the rounded values, dimension after dimension (as kvs_detail::plan_layer's)
  for (uint32_t d = 0; d < D; ++d)
    hash = kvs_core::hash_step(hash, uint32_t(kvs_core::round_to_int(y0[size_t(d) * p.stride])));
  p.row_hash[row] = hash;
}

// Channel ch: the row planner's sums of its rounded values and their squares.
KVS_HD inline void kvs_encode_column(const KvsEncodeLaunch& p, size_t ch) {
  kvs_core::column_sums(p.y + ch * p.stride, p.tokens, &p.column_s1[ch], &p.column_s2[ch], [](uint32_t, int32_t) {});
}

// Row `row`: when the plan takes it for a repeat of an earlier row (the
// first with its hash), that the two are equal after rounding.
KVS_HD inline void kvs_encode_verify(const KvsEncodeLaunch& p, size_t row) {
  const uint32_t T = p.tokens, D = p.head_dim, t = uint32_t(row % T), u = p.first[row];
  if (u == t) return;
  const float* col = p.y + (row / T) * D * p.stride;
  for (uint32_t d = 0; d < D; ++d)
    if (kvs_core::round_to_int(col[size_t(d) * p.stride + u]) != kvs_core::round_to_int(col[size_t(d) * p.stride + t])) {
      report(p.fault, row, kFaultKvsHashCollision);
      return;
    }
}

// Channel ch: its model, s values and symbols over its head's literal tokens.
KVS_HD inline void kvs_encode_channel(const KvsEncodeLaunch& p, size_t ch) {
  const KvsEncHead h = p.heads[ch / p.head_dim];
  const float* col = p.y + ch * p.stride;
  const uint32_t* lit = h.literal == kNone ? nullptr : p.literal_tokens + h.literal;
  const auto y = [&](uint32_t i) { return col[lit ? lit[i] : i]; };
  double sum = 0;  // in order, as the CPU's
  for (uint32_t i = 0; i < h.literals; ++i) sum += double(y(i));
  kvs_core::ChannelScratch<1> scratch;
  bool near_tie = false;
  const uint64_t at = p.first_symbol[ch];
  p.has_extras[ch] = kvs_core::code_channel(p.tables, y, h.literals, sum, h.rdo != 0, &scratch, p.svals + at,
                                            p.channel_symbols + at, &p.models[ch], &near_tie);
  if (near_tie) report(p.fault, ch, kFaultKvsNearTie);
}

// Piece k: its symbols and raw bits gathered, then rANS-coded alone.
KVS_HD inline void kvs_encode_piece(const KvsEncodeLaunch& p, uint32_t k) {
  const KvsEncPiece pc = p.pieces[k];
  const uint32_t* group = p.group_channels + p.group_offset[pc.table];
  uint8_t* sym = p.piece_symbols + size_t(k) * kKvsPieceSymbols;
  kvs_core::BitSink extras(p.extras_slots + size_t(k) * p.extras_capacity);
  kvs_core::piece_gather(
      pc.n, pc.first_channel, pc.first_literal,
      [&](size_t gi) {
        const uint32_t ch = group[gi];
        const uint64_t at = p.first_symbol[ch];
        return kvs_core::PieceChannel{p.channel_symbols + at, p.svals + at, uint32_t(p.first_symbol[ch + 1] - at),
                                      kvs_core::split_spread(p.models[ch].spread).raw_bits, p.has_extras[ch] != 0};
      },
      sym, &extras);
  p.extras_sizes[k] = uint32_t(extras.finish());
  const rans::EncodeTable& e = p.tables.gauss[pc.table].encode_table;
  rans::Encoder enc;
  rans::encoder_init(p.rans_slots + size_t(k) * p.rans_capacity, p.rans_capacity, &enc);
  bool ok = true;
  for (uint32_t i = pc.n; i-- > 0;) ok &= rans::encode_step(&enc, e.sym[sym[i]]);
  p.rans_sizes[k] = ok ? uint32_t(rans::encoder_finish(&enc, p.rans_capacity)) : 0;
}

// Piece k's section (varint rANS size, the rANS bytes, the raw bits) into
// payload at offsets[k].
KVS_HD inline void kvs_encode_gather(const KvsEncodeLaunch& p, const uint64_t* offsets, uint32_t k, uint8_t* payload) {
  const uint32_t rans_size = p.rans_sizes[k], extras_size = p.extras_sizes[k];
  uint8_t* out = kvs_core::put_varint(payload + offsets[k], rans_size);
  const uint8_t* src = p.rans_slots + size_t(k + 1) * p.rans_capacity - rans_size;
  for (uint32_t i = 0; i < rans_size; ++i) out[i] = src[i];
  out += rans_size;
  src = p.extras_slots + size_t(k) * p.extras_capacity;
  for (uint32_t i = 0; i < extras_size; ++i) out[i] = src[i];
}

}  // namespace kvs::codec::cuda::detail
