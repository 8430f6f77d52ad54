/* zip_reader.c: the stored-only zip reader behind torch_zip.c (see zip_reader.h).
 *
 * Layout read here (APPNOTE 6.3; all integers little-endian):
 *   [local header 30 B | name | extra | data]...  central directory [46 B | name | extra | comment]...
 *   [ZIP64 end record 56+ B][ZIP64 locator 20 B]  end record 22 B | comment
 * torch.save (miniz) sets general-purpose bit 3 ("sizes in a data descriptor after the data") and writes 0
 * for the CRC and sizes in local headers, so the central directory is the authority for sizes and CRCs;
 * local headers are checked for signature, method and name. It pads each local extra field with a "FB"
 * block so that data starts at a multiple of 64 bytes; we rely on no alignment (readers assemble bytes).
 * torch always writes the ZIP64 end record and locator; past 4 GiB the 32-bit fields of the central
 * directory hold 0xFFFFFFFF and the real values sit in a ZIP64 extra field (id 0x0001). */
#include "zip_reader.h"

#include <string.h>

#define SIG_LOCAL     0x04034b50u
#define SIG_CENTRAL   0x02014b50u
#define SIG_EOCD      0x06054b50u
#define SIG_EOCD64    0x06064b50u
#define SIG_LOCATOR64 0x07064b50u

#define LOCAL_LEN     30
#define CENTRAL_LEN   46
#define EOCD_LEN      22
#define EOCD64_LEN    56
#define LOCATOR64_LEN 20

#define FLAG_ENCRYPTED        0x0001u
#define FLAG_DATA_DESCRIPTOR  0x0008u
#define FLAG_STRONG_ENCRYPTED 0x0040u
#define FLAG_MASKED_HEADERS   0x2000u

struct DdpmZipReader {
  GBytes *file;
  const guint8 *base;
  gsize len;
  char *path;                      /* for error messages */
  DdpmZipEntry *entries;           /* n, central-directory order */
  gboolean *crc_checked;           /* n */
  guint n;
  GHashTable *by_name;             /* name (owned by entries) -> DdpmZipEntry * */
};

static inline guint16 rd16 (const guint8 *p) { return (guint16) (p[0] | p[1] << 8); }
static inline guint32 rd32 (const guint8 *p) { return (guint32) p[0] | (guint32) p[1] << 8 | (guint32) p[2] << 16 | (guint32) p[3] << 24; }
static inline guint64 rd64 (const guint8 *p) { return (guint64) rd32 (p) | (guint64) rd32 (p + 4) << 32; }

/* ---- CRC-32 (reflected polynomial 0xEDB88320), slicing by 8: about 1-2 GB/s on one core ------------ */

static guint32 crc_tables[8][256];   /* written once under g_once, read-only afterwards */

