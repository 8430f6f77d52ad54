/* attention.cu: the attention block after its GroupNorm (diffusers Attention, AttnProcessor):
 * y = (to_out(MHA(to_q(n), to_k(n), to_v(n))) + residual) * scale; n, residual, y (B, C, HW); y may alias
 * residual.
 *
 * Channel-major throughout, as the CPU: Q = Wq n + bq is (C, HW) per image, so projections are GEMMs like
 * 1x1 convolutions; head h is rows [h*d, (h+1)*d) of Q, K, V (c = h*d + i, as diffusers splits heads).
 * Three cores for O_h = (V_h + bv) softmax((Q_h + bq)^T (K_h + bk) / sqrt(d))^T:
 * - fp16 / bf16 with tokens % 16 == 0 and d % 16 == 0, d <= 512, where the device's shared memory allows:
 *   an mma.sync kernel (flash_split.cu's where 16-query blocks are few, else flash_attention.cu's), which
 *   also applies the biases (no bias pass) and, with one head (unless $DDPM_CUDA_ATTN_OUT=0), the out
 *   projection, bias, residual and scale: the whole block after the QKV GEMM in one launch;
 * - else, or with $DDPM_CUDA_ATTN=wmma, fp16 / bf16 up to 4096 tokens: flash_attention_kernel below (WMMA, the
 *   score rows and O in shared memory), after a bias pass;
 * - otherwise (fp32, odd shapes, $DDPM_CUDA_ATTN=cublas), after a bias pass:
 * S (queries x keys) = Q_h^T K_h / sqrt(d) in float32 (cuBLAS writes fp32 from fp16 inputs), softmax over
 * keys in float32 (max subtracted) into P (act type), O_h (d x queries) = V_h P^T.
 * Then (unless the mma core did it) y = (Wo O + bo + residual) * scale: a GEMM and one elementwise pass.
 *
 * When to_q, to_k and to_v lie next to each other in memory (the weight arena of cuda_backend.cu puts them
 * there) they form one (3C x C) matrix: one GEMM gives [Q; K; V] (3C, HW) per image (and, unless the mma
 * core takes them, one kernel adds the three biases). The score and PV GEMMs batch over b * heads + h with
 * one stride, which that layout allows for one head (stride 3C*HW) or one image (stride d*HW); other cases
 * take three GEMMs.
 *
 * Scratch (attention_scratch): Q, K, V, O (B, C, HW) act, and for the cuBLAS core S (B*heads, HW, HW) f32 + P
 * likewise in act; then the split partials of the projections where they run as 1x1 convolutions.
 * At the UNets' attention resolutions (16x16 = 256 tokens; 4x4 and 8x8 in the mid blocks) S is 256 KiB per
 * image and head. */
#include "cuda_backend.cuh"

#define ATTN_ALIGN 256

struct AttnLayout {
  size_t q, k, v, o, s, p, part, total; /* byte offsets into scratch */
};

enum AttnCore { CORE_MMA, CORE_WMMA, CORE_CUBLAS };
static AttnCore attn_core (const CudaBackend *cb, int BH, int HW, int d);

static size_t
align_up (size_t n)
{
  return (n + ATTN_ALIGN - 1) / ATTN_ALIGN * ATTN_ALIGN;
}

static AttnLayout
attn_layout (const CudaBackend *cb, int B, int C, int HW, int heads)
{
  AttnLayout l;
  const size_t act = align_up ((size_t) B * C * HW * cb->act_size);
  /* S and P only for the cuBLAS core (the fused ones keep scores on chip) */
  const bool cublas = heads <= 0 || C % heads != 0 || attn_core (cb, B * heads, HW, C / heads) == CORE_CUBLAS;
  const size_t scores = cublas ? (size_t) B * heads * HW * HW : 0;
  l.q = 0;
  l.k = l.q + act;
  l.v = l.k + act;
  l.o = l.v + act;
  l.s = l.o + act;
  l.p = l.s + align_up (scores * sizeof (float));
  l.part = l.p + align_up (scores * cb->act_size);
  /* the projections' split partials (as 1x1 convs): the fused QKV's (3C outputs) or one of C */
  const size_t qkv = cuda_projection_scratch (cb, 3 * C, C, B, HW), one = cuda_projection_scratch (cb, C, C, B, HW);
  l.total = l.part + align_up (qkv > one ? qkv : one);
  return l;
}

