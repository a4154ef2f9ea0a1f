// Codec profiles: the contract between the codec side and the network side.
//
// A profile records, for one model, what each codec really produced on real
// KV caches: per context, per chunk and per level the bytes, encode and
// decode seconds (on the named device), and the quality cost; per context the
// quality of the whole context at each uniform level. The simulator reads only
// this: it never invents a size or a quality number.
//
// Levels are numbered 0..n-1 per codec; level 0 is the finest (most bytes,
// least error), each higher level coarser. Recomputing a chunk from text is not
// a level: it is exact (no quality loss) and costs prefill FLOPs, which the
// simulator's compute model counts from ModelInfo (sim/gpu_model.h).
//
// Quality is measured in several ways (LevelQuality); the size-quality
// ladder a policy sees is ranked by the KL divergence of the next-token
// distribution (CodecProfile::on_front), which unlike the loss increase cannot
// turn negative by chance when the cache is damaged.
//
// Stored as JSON (see docs/profile-format.md); `schema_version` guards the
// format (version 1 had no KL and is refused with a message to re-profile).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "codec/kv.h"

namespace kvs::codec {

inline constexpr int kProfileSchemaVersion = 2;

// The model whose KV caches were profiled, with what a compute model needs
// (sim/gpu_model.h counts its FLOPs).
struct ModelInfo {
  std::string name;
  KVShape kv;
  DType dtype = DType::kF16;
  uint32_t hidden_size = 0;
  uint32_t intermediate_size = 0;
  uint32_t num_attention_heads = 0;
  uint32_t vocab_size = 0;
  uint64_t parameters = 0;  // all weights, embeddings included
  // Per layer, its sliding window W in tokens: a token attends to itself and
  // the W - 1 tokens before it (Mistral-7B-v0.1, Gemma-2/3, Qwen2's upper
  // layers); 0: full attention. Empty: every layer attends to the whole
  // context. Optional in the file (written only when a layer is windowed).
  std::vector<uint32_t> layer_windows;

  // Bytes of the full-precision KV cache per token (at `dtype`).
  uint64_t kv_bytes_per_token() const { return kv.elements_per_token() * dtype_bytes(dtype); }
  // Layer l's window (0: full attention).
  uint32_t layer_window(size_t l) const { return l < layer_windows.size() ? layer_windows[l] : 0; }
  bool has_windows() const;
};

// One chunk encoded at one level.
struct ChunkLevel {
  uint64_t bytes = 0;     // whole bitstream, header included
  double encode_s = 0;    // measured on Profile::device
  double decode_s = 0;
  double mse = 0;         // mean squared error over the chunk's elements
  // Quality when only this chunk is at this level (all others exact),
  // measured or estimated as Profile::chunk_quality says (llm/profiler.h).
  double loss_increase = 0;  // relative increase of continuation loss
  double kl_nats = 0;        // KL(P_exact || P_degraded) per continuation token, nats
  // Last, so that positional initialisers of the fields above stay valid.
  // GPU profiles only (`--device cuda`): the host's parse and checks of the
  // stream before the GPU decodes it (one CPU thread), which decode_s (the
  // kernels' time) leaves out; < 0: not measured (optional in the file).
  double decode_host_s = -1;
  // Each layer's share of `bytes` (Codec::layer_shares), for a simulated
  // target that sends only some layers; empty: an even split (optional in
  // the file, written only when the codec's split is not even).
  std::vector<double> layer_shares = {};
};

struct ChunkProfile {
  uint64_t token_begin = 0;
  uint32_t tokens = 0;
  std::vector<ChunkLevel> levels;  // index = level
};

// Quality of a whole context with every chunk at one level, measured with the model.
struct LevelQuality {
  double bits_per_element = 0;  // payload bits over all K and V elements of the context
  double loss_increase = 0;     // relative: (loss_degraded - loss_exact) / loss_exact
  double greedy_agreement = 1;  // fraction of the next N greedy tokens that match
  double task_accuracy = -1;    // exact match on the context's question; -1 if the context has none
  // Teacher-forced over the continuation (llm/evaluate.h): mean per token of
  // KL(P_exact || P_degraded) of the next-token distribution, its standard
  // error (batch means), and the fraction of positions with the same argmax.
  double kl_nats = 0;
  double kl_stderr_nats = 0;
  double top1_agreement = 1;
};

struct ContextProfile {
  std::string id;
  uint32_t tokens = 0;
  double base_loss_nats = 0;      // continuation loss per token with the exact cache
  double base_task_accuracy = -1; // with the exact cache; -1 if no question
  uint32_t continuation_tokens = 0;  // positions scored for loss and KL
  std::vector<LevelQuality> quality;  // index = level
  std::vector<ChunkProfile> chunks;
};

struct CodecProfile {
  std::string codec;                     // registry name, e.g. "cachegen"
  std::string params;                    // codec parameters as given, for the record
  std::vector<std::string> level_names;  // index = level
  std::vector<ContextProfile> contexts;
  // Per level: on the size-quality Pareto front in KL. Filled when read and by
  // the profiler; always written as pareto_front(*this), and a read file whose
  // `on_front` differs from it is an error.
  std::vector<bool> on_front;
  // Where this codec's encode_s were measured when not on Profile::device
  // (`kvstream profile --device cuda` times encode on the CPU for codecs
  // without a GPU encoder); empty: on Profile::device. Optional in the file.
  std::string encode_device;

