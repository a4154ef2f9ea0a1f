#include "llm/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

#include "base/error.h"
#include "base/files.h"

namespace kvs::llm {

std::vector<int64_t> ByteTokenizer::encode(std::string_view text, bool /*add_bos*/) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = int64_t(static_cast<unsigned char>(text[i]));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id > 255) throw Error(fmt::format("byte tokenizer: id {} is not a byte", id));
    out.push_back(char(uint8_t(id)));
  }
  return out;
}

namespace {

// ---- the protobuf wire format, as far as sentencepiece_model.proto needs it ----
class Wire {
 public:
  Wire(std::string_view data, const std::string& file) : d_(data), file_(file) {}
  bool done() const { return pos_ >= d_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= d_.size()) fail("truncated varint");
      const uint8_t b = uint8_t(d_[pos_++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint too long");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > d_.size() - pos_) fail("length past the end");
    std::string_view s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  float fixed32() {
    if (d_.size() - pos_ < 4) fail("truncated fixed32");
    uint32_t u = 0;
    for (int i = 0; i < 4; ++i) u |= uint32_t(uint8_t(d_[pos_ + i])) << (8 * i);
    pos_ += 4;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: if (d_.size() - pos_ < 8) fail("truncated fixed64"); pos_ += 8; break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: fail(fmt::format("unknown wire type {}", wire_type));
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("{}: not a SentencePiece model ({} at byte {})", file_, what, pos_));
  }

 private:
  std::string_view d_;
  const std::string& file_;
  size_t pos_ = 0;
};

enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
enum ModelType { kUnigram = 1, kBpe = 2 };

struct Piece {
  std::string text;
  float score = 0;
  int type = kNormal;
};

const std::string kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space

size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xe) return 3;
  if ((c >> 3) == 0x1e) return 4;
  return 1;  // invalid byte: a unit of its own
}

