/* ddpm.h: public API of libddpm, the denoising-diffusion engine of gimp-ddpm.
 *
 * The engine knows nothing of GIMP. It loads a diffusers UNet2DModel folder, runs the UNet and the
 * DDPM/DDIM samplers on a backend (CPU reference, or CUDA when present), and reports progress and
 * honours cancellation through a context object. Runtime failures come back as GError (DDPM_ERROR).
 *
 * Images are float32, NCHW, in the model's range ([-1, 1] for every DDPM checkpoint we know). */
#pragma once

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

#define DDPM_ERROR (ddpm_error_quark ())
GQuark ddpm_error_quark (void);

typedef enum {
  DDPM_ERROR_IO,           /* a file could not be opened or read */
  DDPM_ERROR_FORMAT,       /* a file is malformed (JSON, safetensors, npy, zip, pickle) */
  DDPM_ERROR_UNSUPPORTED,  /* a config value or file feature we do not implement; names the field */
  DDPM_ERROR_SHAPE,        /* a tensor is missing or has the wrong shape; names the tensor */
  DDPM_ERROR_LIMIT,        /* an input exceeds a safety limit; names the limit and its value */
  DDPM_ERROR_NOMEM,        /* host or device memory exhausted */
  DDPM_ERROR_DEVICE,       /* the requested device is unavailable or failed */
  DDPM_ERROR_CANCELLED,    /* ddpm_context_cancel() was called */
  DDPM_ERROR_NUMERIC,      /* NaN or Inf appeared in the model output */
  DDPM_ERROR_ARGUMENT,     /* a caller passed an invalid argument */
} DdpmErrorCode;

typedef enum { DDPM_DEVICE_AUTO, DDPM_DEVICE_CPU, DDPM_DEVICE_CUDA } DdpmDevice;
typedef enum { DDPM_PRECISION_DEFAULT, DDPM_PRECISION_FP32, DDPM_PRECISION_FP16, DDPM_PRECISION_BF16 } DdpmPrecision;
typedef enum { DDPM_SAMPLER_DDPM, DDPM_SAMPLER_DDIM } DdpmSamplerKind;

/* ---- model ------------------------------------------------------------------------------------ */

typedef struct DdpmModel DdpmModel;        /* config + scheduler config + fp32 host weights */
typedef struct DdpmUNetConfig DdpmUNetConfig;
typedef struct DdpmSchedulerConfig DdpmSchedulerConfig;

/* dir: a UNet2DModel folder (config.json + diffusion_pytorch_model.{safetensors,bin}), or a pipeline
 * folder with unet/ and scheduler/ subfolders. */
DdpmModel *ddpm_model_load (const char *dir, GError **error);
/* A model with the given architecture and seeded random weights (for benchmarks). */
DdpmModel *ddpm_model_new_random (const DdpmUNetConfig *config, uint64_t seed, GError **error);
void ddpm_model_free (DdpmModel *model);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdpmModel, ddpm_model_free)

const DdpmUNetConfig *ddpm_model_get_config (const DdpmModel *model);
const DdpmSchedulerConfig *ddpm_model_get_scheduler_config (const DdpmModel *model);
/* Human-readable description (architecture, parameter count, weight format, scheduler). */
char *ddpm_model_describe (const DdpmModel *model);
int ddpm_model_in_channels (const DdpmModel *model);
int ddpm_model_out_channels (const DdpmModel *model);
int ddpm_model_sample_size (const DdpmModel *model);        /* 0 when the config has none */
int ddpm_model_size_multiple (const DdpmModel *model);      /* H and W must be multiples of this */
int ddpm_model_num_train_timesteps (const DdpmModel *model);
/* FALSE for a fully convolutional UNet (no attention anywhere): it computes the same function at any size,
 * so a picture larger than sample_size can run in one piece instead of in sample_size tiles. */
gboolean ddpm_model_has_attention (const DdpmModel *model);
/* Forward-process quantities at train timestep t (0-based): abar_t, for UIs and the noise filter. */
double ddpm_model_alpha_bar (const DdpmModel *model, int t);

/* ---- context: a backend instance bound to a model, plus progress, cancel and scratch ----------- */

typedef struct DdpmContext DdpmContext;

/* Called on the thread that runs the sampler after each step. step counts from 1 to num_steps.
 * x0_preview is the predicted x0 of batch item 0, (C, H, W) float32 in model range, or NULL when no
 * preview was computed for this step. Return FALSE to request cancellation. */
typedef gboolean (*DdpmProgressFunc) (int step, int num_steps, const float *x0_preview, gpointer user_data);

DdpmContext *ddpm_context_new (DdpmModel *model, DdpmDevice device, DdpmPrecision precision, GError **error);
void ddpm_context_free (DdpmContext *ctx);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdpmContext, ddpm_context_free)

const char *ddpm_context_device_name (const DdpmContext *ctx); /* e.g. "cpu (2 threads)", "cuda: NVIDIA H200" */
DdpmPrecision ddpm_context_precision (const DdpmContext *ctx);
/* preview_every: compute x0_preview every N steps (0 = never). */
void ddpm_context_set_progress (DdpmContext *ctx, DdpmProgressFunc func, gpointer user_data, int preview_every);
/* Called on the thread that runs the sampler when the context does something that is not a step and may take
 * seconds: tuning at a new size ("Tuning the kernels at 32x32: alternative 3 of 13"; see below). A UI shows it
 * until the next step's progress. */
