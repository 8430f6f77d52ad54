/* flash_split.cu: the mma.sync attention core for few blocks (batch 1 at 16 x 16 tokens: 16 query tiles
 * for 132 SMs): the keys of one 16-query tile are split across the block's warps, so no warp repeats
 * another's score work, and the softmax is exact (every key of the tile is in the block at once).
 *
 * Why: flash_attention.cu gives each warp of a query tile all the keys and a slice of the output dims, so
 * at cifar10-32's 256 tokens x d = 256 each of 4 warps computes the same 16 x 256 scores (512 mma.sync
 * each) and the block runs 16 key chunks with 4 barriers each: 37 us per call on the H100 (fcae280's trace),
 * the largest single item of a batch-1 forward. Here warp w owns keys [w KW, w KW + KW): 16 x KW scores,
 * then P (16 x KW) V^T for all output dims, partial sums that meet in shared memory in warp order.
 *
 * Math and layouts as flash_attention.cu (its header): Q, K, V (d x HW) per bh at bh * stride, bq added to Q
 * as it is staged, bk dropped, bv added to the normalised output, O as (B, C, HW); with one head the out
 * projection, bias, residual and scale too (flash_common.cuh).
 *
 * Block: W = HW / KW warps (KW = 16, 32 or 64 keys each, W <= 8), one 16-query tile of one bh; grid
 * (HW / 16, B * heads). Dynamic shared memory:
 *   Qs [d][16 + 8]          Q + bq, then the normalised O (the output's staging / the out projection's B)
 *   R  [2][DK][HW + 8]      chunks of DK rows (dims) of K, then of V, by cp.async, double-buffered: the
 *                           next chunk lands while this one is used; later the out projection's Wo chunks
 *   Pp [W][16][DK + 1]      float partial O of each warp for one V chunk (+1: conflict-free column reads)
 *   red [2][W][16], linv[16] row maxima and sums per warp; 1 / l per query
 * Sums over warps run in warp order (no atomics): the result does not depend on timing. */
#include "flash_common.cuh"

#define FS_MAX_WARPS 8
#define FS_MAX_KW 64                    /* keys per warp at most (the score accumulator: 32 floats) */

struct FlashSplitPlan {
  int kw, warps, dk, ds;                /* keys per warp, warps, dims per K / V chunk, out channels per warp */
  size_t smem;
};

/* Byte offsets of the shared regions (each 16-byte aligned). */
struct FsLayout {
  size_t r, pp, red, total;
};

static inline __host__ __device__ FsLayout
fs_layout (int d, int HW, int warps, int dk, bool out, size_t act)
{
  FsLayout l;
  const size_t q = act * (size_t) d * (16 + FM_PAD);
  size_t r = act * 2 * (size_t) dk * (HW + FM_PAD);
  const size_t wo = out ? act * fm_out_proj_elems (d) : 0;
  if (wo > r)
    r = wo;
  l.r = q;
  l.pp = l.r + r;
  l.red = l.pp + (((size_t) warps * 16 * (dk + 1) * sizeof (float) + 15) & ~(size_t) 15);
  l.total = l.red + (2 * (size_t) warps * 16 + 16) * sizeof (float);
  return l;
}

