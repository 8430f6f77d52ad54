/* progress_dialog.c: the sampler's progress dialog (see progress_dialog.h). */
#include "progress_dialog.h"

#include <math.h>

#define PREVIEW_TARGET 256  /* pixels: the preview is scaled up by an integer factor to about this */

struct _DdpmProgressDialog {
  GtkWidget *window;
  GtkWidget *detail;
  GtkWidget *preview;      /* GtkImage */
  GtkWidget *caption;
  GtkWidget *bar;          /* GtkProgressBar */
  GtkWidget *times;        /* "Elapsed 0:12 · about 0:30 left" */
  GtkWidget *cancel;
  char *title;             /* the window title without the percentage */
  int percent_shown;       /* the percentage in the window title, -1 before the first step */
  DdpmCancelFunc cancel_func;
  gpointer cancel_data;
  gboolean cancelled;
  gint64 t_start;          /* monotonic µs when the dialog opened */
  gint64 t_first;          /* when the first step was reported (model loading excluded from the estimate) */
  double f_first;          /* the job fraction at t_first */
  double fraction;         /* the job fraction now */
  guint timer;
};

static void
format_duration (GString *s, double seconds)
{
  long t = lround (MAX (seconds, 0.0));
  if (t >= 3600)
    g_string_append_printf (s, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    g_string_append_printf (s, "%ld:%02ld", t / 60, t % 60);
}

static void
update_times (DdpmProgressDialog *d)
{
  gint64 now = g_get_monotonic_time ();
  g_autoptr (GString) s = g_string_new ("Elapsed ");
  format_duration (s, (now - d->t_start) / 1e6);
  if (d->t_first != 0 && d->fraction > d->f_first && now > d->t_first)
    {
      double rate = (d->fraction - d->f_first) / ((now - d->t_first) / 1e6);  /* job fraction per second */
      g_string_append (s, " · about ");
      format_duration (s, (1.0 - d->fraction) / rate);
      g_string_append (s, " left");
    }
  else
    g_string_append (s, " · estimating the time left…");
  gtk_label_set_text (GTK_LABEL (d->times), s->str);
}

static gboolean
tick (gpointer data)
{
  update_times (data);
  return G_SOURCE_CONTINUE;
}

static void
request_cancel (DdpmProgressDialog *d)
{
  if (d->cancelled)
    return;
  d->cancelled = TRUE;
  gtk_widget_set_sensitive (d->cancel, FALSE);
  gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d->bar), "Cancelling after the current step…");
  if (d->cancel_func != NULL)
    d->cancel_func (d->cancel_data);
}

static void
response (GtkDialog *dialog, int response_id, DdpmProgressDialog *d)
{
  request_cancel (d);
}

/* Closing the window cancels, and the window stays until the caller destroys it. */
static gboolean
delete_event (GtkWidget *widget, GdkEvent *event, DdpmProgressDialog *d)
{
  request_cancel (d);
  return TRUE;
}

DdpmProgressDialog *
ddpm_progress_dialog_new (const char *title, const char *detail, DdpmCancelFunc cancel, gpointer cancel_data)
{
  DdpmProgressDialog *d = g_new0 (DdpmProgressDialog, 1);
  d->cancel_func = cancel;
  d->cancel_data = cancel_data;
  d->t_start = g_get_monotonic_time ();
  d->title = g_strdup (title);
  d->percent_shown = -1;

  d->window = gtk_dialog_new ();
  gtk_window_set_title (GTK_WINDOW (d->window), title);
  gtk_window_set_resizable (GTK_WINDOW (d->window), FALSE);
  gtk_window_set_role (GTK_WINDOW (d->window), "gimp-ddpm-progress");
  d->cancel = gtk_dialog_add_button (GTK_DIALOG (d->window), "_Cancel", GTK_RESPONSE_CANCEL);
  g_signal_connect (d->window, "response", G_CALLBACK (response), d);
  g_signal_connect (d->window, "delete-event", G_CALLBACK (delete_event), d);

  GtkWidget *box = gtk_dialog_get_content_area (GTK_DIALOG (d->window));
  gtk_container_set_border_width (GTK_CONTAINER (box), 12);
  gtk_box_set_spacing (GTK_BOX (box), 6);

  GtkWidget *heading = gtk_label_new (NULL);
  g_autofree char *markup = g_markup_printf_escaped ("<b>%s</b>", title);
  gtk_label_set_markup (GTK_LABEL (heading), markup);
  gtk_label_set_xalign (GTK_LABEL (heading), 0.0);
  gtk_box_pack_start (GTK_BOX (box), heading, FALSE, FALSE, 0);

  d->detail = gtk_label_new (detail);
  gtk_label_set_xalign (GTK_LABEL (d->detail), 0.0);
  gtk_label_set_line_wrap (GTK_LABEL (d->detail), TRUE);
  gtk_label_set_max_width_chars (GTK_LABEL (d->detail), 48);
  gtk_box_pack_start (GTK_BOX (box), d->detail, FALSE, FALSE, 0);

  GtkWidget *frame = gtk_frame_new (NULL);
  gtk_frame_set_shadow_type (GTK_FRAME (frame), GTK_SHADOW_IN);
  d->preview = gtk_image_new ();
  gtk_widget_set_size_request (d->preview, PREVIEW_TARGET, PREVIEW_TARGET);
  gtk_container_add (GTK_CONTAINER (frame), d->preview);
  gtk_widget_set_halign (frame, GTK_ALIGN_CENTER);
  gtk_box_pack_start (GTK_BOX (box), frame, FALSE, FALSE, 0);

  d->caption = gtk_label_new ("Predicted result (x₀) appears here every few steps");
  gtk_style_context_add_class (gtk_widget_get_style_context (d->caption), "dim-label");
  gtk_box_pack_start (GTK_BOX (box), d->caption, FALSE, FALSE, 0);

  d->bar = gtk_progress_bar_new ();
  gtk_progress_bar_set_show_text (GTK_PROGRESS_BAR (d->bar), TRUE);
  gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d->bar), "Starting…");
  gtk_box_pack_start (GTK_BOX (box), d->bar, FALSE, FALSE, 0);

  d->times = gtk_label_new (NULL);
  gtk_label_set_xalign (GTK_LABEL (d->times), 0.0);
  gtk_box_pack_start (GTK_BOX (box), d->times, FALSE, FALSE, 0);
  update_times (d);
  d->timer = g_timeout_add_seconds (1, tick, d);

  gtk_widget_show_all (d->window);
  return d;
}

