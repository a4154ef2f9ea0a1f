// `kvstream codecs`, `kvstream encode`, `kvstream decode`: the codecs on KV
// caches stored as safetensors (from `kvstream kv dump` or any framework).
//
// An encoded file (.kvs) is a sequence of chunk bitstreams: magic "KVSF",
// u32 version (1), u32 chunk count, then per chunk a u64 length and the
// chunk's bitstream (docs/bitstream.md).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "codec/bitstream.h"
#include "codec/registry.h"
#include "codec/codec.h"
#include "llm/safetensors.h"

#ifdef KVSTREAM_HAVE_TORCH
#include <filesystem>

#include "llm/kvs_calibration.h"
#endif

namespace kvs::apps {
namespace {

constexpr uint32_t kFileMagic = 0x4653564Bu;  // "KVSF"

std::vector<codec::Bytes> read_container(const std::string& path) {
  const std::string data = read_file(path);
  auto u32 = [&](size_t at) {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v |= uint32_t(uint8_t(data[at + size_t(k)])) << (8 * k);
    return v;
  };
  if (data.size() < 12 || u32(0) != kFileMagic) throw Error(fmt::format("{}: not a kvstream encoded file", path));
  if (u32(4) != 1) throw Error(fmt::format("{}: unsupported version {}", path, u32(4)));
  const uint32_t count = u32(8);
  std::vector<codec::Bytes> chunks;
  size_t pos = 12;
  for (uint32_t i = 0; i < count; ++i) {
    if (data.size() - pos < 8) throw Error(fmt::format("{}: truncated at chunk {}", path, i));
    const uint64_t len = uint64_t(u32(pos)) | uint64_t(u32(pos + 4)) << 32;
    pos += 8;
    if (len > data.size() - pos) throw Error(fmt::format("{}: chunk {} of {} bytes runs past the end", path, i, len));
    chunks.emplace_back(data.begin() + ptrdiff_t(pos), data.begin() + ptrdiff_t(pos + len));
    pos += len;
  }
  if (pos != data.size()) throw Error(fmt::format("{}: {} unexpected bytes at the end", path, data.size() - pos));
  return chunks;
}

void print_error_stats(const codec::KVChunk& ref, const codec::KVChunk& got) {
  if (!(ref.shape == got.shape) || ref.tokens != got.tokens) throw Error("reference has another shape");
  double se = 0, sig = 0, max_abs = 0;
  for (size_t i = 0; i < ref.values.size(); ++i) {
    const double d = double(got.values[i]) - ref.values[i];
    se += d * d;
    sig += double(ref.values[i]) * ref.values[i];
    max_abs = std::max(max_abs, std::fabs(d));
  }
  const double n = double(ref.values.size());
  std::printf("error: max_abs %.6g, mse %.6g, snr %.2f dB\n", max_abs, se / n, se > 0 ? 10 * std::log10(sig / se) : INFINITY);
}

// encode --model: kvs's step weights from the model's calibration
// (llm/kvs_calibration.h) unless --param gives weights, and its RoPE from the
// model's config unless --param gives it; without --model, a warning that kvs
// runs on its defaults.
void apply_model_calibration(const std::string& codec, const std::string& model_dir, const std::string& kv_file,
                             uint32_t layers, codec::CodecOptions* options) {
  const auto own = options->codec_params.find(codec);
  const bool weights_given =
      options->params.count("weights") || (own != options->codec_params.end() && own->second.count("weights"));
  if (!model_dir.empty() && codec != "kvs")
    throw Error(fmt::format("encode --model: only kvs reads a model's calibration, not {}", codec));
  if (codec != "kvs" || (model_dir.empty() && weights_given)) return;
  if (model_dir.empty()) {
    std::fprintf(stderr,
                 "kvstream: warning: encode --codec kvs without --model: kvs's default step weights (measured for "
                 "models/default; 1 for other depths) and rope_theta 10000, not the calibration of %s's model; give "
                 "--model DIR (its kvs-calibration.json) or --param weights=...\n",
                 kv_file.c_str());
    return;
  }
#ifdef KVSTREAM_HAVE_TORCH
  const std::string path = llm::kvs_calibration_path(model_dir);
  if (!weights_given && std::filesystem::exists(path) && llm::read_kvs_calibration(path).layers != layers)
    throw Error(fmt::format("encode --model {}: {} has {} layers, the calibration {} is for {}: is the cache from "
                            "this model?",
                            model_dir, kv_file, layers, path, llm::read_kvs_calibration(path).layers));
  llm::apply_kvs_calibration(model_dir, layers, {codec}, options);
#else
  throw Error("encode --model needs the libtorch build of kvstream (or give kvs's --param weights=... rope_theta=...)");
#endif
}

}  // namespace

codec::CodecOptions parse_codec_options(const std::vector<std::string>& params, const std::string& model_file) {
  codec::CodecOptions o;
  const std::vector<std::string> known = codec::codec_names();
  for (const auto& kv : params) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(fmt::format("--param '{}': expected key=value or codec.key=value", kv));
    const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
    const auto dot = key.find('.');
    if (dot == std::string::npos) {
      o.params[key] = value;
      continue;
    }
    const std::string codec = key.substr(0, dot), own_key = key.substr(dot + 1);
    if (codec.empty() || own_key.empty())
      throw Error(fmt::format("--param '{}': expected key=value or codec.key=value", kv));
    if (std::find(known.begin(), known.end(), codec) == known.end())
      throw Error(fmt::format("--param '{}': unknown codec '{}'{} (known: {})", kv, codec, did_you_mean(codec, known),
                              fmt::join(known, ", ")));
    o.codec_params[codec][own_key] = value;
  }
  o.model_file = model_file;
  return o;
}

