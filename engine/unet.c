/* unet.c: UNet2DModel forward (diffusers models/unets/unet_2d.py) as a sequence of backend ops.
 *
 * The network is walked by one function in two modes: PLAN records the size of every buffer and the
 * ops' scratch needs; RUN launches the ops on the planned buffers. Keeping a single walk means the plan
 * can never disagree with the forward.
 *
 * Buffers (all activations, B images):
 *   skips[k]    the skip connections, each exactly sized, pushed in the down path, popped in the up path;
 *               the down path computes in place in the skip it is about to push.
 *   cur         the hidden state in the mid and up paths.
 *   cat         [hidden, skip] concatenation feeding an up-block resnet.
 *   skip_cat[k] at batch 1 (up to 256 MiB of extra heads): skip k's own concatenation buffer, [hidden,
 *               skip k] contiguous, with skips[k] inside it. The op before the up resnet that takes skip k
 *               writes the hidden state straight into its head, so no concatenation is copied (12 launches
 *               per cifar10-32 forward).
 *   tmp1, tmp2  resnet / attention / head temporaries.
 *   temb_*      time embedding (B, C0) -> (B, D) -> (B, D); tproj (B, 2 * max out) per resnet.
 * Outside the arena, from load to free: the time table (see ddpm_unet_prepare_timesteps). */
#include "unet.h"

#include <string.h>
#include <unistd.h>

#define MAX_SKIPS (1 + DDPM_MAX_LEVELS * (DDPM_MAX_LAYERS_PER_BLOCK + 1))
#define MAX_RESNETS (2 * DDPM_MAX_LEVELS * (DDPM_MAX_LAYERS_PER_BLOCK + 1) + 2)
#define ALIGN_BYTES 256
#define CAT_RESIDENT_MAX_BYTES ((size_t) 256 << 20)   /* see ddpm_unet_plan */
#define TIME_TABLE_MAX_BYTES ((size_t) 64 << 20)      /* see alloc_time_table */

typedef enum { WALK_PLAN, WALK_RUN } WalkMode;

struct DdpmUNet {
  const DdpmUNetConfig *cfg;
  DdpmBackend *be;
  DdpmUNetWeights w;               /* backend copy: pointers are backend handles */
  int n_uploaded;                  /* parameter slots holding backend handles */

  /* Every resnet's time_emb_proj stacked into one linear layer (rows in walk order), so a forward projects
   * the time embedding with one launch instead of one per resnet; resnet i reads columns
   * tproj_offset[i] .. + out of tproj_all (B, temb_proj_all.out). Weight NULL with scale_shift, whose
   * GroupNorm takes its (B, 2C) projection contiguous: those resnets project one by one. */
  DdpmLinearW temb_proj_all;
  int tproj_offset[MAX_RESNETS];
  int n_resnets;
  /* The time table (see ddpm_unet_prepare_timesteps), or NULL: act (n_timesteps, temb_proj_all.out), tproj_all's
   * row of each timestep prepared so far, in the order they were prepared; time_row (device f32, n_timesteps)
   * and time_row_host: timestep t's row, -1 until prepared. */
  void *time_table;
  float *time_row;
  float *time_row_host;
  int n_timesteps, n_time_rows;

  int B, H, W;                     /* planned shape; B = 0 before the first plan */
  void *arena;
  size_t act_size;

  /* Sizes in elements, recorded by PLAN. */
  size_t skip_elems[MAX_SKIPS];
  size_t skip_head_elems[MAX_SKIPS];   /* the hidden state that precedes skip k in its concatenation */
  int n_skips;
  gboolean cat_resident;           /* skips live in skip_cat (batch 1; see ddpm_unet_plan) */
  size_t work_elems;               /* max over every use of cur / cat / tmp1 / tmp2 */
  size_t tproj_elems;
  size_t scratch_bytes;

  void *skips[MAX_SKIPS];
  void *skip_cat[MAX_SKIPS];       /* cat_resident: [head | skip k]; else NULL */
  void *cur, *cat, *tmp1, *tmp2;
  void *temb_sin, *temb_hidden, *temb, *tproj, *tproj_all;
  void *neg_half;                  /* constant -0.5 of (B, Cin, H, W), for center_input_sample */

  /* Walk state. */
  WalkMode mode;
  int sp;                          /* skip stack pointer */
  int ri;                          /* resnets walked so far */
};

size_t
ddpm_backend_act_size (const DdpmBackend *be)
{
  return be->precision == DDPM_PRECISION_FP16 || be->precision == DDPM_PRECISION_BF16 ? 2 : 4;
}

/* ---- weights upload ---------------------------------------------------------------------------- */

/* Uploads count slots; on failure frees exactly those already uploaded (visit order is fixed). */
typedef struct {
  DdpmBackend *be;
  int done;                        /* slots uploaded so far */
  int limit;                       /* free pass: slots to free */
} UploadState;

static gboolean
upload_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape,
                gpointer user_data, GError **error)
{
  UploadState *st = user_data;
  void *handle = st->be->ops->upload_param (st->be, *slot, kind, ndim, shape, error);
  if (handle == NULL)
    {
      g_prefix_error (error, "uploading %s: ", name);
      return FALSE;
    }
  *slot = handle;
  st->done++;
  return TRUE;
}

