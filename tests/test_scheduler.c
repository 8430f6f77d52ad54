/* test_scheduler.c: the DDPM / DDIM schedules and step coefficients against diffusers 0.42.1.
 *
 * Golden data: tests/fixtures/scheduler/ from tools/make_scheduler_fixtures.py (manifest.json lists every
 * case with its scheduler config as a dict). Bounds:
 *  - betas and alphas_cumprod: <= 1 ulp (we reproduce torch's float32 linspace / double-accumulated
 *    cumprod operation by operation; measured: bit exact);
 *  - timesteps: exact;
 *  - one step with injected noise, against diffusers with torch's sqrt/exp/log made correctly rounded
 *    (the *_ieee rows): bit identical, prev_sample and pred_original_sample, every case;
 *  - the same against stock diffusers, whose float32 sqrt (torch 2.13 CPU, MKL build) is +-1 ulp off for
 *    ~20% of inputs: prev_sample max abs error <= 1e-5; x0 <= 1e-5 + 8 ulp (2^-20) of the terms it is
 *    computed from, (|pred_x x| + |pred_m m|) / |pred_div|. At t ~ T with epsilon prediction and no
 *    clipping x0 = (x - sqrt(1 - abar) m) / sqrt(abar) is ~0.2 / 0.0064 after cancellation, and one ulp of
 *    sqrt(1 - abar) moves it by ~2e-5: no float32 implementation can promise 1e-5 there. */
#include "npy.h"
#include "scheduler.h"
#include "test_util.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#define STEP_ABS_TOL 1e-5

/* ---- manifest and config ------------------------------------------------------------------------ */

static JsonParser *g_manifest_parser;

static JsonObject *
manifest (void)
{
  if (g_manifest_parser == NULL)
    {
      g_autofree char *path = fixture_path ("scheduler/manifest.json");
      g_autoptr (GError) error = NULL;
      g_manifest_parser = json_parser_new ();
      json_parser_load_from_file (g_manifest_parser, path, &error);
      g_assert_no_error (error);
    }
  return json_node_get_object (json_parser_get_root (g_manifest_parser));
}

static int
enum_from_string (const char *field, const char *value, const char *const *names)
{
  for (int i = 0; names[i] != NULL; i++)
    if (g_strcmp0 (value, names[i]) == 0)
      return i;
  g_error ("fixture config: %s = %s not known to the test", field, value);
  return -1;
}

/* The scheduler config of a fixture case (keys as in scheduler_config.json), read directly: the
 * reference that ddpm_scheduler_config_parse is checked against (parse_config). */
static void
config_from_json (JsonObject *o, DdpmSchedulerConfig *cfg)
{
  static const char *const betas[] = { "linear", "scaled_linear", "squaredcos_cap_v2", NULL };
  static const char *const variances[] = { "fixed_small", "fixed_small_log", "fixed_large", NULL };
  static const char *const predictions[] = { "epsilon", "sample", "v_prediction", NULL };
  static const char *const spacings[] = { "leading", "trailing", "linspace", NULL };

  memset (cfg, 0, sizeof *cfg);
  const char *cls = json_object_get_string_member (o, "_class_name");
  cfg->kind = g_strcmp0 (cls, "DDIMScheduler") == 0 ? DDPM_SAMPLER_DDIM : DDPM_SAMPLER_DDPM;
  cfg->from_file = TRUE;
  cfg->num_train_timesteps = (int) json_object_get_int_member (o, "num_train_timesteps");
  cfg->beta_start = json_object_get_double_member (o, "beta_start");
  cfg->beta_end = json_object_get_double_member (o, "beta_end");
  cfg->beta_schedule = enum_from_string ("beta_schedule", json_object_get_string_member (o, "beta_schedule"), betas);
  cfg->variance_type = json_object_has_member (o, "variance_type")
                         ? enum_from_string ("variance_type", json_object_get_string_member (o, "variance_type"),
                                             variances)
                         : DDPM_VARIANCE_FIXED_SMALL;
  cfg->clip_sample = json_object_get_boolean_member (o, "clip_sample");
  cfg->clip_sample_range = json_object_get_double_member (o, "clip_sample_range");
  cfg->prediction_type =
    enum_from_string ("prediction_type", json_object_get_string_member (o, "prediction_type"), predictions);
  cfg->timestep_spacing =
    enum_from_string ("timestep_spacing", json_object_get_string_member (o, "timestep_spacing"), spacings);
  cfg->steps_offset = (int) json_object_get_int_member (o, "steps_offset");
  cfg->set_alpha_to_one = json_object_get_boolean_member_with_default (o, "set_alpha_to_one", TRUE);
  g_assert_false (json_object_get_boolean_member (o, "thresholding"));
  g_assert_false (json_object_get_boolean_member (o, "rescale_betas_zero_snr"));
}