static void
crc_tables_init (void)
{
  for (guint32 i = 0; i < 256; i++) {
    guint32 c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_tables[0][i] = c;
  }
  for (guint32 i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc_tables[t][i] = (crc_tables[t - 1][i] >> 8) ^ crc_tables[0][crc_tables[t - 1][i] & 0xff];
}

guint32
ddpm_crc32 (guint32 crc, const guint8 *p, gsize n)
{
  static gsize initialised = 0;
  if (g_once_init_enter (&initialised)) {
    crc_tables_init ();
    g_once_init_leave (&initialised, 1);
  }
  const guint32 (*T)[256] = (const guint32 (*)[256]) crc_tables;
  crc = ~crc;
  while (n >= 8) {
    guint32 a = rd32 (p) ^ crc, b = rd32 (p + 4);
    crc = T[7][a & 0xff] ^ T[6][(a >> 8) & 0xff] ^ T[5][(a >> 16) & 0xff] ^ T[4][a >> 24] ^
          T[3][b & 0xff] ^ T[2][(b >> 8) & 0xff] ^ T[1][(b >> 16) & 0xff] ^ T[0][b >> 24];
    p += 8;
    n -= 8;
  }
  while (n--)
    crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* ---- parsing ------------------------------------------------------------------------------------- */

static const char *
method_name (guint method)
{
  switch (method) {
  case 1: return "shrink";
  case 6: return "implode";
  case 8: return "deflate";
  case 9: return "deflate64";
  case 12: return "bzip2";
  case 14: return "lzma";
  case 93: return "zstd";
  case 95: return "xz";
  case 98: return "ppmd";
  case 99: return "aes";
  default: return "unknown";
  }
}

/* Finds the end-of-central-directory record: the last signature whose comment ends exactly at EOF
 * (a comment may itself contain the signature bytes, so the length must agree). */
static gboolean
find_eocd (const guint8 *base, gsize len, gsize *eocd_pos)
{
  if (len < EOCD_LEN)
    return FALSE;
  gsize lowest = len - EOCD_LEN > 0xffff ? len - EOCD_LEN - 0xffff : 0;
  for (gsize pos = len - EOCD_LEN + 1; pos-- > lowest;) {
    if (rd32 (base + pos) == SIG_EOCD && pos + EOCD_LEN + rd16 (base + pos + 20) == len) {
      *eocd_pos = pos;
      return TRUE;
    }
  }
  return FALSE;
}

typedef struct {
  guint64 n_entries, cd_offset, cd_size;
  guint64 cd_limit;                /* the central directory must end at or before this offset */
} EndRecord;

static gboolean
read_end_records (DdpmZipReader *zip, EndRecord *end, GError **error)
{
  const guint8 *b = zip->base;
  gsize eocd;
  if (!find_eocd (b, zip->len, &eocd)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: no zip end-of-central-directory record (not a zip archive, or truncated)", zip->path);
    return FALSE;
  }
  const guint8 *e = b + eocd;
  guint disk = rd16 (e + 4), cd_disk = rd16 (e + 6), n_disk = rd16 (e + 8), n_total = rd16 (e + 10);
  guint32 cd_size = rd32 (e + 12), cd_offset = rd32 (e + 16);
  gboolean wants64 = n_total == 0xffff || n_disk == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu;

  if (eocd >= LOCATOR64_LEN && rd32 (e - LOCATOR64_LEN) == SIG_LOCATOR64) {
    const guint8 *loc = e - LOCATOR64_LEN;
    guint64 z64 = rd64 (loc + 8);
    guint64 limit = eocd - LOCATOR64_LEN;     /* the ZIP64 record precedes its locator */
    if (rd32 (loc + 4) != 0 || rd32 (loc + 16) > 1) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                   zip->path);
      return FALSE;
    }
    if (z64 > limit || limit - z64 < EOCD64_LEN || rd32 (b + z64) != SIG_EOCD64) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: ZIP64 locator points to offset %" G_GUINT64_FORMAT ", where no ZIP64 end record lies",
                   zip->path, z64);
      return FALSE;
    }
    const guint8 *r = b + z64;
    guint64 rec_size = rd64 (r + 4);          /* bytes after the first 12 */
    if (rec_size < EOCD64_LEN - 12 || rec_size > limit - z64 - 12) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: ZIP64 end record size %" G_GUINT64_FORMAT
                   " is out of bounds", zip->path, rec_size);
      return FALSE;
    }
    if (rd32 (r + 16) != 0 || rd32 (r + 20) != 0 || rd64 (r + 24) != rd64 (r + 32)) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                   zip->path);
      return FALSE;
    }
    end->n_entries = rd64 (r + 32);
    end->cd_size = rd64 (r + 40);
    end->cd_offset = rd64 (r + 48);
    end->cd_limit = z64;
  } else {
    if (wants64) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: end record holds ZIP64 placeholders but there is no ZIP64 locator", zip->path);
      return FALSE;
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n_total) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                   zip->path);
      return FALSE;
    }
    end->n_entries = n_total;
    end->cd_size = cd_size;
    end->cd_offset = cd_offset;
    end->cd_limit = eocd;
  }

  if (end->cd_offset > end->cd_limit || end->cd_size > end->cd_limit - end->cd_offset) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: central directory (offset %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                 " bytes) lies outside the archive's %" G_GSIZE_FORMAT " bytes (truncated?)",
                 zip->path, end->cd_offset, end->cd_size, zip->len);
    return FALSE;
  }
  if (end->n_entries > DDPM_ZIP_MAX_ENTRIES) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: zip archive claims %" G_GUINT64_FORMAT
                 " entries (limit DDPM_ZIP_MAX_ENTRIES = %d)", zip->path, end->n_entries, DDPM_ZIP_MAX_ENTRIES);
    return FALSE;
  }
  /* Each header takes at least 46 bytes: a count the directory cannot hold is a lie, caught before the
   * entry array is allocated. */
  if (end->n_entries > end->cd_size / CENTRAL_LEN) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: zip archive claims %" G_GUINT64_FORMAT
                 " entries but its central directory has only %" G_GUINT64_FORMAT " bytes",
                 zip->path, end->n_entries, end->cd_size);
    return FALSE;
  }
  return TRUE;
}

/* Reads the ZIP64 extra field (id 0x0001) of a central header: it holds, in this order, exactly the
 * values whose 32/16-bit header fields are saturated. */
