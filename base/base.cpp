#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
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

std::string printable(std::string_view text, size_t max_chars) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= max_chars) return out + "...";
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) out += char(c);
    else out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(fmt::format("{}: is a folder, not a file", path));
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

namespace {

// Writes and flushes one file; false (errno set) on failure.
bool write_flushed(const std::string& path, std::string_view data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size() && std::fflush(f) == 0 &&
                  ::fsync(::fileno(f)) == 0;
  const int err = errno;
  const bool closed = std::fclose(f) == 0;
  if (!ok) errno = err;
  return ok && closed;
}

}  // namespace

void write_files_atomic(const std::string& dir, const std::vector<std::pair<std::string, std::string_view>>& files) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string suffix = fmt::format(".tmp.{}", ::getpid());
  if (!fs::exists(dir, ec)) {
    // A fresh folder: fill a temporary sibling, then rename it into place.
    fs::path target = fs::path(dir).lexically_normal();
    if (target.filename().empty()) target = target.parent_path();  // "out/"
    const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    if (ec) throw Error(fmt::format("{}: cannot create the folder: {}", parent.string(), ec.message()));
    const fs::path tmp = target.string() + suffix;
    fs::remove_all(tmp, ec);
    if (!fs::create_directory(tmp, ec)) throw Error(fmt::format("{}: cannot create: {}", tmp.string(), ec.message()));
    for (const auto& [name, data] : files)
      if (!write_flushed((tmp / name).string(), data)) {
        const int err = errno;
        fs::remove_all(tmp, ec);
        throw Error(fmt::format("{}: cannot write: {}", (target / name).string(), std::strerror(err)));
      }
    fs::rename(tmp, target, ec);
    if (!ec) return;
    fs::remove_all(tmp, ec);
    if (!fs::is_directory(dir, ec))
      throw Error(fmt::format("{}: cannot create the folder: {}", dir, std::strerror(errno)));
    // Someone created it meanwhile: write into it as into an existing folder.
  }
  if (!fs::is_directory(dir, ec)) throw Error(fmt::format("{}: exists and is not a folder", dir));
  for (const auto& [name, data] : files)
    if (fs::is_directory(fs::path(dir) / name, ec))
      throw Error(fmt::format("{}: is a folder, cannot write the file there", (fs::path(dir) / name).string()));
  std::vector<std::string> written;
  auto remove_written = [&] {
    for (const auto& t : written) std::remove(t.c_str());
  };
  for (const auto& [name, data] : files) {
    const std::string tmp = (fs::path(dir) / name).string() + suffix;
    if (!write_flushed(tmp, data)) {
      const int err = errno;
      std::remove(tmp.c_str());
      remove_written();
      throw Error(fmt::format("{}: cannot write: {}", (fs::path(dir) / name).string(), std::strerror(err)));
    }
    written.push_back(tmp);
  }
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string path = (fs::path(dir) / files[i].first).string();
    if (std::rename(written[i].c_str(), path.c_str()) != 0) {
      const int err = errno;
      remove_written();
      throw Error(fmt::format("{}: cannot write: {}", path, std::strerror(err)));
    }
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
