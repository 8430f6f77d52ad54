/* param_dialog.c: the parameter dialog of a gimp-ddpm procedure (see param_dialog.h). */
#include "param_dialog.h"

typedef struct {
  GimpProcedureConfig *config;
  const DdpmDialogSpec *spec;
  GtkWidget *info;            /* GtkLabel: the explanation */
  guint idle;                 /* pending explanation refresh */
} DialogState;

static gboolean
refresh_explanation (gpointer data)
{
  DialogState *st = data;
  st->idle = 0;
  g_autofree char *markup = st->spec->explain (st->config, st->spec->explain_data);
  gtk_label_set_markup (GTK_LABEL (st->info), markup != NULL ? markup : "");
  return G_SOURCE_REMOVE;
}

/* Argument changes come in bursts (a spin scale drag): refresh once per burst, from an idle. */
static void
config_changed (GObject *config, GParamSpec *pspec, DialogState *st)
{
  if (st->idle == 0)
    st->idle = g_idle_add (refresh_explanation, st);
}

static void
browse_clicked (GtkButton *button, GtkEntry *entry)
{
  GtkWidget *toplevel = gtk_widget_get_toplevel (GTK_WIDGET (button));
  GtkWidget *chooser = gtk_file_chooser_dialog_new ("Choose a Model Folder", GTK_WINDOW (toplevel),
                                                    GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Cancel",
                                                    GTK_RESPONSE_CANCEL, "_Select", GTK_RESPONSE_ACCEPT, NULL);
  const char *current = gtk_entry_get_text (entry);
  if (g_path_is_absolute (current) && g_file_test (current, G_FILE_TEST_IS_DIR))
    gtk_file_chooser_set_filename (GTK_FILE_CHOOSER (chooser), current);
  if (gtk_dialog_run (GTK_DIALOG (chooser)) == GTK_RESPONSE_ACCEPT)
    {
      g_autofree char *dir = gtk_file_chooser_get_filename (GTK_FILE_CHOOSER (chooser));
      if (dir != NULL)
        gtk_entry_set_text (entry, dir);
    }
  gtk_widget_destroy (chooser);
}

/* "Model: [combo with entry: names found | typed path] [Browse…]", bound both ways to config's "model". */
static GtkWidget *
model_chooser_new (GimpProcedureConfig *config, const char *const *models)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 6);
  GtkWidget *label = gtk_label_new_with_mnemonic ("Mo_del");
  GtkWidget *combo = gtk_combo_box_text_new_with_entry ();
  GtkWidget *entry = gtk_bin_get_child (GTK_BIN (combo));
  GtkWidget *browse = gtk_button_new_with_mnemonic ("_Browse…");

  for (const char *const *m = models; m != NULL && *m != NULL; m++)
    gtk_combo_box_text_append_text (GTK_COMBO_BOX_TEXT (combo), *m);
  gtk_label_set_mnemonic_widget (GTK_LABEL (label), entry);
  gtk_widget_set_tooltip_text (combo, "A model name from the list, or the path of a diffusers UNet2DModel "
                                      "folder (config.json + diffusion_pytorch_model.safetensors)");
  g_object_bind_property (config, "model", entry, "text", G_BINDING_BIDIRECTIONAL | G_BINDING_SYNC_CREATE);
  g_signal_connect (browse, "clicked", G_CALLBACK (browse_clicked), entry);

  gtk_box_pack_start (GTK_BOX (box), label, FALSE, FALSE, 0);
  gtk_box_pack_start (GTK_BOX (box), combo, TRUE, TRUE, 0);
  gtk_box_pack_start (GTK_BOX (box), browse, FALSE, FALSE, 0);
  gtk_widget_show_all (box);
  return box;
}

static void
apply_rule (GimpProcedureDialog *dialog, GimpProcedureConfig *config, const DdpmDialogRule *rule)
{
  if (rule->nicks == NULL)
    {
      /* Sensitive while the boolean is FALSE. */
      gimp_procedure_dialog_set_sensitive (dialog, rule->prop, TRUE, G_OBJECT (config), rule->choice_prop, TRUE);
      return;
    }
  GimpValueArray *values = gimp_value_array_new (1);
  for (const char *const *n = rule->nicks; *n != NULL; n++)
    {
      GValue v = G_VALUE_INIT;
      g_value_init (&v, G_TYPE_STRING);
      g_value_set_string (&v, *n);
      gimp_value_array_append (values, &v);
      g_value_unset (&v);
    }
  gimp_procedure_dialog_set_sensitive_if_in (dialog, rule->prop, G_OBJECT (config), rule->choice_prop, values, TRUE);
}

gboolean
ddpm_param_dialog_run (GimpProcedure *procedure, GimpProcedureConfig *config, const DdpmDialogSpec *spec)
{
  gimp_ui_init ("gimp-ddpm");
  GtkWidget *dialog = gimp_procedure_dialog_new (procedure, config, spec->title);
  GimpProcedureDialog *pd = GIMP_PROCEDURE_DIALOG (dialog);

  /* One titled frame per group: ids "<n>-label", "<n>-box", "<n>-frame". */
  GList *frames = NULL;
  for (int g = 0; spec->groups[g].title != NULL; g++)
    {
      g_autofree char *label_id = g_strdup_printf ("group%d-label", g);
      g_autofree char *box_id = g_strdup_printf ("group%d-box", g);
      char *frame_id = g_strdup_printf ("group%d-frame", g);
      GList *props = NULL;
      for (const char *const *p = spec->groups[g].props; *p != NULL; p++)
        props = g_list_append (props, (gpointer) *p);
      gimp_procedure_dialog_get_label (pd, label_id, spec->groups[g].title, FALSE, FALSE);
      gimp_procedure_dialog_fill_box_list (pd, box_id, props);
      gimp_procedure_dialog_fill_frame (pd, frame_id, label_id, FALSE, box_id);
      g_list_free (props);
      frames = g_list_append (frames, frame_id);
    }
  gimp_procedure_dialog_fill_list (pd, frames);
  g_list_free_full (frames, g_free);

  for (const DdpmDialogRule *r = spec->rules; r != NULL && r->prop != NULL; r++)
    apply_rule (pd, config, r);

  GtkWidget *content = gtk_dialog_get_content_area (GTK_DIALOG (dialog));
  GtkWidget *chooser = model_chooser_new (config, spec->models);
  gtk_box_pack_start (GTK_BOX (content), chooser, FALSE, FALSE, 6);
  gtk_box_reorder_child (GTK_BOX (content), chooser, 0);

  DialogState st = { config, spec, NULL, 0 };
  gulong handler = 0;
  if (spec->explain != NULL)
    {
      st.info = gtk_label_new (NULL);
      gtk_label_set_line_wrap (GTK_LABEL (st.info), TRUE);
      gtk_label_set_max_width_chars (GTK_LABEL (st.info), 56);
      gtk_label_set_xalign (GTK_LABEL (st.info), 0.0);
      gtk_label_set_selectable (GTK_LABEL (st.info), TRUE);
      gtk_box_pack_start (GTK_BOX (content), st.info, FALSE, FALSE, 6);
      gtk_widget_show (st.info);
      refresh_explanation (&st);
      handler = g_signal_connect (config, "notify", G_CALLBACK (config_changed), &st);
    }

  gboolean ok = gimp_procedure_dialog_run (pd);

  if (handler != 0)
    g_signal_handler_disconnect (config, handler);
  if (st.idle != 0)
    g_source_remove (st.idle);
  gtk_widget_destroy (dialog);
  return ok;
}