size_t
cuda_attention_scratch (DdpmBackend *be, int B, int C, int HW, int heads)
{
  return attn_layout (cuda_backend (be), B, C, HW, heads).total;
}

/* P row r = softmax(S row r), rows of n; one block per row. */
template <typename T>
__global__ void __launch_bounds__ (128)
softmax_rows_kernel (const float *__restrict__ S, T *__restrict__ P, int n)
{
  grid_dependency_wait ();
  __shared__ float red[32];
  const float *s = S + (size_t) blockIdx.x * n;
  T *p = P + (size_t) blockIdx.x * n;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    mx = fmaxf (mx, s[i]);
  mx = block_max (mx, red);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    sum += expf (s[i] - mx);
  sum = block_sum (sum, red);
  const float inv = 1.0f / sum;
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    p[i] = from_f32<T> (expf (s[i] - mx) * inv);
}

/* y = (proj + bias[c] + residual) * scale over (B, C, HW); y may alias residual. */
template <typename T>
__global__ void __launch_bounds__ (256)
attn_out_kernel (const T *__restrict__ proj, const float *__restrict__ bias, const T *residual, T *y, int C, int HW,
                 size_t n, float scale)
{
  grid_dependency_wait ();
  GRID_STRIDE (i, n)
    {
      const int c = (int) ((i / (size_t) HW) % (size_t) C);
      const float b = bias != NULL ? bias[c] : 0.0f;
      y[i] = from_f32<T> ((to_f32<T> (proj[i]) + b + to_f32<T> (residual[i])) * scale);
    }
}

/* The same on 16-byte vectors (HW a multiple of Vec16<T>::N: a vector lies in one channel plane; one index
 * division per vector instead of per element). */
template <typename T>
__global__ void __launch_bounds__ (256)
attn_out_vec_kernel (const T *__restrict__ proj, const float *__restrict__ bias, const T *residual, T *y, int C,
                     int HW, size_t nv, float scale)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  GRID_STRIDE (k, nv)
    {
      const size_t i = k * N;
      const int c = (int) ((i / (size_t) HW) % (size_t) C);
      const float b = bias != NULL ? bias[c] : 0.0f;
      float p[N], r[N];
      load16<T> (proj + i, p);
      load16<T> (residual + i, r);
#pragma unroll
      for (int j = 0; j < N; j++)
        p[j] = (p[j] + b + r[j]) * scale;
      store16<T> (y + i, p);
    }
}

/* [Q; K; V] (B, 3C, HW) += [bq; bk; bv] per row */
template <typename T>
__global__ void __launch_bounds__ (256)
qkv_bias_kernel (T *__restrict__ qkv, const float *__restrict__ bq, const float *__restrict__ bk,
                 const float *__restrict__ bv, int C, int HW, size_t n)
{
  grid_dependency_wait ();
  GRID_STRIDE (i, n)
    {
      const int r = (int) ((i / (size_t) HW) % (size_t) (3 * C));
      const float *bias = r < C ? bq : r < 2 * C ? bk : bv;
      const int c = r < C ? r : r < 2 * C ? r - C : r - 2 * C;
      qkv[i] = from_f32<T> (to_f32<T> (qkv[i]) + (bias != NULL ? bias[c] : 0.0f));
    }
}

/* The same on 16-byte vectors (HW a multiple of Vec16<T>::N). */
template <typename T>
__global__ void __launch_bounds__ (256)
qkv_bias_vec_kernel (T *__restrict__ qkv, const float *__restrict__ bq, const float *__restrict__ bk,
                     const float *__restrict__ bv, int C, int HW, size_t nv)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  GRID_STRIDE (k, nv)
    {
      const size_t i = k * N;
      const int r = (int) ((i / (size_t) HW) % (size_t) (3 * C));
      const float *bias = r < C ? bq : r < 2 * C ? bk : bv;
      const int c = r < C ? r : r < 2 * C ? r - C : r - 2 * C;
      add16<T> (qkv + i, bias != NULL ? bias[c] : 0.0f);
    }
}

