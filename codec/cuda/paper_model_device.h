// One device copy of a cachegen scheme=paper codec model's tables
// (codec/cuda/plan.h PaperTables: anchors and their steps for every level;
// per level the delta tables, their steps and M), shared by every GPU
// decoder and encoder of that model on one device (codec/cuda/decode.h
// Decoder, codec/cuda/encode.h Encoder, the profile timer). Why: a model's
// delta tables are tens of MB per level on a large model; each Decoder (one
// per host thread) and Encoder holding its own copy multiplies that device
// memory and the host's work of building them. Pass one
// std::shared_ptr<PaperModelOnDevice> to all of them.
//
// Thread safety: level() builds a level's tables on its first call, under
// that level's mutex (other levels are not blocked), and never changes them
// after; every accessor is safe from several host threads at once. The
// tables live until the last holder lets go (a Decoder or Encoder keeps its
// shared_ptr, so they outlive its work in flight).
//
// This header needs no CUDA (the device buffers are behind a pointer) nor
// fmt (nvcc compiles what includes it), so that the host tests can check
// BuildOnce; PaperModelOnDevice is defined in kvstream_codec_cuda
// (KVSTREAM_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/error.h"
#include "codec/cachegen_paper.h"
#include "codec/rans.h"

namespace kvs::codec::cuda {

namespace detail {

// `count` entries, each built once, at its first get(), by build(i), under
// entry i's own mutex: concurrent callers of one entry wait for its build
// and then all see the same object; callers of other entries are not
// blocked. A build that throws stores nothing (the next get() builds again).
// Entries never change or move once built, so get()'s reference stays valid
// as long as the BuildOnce.
template <class T>
class BuildOnce {
 public:
  explicit BuildOnce(size_t count) : slots_(count) {}
  BuildOnce(const BuildOnce&) = delete;
  BuildOnce& operator=(const BuildOnce&) = delete;

  size_t size() const { return slots_.size(); }

  // Entry i, built by build(i) (returning a T) when it is the first call for
  // i. Throws kvs::Error naming `what` for i out of range.
  template <class Build>
  const T& get(size_t i, Build&& build, const char* what = "entry") {
    Slot& s = slot(i, what);
    const std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.value) s.value = std::make_unique<const T>(build(i));
    return *s.value;
  }
  // Whether entry i has been built (false for i out of range).
  bool built(size_t i) const {
    if (i >= slots_.size()) return false;
    const std::lock_guard<std::mutex> lock(slots_[i].mutex);
    return slots_[i].value != nullptr;
  }

 private:
  struct Slot {
    mutable std::mutex mutex;
    std::unique_ptr<const T> value;
  };
  Slot& slot(size_t i, const char* what) {
    if (i >= slots_.size())
      throw Error(std::string(what) + " " + std::to_string(i) + " out of range (0.." + std::to_string(slots_.size() - 1) +
                  ")");
    return slots_[i];
  }
  std::vector<Slot> slots_;  // sized once: the mutexes never move
};

}  // namespace detail

class PaperModelOnDevice {
 public:
  // Uploads the anchors and their steps to the current CUDA device now (one
  // synchronous copy each); each level's tables follow at its first level().
  // `model_file` names the model in errors (the decoders' and encoders'
  // messages). Throws kvs::Error when there is no usable GPU or no model.
  explicit PaperModelOnDevice(std::shared_ptr<const CacheGenPaperModel> model, std::string model_file = "");
  ~PaperModelOnDevice();
  PaperModelOnDevice(const PaperModelOnDevice&) = delete;
  PaperModelOnDevice& operator=(const PaperModelOnDevice&) = delete;

  const CacheGenPaperModel& model() const;
  const std::string& model_file() const;
  // The CUDA device (ordinal) that holds the tables.
  int device() const;

  // Device memory, [record] (record = (layer * 2 + kind) * channels + channel).
  const rans::CumTable* anchors() const;
  const float* step_a() const;

  // One level's tables in device memory: deltas and step_d [record], M [layer].
  struct Level {
    const rans::BasicPackedTable<64>* deltas = nullptr;
    const float* step_d = nullptr;
    const int32_t* M = nullptr;
  };
  // Level `level`'s tables: built on the host and copied to device() (one
  // synchronous copy, from any host thread whatever its current device) at
  // the first call for that level (detail::BuildOnce). Throws kvs::Error for
  // a level outside 0..kCacheGenLevels-1, or a CUDA failure.
  Level level(int level);
  // Whether level `level`'s tables are on the device already.
  bool has_level(int level) const;

  // Throws kvs::Error, `who` first ("CUDA decode"), unless the calling
  // thread's current CUDA device is device(): a Decoder or Encoder runs its
  // kernels on the current device, which must hold the tables it reads.
  void check_current_device(const char* who) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvs::codec::cuda
