/* fuzz_parsers.h: one function per parser of outside input, shared by the libFuzzer targets (fuzz_*.c)
 * and by test_faults.c, which replays tests/fixtures/fuzz-regressions/<target>/ through the same code in
 * the ordinary CPU suite.
 *
 * Each fuzz_<target> feeds size bytes to the parser the way the product does, then uses whatever the
 * parser accepted (converts every tensor, lays out the weights a config implies, builds the schedule) so
 * that a parser which accepts a lie is caught by the sanitizer when the lie is used. It returns TRUE when
 * the input was accepted; otherwise error is set, always in the DDPM_ERROR domain (callers check that).
 *
 * Header-only (static functions) so that each target links just what it uses. */
#pragma once

#include "ddpm.h"
#include "model.h"
#include "npy.h"
#include "pickle.h"
#include "scheduler.h"
#include "tensor_table.h"
#include "unet_config.h"
#include "unet_weights.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <glib/gstdio.h>

/* Reads every tensor of the table (ASan checks each byte lies in the file copy). */
static inline void
fuzz_touch_table (const DdpmTensorTable *table)
{
  g_autoptr (GPtrArray) names = ddpm_tensor_table_names (table);
  for (guint i = 0; i < names->len; i++) {
    const DdpmRawTensor *t = ddpm_tensor_table_lookup (table, g_ptr_array_index (names, i));
    g_assert (t != NULL && t->numel >= 0);
    float *f = g_malloc (MAX ((gsize) t->numel, 1) * sizeof (float));
    ddpm_raw_tensor_to_f32 (t, f);
    g_free (f);
  }
}

static inline gboolean
fuzz_safetensors (const guint8 *data, size_t size, GError **error)
{
  /* A private copy of exactly size bytes: ASan then flags any read past the end. */
  g_autoptr (GBytes) file = g_bytes_new (data, size);
  g_autoptr (DdpmTensorTable) table = ddpm_safetensors_parse (file, "fuzz.safetensors", error);
  if (!table)
    return FALSE;
  fuzz_touch_table (table);
  return TRUE;
}

static inline gboolean
fuzz_torch_zip (const guint8 *data, size_t size, GError **error)
{
  g_autoptr (GBytes) file = g_bytes_new (data, size);
  g_autoptr (DdpmTensorTable) table = ddpm_torch_zip_parse (file, "fuzz.bin", error);
  if (!table)
    return FALSE;
  fuzz_touch_table (table);
  return TRUE;
}

static inline gboolean
fuzz_pickle (const guint8 *data, size_t size, GError **error)
{
  g_autofree guint8 *copy = g_memdup2 (data, size);
  g_autoptr (DdpmPickleStateDict) sd = ddpm_pickle_read_state_dict (copy, size, "fuzz: data.pkl", error);
  if (!sd)
    return FALSE;
  for (guint i = 0; i < sd->n; i++) {
    const DdpmPickleTensor *t = &sd->tensors[i];
    g_assert (t->name && t->storage_key && t->storage_type && t->ndim >= 0 && t->ndim <= DDPM_MAX_DIMS);
    g_assert (strlen (t->name) < size + 1);
  }
  return TRUE;
}

/* Uses a parsed UNet config: the parameter layout it implies. */
static inline void
fuzz_use_unet_config (const DdpmUNetConfig *cfg)
{
  DdpmUNetWeights w;
  DdpmUNetConfig c = *cfg;
  ddpm_unet_weights_layout (&w, &c);
  g_assert (ddpm_unet_weights_count (&c) > 0);
}

