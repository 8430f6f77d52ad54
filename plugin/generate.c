/* generate.c: plug-in-ddpm-generate, new pictures from noise.
 *
 * Each variation v is sampled with seed + v (the engine's batch convention, so variation v equals a run
 * with that seed) and becomes its own layer named after its seed, in a new image (returned) or on top of
 * the current image. Width and height default to the model's sample_size; other sizes must be multiples
 * of the model's size multiple and are sampled at that size directly (the UNet is convolutional). */
#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "job.h"
#include "models.h"
#include "param_dialog.h"
#include "pixels.h"
#include "plugin.h"

enum { OUTPUT_NEW_IMAGE, OUTPUT_NEW_LAYERS };

#define MAX_SIDE 4096      /* pixels: far beyond what the CPU can sample in reasonable time */
#define MAX_VARIATIONS 64

typedef struct {
  DdpmCommonArgs args;
  int variations;
  int width, height;       /* as asked (0: the model's sample_size) */
  DdpmModel *model;        /* taken from the dialog's cache, or loaded by the worker */
  /* results (worker) */
  int channels, W, H;
  gboolean premultiplied;  /* 4-channel model: colour premultiplied by alpha */
  float **samples;         /* (variations) of (channels, H, W) in model range */
  char *device;            /* the context's device name */
} GenerateJob;

static gboolean
generate_work (DdpmJob *job, gpointer data, GError **error)
{
  GenerateJob *g = data;
  if (g->model == NULL)
    {
      ddpm_job_set_status (job, "Loading the model…");
      if ((g->model = ddpm_models_load (g->args.model, error)) == NULL)
        return FALSE;
    }
  if (!ddpm_args_check (&g->args, g->model, error))
    return FALSE;
  const int m = ddpm_model_size_multiple (g->model), native = ddpm_model_sample_size (g->model);
  g->W = g->width > 0 ? g->width : native;
  g->H = g->height > 0 ? g->height : native;
  const char *which[2] = { "width", "height" };
  int dims[2] = { g->W, g->H };
  for (int k = 0; k < 2; k++)
    {
      if (dims[k] <= 0)
        {
          g_set_error (error, DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING,
                       "argument \"%s\" is 0 but the model has no sample_size: give a %s (a multiple of %d)",
                       which[k], which[k], m);
          return FALSE;
        }
      if (dims[k] % m != 0)
        {
          g_set_error (error, DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING,
                       "argument \"%s\" is %d, not a multiple of %d (what this model's UNet needs): use %d or %d",
                       which[k], dims[k], m, dims[k] / m * m > 0 ? dims[k] / m * m : m, (dims[k] / m + 1) * m);
          return FALSE;
        }
    }
  g->channels = ddpm_model_in_channels (g->model);
  DdpmPixelMap map;
  if (!ddpm_pixel_map_init (&map, g->channels, TRUE, FALSE, error))
    return FALSE;
  g->premultiplied = ddpm_models_premultiplied (g->args.model);

  ddpm_job_set_status (job, "Preparing the device…");
  DdpmContext *ctx = ddpm_job_open_context (job, g->model, g->args.device, g->args.precision, g->args.tune, error);
  if (ctx == NULL)
    return FALSE;
  g->device = g_strdup (ddpm_context_device_name (ctx));
  g_autofree char *detail = g_strdup_printf ("%d×%d, %s %d steps, seed %u, on %s", g->W, g->H,
                                             g->args.sampler == DDPM_SAMPLER_DDIM ? "DDIM" : "DDPM",
                                             g->args.steps, g->args.seed, g->device);
  ddpm_job_set_detail (job, detail);

  const size_t n = (size_t) g->channels * g->H * g->W;
  g->samples = g_new0 (float *, g->variations);
  gboolean ok = TRUE;
  for (int v = 0; v < g->variations && ok; v++)
    {
      if ((g->samples[v] = ddpm_pixels_alloc (n, "a generated picture", error)) == NULL)
        {
          ok = FALSE;
          break;
        }
      DdpmSampleParams p;
      ddpm_sample_params_init (&p);
      p.sampler = g->args.sampler;
      p.num_steps = g->args.steps;
      p.eta = g->args.eta;
      p.seed = (uint64_t) g->args.seed + v;
      p.height = g->H;
      p.width = g->W;
      ddpm_job_set_part (job, v, g->variations, "variation", g->channels, g->H, g->W);
      ok = ddpm_sample (ctx, &p, g->samples[v], error);
    }
  ddpm_job_close_context (job, ctx);
  return ok;
}

static void
generate_job_clear (GenerateJob *g)
{
  for (int v = 0; g->samples != NULL && v < g->variations; v++)
    g_free (g->samples[v]);
  g_free (g->samples);
  g_free (g->device);
  g_clear_pointer (&g->model, ddpm_model_free);
  ddpm_args_clear (&g->args);
}

