// Host-side helpers shared by the CUDA code: one error check that names the
// failing call, uploads of host tables, and launch arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "base/error.h"
#include "codec/cuda/decode.h"

namespace kvs::codec::cuda::detail {

// Throws kvs::Error "CUDA: <what>: <CUDA's message>" unless `e` is cudaSuccess.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}

// Copies host memory to device memory and waits until it has landed there.
// cudaMemcpy alone does not: from pageable memory it returns once the bytes
// are staged, "the DMA to final destination may not have completed" (CUDA
// runtime API, "API synchronization behavior"), and a kernel on a
// cudaStreamNonBlocking stream is not ordered after the default stream's
// copy. Hence the default stream's synchronisation.
inline void copy_to_device(void* dst, const void* src, size_t bytes, const char* what) {
  if (bytes == 0) return;
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), what);
  check(cudaStreamSynchronize(nullptr), what);
}

// A copy of `v` in device memory (synchronous: copy_to_device).
template <class T>
DeviceBuffer to_device(const std::vector<T>& v, const char* what = "cudaMemcpy (codec tables)") {
  DeviceBuffer b(sizeof(T) * v.size());
  copy_to_device(b.get(), v.data(), b.size(), what);
  return b;
}

// n rounded up to a multiple of `to`.
inline size_t round_up(size_t n, size_t to = 256) { return (n + to - 1) / to * to; }

// Parts of one device allocation, each 256-byte aligned: add(bytes) returns
// a part's offset; `total` is the allocation's size.
struct DeviceParts {
  size_t total = 0;
  size_t add(size_t bytes) {
    const size_t at = total;
    total += round_up(bytes);
    return at;
  }
};

// The calling thread's current CUDA device set to `device` for the scope,
// then restored. The runtime's current device is per host thread, and a
// kernel launched into a stream of another device fails: a Decoder, an
// Encoder or a model's tables made on one device may be called from a
// thread that works on another.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
    switched_ = previous_ != device;
  }
  ~DeviceScope() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

// f() with `device` current if it can be made so (else on the current
// device), throwing nothing of its own: for destructors, which free a
// device's memory and synchronise its streams.
template <class F>
void on_device_noexcept(int device, F&& f) noexcept {
  int current = 0;
  const bool switched = cudaGetDevice(&current) == cudaSuccess && current != device && cudaSetDevice(device) == cudaSuccess;
  f();
  if (switched) cudaSetDevice(current);
}

// The calling thread's current CUDA device.
inline int current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

// Blocks of `per_block` threads that cover `threads`.
inline unsigned blocks_for(size_t threads, uint32_t per_block) {
  return unsigned((threads + per_block - 1) / per_block);
}

}  // namespace kvs::codec::cuda::detail
