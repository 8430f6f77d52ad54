/* test_cpu_ops.c: every op of the CPU backend against a naive double-precision reference written here,
 * on seeded random inputs at the shapes of google/ddpm-cifar10-32 (plus odd sizes and multi-block shapes
 * that exercise edges of the blocked convolution). Every output buffer is guarded by sentinels before and
 * after it, and inputs are checked unchanged, to catch out-of-bounds writes.
 *
 * Error bounds (per element, e = |got - want|):
 *   conv2d, linear        e <= 1e-4 * max(1, |want|)   (float32 accumulation over K up to 4608 terms;
 *                                                        observed worst ~1e-6, see the test log)
 *   group_norm            e <= 2e-5 * max(1, |want|)
 *   attention             e <= 1e-4 * max(1, |want|)
 *   timestep_embedding    e <= 1e-6 (reference follows the same float32 argument pipeline)
 *   copies, adds, upsample, concat, bias: exact. */
#include "test_util.h"
#include "backend.h"
#include "cpu_ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define GUARD 64                         /* sentinel floats on each side of an output */
static const uint32_t SENTINEL = 0x7fc0deadu;  /* a NaN payload no op produces */

static DdpmBackend *be;

/* ---- seeded inputs ---- */

static uint64_t rng_state;

static double
urand (void)                             /* uniform in [-1, 1) (splitmix64) */
{
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double) (z >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static float *
rand_floats (size_t n, double scale, double offset)
{
  float *p = g_new (float, n);
  for (size_t i = 0; i < n; i++)
    p[i] = (float) (offset + scale * urand ());
  return p;
}

/* ---- guarded outputs ---- */

typedef struct {
  float *base, *data;
  size_t n;
} Guarded;

static Guarded
guarded_new (size_t n)
{
  Guarded g = { g_new (float, n + 2 * GUARD), NULL, n };
  g.data = g.base + GUARD;
  uint32_t *bits = (uint32_t *) g.base;
  for (size_t i = 0; i < n + 2 * GUARD; i++)
    bits[i] = SENTINEL;
  return g;
}

static void
guarded_check (const Guarded *g, const char *label)
{
  const uint32_t *bits = (const uint32_t *) g->base;
  for (size_t i = 0; i < GUARD; i++)
    {
      if (bits[i] != SENTINEL || bits[GUARD + g->n + i] != SENTINEL)
        {
          g_test_message ("%s: write outside the output (%s guard, offset %zu)", label,
                          bits[i] != SENTINEL ? "front" : "back", i);
          g_test_fail ();
          return;
        }
    }
}

static void
guarded_free (Guarded *g)
{
  g_free (g->base);
}

/* Checks e <= tol * max(1, |want|) everywhere and reports the worst element. */
static void
check_close (const char *label, const float *got, const double *want, size_t n, double tol)
{
  CompareResult r = compare_f32_f64 (got, want, n);
  report_compare (label, &r);
  g_assert_cmpuint (r.n_nonfinite, ==, 0);
  for (size_t i = 0; i < n; i++)
    if (fabs (got[i] - want[i]) > tol * fmax (1.0, fabs (want[i])))
      {
        g_test_message ("%s: element %zu: got %.9g want %.9g (bound %.3g)", label, i, got[i], want[i], tol);
        g_test_fail ();
        return;
      }
}

static void
check_exact (const char *label, const float *got, const float *want, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (memcmp (&got[i], &want[i], sizeof (float)) != 0)
      {
        g_test_message ("%s: element %zu: got %.9g want %.9g", label, i, got[i], want[i]);
        g_test_fail ();
        return;
      }
}

static void
check_unchanged (const char *label, const float *now, const float *copy, size_t n)
{
  if (memcmp (now, copy, n * sizeof (float)) != 0)
    {
      g_test_message ("%s: an input was modified", label);
      g_test_fail ();
    }
}

static void *
upload (const float *host, DdpmParamKind kind, int ndim, const int64_t *shape)
{
  g_autoptr (GError) error = NULL;
  void *h = be->ops->upload_param (be, host, kind, ndim, shape, &error);
  g_assert_no_error (error);
  return h;
}

static void
reserve (size_t bytes)
{
  g_autoptr (GError) error = NULL;
  g_assert_true (be->ops->reserve_scratch (be, bytes, &error));
  g_assert_no_error (error);
}

/* Swaps in a fresh backend whose scratch will be exactly what the op under test asks for, so an overrun
 * of a scratch sub-buffer shows under valgrind / ASan (e.g. valgrind tests/test_cpu_ops -p /cpu-ops/...). */
static DdpmBackend *
fresh_backend_begin (void)
{
  g_autoptr (GError) error = NULL;
  DdpmBackend *shared = be;
  be = ddpm_backend_cpu_new (&error);
  g_assert_no_error (error);
  return shared;
}

static void
fresh_backend_end (DdpmBackend *shared)
{
  be->ops->destroy (be);
  be = shared;
}

/* ---- conv2d ---- */

static void
conv_ref (const float *x, const float *w, const float *bias, double *y, int B, int Cin, int H, int W, int Cout,
          int k, int s, const int pad[4], int Ho, int Wo)
{
  for (int b = 0; b < B; b++)
    for (int co = 0; co < Cout; co++)
      for (int oy = 0; oy < Ho; oy++)
        for (int ox = 0; ox < Wo; ox++)
          {
            double acc = bias[co];
            for (int ci = 0; ci < Cin; ci++)
              {
                const float *plane = x + ((size_t) b * Cin + ci) * H * W;
                const float *wk = w + ((size_t) co * Cin + ci) * k * k;
                for (int r = 0; r < k; r++)
                  {
                    int iy = oy * s - pad[0] + r;
                    if (iy < 0 || iy >= H)
                      continue;
                    for (int c = 0; c < k; c++)
                      {
                        int ix = ox * s - pad[1] + c;
                        if (ix >= 0 && ix < W)
                          acc += (double) plane[iy * W + ix] * wk[r * k + c];
                      }
                  }
              }
            y[(((size_t) b * Cout + co) * Ho + oy) * Wo + ox] = acc;
          }
}

/* A conv layer's weights (Cout, Cin, k, k) and bias (Cout) in the backend. */
static DdpmLinearW
upload_conv (const float *w, const float *bias, int Cout, int Cin, int k)
{
  int64_t wshape[4] = { Cout, Cin, k, k }, bshape[1] = { Cout };
  return (DdpmLinearW) { upload (w, DDPM_PARAM_CONV, 4, wshape), upload (bias, DDPM_PARAM_VECTOR, 1, bshape), Cout, Cin,
                         k };
}

static void
run_conv (const char *label, int B, int Cin, int H, int W, int Cout, int k, int stride, int t, int l, int bo, int r)
{
  const int pad[4] = { t, l, bo, r };
  int Ho = (H + t + bo - k) / stride + 1, Wo = (W + l + r - k) / stride + 1;
  size_t nx = (size_t) B * Cin * H * W, ny = (size_t) B * Cout * Ho * Wo, nw = (size_t) Cout * Cin * k * k;
  float *x = rand_floats (nx, 1.0, 0.0);
  float *x_copy = g_memdup2 (x, nx * sizeof (float));
  float *w = rand_floats (nw, sqrt (3.0 / (Cin * k * k)), 0.0);
  float *bias = rand_floats (Cout, 0.5, 0.0);
  DdpmBackend *shared = fresh_backend_begin ();
  DdpmLinearW lw = upload_conv (w, bias, Cout, Cin, k);
  reserve (be->ops->conv2d_scratch (be, B, Cin, H, W, Cout, k, stride, pad));
  Guarded y = guarded_new (ny);
  be->ops->conv2d (be, &lw, x, y.data, B, H, W, stride, pad, NULL);
  double *want = g_new (double, ny);
  conv_ref (x, w, bias, want, B, Cin, H, W, Cout, k, stride, pad, Ho, Wo);
  check_close (label, y.data, want, ny, 1e-4);
  guarded_check (&y, label);
  check_unchanged (label, x, x_copy, nx);
  be->ops->free (be, lw.weight);
  be->ops->free (be, lw.bias);
  fresh_backend_end (shared);
  guarded_free (&y);
  g_free (want), g_free (x), g_free (x_copy), g_free (w), g_free (bias);
}

static void
test_conv_cifar (void)
{
  rng_state = 1;
  run_conv ("conv 128->128 3x3 32x32 B=2", 2, 128, 32, 32, 128, 3, 1, 1, 1, 1, 1);
  run_conv ("conv 128->128 3x3 s2 pad {0,0,1,1} 32x32 B=2", 2, 128, 32, 32, 128, 3, 2, 0, 0, 1, 1);
  run_conv ("conv 256->256 3x3 4x4 B=2", 2, 256, 4, 4, 256, 3, 1, 1, 1, 1, 1);
  run_conv ("conv 512->256 3x3 8x8 B=1", 1, 512, 8, 8, 256, 3, 1, 1, 1, 1, 1);
  run_conv ("conv 1x1 shortcut 384->256 16x16 B=2", 2, 384, 16, 16, 256, 1, 1, 0, 0, 0, 0);
  run_conv ("conv_in 3->128 3x3 32x32 B=1", 1, 3, 32, 32, 128, 3, 1, 1, 1, 1, 1);
  run_conv ("conv_out 128->3 3x3 32x32 B=1", 1, 128, 32, 32, 3, 3, 1, 1, 1, 1, 1);
}

/* conv2d with an epilogue (a strided per-image channel bias and a scaled residual, as a resnet's convs carry
 * them) must give exactly the bits of conv2d followed by the separate ops, in backend.h's order, on every
 * algorithm (Winograd wide and narrow rows, DIRECT9, 1x1 GEMM). */
static void
run_conv_epilogue (const char *label, int B, int Cin, int H, int W, int Cout, int k, int stride, int pad_all,
                   float scale)
{
  const int pad[4] = { pad_all, pad_all, pad_all, pad_all };
  int Ho = (H + 2 * pad_all - k) / stride + 1, Wo = (W + 2 * pad_all - k) / stride + 1;
  size_t nx = (size_t) B * Cin * H * W, ny = (size_t) B * Cout * Ho * Wo, nw = (size_t) Cout * Cin * k * k;
  const int stride_cb = Cout + 3;
  float *x = rand_floats (nx, 1.0, 0.0);
  float *w = rand_floats (nw, sqrt (3.0 / (Cin * k * k)), 0.0);
  float *bias = rand_floats (Cout, 0.5, 0.0);
  float *cb = rand_floats ((size_t) B * stride_cb, 1.0, 0.0);
  float *res = rand_floats (ny, 2.0, 0.0);
  DdpmBackend *shared = fresh_backend_begin ();
  DdpmLinearW lw = upload_conv (w, bias, Cout, Cin, k);
  reserve (be->ops->conv2d_scratch (be, B, Cin, H, W, Cout, k, stride, pad));
  float *fused = g_new (float, ny), *separate = g_new (float, ny);
  const DdpmConvEpilogue epis[3] = {
    { cb, NULL, stride_cb, 1.0f }, { NULL, res, 0, scale }, { cb, res, stride_cb, scale },
  };
  for (int e = 0; e < 3; e++)
    {
      be->ops->conv2d (be, &lw, x, fused, B, H, W, stride, pad, &epis[e]);
      be->ops->conv2d (be, &lw, x, separate, B, H, W, stride, pad, NULL);
      if (epis[e].channel_bias != NULL)
        cpu_add_channel_bias_strided (separate, cb, B, Cout, Ho * Wo, stride_cb);
      if (epis[e].residual != NULL)
        be->ops->add_scaled (be, res, separate, separate, ny, scale);
      size_t differ = 0;
      for (size_t i = 0; i < ny; i++)
        differ += memcmp (&fused[i], &separate[i], sizeof (float)) != 0;
      g_test_message ("%s epilogue %s%s: %zu of %zu values differ in their bits", label,
                      epis[e].channel_bias ? "+channel bias" : "", epis[e].residual ? " +residual" : "", differ, ny);
      g_assert_cmpuint (differ, ==, 0);
    }
  be->ops->free (be, lw.weight);
  be->ops->free (be, lw.bias);
  fresh_backend_end (shared);
  g_free (fused), g_free (separate), g_free (x), g_free (w), g_free (bias), g_free (cb), g_free (res);
}

static void
test_conv_epilogue (void)
{
  rng_state = 5;
  run_conv_epilogue ("winograd 3x3 32x32 B=2 (wide rows)", 2, 32, 32, 32, 24, 3, 1, 1, 0.70710678f);
  run_conv_epilogue ("winograd 3x3 7x9 B=3 (narrow, odd)", 3, 8, 7, 9, 5, 3, 1, 1, 1.0f);
  run_conv_epilogue ("direct9 3x3 s2 B=2", 2, 16, 10, 10, 12, 3, 2, 1, 0.5f);
  run_conv_epilogue ("1x1 B=2", 2, 16, 8, 8, 12, 1, 1, 0, 0.70710678f);
}

static void
test_conv_edges (void)
{
  rng_state = 2;
  /* Odd sizes: partial Winograd tiles on the bottom/right edges. */
  run_conv ("conv 3x3 7x5 B=3 (partial tiles)", 3, 5, 7, 5, 6, 3, 1, 1, 1, 1, 1);
  run_conv ("conv 3x3 1x1 image", 1, 4, 1, 1, 3, 3, 1, 1, 1, 1, 1);
  run_conv ("conv 3x3 no padding 6x9", 2, 3, 6, 9, 4, 3, 1, 0, 0, 0, 0);
  run_conv ("conv 3x3 asymmetric pad {2,0,0,1}", 1, 3, 6, 7, 5, 3, 1, 2, 0, 0, 1);
  run_conv ("conv 3x3 wide pad {1,2,1,2}", 2, 3, 5, 6, 4, 3, 1, 1, 2, 1, 2);
  /* downsample_padding = 1: symmetric pad, odd input. */
  run_conv ("conv 3x3 s2 pad 1 9x7", 2, 6, 9, 7, 5, 3, 2, 1, 1, 1, 1);
  run_conv ("conv 3x3 s3 pad {1,2,0,1}", 1, 4, 11, 10, 3, 3, 3, 1, 2, 0, 1);
  /* Generic GEMM path (im2col) for kernels other than 3x3 or strided/padded 1x1. */
  run_conv ("conv 1x1 s2 10x10", 2, 8, 10, 10, 5, 1, 2, 0, 0, 0, 0);
  run_conv ("conv 5x5 pad 2", 1, 3, 9, 8, 4, 5, 1, 2, 2, 2, 2);
  /* Several blocks (temporaries bounded): Winograd 3 blocks, DIRECT9 3 blocks. */
  run_conv ("conv 256->16 3x3 64x64 B=2 (multi-block)", 2, 256, 64, 64, 16, 3, 1, 1, 1, 1, 1);
  run_conv ("conv 512->8 3x3 s2 64x64 (multi-block)", 1, 512, 64, 64, 8, 3, 2, 0, 0, 1, 1);
}

/* ---- linear ---- */

static void
run_linear (const char *label, int M, int K, int N, gboolean silu)
{
  float *x = rand_floats ((size_t) M * K, 2.0, 0.0);
  float *w = rand_floats ((size_t) N * K, sqrt (3.0 / K), 0.0);
  float *bias = rand_floats (N, 0.5, 0.0);
  int64_t wshape[2] = { N, K }, bshape[1] = { N };
  DdpmLinearW lw = { upload (w, DDPM_PARAM_LINEAR, 2, wshape), upload (bias, DDPM_PARAM_VECTOR, 1, bshape), N, K, 0 };
  Guarded y = guarded_new ((size_t) M * N);
  be->ops->linear (be, &lw, x, y.data, M, silu);
  double *want = g_new (double, (size_t) M * N);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++)
      {
        double acc = bias[n];
        for (int k = 0; k < K; k++)
          {
            double v = x[(size_t) m * K + k];
            if (silu)
              v = v / (1.0 + exp (-v));
            acc += v * w[(size_t) n * K + k];
          }
        want[(size_t) m * N + n] = acc;
      }
  check_close (label, y.data, want, (size_t) M * N, 1e-4);
  guarded_check (&y, label);
  be->ops->free (be, lw.weight);
  be->ops->free (be, lw.bias);
  guarded_free (&y);
  g_free (want), g_free (x), g_free (w), g_free (bias);
}