static DdpmNpyArray *
load_fixture (const char *name)
{
  g_autofree char *rel = g_build_filename ("scheduler", name, NULL);
  g_autofree char *path = fixture_path (rel);
  g_autoptr (GError) error = NULL;
  DdpmNpyArray *a = ddpm_npy_load (path, &error);
  g_assert_no_error (error);
  return a;
}

/* The engine's parser (unet_config.c) on the case's config written out as scheduler_config.json; it must
 * agree with config_from_json on every field. */
static void
parse_config (JsonObject *config, DdpmSchedulerConfig *cfg)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) node = json_node_new (JSON_NODE_OBJECT);
  json_node_set_object (node, config);
  g_autofree char *text = json_to_string (node, FALSE);
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp ("scheduler_config-XXXXXX.json", &path, &error);
  g_assert_no_error (error);
  const size_t len = strlen (text);
  g_assert_cmpint (write (fd, text, len), ==, (gssize) len); /* no fsync: a throwaway file */
  close (fd);
  gboolean ok = ddpm_scheduler_config_parse (path, cfg, &error);
  g_unlink (path);
  g_assert_no_error (error);
  g_assert_true (ok);

  DdpmSchedulerConfig want;
  config_from_json (config, &want);
  g_assert_cmpint (cfg->kind, ==, want.kind);
  g_assert_cmpint (cfg->num_train_timesteps, ==, want.num_train_timesteps);
  g_assert_cmpfloat (cfg->beta_start, ==, want.beta_start);
  g_assert_cmpfloat (cfg->beta_end, ==, want.beta_end);
  g_assert_cmpint (cfg->beta_schedule, ==, want.beta_schedule);
  if (want.kind == DDPM_SAMPLER_DDPM)
    g_assert_cmpint (cfg->variance_type, ==, want.variance_type);
  g_assert_cmpint (cfg->clip_sample, ==, want.clip_sample);
  g_assert_cmpfloat (cfg->clip_sample_range, ==, want.clip_sample_range);
  g_assert_cmpint (cfg->prediction_type, ==, want.prediction_type);
  g_assert_cmpint (cfg->timestep_spacing, ==, want.timestep_spacing);
  g_assert_cmpint (cfg->steps_offset, ==, want.steps_offset);
  g_assert_cmpint (cfg->set_alpha_to_one, ==, want.set_alpha_to_one);
}

static void
init_schedule (JsonObject *config, DdpmSchedule *s)
{
  DdpmSchedulerConfig cfg;
  parse_config (config, &cfg);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_schedule_init (s, &cfg, &error));
  g_assert_no_error (error);
}

/* Distance in units in the last place between two finite floats of the same sign. */
static int64_t
ulp_distance (float a, float b)
{
  int32_t ia, ib;
  memcpy (&ia, &a, 4);
  memcpy (&ib, &b, 4);
  if (ia < 0)
    ia = INT32_MIN - ia;
  if (ib < 0)
    ib = INT32_MIN - ib;
  return ia > ib ? (int64_t) ia - ib : (int64_t) ib - ia;
}

/* ---- tables ------------------------------------------------------------------------------------- */

static void
check_table (const char *label, const float *got, const float *want, int n, int64_t max_ulp)
{
  int64_t worst = 0;
  int worst_i = 0, inexact = 0;
  for (int i = 0; i < n; i++)
    {
      int64_t d = ulp_distance (got[i], want[i]);
      inexact += d != 0;
      if (d > worst)
        worst = d, worst_i = i;
    }
  g_test_message ("%s: %d of %d values differ, worst %" G_GINT64_FORMAT " ulp at [%d] (got %.9g, want %.9g)", label,
                  inexact, n, worst, worst_i, (double) got[worst_i], (double) want[worst_i]);
  g_assert_cmpint (worst, <=, max_ulp);
}

