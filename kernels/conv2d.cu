/* conv2d.cu: y (B, Cout, Ho, Wo) = conv(x (B, Cin, H, W), W (Cout, Cin, k, k)) + bias, zero padding
 * pad = {top, left, bottom, right}, square kernel, stride; Ho = (H + top + bottom - k) / stride + 1.
 *
 * As a GEMM: Y_b (Cout x Ho*Wo) = W (Cout x K) X̂_b (K x Ho*Wo), K = Cin*k*k, where X̂ is the im2col matrix
 * X̂[(ky*k + kx)*Cin + ci][oy*Wo + ox] = x[ci][oy*stride - top + ky][ox*stride - left + kx] (0 outside).
 * The reduction index runs over channels fastest (upload_param stores conv weights (Cout, ky, kx, Cin), not
 * PyTorch's (Cout, Cin, ky, kx)): a K slice of 32 then shares one filter tap, so the implicit GEMM checks
 * the image border once per slice and gathers its 32 rows with one add each. Four ways:
 * - implicit GEMM (fp16/bf16, default): one kernel gathers X̂ tiles straight into shared memory, multiplies
 *   on the tensor cores (WMMA 16x16x16, fp32 accumulation) and applies the epilogue in its stores (bias,
 *   then DdpmConvEpilogue's channel bias and scaled residual, one rounding): one launch, no scratch. Tiles
 *   of 64 or 128 output channels x 64 output pixels (pixels run across the batch, so deep 4x4 layers still
 *   fill tiles at batch > 1), K in slices of 32 with the next slice's loads in flight
 *   while the tensor cores work on the current one (two shared-memory stages). When the tiles alone cannot
 *   fill the GPU (batch 1, 4x4 .. 16x16 layers: a handful of tiles with K up to 9216), K is split over
 *   up to 16 blocks. On sm_90+ a tile's splits are one thread-block cluster: each block keeps its float
 *   tile in shared memory and sums a share of the tile from all of them (distributed shared memory), so
 *   the split costs no scratch and no second launch. Elsewhere the blocks write float32 partial tiles to
 *   scratch (each tile's splits contiguous), summed by a second launch (or, $DDPM_CUDA_CONV_REDUCE=last-block,
 *   by the last block of each tile to finish: an atomic counter per tile). Every way adds the splits in
 *   split order onto the bias, so all three give the same bits and none depends on timing.
 * - the same on a channels-last copy of x (conv2d_nhwc.cu; the default where Cin % 32 == 0 and k == 3,
 *   DDPM_CUDA_CONV=nhwc also for k == 1): the same plan (tiles, splits) and block end (conv2d.cuh), loads by
 *   cp.async; with DDPM_CUDA_CONV=mma, a 128 x 128 mma.sync tile where its tiles fill a wave.
 * - direct convolution on the CUDA cores where a tile would be mostly empty: Cout <= 8 or K <= 32 (conv_in,
 *   conv_out; conv2d_direct.cu), unless DDPM_CUDA_CONV=implicit.
 * - im2col + GEMM (fp32 always, or DDPM_CUDA_CONV=gemm): X̂ into scratch (in chunks of images that fit
 *   CONV_SCRATCH_CAP), cuBLAS (pedantic fp32 in fp32 mode, so results match the CPU to ~1e-6), then the
 *   bias and the epilogue as separate passes. A 1x1 stride-1 unpadded convolution is a GEMM on x directly. */
#include "conv2d.cuh"

#define CONV_SCRATCH_CAP ((size_t) 256 << 20)


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
  s.up = 0;
  s.prefetch = 0;
  return s;
}

static bool
is_pointwise (int k, int stride, const int pad[4])
{
  return k == 1 && stride == 1 && pad[0] == 0 && pad[1] == 0 && pad[2] == 0 && pad[3] == 0;
}