static gboolean
apply_zip64_extra (DdpmZipReader *zip, const char *name, const guint8 *extra, guint extra_len, guint64 *usize,
                   guint64 *csize, guint64 *offset, guint32 *disk, GError **error)
{
  gboolean need_u = *usize == 0xffffffffu, need_c = *csize == 0xffffffffu, need_o = *offset == 0xffffffffu,
           need_d = *disk == 0xffffu;
  guint pos = 0;
  while (extra_len - pos >= 4) {
    guint id = rd16 (extra + pos), n = rd16 (extra + pos + 2);
    if (n > extra_len - pos - 4) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry '%s': extra field block 0x%04x overruns the "
                   "extra field (%u of %u bytes)", zip->path, name, id, n, extra_len - pos - 4);
      return FALSE;
    }
    if (id == 0x0001) {
      const guint8 *f = extra + pos + 4;
      guint need = 8 * (need_u + need_c + need_o) + 4 * need_d;
      if (n < need) {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry '%s': ZIP64 extra field has %u bytes, "
                     "needs %u", zip->path, name, n, need);
        return FALSE;
      }
      if (need_u) { *usize = rd64 (f); f += 8; need_u = FALSE; }
      if (need_c) { *csize = rd64 (f); f += 8; need_c = FALSE; }
      if (need_o) { *offset = rd64 (f); f += 8; need_o = FALSE; }
      if (need_d) { *disk = rd32 (f); need_d = FALSE; }
    }
    pos += 4 + n;
  }
  if (need_u || need_c || need_o || need_d) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: entry '%s' has saturated 32-bit fields but no ZIP64 extra field", zip->path, name);
    return FALSE;
  }
  return TRUE;
}

/* Checks the local header at entry->data_offset (still the header offset on entry) and turns it into the
 * data offset. Local headers lie before the central directory, and so must their data. */
static gboolean
check_local_header (DdpmZipReader *zip, DdpmZipEntry *entry, const guint8 *cd_name, guint name_len,
                    guint64 cd_offset, GError **error)
{
  const guint8 *b = zip->base;
  guint64 off = entry->data_offset;
  if (off > cd_offset || cd_offset - off < LOCAL_LEN || rd32 (b + off) != SIG_LOCAL) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: entry '%s': no local header at offset %" G_GUINT64_FORMAT, zip->path, entry->name, off);
    return FALSE;
  }
  const guint8 *h = b + off;
  guint flags = rd16 (h + 6), method = rd16 (h + 8), lname = rd16 (h + 26), lextra = rd16 (h + 28);
  if (method != 0 || (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTED))) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry '%s': local header disagrees with the central "
                 "directory (method %u, flags 0x%04x)", zip->path, entry->name, method, flags);
    return FALSE;
  }
  guint64 data = off + LOCAL_LEN + lname + lextra;
  if (data > cd_offset) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry '%s': local header runs into the central "
                 "directory", zip->path, entry->name);
    return FALSE;
  }
  if (lname != name_len || memcmp (h + LOCAL_LEN, cd_name, name_len) != 0) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry '%s': local header names a different file",
                 zip->path, entry->name);
    return FALSE;
  }
  /* Without a data descriptor the local CRC and sizes are real and must agree (0xFFFFFFFF: in ZIP64). */
  if (!(flags & FLAG_DATA_DESCRIPTOR)) {
    guint32 lcrc = rd32 (h + 14), lcs = rd32 (h + 18), lus = rd32 (h + 22);
    if (lcrc != entry->crc32 || (lcs != 0xffffffffu && lcs != entry->size) ||
        (lus != 0xffffffffu && lus != entry->size)) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry '%s': local header CRC/sizes disagree with the "
                   "central directory", zip->path, entry->name);
      return FALSE;
    }
  }
  if (entry->size > cd_offset - data) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: entry '%s' (%" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT
                 ") extends past the end of the entry data (offset %" G_GUINT64_FORMAT "; truncated archive?)",
                 zip->path, entry->name, entry->size, data, cd_offset);
    return FALSE;
  }
  entry->data_offset = data;
  return TRUE;
}

