/* test_npy.c: the .npy reader/writer against files numpy wrote (tests/fixtures/npy, made by
 * make_npy_fixtures.py there) and against byte-level malformations built here. Every bad file must give
 * DDPM_ERROR_FORMAT (or IO for a missing file) with a message that names the file. */
#include "npy.h"
#include "test_util.h"

#include <glib/gstdio.h>
#include <string.h>

static char *tmp_dir;

static char *
tmp_path (const char *name)
{
  return g_build_filename (tmp_dir, name, NULL);
}

static DdpmNpyArray *
load_fixture (const char *name)
{
  g_autofree char *rel = g_build_filename ("npy", name, NULL);
  g_autofree char *path = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  DdpmNpyArray *a = ddpm_npy_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (a);
  return a;
}

/* Loads a file that must be refused with `code`; the message must name the file and contain `needle`. */
static void
expect_error_at (const char *path, int code, const char *needle)
{
  g_autoptr (GError) error = NULL;
  DdpmNpyArray *a = ddpm_npy_load (path, &error);
  g_assert_null (a);
  g_assert_error (error, DDPM_ERROR, code);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, path));
  if (needle && !strstr (error->message, needle))
    g_error ("message '%s' lacks '%s'", error->message, needle);
}

static void
expect_fixture_error (const char *name, const char *needle)
{
  g_autofree char *rel = g_build_filename ("npy", name, NULL);
  g_autofree char *path = fixture_path (rel);
  expect_error_at (path, DDPM_ERROR_FORMAT, needle);
}

/* A .npy file from parts: version major (1, 2 or 3), header text as given (no padding added), data. */
static char *
write_raw (const char *name, int major, const char *header, const void *data, size_t data_len)
{
  GByteArray *b = g_byte_array_new ();
  g_byte_array_append (b, (const guint8 *) "\x93NUMPY", 6);
  guint8 ver[2] = { (guint8) major, 0 };
  g_byte_array_append (b, ver, 2);
  size_t hl = strlen (header);
  if (major == 1)
    {
      guint8 l[2] = { hl & 0xff, (hl >> 8) & 0xff };
      g_byte_array_append (b, l, 2);
    }
  else
    {
      guint8 l[4] = { hl & 0xff, (hl >> 8) & 0xff, (hl >> 16) & 0xff, (hl >> 24) & 0xff };
      g_byte_array_append (b, l, 4);
    }
  g_byte_array_append (b, (const guint8 *) header, hl);
  if (data_len)
    g_byte_array_append (b, data, data_len);
  char *path = tmp_path (name);
  g_autoptr (GError) error = NULL;
  g_file_set_contents (path, (const char *) b->data, b->len, &error);
  g_assert_no_error (error);
  g_byte_array_unref (b);
  return path;
}

static char *
write_bytes (const char *name, const void *bytes, size_t n)
{
  char *path = tmp_path (name);
  g_autoptr (GError) error = NULL;
  g_file_set_contents (path, bytes, n, &error);
  g_assert_no_error (error);
  return path;
}

/* ---- files numpy wrote ------------------------------------------------------------------------- */

static void
test_numpy_f4 (void)
{
  g_autoptr (DdpmNpyArray) a = load_fixture ("f4_2x3.npy");
  g_assert_cmpint (a->type, ==, DDPM_NPY_F32);
  g_assert_cmpint (a->ndim, ==, 2);
  g_assert_cmpint (a->shape[0], ==, 2);
  g_assert_cmpint (a->shape[1], ==, 3);
  g_assert_cmpint (a->numel, ==, 6);
  for (int i = 0; i < 6; i++)
    g_assert_cmpfloat (((float *) a->data)[i], ==, i * 0.5f - 1);
}

static void
test_numpy_f8 (void)
{
  g_autoptr (DdpmNpyArray) a = load_fixture ("f8_3.npy");
  g_assert_cmpint (a->type, ==, DDPM_NPY_F64);
  g_assert_cmpint (a->ndim, ==, 1);
  g_assert_cmpint (a->shape[0], ==, 3);
  g_autofree float *f = ddpm_npy_to_f32 (a);
  for (int i = 0; i < 3; i++)
    {
      g_assert_cmpfloat (((double *) a->data)[i], ==, i * 0.5 - 1);
      g_assert_cmpfloat (f[i], ==, i * 0.5f - 1);
    }
}

