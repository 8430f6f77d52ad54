/* flash_cluster.cu: the one-head attention block (core + out projection, bias, residual, scale) for few
 * query tiles, with each 16-query tile's keys split across a thread-block cluster of CS blocks (sm_90+).
 *
 * Why: at batch 1 with 16 x 16 tokens there are 16 query tiles for 132 SMs. flash_split.cu runs each tile
 * in one block that streams all of K, V and Wo (3 x 128 KiB at cifar10-32's d = 256) through shared memory in
 * ~12 dependent chunks: 31 us of its own per call on the H200 (2026-11-27 trace), 15 % of the forward. Here
 * rank r of a tile's cluster holds only keys [r HW / CS, (r + 1) HW / CS) of K and V and channels
 * [r C / CS, (r + 1) C / CS) of Wo, each loaded by one cp.async group (no chunk chain), so 4 x as many SMs
 * each load a quarter.
 *
 * Steps of one block (rank r, W warps, warp w owns 16 keys for the scores and DV = d / W dims for P V^T):
 *   1. Wo's rows for this rank by cp.async (before the wait on the previous kernel where it has its own
 *      space: weights do not depend on it), then the tile's Q and this rank's keys of K and V, all in flight
 *      at once; bq added to Q in place.
 *   2. S (16 x 16) = (Q + bq)^T K for the warp's keys, scaled; the block's row maxima m_r; P = exp(S - m_r)
 *      rounded to T into shared memory; the block's row sums l_r (in float, before rounding, as the other
 *      cores).
 *   3. O_r (16 x d, float, unnormalised) = P V^T over the block's keys, warp w dims [w DV, w DV + DV).
 *   4. Cluster barrier. The combine, sliced: rank r takes dims [r d / CS, ...) of every rank's O_k and
 *      writes O = sum_k exp(m_k - M) O_k / sum_k exp(m_k - M) l_k + bv (M = max_k m_k; k in rank order, so the
 *      result does not depend on timing), rounded to T, into every rank's Qs (distributed shared memory).
 *   5. Cluster barrier (every rank's O complete; no block reads another's shared memory after it). Then
 *      y (16 queries x this rank's channels) = (Wo O + bo + residual) * scale (flash_common.cuh).
 *
 * Dynamic shared memory (T = the 16-bit activation type, rows padded by FM_PAD):
 *   Qs  [d][16 + 8]       Q + bq, then O (the projection's B)
 *   KV  [2][d][KC + 8]    K then V of this rank's KC = HW / CS keys; Wo's rows here too unless wo_early
 *   Ws  [CC][d + 8]       with wo_early: Wo's CC = C / CS rows of this rank
 *   Ps  [16][KC + 8]      P
 *   Ob  [d][20] float     O_r as [dim][query] (row of 20: conflict-free fragment stores, 8-byte pairs)
 *   ml  [2][16] float     m_r and l_r; cf [CS][16] float: the combine's weight of each rank per query */
#include "flash_common.cuh"

#define FC_LO 20                        /* Ob's row stride (floats) */
#define FC_MAX_DV 128                   /* P V^T dims per warp at most (64 accumulator floats) */
#define FC_MAX_CS 8                     /* cluster size at most (the plan takes 2, 4 or 8) */
#define FC_COMBINE_U 4                  /* combine elements per thread whose loads are in flight together */

struct FlashClusterPlan {
  int cs, warps, ds;                    /* cluster size, warps per block, out channels per warp */
  bool wo_early;                        /* Wo has its own space and is loaded before the dependency wait */
  size_t smem;
};

struct FcLayout {
  size_t kv, ws, ps, ob, ml, total;     /* byte offsets (each 16-byte aligned) */
};

static inline __host__ __device__ size_t
fc_align (size_t n)
{
  return (n + 15) & ~(size_t) 15;
}

static inline __host__ __device__ FcLayout
fc_layout (int d, int C, int HW, int cs, bool wo_early, size_t act)
{
  FcLayout l;
  const int KC = HW / cs;
  const size_t kv = act * 2 * (size_t) d * (KC + FM_PAD), wo = act * (size_t) (C / cs) * (d + FM_PAD);
  l.kv = fc_align (act * (size_t) d * (16 + FM_PAD));
  l.ws = wo_early ? fc_align (l.kv + kv) : l.kv;
  l.ps = fc_align (wo_early ? l.ws + wo : l.kv + (kv > wo ? kv : wo));
  l.ob = fc_align (l.ps + act * 16 * (size_t) (KC + FM_PAD));
  l.ml = fc_align (l.ob + sizeof (float) * (size_t) d * FC_LO);
  l.total = l.ml + sizeof (float) * (2 * 16 + (size_t) cs * 16);
  return l;
}

