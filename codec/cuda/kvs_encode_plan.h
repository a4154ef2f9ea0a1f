// The host's part of encoding `kvs` on the GPU (codec/cuda/encode.h,
// Encoder::encode_kvs), as plain C++ that needs no CUDA: between the kernels
// (codec/cuda/kvs_encode_threads.h lists them) it makes the choices that are
// global and small with the CPU encoder's own code (codec/kvs_internal.h):
// row references from the device's row hashes and column sums, the channel
// models section, the substreams' layout, the header and the table's first
// entries (the device writes the rest of the stream and its CRC:
// codec/cuda/stream_threads.h).
// encode_kvs_on_host() runs the thread bodies one after another on the CPU,
// so the tests check all of the GPU path but launch, memory and streams on
// machines without a GPU.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>
#include <span>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "codec/bitstream.h"
#include "codec/cuda/kvs_encode_threads.h"
#include "codec/cuda/stream_layout.h"

namespace kvs::codec::kvs_detail {
class KvsCodec;
}

namespace kvs::codec::cuda::detail {

// The allocator of the plan's per-row and per-channel arrays, which the plan
// writes in full before anyone reads them: resize() leaves the values
// uninitialized (no 8 MB zero fill per Llama-2-7B chunk), and arrays of 2 MiB
// or more ask for transparent huge pages, so that first touching them costs a
// few page faults rather than one per 4 KiB.
template <typename T>
struct PlanArrayAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t(2) << 20;
  PlanArrayAllocator() = default;
  template <typename U>
  PlanArrayAllocator(const PlanArrayAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHuge) return static_cast<T*>(::operator new(bytes));
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = std::aligned_alloc(kHuge, rounded);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, rounded, MADV_HUGEPAGE);  // a hint: without it, ordinary pages
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) < kHuge)
      ::operator delete(p);
    else
      std::free(p);
  }
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialized: left as it is
  }
  template <typename U, typename... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
  template <typename U>
  bool operator==(const PlanArrayAllocator<U>&) const {
    return true;
  }
};
template <typename T>
using PlanArray = std::vector<T, PlanArrayAllocator<T>>;

struct KvsEncodePlan {
  // Throws kvs::Error as KvsCodec::encode does (a level out of range,
  // weights that do not fit the shape).
  // context_tokens: as KVChunk's (0: unknown), for the codec's RoPE table.
  KvsEncodePlan(const kvs_detail::KvsCodec& codec, KVShape shape, DType dtype, uint64_t token_begin, uint32_t tokens,
                int level, uint64_t context_tokens = 0);

  const kvs_detail::KvsCodec* codec;
  StreamHeader header;  // of the stream to be written
  std::vector<float> steps;  // per plane
  std::vector<float> rope;   // per RoPE table that rotates: [token][pair][cos, sin]
  std::vector<uint8_t> layer_rope;  // per layer: its table in `rope`, kNoRope: keys coded as given
  size_t stride = 0;         // floats between channels in the y buffer
  size_t rows = 0, channels = 0;  // 2 x layers x heads x tokens; 2 x layers x heads x head_dim
  bool plan_rows = false;         // row references allowed (the device hashes rows)

  // The launch's sizes, flags and (host) table pointers; the caller points
  // it at its buffers.
  KvsEncodeLaunch launch(const void* in, bool in_f16) const;

  // Stage 1 -> 2. A fault from kvs_encode_row: the chunk's value index of
  // the refused value (fault_value), whose row (D values from fault_value -
  // fault_value % D, as floats) gives the CPU encoder's error.
  static uint64_t fault_value(unsigned long long fault) { return fault >> 8; }
  [[noreturn]] void throw_value_error(unsigned long long fault, std::span<const float> row) const;
  // Whether a fault of stages 2 and 3 means "encode this chunk on the CPU"
  // (a hash collision, a near tie: codec/cuda/kvs_encode_threads.h).
  static bool needs_cpu(unsigned long long fault);
  // The row plan from the device's row hashes and column sums (unused
  // without plan_rows): fills what follows.
  void plan_references(std::span<const uint64_t> row_hash, std::span<const double> s1, std::span<const double> s2);
  Bytes params, refs;                   // sections 0 and 1
  std::vector<KvsEncHead> heads;        // per (layer, kind, head)
  std::vector<uint32_t> literal_tokens;
  PlanArray<uint32_t> first;            // per row: its source by hash (empty without plan_rows)
  PlanArray<uint64_t> first_symbol;     // per channel, + the end
  uint64_t symbols() const { return first_symbol.empty() ? 0 : first_symbol.back(); }

  // Stage 2 -> 3: the models section and the substreams from the device's
  // channel models.
  void plan_pieces(std::span<const kvs_core::ChannelModel> models);
  Bytes models;                          // section 2
  std::vector<KvsEncPiece> pieces;
  std::vector<uint32_t> group_offset;    // kTables + 1
  std::vector<uint32_t> group_channels;
  static constexpr size_t kRansCapacity = 4 + 2 * size_t(kKvsPieceSymbols) + 16;  // as the CPU encoder's
  static constexpr size_t kExtrasCapacity = 4 * size_t(kKvsPieceSymbols) + 8;    // 32 bits a symbol at most

  // Stage 3 -> 4: each piece's section offset in the payload (pieces + 1
  // entries) from its sizes; throws when a piece did not fit (an internal error).
  std::vector<uint64_t> offsets(std::span<const uint32_t> rans_sizes, std::span<const uint32_t> extras_sizes) const;
  // The stream's layout (codec/cuda/stream_layout.h): sections 0..2 (params,
  // refs, models: prefix(), written by the host) before the payload (the
  // piece sections back to back, at `offsets`).
  StreamLayout layout(std::span<const uint64_t> offsets) const;
  Bytes prefix() const;
};

// The GPU encoder's thread bodies on the CPU (for tests): the chunk's values
// as fp16 bits (in_f16) or floats; `codec` a kvs codec (make_codec("kvs", ...)).
// host_s (if not null): the wall time of the host's part alone (what a GPU
// encode adds to its kernels on one core: plans, models section, offsets and
// the stream's layout; the gather, table and CRC are the device's).
Bytes encode_kvs_on_host(const KVChunk& chunk, int level, const Codec& codec, bool in_f16, double* host_s = nullptr);
// The kvs codec behind `codec` (kvs::Error if it is another codec).
const kvs_detail::KvsCodec& as_kvs(const Codec& codec);

}  // namespace kvs::codec::cuda::detail
