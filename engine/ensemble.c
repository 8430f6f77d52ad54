/* ensemble.c: self-ensemble denoising. A noisy picture is denoised under K of the 8 symmetries of the square
 * (flips and transposes; the "x8 self-ensemble" of image restoration), each result is mapped back, and the K
 * results are averaged. The model's errors differ between orientations while the picture does not, so the
 * average is closer to the clean picture (at K = 8: +0.1 to +0.4 dB PSNR with the shipped photo-64, +0.8 dB
 * with its less trained first version; weights/photo-64/MODEL_CARD.md).
 *
 * Symmetry k (0..7): bit 0 flips columns, bit 1 flips rows, then bit 2 transposes (H x W -> W x H).
 * Pixel (i, j) of the original lands at position pos(i, j) of the transformed picture; the forward map
 * scatters through pos, the inverse gathers through it, so one index map serves both ways. */
#include "ensemble.h"

#include "context.h"
#include "error.h"

#include <string.h>

typedef struct {
  gboolean flip_w, flip_h, transpose;
  int H, W;      /* original size */
} Symmetry;

static Symmetry
symmetry (int k, int H, int W)
{
  return (Symmetry) { (k & 1) != 0, (k & 2) != 0, (k & 4) != 0, H, W };
}

/* Flat index inside one (H, W) plane of the transformed picture that pixel (i, j) of the original maps to. */
static inline size_t
position (const Symmetry *s, int i, int j)
{
  int i1 = s->flip_h ? s->H - 1 - i : i;
  int j1 = s->flip_w ? s->W - 1 - j : j;
  return s->transpose ? (size_t) j1 * s->H + i1 : (size_t) i1 * s->W + j1;
}

void
ddpm_symmetry_apply (int k, const float *src, float *dst, int planes, int H, int W)
{
  Symmetry s = symmetry (k, H, W);
  const size_t plane = (size_t) H * W;
  for (int p = 0; p < planes; p++)
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++)
        dst[p * plane + position (&s, i, j)] = src[p * plane + (size_t) i * W + j];
}

void
ddpm_symmetry_accumulate_inverse (int k, const float *transformed, float *acc, int planes, int H, int W)
{
  Symmetry s = symmetry (k, H, W);
  const size_t plane = (size_t) H * W;
  for (int p = 0; p < planes; p++)
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++)
        acc[p * plane + (size_t) i * W + j] += transformed[p * plane + position (&s, i, j)];
}

/* Progress of run k of K, reported as one run of K * n steps, with the preview mapped back. */
typedef struct {
  DdpmProgressFunc func;
  gpointer data;
  int k, K;
  int C, H, W;     /* original size */
  float *preview;  /* (C, H, W) */
} EnsembleProgress;

static gboolean
ensemble_progress (int step, int num_steps, const float *x0_preview, gpointer user_data)
{
  EnsembleProgress *ep = user_data;
  const float *preview = NULL;
  if (x0_preview != NULL)
    {
      memset (ep->preview, 0, (size_t) ep->C * ep->H * ep->W * sizeof (float));
      ddpm_symmetry_accumulate_inverse (ep->k, x0_preview, ep->preview, ep->C, ep->H, ep->W);
      preview = ep->preview;
    }
  return ep->func (ep->k * num_steps + step, ep->K * num_steps, preview, ep->data);
}

gboolean
ddpm_ensemble_run (DdpmContext *ctx, const DdpmSampleParams *p, DdpmSampleRunFunc run, float *out, GError **error)
{
  const DdpmUNetConfig *cfg = &ctx->model->config;
  const int K = p->ensemble == 0 ? 1 : p->ensemble;   /* 0: a zero-initialised params struct */
  if (K < 1 || K > DDPM_ENSEMBLE_MAX)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "ensemble %d is outside 1..%d", K, DDPM_ENSEMBLE_MAX);
      return FALSE;
    }
  if (K > 1 && p->start != DDPM_START_NOISY)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                   "ensemble %d averages denoised versions of a noisy picture: it needs the already-noisy start", K);
      return FALSE;
    }
  if (K == 1 || p->x_init == NULL)
    return run (ctx, p, out, error);

  const int B = p->batch;
  const int H = p->height > 0 ? p->height : cfg->sample_size;
  const int W = p->width > 0 ? p->width : cfg->sample_size;
  const int C = cfg->in_channels;
  if (B < 1 || H < 1 || W < 1)
    return run (ctx, p, out, error);   /* the single run reports the bad size */
  const size_t n_x = (size_t) B * C * H * W;
  g_autofree float *x_k = g_new (float, n_x);
  g_autofree float *y_k = g_new (float, n_x);
  g_autofree float *acc = g_new0 (float, n_x);
  g_autofree float *preview = g_new (float, (size_t) C * H * W);

  EnsembleProgress ep = { ctx->progress, ctx->progress_data, 0, K, C, H, W, preview };
  if (ctx->progress != NULL)
    {
      ctx->progress = ensemble_progress;
      ctx->progress_data = &ep;
    }
  gboolean ok = TRUE;
  /* Untransposed symmetries first, so a non-square picture is re-planned once, not at every other run. */
  for (int k = 0; k < K && ok; k++)
    {
      ep.k = k;
      DdpmSampleParams pk = *p;
      pk.ensemble = 1;
      pk.height = (k & 4) ? W : H;
      pk.width = (k & 4) ? H : W;
      ddpm_symmetry_apply (k, p->x_init, x_k, B * C, H, W);
      pk.x_init = x_k;
      ok = run (ctx, &pk, y_k, error);
      if (ok)
        ddpm_symmetry_accumulate_inverse (k, y_k, acc, B * C, H, W);
      else
        g_prefix_error (error, "ensemble run %d of %d: ", k + 1, K);
    }
  if (ep.func != NULL)
    {
      ctx->progress = ep.func;
      ctx->progress_data = ep.data;
    }
  if (!ok)
    return FALSE;
  for (size_t i = 0; i < n_x; i++)
    out[i] = acc[i] / K;
  return TRUE;
}
