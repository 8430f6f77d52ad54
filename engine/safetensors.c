/* safetensors.c: reads a .safetensors file into a DdpmTensorTable.
 *
 * Layout: u64 little-endian N | N bytes of JSON | data. The JSON is an object
 *   { name: { "dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end] }, "__metadata__": {...} }
 * with offsets relative to the first data byte (8 + N). Everything is validated before a single tensor is
 * trusted: N against the file and the header limit, the JSON, each entry's dtype (F32/F16/BF16 only),
 * shape, offsets inside the data, byte size == numel * itemsize, no overlaps, no duplicate names. */
#include "tensor_table.h"

#include <string.h>
#include <json-glib/json-glib.h>

typedef struct {
  const char *name;                /* borrowed from the JSON object */
  guint64 begin, end;              /* [begin, end) relative to the data region */
} Extent;

static gint
compare_extents (gconstpointer a, gconstpointer b)
{
  const Extent *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : (x->end > y->end);
}

/* Reads a non-negative integer JSON value (floats, strings, negatives refused). */
static gboolean
node_get_index (JsonNode *node, guint64 *out)
{
  if (!node || !JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_INT64)
    return FALSE;
  gint64 v = json_node_get_int (node);
  if (v < 0)                       /* json-glib wraps values >= 2^63 to negatives */
    return FALSE;
  *out = (guint64) v;
  return TRUE;
}

/* Counts the members of the top-level object in the raw (already validated) JSON text. json-glib keeps
 * only the last of duplicate keys, so a difference against json_object_get_size means a duplicate name;
 * the duplicate is then identified by decoding the keys one by one. */
static char *
find_duplicate_key (const char *json, gsize len, guint n_distinct)
{
  int depth = 0;
  gboolean in_string = FALSE;
  guint n_keys = 0;
  const char *key_start = NULL;
  g_autoptr (GPtrArray) keys = g_ptr_array_new_with_free_func (g_free);

  for (gsize i = 0; i < len; i++) {
    char c = json[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"') {
        in_string = FALSE;
        if (depth == 1 && key_start)
          g_ptr_array_add (keys, g_strndup (key_start, (gsize) (json + i + 1 - key_start)));
      }
      continue;
    }
    switch (c) {
    case '"':
      in_string = TRUE;
      key_start = json + i;
      break;
    case '{': case '[': depth++; key_start = NULL; break;
    case '}': case ']': depth--; key_start = NULL; break;
    case ':':
      if (depth == 1)
        n_keys++;
      break;
    default: break;
    }
  }
  if (n_keys == n_distinct)
    return NULL;

  /* Keys collected above include string values at depth 1 (none in a valid header: every value is an
   * object); decode each quoted token and look for a repeat. */
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (guint k = 0; k < keys->len; k++) {
    g_autoptr (JsonNode) node = json_from_string (g_ptr_array_index (keys, k), NULL);
    if (!node || !JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_STRING)
      continue;
    const char *s = json_node_get_string (node);
    if (g_hash_table_contains (seen, s))
      return g_strdup (s);
    g_hash_table_add (seen, g_strdup (s));
  }
  return g_strdup ("?");
}

static gboolean
parse_dtype (const char *s, DdpmDType *out)
{
  if (!strcmp (s, "F32")) *out = DDPM_DTYPE_F32;
  else if (!strcmp (s, "F16")) *out = DDPM_DTYPE_F16;
  else if (!strcmp (s, "BF16")) *out = DDPM_DTYPE_BF16;
  else return FALSE;
  return TRUE;
}

/* The dtypes of the safetensors format that we do not load (refused as UNSUPPORTED, not malformed). */
static gboolean
is_known_safetensors_dtype (const char *s)
{
  static const char *const known[] = { "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64",
                                       "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64", NULL };
  for (int i = 0; known[i]; i++)
    if (!strcmp (s, known[i]))
      return TRUE;
  return FALSE;
}

