/* unet_weights.c: the parameter layout of diffusers' UNet2DModel and a visitor over it.
 *
 * Channel bookkeeping follows diffusers (unet_2d.py, unet_2d_blocks.py) exactly:
 *   down block i: in = boc[i-1] (boc[0] for i = 0), out = boc[i]; resnet j takes in (j = 0) or out;
 *     downsampler conv (out, out, 3, 3) on every block but the last.
 *   up block i (rev = reversed boc): prev = rev[i-1] (rev[0] for i = 0), out = rev[i],
 *     skip_in = rev[min(i+1, n-1)]; layers_per_block + 1 resnets, resnet j takes
 *     (j == 0 ? prev : out) + (j == last ? skip_in : out) channels; upsampler conv on every block but the last.
 *   mid: resnet, attention, resnet at boc[-1].
 * A resnet has a 1x1 conv_shortcut only when in != out. Absent slots have out = 0 / channels = 0 (layout)
 * and are skipped, so their pointers stay NULL.
 * The visiting order is diffusers' state_dict order (conv_in, time_embedding, down_blocks, up_blocks,
 * mid_block, conv_norm_out, conv_out; attentions before resnets inside a block). */
#include "unet_weights.h"

#include <string.h>

static void
layout_linear (DdpmLinearW *l, int out, int in, int k)
{
  l->weight = l->bias = NULL;
  l->out = out;
  l->in = in;
  l->k = k;
}

static void
layout_norm (DdpmNormW *n, int channels)
{
  n->gamma = n->beta = NULL;
  n->channels = channels;
}

static void
layout_resnet (DdpmResnetW *r, int in, int out, int temb, gboolean scale_shift)
{
  memset (r, 0, sizeof *r);
  r->in = in;
  r->out = out;
  layout_norm (&r->norm1, in);
  layout_linear (&r->conv1, out, in, 3);
  layout_linear (&r->time_emb_proj, scale_shift ? 2 * out : out, temb, 0);
  layout_norm (&r->norm2, out);
  layout_linear (&r->conv2, out, out, 3);
  layout_linear (&r->conv_shortcut, in != out ? out : 0, in, 1);
}

static void
layout_attention (DdpmAttentionW *a, int channels, int head_dim)
{
  memset (a, 0, sizeof *a);
  a->channels = channels;
  /* head_dim 0 (config null): one head spanning the block; else channels / head_dim heads (the config
   * parser checked divisibility). */
  a->heads = head_dim > 0 ? channels / head_dim : 1;
  layout_norm (&a->group_norm, channels);
  layout_linear (&a->to_q, channels, channels, 0);
  layout_linear (&a->to_k, channels, channels, 0);
  layout_linear (&a->to_v, channels, channels, 0);
  layout_linear (&a->to_out, channels, channels, 0);
}

