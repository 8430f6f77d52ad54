/* args.c: the arguments the three procedures share, declared once so that Script-Fu sees the same names,
 * ranges and choice nicks everywhere (#:model, #:sampler "ddim", #:steps, #:eta, #:seed, #:random-seed,
 * #:device "cpu", #:precision "fp32", #:tune TRUE). */
#include "plugin.h"

#include <string.h>

void
ddpm_args_add_model (GimpProcedure *procedure, const char *default_model)
{
  gimp_procedure_add_string_argument (procedure, "model", "Mo_del",
                                      "Diffusion model: a diffusers UNet2DModel folder (config.json + "
                                      "diffusion_pytorch_model.safetensors or .bin) or a pipeline folder "
                                      "(unet/ + scheduler/), a file inside one, or the name of a folder in "
                                      "~/.local/share/gimp-ddpm/models or the installed models folder",
                                      default_model, G_PARAM_READWRITE);
}

void
ddpm_args_add_sampler (GimpProcedure *procedure, const char *default_sampler)
{
  gimp_procedure_add_choice_argument (procedure, "sampler", "Sa_mpler", "Reverse-diffusion sampler",
                                      gimp_choice_new_with_values (
                                        "ddim", DDPM_SAMPLER_DDIM, "DDIM", "Deterministic for eta 0; few steps suffice",
                                        "ddpm", DDPM_SAMPLER_DDPM, "DDPM", "Ancestral sampling; wants many steps",
                                        NULL),
                                      default_sampler, G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (procedure, "steps", "S_teps",
                                   "Inference steps over the whole schedule (at most the model's training "
                                   "timesteps, usually 1000)",
                                   1, 10000, 250, G_PARAM_READWRITE);
  gimp_procedure_add_double_argument (procedure, "eta", "Et_a",
                                      "DDIM only: 0 is deterministic, 1 adds as much noise per step as DDPM",
                                      0.0, 1.0, 0.0, G_PARAM_READWRITE);
}

void
ddpm_args_add_seed (GimpProcedure *procedure)
{
  gimp_procedure_add_int_argument (procedure, "seed", "S_eed", "Random seed (the same seed gives the same pixels)",
                                   0, G_MAXINT, 0, G_PARAM_READWRITE);
  gimp_procedure_add_boolean_argument (procedure, "random-seed", "Ra_ndom seed",
                                       "Ignore seed and draw a new one; the seed used is returned", FALSE,
                                       G_PARAM_READWRITE);
  gimp_procedure_add_int_return_value (procedure, "seed", "Seed", "The seed that was used", 0, G_MAXINT, 0,
                                       G_PARAM_READWRITE);
}

void
ddpm_args_add_device (GimpProcedure *procedure)
{
  gimp_procedure_add_choice_argument (procedure, "device", "Dev_ice", "Where the model runs",
                                      gimp_choice_new_with_values (
                                        "auto", DDPM_DEVICE_AUTO, "Automatic",
                                        "The GPU when there is one, else the CPU",
                                        "cpu", DDPM_DEVICE_CPU, "CPU", NULL,
                                        "cuda", DDPM_DEVICE_CUDA, "GPU (CUDA)", NULL,
                                        NULL),
                                      "auto", G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (procedure, "precision", "_Precision",
                                      "Arithmetic of the model (the CPU computes in fp32 only)",
                                      gimp_choice_new_with_values (
                                        "auto", DDPM_PRECISION_DEFAULT, "Automatic", "The device's default",
                                        "fp32", DDPM_PRECISION_FP32, "32-bit float", NULL,
                                        "fp16", DDPM_PRECISION_FP16, "16-bit float (GPU)", NULL,
                                        "bf16", DDPM_PRECISION_BF16, "bfloat16 (GPU)", NULL,
                                        NULL),
                                      "auto", G_PARAM_READWRITE);
  gimp_procedure_add_boolean_argument (procedure, "tune", "T_une for this GPU",
                                       "At the first run of each image size, time the GPU's alternative kernels "
                                       "and keep the fastest whose output agrees with the defaults' (seconds, "
                                       "once: the choice is remembered in ~/.cache/gimp-ddpm/tuning.ini). No "
                                       "effect on the CPU",
                                       FALSE, G_PARAM_READWRITE);
}

static gboolean
has_arg (GimpProcedureConfig *config, const char *name)
{
  return g_object_class_find_property (G_OBJECT_GET_CLASS (config), name) != NULL;
}

void
ddpm_args_read (GimpProcedureConfig *config, DdpmCommonArgs *args)
{
  memset (args, 0, sizeof *args);
  args->sampler = DDPM_SAMPLER_DDIM;
  args->steps = 50;
  args->device = DDPM_DEVICE_AUTO;
  args->precision = DDPM_PRECISION_DEFAULT;
  if (has_arg (config, "model"))
    g_object_get (config, "model", &args->model, NULL);
  if (has_arg (config, "sampler"))
    {
      args->sampler = gimp_procedure_config_get_choice_id (config, "sampler");
      g_object_get (config, "steps", &args->steps, "eta", &args->eta, NULL);
    }
  if (has_arg (config, "seed"))
    {
      int seed = 0;
      gboolean random_seed = FALSE;
      g_object_get (config, "seed", &seed, "random-seed", &random_seed, NULL);
      /* Drawn below G_MAXINT so that the seed used fits the int argument and can be given back. */
      args->seed = random_seed ? (uint32_t) g_random_int_range (0, G_MAXINT) : (uint32_t) seed;
    }
  if (has_arg (config, "device"))
    {
      args->device = gimp_procedure_config_get_choice_id (config, "device");
      args->precision = gimp_procedure_config_get_choice_id (config, "precision");
      g_object_get (config, "tune", &args->tune, NULL);
    }
}

void
ddpm_args_clear (DdpmCommonArgs *args)
{
  g_clear_pointer (&args->model, g_free);
}

gboolean
ddpm_args_check (const DdpmCommonArgs *args, const DdpmModel *model, GError **error)
{
  int n = ddpm_model_num_train_timesteps (model);
  if (args->steps > n)
    {
      g_set_error (error, DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING,
                   "argument \"steps\" is %d but the model was trained with %d timesteps: use at most %d",
                   args->steps, n, n);
      return FALSE;
    }
  return TRUE;
}

GimpDrawable *
ddpm_args_single_drawable (GimpDrawable **drawables, GError **error)
{
  if (drawables == NULL || drawables[0] == NULL || drawables[1] != NULL)
    {
      g_set_error (error, DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING,
                   "argument \"drawables\": give exactly one drawable");
      return NULL;
    }
  if (gimp_item_is_group (GIMP_ITEM (drawables[0])))
    {
      g_set_error (error, DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING,
                   "argument \"drawables\": a layer group has no pixels of its own; choose a layer");
      return NULL;
    }
  return drawables[0];
}
