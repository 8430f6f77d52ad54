/* ddpm.c: the `ddpm` command-line tool: one UNet forward (eps), sampling (sample), forward diffusion of
 * a picture (noise), SDEdit / denoising of a picture (denoise), model description (info), timing (bench)
 * and an .npy comparator for tests (compare).
 *
 * Conventions (also in `ddpm --help`):
 * - Exit codes: 0 success, 1 runtime error (one line "ddpm: <file>: <problem>" on stderr), 2 usage error,
 *   130 cancelled by Ctrl-C. compare exits 1 when the arrays differ beyond the tolerance.
 * - Arrays are .npy float32 in the model's range ([-1, 1]); timesteps .npy int64 or int32.
 * - Pictures are mapped [0, 1] -> [-1, 1]; written back as clamp(x/2 + 0.5) quantised round(255 p)
 *   (diffusers' pipeline). Output PNGs are 8-bit; the output keeps the input's channel layout.
 * - sample with --batch B > 1 and a .png output writes one file per image: OUT-0.png ... OUT-<B-1>.png
 *   (OUT is the name without .png); B = 1 writes OUT.png itself.
 * - --seed defaults to 0, so runs are reproducible; image b of a batch uses seed + b (engine). */
#include "ddpm.h"
#include "image_ops.h"
#include "model.h"
#include "npy.h"
#include "png_io.h"

#include <locale.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_CANCELLED = 130 };

/* ---- errors and usage ----------------------------------------------------------------------------- */

/* One line on stderr: "ddpm: <message>" (engine messages already start with the file they concern). */
static int
report_error (GError *error)
{
  g_autofree char *msg = g_strdup (error->message);
  g_strdelimit (msg, "\n\r", ' ');
  fprintf (stderr, "ddpm: %s\n", msg);
  return g_error_matches (error, DDPM_ERROR, DDPM_ERROR_CANCELLED) ? EXIT_CANCELLED : EXIT_FAIL;
}

static int G_GNUC_PRINTF (2, 3)
usage_error (const char *command, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *msg = g_strdup_vprintf (format, ap);
  va_end (ap);
  fprintf (stderr, "ddpm %s: %s (see 'ddpm %s --help')\n", command, msg, command);
  return EXIT_USAGE;
}

/* ---- Ctrl-C ---------------------------------------------------------------------------------------
 * The handler only sets a flag and calls ddpm_context_cancel, an atomic store, which is safe in a signal
 * handler. SA_RESETHAND makes a second Ctrl-C kill the process the default way (a long forward pass does
 * not look at the flag before it returns). */

static DdpmContext *volatile cancel_ctx;
static volatile sig_atomic_t interrupted;

static void
on_sigint (int sig)
{
  interrupted = 1;
  DdpmContext *ctx = cancel_ctx;
  if (ctx)
    ddpm_context_cancel (ctx);
}

static void
install_sigint (DdpmContext *ctx)
{
  cancel_ctx = ctx;
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
}

static void
uninstall_sigint (void)
{
  signal (SIGINT, SIG_DFL);
  cancel_ctx = NULL;
}

/* ---- progress -------------------------------------------------------------------------------------- */

typedef struct {
  const char *label;
  int last_bucket;                 /* last 5% bucket printed */
  gint64 t0;                       /* monotonic us */
  gboolean quiet;
  int steps;                       /* steps done so far */
} Progress;

static gboolean
on_progress (int step, int num_steps, const float *x0_preview, gpointer user_data)
{
  Progress *p = user_data;
  p->steps = step;
  int bucket = num_steps > 0 ? step * 20 / num_steps : 20;
  if (!p->quiet && (bucket > p->last_bucket || step == num_steps || step == 1))
    {
      double s = (g_get_monotonic_time () - p->t0) / 1e6;
      fprintf (stderr, "ddpm: %s: step %d/%d (%d%%, %.1f s)\n", p->label, step, num_steps,
               num_steps > 0 ? step * 100 / num_steps : 100, s);
      p->last_bucket = bucket;
    }
  return !interrupted;
}

/* ---- option values ----------------------------------------------------------------------------------- */

static gboolean
parse_device (const char *s, DdpmDevice *out)
{
  if (!s || g_str_equal (s, "auto"))
    *out = DDPM_DEVICE_AUTO;
  else if (g_str_equal (s, "cpu"))
    *out = DDPM_DEVICE_CPU;
  else if (g_str_equal (s, "cuda") || g_str_equal (s, "gpu"))
    *out = DDPM_DEVICE_CUDA;
  else
    return FALSE;
  return TRUE;
}

static gboolean
parse_precision (const char *s, DdpmPrecision *out)
{
  if (!s || g_str_equal (s, "default") || g_str_equal (s, "auto"))
    *out = DDPM_PRECISION_DEFAULT;
  else if (g_str_equal (s, "fp32"))
    *out = DDPM_PRECISION_FP32;
  else if (g_str_equal (s, "fp16"))
    *out = DDPM_PRECISION_FP16;
  else if (g_str_equal (s, "bf16"))
    *out = DDPM_PRECISION_BF16;
  else
    return FALSE;
  return TRUE;
}

static const char *
precision_name (DdpmPrecision p)
{
  switch (p)
    {
    case DDPM_PRECISION_FP32: return "fp32";
    case DDPM_PRECISION_FP16: return "fp16";
    case DDPM_PRECISION_BF16: return "bf16";
    default: return "default";
    }
}

static gboolean
parse_sampler (const char *s, DdpmSamplerKind *out)
{
  if (g_ascii_strcasecmp (s, "ddpm") == 0)
    *out = DDPM_SAMPLER_DDPM;
  else if (g_ascii_strcasecmp (s, "ddim") == 0)
    *out = DDPM_SAMPLER_DDIM;
  else
    return FALSE;
  return TRUE;
}

static gboolean
parse_seed (const char *s, uint64_t *out)
{
  guint64 v;
  if (!s)
    {
      *out = 0;
      return TRUE;
    }
  if (!g_ascii_string_to_unsigned (s, 10, 0, G_MAXUINT64, &v, NULL))
    return FALSE;
  *out = v;
  return TRUE;
}

static gboolean
has_suffix_ci (const char *s, const char *suffix)
{
  size_t n = strlen (s), k = strlen (suffix);
  return n >= k && g_ascii_strcasecmp (s + n - k, suffix) == 0;
}

/* Options every model-running command shares. */
typedef struct {
  char *model, *device, *precision;
  int threads;
  gboolean quiet, tune, tune_again;
  DdpmDevice dev;
  DdpmPrecision prec;
} RunOptions;

static void
run_options_clear (RunOptions *r)
{
  g_free (r->model);
  g_free (r->device);
  g_free (r->precision);
}

