#include "traces/formats.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

#include <fmt/core.h>

#include "base/error.h"
#include "base/files.h"

namespace kvs::traces {

namespace {

[[noreturn]] void fail(const std::string& name, size_t line, const std::string& what) {
  throw Error(at_location(name, line, what));
}

std::vector<std::string_view> split_lines(const std::string& text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view l(text.data() + start, end - start);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    lines.push_back(l);
    start = end + 1;
  }
  return lines;
}

std::vector<std::string_view> split_ws(std::string_view l) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < l.size()) {
    while (i < l.size() && (l[i] == ' ' || l[i] == '\t')) ++i;
    size_t j = i;
    while (j < l.size() && l[j] != ' ' && l[j] != '\t') ++j;
    if (j > i) out.push_back(l.substr(i, j - i));
    i = j;
  }
  return out;
}

bool is_blank(std::string_view l) { return l.find_first_not_of(" \t") == std::string_view::npos; }

double to_number(std::string_view tok, const std::string& name, size_t line, const char* what) {
  double v = 0;
  auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
  if (ec != std::errc() || p != tok.data() + tok.size() || !std::isfinite(v))
    fail(name, line, fmt::format("{}: '{}' is not a finite number", what, printable(tok)));
  return v;
}

// Longest mahimahi period read (10^9 ms, 11.6 days): a trace is replayed and
// written millisecond by millisecond, so a longer one is not a recording but
// a runaway (a timestamp of 2^64 - 1 would otherwise ask for 2^64 bins).
constexpr uint64_t kMaxMahimahiPeriodMs = 1'000'000'000;
// Fastest rate read from a trace: 10 Tbit/s (faster is a unit mistake).
constexpr double kMaxTraceMbps = 1e7;

Trace parse_mahimahi(const std::string& text, const std::string& name) {
  DeliveryOpportunities opp;
  opp.times_ms.reserve(size_t(std::count(text.begin(), text.end(), '\n')) + 1);
  // Line by line without a table of lines (a 1 GB trace has 10^8 of them).
  size_t line = 0, pos = 0;
  while (pos < text.size()) {
    ++line;
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view l(text.data() + pos, nl - pos);
    pos = nl + 1;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.empty()) fail(name, line, "empty line (mahimahi traces have one timestamp per line)");
    uint64_t ms = 0;
    auto [p, ec] = std::from_chars(l.data(), l.data() + l.size(), ms);
    if (ec != std::errc() || p != l.data() + l.size())
      fail(name, line, fmt::format("'{}' is not a non-negative integer millisecond timestamp", printable(l)));
    if (ms > kMaxMahimahiPeriodMs)
      fail(name, line, fmt::format("timestamp {} ms is past the longest period read, {} ms (11.6 days)", ms,
                                   kMaxMahimahiPeriodMs));
    if (!opp.times_ms.empty() && ms < opp.times_ms.back())
      fail(name, line, fmt::format("timestamp {} ms decreases (previous {} ms)", ms, opp.times_ms.back()));
    opp.times_ms.push_back(ms);
  }
  if (opp.times_ms.empty()) fail(name, 0, "empty trace (no timestamps)");
  if (opp.times_ms.back() == 0) fail(name, line, "last timestamp is 0 (the trace's period must be > 0)");
  opp.period_ms = opp.times_ms.back();
  Trace tr;
  tr.name = name;
  tr.duration_s = double(opp.period_ms) / 1000.0;
  tr.loops = true;
  // One segment per millisecond bin with opportunities; empty bins at rate 0.
  // A timestamp equal to the period belongs to the next period's bin 0
  // (mahimahi releases it at base + period), so it wraps to 0. Timestamps are
  // sorted, so the bins come in order, those wrapped to 0 last.
  const auto& times = opp.times_ms;
  size_t last = times.size();
  while (last > 0 && times[last - 1] == opp.period_ms) --last;
  const uint32_t wrapped = uint32_t(times.size() - last);
  const double bits_per_opp = double(opp.packet_bytes) * 8.0;
  uint64_t cursor = 0;
  auto add_bin = [&](uint64_t ms, uint64_t count) {
    if (ms > cursor) tr.segments.push_back({double(cursor) / 1000.0, 0.0});
    tr.segments.push_back({double(ms) / 1000.0, bits_per_opp * double(count) * 1000.0});
    cursor = ms + 1;
  };
  size_t i = 0;
  if (wrapped > 0) {
    uint64_t count = wrapped;
    for (; i < last && times[i] == 0; ++i) ++count;
    add_bin(0, count);
  }
  while (i < last) {
    size_t j = i;
    while (j < last && times[j] == times[i]) ++j;
    add_bin(times[i], j - i);
    i = j;
  }
  if (cursor < opp.period_ms) tr.segments.push_back({double(cursor) / 1000.0, 0.0});
  tr.opportunities = std::move(opp);
  return tr;
}

