// Hugging Face tokenizer.json (llm/hf_tokenizer.cpp). The golden ids in
// tests/llm/data/tokenizers come from an independent implementation (the JS
// port of transformers.js' tokenizers, scripts/tokenizer-reference) run on
// cut-down copies of real Llama 3, Qwen2.5, GPT-2 and a Llama-2-style
// (Metaspace, byte fallback) tokenizer; see the README there. The small
// hand-written tokenizers below pin what the golden texts do not reach.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "llm/tokenizer.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

using json = nlohmann::json;
using Ids = std::vector<int64_t>;

const std::string kDir = KVSTREAM_SOURCE_DIR "/tests/llm/data/tokenizers/";
const char* kNames[] = {"llama3", "qwen2", "gpt2", "llama2"};

json read_json(const std::string& path) { return json::parse(read_file(path)); }

// Parses `j` as a tokenizer.json named "t.json"; the kvs::Error message.
std::string parse_error(const json& j) {
  try {
    parse_hf_tokenizer(j.dump(), "t.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerJsonTest, IdsEqualTheReferenceImplementation) {
  for (const char* name : kNames) {
    SCOPED_TRACE(name);
    const auto tok = load_hf_tokenizer(kDir + name + ".json");
    const json golden = read_json(kDir + name + ".golden.json");
    const auto& texts = golden["texts"];
    ASSERT_GE(texts.size(), 70u);
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i].get<std::string>();
      EXPECT_EQ(tok->encode(text, true), golden["ids"][i].get<Ids>()) << json(text).dump();
      EXPECT_EQ(tok->encode(text, false), golden["ids_no_special"][i].get<Ids>()) << json(text).dump();
    }
  }
}

TEST(TokenizerJsonTest, DecodeInvertsEncode) {
  for (const char* name : kNames) {
    SCOPED_TRACE(name);
    const auto tok = load_hf_tokenizer(kDir + name + ".json");
    int checked = 0;
    for (const auto& t : read_json(kDir + "texts.json")) {
      const std::string text = t.get<std::string>();
      // Special tokens are left out by decode(); "▁" reads as a space in a
      // Metaspace tokenizer; NFC (Qwen2) composes e + U+0301.
      bool skip = false;
      for (const char* s : {"<|", "<s>", "</s>", "<unk>", "\xe2\x96\x81", "\xcc\x81"})
        skip = skip || text.find(s) != std::string::npos;
      if (skip) continue;
      EXPECT_EQ(tok->decode(tok->encode(text, false)), text) << json(text).dump();
      EXPECT_EQ(tok->decode(tok->encode(text, true)), text) << json(text).dump();
      ++checked;
    }
    EXPECT_GE(checked, 35);
  }
}

TEST(TokenizerJsonTest, BosFollowsThePostProcessor) {
  const std::string text = "Hello world";
  {  // Llama 3.1: TemplateProcessing prepends <|begin_of_text|>
    const auto tok = load_hf_tokenizer(kDir + "llama3.json");
    const int64_t bos = tok->encode("<|begin_of_text|>", false).at(0);
    EXPECT_EQ(tok->bos_id(), bos);
    Ids with = tok->encode(text, true), without = tok->encode(text, false);
    ASSERT_EQ(with.size(), without.size() + 1);
    EXPECT_EQ(with[0], bos);
    EXPECT_EQ(Ids(with.begin() + 1, with.end()), without);
  }
  for (const char* name : {"qwen2", "gpt2"}) {  // ByteLevel post-processor only: nothing added
    const auto tok = load_hf_tokenizer(kDir + name + ".json");
    EXPECT_EQ(tok->bos_id(), -1) << name;
    EXPECT_EQ(tok->encode(text, true), tok->encode(text, false)) << name;
  }
  {  // Llama-2 style: <s> = 1
    const auto tok = load_hf_tokenizer(kDir + "llama2.json");
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->encode(text, true).at(0), 1);
    EXPECT_NE(tok->encode(text, false).at(0), 1);
  }
}

TEST(TokenizerJsonTest, SpecialTokensInTheTextAreOneToken) {
  const auto tok = load_hf_tokenizer(kDir + "qwen2.json");
  const Ids im_start = tok->encode("<|im_start|>", false);
  ASSERT_EQ(im_start.size(), 1u);
  EXPECT_GE(im_start[0], 2500);  // an added token, after the kept vocab
  const Ids ids = tok->encode("a<|im_start|>user", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), im_start[0]), 1);
  EXPECT_EQ(tok->decode(ids), "auser");  // special tokens are left out
}

