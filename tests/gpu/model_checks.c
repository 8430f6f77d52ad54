/* model_checks.c: whole UNets through the public API (ddpm_context_new with DDPM_DEVICE_CUDA):
 * 1. eps of the diffusers fixtures (tests/fixtures/models/) against their float64 references;
 * 2. 20-step DDPM/DDIM samples of the fixtures with diffusers' injected noise against diffusers' samples
 *    (this runs the sampler's captured CUDA graph);
 * 3. a random-weight google/ddpm-cifar10-32 model: eps and a seeded 10-step DDPM sample (noise drawn on the
 *    device by Philox) on CUDA against the CPU backend;
 * 4. timings of one forward (ddpm_context_eps, copies included) for cifar10-32 and celebahq-256.
 *
 * Bounds (absolute, on values of magnitude ~1; the fixtures' eps reach 1.1-1.7, samples 1-4), measured
 * with the CPU emulator of these very kernels (kernels/emu/, same roundings, other summation order):
 *   eps   fp32 1e-4, the fixtures' own contract (MANIFEST.json "tolerances"), met by the CPU backend too;
 *               measured 3e-7.
 *         fp16 1e-2: every activation is rounded to fp16 (u = 4.9e-4) through ~60 layers and the GroupNorms
 *               renormalise the errors rather than let them grow: measured 0.9-1.6e-3 (3 u).
 *         bf16 8e-2: the same with u = 3.9e-3: measured 1.0-1.7e-2.
 *   samples fp32 1e-3 (the fixtures' contract). In half precision a sample's error is the eps error times
 *         the run's conditioning: MANIFEST.json gives, per fixture run, how far 1e-5 of noise on every eps
 *         moves the sample (amp = that / 1e-5: DDPM runs 1.5-6, cifar-like DDIM eta 0.5 57). Bound
 *         = max(floor, 3 amp e) with e the typical eps error (fp16 1.5e-3, bf16 1.3e-2) and floors 1e-2 /
 *         5e-2; a bound past 0.5 says nothing about a sample in [-1, 1], so such a run is printed as INFO
 *         and not judged. */
#include "gpu_check.h"

#include "model.h"
#include "npy.h"

#include <math.h>
#include <string.h>

static double
eps_bound (DdpmPrecision p)
{
  return p == DDPM_PRECISION_FP16 ? 1e-2 : p == DDPM_PRECISION_BF16 ? 8e-2 : 1e-4;
}

/* amp: the run's amplification of eps errors (see above). */
static double
sample_bound (DdpmPrecision p, double amp)
{
  if (p == DDPM_PRECISION_FP16)
    return fmax (1e-2, 3.0 * amp * 1.5e-3);
  if (p == DDPM_PRECISION_BF16)
    return fmax (5e-2, 3.0 * amp * 1.3e-2);
  return 1e-3;
}

#define INFO_BOUND 0.5

static double
max_abs (const float *v, size_t n)
{
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    if (isfinite (v[i]))
      m = fmax (m, fabs (v[i]));
  return m;
}

/* report_check with an absolute bound (converted to its relative one). */
static gboolean
report_abs (GpuEnv *env, const char *op, const char *label, const float *got, const float *want, size_t n,
            double abs_bound, double ms)
{
  double m = max_abs (want, n);
  return report_check (env, op, label, got, want, n, m > 0.0 ? abs_bound / m : abs_bound, 0, ms);
}

static char *
model_dir (const char *name)
{
  const char *dir = g_getenv ("DDPM_FIXTURES");
  return g_build_filename (dir ? dir : "tests/fixtures", "models", name, NULL);
}

static DdpmNpyArray *
load_ref (const char *model, const char *file)
{
  g_autofree char *dir = model_dir (model);
  g_autofree char *path = g_build_filename (dir, "ref", file, NULL);
  return ddpm_npy_load (path, NULL);
}

