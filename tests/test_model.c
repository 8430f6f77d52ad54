/* test_model.c: ddpm_model_load on the diffusers fixtures (flat, pipeline, fp16, bf16, legacy names,
 * PyTorch .bin) checked against values read with Python (tests/fixtures/loader/probes.json), and on
 * broken folders built here: missing files, missing or misshapen tensors, extra tensors, bad configs.
 * Also the random model and the getters. */
#include "model.h"
#include "tensor_table.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

/* ---- helpers ----------------------------------------------------------------------------------- */

static void
expect_error (GError *error, int code, const char *needle1, const char *needle2)
{
  g_assert_nonnull (error);
  g_test_message ("error: %s", error->message);
  g_assert_error (error, DDPM_ERROR, code);
  if (needle1 && !strstr (error->message, needle1))
    g_error ("message '%s' does not mention '%s'", error->message, needle1);
  if (needle2 && !strstr (error->message, needle2))
    g_error ("message '%s' does not mention '%s'", error->message, needle2);
}

typedef struct {
  const char *want;
  float *found;
} FindParam;

static gboolean
find_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape, gpointer user_data,
              GError **error)
{
  (void) kind, (void) ndim, (void) shape, (void) error;
  FindParam *f = user_data;
  if (!strcmp (name, f->want))
    f->found = *slot;
  return TRUE;
}

/* The host float32 array bound to a canonical parameter name (NULL when there is none). */
static float *
param (DdpmModel *m, const char *name)
{
  FindParam f = { name, NULL };
  ddpm_unet_weights_foreach (&m->weights, &m->config, find_visitor, &f, NULL);
  return f.found;
}

static gboolean
models_present (void)
{
  g_autofree char *models = fixture_path ("models/cifar-like/config.json");
  return g_file_test (models, G_FILE_TEST_EXISTS);
}

/* ---- fixtures vs Python ------------------------------------------------------------------------ */

/* Loads the fixture folder `name` (under tests/fixtures/) and checks every probe of probes.json. */
static DdpmModel *
load_and_probe (const char *name, const char *folder)
{
  g_autofree char *probes_path = fixture_path ("loader/probes.json");
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (json_parser_load_from_file (parser, probes_path, &error));
  JsonObject *probes = json_node_get_object (json_parser_get_root (parser));
  g_assert_true (json_object_has_member (probes, name));
  JsonObject *entry = json_object_get_object_member (probes, name);

  g_autofree char *dir = fixture_path (folder);
  DdpmModel *m = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_nonnull (m);
  g_assert_cmpint (m->n_params, ==, json_object_get_int_member (entry, "n_params"));

  JsonObject *tensors = json_object_get_object_member (entry, "tensors");
  g_autoptr (GList) names = json_object_get_members (tensors);
  double worst = 0;
  for (GList *l = names; l; l = l->next) {
    JsonObject *p = json_object_get_object_member (tensors, l->data);
    const float *v = param (m, l->data);
    if (!v)
      g_error ("%s: parameter %s not bound", name, (char *) l->data);
    JsonArray *shape = json_object_get_array_member (p, "shape");
    int64_t n = 1;
    for (guint i = 0; i < json_array_get_length (shape); i++)
      n *= json_array_get_int_element (shape, i);
    JsonArray *first = json_object_get_array_member (p, "first");
    for (guint i = 0; i < json_array_get_length (first); i++)
      g_assert_cmpfloat (v[i], ==, (float) json_array_get_double_element (first, i));  /* exact */
    double sum = 0, want = json_object_get_double_member (p, "sum");
    for (int64_t i = 0; i < n; i++)
      sum += v[i];
    double err = fabs (sum - want);
    worst = fmax (worst, err);
    if (err > 1e-9 * (1 + fabs (want)))
      g_error ("%s: %s: sum %.17g, Python %.17g", name, (char *) l->data, sum, want);
  }
  printf ("# %s: %" G_GINT64_FORMAT " parameters (%s, %s%s), %u probed tensors, worst sum difference %.3g\n", name,
          m->n_params, m->weights_format, m->weights_dtype, m->legacy_attention_names ? ", legacy names" : "",
          g_list_length (names), worst);
  return m;
}

