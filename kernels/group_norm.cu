/* group_norm.cu: y = GroupNorm(x) * gamma + beta over (B, C, HW) with G groups, then optionally
 * y = y * (1 + scale) + shift with scale_shift (B, 2C) = [scale, shift], then optionally SiLU.
 * x and y may alias.
 *
 * A group (b, g) is cpg * HW contiguous values (cpg = C / G). When HW is a multiple of 8 and the buffers are
 * 16-byte aligned (every UNet layer), threads move 16 bytes at a time (VEC), all in one channel. Statistics in float32, two-pass (mean, then
 * the sum of squared deviations around it: no cancellation), biased variance; rstd in double as the CPU.
 * The affine part follows the CPU's order: a = rstd * gamma[c], bias = beta[c] - mean * a, y = x * a + bias.
 *
 * Four shapes of launch:
 * - in registers: one block per group of at most GN_THREADS * 8 vectors (every cifar10-32 layer): the group
 *   is read once into registers and both statistics and the output come from there (one read and one
 *   write of the tensor instead of three reads and one write). The default where it fits.
 * - fused: one block per group computes the statistics and normalises (groups read 3 times, from L2 after
 *   the first); right when there are enough groups to fill the GPU or the groups are small
 *   ($DDPM_CUDA_GN=fused forces it, also where the register kernel would fit).
 * - split: a group is cut into S chunks; a statistics kernel writes (mean, M2, n) per chunk, then the apply
 *   kernel's blocks each merge the S partials (Chan et al.'s parallel variance) and normalise their chunk.
 *   For few large groups (celebahq-256 at 256x256: 32 groups of 262144 values per image).
 * - cluster ($DDPM_CUDA_GN=cluster, sm_90, opt-in until timed): the register kernel with a group's pixels split
 *   over a thread-block cluster of 2-16 blocks, the blocks' statistics merged through distributed shared
 *   memory; for few groups (batch 1: 4 blocks per group) and groups up to 16 times the register kernel's.
 * And for a convolution that reads the result channels last (cuda_group_norm_nhwc, for group_norm_conv2d):
 * where a group fits the register kernel, that kernel stages the normalised group in shared memory and
 * writes it out along pixels (one launch: every resnet norm of cifar10-32, and celebahq-256 below 256x256);
 * else the statistics kernel, then a normalising transpose into the convolution's scratch. */
#include "cuda_backend.cuh"

#define GN_THREADS 256
#define GN_MAX_SPLIT 64
#define GN_MERGE_BATCH 8                /* statistics partials loaded together by gn_merge */
#define GN_NHWC_TILES 8                 /* 32-pixel tiles per block of gn_apply_nhwc_kernel at most */
#define GN_CLUSTER_MAX 16               /* blocks per group in gn_cluster_kernel at most (above 8: non-portable) */
#define GN_CLUSTER_SMEM ((5 + 3 * GN_CLUSTER_MAX) * sizeof (float))   /* its dynamic shared memory */

/* Two-pass statistics of v[begin, end) by the whole block: mean and M2 = sum (v - mean)^2. VEC: begin and
 * end are multiples of Vec16<T>::N and v is 16-byte aligned. */
template <typename T, bool VEC>
__device__ __forceinline__ void
block_stats (const T *__restrict__ v, size_t begin, size_t end, float *red, float *mean_out, float *m2_out)
{
  constexpr int N = VEC ? Vec16<T>::N : 1;
  float s = 0.0f;
  for (size_t i = begin + threadIdx.x * N; i < end; i += blockDim.x * N)
    {
      if (VEC)
        {
          float f[Vec16<T>::N];
          load16<T> (v + i, f);
#pragma unroll
          for (int j = 0; j < N; j++)
            s += f[j];
        }
      else
        s += to_f32<T> (v[i]);
    }
  const float n = (float) (end - begin);
  const float mean = end > begin ? block_sum (s, red) / n : 0.0f;
  float q = 0.0f;
  for (size_t i = begin + threadIdx.x * N; i < end; i += blockDim.x * N)
    {
      if (VEC)
        {
          float f[Vec16<T>::N];
          load16<T> (v + i, f);
#pragma unroll
          for (int j = 0; j < N; j++)
            q += (f[j] - mean) * (f[j] - mean);
        }
      else
        {
          const float d = to_f32<T> (v[i]) - mean;
          q += d * d;
        }
    }
  const float m2 = block_sum (q, red);
  *mean_out = mean;
  *m2_out = m2;
}

/* y = x * a + bias, then * mul + add (scale_shift), then SiLU; one channel's constants. */
struct GnChannel {
  float a, bias, mul, add;
};

/* What a channel's constants need besides the statistics: gamma, beta and image b's scale-shift. The register
 * kernels load them with x, before the statistics: afterwards each vector's loads waited behind the previous
 * vector's store, one round trip per vector. */
template <typename T>
struct GnParams {
  float gamma, beta;
  T mul, add;                           /* image b's scale-shift as stored (0 where there is none): converted
                                         * only in gn_channel_of, so the loads of several channels' parameters
                                         * are issued before any is waited for */
};

template <typename T>
__device__ __forceinline__ GnParams<T>
gn_params (int b, int c, int C, const float *__restrict__ gamma, const float *__restrict__ beta,
           const T *__restrict__ ss)
{
  GnParams<T> p { gamma[c], beta[c], from_f32<T> (0.0f), from_f32<T> (0.0f) };
  if (ss != NULL)
    {
      p.mul = ss[(size_t) b * 2 * C + c];
      p.add = ss[(size_t) b * 2 * C + C + c];
    }
  return p;
}

template <typename T>
__device__ __forceinline__ GnChannel
gn_channel_of (const GnParams<T> &p, float mean, float rstd, bool scale_shift)
{
  GnChannel k;
  k.a = rstd * p.gamma;
  k.bias = p.beta - mean * k.a;
  k.mul = scale_shift ? 1.0f + to_f32<T> (p.mul) : 1.0f;
  k.add = scale_shift ? to_f32<T> (p.add) : 0.0f;
  return k;
}