static void
add_run_entries (GOptionContext *oc, RunOptions *r, gboolean with_model)
{
  GOptionEntry model_entry[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &r->model, "diffusers UNet2DModel (or pipeline) folder", "DIR" },
    { NULL },
  };
  GOptionEntry entries[] = {
    { "device", 0, 0, G_OPTION_ARG_STRING, &r->device, "auto (default), cpu or cuda", "DEV" },
    { "precision", 0, 0, G_OPTION_ARG_STRING, &r->precision, "fp32, fp16 or bf16 (default: the backend's)", "P" },
    { "threads", 0, 0, G_OPTION_ARG_INT, &r->threads, "CPU threads (default: OpenMP's)", "N" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &r->quiet, "no progress on stderr", NULL },
    { "tune", 0, 0, G_OPTION_ARG_NONE, &r->tune, "CUDA: time the backend's alternative kernels at the first "
      "forward of each size and keep the fastest that agrees with the defaults (decisions cached in "
      "~/.cache/gimp-ddpm/tuning.ini; also $DDPM_TUNE=1)", NULL },
    { "tune-again", 0, 0, G_OPTION_ARG_NONE, &r->tune_again, "as --tune, ignoring cached decisions", NULL },
    { NULL },
  };
  if (with_model)
    g_option_context_add_main_entries (oc, model_entry, NULL);
  g_option_context_add_main_entries (oc, entries, NULL);
}

static int
check_run_options (const char *cmd, RunOptions *r, gboolean model_required)
{
  if (model_required && !r->model)
    return usage_error (cmd, "--model DIR is required");
  if (!parse_device (r->device, &r->dev))
    return usage_error (cmd, "--device must be auto, cpu or cuda, not '%s'", r->device);
  if (!parse_precision (r->precision, &r->prec))
    return usage_error (cmd, "--precision must be fp32, fp16 or bf16, not '%s'", r->precision);
  if (r->threads < 0)
    return usage_error (cmd, "--threads must be >= 1");
  if (r->threads > 0)
    omp_set_num_threads (r->threads);
  return EXIT_OK;
}

/* Parses argv with `oc`; positional arguments are left in argv[1..*argc-1]. */
static int
parse_options (GOptionContext *oc, const char *cmd, int *argc, char ***argv)
{
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (oc, argc, argv, &error))
    return usage_error (cmd, "%s", error->message);
  return EXIT_OK;
}

/* ---- model and context ------------------------------------------------------------------------------ */

static DdpmModel *
load_model (const char *dir, GError **error)
{
  if (!g_file_test (dir, G_FILE_TEST_EXISTS))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: no such model folder", dir);
      return NULL;
    }
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: not a folder (expected a diffusers UNet2DModel folder)",
                   dir);
      return NULL;
    }
  return ddpm_model_load (dir, error);
}

/* A model that has only the diffusers DDPMScheduler default schedule and no weights, for `noise` without
 * --model. ddpm_add_noise reads nothing but the schedule; free with schedule_model_free. */
static DdpmModel *
schedule_model_new (GError **error)
{
  DdpmModel *m = g_new0 (DdpmModel, 1);
  ddpm_unet_config_init_defaults (&m->config);
  ddpm_scheduler_config_init_defaults (&m->scheduler_config);
  if (!ddpm_schedule_init (&m->schedule, &m->scheduler_config, error))
    {
      g_free (m);
      return NULL;
    }
  return m;
}

static void
schedule_model_free (DdpmModel *m)
{
  if (!m)
    return;
  ddpm_schedule_clear (&m->schedule);
  g_free (m);
}

/* The context's status lines (what tuning is timing) on stderr, as progress. */
static void
print_status (const char *status, gpointer data)
{
  (void) data;
  fprintf (stderr, "ddpm: %s\n", status);
}

static DdpmContext *
new_context (DdpmModel *model, const RunOptions *r, GError **error)
{
  DdpmContext *ctx = ddpm_context_new (model, r->dev, r->prec, error);
  if (ctx && (r->tune || r->tune_again))
    ddpm_context_set_tuning (ctx, r->tune_again ? DDPM_TUNING_AGAIN : DDPM_TUNING_CACHED);
  if (ctx && !r->quiet)
    {
      fprintf (stderr, "ddpm: device %s, precision %s\n", ddpm_context_device_name (ctx),
               precision_name (ddpm_context_precision (ctx)));
      ddpm_context_set_status (ctx, print_status, NULL);
    }
  return ctx;
}

/* The tuning's report on stderr, once per context (after the first forward planned it); with --quiet too: it is
 * what --tune was asked for, not progress. */
static void
print_tuning (DdpmContext *ctx, const RunOptions *r)
{
  const char *report = ddpm_context_tuning_report (ctx);
  if (report != NULL && (r->tune || r->tune_again || !r->quiet))
    fprintf (stderr, "ddpm: %s", report);
}

/* n = a * b * c * ... as size_t, FALSE on overflow. */
static gboolean
checked_count (size_t *n, int k, const int64_t *dims)
{
  size_t v = 1;
  for (int i = 0; i < k; i++)
    if (dims[i] < 0 || !g_size_checked_mul (&v, v, (size_t) dims[i]))
      return FALSE;
  *n = v;
  return TRUE;
}

static float *
alloc_floats (size_t n, const char *what, GError **error)
{
  size_t bytes;
  float *p = NULL;
  if (g_size_checked_mul (&bytes, n, sizeof (float)))
    p = g_try_malloc (MAX (bytes, 1));
  if (!p)
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_NOMEM, "%s: out of memory for %zu values", what, n);
  return p;
}

static char *
shape_string (const DdpmNpyArray *a)
{
  GString *s = g_string_new ("(");
  for (int i = 0; i < a->ndim; i++)
    g_string_append_printf (s, i ? ", %" G_GINT64_FORMAT : "%" G_GINT64_FORMAT, a->shape[i]);
  g_string_append (s, a->ndim == 1 ? ",)" : ")");
  return g_string_free (s, FALSE);
}

static const char *
npy_type_name (DdpmNpyType t)
{
  switch (t)
    {
    case DDPM_NPY_F32: return "float32";
    case DDPM_NPY_F64: return "float64";
    case DDPM_NPY_I64: return "int64";
    case DDPM_NPY_I32: return "int32";
    }
  return "?";
}

/* Loads a float array (float32, or float64 rounded) of rank `ndim` (or either of two ranks when ndim_alt >= 0). */
static DdpmNpyArray *
load_float_npy (const char *path, int ndim, int ndim_alt, const char *expect, GError **error)
{
  DdpmNpyArray *a = ddpm_npy_load (path, error);
  if (!a)
    return NULL;
  if (a->type != DDPM_NPY_F32 && a->type != DDPM_NPY_F64)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: dtype %s, expected float32", path,
                   npy_type_name (a->type));
      ddpm_npy_free (a);
      return NULL;
    }
  if (a->ndim != ndim && a->ndim != ndim_alt)
    {
      g_autofree char *s = shape_string (a);
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: shape %s, expected %s", path, s, expect);
      ddpm_npy_free (a);
      return NULL;
    }
  if (a->type == DDPM_NPY_F64)
    {
      float *f = ddpm_npy_to_f32 (a);
      g_free (a->data);
      a->data = f;
      a->type = DDPM_NPY_F32;
    }
  return a;
}

/* Checks that an image-shaped array (.., C, H, W) fits the model. */
static gboolean
check_image_dims (const char *path, const DdpmModel *model, int channels, int64_t h, int64_t w, GError **error)
{
  int in_ch = ddpm_model_in_channels (model);
  int mult = MAX (ddpm_model_size_multiple (model), 1);
  if (channels != in_ch)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: %d channels, the model takes %d", path, channels, in_ch);
      return FALSE;
    }
  if (h <= 0 || w <= 0 || h > 65536 || w > 65536 || h % mult || w % mult)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_SHAPE,
                   "%s: height and width %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
                   " must be positive multiples of %d (the model's size multiple)", path, h, w, mult);
      return FALSE;
    }
  return TRUE;
}

