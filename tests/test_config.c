/* test_config.c: config.json / scheduler_config.json parsing, the named architectures, and the UNet
 * parameter layout (names, shapes, order, counts) against diffusers' own state_dict listings
 * (tests/fixtures/loader/params_*.txt, written by tests/fixtures/loader/make_loader_fixtures.py). */
#include "unet_config.h"
#include "unet_weights.h"
#include "test_util.h"

#include <string.h>
#include <glib/gstdio.h>

/* ---- helpers ----------------------------------------------------------------------------------- */

static char *temp_dir;             /* one per test process; files are removed after use, the dir in main */

/* Writes text to <temp_dir>/<name>; returns the path (g_free). */
static char *
write_temp (const char *name, const char *text)
{
  if (!temp_dir)
    temp_dir = g_dir_make_tmp ("ddpm-test-config-XXXXXX", NULL);
  g_assert_nonnull (temp_dir);
  char *path = g_build_filename (temp_dir, name, NULL);
  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  return path;
}

static gboolean
parse_unet_text (const char *text, DdpmUNetConfig *cfg, GError **error)
{
  g_autofree char *path = write_temp ("config.json", text);
  gboolean ok = ddpm_unet_config_parse (path, cfg, error);
  g_unlink (path);
  return ok;
}

static gboolean
parse_sched_text (const char *text, DdpmSchedulerConfig *cfg, GError **error)
{
  g_autofree char *path = write_temp ("scheduler_config.json", text);
  gboolean ok = ddpm_scheduler_config_parse (path, cfg, error);
  g_unlink (path);
  return ok;
}

static void
expect_error (GError *error, int code, const char *needle)
{
  g_assert_nonnull (error);
  g_test_message ("error: %s", error->message);
  g_assert_error (error, DDPM_ERROR, code);
  if (needle && !strstr (error->message, needle))
    g_error ("message '%s' does not mention '%s'", error->message, needle);
}

/* ---- UNet config ------------------------------------------------------------------------------- */

