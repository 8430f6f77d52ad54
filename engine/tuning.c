/* tuning.c: picks, per (batch, height, width), the fastest of the backend's variants whose output agrees with
 * its defaults, as cuDNN's benchmark mode picks convolution algorithms.
 *
 * Why: the CUDA backend has alternative kernels (GroupNorm over clusters, held-back split-K sums, wgmma
 * convolutions, ...) whose speed depends on the GPU, the model and the shape; a default chosen on one card is
 * not the best on every one, and a path that computes wrongly on some card must never be picked. So each variant
 * runs the planned forward on a fixed random input: it must agree with the defaults within the precision's bound
 * (below) and be at least TUNE_MIN_GAIN faster to be kept.
 *
 * Decisions are kept in an ini file ($DDPM_TUNING_FILE, else $XDG_CACHE_HOME/gimp-ddpm/tuning.ini), one group per
 * device description + backend build + architecture + shape + the variants offered; a stale build, another GPU or
 * a changed variant list tunes again. */
#include "context.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#define TUNE_MIN_GAIN 0.02         /* a variant must be 2 % faster than the defaults: less is timing noise */
#define TUNE_ROUND_US 10000        /* each timed round of graph replays lasts about this long */
#define TUNE_ROUNDS 5              /* the fastest round counts (the least disturbed one) */
#define TUNE_MAX_VARIANTS 64

/* Agreement with the defaults, on eps of magnitude ~1 (scaled up where a model's eps is larger): the bounds of
 * tests/gpu/model_checks.c against float64, which the defaults and every variant each meet (fp16 measured
 * ~1.5e-3, bf16 ~1.5e-2 there); a wrong kernel is off by O(1). */
static double
agreement_bound (DdpmPrecision p)
{
  return p == DDPM_PRECISION_FP16 ? 1e-2 : p == DDPM_PRECISION_BF16 ? 8e-2 : 1e-4;
}

static const char *
precision_word (DdpmPrecision p)
{
  return p == DDPM_PRECISION_FP16 ? "fp16" : p == DDPM_PRECISION_BF16 ? "bf16" : "fp32";
}

/* The architecture as text: what the kernels' shapes depend on (not the weights' values). */
static void
append_architecture (GString *s, const DdpmUNetConfig *c)
{
  g_string_append_printf (s, "in %d out %d channels", c->in_channels, c->out_channels);
  for (int i = 0; i < c->n_levels; i++)
    g_string_append_printf (s, "%c%d%s%s", i ? ',' : ' ', c->block_out_channels[i], c->down_attn[i] ? "a" : "",
                            c->up_attn[i] ? "u" : "");
  g_string_append_printf (s, " layers %d heads-dim %d groups %d/%d temb %d%s%s%s%s", c->layers_per_block,
                          c->attention_head_dim, c->norm_num_groups, c->attn_norm_num_groups, c->time_embedding_dim,
                          c->scale_shift ? " scale-shift" : "", c->add_attention ? " mid-attn" : "",
                          c->mid_attn_no_norm ? " no-norm" : "", c->center_input_sample ? " centred" : "");
}

/* The cache's key for this context's plan: the defaults' description, the build, the shape, the offer. */
static char *
tuning_key (DdpmContext *ctx, const char *defaults_description, int n_variants)
{
  DdpmBackend *be = ctx->be;
  GString *s = g_string_new (defaults_description);
  g_string_append_printf (s, " | build %s | ", be->build_id);
  append_architecture (s, &ctx->model->config);
  g_string_append_printf (s, " | batch %d %dx%d | variants", ctx->B, ctx->W, ctx->H);
  for (int i = 1; i < n_variants; i++)
    g_string_append_printf (s, "%s%s", i > 1 ? "; " : " ", be->ops->variant_name (be, i));
  return g_string_free (s, FALSE);
}

static char *
tuning_file (void)
{
  const char *env = g_getenv ("DDPM_TUNING_FILE");
  if (env != NULL && *env != '\0')
    return g_strdup (env);
  return g_build_filename (g_get_user_cache_dir (), "gimp-ddpm", "tuning.ini", NULL);
}

