/* test_tuning.c: the tuner's decisions (engine/tuning.c) on a CPU backend given test variants whose speed and
 * correctness are set here, so every outcome is known in advance:
 *   defaults        the forward sleeps SLEEP_US (in timestep_embedding, once per forward on the CPU)
 *   A=1             sleeps 3/8 of it less                      agrees   (saves ~35 %)
 *   B=1             sleeps 5/8 of it less                      agrees   (saves ~60 %)
 *   WRONG=1         no sleep, every GroupNorm output x 1.01    disagrees (eps moves by far more than 1e-4)
 *   NOTHERE=1       set_variant refuses it                     not here
 *   CANCEL=1        set_variant presses Cancel                 the tuning (and the plan) stops
 *   SLOW=1          sleeps 1/8 of it more                      agrees, saves nothing: never kept
 * B=1 also stands for a variant that times something while planning (the CUDA backend's CONV_PICK=timed): its
 * frozen settings (variant_frozen) carry " PICKS=b1,b2", which the tuner must set and cache in its place.
 * Expected: A and B each save >= 2 % and share no switch, so their union "B=1 A=1" (the best first) is tried:
 * it sleeps not at all and agrees, so it is kept (the fastest); WRONG=1, the fastest of all, is refused. Then
 * the cache gives the decision back without timing anything, a cached decision that cannot run is timed again,
 * a changed offer tunes again, and a run where
 * nothing saves 2 % keeps the defaults (SLOW=1 would have to seem 10 % faster than it is). The sleeps decide
 * (the cifar-like fixture's forward takes ~1 ms on two threads; SLEEP_US is at least 8 times that). */
#include "context.h"
#include "test_util.h"

#include <glib/gstdio.h>
#include <omp.h>

#include <string.h>

/* The defaults' sleep per forward: 8 ms, or 8 times the forward's own time where that is longer (sanitizers,
 * slow machines), so that the sleeps decide every comparison. Set in main. */
static int SLEEP_US = 8000;

/* The test backend: the CPU backend with its ops table replaced by a copy with these wrappers. Ops get no
 * user data, so the state is the process's (one test backend at a time). */
static struct {
  DdpmContext *ctx;                /* the context on it, for CANCEL=1 */
  const DdpmBackendOps *cpu_ops;
  DdpmBackendOps ops;
  const char *const *offer;        /* NULL-terminated; [0] "" */
  char settings[128];
  char frozen[160];
  int set_calls;                   /* set_variant calls */
} fake;

static gboolean
has (const char *switch_setting)
{
  g_auto (GStrv) tokens = g_strsplit (fake.settings, " ", -1);
  return g_strv_contains ((const char *const *) tokens, switch_setting);
}

static void
fake_timestep_embedding (DdpmBackend *be, const float *t, void *y, int B, int dim, gboolean flip, float freq_shift)
{
  fake.cpu_ops->timestep_embedding (be, t, y, B, dim, flip, freq_shift);
  int us = SLEEP_US;
  if (has ("A=1"))
    us -= SLEEP_US * 3 / 8;
  if (has ("B=1"))
    us -= SLEEP_US * 5 / 8;
  if (has ("SLOW=1"))
    us += SLEEP_US / 8;
  if (has ("WRONG=1"))
    us = 0;
  if (us > 0)
    g_usleep (us);
}

static void
fake_group_norm (DdpmBackend *be, const DdpmNormW *w, const void *x, void *y, int B, int C, int HW, int G, float eps,
                 const void *scale_shift, gboolean silu)
{
  fake.cpu_ops->group_norm (be, w, x, y, B, C, HW, G, eps, scale_shift, silu);
  if (has ("WRONG=1"))
    fake.cpu_ops->add_scaled (be, y, y, y, (size_t) B * C * HW, 0.505f);   /* (y + y) 0.505 = 1.01 y */
}

static const char *
fake_variant_name (DdpmBackend *be, int i)
{
  for (int k = 0; fake.offer[k] != NULL; k++)
    if (k == i)
      return fake.offer[k];
  return NULL;
}

static gboolean
fake_set_variant (DdpmBackend *be, const char *settings, GError **error)
{
  fake.set_calls++;
  if (strstr (settings, "CANCEL=1") != NULL)   /* as if the user pressed Cancel while this variant ran */
    ddpm_context_cancel (fake.ctx);
  if (strstr (settings, "NOTHERE=1") != NULL)
    {
      g_set_error (error, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED, "no such kernels here");
      return FALSE;
    }
  g_strlcpy (fake.settings, settings, sizeof fake.settings);
  return TRUE;
}

