/* scheduler.c: DDPM / DDIM schedules and per-step coefficients, following diffusers 0.42.1
 * (schedulers/scheduling_ddpm.py, scheduling_ddim.py) operation by operation in float32.
 *
 * What diffusers computes, and how we reproduce it (checked against tests/fixtures/scheduler, which
 * tools/make_scheduler_fixtures.py writes with diffusers itself):
 *  - betas "linear": torch.linspace(start, end, N, float32). PyTorch's CPU kernel (RangeFactoriesKernel.cpp)
 *    computes step = (end - start) / (N - 1) in float, then start + step * i for the first half and
 *    end - step * (N - 1 - i) for the second; its build contracts both into one fused multiply-add, so we
 *    use fmaf. This reproduces torch bit for bit (0 of 1000 values differ); plain a + b * i differs by 1
 *    ulp in ~20% of the values.
 *  - "scaled_linear": the same linspace between beta_start ** 0.5 and beta_end ** 0.5 (Python pow in
 *    double, then rounded to float), squared in float.
 *  - "squaredcos_cap_v2": Python double arithmetic (betas_for_alpha_bar) rounded to float once.
 *  - alphas = 1 - betas in float; alphas_cumprod = torch.cumprod, whose CPU kernel keeps the running
 *    product in double (acc_type<float>) and rounds each output to float. Bit exact.
 *  - Per-step scalars (abar_t, 1 - abar_t, sqrt, ratios) are 0-dim float32 tensors in diffusers; we do the
 *    same float operations in the same order, and so is the elementwise update (scheduler.h), whose form
 *    covers each of diffusers' expressions exactly (see step_params_x0).
 *  - One thing we do not copy: torch's float32 sqrt / exp / log on the CPU (2.13, MKL build) are not
 *    correctly rounded (sqrt is 1 ulp off for ~20% of inputs, whatever ATEN_CPU_CAPABILITY); we use IEEE
 *    sqrtf and glibc expf / logf. At t ~ T one ulp of sqrt(1 - abar) moves the epsilon x0 by ~2e-5.
 * Measured on tests/fixtures/scheduler: tables and timesteps bit identical; all 440 step cases bit
 * identical to diffusers run with correctly rounded sqrt/exp/log, and within 4 ulp of x0's terms
 * (prev_sample within 6e-7) of stock diffusers. */
#include "scheduler.h"
#include "philox.h"

#include <math.h>
#include <string.h>

/* Far beyond every published schedule (1000, 4000); keeps table allocations sane. */
#define DDPM_MAX_TRAIN_TIMESTEPS 1000000

/* torch.linspace(start, end, n, dtype=float32) on the CPU, see the file comment. */
static void
linspace_f32 (float start, float end, int n, float *out)
{
  if (n == 1)
    {
      out[0] = start; /* torch special-cases steps == 1: fill with start */
      return;
    }
  const float step = (end - start) / (float) (n - 1);
  const int halfway = n / 2;
  for (int i = 0; i < n; i++)
    out[i] = i < halfway ? fmaf (step, (float) i, start) : fmaf (-step, (float) (n - 1 - i), end);
}

/* diffusers' alpha_bar_fn("cosine"): cos((t + 0.008) / 1.008 * pi / 2) ** 2, in Python doubles (same
 * operation order; pow(x, 2) is what Python's ** calls). */
static double
cosine_alpha_bar (double t)
{
  return pow (cos ((t + 0.008) / 1.008 * 3.141592653589793 / 2.0), 2.0);
}

static gboolean
fill_betas (const DdpmSchedulerConfig *cfg, int n, float *betas, GError **error)
{
  switch (cfg->beta_schedule)
    {
    case DDPM_BETA_LINEAR:
      linspace_f32 ((float) cfg->beta_start, (float) cfg->beta_end, n, betas);
      return TRUE;
    case DDPM_BETA_SCALED_LINEAR:
      linspace_f32 ((float) pow (cfg->beta_start, 0.5), (float) pow (cfg->beta_end, 0.5), n, betas);
      for (int i = 0; i < n; i++)
        betas[i] = betas[i] * betas[i];
      return TRUE;
    case DDPM_BETA_SQUAREDCOS_CAP_V2:
      for (int i = 0; i < n; i++)
        {
          double t1 = (double) i / n, t2 = (double) (i + 1) / n;
          betas[i] = (float) fmin (1.0 - cosine_alpha_bar (t2) / cosine_alpha_bar (t1), 0.999);
        }
      return TRUE;
    }
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "scheduler config: beta_schedule %d is not implemented",
               (int) cfg->beta_schedule);
  return FALSE;
}

