/* test_safetensors.c: the safetensors reader and the tensor table. Every malformed file is built here
 * from a header string and a data size, so each test states exactly what is wrong with its input; the
 * good-path dtype file comes from tests/fixtures/loader/make_loader_fixtures.py (torch's own upcasts). */
#include "tensor_table.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>

/* ---- a minimal writer -------------------------------------------------------------------------- */

/* u64 LE header length | header | data_len bytes (byte i = i & 0xff). header_len_override != 0 writes
 * that value as the length instead of strlen (header). */
static GBytes *
make_file (const char *header, gsize data_len, guint64 header_len_override)
{
  gsize hl = strlen (header);
  guint64 n = header_len_override ? header_len_override : hl;
  guint8 *buf = g_malloc (8 + hl + data_len);
  for (int i = 0; i < 8; i++)
    buf[i] = (guint8) (n >> (8 * i));
  memcpy (buf + 8, header, hl);
  for (gsize i = 0; i < data_len; i++)
    buf[8 + hl + i] = (guint8) i;
  return g_bytes_new_take (buf, 8 + hl + data_len);
}

static DdpmTensorTable *
parse (const char *header, gsize data_len, GError **error)
{
  g_autoptr (GBytes) file = make_file (header, data_len, 0);
  return ddpm_safetensors_parse (file, "test.safetensors", error);
}

static void
expect_error (GError *error, int code, const char *needle1, const char *needle2)
{
  g_assert_nonnull (error);
  g_test_message ("error: %s", error->message);
  g_assert_error (error, DDPM_ERROR, code);
  g_assert_nonnull (strstr (error->message, "test.safetensors"));
  if (needle1 && !strstr (error->message, needle1))
    g_error ("message '%s' does not mention '%s'", error->message, needle1);
  if (needle2 && !strstr (error->message, needle2))
    g_error ("message '%s' does not mention '%s'", error->message, needle2);
}

static void
expect_bad (const char *header, gsize data_len, int code, const char *needle1, const char *needle2)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t = parse (header, data_len, &error);
  if (t)
    g_error ("accepted: %s", header);
  expect_error (error, code, needle1, needle2);
}

/* ---- good files -------------------------------------------------------------------------------- */

static void
test_minimal (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t =
    parse ("{\"__metadata__\": {\"format\": \"pt\"}, \"b\": {\"dtype\": \"F16\", \"shape\": [3], \"data_offsets\": [24, 30]},"
           " \"a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]},"
           " \"z\": {\"dtype\": \"BF16\", \"shape\": [], \"data_offsets\": [30, 32]},"
           " \"e\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"data_offsets\": [32, 32]}}   ", 32, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddpm_tensor_table_size (t), ==, 4);
  g_assert_cmpstr (ddpm_tensor_table_format (t), ==, "safetensors");
  const DdpmRawTensor *a = ddpm_tensor_table_lookup (t, "a");
  g_assert_nonnull (a);
  g_assert_cmpint (a->dtype, ==, DDPM_DTYPE_F32);
  g_assert_cmpint (a->ndim, ==, 2);
  g_assert_cmpint (a->shape[0], ==, 2);
  g_assert_cmpint (a->shape[1], ==, 3);
  g_assert_cmpint (a->numel, ==, 6);
  g_assert_cmpint (a->data[0], ==, 0);
  const DdpmRawTensor *b = ddpm_tensor_table_lookup (t, "b");
  g_assert_cmpint (b->data[0], ==, 24);    /* data region byte 24 */
  const DdpmRawTensor *z = ddpm_tensor_table_lookup (t, "z");
  g_assert_cmpint (z->ndim, ==, 0);
  g_assert_cmpint (z->numel, ==, 1);
  g_assert_cmpint (ddpm_tensor_table_lookup (t, "e")->numel, ==, 0);
  g_assert_null (ddpm_tensor_table_lookup (t, "__metadata__"));
  g_assert_null (ddpm_tensor_table_lookup (t, "missing"));

  g_autoptr (GPtrArray) names = ddpm_tensor_table_names (t);
  g_assert_cmpuint (names->len, ==, 4);
  g_assert_cmpstr (g_ptr_array_index (names, 0), ==, "a");
  g_assert_cmpstr (g_ptr_array_index (names, 3), ==, "z");

  g_assert_cmpuint (ddpm_dtype_size (DDPM_DTYPE_BF16), ==, 2);
  g_assert_cmpstr (ddpm_dtype_name (DDPM_DTYPE_F16), ==, "F16");
}

