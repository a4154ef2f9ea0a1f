// Host side of the GPU encoder (codec/cuda/encode.h).
#include "codec/cuda/encode.h"

#include <vector>

#include <cuda_runtime.h>
#include <fmt/core.h>

#include "codec/cuda/cuda_util.h"
#include "codec/cuda/kernels.h"
#include "codec/cuda/plan.h"

namespace kvs::codec::cuda {

using detail::check;

Encoder::Encoder(cudaStream_t stream) : stream_(stream) {
  if (!available()) throw Error("CUDA encode: no usable GPU: " + device_description());
}

Bytes Encoder::encode_cachegen(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                               uint32_t tokens, int level, uint32_t stream_tokens) {
  if (in == OutputType::kBF16) throw Error("CUDA encode: bf16 input is not supported (fp16 or fp32)");
  const detail::CachegenEncodePlan plan =
      detail::plan_cachegen_encode(shape, dtype, token_begin, tokens, level, stream_tokens);
  const size_t planes_bytes = plan.planes.size() * sizeof(detail::CachegenPlane);
  // One device allocation, 256-byte aligned parts.
  const auto round = [](size_t n) { return (n + 255) / 256 * 256; };
  const size_t o_planes = 0, o_scales = o_planes + round(planes_bytes), o_tables = o_scales + round(plan.scales_bytes),
               o_symbols = o_tables + round(plan.tables_bytes), o_slots = o_symbols + round(plan.symbols_bytes),
               o_sizes = o_slots + round(plan.streams * plan.capacity), o_fault = o_sizes + round(4 * plan.streams),
               total = o_fault + 256;
  DeviceBuffer buf(total);
  uint8_t* d = static_cast<uint8_t*>(buf.get());
  check(cudaMemcpyAsync(d + o_planes, plan.planes.data(), planes_bytes, cudaMemcpyHostToDevice, stream_),
        "cudaMemcpyAsync");
  check(cudaMemsetAsync(d + o_fault, 0xff, sizeof(unsigned long long), stream_), "cudaMemsetAsync");
  auto* fault = reinterpret_cast<unsigned long long*>(d + o_fault);
  const detail::CachegenEncodeLaunch p =
      plan.bind(kv, in == OutputType::kF16, reinterpret_cast<const detail::CachegenPlane*>(d + o_planes), d + o_scales,
                d + o_tables, d + o_symbols, d + o_slots, reinterpret_cast<uint32_t*>(d + o_sizes), fault);
  detail::launch_cachegen_encode(p, stream_);
  std::vector<uint8_t> scales(plan.scales_bytes), tables(plan.tables_bytes);
  std::vector<uint32_t> sizes(plan.streams);
  unsigned long long fault_host = detail::kNoFault;
  check(cudaMemcpyAsync(&fault_host, fault, sizeof(fault_host), cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  check(cudaMemcpyAsync(scales.data(), d + o_scales, scales.size(), cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  check(cudaMemcpyAsync(tables.data(), d + o_tables, tables.size(), cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  check(cudaMemcpyAsync(sizes.data(), d + o_sizes, 4 * sizes.size(), cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  if (fault_host != detail::kNoFault) plan.scale_error(fault_host);
  const std::vector<uint64_t> off = plan.offsets(sizes);
  DeviceBuffer dev_off(8 * off.size()), dev_payload(std::max<uint64_t>(off.back(), 1));
  check(cudaMemcpyAsync(dev_off.get(), off.data(), 8 * off.size(), cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
  detail::launch_cachegen_gather(p, static_cast<const uint64_t*>(dev_off.get()),
                                 static_cast<uint8_t*>(dev_payload.get()), stream_);
  std::vector<uint8_t> payload(off.back());
  check(cudaMemcpyAsync(payload.data(), dev_payload.get(), payload.size(), cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  return plan.assemble(scales, tables, off, payload);
}

}  // namespace kvs::codec::cuda
