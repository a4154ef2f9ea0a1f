// `kivi2`, `kivi4`: the KIVI baselines (Liu et al., ICML'24, "KIVI: A
// Tuning-Free Asymmetric 2bit Quantization for KV Cache"), as its released
// code (github.com/jy-yuan/KIVI: models/llama_kivi.py, quant/new_pack.py)
// quantizes a prefilled cache. The stored context is treated as KIVI treats
// the cache after prefill, each chunk encoding its part of it independently.
//
// Asymmetric uniform quantization to b = 2 (kivi2) or 4 (kivi4) bits per
// group of G elements (parameter `group`, default 32, the paper's G):
//   zero  = min of the group, stored as fp16 rounded down,
//   scale = (max - zero) / (2^b - 1), stored as fp16 rounded up,
//   q     = clamp(round_half_even((x - zero) / scale), 0, 2^b - 1)  (0 if scale is 0),
//   x'    = q * scale + zero                      (float32 arithmetic),
// so |x - x'| <= scale / 2 for every element (plus float32 rounding).
// KIVI's code keeps scale and zero point in the cache dtype (fp16) and
// computes in fp16 with round-to-nearest; here the rounding directions are
// chosen so the bound holds exactly (the scale differs from KIVI's by at
// most one fp16 ulp; for fp16 caches the zero point is the min itself), and
// the arithmetic is float32.
//   keys  : per channel: a group is G consecutive tokens of one (head, channel);
//   values: per token: a group is G consecutive channels of one (head, token)
//           within head_dim (the last group of a token is shorter when
//           head_dim is not a multiple of G; KIVI's code requires it to be).
// Full-precision residual (parameter `residual`, R, default 128 as in the
// paper; a multiple of G, 0 allowed): as KIVI's prefill of a C-token context,
//   keys  : the last C mod R tokens stay unquantized (so the quantized keys
//           form whole groups); with R = 0, C mod G;
//   values: the last min(C, R) tokens stay unquantized.
// KIVI keeps them in fp16 because decoding appends to them; for a stored
// context they are the last tokens of the whole context, so with
// `residual_scope` = context (the default) only the chunks that hold the
// context's last tokens carry them: C is the chunk's context_tokens
// (codec/kv.h), and a chunk's keys [0, key_tokens) are quantized in groups
// of G tokens from the chunk's first token, the last group shorter when
// key_tokens is not a multiple of G (never when chunks and their starts are
// multiples of G). A chunk with context_tokens 0 stands alone (C = its
// tokens). `residual_scope` = chunk treats every chunk as a whole context
// (each keeps its own residual, as before issue 22).
// R = 0 (quantize everything but the keys' last C mod G tokens) is this
// project's extension, not a KIVI setting (KIVI's llama_kivi.py and
// mistral_kivi.py prefill take the token count modulo residual_length).
// Unquantized tokens are stored at the chunk's dtype (fp16 for the fp16
// caches KIVI works on), bit-exact.
// Codes are bit-packed (4 or 2 per byte, first code in the lowest bits).
// Size per quantized element: b + 32 / G bits (3 for kivi2, 5 for kivi4 at
// G = 32: the paper's "2-bit" and "4-bit" count the codes only); residual
// elements: 16 bits (fp16). One level ("int2" / "int4").
// Bitstream: docs/bitstream.md.
#pragma once

#include <cstdint>
#include <memory>

#include "codec/codec.h"

namespace kvs::codec {

// Parameters: group (1..65535, default 32), residual (0..2^20, a multiple of
// group, default 128), residual_scope (context, the default, or chunk).
std::unique_ptr<Codec> make_kivi2_codec(const CodecOptions& options);
std::unique_ptr<Codec> make_kivi4_codec(const CodecOptions& options);

// Which tokens of a `tokens`-token chunk are quantized: keys [0, key_tokens),
// values [0, value_tokens); the rest are the full-precision residual.
struct KiviSplit {
  uint32_t key_tokens = 0;
  uint32_t value_tokens = 0;
};
KiviSplit kivi_split(uint32_t tokens, uint32_t group, uint32_t residual);
// The same for tokens [begin, begin + tokens) of a context of
// `context_tokens` tokens (>= begin + tokens): counted from the chunk's first token.
KiviSplit kivi_split_in_context(uint64_t begin, uint32_t tokens, uint64_t context_tokens, uint32_t group,
                                uint32_t residual);

}  // namespace kvs::codec
