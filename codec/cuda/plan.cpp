// Host preparation for the GPU decoders (codec/cuda/plan.h): no CUDA here.
#include "codec/cuda/plan.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <map>

#include <fmt/core.h>

#include "codec/cachegen.h"
#include "codec/cachegen_paper.h"
#include "codec/fp16.h"
#include "codec/kvs_internal.h"

namespace kvs::codec::cuda::detail {

namespace {

// Host arrays packed into one buffer, each 16-byte aligned.
class Packer {
 public:
  template <class T>
  size_t add(const T* data, size_t count) {
    const size_t at = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(at + sizeof(T) * count);
    if (count) std::memcpy(bytes_.data() + at, data, sizeof(T) * count);
    return at;
  }
  template <class T>
  size_t add(const std::vector<T>& v) {
    return add(v.data(), v.size());
  }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  std::vector<uint8_t> bytes_;
};

// The same layout planned first and allocated once (no growth, no staging
// copies): place<T>(count) reserves an array and returns its offset;
// allocate() makes the buffer; at<T>(offset) is where to write it.
class Layout {
 public:
  template <class T>
  size_t place(size_t count) {
    const size_t at = (size_ + 15) / 16 * 16;
    size_ = at + sizeof(T) * count;
    return at;
  }
  void allocate() { bytes_.resize(size_); }
  template <class T>
  T* at(size_t offset) {
    return reinterpret_cast<T*>(bytes_.data() + offset);
  }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  size_t size_ = 0;
  std::vector<uint8_t> bytes_;
};

template <class T>
const T* at(const uint8_t* base, size_t offset) {
  return reinterpret_cast<const T*>(base + offset);
}

uint32_t offset_in(std::span<const uint8_t> stream, const uint8_t* p) {
  return uint32_t(p - stream.data());
}

void check_size(std::span<const uint8_t> stream) {
  if (stream.size() > 0xffffffffull)
    throw Error(fmt::format("CUDA decode: a stream of {} bytes is beyond 4 GiB", stream.size()));
}

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
// The section count of a stream whose header was checked.
uint32_t hd_sections(std::span<const uint8_t> stream) { return le32(stream.data() + 36); }

}  // namespace

const CrcTables& crc_tables() {
  static const CrcTables kTables = make_crc_tables();  // immutable, computed once
  return kTables;
}

VerifyPlan crc_only(std::span<const uint8_t> stream) {
  VerifyPlan v;
  v.crc = true;
  v.body = uint32_t(stream.size() - 4);
  v.stored_crc = le32(stream.data() + v.body);
  v.crc_init = crc_shift(crc_tables().x8pow, ~0u, v.body);
  return v;
}

void check_staged(const void* staged) {
  const auto at = reinterpret_cast<uintptr_t>(staged);
  if (at % 16 != 0)
    throw Error(fmt::format("CUDA decode: the staged stream at {:#x} is not 16-byte aligned (the CRC kernel reads "
                            "16-byte words)",
                            at));
}

VerifyLaunch VerifyPlan::bind(const uint8_t* stream, const CrcTables* tables, uint32_t* crc_acc, uint64_t* ends,
                              uint32_t* offsets, unsigned long long* fault) const {
  VerifyLaunch p{};
  p.stream = stream;
  p.body = body;
  p.stored_crc = stored_crc;
  p.crc_init = crc_init;
  p.crc = tables;
  p.crc_acc = crc_acc;
  p.walk = walk;
  p.sections = walk ? sections : 0;
  p.ends = ends;
  p.offsets = offsets;
  p.min_size_from = min_size_from;
  p.min_size = min_size;
  p.fault = fault;
  return p;
}

std::string verify_fault_text(unsigned long long fault, uint32_t body) {
  const uint64_t d = fault & ((1ull << 60) - 1);
  switch (VerifyRank((fault >> 60) & 7)) {
    case VerifyRank::kChecksum:
      return fmt::format("corrupt KV bitstream at byte {}: checksum mismatch", body);
    case VerifyRank::kSectionPastEnd:
      return fmt::format("corrupt KV bitstream at byte {}: section {} of {} bytes runs past the end",
                         kHeaderBytes + 4 * (d >> 32), d >> 32, uint32_t(d));
    case VerifyRank::kTrailingBytes:
      return fmt::format("corrupt KV bitstream at byte {}: {} unexpected bytes after the last section", d, body - d);
    case VerifyRank::kSectionCheck:
      switch ((d >> 32) & 3) {
        case kCheckShortStream:
          return fmt::format("corrupt KV bitstream: cachegen stream {} is shorter than a rANS state", d >> 34);
        case kCheckVarintTruncated:
          return "corrupt KV bitstream: kvs substream truncated";
        case kCheckVarintTooLong:
          return "corrupt KV bitstream: kvs substream varint too long";
        default:
          return fmt::format("corrupt KV bitstream: kvs substream {} rANS size {} too large", d >> 34, uint32_t(d));
      }
  }
  return fmt::format("corrupt KV bitstream: verification fault {:#x}", fault);
}

unsigned long long run_verify_on_host(const VerifyPlan& plan, std::span<const uint8_t> stream,
                                      std::vector<uint32_t>* offsets) {
  unsigned long long fault = kNoFault;
  if (!plan.crc) return fault;
  uint32_t acc = 0;
  std::vector<uint64_t> ends(plan.walk ? plan.sections : 0);
  if (plan.walk) offsets->assign(size_t(plan.sections) + 1, 0);
  const CrcTables& t = crc_tables();
  const VerifyLaunch p = plan.bind(stream.data(), &t, &acc, ends.data(), plan.walk ? offsets->data() : nullptr, &fault);
  crc_tiles_on_host(p);
  if (plan.walk) {
    for (uint32_t i = 0; i < p.sections; ++i) verify_widen(p, i);
    for (uint32_t i = 1; i < p.sections; ++i) ends[i] += ends[i - 1];  // the inclusive scan (CUB's on the device)
    for (uint32_t i = 0; i < p.sections; ++i) verify_section(p, i);
  }
  verify_final(p);
  return fault;
}

unsigned long long run_verify_on_host(const KvsPlan& plan, std::span<const uint8_t> stream, std::vector<uint8_t>* meta) {
  std::vector<uint32_t> offsets;
  unsigned long long fault = run_verify_on_host(plan.verify, stream, &offsets);
  if (!plan.verify.walk) return fault;
  const VerifyLaunch p = plan.verify.bind(stream.data(), &crc_tables(), nullptr, nullptr, offsets.data(), &fault);
  KvsPieceDesc* pieces = reinterpret_cast<KvsPieceDesc*>(meta->data() + plan.pieces_at);
  for (uint32_t k = 0; k < plan.piece_count; ++k) kvs_locate(p, pieces, k);
  return fault;
}

// CacheGenCodec::decode_into's checks (parse_stream, check_cachegen_stream),
// then the layout. The sections' offsets are written straight into the meta
// buffer (a 1,024-token Llama-2-7B chunk has a million sections): no list of
// sections, no second table.
namespace {

// With Verify::kDevice: the header checked without the CRC, then only what
// check_cachegen_stream finds from the header and sizes 0 and 1 (level,
// stream_tokens, section count, scales and tables sizes); the device checks
// the CRC, the table and the streams' sizes. Whatever fails here, the host's
// full checks give the CPU decoder's message.
CachegenPlan plan_cachegen_deferred(std::span<const uint8_t> stream) {
  const auto host_checks = [&]() {
    (void)plan_cachegen(stream, Verify::kHost);
    throw CorruptStream("corrupt KV bitstream: cachegen header and section table disagree");  // not reached
  };
  uint32_t count = 0;
  StreamHeader hd;
  try {
    hd = parse_stream_header(stream, CodecId::kCacheGen, &count, Crc::kDeferred);
  } catch (const CorruptStream&) {
    host_checks();
  }
  const uint32_t stream_tokens = hd.flags;
  const KVShape& s = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(s.channels());
  if (hd.level >= kCacheGenLevels || stream_tokens == 0) host_checks();
  const uint32_t blocks = (T + stream_tokens - 1) / stream_tokens;
  if (count != 2 + 2ull * s.layers * C * blocks) host_checks();
  CachegenPlan plan;
  plan.planes_at = 0;
  plan.meta.resize(sizeof(CachegenPlane) * 2 * size_t(s.layers));
  CachegenPlane* planes = reinterpret_cast<CachegenPlane*>(plan.meta.data());
  uint64_t table_bytes = 0;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const int M = cachegen_bins(hd.level, k, l, s.layers) / 2 - 1;
      *planes++ = {M, uint32_t(2 * M + 1), uint32_t(table_bytes)};
      table_bytes += 2ull * C * uint64_t(2 * M + 1);
    }
  if (le32(stream.data() + kHeaderBytes) != 2ull * 2 * s.layers * T || le32(stream.data() + kHeaderBytes + 4) != table_bytes)
    host_checks();
  plan.header = hd;
  plan.blocks = blocks;
  plan.verify = crc_only(stream);
  plan.verify.walk = true;
  plan.verify.sections = count;
  plan.verify.min_size_from = 2;  // the rANS streams: at least their initial state
  plan.verify.min_size = 4;
  return plan;
}

}  // namespace

