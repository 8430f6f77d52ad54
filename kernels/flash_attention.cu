/* flash_attention.cu: the attention core O_h = softmax((Q_h + bq)^T (K_h + bk) / sqrt(d)) (V_h + bv)^T for
 * fp16 / bf16 on mma.sync tensor cores, with everything between the two products in registers (the
 * FlashAttention-2 arrangement), and the Q / V biases applied here so that the QKV projection needs no bias
 * pass of its own.
 *
 * Layout as attention.cu: per batch entry bh = b * heads + h, Q, K, V are (d x HW) channel-major at
 * bh * stride (element (dim i, token t) at i * HW + t); O is the plain (B, C, HW) with head h at rows h d ..
 *
 * Biases, exactly: (q + bq).(k + bk) = (q + bq).k + (q + bq).bk, and the second term is the same for every
 * key of a query, which the softmax over keys cancels, so bk is never needed. Each row of P sums to 1, so
 * P (V + bv)^T = P V^T + bv: bv is added to the normalised output. bq is added while Q is staged, in float and
 * rounded once, as the bias pass it replaces did.
 *
 * Block: BQ = 16 QT queries of one bh, QT x NDS warps; warp (qt, ds) owns queries 16 qt .. 16 qt + 15 and
 * output dims ds DS .. (ds + 1) DS - 1 (DS <= 128 by the rule, so its O accumulator is at most 64 floats per
 * thread; $DDPM_CUDA_FA_DS=256 takes 128 floats: sm_90a 240 registers, no spills, one warp per query tile at
 * d = 256 and half the copies at d = 512). Every warp of a query tile computes the tile's whole score rows
 * (the NDS copies are identical: at d = 256 with DS = 128 a third of the tensor-core work, at d = 512 three
 * fifths), so no row statistics cross warps and the only barriers are the shared-memory stages.
 * Shared memory (dynamic, T): Qs [d][BQ + 8] (with bq; the output's staging at the end), Ks and Vs [d][KC + 8]
 * for one chunk of KC keys; rows padded by 16 bytes so that ldmatrix's eight rows hit different banks.
 * K and V chunks arrive by cp.async, each while the other's product runs.
 * Fragments (mma_sync.cuh): A = Q^T and B = K come from dims-major rows, so ldmatrix .trans; B = V^T is
 * V's rows as stored; A = P is the score accumulator itself, rounded to T (C -> A fragment layouts match).
 *
 * With one head (C = d) the block also does the attention block's out projection for its queries:
 * y = (Wo O + bo + residual) * scale, with O (rounded to T, as the unfused path stores it) from Qs and Wo in
 * 32-column chunks by cp.async into the shared memory K and V used (double-buffered); warp (qt, ds) computes
 * output channels ds DS .. for its 16 queries. y may alias residual (each element is read, then written, by
 * one thread). That saves the out GEMM's and the bias / residual pass's launches and O's round trip. */
#include "flash_common.cuh"

#define FM_KC 64                        /* keys per chunk at most (the score accumulator's width) */
#define FM_MAX_WARPS 8

/* grid (HW / BQ, B * heads), block 32 QT (d / DS). HW % BQ == 0, kc in {16, 32, 64}, d % DS == 0. */
template <typename T, int DS>
__global__ void __launch_bounds__ (32 * FM_MAX_WARPS)
flash_mma_kernel (const T *__restrict__ Q, const T *__restrict__ K, const T *__restrict__ V, T *__restrict__ O,
                  const float *__restrict__ bq, const float *__restrict__ bv, int HW, int d, int heads, int C,
                  long long stride, float inv_sqrt_d, int BQ, int kc, const T *__restrict__ Wo, int ldw,
                  const float *__restrict__ bo, const T *residual, T *y, float scale)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  constexpr int NT = DS / 8;            /* output n8 tiles per warp */
  DYNAMIC_SMEM (smem);
  const int LQ = BQ + FM_PAD, LK = kc + FM_PAD;
  T *const Qs = reinterpret_cast<T *> (smem);
  T *const Ks = Qs + (size_t) d * LQ;
  T *const Vs = Ks + (size_t) d * LK;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nds = d / DS, qt = warp / nds, ds = warp % nds;
  const int bh = blockIdx.y, q0 = blockIdx.x * BQ, b = bh / heads, h = bh % heads;
  const T *q = Q + (size_t) bh * stride + q0, *k = K + (size_t) bh * stride, *v = V + (size_t) bh * stride;

  /* K and V of the first chunk in flight while Q is staged */
  const int nchunks = (HW + kc - 1) / kc;
  fm_copy_rows (Ks, LK, k, HW, d, imin (kc, HW));
  fm_copy_rows (Vs, LK, v, HW, d, imin (kc, HW));
  fm_stage_q (Qs, LQ, q, HW, d, BQ, bq != NULL ? bq + h * d : NULL);

  /* lane's rows: g and g + 8 of the warp's 16; its pair of columns in each n8 tile: 2 t, 2 t + 1 */
  const int g = lane >> 2, t = lane & 3;
  /* ldmatrix row addresses: matrix m = lane / 8, row lane % 8 of it */
  const int mrow = lane & 7, mhi = (lane >> 4) & 1, mlo = (lane >> 3) & 1;
  float m_run[2] = { -INFINITY, -INFINITY }, l_run[2] = { 0.0f, 0.0f };
  float o[NT][4];
