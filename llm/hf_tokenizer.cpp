// Hugging Face tokenizer.json: reader and applier (see llm/tokenizer.h).
// Follows the `tokenizers` Rust crate's semantics step by step: added tokens
// split the raw text first, each remaining section is normalized and
// pre-tokenized, each piece goes through the BPE model, and the
// post-processor's template adds BOS/EOS. Regexes run on ICU (as `\p{L}`,
// `(?i:...)` and `(?!\S)` need), with byte offsets into the UTF-8 text.
#include <algorithm>
#include <cctype>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utext.h>

#include "base/error.h"
#include "base/files.h"
#include "llm/tokenizer.h"

namespace kvs::llm {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxId = int64_t(1) << 22;  // ids beyond this are taken as corrupt
constexpr int kMaxNesting = 16;               // Sequence inside Sequence ...
// A regex search gives up (kvs::Error) after this many ICU "ticks" (10000
// match steps each, about a millisecond): catastrophic backtracking in a
// user's pattern must not hang. Real tokenizers' patterns stay far below.
constexpr int32_t kRegexTimeLimit = 1000;

// Where a problem is: the file and the JSON pointer inside it.
struct Where {
  const std::string& file;
  [[noreturn]] void fail(const std::string& ptr, const std::string& what) const {
    throw Error(fmt::format("{}: {}: {}", file, ptr.empty() ? "/" : ptr, what));
  }
  const json& get(const json& obj, const std::string& ptr, const char* key) const {
    if (!obj.is_object()) fail(ptr, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) fail(ptr, fmt::format("missing \"{}\"", key));
    return *it;
  }
  std::string str(const json& obj, const std::string& ptr, const char* key) const {
    const json& v = get(obj, ptr, key);
    if (!v.is_string()) fail(ptr + "/" + key, "expected a string");
    return v.get<std::string>();
  }
  // A string, or `def` when the key is absent or null.
  std::string str_or(const json& obj, const std::string& ptr, const char* key, const std::string& def) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return def;
    if (!it->is_string()) fail(ptr + "/" + key, "expected a string");
    return it->get<std::string>();
  }
  bool flag(const json& obj, const std::string& ptr, const char* key, bool def) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return def;
    if (!it->is_boolean()) fail(ptr + "/" + key, "expected true or false");
    return it->get<bool>();
  }
  int64_t id(const json& v, const std::string& ptr) const {
    if (!v.is_number_integer()) fail(ptr, "expected an integer id");
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id >= kMaxId) fail(ptr, fmt::format("id {} out of range [0, {})", id, kMaxId));
    return id;
  }
  const json& array(const json& obj, const std::string& ptr, const char* key) const {
    const json& v = get(obj, ptr, key);
    if (!v.is_array()) fail(ptr + "/" + key, "expected an array");
    return v;
  }
};

// ---- UTF-8 -------------------------------------------------------------------

size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xe) return 3;
  if ((c >> 3) == 0x1e) return 4;
  return 1;
}

// Length of the valid UTF-8 sequence at s[i], 0 if invalid there.
size_t valid_utf8_at(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return uint8_t(s[i + k]); };
  const uint8_t c = b(0);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint8_t lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
  else return 0;
  if (i + n > s.size()) return 0;
  if (b(1) < lo || b(1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(k) < 0x80 || b(k) > 0xbf) return 0;
  return n;
}

// Bytes to text as Rust's String::from_utf8_lossy: each maximal invalid
// subsequence becomes U+FFFD.
std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = valid_utf8_at(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    // Skip the lead byte and any continuation bytes that could still have
    // belonged to it (the "maximal subpart").
    const uint8_t c = uint8_t(s[i]);
    size_t need = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
    size_t k = 1;
    for (; k <= need && i + k < s.size(); ++k) {
      const uint8_t d = uint8_t(s[i + k]);
      uint8_t lo = 0x80, hi = 0xbf;
      if (k == 1 && c == 0xe0) lo = 0xa0;
      if (k == 1 && c == 0xed) hi = 0x9f;
      if (k == 1 && c == 0xf0) lo = 0x90;
      if (k == 1 && c == 0xf4) hi = 0x8f;
      if (d < lo || d > hi) break;
    }
    out += "\xef\xbf\xbd";
    i += k;
  }
  return out;
}

void append_utf8(std::string& out, UChar32 c) {
  if (c < 0x80) {
    out.push_back(char(c));
  } else if (c < 0x800) {
    out.push_back(char(0xc0 | (c >> 6)));
    out.push_back(char(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    out.push_back(char(0xe0 | (c >> 12)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3f)));
    out.push_back(char(0x80 | (c & 0x3f)));
  } else {
    out.push_back(char(0xf0 | (c >> 18)));
    out.push_back(char(0x80 | ((c >> 12) & 0x3f)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3f)));
    out.push_back(char(0x80 | (c & 0x3f)));
  }
}

UChar32 decode_utf8(std::string_view s, size_t i) {
  UChar32 c = 0;
  U8_NEXT_UNSAFE(reinterpret_cast<const uint8_t*>(s.data()), i, c);
  return c;
}

