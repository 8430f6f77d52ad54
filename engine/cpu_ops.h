/* cpu_ops.h: internals shared by the CPU backend's files (backend_cpu.c, cpu_gemm.c, cpu_elementwise.c,
 * cpu_norm.c, cpu_conv.c, cpu_attention.c). Not part of any public contract.
 *
 * Threading model: OpenBLAS is made single-threaded (openblas_set_num_threads (1) when the backend is
 * created) and every op parallelises itself with OpenMP: a convolution runs its 16 Winograd GEMMs as one
 * `omp for` (one GEMM per thread at a time), a single large GEMM is cut into one column (or row) slice per
 * thread (cpu_sgemm). Measured on the 2-core Zen 4 build machine, idle (2 threads, 16 Winograd GEMMs of a
 * conv at batch 1): 0.70 vs 0.85 ms (128 ch, 32x32), 0.70 vs 0.95 (256 ch, 16x16), 0.22 vs 0.55 (8x8),
 * 0.045 vs 0.087 (4x4) for OpenMP-over-GEMMs vs OpenBLAS' own threads per GEMM; for one im2col-sized GEMM
 * our slices matched or beat OpenBLAS' threads (1.49 vs 1.56 ms at 256 ch 16x16, 0.12 vs 0.27 at 4x4).
 * Both pools in one process spin against each other (10x slower), so OpenBLAS' pool stays off. An op
 * opens one parallel region (attention: one per image) with as few barriers as its phases need: on a
 * loaded machine each synchronisation can cost a scheduler time slice.
 *
 * Memory: activations are float32 (act == f32), 64-byte aligned. Ops never allocate: convolution and
 * attention temporaries live in the scratch arena sized by reserve_scratch (from conv2d_scratch /
 * attention_scratch); the linear layer's SiLU copy uses a small fixed buffer made with the backend. */
#pragma once

#include "backend.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CPU_ALIGN 64
/* Floats of the fixed buffer used by linear (silu_in) when it processes its input in chunks. */
#define CPU_SMALL_FLOATS (64 * 1024)

typedef struct {
  DdpmBackend base;                /* first member: DdpmBackend * casts to CpuBackend * */
  int n_threads;                   /* OpenMP threads used by every op */
  float *scratch;                  /* reserve_scratch arena, scratch_bytes long */
  size_t scratch_bytes;
  float *small;                    /* CPU_SMALL_FLOATS floats */
} CpuBackend;

/* Hot loops that the compiler vectorises are built for baseline x86-64, AVX2+FMA (x86-64-v3) and AVX-512
 * (x86-64-v4), and the best one is picked at load time (GCC function multiversioning, glibc ifunc). The
 * build itself stays portable (no -march). */
/* Not under ThreadSanitizer: GCC instruments the clones' ifunc resolvers, which the dynamic loader runs
 * before the TSan runtime exists (a SIGSEGV at start-up; tools/sanitize.sh tsan). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define CPU_MULTIVERSION __attribute__ ((target_clones ("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define CPU_MULTIVERSION
#endif

static inline CpuBackend *
cpu_backend (DdpmBackend *be)
{
  return (CpuBackend *) be;
}

/* Rounds n floats up to a whole number of cache lines (keeps scratch sub-buffers aligned). */
static inline size_t
cpu_round_floats (size_t n)
{
  return (n + 15) & ~(size_t) 15;
}

/* ---- cpu_gemm.c ---- */
/* C (M, N) = A' B' + beta C, row-major, A' = A or A^T (trans_a), B' likewise; the CBLAS convention.
 * Outside an OpenMP region the product is split into one slice of N (or of M when N is narrow) per thread,
 * each computed by single-threaded OpenBLAS; inside a region it is one plain call. */
void cpu_sgemm (gboolean trans_a, gboolean trans_b, int M, int N, int K, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc);
/* Part `part` of n_parts of the same product (the slices cpu_sgemm gives its threads), for callers that
 * already run inside a parallel region. */
