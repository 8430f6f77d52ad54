/* conv2d_pointwise.cu: 1x1 convolutions (stride 1, no padding: the resnet shortcuts) as an implicit GEMM on
 * the NCHW input itself, operands by cp.async (fp16 / bf16); conv2d.cu decides where.
 *
 * Why: with k == 1 a K slice of 32 input channels is 32 rows of x's channel planes, and the tile's 64 pixels
 * are contiguous in each of them (pixels run across the batch; an image's HW % 8 == 0 keeps every 8-pixel
 * chunk inside one image and 16-byte aligned). So B needs no gather and no transpose: four 16-byte copies
 * per row straight into shared memory, in a pipeline STAGES deep like conv2d_nhwc.cu's. conv2d.cu's NCHW
 * kernel stages B through registers one 2-byte element at a time (16 loads per thread per slice), which
 * fcae280's H100 trace had at ~146 us own time per call at cifar10-32 batch 128 and 62-207 us per call at
 * celebahq-256 batch 1 (a 256 -> 128 shortcut at 256 x 256 is 4.3 GFLOP: ~20 TFLOP/s).
 *
 * Tile: BM output channels x IG_BN (64) pixels, 4 warps (2 x 2) of (BM/2) x 32, the same WMMA slice product
 * (B row-major: K down the rows) and block end (conv_tile_epilogue: K split with a cluster, partials or none)
 * as the other implicit GEMMs; needs Cin % 32 == 0 and Ho * Wo % 8 == 0. */
#include "conv2d.cuh"

#define PW_LDB (IG_BN + 8)               /* B row stride (elements): input channel k, 64 pixels; 144 bytes */

/* B stages: the slice's IG_BK channels as rows of the tile's 64 pixels. */
template <int BM>
using PwTile = CpAsyncTile<BM, IG_BK * PW_LDB>;

template <typename T, int BM>
__global__ void __launch_bounds__ (128)
conv_pointwise_kernel (const T *__restrict__ Wt, const float *__restrict__ bias, const T *__restrict__ x,
                       T *__restrict__ y, SplitK sk, ConvShape s, int kps, ConvEpi<T> epi)
{
  /* grid_dependency_wait: in the K loop, after the first weight copies */
  typedef PwTile<BM> G;
  DYNAMIC_SMEM (smem);                   /* G::SMEM bytes; dynamic so that a cluster's blocks may read its C tile */
  T *const As0 = reinterpret_cast<T *> (smem);                          /* [stage][BM][CP_LDA] */
  T *const Bs0 = reinterpret_cast<T *> (smem) + G::STAGES * G::A_STAGE; /* [stage][IG_BK][PW_LDB] */
  float *const Cs = reinterpret_cast<float *> (smem);                   /* [BM][LDC], after the K loop */

  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;
  const int m0 = blockIdx.y * BM;
  const long long p0 = (long long) blockIdx.x * IG_BN;
  const int HW = s.Ho * s.Wo;
  const long long P = (long long) s.B * HW;
  const int kt_begin = blockIdx.z * kps, kt_end = imin (kt_begin + kps, s.Cin / IG_BK);  /* this split's slices */
  const int nkt = imax (kt_end - kt_begin, 0);

  /* This thread's copies of a slice: A rows tid / 4 + 32 i, chunk tid % 4 (8 K values); B rows (channels)
   * tid / 8 + 16 i, chunk tid % 8 (8 pixels), whose source is the same for every slice but for the channel */
  const int a_chunk = tid & 3, b_chunk = tid & 7, b_row = tid >> 3;
  const long long pc = p0 + b_chunk * 8;
  const bool b_ok = pc < P;              /* P % 8 == 0: a chunk is all inside or all past the end */
  /* channel b_row of the pixels' image (cuda_conv_pointwise_fits keeps Cin HW within int) */
  const T *const b_src = x + (b_ok ? (size_t) (pc / HW) * s.Cin * HW + (size_t) (pc % HW) + (size_t) b_row * HW : 0);
  const WeightSliceCopies<T, G::A_COPIES> weights (Wt, s, m0, tid);
  auto load_a = [&] (int st, int i) {   /* slice kt_begin + i of the weights */
    T *As = As0 + st * G::A_STAGE;
    weights.issue (s, (kt_begin + i) * IG_BK, tid, [&] (int r) { return As + r * CP_LDA + a_chunk * 8; });
  };
  auto load_b = [&] (int st, int i) {   /* ... and of x */
    T *Bs = Bs0 + st * G::B_STAGE;
    const int k0 = (kt_begin + i) * IG_BK;
#pragma unroll
    for (int j = 0; j < G::B_COPIES; j++)
      __pipeline_memcpy_async (Bs + (b_row + 16 * j) * PW_LDB + b_chunk * 8, b_ok ? b_src + (k0 + 16 * j) * HW : x,
                               16, b_ok ? 0 : 16);
  };

  ConvAccFrag acc[G::FM][G::FN];
  warp_acc_zero (acc);

  cp_async_k_loop_prefetch<G::STAGES> (nkt, s.prefetch != 0, load_a, load_b, [&] (int st) {
    const T *As = As0 + st * G::A_STAGE, *Bs = Bs0 + st * G::B_STAGE;
    warp_mma_slice<T, G::FM, G::FN, nvcuda::wmma::row_major> (acc, As + wm * (BM / 2) * CP_LDA, CP_LDA,
                                                              Bs + wn * (IG_BN / 2), PW_LDB, 1, PW_LDB);
  });
  /* the C tile reuses the stages */
  warp_acc_store (Cs + wm * (BM / 2) * G::LDC + wn * (IG_BN / 2), G::LDC, acc);
  __syncthreads ();
  conv_tile_epilogue<T, BM, G::THREADS, G::LDC> (Cs, bias, y, epi, sk, s, m0, p0);
}

