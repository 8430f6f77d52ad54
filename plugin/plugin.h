/* plugin.h: what the three procedures of gimp-ddpm share: their names, the arguments they have in common
 * (model, sampler, steps, eta, seed, device, precision), and turning engine errors into GIMP errors.
 *
 * Every function here runs on the plug-in's main thread (libgimp is not thread-safe); only job.c starts a
 * worker thread, and the worker never calls libgimp. */
#pragma once

#include <libgimp/gimp.h>

#include "ddpm.h"

G_BEGIN_DECLS

#define DDPM_PROC_GENERATE "plug-in-ddpm-generate"
#define DDPM_PROC_NOISE "plug-in-ddpm-noise"
#define DDPM_PROC_DENOISE "plug-in-ddpm-denoise"
#define DDPM_MENU_PATH "<Image>/Filters/Diffusion"
#define DDPM_DEFAULT_MODEL "emoji-32"          /* Generate, Noise; and for an empty "model" */
#define DDPM_DEFAULT_DENOISE_MODEL "photo-64" /* the photo prior (weights/photo-64/MODEL_CARD.md) */

/* Errors raised by the plug-in itself. CALLING marks a bad argument (GIMP_PDB_CALLING_ERROR: exit 64 in
 * batch mode); every other failure is an execution error (exit 70). */
#define DDPM_PLUGIN_ERROR (ddpm_plugin_error_quark ())
GQuark ddpm_plugin_error_quark (void);
typedef enum { DDPM_PLUGIN_ERROR_CALLING, DDPM_PLUGIN_ERROR_EXECUTION } DdpmPluginErrorCode;

/* ---- procedures (generate.c, noise.c, denoise.c) ------------------------------------------------ */

GimpProcedure *ddpm_generate_procedure_new (GimpPlugIn *plug_in);
GimpProcedure *ddpm_noise_procedure_new (GimpPlugIn *plug_in);
GimpProcedure *ddpm_denoise_procedure_new (GimpPlugIn *plug_in);

/* ---- shared arguments (args.c) ------------------------------------------------------------------- */

/* "model": a folder path, a file inside it, or the name of a folder in the model search path. */
void ddpm_args_add_model (GimpProcedure *procedure, const char *default_model);
/* "sampler" (ddpm/ddim, default_sampler by its nick), "steps", "eta". */
void ddpm_args_add_sampler (GimpProcedure *procedure, const char *default_sampler);
/* "seed" and "random-seed"; the seed used comes back as the return value "seed". */
void ddpm_args_add_seed (GimpProcedure *procedure);
/* The one drawable (not a layer group) a filter works on, or NULL with a calling error naming "drawables". */
GimpDrawable *ddpm_args_single_drawable (GimpDrawable **drawables, GError **error);
/* "device" (auto/cpu/cuda), "precision" (auto/fp32/fp16/bf16) and "tune" (the engine's tuning, cached). */
void ddpm_args_add_device (GimpProcedure *procedure);

typedef struct {
  char *model;                 /* as given */
  DdpmSamplerKind sampler;
  int steps;
  double eta;
  uint32_t seed;               /* the seed to use (random-seed already resolved) */
  DdpmDevice device;
  DdpmPrecision precision;
  gboolean tune;               /* time the GPU backend's variants at each new size (ddpm_context_set_tuning) */
} DdpmCommonArgs;

/* Reads whatever of the shared arguments the procedure has; draws the seed when random-seed is TRUE. */
void ddpm_args_read (GimpProcedureConfig *config, DdpmCommonArgs *args);
void ddpm_args_clear (DdpmCommonArgs *args);
/* Checks the arguments that depend on the model (steps against its training timesteps): a calling error
 * naming the argument. */
gboolean ddpm_args_check (const DdpmCommonArgs *args, const DdpmModel *model, GError **error);

/* ---- results and errors (errors.c) --------------------------------------------------------------- */

/* The return values of a failed run: CANCELLED -> GIMP_PDB_CANCEL, DDPM_PLUGIN_ERROR_CALLING ->
 * GIMP_PDB_CALLING_ERROR, anything else -> GIMP_PDB_EXECUTION_ERROR with a message that says what
 * happened and what to do. Takes ownership of error. */
GimpValueArray *ddpm_return_error (GimpProcedure *procedure, GError *error);
/* Adds advice ("choose device cpu", "use a smaller selection", ...) to an engine error's message. */
void ddpm_error_add_advice (GError *error);

G_END_DECLS
