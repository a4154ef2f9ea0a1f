// Reading and atomically writing whole files.
#pragma once

#include <string>
#include <string_view>

namespace kvs {

// Whole file as bytes; throws kvs::Error naming the file when unreadable.
std::string read_file(const std::string& path);

// Writes `data` to `path` atomically: a temporary file in the same folder,
// flushed, then renamed over `path`. An interrupted write leaves the old file
// (or none), never a half-written one.
void write_file_atomic(const std::string& path, std::string_view data);

}  // namespace kvs
