// Host side of the GPU decoders (codec/cuda/decode.h): plan on the host
// (codec/cuda/plan.h, Verify::kDevice), stage the stream and its metadata,
// launch the verification kernels, then the decode kernels.
#include "codec/cuda/decode.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/core.h>

#include "codec/cachegen.h"
#include "codec/cachegen_paper.h"
#include "codec/cuda/cuda_util.h"
#include "codec/cuda/kernels.h"
#include "codec/cuda/paper_model_device.h"
#include "codec/cuda/plan.h"
#include "codec/kvs_internal.h"

namespace kvs::codec::cuda {

using detail::check;
using detail::round_up;
using detail::to_device;

namespace {

const char* fault_text(CodecId codec, uint32_t code) {
  if (code == detail::kFaultBadTable) return "frequency table invalid";
  if (code == detail::kFaultBadScale) return "scale not finite";
  if (codec == CodecId::kCacheGen) {
    switch (code) {
      case 1: return "has a bad initial state";
      case 2: return "is truncated";
      default: return "does not decode";
    }
  }
  switch (code) {
    case 3: return "raw bits truncated";
    case 4: return "value out of range";
    case 5: return "raw bits have extra data";
    default: return "does not decode";
  }
}

}  // namespace

bool available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();  // clear the error
    return false;
  }
  const bool ok = detail::probe_kernels() == cudaSuccess;
  cudaGetLastError();
  return ok;
}

std::string device_description() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fmt::format("none usable (CUDA runtime: {})", cudaGetErrorString(e));
  }
  if (n == 0) return "none (no CUDA device)";
  int dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "CUDA device without properties";
  const cudaError_t probe = detail::probe_kernels();
  cudaGetLastError();
  return fmt::format("{}, sm_{}{}, {} SMs, {:.1f} GiB{}", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                     double(prop.totalGlobalMem) / double(1ull << 30),
                     probe == cudaSuccess ? "" : fmt::format(" (kernels cannot run: {})", cudaGetErrorString(probe)));
}

std::string built_kernels() {
  return "decode kernels for sm_" KVSTREAM_CUDA_ARCHS
         ": kvs, cachegen scheme=code and scheme=paper; encode kernels: cachegen scheme=code and scheme=paper, kvs";
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes) check(cudaMalloc(&ptr_, bytes), "cudaMalloc");
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}

struct Decoder::Impl {
  static constexpr size_t kSlots = 1024;  // chunks in flight between synchronize() calls

  int device = 0;  // the device current at construction, where it all runs (detail::DeviceScope)
  cudaStream_t stream = nullptr;
  unsigned long long* fault_device = nullptr;
  unsigned long long* fault_host = nullptr;  // pinned
  struct Pending {
    size_t slot;
    CodecId codec;
    uint64_t token_begin;
    bool paper;          // cachegen scheme=paper
    uint32_t body;       // the stream's bytes before its CRC (for the verification's messages)
    bool ended = false;  // its fault is on its way back (false: a CUDA call failed in between)
    bool timed = false;  // its device time added up (a synchronize() threw before its fault was read)
    // The host's meta, kept until synchronize(): cudaMemcpyAsync from pageable
    // memory need not have read it when the call returns.
    std::vector<uint8_t> meta = {};
  };
  bool timing = false;
  double device_s = 0;
  double host_s = 0;  // planning, in decode()
  std::vector<cudaEvent_t> events;  // [2 * slot]: before the chunk's first copy, [2 * slot + 1]: after its kernels
  std::vector<Pending> pending;
  size_t next_slot = 0;
  std::shared_ptr<const kvs_detail::KvsCodec> kvs;  // parses kvs streams (created at the first)
  // cachegen scheme=paper: the model's tables on the device, maybe shared
  // with other Decoders and Encoders (null: no model).
  std::shared_ptr<PaperModelOnDevice> paper;
  DeviceBuffer gauss;                          // kvs's tables on the device
  // kvs's RoPE tables (detail::KvsRope), one per set of frequencies met
  // (a stream with per-layer RoPE has several), on the host and the device,
  // each grown only for a chunk past its end; the tables they replaced wait
  // in `retired_ropes` until synchronize() (chunks in flight read them, their
  // copies may be pending).
  struct Rope {
    detail::KvsRope host;
    DeviceBuffer device;
  };
  std::vector<Rope> ropes;
  std::vector<Rope> retired_ropes;
  // The device row of `inv_freq`'s table for this chunk, grown (host time, as planning) when it does not serve it.
  const float* rope_row(const std::vector<double>& inv_freq, const StreamHeader& chunk);
  DeviceBuffer crc;                            // the CRC tables (detail::CrcTables)
  uint32_t scan_sections = 0;                  // the last section count asked of CUB
  size_t scan_bytes = 0;                       // and its scan's temporary storage
  // The chunks' device memory: this decoder's own stream-ordered pool, which
  // keeps freed memory for the next chunk instead of returning it at every
  // synchronisation (the device's default pool, which other code shares, is
  // left as it is).
  cudaMemPool_t pool = nullptr;