/* Validates one header entry; fills dtype/shape/extent. */
static gboolean
parse_entry (const char *path, const char *name, JsonNode *node, guint64 data_len, DdpmDType *dtype,
             int *ndim, int64_t *shape, Extent *ext, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT (node)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s': header entry is not an object", path, name);
    return FALSE;
  }
  JsonObject *o = json_node_get_object (node);

  JsonNode *dn = json_object_get_member (o, "dtype");
  if (!dn || !JSON_NODE_HOLDS_VALUE (dn) || json_node_get_value_type (dn) != G_TYPE_STRING) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    return FALSE;
  }
  const char *ds = json_node_get_string (dn);
  if (!parse_dtype (ds, dtype)) {
    if (is_known_safetensors_dtype (ds))
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED,
                   "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 are supported", path, name, ds);
    else
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s' has unknown dtype \"%s\"", path, name, ds);
    return FALSE;
  }

  JsonNode *sn = json_object_get_member (o, "shape");
  if (!sn || !JSON_NODE_HOLDS_ARRAY (sn)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", path, name);
    return FALSE;
  }
  JsonArray *sa = json_node_get_array (sn);
  guint nd = json_array_get_length (sa);
  if (nd > DDPM_MAX_DIMS) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: tensor '%s' has %u dimensions (limit DDPM_MAX_DIMS = %d)",
                 path, name, nd, DDPM_MAX_DIMS);
    return FALSE;
  }
  guint64 numel = 1;
  gboolean overflow = FALSE;
  for (guint i = 0; i < nd; i++) {
    guint64 d;
    if (!node_get_index (json_array_get_element (sa, i), &d)) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: tensor '%s': shape[%u] is not a non-negative integer", path, name, i);
      return FALSE;
    }
    shape[i] = (int64_t) d;
    if (d != 0 && numel > (guint64) G_MAXINT64 / 8 / d)
      overflow = TRUE;             /* keep going: a later 0 would make it empty, but refuse anyway */
    numel *= d;
  }
  if (overflow) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: tensor '%s': element count of the shape overflows", path,
                 name);
    return FALSE;
  }
  *ndim = (int) nd;

  JsonNode *on = json_object_get_member (o, "data_offsets");
  guint64 begin, end;
  if (!on || !JSON_NODE_HOLDS_ARRAY (on) || json_array_get_length (json_node_get_array (on)) != 2 ||
      !node_get_index (json_array_get_element (json_node_get_array (on), 0), &begin) ||
      !node_get_index (json_array_get_element (json_node_get_array (on), 1), &end)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: tensor '%s': \"data_offsets\" must be [begin, end] of non-negative integers", path, name);
    return FALSE;
  }
  if (begin > end || end > data_len) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: tensor '%s': data_offsets [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                 ") lie outside the data region of %" G_GUINT64_FORMAT " bytes", path, name, begin, end, data_len);
    return FALSE;
  }
  guint64 want = numel * ddpm_dtype_size (*dtype);
  if (end - begin != want) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: tensor '%s': data_offsets span %" G_GUINT64_FORMAT " bytes but %s shape needs %" G_GUINT64_FORMAT,
                 path, name, end - begin, ds, want);
    return FALSE;
  }
  ext->name = name;
  ext->begin = begin;
  ext->end = end;
  return TRUE;
}