static void
test_unet_defaults (void)
{
  DdpmUNetConfig c;
  ddpm_unet_config_init_defaults (&c);
  g_assert_cmpint (c.n_levels, ==, 4);
  g_assert_cmpint (c.block_out_channels[3], ==, 896);
  g_assert_cmpint (c.attention_head_dim, ==, 8);
  g_assert_true (c.flip_sin_to_cos);
  g_assert_cmpint (c.downsample_padding, ==, 1);
  g_assert_cmpint (c.time_embedding_dim, ==, 896);
  g_assert_cmpfloat (c.norm_eps, ==, 1e-5);

  /* "{}" is a valid config: all diffusers defaults. */
  DdpmUNetConfig p;
  g_autoptr (GError) error = NULL;
  g_assert_true (parse_unet_text ("{}", &p, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (&p, sizeof p, &c, sizeof c);
}

static void
test_unet_head_dim_null_vs_missing (void)
{
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (parse_unet_text ("{\"block_out_channels\": [32, 64], \"norm_num_groups\": 8,"
                                  " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],"
                                  " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],"
                                  " \"attention_head_dim\": null}", &c, &error));
  g_assert_cmpint (c.attention_head_dim, ==, 0);   /* one head of C channels */
  g_assert_true (parse_unet_text ("{\"block_out_channels\": [32, 64], \"norm_num_groups\": 8,"
                                  " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],"
                                  " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"]}", &c, &error));
  g_assert_cmpint (c.attention_head_dim, ==, 8);   /* diffusers default: heads = C / 8 */
  DdpmUNetWeights w;
  ddpm_unet_weights_layout (&w, &c);
  g_assert_cmpint (w.down[1].attentions[0].heads, ==, 8);
  g_assert_cmpint (w.mid_attention.heads, ==, 8);
}

static void
test_unet_fixture_configs (void)
{
  g_autofree char *models = fixture_path ("models");
  if (!g_file_test (models, G_FILE_TEST_IS_DIR)) {
    g_test_skip ("tests/fixtures/models not generated yet");
    return;
  }
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;

  g_autofree char *cifar = g_build_filename (models, "cifar-like", "config.json", NULL);
  g_assert_true (ddpm_unet_config_parse (cifar, &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.n_levels, ==, 4);
  g_assert_cmpint (c.attention_head_dim, ==, 0);
  g_assert_false (c.flip_sin_to_cos);
  g_assert_cmpfloat (c.freq_shift, ==, 1);
  g_assert_cmpint (c.downsample_padding, ==, 0);
  g_assert_true (c.down_attn[1] && !c.down_attn[0] && c.up_attn[2] && !c.up_attn[1]);
  g_assert_cmpint (c.time_embedding_dim, ==, 64);
  g_assert_cmpint (c.sample_size, ==, 16);

  g_autofree char *bf16 = g_build_filename (models, "bf16-tiny", "config.json", NULL);
  g_assert_true (ddpm_unet_config_parse (bf16, &c, &error));
  g_assert_cmpint (c.attention_head_dim, ==, 8);   /* key absent from that file */
  g_assert_cmpint (c.layers_per_block, ==, 1);
  g_assert_cmpint (c.norm_num_groups, ==, 4);
  g_assert_true (c.flip_sin_to_cos);

  g_autofree char *fp16 = g_build_filename (models, "fp16-4ch", "unet", "config.json", NULL);
  g_assert_true (ddpm_unet_config_parse (fp16, &c, &error));
  g_assert_true (c.scale_shift);
  g_assert_true (c.center_input_sample);
  g_assert_cmpint (c.in_channels, ==, 4);
  g_assert_true (c.mid_attn_no_norm);              /* null + scale_shift: mid attention has no group norm */
  g_assert_cmpint (c.attn_norm_num_groups, ==, 8);
  g_assert_cmpfloat_with_epsilon (c.mid_block_scale_factor, 1.414, 1e-12);
}

static void
test_unet_missing_file (void)
{
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_false (ddpm_unet_config_parse ("/nonexistent/ddpm/config.json", &c, &error));
  expect_error (error, DDPM_ERROR_IO, "/nonexistent/ddpm/config.json");
}

static void
test_unet_malformed (void)
{
  DdpmUNetConfig c;
  const char *bad[] = { "{\"in_channels\": 3,", "{\"in_channels\": 3,}", "", "not json", "{\"a\": 1} trailing" };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (GError) error = NULL;
    g_assert_false (parse_unet_text (bad[i], &c, &error));
    expect_error (error, DDPM_ERROR_FORMAT, "config.json");
  }
}

static void
test_unet_not_object (void)
{
  DdpmUNetConfig c;
  const char *bad[] = { "[1, 2, 3]", "42", "\"config\"", "null" };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (GError) error = NULL;
    g_assert_false (parse_unet_text (bad[i], &c, &error));
    expect_error (error, DDPM_ERROR_FORMAT, "not a JSON object");
  }
}

static void
test_unet_wrong_types (void)
{
  static const char *const cases[][2] = {
    { "{\"in_channels\": \"3\"}", "in_channels" },
    { "{\"layers_per_block\": 2.5}", "layers_per_block" },
    { "{\"block_out_channels\": 128}", "block_out_channels" },
    { "{\"block_out_channels\": [128, \"x\"]}", "block_out_channels" },
    { "{\"flip_sin_to_cos\": 1}", "flip_sin_to_cos" },
    { "{\"down_block_types\": [1, 2, 3, 4]}", "down_block_types" },
    { "{\"norm_eps\": \"small\"}", "norm_eps" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    DdpmUNetConfig c;
    g_autoptr (GError) error = NULL;
    g_assert_false (parse_unet_text (cases[i][0], &c, &error));
    expect_error (error, DDPM_ERROR_FORMAT, cases[i][1]);
  }
}

/* Each case is a small valid config plus one unsupported value; the message must name the field. */
static void
test_unet_unsupported (void)
{
  static const char *const base = "\"block_out_channels\": [32, 64], \"norm_num_groups\": 8, "
                                  "\"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"], "
                                  "\"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"]";
  static const char *const cases[][2] = {
    { "\"time_embedding_type\": \"fourier\"", "time_embedding_type" },
    { "\"time_embedding_type\": \"learned\"", "time_embedding_type" },
    { "\"class_embed_type\": \"timestep\"", "class_embed_type" },
    { "\"num_class_embeds\": 10", "num_class_embeds" },
    { "\"act_fn\": \"gelu\"", "act_fn" },
    { "\"act_fn\": \"mish\"", "act_fn" },
    { "\"downsample_type\": \"resnet\"", "downsample_type" },
    { "\"upsample_type\": \"resnet\"", "upsample_type" },
    { "\"resnet_time_scale_shift\": \"spatial\"", "resnet_time_scale_shift" },
    { "\"resnet_time_scale_shift\": \"ada_group\"", "resnet_time_scale_shift" },
    { "\"mid_block_type\": \"UNetMidBlock2DCrossAttn\"", "mid_block_type" },
    { "\"mid_block_type\": null", "mid_block_type" },
    { "\"norm_num_groups\": 12", "norm_num_groups" },
    { "\"norm_num_groups\": null", "norm_num_groups" },
    { "\"attention_head_dim\": 24", "attention_head_dim" },
    { "\"attention_head_dim\": 128", "attention_head_dim" },
    { "\"attn_norm_num_groups\": 48", "attn_norm_num_groups" },
    { "\"in_channels\": 0", "in_channels" },
    { "\"out_channels\": 65", "out_channels" },
    { "\"layers_per_block\": 5", "layers_per_block" },
    { "\"layers_per_block\": 0", "layers_per_block" },
    { "\"downsample_padding\": 2", "downsample_padding" },
    { "\"up_block_types\": [\"UpBlock2D\"]", "up_block_types" },
    { "\"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\"]", "down_block_types[1]" },
    { "\"up_block_types\": [\"AttnUpBlock2D\", \"SkipUpBlock2D\"]", "up_block_types[1]" },
    { "\"block_out_channels\": [32, 64, 64]", "block_out_channels" },
    { "\"block_out_channels\": [32, 64, 64, 64, 64, 64, 64, 64, 64], \"down_block_types\": [], "
      "\"up_block_types\": []", "entries" },
    { "\"block_out_channels\": [0, 64]", "block_out_channels[0]" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    /* JSON keeps the last duplicate key: the case's value overrides the base. */
    g_autofree char *text = g_strdup_printf ("{%s, %s}", base, cases[i][0]);
    DdpmUNetConfig c;
    g_autoptr (GError) error = NULL;
    if (parse_unet_text (text, &c, &error))
      g_error ("accepted: %s", text);
    expect_error (error, DDPM_ERROR_UNSUPPORTED, cases[i][1]);
  }

  /* Accepted variations: extra keys, dropout, swish, UNetRes prefix, sample_size [h, w], nulls. */
  g_autofree char *ok = g_strdup_printf ("{%s, \"_class_name\": \"UNet2DModel\", \"_diffusers_version\": \"0.1.1\", "
                                         "\"dropout\": 0.1, \"act_fn\": \"swish\", \"sample_size\": [48, 48], "
                                         "\"some_future_key\": {\"x\": [1]}, \"downsample_type\": null, "
                                         "\"class_embed_type\": null, \"num_class_embeds\": null, "
                                         "\"time_embedding_dim\": null, \"mid_block_type\": \"UNetMidBlock2D\"}",
                                         base);
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (parse_unet_text (ok, &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.sample_size, ==, 48);
  g_assert_cmpint (c.time_embedding_dim, ==, 128);
}

/* ---- named architectures and parameter layout -------------------------------------------------- */

typedef struct {
  GPtrArray *lines;                /* "name d0 d1 ..." */
} NameList;

static gboolean
collect_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape,
                 gpointer user_data, GError **error)
{
  (void) slot, (void) error;
  NameList *l = user_data;
  GString *s = g_string_new (name);
  for (int i = 0; i < ndim; i++)
    g_string_append_printf (s, " %" G_GINT64_FORMAT, shape[i]);
  g_assert_true (kind == DDPM_PARAM_CONV ? ndim == 4 : kind == DDPM_PARAM_LINEAR ? ndim == 2 : ndim == 1);
  g_ptr_array_add (l->lines, g_string_free (s, FALSE));
  return TRUE;
}

/* Compares the visitor's names and shapes, in order, with diffusers' state_dict listing. */
static void
compare_layout (const DdpmUNetConfig *cfg, const char *listing)
{
  g_autofree char *path = fixture_path (listing);
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;
  if (!g_file_get_contents (path, &text, NULL, &error))
    g_error ("%s: %s (run tests/fixtures/loader/make_loader_fixtures.py)", path, error->message);
  g_auto (GStrv) want = g_strsplit (g_strstrip (text), "\n", -1);
  guint n_want = g_strv_length (want) - 1;  /* last line: "total N" */

  DdpmUNetWeights w;
  ddpm_unet_weights_layout (&w, cfg);
  NameList l = { g_ptr_array_new_with_free_func (g_free) };
  g_assert_true (ddpm_unet_weights_foreach (&w, cfg, collect_visitor, &l, NULL));
  for (guint i = 0; i < MIN (n_want, l.lines->len); i++)
    if (strcmp (want[i], g_ptr_array_index (l.lines, i)) != 0)
      g_error ("%s: parameter %u: diffusers '%s', engine '%s'", listing, i, want[i],
               (char *) g_ptr_array_index (l.lines, i));
  g_assert_cmpuint (l.lines->len, ==, n_want);

  int64_t total = g_ascii_strtoll (want[n_want] + strlen ("total "), NULL, 10);
  int64_t count = ddpm_unet_weights_count (cfg);
  printf ("# %s: %u tensors, %" G_GINT64_FORMAT " parameters (diffusers %" G_GINT64_FORMAT ")\n", listing,
          l.lines->len, count, total);
  g_assert_cmpint (count, ==, total);
  g_ptr_array_unref (l.lines);
}

static void
test_named_cifar (void)
{
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_unet_config_named ("cifar10-32", &c, &error));
  g_assert_cmpint (ddpm_unet_weights_count (&c), ==, 35746307);
  compare_layout (&c, "loader/params_cifar10-32.txt");
}

