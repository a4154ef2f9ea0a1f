#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "codec/bitstream.h"
#include "codec/profile.h"
#include "llm/checkpoint.h"
#include "llm/evaluate.h"
#include "llm/kv_cache.h"
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
  EXPECT_LT(p.codec("cachegen").contexts[0].chunks[0].levels[0].decode_host_s, 0.0);  // CPU: not measured
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
  // Per chunk (measured with only that chunk degraded): KL >= 0 and some > 0.
  double kl = 0;
  for (const auto& ch : cg.chunks) {
    EXPECT_GE(ch.levels.back().kl_nats, 0.0);
    kl += ch.levels.back().kl_nats;
  }
  EXPECT_GT(kl, 0.0);
  EXPECT_GT(cg.quality.back().kl_nats, 0.0);
  EXPECT_EQ(raw.quality[0].kl_nats, 0.0);
  EXPECT_EQ(raw.quality[0].top1_agreement, 1.0);
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
  codec::KVChunk second_decoded = codec->decode(codec->encode(prepared.exact_chunk.slice(b, cp.chunks[1].tokens), coarse));
  for (float& v : second_decoded.values) v = codec::round_to_dtype(v, o.kv_dtype);  // as stored
  EXPECT_EQ(second.values, second_decoded.values);
  EXPECT_NE(mixed.values, exact.values);
  // Chunks that do not tile the cache, or a level the codec lacks.
  auto gap = choices(0);
  gap.pop_back();
  EXPECT_THROW(assemble_cache(*codec, prepared.exact_chunk, gap), Error);
  auto bad_level = choices(0);
  bad_level[1].level = codec->levels();
  EXPECT_THROW(assemble_cache(*codec, prepared.exact_chunk, bad_level), Error);
}

// Per-chunk quality measured (the default): the continuation's loss and KL
// with only that chunk at that level, every other chunk exact.
TEST(Profiler, PerChunkQualityIsMeasuredWithOnlyThatChunkDegraded) {
  const Model model = Model::random(testing::tiny_config(), 3);
  ByteTokenizer tok;
  const ProfilerOptions o = tiny_options({"cachegen"});
  const auto contexts = two_contexts();
  const codec::Profile p = run_profiler(model, tok, contexts, o);
  EXPECT_EQ(p.chunk_quality, "measured");
  const auto& cp = p.codec("cachegen").contexts[0];
  ASSERT_GE(cp.chunks.size(), 2u);
  const auto codec = codec::make_codec("cachegen");
  const PreparedContext prepared = prepare_context(model, tok, contexts[0], 0, o.kv_dtype, o.greedy_tokens);
  for (const int level : {1, codec->levels() - 1})
    for (size_t k = 0; k < cp.chunks.size(); ++k) {
      std::vector<ChunkChoice> only;
      for (size_t j = 0; j < cp.chunks.size(); ++j)
        only.push_back({cp.chunks[j].token_begin, cp.chunks[j].tokens, j == k ? level : -1});
      const codec::LevelQuality q = measure_quality(model, prepared, assemble_cache(*codec, prepared.exact_chunk, only));
      EXPECT_EQ(cp.chunks[k].levels[size_t(level)].kl_nats, q.kl_nats) << "L" << level << " chunk " << k;
      EXPECT_EQ(cp.chunks[k].levels[size_t(level)].loss_increase, q.loss_increase) << "L" << level << " chunk " << k;
    }
}

