// GPU decode throughput (codec/cuda/decode.h) in GB/s of fp16 output, against
// a device-to-device cudaMemcpy of the same output size in the same run, for
// KV caches shaped like Llama-2-7B (32 layers x 32 KV heads x 128), Mistral-7B
// (32 x 8 x 128) and Llama-3-70B (80 x 8 x 128) at 4K and 32K tokens.
//
// A context is cut into chunks of --chunk-tokens (default 1024: a chunk may
// hold at most 2^28 values); --distinct different chunks (default 2) are
// encoded on the CPU and decoded in turn into every chunk position of the
// context, each chunk's stream staged from pinned host memory. The KV values
// are synthetic, not the bundled model's: per (layer, kind, head, dim) a
// Gaussian with its own mean and a log-normal spread (keys wider; the same
// for every chunk of a shape), layer 0's rows a function of the token (as a
// byte-level model's), rounded to fp16.
//
// Reported per (shape, context, codec):
//   e2e_GBps   fp16 output bytes / wall time of decoding the whole context
//              (host parse and checks, copies, kernels; median of --reps);
//   copy_GBps  the same bytes / time of one cudaMemcpy device-to-device
//              (CUDA events, median of --reps);
//   dev_GBps   the same bytes / the device's time for the chunks (each
//              chunk's copies and kernels, timed with CUDA events by
//              Decoder::set_timing: the host's parsing before them left out);
//   e2e_mt     the same with --host-threads (default 8) host threads, each
//              with its own Decoder and CUDA stream, taking every n-th chunk;
//   mt_r, dev_r  e2e_mt / copy_GBps and dev_GBps / copy_GBps;
//   cpu_GBps   one chunk decoded on one CPU core (Codec::decode), same unit;
//   host_ms    the host's part of a GPU decode of one chunk (parse, checks,
//              metadata; one core, median of 5): e2e cannot beat chunk bytes / host_ms;
//              the CRC (and cachegen's section table) are verified on the
//              device (codec/cuda/verify_threads.h), not in it;
//   chunk_ms   latency of one --latency-tokens chunk (default 1536; fewer
//              where the shape's chunk would pass the format's 2^28 values:
//              1,024 for Llama-2-7B; the CSV's latency_tokens says how many):
//              decode() to synchronize(), median of 10.
//   enc_GBps   GPU encode of one chunk (fp16 in device memory -> the
//              stream's bytes on the host), fp16 input bytes / time, median
//              of --reps; cachegen scheme=code and scheme=paper, kvs;
//   cpu_enc    the same chunk encoded on one CPU core (GB/s);
//   enc_ms     GPU encode latency of the --latency-tokens chunk.
// After the table, per (model, codec): the verification kernels alone on
// chunk 0's stream in device memory (CRC; for cachegen also the section
// table's scan and checks), CUDA events, median of --reps: ms per chunk and
// GB/s of stream bytes.
// Chunk 0's GPU output is checked against the CPU decoder's, bit for bit, and
// GPU-encoded streams against the CPU encoder's, byte for byte, before their
// times count.
//   build/bench/codec_cuda_bench [--models llama2-7b,mistral-7b,llama3-70b]
//     [--contexts 4096,32768] [--codecs kvs,cachegen,cachegen-paper] [--csv FILE]
//     [--host-only 1]: no GPU needed: the host's part of a GPU decode of one
//     chunk (parse, checks, metadata), which bounds the end-to-end rate; for
//     kvs also the host's part of a GPU encode of one chunk (row plan from
//     the rows' hashes, models section, substream layout, the stream's
//     layout; the kernels' thread bodies, the gather, size table and CRC
//     included, run on the CPU beside it, untimed, and its stream is checked
//     against the CPU encoder's).
// cachegen-paper: scheme=paper, its codec model learned from one 256-token
// synthetic chunk of another seed (the model's training is not timed).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <fstream>
#include <memory>

#include <cuda_runtime.h>

