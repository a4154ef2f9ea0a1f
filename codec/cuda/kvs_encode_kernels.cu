// The kvs encoder's kernels: launch geometry only. Each thread runs a KVS_HD
// body from codec/cuda/kvs_encode_threads.h around the code the CPU encoder
// runs (codec/kvs_encode_core.h). Built with --fmad=false, so that float and
// double expressions round as on the CPU.
#include "codec/cuda/kvs_encode_kernels.h"

#include <stdexcept>
#include <string>

#include "codec/cuda/cuda_util.h"
#include "codec/kvs.h"

namespace kvs::codec::cuda::detail {

static_assert(kKvsPieceSymbols == kKvsStreamSymbols);

namespace {

// Consecutive threads: consecutive tokens of one head (their values' stores
// into the channel-major buffer are contiguous per dimension).
__global__ void kvs_encode_row_kernel(KvsEncodeLaunch p, size_t rows) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows) kvs_encode_row(p, i);
}
__global__ void kvs_encode_column_kernel(KvsEncodeLaunch p, size_t channels) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < channels) kvs_encode_column(p, i);
}
__global__ void kvs_encode_verify_kernel(KvsEncodeLaunch p, size_t rows) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows) kvs_encode_verify(p, i);
}
__global__ void kvs_encode_channel_kernel(KvsEncodeLaunch p, size_t channels) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < channels) kvs_encode_channel(p, i);
}
__global__ void kvs_encode_piece_kernel(KvsEncodeLaunch p) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < p.piece_count) kvs_encode_piece(p, k);
}
__global__ void kvs_encode_gather_kernel(KvsEncodeLaunch p, const uint64_t* offsets, uint8_t* payload) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < p.piece_count) kvs_encode_gather(p, offsets, k, payload);
}

constexpr uint32_t kThreads = 128;
// Few channels or pieces per chunk (thousands): small blocks spread them over the SMs.
constexpr uint32_t kFewThreads = 32;

}  // namespace

void launch_kvs_encode_rows(const KvsEncodeLaunch& p, size_t rows, size_t channels, cudaStream_t stream) {
  if (rows == 0) return;
  kvs_encode_row_kernel<<<blocks_for(rows, kThreads), kThreads, 0, stream>>>(p, rows);
  check(cudaGetLastError(), "kvs encode row kernel launch");
  if (!p.rows) return;
  kvs_encode_column_kernel<<<blocks_for(channels, kFewThreads), kFewThreads, 0, stream>>>(p, channels);
  check(cudaGetLastError(), "kvs encode column kernel launch");
}

void launch_kvs_encode_channels(const KvsEncodeLaunch& p, size_t rows, size_t channels, cudaStream_t stream) {
  if (p.first && rows) {
    kvs_encode_verify_kernel<<<blocks_for(rows, kThreads), kThreads, 0, stream>>>(p, rows);
    check(cudaGetLastError(), "kvs encode verify kernel launch");
  }
  if (channels == 0) return;
  kvs_encode_channel_kernel<<<blocks_for(channels, kFewThreads), kFewThreads, 0, stream>>>(p, channels);
  check(cudaGetLastError(), "kvs encode channel kernel launch");
}

void launch_kvs_encode_pieces(const KvsEncodeLaunch& p, cudaStream_t stream) {
  if (p.piece_count == 0) return;
  kvs_encode_piece_kernel<<<blocks_for(p.piece_count, kFewThreads), kFewThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "kvs encode piece kernel launch");
}

void launch_kvs_encode_gather(const KvsEncodeLaunch& p, const uint64_t* offsets, uint8_t* payload,
                              cudaStream_t stream) {
  if (p.piece_count == 0) return;
  kvs_encode_gather_kernel<<<blocks_for(p.piece_count, kFewThreads), kFewThreads, 0, stream>>>(p, offsets, payload);
  check(cudaGetLastError(), "kvs encode gather kernel launch");
}

}  // namespace kvs::codec::cuda::detail