void check_codec_params(const codec::CodecOptions& options, const std::vector<std::string>& codecs,
                        const std::string& flag) {
  const auto listed = [&](const std::string& name) { return std::find(codecs.begin(), codecs.end(), name) != codecs.end(); };
  for (const auto& [codec, params] : options.codec_params)
    if (!listed(codec))
      throw Error(fmt::format("--param {}.{}={}: codec {} is not one of this command's codecs ({} {})", codec,
                              params.begin()->first, params.begin()->second, codec, flag, fmt::join(codecs, ",")));
  codec::CodecOptions scoped = options;  // without the parameters given to every codec
  scoped.params.clear();
  const auto takes = [&](const std::string& codec, const std::string& key, const std::string& value) {
    codec::CodecOptions one = scoped;
    one.params[key] = value;
    try {
      codec::make_codec(codec, one);
      return std::string();
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  for (const auto& codec : codecs) {
    try {
      codec::make_codec(codec, options);
    } catch (const Error&) {
      // An unscoped parameter this codec rejects: say so, and which codecs take it.
      for (const auto& [key, value] : options.params) {
        const std::string why = takes(codec, key, value);
        if (why.empty()) continue;
        std::string scope;
        for (const auto& other : codecs)
          if (other != codec && takes(other, key, value).empty())
            scope += fmt::format("{}--param {}.{}={}", scope.empty() ? "" : " or ", other, key, value);
        if (codecs.size() == 1)
          throw Error(fmt::format("--param {}={}: codec {} does not take it ({})", key, value, codec, why));
        throw Error(fmt::format("--param {}={} goes to every codec ({} {}), and codec {} does not take it ({}){}", key,
                                value, flag, fmt::join(codecs, ","), codec, why,
                                scope.empty() ? "" : "; give it to the codec that does: " + scope));
      }
      throw;
    }
  }
}

void add_codec_commands(CLI::App& app) {
  app.add_subcommand("codecs", "List the codecs and their levels (0 = finest)")->callback([] {
    for (const auto& name : codec::codec_names()) {
      const auto c = codec::make_codec(name);
      std::string levels;
      for (int l = 0; l < c->levels(); ++l) levels += (l ? " " : "") + c->level_name(l);
      std::printf("%-10s %d levels: %s   [%s]\n", name.c_str(), c->levels(), levels.c_str(), c->params().c_str());
    }
  });

  struct EncodeArgs {
    std::string in, out, codec = "cachegen", model_file, model_dir;
    std::vector<std::string> params;
    int level = 0;
    uint32_t chunk_tokens = 1500;
  };
  auto e = std::make_shared<EncodeArgs>();
  auto* enc = app.add_subcommand("encode", "Compress a KV cache (safetensors) into chunks at one level");
  enc->add_option("input", e->in, "KV safetensors file (layers.{i}.key/value, [kv_heads, tokens, head_dim])")
      ->required()->check(CLI::ExistingFile);
  enc->add_option("-o,--out", e->out, "Encoded output file (.kvs)")->required();
  enc->add_option("--codec", e->codec,
                  "Codec (see `kvstream codecs`). kvs's step weights and rope_theta are model-specific: give --model, "
                  "or --param weights=... rope_theta=...; else its defaults (weights measured for models/default, 1 "
                  "for other depths; rope_theta 10000), with a warning")
      ->capture_default_str();
  enc->add_option("--level", e->level, "Level, 0 = finest")->capture_default_str();
  enc->add_option("--param", e->params, "Codec parameter key=value or codec.key=value (repeatable)");
  enc->add_option("--model", e->model_dir,
                  "With --codec kvs: the HF checkpoint folder the cache comes from; kvs takes its calibration "
                  "(DIR/kvs-calibration.json, as `kvstream profile` does; --param weights= overrides it)"
#ifndef KVSTREAM_HAVE_TORCH
                  " (needs the libtorch build of kvstream)"
#endif
                  )
      ->check(CLI::ExistingDirectory);
  enc->add_option("--codec-model", e->model_file, "Codec model file, for codecs with static tables");
  enc->add_option("--chunk-tokens", e->chunk_tokens, "Tokens per chunk (CacheGen's paper: 1500)")
      ->capture_default_str()->check(CLI::Range(1u, 1u << 24));
  enc->callback([e] {
    codec::CodecOptions options = parse_codec_options(e->params, e->model_file);
    check_codec_params(options, {e->codec}, "--codec");
    codec::KVChunk kv = llm::read_kv_safetensors(e->in);
    apply_model_calibration(e->codec, e->model_dir, e->in, kv.shape.layers, &options);
    const auto codec = codec::make_codec(e->codec, options);
    kv.context_tokens = kv.token_begin + kv.tokens;  // the file is a context's cache: its chunks know where it ends
    codec::Bytes file;
    codec::put_u32(file, kFileMagic);
    codec::put_u32(file, 1);
    const uint32_t count = (kv.tokens + e->chunk_tokens - 1) / e->chunk_tokens;
    codec::put_u32(file, count);
    uint64_t payload = 0;
    for (uint32_t b = 0; b < kv.tokens; b += e->chunk_tokens) {
      const codec::Bytes s = codec->encode(kv.slice(b, std::min(e->chunk_tokens, kv.tokens - b)), e->level);
      codec::put_u32(file, uint32_t(s.size()));
      codec::put_u32(file, uint32_t(uint64_t(s.size()) >> 32));
      file.insert(file.end(), s.begin(), s.end());
      payload += s.size();
    }
    write_file_atomic(e->out, std::string_view(reinterpret_cast<const char*>(file.data()), file.size()));
    const double elements = double(kv.values.size());
    std::printf("%s: %u tokens in %u chunks, %s level %d: %llu bytes, %.3f bits/element, %.2fx smaller than fp16\n",
                e->out.c_str(), kv.tokens, count, e->codec.c_str(), e->level, (unsigned long long)payload,
                8.0 * double(payload) / elements, 2.0 * elements / double(payload));
  });

  struct DecodeArgs {
    std::string in, out, reference, model_file;
  };
  auto d = std::make_shared<DecodeArgs>();
  auto* dec = app.add_subcommand("decode", "Decompress an encoded file back to a KV safetensors file");
  dec->add_option("input", d->in, "Encoded file (.kvs)")->required()->check(CLI::ExistingFile);
  dec->add_option("-o,--out", d->out, "Output KV safetensors file")->required();
  dec->add_option("--codec-model", d->model_file, "Codec model file the chunks were encoded with (cachegen scheme=paper)")
      ->check(CLI::ExistingFile);
  dec->add_option("--reference", d->reference, "Original KV safetensors: print error statistics against it")
      ->check(CLI::ExistingFile);
  dec->callback([d] {
    std::vector<codec::KVChunk> parts;
    std::map<std::string, std::unique_ptr<codec::Codec>> codecs;  // by name, made once
    const std::vector<codec::Bytes> chunks = read_container(d->in);
    size_t offset = 12;  // of the chunk's bitstream in the file
    for (size_t i = 0; i < chunks.size(); ++i) {
      const codec::Bytes& s = chunks[i];
      offset += 8;
      try {
        auto& c = codecs[codec::codec_for_stream(s)];
        if (!c) c = codec::make_codec(codec::codec_for_stream(s), parse_codec_options({}, d->model_file));
        parts.push_back(c->decode(s));
      } catch (const std::exception& err) {  // name the file and the chunk, not only the byte in the chunk
        throw Error(fmt::format("{}: chunk {} of {} (file bytes {}..{}): {}", d->in, i, chunks.size(), offset,
                                offset + s.size(), err.what()));
      }
      offset += s.size();
    }
    if (parts.empty()) throw Error(fmt::format("{}: no chunks", d->in));
    const codec::KVChunk kv = codec::KVChunk::concat(parts);
    llm::write_kv_safetensors(d->out, kv);
    std::printf("%s: %u tokens, %u layers x %u kv heads x %u dims\n", d->out.c_str(), kv.tokens, kv.shape.layers,
                kv.shape.kv_heads, kv.shape.head_dim);
    if (!d->reference.empty()) print_error_stats(llm::read_kv_safetensors(d->reference), kv);
  });
}

}  // namespace kvs::apps