void
ddpm_unet_weights_layout (DdpmUNetWeights *w, const DdpmUNetConfig *cfg)
{
  memset (w, 0, sizeof *w);
  const int n = cfg->n_levels, lpb = cfg->layers_per_block, D = cfg->time_embedding_dim;
  const int *boc = cfg->block_out_channels;

  layout_linear (&w->conv_in, boc[0], cfg->in_channels, 3);
  layout_linear (&w->time_linear_1, D, boc[0], 0);
  layout_linear (&w->time_linear_2, D, D, 0);

  for (int i = 0; i < n; i++) {
    DdpmBlockW *b = &w->down[i];
    int in = boc[i > 0 ? i - 1 : 0], out = boc[i];
    b->n_layers = lpb;
    b->has_attention = cfg->down_attn[i];
    for (int j = 0; j < lpb; j++) {
      layout_resnet (&b->resnets[j], j == 0 ? in : out, out, D, cfg->scale_shift);
      if (b->has_attention)
        layout_attention (&b->attentions[j], out, cfg->attention_head_dim);
    }
    layout_linear (&b->resample, i < n - 1 ? out : 0, out, 3);
  }

  int cmid = boc[n - 1];
  layout_resnet (&w->mid_resnets[0], cmid, cmid, D, cfg->scale_shift);
  layout_resnet (&w->mid_resnets[1], cmid, cmid, D, cfg->scale_shift);
  if (cfg->add_attention) {
    layout_attention (&w->mid_attention, cmid, cfg->attention_head_dim);
    if (cfg->mid_attn_no_norm)
      layout_norm (&w->mid_attention.group_norm, 0);  /* no group norm (scale_shift, attn groups null) */
  }

  for (int i = 0; i < n; i++) {
    DdpmBlockW *b = &w->up[i];
    int prev = boc[n - 1 - (i > 0 ? i - 1 : 0)];
    int out = boc[n - 1 - i];
    int skip_in = boc[n - 1 - (i + 1 < n ? i + 1 : n - 1)];
    b->n_layers = lpb + 1;
    b->has_attention = cfg->up_attn[i];
    for (int j = 0; j <= lpb; j++) {
      int res_in = j == 0 ? prev : out;
      int skip = j == lpb ? skip_in : out;
      layout_resnet (&b->resnets[j], res_in + skip, out, D, cfg->scale_shift);
      if (b->has_attention)
        layout_attention (&b->attentions[j], out, cfg->attention_head_dim);
    }
    layout_linear (&b->resample, i < n - 1 ? out : 0, out, 3);
  }

  layout_norm (&w->conv_norm_out, boc[0]);
  layout_linear (&w->conv_out, cfg->out_channels, boc[0], 3);
}

/* ---- visiting ---------------------------------------------------------------------------------- */

typedef struct {
  DdpmParamVisitor visit;
  gpointer user_data;
} Visit;

static gboolean
visit_linear (const Visit *v, const char *prefix, DdpmLinearW *l, GError **error)
{
  if (l->out == 0)
    return TRUE;                   /* absent (no shortcut / no resampler) */
  g_autofree char *wn = g_strconcat (prefix, ".weight", NULL);
  g_autofree char *bn = g_strconcat (prefix, ".bias", NULL);
  int64_t bshape[1] = { l->out };
  if (l->k > 0) {
    int64_t shape[4] = { l->out, l->in, l->k, l->k };
    if (!v->visit (wn, &l->weight, DDPM_PARAM_CONV, 4, shape, v->user_data, error))
      return FALSE;
  } else {
    int64_t shape[2] = { l->out, l->in };
    if (!v->visit (wn, &l->weight, DDPM_PARAM_LINEAR, 2, shape, v->user_data, error))
      return FALSE;
  }
  return v->visit (bn, &l->bias, DDPM_PARAM_VECTOR, 1, bshape, v->user_data, error);
}

static gboolean
visit_norm (const Visit *v, const char *prefix, DdpmNormW *n, GError **error)
{
  if (n->channels == 0)
    return TRUE;                   /* absent (mid attention without group norm) */
  g_autofree char *wn = g_strconcat (prefix, ".weight", NULL);
  g_autofree char *bn = g_strconcat (prefix, ".bias", NULL);
  int64_t shape[1] = { n->channels };
  return v->visit (wn, &n->gamma, DDPM_PARAM_VECTOR, 1, shape, v->user_data, error) &&
         v->visit (bn, &n->beta, DDPM_PARAM_VECTOR, 1, shape, v->user_data, error);
}

#define SUB(buf, prefix, suffix) (g_snprintf (buf, sizeof buf, "%s.%s", prefix, suffix), buf)

static gboolean
visit_resnet (const Visit *v, const char *prefix, DdpmResnetW *r, GError **error)
{
  char buf[160];
  return visit_norm (v, SUB (buf, prefix, "norm1"), &r->norm1, error) &&
         visit_linear (v, SUB (buf, prefix, "conv1"), &r->conv1, error) &&
         visit_linear (v, SUB (buf, prefix, "time_emb_proj"), &r->time_emb_proj, error) &&
         visit_norm (v, SUB (buf, prefix, "norm2"), &r->norm2, error) &&
         visit_linear (v, SUB (buf, prefix, "conv2"), &r->conv2, error) &&
         visit_linear (v, SUB (buf, prefix, "conv_shortcut"), &r->conv_shortcut, error);
}