static DdpmContext *
open_context (GpuEnv *env, DdpmModel *model, DdpmDevice device, DdpmPrecision precision, const char *label)
{
  GError *error = NULL;
  DdpmContext *ctx = ddpm_context_new (model, device, precision, &error);
  if (ctx == NULL)
    {
      report_plain (env, FALSE, "context", label, error->message);
      g_error_free (error);
    }
  return ctx;
}

/* ---- 1. fixture eps ---- */

static void
check_fixture_eps (GpuEnv *env, const char *name, const char *tcase)
{
  char label[160];
  g_snprintf (label, sizeof label, "fixture %s eps %s vs float64", name, tcase);
  if (!check_selected (env, label))
    return;
  g_autofree char *dir = model_dir (name);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR))
    {
      printf ("SKIP %s (no %s)\n", label, dir);
      return;
    }
  GError *error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
  g_autofree char *tfile = g_strdup_printf ("t_%s.npy", tcase);
  g_autofree char *efile = g_strdup_printf ("eps_%s.npy", tcase);
  g_autoptr (DdpmNpyArray) x = load_ref (name, "x.npy");
  g_autoptr (DdpmNpyArray) t = load_ref (name, tfile);
  g_autoptr (DdpmNpyArray) want = load_ref (name, efile);
  if (model == NULL || x == NULL || t == NULL || want == NULL)
    {
      report_plain (env, FALSE, "eps", label, error ? error->message : "fixture files missing");
      g_clear_error (&error);
      return;
    }
  DdpmContext *ctx = open_context (env, model, DDPM_DEVICE_CUDA, env->precision, label);
  if (ctx == NULL)
    return;
  const int B = (int) x->shape[0], H = (int) x->shape[2], W = (int) x->shape[3];
  g_autofree float *xf = ddpm_npy_to_f32 (x);
  g_autofree float *wf = ddpm_npy_to_f32 (want);
  g_autofree float *got = g_new (float, want->numel);
  gint64 t0 = g_get_monotonic_time ();
  if (!ddpm_context_eps (ctx, xf, (const int64_t *) t->data, B, H, W, got, &error))
    {
      report_plain (env, FALSE, "eps", label, error->message);
      g_clear_error (&error);
    }
  else
    report_abs (env, "eps", label, got, wf, want->numel, eps_bound (env->precision),
                (g_get_monotonic_time () - t0) / 1000.0);
  ddpm_context_free (ctx);
}

/* ---- 2. fixture samples ---- */

typedef struct {
  const char *model;
  DdpmSamplerKind sampler;
  double eta;
  const char *noise, *sample, *timesteps;
  double amp;                      /* MANIFEST.json sampling_runs.*.eps_noise_1e5_max_abs / 1e-5 */
  gboolean quick;                  /* also run in --quick mode */
} SampleCase;

static const SampleCase sample_cases[] = {
  { "cifar-like", DDPM_SAMPLER_DDPM, 0.0, "step_noise_ddpm.npy", "sample_ddpm20.npy", "timesteps_ddpm20.npy", 5.9, TRUE },
  { "cifar-like", DDPM_SAMPLER_DDIM, 0.5, "step_noise_ddim_eta05.npy", "sample_ddim20_eta05.npy", "timesteps_ddim20.npy", 57.4, FALSE },
  { "fp16-4ch", DDPM_SAMPLER_DDPM, 0.0, "step_noise_ddpm.npy", "sample_ddpm20.npy", "timesteps_ddpm20.npy", 1.5, FALSE },
  { "fp16-4ch", DDPM_SAMPLER_DDIM, 0.0, NULL, "sample_ddim20.npy", "timesteps_ddim20.npy", 1.2, FALSE },
  { "bf16-tiny", DDPM_SAMPLER_DDIM, 0.5, "step_noise_ddim_eta05.npy", "sample_ddim20_eta05.npy", "timesteps_ddim20.npy", 5.3, FALSE },
};

