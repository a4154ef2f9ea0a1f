// What the host prepares for the GPU decoders (codec/cuda/decode.h), as
// plain C++ that needs no CUDA: a stream is parsed and checked as the CPU
// decoder checks it (the CRC and, where it is long, the section table either
// here or by the verification kernels: Verify), and its metadata packed into
// one buffer that goes to the device with one copy. run_on_host() runs the kernels' thread bodies
// (codec/cuda/threads.h) one after another on the CPU, so the tests check all
// of the GPU path but launch, memory and streams on machines without a GPU.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "codec/bitstream.h"
#include "codec/cachegen_paper.h"
#include "codec/cuda/stream_layout.h"
#include "codec/cuda/threads.h"
#include "codec/cuda/verify_threads.h"

namespace kvs::codec::kvs_detail {
class KvsCodec;
}

namespace kvs::codec::cuda::detail {

// Who verifies a stream's CRC (and, for cachegen scheme=code, its section
// table). kHost: the planner, as the CPU decoder does (O(stream) on one
// core). kDevice: the verification kernels (codec/cuda/verify_threads.h,
// described by the plan's VerifyPlan), before the decode kernels; the
// planner checks the header and reads only what it needs (cachegen: two
// sizes; kvs and scheme=paper: the size table and the small sections), and
// whenever it finds a problem it runs the host's checks, so that it throws
// the CPU decoder's message (a checksum mismatch first) either way.
enum class Verify : uint8_t { kHost, kDevice };

// What the device verifies of one stream (nothing when crc is false).
struct VerifyPlan {
  bool crc = false;
  uint32_t body = 0, stored_crc = 0, crc_init = 0;
  bool walk = false;  // and the section table (cachegen scheme=code)
  uint32_t sections = 0;
  uint32_t min_size_from = 0, min_size = 0;
  uint32_t crc_tiles() const { return crc_tile_count(body); }
  // ends: [sections] u64 scratch; offsets: [sections + 1] (the decode kernels' table).
  VerifyLaunch bind(const uint8_t* stream, const CrcTables* tables, uint32_t* crc_acc, uint64_t* ends,
                    uint32_t* offsets, unsigned long long* fault) const;
};
// The tables on the host (computed once).
const CrcTables& crc_tables();
// The CPU decoder's message for a verification fault (fault & kVerifyFault)
// of a stream whose CRC follows `body` bytes.
std::string verify_fault_text(unsigned long long fault, uint32_t body);
// The verification kernels' thread bodies on the CPU (tiles, pieces and
// scan as the kernels cut them); offsets (with plan.walk) gets the section
// table. Returns the first fault, as the device reports it.
unsigned long long run_verify_on_host(const VerifyPlan& plan, std::span<const uint8_t> stream,
                                      std::vector<uint32_t>* offsets);
// A plan that verifies only the CRC of `stream` (at least 4 bytes).
VerifyPlan crc_only(std::span<const uint8_t> stream);
// A stream the caller staged in device memory (cuda::Decoder::decode's
// `staged`): the CRC kernel reads it in 16-byte words (uint4), which must be
// 16-byte aligned on a GPU (else a fatal "misaligned address" fault that
// ends the CUDA context). Throws kvs::Error naming the address otherwise.
void check_staged(const void* staged);

// cachegen scheme=code. Throws CorruptStream as CacheGenCodec::decode_into
// does (kvs::Error for a scheme=paper stream: plan_cachegen_paper).
struct CachegenPlan {
  StreamHeader header;
  std::vector<uint8_t> meta;  // section offsets (Verify::kHost only) and per-plane parameters
  size_t offsets_at = 0, planes_at = 0;
  uint32_t blocks = 0;
  VerifyPlan verify;  // Verify::kDevice: CRC and section table, the offsets written by the device
  // The launch with its pointers: `stream` and `meta` are where the stream's
  // bytes and the meta bytes lie (device or host memory); `offsets`, with
  // Verify::kDevice, where the verification wrote the section offsets (the
  // first form, offsets from the meta, is for Verify::kHost plans only).
  CachegenCodeLaunch bind(const uint8_t* stream, const uint8_t* meta_copy, void* out, uint8_t out_type,
                          unsigned long long* fault) const;
  CachegenCodeLaunch bind(const uint8_t* stream, const uint8_t* meta_copy, const uint32_t* offsets, void* out,
                          uint8_t out_type, unsigned long long* fault) const;
};
CachegenPlan plan_cachegen(std::span<const uint8_t> stream, Verify verify = Verify::kHost);

// cachegen scheme=code encoding on the GPU: the sizes of its buffers, and
// the stream's layout once the streams' sizes are back. Throws kvs::Error as CacheGenCodec::encode does for a bad level
// or shape.
struct CachegenEncodePlan {
  StreamHeader header;                // of the stream to be written
  std::vector<CachegenPlane> planes;  // per (layer, kind)
  uint32_t blocks = 0;
  size_t scales_bytes = 0, tables_bytes = 0, symbols_bytes = 0, streams = 0, capacity = 0;
  CachegenEncodeLaunch bind(const void* in, bool in_f16, const CachegenPlane* planes_copy, uint8_t* scales,
                            uint8_t* tables, uint8_t* symbols, uint8_t* slots, uint32_t* sizes,
                            unsigned long long* fault) const;
  // The payload offset of every stream from their sizes (streams + 1 entries);
  // throws when a stream did not fit (an internal error).
  std::vector<uint64_t> offsets(const std::vector<uint32_t>& sizes) const;
  // The stream's layout (codec/cuda/stream_layout.h): scales and tables
  // (sections 0 and 1, made on the device) before the streams (the payload).
  StreamLayout layout(std::span<const uint64_t> offsets) const;
  // The CPU encoder's error for a token whose |x| fp16 cannot carry.
  [[noreturn]] void scale_error(unsigned long long fault) const;
};
CachegenEncodePlan plan_cachegen_encode(KVShape shape, DType dtype, uint64_t token_begin, uint32_t tokens, int level,
                                        uint32_t stream_tokens);
// The GPU encoder's thread bodies on the CPU (for tests): the chunk's values
// as fp16 bits (in_f16) or floats.
Bytes encode_cachegen_on_host(const KVChunk& chunk, int level, uint32_t stream_tokens, bool in_f16);

// cachegen scheme=paper: a codec model's tables as the kernel reads them
// (anchors for every level; delta tables and steps per level, on demand).
struct PaperTables {
  uint64_t hash = 0;
  std::vector<rans::CumTable> anchors;  // [record]
  std::vector<float> step_a;            // [record]
  std::vector<std::vector<rans::BasicPackedTable<64>>> deltas;  // [level][record], empty until built
  std::vector<std::vector<float>> step_d;                      // [level][record]
  std::vector<std::vector<int32_t>> M;                         // [level][layer]
};
PaperTables paper_tables(const CacheGenPaperModel& model);
void build_paper_level(const CacheGenPaperModel& model, int level, PaperTables* tables);

// The checks of the paper scheme's decode_into (the model's hash, level,
// group, shape, sections, escape counts), with its messages.
struct CachegenPaperPlan {
  StreamHeader header;
  std::vector<uint8_t> meta;  // the substreams
  uint32_t substreams = 0;
  VerifyPlan verify;  // Verify::kDevice: the CRC
  size_t channels_bytes() const { return size_t(substreams) * header.shape.head_dim * sizeof(PaperChannel); }
  // `tables`: the model's tables where the kernel reads them (device or host);
  // level: the stream's.
  CachegenPaperLaunch bind(const uint8_t* stream, const uint8_t* meta_copy, const rans::CumTable* anchors,
                           const float* step_a, const rans::BasicPackedTable<64>* deltas, const float* step_d,
                           const int32_t* M, PaperChannel* channels, void* out, uint8_t out_type,
                           unsigned long long* fault) const;
};
// `model_file` names the model in errors.
CachegenPaperPlan plan_cachegen_paper(std::span<const uint8_t> stream, const CacheGenPaperModel* model,
                                      const std::string& model_file, Verify verify = Verify::kHost);

// kvs. `codec` parses (KvsCodec::parse: its checks and messages).
struct KvsPlan {
  StreamHeader header;
  std::vector<uint8_t> meta;
  size_t pieces_at = 0, group_offset_at = 0, group_channels_at = 0, channels_at = 0, heads_at = 0, literals_at = 0,
         sources_at = 0, steps_at = 0;
  uint32_t piece_count = 0;
  bool centroid = false;
  // The stream's RoPE tables (KvsLayout::rope.tables: D / 2 frequencies
  // each; empty: keys as given, or no layer reads it); the kernels read a
  // KvsRope table of each (not in the meta) and each layer's index (u8 at
  // layer_rope_at).
  std::vector<std::vector<double>> ropes;
  size_t layer_rope_at = 0;
  bool rotates() const {
    for (const auto& r : ropes)
      if (!r.empty()) return true;
    return false;
  }
  size_t stride = 0;          // floats between channels in the scratch buffer
  size_t symbols_bytes = 0;   // scratch: the pieces' symbols
  size_t tmp_bytes = 0;       // scratch: the channel-major values
  VerifyPlan verify;          // Verify::kDevice: the CRC
  size_t values() const { return header.elements(); }
  // `rope_rows`: per table of `ropes`, the chunk's first token's row of a
  // KvsRope table that serves it (KvsRope::at), null for an empty table.
  KvsLaunch bind(const uint8_t* stream, const uint8_t* meta_copy, const KvsGauss* gauss,
                 std::span<const float* const> rope_rows, uint8_t* symbols, float* tmp, void* out, uint8_t out_type,
                 unsigned long long* fault) const;
};
// RoPE's cos and sin as the kvs kernels read them, [position][pair][cos, sin]
// for positions [first, first + positions) of one set of frequencies:
// kvs_detail::rope_table's values, in which a position's do not depend on the
// chunk (each is cos/sin of position * the pair's frequency), so one table
// serves every chunk inside it. cuda::Decoder keeps one on the device and
// extends it only for a chunk past its end, instead of computing one per chunk.
struct KvsRope {
  std::vector<double> inv_freq;  // per pair (head_dim / 2)
  uint32_t head_dim = 0;
  uint64_t first = 0, positions = 0;
  std::vector<float> cs;  // 2 * positions * (head_dim / 2) floats
  // Frequencies inv_freq and the chunk's head_dim, and its tokens inside (a
  // chunk of no tokens reads nothing: served by any table).
  bool serves(const std::vector<double>& inv_freq, const StreamHeader& chunk) const;
  // Where the chunk's first token's row lies in a copy of cs at `base` (null
  // for a chunk of no tokens).
  const float* at(const StreamHeader& chunk, const float* base) const;
  // Whether this table begins with all of `previous` (the same frequencies,
  // head_dim and first position, at least as many positions).
  bool extends(const KvsRope& previous) const;
};
// Bytes up to which a table covers positions from 0 (64 MiB: 131,072
// positions at head_dim 128); a chunk past them gets a table of its own tokens.
constexpr size_t kKvsRopeMaxBytes = size_t(64) << 20;
// A table from 0 covers a multiple of this many positions.
constexpr uint64_t kKvsRopeStep = 8192;
// A table of frequencies `inv_freq` (not empty) that serves `chunk`: positions [0, n), n its
// tokens' end rounded up to kKvsRopeStep and at least twice the positions
// of a `previous` table from 0 of the same frequencies and head_dim (so that a
// context decoded chunk after chunk extends it a few times, and the tables
// it replaced, which cuda::Decoder keeps until synchronize(), add up to less
// than it), within kKvsRopeMaxBytes; the positions of a previous table it
// extends copied, only the new ones computed. Past kKvsRopeMaxBytes, the
// chunk's tokens only.
KvsRope kvs_rope(const std::vector<double>& inv_freq, const StreamHeader& chunk, const KvsRope* previous = nullptr);
// With Verify::kDevice the host reads the header and sections 0..2 only;
// the device walks the table and splits each piece's section (kvs_locate,
// writing rans/extras places into the pieces of its copy of `meta`).
KvsPlan plan_kvs(std::span<const uint8_t> stream, const kvs_detail::KvsCodec& codec, Verify verify = Verify::kHost);
// The verification and kvs_locate on the CPU, into `meta` (a copy of plan.meta).
unsigned long long run_verify_on_host(const KvsPlan& plan, std::span<const uint8_t> stream, std::vector<uint8_t>* meta);
// The Gaussian tables as the kernels read them.
std::vector<KvsGauss> kvs_gauss(const kvs_detail::KvsCodec& codec);
// A kvs codec for parsing (its encoder parameters do not matter for decoding).
std::shared_ptr<const kvs_detail::KvsCodec> make_kvs_parser();  // shared: usable where KvsCodec is incomplete

// The kernels' thread bodies run on the CPU over host memory; out holds
// header.elements() values (fp16 bits or floats). With a plan's `verify`,
// the verification first (run_verify_on_host; a fault there: no decoding).
// Returns the first fault (kNoFault: none), as the device reports it.
unsigned long long run_on_host(const CachegenPlan& plan, std::span<const uint8_t> stream, void* out, uint8_t out_type);
unsigned long long run_on_host(const CachegenPaperPlan& plan, std::span<const uint8_t> stream,
                               const CacheGenPaperModel& model, void* out, uint8_t out_type);
// kvs: `ropes` (may be null) are the tables kept from chunk to chunk as
// cuda::Decoder keeps its device copies, one per set of frequencies (a table
// is replaced by kvs_rope() when it does not serve the chunk, added when
// none has its frequencies); without them, tables of the chunk's tokens alone.
unsigned long long run_on_host(const KvsPlan& plan, std::span<const uint8_t> stream, const kvs_detail::KvsCodec& codec,
                               void* out, uint8_t out_type, std::vector<KvsRope>* ropes = nullptr);

}  // namespace kvs::codec::cuda::detail