gboolean
ddpm_schedule_init (DdpmSchedule *s, const DdpmSchedulerConfig *cfg, GError **error)
{
  g_return_val_if_fail (s != NULL && cfg != NULL, FALSE);
  memset (s, 0, sizeof *s);
  const int n = cfg->num_train_timesteps;
  if (n < 1 || n > DDPM_MAX_TRAIN_TIMESTEPS)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT,
                   "scheduler config: num_train_timesteps %d is outside [1, %d]", n, DDPM_MAX_TRAIN_TIMESTEPS);
      return FALSE;
    }
  float *betas = g_new (float, n), *alphas = g_new (float, n), *abar = g_new (float, n);
  if (!fill_betas (cfg, n, betas, error))
    goto fail;

  /* Every step divides by 1 - abar_t and by sqrt(abar_t): refuse schedules that make those 0/NaN
   * (diffusers would silently produce NaN samples). */
  for (int i = 0; i < n; i++)
    if (!(betas[i] > 0.0f && betas[i] < 1.0f))
      {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                     "scheduler config: beta[%d] = %g (beta_start %g, beta_end %g) is outside (0, 1)", i,
                     (double) betas[i], cfg->beta_start, cfg->beta_end);
        goto fail;
      }
  double acc = 1.0; /* torch.cumprod's double accumulator */
  for (int i = 0; i < n; i++)
    {
      alphas[i] = 1.0f - betas[i];
      acc *= alphas[i];
      abar[i] = (float) acc;
      if (!(abar[i] > 0.0f))
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                       "scheduler config: alphas_cumprod[%d] underflows to 0 (num_train_timesteps %d too large "
                       "for these betas)", i, n);
          goto fail;
        }
    }
  s->config = *cfg;
  s->num_train_timesteps = n;
  s->betas = betas;
  s->alphas = alphas;
  s->alphas_cumprod = abar;
  return TRUE;

fail:
  g_free (betas);
  g_free (alphas);
  g_free (abar);
  return FALSE;
}

void
ddpm_schedule_clear (DdpmSchedule *s)
{
  if (s == NULL)
    return;
  g_free (s->betas);
  g_free (s->alphas);
  g_free (s->alphas_cumprod);
  memset (s, 0, sizeof *s);
}

/* ---- inference timesteps ------------------------------------------------------------------------ */

/* np.round: round half to even, which rint does in the default rounding mode. */
static int64_t
round_half_even (double v)
{
  return (int64_t) rint (v);
}

/* set_timesteps(num_steps) of DDPMScheduler and DDIMScheduler (identical in 0.42.1):
 *   linspace: np.linspace(0, N - 1, n).round()[::-1]            (steps_offset ignored)
 *   leading:  np.arange(0, n) * (N // n), reversed, + steps_offset
 *   trailing: np.round(np.arange(N, 0, -N / n)) - 1              (steps_offset ignored)
 * numpy details reproduced: linspace is i * ((N - 1) / (n - 1)) with the last value set to N - 1;
 * a float arange stores start, start + step, then start + i * d with d = (start + step) - start. */
