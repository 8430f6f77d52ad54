/* tensor_table.h: a checkpoint's named tensors as read from disk (safetensors or PyTorch zip), before
 * binding to the UNet. The table owns a private copy of the file bytes: a file changed or truncated
 * after loading cannot affect us. Loaders validate everything before they insert a tensor. */
#pragma once

#include "ddpm.h"

typedef enum { DDPM_DTYPE_F32, DDPM_DTYPE_F16, DDPM_DTYPE_BF16 } DdpmDType;

#define DDPM_MAX_DIMS 8

typedef struct {
  char *name;
  DdpmDType dtype;
  int ndim;
  int64_t shape[DDPM_MAX_DIMS];
  int64_t numel;
  const guint8 *data;              /* numel * dtype size bytes, little-endian, C-contiguous; owned by the table */
} DdpmRawTensor;

typedef struct DdpmTensorTable DdpmTensorTable;

DdpmTensorTable *ddpm_tensor_table_new (const char *format, GBytes *owner);
void ddpm_tensor_table_free (DdpmTensorTable *table);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdpmTensorTable, ddpm_tensor_table_free)

/* Takes ownership of name. Fails (FORMAT) on a duplicate name. */
gboolean ddpm_tensor_table_insert (DdpmTensorTable *table, char *name, DdpmDType dtype, int ndim,
                                   const int64_t *shape, const guint8 *data, GError **error);
const DdpmRawTensor *ddpm_tensor_table_lookup (const DdpmTensorTable *table, const char *name);
guint ddpm_tensor_table_size (const DdpmTensorTable *table);
const char *ddpm_tensor_table_format (const DdpmTensorTable *table); /* "safetensors", "pytorch-zip" */
/* Sorted names (for deterministic iteration); free with g_ptr_array_unref. */
GPtrArray *ddpm_tensor_table_names (const DdpmTensorTable *table);

size_t ddpm_dtype_size (DdpmDType dtype);
const char *ddpm_dtype_name (DdpmDType dtype);
/* Converts numel elements to float32. */
void ddpm_raw_tensor_to_f32 (const DdpmRawTensor *t, float *out);

/* Loaders (safetensors.c, torch_zip.c). path is the weights file. */
DdpmTensorTable *ddpm_safetensors_load (const char *path, GError **error);
DdpmTensorTable *ddpm_safetensors_parse (GBytes *file, const char *path_for_errors, GError **error);
/* A torch.save'd state dict (PyTorch >= 1.6 zip; the legacy bare-pickle format is refused, UNSUPPORTED).
 * Nothing in the file is executed: data.pkl is run by a whitelist interpreter (pickle.h lists the opcodes
 * and globals it accepts) and anything else fails (FORMAT) naming the opcode or global. The zip must be
 * stored (uncompressed), as torch writes it; ZIP64 fields are read; each CRC-32 used is checked (0 means
 * "not computed"). Only C-contiguous float32/float16/bfloat16 tensors are accepted (else UNSUPPORTED,
 * naming the tensor); each must lie inside its storage entry. Format "pytorch-zip"; tensor names are the
 * state-dict keys as saved (legacy names are not mapped here); data points into file (no copy).
 * _parse works on memory (fuzzing); _load reads path with ddpm_read_file (limit 8 GiB). */
DdpmTensorTable *ddpm_torch_zip_load (const char *path, GError **error);
DdpmTensorTable *ddpm_torch_zip_parse (GBytes *file, const char *path_for_errors, GError **error);

/* Reads a whole file into memory with a size limit (DDPM_ERROR_LIMIT beyond it). */
GBytes *ddpm_read_file (const char *path, gsize max_bytes, GError **error);

/* Safety limits, shared by the loaders. */
#define DDPM_LIMIT_WEIGHTS_FILE_BYTES   ((gsize) 8 << 30)   /* 8 GiB */
#define DDPM_LIMIT_SAFETENSORS_HEADER   ((guint64) 100 << 20) /* 100 MiB of JSON */
#define DDPM_LIMIT_TENSOR_COUNT         100000
#define DDPM_LIMIT_CONFIG_BYTES         ((gsize) 1 << 20)
/* JSON, checked on the raw text before json-glib builds its tree: json-glib's parser recurses once per
 * nesting level (a 2 MB safetensors header of '[' overflowed the stack) and keeps ~80 bytes per value (a
 * 10 MB header of one long shape took 400 MB). A safetensors header needs depth 3 and ~7 values a tensor. */
#define DDPM_LIMIT_JSON_DEPTH           64
#define DDPM_LIMIT_SAFETENSORS_VALUES   ((guint64) 32 * DDPM_LIMIT_TENSOR_COUNT)

/* Refuses (DDPM_ERROR_LIMIT, naming the limit) JSON text nested deeper than DDPM_LIMIT_JSON_DEPTH or
 * holding more than max_values values (counted as separators outside strings, + 1). what names the text
 * in messages. Malformed text passes: the JSON parser reports it. */
gboolean ddpm_json_check_limits (const char *text, gsize len, guint64 max_values, const char *what,
                                 GError **error);
