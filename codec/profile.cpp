#include "codec/profile.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"

namespace kvs::codec {

using nlohmann::json;

bool ModelInfo::has_windows() const {
  for (uint32_t w : layer_windows)
    if (w > 0) return true;
  return false;
}

const CodecProfile& Profile::codec(std::string_view name) const {
  std::string present;
  for (const auto& c : codecs) {
    if (c.codec == name) return c;
    present += (present.empty() ? "" : ", ") + c.codec;
  }
  throw std::invalid_argument(fmt::format("profile has no codec '{}' (it has: {})", name, present));
}

std::vector<double> mean_chunk_bytes(const CodecProfile& c) {
  std::vector<double> sum(c.levels(), 0.0);
  double n = 0;
  for (const auto& ctx : c.contexts)
    for (const auto& ch : ctx.chunks) {
      for (size_t l = 0; l < sum.size() && l < ch.levels.size(); ++l) sum[l] += double(ch.levels[l].bytes);
      n += 1;
    }
  for (double& s : sum) s = n > 0 ? s / n : 0.0;
  return sum;
}

std::vector<double> mean_kl_nats(const CodecProfile& c) {
  std::vector<double> sum(c.levels(), 0.0);
  for (const auto& ctx : c.contexts)
    for (size_t l = 0; l < sum.size() && l < ctx.quality.size(); ++l) sum[l] += ctx.quality[l].kl_nats;
  for (double& s : sum) s = c.contexts.empty() ? 0.0 : s / double(c.contexts.size());
  return sum;
}

std::vector<bool> pareto_front(const CodecProfile& c) {
  const size_t L = c.levels();
  std::vector<bool> front(L, true);
  if (c.contexts.empty()) return front;
  const std::vector<double> bytes = mean_chunk_bytes(c), kl = mean_kl_nats(c);
  for (size_t a = 0; a < L; ++a)
    for (size_t b = 0; b < L && front[a]; ++b)
      if (b != a && bytes[b] <= bytes[a] && kl[b] <= kl[a] && (bytes[b] < bytes[a] || kl[b] < kl[a] || b < a))
        front[a] = false;
  return front;
}

std::vector<int> CodecProfile::front_levels() const {
  std::vector<int> levels;
  const std::vector<bool> front = pareto_front(*this);
  for (size_t l = 0; l < front.size(); ++l)
    if (front[l]) levels.push_back(int(l));
  const std::vector<double> bytes = mean_chunk_bytes(*this);
  std::stable_sort(levels.begin(), levels.end(), [&](int a, int b) { return bytes[size_t(a)] > bytes[size_t(b)]; });
  return levels;
}

namespace {

// Reads fields of a JSON object with errors that name the file and JSON path.
class Reader {
 public:
  Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw Error(fmt::format("{}: {}: {}", source_, path.empty() ? "/" : path, what));
  }
  const json& field(const json& obj, const std::string& path, const char* key) const {
    if (!obj.is_object()) fail(path, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) fail(path + "/" + key, "missing required field");
    return *it;
  }
  const json& array(const json& obj, const std::string& path, const char* key) const {
    const json& v = field(obj, path, key);
    if (!v.is_array()) fail(path + "/" + key, "expected an array");
    return v;
  }
  uint64_t u64(const json& obj, const std::string& path, const char* key) const {
    const json& v = field(obj, path, key);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
      fail(path + "/" + key, "expected an unsigned integer");
    return v.get<uint64_t>();
  }
  uint32_t u32(const json& obj, const std::string& path, const char* key) const {
    const uint64_t v = u64(obj, path, key);
    if (v > UINT32_MAX) fail(path + "/" + key, "value too large");
    return uint32_t(v);
  }
  // `max`: the largest value a real measurement has (absurd values would
  // give absurd or infinite TTFTs downstream).
  double num(const json& obj, const std::string& path, const char* key, bool non_negative = true,
             double max = 1e300) const {
    const json& v = field(obj, path, key);
    if (!v.is_number()) fail(path + "/" + key, "expected a number");
    const double d = v.get<double>();
    if (!std::isfinite(d)) fail(path + "/" + key, "expected a finite number");
    if (non_negative && d < 0) fail(path + "/" + key, "expected a number >= 0");
    if (d > max) fail(path + "/" + key, fmt::format("{} is more than a real measurement ({:g})", d, max));
    return d;
  }
  std::string str(const json& obj, const std::string& path, const char* key) const {
    const json& v = field(obj, path, key);
    if (!v.is_string()) fail(path + "/" + key, "expected a string");
    return v.get<std::string>();
  }

