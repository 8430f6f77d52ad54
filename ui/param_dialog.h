/* param_dialog.h: the parameter dialog of a gimp-ddpm procedure: a GimpProcedureDialog with a model
 * chooser on top (the models found, an editable path, a folder browser), the other arguments in titled
 * frames, arguments greyed out when they do not apply, and a live explanation label at the bottom (the
 * caller's text, recomputed whenever an argument changes: e.g. what timestep t means for this model).
 *
 * Main thread only (GTK). Knows no engine internals: the model list and the explanation come from the
 * caller. */
#pragma once

#include <libgimp/gimpui.h>

G_BEGIN_DECLS

/* A titled frame of arguments. props: NULL-terminated property names. */
typedef struct {
  const char *title;
  const char *const *props;
} DdpmDialogGroup;

/* `prop` is sensitive only while choice argument `choice_prop` has one of the nicks in `nicks`
 * (NULL-terminated); or, with choice_prop a boolean argument and nicks NULL, only while it is FALSE. */
typedef struct {
  const char *prop;
  const char *choice_prop;
  const char *const *nicks;
} DdpmDialogRule;

/* Pango markup shown under the arguments; called again after every change of config. */
typedef char *(*DdpmExplainFunc) (GimpProcedureConfig *config, gpointer data);

typedef struct {
  const char *title;
  const DdpmDialogGroup *groups;   /* terminated by { NULL, NULL } */
  const DdpmDialogRule *rules;     /* terminated by { NULL, NULL, NULL }; may be NULL */
  const char *const *models;       /* model names offered in the chooser (NULL-terminated; may be NULL) */
  DdpmExplainFunc explain;         /* may be NULL */
  gpointer explain_data;
} DdpmDialogSpec;

/* Runs the dialog (config has a "model" string argument). TRUE when the user pressed OK. */
gboolean ddpm_param_dialog_run (GimpProcedure *procedure, GimpProcedureConfig *config, const DdpmDialogSpec *spec);

G_END_DECLS