static void
test_numpy_ints (void)
{
  g_autoptr (DdpmNpyArray) a = load_fixture ("i8_4.npy");
  g_assert_cmpint (a->type, ==, DDPM_NPY_I64);
  g_assert_cmpint (a->ndim, ==, 1);
  g_assert_cmpint (a->shape[0], ==, 4);
  for (int i = 0; i < 4; i++)
    g_assert_cmpint (((int64_t *) a->data)[i], ==, i * 3 - 5);

  g_autoptr (DdpmNpyArray) b = load_fixture ("i4_2x2.npy");
  g_assert_cmpint (b->type, ==, DDPM_NPY_I32);
  g_assert_cmpint (b->ndim, ==, 2);
  g_autofree float *f = ddpm_npy_to_f32 (b);
  for (int i = 0; i < 4; i++)
    {
      g_assert_cmpint (((int32_t *) b->data)[i], ==, i * 3 - 5);
      g_assert_cmpfloat (f[i], ==, i * 3 - 5);
    }
}

static void
test_numpy_scalar_and_empty (void)
{
  g_autoptr (DdpmNpyArray) s = load_fixture ("f4_scalar.npy");
  g_assert_cmpint (s->ndim, ==, 0);
  g_assert_cmpint (s->numel, ==, 1);
  g_assert_cmpfloat (((float *) s->data)[0], ==, 2.5f);

  g_autoptr (DdpmNpyArray) e = load_fixture ("f4_empty_0x3.npy");
  g_assert_cmpint (e->ndim, ==, 2);
  g_assert_cmpint (e->shape[0], ==, 0);
  g_assert_cmpint (e->shape[1], ==, 3);
  g_assert_cmpint (e->numel, ==, 0);
}

static void
test_numpy_versions (void)
{
  g_autoptr (DdpmNpyArray) a = load_fixture ("f4_1x2x1x2_v2.npy");
  g_assert_cmpint (a->ndim, ==, 4);
  g_assert_cmpint (a->shape[1], ==, 2);
  g_assert_cmpint (a->shape[3], ==, 2);
  for (int i = 0; i < 4; i++)
    g_assert_cmpfloat (((float *) a->data)[i], ==, i * 0.5f - 1);

  g_autoptr (DdpmNpyArray) b = load_fixture ("f4_3_v3.npy");
  g_assert_cmpint (b->ndim, ==, 1);
  for (int i = 0; i < 3; i++)
    g_assert_cmpfloat (((float *) b->data)[i], ==, i * 0.5f - 1);
}

/* ---- writer ------------------------------------------------------------------------------------ */

static void
roundtrip (int ndim, const int64_t *shape)
{
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  float *x = g_new (float, MAX (n, 1));
  for (int64_t i = 0; i < n; i++)
    x[i] = (float) i * 0.25f - 3.0f;
  g_autofree char *path = tmp_path ("roundtrip.npy");
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_npy_save_f32 (path, x, ndim, shape, &error));
  g_assert_no_error (error);

  /* numpy >= 1.14 aligns the data start to 64 bytes; the header ends with '\n'. */
  g_autofree char *bytes = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (path, &bytes, &len, NULL));
  size_t hl = (guint8) bytes[8] | ((size_t) (guint8) bytes[9] << 8);
  g_assert_cmpint ((10 + hl) % 64, ==, 0);
  g_assert_cmpint (bytes[10 + hl - 1], ==, '\n');
  g_assert_cmpuint (len, ==, 10 + hl + 4 * (size_t) n);

  g_autoptr (DdpmNpyArray) a = ddpm_npy_load (path, &error);
  g_assert_no_error (error);
  g_assert_cmpint (a->type, ==, DDPM_NPY_F32);
  g_assert_cmpint (a->ndim, ==, ndim);
  for (int i = 0; i < ndim; i++)
    g_assert_cmpint (a->shape[i], ==, shape[i]);
  g_assert_cmpint (a->numel, ==, n);
  if (n)
    g_assert_cmpmem (a->data, n * 4, x, n * 4);
  g_free (x);
}

