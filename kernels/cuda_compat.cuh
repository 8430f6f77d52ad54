/* cuda_compat.cuh: what every kernel file includes.
 *
 * The same sources build two ways:
 * - with nvcc into libddpm-cuda.so (the product);
 * - with the host C++ compiler and -DDDPM_CUDA_EMU into libddpm-cuda-emu.so, where emu/cuda_emu.h runs
 *   every kernel on the CPU (one fiber per CUDA thread, real barriers) so that the GPU test program can
 *   check the kernels' index math against the CPU backend on a machine without a GPU.
 * So kernels use only what the emulator provides: __syncthreads, __shfl_xor_sync, atomicAdd, the WMMA
 * API, the __pipeline_* copies, the math below, and launch() (never <<<>>> directly); every kernel
 * starts with grid_dependency_wait (). */
#pragma once

#ifdef DDPM_CUDA_EMU
#include "emu/cuda_emu.h"
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>
#include <cuda_pipeline.h>             /* __pipeline_memcpy_async: cp.async on sm_80+ */
#include <cooperative_groups.h>        /* this_cluster (): sm_90+ */
#endif

#include <stdint.h>
#include <stddef.h>

/* Programmatic dependent launch (sm_90+; launch_status sets the attribute when cb->pdl). A kernel launched
 * that way may start while the kernel before it in the stream still runs, so EVERY kernel calls this
 * first, before it touches memory: it waits until the previous grid has finished and its writes are
 * visible (so every earlier grid has too: each waited for its own predecessor), then lets the next grid
 * start launching, whose blocks take free SM slots and wait here in turn. What is saved is the launch gap
 * between two kernels (~2-4 us each at batch 1, where a forward is ~200 short kernels). Without the
 * attribute, or below sm_90, both instructions do nothing. The emulator checks that every thread of
 * every block calls it before its first barrier and before it ends. */
