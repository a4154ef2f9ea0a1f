// The CUDA decode kernels: launch geometry and shared memory only. Each
// thread runs a KVS_HD body from codec/cuda/threads.h, around the per-substream
// code the CPU decoders run. Built with --fmad=false, so that float
// expressions round as on the CPU.
#include "codec/cuda/kernels.h"

#include <stdexcept>
#include <string>

#include "codec/kvs.h"

namespace kvs::codec::cuda::detail {

static_assert(kKvsPieceSymbols == kKvsStreamSymbols);

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}

// cachegen scheme=code. A block: 32 consecutive channels of one (layer,
// kind) plane (lane j: channel c0 + j, so that a warp's stores of one token
// are contiguous) x kCgWarps warps, each taking every kCgWarps-th token
// block. Warp 0 loads the 32 channels' tables into shared memory first.
constexpr uint32_t kCgLanes = 32, kCgWarps = 4;
struct CgTable {
  rans::Table table;
  rans::SymbolIndex index;
};
constexpr size_t kCgShared = kCgLanes * sizeof(CgTable);

__global__ void __launch_bounds__(kCgLanes * kCgWarps) cachegen_code_kernel(CachegenCodeLaunch p) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  CgTable* tables = reinterpret_cast<CgTable*>(shared_raw);
  __shared__ int table_ok[kCgLanes];
  const uint32_t lane = threadIdx.x % kCgLanes, warp = threadIdx.x / kCgLanes;
  const uint32_t plane = blockIdx.y, c = blockIdx.x * kCgLanes + lane;
  const bool active = c < p.channels;
  if (warp == 0) table_ok[lane] = active && cachegen_table(p, plane, c, &tables[lane].table, &tables[lane].index);
  __syncthreads();
  if (!active || !table_ok[lane]) return;
  for (uint32_t b = warp; b < p.blocks; b += kCgWarps) cachegen_block(p, plane, c, b, tables[lane].table, tables[lane].index);
}

__global__ void cachegen_paper_kernel(CachegenPaperLaunch p) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.substream_count) cachegen_paper_substream(p, i);
}

// The encoder's kernels: a thread per (plane, token), per (plane, channel),
// per stream.
__global__ void cachegen_encode_scale_kernel(CachegenEncodeLaunch p) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size_t(2) * p.layers * p.tokens) cachegen_encode_scale(p, uint32_t(i / p.tokens), uint32_t(i % p.tokens));
}
__global__ void cachegen_encode_channel_kernel(CachegenEncodeLaunch p) {
  const size_t C = size_t(p.kv_heads) * p.head_dim;
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < 2 * p.layers * C) cachegen_encode_channel(p, uint32_t(i / C), uint32_t(i % C));
}
__global__ void cachegen_encode_block_kernel(CachegenEncodeLaunch p) {
  const size_t C = size_t(p.kv_heads) * p.head_dim;
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < 2 * p.layers * C * p.blocks)
    cachegen_encode_block(p, uint32_t(i / p.blocks / C), uint32_t(i / p.blocks % C), uint32_t(i % p.blocks));
}
__global__ void cachegen_gather_kernel(CachegenEncodeLaunch p, const uint64_t* offsets, uint8_t* payload,
                                       size_t streams) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < streams) cachegen_encode_gather(p, offsets, i, payload);
}

__global__ void kvs_pieces_kernel(KvsLaunch p) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < p.piece_count) kvs_piece(p, k);
}

// Consecutive threads: consecutive dims of one output row.
__global__ void kvs_values_kernel(KvsLaunch p, size_t total) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) kvs_value(p, i);
}

}  // namespace

cudaError_t probe_kernels() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, kvs_values_kernel);
}

void launch_cachegen_code(const CachegenCodeLaunch& p, cudaStream_t stream) {
  static const cudaError_t attr =
      cudaFuncSetAttribute(cachegen_code_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kCgShared));
  check(attr, "cudaFuncSetAttribute (cachegen kernel shared memory)");
  const dim3 grid((p.channels + kCgLanes - 1) / kCgLanes, 2 * p.layers);
  cachegen_code_kernel<<<grid, kCgLanes * kCgWarps, kCgShared, stream>>>(p);
  check(cudaGetLastError(), "cachegen kernel launch");
}

void launch_cachegen_paper(const CachegenPaperLaunch& p, cudaStream_t stream) {
  constexpr uint32_t kThreads = 64;  // few substreams (layers x 2 x kv heads): spread over the SMs
  if (p.substream_count == 0) return;
  cachegen_paper_kernel<<<(p.substream_count + kThreads - 1) / kThreads, kThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "cachegen paper kernel launch");
}

static unsigned blocks_for(size_t threads, uint32_t per_block) { return unsigned((threads + per_block - 1) / per_block); }

void launch_cachegen_encode(const CachegenEncodeLaunch& p, cudaStream_t stream) {
  constexpr uint32_t kThreads = 128;
  const size_t C = size_t(p.kv_heads) * p.head_dim, tokens = size_t(2) * p.layers * p.tokens,
               channels = size_t(2) * p.layers * C, streams = channels * p.blocks;
  if (tokens == 0) return;
  cachegen_encode_scale_kernel<<<blocks_for(tokens, kThreads), kThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "cachegen encode scale kernel launch");
  cachegen_encode_channel_kernel<<<blocks_for(channels, kThreads), kThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "cachegen encode channel kernel launch");
  cachegen_encode_block_kernel<<<blocks_for(streams, kThreads), kThreads, 0, stream>>>(p);
  check(cudaGetLastError(), "cachegen encode block kernel launch");
}

void launch_cachegen_gather(const CachegenEncodeLaunch& p, const uint64_t* offsets, uint8_t* payload,
                            cudaStream_t stream) {
  constexpr uint32_t kThreads = 128;
  const size_t streams = size_t(2) * p.layers * p.kv_heads * p.head_dim * p.blocks;
  if (streams == 0) return;
  cachegen_gather_kernel<<<blocks_for(streams, kThreads), kThreads, 0, stream>>>(p, offsets, payload, streams);
  check(cudaGetLastError(), "cachegen gather kernel launch");
}

void launch_kvs(const KvsLaunch& p, cudaStream_t stream) {
  constexpr uint32_t kThreads = 128;
  if (p.piece_count) {
    kvs_pieces_kernel<<<(p.piece_count + kThreads - 1) / kThreads, kThreads, 0, stream>>>(p);
    check(cudaGetLastError(), "kvs pieces kernel launch");
  }
  const size_t total = size_t(2) * p.layers * p.kv_heads * p.tokens * p.head_dim;
  constexpr uint32_t kValueThreads = 256;
  if (total) {
    kvs_values_kernel<<<unsigned((total + kValueThreads - 1) / kValueThreads), kValueThreads, 0, stream>>>(p, total);
    check(cudaGetLastError(), "kvs values kernel launch");
  }
}

}  // namespace kvs::codec::cuda::detail