/* grid (HW / 16, B, CS) in clusters of (1, 1, CS); block 32 W with W = HW / (16 CS); C = d; d / W a multiple
 * of 16 (at most FC_MAX_DV); C / CS = W DS. */
template <typename T, int DS>
__global__ void __launch_bounds__ (256)
flash_cluster_kernel (const T *__restrict__ Q, const T *__restrict__ K, const T *__restrict__ V,
                      const float *__restrict__ bq, const float *__restrict__ bv, int HW, int d, long long stride,
                      float inv_sqrt_d, const T *__restrict__ Wo, int ldw, const float *__restrict__ bo,
                      const T *residual, T *y, float scale, int wo_early)
{
#if CLUSTER_COMPILED
  DYNAMIC_SMEM (smem);
  const int CS = gridDim.z, rank = blockIdx.z, W = blockDim.x >> 5, KC = HW / CS, C = d, CC = C / CS;
  const int LQ = 16 + FM_PAD, LK = KC + FM_PAD, LW = d + FM_PAD;
  const FcLayout lay = fc_layout (d, C, HW, CS, wo_early != 0, sizeof (T));
  T *const Qs = reinterpret_cast<T *> (smem);
  T *const Ks = reinterpret_cast<T *> (smem + lay.kv), *const Vs = Ks + (size_t) d * LK;
  T *const Ws = reinterpret_cast<T *> (smem + lay.ws);
  T *const Ps = reinterpret_cast<T *> (smem + lay.ps);
  float *const Ob = reinterpret_cast<float *> (smem + lay.ob);
  float *const ml = reinterpret_cast<float *> (smem + lay.ml), *const cf = ml + 32;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int b = blockIdx.y, q0 = blockIdx.x * 16, key0 = rank * KC;
  const T *q = Q + (size_t) b * stride + q0, *k = K + (size_t) b * stride + key0, *v = V + (size_t) b * stride + key0;
  const T *wo = Wo + (size_t) rank * CC * ldw;

  /* 1. loads: [Wo,] Q, K, V as cp.async groups in that order (all in flight at once) */
  if (wo_early)
    fm_copy_rows (Ws, LW, wo, ldw, CC, d);
  grid_dependency_wait ();
  fm_copy_rows (Qs, LQ, q, HW, d, 16);
  fm_copy_rows (Ks, LK, k, HW, d, KC);
  fm_copy_rows (Vs, LK, v, HW, d, KC);

  const int g = lane >> 2, t = lane & 3;
  const int mrow = lane & 7, mhi = (lane >> 4) & 1, mlo = (lane >> 3) & 1;

  /* 2. S (16 x 16) for keys 16 w .. 16 w + 15 of this rank */
  __pipeline_wait_prior (1);            /* Q and K (and Wo) landed; V may still be on its way */
  __syncthreads ();
  if (bq != NULL)                       /* Q + bq in float, rounded once, in place */
    {
      fm_stage_q (Qs, LQ, Qs, LQ, d, 16, bq);
      __syncthreads ();
    }
  float s[2][4] = { { 0.0f, 0.0f, 0.0f, 0.0f }, { 0.0f, 0.0f, 0.0f, 0.0f } };
#pragma unroll 4
  for (int ks = 0; ks < d; ks += 16)
    {
      uint32_t a[4], kb[4];   /* Q^T: (dims +0, queries +0), (+0, +8), (+8, +0), (+8, +8); K: (dims, keys) */
      ldmatrix_x4_trans (a, Qs + (size_t) (ks + 8 * mhi + mrow) * LQ + 8 * mlo);
      ldmatrix_x4_trans (kb, Ks + (size_t) (ks + 8 * mlo + mrow) * LK + 16 * warp + 8 * mhi);
      const uint32_t b0[2] = { kb[0], kb[1] }, b1[2] = { kb[2], kb[3] };
      mma_m16n8k16<T> (s[0], a, b0);
      mma_m16n8k16<T> (s[1], a, b1);
    }
  float mx[2], m[2], sum[2];
  fm_row_max (s, 16, inv_sqrt_d, mx);                     /* in base 2 (flash_common.cuh) */
  float *const red_max = Ob, *const red_sum = Ob + 8 * 16;   /* Ob is free until step 3 */
  fm_block_row_max (mx, red_max, W, m);
  fm_exp_row_sum (s, 16, inv_sqrt_d, m, sum);
  if (t == 0)
    {
      red_sum[warp * 16 + g] = sum[0];
      red_sum[warp * 16 + g + 8] = sum[1];
    }
#pragma unroll
  for (int j = 0; j < 2; j++)           /* P rows g and g + 8, this warp's keys 8 j + 2 t, + 1 */
    {
      T *p = Ps + (size_t) g * LK + 16 * warp + 8 * j + 2 * t;
      *reinterpret_cast<uint32_t *> (p) = pack2<T> (s[j][0], s[j][1]);
      *reinterpret_cast<uint32_t *> (p + (size_t) 8 * LK) = pack2<T> (s[j][2], s[j][3]);
    }
  __pipeline_wait_prior (0);            /* V landed */
  __syncthreads ();
  if (threadIdx.x < 16)                 /* m_r and l_r of query i */
    {
      const int i = threadIdx.x;
      float mi = -INFINITY, l = 0.0f;
      for (int w = 0; w < W; w++)
        {
          mi = fmaxf (mi, red_max[w * 16 + i]);
          l += red_sum[w * 16 + i];
        }
      ml[i] = mi;
      ml[16 + i] = l;
    }
  __syncthreads ();                     /* red_* read (Ob is overwritten next); ml written */

  /* 3. O_r (16 x DV of this warp) = P V^T over this rank's keys */
  const int DV = d / W, dv0 = warp * DV;
  for (int n2 = 0; n2 < DV / 16; n2++)
    {
      float acc[2][4] = { { 0.0f, 0.0f, 0.0f, 0.0f }, { 0.0f, 0.0f, 0.0f, 0.0f } };
      for (int kk = 0; kk < KC / 16; kk++)
        {
          uint32_t pa[4], vb[4];   /* P: (queries +0, keys +0), (+8, +0), (+0, +8), (+8, +8); V: (dims, keys) */
          ldmatrix_x4 (pa, Ps + (size_t) (mrow + 8 * mlo) * LK + 16 * kk + 8 * mhi);
          ldmatrix_x4 (vb, Vs + (size_t) (dv0 + 16 * n2 + 8 * mhi + mrow) * LK + 16 * kk + 8 * mlo);
          const uint32_t b0[2] = { vb[0], vb[1] }, b1[2] = { vb[2], vb[3] };
          mma_m16n8k16<T> (acc[0], pa, b0);
          mma_m16n8k16<T> (acc[1], pa, b1);
        }
#pragma unroll
      for (int n = 0; n < 2; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          Ob[(size_t) (dv0 + 16 * n2 + 8 * n + 2 * t + (e & 1)) * FC_LO + g + 8 * (e >> 1)] = acc[n][e];
    }
  if (!wo_early)
    {
      __syncthreads ();                 /* every warp is done with K and V: Wo's rows go there */
      fm_copy_rows (Ws, LW, wo, ldw, CC, d);
    }

  /* 4. the combine of dims [rank DC, rank DC + DC) */
  cluster_sync ();
  const int DC = d / CS, c0 = rank * DC;
  if (threadIdx.x < 16)
    {
      const int i = threadIdx.x;
      /* every rank's (m, l) loaded before any is used: one distributed-shared-memory trip, not 2 CS */
      float mk[FC_MAX_CS], lk[FC_MAX_CS], M = -INFINITY, L = 0.0f;
#pragma unroll
      for (int r = 0; r < FC_MAX_CS; r++)
        if (r < CS)
          {
            mk[r] = cluster_map_shared (ml, r)[i];
            lk[r] = cluster_map_shared (ml, r)[16 + i];
          }
#pragma unroll
      for (int r = 0; r < FC_MAX_CS; r++)
        if (r < CS)
          M = fmaxf (M, mk[r]);
#pragma unroll
      for (int r = 0; r < FC_MAX_CS; r++)
        if (r < CS)
          L += fm_exp2 (mk[r] - M) * lk[r];   /* maxima in base 2 (fm_row_max) */
#pragma unroll
      for (int r = 0; r < FC_MAX_CS; r++)
        if (r < CS)
          cf[r * 16 + i] = fm_exp2 (mk[r] - M) / L;
    }
  __syncthreads ();
  /* FC_COMBINE_U elements' loads from every rank in flight before any store: the stores into the ranks' Qs go
   * through generic pointers too, so a store between loads would hold the next load behind it (one
   * distributed-shared-memory trip per element: tools/sass_chains.py) */
  for (int e0 = threadIdx.x; e0 < DC * 8; e0 += FC_COMBINE_U * blockDim.x)
    {
      /* element e0 + u blockDim: dim c, queries i and i + 1 */
      auto element = [&] (int u, int &e, int &c, int &i) {
        e = e0 + u * (int) blockDim.x;
        c = c0 + e / 8;
        i = 2 * (e % 8);
      };
      float2 p[FC_COMBINE_U][FC_MAX_CS];
#pragma unroll
      for (int u = 0; u < FC_COMBINE_U; u++)
        {
          int e, c, i;
          element (u, e, c, i);
#pragma unroll
          for (int r = 0; r < FC_MAX_CS; r++)
            if (e < DC * 8 && r < CS)
              p[u][r] = *reinterpret_cast<const float2 *> (cluster_map_shared (Ob, r) + (size_t) c * FC_LO + i);
        }
#pragma unroll
      for (int u = 0; u < FC_COMBINE_U; u++)
        {
          int e, c, i;
          element (u, e, c, i);
          if (e >= DC * 8)
            break;
          float o0 = 0.0f, o1 = 0.0f;
#pragma unroll
          for (int r = 0; r < FC_MAX_CS; r++)
            if (r < CS)
              {
                o0 += cf[r * 16 + i] * p[u][r].x;
                o1 += cf[r * 16 + i + 1] * p[u][r].y;
              }
          const float add = bv != NULL ? bv[c] : 0.0f;
          const uint32_t pair = pack2<T> (o0 + add, o1 + add);
          for (int r = 0; r < CS; r++)
            *reinterpret_cast<uint32_t *> (const_cast<T *> (cluster_map_shared (Qs, r)) + (size_t) c * LQ + i) = pair;
        }
    }
  __pipeline_wait_prior (0);            /* this thread's Wo copies landed (visible to all after the barrier) */

  /* 5. every rank's Qs holds O; the projection of this rank's channels, warp w's DS of them */
  cluster_sync ();
  float acc[DS / 16][2][4];
  fm_out_zero<DS> (acc);
  fm_out_mma<T, DS> (acc, Qs, LQ, Ws + (size_t) warp * DS * LW, LW, d);
  fm_out_store<T, DS> (acc, rank * CC + warp * DS, bo, residual, y, scale, b, C, HW, q0);
#else
  grid_dependency_wait ();
  __trap ();                             /* sm_80-89: never launched (cuda_flash_cluster_prepare) */
#endif
}

/* The plan for (HW, d) with the out projection (C = d), or false: 16-bit activations, clusters here
 * (cb->flash_cluster_ready), and a cluster size ($DDPM_CUDA_FA_CLUSTER, else the first of 4, 8, 2) with whole
 * 16-key warps (at most 8), whole 16-dim slices of P V^T per warp (at most FC_MAX_DV), 16..128 out channels
 * per warp, within the block's shared memory. */
static bool
flash_cluster_plan (const CudaBackend *cb, int HW, int d, FlashClusterPlan *p)
{
  if (!cb->flash_cluster_ready || cb->act_type == CT_F32 || HW % 16 != 0 || d % 16 != 0 || d <= 0)
    return false;
  const int forced[1] = { cb->fa_cluster }, rule[3] = { 4, 8, 2 };
  const int *sizes = cb->fa_cluster > 0 ? forced : rule, n = cb->fa_cluster > 0 ? 1 : 3;
  for (int i = 0; i < n; i++)
    {
      const int cs = sizes[i];
      if (HW % (16 * cs) != 0 || d % cs != 0)
        continue;
      const int w = HW / (16 * cs);
      if (w < 1 || w > 8 || d % w != 0 || (d / w) % 16 != 0 || d / w > FC_MAX_DV || (d / cs) % w != 0)
        continue;
      const int ds = d / cs / w;
      if (ds != 16 && ds != 32 && ds != 64 && ds != 128)
        continue;
      p->cs = cs;
      p->warps = w;
      p->ds = ds;
      p->wo_early = true;
      p->smem = fc_layout (d, d, HW, cs, true, cb->act_size).total;
      if (p->smem > cb->smem_per_block_optin)
        {
          p->wo_early = false;
          p->smem = fc_layout (d, d, HW, cs, false, cb->act_size).total;
        }
      if (p->smem <= cb->smem_per_block_optin)
        return true;
    }
  return false;
}

/* Where it is wanted: by default where 16-query blocks would not cover the SMs (as flash_split.cu's core),
 * with $DDPM_CUDA_ATTN=cluster wherever it applies; $DDPM_CUDA_FA_CLUSTER=0 (or ATTN=split / mma) never. */
static bool
flash_cluster_wanted (const CudaBackend *cb, int BH, int HW)
{
  return cb->fa_cluster >= 0
         && (cb->attn_mode == ATTN_CLUSTER
             || (cb->attn_mode == ATTN_AUTO && (long long) (HW / 16) * BH < cb->sm_count));
}

bool
cuda_flash_cluster_fits (const CudaBackend *cb, int BH, int HW, int d)
{
  FlashClusterPlan p;
  return flash_cluster_wanted (cb, BH, HW) && flash_cluster_plan (cb, HW, d, &p);
}

template <typename T>
static void
flash_cluster_launch (CudaBackend *cb, const FlashClusterPlan &p, const void *Q, const void *K, const void *V,
                      const float *bq, const float *bv, int B, int HW, int d, long long stride, const CudaFlashOut &out)
{
  const dim3 grid ((unsigned) (HW / 16), (unsigned) B, (unsigned) p.cs);
  fm_with_ds (p.ds, [&] (auto ds) {
    launch_cluster (cb, "flash_attention_cluster", grid, dim3 (32 * p.warps), p.smem, (unsigned) p.cs,
                    flash_cluster_kernel<T, decltype (ds)::value>, (const T *) Q, (const T *) K, (const T *) V, bq, bv,
                    HW, d, stride, 1.0f / sqrtf ((float) d), (const T *) out.weight, out.ldw, out.bias,
                    (const T *) out.residual, (T *) out.y, out.scale, p.wo_early ? 1 : 0);
  });
}

bool
cuda_flash_attention_cluster (CudaBackend *cb, const void *Q, const void *K, const void *V, const float *bq,
                              const float *bv, int B, int heads, int C, int HW, long long stride,
                              const CudaFlashOut *out)
{
  FlashClusterPlan p;
  if (out == NULL || heads != 1 || !flash_cluster_wanted (cb, B, HW) || !flash_cluster_plan (cb, HW, C, &p))
    return false;
  g_debug ("flash attention (cluster) B %d HW %d d %d: clusters of %d, %d warps, %d out channels per warp, "
           "%zu bytes shared%s", B, HW, C, p.cs, p.warps, p.ds, p.smem, p.wo_early ? ", Wo first" : "");
  if (cb->act_type == CT_F16)
    flash_cluster_launch<__half> (cb, p, Q, K, V, bq, bv, B, HW, C, stride, *out);
  else
    flash_cluster_launch<__nv_bfloat16> (cb, p, Q, K, V, bq, bv, B, HW, C, stride, *out);
  return true;
}

/* Once, at creation (cuda_flash_mma_prepare): every instantiation allowed the device's shared memory per
 * block, and a cluster of 4 blocks of the largest allowance resident (sm_90+). */
bool
cuda_flash_cluster_prepare (const CudaBackend *cb)
{
  if (cb->cc_major < 9 || cb->act_type == CT_F32)
    return false;
  const int bytes = (int) cb->smem_per_block_optin;
  using BF16 = __nv_bfloat16;
  const bool ok
      = cb->act_type == CT_F16
            ? fm_allow_smem_all_ds (bytes, [] (auto ds) { return (const void *) flash_cluster_kernel<__half, ds.value>; })
            : fm_allow_smem_all_ds (bytes, [] (auto ds) { return (const void *) flash_cluster_kernel<BF16, ds.value>; });
  if (!ok)
    return false;
  const void *kernel = cb->act_type == CT_F16 ? (const void *) flash_cluster_kernel<__half, 16>
                                              : (const void *) flash_cluster_kernel<BF16, 16>;
  return clusters_fit (kernel, 4, 256, (size_t) bytes);
}
