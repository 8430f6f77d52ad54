/* test_torch_zip.c: the PyTorch .bin (torch.save zip) loader against files torch itself wrote
 * (tests/fixtures/bin, from tools/make_bin_fixtures.py) and against archives built here.
 *
 * Good files must give, tensor for tensor, the same names, dtypes, shapes and BYTES as the safetensors file
 * of the same model. Bad files must fail with the stated error code and a message naming the problem.
 * The two fp32 models (2-3 MB each) are re-assembled at run time from torch's own data.pkl and the
 * safetensors bytes, in torch's zip layout (ZipBuilder below imitates miniz: bit 3 + data descriptors,
 * "FB" padding to 64 bytes, ZIP64 end records; optionally ZIP64 central headers as past 4 GiB). */
#include "model.h"
#include "pickle.h"
#include "tensor_table.h"
#include "test_util.h"
#include "zip_reader.h"

#include <glib/gstdio.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------------- */

static DdpmTensorTable *
load_fixture (const char *rel, GError **error)
{
  g_autofree char *path = fixture_path (rel);
  if (g_str_has_suffix (rel, ".safetensors"))
    return ddpm_safetensors_load (path, error);
  return ddpm_torch_zip_load (path, error);
}

static gsize
tensor_bytes (const DdpmRawTensor *t)
{
  return (gsize) t->numel * ddpm_dtype_size (t->dtype);
}

/* Every tensor of want is in got with the same dtype, shape and bytes, and nothing else is. */
static void
assert_same_tensors (const DdpmTensorTable *got, const DdpmTensorTable *want, const char *label)
{
  g_assert_cmpuint (ddpm_tensor_table_size (got), ==, ddpm_tensor_table_size (want));
  g_autoptr (GPtrArray) names = ddpm_tensor_table_names (want);
  gsize bytes = 0;
  for (guint i = 0; i < names->len; i++) {
    const char *name = names->pdata[i];
    const DdpmRawTensor *a = ddpm_tensor_table_lookup (got, name), *b = ddpm_tensor_table_lookup (want, name);
    if (!a)
      g_error ("%s: tensor '%s' missing from the .bin table", label, name);
    g_assert_cmpint (a->dtype, ==, b->dtype);
    g_assert_cmpint (a->ndim, ==, b->ndim);
    for (int d = 0; d < a->ndim; d++)
      g_assert_cmpint (a->shape[d], ==, b->shape[d]);
    g_assert_cmpint (a->numel, ==, b->numel);
    if (memcmp (a->data, b->data, tensor_bytes (a)) != 0)
      g_error ("%s: tensor '%s' bytes differ", label, name);
    bytes += tensor_bytes (a);
  }
  g_test_message ("%s: %u tensors, %" G_GSIZE_FORMAT " bytes identical to safetensors", label, names->len, bytes);
}

static void
assert_error (GError *error, int code, const char *substring, const char *label)
{
  if (!error)
    g_error ("%s: loaded, but should fail with '%s'", label, substring);
  if (error->domain != DDPM_ERROR || error->code != code || !strstr (error->message, substring))
    g_error ("%s: expected code %d with '%s', got code %d: %s", label, code, substring, error->code, error->message);
  g_test_message ("%s: %s", label, error->message);
}

/* ---- an archive writer imitating torch's (miniz) layout -------------------------------------------- */

typedef struct {
  char *name;
  guint32 crc;
  guint64 size, offset;
} CentralRecord;

typedef struct {
  GByteArray *out;
  GArray *central;                 /* CentralRecord */
  char *archive;
  gboolean zip64;                  /* central headers with 0xFFFFFFFF + ZIP64 extra, 8-byte descriptors */
  gboolean crc;                    /* FALSE: write 0 (as set_crc32_options(False)) */
} ZipBuilder;

static void put16 (GByteArray *b, guint v) { guint8 x[2] = { v, v >> 8 }; g_byte_array_append (b, x, 2); }
static void put32 (GByteArray *b, guint32 v) { guint8 x[4] = { v, v >> 8, v >> 16, v >> 24 }; g_byte_array_append (b, x, 4); }
static void put64 (GByteArray *b, guint64 v) { put32 (b, (guint32) v); put32 (b, (guint32) (v >> 32)); }

static ZipBuilder *
zb_new (const char *archive, gboolean zip64, gboolean crc)
{
  ZipBuilder *zb = g_new0 (ZipBuilder, 1);
  zb->out = g_byte_array_new ();
  zb->central = g_array_new (FALSE, FALSE, sizeof (CentralRecord));
  zb->archive = g_strdup (archive);
  zb->zip64 = zip64;
  zb->crc = crc;
  return zb;
}

static void
zb_add (ZipBuilder *zb, const char *name, const void *data, gsize n)
{
  g_autofree char *full = g_strdup_printf ("%s/%s", zb->archive, name);
  guint len = (guint) strlen (full);
  CentralRecord r = { g_strdup (full), zb->crc ? ddpm_crc32 (0, data, n) : 0, n, zb->out->len };
  guint pad = (64 - (zb->out->len + 30 + len + 4) % 64) % 64;
  put32 (zb->out, 0x04034b50);
  put16 (zb->out, 0); put16 (zb->out, 0x0808); put16 (zb->out, 0); put16 (zb->out, 0); put16 (zb->out, 0);
  put32 (zb->out, 0); put32 (zb->out, 0); put32 (zb->out, 0);
  put16 (zb->out, len); put16 (zb->out, 4 + pad);
  g_byte_array_append (zb->out, (const guint8 *) full, len);
  g_byte_array_append (zb->out, (const guint8 *) "FB", 2);
  put16 (zb->out, pad);
  for (guint i = 0; i < pad; i++)
    g_byte_array_append (zb->out, (const guint8 *) "Z", 1);
  g_assert_cmpuint (zb->out->len % 64, ==, 0);
  g_byte_array_append (zb->out, data, (guint) n);
  put32 (zb->out, 0x08074b50);
  put32 (zb->out, r.crc);
  if (zb->zip64) { put64 (zb->out, n); put64 (zb->out, n); } else { put32 (zb->out, n); put32 (zb->out, n); }
  g_array_append_val (zb->central, r);
}

