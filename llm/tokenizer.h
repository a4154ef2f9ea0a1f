// Tokenizers: byte-level (vocab 256: byte b is token b) and SentencePiece
// (tokenizer.model, as Llama 1/2: BOS prepended). Chosen from the checkpoint.
//
// SentencePiece models are read and applied by this file's own code (BPE and
// unigram, byte fallback, identity normalizer as Llama's): Debian's
// libsentencepiece embeds protobuf 3.14 code that clashes with the protobuf
// 3.21 libtorch loads, so both cannot live in one process. Torch-free
// (library kvstream_tokenizer); tests compare it with libsentencepiece.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llm/config.h"

namespace kvs::llm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text to ids; `add_bos` prepends the BOS token when the tokenizer has one.
  virtual std::vector<int64_t> encode(std::string_view text, bool add_bos = true) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;  // -1: none
  virtual std::string name() const = 0;
};

// byte b -> id b; no BOS.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int64_t> encode(std::string_view text, bool add_bos = true) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return 256; }
  int64_t bos_id() const override { return -1; }
  std::string name() const override { return "bytes"; }
};

// A SentencePiece model file (throws kvs::Error naming the file): model type
// BPE or unigram, normalizer "identity" (others are an error); user-defined
// pieces are matched whole, as libsentencepiece does.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path);

// DIR/tokenizer.model when present, else the byte tokenizer when
// config.vocab_size == 256, else a kvs::Error. The tokenizer's vocabulary must
// fit the model's.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir, const ModelConfig& config);

}  // namespace kvs::llm
