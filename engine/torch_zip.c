/* torch_zip.c: reads a torch.save'd state dict (PyTorch >= 1.6 zip format) into a DdpmTensorTable,
 * without Python and without executing anything from the file.
 *
 * Archive layout (every entry stored uncompressed, under one top-level folder whose name torch takes from
 * the saved file's stem or "archive"; we take it from the first central-directory entry, as torch does):
 *   <a>/data.pkl                 the pickled state dict (pickle.c)
 *   <a>/data/<key>               raw bytes of storage <key>, little-endian, 64-byte aligned in the file
 *   <a>/byteorder                "little" or "big" (absent before torch 1.13: native, i.e. little)
 *   <a>/version, <a>/.format_version, <a>/.storage_alignment, <a>/.data/serialization_id   (ignored)
 * Each tensor is a view (offset, size, stride in elements) of a storage; we accept C-contiguous views only
 * and point the table at the view's bytes inside the archive (no copy). */
#include "tensor_table.h"
#include "pickle.h"
#include "zip_reader.h"

#include <string.h>

/* The legacy (torch < 1.6) format is a bare pickle stream; it starts with PROTO 2 and a LONG1 magic. */
static gboolean
looks_like_legacy_pickle (const guint8 *p, gsize len)
{
  return len >= 2 && p[0] == 0x80 && p[1] <= 5;
}

/* PyTorch's is_contiguous: strides of size-1 dimensions do not matter, and an empty tensor is contiguous. */
static gboolean
is_c_contiguous (const DdpmPickleTensor *t, int64_t numel)
{
  if (numel == 0)
    return TRUE;
  int64_t expected = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->stride[d] != expected)
      return FALSE;
    expected *= t->shape[d];
  }
  return TRUE;
}

static gboolean
check_byteorder (DdpmZipReader *zip, const char *prefix, const char *path, GError **error)
{
  g_autofree char *name = g_strconcat (prefix, "/byteorder", NULL);
  const DdpmZipEntry *e = ddpm_zip_reader_find (zip, name);
  if (!e)
    return TRUE;                   /* torch < 1.13 wrote none; files then were native = little-endian */
  const guint8 *d = ddpm_zip_reader_data (zip, e, error);
  if (!d)
    return FALSE;
  if (e->size == 6 && memcmp (d, "little", 6) == 0)
    return TRUE;
  if (e->size == 3 && memcmp (d, "big", 3) == 0) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                 "%s: the checkpoint was saved on a big-endian machine (%s says \"big\"); re-save it on a "
                 "little-endian one", path, name);
    return FALSE;
  }
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: %s is neither \"little\" nor \"big\"", path, name);
  return FALSE;
}

/* Validates one state-dict tensor against its storage entry and inserts it. */
static gboolean
add_tensor (DdpmTensorTable *table, DdpmZipReader *zip, const char *prefix, GHashTable *storage_dtypes,
            DdpmPickleTensor *t, const char *path, GError **error)
{
  const DdpmStorageType *st = t->storage_type;
  if (!st->supported) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: tensor '%s' has storage type torch.%s; only "
                 "torch.FloatStorage, torch.HalfStorage and torch.BFloat16Storage (float32/float16/bfloat16) are "
                 "supported", path, t->name, st->name);
    return FALSE;
  }
  /* One storage read as two dtypes would alias bytes under different meanings; torch.save refuses it. */
  gpointer seen = g_hash_table_lookup (storage_dtypes, t->storage_key);
  if (seen && seen != st) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s': storage '%s' is used as both torch.%s "
                 "and torch.%s", path, t->name, t->storage_key, ((const DdpmStorageType *) seen)->name, st->name);
    return FALSE;
  }
  g_hash_table_insert (storage_dtypes, t->storage_key, (gpointer) st);

  /* numel, kept <= INT64_MAX / 8 so that no byte count (numel * element size) can overflow. */
  const int64_t max_numel = INT64_MAX / 8;
  int64_t numel = 1;
  for (int d = 0; d < t->ndim; d++) {
    if (t->shape[d] != 0 && numel > max_numel / t->shape[d]) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: tensor '%s': element count overflows", path, t->name);
      return FALSE;
    }
    numel *= t->shape[d];
  }
  if (!is_c_contiguous (t, numel)) {
    GString *s = g_string_new (NULL);
    for (int d = 0; d < t->ndim; d++)
      g_string_append_printf (s, "%s%" G_GINT64_FORMAT, d ? ", " : "", t->stride[d]);
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: tensor '%s' is not contiguous (strides [%s]); "
                 "save tensor.contiguous() instead", path, t->name, s->str);
    g_string_free (s, TRUE);
    return FALSE;
  }

  g_autofree char *entry_name = g_strconcat (prefix, "/data/", t->storage_key, NULL);
  const DdpmZipEntry *e = ddpm_zip_reader_find (zip, entry_name);
  if (!e) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s': storage entry '%s' is missing", path,
                 t->name, entry_name);
    return FALSE;
  }
  guint64 el = (guint64) st->element_size;
  if ((guint64) t->storage_numel > e->size / el) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s': storage '%s' claims %" G_GINT64_FORMAT
                 " elements of %" G_GUINT64_FORMAT " bytes but the entry has %" G_GUINT64_FORMAT " bytes", path,
                 t->name, entry_name, t->storage_numel, el, e->size);
    return FALSE;
  }
  if (t->offset > t->storage_numel || numel > t->storage_numel - t->offset) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s': elements [%" G_GINT64_FORMAT ", +%"
                 G_GINT64_FORMAT ") lie outside its storage of %" G_GINT64_FORMAT " elements", path, t->name,
                 t->offset, numel, t->storage_numel);
    return FALSE;
  }
  const guint8 *data = ddpm_zip_reader_data (zip, e, error);
  if (!data)
    return FALSE;
  if (!ddpm_tensor_table_insert (table, g_steal_pointer (&t->name), st->dtype, t->ndim, t->shape,
                                 data + (guint64) t->offset * el, error)) {
    g_prefix_error (error, "%s: ", path);   /* a duplicate name, or the table's tensor-count limit */
    return FALSE;
  }
  return TRUE;
}

