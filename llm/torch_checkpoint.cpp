#include "llm/torch_checkpoint.h"

#include "llm/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "codec/bitstream.h"

namespace kvs::llm {
namespace fs = std::filesystem;
namespace {

// ---------------------------------------------------------------- the file

// A private (copy-on-write) read mapping of a whole file; tensors keep it alive.
struct Mapping {
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (data != nullptr) ::munmap(const_cast<uint8_t*>(data), bytes);
  }
};

std::shared_ptr<Mapping> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(fmt::format("{}: cannot stat: {}", path, std::strerror(e)));
  }
  auto m = std::make_shared<Mapping>();
  m->bytes = static_cast<size_t>(st.st_size);
  if (m->bytes > 0) {
    void* p = ::mmap(nullptr, m->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);
    if (p == MAP_FAILED) throw Error(fmt::format("{}: cannot mmap: {}", path, std::strerror(e)));
    m->data = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  return m;
}

uint64_t le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ---------------------------------------------------------------- the zip

struct ZipRecord {
  uint64_t offset = 0;  // of the data in the file
  uint64_t bytes = 0;
  uint32_t crc32 = 0;   // the central directory's CRC-32 of the data
};

// A record's data against its CRC-32 (as torch's reader, miniz, checks it):
// a flipped bit in a weight is an error, not a silently different model.
void check_crc(const uint8_t* file, const ZipRecord& r, const std::string& path, const std::string& name) {
  const uint32_t got = codec::crc32({file + r.offset, r.bytes});
  if (got != r.crc32)
    throw Error(fmt::format("{}: record '{}' fails its CRC-32 check (the zip says {:08x}, its {} bytes give {:08x}): "
                            "the file is corrupt",
                            path, printable(name), r.crc32, r.bytes, got));
}

