/* unet_config.c: config.json (diffusers UNet2DModel) and scheduler_config.json (DDPMScheduler /
 * DDIMScheduler) parsed with json-glib into plain structs.
 *
 * Defaults are diffusers' own (UNet2DModel.__init__, DDPMScheduler.__init__ in diffusers 0.42). Keys we do
 * not know are ignored (diffusers writes _class_name, _diffusers_version, ...), but every known key whose
 * value changes the computation in a way the engine does not implement is refused with
 * DDPM_ERROR_UNSUPPORTED naming the field and value. A key of the wrong JSON type is DDPM_ERROR_FORMAT. */
#include "unet_config.h"
#include "tensor_table.h"

#include <math.h>
#include <string.h>
#include <json-glib/json-glib.h>

/* Sanity bounds: far above every published DDPM model, low enough that a hostile config cannot make
 * the weight layout overflow or allocate absurd amounts. */
#define MAX_CHANNELS 8192
#define MAX_TIME_EMBED 32768
#define MAX_TRAIN_TIMESTEPS 100000

/* ---- JSON helpers ------------------------------------------------------------------------------ */

typedef struct {
  const char *path;                /* for messages */
  JsonObject *obj;
} Json;

/* Absent -> NULL; present (null included) -> the node. */
static JsonNode *
member (const Json *j, const char *key)
{
  return json_object_get_member (j->obj, key);
}

static gboolean
is_null (JsonNode *n)
{
  return n && JSON_NODE_HOLDS_NULL (n);
}

static gboolean
type_error (const Json *j, const char *key, const char *what, GError **error)
{
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: field \"%s\" must be %s", j->path, key, what);
  return FALSE;
}

static gboolean
node_is_int (JsonNode *n)
{
  return JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_INT64;
}

static gboolean
node_is_number (JsonNode *n)
{
  return JSON_NODE_HOLDS_VALUE (n) &&
         (json_node_get_value_type (n) == G_TYPE_INT64 || json_node_get_value_type (n) == G_TYPE_DOUBLE);
}

/* Integer field in [lo, hi]; absent keeps *out. null is a type error unless the caller handles it. */
static gboolean
get_int (const Json *j, const char *key, int lo, int hi, int *out, GError **error)
{
  JsonNode *n = member (j, key);
  if (!n)
    return TRUE;
  if (!node_is_int (n))
    return type_error (j, key, "an integer", error);
  gint64 v = json_node_get_int (n);
  if (v < lo || v > hi) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: unsupported %s = %" G_GINT64_FORMAT
                 " (supported: %d..%d)", j->path, key, v, lo, hi);
    return FALSE;
  }
  *out = (int) v;
  return TRUE;
}

static gboolean
get_double (const Json *j, const char *key, double *out, GError **error)
{
  JsonNode *n = member (j, key);
  if (!n)
    return TRUE;
  if (!node_is_number (n))
    return type_error (j, key, "a number", error);
  double v = json_node_get_double (n);
  if (!isfinite (v))
    return type_error (j, key, "a finite number", error);
  *out = v;
  return TRUE;
}

static gboolean
get_bool (const Json *j, const char *key, gboolean *out, GError **error)
{
  JsonNode *n = member (j, key);
  if (!n)
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    return type_error (j, key, "true or false", error);
  *out = json_node_get_boolean (n);
  return TRUE;
}

/* String field: *out = NULL when absent or null (borrowed from the JSON tree). */
static gboolean
get_string (const Json *j, const char *key, const char **out, GError **error)
{
  JsonNode *n = member (j, key);
  *out = NULL;
  if (!n || is_null (n))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return type_error (j, key, "a string", error);
  *out = json_node_get_string (n);
  return TRUE;
}

static gboolean
unsupported (const Json *j, const char *key, const char *value, const char *supported, GError **error)
{
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: unsupported %s = %s (supported: %s)", j->path, key,
               value, supported);
  return FALSE;
}

