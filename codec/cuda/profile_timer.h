// Timing a codec's encode and decode of one chunk on a CUDA GPU, for
// `kvstream profile --device cuda` (llm/profiler.h). This header needs no
// CUDA: the profiler (torch side) sees only the ChunkTimer interface;
// make_gpu_chunk_timer() is defined in kvstream_codec_cuda (built when nvcc is
// found, KVSTREAM_HAVE_CUDA).
//
// What is timed (docs/profile-format.md, "Device"):
// - decode (kvs, cachegen scheme=code and scheme=paper): the chunk's
//   bitstream is copied to device memory first, NOT timed; then
//   cuda::Decoder's CUDA events around its device work on it: the copy of the
//   metadata the host planned, the verification kernels (CRC, section
//   table) and the kernels that decode it into device memory in the chunk's
//   dtype (fp16, bf16 or fp32). The host's planning (header and small
//   sections, codec/cuda/plan.h, one CPU core) is timed apart
//   (decode_host_s, Decoder::host_seconds).
// - encode (cachegen scheme=code and scheme=paper, kvs; every other codec has
//   no GPU encoder and the profiler times its encode on the CPU): the chunk's
//   values already in device memory (copied there first, not timed); a wall
//   clock around cuda::Encoder::encode_cachegen (encode_cachegen_paper,
//   encode_kvs: the latter's includes its host's row plan between kernels),
//   which includes the kernels, the copies of
//   the stream's sections back to the host and the host's assembly (header,
//   offset table, CRC).
// - each figure is the minimum of `repeats` runs after one untimed warm-up.
// - with `check`, the warm-up's output must equal the CPU's bit for bit (the
//   decoded values against the CPU decoder's, rounded to the chunk's dtype as
//   float_to_half_bits / float_to_bf16_bits round them; the GPU-encoded
//   stream against the CPU encoder's bytes); otherwise kvs::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "codec/codec.h"

namespace kvs::codec::cuda {

struct ChunkTimes {
  double encode_s = -1;  // < 0: not timed on the device (no GPU encoder for this codec)
  double decode_s = -1;
  // The host's planning of the decode before its kernels (codec/cuda/plan.h:
  // header and small sections; one CPU thread, wall clock), not in decode_s.
  double decode_host_s = -1;
};

class ChunkTimer {
 public:
  virtual ~ChunkTimer() = default;
  // Profile::device for times from this timer, e.g. "cuda:NVIDIA H100 80GB HBM3".
  virtual std::string device() const = 0;
  // Whether `codec` decodes / encodes on this device.
  virtual bool decodes(const Codec& codec) const = 0;
  virtual bool encodes(const Codec& codec) const = 0;
  // Times `chunk` at `level`: `stream` is codec.encode(chunk, level) (the CPU
  // encoder's bytes), `cpu_decoded` is codec.decode(stream). Throws
  // kvs::Error when the device's output differs from the CPU's (with `check`)
  // or the codec has no GPU decoder.
  virtual ChunkTimes time(const Codec& codec, const KVChunk& chunk, int level, std::span<const uint8_t> stream,
                          const KVChunk& cpu_decoded, uint32_t repeats, bool check) = 0;
};

// Registry names of the codecs with a GPU decoder (codec/cuda/decode.h).
inline bool has_gpu_decoder(const std::string& codec_name) { return codec_name == "cachegen" || codec_name == "kvs"; }
inline constexpr const char* kGpuDecoderCodecs = "cachegen (scheme=code and scheme=paper), kvs";

// A timer on the current CUDA device. `model_file`: the codec model for
// cachegen scheme=paper streams (may be empty when none is profiled).
// Throws kvs::Error when there is no usable GPU, saying why. Defined in
// kvstream_codec_cuda only: callers guard it with KVSTREAM_HAVE_CUDA.
std::unique_ptr<ChunkTimer> make_gpu_chunk_timer(const std::string& model_file);

}  // namespace kvs::codec::cuda