static bool
use_implicit (const CudaBackend *cb, const ConvPick &pick)
{
  return cb->act_type != CT_F32 && pick.algo != CONV_GEMM;
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

/* Output channels per tile. */
static int
tile_rows (int tile)
{
  return tile == TILE_LARGE ? 128 : 64;
}
#define IG_MAX_SPLITS 16

struct ConvPlan {
  bool implicit;
  bool nhwc;                            /* the channels-last kernel (conv2d_nhwc.cu) */
  bool direct;                          /* the CUDA-core kernel for Cout <= 8 or K <= 32 (conv2d_direct.cu) */
  bool mma;                             /* nhwc with the 128 x 128 mma.sync tile, no K split (conv2d_nhwc.cu) */
  bool wgmma;                           /* nhwc with the wgmma tile (conv2d_wgmma.cu) */
  int wgmma_bn;                         /* its pixels per tile: 128 or 256 */
  bool pointwise;                       /* a 1x1 convolution on conv2d_pointwise.cu's kernel (NCHW, cp.async) */
  int tile;
  int splits;                           /* K split over this many blocks (1: no split) */
  bool cluster;                         /* the splits of a tile are one cluster and sum each other's tiles */
  int kps;                              /* K tiles (of IG_BK) per split */
  size_t xh_bytes;                      /* nhwc: the channels-last copy of x at the start of scratch */
  size_t partial_at;                    /* where the split partials start in scratch: past xh and, so that a
                                         * GroupNorm summing them (cb->defer_reduce) may write its channels-last
                                         * output to scratch meanwhile, past y's size (4 times it at batch 1: a
                                         * concatenation whose head is y) */
  size_t partial_bytes;                 /* the split partials' size (splits > 1 without clusters), else 0 */
  size_t scratch;                       /* bytes of scratch the convolution uses (xh, then split partials) */
  float *partials;                      /* NULL: the split partials at scratch + partial_at; else here (the caller's
                                         * region, cuda_projection), and `scratch` counts none of them */
};

/* The K split of a convolution with `tiles` output tiles and `slices` K slices: splitk when > 0 (the pick's,
 * $DDPM_CUDA_CONV_SPLITK), else,
 * where the tiles alone leave SMs idle and `rule` allows, enough splits for about the target blocks (2 per SM);
 * at most max_splits, at least conv_split_min_slices slices each, no empty split. *kps: slices per split. */
static int
k_splits (const CudaBackend *cb, int splitk, long long tiles, int slices, bool rule, int max_splits, int *kps)
{
  const long long target = (long long) cb->conv_split_blocks_per_sm * cb->sm_count;
  int splits = 1;
  if (splitk > 0)
    splits = splitk;
  else if (rule && tiles < cb->sm_count)
    splits = (int) ((target + tiles - 1) / tiles);
  splits = imax (imin (imin (splits, max_splits), imax (slices / cb->conv_split_min_slices, 1)), 1);
  *kps = (slices + splits - 1) / splits;
  return (slices + *kps - 1) / *kps;
}

/* One decision used both by conv2d_scratch (planning) and conv2d (running), so they always agree: under the
 * switches `pick` (the backend's, or this shape's timed pick: conv_pick.cu). */
static ConvPlan
conv_plan_with (const CudaBackend *cb, const ConvShape &s, const int pad[4], const ConvPick &pick)
{
  ConvPlan p
      = { use_implicit (cb, pick), false, false, false, false, 0, false, TILE_SMALL, 1, false, 0, 0, 0, 0, 0, NULL };
  if (!p.implicit)
    {
      if (!is_pointwise (s.k, s.stride, pad))
        {
          const size_t per_image = (size_t) s.K * s.Ho * s.Wo * cb->act_size;
          p.scratch = (size_t) im2col_chunk (s.B, per_image) * per_image;
        }
      return p;
    }
  /* a tensor-core tile would be mostly empty (conv_in, conv_out): the direct kernel, no scratch, unless
   * $DDPM_CUDA_CONV=implicit asks for the NCHW implicit GEMM everywhere */
  p.direct = pick.algo != CONV_IMPLICIT && cuda_conv_direct_fits (cb, s);
  if (p.direct)
    return p;
  const long long P = (long long) s.B * s.Ho * s.Wo;
  const long long cols = (P + IG_BN - 1) / IG_BN;
  const long long target = (long long) cb->conv_split_blocks_per_sm * cb->sm_count;   /* 2 blocks per SM */
  const long long blocks_large = cols * ((s.Cout + 127) / 128);
  p.tile = pick.tile == TILE_SMALL || pick.tile == TILE_LARGE ? pick.tile
           : (s.Cout >= 128 && blocks_large >= target ? TILE_LARGE : TILE_SMALL);
  const long long blocks = cols * ceil_div (s.Cout, tile_rows (p.tile));
  const int ktiles = (s.K + IG_BK - 1) / IG_BK;
  /* with clusters a tile's splits are one cluster */
  p.splits = k_splits (cb, pick.splitk, blocks, ktiles, true,
                       cb->conv_reduce == REDUCE_CLUSTER ? imin (IG_MAX_SPLITS, cb->conv_cluster_max) : IG_MAX_SPLITS,
                       &p.kps);
  /* channels last wherever it fits, unless $DDPM_CUDA_CONV=implicit: on the H200 (2026-11-26) it was as fast at
   * cifar10-32 batch 1 (1.80 against 1.84 ms) and faster at batch 128 (17.9 / 21.8 ms) and celebahq-256
   * batch 1 and 4 (8.0 / 9.3 and 22.5 / 27.9 ms). Except 1x1 (the resnet shortcuts), unless
   * $DDPM_CUDA_CONV=nhwc: a 1x1 slice is 32 whole channel planes, which the NCHW kernel reads along pixels,
   * and the same run timed all three 1x1 shapes faster that way, transpose saved (cifar 128->256 @16x16
   * 12.4 against 14.7 us, 512->256 @4x4 14.1 / 16.7, celebahq 1024->512 @8x8 17.6 / 20.9) */
  p.nhwc = (pick.algo == CONV_NHWC || (pick.algo != CONV_IMPLICIT && s.k != 1)) && cuda_conv_nhwc_fits (cb, s);
  if (p.nhwc)
    p.xh_bytes = (cuda_conv_nhwc_bytes (cb, s) + 255) / 256 * 256;
  /* 1x1 convolutions the channels-last kernel does not take: x's channel planes by cp.async, unless
   * $DDPM_CUDA_CONV=implicit (conv2d.cu's kernel, B through registers) */
  p.pointwise = !p.nhwc && pick.algo != CONV_IMPLICIT && cuda_conv_pointwise_fits (cb, s);
  /* $DDPM_CUDA_CONV=mma: the 128 x 128 tile where its tiles alone fill a wave of the GPU (no K split);
   * $DDPM_CUDA_CONV_TILE=mma: wherever the channels-last kernel runs (tests) */
  const long long tiles_mma = (P + 127) / 128 * ((s.Cout + 127) / 128);
  if (p.nhwc && pick.splitk == 0
      && (pick.tile == TILE_MMA || (pick.algo == CONV_MMA && tiles_mma >= cb->sm_count)))
    {
      p.mma = true;
      p.splits = 1;
      p.kps = ktiles;
    }
  /* $DDPM_CUDA_CONV=wgmma: the wgmma tile (sm_90a, Cin % 64 == 0) where its tiles fill a wave, alone or with
   * K split over blocks as the other tiles split it (2 blocks per SM, >= 2 slices of 64 each; summed by a second
   * launch, held back or not: with $DDPM_CUDA_CONV_REDUCE=cluster or =last-block it runs unsplit, as those sums
   * would take the kernel past its 128 registers; $DDPM_CUDA_WGMMA_SPLIT=0: only where it fills a wave alone);
   * $DDPM_CUDA_CONV_TILE=wgmma: wherever it fits (tests), split where the rule or $DDPM_CUDA_CONV_SPLITK says.
   * The 128 x 256 tile ($DDPM_CUDA_WGMMA_BN=256, or a pick's TILE_WGMMA_WIDE) runs one block per SM: the rule
   * counts each as two 128 x 128 tiles' blocks */
  const bool wide = pick.tile == TILE_WGMMA_WIDE;
  if (p.nhwc && cuda_conv_wgmma_fits (cb, s) && (!wide || cb->conv_wgmma_wide_ready)
      && (wide || pick.tile == TILE_WGMMA || pick.algo == CONV_WGMMA))
    {
      const int bn = wide ? 256 : cb->wgmma_bn;
      const long long wtiles = cuda_conv_wgmma_tiles (s, bn);
      int kps64;
      const int wsplits = k_splits (cb, pick.splitk, wtiles * (bn / 128), cuda_conv_wgmma_slices (s),
                                    cb->wgmma_split,
                                    cb->conv_reduce == REDUCE_CLUSTER || cb->conv_reduce == REDUCE_LAST_BLOCK
                                        ? 1 : IG_MAX_SPLITS, &kps64);
      if (wide || pick.tile == TILE_WGMMA || wtiles * wsplits >= cb->sm_count)
        {
          p.wgmma = true;
          p.wgmma_bn = bn;
          p.mma = false;
          p.tile = TILE_LARGE;                /* 128-row tiles: the split partials' layout */
          p.splits = wsplits;
          p.kps = 2 * kps64;                  /* in IG_BK slices */
        }
    }
  p.cluster = p.splits > 1 && cb->conv_reduce == REDUCE_CLUSTER;
  p.scratch = p.partial_at = p.xh_bytes;
  if (p.splits > 1 && !p.cluster)   /* whole tiles, [tile][split][BM * IG_BN] */
    {
      const int bm = tile_rows (p.tile);
      if (cb->defer_reduce)
        {
          /* at batch 1 the GroupNorm may read y as the head of a concatenation [y | skip] (an up resnet's input)
           * and write all of it channels last: room for 4 times y's channels (group_norm.cu checks) */
          const size_t y_bytes = ((size_t) s.Cout * (size_t) P * cb->act_size + 255) / 256 * 256;
          const size_t room = s.B == 1 ? 4 * y_bytes : y_bytes;
          p.partial_at = p.xh_bytes > room ? p.xh_bytes : room;
        }
      p.partial_bytes
          = (size_t) p.splits * (size_t) ((s.Cout + bm - 1) / bm) * bm * (size_t) cols * IG_BN * sizeof (float);
      /* held back at batch 1: room for a rider's partials after these as many again (rider_partials_at) */
      p.scratch = p.partial_at + (cb->defer_reduce && s.B == 1 ? 2 : 1) * p.partial_bytes;
    }
  return p;
}

static ConvPlan
conv_plan (const CudaBackend *cb, const ConvShape &s, const int pad[4])
{
  return conv_plan_with (cb, s, pad, cuda_conv_pick_of (cb, s));
}

size_t
cuda_conv2d_scratch (DdpmBackend *be, int B, int Cin, int H, int W, int Cout, int k, int stride, const int pad[4])
{
  CudaBackend *cb = cuda_backend (be);
  DdpmLinearW w = { NULL, NULL, Cout, Cin, k };
  const ConvShape s = conv_shape (&w, B, H, W, stride, pad);
  cuda_conv_pick_time (cb, s, pad);    /* $DDPM_CUDA_CONV_PICK: planning is where a shape is first seen */
  return conv_plan (cb, s, pad).scratch;
}

/* ---- im2col + GEMM ---- */

template <typename T>
__global__ void __launch_bounds__ (256)
im2col_kernel (const T *__restrict__ x, T *__restrict__ col, ConvShape s, int b0, int nb)
{
  grid_dependency_wait ();
  /* col (nb, K, Ho*Wo): one thread per element, consecutive threads along output pixels */
  const int N = s.Ho * s.Wo;
  const size_t n = (size_t) nb * s.K * N;
  GRID_STRIDE (idx, n)
    {
      const int p = (int) (idx % (size_t) N);
      const size_t r = idx / (size_t) N;
      const int kk = (int) (r % (size_t) s.K);
      const int b = b0 + (int) (r / (size_t) s.K);
      const int tap = kk / s.Cin, ci = kk % s.Cin, ky = tap / s.k, kx = tap % s.k;
      const int oy = p / s.Wo, ox = p % s.Wo;
      const int iy = oy * s.stride - s.pad_top + ky, ix = ox * s.stride - s.pad_left + kx;
      T v = from_f32<T> (0.0f);
      if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W)
        v = x[(((size_t) b * s.Cin + ci) * s.H + iy) * s.W + ix];
      col[idx] = v;
    }
}