CachegenPlan plan_cachegen(std::span<const uint8_t> stream, Verify verify) {
  check_size(stream);
  if (const uint64_t hash = stream_model_hash(stream); hash != 0)
    throw Error(fmt::format("CUDA decode: a cachegen scheme=paper stream (codec model {:016x}) needs plan_cachegen_paper", hash));
  if (verify == Verify::kDevice) return plan_cachegen_deferred(stream);
  uint32_t count = 0;
  const StreamHeader hd = parse_stream_header(stream, CodecId::kCacheGen, &count);
  CachegenPlan plan;
  plan.offsets_at = 0;
  plan.planes_at = (sizeof(uint32_t) * (size_t(count) + 1) + 15) / 16 * 16;
  // The planes' size from the header alone is bounded by kMaxLayers; the
  // offsets' by the stream (parse_stream_header checked the count fits).
  plan.meta.resize(plan.planes_at + sizeof(CachegenPlane) * 2 * size_t(hd.shape.layers));
  uint32_t* offsets = reinterpret_cast<uint32_t*>(plan.meta.data() + plan.offsets_at);
  section_offsets(stream, count, offsets);
  check_cachegen_offsets(hd, std::span<const uint32_t>(offsets, size_t(count) + 1));
  const uint32_t stream_tokens = hd.flags;
  const KVShape& s = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(s.channels());
  CachegenPlane* planes = reinterpret_cast<CachegenPlane*>(plan.meta.data() + plan.planes_at);
  uint64_t table_bytes = 0;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const int M = cachegen_bins(hd.level, k, l, s.layers) / 2 - 1;
      *planes++ = {M, uint32_t(2 * M + 1), uint32_t(table_bytes)};
      table_bytes += 2ull * C * uint64_t(2 * M + 1);
    }
  plan.header = hd;
  plan.blocks = (T + stream_tokens - 1) / stream_tokens;
  return plan;
}

