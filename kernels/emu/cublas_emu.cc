/* cublas_emu.cc: the emulator's stand-in for libcublas (tests only): the same entry points with the
 * reference column-major BLAS semantics, C (m x n, ldc) = alpha op(A) op(B) + beta C (C not read when
 * beta = 0), computed naively in float on the host. The backend's row-major <-> column-major mapping
 * (gemm.cu) is therefore checked against the CPU backend by the GPU test program run on the emulator. */
#include "cuda_emu.h"
#include "../cublas_dl.h"

#include <cstring>
#include <vector>

namespace {

struct EmuHandle {
  cudaStream_t stream = nullptr;
};

float
load (const void *p, cudaDataType t, size_t i)
{
  switch (t)
    {
    case CUDA_R_32F: return static_cast<const float *> (p)[i];
    case CUDA_R_16F: return __half2float (static_cast<const __half *> (p)[i]);
    case CUDA_R_16BF: return __bfloat162float (static_cast<const __nv_bfloat16 *> (p)[i]);
    default: abort ();
    }
}

void
store (void *p, cudaDataType t, size_t i, float v)
{
  switch (t)
    {
    case CUDA_R_32F: static_cast<float *> (p)[i] = v; break;
    case CUDA_R_16F: static_cast<__half *> (p)[i] = __float2half_rn (v); break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16 *> (p)[i] = __float2bfloat16_rn (v); break;
    default: abort ();
    }
}

size_t
elem_size (cudaDataType t)
{
  return t == CUDA_R_32F ? 4 : 2;
}

cublasStatus_t
emu_create (cublasHandle_t *h)
{
  *h = reinterpret_cast<cublasHandle_t> (new EmuHandle);
  return 0;
}

cublasStatus_t
emu_destroy (cublasHandle_t h)
{
  delete reinterpret_cast<EmuHandle *> (h);
  return 0;
}

cublasStatus_t
emu_set_stream (cublasHandle_t h, cudaStream_t s)
{
  reinterpret_cast<EmuHandle *> (h)->stream = s;
  return 0;
}

cublasStatus_t
emu_set_math_mode (cublasHandle_t, cublasMath_t)
{
  return 0;
}

cublasStatus_t
emu_set_workspace (cublasHandle_t, void *, size_t)
{
  return 0;
}

const char *
emu_status_string (cublasStatus_t s)
{
  return s == 0 ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}

cublasStatus_t
emu_gemm_strided (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                  const void *alpha_p, const void *A, cudaDataType at, int lda, long long sA, const void *B,
                  cudaDataType bt, int ldb, long long sB, const void *beta_p, void *C, cudaDataType ct, int ldc,
                  long long sC, int batch, cublasComputeType_t compute, cublasGemmAlgo_t)
{
  /* the argument checks cuBLAS makes */
  if (m < 0 || n < 0 || k < 0 || batch < 0 || at != bt || (compute != 68 && compute != 69))
    return 7;
  if (lda < (ta == 0 ? m : k) || ldb < (tb == 0 ? k : n) || ldc < m || lda < 1 || ldb < 1 || ldc < 1)
    return 7;
  const float alpha = *static_cast<const float *> (alpha_p), beta = *static_cast<const float *> (beta_p);
  EmuHandle *eh = reinterpret_cast<EmuHandle *> (h);
  emu_enqueue (eh->stream, [=] () {
    /* op(A) as rows of k and op(B) as columns of k, in float (cuBLAS accumulates in float too) */
    std::vector<float> a ((size_t) m * k), bcol ((size_t) n * k);
    for (int bi = 0; bi < batch; bi++)
      {
        const char *Ab = static_cast<const char *> (A) + (size_t) (bi * sA) * elem_size (at);
        const char *Bb = static_cast<const char *> (B) + (size_t) (bi * sB) * elem_size (bt);
        char *Cb = static_cast<char *> (C) + (size_t) (bi * sC) * elem_size (ct);
        for (int i = 0; i < m; i++)
          for (int l = 0; l < k; l++)
            a[(size_t) i * k + l] = ta == 0 ? load (Ab, at, (size_t) i + (size_t) l * lda) : load (Ab, at, (size_t) l + (size_t) i * lda);
        for (int j = 0; j < n; j++)
          for (int l = 0; l < k; l++)
            bcol[(size_t) j * k + l] = tb == 0 ? load (Bb, bt, (size_t) l + (size_t) j * ldb)
                                             : load (Bb, bt, (size_t) j + (size_t) l * ldb);
        for (int j = 0; j < n; j++)
          for (int i = 0; i < m; i++)
            {
              const float *ar = &a[(size_t) i * k], *bc = &bcol[(size_t) j * k];
              float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
              int l = 0;
              for (; l + 4 <= k; l += 4)
                {
                  s0 += ar[l] * bc[l];
                  s1 += ar[l + 1] * bc[l + 1];
                  s2 += ar[l + 2] * bc[l + 2];
                  s3 += ar[l + 3] * bc[l + 3];
                }
              for (; l < k; l++)
                s0 += ar[l] * bc[l];
              const size_t ci = (size_t) i + (size_t) j * ldc;
              float v = alpha * ((s0 + s1) + (s2 + s3));
              if (beta != 0.0f)
                v += beta * load (Cb, ct, ci);
              store (Cb, ct, ci, v);
            }
      }
  });
  return 0;
}

cublasStatus_t
emu_gemm (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
          const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb, const void *beta, void *C,
          cudaDataType ct, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
  return emu_gemm_strided (h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1, compute,
                           algo);
}

} /* namespace */

gboolean
ddpm_cublas_load (DdpmCublas *b, char **reason)
{
  memset (b, 0, sizeof *b);
  if (g_getenv ("DDPM_CUDA_EMU_NO_CUBLAS") != NULL)
    {
      *reason = g_strdup ("DDPM_CUDA_EMU_NO_CUBLAS is set");
      return FALSE;
    }
  b->path = g_strdup ("cublas-emu");
  b->create = emu_create;
  b->destroy = emu_destroy;
  b->set_stream = emu_set_stream;
  b->set_math_mode = emu_set_math_mode;
  b->set_workspace = emu_set_workspace;
  b->status_string = emu_status_string;
  b->gemm_ex = emu_gemm;
  b->gemm_strided_batched_ex = emu_gemm_strided;
  return TRUE;
}

void
ddpm_cublas_unload (DdpmCublas *b)
{
  g_free (b->path);
  memset (b, 0, sizeof *b);
}