/* With B=1: the settings less any PICKS=, plus PICKS=b1,b2 (what planning "timed"); else NULL (as set). */
static const char *
fake_variant_frozen (DdpmBackend *be)
{
  if (!has ("B=1"))
    return NULL;
  g_auto (GStrv) tokens = g_strsplit (fake.settings, " ", -1);
  GString *s = g_string_new (NULL);
  for (char **t = tokens; *t != NULL; t++)
    if (**t != '\0' && !g_str_has_prefix (*t, "PICKS="))
      g_string_append_printf (s, "%s ", *t);
  g_string_append (s, "PICKS=b1,b2");
  g_strlcpy (fake.frozen, s->str, sizeof fake.frozen);
  g_string_free (s, TRUE);
  return fake.frozen;
}

/* A context on the test backend offering `offer`, tuning as asked, its cache in the test's folder. */
static DdpmContext *
fake_context (DdpmModel *model, const char *const *offer, DdpmTuning tuning)
{
  g_autoptr (GError) error = NULL;
  DdpmBackend *be = ddpm_backend_cpu_new (&error);
  g_assert_no_error (error);
  fake.cpu_ops = be->ops;
  fake.ops = *be->ops;
  fake.ops.timestep_embedding = fake_timestep_embedding;
  fake.ops.group_norm = fake_group_norm;
  fake.ops.variant_name = fake_variant_name;
  fake.ops.set_variant = fake_set_variant;
  fake.ops.variant_frozen = fake_variant_frozen;
  fake.offer = offer;
  fake.settings[0] = '\0';
  fake.set_calls = 0;
  be->ops = &fake.ops;
  g_strlcpy (be->build_id, "test", sizeof be->build_id);
  DdpmContext *ctx = ddpm_context_new_on_backend (model, be, NULL, &error);
  g_assert_no_error (error);
  ddpm_context_set_tuning (ctx, tuning);
  fake.ctx = ctx;
  return ctx;
}

/* Plans batch 1 at 16 x 16 (tuning as the context says) and returns the report. */
static const char *
plan (DdpmContext *ctx)
{
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_context_plan (ctx, 1, 16, 16, &error));
  g_assert_no_error (error);
  const char *report = ddpm_context_tuning_report (ctx);
  g_assert_nonnull (report);
  g_test_message ("%s", report);
  return report;
}

/* The report's line for settings (starting "  settings "), or NULL. */
static char *
line_of (const char *report, const char *settings)
{
  g_autofree char *head = g_strdup_printf ("\n  %s ", settings);
  const char *at = strstr (report, head);
  if (at == NULL)
    return NULL;
  at++;
  const char *end = strchr (at, '\n');
  return g_strndup (at, end ? (size_t) (end - at) : strlen (at));
}

static const char *const offer_all[] = { "", "A=1", "B=1", "WRONG=1", "NOTHERE=1", "SLOW=1", NULL };
static const char *const offer_slow[] = { "", "SLOW=1", NULL };
static const char *const offer_ab_only[] = { "", "A=1", "B=1", NULL };

/* $DDPM_TUNING_FILE in a new folder, removed with it by drop_cache. */
static char *
setup_cache (void)
{
  char *dir = g_dir_make_tmp ("ddpm-tuning-XXXXXX", NULL);
  g_assert_nonnull (dir);
  g_autofree char *file = g_build_filename (dir, "tuning.ini", NULL);
  g_setenv ("DDPM_TUNING_FILE", file, TRUE);
  return dir;
}

static void
drop_cache (char *dir)
{
  g_remove (g_getenv ("DDPM_TUNING_FILE"));
  g_rmdir (dir);
  g_free (dir);
  g_unsetenv ("DDPM_TUNING_FILE");
}

/* ddpm_context_set_status's lines, collected. */
static void
collect_status (const char *status, gpointer data)
{
  g_ptr_array_add (data, g_strdup (status));
}

