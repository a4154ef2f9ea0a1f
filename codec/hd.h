// KVS_HD marks functions that run on both host and device: the per-substream
// codec work lives in such functions so that the CPU build runs exactly the
// code a CUDA kernel runs (DESIGN.md, "The codec on CPU and GPU").
#pragma once

#if defined(__CUDACC__)
#define KVS_HD __host__ __device__
#else
#define KVS_HD
#endif
