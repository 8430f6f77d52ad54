/* model.c: loading a diffusers UNet2DModel folder into a DdpmModel (config, scheduler, fp32 weights).
 *
 * Folder layouts accepted:
 *   dir/config.json + dir/diffusion_pytorch_model.safetensors (or .bin, a PyTorch zip, when no safetensors)
 *     scheduler: dir/scheduler_config.json or dir/scheduler/scheduler_config.json
 *   dir/unet/{config.json, weights} + dir/scheduler/scheduler_config.json (a pipeline, model_index.json)
 *   dir = <pipeline>/unet: the scheduler is looked for in ../scheduler too.
 * No scheduler config means diffusers' DDPMScheduler defaults.
 *
 * Binding walks ddpm_unet_weights_foreach: each parameter is looked up by its canonical name, then by
 * its legacy attention name (query/key/value/proj_attn); its shape must equal the layout the config
 * implies (legacy [C, C, 1, 1] attention weights are accepted as [C, C]). Every parameter is converted
 * to float32 into one arena. Tensors that bind to nothing are ignored (counted for describe). */
#include "model.h"
#include "tensor_table.h"

#include <math.h>
#include <string.h>

/* ---- folder layout ----------------------------------------------------------------------------- */

static gboolean
is_file (const char *path)
{
  return g_file_test (path, G_FILE_TEST_IS_REGULAR);
}

/* Picks the UNet folder, weights file and scheduler config (NULL = defaults). */
static gboolean
resolve_layout (const char *dir, char **unet_dir, char **weights, gboolean *is_zip, char **sched, GError **error)
{
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "'%s' is not a folder (expected a diffusers UNet2DModel folder)",
                 dir);
    return FALSE;
  }
  g_autofree char *sub = g_build_filename (dir, "unet", NULL);
  g_autofree char *sub_cfg = g_build_filename (sub, "config.json", NULL);
  g_autofree char *top_cfg = g_build_filename (dir, "config.json", NULL);
  gboolean pipeline = !is_file (top_cfg) && is_file (sub_cfg);
  g_autofree char *udir = g_strdup (pipeline ? sub : dir);
  g_autofree char *cfg = g_build_filename (udir, "config.json", NULL);
  if (!is_file (cfg)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO,
                 "'%s' has no config.json (nor unet/config.json): not a diffusers UNet2DModel folder", dir);
    return FALSE;
  }

  /* Weights: safetensors preferred (no code execution risk, validated layout); the fp16 variant name as
   * a fallback; the PyTorch zip last. */
  static const char *const names[] = { "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                                       "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin", NULL };
  char *w = NULL;
  for (int i = 0; names[i] && !w; i++) {
    char *p = g_build_filename (udir, names[i], NULL);
    if (is_file (p)) {
      w = p;
      *is_zip = g_str_has_suffix (names[i], ".bin");
    } else
      g_free (p);
  }
  if (!w) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO,
                 "'%s' has no weights: expected diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin",
                 udir);
    return FALSE;
  }

  g_autofree char *parent = g_path_get_dirname (udir);
  char *cands[4] = {
    g_build_filename (udir, "scheduler_config.json", NULL),
    g_build_filename (udir, "scheduler", "scheduler_config.json", NULL),
    pipeline ? g_build_filename (dir, "scheduler", "scheduler_config.json", NULL) : NULL,
    !pipeline ? g_build_filename (parent, "scheduler", "scheduler_config.json", NULL) : NULL,
  };
  /* The ../scheduler fallback only for a folder that is a pipeline's unet/ (its parent has model_index.json). */
  g_autofree char *index = g_build_filename (parent, "model_index.json", NULL);
  if (cands[3] && !is_file (index))
    g_clear_pointer (&cands[3], g_free);
  *sched = NULL;
  for (int i = 0; i < 4; i++) {
    if (!*sched && cands[i] && is_file (cands[i]))
      *sched = g_steal_pointer (&cands[i]);
    g_free (cands[i]);
  }
  *unet_dir = g_steal_pointer (&udir);
  *weights = w;
  return TRUE;
}

/* ---- binding ----------------------------------------------------------------------------------- */

typedef struct {
  const DdpmTensorTable *table;
  const char *file;                /* for messages */
  float *arena;
  int64_t used;                    /* floats handed out */
  guint n_bound;
  gboolean legacy;
  int dtypes_seen;                 /* bit per DdpmDType */
} Binder;

