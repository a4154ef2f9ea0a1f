#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "base/error.h"
#include "codec/profile.h"
#include "llm/model.h"
#include "llm/profiler.h"
#include "llm/tokenizer.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

std::vector<ProfileContext> two_contexts() {
  std::string first;
  for (int i = 0; i < 15; ++i) first += "xxxxxxxxxx";
  first += " The code of Kalo Mi is 12345. and more text here.";
  return {{"a", first, " more", "Q: code? A:", " 12345"},
          {"b", "Some other context that is long enough to make two chunks of sixteen tokens.", " next words", "", ""}};
}

// Options for a tiny model: 16-token chunks, 4 greedy tokens, no progress bar.
ProfilerOptions tiny_options(std::vector<std::string> codecs) {
  ProfilerOptions o;
  o.codecs = std::move(codecs);
  o.chunk_tokens = 16;
  o.greedy_tokens = 4;
  o.model_name = "tiny";
  o.show_progress = false;
  return o;
}

TEST(Profiler, RawIsExactAndLossyCodecsCost) {
  const Model model = Model::random(testing::tiny_config(), 3);
  ByteTokenizer tok;
  const ProfilerOptions o = tiny_options({"raw", "quant8", "cachegen"});
  const codec::Profile p = run_profiler(model, tok, two_contexts(), o);
  ASSERT_EQ(p.codecs.size(), 3u);
  const auto& raw = p.codec("raw").contexts[0];
  EXPECT_EQ(raw.quality[0].loss_increase, 0.0);
  EXPECT_EQ(raw.quality[0].greedy_agreement, 1.0);
  EXPECT_EQ(raw.base_task_accuracy, raw.quality[0].task_accuracy);
  EXPECT_GE(raw.base_task_accuracy, 0.0);  // the context has a question
  EXPECT_EQ(p.codec("raw").contexts[1].base_task_accuracy, -1.0);
  EXPECT_NEAR(raw.quality[0].bits_per_element, 16.0, 1.0);  // fp16 plus headers
  const auto& cg = p.codec("cachegen").contexts[0];
  const uint32_t tokens = uint32_t(two_contexts()[0].context.size()) - 1;  // the last byte starts the continuation
  EXPECT_EQ(cg.tokens, tokens);
  EXPECT_EQ(cg.chunks.size(), (tokens + 15) / 16);
  EXPECT_EQ(cg.chunks.back().tokens, tokens - (tokens - 1) / 16 * 16);
  EXPECT_NE(cg.quality.back().loss_increase, 0.0);
  EXPECT_LT(cg.quality.back().bits_per_element, p.codec("quant8").contexts[0].quality[0].bits_per_element);
  double share = 0;
  for (const auto& ch : cg.chunks) share += ch.levels.back().loss_increase;
  EXPECT_NEAR(share, cg.quality.back().loss_increase, 1e-12);  // chunk estimates add up
  // The file format round-trips.
  EXPECT_EQ(codec::profile_to_json(codec::parse_profile(codec::profile_to_json(p), "mem")), codec::profile_to_json(p));
}

