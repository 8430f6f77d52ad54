/* conv2d_nhwc.cu: implicit-GEMM convolution on a channels-last copy of the input (fp16 / bf16); conv2d.cu
 * decides where (the default for 3x3 convolutions with Cin % 32 == 0).
 *
 * Why channels last: in NCHW the K slice of one filter tap is 32 channel planes apart, so conv2d.cu gathers
 * it one 2-byte element at a time through registers. In NHWC those 32 channels of one pixel are 64
 * contiguous bytes: four 16-byte asynchronous copies (cp.async) straight into shared memory, zero-filled
 * at the image border, with no registers in between. That allows a deep pipeline: the copies of K slices
 * kt + 1 .. kt + 3 (64-row tiles; kt + 2 for 128 rows) are in flight while the tensor cores multiply slice kt.
 *
 * Cost: one transpose of x (B, Cin, H, W) -> xh (B, H, W, Cin) into scratch per convolution (one read and
 * one write of x), and y stays NCHW (the epilogue stages the tile in shared memory and stores along
 * pixels), so nothing else in the backend changes.
 *
 * Tile: BM output channels x IG_BN (64) pixels, 4 warps (2 x 2) of (BM/2) x 32, K slices of IG_BK (32);
 * needs Cin % 32 == 0 (a slice is one tap, every copy 16-byte aligned). conv2d.cu plans it (tile, K
 * splits, scratch) as its own kernel, and the end of a block is the same (conv_tile_epilogue). */
#include "conv2d.cuh"
#include "mma_sync.cuh"

/* B stages: the tile's IG_BN pixels as rows of one K slice, the A rows' stride (CP_LDA, 80 bytes). */
template <int BM>
using NhwcTile = CpAsyncTile<BM, IG_BN * CP_LDA>;

/* xh (B, HW, C) = x (B, C, HW), 32 x 32 tiles. */
template <typename T>
__global__ void __launch_bounds__ (256)
nchw_to_nhwc_kernel (const T *__restrict__ x, T *__restrict__ xh, int C, int HW)
{
  grid_dependency_wait ();
  const size_t image = (size_t) blockIdx.z * C * HW;
  nchw_to_nhwc_tile (x + image, xh + image, C, HW, blockIdx.y * 32, blockIdx.x * 32, [] (int, float v) { return v; });
}

template <typename T, int BM>
__global__ void __launch_bounds__ (128)
conv_nhwc_kernel (const T *__restrict__ Wt, const float *__restrict__ bias, const T *__restrict__ xh,
                  T *__restrict__ y, SplitK sk, ConvShape s, int kps, ConvEpi<T> epi)
{
  /* grid_dependency_wait: in the K loop, after the first weight copies */
  typedef NhwcTile<BM> G;
  DYNAMIC_SMEM (smem);                   /* G::SMEM bytes; dynamic so that a cluster's blocks may read its C tile */
  T *const As0 = reinterpret_cast<T *> (smem);                          /* [stage][BM][CP_LDA] */
  T *const Bs0 = reinterpret_cast<T *> (smem) + G::STAGES * G::A_STAGE; /* [stage][IG_BN][CP_LDA] */
  float *const Cs = reinterpret_cast<float *> (smem);                   /* [BM][LDC], after the K loop */

  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;
  const int m0 = blockIdx.y * BM;
  const long long p0 = (long long) blockIdx.x * IG_BN;
  const int kt_begin = blockIdx.z * kps, kt_end = imin (kt_begin + kps, s.K / IG_BK);  /* this split's slices */
  const int nkt = imax (kt_end - kt_begin, 0);

  /* K slice kt into stage st: rows of CP_LDA elements */
  NhwcSliceCopies<T, G::A_COPIES, G::B_COPIES> copies (Wt, xh, s, m0, p0, kt_begin * IG_BK, tid);
  const int c8 = copies.chunk * 8;
  auto load_a = [&] (int st, int i) {
    T *As = As0 + st * G::A_STAGE;
    copies.weights.issue (s, (kt_begin + i) * IG_BK, tid, [&] (int r) { return As + r * CP_LDA + c8; });
  };
  auto load_b = [&] (int st, int i) {                    /* in order of i, as NhwcSliceCopies needs */
    T *Bs = Bs0 + st * G::B_STAGE;
    copies.issue_b (s, (kt_begin + i) * IG_BK, tid, [&] (int n) { return Bs + n * CP_LDA + c8; });
  };

  ConvAccFrag acc[G::FM][G::FN];
  warp_acc_zero (acc);

  cp_async_k_loop_prefetch<G::STAGES> (nkt, s.prefetch != 0, load_a, load_b, [&] (int st) {
    const T *As = As0 + st * G::A_STAGE, *Bs = Bs0 + st * G::B_STAGE;
    warp_mma_slice<T, G::FM, G::FN, nvcuda::wmma::col_major> (acc, As + wm * (BM / 2) * CP_LDA, CP_LDA,
                                                              Bs + wn * (IG_BN / 2) * CP_LDA, CP_LDA, CP_LDA, 1);
  });
  /* the C tile reuses the stages */
  warp_acc_store (Cs + wm * (BM / 2) * G::LDC + wn * (IG_BN / 2), G::LDC, acc);
  __syncthreads ();
  conv_tile_epilogue<T, BM, G::THREADS, G::LDC> (Cs, bias, y, epi, sk, s, m0, p0);
}