static void
test_decisions (void)
{
  char *dir = setup_cache ();
  g_autoptr (DdpmModel) model = fixture_model_load ("models/cifar-like");
  g_autoptr (DdpmContext) ctx = fake_context (model, offer_all, DDPM_TUNING_CACHED);
  g_autoptr (GPtrArray) status = g_ptr_array_new_with_free_func (g_free);
  ddpm_context_set_status (ctx, collect_status, status);
  const char *report = plan (ctx);
  /* a status line before each trial, for UIs (the GIMP plug-in's progress bar) */
  static const char *const told[] = { "the defaults", "alternative 1 of 5", "alternative 2 of 5", "alternative 3 of 5",
                                      "alternative 4 of 5", "alternative 5 of 5", "the two best together",
                                      "the defaults again" };
  g_assert_cmpuint (status->len, ==, G_N_ELEMENTS (told));
  for (guint i = 0; i < status->len; i++)
    {
      g_autofree char *want = g_strdup_printf ("Tuning the kernels at 16x16: %s", told[i]);
      g_assert_cmpstr (g_ptr_array_index (status, i), ==, want);
    }

  g_autofree char *wrong = line_of (report, "WRONG=1");
  g_autofree char *nothere = line_of (report, "NOTHERE=1");
  g_autofree char *a = line_of (report, "A=1");
  g_autofree char *union_line = line_of (report, "B=1 A=1");
  g_assert_nonnull (wrong);
  g_assert_nonnull (strstr (wrong, "disagrees: max |eps - defaults'|"));
  g_assert_nonnull (nothere);
  g_assert_nonnull (strstr (nothere, "not here: no such kernels here"));
  g_assert_nonnull (a);
  g_assert_nonnull (strstr (a, "max |eps - defaults'| 0 "));   /* the same ops: the same bits */
  g_assert_nonnull (union_line);                                 /* A and B each saved 2 %, disjoint */
  g_assert_nonnull (strstr (report, "\n  kept: B=1 A=1 ("));
  g_assert_nonnull (strstr (report, "(again)"));
  /* the context runs what was kept as the backend froze it, and says what was kept */
  g_assert_cmpstr (fake.settings, ==, "B=1 A=1 PICKS=b1,b2");
  g_assert_nonnull (strstr (ddpm_context_device_name (ctx), ", tuned: B=1 A=1"));

  /* the same key from the cache, nothing timed: set_variant for the defaults' description and for the decision,
   * frozen (a list shown as its count) */
  g_autoptr (DdpmContext) again = fake_context (model, offer_all, DDPM_TUNING_CACHED);
  g_ptr_array_set_size (status, 0);
  ddpm_context_set_status (again, collect_status, status);
  report = plan (again);
  g_assert_cmpuint (status->len, ==, 0);                        /* nothing timed, nothing to say */
  g_assert_nonnull (strstr (report, "kept from the cache: B=1 A=1 PICKS=(2 entries)\n"));
  g_assert_cmpint (fake.set_calls, ==, 2);
  g_assert_cmpstr (fake.settings, ==, "B=1 A=1 PICKS=b1,b2");

  /* a decision that cannot run now (an edited file, a probe that says no) is timed again */
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_assert_true (g_key_file_load_from_file (kf, g_getenv ("DDPM_TUNING_FILE"), G_KEY_FILE_NONE, NULL));
  g_auto (GStrv) groups = g_key_file_get_groups (kf, NULL);
  g_assert_cmpuint (g_strv_length (groups), ==, 1);
  g_key_file_set_string (kf, groups[0], "variant", "NOTHERE=1");
  g_assert_true (g_key_file_save_to_file (kf, g_getenv ("DDPM_TUNING_FILE"), NULL));
  g_autoptr (DdpmContext) edited = fake_context (model, offer_all, DDPM_TUNING_CACHED);
  report = plan (edited);
  g_assert_nonnull (strstr (report, "\n  the cache's NOTHERE=1 cannot run here (no such kernels here): timing again\n"));
  g_assert_nonnull (strstr (report, "\n  kept: B=1 A=1 ("));

  /* another offer is another key: timed again */
  g_autoptr (DdpmContext) other = fake_context (model, offer_ab_only, DDPM_TUNING_CACHED);
  report = plan (other);
  g_assert_null (strstr (report, "kept from the cache"));
  g_assert_nonnull (strstr (report, "\n  kept: "));
  drop_cache (dir);
}