CachegenCodeLaunch CachegenPlan::bind(const uint8_t* stream, const uint8_t* meta_copy, void* out, uint8_t out_type,
                                      unsigned long long* fault) const {
  return bind(stream, meta_copy, at<uint32_t>(meta_copy, offsets_at), out, out_type, fault);
}

CachegenCodeLaunch CachegenPlan::bind(const uint8_t* stream, const uint8_t* meta_copy, const uint32_t* offsets,
                                      void* out, uint8_t out_type, unsigned long long* fault) const {
  CachegenCodeLaunch p{};
  p.stream = stream;
  p.offsets = offsets;
  p.planes = at<CachegenPlane>(meta_copy, planes_at);
  p.layers = header.shape.layers;
  p.channels = uint32_t(header.shape.channels());
  p.head_dim = header.shape.head_dim;
  p.tokens = header.tokens;
  p.blocks = blocks;
  p.stream_tokens = header.flags;
  p.out = out;
  p.out_type = out_type;
  p.fault = fault;
  return p;
}

CachegenEncodePlan plan_cachegen_encode(KVShape shape, DType dtype, uint64_t token_begin, uint32_t tokens, int level,
                                        uint32_t stream_tokens) {
  if (level < 0 || level >= kCacheGenLevels)
    throw Error(fmt::format("codec cachegen: level {} out of range (0..{})", level, kCacheGenLevels - 1));
  if (stream_tokens == 0 || stream_tokens > 65535)
    throw Error(fmt::format("codec cachegen: stream_tokens {} out of range (1..65535)", stream_tokens));
  CachegenEncodePlan plan;
  StreamHeader& h = plan.header;
  h.codec = CodecId::kCacheGen;
  h.level = uint8_t(level);
  h.dtype = dtype;
  h.flags = uint16_t(stream_tokens);
  h.shape = shape;
  h.token_begin = token_begin;
  h.tokens = tokens;
  check_writable(h);  // the CPU encoder's refusal of a chunk of no tokens, before any work
  const uint32_t C = uint32_t(shape.channels());
  plan.blocks = (tokens + stream_tokens - 1) / stream_tokens;
  uint64_t table_bytes = 0;
  for (uint32_t l = 0; l < shape.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const int M = cachegen_bins(level, k, l, shape.layers) / 2 - 1;
      plan.planes.push_back({M, uint32_t(2 * M + 1), uint32_t(table_bytes)});
      table_bytes += 2ull * C * uint64_t(2 * M + 1);
    }
  plan.scales_bytes = 2ull * 2 * shape.layers * tokens;
  plan.tables_bytes = table_bytes;
  plan.symbols_bytes = 2ull * shape.layers * C * tokens;
  plan.streams = 2ull * shape.layers * C * plan.blocks;
  plan.capacity = 4 + 2 * size_t(stream_tokens) + 16;  // as CacheGenCodec::encode: worst case 4 + 2 * tokens
  return plan;
}

CachegenEncodeLaunch CachegenEncodePlan::bind(const void* in, bool in_f16, const CachegenPlane* planes_copy,
                                              uint8_t* scales, uint8_t* tables, uint8_t* symbols, uint8_t* slots,
                                              uint32_t* sizes, unsigned long long* fault) const {
  CachegenEncodeLaunch p{};
  p.in = in;
  p.in_f16 = in_f16;
  p.layers = header.shape.layers;
  p.kv_heads = header.shape.kv_heads;
  p.head_dim = header.shape.head_dim;
  p.tokens = header.tokens;
  p.stream_tokens = header.flags;
  p.blocks = blocks;
  p.planes = planes_copy;
  p.scales = scales;
  p.tables = tables;
  p.symbols = symbols;
  p.slots = slots;
  p.capacity = capacity;
  p.sizes = sizes;
  p.fault = fault;
  return p;
}

std::vector<uint64_t> CachegenEncodePlan::offsets(const std::vector<uint32_t>& sizes) const {
  std::vector<uint64_t> off(sizes.size() + 1, 0);
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) throw Error("codec cachegen: internal error: rANS buffer too small");
    off[i + 1] = off[i] + sizes[i];
  }
  return off;
}