/* ---- eps ------------------------------------------------------------------------------------------ */

static int
cmd_eps (int argc, char **argv)
{
  const char *cmd = "eps";
  RunOptions r = { 0 };
  g_autofree char *x_path = NULL, *t_path = NULL, *out_path = NULL;
  GOptionEntry entries[] = {
    { "x", 0, 0, G_OPTION_ARG_FILENAME, &x_path, "input sample x_t, float32 (B, C, H, W)", "X.npy" },
    { "t", 0, 0, G_OPTION_ARG_FILENAME, &t_path, "timesteps, int64 or int32 (B,) (or one value for all)", "T.npy" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out_path, "model output, float32 (B, out_channels, H, W)", "OUT.npy" },
    { NULL },
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("- one UNet forward: OUT = unet(X, T)");
  g_option_context_add_main_entries (oc, entries, NULL);
  add_run_entries (oc, &r, TRUE);
  int rc = parse_options (oc, cmd, &argc, &argv);
  if (rc == EXIT_OK)
    rc = check_run_options (cmd, &r, TRUE);
  if (rc == EXIT_OK && (!x_path || !t_path || !out_path))
    rc = usage_error (cmd, "--x, --t and --out are required");
  if (rc == EXIT_OK && argc > 1)
    rc = usage_error (cmd, "unexpected argument '%s'", argv[1]);
  if (rc != EXIT_OK)
    {
      run_options_clear (&r);
      return rc;
    }

  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmNpyArray) x = NULL;
  g_autoptr (DdpmNpyArray) t = NULL;
  g_autoptr (DdpmModel) model = NULL;
  g_autoptr (DdpmContext) ctx = NULL;
  g_autofree int64_t *tv = NULL;
  g_autofree float *eps = NULL;
  int batch = 0;
  size_t n_out = 0;

  if (!(x = load_float_npy (x_path, 4, -1, "(B, C, H, W)", &error)))
    goto fail;
  batch = (int) x->shape[0];
  if (x->shape[0] < 1 || x->shape[0] > 65536)
    {
      g_set_error (&error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: batch %" G_GINT64_FORMAT " is not in [1, 65536]", x_path,
                   x->shape[0]);
      goto fail;
    }
  if (!(t = ddpm_npy_load (t_path, &error)))
    goto fail;
  if (t->type != DDPM_NPY_I64 && t->type != DDPM_NPY_I32)
    {
      g_set_error (&error, DDPM_ERROR, DDPM_ERROR_FORMAT, "%s: dtype %s, expected int64 or int32", t_path,
                   npy_type_name (t->type));
      goto fail;
    }
  if (!(t->ndim == 0 || (t->ndim == 1 && (t->shape[0] == batch || t->shape[0] == 1))))
    {
      g_autofree char *s = shape_string (t);
      g_set_error (&error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: shape %s, expected (%d,) to match %s", t_path, s, batch,
                   x_path);
      goto fail;
    }
  /* One timestep per batch item; a scalar or (1,) array is broadcast, as diffusers does. */
  tv = g_new (int64_t, batch);
  for (int b = 0; b < batch; b++)
    {
      int64_t k = t->numel == 1 ? 0 : b;
      tv[b] = t->type == DDPM_NPY_I64 ? ((int64_t *) t->data)[k] : ((int32_t *) t->data)[k];
    }

  if (!(model = load_model (r.model, &error)))
    goto fail;
  if (!check_image_dims (x_path, model, (int) x->shape[1], x->shape[2], x->shape[3], &error))
    goto fail;
  int out_ch = ddpm_model_out_channels (model);
  int64_t out_shape[4] = { batch, out_ch, x->shape[2], x->shape[3] };
  if (!checked_count (&n_out, 4, out_shape) || !(eps = alloc_floats (n_out, out_path, &error)))
    {
      if (!error)
        g_set_error (&error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: output too large", out_path);
      goto fail;
    }
  if (!(ctx = new_context (model, &r, &error)))
    goto fail;
  install_sigint (ctx);
  gboolean ok = ddpm_context_eps (ctx, x->data, tv, batch, (int) x->shape[2], (int) x->shape[3], eps, &error);
  uninstall_sigint ();
  print_tuning (ctx, &r);
  if (!ok || !ddpm_npy_save_f32 (out_path, eps, 4, out_shape, &error))
    goto fail;
  run_options_clear (&r);
  return EXIT_OK;

fail:
  run_options_clear (&r);
  return report_error (error);
}

/* ---- writing results -------------------------------------------------------------------------------- */

/* Writes model-range images (B, C, H, W) as PNG: clamp(x/2 + 0.5), one file per image (see top). */
static gboolean
save_png_batch (const char *out_path, float *x, int batch, int channels, int h, int w, GError **error)
{
  size_t per = (size_t) channels * h * w;
  model_to_unit_range (x, per * batch);
  if (batch == 1)
    return cli_png_save (out_path, x, channels, h, w, error);
  g_autofree char *stem = g_strndup (out_path, strlen (out_path) - 4);
  for (int b = 0; b < batch; b++)
    {
      g_autofree char *p = g_strdup_printf ("%s-%d%s", stem, b, out_path + strlen (out_path) - 4);
      if (!cli_png_save (p, x + per * b, channels, h, w, error))
        return FALSE;
    }
  return TRUE;
}

/* Fails early (before minutes of sampling) when the output folder does not exist. */
static gboolean
check_output_dir (const char *out_path, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (out_path);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_IO, "%s: folder %s does not exist", out_path, dir);
      return FALSE;
    }
  return TRUE;
}

/* ---- sample ------------------------------------------------------------------------------------------ */

/* Sampler options shared by sample and denoise. */
typedef struct {
  char *sampler, *seed;
  int steps;
  double eta;
  gboolean eta_set;
} SamplerOptions;

static void
add_sampler_entries (GOptionContext *oc, SamplerOptions *s)
{
  GOptionEntry entries[] = {
    { "sampler", 0, 0, G_OPTION_ARG_STRING, &s->sampler, "ddpm or ddim (default: the model's scheduler)", "S" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &s->steps, "inference steps (default: num_train_timesteps for DDPM, 50 for DDIM)",
      "N" },
    { "eta", 0, 0, G_OPTION_ARG_DOUBLE, &s->eta, "DDIM eta (default 0: deterministic)", "E" },
    { "seed", 0, 0, G_OPTION_ARG_STRING, &s->seed, "RNG seed, unsigned 64-bit (default 0)", "S" },
    { NULL },
  };
  s->eta = -1;                     /* unset */
  g_option_context_add_main_entries (oc, entries, NULL);
}