/* ---- the 128 x 128 tile on mma.sync, for large shapes (no K split) ----
 * 4 warps (2 x 2) of 64 x 64: per 16 of K a warp loads its A rows with 4 ldmatrix.x4 and its pixels with 4
 * more, then issues 32 mma.m16n8k16, so each operand byte read from shared memory feeds twice the products
 * of the WMMA tile's 32-wide warp tiles. Shared rows are the 32 K values of a slice (64 bytes, four 16-byte
 * chunks), chunk c of row r stored at c ^ ((r / 2) % 4): the 8 rows one ldmatrix reads then fall in 8
 * different bank groups without padding, so 3 stages of A and B fit in 48 KiB. Copies and pipeline as
 * conv_nhwc_kernel; the end goes through conv_tile_epilogue in two 64-pixel halves. */
#define MMA_BM 128
#define MMA_BN 128
#define MMA_THREADS 128
#define MMA_STAGES 3

/* Element offset of chunk (8 values) `chunk` of shared row r. */
__device__ __forceinline__ int
mma_swizzle (int r, int chunk)
{
  return r * IG_BK + ((chunk ^ ((r >> 1) & 3)) << 3);
}

template <typename T>
__global__ void __launch_bounds__ (MMA_THREADS)
conv_nhwc_mma_kernel (const T *__restrict__ Wt, const float *__restrict__ bias, const T *__restrict__ xh,
                      T *__restrict__ y, ConvShape s, ConvEpi<T> epi)
{
  grid_dependency_wait ();
  constexpr int STAGE = (MMA_BM + MMA_BN) * IG_BK;             /* elements: A rows, then B pixels */
  constexpr int LDC = IG_BN + 4;
  constexpr int COPIES = MMA_BM * IG_BK / 8 / MMA_THREADS;      /* 16-byte copies per thread, A and B each: 4 */
  static_assert (MMA_STAGES * STAGE * 2 <= 48 * 1024 && MMA_BM * LDC * 4 <= MMA_STAGES * STAGE * 2, "shared memory");
  __shared__ __align__ (128) unsigned char smem[MMA_STAGES * STAGE * 2];
  T *const S0 = reinterpret_cast<T *> (smem);
  float *const Cs = reinterpret_cast<float *> (smem);          /* [MMA_BM][LDC], after the K loop */

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 1, wn = warp & 1;
  const int m0 = blockIdx.y * MMA_BM;
  const long long p0 = (long long) blockIdx.x * MMA_BN;
  const int nkt = s.K / IG_BK;
  NhwcSliceCopies<T, COPIES, COPIES> copies (Wt, xh, s, m0, p0, 0, tid);
  auto load_stage = [&] (int st, int kt) {               /* in order of kt, as NhwcSliceCopies needs */
    T *As = S0 + st * STAGE, *Bs = As + MMA_BM * IG_BK;
    const int chunk = copies.chunk;
    copies.issue (s, kt * IG_BK, tid, [&] (int r) { return As + mma_swizzle (r, chunk); },
                  [&] (int n) { return Bs + mma_swizzle (n, chunk); });
  };

  float acc[4][8][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++)
        acc[i][j][e] = 0.0f;

  /* ldmatrix rows of this lane: matrix q = lane / 8, its row lane % 8 */
  const int q = lane >> 3, r8 = lane & 7;
  const int a_row = wm * 64 + (q & 1) * 8 + r8, a_chunk = q >> 1;   /* + 16 i rows, + 2 ks chunks */
  const int b_row = wn * 64 + (q >> 1) * 8 + r8, b_chunk = q & 1;   /* + 16 jj pixels, + 2 ks chunks */

  cp_async_k_loop<MMA_STAGES> (nkt, load_stage, [&] (int st) {
    const T *As = S0 + st * STAGE, *Bs = As + MMA_BM * IG_BK;
#pragma unroll
    for (int ks = 0; ks < 2; ks++)
      {
        uint32_t af[4][4], bf[8][2];
#pragma unroll
        for (int i = 0; i < 4; i++)
          ldmatrix_x4 (af[i], As + mma_swizzle (a_row + 16 * i, a_chunk + 2 * ks));
#pragma unroll
        for (int jj = 0; jj < 4; jj++)
          {
            uint32_t r[4];
            ldmatrix_x4 (r, Bs + mma_swizzle (b_row + 16 * jj, b_chunk + 2 * ks));
            bf[2 * jj][0] = r[0];
            bf[2 * jj][1] = r[1];
            bf[2 * jj + 1][0] = r[2];
            bf[2 * jj + 1][1] = r[3];
          }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 8; j++)
            mma_m16n8k16<T> (acc[i][j], af[i], bf[j]);
      }
  });
  /* the C tile reuses the stages */

  /* two halves of 64 pixels: the warps of that half (wn) put their fragments in Cs, then the shared end */
  const int g = lane >> 2, t = lane & 3;
  for (int half = 0; half < 2; half++)
    {
      if (wn == half)
        {
#pragma unroll
          for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
              for (int e = 0; e < 4; e++)
                Cs[(wm * 64 + i * 16 + g + (e >= 2 ? 8 : 0)) * LDC + j * 8 + 2 * t + (e & 1)] = acc[i][j][e];
        }
      __syncthreads ();
      /* a half wholly past the output (P % 128 in 1..64) has nothing to store, and the vector end's fallback
       * loads (row m0, pixel p0) would read past the residual there (as the wgmma tile's loop stops too) */
      if (p0 + half * IG_BN < (long long) s.B * s.Ho * s.Wo)
        conv_tile_epilogue<T, MMA_BM, MMA_THREADS, LDC> (Cs, bias, y, epi, SplitK {}, s, m0, p0 + half * IG_BN);
      __syncthreads ();                  /* before the other half overwrites Cs */
    }
}

