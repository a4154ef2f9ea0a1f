#include <filesystem>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"

namespace kvs {
namespace {

TEST(Files, AtomicWriteReplacesAndReadsBack) {
  const auto dir = std::filesystem::temp_directory_path() / "kvs_base_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "f.txt").string();
  write_file_atomic(path, "first");
  write_file_atomic(path, "second");
  EXPECT_EQ(read_file(path), "second");
  for (const auto& e : std::filesystem::directory_iterator(dir))  // no temporary left behind
    EXPECT_EQ(e.path().filename(), "f.txt");
  std::filesystem::remove_all(dir);
}

TEST(Files, MissingFileNamesThePath) {
  try {
    read_file("/nonexistent/kvs.txt");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/kvs.txt"), std::string::npos);
  }
}

TEST(Files, WriteIntoMissingFolderFailsWithoutLeavingFiles) {
  EXPECT_THROW(write_file_atomic("/nonexistent-dir/x.txt", "x"), Error);
}

TEST(Error, LocationFormat) {
  EXPECT_EQ(at_location("a.csv", 12, "negative rate"), "a.csv:12: negative rate");
  EXPECT_EQ(at_location("a.csv", 0, "empty file"), "a.csv: empty file");
}

TEST(Error, ClosestNameFindsMisspellingsOnly) {
  const std::vector<std::string> known = {"rtt_ms", "rate_mbps", "loss_rate", "level"};
  EXPECT_EQ(closest_name("rtt_mss", known), "rtt_ms");
  EXPECT_EQ(closest_name("lvl", known), "level");
  EXPECT_EQ(closest_name("rate_mbs", known), "rate_mbps");
  EXPECT_EQ(closest_name("bandwidth", known), "");
  EXPECT_EQ(closest_name("level", known), "");  // an exact name is not a misspelling
  EXPECT_EQ(did_you_mean("los_rate", known), " (did you mean 'loss_rate'?)");
  EXPECT_EQ(did_you_mean("x", {}), "");
}

}  // namespace
}  // namespace kvs