/* The settings the cache holds for key (a copy), or NULL. */
static char *
cache_lookup (const char *key)
{
  g_autofree char *path = tuning_file ();
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, NULL))
    return NULL;
  g_autofree char *group = g_compute_checksum_for_string (G_CHECKSUM_SHA1, key, -1);
  g_autofree char *stored_key = g_key_file_get_string (kf, group, "key", NULL);
  if (stored_key == NULL || strcmp (stored_key, key) != 0)
    return NULL;
  return g_key_file_get_string (kf, group, "variant", NULL);
}

/* Keeps the decision; a cache that cannot be written is only reported (tuning then runs again next time). */
static void
cache_store (const char *key, const char *variant, double ratio, GString *report)
{
  g_autofree char *path = tuning_file ();
  g_autofree char *dir = g_path_get_dirname (path);
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_key_file_load_from_file (kf, path, G_KEY_FILE_KEEP_COMMENTS, NULL);
  g_autofree char *group = g_compute_checksum_for_string (G_CHECKSUM_SHA1, key, -1);
  g_key_file_set_string (kf, group, "key", key);
  g_key_file_set_string (kf, group, "variant", variant);
  g_key_file_set_double (kf, group, "time_ratio", ratio);
  g_autoptr (GError) error = NULL;
  if (g_mkdir_with_parents (dir, 0700) != 0 || !g_key_file_save_to_file (kf, path, &error))
    g_string_append_printf (report, "  (not kept: %s cannot be written%s%s)\n", path, error ? ": " : "",
                            error ? error->message : "");
}

/* Plans the UNet for the context's shape under the backend's current variant. */
static gboolean
replan (DdpmContext *ctx, GError **error)
{
  ddpm_unet_forget_plan (ctx->unet);
  ctx->eps_graph = FALSE;
  return ddpm_unet_plan (ctx->unet, ctx->B, ctx->H, ctx->W, error);
}

/* Microseconds per forward: the fastest of TUNE_ROUNDS rounds of `per_round` queued forwards each. */
static gboolean
time_forwards (DdpmContext *ctx, int per_round, double *us, GError **error)
{
  DdpmBackend *be = ctx->be;
  *us = INFINITY;
  for (int r = 0; r < TUNE_ROUNDS; r++)
    {
      const gint64 t0 = g_get_monotonic_time ();
      for (int i = 0; i < per_round; i++)
        if (!ddpm_context_forward (ctx, error))
          return FALSE;
      be->ops->synchronize (be);
      *us = fmin (*us, (double) (g_get_monotonic_time () - t0) / per_round);
    }
  return ddpm_context_check_device (ctx, error);
}

/* Largest |a - b| over n values; infinity where either is not finite. */
static double
max_difference (const float *a, const float *b, size_t n)
{
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    {
      if (!isfinite (a[i]) || !isfinite (b[i]))
        return INFINITY;
      m = fmax (m, fabs ((double) a[i] - b[i]));
    }
  return m;
}

static double
max_magnitude (const float *a, size_t n)
{
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    m = fmax (m, fabs ((double) a[i]));
  return m;
}

/* One tuning run's state: the defaults' eps on the fixed input, the agreement bound, replays per round. */
typedef struct {
  DdpmContext *ctx;
  GString *report;
  float *want;                     /* (n_eps) the defaults' eps */
  double bound;                    /* agreement_bound times the scale of the defaults' eps */
  int per_round;
  double default_us;               /* the defaults' time per forward (the better of two) */
  const char *timed[TUNE_MAX_VARIANTS + 1];   /* the variants timed so far, agreeing with the defaults */
  double times[TUNE_MAX_VARIANTS + 1];        /* their times per forward, us */
  char *frozen[TUNE_MAX_VARIANTS + 1];        /* their settings as the backend froze them (variant_frozen) */
  int n_timed;
} Tuner;

typedef enum { TRIAL_TIMED, TRIAL_SKIPPED, TRIAL_FAILED } TrialResult;

/* Settings for a report: "defaults" for "", a value listing several entries (frozen picks) as their count. */
static char *
settings_label (const char *settings)
{
  if (*settings == '\0')
    return g_strdup ("defaults");
  g_auto (GStrv) tokens = g_strsplit (settings, " ", -1);
  GString *s = g_string_new (NULL);
  for (char **t = tokens; *t != NULL; t++)
    {
      const char *eq = strchr (*t, '=');
      guint entries = 1;
      for (const char *c = eq; c != NULL && (c = strchr (c + 1, ',')) != NULL;)
        entries++;
      if (s->len)
        g_string_append_c (s, ' ');
      if (entries > 1)
        g_string_append_printf (s, "%.*s=(%u entries)", (int) (eq - *t), *t, entries);
      else
        g_string_append (s, *t);
    }
  return g_string_free (s, FALSE);
}