  size_t levels() const { return level_names.size(); }
  // Level numbers on the front (pareto_front(*this)), finest (most bytes) first.
  std::vector<int> front_levels() const;
};

// Which levels of a codec are on its size-quality front: a level is dominated
// when another has mean bytes per chunk <= its own and mean KL over contexts
// <= its own, with one of them strictly smaller (exact ties: the lower level
// number stays). Every level is on the front when there are no contexts. The
// front, ordered by bytes, is strictly decreasing in bytes and strictly
// increasing in KL.
std::vector<bool> pareto_front(const CodecProfile& codec);
// Per level: mean over all contexts' chunks of the chunk bytes, and mean over
// contexts of kl_nats (the two axes of the front).
std::vector<double> mean_chunk_bytes(const CodecProfile& codec);
std::vector<double> mean_kl_nats(const CodecProfile& codec);

struct Profile {
  int schema_version = kProfileSchemaVersion;
  ModelInfo model;
  // Where encode/decode seconds were measured: "cpu: <model name>, 1 thread",
  // or "cuda:<card name>" (a GPU: decode_s the device's kernel time,
  // codec/cuda/profile_timer.h); see CodecProfile::encode_device.
  std::string device;
  uint32_t chunk_tokens = 0;  // nominal chunk size (the last chunk may be shorter)
  uint32_t greedy_tokens = 0; // N of greedy agreement
  // How ChunkLevel's quality figures were obtained: "measured" (the
  // continuation scored with only that chunk at that level) or "estimated"
  // (the whole-context figure apportioned by squared-error share).
  std::string chunk_quality = "measured";
  std::vector<CodecProfile> codecs;

  // The named codec's profile; throws std::invalid_argument listing the ones present.
  const CodecProfile& codec(std::string_view name) const;
};

// Whether `device` (Profile::device) names a GPU ("cuda:...").
inline bool measured_on_gpu(std::string_view device) { return device.substr(0, 5) == "cuda:"; }
// The card's name of a GPU device ("cuda:NVIDIA H100 80GB HBM3" -> "NVIDIA H100 80GB HBM3").
inline std::string_view gpu_card_name(std::string_view device) {
  return measured_on_gpu(device) ? device.substr(5) : std::string_view{};
}

// Reads and validates a profile: every required field present with the right
// type, levels consistent across chunks, sizes positive. Errors throw
// std::runtime_error naming the file and the JSON path (e.g.
// "p.json: /codecs/0/contexts/2/chunks/5/levels/1/bytes: expected an unsigned integer").
Profile read_profile(const std::string& path);
Profile parse_profile(std::string_view json_text, const std::string& source_name);
std::string profile_to_json(const Profile& profile);
// Writes atomically (temporary file, then rename).
void write_profile(const Profile& profile, const std::string& path);

}  // namespace kvs::codec