/* A field that must be absent or null (features we do not implement, e.g. class conditioning). */
static gboolean
require_null (const Json *j, const char *key, GError **error)
{
  JsonNode *n = member (j, key);
  if (!n || is_null (n))
    return TRUE;
  g_autofree char *text = json_to_string (n, FALSE);
  if (strlen (text) > 60)          /* e.g. a 1000-entry trained_betas list */
    strcpy (text + 56, " ...");
  return unsupported (j, key, text, "null", error);
}

/* Parses len bytes of JSON text (no NUL needed after them) and returns its root object; path names the
 * text in messages. */
static JsonParser *
parse_object (const char *text, gsize len, const char *path, JsonObject **obj, GError **error)
{
  if (len > DDPM_LIMIT_CONFIG_BYTES) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: %" G_GSIZE_FORMAT " bytes of JSON, over the limit of %"
                 G_GSIZE_FORMAT " bytes (DDPM_LIMIT_CONFIG_BYTES)", path, len, DDPM_LIMIT_CONFIG_BYTES);
    return NULL;
  }
  if (len > 0 && memchr (text, '\0', len)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: not a JSON text (contains a NUL byte)", path);
    return NULL;
  }
  /* Depth only: within DDPM_LIMIT_CONFIG_BYTES the number of values is harmless. */
  if (!ddpm_json_check_limits (text, len, G_MAXUINT64, path, error))
    return NULL;
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) jerr = NULL;
  /* json-glib refuses a NULL text (a critical), which an empty GBytes or buffer may give. */
  if (!json_parser_load_from_data (parser, len > 0 ? text : "", (gssize) len, &jerr)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed JSON: %s", path, jerr->message);
    return NULL;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: the top level is not a JSON object", path);
    return NULL;
  }
  *obj = json_node_get_object (root);
  return g_steal_pointer (&parser);
}

/* Reads path (size-limited) whole: the parse functions below work on memory. */
static GBytes *
read_config (const char *path, GError **error)
{
  return ddpm_read_file (path, DDPM_LIMIT_CONFIG_BYTES, error);
}

/* ---- UNet2DModel ------------------------------------------------------------------------------- */

void
ddpm_unet_config_init_defaults (DdpmUNetConfig *cfg)
{
  static const int boc[] = { 224, 448, 672, 896 };
  memset (cfg, 0, sizeof *cfg);
  cfg->sample_size = 0;
  cfg->in_channels = 3;
  cfg->out_channels = 3;
  cfg->center_input_sample = FALSE;
  cfg->flip_sin_to_cos = TRUE;
  cfg->freq_shift = 0;
  cfg->n_levels = 4;
  for (int i = 0; i < 4; i++)
    cfg->block_out_channels[i] = boc[i];
  /* down: DownBlock2D, AttnDownBlock2D x3; up: AttnUpBlock2D x3, UpBlock2D */
  cfg->down_attn[0] = FALSE;
  cfg->down_attn[1] = cfg->down_attn[2] = cfg->down_attn[3] = TRUE;
  cfg->up_attn[0] = cfg->up_attn[1] = cfg->up_attn[2] = TRUE;
  cfg->up_attn[3] = FALSE;
  cfg->layers_per_block = 2;
  cfg->mid_block_scale_factor = 1.0;
  cfg->downsample_padding = 1;
  cfg->attention_head_dim = 8;
  cfg->norm_num_groups = 32;
  cfg->attn_norm_num_groups = 32;
  cfg->norm_eps = 1e-5;
  cfg->scale_shift = FALSE;
  cfg->add_attention = TRUE;
  cfg->time_embedding_dim = 4 * boc[0];
}

/* Block type names; diffusers strips a "UNetRes" prefix before matching. */
static gboolean
parse_block_types (const Json *j, const char *key, const char *plain, const char *attn, gboolean *attn_out,
                   int *count, GError **error)
{
  JsonNode *n = member (j, key);
  if (!n)
    return TRUE;
  if (!JSON_NODE_HOLDS_ARRAY (n))
    return type_error (j, key, "an array of block type names", error);
  JsonArray *a = json_node_get_array (n);
  guint len = json_array_get_length (a);
  if (len < 1 || len > DDPM_MAX_LEVELS) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: %s has %u entries (supported: 1..%d)", j->path, key,
                 len, DDPM_MAX_LEVELS);
    return FALSE;
  }
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element (a, i);
    if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_STRING)
      return type_error (j, key, "an array of block type names", error);
    const char *s = json_node_get_string (e);
    if (g_str_has_prefix (s, "UNetRes"))
      s += 7;
    if (!strcmp (s, plain))
      attn_out[i] = FALSE;
    else if (!strcmp (s, attn))
      attn_out[i] = TRUE;
    else {
      g_autofree char *field = g_strdup_printf ("%s[%u]", key, i);
      g_autofree char *ok = g_strdup_printf ("%s, %s", plain, attn);
      return unsupported (j, field, json_node_get_string (e), ok, error);
    }
  }
  *count = (int) len;
  return TRUE;
}

