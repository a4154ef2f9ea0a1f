// The one error type for problems a user can cause (bad input files, bad
// options). Messages name the file and place: "trace.csv:12: negative rate".
// `kvstream` prints what() on one line and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace kvs {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "file:line: message" (line omitted when 0).
std::string at_location(const std::string& file, size_t line, const std::string& message);

}  // namespace kvs