TEST(TokenizerJsonTest, LoadTokenizerPicksTokenizerJson) {
  testing::TempDir dir;
  ModelConfig c = testing::tiny_config();
  std::filesystem::copy_file(kDir + "qwen2.json", dir.path / "tokenizer.json");
  const auto tok = load_hf_tokenizer(kDir + "qwen2.json");
  c.vocab_size = tok->vocab_size() + 100;  // models may pad the embedding
  EXPECT_EQ(load_tokenizer(dir.str(), c)->name(), "tokenizer.json");
  c.vocab_size = tok->vocab_size() - 1;
  try {
    load_tokenizer(dir.str(), c);
    FAIL() << "a tokenizer larger than the model loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokens, the model only"), std::string::npos) << e.what();
  }
  c.vocab_size = 256;  // tokenizer.json is taken before the byte tokenizer
  EXPECT_THROW(load_tokenizer(dir.str(), c), Error);
  std::filesystem::remove(dir.path / "tokenizer.json");
  EXPECT_EQ(load_tokenizer(dir.str(), c)->name(), "bytes");
  write_file_atomic((dir.path / "tokenizer.json").string(), "{ not json");
  try {
    load_tokenizer(dir.str(), c);
    FAIL() << "a broken tokenizer.json was ignored";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: not valid JSON"), std::string::npos) << e.what();
  }
}

// ---- hand-written tokenizers for what the golden texts do not pin ----

// A BPE over the given vocab tokens (ids in order) and merges.
json tiny(const std::vector<std::string>& vocab, const std::vector<std::string>& merges) {
  json v = json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  return {{"version", "1.0"},       {"truncation", nullptr}, {"padding", nullptr},
          {"added_tokens", json::array()}, {"normalizer", nullptr},  {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},     {"decoder", nullptr},
          {"model", {{"type", "BPE"}, {"vocab", v}, {"merges", merges}}}};
}

Ids encode(const json& j, const std::string& text) { return parse_hf_tokenizer(j.dump(), "t.json")->encode(text, false); }

TEST(TokenizerJsonTest, MergesApplyByRankAndIgnoreMergesTakesWholeWords) {
  // a=0 b=1 c=2 ab=3 bc=4 abc=5; "b c" outranks "a b".
  json j = tiny({"a", "b", "c", "ab", "bc", "abc"}, {"b c", "a b"});
  EXPECT_EQ(encode(j, "abc"), (Ids{0, 4}));  // "abc" is never made by the merges
  EXPECT_EQ(encode(j, "ab"), (Ids{3}));
  j["model"]["merges"] = json::array({json::array({"a", "b"}), json::array({"b", "c"})});  // pair form
  EXPECT_EQ(encode(j, "abc"), (Ids{3, 2}));
  j["model"]["ignore_merges"] = true;  // as Llama 3: a word in the vocab is one token
  EXPECT_EQ(encode(j, "abc"), (Ids{5}));
  EXPECT_EQ(encode(j, "abca"), (Ids{3, 2, 0}));
}

