#include "llm/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"

namespace kvs::llm {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference implementation

struct DTypeName {
  STDType dtype;
  const char* name;
  size_t bytes;
};
constexpr DTypeName kDTypes[] = {
    {STDType::kF32, "F32", 4}, {STDType::kF16, "F16", 2}, {STDType::kBF16, "BF16", 2},
    {STDType::kF64, "F64", 8}, {STDType::kI64, "I64", 8}, {STDType::kI32, "I32", 4},
    {STDType::kI16, "I16", 2}, {STDType::kI8, "I8", 1},   {STDType::kU8, "U8", 1},
    {STDType::kBool, "BOOL", 1},
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(fmt::format("{}: {}", path, what));
}

}  // namespace

const char* to_string(STDType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

size_t element_bytes(STDType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.bytes;
  return 0;
}

bool parse_st_dtype(const std::string& name, STDType* out) {
  for (const auto& d : kDTypes) {
    if (name == d.name) {
      *out = d.dtype;
      return true;
    }
  }
  return false;
}

uint64_t TensorInfo::elements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, fmt::format("cannot open: {}", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path, "cannot stat");
  }
  const uint64_t file_bytes = uint64_t(st.st_size);
  if (file_bytes < 8) {
    ::close(fd);
    fail(path, fmt::format("truncated: {} bytes, a safetensors file needs at least 8", file_bytes));
  }
  // Private, writable mapping: pages are copy-on-write, so tensors built over
  // it may be modified in place (training) without touching the file.
  void* map = ::mmap(nullptr, file_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(path, fmt::format("cannot mmap: {}", std::strerror(errno)));
  f->map_ = map;
  f->map_bytes_ = file_bytes;
  const auto* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];
  if (header_bytes > kMaxHeaderBytes)
    fail(path, fmt::format("header length {} is larger than the {} allowed", header_bytes, kMaxHeaderBytes));
  if (header_bytes > file_bytes - 8)
    fail(path, fmt::format("header length {} runs past the end of the file ({} bytes)", header_bytes, file_bytes));
  const uint8_t* data = bytes + 8 + header_bytes;
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_bytes);
  } catch (const nlohmann::json::exception& e) {
    fail(path, fmt::format("header is not valid JSON: {}", e.what()));
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<const std::string*> range_names;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(path, fmt::format("__metadata__ value '{}' is not a string", k));
        f->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string& tensor = name;  // clang 14 (the fuzz build) does not capture structured bindings
    auto bad = [&](const std::string& what) { fail(path, fmt::format("tensor '{}': {}", printable(tensor), what)); };
    if (!entry.is_object()) bad("entry is not an object");
    TensorInfo info;
    info.name = name;
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) bad("missing string 'dtype'");
    if (!parse_st_dtype(entry["dtype"].get<std::string>(), &info.dtype))
      bad(fmt::format("unsupported dtype '{}'", entry["dtype"].get<std::string>()));
    if (!entry.contains("shape") || !entry["shape"].is_array()) bad("missing array 'shape'");
    uint64_t elements = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) bad("shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || (v != 0 && elements > (1ull << 50) / v)) bad("shape is too large");
      elements *= v;
      info.shape.push_back(int64_t(v));
    }
    const auto& offs = entry.contains("data_offsets") ? entry["data_offsets"] : nlohmann::json();
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      bad("'data_offsets' must be [begin, end]");
    const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (end < begin) bad(fmt::format("data_offsets [{}, {}] end before begin", begin, end));
    if (end > data_bytes)
      bad(fmt::format("data_offsets [{}, {}] run past the end of the data ({} bytes)", begin, end, data_bytes));
    const uint64_t expect = elements * element_bytes(info.dtype);
    if (end - begin != expect)
      bad(fmt::format("shape × {} needs {} bytes but data_offsets [{}, {}] hold {}", to_string(info.dtype),
                      expect, begin, end, end - begin));
    info.data = data + begin;
    info.bytes = end - begin;
    ranges.emplace_back(begin, end);
    auto [it, inserted] = f->tensors_.emplace(name, std::move(info));
    range_names.push_back(&it->first);
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  size_t furthest = order.size();  // the non-empty range reaching furthest so far
  for (size_t i : order) {
    const auto& cur = ranges[i];
    if (cur.second == cur.first) continue;  // empty tensors occupy no bytes
    if (furthest != order.size() && cur.first < ranges[furthest].second)
      fail(path, fmt::format("tensor '{}': data_offsets [{}, {}] overlap tensor '{}' [{}, {}]", *range_names[i],
                             cur.first, cur.second, *range_names[furthest], ranges[furthest].first,
                             ranges[furthest].second));
    if (furthest == order.size() || cur.second > ranges[furthest].second) furthest = i;
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, fmt::format("missing tensor '{}'", name));
  return it->second;
}

