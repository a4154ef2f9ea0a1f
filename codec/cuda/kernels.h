// The CUDA kernels' launchers (codec/cuda/kernels.cu), for codec/cuda/decode.cpp.
// Not an interface: codec/cuda/decode.h is.
#pragma once

#include <cuda_runtime_api.h>

#include "codec/cuda/threads.h"

namespace kvs::codec::cuda::detail {

// cudaSuccess when this process can run the kernels on the current device
// (an image for its architecture was compiled in).
cudaError_t probe_kernels();

void launch_cachegen_code(const CachegenCodeLaunch& p, cudaStream_t stream);
void launch_kvs(const KvsLaunch& p, cudaStream_t stream);
void launch_cachegen_paper(const CachegenPaperLaunch& p, cudaStream_t stream);
// The encoder: scales, then symbols and tables, then the streams into their slots.
void launch_cachegen_encode(const CachegenEncodeLaunch& p, cudaStream_t stream);
// The streams from their slots into one payload at offsets[stream].
void launch_cachegen_gather(const CachegenEncodeLaunch& p, const uint64_t* offsets, uint8_t* payload,
                            cudaStream_t stream);

}  // namespace kvs::codec::cuda::detail