/* The worker's samples as layers of image (main thread). Layers go on top, the first variation last so
 * that it ends up topmost. */
static gboolean
insert_layers (GenerateJob *g, GimpImage *image, GError **error)
{
  gboolean gray = gimp_image_get_base_type (image) == GIMP_GRAY;
  gboolean alpha = g->channels == 4;
  GimpImageType type = gray ? (alpha ? GIMP_GRAYA_IMAGE : GIMP_GRAY_IMAGE) : (alpha ? GIMP_RGBA_IMAGE : GIMP_RGB_IMAGE);
  DdpmPixelMap map;
  if (!ddpm_pixel_map_init (&map, g->channels, g->premultiplied, FALSE, error))
    return FALSE;
  for (int v = g->variations - 1; v >= 0; v--)
    {
      g_autofree char *name = g_strdup_printf ("seed %" G_GUINT64_FORMAT, (guint64) g->args.seed + v);
      GimpLayer *layer = gimp_layer_new (image, name, g->W, g->H, type, 100.0, GIMP_LAYER_MODE_NORMAL);
      if (layer == NULL || !gimp_image_insert_layer (image, layer, NULL, 0))
        {
          g_set_error (error, DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_EXECUTION, "GIMP refused a new %d×%d layer",
                       g->W, g->H);
          return FALSE;
        }
      /* A new layer holds nothing yet: write its buffer directly (no shadow needed, its creation is the undo). */
      GeglBuffer *buffer = gimp_drawable_get_buffer (GIMP_DRAWABLE (layer));
      GeglRectangle rect = { 0, 0, g->W, g->H };
      gboolean ok = ddpm_pixels_write (buffer, &rect, &map, g->samples[v], NULL, TRUE, error);
      g_object_unref (buffer);
      if (!ok)
        return FALSE;
      gimp_drawable_update (GIMP_DRAWABLE (layer), 0, 0, g->W, g->H);
      /* Transparent pictures stacked on each other would mix: show the first variation only. */
      if (alpha && v > 0)
        gimp_item_set_visible (GIMP_ITEM (layer), FALSE);
    }
  return TRUE;
}

static char *
generate_explain (GimpProcedureConfig *config, gpointer data)
{
  DdpmModelCache *cache = data;
  g_autofree char *arg = NULL;
  int width = 0, height = 0;
  g_object_get (config, "model", &arg, "width", &width, "height", &height, NULL);
  const char *message = NULL;
  DdpmModel *model = ddpm_model_cache_get (cache, arg, &message);
  if (model == NULL)
    return g_markup_printf_escaped ("<b>Model not usable:</b> %s", message);
  g_autofree char *summary = ddpm_models_summary (model);
  int m = ddpm_model_size_multiple (model), native = ddpm_model_sample_size (model);
  int W = width > 0 ? width : native, H = height > 0 ? height : native;
  g_autofree char *esc = g_markup_escape_text (summary, -1);
  g_autofree char *size = (W % m == 0 && H % m == 0 && W > 0 && H > 0)
                            ? g_strdup_printf ("Output %d×%d.", W, H)
                            : g_strdup_printf ("<b>Width and height must be multiples of %d.</b>", m);
  return g_strdup_printf ("Model: %s.\n%s Width or height 0 means the model's own size.", esc, size);
}