/* The table keeps the bytes alive after the caller drops its reference. */
static void
test_owns_bytes (void)
{
  g_autoptr (GError) error = NULL;
  GBytes *file = make_file ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, 0);
  g_autoptr (DdpmTensorTable) t = ddpm_safetensors_parse (file, "test.safetensors", &error);
  g_bytes_unref (file);
  g_assert_nonnull (t);
  float v;
  ddpm_raw_tensor_to_f32 (ddpm_tensor_table_lookup (t, "a"), &v);
  guint32 bits;
  memcpy (&bits, &v, 4);
  g_assert_cmphex (bits, ==, 0x03020100);  /* little-endian bytes 0, 1, 2, 3 */
}

static gboolean
same_float (float a, float b)
{
  guint32 x, y;
  memcpy (&x, &a, 4);
  memcpy (&y, &b, 4);
  return x == y || (isnan (a) && isnan (b));
}

/* F32 / F16 / BF16 from a file written by torch, against torch's own float32 upcast. */
static void
test_dtypes_fixture (void)
{
  g_autofree char *path = fixture_path ("loader/dtypes.safetensors");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t = ddpm_safetensors_load (path, &error);
  g_assert_no_error (error);
  static const char *const names[] = { "f32", "f16", "bf16" };
  for (int k = 0; k < 3; k++) {
    g_autofree char *ref_name = g_strdup_printf ("%s_as_f32", names[k]);
    const DdpmRawTensor *x = ddpm_tensor_table_lookup (t, names[k]);
    const DdpmRawTensor *r = ddpm_tensor_table_lookup (t, ref_name);
    g_assert_nonnull (x);
    g_assert_nonnull (r);
    g_assert_cmpint (r->dtype, ==, DDPM_DTYPE_F32);
    g_assert_cmpint (x->numel, ==, r->numel);
    g_autofree float *got = g_new (float, x->numel);
    g_autofree float *want = g_new (float, r->numel);
    ddpm_raw_tensor_to_f32 (x, got);
    ddpm_raw_tensor_to_f32 (r, want);
    int bad = 0;
    for (int64_t i = 0; i < x->numel; i++)
      if (!same_float (got[i], want[i])) {
        g_test_message ("%s[%" G_GINT64_FORMAT "]: got %.9g want %.9g", names[k], i, got[i], want[i]);
        bad++;
      }
    printf ("# %s: %" G_GINT64_FORMAT " values, %d differ from torch's float32 (bitwise, NaN = NaN)\n", names[k],
            x->numel, bad);
    g_assert_cmpint (bad, ==, 0);
  }
  float s;
  ddpm_raw_tensor_to_f32 (ddpm_tensor_table_lookup (t, "scalar"), &s);
  g_assert_cmpfloat (s, ==, 7.0f);
  g_assert_cmpint (ddpm_tensor_table_lookup (t, "empty")->numel, ==, 0);
}

/* Every binary16 bit pattern against the value formula (-1)^s 2^(e-15) (1 + m/1024), subnormals
 * 2^-24 m, inf and NaN; exact equality, signed zeros included. */
