// `kvstream profile`: measures codecs on a model's KV caches and writes the
// profile the simulator reads (codec/profile.h, docs/profile-format.md).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "codec/cuda/profile_timer.h"
#include "codec/profile.h"
#include "llm/checkpoint.h"
#include "llm/kvs_calibration.h"
#include "llm/model.h"
#include "llm/profiler.h"
#include "llm/tokenizer.h"

namespace kvs::apps {

namespace {

// Whether two paths name one file, or files with the same bytes.
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(a, ec) || !std::filesystem::is_regular_file(b, ec)) return false;
  if (std::filesystem::equivalent(a, b, ec)) return true;
  return std::filesystem::file_size(a, ec) == std::filesystem::file_size(b, ec) && read_file(a) == read_file(b);
}

// kvs given the model's calibration (the user's --param gives no weights)
// that was measured on the very contexts profiled: its quality numbers come
// out optimistic. A warning, not a refusal: a quick check on one file is fine.
void warn_if_calibrated_on(const std::string& model_dir, const std::vector<std::string>& codecs,
                           const codec::CodecOptions& user, const std::string& contexts) {
  if (std::find(codecs.begin(), codecs.end(), "kvs") == codecs.end() || user.params.count("weights")) return;
  if (const auto own = user.codec_params.find("kvs"); own != user.codec_params.end() && own->second.count("weights"))
    return;
  const std::string path = llm::kvs_calibration_path(model_dir);
  if (!std::filesystem::exists(path)) return;
  const std::string text = llm::read_kvs_calibration(path).text;
  if (!same_file(text, contexts)) return;
  std::fprintf(stderr,
               "kvstream: warning: kvs's calibration %s was measured on %s, the contexts profiled here: kvs's quality "
               "numbers will be optimistic (calibrate on other text: kvstream codec-model train --codec kvs --model "
               "%s --text FILE -o %s)\n",
               path.c_str(), text.c_str(), model_dir.c_str(), path.c_str());
}

}  // namespace