TEST(Profiler, AssembledCacheMixesLevelsAndRecomputedChunks) {
  const Model model = Model::random(testing::tiny_config(), 3);
  ByteTokenizer tok;
  const ProfilerOptions o = tiny_options({"cachegen"});
  const auto contexts = two_contexts();
  const codec::Profile p = run_profiler(model, tok, contexts, o);
  const auto& cp = p.codec("cachegen").contexts[0];
  const auto codec = codec::make_codec("cachegen");
  const PreparedContext prepared = prepare_context(model, tok, contexts[0], 0, o.kv_dtype, o.greedy_tokens);
  ASSERT_EQ(prepared.exact_chunk.tokens, cp.tokens);

  auto choices = [&](int level) {
    std::vector<ChunkChoice> c;
    for (const auto& ch : cp.chunks) c.push_back({ch.token_begin, ch.tokens, level});
    return c;
  };
  // Everything recomputed: the exact cache, no loss.
  const codec::KVChunk exact = assemble_cache(*codec, prepared.exact_chunk, choices(-1));
  EXPECT_EQ(exact.values, prepared.exact_chunk.values);
  const codec::LevelQuality none = measure_quality(model, prepared, exact);
  EXPECT_EQ(none.loss_increase, 0.0);
  EXPECT_EQ(none.greedy_agreement, 1.0);
  // Every chunk at one level: what the profile measured for that level.
  const int coarse = codec->levels() - 1;
  const codec::LevelQuality all = measure_quality(model, prepared, assemble_cache(*codec, prepared.exact_chunk, choices(coarse)));
  EXPECT_EQ(all.loss_increase, cp.quality[coarse].loss_increase);
  EXPECT_EQ(all.task_accuracy, cp.quality[coarse].task_accuracy);
  // Mixed: the recomputed first chunk is exact, the others are the codec's.
  auto mixed_choice = choices(coarse);
  mixed_choice[0].level = -1;
  const codec::KVChunk mixed = assemble_cache(*codec, prepared.exact_chunk, mixed_choice);
  const codec::KVChunk first = mixed.slice(0, cp.chunks[0].tokens), exact_first = prepared.exact_chunk.slice(0, cp.chunks[0].tokens);
  EXPECT_EQ(first.values, exact_first.values);
  const uint32_t b = uint32_t(cp.chunks[1].token_begin);
  const codec::KVChunk second = mixed.slice(b, cp.chunks[1].tokens);
  EXPECT_EQ(second.values, codec->decode(codec->encode(prepared.exact_chunk.slice(b, cp.chunks[1].tokens), coarse)).values);
  EXPECT_NE(mixed.values, exact.values);
  // Chunks that do not tile the cache, or a level the codec lacks.
  auto gap = choices(0);
  gap.pop_back();
  EXPECT_THROW(assemble_cache(*codec, prepared.exact_chunk, gap), Error);
  auto bad_level = choices(0);
  bad_level[1].level = codec->levels();
  EXPECT_THROW(assemble_cache(*codec, prepared.exact_chunk, bad_level), Error);
}

TEST(Profiler, ResumesFromPartialFile) {
  testing::TempDir dir;
  const Model model = Model::random(testing::tiny_config(), 3);
  ByteTokenizer tok;
  ProfilerOptions o;
  o.codecs = {"quant8"};
  o.chunk_tokens = 32;
  o.greedy_tokens = 2;
  o.show_progress = false;
  o.partial_path = (dir.path / "p.partial").string();
  auto contexts = two_contexts();
  const codec::Profile first = run_profiler(model, tok, {contexts[0]}, o);
  ASSERT_TRUE(std::filesystem::exists(o.partial_path));
  const codec::Profile both = run_profiler(model, tok, contexts, o);
  ASSERT_EQ(both.codecs[0].contexts.size(), 2u);
  EXPECT_EQ(both.codecs[0].contexts[0].chunks[0].levels[0].encode_s,
            first.codecs[0].contexts[0].chunks[0].levels[0].encode_s);  // taken from the file, not re-measured
  o.chunk_tokens = 16;  // other settings: refuse to mix
  EXPECT_THROW(run_profiler(model, tok, contexts, o), Error);
}

TEST(Profiler, ContextFilesAndErrors) {
  testing::TempDir dir;
  const auto path = (dir.path / "c.jsonl").string();
  std::ofstream(path) << "{\"id\": \"x\", \"context\": \"hello there\", \"continuation\": \" you\"}\n\n"
                      << "{\"id\": \"y\", \"context\": \"hi\", \"continuation\": \"!\", \"question\": \"q\", \"answer\": \"a\"}\n";
  const auto c = load_contexts(path);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].answer, "a");
  const auto bad = (dir.path / "bad.jsonl").string();
  std::ofstream(bad) << "{\"id\": \"x\", \"context\": \"hello\", \"continuation\": \" you\"}\n{\"id\": \"y\"}\n";
  try {
    load_contexts(bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2: missing field \"context\""), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_contexts((dir.path / "none").string()), Error);
  ProfilerOptions o;
  o.codecs = {"nope"};
  EXPECT_THROW(run_profiler(Model::random(testing::tiny_config(), 1), ByteTokenizer(), two_contexts(), o), Error);
}

}  // namespace
}  // namespace kvs::llm
