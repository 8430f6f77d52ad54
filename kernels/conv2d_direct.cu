/* conv2d_direct.cu: direct convolution on the CUDA cores (fp16/bf16 storage, float arithmetic) for the shapes
 * where a tensor-core tile would be mostly empty: few output channels (conv_out, 128 -> 3) or a short
 * reduction (conv_in, 3 -> 128: K = 27). The implicit GEMM's tile is 64 output channels x 64 pixels x 32 of
 * K, so at Cout = 3 it does 21 times the useful products (celebahq-256 conv_out: 91 us on the H200 for 0.45
 * GFLOP); at K = 27 its NCHW gather is scalar with a division per element (celebahq-256 conv_in: 62 us to
 * write 16 MB).
 *
 * Block: WARPS warps over 32 output pixels (lane = pixel; pixels run across the batch, so loads of x and
 * stores of y are coalesced). Warp w takes output channels [g * CO, g * CO + CO) of the block's G * CO
 * (g = w % G, G <= 8) and the reduction slice r = w / G of R = WARPS / G slices of K. Each thread keeps CO
 * float sums; with R > 1 the slices meet in shared memory and are added in slice order (no atomics, so the
 * result does not depend on timing). WARPS = 128 / CO (32, 16, 8: 16 KiB of slice sums): the loop is
 * latency-bound (a trip to L2 per DC_BATCH channels), and a slice is what one warp waits through, so more
 * warps per block means fewer trips one after another. The H100 trace of 108f44a (8 warps for all) had
 * cifar10-32's conv_out (128 -> 3, 32 blocks, 144 of K per warp) at 27.7 us own time and conv_in (3 -> 128,
 * K = 27 in one slice) at 14 us; with 32 warps they get 36 and 7 of K per warp. $DDPM_CUDA_DIRECT_WARPS
 * (8 / 16 / 32) caps WARPS (8: the old kernel).
 * The reduction index is the weights' (tap, channel) order (conv2d.cu), so a slice walks taps and channels
 * without divisions, checking the image border once per tap. Weights are warp-uniform loads (one L1
 * broadcast each).
 * The model's ends (conv_in reads the float32 sample, conv_out's result goes out as float32): x of type TX and
 * y of type TY may be float, each value rounded to T on the way as cast_in / cast_out would (the same bits,
 * a launch fewer at each end; cuda_conv2d_f32_ends). */
#include "conv2d.cuh"

#define DC_GROUPS 8                             /* at most this many output-channel groups per block */
#define DC_BATCH 8                              /* input channels loaded together (see the K loop) */

/* x's value as the T-typed op would see it: a float input rounded to T first (cast_in's rounding). */
template <typename T, typename TX>
__device__ __forceinline__ float
load_as (const TX v)
{
  if constexpr (std::is_same<TX, float>::value)
    return to_f32<T> (from_f32<T> (v));
  else
    return to_f32<TX> (v);
}

