// The GPU chunk timer (codec/cuda/profile_timer.h): cuda::Decoder with its
// timing on, given a stream staged on the device before the timed part, so
// that its CUDA events bracket the device's decode work and not the copy of
// the stream; cuda::Encoder timed by the wall clock.
#include "codec/cuda/profile_timer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/core.h>

#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/cachegen_paper.h"
#include "codec/cuda/cuda_util.h"
#include "codec/cuda/decode.h"
#include "codec/cuda/encode.h"
#include "codec/cuda/paper_model_device.h"
#include "codec/fp16.h"
#include "codec/kvs_internal.h"

namespace kvs::codec::cuda {

using detail::check;
using detail::to_device;

namespace {

// A stream's bytes on the device, in a buffer readable to a multiple of 16
// bytes (Decoder::decode's `staged`; the padding is not written, nor read).
DeviceBuffer stage(std::span<const uint8_t> bytes) {
  DeviceBuffer b(std::max<size_t>((bytes.size() + 15) / 16 * 16, 16));
  detail::copy_to_device(b.get(), bytes.data(), bytes.size(), "cudaMemcpy");
  return b;
}

OutputType output_type(DType dtype) {
  switch (dtype) {
    case DType::kF16: return OutputType::kF16;
    case DType::kBF16: return OutputType::kBF16;
    default: return OutputType::kF32;
  }
}

size_t type_bytes(OutputType t) { return t == OutputType::kF32 ? 4 : 2; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The CPU decoder's values as the device writes them for `type`.
std::vector<uint8_t> expected_bytes(const KVChunk& cpu, OutputType type) {
  std::vector<uint8_t> out(cpu.values.size() * type_bytes(type));
  if (type == OutputType::kF32) {
    if (!out.empty()) std::memcpy(out.data(), cpu.values.data(), out.size());
    return out;
  }
  for (size_t i = 0; i < cpu.values.size(); ++i) {
    const uint16_t h = type == OutputType::kF16 ? float_to_half_bits(cpu.values[i]) : float_to_bf16_bits(cpu.values[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

class GpuChunkTimer final : public ChunkTimer {
 public:
  explicit GpuChunkTimer(std::string model_file) : model_file_(std::move(model_file)) {
    if (!available()) throw Error("--device cuda: no usable CUDA GPU: " + device_description());
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
    device_ = fmt::format("cuda:{}", prop.name);
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    encoder_ = std::make_unique<Encoder>(stream_);
  }
  ~GpuChunkTimer() override {
    cudaStreamSynchronize(stream_);
    decoder_.reset(), paper_decoder_.reset(), encoder_.reset(), paper_encoder_.reset();  // they use the stream
    cudaStreamDestroy(stream_);
  }

  std::string device() const override { return device_; }
  bool decodes(const Codec& codec) const override { return has_gpu_decoder(codec.name()); }
  bool encodes(const Codec& codec) const override {
    return codec.name() == "cachegen" || codec.name() == "kvs";  // cachegen: scheme=code and scheme=paper
  }

  ChunkTimes time(const Codec& codec, const KVChunk& chunk, int level, std::span<const uint8_t> stream,
                  const KVChunk& cpu_decoded, uint32_t repeats, bool check_output) override {
    if (!decodes(codec))
      throw Error(fmt::format("--device cuda: codec {} has no GPU decoder (those with one: {})", codec.name(),
                              kGpuDecoderCodecs));
    repeats = std::max<uint32_t>(repeats, 1);
    ChunkTimes t;
    t.decode_s = time_decode(codec, stream, cpu_decoded, repeats, check_output, &t.decode_host_s);
    if (encodes(codec)) t.encode_s = time_encode(codec, chunk, level, stream, repeats, check_output);
    return t;
  }

 private:
  // decode_s: the device's work for a stream already in device memory (the
  // cuda::Decoder's CUDA events: the copy of the plan's metadata, the
  // verification and decode kernels); *host_s: its planning on the host.
  double time_decode(const Codec& codec, std::span<const uint8_t> stream, const KVChunk& cpu_decoded,
                     uint32_t repeats, bool check_output, double* host_s) {
    const OutputType type = output_type(cpu_decoded.dtype);
    const size_t n = cpu_decoded.values.size();
    // The header first: the output buffer must hold what the stream decodes to.
    const uint16_t id = stream.size() >= 8 ? uint16_t(stream[6] | stream[7] << 8) : 0;
    if (id != uint16_t(CodecId::kCacheGen) && id != uint16_t(CodecId::kKvs))
      throw Error(fmt::format("--device cuda: codec {}: codec id {} has no GPU decoder", codec.name(), id));
    uint32_t sections = 0;
    const StreamHeader header = parse_stream_header(stream, CodecId(id), &sections, Crc::kDeferred);
    if (header.elements() != n || header.dtype != cpu_decoded.dtype)
      throw Error(fmt::format("--device cuda: codec {}: the stream holds {} values of {}, the CPU decoded {} of {}",
                              codec.name(), header.elements(), to_string(header.dtype), n, to_string(cpu_decoded.dtype)));
    Decoder& decoder = stream_model_hash(stream) != 0 ? paper_decoder() : code_decoder();
    DeviceBuffer out(std::max<size_t>(n * type_bytes(type), 16));
    const DeviceBuffer staged = stage(stream);
    // One decode: its device and host seconds.
    const auto once = [&](double* plan_s) {
      const double device0 = decoder.device_seconds(), host0 = decoder.host_seconds();
      try {
        decoder.decode(stream, static_cast<const uint8_t*>(staged.get()), out.get(), type);
        decoder.synchronize();
      } catch (const CorruptStream& e) {
        throw Error(fmt::format("--device cuda: codec {}: the GPU decoder refused a stream the CPU decoded: {}",
                                codec.name(), e.what()));
      }
      *plan_s = decoder.host_seconds() - host0;
      return decoder.device_seconds() - device0;
    };
    // Warm-up (first launches load the kernels), then the check, then the timed runs.
    check(cudaMemsetAsync(out.get(), 0xa5, out.size(), decoder.stream()), "cudaMemsetAsync");  // every value must be written
    double plan_s = 0;
    once(&plan_s);
    if (check_output) {
      std::vector<uint8_t> got(n * type_bytes(type));
      check(cudaMemcpy(got.data(), out.get(), got.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
      if (got != expected_bytes(cpu_decoded, type)) {
        size_t i = 0;
        const std::vector<uint8_t> want = expected_bytes(cpu_decoded, type);
        while (i < got.size() && got[i] == want[i]) ++i;
        throw Error(fmt::format("--device cuda: codec {} level {}: GPU decode differs from the CPU decoder at value {} "
                                "of {} (chunk at token {}): the GPU decoders must be bit-exact",
                                codec.name(), unsigned(header.level), i / type_bytes(type), n, header.token_begin));
      }
    }
    double best = 1e300;
    *host_s = 1e300;
    for (uint32_t r = 0; r < repeats; ++r) {
      best = std::min(best, once(&plan_s));
      *host_s = std::min(*host_s, plan_s);
    }
    return best;
  }

  double time_encode(const Codec& codec, const KVChunk& chunk, int level, std::span<const uint8_t> cpu_stream,
                     uint32_t repeats, bool check_output) {
    // The chunk as it lies in the GPU's KV cache: fp16 bits, or floats for another dtype.
    const bool f16 = chunk.dtype == DType::kF16;
    DeviceBuffer kv;
    if (f16) {
      std::vector<uint16_t> half(chunk.values.size());
      for (size_t i = 0; i < half.size(); ++i) half[i] = float_to_half_bits(chunk.values[i]);
      kv = to_device(half);
    } else {
      kv = to_device(chunk.values);
    }
    // scheme=code: tokens per rANS stream, as the CPU encoder wrote them;
    // scheme=paper (a stream naming a codec model): the timer's model.
    // kvs: the codec's parameters.
    const bool kvs = codec.name() == "kvs";
    const uint32_t stream_tokens = kvs ? 0 : parse_stream(cpu_stream, CodecId::kCacheGen).header.flags;
    Encoder* paper = !kvs && stream_model_hash(cpu_stream) != 0 ? &paper_encoder() : nullptr;
    const auto once = [&] {  // wall clock: kernels, copies back, host assembly
      const OutputType in = f16 ? OutputType::kF16 : OutputType::kF32;
      if (kvs)
        return encoder_->encode_kvs(kv.get(), in, chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens, level,
                                    codec, chunk.context_tokens);
      return paper ? paper->encode_cachegen_paper(kv.get(), in, chunk.shape, chunk.dtype, chunk.token_begin,
                                                  chunk.tokens, level)
                   : encoder_->encode_cachegen(kv.get(), in, chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens,
                                               level, stream_tokens);
    };
    const Bytes warm = once();
    if (check_output && !std::equal(warm.begin(), warm.end(), cpu_stream.begin(), cpu_stream.end()))
      throw Error(fmt::format("--device cuda: codec {} level {}: the GPU-encoded stream ({} bytes) differs from the CPU "
                              "encoder's ({} bytes) for the chunk at token {}: the GPU encoder must be byte-exact",
                              codec.name(), level, warm.size(), cpu_stream.size(), chunk.token_begin));
    double best = 1e300;
    for (uint32_t r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      once();
      best = std::min(best, seconds_since(t0));
    }
    return best;
  }

  std::shared_ptr<const CacheGenPaperModel> paper_model() {
    if (!paper_) {
      if (model_file_.empty())
        throw Error("--device cuda: a cachegen scheme=paper stream needs its codec model (--codec-model)");
      paper_ = load_cachegen_paper_model(model_file_);
    }
    return paper_;
  }
  // The decoders: one for streams without a codec model, one with the
  // timer's (its tables on the device, shared with the scheme=paper encoder).
  Decoder& code_decoder() {
    if (!decoder_) {
      decoder_ = std::make_unique<Decoder>(stream_);
      decoder_->set_timing(true);
    }
    return *decoder_;
  }
  Decoder& paper_decoder() {
    if (!paper_decoder_) {
      paper_decoder_ = std::make_unique<Decoder>(stream_, paper_tables());
      paper_decoder_->set_timing(true);
    }
    return *paper_decoder_;
  }
  // The scheme=paper encoder (the same tables as paper_decoder()'s).
  Encoder& paper_encoder() {
    if (!paper_encoder_) paper_encoder_ = std::make_unique<Encoder>(stream_, paper_tables());
    return *paper_encoder_;
  }
  // The timer's codec model's tables on the device: one copy for its decoder and encoder.
  std::shared_ptr<PaperModelOnDevice> paper_tables() {
    if (!paper_tables_) paper_tables_ = std::make_shared<PaperModelOnDevice>(paper_model(), model_file_);
    return paper_tables_;
  }
  std::string model_file_, device_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Decoder> decoder_, paper_decoder_;
  std::unique_ptr<Encoder> encoder_, paper_encoder_;
  std::shared_ptr<const CacheGenPaperModel> paper_;
  std::shared_ptr<PaperModelOnDevice> paper_tables_;  // paper_decoder_'s and paper_encoder_'s
};

}  // namespace

std::unique_ptr<ChunkTimer> make_gpu_chunk_timer(const std::string& model_file) {
  return std::make_unique<GpuChunkTimer>(model_file);
}

}  // namespace kvs::codec::cuda