gboolean
ddpm_schedule_timesteps (const DdpmSchedule *s, int num_steps, int *out, GError **error)
{
  g_return_val_if_fail (s != NULL && out != NULL, FALSE);
  const int N = s->num_train_timesteps, n = num_steps;
  if (n < 1 || n > N)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                   "scheduler: num_steps %d is outside [1, num_train_timesteps = %d]", n, N);
      return FALSE;
    }
  switch (s->config.timestep_spacing)
    {
    case DDPM_SPACING_LINSPACE:
      {
        const double step = n > 1 ? (double) (N - 1) / (n - 1) : 0.0;
        for (int i = 0; i < n; i++)
          {
            double v = (n > 1 && i == n - 1) ? (double) (N - 1) : (double) i * step;
            out[n - 1 - i] = (int) round_half_even (v);
          }
        break;
      }
    case DDPM_SPACING_LEADING:
      {
        const int ratio = N / n;
        for (int i = 0; i < n; i++)
          out[n - 1 - i] = i * ratio + s->config.steps_offset;
        break;
      }
    case DDPM_SPACING_TRAILING:
      {
        /* For some n (61, 103, 121, ... at N = 1000) N / (N / n) rounds above n, numpy's arange gets
         * n + 1 entries and diffusers appends a spurious timestep -1 (round(~1e-12) - 1) after the n
         * real ones. We return the n real ones; for them every step coefficient agrees with diffusers
         * (DDPM's previous timestep of the n-th is -1 either way). */
        const double ratio = (double) N / n;
        const double a0 = (double) N, a1 = (double) N + (-ratio), d = a1 - a0;
        for (int i = 0; i < n; i++)
          {
            double v = i == 0 ? a0 : i == 1 ? a1 : a0 + (double) i * d;
            out[i] = (int) round_half_even (v) - 1;
          }
        break;
      }
    default:
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "scheduler config: timestep_spacing %d is not implemented",
                   (int) s->config.timestep_spacing);
      return FALSE;
    }
  /* leading + steps_offset can pass the end (e.g. n = N with offset 1 gives N); diffusers would then
   * index alphas_cumprod out of range. */
  for (int i = 0; i < n; i++)
    if (out[i] < 0 || out[i] >= N)
      {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                     "scheduler: num_steps %d with steps_offset %d gives timestep %d, outside [0, %d)", n,
                     s->config.steps_offset, out[i], N);
        return FALSE;
      }
  return TRUE;
}

/* ---- step coefficients -------------------------------------------------------------------------- */

/* x0 from the model output (diffusers: pred_original_sample) and DDIM's pred_epsilon, in diffusers' form
 * (coefficients sqrt(abar_t), sqrt(1 - abar_t) are float32 as the 0-dim tensors there):
 *   epsilon:      x0 = (x - sqrt(1 - abar) m) / sqrt(abar)              pred_epsilon = m
 *   sample:       x0 = m                                                pred_epsilon = (x - sqrt(abar) x0) / sqrt(1 - abar)
 *   v_prediction: x0 = sqrt(abar) x - sqrt(1 - abar) m                  pred_epsilon = sqrt(abar) m + sqrt(1 - abar) x
 * Bit exact with the update of scheduler.h: 1 * x == x, a + (-b) == a - b, addition commutes, q / 1 == q. */
static void
step_params_x0 (const DdpmSchedule *s, float abar_t, DdpmStepParams *p)
{
  const float beta_prod_t = 1.0f - abar_t;
  const float sa = sqrtf (abar_t), sb = sqrtf (beta_prod_t);
  p->pred_div = p->eps_div = 1.0f;
  switch (s->config.prediction_type)
    {
    case DDPM_PREDICT_EPSILON:
      p->pred_x = 1.0f;
      p->pred_m = -sb;
      p->pred_div = sa;
      p->eps_x = 0.0f;
      p->eps_m = 1.0f;
      break;
    case DDPM_PREDICT_SAMPLE:
      p->pred_x = 0.0f;
      p->pred_m = 1.0f;
      p->eps_x = 1.0f;
      p->eps_m = -sa;
      p->eps_div = sb;
      break;
    case DDPM_PREDICT_V:
      p->pred_x = sa;
      p->pred_m = -sb;
      p->eps_x = sb;
      p->eps_m = sa;
      break;
    }
  p->clip = s->config.clip_sample ? (float) s->config.clip_sample_range : 0.0f;
}