static void
test_linear (void)
{
  rng_state = 3;
  run_linear ("linear 512->512 M=2", 2, 512, 512, FALSE);
  run_linear ("linear 512->512 M=8 silu", 8, 512, 512, TRUE);
  run_linear ("linear 128->512 M=1 (time_linear_1)", 1, 128, 512, FALSE);
  run_linear ("linear 512->1024 M=8 silu (scale_shift proj)", 8, 512, 1024, TRUE);
  /* SiLU input larger than the fixed buffer: processed in row and K chunks. */
  run_linear ("linear 40000->16 M=3 silu (chunked)", 3, 40000, 16, TRUE);
}

/* ---- group norm ---- */

static void
run_group_norm (const char *label, int B, int C, int HW, int G, gboolean use_ss, gboolean silu, gboolean in_place)
{
  size_t n = (size_t) B * C * HW;
  float *x = rand_floats (n, 2.0, 3.0);    /* a mean far from 0 tests the variance's stability */
  float *gamma = rand_floats (C, 0.5, 1.0), *beta = rand_floats (C, 0.5, 0.0);
  float *ss = use_ss ? rand_floats ((size_t) B * 2 * C, 0.5, 0.0) : NULL;
  const float eps = 1e-6f;
  int64_t shape[1] = { C };
  DdpmNormW nw = { upload (gamma, DDPM_PARAM_VECTOR, 1, shape), upload (beta, DDPM_PARAM_VECTOR, 1, shape), C };
  double *want = g_new (double, n);
  int cpg = C / G;
  for (int b = 0; b < B; b++)
    for (int g = 0; g < G; g++)
      {
        const float *xg = x + ((size_t) b * C + g * cpg) * HW;
        size_t m = (size_t) cpg * HW;
        double mean = 0, var = 0;
        for (size_t i = 0; i < m; i++)
          mean += xg[i];
        mean /= m;
        for (size_t i = 0; i < m; i++)
          var += (xg[i] - mean) * (xg[i] - mean);
        var /= m;
        for (int j = 0; j < cpg; j++)
          {
            int c = g * cpg + j;
            for (int i = 0; i < HW; i++)
              {
                double v = (xg[(size_t) j * HW + i] - mean) / sqrt (var + eps) * gamma[c] + beta[c];
                if (ss)
                  v = v * (1.0 + ss[(size_t) b * 2 * C + c]) + ss[(size_t) b * 2 * C + C + c];
                if (silu)
                  v = v / (1.0 + exp (-v));
                want[((size_t) b * C + c) * HW + i] = v;
              }
          }
      }
  Guarded y = guarded_new (n);
  if (in_place)
    memcpy (y.data, x, n * sizeof (float));
  be->ops->group_norm (be, &nw, in_place ? y.data : x, y.data, B, C, HW, G, eps, ss, silu);
  check_close (label, y.data, want, n, 2e-5);
  guarded_check (&y, label);
  be->ops->free (be, nw.gamma);
  be->ops->free (be, nw.beta);
  guarded_free (&y);
  g_free (want), g_free (x), g_free (gamma), g_free (beta), g_free (ss);
}

