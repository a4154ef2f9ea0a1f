#include "llm/profiler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "base/progress.h"
#include "codec/bitstream.h"
#include "llm/evaluate.h"
#include "llm/kv_cache.h"

namespace kvs::llm {

namespace fs = std::filesystem;

namespace {

std::string json_string(const nlohmann::json& j, const char* key, const std::string& where, bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) throw Error(fmt::format("{}: missing field \"{}\"", where, key));
    return {};
  }
  if (!it->is_string()) throw Error(fmt::format("{}: field \"{}\": expected a string", where, key));
  return it->get<std::string>();
}

std::vector<ProfileContext> load_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::vector<ProfileContext> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = at_location(path, line_no, "");
    const std::string loc = where.substr(0, where.size() - 2);  // "file:line"
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number overflow
      throw Error(fmt::format("{}: invalid JSON: {}", loc, e.what()));
    }
    if (!j.is_object()) throw Error(fmt::format("{}: expected a JSON object", loc));
    ProfileContext c;
    c.id = json_string(j, "id", loc, true);
    c.context = json_string(j, "context", loc, true);
    c.continuation = json_string(j, "continuation", loc, true);
    c.question = json_string(j, "question", loc, false);
    c.answer = json_string(j, "answer", loc, false);
    if (c.context.size() < 2) throw Error(fmt::format("{}: context shorter than 2 bytes", loc));
    if (c.continuation.empty()) throw Error(fmt::format("{}: empty continuation", loc));
    if (c.question.empty() != c.answer.empty())
      throw Error(fmt::format("{}: \"question\" and \"answer\" go together", loc));
    out.push_back(std::move(c));
  }
  if (out.empty()) throw Error(fmt::format("{}: no contexts", path));
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Greedy answer after context + question equals the expected answer.
bool answers_correctly(const Model& model, const KVCache& cache, const std::vector<int64_t>& prompt,
                       const std::vector<int64_t>& answer) {
  const auto out = greedy_decode(model, cache, prompt, int64_t(answer.size()));
  return out == answer;
}

// A decoded chunk as the GPU holds it: its values rounded to the chunk's
// dtype (the --kv-dtype it is shipped and stored in, which the stream
// records; the GPU decoder writes that dtype). The exact reference is the
// cache rounded to the same dtype, so both sides of every comparison are
// caches a serving system could hold.
codec::KVChunk as_stored(codec::KVChunk decoded) {
  for (float& v : decoded.values) v = codec::round_to_dtype(v, decoded.dtype);
  return decoded;
}

// A codec's layer split as the profile records it: 6 decimals, and nothing
// when it is even (the file stays as it was for such codecs).
std::vector<double> recorded_layer_shares(std::vector<double> shares) {
  bool even = true;
  for (double& x : shares) {
    even = even && std::abs(x - 1.0 / double(shares.size())) < 1e-9;
    x = std::round(x * 1e6) / 1e6;
  }
  if (even) shares.clear();
  return shares;
}

}  // namespace

std::vector<ProfileContext> load_contexts(const std::string& path, size_t continuation_bytes) {
  if (!fs::exists(path)) throw Error(fmt::format("{}: no such file or folder", path));
  if (!fs::is_directory(path)) return load_jsonl(path);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(fmt::format("{}: folder has no .txt files", path));
  std::vector<ProfileContext> out;
  for (const auto& f : files) {
    const std::string text = read_file(f.string());
    if (text.size() < continuation_bytes + 2)
      throw Error(fmt::format("{}: {} bytes, need more than the continuation of {} bytes", f.string(), text.size(),
                              continuation_bytes));
    const size_t split = text.size() - continuation_bytes;
    out.push_back({f.stem().string(), text.substr(0, split), text.substr(split), {}, {}});
  }
  return out;
}

codec::ModelInfo model_info(const Model& model, const std::string& name) {
  const ModelConfig& c = model.config();
  codec::ModelInfo m;
  m.name = name;
  m.kv = model.kv_shape();
  m.dtype = to_codec_dtype(model.dtype());
  m.hidden_size = uint32_t(c.hidden_size);
  m.intermediate_size = uint32_t(c.intermediate_size);
  m.num_attention_heads = uint32_t(c.num_attention_heads);
  m.vocab_size = uint32_t(c.vocab_size);
  m.parameters = uint64_t(c.parameter_count());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) m.layer_windows.push_back(uint32_t(c.layer_window(l)));
  if (!m.has_windows()) m.layer_windows.clear();
  return m;
}

std::string cpu_device_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return "cpu: " + line.substr(line.find_first_not_of(" \t", pos + 1)) + ", 1 thread";
    }
  }
  return "cpu: unknown, 1 thread";
}