// Per-chunk quality estimated from squared-error share (--chunk-quality
// estimated), on the bundled model and a real context (512 tokens in 4 chunks
// of 128, cachegen's coarsest level, its 512-token continuation): the
// estimates add up to the context's KL but misplace it between chunks.
// Measured here (ratio estimate / measurement with only that chunk degraded):
// 2.66, 5.74, 1.93, 0.30 for chunks 0..3 (all chunks have about the same
// error, but the last one, next to the continuation, matters most), and 0.90
// for the sum (KL is nearly additive over chunks). The bounds are those
// figures with a margin, so that the test fails if the estimate gets worse or
// stops adding up; they are no claim that it is good (hence measured by default).
TEST(Profiler, PerChunkKlEstimateAgainstMeasurement) {
  const std::string src = KVSTREAM_SOURCE_DIR;
  const Model model = load_model(src + "/models/default");
  const auto tok = load_tokenizer(src + "/models/default", model.config());
  auto contexts = load_contexts(src + "/data/retrieval/contexts-2048.jsonl");
  contexts.resize(1);
  ProfilerOptions o = tiny_options({"cachegen"});
  o.chunk_tokens = 128;
  o.max_context_tokens = 513;
  o.measure_chunks = false;
  const codec::Profile p = run_profiler(model, *tok, contexts, o);
  EXPECT_EQ(p.chunk_quality, "estimated");
  const auto& ce = p.codec("cachegen").contexts[0];
  ASSERT_EQ(ce.chunks.size(), 4u);
  ASSERT_EQ(ce.continuation_tokens, 512u);
  const auto codec = codec::make_codec("cachegen");
  const size_t coarse = size_t(codec->levels() - 1);
  const PreparedContext prepared = prepare_context(model, *tok, contexts[0], 513, o.kv_dtype, o.greedy_tokens);
  double est_sum = 0, meas_sum = 0, ratio_min = 1e9, ratio_max = 0;
  std::string report;
  for (size_t k = 0; k < ce.chunks.size(); ++k) {
    std::vector<ChunkChoice> only;
    for (size_t j = 0; j < ce.chunks.size(); ++j)
      only.push_back({ce.chunks[j].token_begin, ce.chunks[j].tokens, j == k ? int(coarse) : -1});
    const CacheQuality q = teacher_forced_quality(
        model, prepared.reference,
        from_chunk(assemble_cache(*codec, prepared.exact_chunk, only), model.dtype(), model.device()));
    ASSERT_GT(q.kl_nats, 0.0);
    const double est = ce.chunks[k].levels[coarse].kl_nats, ratio = est / q.kl_nats;
    report += fmt::format(" chunk {}: estimate {:.4g} measured {:.4g} (SE {:.2g}) ratio {:.3f};", k, est, q.kl_nats,
                          q.kl_stderr_nats, ratio);
    ratio_min = std::min(ratio_min, ratio), ratio_max = std::max(ratio_max, ratio);
    est_sum += est, meas_sum += q.kl_nats;
  }
  std::printf("per-chunk KL at cachegen L%zu:%s sum: estimate %.4g measured %.4g ratio %.3f\n", coarse, report.c_str(),
              est_sum, meas_sum, est_sum / meas_sum);
  EXPECT_NEAR(est_sum, ce.quality[coarse].kl_nats, 1e-12);  // the estimates add up to the context's KL
  EXPECT_NEAR(est_sum / meas_sum, 1.0, 0.25) << report;
  EXPECT_GT(ratio_min, 0.2) << report;
  EXPECT_LT(ratio_max, 8.0) << report;
}