// "<0xHH>" -> HH, else -1.
int byte_value(const std::string& piece) {
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    std::fill(std::begin(byte_ids_), std::end(byte_ids_), int64_t(-1));
    const std::string data = read_file(path);
    Wire w(data, path);
    std::string normalizer = "identity";
    while (!w.done()) {
      const uint64_t key = w.varint();
      const uint32_t field = uint32_t(key >> 3), wt = uint32_t(key & 7);
      if (field == 1 && wt == 2) {
        Wire p(w.bytes(), path);
        Piece piece;
        while (!p.done()) {
          const uint64_t k = p.varint();
          if ((k >> 3) == 1 && (k & 7) == 2) piece.text = std::string(p.bytes());
          else if ((k >> 3) == 2 && (k & 7) == 5) piece.score = p.fixed32();
          else if ((k >> 3) == 3 && (k & 7) == 0) piece.type = int(p.varint());
          else p.skip(uint32_t(k & 7));
        }
        pieces_.push_back(std::move(piece));
      } else if (field == 2 && wt == 2) {  // TrainerSpec
        Wire t(w.bytes(), path);
        while (!t.done()) {
          const uint64_t k = t.varint();
          const uint32_t f = uint32_t(k >> 3);
          if ((k & 7) == 0 && (f == 3 || f == 35 || f == 40 || f == 41 || f == 42)) {
            const int64_t v = int64_t(int32_t(uint32_t(t.varint())));
            if (f == 3) model_type_ = int(v);
            if (f == 35) byte_fallback_ = v != 0;
            if (f == 40) unk_id_ = v;
            if (f == 41) bos_id_ = v;
            if (f == 42) eos_id_ = v;
          } else {
            t.skip(uint32_t(k & 7));
          }
        }
      } else if (field == 3 && wt == 2) {  // NormalizerSpec
        Wire n(w.bytes(), path);
        while (!n.done()) {
          const uint64_t k = n.varint();
          const uint32_t f = uint32_t(k >> 3);
          if (f == 1 && (k & 7) == 2) normalizer = std::string(n.bytes());
          else if ((f == 3 || f == 4 || f == 5) && (k & 7) == 0) {
            const bool v = n.varint() != 0;
            if (f == 3) add_dummy_prefix_ = v;
            if (f == 4) remove_extra_whitespaces_ = v;
            if (f == 5) escape_whitespaces_ = v;
          } else {
            n.skip(uint32_t(k & 7));
          }
        }
      } else {
        w.skip(wt);
      }
    }
    if (pieces_.empty()) throw Error(fmt::format("{}: SentencePiece model has no pieces", path));
    if (model_type_ != kBpe && model_type_ != kUnigram)
      throw Error(fmt::format("{}: SentencePiece model type {} is not supported (BPE or unigram)", path, model_type_));
    if (normalizer != "identity")
      throw Error(fmt::format("{}: SentencePiece normalizer '{}' is not supported (only identity, as Llama's)", path,
                              normalizer));
    min_score_ = std::numeric_limits<float>::max();
    for (size_t i = 0; i < pieces_.size(); ++i) {
      const Piece& p = pieces_[i];
      if (p.type == kByte) {
        const int b = byte_value(p.text);
        if (b < 0) throw Error(fmt::format("{}: byte piece {} is '{}', expected <0xHH>", path, i, p.text));
        byte_ids_[b] = int64_t(i);
      }
      if (p.type == kNormal || p.type == kUserDefined) {
        index_.emplace(p.text, int64_t(i));
        max_piece_bytes_ = std::max(max_piece_bytes_, p.text.size());
        if (p.type == kUserDefined) max_user_defined_bytes_ = std::max(max_user_defined_bytes_, p.text.size());
        if (p.type == kNormal) min_score_ = std::min(min_score_, p.score);
      }
    }
  }

  std::vector<int64_t> encode(std::string_view text, bool add_bos) const override {
    const std::string norm = normalize(text);
    std::vector<int64_t> ids;
    if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
    if (norm.empty()) return ids;
    std::vector<std::string_view> symbols = model_type_ == kBpe ? bpe(norm) : unigram(norm);
    bool prev_unk = false;
    for (std::string_view s : symbols) {
      auto it = index_.find(std::string(s));
      if (it != index_.end()) {
        ids.push_back(it->second);
        prev_unk = false;
      } else if (byte_fallback_) {
        for (unsigned char c : s) ids.push_back(byte_ids_[c] >= 0 ? byte_ids_[c] : unk_id_);
        prev_unk = false;
      } else if (!prev_unk) {  // SentencePiece merges consecutive unknowns into one
        ids.push_back(unk_id_);
        prev_unk = true;
      }
    }
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out;
    for (int64_t id : ids) {
      if (id < 0 || id >= int64_t(pieces_.size())) throw Error(fmt::format("SentencePiece: id {} out of range", id));
      const Piece& p = pieces_[size_t(id)];
      if (p.type == kControl) continue;
      if (p.type == kUnknown) out += " \xe2\x81\x87 ";
      else if (p.type == kByte) out.push_back(char(byte_value(p.text)));
      else out += p.text;
    }
    std::string res;
    for (size_t i = 0; i < out.size();) {
      if (escape_whitespaces_ && out.compare(i, kSpace.size(), kSpace) == 0) {
        res.push_back(' ');
        i += kSpace.size();
      } else {
        res.push_back(out[i++]);
      }
    }
    if (add_dummy_prefix_ && !res.empty() && res[0] == ' ') res.erase(0, 1);
    return res;
  }

  int64_t vocab_size() const override { return int64_t(pieces_.size()); }
  int64_t bos_id() const override { return bos_id_; }
  std::string name() const override { return "sentencepiece"; }

 private:
  std::string normalize(std::string_view text) const {
    std::string t;
    t.reserve(text.size() + 1);
    for (char ch : text) {
      if (remove_extra_whitespaces_ && ch == ' ' && (t.empty() || t.back() == ' ')) continue;
      t.push_back(ch);
    }
    if (remove_extra_whitespaces_)
      while (!t.empty() && t.back() == ' ') t.pop_back();
    std::string out;
    if (t.empty()) return out;
    out.reserve(3 * t.size() + 3);
    auto put = [&](char ch) {
      if (ch == ' ' && escape_whitespaces_) out += kSpace;
      else out.push_back(ch);
    };
    if (add_dummy_prefix_) put(' ');
    for (char ch : t) put(ch);
    return out;
  }

  const Piece* lookup(std::string_view s) const {
    auto it = index_.find(std::string(s));
    return it == index_.end() ? nullptr : &pieces_[size_t(it->second)];
  }

  // Length of the longest user-defined piece starting at s[i], 0 if none.
  size_t user_defined_at(const std::string& s, size_t i) const {
    for (size_t len = std::min(max_user_defined_bytes_, s.size() - i); len > 0; --len) {
      const Piece* p = lookup(std::string_view(s.data() + i, len));
      if (p != nullptr && p->type == kUserDefined) return len;
    }
    return 0;
  }

  // BPE: start from characters (a user-defined piece is one symbol that
  // never merges, as SentencePiece freezes it), repeatedly merge the
  // adjacent pair whose concatenation is a piece with the highest score
  // (leftmost on ties).
  std::vector<std::string_view> bpe(const std::string& s) const {
    std::vector<std::string_view> sym;
    std::vector<bool> frozen;
    for (size_t i = 0; i < s.size();) {
      const size_t user = max_user_defined_bytes_ > 0 ? user_defined_at(s, i) : 0;
      const size_t n = user > 0 ? user : std::min(utf8_len(uint8_t(s[i])), s.size() - i);
      sym.emplace_back(s.data() + i, n);
      frozen.push_back(user > 0);
      i += n;
    }
    while (sym.size() > 1) {
      float best = -std::numeric_limits<float>::infinity();
      size_t at = sym.size();
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        if (frozen[i] || frozen[i + 1]) continue;
        const std::string_view merged(sym[i].data(), sym[i].size() + sym[i + 1].size());
        const Piece* p = lookup(merged);
        if (p != nullptr && p->score > best) {
          best = p->score;
          at = i;
        }
      }
      if (at == sym.size()) break;
      sym[at] = std::string_view(sym[at].data(), sym[at].size() + sym[at + 1].size());
      sym.erase(sym.begin() + long(at) + 1);
      frozen.erase(frozen.begin() + long(at) + 1);
    }
    return sym;
  }

  // Unigram: the segmentation with the highest total score (Viterbi); an
  // unknown character costs min_score - 10, as SentencePiece.
  std::vector<std::string_view> unigram(const std::string& s) const {
    const size_t n = s.size();
    std::vector<double> best(n + 1, -std::numeric_limits<double>::infinity());
    std::vector<size_t> from(n + 1, 0);
    best[0] = 0;
    for (size_t i = 0; i < n; ++i) {
      if (best[i] == -std::numeric_limits<double>::infinity()) continue;
      const size_t clen = std::min(utf8_len(uint8_t(s[i])), n - i);
      bool any_char = false;
      for (size_t len = 1; len <= std::min(max_piece_bytes_, n - i); ++len) {
        const Piece* p = lookup(std::string_view(s.data() + i, len));
        if (p == nullptr) continue;
        if (len == clen) any_char = true;
        const double sc = best[i] + (p->type == kUserDefined ? 0.0 : double(p->score));
        if (sc > best[i + len]) {
          best[i + len] = sc;
          from[i + len] = i;
        }
      }
      if (!any_char) {
        const double sc = best[i] + double(min_score_) - 10.0;
        if (sc > best[i + clen]) {
          best[i + clen] = sc;
          from[i + clen] = i;
        }
      }
    }
    std::vector<std::string_view> out;
    for (size_t e = n; e > 0; e = from[e]) out.emplace_back(s.data() + from[e], e - from[e]);
    std::reverse(out.begin(), out.end());
    return out;
  }

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int64_t> index_;
  int64_t byte_ids_[256] = {};
  size_t max_piece_bytes_ = 1;
  size_t max_user_defined_bytes_ = 0;  // 0: the model has no user-defined pieces
  float min_score_ = 0;
  int model_type_ = kUnigram;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true;
  int64_t unk_id_ = 0, bos_id_ = 1, eos_id_ = 2;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path) {
  return std::make_unique<SentencePieceTokenizer>(model_path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir, const ModelConfig& config) {
  const auto sp = std::filesystem::path(dir) / "tokenizer.model";
  const auto hf = std::filesystem::path(dir) / "tokenizer.json";
  std::unique_ptr<Tokenizer> tok;
  if (std::filesystem::exists(sp)) {
    tok = load_sentencepiece(sp.string());
  } else if (std::filesystem::exists(hf)) {
    tok = load_hf_tokenizer(hf.string());
  } else if (config.vocab_size == 256) {
    tok = std::make_unique<ByteTokenizer>();
  } else {
    throw Error(fmt::format("{}: no tokenizer.model or tokenizer.json, and vocab_size {} is not the byte "
                            "tokenizer's 256", dir, config.vocab_size));
  }
  if (tok->vocab_size() > config.vocab_size)
    throw Error(fmt::format("{}: tokenizer has {} tokens, the model only {}", dir, tok->vocab_size(),
                            config.vocab_size));
  return tok;
}

}  // namespace kvs::llm
