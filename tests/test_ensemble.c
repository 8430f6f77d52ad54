/* test_ensemble.c: the self-ensemble of the already-noisy denoiser (engine/ensemble.c).
 *
 * - Each of the 8 symmetries and its inverse give back the picture exactly, on a non-square picture, and
 *   symmetry 1 is a column flip, 2 a row flip, 4 a transpose.
 * - ddpm_sample with ensemble K equals the mean of K single runs on the transformed pictures, each mapped
 *   back by hand (bound 1e-6 absolute: the same operations in the same order, so it is exact in practice).
 * - Progress runs over K * n steps, a cancel in the second run leaves the output untouched, and bad values
 *   are refused. */
#include "ddpm.h"
#include "ensemble.h"
#include "test_util.h"

#include <math.h>
#include <string.h>

#define MEAN_BOUND 1e-6

static void
test_symmetry_round_trip (void)
{
  enum { P = 2, H = 3, W = 5, N = P * H * W };
  float src[N], dst[N], back[N];
  for (int i = 0; i < N; i++)
    src[i] = (float) (i * 7 % 11) + 0.25f * i;
  for (int k = 0; k < 8; k++)
    {
      ddpm_symmetry_apply (k, src, dst, P, H, W);
      memset (back, 0, sizeof back);
      ddpm_symmetry_accumulate_inverse (k, dst, back, P, H, W);
      g_assert_cmpmem (back, sizeof back, src, sizeof src);
    }
  /* The named symmetries, on plane 1 (offset H * W). */
  const float *s = src + H * W;
  ddpm_symmetry_apply (1, src, dst, P, H, W);
  g_assert_cmpfloat (dst[H * W + 0 * W + 0], ==, s[0 * W + (W - 1)]);
  ddpm_symmetry_apply (2, src, dst, P, H, W);
  g_assert_cmpfloat (dst[H * W + 0 * W + 1], ==, s[(H - 1) * W + 1]);
  ddpm_symmetry_apply (4, src, dst, P, H, W);   /* (W, H) layout */
  for (int i = 0; i < H; i++)
    for (int j = 0; j < W; j++)
      g_assert_cmpfloat (dst[H * W + j * H + i], ==, s[i * W + j]);
}

/* A noisy start for bf16-tiny at 16 x 24 (non-square, so transposed runs re-plan), batch 2. */
typedef struct {
  DdpmModel *model;
  DdpmContext *ctx;
  DdpmSampleParams p;
  float *x;
  size_t n;
} Setup;