/* Uses a parsed scheduler config: the tables, the timesteps of a few step counts and their coefficients. */
static inline void
fuzz_use_scheduler_config (const DdpmSchedulerConfig *cfg)
{
  DdpmSchedule s;
  memset (&s, 0, sizeof s);
  g_autoptr (GError) error = NULL;
  if (!ddpm_schedule_init (&s, cfg, &error)) {
    g_assert (error && error->domain == DDPM_ERROR);
    return;
  }
  const int N = s.num_train_timesteps;
  const int counts[] = { 1, 2, 3, MAX (N / 7, 1), MAX (N - 1, 1), N };
  for (guint k = 0; k < G_N_ELEMENTS (counts); k++) {
    int n = counts[k];
    g_autofree int *ts = g_new (int, n);
    g_clear_error (&error);
    if (!ddpm_schedule_timesteps (&s, n, ts, &error)) {
      g_assert (error && error->domain == DDPM_ERROR);
      continue;
    }
    for (int i = 0; i < n; i++)
      g_assert (ts[i] >= 0 && ts[i] < N);   /* timesteps index the tables */
    /* The first and last steps of each sampler, where the edge cases live. */
    for (int i = 0; i < n; i = (i < 2 || i >= n - 2) ? i + 1 : n - 2) {
      DdpmStepParams p;
      ddpm_schedule_step_params (&s, DDPM_SAMPLER_DDPM, ts, n, i, 0.0, &p);
      ddpm_schedule_step_params (&s, DDPM_SAMPLER_DDIM, ts, n, i, 0.5, &p);
      ddpm_schedule_step_params_custom (&s, DDPM_SAMPLER_DDIM, ts, n, i, 1.0, &p);
    }
  }
  ddpm_schedule_clear (&s);
}

/* config.json and scheduler_config.json: the same bytes through both parsers. TRUE if either accepts;
 * when both refuse, error is the scheduler parser's. */
static inline gboolean
fuzz_config (const guint8 *data, size_t size, GError **error)
{
  g_autofree char *copy = g_memdup2 (data, size);   /* exact size, no NUL after it */
  DdpmUNetConfig ucfg;
  DdpmSchedulerConfig scfg;
  g_autoptr (GError) uerr = NULL;
  gboolean u = ddpm_unet_config_parse_data (copy, size, "fuzz/config.json", &ucfg, &uerr);
  g_assert (u || (uerr && uerr->domain == DDPM_ERROR));
  if (u)
    fuzz_use_unet_config (&ucfg);
  g_autoptr (GError) serr = NULL;
  gboolean s = ddpm_scheduler_config_parse_data (copy, size, "fuzz/scheduler_config.json", &scfg, &serr);
  if (s)
    fuzz_use_scheduler_config (&scfg);
  if (!u && !s)
    g_propagate_error (error, g_steal_pointer (&serr));
  return u || s;
}

/* A path that reads size bytes of memory: a memfd under /proc/self/fd (no disk, nothing to clean up
 * but the fd). Returns the fd (>= 0) and fills path; -1 with errno on failure. */
static inline int
fuzz_memfd_path (const guint8 *data, size_t size, char *path, size_t path_len)
{
  int fd = memfd_create ("fuzz-input", MFD_CLOEXEC);
  if (fd < 0)
    return -1;
  size_t done = 0;
  while (done < size) {
    ssize_t w = write (fd, data + done, size - done);
    if (w <= 0) {
      close (fd);
      return -1;
    }
    done += (size_t) w;
  }
  g_snprintf (path, path_len, "/proc/self/fd/%d", fd);
  return fd;
}

/* .npy through the real reader (ddpm_npy_load reads a path). */
static inline gboolean
fuzz_npy (const guint8 *data, size_t size, GError **error)
{
  char path[64];
  int fd = fuzz_memfd_path (data, size, path, sizeof path);
  g_assert (fd >= 0);
  g_autoptr (DdpmNpyArray) a = ddpm_npy_load (path, error);
  close (fd);
  if (!a)
    return FALSE;
  g_assert (a->numel >= 0 && (a->numel == 0 || a->data != NULL));
  g_free (ddpm_npy_to_f32 (a));       /* reads every element */
  return TRUE;
}

/* ---- a whole model folder ----------------------------------------------------------------------
 * Input: flags (1 byte) | config length (2 bytes LE) | config.json | scheduler length (2 bytes LE) |
 * scheduler_config.json | weights. flags bit 0: write scheduler_config.json; bit 1: the weights are a
 * PyTorch .bin (else safetensors); bit 2: a pipeline layout (unet/ and scheduler/ subfolders).
 * tools/fuzz.sh packs the fixture models into this form for the seed corpus. */