static int
check_sampler_options (const char *cmd, SamplerOptions *s, DdpmSampleParams *p)
{
  if (s->sampler && !parse_sampler (s->sampler, &p->sampler))
    return usage_error (cmd, "--sampler must be ddpm or ddim, not '%s'", s->sampler);
  if (s->steps < 0)
    return usage_error (cmd, "--steps must be >= 1");
  s->eta_set = s->eta != -1;
  if (s->eta_set && !(s->eta >= 0 && s->eta <= 1e6))
    return usage_error (cmd, "--eta must be >= 0");
  if (!parse_seed (s->seed, &p->seed))
    return usage_error (cmd, "--seed must be an unsigned 64-bit integer, not '%s'", s->seed);
  p->num_steps = s->steps;
  p->eta = s->eta_set ? s->eta : 0.0;
  return EXIT_OK;
}

static void
sampler_options_clear (SamplerOptions *s)
{
  g_free (s->sampler);
  g_free (s->seed);
}

/* The sampler the user asked for, else the model's own scheduler class. */
static void
resolve_sampler (const DdpmModel *model, const SamplerOptions *s, DdpmSampleParams *p)
{
  if (!s->sampler)
    p->sampler = ddpm_model_get_scheduler_config (model)->kind;
  if (s->eta_set && s->eta != 0 && p->sampler != DDPM_SAMPLER_DDIM)
    fprintf (stderr, "ddpm: warning: --eta is used by the DDIM sampler only; ignored\n");
}