static void
test_named_celebahq (void)
{
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_unet_config_named ("celebahq-256", &c, &error));
  g_assert_cmpint (ddpm_unet_weights_count (&c), ==, 113673219);
  compare_layout (&c, "loader/params_celebahq-256.txt");
}

/* The hub's google/ddpm-cifar10-32 config.json (diffusers 0.0.4 era: no newer keys) gives the named
 * architecture exactly. */
static void
test_named_matches_hub_config (void)
{
  static const char hub[] =
    "{\"_class_name\": \"UNet2DModel\", \"_diffusers_version\": \"0.0.4\", \"act_fn\": \"silu\","
    " \"attention_head_dim\": null, \"block_out_channels\": [128, 256, 256, 256], \"center_input_sample\": false,"
    " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\", \"DownBlock2D\"],"
    " \"downsample_padding\": 0, \"flip_sin_to_cos\": false, \"freq_shift\": 1, \"in_channels\": 3,"
    " \"layers_per_block\": 2, \"mid_block_scale_factor\": 1, \"norm_eps\": 1e-06, \"norm_num_groups\": 32,"
    " \"out_channels\": 3, \"sample_size\": 32, \"time_embedding_type\": \"positional\","
    " \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"]}";
  DdpmUNetConfig parsed, named;
  g_autoptr (GError) error = NULL;
  g_assert_true (parse_unet_text (hub, &parsed, &error));
  g_assert_no_error (error);
  g_assert_true (ddpm_unet_config_named ("cifar10-32", &named, &error));
  g_assert_cmpmem (&parsed, sizeof parsed, &named, sizeof named);
}