static void
test_tables (void)
{
  JsonArray *cases = json_object_get_array_member (manifest (), "tables");
  for (guint k = 0; k < json_array_get_length (cases); k++)
    {
      JsonObject *c = json_array_get_object_element (cases, k);
      const char *file = json_object_get_string_member (c, "file");
      DdpmSchedule s;
      init_schedule (json_object_get_object_member (c, "config"), &s);
      g_autoptr (DdpmNpyArray) a = load_fixture (file);
      g_assert_cmpint (a->type, ==, DDPM_NPY_F32);
      g_assert_cmpint (a->ndim, ==, 2);
      g_assert_cmpint (a->shape[0], ==, 2);
      g_assert_cmpint (a->shape[1], ==, s.num_train_timesteps);
      const float *want = a->data;
      const int n = s.num_train_timesteps;
      g_autofree char *lb = g_strdup_printf ("%s betas", file);
      g_autofree char *la = g_strdup_printf ("%s alphas_cumprod", file);
      check_table (lb, s.betas, want, n, 1);
      check_table (la, s.alphas_cumprod, want + n, n, 1);
      for (int i = 0; i < n; i++)
        g_assert_cmpfloat (s.alphas[i], ==, 1.0f - s.betas[i]);
      ddpm_schedule_clear (&s);
    }
}

/* The sanity values of unet2d-spec.md for diffusers' default schedule (linear 1e-4..0.02, N = 1000). */
static void
test_spec_sanity (void)
{
  DdpmSchedulerConfig cfg = { .kind = DDPM_SAMPLER_DDPM, .num_train_timesteps = 1000, .beta_start = 1e-4,
                              .beta_end = 0.02, .beta_schedule = DDPM_BETA_LINEAR, .clip_sample = TRUE,
                              .clip_sample_range = 1.0, .set_alpha_to_one = TRUE };
  DdpmSchedule s;
  g_autoptr (GError) error = NULL;
  g_assert_true (ddpm_schedule_init (&s, &cfg, &error));
  const struct { int t; double abar; } want[] = { { 0, 0.9999 }, { 99, 0.897018 }, { 499, 0.0785872 },
                                                  { 999, 4.03583e-05 } };
  for (size_t k = 0; k < G_N_ELEMENTS (want); k++)
    {
      double got = s.alphas_cumprod[want[k].t];
      g_test_message ("abar[%d] = %.9g (spec %g)", want[k].t, got, want[k].abar);
      g_assert_cmpfloat (fabs (got - want[k].abar), <=, 1e-6 * want[k].abar + 1e-7 * fabs (got));
    }
  ddpm_schedule_clear (&s);
}

static void
test_bad_config (void)
{
  DdpmSchedulerConfig cfg = { .kind = DDPM_SAMPLER_DDPM, .num_train_timesteps = 1000, .beta_start = 1e-4,
                              .beta_end = 1.5, .beta_schedule = DDPM_BETA_LINEAR };
  DdpmSchedule s;
  g_autoptr (GError) e1 = NULL, e2 = NULL, e3 = NULL;
  g_assert_false (ddpm_schedule_init (&s, &cfg, &e1));
  g_assert_error (e1, DDPM_ERROR, DDPM_ERROR_UNSUPPORTED);
  g_test_message ("%s", e1->message);
  cfg.beta_end = 0.02;
  cfg.num_train_timesteps = 0;
  g_assert_false (ddpm_schedule_init (&s, &cfg, &e2));
  g_assert_error (e2, DDPM_ERROR, DDPM_ERROR_LIMIT);
  cfg.num_train_timesteps = 1000;
  g_assert_true (ddpm_schedule_init (&s, &cfg, &e3));
  int ts[1001];
  for (int bad = -1; bad <= 1001; bad += 1002)
    {
      g_autoptr (GError) e = NULL;
      g_assert_false (ddpm_schedule_timesteps (&s, bad, ts, &e));
      g_assert_error (e, DDPM_ERROR, DDPM_ERROR_ARGUMENT);
    }
  {
    g_autoptr (GError) e = NULL;
    g_assert_false (ddpm_schedule_timesteps (&s, 0, ts, &e));
    g_assert_error (e, DDPM_ERROR, DDPM_ERROR_ARGUMENT);
    g_test_message ("%s", e->message);
  }
  ddpm_schedule_clear (&s);
}

/* ---- timesteps ---------------------------------------------------------------------------------- */