static void
format_shape (GString *s, int ndim, const int64_t *shape)
{
  g_string_append_c (s, '[');
  for (int i = 0; i < ndim; i++)
    g_string_append_printf (s, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
  g_string_append_c (s, ']');
}

/* diffusers 0.1 attention names: to_q -> query, to_k -> key, to_v -> value, to_out.0 -> proj_attn. */
static char *
legacy_name (const char *name)
{
  static const char *const map[][2] = {
    { ".to_q.", ".query." }, { ".to_k.", ".key." }, { ".to_v.", ".value." }, { ".to_out.0.", ".proj_attn." }
  };
  if (!strstr (name, "attentions."))
    return NULL;
  for (guint i = 0; i < G_N_ELEMENTS (map); i++) {
    const char *p = strstr (name, map[i][0]);
    if (p)
      return g_strdup_printf ("%.*s%s%s", (int) (p - name), name, map[i][1], p + strlen (map[i][0]));
  }
  return NULL;
}

static gboolean
shape_equal (int ndim, const int64_t *a, int ndim_b, const int64_t *b)
{
  if (ndim != ndim_b)
    return FALSE;
  for (int i = 0; i < ndim; i++)
    if (a[i] != b[i])
      return FALSE;
  return TRUE;
}

static gboolean
bind_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape,
              gpointer user_data, GError **error)
{
  Binder *b = user_data;
  const DdpmRawTensor *t = ddpm_tensor_table_lookup (b->table, name);
  g_autofree char *old = NULL;
  if (!t && (old = legacy_name (name)) != NULL) {
    t = ddpm_tensor_table_lookup (b->table, old);
    if (t)
      b->legacy = TRUE;
  }
  if (!t) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: tensor '%s' is missing%s%s%s", b->file, name,
                 old ? " (also looked for '" : "", old ? old : "", old ? "')" : "");
    return FALSE;
  }

  gboolean ok = shape_equal (ndim, shape, t->ndim, t->shape);
  /* Old checkpoints store attention projections as 1x1 convs: [C, C, 1, 1] holds the same numbers. */
  if (!ok && kind == DDPM_PARAM_LINEAR && strstr (name, "attentions.") && t->ndim == 4 && t->shape[2] == 1 &&
      t->shape[3] == 1)
    ok = shape_equal (ndim, shape, 2, t->shape);
  if (!ok) {
    g_autoptr (GString) msg = g_string_new (NULL);
    g_string_append_printf (msg, "%s: tensor '%s' has shape ", b->file, t->name);
    format_shape (msg, t->ndim, t->shape);
    g_string_append (msg, " but the config implies ");
    format_shape (msg, ndim, shape);
    g_set_error_literal (error, DDPM_ERROR, DDPM_ERROR_SHAPE, msg->str);
    return FALSE;
  }

  if (b->arena) {                  /* NULL: the dry pass, which only checks */
    float *dst = b->arena + b->used;
    ddpm_raw_tensor_to_f32 (t, dst);
    *slot = dst;
  }
  b->used += t->numel;
  b->n_bound++;
  b->dtypes_seen |= 1 << t->dtype;
  return TRUE;
}

static float *
alloc_arena (int64_t n_params, GError **error)
{
  float *arena = n_params > 0 && (guint64) n_params < G_MAXSIZE / sizeof (float)
                   ? g_try_malloc ((gsize) n_params * sizeof (float)) : NULL;
  if (!arena)
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "cannot allocate %" G_GINT64_FORMAT
                 " float32 parameters (%.1f MiB)", n_params, (double) n_params * 4 / (1 << 20));
  return arena;
}

/* ---- load / free ------------------------------------------------------------------------------- */

void
ddpm_model_free (DdpmModel *model)
{
  if (!model)
    return;
  ddpm_schedule_clear (&model->schedule);
  g_free (model->arena);
  g_free (model->path);
  g_free (model->weights_file);
  g_free (model->weights_format);
  g_free (model->weights_dtype);
  g_free (model);
}