/* ---- fused attention core (fp16 / bf16) ----
 * O_h^T (queries x d) = softmax(Q_h^T K_h / sqrt(d)) V_h^T for one head, scores never in global memory.
 * One block of WARPS (8; $DDPM_CUDA_FA_WARPS=4 for the old 4) per (16-query tile, b * heads + h); keys in chunks
 * of FA_KC with the online softmax
 * (running row max m and sum l, O rescaled by exp(m_old - m_new) per chunk), so any token count works.
 * Tensor cores (WMMA 16x16x16, fp32 accumulation) read Q, K, V fragments straight from global memory:
 * Q_h^T is Q's (d x HW) rows read col-major with ldm = HW, and so on; this needs HW % 16 == 0 and
 * d % 16 == 0 (32-byte aligned fragment pointers). Softmax in fp32; P rounded to T as the cuBLAS path does.
 * Shared memory (static, < 48 KiB): O accumulator 16 x FA_DMAX f32 (32 KiB), one score chunk 16 x FA_KC
 * f32 and its P in T. */
#define FA_BQ 16
#define FA_KC 128
#define FA_DMAX 512
#define FA_LDS (FA_KC + 4)   /* f32 ldm: multiple of 4 */
#define FA_LDP (FA_KC + 8)   /* 16-bit ldm: multiple of 8 */

/* WARPS 8: at batch 1 (16 blocks of 256 tokens) each warp's chain of L2 round trips (key tiles, dimension
 * tiles, softmax rows) is half what it is with 4. */
template <typename T, int WARPS>
__global__ void __launch_bounds__ (32 * WARPS)
flash_attention_kernel (const T *__restrict__ Q, const T *__restrict__ K, const T *__restrict__ V, T *__restrict__ O,
                        int HW, int d, int heads, int C, long long stride, float inv_sqrt_d)
{
  grid_dependency_wait ();
  using namespace nvcuda;
  __shared__ __align__ (128) float Os[FA_BQ * FA_DMAX];   /* row-major 16 x d, ld d */
  __shared__ __align__ (128) float Ss[FA_BQ * FA_LDS];
  __shared__ __align__ (128) T Ps[FA_BQ * FA_LDP];
  __shared__ float row_c[FA_BQ], row_l[FA_BQ];
  const int bh = blockIdx.y, q0 = blockIdx.x * FA_BQ;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T *q = Q + (size_t) bh * stride + q0;   /* (query t, dim i) at q[i * HW + t] */
  const T *k = K + (size_t) bh * stride;        /* (dim i, key j) at k[i * HW + j] */
  const T *v = V + (size_t) bh * stride;
  const int b = bh / heads, h = bh % heads;
  T *o = O + ((size_t) b * C + (size_t) h * d) * HW + q0;
  for (int i = threadIdx.x; i < FA_BQ * d; i += blockDim.x)
    Os[i] = 0.0f;
  /* warp w owns rows ROWS w .. ROWS (w + 1) - 1 of the softmax; m and l are the same in all its lanes */
  constexpr int ROWS = FA_BQ / WARPS;
  float m_row[ROWS], l_row[ROWS];
#pragma unroll
  for (int rr = 0; rr < ROWS; rr++)
    {
      m_row[rr] = -INFINITY;
      l_row[rr] = 0.0f;
    }
  __syncthreads ();
  for (int k0 = 0; k0 < HW; k0 += FA_KC)
    {
      const int nk = imin (FA_KC, HW - k0);
      /* S chunk (16 x nk) = Q^T (16 x d) K (d x nk), 16-key tiles over the warps */
      for (int t = warp; t < nk / 16; t += WARPS)
        {
          wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
          wmma::fill_fragment (s, 0.0f);
          /* unrolled so that 8 fragments' global loads are in flight at once: one after another, this loop
           * was a chain of L2 round trips (33 us per call at cifar10-32 batch 1 on the H200) */
#pragma unroll 8
          for (int i0 = 0; i0 < d; i0 += 16)
            {
              wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> a;
              wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bk;
              wmma::load_matrix_sync (a, q + (size_t) i0 * HW, HW);
              wmma::load_matrix_sync (bk, k + (size_t) i0 * HW + k0 + t * 16, HW);
              wmma::mma_sync (s, a, bk, s);
            }
          wmma::store_matrix_sync (Ss + t * 16, s, FA_LDS, wmma::mem_row_major);
        }
      __syncthreads ();
      /* online softmax of the chunk's rows */
#pragma unroll
      for (int rr = 0; rr < ROWS; rr++)
        {
          const int r = warp * ROWS + rr;
          float mx = -INFINITY;
          for (int j = lane; j < nk; j += 32)
            mx = fmaxf (mx, Ss[r * FA_LDS + j] * inv_sqrt_d);
          mx = warp_max (mx);
          const float m_new = fmaxf (m_row[rr], mx);
          float sum = 0.0f;
          for (int j = lane; j < nk; j += 32)
            {
              const float p = expf (Ss[r * FA_LDS + j] * inv_sqrt_d - m_new);
              Ps[r * FA_LDP + j] = from_f32<T> (p);
              sum += p;
            }
          sum = warp_sum (sum);
          const float c = expf (m_row[rr] - m_new);   /* 0 on the first chunk (m = -inf) */
          l_row[rr] = l_row[rr] * c + sum;
          m_row[rr] = m_new;
          if (lane == 0)
            row_c[r] = c;
        }
      __syncthreads ();
      for (int i = threadIdx.x; i < FA_BQ * d; i += blockDim.x)
        Os[i] *= row_c[i / d];
      __syncthreads ();
      /* O (16 x d) += P (16 x nk) V^T (nk x d), 16-dim tiles over the warps; V^T (key j, dim i) at
       * v[i * HW + j]: col-major with ldm HW */
      for (int t = warp; t < d / 16; t += WARPS)
        {
          wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
          wmma::load_matrix_sync (acc, Os + t * 16, d, wmma::mem_row_major);
#pragma unroll 8
          for (int j0 = 0; j0 < nk; j0 += 16)
            {
              wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa;
              wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> vb;
              wmma::load_matrix_sync (pa, Ps + j0, FA_LDP);
              wmma::load_matrix_sync (vb, v + (size_t) t * 16 * HW + k0 + j0, HW);
              wmma::mma_sync (acc, pa, vb, acc);
            }
          wmma::store_matrix_sync (Os + t * 16, acc, d, wmma::mem_row_major);
        }
      __syncthreads ();
    }
  if (lane == 0)
    {
#pragma unroll
      for (int rr = 0; rr < ROWS; rr++)
        row_l[warp * ROWS + rr] = l_row[rr];
    }
  __syncthreads ();
  /* O_h (d x HW) column q0 + r: 16 consecutive queries per dimension */
  for (int idx = threadIdx.x; idx < FA_BQ * d; idx += blockDim.x)
    {
      const int r = idx % FA_BQ, i = idx / FA_BQ;
      o[(size_t) i * HW + r] = from_f32<T> (Os[r * d + i] / row_l[r]);
    }
}

