/* test_faults.c: what happens when things go wrong. A crash or a hang inside GIMP loses the user's unsaved
 * work, and model files come from the internet, so every failure below must come back as a GError (domain
 * DDPM_ERROR, the right code, a message naming the file/limit) with the caller's buffers untouched and
 * nothing leaked (tools/sanitize.sh runs this file under ASan/LSan/UBSan and, for the threads, TSan).
 *
 *   /faults/fuzz-regressions/...  every input a fuzzer once crashed on (tests/fixtures/fuzz-regressions/<target>/)
 *                               replayed through the same code as the fuzz target (tests/fuzz/fuzz_parsers.h)
 *   /faults/limits/...            absurd sizes are refused before anything is allocated, naming the limit
 *   /faults/cancel/...            ddpm_context_cancel from another thread at a random step
 *   /faults/alloc               the n-th backend allocation fails, for every n (fault.h)
 *   /faults/files-change        the model folder is truncated, rewritten or deleted after loading
 *   /faults/numeric/...           NaN / Inf / overflowing weights give DDPM_ERROR_NUMERIC
 *   /faults/threads/...           two contexts on two threads give the one-at-a-time results
 *
 * Most runs use tests/fuzz/seeds/model-tiny (2,577 parameters, 1 channel, 4x4, DDIM over 10 train steps):
 * a whole sampling run takes well under a millisecond, so the loops below can afford hundreds of runs. */
#include "context.h"
#include "fault.h"
#include "model.h"
#include "npy.h"
#include "pickle.h"
#include "tensor_table.h"
#include "test_util.h"
#include "unet_config.h"
#include "zip_reader.h"
#include "fuzz/fuzz_parsers.h"

#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

#define TINY "../fuzz/seeds/model-tiny"   /* relative to $DDPM_FIXTURES */
#define SENTINEL 12345.0f                  /* what the caller's buffers hold before a failing call */

/* ---- helpers ----------------------------------------------------------------------------------- */

static float *
sentinel_buffer (size_t n)
{
  float *b = g_new (float, n);
  for (size_t i = 0; i < n; i++)
    b[i] = SENTINEL;
  return b;
}

static void
assert_untouched (const float *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (b[i] != SENTINEL)
      g_error ("caller's buffer changed at [%zu]: %g", i, b[i]);
}

/* The error is ours, has the code, and its message contains each needle (NULL-terminated list). */
static void
assert_error (const GError *error, int code, ...)
{
  g_assert_nonnull (error);
  g_test_message ("%s", error->message);
  g_assert_true (error->domain == DDPM_ERROR);
  if (error->code != code)
    g_error ("expected code %d, got %d: %s", code, error->code, error->message);
  va_list ap;
  va_start (ap, code);
  for (const char *needle; (needle = va_arg (ap, const char *)) != NULL;)
    if (!strstr (error->message, needle))
      g_error ("message '%s' does not mention '%s'", error->message, needle);
  va_end (ap);
}

static size_t
sample_len (const DdpmModel *model, const DdpmSampleParams *p)
{
  int h = p->height > 0 ? p->height : model->config.sample_size;
  int w = p->width > 0 ? p->width : model->config.sample_size;
  return (size_t) p->batch * model->config.in_channels * h * w;
}

/* A private copy of a fixture folder's regular files in a fresh temporary folder. */
static char *
copy_folder (const char *rel)
{
  g_autofree char *src = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  char *dst = g_dir_make_tmp ("ddpm-test-faults-XXXXXX", &error);
  g_assert_no_error (error);
  g_autoptr (GDir) dir = g_dir_open (src, 0, &error);
  g_assert_no_error (error);
  for (const char *name; (name = g_dir_read_name (dir)) != NULL;) {
    g_autofree char *from = g_build_filename (src, name, NULL), *to = g_build_filename (dst, name, NULL);
    if (!g_file_test (from, G_FILE_TEST_IS_REGULAR))
      continue;
    g_autofree char *data = NULL;
    gsize len;
    g_assert_true (g_file_get_contents (from, &data, &len, &error));
    g_assert_true (g_file_set_contents (to, data, (gssize) len, &error));
  }
  return dst;
}

static void
remove_folder (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  for (const char *name; d && (name = g_dir_read_name (d)) != NULL;) {
    g_autofree char *p = g_build_filename (dir, name, NULL);
    g_unlink (p);
  }
  g_rmdir (dir);
}

/* ---- fuzz regressions ---------------------------------------------------------------------------- */

typedef gboolean (*ParseFunc) (const guint8 *data, size_t size, GError **error);

static const struct {
  const char *target;
  ParseFunc parse;
} PARSERS[] = {
  { "safetensors", fuzz_safetensors }, { "torch_zip", fuzz_torch_zip }, { "pickle", fuzz_pickle },
  { "config", fuzz_config },           { "npy", fuzz_npy },             { "model", fuzz_model },
};