static GBytes *
zb_finish (ZipBuilder *zb)
{
  guint64 cd_offset = zb->out->len;
  for (guint i = 0; i < zb->central->len; i++) {
    CentralRecord *r = &g_array_index (zb->central, CentralRecord, i);
    guint len = (guint) strlen (r->name);
    put32 (zb->out, 0x02014b50);
    put16 (zb->out, 0); put16 (zb->out, 0); put16 (zb->out, 0x0808); put16 (zb->out, 0);
    put16 (zb->out, 0); put16 (zb->out, 0);
    /* ZIP64: the extra field holds exactly the saturated values. torch saturates what exceeds 32 bits
     * (sizes of a > 4 GiB storage, offsets past 4 GiB); cycle through sizes+offset, sizes, offset. */
    gboolean big_size = zb->zip64 && i % 3 != 2, big_offset = zb->zip64 && i % 3 != 1;
    put32 (zb->out, r->crc);
    put32 (zb->out, big_size ? 0xffffffffu : r->size);
    put32 (zb->out, big_size ? 0xffffffffu : r->size);
    put16 (zb->out, len); put16 (zb->out, zb->zip64 ? 4 + 16 * big_size + 8 * big_offset : 0); put16 (zb->out, 0);
    put16 (zb->out, 0); put16 (zb->out, 0); put32 (zb->out, 0);
    put32 (zb->out, big_offset ? 0xffffffffu : r->offset);
    g_byte_array_append (zb->out, (const guint8 *) r->name, len);
    if (zb->zip64) {
      put16 (zb->out, 1); put16 (zb->out, 16 * big_size + 8 * big_offset);
      if (big_size) { put64 (zb->out, r->size); put64 (zb->out, r->size); }
      if (big_offset) put64 (zb->out, r->offset);
    }
    g_free (r->name);
  }
  guint64 cd_size = zb->out->len - cd_offset, n = zb->central->len, z64 = zb->out->len;
  put32 (zb->out, 0x06064b50); put64 (zb->out, 44); put16 (zb->out, 45); put16 (zb->out, 45);
  put32 (zb->out, 0); put32 (zb->out, 0); put64 (zb->out, n); put64 (zb->out, n);
  put64 (zb->out, cd_size); put64 (zb->out, cd_offset);
  put32 (zb->out, 0x07064b50); put32 (zb->out, 0); put64 (zb->out, z64); put32 (zb->out, 1);
  put32 (zb->out, 0x06054b50); put16 (zb->out, 0); put16 (zb->out, 0);
  put16 (zb->out, zb->zip64 ? 0xffff : n); put16 (zb->out, zb->zip64 ? 0xffff : n);
  put32 (zb->out, zb->zip64 ? 0xffffffffu : cd_size); put32 (zb->out, zb->zip64 ? 0xffffffffu : cd_offset);
  put16 (zb->out, 0);
  GBytes *bytes = g_byte_array_free_to_bytes (zb->out);
  g_array_unref (zb->central);
  g_free (zb->archive);
  g_free (zb);
  return bytes;
}

/* An archive holding data.pkl and the storages (key, bytes) given as alternating varargs, NULL-ended. */
static GBytes *
archive_with_pickle (const guint8 *pkl, gsize n, gboolean crc, ...)
{
  ZipBuilder *zb = zb_new ("archive", FALSE, crc);
  zb_add (zb, "data.pkl", pkl, n);
  zb_add (zb, "byteorder", "little", 6);
  va_list ap;
  va_start (ap, crc);
  const char *key;
  while ((key = va_arg (ap, const char *))) {
    GBytes *data = va_arg (ap, GBytes *);
    g_autofree char *name = g_strconcat ("data/", key, NULL);
    zb_add (zb, name, g_bytes_get_data (data, NULL), g_bytes_get_size (data));
  }
  va_end (ap);
  zb_add (zb, "version", "3\n", 2);
  return zb_finish (zb);
}

/* ---- re-assembling the fp32 models from torch's data.pkl + the safetensors bytes ----------------- */

/* Builds <model>'s .bin in torch's layout: bin/<model>/data.pkl is torch's pickle, bin/<model>/storages.txt
 * says which safetensors tensor holds each storage's bytes. */
static GBytes *
assemble_bin (const char *model, gboolean zip64, DdpmTensorTable **safetensors_out)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *st_rel = g_strdup_printf ("models/%s/diffusion_pytorch_model.safetensors", model);
  g_autoptr (DdpmTensorTable) st = load_fixture (st_rel, &error);
  g_assert_no_error (error);

  g_autofree char *pkl_rel = g_strdup_printf ("bin/%s/data.pkl", model);
  g_autofree char *map_rel = g_strdup_printf ("bin/%s/storages.txt", model);
  g_autofree char *pkl_path = fixture_path (pkl_rel), *map_path = fixture_path (map_rel);
  g_autofree char *pkl = NULL, *map = NULL;
  gsize pkl_len;
  g_assert_true (g_file_get_contents (pkl_path, &pkl, &pkl_len, NULL));
  g_assert_true (g_file_get_contents (map_path, &map, NULL, NULL));

  g_auto (GStrv) lines = g_strsplit (map, "\n", -1);
  g_assert_true (g_str_has_prefix (lines[0], "archive "));
  ZipBuilder *zb = zb_new (lines[0] + strlen ("archive "), zip64, TRUE);
  zb_add (zb, "data.pkl", pkl, pkl_len);
  GPtrArray *records = g_ptr_array_new_with_free_func ((GDestroyNotify) g_strfreev);
  for (int i = 1; lines[i] && *lines[i]; i++) {
    g_auto (GStrv) f = g_strsplit (lines[i], " ", 3);
    if (strcmp (f[0], "record") == 0) {
      g_ptr_array_add (records, g_steal_pointer (&f));   /* written after the storages, as torch does */
      continue;
    }
    const DdpmRawTensor *t = ddpm_tensor_table_lookup (st, f[1]);
    g_assert_nonnull (t);
    g_autofree char *name = g_strconcat ("data/", f[0], NULL);
    zb_add (zb, name, t->data, tensor_bytes (t));
  }
  for (guint i = 0; i < records->len; i++) {
    char **f = records->pdata[i];
    zb_add (zb, f[1], f[2], strlen (f[2]));
  }
  g_ptr_array_unref (records);
  zb_add (zb, ".data/serialization_id", "0000000000000000000000000000000000000000", 40);
  if (safetensors_out)
    *safetensors_out = g_steal_pointer (&st);
  return zb_finish (zb);
}

