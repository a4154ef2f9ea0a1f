// Host side of the GPU kvs encoder (codec/cuda/encode.h, Encoder::encode_kvs):
// buffers, copies and the four kernel stages, the choices between them made
// by codec/cuda/kvs_encode_plan.h.
#include <algorithm>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/core.h>

#include "codec/cuda/cuda_util.h"
#include "codec/cuda/encode.h"
#include "codec/cuda/encode_stream.h"
#include "codec/cuda/kvs_encode_kernels.h"
#include "codec/cuda/kvs_encode_plan.h"
#include "codec/fp16.h"
#include "codec/kvs_internal.h"

namespace kvs::codec::cuda {

using detail::check;

Bytes Encoder::encode_kvs(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                          uint32_t tokens, int level, const Codec& codec, uint64_t context_tokens) {
  const detail::DeviceScope on(device_);
  Bytes cpu;
  const DeviceStream d = kvs_stream(kv, in, shape, dtype, token_begin, tokens, level, codec, context_tokens, &cpu);
  return d.bytes ? d.to_host(stream_) : cpu;
}

DeviceStream Encoder::encode_kvs_to_device(const void* kv, OutputType in, KVShape shape, DType dtype,
                                           uint64_t token_begin, uint32_t tokens, int level, const Codec& codec,
                                           uint64_t context_tokens) {
  const detail::DeviceScope on(device_);
  Bytes cpu;
  DeviceStream d = kvs_stream(kv, in, shape, dtype, token_begin, tokens, level, codec, context_tokens, &cpu);
  if (d.bytes) return d;
  // The CPU encoder's stream (its fallback), uploaded into a buffer of a
  // multiple of 16 bytes, as the GPU path's (StreamLayout::buffer_bytes) and
  // as cuda::Decoder asks of a stream staged in device memory (decode.h).
  d.buffer = DeviceBuffer(detail::round_up(cpu.size(), 16));
  d.bytes = cpu.size();
  detail::copy_to_device(d.buffer.get(), cpu.data(), cpu.size(), "cudaMemcpy");
  return d;
}

DeviceStream Encoder::kvs_stream(const void* kv, OutputType in, KVShape shape, DType dtype, uint64_t token_begin,
                                 uint32_t tokens, int level, const Codec& codec, uint64_t context_tokens,
                                 Bytes* cpu) {
  if (in == OutputType::kBF16) throw Error("CUDA encode: bf16 input is not supported (fp16 or fp32)");
  const kvs_detail::KvsCodec& kvs = detail::as_kvs(codec);
  detail::KvsEncodePlan plan(kvs, shape, dtype, token_begin, tokens, level, context_tokens);
  const bool f16 = in == OutputType::kF16;
  const size_t value_bytes = f16 ? 2 : 4;
  const auto up = [&](void* dst, const void* src, size_t bytes) {
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
  };
  const auto down = [&](void* dst, const void* src, size_t bytes) {
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  };
  const auto sync = [&] { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); };
  // Values [first, first + count) of the input, as floats.
  const auto values = [&](size_t first, size_t count) {
    std::vector<uint8_t> raw(count * value_bytes);
    down(raw.data(), static_cast<const uint8_t*>(kv) + first * value_bytes, raw.size());
    sync();
    std::vector<float> out(count);
    for (size_t i = 0; i < count; ++i) {
      if (f16) {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * i, 2);
        out[i] = f16_bits_to_f32(h);
      } else {
        std::memcpy(&out[i], raw.data() + 4 * i, 4);
      }
    }
    return out;
  };
  // On a hash collision or a near tie (codec/cuda/kvs_encode_threads.h): the
  // CPU encoder on the chunk's values.
  const auto on_cpu = [&] {
    KVChunk chunk(shape, dtype, token_begin, tokens);
    chunk.context_tokens = context_tokens;
    chunk.values = values(0, plan.header.elements());
    *cpu = kvs.encode(chunk, level);
    return DeviceStream{};
  };

  // 1. Tables, steps, RoPE, the values in steps, row hashes, column sums.
  const kvs_core::EncoderTables host_tables = kvs.encoder_tables();
  const size_t gauss_bytes = kvs_core::kTables * sizeof(kvs_core::GaussTable),
               rd_bytes = kvs_core::kTables * sizeof(kvs_core::RdTable), exact_bytes = 256 * sizeof(uint64_t);
  detail::DeviceParts l1;
  const size_t o_gauss = l1.add(gauss_bytes), o_rd = l1.add(rd_bytes), o_exact = l1.add(exact_bytes),
               o_steps = l1.add(4 * plan.steps.size()), o_rope = l1.add(4 * plan.rope.size()), o_layer_rope = l1.add(plan.layer_rope.size()),
               o_y = l1.add(4 * plan.channels * plan.stride), o_hash = l1.add(8 * plan.rows),
               o_s1 = l1.add(8 * plan.channels), o_s2 = l1.add(8 * plan.channels), o_fault = l1.add(8);
  DeviceBuffer b1(l1.total);
  uint8_t* d1 = static_cast<uint8_t*>(b1.get());
  up(d1 + o_gauss, host_tables.gauss, gauss_bytes);
  up(d1 + o_rd, host_tables.rd, rd_bytes);
  up(d1 + o_exact, host_tables.exact_n, exact_bytes);
  up(d1 + o_steps, plan.steps.data(), 4 * plan.steps.size());
  up(d1 + o_rope, plan.rope.data(), 4 * plan.rope.size());
  up(d1 + o_layer_rope, plan.layer_rope.data(), plan.layer_rope.size());
  check(cudaMemsetAsync(d1 + o_fault, 0xff, 8, stream_), "cudaMemsetAsync");
  detail::KvsEncodeLaunch p = plan.launch(kv, f16);
  p.tables.gauss = reinterpret_cast<const kvs_core::GaussTable*>(d1 + o_gauss);
  p.tables.rd = reinterpret_cast<const kvs_core::RdTable*>(d1 + o_rd);
  p.tables.exact_n = reinterpret_cast<const uint64_t*>(d1 + o_exact);
  p.steps = reinterpret_cast<const float*>(d1 + o_steps);
  p.rope = reinterpret_cast<const float*>(d1 + o_rope);
  p.layer_rope = d1 + o_layer_rope;
  p.y = reinterpret_cast<float*>(d1 + o_y);
  p.row_hash = reinterpret_cast<uint64_t*>(d1 + o_hash);
  p.column_s1 = reinterpret_cast<double*>(d1 + o_s1);
  p.column_s2 = reinterpret_cast<double*>(d1 + o_s2);
  p.fault = reinterpret_cast<unsigned long long*>(d1 + o_fault);
  detail::launch_kvs_encode_rows(p, plan.rows, plan.channels, stream_);
  unsigned long long fault = detail::kNoFault;
  std::vector<uint64_t> hash(plan.plan_rows ? plan.rows : 0);
  std::vector<double> s1(plan.plan_rows ? plan.channels : 0), s2(s1.size());
  down(&fault, p.fault, 8);
  down(hash.data(), p.row_hash, 8 * hash.size());
  down(s1.data(), p.column_s1, 8 * s1.size());
  down(s2.data(), p.column_s2, 8 * s2.size());
  sync();
  if (fault != detail::kNoFault) {
    const uint64_t i = detail::KvsEncodePlan::fault_value(fault), D = shape.head_dim;
    plan.throw_value_error(fault, values(i - i % D, D));
  }
  plan.plan_references(hash, s1, s2);

  // 2. The row plan's check, then the channels.
  detail::DeviceParts l2;
  const size_t o_heads = l2.add(sizeof(detail::KvsEncHead) * plan.heads.size()),
               o_lit = l2.add(4 * plan.literal_tokens.size()), o_first = l2.add(4 * plan.first.size()),
               o_fs = l2.add(8 * plan.first_symbol.size()), o_svals = l2.add(4 * plan.symbols()),
               o_sym = l2.add(plan.symbols()), o_models = l2.add(sizeof(kvs_core::ChannelModel) * plan.channels),
               o_extras = l2.add(plan.channels);
  DeviceBuffer b2(l2.total);
  uint8_t* d2 = static_cast<uint8_t*>(b2.get());
  up(d2 + o_heads, plan.heads.data(), sizeof(detail::KvsEncHead) * plan.heads.size());
  up(d2 + o_lit, plan.literal_tokens.data(), 4 * plan.literal_tokens.size());
  up(d2 + o_first, plan.first.data(), 4 * plan.first.size());
  up(d2 + o_fs, plan.first_symbol.data(), 8 * plan.first_symbol.size());
  p.heads = reinterpret_cast<const detail::KvsEncHead*>(d2 + o_heads);
  p.literal_tokens = reinterpret_cast<const uint32_t*>(d2 + o_lit);
  p.first = plan.first.empty() ? nullptr : reinterpret_cast<const uint32_t*>(d2 + o_first);
  p.first_symbol = reinterpret_cast<const uint64_t*>(d2 + o_fs);
  p.svals = reinterpret_cast<int32_t*>(d2 + o_svals);
  p.channel_symbols = d2 + o_sym;
  p.models = reinterpret_cast<kvs_core::ChannelModel*>(d2 + o_models);
  p.has_extras = d2 + o_extras;
  detail::launch_kvs_encode_channels(p, plan.rows, plan.channels, stream_);
  std::vector<kvs_core::ChannelModel> models(plan.channels);
  down(&fault, p.fault, 8);
  down(models.data(), p.models, sizeof(kvs_core::ChannelModel) * models.size());
  sync();
  if (detail::KvsEncodePlan::needs_cpu(fault)) return on_cpu();
  if (fault != detail::kNoFault) throw Error(fmt::format("codec kvs: internal error: GPU encoder fault {:#x}", fault));
  plan.plan_pieces(models);

  // 3. The pieces.
  const size_t np = plan.pieces.size();
  detail::DeviceParts l3;
  const size_t o_pieces = l3.add(sizeof(detail::KvsEncPiece) * np), o_go = l3.add(4 * plan.group_offset.size()),
               o_gc = l3.add(4 * plan.group_channels.size()), o_psym = l3.add(np * detail::kKvsPieceSymbols),
               o_rslots = l3.add(np * plan.kRansCapacity), o_xslots = l3.add(np * plan.kExtrasCapacity),
               o_rsizes = l3.add(4 * np), o_xsizes = l3.add(4 * np);
  DeviceBuffer b3(l3.total);
  uint8_t* d3 = static_cast<uint8_t*>(b3.get());
  up(d3 + o_pieces, plan.pieces.data(), sizeof(detail::KvsEncPiece) * np);
  up(d3 + o_go, plan.group_offset.data(), 4 * plan.group_offset.size());
  up(d3 + o_gc, plan.group_channels.data(), 4 * plan.group_channels.size());
  p.pieces = reinterpret_cast<const detail::KvsEncPiece*>(d3 + o_pieces);
  p.piece_count = uint32_t(np);
  p.group_offset = reinterpret_cast<const uint32_t*>(d3 + o_go);
  p.group_channels = reinterpret_cast<const uint32_t*>(d3 + o_gc);
  p.piece_symbols = d3 + o_psym;
  p.rans_slots = d3 + o_rslots;
  p.extras_slots = d3 + o_xslots;
  p.rans_sizes = reinterpret_cast<uint32_t*>(d3 + o_rsizes);
  p.extras_sizes = reinterpret_cast<uint32_t*>(d3 + o_xsizes);
  detail::launch_kvs_encode_pieces(p, stream_);
  std::vector<uint32_t> rans_sizes(np), extras_sizes(np);
  down(rans_sizes.data(), p.rans_sizes, 4 * np);
  down(extras_sizes.data(), p.extras_sizes, 4 * np);
  sync();
  const std::vector<uint64_t> off = plan.offsets(rans_sizes, extras_sizes);

  // 4. The stream in device memory: header, the table's first entries and
  // sections 0..2 from the host, the pieces' sections gathered after them,
  // then the rest of the table and the CRC.
  const detail::StreamLayout layout = plan.layout(off);
  const Bytes prefix = plan.prefix();
  detail::DeviceStreamBuild b = detail::begin_device_stream(layout, prefix, off, stream_);
  detail::launch_kvs_encode_gather(p, b.offsets(), b.at(layout.payload_at), stream_);
  detail::finish_device_stream(layout, b, static_cast<const detail::CrcTables*>(crc_->get()), stream_);
  sync();  // (the host's head, prefix and offsets read)
  return DeviceStream{std::move(b.stream), layout.bytes()};
}

}  // namespace kvs::codec::cuda
