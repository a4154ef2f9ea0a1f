// The CUDA kernels of the GPU encoder for cachegen scheme=paper: launch
// geometry only. Each thread runs a KVS_HD body from
// codec/cuda/paper_encode_threads.h around the CPU encoder's per-substream
// code. Built with --fmad=false, so that float expressions round as on the
// CPU (the quantizers' divisions and the anchors' dequantization).
#include "codec/cuda/paper_encode_kernels.h"
#include "codec/cuda/cuda_util.h"

#include <stdexcept>
#include <string>

namespace kvs::codec::cuda::detail {

namespace {

// Pass 1: a thread per (substream, dim); consecutive threads take consecutive
// dims, so that a warp's loads and stores of one token are contiguous.
__global__ void paper_encode_channel_kernel(CachegenPaperEncodeLaunch p) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size_t(p.substreams) * p.head_dim)
    cachegen_paper_encode_channel(p, uint32_t(i / p.head_dim), uint32_t(i % p.head_dim));
}

// Pass 2: a thread per substream (few: layers x 2 x kv heads).
__global__ void paper_encode_substream_kernel(CachegenPaperEncodeLaunch p) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.substreams) cachegen_paper_encode_substream(p, i);
}

// Pass 3: a block per substream; thread 0 writes the escapes, all threads
// copy the rANS stream (disjoint bytes).
__global__ void paper_encode_write_kernel(CachegenPaperEncodeLaunch p, const uint64_t* offsets, uint8_t* payload) {
  const uint32_t sub = blockIdx.x;
  if (threadIdx.x == 0) cachegen_paper_encode_escapes(p, offsets, sub, payload);
  cachegen_paper_encode_copy(p, offsets, sub, threadIdx.x, blockDim.x, payload);
}

}  // namespace

void launch_cachegen_paper_encode(const CachegenPaperEncodeLaunch& p, cudaStream_t stream) {
  if (p.substreams == 0) return;
  constexpr uint32_t kThreads = 128;
  paper_encode_channel_kernel<<<blocks_for(size_t(p.substreams) * p.head_dim, kThreads), kThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "cachegen paper encode symbols kernel launch");
  constexpr uint32_t kSubThreads = 64;  // few substreams: spread over the SMs
  paper_encode_substream_kernel<<<blocks_for(p.substreams, kSubThreads), kSubThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "cachegen paper encode substream kernel launch");
}

void launch_cachegen_paper_write(const CachegenPaperEncodeLaunch& p, const uint64_t* offsets, uint8_t* payload,
                                 cudaStream_t stream) {
  if (p.substreams == 0) return;
  paper_encode_write_kernel<<<p.substreams, 256, 0, stream>>>(p, offsets, payload);
  check(cudaGetLastError(), "cachegen paper encode write kernel launch");
}

}  // namespace kvs::codec::cuda::detail