#include "bench/synthetic_kv.h"
#include "codec/cachegen_paper.h"
#include "codec/codec.h"
#include "codec/cuda/cuda_util.h"
#include "codec/cuda/decode.h"
#include "codec/cuda/encode.h"
#include "codec/cuda/kernels.h"
#include "codec/cuda/kvs_encode_plan.h"
#include "codec/cuda/paper_model_device.h"
#include "codec/cuda/plan.h"

namespace {

using namespace kvs::codec;
using kvs::bench::synthetic_chunk;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "codec_cuda_bench: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Model {
  std::string name;
  KVShape shape;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Bitstreams in pinned host memory.
struct PinnedStream {
  uint8_t* data = nullptr;
  size_t size = 0;
};
bool g_host_only = false;  // no GPU: plain host memory (freed with std::free)

PinnedStream pin(const Bytes& b) {
  PinnedStream p;
  if (g_host_only)
    p.data = static_cast<uint8_t*>(std::malloc(b.size()));
  else
    check(cudaMallocHost(reinterpret_cast<void**>(&p.data), b.size()), "cudaMallocHost");
  std::memcpy(p.data, b.data(), b.size());
  p.size = b.size();
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt = {{"models", "llama2-7b,mistral-7b,llama3-70b"},
                                            {"contexts", "4096,32768"},
                                            {"codecs", "kvs,cachegen,cachegen-paper"},
                                            {"chunk-tokens", "1024"},
                                            {"distinct", "2"},
                                            {"reps", "3"},
                                            {"latency-tokens", "1536"},
                                            {"kvs-level", "4"},
                                            {"cachegen-level", "2"},
                                            {"csv", ""},
                                            {"host-only", "0"},
                                            {"host-threads", "8"}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || i + 1 >= argc || !opt.count(a.substr(2))) {
      std::fprintf(stderr, "codec_cuda_bench: unknown or incomplete option '%s' (options:", a.c_str());
      for (const auto& [k, v] : opt) std::fprintf(stderr, " --%s", k.c_str());
      std::fprintf(stderr, ")\n");
      return 2;
    }
    opt[a.substr(2)] = argv[++i];
  }
  const bool host_only = opt["host-only"] == "1";
  g_host_only = host_only;
  if (!host_only && !cuda::available()) {
    std::fprintf(stderr, "codec_cuda_bench: no usable GPU: %s (--host-only 1 measures the host's part alone)\n",
                 cuda::device_description().c_str());
    return 1;
  }
  const std::map<std::string, KVShape> shapes = {
      {"llama2-7b", {32, 32, 128}}, {"mistral-7b", {32, 8, 128}}, {"llama3-70b", {80, 8, 128}}};
  const uint32_t chunk_tokens = uint32_t(std::stoul(opt["chunk-tokens"]));
  const uint32_t distinct = std::max(1u, uint32_t(std::stoul(opt["distinct"])));
  const int reps = std::max(1, std::stoi(opt["reps"]));
  const uint32_t latency_tokens = uint32_t(std::stoul(opt["latency-tokens"]));
  const uint32_t host_threads = std::max(1u, uint32_t(std::stoul(opt["host-threads"])));
  std::printf("device: %s\nkernels: %s\n", host_only ? "(host only)" : cuda::device_description().c_str(),
              cuda::built_kernels().c_str());
  std::printf("chunks of %u tokens, %u distinct per codec and model, median of %d; fp16 output\n", chunk_tokens,
              distinct, reps);
  FILE* csv = opt["csv"].empty() ? nullptr : std::fopen(opt["csv"].c_str(), "w");
  if (csv)
    std::fprintf(csv, "model,context_tokens,codec,level,bits_per_value,e2e_GBps,e2e_mt_GBps,dev_GBps,copy_GBps,"
                      "mt_ratio,dev_ratio,cpu_GBps,host_ms,chunk_ms,enc_GBps,cpu_enc_GBps,enc_chunk_ms,latency_tokens\n");
  if (!host_only)
    std::printf("%-11s %7s %-14s %5s %6s %9s %9s %9s %9s %6s %6s %8s %7s %9s %8s %8s %9s\n", "model", "tokens", "codec",
                "level", "bits", "e2e_GBps", "e2e_mt", "dev_GBps", "copy_GBps", "mt_r", "dev_r", "cpu_GBps", "host_ms",
                "chunk_ms", "enc_GBps", "cpu_enc", "enc_ms");
  int failures = 0;
  std::vector<std::string> verify_lines;  // the verification kernels' times, printed after the table
  cudaStream_t stream = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  if (!host_only) {
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaEventCreate(&e0), "cudaEventCreate");
    check(cudaEventCreate(&e1), "cudaEventCreate");
  }
  for (const std::string& model : split(opt["models"])) {
    if (!shapes.count(model)) {
      std::fprintf(stderr, "codec_cuda_bench: unknown model '%s'\n", model.c_str());
      return 2;
    }
    const KVShape shape = shapes.at(model);
    const size_t chunk_values = size_t(shape.elements_per_token()) * chunk_tokens;
    std::vector<KVChunk> chunks;
    for (uint32_t k = 0; k < distinct; ++k) chunks.push_back(synthetic_chunk(shape, chunk_tokens, k * chunk_tokens, k + 1));
    // A stream holds at most kMaxElements values (docs/bitstream.md): 1,024
    // tokens of Llama-2-7B's 32 KV heads, so its latency chunk is cut there.
    const uint32_t model_latency_tokens =
        uint32_t(std::min<uint64_t>(latency_tokens, kvs::codec::kMaxElements / shape.elements_per_token()));
    if (model_latency_tokens < latency_tokens)
      std::printf("%s: latency chunk of %u tokens, not %u (a stream holds at most %llu values)\n", model.c_str(),
                  model_latency_tokens, latency_tokens, static_cast<unsigned long long>(kvs::codec::kMaxElements));
    const KVChunk latency_chunk = synthetic_chunk(shape, model_latency_tokens, 0, 99);
    for (const std::string& name : split(opt["codecs"])) {
      // cachegen-paper: cachegen scheme=paper with a codec model learned from
      // a 256-token synthetic chunk of another seed (through a temporary file).
      std::shared_ptr<const CacheGenPaperModel> paper_model;
      std::string model_file;
      if (name == "cachegen-paper") {
        model_file = "/tmp/codec_cuda_bench_" + std::to_string(::getpid()) + ".cgm";
        std::ofstream(model_file, std::ios::binary)
            << train_cachegen_paper_model(std::vector<KVChunk>{synthetic_chunk(shape, 256, 0, 1234)});
        paper_model = load_cachegen_paper_model(model_file);
      }
      const auto codec = name == "cachegen-paper" ? make_codec("cachegen", CodecOptions{{{"scheme", "paper"}}, model_file, {}})
                                                  : make_codec(name);
      if (!model_file.empty()) std::remove(model_file.c_str());
      const int level = std::stoi(opt[name == "kvs" ? "kvs-level" : "cachegen-level"]);
      // Encode the distinct chunks and the latency chunk in parallel (CPU).
      std::vector<Bytes> streams(distinct);
      Bytes latency_stream;
      double cpu_encode_s = 0;
      {
        std::vector<std::thread> enc;
        for (uint32_t k = 0; k < distinct; ++k)
          enc.emplace_back([&, k] {
            const double t0 = now_s();
            streams[k] = codec->encode(chunks[k], level);
            if (k == 0) cpu_encode_s = now_s() - t0;  // one thread, one core (the others run beside it)
          });
        enc.emplace_back([&] { latency_stream = codec->encode(latency_chunk, level); });
        for (auto& t : enc) t.join();
      }
      size_t stream_bytes = 0;
      std::vector<PinnedStream> pinned;
      for (const Bytes& b : streams) pinned.push_back(pin(b)), stream_bytes += b.size();
      const double bits = 8.0 * double(stream_bytes) / double(chunk_values * distinct);
      // CPU decode of one chunk, and the check of the GPU's output against it.
      const double c0 = now_s();
      const KVChunk cpu = codec->decode(streams[0]);
      const double cpu_s = now_s() - c0;
      // The host's part of a GPU decode of one chunk (parse, checks, metadata: codec/cuda/plan.h), median of 5:
      // as cuda::Decoder plans (the CRC and cachegen's table left to the device), and with the host verifying all.
      const auto plan_ms = [&](cuda::detail::Verify verify) {
        const auto parser = cuda::detail::make_kvs_parser();
        std::vector<double> ms;
        for (int r = 0; r < 5; ++r) {
          const double t0 = now_s();
          if (paper_model)
            (void)cuda::detail::plan_cachegen_paper(streams[0], paper_model.get(), model_file, verify);
          else if (name == "kvs")
            (void)cuda::detail::plan_kvs(streams[0], *parser, verify);
          else
            (void)cuda::detail::plan_cachegen(streams[0], verify);
          ms.push_back(1e3 * (now_s() - t0));
        }
        return median(ms);
      };
      const double host_ms = plan_ms(cuda::detail::Verify::kDevice);
      if (host_only) {
        const double host_verified_ms = plan_ms(cuda::detail::Verify::kHost);
        std::printf("%-11s %-14s L%d %6.3f bits/value: host part %.3f ms per %u-token chunk (%.1f GB/s of fp16 "
                    "output on one core; %.1f ms with the CRC and section table checked on the host); CPU decode "
                    "%.3f GB/s\n",
                    model.c_str(), name.c_str(), level, bits, host_ms, chunk_tokens,
                    double(2 * chunk_values) / host_ms / 1e6, host_verified_ms, double(2 * chunk_values) / cpu_s / 1e9);
        if (name == "kvs") {
          // The minimum of 3 (one call's figure moves with whatever else the host runs).
          double enc_host_s = 0;
          for (int rep = 0; rep < 3; ++rep) {
            double s = 0;
            if (cuda::detail::encode_kvs_on_host(chunks[0], level, *codec, true, &s) != streams[0]) {
              std::printf("%s %s: the GPU encoder's thread bodies differ from the CPU encoder\n", model.c_str(),
                          name.c_str());
              ++failures;
              break;
            }
            enc_host_s = rep == 0 ? s : std::min(enc_host_s, s);
          }
          std::printf("%-11s %-14s L%d GPU encode's host part %.1f ms per chunk, min of 3 (%.1f GB/s of fp16 input "
                      "on one core); CPU encode %.3f GB/s\n",
                      model.c_str(), name.c_str(), level, 1e3 * enc_host_s, double(2 * chunk_values) / enc_host_s / 1e9,
                      double(2 * chunk_values) / cpu_encode_s / 1e9);
        }
        for (PinnedStream& p : pinned) std::free(p.data);
        continue;
      }
      // The codec model's tables on the device: one copy for every decoder and the encoder below.
      const std::shared_ptr<cuda::PaperModelOnDevice> paper_tables =
          paper_model ? std::make_shared<cuda::PaperModelOnDevice>(paper_model, model_file) : nullptr;
      cuda::Decoder decoder(stream, paper_tables);
      {
        cuda::DeviceBuffer out(2 * chunk_values);
        decoder.decode({pinned[0].data, pinned[0].size}, out.get(), cuda::OutputType::kF16);
        decoder.synchronize();
        std::vector<uint16_t> got(chunk_values);
        check(cudaMemcpy(got.data(), out.get(), 2 * chunk_values, cudaMemcpyDeviceToHost), "cudaMemcpy");
        size_t wrong = 0;
        for (size_t i = 0; i < chunk_values; ++i) wrong += got[i] != float_to_half_bits(cpu.values[i]);
        if (wrong) {
          std::printf("%s %s: GPU output differs from the CPU decoder's in %zu of %zu values\n", model.c_str(),
                      name.c_str(), wrong, chunk_values);
          ++failures;
          continue;
        }
      }
      // The verification kernels alone on chunk 0's stream (already in device memory).
      {
        namespace cd = cuda::detail;
        const auto parser = cd::make_kvs_parser();
        const cd::VerifyPlan v = paper_model ? cd::plan_cachegen_paper(streams[0], paper_model.get(), model_file,
                                                                       cd::Verify::kDevice).verify
                                 : name == "kvs" ? cd::plan_kvs(streams[0], *parser, cd::Verify::kDevice).verify
                                                 : cd::plan_cachegen(streams[0], cd::Verify::kDevice).verify;
        const size_t n = v.walk ? v.sections : 0, scan = v.walk ? cd::verify_scan_temp_bytes(v.sections) : 0;
        const cd::CrcTables& tables = cd::crc_tables();
        cuda::DeviceBuffer dev_stream((streams[0].size() + 255) / 256 * 256), dev_tables(sizeof(tables)),
            scratch(256 + 4 * (n + 1) + 8 * n + 512 + scan), fault(sizeof(unsigned long long));
        cd::copy_to_device(dev_stream.get(), streams[0].data(), streams[0].size(), "cudaMemcpy");
        cd::copy_to_device(dev_tables.get(), &tables, sizeof(tables), "cudaMemcpy");
        uint8_t* s0 = static_cast<uint8_t*>(scratch.get());
        uint32_t* acc = reinterpret_cast<uint32_t*>(s0);
        uint32_t* offsets = reinterpret_cast<uint32_t*>(s0 + 256);
        uint64_t* ends = reinterpret_cast<uint64_t*>(s0 + 256 + (4 * (n + 1) + 255) / 256 * 256);
        void* temp = reinterpret_cast<uint8_t*>(ends) + (8 * n + 255) / 256 * 256;
        const cd::VerifyLaunch p = v.bind(static_cast<const uint8_t*>(dev_stream.get()),
                                          static_cast<const cd::CrcTables*>(dev_tables.get()), acc, ends, offsets,
                                          static_cast<unsigned long long*>(fault.get()));
        std::vector<double> ms;
        unsigned long long found = 0;
        for (int r = 0; r <= reps; ++r) {  // r = 0: warm-up
          check(cudaMemsetAsync(fault.get(), 0xff, sizeof(unsigned long long), stream), "cudaMemsetAsync");
          check(cudaMemsetAsync(acc, 0, sizeof(uint32_t), stream), "cudaMemsetAsync");
          check(cudaEventRecord(e0, stream), "cudaEventRecord");
          cd::launch_verify(p, temp, scan, stream);
          check(cudaEventRecord(e1, stream), "cudaEventRecord");
          check(cudaEventSynchronize(e1), "cudaEventSynchronize");
          float t = 0;
          check(cudaEventElapsedTime(&t, e0, e1), "cudaEventElapsedTime");
          if (r) ms.push_back(t);
          check(cudaMemcpy(&found, fault.get(), sizeof(found), cudaMemcpyDeviceToHost), "cudaMemcpy");
          if (found != cd::kNoFault) break;
        }
        if (found != cd::kNoFault) {
          std::printf("%s %s: the verification kernels reject a good stream: %s\n", model.c_str(), name.c_str(),
                      cd::verify_fault_text(found, v.body).c_str());
          ++failures;
        } else {
          const double t = median(ms);
          char line[256];
          std::snprintf(line, sizeof(line), "%-11s %-14s verify (CRC%s) of a %.1f MB stream: %.3f ms, %.1f GB/s of stream",
                        model.c_str(), name.c_str(), v.walk ? " and section table" : "", 1e-6 * double(streams[0].size()),
                        t, 1e-6 * double(streams[0].size()) / t);
          verify_lines.push_back(line);
        }
      }
      // Latency of one chunk of latency_tokens.
      double chunk_ms = 0;
      {
        const PinnedStream p = pin(latency_stream);
        cuda::DeviceBuffer out(2 * latency_chunk.values.size());
        std::vector<double> ms;
        for (int r = 0; r < 11; ++r) {
          const double t0 = now_s();
          decoder.decode({p.data, p.size}, out.get(), cuda::OutputType::kF16);
          decoder.synchronize();
          if (r) ms.push_back(1e3 * (now_s() - t0));  // the first is a warm-up
        }
        chunk_ms = median(ms);
        cudaFreeHost(p.data);
      }
      // GPU encode (cachegen scheme=code and scheme=paper, kvs): chunk 0 from fp16
      // in device memory, checked against the CPU's bytes, then timed; and the
      // latency chunk.
      double enc_gbps = -1, enc_chunk_ms = -1;
      if (name == "cachegen" || name == "cachegen-paper" || name == "kvs") {
        cuda::Encoder encoder(stream, paper_tables);
        const auto encode_chunk = [&](const KVChunk& c, std::vector<double>* times) {
          std::vector<uint16_t> half(c.values.size());
          for (size_t i = 0; i < half.size(); ++i) half[i] = float_to_half_bits(c.values[i]);
          cuda::DeviceBuffer dev(2 * half.size());
          cuda::detail::copy_to_device(dev.get(), half.data(), dev.size(), "cudaMemcpy");  // ordered before `stream`
          Bytes out;
          for (int r = 0; r <= reps; ++r) {
            const double t0 = now_s();
            out = name == "kvs" ? encoder.encode_kvs(dev.get(), cuda::OutputType::kF16, c.shape, c.dtype,
                                                     c.token_begin, c.tokens, level, *codec)
                : paper_model ? encoder.encode_cachegen_paper(dev.get(), cuda::OutputType::kF16, c.shape, c.dtype,
                                                              c.token_begin, c.tokens, level)
                              : encoder.encode_cachegen(dev.get(), cuda::OutputType::kF16, c.shape, c.dtype,
                                                        c.token_begin, c.tokens, level);
            if (r) times->push_back(now_s() - t0);
          }
          return out;
        };
        std::vector<double> t_chunk, t_latency;
        if (encode_chunk(chunks[0], &t_chunk) != streams[0]) {
          std::printf("%s %s: GPU-encoded stream differs from the CPU encoder's\n", model.c_str(), name.c_str());
          ++failures;
        } else {
          enc_gbps = double(2 * chunk_values) / median(t_chunk) / 1e9;
        }
        if (encode_chunk(latency_chunk, &t_latency) != latency_stream) {
          std::printf("%s %s: GPU-encoded latency chunk differs from the CPU encoder's\n", model.c_str(), name.c_str());
          ++failures;
        } else {
          enc_chunk_ms = 1e3 * median(t_latency);
        }
      }
      const double cpu_enc_gbps = double(2 * chunk_values) / cpu_encode_s / 1e9;
      for (const std::string& ctx : split(opt["contexts"])) {
        const uint32_t context = uint32_t(std::stoul(ctx));
        const uint32_t n_chunks = (context + chunk_tokens - 1) / chunk_tokens;
        const size_t out_bytes = 2 * chunk_values * n_chunks;
        cuda::DeviceBuffer out(out_bytes), copy(out_bytes);
        check(cudaMemset(out.get(), 0, out_bytes), "cudaMemset");
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        std::vector<double> e2e, cp, dev;
        decoder.set_timing(true);
        for (int r = 0; r <= reps; ++r) {  // r = 0: warm-up
          const double dev0 = decoder.device_seconds();
          const double t0 = now_s();
          for (uint32_t i = 0; i < n_chunks; ++i) {
            const PinnedStream& p = pinned[i % distinct];
            decoder.decode({p.data, p.size}, static_cast<uint8_t*>(out.get()) + 2 * chunk_values * i,
                           cuda::OutputType::kF16);
          }
          decoder.synchronize();
          const double t1 = now_s();
          check(cudaEventRecord(e0, stream), "cudaEventRecord");
          check(cudaMemcpyAsync(copy.get(), out.get(), out_bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
          check(cudaEventRecord(e1, stream), "cudaEventRecord");
          check(cudaEventSynchronize(e1), "cudaEventSynchronize");
          float ms = 0;
          check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
          if (r) e2e.push_back(t1 - t0), cp.push_back(ms * 1e-3), dev.push_back(decoder.device_seconds() - dev0);
        }
        decoder.set_timing(false);
        // The same with --host-threads threads, each with its own Decoder and
        // CUDA stream, taking every n-th chunk: the host's part spread over cores.
        std::vector<double> e2e_mt;
        {
          std::vector<std::unique_ptr<cuda::Decoder>> decoders;
          std::vector<cudaStream_t> streams_mt(host_threads);
          for (uint32_t k = 0; k < host_threads; ++k) {
            check(cudaStreamCreateWithFlags(&streams_mt[k], cudaStreamNonBlocking), "cudaStreamCreate");
            decoders.push_back(std::make_unique<cuda::Decoder>(streams_mt[k], paper_tables));
          }
          for (int r = 0; r <= reps; ++r) {
            const double t0 = now_s();
            std::vector<std::thread> workers;
            for (uint32_t k = 0; k < host_threads; ++k)
              workers.emplace_back([&, k] {
                for (uint32_t i = k; i < n_chunks; i += host_threads) {
                  const PinnedStream& p = pinned[i % distinct];
                  decoders[k]->decode({p.data, p.size}, static_cast<uint8_t*>(out.get()) + 2 * chunk_values * i,
                                      cuda::OutputType::kF16);
                }
                decoders[k]->synchronize();
              });
            for (auto& w : workers) w.join();
            if (r) e2e_mt.push_back(now_s() - t0);
          }
          decoders.clear();
          for (cudaStream_t st : streams_mt) cudaStreamDestroy(st);
        }
        const double e2e_mt_gbps = double(out_bytes) / median(e2e_mt) / 1e9;
        const double e2e_gbps = double(out_bytes) / median(e2e) / 1e9, copy_gbps = double(out_bytes) / median(cp) / 1e9;
        const double cpu_gbps = double(2 * chunk_values) / cpu_s / 1e9;
        const double dev_gbps = double(out_bytes) / median(dev) / 1e9;
        std::printf("%-11s %7u %-14s %5d %6.3f %9.1f %9.1f %9.1f %9.1f %6.3f %6.3f %8.3f %7.1f %9.2f %8.2f %8.3f %9.2f\n",
                    model.c_str(), context, name.c_str(), level, bits, e2e_gbps, e2e_mt_gbps, dev_gbps, copy_gbps,
                    e2e_mt_gbps / copy_gbps, dev_gbps / copy_gbps, cpu_gbps, host_ms, chunk_ms, enc_gbps, cpu_enc_gbps,
                    enc_chunk_ms);
        std::fflush(stdout);
        if (csv)
          std::fprintf(csv, "%s,%u,%s,%d,%.4f,%.2f,%.2f,%.2f,%.2f,%.4f,%.4f,%.4f,%.2f,%.3f,%.3f,%.4f,%.3f,%u\n",
                       model.c_str(), context, name.c_str(), level, bits, e2e_gbps, e2e_mt_gbps, dev_gbps, copy_gbps,
                       e2e_mt_gbps / copy_gbps, dev_gbps / copy_gbps, cpu_gbps, host_ms, chunk_ms, enc_gbps, cpu_enc_gbps,
                       enc_chunk_ms, model_latency_tokens);
        if (csv) std::fflush(csv);
      }
      for (PinnedStream& p : pinned) cudaFreeHost(p.data);
    }
  }
  if (csv) std::fclose(csv);
  for (const std::string& line : verify_lines) std::printf("%s\n", line.c_str());
  std::printf("enc_GBps, enc_ms: GPU encode (cachegen scheme=code and scheme=paper, kvs; -1: none); "
              "cpu_enc: one CPU core\n");
  return failures ? 1 : 0;
}