PreparedContext prepare_context(const Model& model, const Tokenizer& tokenizer, const ProfileContext& ctx,
                                uint32_t max_context_tokens, codec::DType kv_dtype, uint32_t greedy_tokens) {
  std::vector<int64_t> ids = tokenizer.encode(ctx.context, true);
  if (max_context_tokens && ids.size() > max_context_tokens) ids.resize(max_context_tokens);
  if (ids.size() < 2) throw Error(fmt::format("context {} has fewer than 2 tokens", ctx.id));
  // The cache covers all context tokens but the last, which starts the continuation.
  const std::vector<int64_t> cache_ids(ids.begin(), ids.end() - 1);
  std::vector<int64_t> continuation = {ids.back()};
  for (int64_t t : tokenizer.encode(ctx.continuation, false)) continuation.push_back(t);

  PreparedContext p;
  if (!ctx.question.empty()) {
    p.question = {ids.back()};
    for (int64_t t : tokenizer.encode(ctx.question, false)) p.question.push_back(t);
    p.answer = tokenizer.encode(ctx.answer, false);
  }
  p.exact_chunk = to_chunk(model.prefill(to_tensor(cache_ids)).cache, 0);
  p.exact_chunk.dtype = kv_dtype;
  p.exact_chunk.context_tokens = p.exact_chunk.tokens;  // its chunks (slices) know where the context ends
  for (float& v : p.exact_chunk.values) v = codec::round_to_dtype(v, kv_dtype);
  p.exact = from_chunk(p.exact_chunk, model.dtype(), model.device());
  p.reference = make_reference(model, p.exact, continuation, greedy_tokens);
  if (!p.answer.empty()) p.base_task_accuracy = answers_correctly(model, p.exact, p.question, p.answer) ? 1.0 : 0.0;
  return p;
}

codec::LevelQuality measure_quality(const Model& model, const PreparedContext& context, const codec::KVChunk& degraded) {
  const KVCache cache = from_chunk(degraded, model.dtype(), model.device());
  const CacheQuality q = compare_to_reference(model, context.reference, cache);
  codec::LevelQuality lq;
  lq.loss_increase = q.relative_increase;
  lq.kl_nats = q.kl_nats;
  lq.kl_stderr_nats = q.kl_stderr_nats;
  lq.top1_agreement = q.top1_agreement;
  lq.greedy_agreement = q.agreement;
  if (!context.answer.empty())
    lq.task_accuracy = answers_correctly(model, cache, context.question, context.answer) ? 1.0 : 0.0;
  return lq;
}

codec::KVChunk assemble_cache(const codec::Codec& codec, const codec::KVChunk& exact,
                              const std::vector<ChunkChoice>& chunks) {
  std::vector<codec::KVChunk> parts;
  uint64_t next = 0;
  for (size_t k = 0; k < chunks.size(); ++k) {
    const ChunkChoice& c = chunks[k];
    if (c.token_begin != next || c.tokens == 0 || c.token_begin + c.tokens > exact.tokens)
      throw Error(fmt::format("chunk {} (tokens {}..{}) does not continue a tiling of a cache of {} tokens", k,
                              c.token_begin, c.token_begin + c.tokens, exact.tokens));
    if (c.level >= codec.levels())
      throw Error(fmt::format("chunk {}: level {} but codec {} has {} levels", k, c.level, codec.name(), codec.levels()));
    codec::KVChunk original = exact.slice(uint32_t(c.token_begin), c.tokens);
    parts.push_back(c.level < 0 ? std::move(original) : as_stored(codec.decode(codec.encode(original, c.level))));
    next = c.token_begin + c.tokens;
  }
  if (next != exact.tokens)
    throw Error(fmt::format("chunks cover {} of the cache's {} tokens", next, exact.tokens));
  return codec::KVChunk::concat(parts);
}