/* grid (HW / 16, B * heads), block 32 W; HW = W kw, d % dk == 0, dk % 16 == 0; with Wo: C = d = W DS. */
template <typename T, int DS>
__global__ void __launch_bounds__ (32 * FS_MAX_WARPS)
flash_split_kernel (const T *__restrict__ Q, const T *__restrict__ K, const T *__restrict__ V, T *__restrict__ O,
                    const float *__restrict__ bq, const float *__restrict__ bv, int HW, int d, int heads, int C,
                    long long stride, float inv_sqrt_d, int kw, int dk, const T *__restrict__ Wo, int ldw,
                    const float *__restrict__ bo, const T *residual, T *y, float scale)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  constexpr int LQ = 16 + FM_PAD;
  DYNAMIC_SMEM (smem);
  const int W = blockDim.x >> 5, LR = HW + FM_PAD, PL = dk + 1;
  const FsLayout lay = fs_layout (d, HW, W, dk, Wo != NULL, sizeof (T));
  T *const Qs = reinterpret_cast<T *> (smem);
  T *const R = reinterpret_cast<T *> (smem + lay.r);
  float *const Pp = reinterpret_cast<float *> (smem + lay.pp);
  float *const red_max = reinterpret_cast<float *> (smem + lay.red), *const red_sum = red_max + W * 16;
  float *const linv = red_sum + W * 16;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int bh = blockIdx.y, q0 = blockIdx.x * 16, b = bh / heads, h = bh % heads;
  const T *q = Q + (size_t) bh * stride + q0, *k = K + (size_t) bh * stride, *v = V + (size_t) bh * stride;
  const int key0 = warp * kw;

  /* the chunk sequence: items 0 .. nd - 1 are K's dims [i dk, i dk + dk), items nd .. 2 nd - 1 V's; item i
   * goes to buffer i & 1 */
  const int nd = d / dk, items = 2 * nd;
  auto issue = [&] (int i) {
    const T *src = (i < nd ? k : v) + (size_t) (i % nd) * dk * HW;
    fm_copy_rows (R + (size_t) (i & 1) * dk * LR, LR, src, HW, dk, HW);
  };
  issue (0);
  if (items > 1)
    issue (1);
  fm_stage_q (Qs, LQ, q, HW, d, 16, bq != NULL ? bq + h * d : NULL);

  /* lane's rows: g and g + 8 of the 16 queries; its pair of columns in each n8 tile: 2 t, 2 t + 1 */
  const int g = lane >> 2, t = lane & 3;
  const int mrow = lane & 7, mhi = (lane >> 4) & 1, mlo = (lane >> 3) & 1;

  /* S (16 x kw) = (Q + bq)^T K[:, warp's keys], over the K chunks */
  float s[FS_MAX_KW / 8][4];
#pragma unroll
  for (int j = 0; j < FS_MAX_KW / 8; j++)
    s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
  for (int i = 0; i < nd; i++)
    {
      __pipeline_wait_prior (i + 1 < items ? 1 : 0);   /* item i has landed (and Qs is staged) */
      __syncthreads ();
      const T *kc = R + (size_t) (i & 1) * dk * LR;
      for (int ks = 0; ks < dk; ks += 16)
        {
          uint32_t a[4];   /* matrices: (dims +0, queries +0), (+0, +8), (+8, +0), (+8, +8) */
          ldmatrix_x4_trans (a, Qs + (size_t) (i * dk + ks + 8 * mhi + mrow) * LQ + 8 * mlo);
#pragma unroll
          for (int j2 = 0; j2 < FS_MAX_KW / 16; j2++)
            if (16 * j2 < kw)
              {
                uint32_t kb[4];   /* (dims +0, keys +0), (+8, +0), (+0, +8), (+8, +8) */
                ldmatrix_x4_trans (kb, kc + (size_t) (ks + 8 * mlo + mrow) * LR + key0 + 16 * j2 + 8 * mhi);
                const uint32_t b0[2] = { kb[0], kb[1] }, b1[2] = { kb[2], kb[3] };
                mma_m16n8k16<T> (s[2 * j2], a, b0);
                mma_m16n8k16<T> (s[2 * j2 + 1], a, b1);
              }
        }
      __syncthreads ();                 /* every warp is done with this buffer */
      if (i + 2 < items)
        issue (i + 2);
    }

  /* exact softmax of rows g (r = 0) and g + 8 (r = 1) over all HW keys: row maxima and sums meet across
   * warps in shared memory */
  float mx[2], m[2], sum[2];
  fm_row_max (s, kw, inv_sqrt_d, mx);                     /* in base 2 (flash_common.cuh) */
  fm_block_row_max (mx, red_max, W, m);
  fm_exp_row_sum (s, kw, inv_sqrt_d, m, sum);
  if (t == 0)
    {
      red_sum[warp * 16 + g] = sum[0];
      red_sum[warp * 16 + g + 8] = sum[1];
    }
  /* P as A fragments, rounded to T */
  uint32_t pa[FS_MAX_KW / 16][4];
