// Tiny models for the llm tests.
#pragma once

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "llm/config.h"

namespace kvs::llm::testing {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 256;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  return c;
}

// Random token ids in [0, vocab).
inline std::vector<int64_t> some_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> out;
  uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out.push_back(int64_t((x >> 33) % uint64_t(vocab)));
  }
  return out;
}

// A fresh folder under the temp dir, removed by the destructor.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("kvs_llm_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string str() const { return path.string(); }
};

}  // namespace kvs::llm::testing
