/* conv2d.cuh: what the convolution kernels share (conv2d.cu: implicit GEMM on NCHW and im2col + GEMM;
 * conv2d_nhwc.cu: implicit GEMM on a channels-last copy of the input). */
#pragma once

#include "cuda_backend.cuh"

/* Output tile width (pixels) and K slice of the implicit GEMMs. */
#define IG_BN 64
#define IG_BK 32

struct ConvShape {
  int B, Cin, H, W, Cout, k, stride, pad_top, pad_left, Ho, Wo;
  int K;                                /* Cin * k * k */
  int ldw;                              /* weight row stride (weight_ld) */
  int up;                               /* 1: the input is x upsampled 2x (nearest), x is (H / 2) x (W / 2):
                                         * channels-last kernels only (upsample_conv2d), else 0 */
  int prefetch;                         /* 1: the cp.async kernels copy their first weight slices before the
                                         * wait on the previous kernel (cp_async_k_loop_prefetch; their
                                         * launchers set it from cb->conv_prefetch), else 0 */
};

/* conv2d.cu, for conv_pick.cu: what plan a pick makes for s (false: the direct or im2col path, nothing to pick
 * there), and s run under a pick on w, x, y and the scratch at cb->scratch (no epilogue; its sum launched). */
struct ConvPlanInfo {
  char name[48];                        /* "nhwc 128x64, 4 splits" */
  size_t scratch;                       /* bytes */
  int splits;
};
bool cuda_conv_plan_info (const CudaBackend *cb, const ConvShape &s, const int pad[4], const ConvPick &pick,
                          ConvPlanInfo *info);
void cuda_conv_run_pick (CudaBackend *cb, const DdpmLinearW *w, const void *x, void *y, const ConvShape &s,
                         const int pad[4], const ConvPick &pick);
/* conv_pick.cu: the switches s plans under: its timed pick where there is one, else the backend's; and the
 * timing of a shape not seen yet ($DDPM_CUDA_CONV_PICK set; at planning, outside captures). */
ConvPick cuda_conv_pick_of (const CudaBackend *cb, const ConvShape &s);
void cuda_conv_pick_time (CudaBackend *cb, const ConvShape &s, const int pad[4]);

/* How a block of a K-split convolution ends (conv_tile_epilogue). One of:
 * - partial: its float tile goes to [tile][split][BM * IG_BN] float32 partials in scratch, then
 *   - counters: the last of the tile's blocks to arrive sums them, or
 *   - neither: conv_splitk_reduce_kernel does in a second launch;
 * - cluster: the tile's splits are one thread-block cluster (grid z = splits = cluster size) and sum each
 *   other's tiles from shared memory (no partials, no second launch).
 * All zero: no K split. */
struct SplitK {
  float *partial;
  int *counters;
  int cluster;
};

/* Launches an implicit-GEMM kernel (128 threads, smem bytes of dynamic shared memory) that ends with
 * conv_tile_epilogue: where sk.cluster, the grid.z splits of each tile as one cluster. */
template <typename... KArgs, typename... Args>
static inline void
conv_launch (CudaBackend *cb, const char *name, dim3 grid, size_t smem, const SplitK &sk, void (*kernel) (KArgs...),
             Args... args)
{
  launch_cluster (cb, name, grid, 128, smem, sk.cluster ? grid.z : 1, kernel, args...);
}

/* DdpmConvEpilogue, typed: what the implicit GEMM adds to conv + bias (in float) before its one rounding. */
template <typename T>
struct ConvEpi {
  const T *channel_bias;                /* image b's Cout values at b * cb_stride, or NULL */
  const T *residual;                    /* (B, Cout, Ho, Wo) or NULL; never y */
  int cb_stride;
  float scale;
};

/* The typed epilogue of e (NULL: none). */
template <typename T>
static inline ConvEpi<T>
conv_epi (const DdpmConvEpilogue *e, int Cout)
{
  if (e == NULL)
    return ConvEpi<T> { NULL, NULL, Cout, 1.0f };
  return ConvEpi<T> { (const T *) e->channel_bias, (const T *) e->residual,
                      ddpm_conv_epilogue_stride (e, Cout), e->residual_scale };
}

/* The epilogue of one output, v = conv + bias, in CPU order: + channel bias, then (residual + v) * scale (the
 * channel bias and residual values as floats, read by the caller; ignored where epi has none). */
template <typename T>
__device__ __forceinline__ float
conv_epi_apply (const ConvEpi<T> &epi, float v, float channel_bias, float residual)
{
  if (epi.channel_bias != NULL)
    v = __fadd_rn (v, channel_bias);
  if (epi.residual != NULL)
    v = __fmul_rn (__fadd_rn (residual, v), epi.scale);
  return v;
}

/* What the epilogue of output (bb, m, pix) reads: its index in y (and the residual), the channel bias and the
 * residual as stored (0 where epi has none; converted only when used: a conversion right behind its load
 * waits for it). Loaded apart from the store, so a caller can issue the loads of several outputs, or with
 * other loads, before it waits for any (each load issued behind the previous output's store waits a whole
 * round trip). */
template <typename T>
struct ConvEpiIn {
  size_t at;
  T channel_bias, residual;
};

template <typename T>
__device__ __forceinline__ ConvEpiIn<T>
conv_epi_load (const ConvEpi<T> &epi, int Cout, int HoWo, int bb, int m, int pix)
{
  const size_t i = ((size_t) bb * Cout + m) * HoWo + pix;
  ConvEpiIn<T> in { i, from_f32<T> (0.0f), from_f32<T> (0.0f) };
  if (epi.channel_bias != NULL)
    in.channel_bias = epi.channel_bias[(size_t) bb * epi.cb_stride + m];
  if (epi.residual != NULL)
    in.residual = epi.residual[i];
  return in;
}

