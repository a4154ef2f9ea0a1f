// `cachegen`: a reproduction of CacheGen's encoder (Liu et al., SIGCOMM'24) as
// its released code does it (scheme "code"):
//   - no delta coding; a layer's heads are merged into kv_heads x head_dim channels;
//   - one absmax scale per (layer, token) over all channels, separately for K
//     and V (stored as fp16, rounded up so no value exceeds it);
//   - symmetric quantization to bins - 1 symbols: q = round(x * M / max) + M,
//     M = bins / 2 - 1 (x * M, then / max, in float32, rounded half to even:
//     cachegen_core::quantize_symbol), x' = (q - M) * max / M, so
//     |x - x'| <= max / (2M). The released torch_quant (UChi-JCL/CacheGen
//     src/encoder, LMCache's CPU serializer) rounds x * (M / max), the factor
//     rounded first: the symbols differ only where x * M / max lies within
//     float rounding of a half-integer. LMCache's GPU serializer
//     (torch_quant_vectorized) rounds x * (M / max) + M instead, which breaks
//     exact ties the other way when M is odd (x = max / 2: ours rounds M / 2
//     to the even integer, it rounds 3M / 2 to the even one, a step apart;
//     M is odd for every bin count in the ladder but 6);
//     its decoder's (q - M) / M * max differs from ours by float rounding;
//   - bins per layer from a schedule that depends on depth (K: first / middle /
//     last third of the layers, as the released code's [0,10) / [10,20) /
//     [20,32) for 32 layers; V: the first 1/16 of the layers, as its [0,2),
//     and the rest), coarser in deeper layers. The released code has this
//     split for 32-layer (7B) models only: its 80-layer (70B) configuration
//     splits K at [0,20) / [20,40) / [40,80) with 32 / 32 / 16 bins at its
//     default level and V at [0,20) (LMCache) or [0,10) (CacheGen's
//     config/quantization.json); the fractions here give K [0,25) / [25,50) /
//     [50,80) and V [0,5) for 80 layers, which is not that configuration;
//   - a per-chunk 16-bit frequency table per (layer, kind, channel) shipped in
//     the chunk (the released code ships a 33-entry 16-bit CDF per channel),
//     every symbol at least 1/65536;
//   - entropy coding with 16-bit probabilities, one independent stream per
//     (layer, kind, channel) over at most `stream_tokens` (256) tokens. The
//     released code uses a 32-bit range coder (torchac); this uses the
//     project's rANS (codec/rans.h), whose size differs by a few bytes per
//     stream.
// Levels (0 = finest). CacheGen's three levels are our 1, 2 and 3:
//   level  K bins first/mid/last   V bins first/rest
//   0      64/64/64                64/64
//   1      32/32/32                32/32   (CacheGen level 3)
//   2      32/16/16                32/16   (CacheGen level 2, its default)
//   3      16/16/12                16/12   (CacheGen level 1)
//   4      12/8/8                  12/8
//   5      8/6/6                   8/6
//   6      6/4/4                   6/4
// The paper's scheme (anchor tokens with deltas, offline per-channel tables
// in a codec model file) is `scheme=paper`: codec/cachegen_paper.h. A
// scheme=code stream names no codec model (hash 0 in its header); a
// scheme=paper stream names one, and decode() dispatches on that.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "codec/codec.h"

namespace kvs::codec {

// Parameters: scheme (code, the default, or paper); stream_tokens (1..65535,
// default 256; scheme=code only). With options.model_file, a scheme=code codec
// also decodes scheme=paper streams of that model.
std::unique_ptr<Codec> make_cachegen_codec(const CodecOptions& options);

// Bins for (level, kind, layer) of a model with `layers` layers.
int cachegen_bins(int level, Kind kind, uint32_t layer, uint32_t layers);
inline constexpr int kCacheGenLevels = 7;

struct ParsedStream;  // codec/bitstream.h
// A parsed scheme=code stream's header and every section size its shape fixes
// (scales, tables, each rANS stream's state), checked before anything is
// allocated: the CPU decoder's checks and messages, shared with the CUDA
// planner (codec/cuda/plan.h). Throws CorruptStream.
void check_cachegen_stream(const ParsedStream& ps);
// The same checks and messages from the header and the sections' offsets
// (section_offsets in codec/bitstream.h: count + 1 entries), for the CUDA
// planner, which builds no list of sections.
struct StreamHeader;  // codec/bitstream.h
void check_cachegen_offsets(const StreamHeader& header, std::span<const uint32_t> offsets);

}  // namespace kvs::codec
