/* gemm.cu: the backend's one GEMM entry point (row-major, strided-batched), on cuBLAS when it loaded,
 * else on a plain tiled kernel (correct everywhere, slow).
 *
 * Row-major to cuBLAS (column-major): a row-major matrix X (r x c, ld) is, read column-major, X^T (c x r, ld).
 * So row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: call cuBLAS with the operands swapped
 * (B first), m = N, n = M, and each operand's transpose flag kept (a row-major A stored (M x K) is read by
 * cuBLAS as A^T (K x M); asking for op N on it gives exactly the A^T that C^T = B^T A^T needs). */
#include "cuda_backend.cuh"

static cudaDataType
cuda_data_type (CudaType t)
{
  return t == CT_F32 ? CUDA_R_32F : t == CT_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* ---- fallback: 64x64 tiles, 256 threads, 4x4 outputs per thread, fp32 accumulation ---- */

#define FB_TILE 64
#define FB_K 16

template <typename TA, typename TC>
__global__ void __launch_bounds__ (256)
gemm_fallback_kernel (bool ta, bool tb, int M, int N, int K, float alpha, const TA *__restrict__ A, int lda,
                      long long sA, const TA *__restrict__ B, int ldb, long long sB, float beta, TC *__restrict__ C,
                      int ldc, long long sC)
{
  grid_dependency_wait ();
  __shared__ float As[FB_K][FB_TILE + 1];   /* As[l][i] = op(A)[m0 + i][k0 + l] */
  __shared__ float Bs[FB_K][FB_TILE + 1];   /* Bs[l][j] = op(B)[k0 + l][n0 + j] */
  const int batch = blockIdx.z;
  A += batch * sA;
  B += batch * sB;
  C += batch * sC;
  const int m0 = blockIdx.y * FB_TILE, n0 = blockIdx.x * FB_TILE;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
      acc[i][j] = 0.0f;
  for (int k0 = 0; k0 < K; k0 += FB_K)
    {
      for (int e = threadIdx.x; e < FB_K * FB_TILE; e += 256)
        {
          const int l = e / FB_TILE, i = e % FB_TILE;
          const int m = m0 + i, n = n0 + i, k = k0 + l;
          float av = 0.0f, bv = 0.0f;
          if (m < M && k < K)
            av = to_f32<TA> (ta ? A[(size_t) k * lda + m] : A[(size_t) m * lda + k]);
          if (n < N && k < K)
            bv = to_f32<TA> (tb ? B[(size_t) n * ldb + k] : B[(size_t) k * ldb + n]);
          As[l][i] = av;
          Bs[l][i] = bv;
        }
      __syncthreads ();
#pragma unroll
      for (int l = 0; l < FB_K; l++)
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 4; j++)
            acc[i][j] += As[l][ty + 16 * i] * Bs[l][tx + 16 * j];
      __syncthreads ();
    }
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
      {
        const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
        if (m < M && n < N)
          {
            TC *c = C + (size_t) m * ldc + n;
            float v = alpha * acc[i][j];
            if (beta != 0.0f)
              v += beta * to_f32<TC> (*c);
            *c = from_f32<TC> (v);
          }
      }
}

template <typename TA, typename TC>
static void
gemm_fallback (CudaBackend *cb, bool ta, bool tb, int M, int N, int K, float alpha, const void *A, int lda,
               long long sA, const void *B, int ldb, long long sB, float beta, void *C, int ldc, long long sC,
               int batch)
{
  dim3 grid (ceil_div (N, FB_TILE), ceil_div (M, FB_TILE), batch);
  launch (cb, "gemm_fallback", grid, 256, 0, gemm_fallback_kernel<TA, TC>, ta, tb, M, N, K, alpha, (const TA *) A,
          lda, sA, (const TA *) B, ldb, sB, beta, (TC *) C, ldc, sC);
}

void
cuda_gemm_rm (CudaBackend *cb, bool ta, bool tb, int M, int N, int K, float alpha, const void *A, int lda,
              long long sA, const void *B, int ldb, long long sB, float beta, void *C, int ldc, long long sC,
              int batch, CudaType ab, CudaType c)
{
  if (M <= 0 || N <= 0 || batch <= 0)
    return;
  cuda_flush_reduce (cb);               /* cuBLAS's launches do not pass launch_status */
  if (cb->have_blas)
    {
      const cublasComputeType_t compute = cb->act_type == CT_F32 && ab == CT_F32 ? DDPM_CUBLAS_COMPUTE_32F_PEDANTIC
                                                                                 : DDPM_CUBLAS_COMPUTE_32F;
      const int opA = ta ? DDPM_CUBLAS_OP_T : DDPM_CUBLAS_OP_N, opB = tb ? DDPM_CUBLAS_OP_T : DDPM_CUBLAS_OP_N;
      cublasStatus_t st;
      if (G_UNLIKELY (cb->profile != NULL))
        cuda_profile_begin (cb, batch == 1 ? "cublas_gemm" : "cublas_gemm_batched");
      /* swapped: column-major C^T (N x M) = op(B)^T (N x K) op(A)^T (K x M) */
      if (batch == 1)
        st = cb->blas.gemm_ex (cb->blas_handle, opB, opA, N, M, K, &alpha, B, cuda_data_type (ab), ldb, A,
                               cuda_data_type (ab), lda, &beta, C, cuda_data_type (c), ldc, compute,
                               DDPM_CUBLAS_GEMM_DEFAULT);
      else
        st = cb->blas.gemm_strided_batched_ex (cb->blas_handle, opB, opA, N, M, K, &alpha, B, cuda_data_type (ab), ldb,
                                               sB, A, cuda_data_type (ab), lda, sA, &beta, C, cuda_data_type (c), ldc,
                                               sC, batch, compute, DDPM_CUBLAS_GEMM_DEFAULT);
      if (G_UNLIKELY (cb->profile != NULL))
        cuda_profile_end (cb);
      if (st != DDPM_CUBLAS_STATUS_SUCCESS)
        cuda_fail (cb, DDPM_ERROR_DEVICE,
                   "cuBLAS GEMM failed: %s (status %d; row-major M=%d N=%d K=%d batch=%d ta=%d tb=%d lda=%d ldb=%d "
                   "ldc=%d)",
                   cb->blas.status_string ? cb->blas.status_string (st) : "?", st, M, N, K, batch, ta, tb, lda, ldb,
                   ldc);
      return;
    }
  if (batch > 65535)
    {
      cuda_fail (cb, DDPM_ERROR_LIMIT, "GEMM batch %d exceeds the fallback kernel's grid", batch);
      return;
    }
#define FB(TA_, TC_) gemm_fallback<TA_, TC_> (cb, ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch)
  if (ab == CT_F32)
    FB (float, float);
  else if (ab == CT_F16)
    {
      if (c == CT_F32)
        FB (__half, float);
      else
        FB (__half, __half);
    }
  else
    {
      if (c == CT_F32)
        FB (__nv_bfloat16, float);
      else
        FB (__nv_bfloat16, __nv_bfloat16);
    }
#undef FB
}