static void
check_fixture_sample (GpuEnv *env, const SampleCase *c)
{
  char label[160];
  g_snprintf (label, sizeof label, "fixture %s %s eta %.1f 20 steps, injected noise", c->model,
              c->sampler == DDPM_SAMPLER_DDIM ? "DDIM" : "DDPM", c->eta);
  if (!check_selected (env, label))
    return;
  g_autofree char *dir = model_dir (c->model);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR))
    {
      printf ("SKIP %s (no %s)\n", label, dir);
      return;
    }
  GError *error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
  g_autoptr (DdpmNpyArray) x_t = load_ref (c->model, "init_noise.npy");
  g_autoptr (DdpmNpyArray) want = load_ref (c->model, c->sample);
  g_autoptr (DdpmNpyArray) ts = load_ref (c->model, c->timesteps);
  g_autoptr (DdpmNpyArray) z = c->noise ? load_ref (c->model, c->noise) : NULL;
  if (model == NULL || x_t == NULL || want == NULL || ts == NULL || (c->noise && z == NULL))
    {
      report_plain (env, FALSE, "sample", label, error ? error->message : "fixture files missing");
      g_clear_error (&error);
      return;
    }
  DdpmContext *ctx = open_context (env, model, DDPM_DEVICE_CUDA, env->precision, label);
  if (ctx == NULL)
    return;
  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  p.sampler = c->sampler;
  p.num_steps = (int) ts->numel;
  p.eta = c->eta;
  p.batch = (int) x_t->shape[0];
  p.height = (int) x_t->shape[2];
  p.width = (int) x_t->shape[3];
  g_autofree float *init = ddpm_npy_to_f32 (x_t);
  g_autofree float *noise = z ? ddpm_npy_to_f32 (z) : NULL;
  p.init_noise = init;
  if (z != NULL)
    {
      p.step_noise = noise;
      p.step_noise_count = (int) z->shape[0];
    }
  g_autofree float *wf = ddpm_npy_to_f32 (want);
  g_autofree float *got = g_new (float, want->numel);
  gint64 t0 = g_get_monotonic_time ();
  if (!ddpm_sample (ctx, &p, got, &error))
    {
      report_plain (env, FALSE, "sample", label, error->message);
      g_clear_error (&error);
    }
  else
    {
      const double ms = (g_get_monotonic_time () - t0) / 1000.0, bound = sample_bound (env->precision, c->amp);
      if (bound > INFO_BOUND)
        {
          double worst = 0.0;
          for (int64_t i = 0; i < want->numel; i++)
            worst = fmax (worst, fabs ((double) got[i] - wf[i]));
          printf ("INFO sample             %-4s %-58s max abs err %.3g (not judged: amplification %.0f makes any "
                  "bound > %.1f)\n", precision_name (env->precision), label, worst, c->amp, INFO_BOUND);
        }
      else
        report_abs (env, "sample", label, got, wf, want->numel, bound, ms);
    }
  ddpm_context_free (ctx);
}

/* ---- 3. random cifar10-32: CUDA vs CPU ---- */

/* google/ddpm-cifar10-32, or in quick mode the same structure at 1/8 width (as the cifar-like fixture). */
static gboolean
cifar_config (GpuEnv *env, DdpmUNetConfig *cfg)
{
  GError *error = NULL;
  if (!ddpm_unet_config_named ("cifar10-32", cfg, &error))
    {
      report_plain (env, FALSE, "config", "cifar10-32", error->message);
      g_error_free (error);
      return FALSE;
    }
  if (env->quick)
    {
      for (int i = 0; i < cfg->n_levels; i++)
        cfg->block_out_channels[i] /= 8;
      cfg->norm_num_groups = 8;
      if (cfg->attn_norm_num_groups > 0)
        cfg->attn_norm_num_groups = 8;
      cfg->time_embedding_dim = 4 * cfg->block_out_channels[0];
    }
  return TRUE;
}