template <typename T>
__device__ __forceinline__ GnChannel
gn_channel (int b, int c, int C, float mean, float rstd, const float *__restrict__ gamma,
            const float *__restrict__ beta, const T *__restrict__ ss)
{
  return gn_channel_of (gn_params<T> (b, c, C, gamma, beta, ss), mean, rstd, ss != NULL);
}

__device__ __forceinline__ float
gn_value (float x, const GnChannel &k, bool scale_shift, bool silu)
{
  float v = x * k.a + k.bias;
  if (scale_shift)
    v = v * k.mul + k.add;
  return silu ? silu_f (v) : v;
}

/* Normalises v[begin, end) of group (b, g) into y. */
template <typename T, bool VEC>
__device__ __forceinline__ void
block_apply (const T *xg, T *yg, size_t begin, size_t end, int b, int g, int cpg, int C, int HW, float mean,
             float rstd, const float *__restrict__ gamma, const float *__restrict__ beta, const T *__restrict__ ss,
             bool silu)
{
  constexpr int N = VEC ? Vec16<T>::N : 1;
  for (size_t i = begin + threadIdx.x * N; i < end; i += blockDim.x * N)
    {
      const int c = g * cpg + (int) (i / (size_t) HW);   /* VEC: HW % N == 0, so one channel */
      const GnChannel k = gn_channel<T> (b, c, C, mean, rstd, gamma, beta, ss);
      if (VEC)
        {
          float f[Vec16<T>::N];
          load16<T> (xg + i, f);
#pragma unroll
          for (int j = 0; j < N; j++)
            f[j] = gn_value (f[j], k, ss != NULL, silu);
          store16<T> (yg + i, f);
        }
      else
        yg[i] = from_f32<T> (gn_value (to_f32<T> (xg[i]), k, ss != NULL, silu));
    }
}

template <typename T, bool VEC>
__global__ void __launch_bounds__ (GN_THREADS)
gn_fused_kernel (const T *x, T *y, const float *__restrict__ gamma, const float *__restrict__ beta,
                 const T *__restrict__ ss, int C, int HW, int G, float eps, bool silu)
{
  grid_dependency_wait ();
  __shared__ float red[32];
  const int bg = blockIdx.x, b = bg / G, g = bg % G, cpg = C / G;
  const size_t len = (size_t) cpg * HW;
  const T *xg = x + (size_t) bg * len;
  T *yg = y + (size_t) bg * len;
  float mean, m2;
  block_stats<T, VEC> (xg, 0, len, red, &mean, &m2);
  const float rstd = (float) (1.0 / sqrt ((double) (m2 / (float) len) + (double) eps));
  block_apply<T, VEC> (xg, yg, 0, len, b, g, cpg, C, HW, mean, rstd, gamma, beta, ss, silu);
}

/* The group g of image b, normalised and staged in shared memory as [cpg][HW] (tile), stored channels last:
 * pixel p's cpg channels at dst + p * C, in vectors of E values (E * sizeof (T) <= 16; cpg % E == 0, dst and C
 * such that every vector is aligned). Consecutive threads take consecutive pixels: conflict-free shared reads. */
template <typename T, int E>
__device__ __forceinline__ void
group_tile_to_nhwc (const T *tile, T *dst, int cpg, int HW, int C)
{
  struct alignas (E * sizeof (T)) Vec {
    T v[E];
  };
  const int parts = cpg / E;
  /* q's (pixel, channel) carried along as q steps by blockDim.x: one division per thread, not one per vector
   * (sm_90a: 23-40 instructions per vector, was 32-51) */
  const int dq = (int) blockDim.x / HW, dr = (int) blockDim.x % HW;
  int pix = (int) threadIdx.x % HW, c0 = (int) threadIdx.x / HW * E;
  for (int q = threadIdx.x; q < parts * HW; q += blockDim.x)
    {
      Vec out;
#pragma unroll
      for (int e = 0; e < E; e++)
        out.v[e] = tile[(c0 + e) * HW + pix];
      *reinterpret_cast<Vec *> (dst + (size_t) pix * C + c0) = out;
      pix += dr;
      c0 += dq * E;
      if (pix >= HW)
        {
          pix -= HW;
          c0 += E;
        }
    }
}

/* group_tile_to_nhwc in the widest vector that divides a pixel's cpg channels: 16, 8, 4 bytes, else one value. */
template <typename T>
__device__ __forceinline__ void
gn_tile_to_nhwc (const T *tile, T *dst, int cpg, int HW, int C)
{
  constexpr int E1 = 16 / sizeof (T), E2 = E1 / 2, E3 = E2 > 1 ? E2 / 2 : 1;
  if (cpg % E1 == 0)
    group_tile_to_nhwc<T, E1> (tile, dst, cpg, HW, C);
  else if (cpg % E2 == 0)
    group_tile_to_nhwc<T, E2> (tile, dst, cpg, HW, C);
  else if (cpg % E3 == 0)
    group_tile_to_nhwc<T, E3> (tile, dst, cpg, HW, C);
  else
    group_tile_to_nhwc<T, 1> (tile, dst, cpg, HW, C);
}

/* Whether a GroupNorm of T may sum a held-back split-K sum (RED): 16-bit only, as K splits are (conv2d.cu
 * launch_reduce), so the float RED kernels are never instantiated. */
template <typename T>
constexpr bool GN_RED = !std::is_same<T, float>::value;

template <typename T>
struct GnPartials {                     /* a held-back split-K sum (cuda_backend.cuh CudaPendingReduce), typed */
  const float *partial, *bias;
  T *conv_y;                            /* = x: where the sums go too */
  const T *channel_bias, *residual;
  int splits, bm, bn, gx, cb_stride;
  float scale;
  int cout;                             /* x's channels [0, cout) are the convolution's, the rest x's own (batch 1:
                                         * an up resnet's concatenation [hidden | skip] whose head it wrote) */
};

