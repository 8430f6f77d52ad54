/* conv2d_wgmma.cu: the channels-last implicit-GEMM convolution on Hopper's wgmma (sm_90a: H100 / H200), for
 * the large shapes (cifar10-32 at batch 128, celebahq-256) where the tiles fill the GPU, alone or with K split
 * over blocks (celebahq-256's 128 x 128 and 64 x 64 levels at batch 1: 128 and 64 tiles). conv2d.cu plans it
 * ($DDPM_CUDA_CONV=wgmma where its tiles fill a wave, $DDPM_CUDA_CONV_TILE=wgmma wherever it fits: tests) on
 * the same channels-last copy xh as conv2d_nhwc.cu. A split's blocks (grid z) take kps slices each and write
 * float partials, summed as the other tiles' are (conv_splitk_reduce_kernel, or a GroupNorm holding it back).
 *
 * Tile: 128 output channels (A: weight rows) x 128 pixels (B: xh rows) per block of 2 warpgroups (256
 * threads), each warpgroup 64 channels x 128 pixels: 64 float accumulators per thread. Or, with
 * $DDPM_CUDA_WGMMA_BN=256, 128 x 256 (m64n256k16, 128 accumulators, 48 KiB stages, the 4-stage pipeline, one
 * block per SM): 85 flops per operand byte copied from L2 instead of 64. Why (an estimate, untimed): at L2's
 * ~6 TB/s a 128 x 128 tile's copies cap it near ~380 TFLOP/s, a 128 x 256 tile's near ~510. K slices of 64 (one
 * filter tap's 64 channels: a 128-byte row, the 128-byte swizzle's width; so Cin % 64 == 0), 3 stages of 32
 * KiB (two blocks per SM; or 4 stages, one block, with DDPM_CUDA_WGMMA_OVERLAP=1) filled by 16-byte cp.async (NhwcSliceCopies with 8 chunks per row, zero fill at
 * the image border), 4 wgmma.mma_async per warpgroup per slice. Why: ~100-130 TFLOP/s is what our mma.sync /
 * WMMA tiles reach at these shapes (cifar b128 17 ms against PyTorch's 12.3 and the issue's 6).
 *
 * Pipeline (conv2d.cuh's cp_async_k_loop) per slice i: this thread's copies of slice i land (wait),
 * fence.proxy.async (the copies were generic-proxy writes, wgmma reads through the async proxy), barrier (all
 * copies of slice i visible, and both warpgroups done with the stage the next copies go to), copies of slice
 * i + D into that stage, then the wgmmas of slice i, committed, and a wait until at most INFLIGHT groups are
 * in flight. INFLIGHT 0 (3
 * stages, D = 2): the tensor cores idle from each slice's last wgmma to the next slice's first. INFLIGHT 1 (4
 * stages, D = 2): slice i's wgmmas still run while the warpgroup waits for slice i + 1 and passes the barrier;
 * the copies then go to slice i - 2's stage, whose wgmmas the wait at the end of slice i - 1 finished. */
#include "conv2d.cuh"
#include "wgmma.cuh"

#define WG_BM 128                        /* output channels per tile (A rows) */
#define WG_BK 64                         /* K per slice: one tap's 64 channels, 128 bytes */
#define WG_THREADS 256

/* The tile's sizes for BN pixels (B rows: 128, or 256 with $DDPM_CUDA_WGMMA_BN=256). */
template <int BN>
struct WgTile {
  static constexpr int A_BYTES = WG_BM * WG_BK * 2, B_BYTES = BN * WG_BK * 2;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;   /* 32 or 48 KiB, a multiple of 1024 */
  static constexpr int LDC = BN + 4;                      /* the float C tile's row stride */
  static constexpr int ACC = BN / 2;                      /* accumulators per thread (64 x BN per warpgroup) */
  static constexpr int A_COPIES = WG_BM * WG_BK / 8 / WG_THREADS, B_COPIES = BN * WG_BK / 8 / WG_THREADS;
};

/* Dynamic shared memory of the kernel with STAGES stages: the stages + the 1024-byte alignment. */
static constexpr size_t
wg_smem (int bn, int stages)
{
  return (size_t) stages * (WG_BM + bn) * WG_BK * 2 + 1024;
}

/* Byte offset of 16-byte chunk c of row r in a 128-byte-swizzled operand tile (wgmma.cuh's layout). */
__device__ __forceinline__ int
wg_swizzle (int r, int c)
{
  return r * 128 + ((c ^ (r & 7)) << 4);
}

template <typename T, int BN, int STAGES, int INFLIGHT>
__global__ void __launch_bounds__ (WG_THREADS, BN == 128 ? 2 : 1)   /* BN 128: two blocks per SM (3 stages),
                                                                      * <= 128 registers; BN 256: 128 accumulators */
