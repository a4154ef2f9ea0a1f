// Encoding on a CUDA GPU (docs/codecs.md, "GPU"): `cachegen` scheme=code,
// byte-identical to CacheGenCodec::encode. Statistics (per-token absmax,
// per-channel histograms and tables), quantisation and rANS coding run in
// kernels (codec/cuda/threads.h, the KVS_HD code the CPU encoder shares).
// `cachegen` scheme=paper likewise, byte-identical to its CPU encoder
// (codec/cuda/paper_encode_threads.h; Encoder::encode_cachegen_paper is
// defined in codec/cuda/paper_encode.cpp), and kvs (kvs_encode.cpp).
// Each encoder builds the whole stream in one device buffer
// (codec/cuda/stream_layout.h): the host copies back only the substreams'
// sizes, computes their offsets and uploads the header and the sections it
// made itself; a gather kernel writes every substream at its offset, and
// kernels write the size table and the CRC-32 (codec/cuda/stream_threads.h,
// the decoder's CRC pieces). The Bytes forms then bring the finished stream
// back with one copy; the *_to_device forms leave it in device memory (for a
// sender that reads it there, e.g. with GPUDirect). Built only with nvcc
// (KVSTREAM_HAVE_CUDA).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <cuda_runtime_api.h>

#include "codec/codec.h"
#include "codec/cuda/decode.h"

namespace kvs::codec::cuda {

// A chunk's stream in device memory: `bytes` bytes from buffer.get() (the
// buffer may be a little larger).
struct DeviceStream {
  DeviceBuffer buffer;
  size_t bytes = 0;
  // The stream copied to the host (waits for `stream`).
  Bytes to_host(cudaStream_t stream = nullptr) const;
};

// An Encoder works on the CUDA device current when it is made (`stream`
// must belong to it), whichever device is current in the thread that calls it.
class Encoder {
 public:
  explicit Encoder(cudaStream_t stream = nullptr);
  // With `paper_model` (may be null), also encodes cachegen scheme=paper
  // chunks for that codec model (model_file names it in errors): a
  // PaperModelOnDevice of its own is made here (codec/cuda/paper_model_device.h:
  // the anchors go to the device now, a level's tables at the first chunk of
  // that level); copies of this Encoder share it (one Encoder per host
  // thread, as with Decoder).
  Encoder(cudaStream_t stream, std::shared_ptr<const CacheGenPaperModel> paper_model, std::string model_file = "");
  // The same with a model's tables already on the device, shared with
  // Decoders and other Encoders (may be null). Throws kvs::Error when they
  // are on another device than the current one.
  Encoder(cudaStream_t stream, std::shared_ptr<PaperModelOnDevice> paper_tables);

  // Encodes the chunk whose values lie in device memory `kv` (layout
  // [layer][kind][head][token][dim] as KVChunk::values; fp16 bits or floats
  // as `in` says) at `level`; the header takes shape, dtype, token_begin and
  // tokens as given. Waits for the device (the stream's bytes come back to
  // the host in one copy). Throws kvs::Error as CacheGenCodec::encode does (a level out
  // of range, a token whose |x| fp16 cannot carry).
  Bytes encode_cachegen(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                        uint32_t tokens, int level, uint32_t stream_tokens = 256);

  // cachegen scheme=paper (the constructor's codec model), byte-identical to
  // its CPU encoder: quantisation and rANS coding in kernels
  // (codec/cuda/paper_encode_threads.h), the host laying the stream out from
  // the sections' sizes. Input and waiting as encode_cachegen. Throws
  // kvs::Error as the CPU encoder does (a level out of range, no codec model,
  // a chunk of another shape than the model's).
  Bytes encode_cachegen_paper(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                              uint32_t tokens, int level);

  // kvs with the parameters of `codec` (a kvs codec: make_codec("kvs", ...)),
  // byte-identical to its encode(): values in steps, row hashes, channel
  // models, quantisation and rANS coding in kernels
  // (codec/cuda/kvs_encode_threads.h); the host plans row references, the
  // models section and the substreams from what the kernels copy back
  // (codec/cuda/kvs_encode_kernels.cu, kvs_encode.cpp) and uploads the first
  // three sections. Input and waiting as
  // encode_cachegen. Throws kvs::Error as KvsCodec::encode does (a level out
  // of range, weights that do not fit, a value not finite or too large).
  // context_tokens: the chunk's KVChunk::context_tokens (0: unknown), which
  // picks a LongRoPE codec's table.
  Bytes encode_kvs(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin, uint32_t tokens,
                   int level, const Codec& codec, uint64_t context_tokens = 0);

  // The same encodes, the stream left in device memory (the same bytes).
  // They wait for the device as the Bytes forms do (the host needs the
  // substreams' sizes), but copy no stream back. kvs's rare fallback to the
  // CPU encoder (a hash collision, a near tie, no tokens) uploads its stream.
  DeviceStream encode_cachegen_to_device(const void* kv, OutputType in, KVShape shape, DType dtype,
                                         uint64_t token_begin, uint32_t tokens, int level,
                                         uint32_t stream_tokens = 256);
  DeviceStream encode_cachegen_paper_to_device(const void* kv, OutputType in, KVShape shape, DType dtype,
                                               uint64_t token_begin, uint32_t tokens, int level);
  DeviceStream encode_kvs_to_device(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                                    uint32_t tokens, int level, const Codec& codec, uint64_t context_tokens = 0);

 private:
  // encode_kvs_to_device, except that the CPU encoder's stream (its
  // fallback) comes back in *cpu with an empty DeviceStream.
  DeviceStream kvs_stream(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                          uint32_t tokens, int level, const Codec& codec, uint64_t context_tokens, Bytes* cpu);

  int device_ = 0;  // the device current at construction (detail::DeviceScope)
  cudaStream_t stream_;
  std::shared_ptr<const DeviceBuffer> crc_;  // the CRC tables (verify_threads.h), shared by copies
  std::shared_ptr<PaperModelOnDevice> paper_;  // the scheme=paper model's tables; null without one
};

}  // namespace kvs::codec::cuda
