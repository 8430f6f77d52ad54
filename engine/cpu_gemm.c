/* cpu_gemm.c: the one way the CPU backend calls OpenBLAS (see the threading model in cpu_ops.h). */
#include "cpu_ops.h"

#include <cblas.h>
#include <omp.h>

/* Slices narrower than this (columns) make OpenBLAS' kernels inefficient; below 2 * this we split M. */
#define MIN_SLICE_N 48

static void
sgemm1 (gboolean trans_a, gboolean trans_b, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
        float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  cblas_sgemm (CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
               1.0f, A, lda, B, ldb, beta, C, ldc);
}

void
cpu_sgemm (gboolean trans_a, gboolean trans_b, int M, int N, int K, const float *A, int lda, const float *B,
           int ldb, float beta, float *C, int ldc)
{
  int nt = omp_in_parallel () ? 1 : omp_get_max_threads ();
  double flops = 2.0 * M * N * K;
  if (nt <= 1 || flops < 2e6)
    {
      sgemm1 (trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
      return;
    }
  gboolean split_n = N >= 2 * MIN_SLICE_N || N >= M;
#pragma omp parallel num_threads (nt)
  {
    int id = omp_get_thread_num (), n = omp_get_num_threads ();
    if (split_n)
      {
        /* Column slices rounded to 16 so each starts on a cache line. */
        int n0 = (int) ((int64_t) N * id / n) & ~15, n1 = id == n - 1 ? N : (int) ((int64_t) N * (id + 1) / n) & ~15;
        const float *b = trans_b ? B + (size_t) n0 * ldb : B + n0;
        sgemm1 (trans_a, trans_b, M, n1 - n0, K, A, lda, b, ldb, beta, C + n0, ldc);
      }
    else
      {
        int m0 = (int) ((int64_t) M * id / n), m1 = (int) ((int64_t) M * (id + 1) / n);
        const float *a = trans_a ? A + m0 : A + (size_t) m0 * lda;
        sgemm1 (trans_a, trans_b, m1 - m0, N, K, a, lda, B, ldb, beta, C + (size_t) m0 * ldc, ldc);
      }
  }
}