static void
test_fixture_cifar (void)
{
  if (!models_present ()) {
    g_test_skip ("tests/fixtures/models not generated yet");
    return;
  }
  g_autoptr (DdpmModel) m = load_and_probe ("cifar-like", "models/cifar-like");
  g_assert_cmpstr (m->weights_format, ==, "safetensors");
  g_assert_cmpstr (m->weights_dtype, ==, "F32");
  g_assert_false (m->legacy_attention_names);
  g_assert_cmpint (m->n_unused_tensors, ==, 0);
  g_assert_true (m->scheduler_config.from_file);
  g_assert_cmpint (m->scheduler_config.variance_type, ==, DDPM_VARIANCE_FIXED_LARGE);
  g_assert_cmpint (ddpm_model_in_channels (m), ==, 3);
  g_assert_cmpint (ddpm_model_out_channels (m), ==, 3);
  g_assert_cmpint (ddpm_model_sample_size (m), ==, 16);
  g_assert_cmpint (ddpm_model_size_multiple (m), ==, 8);
  g_assert_cmpint (ddpm_model_num_train_timesteps (m), ==, 1000);
  g_assert_true (ddpm_model_get_config (m) == &m->config);
  g_assert_true (ddpm_model_get_scheduler_config (m) == &m->scheduler_config);
  g_assert_nonnull (m->weights.down[1].attentions[0].to_q.weight);
  g_assert_cmpint (m->weights.down[1].attentions[0].heads, ==, 1);
  g_assert_null (m->weights.down[3].resample.weight);          /* last level: no downsampler */
  g_assert_nonnull (m->weights.down[0].resample.weight);
  g_assert_null (m->weights.down[0].resnets[0].conv_shortcut.weight);  /* 16 -> 16 */
  g_assert_nonnull (m->weights.down[1].resnets[0].conv_shortcut.weight);  /* 16 -> 32 */
  /* Everything in one arena, in visiting order. */
  g_assert_true ((float *) m->weights.conv_in.weight == m->arena);
  g_autofree char *d = ddpm_model_describe (m);
  g_test_message ("%s", d);
  g_assert_nonnull (strstr (d, "565,315"));
  g_assert_nonnull (strstr (d, "safetensors"));
  g_assert_nonnull (strstr (d, "fixed_large"));
}

/* Legacy query/key/value/proj_attn names, attention weights stored [C, C, 1, 1]. */
static void
test_fixture_legacy (void)
{
  if (!models_present ()) {
    g_test_skip ("tests/fixtures/models not generated yet");
    return;
  }
  g_autoptr (DdpmModel) m = load_and_probe ("celebahq-like", "models/celebahq-like");
  g_assert_true (m->legacy_attention_names);
  g_assert_cmpint (m->weights.mid_attention.heads, ==, 4);    /* 32 / 8 */
  g_autofree char *d = ddpm_model_describe (m);
  g_assert_nonnull (strstr (d, "legacy attention names"));
}