codec::Profile run_profiler(const Model& model, const Tokenizer& tokenizer, const std::vector<ProfileContext>& contexts,
                            const ProfilerOptions& options) {
  if (options.codecs.empty()) throw Error("profile: no codecs given");
  if (options.chunk_tokens == 0) throw Error("profile: --chunk-tokens must be > 0");

  codec::Profile prof;
  prof.model = model_info(model, options.model_name);
  // A chunk's stream holds at most kMaxElements values (docs/bitstream.md):
  // said now, before any prefill, rather than at the first chunk's encode.
  const uint64_t per_token = prof.model.kv.elements_per_token();
  if (uint64_t(options.chunk_tokens) * per_token > codec::kMaxElements)
    throw Error(fmt::format("profile: --chunk-tokens {} makes chunks of {} values for this model ({} layers x 2 x {} "
                            "KV heads x {} dims per token); a chunk's stream holds at most {}: use --chunk-tokens {} "
                            "or fewer",
                            options.chunk_tokens, uint64_t(options.chunk_tokens) * per_token, prof.model.kv.layers,
                            prof.model.kv.kv_heads, prof.model.kv.head_dim, codec::kMaxElements,
                            codec::kMaxElements / per_token));
  prof.model.dtype = options.kv_dtype;
  codec::cuda::ChunkTimer* const timer = options.device_timer;
  prof.device = timer ? timer->device() : cpu_device_name();
  prof.chunk_tokens = options.chunk_tokens;
  prof.greedy_tokens = options.greedy_tokens;
  prof.chunk_quality = options.measure_chunks ? "measured" : "estimated";

  std::vector<std::unique_ptr<codec::Codec>> codecs;
  for (const auto& name : options.codecs) {
    codecs.push_back(codec::make_codec(name, options.codec_options));
    if (codecs.back()->needs_model() && options.codec_options.model_file.empty())
      throw Error(fmt::format("profile: codec {} needs a codec model file (--codec-model)", name));
    if (timer && !timer->decodes(*codecs.back()))
      throw Error(fmt::format("profile: --device cuda: codec {} has no GPU decoder (those with one: {}); profile it "
                              "with --device cpu",
                              name, codec::cuda::kGpuDecoderCodecs));
    codec::CodecProfile cp;
    if (timer) cp.encode_device = timer->encodes(*codecs.back()) ? timer->device() : cpu_device_name();
    cp.codec = name;
    cp.params = codecs.back()->params();
    for (int l = 0; l < codecs.back()->levels(); ++l) cp.level_names.push_back(codecs.back()->level_name(l));
    prof.codecs.push_back(std::move(cp));
  }

  // Resume: contexts already profiled with the same settings.
  std::map<std::string, std::vector<codec::ContextProfile>> done;  // id -> per codec
  if (!options.partial_path.empty() && fs::exists(options.partial_path)) {
    codec::Profile old = codec::read_profile(options.partial_path);
    bool same = old.chunk_tokens == prof.chunk_tokens && old.greedy_tokens == prof.greedy_tokens &&
                old.chunk_quality == prof.chunk_quality &&
                // times of one kind of device only (CPU names may differ between runs)
                (old.device == prof.device || (!codec::measured_on_gpu(old.device) && !timer)) &&
                old.model.kv == prof.model.kv && old.codecs.size() == prof.codecs.size();
    for (size_t i = 0; same && i < old.codecs.size(); ++i)
      same = old.codecs[i].codec == prof.codecs[i].codec && old.codecs[i].params == prof.codecs[i].params;
    if (!same)
      throw Error(fmt::format("{}: partial profile made with other settings; remove it to start over",
                              options.partial_path));
    for (size_t k = 0; k < old.codecs[0].contexts.size(); ++k) {
      std::vector<codec::ContextProfile> per_codec;
      for (const auto& c : old.codecs) per_codec.push_back(c.contexts.at(k));
      done[old.codecs[0].contexts[k].id] = std::move(per_codec);
    }
  }

  std::unique_ptr<Progress> progress;
  if (options.show_progress)
    progress = std::make_unique<Progress>("profile", contexts.size(), "contexts", 0);

  for (const ProfileContext& ctx : contexts) {
    if (auto it = done.find(ctx.id); it != done.end()) {
      for (size_t i = 0; i < prof.codecs.size(); ++i) {
        prof.codecs[i].contexts.push_back(it->second[i]);
        prof.codecs[i].on_front = codec::pareto_front(prof.codecs[i]);
      }
      if (progress) progress->advance(1, ctx.id + " (resumed)");
      continue;
    }
    const PreparedContext prepared =
        prepare_context(model, tokenizer, ctx, options.max_context_tokens, options.kv_dtype, options.greedy_tokens);
    const codec::KVChunk& exact_chunk = prepared.exact_chunk;
    const uint32_t total_tokens = exact_chunk.tokens;
    const double elements = double(exact_chunk.values.size());

    for (size_t ci = 0; ci < codecs.size(); ++ci) {
      const codec::Codec& c = *codecs[ci];
      codec::ContextProfile cp;
      cp.id = ctx.id;
      cp.tokens = total_tokens;
      cp.base_loss_nats = prepared.reference.nll_nats;
      cp.base_task_accuracy = prepared.base_task_accuracy;
      cp.continuation_tokens = uint32_t(prepared.reference.continuation.size() - 1);
      for (uint32_t b = 0; b < total_tokens; b += options.chunk_tokens)
        cp.chunks.push_back({b, std::min(options.chunk_tokens, total_tokens - b), {}});
      for (int level = 0; level < c.levels(); ++level) {
        std::vector<codec::KVChunk> decoded;
        std::vector<double> sse;
        uint64_t total_bytes = 0;
        for (auto& ch : cp.chunks) {
          const codec::KVChunk original = exact_chunk.slice(uint32_t(ch.token_begin), ch.tokens);
          codec::ChunkLevel cl;
          codec::Bytes bytes;
          codec::KVChunk back;
          cl.encode_s = cl.decode_s = 1e300;
          const uint32_t repeats = std::max<uint32_t>(1, options.timing_repeats);
          if (!timer) {
            for (uint32_t r = 0; r < repeats; ++r) {
              auto t0 = std::chrono::steady_clock::now();
              bytes = c.encode(original, level);
              cl.encode_s = std::min(cl.encode_s, seconds_since(t0));
              t0 = std::chrono::steady_clock::now();
              back = c.decode(bytes);
              cl.decode_s = std::min(cl.decode_s, seconds_since(t0));
            }
          } else {
            // The CPU encodes (timed here when the GPU has no encoder for this
            // codec) and decodes (untimed: the error and quality are of its
            // output, which the GPU's must equal); the GPU times the rest.
            const bool gpu_encode = timer->encodes(c);
            for (uint32_t r = 0; r < (gpu_encode ? 1 : repeats); ++r) {
              const auto t0 = std::chrono::steady_clock::now();
              bytes = c.encode(original, level);
              cl.encode_s = std::min(cl.encode_s, seconds_since(t0));
            }
            back = c.decode(bytes);
            const codec::cuda::ChunkTimes t =
                timer->time(c, original, level, bytes, back, repeats, /*check=*/&ch == &cp.chunks.front());
            cl.decode_s = t.decode_s;
            cl.decode_host_s = t.decode_host_s;
            if (gpu_encode) cl.encode_s = t.encode_s;
          }
          if (back.tokens != original.tokens || !(back.shape == original.shape))
            throw Error(fmt::format("profile: codec {} level {} decoded a chunk of another shape", c.name(), level));
          back = as_stored(std::move(back));  // error and quality of what the GPU holds
          double e = 0;
          for (size_t i = 0; i < original.values.size(); ++i) {
            const double d = double(back.values[i]) - double(original.values[i]);
            e += d * d;
          }
          cl.bytes = bytes.size();
          cl.layer_shares = recorded_layer_shares(c.layer_shares(bytes));
          cl.mse = e / double(original.values.size());
          total_bytes += cl.bytes;
          sse.push_back(e);
          ch.levels.push_back(cl);
          decoded.push_back(std::move(back));
        }
        codec::LevelQuality lq = measure_quality(model, prepared, codec::KVChunk::concat(decoded));
        lq.bits_per_element = 8.0 * double(total_bytes) / elements;
        cp.quality.push_back(lq);
        double sse_total = 0;
        for (double e : sse) sse_total += e;
        for (size_t k = 0; k < cp.chunks.size(); ++k) {
          codec::ChunkLevel& cl = cp.chunks[k].levels.back();
          if (options.measure_chunks) {
            // Only chunk k degraded, every other chunk exact (no error: exact, 0).
            if (sse[k] == 0) continue;
            std::vector<codec::KVChunk> parts;
            for (size_t j = 0; j < cp.chunks.size(); ++j)
              parts.push_back(j == k ? decoded[j]
                                     : exact_chunk.slice(uint32_t(cp.chunks[j].token_begin), cp.chunks[j].tokens));
            const CacheQuality q = teacher_forced_quality(
                model, prepared.reference, from_chunk(codec::KVChunk::concat(parts), model.dtype(), model.device()));
            cl.loss_increase = q.relative_increase;
            cl.kl_nats = q.kl_nats;
          } else {
            const double share = sse_total > 0 ? sse[k] / sse_total : 0.0;
            cl.loss_increase = lq.loss_increase * share;
            cl.kl_nats = lq.kl_nats * share;
          }
        }
      }
      prof.codecs[ci].contexts.push_back(std::move(cp));
      prof.codecs[ci].on_front = codec::pareto_front(prof.codecs[ci]);
    }
    if (!options.partial_path.empty()) codec::write_profile(prof, options.partial_path);
    if (progress) progress->advance(1, ctx.id);
  }
  return prof;
}

}  // namespace kvs::llm