static void
test_fuzz_regressions (gconstpointer data)
{
  guint k = GPOINTER_TO_UINT (data);
  g_autofree char *rel = g_build_filename ("fuzz-regressions", PARSERS[k].target, NULL);
  g_autofree char *dir = fixture_path (rel);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  if (!d) {
    g_test_skip ("no regression inputs for this target");
    return;
  }
  int n = 0;
  for (const char *name; (name = g_dir_read_name (d)) != NULL;) {
    g_autofree char *path = g_build_filename (dir, name, NULL);
    g_autofree char *bytes = NULL;
    gsize len;
    g_autoptr (GError) error = NULL;
    g_assert_true (g_file_get_contents (path, &bytes, &len, &error));
    gboolean ok = PARSERS[k].parse ((const guint8 *) bytes, len, &error);
    g_test_message ("%s/%s (%zu bytes): %s", PARSERS[k].target, name, len, ok ? "accepted" : error->message);
    g_assert_true (ok == (error == NULL));
    g_assert_true (ok || error->domain == DDPM_ERROR);
    n++;
  }
  g_test_message ("%d inputs replayed", n);
}

/* ---- limits -------------------------------------------------------------------------------------- */

static GBytes *
safetensors_bytes (const char *header, gsize data_len)
{
  gsize n = strlen (header);
  guint8 *b = g_malloc0 (8 + n + data_len);
  for (int i = 0; i < 8; i++)
    b[i] = (guint8) ((guint64) n >> (8 * i));
  memcpy (b + 8, header, n);
  return g_bytes_new_take (b, 8 + n + data_len);
}