/* The WMMA core applies: 16-bit activations, shapes its fragments allow, and not switched off. */
static bool
flash_fits (const CudaBackend *cb, int HW, int d)
{
  return cb->act_type != CT_F32 && cb->attn_mode != ATTN_CUBLAS && HW % 16 == 0 && HW <= 4096 && d % 16 == 0
         && d <= FA_DMAX;
}

/* Which core: flash_attention.cu's mma.sync kernel (biases inside) unless $DDPM_CUDA_ATTN says otherwise or
 * the shape / the device's shared memory rule it out, else the WMMA kernel above, else cuBLAS + softmax. */
static AttnCore
attn_core (const CudaBackend *cb, int BH, int HW, int d)
{
  if (cb->attn_mode != ATTN_WMMA && cb->attn_mode != ATTN_CUBLAS && cuda_flash_mma_fits (cb, BH, HW, d, false))
    return CORE_MMA;
  return flash_fits (cb, HW, d) ? CORE_WMMA : CORE_CUBLAS;
}

template <typename T>
static void
flash_launch (CudaBackend *cb, const void *Q, const void *K, const void *V, void *O, int BH, int HW, int d, int heads,
              int C, long long stride, float inv_sqrt_d)
{
  const dim3 grid ((unsigned) (HW / FA_BQ), (unsigned) BH);
  if (cb->fa_warps == 4)
    launch (cb, "flash_attention", grid, 32 * 4, 0, flash_attention_kernel<T, 4>, (const T *) Q, (const T *) K,
            (const T *) V, (T *) O, HW, d, heads, C, stride, inv_sqrt_d);
  else
    launch (cb, "flash_attention", grid, 32 * 8, 0, flash_attention_kernel<T, 8>, (const T *) Q, (const T *) K,
            (const T *) V, (T *) O, HW, d, heads, C, stride, inv_sqrt_d);
}

