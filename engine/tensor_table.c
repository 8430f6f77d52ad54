/* tensor_table.c: the named tensors of a checkpoint (see tensor_table.h), dtype helpers, exact
 * F16/BF16 -> F32 conversion, and reading a whole file into memory.
 *
 * The table keeps a reference to the file bytes (owner); every DdpmRawTensor.data points into them.
 * Files are read, never mmapped: a checkpoint rewritten while we use it must not change our copy. */
#include "tensor_table.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

struct DdpmTensorTable {
  char *format;                    /* "safetensors", "pytorch-zip" */
  GBytes *owner;                   /* the bytes the tensors point into (may be NULL) */
  GHashTable *tensors;             /* name (owned by the tensor) -> DdpmRawTensor * */
};

static void
raw_tensor_free (gpointer p)
{
  DdpmRawTensor *t = p;
  g_free (t->name);
  g_free (t);
}

DdpmTensorTable *
ddpm_tensor_table_new (const char *format, GBytes *owner)
{
  DdpmTensorTable *table = g_new0 (DdpmTensorTable, 1);
  table->format = g_strdup (format);
  table->owner = owner ? g_bytes_ref (owner) : NULL;
  table->tensors = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, raw_tensor_free);
  return table;
}

void
ddpm_tensor_table_free (DdpmTensorTable *table)
{
  if (!table)
    return;
  g_hash_table_unref (table->tensors);
  if (table->owner)
    g_bytes_unref (table->owner);
  g_free (table->format);
  g_free (table);
}

gboolean
ddpm_tensor_table_insert (DdpmTensorTable *table, char *name, DdpmDType dtype, int ndim,
                          const int64_t *shape, const guint8 *data, GError **error)
{
  g_return_val_if_fail (table != NULL && name != NULL, FALSE);

  if (ndim < 0 || ndim > DDPM_MAX_DIMS) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "tensor '%s' has %d dimensions (limit %d)", name, ndim,
                 DDPM_MAX_DIMS);
    g_free (name);
    return FALSE;
  }
  if (g_hash_table_contains (table->tensors, name)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "duplicate tensor name '%s'", name);
    g_free (name);
    return FALSE;
  }
  if (g_hash_table_size (table->tensors) >= DDPM_LIMIT_TENSOR_COUNT) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "more than %d tensors (DDPM_LIMIT_TENSOR_COUNT) at '%s'",
                 DDPM_LIMIT_TENSOR_COUNT, name);
    g_free (name);
    return FALSE;
  }

  DdpmRawTensor *t = g_new0 (DdpmRawTensor, 1);
  t->name = name;
  t->dtype = dtype;
  t->ndim = ndim;
  t->numel = 1;
  for (int i = 0; i < ndim; i++) {
    t->shape[i] = shape[i];
    t->numel *= shape[i];          /* callers checked that the product fits */
  }
  t->data = data;
  g_hash_table_insert (table->tensors, t->name, t);
  return TRUE;
}

const DdpmRawTensor *
ddpm_tensor_table_lookup (const DdpmTensorTable *table, const char *name)
{
  return g_hash_table_lookup (table->tensors, name);
}

guint
ddpm_tensor_table_size (const DdpmTensorTable *table)
{
  return g_hash_table_size (table->tensors);
}

const char *
ddpm_tensor_table_format (const DdpmTensorTable *table)
{
  return table->format;
}

static gint
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

GPtrArray *
ddpm_tensor_table_names (const DdpmTensorTable *table)
{
  GPtrArray *names = g_ptr_array_sized_new (g_hash_table_size (table->tensors));
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init (&it, table->tensors);
  while (g_hash_table_iter_next (&it, &key, NULL))
    g_ptr_array_add (names, key);  /* borrowed: valid while the table lives */
  g_ptr_array_sort (names, compare_names);
  return names;
}

/* ---- dtypes ------------------------------------------------------------------------------------- */

size_t
ddpm_dtype_size (DdpmDType dtype)
{
  switch (dtype) {
  case DDPM_DTYPE_F32: return 4;
  case DDPM_DTYPE_F16: return 2;
  case DDPM_DTYPE_BF16: return 2;
  }
  return 0;
}

const char *
ddpm_dtype_name (DdpmDType dtype)
{
  switch (dtype) {
  case DDPM_DTYPE_F32: return "F32";
  case DDPM_DTYPE_F16: return "F16";
  case DDPM_DTYPE_BF16: return "BF16";
  }
  return "?";
}

static inline float
bits_to_f32 (guint32 bits)
{
  float f;
  memcpy (&f, &bits, 4);
  return f;
}

/* IEEE binary16 -> binary32, exact for every input: normals rebias the exponent (15 -> 127), subnormals
 * (exponent 0) are renormalised, inf stays inf and NaN keeps its payload (quiet bit included). */
static inline float
f16_to_f32 (guint16 h)
{
  guint32 sign = (guint32) (h & 0x8000u) << 16;
  guint32 exp = (h >> 10) & 0x1fu;
  guint32 man = h & 0x3ffu;

  if (exp == 0x1f)                 /* inf / NaN */
    return bits_to_f32 (sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0)
      return bits_to_f32 (sign);   /* +-0 */
    /* subnormal: value = man * 2^-24; shift until the implicit bit (0x400) appears */
    int e = -1;
    do {
      man <<= 1;
      e++;
    } while (!(man & 0x400u));
    man &= 0x3ffu;
    return bits_to_f32 (sign | ((guint32) (127 - 15 - e) << 23) | (man << 13));
  }
  return bits_to_f32 (sign | ((exp + 127 - 15) << 23) | (man << 13));
}

