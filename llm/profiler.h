// The profiler: runs every codec at every level on real KV caches of a model
// and measures what the simulator needs (codec/profile.h): per chunk and level
// the bytes, encode/decode seconds and error; per context and level the
// quality with the model (continuation-loss increase, KL divergence of the
// next-token distribution and top-1 agreement teacher-forced, greedy
// agreement, task exact match); per codec the levels on the size-KL front.
//
// Quality of a level is measured with the whole context at that level. The
// per-chunk `loss_increase` and `kl_nats` are by default measured too: the
// continuation scored with only that chunk at that level, every other chunk
// exact (one forward pass per lossy chunk and level). With measure_chunks off
// they are estimates: the whole-context figure apportioned to chunks by their
// share of the summed squared error (a chunk with no error gets none), which
// is cheap but blind to where a chunk lies (on the bundled model the last
// chunk before the continuation matters far more than its error share says;
// tests/llm/profiler_test.cpp measures the ratios). Recomputing a chunk is exact and not profiled
// here; its cost comes from the simulator's compute model (sim/gpu_model.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec/cuda/profile_timer.h"
#include "codec/profile.h"
#include "llm/evaluate.h"
#include "llm/kv_cache.h"
#include "llm/model.h"
#include "llm/tokenizer.h"

namespace kvs::llm {

// One profiling context: text whose KV cache is compressed, the text that
// follows it (scored for the loss increase), and optionally a question whose
// answer is only in the context (scored by exact match).
struct ProfileContext {
  std::string id;
  std::string context;
  std::string continuation;
  std::string question;  // empty: none
  std::string answer;
};

// Reads contexts: a JSON-lines file ({"id", "context", "continuation",
// "question"?, "answer"?} per line), or a folder of .txt files (sorted by
// name), each split so that its last `continuation_bytes` bytes are the
// continuation. Errors name the file and line.
std::vector<ProfileContext> load_contexts(const std::string& path, size_t continuation_bytes = 512);

struct ProfilerOptions {
  std::vector<std::string> codecs;              // registry names
  codec::CodecOptions codec_options;            // shared by all codecs (params, model file)
  uint32_t chunk_tokens = 1500;                 // CacheGen's paper
  uint32_t greedy_tokens = 16;
  uint32_t max_context_tokens = 0;              // 0: whole context
  uint32_t timing_repeats = 1;                  // encode/decode timed this many times, minimum kept
  // Per-chunk quality measured with only that chunk degraded (true), or
  // estimated from its squared-error share (false; Profile::chunk_quality).
  bool measure_chunks = true;
  // Precision the KV cache is stored and shipped in (serving systems keep it in
  // fp16/bf16 even when the model computes in fp32); the exact reference is
  // the cache rounded to it, and so is each decoded chunk before its error and
  // quality are measured (the GPU decoder writes this dtype).
  codec::DType kv_dtype = codec::DType::kF16;
  std::string model_name;
  std::string partial_path;                     // resume file ("" = none)
  // Times encode/decode on a GPU instead of this CPU thread (`--device cuda`;
  // codec/cuda/profile_timer.h): Profile::device becomes its device, every
  // codec must have a GPU decoder, encode is timed on the GPU where it has
  // an encoder and on the CPU otherwise (CodecProfile::encode_device says
  // which), and the GPU's output must equal the CPU's on the first chunk of
  // each context, codec and level. Null: the CPU times both. Not owned.
  codec::cuda::ChunkTimer* device_timer = nullptr;
  bool show_progress = true;
};

// A context made ready for quality measurements: tokenized, its exact KV cache
// (of all context tokens but the last, rounded to the shipped dtype) and what
// the exact cache gives (continuation loss, greedy tokens, task answer).
struct PreparedContext {
  codec::KVChunk exact_chunk;       // the exact cache as the codec sees it
  KVCache exact;
  CacheReference reference;
  std::vector<int64_t> question;    // {last context token, question tokens...}; empty: none
  std::vector<int64_t> answer;
  double base_task_accuracy = -1;   // with the exact cache; -1: no question
};
PreparedContext prepare_context(const Model& model, const Tokenizer& tokenizer, const ProfileContext& context,
                                uint32_t max_context_tokens, codec::DType kv_dtype, uint32_t greedy_tokens);

// Quality of a degraded cache of a prepared context (bits_per_element left 0).
codec::LevelQuality measure_quality(const Model& model, const PreparedContext& context, const codec::KVChunk& degraded);

// One chunk of a context and how it reached the GPU: at a codec level, or
// recomputed from text (level < 0, exact).
struct ChunkChoice {
  uint64_t token_begin = 0;
  uint32_t tokens = 0;
  int level = -1;
};

// The cache the GPU ends up with: each chunk of `exact` encoded and decoded at
// its chosen level (values rounded to exact.dtype, as stored), recomputed
// chunks exact. The chunks must tile the cache.
// Throws kvs::Error when they do not or a level is out of range.
codec::KVChunk assemble_cache(const codec::Codec& codec, const codec::KVChunk& exact,
                              const std::vector<ChunkChoice>& chunks);

// Model shape and size as the profile records it.
codec::ModelInfo model_info(const Model& model, const std::string& name);
// "cpu: <model name>, 1 thread" from /proc/cpuinfo.
std::string cpu_device_name();

// Profiles `contexts` and returns the profile. With a partial_path, contexts
// already in that file (same options) are taken from it, and the file is
// rewritten atomically after each new context, so an interrupted run resumes.
codec::Profile run_profiler(const Model& model, const Tokenizer& tokenizer, const std::vector<ProfileContext>& contexts,
                            const ProfilerOptions& options);

}  // namespace kvs::llm