/* dst_b (out x HW) = W (out x C) src_b (C x HW) for every image b (bias added by the caller): as a 1x1
 * convolution where cuda_projection takes it (conv2d.cu: small sizes, so batch 1 needs no cuBLAS), else cuBLAS. */
static void
project (CudaBackend *cb, const AttnLayout &l, const DdpmLinearW *w, const void *src, void *dst, int B, int C, int HW)
{
  if (!cuda_projection (cb, w, src, dst, B, HW, (char *) cb->scratch + l.part, l.total - l.part))
    cuda_gemm_rm (cb, false, false, w->out, HW, w->in, 1.0f, w->weight, weight_ld (w), 0, src, HW,
                  (long long) C * HW, 0.0f, dst, HW, (long long) w->out * HW, B, cb->act_type, cb->act_type);
}

void
cuda_attention (DdpmBackend *be, const DdpmAttentionW *w, const void *normed, const void *residual, void *y, int B,
                int C, int HW, int heads, float scale)
{
  CudaBackend *cb = cuda_backend (be);
  if (B <= 0 || C <= 0 || HW <= 0)
    return;
  if (heads <= 0 || C % heads != 0)
    {
      cuda_fail (cb, DDPM_ERROR_ARGUMENT, "attention: %d channels do not split into %d heads", C, heads);
      return;
    }
  const AttnLayout l = attn_layout (cb, B, C, HW, heads);
  if (l.total > cb->scratch_bytes)
    {
      cuda_fail (cb, DDPM_ERROR_DEVICE,
                 "attention: scratch of %zu bytes is smaller than the %zu it needs: reserve_scratch was not called "
                 "with attention_scratch's size",
                 cb->scratch_bytes, l.total);
      return;
    }
  char *base = (char *) cb->scratch;
  void *Q = base + l.q, *K = base + l.k, *V = base + l.v, *O = base + l.o, *P = base + l.p;
  float *S = (float *) (base + l.s);
  const int d = C / heads;
  const int BH = B * heads;

  /* Q_i, K_i, V_i of batch entry i = b * heads + h start at element i * stride (see the header) */
  const int ld = weight_ld (&w->to_q);
  const size_t wsize = (size_t) C * ld * cb->act_size;
  const bool adjacent = w->to_q.in == C && w->to_k.in == C && w->to_v.in == C
                        && (const char *) w->to_k.weight == (const char *) w->to_q.weight + wsize
                        && (const char *) w->to_v.weight == (const char *) w->to_k.weight + wsize;
  const bool fused = adjacent && (heads == 1 || B == 1);
  const AttnCore core = attn_core (cb, BH, HW, d);
  g_debug ("attention B%d C%d HW%d heads %d: %s, %s core", B, C, HW, heads, fused ? "fused QKV" : "three projections",
           core == CORE_MMA ? "mma" : core == CORE_WMMA ? "WMMA" : "cuBLAS");
  /* the mma core adds the Q and V biases itself (and needs no K bias): no bias passes */
  const bool bias_passes = core != CORE_MMA;
  long long stride;
  if (fused)
    {
      /* [Q; K; V]_b (3C x HW) = [Wq; Wk; Wv] (3C x C) n_b (C x HW) */
      const DdpmLinearW qkv = { w->to_q.weight, NULL, 3 * C, C, w->to_q.k };
      project (cb, l, &qkv, normed, Q, B, C, HW);
      const size_t n3 = (size_t) B * 3 * C * HW;
      if (bias_passes)
        DISPATCH_ACT (cb, T, {
          constexpr int N = Vec16<T>::N;
          if (HW % N == 0 && aligned16 (Q))
            launch (cb, "qkv_bias", elementwise_blocks (cb, n3 / N, 256), 256, 0, qkv_bias_vec_kernel<T>, (T *) Q,
                    (const float *) w->to_q.bias, (const float *) w->to_k.bias, (const float *) w->to_v.bias, C, HW,
                    n3 / N);
          else
            launch (cb, "qkv_bias", elementwise_blocks (cb, n3, 256), 256, 0, qkv_bias_kernel<T>, (T *) Q,
                    (const float *) w->to_q.bias, (const float *) w->to_k.bias, (const float *) w->to_v.bias, C, HW, n3);
        });
      K = (char *) Q + (size_t) C * HW * cb->act_size;
      V = (char *) Q + (size_t) 2 * C * HW * cb->act_size;
      stride = heads == 1 ? 3LL * C * HW : (long long) d * HW;
    }
  else
    {
      project (cb, l, &w->to_q, normed, Q, B, C, HW);
      project (cb, l, &w->to_k, normed, K, B, C, HW);
      project (cb, l, &w->to_v, normed, V, B, C, HW);
      if (bias_passes)
        {
          cuda_add_bias (cb, Q, (const float *) w->to_q.bias, B, C, HW);
          cuda_add_bias (cb, K, (const float *) w->to_k.bias, B, C, HW);
          cuda_add_bias (cb, V, (const float *) w->to_v.bias, B, C, HW);
        }
      stride = (long long) d * HW;
    }

  const float inv_sqrt_d = 1.0f / sqrtf ((float) d);
  if (core == CORE_MMA)
    {
      /* one head: the core also does the out projection, bias, residual and scale (one launch for all) */
      const CudaFlashOut out = { w->to_out.weight, weight_ld (&w->to_out), (const float *) w->to_out.bias, residual, y,
                                 scale };
      if (cb->attn_out_fuse && heads == 1 && w->to_out.in == C && w->to_out.out == C
          && cuda_flash_attention_mma (cb, Q, K, V, O, (const float *) w->to_q.bias, (const float *) w->to_v.bias, B,
                                       heads, C, HW, stride, &out))
        return;
      cuda_flash_attention_mma (cb, Q, K, V, O, (const float *) w->to_q.bias, (const float *) w->to_v.bias, B, heads,
                                C, HW, stride, NULL);
    }
  else if (core == CORE_WMMA)
    {
      if (cb->act_type == CT_F16)
        flash_launch<__half> (cb, Q, K, V, O, BH, HW, d, heads, C, stride, inv_sqrt_d);
      else
        flash_launch<__nv_bfloat16> (cb, Q, K, V, O, BH, HW, d, heads, C, stride, inv_sqrt_d);
    }
  else
    {
      /* S_i (HW x HW) = Q_i^T (HW x d) K_i (d x HW) / sqrt(d) */
      cuda_gemm_rm (cb, true, false, HW, HW, d, inv_sqrt_d, Q, HW, stride, K, HW, stride, 0.0f, S, HW,
                    (long long) HW * HW, BH, cb->act_type, CT_F32);
      DISPATCH_ACT (cb, T, launch (cb, "softmax_rows", (unsigned) ((size_t) BH * HW), 128, 0, softmax_rows_kernel<T>,
                                   (const float *) S, (T *) P, HW));
      /* O_i (d x HW) = V_i (d x HW) P_i^T (HW x HW), O in the plain (B, C, HW) layout */
      cuda_gemm_rm (cb, false, true, d, HW, HW, 1.0f, V, HW, stride, P, HW, (long long) HW * HW, 0.0f, O, HW,
                    (long long) d * HW, BH, cb->act_type, cb->act_type);
    }
  /* out projection into Q's space (free now), then bias + residual + scale */
  project (cb, l, &w->to_out, O, Q, B, C, HW);
  const size_t n = (size_t) B * C * HW;
  DISPATCH_ACT (cb, T, {
    constexpr int N = Vec16<T>::N;
    if (HW % N == 0 && aligned16 (Q) && aligned16 (residual) && aligned16 (y))
      launch (cb, "attention_out", elementwise_blocks (cb, n / N, 256), 256, 0, attn_out_vec_kernel<T>, (const T *) Q,
              (const float *) w->to_out.bias, (const T *) residual, (T *) y, C, HW, n / N, scale);
    else
      launch (cb, "attention_out", elementwise_blocks (cb, n, 256), 256, 0, attn_out_kernel<T>, (const T *) Q,
              (const float *) w->to_out.bias, (const T *) residual, (T *) y, C, HW, n, scale);
  });
}