static int
compare_doubles (const void *a, const void *b)
{
  const double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

/* `sample --time --repeat N`: N more samples with the same parameters in the same (planned, warm) context;
 * prints the median time. Same seed, same image: a repeat that differs from `first` in any bit is an error
 * (the device's reductions are ordered, so timing must not change a result). */
static gboolean
time_repeats (DdpmContext *ctx, const DdpmSampleParams *p, const float *first, size_t n, int repeat, GError **error)
{
  g_autofree float *again = g_new (float, n);
  g_autofree double *ms = g_new (double, repeat);
  for (int i = 0; i < repeat; i++)
    {
      const gint64 t0 = g_get_monotonic_time ();
      if (!ddpm_sample (ctx, p, again, error))
        return FALSE;
      ms[i] = (g_get_monotonic_time () - t0) / 1e3;
      if (memcmp (again, first, n * sizeof (float)) != 0)
        {
          g_set_error (error, DDPM_ERROR, DDPM_ERROR_NUMERIC, "repeat %d of the sample differs from the first run "
                       "(same seed, same context): the device result depends on timing", i + 1);
          return FALSE;
        }
    }
  qsort (ms, repeat, sizeof *ms, compare_doubles);
  printf ("warm_sample_ms=%.3f repeats=%d identical=1\n", ms[repeat / 2], repeat);
  fflush (stdout);
  return TRUE;
}

static int
cmd_sample (int argc, char **argv)
{
  const char *cmd = "sample";
  RunOptions r = { 0 };
  SamplerOptions so = { 0 };
  int batch = 0, height = 0, width = 0;
  gboolean report_time = FALSE;
  int repeat = 0;
  g_autofree char *init_path = NULL, *step_path = NULL, *out_path = NULL;
  GOptionEntry entries[] = {
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, "images to sample (default 1, or the batch of --init-noise)", "B" },
    { "time", 0, 0, G_OPTION_ARG_NONE, &report_time, "print 'sample_ms=X steps=N' on stdout: the time of the whole "
      "sampling call (planning, graph capture, every step, the copy back), without loading or start-up", NULL },
    { "repeat", 0, 0, G_OPTION_ARG_INT, &repeat, "with --time: sample N more times in the same context (planned, "
      "modules loaded) and print 'warm_sample_ms=M repeats=N' (the median); every repeat must give the first "
      "image bit for bit, or the command fails", "N" },
    { "height", 'H', 0, G_OPTION_ARG_INT, &height, "image height (default: the model's sample_size)", "H" },
    { "width", 'W', 0, G_OPTION_ARG_INT, &width, "image width (default: the model's sample_size)", "W" },
    { "init-noise", 0, 0, G_OPTION_ARG_FILENAME, &init_path, "x_T instead of the RNG, float32 (B, C, H, W)", "XT.npy" },
    { "step-noise", 0, 0, G_OPTION_ARG_FILENAME, &step_path,
      "noise of each noisy step instead of the RNG, float32 (K, B, C, H, W) or (K, C, H, W) for B = 1", "Z.npy" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out_path,
      "raw final sample (.npy), or image clamp(x/2 + 0.5) (.png; B > 1 writes OUT-<b>.png)", "OUT" },
    { NULL },
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("- sample images from noise");
  g_option_context_add_main_entries (oc, entries, NULL);
  add_sampler_entries (oc, &so);
  add_run_entries (oc, &r, TRUE);

  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  int rc = parse_options (oc, cmd, &argc, &argv);
  if (rc == EXIT_OK)
    rc = check_run_options (cmd, &r, TRUE);
  if (rc == EXIT_OK)
    rc = check_sampler_options (cmd, &so, &p);
  if (rc == EXIT_OK && !out_path)
    rc = usage_error (cmd, "--out is required");
  gboolean to_png = out_path && has_suffix_ci (out_path, ".png");
  if (rc == EXIT_OK && !to_png && !has_suffix_ci (out_path, ".npy"))
    rc = usage_error (cmd, "--out must end in .npy or .png");
  if (rc == EXIT_OK && (batch < 0 || height < 0 || width < 0))
    rc = usage_error (cmd, "--batch, --height and --width must be positive");
  if (rc == EXIT_OK && (repeat < 0 || (repeat > 0 && !report_time)))
    rc = usage_error (cmd, "--repeat N needs --time and N >= 0");
  if (rc == EXIT_OK && argc > 1)
    rc = usage_error (cmd, "unexpected argument '%s'", argv[1]);
  if (rc != EXIT_OK)
    {
      run_options_clear (&r);
      sampler_options_clear (&so);
      return rc;
    }

  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmNpyArray) xt = NULL;
  g_autoptr (DdpmNpyArray) z = NULL;
  g_autoptr (DdpmModel) model = NULL;
  g_autoptr (DdpmContext) ctx = NULL;
  g_autofree float *out = NULL;
  int channels = 0;
  size_t n = 0;

  if (!check_output_dir (out_path, &error))
    goto fail;
  if (!(model = load_model (r.model, &error)))
    goto fail;
  resolve_sampler (model, &so, &p);
  channels = ddpm_model_in_channels (model);
  if (init_path)
    {
      if (!(xt = load_float_npy (init_path, 4, -1, "(B, C, H, W)", &error)))
        goto fail;
      if ((batch && xt->shape[0] != batch) || (height && xt->shape[2] != height) || (width && xt->shape[3] != width))
        {
          g_autofree char *s = shape_string (xt);
          g_set_error (&error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: shape %s disagrees with --batch/--height/--width",
                       init_path, s);
          goto fail;
        }
      if (xt->shape[0] < 1 || xt->shape[0] > 4096)
        {
          g_set_error (&error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: batch %" G_GINT64_FORMAT " not in [1, 4096]",
                       init_path, xt->shape[0]);
          goto fail;
        }
      if (!check_image_dims (init_path, model, (int) xt->shape[1], xt->shape[2], xt->shape[3], &error))
        goto fail;
      batch = (int) xt->shape[0];
      height = (int) xt->shape[2];
      width = (int) xt->shape[3];
      p.init_noise = xt->data;
    }
  if (!batch)
    batch = 1;
  if (!height || !width)
    {
      int size = ddpm_model_sample_size (model);
      if (size <= 0)
        {
          rc = usage_error (cmd, "%s has no sample_size in its config: give --height and --width", r.model);
          run_options_clear (&r);
          sampler_options_clear (&so);
          return rc;
        }
      height = height ? height : size;
      width = width ? width : size;
    }
  if (!check_image_dims (r.model, model, channels, height, width, &error))
    goto fail;
  if (to_png && channels > 4)
    {
      g_set_error (&error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: a %d-channel sample cannot be a PNG; use .npy",
                   out_path, channels);
      goto fail;
    }
  if (step_path)
    {
      if (!(z = load_float_npy (step_path, 5, batch == 1 ? 4 : -1, batch == 1 ? "(K, B, C, H, W) or (K, C, H, W)"
                                                                             : "(K, B, C, H, W)", &error)))
        goto fail;
      const int64_t *s = z->shape + 1;
      gboolean ok = z->ndim == 5 ? (s[0] == batch && s[1] == channels && s[2] == height && s[3] == width)
                                 : (s[0] == channels && s[1] == height && s[2] == width);
      if (!ok)
        {
          g_autofree char *ss = shape_string (z);
          g_set_error (&error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: shape %s, expected (K, %d, %d, %d, %d)", step_path, ss,
                       batch, channels, height, width);
          goto fail;
        }
      if (z->shape[0] > G_MAXINT)
        {
          g_set_error (&error, DDPM_ERROR, DDPM_ERROR_SHAPE, "%s: too many steps", step_path);
          goto fail;
        }
      p.step_noise = z->data;
      p.step_noise_count = (int) z->shape[0];
    }
  p.batch = batch;
  p.height = height;
  p.width = width;
  p.start = DDPM_START_NOISE;
  int64_t out_shape[4] = { batch, channels, height, width };
  if (!checked_count (&n, 4, out_shape) || !(out = alloc_floats (n, out_path, &error)))
    {
      if (!error)
        g_set_error (&error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: output too large", out_path);
      goto fail;
    }
  if (!(ctx = new_context (model, &r, &error)))
    goto fail;
  Progress prog = { "sample", -1, g_get_monotonic_time (), r.quiet, 0 };
  ddpm_context_set_progress (ctx, on_progress, &prog, 0);
  install_sigint (ctx);
  const gint64 t_sample = g_get_monotonic_time ();
  gboolean ok = ddpm_sample (ctx, &p, out, &error);
  const double sample_ms = (g_get_monotonic_time () - t_sample) / 1e3;
  uninstall_sigint ();
  print_tuning (ctx, &r);
  if (!ok)
    goto fail;
  if (report_time)
    {
      printf ("sample_ms=%.3f steps=%d\n", sample_ms, prog.steps);
      fflush (stdout);
    }
  if (repeat > 0 && !time_repeats (ctx, &p, out, n, repeat, &error))
    goto fail;
  if (to_png ? !save_png_batch (out_path, out, batch, channels, height, width, &error)
             : !ddpm_npy_save_f32 (out_path, out, 4, out_shape, &error))
    goto fail;
  run_options_clear (&r);
  sampler_options_clear (&so);
  return EXIT_OK;

fail:
  run_options_clear (&r);
  sampler_options_clear (&so);
  return report_error (error);
}

/* ---- noise ------------------------------------------------------------------------------------------- */

static int
cmd_noise (int argc, char **argv)
{
  const char *cmd = "noise";
  int t = -1;
  g_autofree char *seed_str = NULL, *model_dir = NULL, *out_path = NULL;
  GOptionEntry entries[] = {
    { "t", 't', 0, G_OPTION_ARG_INT, &t, "train timestep (0-based): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) z", "T" },
    { "seed", 0, 0, G_OPTION_ARG_STRING, &seed_str, "RNG seed (default 0)", "S" },
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "use this model's schedule (default: DDPMScheduler defaults)",
      "DIR" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out_path, "noisy image, clamped (.png)", "OUT.png" },
    { NULL },
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("IN.png - forward diffusion q(x_t | x_0) of a picture");
  g_option_context_add_main_entries (oc, entries, NULL);
  uint64_t seed = 0;
  int rc = parse_options (oc, cmd, &argc, &argv);
  if (rc == EXIT_OK && t < 0)
    rc = usage_error (cmd, "--t T (>= 0) is required");
  if (rc == EXIT_OK && !parse_seed (seed_str, &seed))
    rc = usage_error (cmd, "--seed must be an unsigned 64-bit integer, not '%s'", seed_str);
  if (rc == EXIT_OK && (!out_path || !has_suffix_ci (out_path, ".png")))
    rc = usage_error (cmd, "--out OUT.png is required");
  if (rc == EXIT_OK && argc != 2)
    rc = usage_error (cmd, argc < 2 ? "an input PNG is required" : "only one input PNG");
  if (rc != EXIT_OK)
    return rc;
  const char *in_path = argv[1];

  g_autoptr (GError) error = NULL;
  g_autoptr (CliImage) img = NULL;
  g_autoptr (DdpmModel) loaded = NULL;
  DdpmModel *sched = NULL;         /* schedule-only model, when no --model */
  const DdpmModel *model;
  g_autofree float *x0 = NULL, *xt = NULL, *pix = NULL;

  if (!(img = cli_png_load (in_path, CLI_PNG_DEFAULT_MAX_PIXELS, &error)))
    goto fail;
  if (model_dir)
    {
      if (!(loaded = load_model (model_dir, &error)))
        goto fail;
      model = loaded;
    }
  else
    {
      if (!(sched = schedule_model_new (&error)))
        goto fail;
      model = sched;
    }
  int n_train = ddpm_model_num_train_timesteps (model);
  if (t >= n_train)
    {
      schedule_model_free (sched);
      return usage_error (cmd, "--t %d is beyond the schedule's last timestep %d", t, n_train - 1);
    }

  /* Colour channels are noised (in model range), alpha is kept as it is. */
  ChannelMap map;
  channel_map_init (&map, img->channels, img->channels - (img->channels % 2 == 0), NULL);
  size_t plane = (size_t) img->width * img->height;
  size_t n = plane * map.model_color;
  x0 = g_new (float, n);
  xt = g_new (float, n);
  pix = g_new (float, plane * img->channels);
  channel_map_to_model (&map, img->data, x0, plane);
  ddpm_add_noise (model, t, seed, x0, xt, 1, n);
  channel_map_from_model (&map, xt, img->data, pix, plane);
  schedule_model_free (sched);
  sched = NULL;
  if (!cli_png_save (out_path, pix, img->channels, img->height, img->width, &error))
    goto fail;
  return EXIT_OK;

fail:
  schedule_model_free (sched);
  return report_error (error);
}

/* ---- denoise ----------------------------------------------------------------------------------------- */

static int
cmd_denoise (int argc, char **argv)
{
  const char *cmd = "denoise";
  RunOptions r = { 0 };
  SamplerOptions so = { 0 };
  double strength = -1, noisy_sigma = -1;
  int ensemble = 1;
  g_autofree char *out_path = NULL;
  GOptionEntry entries[] = {
    { "strength", 's', 0, G_OPTION_ARG_DOUBLE, &strength,
      "SDEdit: noise the picture to strength * T, then sample back (0..1)", "F" },
    { "noisy-sigma", 0, 0, G_OPTION_ARG_DOUBLE, &noisy_sigma,
      "the picture already holds Gaussian noise of this sigma in 8-bit units: denoise it from the matching timestep",
      "S" },
    { "ensemble", 0, 0, G_OPTION_ARG_INT, &ensemble,
      "with --noisy-sigma: average the results over K flips/transposes of the picture (1 = off, 4, 8; K times the "
      "time)", "K" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out_path, "result (.png, 8-bit, the input's channel layout)", "OUT.png" },
    { NULL },
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("IN.png - SDEdit (--strength) or denoising (--noisy-sigma)");
  g_option_context_set_description (
    oc, "--noisy-sigma S: pixels p = p0 + n with n ~ N(0, (S/255)^2) in [0, 1] units, i.e. sigma' = 2 S / 255 in the\n"
        "model's [-1, 1] units. The start timestep t is the one whose sqrt((1 - abar_t) / abar_t) is closest to\n"
        "sigma', and the sampler starts from x_t = sqrt(abar_t) x = sqrt(abar_t) (x0 + sigma' eps), which is the\n"
        "forward process' sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at that t. No noise is added.\n"
        "Pictures whose size is not a multiple of the model's size multiple are reflect-padded, then cropped back.");
  g_option_context_add_main_entries (oc, entries, NULL);
  add_sampler_entries (oc, &so);
  add_run_entries (oc, &r, TRUE);

  DdpmSampleParams p;
  ddpm_sample_params_init (&p);
  int rc = parse_options (oc, cmd, &argc, &argv);
  if (rc == EXIT_OK)
    rc = check_run_options (cmd, &r, TRUE);
  if (rc == EXIT_OK)
    rc = check_sampler_options (cmd, &so, &p);
  if (rc == EXIT_OK && (strength != -1) == (noisy_sigma != -1))
    rc = usage_error (cmd, "give exactly one of --strength F and --noisy-sigma S");
  if (rc == EXIT_OK && strength != -1 && !(strength >= 0 && strength <= 1))
    rc = usage_error (cmd, "--strength must be in [0, 1]");
  if (rc == EXIT_OK && noisy_sigma != -1 && !(noisy_sigma >= 0 && noisy_sigma <= 1e4))
    rc = usage_error (cmd, "--noisy-sigma must be >= 0");
  if (rc == EXIT_OK && !(ensemble >= 1 && ensemble <= DDPM_ENSEMBLE_MAX))
    rc = usage_error (cmd, "--ensemble must be in 1..8");
  if (rc == EXIT_OK && ensemble > 1 && noisy_sigma == -1)
    rc = usage_error (cmd, "--ensemble needs --noisy-sigma (it averages denoised versions of a noisy picture)");
  if (rc == EXIT_OK && (!out_path || !has_suffix_ci (out_path, ".png")))
    rc = usage_error (cmd, "--out OUT.png is required");
  if (rc == EXIT_OK && argc != 2)
    rc = usage_error (cmd, argc < 2 ? "an input PNG is required" : "only one input PNG");
  if (rc != EXIT_OK)
    {
      run_options_clear (&r);
      sampler_options_clear (&so);
      return rc;
    }
  const char *in_path = argv[1];

  g_autoptr (GError) error = NULL;
  g_autoptr (CliImage) img = NULL;
  g_autoptr (DdpmModel) model = NULL;
  g_autoptr (DdpmContext) ctx = NULL;
  g_autofree float *x = NULL, *xpad = NULL, *ypad = NULL, *y = NULL, *pix = NULL;
  ChannelMap map;

  if (!check_output_dir (out_path, &error))
    goto fail;
  if (!(img = cli_png_load (in_path, CLI_PNG_DEFAULT_MAX_PIXELS, &error)))
    goto fail;
  if (!(model = load_model (r.model, &error)))
    goto fail;
  resolve_sampler (model, &so, &p);
  if (!channel_map_init (&map, img->channels, ddpm_model_in_channels (model), &error))
    {
      g_prefix_error (&error, "%s: ", r.model);
      goto fail;
    }
  if (ddpm_model_out_channels (model) < ddpm_model_in_channels (model))
    {
      g_set_error (&error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "%s: out_channels %d < in_channels %d", r.model,
                   ddpm_model_out_channels (model), ddpm_model_in_channels (model));
      goto fail;
    }

  int h = img->height, w = img->width, c = channel_map_model_channels (&map);
  int mult = MAX (ddpm_model_size_multiple (model), 1);
  int hp = round_up_multiple (h, mult), wp = round_up_multiple (w, mult);
  size_t plane = (size_t) h * w, plane_p = (size_t) hp * wp;
  if (!(x = alloc_floats (plane * c, in_path, &error)) || !(y = alloc_floats (plane * c, in_path, &error)) ||
      !(pix = alloc_floats (plane * img->channels, in_path, &error)) ||
      !(ypad = alloc_floats (plane_p * c, in_path, &error)))
    goto fail;
  channel_map_to_model (&map, img->data, x, plane);
  if (!(xpad = image_pad_reflect (x, c, h, w, hp, wp)))
    {
      g_set_error (&error, DDPM_ERROR, DDPM_ERROR_NOMEM, "%s: out of memory", in_path);
      goto fail;
    }
  if ((hp != h || wp != w) && !r.quiet)
    fprintf (stderr, "ddpm: %s: %d x %d padded to %d x %d (multiple of %d)\n", in_path, w, h, wp, hp, mult);

  p.batch = 1;
  p.height = hp;
  p.width = wp;
  p.x_init = xpad;
  if (strength != -1)
    {
      p.start = DDPM_START_STRENGTH;
      p.strength = strength;
    }
  else
    {
      double sigma = 2.0 * noisy_sigma / 255.0;
      p.start = DDPM_START_NOISY;
      p.start_timestep = ddpm_timestep_for_sigma (model, sigma);
      p.ensemble = ensemble;
      float scale = (float) sqrt (ddpm_model_alpha_bar (model, p.start_timestep));
      for (size_t i = 0; i < plane_p * c; i++)
        xpad[i] *= scale;
      if (!r.quiet)
        fprintf (stderr, "ddpm: noise sigma %g/255 -> start timestep %d\n", noisy_sigma, p.start_timestep);
    }

  if (!(ctx = new_context (model, &r, &error)))
    goto fail;
  Progress prog = { "denoise", -1, g_get_monotonic_time (), r.quiet, 0 };
  ddpm_context_set_progress (ctx, on_progress, &prog, 0);
  install_sigint (ctx);
  gboolean ok = ddpm_sample (ctx, &p, ypad, &error);
  uninstall_sigint ();
  print_tuning (ctx, &r);
  if (!ok)
    goto fail;
  image_crop (ypad, c, hp, wp, h, w, y);
  channel_map_from_model (&map, y, img->data, pix, plane);
  if (!cli_png_save (out_path, pix, img->channels, h, w, &error))
    goto fail;
  run_options_clear (&r);
  sampler_options_clear (&so);
  return EXIT_OK;

fail:
  run_options_clear (&r);
  sampler_options_clear (&so);
  return report_error (error);
}

/* ---- info -------------------------------------------------------------------------------------------- */

static int
cmd_info (int argc, char **argv)
{
  const char *cmd = "info";
  g_autofree char *model_dir = NULL;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "diffusers UNet2DModel (or pipeline) folder", "DIR" },
    { NULL },
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("- describe a model folder");
  g_option_context_add_main_entries (oc, entries, NULL);
  int rc = parse_options (oc, cmd, &argc, &argv);
  if (rc == EXIT_OK && !model_dir && argc == 2)
    model_dir = g_strdup (argv[1]);  /* `ddpm info DIR` works too */
  else if (rc == EXIT_OK && argc > 1)
    rc = usage_error (cmd, "unexpected argument '%s'", argv[1]);
  if (rc == EXIT_OK && !model_dir)
    rc = usage_error (cmd, "--model DIR is required");
  if (rc != EXIT_OK)
    return rc;

  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) model = load_model (model_dir, &error);
  if (!model)
    return report_error (error);
  g_autofree char *text = ddpm_model_describe (model);
  fputs (text ? text : "", stdout);
  if (text && *text && text[strlen (text) - 1] != '\n')
    fputc ('\n', stdout);
  return EXIT_OK;
}