/* What the backend runs now, with what it timed while planning written out (NULL: settings as they are). */
static char *
frozen_settings (DdpmBackend *be, const char *settings)
{
  const char *frozen = be->ops->variant_frozen != NULL ? be->ops->variant_frozen (be) : NULL;
  return g_strdup (frozen != NULL ? frozen : settings);
}

/* The context's status line before a trial; format, ...: what it times ("the defaults", "alternative 3 of 13"). */
static void G_GNUC_PRINTF (2, 3)
tell (const DdpmContext *ctx, const char *format, ...)
{
  if (ctx->status == NULL)
    return;
  va_list args;
  va_start (args, format);
  g_autofree char *what = g_strdup_vprintf (format, args);
  va_end (args);
  char batch[32] = "";
  if (ctx->B > 1)
    g_snprintf (batch, sizeof batch, " (batch %d)", ctx->B);
  g_autofree char *line = g_strdup_printf ("Tuning the kernels at %dx%d%s: %s", ctx->W, ctx->H, batch, what);
  ctx->status (line, ctx->status_data);
}

/* Runs the backend under settings: planned, one forward checked against the defaults' eps (the defaults' own
 * first trial records it), then timed. SKIPPED (with a report line) where the settings cannot run here, cannot
 * be planned or disagree; FAILED (error set) on a device failure, which ends the context's usefulness, or when
 * the context was cancelled (nothing is cached then; the next plan tunes again). */
static TrialResult
trial (Tuner *tu, const char *settings, gboolean first, double *us, GError **error)
{
  DdpmContext *ctx = tu->ctx;
  DdpmBackend *be = ctx->be;
  g_autofree char *label = settings_label (settings);
  if (ddpm_context_is_cancelled (ctx))    /* a Cancel stops tuning too, between trials (each well under a second) */
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_CANCELLED, "cancelled while tuning (before %s)", label);
      return TRIAL_FAILED;
    }
  g_autoptr (GError) why = NULL;
  if (!be->ops->set_variant (be, settings, &why) || !replan (ctx, &why))
    {
      if (*settings == '\0')       /* the defaults must run */
        {
          g_propagate_error (error, g_steal_pointer (&why));
          return TRIAL_FAILED;
        }
      g_string_append_printf (tu->report, "  %-40s not here: %s\n", label, why->message);
      return TRIAL_SKIPPED;
    }
  float *got = first ? tu->want : ctx->eps_host;
  if (!ddpm_context_forward_to_host (ctx, got, error))
    goto failed;
  double diff = 0.0;
  if (first)
    {
      tu->bound *= fmax (1.0, max_magnitude (tu->want, ctx->n_eps));
      /* replays per round from one more forward's time */
      const gint64 t0 = g_get_monotonic_time ();
      if (!ddpm_context_forward (ctx, error))
        goto failed;
      be->ops->synchronize (be);
      const double one = (double) MAX (g_get_monotonic_time () - t0, 1);
      tu->per_round = CLAMP ((int) (TUNE_ROUND_US / one), 3, 200);
    }
  else
    diff = max_difference (got, tu->want, ctx->n_eps);
  if (!(diff <= tu->bound))
    {
      g_string_append_printf (tu->report, "  %-40s disagrees: max |eps - defaults'| %.3g > bound %.3g\n", label, diff,
                              tu->bound);
      return TRIAL_SKIPPED;
    }
  if (!time_forwards (ctx, tu->per_round, us, error))
    goto failed;
  if (*settings == '\0')
    {
      tu->default_us = fmin (tu->default_us, *us);
      g_string_append_printf (tu->report, "  %-40s %9.3f ms%s\n", label, *us / 1e3, first ? "" : " (again)");
    }
  else
    g_string_append_printf (tu->report, "  %-40s %9.3f ms  %.3fx  max |eps - defaults'| %.2g (bound %.2g)\n", label,
                            *us / 1e3, *us / tu->default_us, diff, tu->bound);
  return TRIAL_TIMED;

