#include "llm/tokenizer.h"

#include <filesystem>

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include "base/error.h"

namespace kvs::llm {

std::vector<int64_t> ByteTokenizer::encode(std::string_view text, bool /*add_bos*/) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = int64_t(static_cast<unsigned char>(text[i]));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id > 255) throw Error(fmt::format("byte tokenizer: id {} is not a byte", id));
    out.push_back(char(uint8_t(id)));
  }
  return out;
}

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const auto status = sp_.Load(path);
    if (!status.ok()) throw Error(fmt::format("{}: cannot load SentencePiece model: {}", path, status.ToString()));
  }
  std::vector<int64_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) throw Error(fmt::format("SentencePiece encode failed: {}", status.ToString()));
    std::vector<int64_t> out;
    out.reserve(ids.size() + 1);
    if (add_bos && sp_.bos_id() >= 0) out.push_back(sp_.bos_id());
    for (int id : ids) out.push_back(id);
    return out;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> in;
    for (int64_t id : ids) {
      if (id < 0 || id >= sp_.GetPieceSize()) throw Error(fmt::format("SentencePiece: id {} out of range", id));
      in.push_back(int(id));
    }
    std::string out;
    const auto status = sp_.Decode(in, &out);
    if (!status.ok()) throw Error(fmt::format("SentencePiece decode failed: {}", status.ToString()));
    return out;
  }
  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int64_t bos_id() const override { return sp_.bos_id(); }
  std::string name() const override { return "sentencepiece"; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path) {
  return std::make_unique<SentencePieceTokenizer>(model_path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir, const ModelConfig& config) {
  const auto sp = std::filesystem::path(dir) / "tokenizer.model";
  std::unique_ptr<Tokenizer> tok;
  if (std::filesystem::exists(sp)) {
    tok = load_sentencepiece(sp.string());
  } else if (config.vocab_size == 256) {
    tok = std::make_unique<ByteTokenizer>();
  } else {
    throw Error(fmt::format("{}: no tokenizer.model, and vocab_size {} is not the byte tokenizer's 256 "
                            "(tokenizer.json is not supported)", dir, config.vocab_size));
  }
  if (tok->vocab_size() > config.vocab_size)
    throw Error(fmt::format("{}: tokenizer has {} tokens, the model only {}", dir, tok->vocab_size(),
                            config.vocab_size));
  return tok;
}

}  // namespace kvs::llm