static void
test_group_norm (void)
{
  rng_state = 4;
  run_group_norm ("group_norm C=128 32x32 G=32 B=2", 2, 128, 1024, 32, FALSE, FALSE, FALSE);
  run_group_norm ("group_norm C=128 32x32 G=32 B=2 silu", 2, 128, 1024, 32, FALSE, TRUE, FALSE);
  run_group_norm ("group_norm C=256 16x16 G=32 B=2 scale_shift silu", 2, 256, 256, 32, TRUE, TRUE, FALSE);
  run_group_norm ("group_norm C=384 16x16 G=32 B=1 scale_shift", 1, 384, 256, 32, TRUE, FALSE, FALSE);
  run_group_norm ("group_norm C=512 4x4 G=32 B=2 silu in place", 2, 512, 16, 32, FALSE, TRUE, TRUE);
}

/* ---- attention ---- */

static void
run_attention (const char *label, int B, int C, int HW, int heads, float scale, gboolean alias)
{
  size_t n = (size_t) B * C * HW;
  float *normed = rand_floats (n, 1.5, 0.0), *res = rand_floats (n, 1.0, 0.0);
  float *normed_copy = g_memdup2 (normed, n * sizeof (float));
  DdpmBackend *shared = fresh_backend_begin ();
  float *wt[4], *bs[4];
  DdpmLinearW lw[4];
  int64_t wshape[2] = { C, C }, bshape[1] = { C };
  for (int i = 0; i < 4; i++)
    {
      wt[i] = rand_floats ((size_t) C * C, sqrt (3.0 / C), 0.0);
      bs[i] = rand_floats (C, 0.2, 0.0);
      lw[i] = (DdpmLinearW) { upload (wt[i], DDPM_PARAM_LINEAR, 2, wshape), upload (bs[i], DDPM_PARAM_VECTOR, 1, bshape),
                              C, C, 0 };
    }
  DdpmAttentionW aw = { .channels = C, .heads = heads, .to_q = lw[0], .to_k = lw[1], .to_v = lw[2], .to_out = lw[3] };
  reserve (be->ops->attention_scratch (be, B, C, HW, heads));

  /* Reference in tokens-major double: q/k/v (HW, C). */
  double *want = g_new (double, n);
  double *proj[3], *o = g_new (double, (size_t) HW * C), *p = g_new (double, HW);
  for (int i = 0; i < 3; i++)
    proj[i] = g_new (double, (size_t) HW * C);
  int d = C / heads;
  for (int b = 0; b < B; b++)
    {
      const float *nb = normed + (size_t) b * C * HW;
      for (int i = 0; i < 3; i++)
        for (int t = 0; t < HW; t++)
          for (int c = 0; c < C; c++)
            {
              double acc = bs[i][c];
              for (int k = 0; k < C; k++)
                acc += (double) wt[i][(size_t) c * C + k] * nb[(size_t) k * HW + t];
              proj[i][(size_t) t * C + c] = acc;
            }
      for (int h = 0; h < heads; h++)
        for (int t = 0; t < HW; t++)
          {
            double mx = -INFINITY, sum = 0;
            for (int u = 0; u < HW; u++)
              {
                double s = 0;
                for (int i = 0; i < d; i++)
                  s += proj[0][(size_t) t * C + h * d + i] * proj[1][(size_t) u * C + h * d + i];
                p[u] = s / sqrt ((double) d);
                mx = fmax (mx, p[u]);
              }
            for (int u = 0; u < HW; u++)
              sum += (p[u] = exp (p[u] - mx));
            for (int i = 0; i < d; i++)
              {
                double acc = 0;
                for (int u = 0; u < HW; u++)
                  acc += p[u] / sum * proj[2][(size_t) u * C + h * d + i];
                o[(size_t) t * C + h * d + i] = acc;
              }
          }
      for (int c = 0; c < C; c++)
        for (int t = 0; t < HW; t++)
          {
            double acc = bs[3][c];
            for (int k = 0; k < C; k++)
              acc += (double) wt[3][(size_t) c * C + k] * o[(size_t) t * C + k];
            size_t idx = ((size_t) b * C + c) * HW + t;
            want[idx] = (acc + res[idx]) * scale;
          }
    }

  Guarded y = guarded_new (n);
  if (alias)
    memcpy (y.data, res, n * sizeof (float));
  be->ops->attention (be, &aw, normed, alias ? y.data : res, y.data, B, C, HW, heads, scale);
  check_close (label, y.data, want, n, 1e-4);
  guarded_check (&y, label);
  check_unchanged (label, normed, normed_copy, n);
  for (int i = 0; i < 4; i++)
    {
      be->ops->free (be, lw[i].weight);
      be->ops->free (be, lw[i].bias);
      g_free (wt[i]), g_free (bs[i]);
    }
  fresh_backend_end (shared);
  for (int i = 0; i < 3; i++)
    g_free (proj[i]);
  guarded_free (&y);
  g_free (want), g_free (o), g_free (p), g_free (normed), g_free (normed_copy), g_free (res);
}

