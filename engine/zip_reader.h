/* zip_reader.h: a strict reader for the uncompressed ("stored") zip archives that torch.save writes.
 *
 * The whole archive is in memory (a GBytes); entries are (offset, size) windows into it, never copies.
 * Everything is validated when the reader is built: the end-of-central-directory record (and the ZIP64
 * one, which torch always writes), every central-directory header, every local header it points to, and
 * every entry's data window against the file. Compressed, encrypted and multi-disk archives are refused.
 * Nothing is allocated in proportion to a size read from the file before that size is checked against the
 * bytes really present. */
#pragma once

#include "ddpm.h"

#define DDPM_ZIP_MAX_NAME      1024      /* bytes in one entry name */
#define DDPM_ZIP_MAX_ENTRIES   200000    /* entries in one archive (torch: one per storage + ~7) */

typedef struct {
  char *name;                      /* NUL-free, <= DDPM_ZIP_MAX_NAME bytes */
  guint64 data_offset;             /* first byte of the (stored) data in the archive */
  guint64 size;                    /* bytes; stored entries: compressed size == uncompressed size */
  guint32 crc32;                   /* from the central directory; 0 also means "not computed" (see below) */
} DdpmZipEntry;

typedef struct DdpmZipReader DdpmZipReader;

/* Validates the archive; the reader keeps a reference to file. path_for_errors prefixes messages. */
DdpmZipReader *ddpm_zip_reader_new (GBytes *file, const char *path_for_errors, GError **error);
void ddpm_zip_reader_free (DdpmZipReader *zip);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdpmZipReader, ddpm_zip_reader_free)

guint ddpm_zip_reader_n_entries (const DdpmZipReader *zip);
/* Entries in central-directory order (torch takes its archive name from entry 0). */
const DdpmZipEntry *ddpm_zip_reader_entry (const DdpmZipReader *zip, guint index);
const DdpmZipEntry *ddpm_zip_reader_find (const DdpmZipReader *zip, const char *name);

/* The entry's bytes (entry->size of them), after checking its CRC-32 once per reader. A CRC of 0 is not
 * checked: torch.serialization.set_crc32_options(False) writes 0 for every entry, and torch.load accepts
 * such files. */
const guint8 *ddpm_zip_reader_data (DdpmZipReader *zip, const DdpmZipEntry *entry, GError **error);

/* Standard CRC-32 (zip, zlib, PNG): crc = ddpm_crc32 (0, p, n); chain by passing the previous value. */
guint32 ddpm_crc32 (guint32 crc, const guint8 *p, gsize n);