#pragma unroll
  for (int n = 0; n < NT; n++)
    o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

  for (int c = 0; c < nchunks; c++)
    {
      const int k0 = c * kc, nk = imin (kc, HW - k0);
      __pipeline_wait_prior (1);        /* K (c) has landed; V (c) may still be in flight */
      __syncthreads ();
      /* S (16 x nk) = (Q + bq)^T K over all d */
      float s[FM_KC / 8][4];
#pragma unroll
      for (int j = 0; j < FM_KC / 8; j++)
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll 2
      for (int ks = 0; ks < d; ks += 16)
        {
          uint32_t a[4];   /* matrices: (dims +0, queries +0), (+0, +8), (+8, +0), (+8, +8) */
          ldmatrix_x4_trans (a, Qs + (size_t) (ks + 8 * mhi + mrow) * LQ + 16 * qt + 8 * mlo);
#pragma unroll
          for (int j2 = 0; j2 < FM_KC / 16; j2++)
            if (16 * j2 < nk)
              {
                uint32_t kb[4];   /* (dims +0, keys +0), (+8, +0), (+0, +8), (+8, +8) */
                ldmatrix_x4_trans (kb, Ks + (size_t) (ks + 8 * mlo + mrow) * LK + 16 * j2 + 8 * mhi);
                const uint32_t b0[2] = { kb[0], kb[1] }, b1[2] = { kb[2], kb[3] };
                mma_m16n8k16<T> (s[2 * j2], a, b0);
                mma_m16n8k16<T> (s[2 * j2 + 1], a, b1);
              }
        }
      __syncthreads ();                 /* every warp is done with Ks: the next chunk's K may come */
      const bool more = c + 1 < nchunks;
      if (more)
        fm_copy_rows (Ks, LK, k + k0 + kc, HW, d, imin (kc, HW - k0 - kc));

      /* online softmax of rows g (r = 0) and g + 8 (r = 1); the 4 lanes t of a row share it */
      float mx[2], corr[2], sum[2];
      fm_row_max (s, nk, inv_sqrt_d, mx);
#pragma unroll
      for (int r = 0; r < 2; r++)
        {
          const float m_new = fmaxf (m_run[r], mx[r]);
          corr[r] = fm_exp2 (m_run[r] - m_new);   /* base 2 (fm_row_max); 0 on the first chunk (m_run = -inf) */
          m_run[r] = m_new;
        }
      fm_exp_row_sum (s, nk, inv_sqrt_d, m_run, sum);
#pragma unroll
      for (int r = 0; r < 2; r++)
        l_run[r] = l_run[r] * corr[r] + sum[r];
      if (c > 0)                        /* O is still 0 on the first chunk */
#pragma unroll
        for (int n = 0; n < NT; n++)
          {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
          }

      __pipeline_wait_prior (more ? 1 : 0);   /* V (c) has landed */
      __syncthreads ();
      /* O (16 x DS) += P (16 x nk) V^T (nk x DS), P rounded to T */
#pragma unroll
      for (int kk = 0; kk < FM_KC / 16; kk++)
        if (16 * kk < nk)
          {
            uint32_t a[4];
            fm_p_fragment<T> (s, kk, a);
#pragma unroll
            for (int n2 = 0; n2 < NT / 2; n2++)
              {
                uint32_t vb[4];   /* (dims +0, keys +0), (+0, +8), (+8, +0), (+8, +8) */
                ldmatrix_x4 (vb, Vs + (size_t) (ds * DS + 16 * n2 + 8 * mhi + mrow) * LK + 16 * kk + 8 * mlo);
                const uint32_t b0[2] = { vb[0], vb[1] }, b1[2] = { vb[2], vb[3] };
                mma_m16n8k16<T> (o[2 * n2], a, b0);
                mma_m16n8k16<T> (o[2 * n2 + 1], a, b1);
              }
          }
      __syncthreads ();                 /* every warp is done with Vs (and, after the last chunk, with Qs) */
      if (more)
        fm_copy_rows (Vs, LK, v + k0 + kc, HW, d, imin (kc, HW - k0 - kc));
    }

  /* O / l + bv, staged in Qs as [dim][query], then 16-byte stores along queries */
  const float inv_l[2] = { 1.0f / l_run[0], 1.0f / l_run[1] };