static gboolean
free_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape,
              gpointer user_data, GError **error)
{
  UploadState *st = user_data;
  if (st->done >= st->limit)
    return FALSE;                  /* stop: the rest are host pointers */
  st->be->ops->free (st->be, *slot);
  *slot = NULL;
  st->done++;
  return TRUE;
}

static void
free_uploaded (DdpmUNet *u, int count)
{
  UploadState st = { u->be, 0, count };
  ddpm_unet_weights_foreach (&u->w, u->cfg, free_visitor, &st, NULL);
}

/* The resnets in the order walk() visits them: down blocks, the two mid resnets, up blocks. */
static int
resnets_in_walk_order (const DdpmUNetWeights *w, const DdpmUNetConfig *cfg, const DdpmResnetW **out)
{
  int n = 0;
  for (int i = 0; i < cfg->n_levels; i++)
    for (int j = 0; j < w->down[i].n_layers; j++)
      out[n++] = &w->down[i].resnets[j];
  out[n++] = &w->mid_resnets[0];
  out[n++] = &w->mid_resnets[1];
  for (int i = 0; i < cfg->n_levels; i++)
    for (int j = 0; j < w->up[i].n_layers; j++)
      out[n++] = &w->up[i].resnets[j];
  return n;
}

/* Uploads the host time_emb_proj weights of every resnet stacked into u->temb_proj_all. Each output row
 * keeps its own weights and bias, so the math per value is unchanged. Not with scale_shift, and not on the
 * CPU: a launch costs it nothing, and OpenBLAS sums a (batch, 5000)-wide GEMM in an order that depends on
 * the batch, where the per-layer ones give every image the same bits alone or in a batch. */
static gboolean
stack_time_projections (DdpmUNet *u, const DdpmModel *model, GError **error)
{
  const DdpmResnetW *rs[MAX_RESNETS];
  u->n_resnets = resnets_in_walk_order (&model->weights, u->cfg, rs);
  if (u->cfg->scale_shift || strcmp (u->be->ops->name, "cpu") == 0)
    return TRUE;
  const int D = u->cfg->time_embedding_dim;
  int rows = 0;
  for (int i = 0; i < u->n_resnets; i++)
    {
      g_assert (rs[i]->time_emb_proj.in == D);
      u->tproj_offset[i] = rows;
      rows += rs[i]->time_emb_proj.out;
    }
  float *wt = g_new (float, (size_t) rows * D), *bias = g_new (float, rows);
  for (int i = 0; i < u->n_resnets; i++)
    {
      const DdpmLinearW *l = &rs[i]->time_emb_proj;
      memcpy (wt + (size_t) u->tproj_offset[i] * D, l->weight, (size_t) l->out * D * sizeof (float));
      memcpy (bias + u->tproj_offset[i], l->bias, (size_t) l->out * sizeof (float));
    }
  DdpmBackend *be = u->be;
  const int64_t wshape[2] = { rows, D }, bshape[1] = { rows };
  u->temb_proj_all = (DdpmLinearW) { NULL, NULL, rows, D, 0 };
  u->temb_proj_all.weight = be->ops->upload_param (be, wt, DDPM_PARAM_LINEAR, 2, wshape, error);
  if (u->temb_proj_all.weight != NULL)
    u->temb_proj_all.bias = be->ops->upload_param (be, bias, DDPM_PARAM_VECTOR, 1, bshape, error);
  g_free (wt);
  g_free (bias);
  if (u->temb_proj_all.bias == NULL)
    {
      g_prefix_error (error, "uploading the stacked time_emb_proj weights (%d x %d): ", rows, D);
      return FALSE;
    }
  return TRUE;
}

/* The time-embedding chain on M rows of timesteps t (f32, M): sinusoid (M, C0) into sin, the MLP into hidden and
 * temb (M, D), then, where there is a stacked projection, every resnet's projection of it into proj (M,
 * temb_proj_all.out). Both a forward (M = B) and ddpm_unet_prepare_timesteps (M = new timesteps, proj = table
 * rows) run it, so a table row is what the forward would compute. */
static void
time_chain (DdpmUNet *u, const float *t, void *sin, void *hidden, void *temb, void *proj, int M)
{
  DdpmBackend *be = u->be;
  const DdpmUNetConfig *cfg = u->cfg;
  be->ops->timestep_embedding (be, t, sin, M, cfg->block_out_channels[0], cfg->flip_sin_to_cos,
                               (float) cfg->freq_shift);
  be->ops->linear (be, &u->w.time_linear_1, sin, hidden, M, FALSE);
  be->ops->linear (be, &u->w.time_linear_2, hidden, temb, M, TRUE);
  if (u->temb_proj_all.weight != NULL)
    be->ops->linear (be, &u->temb_proj_all, temb, proj, M, TRUE);
}

/* The time table's memory (DdpmBackend.time_table), empty: rows are computed when their timesteps are
 * prepared. Not where the backend does not ask for it, without a stacked projection (scale_shift), over
 * TIME_TABLE_MAX_BYTES (cifar10-32 11 MB and celebahq-256 20 MB at fp16 for 1000 timesteps) or when an
 * allocation fails: then each forward runs the embedding chain. */