template <typename T, typename TX, typename TY, int CO, int WARPS>
__global__ void __launch_bounds__ (WARPS * 32)
conv_direct_kernel (const T *__restrict__ Wt, const float *__restrict__ bias, const TX *__restrict__ x,
                    TY *__restrict__ y, ConvShape s, int G, ConvEpi<T> epi)
{
  grid_dependency_wait ();
  __shared__ float part[WARPS][CO][32];         /* the R slices' sums, when R > 1 */
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = warp % G, r = warp / G, R = WARPS / G;
  const int HoWo = s.Ho * s.Wo;
  const long long p = (long long) blockIdx.x * 32 + lane;
  const bool p_ok = p < (long long) s.B * HoWo;
  const int m0 = (blockIdx.y * G + g) * CO;
  const int nco = imin (CO, s.Cout - m0);       /* may be <= 0: the warp still joins the barrier */

  const int bb = p_ok ? (int) (p / HoWo) : 0, pix = p_ok ? (int) (p % HoWo) : 0;
  const int iy0 = (pix / s.Wo) * s.stride - s.pad_top, ix0 = (pix % s.Wo) * s.stride - s.pad_left;
  const size_t plane = (size_t) s.H * s.W;
  const TX *xb = x + (size_t) bb * s.Cin * plane;

  float acc[CO];
#pragma unroll
  for (int j = 0; j < CO; j++)
    acc[j] = 0.0f;
  const int per = ceil_div (s.K, R), k_begin = imin (r * per, s.K), k_end = imin (k_begin + per, s.K);
  int kk = k_begin;
  while (kk < k_end)
    {
      /* one filter tap: channels ci .. ci + n - 1 of it lie in this slice */
      const int tap = kk / s.Cin, ci = kk - tap * s.Cin, n = imin (s.Cin - ci, k_end - kk);
      const int ky = tap / s.k, kx = tap - ky * s.k, iy = iy0 + ky, ix = ix0 + kx;
      if (p_ok && nco > 0 && iy >= 0 && iy < s.H && ix >= 0 && ix < s.W)
        {
          const TX *src = xb + (size_t) ci * plane + (size_t) iy * s.W + ix;
          const T *wk = Wt + (size_t) m0 * s.ldw + kk;
          /* DC_BATCH channels' loads are issued together before their products: one trip to L2 per batch,
           * not per channel (the H100 trace of fcae280 had the loop latency-bound: cifar10-32's conv_in
           * 26 us at batch 1, celebahq-256's conv_in / conv_out 153 / 119 us). Same products in the same
           * order as one channel at a time. */
          for (int c0 = 0; c0 < n; c0 += DC_BATCH)
            {
              float v[DC_BATCH];
#pragma unroll
              for (int u = 0; u < DC_BATCH; u++)
                v[u] = c0 + u < n ? load_as<T, TX> (src[(size_t) (c0 + u) * plane]) : 0.0f;
#pragma unroll
              for (int u = 0; u < DC_BATCH; u++)
                if (c0 + u < n)
                  {
                    /* the CO weights loaded together, unpredicated (rows past nco read row 0; their sums are
                     * never stored): guarded one by one, nvcc reused one register for them and so waited for
                     * each load before the next (tools/sass_chains.py: 14 trips in a row at CO = 16) */
                    float w[CO];
#pragma unroll
                    for (int j = 0; j < CO; j++)
                      w[j] = to_f32<T> (wk[(size_t) (j < nco ? j : 0) * s.ldw + c0 + u]);
#pragma unroll
                    for (int j = 0; j < CO; j++)
                      acc[j] += w[j] * v[u];
                  }
            }
        }
      kk += n;
    }

  if (R > 1)
    {
#pragma unroll
      for (int j = 0; j < CO; j++)
        part[warp][j][lane] = acc[j];
      __syncthreads ();
      if (r != 0)
        return;
#pragma unroll
      for (int j = 0; j < CO; j++)
        {
          float v = 0.0f;
          for (int q = 0; q < R; q++)
            v += part[q * G + g][j][lane];
          acc[j] = v;
        }
    }
  if (!p_ok)
    return;
  float bj[CO];                         /* all biases loaded before the first store (each load after a store
                                         * waited for it: CO round trips in a row) */
#pragma unroll
  for (int j = 0; j < CO; j++)
    bj[j] = bias != NULL ? bias[m0 + (j < nco ? j : 0)] : 0.0f;
#pragma unroll
  for (int j = 0; j < CO; j++)
    if (j < nco)
      conv_store<T, TY> (y, epi, acc[j] + bj[j], s.Cout, HoWo, bb, m0 + j, pix);
}

bool
cuda_conv_direct_fits (const CudaBackend *cb, const ConvShape &s)
{
  const long long P = (long long) s.B * s.Ho * s.Wo;
  return cb->act_type != CT_F32 && (s.Cout <= 8 || s.K <= 32) && (P + 31) / 32 <= 2147483647LL;
}

/* Output channels per thread, and output-channel groups per block (a power of two <= 8, so R = WARPS / G
 * slices).
 * Up to 16 channels per thread, fewer where the grid would not cover the SMs: cifar10-32's conv_in at
 * batch 1 (1024 pixels, 128 channels) gets 128 blocks of 4 channels per thread instead of 32 of 16. */
static void
direct_split (const CudaBackend *cb, const ConvShape &s, long long pixel_blocks, int *co, int *groups)
{
  int c = s.Cout <= 4 ? 4 : s.Cout <= 8 ? 8 : 16;
  for (;;)
    {
      const int need = ceil_div (s.Cout, c);
      int g = 1;
      while (g < need && g < DC_GROUPS)
        g *= 2;
      *co = c;
      *groups = g;
      if (c == 4 || pixel_blocks * ceil_div (s.Cout, g * c) >= cb->sm_count)
        return;
      c /= 2;
    }
}

/* The block shapes (output channels per thread x warps) with float-ended instances: those the model's ends take
 * at the default warp cap (conv_in, 3 -> 128: 4 x 32 at batch 1, 8 x 16 at a few images, 16 x 8 above;
 * conv_out, 128 -> 3: 4 x 32). Fewer instances keep the module's build short; another shape with a float end
 * is declined (cuda_conv2d_f32_ends): the engine casts. */
