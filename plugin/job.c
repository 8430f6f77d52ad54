/* job.c: the engine in a worker thread, progress on the main thread (see job.h). */
#include "job.h"

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>
#include <string.h>

#include "progress_dialog.h"

/* Interactive runs ask the engine for an x0 preview every this many steps. */
#define PREVIEW_EVERY 2
/* Non-interactive runs update GIMP's progress at most this often (each update is a PDB call). */
#define GIMP_PROGRESS_INTERVAL_US 200000

struct DdpmJob {
  DdpmJobWork work;
  gpointer data;
  gboolean interactive;

  gint cancel;                /* atomic: Cancel was pressed */
  GMutex lock;                /* guards everything below up to the main-thread part */
  DdpmContext *ctx;           /* the worker's context while it exists, for ddpm_context_cancel */
  guint idle;                 /* the scheduled main-thread update, 0 when none */
  gboolean dirty_progress, dirty_preview, dirty_status, dirty_detail;
  int step, num_steps, part, n_parts;
  int channels, height, width;  /* shape of the current samples */
  char *part_label, *status, *detail;
  float *preview;             /* (channels, height, width) copy of the last x0 preview */
  size_t preview_len;

  /* main thread only */
  DdpmProgressDialog *dialog;
  gint64 last_gimp_update;
  GMainLoop *loop;
  gboolean result;
  GError *error;
};

/* ---- main thread ---------------------------------------------------------------------------------- */

static gboolean
job_update_main (gpointer data)
{
  DdpmJob *job = data;
  g_mutex_lock (&job->lock);
  job->idle = 0;
  gboolean dp = job->dirty_progress, dv = job->dirty_preview, ds = job->dirty_status, dd = job->dirty_detail;
  job->dirty_progress = job->dirty_preview = job->dirty_status = job->dirty_detail = FALSE;
  int step = job->step, num_steps = job->num_steps, part = job->part, n_parts = job->n_parts;
  int C = job->channels, H = job->height, W = job->width;
  g_autofree char *label = g_strdup (job->part_label);
  g_autofree char *status = g_strdup (job->status);
  g_autofree char *detail = g_strdup (job->detail);
  g_autofree float *preview = dv ? g_memdup2 (job->preview, job->preview_len * sizeof (float)) : NULL;
  g_mutex_unlock (&job->lock);

  if (job->dialog != NULL)
    {
      if (dd)
        ddpm_progress_dialog_set_detail (job->dialog, detail);
      if (ds)
        ddpm_progress_dialog_set_status (job->dialog, status);
      if (dp)
        ddpm_progress_dialog_set_progress (job->dialog, step, num_steps, part, n_parts, label);
      if (preview != NULL)
        ddpm_progress_dialog_set_preview (job->dialog, preview, C, H, W);
    }
  else
    {
      if (ds)
        gimp_progress_set_text (status);
      gint64 now = g_get_monotonic_time ();
      if (dp && (now - job->last_gimp_update >= GIMP_PROGRESS_INTERVAL_US || step == num_steps))
        {
          job->last_gimp_update = now;
          double f = (part + (num_steps > 0 ? (double) step / num_steps : 1.0)) / MAX (n_parts, 1);
          gimp_progress_update (CLAMP (f, 0.0, 1.0));
          g_autofree char *text = n_parts > 1 && label != NULL
                                    ? g_strdup_printf ("Step %d of %d (%s %d of %d)", step, num_steps, label,
                                                       part + 1, n_parts)
                                    : g_strdup_printf ("Step %d of %d", step, num_steps);
          gimp_progress_set_text (text);
        }
      else if (dp)
        {
          /* Skipped this time: make sure a later update shows the latest state. */
          g_mutex_lock (&job->lock);
          job->dirty_progress = TRUE;
          if (job->idle == 0)
            job->idle = g_timeout_add (GIMP_PROGRESS_INTERVAL_US / 1000, job_update_main, job);
          g_mutex_unlock (&job->lock);
        }
    }
  return G_SOURCE_REMOVE;
}

/* Under job->lock: have job_update_main run soon on the main thread. */
static void
schedule_update_locked (DdpmJob *job)
{
  if (job->idle == 0)
    job->idle = g_idle_add (job_update_main, job);
}

static void
dialog_cancel (gpointer data)
{
  DdpmJob *job = data;
  g_atomic_int_set (&job->cancel, 1);
  g_mutex_lock (&job->lock);
  if (job->ctx != NULL)
    ddpm_context_cancel (job->ctx);
  g_mutex_unlock (&job->lock);
}

static void
work_thread (GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  DdpmJob *job = task_data;
  GError *error = NULL;
  if (job->work (job, job->data, &error))
    g_task_return_boolean (task, TRUE);
  else
    {
      if (error == NULL)  /* a work function that forgot its error: still say something */
        g_set_error (&error, DDPM_ERROR, DDPM_ERROR_ARGUMENT, "the diffusion job failed without a message");
      g_task_return_error (task, error);
    }
}

static void
work_done (GObject *source, GAsyncResult *result, gpointer data)
{
  DdpmJob *job = data;
  job->result = g_task_propagate_boolean (G_TASK (result), &job->error);
  g_main_loop_quit (job->loop);
}