static void
test_fixture_pipeline_fp16 (void)
{
  if (!models_present ()) {
    g_test_skip ("tests/fixtures/models not generated yet");
    return;
  }
  g_autoptr (DdpmModel) m = load_and_probe ("fp16-4ch", "models/fp16-4ch");
  g_assert_cmpstr (m->weights_dtype, ==, "F16");
  g_assert_cmpint (ddpm_model_in_channels (m), ==, 4);
  g_assert_cmpint (m->scheduler_config.prediction_type, ==, DDPM_PREDICT_V);   /* from scheduler/ */
  g_assert_cmpint (m->scheduler_config.beta_schedule, ==, DDPM_BETA_SQUAREDCOS_CAP_V2);
  /* scale_shift + attn_norm_num_groups null: the mid attention has no group norm in diffusers. */
  g_assert_null (m->weights.mid_attention.group_norm.gamma);
  g_assert_nonnull (m->weights.mid_attention.to_q.weight);
  g_assert_cmpint (m->weights.mid_resnets[0].time_emb_proj.out, ==, 96);     /* 2 * 48 */

  /* The pipeline's unet/ folder given directly: the scheduler is found in ../scheduler. */
  g_autofree char *unet = fixture_path ("models/fp16-4ch/unet");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) u = ddpm_model_load (unet, &error);
  g_assert_no_error (error);
  g_assert_cmpint (u->scheduler_config.prediction_type, ==, DDPM_PREDICT_V);
  g_assert_cmpmem (u->arena, u->n_params * 4, m->arena, m->n_params * 4);
}

static void
test_fixture_bf16 (void)
{
  if (!models_present ()) {
    g_test_skip ("tests/fixtures/models not generated yet");
    return;
  }
  g_autoptr (DdpmModel) m = load_and_probe ("bf16-tiny", "models/bf16-tiny");
  g_assert_cmpstr (m->weights_dtype, ==, "BF16");
  g_assert_cmpint (m->config.attention_head_dim, ==, 8);
  g_assert_cmpint (m->weights.down[0].attentions[0].heads, ==, 2);
  g_assert_cmpint (m->scheduler_config.steps_offset, ==, 1);
  g_autofree char *demo = fixture_path ("models/demo-tiny");
  if (g_file_test (demo, G_FILE_TEST_IS_DIR)) {
    g_autoptr (DdpmModel) d = load_and_probe ("demo-tiny", "models/demo-tiny");
    g_assert_cmpstr (d->weights_dtype, ==, "F16");
  }
}

/* A torch.save zip with legacy names and a diffusers 0.1 scheduler config (GaussianDDPMScheduler). */
static void
test_fixture_bin (void)
{
  g_autoptr (DdpmModel) m = load_and_probe ("loader/bin-tiny", "loader/bin-tiny");
  g_assert_cmpstr (m->weights_format, ==, "pytorch-zip");
  g_assert_cmpstr (m->weights_dtype, ==, "F32");
  g_assert_true (m->legacy_attention_names);
  g_assert_cmpint (m->scheduler_config.kind, ==, DDPM_SAMPLER_DDPM);
  g_assert_cmpint (m->scheduler_config.variance_type, ==, DDPM_VARIANCE_FIXED_LARGE);
  g_assert_cmpint (ddpm_model_num_train_timesteps (m), ==, 1000);
}

/* ---- folders built by the test ----------------------------------------------------------------- */

/* 2 levels (8, 16), attention at level 1 (single head), 1 layer per block: 45,259 parameters. */
static const char tiny_config[] =
  "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 8, \"block_out_channels\": [8, 16], \"norm_num_groups\": 4,"
  " \"layers_per_block\": 1, \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],"
  " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"], \"attention_head_dim\": null}";

typedef enum {
  EDIT_NONE,
  EDIT_LEGACY,                     /* legacy attention names, [C, C, 1, 1] weights */
  EDIT_DROP,                       /* leave out `target` */
  EDIT_RESHAPE,                    /* give `target` a wrong first dimension */
  EDIT_EXTRA,                      /* add two tensors nobody asked for */
  EDIT_F16,                        /* store everything as F16 */
} Edit;

typedef struct {
  GString *header;
  GByteArray *data;
  Edit edit;
  const char *target;
  uint32_t counter;
} Writer;