static void
check_assembled (const char *model, gboolean zip64)
{
  g_autoptr (DdpmTensorTable) st = NULL;
  g_autoptr (GBytes) bin = assemble_bin (model, zip64, &st);
  g_autoptr (GError) error = NULL;
  gint64 t0 = g_get_monotonic_time ();
  g_autoptr (DdpmTensorTable) table = ddpm_torch_zip_parse (bin, model, &error);
  gint64 t1 = g_get_monotonic_time ();
  g_assert_no_error (error);
  g_assert_cmpstr (ddpm_tensor_table_format (table), ==, "pytorch-zip");
  g_test_message ("%s%s: %" G_GSIZE_FORMAT " bytes parsed (CRC-32 included) in %.1f ms", model,
                  zip64 ? " (ZIP64 headers)" : "", g_bytes_get_size (bin), (t1 - t0) / 1000.0);
  assert_same_tensors (table, st, model);
}

static void
test_assembled_cifar (void)
{
  check_assembled ("cifar-like", FALSE);
}

static void
test_assembled_celebahq_legacy (void)
{
  check_assembled ("celebahq-like", FALSE);
  /* The hub's google/ddpm-* layout: legacy attention names with [C, C, 1, 1] weights. */
  g_autoptr (GBytes) bin = assemble_bin ("celebahq-like", FALSE, NULL);
  g_autoptr (DdpmTensorTable) table = ddpm_torch_zip_parse (bin, "celebahq-like", NULL);
  const DdpmRawTensor *q = ddpm_tensor_table_lookup (table, "mid_block.attentions.0.query.weight");
  g_assert_nonnull (q);
  g_assert_cmpint (q->ndim, ==, 4);
  g_assert_cmpint (q->shape[2], ==, 1);
  g_assert_cmpint (q->shape[3], ==, 1);
  g_assert_null (ddpm_tensor_table_lookup (table, "mid_block.attentions.0.to_q.weight"));
}

static void
test_assembled_zip64 (void)
{
  check_assembled ("cifar-like", TRUE);
}

/* ---- files torch wrote --------------------------------------------------------------------------- */

static void
check_file_against (const char *bin_rel, const char *st_rel)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) bin = load_fixture (bin_rel, &error);
  g_assert_no_error (error);
  g_autoptr (DdpmTensorTable) st = load_fixture (st_rel, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ddpm_tensor_table_format (bin), ==, "pytorch-zip");
  assert_same_tensors (bin, st, bin_rel);
}

static void
test_model_bf16 (void)
{
  check_file_against ("bin/bf16-tiny/diffusion_pytorch_model.bin", "models/bf16-tiny/diffusion_pytorch_model.safetensors");
}

static void
test_model_fp16 (void)
{
  check_file_against ("bin/demo-tiny/diffusion_pytorch_model.bin", "models/demo-tiny/diffusion_pytorch_model.safetensors");
}

static void
test_edge_files (void)
{
  static const char *const files[] = { "mixed.bin", "zip64.bin", "no-byteorder.bin", "no-crc.bin", "protocol4.bin" };
  for (guint i = 0; i < G_N_ELEMENTS (files); i++) {
    g_autofree char *rel = g_strconcat ("bin/edge/", files[i], NULL);
    check_file_against (rel, "bin/edge/mixed.safetensors");
  }
  /* Views into one shared storage at offsets 10 and 200 point into the same entry. */
  g_autoptr (DdpmTensorTable) t = load_fixture ("bin/edge/mixed.bin", NULL);
  const DdpmRawTensor *a = ddpm_tensor_table_lookup (t, "view.offset10"), *b = ddpm_tensor_table_lookup (t, "view.offset200");
  g_assert_true (b->data - a->data == (200 - 10) * 4);
  g_assert_cmpint (ddpm_tensor_table_lookup (t, "scalar")->ndim, ==, 0);
  g_assert_cmpint (ddpm_tensor_table_lookup (t, "empty")->numel, ==, 0);
  g_assert_nonnull (ddpm_tensor_table_lookup (t, "ünï.çødé"));
}

static void
test_legacy_format (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t = load_fixture ("bin/edge/legacy-format.bin", &error);
  g_assert_null (t);
  assert_error (error, DDPM_ERROR_UNSUPPORTED, "legacy torch.save format", "legacy-format.bin");
}

/* ---- files that must be refused ------------------------------------------------------------------ */