Trace parse_two_column(const std::string& text, const std::string& name) {
  std::vector<std::pair<double, double>> rows;
  std::vector<size_t> line_of;
  const auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (is_blank(lines[i])) continue;
    const auto f = split_ws(lines[i]);
    if (f.size() != 2)
      fail(name, i + 1,
           fmt::format("expected 2 columns (time_s throughput_mbps) separated by spaces or tabs, found {}", f.size()));
    const double t = to_number(f[0], name, i + 1, "time");
    const double v = to_number(f[1], name, i + 1, "throughput");
    if (v < 0) fail(name, i + 1, fmt::format("negative throughput {}", v));
    if (v > kMaxTraceMbps) fail(name, i + 1, fmt::format("throughput {} Mbit/s is over 10 Tbit/s", v));
    if (!rows.empty() && t <= rows.back().first)
      fail(name, i + 1, fmt::format("time {} s does not increase (previous {} s)", t, rows.back().first));
    rows.emplace_back(t, v);
    line_of.push_back(i + 1);
  }
  if (rows.size() < 2) fail(name, 0, "need at least 2 rows (the first row's value is never used)");
  Trace tr;
  tr.name = name;
  const double t0 = rows[0].first;
  for (size_t i = 1; i < rows.size(); ++i) tr.segments.push_back({rows[i - 1].first - t0, rows[i].second * 1e6});
  tr.duration_s = rows.back().first - t0;
  tr.loops = true;
  return tr;
}

std::vector<std::string> split_csv(std::string_view l) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char c : l) {
    if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) out.push_back(std::move(cur)), cur.clear();
    else cur += c;
  }
  out.push_back(cur);
  for (auto& s : out) {
    const auto a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
    s = a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  }
  return out;
}