// On two models of different shape, each codec's front (as the profile
// records it) ordered by bytes is strictly decreasing in bytes and strictly
// increasing in KL, and every level off it is dominated by one on it.
TEST(Profiler, FrontIsMonotoneInBytesAndKlOnTwoModels) {
  ModelConfig other = testing::tiny_config();
  other.num_hidden_layers = 3;
  other.num_attention_heads = 2;
  other.num_key_value_heads = 1;
  other.hidden_size = 32;  // head_dim 16 against tiny_config's 8
  for (const ModelConfig& config : {testing::tiny_config(), other}) {
    const Model model = Model::random(config, 5);
    const codec::Profile p = run_profiler(model, ByteTokenizer(), two_contexts(), tiny_options({"quant8", "cachegen"}));
    for (const auto& c : p.codecs) {
      ASSERT_EQ(c.on_front, codec::pareto_front(c));
      const std::vector<double> bytes = codec::mean_chunk_bytes(c), kl = codec::mean_kl_nats(c);
      const std::vector<int> front = c.front_levels();
      ASSERT_FALSE(front.empty());
      for (size_t i = 1; i < front.size(); ++i) {
        EXPECT_GT(bytes[size_t(front[i - 1])], bytes[size_t(front[i])]) << c.codec;
        EXPECT_LT(kl[size_t(front[i - 1])], kl[size_t(front[i])]) << c.codec;
      }
      for (size_t l = 0; l < c.levels(); ++l) {
        if (c.on_front[l]) continue;
        bool dominated = false;
        for (int f : front) dominated = dominated || (bytes[size_t(f)] <= bytes[l] && kl[size_t(f)] <= kl[l]);
        EXPECT_TRUE(dominated) << c.codec << " L" << l;
      }
    }
  }
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

// A stand-in for the GPU timer (codec/cuda/profile_timer.h), so that the
// profiler's `--device cuda` path runs without a GPU: it checks that it is
// given the CPU's stream and decoded output, records the calls, and returns
// times no CPU measurement gives.
class FakeGpuTimer final : public codec::cuda::ChunkTimer {
 public:
  explicit FakeGpuTimer(bool encode_on_gpu) : encode_on_gpu_(encode_on_gpu) {}
  std::string device() const override { return "cuda:Fake Card 80GB"; }
  bool decodes(const codec::Codec& c) const override { return codec::cuda::has_gpu_decoder(c.name()); }
  bool encodes(const codec::Codec& c) const override { return encode_on_gpu_ && c.name() == "cachegen"; }
  codec::cuda::ChunkTimes time(const codec::Codec& c, const codec::KVChunk& chunk, int level,
                               std::span<const uint8_t> stream, const codec::KVChunk& cpu_decoded, uint32_t repeats,
                               bool check) override {
    EXPECT_TRUE(std::equal(stream.begin(), stream.end(), c.encode(chunk, level).begin()));
    EXPECT_EQ(c.decode(stream).values, cpu_decoded.values);
    EXPECT_EQ(repeats, 2u);
    checks += check;
    ++calls;
    return {encodes(c) ? fake_encode_s(level) : -1.0, fake_decode_s(level, chunk.token_begin), 5e-4};
  }
  static double fake_encode_s(int level) { return 1e-7 * (level + 1); }
  static double fake_decode_s(int level, uint64_t token_begin) { return 3e-7 * (level + 1) + 1e-9 * double(token_begin); }
  int checks = 0, calls = 0;

 private:
  bool encode_on_gpu_;
};

TEST(Profiler, DeviceTimerGivesEveryTimeAndItsDevice) {
  const Model model = Model::random(testing::tiny_config(), 3);
  ByteTokenizer tok;
  ProfilerOptions o = tiny_options({"cachegen"});
  o.measure_chunks = false;  // only the timing matters here
  o.timing_repeats = 2;
  for (const bool encode_on_gpu : {true, false}) {
    SCOPED_TRACE(encode_on_gpu ? "GPU encode" : "CPU encode");
    FakeGpuTimer timer(encode_on_gpu);
    o.device_timer = &timer;
    const codec::Profile p = run_profiler(model, tok, two_contexts(), o);
    EXPECT_EQ(p.device, "cuda:Fake Card 80GB");
    const codec::CodecProfile& cg = p.codec("cachegen");
    EXPECT_EQ(cg.encode_device, encode_on_gpu ? "cuda:Fake Card 80GB" : cpu_device_name());
    int chunk_levels = 0;
    for (const auto& ctx : cg.contexts)
      for (const auto& ch : ctx.chunks)
        for (size_t l = 0; l < ch.levels.size(); ++l, ++chunk_levels) {
          EXPECT_EQ(ch.levels[l].decode_s, FakeGpuTimer::fake_decode_s(int(l), ch.token_begin));
          EXPECT_EQ(ch.levels[l].decode_host_s, 5e-4);
          if (encode_on_gpu)
            EXPECT_EQ(ch.levels[l].encode_s, FakeGpuTimer::fake_encode_s(int(l)));
          else
            EXPECT_GT(ch.levels[l].encode_s, 0.0);  // measured on the CPU
        }
    EXPECT_EQ(timer.calls, chunk_levels);
    // The GPU's output is checked on the first chunk of each context, codec and level.
    EXPECT_EQ(timer.checks, int(cg.contexts.size() * cg.levels()));
    EXPECT_EQ(codec::profile_to_json(codec::parse_profile(codec::profile_to_json(p), "mem")),
              codec::profile_to_json(p));
  }
  // A codec without a GPU decoder is refused before anything is profiled.
  FakeGpuTimer timer(true);
  o.device_timer = &timer;
  o.codecs = {"cachegen", "quant8"};
  try {
    run_profiler(model, tok, two_contexts(), o);
    FAIL() << "quant8 was profiled on the fake GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("codec quant8 has no GPU decoder"), std::string::npos) << e.what();
  }
  EXPECT_EQ(timer.calls, 0);
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

// Chunks larger than a stream may hold (e.g. Llama-2-7B's 32 KV heads at
// CacheGen's 1,500 tokens) are refused before any prefill, with the most
// tokens that fit.
TEST(Profiler, RefusesChunksBeyondTheStreamLimitUpFront) {
  const Model model = Model::random(testing::tiny_config(), 1);
  ProfilerOptions o = tiny_options({"quant8"});
  const uint64_t per_token = model_info(model, "tiny").kv.elements_per_token();
  const uint32_t most = uint32_t(codec::kMaxElements / per_token);
  o.chunk_tokens = most + 1;
  try {
    run_profiler(model, ByteTokenizer(), two_contexts(), o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fmt::format("--chunk-tokens {} makes chunks of", most + 1)), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(fmt::format("use --chunk-tokens {} or fewer", most)), std::string::npos)
        << e.what();
  }
  o.chunk_tokens = most;  // the largest that fits: profiles (contexts are shorter than a chunk)
  EXPECT_EQ(run_profiler(model, ByteTokenizer(), two_contexts(), o).codecs.at(0).contexts.size(), 2u);
}

}  // namespace
}  // namespace kvs::llm