static void
test_f16_exhaustive (void)
{
  g_autofree guint8 *buf = g_new (guint8, 2 * 65536);
  g_autofree float *out = g_new (float, 65536);
  for (int i = 0; i < 65536; i++) {
    buf[2 * i] = i & 0xff;
    buf[2 * i + 1] = i >> 8;
  }
  DdpmRawTensor t = { .name = "all", .dtype = DDPM_DTYPE_F16, .ndim = 1, .shape = { 65536 }, .numel = 65536,
                      .data = buf };
  ddpm_raw_tensor_to_f32 (&t, out);
  int bad = 0;
  for (int i = 0; i < 65536; i++) {
    int s = i >> 15, e = (i >> 10) & 31, m = i & 1023;
    double v = e == 0 ? ldexp (m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp (1024 + m, e - 25);
    float want = (float) (s ? -v : v);
    if (e == 31 && m) {
      /* NaN: payload kept (top 10 mantissa bits) and the sign */
      guint32 bits;
      memcpy (&bits, &out[i], 4);
      if (!isnan (out[i]) || (bits >> 31) != (guint32) s || ((bits >> 13) & 1023) != (guint32) m)
        bad++;
    } else if (!same_float (out[i], want) || !signbit (out[i]) != !signbit (want)) {
      g_test_message ("f16 0x%04x: got %.9g want %.9g", i, out[i], want);
      bad++;
    }
  }
  printf ("# f16 -> f32: 65536 patterns, %d wrong\n", bad);
  g_assert_cmpint (bad, ==, 0);

  /* bfloat16: the upper half of the float32 pattern, for all 65536 patterns. */
  t.dtype = DDPM_DTYPE_BF16;
  ddpm_raw_tensor_to_f32 (&t, out);
  bad = 0;
  for (int i = 0; i < 65536; i++) {
    guint32 bits;
    memcpy (&bits, &out[i], 4);
    bad += bits != (guint32) i << 16;
  }
  g_assert_cmpint (bad, ==, 0);
}

/* ---- malformed files --------------------------------------------------------------------------- */

static void
test_truncated (void)
{
  for (gsize len = 0; len < 8; len++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) file = g_bytes_new ("\x10\0\0\0\0\0\0\0", len);
    g_assert_null (ddpm_safetensors_parse (file, "test.safetensors", &error));
    expect_error (error, DDPM_ERROR_FORMAT, "truncated", NULL);
  }
  /* Valid header, data cut short: the offsets run past the data region. */
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 10, DDPM_ERROR_FORMAT, "'a'",
              "outside the data region");
}

/* A good file on disk, then the same file cut in the middle of its data and of its header. */
static void
test_truncated_on_disk (void)
{
  g_autofree char *dir = g_dir_make_tmp ("ddpm-test-st-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "test.safetensors", NULL);
  g_autoptr (GBytes) file = make_file ("{\"w\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [0, 32]}}", 32, 0);
  gsize size;
  const char *bytes = g_bytes_get_data (file, &size);
  g_autoptr (GError) error = NULL;
  g_assert_true (g_file_set_contents (path, bytes, size, NULL));
  g_autoptr (DdpmTensorTable) ok = ddpm_safetensors_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (ok);

  gsize cuts[] = { size - 1, size - 32, 20, 4 };
  for (guint i = 0; i < G_N_ELEMENTS (cuts); i++) {
    g_assert_true (g_file_set_contents (path, bytes, cuts[i], NULL));
    g_clear_error (&error);
    g_autoptr (DdpmTensorTable) t = ddpm_safetensors_load (path, &error);
    g_assert_null (t);
    expect_error (error, DDPM_ERROR_FORMAT, NULL, NULL);
  }
  g_unlink (path);
  g_clear_error (&error);
  g_assert_null (ddpm_safetensors_load (path, &error));
  expect_error (error, DDPM_ERROR_IO, NULL, NULL);
  g_rmdir (dir);
}

static void
test_header_beyond_file (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) file = make_file ("{}", 0, 1000);
  g_assert_null (ddpm_safetensors_parse (file, "test.safetensors", &error));
  expect_error (error, DDPM_ERROR_FORMAT, "1000", "past the end");
}

static void
test_header_absurd (void)
{
  guint64 lengths[] = { G_MAXUINT64, (guint64) 1 << 40, DDPM_LIMIT_SAFETENSORS_HEADER + 1 };
  for (guint i = 0; i < G_N_ELEMENTS (lengths); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) file = make_file ("{}", 0, lengths[i]);
    g_assert_null (ddpm_safetensors_parse (file, "test.safetensors", &error));
    expect_error (error, DDPM_ERROR_LIMIT, "DDPM_LIMIT_SAFETENSORS_HEADER", NULL);
  }
}