void cpu_sgemm_part (int part, int n_parts, gboolean trans_a, gboolean trans_b, int M, int N, int K, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* exp(x) in float32 for the SiLU and softmax loops: branch-free so those loops vectorise, max relative
 * error 1.4 ulp on [-87.3, 88] (measured against double exp). x is clamped to that range, so 2^n stays a
 * normal float (exp(88) = 1.65e38 stands in for overflow, 1.2e-38 for underflow); NaN and +-Inf give NaN,
 * so a non-finite input stays visible downstream. The clamp works on the float's bits turned into an
 * order-preserving integer key: float comparisons would stop GCC from vectorising (-ftrapping-math). */
static inline float
cpu_expf (float x)
{
  int32_t k;
  memcpy (&k, &x, sizeof k);
  k ^= (k >> 31) & 0x7fffffff;          /* key: signed integers ordered like the floats */
  k = k < -1118738843 ? -1118738843 : k;  /* key of -87.3f */
  k = k > 1118830592 ? 1118830592 : k;    /* key of 88.0f */
  k ^= (k >> 31) & 0x7fffffff;
  float xc;
  memcpy (&xc, &k, sizeof xc);
  /* xc = n ln2 + r, |r| <= ln2 / 2; n by adding 1.5 * 2^23 (round to nearest without a libm call). */
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  /* Cephes expf minimax polynomial on [-ln2/2, ln2/2]. */
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t) n + 127) << 23;  /* 2^n */
  float scale;
  memcpy (&scale, &bits, sizeof scale);
  return p * scale + (x - x);
}

static inline float
cpu_silu (float x)
{
  return x / (1.0f + cpu_expf (-x));
}

/* ---- cpu_elementwise.c ---- */
void cpu_cast_in (DdpmBackend *be, const float *x, void *y, size_t n);
void cpu_cast_out (DdpmBackend *be, const void *x, float *y, size_t n);
void cpu_timestep_embedding (DdpmBackend *be, const float *t, void *y, int B, int dim, gboolean flip,
                             float freq_shift);
void cpu_add_channel_bias (DdpmBackend *be, void *h, const void *v, int B, int C, int HW);
/* h (B, C, HW) += v[b * stride + c]: per image, a C-vector from rows stride apart */
void cpu_add_channel_bias_strided (float *h, const float *v, int B, int C, int HW, int stride);
void cpu_add_scaled (DdpmBackend *be, const void *a, const void *b, void *y, size_t n, float scale);
void cpu_concat_channels (DdpmBackend *be, const void *a, int Ca, const void *b, int Cb, void *y, int B, int HW);
void cpu_upsample_nearest2x (DdpmBackend *be, const void *x, void *y, int B, int C, int H, int W);
size_t cpu_count_nonfinite (DdpmBackend *be, const float *x, size_t n);

/* ---- cpu_norm.c ---- */
void cpu_group_norm (DdpmBackend *be, const DdpmNormW *w, const void *x, void *y, int B, int C, int HW, int G,
                     float eps, const void *scale_shift, gboolean silu);

/* ---- cpu_linear.c ---- */
void cpu_linear (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int M, gboolean silu_in);

/* ---- cpu_conv.c ---- */
/* Converts a PyTorch conv weight (out, in, k, k) into the layout cpu_conv2d reads, u of
 * cpu_conv_pack_floats floats: 3x3 kernels become Winograd F(2x2,3x3) weights (out, 16, in); other sizes
 * are kept as they are. */
size_t cpu_conv_pack_floats (int out, int in, int k);
void cpu_conv_pack_weight (const float *w, int out, int in, int k, float *u);
size_t cpu_conv2d_scratch (DdpmBackend *be, int B, int Cin, int H, int W, int Cout, int k, int stride,
                           const int pad[4]);
void cpu_conv2d (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int B, int H, int W, int stride,
                 const int pad[4], const DdpmConvEpilogue *epi);

/* ---- cpu_attention.c ---- */
size_t cpu_attention_scratch (DdpmBackend *be, int B, int C, int HW, int heads);
void cpu_attention (DdpmBackend *be, const DdpmAttentionW *w, const void *normed, const void *residual, void *y,
                    int B, int C, int HW, int heads, float scale);
