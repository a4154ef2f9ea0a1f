// Host side of the GPU encoder (codec/cuda/encode.h).
#include "codec/cuda/encode.h"

#include <vector>

#include <cuda_runtime.h>
#include <fmt/core.h>

#include "codec/cuda/cuda_util.h"
#include "codec/cuda/encode_stream.h"
#include "codec/cuda/kernels.h"
#include "codec/cuda/plan.h"

namespace kvs::codec::cuda {

using detail::check;

namespace detail {

DeviceStreamBuild begin_device_stream(const StreamLayout& layout, std::span<const uint8_t> prefix,
                                      std::span<const uint64_t> offsets, cudaStream_t stream) {
  DeviceStreamBuild b;
  b.stream = DeviceBuffer(layout.buffer_bytes());
  b.payload_sections = offsets.size() - 1;
  b.scratch = DeviceBuffer(8 * offsets.size() + 8);  // the offsets, then the CRC register
  check(cudaMemcpyAsync(b.at(0), layout.head.data(), layout.head.size(), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
  if (!prefix.empty())
    check(cudaMemcpyAsync(b.at(layout.prefix_at), prefix.data(), prefix.size(), cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync");
  check(cudaMemcpyAsync(b.scratch.get(), offsets.data(), 8 * offsets.size(), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
  return b;
}

void finish_device_stream(const StreamLayout& layout, const DeviceStreamBuild& b, const CrcTables* crc,
                          cudaStream_t stream) {
  launch_stream_finish(layout.bind(b.at(0), b.offsets(), crc, b.crc_acc()), stream);
}

}  // namespace detail

Bytes DeviceStream::to_host(cudaStream_t stream) const {
  Bytes out(bytes);
  if (bytes)
    check(cudaMemcpyAsync(out.data(), buffer.get(), bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return out;
}

Encoder::Encoder(cudaStream_t stream) : stream_(stream) {
  if (!available()) throw Error("CUDA encode: no usable GPU: " + device_description());
  device_ = detail::current_device();
  const detail::CrcTables& crc = detail::crc_tables();
  auto dev = std::make_shared<DeviceBuffer>(sizeof(crc));
  detail::copy_to_device(dev->get(), &crc, sizeof(crc), "cudaMemcpy (CRC tables)");
  crc_ = std::move(dev);
}

Bytes Encoder::encode_cachegen(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                               uint32_t tokens, int level, uint32_t stream_tokens) {
  const detail::DeviceScope on(device_);
  return encode_cachegen_to_device(kv, in, shape, dtype, token_begin, tokens, level, stream_tokens).to_host(stream_);
}

DeviceStream Encoder::encode_cachegen_to_device(const void* kv, OutputType in, KVShape shape, DType dtype,
                                                uint64_t token_begin, uint32_t tokens, int level,
                                                uint32_t stream_tokens) {
  const detail::DeviceScope on(device_);
  if (in == OutputType::kBF16) throw Error("CUDA encode: bf16 input is not supported (fp16 or fp32)");
  const detail::CachegenEncodePlan plan =
      detail::plan_cachegen_encode(shape, dtype, token_begin, tokens, level, stream_tokens);
  const size_t planes_bytes = plan.planes.size() * sizeof(detail::CachegenPlane);
  detail::DeviceParts parts;  // one device allocation
  const size_t o_planes = parts.add(planes_bytes), o_scales = parts.add(plan.scales_bytes),
               o_tables = parts.add(plan.tables_bytes), o_symbols = parts.add(plan.symbols_bytes),
               o_slots = parts.add(plan.streams * plan.capacity), o_sizes = parts.add(4 * plan.streams),
               o_fault = parts.add(256);
  DeviceBuffer buf(parts.total);
  uint8_t* d = static_cast<uint8_t*>(buf.get());
  check(cudaMemcpyAsync(d + o_planes, plan.planes.data(), planes_bytes, cudaMemcpyHostToDevice, stream_),
        "cudaMemcpyAsync");
  check(cudaMemsetAsync(d + o_fault, 0xff, sizeof(unsigned long long), stream_), "cudaMemsetAsync");
  auto* fault = reinterpret_cast<unsigned long long*>(d + o_fault);
  const detail::CachegenEncodeLaunch p =
      plan.bind(kv, in == OutputType::kF16, reinterpret_cast<const detail::CachegenPlane*>(d + o_planes), d + o_scales,
                d + o_tables, d + o_symbols, d + o_slots, reinterpret_cast<uint32_t*>(d + o_sizes), fault);
  detail::launch_cachegen_encode(p, stream_);
  std::vector<uint32_t> sizes(plan.streams);
  unsigned long long fault_host = detail::kNoFault;
  check(cudaMemcpyAsync(&fault_host, fault, sizeof(fault_host), cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  check(cudaMemcpyAsync(sizes.data(), d + o_sizes, 4 * sizes.size(), cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  if (fault_host != detail::kNoFault) plan.scale_error(fault_host);
  // The stream in device memory: scales and tables (sections 0 and 1) copied
  // in on the device, the streams gathered after them, the table and CRC.
  const std::vector<uint64_t> off = plan.offsets(sizes);
  const detail::StreamLayout layout = plan.layout(off);
  detail::DeviceStreamBuild b = detail::begin_device_stream(layout, {}, off, stream_);
  if (plan.scales_bytes)
    check(cudaMemcpyAsync(b.at(layout.prefix_at), d + o_scales, plan.scales_bytes, cudaMemcpyDeviceToDevice, stream_),
          "cudaMemcpyAsync");
  if (plan.tables_bytes)
    check(cudaMemcpyAsync(b.at(layout.prefix_at + plan.scales_bytes), d + o_tables, plan.tables_bytes,
                          cudaMemcpyDeviceToDevice, stream_),
          "cudaMemcpyAsync");
  detail::launch_cachegen_gather(p, b.offsets(), b.at(layout.payload_at), stream_);
  detail::finish_device_stream(layout, b, static_cast<const detail::CrcTables*>(crc_->get()), stream_);
  // The host's offsets and head are read by the copies above before this returns.
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  return DeviceStream{std::move(b.stream), layout.bytes()};
}

}  // namespace kvs::codec::cuda