static void
test_bad_files (void)
{
  static const struct { const char *file; int code; const char *message; } cases[] = {
    { "os-system.bin", DDPM_ERROR_FORMAT, "refuses global 'os.system'" },
    { "stack-global-eval.bin", DDPM_ERROR_FORMAT, "refuses global 'builtins.eval'" },
    { "storage-beyond-entry.bin", DDPM_ERROR_FORMAT, "claims 1000 elements" },
    { "view-beyond-storage.bin", DDPM_ERROR_FORMAT, "lie outside its storage" },
    { "missing-storage.bin", DDPM_ERROR_FORMAT, "storage entry 'missing-storage/data/7' is missing" },
    { "duplicate-name.bin", DDPM_ERROR_FORMAT, "duplicate tensor name 'w'" },
    { "noncontiguous.bin", DDPM_ERROR_UNSUPPORTED, "tensor 'w.t' is not contiguous (strides [1, 3])" },
    { "long-storage.bin", DDPM_ERROR_UNSUPPORTED, "tensor 'n' has storage type torch.LongStorage" },
    { "float-value.bin", DDPM_ERROR_FORMAT, "opcode 0x47 (BINFLOAT) is not allowed" },
    { "int-value.bin", DDPM_ERROR_FORMAT, "entry 'step' is a int, not a tensor" },
    { "list.bin", DDPM_ERROR_FORMAT, "holds a list, not a state dict" },
    { "big-endian.bin", DDPM_ERROR_UNSUPPORTED, "big-endian" },
    { "truncated.bin", DDPM_ERROR_FORMAT, "no zip end-of-central-directory record" },
    { "entry-past-end.bin", DDPM_ERROR_FORMAT, "entry 'archive/data/0' (1048576 bytes" },
    { "compressed.bin", DDPM_ERROR_UNSUPPORTED, "entry 'archive/data/0' is compressed (method 8, deflate)" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *rel = g_strconcat ("bin/bad/", cases[i].file, NULL);
    g_autoptr (GError) error = NULL;
    g_autoptr (DdpmTensorTable) t = load_fixture (rel, &error);
    g_assert_null (t);
    assert_error (error, cases[i].code, cases[i].message, cases[i].file);
    g_autofree char *path = fixture_path (rel);
    g_assert_nonnull (strstr (error->message, path));     /* messages name the file */
  }
}

static GBytes *
read_fixture (const char *rel)
{
  g_autofree char *path = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  GBytes *b = ddpm_read_file (path, 1 << 30, &error);
  g_assert_no_error (error);
  return b;
}

static void
test_crc_corruption (void)
{
  g_autoptr (GBytes) good = read_fixture ("bin/edge/mixed.bin");
  g_autoptr (DdpmZipReader) zip = ddpm_zip_reader_new (good, "mixed.bin", NULL);
  const DdpmZipEntry *e = ddpm_zip_reader_find (zip, "archive/data/3");
  g_assert_nonnull (e);
  gsize len;
  const guint8 *orig = g_bytes_get_data (good, &len);
  guint8 *copy = g_memdup2 (orig, len);
  copy[e->data_offset + e->size / 2] ^= 0x10;
  g_autoptr (GBytes) bad = g_bytes_new_take (copy, len);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t = ddpm_torch_zip_parse (bad, "flipped.bin", &error);
  g_assert_null (t);
  assert_error (error, DDPM_ERROR_FORMAT, "entry 'archive/data/3' is corrupt (CRC-32", "bit flip in a storage");
  g_assert_cmphex (ddpm_crc32 (0, (const guint8 *) "123456789", 9), ==, 0xcbf43926); /* the check value */
}

/* Every prefix of an archive must fail cleanly (error set, no table), never crash or read past it. */
static void
test_truncations (void)
{
  g_autoptr (GBytes) good = read_fixture ("bin/edge/mixed.bin");
  gsize len;
  const guint8 *p = g_bytes_get_data (good, &len);
  guint n = 0;
  for (gsize cut = 0; cut < len; cut += (cut < 64 || len - cut < 2048) ? 1 : 61, n++) {
    g_autoptr (GBytes) b = g_bytes_new (p, cut);       /* a copy of exactly cut bytes: ASan sees overreads */
    g_autoptr (GError) error = NULL;
    g_autoptr (DdpmTensorTable) t = ddpm_torch_zip_parse (b, "cut.bin", &error);
    g_assert_null (t);
    g_assert_nonnull (error);
  }
  g_test_message ("%u truncated archives refused", n);
}

/* The pickle under single-byte mutations (CRC 0, so each mutation reaches the interpreter). Each either
 * loads or fails with an error; the point is no crash, leak or overread (run under ASan/valgrind). */
static void
test_pickle_mutations (void)
{
  g_autoptr (GBytes) good = read_fixture ("bin/edge/mixed.bin");
  g_autoptr (DdpmZipReader) zip = ddpm_zip_reader_new (good, "mixed.bin", NULL);
  g_assert_nonnull (zip);
  ZipBuilder *zb = zb_new ("archive", FALSE, FALSE);
  const DdpmZipEntry *pkl = ddpm_zip_reader_find (zip, "archive/data.pkl");
  guint8 *pickle = g_memdup2 (ddpm_zip_reader_data (zip, pkl, NULL), pkl->size);
  for (guint i = 0; i < ddpm_zip_reader_n_entries (zip); i++) {
    const DdpmZipEntry *e = ddpm_zip_reader_entry (zip, i);
    zb_add (zb, e->name + strlen ("archive/"), ddpm_zip_reader_data (zip, e, NULL), e->size);
  }
  g_autoptr (GBytes) rebuilt = zb_finish (zb);
  g_autoptr (DdpmZipReader) rz = ddpm_zip_reader_new (rebuilt, "rebuilt", NULL);
  guint64 at = ddpm_zip_reader_find (rz, "archive/data.pkl")->data_offset;
  gsize len;
  const guint8 *base = g_bytes_get_data (rebuilt, &len);

  static const guint8 flips[] = { 0x01, 0x80, 0xff, 0x10 };
  guint loaded = 0, refused = 0;
  for (guint64 i = 0; i < pkl->size; i++)
    for (guint f = 0; f < G_N_ELEMENTS (flips); f++) {
      guint8 *copy = g_memdup2 (base, len);
      copy[at + i] ^= flips[f];
      g_autoptr (GBytes) b = g_bytes_new_take (copy, len);
      g_autoptr (GError) error = NULL;
      g_autoptr (DdpmTensorTable) t = ddpm_torch_zip_parse (b, "mutant", &error);
      g_assert_true ((t == NULL) == (error != NULL));
      if (t)
        loaded++;
      else
        refused++;
    }
  g_free (pickle);
  g_test_message ("pickle mutations: %u loaded, %u refused", loaded, refused);
  g_assert_cmpuint (refused, >, 0);
}

/* ---- hand-built pickles: each accepted opcode path and each limit -------------------------------- */

typedef struct { GByteArray *b; } Pk;

static void pk_op (Pk *p, guint8 op) { g_byte_array_append (p->b, &op, 1); }
static void
pk_str (Pk *p, const char *s)
{
  pk_op (p, 'X');
  put32 (p->b, (guint32) strlen (s));
  g_byte_array_append (p->b, (const guint8 *) s, (guint) strlen (s));
}
static void
pk_int (Pk *p, gint64 v)
{
  if (v >= 0 && v < 256) { pk_op (p, 'K'); pk_op (p, (guint8) v); }
  else if (v >= 0 && v < 65536) { pk_op (p, 'M'); put16 (p->b, (guint) v); }
  else if (v >= G_MININT32 && v <= G_MAXINT32) { pk_op (p, 'J'); put32 (p->b, (guint32) v); }
  else { pk_op (p, 0x8a); pk_op (p, 8); put64 (p->b, (guint64) v); }
}
static void
pk_global (Pk *p, const char *module, const char *name)
{
  g_autofree char *s = g_strdup_printf ("c%s\n%s\n", module, name);
  g_byte_array_append (p->b, (const guint8 *) s, (guint) strlen (s));
}

typedef struct {
  const char *storage_type;        /* "FloatStorage" */
  const char *key;
  gint64 storage_numel, offset;
  int ndim;
  gint64 shape[4], stride[4];
  const char *metadata_flag;       /* NULL, or a key whose value is True in the 7th argument */
} TensorSpec;

/* torch's state-dict pickle for one tensor 'w' (see pickle.c's header comment). */
static GBytes *
state_dict_pickle (const TensorSpec *t)
{
  Pk p = { g_byte_array_new () };
  pk_op (&p, 0x80); pk_op (&p, 2);
  pk_global (&p, "collections", "OrderedDict"); pk_op (&p, 'q'); pk_op (&p, 0);
  pk_op (&p, ')'); pk_op (&p, 'R');
  pk_str (&p, "w");
  pk_global (&p, "torch._utils", "_rebuild_tensor_v2");
  pk_op (&p, '(');
  pk_op (&p, '('); pk_str (&p, "storage"); pk_global (&p, "torch", t->storage_type); pk_str (&p, t->key);
  pk_str (&p, "cpu"); pk_int (&p, t->storage_numel); pk_op (&p, 't'); pk_op (&p, 'Q');
  pk_int (&p, t->offset);
  pk_op (&p, '('); for (int d = 0; d < t->ndim; d++) pk_int (&p, t->shape[d]); pk_op (&p, 't');
  pk_op (&p, '('); for (int d = 0; d < t->ndim; d++) pk_int (&p, t->stride[d]); pk_op (&p, 't');
  pk_op (&p, 0x89);
  pk_op (&p, 'h'); pk_op (&p, 0); pk_op (&p, ')'); pk_op (&p, 'R');
  if (t->metadata_flag) {
    pk_op (&p, '}'); pk_str (&p, t->metadata_flag); pk_op (&p, 0x88); pk_op (&p, 's');
  }
  pk_op (&p, 't'); pk_op (&p, 'R');
  pk_op (&p, 's');
  pk_op (&p, '.');
  return g_byte_array_free_to_bytes (p.b);
}

static DdpmTensorTable *
parse_pickle_bytes (GBytes *pkl, GBytes *storage, GError **error)
{
  g_autoptr (GBytes) zip = archive_with_pickle (g_bytes_get_data (pkl, NULL), g_bytes_get_size (pkl), TRUE,
                                                "0", storage, NULL);
  return ddpm_torch_zip_parse (zip, "built.bin", error);
}

static DdpmTensorTable *
parse_raw_pickle (const char *bytes, gsize n, GError **error)
{
  g_autoptr (GBytes) pkl = g_bytes_new (bytes, n);
  g_autoptr (GBytes) storage = g_bytes_new_take (g_malloc0 (64), 64);
  return parse_pickle_bytes (pkl, storage, error);
}

static void
test_built_tensors (void)
{
  /* 70000 float32 elements: sizes and numel as BININT; data is a ramp we can check. */
  gint64 n = 70000;
  float *ramp = g_new (float, n + 5);
  for (gint64 i = 0; i < n + 5; i++)
    ramp[i] = (float) i;
  g_autoptr (GBytes) storage = g_bytes_new_take (ramp, (n + 5) * sizeof (float));
  TensorSpec spec = { "FloatStorage", "0", n + 5, 5, 2, { 700, 100 }, { 100, 1 }, NULL };
  g_autoptr (GBytes) pkl = state_dict_pickle (&spec);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmTensorTable) t = parse_pickle_bytes (pkl, storage, &error);
  g_assert_no_error (error);
  const DdpmRawTensor *w = ddpm_tensor_table_lookup (t, "w");
  g_assert_cmpint (w->numel, ==, n);
  float *f = g_new (float, n);
  ddpm_raw_tensor_to_f32 (w, f);
  g_assert_cmpfloat (f[0], ==, 5.0f);
  g_assert_cmpfloat (f[n - 1], ==, (float) (n + 4));
  g_free (f);

  static const struct { TensorSpec spec; int code; const char *message; } bad[] = {
    { { "FloatStorage", "0", 16, 0, 2, { 4, 4 }, { 4, 1 }, "neg" }, DDPM_ERROR_UNSUPPORTED, "lazy 'neg' bit" },
    { { "DoubleStorage", "0", 8, 0, 1, { 8 }, { 1 }, NULL }, DDPM_ERROR_UNSUPPORTED, "torch.DoubleStorage" },
    { { "UntypedStorage", "0", 64, 0, 1, { 64 }, { 1 }, NULL }, DDPM_ERROR_UNSUPPORTED, "torch.UntypedStorage" },
    { { "FloatStorage", "0", 16, 0, 2, { 2, 2 }, { 1, 2 }, NULL }, DDPM_ERROR_UNSUPPORTED, "strides [1, 2]" },
    { { "FloatStorage", "0", 16, 0, 2, { 2, 4 }, { 8, 1 }, NULL }, DDPM_ERROR_UNSUPPORTED, "strides [8, 1]" },
    { { "FloatStorage", "0", 17, 0, 1, { 17 }, { 1 }, NULL }, DDPM_ERROR_FORMAT, "claims 17 elements" },
    { { "FloatStorage", "0", 16, 17, 1, { 0 }, { 1 }, NULL }, DDPM_ERROR_FORMAT, "lie outside its storage" },
    { { "FloatStorage", "1", 16, 0, 1, { 16 }, { 1 }, NULL }, DDPM_ERROR_FORMAT, "storage entry 'archive/data/1' is missing" },
    { { "FloatStorage", "0", 16, 0, 4, { G_GINT64_CONSTANT (1) << 40, 1 << 30, 1 << 30, 1 }, { 1, 1, 1, 1 }, NULL },
      DDPM_ERROR_LIMIT, "element count overflows" },
    { { "LongStorage2", "0", 16, 0, 1, { 16 }, { 1 }, NULL }, DDPM_ERROR_FORMAT, "refuses global 'torch.LongStorage2'" },
  };
  g_autoptr (GBytes) small = g_bytes_new_take (g_malloc0 (64), 64);
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (GBytes) b = state_dict_pickle (&bad[i].spec);
    g_autoptr (GError) e = NULL;
    g_autoptr (DdpmTensorTable) bt = parse_pickle_bytes (b, small, &e);
    g_assert_null (bt);
    assert_error (e, bad[i].code, bad[i].message, bad[i].message);
  }

  /* torch < 1.0's _rebuild_tensor (storage, offset, size, stride): 4 float32 elements from offset 1. */
  static const char v1[] = "\x80\x02}" "X\x01\x00\x00\x00" "w" "ctorch._utils\n_rebuild_tensor\n" "(("
                           "X\x07\x00\x00\x00" "storage" "ctorch\nFloatStorage\n" "X\x01\x00\x00\x00" "0"
                           "X\x03\x00\x00\x00" "cpu" "K\x10" "tQ" "K\x01" "K\x04\x85" "K\x01\x85" "tRs.";
  g_autoptr (GError) e1 = NULL;
  g_autoptr (DdpmTensorTable) t1 = parse_raw_pickle (v1, sizeof v1 - 1, &e1);
  g_assert_no_error (e1);
  g_assert_cmpint (ddpm_tensor_table_lookup (t1, "w")->numel, ==, 4);

  /* Zero-size dims make any strides contiguous; size-1 dims ignore their stride (torch's rule). */
  TensorSpec ok[] = { { "HalfStorage", "0", 32, 0, 3, { 2, 0, 5 }, { 99, 7, 3 }, NULL },
                      { "BFloat16Storage", "0", 32, 2, 3, { 5, 1, 6 }, { 6, 1000, 1 }, NULL } };
  for (guint i = 0; i < G_N_ELEMENTS (ok); i++) {
    g_autoptr (GBytes) b = state_dict_pickle (&ok[i]);
    g_autoptr (GError) e = NULL;
    g_autoptr (DdpmTensorTable) bt = parse_pickle_bytes (b, small, &e);
    g_assert_no_error (e);
  }
}

