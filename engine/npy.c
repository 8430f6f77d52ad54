/* npy.c: NumPy .npy reader (format 1.0/2.0/3.0) and float32 writer (format 1.0).
 *
 * File layout: "\x93NUMPY", major, minor, header length (uint16 LE for 1.x, uint32 LE for 2.x/3.x),
 * then a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with
 * spaces and ended by '\n', then the raw C-order data. We validate everything before allocating:
 * header length against the file size, the dict grammar and keys, the dtype whitelist, the shape (no
 * negative dims, no overflow) and the data size against the bytes that are really there. */
#include "npy.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* numpy itself refuses headers over 10000 bytes unless told otherwise; ours are < 200 bytes. */
#define NPY_MAX_HEADER_LEN (1u << 20)
#define NPY_MAX_NDIM 8

static size_t
npy_itemsize (DdpmNpyType type)
{
  switch (type)
    {
    case DDPM_NPY_F32: return 4;
    case DDPM_NPY_F64: return 8;
    case DDPM_NPY_I64: return 8;
    case DDPM_NPY_I32: return 4;
    }
  return 0;
}

void
ddpm_npy_free (DdpmNpyArray *a)
{
  if (!a)
    return;
  g_free (a->data);
  g_free (a);
}

/* ---- header dict parser ------------------------------------------------------------------------
 * A tiny recursive-descent parser for the subset of Python literal syntax numpy writes: a dict whose keys
 * are strings and whose values are a string, True/False, or a tuple of non-negative integers. */

typedef struct {
  const char *start, *p, *end;
  const char *path;
} HeaderParser;

static void
hp_skip_ws (HeaderParser *hp)
{
  while (hp->p < hp->end && (*hp->p == ' ' || *hp->p == '\t' || *hp->p == '\n' || *hp->p == '\r'))
    hp->p++;
}

static gboolean
hp_expect (HeaderParser *hp, char c, GError **error)
{
  hp_skip_ws (hp);
  if (hp->p >= hp->end || *hp->p != c)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: expected '%c' at offset %d",
                   hp->path, c, (int) (hp->p - hp->start));
      return FALSE;
    }
  hp->p++;
  return TRUE;
}

/* A quoted Python string without escapes (numpy never writes escapes in these keys/values). */
static char *
hp_string (HeaderParser *hp, GError **error)
{
  hp_skip_ws (hp);
  if (hp->p >= hp->end || (*hp->p != '\'' && *hp->p != '"'))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: expected a quoted string",
                   hp->path);
      return NULL;
    }
  char q = *hp->p++;
  const char *start = hp->p;
  while (hp->p < hp->end && *hp->p != q)
    {
      if (*hp->p == '\\' || *hp->p == '\n')
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: unsupported string",
                       hp->path);
          return NULL;
        }
      hp->p++;
    }
  if (hp->p >= hp->end)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: unterminated string",
                   hp->path);
      return NULL;
    }
  char *s = g_strndup (start, hp->p - start);
  hp->p++;
  return s;
}

static gboolean
hp_bool (HeaderParser *hp, gboolean *out, GError **error)
{
  hp_skip_ws (hp);
  size_t left = hp->end - hp->p;
  if (left >= 4 && memcmp (hp->p, "True", 4) == 0)
    {
      *out = TRUE;
      hp->p += 4;
      return TRUE;
    }
  if (left >= 5 && memcmp (hp->p, "False", 5) == 0)
    {
      *out = FALSE;
      hp->p += 5;
      return TRUE;
    }
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: 'fortran_order' is not True/False",
               hp->path);
  return FALSE;
}

/* (), (n,), (n, m), ... ; also accepts a trailing 'L' (Python 2 longs in old files). */
static gboolean
hp_shape (HeaderParser *hp, int *ndim, int64_t *shape, GError **error)
{
  if (!hp_expect (hp, '(', error))
    return FALSE;
  *ndim = 0;
  for (;;)
    {
      hp_skip_ws (hp);
      if (hp->p < hp->end && *hp->p == ')')
        {
          hp->p++;
          return TRUE;
        }
      if (hp->p < hp->end && *hp->p == '-')
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: .npy shape has a negative dimension", hp->path);
          return FALSE;
        }
      if (hp->p >= hp->end || !g_ascii_isdigit (*hp->p))
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: bad 'shape' tuple",
                       hp->path);
          return FALSE;
        }
      uint64_t v = 0;
      while (hp->p < hp->end && g_ascii_isdigit (*hp->p))
        {
          int d = *hp->p++ - '0';
          if (v > (uint64_t) (INT64_MAX - d) / 10)
            {
              g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: .npy shape dimension is too large", hp->path);
              return FALSE;
            }
          v = v * 10 + d;
        }
      if (hp->p < hp->end && (*hp->p == 'L' || *hp->p == 'l'))
        hp->p++;
      if (*ndim >= NPY_MAX_NDIM)
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: .npy array has more than %d dimensions", hp->path,
                       NPY_MAX_NDIM);
          return FALSE;
        }
      shape[(*ndim)++] = (int64_t) v;
      hp_skip_ws (hp);
      if (hp->p < hp->end && *hp->p == ',')
        {
          hp->p++;
          continue;
        }
      if (hp->p < hp->end && *hp->p == ')')
        continue;
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: bad 'shape' tuple", hp->path);
      return FALSE;
    }
}