/* Checks the cross-field rules once every field is read. */
static gboolean
validate_unet (const Json *j, DdpmUNetConfig *cfg, int n_down, int n_up, gboolean attn_groups_null,
               GError **error)
{
  if (n_down != cfg->n_levels || n_up != cfg->n_levels) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                 "%s: block_out_channels, down_block_types and up_block_types must have the same length (%d, %d, %d)",
                 j->path, cfg->n_levels, n_down, n_up);
    return FALSE;
  }
  int c0 = cfg->block_out_channels[0];
  /* Sinusoidal embedding of width C0: half = C0/2 frequencies, exponent divided by (half - freq_shift). */
  if (c0 % 2 != 0 || (double) (c0 / 2) == cfg->freq_shift) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                 "%s: unsupported block_out_channels[0] = %d with freq_shift = %g (the time embedding needs an even "
                 "width and half-width != freq_shift)", j->path, c0, cfg->freq_shift);
    return FALSE;
  }
  for (int i = 0; i < cfg->n_levels; i++) {
    int c = cfg->block_out_channels[i];
    if (c % cfg->norm_num_groups != 0) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "%s: unsupported norm_num_groups = %d: it does not divide block_out_channels[%d] = %d", j->path,
                   cfg->norm_num_groups, i, c);
      return FALSE;
    }
  }
  int cmid = cfg->block_out_channels[cfg->n_levels - 1];
  /* diffusers gives the mid attention no group norm when attn_norm_num_groups is null and the resnets
   * use scale_shift (UNetMidBlock2D: attn_groups = resnet_groups only for "default"). */
  cfg->mid_attn_no_norm = cfg->scale_shift && attn_groups_null;
  if (cfg->add_attention && cmid % cfg->attn_norm_num_groups != 0) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                 "%s: unsupported attn_norm_num_groups = %d: it does not divide the mid-block width %d", j->path,
                 cfg->attn_norm_num_groups, cmid);
    return FALSE;
  }
  /* Attention widths: down level i at boc[i], up level i at reversed boc[i], mid at boc[-1]. Heads =
   * C / attention_head_dim must be whole, or diffusers' projections would be narrower than C. */
  if (cfg->attention_head_dim > 0) {
    for (int i = 0; i <= 2 * cfg->n_levels; i++) {
      gboolean used;
      int c;
      const char *where;
      if (i < cfg->n_levels) {
        used = cfg->down_attn[i], c = cfg->block_out_channels[i], where = "down block";
      } else if (i < 2 * cfg->n_levels) {
        int u = i - cfg->n_levels;
        used = cfg->up_attn[u], c = cfg->block_out_channels[cfg->n_levels - 1 - u], where = "up block";
      } else {
        used = cfg->add_attention, c = cmid, where = "mid block";
      }
      if (used && c % cfg->attention_head_dim != 0) {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                     "%s: unsupported attention_head_dim = %d: it does not divide the %s width %d", j->path,
                     cfg->attention_head_dim, where, c);
        return FALSE;
      }
    }
  }
  return TRUE;
}

gboolean
ddpm_unet_config_parse (const char *json_path, DdpmUNetConfig *cfg, GError **error)
{
  g_autoptr (GBytes) bytes = read_config (json_path, error);
  if (!bytes)
    return FALSE;
  gsize len;
  const char *text = g_bytes_get_data (bytes, &len);
  return ddpm_unet_config_parse_data (text, len, json_path, cfg, error);
}

