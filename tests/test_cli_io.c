/* test_cli_io.c: the ddpm tool's picture handling (cli/png_io.c, cli/image_ops.c) against references
 * written by tests/fixtures/png/make_png_fixtures.py: PNGs of every colour type and depth with the values
 * a reader must return, diffusers' 8-bit quantisation, and numpy.pad(mode="reflect"). */
#include "image_ops.h"
#include "npy.h"
#include "png_io.h"
#include "test_util.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static char *tmp_dir;

static DdpmNpyArray *
load_npy (const char *name)
{
  g_autofree char *rel = g_build_filename ("png", name, NULL);
  g_autofree char *path = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  DdpmNpyArray *a = ddpm_npy_load (path, &error);
  g_assert_no_error (error);
  return a;
}

/* Each NAME.png decodes to exactly NAME.npy (C, H, W). */
static void
test_read_color_types (void)
{
  const char *names[] = { "gray8", "graya8", "rgb8", "rgba8", "gray16", "rgba16", "gray1", "gray4", "palette",
                          "palette_trns", "gray_trns" };
  for (size_t i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *png_name = g_strdup_printf ("png/%s.png", names[i]);
      g_autofree char *npy_name = g_strdup_printf ("%s.npy", names[i]);
      g_autofree char *path = fixture_path (png_name);
      g_autoptr (GError) error = NULL;
      g_autoptr (CliImage) img = cli_png_load (path, CLI_PNG_DEFAULT_MAX_PIXELS, &error);
      g_assert_no_error (error);
      g_autoptr (DdpmNpyArray) want = load_npy (npy_name);
      g_assert_cmpint (img->channels, ==, want->shape[0]);
      g_assert_cmpint (img->height, ==, want->shape[1]);
      g_assert_cmpint (img->width, ==, want->shape[2]);
      CompareResult r = compare_f32 (img->data, want->data, want->numel);
      g_autofree char *label = g_strdup_printf ("%s (%d channels, %d-bit)", names[i], img->channels,
                                                img->source_bit_depth);
      report_compare (label, &r);
      g_assert_cmpfloat (r.max_abs, ==, 0);
      g_assert_cmpuint (r.n_nonfinite, ==, 0);
    }
}

static void
expect_load_error (const char *path, uint64_t max_pixels, int code, const char *needle)
{
  g_autoptr (GError) error = NULL;
  CliImage *img = cli_png_load (path, max_pixels, &error);
  g_assert_null (img);
  g_assert_error (error, DDPM_ERROR, code);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, path));
  if (!strstr (error->message, needle))
    g_error ("message '%s' lacks '%s'", error->message, needle);
}

static void
test_read_errors (void)
{
  g_autofree char *trunc = fixture_path ("png/bad_truncated.png");
  expect_load_error (trunc, CLI_PNG_DEFAULT_MAX_PIXELS, DDPM_ERROR_FORMAT, "invalid or truncated PNG");
  g_autofree char *crc = fixture_path ("png/bad_crc.png");
  expect_load_error (crc, CLI_PNG_DEFAULT_MAX_PIXELS, DDPM_ERROR_FORMAT, "invalid or truncated PNG");
  g_autofree char *npy = fixture_path ("png/gray8.npy");
  expect_load_error (npy, CLI_PNG_DEFAULT_MAX_PIXELS, DDPM_ERROR_FORMAT, "not a PNG");
  g_autofree char *missing = g_build_filename (tmp_dir, "missing.png", NULL);
  expect_load_error (missing, CLI_PNG_DEFAULT_MAX_PIXELS, DDPM_ERROR_IO, "No such file");
  /* 5 x 3 = 15 pixels against a limit of 14. */
  g_autofree char *rgb = fixture_path ("png/rgb8.png");
  expect_load_error (rgb, 14, DDPM_ERROR_LIMIT, "limit of 14 pixels");
}