/* y[in.at] = epilogue(v), rounded to T, then stored as TY (float: the value cast_out gives the T-typed result).
 * Returns the stored value as a float. */
template <typename T, typename TY = T>
__device__ __forceinline__ float
conv_store_in (TY *y, const ConvEpi<T> &epi, float v, const ConvEpiIn<T> &in)
{
  const T out = from_f32<T> (conv_epi_apply (epi, v, to_f32<T> (in.channel_bias), to_f32<T> (in.residual)));
  if constexpr (std::is_same<TY, T>::value)
    y[in.at] = out;
  else
    y[in.at] = to_f32<T> (out);
  return to_f32<T> (out);
}

/* y[bb][m][pix] = epilogue(v): the two above in one. */
template <typename T, typename TY = T>
__device__ __forceinline__ void
conv_store (TY *y, const ConvEpi<T> &epi, float v, int Cout, int HoWo, int bb, int m, int pix)
{
  conv_store_in<T, TY> (y, epi, v, conv_epi_load (epi, Cout, HoWo, bb, m, pix));
}

/* ---- the tensor-core part shared by both implicit GEMMs: a warp owns an (FM*16) x (FN*16) sub-tile ---- */

typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> ConvAccFrag;

template <int FM, int FN>
__device__ __forceinline__ void
warp_acc_zero (ConvAccFrag (&acc)[FM][FN])
{
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++)
      nvcuda::wmma::fill_fragment (acc[i][j], 0.0f);
}

/* wmma::load_matrix_sync of a fragment in shared memory. Why: for bf16, nvcc emits the generic-address form
 * (wmma.load ... .bf16: at sm_90a, 48 generic LD.E per K slice of the 128-row channels-last tile, where fp16's
 * inferred .shared form is 12 LDSM), so bf16 fragments are loaded here with the .shared form named. */
template <typename Use, typename Layout>
__device__ __forceinline__ void
wmma_load_shared (nvcuda::wmma::fragment<Use, 16, 16, 16, __nv_bfloat16, Layout> &f, const __nv_bfloat16 *p,
                  unsigned ldm)
{
#ifdef DDPM_CUDA_EMU
  nvcuda::wmma::load_matrix_sync (f, p, ldm);
#else
  uint32_t *const r = reinterpret_cast<uint32_t *> (&f.x[0]);   /* 8 bf16 values in 4 registers */
  const unsigned addr = (unsigned) __cvta_generic_to_shared (p);
#define WMMA_LOAD_SHARED_BF16(OP)                                                                                   \
  asm volatile (OP " {%0, %1, %2, %3}, [%4], %5;\n"                                                               \
                : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                                                  \
                : "r"(addr), "r"(ldm))
  constexpr bool a = std::is_same<Use, nvcuda::wmma::matrix_a>::value;
  constexpr bool row = std::is_same<Layout, nvcuda::wmma::row_major>::value;
  if constexpr (a && row)
    WMMA_LOAD_SHARED_BF16 ("wmma.load.a.sync.aligned.row.m16n16k16.shared.bf16");
  else if constexpr (a)
    WMMA_LOAD_SHARED_BF16 ("wmma.load.a.sync.aligned.col.m16n16k16.shared.bf16");
  else if constexpr (row)
    WMMA_LOAD_SHARED_BF16 ("wmma.load.b.sync.aligned.row.m16n16k16.shared.bf16");
  else
    WMMA_LOAD_SHARED_BF16 ("wmma.load.b.sync.aligned.col.m16n16k16.shared.bf16");
#undef WMMA_LOAD_SHARED_BF16
#endif
}

template <typename Use, typename Layout>
__device__ __forceinline__ void
wmma_load_shared (nvcuda::wmma::fragment<Use, 16, 16, 16, __half, Layout> &f, const __half *p, unsigned ldm)
{
  nvcuda::wmma::load_matrix_sync (f, p, ldm);   /* nvcc infers the .shared form for fp16 */
}

/* acc += A B over one K slice (IG_BK) in shared memory. A: the warp's rows, row-major, row stride lda.
 * B: fragment j, k at B + j * 16 * b_col + k * b_k with stride ldb, in layout LB (row_major: K down the rows,
 * b_col 1, b_k ldb; col_major: a pixel's K values contiguous, b_col ldb, b_k 1). */
template <typename T, int FM, int FN, typename LB>
__device__ __forceinline__ void
warp_mma_slice (ConvAccFrag (&acc)[FM][FN], const T *A, int lda, const T *B, int ldb, int b_col, int b_k)
{
  using namespace nvcuda;
#pragma unroll
  for (int ks = 0; ks < IG_BK; ks += 16)
    {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> af[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LB> bf[FN];
#pragma unroll
      for (int i = 0; i < FM; i++)
        wmma_load_shared (af[i], A + i * 16 * lda + ks, lda);
#pragma unroll
      for (int j = 0; j < FN; j++)
        wmma_load_shared (bf[j], B + j * 16 * b_col + ks * b_k, ldb);
#pragma unroll
      for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++)
          wmma::mma_sync (acc[i][j], af[i], bf[j], acc[i][j]);
    }
}

/* Geometry of the cp.async implicit GEMMs (conv2d_nhwc.cu, conv2d_pointwise.cu): BM x IG_BN tiles, 4 warps
 * (2 x 2) of (BM/2) x 32, 128 threads; A rows of CP_LDA elements (one K slice, padded to 80 bytes against bank
 * conflicts), B_STAGE elements of B per stage in the kernel's own layout; the float C tile reuses the stages.
 * STAGES: K slices in flight. 4 for 64-row tiles (about 40 KiB): the batch-1 convolutions split K until each
 * block has only ~4-5 slices, so nearly all of a block's loads are issued at once; 3 for 128 rows (<= 48 KiB). */