void add_profile_command(CLI::App& app) {
  struct Args {
    std::string model_dir, contexts, codecs = "cachegen,quant8", output, codec_model, dtype = "fp32", kv_dtype = "fp16";
    std::string chunk_quality = "measured", device = "cpu";
    std::vector<std::string> params;
    uint32_t chunk_tokens = 1500, greedy_tokens = 16, max_context_tokens = 0, repeats = 1;
    size_t max_contexts = 0, continuation_bytes = 512;
    int threads = 2;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("profile",
                                 "Encode every chunk of every context at every level of each codec; measure bytes, "
                                 "encode/decode seconds and quality with the model; write a profile (JSON)");
  cmd->add_option("--model", args->model_dir, "HF checkpoint folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--contexts", args->contexts,
                  "Contexts: a JSON-lines file {id, context, continuation, question?, answer?} or a folder of .txt")
      ->required();
  cmd->add_option("--codecs", args->codecs, "Comma-separated codec names (see `kvstream codecs`)")->capture_default_str();
  cmd->add_option("--param", args->params,
                  "Codec parameter (repeatable): key=value goes to every codec of --codecs (each must take it); "
                  "codec.key=value to that codec only, e.g. cachegen.scheme=paper");
  cmd->add_option("--codec-model", args->codec_model, "Codec model file for codecs with static entropy tables");
  cmd->add_option("--chunk-tokens", args->chunk_tokens, "Tokens per chunk (CacheGen's paper: 1500)")->capture_default_str()->check(CLI::Range(1u, 1u << 24));
  cmd->add_option("--greedy-tokens", args->greedy_tokens, "Greedy tokens compared for agreement")->capture_default_str();
  cmd->add_option("--max-context-tokens", args->max_context_tokens, "Truncate contexts to this many tokens (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--max-contexts", args->max_contexts, "Profile at most this many contexts (0: all)")->capture_default_str();
  cmd->add_option("--continuation-bytes", args->continuation_bytes,
                  "For a folder of .txt files: bytes at the end of each file used as the continuation")
      ->capture_default_str();
  cmd->add_option("--timing-repeats", args->repeats, "Time encode/decode this many times, keep the minimum")
      ->capture_default_str()->check(CLI::Range(1u, 1000u));
  cmd->add_option("--dtype", args->dtype, "Compute dtype of the model: fp32, bf16 or fp16")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--kv-dtype", args->kv_dtype, "Precision the KV cache is stored in: fp16, bf16 or fp32")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--chunk-quality", args->chunk_quality,
                  "Per-chunk quality: measured (only that chunk degraded; one forward pass per lossy chunk and level) "
                  "or estimated (the context's figure by squared-error share)")
      ->capture_default_str()->check(CLI::IsMember({"measured", "estimated"}));
  cmd->add_option("--device", args->device,
                  "Where encode/decode are timed: cpu (one thread) or cuda (the GPU's decode kernels, encode on the GPU "
                  "for cachegen (scheme=code and scheme=paper) and on the CPU otherwise; only codecs with a GPU decoder: "
                  "cachegen, kvs; "
                  "docs/profile-format.md)")
      ->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--threads", args->threads, "CPU threads for libtorch")->capture_default_str()->check(CLI::Range(1, 1024));
  cmd->add_option("-o,--output", args->output, "Profile JSON to write (resumes from OUTPUT.partial)")->required();

  cmd->callback([args] {
    std::vector<std::string> codec_names;
    std::stringstream ss(args->codecs);
    for (std::string name; std::getline(ss, name, ',');)
      if (!name.empty()) codec_names.push_back(name);
    // --device cuda: refused before any work when it cannot be done.
    std::unique_ptr<codec::cuda::ChunkTimer> timer;
    if (args->device == "cuda") {
      std::string without;
      for (const auto& name : codec_names)
        if (!codec::cuda::has_gpu_decoder(name)) without += (without.empty() ? "" : ", ") + name;
      if (!without.empty())
        throw Error(fmt::format("--device cuda: no GPU decoder for {} (those with one: {}); profile them with "
                                "--device cpu",
                                without, codec::cuda::kGpuDecoderCodecs));
#ifdef KVSTREAM_HAVE_CUDA
      timer = codec::cuda::make_gpu_chunk_timer(args->codec_model);  // throws when there is no usable GPU
#else
      throw Error("--device cuda: this kvstream was built without CUDA (nvcc was not found when it was configured; "
                  "see KVSTREAM_WITH_CUDA)");
#endif
    }
    // Parameters each codec refuses fail here, before the model loads (kvs's calibration is added below).
    check_codec_params(parse_codec_options(args->params, args->codec_model), codec_names, "--codecs");
    llm::set_cpu_threads(args->threads);
    llm::LoadOptions lo;
    lo.dtype = args->dtype == "bf16" ? at::kBFloat16 : args->dtype == "fp16" ? at::kHalf : at::kFloat;
    const llm::Model model = llm::load_model(args->model_dir, lo);
    const auto tokenizer = llm::load_tokenizer(args->model_dir, model.config());
    auto contexts = llm::load_contexts(args->contexts, args->continuation_bytes);
    if (args->max_contexts && contexts.size() > args->max_contexts) contexts.resize(args->max_contexts);

    if (const auto parent = std::filesystem::path(args->output).parent_path(); !parent.empty())
      std::filesystem::create_directories(parent);
    llm::ProfilerOptions o;
    o.codecs = codec_names;
    o.device_timer = timer.get();
    o.codec_options = parse_codec_options(args->params, args->codec_model);
    // kvs: this model's calibrated step weights, or a refusal saying how to calibrate (llm/kvs_calibration.h).
    // A kvs calibration given as --codec-model (it is written by `codec-model train`) is not read: say so.
    try {
      llm::apply_kvs_calibration(args->model_dir, uint32_t(model.config().num_hidden_layers), o.codecs,
                                 &o.codec_options);
    } catch (const Error& e) {
      if (args->codec_model.empty()) throw;
      throw Error(fmt::format("{}\n(--codec-model {} is not read by kvs: kvs reads its calibration from {} only)",
                              e.what(), args->codec_model, llm::kvs_calibration_path(args->model_dir)));
    }
    warn_if_calibrated_on(args->model_dir, o.codecs, parse_codec_options(args->params, args->codec_model),
                          args->contexts);
    o.chunk_tokens = args->chunk_tokens;
    o.greedy_tokens = args->greedy_tokens;
    o.max_context_tokens = args->max_context_tokens;
    o.timing_repeats = args->repeats;
    o.measure_chunks = args->chunk_quality == "measured";
    o.kv_dtype = codec::dtype_from_string(args->kv_dtype);
    o.model_name = std::filesystem::path(args->model_dir).lexically_normal().filename().string();
    if (o.model_name.empty()) o.model_name = args->model_dir;
    o.partial_path = args->output + ".partial";

    const codec::Profile prof = llm::run_profiler(model, *tokenizer, contexts, o);
    codec::write_profile(prof, args->output);
    std::filesystem::remove(o.partial_path);

    std::printf("%s: %zu contexts, chunk %u tokens, device %s\n", args->output.c_str(), contexts.size(),
                prof.chunk_tokens, prof.device.c_str());
    for (const auto& c : prof.codecs) {
      if (!c.encode_device.empty() && c.encode_device != prof.device)
        std::printf("  %s: encode timed on %s (no GPU encoder)\n", c.codec.c_str(), c.encode_device.c_str());
      if (!codec::measured_on_gpu(prof.device)) continue;
      // GPU: the kernels' time against the host's parse that precedes them (not in decode_s).
      double kernels = 0, host = 0, n = 0;
      for (const auto& ctx : c.contexts)
        for (const auto& ch : ctx.chunks)
          for (const auto& lv : ch.levels) kernels += lv.decode_s, host += std::max(0.0, lv.decode_host_s), n += 1;
      if (n > 0)
        std::printf("  %s: GPU decode %.1f us per chunk (device, decode_s); host planning %.1f us (decode_host_s)\n",
                    c.codec.c_str(), 1e6 * kernels / n, 1e6 * host / n);
    }
    // KL: mean over contexts; SE/KL: the standard error of that mean (the
    // contexts' standard errors combined) over the mean; front: on the size-KL
    // Pareto front.
    std::printf("%-10s %-6s %10s %14s %10s %8s %11s %8s %7s %6s\n", "codec", "level", "bits/elem", "loss increase",
                "agreement", "task", "KL nats", "SE/KL", "top-1", "front");
    for (const auto& c : prof.codecs) {
      for (size_t l = 0; l < c.levels(); ++l) {
        double bpe = 0, loss = 0, agree = 0, task = 0, kl = 0, var = 0, top1 = 0;
        int tasks = 0;
        for (const auto& ctx : c.contexts) {
          const codec::LevelQuality& q = ctx.quality[l];
          bpe += q.bits_per_element;
          loss += q.loss_increase;
          agree += q.greedy_agreement;
          kl += q.kl_nats;
          top1 += q.top1_agreement;
          var += q.kl_stderr_nats * q.kl_stderr_nats;
          if (q.task_accuracy >= 0) task += q.task_accuracy, ++tasks;
        }
        const double n = double(c.contexts.size());
        const double se_ratio = kl > 0 ? std::sqrt(var) / kl : 0.0;  // (sqrt(var) / n) / (kl / n)
        std::printf("%-10s %-6s %10.3f %13.2f%% %10.3f %8s %11.3g %7.1f%% %7.3f %6s\n", c.codec.c_str(),
                    c.level_names[l].c_str(), bpe / n, 100 * loss / n, agree / n,
                    tasks ? fmt::format("{:.2f}", task / tasks).c_str() : "-", kl / n, 100 * se_ratio, top1 / n,
                    l < c.on_front.size() && c.on_front[l] ? "yes" : "no");
      }
    }
  });
}

}  // namespace kvs::apps
