// `kvstream codec-model train`: learns a codec model file (static entropy
// tables, e.g. cachegen scheme=paper) from sample KV caches: KV safetensors
// files (no libtorch needed) or a model's KV caches of a contexts file (needs
// the libtorch build). Each cache is cut into chunks of --chunk-tokens, as the
// encoder will see them.
// With --codec kvs it calibrates kvs's step weights for the model instead
// (llm/kvs_calibration.h): --model DIR and calibration text (--text FILE, cut
// into --windows windows, or --contexts FILE), written to -o (the model's
// DIR/kvs-calibration.json is where `kvstream profile` looks).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "codec/bitstream.h"
#include "codec/codec.h"
#include "llm/safetensors.h"

#ifdef KVSTREAM_HAVE_TORCH
#include "llm/checkpoint.h"
#include "llm/kv_cache.h"
#include "llm/kvs_calibration.h"
#include "llm/model.h"
#include "llm/profiler.h"
#include "llm/tokenizer.h"
#endif

namespace kvs::apps {
namespace {

struct TrainArgs {
  std::string codec = "cachegen", out, model_dir, contexts, kv_dtype = "fp16", text;
  std::vector<std::string> params, kv_files;
  uint32_t chunk_tokens = 1500, max_context_tokens = 0;
  uint32_t windows = 4, context_tokens = 1024, continuation_tokens = 256;  // kvs calibration
  size_t max_contexts = 0;
  int threads = 1;
};

void add_chunks(const codec::KVChunk& kv, uint32_t chunk_tokens, std::vector<codec::KVChunk>* out) {
  for (uint32_t b = 0; b < kv.tokens; b += chunk_tokens) out->push_back(kv.slice(b, std::min(chunk_tokens, kv.tokens - b)));
}

#ifdef KVSTREAM_HAVE_TORCH
// The KV cache of each context as the profiler makes it: all context tokens
// but the last, rounded to the stored KV dtype.
void add_context_chunks(const TrainArgs& a, std::vector<codec::KVChunk>* out) {
  llm::set_cpu_threads(a.threads);
  const llm::Model model = llm::load_model(a.model_dir, {at::kFloat, at::kCPU});
  const auto tokenizer = llm::load_tokenizer(a.model_dir, model.config());
  auto contexts = llm::load_contexts(a.contexts);
  if (a.max_contexts && contexts.size() > a.max_contexts) contexts.resize(a.max_contexts);
  const codec::DType dtype = codec::dtype_from_string(a.kv_dtype);
  for (const auto& ctx : contexts) {
    std::vector<int64_t> ids = tokenizer->encode(ctx.context, true);
    if (a.max_context_tokens && ids.size() > a.max_context_tokens) ids.resize(a.max_context_tokens);
    if (ids.size() < 2) throw Error(fmt::format("{}: context {} has fewer than 2 tokens", a.contexts, ctx.id));
    ids.pop_back();
    codec::KVChunk kv = llm::to_chunk(model.prefill(llm::to_tensor(ids)).cache, 0);
    kv.dtype = dtype;
    for (float& v : kv.values) v = codec::round_to_dtype(v, dtype);
    add_chunks(kv, a.chunk_tokens, out);
  }
  std::printf("%zu contexts of %s through %s\n", contexts.size(), a.contexts.c_str(), a.model_dir.c_str());
}

// kvs: token windows of the calibration text, then the calibration.
void calibrate_kvs_command(const TrainArgs& a) {
  // The windows' lengths are --context-tokens and --continuation-tokens; refuse, not ignore, the cachegen option.
  if (a.max_context_tokens)
    throw Error(fmt::format("codec-model train --codec kvs: --max-context-tokens is not used by kvs calibration; "
                            "give the cached tokens per window with --context-tokens (now {})",
                            a.context_tokens));
  llm::set_cpu_threads(a.threads);
  const llm::Model model = llm::load_model(a.model_dir, {at::kFloat, at::kCPU});
  const auto tokenizer = llm::load_tokenizer(a.model_dir, model.config());
  const size_t need = size_t(a.context_tokens) + a.continuation_tokens;
  std::vector<std::vector<int64_t>> windows;
  std::string source;
  if (!a.text.empty()) {
    // --windows windows evenly spaced through the file, each tokenized from
    // 8 bytes per token needed (byte-level models use the first `need`).
    const std::string text = read_file(a.text);
    const size_t span = 8 * need;
    if (text.size() < need)
      throw Error(fmt::format("{}: {} bytes, too short for windows of {} tokens", a.text, text.size(), need));
    for (uint32_t w = 0; w < a.windows; ++w) {
      const size_t room = text.size() > span ? text.size() - span : 0;
      const size_t begin = a.windows > 1 ? room * w / (a.windows - 1) : 0;
      std::vector<int64_t> ids = tokenizer->encode(text.substr(begin, span), true);
      if (ids.size() < need)
        throw Error(fmt::format("{}: window {} (byte {}) has {} tokens, needs {}", a.text, w, begin, ids.size(), need));
      ids.resize(need);
      windows.push_back(std::move(ids));
    }
    source = a.text;
  } else {
    auto contexts = llm::load_contexts(a.contexts);
    if (a.max_contexts && contexts.size() > a.max_contexts) contexts.resize(a.max_contexts);
    for (const auto& ctx : contexts) {
      std::vector<int64_t> ids = tokenizer->encode(ctx.context, true);
      if (ids.size() < a.context_tokens)
        throw Error(fmt::format("{}: context {} has {} tokens, --context-tokens is {}", a.contexts, ctx.id, ids.size(),
                                a.context_tokens));
      ids.resize(a.context_tokens);
      for (int64_t t : tokenizer->encode(ctx.continuation, false)) ids.push_back(t);
      if (ids.size() < need)
        throw Error(fmt::format("{}: context {}'s continuation has fewer than {} tokens", a.contexts, ctx.id,
                                a.continuation_tokens));
      windows.push_back(std::move(ids));
    }
    source = a.contexts;
    // The calibration's text is recorded (KvsCalibration::text); profile warns again when it profiles this file.
    std::fprintf(stderr,
                 "kvstream: warning: calibrating kvs on the contexts of %s: quality numbers measured on these contexts "
                 "(kvstream profile --contexts %s) will be optimistic; evaluate on other contexts, or calibrate on "
                 "other text with --text\n",
                 a.contexts.c_str(), a.contexts.c_str());
  }
  llm::KvsCalibrationOptions o;
  o.context_tokens = a.context_tokens;
  o.continuation_tokens = a.continuation_tokens;
  o.kv_dtype = codec::dtype_from_string(a.kv_dtype);
  llm::KvsCalibration c = llm::calibrate_kvs(model, windows, o);
  c.model_hash = llm::model_content_hash(a.model_dir);
  c.text = source;
  llm::write_kvs_calibration(c, a.out);
  std::printf("%s: kvs calibration of %s (content hash %s) on %zu windows of %s\n", a.out.c_str(), a.model_dir.c_str(),
              c.model_hash.c_str(), windows.size(), source.c_str());
  for (uint32_t p = 0; p < 2 * c.layers; ++p)
    std::printf("  %c%u: sensitivity %.4g nats/token per unit MSE, weight %.4g\n", p % 2 ? 'V' : 'K', p / 2,
                c.sensitivity[p], c.weights[p]);
}
#endif

}  // namespace

void add_codec_model_command(CLI::App& app) {
  auto* group = app.add_subcommand("codec-model", "Codec model files (static entropy tables learned offline)");
  group->require_subcommand(1);
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = group->add_subcommand(
      "train", "Learn a codec model file from sample KV caches: --kv FILE... (safetensors), or --model DIR "
               "--contexts FILE (the model's KV caches of those contexts; needs the libtorch build)");
  cmd->add_option("--codec", a->codec, "Codec (see `kvstream codecs`)")->capture_default_str();
  cmd->add_option("--param", a->params,
                  "Codec parameter key=value or codec.key=value (repeatable), e.g. scheme=paper");
  cmd->add_option("--kv", a->kv_files, "KV safetensors files (from `kvstream kv dump` or any framework)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--model", a->model_dir, "HF checkpoint folder whose KV caches are the samples")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--contexts", a->contexts,
                  "With --model: contexts file or folder, as for `kvstream profile` (with --codec kvs: warns that "
                  "quality measured on these contexts will be optimistic; prefer --text)");
  cmd->add_option("--max-contexts", a->max_contexts, "With --model: the first N contexts only (0: all)")
      ->capture_default_str();
  cmd->add_option("--max-context-tokens", a->max_context_tokens, "With --model: truncate contexts (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--kv-dtype", a->kv_dtype, "With --model: precision the KV cache is stored in, as for profile")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--threads", a->threads, "With --model: CPU threads for libtorch")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("--text", a->text, "With --codec kvs --model: calibration text (not the evaluation contexts)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--windows", a->windows, "With --text: calibration windows cut from it")
      ->capture_default_str()->check(CLI::Range(1u, 1024u));
  cmd->add_option("--context-tokens", a->context_tokens, "kvs calibration: cached tokens per window")
      ->capture_default_str()->check(CLI::Range(2u, 1u << 20));
  cmd->add_option("--continuation-tokens", a->continuation_tokens, "kvs calibration: tokens scored after the cache")
      ->capture_default_str()->check(CLI::Range(2u, 1u << 20));
  cmd->add_option("--chunk-tokens", a->chunk_tokens, "Samples are cut into chunks of this many tokens, as encoded")
      ->capture_default_str()->check(CLI::Range(1u, 1u << 24));
  cmd->add_option("-o,--out", a->out, "Codec model file to write")->required();
  cmd->callback([a] {
    if (a->codec == "kvs") {  // a calibration of the model, not a codec model file
      if (!a->params.empty())
        throw Error(fmt::format("codec-model train --codec kvs: --param {} is not used: the calibration learns kvs's "
                                "weights and rope_theta from the model; give other kvs parameters to profile or "
                                "encode",
                                a->params.front()));
      if (a->model_dir.empty() || a->text.empty() == a->contexts.empty())
        throw Error("codec-model train --codec kvs: give --model DIR and either --text FILE or --contexts FILE");
#ifdef KVSTREAM_HAVE_TORCH
      calibrate_kvs_command(*a);
      return;
#else
      throw Error("codec-model train --codec kvs needs the libtorch build of kvstream");
#endif
    }
    if (!a->text.empty()) throw Error("codec-model train: --text is for --codec kvs");
    if (a->kv_files.empty() == a->model_dir.empty())
      throw Error("codec-model train: give either --kv FILE... or --model DIR --contexts FILE");
    check_codec_params(parse_codec_options(a->params, ""), {a->codec}, "--codec");
    const auto codec = codec::make_codec(a->codec, parse_codec_options(a->params, ""));
    if (!codec->needs_model())
      throw Error(fmt::format("codec-model train: codec {} [{}] uses no codec model", a->codec, codec->params()));
    std::vector<codec::KVChunk> samples;
    if (!a->kv_files.empty()) {
      for (const auto& f : a->kv_files) add_chunks(llm::read_kv_safetensors(f), a->chunk_tokens, &samples);
    } else {
      if (a->contexts.empty()) throw Error("codec-model train: --model needs --contexts");
#ifdef KVSTREAM_HAVE_TORCH
      add_context_chunks(*a, &samples);
#else
      throw Error("codec-model train: --model needs the libtorch build of kvstream; use --kv with KV safetensors files");
#endif
    }
    const std::string model = codec->train_model(samples);
    write_file_atomic(a->out, model);
    uint64_t tokens = 0;
    for (const auto& c : samples) tokens += c.tokens;
    const auto trained = codec::make_codec(a->codec, parse_codec_options(a->params, a->out));  // loads and checks it
    std::printf("%s: %zu bytes, %s from %zu chunks (%llu tokens) of KV shape %ux%ux%u\n", a->out.c_str(), model.size(),
                trained->params().c_str(), samples.size(), (unsigned long long)tokens, samples[0].shape.layers,
                samples[0].shape.kv_heads, samples[0].shape.head_dim);
  });
}

}  // namespace kvs::apps
