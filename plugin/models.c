/* models.c: the model search path and the "model" argument (see models.h). */
#include "models.h"
#include "plugin.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

/* Set by plugin/meson.build: the installed models folder and the source tree's weights/. */
#ifndef DDPM_MODELS_DIR
#define DDPM_MODELS_DIR ""
#endif
#ifndef DDPM_SOURCE_WEIGHTS_DIR
#define DDPM_SOURCE_WEIGHTS_DIR ""
#endif

static void
add_dir (GPtrArray *dirs, const char *dir)
{
  if (dir == NULL || dir[0] == '\0' || !g_file_test (dir, G_FILE_TEST_IS_DIR))
    return;
  for (guint i = 0; i < dirs->len; i++)
    if (strcmp (g_ptr_array_index (dirs, i), dir) == 0)
      return;
  g_ptr_array_add (dirs, g_strdup (dir));
}

char **
ddpm_models_search_path (void)
{
  GPtrArray *dirs = g_ptr_array_new ();
  const char *env = g_getenv ("GIMP_DDPM_MODEL_PATH");
  if (env != NULL)
    {
      g_auto (GStrv) parts = g_strsplit (env, G_SEARCHPATH_SEPARATOR_S, -1);
      for (char **p = parts; *p != NULL; p++)
        add_dir (dirs, *p);
    }
  g_autofree char *user = g_build_filename (g_get_user_data_dir (), "gimp-ddpm", "models", NULL);
  add_dir (dirs, user);
  add_dir (dirs, DDPM_MODELS_DIR);
  add_dir (dirs, DDPM_SOURCE_WEIGHTS_DIR);
  g_ptr_array_add (dirs, NULL);
  return (char **) g_ptr_array_free (dirs, FALSE);
}

static gboolean
is_model_dir (const char *dir)
{
  g_autofree char *config = g_build_filename (dir, "config.json", NULL);
  g_autofree char *index = g_build_filename (dir, "model_index.json", NULL);
  return g_file_test (config, G_FILE_TEST_IS_REGULAR) || g_file_test (index, G_FILE_TEST_IS_REGULAR);
}

char **
ddpm_models_list (void)
{
  g_auto (GStrv) dirs = ddpm_models_search_path ();
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  GPtrArray *names = g_ptr_array_new ();
  for (char **d = dirs; *d != NULL; d++)
    {
      g_autoptr (GDir) dir = g_dir_open (*d, 0, NULL);
      const char *name;
      while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
        {
          g_autofree char *path = g_build_filename (*d, name, NULL);
          if (!g_hash_table_contains (seen, name) && is_model_dir (path))
            {
              g_hash_table_add (seen, g_strdup (name));
              g_ptr_array_add (names, g_strdup (name));
            }
        }
    }
  g_ptr_array_sort_values (names, (GCompareFunc) strcmp);
  g_ptr_array_add (names, NULL);
  return (char **) g_ptr_array_free (names, FALSE);
}

/* An argument is a path when it has a directory separator or starts with ~ or . (else it is a name). */
static gboolean
looks_like_path (const char *arg)
{
  return strchr (arg, G_DIR_SEPARATOR) != NULL || arg[0] == '~' || arg[0] == '.';
}

char *
ddpm_models_resolve (const char *arg, GError **error)
{
  if (arg == NULL || arg[0] == '\0')
    arg = DDPM_DEFAULT_MODEL;
  g_auto (GStrv) dirs = ddpm_models_search_path ();
  if (looks_like_path (arg))
    {
      g_autofree char *path = g_str_has_prefix (arg, "~/") ? g_build_filename (g_get_home_dir (), arg + 2, NULL)
                                                           : g_strdup (arg);
      if (g_file_test (path, G_FILE_TEST_IS_DIR))
        return g_steal_pointer (&path);
      if (g_file_test (path, G_FILE_TEST_EXISTS))  /* a file inside the model folder */
        return g_path_get_dirname (path);
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "model \"%s\": no such file or folder", arg);
      return NULL;
    }
  for (char **d = dirs; *d != NULL; d++)
    {
      g_autofree char *path = g_build_filename (*d, arg, NULL);
      if (g_file_test (path, G_FILE_TEST_IS_DIR))
        return g_steal_pointer (&path);
    }
  g_autofree char *where = dirs[0] != NULL ? g_strjoinv (", ", dirs) : g_strdup ("no model folder exists");
  g_autofree char *user = g_build_filename (g_get_user_data_dir (), "gimp-ddpm", "models", NULL);
  g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO,
               "model \"%s\" not found (looked in: %s). Give the path of a model folder, or put the folder "
               "into %s", arg, where, user);
  return NULL;
}