bool ends_with(const std::string& s, const char* suffix) {
  const std::string x(suffix);
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

Trace parse_csv(const std::string& text, const std::string& name, const CsvOptions& o) {
  const auto lines = split_lines(text);
  size_t first = 0;
  while (first < lines.size() && is_blank(lines[first])) ++first;
  if (first == lines.size()) fail(name, 0, "empty file (expected a header line)");
  const auto header = split_csv(lines[first]);
  auto column = [&](const std::string& col) -> size_t {
    auto it = std::find(header.begin(), header.end(), col);
    if (it == header.end()) {
      std::string known;
      std::vector<std::string> names;
      for (const auto& h : header) known += (known.empty() ? "" : ", ") + printable(h), names.push_back(h);
      fail(name, first + 1, fmt::format("no column '{}'{} (columns: {})", printable(col), did_you_mean(col, names),
                                        printable(known, 400)));
    }
    return size_t(it - header.begin());
  };
  const size_t tcol = column(o.time_column), vcol = column(o.value_column);
  double time_scale;
  if (o.interval_s > 0) time_scale = o.interval_s;
  else if (ends_with(o.time_column, "_ms")) time_scale = 1e-3;
  else if (ends_with(o.time_column, "_s")) time_scale = 1.0;
  else fail(name, first + 1, fmt::format("time column '{}': unit unknown (name it *_s or *_ms, or give an interval)", o.time_column));
  enum { kMbps, kBps, kBytes } unit;
  if (ends_with(o.value_column, "_mbps")) unit = kMbps;
  else if (ends_with(o.value_column, "_bps")) unit = kBps;
  else if (ends_with(o.value_column, "_bytes") || o.value_column == "bytes") unit = kBytes;
  else fail(name, first + 1, fmt::format("value column '{}': unit unknown (name it *_mbps, *_bps or *_bytes)", o.value_column));
  std::vector<std::pair<size_t, std::string>> filters;
  for (const auto& [col, val] : o.filters) filters.emplace_back(column(col), val);

  std::vector<std::pair<double, double>> rows;  // time_s, raw value
  // Per filter, the values its column holds (a few), for the error when none match.
  std::vector<std::vector<std::string>> seen(filters.size());
  // A last row with an empty value only says when the trace ends (the writer
  // writes one); an empty value on any other row is an error.
  double end_time = 0;
  size_t end_line = 0;
  for (size_t i = first + 1; i < lines.size(); ++i) {
    if (is_blank(lines[i])) continue;
    const auto f = split_csv(lines[i]);
    if (f.size() != header.size())
      fail(name, i + 1, fmt::format("{} fields, the header has {}", f.size(), header.size()));
    bool keep = true;
    for (size_t k = 0; k < filters.size(); ++k) {
      const auto& [c, v] = filters[k];
      keep = keep && f[c] == v;
      if (seen[k].size() < 12 && std::find(seen[k].begin(), seen[k].end(), f[c]) == seen[k].end())
        seen[k].push_back(f[c]);
    }
    if (!keep) continue;
    if (end_line)
      fail(name, end_line, fmt::format("{} is empty (only the last row may leave it empty, to mark the end)",
                                       o.value_column));
    const double t = to_number(f[tcol], name, i + 1, o.time_column.c_str()) * time_scale;
    if (!rows.empty() && t <= rows.back().first)
      fail(name, i + 1,
           fmt::format("time {} s does not increase (previous {} s){}", t, rows.back().first,
                       header.size() > 2 ? " (several runs or carriers in one file? keep one with a filter)" : ""));
    if (f[vcol].empty() && !rows.empty()) {
      end_time = t, end_line = i + 1;
      continue;
    }
    const double v = to_number(f[vcol], name, i + 1, o.value_column.c_str());
    if (v < 0) fail(name, i + 1, fmt::format("negative {} {}", o.value_column, v));
    rows.emplace_back(t, v);
  }
  if (rows.empty()) {
    // Name what the filters asked for and what the file holds (5Gophers
    // writes distance_in_meters as 25.0, not 25).
    std::string detail;
    for (size_t k = 0; k < filters.size(); ++k) {
      std::string values;
      for (const auto& v : seen[k]) values += (values.empty() ? "" : ", ") + printable(v, 30);
      detail += fmt::format("; {}={}: the column holds {}{}", printable(header[filters[k].first]),
                            printable(filters[k].second), values.empty() ? "nothing" : values,
                            seen[k].size() == 12 ? ", ..." : "");
    }
    fail(name, 0, "no data rows" + (filters.empty() ? std::string() : " match the filters" + detail));
  }
  // The last row lasts until the end row, else the median interval between
  // rows, else (one row) the given interval; otherwise its length is unknown.
  if (rows.size() == 1 && !end_line && !(o.interval_s > 0))
    fail(name, 0, "one data row: how long it lasts is unknown (give the interval between rows, interval_s, or "
                  "an end row with an empty value)");
  std::vector<double> gaps;
  for (size_t i = 1; i < rows.size(); ++i) gaps.push_back(rows[i].first - rows[i - 1].first);
  double last_gap = o.interval_s;
  if (end_line) {
    last_gap = end_time - rows.back().first;
  } else if (!gaps.empty()) {
    std::nth_element(gaps.begin(), gaps.begin() + ptrdiff_t(gaps.size() / 2), gaps.end());
    last_gap = gaps[gaps.size() / 2];
  }
  Trace tr;
  tr.name = name;
  const double t0 = rows[0].first;
  for (size_t i = 0; i < rows.size(); ++i) {
    const double len = i + 1 < rows.size() ? rows[i + 1].first - rows[i].first : last_gap;
    double bps = rows[i].second;
    if (unit == kMbps) bps *= 1e6;
    if (unit == kBytes) bps = bps * 8.0 / len;
    if (!(bps <= kMaxTraceMbps * 1e6))
      fail(name, 0, fmt::format("row at {} s: rate {} bit/s is over 10 Tbit/s", rows[i].first, bps));
    tr.segments.push_back({rows[i].first - t0, bps});
  }
  tr.duration_s = rows.back().first - t0 + last_gap;
  tr.loops = true;
  return tr;
}

}  // namespace

Format format_from_string(const std::string& n) {
  if (n == "auto") return Format::kAuto;
  if (n == "mahimahi") return Format::kMahimahi;
  if (n == "two-column" || n == "pensieve") return Format::kTwoColumn;
  if (n == "csv") return Format::kCsv;
  throw Error(fmt::format("unknown trace format '{}' (expected auto, mahimahi, two-column or csv)", n));
}

const char* to_string(Format f) {
  switch (f) {
    case Format::kAuto: return "auto";
    case Format::kMahimahi: return "mahimahi";
    case Format::kTwoColumn: return "two-column";
    case Format::kCsv: return "csv";
  }
  return "?";
}