/* With RED, x's N values at (image b, channel m, pixels pix ..) are a split convolution's: the sum of its float
 * partials in split order onto the bias, then its epilogue, rounded to T, in conv_splitk_reduce_kernel's
 * order (conv2d.cu, conv_store), so the same bits; they are written to x as well. pix % N == 0. */
template <typename T, int N>
__device__ __forceinline__ void
gn_partials_load (const GnPartials<T> &pr, int b, int m, int pix, int C, int HW, float (&f)[N])
{
  const long long pp = (long long) b * HW + pix;
  const size_t te = (size_t) pr.bm * pr.bn;
  const size_t tile = (size_t) (m / pr.bm) * pr.gx + (size_t) (pp / pr.bn);
  const float *src = pr.partial + tile * pr.splits * te + (size_t) (m % pr.bm) * pr.bn + (size_t) (pp % pr.bn);
  const float b0 = pr.bias != NULL ? pr.bias[m] : 0.0f;
#pragma unroll
  for (int j = 0; j < N; j++)
    f[j] = b0;
#pragma unroll 4
  for (int z = 0; z < pr.splits; z++)
#pragma unroll
    for (int j = 0; j < N; j += 4)
      {
        const float4 v = __ldcg (reinterpret_cast<const float4 *> (src + (size_t) z * te + j));
        f[j] += v.x;
        f[j + 1] += v.y;
        f[j + 2] += v.z;
        f[j + 3] += v.w;
      }
  const size_t i = ((size_t) b * C + m) * HW + pix;
  const float add = pr.channel_bias != NULL ? to_f32<T> (pr.channel_bias[(size_t) b * pr.cb_stride + m]) : 0.0f;
#pragma unroll
  for (int j = 0; j < N; j++)
    {
      float v = f[j];
      if (pr.channel_bias != NULL)
        v = __fadd_rn (v, add);
      if (pr.residual != NULL)
        v = __fmul_rn (__fadd_rn (to_f32<T> (pr.residual[i + j]), v), pr.scale);
      f[j] = to_f32<T> (from_f32<T> (v));
    }
  store16<T> (pr.conv_y + i, f);
}

/* gn_fused_kernel with the group (len <= GN_THREADS * R * Vec16<T>::N values, 16-byte vectors) held in R
 * vectors per thread: the same operations in the same order as block_stats and block_apply, so the same
 * bits, from one read of x. NHWC: y is the channels-last copy (B, HW, C) a convolution reads (group_norm_conv2d):
 * the normalised group goes through shared memory and out along pixels, so statistics, normalisation and
 * transpose are one launch. */
template <typename T, int R, bool NHWC, bool RED = false>
__global__ void __launch_bounds__ (GN_THREADS)
gn_regs_kernel (const T *x, T *y, const float *__restrict__ gamma, const float *__restrict__ beta,
                const T *__restrict__ ss, int C, int HW, int G, float eps, bool silu, GnPartials<T> pr,
                GnPartials<T> rider)
{
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  __shared__ float red[32];
  __shared__ __align__ (16) T tile[NHWC ? GN_THREADS * R * N : 1];
  const int bg = blockIdx.x, b = bg / G, g = bg % G, cpg = C / G;
  const size_t len = (size_t) cpg * HW;
  const T *xg = x + (size_t) bg * len;
  T *yg = NHWC ? tile : y + (size_t) bg * len;
  float f[R][N] = {};                   /* zeros only quiet the compiler: every use is guarded like the load */
  uint4 raw[R] = {};                    /* x's vectors, converted after all are loaded (zeros: as f's) */
  GnParams<T> prm[RED ? 1 : R];         /* RED: loaded when applied (held from here they crowded out the
                                         * partial sums' registers, serialising their loads) */
  float s = 0.0f;
#pragma unroll
  for (int r = 0; r < R; r++)
    {
      /* past len: vector 0 (always valid) is read instead, so no branch parts the loads */
      const size_t i = ((size_t) threadIdx.x + (size_t) r * blockDim.x) * N, ic = i < len ? i : 0;
      const int c = g * cpg + (int) (ic / (size_t) HW);
      if constexpr (!RED)
        prm[r] = gn_params<T> (b, c, C, gamma, beta, ss);
      if (RED && i < len && c < pr.cout)
        gn_partials_load<T, N> (pr, b, c, (int) (i % (size_t) HW), C, HW, f[r]);
      else
        raw[r] = *reinterpret_cast<const uint4 *> (xg + ic);
    }
#pragma unroll
  for (int r = 0; r < R; r++)
    {
      const size_t i = ((size_t) threadIdx.x + (size_t) r * blockDim.x) * N;
      if (i < len)
        {
          if (!(RED && g * cpg + (int) (i / (size_t) HW) < pr.cout))
            unpack16<T> (raw[r], f[r]);
#pragma unroll
          for (int j = 0; j < N; j++)
            s += f[r][j];
        }
    }
  const float mean = block_sum (s, red) / (float) len;
  float q = 0.0f;
#pragma unroll
  for (int r = 0; r < R; r++)
    if (((size_t) threadIdx.x + (size_t) r * blockDim.x) * N < len)
#pragma unroll
      for (int j = 0; j < N; j++)
        q += (f[r][j] - mean) * (f[r][j] - mean);
  const float m2 = block_sum (q, red);
  const float rstd = (float) (1.0 / sqrt ((double) (m2 / (float) len) + (double) eps));
#pragma unroll
  for (int r = 0; r < R; r++)
    {
      const size_t i = ((size_t) threadIdx.x + (size_t) r * blockDim.x) * N;
      if (i < len)
        {
          GnChannel k;
          if constexpr (RED)
            k = gn_channel<T> (b, g * cpg + (int) (i / (size_t) HW), C, mean, rstd, gamma, beta, ss);
          else
            k = gn_channel_of (prm[r], mean, rstd, ss != NULL);
#pragma unroll
          for (int j = 0; j < N; j++)
            f[r][j] = gn_value (f[r][j], k, ss != NULL, silu);
          store16<T> (yg + i, f[r]);
        }
    }
  if (NHWC)
    {
      __syncthreads ();
      gn_tile_to_nhwc<T> (tile, y + (size_t) b * HW * C + (size_t) g * cpg, cpg, HW, C);
    }
  if (RED && rider.partial != NULL)     /* the rider's sum over the same values (its own output, untouched here) */
#pragma unroll
    for (int r = 0; r < R; r++)
      {
        const size_t i = ((size_t) threadIdx.x + (size_t) r * blockDim.x) * N;
        if (i < len)
          {
            float t[N];
            gn_partials_load<T, N> (rider, b, g * cpg + (int) (i / (size_t) HW), (int) (i % (size_t) HW), C, HW, t);
          }
      }
}

