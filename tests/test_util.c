/* test_util.c: see test_util.h. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>

char *
fixture_path (const char *name)
{
  const char *dir = g_getenv ("DDPM_FIXTURES");
  return g_build_filename (dir ? dir : "tests/fixtures", name, NULL);
}

DdpmModel *
fixture_model_load (const char *rel)
{
  g_autofree char *dir = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  DdpmModel *model = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  return model;
}

gboolean
progress_log_callback (int step, int num_steps, const float *x0_preview, gpointer user_data)
{
  ProgressLog *log = user_data;
  g_assert_cmpint (step, ==, log->last_step + 1);
  log->calls++;
  log->last_step = step;
  log->total = num_steps;
  if (x0_preview != NULL)
    {
      log->previews++;
      g_assert_true (isfinite (x0_preview[0]));
    }
  return log->cancel_at == 0 || step < log->cancel_at;
}

DdpmNpyArray *
fixture_ref_npy (const char *model, const char *file)
{
  g_autofree char *rel = g_strdup_printf ("models/%s/ref/%s", model, file);
  g_autofree char *path = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  DdpmNpyArray *a = ddpm_npy_load (path, &error);
  g_assert_no_error (error);
  return a;
}

static void
compare_step (CompareResult *r, size_t i, double a, double b)
{
  if (!isfinite (a) || !isfinite (b))
    {
      r->n_nonfinite++;
      return;
    }
  double d = fabs (a - b);
  double rel = d / fmax (fabs (b), 1e-6);
  if (d > r->max_abs || (i == 0 && r->worst_index == 0))
    {
      r->max_abs = d;
      r->worst_index = i;
      r->worst_a = a;
      r->worst_b = b;
    }
  if (rel > r->max_rel)
    r->max_rel = rel;
}

CompareResult
compare_f32_f64 (const float *got, const double *want, size_t n)
{
  CompareResult r = { 0 };
  for (size_t i = 0; i < n; i++)
    compare_step (&r, i, got[i], want[i]);
  return r;
}

CompareResult
compare_f32 (const float *got, const float *want, size_t n)
{
  CompareResult r = { 0 };
  for (size_t i = 0; i < n; i++)
    compare_step (&r, i, got[i], want[i]);
  return r;
}

void
report_compare (const char *label, const CompareResult *r)
{
  g_test_message ("%s: max abs err %.3g at [%zu] (got %.7g, want %.7g), max rel err %.3g, non-finite %zu",
                  label, r->max_abs, r->worst_index, r->worst_a, r->worst_b, r->max_rel, r->n_nonfinite);
}