static void
conv2d_gemm (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s, const int pad[4],
             const DdpmConvEpilogue *epi)
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
  if (epi != NULL && epi->channel_bias != NULL)
    cuda_add_channel_bias_strided (cb, y, epi->channel_bias, s.B, s.Cout, N, ddpm_conv_epilogue_stride (epi, s.Cout));
  if (epi != NULL && epi->residual != NULL)
    cuda_add_scaled (&cb->base, epi->residual, y, y, (size_t) s.B * s.Cout * N, epi->residual_scale);
}

/* ---- implicit GEMM on the tensor cores (fp16 / bf16) ---- */

/* (ci, ky, kx) of reduction index kk = (ky * k + kx) * Cin + ci. k stays a run-time value (this NCHW kernel is
 * the fallback: the UNets' convolutions run channels last or pointwise), one instantiation for every k: three
 * per type and tile were ~2/3 of conv2d.cu's compile time, ~60 s of CPU per GPU architecture. */
__device__ __forceinline__ void
split_kk (int kk, int k, int Cin, int &ci, int &ky, int &kx)
{
  const int tap = kk / Cin;
  ci = kk - tap * Cin;
  ky = tap / k;
  kx = tap - ky * k;
}

/* Tile geometry: BM output channels x IG_BN output pixels, 4 warps (2 x 2), each a (BM/2) x 32 sub-tile of
 * 16 x 16 WMMA fragments. Shared memory: two stages of A (BM x BK weights) and B (BK x BN gathered input);
 * the float C tile of the epilogue reuses them. Row strides are padded by 16 bytes against bank conflicts
 * and stay multiples of 16 bytes (WMMA's ldm); every fragment pointer is 32-byte aligned. */
template <int BM>
struct IgTile {
  static constexpr int THREADS = 128;
  static constexpr int FM = BM / 2 / 16, FN = IG_BN / 2 / 16;
  static constexpr int LDA = IG_BK + 8, LDB = IG_BN + 8, LDC = IG_BN + 4;
  static constexpr int A_STAGE = BM * LDA, B_STAGE = IG_BK * LDB;          /* elements */
  static constexpr int SMEM_AB = 2 * (A_STAGE + B_STAGE) * 2;              /* bytes */
  static constexpr int SMEM_C = BM * LDC * 4;
  static constexpr int SMEM = SMEM_AB > SMEM_C ? SMEM_AB : SMEM_C;
  static constexpr int A_VECS = BM * IG_BK / 8 / THREADS;                  /* 16-byte vectors per thread */
  static constexpr int B_ROWS = THREADS / IG_BN;                           /* rows gathered per pass */
  static constexpr int B_ELEMS = IG_BK / B_ROWS;                           /* elements per thread */
};