Format detect_format(const std::string& text) {
  for (size_t pos = 0; pos < text.size();) {  // up to the first non-blank line only
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view l(text.data() + pos, nl - pos);
    pos = nl + 1;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (is_blank(l)) continue;
    if (l.find_first_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_") != std::string_view::npos &&
        l.find(',') != std::string_view::npos)
      return Format::kCsv;
    // One integer, even with blanks around it (which the mahimahi reader then
    // reports as such, rather than the two-column reader as a missing column).
    const auto f = split_ws(l);
    if (f.size() == 1 && f[0].find_first_not_of("0123456789") == std::string_view::npos) return Format::kMahimahi;
    return Format::kTwoColumn;
  }
  return Format::kMahimahi;  // empty: the mahimahi reader reports it
}

Trace parse_trace(const std::string& text, const std::string& name, const LoadOptions& options) {
  // A UTF-8 byte-order mark (spreadsheets write one) is not part of the first line.
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) return parse_trace(text.substr(3), name, options);
  // Windows' "Unicode text" is UTF-16: every other byte 0, which no reader takes.
  if (text.size() >= 2 && (text.compare(0, 2, "\xFF\xFE") == 0 || text.compare(0, 2, "\xFE\xFF") == 0))
    fail(name, 0, "UTF-16 text (it starts with a UTF-16 byte-order mark): save the trace as UTF-8 or ASCII");
  Format f = options.format == Format::kAuto ? detect_format(text) : options.format;
  if (text.empty()) fail(name, 0, "empty file");
  switch (f) {
    case Format::kMahimahi: return parse_mahimahi(text, name);
    case Format::kTwoColumn: return parse_two_column(text, name);
    case Format::kCsv: return parse_csv(text, name, options.csv);
    case Format::kAuto: break;
  }
  fail(name, 0, "unknown format");
}

Trace load_trace(const std::string& path, const LoadOptions& options) {
  return parse_trace(read_file(path), path, options);
}

std::string format_trace(const Trace& tr, Format format) {
  std::string out;
  if (format == Format::kMahimahi) {
    if (tr.opportunities) {
      for (uint64_t t : tr.opportunities->times_ms) out += fmt::format("{}\n", t);
      return out;
    }
    // Carry fractional packets forward so bytes per period are exact within one packet.
    if (!(tr.duration_s * 1000.0 <= double(kMaxMahimahiPeriodMs)))
      throw Error(fmt::format("{}: a mahimahi trace lists every millisecond; {} s is longer than the longest "
                              "period written, {} ms",
                              tr.name, tr.duration_s, kMaxMahimahiPeriodMs));
    const uint64_t period_ms = std::max<uint64_t>(1, uint64_t(std::llround(tr.duration_s * 1000.0)));
    double carry = 0;
    bool any = false;
    for (uint64_t ms = 0; ms < period_ms; ++ms) {
      carry += tr.bits_between(double(ms) / 1000.0, double(ms + 1) / 1000.0) / (1500.0 * 8.0);
      while (carry >= 1.0) {
        out += fmt::format("{}\n", ms);
        carry -= 1.0;
        any = true;
      }
    }
    out += fmt::format("{}\n", period_ms);  // the period: one more opportunity at its end
    (void)any;
    return out;
  }
  if (format == Format::kTwoColumn) {
    out += fmt::format("{}\t{}\n", 0.0, tr.segments.empty() ? 0.0 : tr.segments[0].rate_bps / 1e6);
    for (size_t i = 0; i < tr.segments.size(); ++i) {
      const double end = i + 1 < tr.segments.size() ? tr.segments[i + 1].start_s : tr.duration_s;
      out += fmt::format("{}\t{}\n", end, tr.segments[i].rate_bps / 1e6);
    }
    return out;
  }
  if (format == Format::kCsv) {
    out = "time_s,throughput_mbps\n";
    for (const auto& s : tr.segments) out += fmt::format("{},{}\n", s.start_s, s.rate_bps / 1e6);
    out += fmt::format("{},\n", tr.duration_s);  // the end row: the last segment's length is exact
    return out;
  }
  throw Error("format_trace: choose a format (mahimahi, two-column or csv)");
}

void save_trace(const Trace& trace, const std::string& path, Format format) {
  write_file_atomic(path, format_trace(trace, format));
}

}  // namespace kvs::traces