DdpmModel *
ddpm_model_load (const char *dir, GError **error)
{
  if (!dir || !*dir) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "no model folder given");
    return NULL;
  }
  g_autofree char *unet_dir = NULL, *weights = NULL, *sched = NULL;
  gboolean is_zip = FALSE;
  if (!resolve_layout (dir, &unet_dir, &weights, &is_zip, &sched, error))
    return NULL;

  g_autoptr (DdpmModel) m = g_new0 (DdpmModel, 1);
  m->path = g_strdup (dir);
  m->weights_file = g_strdup (weights);

  g_autofree char *cfg_path = g_build_filename (unet_dir, "config.json", NULL);
  if (!ddpm_unet_config_parse (cfg_path, &m->config, error))
    return NULL;
  ddpm_scheduler_config_init_defaults (&m->scheduler_config);
  if (sched && !ddpm_scheduler_config_parse (sched, &m->scheduler_config, error))
    return NULL;
  if (!ddpm_schedule_init (&m->schedule, &m->scheduler_config, error))
    return NULL;

  /* Weights last: the config decides what they must look like. */
  g_autoptr (DdpmTensorTable) table = is_zip ? ddpm_torch_zip_load (weights, error)
                                             : ddpm_safetensors_load (weights, error);
  if (!table)
    return NULL;
  m->weights_format = g_strdup (ddpm_tensor_table_format (table));

  ddpm_unet_weights_layout (&m->weights, &m->config);
  m->n_params = ddpm_unet_weights_count (&m->config);
  /* A dry pass first (names and shapes, arena NULL): the arena is allocated only for weights that bind,
   * since a 1 KB config.json can imply hundreds of GiB of parameters. */
  Binder dry = { table, weights, NULL, 0, 0, FALSE, 0 };
  if (!ddpm_unet_weights_foreach (&m->weights, &m->config, bind_visitor, &dry, error))
    return NULL;
  m->arena = alloc_arena (m->n_params, error);
  if (!m->arena)
    return NULL;
  Binder b = { table, weights, m->arena, 0, 0, FALSE, 0 };
  if (!ddpm_unet_weights_foreach (&m->weights, &m->config, bind_visitor, &b, error))
    return NULL;
  g_assert (b.used == m->n_params);

  m->legacy_attention_names = b.legacy;
  m->n_unused_tensors = (int) (ddpm_tensor_table_size (table) - b.n_bound);
  int seen = b.dtypes_seen;
  m->weights_dtype = g_strdup (seen == (1 << DDPM_DTYPE_F32)    ? "F32"
                               : seen == (1 << DDPM_DTYPE_F16)  ? "F16"
                               : seen == (1 << DDPM_DTYPE_BF16) ? "BF16"
                                                                : "mixed");
  return g_steal_pointer (&m);
}

/* ---- random models ----------------------------------------------------------------------------- */

/* splitmix64: a tiny, well-mixed generator; enough for benchmark weights (reproducible per seed). */
static inline uint64_t
splitmix64 (uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Standard normal by Box-Muller from two 53-bit uniforms in (0, 1]. */
static double
gauss (uint64_t *s)
{
  double u1 = ((splitmix64 (s) >> 11) + 1) * 0x1.0p-53;
  double u2 = (splitmix64 (s) >> 11) * 0x1.0p-53;
  return sqrt (-2.0 * log (u1)) * cos (2.0 * G_PI * u2);
}

typedef struct {
  float *arena;
  int64_t used;
  uint64_t state;
} RandomFill;

/* Weights ~ N(0, 1/fan_in) (std 1/sqrt(fan_in)), so activations keep their scale through the net; norm
 * gammas ~ 1 + 0.05 N, betas and biases ~ 0.02 N. */
static gboolean
random_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape,
                gpointer user_data, GError **error)
{
  (void) error;
  RandomFill *r = user_data;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  float *dst = r->arena + r->used;
  double scale, offset = 0;
  if (kind == DDPM_PARAM_VECTOR) {
    gboolean gamma = g_str_has_suffix (name, ".weight");   /* norm weights are the only weight vectors */
    scale = gamma ? 0.05 : 0.02;
    offset = gamma ? 1.0 : 0.0;
  } else {
    int64_t fan_in = n / shape[0];
    scale = 1.0 / sqrt ((double) fan_in);
  }
  for (int64_t i = 0; i < n; i++)
    dst[i] = (float) (offset + scale * gauss (&r->state));
  r->used += n;
  *slot = dst;
  return TRUE;
}