#pragma unroll
  for (int kk = 0; kk < FS_MAX_KW / 16; kk++)
    fm_p_fragment<T> (s, kk, pa[kk]);
  __syncthreads ();
  if (threadIdx.x < 16)
    {
      float l = 0.0f;
      for (int w = 0; w < W; w++)
        l += red_sum[w * 16 + threadIdx.x];
      linv[threadIdx.x] = 1.0f / l;
    }

  /* O (16 x d) = P V^T / l + bv, one V chunk of dk dims at a time: each warp's partial over its keys into Pp,
   * then summed in warp order into Qs (Q is no longer needed) */
  for (int i = nd; i < items; i++)
    {
      __pipeline_wait_prior (i + 1 < items ? 1 : 0);   /* item i has landed (and linv is written) */
      __syncthreads ();
      const T *vc = R + (size_t) (i & 1) * dk * LR;
      const int dv0 = (i - nd) * dk;
      for (int n2 = 0; n2 < dk / 16; n2++)
        {
          float acc[2][4] = { { 0.0f, 0.0f, 0.0f, 0.0f }, { 0.0f, 0.0f, 0.0f, 0.0f } };
#pragma unroll
          for (int kk = 0; kk < FS_MAX_KW / 16; kk++)
            if (16 * kk < kw)
              {
                uint32_t vb[4];   /* (dims +0, keys +0), (+0, +8), (+8, +0), (+8, +8) */
                ldmatrix_x4 (vb, vc + (size_t) (16 * n2 + 8 * mhi + mrow) * LR + key0 + 16 * kk + 8 * mlo);
                const uint32_t b0[2] = { vb[0], vb[1] }, b1[2] = { vb[2], vb[3] };
                mma_m16n8k16<T> (acc[0], pa[kk], b0);
                mma_m16n8k16<T> (acc[1], pa[kk], b1);
              }
#pragma unroll
          for (int n = 0; n < 2; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
              Pp[(size_t) (warp * 16 + g + 8 * (e >> 1)) * PL + 16 * n2 + 8 * n + 2 * t + (e & 1)] = acc[n][e];
        }
      __syncthreads ();                 /* partials written; every warp is done with this buffer */
      if (i + 2 < items)
        issue (i + 2);
      for (int e = threadIdx.x; e < 16 * dk; e += blockDim.x)
        {
          const int r = e & 15, c = e >> 4;
          float o = 0.0f;
          for (int w = 0; w < W; w++)
            o += Pp[(size_t) (w * 16 + r) * PL + c];
          const float add = bv != NULL ? bv[h * d + dv0 + c] : 0.0f;
          Qs[(size_t) (dv0 + c) * LQ + r] = from_f32<T> (o * linv[r] + add);
        }
      /* the next chunk's barrier keeps Pp until every thread has read it */
    }
  __syncthreads ();
  if (Wo == NULL)
    {
      T *out = O + ((size_t) b * C + (size_t) h * d) * HW + q0;
      for (int e = threadIdx.x; e < d * (16 / N); e += blockDim.x)
        {
          const int i = e / (16 / N), c = (e % (16 / N)) * N;
          *reinterpret_cast<uint4 *> (out + (size_t) i * HW + c) = *reinterpret_cast<const uint4 *> (Qs + (size_t) i * LQ + c);
        }
      return;
    }
  /* out projection (one head: C = d), Wo's chunks where K and V were; warp w owns channels w DS .. */
  fm_out_projection<T, DS> (Qs, LQ, 0, warp, R, Wo, ldw, C, d, bo, residual, y, scale, b, HW, q0);
}

/* Whether the split core applies to (BH, HW, d), and its shape: 16-bit activations, HW and d multiples of 16,
 * d <= 512, HW <= 8 x 64 keys; with the out projection C = d a multiple of 32 split into 16..128 channels per
 * warp; within the device's shared memory per block (HW 256: 8 warps of 32 keys). Dims per chunk: 64 where
 * d allows, fewer if shared memory is short. */