  ~Impl() {
    cudaStreamSynchronize(stream);
    for (cudaEvent_t e : events) cudaEventDestroy(e);
    if (fault_device) cudaFree(fault_device);
    if (fault_host) cudaFreeHost(fault_host);
    if (pool) cudaMemPoolDestroy(pool);
  }

  // Device memory in stream order (freed in stream order after the kernels).
  void* alloc(size_t bytes) {
    void* p = nullptr;
    check(cudaMallocFromPoolAsync(&p, std::max<size_t>(bytes, 16), pool, stream), "cudaMallocFromPoolAsync");
    return p;
  }
  void release(void* p) { check(cudaFreeAsync(p, stream), "cudaFreeAsync"); }
  void upload(void* dst, const void* src, size_t bytes) {
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
  }

  unsigned long long* begin_chunk(CodecId codec, uint64_t token_begin, bool paper_scheme, uint32_t body) {
    if (pending.size() == kSlots) {
      // Every slot is in flight: wait for them (the only host sync here, after kSlots chunks).
      synchronize();
    }
    const size_t slot = next_slot;
    next_slot = (next_slot + 1) % kSlots;
    if (timing) {
      if (events.empty()) {
        events.resize(2 * kSlots);
        for (cudaEvent_t& e : events) check(cudaEventCreate(&e), "cudaEventCreate");
      }
      check(cudaEventRecord(events[2 * slot], stream), "cudaEventRecord");
    }
    check(cudaMemsetAsync(fault_device + slot, 0xff, sizeof(unsigned long long), stream), "cudaMemsetAsync");
    pending.push_back({slot, codec, token_begin, paper_scheme, body});
    return fault_device + slot;
  }
  void end_chunk() {
    const size_t slot = pending.back().slot;
    if (timing) check(cudaEventRecord(events[2 * slot + 1], stream), "cudaEventRecord");
    check(cudaMemcpyAsync(fault_host + slot, fault_device + slot, sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                          stream),
          "cudaMemcpyAsync (fault)");
    pending.back().ended = true;
  }

  void synchronize() {
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    retired_ropes.clear();
    std::vector<Pending> done = std::move(pending);
    pending.clear();
    if (timing)
      for (const Pending& p : done) {
        if (!p.ended || p.timed) continue;
        float ms = 0;
        check(cudaEventElapsedTime(&ms, events[2 * p.slot], events[2 * p.slot + 1]), "cudaEventElapsedTime");
        device_s += 1e-3 * ms;
      }
    for (size_t i = 0; i < done.size(); ++i) {
      const Pending& p = done[i];
      if (!p.ended) continue;
      const unsigned long long f = fault_host[p.slot];
      if (f == detail::kNoFault) continue;
      // The chunks after this one stay pending (their slots are not reused
      // before the next synchronize()), so that a later faulty chunk is
      // reported then rather than lost with this exception.
      for (size_t j = i + 1; j < done.size(); ++j) {
        pending.push_back(std::move(done[j]));
        pending.back().timed = true;
      }
      if (f & detail::kVerifyFault) throw CorruptStream(detail::verify_fault_text(f, p.body));  // the CPU decoder's message
      const uint32_t code = uint32_t(f & 0xff);
      const uint64_t section = f >> 8;
      const char* what = p.paper ? "cachegen paper substream" : p.codec == CodecId::kCacheGen ? "cachegen stream"
                                                                                            : "kvs substream";
      const char* text = !p.paper ? fault_text(p.codec, code)
                         : code == 2 ? "has more escape symbols than its escaped values"
                         : code == 3 ? "stores more escaped values than it codes escapes"
                                     : "does not decode";
      throw CorruptStream(fmt::format("corrupt KV bitstream: {} {} {} (GPU decode of the chunk at token {})", what,
                                      section, text, p.token_begin));
    }
  }