/* Chunk s of S of a group of len values: [begin, end), chunk lengths multiples of 8. */
__device__ __forceinline__ void
gn_chunk (size_t len, int S, int s, size_t *begin, size_t *end)
{
  size_t chunk = ((len + (size_t) S - 1) / (size_t) S + 7) & ~(size_t) 7;
  size_t bgn = (size_t) s * chunk;
  *begin = bgn < len ? bgn : len;
  *end = bgn + chunk < len ? bgn + chunk : len;
}

template <typename T, bool VEC>
__global__ void __launch_bounds__ (GN_THREADS)
gn_stats_kernel (const T *__restrict__ x, float *__restrict__ stats, int C, int HW, int G, int S)
{
  grid_dependency_wait ();
  __shared__ float red[32];
  const int s = blockIdx.x, bg = blockIdx.y;
  const size_t len = (size_t) (C / G) * HW;
  size_t begin, end;
  gn_chunk (len, S, s, &begin, &end);
  float mean, m2;
  block_stats<T, VEC> (x + (size_t) bg * len, begin, end, red, &mean, &m2);
  if (threadIdx.x == 0)
    {
      float *o = stats + ((size_t) bg * S + s) * 3;
      o[0] = mean;
      o[1] = m2;
      o[2] = (float) (end - begin);
    }
}

/* Adds one partial (mean mb, M2 m2b, nb values) to the running (n, mean, m2): Chan et al.'s parallel
 * variance in double; an empty partial (nb 0) changes nothing. */
__device__ __forceinline__ void
chan_merge (float mb, float m2b, float nb, double *n, double *mean, double *m2)
{
  if (nb == 0.0f)
    return;
  const double delta = (double) mb - *mean, tot = *n + (double) nb;
  *mean += delta * (double) nb / tot;
  *m2 += (double) m2b + delta * delta * *n * (double) nb / tot;
  *n = tot;
}

/* (mean, rstd) of merged statistics, rstd in double as the CPU. */
__device__ __forceinline__ float2
gn_mean_rstd (double n, double mean, double m2, float eps)
{
  return make_float2 ((float) mean, (float) (1.0 / sqrt ((double) (float) (m2 / n) + (double) eps)));
}

/* A group's (mean, rstd) from its S partials p[3 * i] = (mean, M2, n), merged in a fixed order
 * (deterministic; Chan et al.), rstd in double as the CPU. */
__device__ __forceinline__ float2
gn_merge (const float *p, int S, float eps)
{
  /* the partials' loads GN_MERGE_BATCH at a time, then merged one by one in order (the same sums as one at a
   * time): the H100 trace of fcae280 had gn_apply_nhwc_kernel at ~95 us per call at 256 x 256, each block
   * waiting on S = 17 L2 round trips before its tile */
  double n = 0.0, mean = 0.0, m2 = 0.0;
#pragma unroll 1
  for (int i0 = 0; i0 < S; i0 += GN_MERGE_BATCH)
    {
      float part[GN_MERGE_BATCH][3];
#pragma unroll
      for (int u = 0; u < GN_MERGE_BATCH; u++)
#pragma unroll
        for (int e = 0; e < 3; e++)
          part[u][e] = i0 + u < S ? p[3 * (i0 + u) + e] : 0.0f;
#pragma unroll
      for (int u = 0; u < GN_MERGE_BATCH; u++)
        chan_merge (part[u][0], part[u][1], part[u][2], &n, &mean, &m2);
    }
  return gn_mean_rstd (n, mean, m2, eps);
}

/* The register kernel with each group split over a thread-block cluster of K blocks (along z: blockIdx.z =
 * group * K + rank): rank k holds pixels [k HW/K, (k+1) HW/K) of the group's cpg channels in registers (R
 * vectors per thread), with RED summing them from a split convolution's partials as gn_regs_kernel does. Each
 * block's two-pass (mean, M2, n) goes into its shared memory; after a cluster barrier thread 0 merges the K
 * of them in rank order through distributed shared memory (chan_merge, as the split path's gn_merge), a second
 * barrier keeps every block's partial alive until all have read it and publishes the result; then each block
 * normalises its pixels (NHWC: through its shared tile, out along pixels). Why: with few groups (batch 1: 32)
 * one block per group leaves most SMs idle, and a held-back split-K sum read by one block per group (~120-240
 * KiB of partials at cifar10-32 b1) runs on 32 SMs. Statistics differ from gn_regs_kernel's in the last bits
 * (merged partials), the same for every caller of one shape (NCHW and NHWC, with or without RED).
 * Dynamic shared memory: 5 floats (the block's mean, M2, n; the group's mean, rstd), then the K ranks' (mean,
 * M2, n) copied here for the merge; what outlives a cluster barrier lives there (the emulator runs a cluster's
 * blocks in turns between barriers). */
