/* flash_common.cuh: what the two mma.sync attention cores share (flash_attention.cu: query tiles, keys in
 * chunks; flash_split.cu: keys split across the warps of one query tile): the operand packing, the
 * cp.async row copies and the fused out projection of a one-head attention block.
 *
 * Shared rows are padded by FM_PAD elements (16 bytes) so that ldmatrix's eight rows hit different banks. */
#pragma once

#include "cuda_backend.cuh"
#include "mma_sync.cuh"

#include <type_traits>

#define FM_PAD 8                        /* elements of padding per shared row: 16 bytes */
#define FM_WK 32                        /* Wo columns per chunk of the fused out projection */

/* Two floats as one register of two T, the first in the low half (the mma operand layout). */
template <typename T>
__device__ __forceinline__ uint32_t
pack2 (float lo, float hi)
{
  const T v[2] = { from_f32<T> (lo), from_f32<T> (hi) };
  uint32_t u;
  memcpy (&u, v, sizeof u);
  return u;
}

/* Qs [d][LQ] (shared) = q (d x cols, row stride HW, global) + bq (per row; NULL: none), in float, rounded once
 * (the values the bias pass it replaces gave); cols a multiple of 16 bytes' worth, q 16-byte aligned. q may be
 * Qs itself (HW = LQ: the bias added in place to a Q that came by cp.async; each value is read, then written,
 * by one thread). */
template <typename T>
__device__ __forceinline__ void
fm_stage_q (T *Qs, int LQ, const T *q, int HW, int d, int cols, const float *bq)
{
  constexpr int N = Vec16<T>::N, U = 4;   /* U vectors per thread loaded before any is stored: one round trip
                                           * per U (a loop of load, then store, waited for every load) */
  const int vecs = cols / N, total = d * vecs;
  for (int e0 = threadIdx.x; e0 < total; e0 += U * blockDim.x)
    {
      uint4 raw[U];                     /* converted only after every load is out (converting each as it
                                         * came kept the next load behind it) */
      float add[U];
#pragma unroll
      for (int u = 0; u < U; u++)
        {
          /* past the end: vector e0 again (always valid), so no branch parts the loads (nvcc put each
           * guarded load in its own branch, with its conversion behind it) */
          const int eu = e0 + u * (int) blockDim.x, e = eu < total ? eu : e0, i = e / vecs, c = (e % vecs) * N;
          raw[u] = *reinterpret_cast<const uint4 *> (q + (size_t) i * HW + c);
          add[u] = bq != NULL ? bq[i] : 0.0f;
        }
#pragma unroll
      for (int u = 0; u < U; u++)
        {
          const int e = e0 + u * blockDim.x, i = e / vecs, c = (e % vecs) * N;
          if (e < total)
            {
              float f[N];
              unpack16<T> (raw[u], f);
#pragma unroll
              for (int j = 0; j < N; j++)
                f[j] += add[u];
              store16<T> (Qs + (size_t) i * LQ + c, f);
            }
        }
    }
}

/* A score accumulator s[NJ][4] holds 16 rows x 8 NJ columns in mma.sync's C layout: lane (g, t) has rows g
 * (e = 0, 1) and g + 8 (e = 2, 3), columns 8 j + 2 t + (e & 1). The softmax steps on its first `cols` columns
 * work in base 2: with scale2 = the score scale (1 / sqrt (d)) times log2(e), exp (s scale - max) = exp2 (s
 * scale2 - m) where m = max (s) scale2, one FFMA and one MUFU.EX2 per score (expf costs several more
 * instructions, and the scores are most of an attention core's non-tensor work). Both steps take the score
 * scale and derive scale2 (fm_scale2). fm_row_max gives the row maxima in those units (the 4 lanes of a row
 * agree; scale2 > 0, so scaling the maximum is the maximum of the scaled); fm_exp_row_sum turns s into exp2 (s
 * scale2 - m) in place and sums the rows. Every exponential of maxima differences (the online softmax's
 * correction, the cluster's combine) is in base 2 too (fm_exp2). */
__device__ __forceinline__ float
fm_scale2 (float scale)
{
  return scale * 1.4426950408889634f;   /* log2(e) */
}

/* 2^x as MUFU.EX2 alone, results below 2^-126 flushed to 0 (ex2.approx.ftz): exp2f spends a compare and two
 * multiplies per call keeping them, and a probability that small is 0 once rounded to fp16 and nothing beside
 * a row sum >= 1. The emulator takes exp2f. */
