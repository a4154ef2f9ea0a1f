// libFuzzer target: the torch-free checkpoint readers: a model's config.json
// (llm/config.h parse_config) and a safetensors file (SafetensorsFile::open,
// read_kv_safetensors) on arbitrary bytes. Contract: a result or a kvs::Error
// naming the file; anything else is a finding. The safetensors reader maps a
// file, so each input is written to a temporary file first. Seeds:
// tests/apps/data, tests/llm/data, models/default/config.json (.ci/run).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "base/error.h"
#include "llm/config.h"
#include "llm/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/kvstream-safetensors-fuzz-" + std::to_string(::getpid()) + ".safetensors";
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    (void)kvs::llm::parse_config(bytes, "fuzz/config.json");
  } catch (const kvs::Error&) {
  }
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  const bool ok = std::fwrite(data, 1, size, f) == size;
  std::fclose(f);
  if (!ok) return 0;
  try {
    const auto file = kvs::llm::SafetensorsFile::open(path);
    for (const auto& [name, t] : file->tensors())
      if (t.bytes != t.elements() * kvs::llm::element_bytes(t.dtype)) __builtin_trap();
  } catch (const kvs::Error&) {
  }
  try {
    (void)kvs::llm::read_kv_safetensors(path);
  } catch (const kvs::Error&) {
  }
  return 0;
}