  // Device scratch for verifying a stream: the CRC register (16 bytes); with
  // the walk, the offsets, the scan's sums and CUB's storage (256-aligned).
  size_t verify_bytes(const detail::VerifyPlan& v) {
    if (!v.walk) return 16;
    if (scan_sections != v.sections || scan_bytes == 0) {
      scan_bytes = detail::verify_scan_temp_bytes(v.sections);
      scan_sections = v.sections;
    }
    return 256 + round_up(4 * (size_t(v.sections) + 1), 256) + round_up(8 * size_t(v.sections), 256) + scan_bytes;
  }
  // Enqueues the verification of the stream at `stream_dev` (scratch: 256-aligned,
  // verify_bytes(v)); returns its launch (with the walk: where the section offsets will be).
  detail::VerifyLaunch verify(const detail::VerifyPlan& v, const uint8_t* stream_dev, uint8_t* scratch,
                              unsigned long long* fault) {
    uint32_t* acc = reinterpret_cast<uint32_t*>(scratch);
    uint32_t* offsets = nullptr;
    uint64_t* ends = nullptr;
    void* temp = nullptr;
    if (v.walk) {
      offsets = reinterpret_cast<uint32_t*>(scratch + 256);
      ends = reinterpret_cast<uint64_t*>(scratch + 256 + round_up(4 * (size_t(v.sections) + 1), 256));
      temp = reinterpret_cast<uint8_t*>(ends) + round_up(8 * size_t(v.sections), 256);
    }
    check(cudaMemsetAsync(acc, 0, sizeof(uint32_t), stream), "cudaMemsetAsync (CRC)");
    const detail::VerifyLaunch p =
        v.bind(stream_dev, static_cast<const detail::CrcTables*>(crc.get()), acc, ends, offsets, fault);
    detail::launch_verify(p, temp, v.walk ? scan_bytes : 0, stream);
    return p;
  }

  // The device memory of one chunk, one stream-ordered allocation: the
  // stream's copy (none when the caller staged it), the plan's meta, the
  // verification's scratch.
  struct ChunkMemory {
    uint8_t* base;
    const uint8_t* stream;
    uint8_t* meta;
    uint8_t* scratch;
  };
  // `meta` moves to the chunk's Pending (the copy from it is asynchronous).
  ChunkMemory stage(std::span<const uint8_t> bytes, const uint8_t* staged, std::vector<uint8_t>& meta,
                    const detail::VerifyPlan& v) {
    const size_t stream_size = staged ? 0 : round_up(bytes.size(), 256), meta_size = round_up(meta.size(), 256);
    uint8_t* dev = static_cast<uint8_t*>(alloc(stream_size + meta_size + verify_bytes(v)));
    if (!staged) upload(dev, bytes.data(), bytes.size());
    upload(dev + stream_size, meta.data(), meta.size());
    pending.back().meta = std::move(meta);
    return {dev, staged ? staged : dev, dev + stream_size, dev + stream_size + meta_size};
  }
  // make(): a plan; its wall-clock time goes to host_s.
  template <class Make>
  auto plan(Make&& make) {
    const auto t0 = std::chrono::steady_clock::now();
    auto p = make();
    host_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return p;
  }

  void decode_cachegen(std::span<const uint8_t> stream_bytes, const uint8_t* staged, void* out, OutputType type,
                       StreamHeader* header);
  void decode_kvs(std::span<const uint8_t> stream_bytes, const uint8_t* staged, void* out, OutputType type,
                  StreamHeader* header);
  void decode_cachegen_paper(std::span<const uint8_t> stream_bytes, const uint8_t* staged, void* out, OutputType type,
                             StreamHeader* header);
};

Decoder::Decoder(cudaStream_t stream, std::shared_ptr<const CacheGenPaperModel> paper_model, std::string model_file)
    : Decoder(stream, paper_model && available()
                          ? std::make_shared<PaperModelOnDevice>(std::move(paper_model), std::move(model_file))
                          : nullptr) {}

