/* plugin.c: the gimp-ddpm plug-in object: lists and creates the three procedures under
 * Filters > Diffusion (the procedures themselves live in generate.c, noise.c, denoise.c). */
#include "plugin.h"

#include <stdlib.h>
#include <unistd.h>

#define DDPM_TYPE_PLUGIN (ddpm_plugin_get_type ())
G_DECLARE_FINAL_TYPE (DdpmPlugin, ddpm_plugin, DDPM, PLUGIN, GimpPlugIn)

struct _DdpmPlugin {
  GimpPlugIn parent_instance;
};

G_DEFINE_TYPE (DdpmPlugin, ddpm_plugin, GIMP_TYPE_PLUG_IN)

static GList *
ddpm_plugin_query_procedures (GimpPlugIn *plug_in)
{
  GList *list = NULL;
  list = g_list_append (list, g_strdup (DDPM_PROC_GENERATE));
  list = g_list_append (list, g_strdup (DDPM_PROC_NOISE));
  list = g_list_append (list, g_strdup (DDPM_PROC_DENOISE));
  return list;
}

static GimpProcedure *
ddpm_plugin_create_procedure (GimpPlugIn *plug_in, const gchar *name)
{
  if (g_strcmp0 (name, DDPM_PROC_GENERATE) == 0)
    return ddpm_generate_procedure_new (plug_in);
  if (g_strcmp0 (name, DDPM_PROC_NOISE) == 0)
    return ddpm_noise_procedure_new (plug_in);
  if (g_strcmp0 (name, DDPM_PROC_DENOISE) == 0)
    return ddpm_denoise_procedure_new (plug_in);
  return NULL;
}

/* No translations yet: returning FALSE keeps GIMP from warning about a missing catalog on every run. */
static gboolean
ddpm_plugin_set_i18n (GimpPlugIn *plug_in, const gchar *procedure_name, gchar **gettext_domain,
                      gchar **catalog_dir)
{
  return FALSE;
}

static void
ddpm_plugin_class_init (DdpmPluginClass *klass)
{
  GimpPlugInClass *plug_in_class = GIMP_PLUG_IN_CLASS (klass);
  plug_in_class->query_procedures = ddpm_plugin_query_procedures;
  plug_in_class->create_procedure = ddpm_plugin_create_procedure;
  plug_in_class->set_i18n = ddpm_plugin_set_i18n;
}

static void
ddpm_plugin_init (DdpmPlugin *self)
{
}

/* The CPU backend threads with OpenMP, whose threads by default spin between parallel regions. The
 * plug-in shares the CPUs with GIMP's own process and with its main thread (progress dialog, preview):
 * spinning threads starve them, and with as many threads as cores a 16x16 step took 0.45 s instead of
 * 3 ms on a busy 2-core machine. libgomp reads OMP_WAIT_POLICY once, when it loads (before main), so we
 * set it and start this executable again once (GIMP's pipe descriptors survive exec). A user's own
 * setting wins. */
static void
ensure_passive_openmp (char *argv[])
{
  if (getenv ("OMP_WAIT_POLICY") != NULL)
    return;
  setenv ("OMP_WAIT_POLICY", "passive", 1);
  execv ("/proc/self/exe", argv);
  /* exec failed (no /proc): carry on with spinning threads. */
}

int
main (int argc, char *argv[])
{
  ensure_passive_openmp (argv);
  return gimp_main (DDPM_TYPE_PLUGIN, argc, argv);
}