// GPT-2's byte <-> printable character table (ByteLevel).
struct ByteLevelTable {
  std::string to_char[256];
  std::unordered_map<UChar32, uint8_t> to_byte;
  ByteLevelTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      const UChar32 c = printable ? b : 256 + n++;
      append_utf8(to_char[b], c);
      to_byte[c] = uint8_t(b);
    }
  }
};
const ByteLevelTable& byte_level() {
  static const ByteLevelTable table;  // constant, built once
  return table;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string_view::npos; i = j + from.size()) {
    out.append(s.substr(i, j - i));
    out.append(to);
  }
  out.append(s.substr(i));
  return out;
}

// ---- regexes (ICU) -------------------------------------------------------------

class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const Where& where, const std::string& ptr)
      : place_(where.file + ": " + ptr) {
    UErrorCode status = U_ZERO_ERROR;
    UParseError pe{};
    pattern_.reset(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), literal ? UREGEX_LITERAL : 0,
                                              pe, status));
    if (U_FAILURE(status) || !pattern_)
      where.fail(ptr, fmt::format("regex \"{}\" does not compile ({} at offset {})", printable(pattern),
                                  u_errorName(status), pe.offset));
  }
  // Non-empty matches in UTF-8 text, as byte ranges.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    if (s.empty()) return out;
    UErrorCode status = U_ZERO_ERROR;
    UText* text = utext_openUTF8(nullptr, s.data(), int64_t(s.size()), &status);
    std::unique_ptr<icu::RegexMatcher> m(pattern_->matcher(status));
    if (U_SUCCESS(status)) {
      m->reset(text);
      m->setTimeLimit(kRegexTimeLimit, status);
    }
    while (U_SUCCESS(status) && m->find(status)) {
      const int64_t b = m->start64(status), e = m->end64(status);
      if (U_SUCCESS(status) && e > b) out.emplace_back(size_t(b), size_t(e));
    }
    utext_close(text);
    if (U_FAILURE(status))  // U_REGEX_TIME_OUT, U_REGEX_STACK_OVERFLOW, ...
      throw Error(fmt::format("{}: the regex gave up on the text ({})", place_, u_errorName(status)));
    return out;
  }

 private:
  std::unique_ptr<icu::RegexPattern> pattern_;
  std::string place_;  // file: JSON pointer, for messages
};

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits s at the matches as HF's NormalizedString::split does.
std::vector<std::string> split_by(std::string_view s, const std::vector<std::pair<size_t, size_t>>& matches,
                                  Behavior behavior, bool invert) {
  struct Seg {
    size_t b, e;
    bool match;
  };
  std::vector<Seg> segs;
  size_t at = 0;
  for (auto [b, e] : matches) {
    if (b > at) segs.push_back({at, b, invert});
    segs.push_back({b, e, !invert});
    at = e;
  }
  if (at < s.size()) segs.push_back({at, s.size(), invert});
  std::vector<Seg> out;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Seg& g : segs)
        if (!g.match) out.push_back(g);
      break;
    case Behavior::kIsolated:
      out = segs;
      break;
    case Behavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Seg& g : segs) {
        if (g.match && !prev_match && !out.empty()) out.back().e = g.e;
        else out.push_back(g);
        prev_match = g.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev_match = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->match && !prev_match && !out.empty()) out.back().b = it->b;
        else out.push_back(*it);
        prev_match = it->match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::kContiguous: {
      std::optional<bool> prev;
      for (const Seg& g : segs) {
        if (prev == g.match) out.back().e = g.e;
        else out.push_back(g);
        prev = g.match;
      }
      break;
    }
  }
  std::vector<std::string> pieces;
  for (const Seg& g : out)
    if (g.e > g.b) pieces.emplace_back(s.substr(g.b, g.e - g.b));
  return pieces;
}

// ---- normalizers ------------------------------------------------------------------

struct Normalizer {
  enum Kind { kUnicode, kPrepend, kReplace } kind = kPrepend;
  const icu::Normalizer2* unicode = nullptr;  // NFC, NFD, NFKC, NFKD (ICU singletons)
  std::string text;                            // Prepend: the prefix; Replace: the content
  std::string from;                            // Replace with a string pattern
  std::shared_ptr<Regex> regex;                // Replace with a regex pattern

  std::string apply(const std::string& s) const {
    switch (kind) {
      case kUnicode: {
        UErrorCode status = U_ZERO_ERROR;
        const icu::UnicodeString out = unicode->normalize(icu::UnicodeString::fromUTF8(s), status);
        if (U_FAILURE(status)) throw Error(fmt::format("tokenizer normalizer failed ({})", u_errorName(status)));
        std::string r;
        out.toUTF8String(r);
        return r;
      }
      case kPrepend:
        return s.empty() ? s : text + s;
      case kReplace: {
        if (!regex) return replace_all(s, from, text);
        std::string out;
        size_t at = 0;
        for (auto [b, e] : regex->find_all(s)) {
          out.append(s, at, b - at);
          out += text;
          at = e;
        }
        out.append(s, at);
        return out;
      }
    }
    return s;
  }
};