static void
setup_init (Setup *s)
{
  s->model = fixture_model_load ("models/bf16-tiny");
  g_autoptr (GError) error = NULL;
  s->ctx = ddpm_context_new (s->model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  ddpm_sample_params_init (&s->p);
  s->p.sampler = DDPM_SAMPLER_DDIM;
  s->p.num_steps = 50;
  s->p.batch = 2;
  s->p.height = 16;
  s->p.width = 24;
  s->p.start = DDPM_START_NOISY;
  s->p.start_timestep = 95;
  s->n = (size_t) 2 * 3 * 16 * 24;
  s->x = g_new (float, s->n);
  ddpm_randn (7, 0, 0, s->n, s->x);
  s->p.x_init = s->x;
}

static void
setup_clear (Setup *s)
{
  g_free (s->x);
  ddpm_context_free (s->ctx);
  ddpm_model_free (s->model);
}

static void
test_mean_of_runs (void)
{
  Setup s;
  setup_init (&s);
  for (int K = 1; K <= 8; K *= 2)
    {
      g_autofree float *got = g_new (float, s.n);
      g_autofree float *want = g_new0 (float, s.n);
      g_autofree float *xk = g_new (float, s.n);
      g_autofree float *yk = g_new (float, s.n);
      g_autoptr (GError) error = NULL;
      s.p.ensemble = K;
      g_assert_true (ddpm_sample (s.ctx, &s.p, got, &error));
      g_assert_no_error (error);
      for (int k = 0; k < K; k++)
        {
          DdpmSampleParams pk = s.p;
          pk.ensemble = 1;
          pk.height = (k & 4) ? 24 : 16;
          pk.width = (k & 4) ? 16 : 24;
          ddpm_symmetry_apply (k, s.x, xk, 2 * 3, 16, 24);
          pk.x_init = xk;
          g_assert_true (ddpm_sample (s.ctx, &pk, yk, &error));
          ddpm_symmetry_accumulate_inverse (k, yk, want, 2 * 3, 16, 24);
        }
      for (size_t i = 0; i < s.n; i++)
        want[i] /= K;
      CompareResult r = compare_f32 (got, want, s.n);
      g_autofree char *label = g_strdup_printf ("ensemble %d vs %d runs mapped back by hand", K, K);
      report_compare (label, &r);
      g_assert_cmpint (r.n_nonfinite, ==, 0);
      g_assert_cmpfloat (r.max_abs, <=, MEAN_BOUND);
    }
  setup_clear (&s);
}

static void
test_progress_and_cancel (void)
{
  Setup s;
  setup_init (&s);
  s.p.ensemble = 4;
  g_autofree float *out = g_new (float, s.n);
  g_autofree float *sentinel = g_new (float, s.n);
  ProgressLog log = { 0 };
  ddpm_context_set_progress (s.ctx, progress_log_callback, &log, 2);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_sample (s.ctx, &s.p, out, &error));
  /* Start timestep 95 with 50 DDIM steps (stride 20): 95, 80, 60, 40, 20, 0 -> 6 steps a run. */
  g_assert_cmpint (log.total, ==, 4 * 6);
  g_assert_cmpint (log.calls, ==, 4 * 6);
  g_assert_cmpint (log.previews, ==, 4 * 3);

  memset (&log, 0, sizeof log);
  log.cancel_at = 6 + 2;           /* in the second run */
  for (size_t i = 0; i < s.n; i++)
    sentinel[i] = out[i] = 321.0f + i;
  g_assert_false (ddpm_sample (s.ctx, &s.p, out, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_CANCELLED);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "ensemble run 2 of 4"));
  g_assert_cmpint (log.calls, ==, 8);
  g_assert_cmpmem (out, s.n * sizeof (float), sentinel, s.n * sizeof (float));

  /* The next run completes and reports progress through the caller's callback again. */
  g_clear_error (&error);
  memset (&log, 0, sizeof log);
  s.p.ensemble = 1;
  g_assert_true (ddpm_sample (s.ctx, &s.p, out, &error));
  g_assert_cmpint (log.total, ==, 6);
  setup_clear (&s);
}

static void
test_bad_values (void)
{
  Setup s;
  setup_init (&s);
  g_autofree float *out = g_new (float, s.n);
  int bad[] = { 9, -1 };
  for (size_t k = 0; k < G_N_ELEMENTS (bad); k++)
    {
      g_autoptr (GError) error = NULL;
      s.p.ensemble = bad[k];
      g_assert_false (ddpm_sample (s.ctx, &s.p, out, &error));
      g_assert_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT);
      g_test_message ("ensemble %d: %s", bad[k], error->message);
    }
  /* Averaging only makes sense for a picture to denoise, not for generation from noise. */
  g_autoptr (GError) error = NULL;
  s.p.ensemble = 2;
  s.p.start = DDPM_START_NOISE;
  g_assert_false (ddpm_sample (s.ctx, &s.p, out, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT);
  g_test_message ("%s", error->message);
  setup_clear (&s);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ensemble/symmetry-round-trip", test_symmetry_round_trip);
  g_test_add_func ("/ensemble/mean-of-runs", test_mean_of_runs);
  g_test_add_func ("/ensemble/progress-and-cancel", test_progress_and_cancel);
  g_test_add_func ("/ensemble/bad-values", test_bad_values);
  return g_test_run ();
}
