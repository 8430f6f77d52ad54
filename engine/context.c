/* context.c: device choice, buffer planning, progress and cancellation; one UNet forward (eps). */
#include "context.h"

#include <math.h>
#include <string.h>

static DdpmBackend *
open_backend (DdpmDevice device, DdpmPrecision precision, char **note, GError **error)
{
  if (device == DDPM_DEVICE_CUDA)
    return ddpm_backend_cuda_new (precision, error);
  if (device == DDPM_DEVICE_AUTO)
    {
      g_autoptr (GError) cuda_error = NULL;
      DdpmBackend *be = ddpm_backend_cuda_new (precision, &cuda_error);
      if (be != NULL)
        return be;
      *note = g_strdup_printf ("no CUDA: %s", cuda_error->message);
      return ddpm_backend_cpu_new (error);
    }
  /* The CPU backend computes in float32 only: asking it for half precision is a caller error. */
  if (precision == DDPM_PRECISION_FP16 || precision == DDPM_PRECISION_BF16)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                   "the CPU backend computes in fp32 only; use --precision fp32 or a CUDA device");
      return NULL;
    }
  return ddpm_backend_cpu_new (error);
}

DdpmContext *
ddpm_context_new (DdpmModel *model, DdpmDevice device, DdpmPrecision precision, GError **error)
{
  g_return_val_if_fail (model != NULL, NULL);
  g_autofree char *note = NULL;
  DdpmBackend *be = open_backend (device, precision, &note, error);
  if (be == NULL)
    return NULL;
  return ddpm_context_new_on_backend (model, be, note, error);
}

DdpmContext *
ddpm_context_new_on_backend (DdpmModel *model, DdpmBackend *be, const char *note, GError **error)
{
  DdpmContext *ctx = g_new0 (DdpmContext, 1);
  ctx->model = model;
  ctx->be = be;
  ctx->device_name = note ? g_strdup_printf ("%s (%s)", be->description, note) : g_strdup (be->description);
  /* $DDPM_TUNE=1 (or =again): tune as ddpm_context_set_tuning would, for programs that do not ask (the plug-in) */
  const char *tune = g_getenv ("DDPM_TUNE");
  ctx->tuning = g_strcmp0 (tune, "again") == 0 ? DDPM_TUNING_AGAIN
                : tune != NULL && *tune != '\0' && strcmp (tune, "0") != 0 ? DDPM_TUNING_CACHED : DDPM_TUNING_OFF;
  ctx->unet = ddpm_unet_new (model, be, error);
  if (ctx->unet == NULL)
    {
      ddpm_context_free (ctx);
      return NULL;
    }
  return ctx;
}

static void
free_buffers (DdpmContext *ctx)
{
  DdpmBackend *be = ctx->be;
  void *bufs[] = { ctx->x, ctx->eps, ctx->noise, ctx->x0, ctx->t, ctx->params };
  for (size_t i = 0; i < G_N_ELEMENTS (bufs); i++)
    if (bufs[i] != NULL)
      be->ops->free (be, bufs[i]);
  ctx->x = ctx->eps = ctx->noise = ctx->x0 = ctx->t = NULL;
  ctx->params = NULL;
  g_clear_pointer (&ctx->preview_host, g_free);
  g_clear_pointer (&ctx->eps_host, g_free);
  ctx->B = ctx->H = ctx->W = 0;
}

void
ddpm_context_free (DdpmContext *ctx)
{
  if (ctx == NULL)
    return;
  if (ctx->be != NULL)
    {
      if (ctx->be->ops->graph_reset != NULL)
        ctx->be->ops->graph_reset (ctx->be);
      free_buffers (ctx);
      ddpm_unet_free (ctx->unet);
      ctx->be->ops->destroy (ctx->be);
    }
  g_free (ctx->device_name);
  g_free (ctx->tuning_report);
  g_free (ctx);
}

static gboolean
plan_buffers (DdpmContext *ctx, int batch, int height, int width, GError **error)
{
  DdpmBackend *be = ctx->be;
  if (be->ops->graph_reset != NULL)
    be->ops->graph_reset (be);
  ctx->eps_graph = FALSE;
  free_buffers (ctx);
  if (!ddpm_unet_plan (ctx->unet, batch, height, width, error))
    return FALSE;
  const DdpmUNetConfig *cfg = &ctx->model->config;
  ctx->n_x = (size_t) batch * cfg->in_channels * height * width;
  ctx->n_eps = (size_t) batch * cfg->out_channels * height * width;
  /* The scheduler combines x and the model output elementwise: size every buffer for the larger. */
  size_t n = MAX (ctx->n_x, ctx->n_eps);
  if (!(ctx->x = be->ops->alloc_f32 (be, n, error)) || !(ctx->eps = be->ops->alloc_f32 (be, n, error))
      || !(ctx->noise = be->ops->alloc_f32 (be, n, error)) || !(ctx->x0 = be->ops->alloc_f32 (be, n, error))
      || !(ctx->t = be->ops->alloc_f32 (be, batch, error))
      || !(ctx->params = be->ops->alloc_bytes (be, sizeof (DdpmStepParams), error)))
    {
      g_prefix_error (error, "allocating sampler buffers for batch %d at %dx%d: ", batch, width, height);
      free_buffers (ctx);
      return FALSE;
    }
  ctx->preview_host = g_new (float, (size_t) cfg->in_channels * height * width);
  ctx->eps_host = g_new (float, ctx->n_eps);
  ctx->B = batch;
  ctx->H = height;
  ctx->W = width;
  return TRUE;
}