TEST(TokenizerJsonTest, UnknownCharactersUseUnkOrBytes) {
  json j = tiny({"<unk>", "a", "<0xC3>", "<0xA9>"}, {});
  EXPECT_EQ(encode(j, "a\xc3\xa9" "a"), (Ids{1, 1}));  // no unk token: dropped, as HF
  j["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(encode(j, "a\xc3\xa9\xc3\xa9" "a"), (Ids{1, 0, 0, 1}));
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(encode(j, "a\xc3\xa9\xc3\xa9" "a"), (Ids{1, 0, 1}));
  j["model"]["byte_fallback"] = true;
  EXPECT_EQ(encode(j, "a\xc3\xa9" "a"), (Ids{1, 2, 3, 1}));
  EXPECT_EQ(encode(j, "\xc3\xa8"), (Ids{0}));  // <0xA8> is missing: unk
  j["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}};
  EXPECT_EQ(parse_hf_tokenizer(j.dump(), "t.json")->decode({1, 2, 3, 1}), "a\xc3\xa9" "a");
  EXPECT_EQ(parse_hf_tokenizer(j.dump(), "t.json")->decode({2, 1}), "\xef\xbf\xbd" "a");  // lone byte: U+FFFD
}

TEST(TokenizerJsonTest, SplitBehaviorsAndDigits) {
  // Characters only (no merges): each id is one character of the pieces.
  json j = tiny({"a", "b", "-", "1", "2"}, {});
  j["model"]["unk_token"] = nullptr;
  const auto pieces = [&](const json& pre, const std::string& text) {
    j["pre_tokenizer"] = pre;
    // With ignore_merges and the pieces added to the vocab, each piece is one id.
    json k = j;
    k["model"]["ignore_merges"] = true;
    for (const char* p : {"a-", "-b", "a-b", "ab", "12", "-b-", "a-b-", "b-", "a--b", "--", "1-", "\xd9\xa3", "a\xd9\xa3"})
      k["model"]["vocab"][p] = k["model"]["vocab"].size();
    const auto tok = parse_hf_tokenizer(k.dump(), "t.json");
    std::vector<std::string> out;
    for (int64_t id : tok->encode(text, false)) out.push_back(tok->decode({id}));
    return out;
  };
  using V = std::vector<std::string>;
  auto split = [](const char* behavior, bool invert = false) {
    return json{{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}};
  };
  j["decoder"] = {{"type", "Fuse"}};
  EXPECT_EQ(pieces(split("Isolated"), "a-b-"), (V{"a", "-", "b", "-"}));
  EXPECT_EQ(pieces(split("Removed"), "a-b-"), (V{"a", "b"}));
  EXPECT_EQ(pieces(split("MergedWithPrevious"), "a-b-"), (V{"a-", "b-"}));
  EXPECT_EQ(pieces(split("MergedWithNext"), "a-b-"), (V{"a", "-b", "-"}));
  EXPECT_EQ(pieces(split("Contiguous"), "a--b"), (V{"a", "--", "b"}));
  EXPECT_EQ(pieces(split("Removed", true), "a-b-"), (V{"-", "-"}));
  EXPECT_EQ(pieces(json{{"type", "Digits"}, {"individual_digits", false}}, "a12b"), (V{"a", "12", "b"}));
  EXPECT_EQ(pieces(json{{"type", "Digits"}, {"individual_digits", true}}, "a12b"), (V{"a", "1", "2", "b"}));
  // Any Unicode number (Rust's char::is_numeric), as the Arabic-Indic 3 (U+0663).
  EXPECT_EQ(pieces(json{{"type", "Digits"}, {"individual_digits", true}}, "a\xd9\xa3"), (V{"a", "\xd9\xa3"}));
  const json regex{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  EXPECT_EQ(pieces(regex, "ab12a"), (V{"ab", "12", "a"}));
}

TEST(TokenizerJsonTest, MetaspacePrependSchemes) {
  const std::string sp = "\xe2\x96\x81";  // ▁
  json j = tiny({"<unk>", sp, "a", "b", sp + "a", sp + "b", "<x>"}, {sp + " a", sp + " b"});
  j["model"]["unk_token"] = "<unk>";
  j["added_tokens"] = {{{"id", 6}, {"content", "<x>"}, {"special", true}, {"normalized", false}}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}, {"split", true}};
  auto meta = [&](const char* scheme) {
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", scheme}, {"split", true}};
    return j;
  };
  EXPECT_EQ(encode(meta("always"), "a b"), (Ids{4, 5}));
  EXPECT_EQ(encode(meta("never"), "a b"), (Ids{2, 5}));
  EXPECT_EQ(encode(meta("first"), "a<x>a"), (Ids{4, 6, 2}));  // only the text's start
  EXPECT_EQ(encode(meta("always"), "a<x>a"), (Ids{4, 6, 4}));
  EXPECT_EQ(parse_hf_tokenizer(meta("first").dump(), "t.json")->decode({4, 5}), "a b");
}

TEST(TokenizerJsonTest, AddedTokensStripAndNormalizedFlags) {
  json j = tiny({"a", " ", "b", "<m>"}, {});
  j["added_tokens"] = {{{"id", 3}, {"content", "<m>"}, {"special", false}, {"normalized", false},
                        {"lstrip", true}, {"rstrip", false}}};
  EXPECT_EQ(encode(j, "a  <m> b"), (Ids{0, 3, 1, 2}));
  j["added_tokens"][0]["rstrip"] = true;
  EXPECT_EQ(encode(j, "a  <m> b"), (Ids{0, 3, 2}));
  j["added_tokens"][0]["lstrip"] = j["added_tokens"][0]["rstrip"] = false;
  j["added_tokens"][0]["single_word"] = true;  // only between word boundaries
  EXPECT_EQ(encode(j, "a <m>"), (Ids{0, 1, 3}));
  EXPECT_EQ(encode(j, "a<m>"), (Ids{0}));  // not matched: "<", "m", ">" are not in the vocab
  j["added_tokens"][0]["single_word"] = false;
  // A normalized added token is matched in the normalized text.
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "M"}}}, {"content", "m"}};
  j["added_tokens"][0]["normalized"] = true;
  EXPECT_EQ(encode(j, "a<M>"), (Ids{0, 3}));
  j["added_tokens"][0]["normalized"] = false;
  EXPECT_NE(encode(j, "a<M>"), (Ids{0, 3}));
}