failed:
  g_prefix_error (error, "tuning, %s: ", label);
  return TRIAL_FAILED;
}

/* trial of a variant, recorded in tu->timed where it ran and agreed; FALSE on a device failure. settings must
 * outlive tu. */
static gboolean
candidate (Tuner *tu, const char *settings, GError **error)
{
  double us;
  const TrialResult r = trial (tu, settings, FALSE, &us, error);
  if (r == TRIAL_TIMED)
    {
      tu->timed[tu->n_timed] = settings;
      tu->frozen[tu->n_timed] = frozen_settings (tu->ctx->be, settings);
      tu->times[tu->n_timed++] = us;
    }
  return r != TRIAL_FAILED;
}

/* Whether two settings ("A=x B=y") set no switch in common. */
static gboolean
disjoint (const char *a, const char *b)
{
  g_auto (GStrv) ta = g_strsplit (a, " ", -1);
  g_auto (GStrv) tb = g_strsplit (b, " ", -1);
  for (char **x = ta; *x != NULL; x++)
    for (char **y = tb; *y != NULL; y++)
      {
        const size_t nx = strcspn (*x, "="), ny = strcspn (*y, "=");
        if (nx > 0 && nx == ny && strncmp (*x, *y, nx) == 0)
          return FALSE;
      }
  return TRUE;
}

/* Times the defaults, every variant offered, the union of the two best that each save TUNE_MIN_GAIN and share no
 * switch, and the defaults again. Returns the settings to keep as the backend froze them, or NULL on a device
 * failure; *kept: those settings as offered ("" for the defaults); *kept_ratio: the fastest agreeing variant's
 * time over the defaults' (infinity: none ran). */
static char *
time_variants (DdpmContext *ctx, int n_variants, GString *report, char **kept, double *kept_ratio, GError **error)
{
  DdpmBackend *be = ctx->be;
  g_autofree int *t = g_new (int, ctx->B);
  for (int b = 0; b < ctx->B; b++)
    t[b] = ctx->model->schedule.num_train_timesteps / 2;
  /* a fixed input: x ~ N(0, 1) from the backend's own generator, a mid timestep */
  be->ops->randn (be, ctx->x, 0x7475e1e5ull, 0, ctx->n_x / ctx->B, ctx->B);
  if (!ddpm_context_set_timesteps (ctx, t, error))
    return NULL;

  g_autofree float *want = g_new (float, ctx->n_eps);
  Tuner tu = { .ctx = ctx, .report = report, .want = want, .bound = agreement_bound (be->precision), .per_round = 1,
               .default_us = INFINITY };
  char *result = NULL;
  g_autofree char *both = NULL;    /* declared before the first goto: cleaned up on every path */
  double us;
  tell (ctx, "the defaults");
  if (trial (&tu, "", TRUE, &us, error) != TRIAL_TIMED)
    goto out;
  for (int v = 1; v < n_variants; v++)
    {
      tell (ctx, "alternative %d of %d", v, n_variants - 1);
      if (!candidate (&tu, be->ops->variant_name (be, v), error))
        goto out;
    }
  const double saving = 1.0 - TUNE_MIN_GAIN;
  const double *times = tu.times;
  int b1 = -1, b2 = -1;
  for (int i = 0; i < tu.n_timed; i++)
    if (times[i] < saving * tu.default_us && (b1 < 0 || times[i] < times[b1]))
      b1 = i;
  for (int i = 0; b1 >= 0 && i < tu.n_timed; i++)
    if (i != b1 && times[i] < saving * tu.default_us && disjoint (tu.timed[i], tu.timed[b1])
        && (b2 < 0 || times[i] < times[b2]))
      b2 = i;
  /* as offered, not frozen: what one of them timed while planning is timed again beside the other */
  both = b2 >= 0 ? g_strdup_printf ("%s %s", tu.timed[b1], tu.timed[b2]) : NULL;
  if (both != NULL)
    {
      tell (ctx, "the two best together");
      if (!candidate (&tu, both, error))
        goto out;
    }
  tell (ctx, "the defaults again");
  if (trial (&tu, "", FALSE, &us, error) != TRIAL_TIMED)
    goto out;
  int best = -1;
  for (int i = 0; i < tu.n_timed; i++)
    if (best < 0 || times[i] < times[best])
      best = i;
  *kept_ratio = best >= 0 ? times[best] / tu.default_us : INFINITY;
  if (best >= 0 && times[best] < saving * tu.default_us)
    {
      *kept = g_strdup (tu.timed[best]);
      result = g_strdup (tu.frozen[best]);
    }
  else
    {
      *kept = g_strdup ("");
      result = frozen_settings (be, "");   /* the backend is on the defaults, planned (the last trial) */
    }
out:
  for (int i = 0; i < tu.n_timed; i++)
    g_free (tu.frozen[i]);
  return result;
}