static void
test_limit_safetensors (void)
{
  g_autoptr (GError) error = NULL;
  /* A header length of 200 MiB in a 16-byte file: refused before the length is trusted. */
  guint8 raw[16] = { 0 };
  guint64 n = (guint64) 200 << 20;
  for (int i = 0; i < 8; i++)
    raw[i] = (guint8) (n >> (8 * i));
  g_autoptr (GBytes) b1 = g_bytes_new (raw, sizeof raw);
  g_assert_null (ddpm_safetensors_parse (b1, "huge-header.safetensors", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "huge-header.safetensors", "DDPM_LIMIT_SAFETENSORS_HEADER", "209715200", NULL);
  g_clear_error (&error);

  /* More dimensions than DDPM_MAX_DIMS. */
  g_autoptr (GBytes) b2 = safetensors_bytes ("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                                             "\"data_offsets\":[0,4]}}", 4);
  g_assert_null (ddpm_safetensors_parse (b2, "dims.safetensors", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "DDPM_MAX_DIMS", "9 dimensions", NULL);
  g_clear_error (&error);

  /* A shape whose element count overflows 64 bits. */
  g_autoptr (GBytes) b3 = safetensors_bytes ("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                                             "\"data_offsets\":[0,4]}}", 4);
  g_assert_null (ddpm_safetensors_parse (b3, "numel.safetensors", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "overflows", NULL);
  g_clear_error (&error);

  /* A tensor of 4 GB in a file of a few bytes: the byte range is checked against the file. */
  g_autoptr (GBytes) b4 = safetensors_bytes ("{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000000],"
                                             "\"data_offsets\":[0,4000000000]}}", 4);
  g_assert_null (ddpm_safetensors_parse (b4, "bytes.safetensors", &error));
  assert_error (error, DDPM_ERROR_FORMAT, "outside the data region of 4 bytes", NULL);
  g_clear_error (&error);

  /* One entry over DDPM_LIMIT_TENSOR_COUNT (cheap entries: the count is checked before any of them). */
  GString *h = g_string_new ("{");
  for (int i = 0; i <= DDPM_LIMIT_TENSOR_COUNT + 1; i++)
    g_string_append_printf (h, "%s\"%x\":0", i ? "," : "", i);
  g_string_append_c (h, '}');
  g_autoptr (GBytes) b5 = safetensors_bytes (h->str, 0);
  g_string_free (h, TRUE);
  g_assert_null (ddpm_safetensors_parse (b5, "count.safetensors", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "DDPM_LIMIT_TENSOR_COUNT", "100000", NULL);
}

/* JSON bombs: a 2 MB safetensors header of nested '[' overflowed json-glib's recursive parser (SIGSEGV),
 * as did a config.json under its 1 MB limit; a 10 MB header of one long shape took 400 MB of JSON nodes.
 * Both are refused by a scan of the raw text before json-glib sees it. */
static void
test_limit_json (void)
{
  g_autoptr (GError) error = NULL;
  const gsize depth = 1000000;
  g_autofree char *deep = g_malloc (2 * depth + 1);
  memset (deep, '[', depth);
  memset (deep + depth, ']', depth);
  deep[2 * depth] = 0;
  g_autoptr (GBytes) b1 = safetensors_bytes (deep, 0);
  g_assert_null (ddpm_safetensors_parse (b1, "deep.safetensors", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "deep.safetensors", "DDPM_LIMIT_JSON_DEPTH", "64", NULL);
  g_clear_error (&error);

  DdpmUNetConfig cfg;
  DdpmSchedulerConfig scfg;
  const gsize half = DDPM_LIMIT_CONFIG_BYTES / 2;
  g_assert_false (ddpm_unet_config_parse_data (deep + depth - half, 2 * half, NULL, &cfg, &error));
  assert_error (error, DDPM_ERROR_LIMIT, "config.json", "DDPM_LIMIT_JSON_DEPTH", NULL);
  g_clear_error (&error);
  g_assert_false (ddpm_scheduler_config_parse_data (deep + depth - half, 2 * half, NULL, &scfg, &error));
  assert_error (error, DDPM_ERROR_LIMIT, "scheduler_config.json", "DDPM_LIMIT_JSON_DEPTH", NULL);
  g_clear_error (&error);

  /* Exactly DDPM_LIMIT_JSON_DEPTH levels pass the guard (and fail later as a non-object entry). */
  GString *ok = g_string_new ("{\"a\":");
  for (int i = 0; i < DDPM_LIMIT_JSON_DEPTH - 1; i++)
    g_string_append_c (ok, '[');
  for (int i = 0; i < DDPM_LIMIT_JSON_DEPTH - 1; i++)
    g_string_append_c (ok, ']');
  g_string_append_c (ok, '}');
  g_autoptr (GBytes) b2 = safetensors_bytes (ok->str, 0);
  g_string_free (ok, TRUE);
  g_assert_null (ddpm_safetensors_parse (b2, "ok-depth.safetensors", &error));
  assert_error (error, DDPM_ERROR_FORMAT, "not an object", NULL);
  g_clear_error (&error);

  /* Brackets and commas inside strings do not count. */
  g_autoptr (GBytes) b3 = safetensors_bytes ("{\"__metadata__\":{\"k\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                                             "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[\"}}", 0);
  g_autoptr (DdpmTensorTable) t3 = ddpm_safetensors_parse (b3, "strings.safetensors", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddpm_tensor_table_size (t3), ==, 0);

  /* One shape of 4 million dimensions: refused by the value count before parsing. */
  GString *wide = g_string_new ("{\"a\":{\"dtype\":\"F32\",\"shape\":[0");
  for (int i = 0; i < 4000000; i++)
    g_string_append (wide, ",0");
  g_string_append (wide, "],\"data_offsets\":[0,0]}}");
  g_autoptr (GBytes) b4 = safetensors_bytes (wide->str, 0);
  g_string_free (wide, TRUE);
  g_assert_null (ddpm_safetensors_parse (b4, "wide.safetensors", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "DDPM_LIMIT_SAFETENSORS_VALUES", "3200000", NULL);
}

static void
put16 (guint8 *p, guint v)
{
  p[0] = (guint8) v;
  p[1] = (guint8) (v >> 8);
}

static void
put32 (guint8 *p, guint32 v)
{
  put16 (p, v & 0xffff);
  put16 (p + 2, v >> 16);
}

static void
put64 (guint8 *p, guint64 v)
{
  put32 (p, (guint32) v);
  put32 (p + 4, (guint32) (v >> 32));
}

static void
test_limit_zip (void)
{
  /* A 98-byte "archive" whose ZIP64 end record claims 300,000 entries: refused before the entry table is
   * allocated. Layout: ZIP64 end record (56) | ZIP64 locator (20) | end record (22). */
  guint8 z[98] = { 0 };
  put32 (z, 0x06064b50);
  put64 (z + 4, 44);
  put64 (z + 24, 300000);          /* entries on this disk */
  put64 (z + 32, 300000);          /* entries in total */
  put32 (z + 56, 0x07064b50);
  put64 (z + 56 + 8, 0);           /* ZIP64 end record at offset 0 */
  put32 (z + 56 + 16, 1);
  guint8 *e = z + 76;
  put32 (e, 0x06054b50);
  put16 (e + 8, 0xffff);
  put16 (e + 10, 0xffff);
  put32 (e + 12, 0xffffffff);
  put32 (e + 16, 0xffffffff);
  g_autoptr (GBytes) b = g_bytes_new (z, sizeof z);
  g_autoptr (GError) error = NULL;
  g_assert_null (ddpm_torch_zip_parse (b, "entries.bin", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "entries.bin", "300000", "DDPM_ZIP_MAX_ENTRIES", NULL);
  g_clear_error (&error);

  /* A pickle over DDPM_PICKLE_MAX_BYTES. */
  gsize len = DDPM_PICKLE_MAX_BYTES + 1;
  g_autofree guint8 *pkl = g_malloc0 (len);
  g_assert_null (ddpm_pickle_read_state_dict (pkl, len, "big.pkl", &error));
  assert_error (error, DDPM_ERROR_LIMIT, "DDPM_PICKLE_MAX_BYTES", NULL);
}

static void
test_limit_npy (void)
{
  g_autoptr (GError) error = NULL;
  /* Format 2.0 header length of 2 GiB in a 12-byte file. */
  static const guint8 v2[12] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0, 0x80 };
  g_assert_false (fuzz_npy (v2, sizeof v2, &error));
  assert_error (error, DDPM_ERROR_FORMAT, "exceeds the limit of 1048576 bytes", NULL);
  g_clear_error (&error);

  /* A shape of 10^12 float32 elements in a 128-byte file. */
  GString *f = g_string_new_len ("\x93NUMPY\x01\x00\x76\x00", 10);
  g_string_append (f, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }");
  while (f->len < 127)
    g_string_append_c (f, ' ');
  g_string_append_c (f, '\n');
  f->str[8] = (char) (f->len - 10);
  g_assert_false (fuzz_npy ((const guint8 *) f->str, f->len, &error));
  g_string_free (f, TRUE);
  assert_error (error, DDPM_ERROR_FORMAT, "1000000000000 elements", "file holds 0 data bytes", NULL);
}

static void
test_limit_config (void)
{
  g_autoptr (GError) error = NULL;
  DdpmUNetConfig cfg;
  DdpmSchedulerConfig scfg;

  /* Over DDPM_LIMIT_CONFIG_BYTES, from memory and from a file. */
  gsize big = DDPM_LIMIT_CONFIG_BYTES + 1;
  g_autofree char *text = g_malloc (big);
  memset (text, ' ', big);
  text[0] = '{';
  text[big - 1] = '}';
  g_assert_false (ddpm_unet_config_parse_data (text, big, "big/config.json", &cfg, &error));
  assert_error (error, DDPM_ERROR_LIMIT, "big/config.json", "DDPM_LIMIT_CONFIG_BYTES", "1048576", NULL);
  g_clear_error (&error);
  g_autofree char *dir = g_dir_make_tmp ("ddpm-test-faults-XXXXXX", &error);
  g_autofree char *path = g_build_filename (dir, "scheduler_config.json", NULL);
  g_assert_true (g_file_set_contents (path, text, (gssize) big, &error));
  g_assert_false (ddpm_scheduler_config_parse (path, &scfg, &error));
  assert_error (error, DDPM_ERROR_LIMIT, "scheduler_config.json", "1048576", NULL);
  g_clear_error (&error);
  remove_folder (dir);

  /* Values past the sanity bounds name the field and the supported range. */
  static const struct { const char *json, *field, *range; } cases[] = {
    { "{\"block_out_channels\": [100000]}", "block_out_channels[0]", "1..8192" },
    { "{\"layers_per_block\": 1000}", "layers_per_block", "1..4" },
    { "{\"in_channels\": 1000000}", "in_channels", "1..64" },
    { "{\"block_out_channels\": [32,32,32,32,32,32,32,32,32]}", "block_out_channels has 9 entries", "1..8" },
    { "{\"sample_size\": 10000000}", "sample_size", "0..65536" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_assert_false (ddpm_unet_config_parse_data (cases[i].json, strlen (cases[i].json), NULL, &cfg, &error));
    assert_error (error, DDPM_ERROR_UNSUPPORTED, cases[i].field, cases[i].range, NULL);
    g_clear_error (&error);
  }
  const char *steps = "{\"num_train_timesteps\": 1000000000}";
  g_assert_false (ddpm_scheduler_config_parse_data (steps, strlen (steps), NULL, &scfg, &error));
  assert_error (error, DDPM_ERROR_UNSUPPORTED, "num_train_timesteps", "1..100000", NULL);
}

/* A 1 KB config.json implying ~500 GiB of parameters beside a tiny weights file: the mismatch is found by
 * name before the parameter arena is allocated (it used to be allocated first: NOMEM at best, an abort
 * under ASan, the OOM killer with overcommit). */
static void
test_limit_model_params (void)
{
  g_autofree char *dir = copy_folder (TINY);
  g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
  const char *huge = "{\"block_out_channels\": [8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192],"
                     "\"down_block_types\": [\"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\","
                     " \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\"],"
                     "\"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"UpBlock2D\", \"UpBlock2D\","
                     " \"UpBlock2D\", \"UpBlock2D\", \"UpBlock2D\", \"UpBlock2D\"], \"layers_per_block\": 4}";
  g_autoptr (GError) error = NULL;
  g_assert_true (g_file_set_contents (cfg, huge, -1, &error));
  DdpmUNetConfig c;
  g_assert_true (ddpm_unet_config_parse (cfg, &c, &error));
  g_test_message ("config implies %" G_GINT64_FORMAT " parameters", ddpm_unet_weights_count (&c));
  g_assert_cmpint (ddpm_unet_weights_count (&c), >, (int64_t) 100000000000);
  g_assert_null (ddpm_model_load (dir, &error));
  assert_error (error, DDPM_ERROR_SHAPE, "diffusion_pytorch_model.safetensors", "tensor '", NULL);
  remove_folder (dir);
}

/* Image sizes: over DDPM_LIMIT_IMAGE_PIXELS, or buffers beyond physical memory, fail before allocating
 * and leave the output untouched. */
static void
test_limit_image (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load (TINY);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);

  g_assert_false (ddpm_context_plan (ctx, 1, 65536, 65536, &error));
  assert_error (error, DDPM_ERROR_LIMIT, "65536x65536", "4294967296 pixels", "DDPM_LIMIT_IMAGE_PIXELS", NULL);
  g_clear_error (&error);

  /* 16384 x 16384 (the pixel limit) in a batch of 2^20: ~2^56 bytes per buffer. The output is never
   * touched, so a small buffer stands in for it. */
  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  p.batch = 1 << 20;
  p.height = p.width = 16384;
  g_autofree float *out = sentinel_buffer (16);
  g_assert_false (ddpm_sample (ctx, &p, out, &error));
  assert_error (error, DDPM_ERROR_LIMIT, "batch 1048576 at 16384x16384", "GiB", NULL);
  assert_untouched (out, 16);
  g_clear_error (&error);

  /* A batch of 64 at the pixel limit: the widest buffer (an up-block concatenation, 2 x 4 channels) is
   * 64 x 8 x 2^28 x 4 bytes = 512 GiB, past this machine's physical memory. */
  int64_t t[64] = { 0 };
  g_assert_false (ddpm_context_eps (ctx, out, t, 64, 16384, 16384, out, &error));
  assert_error (error, DDPM_ERROR_LIMIT, "batch 64 at 16384x16384", "GiB", NULL);
  assert_untouched (out, 16);
  g_clear_error (&error);

  /* The context still works at a sane size afterwards. */
  p.batch = 1;
  p.height = p.width = 4;
  p.sampler = DDPM_SAMPLER_DDIM;
  p.num_steps = 5;
  g_autofree float *ok = sentinel_buffer (16);
  g_assert_true (ddpm_sample (ctx, &p, ok, &error));
  g_assert_no_error (error);
}

/* ---- cancellation ------------------------------------------------------------------------------- */

/* The handshake uses atomics and polling, not GMutex/GCond: GLib implements those on raw futexes, which
 * ThreadSanitizer cannot see, so it would report the protected fields as races. */
typedef struct {
  DdpmContext *ctx;
  int cancel_at;                   /* the step after which the other thread cancels */
  gint step_seen;                  /* atomic: last step the sampler reported */
  gint cancelled;                  /* atomic: the canceller has called ddpm_context_cancel */
} CancelState;

/* Sampler thread: at cancel_at, let the canceller go and wait until it has cancelled, so the step at which
 * the cancel lands is exact although it comes from another thread. */
static gboolean
cancel_progress (int step, int num_steps, const float *x0, gpointer user_data)
{
  CancelState *s = user_data;
  g_atomic_int_set (&s->step_seen, step);
  if (step == s->cancel_at)
    while (!g_atomic_int_get (&s->cancelled))
      g_usleep (20);
  return TRUE;
}

static gpointer
canceller (gpointer data)
{
  CancelState *s = data;
  while (g_atomic_int_get (&s->step_seen) < s->cancel_at)
    g_usleep (20);
  ddpm_context_cancel (s->ctx);
  g_atomic_int_set (&s->cancelled, 1);
  return NULL;
}

static void
test_cancel_step (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load (TINY);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  p.batch = 2;
  p.num_steps = 10;
  p.seed = 7;
  const size_t n = sample_len (model, &p);

  /* Every step, then random ones (the last step included: cancelled after the loop). */
  for (int round = 0; round < 20; round++) {
    int at = round < p.num_steps ? round + 1 : g_test_rand_int_range (1, p.num_steps + 1);
    CancelState s = { .ctx = ctx, .cancel_at = at };
    ddpm_context_set_progress (ctx, cancel_progress, &s, 3);
    GThread *th = g_thread_new ("canceller", canceller, &s);
    g_autofree float *out = sentinel_buffer (n);
    gboolean ok = ddpm_sample (ctx, &p, out, &error);
    g_thread_join (th);
    g_assert_false (ok);
    assert_error (error, DDPM_ERROR_CANCELLED, "cancelled", NULL);
    assert_untouched (out, n);
    g_clear_error (&error);
  }

  /* The context is reusable: a run without cancel matches a fresh context's. */
  ddpm_context_set_progress (ctx, NULL, NULL, 0);
  g_autofree float *a = sentinel_buffer (n), *b = sentinel_buffer (n);
  g_assert_true (ddpm_sample (ctx, &p, a, &error));
  g_autoptr (DdpmContext) fresh = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_true (ddpm_sample (fresh, &p, b, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (a, n * sizeof (float), b, n * sizeof (float));
}

typedef struct {
  DdpmContext *ctx;
  gint64 delay_us;
} FreeCancel;

static gpointer
free_canceller (gpointer data)
{
  FreeCancel *f = data;
  g_usleep ((gulong) f->delay_us);
  ddpm_context_cancel (f->ctx);
  return NULL;
}

/* No handshake: the cancel lands wherever it lands (or after the run). Either the run completes with a
 * finite sample, or it is cancelled and the output is untouched. demo-tiny makes a run last long enough
 * (~ms per step) for the cancel to land inside it most of the time. */
static void
test_cancel_free (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load ("models/demo-tiny");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  p.sampler = DDPM_SAMPLER_DDIM;
  p.num_steps = 8;
  const size_t n = sample_len (model, &p);
  /* Time one run to spread the cancels over it. */
  g_autofree float *out = sentinel_buffer (n);
  gint64 t0 = g_get_monotonic_time ();
  g_assert_true (ddpm_sample (ctx, &p, out, &error));
  gint64 run_us = MAX (g_get_monotonic_time () - t0, 1);
  int cancelled = 0, completed = 0;
  for (int round = 0; round < 12; round++) {
    FreeCancel f = { ctx, g_test_rand_int_range (0, (gint32) MIN (run_us * 5 / 4, G_MAXINT32)) };
    for (size_t i = 0; i < n; i++)
      out[i] = SENTINEL;
    GThread *th = g_thread_new ("canceller", free_canceller, &f);
    gboolean ok = ddpm_sample (ctx, &p, out, &error);
    g_thread_join (th);
    if (ok) {
      completed++;
      for (size_t i = 0; i < n; i++)
        g_assert_true (isfinite (out[i]) && out[i] != SENTINEL);
    } else {
      cancelled++;
      assert_error (error, DDPM_ERROR_CANCELLED, NULL);
      assert_untouched (out, n);
      g_clear_error (&error);
    }
  }
  g_test_message ("run %.1f ms: %d cancelled, %d completed", run_us / 1000.0, cancelled, completed);
}

/* ---- allocation failures -------------------------------------------------------------------------- */

/* One whole use of the engine: context, a forward, a sample at two sizes (the second replans). */
static gboolean
engine_run (DdpmModel *model, float *out, size_t n, GError **error)
{
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, error);
  if (!ctx)
    return FALSE;
  g_autofree float *x = g_new0 (float, n);
  int64_t t[2] = { 3, 9 };
  if (!ddpm_context_eps (ctx, x, t, 2, 4, 4, out, error))
    return FALSE;
  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  p.batch = 1;
  p.height = p.width = 8;
  p.num_steps = 4;
  if (!ddpm_sample (ctx, &p, out, error))
    return FALSE;
  p.height = p.width = 4;
  p.batch = 2;
  p.sampler = DDPM_SAMPLER_DDIM;
  return ddpm_sample (ctx, &p, out, error);
}

static void
test_alloc_failures (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load (TINY);
  const size_t n = 64;             /* >= 2 x 1 x 4 x 4 and 1 x 1 x 8 x 8 */
  g_autoptr (GError) error = NULL;

  ddpm_fault_set_alloc_after (G_MAXINT);   /* armed but never failing: counts the allocations */
  g_autofree float *out = sentinel_buffer (n);
  g_assert_true (engine_run (model, out, n, &error));
  g_assert_no_error (error);
  int total = ddpm_fault_alloc_count ();
  g_test_message ("one run makes %d backend allocations", total);
  g_assert_cmpint (total, >, 10);

  for (int k = 0; k < total; k++) {
    ddpm_fault_set_alloc_after (k);
    for (size_t i = 0; i < n; i++)
      out[i] = SENTINEL;
    gboolean ok = engine_run (model, out, n, &error);
    if (ok)
      g_error ("allocation %d of %d failed but the run succeeded", k + 1, total);
    assert_error (error, DDPM_ERROR_NOMEM, "cannot allocate", NULL);
    if (k == 0)
      g_test_message ("first failure: %s", error->message);
    g_clear_error (&error);
  }
  ddpm_fault_set_alloc_after (-1);
  g_assert_true (engine_run (model, out, n, &error));
  g_assert_no_error (error);
}

/* ---- the model folder changes under us -------------------------------------------------------------- */

static void
sample_tiny (DdpmModel *model, float *out, size_t n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  p.batch = 2;
  p.seed = 3;
  g_assert_cmpuint (sample_len (model, &p), ==, n);
  g_assert_true (ddpm_sample (ctx, &p, out, &error));
  g_assert_no_error (error);
}

static void
test_files_change (void)
{
  g_autofree char *dir = copy_folder (TINY);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  const size_t n = 2 * 16;
  g_autofree float *before = g_new (float, n), *after = g_new (float, n);
  sample_tiny (model, before, n);

  /* Truncate the weights, rewrite the configs with garbage, then delete the whole folder. */
  g_autofree char *w = g_build_filename (dir, "diffusion_pytorch_model.safetensors", NULL);
  g_autofree char *c = g_build_filename (dir, "config.json", NULL);
  g_autofree char *s = g_build_filename (dir, "scheduler_config.json", NULL);
  g_assert_cmpint (truncate (w, 0), ==, 0);
  g_assert_true (g_file_set_contents (c, "{\"block_out_channels\": [", -1, &error));
  g_assert_true (g_file_set_contents (s, "\x00\xff garbage", 10, &error));
  sample_tiny (model, after, n);
  g_assert_cmpmem (before, n * sizeof (float), after, n * sizeof (float));
  remove_folder (dir);
  sample_tiny (model, after, n);
  g_assert_cmpmem (before, n * sizeof (float), after, n * sizeof (float));
  char *describe = ddpm_model_describe (model);
  g_assert_nonnull (strstr (describe, "UNet2DModel"));
  g_free (describe);
}

typedef struct {
  const char *path;
  const char *good;                /* the file's real bytes */
  gsize len;
  gint stop;
} Rewriter;

/* Rewrites the weights file over and over: truncated to a random length, then whole again. */
static gpointer
rewriter (gpointer data)
{
  Rewriter *r = data;
  GRand *rand = g_rand_new_with_seed (1);
  while (!g_atomic_int_get (&r->stop)) {
    gsize cut = g_rand_int_range (rand, 0, (gint32) r->len);
    g_file_set_contents (r->path, r->good, (gssize) cut, NULL);
    g_thread_yield ();
    g_file_set_contents (r->path, r->good, (gssize) r->len, NULL);
  }
  g_rand_free (rand);
  return NULL;
}

/* Loads while another thread truncates and restores the weights: every load fails cleanly or gives a
 * model that samples exactly like the original. (g_file_set_contents replaces the file by renaming, so
 * each open sees one version or another; truncate() in place is covered by the test above, after load.) */
static void
test_files_race (void)
{
  g_autofree char *dir = copy_folder (TINY);
  g_autofree char *w = g_build_filename (dir, "diffusion_pytorch_model.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  Rewriter r = { w, NULL, 0, 0 };
  g_autofree char *good = NULL;
  g_assert_true (g_file_get_contents (w, &good, &r.len, &error));
  r.good = good;
  g_autoptr (DdpmModel) ref = ddpm_model_load (dir, &error);
  g_assert_no_error (error);
  const size_t n = 2 * 16;
  g_autofree float *want = g_new (float, n), *got = g_new (float, n);
  sample_tiny (ref, want, n);

  GThread *th = g_thread_new ("rewriter", rewriter, &r);
  int loaded = 0, refused = 0;
  for (int i = 0; i < 60; i++) {
    g_autoptr (DdpmModel) m = ddpm_model_load (dir, &error);
    if (m) {
      loaded++;
      sample_tiny (m, got, n);
      g_assert_cmpmem (want, n * sizeof (float), got, n * sizeof (float));
    } else {
      refused++;
      g_assert_true (error->domain == DDPM_ERROR);
      g_clear_error (&error);
    }
  }
  g_atomic_int_set (&r.stop, 1);
  g_thread_join (th);
  g_test_message ("%d loads succeeded, %d refused cleanly", loaded, refused);
  remove_folder (dir);
}

/* ---- NaN / Inf -------------------------------------------------------------------------------------- */

/* Copies model-tiny with every element of one F16 tensor of the weights set to bits. */
static char *
tiny_with_f16 (const char *tensor, guint16 bits)
{
  char *dir = copy_folder (TINY);
  g_autofree char *w = g_build_filename (dir, "diffusion_pytorch_model.safetensors", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) file = ddpm_read_file (w, DDPM_LIMIT_WEIGHTS_FILE_BYTES, &error);
  g_assert_no_error (error);
  g_autoptr (DdpmTensorTable) table = ddpm_safetensors_parse (file, w, &error);
  g_assert_no_error (error);
  const DdpmRawTensor *t = ddpm_tensor_table_lookup (table, tensor);
  g_assert_nonnull (t);
  g_assert_cmpint (t->dtype, ==, DDPM_DTYPE_F16);
  gsize len;
  const guint8 *base = g_bytes_get_data (file, &len);
  g_autofree guint8 *copy = g_memdup2 (base, len);
  gsize off = (gsize) (t->data - base);
  for (int64_t i = 0; i < t->numel; i++)
    put16 (copy + off + 2 * i, bits);
  g_assert_true (g_file_set_contents (w, (const char *) copy, (gssize) len, &error));
  return dir;
}

static void
expect_numeric (DdpmModel *model)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  p.batch = 2;
  const size_t n = sample_len (model, &p);
  g_autofree float *out = sentinel_buffer (n);
  g_assert_false (ddpm_sample (ctx, &p, out, &error));
  assert_error (error, DDPM_ERROR_NUMERIC, "non-finite", NULL);
  assert_untouched (out, n);
  g_clear_error (&error);

  g_autofree float *x = g_new0 (float, n);
  int64_t t[2] = { 0, 9 };
  g_assert_false (ddpm_context_eps (ctx, x, t, 2, 4, 4, out, &error));
  assert_error (error, DDPM_ERROR_NUMERIC, "non-finite", NULL);
  assert_untouched (out, n);
}

static void
test_numeric_file (gconstpointer data)
{
  /* NaN (0x7e00) or +Inf (0x7c00) in a weights file as downloaded. */
  guint16 bits = (guint16) GPOINTER_TO_UINT (data);
  static const char *const tensors[] = { "conv_out.bias", "conv_in.weight", "mid_block.attentions.0.to_q.weight" };
  for (guint i = 0; i < G_N_ELEMENTS (tensors); i++) {
    g_autofree char *dir = tiny_with_f16 (tensors[i], bits);
    g_autoptr (GError) error = NULL;
    g_autoptr (DdpmModel) model = ddpm_model_load (dir, &error);
    g_assert_no_error (error);
    g_test_message ("%s = 0x%04x", tensors[i], bits);
    expect_numeric (model);
    remove_folder (dir);
  }
}

/* Finite but huge weights (conv_out scaled by 1e38, its bias FLT_MAX): float32 overflows in the output
 * conv. (Scaling an inner layer is no test: the next GroupNorm divides the scale away.) */
static void
test_numeric_huge (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load (TINY);
  const DdpmLinearW *w = &model->weights.conv_out;
  float *weight = w->weight;
  for (int i = 0; i < w->out * w->in * w->k * w->k; i++)
    weight[i] = (weight[i] < 0 ? -1e38f : 1e38f);
  ((float *) w->bias)[0] = G_MAXFLOAT;
  expect_numeric (model);
}

/* ---- threads ---------------------------------------------------------------------------------------- */

typedef struct {
  DdpmModel *model;
  DdpmSampleParams p;
  float *out;
  size_t n;
  gboolean ok;
  char *message;
} ThreadRun;

static gpointer
thread_run (gpointer data)
{
  ThreadRun *r = data;
  GError *error = NULL;
  DdpmContext *ctx = ddpm_context_new (r->model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  r->ok = ctx && ddpm_sample (ctx, &r->p, r->out, &error);
  /* Also one forward, into the second half of out. */
  if (r->ok) {
    g_autofree float *x = g_new (float, r->n);
    for (size_t i = 0; i < r->n; i++)
      x[i] = (float) ((int) (i % 7) - 3) / 3.0f;
    int64_t t[1] = { 17 + (int64_t) r->p.seed };
    r->ok = ddpm_context_eps (ctx, x, t, 1, r->p.height, r->p.width, r->out + r->n, &error);
  }
  if (error) {
    r->message = g_strdup (error->message);
    g_error_free (error);
  }
  ddpm_context_free (ctx);
  return NULL;
}

/* Two contexts sharing one model, sampling on two threads at once, give bit-identical results to the
 * same runs one at a time. Run under ThreadSanitizer by tools/sanitize.sh tsan. */
static void
test_two_threads (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load ("models/demo-tiny");
  ThreadRun runs[2][2];            /* [sequential, concurrent][thread] */
  for (int mode = 0; mode < 2; mode++)
    for (int k = 0; k < 2; k++) {
      ThreadRun *r = &runs[mode][k];
      memset (r, 0, sizeof *r);
      r->model = model;
      ddpm_sample_params_init (&r->p);
      r->p.sampler = k == 0 ? DDPM_SAMPLER_DDIM : DDPM_SAMPLER_DDPM;
      r->p.num_steps = 4;
      r->p.seed = 11 + k;
      r->p.height = r->p.width = 16;
      r->n = sample_len (model, &r->p);
      r->out = sentinel_buffer (2 * r->n);
    }
  for (int k = 0; k < 2; k++)
    thread_run (&runs[0][k]);
  GThread *th[2];
  for (int k = 0; k < 2; k++)
    th[k] = g_thread_new ("sampler", thread_run, &runs[1][k]);
  for (int k = 0; k < 2; k++)
    g_thread_join (th[k]);
  for (int k = 0; k < 2; k++) {
    for (int mode = 0; mode < 2; mode++)
      if (!runs[mode][k].ok)
        g_error ("run %d/%d failed: %s", mode, k, runs[mode][k].message);
    g_assert_cmpmem (runs[0][k].out, 2 * runs[0][k].n * sizeof (float), runs[1][k].out,
                     2 * runs[1][k].n * sizeof (float));
  }
  for (int mode = 0; mode < 2; mode++)
    for (int k = 0; k < 2; k++) {
      g_free (runs[mode][k].out);
      g_free (runs[mode][k].message);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (guint k = 0; k < G_N_ELEMENTS (PARSERS); k++) {
    g_autofree char *name = g_strdup_printf ("/faults/fuzz-regressions/%s", PARSERS[k].target);
    g_test_add_data_func (name, GUINT_TO_POINTER (k), test_fuzz_regressions);
  }
  g_test_add_func ("/faults/limits/safetensors", test_limit_safetensors);
  g_test_add_func ("/faults/limits/json", test_limit_json);
  g_test_add_func ("/faults/limits/zip-and-pickle", test_limit_zip);
  g_test_add_func ("/faults/limits/npy", test_limit_npy);
  g_test_add_func ("/faults/limits/config", test_limit_config);
  g_test_add_func ("/faults/limits/model-params", test_limit_model_params);
  g_test_add_func ("/faults/limits/image-size", test_limit_image);
  g_test_add_func ("/faults/cancel/at-step", test_cancel_step);
  g_test_add_func ("/faults/cancel/free-running", test_cancel_free);
  g_test_add_func ("/faults/alloc", test_alloc_failures);
  g_test_add_func ("/faults/files-change/after-load", test_files_change);
  g_test_add_func ("/faults/files-change/while-loading", test_files_race);
  g_test_add_data_func ("/faults/numeric/nan-in-file", GUINT_TO_POINTER (0x7e00), test_numeric_file);
  g_test_add_data_func ("/faults/numeric/inf-in-file", GUINT_TO_POINTER (0x7c00), test_numeric_file);
  g_test_add_func ("/faults/numeric/huge-weights", test_numeric_huge);
  g_test_add_func ("/faults/threads/two-contexts", test_two_threads);
  return g_test_run ();
}