/* Nothing that saves 2 %: the defaults stay, and AGAIN times even with a decision cached. */
static void
test_defaults_kept (void)
{
  char *dir = setup_cache ();
  g_autoptr (DdpmModel) model = fixture_model_load ("models/cifar-like");
  for (int round = 0; round < 2; round++)
    {
      g_autoptr (DdpmContext) ctx = fake_context (model, offer_slow, DDPM_TUNING_AGAIN);
      const char *report = plan (ctx);
      g_autofree char *slow = line_of (report, "SLOW=1");
      g_assert_null (strstr (report, "kept from the cache"));
      g_assert_nonnull (slow);
      g_assert_nonnull (strstr (slow, " ms "));                    /* timed, agreeing */
      g_assert_nonnull (strstr (report, "\n  kept: defaults ("));
      g_assert_cmpstr (fake.settings, ==, "");
      g_assert_null (strstr (ddpm_context_device_name (ctx), "tuned"));
    }
  drop_cache (dir);
}

/* A Cancel during tuning stops it before the next variant: the plan fails with DDPM_ERROR_CANCELLED, nothing is
 * cached, and once the flag is cleared the next plan tunes from the start. */
static void
test_cancel (void)
{
  char *dir = setup_cache ();
  static const char *const offer_cancel[] = { "", "CANCEL=1", "A=1", NULL };
  g_autoptr (DdpmModel) model = fixture_model_load ("models/cifar-like");
  g_autoptr (DdpmContext) ctx = fake_context (model, offer_cancel, DDPM_TUNING_CACHED);
  g_autoptr (GError) error = NULL;
  g_assert_false (ddpm_context_plan (ctx, 1, 16, 16, &error));
  g_assert_error (error, DDPM_ERROR, DDPM_ERROR_CANCELLED);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "cancelled while tuning (before A=1)"));
  g_assert_false (g_file_test (g_getenv ("DDPM_TUNING_FILE"), G_FILE_TEST_EXISTS));
  g_assert_cmpstr (fake.settings, ==, "");                        /* back on the defaults */
  g_clear_error (&error);
  /* a new context (the sampler clears the flag when its run ends), without the cancelling variant: tuned whole */
  g_autoptr (DdpmContext) next = fake_context (model, offer_ab_only, DDPM_TUNING_CACHED);
  g_assert_nonnull (strstr (plan (next), "\n  kept: B=1 A=1 ("));
  drop_cache (dir);
}

/* Tuning off (the default): no variant is ever set, no report. */
static void
test_off (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load ("models/cifar-like");
  g_autoptr (DdpmContext) ctx = fake_context (model, offer_all, DDPM_TUNING_OFF);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_context_plan (ctx, 1, 16, 16, &error));
  g_assert_null (ddpm_context_tuning_report (ctx));
  g_assert_cmpint (fake.set_calls, ==, 0);
}

/* The fastest of three plain forwards of the fixture at the tests' shape, in microseconds. */
static gint64
forward_us (void)
{
  g_autoptr (DdpmModel) model = fixture_model_load ("models/cifar-like");
  g_autoptr (GError) error = NULL;
  g_autoptr (DdpmContext) ctx = ddpm_context_new (model, DDPM_DEVICE_CPU, DDPM_PRECISION_FP32, &error);
  g_assert_no_error (error);
  const size_t n = 3 * 16 * 16;
  g_autofree float *x = g_new0 (float, n), *eps = g_new (float, n);
  const int64_t t = 500;
  gint64 best = G_MAXINT64;
  for (int i = 0; i < 3; i++)
    {
      const gint64 t0 = g_get_monotonic_time ();
      g_assert_true (ddpm_context_eps (ctx, x, &t, 1, 16, 16, eps, &error));
      best = MIN (best, g_get_monotonic_time () - t0);
    }
  return best;
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_unsetenv ("DDPM_TUNE");
  /* one thread: an OpenMP barrier waiting for a descheduled peer (meson runs two tests at once on CI's two
   * cores) stalls a forward by a whole time slice, which a sleep-free variant's rounds would feel most */
  omp_set_num_threads (1);
  SLEEP_US = (int) MAX (SLEEP_US, 8 * forward_us ());
  g_test_add_func ("/tuning/decisions", test_decisions);
  g_test_add_func ("/tuning/defaults-kept", test_defaults_kept);
  g_test_add_func ("/tuning/cancel", test_cancel);
  g_test_add_func ("/tuning/off", test_off);
  return g_test_run ();
}