StreamLayout CachegenEncodePlan::layout(std::span<const uint64_t> off) const {
  const uint64_t prefix_sizes[] = {scales_bytes, tables_bytes};
  return StreamLayout(header, prefix_sizes, off);
}

void CachegenEncodePlan::scale_error(unsigned long long fault) const {
  const uint64_t at = fault >> 8, plane = at / header.tokens, t = at % header.tokens;
  throw Error(fmt::format("cachegen: layer {} {} token {} has |x| (or not finite) beyond {}, the largest per-token "
                          "scale fp16 carries; use raw or zstd for such a cache",
                          plane / 2, plane % 2 == 0 ? "K" : "V", header.token_begin + t, cachegen_core::kHalfMax));
}

Bytes encode_cachegen_on_host(const KVChunk& chunk, int level, uint32_t stream_tokens, bool in_f16) {
  const CachegenEncodePlan plan =
      plan_cachegen_encode(chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens, level, stream_tokens);
  std::vector<uint16_t> half;
  if (in_f16) {
    half.resize(chunk.values.size());
    for (size_t i = 0; i < half.size(); ++i) half[i] = f32_to_f16_bits(chunk.values[i]);
  }
  std::vector<uint8_t> scales(plan.scales_bytes), tables(plan.tables_bytes), symbols(plan.symbols_bytes),
      slots(plan.streams * plan.capacity);
  std::vector<uint32_t> sizes(plan.streams);
  for (auto* v : {&scales, &tables, &symbols, &slots}) poison_scratch(*v);
  poison_scratch(sizes);
  unsigned long long fault = kNoFault;
  const CachegenEncodeLaunch p =
      plan.bind(in_f16 ? static_cast<const void*>(half.data()) : chunk.values.data(), in_f16, plan.planes.data(),
                scales.data(), tables.data(), symbols.data(), slots.data(), sizes.data(), &fault);
  const uint32_t planes = 2 * p.layers, C = p.kv_heads * p.head_dim;
  for (uint32_t pl = 0; pl < planes; ++pl)
    for (uint32_t t = 0; t < p.tokens; ++t) cachegen_encode_scale(p, pl, t);
  if (fault != kNoFault) plan.scale_error(fault);
  for (uint32_t pl = 0; pl < planes; ++pl)
    for (uint32_t c = 0; c < C; ++c) cachegen_encode_channel(p, pl, c);
  for (uint32_t pl = 0; pl < planes; ++pl)
    for (uint32_t c = 0; c < C; ++c)
      for (uint32_t b = 0; b < p.blocks; ++b) cachegen_encode_block(p, pl, c, b);
  const std::vector<uint64_t> off = plan.offsets(sizes);
  Bytes prefix(scales);  // (on the device: copied from the kernels' buffers)
  prefix.insert(prefix.end(), tables.begin(), tables.end());
  return assemble_on_host(plan.layout(off), prefix, off, [&](uint8_t* payload) {
    for (size_t s = 0; s < plan.streams; ++s) cachegen_encode_gather(p, off.data(), s, payload);
  });
}

PaperTables paper_tables(const CacheGenPaperModel& m) {
  PaperTables t;
  t.hash = m.hash;
  const size_t records = size_t(m.shape.layers) * 2 * m.shape.channels();
  t.anchors.resize(records);
  t.step_a.resize(records);
  for (size_t r = 0; r < records; ++r) {
    const auto a = m.anchor_table(r);
    rans::build_cum(a.data(), uint32_t(a.size()), &t.anchors[r]);  // cannot fail: the parser checked it
    t.step_a[r] = m.anchor_step(r);
  }
  t.deltas.resize(kCacheGenLevels);
  t.step_d.resize(kCacheGenLevels);
  t.M.resize(kCacheGenLevels);
  return t;
}

void build_paper_level(const CacheGenPaperModel& m, int level, PaperTables* t) {
  if (!t->deltas[size_t(level)].empty()) return;
  const size_t records = t->anchors.size();
  auto& deltas = t->deltas[size_t(level)];
  auto& step_d = t->step_d[size_t(level)];
  deltas.resize(records);
  step_d.resize(records);
  for (size_t r = 0; r < records; ++r) {
    const uint32_t layer = uint32_t(r / (2 * m.shape.channels()));
    const auto d = m.delta_table(r, level);
    rans::build_packed(d.data(), uint32_t(d.size()), &deltas[r]);  // cannot fail: the parser checked it
    step_d[r] = m.delta_step(r, level, layer);
  }
  auto& M = t->M[size_t(level)];
  M.resize(m.shape.layers);
  for (uint32_t l = 0; l < m.shape.layers; ++l) M[l] = cachegen_paper_bins(level, l, m.shape.layers) / 2 - 1;
}