static void
test_attention (void)
{
  rng_state = 5;
  run_attention ("attention C=256 16x16 1 head B=2", 2, 256, 256, 1, 1.0f, FALSE);
  run_attention ("attention C=128 16x16 4 heads (d=32) B=1, y aliases residual", 1, 128, 256, 4, 1.0f, TRUE);
  run_attention ("attention C=256 4x4 1 head B=2 (mid), scale 1/sqrt2", 2, 256, 16, 1, (float) M_SQRT1_2, TRUE);
  /* 4096 tokens: the score matrix is processed in query chunks. */
  run_attention ("attention C=16 64x64 2 heads (chunked scores)", 1, 16, 4096, 2, 1.0f, FALSE);
}

/* ---- small ops ---- */

static void
test_timestep_embedding (void)
{
  /* The spec's check value: t = 10, C0 = 128, freq_shift 1, no flip. */
  const float t[3] = { 10.0f, 999.0f, 0.0f };
  Guarded y = guarded_new (3 * 128);
  be->ops->timestep_embedding (be, t, y.data, 3, 128, FALSE, 1.0f);
  guarded_check (&y, "timestep_embedding");
  const double spec[3] = { -0.544021, 0.706749, 0.925205 };
  for (int i = 0; i < 3; i++)
    g_assert_cmpfloat (fabs (y.data[i] - spec[i]), <, 1e-6);
  /* Reference: the float32 argument (as diffusers forms it), sin/cos in double. */
  double want[3 * 128];
  for (int b = 0; b < 3; b++)
    for (int i = 0; i < 64; i++)
      {
        float exponent = ((float) -log (10000.0) * (float) i) / 63.0f;
        float arg = t[b] * (float) exp (exponent);
        want[b * 128 + i] = sin (arg);
        want[b * 128 + 64 + i] = cos (arg);
      }
  check_close ("timestep_embedding dim 128 shift 1", y.data, want, 3 * 128, 1e-6);
  /* flip_sin_to_cos: [cos, sin]. */
  Guarded yf = guarded_new (3 * 128);
  be->ops->timestep_embedding (be, t, yf.data, 3, 128, TRUE, 1.0f);
  guarded_check (&yf, "timestep_embedding flip");
  for (int b = 0; b < 3; b++)
    {
      check_exact ("flip cos half", yf.data + b * 128, y.data + b * 128 + 64, 64);
      check_exact ("flip sin half", yf.data + b * 128 + 64, y.data + b * 128, 64);
    }
  guarded_free (&y);
  guarded_free (&yf);
}

