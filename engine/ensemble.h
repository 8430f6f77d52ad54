/* ensemble.h: self-ensemble denoising over the symmetries of the square (flips, transposes). */
#pragma once

#include "ddpm.h"

/* dst = symmetry k (0..7) of src; src is (planes, H, W), dst (planes, H, W) or, for k >= 4 (transposed),
 * (planes, W, H). Bit 0 of k flips columns, bit 1 rows, bit 2 transposes. */
void ddpm_symmetry_apply (int k, const float *src, float *dst, int planes, int H, int W);

/* acc (planes, H, W) += the inverse of symmetry k applied to transformed (the layout ddpm_symmetry_apply
 * writes for an (H, W) picture). */
void ddpm_symmetry_accumulate_inverse (int k, const float *transformed, float *acc, int planes, int H, int W);

typedef gboolean (*DdpmSampleRunFunc) (DdpmContext *ctx, const DdpmSampleParams *p, float *out, GError **error);

/* Runs `run` once per symmetry 0..p->ensemble-1 on the transformed x_init, maps each result back and writes
 * their mean to out (B, C, H, W). Progress is reported as one run of ensemble * n steps. With ensemble 1 it
 * is `run` itself. On error or cancellation out is untouched. */
gboolean ddpm_ensemble_run (DdpmContext *ctx, const DdpmSampleParams *p, DdpmSampleRunFunc run, float *out,
                            GError **error);