CachegenPaperPlan plan_cachegen_paper(std::span<const uint8_t> stream, const CacheGenPaperModel* model,
                                      const std::string& model_file, Verify verify) {
  check_size(stream);
  ParsedStream ps;
  std::vector<PaperSubstream> subs;
  try {
    // The CRC deferred to the device; the section table (layers x 2 x heads
    // sizes) and each substream's escape count checked here.
    ps = parse_stream(stream, CodecId::kCacheGen, verify == Verify::kDevice ? Crc::kDeferred : Crc::kCheck);
    check_cachegen_paper_stream(ps, model, model_file);
    const KVShape& s = ps.header.shape;
    const uint64_t substreams = uint64_t(s.layers) * 2 * s.kv_heads;
    const size_t n = size_t(ps.header.tokens) * s.head_dim;
    subs.resize(substreams);
    for (size_t index = 0; index < substreams; ++index) {
      const CachegenPaperSubstream sub = parse_cachegen_paper_substream(ps.sections[index], index, n);
      subs[index] = {offset_in(stream, sub.escapes.data()), sub.escape_count, offset_in(stream, sub.coded.data()),
                     uint32_t(sub.coded.size())};
    }
  } catch (const CorruptStream&) {
    if (verify == Verify::kDevice) (void)plan_cachegen_paper(stream, model, model_file, Verify::kHost);  // the CPU's message
    throw;
  }
  const StreamHeader& hd = ps.header;
  const uint64_t substreams = subs.size();
  CachegenPaperPlan plan;
  if (verify == Verify::kDevice) plan.verify = crc_only(stream);
  plan.header = hd;
  plan.substreams = uint32_t(substreams);
  Packer meta;
  meta.add(subs);
  plan.meta = meta.take();
  return plan;
}

CachegenPaperLaunch CachegenPaperPlan::bind(const uint8_t* stream, const uint8_t* meta_copy,
                                            const rans::CumTable* anchors, const float* step_a,
                                            const rans::BasicPackedTable<64>* deltas, const float* step_d,
                                            const int32_t* M, PaperChannel* channels, void* out, uint8_t out_type,
                                            unsigned long long* fault) const {
  CachegenPaperLaunch p{};
  p.stream = stream;
  p.substreams = at<PaperSubstream>(meta_copy, 0);
  p.substream_count = substreams;
  p.anchors = anchors;
  p.step_a = step_a;
  p.deltas = deltas;
  p.step_d = step_d;
  p.M = M;
  p.channels = channels;
  p.layers = header.shape.layers;
  p.kv_heads = header.shape.kv_heads;
  p.head_dim = header.shape.head_dim;
  p.tokens = header.tokens;
  p.out = out;
  p.out_type = out_type;
  p.fault = fault;
  return p;
}

std::shared_ptr<const kvs_detail::KvsCodec> make_kvs_parser() {
  return std::make_shared<const kvs_detail::KvsCodec>(10000.0, kvs_detail::KvsRopeTables{}, std::vector<float>{}, true,
                                                      true, 0.12, std::vector<float>{}, true);
}

std::vector<KvsGauss> kvs_gauss(const kvs_detail::KvsCodec& codec) {
  const auto& tables = codec.gauss_tables();
  std::vector<KvsGauss> g(tables.size());
  for (size_t k = 0; k < tables.size(); ++k) {
    g[k].table = tables[k].table;
    g[k].index = tables[k].index;
    std::memcpy(g[k].offset, tables[k].offset, sizeof(g[k].offset));
    g[k].range = tables[k].range;
  }
  return g;
}

namespace {

// KvsCodec::parse; with Verify::kDevice, of the header (no CRC) and the three
// sections the host needs (parameters, row references, channel models:
// where they lie from the sizes before them), the rest of the size table and
// the pieces' sections left to the device (the walk, kvs_locate). On a
// problem, the full parse for the CPU decoder's message.
kvs_detail::KvsLayout parse_kvs(std::span<const uint8_t> stream, const kvs_detail::KvsCodec& codec, Verify verify,
                                const std::function<uint32_t*(const kvs_detail::KvsLayout&)>& group_channels_to) {
  if (verify == Verify::kHost) return codec.parse(parse_stream(stream, CodecId::kKvs), true, group_channels_to);
  try {
    ParsedStream ps;
    uint32_t count = 0;
    ps.header = parse_stream_header(stream, CodecId::kKvs, &count, Crc::kDeferred);
    ps.sections.resize(count);
    const size_t body = stream.size() - 4;
    size_t offset = kHeaderBytes + 4ull * count;
    for (uint32_t i = 0; i < std::min<uint32_t>(count, 3); ++i) {
      const uint32_t size = le32(stream.data() + kHeaderBytes + 4ull * i);
      if (size > body - offset) throw CorruptStream("a section runs past the end");  // replaced by the full parse's
      ps.sections[i] = stream.subspan(offset, size);
      offset += size;
    }
    return codec.parse(ps, false, group_channels_to);
  } catch (const CorruptStream&) {
    (void)codec.parse(stream);
    throw;
  }
}

}  // namespace