static void
alloc_time_table (DdpmUNet *u, int n_timesteps)
{
  DdpmBackend *be = u->be;
  const int cols = u->temb_proj_all.out;
  if (!be->time_table || be->ops->gather_rows == NULL || u->temb_proj_all.weight == NULL || n_timesteps < 1
      || (double) n_timesteps * cols * u->act_size > (double) TIME_TABLE_MAX_BYTES)
    return;
  u->time_table = be->ops->alloc_act (be, (size_t) n_timesteps * cols, NULL);
  u->time_row = be->ops->alloc_f32 (be, n_timesteps, NULL);
  if (u->time_table == NULL || u->time_row == NULL)
    {
      if (u->time_table != NULL)
        be->ops->free (be, u->time_table);
      if (u->time_row != NULL)
        be->ops->free (be, u->time_row);
      u->time_table = NULL;
      u->time_row = NULL;
      return;
    }
  u->n_timesteps = n_timesteps;
  u->time_row_host = g_new (float, n_timesteps);
  for (int i = 0; i < n_timesteps; i++)
    u->time_row_host[i] = -1.0f;
  be->ops->to_device (be, u->time_row, u->time_row_host, n_timesteps * sizeof (float));
}

/* Takes back the rows that ddpm_unet_prepare_timesteps gave t[0..n) but did not compute. */
static void
forget_new_rows (DdpmUNet *u, const int *t, int n)
{
  for (int i = 0; i < n; i++)
    if (u->time_row_host[t[i]] >= (float) u->n_time_rows)
      u->time_row_host[t[i]] = -1.0f;
}

gboolean
ddpm_unet_prepare_timesteps (DdpmUNet *u, const int *t, int n, GError **error)
{
  if (u->time_table == NULL)
    return TRUE;
  DdpmBackend *be = u->be;
  const DdpmUNetConfig *cfg = u->cfg;
  const int C0 = cfg->block_out_channels[0], D = cfg->time_embedding_dim, cols = u->temb_proj_all.out;
  /* the new timesteps, each once, as the rows they will take */
  float *t_new = g_new (float, MAX (n, 1));
  int m = 0;
  for (int i = 0; i < n; i++)
    {
      if (t[i] < 0 || t[i] >= u->n_timesteps)
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "timestep %d is outside [0, %d)", t[i], u->n_timesteps);
          forget_new_rows (u, t, i);
          g_free (t_new);
          return FALSE;
        }
      if (u->time_row_host[t[i]] < 0.0f)
        {
          u->time_row_host[t[i]] = (float) (u->n_time_rows + m);
          t_new[m++] = (float) t[i];
        }
    }
  gboolean ok = TRUE;
  if (m > 0)
    {
      float *t_dev = be->ops->alloc_f32 (be, m, error);
      void *sin = t_dev ? be->ops->alloc_act (be, (size_t) m * C0, error) : NULL;
      void *hidden = sin ? be->ops->alloc_act (be, (size_t) m * D, error) : NULL;
      void *temb = hidden ? be->ops->alloc_act (be, (size_t) m * D, error) : NULL;
      ok = temb != NULL;
      if (ok)
        {
          /* the forward's own chain on m rows, the projection writing straight into the table's next m rows */
          be->ops->to_device (be, t_dev, t_new, m * sizeof (float));
          void *rows = (char *) u->time_table + (size_t) u->n_time_rows * cols * u->act_size;
          time_chain (u, t_dev, sin, hidden, temb, rows, m);
          be->ops->to_device (be, u->time_row, u->time_row_host, u->n_timesteps * sizeof (float));
          u->n_time_rows += m;
        }
      else
        {
          g_prefix_error (error, "computing the time embedding of %d timesteps: ", m);
          forget_new_rows (u, t, n);
        }
      void *bufs[] = { t_dev, sin, hidden, temb };
      for (size_t i = 0; i < G_N_ELEMENTS (bufs); i++)
        if (bufs[i] != NULL)
          be->ops->free (be, bufs[i]);
    }
  g_free (t_new);
  return ok;
}

DdpmUNet *
ddpm_unet_new (const DdpmModel *model, DdpmBackend *be, GError **error)
{
  DdpmUNet *u = g_new0 (DdpmUNet, 1);
  u->cfg = &model->config;
  u->be = be;
  u->act_size = ddpm_backend_act_size (be);
  /* Copy the host struct (dimensions + host pointers), then swap each pointer for a backend handle. */
  u->w = model->weights;
  UploadState st = { be, 0, 0 };
  if (!ddpm_unet_weights_foreach (&u->w, u->cfg, upload_visitor, &st, error))
    {
      free_uploaded (u, st.done);
      g_free (u);
      return NULL;
    }
  u->n_uploaded = st.done;
  if (!stack_time_projections (u, model, error))
    {
      ddpm_unet_free (u);
      return NULL;
    }
  alloc_time_table (u, model->schedule.num_train_timesteps);
  return u;
}