template <typename T, int R, bool NHWC, bool RED = false>
__global__ void __launch_bounds__ (GN_THREADS)
gn_cluster_kernel (const T *x, T *y, const float *__restrict__ gamma, const float *__restrict__ beta,
                   const T *__restrict__ ss, int C, int HW, int G, float eps, bool silu, GnPartials<T> pr,
                   GnPartials<T> rider, int K)
{
#if CLUSTER_COMPILED
  grid_dependency_wait ();
  constexpr int N = Vec16<T>::N;
  __shared__ float red[32];
  __shared__ __align__ (16) T tile[NHWC ? GN_THREADS * R * N : 1];
  DYNAMIC_SMEM (smem);
  float *stat = reinterpret_cast<float *> (smem);
  const int rank = (int) blockIdx.z % K, bg = (int) blockIdx.z / K, b = bg / G, g = bg % G, cpg = C / G;
  const int hwk = HW / K, p0 = rank * hwk, vpc = hwk / N;     /* this block's pixels; vectors per channel */
  const int nvec = cpg * vpc;
  float f[R][N] = {};                   /* zeros only quiet the compiler: every use is guarded like the load */
  uint4 raw[R] = {};                    /* as gn_regs_kernel: loads first (past nvec vector 0 again), then used */
  GnParams<T> prm[RED ? 1 : R];         /* RED: loaded when applied (held from here they crowded out the
                                         * partial sums' registers, serialising their loads) */
  float s = 0.0f;
#pragma unroll
  for (int r = 0; r < R; r++)
    {
      const int v = (int) threadIdx.x + r * (int) blockDim.x, vc = v < nvec ? v : 0;
      const int m = g * cpg + vc / vpc, pix = p0 + (vc % vpc) * N;
      if constexpr (!RED)
        prm[r] = gn_params<T> (b, m, C, gamma, beta, ss);
      if (RED && v < nvec && m < pr.cout)
        gn_partials_load<T, N> (pr, b, m, pix, C, HW, f[r]);
      else
        raw[r] = *reinterpret_cast<const uint4 *> (x + ((size_t) b * C + m) * HW + pix);
    }
#pragma unroll
  for (int r = 0; r < R; r++)
    {
      const int v = (int) threadIdx.x + r * (int) blockDim.x;
      if (v < nvec)
        {
          if (!(RED && g * cpg + v / vpc < pr.cout))
            unpack16<T> (raw[r], f[r]);
#pragma unroll
          for (int j = 0; j < N; j++)
            s += f[r][j];
        }
    }
  const float n = (float) (nvec * N);
  const float mean_k = block_sum (s, red) / n;
  float q = 0.0f;
#pragma unroll
  for (int r = 0; r < R; r++)
    if ((int) threadIdx.x + r * (int) blockDim.x < nvec)
#pragma unroll
      for (int j = 0; j < N; j++)
        q += (f[r][j] - mean_k) * (f[r][j] - mean_k);
  const float m2_k = block_sum (q, red);
  if (threadIdx.x == 0)
    {
      stat[0] = mean_k;
      stat[1] = m2_k;
      stat[2] = n;
    }
  cluster_sync ();
  /* thread k copies rank k's partial here (K distributed-shared-memory trips at once; thread 0 reading them
   * in turn waited for each: tools/sass_chains.py), then thread 0 merges them in rank order */
  float *peer = stat + 5;
  if ((int) threadIdx.x < K)
    {
      const float *o = cluster_map_shared (stat, (int) threadIdx.x);
      const float m = o[0], q2 = o[1], nk = o[2];
      peer[3 * threadIdx.x] = m;
      peer[3 * threadIdx.x + 1] = q2;
      peer[3 * threadIdx.x + 2] = nk;
    }
  __syncthreads ();
  if (threadIdx.x == 0)
    {
      double gn = 0.0, gmean = 0.0, gm2 = 0.0;
      for (int k = 0; k < K; k++)       /* rank order: the same sums on every rank */
        chan_merge (peer[3 * k], peer[3 * k + 1], peer[3 * k + 2], &gn, &gmean, &gm2);
      const float2 group = gn_mean_rstd (gn, gmean, gm2, eps);
      stat[3] = group.x;
      stat[4] = group.y;
    }
  cluster_sync ();                      /* every rank's partial read; the group's constants visible */
  const float mean = stat[3], rstd = stat[4];
#pragma unroll
  for (int r = 0; r < R; r++)
    {
      const int v = (int) threadIdx.x + r * (int) blockDim.x;
      if (v < nvec)
        {
          const int c = v / vpc, pix = (v % vpc) * N;
          GnChannel k;
          if constexpr (RED)
            k = gn_channel<T> (b, g * cpg + c, C, mean, rstd, gamma, beta, ss);
          else
            k = gn_channel_of (prm[r], mean, rstd, ss != NULL);
#pragma unroll
          for (int j = 0; j < N; j++)
            f[r][j] = gn_value (f[r][j], k, ss != NULL, silu);
          store16<T> (NHWC ? tile + (size_t) c * hwk + pix : y + ((size_t) b * C + g * cpg + c) * HW + p0 + pix, f[r]);
        }
    }
  if (NHWC)
    {
      __syncthreads ();
      gn_tile_to_nhwc<T> (tile, y + ((size_t) b * HW + p0) * C + (size_t) g * cpg, cpg, hwk, C);
    }
  if (RED && rider.partial != NULL)     /* the rider's sum over the same values (its own output, untouched here) */
#pragma unroll
    for (int r = 0; r < R; r++)
      {
        const int v = (int) threadIdx.x + r * (int) blockDim.x;
        if (v < nvec)
          {
            float t[N];
            gn_partials_load<T, N> (rider, b, g * cpg + v / vpc, p0 + (v % vpc) * N, C, HW, t);
          }
      }
#else
  grid_dependency_wait ();
  __trap ();                             /* sm_80-89: never launched (cuda_gn_cluster_prepare) */
#endif
}