static void
test_bad_json (void)
{
  expect_bad ("{\"a\": {\"dtype\": \"F32\",", 0, DDPM_ERROR_FORMAT, "not valid JSON", NULL);
  expect_bad ("{\"a\": 1,}", 0, DDPM_ERROR_FORMAT, "not valid JSON", NULL);
  expect_bad ("[{\"dtype\": \"F32\"}]", 0, DDPM_ERROR_FORMAT, "not a JSON object", NULL);
  expect_bad ("\"text\"", 0, DDPM_ERROR_FORMAT, "not a JSON object", NULL);
  expect_bad ("", 0, DDPM_ERROR_FORMAT, "empty", NULL);
  /* A NUL inside the header (json parsers may stop there and ignore the rest). */
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) file = g_bytes_new ("\x04\0\0\0\0\0\0\0{}\0 ", 12);
  g_assert_null (ddpm_safetensors_parse (file, "test.safetensors", &error));
  expect_error (error, DDPM_ERROR_FORMAT, "NUL", NULL);
}

static void
test_bad_entries (void)
{
  expect_bad ("{\"a\": [1, 2]}", 0, DDPM_ERROR_FORMAT, "'a'", "not an object");
  expect_bad ("{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, DDPM_ERROR_FORMAT, "'a'", "dtype");
  expect_bad ("{\"a\": {\"dtype\": 1, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, DDPM_ERROR_FORMAT, "'a'", "dtype");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, DDPM_ERROR_FORMAT, "'a'", "shape");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, DDPM_ERROR_FORMAT, "'a'",
              "shape[0]");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, DDPM_ERROR_FORMAT, "'a'",
              "shape[0]");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 1, 1, 1, 1, 1], \"data_offsets\": [0, 4]}}", 4,
              DDPM_ERROR_LIMIT, "'a'", "DDPM_MAX_DIMS");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", 4,
              DDPM_ERROR_LIMIT, "'a'", "overflows");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [18446744073709551615], \"data_offsets\": [0, 4]}}", 4,
              DDPM_ERROR_FORMAT, "'a'", "shape[0]");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, DDPM_ERROR_FORMAT, "'a'", "data_offsets");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4, DDPM_ERROR_FORMAT, "'a'",
              "data_offsets");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, -4]}}", 4, DDPM_ERROR_FORMAT, "'a'",
              "data_offsets");
  expect_bad ("{\"__metadata__\": [1]}", 0, DDPM_ERROR_FORMAT, "__metadata__", NULL);
}

static void
test_unknown_dtype (void)
{
  expect_bad ("{\"ids\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]}}", 16, DDPM_ERROR_UNSUPPORTED,
              "'ids'", "I64");
  expect_bad ("{\"x\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 16]}}", 16, DDPM_ERROR_UNSUPPORTED,
              "'x'", "F64");
  expect_bad ("{\"m\": {\"dtype\": \"BOOL\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2, DDPM_ERROR_UNSUPPORTED,
              "'m'", "BOOL");
  expect_bad ("{\"q\": {\"dtype\": \"Q4_K\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2, DDPM_ERROR_FORMAT, "'q'",
              "Q4_K");
  expect_bad ("{\"f\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, DDPM_ERROR_FORMAT, "'f'",
              "f32");
}

static void
test_offsets_outside (void)
{
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 12, DDPM_ERROR_FORMAT, "'a'",
              "outside the data region");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 12, DDPM_ERROR_FORMAT, "'a'",
              "outside the data region");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [9223372036854775807, 9223372036854775807]}}",
              12, DDPM_ERROR_FORMAT, "'a'", "outside");
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 18446744073709551615]}}", 12,
              DDPM_ERROR_FORMAT, "'a'", "data_offsets");
}

static void
test_size_mismatch (void)
{
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 16, DDPM_ERROR_FORMAT, "'a'",
              "needs 12");
  expect_bad ("{\"a\": {\"dtype\": \"F16\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}}", 16, DDPM_ERROR_FORMAT,
              "'a'", "needs 8");
}

static void
test_overlap (void)
{
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
              " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, DDPM_ERROR_FORMAT, "overlap",
              "'b'");
  /* The same bytes named twice. */
  expect_bad ("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
              " \"b\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [0, 8]}}", 8, DDPM_ERROR_FORMAT, "overlap",
              NULL);
  /* Adjacent and empty tensors do not overlap. */
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t =
    parse ("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
           " \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]},"
           " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", 12, &error);
  g_assert_no_error (error);
  g_assert_nonnull (t);
}