Decoder::Decoder(cudaStream_t stream, std::shared_ptr<PaperModelOnDevice> paper_tables)
    : impl_(std::make_unique<Impl>()) {
  if (!available()) throw Error("CUDA decode: no usable GPU: " + device_description());
  if (paper_tables) paper_tables->check_current_device("CUDA decode");
  impl_->device = detail::current_device();
  impl_->stream = stream;
  impl_->paper = std::move(paper_tables);
  check(cudaMalloc(reinterpret_cast<void**>(&impl_->fault_device), Impl::kSlots * sizeof(unsigned long long)),
        "cudaMalloc");
  const detail::CrcTables& crc = detail::crc_tables();
  impl_->crc = DeviceBuffer(sizeof(crc));
  detail::copy_to_device(impl_->crc.get(), &crc, sizeof(crc), "cudaMemcpy (CRC tables)");
  check(cudaMallocHost(reinterpret_cast<void**>(&impl_->fault_host), Impl::kSlots * sizeof(unsigned long long)),
        "cudaMallocHost");
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = impl_->device;
  check(cudaMemPoolCreate(&impl_->pool, &props), "cudaMemPoolCreate");
  uint64_t threshold = ~0ull;  // keep what is freed for the next chunk
  check(cudaMemPoolSetAttribute(impl_->pool, cudaMemPoolAttrReleaseThreshold, &threshold), "cudaMemPoolSetAttribute");
}

Decoder::~Decoder() {
  detail::on_device_noexcept(impl_->device, [&] { impl_.reset(); });
}

cudaStream_t Decoder::stream() const { return impl_->stream; }

void Decoder::synchronize() {
  const detail::DeviceScope on(impl_->device);
  impl_->synchronize();
}

void Decoder::set_timing(bool on) {
  const detail::DeviceScope on_device(impl_->device);
  if (!impl_->pending.empty()) impl_->synchronize();  // chunks in flight were enqueued without (or with) events
  impl_->timing = on;
}

double Decoder::device_seconds() const { return impl_->device_s; }

double Decoder::host_seconds() const { return impl_->host_s; }

StreamHeader Decoder::decode(std::span<const uint8_t> bitstream, void* out, OutputType type) {
  return decode(bitstream, nullptr, out, type);
}

StreamHeader Decoder::decode(std::span<const uint8_t> bitstream, const uint8_t* staged, void* out, OutputType type) {
  if (staged) detail::check_staged(staged);
  const detail::DeviceScope on(impl_->device);
  const uint16_t id = bitstream.size() >= 8 ? uint16_t(bitstream[6] | bitstream[7] << 8) : 0;
  StreamHeader header;
  if (id == uint16_t(CodecId::kCacheGen) && stream_model_hash(bitstream) != 0)
    impl_->decode_cachegen_paper(bitstream, staged, out, type, &header);
  else if (id == uint16_t(CodecId::kCacheGen))
    impl_->decode_cachegen(bitstream, staged, out, type, &header);
  else if (id == uint16_t(CodecId::kKvs))
    impl_->decode_kvs(bitstream, staged, out, type, &header);
  else
    throw Error(fmt::format("CUDA decode: codec id {} has no GPU decoder (kvs: {}, cachegen: {})", id,
                            uint16_t(CodecId::kKvs), uint16_t(CodecId::kCacheGen)));
  return header;
}

void Decoder::Impl::decode_cachegen(std::span<const uint8_t> stream_bytes, const uint8_t* staged, void* out,
                                    OutputType type, StreamHeader* header) {
  detail::CachegenPlan plan = this->plan([&] { return detail::plan_cachegen(stream_bytes, detail::Verify::kDevice); });
  *header = plan.header;
  unsigned long long* fault = begin_chunk(CodecId::kCacheGen, plan.header.token_begin, false, plan.verify.body);
  const ChunkMemory m = stage(stream_bytes, staged, plan.meta, plan.verify);
  const uint32_t* offsets = verify(plan.verify, m.stream, m.scratch, fault).offsets;
  if (plan.header.tokens > 0)
    detail::launch_cachegen_code(plan.bind(m.stream, m.meta, offsets, out, uint8_t(type), fault), stream);
  release(m.base);
  end_chunk();
}

void Decoder::Impl::decode_cachegen_paper(std::span<const uint8_t> stream_bytes, const uint8_t* staged, void* out,
                                          OutputType type, StreamHeader* header) {
  detail::CachegenPaperPlan plan = this->plan(
      [&] {
        return detail::plan_cachegen_paper(stream_bytes, paper ? &paper->model() : nullptr,
                                           paper ? paper->model_file() : std::string(), detail::Verify::kDevice);
      });
  *header = plan.header;
  // The plan checked the stream's level; its tables are built at the first
  // stream of that level (by whichever Decoder or Encoder sharing them asks first).
  const PaperModelOnDevice::Level lv = paper->level(int(plan.header.level));
  unsigned long long* fault = begin_chunk(CodecId::kCacheGen, plan.header.token_begin, true, plan.verify.body);
  const ChunkMemory m = stage(stream_bytes, staged, plan.meta, plan.verify);
  void* channels = alloc(plan.channels_bytes());
  verify(plan.verify, m.stream, m.scratch, fault);
  detail::launch_cachegen_paper(
      plan.bind(m.stream, m.meta, paper->anchors(), paper->step_a(), lv.deltas, lv.step_d, lv.M,
                static_cast<detail::PaperChannel*>(channels), out, uint8_t(type), fault),
      stream);
  release(channels);
  release(m.base);
  end_chunk();
}

