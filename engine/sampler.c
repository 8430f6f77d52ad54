/* sampler.c: the DDPM / DDIM sampling loop (diffusers' DDPMPipeline / DDIMPipeline semantics), SDEdit
 * ("strength") and already-noisy starts, forward noising q(x_t | x_0).
 *
 * The loop allocates nothing: buffers are planned by ddpm_context_plan before the first step. Each step
 * writes its timestep and coefficients to backend memory, then runs UNet forward + scheduler update; on
 * backends with graphs that pair is captured once per run and replayed. */
#include "context.h"
#include "ensemble.h"

#include <math.h>
#include <string.h>

void
ddpm_sample_params_init (DdpmSampleParams *p)
{
  memset (p, 0, sizeof *p);
  p->sampler = DDPM_SAMPLER_DDPM;
  p->batch = 1;
  p->start = DDPM_START_NOISE;
  p->strength = 1.0;
  p->ensemble = 1;
}

/* x = sqrt(abar_t) x0 + sqrt(1 - abar_t) z, as diffusers' add_noise (float32 coefficients). */
static void
noise_to (const DdpmSchedule *s, int t, const float *x0, const float *z, float *out, size_t n)
{
  const float abar = s->alphas_cumprod[t];
  const float sqrt_abar = sqrtf (abar);
  const float sqrt_one_minus = sqrtf (1.0f - abar);
  for (size_t i = 0; i < n; i++)
    out[i] = sqrt_abar * x0[i] + sqrt_one_minus * z[i];
}

/* Fills z (B, n_per_image) from Philox: image b uses key seed + b. */
static void
host_randn (uint64_t seed, uint64_t stream, size_t n_per_image, int batch, float *z)
{
  for (int b = 0; b < batch; b++)
    ddpm_randn (seed + (uint64_t) b, stream, 0, n_per_image, z + (size_t) b * n_per_image);
}

void
ddpm_add_noise (const DdpmModel *model, int t, uint64_t seed, const float *x0, float *out, int batch,
                size_t n_per_image)
{
  const DdpmSchedule *s = &model->schedule;
  t = CLAMP (t, 0, s->num_train_timesteps - 1);
  size_t n = n_per_image * batch;
  float *z = g_new (float, n);
  host_randn (seed, DDPM_STREAM_INIT, n_per_image, batch, z);
  noise_to (s, t, x0, z, out, n);
  g_free (z);
}

int
ddpm_timestep_for_sigma (const DdpmModel *model, double sigma)
{
  const DdpmSchedule *s = &model->schedule;
  int best = 0;
  double best_err = INFINITY;
  for (int t = 0; t < s->num_train_timesteps; t++)
    {
      double abar = s->alphas_cumprod[t];
      double err = fabs (sqrt ((1.0 - abar) / abar) - sigma);
      if (err < best_err)
        {
          best_err = err;
          best = t;
        }
    }
  return best;
}

double
ddpm_model_alpha_bar (const DdpmModel *model, int t)
{
  const DdpmSchedule *s = &model->schedule;
  return s->alphas_cumprod[CLAMP (t, 0, s->num_train_timesteps - 1)];
}

/* The timestep list of a run: the scheduler's list, cut by the start kind. Returns the count. */
static int
run_timesteps (const DdpmSchedule *s, const DdpmSampleParams *p, int num_steps, int **out, GError **error)
{
  /* One spare slot in front, for the NOISY start that prepends its own timestep. */
  g_autofree int *buf = g_new (int, num_steps + 1);
  int *ts = buf + 1;
  if (!ddpm_schedule_timesteps (s, num_steps, ts, error))
    return -1;
  int first = 0;
  if (p->start == DDPM_START_STRENGTH)
    {
      /* diffusers img2img: init_timestep = min(int(n * strength), n); start at n - init_timestep. */
      int init_timestep = MIN ((int) (num_steps * p->strength), num_steps);
      first = num_steps - init_timestep;
    }
  else if (p->start == DDPM_START_NOISY)
    {
      /* Keep the timesteps below start_timestep; x_init is x at start_timestep itself, so that timestep
       * leads the list (its gap to the next one is then shorter than the others). */
      while (first < num_steps && ts[first] > p->start_timestep)
        first++;
      if (first == num_steps || ts[first] != p->start_timestep)
        ts[--first] = p->start_timestep;
    }
  int n = num_steps - first;
  *out = g_new (int, MAX (n, 1));
  memcpy (*out, ts + first, n * sizeof (int));
  return n;
}