#pragma unroll
  for (int n = 0; n < NT; n++)
#pragma unroll
    for (int e = 0; e < 4; e++)
      {
        const int i = ds * DS + 8 * n + 2 * t + (e & 1), r = g + 8 * (e >> 1);
        const float add = bv != NULL ? bv[h * d + i] : 0.0f;
        Qs[(size_t) i * LQ + 16 * qt + r] = from_f32<T> (o[n][e] * inv_l[e >> 1] + add);
      }
  __syncthreads ();
  if (Wo == NULL)
    {
      T *out = O + ((size_t) b * C + (size_t) h * d) * HW + q0;
      for (int e = threadIdx.x; e < d * (BQ / N); e += blockDim.x)
        {
          const int i = e / (BQ / N), c = (e % (BQ / N)) * N;
          *reinterpret_cast<uint4 *> (out + (size_t) i * HW + c) = *reinterpret_cast<const uint4 *> (Qs + (size_t) i * LQ + c);
        }
      return;
    }

  /* out projection (one head: C = d), Wo's chunks where K and V were; warp (qt, ds) owns channels ds DS .. */
  fm_out_projection<T, DS> (Qs, LQ, 16 * qt, ds, Ks, Wo, ldw, C, d, bo, residual, y, scale, b, HW, q0 + 16 * qt);
}

/* The block shape for (BH, HW, d): DS, query tiles per block QT, keys per chunk KC, shared bytes. */
struct FlashMmaPlan {
  int ds, qt, kc;
  size_t smem;
};

/* Qs, then Ks and Vs, or (out projection, C = d) two chunks of Wo where they were, whichever is larger */
static size_t
flash_mma_smem (int d, int qt, int kc, bool out, size_t act)
{
  const size_t kv = 2 * (size_t) d * (kc + FM_PAD), wo = out ? fm_out_proj_elems (d) : 0;
  return act * ((size_t) d * (16 * qt + FM_PAD) + (kv > wo ? kv : wo));
}

/* FALSE where the kernel does not apply: 16-bit activations, HW and d multiples of 16, d <= 512, and the
 * smallest block fitting the device's shared memory per block (sm_86 / sm_89: 99 KiB, sm_80: 163 KiB,
 * sm_90: 227 KiB; $DDPM_CUDA_SMEM_LIMIT lowers it for tests). */
static bool
flash_mma_plan (const CudaBackend *cb, int BH, int HW, int d, bool out, FlashMmaPlan *p)
{
  if (!cb->flash_mma_ready || cb->act_type == CT_F32 || HW % 16 != 0 || d % 16 != 0 || d <= 0 || d > 512
      || (out && d % FM_WK != 0))
    return false;
  p->ds = d % 128 == 0 ? 128 : d % 64 == 0 ? 64 : d % 32 == 0 ? 32 : 16;
  if (d / p->ds > FM_MAX_WARPS)
    return false;
  /* few blocks (batch 1: 16 of 16 queries at cifar10-32): more, narrower warps per block, as many SM
   * sub-partitions busy as there are */
  const long long blocks16 = (long long) (HW / 16) * BH;
  if (blocks16 < cb->sm_count && p->ds == 128 && d / 64 <= FM_MAX_WARPS)
    p->ds = 64;
  /* $DDPM_CUDA_FA_DS (16, 32, 64, 128, 256) overrides where it divides d within 8 warps: tests, and run.sh's A/B */
  if (cb->fa_ds > 0 && d % cb->fa_ds == 0 && d / cb->fa_ds <= FM_MAX_WARPS)
    p->ds = cb->fa_ds;
  const int nds = d / p->ds;
  /* up to 4 query tiles per block (K and V staged once for 64 queries), while the blocks still fill the GPU;
   * $DDPM_CUDA_FA_QT (1, 2, 4) caps it */
  p->qt = cb->fa_qt > 0 ? cb->fa_qt : 4;
  while (p->qt > 1
         && (p->qt * nds > FM_MAX_WARPS || HW % (16 * p->qt) != 0
             || (cb->fa_qt == 0 && (long long) (HW / (16 * p->qt)) * BH < cb->sm_count)))
    p->qt /= 2;
  p->kc = FM_KC;
  while ((p->smem = flash_mma_smem (d, p->qt, p->kc, out, cb->act_size)) > cb->smem_per_block_optin)
    {
      if (p->kc > 16)
        p->kc /= 2;
      else if (p->qt > 1)
        p->qt /= 2;
      else
        return false;
    }
  return true;
}