std::string encode_safetensors(std::span<const TensorView> tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t elements = 1;
    for (int64_t d : t.shape) elements *= uint64_t(d);
    if (elements * element_bytes(t.dtype) != t.bytes)
      throw Error(fmt::format("safetensors: tensor '{}' has {} bytes, its shape needs {}", t.name, t.bytes,
                              elements * element_bytes(t.dtype)));
    header[t.name] = {{"dtype", to_string(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
    offset += t.bytes;
  }
  std::string json = header.dump();
  while (json.size() % 8 != 0) json.push_back(' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  out += json;
  for (const auto& t : tensors) out.append(static_cast<const char*>(t.data), t.bytes);
  return out;
}

void write_safetensors(const std::string& path, std::span<const TensorView> tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, encode_safetensors(tensors, metadata));
}

// ---- KV caches ---------------------------------------------------------------

void write_kv_safetensors(const std::string& path, const codec::KVChunk& chunk,
                          const std::map<std::string, std::string>& extra_metadata) {
  const auto& s = chunk.shape;
  const uint64_t plane = chunk.plane_size();
  const size_t eb = codec::dtype_bytes(chunk.dtype);
  std::vector<uint8_t> buffer(chunk.values.size() * eb);
  for (size_t i = 0; i < chunk.values.size(); ++i) {
    const float x = chunk.values[i];
    if (chunk.dtype == codec::DType::kF32) {
      std::memcpy(&buffer[i * 4], &x, 4);
    } else {
      const uint16_t h = chunk.dtype == codec::DType::kF16 ? codec::float_to_half_bits(x) : codec::float_to_bf16_bits(x);
      buffer[i * 2] = uint8_t(h & 0xff);
      buffer[i * 2 + 1] = uint8_t(h >> 8);
    }
  }
  const STDType st = chunk.dtype == codec::DType::kF32 ? STDType::kF32
                     : chunk.dtype == codec::DType::kF16 ? STDType::kF16
                                                          : STDType::kBF16;
  std::vector<TensorView> views;
  for (uint32_t l = 0; l < s.layers; ++l) {
    for (int k = 0; k < 2; ++k) {
      TensorView v;
      v.name = fmt::format("layers.{}.{}", l, k == 0 ? "key" : "value");
      v.dtype = st;
      v.shape = {int64_t(s.kv_heads), int64_t(chunk.tokens), int64_t(s.head_dim)};
      v.data = buffer.data() + chunk.plane_offset(l, codec::Kind(k)) * eb;
      v.bytes = plane * eb;
      views.push_back(std::move(v));
    }
  }
  std::map<std::string, std::string> meta = extra_metadata;
  meta["format"] = "kvstream-kv";
  meta["layers"] = std::to_string(s.layers);
  meta["kv_heads"] = std::to_string(s.kv_heads);
  meta["head_dim"] = std::to_string(s.head_dim);
  meta["tokens"] = std::to_string(chunk.tokens);
  meta["token_begin"] = std::to_string(chunk.token_begin);
  meta["dtype"] = codec::to_string(chunk.dtype);
  write_safetensors(path, views, meta);
}

codec::KVChunk read_kv_safetensors(const std::string& path) {
  auto file = SafetensorsFile::open(path);
  uint32_t layers = 0;
  while (file->contains(fmt::format("layers.{}.key", layers))) ++layers;
  if (layers == 0) fail(path, "missing tensor 'layers.0.key' (not a KV cache file)");
  for (const auto& [name, info] : file->tensors()) {
    if (name.rfind("layers.", 0) != 0) continue;
    const auto dot = name.find('.', 7);
    const auto idx = name.substr(7, dot == std::string::npos ? std::string::npos : dot - 7);
    if (idx.empty() || idx.size() > 9 || idx.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(idx) >= layers)
      fail(path, fmt::format("tensor '{}' is not part of a contiguous KV cache of {} layers", name, layers));
  }
  const TensorInfo& first = file->at("layers.0.key");
  if (first.shape.size() != 3) fail(path, "tensor 'layers.0.key': expected shape [kv_heads, tokens, head_dim]");
  codec::DType dtype;
  switch (first.dtype) {
    case STDType::kF32: dtype = codec::DType::kF32; break;
    case STDType::kF16: dtype = codec::DType::kF16; break;
    case STDType::kBF16: dtype = codec::DType::kBF16; break;
    default: fail(path, fmt::format("tensor 'layers.0.key': dtype {} is not F32, F16 or BF16", to_string(first.dtype)));
  }
  codec::KVShape shape{layers, uint32_t(first.shape[0]), uint32_t(first.shape[2])};
  uint64_t token_begin = 0;
  if (auto it = file->metadata().find("token_begin"); it != file->metadata().end()) {
    try {
      token_begin = std::stoull(it->second);
    } catch (const std::exception&) {
      fail(path, fmt::format("__metadata__ 'token_begin' is not a number: '{}'", it->second));
    }
  }
  codec::KVChunk chunk(shape, dtype, token_begin, uint32_t(first.shape[1]));
  for (uint32_t l = 0; l < layers; ++l) {
    for (int k = 0; k < 2; ++k) {
      const std::string name = fmt::format("layers.{}.{}", l, k == 0 ? "key" : "value");
      const TensorInfo& t = file->at(name);
      if (t.dtype != first.dtype)
        fail(path, fmt::format("tensor '{}': dtype {} differs from layers.0.key's {}", name, to_string(t.dtype),
                               to_string(first.dtype)));
      if (t.shape != first.shape)
        fail(path, fmt::format("tensor '{}': shape differs from layers.0.key's [{}, {}, {}]", name, first.shape[0],
                               first.shape[1], first.shape[2]));
      auto out = chunk.plane(l, codec::Kind(k));
      for (size_t i = 0; i < out.size(); ++i) {
        if (dtype == codec::DType::kF32) {
          std::memcpy(&out[i], t.data + 4 * i, 4);
        } else {
          const uint16_t h = uint16_t(t.data[2 * i] | (t.data[2 * i + 1] << 8));
          out[i] = dtype == codec::DType::kF16 ? codec::half_bits_to_float(h) : codec::bf16_bits_to_float(h);
        }
      }
    }
  }
  return chunk;
}

}  // namespace kvs::llm
