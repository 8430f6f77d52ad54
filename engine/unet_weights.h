/* unet_weights.h: the UNet2DModel parameters, bound by their checkpoint names.
 *
 * The same struct serves the host copy (float32 arrays in one arena, owned by DdpmModel) and each backend's
 * copy (pointers replaced by backend handles through ddpm_unet_weights_foreach). Shapes follow PyTorch:
 * conv weight (out, in, k, k); linear weight (out, in); norm/bias (C). A NULL weight means "absent". */
#pragma once

#include "unet_config.h"

typedef struct {
  void *weight, *bias;             /* host: float *; backend: opaque handles */
  int out, in, k;                  /* k = 0 for linear layers */
} DdpmLinearW;                     /* also used for convolutions */

typedef struct {
  void *gamma, *beta;
  int channels;
} DdpmNormW;

typedef struct {
  int in, out;
  DdpmNormW norm1, norm2;
  DdpmLinearW conv1, conv2;        /* 3x3 */
  DdpmLinearW time_emb_proj;       /* linear D -> out (2*out with scale_shift) */
  DdpmLinearW conv_shortcut;       /* 1x1, only when in != out */
} DdpmResnetW;

typedef struct {
  int channels, heads;
  DdpmNormW group_norm;
  DdpmLinearW to_q, to_k, to_v, to_out;
} DdpmAttentionW;

typedef struct {
  int n_layers;                    /* resnets (and attentions when has_attention) */
  gboolean has_attention;
  DdpmResnetW resnets[DDPM_MAX_LAYERS_PER_BLOCK + 1];
  DdpmAttentionW attentions[DDPM_MAX_LAYERS_PER_BLOCK + 1];
  DdpmLinearW resample;            /* downsamplers.0.conv / upsamplers.0.conv; weight NULL when absent */
} DdpmBlockW;

typedef struct {
  DdpmLinearW conv_in;
  DdpmLinearW time_linear_1, time_linear_2;
  DdpmBlockW down[DDPM_MAX_LEVELS];
  DdpmResnetW mid_resnets[2];
  DdpmAttentionW mid_attention;    /* channels 0 when add_attention is false; group_norm.gamma NULL (channels 0)
                                      when cfg->mid_attn_no_norm */
  DdpmBlockW up[DDPM_MAX_LEVELS];  /* index 0 = deepest, as diffusers' up_blocks */
  DdpmNormW conv_norm_out;
  DdpmLinearW conv_out;
} DdpmUNetWeights;

typedef enum {
  DDPM_PARAM_CONV,                 /* (out, in, k, k) */
  DDPM_PARAM_LINEAR,               /* (out, in) */
  DDPM_PARAM_VECTOR,               /* bias / norm (C) */
} DdpmParamKind;

/* Visits every present parameter slot in a fixed order. name is the canonical diffusers name
 * ("down_blocks.1.attentions.0.to_q.weight"); shape has ndim entries. */
typedef gboolean (*DdpmParamVisitor) (const char *name, void **slot, DdpmParamKind kind, int ndim,
                                      const int64_t *shape, gpointer user_data, GError **error);

/* Lays out the struct's dimensions from the config (all pointers NULL). */
void ddpm_unet_weights_layout (DdpmUNetWeights *w, const DdpmUNetConfig *cfg);
gboolean ddpm_unet_weights_foreach (DdpmUNetWeights *w, const DdpmUNetConfig *cfg, DdpmParamVisitor visit,
                                    gpointer user_data, GError **error);
int64_t ddpm_unet_weights_count (const DdpmUNetConfig *cfg); /* number of parameters */
