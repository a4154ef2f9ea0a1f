// The Codec seam: encode a KV chunk at a level into a self-describing
// bitstream, decode it back.
//
// Levels are numbered 0..levels()-1; level 0 is the finest (most bytes, least
// error) and each higher level is coarser. Every bitstream carries magic,
// format version, codec id, level, dtype, KV shape, token range and a checksum
// (codec/bitstream.h); decode() of a truncated, corrupt or hostile stream
// throws CorruptStream and never reads out of bounds or allocates more than
// the header's (bounded) shape allows.
//
// Some codecs use static entropy models learned offline from sample chunks of
// one model's KV caches (a "codec model file"); their bitstreams name that
// file by hash, and decode() refuses (CorruptStream) a stream whose hash
// differs from its model file's, or that names a model when it has none.
//
// A new codec is one file with a class deriving from Codec, one line in the
// registry (codec/registry.cpp), and a test.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/kv.h"

namespace kvs::codec {

using Bytes = std::vector<uint8_t>;

// A bitstream that cannot be decoded: what is wrong and where (byte offset).
class CorruptStream : public kvs::Error {
 public:
  using kvs::Error::Error;
};

// Codec parameters as given on the command line or in a profile request:
// key -> value text, e.g. {"scheme", "paper"}, {"bins", "..."}.
using CodecParams = std::map<std::string, std::string>;

struct CodecOptions {
  CodecParams params;
  std::string model_file;  // codec model file (static entropy tables); empty if none
  // Parameters for one codec only, by registry name, over `params` (e.g. kvs's
  // step weights for the profiled model while other codecs are profiled too).
  std::map<std::string, CodecParams> codec_params = {};
};

class Codec {
 public:
  virtual ~Codec() = default;

  virtual std::string name() const = 0;     // registry name, e.g. "cachegen"
  virtual std::string params() const = 0;  // canonical parameters, for profiles and logs
  virtual int levels() const = 0;
  virtual std::string level_name(int level) const { return "L" + std::to_string(level); }

  // Throws kvs::Error (not CorruptStream) for a chunk the format cannot carry,
  // e.g. values beyond the range of a scale stored as fp16; never writes a
  // stream that decode() would reject. The checks every format shares (a
  // chunk of no tokens, a shape beyond the container's limits:
  // check_writable, codec/bitstream.h) come first, then encode_chunk().
  Bytes encode(const KVChunk& chunk, int level) const;
  virtual KVChunk decode(std::span<const uint8_t> stream) const = 0;

  // decode() into a caller-owned chunk, for callers that decode repeatedly:
  // `out` ends up equal to decode(stream), but its storage is reused, so a
  // codec that writes every element itself (cachegen's paper scheme) skips
  // the allocation and zero-filling of a new chunk when `out` already holds
  // as many values. The default calls decode() and moves the result. Throws
  // as decode() does, with the same checks before anything is written; after
  // a throw `out`'s shape and values are unspecified (but valid).
  virtual void decode_into(std::span<const uint8_t> stream, KVChunk& out) const { out = decode(stream); }

  // Codecs with static entropy models: learn one from sample chunks and return
  // the codec model file's contents (to be written to disk and passed back as
  // CodecOptions::model_file). Others return an empty string.
  virtual bool needs_model() const { return false; }
  virtual std::string train_model(std::span<const KVChunk> samples) const { return {}; }

  // Each layer's share of the stream's bytes, summing to 1: what a server
  // that sends only some layers of the chunk sends (a simulated target with
  // sliding-window layers, docs/simulator.md). Bytes that belong to no one
  // layer (header, CRC, sections all layers share) are spread evenly. The
  // default spreads the whole stream evenly; cachegen (sections per layer)
  // and kvs (substreams split by their layers' symbols) override it. Throws CorruptStream for a stream of
  // another codec or one parse_stream refuses.
  virtual std::vector<double> layer_shares(std::span<const uint8_t> stream) const;

 protected:
  // The codec's own encoder, for a chunk the container can carry.
  virtual Bytes encode_chunk(const KVChunk& chunk, int level) const = 0;
};

// Layer shares (Codec::layer_shares) from the bytes known to belong to each
// layer; the rest of `stream_bytes` is spread evenly.
std::vector<double> layer_shares_from_bytes(uint64_t stream_bytes, std::vector<double> layer_bytes);

// Creates the named codec; throws kvs::Error naming the codec and listing the
// registered ones when unknown, or naming the parameter when one is bad.
std::unique_ptr<Codec> make_codec(const std::string& name, const CodecOptions& options = {});
std::vector<std::string> codec_names();

}  // namespace kvs::codec