static void
test_timesteps (void)
{
  JsonArray *cases = json_object_get_array_member (manifest (), "timesteps");
  int n_exact = 0, n_refused = 0, n_spurious = 0;
  for (guint k = 0; k < json_array_get_length (cases); k++)
    {
      JsonObject *c = json_array_get_object_element (cases, k);
      const char *file = json_object_get_string_member (c, "file");
      const int num_steps = (int) json_object_get_int_member (c, "num_steps");
      DdpmSchedule s;
      init_schedule (json_object_get_object_member (c, "config"), &s);
      g_autoptr (DdpmNpyArray) a = load_fixture (file);
      g_assert_cmpint (a->type, ==, DDPM_NPY_I64);
      const int64_t *want = a->data;
      const int64_t len = a->numel;
      g_autofree int *got = g_new0 (int, num_steps);
      g_autoptr (GError) error = NULL;
      gboolean ok = ddpm_schedule_timesteps (&s, num_steps, got, &error);

      gboolean out_of_range = FALSE;
      for (int64_t i = 0; i < MIN (len, num_steps); i++)
        out_of_range |= want[i] < 0 || want[i] >= s.num_train_timesteps;
      if (out_of_range)
        {
          /* diffusers gives a timestep past the table (leading + steps_offset at num_steps = N): refused. */
          g_assert_false (ok);
          g_assert_error (error, DDPM_ERROR, DDPM_ERROR_ARGUMENT);
          g_test_message ("%s: refused as expected: %s", file, error->message);
          n_refused++;
        }
      else
        {
          g_assert_no_error (error);
          g_assert_true (ok);
          if (len == num_steps + 1)
            {
              /* numpy's float arange gave one entry too many: diffusers' extra timestep is -1. */
              g_assert_cmpint (want[num_steps], ==, -1);
              g_test_message ("%s: diffusers appends a spurious timestep -1; the %d real ones match", file,
                              num_steps);
              n_spurious++;
            }
          else
            g_assert_cmpint (len, ==, num_steps);
          for (int i = 0; i < num_steps; i++)
            if (got[i] != want[i])
              g_error ("%s: timesteps[%d] = %d, diffusers %" G_GINT64_FORMAT, file, i, got[i], want[i]);
          n_exact++;
        }
      ddpm_schedule_clear (&s);
    }
  g_test_message ("timesteps: %d cases exact, %d refused, %d with diffusers' spurious -1", n_exact, n_refused,
                  n_spurious);
}

/* ---- steps -------------------------------------------------------------------------------------- */

typedef struct {
  char name[64];
  int cases, exact;                 /* cases; cases bit identical to the *_ieee rows */
  double prev_abs, x0_abs;          /* worst absolute errors against stock diffusers */
  double x0_cond;                   /* worst x0 error / (|pred_x x| + |pred_m m|) / |pred_div|, in 2^-24 */
  char worst[160];                  /* the case with the worst x0 error */
} StepGroup;

static StepGroup *
group_for (GPtrArray *groups, const char *name)
{
  for (guint i = 0; i < groups->len; i++)
    if (strcmp (((StepGroup *) groups->pdata[i])->name, name) == 0)
      return groups->pdata[i];
  StepGroup *g = g_new0 (StepGroup, 1);
  g_strlcpy (g->name, name, sizeof g->name);
  g_ptr_array_add (groups, g);
  return g;
}

static int64_t
max_ulp (const float *got, const float *want, size_t n)
{
  int64_t worst = 0;
  for (size_t i = 0; i < n; i++)
    worst = MAX (worst, ulp_distance (got[i], want[i]));
  return worst;
}

/* Fixture rows per case (see tools/make_scheduler_fixtures.py). */
enum { ROW_X, ROW_M, ROW_NOISE, ROW_PREV, ROW_X0, ROW_PREV_IEEE, ROW_X0_IEEE, N_ROWS };