// The records of a zip of stored (uncompressed) entries, as torch writes
// them; zip64 (shards over 4 GiB) included. Every range is checked.
std::map<std::string, ZipRecord> read_zip(const Mapping& m, const std::string& path) {
  const uint8_t* p = m.data;
  const uint64_t n = m.bytes;
  auto fail = [&](const std::string& what) -> Error {
    return Error(fmt::format("{}: not a valid torch.save zip file: {}", path, what));
  };
  if (n < 22) throw fail("too short");
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = n >= 22 + 65535 ? n - 22 - 65535 : 0;
  for (uint64_t at = n - 22;; --at) {
    if (le(p + at, 4) == 0x06054b50) {
      eocd = at;
      break;
    }
    if (at == lowest) break;
  }
  if (eocd == UINT64_MAX) throw fail("no end-of-central-directory record (truncated?)");
  uint64_t entries = le(p + eocd + 10, 2), cd_bytes = le(p + eocd + 12, 4), cd_off = le(p + eocd + 16, 4);
  if (entries == 0xFFFF || cd_bytes == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) {
    if (eocd < 20 || le(p + eocd - 20, 4) != 0x07064b50) throw fail("zip64 locator missing");
    const uint64_t z = le(p + eocd - 20 + 8, 8);
    if (z > n || n - z < 56 || le(p + z, 4) != 0x06064b50) throw fail("zip64 end record out of range");
    entries = le(p + z + 32, 8);
    cd_bytes = le(p + z + 40, 8);
    cd_off = le(p + z + 48, 8);
  }
  if (cd_off > n || cd_bytes > n - cd_off) throw fail("central directory out of range");
  std::map<std::string, ZipRecord> out;
  uint64_t at = cd_off;
  const uint64_t end = cd_off + cd_bytes;
  for (uint64_t e = 0; e < entries; ++e) {
    if (end - at < 46 || le(p + at, 4) != 0x02014b50) throw fail("bad central directory entry");
    const uint64_t flags = le(p + at + 8, 2), method = le(p + at + 12, 2), crc = le(p + at + 16, 4);
    uint64_t csize = le(p + at + 20, 4), usize = le(p + at + 24, 4), lho = le(p + at + 42, 4);
    const uint64_t name_len = le(p + at + 28, 2), extra_len = le(p + at + 30, 2), comment_len = le(p + at + 32, 2);
    if (end - at - 46 < name_len + extra_len + comment_len) throw fail("central directory entry out of range");
    std::string name(reinterpret_cast<const char*>(p + at + 46), name_len);
    // zip64 extra field: the 0xFFFFFFFF sizes/offset, in this order.
    const uint8_t* x = p + at + 46 + name_len;
    for (uint64_t xi = 0; xi + 4 <= extra_len;) {
      const uint64_t id = le(x + xi, 2), len = le(x + xi + 2, 2);
      if (xi + 4 + len > extra_len) throw fail(fmt::format("record '{}': bad extra field", printable(name)));
      if (id == 0x0001) {
        uint64_t k = xi + 4;
        for (uint64_t* v : {&usize, &csize, &lho})
          if (*v == 0xFFFFFFFF) {
            if (k + 8 > xi + 4 + len) throw fail(fmt::format("record '{}': short zip64 field", printable(name)));
            *v = le(x + k, 8);
            k += 8;
          }
      }
      xi += 4 + len;
    }
    if (flags & 1) throw fail(fmt::format("record '{}' is encrypted", printable(name)));
    if (method != 0 || csize != usize)
      throw fail(fmt::format("record '{}' is compressed (method {}); torch.save stores records uncompressed",
                             printable(name), method));
    if (lho > n || n - lho < 30 || le(p + lho, 4) != 0x04034b50)
      throw fail(fmt::format("record '{}': local header out of range", printable(name)));
    const uint64_t data = lho + 30 + le(p + lho + 26, 2) + le(p + lho + 28, 2);
    if (data > n || usize > n - data) throw fail(fmt::format("record '{}' reaches past the end of the file", printable(name)));
    if (!out.emplace(name, ZipRecord{data, usize, uint32_t(crc)}).second) throw fail(fmt::format("record '{}' twice", printable(name)));
    at += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

// ---------------------------------------------------------------- the pickle

struct Storage {
  std::string key;
  at::ScalarType dtype = at::kFloat;
  int64_t numel = 0;
};

struct TensorDesc {
  size_t storage = 0;  // index into the storages
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;
};

struct Value {
  enum class Kind { kNone, kBool, kInt, kStr, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t i = 0;       // bool, int, storage index
  std::string s;       // str; global as "module.name"
  std::shared_ptr<std::vector<Value>> items;                     // tuple, list
  std::shared_ptr<std::vector<std::pair<Value, Value>>> entries;  // dict (insertion order)
  std::shared_ptr<TensorDesc> tensor;
};

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kStr: return "str";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kList: return "list";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kGlobal: return "global";
    case Value::Kind::kStorage: return "storage";
    case Value::Kind::kTensor: return "tensor";
  }
  return "?";
}

std::optional<at::ScalarType> storage_dtype(const std::string& cls) {
  static const std::pair<const char*, at::ScalarType> kTypes[] = {
      {"FloatStorage", at::kFloat}, {"HalfStorage", at::kHalf},   {"BFloat16Storage", at::kBFloat16},
      {"DoubleStorage", at::kDouble}, {"LongStorage", at::kLong}, {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort}, {"CharStorage", at::kChar},   {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool}};
  for (const auto& [name, t] : kTypes)
    if (cls == name) return t;
  return std::nullopt;
}

// A pickle machine for state dicts only (see the header): no global outside
// the allow-list is accepted, so nothing the pickle names is ever run.
class StateDictUnpickler {
 public:
  StateDictUnpickler(const uint8_t* p, size_t n, std::string where) : p_(p), n_(n), where_(std::move(where)) {}
  StateDictUnpickler(const StateDictUnpickler&) = delete;
  StateDictUnpickler& operator=(const StateDictUnpickler&) = delete;
  // Empties every container it made while all are still held here, so that
  // freeing never recurses (a hostile pickle can nest a million deep) and
  // cycles (a dict put into itself) are broken.
  ~StateDictUnpickler() {
    for (auto& l : lists_) l->clear();
    for (auto& d : dicts_) d->clear();
  }

  Value run() {
    for (;;) {
      op_at_ = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t v = u8();
          if (v < 2 || v > 5) fail(fmt::format("pickle protocol {} is not supported", v));
        } break;
        case 0x95: take(8); break;  // FRAME (protocol 4): only a length hint
        case '.': {                 // STOP
          if (stack_.size() != 1 || !marks_.empty()) fail("pickle ends with a malformed stack");
          return stack_.back();
        }
        case 'c': {  // GLOBAL module\nname\n
          const std::string module = line(), name = line();
          push(global(module, name));
        } break;
        case 'q': memo_[u8()] = top(); break;
        case 'r': memo_[static_cast<uint32_t>(le(take(4), 4))] = top(); break;
        case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); break;  // MEMOIZE
        case 'h': push(memo(u8())); break;
        case 'j': push(memo(static_cast<uint32_t>(le(take(4), 4)))); break;
        case '(': marks_.push_back(stack_.size()); break;
        case ')': push(container(Value::Kind::kTuple, {})); break;
        case 0x85: push(container(Value::Kind::kTuple, popn(1))); break;
        case 0x86: push(container(Value::Kind::kTuple, popn(2))); break;
        case 0x87: push(container(Value::Kind::kTuple, popn(3))); break;
        case 't': push(container(Value::Kind::kTuple, pop_mark())); break;
        case ']': push(container(Value::Kind::kList, {})); break;
        case 'l': push(container(Value::Kind::kList, pop_mark())); break;
        case 'a': {  // APPEND
          Value v = pop();
          append(top_ref(), {std::move(v)});
        } break;
        case 'e': {  // APPENDS
          std::vector<Value> vs = pop_mark();
          append(top_ref(), std::move(vs));
        } break;
        case '}': push(new_dict()); break;
        case 'd': {  // DICT
          Value d = new_dict();
          set_items(d, pop_mark());
          push(std::move(d));
        } break;
        case 's': {  // SETITEM
          std::vector<Value> kv = popn(2);
          set_items(top_ref(), std::move(kv));
        } break;
        case 'u': {  // SETITEMS
          std::vector<Value> kv = pop_mark();
          set_items(top_ref(), std::move(kv));
        } break;
        case 'J': push(integer(static_cast<int32_t>(le(take(4), 4)))); break;  // BININT
        case 'K': push(integer(u8())); break;                                  // BININT1
        case 'M': push(integer(static_cast<int64_t>(le(take(2), 2)))); break;  // BININT2
        case 0x8a: {                                                            // LONG1
          const uint8_t len = u8();
          if (len > 8) fail("integer wider than 64 bits");
          const uint8_t* b = take(len);
          uint64_t v = le(b, len);
          if (len > 0 && len < 8 && (b[len - 1] & 0x80)) v |= ~uint64_t{0} << (8 * len);  // sign-extend
          push(integer(static_cast<int64_t>(v)));
        } break;
        case 'X': push(str(take_string(le(take(4), 4)))); break;  // BINUNICODE
        case 0x8c: push(str(take_string(u8()))); break;           // SHORT_BINUNICODE
        case 0x88: push(boolean(true)); break;
        case 0x89: push(boolean(false)); break;
        case 'N': push(Value{}); break;
        case 'Q': push(persistent(pop())); break;  // BINPERSID
        case 'R': {                                 // REDUCE
          Value args = pop();
          Value fn = pop();
          push(reduce(fn, args));
        } break;
        case 'b': {  // BUILD: only an OrderedDict's attributes (e.g. _metadata), dropped
          Value state = pop();
          if (top().kind != Value::Kind::kDict || !(state.kind == Value::Kind::kDict || state.kind == Value::Kind::kNone))
            fail(fmt::format("BUILD on a {} is not part of a state dict", kind_name(top().kind)));
        } break;
        default: fail(fmt::format("pickle opcode 0x{:02x} is not part of a state dict", op));
      }
    }
  }

  const std::vector<Storage>& storages() const { return storages_; }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("{} (pickle byte {}): {}", where_, op_at_, what));
  }
  const uint8_t* take(uint64_t bytes) {
    if (bytes > n_ - pos_) fail("pickle is truncated");
    const uint8_t* at = p_ + pos_;
    pos_ += bytes;
    return at;
  }
  uint8_t u8() { return *take(1); }
  std::string take_string(uint64_t bytes) {
    const uint8_t* b = take(bytes);
    return std::string(reinterpret_cast<const char*>(b), bytes);
  }
  std::string line() {
    const void* nl = pos_ < n_ ? std::memchr(p_ + pos_, '\n', n_ - pos_) : nullptr;
    if (nl == nullptr) fail("pickle is truncated");
    const size_t len = static_cast<const uint8_t*>(nl) - (p_ + pos_);
    std::string s = take_string(len);
    take(1);
    return s;
  }

  void push(Value v) {
    if (stack_.size() >= kMaxStack) fail("pickle stack too deep");
    stack_.push_back(std::move(v));
  }
  Value pop() {
    if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size())) fail("pickle stack underflow");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  std::vector<Value> popn(size_t k) {
    std::vector<Value> out(k);
    for (size_t j = k; j-- > 0;) out[j] = pop();
    return out;
  }
  std::vector<Value> pop_mark() {
    if (marks_.empty()) fail("pickle has no MARK here");
    const size_t from = marks_.back();
    marks_.pop_back();
    std::vector<Value> out(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(from)),
                           std::make_move_iterator(stack_.end()));
    stack_.resize(from);
    return out;
  }
  Value& top_ref() {
    if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size())) fail("pickle stack underflow");
    return stack_.back();
  }
  const Value& top() { return top_ref(); }
  Value memo(uint32_t id) {
    auto it = memo_.find(id);
    if (it == memo_.end()) fail(fmt::format("memo entry {} was never stored", id));
    return it->second;
  }

  static Value integer(int64_t v) {
    Value x;
    x.kind = Value::Kind::kInt;
    x.i = v;
    return x;
  }
  static Value boolean(bool b) {
    Value x;
    x.kind = Value::Kind::kBool;
    x.i = b;
    return x;
  }
  static Value str(std::string s) {
    Value x;
    x.kind = Value::Kind::kStr;
    x.s = std::move(s);
    return x;
  }
  Value container(Value::Kind kind, std::vector<Value> items) {
    Value x;
    x.kind = kind;
    x.items = std::make_shared<std::vector<Value>>(std::move(items));
    lists_.push_back(x.items);
    return x;
  }
  Value new_dict() {
    Value x;
    x.kind = Value::Kind::kDict;
    x.entries = std::make_shared<std::vector<std::pair<Value, Value>>>();
    dicts_.push_back(x.entries);
    return x;
  }
  void append(Value& list, std::vector<Value> vs) {
    if (list.kind != Value::Kind::kList) fail(fmt::format("APPEND to a {}", kind_name(list.kind)));
    for (Value& v : vs) list.items->push_back(std::move(v));
  }
  void set_items(Value& dict, std::vector<Value> kv) {
    if (dict.kind != Value::Kind::kDict) fail(fmt::format("SETITEMS on a {}", kind_name(dict.kind)));
    if (kv.size() % 2 != 0) fail("SETITEMS with an odd number of items");
    for (size_t j = 0; j < kv.size(); j += 2) {
      if (kv[j].kind != Value::Kind::kStr && kv[j].kind != Value::Kind::kInt)
        fail(fmt::format("dict key of type {}", kind_name(kv[j].kind)));
      auto& e = *dict.entries;
      auto same = [&](const std::pair<Value, Value>& x) {
        return x.first.kind == kv[j].kind && x.first.s == kv[j].s && x.first.i == kv[j].i;
      };
      auto it = std::find_if(e.begin(), e.end(), same);
      if (it != e.end()) it->second = std::move(kv[j + 1]);
      else e.emplace_back(std::move(kv[j]), std::move(kv[j + 1]));
    }
  }

  // The allow-list: everything else is refused here, by name.
  Value global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    const bool ok = full == "collections.OrderedDict" || full == "torch._utils._rebuild_tensor_v2" ||
                    (module == "torch" && storage_dtype(name));
    if (!ok)
      fail(fmt::format("the pickle references '{}', which a state dict of tensors does not need; refused "
                       "(only dicts of tensors are read, no code is run)",
                       printable(full)));
    Value x;
    x.kind = Value::Kind::kGlobal;
    x.s = full;
    return x;
  }

  // ('storage', torch.<T>Storage, key, location, numel)
  Value persistent(const Value& pid) {
    const auto* t = pid.kind == Value::Kind::kTuple ? pid.items.get() : nullptr;
    if (t == nullptr || t->size() != 5 || (*t)[0].kind != Value::Kind::kStr || (*t)[0].s != "storage" ||
        (*t)[1].kind != Value::Kind::kGlobal || (*t)[2].kind != Value::Kind::kStr ||
        (*t)[3].kind != Value::Kind::kStr || (*t)[4].kind != Value::Kind::kInt)
      fail("persistent id is not ('storage', type, key, location, numel)");
    const std::string& cls = (*t)[1].s;
    const auto dtype = cls.rfind("torch.", 0) == 0 ? storage_dtype(cls.substr(6)) : std::nullopt;
    if (!dtype) fail(fmt::format("persistent id names '{}', not a storage type", printable(cls)));
    const std::string& key = (*t)[2].s;
    const int64_t numel = (*t)[4].i;
    if (numel < 0) fail(fmt::format("storage '{}' has {} elements", printable(key), numel));
    size_t index = storages_.size();
    for (size_t j = 0; j < storages_.size(); ++j)
      if (storages_[j].key == key) {
        if (storages_[j].dtype != *dtype || storages_[j].numel != numel)
          fail(fmt::format("storage '{}' is used with two types or sizes", printable(key)));
        index = j;
      }
    if (index == storages_.size()) storages_.push_back(Storage{key, *dtype, numel});
    Value x;
    x.kind = Value::Kind::kStorage;
    x.i = static_cast<int64_t>(index);
    return x;
  }

  std::vector<int64_t> ints(const Value& v, const char* what) {
    if (v.kind != Value::Kind::kTuple || v.items->size() > 64) fail(fmt::format("tensor {} is not a tuple", what));
    std::vector<int64_t> out;
    for (const Value& x : *v.items) {
      if (x.kind != Value::Kind::kInt || x.i < 0) fail(fmt::format("tensor {} holds a non-count", what));
      out.push_back(x.i);
    }
    return out;
  }

  Value reduce(const Value& fn, const Value& args) {
    if (fn.kind != Value::Kind::kGlobal || args.kind != Value::Kind::kTuple)
      fail(fmt::format("REDUCE of a {} is not part of a state dict", kind_name(fn.kind)));
    const auto& a = *args.items;
    if (fn.s == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict built from arguments");
      return new_dict();
    }
    if (fn.s == "torch._utils._rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() != 6 && a.size() != 7) fail("_rebuild_tensor_v2 with a wrong number of arguments");
      if (a[0].kind != Value::Kind::kStorage || a[1].kind != Value::Kind::kInt || a[1].i < 0)
        fail("_rebuild_tensor_v2 without a storage and offset");
      if (a[5].kind != Value::Kind::kDict || !a[5].entries->empty()) fail("tensor with backward hooks");
      if (a.size() == 7 && !(a[6].kind == Value::Kind::kNone ||
                             (a[6].kind == Value::Kind::kDict && a[6].entries->empty())))
        fail("tensor with Python attributes (metadata)");
      auto d = std::make_shared<TensorDesc>();
      d->storage = static_cast<size_t>(a[0].i);
      d->offset = a[1].i;
      d->sizes = ints(a[2], "size");
      d->strides = ints(a[3], "stride");
      if (d->sizes.size() != d->strides.size()) fail("tensor size and stride differ in length");
      Value x;
      x.kind = Value::Kind::kTensor;
      x.tensor = std::move(d);
      return x;
    }
    fail(fmt::format("'{}' called; not part of a state dict", printable(fn.s)));
  }

  static constexpr size_t kMaxStack = 1u << 20;
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0, op_at_ = 0;
  std::string where_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, Value> memo_;
  std::vector<Storage> storages_;
  std::vector<std::shared_ptr<std::vector<Value>>> lists_;                     // every tuple and list
  std::vector<std::shared_ptr<std::vector<std::pair<Value, Value>>>> dicts_;  // every dict
};