bool
cuda_conv_nhwc_fits (const CudaBackend *cb, const ConvShape &s)
{
  const long long P = (long long) s.B * s.Ho * s.Wo;
  return cb->act_type != CT_F32 && s.Cin % IG_BK == 0 && (s.k == 1 || s.k == 3) && s.ldw == s.K && s.B <= 65535
         && (P + IG_BN - 1) / IG_BN <= 2147483647LL && (s.Cout + 63) / 64 <= 65535
         && (long long) (s.H + 2) * (s.W + 2) * s.Cin <= 2147483647LL;   /* NhwcSliceCopies' int offsets */
}

size_t
cuda_conv_nhwc_bytes (const CudaBackend *cb, const ConvShape &s)
{
  return (size_t) s.B * s.Cin * (s.H >> s.up) * (s.W >> s.up) * cb->act_size;
}

void
cuda_conv_nhwc_transpose (CudaBackend *cb, const void *x, void *xh, const ConvShape &s)
{
  const int HW = (s.H >> s.up) * (s.W >> s.up);     /* x itself, before any upsampling */
  const dim3 grid ((unsigned) ceil_div (HW, 32), (unsigned) ceil_div (s.Cin, 32), (unsigned) s.B);
  DISPATCH_ACT (cb, T, launch (cb, "conv_nhwc_transpose", grid, dim3 (32, 8), 0, nchw_to_nhwc_kernel<T>, (const T *) x,
                               (T *) xh, s.Cin, HW));
}

template <typename T>
static void
launch_t (CudaBackend *cb, bool large, dim3 grid, const DdpmLinearW *w, const void *xh, void *y, const SplitK &sk,
          const ConvShape &s, int kps, const DdpmConvEpilogue *e)
{
  const ConvEpi<T> epi = conv_epi<T> (e, s.Cout);
  if (large)
    conv_launch (cb, "conv_nhwc_128", grid, NhwcTile<128>::SMEM, sk, conv_nhwc_kernel<T, 128>, (const T *) w->weight,
                 (const float *) w->bias, (const T *) xh, (T *) y, sk, s, kps, epi);
  else
    conv_launch (cb, "conv_nhwc_64", grid, NhwcTile<64>::SMEM, sk, conv_nhwc_kernel<T, 64>, (const T *) w->weight,
                 (const float *) w->bias, (const T *) xh, (T *) y, sk, s, kps, epi);
}

void
cuda_conv_nhwc_launch (CudaBackend *cb, bool large, dim3 grid, const DdpmLinearW *w, const void *xh, void *y,
                       const SplitK &sk, const ConvShape &s, int kps, const DdpmConvEpilogue *epi)
{
  ConvShape sp = s;
  sp.prefetch = cb->conv_prefetch ? 1 : 0;
  if (cb->act_type == CT_F16)
    launch_t<__half> (cb, large, grid, w, xh, y, sk, sp, kps, epi);
  else
    launch_t<__nv_bfloat16> (cb, large, grid, w, xh, y, sk, sp, kps, epi);
}

