// Reading and atomically writing whole files.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvs {

// Whole file as bytes; throws kvs::Error naming the file when unreadable.
std::string read_file(const std::string& path);

// Writes `data` to `path` atomically: a temporary file in the same folder,
// flushed, then renamed over `path`. An interrupted write leaves the old file
// (or none), never a half-written one.
void write_file_atomic(const std::string& path, std::string_view data);

// Writes a set of files into folder `dir` so that it ends with all of them
// or, on an error, none of the new ones: when `dir` does not exist, into a
// temporary sibling folder renamed to `dir` at the end; otherwise each to a
// temporary file in `dir`, all written and flushed before any is renamed over
// its name (files already there that are not in the set are left alone).
void write_files_atomic(const std::string& dir, const std::vector<std::pair<std::string, std::string_view>>& files);

}  // namespace kvs