// ---- errors: each names the file and the JSON pointer ----

TEST(TokenizerJsonTest, ErrorsNameTheFileAndPlace) {
  const json base = read_json(kDir + "llama3.json");
  auto expect = [&](json j, const std::string& where) {
    const std::string msg = parse_error(j);
    EXPECT_EQ(msg.rfind("t.json: " + where + ": ", 0), 0u) << msg;
  };
  EXPECT_NE(parse_error(json("{")).find("t.json"), std::string::npos);
  try {
    parse_hf_tokenizer("{\"model\": [1,", "t.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("t.json: not valid JSON"), std::string::npos) << e.what();
  }
  json j = base;
  j["model"]["type"] = "WordPiece";
  expect(j, "/model/type");
  j["model"]["type"] = "Unigram";
  expect(j, "/model/type");
  j = base;
  j["model"]["merges"][5] = "zzzz y";
  expect(j, "/model/merges/5");
  j = base;
  j["model"]["merges"][7] = json::array({"a", "b", "c"});
  expect(j, "/model/merges/7");
  j = base;
  j["model"]["merges"][3] = "ab";
  expect(j, "/model/merges/3");
  j = base;  // the token merge 0 makes is missing
  {
    const std::string m0 = j["model"]["merges"][0];
    const std::string merged = m0.substr(0, m0.find(' ')) + m0.substr(m0.find(' ') + 1);
    j["model"]["vocab"].erase(merged);
  }
  expect(j, "/model/merges/0");
  j = base;
  j["model"]["vocab"]["a"] = -1;
  expect(j, "/model/vocab/a");
  j["model"]["vocab"]["a"] = 1 << 30;
  expect(j, "/model/vocab/a");
  j["model"]["vocab"]["a"] = j["model"]["vocab"]["b"];
  expect(j, "/model/vocab/b");  // keys are read in sorted order: "b" repeats "a"'s id
  j = base;
  j["added_tokens"][0]["id"] = 1 << 30;
  expect(j, "/added_tokens/0/id");
  j = base;
  j["post_processor"]["processors"][1]["special_tokens"]["<|begin_of_text|>"]["ids"][0] = 999999;
  expect(j, "/post_processor/processors/1/special_tokens/<|begin_of_text|>/ids/0");
  j = base;
  j["pre_tokenizer"]["pretokenizers"][1]["type"] = "Whitespace";
  expect(j, "/pre_tokenizer/pretokenizers/1/type");
  j = base;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  expect(j, "/pre_tokenizer/pretokenizers/0/pattern");
  j = base;
  j["normalizer"] = {{"type", "Lowercase"}};
  expect(j, "/normalizer/type");
  j = base;
  j["decoder"] = {{"type", "WordPiece"}};
  expect(j, "/decoder/type");
  j = base;
  j["truncation"] = {{"max_length", 512}};
  expect(j, "/truncation");
  j = base;
  j["padding"] = {{"strategy", {{"Fixed", 16}}}, {"pad_id", 0}};
  expect(j, "/padding/strategy");
  j["padding"]["strategy"] = "BatchLongest";  // no effect on one text
  EXPECT_EQ(parse_error(j), "(no error)");
  j = base;
  j["model"]["continuing_subword_prefix"] = "##";
  expect(j, "/model/continuing_subword_prefix");
  j = base;
  j["model"].erase("vocab");
  expect(j, "/model");
}

TEST(TokenizerJsonTest, BadTextAndIdsAreErrors) {
  const auto tok = load_hf_tokenizer(kDir + "gpt2.json");
  EXPECT_THROW(tok->encode("ok \xff bad", false), Error);
  EXPECT_THROW(tok->encode("\xc3", false), Error);  // truncated sequence
  EXPECT_THROW(tok->decode({tok->vocab_size()}), Error);
  EXPECT_THROW(tok->decode({-1}), Error);
}

}  // namespace
}  // namespace kvs::llm