static void
free_activations (DdpmUNet *u)
{
  if (u->arena != NULL)
    u->be->ops->free (u->be, u->arena);
  u->arena = NULL;
  u->B = u->H = u->W = 0;
}

void
ddpm_unet_forget_plan (DdpmUNet *u)
{
  free_activations (u);
}

void
ddpm_unet_free (DdpmUNet *u)
{
  if (u == NULL)
    return;
  free_activations (u);
  free_uploaded (u, u->n_uploaded);
  if (u->temb_proj_all.weight != NULL)
    u->be->ops->free (u->be, u->temb_proj_all.weight);
  if (u->temb_proj_all.bias != NULL)
    u->be->ops->free (u->be, u->temb_proj_all.bias);
  if (u->time_table != NULL)
    u->be->ops->free (u->be, u->time_table);
  if (u->time_row != NULL)
    u->be->ops->free (u->be, u->time_row);
  g_free (u->time_row_host);
  g_free (u);
}

/* ---- op wrappers: RUN launches, PLAN records sizes --------------------------------------------- */

static void
need_work (DdpmUNet *u, size_t elems)
{
  u->work_elems = MAX (u->work_elems, elems);
}

static void
need_scratch (DdpmUNet *u, size_t bytes)
{
  u->scratch_bytes = MAX (u->scratch_bytes, bytes);
}

/* Pushes a skip of (C, h, w) and returns its buffer (NULL while planning). */
static void *
push_skip (DdpmUNet *u, int C, int h, int w)
{
  g_assert (u->sp < MAX_SKIPS);
  if (u->mode == WALK_PLAN)
    {
      u->skip_elems[u->sp] = (size_t) u->B * C * h * w;
      u->n_skips = u->sp + 1;
    }
  return u->skips[u->sp++];
}

/* Pops the newest skip; head_elems: the hidden state concatenated before it. */
static void *
pop_skip (DdpmUNet *u, size_t head_elems)
{
  g_assert (u->sp > 0);
  if (u->mode == WALK_PLAN)
    u->skip_head_elems[u->sp - 1] = head_elems;
  return u->skips[--u->sp];
}

/* Where the op before the next up resnet writes the hidden state: the head of the next skip's
 * concatenation buffer where skips live there, else cur. */
static void *
next_hidden (DdpmUNet *u)
{
  return u->cat_resident && u->sp > 0 ? u->skip_cat[u->sp - 1] : u->cur;
}

static void
conv (DdpmUNet *u, const DdpmLinearW *w, const void *x, void *y, int h, int wd, int stride, const int pad[4],
      const DdpmConvEpilogue *epi)
{
  DdpmBackend *be = u->be;
  if (u->mode == WALK_PLAN)
    {
      need_scratch (u, be->ops->conv2d_scratch (be, u->B, w->in, h, wd, w->out, w->k, stride, pad));
      return;
    }
  be->ops->conv2d (be, w, x, y, u->B, h, wd, stride, pad, epi);
}

static const int PAD_SAME[4] = { 1, 1, 1, 1 };
static const int PAD_NONE[4] = { 0, 0, 0, 0 };

/* A 3x3 'same' convolution with float32 at one end (the model's conv_in reading the sample x_f32, conv_out
 * writing eps y_f32): one backend op where it has conv2d_f32_ends and that takes the shape, else the cast
 * through act_tmp (the f32 end's size) and the convolution. */
static void
conv_f32_end (DdpmUNet *u, const DdpmLinearW *w, const float *x_f32, const void *x, void *y, float *y_f32,
              void *act_tmp, int h, int wd)
{
  DdpmBackend *be = u->be;
  const size_t n_x = (size_t) u->B * w->in * h * wd, n_y = (size_t) u->B * w->out * h * wd;
  if (u->mode == WALK_RUN && be->ops->conv2d_f32_ends != NULL
      && be->ops->conv2d_f32_ends (be, w, x_f32 != NULL ? (const void *) x_f32 : x, x_f32 != NULL,
                                   y_f32 != NULL ? (void *) y_f32 : y, y_f32 != NULL, u->B, h, wd, 1, PAD_SAME, NULL))
    return;
  if (u->mode == WALK_RUN && x_f32 != NULL)
    be->ops->cast_in (be, x_f32, act_tmp, n_x);
  conv (u, w, x_f32 != NULL ? act_tmp : x, x_f32 != NULL ? y : act_tmp, h, wd, 1, PAD_SAME, NULL);
  if (u->mode == WALK_RUN && y_f32 != NULL)
    be->ops->cast_out (be, act_tmp, y_f32, n_y);
}

static void
group_norm (DdpmUNet *u, const DdpmNormW *w, const void *x, void *y, int C, int hw, int groups,
            const void *scale_shift, gboolean silu)
{
  if (u->mode == WALK_RUN)
    u->be->ops->group_norm (u->be, w, x, y, u->B, C, hw, groups, (float) u->cfg->norm_eps, scale_shift, silu);
}

/* GroupNorm (+ scale_shift, SiLU) of x, then a 3x3 convolution that is the only reader of the normalised tensor:
 * one backend op where the backend fuses them (group_norm_conv2d), else the two. normed (B, Cin, h, w) is the
 * work memory the two-op path writes; it may alias x. */