void
cuda_conv_nhwc_mma_launch (CudaBackend *cb, const DdpmLinearW *w, const void *xh, void *y, const ConvShape &s,
                           const DdpmConvEpilogue *e)
{
  const long long P = (long long) s.B * s.Ho * s.Wo;
  const dim3 grid ((unsigned) ((P + MMA_BN - 1) / MMA_BN), (unsigned) ceil_div (s.Cout, MMA_BM));
  if (cb->act_type == CT_F16)
    launch (cb, "conv_nhwc_mma", grid, MMA_THREADS, 0, conv_nhwc_mma_kernel<__half>, (const __half *) w->weight,
            (const float *) w->bias, (const __half *) xh, (__half *) y, s, conv_epi<__half> (e, s.Cout));
  else
    launch (cb, "conv_nhwc_mma", grid, MMA_THREADS, 0, conv_nhwc_mma_kernel<__nv_bfloat16>,
            (const __nv_bfloat16 *) w->weight, (const float *) w->bias, (const __nv_bfloat16 *) xh,
            (__nv_bfloat16 *) y, s, conv_epi<__nv_bfloat16> (e, s.Cout));
}

/* ---- whether clusters work here ---- */

/* Each block of a cluster of gridDim.z puts z + 1 in its shared memory; after a cluster barrier, block z adds
 * what block (z + 1) % gridDim.z holds to *count, so one launch adds n (n + 1) / 2. */
__global__ void
cluster_probe_kernel (unsigned long long *count)
{
  grid_dependency_wait ();
  DYNAMIC_SMEM (smem);
  float *const mine = reinterpret_cast<float *> (smem);
  if (threadIdx.x == 0)
    mine[0] = (float) (blockIdx.z + 1);
  cluster_sync ();
  if (threadIdx.x == 0)
    atomicAdd (count, (unsigned long long) *cluster_map_shared (mine, (int) ((blockIdx.z + 1) % gridDim.z)));
  cluster_sync ();
}

/* Whether clusters of n blocks work for the conv kernels: above 8, each of them allows it; the largest of
 * them (128 threads, 45 KiB of shared memory) can be resident; and two captured cluster launches of the probe
 * kernel (with PDL as the backend launches) add up right when the graph runs. */
static bool
cluster_size_works (CudaBackend *cb, unsigned n)
{
  const void *const kernels[] = {
    (const void *) conv_nhwc_kernel<__half, 64>, (const void *) conv_nhwc_kernel<__half, 128>,
    (const void *) conv_nhwc_kernel<__nv_bfloat16, 64>, (const void *) conv_nhwc_kernel<__nv_bfloat16, 128>,
    (const void *) cluster_probe_kernel,
  };
  const void *const largest = kernels[1];
  if (n > 8 && !(allow_large_clusters (kernels, (int) (sizeof kernels / sizeof kernels[0]))
                 && cuda_conv_implicit_allow_large_clusters () && cuda_conv_pointwise_allow_large_clusters ()))
    return false;
  if (!clusters_fit (largest, (unsigned) n, 128, NhwcTile<128>::SMEM))
    return false;
  unsigned long long count = 0;
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  bool ok = cudaMemsetAsync (cb->counter, 0, sizeof count, cb->stream) == cudaSuccess
            && cudaStreamBeginCapture (cb->stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (ok)
    {
      for (int i = 0; i < 2 && ok; i++)
        ok = launch_status (cb, dim3 (1, 1, n), dim3 (32), 16, n, cluster_probe_kernel, cb->counter) == cudaSuccess;
      ok = cudaStreamEndCapture (cb->stream, &graph) == cudaSuccess && ok;
    }
  ok = ok && cudaGraphInstantiate (&exec, graph, 0) == cudaSuccess && cudaGraphLaunch (exec, cb->stream) == cudaSuccess
       && cudaMemcpyAsync (&count, cb->counter, sizeof count, cudaMemcpyDeviceToHost, cb->stream) == cudaSuccess
       && cudaStreamSynchronize (cb->stream) == cudaSuccess && count == (unsigned long long) n * (n + 1);
  if (exec != NULL)
    cudaGraphExecDestroy (exec);
  if (graph != NULL)
    cudaGraphDestroy (graph);
  return ok;
}

int
cuda_conv_cluster_probe (CudaBackend *cb)
{
  int n = 0;
  if (cb->cc_major >= 9)
    n = cluster_size_works (cb, 16) ? 16 : cluster_size_works (cb, 8) ? 8 : 0;
  cudaGetLastError ();                   /* a failed probe leaves no error behind */
  return n;
}