#define CP_LDA (IG_BK + 8)
template <int BM, int B_STAGE_ELEMS>
struct CpAsyncTile {
  static constexpr int THREADS = 128;
  static constexpr int STAGES = BM == 64 ? 4 : 3;
  static constexpr int FM = BM / 2 / 16, FN = IG_BN / 2 / 16;
  static constexpr int A_STAGE = BM * CP_LDA, B_STAGE = B_STAGE_ELEMS;                /* elements */
  static constexpr int SMEM_AB = STAGES * (A_STAGE + B_STAGE) * 2;                    /* bytes */
  static constexpr int LDC = IG_BN + 4;
  static constexpr int SMEM_C = BM * LDC * 4;
  static constexpr int SMEM = SMEM_AB > SMEM_C ? SMEM_AB : SMEM_C;
  static constexpr int A_COPIES = BM * IG_BK / 8 / THREADS;                          /* 16-byte copies */
  static constexpr int B_COPIES = IG_BN * IG_BK / 8 / THREADS;
  static_assert (SMEM <= 48 * 1024, "dynamic shared memory without the opt-in attribute");
};

/* What cp_async_k_loop runs between a slice's copies landing and the barrier that shows them to the block:
 * nothing here; conv2d_wgmma.cu passes fence.proxy.async (its tensor cores read through the async proxy). */
struct CpLandedNothing {
  __device__ __forceinline__ void operator() () const {}
};

/* The K loop of the cp.async kernels (conv2d_nhwc.cu, conv2d_pointwise.cu, conv2d_wgmma.cu) over nkt slices in
 * STAGES shared stages: load (stage, i) issues slice i's copies, mma (stage) multiplies the slice in it.
 * Slices 0 .. AHEAD-1 go in flight first; every iteration then commits exactly one group (maybe empty), so
 * "all but the newest AHEAD-1 groups done" always means "slice i has landed"; then landed () and a barrier.
 * The copies of slice i + AHEAD go to the stage of slice i + AHEAD - STAGES: with AHEAD = STAGES - 1 (the
 * default) slice i - 1's, so mma must be done with its stage when it returns; with AHEAD = STAGES - 2 slice
 * i - 2's, so mma may leave work reading its stage (wgmma) until the end of the next slice's mma. Ends with
 * every copy landed and a barrier, so the stages may be reused (the C tile). */
template <int STAGES, int AHEAD = STAGES - 1, typename Load, typename Mma, typename Landed = CpLandedNothing>
__device__ __forceinline__ void
cp_async_k_loop (int nkt, Load load, Mma mma, Landed landed = Landed ())
{
  static_assert (AHEAD >= 1 && AHEAD <= STAGES - 1, "slices in flight ahead");
#pragma unroll
  for (int st = 0; st < AHEAD; st++)
    {
      if (st < nkt)
        load (st, st);
      __pipeline_commit ();
    }
  for (int i = 0; i < nkt; i++)          /* slice i lives in stage i % STAGES */
    {
      __pipeline_wait_prior (AHEAD - 1);
      landed ();
      __syncthreads ();                  /* slice i visible to all; everyone is done with the stage refilled next */
      const int next = i + AHEAD;
      if (next < nkt)
        load (next % STAGES, next);
      __pipeline_commit ();
      mma (i % STAGES);
    }
  __pipeline_wait_prior (0);
  __syncthreads ();
}

/* cp_async_k_loop for kernels that have not waited for the previous kernel yet: load_a (stage, i) issues
 * slice i's weight copies, load_b (stage, i) its activation copies. With prefetch, the weights of slices 0 ..
 * AHEAD-1 are issued before grid_dependency_wait (weights never depend on an earlier kernel, so with
 * programmatic dependent launch they land while that kernel finishes) and join the first group, which the
 * first iteration waits for anyway; the group count stays as cp_async_k_loop's. */
template <int STAGES, int AHEAD = STAGES - 1, typename LoadA, typename LoadB, typename Mma,
          typename Landed = CpLandedNothing>
__device__ __forceinline__ void
cp_async_k_loop_prefetch (int nkt, bool prefetch, LoadA load_a, LoadB load_b, Mma mma, Landed landed = Landed ())
{
  if (prefetch)
#pragma unroll
    for (int st = 0; st < AHEAD; st++)
      if (st < nkt)
        load_a (st, st);
  grid_dependency_wait ();
  cp_async_k_loop<STAGES, AHEAD> (nkt, [&] (int st, int i) {
    if (!prefetch || i >= AHEAD)
      load_a (st, i);
    load_b (st, i);
  }, mma, landed);
}

/* The warp's sub-tile into the float tile C (row stride ldc) at its top-left corner. */
template <int FM, int FN>
__device__ __forceinline__ void
warp_acc_store (float *C, int ldc, const ConvAccFrag (&acc)[FM][FN])
{
#pragma unroll
  for (int i = 0; i < FM; i++)
#pragma unroll
    for (int j = 0; j < FN; j++)
      nvcuda::wmma::store_matrix_sync (C + i * 16 * ldc + j * 16, acc[i][j], ldc, nvcuda::wmma::mem_row_major);
}

/* Where the channels-last kernels' K slice (one filter tap, STEP channels) starts in the filter: tap (ky, kx),
 * first channel ci0. Their K loops issue a block's slices in order, one at a time, so NhwcSliceCopies advances
 * it by one slice per copy (no wrap past the filter's end: slices stop there) instead of costing two integer
 * divisions per slice (sm_90a: 27 of the 128-row tile's 262 instructions per slice, 42 of the 64-row's 205,
 * 50 of the wgmma tile's 364). Needs Cin % STEP == 0 (a slice never spans two taps: the kernels' condition).
 * at (s, k0) says where slice k0 starts: the emulator checks every advanced position against it. */
struct SliceTap {
  int ci0, ky, kx;

