// The kvs encoder's kernel launchers (codec/cuda/kvs_encode_kernels.cu), for
// codec/cuda/kvs_encode.cpp. Not an interface: codec/cuda/encode.h is.
#pragma once

#include <cuda_runtime_api.h>

#include "codec/cuda/kvs_encode_threads.h"

namespace kvs::codec::cuda::detail {

// 1. Rows (values in steps, refused values, hashes), then the columns' sums
// when row references are planned.
void launch_kvs_encode_rows(const KvsEncodeLaunch& p, size_t rows, size_t channels, cudaStream_t stream);
// 2. The row plan's check (when p.first is set), then the channels.
void launch_kvs_encode_channels(const KvsEncodeLaunch& p, size_t rows, size_t channels, cudaStream_t stream);
// 3. The pieces, each gathered and rANS-coded.
void launch_kvs_encode_pieces(const KvsEncodeLaunch& p, cudaStream_t stream);
// 4. The pieces' sections into one payload at offsets[piece].
void launch_kvs_encode_gather(const KvsEncodeLaunch& p, const uint64_t* offsets, uint8_t* payload, cudaStream_t stream);

}  // namespace kvs::codec::cuda::detail