static void
check_random_cifar (GpuEnv *env)
{
  char label[160];
  const int B = 2, S = env->quick ? 16 : 32;
  g_snprintf (label, sizeof label, "random cifar10-32%s eps B%d %dx%d t=10,500 vs CPU", env->quick ? "/8" : "", B, S, S);
  char slabel[160];
  g_snprintf (slabel, sizeof slabel, "random cifar10-32%s DDPM 10 steps seed 99 vs CPU", env->quick ? "/8" : "");
  /* ddpm_context_eps replays a captured forward: after the sampler has used the graph slot, with new inputs
   * in the same plan, and again with the first inputs (which must give the first result exactly). */
  char rlabel[160];
  g_snprintf (rlabel, sizeof rlabel, "random cifar10-32%s eps graph replay (eps, sample, new x and t, first x) vs CPU",
              env->quick ? "/8" : "");
  if (!check_selected (env, label) && !check_selected (env, slabel) && !check_selected (env, rlabel))
    return;
  DdpmUNetConfig cfg;
  if (!cifar_config (env, &cfg))
    return;
  GError *error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_new_random (&cfg, 7, &error);
  if (model == NULL)
    {
      report_plain (env, FALSE, "model", label, error->message);
      g_error_free (error);
      return;
    }
  /* Weights rounded to the GPU's type, so both backends multiply the very same numbers. */
  round_act_array (env->precision, model->arena, (size_t) model->n_params);
  DdpmContext *cpu = open_context (env, model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, label);
  DdpmContext *gpu = cpu ? open_context (env, model, DDPM_DEVICE_CUDA, env->precision, label) : NULL;
  if (gpu == NULL)
    {
      if (cpu)
        ddpm_context_free (cpu);
      return;
    }
  const size_t n = (size_t) B * 3 * S * S;
  float *x = random_host (n, 71, 1.0f, 0.0f, DDPM_PRECISION_FP32);
  const int64_t t[2] = { 10, 500 };
  float *want = g_new (float, n), *got = g_new (float, n);
  if (check_selected (env, label))
    {
      if (!ddpm_context_eps (cpu, x, t, B, S, S, want, &error) || !ddpm_context_eps (gpu, x, t, B, S, S, got, &error))
        {
          report_plain (env, FALSE, "eps", label, error->message);
          g_clear_error (&error);
        }
      else
        report_abs (env, "eps", label, got, want, n, eps_bound (env->precision) * max_abs (want, n), -1.0);
    }
  if (check_selected (env, slabel))
    {
      DdpmSampleParams p;
      ddpm_sample_params_init (&p);
      p.sampler = DDPM_SAMPLER_DDPM;
      p.num_steps = 10;
      p.seed = 99;
      p.batch = 1;
      p.height = p.width = S;
      const size_t ns = (size_t) 3 * S * S;
      if (!ddpm_sample (cpu, &p, want, &error) || !ddpm_sample (gpu, &p, got, &error))
        {
          report_plain (env, FALSE, "sample", slabel, error->message);
          g_clear_error (&error);
        }
      else
        report_abs (env, "sample", slabel, got, want, ns, sample_bound (env->precision, 10.0), -1.0);
    }
  if (check_selected (env, rlabel))
    {
      float *x2 = random_host (n, 72, 1.0f, 0.0f, DDPM_PRECISION_FP32);
      float *first = g_new (float, n), *again = g_new (float, n);
      const int64_t t2[2] = { 999, 0 };
      DdpmSampleParams p;
      ddpm_sample_params_init (&p);
      p.sampler = DDPM_SAMPLER_DDIM;
      p.num_steps = 3;
      p.batch = B;
      p.height = p.width = S;
      gboolean ok = ddpm_context_eps (gpu, x, t, B, S, S, first, &error) && ddpm_sample (gpu, &p, got, &error)
                    && ddpm_context_eps (gpu, x2, t2, B, S, S, got, &error)
                    && ddpm_context_eps (cpu, x2, t2, B, S, S, want, &error)
                    && ddpm_context_eps (gpu, x, t, B, S, S, again, &error);
      if (!ok)
        {
          report_plain (env, FALSE, "eps", rlabel, error->message);
          g_clear_error (&error);
        }
      else if (memcmp (first, again, n * sizeof (float)) != 0)
        report_plain (env, FALSE, "eps", rlabel, "the first inputs gave another result the second time");
      else
        report_abs (env, "eps", rlabel, got, want, n, eps_bound (env->precision) * max_abs (want, n), -1.0);
      g_free (x2);
      g_free (first);
      g_free (again);
    }
  g_free (x);
  g_free (want);
  g_free (got);
  ddpm_context_free (gpu);
  ddpm_context_free (cpu);
}