static void
norm_conv (DdpmUNet *u, const DdpmNormW *nw, const void *scale_shift, const DdpmLinearW *w, const void *x,
           void *normed, void *y, int h, int wd, const DdpmConvEpilogue *epi)
{
  DdpmBackend *be = u->be;
  const int G = u->cfg->norm_num_groups;
  if (u->mode == WALK_RUN && be->ops->group_norm_conv2d != NULL)
    {
      be->ops->group_norm_conv2d (be, nw, G, (float) u->cfg->norm_eps, scale_shift, TRUE, w, x, normed, y, u->B, h,
                                  wd, 1, PAD_SAME, epi);
      return;
    }
  group_norm (u, nw, x, normed, w->in, h * wd, G, scale_shift, TRUE);
  conv (u, w, normed, y, h, wd, 1, PAD_SAME, epi);
}

/* Nearest 2x upsampling of x (B, Cin, h, w), then a 3x3 convolution of it into y (B, Cout, 2h, 2w): one
 * backend op where the backend fuses them (upsample_conv2d), else the two. upsampled (B, Cin, 2h, 2w) is the
 * work memory the two-op path writes; y may alias x. */
static void
upsample_conv (DdpmUNet *u, const DdpmLinearW *w, const void *x, void *upsampled, void *y, int h, int wd)
{
  DdpmBackend *be = u->be;
  if (u->mode == WALK_RUN && be->ops->upsample_conv2d != NULL)
    {
      be->ops->upsample_conv2d (be, w, x, upsampled, y, u->B, h, wd, PAD_SAME, NULL);
      return;
    }
  if (u->mode == WALK_RUN)
    be->ops->upsample_nearest2x (be, x, upsampled, u->B, w->in, h, wd);
  conv (u, w, upsampled, y, 2 * h, 2 * wd, 1, PAD_SAME, NULL);
}

/* ResnetBlock2D (diffusers models/resnet.py): out = (shortcut(x) + conv2(act(GN2(conv1(act(GN1(x))) + proj(temb))))) * scale.
 * x (B, in, h, w) -> out (B, out, h, w); out must not alias x. Uses tmp1, tmp2, tproj. The time projection
 * (without scale_shift), the shortcut and the scale ride in the convolutions' epilogues (DdpmConvEpilogue). */
static void
resnet (DdpmUNet *u, const DdpmResnetW *r, const void *x, void *out, int h, int wd, double output_scale_factor)
{
  DdpmBackend *be = u->be;
  const int hw = h * wd;
  if (u->mode == WALK_PLAN)
    {
      need_work (u, (size_t) u->B * MAX (r->in, r->out) * hw);
      if (u->temb_proj_all.weight == NULL)
        u->tproj_elems = MAX (u->tproj_elems, (size_t) u->B * r->time_emb_proj.out);
    }
  g_assert (u->mode == WALK_PLAN || out != x);
  g_assert (u->ri < u->n_resnets);
  const int ri = u->ri++;
  /* the time projection: a slice of tproj_all (projected once per forward), else this resnet's own */
  DdpmConvEpilogue add_temb = { NULL, NULL, 0, 1.0f };
  if (u->temb_proj_all.weight != NULL)
    {
      add_temb.channel_bias = u->mode == WALK_RUN ? (char *) u->tproj_all + (size_t) u->tproj_offset[ri] * u->act_size
                                                  : NULL;
      add_temb.channel_bias_stride = u->temb_proj_all.out;
    }
  else if (u->mode == WALK_RUN)
    {
      be->ops->linear (be, &r->time_emb_proj, u->temb, u->tproj, u->B, TRUE);
      add_temb.channel_bias = u->cfg->scale_shift ? NULL : u->tproj;
    }
  norm_conv (u, &r->norm1, NULL, &r->conv1, x, u->tmp1, u->tmp2, h, wd, &add_temb);
  const void *shortcut = x;
  if (r->conv_shortcut.weight != NULL)
    {
      conv (u, &r->conv_shortcut, x, u->tmp1, h, wd, 1, PAD_NONE, NULL);   /* tmp1 is free after conv1 */
      shortcut = u->tmp1;
    }
  /* GN2 in place on conv1's output (nothing else reads it) */
  const DdpmConvEpilogue add_shortcut = { NULL, shortcut, 0, (float) (1.0 / output_scale_factor) };
  norm_conv (u, &r->norm2, u->cfg->scale_shift ? u->tproj : NULL, &r->conv2, u->tmp2, u->tmp2, out, h, wd,
             &add_shortcut);
}

/* Attention block (diffusers attention_processor.py, residual connection on): x (B, C, h, w) updated in
 * place: x = (to_out(MHA(GN(x))) + x) / rescale. Down/up attentions normalise with norm_num_groups, the
 * mid one with attn_norm_num_groups. Uses tmp1 and the backend's attention scratch. */
