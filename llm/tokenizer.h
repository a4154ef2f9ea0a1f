// Tokenizers: byte-level (vocab 256: byte b is token b), SentencePiece
// (tokenizer.model, as Llama 1/2: BOS prepended) and Hugging Face
// tokenizer.json (Llama 3, Qwen2, GPT-2/SmolLM, Mistral/Llama-2 style BPE).
// Chosen from the checkpoint.
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

// A Hugging Face tokenizer.json (llm/hf_tokenizer.cpp), applied as the
// `tokenizers` library does: added tokens matched whole first, then the
// normalizer (NFC/NFD/NFKC/NFKD, Prepend, Replace, Sequence), the
// pre-tokenizer (ByteLevel, Split, Metaspace, Digits, Sequence; regexes on
// ICU), the BPE model (merges as "a b" or [a, b], ignore_merges,
// byte_fallback, unk/fuse_unk) and the post-processor's single template
// (TemplateProcessing, Roberta/BertProcessing): encode(text, true) adds its
// tokens and bos_id() is its first one. decode() runs the decoder (ByteLevel,
// Metaspace, Replace, ByteFallback, Fuse, Strip) and leaves out special added
// tokens. Anything else (other model types, truncation, unknown components,
// merges of tokens not in the vocab, ids out of range) is a kvs::Error naming
// the file and the JSON pointer; encode() refuses text that is not UTF-8.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& json_path);
// The same from the file's text (`file` names it in errors).
std::unique_ptr<Tokenizer> parse_hf_tokenizer(std::string_view json_text, const std::string& file);

// DIR/tokenizer.model when present, else DIR/tokenizer.json, else the byte
// tokenizer when config.vocab_size == 256, else a kvs::Error. The tokenizer's
// vocabulary (added tokens included) must fit the model's: it may be smaller,
// as models pad their embedding (Qwen2).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir, const ModelConfig& config);

}  // namespace kvs::llm