/* ---- 4. forward timings ---- */

static void
time_forward (GpuEnv *env, const char *config_name, int B)
{
  char label[160];
  g_snprintf (label, sizeof label, "time eps %s B%d", config_name, B);
  if (!check_selected (env, label))
    return;
  DdpmUNetConfig cfg;
  GError *error = NULL;
  if (!ddpm_unet_config_named (config_name, &cfg, &error))
    {
      report_plain (env, FALSE, "config", label, error->message);
      g_error_free (error);
      return;
    }
  g_autoptr (DdpmModel) model = ddpm_model_new_random (&cfg, 3, &error);
  DdpmContext *ctx = model ? open_context (env, model, DDPM_DEVICE_CUDA, env->precision, label) : NULL;
  if (ctx == NULL)
    {
      g_clear_error (&error);
      return;
    }
  const int S = cfg.sample_size;
  const size_t n = (size_t) B * 3 * S * S;
  float *x = random_host (n, 81, 1.0f, 0.0f, DDPM_PRECISION_FP32), *eps = g_new (float, n);
  int64_t *t = g_new (int64_t, B);
  for (int b = 0; b < B; b++)
    t[b] = 500;
  gboolean ok = TRUE;
  for (int i = 0; i < 2 && ok; i++)
    ok = ddpm_context_eps (ctx, x, t, B, S, S, eps, &error);
  const int iters = 10;
  gint64 t0 = g_get_monotonic_time ();
  for (int i = 0; i < iters && ok; i++)
    ok = ddpm_context_eps (ctx, x, t, B, S, S, eps, &error);
  double ms = (g_get_monotonic_time () - t0) / 1000.0 / iters;
  char *detail = ok ? g_strdup_printf ("%.3f ms per ddpm_context_eps (a replayed CUDA graph, copies included) on %s", ms,
                                       ddpm_context_device_name (ctx))
                    : g_strdup (error->message);
  report_plain (env, ok, "time", label, detail);
  g_free (detail);
  g_clear_error (&error);
  g_free (x);
  g_free (eps);
  g_free (t);
  ddpm_context_free (ctx);
}

void
run_model_checks (GpuEnv *env)
{
  const char *models[] = { "cifar-like", "celebahq-like", "fp16-4ch", "bf16-tiny" };
  const char *tcases[] = { "t10_500", "t250_750", "t0_999" };
  /* --quick (the emulator, in CI): one timestep pair per model, and one sampling run in fp16 (the captured
   * graph's path is the same in every precision) */
  for (size_t m = 0; m < G_N_ELEMENTS (models); m++)
    for (size_t t = 0; t < (env->quick ? 1 : G_N_ELEMENTS (tcases)); t++)
      check_fixture_eps (env, models[m], tcases[t]);
  for (size_t i = 0; i < G_N_ELEMENTS (sample_cases); i++)
    if (!env->quick || (sample_cases[i].quick && env->precision == DDPM_PRECISION_FP16))
      check_fixture_sample (env, &sample_cases[i]);
  check_random_cifar (env);
  if (!env->quick)
    {
      time_forward (env, "cifar10-32", 1);
      time_forward (env, "celebahq-256", 1);
    }
}
