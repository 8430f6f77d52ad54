/* test_unet.c: one UNet forward on the CPU backend against diffusers' float64 forward
 * (tests/fixtures/models/<model>/ref/eps_<pair>.npy, written by tools/make_fixtures.py).
 *
 * Bound: max abs error <= 1e-4 (the bound; float32 PyTorch itself lands within 1.2e-6 of the
 * same references, so a larger error means a real bug). The worst element is printed for every case. */
#include "ddpm.h"
#include "npy.h"
#include "test_util.h"

#include <stdio.h>

#define EPS_BOUND 1e-4

static const char *const MODELS[] = { "cifar-like", "celebahq-like", "fp16-4ch", "bf16-tiny" };
static const char *const PAIRS[] = { "t0_999", "t10_500", "t250_750" };

static void
test_model_eps (gconstpointer data)
{
  const char *name = data;
  g_autofree char *rel = g_strdup_printf ("models/%s", name);
  g_autofree char *dir = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);

  g_autoptr (DdpmNpyArray) x = fixture_ref_npy (name, "x.npy");
  g_assert_cmpint (x->type, ==, DDPM_NPY_F32);
  g_assert_cmpint (x->ndim, ==, 4);
  const int B = x->shape[0], H = x->shape[2], W = x->shape[3];
  for (size_t p = 0; p < G_N_ELEMENTS (PAIRS); p++)
    {
      g_autofree char *t_file = g_strdup_printf ("t_%s.npy", PAIRS[p]);
      g_autofree char *eps_file = g_strdup_printf ("eps_%s.npy", PAIRS[p]);
      g_autoptr (DdpmNpyArray) t = fixture_ref_npy (name, t_file);
      g_autoptr (DdpmNpyArray) want = fixture_ref_npy (name, eps_file);
      g_assert_cmpint (t->type, ==, DDPM_NPY_I64);
      g_autofree float *eps = g_new (float, want->numel);
      g_assert_true (ddpm_context_eps (ctx, x->data, t->data, B, H, W, eps, &error));
      g_assert_no_error (error);
      CompareResult r = compare_f32 (eps, want->data, want->numel);
      g_autofree char *label = g_strdup_printf ("eps %s %s (t = %lld, %lld)", name, PAIRS[p],
                                                (long long) ((int64_t *) t->data)[0], (long long) ((int64_t *) t->data)[1]);
      report_compare (label, &r);
      printf ("# %s: max abs err %.3g (bound %.0e)\n", label, r.max_abs, EPS_BOUND);
      g_assert_cmpuint (r.n_nonfinite, ==, 0);
      g_assert_cmpfloat (r.max_abs, <=, EPS_BOUND);
    }
}

/* A second context on the same model gives bit-identical results (weights are shared read-only). */
static void
test_two_contexts (void)
{
  g_autofree char *dir = fixture_path ("models/cifar-like");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_autoptr (DdpmNpyArray) x = fixture_ref_npy ("cifar-like", "x.npy");
  g_autoptr (DdpmNpyArray) t = fixture_ref_npy ("cifar-like", "t_t10_500.npy");
  float *out[2];
  for (int k = 0; k < 2; k++)
    {
      g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
      g_assert_no_error (error);
      out[k] = g_new (float, x->numel);
      g_assert_true (ddpm_context_eps (ctx, x->data, t->data, x->shape[0], x->shape[2], x->shape[3], out[k], &error));
    }
  g_assert_cmpmem (out[0], x->numel * sizeof (float), out[1], x->numel * sizeof (float));
  g_free (out[0]);
  g_free (out[1]);
}

/* Image b of a batch does not depend on the other images (no cross-batch leakage in any op). */
static void
test_batch_independence (void)
{
  g_autofree char *dir = fixture_path ("models/celebahq-like");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  g_autoptr (DdpmNpyArray) x = fixture_ref_npy ("celebahq-like", "x.npy");
  g_autoptr (DdpmNpyArray) t = fixture_ref_npy ("celebahq-like", "t_t250_750.npy");
  const int H = x->shape[2], W = x->shape[3];
  const size_t per = x->numel / 2;
  g_autofree float *both = g_new (float, x->numel);
  g_autofree float *second = g_new (float, per);
  g_assert_true (ddpm_context_eps (ctx, x->data, t->data, 2, H, W, both, &error));
  g_assert_true (ddpm_context_eps (ctx, (float *) x->data + per, (int64_t *) t->data + 1, 1, H, W, second, &error));
  CompareResult r = compare_f32 (both + per, second, per);
  report_compare ("batch item 1 alone vs in a batch of 2", &r);
  /* Not bit for bit: OpenBLAS blocks a GEMM by its width (batch x pixels), so the sums' order differs. 1e-6
   * held on the Intel machines; an AMD EPYC's kernels gave 1.07e-6 (2026-11-27). Leakage between images
   * would show at the scale of the values (~1), so 1e-5 still tells the two apart. */
  g_assert_cmpfloat (r.max_abs, <=, 1e-5);
}

static void
test_bad_timestep (void)
{
  g_autofree char *dir = fixture_path ("models/cifar-like");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  float x[3 * 16 * 16] = { 0 }, eps[3 * 16 * 16];
  int64_t t = 1000;
  g_assert_false (ddpm_context_eps (ctx, x, &t, 1, 16, 16, eps, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT);
  g_clear_error (&error);
  t = 5;
  /* 12 is not a multiple of 2^(4-1). */
  g_assert_false (ddpm_context_eps (ctx, x, &t, 1, 12, 12, eps, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT);
  g_test_message ("%s", error->message);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (size_t m = 0; m < G_N_ELEMENTS (MODELS); m++)
    {
      g_autofree char *path = g_strdup_printf ("/unet/eps/%s", MODELS[m]);
      g_test_add_data_func (path, MODELS[m], test_model_eps);
    }
  g_test_add_func ("/unet/two-contexts", test_two_contexts);
  g_test_add_func ("/unet/batch-independence", test_batch_independence);
  g_test_add_func ("/unet/bad-timestep", test_bad_timestep);
  return g_test_run ();
}