// {"String": s} or {"Regex": r}, as Split and Replace take.
std::shared_ptr<Regex> parse_pattern(const json& p, const Where& w, const std::string& ptr, std::string* literal) {
  if (p.is_object() && p.size() == 1 && p.contains("String") && p["String"].is_string()) {
    if (literal) {
      *literal = p["String"].get<std::string>();
      return nullptr;
    }
    return std::make_shared<Regex>(p["String"].get<std::string>(), true, w, ptr);
  }
  if (p.is_object() && p.size() == 1 && p.contains("Regex") && p["Regex"].is_string())
    return std::make_shared<Regex>(p["Regex"].get<std::string>(), false, w, ptr);
  w.fail(ptr, "expected {\"String\": ...} or {\"Regex\": ...}");
}

void parse_normalizer(const json& j, const Where& w, const std::string& ptr, int depth,
                      std::vector<Normalizer>& out) {
  if (j.is_null()) return;
  if (depth > kMaxNesting) w.fail(ptr, "normalizers nested too deeply");
  const std::string type = w.str(j, ptr, "type");
  Normalizer n;
  if (type == "Sequence") {
    const json& list = w.array(j, ptr, "normalizers");
    for (size_t i = 0; i < list.size(); ++i)
      parse_normalizer(list[i], w, fmt::format("{}/normalizers/{}", ptr, i), depth + 1, out);
    return;
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    UErrorCode status = U_ZERO_ERROR;
    n.kind = Normalizer::kUnicode;
    n.unicode = type == "NFC"    ? icu::Normalizer2::getNFCInstance(status)
                : type == "NFD"  ? icu::Normalizer2::getNFDInstance(status)
                : type == "NFKC" ? icu::Normalizer2::getNFKCInstance(status)
                                 : icu::Normalizer2::getNFKDInstance(status);
    if (U_FAILURE(status)) w.fail(ptr, fmt::format("ICU has no {} ({})", type, u_errorName(status)));
  } else if (type == "Prepend") {
    n.kind = Normalizer::kPrepend;
    n.text = w.str(j, ptr, "prepend");
  } else if (type == "Replace") {
    n.kind = Normalizer::kReplace;
    n.text = w.str(j, ptr, "content");
    n.regex = parse_pattern(w.get(j, ptr, "pattern"), w, ptr + "/pattern", &n.from);
  } else {
    w.fail(ptr + "/type", fmt::format("normalizer \"{}\" is not supported (NFC, NFD, NFKC, NFKD, Prepend, "
                                      "Replace, Sequence)", printable(type)));
  }
  out.push_back(std::move(n));
}

// ---- pre-tokenizers -----------------------------------------------------------------

enum class Prepend { kFirst, kAlways, kNever };

struct PreTokenizer {
  enum Kind { kSplit, kByteLevel, kMetaspace, kDigits } kind = kSplit;
  std::shared_ptr<Regex> regex;  // Split; ByteLevel with use_regex
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  Prepend prepend = Prepend::kAlways;
  bool split = true;
  bool individual_digits = false;  // Digits

  // Transforms the pieces; `at_start`: pieces[0] begins the input text.
  void apply(std::vector<std::string>& pieces, bool at_start) const {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string& p = pieces[i];
      switch (kind) {
        case kSplit:
          for (auto& s : split_by(p, regex->find_all(p), behavior, invert)) out.push_back(std::move(s));
          break;
        case kByteLevel: {
          if (add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(0, " ");
          std::vector<std::string> parts;
          if (regex) parts = split_by(p, regex->find_all(p), Behavior::kIsolated, false);
          else if (!p.empty()) parts.push_back(p);
          for (const std::string& s : parts) {
            std::string mapped;
            for (unsigned char c : s) mapped += byte_level().to_char[c];
            out.push_back(std::move(mapped));
          }
          break;
        }
        case kMetaspace: {
          std::string s = replace_all(p, " ", replacement);
          const bool starts = s.compare(0, replacement.size(), replacement) == 0;
          if (!starts && (prepend == Prepend::kAlways || (prepend == Prepend::kFirst && at_start && i == 0)))
            s.insert(0, replacement);
          if (!split) {
            if (!s.empty()) out.push_back(std::move(s));
            break;
          }
          std::vector<std::pair<size_t, size_t>> m;
          for (size_t k = s.find(replacement); k != std::string::npos; k = s.find(replacement, k + replacement.size()))
            m.emplace_back(k, k + replacement.size());
          for (auto& x : split_by(s, m, Behavior::kMergedWithNext, false)) out.push_back(std::move(x));
          break;
        }
        case kDigits: {  // Rust's char::is_numeric: categories Nd, Nl, No
          std::vector<std::pair<size_t, size_t>> m;
          for (size_t k = 0, n; k < p.size(); k += n) {
            n = utf8_len(uint8_t(p[k]));
            const int8_t type = u_charType(decode_utf8(p, k));
            if (type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER)
              m.emplace_back(k, k + n);
          }
          for (auto& x : split_by(p, m, individual_digits ? Behavior::kIsolated : Behavior::kContiguous, false))
            out.push_back(std::move(x));
          break;
        }
      }
    }
    pieces = std::move(out);
  }
};