/* descr: byte order ('<' little, '>' big, '=' native, '|' not applicable) + kind + size. */
static gboolean
parse_descr (const char *path, const char *descr, DdpmNpyType *type, gboolean *swap, GError **error)
{
  const char *d = descr;
  char order = '=';
  if (*d == '<' || *d == '>' || *d == '=' || *d == '|')
    order = *d++;
  if (strcmp (d, "f4") == 0)
    *type = DDPM_NPY_F32;
  else if (strcmp (d, "f8") == 0)
    *type = DDPM_NPY_F64;
  else if (strcmp (d, "i8") == 0)
    *type = DDPM_NPY_I64;
  else if (strcmp (d, "i4") == 0)
    *type = DDPM_NPY_I32;
  else
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: unsupported .npy dtype '%s' (expected float32, float64, int64 or int32)", path, descr);
      return FALSE;
    }
  switch (order)
    {
    case '<':
      *swap = G_BYTE_ORDER != G_LITTLE_ENDIAN;
      return TRUE;
    case '=':
      *swap = FALSE;
      return TRUE;
    case '>':
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: big-endian .npy dtype '%s' is not supported (save with dtype '<%s')", path, descr, d);
      return FALSE;
    default: /* '|' says byte order does not apply, which is false for a multi-byte type */
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: .npy dtype '%s' has no byte order for a %zu-byte type", path, descr, npy_itemsize (*type));
      return FALSE;
    }
}

typedef struct {
  DdpmNpyType type;
  gboolean swap;
  int ndim;
  int64_t shape[NPY_MAX_NDIM];
} NpyHeader;

static gboolean
parse_header (const char *path, const char *text, size_t len, NpyHeader *h, GError **error)
{
  HeaderParser hp = { text, text, text + len, path };
  gboolean have_descr = FALSE, have_fortran = FALSE, have_shape = FALSE;

  if (memchr (text, '\0', len))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: contains a NUL byte", path);
      return FALSE;
    }
  if (!hp_expect (&hp, '{', error))
    return FALSE;
  for (;;)
    {
      hp_skip_ws (&hp);
      if (hp.p < hp.end && *hp.p == '}')
        {
          hp.p++;
          break;
        }
      g_autofree char *key = hp_string (&hp, error);
      if (!key || !hp_expect (&hp, ':', error))
        return FALSE;
      if (strcmp (key, "descr") == 0 && !have_descr)
        {
          hp_skip_ws (&hp);
          if (hp.p < hp.end && *hp.p == '[')
            {
              g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                           "%s: unsupported .npy dtype (structured array); expected float32, float64, int64 or int32",
                           path);
              return FALSE;
            }
          g_autofree char *descr = hp_string (&hp, error);
          if (!descr || !parse_descr (path, descr, &h->type, &h->swap, error))
            return FALSE;
          have_descr = TRUE;
        }
      else if (strcmp (key, "fortran_order") == 0 && !have_fortran)
        {
          gboolean fortran;
          if (!hp_bool (&hp, &fortran, error))
            return FALSE;
          if (fortran)
            {
              g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                           "%s: Fortran-order .npy arrays are not supported (save a C-contiguous array)", path);
              return FALSE;
            }
          have_fortran = TRUE;
        }
      else if (strcmp (key, "shape") == 0 && !have_shape)
        {
          if (!hp_shape (&hp, &h->ndim, h->shape, error))
            return FALSE;
          have_shape = TRUE;
        }
      else
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: unexpected key '%s'", path,
                       key);
          return FALSE;
        }
      hp_skip_ws (&hp);
      if (hp.p < hp.end && *hp.p == ',')
        {
          hp.p++;
          continue;
        }
      if (hp.p < hp.end && *hp.p == '}')
        continue;
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: expected ',' or '}'", path);
      return FALSE;
    }
  hp_skip_ws (&hp);
  if (hp.p != hp.end)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: text after the dict", path);
      return FALSE;
    }
  if (!have_descr || !have_fortran || !have_shape)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: malformed .npy header: missing key '%s'", path,
                   !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
      return FALSE;
    }
  return TRUE;
}

