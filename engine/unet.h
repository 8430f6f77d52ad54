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

/* eps (B, out_channels, H, W) f32 = UNet(x (B, in_channels, H, W) f32, t (B,) f32); all backend memory. */
void ddpm_unet_forward (DdpmUNet *unet, const float *x, const float *t, float *eps);

/* Bytes of one activation element on this backend (4 for fp32, 2 for fp16/bf16). */
size_t ddpm_backend_act_size (const DdpmBackend *be);