static void
run_step_group (const char *sampler)
{
  JsonObject *g = json_object_get_object_member (json_object_get_object_member (manifest (), "steps"), sampler);
  g_autoptr (DdpmNpyArray) a = load_fixture (json_object_get_string_member (g, "file"));
  g_assert_cmpint (a->type, ==, DDPM_NPY_F32);
  g_assert_cmpint (a->shape[1], ==, N_ROWS);
  const size_t n = (size_t) (a->numel / (a->shape[0] * N_ROWS)); /* elements per image, batch 1 */
  JsonArray *cases = json_object_get_array_member (g, "cases");
  g_autoptr (GPtrArray) groups = g_ptr_array_new_with_free_func (g_free);

  for (guint k = 0; k < json_array_get_length (cases); k++)
    {
      JsonObject *c = json_array_get_object_element (cases, k);
      JsonObject *config = json_object_get_object_member (c, "config");
      const int num_steps = (int) json_object_get_int_member (c, "num_steps");
      const int i = (int) json_object_get_int_member (c, "step_index");
      const int row = (int) json_object_get_int_member (c, "row");
      const gboolean raw = json_object_get_boolean_member (c, "raw_inputs");
      const double eta = json_object_get_double_member (c, "eta");
      const float *base = (const float *) a->data + (size_t) row * N_ROWS * n;
      const float *x_in = base + ROW_X * n, *m = base + ROW_M * n, *noise = base + ROW_NOISE * n;

      DdpmSchedule s;
      init_schedule (config, &s);
      g_autofree int *ts = g_new (int, num_steps);
      g_autoptr (GError) error = NULL;
      g_assert_true (ddpm_schedule_timesteps (&s, num_steps, ts, &error));
      g_assert_cmpint (ts[i], ==, json_object_get_int_member (c, "timestep"));

      DdpmStepParams p;
      ddpm_schedule_step_params (&s, s.config.kind, ts, num_steps, i, eta, &p);
      g_assert_cmpint (p.draw_noise, ==, json_object_get_boolean_member (c, "draws_noise"));
      g_assert_cmpuint (p.stream, ==, DDPM_STREAM_STEP (i));
      g_assert_cmpfloat (p.t, ==, (float) ts[i]);

      g_autofree float *x = g_memdup2 (x_in, n * sizeof (float));
      g_autofree float *x0 = g_new (float, n);
      ddpm_step_cpu (&p, x, m, noise, x0, n, 1);

      g_autofree char *label =
        g_strdup_printf ("%s #%u t=%d %s %s%s%s", sampler, k, ts[i],
                         json_object_get_string_member (config, "prediction_type"),
                         json_object_get_string_member (config, "beta_schedule"),
                         s.config.clip_sample ? " clip" : "", raw ? " raw" : "");
      g_autofree char *lp = g_strconcat (label, " prev_sample", NULL);
      g_autofree char *lx = g_strconcat (label, " x0", NULL);

      /* 1. Against diffusers with IEEE sqrt/exp/log: bit identical. */
      const int64_t ulp_prev = max_ulp (x, base + ROW_PREV_IEEE * n, n);
      const int64_t ulp_x0 = max_ulp (x0, base + ROW_X0_IEEE * n, n);
      if (ulp_prev != 0 || ulp_x0 != 0)
        {
          CompareResult rp = compare_f32 (x, base + ROW_PREV_IEEE * n, n);
          CompareResult rx = compare_f32 (x0, base + ROW_X0_IEEE * n, n);
          report_compare (lp, &rp);
          report_compare (lx, &rx);
        }

      /* 2. Against stock diffusers (torch's sqrt is +-1 ulp): prev_sample within 1e-5; x0 within 1e-5 plus
       *    8 ulp (2^-20) of the terms it is computed from, |pred_x x| + |pred_m m| over pred_div. */
      CompareResult rp = compare_f32 (x, base + ROW_PREV * n, n), rx = compare_f32 (x0, base + ROW_X0 * n, n);
      g_assert_cmpuint (rp.n_nonfinite + rx.n_nonfinite, ==, 0);
      double cond = 0.0, excess = 0.0;
      for (size_t e = 0; e < n; e++)
        {
          const double terms = (fabs ((double) p.pred_x * x_in[e]) + fabs ((double) p.pred_m * m[e])) / fabs (p.pred_div);
          const double err = fabs ((double) x0[e] - base[ROW_X0 * n + e]);
          cond = fmax (cond, err / (terms * 0x1p-24));
          excess = fmax (excess, err - (STEP_ABS_TOL + 0x1p-20 * terms));
        }
      if (rp.max_abs > STEP_ABS_TOL || excess > 0.0)
        {
          report_compare (lp, &rp);
          report_compare (lx, &rx);
          g_error ("%s: step error above the bound (prev_sample %g, x0 %g over)", label, rp.max_abs, excess);
        }

      g_autofree char *gname =
        g_strdup_printf ("%s %s%s", sampler, json_object_get_string_member (config, "prediction_type"),
                         raw ? " raw" : "");
      StepGroup *grp = group_for (groups, gname);
      grp->cases++;
      grp->exact += ulp_prev == 0 && ulp_x0 == 0;
      grp->prev_abs = fmax (grp->prev_abs, rp.max_abs);
      if (rx.max_abs >= grp->x0_abs)
        g_snprintf (grp->worst, sizeof grp->worst, "%s: x0 %.7g want %.7g", label, rx.worst_a, rx.worst_b);
      grp->x0_abs = fmax (grp->x0_abs, rx.max_abs);
      grp->x0_cond = fmax (grp->x0_cond, cond);
      ddpm_schedule_clear (&s);
    }
  int exact = 0, total = 0;
  for (guint k = 0; k < groups->len; k++)
    {
      StepGroup *grp = groups->pdata[k];
      g_test_message ("%-22s %3d cases, %3d bit exact vs IEEE diffusers; vs stock diffusers: prev_sample max abs %.3g, "
                      "x0 max abs %.3g (%.1f ulp of its terms), worst x0 in %s", grp->name, grp->cases, grp->exact,
                      grp->prev_abs, grp->x0_abs, grp->x0_cond, grp->worst);
      exact += grp->exact;
      total += grp->cases;
    }
  g_assert_cmpint (exact, ==, total);
}