/* ---- reading ----------------------------------------------------------------------------------- */

static gboolean
read_exact (FILE *f, void *buf, size_t n)
{
  return n == 0 || fread (buf, 1, n, f) == n;
}

static void
byteswap (void *data, size_t n, size_t itemsize)
{
  uint8_t *p = data;
  for (size_t i = 0; i < n; i++, p += itemsize)
    for (size_t a = 0, b = itemsize - 1; a < b; a++, b--)
      {
        uint8_t t = p[a];
        p[a] = p[b];
        p[b] = t;
      }
}

static DdpmNpyArray *
npy_load_from (FILE *f, const char *path, GError **error)
{
  struct stat st;
  if (fstat (fileno (f), &st) != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: %s", path, g_strerror (errno));
      return NULL;
    }
  if (!S_ISREG (st.st_mode))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: not a regular file", path);
      return NULL;
    }
  uint64_t file_size = (uint64_t) st.st_size;
  g_autofree char *text = NULL;    /* declared before the gotos below so its cleanup is always defined */

  uint8_t pre[12];
  if (!read_exact (f, pre, NPY_MAGIC_LEN) || memcmp (pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: not a .npy file (bad magic)", path);
      return NULL;
    }
  if (file_size < 10 || !read_exact (f, pre + NPY_MAGIC_LEN, 2))
    goto truncated_header;
  int major = pre[6], minor = pre[7];
  uint64_t header_len, prelude;
  if (major == 1 && minor == 0)
    {
      if (!read_exact (f, pre + 8, 2))
        goto truncated_header;
      header_len = pre[8] | ((uint32_t) pre[9] << 8);
      prelude = 10;
    }
  else if ((major == 2 || major == 3) && minor == 0)
    {
      if (file_size < 12 || !read_exact (f, pre + 8, 4))
        goto truncated_header;
      header_len = pre[8] | ((uint32_t) pre[9] << 8) | ((uint32_t) pre[10] << 16) | ((uint32_t) pre[11] << 24);
      prelude = 12;
    }
  else
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: unsupported .npy format version %d.%d", path, major,
                   minor);
      return NULL;
    }
  if (header_len > NPY_MAX_HEADER_LEN)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: .npy header length %" G_GUINT64_FORMAT
                   " exceeds the limit of %u bytes", path, header_len, NPY_MAX_HEADER_LEN);
      return NULL;
    }
  if (prelude + header_len > file_size)
    goto truncated_header;

  text = g_malloc (header_len + 1);
  if (!read_exact (f, text, header_len))
    goto truncated_header;
  text[header_len] = '\0';

  NpyHeader h = { 0 };
  if (!parse_header (path, text, header_len, &h, error))
    return NULL;

  /* numel and bytes with overflow checks; the data must fit in what the file really holds. */
  size_t itemsize = npy_itemsize (h.type);
  uint64_t numel = 1;
  for (int i = 0; i < h.ndim; i++)
    {
      uint64_t d = (uint64_t) h.shape[i];
      if (d != 0 && numel > UINT64_MAX / d)
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: .npy shape overflows the element count", path);
          return NULL;
        }
      numel *= d;
    }
  uint64_t data_avail = file_size - prelude - header_len;
  if (numel > data_avail / itemsize)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: truncated .npy data: shape needs %" G_GUINT64_FORMAT " elements of %zu bytes, file holds %"
                   G_GUINT64_FORMAT " data bytes", path, numel, itemsize, data_avail);
      return NULL;
    }
  uint64_t data_bytes = numel * itemsize;
  if (data_bytes != data_avail)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: .npy file has %" G_GUINT64_FORMAT " bytes after the data the header describes", path,
                   data_avail - data_bytes);
      return NULL;
    }
  if (data_bytes > G_MAXSIZE)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: .npy data of %" G_GUINT64_FORMAT " bytes exceeds the "
                   "address space", path, data_bytes);
      return NULL;
    }

  void *data = NULL;
  if (data_bytes > 0)
    {
      data = g_try_malloc ((size_t) data_bytes);
      if (!data)
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "%s: out of memory for %" G_GUINT64_FORMAT " bytes", path,
                       data_bytes);
          return NULL;
        }
      if (!read_exact (f, data, (size_t) data_bytes))
        {
          g_free (data);
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: read error in .npy data: %s", path,
                       ferror (f) ? g_strerror (errno) : "unexpected end of file");
          return NULL;
        }
      if (h.swap)
        byteswap (data, (size_t) numel, itemsize);
    }

  DdpmNpyArray *a = g_new0 (DdpmNpyArray, 1);
  a->type = h.type;
  a->ndim = h.ndim;
  memcpy (a->shape, h.shape, sizeof h.shape);
  a->numel = (int64_t) numel;
  a->data = data;
  return a;