static void
test_pickle_limits (void)
{
  static const struct { const char *bytes; gsize n; int code; const char *message; } cases[] = {
#define P(s) s, sizeof (s) - 1
    { P ("\x80\x06}."), DDPM_ERROR_UNSUPPORTED, "pickle protocol 6" },
    { P ("\x80\x02}"), DDPM_ERROR_FORMAT, "ends without STOP" },
    { P ("\x80\x02}}."), DDPM_ERROR_FORMAT, "STOP with 2 values" },
    { P ("\x80\x02(}."), DDPM_ERROR_FORMAT, "open MARKs" },
    { P ("\x80\x02h\x05."), DDPM_ERROR_FORMAT, "memo index 5 was never stored" },
    { P ("\x80\x02j\x00\x00\x01\x00."), DDPM_ERROR_FORMAT, "memo index 65536 was never stored" },
    { P ("\x80\x02\xff"), DDPM_ERROR_FORMAT, "byte 0xff is not a pickle opcode" },
    { P ("\x80\x02" "cbuiltins\nexec\n."), DDPM_ERROR_FORMAT, "refuses global 'builtins.exec'" },
    { P ("\x80\x02" "ctorch\nload\n."), DDPM_ERROR_FORMAT, "refuses global 'torch.load'" },
    { P ("\x80\x02" "ccollections\nOrderedDict\n\x8c\x01x\x85R."), DDPM_ERROR_FORMAT, "OrderedDict takes no arguments" },
    { P ("\x80\x02" "ctorch\nFloatStorage\n)R."), DDPM_ERROR_FORMAT, "cannot be called" },
    { P ("\x80\x02]N\x85" "b."), DDPM_ERROR_FORMAT, "BUILD of a list" },
    { P ("\x80\x02}\x8c\x01\x61\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00s."), DDPM_ERROR_LIMIT, "integer of 9 bytes" },
    { P ("\x80\x02}]]s."), DDPM_ERROR_FORMAT, "dict key is a list" },
    { P ("\x80\x02}t."), DDPM_ERROR_FORMAT, "no MARK to close" },
    { P ("\x80\x02s."), DDPM_ERROR_FORMAT, "stack underflow" },
    { P ("\x80\x02(\x85."), DDPM_ERROR_FORMAT, "stack underflow" },
    { P ("\x80\x02X\x05\x00\x00\x00" "ab."), DDPM_ERROR_FORMAT, "truncated" },
    { P ("\x80\x02\x8c\x02\xc3\x28."), DDPM_ERROR_FORMAT, "not valid UTF-8" },
    { P ("\x80\x02\x8c\x02\x61\x00."), DDPM_ERROR_FORMAT, "not valid UTF-8 or contains NUL" },
    { P ("\x80\x02\x95\xff\x00\x00\x00\x00\x00\x00\x00}."), DDPM_ERROR_FORMAT, "frame of 255 bytes overruns" },
    { P ("\x80\x02}\x8c\x01wK\x01s."), DDPM_ERROR_FORMAT, "entry 'w' is a int, not a tensor" },
    { P ("\x80\x02}\x8c\x01w}s."), DDPM_ERROR_FORMAT, "entry 'w' is a dict, not a tensor" },
    { P ("\x80\x02}K\x01\x8c\x01ws."), DDPM_ERROR_FORMAT, "key 0 is a int, not a str" },
    { P ("\x80\x02\x8c\x07storage\x85Q."), DDPM_ERROR_FORMAT, "persistent id is not" },
    { P ("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)R."), DDPM_ERROR_FORMAT, "takes 6 or 7 arguments" },
    { P ("\x80\x02" "c\x63ollections\nOrderedDict"), DDPM_ERROR_FORMAT, "GLOBAL line not terminated" },
    { P ("\x80\x02.\x00\x00"), DDPM_ERROR_FORMAT, "STOP with 0 values" },
    { P ("\x80\x02P0\n."), DDPM_ERROR_FORMAT, "opcode 0x50 (PERSID) is not allowed" },
    { P ("\x80\x02\x81."), DDPM_ERROR_FORMAT, "(NEWOBJ) is not allowed" },
    { P ("\x80\x02i__main__\nX\n."), DDPM_ERROR_FORMAT, "(INST) is not allowed" },
#undef P
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (DdpmTensorTable) t = parse_raw_pickle (cases[i].bytes, cases[i].n, &error);
    g_assert_null (t);
    assert_error (error, cases[i].code, cases[i].message, cases[i].message);
  }

  /* Limits that need bulk: MARK nesting, string length, stack depth. */
  GByteArray *b = g_byte_array_new ();
  g_byte_array_append (b, (const guint8 *) "\x80\x02", 2);
  for (int i = 0; i < DDPM_PICKLE_MAX_MARKS + 1; i++)
    g_byte_array_append (b, (const guint8 *) "(", 1);
  g_autoptr (GError) e1 = NULL;
  g_assert_null (parse_raw_pickle ((const char *) b->data, b->len, &e1));
  assert_error (e1, DDPM_ERROR_LIMIT, "DDPM_PICKLE_MAX_MARKS", "marks");
  g_byte_array_set_size (b, 2);
  guint8 hdr[5] = { 'X', 0x71, 0x11, 0x01, 0x00 };            /* BINUNICODE of 70001 bytes */
  g_byte_array_append (b, hdr, 5);
  g_byte_array_set_size (b, b->len + 70001);
  memset (b->data + 7, 'a', 70001);
  g_autoptr (GError) e2 = NULL;
  g_assert_null (parse_raw_pickle ((const char *) b->data, b->len, &e2));
  assert_error (e2, DDPM_ERROR_LIMIT, "DDPM_PICKLE_MAX_STRING", "long string");
  g_byte_array_set_size (b, 2);
  for (int i = 0; i < DDPM_PICKLE_MAX_STACK + 1; i++)
    g_byte_array_append (b, (const guint8 *) "N", 1);
  g_autoptr (GError) e3 = NULL;
  g_assert_null (parse_raw_pickle ((const char *) b->data, b->len, &e3));
  assert_error (e3, DDPM_ERROR_LIMIT, "DDPM_PICKLE_MAX_STACK", "deep stack");
  g_byte_array_unref (b);
}