/* The checks the parser applies, for configs built in code. */
static gboolean
check_config (const DdpmUNetConfig *c, GError **error)
{
  const char *bad = NULL;
  if (c->n_levels < 1 || c->n_levels > DDPM_MAX_LEVELS)
    bad = "n_levels";
  else if (c->layers_per_block < 1 || c->layers_per_block > DDPM_MAX_LAYERS_PER_BLOCK)
    bad = "layers_per_block";
  else if (c->in_channels < 1 || c->in_channels > 64 || c->out_channels < 1 || c->out_channels > 64)
    bad = "in_channels/out_channels";
  else if (c->time_embedding_dim < 1)
    bad = "time_embedding_dim";
  else if (c->norm_num_groups < 1 || c->attn_norm_num_groups < 1)
    bad = "norm_num_groups";
  else if (c->attention_head_dim < 0)
    bad = "attention_head_dim";
  else if (c->block_out_channels[0] % 2 != 0)
    bad = "block_out_channels[0] (must be even)";
  for (int i = 0; !bad && i < c->n_levels; i++) {
    int ch = c->block_out_channels[i];
    if (ch < 1 || ch % c->norm_num_groups != 0)
      bad = "block_out_channels (positive, multiples of norm_num_groups)";
    else if (c->attention_head_dim > 0 && ch % c->attention_head_dim != 0 &&
             (c->down_attn[i] || c->up_attn[c->n_levels - 1 - i] || (i == c->n_levels - 1 && c->add_attention)))
      bad = "attention_head_dim (must divide the attention widths)";
  }
  if (!bad && c->add_attention && c->block_out_channels[c->n_levels - 1] % c->attn_norm_num_groups != 0)
    bad = "attn_norm_num_groups";
  if (bad) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "invalid UNet config: %s", bad);
    return FALSE;
  }
  return TRUE;
}

DdpmModel *
ddpm_model_new_random (const DdpmUNetConfig *config, uint64_t seed, GError **error)
{
  if (!config) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "no UNet config given");
    return NULL;
  }
  if (!check_config (config, error))
    return NULL;
  g_autoptr (DdpmModel) m = g_new0 (DdpmModel, 1);
  m->config = *config;
  ddpm_scheduler_config_init_defaults (&m->scheduler_config);
  if (!ddpm_schedule_init (&m->schedule, &m->scheduler_config, error))
    return NULL;
  ddpm_unet_weights_layout (&m->weights, &m->config);
  m->n_params = ddpm_unet_weights_count (&m->config);
  m->arena = alloc_arena (m->n_params, error);
  if (!m->arena)
    return NULL;
  RandomFill r = { m->arena, 0, seed ^ 0x6464706d5f726e64ull /* "ddpm_rnd" */ };
  ddpm_unet_weights_foreach (&m->weights, &m->config, random_visitor, &r, NULL);
  m->weights_format = g_strdup ("random");
  m->weights_dtype = g_strdup ("F32");
  m->weights_file = g_strdup_printf ("(random, seed %" G_GUINT64_FORMAT ")", (guint64) seed);
  return g_steal_pointer (&m);
}

/* ---- getters ----------------------------------------------------------------------------------- */

const DdpmUNetConfig *
ddpm_model_get_config (const DdpmModel *model)
{
  return &model->config;
}

const DdpmSchedulerConfig *
ddpm_model_get_scheduler_config (const DdpmModel *model)
{
  return &model->scheduler_config;
}

int
ddpm_model_in_channels (const DdpmModel *model)
{
  return model->config.in_channels;
}

int
ddpm_model_out_channels (const DdpmModel *model)
{
  return model->config.out_channels;
}

int
ddpm_model_sample_size (const DdpmModel *model)
{
  return model->config.sample_size;
}

int
ddpm_model_size_multiple (const DdpmModel *model)
{
  /* n_levels - 1 stride-2 downsamplers: H and W must halve cleanly that many times. */
  return 1 << (model->config.n_levels - 1);
}

gboolean
ddpm_model_has_attention (const DdpmModel *model)
{
  const DdpmUNetConfig *c = &model->config;
  gboolean any = c->add_attention;
  for (int i = 0; i < c->n_levels; i++)
    any = any || c->down_attn[i] || c->up_attn[i];
  return any;
}

int
ddpm_model_num_train_timesteps (const DdpmModel *model)
{
  return model->schedule.num_train_timesteps;
}

/* ddpm_model_alpha_bar lives in sampler.c. */

static const char *
enum_name (int v, const char *const *names)
{
  return names[v];
}