template <typename T, bool VEC>
__global__ void __launch_bounds__ (GN_THREADS)
gn_apply_kernel (const T *x, T *y, const float *__restrict__ stats, const float *__restrict__ gamma,
                 const float *__restrict__ beta, const T *__restrict__ ss, int C, int HW, int G, int S, float eps,
                 bool silu)
{
  grid_dependency_wait ();
  __shared__ float2 group;               /* mean, rstd */
  const int s = blockIdx.x, bg = blockIdx.y, b = bg / G, g = bg % G, cpg = C / G;
  const size_t len = (size_t) cpg * HW;
  if (threadIdx.x == 0)
    group = gn_merge (stats + (size_t) bg * S * 3, S, eps);
  __syncthreads ();
  size_t begin, end;
  gn_chunk (len, S, s, &begin, &end);
  block_apply<T, VEC> (x + (size_t) bg * len, y + (size_t) bg * len, begin, end, b, g, cpg, C, HW, group.x, group.y,
                       gamma, beta, ss, silu);
}

/* The split path's normalisation written channels last, for the convolution that reads it
 * (cuda_group_norm_conv2d): xh (B, HW, C) = GroupNorm(x (B, C, HW)) [* (1 + scale) + shift] [SiLU], in 32 x 32
 * tiles of channels x pixels (nchw_to_nhwc_tile), `tiles` consecutive pixel tiles per block. Each of the
 * block's 32 channels first merges its group's S partials and gets its constants once, for all its tiles
 * (at 256 x 256 one tile per block made 8192 blocks each wait on the merge). One rounding, as group_norm
 * then the transpose. */
template <typename T>
__global__ void __launch_bounds__ (256)
gn_apply_nhwc_kernel (const T *__restrict__ x, T *__restrict__ xh, const float *__restrict__ stats,
                      const float *__restrict__ gamma, const float *__restrict__ beta, const T *__restrict__ ss, int C,
                      int HW, int G, int S, float eps, bool silu, int tiles)
{
  grid_dependency_wait ();
  __shared__ GnChannel ch[32];
  const int b = blockIdx.z, c0 = blockIdx.y * 32, tx = threadIdx.x;
  if (threadIdx.y == 0 && c0 + tx < C)
    {
      const float2 group = gn_merge (stats + ((size_t) b * G + (c0 + tx) / (C / G)) * S * 3, S, eps);
      ch[tx] = gn_channel<T> (b, c0 + tx, C, group.x, group.y, gamma, beta, ss);
    }
  __syncthreads ();
  const size_t image = (size_t) b * C * HW;
  const bool scale_shift = ss != NULL;
  for (int k = 0; k < tiles; k++)
    {
      const int p0 = (blockIdx.x * tiles + k) * 32;
      if (p0 >= HW)
        break;                          /* the same for the whole block */
      nchw_to_nhwc_tile (x + image, xh + image, C, HW, c0, p0,
                         [=] (int r, float v) { return gn_value (v, ch[r], scale_shift, silu); });
      __syncthreads ();                 /* the tile's shared buffer is read before the next fills it */
    }
}

/* Chunks per group for the split path; 1 means fused. */
static int
gn_split (const CudaBackend *cb, int groups, size_t len)
{
  if (cb->gn_mode == GN_FUSED)
    return 1;
  int S = ceil_div (4 * cb->sm_count, groups);
  if ((cb->gn_mode == GN_AUTO || cb->gn_mode == GN_CLUSTER) && (groups >= 2 * cb->sm_count || len <= 16384))
    return 1;
  const int by_len = (int) (len / 2048);
  S = imin (S, imin (by_len, GN_MAX_SPLIT));
  if (cb->gn_mode == GN_SPLIT)
    S = imax (S, 2);
  S = imin (S, (int) (CUDA_GN_STATS_ENTRIES / (size_t) groups));
  return imax (S, 1);
}

/* Blocks per group for gn_cluster_kernel (2 to cb->gn_cluster_max: 8, or 16 where the probe allows), or 0
 * where it does not run: $DDPM_CUDA_GN=cluster on a device that can, and K blocks with whole 16-byte vectors
 * of each channel (HW % (K * N) == 0) and at most 8 vectors per thread. K: $DDPM_CUDA_GN_CLUSTER where it
 * fits, else the largest that keeps all blocks in one wave (groups * K <= SMs: batch 1's 32 groups take 4 on
 * 132 SMs), at least the smallest whose share fits the registers (celebahq-256's 128 x 128 groups: 8, its
 * 256 x 256 ones 16), 0 if that is 1. The same for NCHW and NHWC output and with or without a held-back
 * sum, so their statistics match. */
static int
gn_cluster_plan (const CudaBackend *cb, int groups, int cpg, int HW, int N)
{
  if (cb->gn_cluster_max < 2 || cb->gn_mode != GN_CLUSTER || groups > 65535 / GN_CLUSTER_MAX)
    return 0;
  const size_t per_block = (size_t) GN_THREADS * 8 * (size_t) N;     /* values a block holds at most */
  const auto fits = [&] (int K) { return HW % (K * N) == 0 && (size_t) cpg * (size_t) (HW / K) <= per_block; };
  if (cb->gn_cluster > 0)
    return cb->gn_cluster <= cb->gn_cluster_max && fits (cb->gn_cluster) ? cb->gn_cluster : 0;
  if (fits (1) && groups * 2 > cb->sm_count)
    return 0;                           /* one block per group fits and fills the GPU: gn_regs_kernel */
  int K = 0;
  for (int k = 2; k <= cb->gn_cluster_max; k *= 2)
    if (fits (k) && (K == 0 || groups * k <= cb->sm_count))
      K = k;
  return K;
}

template <typename T>
using GnClusterKernel = void (*) (const T *, T *, const float *, const float *, const T *, int, int, int, float, bool,
                                  GnPartials<T>, GnPartials<T>, int);

