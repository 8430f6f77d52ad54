/* conv2d.cu: y (B, Cout, Ho, Wo) = conv(x (B, Cin, H, W), W (Cout, Cin, k, k)) + bias, zero padding
 * pad = {top, left, bottom, right}, square kernel, stride; Ho = (H + top + bottom - k) / stride + 1.
 *
 * As a GEMM: Y_b (Cout x Ho*Wo) = W (Cout x K) X̂_b (K x Ho*Wo), K = Cin*k*k, where X̂ is the im2col matrix
 * X̂[(ci*k + ky)*k + kx][oy*Wo + ox] = x[ci][oy*stride - top + ky][ox*stride - left + kx] (0 outside), i.e.
 * PyTorch's weight layout flattened. Two ways:
 * - implicit GEMM (fp16/bf16, default): one kernel gathers X̂ tiles straight into shared memory, multiplies
 *   on the tensor cores (WMMA 16x16x16, fp32 accumulation) and adds the bias in its epilogue. No scratch,
 *   one launch per convolution.
 * - im2col + GEMM (fp32 always, or DDPM_CUDA_CONV=gemm): X̂ into scratch (in chunks of images that fit
 *   CONV_SCRATCH_CAP), cuBLAS (pedantic fp32 in fp32 mode, so results match the CPU to ~1e-6), then the
 *   bias. A 1x1 stride-1 unpadded convolution is a GEMM on x directly. */
#include "cuda_backend.cuh"

#define CONV_SCRATCH_CAP ((size_t) 256 << 20)

struct ConvShape {
  int B, Cin, H, W, Cout, k, stride, pad_top, pad_left, Ho, Wo;
  int K;                                /* Cin * k * k */
  int ldw;                              /* weight row stride (weight_ld) */
};

static ConvShape
conv_shape (const DdpmLinearW *w, int B, int H, int W, int stride, const int pad[4])
{
  ConvShape s;
  s.B = B;
  s.Cin = w->in;
  s.H = H;
  s.W = W;
  s.Cout = w->out;
  s.k = w->k;
  s.stride = stride;
  s.pad_top = pad[0];
  s.pad_left = pad[1];
  s.Ho = (H + pad[0] + pad[2] - w->k) / stride + 1;
  s.Wo = (W + pad[1] + pad[3] - w->k) / stride + 1;
  s.K = w->in * w->k * w->k;
  s.ldw = weight_ld (w);
  return s;
}

static bool
is_pointwise (int k, int stride, const int pad[4])
{
  return k == 1 && stride == 1 && pad[0] == 0 && pad[1] == 0 && pad[2] == 0 && pad[3] == 0;
}

static bool
use_implicit (const CudaBackend *cb)
{
  return cb->act_type != CT_F32 && cb->conv_algo != CONV_GEMM;
}

/* Images per im2col chunk, and the scratch that takes. */
static int
im2col_chunk (int B, size_t per_image_bytes)
{
  if (per_image_bytes == 0)
    return B;
  size_t c = CONV_SCRATCH_CAP / per_image_bytes;
  if (c < 1)
    c = 1;
  return c < (size_t) B ? (int) c : B;
}

size_t
cuda_conv2d_scratch (DdpmBackend *be, int B, int Cin, int H, int W, int Cout, int k, int stride, const int pad[4])
{
  CudaBackend *cb = cuda_backend (be);
  if (use_implicit (cb) || is_pointwise (k, stride, pad))
    return 0;
  const int Ho = (H + pad[0] + pad[2] - k) / stride + 1, Wo = (W + pad[1] + pad[3] - k) / stride + 1;
  const size_t per_image = (size_t) Cin * k * k * Ho * Wo * cb->act_size;
  return (size_t) im2col_chunk (B, per_image) * per_image;
}

/* ---- im2col + GEMM ---- */

template <typename T>
__global__ void __launch_bounds__ (256)
im2col_kernel (const T *__restrict__ x, T *__restrict__ col, ConvShape s, int b0, int nb)
{
  /* col (nb, K, Ho*Wo): one thread per element, consecutive threads along output pixels */
  const int N = s.Ho * s.Wo, kk2 = s.k * s.k;
  const size_t n = (size_t) nb * s.K * N;
  GRID_STRIDE (idx, n)
    {
      const int p = (int) (idx % (size_t) N);
      const size_t r = idx / (size_t) N;
      const int kk = (int) (r % (size_t) s.K);
      const int b = b0 + (int) (r / (size_t) s.K);
      const int ci = kk / kk2, rem = kk % kk2, ky = rem / s.k, kx = rem % s.k;
      const int oy = p / s.Wo, ox = p % s.Wo;
      const int iy = oy * s.stride - s.pad_top + ky, ix = ox * s.stride - s.pad_left + kx;
      T v = from_f32<T> (0.0f);
      if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W)
        v = x[(((size_t) b * s.Cin + ci) * s.H + iy) * s.W + ix];
      col[idx] = v;
    }
}