static void
test_steps_ddpm (void)
{
  run_step_group ("ddpm");
}

static void
test_steps_ddim (void)
{
  run_step_group ("ddim");
}

/* Drawn noise: image b uses key seed + b, stream p.stream, element index within the image, so a batch
 * equals separate runs and equals injecting ddpm_randn's numbers. */
static void
test_step_drawn_noise (void)
{
  DdpmSchedulerConfig cfg = { .kind = DDPM_SAMPLER_DDPM, .num_train_timesteps = 1000, .beta_start = 1e-4,
                              .beta_end = 0.02, .beta_schedule = DDPM_BETA_LINEAR,
                              .variance_type = DDPM_VARIANCE_FIXED_LARGE, .clip_sample = TRUE,
                              .clip_sample_range = 1.0, .set_alpha_to_one = TRUE };
  DdpmSchedule s;
  g_assert_true (ddpm_schedule_init (&s, &cfg, NULL));
  int ts[50];
  g_assert_true (ddpm_schedule_timesteps (&s, 50, ts, NULL));
  DdpmStepParams p;
  ddpm_schedule_step_params (&s, DDPM_SAMPLER_DDPM, ts, 50, 7, 0.0, &p);
  g_assert_true (p.draw_noise);
  g_assert_cmpfloat (p.sigma, >, 0.0f);
  p.seed = 0x1234abcdULL;

  enum { N = 3 * 8 * 8, B = 2 };
  float x[B * N], m[B * N], noise[B * N], x_inj[B * N], x_one[N];
  ddpm_randn (99, 0, 0, B * N, x);
  ddpm_randn (98, 0, 0, B * N, m);
  memcpy (x_inj, x, sizeof x);
  for (int b = 0; b < B; b++)
    ddpm_randn (p.seed + b, p.stream, 0, N, noise + b * N);
  memcpy (x_one, x + N, sizeof x_one);

  ddpm_step_cpu (&p, x, m, NULL, NULL, N, B);
  ddpm_step_cpu (&p, x_inj, m, noise, NULL, N, B);
  g_assert_cmpmem (x, sizeof x, x_inj, sizeof x_inj);

  DdpmStepParams p1 = p;
  p1.seed = p.seed + 1;
  ddpm_step_cpu (&p1, x_one, m + N, NULL, NULL, N, 1);
  g_assert_cmpmem (x_one, sizeof x_one, x + N, sizeof x_one);

  /* The last step (t = 0) draws nothing: sigma 0, noise pointer ignored. */
  ddpm_schedule_step_params (&s, DDPM_SAMPLER_DDPM, ts, 50, 49, 0.0, &p);
  g_assert_cmpint (ts[49], ==, 0);
  g_assert_false (p.draw_noise);
  g_assert_cmpfloat (p.sigma, ==, 0.0f);
  ddpm_schedule_clear (&s);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/engine/scheduler/tables", test_tables);
  g_test_add_func ("/engine/scheduler/spec-sanity", test_spec_sanity);
  g_test_add_func ("/engine/scheduler/bad-config", test_bad_config);
  g_test_add_func ("/engine/scheduler/timesteps", test_timesteps);
  g_test_add_func ("/engine/scheduler/steps-ddpm", test_steps_ddpm);
  g_test_add_func ("/engine/scheduler/steps-ddim", test_steps_ddim);
  g_test_add_func ("/engine/scheduler/drawn-noise", test_step_drawn_noise);
  int rc = g_test_run ();
  g_clear_object (&g_manifest_parser);
  return rc;
}
