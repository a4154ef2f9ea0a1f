// A cachegen scheme=paper codec model's tables on one device, shared
// (codec/cuda/paper_model_device.h).
#include "codec/cuda/paper_model_device.h"

#include <cuda_runtime.h>
#include <fmt/core.h>

#include "codec/cachegen.h"  // kCacheGenLevels
#include "codec/cuda/cuda_util.h"
#include "codec/cuda/decode.h"
#include "codec/cuda/plan.h"

namespace kvs::codec::cuda {

using detail::check;
using detail::DeviceScope;
using detail::to_device;

namespace {

struct LevelBuffers {
  DeviceBuffer deltas, step_d, M;
};

}  // namespace

struct PaperModelOnDevice::Impl {
  std::shared_ptr<const CacheGenPaperModel> model;
  std::string model_file;
  int device = 0;
  // The host's tables: anchors (uploaded at once), and build_paper_level's
  // output per level (its delta tables dropped once uploaded). Levels are
  // built under their own mutexes: build_paper_level writes only its level's
  // entries of these vectors, sized for every level by paper_tables().
  detail::PaperTables host;
  DeviceBuffer anchors, step_a;
  detail::BuildOnce<LevelBuffers> levels{size_t(kCacheGenLevels)};
};

PaperModelOnDevice::PaperModelOnDevice(std::shared_ptr<const CacheGenPaperModel> model, std::string model_file)
    : impl_(std::make_unique<Impl>()) {
  if (!model) throw Error("CUDA: the device tables of a cachegen scheme=paper model need a model (none given)");
  if (!available()) throw Error("CUDA: no usable GPU for a codec model's tables: " + device_description());
  impl_->device = detail::current_device();
  impl_->model = std::move(model);
  impl_->model_file = std::move(model_file);
  impl_->host = detail::paper_tables(*impl_->model);
  impl_->anchors = to_device(impl_->host.anchors);
  impl_->step_a = to_device(impl_->host.step_a);
}

PaperModelOnDevice::~PaperModelOnDevice() {
  if (!impl_) return;
  // The buffers are freed on their device (cudaFree of another device's memory fails).
  detail::on_device_noexcept(impl_->device, [&] { impl_.reset(); });
}

const CacheGenPaperModel& PaperModelOnDevice::model() const { return *impl_->model; }
const std::string& PaperModelOnDevice::model_file() const { return impl_->model_file; }
int PaperModelOnDevice::device() const { return impl_->device; }

const rans::CumTable* PaperModelOnDevice::anchors() const {
  return static_cast<const rans::CumTable*>(impl_->anchors.get());
}
const float* PaperModelOnDevice::step_a() const { return static_cast<const float*>(impl_->step_a.get()); }

PaperModelOnDevice::Level PaperModelOnDevice::level(int level) {
  if (level < 0 || level >= kCacheGenLevels)
    throw Error(fmt::format("CUDA: cachegen scheme=paper level {} out of range (0..{})", level, kCacheGenLevels - 1));
  Impl& m = *impl_;
  const LevelBuffers& b = m.levels.get(
      size_t(level),
      [&](size_t l) {
        const DeviceScope on(m.device);
        detail::build_paper_level(*m.model, int(l), &m.host);
        LevelBuffers out{to_device(m.host.deltas[l]), to_device(m.host.step_d[l]), to_device(m.host.M[l])};
        m.host.deltas[l].clear();
        m.host.deltas[l].shrink_to_fit();
        return out;
      },
      "cachegen scheme=paper level");
  return {static_cast<const rans::BasicPackedTable<64>*>(b.deltas.get()), static_cast<const float*>(b.step_d.get()),
          static_cast<const int32_t*>(b.M.get())};
}

bool PaperModelOnDevice::has_level(int level) const { return level >= 0 && impl_->levels.built(size_t(level)); }

void PaperModelOnDevice::check_current_device(const char* who) const {
  const int current = detail::current_device();
  if (current != impl_->device)
    throw Error(fmt::format("{}: the cachegen scheme=paper model's tables ({}) are on CUDA device {}, the current "
                            "device is {}: make them on the device that decodes or encodes",
                            who, impl_->model_file.empty() ? "codec model" : impl_->model_file, impl_->device,
                            current));
}

}  // namespace kvs::codec::cuda
