// Byte and SentencePiece tokenizers, and the choice from a checkpoint folder.
// The SentencePiece reimplementation is checked against libsentencepiece
// (this binary links no libtorch, so the two protobufs do not meet).
#include "llm/tokenizer.h"

#include <filesystem>

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "base/error.h"
#include "base/files.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

using testing::TempDir;

TEST(TokenizerTest, BytesMapOneToOne) {
  ByteTokenizer t;
  const std::string s = std::string("A\xff\x00z", 4);
  const auto ids = t.encode(s);
  EXPECT_EQ(ids, (std::vector<int64_t>{65, 255, 0, 122}));
  EXPECT_EQ(t.decode(ids), s);
  EXPECT_THROW(t.decode({256}), Error);
  EXPECT_EQ(t.bos_id(), -1);
}

TEST(TokenizerTest, ChosenFromFolder) {
  TempDir dir;
  ModelConfig c = testing::tiny_config();
  EXPECT_EQ(load_tokenizer(dir.str(), c)->name(), "bytes");
  c.vocab_size = 1000;
  EXPECT_THROW(load_tokenizer(dir.str(), c), Error);
  write_file_atomic((dir.path / "tokenizer.model").string(), "not a model");
  try {
    load_tokenizer(dir.str(), c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.model"), std::string::npos) << e.what();
  }
}

std::string corpus_text() {
  const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "caché", "naïve",
                         "streaming", "network", "tokens", "keys", "values", "12", "345", "über", "x", "—"};
  std::string s;
  uint64_t x = 1;
  for (int line = 0; line < 400; ++line) {
    for (int w = 0; w < 12; ++w) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      s += words[(x >> 33) % 20];
      s += (x >> 20) % 7 == 0 ? ", " : " ";
    }
    s += "\n";
  }
  return s;
}

// Trains a model with libsentencepiece and returns its path.
std::string train(const TempDir& dir, const std::string& type, bool byte_fallback, const std::string& extra = "") {
  const std::string corpus = (dir.path / "corpus.txt").string();
  write_file_atomic(corpus, corpus_text());
  const std::string prefix = (dir.path / ("m_" + type)).string();
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + corpus + " --model_prefix=" + prefix + " --vocab_size=" + (byte_fallback ? "320" : "70") +
      " --model_type=" + type + " --normalization_rule_name=identity --add_dummy_prefix=true"
      " --remove_extra_whitespaces=false --bos_id=1 --eos_id=2 --unk_id=0 --minloglevel=2 --byte_fallback=" +
      (byte_fallback ? "true" : "false") + extra);
  EXPECT_TRUE(status.ok()) << status.ToString();
  return prefix + ".model";
}

void compare_with_libsentencepiece(const std::string& model) {
  sentencepiece::SentencePieceProcessor ref;
  ASSERT_TRUE(ref.Load(model).ok());
  auto mine = load_sentencepiece(model);
  EXPECT_EQ(mine->vocab_size(), ref.GetPieceSize());
  EXPECT_EQ(mine->bos_id(), 1);
  const std::string texts[] = {"the quick brown fox", "  two  spaces and über-naïve caché!", "zebra QQQ 9876 ☃ end",
                               "streaming keys, values — tokens", "x", "",
                               "a<sep>b <sep> lazy<sep><sep>dog [INST] the fox [/INST]"};
  for (const auto& t : texts) {
    std::vector<int> want;
    ASSERT_TRUE(ref.Encode(t, &want).ok());
    std::vector<int64_t> want64(want.begin(), want.end());
    EXPECT_EQ(mine->encode(t, false), want64) << "'" << t << "' with " << model;
    auto with_bos = mine->encode(t, true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], 1);  // BOS first, as Llama
    std::string ref_text;
    ASSERT_TRUE(ref.Decode(want, &ref_text).ok());
    EXPECT_EQ(mine->decode(want64), ref_text) << t;
  }
}

TEST(TokenizerTest, SentencePieceBpeMatchesLibsentencepiece) {
  TempDir dir;
  compare_with_libsentencepiece(train(dir, "bpe", false));
}

TEST(TokenizerTest, SentencePieceBpeByteFallbackMatchesLibsentencepiece) {
  TempDir dir;
  compare_with_libsentencepiece(train(dir, "bpe", true));
}

// User-defined pieces (as some Llama-family tokenizer.model files carry) are
// matched whole in the text, never split or merged across.
TEST(TokenizerTest, SentencePieceUserDefinedSymbolsMatchLibsentencepiece) {
  TempDir dir;
  for (const char* type : {"bpe", "unigram"})
    compare_with_libsentencepiece(train(dir, type, true, " --user_defined_symbols=<sep>,[INST],[/INST]"));
}

TEST(TokenizerTest, SentencePieceUnigramMatchesLibsentencepiece) {
  TempDir dir;
  compare_with_libsentencepiece(train(dir, "unigram", false));
}

TEST(TokenizerTest, TruncatedSentencePieceModelIsAnError) {
  TempDir dir;
  const std::string model = train(dir, "bpe", true);
  const std::string bytes = read_file(model);
  for (size_t cut : {size_t(1), size_t(7), bytes.size() / 2, bytes.size() - 3}) {
    const std::string path = (dir.path / "cut.model").string();
    write_file_atomic(path, bytes.substr(0, cut));
    try {
      load_sentencepiece(path);
      ADD_FAILURE() << "no error at " << cut;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.model"), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerTest, SentencePieceFromFolderNeedsRoomInTheVocabulary) {
  TempDir dir;
  const std::string model = train(dir, "bpe", false);
  std::filesystem::copy_file(model, dir.path / "tokenizer.model");
  ModelConfig c = testing::tiny_config();
  c.vocab_size = 70;
  EXPECT_EQ(load_tokenizer(dir.str(), c)->name(), "sentencepiece");
  c.vocab_size = 50;
  EXPECT_THROW(load_tokenizer(dir.str(), c), Error);
}

}  // namespace
}  // namespace kvs::llm