static void
test_elementwise (void)
{
  rng_state = 6;
  const int B = 2, C = 3, H = 5, W = 7, Ca = 256, Cb = 128, HW = 256;
  /* upsample */
  float *x = rand_floats ((size_t) B * C * H * W, 1.0, 0.0);
  Guarded up = guarded_new ((size_t) B * C * 4 * H * W);
  be->ops->upsample_nearest2x (be, x, up.data, B, C, H, W);
  guarded_check (&up, "upsample");
  float *want = g_new (float, (size_t) B * C * 4 * H * W);
  for (int p = 0; p < B * C; p++)
    for (int yy = 0; yy < 2 * H; yy++)
      for (int xx = 0; xx < 2 * W; xx++)
        want[((size_t) p * 2 * H + yy) * 2 * W + xx] = x[((size_t) p * H + yy / 2) * W + xx / 2];
  check_exact ("upsample_nearest2x", up.data, want, (size_t) B * C * 4 * H * W);
  guarded_free (&up);
  g_free (want), g_free (x);

  /* concat */
  float *a = rand_floats ((size_t) B * Ca * HW, 1.0, 0.0), *b = rand_floats ((size_t) B * Cb * HW, 1.0, 0.0);
  size_t ny = (size_t) B * (Ca + Cb) * HW;
  Guarded cat = guarded_new (ny);
  be->ops->concat_channels (be, a, Ca, b, Cb, cat.data, B, HW);
  guarded_check (&cat, "concat");
  want = g_new (float, ny);
  for (int i = 0; i < B; i++)
    {
      memcpy (want + (size_t) i * (Ca + Cb) * HW, a + (size_t) i * Ca * HW, (size_t) Ca * HW * sizeof (float));
      memcpy (want + ((size_t) i * (Ca + Cb) + Ca) * HW, b + (size_t) i * Cb * HW, (size_t) Cb * HW * sizeof (float));
    }
  check_exact ("concat_channels", cat.data, want, ny);
  guarded_free (&cat);
  g_free (want);

  /* add_scaled, out of place and aliasing a / b */
  size_t n = (size_t) B * Ca * HW;
  float *b2 = rand_floats (n, 1.0, 0.0);
  want = g_new (float, n);
  for (int pass = 0; pass < 3; pass++)
    {
      float scale = pass == 0 ? 1.0f : 0.70710678f;
      for (size_t i = 0; i < n; i++)
        want[i] = (a[i] + b2[i]) * scale;
      Guarded y = guarded_new (n);
      if (pass == 0)
        be->ops->add_scaled (be, a, b2, y.data, n, scale);
      else
        {
          memcpy (y.data, pass == 1 ? a : b2, n * sizeof (float));
          be->ops->add_scaled (be, pass == 1 ? y.data : a, pass == 1 ? b2 : y.data, y.data, n, scale);
        }
      guarded_check (&y, "add_scaled");
      check_exact ("add_scaled", y.data, want, n);
      guarded_free (&y);
    }
  g_free (want), g_free (b2);

  /* add_channel_bias */
  float *v = rand_floats ((size_t) B * Ca, 1.0, 0.0);
  Guarded h = guarded_new (n);
  memcpy (h.data, a, n * sizeof (float));
  be->ops->add_channel_bias (be, h.data, v, B, Ca, HW);
  guarded_check (&h, "add_channel_bias");
  want = g_new (float, n);
  for (size_t i = 0; i < n; i++)
    want[i] = a[i] + v[i / HW];
  check_exact ("add_channel_bias", h.data, want, n);
  guarded_free (&h);
  g_free (want), g_free (v), g_free (a), g_free (b);

  /* cast_in / cast_out are float32 copies on the CPU */
  float *src = rand_floats (1000, 1.0, 0.0);
  Guarded c1 = guarded_new (1000), c2 = guarded_new (1000);
  be->ops->cast_in (be, src, c1.data, 1000);
  be->ops->cast_out (be, c1.data, c2.data, 1000);
  guarded_check (&c1, "cast_in");
  guarded_check (&c2, "cast_out");
  check_exact ("cast_in/out", c2.data, src, 1000);
  guarded_free (&c1), guarded_free (&c2);
  g_free (src);
}