static bool
flash_split_plan (const CudaBackend *cb, int HW, int d, bool out, FlashSplitPlan *p)
{
  if (!cb->flash_mma_ready || cb->act_type == CT_F32 || HW % 16 != 0 || d % 16 != 0 || d <= 0 || d > 512
      || HW > FS_MAX_WARPS * FS_MAX_KW || (out && d % FM_WK != 0))
    return false;
  /* keys per warp: $DDPM_CUDA_FA_KW, else the fewest of 16, 32, 64 that split HW into at most 8 warps and (with
   * the out projection) d into 16, 32, 64 or 128 channels per warp */
  const int candidates[3] = { 16, 32, 64 };
  p->kw = 0;
  for (int i = 0; i < 3 && p->kw == 0; i++)
    {
      const int kw = cb->fa_kw > 0 ? cb->fa_kw : candidates[i], w = HW / kw;
      const int ds = out && w > 0 && d % w == 0 ? d / w : 0;
      if (w > 0 && HW % kw == 0 && w <= FS_MAX_WARPS && (!out || ds == 16 || ds == 32 || ds == 64 || ds == 128))
        {
          p->kw = kw;
          p->warps = w;
          p->ds = out ? ds : 16;
        }
    }
  if (p->kw == 0)
    return false;
  for (p->dk = d % 64 == 0 ? 64 : d % 32 == 0 ? 32 : 16; p->dk >= 16; p->dk /= 2)
    if ((p->smem = fs_layout (d, HW, p->warps, p->dk, out, cb->act_size).total) <= cb->smem_per_block_optin)
      return true;
  return false;
}

/* The split core where it is wanted: $DDPM_CUDA_ATTN=split, or by default where 16-query blocks would not
 * cover the SMs (batch 1 at 16 x 16 tokens); $DDPM_CUDA_ATTN=mma keeps flash_attention.cu's core. */
static bool
flash_split_wanted (const CudaBackend *cb, int BH, int HW)
{
  return cb->attn_mode == ATTN_SPLIT || (cb->attn_mode == ATTN_AUTO && (long long) (HW / 16) * BH < cb->sm_count);
}

bool
cuda_flash_split_fits (const CudaBackend *cb, int BH, int HW, int d, bool out)
{
  FlashSplitPlan p;
  return flash_split_wanted (cb, BH, HW) && flash_split_plan (cb, HW, d, out, &p);
}

template <typename T>
static void
flash_split_launch (CudaBackend *cb, const FlashSplitPlan &p, const void *Q, const void *K, const void *V, void *O,
                    const float *bq, const float *bv, int BH, int HW, int d, int heads, int C, long long stride,
                    const CudaFlashOut &out)
{
  const dim3 grid ((unsigned) (HW / 16), (unsigned) BH);
  fm_with_ds (p.ds, [&] (auto ds) {
    launch (cb, "flash_attention_split", grid, 32 * p.warps, p.smem, flash_split_kernel<T, decltype (ds)::value>,
            (const T *) Q, (const T *) K, (const T *) V, (T *) O, bq, bv, HW, d, heads, C, stride,
            1.0f / sqrtf ((float) d), p.kw, p.dk, (const T *) out.weight, out.ldw, out.bias, (const T *) out.residual,
            (T *) out.y, out.scale);
  });
}

bool
cuda_flash_attention_split (CudaBackend *cb, const void *Q, const void *K, const void *V, void *O, const float *bq,
                            const float *bv, int B, int heads, int C, int HW, long long stride, const CudaFlashOut *out)
{
  const int d = C / heads, BH = B * heads;
  FlashSplitPlan p;
  if ((out != NULL && heads != 1) || !flash_split_wanted (cb, BH, HW)
      || !flash_split_plan (cb, HW, d, out != NULL, &p))
    return false;
  g_debug ("flash attention (split) BH %d HW %d d %d: %d warps of %d keys, %d dims per chunk, %zu bytes shared%s", BH,
           HW, d, p.warps, p.kw, p.dk, p.smem, out != NULL ? ", out projection" : "");
  const CudaFlashOut &o = out != NULL ? *out : fm_no_out;
  if (cb->act_type == CT_F16)
    flash_split_launch<__half> (cb, p, Q, K, V, O, bq, bv, BH, HW, d, heads, C, stride, o);
  else
    flash_split_launch<__nv_bfloat16> (cb, p, Q, K, V, O, bq, bv, BH, HW, d, heads, C, stride, o);
  return true;
}

/* Above 48 KiB the kernel must be allowed its dynamic shared memory first (see cuda_flash_mma_prepare). */
bool
cuda_flash_split_allow_smem (const CudaBackend *cb)
{
  const int bytes = (int) cb->smem_per_block_optin;
  if (cb->act_type == CT_F16)
    return fm_allow_smem_all_ds (bytes, [] (auto ds) { return (const void *) flash_split_kernel<__half, ds.value>; });
  using BF16 = __nv_bfloat16;
  return fm_allow_smem_all_ds (bytes, [] (auto ds) { return (const void *) flash_split_kernel<BF16, ds.value>; });
}
