// Host side of the GPU encoder for cachegen scheme=paper
// (codec/cuda/encode.h Encoder::encode_cachegen_paper): the codec model's
// tables on the device (codec/cuda/paper_model_device.h, shared with the
// decoders), the buffers, the kernels (codec/cuda/paper_encode_kernels.cu),
// and the stream assembled in device memory (codec/cuda/stream_layout.h).
#include <vector>

#include <cuda_runtime.h>

#include "codec/cuda/cuda_util.h"
#include "codec/cuda/encode.h"
#include "codec/cuda/encode_stream.h"
#include "codec/cuda/paper_encode_kernels.h"
#include "codec/cuda/paper_encode_plan.h"
#include "codec/cuda/paper_model_device.h"
#include "codec/cuda/plan.h"

namespace kvs::codec::cuda {

using detail::check;

Encoder::Encoder(cudaStream_t stream, std::shared_ptr<const CacheGenPaperModel> paper_model, std::string model_file)
    : Encoder(stream) {
  if (paper_model) paper_ = std::make_shared<PaperModelOnDevice>(std::move(paper_model), std::move(model_file));
}

Encoder::Encoder(cudaStream_t stream, std::shared_ptr<PaperModelOnDevice> paper_tables) : Encoder(stream) {
  if (paper_tables) paper_tables->check_current_device("CUDA encode");
  paper_ = std::move(paper_tables);
}

Bytes Encoder::encode_cachegen_paper(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                                     uint32_t tokens, int level) {
  const detail::DeviceScope on(device_);
  return encode_cachegen_paper_to_device(kv, in, shape, dtype, token_begin, tokens, level).to_host(stream_);
}

DeviceStream Encoder::encode_cachegen_paper_to_device(const void* kv, OutputType in, KVShape shape, DType dtype,
                                                      uint64_t token_begin, uint32_t tokens, int level) {
  const detail::DeviceScope on(device_);
  const detail::CachegenPaperEncodePlan plan = detail::plan_cachegen_paper_encode(
      shape, dtype, token_begin, tokens, level, paper_ ? &paper_->model() : nullptr,
      paper_ ? paper_->model_file() : std::string());
  if (in == OutputType::kBF16) throw Error("CUDA encode: bf16 input is not supported (fp16 or fp32)");
  const PaperModelOnDevice::Level lv = paper_->level(level);  // (the plan checked the level)
  const size_t subs = plan.substreams;
  detail::DeviceParts parts;  // one device allocation
  const size_t o_symbols = parts.add(plan.symbols_bytes), o_slots = parts.add(subs * plan.capacity),
               o_sizes = parts.add(4 * subs), o_escapes = parts.add(4 * subs);
  DeviceBuffer buf(parts.total);
  uint8_t* d = static_cast<uint8_t*>(buf.get());
  const detail::CachegenPaperEncodeLaunch p = plan.bind(
      kv, in == OutputType::kF16, paper_->anchors(), paper_->step_a(), lv.deltas, lv.step_d, lv.M, d + o_symbols,
      d + o_slots, reinterpret_cast<uint32_t*>(d + o_sizes), reinterpret_cast<uint32_t*>(d + o_escapes));
  detail::launch_cachegen_paper_encode(p, stream_);
  std::vector<uint32_t> sizes(subs), escapes(subs);
  check(cudaMemcpyAsync(sizes.data(), d + o_sizes, 4 * subs, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  check(cudaMemcpyAsync(escapes.data(), d + o_escapes, 4 * subs, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  // The stream in device memory: the substreams' sections at their offsets,
  // then the table and CRC.
  const std::vector<uint64_t> off = plan.offsets(sizes, escapes);
  const detail::StreamLayout layout = plan.layout(off);
  detail::DeviceStreamBuild b = detail::begin_device_stream(layout, {}, off, stream_);
  detail::launch_cachegen_paper_write(p, b.offsets(), b.at(layout.payload_at), stream_);
  detail::finish_device_stream(layout, b, static_cast<const detail::CrcTables*>(crc_->get()), stream_);
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");  // (the host's head and offsets read)
  return DeviceStream{std::move(b.stream), layout.bytes()};
}

}  // namespace kvs::codec::cuda
