// Reading and writing bandwidth traces. Every reader returns a traces::Trace
// (trace.h) and reports bad input as kvs::Error "FILE:LINE: problem".
//
// Formats:
//  - mahimahi: one integer per line, a timestamp in milliseconds; each line is
//    one opportunity to deliver one 1500-byte packet (repeated timestamps =
//    several packets in that millisecond). Timestamps never decrease; the
//    trace repeats with period = the last timestamp (mahimahi's mm-link), so
//    the last timestamp must be > 0. The rate form has one segment per
//    millisecond bin: bin [t, t+1) ms carries (opportunities at t) x 1500 x 8
//    bits, so the bits per period are exact. Empty lines are errors, as in
//    mahimahi. Timestamps above 10^9 ms (11.6 days) are errors: a trace is
//    replayed and written millisecond by millisecond.
//  - two-column (Pensieve-style ABR simulators): "time_s throughput_mbps" per
//    line, separated by whitespace, no header. As in Pensieve's simulator the
//    value on row i holds between t(i-1) and t(i); the first row's value is
//    never used; the trace loops with period t(last) - t(0). Segment i-1 thus
//    starts at t(i-1) - t(0) with rate value(i).
//  - csv: a header line, then rows. The caller names the time column and its
//    unit (s or ms, or a sample-index column with an explicit interval) and
//    the value column and its unit (mbps, bps, or bytes delivered in the
//    interval); rows may be filtered (e.g. carrier=VERIZON). Row i's value
//    holds from its time until the next row's; the last row's until a final
//    row whose value is empty (an end marker, which the writer writes), else
//    for the median interval between rows, else (a single row) for the given
//    interval. An empty value on any other row is an error. Filters that
//    match no row are an error naming the values each filtered column holds.
// Every reader skips a UTF-8 byte-order mark, refuses UTF-16 text (with its
// byte-order mark) and rates above 10 Tbit/s, and quotes bad input with
// control bytes escaped (kvs::printable).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "traces/trace.h"

namespace kvs::traces {

enum class Format { kAuto, kMahimahi, kTwoColumn, kCsv };
Format format_from_string(const std::string& name);  // auto|mahimahi|two-column|csv; throws kvs::Error
const char* to_string(Format f);

struct CsvOptions {
  std::string time_column = "time_s";  // unit from the suffix: _s, _ms; or an index column with interval_s
  double interval_s = 0;               // > 0: time = (value of time_column) x interval_s
  std::string value_column = "throughput_mbps";  // unit from suffix: _mbps, _bps, _bytes (bytes per interval)
  std::map<std::string, std::string> filters;    // column -> required value
};

struct LoadOptions {
  Format format = Format::kAuto;
  CsvOptions csv;
};

// Reads a trace file; kAuto detects the format from the first non-blank line
// (letters and a comma: csv; one integer, blanks around it allowed:
// mahimahi, whose reader then refuses the blanks; anything else: two-column).
Trace load_trace(const std::string& path, const LoadOptions& options = {});
Trace parse_trace(const std::string& text, const std::string& name, const LoadOptions& options = {});
Format detect_format(const std::string& text);

// Writers. mahimahi: opportunities when the trace has them, otherwise derived
// from the rate by carrying fractional packets forward, so bytes per period
// are exact to within one packet. two-column: a first row at 0, then one row
// per segment end. csv: header "time_s,throughput_mbps", one row per segment,
// then the end row "duration_s," (empty value). Reading a written trace back
// gives the same segments and duration (rates to the rounding of Mbit/s;
// mahimahi: bytes per period within one packet).
std::string format_trace(const Trace& trace, Format format);
void save_trace(const Trace& trace, const std::string& path, Format format);

}  // namespace kvs::traces