  __device__ __forceinline__ static SliceTap
  at (const ConvShape &s, int k0)
  {
    const int tap = k0 / s.Cin, ky = tap / s.k;
    return SliceTap { k0 - tap * s.Cin, ky, tap - ky * s.k };
  }

  __device__ __forceinline__ void
  advance (const ConvShape &s, int step)
  {
    ci0 += step;
    if (ci0 == s.Cin)
      {
        ci0 = 0;
        if (++kx == s.k)
          {
            kx = 0;
            ky++;
          }
      }
  }
};

/* The weight rows' cp.async copies one thread makes for a K slice of the cp.async kernels: the 16-byte chunk
 * tid % CHUNKS (8 K values) of rows tid / CHUNKS + 32 i, i < NA (output channels m0 + row; past Cout zero
 * fill, nothing read). The row pointers are worked out once, so a slice's copy is one add. */
template <typename T, int NA, int CHUNKS = 4>
struct WeightSliceCopies {
  const T *wrow[NA];                     /* weight row m0 + r's chunk (row 0's past Cout: never read) */
  int m_row;                             /* output channel of this thread's row 0 */

  __device__ __forceinline__
  WeightSliceCopies (const T *Wt, const ConvShape &s, int m0, int tid)
  {
    m_row = m0 + tid / CHUNKS;
#pragma unroll
    for (int i = 0; i < NA; i++)
      wrow[i] = Wt + (m_row + 32 * i < s.Cout ? (size_t) (m_row + 32 * i) * s.ldw : 0) + tid % CHUNKS * 8;
  }

  /* the copies of the slice at K offset k0; dst (row) gives the chunk's shared-memory address */
  template <typename Dst>
  __device__ __forceinline__ void
  issue (const ConvShape &s, int k0, int tid, Dst dst) const
  {
#pragma unroll
    for (int i = 0; i < NA; i++)
      __pipeline_memcpy_async (dst (tid / CHUNKS + 32 * i), wrow[i] + k0, 16, m_row + 32 * i < s.Cout ? 0 : 16);
  }
};

/* The cp.async copies one thread makes for a K slice (one filter tap, 8 CHUNKS channels) of the channels-last
 * kernels: the 16-byte chunk tid % CHUNKS (8 channels) of tile rows tid / CHUNKS + 32 i (so 32 CHUNKS threads:
 * 128 with IG_BK's 4 chunks, conv2d_nhwc.cu; 256 with 8, conv2d_wgmma.cu), for NA weight rows (output channels m0 + row)
 * and NB pixel rows (output pixels p0 + row, across the batch). Outside the image or past Cout, zero
 * fill (nothing is read from the source then). With s.up, input pixel (iy, ix) is pixel (iy / 2, ix / 2) of
 * xh, the half-size image (upsample_conv2d). Where a chunk lands is the kernel's: dst_a (row) and dst_b (row)
 * give its shared-memory address.
 * What does not change from slice to slice is worked out once here (row pointers, the pixel's offset in its
 * image), so a slice's copy costs an add and a bounds test: the K loop issues every instruction of it per slice,
 * and at sm_90a address arithmetic was most of the loop (cuda_conv_nhwc_fits keeps an image's elements, H W
 * Cin, within int). */
template <typename T, int NA, int NB, int CHUNKS = 4>
struct NhwcSliceCopies {
  WeightSliceCopies<T, NA, CHUNKS> weights;
  const T *image[NB];                    /* the pixel's image in xh */
  int iy0[NB], ix0[NB];                  /* its filter window's top-left input pixel; far negative past P */
  int pix_off[NB];                       /* without s.up: element offset of (iy0, ix0)'s chunk in the image */
  int chunk;
  SliceTap tap;                          /* where the next issue_b's slice starts (slices come in order) */

  /* k_first: the K offset of the first slice this thread will copy pixels for */
  __device__ __forceinline__
  NhwcSliceCopies (const T *Wt, const T *xh, const ConvShape &s, int m0, long long p0, int k_first, int tid)
    : weights (Wt, s, m0, tid), tap (SliceTap::at (s, k_first))
  {
    const int HoWo = s.Ho * s.Wo;
    const long long P = (long long) s.B * HoWo;
    chunk = tid % CHUNKS;
#pragma unroll
    for (int i = 0; i < NB; i++)
      {
        const long long p = p0 + tid / CHUNKS + 32 * i;
        const bool ok = p < P;
        const int b = ok ? (int) (p / HoWo) : 0, pix = ok ? (int) (p % HoWo) : 0;
        image[i] = xh + (size_t) b * (s.H >> s.up) * (s.W >> s.up) * s.Cin;
        iy0[i] = ok ? (pix / s.Wo) * s.stride - s.pad_top : -(1 << 29);   /* every tap then misses the image */
        ix0[i] = (pix % s.Wo) * s.stride - s.pad_left;
        pix_off[i] = ok ? (iy0[i] * s.W + ix0[i]) * s.Cin + chunk * 8 : 0;  /* used only inside the image */
      }
  }

  /* the slice at k0: its weight rows' copies (weights.issue, which may also go alone before the wait on the
   * previous kernel) and its pixel rows' */
  template <typename DstA, typename DstB>
  __device__ __forceinline__ void
  issue (const ConvShape &s, int k0, int tid, DstA dst_a, DstB dst_b)
  {
    weights.issue (s, k0, tid, dst_a);
    issue_b (s, k0, tid, dst_b);
  }

