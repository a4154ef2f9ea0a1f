// Baseline codecs.
//   raw    : the chunk's values at its dtype (fp32/fp16/bf16 bytes); bit-exact; one level.
//   quant8 : uniform symmetric 8-bit quantization, the baseline CacheGen compares
//            against. Grouping: one absmax scale per (layer, kind, token) over all
//            kv_heads x head_dim channels (stored as fp32), as CacheGen's
//            default_quantization with bins = 256 (its src/utils.py torch_quant):
//            q = round_half_even(x * (127 / max)) (float32: the factor rounded
//            first, as torch_quant does), x' = q * (max / 127) (torch_quant:
//            q / 127 * max, the same up to float rounding), so
//            |x - x'| <= max / 254 per element (plus float rounding). A value
//            that is not finite is refused (kvs::Error). No entropy coding:
//            8 bits per element plus 32 bits per (layer, kind, token).
#pragma once

#include <memory>

#include "codec/codec.h"

namespace kvs::codec {

std::unique_ptr<Codec> make_raw_codec(const CodecOptions& options);
std::unique_ptr<Codec> make_quant8_codec(const CodecOptions& options);
// Lossless zstd (level 3) over the dtype bytes; bit-exact.
std::unique_ptr<Codec> make_zstd_codec(const CodecOptions& options);

// Rejects parameters other than `known` (kvs::Error naming codec and key).
void check_params(const std::string& codec, const CodecParams& params, std::initializer_list<const char*> known);

}  // namespace kvs::codec