static void
conv2d_gemm (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s, const int pad[4])
{
  const int N = s.Ho * s.Wo;
  const size_t es = cb->act_size;
  if (is_pointwise (s.k, s.stride, pad))
    {
      /* Y_b (Cout x HW) = W (Cout x Cin) x_b (Cin x HW) */
      cuda_gemm_rm (cb, false, false, s.Cout, N, s.Cin, 1.0f, w->weight, s.ldw, 0, x, N, (long long) s.Cin * N, 0.0f, y,
                    N, (long long) s.Cout * N, s.B, cb->act_type, cb->act_type);
    }
  else
    {
      const size_t per_image = (size_t) s.K * N * es;
      int chunk = im2col_chunk (s.B, per_image);
      if ((size_t) chunk * per_image > cb->scratch_bytes)
        chunk = (int) (cb->scratch_bytes / per_image);
      if (chunk < 1)
        {
          cuda_fail (cb, DDPM_ERROR_DEVICE,
                     "conv2d: scratch of %zu bytes is smaller than one image's im2col (%zu bytes): reserve_scratch "
                     "was not called with conv2d_scratch's size",
                     cb->scratch_bytes, per_image);
          return;
        }
      for (int b0 = 0; b0 < s.B; b0 += chunk)
        {
          const int nb = imin (chunk, s.B - b0);
          const size_t n = (size_t) nb * s.K * N;
          DISPATCH_ACT (cb, T, launch (cb, "im2col", elementwise_blocks (cb, n, 256), 256, 0, im2col_kernel<T>,
                                       (const T *) x, (T *) cb->scratch, s, b0, nb));
          cuda_gemm_rm (cb, false, false, s.Cout, N, s.K, 1.0f, w->weight, s.ldw, 0, cb->scratch, N,
                        (long long) s.K * N, 0.0f, (char *) y + (size_t) b0 * s.Cout * N * es, N,
                        (long long) s.Cout * N, nb, cb->act_type, cb->act_type);
        }
    }
  cuda_add_bias (cb, y, (const float *) w->bias, s.B, s.Cout, N);
}

/* ---- implicit GEMM on the tensor cores (fp16 / bf16) ---- */

#define IG_BM 64                        /* output channels per block */
#define IG_BN 64                        /* output pixels per block (across images) */
#define IG_BK 32                        /* reduction slice */
#define IG_THREADS 128                  /* 4 warps, 2 x 2, each a 32 x 32 sub-tile */
#define IG_LDA (IG_BK + 8)              /* smem row strides: multiples of 8 halves (WMMA), padded against */
#define IG_LDB (IG_BN + 8)              /* bank conflicts */
#define IG_LDC (IG_BN + 4)
#define IG_SMEM_AB ((IG_BM * IG_LDA + IG_BK * IG_LDB) * 2)
#define IG_SMEM_C (IG_BM * IG_LDC * 4)
#define IG_SMEM (IG_SMEM_AB > IG_SMEM_C ? IG_SMEM_AB : IG_SMEM_C)