  /* the pixel rows' copies alone, of the slice at k0: the slice after the previous call's (or k_first) */
  template <typename DstB>
  __device__ __forceinline__ void
  issue_b (const ConvShape &s, int k0, int tid, DstB dst_b)
  {
#ifdef DDPM_CUDA_EMU
    const SliceTap want = SliceTap::at (s, k0);
    if (tap.ci0 != want.ci0 || tap.ky != want.ky || tap.kx != want.kx)
      emu_check_failed ("NhwcSliceCopies: the advanced slice position is not the slice's (copies issued out of order?)");
#else
    (void) k0;
#endif
    const int tap_off = (tap.ky * s.W + tap.kx) * s.Cin + tap.ci0;   /* from (iy0, ix0)'s element, without s.up */
#pragma unroll
    for (int i = 0; i < NB; i++)
      {
        const int iy = iy0[i] + tap.ky, ix = ix0[i] + tap.kx;
        const bool in = (unsigned) iy < (unsigned) s.H && (unsigned) ix < (unsigned) s.W;
        const T *src = image[i];
        if (in)
          src += s.up == 0 ? pix_off[i] + tap_off
                           : ((iy >> s.up) * (s.W >> s.up) + (ix >> s.up)) * s.Cin + tap.ci0 + chunk * 8;
        __pipeline_memcpy_async (dst_b (tid / CHUNKS + 32 * i), src, 16, in ? 0 : 16);
      }
    tap.advance (s, CHUNKS * 8);
  }
};

/* The epilogue inputs of the 4 outputs of one partial vector: row m, pixels pp0 .. pp0 + 3, those < P valid
 * (the others read pixel pp0's, always valid: no branch parts the loads). */
template <typename T>
struct ConvEpiIn4 {
  ConvEpiIn<T> e[4];
  bool ok[4];
};

template <typename T>
__device__ __forceinline__ ConvEpiIn4<T>
splitk_epi_load4 (const ConvEpi<T> &epi, const ConvShape &s, int m, long long pp0)
{
  const int HoWo = s.Ho * s.Wo;
  const long long P = (long long) s.B * HoWo;
  const int bb0 = (int) (pp0 / HoWo), pix0 = (int) (pp0 % HoWo);   /* one 64-bit division, not four */
  ConvEpiIn4<T> in;
  int bb = bb0, pix = pix0;              /* pixel pp0 + j: carried along, no division per j */
#pragma unroll
  for (int j = 0; j < 4; j++)
    {
      in.ok[j] = pp0 + j < P;
      in.e[j] = conv_epi_load (epi, s.Cout, HoWo, in.ok[j] ? bb : bb0, m, in.ok[j] ? pix : pix0);
      if (++pix == HoWo)
        {
          pix = 0;
          bb++;
        }
    }
  return in;
}

template <typename T>
__device__ __forceinline__ void
splitk_store_in4 (T *__restrict__ y, const ConvEpi<T> &epi, const ConvEpiIn4<T> &in, float4 sum)
{
  const float out[4] = { sum.x, sum.y, sum.z, sum.w };
#pragma unroll
  for (int j = 0; j < 4; j++)
    if (in.ok[j])
      conv_store_in (y, epi, out[j], in.e[j]);
}

/* The 4 outputs of one summed partial vector through the epilogue: their loads, then their stores. */
template <typename T>
__device__ __forceinline__ void
splitk_store4 (T *__restrict__ y, const ConvEpi<T> &epi, const ConvShape &s, int m, long long pp0, float4 sum)
{
  splitk_store_in4 (y, epi, splitk_epi_load4 (epi, s, m, pp0), sum);
}

/* The last block's sum of a whole tile's split-K partials (every vector valid): thread tid sums vectors
 * tid + i THREADS, 8 of them x 2 splits' loads in flight (16 float4), in split order onto the bias. */
template <typename T, int THREADS, int V4>
__device__ __forceinline__ void
splitk_sum_tile (const float4 *tile_partials, int splits, const float *__restrict__ bias, T *__restrict__ y,
                 const ConvEpi<T> &epi, const ConvShape &s, int m0, long long p0)
{
  constexpr int CHUNK = 8;
  const int tid = threadIdx.x;
#pragma unroll 1
  for (int c0 = 0; c0 < V4 / THREADS; c0 += CHUNK)
    {
      float4 sum[CHUNK];
#pragma unroll
      for (int i = 0; i < CHUNK; i++)
        {
          const float b0 = bias != NULL ? bias[m0 + (tid + (c0 + i) * THREADS) / (IG_BN / 4)] : 0.0f;
          sum[i] = make_float4 (b0, b0, b0, b0);
        }
      int z = 0;
      for (; z + 2 <= splits; z += 2)
        {
          float4 a[CHUNK], b[CHUNK];
#pragma unroll
          for (int i = 0; i < CHUNK; i++)
            {
              const int v = tid + (c0 + i) * THREADS;
              a[i] = __ldcg (tile_partials + (size_t) z * V4 + v);
              b[i] = __ldcg (tile_partials + (size_t) (z + 1) * V4 + v);
            }
#pragma unroll
          for (int i = 0; i < CHUNK; i++)
            {
              sum[i] = add4 (sum[i], a[i]);
              sum[i] = add4 (sum[i], b[i]);
            }
        }
      if (z < splits)
        {
#pragma unroll
          for (int i = 0; i < CHUNK; i++)
            sum[i] = add4 (sum[i], __ldcg (tile_partials + (size_t) z * V4 + tid + (c0 + i) * THREADS));
        }
#pragma unroll
      for (int i = 0; i < CHUNK; i++)
        {
          const int v = tid + (c0 + i) * THREADS;
          splitk_store4 (y, epi, s, m0 + v / (IG_BN / 4), p0 + (v % (IG_BN / 4)) * 4, sum[i]);
        }
    }
}

/* The same over a tile's nv valid vectors (vector u: row u / nvr, column vector u % nvr): thread tid sums
 * u = tid + i THREADS, 2 of them x 8 splits' loads in flight, so a tile with few valid vectors (small images)
 * takes few round trips. */
