/* backend.h: the operations a compute backend provides to run the UNet and the sampler.
 *
 * Two implementations: backend_cpu.c (the reference, OpenBLAS + OpenMP) and the CUDA backend
 * (kernels/, loaded at run time with dlopen so machines without the NVIDIA driver still work).
 *
 * Conventions
 * - Activations ("act") are in the backend's activation type: float32 on the CPU; float16 / bfloat16 /
 *   float32 on CUDA per precision. They are opaque `void *` allocated by alloc_act.
 * - "f32" buffers are always float32 in backend memory: the sampler state x, model output, t, noise.
 * - Layout NCHW; tokens of attention are t = y * W + x. Shapes are given in comments as (B, C, H, W).
 * - Weights are uploaded once (upload_param) and referenced through the DdpmUNetWeights copy whose
 *   pointers the backend replaced.
 * - Every op is asynchronous with respect to the host on devices; `synchronize` waits. Ops never allocate:
 *   scratch is reserved once (reserve_scratch) before any forward.
 * - No op reads host memory except through to_device / write_params, so a whole forward + step can be
 *   captured as a CUDA graph and replayed. */
#pragma once

#include "unet_weights.h"
#include "scheduler.h"

typedef struct DdpmBackend DdpmBackend;

/* What conv2d adds after conv + bias, in this order (a NULL member adds nothing):
 *   y += channel_bias[b * stride + c]       act, stride = channel_bias_stride or Cout when 0: a resnet's
 *                                           time-embedding projection (a slice of all resnets' projections);
 *   y = (residual + y) * residual_scale     act (B, Cout, Ho, Wo), never aliasing y: a resnet's shortcut.
 * Fused into the convolution's epilogue on CUDA (one launch and one pass over y instead of three). */
typedef struct {
  const void *channel_bias;
  const void *residual;
  int channel_bias_stride;
  float residual_scale;
} DdpmConvEpilogue;

/* The elements from one image's channel_bias to the next's, for a convolution with Cout outputs. */
static inline int
ddpm_conv_epilogue_stride (const DdpmConvEpilogue *epi, int Cout)
{
  return epi->channel_bias_stride > 0 ? epi->channel_bias_stride : Cout;
}