#ifdef DDPM_CUDA_EMU
void grid_dependency_wait (void);
#else
__device__ __forceinline__ void
grid_dependency_wait (void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile ("griddepcontrol.wait;" ::: "memory");
  asm volatile ("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif

/* The launch's dynamic shared memory as `unsigned char *name`, 128-byte aligned (launch()'s smem bytes; above
 * 48 KiB the kernel needs cudaFuncSetAttribute (MaxDynamicSharedMemorySize) first, which the emulator checks). */
#ifdef DDPM_CUDA_EMU
#define DYNAMIC_SMEM(name) unsigned char *const name = emu_dynamic_smem ()
#else
#define DYNAMIC_SMEM(name) extern __shared__ __align__ (128) unsigned char name[]
#endif

/* Thread-block clusters (sm_90+; launch_cluster or launch_status in cuda_backend.cuh, along z only):
 * cluster_sync () is a barrier of every thread of the cluster's blocks that also orders their shared-memory
 * writes before it against reads after it, and cluster_map_shared (p, rank) the address of the same byte of
 * block `rank`'s shared memory (distributed shared memory). Host code launches cluster kernels only where
 * cb->conv_cluster_max > 0 (sm_90+). In the emulator a cluster's blocks take turns between barriers, so what
 * must outlive one lives in dynamic shared memory (DYNAMIC_SMEM).
 * CLUSTER_COMPILED: 1 where this compilation can run clusters (sm_90 machine code, the compute_90 PTX that
 * newer GPUs compile, and the emulator). Cluster kernels, and the cluster branch of the convolutions' shared
 * epilogue, keep their bodies under it: for sm_80 / 86 / 89, where the host never launches a cluster (cc
 * 9.0 checks), they would only cost compile time; there they trap. */
#if defined(DDPM_CUDA_EMU) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
#define CLUSTER_COMPILED 1
#else
#define CLUSTER_COMPILED 0
#endif

#ifdef DDPM_CUDA_EMU
static inline void cluster_sync (void) { emu_cluster_sync (); }
template <typename T>
static inline const T *
cluster_map_shared (const T *p, int rank)
{
  return static_cast<const T *> (emu_cluster_map (p, (unsigned) rank));
}
#else
__device__ __forceinline__ void
cluster_sync (void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster ().sync ();
#else
  __trap ();
#endif
}

template <typename T>
__device__ __forceinline__ const T *
cluster_map_shared (const T *p, int rank)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster ().map_shared_rank (const_cast<T *> (p), (unsigned) rank);
#else
  (void) rank;
  __trap ();
  return p;
#endif
}
#endif

/* ---- element types: storage type T, arithmetic always in float ---- */

template <typename T> __host__ __device__ __forceinline__ float to_f32 (T v);
template <> __host__ __device__ __forceinline__ float to_f32<float> (float v) { return v; }
template <> __host__ __device__ __forceinline__ float to_f32<__half> (__half v) { return __half2float (v); }
template <> __host__ __device__ __forceinline__ float to_f32<__nv_bfloat16> (__nv_bfloat16 v) { return __bfloat162float (v); }

/* Round to nearest even, as PyTorch's .half() / .bfloat16(). */
template <typename T> __host__ __device__ __forceinline__ T from_f32 (float v);
template <> __host__ __device__ __forceinline__ float from_f32<float> (float v) { return v; }
template <> __host__ __device__ __forceinline__ __half from_f32<__half> (float v) { return __float2half_rn (v); }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16> (float v) { return __float2bfloat16_rn (v); }

/* 16-byte vectors of T (8 halves or 4 floats) as floats; p must be 16-byte aligned. */
template <typename T> struct Vec16 {
  static constexpr int N = 16 / sizeof (T);
};

/* A raw 16-byte vector, already loaded, as floats (loads of several vectors can be issued before any is
 * converted: converting each as it comes keeps the next load behind it). */
template <typename T>
__device__ __forceinline__ void
unpack16 (const uint4 &u, float *f)
{
  const T *e = reinterpret_cast<const T *> (&u);
#pragma unroll
  for (int i = 0; i < Vec16<T>::N; i++)
    f[i] = to_f32<T> (e[i]);
}

template <typename T>
__device__ __forceinline__ void
load16 (const T *p, float *f)
{
  unpack16<T> (*reinterpret_cast<const uint4 *> (p), f);
}

template <typename T>
__device__ __forceinline__ void
store16 (T *p, const float *f)
{
  uint4 u;
  T *e = reinterpret_cast<T *> (&u);
#pragma unroll
  for (int i = 0; i < Vec16<T>::N; i++)
    e[i] = from_f32<T> (f[i]);
  *reinterpret_cast<uint4 *> (p) = u;
}

/* p[0 .. N) += a for one 16-byte vector of T (p 16-byte aligned), in float, rounded once. */
template <typename T>
__device__ __forceinline__ void
add16 (T *p, float a)
{
  float f[Vec16<T>::N];
  load16<T> (p, f);
#pragma unroll
  for (int i = 0; i < Vec16<T>::N; i++)
    f[i] += a;
  store16<T> (p, f);
}

__host__ __device__ __forceinline__ bool
aligned16 (const void *p)
{
  return ((uintptr_t) p & 15) == 0;
}

__device__ __forceinline__ float silu_f (float v) { return v / (1.0f + expf (-v)); }

__device__ __forceinline__ float4 add4 (float4 a, float4 b) { return make_float4 (a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }
__host__ __device__ __forceinline__ int ceil_div (int a, int b) { return (a + b - 1) / b; }
__host__ __device__ __forceinline__ int imin (int a, int b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int imax (int a, int b) { return a > b ? a : b; }

/* Sum over the 32 lanes of a warp (every lane gets the total). */
__device__ __forceinline__ float warp_sum (float v)
{
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync (0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max (float v)
{
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf (v, __shfl_xor_sync (0xffffffffu, v, o));
  return v;
}

/* Sum over the block; blockDim.x a multiple of 32, at most 1024. Every thread gets the total.
 * red: __shared__ float[32] of the caller. Ends with a barrier, so red may be reused at once. */
__device__ __forceinline__ float block_sum (float v, float *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum (v);
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  float t = lane < nwarps ? red[lane] : 0.0f;
  t = warp_sum (t);
  __syncthreads ();
  return t;
}

__device__ __forceinline__ float block_max (float v, float *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max (v);
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  float t = lane < nwarps ? red[lane] : -INFINITY;
  t = warp_max (t);
  __syncthreads ();
  return t;
}

/* One 32 x 32 tile of a channels-last copy: ob (HW, C) at channels c0 + r (r < 32) and pixels p0 .. p0 + 31
 * gets f (r, xb (C, HW) value as float), through shared memory so that the reads (along pixels) and the
 * writes (along channels) are both coalesced. Block (32, 8); every thread calls it (it has a barrier). For
 * fp16 / bf16 / fp32 the float in between is exact, so an identity f copies bits. */
template <typename T, typename F>
__device__ __forceinline__ void
nchw_to_nhwc_tile (const T *__restrict__ xb, T *__restrict__ ob, int C, int HW, int c0, int p0, F f)
{
  __shared__ float tile[32][33];
  /* a thread's 4 loads issued together, then stored (a loop of load, then store, waited for each in turn:
   * tools/sass_chains.py) */
  float v[4];
#pragma unroll
  for (int k = 0; k < 4; k++)
    {
      const int c = c0 + (int) threadIdx.y + 8 * k, p = p0 + threadIdx.x;
      v[k] = c < C && p < HW ? to_f32<T> (xb[(size_t) c * HW + p]) : 0.0f;
    }
#pragma unroll
  for (int k = 0; k < 4; k++)
    {
      const int r = (int) threadIdx.y + 8 * k, c = c0 + r, p = p0 + threadIdx.x;
      if (c < C && p < HW)
        tile[r][threadIdx.x] = f (r, v[k]);
    }
  __syncthreads ();
  for (int r = threadIdx.y; r < 32; r += 8)
    {
      const int p = p0 + r, c = c0 + threadIdx.x;
      if (c < C && p < HW)
        ob[(size_t) p * C + c] = from_f32<T> (tile[threadIdx.x][r]);
    }
}

/* Grid-stride loop over n elements with 64-bit indices. */
#define GRID_STRIDE(i, n) \
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < (size_t) (n); \
       i += (size_t) blockDim.x * gridDim.x)
