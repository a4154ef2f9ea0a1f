// The GPU chunk timer of `kvstream profile --device cuda`
// (codec/cuda/profile_timer.h) on the GPU decode cases of cuda_decode_test:
// every GPU codec is timed, its output checked against the CPU's, and a
// mismatch fails loudly. Part of cuda_decode_test; the tests that need a GPU
// skip, saying so, where there is none (the refusal without one runs there).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "codec/cachegen_paper.h"
#include "codec/cuda/decode.h"
#include "codec/cuda/profile_timer.h"
#include "tests/codec/cuda_cases.h"
#include "tests/codec/cuda_gpu_test.h"

namespace kvs::codec {
namespace {

#define SKIP_WITHOUT_GPU() KVS_SKIP_WITHOUT_GPU("GPU profile timing")

// A case's codec, chunk, stream and CPU output, with its codec model file
// (scheme=paper) kept while the case lives (the timer reads it).
struct TimedCase {
  std::string name, model_file;
  std::unique_ptr<Codec> codec;
  KVChunk chunk, decoded;
  Bytes stream;
  int level = 0;
  explicit TimedCase(const cuda_test::CaseSpec& spec) : level(spec.level) {
    if (spec.paper) {
      const std::vector<KVChunk> samples = {cuda_test::synthetic_chunk(spec.shape, 200, 0, 7),
                                            cuda_test::synthetic_chunk(spec.shape, 130, 500, 8)};
      model_file = (std::filesystem::temp_directory_path() /
                    ("kvs-cuda-profile-" + std::to_string(::getpid()) + "-" + std::to_string(spec.shape.layers) + ".cgm"))
                       .string();
      std::ofstream(model_file, std::ios::binary) << train_cachegen_paper_model(samples);
    }
    codec = make_codec(spec.codec, CodecOptions{spec.params, model_file});
    chunk = cuda_test::synthetic_chunk(spec.shape, spec.tokens, spec.token_begin, spec.tokens + spec.shape.layers);
    stream = codec->encode(chunk, spec.level);
    decoded = codec->decode(stream);
    name = spec.codec + " " + codec->params() + " T=" + std::to_string(spec.tokens) + " L" + std::to_string(level);
  }
  ~TimedCase() {
    if (!model_file.empty()) std::filesystem::remove(model_file);
  }
};

TEST(CudaProfile, RefusedWithoutAGpu) {
  if (cuda::available()) {  // not a skip: scripts/gpu-check counts any skip on a GPU machine as a failure
    std::printf("a GPU is present: the refusal without one is tested where there is none\n");
    return;
  }
  try {
    cuda::make_gpu_chunk_timer("");
    FAIL() << "a GPU timer was made without a GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda: no usable CUDA GPU"), std::string::npos) << e.what();
  }
}

// With KVS_CUDA_PROFILE_OUT set (scripts/gpu-check), the times are also
// written there as JSON lines, one per case.
TEST(CudaProfile, TimesEveryGpuCodecOnTheCardAndChecksItsOutput) {
  SKIP_WITHOUT_GPU();
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  const char* out_path = std::getenv("KVS_CUDA_PROFILE_OUT");
  std::ofstream out;
  if (out_path && *out_path) out.open(out_path);
  for (const auto& spec : cuda_test::case_specs()) {
    const TimedCase c(spec);
    SCOPED_TRACE(c.name);
    const auto timer = cuda::make_gpu_chunk_timer(c.model_file);
    EXPECT_EQ(timer->device(), std::string("cuda:") + prop.name);
    ASSERT_TRUE(timer->decodes(*c.codec));
    const bool gpu_encode = spec.codec == "cachegen" || spec.codec == "kvs";  // cachegen: both schemes
    EXPECT_EQ(timer->encodes(*c.codec), gpu_encode);
    const cuda::ChunkTimes t = timer->time(*c.codec, c.chunk, c.level, c.stream, c.decoded, 3, /*check=*/true);
    EXPECT_GT(t.decode_s, 0.0);
    EXPECT_LT(t.decode_s, 0.5);  // kernels of a chunk of at most 2x8x128x1200 values
    EXPECT_GE(t.decode_host_s, 0.0);  // the host's planning, timed apart
    EXPECT_LT(t.decode_host_s, 0.5);
    if (gpu_encode) {
      EXPECT_GT(t.encode_s, 0.0);
      EXPECT_LT(t.encode_s, 0.5);
    } else {
      EXPECT_LT(t.encode_s, 0.0);  // not timed on the GPU
    }
    std::printf("%-60s decode %9.1f us  encode %9.1f us\n", c.name.c_str(), 1e6 * t.decode_s,
                gpu_encode ? 1e6 * t.encode_s : -1.0);
    if (out.is_open())
      out << "{\"device\": \"" << timer->device() << "\", \"case\": \"" << c.name << "\", \"values\": "
          << c.chunk.values.size() << ", \"bytes\": " << c.stream.size() << ", \"decode_s\": " << t.decode_s
          << ", \"decode_host_s\": " << t.decode_host_s << ", \"encode_s\": " << (gpu_encode ? t.encode_s : -1.0)
          << ", \"repeats\": 3}\n";
  }
}

TEST(CudaProfile, OutputOtherThanTheCpusFailsLoudly) {
  SKIP_WITHOUT_GPU();
  const TimedCase c(cuda_test::case_specs()[1]);  // kvs 4x2x64
  const auto timer = cuda::make_gpu_chunk_timer("");
  KVChunk wrong = c.decoded;
  wrong.values[wrong.values.size() / 2] += 1.0f;
  EXPECT_THROW(
      {
        try {
          timer->time(*c.codec, c.chunk, c.level, c.stream, wrong, 1, true);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("GPU decode differs from the CPU decoder"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  EXPECT_NO_THROW(timer->time(*c.codec, c.chunk, c.level, c.stream, wrong, 1, false));  // unchecked chunks are not compared

  // The GPU encoder's stream against the CPU's: a chunk other than the one the stream holds.
  const TimedCase g(cuda_test::case_specs()[6]);  // cachegen 4x2x64
  KVChunk other = g.chunk;
  other.values[7] = round_to_dtype(other.values[7] + 8.0f, other.dtype);  // its token's scale changes
  try {
    timer->time(*g.codec, other, g.level, g.stream, g.decoded, 1, true);
    FAIL() << "a GPU stream of another chunk passed the check";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPU-encoded stream"), std::string::npos) << e.what();
  }

  // A codec without a GPU decoder.
  const auto quant8 = make_codec("quant8");
  const Bytes q = quant8->encode(c.chunk, 0);
  EXPECT_THROW(timer->time(*quant8, c.chunk, 0, q, quant8->decode(q), 1, true), Error);
}

}  // namespace
}  // namespace kvs::codec