static void
attention (DdpmUNet *u, const DdpmAttentionW *a, void *x, int hw, int groups, double rescale)
{
  DdpmBackend *be = u->be;
  const int C = a->channels;
  if (u->mode == WALK_PLAN)
    {
      need_work (u, (size_t) u->B * C * hw);
      need_scratch (u, be->ops->attention_scratch (be, u->B, C, hw, a->heads));
      return;
    }
  if (a->group_norm.gamma != NULL)
    group_norm (u, &a->group_norm, x, u->tmp1, C, hw, groups, NULL, FALSE);
  else /* diffusers' mid attention has no norm with scale_shift and attn_norm_num_groups null: copy x */
    be->ops->concat_channels (be, x, C, x, 0, u->tmp1, u->B, hw);
  be->ops->attention (be, a, u->tmp1, x, x, u->B, C, hw, a->heads, (float) (1.0 / rescale));
}

/* ---- the walk ---------------------------------------------------------------------------------- */

static void
walk (DdpmUNet *u, const float *x_in, const float *t, float *eps)
{
  DdpmBackend *be = u->be;
  const DdpmUNetConfig *cfg = u->cfg;
  const DdpmUNetWeights *w = &u->w;
  const int B = u->B;
  int h = u->H, wd = u->W;
  const int C0 = cfg->block_out_channels[0];
  const int levels = cfg->n_levels;
  u->sp = 0;
  u->ri = 0;

  /* 1. time embedding (B, C0) -> (B, D), then every resnet's projection of it: looked up, or computed */
  if (u->mode == WALK_RUN && u->time_table != NULL)
    be->ops->gather_rows (be, u->time_table, u->time_row, u->n_timesteps, t, u->tproj_all, B, u->temb_proj_all.out);
  else if (u->mode == WALK_RUN)
    time_chain (u, t, u->temb_sin, u->temb_hidden, u->temb, u->tproj_all, B);

  /* 2. input: cast (+ centre), conv_in into skip 0 */
  size_t n_in = (size_t) B * cfg->in_channels * h * wd;
  need_work (u, n_in);
  void *h0 = push_skip (u, C0, h, wd);
  if (cfg->center_input_sample)
    {
      if (u->mode == WALK_RUN)
        {
          be->ops->cast_in (be, x_in, u->tmp2, n_in);
          be->ops->add_scaled (be, u->tmp2, u->neg_half, u->tmp2, n_in, 2.0f); /* 2 (x - 0.5) = 2x - 1 */
        }
      conv (u, &w->conv_in, u->tmp2, h0, h, wd, 1, PAD_SAME, NULL);
    }
  else
    conv_f32_end (u, &w->conv_in, x_in, NULL, h0, NULL, u->tmp2, h, wd);

  /* 3. down path: each resnet/attention result and each downsample is a skip */
  void *hidden = h0;
  for (int i = 0; i < levels; i++)
    {
      const DdpmBlockW *blk = &w->down[i];
      for (int j = 0; j < blk->n_layers; j++)
        {
          void *dst = push_skip (u, blk->resnets[j].out, h, wd);
          resnet (u, &blk->resnets[j], hidden, dst, h, wd, 1.0);
          if (blk->has_attention)
            attention (u, &blk->attentions[j], dst, h * wd, cfg->norm_num_groups, 1.0);
          hidden = dst;
        }
      if (blk->resample.weight != NULL)
        {
          /* downsample_padding 0: pad one column right and one row bottom; 1: symmetric. */
          static const int pad0[4] = { 0, 0, 1, 1 };
          const int *pad = cfg->downsample_padding == 0 ? pad0 : PAD_SAME;
          void *dst = push_skip (u, blk->resample.out, h / 2, wd / 2);
          conv (u, &blk->resample, hidden, dst, h, wd, 2, pad, NULL);
          h /= 2;
          wd /= 2;
          hidden = dst;
        }
    }

  /* 4. mid: resnet, attention, resnet (all scaled by mid_block_scale_factor) */
  const int Cmid = cfg->block_out_channels[levels - 1];
  need_work (u, (size_t) B * Cmid * h * wd);
  resnet (u, &w->mid_resnets[0], hidden, u->cur, h, wd, cfg->mid_block_scale_factor);
  if (cfg->add_attention)
    attention (u, &w->mid_attention, u->cur, h * wd, cfg->attn_norm_num_groups, cfg->mid_block_scale_factor);
  /* out must not alias x: the second resnet writes the next concatenation's head (cat_resident), else cat */
  void *hid = u->cat_resident ? next_hidden (u) : u->cat;      /* the hidden state from here on */
  void *cat_work = u->cur;                                      /* the concatenation, when it is copied */
  resnet (u, &w->mid_resnets[1], u->cur, hid, h, wd, cfg->mid_block_scale_factor);

  /* 5. up path: each resnet eats one skip, concatenated after the hidden state (already in place where
   * skips live in their concatenation buffers) */
  int C_cur = Cmid;
  for (int i = 0; i < levels; i++)
    {
      const DdpmBlockW *blk = &w->up[i];
      for (int j = 0; j < blk->n_layers; j++)
        {
          const DdpmResnetW *r = &blk->resnets[j];
          const int C_skip = r->in - C_cur;
          void *skip = pop_skip (u, (size_t) B * C_cur * h * wd);
          need_work (u, (size_t) B * r->in * h * wd);
          void *cat = hid;
          if (!u->cat_resident)
            {
              cat = cat_work;
              if (u->mode == WALK_RUN)
                be->ops->concat_channels (be, hid, C_cur, skip, C_skip, cat, B, h * wd);
            }
          else
            g_assert (u->mode == WALK_PLAN || (char *) skip == (char *) hid + (size_t) B * C_cur * h * wd * u->act_size);
          /* out: the next concatenation's head, else back where the hidden state was (copied into cat) */
          void *out = u->cat_resident ? next_hidden (u) : hid;
          resnet (u, r, cat, out, h, wd, 1.0);
          hid = out;
          C_cur = r->out;
          if (blk->has_attention)
            attention (u, &blk->attentions[j], hid, h * wd, cfg->norm_num_groups, 1.0);
        }
      if (blk->resample.weight != NULL)
        {
          /* in place: the next concatenation's head is sized for the upsampled state */
          need_work (u, (size_t) B * C_cur * (2 * h) * (2 * wd));
          upsample_conv (u, &blk->resample, hid, u->tmp1, hid, h, wd);
          h *= 2;
          wd *= 2;
        }
    }
  g_assert (u->sp == 0);

  /* 6. head: GN + SiLU, conv_out, cast to f32 */
  group_norm (u, &w->conv_norm_out, hid, u->tmp1, C_cur, h * wd, cfg->norm_num_groups, NULL, TRUE);
  need_work (u, (size_t) B * cfg->out_channels * h * wd);
  conv_f32_end (u, &w->conv_out, NULL, u->tmp1, NULL, eps, u->tmp2, h, wd);
}

