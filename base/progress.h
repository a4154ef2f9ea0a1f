// Progress for long jobs: a redrawn bar with rate and ETA on a terminal,
// plain lines (at most one every few seconds) when stderr is not a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvs {

class Progress {
 public:
  // `total` units of work named `unit` (e.g. "chunks", "tokens"); `done`
  // starts above 0 when a job resumes.
  Progress(std::string label, uint64_t total, std::string unit, uint64_t done = 0);
  ~Progress();  // finishes the line

  void advance(uint64_t n = 1, const std::string& note = {});
  void set(uint64_t done, const std::string& note = {});
  void finish();

 private:
  void draw(bool force);

  std::string label_, unit_, note_;
  uint64_t total_, done_, start_done_;
  uint64_t drawn_done_ = UINT64_MAX;  // `done_` when last drawn
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kvs