KvsPlan plan_kvs(std::span<const uint8_t> stream, const kvs_detail::KvsCodec& codec, Verify verify) {
  using namespace kvs_detail;
  check_size(stream);
  KvsPlan plan;
  // The meta buffer's arrays, sized once parse knows their sizes and written
  // in place (the group channels by parse itself).
  Layout meta;
  const KvsLayout layout = parse_kvs(stream, codec, verify, [&](const KvsLayout& sized) {
    size_t literal_count = 0, source_count = 0;
    for (const auto& l : sized.literal_lists) literal_count += l.size();
    for (const auto& l : sized.source_lists) source_count += l.size();
    const KVShape& sh = sized.header.shape;
    const size_t planes = 2 * size_t(sh.layers);
    plan.pieces_at = meta.place<KvsPieceDesc>(sized.pieces.size());
    plan.group_offset_at = meta.place<uint32_t>(kTables + 1);
    plan.group_channels_at = meta.place<uint32_t>(sized.group_offset[kTables]);
    plan.channels_at = meta.place<KvsChannel>(planes * sh.channels());
    plan.heads_at = meta.place<KvsHead>(planes * sh.kv_heads);
    plan.literals_at = meta.place<uint32_t>(literal_count);
    plan.sources_at = meta.place<uint32_t>(source_count);
    plan.steps_at = meta.place<float>(sized.steps.size());
    plan.layer_rope_at = meta.place<uint8_t>(sh.layers);
    meta.allocate();
    return meta.at<uint32_t>(plan.group_channels_at);
  });
  const StreamHeader& hd = layout.header;
  const KVShape& sh = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(sh.channels()), H = sh.kv_heads;
  const size_t planes = 2 * size_t(sh.layers), channels = planes * C, heads = planes * H;
  plan.header = hd;
  if (verify == Verify::kDevice) {
    plan.verify = crc_only(stream);
    plan.verify.walk = true;  // and kvs_locate: the pieces' places
    plan.verify.sections = uint32_t(hd_sections(stream));
    plan.verify.min_size_from = plan.verify.sections;  // no minimum size
  }

  // Row lists: concatenated, each head pointing at its lists (or none).
  std::map<const uint32_t*, uint32_t> literal_at, source_at;
  {
    uint32_t* out = meta.at<uint32_t>(plan.literals_at);
    uint32_t n = 0;
    for (const auto& l : layout.literal_lists) {
      literal_at[l.data()] = n;
      if (!l.empty()) std::memcpy(out + n, l.data(), sizeof(uint32_t) * l.size());
      n += uint32_t(l.size());
    }
  }
  {
    uint32_t* out = meta.at<uint32_t>(plan.sources_at);
    uint32_t n = 0;
    for (const auto& l : layout.source_lists) {
      source_at[l.data()] = n;
      if (!l.empty()) std::memcpy(out + n, l.data(), sizeof(uint32_t) * l.size());
      n += uint32_t(l.size());
    }
  }
  KvsHead* head_rows = meta.at<KvsHead>(plan.heads_at);
  for (size_t ph = 0; ph < heads; ++ph) {
    const HeadRows& r = layout.rows[ph];
    head_rows[ph] = {r.literal ? literal_at.at(r.literal) : kNone, r.literals, r.source ? source_at.at(r.source) : kNone};
  }
  KvsChannel* models = meta.at<KvsChannel>(plan.channels_at);
  std::array<uint32_t, 256> raw_bits;  // split_spread(j).raw_bits (parse checked every spread is 0..255)
  for (uint32_t j = 0; j < 256; ++j) raw_bits[j] = split_spread(j).raw_bits;
  for (size_t p = 0; p < planes; ++p) {
    const int32_t *spread = layout.spreads(p), *centre = layout.centres(p);
    for (uint32_t c = 0; c < C; ++c) models[p * C + c] = {centre[c], raw_bits[uint8_t(spread[c])]};
  }
  std::memcpy(meta.at<uint32_t>(plan.group_offset_at), layout.group_offset.data(), sizeof(uint32_t) * (kTables + 1));
  KvsPieceDesc* pieces = meta.at<KvsPieceDesc>(plan.pieces_at);
  const bool located = verify == Verify::kHost;  // else kvs_locate fills in the places on the device
  for (size_t k = 0; k < layout.pieces.size(); ++k) {
    const KvsPiece& pc = layout.pieces[k];
    pieces[k] = {pc.table,
                 pc.n,
                 uint32_t(pc.section),
                 located ? offset_in(stream, pc.rans.data()) : 0,
                 uint32_t(pc.rans.size()),
                 located ? offset_in(stream, pc.extras.data()) : 0,
                 uint32_t(pc.extras.size()),
                 uint32_t(pc.first_channel),
                 pc.first_literal};
  }
  if (!layout.steps.empty())
    std::memcpy(meta.at<float>(plan.steps_at), layout.steps.data(), sizeof(float) * layout.steps.size());
  uint8_t* meta_layer_rope = meta.at<uint8_t>(plan.layer_rope_at);
  if (sh.layers) std::memcpy(meta_layer_rope, layout.rope.layer_table.data(), sh.layers);
  plan.meta = meta.take();
  plan.piece_count = uint32_t(layout.pieces.size());
  plan.centroid = layout.centroid;
  plan.ropes = layout.rope.tables;
  for (size_t i = 0; i < plan.ropes.size(); ++i)
    if (!layout.rope.used(i)) plan.ropes[i].clear();  // read by no layer: no table on the device
  plan.stride = channel_stride(T);
  plan.symbols_bytes = layout.pieces.size() * size_t(kKvsPieceSymbols);
  plan.tmp_bytes = channels * plan.stride * sizeof(float);
  return plan;
}