/* gn_cluster_kernel with rk = 0..3 for 1, 2, 4, 8 vectors per thread, summing a held-back sum (red) or not. */
template <typename T, bool NHWC>
static GnClusterKernel<T>
gn_cluster_kernel_for (bool red, int rk)
{
  static const GnClusterKernel<T> kernels[2][4] = {
    { gn_cluster_kernel<T, 1, NHWC>, gn_cluster_kernel<T, 2, NHWC>, gn_cluster_kernel<T, 4, NHWC>,
      gn_cluster_kernel<T, 8, NHWC> },
    { gn_cluster_kernel<T, 1, NHWC, GN_RED<T>>, gn_cluster_kernel<T, 2, NHWC, GN_RED<T>>,
      gn_cluster_kernel<T, 4, NHWC, GN_RED<T>>, gn_cluster_kernel<T, 8, NHWC, GN_RED<T>> },
  };
  return kernels[red ? 1 : 0][rk];
}

/* Clusters of 16 where every cluster kernel of this type may have them and one of the largest fits, else of
 * 8 where that fits, else 0. */
template <typename T>
static int
gn_cluster_probe (void)
{
  const void *all[16];
  for (int i = 0; i < 8; i++)
    {
      all[i] = (const void *) gn_cluster_kernel_for<T, false> (i >= 4, i % 4);
      all[8 + i] = (const void *) gn_cluster_kernel_for<T, true> (i >= 4, i % 4);
    }
  const void *largest = all[15];        /* channels last, summing, 8 vectors per thread */
  if (allow_large_clusters (all, 16) && clusters_fit (largest, 16, GN_THREADS, GN_CLUSTER_SMEM))
    return 16;
  return clusters_fit (largest, 8, GN_THREADS, GN_CLUSTER_SMEM) ? 8 : 0;
}

int
cuda_gn_cluster_prepare (const CudaBackend *cb)
{
  if (cb->cc_major < 9)
    return 0;
  int n = 0;
  DISPATCH_ACT (cb, T, n = gn_cluster_probe<T> ());
  return n;
}

/* The register kernel (NHWC: writing y channels last) where a group of this shape fits it: groups unsplit,
 * 16-byte vectors (the caller checks HW % 8 and x's alignment), at most 8 vectors per thread, and not
 * $DDPM_CUDA_GN=fused. FALSE (nothing launched) elsewhere. */
template <typename T, bool NHWC>
static bool
gn_regs_launch (CudaBackend *cb, const char *name, const DdpmNormW *w, const void *x, void *y, int B, int C, int HW,
                int G, float eps, const void *scale_shift, bool silu)
{
  constexpr size_t per_pass = (size_t) GN_THREADS * Vec16<T>::N;   /* values per vector per thread */
  const int groups = B * G;
  const size_t len = (size_t) (C / G) * HW;
  const int K = gn_cluster_plan (cb, groups, C / G, HW, Vec16<T>::N);
  if (K == 0 && (cb->gn_mode == GN_FUSED || len > 8 * per_pass || gn_split (cb, groups, len) > 1))
    return false;
  const float *gamma = (const float *) w->gamma, *beta = (const float *) w->beta;
  /* x still to be summed from a split convolution's partials (conv2d.cu held the sum back): here, one launch */
  const CudaPendingReduce &r = cb->pending;
  /* all of x, or at batch 1 its first channels (the head of a concatenation) */
  const size_t y_bytes = (size_t) B * C * HW * sizeof (T);
  const bool red = GN_RED<T> && cb->reduce_pending && r.y == x && r.HoWo == HW && r.P == (long long) B * HW
                   && (r.Cout == C || (B == 1 && r.Cout < C))
                   && !bytes_overlap (y, y_bytes, r.partial, pending_partial_bytes (r));   /* y (NHWC: in scratch) */
  GnPartials<T> pr = {}, rp = {};
  if (red)
    {
      pr = { r.partial, r.bias, (T *) r.y, (const T *) r.channel_bias, (const T *) r.residual, r.splits, r.bm, r.bn, r.gx,
             r.cb_stride, r.scale, r.Cout };
      cb->reduce_pending = FALSE;       /* taken over: launch does not flush it */
      /* a second held-back sum of the same shape (conv2d.cu rider_partials_at: a resnet's shortcut) rides along
       * where y is clear of it; else launch_status launches it first, as before */
      const CudaPendingReduce &q = cb->rider;
      if (cb->rider_pending && q.Cout == C && q.HoWo == HW && q.P == (long long) B * HW && q.residual == NULL
          && q.channel_bias == NULL && !bytes_overlap (y, y_bytes, q.partial, pending_partial_bytes (q))
          && !bytes_overlap (y, y_bytes, q.y, y_bytes))
        {
          rp = { q.partial, q.bias, (T *) q.y, NULL, NULL, q.splits, q.bm, q.bn, q.gx, 0, 1.0f, q.Cout };
          cb->rider_pending = FALSE;
        }
    }
  typedef void (*Kernel) (const T *, T *, const float *, const float *, const T *, int, int, int, float, bool,
                          GnPartials<T>, GnPartials<T>);
  if (K > 0)
    {
      const size_t share = len / (size_t) K;
      const int rk = share <= per_pass ? 0 : share <= 2 * per_pass ? 1 : share <= 4 * per_pass ? 2 : 3;
      launch_cluster (cb, red ? "group_norm_cluster_reduce" : "group_norm_cluster", dim3 (1, 1, (unsigned) (groups * K)),
                      GN_THREADS, GN_CLUSTER_SMEM, (unsigned) K, gn_cluster_kernel_for<T, NHWC> (red, rk), (const T *) x, (T *) y, gamma,
                      beta, (const T *) scale_shift, C, HW, G, eps, silu, pr, rp, K);
      return true;
    }
  const int rk = len <= per_pass ? 0 : len <= 2 * per_pass ? 1 : len <= 4 * per_pass ? 2 : 3;
  static const Kernel kernels[2][4] = {
    { gn_regs_kernel<T, 1, NHWC>, gn_regs_kernel<T, 2, NHWC>, gn_regs_kernel<T, 4, NHWC>, gn_regs_kernel<T, 8, NHWC> },
    { gn_regs_kernel<T, 1, NHWC, GN_RED<T>>, gn_regs_kernel<T, 2, NHWC, GN_RED<T>>, gn_regs_kernel<T, 4, NHWC, GN_RED<T>>,
      gn_regs_kernel<T, 8, NHWC, GN_RED<T>> },
  };
  launch (cb, red ? "group_norm_reduce" : name, groups, GN_THREADS, 0, kernels[red ? 1 : 0][rk], (const T *) x, (T *) y,
          gamma, beta, (const T *) scale_shift, C, HW, G, eps, silu, pr, rp);
  return true;
}