static void
test_zip_structure (void)
{
  /* A central directory that claims more entries than it can hold is caught before any allocation. */
  g_autoptr (GBytes) good = read_fixture ("bin/edge/mixed.bin");
  gsize len;
  const guint8 *orig = g_bytes_get_data (good, &len);
  guint8 *copy = g_memdup2 (orig, len);
  guint8 *z64 = NULL;
  for (gsize i = len - 22; i-- > 0;)
    if (memcmp (copy + i, "PK\x06\x06", 4) == 0) {
      z64 = copy + i;
      break;
    }
  g_assert_nonnull (z64);
  for (int k = 0; k < 8; k++)
    z64[24 + k] = z64[32 + k] = k == 2 ? 0x01 : 0;            /* 65536 entries */
  g_autoptr (GBytes) many = g_bytes_new_take (copy, len);
  g_autoptr (GError) error = NULL;
  g_assert_null (ddpm_torch_zip_parse (many, "many.bin", &error));
  assert_error (error, DDPM_ERROR_FORMAT, "claims 65536 entries but its central directory has only", "entry count");

  /* Not a zip at all; an empty file; a zip without data.pkl. */
  g_autoptr (GBytes) junk = g_bytes_new_static ("hello world, not a zip archive at all.", 38);
  g_clear_error (&error);
  g_assert_null (ddpm_torch_zip_parse (junk, "junk.bin", &error));
  assert_error (error, DDPM_ERROR_FORMAT, "not a zip archive", "junk");
  g_autoptr (GBytes) empty = g_bytes_new_static ("", 0);
  g_clear_error (&error);
  g_assert_null (ddpm_torch_zip_parse (empty, "empty.bin", &error));
  assert_error (error, DDPM_ERROR_FORMAT, "end-of-central-directory", "empty");
  ZipBuilder *zb = zb_new ("x", FALSE, TRUE);
  zb_add (zb, "version", "3\n", 2);
  g_autoptr (GBytes) nopkl = zb_finish (zb);
  g_clear_error (&error);
  g_assert_null (ddpm_torch_zip_parse (nopkl, "nopkl.bin", &error));
  assert_error (error, DDPM_ERROR_FORMAT, "no 'x/data.pkl'", "no data.pkl");

  /* The archive name is whatever the first entry says, not necessarily "archive". */
  static const char pkl[] = "\x80\x02}.";
  ZipBuilder *zn = zb_new ("any name ü", FALSE, TRUE);
  zb_add (zn, "data.pkl", pkl, sizeof pkl - 1);
  g_autoptr (GBytes) named = zb_finish (zn);
  g_clear_error (&error);
  g_autoptr (DdpmTensorTable) t = ddpm_torch_zip_parse (named, "named.bin", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddpm_tensor_table_size (t), ==, 0);
}

