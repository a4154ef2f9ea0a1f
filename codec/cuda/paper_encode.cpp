// Host side of the GPU encoder for cachegen scheme=paper
// (codec/cuda/encode.h Encoder::encode_cachegen_paper): the codec model's
// tables on the device (the GPU decoder's forms, plan.h PaperTables), the
// buffers, the kernels (codec/cuda/paper_encode_kernels.cu), and the stream
// assembled in device memory (codec/cuda/stream_layout.h).
#include <algorithm>
#include <mutex>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/core.h>

#include "codec/cachegen.h"  // kCacheGenLevels
#include "codec/cuda/cuda_util.h"
#include "codec/cuda/encode.h"
#include "codec/cuda/encode_stream.h"
#include "codec/cuda/paper_encode_kernels.h"
#include "codec/cuda/paper_encode_plan.h"
#include "codec/cuda/plan.h"

namespace kvs::codec::cuda {

using detail::check;
using detail::to_device;

namespace {

}  // namespace

namespace detail {

// A codec model's tables on the device: anchors and their steps at once,
// each level's delta tables, steps and M at its first chunk.
struct PaperEncodeTables {
  std::shared_ptr<const CacheGenPaperModel> model;
  std::string model_file;
  PaperTables host;  // build_paper_level's input; a level's delta tables are dropped once uploaded
  DeviceBuffer anchors, step_a;
  struct Level {
    DeviceBuffer deltas, step_d, M;
  };
  std::vector<Level> levels = std::vector<Level>(kCacheGenLevels);
  std::mutex mutex;  // copies of an Encoder share these tables, one copy per host thread

  const Level& level(int level) {
    const std::lock_guard<std::mutex> lock(mutex);
    Level& lv = levels.at(size_t(level));
    if (!lv.deltas.get()) {
      build_paper_level(*model, level, &host);
      lv.deltas = to_device(host.deltas[size_t(level)]);
      lv.step_d = to_device(host.step_d[size_t(level)]);
      lv.M = to_device(host.M[size_t(level)]);
      host.deltas[size_t(level)].clear();
      host.deltas[size_t(level)].shrink_to_fit();
    }
    return lv;
  }
};

}  // namespace detail

Encoder::Encoder(cudaStream_t stream, std::shared_ptr<const CacheGenPaperModel> paper_model, std::string model_file)
    : Encoder(stream) {
  if (!paper_model) return;
  auto t = std::make_shared<detail::PaperEncodeTables>();
  t->model = std::move(paper_model);
  t->model_file = std::move(model_file);
  t->host = detail::paper_tables(*t->model);
  t->anchors = to_device(t->host.anchors);
  t->step_a = to_device(t->host.step_a);
  paper_ = std::move(t);
}

Bytes Encoder::encode_cachegen_paper(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                                     uint32_t tokens, int level) {
  return encode_cachegen_paper_to_device(kv, in, shape, dtype, token_begin, tokens, level).to_host(stream_);
}

DeviceStream Encoder::encode_cachegen_paper_to_device(const void* kv, OutputType in, KVShape shape, DType dtype,
                                                      uint64_t token_begin, uint32_t tokens, int level) {
  const detail::CachegenPaperEncodePlan plan = detail::plan_cachegen_paper_encode(
      shape, dtype, token_begin, tokens, level, paper_ ? paper_->model.get() : nullptr,
      paper_ ? paper_->model_file : std::string());
  if (in == OutputType::kBF16) throw Error("CUDA encode: bf16 input is not supported (fp16 or fp32)");
  const detail::PaperEncodeTables::Level& lv = paper_->level(level);
  const size_t subs = plan.substreams;
  detail::DeviceParts parts;  // one device allocation
  const size_t o_symbols = parts.add(plan.symbols_bytes), o_slots = parts.add(subs * plan.capacity),
               o_sizes = parts.add(4 * subs), o_escapes = parts.add(4 * subs);
  DeviceBuffer buf(parts.total);
  uint8_t* d = static_cast<uint8_t*>(buf.get());
  const detail::CachegenPaperEncodeLaunch p = plan.bind(
      kv, in == OutputType::kF16, static_cast<const rans::CumTable*>(paper_->anchors.get()),
      static_cast<const float*>(paper_->step_a.get()), static_cast<const rans::BasicPackedTable<64>*>(lv.deltas.get()),
      static_cast<const float*>(lv.step_d.get()), static_cast<const int32_t*>(lv.M.get()), d + o_symbols, d + o_slots,
      reinterpret_cast<uint32_t*>(d + o_sizes), reinterpret_cast<uint32_t*>(d + o_escapes));
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