template <typename T>
__global__ void __launch_bounds__ (IG_THREADS)
conv_implicit_kernel (const T *__restrict__ Wt, const float *__restrict__ bias, const T *__restrict__ x,
                      T *__restrict__ y, ConvShape s)
{
  using namespace nvcuda;
  __shared__ __align__ (128) unsigned char smem[IG_SMEM];
  T (*As)[IG_LDA] = reinterpret_cast<T (*)[IG_LDA]> (smem);                         /* [BM][LDA] */
  T (*Bs)[IG_LDB] = reinterpret_cast<T (*)[IG_LDB]> (smem + IG_BM * IG_LDA * 2);    /* [BK][LDB] */
  float (*Cs)[IG_LDC] = reinterpret_cast<float (*)[IG_LDC]> (smem);                 /* [BM][LDC], after the loop */

  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;
  const int m0 = blockIdx.y * IG_BM;
  const long long p0 = (long long) blockIdx.x * IG_BN;
  const int HoWo = s.Ho * s.Wo, kk2 = s.k * s.k;
  const long long P = (long long) s.B * HoWo;
  const T zero = from_f32<T> (0.0f);

  /* This thread gathers column pl of the X̂ tile (one output pixel), rows kr0, kr0 + 2, ... */
  const int pl = tid % IG_BN, kr0 = tid / IG_BN;
  const long long p = p0 + pl;
  const bool p_ok = p < P;
  int b = 0, oy = 0, ox = 0;
  if (p_ok)
    {
      b = (int) (p / HoWo);
      const int pix = (int) (p % HoWo);
      oy = pix / s.Wo;
      ox = pix % s.Wo;
    }
  const T *xb = x + (size_t) b * s.Cin * s.H * s.W;
  const int iy0 = oy * s.stride - s.pad_top, ix0 = ox * s.stride - s.pad_left;

  /* ... and 16 consecutive weights of row ar of the W tile: two 16-byte vectors (rows are 16-byte aligned
   * and zero padded to ldw, a multiple of 8, so a vector is wholly inside or wholly past the row). */
  const int ar = tid >> 1, ac = (tid & 1) * 16;
  const int am = m0 + ar;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
      wmma::fill_fragment (acc[i][j], 0.0f);

  for (int k0 = 0; k0 < s.K; k0 += IG_BK)
    {
#pragma unroll
      for (int v = 0; v < 2; v++)
        {
          const int kk = k0 + ac + 8 * v;
          uint4 val = make_uint4 (0u, 0u, 0u, 0u);
          if (am < s.Cout && kk < s.ldw)
            val = *reinterpret_cast<const uint4 *> (Wt + (size_t) am * s.ldw + kk);
          *reinterpret_cast<uint4 *> (&As[ar][ac + 8 * v]) = val;
        }
#pragma unroll 4
      for (int i = 0; i < IG_BK / 2; i++)
        {
          const int kl = kr0 + 2 * i, kk = k0 + kl;
          T v = zero;
          if (p_ok && kk < s.K)
            {
              const int ci = kk / kk2, rem = kk - ci * kk2, ky = rem / s.k, kx = rem - ky * s.k;
              const int iy = iy0 + ky, ix = ix0 + kx;
              if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W)
                v = xb[((size_t) ci * s.H + iy) * s.W + ix];
            }
          Bs[kl][pl] = v;
        }
      __syncthreads ();
#pragma unroll
      for (int ks = 0; ks < IG_BK; ks += 16)
        {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> af[2];
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bf[2];
#pragma unroll
          for (int i = 0; i < 2; i++)
            wmma::load_matrix_sync (af[i], &As[wm * 32 + i * 16][ks], IG_LDA);
#pragma unroll
          for (int j = 0; j < 2; j++)
            wmma::load_matrix_sync (bf[j], &Bs[ks][wn * 32 + j * 16], IG_LDB);
#pragma unroll
          for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 2; j++)
              wmma::mma_sync (acc[i][j], af[i], bf[j], acc[i][j]);
        }
      __syncthreads ();
    }

  /* epilogue: tile -> shared (reusing As/Bs), + bias, one rounding, coalesced NCHW stores */
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
      wmma::store_matrix_sync (&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], IG_LDC, wmma::mem_row_major);
  __syncthreads ();
  for (int e = tid; e < IG_BM * IG_BN; e += IG_THREADS)
    {
      const int ml = e / IG_BN, pc = e % IG_BN;
      const int m = m0 + ml;
      const long long pp = p0 + pc;
      if (m < s.Cout && pp < P)
        {
          const int bb = (int) (pp / HoWo), pix = (int) (pp % HoWo);
          const float bv = bias != NULL ? bias[m] : 0.0f;
          y[((size_t) bb * s.Cout + m) * HoWo + pix] = from_f32<T> (Cs[ml][pc] + bv);
        }
    }
}

static void
conv2d_implicit (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s)
{
  const long long P = (long long) s.B * s.Ho * s.Wo;
  const long long gx = (P + IG_BN - 1) / IG_BN;
  const int gy = ceil_div (s.Cout, IG_BM);
  if (gx > 2147483647LL || gy > 65535)
    {
      cuda_fail (cb, DDPM_ERROR_LIMIT, "conv2d: output of %lld pixels x %d channels exceeds the grid", P, s.Cout);
      return;
    }
  dim3 grid ((unsigned) gx, (unsigned) gy);
  if (cb->act_type == CT_F16)
    launch (cb, "conv_implicit", grid, IG_THREADS, 0, conv_implicit_kernel<__half>, (const __half *) w->weight,
            (const float *) w->bias, (const __half *) x, (__half *) y, s);
  else
    launch (cb, "conv_implicit", grid, IG_THREADS, 0, conv_implicit_kernel<__nv_bfloat16>,
            (const __nv_bfloat16 *) w->weight, (const float *) w->bias, (const __nv_bfloat16 *) x,
            (__nv_bfloat16 *) y, s);
}

void
cuda_conv2d (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int B, int H, int W, int stride,
             const int pad[4])
{
  CudaBackend *cb = cuda_backend (be);
  const ConvShape s = conv_shape (w, B, H, W, stride, pad);
  if (s.B <= 0 || s.Ho <= 0 || s.Wo <= 0 || s.Cout <= 0)
    return;
  if (use_implicit (cb))
    conv2d_implicit (cb, w, x, y, s);
  else
    conv2d_gemm (cb, w, x, y, s, pad);
}