/* DDPMScheduler.step: prev_t = previous_timestep(t), the entry after the first occurrence of t in the
 * list (-1 after the last); abar_prev = 1 when prev_t < 0. All scalars float32 as in diffusers:
 *   current_alpha_t = abar_t / abar_prev, current_beta_t = 1 - current_alpha_t
 *   c_x0 = sqrt(abar_prev) * current_beta_t / (1 - abar_t)
 *   c_x  = sqrt(current_alpha_t) * (1 - abar_prev) / (1 - abar_t)
 *   noise only when t > 0: var = max((1 - abar_prev) / (1 - abar_t) * current_beta_t, 1e-20)
 *     fixed_small: sigma = sqrt(var); fixed_small_log: exp(0.5 log var); fixed_large: sqrt(current_beta_t)
 * With steps_offset the last timestep is > 0 and diffusers draws noise there too (var is then clamped
 * to 1e-20, but fixed_large uses current_beta_t = 1 - abar_t, which is not small): we follow it. */
static void
ddpm_step_params (const DdpmSchedule *s, const int *timesteps, int n, int i, DdpmStepParams *p)
{
  const int t = timesteps[i];
  int index = i;
  for (int j = 0; j < n; j++)
    if (timesteps[j] == t)
      {
        index = j;
        break;
      }
  const int prev_t = index == n - 1 ? -1 : timesteps[index + 1];
  const float abar_t = s->alphas_cumprod[t];
  const float abar_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : 1.0f;
  const float beta_prod_t = 1.0f - abar_t;
  const float beta_prod_prev = 1.0f - abar_prev;
  const float current_alpha_t = abar_t / abar_prev;
  const float current_beta_t = 1.0f - current_alpha_t;

  step_params_x0 (s, abar_t, p);
  p->eps_x = p->eps_m = 0.0f; /* DDPM's update has no eps term */
  p->eps_div = 1.0f;
  p->c_x0 = sqrtf (abar_prev) * current_beta_t / beta_prod_t;
  p->c_x = sqrtf (current_alpha_t) * beta_prod_prev / beta_prod_t;
  p->c_eps = 0.0f;

  p->draw_noise = t > 0;
  p->sigma = 0.0f;
  if (p->draw_noise)
    {
      float var = beta_prod_prev / beta_prod_t * current_beta_t;
      if (var < 1e-20f) /* torch.clamp(min=1e-20) */
        var = 1e-20f;
      switch (s->config.variance_type)
        {
        case DDPM_VARIANCE_FIXED_SMALL:
          p->sigma = sqrtf (var);
          break;
        case DDPM_VARIANCE_FIXED_SMALL_LOG:
          p->sigma = expf (0.5f * logf (var));
          break;
        case DDPM_VARIANCE_FIXED_LARGE:
          p->sigma = sqrtf (current_beta_t);
          break;
        }
    }
}

/* DDIMScheduler.step (use_clipped_model_output False, as DDIMPipeline passes it):
 *   prev_t = t - N // n; abar_prev = abar[prev_t], or final_alpha_cumprod (1 with set_alpha_to_one, else
 *   abar[0]) when prev_t < 0
 *   var = ((1 - abar_prev) / (1 - abar_t)) * (1 - abar_t / abar_prev); sigma = eta * sqrt(var)
 *   x' = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) pred_epsilon (+ sigma z when eta > 0)
 * eta is a Python float multiplied into a float32 tensor: torch rounds it to float first. */
static void
ddim_step_params (const DdpmSchedule *s, const int *timesteps, int n, int i, double eta, gboolean prev_from_list,
                  DdpmStepParams *p)
{
  const int N = s->num_train_timesteps;
  const int t = timesteps[i];
  /* A custom list (an already-noisy start) has uneven gaps: its previous timestep is the next entry. */
  const int prev_t = prev_from_list ? (i == n - 1 ? -1 : timesteps[i + 1]) : t - N / n;
  const float final_abar = s->config.set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
  const float abar_t = s->alphas_cumprod[t];
  const float abar_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : final_abar;
  const float beta_prod_t = 1.0f - abar_t;
  const float beta_prod_prev = 1.0f - abar_prev;
  const float variance = (beta_prod_prev / beta_prod_t) * (1.0f - abar_t / abar_prev);
  const float std_dev_t = (float) eta * sqrtf (variance);

  step_params_x0 (s, abar_t, p);
  p->c_x0 = sqrtf (abar_prev);
  p->c_x = 0.0f;
  /* Rounding can push 1 - abar_prev - sigma^2 a hair below 0 for eta = 1 (diffusers: NaN); 0 is the
   * value it approximates. */
  const float dir2 = 1.0f - abar_prev - std_dev_t * std_dev_t;
  p->c_eps = dir2 > 0.0f ? sqrtf (dir2) : 0.0f;
  p->draw_noise = eta > 0.0;
  p->sigma = p->draw_noise ? std_dev_t : 0.0f;
}

