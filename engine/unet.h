/* unet.h: the diffusers UNet2DModel forward pass, composed from backend ops.
 *
 * Lifetimes: ddpm_unet_new uploads the weights once; ddpm_unet_plan allocates every activation for one
 * (batch, height, width) in a single arena and reserves the ops' scratch; ddpm_unet_forward then only
 * launches ops (no allocation, no host reads), so a backend can capture it as a graph. */
#pragma once

#include "backend.h"
#include "model.h"

typedef struct DdpmUNet DdpmUNet;

DdpmUNet *ddpm_unet_new (const DdpmModel *model, DdpmBackend *be, GError **error);
void ddpm_unet_free (DdpmUNet *unet);

/* (Re)plans activations for (B, H, W); H and W must be multiples of 2^(levels - 1). No-op when unchanged. */
gboolean ddpm_unet_plan (DdpmUNet *unet, int batch, int height, int width, GError **error);

/* Frees the planned activations, so that the next ddpm_unet_plan plans again: after the backend's settings
 * changed (DdpmBackendOps.set_variant), which may change its ops' scratch needs. */
void ddpm_unet_forget_plan (DdpmUNet *unet);

/* Makes the time embedding of timesteps t[0..n) (in [0, num_train_timesteps)) ready for forwards. Where the
 * backend keeps a time table (DdpmBackend.time_table), a forward gathers every resnet's time projection from
 * it (one launch instead of the embedding chain's four) and this computes the rows of the timesteps not yet in
 * it, with the chain's own ops on all of them at once (so the same bits as the chain); nothing otherwise. Call
 * it, outside any graph capture, before a forward with timesteps not passed before: a forward whose timestep
 * has no row gives NaN (reported as non-finite output), never a silently wrong image. */
gboolean ddpm_unet_prepare_timesteps (DdpmUNet *unet, const int *t, int n, GError **error);

/* eps (B, out_channels, H, W) f32 = UNet(x (B, in_channels, H, W) f32, t (B,) f32, integers, prepared above);
 * all backend memory. */
void ddpm_unet_forward (DdpmUNet *unet, const float *x, const float *t, float *eps);

/* Bytes of one activation element on this backend (4 for fp32, 2 for fp16/bf16). */
size_t ddpm_backend_act_size (const DdpmBackend *be);