/* Above 48 KiB a kernel must be allowed its dynamic shared memory first. Done once here, outside any graph
 * capture (the call may synchronise with the device, which a capture would not allow), for every
 * instantiation up to the device's limit. */
void
cuda_flash_mma_prepare (CudaBackend *cb)
{
  if (cb->act_type == CT_F32)
    return;
  const int bytes = (int) cb->smem_per_block_optin;
  using BF16 = __nv_bfloat16;
  bool mma;
  if (cb->act_type == CT_F16)
    mma = fm_allow_smem_all_ds<256> (bytes, [] (auto ds) { return (const void *) flash_mma_kernel<__half, ds.value>; });
  else
    mma = fm_allow_smem_all_ds<256> (bytes, [] (auto ds) { return (const void *) flash_mma_kernel<BF16, ds.value>; });
  cb->flash_mma_ready = mma && cuda_flash_split_allow_smem (cb);
  if (!cb->flash_mma_ready)
    {
      g_message ("CUDA backend: cudaFuncSetAttribute (%d bytes of shared memory) failed: %s; attention takes the "
                 "WMMA core", bytes, cudaGetErrorString (cudaGetLastError ()));
    }
  cb->flash_cluster_ready = cb->flash_mma_ready && cuda_flash_cluster_prepare (cb);
  cudaGetLastError ();                   /* a failed cluster check leaves no error behind */
}

bool
cuda_flash_mma_fits (const CudaBackend *cb, int BH, int HW, int d, bool out)
{
  FlashMmaPlan p;
  return cuda_flash_split_fits (cb, BH, HW, d, out) || flash_mma_plan (cb, BH, HW, d, out, &p);
}

/* out: the fused out projection's operands (weight NULL: none, O written) */
template <typename T>
static void
flash_mma_launch (CudaBackend *cb, const FlashMmaPlan &p, const void *Q, const void *K, const void *V, void *O,
                  const float *bq, const float *bv, int BH, int HW, int d, int heads, int C, long long stride,
                  const CudaFlashOut &out)
{
  const dim3 grid ((unsigned) (HW / (16 * p.qt)), (unsigned) BH);
  fm_with_ds<256> (p.ds, [&] (auto ds) {
    constexpr int DS = decltype (ds)::value;
    launch (cb, "flash_attention_mma", grid, 32 * p.qt * (d / DS), p.smem, flash_mma_kernel<T, DS>, (const T *) Q,
            (const T *) K, (const T *) V, (T *) O, bq, bv, HW, d, heads, C, stride, 1.0f / sqrtf ((float) d), 16 * p.qt,
            p.kc, (const T *) out.weight, out.ldw, out.bias, (const T *) out.residual, (T *) out.y, out.scale);
  });
}

bool
cuda_flash_attention_mma (CudaBackend *cb, const void *Q, const void *K, const void *V, void *O, const float *bq,
                          const float *bv, int B, int heads, int C, int HW, long long stride, const CudaFlashOut *out)
{
  if (cuda_flash_attention_cluster (cb, Q, K, V, bq, bv, B, heads, C, HW, stride, out)
      || cuda_flash_attention_split (cb, Q, K, V, O, bq, bv, B, heads, C, HW, stride, out))
    return true;
  const int d = C / heads, BH = B * heads;
  FlashMmaPlan p;
  if ((out != NULL && heads != 1) || !flash_mma_plan (cb, BH, HW, d, out != NULL, &p))
    return false;
  g_debug ("flash attention (mma) BH %d HW %d d %d: %d dims per warp, %d queries and %d keys per block step, "
           "%zu bytes shared%s", BH, HW, d, p.ds, 16 * p.qt, p.kc, p.smem, out != NULL ? ", out projection" : "");
  const CudaFlashOut &o = out != NULL ? *out : fm_no_out;
  if (cb->act_type == CT_F16)
    flash_mma_launch<__half> (cb, p, Q, K, V, O, bq, bv, BH, HW, d, heads, C, stride, o);
  else
    flash_mma_launch<__nv_bfloat16> (cb, p, Q, K, V, O, bq, bv, BH, HW, d, heads, C, stride, o);
  return true;
}
