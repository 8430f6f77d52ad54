/* context.h: a backend bound to a model, with the sampler's device buffers, progress and cancellation.
 * One context per thread; several contexts may share one (read-only) model. */
#pragma once

#include "unet.h"

struct DdpmContext {
  DdpmModel *model;
  DdpmBackend *be;
  DdpmUNet *unet;
  char *device_name;               /* backend description, plus why AUTO fell back to the CPU */

  /* Sampler state for the planned (B, H, W), f32 backend memory. */
  int B, H, W;
  size_t n_x;                      /* B * in_channels * H * W */
  size_t n_eps;                    /* B * out_channels * H * W */
  float *x;                        /* (B, C, H, W) the sample being denoised */
  float *eps;                      /* (B, Cout, H, W) model output */
  float *noise;                    /* (B, C, H, W) injected step noise */
  float *x0;                       /* (B, C, H, W) predicted x0 of the last step */
  float *t;                        /* (B,) timestep per image */
  void *params;                    /* DdpmStepParams */
  float *preview_host;             /* (C, H, W) host copy of x0[0] */
  float *eps_host;                 /* (B, Cout, H, W) ddpm_context_eps' output, checked before the caller's copy */
  DdpmTuning tuning;               /* what a new plan does about the backend's variants (tuning.c) */
  char *tuning_report;             /* the last tuning's lines, or NULL */
  gboolean eps_graph;              /* the backend's graph holds ddpm_context_eps' forward for this plan */

  DdpmProgressFunc progress;
  gpointer progress_data;
  DdpmStatusFunc status;           /* what a long non-step phase (tuning) is doing, or NULL */
  gpointer status_data;
  int preview_every;
  gint cancelled;                  /* atomic */
};

/* ddpm_context_new on a backend the caller made (tests: a backend with test variants); takes be, destroying it
 * on failure too. note: why this backend (as AUTO's fallback note), or NULL. */
DdpmContext *ddpm_context_new_on_backend (DdpmModel *model, DdpmBackend *be, const char *note, GError **error);

/* Waits for queued device work and returns its first failure (a no-op on backends without deferred errors),
 * so a failed kernel is reported as itself rather than as non-finite output. */
gboolean ddpm_context_check_device (DdpmContext *ctx, GError **error);

/* Plans the UNet and the sampler buffers for (B, H, W). */
gboolean ddpm_context_plan (DdpmContext *ctx, int batch, int height, int width, GError **error);

/* One forward from x, t into eps as planned: the captured graph where the backend has graphs (captured at
 * the first call after a plan), else the ops one by one. */
gboolean ddpm_context_forward (DdpmContext *ctx, GError **error);

/* The planned batch's timesteps t (ctx->B integers in [0, num_train_timesteps)): their time embeddings prepared
 * (ddpm_unet_prepare_timesteps), their values copied into ctx->t for the forward. Outside graph captures. */
gboolean ddpm_context_set_timesteps (DdpmContext *ctx, const int *t, GError **error);

/* ddpm_context_forward, then ctx->eps copied into eps_host (n_eps floats) and the device's deferred errors
 * checked: one wait. */
gboolean ddpm_context_forward_to_host (DdpmContext *ctx, float *eps_host, GError **error);

/* tuning.c: with tuning on and a backend that has variants, times them on the plan just made and keeps the
 * fastest that agrees with the defaults (or the cache's decision); TRUE doing nothing otherwise. */
gboolean ddpm_context_tune (DdpmContext *ctx, GError **error);
