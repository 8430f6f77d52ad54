/* unet_config.h: the diffusers UNet2DModel config and the DDPM/DDIM scheduler config, parsed from
 * config.json / scheduler_config.json (json-glib). Values outside what the engine implements are refused
 * at parse time with DDPM_ERROR_UNSUPPORTED naming the field. */
#pragma once

#include "ddpm.h"

#define DDPM_MAX_LEVELS 8          /* block_out_channels entries */
#define DDPM_MAX_LAYERS_PER_BLOCK 4

struct DdpmUNetConfig {
  int sample_size;                 /* 0 when null/absent */
  int in_channels, out_channels;
  gboolean center_input_sample;
  gboolean flip_sin_to_cos;
  double freq_shift;
  int n_levels;                    /* len(block_out_channels) */
  int block_out_channels[DDPM_MAX_LEVELS];
  gboolean down_attn[DDPM_MAX_LEVELS];   /* down_block_types[i] == AttnDownBlock2D */
  gboolean up_attn[DDPM_MAX_LEVELS];     /* up_block_types[i] == AttnUpBlock2D (index 0 = deepest) */
  int layers_per_block;
  double mid_block_scale_factor;
  int downsample_padding;          /* 0 or 1 */
  int attention_head_dim;          /* 0 = null: one head of the block's width */
  int norm_num_groups;
  int attn_norm_num_groups;        /* MID-block attention only (down/up attentions use norm_num_groups):
                                      resolved: attn_norm_num_groups or norm_num_groups */
  double norm_eps;
  gboolean scale_shift;            /* resnet_time_scale_shift == "scale_shift" */
  gboolean add_attention;          /* mid-block attention */
  int time_embedding_dim;          /* resolved: time_embedding_dim or 4 * block_out_channels[0] */
  gboolean mid_attn_no_norm;       /* the mid attention has NO group norm: diffusers' UNetMidBlock2D when
                                      attn_norm_num_groups is null and resnet_time_scale_shift is scale_shift
                                      (weights.mid_attention.group_norm.gamma is then NULL) */
};

typedef enum { DDPM_BETA_LINEAR, DDPM_BETA_SCALED_LINEAR, DDPM_BETA_SQUAREDCOS_CAP_V2 } DdpmBetaSchedule;
typedef enum { DDPM_VARIANCE_FIXED_SMALL, DDPM_VARIANCE_FIXED_SMALL_LOG, DDPM_VARIANCE_FIXED_LARGE } DdpmVarianceType;
typedef enum { DDPM_PREDICT_EPSILON, DDPM_PREDICT_SAMPLE, DDPM_PREDICT_V } DdpmPredictionType;
typedef enum { DDPM_SPACING_LEADING, DDPM_SPACING_TRAILING, DDPM_SPACING_LINSPACE } DdpmTimestepSpacing;

struct DdpmSchedulerConfig {
  DdpmSamplerKind kind;            /* from _class_name: DDPMScheduler/GaussianDDPMScheduler or DDIMScheduler */
  gboolean from_file;              /* FALSE: diffusers DDPMScheduler defaults */
  int num_train_timesteps;         /* also legacy key "timesteps" */
  double beta_start, beta_end;
  DdpmBetaSchedule beta_schedule;
  DdpmVarianceType variance_type;
  gboolean clip_sample;
  double clip_sample_range;
  DdpmPredictionType prediction_type;
  DdpmTimestepSpacing timestep_spacing;
  int steps_offset;
  gboolean set_alpha_to_one;       /* DDIM: abar_prev = 1 past the end (else abar[0]) */
};

/* Fills cfg with diffusers' UNet2DModel defaults (see unet2d-spec.md). */
void ddpm_unet_config_init_defaults (DdpmUNetConfig *cfg);
gboolean ddpm_unet_config_parse (const char *json_path, DdpmUNetConfig *cfg, GError **error);
/* The same on len bytes of JSON in memory (no NUL terminator needed; over DDPM_LIMIT_CONFIG_BYTES is
 * DDPM_ERROR_LIMIT); json_path only names the text in messages (NULL: "config.json"). For fuzzing. */
gboolean ddpm_unet_config_parse_data (const char *json, gsize len, const char *json_path, DdpmUNetConfig *cfg,
                                      GError **error);
/* The published google/ddpm-* architectures by name: "cifar10-32", "celebahq-256". */
gboolean ddpm_unet_config_named (const char *name, DdpmUNetConfig *cfg, GError **error);

/* Fills cfg with diffusers' DDPMScheduler defaults (set_alpha_to_one TRUE, as DDIM's default). */
void ddpm_scheduler_config_init_defaults (DdpmSchedulerConfig *cfg);
gboolean ddpm_scheduler_config_parse (const char *json_path, DdpmSchedulerConfig *cfg, GError **error);
/* From memory, as ddpm_unet_config_parse_data (NULL json_path: "scheduler_config.json"). */
gboolean ddpm_scheduler_config_parse_data (const char *json, gsize len, const char *json_path,
                                           DdpmSchedulerConfig *cfg, GError **error);
