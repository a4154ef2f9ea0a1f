// The launchers of the GPU encoder's kernels for cachegen scheme=paper
// (codec/cuda/paper_encode_kernels.cu), for codec/cuda/paper_encode.cpp.
// Not an interface: codec/cuda/encode.h is.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "codec/cuda/paper_encode_threads.h"

namespace kvs::codec::cuda::detail {

// Passes 1 and 2 (paper_encode_threads.h): the symbols, then each
// substream's escape count and rANS stream into its slot.
void launch_cachegen_paper_encode(const CachegenPaperEncodeLaunch& p, cudaStream_t stream);
// Pass 3: each substream's section into `payload` at offsets[substream].
void launch_cachegen_paper_write(const CachegenPaperEncodeLaunch& p, const uint64_t* offsets, uint8_t* payload,
                                 cudaStream_t stream);

}  // namespace kvs::codec::cuda::detail
