// Encoding on a CUDA GPU (docs/codecs.md, "GPU"): `cachegen` scheme=code,
// byte-identical to CacheGenCodec::encode. Statistics (per-token absmax,
// per-channel histograms and tables), quantisation and rANS coding run in
// kernels (codec/cuda/threads.h, the KVS_HD code the CPU encoder shares);
// the host then assembles the stream (header, offset table, CRC) from the
// kernels' sections. Built only with nvcc (KVSTREAM_HAVE_CUDA).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "codec/codec.h"
#include "codec/cuda/decode.h"

namespace kvs::codec::cuda {

class Encoder {
 public:
  explicit Encoder(cudaStream_t stream = nullptr);

  // Encodes the chunk whose values lie in device memory `kv` (layout
  // [layer][kind][head][token][dim] as KVChunk::values; fp16 bits or floats
  // as `in` says) at `level`; the header takes shape, dtype, token_begin and
  // tokens as given. Waits for the device (the stream's bytes come back to
  // the host). Throws kvs::Error as CacheGenCodec::encode does (a level out
  // of range, a token whose |x| fp16 cannot carry).
  Bytes encode_cachegen(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                        uint32_t tokens, int level, uint32_t stream_tokens = 256);

 private:
  cudaStream_t stream_;
};

}  // namespace kvs::codec::cuda