/* ---- bench ------------------------------------------------------------------------------------------- */

static int
compare_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

static int
cmd_bench (int argc, char **argv)
{
  const char *cmd = "bench";
  RunOptions r = { 0 };
  g_autofree char *config_name = NULL;
  int batch = 1, iters = 10, warmup = 2, height = 0, width = 0, t = 500;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_STRING, &config_name, "a published architecture with random weights: "
      "cifar10-32 or celebahq-256", "NAME" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, "batch size (default 1)", "B" },
    { "iters", 'n', 0, G_OPTION_ARG_INT, &iters, "timed forwards (default 10)", "N" },
    { "warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "untimed forwards first (default 2)", "N" },
    { "height", 'H', 0, G_OPTION_ARG_INT, &height, "input height (default: sample_size)", "H" },
    { "width", 'W', 0, G_OPTION_ARG_INT, &width, "input width (default: sample_size)", "W" },
    { "timestep", 0, 0, G_OPTION_ARG_INT, &t, "timestep fed to the UNet (default 500)", "T" },
    { NULL },
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("- time UNet forwards (ddpm_context_eps)");
  g_option_context_set_description (
    oc, "Prints one machine-readable line on stdout:\n"
        "  bench config=NAME batch=B height=H width=W device=cpu|cuda precision=P threads=N warmup=N iters=N\n"
        "        median_ms=X min_ms=X mean_ms=X images_per_s=X device_name=\"...\"\n"
        "(key=value pairs separated by spaces; only device_name is quoted: split it with shlex). Times are per\n"
        "forward of the whole batch, including the host<->device copies of x and eps.");
  g_option_context_add_main_entries (oc, entries, NULL);
  add_run_entries (oc, &r, TRUE);
  int rc = parse_options (oc, cmd, &argc, &argv);
  if (rc == EXIT_OK)
    rc = check_run_options (cmd, &r, FALSE);
  if (rc == EXIT_OK && !r.model == !config_name)
    rc = usage_error (cmd, "give exactly one of --model DIR and --config NAME");
  if (rc == EXIT_OK && (batch < 1 || iters < 1 || warmup < 0 || height < 0 || width < 0 || t < 0))
    rc = usage_error (cmd, "--batch and --iters must be >= 1, --warmup, --height, --width, --timestep >= 0");
  if (rc == EXIT_OK && argc > 1)
    rc = usage_error (cmd, "unexpected argument '%s'", argv[1]);
  if (rc != EXIT_OK)
    {
      run_options_clear (&r);
      return rc;
    }

  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmModel) model = NULL;
  g_autoptr (DdpmContext) ctx = NULL;
  g_autofree float *x = NULL, *eps = NULL;
  g_autofree int64_t *tv = NULL;
  g_autofree double *ms = NULL;
  g_autofree char *label = NULL, *quoted = NULL;

  if (config_name)
    {
      DdpmUNetConfig cfg;
      if (!ddpm_unet_config_named (config_name, &cfg, &error))
        {
          run_options_clear (&r);
          return usage_error (cmd, "%s", error->message);
        }
      if (!(model = ddpm_model_new_random (&cfg, 0, &error)))
        goto fail;
      label = g_strdup (config_name);
    }
  else
    {
      if (!(model = load_model (r.model, &error)))
        goto fail;
      label = g_path_get_basename (r.model);
    }
  int size = ddpm_model_sample_size (model);
  height = height ? height : size;
  width = width ? width : size;
  if (height <= 0 || width <= 0)
    {
      run_options_clear (&r);
      return usage_error (cmd, "the model has no sample_size: give --height and --width");
    }
  if (!check_image_dims (label, model, ddpm_model_in_channels (model), height, width, &error))
    goto fail;
  size_t n_in, n_out;
  int64_t in_shape[4] = { batch, ddpm_model_in_channels (model), height, width };
  int64_t out_shape[4] = { batch, ddpm_model_out_channels (model), height, width };
  if (!checked_count (&n_in, 4, in_shape) || !checked_count (&n_out, 4, out_shape) ||
      !(x = alloc_floats (n_in, label, &error)) || !(eps = alloc_floats (n_out, label, &error)))
    {
      if (!error)
        g_set_error (&error, DDPM_ERROR, DDPM_ERROR_LIMIT, "%s: batch too large", label);
      goto fail;
    }
  ddpm_randn (0, 0, 0, n_in, x);
  tv = g_new (int64_t, batch);
  for (int b = 0; b < batch; b++)
    tv[b] = t;
  if (!(ctx = new_context (model, &r, &error)))
    goto fail;
  install_sigint (ctx);
  ms = g_new (double, iters);
  for (int i = 0; i < warmup + iters; i++)
    {
      gint64 t0 = g_get_monotonic_time ();
      if (!ddpm_context_eps (ctx, x, tv, batch, height, width, eps, &error))
        goto fail;
      double dt = (g_get_monotonic_time () - t0) / 1e3;
      if (i >= warmup)
        ms[i - warmup] = dt;
      if (!r.quiet)
        fprintf (stderr, "ddpm: bench: %s %d: %.2f ms\n", i < warmup ? "warm-up" : "forward",
                 i < warmup ? i + 1 : i - warmup + 1, dt);
      if (interrupted)
        {
          g_set_error (&error, DDPM_ERROR, DDPM_ERROR_CANCELLED, "bench: cancelled");
          goto fail;
        }
    }
  uninstall_sigint ();
  print_tuning (ctx, &r);

  double mean = 0;
  for (int i = 0; i < iters; i++)
    mean += ms[i] / iters;
  qsort (ms, iters, sizeof (double), compare_double);
  double median = iters % 2 ? ms[iters / 2] : 0.5 * (ms[iters / 2 - 1] + ms[iters / 2]);
  const char *dev_name = ddpm_context_device_name (ctx);
  const char *dev = g_str_has_prefix (dev_name, "cuda") ? "cuda" : "cpu";
  quoted = g_strdup (dev_name);
  g_strdelimit (quoted, "\"\n", '\'');
  printf ("bench config=%s batch=%d height=%d width=%d device=%s precision=%s threads=%d warmup=%d iters=%d "
          "median_ms=%.3f min_ms=%.3f mean_ms=%.3f images_per_s=%.3f device_name=\"%s\"\n",
          label, batch, height, width, dev, precision_name (ddpm_context_precision (ctx)), omp_get_max_threads (),
          warmup, iters, median, ms[0], mean, batch * 1000.0 / median, quoted);
  fflush (stdout);
  run_options_clear (&r);
  return EXIT_OK;