gboolean
ddpm_context_tune (DdpmContext *ctx, GError **error)
{
  DdpmBackend *be = ctx->be;
  if (ctx->tuning == DDPM_TUNING_OFF)
    return TRUE;
  if (be->ops->set_variant == NULL || be->ops->variant_name == NULL)
    {
      g_free (ctx->tuning_report);
      ctx->tuning_report = g_strdup_printf ("tuning: %s has no variants to time\n", be->description);
      return TRUE;
    }
  int n_variants = 0;
  while (n_variants < TUNE_MAX_VARIANTS && be->ops->variant_name (be, n_variants) != NULL)
    n_variants++;
  /* the key names the defaults' description, whatever variant the last shape left */
  if (!be->ops->set_variant (be, "", error))
    return FALSE;
  g_autofree char *defaults_description = g_strdup (be->description);
  g_autofree char *key = tuning_key (ctx, defaults_description, n_variants);
  GString *report = g_string_new (NULL);
  g_string_append_printf (report, "tuning batch %d at %dx%d, %s, on %s:\n", ctx->B, ctx->W, ctx->H,
                          precision_word (be->precision), defaults_description);
  /* chosen: the settings to run, as the backend froze them (its timed picks written out); kept: as offered */
  g_autofree char *chosen = ctx->tuning == DDPM_TUNING_CACHED ? cache_lookup (key) : NULL;
  g_autofree char *kept = NULL;
  gboolean chosen_set = FALSE;     /* the backend runs chosen already (the defaults are set above) */
  double ratio = 1.0;
  g_autoptr (GError) why = NULL;
  if (chosen != NULL && be->ops->set_variant (be, chosen, &why))
    {
      chosen_set = TRUE;
      kept = g_strdup (chosen);
      g_autofree char *label = settings_label (chosen);
      g_string_append_printf (report, "  kept from the cache: %s\n", label);
    }
  else if (chosen != NULL)
    {
      /* an edited file, or a probe that now says no: decide again */
      g_autofree char *label = settings_label (chosen);
      g_string_append_printf (report, "  the cache's %s cannot run here (%s): timing again\n", label, why->message);
      g_clear_pointer (&chosen, g_free);
    }
  if (chosen == NULL && n_variants <= 1)
    {
      chosen = g_strdup ("");
      kept = g_strdup ("");
      chosen_set = TRUE;
      g_string_append (report, "  no variants to try\n");
    }
  else if (chosen == NULL)
    {
      chosen = time_variants (ctx, n_variants, report, &kept, &ratio, error);
      if (chosen == NULL)
        {
          g_string_free (report, TRUE);
          be->ops->set_variant (be, "", NULL);   /* cancelled or failed: not left on a variant half-way through */
          return FALSE;
        }
      g_autofree char *label = settings_label (kept);
      g_string_append_printf (report, "  kept: %s", label);
      if (*kept)
        g_string_append_printf (report, " (%.3fx the defaults' time)\n", ratio);
      else if (!isfinite (ratio))
        g_string_append (report, " (no other variant ran and agreed)\n");
      else
        g_string_append_printf (report, " (the fastest variant took %.3fx their time; a variant must save %.0f %%)\n",
                                ratio, TUNE_MIN_GAIN * 100);
      cache_store (key, chosen, *kept && isfinite (ratio) ? ratio : 1.0, report);
    }
  g_free (ctx->tuning_report);
  ctx->tuning_report = g_string_free (report, FALSE);
  if ((!chosen_set && !be->ops->set_variant (be, chosen, error)) || !replan (ctx, error))
    return FALSE;
  g_free (ctx->device_name);
  g_autofree char *label = settings_label (kept);
  ctx->device_name = *kept ? g_strdup_printf ("%s, tuned: %s", be->description, label) : g_strdup (be->description);
  return TRUE;
}
