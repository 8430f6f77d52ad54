/* progress_dialog.h: the dialog shown while the sampler runs: a progress bar with "step i of N", the
 * current part of the job ("variation 2 of 4", "tile 3 of 6"), the elapsed time and an estimate of the
 * time left, a live preview of the predicted clean image x0, and a Cancel button.
 *
 * Main thread only (GTK). It computes nothing and calls no engine function: the caller feeds it progress
 * and previews (from its own main-thread idle handler) and gets a callback when Cancel is pressed or the
 * window is closed. */
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

typedef struct _DdpmProgressDialog DdpmProgressDialog;
typedef void (*DdpmCancelFunc) (gpointer data);

/* title: the window title; detail: a line under it (model, device). Shows the dialog. */
DdpmProgressDialog *ddpm_progress_dialog_new (const char *title, const char *detail, DdpmCancelFunc cancel,
                                              gpointer cancel_data);
void ddpm_progress_dialog_destroy (DdpmProgressDialog *d);
GtkWidget *ddpm_progress_dialog_get_window (DdpmProgressDialog *d);

/* Replaces the detail line (e.g. once the device is known). */
void ddpm_progress_dialog_set_detail (DdpmProgressDialog *d, const char *detail);
/* A status shown instead of the step counter while nothing is sampled yet ("Loading the model…"). */
void ddpm_progress_dialog_set_status (DdpmProgressDialog *d, const char *status);

/* step in [0, num_steps] of part `part` (0-based) of n_parts; part_label says what a part is ("tile",
 * "variation"; NULL when n_parts is 1). The bar shows the whole job; the window title gets " (P%)". */
void ddpm_progress_dialog_set_progress (DdpmProgressDialog *d, int step, int num_steps, int part, int n_parts,
                                        const char *part_label);

/* The predicted x0: (channels, height, width) float32 in [-1, 1] (1: gray, 3: RGB, 4: RGBA with colour
 * premultiplied by alpha, shown over a checkerboard). Shown scaled up by an integer factor to about 256
 * pixels. */
void ddpm_progress_dialog_set_preview (DdpmProgressDialog *d, const float *chw, int channels, int height, int width);

G_END_DECLS
