/* npy.h: NumPy .npy files (format 1.0/2.0/3.0, C order, little-endian) for the CLI and tests. */
#pragma once

#include "ddpm.h"

typedef enum { DDPM_NPY_F32, DDPM_NPY_F64, DDPM_NPY_I64, DDPM_NPY_I32 } DdpmNpyType;

typedef struct {
  DdpmNpyType type;
  int ndim;
  int64_t shape[8];
  int64_t numel;
  void *data;                      /* numel elements of type, owned */
} DdpmNpyArray;

/* Reads a .npy file; refuses Fortran order, big-endian, other dtypes, truncated data (DDPM_ERROR_FORMAT). */
DdpmNpyArray *ddpm_npy_load (const char *path, GError **error);
void ddpm_npy_free (DdpmNpyArray *a);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdpmNpyArray, ddpm_npy_free)
/* Writes float32 data of the given shape. */
gboolean ddpm_npy_save_f32 (const char *path, const float *data, int ndim, const int64_t *shape, GError **error);
/* Converts to float32 (F64 is rounded); returns a new g_malloc'ed array. */
float *ddpm_npy_to_f32 (const DdpmNpyArray *a);