conv_nhwc_wgmma_kernel (const T *__restrict__ Wt, const float *__restrict__ bias, const T *__restrict__ xh,
                        T *__restrict__ y, SplitK sk, ConvShape s, int kps, ConvEpi<T> epi)
{
#if WGMMA_COMPILED
  /* grid_dependency_wait: after the first weight copies */
  typedef WgTile<BN> G;
  static_assert (WG_BM * G::LDC * 4 <= STAGES * G::STAGE_BYTES, "the float C tile reuses the stages");
  DYNAMIC_SMEM (smem_raw);
  unsigned char *const smem = smem_raw + ((1024 - (smem_address (smem_raw) & 1023)) & 1023);
  const uint32_t smem_at = smem_address (smem);
  float *const Cs = reinterpret_cast<float *> (smem);                   /* [WG_BM][G::LDC], after the K loop */

  const int tid = threadIdx.x, wg = tid >> 7;
  const int m0 = blockIdx.y * WG_BM;
  const long long p0 = (long long) blockIdx.x * BN;
  const int kt_begin = blockIdx.z * kps, nkt = imin (kps, s.K / WG_BK - kt_begin);   /* this split's slices (>= 1) */
  /* 16-byte copies per thread: A 4, B 4 (BN 128) or 8 */
  NhwcSliceCopies<T, G::A_COPIES, G::B_COPIES, 8> copies (Wt, xh, s, m0, p0, kt_begin * WG_BK, tid);
  const int chunk = copies.chunk;
  auto load_a = [&] (int st, int kt) {
    unsigned char *As = smem + st * G::STAGE_BYTES;
    copies.weights.issue (s, (kt_begin + kt) * WG_BK, tid,
                          [&] (int r) { return reinterpret_cast<T *> (As + wg_swizzle (r, chunk)); });
  };
  auto load_b = [&] (int st, int kt) {                   /* in order of kt, as NhwcSliceCopies needs */
    unsigned char *Bs = smem + st * G::STAGE_BYTES + G::A_BYTES;
    copies.issue_b (s, (kt_begin + kt) * WG_BK, tid,
                    [&] (int n) { return reinterpret_cast<T *> (Bs + wg_swizzle (n, chunk)); });
  };

  float acc[G::ACC];
#pragma unroll
  for (int i = 0; i < G::ACC; i++)
    acc[i] = 0.0f;

  /* the shared K loop (first weight slices before the wait on the previous kernel); with INFLIGHT 1 the copies
   * run one slice less ahead, so the stage they refill is one whose wgmmas the previous wait finished */
  static_assert (INFLIGHT == 0 || INFLIGHT == 1, "wgmma groups left in flight");
  cp_async_k_loop_prefetch<STAGES, STAGES - 1 - INFLIGHT> (nkt, s.prefetch != 0, load_a, load_b, [&] (int st) {
    /* this warpgroup's rows and the pixels; step ks starts 32 bytes on, which is + 2 in the descriptors'
     * address field (shared addresses are below 2^18, so that field never carries) */
    const uint64_t a_desc = wgmma_desc_sw128 (smem_at + st * G::STAGE_BYTES + wg * 64 * 128);
    const uint64_t b_desc = wgmma_desc_sw128 (smem_at + st * G::STAGE_BYTES + G::A_BYTES);
    wgmma_fence_regs (acc);
    wgmma_fence ();
#pragma unroll
    for (int ks = 0; ks < WG_BK / 16; ks++)
      wgmma_m64k16<T> (acc, a_desc + 2 * ks, b_desc + 2 * ks, 1);
    wgmma_commit ();
    wgmma_wait<INFLIGHT> ();
    wgmma_fence_regs (acc);
  }, [] { fence_proxy_async_shared (); });
  wgmma_wait<0> ();
  wgmma_fence_regs (acc);
  __syncthreads ();                      /* both warpgroups' last wgmmas done: the C tile reuses the stages */

  /* accumulator fragments into Cs: warp w of warpgroup wg holds channel rows 64 wg + 16 w + lane / 4 (+ 8) */
  const int warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < G::ACC; i++)
    {
      const int j = i >> 2, e = i & 3;
      Cs[(wg * 64 + warp * 16 + g + (e >= 2 ? 8 : 0)) * G::LDC + j * 8 + 2 * t + (e & 1)] = acc[i];
    }
  __syncthreads ();
  /* the shared end, in 64-pixel parts (it writes IG_BN pixels per tile row; a split's partials go to the
   * parts' own tiles), a later part only where it holds pixels (its tile would lie past the partials).
   * Partials only: the last block's sum and the cluster's would take the 128-pixel kernel past 128 registers
   * (12-byte spills) */
  const SplitK part = { sk.partial, nullptr, 0 };
  const long long P = (long long) s.B * s.Ho * s.Wo;
#pragma unroll 1
  for (int n0 = 0; n0 < BN && p0 + n0 < P; n0 += IG_BN)
    conv_tile_epilogue<T, WG_BM, WG_THREADS, G::LDC> (Cs + n0, bias, y, epi, part, s, m0, p0 + n0);
#else
  grid_dependency_wait ();
  __trap ();                             /* not built for sm_90a: cuda_conv_wgmma_prepare never allows a launch */
#endif
}

/* Writes 1 to *flag where the running code has wgmma (sm_90a machine code on a cc 9.0 device). */
__global__ void
wgmma_probe_kernel (int *flag)
{
  grid_dependency_wait ();
  *flag = WGMMA_COMPILED;
}