gboolean
ddpm_unet_config_parse_data (const char *json, gsize len, const char *json_path, DdpmUNetConfig *cfg,
                             GError **error)
{
  if (!json_path)
    json_path = "config.json";
  JsonObject *obj = NULL;
  g_autoptr (JsonParser) parser = parse_object (json, len, json_path, &obj, error);
  if (!parser)
    return FALSE;
  Json j = { json_path, obj };
  DdpmUNetConfig c;
  ddpm_unet_config_init_defaults (&c);
  const char *s;
  JsonNode *n;

  /* sample_size: int, [h, w] or null. The engine keeps one number (a default size for UIs). */
  n = member (&j, "sample_size");
  if (n && !is_null (n)) {
    if (JSON_NODE_HOLDS_ARRAY (n) && json_array_get_length (json_node_get_array (n)) == 2 &&
        node_is_int (json_array_get_element (json_node_get_array (n), 0)) &&
        node_is_int (json_array_get_element (json_node_get_array (n), 1))) {
      gint64 h = json_array_get_int_element (json_node_get_array (n), 0);
      gint64 w = json_array_get_int_element (json_node_get_array (n), 1);
      c.sample_size = (h == w && h > 0 && h <= 65536) ? (int) h : 0;  /* non-square: no single default */
    } else if (!get_int (&j, "sample_size", 0, 65536, &c.sample_size, error))
      return FALSE;
  }
  if (!get_int (&j, "in_channels", 1, 64, &c.in_channels, error) ||
      !get_int (&j, "out_channels", 1, 64, &c.out_channels, error) ||
      !get_bool (&j, "center_input_sample", &c.center_input_sample, error) ||
      !get_bool (&j, "flip_sin_to_cos", &c.flip_sin_to_cos, error) ||
      !get_double (&j, "freq_shift", &c.freq_shift, error))
    return FALSE;

  if (!get_string (&j, "time_embedding_type", &s, error))
    return FALSE;
  if (member (&j, "time_embedding_type") && (!s || strcmp (s, "positional") != 0))
    return unsupported (&j, "time_embedding_type", s ? s : "null", "positional", error);

  /* block_out_channels first: the block type lists are checked against its length. */
  n = member (&j, "block_out_channels");
  if (n) {
    if (!JSON_NODE_HOLDS_ARRAY (n))
      return type_error (&j, "block_out_channels", "an array of integers", error);
    JsonArray *a = json_node_get_array (n);
    guint len = json_array_get_length (a);
    if (len < 1 || len > DDPM_MAX_LEVELS) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: block_out_channels has %u entries (supported: 1..%d)",
                   json_path, len, DDPM_MAX_LEVELS);
      return FALSE;
    }
    for (guint i = 0; i < len; i++) {
      JsonNode *e = json_array_get_element (a, i);
      if (!node_is_int (e))
        return type_error (&j, "block_out_channels", "an array of integers", error);
      gint64 v = json_node_get_int (e);
      if (v < 1 || v > MAX_CHANNELS) {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                     "%s: unsupported block_out_channels[%u] = %" G_GINT64_FORMAT " (supported: 1..%d)", json_path, i, v,
                     MAX_CHANNELS);
        return FALSE;
      }
      c.block_out_channels[i] = (int) v;
    }
    c.n_levels = (int) len;
  }
  int n_down = 4, n_up = 4;
  if (!parse_block_types (&j, "down_block_types", "DownBlock2D", "AttnDownBlock2D", c.down_attn, &n_down, error) ||
      !parse_block_types (&j, "up_block_types", "UpBlock2D", "AttnUpBlock2D", c.up_attn, &n_up, error))
    return FALSE;

  n = member (&j, "mid_block_type");
  if (n) {
    if (!get_string (&j, "mid_block_type", &s, error))
      return FALSE;
    if (!s || strcmp (s, "UNetMidBlock2D") != 0)
      return unsupported (&j, "mid_block_type", s ? s : "null", "UNetMidBlock2D", error);
  }

  if (!get_int (&j, "layers_per_block", 1, DDPM_MAX_LAYERS_PER_BLOCK, &c.layers_per_block, error) ||
      !get_double (&j, "mid_block_scale_factor", &c.mid_block_scale_factor, error) ||
      !get_int (&j, "downsample_padding", 0, 1, &c.downsample_padding, error) ||
      !get_double (&j, "norm_eps", &c.norm_eps, error) ||
      !get_bool (&j, "add_attention", &c.add_attention, error))
    return FALSE;
  if (c.mid_block_scale_factor <= 0)
    return unsupported (&j, "mid_block_scale_factor", "<= 0", "a positive number", error);
  if (c.norm_eps <= 0)
    return unsupported (&j, "norm_eps", "<= 0", "a positive number", error);

  /* Down/up sampling kind only matters for the Attn blocks (DownBlock2D/UpBlock2D always use a conv);
   * diffusers treats null as "conv". */
  if (!get_string (&j, "downsample_type", &s, error))
    return FALSE;
  if (s && strcmp (s, "conv") != 0)
    return unsupported (&j, "downsample_type", s, "conv", error);
  if (!get_string (&j, "upsample_type", &s, error))
    return FALSE;
  if (s && strcmp (s, "conv") != 0)
    return unsupported (&j, "upsample_type", s, "conv", error);

  /* dropout is the identity at inference: read only to check its type. */
  double dropout = 0;
  if (!get_double (&j, "dropout", &dropout, error))
    return FALSE;

  if (!get_string (&j, "act_fn", &s, error))
    return FALSE;
  if (member (&j, "act_fn") && (!s || (g_ascii_strcasecmp (s, "silu") != 0 && g_ascii_strcasecmp (s, "swish") != 0)))
    return unsupported (&j, "act_fn", s ? s : "null", "silu, swish", error);

  /* attention_head_dim: null = one head per block (head size = block width), absent = 8. */
  n = member (&j, "attention_head_dim");
  if (is_null (n))
    c.attention_head_dim = 0;
  else if (!get_int (&j, "attention_head_dim", 1, MAX_CHANNELS, &c.attention_head_dim, error))
    return FALSE;

  n = member (&j, "norm_num_groups");
  if (is_null (n))
    return unsupported (&j, "norm_num_groups", "null", "an integer (per-block group counts are not implemented)",
                        error);
  if (!get_int (&j, "norm_num_groups", 1, MAX_CHANNELS, &c.norm_num_groups, error))
    return FALSE;
  gboolean attn_groups_null = TRUE;
  n = member (&j, "attn_norm_num_groups");
  c.attn_norm_num_groups = c.norm_num_groups;
  if (n && !is_null (n)) {
    if (!get_int (&j, "attn_norm_num_groups", 1, MAX_CHANNELS, &c.attn_norm_num_groups, error))
      return FALSE;
    attn_groups_null = FALSE;
  }

  if (!get_string (&j, "resnet_time_scale_shift", &s, error))
    return FALSE;
  if (member (&j, "resnet_time_scale_shift")) {
    if (s && !strcmp (s, "default"))
      c.scale_shift = FALSE;
    else if (s && !strcmp (s, "scale_shift"))
      c.scale_shift = TRUE;
    else
      return unsupported (&j, "resnet_time_scale_shift", s ? s : "null", "default, scale_shift", error);
  }

  if (!require_null (&j, "class_embed_type", error) || !require_null (&j, "num_class_embeds", error))
    return FALSE;

  n = member (&j, "time_embedding_dim");
  c.time_embedding_dim = 4 * c.block_out_channels[0];
  if (n && !is_null (n) && !get_int (&j, "time_embedding_dim", 1, MAX_TIME_EMBED, &c.time_embedding_dim, error))
    return FALSE;

  if (!validate_unet (&j, &c, n_down, n_up, attn_groups_null, error))
    return FALSE;
  *cfg = c;
  return TRUE;
}