static GimpValueArray *
generate_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image, GimpDrawable **drawables,
              GimpProcedureConfig *config, gpointer run_data)
{
  gegl_init (NULL, NULL);
  g_auto (DdpmModelCache) cache = { 0 };

  if (run_mode == GIMP_RUN_INTERACTIVE)
    {
      g_auto (GStrv) models = ddpm_models_list ();
      static const char *const sampling[] = { "sampler", "steps", "eta", "seed", "random-seed", NULL };
      static const char *const output[] = { "variations", "width", "height", "output", NULL };
      static const char *const device[] = { "device", "precision", "tune", NULL };
      static const DdpmDialogGroup groups[] = {
        { "Sampling", sampling }, { "Output", output }, { "Device", device }, { NULL, NULL } };
      static const char *const ddim[] = { "ddim", NULL }, *const gpu[] = { "auto", "cuda", NULL };
      static const DdpmDialogRule rules[] = { { "eta", "sampler", ddim }, { "seed", "random-seed", NULL },
                                              { "tune", "device", gpu }, { NULL, NULL, NULL } };
      DdpmDialogSpec spec = { "Generate with a Diffusion Model", groups, rules, (const char *const *) models,
                              generate_explain, &cache };
      if (!ddpm_param_dialog_run (procedure, config, &spec))
        return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);
    }

  GenerateJob g = { 0 };
  ddpm_args_read (config, &g.args);
  g_object_get (config, "variations", &g.variations, "width", &g.width, "height", &g.height, NULL);
  int output = gimp_procedure_config_get_choice_id (config, "output");
  if (output == OUTPUT_NEW_LAYERS && image == NULL)
    {
      ddpm_args_clear (&g.args);
      return ddpm_return_error (procedure, g_error_new (DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_CALLING,
                                                        "argument \"output\" is \"new-layers\" but no image was "
                                                        "given: pass #:image, or use \"new-image\""));
    }
  if (output == OUTPUT_NEW_LAYERS && gimp_image_get_base_type (image) == GIMP_INDEXED)
    {
      ddpm_args_clear (&g.args);
      return ddpm_return_error (procedure, g_error_new (DDPM_PLUGIN_ERROR, DDPM_PLUGIN_ERROR_EXECUTION,
                                                        "the image is indexed: convert it to RGB or grayscale "
                                                        "(Image > Mode) first"));
    }
  g.model = ddpm_model_cache_take (&cache, g.args.model);

  g_autofree char *model_name = ddpm_models_display_name (g.args.model);
  g_autofree char *title = g_strdup_printf ("Generating with %s", model_name);
  GError *error = NULL;
  if (!ddpm_job_run (title, run_mode != GIMP_RUN_NONINTERACTIVE, generate_work, &g, &error))
    {
      generate_job_clear (&g);
      return ddpm_return_error (procedure, error);
    }

  GimpImage *target = image;
  gboolean ok;
  if (output == OUTPUT_NEW_IMAGE)
    {
      target = gimp_image_new (g.W, g.H, g.channels == 1 ? GIMP_GRAY : GIMP_RGB);
      gimp_image_undo_disable (target);
      ok = insert_layers (&g, target, &error);
      gimp_image_undo_enable (target);
      if (ok && run_mode != GIMP_RUN_NONINTERACTIVE)
        gimp_display_new (target);
      if (!ok)
        gimp_image_delete (target);
    }
  else
    {
      gimp_image_undo_group_start (target);
      ok = insert_layers (&g, target, &error);
      gimp_image_undo_group_end (target);
    }
  uint32_t seed = g.args.seed;
  generate_job_clear (&g);
  if (!ok)
    return ddpm_return_error (procedure, error);
  if (run_mode != GIMP_RUN_NONINTERACTIVE)
    gimp_displays_flush ();

  GimpValueArray *ret = gimp_procedure_new_return_values (procedure, GIMP_PDB_SUCCESS, NULL);
  GIMP_VALUES_SET_IMAGE (ret, 1, target);
  GIMP_VALUES_SET_INT (ret, 2, (int) seed);
  return ret;
}

GimpProcedure *
ddpm_generate_procedure_new (GimpPlugIn *plug_in)
{
  GimpProcedure *p = gimp_image_procedure_new (plug_in, DDPM_PROC_GENERATE, GIMP_PDB_PROC_TYPE_PLUGIN,
                                               generate_run, NULL, NULL);
  gimp_procedure_set_image_types (p, "*");
  gimp_procedure_set_sensitivity_mask (p, GIMP_PROCEDURE_SENSITIVE_ALWAYS);
  gimp_procedure_set_menu_label (p, "_Generate…");
  gimp_procedure_add_menu_path (p, DDPM_MENU_PATH);
  gimp_procedure_set_documentation (
    p, "Generate pictures with a diffusion model",
    "Samples new pictures from noise with a diffusers UNet2DModel (DDPM or DDIM sampler). Each variation "
    "uses seed + its index and becomes a layer named after its seed, in a new image or on top of the "
    "current one. Width and height default to the model's own size; other sizes must be multiples of the "
    "model's size multiple.",
    NULL);
  gimp_procedure_set_attribution (p, "gimp-ddpm authors", "gimp-ddpm authors", "2026");

  gimp_procedure_add_image_return_value (p, "image", "Image", "The image that holds the new layers", TRUE,
                                         G_PARAM_READWRITE);
  ddpm_args_add_model (p, DDPM_DEFAULT_MODEL);
  /* DDPM: the shipped short-trained emoji model gives clean pictures with DDPM at 100-250 steps and
   * speckle with DDIM (weights/emoji-32/MODEL_CARD.md). */
  ddpm_args_add_sampler (p, "ddpm");
  ddpm_args_add_seed (p);
  gimp_procedure_add_int_argument (p, "variations", "_Variations", "How many pictures (seed, seed + 1, …)", 1,
                                   MAX_VARIATIONS, 1, G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (p, "width", "_Width", "Width in pixels (0: the model's size)", 0, MAX_SIDE, 0,
                                   G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (p, "height", "Hei_ght", "Height in pixels (0: the model's size)", 0, MAX_SIDE,
                                   0, G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (p, "output", "O_utput", "Where the pictures go",
                                      gimp_choice_new_with_values (
                                        "new-image", OUTPUT_NEW_IMAGE, "New image", NULL,
                                        "new-layers", OUTPUT_NEW_LAYERS, "New layers in this image", NULL,
                                        NULL),
                                      "new-image", G_PARAM_READWRITE);
  ddpm_args_add_device (p);
  return p;
}