template <typename T, int BM>
__global__ void __launch_bounds__ (128)
conv_implicit_kernel (const T *__restrict__ Wt, const float *__restrict__ bias, const T *__restrict__ x,
                      T *__restrict__ y, SplitK sk, ConvShape s, int kps, ConvEpi<T> epi)
{
  grid_dependency_wait ();
  typedef IgTile<BM> G;
  static_assert (G::SMEM <= 48 * 1024, "dynamic shared memory without the opt-in attribute");
  DYNAMIC_SMEM (smem);                   /* G::SMEM bytes; dynamic so that a cluster's blocks may read its C tile */
  T *const As0 = reinterpret_cast<T *> (smem);                      /* stage st: As0 + st * A_STAGE */
  T *const Bs0 = reinterpret_cast<T *> (smem) + 2 * G::A_STAGE;     /* stage st: Bs0 + st * B_STAGE */
  float *const Cs = reinterpret_cast<float *> (smem);               /* [BM][LDC], after the K loop */

  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;
  const int m0 = blockIdx.y * BM;
  const long long p0 = (long long) blockIdx.x * IG_BN;
  const int HoWo = s.Ho * s.Wo;
  const long long P = (long long) s.B * HoWo;
  const int ktiles = (s.K + IG_BK - 1) / IG_BK;
  const int kt_begin = blockIdx.z * kps, kt_end = imin (kt_begin + kps, ktiles);
  const T zero = from_f32<T> (0.0f);

  /* this thread gathers column pl of the B tile (one output pixel), rows kr0, kr0 + B_ROWS, ... */
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

  uint4 areg[G::A_VECS];
  T breg[G::B_ELEMS];

  /* global -> registers for K tile kt: A as 16-byte vectors (weight rows are 16-byte aligned and zero padded
   * to ldw, a multiple of 8, so a vector lies wholly inside or wholly past its row), B gathered */
  auto load_tile = [&] (int kt) {
    const int k0 = kt * IG_BK;
#pragma unroll
    for (int i = 0; i < G::A_VECS; i++)
      {
        const int v = tid + i * G::THREADS, r = v >> 2, kk = k0 + (v & 3) * 8, m = m0 + r;
        areg[i] = make_uint4 (0u, 0u, 0u, 0u);
        if (m < s.Cout && kk < s.ldw)
          areg[i] = *reinterpret_cast<const uint4 *> (Wt + (size_t) m * s.ldw + kk);
      }
    if (s.Cin % IG_BK == 0)
      {
        /* the whole slice is one filter tap: one border check, then rows ci0 + kr0 + B_ROWS * i */
        int ci0, ky, kx;
        split_kk (k0, s.k, s.Cin, ci0, ky, kx);
        const int iy = iy0 + ky, ix = ix0 + kx;
        const bool ok = p_ok && k0 < s.K && iy >= 0 && iy < s.H && ix >= 0 && ix < s.W;
        const size_t plane = (size_t) s.H * s.W;
        const T *src = xb + (size_t) (ci0 + kr0) * plane + (size_t) iy * s.W + ix;
#pragma unroll
        for (int i = 0; i < G::B_ELEMS; i++)
          breg[i] = ok ? src[(size_t) (G::B_ROWS * i) * plane] : zero;
      }
    else
      {
#pragma unroll
        for (int i = 0; i < G::B_ELEMS; i++)
          {
            const int kk = k0 + kr0 + G::B_ROWS * i;
            T v = zero;
            if (p_ok && kk < s.K)
              {
                int ci, ky, kx;
                split_kk (kk, s.k, s.Cin, ci, ky, kx);
                const int iy = iy0 + ky, ix = ix0 + kx;
                if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W)
                  v = xb[((size_t) ci * s.H + iy) * s.W + ix];
              }
            breg[i] = v;
          }
      }
  };
  auto store_tile = [&] (int st) {
    T *As = As0 + st * G::A_STAGE, *Bs = Bs0 + st * G::B_STAGE;
#pragma unroll
    for (int i = 0; i < G::A_VECS; i++)
      {
        const int v = tid + i * G::THREADS;
        *reinterpret_cast<uint4 *> (As + (v >> 2) * G::LDA + (v & 3) * 8) = areg[i];
      }
#pragma unroll
    for (int i = 0; i < G::B_ELEMS; i++)
      Bs[(kr0 + G::B_ROWS * i) * G::LDB + pl] = breg[i];
  };

  ConvAccFrag acc[G::FM][G::FN];
  warp_acc_zero (acc);

  if (kt_begin < kt_end)
    {
      load_tile (kt_begin);
      store_tile (0);
    }
  __syncthreads ();
  for (int kt = kt_begin; kt < kt_end; kt++)
    {
      const int cur = (kt - kt_begin) & 1;
      const bool more = kt + 1 < kt_end;
      if (more)
        load_tile (kt + 1);              /* in flight while the tensor cores work */
      const T *As = As0 + cur * G::A_STAGE, *Bs = Bs0 + cur * G::B_STAGE;
      warp_mma_slice<T, G::FM, G::FN, nvcuda::wmma::row_major> (acc, As + wm * (BM / 2) * G::LDA, G::LDA,
                                                                Bs + wn * (IG_BN / 2), G::LDB, 1, G::LDB);
      if (more)
        store_tile (cur ^ 1);            /* the other stage: nobody reads it in this iteration */
      __syncthreads ();
    }

  /* epilogue: fragments -> shared (every warp is past the loop's last barrier), then coalesced stores */
  warp_acc_store (Cs + wm * (BM / 2) * G::LDC + wn * (IG_BN / 2), G::LDC, acc);
  __syncthreads ();
  conv_tile_epilogue<T, BM, G::THREADS, G::LDC> (Cs, bias, y, epi, sk, s, m0, p0);
}

/* Output (m, pixel pp of B * HoWo) of a split convolution before its epilogue: bias + its partials in split
 * order. All splits' loads go out before the first add (splits <= IG_MAX_SPLITS: k_splits), one round trip
 * at sm_90a where chunks of 8 took two each (nvcc put the first add between a chunk's two halves). */