bool KvsRope::serves(const std::vector<double>& freqs, const StreamHeader& hd) const {
  if (hd.tokens == 0) return true;
  return inv_freq == freqs && head_dim == hd.shape.head_dim && hd.token_begin >= first &&
         hd.token_begin - first <= positions && hd.tokens <= positions - (hd.token_begin - first);
}

const float* KvsRope::at(const StreamHeader& hd, const float* base) const {
  if (hd.tokens == 0) return nullptr;
  return base + (hd.token_begin - first) * (head_dim / 2) * 2;
}

bool KvsRope::extends(const KvsRope& previous) const {
  return inv_freq == previous.inv_freq && head_dim == previous.head_dim && first == previous.first &&
         positions >= previous.positions;
}

namespace {

// The table of frequencies `inv_freq` for head_dim D, positions [first,
// first + positions): rope_table's values (those the CPU decoder uses),
// those of a `previous` table it extends copied, the rest computed.
KvsRope rope_of(const std::vector<double>& inv_freq, uint32_t D, uint64_t first, uint64_t positions,
                const KvsRope* previous) {
  KvsRope r;
  r.inv_freq = inv_freq;
  r.head_dim = D;
  r.first = first;
  r.positions = positions;
  const size_t half = r.head_dim / 2;
  const uint64_t kept = previous && r.extends(*previous) ? previous->positions : 0;
  const std::vector<std::array<float, 2>> cs =
      kvs_detail::rope_table(r.inv_freq, first + kept, uint32_t(positions - kept));
  r.cs.resize(2 * size_t(positions) * half);
  if (kept) std::memcpy(r.cs.data(), previous->cs.data(), sizeof(float) * 2 * size_t(kept) * half);
  float* out = r.cs.data() + 2 * size_t(kept) * half;
  for (size_t i = 0; i < cs.size(); ++i) out[2 * i] = cs[i][0], out[2 * i + 1] = cs[i][1];
  return r;
}

}  // namespace

KvsRope kvs_rope(const std::vector<double>& inv_freq, const StreamHeader& hd, const KvsRope* previous) {
  const uint32_t D = hd.shape.head_dim, half = D / 2;
  const uint64_t limit = kKvsRopeMaxBytes / (2 * sizeof(float) * std::max<uint32_t>(half, 1));  // positions
  if (hd.token_begin > limit || hd.tokens > limit - hd.token_begin)
    return rope_of(inv_freq, D, hd.token_begin, hd.tokens, previous);
  const uint64_t end = hd.token_begin + hd.tokens;
  uint64_t n = (end + kKvsRopeStep - 1) / kKvsRopeStep * kKvsRopeStep;
  if (previous && previous->inv_freq == inv_freq && previous->head_dim == D && previous->first == 0)
    n = std::max(n, 2 * previous->positions);
  return rope_of(inv_freq, D, 0, std::min(limit, n), previous);
}

KvsLaunch KvsPlan::bind(const uint8_t* stream, const uint8_t* m, const KvsGauss* gauss,
                        std::span<const float* const> rope_rows, uint8_t* symbols, float* tmp, void* out,
                        uint8_t out_type, unsigned long long* fault) const {
  KvsLaunch p{};
  p.stream = stream;
  p.gauss = gauss;
  p.pieces = at<KvsPieceDesc>(m, pieces_at);
  p.piece_count = piece_count;
  p.group_offset = at<uint32_t>(m, group_offset_at);
  p.group_channels = at<uint32_t>(m, group_channels_at);
  p.channels = at<KvsChannel>(m, channels_at);
  p.heads = at<KvsHead>(m, heads_at);
  p.literal_tokens = at<uint32_t>(m, literals_at);
  p.sources = at<uint32_t>(m, sources_at);
  p.steps = at<float>(m, steps_at);
  if (rope_rows.size() != ropes.size() || ropes.size() > kvs_core::kMaxRopeTables)
    throw Error(fmt::format("kvs GPU decoder: {} RoPE rows for {} tables", rope_rows.size(), ropes.size()));
  for (size_t i = 0; i < ropes.size(); ++i) p.rope[i] = ropes[i].empty() ? nullptr : rope_rows[i];
  p.layer_rope = at<uint8_t>(m, layer_rope_at);
  p.symbols = symbols;
  p.tmp = tmp;
  p.stride = stride;
  p.layers = header.shape.layers;
  p.kv_heads = header.shape.kv_heads;
  p.head_dim = header.shape.head_dim;
  p.tokens = header.tokens;
  p.centroid = centroid;
  p.out = out;
  p.out_type = out_type;
  p.fault = fault;
  return p;
}

