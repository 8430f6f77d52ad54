/* cuda_emu.h: a CPU emulation of the subset of CUDA that kernels/ uses. Tests only.
 *
 * Why: nothing here has a GPU, and kernels must work the first time they meet one. Built with the host
 * C++ compiler (-DDDPM_CUDA_EMU), the very same kernel sources run on the CPU: every CUDA thread is a
 * fiber, __syncthreads and the warp shuffles are real barriers among them, blocks run one after
 * another (so `__shared__` = `static` is per block), and the runtime calls the backend makes (memory,
 * streams, events, stream capture into graphs) are implemented on host memory. A kernel whose threads
 * reach different barriers aborts with a message, and between two __syncthreads one warp runs its whole
 * stretch before the next (orders alternating), so a missing barrier usually shows up as a wrong result.
 * The WMMA API is emulated with whole 16x16 tiles per lane (same arithmetic: products of fp16/bf16 inputs
 * accumulated in float).
 *
 * Not emulated: timing, occupancy, bank conflicts, register or shared-memory limits, memory-model
 * subtleties between blocks. The real checks happen on a GPU (tests/gpu/run.sh). */
#pragma once

#include <cuda_runtime_api.h>  /* the real types and prototypes; cuda_emu.cc defines the subset we use */
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __align__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__ ((aligned (n)))
#define __launch_bounds__(...)

/* Built-in variables: the scheduler sets them before resuming a fiber. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

void __syncthreads (void);
/* Waits until every live lane of the calling thread's warp arrives. */
void emu_warp_barrier (void);
/* A warp exchange (shuffle, ldmatrix, mma): each lane writes what it hands the warp into its 32-byte slot of
 * the bank emu_exchange_bank () gives, meets the warp at one barrier, then reads the others' slots of that
 * bank. The banks alternate from one exchange to the next, so a lane that has read and runs on to the next
 * exchange writes the other bank, never what a slower lane has still to read: one barrier per exchange, not
 * two (with one bank each exchange needed a second barrier after the reads). */
int emu_exchange_bank (void);
uint8_t *emu_lane_slot (int linear_thread, int bank);