/* ---- planning ---------------------------------------------------------------------------------- */

/* Bytes the planned buffers may take. The CPU backend's buffers are host memory: more than the machine's
 * physical memory can only end in swapping or the OOM killer, so that is refused up front. Device
 * backends report their own out-of-memory; they get a fixed cap so that no size computed here can
 * overflow and no absurd request reaches the driver. */
static double
plan_limit_bytes (const DdpmBackend *be, const char **what)
{
  const double cap = 1099511627776.0;                  /* 1 TiB */
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  if (strcmp (be->ops->name, "cpu") == 0)
    {
      long pages = sysconf (_SC_PHYS_PAGES), page = sysconf (_SC_PAGESIZE);
      if (pages > 0 && page > 0)
        {
          *what = "the physical memory";
          return MIN ((double) pages * (double) page, cap);
        }
    }
#endif
  *what = "DDPM_LIMIT_PLAN_BYTES";
  return cap;
}

/* Refuses sizes the backends cannot index or memory cannot hold, before anything is allocated. */
static gboolean
check_plan_limits (DdpmUNet *u, int batch, int height, int width, GError **error)
{
  const DdpmUNetConfig *cfg = u->cfg;
  const int64_t pixels = (int64_t) height * width;
  if (pixels > DDPM_LIMIT_IMAGE_PIXELS)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT,
                   "image size %dx%d is %" G_GINT64_FORMAT " pixels, over the limit of %" G_GINT64_FORMAT
                   " (DDPM_LIMIT_IMAGE_PIXELS)", width, height, pixels, (int64_t) DDPM_LIMIT_IMAGE_PIXELS);
      return FALSE;
    }
  /* The widest buffer is an up-block concatenation of at most twice the widest level; the arena holds a
   * few dozen buffers no wider than that. Estimated in double, so it cannot overflow. */
  int cmax = MAX (cfg->in_channels, cfg->out_channels);
  for (int i = 0; i < cfg->n_levels; i++)
    cmax = MAX (cmax, cfg->block_out_channels[i]);
  const double widest = (double) batch * 2.0 * cmax * (double) pixels * (double) u->act_size;
  const char *what;
  const double limit = plan_limit_bytes (u->be, &what);
  if (widest > limit)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT,
                   "batch %d at %dx%d needs buffers of %.1f GiB each, over %s (%.1f GiB)", batch, width, height,
                   widest / 1073741824.0, what, limit / 1073741824.0);
      return FALSE;
    }
  return TRUE;
}

