/* backend_cuda_loader.c: ddpm_backend_cuda_new finds the CUDA backend module (libddpm-cuda.so), dlopens
 * it and calls its create function (DDPM_CUDA_CREATE_SYMBOL).
 *
 * Why a module: the engine (and the GIMP plug-in) must start on machines without the NVIDIA driver or the
 * CUDA runtime; only this module links CUDA. Every way it can be unavailable comes back as
 * DDPM_ERROR_DEVICE with the reason (module not built or not found, module not loadable, no driver, no
 * device), and `--device auto` falls back to the CPU on that error (context.c).
 *
 * Where it is looked for, first hit wins:
 * 1. $DDPM_CUDA_MODULE (a file; when set, nothing else is tried);
 * 2. next to the executable, and ../kernels/ and ../../kernels/ from it (the build tree: cli/ddpm,
 *    tests/gpu/test_cuda_ops);
 * 3. DDPM_CUDA_MODULE_DIR (the install location, from engine/meson.build);
 * 4. the library search path (plain dlopen of the name). */
#include "backend.h"

#include <dlfcn.h>
#include <glib/gstdio.h>
#include <string.h>

#define DDPM_CUDA_MODULE_NAME "libddpm-cuda.so"

#ifndef DDPM_CUDA_MODULE_DIR
#define DDPM_CUDA_MODULE_DIR "/usr/local/lib/gimp-ddpm"
#endif

/* dlopens path; on failure appends "path: reason" to tried and returns NULL. A path with a '/' that does
 * not exist is noted as such (dlerror's text for it is long and says the same). */
static void *
try_open (const char *path, GString *tried)
{
  if (strchr (path, '/') != NULL && !g_file_test (path, G_FILE_TEST_EXISTS))
    {
      g_string_append_printf (tried, "%s%s (absent)", tried->len ? ", " : "", path);
      return NULL;
    }
  void *handle = dlopen (path, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL)
    {
      const char *why = dlerror ();
      g_string_append_printf (tried, "%s%s (%s)", tried->len ? ", " : "", path, why ? why : "dlopen failed");
    }
  return handle;
}

static void *
open_module (GString *tried)
{
  const char *env = g_getenv ("DDPM_CUDA_MODULE");
  if (env != NULL && env[0] != '\0')
    return try_open (env, tried);

  void *handle = NULL;
  g_autofree char *exe = g_file_read_link ("/proc/self/exe", NULL);
  if (exe != NULL)
    {
      g_autofree char *dir = g_path_get_dirname (exe);
      const char *rel[] = { ".", "../kernels", "../../kernels" };
      for (size_t i = 0; i < G_N_ELEMENTS (rel) && handle == NULL; i++)
        {
          g_autofree char *path = g_build_filename (dir, rel[i], DDPM_CUDA_MODULE_NAME, NULL);
          handle = try_open (path, tried);
        }
    }
  if (handle == NULL)
    {
      g_autofree char *path = g_build_filename (DDPM_CUDA_MODULE_DIR, DDPM_CUDA_MODULE_NAME, NULL);
      handle = try_open (path, tried);
    }
  if (handle == NULL)
    handle = try_open (DDPM_CUDA_MODULE_NAME, tried);
  return handle;
}

DdpmBackend *
ddpm_backend_cuda_new (DdpmPrecision precision, GError **error)
{
  g_autoptr (GString) tried = g_string_new (NULL);
  void *module = open_module (tried);
  if (module == NULL)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE,
                   "the CUDA backend module %s could not be loaded (tried %s); it is built when nvcc is found "
                   "(meson -Dcuda=enabled), or point DDPM_CUDA_MODULE at it",
                   DDPM_CUDA_MODULE_NAME, tried->str);
      return NULL;
    }
  /* The module stays loaded for the life of the process: backends created by it run its code, and CUDA
   * libraries do not unload cleanly. */
  DdpmCudaCreateFunc create = (DdpmCudaCreateFunc) dlsym (module, DDPM_CUDA_CREATE_SYMBOL);
  if (create == NULL)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_DEVICE, "the CUDA backend module has no %s (a stale or foreign %s?)",
                   DDPM_CUDA_CREATE_SYMBOL, DDPM_CUDA_MODULE_NAME);
      return NULL;
    }
  GError *local = NULL;
  DdpmBackend *be = create (precision, &local);
  if (be == NULL)
    {
      if (local == NULL)
        g_set_error (&local, DDPM_ERROR, DDPM_ERROR_DEVICE, "the CUDA backend failed to start (no reason given)");
      g_propagate_prefixed_error (error, local, "CUDA: ");
      return NULL;
    }
  /* which build of the module runs (a tuning decision holds for one build): its file's size and time */
  Dl_info info;
  GStatBuf st;
  if (dladdr ((void *) create, &info) != 0 && info.dli_fname != NULL && g_stat (info.dli_fname, &st) == 0)
    g_snprintf (be->build_id, sizeof be->build_id, "%lld-%lld", (long long) st.st_size, (long long) st.st_mtime);
  return be;
}