static gboolean
visit_attention (const Visit *v, const char *prefix, DdpmAttentionW *a, GError **error)
{
  char buf[160];
  return visit_norm (v, SUB (buf, prefix, "group_norm"), &a->group_norm, error) &&
         visit_linear (v, SUB (buf, prefix, "to_q"), &a->to_q, error) &&
         visit_linear (v, SUB (buf, prefix, "to_k"), &a->to_k, error) &&
         visit_linear (v, SUB (buf, prefix, "to_v"), &a->to_v, error) &&
         visit_linear (v, SUB (buf, prefix, "to_out.0"), &a->to_out, error);
}

/* prefix "down_blocks.1"; resampler is "downsamplers" or "upsamplers". */
static gboolean
visit_block (const Visit *v, const char *prefix, DdpmBlockW *b, const char *resampler, GError **error)
{
  char buf[160];
  if (b->has_attention)
    for (int j = 0; j < b->n_layers; j++) {
      g_snprintf (buf, sizeof buf, "%s.attentions.%d", prefix, j);
      if (!visit_attention (v, buf, &b->attentions[j], error))
        return FALSE;
    }
  for (int j = 0; j < b->n_layers; j++) {
    g_snprintf (buf, sizeof buf, "%s.resnets.%d", prefix, j);
    if (!visit_resnet (v, buf, &b->resnets[j], error))
      return FALSE;
  }
  g_snprintf (buf, sizeof buf, "%s.%s.0.conv", prefix, resampler);
  return visit_linear (v, buf, &b->resample, error);
}

gboolean
ddpm_unet_weights_foreach (DdpmUNetWeights *w, const DdpmUNetConfig *cfg, DdpmParamVisitor visit,
                           gpointer user_data, GError **error)
{
  Visit v = { visit, user_data };
  char buf[64];

  if (!visit_linear (&v, "conv_in", &w->conv_in, error) ||
      !visit_linear (&v, "time_embedding.linear_1", &w->time_linear_1, error) ||
      !visit_linear (&v, "time_embedding.linear_2", &w->time_linear_2, error))
    return FALSE;
  for (int i = 0; i < cfg->n_levels; i++) {
    g_snprintf (buf, sizeof buf, "down_blocks.%d", i);
    if (!visit_block (&v, buf, &w->down[i], "downsamplers", error))
      return FALSE;
  }
  for (int i = 0; i < cfg->n_levels; i++) {
    g_snprintf (buf, sizeof buf, "up_blocks.%d", i);
    if (!visit_block (&v, buf, &w->up[i], "upsamplers", error))
      return FALSE;
  }
  if (w->mid_attention.channels > 0 && !visit_attention (&v, "mid_block.attentions.0", &w->mid_attention, error))
    return FALSE;
  return visit_resnet (&v, "mid_block.resnets.0", &w->mid_resnets[0], error) &&
         visit_resnet (&v, "mid_block.resnets.1", &w->mid_resnets[1], error) &&
         visit_norm (&v, "conv_norm_out", &w->conv_norm_out, error) &&
         visit_linear (&v, "conv_out", &w->conv_out, error);
}

static gboolean
count_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape,
               gpointer user_data, GError **error)
{
  (void) name, (void) slot, (void) kind, (void) error;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  *(int64_t *) user_data += n;
  return TRUE;
}

int64_t
ddpm_unet_weights_count (const DdpmUNetConfig *cfg)
{
  DdpmUNetWeights w;
  int64_t total = 0;
  ddpm_unet_weights_layout (&w, cfg);
  ddpm_unet_weights_foreach (&w, cfg, count_visitor, &total, NULL);
  return total;
}