void
ddpm_progress_dialog_destroy (DdpmProgressDialog *d)
{
  if (d == NULL)
    return;
  if (d->timer != 0)
    g_source_remove (d->timer);
  gtk_widget_destroy (d->window);
  g_free (d->title);
  g_free (d);
}

GtkWidget *
ddpm_progress_dialog_get_window (DdpmProgressDialog *d)
{
  return d->window;
}

void
ddpm_progress_dialog_set_detail (DdpmProgressDialog *d, const char *detail)
{
  gtk_label_set_text (GTK_LABEL (d->detail), detail);
}

void
ddpm_progress_dialog_set_status (DdpmProgressDialog *d, const char *status)
{
  if (!d->cancelled)
    gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d->bar), status);
}

void
ddpm_progress_dialog_set_progress (DdpmProgressDialog *d, int step, int num_steps, int part, int n_parts,
                                   const char *part_label)
{
  double f = (part + (num_steps > 0 ? (double) step / num_steps : 1.0)) / MAX (n_parts, 1);
  d->fraction = CLAMP (f, 0.0, 1.0);
  if (d->t_first == 0)
    {
      d->t_first = g_get_monotonic_time ();
      d->f_first = d->fraction;
    }
  gtk_progress_bar_set_fraction (GTK_PROGRESS_BAR (d->bar), d->fraction);
  /* The percentage also goes into the window title (task bars show it; tests wait for it). */
  int percent = (int) (100.0 * d->fraction);
  if (percent != d->percent_shown)
    {
      g_autofree char *title = g_strdup_printf ("%s (%d%%)", d->title, percent);
      gtk_window_set_title (GTK_WINDOW (d->window), title);
      d->percent_shown = percent;
    }
  if (!d->cancelled)
    {
      g_autoptr (GString) s = g_string_new (NULL);
      g_string_printf (s, "Step %d of %d", step, num_steps);
      if (n_parts > 1 && part_label != NULL)
        g_string_append_printf (s, " · %s %d of %d", part_label, part + 1, n_parts);
      gtk_progress_bar_set_text (GTK_PROGRESS_BAR (d->bar), s->str);
    }
  update_times (d);
}

static guint8
to_byte (float x)
{
  float p = (x + 1.0f) * 127.5f;
  return (guint8) CLAMP (lrintf (p), 0, 255);
}

void
ddpm_progress_dialog_set_preview (DdpmProgressDialog *d, const float *chw, int channels, int height, int width)
{
  if (chw == NULL || height < 1 || width < 1 || channels < 1)
    return;
  const size_t plane = (size_t) height * width;
  GdkPixbuf *small = gdk_pixbuf_new (GDK_COLORSPACE_RGB, FALSE, 8, width, height);
  guint8 *px = gdk_pixbuf_get_pixels (small);
  int stride = gdk_pixbuf_get_rowstride (small);
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++)
      {
        const size_t i = (size_t) y * width + x;
        /* premultiplied colour over a checkerboard of 4x4-pixel squares (light and mid grey) */
        float a = channels == 4 ? CLAMP ((chw[3 * plane + i] + 1.0f) * 0.5f, 0.0f, 1.0f) : 1.0f;
        float bg = ((x / 4 + y / 4) % 2) ? 0.8f : 0.6f;
        for (int c = 0; c < 3; c++)
          {
            float v = chw[(channels >= 3 ? c : 0) * plane + i];
            if (channels == 4)
              v = 2.0f * (CLAMP ((v + 1.0f) * 0.5f, 0.0f, a) + (1.0f - a) * bg) - 1.0f;
            px[y * stride + x * 3 + c] = to_byte (v);
          }
      }
  /* Integer upscaling (nearest) keeps a 32-pixel sample crisp; large samples are scaled down smoothly. */
  int side = MAX (height, width);
  GdkPixbuf *shown;
  if (side <= PREVIEW_TARGET)
    {
      int k = MAX (PREVIEW_TARGET / side, 1);
      shown = gdk_pixbuf_scale_simple (small, width * k, height * k, GDK_INTERP_NEAREST);
    }
  else
    {
      double s = (double) PREVIEW_TARGET / side;
      shown = gdk_pixbuf_scale_simple (small, MAX ((int) (width * s), 1), MAX ((int) (height * s), 1),
                                       GDK_INTERP_BILINEAR);
    }
  gtk_image_set_from_pixbuf (GTK_IMAGE (d->preview), shown);
  gtk_label_set_text (GTK_LABEL (d->caption), "Predicted result (x₀) at the current step");
  g_object_unref (shown);
  g_object_unref (small);
}