static void
test_named_unknown (void)
{
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_false (ddpm_unet_config_named ("church-512", &c, &error));
  expect_error (error, DDPM_ERROR_ARGUMENT, "church-512");
}

/* scale_shift (time_emb_proj 2*C), head dim 16, attn groups, time_embedding_dim, 3 layers, 4 -> 2 channels. */
static void
test_layout_variant (void)
{
  g_autofree char *path = fixture_path ("loader/variant_config.json");
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_unet_config_parse (path, &c, &error));
  g_assert_no_error (error);
  g_assert_true (c.scale_shift);
  g_assert_cmpint (c.attn_norm_num_groups, ==, 8);
  g_assert_false (c.mid_attn_no_norm);             /* attn_norm_num_groups given */
  g_assert_cmpint (c.time_embedding_dim, ==, 96);
  compare_layout (&c, "loader/params_variant.txt");
  DdpmUNetWeights w;
  ddpm_unet_weights_layout (&w, &c);
  g_assert_cmpint (w.down[0].attentions[0].heads, ==, 2);   /* 32 / 16 */
  g_assert_cmpint (w.mid_attention.heads, ==, 4);           /* 64 / 16 */
}

/* ---- scheduler config -------------------------------------------------------------------------- */

static void
test_sched_defaults (void)
{
  DdpmSchedulerConfig d, p;
  ddpm_scheduler_config_init_defaults (&d);
  g_assert_cmpint (d.kind, ==, DDPM_SAMPLER_DDPM);
  g_assert_false (d.from_file);
  g_assert_cmpint (d.num_train_timesteps, ==, 1000);
  g_assert_cmpfloat (d.beta_start, ==, 0.0001);
  g_assert_cmpfloat (d.beta_end, ==, 0.02);
  g_assert_cmpint (d.variance_type, ==, DDPM_VARIANCE_FIXED_SMALL);
  g_assert_true (d.clip_sample);
  g_assert_cmpfloat (d.clip_sample_range, ==, 1.0);
  g_assert_cmpint (d.timestep_spacing, ==, DDPM_SPACING_LEADING);
  g_assert_true (d.set_alpha_to_one);

  g_autoptr (GError) error = NULL;
  g_assert_true (parse_sched_text ("{}", &p, &error));
  g_assert_true (p.from_file);
  p.from_file = FALSE;
  g_assert_cmpmem (&p, sizeof p, &d, sizeof d);
}