gboolean
ddpm_unet_config_named (const char *name, DdpmUNetConfig *cfg, GError **error)
{
  DdpmUNetConfig c;
  ddpm_unet_config_init_defaults (&c);
  /* Common to the google/ddpm-* checkpoints (see unet2d-spec.md). */
  c.attention_head_dim = 0;
  c.downsample_padding = 0;
  c.flip_sin_to_cos = FALSE;
  c.freq_shift = 1;
  c.layers_per_block = 2;
  c.norm_eps = 1e-6;
  c.norm_num_groups = c.attn_norm_num_groups = 32;
  memset (c.down_attn, 0, sizeof c.down_attn);
  memset (c.up_attn, 0, sizeof c.up_attn);

  if (name && !strcmp (name, "cifar10-32")) {
    static const int boc[] = { 128, 256, 256, 256 };
    c.sample_size = 32;
    c.n_levels = 4;
    memcpy (c.block_out_channels, boc, sizeof boc);
    c.down_attn[1] = TRUE;         /* Down, AttnDown, Down, Down */
    c.up_attn[2] = TRUE;           /* Up, Up, AttnUp, Up */
  } else if (name && !strcmp (name, "celebahq-256")) {
    static const int boc[] = { 128, 128, 256, 256, 512, 512 };
    c.sample_size = 256;
    c.n_levels = 6;
    memcpy (c.block_out_channels, boc, sizeof boc);
    c.down_attn[4] = TRUE;         /* Down x4, AttnDown, Down */
    c.up_attn[1] = TRUE;           /* Up, AttnUp, Up x4 */
  } else {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT,
                 "unknown model architecture name '%s' (known: cifar10-32, celebahq-256)", name ? name : "(null)");
    return FALSE;
  }
  c.time_embedding_dim = 4 * c.block_out_channels[0];
  *cfg = c;
  return TRUE;
}