__device__ __forceinline__ float
splitk_element_sum (const float *__restrict__ partial, const float *__restrict__ bias, int splits, int BM, int gx, int m,
                    long long pp)
{
  const size_t tile_elems = (size_t) BM * IG_BN;
  const size_t tile = (size_t) (m / BM) * gx + (size_t) (pp / IG_BN);
  const size_t e = (size_t) (m % BM) * IG_BN + (size_t) (pp % IG_BN);
  const float *src = partial + tile * splits * tile_elems + e;
  float v = bias != NULL ? bias[m] : 0.0f;
  float p[IG_MAX_SPLITS];
#pragma unroll
  for (int z = 0; z < IG_MAX_SPLITS; z++)
    p[z] = z < splits ? __ldcg (src + (size_t) z * tile_elems) : 0.0f;
#pragma unroll
  for (int z = 0; z < IG_MAX_SPLITS; z++)
    if (z < splits)
      v += p[z];
  return v;
}

/* y = bias + the sum of the split-K partials ([tile][split][BM * IG_BN] float32, tiles gx wide), in split
 * order: the second launch used when there are more tiles than counters. */
template <typename T>
__global__ void __launch_bounds__ (256)
conv_splitk_reduce_kernel (const float *__restrict__ partial, const float *__restrict__ bias, T *__restrict__ y,
                           int splits, int Cout, int HoWo, long long P, int BM, int gx, ConvEpi<T> epi)
{
  grid_dependency_wait ();
  const size_t n = (size_t) Cout * (size_t) P;
  GRID_STRIDE (i, n)
    {
      const int m = (int) (i / (size_t) P);
      const long long pp = (long long) (i % (size_t) P);
      const int bb = (int) (pp / HoWo), pix = (int) (pp % HoWo);
      const ConvEpiIn<T> in = conv_epi_load (epi, Cout, HoWo, bb, m, pix);   /* in flight with the partials' loads
                                                                          * (after them: a round trip more) */
      const float v = splitk_element_sum (partial, bias, splits, BM, gx, m, pp);
      conv_store_in (y, epi, v, in);
    }
}

/* conv_splitk_reduce_kernel and then nchw_to_nhwc_kernel in one launch (a held-back sum whose output the next
 * convolution reads channels last: a downsample or upsample conv): each 32 x 32 tile of (channels, pixels)
 * of image blockIdx.z is summed, stored to y through the epilogue, and its stored values written to xh (B,
 * HoWo, Cout) along channels; the same bits as the two launches. Blocks of 32 x 8 threads. */
template <typename T>
__global__ void __launch_bounds__ (256)
conv_splitk_reduce_nhwc_kernel (const float *__restrict__ partial, const float *__restrict__ bias, T *__restrict__ y,
                                T *__restrict__ xh, int splits, int Cout, int HoWo, int BM, int gx, ConvEpi<T> epi)
{
  grid_dependency_wait ();
  __shared__ float tile[32][33];
  const int b = blockIdx.z, c0 = blockIdx.y * 32, p0 = blockIdx.x * 32;
  for (int r = threadIdx.y; r < 32; r += 8)
    {
      const int c = c0 + r, p = p0 + threadIdx.x;
      if (c < Cout && p < HoWo)
        {
          const ConvEpiIn<T> in = conv_epi_load (epi, Cout, HoWo, b, c, p);   /* with the partials' loads */
          const float v = splitk_element_sum (partial, bias, splits, BM, gx, c, (long long) b * HoWo + p);
          tile[r][threadIdx.x] = conv_store_in (y, epi, v, in);   /* the value stored */
        }
    }
  __syncthreads ();
  T *ob = xh + (size_t) b * Cout * HoWo;
  for (int r = threadIdx.y; r < 32; r += 8)
    {
      const int p = p0 + r, c = c0 + threadIdx.x;
      if (c < Cout && p < HoWo)
        ob[(size_t) p * Cout + c] = from_f32<T> (tile[threadIdx.x][r]);
    }
}

template <typename T>
static void
launch_implicit (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s, const ConvPlan &p,
                 const SplitK &sk, dim3 grid, const ConvEpi<T> &epi)
{
  if (p.tile == TILE_LARGE)
    conv_launch (cb, "conv_implicit_128", grid, IgTile<128>::SMEM, sk, conv_implicit_kernel<T, 128>,
                 (const T *) w->weight, (const float *) w->bias, (const T *) x, (T *) y, sk, s, p.kps, epi);
  else
    conv_launch (cb, "conv_implicit_64", grid, IgTile<64>::SMEM, sk, conv_implicit_kernel<T, 64>,
                 (const T *) w->weight, (const float *) w->bias, (const T *) x, (T *) y, sk, s, p.kps, epi);
}

bool
cuda_conv_implicit_allow_large_clusters (void)
{
  const void *const kernels[] = {
    (const void *) conv_implicit_kernel<__half, 64>, (const void *) conv_implicit_kernel<__half, 128>,
    (const void *) conv_implicit_kernel<__nv_bfloat16, 64>, (const void *) conv_implicit_kernel<__nv_bfloat16, 128>,
  };
  return allow_large_clusters (kernels, (int) (sizeof kernels / sizeof kernels[0]));
}

/* Bytes of a held-back sum's partials: [tile][split][bm * bn] floats. */
size_t
pending_partial_bytes (const CudaPendingReduce &r)
{
  if (r.bm <= 0)
    return 0;                           /* none held (a zeroed record) */
  return (size_t) r.splits * (size_t) ((r.Cout + r.bm - 1) / r.bm) * (size_t) r.gx * (size_t) r.bm * (size_t) r.bn
         * sizeof (float);
}

/* A held-back sum's launch (cuda_flush_reduce), or with nhwc its launch that also writes y's channels-last copy
 * to the start of scratch (reduce_into_nhwc, for a channels-last conv reading y). */
