// What the host prepares for the GPU encoder of `cachegen` scheme=paper
// (codec/cuda/encode.h Encoder::encode_cachegen_paper), as plain C++ that
// needs no CUDA: the CPU encoder's checks and messages, the buffers' sizes,
// the sections' offsets from the sizes the kernels found, and the stream's
// layout (the device writes the sections, the size table and the CRC).
// encode_cachegen_paper_on_host() runs the thread bodies
// (codec/cuda/paper_encode_threads.h) one after another on the CPU, so the
// tests check all of the GPU path but launch, memory and streams on machines
// without a GPU.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "codec/bitstream.h"
#include "codec/cachegen_paper.h"
#include "codec/cuda/paper_encode_threads.h"
#include "codec/cuda/stream_layout.h"
#include "codec/kv.h"

namespace kvs::codec::cuda::detail {

struct CachegenPaperEncodePlan {
  StreamHeader header;     // of the stream to be written (model hash, group of 10 tokens)
  uint32_t substreams = 0;  // layers x 2 x kv heads
  size_t symbols_bytes = 0;  // scratch: one byte per value
  size_t capacity = 0;       // per substream slot: 4 + 2 * tokens * head_dim

  // The launch with its pointers (device or host memory); the tables are the
  // model's at the header's level (plan.h PaperTables, build_paper_level).
  CachegenPaperEncodeLaunch bind(const void* in, bool in_f16, const rans::CumTable* anchors, const float* step_a,
                                 const rans::BasicPackedTable<64>* deltas, const float* step_d, const int32_t* M,
                                 uint8_t* symbols, uint8_t* slots, uint32_t* sizes, uint32_t* escapes) const;
  // Each section's offset in the payload (substreams + 1 entries; the last is
  // the payload's size) from the kernels' rANS sizes and escape counts.
  // Throws the CPU encoder's error when a rANS stream did not fit (an
  // internal error).
  std::vector<uint64_t> offsets(std::span<const uint32_t> sizes, std::span<const uint32_t> escapes) const;
  // The stream's layout (codec/cuda/stream_layout.h): every section is the
  // payload's.
  StreamLayout layout(std::span<const uint64_t> offsets) const;
};

// Throws kvs::Error as the CPU encoder does (check_cachegen_paper_encode: a
// level out of range, no model, another shape); `model_file` names the model
// in errors.
CachegenPaperEncodePlan plan_cachegen_paper_encode(KVShape shape, DType dtype, uint64_t token_begin, uint32_t tokens,
                                                   int level, const CacheGenPaperModel* model,
                                                   const std::string& model_file);

// The GPU encoder's thread bodies on the CPU (for tests): the chunk's values
// as fp16 bits (in_f16; each value must be one fp16 holds exactly for the
// bytes to equal the CPU encoder's) or floats.
Bytes encode_cachegen_paper_on_host(const KVChunk& chunk, int level, const CacheGenPaperModel* model,
                                    const std::string& model_file, bool in_f16);

}  // namespace kvs::codec::cuda::detail
