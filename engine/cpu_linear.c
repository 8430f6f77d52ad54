/* cpu_linear.c: y (M, N) = act(x (M, K)) W^T + b, W (N, K) as PyTorch stores it. Used for the time
 * embedding MLP and the ResNets' time_emb_proj (M = batch, so this is weight-bandwidth bound). */
#include "cpu_ops.h"

#include <string.h>

/* dst (n) = SiLU(src) */
CPU_MULTIVERSION static void
silu_copy (const float *src, float *dst, int n)
{
#pragma omp simd
  for (int k = 0; k < n; k++)
    dst[k] = cpu_silu (src[k]);
}

/* y rows <- bias, so the GEMMs can accumulate with beta = 1. */
static void
fill_bias (float *y, const float *bias, int M, int N)
{
  for (int m = 0; m < M; m++)
    {
      if (bias)
        memcpy (y + (size_t) m * N, bias, (size_t) N * sizeof (float));
      else
        memset (y + (size_t) m * N, 0, (size_t) N * sizeof (float));
    }
}

void
cpu_linear (DdpmBackend *be, const DdpmLinearW *w, const void *x_, void *y_, int M, gboolean silu_in)
{
  CpuBackend *cpu = cpu_backend (be);
  const float *x = x_, *W = w->weight;
  float *y = y_;
  int N = w->out, K = w->in;
  fill_bias (y, w->bias, M, N);
  if (!silu_in)
    {
      cpu_sgemm (FALSE, TRUE, M, N, K, x, K, W, K, 1.0f, y, N);
      return;
    }
  /* SiLU(x) goes through the fixed small buffer, in blocks of rows x columns of K that fit it. */
  int kc = K < CPU_SMALL_FLOATS ? K : CPU_SMALL_FLOATS;
  int mc = CPU_SMALL_FLOATS / kc;
  for (int m0 = 0; m0 < M; m0 += mc)
    {
      int mn = M - m0 < mc ? M - m0 : mc;
      for (int k0 = 0; k0 < K; k0 += kc)
        {
          int kn = K - k0 < kc ? K - k0 : kc;
          for (int m = 0; m < mn; m++)
            silu_copy (x + (size_t) (m0 + m) * K + k0, cpu->small + (size_t) m * kn, kn);
          cpu_sgemm (FALSE, TRUE, mn, N, kn, cpu->small, kn, W + k0, K, 1.0f, y + (size_t) m0 * N, N);
        }
    }
}