template <typename T>
static void
launch_reduce_t (CudaBackend *cb, const CudaPendingReduce &r, bool nhwc)
{
  const ConvEpi<T> epi = { (const T *) r.channel_bias, (const T *) r.residual, r.cb_stride, r.scale };
  if (nhwc)
    {
      const dim3 grid ((unsigned) ceil_div (r.HoWo, 32), (unsigned) ceil_div (r.Cout, 32), (unsigned) (r.P / r.HoWo));
      launch (cb, "conv_splitk_reduce_nhwc", grid, dim3 (32, 8), 0, conv_splitk_reduce_nhwc_kernel<T>, r.partial, r.bias,
              (T *) r.y, (T *) cb->scratch, r.splits, r.Cout, r.HoWo, r.bm, r.gx, epi);
      return;
    }
  const unsigned blocks = elementwise_blocks (cb, (size_t) r.Cout * (size_t) r.P, 256);
  launch (cb, "conv_splitk_reduce", blocks, 256, 0, conv_splitk_reduce_kernel<T>, r.partial, r.bias, (T *) r.y, r.splits,
          r.Cout, r.HoWo, r.P, r.bm, r.gx, epi);
}

static void
launch_reduce (CudaBackend *cb, const CudaPendingReduce &r, bool nhwc)
{
  if (cb->act_type == CT_F16)           /* the split paths are 16-bit only */
    launch_reduce_t<__half> (cb, r, nhwc);
  else
    launch_reduce_t<__nv_bfloat16> (cb, r, nhwc);
}

/* Whether this convolution may run while a held-back sum (cb->pending) waits, instead of launching that sum
 * first: held-back sums on, not profiling, no rider yet, on x itself (NCHW: no channels-last copy into
 * scratch), K split (if at all) over blocks summed by a second launch, not reading pending's y (written only
 * by its sum) and not writing anything that sum reads or writes. At batch 1 a resnet's shortcut (1x1, after
 * conv1) then keeps conv1's sum held back for the GroupNorm of conv1's output. */
static bool
conv_may_pass_pending (const CudaBackend *cb, const void *x, const void *y, const ConvShape &s, const ConvPlan &p,
                       const DdpmConvEpilogue *e)
{
  if (!cb->defer_reduce || !cb->reduce_pending || cb->rider_pending || cb->profile != NULL || p.partials != NULL
      || p.nhwc || p.cluster || s.up != 0 || (p.splits > 1 && cb->conv_reduce == REDUCE_LAST_BLOCK))
    return false;
  const CudaPendingReduce &r = cb->pending;
  const size_t act = cb->act_size;
  const size_t r_y = (size_t) r.Cout * (size_t) r.P * act;
  const size_t x_bytes = (size_t) s.B * s.Cin * s.H * s.W * act, y_bytes = (size_t) s.B * s.Cout * s.Ho * s.Wo * act;
  const size_t cb_bytes = r.channel_bias != NULL ? (size_t) (r.P / r.HoWo) * r.cb_stride * act : 0;
  return !bytes_overlap (x, x_bytes, r.y, r_y) && !bytes_overlap (y, y_bytes, r.y, r_y)
         && !bytes_overlap (y, y_bytes, r.residual, r_y) && !bytes_overlap (y, y_bytes, r.partial, pending_partial_bytes (r))
         && !bytes_overlap (y, y_bytes, r.channel_bias, cb_bytes)
         && (e == NULL || (!bytes_overlap (e->residual, y_bytes, r.y, r_y)
                           && !bytes_overlap (e->channel_bias, (size_t) s.B * e->channel_bias_stride * act, r.y, r_y)));
}

/* Where a split convolution that may pass the held-back sum puts its partials (`bytes`) to ride along with
 * it (cb->rider, summed by the same GroupNorm where it has the same shape): right after pending's partials
 * in scratch (conv_plan leaves room at batch 1), clear of x. NULL where they do not fit. */
static float *
rider_partials_at (const CudaBackend *cb, const void *x, const ConvShape &s, size_t bytes)
{
  const CudaPendingReduce &r = cb->pending;
  const char *scratch = (const char *) cb->scratch, *r_end = (const char *) r.partial + pending_partial_bytes (r);
  if ((const char *) r.partial < scratch || r_end > scratch + cb->scratch_bytes)
    return NULL;
  const size_t off = ((size_t) (r_end - scratch) + 255) & ~(size_t) 255;
  if (off + bytes > cb->scratch_bytes)
    return NULL;
  float *at = (float *) ((char *) cb->scratch + off);
  return bytes_overlap (at, bytes, x, (size_t) s.B * s.Cin * s.H * s.W * cb->act_size) ? NULL : at;
}

/* Where x is a held-back sum's output (cb->pending), its channels-last copy at the start of scratch comes from
 * that sum itself (conv_splitk_reduce_nhwc_kernel): one launch instead of the sum and the transpose. FALSE
 * (nothing launched) elsewhere, or where the copy would cover the partials. */
static bool
reduce_into_nhwc (CudaBackend *cb, const void *x, const ConvShape &s)
{
  const CudaPendingReduce &r = cb->pending;
  const int HW = (s.H >> s.up) * (s.W >> s.up);     /* x itself, before any upsampling */
  const size_t xh_bytes = (size_t) s.B * s.Cin * HW * cb->act_size;
  if (!cb->reduce_pending || r.y != x || r.Cout != s.Cin || r.HoWo != HW || r.P != (long long) s.B * HW
      || s.B > 65535 || bytes_overlap (cb->scratch, xh_bytes, r.partial, pending_partial_bytes (r)))
    return false;
  cb->reduce_pending = FALSE;           /* taken over: launch does not flush it (a rider still goes first) */
  launch_reduce (cb, r, true);
  return true;
}

/* xh_ready: the plan is channels last and the channels-last copy of x is already at the start of scratch
 * (cuda_group_norm_conv2d wrote it); x is not read then. */
