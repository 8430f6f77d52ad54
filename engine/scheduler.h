/* scheduler.h: DDPM / DDIM schedules (betas, alphas_cumprod, inference timesteps) and the per-step
 * coefficients that reduce every scheduler update to one elementwise formula (DdpmStepParams), so the
 * CPU and CUDA backends share a single update kernel. Arithmetic follows diffusers' scheduling_ddpm.py and
 * scheduling_ddim.py (float32 tables; cumprod accumulated in double, rounded per element). */
#pragma once

#include "unet_config.h"

typedef struct {
  DdpmSchedulerConfig config;
  int num_train_timesteps;
  float *betas;                    /* (N,) */
  float *alphas;                   /* (N,) */
  float *alphas_cumprod;           /* (N,) abar_t */
} DdpmSchedule;

gboolean ddpm_schedule_init (DdpmSchedule *s, const DdpmSchedulerConfig *cfg, GError **error);
void ddpm_schedule_clear (DdpmSchedule *s);

/* Inference timesteps for num_steps (1 <= num_steps <= N), descending, as set_timesteps() gives them
 * (spacing + steps_offset). out has num_steps entries. */
gboolean ddpm_schedule_timesteps (const DdpmSchedule *s, int num_steps, int *out, GError **error);

/* The elementwise update, all float32, each operation rounded (no fused multiply-add), in this order:
 *   x0  = (pred_x * x + pred_m * m) / pred_div     (m = model output; epsilon / sample / v_prediction)
 *   x0  = clamp(x0, -clip, clip)                   when clip > 0
 *   eps = (eps_x * x + eps_m * m) / eps_div        (unclipped, as diffusers' pred_epsilon)
 *   x'  = ((c_x0 * x0 + c_x * x) + c_eps * eps) + sigma * z     (the sigma term only when draw_noise)
 * z: injected noise or N(0,1) from Philox (seed + batch index, stream, element index) when draw_noise.
 * The divisors (1 where diffusers does not divide; never 0) make epsilon's x0 = (x - sqrt(1 - abar) m) /
 * sqrt(abar) bit-identical to diffusers (a multiply by 1/sqrt(abar) was up to 16 ulp of x0 off at t ~ T,
 * where x - sqrt(1 - abar) m cancels). */
typedef struct {
  float t;                         /* current train timestep, as the UNet sees it */
  float pred_x, pred_m, pred_div;
  float eps_x, eps_m, eps_div;
  float clip;                      /* 0 = no clipping */
  float c_x0, c_x, c_eps;
  float sigma;                     /* 0 when draw_noise is 0; may be 0 when it is 1 */
  uint32_t draw_noise;             /* 1 when diffusers draws noise for this step (DDPM: t > 0; DDIM: eta > 0),
                                    * so the step consumes a noise slice */
  uint64_t seed;
  uint64_t stream;                 /* RNG stream of this step's noise (see DDPM_STREAM_*) */
} DdpmStepParams;

/* RNG streams: x_T and SDEdit noise, then one stream per noisy step (step_index = 0-based position in the
 * timestep list). */
#define DDPM_STREAM_INIT 0u
#define DDPM_STREAM_STEP(step_index) (1u + (uint64_t) (step_index))

/* Coefficients of step i (0-based) of `timesteps` (length n). eta is used by DDIM only. */
void ddpm_schedule_step_params (const DdpmSchedule *s, DdpmSamplerKind kind, const int *timesteps, int n, int i,
                                double eta, DdpmStepParams *out);

/* The same for a custom, unevenly spaced list (e.g. an already-noisy start that prepends its own
 * timestep): DDIM's previous timestep is then the next entry of the list rather than t - N // n. */
void ddpm_schedule_step_params_custom (const DdpmSchedule *s, DdpmSamplerKind kind, const int *timesteps, int n,
                                       int i, double eta, DdpmStepParams *out);

/* Reference update on the host: x (n_per_image * batch) updated in place; x0_out may be NULL.
 * noise: injected noise (same length as x) or NULL to draw from the RNG when p->draw_noise. */
void ddpm_step_cpu (const DdpmStepParams *p, float *x, const float *model_out, const float *noise,
                    float *x0_out, size_t n_per_image, int batch);