static void
add_tensor (Writer *w, const char *name, int ndim, const int64_t *shape, gboolean f16)
{
  int64_t n = 1;
  GString *dims = g_string_new (NULL);
  for (int i = 0; i < ndim; i++) {
    n *= shape[i];
    g_string_append_printf (dims, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
  }
  gsize begin = w->data->len;
  for (int64_t i = 0; i < n; i++) {
    /* value k / 1024 for a running k in [-512, 511]: exact in F32 and F16 */
    float v = (float) ((int) (w->counter++ % 1024) - 512) / 1024.0f;
    if (f16) {
      /* |v| = m * 2^-10 with m < 512: a normal F16 (or zero) built by hand */
      guint16 h = 0;
      if (v != 0) {
        int e;
        double fr = frexp (fabs (v), &e);               /* v = fr * 2^e, fr in [0.5, 1) */
        h = (guint16) (((e - 1 + 15) << 10) | (int) ((fr * 2 - 1) * 1024)) | (v < 0 ? 0x8000 : 0);
      }
      g_byte_array_append (w->data, (guint8 *) &h, 2);  /* host is little-endian (x86/arm) */
    } else
      g_byte_array_append (w->data, (guint8 *) &v, 4);
  }
  g_string_append_printf (w->header, "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [%s], \"data_offsets\": [%" G_GSIZE_FORMAT
                          ", %u]}", w->header->len > 1 ? ", " : "", name, f16 ? "F16" : "F32", dims->str, begin,
                          w->data->len);
  g_string_free (dims, TRUE);
}

static gboolean
write_visitor (const char *name, void **slot, DdpmParamKind kind, int ndim, const int64_t *shape, gpointer user_data,
               GError **error)
{
  (void) slot, (void) error;
  Writer *w = user_data;
  int64_t s[4] = { 0 };
  memcpy (s, shape, ndim * sizeof *shape);
  g_autofree char *n = g_strdup (name);
  if (w->target && !strcmp (name, w->target)) {
    if (w->edit == EDIT_DROP)
      return TRUE;
    if (w->edit == EDIT_RESHAPE)
      s[0] += 1;
  }
  if (w->edit == EDIT_LEGACY && strstr (name, "attentions.")) {
    static const char *const map[][2] = { { ".to_q.", ".query." }, { ".to_k.", ".key." }, { ".to_v.", ".value." },
                                          { ".to_out.0.", ".proj_attn." } };
    for (int i = 0; i < 4; i++) {
      char *p = strstr (n, map[i][0]);
      if (p) {
        *p = 0;
        char *r = g_strconcat (n, map[i][1], p + strlen (map[i][0]), NULL);
        g_free (n);
        n = r;
        if (kind == DDPM_PARAM_LINEAR) {
          s[2] = s[3] = 1;
          ndim = 4;
        }
        break;
      }
    }
  }
  add_tensor (w, n, ndim, s, w->edit == EDIT_F16);
  return TRUE;
}

/* Writes <dir>/config.json (config_text) and <dir>/diffusion_pytorch_model.safetensors for the tiny
 * layout with one edit. */
static void
write_model (const char *dir, const char *config_text, Edit edit, const char *target)
{
  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_assert_true (g_file_set_contents (cfg_path, config_text, -1, NULL));
  DdpmUNetConfig cfg;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_unet_config_parse (cfg_path, &cfg, &error));
  DdpmUNetWeights layout;
  ddpm_unet_weights_layout (&layout, &cfg);
  Writer w = { g_string_new ("{"), g_byte_array_new (), edit, target, 0 };
  ddpm_unet_weights_foreach (&layout, &cfg, write_visitor, &w, NULL);
  if (edit == EDIT_EXTRA) {
    int64_t s1[1] = { 3 }, s2[2] = { 2, 2 };
    add_tensor (&w, "unused.ema_decay", 1, s1, FALSE);
    add_tensor (&w, "down_blocks.9.resnets.0.norm1.weight", 2, s2, FALSE);
  }
  g_string_append (w.header, ", \"__metadata__\": {\"format\": \"pt\"}}");
  guint64 n = w.header->len;
  GByteArray *file = g_byte_array_new ();
  g_byte_array_append (file, (guint8 *) &n, 8);
  g_byte_array_append (file, (guint8 *) w.header->str, w.header->len);
  g_byte_array_append (file, w.data->data, w.data->len);
  g_autofree char *st = g_build_filename (dir, "diffusion_pytorch_model.safetensors", NULL);
  g_assert_true (g_file_set_contents (st, (char *) file->data, file->len, NULL));
  g_byte_array_unref (file);
  g_byte_array_unref (w.data);
  g_string_free (w.header, TRUE);
}