const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

Behavior parse_behavior(const json& j, const Where& w, const std::string& ptr) {
  const std::string b = w.str(j, ptr, "behavior");
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  w.fail(ptr + "/behavior", fmt::format("unknown split behavior \"{}\"", printable(b)));
}

Prepend parse_prepend(const json& j, const Where& w, const std::string& ptr) {
  if (!j.contains("prepend_scheme") || j["prepend_scheme"].is_null())  // older files: add_prefix_space
    return w.flag(j, ptr, "add_prefix_space", true) ? Prepend::kAlways : Prepend::kNever;
  const std::string s = w.str(j, ptr, "prepend_scheme");
  if (s == "first") return Prepend::kFirst;
  if (s == "always") return Prepend::kAlways;
  if (s == "never") return Prepend::kNever;
  w.fail(ptr + "/prepend_scheme", fmt::format("unknown prepend_scheme \"{}\"", printable(s)));
}

std::string parse_replacement(const json& j, const Where& w, const std::string& ptr) {
  const std::string r = w.str(j, ptr, "replacement");
  if (r.empty() || valid_utf8_at(r, 0) != r.size()) w.fail(ptr + "/replacement", "expected one character");
  return r;
}

void parse_pre_tokenizer(const json& j, const Where& w, const std::string& ptr, int depth,
                         std::vector<PreTokenizer>& out) {
  if (j.is_null()) return;
  if (depth > kMaxNesting) w.fail(ptr, "pre-tokenizers nested too deeply");
  const std::string type = w.str(j, ptr, "type");
  PreTokenizer p;
  if (type == "Sequence") {
    const json& list = w.array(j, ptr, "pretokenizers");
    for (size_t i = 0; i < list.size(); ++i)
      parse_pre_tokenizer(list[i], w, fmt::format("{}/pretokenizers/{}", ptr, i), depth + 1, out);
    return;
  } else if (type == "Split") {
    p.kind = PreTokenizer::kSplit;
    p.regex = parse_pattern(w.get(j, ptr, "pattern"), w, ptr + "/pattern", nullptr);
    p.behavior = parse_behavior(j, w, ptr);
    p.invert = w.flag(j, ptr, "invert", false);
  } else if (type == "ByteLevel") {
    p.kind = PreTokenizer::kByteLevel;
    p.add_prefix_space = w.flag(j, ptr, "add_prefix_space", true);
    if (w.flag(j, ptr, "use_regex", true)) p.regex = std::make_shared<Regex>(kGpt2Regex, false, w, ptr);
  } else if (type == "Metaspace") {
    p.kind = PreTokenizer::kMetaspace;
    p.replacement = parse_replacement(j, w, ptr);
    p.prepend = parse_prepend(j, w, ptr);
    p.split = w.flag(j, ptr, "split", true);
  } else if (type == "Digits") {
    p.kind = PreTokenizer::kDigits;
    p.individual_digits = w.flag(j, ptr, "individual_digits", false);
  } else {
    w.fail(ptr + "/type", fmt::format("pre-tokenizer \"{}\" is not supported (ByteLevel, Split, Metaspace, "
                                      "Digits, Sequence)", printable(type)));
  }
  out.push_back(std::move(p));
}

// ---- decoders -----------------------------------------------------------------------

struct Decoder {
  enum Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip } kind = kFuse;
  std::string from, to;  // Replace; Metaspace: from = replacement
  Prepend prepend = Prepend::kAlways;
  std::string strip;  // Strip: the character
  size_t start = 0, stop = 0;

  void apply(std::vector<std::string>& tokens) const {
    switch (kind) {
      case kByteLevel: {
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string tb;
          bool all = true;
          for (size_t i = 0; i < t.size() && all; i += utf8_len(uint8_t(t[i]))) {
            auto it = byte_level().to_byte.find(decode_utf8(t, i));
            if (it == byte_level().to_byte.end()) all = false;
            else tb.push_back(char(it->second));
          }
          bytes += all ? tb : t;
        }
        tokens = {utf8_lossy(bytes)};
        break;
      }
      case kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i)
          tokens[i] = replace_all(tokens[i], from, i == 0 && prepend != Prepend::kNever ? "" : " ");
        break;
      case kReplace:
        for (std::string& t : tokens) t = replace_all(t, from, to);
        break;
      case kByteFallback: {
        std::vector<std::string> out;
        std::string run;
        size_t run_len = 0;
        auto flush = [&] {
          if (run_len == 0) return;
          if (utf8_lossy(run) == run) {
            out.push_back(run);
          } else {
            for (size_t k = 0; k < run_len; ++k) out.emplace_back("\xef\xbf\xbd");
          }
          run.clear();
          run_len = 0;
        };
        for (std::string& t : tokens) {
          int b = -1;
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(uint8_t(t[3])) &&
              std::isxdigit(uint8_t(t[4])))
            b = std::stoi(t.substr(3, 2), nullptr, 16);
          if (b >= 0) {
            run.push_back(char(b));
            ++run_len;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {all};
        break;
      }
      case kStrip:
        for (std::string& t : tokens) {
          for (size_t k = 0; k < start && t.compare(0, strip.size(), strip) == 0; ++k) t.erase(0, strip.size());
          for (size_t k = 0; k < stop && t.size() >= strip.size() &&
                             t.compare(t.size() - strip.size(), strip.size(), strip) == 0;
               ++k)
            t.erase(t.size() - strip.size());
        }
        break;
    }
  }
};