__device__ __forceinline__ float
fm_exp2 (float x)
{
#ifdef DDPM_CUDA_EMU
  return exp2f (x);
#else
  float y;
  asm ("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

template <int NJ>
__device__ __forceinline__ void
fm_row_max (const float (&s)[NJ][4], int cols, float scale, float (&mx)[2])
{
  mx[0] = mx[1] = -INFINITY;
#pragma unroll
  for (int j = 0; j < NJ; j++)
    if (8 * j < cols)
#pragma unroll
      for (int e = 0; e < 4; e++)
        mx[e >> 1] = fmaxf (mx[e >> 1], s[j][e]);
#pragma unroll
  for (int r = 0; r < 2; r++)
    {
      mx[r] = fmaxf (mx[r], __shfl_xor_sync (0xffffffffu, mx[r], 1));
      mx[r] = fmaxf (mx[r], __shfl_xor_sync (0xffffffffu, mx[r], 2));
      mx[r] *= fm_scale2 (scale);
    }
}

template <int NJ>
__device__ __forceinline__ void
fm_exp_row_sum (float (&s)[NJ][4], int cols, float scale, const float (&m)[2], float (&sum)[2])
{
  const float scale2 = fm_scale2 (scale);
  sum[0] = sum[1] = 0.0f;
#pragma unroll
  for (int j = 0; j < NJ; j++)
    if (8 * j < cols)
#pragma unroll
      for (int e = 0; e < 4; e++)
        {
          s[j][e] = fm_exp2 (fmaf (s[j][e], scale2, -m[e >> 1]));
          sum[e >> 1] += s[j][e];
        }
#pragma unroll
  for (int r = 0; r < 2; r++)
    {
      sum[r] += __shfl_xor_sync (0xffffffffu, sum[r], 1);
      sum[r] += __shfl_xor_sync (0xffffffffu, sum[r], 2);
    }
}

/* The block's row maxima m[] from each warp's (mx[], fm_row_max's; lane (g, t): rows g and g + 8) through
 * red_max [W][16] (shared); a barrier inside, so every thread of the block calls it. */
__device__ __forceinline__ void
fm_block_row_max (const float (&mx)[2], float *red_max, int W, float (&m)[2])
{
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
  if ((lane & 3) == 0)
    {
      red_max[warp * 16 + g] = mx[0];
      red_max[warp * 16 + g + 8] = mx[1];
    }
  __syncthreads ();
  m[0] = m[1] = -INFINITY;
  for (int w = 0; w < W; w++)
    {
      m[0] = fmaxf (m[0], red_max[w * 16 + g]);
      m[1] = fmaxf (m[1], red_max[w * 16 + g + 8]);
    }
}

/* Columns 16 kk .. 16 kk + 15 of a probability accumulator as the A fragment of P V^T (C and A layouts match),
 * rounded to T. */
template <typename T, int NJ>
__device__ __forceinline__ void
fm_p_fragment (const float (&s)[NJ][4], int kk, uint32_t (&a)[4])
{
  a[0] = pack2<T> (s[2 * kk][0], s[2 * kk][1]);
  a[1] = pack2<T> (s[2 * kk][2], s[2 * kk][3]);
  a[2] = pack2<T> (s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = pack2<T> (s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

/* rows x cols of src (row stride HW, global) into dst (row stride ld, shared) by 16-byte cp.async, one group.
 * Where a row's vectors divide the block (every call of the attention cores' K, V, Q and Wo chunks), each
 * thread keeps its column and steps over rows by pointer increments: at sm_90a a copy costs 12 instructions
 * there, where the general loop's division and 64-bit products took 37-40 (16 copies per thread per key
 * chunk in flash_mma_kernel at d = 256). */
template <typename T>
__device__ __forceinline__ void
fm_copy_rows (T *dst, int ld, const T *src, int HW, int rows, int cols)
{
  constexpr int N = Vec16<T>::N;
  const int vecs = cols / N;
  if (vecs > 0 && blockDim.x % vecs == 0)
    {
      const int step = blockDim.x / vecs, i0 = threadIdx.x / vecs, c = (threadIdx.x % vecs) * N;
      const size_t dst_step = (size_t) step * ld, src_step = (size_t) step * HW;
      T *d = dst + (size_t) i0 * ld + c;
      const T *s = src + (size_t) i0 * HW + c;
      for (int i = i0; i < rows; i += step, d += dst_step, s += src_step)
        __pipeline_memcpy_async (d, s, 16);
    }
  else
    for (int e = threadIdx.x; e < rows * vecs; e += blockDim.x)
      {
        const int i = e / vecs, c = (e % vecs) * N;
        __pipeline_memcpy_async (dst + (size_t) i * ld + c, src + (size_t) i * HW + c, 16);
      }
  __pipeline_commit ();
}

/* Host side: f (std::integral_constant<int, DS> ()) for the kernels' compile-time output-dims-per-warp DS
 * (16, 32, 64 or 128, and 256 where MAX_DS allows: flash_attention.cu's kernel alone) given at run time, so a
 * launcher names kernel<T, DS> once. */
template <int MAX_DS = 128, typename F>
static inline void
fm_with_ds (int ds, F &&f)
{
  if constexpr (MAX_DS >= 256)
    if (ds == 256)
      {
        f (std::integral_constant<int, 256> ());
        return;
      }
  switch (ds)
    {
    case 128: f (std::integral_constant<int, 128> ()); break;
    case 64: f (std::integral_constant<int, 64> ()); break;
    case 32: f (std::integral_constant<int, 32> ()); break;
    default: f (std::integral_constant<int, 16> ()); break;
    }
}

/* Every DS instantiation of a kernel allowed `bytes` of dynamic shared memory (above 48 KiB a launch needs
 * it); kernel_of (std::integral_constant<int, DS>) gives kernel<T, DS>'s address. */
template <int MAX_DS = 128, typename K>
static inline bool
fm_allow_smem_all_ds (int bytes, K &&kernel_of)
{
  bool ok = true;
  for (int ds : { 16, 32, 64, 128, 256 })
    if (ds <= MAX_DS)
      fm_with_ds<MAX_DS> (ds, [&] (auto c) {
        ok = ok
             && cudaFuncSetAttribute (kernel_of (c), cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess;
      });
  return ok;
}

/* No out projection: O is written. */
static const CudaFlashOut fm_no_out = { NULL, 0, NULL, NULL, NULL, 1.0f };

/* Shared elements the out projection's two Wo chunks take: [2][C][FM_WK + FM_PAD]. */
static inline __host__ __device__ size_t
fm_out_proj_elems (int C)
{
  return 2 * (size_t) C * (FM_WK + FM_PAD);
}

/* The out projection's accumulators (DS channels x 16 queries) zeroed. */
template <int DS>
__device__ __forceinline__ void
fm_out_zero (float (&acc)[DS / 16][2][4])
{
#pragma unroll
  for (int mt = 0; mt < DS / 16; mt++)
#pragma unroll
    for (int n = 0; n < 2; n++)
      acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.0f;
}

/* acc (DS channels x 16 queries, mma.sync C fragments as fm_out_store takes them) += W (DS x dims, shared, row
 * stride LW) O (dims x 16, shared [dim][query], row stride LQ), over `dims` (a multiple of 16) dims. */
template <typename T, int DS>
__device__ __forceinline__ void
fm_out_mma (float (&acc)[DS / 16][2][4], const T *Os, int LQ, const T *W, int LW, int dims)
{
  const int lane = threadIdx.x & 31, mrow = lane & 7, mhi = (lane >> 4) & 1, mlo = (lane >> 3) & 1;
#pragma unroll 4
  for (int ks = 0; ks < dims; ks += 16)
    {
      uint32_t ob[4];   /* O (dims +0, queries +0), (+8, +0), (+0, +8), (+8, +8) */
      ldmatrix_x4_trans (ob, Os + (size_t) (ks + 8 * mlo + mrow) * LQ + 8 * mhi);
      const uint32_t b0[2] = { ob[0], ob[1] }, b1[2] = { ob[2], ob[3] };
#pragma unroll
      for (int mt = 0; mt < DS / 16; mt++)
        {
          uint32_t a[4];   /* W (channels +0, dims +0), (+8, +0), (+0, +8), (+8, +8) */
          ldmatrix_x4 (a, W + (size_t) (16 * mt + 8 * mlo + mrow) * LW + ks + 8 * mhi);
          mma_m16n8k16<T> (acc[mt][0], a, b0);
          mma_m16n8k16<T> (acc[mt][1], a, b1);
        }
    }
}

/* The out projection's end: y = (acc + bo + residual) * scale, in the unfused pass's order, one rounding.
 * acc[mt][n] is the mma.sync C fragment of channels ch0 + 16 mt .. + 15 and queries q0 + 8 n .. + 7 of image b
 * (y and residual (B, C, HW), 16-bit T; q0 and HW even); y may alias residual (each element is read, then
 * written, by one thread). A lane's two columns 2 t, 2 t + 1 are adjacent: one 4-byte load and store each.
 * The residual pairs of up to 8 fragment rows are all loaded before any store: with y possibly aliasing
 * residual, a store between two loads keeps the second behind the first's round trip (nvcc emitted a chain
 * of 64 dependent L2 trips per thread at DS = 128; tools/sass_chains.py counts them). */
template <typename T, int DS>
__device__ __forceinline__ void
fm_out_store (const float (&acc)[DS / 16][2][4], int ch0, const float *__restrict__ bo, const T *residual, T *y,
              float scale, int b, int C, int HW, int q0)
{
  static_assert (sizeof (T) == 2, "pairs of 16-bit values");
  constexpr int MT = DS / 16, GROUP = MT < 8 ? MT : 8;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  /* fragment row block mt, query block n, row half h: the lane's channel and the index of its pair */
  auto channel = [&] (int mt, int h) { return ch0 + 16 * mt + g + 8 * h; };
  auto pair_at = [&] (int mt, int n, int h) {
    return ((size_t) b * C + channel (mt, h)) * HW + q0 + 8 * n + 2 * t;
  };
#pragma unroll
  for (int m0 = 0; m0 < MT; m0 += GROUP)
    {
      uint32_t res[GROUP][2][2];        /* [mt][n][h]: queries 2 t, 2 t + 1 of channel row g + 8 h */
#pragma unroll
      for (int mt = 0; mt < GROUP; mt++)
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
          for (int h = 0; h < 2; h++)
            res[mt][n][h] = *reinterpret_cast<const uint32_t *> (residual + pair_at (m0 + mt, n, h));
#pragma unroll
      for (int mt = 0; mt < GROUP; mt++)
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
          for (int h = 0; h < 2; h++)
            {
              const int ch = channel (m0 + mt, h);
              const size_t i = pair_at (m0 + mt, n, h);
              const float add = bo != NULL ? bo[ch] : 0.0f;
              T r[2];
              memcpy (r, &res[mt][n][h], sizeof r);
              const float v0 = acc[m0 + mt][n][2 * h] + add, v1 = acc[m0 + mt][n][2 * h + 1] + add;
              *reinterpret_cast<uint32_t *> (y + i)
                  = pack2<T> ((v0 + to_f32<T> (r[0])) * scale, (v1 + to_f32<T> (r[1])) * scale);
            }
    }
}

/* The out projection of a one-head attention block (C = d) for 16 queries:
 *   y (C x 16) = (Wo (C x d) O (d x 16) + bo + residual) * scale,
 * O (rounded to T, as the unfused path stores it) in Os as [dim][query] (row stride LQ, the 16 queries at
 * column qcol), Wo's columns in chunks of FM_WK by cp.async into Ws (fm_out_proj_elems (C), double-buffered).
 * This warp computes channels ds DS .. ds DS + DS - 1; the queries are q0 .. q0 + 15 of image b. y may alias
 * residual (each element is read, then written, by one thread). Every thread of the block calls it (barriers);
 * Ws must be free and Os complete (a barrier before the call). */
template <typename T, int DS>
__device__ __forceinline__ void
fm_out_projection (const T *Os, int LQ, int qcol, int ds, T *Ws, const T *__restrict__ Wo, int ldw, int C, int d,
                   const float *__restrict__ bo, const T *residual, T *y, float scale, int b, int HW, int q0)
{
  constexpr int LW = FM_WK + FM_PAD;
  float acc[DS / 16][2][4];
  fm_out_zero<DS> (acc);
  const int nwk = d / FM_WK;
  fm_copy_rows (Ws, LW, Wo, ldw, C, FM_WK);
  for (int c = 0; c < nwk; c++)
    {
      if (c + 1 < nwk)
        fm_copy_rows (Ws + (size_t) ((c + 1) & 1) * C * LW, LW, Wo + (c + 1) * FM_WK, ldw, C, FM_WK);
      __pipeline_wait_prior (c + 1 < nwk ? 1 : 0);   /* chunk c has landed */
      __syncthreads ();
      const T *w = Ws + (size_t) (c & 1) * C * LW + (size_t) ds * DS * LW;   /* this warp's channels of chunk c */
      fm_out_mma<T, DS> (acc, Os + (size_t) c * FM_WK * LQ + qcol, LQ, w, LW, FM_WK);
      __syncthreads ();                 /* every warp is done with buffer c & 1 before chunk c + 2 refills it */
    }
  fm_out_store<T, DS> (acc, ds * DS, bo, residual, y, scale, b, C, HW, q0);
}
