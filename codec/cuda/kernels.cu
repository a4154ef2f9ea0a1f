// The CUDA decode kernels: launch geometry and shared memory only. Each
// thread runs a KVS_HD body from codec/cuda/threads.h, around the per-substream
// code the CPU decoders run. Built with --fmad=false, so that float
// expressions round as on the CPU.
#include "codec/cuda/kernels.h"

#include <stdexcept>
#include <string>

#include <cub/device/device_scan.cuh>

#include "codec/bitstream.h"
#include "codec/cuda/cuda_util.h"
#include "codec/kvs.h"

namespace kvs::codec::cuda::detail {

static_assert(kKvsPieceSymbols == kKvsStreamSymbols);

namespace {

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
  if (verify_failed(p.fault)) return;  // the offsets may be anything (the whole block returns)
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
  if (i < p.substream_count && !verify_failed(p.fault)) cachegen_paper_substream(p, i);
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
  if (k < p.piece_count && !verify_failed(p.fault)) kvs_piece(p, k);
}

// The output: a block per tile (codec/cuda/threads.h kvs_values_tile_load):
// up to 32 consecutive tokens of one (layer, kind, head), all dims, ~16 KB.
// The scratch is channel-major, the output token-major: the block reads the
// tile's columns (a warp: consecutive tokens of a channel, one or two cache
// lines where the sources are consecutive, as for literal rows) into shared
// memory, then writes its rows (a warp: consecutive dims, contiguous), so
// both the reads and the writes are coalesced. Thread 0 alone reads the
// fault word (written before this kernel, by the verification), so that the
// block returns as a whole: no thread leaves the others at the barrier.
static_assert(kMaxHeadDim <= kKvsTileMaxDim && kKvsTileThreads % 32 == 0);
static_assert(kMaxElements <= 0x7fffffffull, "a tile per block: the tiles within gridDim.x");

__global__ void __launch_bounds__(kKvsTileThreads) kvs_values_kernel(KvsLaunch p) {
  __shared__ float tile[kKvsTileShared];
  __shared__ int skip;
  if (threadIdx.x == 0) skip = verify_failed(p.fault);
  __syncthreads();
  if (skip) return;  // the whole block
  kvs_values_tile_load(p, blockIdx.x, threadIdx.x, tile);
  __syncthreads();
  kvs_values_tile_store(p, blockIdx.x, threadIdx.x, tile);
}

// Verification. The CRC: a block per tile, a thread per piece. The tile is
// loaded with coalesced 16-byte reads into shared rows, one per piece,
// padded by a word so that the threads' reads of their rows hit different
// banks (crc_load_word: nothing after the body is read); the slicing tables
// are copied to shared memory.
static_assert(kCrcPieceBytes % 16 == 0 && kCrcTileThreads % 32 == 0);

__global__ void __launch_bounds__(kCrcTileThreads) verify_crc_kernel(VerifyLaunch p) {
  __shared__ uint32_t slice[8][256];
  __shared__ uint32_t rows[kCrcTileThreads * kCrcRowWords];
  __shared__ uint32_t warp_x[kCrcTileThreads / 32];
  const uint32_t tid = threadIdx.x, tile = blockIdx.x;
  for (uint32_t i = tid; i < 8 * 256; i += kCrcTileThreads) slice[i / 256][i % 256] = p.crc->slice[i / 256][i % 256];
  const uint32_t bytes = crc_tile_bytes(p, tile);
  // The stream is 16-byte aligned (tiles are multiples of 16 bytes).
  const uint8_t* tile_bytes = p.stream + size_t(tile) * kCrcTileBytes;
  for (uint32_t w = tid; w < (bytes + 15) / 16; w += kCrcTileThreads)
    crc_load_word(tile_bytes, bytes, w, rows + crc_row_word(w));
  __syncthreads();
  uint32_t x = crc_thread(slice, p.crc->x8pow, reinterpret_cast<const uint8_t*>(rows + tid * kCrcRowWords), bytes, tid);
  for (uint32_t o = 16; o; o >>= 1) x ^= __shfl_xor_sync(0xffffffffu, x, o);
  if (tid % 32 == 0) warp_x[tid / 32] = x;
  __syncthreads();
  if (tid == 0) {
    for (uint32_t w = 1; w < kCrcTileThreads / 32; ++w) x ^= warp_x[w];
    crc_tile_done(p, p.crc->x8pow, tile, bytes, x);
  }
}

__global__ void verify_widen_kernel(VerifyLaunch p) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.sections) verify_widen(p, i);
}
__global__ void verify_section_kernel(VerifyLaunch p) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.sections) verify_section(p, i);
}
__global__ void verify_final_kernel(VerifyLaunch p) { verify_final(p); }
__global__ void stream_table_kernel(StreamFinishLaunch p) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < p.payload_sections) stream_table_entry(p, k);
}
__global__ void stream_crc_store_kernel(StreamFinishLaunch p) { stream_crc_store(p); }
__global__ void kvs_locate_kernel(VerifyLaunch p, KvsPieceDesc* pieces, uint32_t count) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < count) kvs_locate(p, pieces, k);
}

}  // namespace