DdpmTensorTable *
ddpm_torch_zip_parse (GBytes *file, const char *path_for_errors, GError **error)
{
  g_return_val_if_fail (file != NULL, NULL);
  const char *path = path_for_errors ? path_for_errors : "<memory>";
  gsize len;
  const guint8 *bytes = g_bytes_get_data (file, &len);

  if (looks_like_legacy_pickle (bytes, len)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: this is the legacy torch.save format (PyTorch < "
                 "1.6, a bare pickle stream); re-save it with a newer PyTorch or convert it to safetensors", path);
    return NULL;
  }
  g_autoptr (DdpmZipReader) zip = ddpm_zip_reader_new (file, path, error);
  if (!zip)
    return NULL;

  /* The archive folder: everything before the first '/' of the first entry. */
  const DdpmZipEntry *first = ddpm_zip_reader_entry (zip, 0);
  const char *slash = first ? strchr (first->name, '/') : NULL;
  if (!slash || slash == first->name) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: not a PyTorch archive (the first zip entry is not "
                 "inside a folder)", path);
    return NULL;
  }
  g_autofree char *prefix = g_strndup (first->name, (gsize) (slash - first->name));
  if (!check_byteorder (zip, prefix, path, error))
    return NULL;

  g_autofree char *pkl_name = g_strconcat (prefix, "/data.pkl", NULL);
  const DdpmZipEntry *pkl = ddpm_zip_reader_find (zip, pkl_name);
  if (!pkl) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: not a PyTorch archive (no '%s')", path, pkl_name);
    return NULL;
  }
  if (pkl->size > DDPM_PICKLE_MAX_BYTES) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: '%s' has %" G_GUINT64_FORMAT " bytes (limit "
                 "DDPM_PICKLE_MAX_BYTES = %" G_GSIZE_FORMAT ")", path, pkl_name, pkl->size, DDPM_PICKLE_MAX_BYTES);
    return NULL;
  }
  const guint8 *pkl_data = ddpm_zip_reader_data (zip, pkl, error);
  if (!pkl_data)
    return NULL;
  g_autofree char *what = g_strdup_printf ("%s: %s", path, pkl_name);
  g_autoptr (DdpmPickleStateDict) sd = ddpm_pickle_read_state_dict (pkl_data, pkl->size, what, error);
  if (!sd)
    return NULL;

  g_autoptr (DdpmTensorTable) table = ddpm_tensor_table_new ("pytorch-zip", file);
  g_autoptr (GHashTable) storage_dtypes = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < sd->n; i++)
    if (!add_tensor (table, zip, prefix, storage_dtypes, &sd->tensors[i], path, error))
      return NULL;
  return g_steal_pointer (&table);
}

DdpmTensorTable *
ddpm_torch_zip_load (const char *path, GError **error)
{
  g_autoptr (GBytes) file = ddpm_read_file (path, DDPM_LIMIT_WEIGHTS_FILE_BYTES, error);
  if (!file)
    return NULL;
  return ddpm_torch_zip_parse (file, path, error);
}