static void
test_roundtrip (void)
{
  roundtrip (0, NULL);
  roundtrip (1, (int64_t[]) { 5 });
  roundtrip (4, (int64_t[]) { 2, 3, 4, 5 });
  roundtrip (5, (int64_t[]) { 3, 1, 3, 2, 2 });
  roundtrip (2, (int64_t[]) { 0, 7 });
  roundtrip (8, (int64_t[]) { 1, 2, 1, 2, 1, 2, 1, 2 });
}

/* Our writer produces exactly the bytes numpy's np.save writes for the same array. */
static void
test_writer_matches_numpy (void)
{
  struct { const char *fixture; int ndim; int64_t shape[4]; float v[6]; } cases[] = {
    { "f4_2x3.npy", 2, { 2, 3 }, { -1, -0.5f, 0, 0.5f, 1, 1.5f } },
    { "f4_scalar.npy", 0, { 0 }, { 2.5f } },
    { "f4_empty_0x3.npy", 2, { 0, 3 }, { 0 } },
  };
  for (size_t c = 0; c < G_N_ELEMENTS (cases); c++)
    {
      g_autofree char *rel = g_build_filename ("npy", cases[c].fixture, NULL);
      g_autofree char *want_path = fixture_path (rel);
      g_autofree char *path = tmp_path ("same.npy");
      g_autoptr (GError) error = NULL;
      g_assert_true (ddpm_npy_save_f32 (path, cases[c].v, cases[c].ndim, cases[c].shape, &error));
      g_autofree char *got = NULL, *want = NULL;
      gsize got_len, want_len;
      g_assert_true (g_file_get_contents (path, &got, &got_len, NULL));
      g_assert_true (g_file_get_contents (want_path, &want, &want_len, NULL));
      g_assert_cmpmem (got, got_len, want, want_len);
    }
  /* The 1-D tuple is written as (n,). */
  g_autofree char *path = tmp_path ("one_d.npy");
  g_assert_true (ddpm_npy_save_f32 (path, (float[]) { 1, 2, 3 }, 1, (int64_t[]) { 3 }, NULL));
  g_autofree char *got = NULL;
  g_assert_true (g_file_get_contents (path, &got, NULL, NULL));
  g_assert_nonnull (strstr (got + 10, "'shape': (3,), }"));
}

