/* models.h: where the plug-in finds diffusion models, and how a "model" argument becomes a folder.
 *
 * Search path, first match wins:
 *   1. $GIMP_DDPM_MODEL_PATH (folders separated by ':'), for tests and custom setups;
 *   2. ~/.local/share/gimp-ddpm/models (the user's models: g_get_user_data_dir ());
 *   3. <datadir>/gimp-ddpm/models (models installed with the plug-in, from the source tree's weights/);
 *   4. the source tree's weights/ (when the plug-in runs from a build tree; absent once installed elsewhere).
 * A model is a folder holding config.json (UNet2DModel) or model_index.json (pipeline). */
#pragma once

#include <glib.h>

#include "ddpm.h"

G_BEGIN_DECLS

/* The search path, in order (existing folders only). Free with g_strfreev. */
char **ddpm_models_search_path (void);

/* Every model folder found in the search path: the names (folder names; first occurrence wins), sorted.
 * Free with g_strfreev. */
char **ddpm_models_list (void);

/* The folder a model argument names: an existing path (a folder, or a file inside the folder), with a
 * leading ~/ expanded, or a name looked up in the search path. An empty argument means the default model.
 * Errors (DDPM_ERROR_IO) list where it looked. */
char *ddpm_models_resolve (const char *arg, GError **error);

/* A short name for titles: the folder name of the argument (the default model's for an empty one). */
char *ddpm_models_display_name (const char *arg);

/* Resolves and loads. The message of an error names the argument and the folder. */
DdpmModel *ddpm_models_load (const char *arg, GError **error);

/* 4-channel models: whether their colour is premultiplied by alpha. TRUE unless the model folder's
 * gimp_ddpm.json says "alpha": "straight" (the project's models write that file; premultiplied is their
 * layout). */
gboolean ddpm_models_premultiplied (const char *arg);

/* One line for dialogs: "32×32 RGB, sizes in multiples of 4, 1000 training timesteps". */
char *ddpm_models_summary (const DdpmModel *model);

/* The model of the last argument asked for, so that a dialog that explains model-dependent values (what
 * timestep t means) loads each model once, and the run can take that model over instead of loading it
 * again. Main thread only. */
typedef struct {
  char *arg;          /* the argument the entry is for */
  DdpmModel *model;   /* NULL when loading failed */
  char *error;        /* the load error's message, when model is NULL */
} DdpmModelCache;

/* The model for arg (loaded now unless cached); NULL when it cannot be loaded (then *message, if not
 * NULL, points to the reason, owned by the cache). */
DdpmModel *ddpm_model_cache_get (DdpmModelCache *cache, const char *arg, const char **message);
/* Hands the cached model for arg over to the caller (NULL when the cache holds another or none). */
DdpmModel *ddpm_model_cache_take (DdpmModelCache *cache, const char *arg);
void ddpm_model_cache_clear (DdpmModelCache *cache);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DdpmModelCache, ddpm_model_cache_clear)

G_END_DECLS