truncated_header:
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: truncated .npy header", path);
  return NULL;
}

DdpmNpyArray *
ddpm_npy_load (const char *path, GError **error)
{
  FILE *f = g_fopen (path, "rb");
  if (!f)
    {
      int e = errno;
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: %s", path, g_strerror (e));
      return NULL;
    }
  DdpmNpyArray *a = npy_load_from (f, path, error);
  fclose (f);
  return a;
}

float *
ddpm_npy_to_f32 (const DdpmNpyArray *a)
{
  size_t n = (size_t) a->numel;
  float *out = g_new (float, n);
  switch (a->type)
    {
    case DDPM_NPY_F32:
      if (n)
        memcpy (out, a->data, n * sizeof (float));
      break;
    case DDPM_NPY_F64:
      for (size_t i = 0; i < n; i++)
        out[i] = (float) ((const double *) a->data)[i];
      break;
    case DDPM_NPY_I64:
      for (size_t i = 0; i < n; i++)
        out[i] = (float) ((const int64_t *) a->data)[i];
      break;
    case DDPM_NPY_I32:
      for (size_t i = 0; i < n; i++)
        out[i] = (float) ((const int32_t *) a->data)[i];
      break;
    }
  return out;
}

/* ---- writing ----------------------------------------------------------------------------------- */

gboolean
ddpm_npy_save_f32 (const char *path, const float *data, int ndim, const int64_t *shape, GError **error)
{
  if (ndim < 0 || ndim > NPY_MAX_NDIM)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "%s: cannot write a %d-dimensional .npy array", path, ndim);
      return FALSE;
    }
  uint64_t numel = 1;
  for (int i = 0; i < ndim; i++)
    {
      if (shape[i] < 0 || (shape[i] != 0 && numel > UINT64_MAX / 4 / (uint64_t) shape[i]))
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "%s: invalid shape for .npy output", path);
          return FALSE;
        }
      numel *= (uint64_t) shape[i];
    }

  /* The dict exactly as numpy writes it, padded with spaces so that the data starts at a multiple of 64
   * bytes (numpy >= 1.14), ended by '\n'. */
  GString *h = g_string_new ("{'descr': '<f4', 'fortran_order': False, 'shape': (");
  for (int i = 0; i < ndim; i++)
    g_string_append_printf (h, i ? ", %" G_GINT64_FORMAT : "%" G_GINT64_FORMAT, shape[i]);
  g_string_append (h, ndim == 1 ? ",), }" : "), }");
  size_t unpadded = 10 + h->len + 1;
  size_t padded = (unpadded + 63) / 64 * 64;
  while (10 + h->len + 1 < padded)
    g_string_append_c (h, ' ');
  g_string_append_c (h, '\n');

  uint8_t pre[10];
  memcpy (pre, NPY_MAGIC, NPY_MAGIC_LEN);
  pre[6] = 1;
  pre[7] = 0;
  pre[8] = h->len & 0xff;
  pre[9] = (h->len >> 8) & 0xff;

  FILE *f = g_fopen (path, "wb");
  if (!f)
    {
      int e = errno;
      g_string_free (h, TRUE);
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: %s", path, g_strerror (e));
      return FALSE;
    }
  gboolean ok = fwrite (pre, 1, 10, f) == 10 && fwrite (h->str, 1, h->len, f) == h->len;
  g_string_free (h, TRUE);
  if (ok && numel)
    {
      if (G_BYTE_ORDER == G_LITTLE_ENDIAN)
        ok = fwrite (data, sizeof (float), (size_t) numel, f) == (size_t) numel;
      else
        for (uint64_t i = 0; ok && i < numel; i++)
          {
            uint32_t v;
            memcpy (&v, &data[i], 4);
            v = GUINT32_TO_LE (v);
            ok = fwrite (&v, 4, 1, f) == 1;
          }
    }
  int e = errno;
  if (fclose (f) != 0 && ok)
    {
      e = errno;
      ok = FALSE;
    }
  if (!ok)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: write failed: %s", path, g_strerror (e));
      g_remove (path);
      return FALSE;
    }
  return TRUE;
}