static void
test_write_error (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = g_build_filename (tmp_dir, "no-such-dir", "x.npy", NULL);
  g_assert_false (ddpm_npy_save_f32 (path, (float[]) { 1 }, 1, (int64_t[]) { 1 }, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_IO);
  g_assert_nonnull (strstr (error->message, path));
}

/* ---- bad files --------------------------------------------------------------------------------- */

static void
test_bad_numpy_files (void)
{
  expect_fixture_error ("bad_fortran.npy", "Fortran");
  expect_fixture_error ("bad_bigendian.npy", "big-endian");
  expect_fixture_error ("bad_dtype_u8.npy", "dtype '|u1'");
  expect_fixture_error ("bad_dtype_f2.npy", "dtype '<f2'");
}

static void
test_bad_magic (void)
{
  g_autofree char *p1 = write_bytes ("magic.npy", "\x93NUMPZ\x01\x00\x10\x00{}", 12);
  expect_error_at (p1, DDPM_ERROR_FORMAT, "magic");
  g_autofree char *p2 = write_bytes ("png.npy", "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
  expect_error_at (p2, DDPM_ERROR_FORMAT, "magic");
  g_autofree char *p3 = write_bytes ("empty.npy", "", 0);
  expect_error_at (p3, DDPM_ERROR_FORMAT, "magic");
  g_autofree char *p4 = write_bytes ("short.npy", "\x93NUM", 4);
  expect_error_at (p4, DDPM_ERROR_FORMAT, "magic");
  g_autofree char *p5 = write_bytes ("ver.npy", "\x93NUMPY\x04\x00\x02\x00{}", 12);
  expect_error_at (p5, DDPM_ERROR_FORMAT, "version 4.0");
}

static void
test_truncated_header (void)
{
  const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
  g_autofree char *full = write_raw ("full.npy", 1, h, (float[]) { 1, 2 }, 8);
  g_autofree char *bytes = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (full, &bytes, &len, NULL));
  /* Cut inside the length field, then inside the header. */
  g_autofree char *p1 = write_bytes ("cut9.npy", bytes, 9);
  expect_error_at (p1, DDPM_ERROR_FORMAT, "truncated .npy header");
  g_autofree char *p2 = write_bytes ("cut30.npy", bytes, 30);
  expect_error_at (p2, DDPM_ERROR_FORMAT, "truncated .npy header");
  /* A v2 header length larger than the file. */
  g_autofree char *p3 = write_bytes ("v2len.npy", "\x93NUMPY\x02\x00\xff\xff\x00\x00{}", 14);
  expect_error_at (p3, DDPM_ERROR_FORMAT, "truncated .npy header");
  /* A header length over the limit. */
  g_autofree char *p4 = write_bytes ("v2huge.npy", "\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14);
  expect_error_at (p4, DDPM_ERROR_FORMAT, "exceeds the limit");
}

static void
test_truncated_data (void)
{
  const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
  g_autofree char *p1 = write_raw ("trunc.npy", 1, h, (float[]) { 1, 2, 3, 4, 5 }, 20);
  expect_error_at (p1, DDPM_ERROR_FORMAT, "truncated .npy data");
  g_autofree char *p2 = write_raw ("nodata.npy", 1, h, NULL, 0);
  expect_error_at (p2, DDPM_ERROR_FORMAT, "truncated .npy data");
  /* Half an element too many is refused too (the header would not describe the file). */
  g_autofree char *p3 = write_raw ("extra.npy", 1, h, (float[]) { 1, 2, 3, 4, 5, 6, 7 }, 26);
  expect_error_at (p3, DDPM_ERROR_FORMAT, "bytes after the data");
}

static void
test_bad_shapes (void)
{
  g_autofree char *p1 = write_raw ("neg.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }\n",
                                   NULL, 0);
  expect_error_at (p1, DDPM_ERROR_FORMAT, "negative");
  /* Product overflows 64 bits. */
  g_autofree char *p2 = write_raw ("overflow.npy", 1,
                                   "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n",
                                   NULL, 0);
  expect_error_at (p2, DDPM_ERROR_FORMAT, "overflows");
  /* A single dimension beyond int64. */
  g_autofree char *p3 = write_raw ("bigdim.npy", 1,
                                   "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }\n",
                                   NULL, 0);
  expect_error_at (p3, DDPM_ERROR_FORMAT, "too large");
  /* Absurd but representable: 2^62 elements * 8 bytes overflows; 2^40 elements exceed the file. */
  g_autofree char *p4 = write_raw ("bytesoverflow.npy", 1,
                                   "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }\n",
                                   (float[]) { 1, 2 }, 8);
  expect_error_at (p4, DDPM_ERROR_FORMAT, "truncated .npy data");
  g_autofree char *p5 = write_raw ("absurd.npy", 1,
                                   "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }\n",
                                   (float[]) { 1, 2 }, 8);
  expect_error_at (p5, DDPM_ERROR_FORMAT, "truncated .npy data");
  g_autofree char *p6 = write_raw ("ndim9.npy", 1,
                                   "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }\n",
                                   (float[]) { 1 }, 4);
  expect_error_at (p6, DDPM_ERROR_FORMAT, "dimensions");
  g_autofree char *p7 = write_raw ("notuple.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }\n",
                                   (float[]) { 1, 2 }, 8);
  expect_error_at (p7, DDPM_ERROR_FORMAT, "'('");
}

static void
test_bad_headers (void)
{
  struct { const char *header; const char *needle; } cases[] = {
    { "{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }\n", "big-endian" },
    { "{'descr': '<u4', 'fortran_order': False, 'shape': (1,), }\n", "unsupported .npy dtype" },
    { "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n", "unsupported .npy dtype" },
    { "{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }\n", "no byte order" },
    { "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n", "structured" },
    { "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }\n", "Fortran" },
    { "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }\n", "True/False" },
    { "{'descr': '<f4', 'shape': (1,), }\n", "missing key 'fortran_order'" },
    { "{'fortran_order': False, 'shape': (1,), }\n", "missing key 'descr'" },
    { "{'descr': '<f4', 'fortran_order': False, }\n", "missing key 'shape'" },
    { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}\n", "unexpected key 'x'" },
    { "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}\n", "unexpected key 'descr'" },
    { "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}\n", "expected ',' or '}'" },
    { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)\n", "expected ',' or '}'" },
    { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk\n", "text after the dict" },
    { "{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}\n", "" },
    { "['descr', '<f4']\n", "'{'" },
    { "", "'{'" },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *name = g_strdup_printf ("hdr%zu.npy", i);
      g_autofree char *p = write_raw (name, 1, cases[i].header, (float[]) { 1 }, 4);
      expect_error_at (p, DDPM_ERROR_FORMAT, cases[i].needle);
    }
  /* Accepted variants: native '=' order (little-endian hosts), double quotes, no trailing comma, no
   * padding, an old Python-2 long suffix. */
  const char *good[] = {
    "{'descr': '=f4', 'fortran_order': False, 'shape': (1,), }\n",
    "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (1,)}",
    "{'shape': (1L,), 'fortran_order': False, 'descr': '<f4'}",
  };
  for (size_t i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autofree char *p = write_raw ("good.npy", 1, good[i], (float[]) { 7 }, 4);
      g_autoptr (GError) error = NULL;
      g_autoptr (DdpmNpyArray) a = ddpm_npy_load (p, &error);
      g_assert_no_error (error);
      g_assert_cmpint (a->ndim, ==, 1);
      g_assert_cmpfloat (((float *) a->data)[0], ==, 7);
    }
}

static void
test_missing_file (void)
{
  g_autofree char *path = tmp_path ("does-not-exist.npy");
  expect_error_at (path, DDPM_ERROR_IO, "No such file");
  expect_error_at (tmp_dir, DDPM_ERROR_IO, NULL);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  tmp_dir = g_dir_make_tmp ("test_npy-XXXXXX", NULL);
  g_assert_nonnull (tmp_dir);

  g_test_add_func ("/npy/numpy/f4", test_numpy_f4);
  g_test_add_func ("/npy/numpy/f8", test_numpy_f8);
  g_test_add_func ("/npy/numpy/ints", test_numpy_ints);
  g_test_add_func ("/npy/numpy/scalar-and-empty", test_numpy_scalar_and_empty);
  g_test_add_func ("/npy/numpy/versions-2-3", test_numpy_versions);
  g_test_add_func ("/npy/write/roundtrip", test_roundtrip);
  g_test_add_func ("/npy/write/matches-numpy", test_writer_matches_numpy);
  g_test_add_func ("/npy/write/error", test_write_error);
  g_test_add_func ("/npy/bad/numpy-written", test_bad_numpy_files);
  g_test_add_func ("/npy/bad/magic", test_bad_magic);
  g_test_add_func ("/npy/bad/truncated-header", test_truncated_header);
  g_test_add_func ("/npy/bad/truncated-data", test_truncated_data);
  g_test_add_func ("/npy/bad/shape", test_bad_shapes);
  g_test_add_func ("/npy/bad/header", test_bad_headers);
  g_test_add_func ("/npy/bad/missing-file", test_missing_file);

  int rc = g_test_run ();
  /* Remove the scratch files. */
  GDir *d = g_dir_open (tmp_dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name (d)))
    {
      g_autofree char *p = tmp_path (name);
      g_remove (p);
    }
  if (d)
    g_dir_close (d);
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return rc;
}
