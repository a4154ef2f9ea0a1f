// A torch-free reader and writer for the safetensors format (HF): an 8-byte
// little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets} (offsets relative to the byte buffer that
// follows the header) plus an optional "__metadata__" string map, then the
// tensor bytes. Files are memory-mapped; every range is validated before use,
// so a corrupt file gives a kvs::Error naming the file and tensor, never an
// out-of-bounds read. Built as `kvstream_safetensors` (no libtorch), so the
// codec CLI can read KV caches written by any framework.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "codec/kv.h"

namespace kvs::llm {

// Safetensors element types this project reads and writes.
enum class STDType : uint8_t { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };
const char* to_string(STDType dtype);            // "F32", "BF16", ...
size_t element_bytes(STDType dtype);
bool parse_st_dtype(const std::string& name, STDType* out);  // false when unknown

struct TensorInfo {
  std::string name;
  STDType dtype = STDType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping; valid while the file is open
  uint64_t bytes = 0;
  uint64_t elements() const;
};

// A read-only (copy-on-write) memory mapping of one safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`; throws kvs::Error naming the file (and tensor).
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws kvs::Error "<file>: missing tensor '<name>'" when absent.
  const TensorInfo& at(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: `data` must hold elements(shape) * element_bytes(dtype)
// bytes (little-endian, row-major).
struct TensorView {
  std::string name;
  STDType dtype = STDType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t bytes = 0;
};

// Serializes tensors (in the given order) to the safetensors byte format; the
// header is padded with spaces to a multiple of 8 bytes so data stay aligned.
std::string encode_safetensors(std::span<const TensorView> tensors,
                               const std::map<std::string, std::string>& metadata = {});
// encode_safetensors written atomically to `path`.
void write_safetensors(const std::string& path, std::span<const TensorView> tensors,
                       const std::map<std::string, std::string>& metadata = {});

// ---- KV caches as safetensors --------------------------------------------
// Tensors "layers.{i}.key" and "layers.{i}.value" shaped [kv_heads, tokens,
// head_dim] (keys after RoPE), in the dtype the cache was produced in;
// __metadata__ carries "format": "kvstream-kv", layers, kv_heads, head_dim,
// tokens, token_begin and dtype.

// Writes `chunk` (values rounded to chunk.dtype) atomically to `path`.
void write_kv_safetensors(const std::string& path, const codec::KVChunk& chunk,
                          const std::map<std::string, std::string>& extra_metadata = {});
// Reads a KV cache written by write_kv_safetensors or by any framework that
// follows the tensor naming above (metadata optional: shapes are inferred
// from the tensors and must agree across layers). Throws kvs::Error.
codec::KVChunk read_kv_safetensors(const std::string& path);

}  // namespace kvs::llm