DdpmTensorTable *
ddpm_safetensors_parse (GBytes *file, const char *path, GError **error)
{
  gsize size;
  const guint8 *bytes = g_bytes_get_data (file, &size);

  if (size < 8) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: truncated safetensors file (%" G_GSIZE_FORMAT " bytes, need at least 8 for the header length)",
                 path, size);
    return NULL;
  }
  guint64 n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | bytes[i];
  if (n > DDPM_LIMIT_SAFETENSORS_HEADER) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT,
                 "%s: safetensors header length %" G_GUINT64_FORMAT " exceeds the limit of %" G_GUINT64_FORMAT
                 " bytes (DDPM_LIMIT_SAFETENSORS_HEADER)", path, n, (guint64) DDPM_LIMIT_SAFETENSORS_HEADER);
    return NULL;
  }
  if (n > size - 8) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                 "%s: safetensors header length %" G_GUINT64_FORMAT " runs past the end of the file (%" G_GSIZE_FORMAT
                 " bytes): truncated or not a safetensors file", path, n, size);
    return NULL;
  }
  const char *json = (const char *) bytes + 8;
  if (n == 0 || memchr (json, '\0', n)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: safetensors header is empty or contains a NUL byte", path);
    return NULL;
  }
  const guint8 *data = bytes + 8 + n;
  guint64 data_len = size - 8 - n;

  g_autofree char *what = g_strdup_printf ("%s: safetensors header", path);
  if (!ddpm_json_check_limits (json, n, DDPM_LIMIT_SAFETENSORS_VALUES, what, error))
    return NULL;
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) jerr = NULL;
  if (!json_parser_load_from_data (parser, json, (gssize) n, &jerr)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: safetensors header is not valid JSON: %s", path,
                 jerr->message);
    return NULL;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: safetensors header is not a JSON object", path);
    return NULL;
  }
  JsonObject *obj = json_node_get_object (root);
  guint n_members = json_object_get_size (obj);
  if (n_members > DDPM_LIMIT_TENSOR_COUNT + 1) {  /* + __metadata__ */
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_LIMIT,
                 "%s: safetensors header lists %u entries, over the limit of %d tensors (DDPM_LIMIT_TENSOR_COUNT)", path,
                 n_members, DDPM_LIMIT_TENSOR_COUNT);
    return NULL;
  }
  g_autofree char *dup = find_duplicate_key (json, n, n_members);
  if (dup) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: duplicate tensor name '%s' in the safetensors header",
                 path, dup);
    return NULL;
  }

  g_autoptr (DdpmTensorTable) table = ddpm_tensor_table_new ("safetensors", file);
  g_autoptr (GArray) extents = g_array_sized_new (FALSE, FALSE, sizeof (Extent), n_members);
  g_autoptr (GList) members = json_object_get_members (obj);
  for (GList *l = members; l; l = l->next) {
    const char *name = l->data;
    JsonNode *node = json_object_get_member (obj, name);
    if (!strcmp (name, "__metadata__")) {
      if (!JSON_NODE_HOLDS_OBJECT (node)) {
        g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: \"__metadata__\" is not an object", path);
        return NULL;
      }
      continue;
    }
    DdpmDType dtype;
    int ndim;
    int64_t shape[DDPM_MAX_DIMS];
    Extent ext;
    if (!parse_entry (path, name, node, data_len, &dtype, &ndim, shape, &ext, error))
      return NULL;
    GError *ierr = NULL;
    if (!ddpm_tensor_table_insert (table, g_strdup (name), dtype, ndim, shape, data + ext.begin, &ierr)) {
      g_set_error (error, DDPM_ERROR, ierr->code, "%s: %s", path, ierr->message);
      g_error_free (ierr);
      return NULL;
    }
    if (ext.end > ext.begin)       /* empty tensors occupy no bytes and cannot overlap */
      g_array_append_val (extents, ext);
  }

  /* Overlap check: sorted by begin, each extent must start at or after the previous end. Holes are
   * tolerated (the reference writer never leaves any, but they are harmless to us). */
  g_array_sort (extents, compare_extents);
  for (guint i = 1; i < extents->len; i++) {
    const Extent *a = &g_array_index (extents, Extent, i - 1), *b = &g_array_index (extents, Extent, i);
    if (b->begin < a->end) {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT,
                   "%s: tensors '%s' [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ") and '%s' [%" G_GUINT64_FORMAT
                   ", %" G_GUINT64_FORMAT ") overlap in the data region", path, a->name, a->begin, a->end, b->name,
                   b->begin, b->end);
      return NULL;
    }
  }
  return g_steal_pointer (&table);
}

DdpmTensorTable *
ddpm_safetensors_load (const char *path, GError **error)
{
  g_autoptr (GBytes) file = ddpm_read_file (path, DDPM_LIMIT_WEIGHTS_FILE_BYTES, error);
  if (!file)
    return NULL;
  return ddpm_safetensors_parse (file, path, error);
}
