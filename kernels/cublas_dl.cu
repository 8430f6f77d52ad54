/* cublas_dl.cu: finds libcublas at run time (see cublas_dl.h for why). */
#include "cublas_dl.h"

#include <dlfcn.h>
#include <string.h>

static void *
open_first (char **path_out, GString *tried)
{
  const char *env = g_getenv ("DDPM_CUBLAS");
  const char *names[] = { env, "libcublas.so.13", "libcublas.so" };
  for (size_t i = 0; i < G_N_ELEMENTS (names); i++)
    {
      if (names[i] == NULL || names[i][0] == '\0')
        continue;
      void *h = dlopen (names[i], RTLD_NOW | RTLD_LOCAL);
      if (h != NULL)
        {
          *path_out = g_strdup (names[i]);
          return h;
        }
      g_string_append_printf (tried, "%s%s", tried->len ? "; " : "", dlerror ());
    }
  return NULL;
}

gboolean
ddpm_cublas_load (DdpmCublas *b, char **reason)
{
  memset (b, 0, sizeof *b);
  GString *tried = g_string_new (NULL);
  b->library = open_first (&b->path, tried);
  if (b->library == NULL)
    {
      *reason = g_strdup_printf ("libcublas.so.13 not found (set DDPM_CUBLAS or LD_LIBRARY_PATH): %s", tried->str);
      g_string_free (tried, TRUE);
      return FALSE;
    }
  g_string_free (tried, TRUE);
  struct {
    const char *name;
    void **slot;
    gboolean required;
  } syms[] = {
    { "cublasCreate_v2", (void **) &b->create, TRUE },
    { "cublasDestroy_v2", (void **) &b->destroy, TRUE },
    { "cublasSetStream_v2", (void **) &b->set_stream, TRUE },
    { "cublasSetMathMode", (void **) &b->set_math_mode, TRUE },
    { "cublasSetWorkspace_v2", (void **) &b->set_workspace, TRUE },
    { "cublasGetStatusString", (void **) &b->status_string, FALSE },
    { "cublasGemmEx", (void **) &b->gemm_ex, TRUE },
    { "cublasGemmStridedBatchedEx", (void **) &b->gemm_strided_batched_ex, TRUE },
  };
  for (size_t i = 0; i < G_N_ELEMENTS (syms); i++)
    {
      *syms[i].slot = dlsym (b->library, syms[i].name);
      if (*syms[i].slot == NULL && syms[i].required)
        {
          *reason = g_strdup_printf ("%s lacks %s", b->path, syms[i].name);
          ddpm_cublas_unload (b);
          return FALSE;
        }
    }
  return TRUE;
}

/* The library stays loaded: cuBLAS registers process-exit handlers, and unloading CUDA libraries before exit
 * is a known source of crashes. dlopen counts references, so a later load costs nothing. */
void
ddpm_cublas_unload (DdpmCublas *b)
{
  g_free (b->path);
  memset (b, 0, sizeof *b);
}
