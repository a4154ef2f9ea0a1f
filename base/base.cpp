#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/core.h>

#include "base/error.h"
#include "base/files.h"
#include "base/progress.h"

namespace kvs {

std::string at_location(const std::string& file, size_t line, const std::string& message) {
  return line ? fmt::format("{}:{}: {}", file, line, message) : fmt::format("{}: {}", file, message);
}

std::string closest_name(const std::string& word, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = size_t(-1);
  for (const auto& k : known) {
    // Levenshtein distance, one row at a time.
    std::vector<size_t> row(k.size() + 1);
    for (size_t j = 0; j <= k.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= k.size(); ++j) {
        const size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (word[i - 1] == k[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    if (row[k.size()] < best_d) best_d = row[k.size()], best = k;
  }
  const size_t longer = std::max(word.size(), best.size());
  return best_d > 0 && best_d * 3 <= longer + 2 ? best : std::string();
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& known) {
  const std::string c = closest_name(word, known);
  return c.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", c);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(fmt::format("{}: read error", path));
  return std::move(ss).str();
}

void write_file_atomic(const std::string& path, std::string_view data) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(fmt::format("{}: cannot create: {}", tmp, std::strerror(errno)));
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size() && std::fflush(f) == 0 &&
                  ::fsync(::fileno(f)) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(fmt::format("{}: cannot write: {}", path, std::strerror(err)));
  }
}

Progress::Progress(std::string label, uint64_t total, std::string unit, uint64_t done)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), done_(done), start_done_(done),
      tty_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {
  draw(true);
}

Progress::~Progress() { finish(); }

void Progress::advance(uint64_t n, const std::string& note) { set(done_ + n, note); }

void Progress::set(uint64_t done, const std::string& note) {
  done_ = done;
  if (!note.empty()) note_ = note;
  draw(done_ >= total_);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (drawn_done_ != done_) draw(true);
  if (tty_) std::fputc('\n', stderr);
}

void Progress::draw(bool force) {
  const auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (!force && since_draw < (tty_ ? 0.2 : 5.0)) return;
  if (force && !tty_ && drawn_done_ == done_ && done_ >= total_) return;  // the final line once
  last_draw_ = now;
  drawn_done_ = done_;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? double(done_ - start_done_) / elapsed : 0.0;
  const double eta = rate > 0 && total_ > done_ ? double(total_ - done_) / rate : 0.0;
  const double frac = total_ ? double(done_) / double(total_) : 1.0;
  std::string eta_text = rate > 0 ? fmt::format("{:02d}:{:02d}", int(eta) / 60, int(eta) % 60) : "--:--";
  if (tty_) {
    constexpr int kWidth = 28;
    const int filled = int(frac * kWidth);
    std::string bar(size_t(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r%s [%s] %llu/%llu %s %.1f %s/s ETA %s %s\x1b[K", label_.c_str(), bar.c_str(),
                 (unsigned long long)done_, (unsigned long long)total_, unit_.c_str(), rate, unit_.c_str(),
                 eta_text.c_str(), note_.c_str());
  } else {
    std::fprintf(stderr, "%s: %llu/%llu %s (%.0f%%) %.1f %s/s ETA %s %s\n", label_.c_str(),
                 (unsigned long long)done_, (unsigned long long)total_, unit_.c_str(), 100 * frac, rate,
                 unit_.c_str(), eta_text.c_str(), note_.c_str());
  }
  std::fflush(stderr);
}

}  // namespace kvs
