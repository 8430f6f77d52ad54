/* errors.c: failed runs as GIMP return values. The message says what happened (the engine's message names
 * the file, tensor, field or limit) and what to do about it. */
#include "plugin.h"

G_DEFINE_QUARK (ddpm-plugin-error-quark, ddpm_plugin_error)

void
ddpm_error_add_advice (GError *error)
{
  if (error == NULL || error->domain != DDPM_ERROR)
    return;
  const char *advice = NULL;
  switch ((DdpmErrorCode) error->code)
    {
    case DDPM_ERROR_IO:
    case DDPM_ERROR_FORMAT:
    case DDPM_ERROR_SHAPE:
      advice = "Choose a diffusers UNet2DModel folder (config.json and diffusion_pytorch_model.safetensors "
               "or .bin, with scheduler_config.json) that is complete and readable.";
      break;
    case DDPM_ERROR_UNSUPPORTED:
      advice = "This model uses a feature gimp-ddpm does not implement; choose another model.";
      break;
    case DDPM_ERROR_LIMIT:
    case DDPM_ERROR_NOMEM:
      advice = "Use a smaller size or selection, fewer variations, a smaller model, or (on a GPU) "
               "precision fp16.";
      break;
    case DDPM_ERROR_DEVICE:
      advice = "Choose device \"cpu\", or check the GPU driver.";
      break;
    case DDPM_ERROR_NUMERIC:
      advice = "Use precision fp32 (or bf16), or another model.";
      break;
    case DDPM_ERROR_ARGUMENT:
      advice = "Change the argument named above.";
      break;
    case DDPM_ERROR_CANCELLED:
      break;
    }
  if (advice != NULL && !g_str_has_suffix (error->message, advice))
    {
      char *message = g_strdup_printf ("%s\n%s", error->message, advice);
      g_free (error->message);
      error->message = message;
    }
}

GimpValueArray *
ddpm_return_error (GimpProcedure *procedure, GError *error)
{
  if (g_error_matches (error, DDPM_ERROR, DDPM_ERROR_CANCELLED))
    {
      g_error_free (error);
      return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);
    }
  GimpPDBStatusType status = g_error_matches (error, DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING)
                               ? GIMP_PDB_CALLING_ERROR
                               : GIMP_PDB_EXECUTION_ERROR;
  ddpm_error_add_advice (error);
  /* GIMP shows (or, in batch mode, prints) the message of the GError it gets with the status. */
  GError *gimp_error = g_error_new (GIMP_PLUG_IN_ERROR, 0, "%s: %s",
                                    gimp_procedure_get_name (procedure), error->message);
  g_error_free (error);
  return gimp_procedure_new_return_values (procedure, status, gimp_error);
}