typedef struct {
  const guint8 *config, *scheduler, *weights;
  size_t config_len, scheduler_len, weights_len;
  guint8 flags;
} FuzzModelInput;

static inline gboolean
fuzz_model_split (const guint8 *data, size_t size, FuzzModelInput *in)
{
  if (size < 5)
    return FALSE;
  in->flags = data[0];
  in->config_len = data[1] | (size_t) data[2] << 8;
  if (in->config_len > size - 3 - 2)
    return FALSE;
  in->config = data + 3;
  const guint8 *p = in->config + in->config_len;
  in->scheduler_len = p[0] | (size_t) p[1] << 8;
  size_t left = size - 3 - in->config_len - 2;
  if (in->scheduler_len > left)
    return FALSE;
  in->scheduler = p + 2;
  in->weights = in->scheduler + in->scheduler_len;
  in->weights_len = left - in->scheduler_len;
  return TRUE;
}

static inline void
fuzz_write (const char *dir, const char *name, const guint8 *data, size_t len)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_file_set_contents (path, (const char *) data, (gssize) len, &error))
    g_error ("fuzz: cannot write %s: %s", path, error->message);
}

/* Removes the files fuzz_model may have written (no recursive delete of anything else). */
static inline void
fuzz_model_cleanup (const char *root)
{
  static const char *const files[] = { "config.json", "scheduler_config.json", "diffusion_pytorch_model.safetensors",
                                       "diffusion_pytorch_model.bin", "unet/config.json",
                                       "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
                                       "scheduler/scheduler_config.json", "model_index.json", NULL };
  for (int i = 0; files[i]; i++) {
    g_autofree char *p = g_build_filename (root, files[i], NULL);
    g_unlink (p);
  }
  g_autofree char *u = g_build_filename (root, "unet", NULL);
  g_autofree char *s = g_build_filename (root, "scheduler", NULL);
  g_rmdir (u);
  g_rmdir (s);
  g_rmdir (root);
}

static inline gboolean
fuzz_model (const guint8 *data, size_t size, GError **error)
{
  FuzzModelInput in;
  if (!fuzz_model_split (data, size, &in)) {
    g_set_error (error, DDPM_ERROR, DDPM_ERROR_FORMAT, "fuzz: input too short for the model packing");
    return FALSE;
  }
  /* tmpfs when there is one: the target writes a folder per input. */
  const char *base = g_file_test ("/dev/shm", G_FILE_TEST_IS_DIR) ? "/dev/shm" : g_get_tmp_dir ();
  g_autofree char *tmpl = g_build_filename (base, "ddpm-fuzz-model-XXXXXX", NULL);
  g_autofree char *root = g_mkdtemp (g_strdup (tmpl));
  g_assert (root != NULL);
  gboolean pipeline = (in.flags & 4) != 0;
  g_autofree char *udir = pipeline ? g_build_filename (root, "unet", NULL) : g_strdup (root);
  g_autofree char *sdir = pipeline ? g_build_filename (root, "scheduler", NULL) : g_strdup (root);
  if (pipeline) {
    g_mkdir (udir, 0700);
    g_mkdir (sdir, 0700);
    fuzz_write (root, "model_index.json", (const guint8 *) "{}", 2);
  }
  fuzz_write (udir, "config.json", in.config, in.config_len);
  if (in.flags & 1)
    fuzz_write (sdir, "scheduler_config.json", in.scheduler, in.scheduler_len);
  fuzz_write (udir, (in.flags & 2) ? "diffusion_pytorch_model.bin" : "diffusion_pytorch_model.safetensors",
              in.weights, in.weights_len);

  g_autoptr (DdpmModel) model = ddpm_model_load (root, error);
  if (model) {
    g_free (ddpm_model_describe (model));
    /* Every bound weight was converted: sum them so a wild pointer would be read. */
    volatile float sum = 0;
    for (int64_t i = 0; i < model->n_params; i++)
      sum += model->arena[i];
    (void) sum;
  }
  fuzz_model_cleanup (root);
  return model != NULL;
}