typedef void (*DdpmStatusFunc) (const char *status, gpointer user_data);
void ddpm_context_set_status (DdpmContext *ctx, DdpmStatusFunc func, gpointer user_data);
/* Thread-safe: may be called from any thread; the sampler stops before its next step. A cancel issued
 * before ddpm_sample starts stops that run at once; the flag is cleared when a run ends. */
void ddpm_context_cancel (DdpmContext *ctx);
gboolean ddpm_context_is_cancelled (const DdpmContext *ctx);

/* Tuning (CUDA): at each new (batch, height, width) plan, time the backend's variants (alternative kernels:
 * GroupNorm over thread-block clusters, wgmma convolutions, ...) on the model and keep the fastest whose output
 * agrees with the defaults' within the precision's bound (fp16 1e-2, bf16 8e-2, fp32 1e-4 on eps of magnitude 1)
 * and saves at least 2 %; like cuDNN's benchmark mode. CACHED keeps decisions in $DDPM_TUNING_FILE (default
 * $XDG_CACHE_HOME/gimp-ddpm/tuning.ini) per device, backend build, precision, architecture and shape, and reuses
 * them; AGAIN always times. Off by default, or as $DDPM_TUNE says (1: CACHED, again: AGAIN) at ddpm_context_new.
 * Costs a few forwards per variant (a dozen on CUDA) at the first plan. */
typedef enum { DDPM_TUNING_OFF, DDPM_TUNING_CACHED, DDPM_TUNING_AGAIN } DdpmTuning;
void ddpm_context_set_tuning (DdpmContext *ctx, DdpmTuning tuning);
/* The last tuning's report (lines: each variant's time, ratio and agreement; what was kept), or NULL. */
const char *ddpm_context_tuning_report (const DdpmContext *ctx);

/* Safety limit on H * W of one image (the backends index pixels with int). Sizes under it can still be
 * refused (DDPM_ERROR_LIMIT naming the size) when the planned buffers exceed physical memory (CPU). */
#define DDPM_LIMIT_IMAGE_PIXELS ((int64_t) 1 << 28)

/* One UNet forward: eps (B, out_channels, H, W) = unet(x (B, in_channels, H, W), t (B,)). */
gboolean ddpm_context_eps (DdpmContext *ctx, const float *x, const int64_t *t, int batch, int height, int width,
                           float *eps, GError **error);

/* ---- sampling ---------------------------------------------------------------------------------- */

typedef enum {
  DDPM_START_NOISE,        /* x_T from noise (init_noise or the RNG) */
  DDPM_START_STRENGTH,     /* SDEdit: x_init is a clean image, noised to the first timestep <= strength*T */
  DDPM_START_NOISY,        /* x_init is already x_t at train timestep start_timestep; no noise is added */
} DdpmStartKind;

typedef struct {
  DdpmSamplerKind sampler;
  int num_steps;           /* inference steps over the full schedule (0: num_train_timesteps for DDPM, 50 DDIM) */
  double eta;              /* DDIM only; 0 = deterministic */
  uint64_t seed;           /* image b of the batch uses seed + b: a batch equals separate runs */
  int batch, height, width;
  DdpmStartKind start;
  const float *x_init;     /* (B, C, H, W) for STRENGTH/NOISY */
  double strength;         /* STRENGTH: in [0, 1] */
  int start_timestep;      /* NOISY: train timestep of x_init */
  const float *init_noise; /* optional (B, C, H, W): replaces the RNG's x_T (or the STRENGTH noise) */
  const float *step_noise; /* optional (K, B, C, H, W): slice k is the noise of the k-th step that draws noise */
  int step_noise_count;    /* K */
  int ensemble;            /* NOISY only: average the denoised picture over this many of the 8 flips and
                            * transposes of x_init (1: off, 4: flips, 8: all; ensemble.c) */
} DdpmSampleParams;

#define DDPM_ENSEMBLE_MAX 8

void ddpm_sample_params_init (DdpmSampleParams *params);

/* Runs the sampler; out is (B, C, H, W) float32, the raw final sample (no clamping). On error or
 * cancellation returns FALSE and leaves out untouched. */
gboolean ddpm_sample (DdpmContext *ctx, const DdpmSampleParams *params, float *out, GError **error);

/* Forward diffusion q(x_t | x_0): out = sqrt(abar_t) x0 + sqrt(1 - abar_t) z, z from the RNG keyed by
 * seed (image b uses seed + b). n_per_image = C*H*W. */
void ddpm_add_noise (const DdpmModel *model, int t, uint64_t seed, const float *x0, float *out, int batch,
                     size_t n_per_image);

/* Train timestep whose noise level sqrt((1 - abar_t)/abar_t) is closest to sigma (sigma in model units). */
int ddpm_timestep_for_sigma (const DdpmModel *model, double sigma);

/* ---- RNG: Philox4x32-10, counter-based; the same numbers on every backend ---------------------- */

/* out[i] = N(0,1) sample for element (offset + i) of stream `stream` under key `seed`. */
void ddpm_randn (uint64_t seed, uint64_t stream, uint64_t offset, size_t n, float *out);

G_END_DECLS
