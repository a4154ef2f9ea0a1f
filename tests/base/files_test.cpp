// Issue 25: folders named as folders, input echoed without control bytes,
// sets of files written all or none.
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"

namespace kvs {
namespace {

namespace fs = std::filesystem;

TEST(Printable, EscapesControlAndNonAsciiBytesAndCuts) {
  EXPECT_EQ(printable("abc 1.5"), "abc 1.5");
  EXPECT_EQ(printable(std::string("a\x1b[31m\x01\xff\n", 9)), "a\\x1b[31m\\x01\\xff\\x0a");
  EXPECT_EQ(printable(std::string(100, 'x'), 10), "xxxxxxxxxx...");
}

TEST(ReadFile, AFolderIsNamedAsAFolder) {
  try {
    read_file(fs::temp_directory_path().string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), fs::temp_directory_path().string() + ": is a folder, not a file");
  }
}

TEST(WriteFilesAtomic, AllOrNone) {
  const fs::path dir = fs::temp_directory_path() / ("kvs-files-" + std::to_string(::getpid())) / "out";
  fs::remove_all(dir.parent_path());
  write_files_atomic(dir.string(), {{"a.txt", "A"}, {"b.txt", "B"}});  // parent and folder created
  EXPECT_EQ(read_file((dir / "a.txt").string()), "A");
  EXPECT_EQ(read_file((dir / "b.txt").string()), "B");
  write_file_atomic((dir / "other.txt").string(), "kept");
  write_files_atomic(dir.string(), {{"a.txt", "A2"}, {"b.txt", "B2"}});  // an existing folder: others kept
  EXPECT_EQ(read_file((dir / "a.txt").string()), "A2");
  EXPECT_EQ(read_file((dir / "other.txt").string()), "kept");
  fs::remove(dir / "b.txt");
  fs::create_directory(dir / "b.txt");
  EXPECT_THROW(write_files_atomic(dir.string(), {{"a.txt", "A3"}, {"b.txt", "B3"}}), Error);
  EXPECT_EQ(read_file((dir / "a.txt").string()), "A2");
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 3u);  // a.txt, other.txt, the b.txt folder: no temporaries
  // A path that is a file, not a folder.
  EXPECT_THROW(write_files_atomic((dir / "other.txt").string(), {{"x", "y"}}), Error);
  fs::remove_all(dir.parent_path());
}

}  // namespace
}  // namespace kvs