static size_t
align_up (size_t n)
{
  return (n + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES;
}

gboolean
ddpm_unet_plan (DdpmUNet *u, int batch, int height, int width, GError **error)
{
  if (u->B == batch && u->H == height && u->W == width)
    return TRUE;
  const DdpmUNetConfig *cfg = u->cfg;
  const int multiple = 1 << (cfg->n_levels - 1);
  if (batch < 1 || height < multiple || width < multiple || height % multiple != 0 || width % multiple != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                   "image size %dx%d (batch %d) is not supported: height and width must be positive multiples of %d",
                   width, height, batch, multiple);
      return FALSE;
    }
  if (!check_plan_limits (u, batch, height, width, error))
    return FALSE;
  free_activations (u);

  /* PLAN walk: sizes only. */
  u->B = batch;
  u->H = height;
  u->W = width;
  u->n_skips = 0;
  u->work_elems = 0;
  u->tproj_elems = 0;
  u->scratch_bytes = 0;
  memset (u->skips, 0, sizeof u->skips);
  memset (u->skip_cat, 0, sizeof u->skip_cat);
  u->cat_resident = FALSE;
  u->cur = u->cat = u->tmp1 = u->tmp2 = NULL;
  u->mode = WALK_PLAN;
  walk (u, NULL, NULL, NULL);

  /* Lay out one arena. */
  const size_t es = u->act_size;
  const int D = cfg->time_embedding_dim;
  const size_t n_in = (size_t) batch * cfg->in_channels * height * width;
  size_t sizes[MAX_SKIPS + 12];
  void **slots[MAX_SKIPS + 12];
  int n = 0;
  /* batch 1: every skip inside its own concatenation buffer [head | skip], where every head keeps the skip
   * 16-byte aligned (the vector kernels' requirement) and the heads take at most CAT_RESIDENT_MAX_BYTES (what
   * they save is a launch per up resnet, which matters at small sizes; a large image keeps its memory) */
  size_t head_bytes = 0;
  u->cat_resident = batch == 1;
  for (int k = 0; k < u->n_skips; k++)
    {
      head_bytes += align_up (u->skip_head_elems[k] * es);
      if (u->skip_head_elems[k] * es % 16 != 0)
        u->cat_resident = FALSE;
    }
  if (head_bytes > CAT_RESIDENT_MAX_BYTES)
    u->cat_resident = FALSE;
  for (int k = 0; k < u->n_skips; k++)
    {
      sizes[n] = u->skip_elems[k] + (u->cat_resident ? u->skip_head_elems[k] : 0);
      slots[n++] = u->cat_resident ? &u->skip_cat[k] : &u->skips[k];
    }
  void **work[] = { &u->cur, &u->cat, &u->tmp1, &u->tmp2 };
  for (int k = 0; k < 4; k++)
    {
      /* cat only holds copied concatenations and the mid block's output, which cat_resident puts elsewhere */
      sizes[n] = work[k] == &u->cat && u->cat_resident ? 0 : u->work_elems;
      slots[n++] = work[k];
    }
  sizes[n] = (size_t) batch * cfg->block_out_channels[0];
  slots[n++] = &u->temb_sin;
  sizes[n] = (size_t) batch * D;
  slots[n++] = &u->temb_hidden;
  sizes[n] = (size_t) batch * D;
  slots[n++] = &u->temb;
  sizes[n] = u->tproj_elems;
  slots[n++] = &u->tproj;
  sizes[n] = (size_t) batch * u->temb_proj_all.out;
  slots[n++] = &u->tproj_all;
  sizes[n] = cfg->center_input_sample ? n_in : 0;
  slots[n++] = &u->neg_half;
  g_assert (n <= (int) G_N_ELEMENTS (sizes));

  size_t total = 0;
  for (int k = 0; k < n; k++)
    total += align_up (sizes[k] * es);
  const char *what;
  const double limit = plan_limit_bytes (u->be, &what);
  if ((double) total + (double) u->scratch_bytes > limit)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT,
                   "batch %d at %dx%d needs %.1f GiB of activations and scratch, over %s (%.1f GiB)", batch, width,
                   height, ((double) total + (double) u->scratch_bytes) / 1073741824.0, what, limit / 1073741824.0);
      u->B = u->H = u->W = 0;
      return FALSE;
    }
  u->arena = u->be->ops->alloc_act (u->be, total / es, error);
  if (u->arena == NULL)
    {
      g_prefix_error (error, "planning activations for batch %d at %dx%d (%.0f MiB): ", batch, width, height,
                      total / 1048576.0);
      u->B = u->H = u->W = 0;
      return FALSE;
    }
  size_t off = 0;
  for (int k = 0; k < n; k++)
    {
      *slots[k] = sizes[k] ? (char *) u->arena + off : NULL;
      off += align_up (sizes[k] * es);
    }
  for (int k = 0; u->cat_resident && k < u->n_skips; k++)
    u->skips[k] = (char *) u->skip_cat[k] + u->skip_head_elems[k] * es;

  if (cfg->center_input_sample)
    {
      /* Fill the -0.5 constant through an f32 staging buffer (planning time, not the step loop). */
      float *host = g_new (float, n_in);
      for (size_t i = 0; i < n_in; i++)
        host[i] = -0.5f;
      float *staging = u->be->ops->alloc_f32 (u->be, n_in, error);
      if (staging == NULL)
        {
          g_free (host);
          free_activations (u);
          return FALSE;
        }
      u->be->ops->to_device (u->be, staging, host, n_in * sizeof (float));
      u->be->ops->cast_in (u->be, staging, u->neg_half, n_in);
      u->be->ops->synchronize (u->be);
      u->be->ops->free (u->be, staging);
      g_free (host);
    }

  if (!u->be->ops->reserve_scratch (u->be, u->scratch_bytes, error))
    {
      free_activations (u);
      return FALSE;
    }
  return TRUE;
}

void
ddpm_unet_forward (DdpmUNet *u, const float *x, const float *t, float *eps)
{
  g_return_if_fail (u->arena != NULL);
  u->mode = WALK_RUN;
  walk (u, x, t, eps);
}
