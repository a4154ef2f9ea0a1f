// The CUDA kernels' launchers (codec/cuda/kernels.cu), for codec/cuda/decode.cpp and the encoders.
// Not an interface: codec/cuda/decode.h is.
#pragma once

#include <cuda_runtime_api.h>

#include "codec/cuda/stream_threads.h"
#include "codec/cuda/threads.h"
#include "codec/cuda/verify_threads.h"

namespace kvs::codec::cuda::detail {

// cudaSuccess when this process can run the kernels on the current device
// (an image for its architecture was compiled in).
cudaError_t probe_kernels();

// A stream's verification (codec/cuda/verify_threads.h), enqueued before its
// decode kernels: with p.walk, the section table (sizes widened, CUB's
// inclusive scan in scan_temp, each section checked); the CRC tiles; the
// final check. p.crc_acc must be zero. scan_temp: verify_scan_temp_bytes(p.sections)
// bytes, 256-byte aligned.
size_t verify_scan_temp_bytes(uint32_t sections);
void launch_verify(const VerifyLaunch& p, void* scan_temp, size_t scan_temp_bytes, cudaStream_t stream);
// The CRC tiles alone (launch_verify's): p.crc_acc (zero before) gets the
// pieces' registers xored.
void launch_crc(const VerifyLaunch& p, cudaStream_t stream);
// A GPU encoder's stream finished in device memory (codec/cuda/stream_threads.h):
// the payload's table entries, the CRC register zeroed, the CRC tiles, the CRC stored.
void launch_stream_finish(const StreamFinishLaunch& p, cudaStream_t stream);
// kvs, after launch_verify with the walk: each piece's section split
// (kvs_locate) into `pieces` (the device's copy of the plan's meta).
void launch_kvs_locate(const VerifyLaunch& p, KvsPieceDesc* pieces, uint32_t count, cudaStream_t stream);

// The decode kernels do nothing when the chunk's verification failed.
void launch_cachegen_code(const CachegenCodeLaunch& p, cudaStream_t stream);
void launch_kvs(const KvsLaunch& p, cudaStream_t stream);
void launch_cachegen_paper(const CachegenPaperLaunch& p, cudaStream_t stream);
// The encoder: scales, then symbols and tables, then the streams into their slots.
void launch_cachegen_encode(const CachegenEncodeLaunch& p, cudaStream_t stream);
// The streams from their slots into one payload at offsets[stream].
void launch_cachegen_gather(const CachegenEncodeLaunch& p, const uint64_t* offsets, uint8_t* payload,
                            cudaStream_t stream);

}  // namespace kvs::codec::cuda::detail