// The last element touched by a strided view, or -1 for an empty one; a
// kvs::Error on overflow (a hostile size/stride).
int64_t last_element(const TensorDesc& d, const std::string& where) {
  int64_t last = d.offset;
  for (size_t k = 0; k < d.sizes.size(); ++k) {
    if (d.sizes[k] == 0) return -1;
    int64_t step = 0;
    if (__builtin_mul_overflow(d.sizes[k] - 1, d.strides[k], &step) || __builtin_add_overflow(last, step, &last))
      throw Error(fmt::format("{}: tensor size/stride overflow", where));
  }
  return last;
}

}  // namespace

std::map<std::string, at::Tensor> read_torch_state_dict(const std::string& path) {
  auto m = map_file(path);
  if (m->bytes < 4 || le(m->data, 4) != 0x04034b50) {
    if (m->bytes >= 2 && m->data[0] == 0x80 && m->data[1] <= 5)
      throw Error(fmt::format("{}: legacy torch.save format (before torch 1.6, not a zip): not supported; re-save it "
                              "with a newer torch or convert it to safetensors",
                              path));
    throw Error(fmt::format("{}: not a torch.save zip file (no zip header)", path));
  }
  const std::map<std::string, ZipRecord> records = read_zip(*m, path);
  // All records lie under one folder, <archive>/ (e.g. "archive/" or "pytorch_model/").
  std::string prefix;
  for (const auto& [name, r] : records) {
    const size_t slash = name.find('/');
    if (slash != std::string::npos && name.compare(slash + 1, std::string::npos, "data.pkl") == 0) {
      if (!prefix.empty()) throw Error(fmt::format("{}: two data.pkl records", path));
      prefix = name.substr(0, slash + 1);
    }
  }
  if (prefix.empty()) throw Error(fmt::format("{}: no <archive>/data.pkl record (not a torch.save file)", path));
  if (auto bo = records.find(prefix + "byteorder"); bo != records.end()) {
    check_crc(m->data, bo->second, path, bo->first);
    const std::string order(reinterpret_cast<const char*>(m->data + bo->second.offset), bo->second.bytes);
    if (order != "little")
      throw Error(fmt::format("{}: byteorder '{}': only little-endian checkpoints are read", path, printable(order)));
  }
  const ZipRecord& pkl = records.at(prefix + "data.pkl");
  check_crc(m->data, pkl, path, prefix + "data.pkl");
  StateDictUnpickler up(m->data + pkl.offset, pkl.bytes, path + ": " + prefix + "data.pkl");
  const Value root = up.run();
  if (root.kind != Value::Kind::kDict)
    throw Error(fmt::format("{}: holds a {}, not a state dict (a dict of tensors)", path, kind_name(root.kind)));

  // One CPU tensor per storage: a view of the mapping when aligned.
  std::vector<at::Tensor> storages;
  for (const Storage& s : up.storages()) {
    const std::string rec = prefix + "data/" + s.key;
    const int64_t item = static_cast<int64_t>(c10::elementSize(s.dtype));
    const auto opts = at::TensorOptions().dtype(s.dtype);
    if (s.numel == 0) {
      storages.push_back(at::empty({0}, opts));
      continue;
    }
    auto r = records.find(rec);
    if (r == records.end()) throw Error(fmt::format("{}: storage record '{}' is missing", path, printable(rec)));
    int64_t need = 0;
    if (__builtin_mul_overflow(s.numel, item, &need) || static_cast<uint64_t>(need) > r->second.bytes)
      throw Error(fmt::format("{}: record '{}' has {} bytes, its storage needs {} x {}", path, printable(rec),
                              r->second.bytes, s.numel, item));
    check_crc(m->data, r->second, path, rec);
    void* data = const_cast<uint8_t*>(m->data + r->second.offset);
    at::Tensor t = at::from_blob(data, {s.numel}, [m](void*) {}, opts);
    if (r->second.offset % static_cast<uint64_t>(item) != 0) t = t.clone();  // torch aligns to 64; others may not
    storages.push_back(t);
  }

  std::map<std::string, at::Tensor> out;
  for (const auto& [k, v] : *root.entries) {
    if (k.kind != Value::Kind::kStr) throw Error(fmt::format("{}: state dict key is not a string", path));
    if (v.kind != Value::Kind::kTensor)
      throw Error(fmt::format("{}: '{}' is of type {}, not a tensor", path, printable(k.s), kind_name(v.kind)));
    const TensorDesc& d = *v.tensor;
    const Storage& s = up.storages().at(d.storage);
    const std::string where = fmt::format("{}: tensor '{}'", path, printable(k.s));
    const int64_t last = last_element(d, where);
    if (d.offset > s.numel || last >= s.numel)
      throw Error(fmt::format("{} reaches element {} of its storage '{}', which has {}", where, last,
                              printable(s.key), s.numel));
    out[k.s] = storages[d.storage].as_strided(d.sizes, d.strides, d.offset);
  }
  return out;
}