template <typename T>
static void
conv2d_implicit_t (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s, ConvPlan p,
                   const DdpmConvEpilogue *e, bool xh_ready = false)
{
  const ConvEpi<T> epi = conv_epi<T> (e, s.Cout);
  const long long P = (long long) s.B * s.Ho * s.Wo;
  if (s.up != 0 && (!p.nhwc || p.scratch > cb->scratch_bytes))
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE, "conv2d: an upsampling convolution reached a kernel without it");
      return;
    }
  if (p.scratch > cb->scratch_bytes)
    {
      /* planned with more scratch than was reserved: the NCHW kernel unsplit needs none, rather than fail */
      const int ktiles = (s.K + IG_BK - 1) / IG_BK;
      p.splits = 1;
      p.cluster = false;
      p.kps = ktiles;
      p.nhwc = false;
      p.pointwise = false;
      p.mma = false;
      p.wgmma = false;
      p.xh_bytes = 0;
      p.partial_bytes = 0;
    }
  const long long gx = (P + IG_BN - 1) / IG_BN;
  const int bm = tile_rows (p.tile);
  const int gy = ceil_div (s.Cout, bm);
  if (gx > 2147483647LL || gy > 65535)
    {
      cuda_fail (cb, DDPM_ERROR_LIMIT, "conv2d: output of %lld pixels x %d channels exceeds the grid", P, s.Cout);
      return;
    }
  SplitK sk = {};
  const bool pass = conv_may_pass_pending (cb, x, y, s, p, e);
  bool ride = false;
  if (p.cluster)
    sk.cluster = 1;
  else if (p.splits > 1)
    {
      sk.partial = p.partials != NULL ? p.partials : (float *) ((char *) cb->scratch + p.partial_at);
      /* the last-block sum needs a counter per tile; past the counters buffer, a second kernel sums */
      if (cb->conv_reduce == REDUCE_LAST_BLOCK && gx * gy <= CUDA_CONV_COUNTERS)
        sk.counters = cb->conv_counters;
      else if (pass)
        {
          float *at = rider_partials_at (cb, x, s, p.partial_bytes);
          if (at != NULL)
            {
              sk.partial = at;
              ride = true;
            }
        }
    }
  dim3 grid ((unsigned) gx, (unsigned) gy, (unsigned) p.splits);
  cb->hold_pending = pass && (p.splits == 1 || ride);   /* this launch leaves `pending` held back */
  if (p.nhwc && !xh_ready && !reduce_into_nhwc (cb, x, s))
    cuda_conv_nhwc_transpose (cb, x, cb->scratch, s);
  if (p.wgmma)
    cuda_conv_wgmma_launch (cb, w, cb->scratch, y, sk, p.wgmma_bn, p.splits, p.kps / 2, s, e);
  else if (p.mma)
    cuda_conv_nhwc_mma_launch (cb, w, cb->scratch, y, s, e);
  else if (p.nhwc)
    cuda_conv_nhwc_launch (cb, p.tile == TILE_LARGE, grid, w, cb->scratch, y, sk, s, p.kps, e);
  else if (p.pointwise && aligned16 (x))
    cuda_conv_pointwise_launch (cb, p.tile == TILE_LARGE, grid, w, x, y, sk, s, p.kps, e);
  else
    launch_implicit<T> (cb, w, x, y, s, p, sk, grid, epi);
  cb->hold_pending = FALSE;
  if (sk.partial != NULL && sk.counters == NULL)
    {
      const CudaPendingReduce r = { sk.partial, (const float *) w->bias, y, p.splits, s.Cout, s.Ho * s.Wo, bm, IG_BN,
                                    (int) gx, P, epi.channel_bias, epi.residual, epi.cb_stride, epi.scale };
      if (ride)
        {
          cb->rider = r;
          cb->rider_pending = TRUE;
          return;
        }
      cb->pending = r;
      cb->reduce_pending = TRUE;
      /* held back for a GroupNorm of y where it may be (the partials past y's size, not the caller's region;
       * not when profiling: the profile would give its time to the next kernel) */
      if (!cb->defer_reduce || p.partials != NULL || cb->profile != NULL)
        cuda_flush_reduce (cb);
    }
}

void
cuda_flush_reduce (CudaBackend *cb)
{
  /* flags cleared before the launches: launch_status flushes what is pending */
  const bool main = cb->reduce_pending, rider = cb->rider_pending;
  cb->reduce_pending = FALSE;
  cb->rider_pending = FALSE;
  if (main)
    launch_reduce (cb, cb->pending, false);
  if (rider)
    launch_reduce (cb, cb->rider, false);
}

/* conv2d_implicit_t for the backend's activation type (fp16 or bf16: the implicit paths never run in fp32). */
static void
conv2d_implicit (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s, const ConvPlan &p,
                 const DdpmConvEpilogue *e, bool xh_ready = false)
{
  if (cb->act_type == CT_F16)
    conv2d_implicit_t<__half> (cb, w, x, y, s, p, e, xh_ready);
  else
    conv2d_implicit_t<__nv_bfloat16> (cb, w, x, y, s, p, e, xh_ready);
}

/* The convolution on the path its plan names. */
static void
conv2d_run (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s, const ConvPlan &p,
            const int pad[4], const DdpmConvEpilogue *epi)
{
  if (!p.implicit)
    conv2d_gemm (cb, w, x, y, s, pad, epi);
  else if (p.direct)
    cuda_conv_direct (cb, w, x, false, y, false, s, epi);
  else
    conv2d_implicit (cb, w, x, y, s, p, epi);
}

bool
cuda_conv_plan_info (const CudaBackend *cb, const ConvShape &s, const int pad[4], const ConvPick &pick,
                     ConvPlanInfo *info)
{
  const ConvPlan p = conv_plan_with (cb, s, pad, pick);
  if (!p.implicit || p.direct)
    return false;
  const char *kernel = p.wgmma ? "wgmma" : p.mma ? "mma" : p.nhwc ? "nhwc" : p.pointwise ? "pointwise" : "implicit";
  const int rows = p.wgmma || p.mma ? 128 : tile_rows (p.tile);
  const int cols = p.wgmma ? p.wgmma_bn : p.mma ? 128 : IG_BN;
  g_snprintf (info->name, sizeof info->name, "%s %dx%d%s, %d split%s", kernel, rows, cols,
              p.cluster ? " cluster" : "", p.splits, p.splits == 1 ? "" : "s");
  info->scratch = p.scratch;
  info->splits = p.splits;
  return true;
}

void
cuda_conv_run_pick (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s,
                    const int pad[4], const ConvPick &pick)
{
  conv2d_run (cb, w, x, y, s, conv_plan_with (cb, s, pad, pick), pad, NULL);
  cuda_flush_reduce (cb);
}

void
cuda_conv2d (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int B, int H, int W, int stride,
             const int pad[4], const DdpmConvEpilogue *epi)
{
  CudaBackend *cb = cuda_backend (be);
  const ConvShape s = conv_shape (w, B, H, W, stride, pad);
  if (s.B <= 0 || s.Ho <= 0 || s.Wo <= 0 || s.Cout <= 0)
    return;
  conv2d_run (cb, w, x, y, s, conv_plan (cb, s, pad), pad, epi);
}