/* ---- schedulers -------------------------------------------------------------------------------- */

void
ddpm_scheduler_config_init_defaults (DdpmSchedulerConfig *cfg)
{
  memset (cfg, 0, sizeof *cfg);
  cfg->kind = DDPM_SAMPLER_DDPM;
  cfg->from_file = FALSE;
  cfg->num_train_timesteps = 1000;
  cfg->beta_start = 0.0001;
  cfg->beta_end = 0.02;
  cfg->beta_schedule = DDPM_BETA_LINEAR;
  cfg->variance_type = DDPM_VARIANCE_FIXED_SMALL;
  cfg->clip_sample = TRUE;
  cfg->clip_sample_range = 1.0;
  cfg->prediction_type = DDPM_PREDICT_EPSILON;
  cfg->timestep_spacing = DDPM_SPACING_LEADING;
  cfg->steps_offset = 0;
  cfg->set_alpha_to_one = TRUE;
}

typedef struct {
  const char *name;
  int value;
} Choice;

/* String field mapped through a table; absent keeps *out, null or other values are refused. */
static gboolean
get_choice (const Json *j, const char *key, const Choice *choices, int *out, GError **error)
{
  if (!member (j, key))
    return TRUE;
  const char *s;
  if (!get_string (j, key, &s, error))
    return FALSE;
  GString *ok = g_string_new (NULL);
  for (int i = 0; choices[i].name; i++) {
    if (s && !strcmp (s, choices[i].name)) {
      *out = choices[i].value;
      g_string_free (ok, TRUE);
      return TRUE;
    }
    g_string_append_printf (ok, "%s%s", i ? ", " : "", choices[i].name);
  }
  g_autofree char *list = g_string_free (ok, FALSE);
  return unsupported (j, key, s ? s : "null", list, error);
}

/* A boolean feature the engine does not implement: absent, null or false only. */
static gboolean
require_false (const Json *j, const char *key, GError **error)
{
  JsonNode *n = member (j, key);
  if (!n || is_null (n))
    return TRUE;
  gboolean v = FALSE;
  if (!get_bool (j, key, &v, error))
    return FALSE;
  return v ? unsupported (j, key, "true", "false", error) : TRUE;
}

gboolean
ddpm_scheduler_config_parse (const char *json_path, DdpmSchedulerConfig *cfg, GError **error)
{
  g_autoptr (GBytes) bytes = read_config (json_path, error);
  if (!bytes)
    return FALSE;
  gsize len;
  const char *text = g_bytes_get_data (bytes, &len);
  return ddpm_scheduler_config_parse_data (text, len, json_path, cfg, error);
}