template <typename T, int THREADS, int V4>
__device__ __forceinline__ void
splitk_sum_valid (const float4 *tile_partials, int splits, int nvr, int nv, const float *__restrict__ bias,
                  T *__restrict__ y, const ConvEpi<T> &epi, const ConvShape &s, int m0, long long p0)
{
  constexpr int CH = 2, ZS = 8;
#pragma unroll 1
  for (int u0 = threadIdx.x; u0 < nv; u0 += CH * THREADS)
    {
      float4 sum[CH];
      int vec[CH];                      /* index in the partial tile, -1 past nv */
#pragma unroll
      for (int i = 0; i < CH; i++)
        {
          const int u = u0 + i * THREADS;
          vec[i] = u < nv ? u / nvr * (IG_BN / 4) + u % nvr : -1;
          const float b0 = vec[i] >= 0 && bias != NULL ? bias[m0 + u / nvr] : 0.0f;
          sum[i] = make_float4 (b0, b0, b0, b0);
        }
#pragma unroll 1
      for (int z = 0; z < splits; z += ZS)
        {
          float4 a[ZS][CH];
#pragma unroll
          for (int zz = 0; zz < ZS; zz++)
#pragma unroll
            for (int i = 0; i < CH; i++)
              a[zz][i] = vec[i] >= 0 && z + zz < splits ? __ldcg (tile_partials + (size_t) (z + zz) * V4 + vec[i])
                                                        : make_float4 (0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
          for (int zz = 0; zz < ZS; zz++)
            if (z + zz < splits)
#pragma unroll
              for (int i = 0; i < CH; i++)
                sum[i] = add4 (sum[i], a[zz][i]);
        }
#pragma unroll
      for (int i = 0; i < CH; i++)
        if (vec[i] >= 0)
          splitk_store4 (y, epi, s, m0 + vec[i] / (IG_BN / 4), p0 + (vec[i] % (IG_BN / 4)) * 4, sum[i]);
    }
}

/* The cluster's sum of a tile's splits: each split's float tile Cs (row stride LDC) is in its own block's
 * shared memory. After a cluster barrier, block z sums its share of the tile's valid float4 vectors (a
 * contiguous 1 / splits of them) over all splits in split order onto the bias, reading the other blocks'
 * tiles through distributed shared memory, 8 splits' loads in flight: the same additions in the same order
 * as the other two ways (so the same bits). A second barrier keeps every block's shared memory alive until
 * all have read it. */
template <typename T, int BM, int THREADS, int LDC>
__device__ __forceinline__ void
splitk_cluster_sum (const float *Cs, const float *__restrict__ bias, T *__restrict__ y, const ConvEpi<T> &epi,
                    const ConvShape &s, int m0, long long p0)
{
  constexpr int ZS = 8;
  const long long P = (long long) s.B * s.Ho * s.Wo;
  const int splits = (int) gridDim.z, z = (int) blockIdx.z;
  const int nvr = P - p0 >= IG_BN ? IG_BN / 4 : (int) ((P - p0 + 3) / 4);   /* valid vectors per row */
  const int nv = imin (BM, s.Cout - m0) * nvr;
  const int per = (nv + splits - 1) / splits, u_end = imin (nv, (z + 1) * per);
  cluster_sync ();                       /* every split's tile is in its block's shared memory */
  for (int u = z * per + (int) threadIdx.x; u < u_end; u += THREADS)
    {
      const int ml = u / nvr, pc = (u % nvr) * 4;
      const float *const mine = Cs + ml * LDC + pc;
      const ConvEpiIn4<T> in = splitk_epi_load4 (epi, s, m0 + ml, p0 + pc);   /* in flight with the splits' loads */
      const float b0 = bias != NULL ? bias[m0 + ml] : 0.0f;
      float4 sum = make_float4 (b0, b0, b0, b0);
#pragma unroll 1
      for (int z0 = 0; z0 < splits; z0 += ZS)
        {
          float4 a[ZS];
#pragma unroll
          for (int zz = 0; zz < ZS; zz++)
            a[zz] = z0 + zz < splits ? *reinterpret_cast<const float4 *> (cluster_map_shared (mine, z0 + zz))
                                     : make_float4 (0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
          for (int zz = 0; zz < ZS; zz++)
            if (z0 + zz < splits)
              sum = add4 (sum, a[zz]);
        }
      splitk_store_in4 (y, epi, in, sum);
    }
  cluster_sync ();                       /* nobody leaves while its tile may still be read */
}

/* The unsplit tile's end, 16 bytes of y at a time: y = epilogue(tile + bias), element by element as conv_store.
 * Vector u of the tile is row u / VR, pixels (u % VR) N .. + N - 1. Needs HoWo % N == 0 (then a vector lies in
 * one image and is wholly valid or wholly past P) and y and the residual 16-byte aligned. Each thread loads the
 * bias, channel bias and residual of U vectors before it stores any: one round trip per U vectors, where
 * conv_store's loop waited for one per element (64 in a row per thread at BM = 128: each load issued behind the
 * previous element's store). Loads past the tile's valid part read vector 0 (row m0, pixel p0: always valid),
 * so no branch parts them. */
template <typename T, int BM, int THREADS, int LDC>
__device__ __forceinline__ void
conv_tile_store_vec (const float *Cs, const float *__restrict__ bias, T *__restrict__ y, const ConvEpi<T> &epi,
                     const ConvShape &s, int m0, long long p0)
{
  constexpr int N = Vec16<T>::N, VR = IG_BN / N, NV = BM * VR;
  constexpr int U = NV / THREADS < 8 ? NV / THREADS : 8;
  static_assert (NV % (U * THREADS) == 0 && LDC % 4 == 0 && N % 4 == 0, "whole chunks; float4 reads of Cs");
  const int HoWo = s.Ho * s.Wo;
  const long long P = (long long) s.B * HoWo;
  const int bb0 = (int) (p0 / HoWo), pix0 = (int) (p0 % HoWo);   /* the tile's first pixel; the others by
                                                                   * 32-bit arithmetic from it */
  const bool has_cb = epi.channel_bias != NULL, has_res = epi.residual != NULL;
#pragma unroll 1
  for (int u0 = threadIdx.x; u0 < NV; u0 += U * THREADS)
    {
      size_t at[U];                     /* y's (and the residual's) index of the vector's first element */
      bool ok[U];
      float b[U], cbv[U];
      uint4 res[U];
#pragma unroll
      for (int i = 0; i < U; i++)
        {
          const int u = u0 + i * THREADS, ml = u / VR, pc = (u % VR) * N;
          ok[i] = m0 + ml < s.Cout && p0 + pc < P;
          const int m = ok[i] ? m0 + ml : m0, q = pix0 + (ok[i] ? pc : 0);
          const int bb = bb0 + q / HoWo, pix = q % HoWo;
          at[i] = ((size_t) bb * s.Cout + m) * HoWo + pix;
          b[i] = bias != NULL ? bias[m] : 0.0f;
          cbv[i] = has_cb ? to_f32<T> (epi.channel_bias[(size_t) bb * epi.cb_stride + m]) : 0.0f;
          res[i] = has_res ? *reinterpret_cast<const uint4 *> (epi.residual + at[i]) : make_uint4 (0, 0, 0, 0);
        }
#pragma unroll
      for (int i = 0; i < U; i++)
        if (ok[i])
          {
            const int u = u0 + i * THREADS, ml = u / VR, pc = (u % VR) * N;
            float c[N], r[N];
#pragma unroll
            for (int j = 0; j < N; j += 4)
              *reinterpret_cast<float4 *> (c + j) = *reinterpret_cast<const float4 *> (Cs + ml * LDC + pc + j);
            unpack16<T> (res[i], r);
#pragma unroll
            for (int j = 0; j < N; j++)
              c[j] = conv_epi_apply (epi, c[j] + b[i], cbv[i], r[j]);
            store16<T> (y + at[i], c);
          }
    }
}

/* The end of an implicit-GEMM block: its BM x IG_BN float tile is in shared memory Cs (row stride LDC,
 * written and synchronised; dynamic shared memory where sk.cluster). Without a K split (sk all zero): y =
 * epilogue(tile + bias), coalesced along pixels, 16 bytes at a time where it can (conv_tile_store_vec). With
 * one (SplitK says how): the cluster sums its tiles (splitk_cluster_sum); or the tile's float4 vectors that
 * hold valid outputs go to its own contiguous slot of partial [tile][split][BM * IG_BN] (the others are
 * neither written nor read); then, with counters, the last of the tile's blocks to arrive sums the splits (in
 * split order, so timing does not change the result) and stores y; without counters conv_splitk_reduce_kernel
 * does that in a second launch. */
template <typename T, int BM, int THREADS, int LDC>
__device__ __forceinline__ void
conv_tile_epilogue (const float *Cs, const float *__restrict__ bias, T *__restrict__ y, const ConvEpi<T> &epi,
                    const SplitK &sk, const ConvShape &s, int m0, long long p0)
{
  const int tid = threadIdx.x;
  const int HoWo = s.Ho * s.Wo;
  const long long P = (long long) s.B * HoWo;
  float *__restrict__ const partial = sk.partial;
  int *__restrict__ const counters = sk.counters;
  if (sk.cluster)
    {
#if CLUSTER_COMPILED
      splitk_cluster_sum<T, BM, THREADS, LDC> (Cs, bias, y, epi, s, m0, p0);
#else
      __trap ();                         /* sm_80-89: conv_cluster_max is 0 there */
#endif
      return;
    }
  if (partial == NULL)
    {
      if (HoWo % Vec16<T>::N == 0 && aligned16 (y) && (epi.residual == NULL || aligned16 (epi.residual)))
        {
          conv_tile_store_vec<T, BM, THREADS, LDC> (Cs, bias, y, epi, s, m0, p0);
          return;
        }
      for (int e = tid; e < BM * IG_BN; e += THREADS)
        {
          const int ml = e / IG_BN, pc = e % IG_BN, m = m0 + ml;
          const long long pp = p0 + pc;
          if (m < s.Cout && pp < P)
            {
              const int bb = (int) (pp / HoWo), pix = (int) (pp % HoWo);
              conv_store (y, epi, Cs[ml * LDC + pc] + (bias != NULL ? bias[m] : 0.0f), s.Cout, HoWo, bb, m, pix);
            }
        }
      return;
    }

  /* split K: the partial tile to scratch, only its float4 vectors that hold a valid output (a 4x4 layer at batch
   * 1 fills 16 of the 64 pixel columns, a last row tile maybe a few rows): vector u of the nv valid ones is
   * row u / nvr, columns 4 (u % nvr) .. + 3 ... */
  constexpr int V4 = BM * IG_BN / 4;                         /* float4 per tile */
  /* tiles of BM channels x IG_BN pixels, row-major (conv_splitk_reduce_kernel's order); one block may end
   * several (the wgmma tile's two pixel halves) */
  const int tile = (int) ((m0 / BM) * ((P + IG_BN - 1) / IG_BN) + p0 / IG_BN);
  const int splits = (int) gridDim.z;
  const int nvr = P - p0 >= IG_BN ? IG_BN / 4 : (int) ((P - p0 + 3) / 4);   /* valid vectors per row */
  const int nv = imin (BM, s.Cout - m0) * nvr;
  float4 *const tile_partials = reinterpret_cast<float4 *> (partial) + (size_t) tile * splits * V4;
  for (int u = tid; u < nv; u += THREADS)
    {
      const int ml = u / nvr, pc = (u % nvr) * 4;
      tile_partials[(size_t) blockIdx.z * V4 + ml * (IG_BN / 4) + pc / 4] = *reinterpret_cast<const float4 *> (Cs + ml * LDC + pc);
    }
  if (counters == NULL)
    return;                              /* conv_splitk_reduce_kernel finishes */
  /* ... and the last of the tile's blocks to get here sums all of them (the pattern of CUDA's
   * threadFenceReduction sample: stores, fence, counter; the last block fences and reads through L2) */
  __shared__ int s_last;
  __threadfence ();
  __syncthreads ();
  if (tid == 0)
    {
      const int arrived = atomicAdd (&counters[tile], 1);
      s_last = arrived == splits - 1;
      if (s_last)
        counters[tile] = 0;              /* every split has arrived: ready for the next launch */
    }
  __syncthreads ();
  if (!s_last)
    return;
  __threadfence ();
  /* The sum is latency-bound (one block reads up to splits x 16 or 32 KiB from L2): 16 independent 16-byte
   * loads in flight per thread, 8 vectors x 2 splits at a time for a whole tile, else 2 vectors x 8 splits
   * over the valid ones (small images: fewer round trips). Splits are added in order 0, 1, ..., so the
   * result does not depend on which block came last. */
  if (nv == V4)
    splitk_sum_tile<T, THREADS, V4> (tile_partials, splits, bias, y, epi, s, m0, p0);
  else
    splitk_sum_valid<T, THREADS, V4> (tile_partials, splits, nvr, nv, bias, y, epi, s, m0, p0);
}

/* conv2d_nhwc.cu: whether the channels-last kernel takes this shape (fp16/bf16, Cin a multiple of IG_BK, k 1
 * or 3); the bytes of its channels-last copy of x; that copy (x (B, Cin, H, W) -> xh (B, H, W, Cin)); and
 * the kernel on grid (P / 64, Cout / BM, splits), BM 128 when large, with split K as conv2d.cu's (sk.cluster:
 * as one cluster per tile). */
bool cuda_conv_nhwc_fits (const CudaBackend *cb, const ConvShape &s);
size_t cuda_conv_nhwc_bytes (const CudaBackend *cb, const ConvShape &s);
void cuda_conv_nhwc_transpose (CudaBackend *cb, const void *x, void *xh, const ConvShape &s);
void cuda_conv_nhwc_launch (CudaBackend *cb, bool large, dim3 grid, const DdpmLinearW *w, const void *xh, void *y,
                            const SplitK &sk, const ConvShape &s, int kps, const DdpmConvEpilogue *epi);

/* conv2d_nhwc.cu: the 128 x 128 mma.sync tile on the channels-last copy xh (same fit, no K split), grid
 * (P / 128, Cout / 128). */
void cuda_conv_nhwc_mma_launch (CudaBackend *cb, const DdpmLinearW *w, const void *xh, void *y, const ConvShape &s,
                                const DdpmConvEpilogue *e);

/* conv2d_wgmma.cu (cuda_conv_wgmma_prepare in cuda_backend.cuh): whether its kernel takes this shape (that, and
 * cuda_conv_nhwc_fits with Cin % 64 == 0); its tiles (128 x bn, bn 128 or 256 pixels) and K slices (of 64) for
 * the shape; and the convolution on the channels-last copy xh in 128 x bn tiles, the same epilogue: K split over
 * `splits` blocks of kps slices each (grid z), its partials at sk.partial summed by a second launch (held back
 * or not; no counters, no clusters), or unsplit (splits 1, sk all zero). bn 256 needs conv_wgmma_wide_ready
 * unless $DDPM_CUDA_WGMMA_BN=256 prepared it. */
bool cuda_conv_wgmma_fits (const CudaBackend *cb, const ConvShape &s);
long long cuda_conv_wgmma_tiles (const ConvShape &s, int bn);
int cuda_conv_wgmma_slices (const ConvShape &s);
void cuda_conv_wgmma_launch (CudaBackend *cb, const DdpmLinearW *w, const void *xh, void *y, const SplitK &sk, int bn,
                             int splits, int kps, const ConvShape &s, const DdpmConvEpilogue *e);

/* conv2d_pointwise.cu: whether the cp.async kernel on NCHW takes this 1x1 convolution (fp16/bf16, stride 1, no
 * padding, Cin % 32 == 0, Ho Wo % 8 == 0; unless $DDPM_CUDA_CONV_PW=0), and the kernel on grid (P / 64, Cout /
 * BM, splits) as cuda_conv_nhwc_launch, reading x itself (16-byte aligned). */
bool cuda_conv_pointwise_fits (const CudaBackend *cb, const ConvShape &s);
void cuda_conv_pointwise_launch (CudaBackend *cb, bool large, dim3 grid, const DdpmLinearW *w, const void *x, void *y,
                                 const SplitK &sk, const ConvShape &s, int kps, const DdpmConvEpilogue *epi);

/* Each implicit-GEMM file: lets its cluster kernels launch with more than 8 blocks per cluster (for
 * cuda_conv_cluster_probe); false if any refuses. */
bool cuda_conv_implicit_allow_large_clusters (void);
bool cuda_conv_pointwise_allow_large_clusters (void);

/* conv2d_direct.cu: whether the direct CUDA-core kernel takes this shape (fp16/bf16, Cout <= 8 or K <= 32),
 * and the convolution with it (bias and epilogue included; no scratch); x_f32 / y_f32: that end is float32
 * (rounded through the activation type, as cast_in / cast_out around it would). */
bool cuda_conv_direct_fits (const CudaBackend *cb, const ConvShape &s);
void cuda_conv_direct (CudaBackend *cb, const DdpmLinearW *w, const void *x, bool x_f32, void *y, bool y_f32,
                       const ConvShape &s, const DdpmConvEpilogue *epi);
/* Whether the direct kernel takes s with a float32 end in one launch (its block shape has that instance). */
bool cuda_conv_direct_f32_end_fits (const CudaBackend *cb, const ConvShape &s);