 private:
  std::string source_;
};

ModelInfo read_model(const Reader& r, const json& j, const std::string& p) {
  ModelInfo m;
  m.name = r.str(j, p, "name");
  m.kv.layers = r.u32(j, p, "layers");
  m.kv.kv_heads = r.u32(j, p, "kv_heads");
  m.kv.head_dim = r.u32(j, p, "head_dim");
  if (!m.kv.layers || !m.kv.kv_heads || !m.kv.head_dim) r.fail(p, "layers, kv_heads and head_dim must be > 0");
  if (m.kv.layers > 100000 || m.kv.kv_heads > 100000 || m.kv.head_dim > 100000)
    r.fail(p, "layers, kv_heads and head_dim must be at most 100000 (no model has more)");
  try {
    m.dtype = dtype_from_string(r.str(j, p, "dtype"));
  } catch (const std::invalid_argument& e) {
    r.fail(p + "/dtype", e.what());
  }
  m.hidden_size = r.u32(j, p, "hidden_size");
  m.intermediate_size = r.u32(j, p, "intermediate_size");
  m.num_attention_heads = r.u32(j, p, "num_attention_heads");
  m.vocab_size = r.u32(j, p, "vocab_size");
  m.parameters = r.u64(j, p, "parameters");
  if (j.contains("layer_windows")) {
    const json& w = r.array(j, p, "layer_windows");
    if (w.size() != m.kv.layers)
      r.fail(p + "/layer_windows", fmt::format("expected {} windows (one per layer), found {}", m.kv.layers, w.size()));
    for (size_t l = 0; l < w.size(); ++l) {
      if (!w[l].is_number_unsigned() || w[l].get<uint64_t>() > UINT32_MAX)
        r.fail(fmt::format("{}/layer_windows/{}", p, l), "expected a window in tokens (a whole number >= 0; 0: full attention)");
      m.layer_windows.push_back(w[l].get<uint32_t>());
    }
  }
  return m;
}

// ChunkLevel::layer_shares: one number >= 0 per layer, summing to 1 (within
// the 6 decimals the profiler writes), normalized when read.
std::vector<double> read_layer_shares(const Reader& r, const json& j, const std::string& p, uint32_t layers) {
  const json& a = r.array(j, p, "layer_shares");
  const std::string path = p + "/layer_shares";
  if (a.size() != layers) r.fail(path, fmt::format("expected {} shares (one per layer), found {}", layers, a.size()));
  std::vector<double> shares;
  double sum = 0;
  for (size_t l = 0; l < a.size(); ++l) {
    if (!a[l].is_number() || !std::isfinite(a[l].get<double>()) || a[l].get<double>() < 0)
      r.fail(fmt::format("{}/{}", path, l), "expected a share >= 0");
    shares.push_back(a[l].get<double>());
    sum += shares.back();
  }
  if (!(std::abs(sum - 1) <= 1e-4)) r.fail(path, fmt::format("the shares sum to {:g}, expected 1", sum));
  if (std::abs(sum - 1) > 1e-12)  // (a sum that rounding alone moved is kept, so files read back unchanged)
    for (double& x : shares) x /= sum;
  return shares;
}

ContextProfile read_context(const Reader& r, const json& j, const std::string& p, size_t levels, uint32_t layers) {
  ContextProfile c;
  c.id = r.str(j, p, "id");
  c.tokens = r.u32(j, p, "tokens");
  c.base_loss_nats = r.num(j, p, "base_loss_nats");
  c.base_task_accuracy = r.num(j, p, "base_task_accuracy", false);
  c.continuation_tokens = r.u32(j, p, "continuation_tokens");
  const json& quality = r.array(j, p, "quality");
  if (quality.size() != levels) r.fail(p + "/quality", fmt::format("expected {} levels, found {}", levels, quality.size()));
  for (size_t i = 0; i < quality.size(); ++i) {
    const std::string q = fmt::format("{}/quality/{}", p, i);
    LevelQuality lq;
    lq.bits_per_element = r.num(quality[i], q, "bits_per_element");
    lq.loss_increase = r.num(quality[i], q, "loss_increase", false);
    lq.greedy_agreement = r.num(quality[i], q, "greedy_agreement");
    lq.task_accuracy = r.num(quality[i], q, "task_accuracy", false);
    lq.kl_nats = r.num(quality[i], q, "kl_nats");
    lq.kl_stderr_nats = r.num(quality[i], q, "kl_stderr_nats");
    lq.top1_agreement = r.num(quality[i], q, "top1_agreement", true, 1.0);
    c.quality.push_back(lq);
  }
  const json& chunks = r.array(j, p, "chunks");
  if (chunks.empty()) r.fail(p + "/chunks", "expected at least one chunk");
  uint64_t next_token = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const std::string cp = fmt::format("{}/chunks/{}", p, i);
    ChunkProfile ch;
    ch.token_begin = r.u64(chunks[i], cp, "token_begin");
    ch.tokens = r.u32(chunks[i], cp, "tokens");
    if (ch.token_begin != next_token) r.fail(cp + "/token_begin", fmt::format("expected {} (chunks must be contiguous)", next_token));
    if (ch.tokens == 0) r.fail(cp + "/tokens", "expected > 0");
    next_token += ch.tokens;
    const json& lv = r.array(chunks[i], cp, "levels");
    if (lv.size() != levels) r.fail(cp + "/levels", fmt::format("expected {} levels, found {}", levels, lv.size()));
    for (size_t k = 0; k < lv.size(); ++k) {
      const std::string lp = fmt::format("{}/levels/{}", cp, k);
      ChunkLevel cl;
      cl.bytes = r.u64(lv[k], lp, "bytes");
      if (cl.bytes == 0) r.fail(lp + "/bytes", "expected > 0");
      if (cl.bytes > (uint64_t(1) << 48)) r.fail(lp + "/bytes", fmt::format("{} bytes: more than 256 TiB for one chunk", cl.bytes));
      cl.encode_s = r.num(lv[k], lp, "encode_s", true, 86400);  // a day per chunk
      cl.decode_s = r.num(lv[k], lp, "decode_s", true, 86400);
      if (lv[k].contains("decode_host_s")) cl.decode_host_s = r.num(lv[k], lp, "decode_host_s", true, 86400);
      if (lv[k].contains("layer_shares")) cl.layer_shares = read_layer_shares(r, lv[k], lp, layers);
      cl.mse = r.num(lv[k], lp, "mse");
      cl.loss_increase = r.num(lv[k], lp, "loss_increase", false);
      cl.kl_nats = r.num(lv[k], lp, "kl_nats");
      ch.levels.push_back(cl);
    }
    c.chunks.push_back(std::move(ch));
  }
  if (next_token != c.tokens) r.fail(p + "/tokens", fmt::format("chunks cover {} tokens, context says {}", next_token, c.tokens));
  return c;
}

}  // namespace

