/* flash_common.cuh: what the two mma.sync attention cores share (flash_attention.cu: query tiles, keys in
 * chunks; flash_split.cu: keys split across the warps of one query tile): the operand packing, the
 * cp.async row copies and the fused out projection of a one-head attention block.
 *
 * Shared rows are padded by FM_PAD elements (16 bytes) so that ldmatrix's eight rows hit different banks. */
#pragma once

#include "cuda_backend.cuh"
#include "mma_sync.cuh"

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

/* rows x cols of src (row stride HW, global) into dst (row stride ld, shared) by 16-byte cp.async, one group */
template <typename T>
__device__ __forceinline__ void
fm_copy_rows (T *dst, int ld, const T *src, int HW, int rows, int cols)
{
  constexpr int N = Vec16<T>::N;
  const int vecs = cols / N;
  for (int e = threadIdx.x; e < rows * vecs; e += blockDim.x)
    {
      const int i = e / vecs, c = (e % vecs) * N;
      __pipeline_memcpy_async (dst + (size_t) i * ld + c, src + (size_t) i * HW + c, 16);
    }
  __pipeline_commit ();
}

/* Shared elements the out projection's two Wo chunks take: [2][C][FM_WK + FM_PAD]. */
static inline __host__ __device__ size_t
fm_out_proj_elems (int C)
{
  return 2 * (size_t) C * (FM_WK + FM_PAD);
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
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int mrow = lane & 7, mhi = (lane >> 4) & 1, mlo = (lane >> 3) & 1;
  float acc[DS / 16][2][4];
#pragma unroll
  for (int mt = 0; mt < DS / 16; mt++)
#pragma unroll
    for (int n = 0; n < 2; n++)
      acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.0f;
  const int nwk = d / FM_WK;
  fm_copy_rows (Ws, LW, Wo, ldw, C, FM_WK);
  for (int c = 0; c < nwk; c++)
    {
      if (c + 1 < nwk)
        fm_copy_rows (Ws + (size_t) ((c + 1) & 1) * C * LW, LW, Wo + (c + 1) * FM_WK, ldw, C, FM_WK);
      __pipeline_wait_prior (c + 1 < nwk ? 1 : 0);   /* chunk c has landed */
      __syncthreads ();
      const T *w = Ws + (size_t) (c & 1) * C * LW;
#pragma unroll
      for (int ks = 0; ks < FM_WK; ks += 16)
        {
          uint32_t ob[4];   /* O (dims +0, queries +0), (+8, +0), (+0, +8), (+8, +8) */
          ldmatrix_x4_trans (ob, Os + (size_t) (c * FM_WK + ks + 8 * mlo + mrow) * LQ + qcol + 8 * mhi);
          const uint32_t b0[2] = { ob[0], ob[1] }, b1[2] = { ob[2], ob[3] };
#pragma unroll
          for (int mt = 0; mt < DS / 16; mt++)
            {
              uint32_t a[4];   /* Wo (channels +0, dims +0), (+8, +0), (+0, +8), (+8, +8) */
              ldmatrix_x4 (a, w + (size_t) (ds * DS + 16 * mt + 8 * mlo + mrow) * LW + ks + 8 * mhi);
              mma_m16n8k16<T> (acc[mt][0], a, b0);
              mma_m16n8k16<T> (acc[mt][1], a, b1);
            }
        }
      __syncthreads ();                 /* every warp is done with buffer c & 1 before chunk c + 2 refills it */
    }
  /* y = (proj + bo + residual) * scale, in the unfused pass's order, one rounding */
#pragma unroll
  for (int mt = 0; mt < DS / 16; mt++)
#pragma unroll
    for (int n = 0; n < 2; n++)
#pragma unroll
      for (int e = 0; e < 4; e++)
        {
          const int ch = ds * DS + 16 * mt + g + 8 * (e >> 1);
          const size_t i = ((size_t) b * C + ch) * HW + q0 + 8 * n + 2 * t + (e & 1);
          const float v = acc[mt][n][e] + (bo != NULL ? bo[ch] : 0.0f);
          y[i] = from_f32<T> ((v + to_f32<T> (residual[i])) * scale);
        }
}
