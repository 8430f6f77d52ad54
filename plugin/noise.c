/* noise.c: plug-in-ddpm-noise, the forward diffusion q(x_t | x_0) of the selection (or the whole drawable):
 *
 *   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z,    z ~ N(0, 1) from the seeded Philox stream,
 *
 * with x in model units ([-1, 1] = [0, 255]) and abar_t the model's cumulative alpha at training timestep t.
 * In 8-bit pixel units the signal is scaled by sqrt(abar_t) towards mid-gray and the noise has standard
 * deviation sigma_px = 127.5 sqrt(1 - abar_t); relative to the scaled signal that is
 * 127.5 sqrt((1 - abar_t) / abar_t), the sigma that Denoise's "already noisy" mode asks for.
 * Only the schedule of the model is used (no UNet). Alpha is kept; the result goes through the shadow
 * buffer, so feathered selections blend. Float images keep values outside [0, 1] (the exact x_t, which
 * Denoise's "diffusion-xt" mode takes back); integer images clip them. */
#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>
#include <math.h>

#include "models.h"
#include "param_dialog.h"
#include "pixels.h"
#include "plugin.h"

#define MAX_TIMESTEP 9999  /* the argument's range; the model's own count is checked at run time */

/* Text for the dialog: what t means for this model. */
static char *
noise_explain_t (const DdpmModel *model, int t)
{
  int n = ddpm_model_num_train_timesteps (model);
  if (t >= n)
    return g_strdup_printf ("<b>t must be below %d</b> (the model's training timesteps).", n);
  double abar = ddpm_model_alpha_bar (model, t);
  double keep = sqrt (abar), noise = sqrt (1.0 - abar);
  return g_strdup_printf ("At t = %d of %d: the picture keeps <b>%.1f%%</b> of its contrast "
                          "(√ᾱ<sub>t</sub> = %.4f) and gets noise of σ = <b>%.1f</b> in 0…255 pixel units "
                          "(√(1−ᾱ<sub>t</sub>) = %.4f).\n"
                          "Relative to the kept signal the noise is σ/√ᾱ<sub>t</sub> = %.1f px (the σ of "
                          "Denoise’s “already noisy” mode). To take this step back, use Denoise in "
                          "“diffusion x<sub>t</sub>” mode with t = %d.",
                          t, n, 100.0 * keep, keep, 127.5 * noise, noise, 127.5 * noise / keep, t);
}

static char *
noise_explain (GimpProcedureConfig *config, gpointer data)
{
  DdpmModelCache *cache = data;
  g_autofree char *arg = NULL;
  int t = 0;
  g_object_get (config, "model", &arg, "timestep", &t, NULL);
  const char *message = NULL;
  DdpmModel *model = ddpm_model_cache_get (cache, arg, &message);
  if (model == NULL)
    return g_markup_printf_escaped ("<b>Model not usable:</b> %s", message);
  return noise_explain_t (model, t);
}

/* Reads, noises and writes the bounding box of the selection (main thread; fast: no UNet). */
static gboolean
noise_drawable (GimpDrawable *drawable, const DdpmModel *model, int t, uint32_t seed, GError **error)
{
  int x, y, w, h;
  if (!gimp_drawable_mask_intersect (drawable, &x, &y, &w, &h))
    return TRUE;  /* the selection misses this drawable: nothing to do */
  DdpmPixelMap map;
  if (!ddpm_pixel_map_init (&map, gimp_drawable_is_gray (drawable) ? 1 : 3, FALSE, gimp_drawable_has_alpha (drawable),
                            error))
    return FALSE;
  const size_t n = (size_t) w * h * map.channels;
  g_autofree float *x0 = ddpm_pixels_alloc (n, "the selection", error);
  g_autofree float *xt = x0 != NULL ? ddpm_pixels_alloc (n, "the noisy selection", error) : NULL;
  g_autofree float *alpha = xt != NULL && map.keep_alpha ? ddpm_pixels_alloc ((size_t) w * h, "the alpha", error)
                                                        : NULL;
  if (xt == NULL || (map.keep_alpha && alpha == NULL))
    return FALSE;

  GeglRectangle rect = { x, y, w, h };
  GeglBuffer *src = gimp_drawable_get_buffer (drawable);
  gboolean ok = ddpm_pixels_read (src, &rect, &map, x0, alpha, error);
  g_object_unref (src);
  if (!ok)
    return FALSE;
  ddpm_add_noise (model, t, seed, x0, xt, 1, n);

  GeglBuffer *shadow = gimp_drawable_get_shadow_buffer (drawable);
  ok = ddpm_pixels_write (shadow, &rect, &map, xt, alpha, FALSE, error);
  gegl_buffer_flush (shadow);
  g_object_unref (shadow);
  if (!ok)
    {
      gimp_drawable_free_shadow (drawable);
      return FALSE;
    }
  gimp_drawable_merge_shadow (drawable, TRUE);
  gimp_drawable_update (drawable, x, y, w, h);
  return TRUE;
}