static constexpr bool
f32_end_shape (int co, int warps)
{
  return (co == 4 && warps == 32) || (co == 8 && warps == 16) || (co == 16 && warps == 8);
}

template <typename T, int CO, int WARPS>
static void
launch_co (CudaBackend *cb, dim3 grid, const DdpmLinearW *w, const void *x, bool x_f32, void *y, bool y_f32,
           const ConvShape &s, int G, const ConvEpi<T> &epi)
{
  const T *wt = (const T *) w->weight;
  const float *b = (const float *) w->bias;
  if constexpr (f32_end_shape (CO, WARPS))
    {
      if (x_f32)
        {
          launch (cb, "conv_direct", grid, WARPS * 32, 0, conv_direct_kernel<T, float, T, CO, WARPS>, wt, b,
                  (const float *) x, (T *) y, s, G, epi);
          return;
        }
      if (y_f32)
        {
          launch (cb, "conv_direct", grid, WARPS * 32, 0, conv_direct_kernel<T, T, float, CO, WARPS>, wt, b,
                  (const T *) x, (float *) y, s, G, epi);
          return;
        }
    }
  if (x_f32 || y_f32)                   /* cuda_conv_direct_f32_end_fits said no: never reinterpret float as T */
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE, "conv2d: no float-ended direct kernel of %d x %d (internal error)", CO, WARPS);
      return;
    }
  launch (cb, "conv_direct", grid, WARPS * 32, 0, conv_direct_kernel<T, T, T, CO, WARPS>, wt, b, (const T *) x,
          (T *) y, s, G, epi);
}

/* The direct kernel's block shape for s: output channels per thread (*co), channel groups per block (*groups)
 * and warps. */
static void
direct_shape (const CudaBackend *cb, const ConvShape &s, int *co, int *groups, int *warps)
{
  const long long P = (long long) s.B * s.Ho * s.Wo;
  direct_split (cb, s, (P + 31) / 32, co, groups);
  const int cap = cb->direct_warps > 0 ? cb->direct_warps : 32;   /* warps: 128 / co, at most cap */
  *warps = imin (128 / *co, cap);
}

template <typename T>
static void
launch_t (CudaBackend *cb, const DdpmLinearW *w, const void *x, bool x_f32, void *y, bool y_f32, const ConvShape &s,
          const DdpmConvEpilogue *e)
{
  const ConvEpi<T> epi = conv_epi<T> (e, s.Cout);
  const long long P = (long long) s.B * s.Ho * s.Wo;
  int co, G, warps;
  direct_shape (cb, s, &co, &G, &warps);
  const int gy = ceil_div (s.Cout, G * co);
  if (gy > 65535)
    {
      cuda_fail (cb, DDPM_ERROR_LIMIT, "conv2d: %d output channels exceed the direct kernel's grid", s.Cout);
      return;
    }
  const dim3 grid ((unsigned) ((P + 31) / 32), (unsigned) gy);
  if (co == 4 && warps >= 32)
    launch_co<T, 4, 32> (cb, grid, w, x, x_f32, y, y_f32, s, G, epi);
  else if (co == 4 && warps >= 16)
    launch_co<T, 4, 16> (cb, grid, w, x, x_f32, y, y_f32, s, G, epi);
  else if (co == 4)
    launch_co<T, 4, 8> (cb, grid, w, x, x_f32, y, y_f32, s, G, epi);
  else if (co == 8 && warps >= 16)
    launch_co<T, 8, 16> (cb, grid, w, x, x_f32, y, y_f32, s, G, epi);
  else if (co == 8)
    launch_co<T, 8, 8> (cb, grid, w, x, x_f32, y, y_f32, s, G, epi);
  else
    launch_co<T, 16, 8> (cb, grid, w, x, x_f32, y, y_f32, s, G, epi);
}

bool
cuda_conv_direct_f32_end_fits (const CudaBackend *cb, const ConvShape &s)
{
  int co, G, warps;
  direct_shape (cb, s, &co, &G, &warps);
  return cuda_conv_direct_fits (cb, s) && f32_end_shape (co, warps);
}

void
cuda_conv_direct (CudaBackend *cb, const DdpmLinearW *w, const void *x, bool x_f32, void *y, bool y_f32,
                  const ConvShape &s, const DdpmConvEpilogue *epi)
{
  if (cb->act_type == CT_F16)
    launch_t<__half> (cb, w, x, x_f32, y, y_f32, s, epi);
  else
    launch_t<__nv_bfloat16> (cb, w, x, x_f32, y, y_f32, s, epi);
}