std::optional<TorchWeights> load_torch_weights(const std::string& dir) {
  const fs::path index = fs::path(dir) / "pytorch_model.bin.index.json";
  const fs::path single = fs::path(dir) / "pytorch_model.bin";
  TorchWeights w;
  if (fs::exists(index)) {
    const std::string idx = index.string();
    w.source = idx;
    std::map<std::string, std::map<std::string, at::Tensor>> shards;  // file name -> its state dict
    const std::map<std::string, std::string> listed = read_shard_index(idx);  // tensor -> file name
    for (const auto& [name, f] : listed) {
      const fs::path shard = fs::path(dir) / f;
      if (!shards.count(f)) {
        if (!fs::exists(shard))
          throw Error(fmt::format("{}: shard '{}' (of tensor '{}') does not exist", idx, shard.string(), name));
        shards[f] = read_torch_state_dict(shard.string());
      }
    }
    std::map<std::string, std::string> found;  // tensor -> the shard holding it
    for (const auto& [f, tensors] : shards)
      for (const auto& [name, t] : tensors) {
        if (auto it = found.find(name); it != found.end())
          throw Error(fmt::format("{}: tensor '{}' is in two shards, {} and {}", idx, name,
                                  (fs::path(dir) / it->second).string(), (fs::path(dir) / f).string()));
        found[name] = f;
      }
    for (auto& [f, tensors] : shards) {
      const std::string shard = (fs::path(dir) / f).string();
      for (auto& [name, t] : tensors) {
        auto it = listed.find(name);
        if (it == listed.end()) throw Error(fmt::format("{}: tensor '{}' is not listed in {}", shard, name, idx));
        if (it->second != f)
          throw Error(fmt::format("{}: tensor '{}' is listed for shard '{}' in {}", shard, name, it->second, idx));
        w.tensors[name] = std::move(t);
        w.file_of[name] = shard;
      }
    }
    for (const auto& [name, f] : listed)
      if (!found.count(name))
        throw Error(fmt::format("{}: missing tensor '{}' (listed for this shard in {})",
                                (fs::path(dir) / f).string(), name, idx));
    return w;
  }
  if (fs::exists(single)) {
    w.source = single.string();
    w.tensors = read_torch_state_dict(w.source);
    for (const auto& [name, t] : w.tensors) w.file_of[name] = w.source;
    return w;
  }
  return std::nullopt;
}

}  // namespace kvs::llm