bool
cuda_conv_pointwise_allow_large_clusters (void)
{
  const void *const kernels[] = {
    (const void *) conv_pointwise_kernel<__half, 64>, (const void *) conv_pointwise_kernel<__half, 128>,
    (const void *) conv_pointwise_kernel<__nv_bfloat16, 64>, (const void *) conv_pointwise_kernel<__nv_bfloat16, 128>,
  };
  return allow_large_clusters (kernels, (int) (sizeof kernels / sizeof kernels[0]));
}

bool
cuda_conv_pointwise_fits (const CudaBackend *cb, const ConvShape &s)
{
  return cb->act_type != CT_F32 && cb->conv_pointwise && s.k == 1 && s.stride == 1 && s.pad_top == 0
         && s.pad_left == 0 && s.up == 0 && s.Ho == s.H && s.Wo == s.W && s.Cin % IG_BK == 0
         && (s.Ho * s.Wo) % 8 == 0 && s.ldw % 8 == 0 && (long long) s.Cin * s.Ho * s.Wo <= 2147483647LL;
}

template <typename T>
static void
launch_t (CudaBackend *cb, bool large, dim3 grid, const DdpmLinearW *w, const void *x, void *y, const SplitK &sk,
          const ConvShape &s, int kps, const DdpmConvEpilogue *e)
{
  const ConvEpi<T> epi = conv_epi<T> (e, s.Cout);
  if (large)
    conv_launch (cb, "conv_pointwise_128", grid, PwTile<128>::SMEM, sk, conv_pointwise_kernel<T, 128>,
                 (const T *) w->weight, (const float *) w->bias, (const T *) x, (T *) y, sk, s, kps, epi);
  else
    conv_launch (cb, "conv_pointwise_64", grid, PwTile<64>::SMEM, sk, conv_pointwise_kernel<T, 64>,
                 (const T *) w->weight, (const float *) w->bias, (const T *) x, (T *) y, sk, s, kps, epi);
}

void
cuda_conv_pointwise_launch (CudaBackend *cb, bool large, dim3 grid, const DdpmLinearW *w, const void *x, void *y,
                            const SplitK &sk, const ConvShape &s, int kps, const DdpmConvEpilogue *epi)
{
  ConvShape sp = s;
  sp.prefetch = cb->conv_prefetch ? 1 : 0;
  if (cb->act_type == CT_F16)
    launch_t<__half> (cb, large, grid, w, x, y, sk, sp, kps, epi);
  else
    launch_t<__nv_bfloat16> (cb, large, grid, w, x, y, sk, sp, kps, epi);
}