/* Save then load, for 1..4 channels: values come back as round(255 x) / 255. */
static void
test_write_roundtrip (void)
{
  const int w = 7, h = 4;
  for (int c = 1; c <= 4; c++)
    {
      size_t n = (size_t) c * w * h;
      g_autofree float *x = g_new (float, n);
      for (size_t i = 0; i < n; i++)
        x[i] = (float) ((i * 37) % 300) / 280.0f - 0.03f;  /* covers < 0 and > 1 (clamped) */
      g_autofree char *path = g_build_filename (tmp_dir, "rt.png", NULL);
      g_autoptr (GError) error = NULL;
      g_assert_true (cli_png_save (path, x, c, h, w, &error));
      g_assert_no_error (error);
      g_autoptr (CliImage) img = cli_png_load (path, CLI_PNG_DEFAULT_MAX_PIXELS, &error);
      g_assert_no_error (error);
      g_assert_cmpint (img->channels, ==, c);
      g_assert_cmpint (img->width, ==, w);
      g_assert_cmpint (img->height, ==, h);
      g_assert_cmpint (img->source_bit_depth, ==, 8);
      for (size_t i = 0; i < n; i++)
        g_assert_cmpfloat (img->data[i], ==, cli_png_quantize_u8 (x[i]) / 255.0f);
    }
  g_autoptr (GError) error = NULL;
  g_autofree char *bad = g_build_filename (tmp_dir, "no-dir", "x.png", NULL);
  g_assert_false (cli_png_save (bad, (float[]) { 0 }, 1, 1, 1, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_IO);
  g_clear_error (&error);
  g_assert_false (cli_png_save (bad, (float[]) { 0 }, 5, 1, 1, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED);
}

/* (clamp(x) * 255).round() exactly as numpy does it in float32 (half to even). */
static void
test_quantize_matches_numpy (void)
{
  g_autoptr (DdpmNpyArray) x = load_npy ("quant_x.npy");
  g_autoptr (DdpmNpyArray) q = load_npy ("quant_u8.npy");
  g_assert_cmpint (q->type, ==, DDPM_NPY_I32);
  int mismatches = 0;
  for (int64_t i = 0; i < x->numel; i++)
    {
      int got = cli_png_quantize_u8 (((float *) x->data)[i]);
      int want = ((int32_t *) q->data)[i];
      if (got != want)
        {
          g_test_message ("x=%.9g: got %d, numpy %d", ((float *) x->data)[i], got, want);
          mismatches++;
        }
    }
  g_assert_cmpint (mismatches, ==, 0);
  g_assert_cmpint (cli_png_quantize_u8 (NAN), ==, 0);
}

static void
test_reflect_pad (void)
{
  const char *cases[] = { "pad_a", "pad_b", "pad_c" };
  for (size_t k = 0; k < G_N_ELEMENTS (cases); k++)
    {
      g_autofree char *in_name = g_strdup_printf ("%s_in.npy", cases[k]);
      g_autofree char *out_name = g_strdup_printf ("%s_out.npy", cases[k]);
      g_autoptr (DdpmNpyArray) in = load_npy (in_name);
      g_autoptr (DdpmNpyArray) want = load_npy (out_name);
      int c = (int) in->shape[0], h = (int) in->shape[1], w = (int) in->shape[2];
      int hp = (int) want->shape[1], wp = (int) want->shape[2];
      g_autofree float *got = image_pad_reflect (in->data, c, h, w, hp, wp);
      CompareResult r = compare_f32 (got, want->data, want->numel);
      report_compare (cases[k], &r);
      g_assert_cmpfloat (r.max_abs, ==, 0);
      g_autofree float *back = g_new (float, in->numel);
      image_crop (got, c, hp, wp, h, w, back);
      g_assert_cmpmem (back, in->numel * 4, in->data, in->numel * 4);
    }
  g_assert_cmpint (round_up_multiple (17, 8), ==, 24);
  g_assert_cmpint (round_up_multiple (16, 8), ==, 16);
}

/* Channel layouts: image -> model -> image keeps the image's layout, alpha untouched unless the model
 * has an alpha channel. */
static void
test_channel_map (void)
{
  enum { P = 2 };
  g_autoptr (GError) error = NULL;
  ChannelMap m;

  /* RGBA image, RGB model: alpha kept, colour through the model. */
  g_assert_true (channel_map_init (&m, 4, 3, &error));
  float rgba[4 * P] = { 0, 1, 0.5f, 0.25f, 1, 0, 0.2f, 0.7f };
  float model[4 * P], out[4 * P];
  channel_map_to_model (&m, rgba, model, P);
  float want_model[3 * P] = { -1, 1, 0, -0.5f, 1, -1 };
  g_assert_cmpmem (model, sizeof want_model, want_model, sizeof want_model);
  for (int i = 0; i < 3 * P; i++)
    model[i] = -model[i];          /* "denoise": invert the colours */
  channel_map_from_model (&m, model, rgba, out, P);
  float want_out[4 * P] = { 1, 0, 0.5f, 0.75f, 0, 1, 0.2f, 0.7f };
  g_assert_cmpmem (out, sizeof want_out, want_out, sizeof want_out);

  /* Gray image, RGB model: replicated in, luma out (equal channels give the value back). */
  g_assert_true (channel_map_init (&m, 1, 3, &error));
  float gray[P] = { 0.25f, 1 };
  channel_map_to_model (&m, gray, model, P);
  float want_rep[3 * P] = { -0.5f, 1, -0.5f, 1, -0.5f, 1 };
  g_assert_cmpmem (model, sizeof want_rep, want_rep, sizeof want_rep);
  channel_map_from_model (&m, model, gray, out, P);
  g_assert_cmpfloat_with_epsilon (out[0], 0.25f, 1e-6);
  g_assert_cmpfloat_with_epsilon (out[1], 1.0f, 1e-6);

  /* RGB image, RGBA model: opaque alpha in, dropped out. */
  g_assert_true (channel_map_init (&m, 3, 4, &error));
  float rgb[3 * P] = { 0, 1, 0.5f, 0.5f, 1, 0 };
  channel_map_to_model (&m, rgb, model, P);
  g_assert_cmpfloat (model[3 * P], ==, 1);
  g_assert_cmpfloat (model[3 * P + 1], ==, 1);
  channel_map_from_model (&m, model, rgb, out, P);
  g_assert_cmpmem (out, sizeof rgb, rgb, sizeof rgb);

  /* Gray+alpha image, RGBA model: the model's alpha is the result's alpha. */
  g_assert_true (channel_map_init (&m, 2, 4, &error));
  float ga[2 * P] = { 0.5f, 0.5f, 0, 1 };
  channel_map_to_model (&m, ga, model, P);
  g_assert_cmpfloat (model[3 * P], ==, -1);
  g_assert_cmpfloat (model[3 * P + 1], ==, 1);
  model[3 * P] = 0;                /* alpha 0.5 */
  channel_map_from_model (&m, model, ga, out, P);
  g_assert_cmpfloat (out[2], ==, 0.5f);
  g_assert_cmpfloat (out[3], ==, 1);

  /* RGB image, gray model: luma in, replicated out. */
  g_assert_true (channel_map_init (&m, 3, 1, &error));
  channel_map_to_model (&m, rgb, model, P);
  g_assert_cmpfloat_with_epsilon (model[0], 2 * (0.587f * 0.5f + 0.114f) - 1, 1e-6);
  channel_map_from_model (&m, model, rgb, out, P);
  g_assert_cmpfloat (out[0], ==, out[P]);
  g_assert_cmpfloat (out[0], ==, out[2 * P]);

  g_assert_false (channel_map_init (&m, 3, 6, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  tmp_dir = g_dir_make_tmp ("test_cli_io-XXXXXX", NULL);
  g_test_add_func ("/cli/png/read-color-types", test_read_color_types);
  g_test_add_func ("/cli/png/read-errors", test_read_errors);
  g_test_add_func ("/cli/png/write-roundtrip", test_write_roundtrip);
  g_test_add_func ("/cli/png/quantize-matches-numpy", test_quantize_matches_numpy);
  g_test_add_func ("/cli/image/reflect-pad", test_reflect_pad);
  g_test_add_func ("/cli/image/channel-map", test_channel_map);
  int rc = g_test_run ();
  g_autofree char *rt = g_build_filename (tmp_dir, "rt.png", NULL);
  g_remove (rt);
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return rc;
}