void parse_decoder(const json& j, const Where& w, const std::string& ptr, int depth, std::vector<Decoder>& out) {
  if (j.is_null()) return;
  if (depth > kMaxNesting) w.fail(ptr, "decoders nested too deeply");
  const std::string type = w.str(j, ptr, "type");
  Decoder d;
  if (type == "Sequence") {
    const json& list = w.array(j, ptr, "decoders");
    for (size_t i = 0; i < list.size(); ++i)
      parse_decoder(list[i], w, fmt::format("{}/decoders/{}", ptr, i), depth + 1, out);
    return;
  } else if (type == "ByteLevel") {
    d.kind = Decoder::kByteLevel;
  } else if (type == "Metaspace") {
    d.kind = Decoder::kMetaspace;
    d.from = parse_replacement(j, w, ptr);
    d.prepend = parse_prepend(j, w, ptr);
  } else if (type == "Replace") {
    d.kind = Decoder::kReplace;
    d.to = w.str(j, ptr, "content");
    if (parse_pattern(w.get(j, ptr, "pattern"), w, ptr + "/pattern", &d.from) || d.from.empty())
      w.fail(ptr + "/pattern", "the Replace decoder needs a non-empty {\"String\": ...} pattern");
  } else if (type == "ByteFallback") {
    d.kind = Decoder::kByteFallback;
  } else if (type == "Fuse") {
    d.kind = Decoder::kFuse;
  } else if (type == "Strip") {
    d.kind = Decoder::kStrip;
    d.strip = w.str(j, ptr, "content");
    if (d.strip.empty() || valid_utf8_at(d.strip, 0) != d.strip.size())
      w.fail(ptr + "/content", "expected one character");
    for (const char* key : {"start", "stop"}) {
      const json& v = w.get(j, ptr, key);
      if (!v.is_number_unsigned()) w.fail(ptr + "/" + key, "expected a count");
      (key[2] == 'a' ? d.start : d.stop) = size_t(std::min<uint64_t>(v.get<uint64_t>(), 1u << 20));
    }
  } else {
    w.fail(ptr + "/type", fmt::format("decoder \"{}\" is not supported (ByteLevel, Metaspace, Replace, "
                                      "ByteFallback, Fuse, Strip, Sequence)", printable(type)));
  }
  out.push_back(std::move(d));
}

// ---- the tokenizer ---------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

struct Section {
  std::string text;
  int32_t added = -1;  // an added token's id, or -1 for text to tokenize
  bool at_start = false;
};

// Rust regex's \w (single_word's boundary test): Alphabetic, marks, decimal
// digits, connector punctuation, Join_Control.
bool is_word_char(UChar32 c) {
  const int8_t t = u_charType(c);
  return u_isUAlphabetic(c) || t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK || t == U_COMBINING_SPACING_MARK ||
         t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL);
}

// Start of the character that ends just before byte i (i > 0).
size_t prev_char_start(std::string_view s, size_t i) {
  size_t k = i - 1;
  while (k > 0 && (uint8_t(s[k]) & 0xc0) == 0x80) --k;
  return k;
}

