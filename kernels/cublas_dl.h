/* cublas_dl.h: the few cuBLAS entry points we use, declared here and looked up at run time with dlopen.
 *
 * Why not link libcublas: the toolkit on our build machines (and CI) has no cuBLAS, while the GPU machines
 * carry it (PyTorch's nvidia-cublas wheel, or the toolkit's). Loading it at run time keeps the module
 * buildable everywhere; when it cannot be found the backend falls back to its own GEMM kernel (gemm.cu).
 *
 * The values below are cuBLAS 12/13's (cublas_api.h; checked against nvidia-cublas 13.x's header):
 * column-major BLAS semantics, C (m x n, ldc) = alpha op(A) op(B) + beta C. */
#pragma once

#include <glib.h>
#include <stddef.h>
#include <library_types.h>     /* cudaDataType: CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 */
#include <cuda_runtime_api.h>  /* cudaStream_t */

typedef struct cublasContext *cublasHandle_t;
typedef int cublasStatus_t;     /* CUBLAS_STATUS_SUCCESS = 0 */
typedef int cublasOperation_t;  /* CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 */
typedef int cublasMath_t;
typedef int cublasComputeType_t;
typedef int cublasGemmAlgo_t;

#define DDPM_CUBLAS_STATUS_SUCCESS 0
#define DDPM_CUBLAS_OP_N 0
#define DDPM_CUBLAS_OP_T 1
#define DDPM_CUBLAS_DEFAULT_MATH 0
#define DDPM_CUBLAS_PEDANTIC_MATH 2          /* no TF32, no reduced-precision reductions */
#define DDPM_CUBLAS_COMPUTE_32F 68
#define DDPM_CUBLAS_COMPUTE_32F_PEDANTIC 69
#define DDPM_CUBLAS_GEMM_DEFAULT (-1)

typedef struct {
  void *library;                 /* dlopen handle; NULL in the emulator */
  char *path;                    /* what was loaded */
  cublasStatus_t (*create) (cublasHandle_t *handle);
  cublasStatus_t (*destroy) (cublasHandle_t handle);
  cublasStatus_t (*set_stream) (cublasHandle_t handle, cudaStream_t stream);
  cublasStatus_t (*set_math_mode) (cublasHandle_t handle, cublasMath_t mode);
  cublasStatus_t (*set_workspace) (cublasHandle_t handle, void *workspace, size_t bytes);
  const char *(*status_string) (cublasStatus_t status);  /* may be NULL */
  cublasStatus_t (*gemm_ex) (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                             int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                             cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                             cublasComputeType_t compute, cublasGemmAlgo_t algo);
  cublasStatus_t (*gemm_strided_batched_ex) (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                             int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                             int lda, long long strideA, const void *B, cudaDataType Btype, int ldb,
                                             long long strideB, const void *beta, void *C, cudaDataType Ctype, int ldc,
                                             long long strideC, int batch, cublasComputeType_t compute,
                                             cublasGemmAlgo_t algo);
} DdpmCublas;

/* Fills b from $DDPM_CUBLAS (a file), else libcublas.so.13 / libcublas.so on the library path. FALSE with a
 * reason (g_free it) when none loads or a symbol is missing. */
gboolean ddpm_cublas_load (DdpmCublas *b, char **reason);
void ddpm_cublas_unload (DdpmCublas *b);