template <typename T>
static inline T
__shfl_xor_sync (unsigned mask, T v, int lane_mask, int width = 32)
{
  (void) mask;
  (void) width;
  static_assert (sizeof (T) <= 8, "shuffle of a type wider than 8 bytes");
  const int tid = (int) (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
  const int lane = tid & 31, warp_base = tid & ~31, bank = emu_exchange_bank ();
  memcpy (emu_lane_slot (tid, bank), &v, sizeof (T));
  emu_warp_barrier ();
  T r;
  memcpy (&r, emu_lane_slot (warp_base + (lane ^ lane_mask), bank), sizeof (T));
  return r;
}

/* One OS thread runs every fiber, so plain read-modify-write is atomic here. */
static inline unsigned long long atomicAdd (unsigned long long *p, unsigned long long v) { unsigned long long o = *p; *p += v; return o; }
static inline unsigned int atomicAdd (unsigned int *p, unsigned int v) { unsigned int o = *p; *p += v; return o; }
static inline float atomicAdd (float *p, float v) { float o = *p; *p += v; return o; }
static inline int atomicAdd (int *p, int v) { int o = *p; *p += v; return o; }
/* Blocks run one after another: memory is always coherent. */
static inline void __threadfence (void) {}
template <typename T> static inline T __ldcg (const T *p) { return *p; }

static inline float rsqrtf (float x) { return 1.0f / sqrtf (x); }
/* IEEE single operations, each rounded (the build uses -ffp-contract=off, so nothing is fused). */
static inline float __fmul_rn (float a, float b) { return a * b; }
static inline float __fadd_rn (float a, float b) { return a + b; }
static inline float __fsub_rn (float a, float b) { return a - b; }
static inline float __fdiv_rn (float a, float b) { return a / b; }
using std::isfinite;
static inline float __saturatef (float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

/* Runs (or, while the stream is being captured, records) a kernel: grid of blocks of `block` fibers with
 * smem bytes of dynamic shared memory. kernel identifies the function: as on a GPU, more than 48 KiB of
 * dynamic shared memory needs cudaFuncSetAttribute (kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, >=
 * smem) first, else the launch fails with cudaErrorInvalidValue. */
void emu_launch (const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                 std::function<void ()> body, unsigned cluster_z = 1);
/* The launch's dynamic shared memory (DYNAMIC_SMEM in cuda_compat.cuh), 128-byte aligned, 0xff-filled at each
 * block start. */
unsigned char *emu_dynamic_smem (void);
/* Thread-block clusters (sm_90), along z only: a launch with cluster_z > 1 (grid.z a multiple of it, at most 8,
 * or 16 after cudaFuncSetAttribute (NonPortableClusterSizeAllowed, 1)) runs its blocks cluster by cluster;
 * a cluster's blocks take turns between cluster barriers, each with its own dynamic shared memory (static
 * __shared__ is one per process here: cluster kernels keep what must outlive a cluster barrier in dynamic
 * shared memory). emu_cluster_map gives the address of the same byte of another rank's dynamic shared memory. */
void emu_cluster_sync (void);
void *emu_cluster_map (const void *p, unsigned rank);
/* cudaOccupancyMaxActiveClusters (declared by cuda_runtime_api.h): 1 for cluster sizes the kernel may launch
 * with (as emu_launch checks), else 0. */
/* Runs (or records) host work that stands for an asynchronous device operation (copies, cuBLAS). */
void emu_enqueue (cudaStream_t stream, std::function<void ()> work);
/* Counts kernel launches (for tests of the graph path). */
unsigned long emu_launch_count (void);

/* ---- WMMA (nvcuda::wmma), emulated with whole tiles ----
 * Loads, products and stores are warp-collective with warp-uniform arguments, so lane 0 alone does them on
 * a whole 16x16 tile held as float (the other lanes' fragments stay unused): the same arithmetic as the
 * tensor cores (products of fp16/bf16 values are exact in float, accumulated in float), 32 times cheaper
 * than every lane computing the tile. Kernels must not touch fragment elements (x[]) other than by
 * fill_fragment. */
int emu_lane (void);
/* a kernel broke a rule the emulator or the kernel itself checks (alignment, a consistency check): the
 * message, the block, and abort */
[[noreturn]] void emu_check_failed (const char *what);

static inline float emu_to_float (float v) { return v; }
static inline float emu_to_float (__half v) { return __half2float (v); }
static inline float emu_to_float (__nv_bfloat16 v) { return __bfloat162float (v); }

/* cp.async through the pipeline primitives (size - zfill bytes copied, then zfill zeros). Each thread's
 * copies form groups at __pipeline_commit; $DDPM_CUDA_EMU_CP_ASYNC says when a copy lands, at one of the
 * two ends of what the hardware may do:
 * - "early" (default): at issue, so a stage refilled while other threads still read it (a missing barrier)
 *   gives wrong results;
 * - "late": only when __pipeline_wait_prior (or the thread's end) makes it due, so a wait that lets too
 *   many groups stay in flight reads stale shared memory and gives wrong results. */
void __pipeline_memcpy_async (void *dst, const void *src, size_t size, size_t zfill = 0);
void __pipeline_commit (void);
void __pipeline_wait_prior (size_t prior);

/* ---- ldmatrix / mma.sync (kernels/mma_sync.cuh), lane by lane with the PTX ISA's fragment layouts ----
 * Each lane leaves its operands in its slot, the warp meets at a barrier, and each lane builds its own
 * results from the whole warp's operands, so a kernel that gets a fragment layout wrong gets wrong numbers
 * here as on the GPU. Products of fp16/bf16 values are exact in float and accumulate in float, as on the
 * tensor cores (whose order of additions is unspecified). */

static inline int
emu_linear_thread (void)
{
  return (int) (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

/* ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16: lanes 8q .. 8q + 7 give the 16-byte rows of matrix q; r[q]
 * gets row lane / 4, elements 2 (lane % 4) and 2 (lane % 4) + 1, of matrix q; with .trans (ldmatrix_x4_trans)
 * the same of its transpose: rows 2 (lane % 4) and 2 (lane % 4) + 1, element lane / 4. */
static inline void
emu_ldmatrix_x4 (uint32_t (&r)[4], const void *row, bool trans)
{
  const int tid = emu_linear_thread (), lane = tid & 31, base = tid & ~31;
  if (((uintptr_t) row & 15) != 0)
    emu_check_failed ("ldmatrix: a row address is not 16-byte aligned");
  const int bank = emu_exchange_bank ();
  memcpy (emu_lane_slot (tid, bank), &row, sizeof row);
  emu_warp_barrier ();
  for (int q = 0; q < 4; q++)
    {
      uint16_t half[2];                 /* elements (row, column) of matrix q: (lane / 4, 2 (lane % 4) + e), or */
      for (int e = 0; e < 2; e++)       /* transposed (2 (lane % 4) + e, lane / 4) */
        {
          const int rw = trans ? 2 * (lane % 4) + e : lane / 4, col = trans ? lane / 4 : 2 * (lane % 4) + e;
          const uint8_t *p;
          memcpy (&p, emu_lane_slot (base + 8 * q + rw, bank), sizeof p);
          memcpy (&half[e], p + 2 * col, 2);
        }
      memcpy (&r[q], half, 4);
    }
}

static inline void ldmatrix_x4 (uint32_t (&r)[4], const void *row) { emu_ldmatrix_x4 (r, row, false); }
static inline void ldmatrix_x4_trans (uint32_t (&r)[4], const void *row) { emu_ldmatrix_x4 (r, row, true); }

/* mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: d (16 x 8) += A (16 x 16) B (16 x 8). With g = lane / 4,
 * t = lane % 4 (pairs of elements per register): a = A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..];
 * b = B[2t..][g], B[2t+8..][g]; d = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]. */
template <typename T>
static inline void
mma_m16n8k16 (float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
  const int tid = emu_linear_thread (), lane = tid & 31, base = tid & ~31;
  const int bank = emu_exchange_bank ();
  uint8_t *mine = emu_lane_slot (tid, bank);
  memcpy (mine, a, 16);
  memcpy (mine + 16, b, 8);
  emu_warp_barrier ();
  /* this lane's rows g, g + 8 of A (from lanes 4 g .. 4 g + 3) and columns 2 t, 2 t + 1 of B (from lanes
   * 8 t .. 8 t + 7): 64 conversions, where building all of A and B in every lane took 384 */
  const int g = lane / 4, t = lane % 4;
  float Ar[2][16], Bc[2][16];
  for (int q = 0; q < 4; q++)
    {
      T av[8];
      memcpy (av, emu_lane_slot (base + 4 * g + q, bank), 16);
      for (int e = 0; e < 2; e++)
        {
          Ar[0][2 * q + e] = emu_to_float (av[e]);
          Ar[1][2 * q + e] = emu_to_float (av[2 + e]);
          Ar[0][2 * q + 8 + e] = emu_to_float (av[4 + e]);
          Ar[1][2 * q + 8 + e] = emu_to_float (av[6 + e]);
        }
      for (int c = 0; c < 2; c++)
        {
          T bv[4];
          memcpy (bv, emu_lane_slot (base + 4 * (2 * t + c) + q, bank) + 16, 8);
          for (int e = 0; e < 2; e++)
            {
              Bc[c][2 * q + e] = emu_to_float (bv[e]);
              Bc[c][2 * q + 8 + e] = emu_to_float (bv[2 + e]);
            }
        }
    }
  for (int i = 0; i < 4; i++)
    {
      const float *ar = Ar[i >= 2 ? 1 : 0], *bc = Bc[i & 1];
      float acc = d[i];
      for (int k = 0; k < 16; k++)
        acc += ar[k] * bc[k];
      d[i] = acc;
    }
}

/* ---- wgmma (kernels/wgmma.cuh, sm_90a), thread by thread ----
 * Shared-window addresses: emu_smem_address gives p's offset in the block's dynamic shared memory plus 128, so
 * that, as on a GPU, the dynamic shared memory is 128-byte but not 1024-byte aligned there and a kernel
 * must align a 128-byte-swizzled tile itself. emu_wgmma_m64nNk16 records wgmma.mma_async (D 64 x N +=
 * A 64 x 16 B^T, B stored as N rows of K, N = 128 or 256: both K-major, 128-byte swizzle descriptors only)
 * with each thread's own N / 2 accumulators in the PTX fragment layout (warp w of the warpgroup: rows 16 w + lane / 4
 * (+ 8), columns 8 j + 2 (lane % 4) (+ 1), register 4 j + e); its products are computed at issue and again
 * when emu_wgmma_wait makes it due, and a difference aborts (an operand changed while the wgmma was in
 * flight); only then is d written, so reading d before the wait sees the old values. The descriptors,
 * scale and N of the k-th wgmma of a warpgroup must be the same in all its threads (checked). An operand byte that
 * a cp.async wrote and whose writing thread has not called fence_proxy_async_shared (emu_fence_proxy_async)
 * since aborts: on a GPU the async proxy may not see it (plain stores are not tracked). */
uint32_t emu_smem_address (const void *p);
void emu_wgmma_m64nNk16 (float *d, int n, uint64_t desc_a, uint64_t desc_b, int scale_d, bool bf16);
void emu_wgmma_commit (void);
void emu_fence_proxy_async (void);
void emu_wgmma_wait (int keep);

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment;

template <int M, int N, int K, typename T, typename Layout>
struct fragment<matrix_a, M, N, K, T, Layout> {
  enum { num_elements = M * K, rows = M, cols = K };
  float x[M * K];                  /* row-major M x K */
};

template <int M, int N, int K, typename T, typename Layout>
struct fragment<matrix_b, M, N, K, T, Layout> {
  enum { num_elements = K * N, rows = K, cols = N };
  float x[K * N];                  /* row-major K x N */
};

template <int M, int N, int K, typename T>
struct fragment<accumulator, M, N, K, T, void> {
  enum { num_elements = M * N, rows = M, cols = N };
  float x[M * N];                  /* row-major M x N */
};

template <typename F, typename T>
static inline void fill_fragment (F &f, T v) { for (int i = 0; i < F::num_elements; i++) f.x[i] = (float) v; }

template <typename Use, int M, int N, int K, typename T, typename Layout>
static inline void
load_matrix_sync (fragment<Use, M, N, K, T, Layout> &f, const T *p, unsigned ldm)
{
  typedef fragment<Use, M, N, K, T, Layout> F;
  if (emu_lane () != 0)
    return;
  if (((uintptr_t) p & 31) != 0 || ldm % (16 / sizeof (T)) != 0)
    emu_check_failed ("load_matrix_sync: pointer not 32-byte aligned or ldm not a multiple of 16 bytes");
  for (int r = 0; r < F::rows; r++)
    for (int c = 0; c < F::cols; c++)
      f.x[r * F::cols + c] = emu_to_float (std::is_same<Layout, row_major>::value ? p[(size_t) r * ldm + c]
                                                                                 : p[(size_t) c * ldm + r]);
}

template <int M, int N, int K, typename T>
static inline void
load_matrix_sync (fragment<accumulator, M, N, K, T, void> &f, const T *p, unsigned ldm, layout_t layout)
{
  if (emu_lane () != 0)
    return;
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++)
      f.x[r * N + c] = layout == mem_row_major ? p[(size_t) r * ldm + c] : p[(size_t) c * ldm + r];
}

template <int M, int N, int K, typename T>
static inline void
store_matrix_sync (T *p, const fragment<accumulator, M, N, K, T, void> &f, unsigned ldm, layout_t layout)
{
  if (emu_lane () != 0)
    return;
  if (((uintptr_t) p & 31) != 0 || ldm % (16 / sizeof (T)) != 0)
    emu_check_failed ("store_matrix_sync: pointer not 32-byte aligned or ldm not a multiple of 16 bytes");
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++)
      (layout == mem_row_major ? p[(size_t) r * ldm + c] : p[(size_t) c * ldm + r]) = f.x[r * N + c];
}

template <int M, int N, int K, typename TA, typename LA, typename LB>
static inline void
mma_sync (fragment<accumulator, M, N, K, float, void> &d, const fragment<matrix_a, M, N, K, TA, LA> &a,
          const fragment<matrix_b, M, N, K, TA, LB> &b, const fragment<accumulator, M, N, K, float, void> &c)
{
  if (emu_lane () != 0)
    return;
  float out[M * N];
  for (int i = 0; i < M; i++)
    {
      float row[N];
      for (int j = 0; j < N; j++)
        row[j] = c.x[i * N + j];
      for (int k = 0; k < K; k++)
        {
          const float av = a.x[i * K + k];
          for (int j = 0; j < N; j++)
            row[j] += av * b.x[k * N + j];
        }
      for (int j = 0; j < N; j++)
        out[i * N + j] = row[j];
    }
  memcpy (d.x, out, sizeof out);
}

} /* namespace wmma */
} /* namespace nvcuda */
