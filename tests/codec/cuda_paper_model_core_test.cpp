// The bookkeeping of the shared device tables of a cachegen scheme=paper
// model (codec/cuda/paper_model_device.h, detail::BuildOnce), on the CPU:
// each level built once however many threads ask, other levels not blocked
// by a level's build, a failed build retried, a level out of range refused.
// The device side (Decoders and an Encoder sharing one copy) is tested on a
// GPU in cuda_paper_model_test.cpp.
#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "codec/cuda/paper_model_device.h"

namespace kvs::codec {
namespace {

using cuda::detail::BuildOnce;

TEST(CudaCore, BuildOnceBuildsEachLevelOnceForManyThreads) {
  constexpr size_t kLevels = 7, kThreads = 8;
  BuildOnce<std::vector<int>> levels(kLevels);
  std::vector<std::atomic<int>> builds(kLevels);
  std::vector<std::vector<const std::vector<int>*>> seen(kThreads, std::vector<const std::vector<int>*>(kLevels));
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < kLevels; ++k) {
        const size_t l = (k + t) % kLevels;  // each thread in another order
        seen[t][l] = &levels.get(l, [&](size_t i) {
          builds[i].fetch_add(1);
          std::this_thread::sleep_for(std::chrono::milliseconds(2));  // others arrive meanwhile
          return std::vector<int>(i + 1, int(i));
        });
      }
    });
  for (auto& th : threads) th.join();
  for (size_t l = 0; l < kLevels; ++l) {
    EXPECT_EQ(builds[l].load(), 1) << "level " << l;
    EXPECT_TRUE(levels.built(l));
    for (size_t t = 0; t < kThreads; ++t) EXPECT_EQ(seen[t][l], seen[0][l]) << "thread " << t << " level " << l;
    EXPECT_EQ(*seen[0][l], std::vector<int>(l + 1, int(l)));
  }
}

TEST(CudaCore, BuildOnceDoesNotBlockOtherLevelsDuringABuild) {
  BuildOnce<int> levels(3);
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  auto slow = std::async(std::launch::async, [&] {
    return levels.get(0, [&](size_t) {
      entered.set_value();
      released.wait();  // level 0's build holds its lock until released
      return 10;
    });
  });
  entered.get_future().wait();
  auto other = std::async(std::launch::async, [&] { return levels.get(1, [](size_t) { return 11; }); });
  const bool finished = other.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  release.set_value();
  EXPECT_TRUE(finished) << "level 1 waited for level 0's build";
  EXPECT_EQ(other.get(), 11);
  EXPECT_EQ(slow.get(), 10);
  EXPECT_TRUE(levels.built(0));
  EXPECT_FALSE(levels.built(2));
}

TEST(CudaCore, BuildOnceRetriesAFailedBuildAndRefusesOutOfRange) {
  BuildOnce<int> levels(7);
  int calls = 0;
  const auto fails = [&](size_t) -> int {
    ++calls;
    throw Error("build failed");
  };
  EXPECT_THROW(levels.get(3, fails), Error);
  EXPECT_FALSE(levels.built(3));
  EXPECT_EQ(levels.get(3, [&](size_t i) { return int(++calls * 100 + i); }), 203);  // built again
  EXPECT_EQ(levels.get(3, fails), 203);                                             // and kept
  EXPECT_EQ(calls, 2);
  try {
    levels.get(7, [](size_t) { return 0; }, "cachegen scheme=paper level");
    FAIL() << "level 7 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cachegen scheme=paper level 7 out of range (0..6)");
  }
}

}  // namespace
}  // namespace kvs::codec