/* rm -r of the few files these tests create (no recursion into anything else). */
static void
remove_tree (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  if (!d)
    return;
  const char *name;
  while ((name = g_dir_read_name (d))) {
    g_autofree char *p = g_build_filename (dir, name, NULL);
    if (g_file_test (p, G_FILE_TEST_IS_DIR) && !g_file_test (p, G_FILE_TEST_IS_SYMLINK))
      remove_tree (p);
    else
      g_unlink (p);
  }
  g_rmdir (dir);
}

static char *
temp_dir (void)
{
  char *dir = g_dir_make_tmp ("ddpm-test-model-XXXXXX", NULL);
  g_assert_nonnull (dir);
  return dir;
}

static void
test_built_good (void)
{
  g_autofree char *dir = temp_dir ();
  write_model (dir, tiny_config, EDIT_NONE, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (m->n_params, ==, 45259);
  g_assert_false (m->scheduler_config.from_file);             /* no scheduler config: defaults */
  g_assert_cmpint (m->scheduler_config.variance_type, ==, DDPM_VARIANCE_FIXED_SMALL);
  g_assert_cmpfloat_with_epsilon (ddpm_model_alpha_bar (m, 0), 0.9999, 1e-7);
  /* The writer's running pattern survives binding: arena[i] = ((i % 1024) - 512) / 1024. */
  int bad = 0;
  for (int64_t i = 0; i < m->n_params; i++)
    bad += m->arena[i] != (float) ((int) (i % 1024) - 512) / 1024.0f;
  g_assert_cmpint (bad, ==, 0);

  /* The same weights stored as F16 load to the same float32 values. */
  g_autofree char *dir16 = g_build_filename (dir, "f16", NULL);
  write_model (dir16, tiny_config, EDIT_F16, NULL);
  g_autoptr (DdpmModel) h = ddpm_model_load (dir16, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (h->weights_dtype, ==, "F16");
  g_assert_cmpmem (h->arena, h->n_params * 4, m->arena, m->n_params * 4);

  /* A scheduler/ subfolder next to config.json is used. */
  g_autofree char *sdir = g_build_filename (dir, "scheduler", NULL);
  g_mkdir (sdir, 0755);
  g_autofree char *sched = g_build_filename (sdir, "scheduler_config.json", NULL);
  g_assert_true (g_file_set_contents (sched, "{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": 200}", -1,
                                      NULL));
  g_autoptr (DdpmModel) s = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (s->scheduler_config.kind, ==, DDPM_SAMPLER_DDIM);
  g_assert_cmpint (ddpm_model_num_train_timesteps (s), ==, 200);
  /* ... and scheduler_config.json beside config.json wins over it. */
  g_autofree char *beside = g_build_filename (dir, "scheduler_config.json", NULL);
  g_assert_true (g_file_set_contents (beside, "{\"num_train_timesteps\": 300}", -1, NULL));
  g_autoptr (DdpmModel) s2 = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ddpm_model_num_train_timesteps (s2), ==, 300);
  /* An unsupported scheduler config fails the load, naming the field. */
  g_assert_true (g_file_set_contents (beside, "{\"variance_type\": \"learned_range\"}", -1, NULL));
  g_autoptr (DdpmModel) s3 = ddpm_model_load (dir, &error);
  g_assert_null (s3);
  expect_error (error, DDPM_ERROR_UNSUPPORTED, "variance_type", "learned_range");
  remove_tree (dir);
}