size_t verify_scan_temp_bytes(uint32_t sections) {
  size_t bytes = 0;
  check(cub::DeviceScan::InclusiveSum(nullptr, bytes, static_cast<uint64_t*>(nullptr), sections), "cub scan (size)");
  return bytes;
}

void launch_verify(const VerifyLaunch& p, void* scan_temp, size_t scan_temp_bytes, cudaStream_t stream) {
  constexpr uint32_t kThreads = 256;
  if (p.walk && p.sections) {
    const unsigned blocks = (p.sections + kThreads - 1) / kThreads;
    verify_widen_kernel<<<blocks, kThreads, 0, stream>>>(p);
    check(cudaGetLastError(), "verify widen kernel launch");
    size_t bytes = scan_temp_bytes;
    check(cub::DeviceScan::InclusiveSum(scan_temp, bytes, p.ends, p.sections, stream), "cub scan");
    verify_section_kernel<<<blocks, kThreads, 0, stream>>>(p);
    check(cudaGetLastError(), "verify section kernel launch");
  }
  launch_crc(p, stream);
  verify_final_kernel<<<1, 1, 0, stream>>>(p);
  check(cudaGetLastError(), "verify final kernel launch");
}

void launch_crc(const VerifyLaunch& p, cudaStream_t stream) {
  const uint32_t tiles = crc_tile_count(p.body);
  if (tiles) {
    verify_crc_kernel<<<tiles, kCrcTileThreads, 0, stream>>>(p);
    check(cudaGetLastError(), "verify CRC kernel launch");
  }
}

void launch_stream_finish(const StreamFinishLaunch& p, cudaStream_t stream) {
  constexpr uint32_t kThreads = 256;
  if (p.payload_sections) {
    stream_table_kernel<<<blocks_for(p.payload_sections, kThreads), kThreads, 0, stream>>>(p);
    check(cudaGetLastError(), "stream table kernel launch");
  }
  check(cudaMemsetAsync(p.crc.crc_acc, 0, sizeof(uint32_t), stream), "cudaMemsetAsync");
  launch_crc(p.crc, stream);
  stream_crc_store_kernel<<<1, 1, 0, stream>>>(p);
  check(cudaGetLastError(), "stream CRC store kernel launch");
}

void launch_kvs_locate(const VerifyLaunch& p, KvsPieceDesc* pieces, uint32_t count, cudaStream_t stream) {
  constexpr uint32_t kThreads = 128;
  if (count == 0) return;
  kvs_locate_kernel<<<(count + kThreads - 1) / kThreads, kThreads, 0, stream>>>(p, pieces, count);
  check(cudaGetLastError(), "kvs locate kernel launch");
}

cudaError_t probe_kernels() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, kvs_values_kernel);
}

void launch_cachegen_code(const CachegenCodeLaunch& p, cudaStream_t stream) {
  // Per launch (a microsecond): the attribute is the current device's.
  check(cudaFuncSetAttribute(cachegen_code_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kCgShared)),
        "cudaFuncSetAttribute (cachegen kernel shared memory)");
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
  // One block per tile: no more than the elements (kMaxElements), within gridDim.x.
  const size_t tiles = kvs_tiles(p);
  if (tiles) {
    kvs_values_kernel<<<unsigned(tiles), kKvsTileThreads, 0, stream>>>(p);
    check(cudaGetLastError(), "kvs values kernel launch");
  }
}

}  // namespace kvs::codec::cuda::detail