void
ddpm_raw_tensor_to_f32 (const DdpmRawTensor *t, float *out)
{
  const guint8 *p = t->data;
  int64_t n = t->numel;

  /* Bytes are little-endian; assemble explicitly so the code is endian-neutral and alignment-free. */
  switch (t->dtype) {
  case DDPM_DTYPE_F32:
    for (int64_t i = 0; i < n; i++) {
      guint32 b = (guint32) p[4 * i] | (guint32) p[4 * i + 1] << 8 | (guint32) p[4 * i + 2] << 16 |
                  (guint32) p[4 * i + 3] << 24;
      out[i] = bits_to_f32 (b);
    }
    break;
  case DDPM_DTYPE_F16:
    for (int64_t i = 0; i < n; i++)
      out[i] = f16_to_f32 ((guint16) (p[2 * i] | p[2 * i + 1] << 8));
    break;
  case DDPM_DTYPE_BF16:
    /* bfloat16 is the top half of a binary32: exact by construction (NaN payloads kept). */
    for (int64_t i = 0; i < n; i++)
      out[i] = bits_to_f32 (((guint32) p[2 * i] | (guint32) p[2 * i + 1] << 8) << 16);
    break;
  }
}

/* ---- JSON guards ------------------------------------------------------------------------------------ */

gboolean
ddpm_json_check_limits (const char *text, gsize len, guint64 max_values, const char *what, GError **error)
{
  int depth = 0;
  guint64 values = 1;
  gboolean in_string = FALSE;
  for (gsize i = 0; i < len; i++) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        i++;                       /* skips the escaped character, quotes included */
      else if (c == '"')
        in_string = FALSE;
      continue;
    }
    switch (c) {
    case '"':
      in_string = TRUE;
      break;
    case '[': case '{':
      if (++depth > DDPM_LIMIT_JSON_DEPTH) {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: JSON nested deeper than %d levels "
                     "(DDPM_LIMIT_JSON_DEPTH) at byte %" G_GSIZE_FORMAT, what, DDPM_LIMIT_JSON_DEPTH, i);
        return FALSE;
      }
      break;
    case ']': case '}':
      depth--;
      break;
    case ',':
      if (++values > max_values) {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: JSON with more than %" G_GUINT64_FORMAT
                     " values (DDPM_LIMIT_SAFETENSORS_VALUES)", what, max_values);
        return FALSE;
      }
      break;
    default:
      break;
    }
  }
  return TRUE;
}

/* ---- files -------------------------------------------------------------------------------------- */

GBytes *
ddpm_read_file (const char *path, gsize max_bytes, GError **error)
{
  FILE *f = g_fopen (path, "rb");
  if (!f) {
    int err = errno;
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "cannot open '%s': %s", path, g_strerror (err));
    return NULL;
  }

  GStatBuf st;
  if (fstat (fileno (f), &st) != 0 || !S_ISREG (st.st_mode)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "'%s' is not a regular file", path);
    fclose (f);
    return NULL;
  }
  if ((guint64) st.st_size > (guint64) max_bytes) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "'%s' is %" G_GUINT64_FORMAT " bytes, over the limit of %"
                 G_GSIZE_FORMAT " bytes", path, (guint64) st.st_size, max_bytes);
    fclose (f);
    return NULL;
  }

  /* Read to EOF rather than trusting st_size: the file may grow or shrink while we read. */
  gsize cap = st.st_size > 0 ? (gsize) st.st_size : MIN ((gsize) 4096, max_bytes);
  gsize len = 0;
  guint8 *buf = g_try_malloc (cap + 1);
  if (!buf) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "out of memory reading '%s' (%" G_GSIZE_FORMAT " bytes)", path,
                 cap);
    fclose (f);
    return NULL;
  }
  for (;;) {
    if (len == cap) {
      if (cap >= max_bytes) {
        /* One more byte available means the file grew past the limit. */
        int c = fgetc (f);
        if (c == EOF)
          break;
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "'%s' grew over the limit of %" G_GSIZE_FORMAT " bytes",
                     path, max_bytes);
        g_free (buf);
        fclose (f);
        return NULL;
      }
      gsize ncap = cap * 2 < max_bytes ? cap * 2 : max_bytes;
      guint8 *nbuf = g_try_realloc (buf, ncap + 1);
      if (!nbuf) {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "out of memory reading '%s'", path);
        g_free (buf);
        fclose (f);
        return NULL;
      }
      buf = nbuf;
      cap = ncap;
    }
    size_t got = fread (buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) {
      if (ferror (f)) {
        int err = errno;
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "error reading '%s': %s", path, g_strerror (err));
        g_free (buf);
        fclose (f);
        return NULL;
      }
      break;                       /* EOF */
    }
  }
  fclose (f);
  buf[len] = 0;                    /* a NUL after the data, handy for text parsers; not part of the bytes */
  return g_bytes_new_take (buf, len);
}
