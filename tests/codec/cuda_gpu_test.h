// What the tests that need a GPU (cuda_decode_test) share: the skip where
// there is none, and device buffers read back or filled with a pattern.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "codec/cuda/decode.h"

// Skips the test where no usable CUDA GPU is present, saying why and that
// `what` (a string literal) is not tested here.
#define KVS_SKIP_WITHOUT_GPU(what)                                                        \
  if (!::kvs::codec::cuda::available())                                                   \
  GTEST_SKIP() << "no usable CUDA GPU (" << ::kvs::codec::cuda::device_description() \
               << "): " what " not tested here"

namespace kvs::codec::cuda_test {

// The first `bytes` bytes of a device buffer, on the host.
inline std::vector<uint8_t> download(const cuda::DeviceBuffer& b, size_t bytes) {
  std::vector<uint8_t> host(bytes);
  EXPECT_EQ(cudaMemcpy(host.data(), b.get(), bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

// A device buffer filled with 0xA5 bytes, so that a value left unwritten shows.
inline cuda::DeviceBuffer poisoned(size_t bytes) {
  cuda::DeviceBuffer b(bytes);
  EXPECT_EQ(cudaMemset(b.get(), 0xA5, bytes), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // before a decoder's non-blocking stream writes it
  return b;
}

}  // namespace kvs::codec::cuda_test
