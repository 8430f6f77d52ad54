/* model.h: what a loaded model is. Lifetimes: config and scheduler are small values; the weights are
 * float32 host arrays carved from one arena owned by the model (freed with it). Read-only once loaded, so
 * several contexts (threads, backends) can share one model. */
#pragma once

#include "unet_weights.h"
#include "scheduler.h"

struct DdpmModel {
  DdpmUNetConfig config;
  DdpmSchedulerConfig scheduler_config;
  DdpmSchedule schedule;           /* tables of scheduler_config */
  DdpmUNetWeights weights;         /* host float32 pointers into arena */
  float *arena;                    /* all parameters, float32 */
  int64_t n_params;
  char *path;                      /* the folder given to ddpm_model_load (NULL for random models) */
  char *weights_file;              /* the weights file read */
  char *weights_format;            /* "safetensors", "pytorch-zip", "random" */
  char *weights_dtype;             /* "F32", "F16", "BF16" or "mixed" as stored on disk */
  gboolean legacy_attention_names; /* query/key/value/proj_attn were found */
  int n_unused_tensors;            /* tensors in the file that bound to no parameter (ignored) */
};