gboolean
ddpm_context_plan (DdpmContext *ctx, int batch, int height, int width, GError **error)
{
  if (ctx->B == batch && ctx->H == height && ctx->W == width)
    return TRUE;
  if (!plan_buffers (ctx, batch, height, width, error))
    return FALSE;
  if (ddpm_context_tune (ctx, error))
    return TRUE;
  free_buffers (ctx);              /* planned again next time (a device failure usually ends the context) */
  return FALSE;
}

void
ddpm_context_set_tuning (DdpmContext *ctx, DdpmTuning tuning)
{
  ctx->tuning = tuning;
  ctx->B = ctx->H = ctx->W = 0;    /* the next plan tunes (or leaves the variant as it is) */
  if (ctx->unet != NULL)
    ddpm_unet_forget_plan (ctx->unet);
}

const char *
ddpm_context_tuning_report (const DdpmContext *ctx)
{
  return ctx->tuning_report;
}

const char *
ddpm_context_device_name (const DdpmContext *ctx)
{
  return ctx->device_name;
}

DdpmPrecision
ddpm_context_precision (const DdpmContext *ctx)
{
  return ctx->be->precision;
}

void
ddpm_context_set_progress (DdpmContext *ctx, DdpmProgressFunc func, gpointer user_data, int preview_every)
{
  ctx->progress = func;
  ctx->progress_data = user_data;
  ctx->preview_every = MAX (preview_every, 0);
}

void
ddpm_context_set_status (DdpmContext *ctx, DdpmStatusFunc func, gpointer user_data)
{
  ctx->status = func;
  ctx->status_data = user_data;
}

void
ddpm_context_cancel (DdpmContext *ctx)
{
  g_atomic_int_set (&ctx->cancelled, 1);
}

gboolean
ddpm_context_is_cancelled (const DdpmContext *ctx)
{
  return g_atomic_int_get ((gint *) &ctx->cancelled) != 0;
}

gboolean
ddpm_context_check_device (DdpmContext *ctx, GError **error)
{
  DdpmBackend *be = ctx->be;
  return be->ops->check_error == NULL || be->ops->check_error (be, error);
}

/* One forward from ctx->x, ctx->t into ctx->eps. On backends with graphs it is captured once per plan and
 * replayed: a forward is ~100-300 small launches, whose CPU cost is the run time at small batches. */
gboolean
ddpm_context_forward (DdpmContext *ctx, GError **error)
{
  DdpmBackend *be = ctx->be;
  if (be->ops->graph_begin == NULL)
    {
      ddpm_unet_forward (ctx->unet, ctx->x, ctx->t, ctx->eps);
      return TRUE;
    }
  if (!ctx->eps_graph)
    {
      be->ops->graph_reset (be);
      if (!be->ops->graph_begin (be, error))
        return FALSE;
      ddpm_unet_forward (ctx->unet, ctx->x, ctx->t, ctx->eps);
      if (!be->ops->graph_end (be, error))
        return FALSE;
      ctx->eps_graph = TRUE;
    }
  return be->ops->graph_launch (be, error);
}

gboolean
ddpm_context_set_timesteps (DdpmContext *ctx, const int *t, GError **error)
{
  DdpmBackend *be = ctx->be;
  g_autofree float *t_f32 = g_new (float, ctx->B);
  for (int b = 0; b < ctx->B; b++)
    t_f32[b] = (float) t[b];
  if (!ddpm_unet_prepare_timesteps (ctx->unet, t, ctx->B, error))
    return FALSE;
  be->ops->to_device (be, ctx->t, t_f32, ctx->B * sizeof (float));
  return TRUE;
}

gboolean
ddpm_context_forward_to_host (DdpmContext *ctx, float *eps_host, GError **error)
{
  DdpmBackend *be = ctx->be;
  if (!ddpm_context_forward (ctx, error))
    return FALSE;
  be->ops->to_host (be, eps_host, ctx->eps, ctx->n_eps * sizeof (float));
  return ddpm_context_check_device (ctx, error);
}

gboolean
ddpm_context_eps (DdpmContext *ctx, const float *x, const int64_t *t, int batch, int height, int width,
                  float *eps, GError **error)
{
  const int N = ctx->model->schedule.num_train_timesteps;
  if (batch < 1 || height < 1 || width < 1)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "batch %d at %dx%d: give a positive batch and size",
                   batch, width, height);
      return FALSE;
    }
  for (int b = 0; b < batch; b++)
    if (t[b] < 0 || t[b] >= N)
      {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "timestep %" G_GINT64_FORMAT
                     " of image %d is outside [0, %d)", t[b], b, N);
        return FALSE;
      }
  if (!ddpm_context_plan (ctx, batch, height, width, error))
    return FALSE;
  DdpmBackend *be = ctx->be;
  g_autofree int *t_int = g_new (int, batch);
  for (int b = 0; b < batch; b++)
    t_int[b] = (int) t[b];
  if (!ddpm_context_set_timesteps (ctx, t_int, error))
    return FALSE;
  be->ops->to_device (be, ctx->x, x, ctx->n_x * sizeof (float));
  /* One wait for the device (the copy back), then its deferred errors and a count of non-finite values on the
   * host: a device-side count would cost a launch and a second wait per call. eps stays untouched on failure. */
  if (!ddpm_context_forward_to_host (ctx, ctx->eps_host, error))
    return FALSE;
  size_t bad = 0;
  for (size_t i = 0; i < ctx->n_eps; i++)
    bad += !isfinite (ctx->eps_host[i]);
  if (bad != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_NUMERIC,
                   "the model produced %zu non-finite values (NaN/Inf) in %s%s", bad, ctx->device_name,
                   be->precision == DDPM_PRECISION_FP16 ? "; try --precision fp32 or bf16" : "");
      return FALSE;
    }
  memcpy (eps, ctx->eps_host, ctx->n_eps * sizeof (float));
  return TRUE;
}