fail:
  uninstall_sigint ();
  run_options_clear (&r);
  return report_error (error);
}

/* ---- compare ----------------------------------------------------------------------------------------- */

static double
npy_value (const DdpmNpyArray *a, size_t i)
{
  switch (a->type)
    {
    case DDPM_NPY_F32: return ((const float *) a->data)[i];
    case DDPM_NPY_F64: return ((const double *) a->data)[i];
    case DDPM_NPY_I64: return (double) ((const int64_t *) a->data)[i];
    case DDPM_NPY_I32: return ((const int32_t *) a->data)[i];
    }
  return NAN;
}

static char *
index_string (const DdpmNpyArray *a, size_t flat)
{
  int64_t idx[8];
  for (int d = a->ndim - 1; d >= 0; d--)
    {
      idx[d] = a->shape[d] ? (int64_t) (flat % (size_t) a->shape[d]) : 0;
      flat = a->shape[d] ? flat / (size_t) a->shape[d] : 0;
    }
  GString *s = g_string_new ("[");
  for (int d = 0; d < a->ndim; d++)
    g_string_append_printf (s, d ? ", %" G_GINT64_FORMAT : "%" G_GINT64_FORMAT, idx[d]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

static int
cmd_compare (int argc, char **argv)
{
  const char *cmd = "compare";
  double max_abs = -1, max_rel = -1;
  GOptionEntry entries[] = {
    { "max-abs", 0, 0, G_OPTION_ARG_DOUBLE, &max_abs, "fail when max |A - B| exceeds E", "E" },
    { "max-rel", 0, 0, G_OPTION_ARG_DOUBLE, &max_rel, "fail when max |A - B| / max(|B|, 1e-6) exceeds R", "R" },
    { NULL },
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("A.npy B.npy - compare two arrays (B is the reference)");
  g_option_context_set_description (oc, "Exit status 0 when within tolerance, 1 when not (or when the shapes differ or a "
                                        "value is NaN/Inf), 2 on usage errors.");
  g_option_context_add_main_entries (oc, entries, NULL);
  int rc = parse_options (oc, cmd, &argc, &argv);
  if (rc == EXIT_OK && argc != 3)
    rc = usage_error (cmd, "give two .npy files");
  if (rc != EXIT_OK)
    return rc;

  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmNpyArray) a = ddpm_npy_load (argv[1], &error);
  if (!a)
    return report_error (error);
  g_autoptr (DdpmNpyArray) b = ddpm_npy_load (argv[2], &error);
  if (!b)
    return report_error (error);
  g_autofree char *sa = shape_string (a);
  g_autofree char *sb = shape_string (b);
  if (a->ndim != b->ndim || memcmp (a->shape, b->shape, sizeof (int64_t) * a->ndim) != 0)
    {
      fprintf (stderr, "ddpm: %s: shape %s differs from %s %s\n", argv[1], sa, argv[2], sb);
      return EXIT_FAIL;
    }
  size_t n = (size_t) a->numel, worst = 0, nonfinite = 0;
  double worst_abs = 0, worst_rel = 0;
  for (size_t i = 0; i < n; i++)
    {
      double va = npy_value (a, i), vb = npy_value (b, i);
      if (!isfinite (va) || !isfinite (vb))
        {
          nonfinite++;
          continue;
        }
      double d = fabs (va - vb);
      if (d > worst_abs)
        {
          worst_abs = d;
          worst = i;
        }
      worst_rel = fmax (worst_rel, d / fmax (fabs (vb), 1e-6));
    }
  g_autofree char *where = index_string (a, worst);
  printf ("compare %s %s: n=%zu max_abs=%.6g at %s (a=%.9g, b=%.9g) max_rel=%.6g nonfinite=%zu\n", argv[1], argv[2], n,
          worst_abs, where, n ? npy_value (a, worst) : 0.0, n ? npy_value (b, worst) : 0.0, worst_rel, nonfinite);
  gboolean ok = nonfinite == 0 && (max_abs < 0 || worst_abs <= max_abs) && (max_rel < 0 || worst_rel <= max_rel);
  if (!ok)
    fprintf (stderr, "ddpm: %s: differs from %s beyond the tolerance\n", argv[1], argv[2]);
  return ok ? EXIT_OK : EXIT_FAIL;
}

/* ---- main -------------------------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *summary;
} Command;

static const Command commands[] = {
  { "eps", cmd_eps, "one UNet forward on .npy arrays: --model DIR --x X.npy --t T.npy --out OUT.npy" },
  { "sample", cmd_sample, "sample images: --model DIR [--sampler ddpm|ddim] [--steps N] --out OUT.npy|OUT.png" },
  { "noise", cmd_noise, "forward diffusion of a picture: --t T [--seed S] IN.png --out OUT.png" },
  { "denoise", cmd_denoise, "SDEdit / denoising: --model DIR --strength F | --noisy-sigma S IN.png --out OUT.png" },
  { "info", cmd_info, "describe a model: --model DIR" },
  { "bench", cmd_bench, "time UNet forwards: --model DIR | --config cifar10-32|celebahq-256 [--batch B]" },
  { "compare", cmd_compare, "compare two .npy arrays: A.npy B.npy [--max-abs E] [--max-rel R]" },
};

static void
print_usage (FILE *f)
{
  fprintf (f, "Usage: ddpm COMMAND [OPTION...]\n\nDenoising diffusion (diffusers UNet2DModel + DDPM/DDIM) on the "
              "command line.\n\nCommands:\n");
  for (size_t i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf (f, "\n'ddpm COMMAND --help' lists a command's options. Exit status: 0 success, 1 error, 2 usage error, "
              "130 cancelled.\n");
}

int
main (int argc, char **argv)
{
  /* Character set only (GOption's help and UTF-8 file names); numbers stay in the C locale so that the
   * machine-readable lines always use a decimal point. */
  setlocale (LC_CTYPE, "");
  if (argc < 2)
    {
      print_usage (stderr);
      return EXIT_USAGE;
    }
  if (g_str_equal (argv[1], "--help") || g_str_equal (argv[1], "-h") || g_str_equal (argv[1], "help"))
    {
      print_usage (stdout);
      return EXIT_OK;
    }
  if (g_str_equal (argv[1], "--version"))
    {
      printf ("ddpm 0.1.0\n");
      return EXIT_OK;
    }
  for (size_t i = 0; i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (argv[1], commands[i].name))
      {
        g_autofree char *prgname = g_strdup_printf ("ddpm %s", commands[i].name);
        g_set_prgname (prgname);
        return commands[i].run (argc - 1, argv + 1);
      }
  fprintf (stderr, "ddpm: unknown command '%s' (see 'ddpm --help')\n", argv[1]);
  return EXIT_USAGE;
}