unsigned long long run_on_host(const CachegenPlan& plan, std::span<const uint8_t> stream, void* out, uint8_t out_type) {
  std::vector<uint32_t> offsets;
  unsigned long long fault = run_verify_on_host(plan.verify, stream, &offsets);
  if (fault != kNoFault) return fault;  // the kernels do nothing after a verification fault
  const CachegenCodeLaunch p = plan.verify.walk
                                   ? plan.bind(stream.data(), plan.meta.data(), offsets.data(), out, out_type, &fault)
                                   : plan.bind(stream.data(), plan.meta.data(), out, out_type, &fault);
  auto table = std::make_unique<rans::Table>();
  auto index = std::make_unique<rans::SymbolIndex>();
  for (uint32_t plane = 0; plane < 2 * p.layers; ++plane)
    for (uint32_t c = 0; c < p.channels; ++c) {
      // The kernel's tables lie in shared memory, not zeroed: poisoned here.
      std::memset(static_cast<void*>(table.get()), 0xff, sizeof(rans::Table));
      std::memset(static_cast<void*>(index.get()), 0xff, sizeof(rans::SymbolIndex));
      if (!cachegen_table(p, plane, c, table.get(), index.get())) continue;
      for (uint32_t b = 0; b < p.blocks; ++b) cachegen_block(p, plane, c, b, *table, *index);
    }
  return fault;
}

unsigned long long run_on_host(const CachegenPaperPlan& plan, std::span<const uint8_t> stream,
                               const CacheGenPaperModel& model, void* out, uint8_t out_type) {
  unsigned long long fault = run_verify_on_host(plan.verify, stream, nullptr);
  if (fault != kNoFault) return fault;
  PaperTables t = paper_tables(model);
  const size_t level = plan.header.level;
  build_paper_level(model, int(level), &t);
  std::vector<PaperChannel> channels(plan.channels_bytes() / sizeof(PaperChannel));
  poison_scratch(channels);
  const CachegenPaperLaunch p =
      plan.bind(stream.data(), plan.meta.data(), t.anchors.data(), t.step_a.data(), t.deltas[level].data(),
                t.step_d[level].data(), t.M[level].data(), channels.data(), out, out_type, &fault);
  for (uint32_t i = 0; i < p.substream_count; ++i) cachegen_paper_substream(p, i);
  return fault;
}

unsigned long long run_on_host(const KvsPlan& plan, std::span<const uint8_t> stream, const kvs_detail::KvsCodec& codec,
                               void* out, uint8_t out_type, std::vector<KvsRope>* ropes) {
  std::vector<uint8_t> meta = plan.meta;  // the device's copy (kvs_locate writes into it)
  unsigned long long fault = run_verify_on_host(plan, stream, &meta);
  if (fault != kNoFault) return fault;
  const std::vector<KvsGauss> gauss = kvs_gauss(codec);
  std::vector<uint8_t> symbols(plan.symbols_bytes);
  std::vector<float> tmp(plan.tmp_bytes / sizeof(float));
  poison_scratch(symbols);
  poison_scratch(tmp);
  // As cuda::Decoder: per set of frequencies the table kept, replaced when
  // it does not serve the chunk; without kept tables, the chunk's tokens' alone.
  std::vector<KvsRope> own;
  std::vector<const float*> rows(plan.ropes.size(), nullptr);
  for (size_t i = 0; i < plan.ropes.size(); ++i) {
    const std::vector<double>& freqs = plan.ropes[i];
    if (freqs.empty()) continue;
    const StreamHeader& hd = plan.header;
    KvsRope* table = nullptr;
    if (ropes) {
      for (KvsRope& r : *ropes)
        if (r.inv_freq == freqs && r.head_dim == hd.shape.head_dim) table = &r;
      if (!table) table = &ropes->emplace_back();
      if (!table->serves(freqs, hd)) *table = kvs_rope(freqs, hd, table);
    } else {
      own.reserve(plan.ropes.size());
      table = &own.emplace_back(rope_of(freqs, hd.shape.head_dim, hd.token_begin, hd.tokens, nullptr));
    }
    rows[i] = table->at(hd, table->cs.data());
  }
  const KvsLaunch p = plan.bind(stream.data(), meta.data(), gauss.data(), rows, symbols.data(), tmp.data(), out,
                                out_type, &fault);
  for (uint32_t k = 0; k < p.piece_count; ++k) kvs_piece(p, k);
  if (fault != kNoFault) return fault;  // the GPU's values kernel would read unwritten scratch
  // Per tile, as its block runs across the barrier: every thread's load,
  // then every thread's store; the shared tile poisoned for each.
  std::vector<float> shared(kKvsTileShared);
  const size_t tiles = kvs_tiles(p);
  for (size_t tile = 0; tile < tiles; ++tile) {
    poison_scratch(shared);
    for (uint32_t j = 0; j < kKvsTileThreads; ++j) kvs_values_tile_load(p, tile, j, shared.data());
    for (uint32_t j = 0; j < kKvsTileThreads; ++j) kvs_values_tile_store(p, tile, j, shared.data());
  }
  return fault;
}

}  // namespace kvs::codec::cuda::detail