static void
test_duplicate_names (void)
{
  expect_bad ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
              " \"v\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]},"
              " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", 12, DDPM_ERROR_FORMAT,
              "duplicate", "'w'");
  /* The same name spelled with an escape. */
  expect_bad ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
              " \"\\u0077\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, DDPM_ERROR_FORMAT,
              "duplicate", "'w'");
  /* Keys and colons inside names or nested objects are not miscounted. */
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t =
    parse ("{\"__metadata__\": {\"a:b\": \"c:d\", \"w\": \"x\"}, \"w:{\\\"\": {\"dtype\": \"F32\", \"shape\": [1], "
           "\"data_offsets\": [0, 4]}}", 4, &error);
  g_assert_no_error (error);
  g_assert_nonnull (ddpm_tensor_table_lookup (t, "w:{\""));

  /* The table itself refuses duplicates too. */
  g_autoptr (DdpmTensorTable) tt = ddpm_tensor_table_new ("test", NULL);
  int64_t shape[1] = { 1 };
  static const guint8 data[4];
  g_assert_true (ddpm_tensor_table_insert (tt, g_strdup ("x"), DDPM_DTYPE_F32, 1, shape, data, &error));
  g_assert_false (ddpm_tensor_table_insert (tt, g_strdup ("x"), DDPM_DTYPE_F32, 1, shape, data, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT);
}

static void
test_tensor_count_limit (void)
{
  GString *h = g_string_new ("{");
  for (int i = 0; i <= DDPM_LIMIT_TENSOR_COUNT; i++)
    g_string_append_printf (h, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}", i ? "," : "", i);
  g_string_append_c (h, '}');
  expect_bad (h->str, 0, DDPM_ERROR_LIMIT, "DDPM_LIMIT_TENSOR_COUNT", NULL);
  g_string_free (h, TRUE);
}

static void
test_read_file_limit (void)
{
  g_autofree char *dir = g_dir_make_tmp ("ddpm-test-st-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "f.bin", NULL);
  g_assert_true (g_file_set_contents (path, "0123456789", 10, NULL));
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) ok = ddpm_read_file (path, 10, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (ok), ==, 10);
  g_autoptr (GBytes) big = ddpm_read_file (path, 9, &error);
  g_assert_null (big);
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT);
  g_assert_nonnull (strstr (error->message, path));
  g_clear_error (&error);
  g_assert_null (ddpm_read_file (dir, 100, &error));   /* a folder */
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_IO);
  g_unlink (path);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/loader/safetensors/minimal", test_minimal);
  g_test_add_func ("/loader/safetensors/owns-bytes", test_owns_bytes);
  g_test_add_func ("/loader/safetensors/dtypes-vs-torch", test_dtypes_fixture);
  g_test_add_func ("/loader/safetensors/f16-bf16-exhaustive", test_f16_exhaustive);
  g_test_add_func ("/loader/safetensors/truncated", test_truncated);
  g_test_add_func ("/loader/safetensors/truncated-on-disk", test_truncated_on_disk);
  g_test_add_func ("/loader/safetensors/header-beyond-file", test_header_beyond_file);
  g_test_add_func ("/loader/safetensors/header-absurd", test_header_absurd);
  g_test_add_func ("/loader/safetensors/bad-json", test_bad_json);
  g_test_add_func ("/loader/safetensors/bad-entries", test_bad_entries);
  g_test_add_func ("/loader/safetensors/unknown-dtype", test_unknown_dtype);
  g_test_add_func ("/loader/safetensors/offsets-outside", test_offsets_outside);
  g_test_add_func ("/loader/safetensors/size-mismatch", test_size_mismatch);
  g_test_add_func ("/loader/safetensors/overlap", test_overlap);
  g_test_add_func ("/loader/safetensors/duplicate-names", test_duplicate_names);
  g_test_add_func ("/loader/safetensors/tensor-count-limit", test_tensor_count_limit);
  g_test_add_func ("/loader/read-file/limit", test_read_file_limit);
  return g_test_run ();
}