static void
test_built_pipeline (void)
{
  g_autofree char *dir = temp_dir ();
  g_autofree char *unet = g_build_filename (dir, "unet", NULL);
  g_autofree char *sdir = g_build_filename (dir, "scheduler", NULL);
  write_model (unet, tiny_config, EDIT_NONE, NULL);
  g_mkdir (sdir, 0755);
  g_autofree char *sched = g_build_filename (sdir, "scheduler_config.json", NULL);
  g_assert_true (g_file_set_contents (sched, "{\"_class_name\": \"DDPMScheduler\", \"variance_type\": \"fixed_large\"}",
                                      -1, NULL));
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_true (m->scheduler_config.from_file);
  g_assert_cmpint (m->scheduler_config.variance_type, ==, DDPM_VARIANCE_FIXED_LARGE);
  g_assert_nonnull (strstr (m->weights_file, "unet"));
  remove_tree (dir);
}

static void
test_built_legacy (void)
{
  g_autofree char *dir = temp_dir ();
  write_model (dir, tiny_config, EDIT_LEGACY, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_true (m->legacy_attention_names);
  g_assert_cmpint (m->n_unused_tensors, ==, 0);
  int bad = 0;
  for (int64_t i = 0; i < m->n_params; i++)
    bad += m->arena[i] != (float) ((int) (i % 1024) - 512) / 1024.0f;
  g_assert_cmpint (bad, ==, 0);
  remove_tree (dir);
}

static void
test_built_extra (void)
{
  g_autofree char *dir = temp_dir ();
  write_model (dir, tiny_config, EDIT_EXTRA, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (m->n_unused_tensors, ==, 2);
  g_autofree char *d = ddpm_model_describe (m);
  g_assert_nonnull (strstr (d, "2 unused tensors ignored"));
  remove_tree (dir);
}

static void
test_missing_tensor (void)
{
  static const char *const targets[] = { "conv_out.bias", "down_blocks.1.resnets.0.conv_shortcut.weight",
                                         "time_embedding.linear_2.weight" };
  for (guint i = 0; i < G_N_ELEMENTS (targets); i++) {
    g_autofree char *dir = temp_dir ();
    write_model (dir, tiny_config, EDIT_DROP, targets[i]);
    g_autoptr (GError) error = NULL;
    g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
    g_assert_null (m);
    expect_error (error, DDPM_ERROR_SHAPE, targets[i], "missing");
    remove_tree (dir);
  }
  /* An attention tensor: the message gives both names looked for. */
  g_autofree char *dir = temp_dir ();
  write_model (dir, tiny_config, EDIT_DROP, "mid_block.attentions.0.to_k.bias");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
  expect_error (error, DDPM_ERROR_SHAPE, "mid_block.attentions.0.to_k.bias", "mid_block.attentions.0.key.bias");
  remove_tree (dir);
}

static void
test_wrong_shape (void)
{
  g_autofree char *dir = temp_dir ();
  write_model (dir, tiny_config, EDIT_RESHAPE, "up_blocks.0.resnets.1.conv1.weight");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
  g_assert_null (m);
  /* up block 0 resnet 1 takes 16 (hidden) + 8 (skip from level 0) channels. */
  expect_error (error, DDPM_ERROR_SHAPE, "up_blocks.0.resnets.1.conv1.weight", "[17, 24, 3, 3]");
  g_assert_nonnull (strstr (error->message, "[16, 24, 3, 3]"));
  remove_tree (dir);

  /* A config that disagrees with the weights (in_channels 4 vs the file's 3). */
  g_autofree char *dir2 = temp_dir ();
  write_model (dir2, tiny_config, EDIT_NONE, NULL);
  g_autofree char *cfg = g_build_filename (dir2, "config.json", NULL);
  g_autofree char *text = g_strdup_printf ("{\"in_channels\": 4, %s", tiny_config + 1);
  g_assert_true (g_file_set_contents (cfg, text, -1, NULL));
  g_clear_error (&error);
  g_autoptr (DdpmModel) m2 = ddpm_model_load (dir2, &error);
  expect_error (error, DDPM_ERROR_SHAPE, "conv_in.weight", "[8, 4, 3, 3]");
  remove_tree (dir2);
}

static void
test_missing_files (void)
{
  g_autoptr (GError) error = NULL;
  g_assert_null (ddpm_model_load ("/nonexistent/ddpm-model", &error));
  expect_error (error, DDPM_ERROR_IO, "/nonexistent/ddpm-model", NULL);
  g_clear_error (&error);
  g_assert_null (ddpm_model_load (NULL, &error));
  expect_error (error, DDPM_ERROR_ARGUMENT, NULL, NULL);
  g_clear_error (&error);

  g_autofree char *dir = temp_dir ();
  g_assert_null (ddpm_model_load (dir, &error));              /* empty folder */
  expect_error (error, DDPM_ERROR_IO, "config.json", NULL);
  g_clear_error (&error);

  write_model (dir, tiny_config, EDIT_NONE, NULL);
  g_autofree char *st = g_build_filename (dir, "diffusion_pytorch_model.safetensors", NULL);
  g_unlink (st);
  g_assert_null (ddpm_model_load (dir, &error));               /* config, no weights */
  expect_error (error, DDPM_ERROR_IO, "diffusion_pytorch_model.safetensors", NULL);
  g_clear_error (&error);

  /* A broken weights file: the safetensors error comes through, naming the file. */
  g_assert_true (g_file_set_contents (st, "\x08\0\0\0\0\0\0\0{broken}", 16, NULL));
  g_assert_null (ddpm_model_load (dir, &error));
  expect_error (error, DDPM_ERROR_FORMAT, st, NULL);
  g_clear_error (&error);

  /* Malformed / non-object / unsupported config.json. */
  write_model (dir, tiny_config, EDIT_NONE, NULL);
  g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
  g_assert_true (g_file_set_contents (cfg, "{\"block_out_channels\": [8, 16", -1, NULL));
  g_assert_null (ddpm_model_load (dir, &error));
  expect_error (error, DDPM_ERROR_FORMAT, cfg, NULL);
  g_clear_error (&error);
  g_assert_true (g_file_set_contents (cfg, "[]", -1, NULL));
  g_assert_null (ddpm_model_load (dir, &error));
  expect_error (error, DDPM_ERROR_FORMAT, "not a JSON object", NULL);
  g_clear_error (&error);
  g_autofree char *unsup = g_strdup_printf ("{\"class_embed_type\": \"timestep\", %s", tiny_config + 1);
  g_assert_true (g_file_set_contents (cfg, unsup, -1, NULL));
  g_assert_null (ddpm_model_load (dir, &error));
  expect_error (error, DDPM_ERROR_UNSUPPORTED, "class_embed_type", NULL);
  remove_tree (dir);
}

/* ---- random models ----------------------------------------------------------------------------- */

static void
test_random (void)
{
  DdpmUNetConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_unet_config_named ("cifar10-32", &c, &error));
  c.block_out_channels[0] = 32;    /* a narrower cifar (same structure) keeps the test light */
  c.block_out_channels[1] = c.block_out_channels[2] = c.block_out_channels[3] = 64;
  c.time_embedding_dim = 128;
  g_autoptr (DdpmModel) a = ddpm_model_new_random (&c, 42, &error);
  g_assert_no_error (error);
  g_autoptr (DdpmModel) b = ddpm_model_new_random (&c, 42, &error);
  g_autoptr (DdpmModel) d = ddpm_model_new_random (&c, 43, &error);
  g_assert_cmpint (a->n_params, ==, ddpm_unet_weights_count (&c));
  g_assert_cmpmem (a->arena, a->n_params * 4, b->arena, b->n_params * 4);
  g_assert_true (memcmp (a->arena, d->arena, a->n_params * 4) != 0);
  g_assert_cmpstr (a->weights_format, ==, "random");
  g_assert_null (a->path);
  g_assert_true (ddpm_model_has_attention (a));       /* cifar10-32: attention at 16x16 and mid */

  /* Without any attention block (down, up, mid) the UNet is fully convolutional. */
  DdpmUNetConfig conv = c;
  conv.add_attention = FALSE;
  for (int i = 0; i < conv.n_levels; i++)
    conv.down_attn[i] = conv.up_attn[i] = FALSE;
  g_autoptr (DdpmModel) no_attn = ddpm_model_new_random (&conv, 42, &error);
  g_assert_no_error (error);
  g_assert_false (ddpm_model_has_attention (no_attn));
  conv.up_attn[conv.n_levels - 1] = TRUE;
  g_autoptr (DdpmModel) one_attn = ddpm_model_new_random (&conv, 42, &error);
  g_assert_no_error (error);
  g_assert_true (ddpm_model_has_attention (one_attn));

  /* Weight std ~ 1/sqrt(fan_in); norm gammas ~ 1. */
  const float *w = a->weights.down[1].resnets[0].conv1.weight;   /* (64, 32, 3, 3): fan_in 288 */
  double ss = 0;
  for (int i = 0; i < 64 * 288; i++)
    ss += (double) w[i] * w[i];
  double std = sqrt (ss / (64 * 288));
  printf ("# random conv1 std %.4f (1/sqrt(288) = %.4f)\n", std, 1 / sqrt (288.0));
  g_assert_cmpfloat (fabs (std * sqrt (288.0) - 1), <, 0.05);
  const float *gamma = a->weights.conv_norm_out.gamma;
  double mean = 0;
  for (int i = 0; i < 32; i++)
    mean += gamma[i] / 32;
  g_assert_cmpfloat (fabs (mean - 1), <, 0.05);

  g_autofree char *desc = ddpm_model_describe (a);
  g_assert_nonnull (strstr (desc, "random"));

  /* Getters on the full named architectures (no weights needed beyond the layout). */
  DdpmUNetConfig big;
  g_assert_true (ddpm_unet_config_named ("celebahq-256", &big, &error));
  big.block_out_channels[0] = big.block_out_channels[1] = 32;      /* small widths, same 6 levels */
  big.block_out_channels[2] = big.block_out_channels[3] = 32;
  big.block_out_channels[4] = big.block_out_channels[5] = 64;
  big.time_embedding_dim = 128;
  g_autoptr (DdpmModel) e = ddpm_model_new_random (&big, 1, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ddpm_model_size_multiple (e), ==, 32);
  g_assert_cmpint (ddpm_model_sample_size (e), ==, 256);

  /* An impossible config is refused, not crashed on. */
  DdpmUNetConfig bad = c;
  bad.norm_num_groups = 7;
  g_autoptr (DdpmModel) f = ddpm_model_new_random (&bad, 1, &error);
  g_assert_null (f);
  expect_error (error, DDPM_ERROR_ARGUMENT, "norm_num_groups", NULL);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/loader/model/fixture-cifar", test_fixture_cifar);
  g_test_add_func ("/loader/model/fixture-legacy-names", test_fixture_legacy);
  g_test_add_func ("/loader/model/fixture-pipeline-fp16", test_fixture_pipeline_fp16);
  g_test_add_func ("/loader/model/fixture-bf16", test_fixture_bf16);
  g_test_add_func ("/loader/model/fixture-pytorch-bin", test_fixture_bin);
  g_test_add_func ("/loader/model/built-good", test_built_good);
  g_test_add_func ("/loader/model/built-pipeline", test_built_pipeline);
  g_test_add_func ("/loader/model/built-legacy", test_built_legacy);
  g_test_add_func ("/loader/model/extra-tensors", test_built_extra);
  g_test_add_func ("/loader/model/missing-tensor", test_missing_tensor);
  g_test_add_func ("/loader/model/wrong-shape", test_wrong_shape);
  g_test_add_func ("/loader/model/missing-files", test_missing_files);
  g_test_add_func ("/loader/model/random", test_random);
  return g_test_run ();
}