gboolean
ddpm_scheduler_config_parse_data (const char *json, gsize len, const char *json_path, DdpmSchedulerConfig *cfg,
                                  GError **error)
{
  if (!json_path)
    json_path = "scheduler_config.json";
  JsonObject *obj = NULL;
  g_autoptr (JsonParser) parser = parse_object (json, len, json_path, &obj, error);
  if (!parser)
    return FALSE;
  Json j = { json_path, obj };
  DdpmSchedulerConfig c;
  ddpm_scheduler_config_init_defaults (&c);
  c.from_file = TRUE;

  static const Choice classes[] = { { "DDPMScheduler", DDPM_SAMPLER_DDPM },
                                    { "GaussianDDPMScheduler", DDPM_SAMPLER_DDPM },  /* diffusers 0.1 name */
                                    { "DDIMScheduler", DDPM_SAMPLER_DDIM },
                                    { NULL, 0 } };
  static const Choice betas[] = { { "linear", DDPM_BETA_LINEAR },
                                  { "scaled_linear", DDPM_BETA_SCALED_LINEAR },
                                  { "squaredcos_cap_v2", DDPM_BETA_SQUAREDCOS_CAP_V2 },
                                  { NULL, 0 } };
  static const Choice variances[] = { { "fixed_small", DDPM_VARIANCE_FIXED_SMALL },
                                      { "fixed_small_log", DDPM_VARIANCE_FIXED_SMALL_LOG },
                                      { "fixed_large", DDPM_VARIANCE_FIXED_LARGE },
                                      { NULL, 0 } };
  static const Choice predictions[] = { { "epsilon", DDPM_PREDICT_EPSILON },
                                        { "sample", DDPM_PREDICT_SAMPLE },
                                        { "v_prediction", DDPM_PREDICT_V },
                                        { NULL, 0 } };
  static const Choice spacings[] = { { "leading", DDPM_SPACING_LEADING },
                                     { "trailing", DDPM_SPACING_TRAILING },
                                     { "linspace", DDPM_SPACING_LINSPACE },
                                     { NULL, 0 } };
  int kind = c.kind, beta = c.beta_schedule, var = c.variance_type, pred = c.prediction_type,
      spacing = c.timestep_spacing;

  if (!get_choice (&j, "_class_name", classes, &kind, error))
    return FALSE;
  /* Legacy configs (diffusers 0.1) name the step count "timesteps"; the modern key wins when both exist. */
  if (!get_int (&j, "timesteps", 1, MAX_TRAIN_TIMESTEPS, &c.num_train_timesteps, error) ||
      !get_int (&j, "num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS, &c.num_train_timesteps, error) ||
      !get_double (&j, "beta_start", &c.beta_start, error) || !get_double (&j, "beta_end", &c.beta_end, error) ||
      !get_choice (&j, "beta_schedule", betas, &beta, error) ||
      !get_choice (&j, "variance_type", variances, &var, error) ||
      !get_bool (&j, "clip_sample", &c.clip_sample, error) ||
      !get_double (&j, "clip_sample_range", &c.clip_sample_range, error) ||
      !get_choice (&j, "prediction_type", predictions, &pred, error) ||
      !get_choice (&j, "timestep_spacing", spacings, &spacing, error) ||
      !get_int (&j, "steps_offset", 0, MAX_TRAIN_TIMESTEPS, &c.steps_offset, error) ||
      !get_bool (&j, "set_alpha_to_one", &c.set_alpha_to_one, error) ||
      !require_false (&j, "thresholding", error) || !require_false (&j, "rescale_betas_zero_snr", error) ||
      !require_null (&j, "trained_betas", error))
    return FALSE;
  if (c.beta_start < 0 || c.beta_start >= 1 || c.beta_end < 0 || c.beta_end >= 1) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                 "%s: unsupported beta_start = %g, beta_end = %g (both must lie in [0, 1))", json_path, c.beta_start,
                 c.beta_end);
    return FALSE;
  }
  if (c.clip_sample_range <= 0)
    return unsupported (&j, "clip_sample_range", "<= 0", "a positive number", error);
  c.kind = kind;
  c.beta_schedule = beta;
  c.variance_type = var;
  c.prediction_type = pred;
  c.timestep_spacing = spacing;
  *cfg = c;
  return TRUE;
}