Profile parse_profile(std::string_view text, const std::string& source) {
  Reader r(source);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("{}: invalid JSON at byte {}: {}", source, e.byte, e.what()));
  } catch (const json::exception& e) {  // e.g. a number too large for a double (found by profile_fuzz)
    throw Error(fmt::format("{}: invalid JSON: {}", source, e.what()));
  }
  Profile prof;
  prof.schema_version = int(r.u32(j, "", "schema_version"));
  if (prof.schema_version == 1)
    r.fail("/schema_version", fmt::format("schema version 1 (made before KL divergence and the Pareto front were "
                                          "measured; this build reads {}): run `kvstream profile` again",
                                          kProfileSchemaVersion));
  if (prof.schema_version != kProfileSchemaVersion)
    r.fail("/schema_version", fmt::format("unsupported schema version {} (this build reads {})", prof.schema_version,
                                          kProfileSchemaVersion));
  prof.model = read_model(r, r.field(j, "", "model"), "/model");
  prof.device = r.str(j, "", "device");
  if (prof.device.empty()) r.fail("/device", "expected a device name");
  if (measured_on_gpu(prof.device) && gpu_card_name(prof.device).empty())
    r.fail("/device", "\"cuda:\" without the card's name");
  prof.chunk_tokens = r.u32(j, "", "chunk_tokens");
  prof.greedy_tokens = r.u32(j, "", "greedy_tokens");
  prof.chunk_quality = r.str(j, "", "chunk_quality");
  if (prof.chunk_quality != "measured" && prof.chunk_quality != "estimated")
    r.fail("/chunk_quality", fmt::format("expected \"measured\" or \"estimated\", got \"{}\"", prof.chunk_quality));
  const json& codecs = r.array(j, "", "codecs");
  for (size_t i = 0; i < codecs.size(); ++i) {
    const std::string p = fmt::format("/codecs/{}", i);
    CodecProfile c;
    c.codec = r.str(codecs[i], p, "codec");
    c.params = r.str(codecs[i], p, "params");
    const json& names = r.array(codecs[i], p, "level_names");
    if (names.empty()) r.fail(p + "/level_names", "expected at least one level");
    for (size_t k = 0; k < names.size(); ++k) {
      if (!names[k].is_string()) r.fail(fmt::format("{}/level_names/{}", p, k), "expected a string");
      c.level_names.push_back(names[k].get<std::string>());
    }
    const json& contexts = r.array(codecs[i], p, "contexts");
    for (size_t k = 0; k < contexts.size(); ++k)
      c.contexts.push_back(read_context(r, contexts[k], fmt::format("{}/contexts/{}", p, k), c.level_names.size(),
                                        prof.model.kv.layers));
    if (codecs[i].is_object() && codecs[i].contains("encode_device")) {
      c.encode_device = r.str(codecs[i], p, "encode_device");
      if (c.encode_device.empty()) r.fail(p + "/encode_device", "expected a device name (leave the field out for Profile::device)");
    }
    const json& front = r.array(codecs[i], p, "on_front");
    if (front.size() != c.level_names.size())
      r.fail(p + "/on_front", fmt::format("expected {} levels, found {}", c.level_names.size(), front.size()));
    for (size_t k = 0; k < front.size(); ++k) {
      if (!front[k].is_boolean()) r.fail(fmt::format("{}/on_front/{}", p, k), "expected true or false");
      c.on_front.push_back(front[k].get<bool>());
    }
    // The front is a function of the sizes and KL: a mismatch is a hand edit
    // or a profile assembled from pieces.
    if (c.on_front != pareto_front(c)) {
      std::string want;
      for (bool b : pareto_front(c)) want += want.empty() ? (b ? "true" : "false") : (b ? ", true" : ", false");
      r.fail(p + "/on_front", fmt::format("does not match the levels' mean bytes and KL (expected [{}])", want));
    }
    prof.codecs.push_back(std::move(c));
  }
  return prof;
}