char *
ddpm_models_display_name (const char *arg)
{
  if (arg == NULL || arg[0] == '\0')
    arg = DDPM_DEFAULT_MODEL;
  g_autofree char *trimmed = g_strdup (arg);
  while (strlen (trimmed) > 1 && g_str_has_suffix (trimmed, G_DIR_SEPARATOR_S))
    trimmed[strlen (trimmed) - 1] = '\0';
  return g_path_get_basename (trimmed);
}

DdpmModel *
ddpm_models_load (const char *arg, GError **error)
{
  g_autofree char *dir = ddpm_models_resolve (arg, error);
  if (dir == NULL)
    return NULL;
  DdpmModel *model = ddpm_model_load (dir, error);
  if (model == NULL)
    g_prefix_error (error, "cannot load the model in %s: ", dir);
  return model;
}

DdpmModel *
ddpm_model_cache_get (DdpmModelCache *cache, const char *arg, const char **message)
{
  if (cache->arg == NULL || g_strcmp0 (cache->arg, arg) != 0)
    {
      ddpm_model_cache_clear (cache);
      g_autoptr (GError) error = NULL;
      cache->arg = g_strdup (arg);
      cache->model = ddpm_models_load (arg, &error);
      if (cache->model == NULL)
        cache->error = g_strdup (error->message);
    }
  if (message != NULL)
    *message = cache->error;
  return cache->model;
}

DdpmModel *
ddpm_model_cache_take (DdpmModelCache *cache, const char *arg)
{
  if (cache->arg == NULL || g_strcmp0 (cache->arg, arg) != 0)
    return NULL;
  DdpmModel *model = g_steal_pointer (&cache->model);
  ddpm_model_cache_clear (cache);
  return model;
}

void
ddpm_model_cache_clear (DdpmModelCache *cache)
{
  g_clear_pointer (&cache->arg, g_free);
  g_clear_pointer (&cache->model, ddpm_model_free);
  g_clear_pointer (&cache->error, g_free);
}

char *
ddpm_models_summary (const DdpmModel *model)
{
  int c = ddpm_model_in_channels (model), size = ddpm_model_sample_size (model);
  const char *kind = c == 1 ? "gray" : c == 3 ? "RGB" : c == 4 ? "RGBA" : "?";
  g_autofree char *native = size > 0 ? g_strdup_printf ("%d×%d", size, size) : g_strdup ("any size");
  return g_strdup_printf ("%s %s, sizes in multiples of %d, %d training timesteps", native, kind,
                          ddpm_model_size_multiple (model), ddpm_model_num_train_timesteps (model));
}

/* gimp_ddpm.json comes with downloaded models: json-glib recurses once per nesting level, so a small file
 * of '[' could overflow the stack. Accept only small, shallow files (the real one is ~200 bytes, depth 1). */
#define GIMP_DDPM_JSON_MAX_BYTES 65536
#define GIMP_DDPM_JSON_MAX_DEPTH 16

static gboolean
json_text_is_shallow (const char *text, gsize len)
{
  int depth = 0;
  gboolean in_string = FALSE;
  for (gsize i = 0; i < len; i++)
    {
      char c = text[i];
      if (in_string)
        {
          if (c == '\\')
            i++;
          else if (c == '"')
            in_string = FALSE;
        }
      else if (c == '"')
        in_string = TRUE;
      else if ((c == '[' || c == '{') && ++depth > GIMP_DDPM_JSON_MAX_DEPTH)
        return FALSE;
      else if (c == ']' || c == '}')
        depth--;
    }
  return TRUE;
}

gboolean
ddpm_models_premultiplied (const char *arg)
{
  g_autofree char *dir = ddpm_models_resolve (arg, NULL);
  if (dir == NULL)
    return TRUE;
  g_autofree char *path = g_build_filename (dir, "gimp_ddpm.json", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  GStatBuf st;
  if (g_stat (path, &st) != 0 || st.st_size > GIMP_DDPM_JSON_MAX_BYTES || !g_file_get_contents (path, &text, &len, NULL)
      || len > GIMP_DDPM_JSON_MAX_BYTES || !json_text_is_shallow (text, len))
    return TRUE;
  g_autoptr (JsonParser) parser = json_parser_new ();
  if (!json_parser_load_from_data (parser, text, len, NULL))
    return TRUE;
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return TRUE;
  const char *alpha = json_object_get_string_member_with_default (json_node_get_object (root), "alpha", "");
  return g_strcmp0 (alpha, "straight") != 0;
}