static gboolean
read_central_directory (DdpmZipReader *zip, const EndRecord *end, GError **error)
{
  const guint8 *b = zip->base;
  guint64 pos = end->cd_offset, cd_end = end->cd_offset + end->cd_size;

  zip->n = (guint) end->n_entries;
  zip->entries = g_new0 (DdpmZipEntry, MAX (zip->n, 1));
  zip->crc_checked = g_new0 (gboolean, MAX (zip->n, 1));

  for (guint i = 0; i < zip->n; i++) {
    if (cd_end - pos < CENTRAL_LEN || rd32 (b + pos) != SIG_CENTRAL) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: central directory header %u of %u missing at offset %"
                   G_GUINT64_FORMAT, zip->path, i, zip->n, pos);
      return FALSE;
    }
    const guint8 *h = b + pos;
    guint flags = rd16 (h + 8), method = rd16 (h + 10);
    guint32 crc = rd32 (h + 16);
    guint64 csize = rd32 (h + 20), usize = rd32 (h + 24), offset = rd32 (h + 42);
    guint name_len = rd16 (h + 28), extra_len = rd16 (h + 30), comment_len = rd16 (h + 32);
    guint32 disk = rd16 (h + 34);
    if ((guint64) name_len + extra_len + comment_len > cd_end - pos - CENTRAL_LEN) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: central directory header %u overruns the directory",
                   zip->path, i);
      return FALSE;
    }
    const guint8 *name = h + CENTRAL_LEN;
    if (name_len == 0 || name_len > DDPM_ZIP_MAX_NAME || memchr (name, 0, name_len)) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry %u has an empty, over-long (limit "
                   "DDPM_ZIP_MAX_NAME = %d bytes) or NUL-containing name (%u bytes)", zip->path, i,
                   DDPM_ZIP_MAX_NAME, name_len);
      return FALSE;
    }
    DdpmZipEntry *entry = &zip->entries[i];
    entry->name = g_strndup ((const char *) name, name_len);

    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTED | FLAG_MASKED_HEADERS)) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: entry '%s' is encrypted", zip->path, entry->name);
      return FALSE;
    }
    if (method != 0) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "%s: entry '%s' is compressed (method %u, %s); only stored (uncompressed) entries are supported, "
                   "as torch.save writes them", zip->path, entry->name, method, method_name (method));
      return FALSE;
    }
    if (!apply_zip64_extra (zip, entry->name, name + name_len, extra_len, &usize, &csize, &offset, &disk, error))
      return FALSE;
    if (disk != 0) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: entry '%s' is on disk %u (multi-disk archives "
                   "are not supported)", zip->path, entry->name, disk);
      return FALSE;
    }
    if (csize != usize) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: stored entry '%s' has compressed size %"
                   G_GUINT64_FORMAT " != size %" G_GUINT64_FORMAT, zip->path, entry->name, csize, usize);
      return FALSE;
    }
    entry->size = usize;
    entry->crc32 = crc;
    entry->data_offset = offset;
    if (!check_local_header (zip, entry, name, name_len, end->cd_offset, error))
      return FALSE;
    if (!g_hash_table_insert (zip->by_name, entry->name, entry)) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: duplicate zip entry '%s'", zip->path, entry->name);
      return FALSE;
    }
    pos += CENTRAL_LEN + name_len + extra_len + comment_len;
  }
  return TRUE;
}

DdpmZipReader *
ddpm_zip_reader_new (GBytes *file, const char *path_for_errors, GError **error)
{
  g_return_val_if_fail (file != NULL, NULL);
  g_autoptr (DdpmZipReader) zip = g_new0 (DdpmZipReader, 1);
  zip->file = g_bytes_ref (file);
  zip->base = g_bytes_get_data (file, &zip->len);
  zip->path = g_strdup (path_for_errors ? path_for_errors : "<memory>");
  zip->by_name = g_hash_table_new (g_str_hash, g_str_equal);

  EndRecord end;
  if (!read_end_records (zip, &end, error) || !read_central_directory (zip, &end, error))
    return NULL;
  return g_steal_pointer (&zip);
}

void
ddpm_zip_reader_free (DdpmZipReader *zip)
{
  if (!zip)
    return;
  for (guint i = 0; zip->entries && i < zip->n; i++)
    g_free (zip->entries[i].name);
  g_free (zip->entries);
  g_free (zip->crc_checked);
  if (zip->by_name)
    g_hash_table_unref (zip->by_name);
  g_bytes_unref (zip->file);
  g_free (zip->path);
  g_free (zip);
}

guint
ddpm_zip_reader_n_entries (const DdpmZipReader *zip)
{
  return zip->n;
}

const DdpmZipEntry *
ddpm_zip_reader_entry (const DdpmZipReader *zip, guint index)
{
  return index < zip->n ? &zip->entries[index] : NULL;
}

const DdpmZipEntry *
ddpm_zip_reader_find (const DdpmZipReader *zip, const char *name)
{
  return g_hash_table_lookup (zip->by_name, name);
}

const guint8 *
ddpm_zip_reader_data (DdpmZipReader *zip, const DdpmZipEntry *entry, GError **error)
{
  g_return_val_if_fail (entry >= zip->entries && entry < zip->entries + zip->n, NULL);
  gsize i = (gsize) (entry - zip->entries);
  const guint8 *data = zip->base + entry->data_offset;
  if (!zip->crc_checked[i] && entry->crc32 != 0) {
    guint32 crc = ddpm_crc32 (0, data, entry->size);
    if (crc != entry->crc32) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: entry '%s' is corrupt (CRC-32 %08x, expected %08x)",
                   zip->path, entry->name, crc, entry->crc32);
      return NULL;
    }
  }
  zip->crc_checked[i] = TRUE;
  return data;
}