static void
test_sched_values (void)
{
  DdpmSchedulerConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (parse_sched_text ("{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": 500,"
                                   " \"beta_schedule\": \"squaredcos_cap_v2\", \"prediction_type\": \"v_prediction\","
                                   " \"timestep_spacing\": \"trailing\", \"clip_sample\": false,"
                                   " \"clip_sample_range\": 2.5, \"steps_offset\": 1, \"set_alpha_to_one\": false,"
                                   " \"thresholding\": false, \"trained_betas\": null,"
                                   " \"rescale_betas_zero_snr\": false, \"dynamic_thresholding_ratio\": 0.9}",
                                   &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.kind, ==, DDPM_SAMPLER_DDIM);
  g_assert_cmpint (c.num_train_timesteps, ==, 500);
  g_assert_cmpint (c.beta_schedule, ==, DDPM_BETA_SQUAREDCOS_CAP_V2);
  g_assert_cmpint (c.prediction_type, ==, DDPM_PREDICT_V);
  g_assert_cmpint (c.timestep_spacing, ==, DDPM_SPACING_TRAILING);
  g_assert_false (c.clip_sample);
  g_assert_cmpfloat (c.clip_sample_range, ==, 2.5);
  g_assert_cmpint (c.steps_offset, ==, 1);
  g_assert_false (c.set_alpha_to_one);

  /* Legacy diffusers 0.1 config: GaussianDDPMScheduler and "timesteps". */
  g_assert_true (parse_sched_text ("{\"_class_name\": \"GaussianDDPMScheduler\", \"timesteps\": 400,"
                                   " \"variance_type\": \"fixed_large\", \"beta_schedule\": \"scaled_linear\"}",
                                   &c, &error));
  g_assert_cmpint (c.kind, ==, DDPM_SAMPLER_DDPM);
  g_assert_cmpint (c.num_train_timesteps, ==, 400);
  g_assert_cmpint (c.variance_type, ==, DDPM_VARIANCE_FIXED_LARGE);
  g_assert_cmpint (c.beta_schedule, ==, DDPM_BETA_SCALED_LINEAR);
  /* The modern key wins over the legacy one. */
  g_assert_true (parse_sched_text ("{\"timesteps\": 400, \"num_train_timesteps\": 1000}", &c, &error));
  g_assert_cmpint (c.num_train_timesteps, ==, 1000);
  g_assert_true (parse_sched_text ("{\"variance_type\": \"fixed_small_log\", \"timestep_spacing\": \"linspace\","
                                   " \"prediction_type\": \"sample\"}", &c, &error));
  g_assert_cmpint (c.variance_type, ==, DDPM_VARIANCE_FIXED_SMALL_LOG);
  g_assert_cmpint (c.timestep_spacing, ==, DDPM_SPACING_LINSPACE);
  g_assert_cmpint (c.prediction_type, ==, DDPM_PREDICT_SAMPLE);
}

static void
test_sched_fixtures (void)
{
  g_autofree char *models = fixture_path ("models");
  if (!g_file_test (models, G_FILE_TEST_IS_DIR)) {
    g_test_skip ("tests/fixtures/models not generated yet");
    return;
  }
  DdpmSchedulerConfig c;
  g_autoptr (GError) error = NULL;
  g_autofree char *cifar = g_build_filename (models, "cifar-like", "scheduler_config.json", NULL);
  g_assert_true (ddpm_scheduler_config_parse (cifar, &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.variance_type, ==, DDPM_VARIANCE_FIXED_LARGE);
  g_autofree char *bf16 = g_build_filename (models, "bf16-tiny", "scheduler_config.json", NULL);
  g_assert_true (ddpm_scheduler_config_parse (bf16, &c, &error));
  g_assert_cmpint (c.beta_schedule, ==, DDPM_BETA_SCALED_LINEAR);
  g_assert_cmpfloat (c.beta_start, ==, 0.00085);
  g_assert_cmpint (c.steps_offset, ==, 1);
  g_autofree char *fp16 = g_build_filename (models, "fp16-4ch", "scheduler", "scheduler_config.json", NULL);
  g_assert_true (ddpm_scheduler_config_parse (fp16, &c, &error));
  g_assert_cmpint (c.prediction_type, ==, DDPM_PREDICT_V);
}

static void
test_sched_unsupported (void)
{
  static const char *const cases[][2] = {
    { "{\"_class_name\": \"PNDMScheduler\"}", "_class_name" },
    { "{\"_class_name\": \"EulerDiscreteScheduler\"}", "_class_name" },
    { "{\"beta_schedule\": \"sigmoid\"}", "beta_schedule" },
    { "{\"variance_type\": \"learned_range\"}", "variance_type" },
    { "{\"variance_type\": \"learned\"}", "variance_type" },
    { "{\"variance_type\": \"fixed_large_log\"}", "variance_type" },
    { "{\"prediction_type\": \"flow\"}", "prediction_type" },
    { "{\"timestep_spacing\": \"karras\"}", "timestep_spacing" },
    { "{\"thresholding\": true}", "thresholding" },
    { "{\"trained_betas\": [0.1, 0.2]}", "trained_betas" },
    { "{\"rescale_betas_zero_snr\": true}", "rescale_betas_zero_snr" },
    { "{\"num_train_timesteps\": 0}", "num_train_timesteps" },
    { "{\"beta_end\": 1.5}", "beta_end" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    DdpmSchedulerConfig c;
    g_autoptr (GError) error = NULL;
    g_assert_false (parse_sched_text (cases[i][0], &c, &error));
    expect_error (error, DDPM_ERROR_UNSUPPORTED, cases[i][1]);
  }
  DdpmSchedulerConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_false (parse_sched_text ("{\"clip_sample\": \"yes\"}", &c, &error));
  expect_error (error, DDPM_ERROR_FORMAT, "clip_sample");
  g_clear_error (&error);
  g_assert_false (parse_sched_text ("[]", &c, &error));
  expect_error (error, DDPM_ERROR_FORMAT, "scheduler_config.json");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/loader/config/defaults", test_unet_defaults);
  g_test_add_func ("/loader/config/head-dim-null-vs-missing", test_unet_head_dim_null_vs_missing);
  g_test_add_func ("/loader/config/fixtures", test_unet_fixture_configs);
  g_test_add_func ("/loader/config/missing-file", test_unet_missing_file);
  g_test_add_func ("/loader/config/malformed-json", test_unet_malformed);
  g_test_add_func ("/loader/config/not-an-object", test_unet_not_object);
  g_test_add_func ("/loader/config/wrong-types", test_unet_wrong_types);
  g_test_add_func ("/loader/config/unsupported", test_unet_unsupported);
  g_test_add_func ("/loader/layout/cifar10-32", test_named_cifar);
  g_test_add_func ("/loader/layout/celebahq-256", test_named_celebahq);
  g_test_add_func ("/loader/layout/unknown-name", test_named_unknown);
  g_test_add_func ("/loader/layout/named-matches-hub-config", test_named_matches_hub_config);
  g_test_add_func ("/loader/layout/variant", test_layout_variant);
  g_test_add_func ("/loader/scheduler/defaults", test_sched_defaults);
  g_test_add_func ("/loader/scheduler/values", test_sched_values);
  g_test_add_func ("/loader/scheduler/fixtures", test_sched_fixtures);
  g_test_add_func ("/loader/scheduler/unsupported", test_sched_unsupported);
  int rc = g_test_run ();
  if (temp_dir)
    g_rmdir (temp_dir);
  return rc;
}