// JSON pointer escaping of one key (RFC 6901).
std::string pointer_key(const std::string& key) { return replace_all(replace_all(key, "~", "~0"), "/", "~1"); }

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(std::string_view text, const std::string& file) : file_(file) {
    const Where w{file};
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: not valid JSON ({})", file, e.what()));
    }
    if (!j.is_object()) w.fail("", "expected a JSON object (a Hugging Face tokenizer.json)");
    if (j.contains("truncation") && !j["truncation"].is_null())
      w.fail("/truncation", "is not supported (must be null): it would change the ids");
    if (j.contains("padding") && !j["padding"].is_null()) {  // only padding to the batch's longest is harmless
      const json& strategy = w.get(j["padding"], "/padding", "strategy");
      if (strategy != "BatchLongest")
        w.fail("/padding/strategy", "only null padding or \"BatchLongest\" is supported: it would change the ids");
    }
    parse_model(w.get(j, "", "model"), w);
    parse_added(j, w);
    if (j.contains("normalizer")) parse_normalizer(j["normalizer"], w, "/normalizer", 0, normalizers_);
    if (j.contains("pre_tokenizer")) parse_pre_tokenizer(j["pre_tokenizer"], w, "/pre_tokenizer", 0, pre_);
    if (j.contains("decoder")) parse_decoder(j["decoder"], w, "/decoder", 0, decoders_);
    if (j.contains("post_processor")) parse_post(j["post_processor"], w, "/post_processor", 0);
  }

  std::vector<int64_t> encode(std::string_view text, bool add_bos) const override {
    for (size_t i = 0; i < text.size();) {
      const size_t n = valid_utf8_at(text, i);
      if (n == 0) throw Error(fmt::format("{}: the text to encode is not valid UTF-8 (byte {})", file_, i));
      i += n;
    }
    std::vector<int64_t> ids;
    if (add_bos) ids.insert(ids.end(), prefix_.begin(), prefix_.end());
    std::vector<Section> raw;
    split_added(std::string(text), false, true, raw);
    for (Section& sec : raw) {
      if (sec.added >= 0) {
        ids.push_back(sec.added);
        continue;
      }
      std::string norm = std::move(sec.text);
      for (const Normalizer& n : normalizers_) norm = n.apply(norm);
      std::vector<Section> parts;
      split_added(norm, true, sec.at_start, parts);
      for (Section& part : parts) {
        if (part.added >= 0) {
          ids.push_back(part.added);
          continue;
        }
        std::vector<std::string> pieces{std::move(part.text)};
        for (const PreTokenizer& p : pre_) p.apply(pieces, part.at_start);
        for (const std::string& piece : pieces) bpe(piece, ids);
      }
    }
    if (add_bos) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  // Special added tokens (BOS, EOS, ...) are left out, as SentencePiece's
  // control pieces are (HF's skip_special_tokens=True).
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<std::string> tokens;
    for (int64_t id : ids) {
      if (id < 0 || id >= int64_t(tokens_.size()) || !has_token_[size_t(id)])
        throw Error(fmt::format("{}: id {} is not in the vocabulary", file_, id));
      if (special_[size_t(id)]) continue;
      tokens.push_back(tokens_[size_t(id)]);
    }
    if (decoders_.empty()) {  // HF joins the tokens with spaces when there is no decoder
      std::string out;
      for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    for (const Decoder& d : decoders_) d.apply(tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }

  int64_t vocab_size() const override { return int64_t(tokens_.size()); }
  int64_t bos_id() const override { return prefix_.empty() ? -1 : prefix_.front(); }
  std::string name() const override { return "tokenizer.json"; }

 private:
  void add_token(int64_t id, const std::string& text) {
    if (size_t(id) >= tokens_.size()) {
      tokens_.resize(size_t(id) + 1);
      has_token_.resize(size_t(id) + 1, false);
      special_.resize(size_t(id) + 1, false);
    }
    tokens_[size_t(id)] = text;
    has_token_[size_t(id)] = true;
  }

  void parse_model(const json& m, const Where& w) {
    if (!m.is_object()) w.fail("/model", "expected an object");
    const std::string type = m.contains("type") ? w.str(m, "/model", "type") : "BPE";
    if (type != "BPE")
      w.fail("/model/type", fmt::format("model type \"{}\" is not supported (only BPE)", printable(type)));
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (!w.str_or(m, "/model", key, "").empty())
        w.fail(std::string("/model/") + key, "a non-empty value is not supported");
    if (m.contains("dropout") && !m["dropout"].is_null() &&
        !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0))
      w.fail("/model/dropout", "BPE dropout is not supported (it makes encoding random)");
    byte_fallback_ = w.flag(m, "/model", "byte_fallback", false);
    fuse_unk_ = w.flag(m, "/model", "fuse_unk", false);
    ignore_merges_ = w.flag(m, "/model", "ignore_merges", false);
    const json& vocab = w.get(m, "/model", "vocab");
    if (!vocab.is_object()) w.fail("/model/vocab", "expected an object of token: id");
    std::vector<bool> seen;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const std::string ptr = "/model/vocab/" + pointer_key(it.key());
      const int64_t id = w.id(it.value(), ptr);
      if (size_t(id) < has_token_.size() && has_token_[size_t(id)])
        w.fail(ptr, fmt::format("id {} is used twice", id));
      add_token(id, it.key());
      vocab_.emplace(it.key(), int32_t(id));
    }
    const std::string unk = w.str_or(m, "/model", "unk_token", "");
    if (!unk.empty()) {
      auto it = vocab_.find(unk);
      if (it == vocab_.end()) w.fail("/model/unk_token", fmt::format("\"{}\" is not in the vocab", printable(unk)));
      unk_id_ = it->second;
    }
    if (byte_fallback_)
      for (int b = 0; b < 256; ++b) {
        auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
        byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
      }
    const json& merges = w.array(m, "/model", "merges");
    merges_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string ptr = fmt::format("/model/merges/{}", i);
      std::string a, b;
      if (merges[i].is_string()) {
        const std::string s = merges[i].get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          w.fail(ptr, fmt::format("merge \"{}\" is not two tokens separated by one space", printable(s)));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (merges[i].is_array() && merges[i].size() == 2 && merges[i][0].is_string() &&
                 merges[i][1].is_string()) {
        a = merges[i][0].get<std::string>();
        b = merges[i][1].get<std::string>();
      } else {
        w.fail(ptr, "expected \"a b\" or [\"a\", \"b\"]");
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      if (ia == vocab_.end()) w.fail(ptr, fmt::format("merge part \"{}\" is not in the vocab", printable(a)));
      if (ib == vocab_.end()) w.fail(ptr, fmt::format("merge part \"{}\" is not in the vocab", printable(b)));
      if (iab == vocab_.end())
        w.fail(ptr, fmt::format("merged token \"{}\" is not in the vocab", printable(a + b)));
      merges_.insert_or_assign(pair_key(ia->second, ib->second), std::make_pair(int32_t(i), iab->second));
    }
  }

  void parse_added(const json& j, const Where& w) {
    if (!j.contains("added_tokens") || j["added_tokens"].is_null()) return;
    const json& list = w.array(j, "", "added_tokens");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string ptr = fmt::format("/added_tokens/{}", i);
      AddedToken t;
      t.id = int32_t(w.id(w.get(list[i], ptr, "id"), ptr + "/id"));
      t.content = w.str(list[i], ptr, "content");
      if (t.content.empty()) w.fail(ptr + "/content", "an added token cannot be empty");
      t.special = w.flag(list[i], ptr, "special", false);
      t.lstrip = w.flag(list[i], ptr, "lstrip", false);
      t.rstrip = w.flag(list[i], ptr, "rstrip", false);
      t.single_word = w.flag(list[i], ptr, "single_word", false);
      t.normalized = w.flag(list[i], ptr, "normalized", !t.special);
      add_token(t.id, t.content);
      special_[size_t(t.id)] = t.special;
      added_.push_back(std::move(t));
    }
    // Longest first, so that the first match at a position is the longest.
    std::stable_sort(added_.begin(), added_.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    for (const AddedToken& t : added_) (t.normalized ? any_normalized_ : any_raw_) = true;
  }

  void parse_post(const json& j, const Where& w, const std::string& ptr, int depth) {
    if (j.is_null()) return;
    if (depth > kMaxNesting) w.fail(ptr, "post-processors nested too deeply");
    const std::string type = w.str(j, ptr, "type");
    std::vector<int64_t> pre, post;
    if (type == "Sequence") {
      const json& list = w.array(j, ptr, "processors");
      for (size_t i = 0; i < list.size(); ++i)
        parse_post(list[i], w, fmt::format("{}/processors/{}", ptr, i), depth + 1);
      return;
    } else if (type == "ByteLevel") {
      return;  // offsets only
    } else if (type == "TemplateProcessing") {
      const json& single = w.array(j, ptr, "single");
      const json& specials = w.get(j, ptr, "special_tokens");
      bool seen_a = false;
      for (size_t i = 0; i < single.size(); ++i) {
        const std::string p = fmt::format("{}/single/{}", ptr, i);
        const json& item = single[i];
        if (item.is_object() && item.contains("Sequence")) {
          const std::string id = w.str(item["Sequence"], p + "/Sequence", "id");
          if (id != "A" || seen_a) w.fail(p, "the single template must hold sequence A once");
          seen_a = true;
        } else if (item.is_object() && item.contains("SpecialToken")) {
          const std::string name = w.str(item["SpecialToken"], p + "/SpecialToken", "id");
          if (!specials.is_object() || !specials.contains(name))
            w.fail(p, fmt::format("special token \"{}\" is not in special_tokens", printable(name)));
          const std::string sp = ptr + "/special_tokens/" + pointer_key(name);
          const json& ids = w.array(specials[name], sp, "ids");
          for (size_t k = 0; k < ids.size(); ++k)
            (seen_a ? post : pre).push_back(checked_id(w, ids[k], fmt::format("{}/ids/{}", sp, k)));
        } else {
          w.fail(p, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
        }
      }
      if (!seen_a) w.fail(ptr + "/single", "the single template has no sequence A");
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      for (const char* key : {"cls", "sep"}) {
        const json& v = w.get(j, ptr, key);
        if (!v.is_array() || v.size() != 2) w.fail(ptr + "/" + key, "expected [token, id]");
        (key[0] == 'c' ? pre : post).push_back(checked_id(w, v[1], ptr + "/" + key + "/1"));
      }
    } else {
      w.fail(ptr + "/type", fmt::format("post-processor \"{}\" is not supported (TemplateProcessing, ByteLevel, "
                                        "RobertaProcessing, BertProcessing, Sequence)", printable(type)));
    }
    // A later processor wraps what the earlier ones produced.
    prefix_.insert(prefix_.begin(), pre.begin(), pre.end());
    suffix_.insert(suffix_.end(), post.begin(), post.end());
  }

  int64_t checked_id(const Where& w, const json& v, const std::string& ptr) const {
    const int64_t id = w.id(v, ptr);
    if (size_t(id) >= has_token_.size() || !has_token_[size_t(id)])
      w.fail(ptr, fmt::format("id {} is not in the vocabulary", id));
    return id;
  }

  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  // Splits s at the added tokens whose `normalized` flag is `normalized`
  // (leftmost, longest first), honouring lstrip/rstrip/single_word.
  void split_added(const std::string& s, bool normalized, bool at_start, std::vector<Section>& out) const {
    if (!(normalized ? any_normalized_ : any_raw_)) {
      if (!s.empty()) out.push_back({s, -1, at_start});
      return;
    }
    size_t text_from = 0;  // start of the pending plain text
    for (size_t i = 0; i < s.size();) {
      const AddedToken* hit = nullptr;
      for (const AddedToken& t : added_) {
        if (t.normalized != normalized || s.compare(i, t.content.size(), t.content) != 0) continue;
        if (t.single_word) {
          const size_t e = i + t.content.size();
          if ((i > 0 && is_word_char(decode_utf8(s, prev_char_start(s, i)))) || (e < s.size() && is_word_char(decode_utf8(s, e))))
            continue;
        }
        hit = &t;
        break;
      }
      if (!hit) {
        i += utf8_len(uint8_t(s[i]));
        continue;
      }
      size_t b = i, e = i + hit->content.size();
      while (hit->lstrip && b > text_from && u_isUWhiteSpace(decode_utf8(s, prev_char_start(s, b))))
        b = prev_char_start(s, b);
      if (hit->rstrip)
        while (e < s.size() && u_isUWhiteSpace(decode_utf8(s, e))) e += utf8_len(uint8_t(s[e]));
      if (b > text_from) out.push_back({s.substr(text_from, b - text_from), -1, at_start && text_from == 0});
      out.push_back({hit->content, hit->id, false});
      text_from = i = e;
    }
    if (text_from < s.size()) out.push_back({s.substr(text_from), -1, at_start && text_from == 0});
  }

  // One pre-tokenized word through the BPE model, as HF's BPE::merge_word.
  void bpe(const std::string& word, std::vector<int64_t>& ids) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      auto it = vocab_.find(word);
      if (it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    struct Symbol {
      int32_t id;
      int32_t prev, next;
      bool alive;
    };
    std::vector<Symbol> sym;
    bool prev_unk = false;
    auto push = [&](int32_t id) {
      const int32_t n = int32_t(sym.size());
      sym.push_back({id, n - 1, n + 1, true});
    };
    for (size_t i = 0; i < word.size();) {
      const size_t n = std::min(utf8_len(uint8_t(word[i])), word.size() - i);
      auto it = vocab_.find(word.substr(i, n));
      if (it != vocab_.end()) {
        push(it->second);
        prev_unk = false;
      } else {
        bool done = false;
        if (byte_fallback_) {
          done = true;
          for (size_t k = 0; k < n; ++k) done = done && byte_ids_[uint8_t(word[i + k])] >= 0;
          if (done) {
            for (size_t k = 0; k < n; ++k) push(byte_ids_[uint8_t(word[i + k])]);
            prev_unk = false;
          }
        }
        if (!done && unk_id_ >= 0) {
          if (!(fuse_unk_ && prev_unk)) push(unk_id_);
          prev_unk = true;
        }
      }
      i += n;
    }
    if (!sym.empty()) sym.back().next = -1;
    struct Merge {
      int32_t rank, pos, new_id;
      bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Merge> queue;
    auto consider = [&](int32_t pos) {
      const int32_t next = sym[size_t(pos)].next;
      if (next < 0) return;
      auto it = merges_.find(pair_key(sym[size_t(pos)].id, sym[size_t(next)].id));
      if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
    };
    for (int32_t p = 0; p + 1 < int32_t(sym.size()); ++p) consider(p);
    while (!queue.empty()) {
      const Merge top = queue.top();
      queue.pop();
      Symbol& cur = sym[size_t(top.pos)];
      if (!cur.alive || cur.next < 0) continue;
      Symbol& right = sym[size_t(cur.next)];
      auto it = merges_.find(pair_key(cur.id, right.id));
      if (it == merges_.end() || it->second.second != top.new_id) continue;
      cur.id = top.new_id;
      right.alive = false;
      cur.next = right.next;
      if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;
      if (cur.prev >= 0) consider(cur.prev);
      consider(top.pos);
    }
    for (const Symbol& s : sym)
      if (s.alive) ids.push_back(s.id);
  }

  std::string file_;  // for messages
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, merged id)
  std::vector<std::string> tokens_;                                   // id -> token (vocab and added)
  std::vector<bool> has_token_, special_;
  std::vector<AddedToken> added_;
  bool any_raw_ = false, any_normalized_ = false;
  std::vector<Normalizer> normalizers_;
  std::vector<PreTokenizer> pre_;
  std::vector<Decoder> decoders_;
  std::vector<int64_t> prefix_, suffix_;  // the post-processor's single template around the text
  int32_t unk_id_ = -1;
  int32_t byte_ids_[256] = {};
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> parse_hf_tokenizer(std::string_view json_text, const std::string& file) {
  return std::make_unique<HfTokenizer>(json_text, file);
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& json_path) {
  return parse_hf_tokenizer(read_file(json_path), json_path);
}

}  // namespace kvs::llm