/* The kernel's pipelines: 128 pixels, 3 stages, each slice's wgmmas finished before the next barrier (two blocks
 * per SM); 128 pixels, 4 stages with one group left in flight ($DDPM_CUDA_WGMMA_OVERLAP=1; one block per SM);
 * 256 pixels ($DDPM_CUDA_WGMMA_BN=256: 128 accumulators per thread, one block per SM), always the latter. */
template <typename T, typename Body>
static auto
wg_with_pipeline (const CudaBackend *cb, int bn, Body body)
{
  if (bn == 256)
    return body (conv_nhwc_wgmma_kernel<T, 256, 4, 1>, wg_smem (256, 4));
  return cb->wgmma_overlap ? body (conv_nhwc_wgmma_kernel<T, 128, 4, 1>, wg_smem (128, 4))
                           : body (conv_nhwc_wgmma_kernel<T, 128, 3, 0>, wg_smem (128, 3));
}

bool
cuda_conv_wgmma_prepare (CudaBackend *cb)
{
  auto bytes_of = [] (auto, size_t bytes) { return bytes; };
  const size_t smem = wg_with_pipeline<__half> (cb, cb->wgmma_bn, bytes_of);
  cb->conv_wgmma_wide_ready = FALSE;
  if (cb->act_type == CT_F32 || cb->cc_major != 9 || cb->cc_minor != 0 || cb->smem_per_block_optin < smem)
    return false;
  int flag = 0;
  bool ok = launch_status (cb, dim3 (1), dim3 (1), 0, 1, wgmma_probe_kernel, (int *) cb->counter) == cudaSuccess
            && cudaMemcpyAsync (&flag, cb->counter, sizeof flag, cudaMemcpyDeviceToHost, cb->stream) == cudaSuccess
            && cudaStreamSynchronize (cb->stream) == cudaSuccess && flag == 1;
  auto allow = [] (auto kernel, size_t bytes) {
    return cudaFuncSetAttribute ((const void *) kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int) bytes)
           == cudaSuccess;
  };
  ok = ok && wg_with_pipeline<__half> (cb, cb->wgmma_bn, allow)
       && wg_with_pipeline<__nv_bfloat16> (cb, cb->wgmma_bn, allow);
  /* the 128 x 256 pipeline too, for picks that name it (TILE_WGMMA_WIDE) whatever $DDPM_CUDA_WGMMA_BN says */
  cb->conv_wgmma_wide_ready = ok && cb->smem_per_block_optin >= wg_with_pipeline<__half> (cb, 256, bytes_of)
                              && wg_with_pipeline<__half> (cb, 256, allow)
                              && wg_with_pipeline<__nv_bfloat16> (cb, 256, allow);
  cudaGetLastError ();                   /* a failed probe leaves no error behind */
  return ok;
}

bool
cuda_conv_wgmma_fits (const CudaBackend *cb, const ConvShape &s)
{
  return cb->conv_wgmma_ready && s.Cin % WG_BK == 0 && cuda_conv_nhwc_fits (cb, s)   /* so K % WG_BK == 0 too */
         && (s.Cout + WG_BM - 1) / WG_BM <= 65535;
}

long long
cuda_conv_wgmma_tiles (const ConvShape &s, int bn)
{
  const long long P = (long long) s.B * s.Ho * s.Wo;
  return (P + bn - 1) / bn * ((s.Cout + WG_BM - 1) / WG_BM);
}

int
cuda_conv_wgmma_slices (const ConvShape &s)
{
  return s.K / WG_BK;
}

void
cuda_conv_wgmma_launch (CudaBackend *cb, const DdpmLinearW *w, const void *xh, void *y, const SplitK &sk, int bn,
                        int splits, int kps, const ConvShape &s, const DdpmConvEpilogue *e)
{
  const long long P = (long long) s.B * s.Ho * s.Wo;
  const dim3 grid ((unsigned) ((P + bn - 1) / bn), (unsigned) ceil_div (s.Cout, WG_BM),
                   (unsigned) splits);
  if (sk.counters != nullptr || sk.cluster != 0)
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE, "conv2d: the wgmma tile's K split is summed by a second launch only");
      return;
    }
  ConvShape sp = s;
  sp.prefetch = cb->conv_prefetch ? 1 : 0;
  auto run = [&] (auto t) {
    using T = decltype (t);
    wg_with_pipeline<T> (cb, bn, [&] (auto kernel, size_t smem) {
      launch (cb, bn == 256 ? "conv_nhwc_wgmma_wide" : "conv_nhwc_wgmma", grid, WG_THREADS, smem, kernel,
              (const T *) w->weight, (const float *) w->bias, (const T *) xh, (T *) y, sk, sp, kps,
              conv_epi<T> (e, s.Cout));
    });
  };
  if (cb->act_type == CT_F16)           /* fp16 / bf16 only (cuda_conv_wgmma_prepare) */
    run (__half ());
  else
    run (__nv_bfloat16 ());
}
