// Decoding chunk bitstreams on a CUDA GPU, bit-exact with the CPU decoders
// (docs/codecs.md, "GPU"). Built only when nvcc is found (KVSTREAM_HAVE_CUDA);
// every call checks for a usable device and throws kvs::Error when there is none.
//
// Codecs: `kvs` and `cachegen` (scheme=code, and scheme=paper given its codec
// model). Each kernel thread decodes one
// substream of the stream's offset table with the KVS_HD code the CPU runs.
// The host checks the header and parses what it must (codec/cuda/plan.h,
// Verify::kDevice: for kvs its parameters, row references and channel
// models; for scheme=paper the size table and each substream's escape
// count; for scheme=code two sizes), then enqueues the copy of the stream,
// the verification kernels (codec/cuda/verify_threads.h: the CRC-32; for
// kvs and scheme=code the section table's scan and checks, and kvs's pieces
// split in their sections) and the decode kernels, which do nothing when
// the verification failed. Every corruption is reported with the CPU
// decoder's message: what the host finds by decode(), what the verification
// finds by synchronize().
// Output: every value of the chunk, layout [layer][kind][head][token][dim] as
// KVChunk::values, in fp16 or bf16 (the CPU decoder's floats rounded as
// float_to_half_bits / float_to_bf16_bits round them) or fp32 (its floats).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <cuda_runtime_api.h>

#include "codec/bitstream.h"
#include "codec/cachegen_paper.h"

namespace kvs::codec::cuda {

class PaperModelOnDevice;  // codec/cuda/paper_model_device.h

// Whether a CUDA device is present that can run the kernels.
bool available();
// The device the kernels would run on ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs"),
// or why there is none.
std::string device_description();
// What was compiled in, e.g. "decode kernels for sm_90: kvs, cachegen (scheme=code)".
std::string built_kernels();

// Output (and, for encode, input) element types: fp32, fp16 (round to nearest
// even, as float_to_half_bits), bf16 (as float_to_bf16_bits; decode only).
enum class OutputType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Decodes chunks on one CUDA stream, asynchronously: decode() returns once
// the work is enqueued (no host synchronisation: the stream's bytes are
// staged by cudaMemcpyAsync, device buffers come from the stream-ordered
// allocator), so decoding chunk i overlaps whatever the host does next, e.g.
// receiving chunk i + 1. Faults a kernel finds in a substream are collected on
// the device and reported by synchronize().
// A Decoder works on the CUDA device current when it is made (`stream` must
// belong to it), whichever device is current in the thread that calls it.
class Decoder {
 public:
  // `paper_model` (may be null) decodes cachegen scheme=paper streams of that
  // codec model (model_file names it in errors): a PaperModelOnDevice of its
  // own is made here (codec/cuda/paper_model_device.h: the anchors go to the
  // device now, a level's tables at the first stream of that level).
  explicit Decoder(cudaStream_t stream = nullptr, std::shared_ptr<const CacheGenPaperModel> paper_model = nullptr,
                   std::string model_file = "");
  // The same with a model's tables already on the device, shared with other
  // Decoders and Encoders (one copy per model and device, however many host
  // threads decode); may be null. Throws kvs::Error when they are on another
  // device than the current one.
  Decoder(cudaStream_t stream, std::shared_ptr<PaperModelOnDevice> paper_tables);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Enqueues the decoding of `bitstream` (host memory) into `out` (device
  // memory for header.elements() values of `type`). Throws CorruptStream for
  // what the host finds (the CPU decoder's checks and messages; a stream that
  // fails a host check and the CRC reports the CRC, as the CPU decoder),
  // kvs::Error for a codec it cannot decode or a CUDA failure. Returns the header.
  // `bitstream` must stay valid and unchanged until synchronize(): its copy
  // is asynchronous (from pinned memory the DMA reads it later; from pageable
  // memory CUDA does not promise to have read it when the call returns).
  StreamHeader decode(std::span<const uint8_t> bitstream, void* out, OutputType type);
  // As above, for a stream already in device memory at `staged` (a copy of
  // `bitstream` in a buffer 16-byte aligned (else kvs::Error) and readable
  // to a multiple of 16 bytes, e.g. where a NIC wrote it): nothing of the
  // stream is copied; the host still plans from `bitstream`. The kernels
  // read only the stream's bytes, so the buffer's padding need not be
  // written (compute-sanitizer initcheck finds no read of it). `staged`
  // must stay valid until synchronize().
  StreamHeader decode(std::span<const uint8_t> bitstream, const uint8_t* staged, void* out, OutputType type);

  // Waits for everything enqueued; throws CorruptStream for the first chunk
  // with a fault: a verification fault with the CPU decoder's message (e.g.
  // "corrupt KV bitstream at byte N: checksum mismatch"), a decode fault
  // naming the chunk and its first faulty substream. The chunks after that
  // one stay pending: the next synchronize() reports the next faulty one.
  void synchronize();

  cudaStream_t stream() const;

  // With timing on, each chunk's device work (its copies and kernels, from
  // the first copy to the last kernel, not the host's parsing before them) is
  // timed with CUDA events; synchronize() adds the times up here.
  void set_timing(bool on);
  double device_seconds() const;
  // Wall-clock seconds decode() has spent planning on the host (parsing and
  // checking the header and small sections), over all calls.
  double host_seconds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Device memory (cudaMalloc), freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  void* get() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace kvs::codec::cuda