typedef struct {
  const char *name;
  void (*destroy) (DdpmBackend *be);

  /* ---- memory ---- */
  void *(*alloc_act) (DdpmBackend *be, size_t n_elements, GError **error);
  void *(*alloc_f32) (DdpmBackend *be, size_t n_elements, GError **error);
  void *(*alloc_bytes) (DdpmBackend *be, size_t n_bytes, GError **error);
  void (*free) (DdpmBackend *be, void *ptr);
  /* Copies a host float32 parameter into backend memory in the backend's weight format. */
  void *(*upload_param) (DdpmBackend *be, const float *host, DdpmParamKind kind, int ndim, const int64_t *shape,
                         GError **error);
  void (*to_device) (DdpmBackend *be, void *dst, const void *src, size_t n_bytes);
  void (*to_host) (DdpmBackend *be, void *dst, const void *src, size_t n_bytes);
  /* Ensures scratch of at least n_bytes exists; called while planning, never inside the step loop. */
  gboolean (*reserve_scratch) (DdpmBackend *be, size_t n_bytes, GError **error);
  void (*synchronize) (DdpmBackend *be);

  /* ---- scratch needs, in bytes, for planning ---- */
  size_t (*conv2d_scratch) (DdpmBackend *be, int B, int Cin, int H, int W, int Cout, int k, int stride,
                            const int pad[4]);
  size_t (*attention_scratch) (DdpmBackend *be, int B, int C, int HW, int heads);

  /* ---- UNet ops ---- */
  /* act (B, n) <- f32 (B, n), and back. */
  void (*cast_in) (DdpmBackend *be, const float *x, void *y, size_t n);
  void (*cast_out) (DdpmBackend *be, const void *x, float *y, size_t n);
  /* (B, dim) sinusoidal embedding of t (f32, B); dim even; flip swaps to [cos, sin]. */
  void (*timestep_embedding) (DdpmBackend *be, const float *t, void *y, int B, int dim, gboolean flip,
                              float freq_shift);
  /* y (M, N) = act(x (M, K)) W^T + b; act = SiLU when silu_in. W (N, K). */
  void (*linear) (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int M, gboolean silu_in);
  /* y (B, Cout, Ho, Wo) = conv(x (B, Cin, H, W)) + bias, then epi (NULL: nothing); square kernel k, stride,
   * zero padding pad = {top, left, bottom, right}; Ho = (H + top + bottom - k) / stride + 1. */
  void (*conv2d) (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *y, int B, int H, int W, int stride,
                  const int pad[4], const DdpmConvEpilogue *epi);
  /* y = GroupNorm(x) * gamma + beta over (B, C, HW) with G groups (stats in float32, biased variance);
   * then, when scale_shift (B, 2C) is given, y = y * (1 + scale) + shift; then SiLU when silu.
   * x and y may alias. */
  void (*group_norm) (DdpmBackend *be, const DdpmNormW *w, const void *x, void *y, int B, int C, int HW, int G,
                      float eps, const void *scale_shift, gboolean silu);
  /* h (B, C, HW) += v (B, C) broadcast over HW. */
  void (*add_channel_bias) (DdpmBackend *be, void *h, const void *v, int B, int C, int HW);
  /* y = (a + b) * scale, n elements; y may alias a or b. */
  void (*add_scaled) (DdpmBackend *be, const void *a, const void *b, void *y, size_t n, float scale);
  /* y (B, Ca + Cb, HW) = [a (B, Ca, HW), b (B, Cb, HW)] along channels; Cb may be 0 (a copy). */
  void (*concat_channels) (DdpmBackend *be, const void *a, int Ca, const void *b, int Cb, void *y, int B, int HW);
  /* y (B, C, 2H, 2W) = nearest-neighbour x2 of x (B, C, H, W). */
  void (*upsample_nearest2x) (DdpmBackend *be, const void *x, void *y, int B, int C, int H, int W);
  /* The attention block after its GroupNorm: y = (to_out(MHA(to_q(n), to_k(n), to_v(n))) + residual) * scale,
   * n = normed (B, C, HW) viewed as tokens (B, HW, C); y and residual (B, C, HW). y may alias residual. */
  void (*attention) (DdpmBackend *be, const DdpmAttentionW *w, const void *normed, const void *residual, void *y,
                     int B, int C, int HW, int heads, float scale);

  /* ---- sampler ---- */
  /* Copies host step parameters into params (a buffer from alloc_bytes), outside any graph. */
  void (*write_params) (DdpmBackend *be, void *params_dev, const DdpmStepParams *host);
  /* The scheduler update (scheduler.h) on f32 x (B, n_per_image) in place; model_out f32; noise f32 or
   * NULL (draw from Philox per params); x0_out f32 or NULL. Reads coefficients from params_dev. */
  void (*scheduler_step) (DdpmBackend *be, const void *params_dev, float *x, const float *model_out,
                          const float *noise, float *x0_out, size_t n_per_image, int batch);
  /* y (B, n_per_image) f32 = N(0,1) from Philox(seed + b, stream, element). */
  void (*randn) (DdpmBackend *be, float *y, uint64_t seed, uint64_t stream, size_t n_per_image, int batch);
  /* Counts non-finite values of f32 x (n); synchronous. */
  size_t (*count_nonfinite) (DdpmBackend *be, const float *x, size_t n);

  /* ---- optional: fused ops (NULL: the engine calls the ops they fuse) ---- */
  /* group_norm (w_norm, G, eps, scale_shift, silu) of x into normed, then conv2d (w) of normed into y with epi:
   * for a normalised tensor that only the convolution reads (a resnet's norm1 -> conv1, norm2 -> conv2).
   * normed (B, Cin, H, W) may alias x; the backend may leave it unwritten (CUDA: the normalised values go
   * channels last straight into the convolution's scratch, so no NCHW copy and no transpose). Scratch:
   * conv2d_scratch of the convolution. */
  void (*group_norm_conv2d) (DdpmBackend *be, const DdpmNormW *w_norm, int G, float eps, const void *scale_shift,
                             gboolean silu, const DdpmLinearW *w, const void *x, void *normed, void *y, int B, int H,
                             int W, int stride, const int pad[4], const DdpmConvEpilogue *epi);

  /* upsample_nearest2x of x (B, Cin, H, W) into upsampled (B, Cin, 2H, 2W), then conv2d (w, stride 1, pad) of
   * it into y with epi: an up block's resample. y may alias x (the backend reads all of x before it writes
   * y); the backend may leave upsampled unwritten (CUDA: the conv samples x at half resolution from a
   * channels-last copy, so the 4x larger tensor is never written). Scratch: conv2d_scratch of the
   * convolution at 2H x 2W. */
  void (*upsample_conv2d) (DdpmBackend *be, const DdpmLinearW *w, const void *x, void *upsampled, void *y, int B,
                           int H, int W, const int pad[4], const DdpmConvEpilogue *epi);

  /* conv2d (no upsampling, any stride and pad) with float32 at one end instead of act: x_f32, x (B, Cin, H, W)
   * is f32 and read as cast_in would give it; or y_f32, y (B, Cout, Ho, Wo) is f32 and gets what cast_out of
   * the act result would give. The same bits as the three ops, for a model's conv_in (reading the sample) and
   * conv_out (writing eps); CUDA: one launch where its direct kernel takes the shape. FALSE, having done
   * nothing, where the backend cannot (the caller then casts and convolves). Scratch: conv2d_scratch. */
  gboolean (*conv2d_f32_ends) (DdpmBackend *be, const DdpmLinearW *w, const void *x, gboolean x_f32, void *y,
                               gboolean y_f32, int B, int H, int W, int stride, const int pad[4],
                               const DdpmConvEpilogue *epi);

  /* y (B, row_elems) act = row row_of[t] of table (act, n_rows x row_elems) for t = index[b] clamped to [0, n)
   * (floats holding integers; row_of has n entries). A negative row_of[t] (not computed) gives NaN. The time
   * table's lookup (see DdpmBackend.time_table); NULL on the CPU. */
  void (*gather_rows) (DdpmBackend *be, const void *table, const float *row_of, int n, const float *index, void *y,
                       int B, int row_elems);

  /* ---- optional: graph capture (NULL on the CPU) ---- */
  gboolean (*graph_begin) (DdpmBackend *be, GError **error);
  gboolean (*graph_end) (DdpmBackend *be, GError **error);
  gboolean (*graph_launch) (DdpmBackend *be, GError **error);
  void (*graph_reset) (DdpmBackend *be);

  /* ---- optional: deferred device errors (NULL on the CPU) ---- */
  /* Device ops run asynchronously and return nothing, so a failure inside one (launch error, device fault)
   * is kept: this waits for queued work and returns FALSE with the first failure since the last call. */
  gboolean (*check_error) (DdpmBackend *be, GError **error);

  /* ---- optional: alternative settings for the tuner (engine/tuning.c; NULL on the CPU) ---- */
  /* Variant i's settings in words ("GN=cluster DEFER_REDUCE=1"), NULL past the last; variant 0 ("") is the
   * backend's defaults. Every variant computes the same function; they differ in kernels, so in speed and in
   * rounding. */
  const char *(*variant_name) (DdpmBackend *be, int i);
  /* Makes settings (a variant's name, several variants' joined by a space, or "" for the defaults) those of the
   * ops that follow, outside graph captures; graphs and scratch sizes planned before are stale. FALSE with the
   * reason where they cannot run here or are malformed (the previous ones stay). */
  gboolean (*set_variant) (DdpmBackend *be, const char *settings, GError **error);
  /* The current settings with what the backend chose by timing while planning written out (the CUDA backend's
   * per-shape convolution plans: "CONV_PICK=timed CONV_PICKS=..."), so that set_variant of them plans the same
   * again without timing; owned by the backend, valid until its next call. NULL: no such op (the settings as set
   * say it all). */
  const char *(*variant_frozen) (DdpmBackend *be);
} DdpmBackendOps;

/* Each backend embeds this as its first member. */
struct DdpmBackend {
  const DdpmBackendOps *ops;
  DdpmPrecision precision;
  char description[160];           /* e.g. "cpu (2 threads, OpenBLAS)" */
  char build_id[64];               /* identifies the backend's code (the CUDA module's size and time), or "" */
  /* TRUE (with gather_rows): the engine keeps every resnet's time projection of each timestep used so far in a
   * table (engine/unet.h ddpm_unet_prepare_timesteps), and a forward gathers its rows: one launch instead of the
   * embedding chain's four (sinusoid, two linears, the stacked projections). CUDA: unless
   * $DDPM_CUDA_TIME_TABLE=0. */
  gboolean time_table;
};

DdpmBackend *ddpm_backend_cpu_new (GError **error);
/* dlopens libddpm-cuda; DDPM_ERROR_DEVICE with the reason when unavailable. */
DdpmBackend *ddpm_backend_cuda_new (DdpmPrecision precision, GError **error);
/* The entry point libddpm-cuda exports (looked up by name). */
typedef DdpmBackend *(*DdpmCudaCreateFunc) (DdpmPrecision precision, GError **error);
#define DDPM_CUDA_CREATE_SYMBOL "ddpm_cuda_backend_create"