Profile read_profile(const std::string& path) { return parse_profile(read_file(path), path); }

std::string profile_to_json(const Profile& prof) {
  json j;
  j["schema_version"] = prof.schema_version;
  const ModelInfo& m = prof.model;
  j["model"] = {{"name", m.name},
                {"layers", m.kv.layers},
                {"kv_heads", m.kv.kv_heads},
                {"head_dim", m.kv.head_dim},
                {"dtype", to_string(m.dtype)},
                {"hidden_size", m.hidden_size},
                {"intermediate_size", m.intermediate_size},
                {"num_attention_heads", m.num_attention_heads},
                {"vocab_size", m.vocab_size},
                {"parameters", m.parameters}};
  if (m.has_windows()) j["model"]["layer_windows"] = m.layer_windows;
  j["device"] = prof.device;
  j["chunk_tokens"] = prof.chunk_tokens;
  j["greedy_tokens"] = prof.greedy_tokens;
  j["chunk_quality"] = prof.chunk_quality;
  j["codecs"] = json::array();
  for (const auto& c : prof.codecs) {
    json jc = {{"codec", c.codec},           {"params", c.params},        {"level_names", c.level_names},
               {"on_front", pareto_front(c)}, {"contexts", json::array()}};
    if (!c.encode_device.empty()) jc["encode_device"] = c.encode_device;
    for (const auto& ctx : c.contexts) {
      json jx = {{"id", ctx.id},
                 {"tokens", ctx.tokens},
                 {"base_loss_nats", ctx.base_loss_nats},
                 {"base_task_accuracy", ctx.base_task_accuracy},
                 {"continuation_tokens", ctx.continuation_tokens},
                 {"quality", json::array()},
                 {"chunks", json::array()}};
      for (const auto& q : ctx.quality)
        jx["quality"].push_back({{"bits_per_element", q.bits_per_element},
                                 {"loss_increase", q.loss_increase},
                                 {"greedy_agreement", q.greedy_agreement},
                                 {"task_accuracy", q.task_accuracy},
                                 {"kl_nats", q.kl_nats},
                                 {"kl_stderr_nats", q.kl_stderr_nats},
                                 {"top1_agreement", q.top1_agreement}});
      for (const auto& ch : ctx.chunks) {
        json jch = {{"token_begin", ch.token_begin}, {"tokens", ch.tokens}, {"levels", json::array()}};
        for (const auto& l : ch.levels) {
          jch["levels"].push_back({{"bytes", l.bytes},
                                   {"encode_s", l.encode_s},
                                   {"decode_s", l.decode_s},
                                   {"mse", l.mse},
                                   {"loss_increase", l.loss_increase},
                                   {"kl_nats", l.kl_nats}});
          if (l.decode_host_s >= 0) jch["levels"].back()["decode_host_s"] = l.decode_host_s;
          if (!l.layer_shares.empty()) jch["levels"].back()["layer_shares"] = l.layer_shares;
        }
        jx["chunks"].push_back(std::move(jch));
      }
      jc["contexts"].push_back(std::move(jx));
    }
    j["codecs"].push_back(std::move(jc));
  }
  return j.dump(1) + "\n";
}

void write_profile(const Profile& profile, const std::string& path) {
  write_file_atomic(path, profile_to_json(profile));
}

}  // namespace kvs::codec