void
cuda_group_norm (DdpmBackend *be, const DdpmNormW *w, const void *x, void *y, int B, int C, int HW, int G, float eps,
                 const void *scale_shift, gboolean silu)
{
  CudaBackend *cb = cuda_backend (be);
  if (B <= 0 || C <= 0 || HW <= 0)
    return;
  if (G <= 0 || C % G != 0)
    {
      cuda_fail (cb, DDPM_ERROR_ARGUMENT, "group_norm: %d channels do not split into %d groups", C, G);
      return;
    }
  const int groups = B * G;
  const size_t len = (size_t) (C / G) * HW;
  const int S = gn_split (cb, groups, len);
  const float *gamma = (const float *) w->gamma, *beta = (const float *) w->beta;
  /* 16-byte vectors: HW % 8 == 0 keeps a vector in one channel and every group and chunk boundary on a
   * multiple of 8 elements (chunks are multiples of 8) */
  const bool vec = HW % 8 == 0 && aligned16 (x) && aligned16 (y);
  if (vec)
    DISPATCH_ACT (cb, T, {
      if (gn_regs_launch<T, false> (cb, "group_norm", w, x, y, B, C, HW, G, eps, scale_shift, silu))
        return;
    });
  if (S <= 1)
    {
      DISPATCH_ACT (cb, T, {
        if (vec)
          launch (cb, "group_norm", groups, GN_THREADS, 0, gn_fused_kernel<T, true>, (const T *) x, (T *) y, gamma,
                  beta, (const T *) scale_shift, C, HW, G, eps, (bool) silu);
        else
          launch (cb, "group_norm", groups, GN_THREADS, 0, gn_fused_kernel<T, false>, (const T *) x, (T *) y, gamma,
                  beta, (const T *) scale_shift, C, HW, G, eps, (bool) silu);
      });
      return;
    }
  if (groups > 65535)
    {
      cuda_fail (cb, DDPM_ERROR_LIMIT, "group_norm: %d groups exceed the split kernel's grid", groups);
      return;
    }
  dim3 grid (S, groups);
  DISPATCH_ACT (cb, T, {
    if (vec)
      {
        launch (cb, "group_norm_stats", grid, GN_THREADS, 0, gn_stats_kernel<T, true>, (const T *) x, cb->gn_stats, C,
                HW, G, S);
        launch (cb, "group_norm_apply", grid, GN_THREADS, 0, gn_apply_kernel<T, true>, (const T *) x, (T *) y,
                cb->gn_stats, gamma, beta, (const T *) scale_shift, C, HW, G, S, eps, (bool) silu);
      }
    else
      {
        launch (cb, "group_norm_stats", grid, GN_THREADS, 0, gn_stats_kernel<T, false>, (const T *) x, cb->gn_stats,
                C, HW, G, S);
        launch (cb, "group_norm_apply", grid, GN_THREADS, 0, gn_apply_kernel<T, false>, (const T *) x, (T *) y,
                cb->gn_stats, gamma, beta, (const T *) scale_shift, C, HW, G, S, eps, (bool) silu);
      }
  });
}

bool
cuda_group_norm_nhwc (CudaBackend *cb, const DdpmNormW *w, const void *x, void *xh, int B, int C, int HW, int G,
                      float eps, const void *scale_shift, bool silu)
{
  if (G <= 0 || C % G != 0 || B * G > 65535 || B > 65535)
    return false;
  const int groups = B * G;
  const size_t len = (size_t) (C / G) * HW;
  /* the split path's chunks where it would split, else one chunk per group (the statistics of the fused path) */
  const int S = imax (gn_split (cb, groups, len), 1);
  const bool vec = HW % 8 == 0 && aligned16 (x);
  const float *gamma = (const float *) w->gamma, *beta = (const float *) w->beta;
  /* pixel tiles per block: as many as keep about 8 blocks of 256 threads per SM busy, up to GN_NHWC_TILES */
  const long long ptiles = ceil_div (HW, 32), blocks1 = ptiles * ceil_div (C, 32) * B;
  const int per = (int) imin (GN_NHWC_TILES, imax (1, (int) (blocks1 / (8LL * cb->sm_count))));
  const dim3 tiles ((unsigned) ((ptiles + per - 1) / per), (unsigned) ceil_div (C, 32), (unsigned) B);
  DISPATCH_ACT (cb, T, {
    /* a group that fits the register kernel: statistics, normalisation and transpose in one launch */
    if (vec && aligned16 (xh)
        && gn_regs_launch<T, true> (cb, "group_norm_nhwc", w, x, xh, B, C, HW, G, eps, scale_shift, silu))
      return true;
    if (vec)
      launch (cb, "group_norm_stats", dim3 (S, groups), GN_THREADS, 0, gn_stats_kernel<T, true>, (const T *) x,
              cb->gn_stats, C, HW, G, S);
    else
      launch (cb, "group_norm_stats", dim3 (S, groups), GN_THREADS, 0, gn_stats_kernel<T, false>, (const T *) x,
              cb->gn_stats, C, HW, G, S);
    launch (cb, "group_norm_nhwc", tiles, dim3 (32, 8), 0, gn_apply_nhwc_kernel<T>, (const T *) x, (T *) xh,
            (const float *) cb->gn_stats, gamma, beta, (const T *) scale_shift, C, HW, G, S, eps, silu, per);
  });
  return true;
}