gboolean
ddpm_job_run (const char *title, gboolean interactive, DdpmJobWork work, gpointer data, GError **error)
{
  DdpmJob *job = g_new0 (DdpmJob, 1);
  g_mutex_init (&job->lock);
  job->work = work;
  job->data = data;
  job->interactive = interactive;
  job->loop = g_main_loop_new (NULL, FALSE);

  if (interactive)
    {
      gimp_ui_init ("gimp-ddpm");  /* a run with last values shows no parameter dialog that did it */
      job->dialog = ddpm_progress_dialog_new (title, "", dialog_cancel, job);
      gimp_window_set_transient (GTK_WINDOW (ddpm_progress_dialog_get_window (job->dialog)));
    }
  else
    gimp_progress_init (title);

  GTask *task = g_task_new (NULL, NULL, work_done, job);
  g_task_set_task_data (task, job, NULL);
  g_task_run_in_thread (task, work_thread);
  g_object_unref (task);
  g_main_loop_run (job->loop);

  /* The worker has returned: no update can be scheduled any more; drop the one still pending. */
  g_mutex_lock (&job->lock);
  if (job->idle != 0)
    g_source_remove (job->idle);
  job->idle = 0;
  g_mutex_unlock (&job->lock);

  if (job->dialog != NULL)
    ddpm_progress_dialog_destroy (job->dialog);
  else
    gimp_progress_end ();

  gboolean ok = job->result;
  if (!ok)
    g_propagate_error (error, job->error);
  g_main_loop_unref (job->loop);
  g_mutex_clear (&job->lock);
  g_free (job->part_label);
  g_free (job->status);
  g_free (job->detail);
  g_free (job->preview);
  g_free (job);
  return ok;
}

/* ---- worker thread -------------------------------------------------------------------------------- */

static gboolean
engine_progress (int step, int num_steps, const float *x0, gpointer data)
{
  DdpmJob *job = data;
  g_mutex_lock (&job->lock);
  job->step = step;
  job->num_steps = num_steps;
  job->dirty_progress = TRUE;
  size_t n = (size_t) job->channels * job->height * job->width;
  if (x0 != NULL && job->interactive && n > 0)
    {
      if (job->preview_len != n)
        {
          g_free (job->preview);
          job->preview = g_new (float, n);
          job->preview_len = n;
        }
      memcpy (job->preview, x0, n * sizeof (float));
      job->dirty_preview = TRUE;
    }
  schedule_update_locked (job);
  g_mutex_unlock (&job->lock);
  return !g_atomic_int_get (&job->cancel);
}

static void
engine_status (const char *status, gpointer data)
{
  ddpm_job_set_status (data, status);
}

DdpmContext *
ddpm_job_open_context (DdpmJob *job, DdpmModel *model, DdpmDevice device, DdpmPrecision precision, gboolean tune,
                       GError **error)
{
  if (ddpm_job_cancelled (job))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_CANCELLED, "cancelled");
      return NULL;
    }
  DdpmContext *ctx = ddpm_context_new (model, device, precision, error);
  if (ctx == NULL)
    return NULL;
  ddpm_context_set_progress (ctx, engine_progress, job, job->interactive ? PREVIEW_EVERY : 0);
  ddpm_context_set_status (ctx, engine_status, job);   /* tuning's trials, on the progress bar */
  if (tune)
    ddpm_context_set_tuning (ctx, DDPM_TUNING_CACHED);
  g_mutex_lock (&job->lock);
  job->ctx = ctx;
  g_mutex_unlock (&job->lock);
  /* Cancel pressed while the context was being made: it found no context to cancel. */
  if (ddpm_job_cancelled (job))
    ddpm_context_cancel (ctx);
  return ctx;
}

void
ddpm_job_close_context (DdpmJob *job, DdpmContext *ctx)
{
  if (ctx == NULL)
    return;
  g_mutex_lock (&job->lock);
  if (job->ctx == ctx)
    job->ctx = NULL;
  g_mutex_unlock (&job->lock);
  /* what tuning timed and kept, for whoever reads GIMP's terminal (as the ddpm tool prints it) */
  const char *report = ddpm_context_tuning_report (ctx);
  if (report != NULL)
    g_printerr ("gimp-ddpm: %s\n", report);
  ddpm_context_free (ctx);
}

void
ddpm_job_set_part (DdpmJob *job, int part, int n_parts, const char *part_label, int channels, int height, int width)
{
  g_mutex_lock (&job->lock);
  job->part = part;
  job->n_parts = n_parts;
  g_free (job->part_label);
  job->part_label = g_strdup (part_label);
  job->channels = channels;
  job->height = height;
  job->width = width;
  job->step = 0;
  job->num_steps = 0;
  g_mutex_unlock (&job->lock);
}

void
ddpm_job_set_status (DdpmJob *job, const char *status)
{
  g_mutex_lock (&job->lock);
  g_free (job->status);
  job->status = g_strdup (status);
  job->dirty_status = TRUE;
  schedule_update_locked (job);
  g_mutex_unlock (&job->lock);
}

void
ddpm_job_set_detail (DdpmJob *job, const char *detail)
{
  g_mutex_lock (&job->lock);
  g_free (job->detail);
  job->detail = g_strdup (detail);
  job->dirty_detail = TRUE;
  schedule_update_locked (job);
  g_mutex_unlock (&job->lock);
}

gboolean
ddpm_job_cancelled (DdpmJob *job)
{
  return g_atomic_int_get (&job->cancel) != 0;
}