static GimpValueArray *
noise_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image, GimpDrawable **drawables,
           GimpProcedureConfig *config, gpointer run_data)
{
  gegl_init (NULL, NULL);
  GError *drawable_error = NULL;
  GimpDrawable *drawable = ddpm_args_single_drawable (drawables, &drawable_error);
  if (drawable == NULL)
    return ddpm_return_error (procedure, drawable_error);
  g_auto (DdpmModelCache) cache = { 0 };

  if (run_mode == GIMP_RUN_INTERACTIVE)
    {
      g_auto (GStrv) models = ddpm_models_list ();
      static const char *const noise[] = { "timestep", "seed", "random-seed", NULL };
      static const DdpmDialogGroup groups[] = { { "Forward Diffusion", noise }, { NULL, NULL } };
      static const DdpmDialogRule rules[] = { { "seed", "random-seed", NULL }, { NULL, NULL, NULL } };
      DdpmDialogSpec spec = { "Noise to Step t", groups, rules, (const char *const *) models, noise_explain,
                              &cache };
      if (!ddpm_param_dialog_run (procedure, config, &spec))
        return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);
    }

  DdpmCommonArgs args;
  ddpm_args_read (config, &args);
  int t = 0;
  g_object_get (config, "timestep", &t, NULL);

  GError *error = NULL;
  g_autoptr (DdpmModel) model = ddpm_model_cache_take (&cache, args.model);
  if (model == NULL)
    model = ddpm_models_load (args.model, &error);
  if (model == NULL)
    {
      ddpm_args_clear (&args);
      return ddpm_return_error (procedure, error);
    }
  int n = ddpm_model_num_train_timesteps (model);
  if (t >= n)
    {
      ddpm_args_clear (&args);
      return ddpm_return_error (procedure, g_error_new (DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING,
                                                        "argument \"timestep\" is %d but the model has timesteps "
                                                        "0 to %d", t, n - 1));
    }

  gimp_image_undo_group_start (image);
  gboolean ok = noise_drawable (drawable, model, t, args.seed, &error);
  gimp_image_undo_group_end (image);
  uint32_t seed = args.seed;
  ddpm_args_clear (&args);
  if (!ok)
    return ddpm_return_error (procedure, error);
  if (run_mode != GIMP_RUN_NONINTERACTIVE)
    gimp_displays_flush ();

  GimpValueArray *ret = gimp_procedure_new_return_values (procedure, GIMP_PDB_SUCCESS, NULL);
  GIMP_VALUES_SET_INT (ret, 1, (int) seed);
  return ret;
}

GimpProcedure *
ddpm_noise_procedure_new (GimpPlugIn *plug_in)
{
  GimpProcedure *p = gimp_image_procedure_new (plug_in, DDPM_PROC_NOISE, GIMP_PDB_PROC_TYPE_PLUGIN, noise_run,
                                               NULL, NULL);
  gimp_procedure_set_image_types (p, "RGB*, GRAY*");
  gimp_procedure_set_sensitivity_mask (p, GIMP_PROCEDURE_SENSITIVE_DRAWABLE);
  gimp_procedure_set_menu_label (p, "_Noise to Step t…");
  gimp_procedure_add_menu_path (p, DDPM_MENU_PATH);
  gimp_procedure_set_documentation (
    p, "Forward diffusion: noise the selection to timestep t",
    "Replaces the selection x by sqrt(abar_t) x + sqrt(1 - abar_t) z (x in [-1, 1], z seeded Gaussian noise), "
    "the diffusion model's forward process at training timestep t. The model only supplies its noise "
    "schedule abar_t.",
    NULL);
  gimp_procedure_set_attribution (p, "gimp-ddpm authors", "gimp-ddpm authors", "2026");

  ddpm_args_add_model (p, DDPM_DEFAULT_MODEL);
  gimp_procedure_add_int_argument (p, "timestep", "_Timestep t",
                                   "Training timestep to noise to (0 to the model's timesteps - 1; larger is "
                                   "noisier)", 0, MAX_TIMESTEP, 100, G_PARAM_READWRITE);
  ddpm_args_add_seed (p);
  return p;
}