static gboolean sample_run (DdpmContext *ctx, const DdpmSampleParams *p, float *out, GError **error);

/* The cancel flag is cleared when a run ENDS, not when it starts: a Cancel pressed just before the run
 * begins (the plug-in's worker thread may not have started yet) must still stop it. */
gboolean
ddpm_sample (DdpmContext *ctx, const DdpmSampleParams *p, float *out, GError **error)
{
  gboolean ok = ddpm_ensemble_run (ctx, p, sample_run, out, error);
  g_atomic_int_set (&ctx->cancelled, 0);
  return ok;
}

static gboolean
sample_run (DdpmContext *ctx, const DdpmSampleParams *p, float *out, GError **error)
{
  const DdpmModel *model = ctx->model;
  const DdpmUNetConfig *cfg = &model->config;
  const DdpmSchedule *s = &model->schedule;
  DdpmBackend *be = ctx->be;
  const int N = s->num_train_timesteps;

  const int B = p->batch;
  const int H = p->height > 0 ? p->height : cfg->sample_size;
  const int W = p->width > 0 ? p->width : cfg->sample_size;
  if (B < 1 || H < 1 || W < 1)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                   "batch %d at %dx%d: give a positive batch and a size (the model has no sample_size)", B, W, H);
      return FALSE;
    }
  if (cfg->out_channels != cfg->in_channels)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "sampling needs out_channels == in_channels (the model has %d and %d)", cfg->out_channels,
                   cfg->in_channels);
      return FALSE;
    }
  int num_steps = p->num_steps > 0 ? p->num_steps : (p->sampler == DDPM_SAMPLER_DDIM ? MIN (50, N) : N);
  if (num_steps > N)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "%d steps requested but the model was trained with %d",
                   num_steps, N);
      return FALSE;
    }
  if ((p->start == DDPM_START_STRENGTH || p->start == DDPM_START_NOISY) && p->x_init == NULL)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "this start needs an initial image (x_init)");
      return FALSE;
    }
  if (p->start == DDPM_START_STRENGTH && !(p->strength >= 0.0 && p->strength <= 1.0))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "strength %g is outside [0, 1]", p->strength);
      return FALSE;
    }
  if (p->start == DDPM_START_NOISY && (p->start_timestep < 0 || p->start_timestep >= N))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "start timestep %d is outside [0, %d)", p->start_timestep, N);
      return FALSE;
    }
  if (!ddpm_context_plan (ctx, B, H, W, error))
    return FALSE;

  g_autofree int *ts = NULL;
  int n = run_timesteps (s, p, num_steps, &ts, error);
  if (n < 0 || !ddpm_unet_prepare_timesteps (ctx->unet, ts, n, error))
    return FALSE;

  const size_t per_image = (size_t) cfg->in_channels * H * W;
  const size_t n_x = per_image * B;

  /* Starting state, built on the host (once) and uploaded. */
  g_autofree float *x_start = g_new (float, n_x);
  if (p->start == DDPM_START_NOISE || (p->start == DDPM_START_STRENGTH && n > 0))
    {
      if (p->init_noise != NULL)
        memcpy (x_start, p->init_noise, n_x * sizeof (float));
      else
        host_randn (p->seed, DDPM_STREAM_INIT, per_image, B, x_start);
      if (p->start == DDPM_START_STRENGTH)
        noise_to (s, ts[0], p->x_init, x_start, x_start, n_x);
    }
  else
    memcpy (x_start, p->x_init, n_x * sizeof (float));
  be->ops->to_device (be, ctx->x, x_start, n_x * sizeof (float));

  const gboolean injected = p->step_noise != NULL;
  const gboolean use_graph = be->ops->graph_begin != NULL;
  gboolean captured = FALSE;
  if (use_graph)
    be->ops->graph_reset (be);
  ctx->eps_graph = FALSE;       /* the graph slot now holds this run's forward + step */
  g_autofree float *t_host = g_new (float, B);
  int noisy_steps = 0;

  for (int i = 0; i < n; i++)
    {
      if (ddpm_context_is_cancelled (ctx))
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_CANCELLED, "cancelled at step %d of %d", i, n);
          return FALSE;
        }
      DdpmStepParams sp;
      if (p->start == DDPM_START_NOISY)
        ddpm_schedule_step_params_custom (s, p->sampler, ts, n, i, p->eta, &sp);
      else
        ddpm_schedule_step_params (s, p->sampler, ts, n, i, p->eta, &sp);
      sp.seed = p->seed;
      for (int b = 0; b < B; b++)
        t_host[b] = (float) ts[i];
      be->ops->to_device (be, ctx->t, t_host, B * sizeof (float));
      be->ops->write_params (be, ctx->params, &sp);
      if (injected && sp.draw_noise)
        {
          if (noisy_steps >= p->step_noise_count)
            {
              g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                           "the step noise has %d slices but step %d is noisy step %d", p->step_noise_count, i + 1,
                           noisy_steps + 1);
              return FALSE;
            }
          be->ops->to_device (be, ctx->noise, p->step_noise + (size_t) noisy_steps * n_x, n_x * sizeof (float));
        }
      if (sp.draw_noise)
        noisy_steps++;

      const float *noise = injected ? ctx->noise : NULL;
      if (use_graph && !captured)
        {
          if (!be->ops->graph_begin (be, error))
            return FALSE;
          ddpm_unet_forward (ctx->unet, ctx->x, ctx->t, ctx->eps);
          be->ops->scheduler_step (be, ctx->params, ctx->x, ctx->eps, noise, ctx->x0, per_image, B);
          if (!be->ops->graph_end (be, error))
            return FALSE;
          captured = TRUE;
        }
      if (use_graph)
        {
          if (!be->ops->graph_launch (be, error))
            return FALSE;
        }
      else
        {
          ddpm_unet_forward (ctx->unet, ctx->x, ctx->t, ctx->eps);
          be->ops->scheduler_step (be, ctx->params, ctx->x, ctx->eps, noise, ctx->x0, per_image, B);
        }

      if (ctx->progress != NULL)
        {
          gboolean preview = ctx->preview_every > 0 && ((i + 1) % ctx->preview_every == 0 || i + 1 == n);
          if (preview)
            be->ops->to_host (be, ctx->preview_host, ctx->x0, per_image * sizeof (float));
          if (!ctx->progress (i + 1, n, preview ? ctx->preview_host : NULL, ctx->progress_data))
            ddpm_context_cancel (ctx);
        }
    }
  if (ddpm_context_is_cancelled (ctx) && n > 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_CANCELLED, "cancelled after the last step");
      return FALSE;
    }

  if (!ddpm_context_check_device (ctx, error))
    return FALSE;
  size_t bad = be->ops->count_nonfinite (be, ctx->x, n_x);
  if (bad != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_NUMERIC,
                   "the sample has %zu non-finite values (NaN/Inf) on %s%s", bad, ctx->device_name,
                   be->precision == DDPM_PRECISION_FP16 ? "; try --precision fp32 or bf16" : "");
      return FALSE;
    }
  be->ops->to_host (be, out, ctx->x, n_x * sizeof (float));
  return TRUE;
}
