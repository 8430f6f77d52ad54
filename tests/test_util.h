/* test_util.h: helpers shared by the CPU tests: fixture paths and error reports. */
#pragma once

#include <glib.h>
#include "ddpm.h"
#include "npy.h"
#include <stddef.h>

/* $DDPM_FIXTURES/<name> (tests/fixtures in the source tree). g_free the result. */
char *fixture_path (const char *name);

/* The model folder <rel> under the fixtures (e.g. "models/bf16-tiny"), loaded (asserts on failure). */
DdpmModel *fixture_model_load (const char *rel);

/* A DdpmProgressFunc that logs what it is told, checks that steps come one by one, and asks to cancel once
 * step reaches cancel_at (0: never). user_data is a ProgressLog. */
typedef struct {
  int calls, previews, cancel_at, last_step, total;
} ProgressLog;
gboolean progress_log_callback (int step, int num_steps, const float *x0_preview, gpointer user_data);

/* models/<model>/ref/<file> of the diffusers fixtures, loaded (asserts on failure). */
DdpmNpyArray *fixture_ref_npy (const char *model, const char *file);

typedef struct {
  double max_abs;                  /* worst |a - b| */
  double max_rel;                  /* worst |a - b| / max(|b|, 1e-6) */
  size_t worst_index;
  double worst_a, worst_b;
  size_t n_nonfinite;
} CompareResult;

/* Compares got (float) with want (double reference) over n elements. */
CompareResult compare_f32_f64 (const float *got, const double *want, size_t n);
CompareResult compare_f32 (const float *got, const float *want, size_t n);
/* Prints "label: max abs err E at [i] (got G, want W)" with g_test_message and stdout. */
void report_compare (const char *label, const CompareResult *r);