static void
test_count_nonfinite (void)
{
  size_t n = 100003;
  float *x = rand_floats (n, 3e38, 0.0);
  x[0] = NAN, x[17] = INFINITY, x[n - 1] = -INFINITY, x[50000] = -NAN;
  x[5] = 3.4028235e38f, x[6] = 1e-45f;  /* FLT_MAX and a subnormal are finite */
  g_assert_cmpuint (be->ops->count_nonfinite (be, x, n), ==, 4);
  g_assert_cmpuint (be->ops->count_nonfinite (be, x + 1, 16), ==, 0);
  g_free (x);
}

static void
test_randn (void)
{
  const size_t n = 3 * 32 * 33 + 5;      /* not a multiple of the chunk */
  const int B = 3;
  Guarded y = guarded_new (n * B);
  be->ops->randn (be, y.data, 1234, 7, n, B);
  guarded_check (&y, "randn");
  float *want = g_new (float, n);
  for (int b = 0; b < B; b++)
    {
      ddpm_randn (1234 + b, 7, 0, n, want);
      check_exact ("randn", y.data + b * n, want, n);
    }
  guarded_free (&y);
  g_free (want);
}

static void
test_scheduler_step (void)
{
  rng_state = 8;
  const size_t n = 3 * 16 * 16;
  const int B = 2;
  DdpmStepParams sp = { .t = 500, .pred_x = 1.2f, .pred_m = -0.4f, .eps_x = 0.1f, .eps_m = 0.9f, .clip = 1.0f,
                        .c_x0 = 0.3f, .c_x = 0.6f, .c_eps = 0.05f, .sigma = 0.02f, .draw_noise = 1, .seed = 42,
                        .stream = 3 };
  g_autoptr (GError) error = NULL;
  void *params = be->ops->alloc_bytes (be, sizeof sp, &error);
  g_assert_no_error (error);
  be->ops->write_params (be, params, &sp);
  float *x = rand_floats (n * B, 1.0, 0.0), *m = rand_floats (n * B, 1.0, 0.0);
  float *x_ref = g_memdup2 (x, n * B * sizeof (float));
  Guarded x0 = guarded_new (n * B);
  float *x0_ref = g_new (float, n * B);
  be->ops->scheduler_step (be, params, x, m, NULL, x0.data, n, B);
  ddpm_step_cpu (&sp, x_ref, m, NULL, x0_ref, n, B);
  guarded_check (&x0, "scheduler_step x0");
  check_exact ("scheduler_step x", x, x_ref, n * B);
  check_exact ("scheduler_step x0", x0.data, x0_ref, n * B);
  be->ops->free (be, params);
  guarded_free (&x0);
  g_free (x), g_free (m), g_free (x_ref), g_free (x0_ref);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autoptr (GError) error = NULL;
  be = ddpm_backend_cpu_new (&error);
  g_assert_no_error (error);
  printf ("# backend: %s\n", be->description);
  g_test_add_func ("/cpu-ops/conv2d/cifar-shapes", test_conv_cifar);
  g_test_add_func ("/cpu-ops/conv2d/edges", test_conv_edges);
  g_test_add_func ("/cpu-ops/conv2d/epilogue", test_conv_epilogue);
  g_test_add_func ("/cpu-ops/linear", test_linear);
  g_test_add_func ("/cpu-ops/group-norm", test_group_norm);
  g_test_add_func ("/cpu-ops/attention", test_attention);
  g_test_add_func ("/cpu-ops/timestep-embedding", test_timestep_embedding);
  g_test_add_func ("/cpu-ops/elementwise", test_elementwise);
  g_test_add_func ("/cpu-ops/count-nonfinite", test_count_nonfinite);
  g_test_add_func ("/cpu-ops/randn", test_randn);
  g_test_add_func ("/cpu-ops/scheduler-step", test_scheduler_step);
  int rc = g_test_run ();
  be->ops->destroy (be);
  return rc;
}
