// `kvs`: the project's own KV-cache codec (docs/codecs.md has the design and
// its measurements, docs/bitstream.md the format).
//
// Entropy-coded uniform scalar quantization, shaped to what a KV cache is:
//   - keys are rotated back to before RoPE (positions token_begin + t, HF's
//     rotate-half pairing (i, i + head_dim/2), frequency
//     rope_theta^(-2i/head_dim), or a scaled RoPE's per-pair frequencies
//     (llama3, YaRN, LongRoPE, linear, dynamic NTK), which the stream then
//     carries): pre-RoPE keys have stable per-channel means that RoPE smears
//     into variance. The decoder rotates back; the rotation is orthogonal, so
//     it keeps the squared error. Any frequencies decode exactly; only those
//     of the model's RoPE compress well;
//   - one uniform step per (layer, kind) = level step x weight, the weights
//     from the model's measured sensitivity; the steps are written into the
//     stream, so the decoder needs no model knowledge;
//   - per (layer, kind, channel) a centre m and a spread index j (sigma =
//     2^((j - 64) / 8) steps) sent in the chunk, themselves coded compactly;
//     s = q - m is rANS-coded under a discretized Gaussian of that sigma. The
//     Gaussian tables are built once from integer constants (bit-exact
//     everywhere); wide channels send their low bits raw; a value outside its
//     table is an escape plus 32 bits. Channels that share a table share an
//     rANS substream (at most kKvsStreamSymbols symbols each);
//   - reconstruction at the bin's centroid under that Gaussian, the encoder
//     choosing per value the neighbouring point with the least error^2 +
//     lambda x bits (never more than a step away);
//   - rows (a head's values at one token) that repeat an earlier token's after
//     rounding are sent as move-to-front references (layer 0's K and V depend
//     only on the token).
// Error bound per value: step / 2 with centroid=0, one step with centroid
// reconstruction (the default); keys sqrt(2) times that (a rotated pair's
// error has at most the norm of the pre-RoPE pair's), plus float rounding.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codec/codec.h"

namespace kvs::codec {

inline constexpr int kKvsLevels = 10;
// Symbols per rANS substream at most (a GPU decodes substreams in parallel).
inline constexpr uint32_t kKvsStreamSymbols = 16384;

// The level step before the per-(layer, kind) weight: kKvsStep0 x 2^(0.75 level),
// 0.15 .. 16 (chosen to span cachegen's quality range on the bundled model).
inline constexpr float kKvsStep0 = 0.15f;
inline constexpr double kKvsLevelLog2Ratio = 0.75;
// The largest RoPE frequency a stream may carry (radians per position; RoPE's
// are at most 1).
inline constexpr float kKvsMaxInvFreq = 1000.0f;
float kvs_level_step(int level);
// The default per-(layer, kind) step weights K0,V0,K1,V1,... for a model of
// `layers` layers.
std::vector<float> kvs_default_weights(uint32_t layers);

// Parameters (encoder choices; the decoder reads everything from the stream):
//   rope_theta : RoPE base of the model (default 10000; 0: keys coded as given)
//   rope_inv_freq : instead of rope_theta, the head_dim/2 frequencies
//                f0:f1:... (radians per position, in [0, kKvsMaxInvFreq]) of a
//                model whose RoPE is scaled or otherwise not rope_theta's
//                (llm/kvs_calibration.h gives a model's); written into every
//                stream (4 bytes each). Partial rotary (pairs (i, i + r/2) for
//                a rotary dim r < head_dim) is not expressible: use 0 there
//   rope_inv_freq_long, rope_long_after : with rope_inv_freq, LongRoPE's
//                second table: chunks of a context of more than
//                rope_long_after tokens (KVChunk::context_tokens) are coded
//                with it, as the model rotates a prompt that long
//   rope_alt_theta or rope_alt_inv_freq, with rope_alt_layers : a second
//                RoPE (a base, 0 for no RoPE, or a table) for the layers
//                rope_alt_layers (l0:l1:..., 0-based), e.g. gemma3's sliding
//                layers at rope_local_base_freq; the stream then carries
//                both and each layer's (flags bit 2). Without it, layers whose
//                model rotates otherwise decode exactly but code larger
//   weights    : 2 x layers step multipliers K0:V0:K1:V1:... (default: the ones
//                measured for the bundled model when there are 4 layers, else 1).
//                They are model-specific: `kvstream profile` gives kvs the
//                weights calibrated for the profiled model (llm/kvs_calibration.h,
//                `kvstream codec-model train --codec kvs`) and refuses kvs on a
//                model it has no calibration of
//   ladder     : the level steps s0:s1:... (default kvs_level_step, 10 levels)
//   centroid   : 1 (default) centroid reconstruction, 0 bin centres
//   rdo        : lambda in step^2 per bit for the per-value choice (default 0.12)
//   rows       : 1 (default) repeated rows may be sent as references, 0 never
std::unique_ptr<Codec> make_kvs_codec(const CodecOptions& options);

// A list parameter's value (weights, ladder, rope_inv_freq): the numbers
// ':'-separated, each the shortest decimal that reads back as the same float.
std::string kvs_param_list(const std::vector<float>& values);

// cos and sin of RoPE's angle for `position` and pair `i` (0 <= i < head_dim/2),
// as kvs computes them (double precision, rounded to float).
std::array<float, 2> kvs_rope_cos_sin(double rope_theta, uint64_t position, uint32_t i, uint32_t head_dim);

}  // namespace kvs::codec
