// The one error type for problems a user can cause (bad input files, bad
// options). Messages name the file and place: "trace.csv:12: negative rate".
// `kvstream` prints what() on one line and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kvs {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "file:line: message" (line omitted when 0).
std::string at_location(const std::string& file, size_t line, const std::string& message);

// The known name closest to `word` by edit distance, when it is close enough
// to be a likely misspelling (at most a third of the longer name); else empty.
std::string closest_name(const std::string& word, const std::vector<std::string>& known);
// " (did you mean 'x'?)" for the closest known name, or empty.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& known);

// Input text safe to echo in a message: bytes outside printable ASCII as
// \xNN (no raw control bytes reach the terminal), cut to `max_chars` with "...".
std::string printable(std::string_view text, size_t max_chars = 60);

}  // namespace kvs