static void
append_thousands (GString *s, int64_t v)
{
  char digits[32];
  int len = g_snprintf (digits, sizeof digits, "%" G_GINT64_FORMAT, v);
  for (int i = 0; i < len; i++) {
    if (i > 0 && (len - i) % 3 == 0 && digits[i - 1] != '-')
      g_string_append_c (s, ',');
    g_string_append_c (s, digits[i]);
  }
}

char *
ddpm_model_describe (const DdpmModel *model)
{
  const DdpmUNetConfig *c = &model->config;
  const DdpmSchedulerConfig *s = &model->scheduler_config;
  GString *d = g_string_new ("UNet2DModel: ");

  g_string_append_printf (d, "%d levels, block_out_channels (", c->n_levels);
  for (int i = 0; i < c->n_levels; i++)
    g_string_append_printf (d, "%s%d", i ? ", " : "", c->block_out_channels[i]);
  g_string_append (d, "), down (");
  for (int i = 0; i < c->n_levels; i++)
    g_string_append_printf (d, "%s%s", i ? ", " : "", c->down_attn[i] ? "AttnDown" : "Down");
  g_string_append (d, "), up (");
  for (int i = 0; i < c->n_levels; i++)
    g_string_append_printf (d, "%s%s", i ? ", " : "", c->up_attn[i] ? "AttnUp" : "Up");
  g_string_append_printf (d, "), layers_per_block %d, mid attention %s\n", c->layers_per_block,
                          !c->add_attention ? "no" : c->mid_attn_no_norm ? "yes (no group norm)" : "yes");
  if (c->attention_head_dim > 0)
    g_string_append_printf (d, "  attention head dim %d; ", c->attention_head_dim);
  else
    g_string_append (d, "  attention: one head per block; ");
  g_string_append_printf (d, "group norm %d groups, eps %g; time embedding %d (flip_sin_to_cos %s, freq_shift %g)%s\n",
                          c->norm_num_groups, c->norm_eps, c->time_embedding_dim, c->flip_sin_to_cos ? "true" : "false",
                          c->freq_shift, c->scale_shift ? "; scale_shift" : "");
  g_string_append_printf (d, "  channels in %d, out %d; sample size ", c->in_channels, c->out_channels);
  if (c->sample_size > 0)
    g_string_append_printf (d, "%d", c->sample_size);
  else
    g_string_append (d, "unset");
  g_string_append_printf (d, " (H, W multiples of %d)\n", ddpm_model_size_multiple (model));

  g_string_append (d, "parameters: ");
  append_thousands (d, model->n_params);
  g_string_append_printf (d, " (%.1f MiB as float32)\n", (double) model->n_params * 4 / (1 << 20));

  g_string_append_printf (d, "weights: %s (%s, %s", model->weights_file ? model->weights_file : "?",
                          model->weights_format ? model->weights_format : "?",
                          model->weights_dtype ? model->weights_dtype : "?");
  if (model->legacy_attention_names)
    g_string_append (d, ", legacy attention names");
  if (model->n_unused_tensors > 0)
    g_string_append_printf (d, ", %d unused tensor%s ignored", model->n_unused_tensors,
                            model->n_unused_tensors == 1 ? "" : "s");
  g_string_append (d, ")\n");

  static const char *const betas[] = { "linear", "scaled_linear", "squaredcos_cap_v2" };
  static const char *const vars[] = { "fixed_small", "fixed_small_log", "fixed_large" };
  static const char *const preds[] = { "epsilon", "sample", "v_prediction" };
  static const char *const spacing[] = { "leading", "trailing", "linspace" };
  g_string_append_printf (d, "scheduler: %s%s, %d train steps, %s betas %g..%g, %s, prediction %s, spacing %s",
                          s->kind == DDPM_SAMPLER_DDIM ? "DDIM" : "DDPM", s->from_file ? "" : " (defaults)",
                          s->num_train_timesteps, enum_name (s->beta_schedule, betas), s->beta_start, s->beta_end,
                          enum_name (s->variance_type, vars), enum_name (s->prediction_type, preds),
                          enum_name (s->timestep_spacing, spacing));
  if (s->clip_sample)
    g_string_append_printf (d, ", clip_sample to +-%g", s->clip_sample_range);
  if (s->steps_offset)
    g_string_append_printf (d, ", steps_offset %d", s->steps_offset);
  return g_string_free (d, FALSE);
}