static void
step_params (const DdpmSchedule *s, DdpmSamplerKind kind, const int *timesteps, int n, int i, double eta,
             gboolean prev_from_list, DdpmStepParams *out)
{
  g_return_if_fail (s != NULL && timesteps != NULL && out != NULL);
  g_return_if_fail (n >= 1 && i >= 0 && i < n);
  g_return_if_fail (timesteps[i] >= 0 && timesteps[i] < s->num_train_timesteps);
  memset (out, 0, sizeof *out);
  out->t = (float) timesteps[i];
  if (kind == DDPM_SAMPLER_DDIM)
    ddim_step_params (s, timesteps, n, i, eta, prev_from_list, out);
  else
    ddpm_step_params (s, timesteps, n, i, out);
  out->seed = 0; /* the sampler's */
  out->stream = DDPM_STREAM_STEP (i);
}

void
ddpm_schedule_step_params (const DdpmSchedule *s, DdpmSamplerKind kind, const int *timesteps, int n, int i,
                           double eta, DdpmStepParams *out)
{
  step_params (s, kind, timesteps, n, i, eta, FALSE, out);
}

void
ddpm_schedule_step_params_custom (const DdpmSchedule *s, DdpmSamplerKind kind, const int *timesteps, int n, int i,
                                  double eta, DdpmStepParams *out)
{
  step_params (s, kind, timesteps, n, i, eta, TRUE, out);
}

/* ---- reference update --------------------------------------------------------------------------- */

/* One element of the update (scheduler.h). Plain float operations, each rounded, in diffusers' order:
 * (c_x0 x0 + c_x x) + c_eps eps, then + sigma z. The build uses ISO C11 (-ffp-contract=off), so nothing
 * is fused. */
static inline float
step_element (const DdpmStepParams *p, float x, float m, float z, float *x0_out)
{
  float x0 = (p->pred_x * x + p->pred_m * m) / p->pred_div;
  if (p->clip > 0.0f)
    {
      if (x0 < -p->clip)
        x0 = -p->clip;
      else if (x0 > p->clip)
        x0 = p->clip; /* NaN passes through, as torch.clamp */
    }
  const float eps = (p->eps_x * x + p->eps_m * m) / p->eps_div;
  float y = p->c_x0 * x0 + p->c_x * x + p->c_eps * eps;
  if (p->draw_noise)
    y = y + p->sigma * z;
  *x0_out = x0;
  return y;
}

void
ddpm_step_cpu (const DdpmStepParams *p, float *x, const float *model_out, const float *noise, float *x0_out,
               size_t n_per_image, int batch)
{
  g_return_if_fail (p != NULL && x != NULL && model_out != NULL);
  for (int b = 0; b < batch; b++)
    {
      const size_t base = (size_t) b * n_per_image;
      const uint64_t key = p->seed + (uint64_t) b;
      const gboolean draw = p->draw_noise && noise == NULL;
      /* Elementwise, no reduction: the result does not depend on the thread count. */
#pragma omp parallel for schedule(static) if (n_per_image >= 65536)
      for (size_t e = 0; e < n_per_image; e++)
        {
          const size_t k = base + e;
          float z = 0.0f;
          if (noise != NULL)
            z = noise[k];
          else if (draw)
            z = ddpm_philox_normal (key, p->stream, e);
          float x0;
          x[k] = step_element (p, x[k], model_out[k], z, &x0);
          if (x0_out != NULL)
            x0_out[k] = x0;
        }
    }
}
