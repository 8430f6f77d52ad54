/* job.h: runs the engine in a worker thread while the main thread shows progress.
 *
 * The main thread calls ddpm_job_run (): it starts `work` in a GTask thread and spins the main loop until
 * the work returns. The worker loads the model, samples, and leaves its results in its own data; it never
 * calls libgimp. Its progress (engine callback, worker thread) is handed to the main thread through one
 * pending-state slot and an idle source, where it goes to
 *   - interactive runs: our progress dialog (ui/progress_dialog.h), whose Cancel calls ddpm_context_cancel;
 *   - other runs: gimp_progress_update / gimp_progress_set_text.
 * After ddpm_job_run returns, the caller (main thread) writes the pixels: so a failed or cancelled run
 * leaves the image exactly as it was. */
#pragma once

#include <glib.h>

#include "ddpm.h"

G_BEGIN_DECLS

typedef struct DdpmJob DdpmJob;

/* Runs on the worker thread. Returns FALSE with error set on failure or cancellation. */
typedef gboolean (*DdpmJobWork) (DdpmJob *job, gpointer data, GError **error);

/* Main thread. interactive: show the progress dialog (else report through gimp_progress). title: e.g.
 * "Generating with emoji-32". Returns what work returned. */
gboolean ddpm_job_run (const char *title, gboolean interactive, DdpmJobWork work, gpointer data, GError **error);

/* ---- worker side -------------------------------------------------------------------------------- */

/* A context for model on device/precision, wired to the job's progress and cancel; tune: tuning on
 * (cached decisions; else as $DDPM_TUNE says). Cancelled before it existed -> NULL with DDPM_ERROR_CANCELLED.
 * Free it with ddpm_job_close_context, which prints the tuning's report, if any, on stderr. */
DdpmContext *ddpm_job_open_context (DdpmJob *job, DdpmModel *model, DdpmDevice device, DdpmPrecision precision,
                                    gboolean tune, GError **error);
void ddpm_job_close_context (DdpmJob *job, DdpmContext *ctx);

/* The part of the job that the next ddpm_sample runs: part (0-based) of n_parts ("tile", "variation"),
 * and the shape of its samples (channels, height, width), which is the shape of the x0 previews. */
void ddpm_job_set_part (DdpmJob *job, int part, int n_parts, const char *part_label, int channels, int height,
                        int width);
/* A status line while no step runs ("Loading the model…"); and the detail line (model, device). */
void ddpm_job_set_status (DdpmJob *job, const char *status);
void ddpm_job_set_detail (DdpmJob *job, const char *detail);
/* TRUE once Cancel was pressed. */
gboolean ddpm_job_cancelled (DdpmJob *job);

G_END_DECLS