/* ---- through ddpm_model_load: a folder with only config.json (+ scheduler) and the .bin ------------ */

static gboolean
skip_if_unimplemented (GError *error)
{
  if (error && (strstr (error->message, "not implemented") || strstr (error->message, "not yet"))) {
    g_test_skip (error->message);
    return TRUE;
  }
  return FALSE;
}

/* Same config, same float32 arena (bit for bit), then the same eps from one forward. */
static void
check_model_pair (const char *bin_dir, const char *st_dir, const char *label)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) mb = ddpm_model_load (bin_dir, &error);
  if (skip_if_unimplemented (error))
    return;
  g_assert_no_error (error);
  g_autoptr (DdpmModel) ms = ddpm_model_load (st_dir, &error);
  g_assert_no_error (error);

  g_assert_cmpstr (mb->weights_format, ==, "pytorch-zip");
  g_assert_true (g_str_has_suffix (mb->weights_file, "diffusion_pytorch_model.bin"));
  g_autofree char *desc = ddpm_model_describe (mb);
  g_assert_nonnull (strstr (desc, "pytorch-zip"));
  g_assert_cmpstr (mb->weights_dtype, ==, ms->weights_dtype);
  g_assert_cmpint (mb->legacy_attention_names, ==, ms->legacy_attention_names);
  g_assert_cmpint (mb->n_params, ==, ms->n_params);
  g_assert_true (memcmp (mb->arena, ms->arena, (gsize) mb->n_params * sizeof (float)) == 0);
  g_test_message ("%s: %" G_GINT64_FORMAT " parameters identical; %s", label, mb->n_params, desc);

  g_autoptr (DdpmContext) cb = ddpm_context_new (mb, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  if (skip_if_unimplemented (error))
    return;
  g_assert_no_error (error);
  g_autoptr (DdpmContext) cs = ddpm_context_new (ms, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  int c = ddpm_model_in_channels (mb), oc = ddpm_model_out_channels (mb);
  int hw = MAX (ddpm_model_size_multiple (mb), 16);
  gsize n = (gsize) c * hw * hw, on = (gsize) oc * hw * hw;
  float *x = g_new (float, n), *eb = g_new (float, on), *es = g_new (float, on);
  ddpm_randn (42, 0, 0, n, x);
  int64_t t = 500;
  gboolean ok = ddpm_context_eps (cb, x, &t, 1, hw, hw, eb, &error);
  if (!ok && skip_if_unimplemented (error))
    goto out;
  g_assert_no_error (error);
  g_assert_true (ddpm_context_eps (cs, x, &t, 1, hw, hw, es, &error));
  g_assert_no_error (error);
  CompareResult r = compare_f32 (eb, es, on);
  report_compare (label, &r);
  g_assert_cmpfloat (r.max_abs, ==, 0.0);
  g_assert_cmpuint (r.n_nonfinite, ==, 0);
out:
  g_free (x);
  g_free (eb);
  g_free (es);
}

static void
test_model_load_bin (void)
{
  g_autofree char *bin_dir = fixture_path ("bin/bf16-tiny");
  g_autofree char *st_dir = fixture_path ("models/bf16-tiny");
  check_model_pair (bin_dir, st_dir, "bf16-tiny .bin via ddpm_model_load");
}

static void
test_model_load_celebahq_legacy (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *tmp = g_dir_make_tmp ("ddpm-torchzip-XXXXXX", &error);
  g_assert_no_error (error);
  g_autoptr (GBytes) bin = assemble_bin ("celebahq-like", FALSE, NULL);
  g_autofree char *st_dir = fixture_path ("models/celebahq-like");
  static const char *const copies[] = { "config.json", "scheduler_config.json" };
  for (guint i = 0; i < G_N_ELEMENTS (copies); i++) {
    g_autofree char *src = g_build_filename (st_dir, copies[i], NULL), *dst = g_build_filename (tmp, copies[i], NULL);
    g_autofree char *text = NULL;
    gsize len;
    g_assert_true (g_file_get_contents (src, &text, &len, NULL));
    g_assert_true (g_file_set_contents (dst, text, len, NULL));
  }
  g_autofree char *weights = g_build_filename (tmp, "diffusion_pytorch_model.bin", NULL);
  g_assert_true (g_file_set_contents (weights, g_bytes_get_data (bin, NULL), g_bytes_get_size (bin), NULL));

  check_model_pair (tmp, st_dir, "celebahq-like legacy .bin via ddpm_model_load");

  for (guint i = 0; i < G_N_ELEMENTS (copies); i++) {
    g_autofree char *p = g_build_filename (tmp, copies[i], NULL);
    g_unlink (p);
  }
  g_unlink (weights);
  g_rmdir (tmp);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/torch_zip/model/bf16-tiny", test_model_bf16);
  g_test_add_func ("/torch_zip/model/demo-tiny-fp16", test_model_fp16);
  g_test_add_func ("/torch_zip/model/cifar-like-fp32", test_assembled_cifar);
  g_test_add_func ("/torch_zip/model/celebahq-like-legacy", test_assembled_celebahq_legacy);
  g_test_add_func ("/torch_zip/model/cifar-like-zip64-headers", test_assembled_zip64);
  g_test_add_func ("/torch_zip/edge/files", test_edge_files);
  g_test_add_func ("/torch_zip/edge/legacy-format", test_legacy_format);
  g_test_add_func ("/torch_zip/bad/files", test_bad_files);
  g_test_add_func ("/torch_zip/bad/crc", test_crc_corruption);
  g_test_add_func ("/torch_zip/bad/truncations", test_truncations);
  g_test_add_func ("/torch_zip/bad/pickle-mutations", test_pickle_mutations);
  g_test_add_func ("/torch_zip/pickle/tensors", test_built_tensors);
  g_test_add_func ("/torch_zip/pickle/limits", test_pickle_limits);
  g_test_add_func ("/torch_zip/zip/structure", test_zip_structure);
  g_test_add_func ("/torch_zip/model-load/bf16-tiny-bin", test_model_load_bin);
  g_test_add_func ("/torch_zip/model-load/celebahq-like-legacy-bin", test_model_load_celebahq_legacy);
  return g_test_run ();
}