/* conv2d with float32 at one end (a model's conv_in reading the sample, conv_out writing eps): where the direct
 * kernel takes the shape, one launch that rounds through the activation type as the casts would; FALSE
 * elsewhere (and in fp32, where the casts are copies): the engine casts. */
gboolean
cuda_conv2d_f32_ends (DdpmBackend *be, const DdpmLinearW *w, const void *x, gboolean x_f32, void *y, gboolean y_f32,
                      int B, int H, int W, int stride, const int pad[4], const DdpmConvEpilogue *epi)
{
  CudaBackend *cb = cuda_backend (be);
  const ConvShape s = conv_shape (w, B, H, W, stride, pad);
  if (s.B <= 0 || s.Ho <= 0 || s.Wo <= 0 || s.Cout <= 0)
    return TRUE;                        /* nothing to compute */
  const ConvPlan p = conv_plan (cb, s, pad);
  if (!(p.implicit && p.direct && cuda_conv_direct_f32_end_fits (cb, s)))
    return FALSE;
  cuda_conv_direct (cb, w, x, x_f32, y, y_f32, s, epi);
  return TRUE;
}

/* The plan of a projection (out x in weights over B x HW pixels) as a 1x1 convolution, or false where
 * cuda_projection leaves it to cuBLAS. */
static bool
projection_plan (const CudaBackend *cb, int out, int in, int B, int HW, ConvShape *s, ConvPlan *p)
{
  static const int pad[4] = { 0, 0, 0, 0 };
  const DdpmLinearW w1 = { NULL, NULL, out, in, 1 };
  *s = conv_shape (&w1, B, 1, HW, 1, pad);
  if ((long long) B * HW > cb->proj_conv_pixels || s->B <= 0 || s->Wo <= 0 || s->Cout <= 0)
    return false;
  *p = conv_plan (cb, *s, pad);
  return p->implicit && (p->direct || p->pointwise);
}

size_t
cuda_projection_scratch (const CudaBackend *cb, int out, int in, int B, int HW)
{
  ConvShape s;
  ConvPlan p;
  return cb->proj_split && projection_plan (cb, out, in, B, HW, &s, &p) ? p.scratch : 0;
}

bool
cuda_projection (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, int B, int HW, void *partials,
                 size_t partial_bytes)
{
  static const int pad[4] = { 0, 0, 0, 0 };
  const DdpmLinearW w1 = { w->weight, NULL, w->out, w->in, 1 };
  ConvShape s;
  ConvPlan p;
  if (!aligned16 (x) || !projection_plan (cb, w->out, w->in, B, HW, &s, &p))
    return false;
  if (p.scratch > 0)   /* split partials (pointwise, no clusters here): in the caller's region, else unsplit */
    {
      if (cb->proj_split && partials != NULL && p.scratch <= partial_bytes)
        p.partials = (float *) partials;
      else
        {
          p.splits = 1;
          p.kps = (s.K + IG_BK - 1) / IG_BK;
        }
      p.scratch = 0;
    }
  conv2d_run (cb, &w1, x, y, s, p, pad, NULL);
  return true;
}

/* The fused ops' common condition: the convolution s is non-empty and its plan (*p) runs channels last (so
 * the implicit path, not the direct one) within the reserved scratch, where the op can write or redirect
 * the channels-last copy of its input. */
static bool
plan_channels_last (const CudaBackend *cb, const ConvShape &s, const int pad[4], ConvPlan *p)
{
  if (s.B <= 0 || s.Ho <= 0 || s.Wo <= 0 || s.Cout <= 0)
    return false;
  *p = conv_plan (cb, s, pad);
  return p->nhwc && p->scratch <= cb->scratch_bytes;
}

/* GroupNorm then this convolution. Where the convolution runs channels last, the normalisation writes the
 * channels-last copy itself (cuda_group_norm_nhwc): one pass over the activation and one launch fewer than
 * group_norm + transpose, and `normed` stays unwritten. Elsewhere, or with $DDPM_CUDA_GN_CONV=0, the two ops. */
void
cuda_group_norm_conv2d (DdpmBackend *be, const DdpmNormW *w_norm, int G, float eps, const void *scale_shift,
                        gboolean silu, const DdpmLinearW *w, const void *x, void *normed, void *y, int B, int H, int W,
                        int stride, const int pad[4], const DdpmConvEpilogue *epi)
{
  CudaBackend *cb = cuda_backend (be);
  const ConvShape s = conv_shape (w, B, H, W, stride, pad);
  ConvPlan p;
  if (cb->gn_conv_fuse && plan_channels_last (cb, s, pad, &p)
      && cuda_group_norm_nhwc (cb, w_norm, x, cb->scratch, B, s.Cin, H * W, G, eps, scale_shift, silu))
    {
      conv2d_implicit (cb, w, NULL, y, s, p, epi, true);
      return;
    }
  cuda_group_norm (be, w_norm, x, normed, B, w->in, H * W, G, eps, scale_shift, silu);
  cuda_conv2d (be, w, normed, y, B, H, W, stride, pad, epi);
}

/* Nearest 2x upsampling of x (B, Cin, H, W), then this convolution at 2H x 2W. Where the convolution runs
 * channels last, the transpose copies x itself (a quarter of the upsampled tensor) into scratch and the kernel
 * reads pixel (iy / 2, ix / 2) of it for input pixel (iy, ix): one launch and one 4x-sized write and read
 * fewer, and `upsampled` stays unwritten. y may alias x: x is copied before the convolution writes. Elsewhere
 * the two ops. */
void
cuda_upsample_conv2d (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *upsampled, void *y, int B, int H,
                      int W, const int pad[4], const DdpmConvEpilogue *epi)
{
  CudaBackend *cb = cuda_backend (be);
  ConvShape s = conv_shape (w, B, 2 * H, 2 * W, 1, pad);
  ConvPlan p;
  if (cb->upsample_conv_fuse && plan_channels_last (cb, s, pad, &p))
    {
      s.up = 1;
      conv2d_implicit (cb, w, x, y, s, p, epi);
      return;
    }
  cuda_upsample_nearest2x (be, x, upsampled, B, w->in, H, W);
  cuda_conv2d (be, w, upsampled, y, B, 2 * H, 2 * W, 1, pad, epi);
}