const float* Decoder::Impl::rope_row(const std::vector<double>& inv_freq, const StreamHeader& chunk) {
  Rope* rope = nullptr;
  for (Rope& r : ropes)
    if (r.host.inv_freq == inv_freq && r.host.head_dim == chunk.shape.head_dim) rope = &r;
  if (!rope) {
    if (ropes.size() >= 2 * kvs_core::kMaxRopeTables) {  // frequencies of many models: the oldest table goes
      retired_ropes.push_back(std::move(ropes.front()));
      ropes.erase(ropes.begin());
    }
    rope = &ropes.emplace_back();
  }
  if (!rope->host.serves(inv_freq, chunk)) {  // a chunk past the table: a larger one
    detail::KvsRope grown = this->plan([&] { return detail::kvs_rope(inv_freq, chunk, &rope->host); });
    DeviceBuffer device(sizeof(float) * grown.cs.size());
    // The positions it shares with the table on the device copied there, the new ones from the host.
    const size_t kept = grown.extends(rope->host) ? rope->host.cs.size() : 0;
    if (kept)
      check(cudaMemcpyAsync(device.get(), rope->device.get(), sizeof(float) * kept, cudaMemcpyDeviceToDevice, stream),
            "cudaMemcpyAsync (RoPE table)");
    upload(static_cast<float*>(device.get()) + kept, grown.cs.data() + kept, sizeof(float) * (grown.cs.size() - kept));
    retired_ropes.push_back(std::move(*rope));
    rope->host = std::move(grown);
    rope->device = std::move(device);
  }
  return rope->host.at(chunk, static_cast<const float*>(rope->device.get()));
}

void Decoder::Impl::decode_kvs(std::span<const uint8_t> stream_bytes, const uint8_t* staged, void* out,
                               OutputType type, StreamHeader* header) {
  if (!kvs) {
    kvs = detail::make_kvs_parser();
    const std::vector<detail::KvsGauss> g = detail::kvs_gauss(*kvs);
    gauss = DeviceBuffer(sizeof(detail::KvsGauss) * g.size());
    detail::copy_to_device(gauss.get(), g.data(), gauss.size(), "cudaMemcpy (kvs tables)");
  }
  detail::KvsPlan plan = this->plan([&] { return detail::plan_kvs(stream_bytes, *kvs, detail::Verify::kDevice); });
  *header = plan.header;
  unsigned long long* fault = begin_chunk(CodecId::kKvs, plan.header.token_begin, false, plan.verify.body);
  std::vector<const float*> rope_rows(plan.ropes.size(), nullptr);
  for (size_t i = 0; i < plan.ropes.size(); ++i)
    if (!plan.ropes[i].empty()) rope_rows[i] = rope_row(plan.ropes[i], plan.header);
  const size_t symbols_size = round_up(plan.symbols_bytes, 256);
  const ChunkMemory m = stage(stream_bytes, staged, plan.meta, plan.verify);
  uint8_t* scratch = static_cast<uint8_t*>(alloc(symbols_size + plan.tmp_bytes));
  // The CRC, the table, and the pieces' places in their sections (into the meta's copy).
  const detail::VerifyLaunch v = verify(plan.verify, m.stream, m.scratch, fault);
  detail::launch_kvs_locate(v, reinterpret_cast<detail::KvsPieceDesc*>(m.meta + plan.pieces_at), plan.piece_count,
                            stream);
  detail::launch_kvs(plan.bind(m.stream, m.meta, static_cast<const detail::KvsGauss*>(gauss.get()), rope_rows, scratch,
                               reinterpret_cast<float*>(scratch + symbols_size), out, uint8_t(type), fault),
                     stream);
  release(scratch);
  release(m.base);
  end_chunk();
}

}  // namespace kvs::codec::cuda
